/* Dataset container: append/save/load round trips, validation of corrupt files, HDF5. */
#define HIGAN_IMPLEMENTATION
#include "higan.h"
#include "check.h"

#define DIR "build/"

static uint8_t pix_value(int word, int y, int x) { return (uint8_t)((word * 37 + y * 11 + x * 3) & 255); }
static void make_img(uint8_t *img, int word, int w) {
    int y, x;
    for (y = 0; y < 64; ++y)
        for (x = 0; x < w; ++x) img[y * w + x] = pix_value(word, y, x);
}
static int msg_has(const char *a, const char *b) {
    const char *m = higan_last_error();
    return strstr(m, a) != NULL && (!b || strstr(m, b) != NULL);
}
static const char *const labels[] = {"A", "Hello,", "world!", "(42)", "don't", "x-y/z", "\"quoted\"", "a b",
                                     "MOVE", "#&:;?+_."};

/* n words, width of word i: widths[i % nw] */
static void build(higan_dataset *ds, int n, const int *widths, int nw) {
    static uint8_t img[64 * HIGAN_DATASET_MAX_WIDTH];
    int i;
    higan_dataset_init(ds);
    for (i = 0; i < n; ++i) {
        int w = widths[i % nw];
        make_img(img, i, w);
        if (higan_dataset_append(ds, img, w, labels[i % 10], 100 + i % 7) != HIGAN_OK) {
            CHECK(0, "append %d: %s", i, higan_last_error());
            return;
        }
    }
}
static int same_dataset(const higan_dataset *a, const higan_dataset *b) {
    int64_t i;
    int y, x;
    if (a->count != b->count || a->total_width != b->total_width || a->total_chars != b->total_chars) return 0;
    if (a->count && (memcmp(a->img_seek_idxs, b->img_seek_idxs, sizeof(int64_t) * (size_t)a->count) ||
                     memcmp(a->img_lens, b->img_lens, sizeof(int16_t) * (size_t)a->count) ||
                     memcmp(a->lb_seek_idxs, b->lb_seek_idxs, sizeof(int64_t) * (size_t)a->count) ||
                     memcmp(a->lb_lens, b->lb_lens, sizeof(int16_t) * (size_t)a->count) ||
                     memcmp(a->wids, b->wids, sizeof(int16_t) * (size_t)a->count)))
        return 0;
    if (a->total_chars && memcmp(a->lbs, b->lbs, sizeof(int32_t) * (size_t)a->total_chars)) return 0;
    for (i = 0; i < a->count; ++i)
        for (y = 0; y < 64; ++y)
            for (x = 0; x < a->img_lens[i]; ++x)
                if (higan_dataset_pixel(a, i, y, x) != higan_dataset_pixel(b, i, y, x)) return 0;
    return 1;
}

