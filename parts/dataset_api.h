#ifndef HIGAN_DATASET_API_INCLUDED
#define HIGAN_DATASET_API_INCLUDED
/* ==== DATASET: HiGAN+'s word-image container (lib/datasets.py gen_h5file layout) ======== */
/* Images are 64 px high, ink bright (255) on a 0 background, stored side by side in one
   [64, total_width] uint8 array; labels are Unicode code points. The tensors (safetensors)
   or datasets (HDF5) have exactly these names and dtypes:
       imgs          U8  [64, total_width]      img_seek_idxs I64 [count]   img_lens I16 [count]
       lbs           I32 [total_chars]          lb_seek_idxs  I64 [count]   lb_lens  I16 [count]
       wids          I16 [count]   (raw writer ids; HiGAN+'s loader subtracts the minimum)
   Row stride of imgs: ds->capacity_cols. It equals total_width after higan_dataset_load and
   higan_dataset_pack. While a dataset is being built with higan_dataset_append the rows
   keep spare room (appending would otherwise move every row each time), so read pixels with
   higan_dataset_image / higan_dataset_pixel, or call higan_dataset_pack first.
   Every record points into the arrays: img_seek_idxs[i] + img_lens[i] <= total_width etc. */
typedef struct higan_dataset {
    int64_t count;          /* number of word images */
    int64_t total_width;    /* columns of imgs */
    int64_t total_chars;    /* entries of lbs */
    uint8_t *imgs;          /* [64, total_width] row-major (row stride capacity_cols) */
    int64_t *img_seek_idxs; /* [count] first column of each image */
    int16_t *img_lens;      /* [count] width of each image */
    int32_t *lbs;           /* [total_chars] label characters as Unicode code points */
    int64_t *lb_seek_idxs;  /* [count] */
    int16_t *lb_lens;       /* [count] */
    int16_t *wids;          /* [count] writer ids */
    /* private building state follows; treat as opaque */
    int64_t capacity_cols, capacity_chars, capacity_count;
} higan_dataset;
#define HIGAN_DATASET_HEIGHT 64
#define HIGAN_DATASET_MAX_WIDTH 4096   /* images wider than this are rejected */
#define HIGAN_DATASET_MAX_LABEL 4096   /* label characters per word (int16 lengths) */

HIGAN_DEF void higan_dataset_init(higan_dataset *ds);
/* Append one word image (height 64, row-major [64][w], ink bright) with its UTF-8 label and
   writer id. Checks: w in 1..HIGAN_DATASET_MAX_WIDTH, label non-empty and inside the 80-symbol
   alphabet (higan_text_encode), wid in the int16 range, else HIGAN_ERR_ARG with a message
   naming the label. Nothing is appended on error. */
HIGAN_DEF higan_status higan_dataset_append(higan_dataset *ds, const uint8_t *img, int w,
                                            const char *label, int wid);
/* safetensors with exactly the tensor names above (atomic: tmp + rename); .hdf5/.h5 paths go
   through libhdf5 when compiled with HIGAN_HDF5 (make HDF5=1), else a clear error. */
HIGAN_DEF higan_status higan_dataset_save(const higan_dataset *ds, const char *path);
/* Replaces *ds (whose previous contents are NOT freed: pass an initialised-empty or freed
   dataset). Validates every tensor (present, dtype, rank, height 64, matching counts) and
   every record (seek/len inside the arrays, lengths >= 1, widths <= HIGAN_DATASET_MAX_WIDTH,
   label code points in the alphabet); errors name the file and the record index. On error
   *ds is left empty (initialised). */
HIGAN_DEF higan_status higan_dataset_load(higan_dataset *ds, const char *path);
HIGAN_DEF void higan_dataset_free(higan_dataset *ds);
/* The label of word i as UTF-8 (returns length; truncates to cap like snprintf).
   HIGAN_ERR_ARG for i outside [0, count). */
HIGAN_DEF int higan_dataset_label(const higan_dataset *ds, int64_t i, char *out, int cap);

/* ---- additions ---- */
/* Compacts imgs to row stride total_width (capacity_cols = total_width). Cheap when packed. */
HIGAN_DEF higan_status higan_dataset_pack(higan_dataset *ds);
/* Pixel (row y in [0,64), column x in [0, img_lens[i])) of word i; any stride. */
HIGAN_DEF uint8_t higan_dataset_pixel(const higan_dataset *ds, int64_t i, int y, int x);
/* Copies word i as row-major [64][img_lens[i]] into out (cap bytes). Returns the width,
   or HIGAN_ERR_ARG (bad index or cap < 64 * width). */
HIGAN_DEF int higan_dataset_image(const higan_dataset *ds, int64_t i, uint8_t *out, int64_t cap);
/* Label of word i as alphabet indices (higan_text_encode's labels). Returns the length,
   or a negative status (bad index, code point outside the alphabet, length > max). */
HIGAN_DEF int higan_dataset_label_codes(const higan_dataset *ds, int64_t i, int *out, int max);
/* 1 if the path ends in .hdf5 or .h5 (case-insensitive): save/load use libhdf5. */
HIGAN_DEF int higan_dataset_is_hdf5_path(const char *path);
/* 1 when this build has HDF5 support (compiled with HIGAN_HDF5). */
HIGAN_DEF int higan_dataset_has_hdf5(void);
#endif /* HIGAN_DATASET_API_INCLUDED */
