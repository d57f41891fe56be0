#ifndef HIGAN_LOADER_API_INCLUDED
#define HIGAN_LOADER_API_INCLUDED
/* ==== TRAINING DATA: resampling, batch loader with augmentation, lexicon ================= */
/* Reproduces HiGAN+'s data pipeline (lib/datasets.py, lib/transforms.py, lib/alphabet.py,
   networks/utils.py idx_to_words) in C. Needs parts/dataset_api.h (higan_dataset).

   RESAMPLING KERNELS. Grayscale images, row-major, src row stride src_stride elements (>= sw),
   dst packed [dh, dw]. Every size >= 1. Results match the libraries named below: the uint8
   versions bit for bit (their fixed-point or float arithmetic and rounding are reproduced),
   the float versions to float rounding (accumulation order may differ).
     higan_resize_area   cv2.resize(..., interpolation=cv2.INTER_AREA) (OpenCV 4.x): box
                         averaging with fractional edge weights when shrinking in both
                         directions (integer factors: exact box sums; 2x2 rounds half up, other
                         factors and fractional ratios round half to even); enlarging in a
                         direction uses OpenCV's area-mode bilinear weights, as cv2 does.
     higan_resize_linear cv2.resize(..., interpolation=cv2.INTER_LINEAR): half-pixel centres,
                         edge replication; uint8 in OpenCV's 11-bit fixed point. (Exactly 2x
                         shrinking in both directions is INTER_AREA in cv2; reproduced.)
     higan_resize_pil    PIL Image.resize (Pillow 9.x ImagingResample): separable convolution
                         with the filter support scaled by the shrink factor (antialiasing),
                         horizontal pass first; uint8 in 22-bit fixed point with an 8-bit
                         intermediate ("L" images), float in double ("F" images). Needs scratch
                         memory: higan_resize_pil_scratch_bytes(...) bytes of the arena. */
typedef enum {
    HIGAN_PIL_LANCZOS = 1,   /* PIL.Image.LANCZOS (= ANTIALIAS): a = 3 windowed sinc */
    HIGAN_PIL_BILINEAR = 2   /* PIL.Image.BILINEAR: triangle, support 1 */
} higan_pil_filter;
/* dst [dh, dw] <- src [sh, sw] (row stride src_stride) */
HIGAN_DEF void higan_resize_area(uint8_t *dst, int64_t dw, int64_t dh,
                                 const uint8_t *src, int64_t sw, int64_t sh, int64_t src_stride);
HIGAN_DEF void higan_resize_area_f32(float *dst, int64_t dw, int64_t dh,
                                     const float *src, int64_t sw, int64_t sh, int64_t src_stride);
HIGAN_DEF void higan_resize_linear(uint8_t *dst, int64_t dw, int64_t dh,
                                   const uint8_t *src, int64_t sw, int64_t sh, int64_t src_stride);
HIGAN_DEF void higan_resize_linear_f32(float *dst, int64_t dw, int64_t dh,
                                       const float *src, int64_t sw, int64_t sh, int64_t src_stride);
/* Scratch bytes (arena, 64-byte aligned allocations included) for one higan_resize_pil call. */
HIGAN_DEF size_t higan_resize_pil_scratch_bytes(int64_t dw, int64_t dh, int64_t sw, int64_t sh,
                                                higan_pil_filter filter);
/* HIGAN_ERR_NOMEM (arena overflow, nothing written) or HIGAN_OK. The arena is restored. */
HIGAN_DEF higan_status higan_resize_pil(uint8_t *dst, int64_t dw, int64_t dh,
                                        const uint8_t *src, int64_t sw, int64_t sh, int64_t src_stride,
                                        higan_pil_filter filter, higan_arena *scratch);
HIGAN_DEF higan_status higan_resize_pil_f32(float *dst, int64_t dw, int64_t dh,
                                            const float *src, int64_t sw, int64_t sh, int64_t src_stride,
                                            higan_pil_filter filter, higan_arena *scratch);