static void test_build_and_roundtrip(void) {
    static const int widths[] = {1, 7, 64, 300, 33, 4096, 129};
    higan_dataset ds, back;
    char lb[64];
    static uint8_t img[64 * 300];
    int64_t i, col = 0, chars = 0;
    int ok = 1, y, x, n;
    build(&ds, 40, widths, 7);
    CHECK(ds.count == 40, "append: 40 words (count %lld)", (long long)ds.count);
    for (i = 0; i < ds.count; ++i) {
        ok &= ds.img_seek_idxs[i] == col && ds.img_lens[i] == widths[i % 7];
        ok &= ds.lb_seek_idxs[i] == chars && ds.lb_lens[i] == (int16_t)strlen(labels[i % 10]);
        ok &= ds.wids[i] == 100 + i % 7;
        col += widths[i % 7];
        chars += (int64_t)strlen(labels[i % 10]);
    }
    CHECK(ok && ds.total_width == col && ds.total_chars == chars, "append: seek indices, lengths, wids, totals");
    ok = 1;
    for (i = 0; i < ds.count; ++i) {
        n = higan_dataset_label(&ds, i, lb, sizeof lb);
        ok &= n == (int)strlen(labels[i % 10]) && !strcmp(lb, labels[i % 10]);
    }
    CHECK(ok, "labels read back as UTF-8");
    ok = 1;
    for (i = 0; i < ds.count; ++i)
        for (y = 0; y < 64; ++y)
            for (x = 0; x < ds.img_lens[i]; ++x) ok &= higan_dataset_pixel(&ds, i, y, x) == pix_value((int)i, y, x);
    CHECK(ok, "pixels read back while building (row stride %lld, width %lld)", (long long)ds.capacity_cols,
          (long long)ds.total_width);
    n = higan_dataset_image(&ds, 3, img, sizeof img);
    ok = n == 300;
    for (y = 0; y < 64 && ok; ++y) for (x = 0; x < 300; ++x) ok &= img[y * 300 + x] == pix_value(3, y, x);
    CHECK(ok, "dataset_image copies word 3 (%d columns)", n);
    CHECK(higan_dataset_image(&ds, 5, img, sizeof img) == HIGAN_ERR_ARG, "dataset_image: too small a buffer is refused");
    CHECK(higan_dataset_image(&ds, 40, img, sizeof img) == HIGAN_ERR_ARG, "dataset_image: index out of range is refused");
    {
        int codes[16];
        n = higan_dataset_label_codes(&ds, 1, codes, 16);   /* "Hello," */
        CHECK(n == 6 && codes[0] == 2 + ('H' - 'A') && codes[1] == 28 + ('e' - 'a') && codes[5] == 68,
              "label_codes: 'Hello,' as alphabet indices");
        CHECK(higan_dataset_label_codes(&ds, 1, codes, 3) == HIGAN_ERR_ARG, "label_codes: too short a buffer is refused");
    }
    n = higan_dataset_label(&ds, 1, lb, 4);
    CHECK(n == 6 && !strcmp(lb, "Hel"), "label truncates like snprintf (got '%s', %d)", lb, n);
    CHECK(higan_dataset_label(&ds, -1, lb, 4) == HIGAN_ERR_ARG && higan_dataset_label(&ds, 40, lb, 4) == HIGAN_ERR_ARG,
          "label: index out of range is refused");

    CHECK(higan_dataset_save(&ds, DIR "test_dataset_rt.safetensors") == HIGAN_OK, "save unpacked: %s", higan_last_error());
    CHECK(higan_dataset_load(&back, DIR "test_dataset_rt.safetensors") == HIGAN_OK, "load: %s", higan_last_error());
    CHECK(same_dataset(&ds, &back), "save/load round trip is exact");
    CHECK(back.capacity_cols == back.total_width, "loaded imgs are packed [64, total_width]");
    {
        /* the loaded imgs equal the packed building buffer byte for byte */
        higan_safetensors st;
        const higan_st_tensor *t;
        higan_dataset_pack(&ds);
        CHECK(ds.capacity_cols == ds.total_width && same_dataset(&ds, &back), "pack keeps every image");
        CHECK(!memcmp(ds.imgs, back.imgs, (size_t)ds.total_width * 64), "packed imgs == loaded imgs");
        ok = higan_safetensors_load(&st, DIR "test_dataset_rt.safetensors") == HIGAN_OK;
        t = ok ? higan_safetensors_find(&st, "imgs") : NULL;
        CHECK(t && t->dtype == HIGAN_U8 && t->ndim == 2 && t->shape[0] == 64 && t->shape[1] == ds.total_width &&
              !memcmp(st.data + t->begin, ds.imgs, (size_t)ds.total_width * 64),
              "file tensor imgs is U8 [64, total_width], rows side by side");
        t = ok ? higan_safetensors_find(&st, "lbs") : NULL;
        CHECK(t && t->dtype == HIGAN_I32 && ((const int32_t *)(const void *)(st.data + t->begin))[0] == 'A',
              "lbs are I32 code points");
        t = ok ? higan_safetensors_find(&st, "wids") : NULL;
        CHECK(t && t->dtype == HIGAN_I16, "wids are I16");
        if (ok) higan_safetensors_free(&st);
    }
    /* appending after a load or pack keeps working */
    make_img(img, 99, 10);
    CHECK(higan_dataset_append(&back, img, 10, "more", 5) == HIGAN_OK && back.count == 41 &&
          higan_dataset_pixel(&back, 40, 63, 9) == pix_value(99, 63, 9) &&
          higan_dataset_pixel(&back, 39, 63, 0) == pix_value(39, 63, 0), "append after load");
    higan_dataset_free(&back);
    higan_dataset_free(&ds);
    CHECK(ds.count == 0 && ds.imgs == NULL, "free leaves an empty dataset");

    /* an empty dataset round-trips too */
    higan_dataset_init(&ds);
    CHECK(higan_dataset_save(&ds, DIR "test_dataset_empty.safetensors") == HIGAN_OK &&
          higan_dataset_load(&back, DIR "test_dataset_empty.safetensors") == HIGAN_OK && back.count == 0 &&
          back.total_width == 0, "empty dataset round trip: %s", higan_last_error());
    higan_dataset_free(&back);

    /* many appends (several regrowths) */
    {
        static const int w2[] = {5, 17, 250, 3, 91};
        build(&ds, 1000, w2, 5);
        CHECK(higan_dataset_save(&ds, DIR "test_dataset_big.safetensors") == HIGAN_OK &&
              higan_dataset_load(&back, DIR "test_dataset_big.safetensors") == HIGAN_OK && same_dataset(&ds, &back),
              "1000-word round trip (%lld columns)", (long long)ds.total_width);
        higan_dataset_free(&back);
        higan_dataset_free(&ds);
    }
}