/* uint8 -> [-1, 1] as torchvision's ToTensor + Normalize(0.5, 0.5): (v / 255 - 0.5) / 0.5 in
   float32 (= v / 127.5 - 1 to the last bit or so); 0 (background) -> -1, 255 (ink) -> 1. */
HIGAN_DEF float higan_pixel_to_float(uint8_t v);

/* ---- Batch loader ----------------------------------------------------------------------
   Batches as HiGAN+'s training DataLoader builds them (Hdf5Dataset with process_style,
   RandomClip + RandomScale, sort_collect_fn_style):
     - style image: each word resized to 32 * len(label) x 64 (cv2 INTER_AREA when narrower
       than the stored image, INTER_LINEAR otherwise); without process_style the stored image;
     - aug image (augment): the style image through RandomClip (if w > 128: width uniform in
       [128, w), then offset uniform in [0, w - width)) and RandomScale (ratio uniform in
       [-0.4, 0.4), width int(w * (1 + ratio)) rounded up to a multiple of 32 (at least 32),
       PIL BILINEAR when ratio > 0, else PIL LANCZOS (ANTIALIAS));
     - pixels (v / 255 - 0.5) / 0.5: ink bright, background and padding -1;
     - images padded on the right with -1 to the batch's widest width rounded up to 32;
     - samples sorted by style width, descending (numpy argsort of the widths, reversed:
       equal widths end up in the reverse of their drawn order), every array kept aligned;
     - labels 0-padded alphabet indices, writer ids minus the dataset's smallest id.
   Randomness (shuffling and augmentation) comes from one higan_rng seeded with opt.seed and
   used strictly in order (epoch shuffle, then per batch and per sample in drawn order: clip
   width, clip offset, scale ratio), so results are the same with and without the thread.
   The loader keeps a pointer to the dataset: keep it alive and unchanged meanwhile. */
typedef struct higan_loader_options {
    int batch_size;     /* samples per batch (official: 8) */
    int shuffle;        /* reshuffle at every epoch start (official: 1) */
    int drop_last;      /* drop the last incomplete batch (official: 1) */
    uint64_t seed;      /* seed of the loader's RNG */
    int process_style;  /* resize to 32 px per character (official: 1) */
    int augment;        /* make aug_imgs (official: 1) */
    int max_width;      /* 0: none; else words whose padded style width exceeds it are left
                           out of every epoch (n_skipped counts them) */
    int threaded;       /* 1: a background thread prepares the next batch (double buffer) */
    int n_writers;      /* > 0: every remapped writer id must be < n_writers (else an error
                           naming the record); 0: no check */
} higan_loader_options;
/* The official training settings: batch 8, shuffle, drop_last, seed 123456, process_style,
   augment, no max width, threaded, n_writers 0. */
HIGAN_DEF higan_loader_options higan_loader_default_options(void);

/* One batch. Every pointer points into the loader and stays valid until the next
   higan_loader_next (or higan_loader_free). B <= batch_size. */
typedef struct higan_batch {
    int B;
    int64_t width;       /* columns of imgs: max img_lens rounded up to a multiple of 32 */
    float *imgs;         /* [B, 1, 64, width] in [-1, 1], padding -1 */
    int *img_lens;       /* [B] style widths (descending) */
    int64_t label_width; /* columns of labels: max label_lens */
    int *labels;         /* [B, label_width] alphabet indices, 0-padded */
    int *label_lens;     /* [B] */
    int *wids;           /* [B] writer ids minus the dataset's minimum */
    int64_t *records;    /* [B] dataset record index of each sample */
    int64_t aug_width;   /* columns of aug_imgs (0 when augment is off) */
    float *aug_imgs;     /* [B, 1, 64, aug_width] or NULL */
    int *aug_lens;       /* [B] aug widths (multiples of 32) or NULL */
    int64_t epoch;       /* 0-based */
    int64_t index;       /* batch index within the epoch */
} higan_batch;