static void test_append_errors(void) {
    higan_dataset ds;
    static uint8_t img[64 * (HIGAN_DATASET_MAX_WIDTH + 1)];
    char longlabel[5000];
    higan_dataset_init(&ds);
    CHECK(higan_dataset_append(&ds, img, 5, "ok", 1) == HIGAN_OK, "append a valid word");
    CHECK(higan_dataset_append(&ds, img, 5, "a*b", 1) == HIGAN_ERR_ARG && msg_has("a*b", "'*'"),
          "out-of-alphabet label refused: %s", higan_last_error());
    CHECK(higan_dataset_append(&ds, img, 5, "na\xC3\xAFve", 1) == HIGAN_ERR_ARG && msg_has("na\xC3\xAFve", "U+00EF"),
          "non-ASCII label refused: %s", higan_last_error());
    CHECK(higan_dataset_append(&ds, img, 5, "x`y", 1) == HIGAN_ERR_ARG && msg_has("x`y", NULL),
          "blank symbol in a label refused: %s", higan_last_error());
    CHECK(higan_dataset_append(&ds, img, 5, "", 1) == HIGAN_ERR_ARG && msg_has("empty label", NULL),
          "empty label refused: %s", higan_last_error());
    CHECK(higan_dataset_append(&ds, img, 0, "zero", 1) == HIGAN_ERR_ARG && msg_has("'zero'", "width 0"),
          "width 0 refused: %s", higan_last_error());
    CHECK(higan_dataset_append(&ds, img, -3, "neg", 1) == HIGAN_ERR_ARG && msg_has("'neg'", NULL), "negative width refused");
    CHECK(higan_dataset_append(&ds, img, HIGAN_DATASET_MAX_WIDTH + 1, "wide", 1) == HIGAN_ERR_ARG &&
          msg_has("'wide'", "4097"), "width over the maximum refused: %s", higan_last_error());
    CHECK(higan_dataset_append(&ds, img, HIGAN_DATASET_MAX_WIDTH, "widest", 1) == HIGAN_OK,
          "width exactly the maximum accepted");
    CHECK(higan_dataset_append(&ds, img, 5, "wid", 40000) == HIGAN_ERR_ARG && msg_has("'wid'", "writer id"),
          "writer id outside int16 refused: %s", higan_last_error());
    memset(longlabel, 'a', sizeof longlabel - 1);
    longlabel[sizeof longlabel - 1] = 0;
    CHECK(higan_dataset_append(&ds, img, 5, longlabel, 1) == HIGAN_ERR_ARG, "label over %d characters refused",
          HIGAN_DATASET_MAX_LABEL);
    CHECK(ds.count == 2 && ds.total_width == 5 + HIGAN_DATASET_MAX_WIDTH && ds.total_chars == 8,
          "failed appends add nothing (count %lld)", (long long)ds.count);
    higan_dataset_free(&ds);
}

/* ---- hand-made files for the validation tests ---- */
typedef struct {
    int64_t height, width;           /* imgs shape */
    higan_dtype lens_dtype;          /* img_lens dtype */
    int imgs_rank, skip;             /* skip: index of a tensor to leave out (-1 none) */
    int64_t seek[3], lbseek[3];
    int16_t lens[3], lblens[3], wids[3];
    int32_t lbs[8];
    int64_t n_lbs, count, wids_count;
} raw_ds;
static void raw_default(raw_ds *r) {
    static const int32_t codes[8] = {'a', 'b', 'C', 'd', 'e', '1', '2', '3'};
    memset(r, 0, sizeof *r);
    r->height = 64; r->width = 12; r->lens_dtype = HIGAN_I16; r->imgs_rank = 2; r->skip = -1;
    r->seek[0] = 0; r->seek[1] = 4; r->seek[2] = 9;
    r->lens[0] = 4; r->lens[1] = 5; r->lens[2] = 3;
    r->lbseek[0] = 0; r->lbseek[1] = 2; r->lbseek[2] = 5;
    r->lblens[0] = 2; r->lblens[1] = 3; r->lblens[2] = 3;
    r->wids[0] = 3; r->wids[1] = 3; r->wids[2] = 8;
    memcpy(r->lbs, codes, sizeof codes);
    r->n_lbs = 8; r->count = 3; r->wids_count = 3;
}
static int raw_write(const raw_ds *r, const char *path) {
    static uint8_t imgs[64 * 5000];
    int32_t lens32[3];
    int64_t shape[2];
    higan_safetensors_writer w;
    int rc = 0, k;
    for (k = 0; k < 3; ++k) lens32[k] = r->lens[k];
    higan_safetensors_writer_init(&w);
    shape[0] = r->height; shape[1] = r->width;
    if (r->imgs_rank == 1) shape[0] = r->height * r->width;
    if (r->skip != 0) rc |= higan_safetensors_writer_add(&w, "imgs", HIGAN_U8, r->imgs_rank, shape, imgs);
    shape[0] = r->count;
    if (r->skip != 1) rc |= higan_safetensors_writer_add(&w, "img_seek_idxs", HIGAN_I64, 1, shape, r->seek);
    if (r->skip != 2) rc |= higan_safetensors_writer_add(&w, "img_lens", r->lens_dtype, 1, shape,
                                                       r->lens_dtype == HIGAN_I32 ? (const void *)lens32 : (const void *)r->lens);
    if (r->skip != 4) rc |= higan_safetensors_writer_add(&w, "lb_seek_idxs", HIGAN_I64, 1, shape, r->lbseek);
    if (r->skip != 5) rc |= higan_safetensors_writer_add(&w, "lb_lens", HIGAN_I16, 1, shape, r->lblens);
    shape[0] = r->wids_count;
    if (r->skip != 6) rc |= higan_safetensors_writer_add(&w, "wids", HIGAN_I16, 1, shape, r->wids);
    shape[0] = r->n_lbs;
    if (r->skip != 3) rc |= higan_safetensors_writer_add(&w, "lbs", HIGAN_I32, 1, shape, r->lbs);
    rc |= higan_safetensors_writer_save(&w, path);
    higan_safetensors_writer_free(&w);
    return rc == 0;
}
/* Writes r, loads it: expects failure whose message names the file and contains want1/want2. */
static void expect_bad(const raw_ds *r, const char *what, const char *want1, const char *want2) {
    const char *path = DIR "test_dataset_bad.safetensors";
    higan_dataset ds;
    higan_status rc;
    if (!raw_write(r, path)) { CHECK(0, "%s: cannot write the file: %s", what, higan_last_error()); return; }
    rc = higan_dataset_load(&ds, path);
    CHECK(rc == HIGAN_ERR_FORMAT && msg_has(path, want1) && (!want2 || msg_has(want2, NULL)) && ds.count == 0 &&
          ds.imgs == NULL, "%s is refused: %s", what, higan_last_error());
    if (rc == HIGAN_OK) higan_dataset_free(&ds);
}