typedef struct higan_loader {
    const higan_dataset *ds;
    higan_loader_options opt;
    int64_t n_records;      /* words in each epoch */
    int64_t n_skipped;      /* words left out by max_width */
    int64_t n_batches;      /* batches per epoch */
    int wid_min;            /* smallest writer id of the dataset */
    int64_t width_cap;      /* largest padded style width */
    int64_t aug_width_cap;  /* largest possible aug width */
    int64_t label_cap;      /* longest label */
    void *priv;             /* buffers, producer state, thread */
} higan_loader;
#define HIGAN_LOADER_EPOCH_END 1   /* higan_loader_next: the epoch is over, no batch */
/* Checks every record (label in the alphabet, lengths, writer ids) with errors naming the
   record, allocates both batch buffers and all scratch memory, and with opt->threaded starts
   the producer thread (builds without threads fall back to the synchronous path).
   opt NULL: the defaults. */
HIGAN_DEF higan_status higan_loader_init(higan_loader *L, const higan_dataset *ds,
                                         const higan_loader_options *opt);
/* HIGAN_OK with the next batch in *out; HIGAN_LOADER_EPOCH_END after the last batch of an
   epoch (the next call starts the next epoch, reshuffled); < 0 on error. */
HIGAN_DEF higan_status higan_loader_next(higan_loader *L, higan_batch *out);
HIGAN_DEF void higan_loader_free(higan_loader *L);
/* The style width of record i under these options (32 * label length with process_style,
   else the stored width). */
HIGAN_DEF int64_t higan_loader_style_width(const higan_dataset *ds, int64_t i, int process_style);

/* ---- Lexicon (lib/alphabet.py get_lexicon, networks/utils.py idx_to_words) --------------
   Loading keeps a line (universal newlines, UTF-8) when, after Python's str.strip(), it has
   at least 2 characters, all in the alphabet, and fewer than HIGAN_LEXICON_MAX_LEN; kept words
   are lower-cased. Duplicates are kept (as the official list). One difference: the official
   accepts '`' (its alphabet string includes the CTC blank); this library does not. */
#define HIGAN_LEXICON_MAX_LEN 20
typedef struct higan_lexicon {
    int64_t count;        /* words */
    char *text;           /* the words, each NUL-terminated */
    int64_t *offsets;     /* [count] start of each word in text */
    int64_t text_bytes, text_capacity, capacity;
    int64_t lines, dropped;   /* lines read by the last load, lines dropped by it */
} higan_lexicon;
HIGAN_DEF void higan_lexicon_init(higan_lexicon *lex);
/* Appends the kept words of a file. HIGAN_ERR_IO (cannot open/read), HIGAN_ERR_FORMAT (invalid
   UTF-8, naming the line), HIGAN_ERR_NOMEM. */
HIGAN_DEF higan_status higan_lexicon_load(higan_lexicon *lex, const char *path);
/* The same rules on text in memory (n bytes; may hold NULs). */
HIGAN_DEF higan_status higan_lexicon_load_text(higan_lexicon *lex, const char *text, size_t n);
HIGAN_DEF const char *higan_lexicon_word(const higan_lexicon *lex, int64_t i);
HIGAN_DEF void higan_lexicon_free(higan_lexicon *lex);
/* n random words as idx_to_words: n uniform indices first; then per word, in order, the first
   letter upper-cased with probability 0.5 and, when max_len >= 1 and the word is longer,
   a random max_len-character substring (start uniform in [0, len - max_len), as
   np.random.randint); finally a stable sort by length, descending. Labels go to
   labels[i * label_stride ...] 0-padded up to label_stride (>= max_len when max_len >= 1, else
   >= HIGAN_LEXICON_MAX_LEN - 1), lengths to lens[i]. Returns the longest length, or
   HIGAN_ERR_ARG for an empty lexicon. */
HIGAN_DEF int higan_lexicon_sample(const higan_lexicon *lex, higan_rng *rng, int n, int max_len,
                                   int *labels, int64_t label_stride, int *lens);
#endif /* HIGAN_LOADER_API_INCLUDED */