static void test_corrupt_records(void) {
    raw_ds r;
    higan_dataset ds;
    raw_default(&r);
    CHECK(raw_write(&r, DIR "test_dataset_good.safetensors") &&
          higan_dataset_load(&ds, DIR "test_dataset_good.safetensors") == HIGAN_OK && ds.count == 3,
          "hand-made valid file loads: %s", higan_last_error());
    if (ds.count == 3) {
        char lb[16];
        higan_dataset_label(&ds, 1, lb, sizeof lb);
        CHECK(!strcmp(lb, "Cde") && ds.wids[2] == 8, "hand-made file: label 1 '%s'", lb);
        higan_dataset_free(&ds);
    }
    raw_default(&r); r.seek[1] = 8;                 expect_bad(&r, "image seek + len past imgs", "record 1", "outside imgs");
    raw_default(&r); r.seek[2] = -1;                expect_bad(&r, "negative image seek", "record 2", NULL);
    raw_default(&r); r.lens[1] = -5;                expect_bad(&r, "negative image length", "record 1", "img_lens");
    raw_default(&r); r.lens[0] = 0;                 expect_bad(&r, "zero image length", "record 0", "img_lens");
    raw_default(&r); r.lblens[2] = -1;              expect_bad(&r, "negative label length", "record 2", "lb_lens");
    raw_default(&r); r.lbseek[2] = 6;               expect_bad(&r, "label seek + len past lbs", "record 2", "outside lbs");
    raw_default(&r); r.lbs[3] = '*';                expect_bad(&r, "label code point '*'", "record 1", "U+002A");
    raw_default(&r); r.lbs[0] = 0xE9;               expect_bad(&r, "label code point U+00E9", "record 0", "U+00E9");
    raw_default(&r); r.lbs[7] = '`';                expect_bad(&r, "label code point '`' (blank)", "record 2", NULL);
    raw_default(&r); r.lbs[7] = -7;                 expect_bad(&r, "negative code point", "record 2", NULL);
    raw_default(&r); r.width = 4100 + 9; r.seek[2] = 9; r.lens[2] = 4100;
                                                    expect_bad(&r, "image wider than the maximum", "record 2", "4100");
    raw_default(&r); r.height = 32;                 expect_bad(&r, "imgs of height 32", "height 32", NULL);
    raw_default(&r); r.imgs_rank = 1;               expect_bad(&r, "imgs of rank 1", "imgs", NULL);
    raw_default(&r); r.lens_dtype = HIGAN_I32;      expect_bad(&r, "img_lens as I32", "img_lens", "I32");
    raw_default(&r); r.skip = 6;                    expect_bad(&r, "missing wids", "'wids' is missing", NULL);
    raw_default(&r); r.skip = 3;                    expect_bad(&r, "missing lbs", "'lbs' is missing", NULL);
    raw_default(&r); r.wids_count = 2;              expect_bad(&r, "wids with 2 entries for 3 words", "wids", "2 entries");
    {
        higan_status rc = higan_dataset_load(&ds, DIR "no_such_dataset.safetensors");
        CHECK(rc == HIGAN_ERR_IO && msg_has(DIR "no_such_dataset.safetensors", NULL), "missing file: %s", higan_last_error());
    }
}

static unsigned char *read_all(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    unsigned char *b;
    long sz;
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    sz = ftell(f);
    rewind(f);
    b = (unsigned char *)malloc((size_t)sz + 1);
    *n = b ? fread(b, 1, (size_t)sz, f) : 0;
    fclose(f);
    return b;
}
static void write_all(const char *path, const unsigned char *b, size_t n) {
    FILE *f = fopen(path, "wb");
    if (!f) return;
    if (n) fwrite(b, 1, n, f);
    fclose(f);
}

static void test_truncations(void) {
    static const int widths[] = {3, 5};
    higan_dataset ds, back;
    unsigned char *buf;
    size_t n = 0, len;
    int all = 1, named = 1;
    const char *tpath = DIR "test_dataset_trunc.safetensors";
    build(&ds, 2, widths, 2);
    higan_dataset_save(&ds, DIR "test_dataset_small.safetensors");
    buf = read_all(DIR "test_dataset_small.safetensors", &n);
    CHECK(buf && n > 100, "small file written (%lu bytes)", (unsigned long)n);
    if (!buf) { higan_dataset_free(&ds); return; }
    for (len = 0; len < n; ++len) {
        write_all(tpath, buf, len);
        if (higan_dataset_load(&back, tpath) == HIGAN_OK) { all = 0; higan_dataset_free(&back); printf("   loaded at %lu\n", (unsigned long)len); }
        else if (!msg_has(tpath, NULL) || back.count != 0) { named = 0; printf("   %lu: %s\n", (unsigned long)len, higan_last_error()); }
    }
    CHECK(all, "every one of the %lu truncations fails", (unsigned long)n);
    CHECK(named, "every truncation error names the file");
    /* a flipped byte in a label code point is caught by validation */
    {
        higan_safetensors st;
        const higan_st_tensor *t;
        if (higan_safetensors_load(&st, DIR "test_dataset_small.safetensors") == HIGAN_OK) {
            t = higan_safetensors_find(&st, "lbs");
            if (t) {
                size_t at = (size_t)(st.data - st.file) + t->begin + 4 * 3 + 1;   /* byte 1 of lbs[3] */
                buf[at] ^= 0x40;
                write_all(tpath, buf, n);
                CHECK(higan_dataset_load(&back, tpath) == HIGAN_ERR_FORMAT && msg_has(tpath, "record 1"),
                      "flipped label byte: %s", higan_last_error());
            }
            higan_safetensors_free(&st);
        }
    }
    free(buf);
    higan_dataset_free(&ds);
}

static void test_hdf5(void) {
    static const int widths[] = {1, 7, 64, 300, 33, 4096, 129};
    higan_dataset ds, h5, back;
    build(&ds, 25, widths, 7);
#ifdef HIGAN_HDF5
    {
        unsigned char *a, *b;
        size_t na = 0, nb = 0, len;
        int all = 1;
        CHECK(higan_dataset_has_hdf5(), "HDF5 support compiled in");
        CHECK(higan_dataset_save(&ds, DIR "test_dataset.hdf5") == HIGAN_OK, "save .hdf5: %s", higan_last_error());
        CHECK(higan_dataset_load(&h5, DIR "test_dataset.hdf5") == HIGAN_OK, "load .hdf5: %s", higan_last_error());
        CHECK(same_dataset(&ds, &h5), "safetensors -> hdf5 round trip exact");
        CHECK(higan_dataset_save(&h5, DIR "test_dataset_h5.safetensors") == HIGAN_OK &&
              higan_dataset_load(&back, DIR "test_dataset_h5.safetensors") == HIGAN_OK && same_dataset(&ds, &back),
              "hdf5 -> safetensors round trip exact");
        higan_dataset_save(&ds, DIR "test_dataset_st.safetensors");
        a = read_all(DIR "test_dataset_st.safetensors", &na);
        b = read_all(DIR "test_dataset_h5.safetensors", &nb);
        CHECK(a && b && na == nb && !memcmp(a, b, na), "safetensors -> hdf5 -> safetensors gives the same bytes");
        free(a); free(b);
        higan_dataset_free(&back);
        {
            /* layout: imgs chunked with gzip level 4 (as gen_h5file), dtypes as h5py writes them */
            hid_t f = H5Fopen(DIR "test_dataset.hdf5", H5F_ACC_RDONLY, H5P_DEFAULT);
            hid_t d = H5Dopen2(f, "imgs", H5P_DEFAULT), pl = H5Dget_create_plist(d), ty;
            unsigned flags, cd[4] = {0, 0, 0, 0};
            size_t ncd = 4;
            char nm[32];
            H5Z_filter_t filt = H5Pget_nfilters(pl) > 0 ? H5Pget_filter2(pl, 0, &flags, &ncd, cd, sizeof nm, nm, NULL) : -1;
            CHECK(H5Pget_layout(pl) == H5D_CHUNKED && filt == H5Z_FILTER_DEFLATE && cd[0] == 4,
                  "imgs is chunked and gzip level %u", cd[0]);
            H5Pclose(pl); H5Dclose(d);
            d = H5Dopen2(f, "wids", H5P_DEFAULT);
            ty = H5Dget_type(d);
            CHECK(H5Tequal(ty, H5T_STD_I16LE) > 0, "wids stored as int16 little-endian");
            H5Tclose(ty); H5Dclose(d);
            d = H5Dopen2(f, "img_seek_idxs", H5P_DEFAULT);
            ty = H5Dget_type(d);
            CHECK(H5Tequal(ty, H5T_STD_I64LE) > 0, "img_seek_idxs stored as int64 little-endian");
            H5Tclose(ty); H5Dclose(d);
            H5Fclose(f);
        }
        /* truncated HDF5 files fail cleanly and name the file */
        a = read_all(DIR "test_dataset.hdf5", &na);
        for (len = 0; a && len < na; len += (len < 4096 ? 97 : 1531)) {
            write_all(DIR "test_dataset_trunc.hdf5", a, len);
            if (higan_dataset_load(&back, DIR "test_dataset_trunc.hdf5") == HIGAN_OK) { all = 0; higan_dataset_free(&back); }
            else if (!msg_has(DIR "test_dataset_trunc.hdf5", NULL)) { all = 0; printf("   %s\n", higan_last_error()); }
        }
        CHECK(a && all, "truncated HDF5 files fail with the file named");
        free(a);
        /* the validation runs on HDF5 input too */
        ds.lb_lens[2] = -1;
        higan_dataset_save(&ds, DIR "test_dataset_bad.hdf5");
        CHECK(higan_dataset_load(&back, DIR "test_dataset_bad.hdf5") == HIGAN_ERR_FORMAT &&
              msg_has(DIR "test_dataset_bad.hdf5", "record 2"), "bad record in HDF5: %s", higan_last_error());
        {
            higan_dataset e;
            higan_dataset_init(&e);
            CHECK(higan_dataset_save(&e, DIR "test_dataset_empty.hdf5") == HIGAN_OK &&
                  higan_dataset_load(&back, DIR "test_dataset_empty.hdf5") == HIGAN_OK && back.count == 0,
                  "empty dataset through HDF5: %s", higan_last_error());
            higan_dataset_free(&back);
        }
        higan_dataset_free(&h5);
    }
#else
    (void)h5; (void)back;
    printf("SKIP HDF5 round trip (built without HIGAN_HDF5; make HDF5=1 enables it)\n");
    CHECK(!higan_dataset_has_hdf5(), "no HDF5 support in this build");
    CHECK(higan_dataset_save(&ds, DIR "test_dataset.hdf5") == HIGAN_ERR_UNSUPPORTED &&
          msg_has("make HDF5=1", DIR "test_dataset.hdf5"), "saving .hdf5 says how to get support: %s", higan_last_error());
    CHECK(higan_dataset_load(&back, DIR "x.H5") == HIGAN_ERR_UNSUPPORTED && msg_has("make HDF5=1", NULL),
          "loading .H5 says how to get support");
#endif
    CHECK(higan_dataset_is_hdf5_path("a/b.hdf5") && higan_dataset_is_hdf5_path("B.H5") &&
          !higan_dataset_is_hdf5_path("x.safetensors") && !higan_dataset_is_hdf5_path("h5"), "HDF5 path detection");
    higan_dataset_free(&ds);
}

/* Files written by Python (h5py as HiGAN+'s gen_h5file; tests/oracle/make_dataset.py). */
static void check_official(const higan_dataset *ds, const char *what) {
    static const int widths[4] = {5, 17, 64, 3}, wids[4] = {672, 3, 3, 150};
    static const char *const texts[4] = {"A", "Hello,", "it's", "1990"};
    int64_t i;
    int ok = ds->count == 4 && ds->total_width == 89 && ds->total_chars == 15, y, x;
    for (i = 0; ok && i < 4; ++i) {
        ok &= ds->img_lens[i] == widths[i] && ds->wids[i] == wids[i];
        {
            char lb[16];
            higan_dataset_label(ds, i, lb, sizeof lb);
            ok &= !strcmp(lb, texts[i]);
        }
        for (y = 0; y < 64; ++y) for (x = 0; x < widths[i]; ++x) ok &= higan_dataset_pixel(ds, i, y, x) == pix_value((int)i, y, x);
    }
    CHECK(ok, "%s: 4 words, labels, writer ids and pixels as written by Python", what);
}
static void test_official_layout(void) {
    higan_dataset ds;
    if (higan_dataset_load(&ds, "tests/oracle/dataset_official.safetensors") != HIGAN_OK) {
        CHECK(0, "load tests/oracle/dataset_official.safetensors: %s (regenerate with make oracle)", higan_last_error());
    } else {
        check_official(&ds, "Python-written safetensors");
        higan_dataset_free(&ds);
    }
#ifdef HIGAN_HDF5
    if (higan_dataset_load(&ds, "tests/oracle/dataset_official.hdf5") != HIGAN_OK) {
        CHECK(0, "load tests/oracle/dataset_official.hdf5: %s", higan_last_error());
    } else {
        check_official(&ds, "h5py gen_h5file-layout HDF5");
        higan_dataset_free(&ds);
    }
#else
    printf("SKIP h5py-written HDF5 fixture (built without HIGAN_HDF5)\n");
#endif
}

int main(void) {
    test_official_layout();
    test_build_and_roundtrip();
    test_append_errors();
    test_corrupt_records();
    test_truncations();
    test_hdf5();
    return check_finish();
}
