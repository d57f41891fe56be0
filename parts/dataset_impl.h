#ifndef HIGAN_DATASET_IMPL_INCLUDED
#define HIGAN_DATASET_IMPL_INCLUDED
/* ---- dataset: HiGAN+'s word container; safetensors always, HDF5 under HIGAN_HDF5 ---------- */
#include <ctype.h>
#include <stdio.h>
#include <string.h>
#ifdef HIGAN_HDF5
#include <hdf5.h>
#endif

static const char *const higan__ds_names[7] = {
    "imgs", "img_seek_idxs", "img_lens", "lbs", "lb_seek_idxs", "lb_lens", "wids"
};
static const higan_dtype higan__ds_dtypes[7] = {
    HIGAN_U8, HIGAN_I64, HIGAN_I16, HIGAN_I32, HIGAN_I64, HIGAN_I16, HIGAN_I16
};

HIGAN_DEF void higan_dataset_init(higan_dataset *ds) {
    if (ds) memset(ds, 0, sizeof *ds);
}
HIGAN_DEF void higan_dataset_free(higan_dataset *ds) {
    if (!ds) return;
    HIGAN_FREE(ds->imgs);
    HIGAN_FREE(ds->img_seek_idxs);
    HIGAN_FREE(ds->img_lens);
    HIGAN_FREE(ds->lbs);
    HIGAN_FREE(ds->lb_seek_idxs);
    HIGAN_FREE(ds->lb_lens);
    HIGAN_FREE(ds->wids);
    memset(ds, 0, sizeof *ds);
}
HIGAN_DEF int higan_dataset_has_hdf5(void) {
#ifdef HIGAN_HDF5
    return 1;
#else
    return 0;
#endif
}
/* Copies the current error message (the next higan__error call overwrites it). */
static void higan__ds_last_error(char *out, size_t cap) {
    const char *e = higan_last_error();
    size_t n = strlen(e);
    if (n > cap - 1) n = cap - 1;
    memcpy(out, e, n);
    out[n] = 0;
}
static int higan__ds_ends_with(const char *s, const char *suffix) {
    size_t n = strlen(s), m = strlen(suffix), i;
    if (n < m) return 0;
    for (i = 0; i < m; ++i)
        if (tolower((unsigned char)s[n - m + i]) != tolower((unsigned char)suffix[i])) return 0;
    return 1;
}
HIGAN_DEF int higan_dataset_is_hdf5_path(const char *path) {
    return path && (higan__ds_ends_with(path, ".hdf5") || higan__ds_ends_with(path, ".h5"));
}

/* Grows a malloc'd array to hold at least need elements of size sz (doubling). */
static int higan__ds_grow(void **p, int64_t *cap, int64_t need, size_t sz) {
    int64_t n = *cap;
    void *q;
    if (need <= n) return 1;
    if (n < 16) n = 16;
    while (n < need) n *= 2;
    q = HIGAN_REALLOC(*p, (size_t)n * sz);
    if (!q) return 0;
    *p = q;
    *cap = n;
    return 1;
}
/* imgs: grow the row stride to at least need columns, re-laying the 64 rows out. */
static int higan__ds_grow_cols(higan_dataset *ds, int64_t need) {
    int64_t n = ds->capacity_cols, r;
    uint8_t *q;
    if (need <= n) return 1;
    if (n < 256) n = 256;
    while (n < need) n *= 2;
    q = (uint8_t *)HIGAN_MALLOC((size_t)n * HIGAN_DATASET_HEIGHT);
    if (!q) return 0;
    for (r = 0; r < HIGAN_DATASET_HEIGHT; ++r)
        if (ds->total_width) memcpy(q + r * n, ds->imgs + r * ds->capacity_cols, (size_t)ds->total_width);
    HIGAN_FREE(ds->imgs);
    ds->imgs = q;
    ds->capacity_cols = n;
    return 1;
}

HIGAN_DEF higan_status higan_dataset_append(higan_dataset *ds, const uint8_t *img, int w,
                                            const char *label, int wid) {
    int codes_small[256], n, k, r;
    int64_t i;
    if (!ds || !img || !label) return higan__error(HIGAN_ERR_ARG, "dataset_append: NULL argument");
    if (w < 1 || w > HIGAN_DATASET_MAX_WIDTH)
        return higan__error(HIGAN_ERR_ARG, "dataset_append: word '%.200s' has width %d, expected 1..%d",
                            label, w, HIGAN_DATASET_MAX_WIDTH);
    if (wid < -32768 || wid > 32767)
        return higan__error(HIGAN_ERR_ARG, "dataset_append: word '%.200s' has writer id %d outside the int16 range",
                            label, wid);
    if (!label[0]) return higan__error(HIGAN_ERR_ARG, "dataset_append: empty label (a word needs at least one character)");
    if (strlen(label) > HIGAN_DATASET_MAX_LABEL)
        return higan__error(HIGAN_ERR_ARG, "dataset_append: label '%.60s...' is longer than %d characters",
                            label, HIGAN_DATASET_MAX_LABEL);
    {
        /* the alphabet is ASCII, so the label has at most strlen(label) characters */
        int *codes = codes_small;
        size_t len = strlen(label);
        if (len > 256) {
            codes = (int *)HIGAN_MALLOC(len * sizeof(int));
            if (!codes) return higan__error(HIGAN_ERR_NOMEM, "dataset_append: out of memory");
        }
        n = higan_text_encode(label, codes, (int)len);
        if (codes != codes_small) HIGAN_FREE(codes);
        if (n < 0) {
            char msg[512];
            higan__ds_last_error(msg, sizeof msg);
            return higan__error(HIGAN_ERR_ARG, "dataset_append: label '%.200s': %s", label, msg);
        }
    }
    if (!higan__ds_grow_cols(ds, ds->total_width + w) ||
        !higan__ds_grow((void **)&ds->lbs, &ds->capacity_chars, ds->total_chars + n, sizeof(int32_t)))
        return higan__error(HIGAN_ERR_NOMEM, "dataset_append: out of memory");
    if (ds->count + 1 > ds->capacity_count) {
        int64_t c = ds->capacity_count, c1;
        int ok = 1;
        c1 = c;
        ok &= higan__ds_grow((void **)&ds->img_seek_idxs, &c1, ds->count + 1, sizeof(int64_t)); c1 = c;
        ok &= higan__ds_grow((void **)&ds->img_lens, &c1, ds->count + 1, sizeof(int16_t)); c1 = c;
        ok &= higan__ds_grow((void **)&ds->lb_seek_idxs, &c1, ds->count + 1, sizeof(int64_t)); c1 = c;
        ok &= higan__ds_grow((void **)&ds->lb_lens, &c1, ds->count + 1, sizeof(int16_t)); c1 = c;
        ok &= higan__ds_grow((void **)&ds->wids, &c1, ds->count + 1, sizeof(int16_t));
        if (!ok) return higan__error(HIGAN_ERR_NOMEM, "dataset_append: out of memory");
        ds->capacity_count = c1;
    }
    for (r = 0; r < HIGAN_DATASET_HEIGHT; ++r)
        memcpy(ds->imgs + r * ds->capacity_cols + ds->total_width, img + (size_t)r * (size_t)w, (size_t)w);
    /* code points of the label (ASCII: one byte per character) */
    {
        const unsigned char *s = (const unsigned char *)label;
        for (k = 0; k < n; ++k) ds->lbs[ds->total_chars + k] = (int32_t)s[k];
    }
    i = ds->count;
    ds->img_seek_idxs[i] = ds->total_width;
    ds->img_lens[i] = (int16_t)w;
    ds->lb_seek_idxs[i] = ds->total_chars;
    ds->lb_lens[i] = (int16_t)n;
    ds->wids[i] = (int16_t)wid;
    ds->total_width += w;
    ds->total_chars += n;
    ds->count = i + 1;
    return HIGAN_OK;
}

HIGAN_DEF higan_status higan_dataset_pack(higan_dataset *ds) {
    int64_t r;
    if (!ds) return higan__error(HIGAN_ERR_ARG, "dataset_pack: NULL argument");
    if (ds->capacity_cols == ds->total_width || !ds->imgs) { ds->capacity_cols = ds->total_width; return HIGAN_OK; }
    for (r = 1; r < HIGAN_DATASET_HEIGHT; ++r)   /* moves go left: ascending rows never overwrite unread data */
        memmove(ds->imgs + r * ds->total_width, ds->imgs + r * ds->capacity_cols, (size_t)ds->total_width);
    if (ds->total_width > 0) {
        uint8_t *q = (uint8_t *)HIGAN_REALLOC(ds->imgs, (size_t)ds->total_width * HIGAN_DATASET_HEIGHT);
        if (q) ds->imgs = q;   /* a failed shrink keeps the (larger) block */
    }
    ds->capacity_cols = ds->total_width;
    return HIGAN_OK;
}
HIGAN_DEF uint8_t higan_dataset_pixel(const higan_dataset *ds, int64_t i, int y, int x) {
    HIGAN_ASSERT(ds && i >= 0 && i < ds->count && y >= 0 && y < HIGAN_DATASET_HEIGHT && x >= 0 && x < ds->img_lens[i]);
    return ds->imgs[(int64_t)y * ds->capacity_cols + ds->img_seek_idxs[i] + x];
}
HIGAN_DEF int higan_dataset_image(const higan_dataset *ds, int64_t i, uint8_t *out, int64_t cap) {
    int w, r;
    if (!ds || i < 0 || i >= ds->count)
        return higan__error(HIGAN_ERR_ARG, "dataset_image: index %lld outside [0, %lld)", (long long)i,
                            (long long)(ds ? ds->count : 0));
    w = ds->img_lens[i];
    if (!out || cap < (int64_t)w * HIGAN_DATASET_HEIGHT)
        return higan__error(HIGAN_ERR_ARG, "dataset_image: word %lld needs %d bytes, the buffer has %lld",
                            (long long)i, w * HIGAN_DATASET_HEIGHT, (long long)cap);
    for (r = 0; r < HIGAN_DATASET_HEIGHT; ++r)
        memcpy(out + (size_t)r * (size_t)w, ds->imgs + r * ds->capacity_cols + ds->img_seek_idxs[i], (size_t)w);
    return w;
}

/* Appends code point cp as UTF-8 to out (cap bytes, snprintf-like); returns the byte count. */
static int higan__ds_utf8(int32_t cp, char *out, int pos, int cap) {
    unsigned char b[4];
    int n, k;
    if (cp < 0x80) { b[0] = (unsigned char)cp; n = 1; }
    else if (cp < 0x800) { b[0] = (unsigned char)(0xC0 | (cp >> 6)); b[1] = (unsigned char)(0x80 | (cp & 0x3F)); n = 2; }
    else if (cp < 0x10000) { b[0] = (unsigned char)(0xE0 | (cp >> 12)); b[1] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
                             b[2] = (unsigned char)(0x80 | (cp & 0x3F)); n = 3; }
    else { b[0] = (unsigned char)(0xF0 | ((cp >> 18) & 0x07)); b[1] = (unsigned char)(0x80 | ((cp >> 12) & 0x3F));
           b[2] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F)); b[3] = (unsigned char)(0x80 | (cp & 0x3F)); n = 4; }
    for (k = 0; k < n; ++k) if (out && pos + k < cap - 1) out[pos + k] = (char)b[k];
    return n;
}
HIGAN_DEF int higan_dataset_label(const higan_dataset *ds, int64_t i, char *out, int cap) {
    int64_t k, s;
    int len = 0, n;
    if (!ds || i < 0 || i >= ds->count)
        return higan__error(HIGAN_ERR_ARG, "dataset_label: index %lld outside [0, %lld)", (long long)i,
                            (long long)(ds ? ds->count : 0));
    s = ds->lb_seek_idxs[i];
    n = ds->lb_lens[i];
    for (k = 0; k < n; ++k) {
        int32_t cp = ds->lbs[s + k];
        if (cp < 0 || cp > 0x10FFFF) cp = 0xFFFD;
        len += higan__ds_utf8(cp, out, len, cap);
    }
    if (out && cap > 0) out[len < cap - 1 ? len : cap - 1] = 0;
    return len;
}
HIGAN_DEF int higan_dataset_label_codes(const higan_dataset *ds, int64_t i, int *out, int max) {
    int64_t k, s;
    int n;
    if (!ds || i < 0 || i >= ds->count)
        return higan__error(HIGAN_ERR_ARG, "dataset_label_codes: index %lld outside [0, %lld)", (long long)i,
                            (long long)(ds ? ds->count : 0));
    s = ds->lb_seek_idxs[i];
    n = ds->lb_lens[i];
    if (n > max) return higan__error(HIGAN_ERR_ARG, "dataset_label_codes: word %lld has %d characters, more than %d",
                                     (long long)i, n, max);
    for (k = 0; k < n; ++k) {
        int32_t cp = ds->lbs[s + k];
        int c = (cp > 0 && cp < 128) ? higan_char_label((int)cp) : -1;
        if (c < 0) return higan__error(HIGAN_ERR_ARG, "dataset_label_codes: word %lld: code point U+%04X is not in the alphabet",
                                       (long long)i, (unsigned)cp);
        out[k] = c;
    }
    return n;
}

/* ---- validation shared by both formats ---------------------------------------------------- */
/* Checks every record of a dataset whose arrays are all set; names path and record. */
static higan_status higan__ds_validate(const higan_dataset *ds, const char *path) {
    int64_t i, k;
    for (i = 0; i < ds->count; ++i) {
        int64_t s = ds->img_seek_idxs[i], w = ds->img_lens[i];
        int64_t ls = ds->lb_seek_idxs[i], n = ds->lb_lens[i];
        if (w < 1)
            return higan__error(HIGAN_ERR_FORMAT, "dataset '%s': record %lld: img_lens is %lld (must be >= 1)",
                                path, (long long)i, (long long)w);
        if (w > HIGAN_DATASET_MAX_WIDTH)
            return higan__error(HIGAN_ERR_FORMAT, "dataset '%s': record %lld: image width %lld exceeds the maximum %d",
                                path, (long long)i, (long long)w, HIGAN_DATASET_MAX_WIDTH);
        if (s < 0 || s > ds->total_width - w)
            return higan__error(HIGAN_ERR_FORMAT, "dataset '%s': record %lld: image columns [%lld, %lld) lie outside "
                                "imgs (width %lld)", path, (long long)i, (long long)s, (long long)s + w,
                                (long long)ds->total_width);
        if (n < 1)
            return higan__error(HIGAN_ERR_FORMAT, "dataset '%s': record %lld: lb_lens is %lld (must be >= 1)",
                                path, (long long)i, (long long)n);
        if (ls < 0 || ls > ds->total_chars - n)
            return higan__error(HIGAN_ERR_FORMAT, "dataset '%s': record %lld: label characters [%lld, %lld) lie "
                                "outside lbs (%lld entries)", path, (long long)i, (long long)ls, (long long)ls + n,
                                (long long)ds->total_chars);
        for (k = 0; k < n; ++k) {
            int32_t cp = ds->lbs[ls + k];
            if (!(cp > 0 && cp < 128 && higan_char_label((int)cp) >= 0))
                return higan__error(HIGAN_ERR_FORMAT, "dataset '%s': record %lld: label character %lld is code point "
                                    "%ld (U+%04lX), not in the HiGAN+ alphabet", path, (long long)i, (long long)k,
                                    (long)cp, (unsigned long)(uint32_t)cp);
        }
    }
    return HIGAN_OK;
}

/* ---- safetensors ------------------------------------------------------------------------- */
static higan_status higan__ds_save_st(const higan_dataset *ds, const char *path) {
    higan_safetensors_writer w;
    int64_t shape[2];
    uint8_t *packed = NULL;
    const uint8_t *imgs = ds->imgs;
    higan_status rc = HIGAN_OK;
    static const uint8_t empty8[1] = {0};
    if (ds->capacity_cols != ds->total_width && ds->total_width > 0) {
        /* still in building layout: write a packed copy (higan_dataset_pack avoids it) */
        int64_t r;
        packed = (uint8_t *)HIGAN_MALLOC((size_t)ds->total_width * HIGAN_DATASET_HEIGHT);
        if (!packed) return higan__error(HIGAN_ERR_NOMEM, "dataset save '%s': out of memory", path);
        for (r = 0; r < HIGAN_DATASET_HEIGHT; ++r)
            memcpy(packed + r * ds->total_width, ds->imgs + r * ds->capacity_cols, (size_t)ds->total_width);
        imgs = packed;
    }
    higan_safetensors_writer_init(&w);
    shape[0] = HIGAN_DATASET_HEIGHT; shape[1] = ds->total_width;
    if (rc == HIGAN_OK) rc = higan_safetensors_writer_add(&w, "imgs", HIGAN_U8, 2, shape, imgs ? (const void *)imgs : (const void *)empty8);
    shape[0] = ds->count;
    if (rc == HIGAN_OK) rc = higan_safetensors_writer_add(&w, "img_seek_idxs", HIGAN_I64, 1, shape, ds->img_seek_idxs ? (const void *)ds->img_seek_idxs : (const void *)empty8);
    if (rc == HIGAN_OK) rc = higan_safetensors_writer_add(&w, "img_lens", HIGAN_I16, 1, shape, ds->img_lens ? (const void *)ds->img_lens : (const void *)empty8);
    if (rc == HIGAN_OK) rc = higan_safetensors_writer_add(&w, "lb_seek_idxs", HIGAN_I64, 1, shape, ds->lb_seek_idxs ? (const void *)ds->lb_seek_idxs : (const void *)empty8);
    if (rc == HIGAN_OK) rc = higan_safetensors_writer_add(&w, "lb_lens", HIGAN_I16, 1, shape, ds->lb_lens ? (const void *)ds->lb_lens : (const void *)empty8);
    if (rc == HIGAN_OK) rc = higan_safetensors_writer_add(&w, "wids", HIGAN_I16, 1, shape, ds->wids ? (const void *)ds->wids : (const void *)empty8);
    shape[0] = ds->total_chars;
    if (rc == HIGAN_OK) rc = higan_safetensors_writer_add(&w, "lbs", HIGAN_I32, 1, shape, ds->lbs ? (const void *)ds->lbs : (const void *)empty8);
    if (rc == HIGAN_OK) rc = higan_safetensors_writer_meta(&w, "format", "higan-dataset");
    if (rc == HIGAN_OK) rc = higan_safetensors_writer_save(&w, path);
    higan_safetensors_writer_free(&w);
    HIGAN_FREE(packed);
    return rc;
}

static higan_status higan__ds_load_st(higan_dataset *ds, const char *path) {
    higan_safetensors st;
    const higan_st_tensor *t[7];
    void **dst[7];
    int k;
    int64_t count;
    if (higan_safetensors_load(&st, path) != HIGAN_OK) {
        char msg[900];
        higan_status rc;
        higan__ds_last_error(msg, sizeof msg);
        rc = strstr(msg, "cannot open") == msg || strstr(msg, "cannot read") == msg ? HIGAN_ERR_IO : HIGAN_ERR_FORMAT;
        return higan__error(rc, "dataset '%s': %s", path, msg);
    }
    for (k = 0; k < 7; ++k) {
        t[k] = higan_safetensors_find(&st, higan__ds_names[k]);
        if (!t[k]) {
            higan_safetensors_free(&st);
            return higan__error(HIGAN_ERR_FORMAT, "dataset '%s': tensor '%s' is missing", path, higan__ds_names[k]);
        }
        if (t[k]->dtype != higan__ds_dtypes[k] || t[k]->ndim != (k == 0 ? 2 : 1)) {
            higan_status rc = higan__error(HIGAN_ERR_FORMAT, "dataset '%s': tensor '%s' is %s with %d dimensions, expected %s with %d",
                                           path, higan__ds_names[k], higan_dtype_name(t[k]->dtype), t[k]->ndim,
                                           higan_dtype_name(higan__ds_dtypes[k]), k == 0 ? 2 : 1);
            higan_safetensors_free(&st);
            return rc;
        }
    }
    if (t[0]->shape[0] != HIGAN_DATASET_HEIGHT) {
        higan_status rc = higan__error(HIGAN_ERR_FORMAT, "dataset '%s': imgs has height %lld, expected %d", path,
                                       (long long)t[0]->shape[0], HIGAN_DATASET_HEIGHT);
        higan_safetensors_free(&st);
        return rc;
    }
    count = t[1]->shape[0];
    for (k = 2; k < 7; ++k) {
        if (k == 3) continue;   /* lbs has total_chars entries */
        if (t[k]->shape[0] != count) {
            higan_status rc = higan__error(HIGAN_ERR_FORMAT, "dataset '%s': tensor '%s' has %lld entries but img_seek_idxs has %lld",
                                           path, higan__ds_names[k], (long long)t[k]->shape[0], (long long)count);
            higan_safetensors_free(&st);
            return rc;
        }
    }
    dst[0] = (void **)&ds->imgs; dst[1] = (void **)&ds->img_seek_idxs; dst[2] = (void **)&ds->img_lens;
    dst[3] = (void **)&ds->lbs; dst[4] = (void **)&ds->lb_seek_idxs; dst[5] = (void **)&ds->lb_lens;
    dst[6] = (void **)&ds->wids;
    ds->count = count;
    ds->total_width = t[0]->shape[1];
    ds->total_chars = t[3]->shape[0];
    /* small arrays: copies (safetensors data is little-endian, as every supported host) */
    for (k = 1; k < 7; ++k) {
        size_t bytes = t[k]->end - t[k]->begin;
        void *p = HIGAN_MALLOC(bytes ? bytes : 1);
        if (!p) {
            higan_safetensors_free(&st);
            higan_dataset_free(ds);
            return higan__error(HIGAN_ERR_NOMEM, "dataset '%s': out of memory", path);
        }
        if (bytes) memcpy(p, st.data + t[k]->begin, bytes);
        *dst[k] = p;
    }
    /* imgs (the bulk of the file): moved to the front of the file buffer, which we then own */
    {
        size_t bytes = t[0]->end - t[0]->begin;
        unsigned char *block = st.file, *q;
        memmove(block, st.data + t[0]->begin, bytes);
        st.file = NULL;
        q = (unsigned char *)HIGAN_REALLOC(block, bytes ? bytes : 1);
        ds->imgs = (uint8_t *)(q ? q : block);
    }
    higan_safetensors_free(&st);
    ds->capacity_cols = ds->total_width;
    ds->capacity_chars = ds->total_chars;
    ds->capacity_count = ds->count;
    if (higan__ds_validate(ds, path) != HIGAN_OK) {
        higan_dataset_free(ds);
        return HIGAN_ERR_FORMAT;
    }
    return HIGAN_OK;
}

/* ---- HDF5 (HiGAN+'s own files) ------------------------------------------------------------ */
#ifdef HIGAN_HDF5
/* Native memory types of the seven datasets, and a readable name of a file datatype. */
static hid_t higan__ds_h5_native(int k) {
    switch (higan__ds_dtypes[k]) {
    case HIGAN_U8: return H5T_NATIVE_UINT8;
    case HIGAN_I16: return H5T_NATIVE_INT16;
    case HIGAN_I32: return H5T_NATIVE_INT32;
    default: return H5T_NATIVE_INT64;
    }
}
static void higan__ds_h5_typename(hid_t type, char *out, size_t cap) {
    H5T_class_t cls = H5Tget_class(type);
    size_t sz = H5Tget_size(type);
    if (cls == H5T_INTEGER)
        snprintf(out, cap, "%s%d", H5Tget_sign(type) == H5T_SGN_NONE ? "uint" : "int", (int)(sz * 8));
    else if (cls == H5T_FLOAT) snprintf(out, cap, "float%d", (int)(sz * 8));
    else snprintf(out, cap, "a non-numeric type");
}
static higan_status higan__ds_load_h5(higan_dataset *ds, const char *path) {
    hid_t file = -1, dset = -1, space = -1, type = -1;
    H5E_auto2_t old_fn;
    void *old_data;
    void **dst[7];
    int64_t shape[7][2];
    int k;
    higan_status rc = HIGAN_OK;
    FILE *probe;
    H5Eget_auto2(H5E_DEFAULT, &old_fn, &old_data);
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);   /* our messages replace HDF5's stack dumps */
    dst[0] = (void **)&ds->imgs; dst[1] = (void **)&ds->img_seek_idxs; dst[2] = (void **)&ds->img_lens;
    dst[3] = (void **)&ds->lbs; dst[4] = (void **)&ds->lb_seek_idxs; dst[5] = (void **)&ds->lb_lens;
    dst[6] = (void **)&ds->wids;
    probe = fopen(path, "rb");
    if (!probe) { rc = higan__error(HIGAN_ERR_IO, "dataset '%s': cannot open: %s", path, strerror(errno)); goto done; }
    fclose(probe);
    file = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    if (file < 0) { rc = higan__error(HIGAN_ERR_FORMAT, "dataset '%s': not a readable HDF5 file (truncated or corrupt?)", path); goto done; }
    for (k = 0; k < 7; ++k) {
        int ndim, want = k == 0 ? 2 : 1, d;
        hsize_t dims[2] = {0, 0};
        size_t elem = higan_dtype_size(higan__ds_dtypes[k]);
        int64_t numel;
        char tn[32];
        if (H5Lexists(file, higan__ds_names[k], H5P_DEFAULT) <= 0) {
            rc = higan__error(HIGAN_ERR_FORMAT, "dataset '%s': HDF5 dataset '%s' is missing", path, higan__ds_names[k]);
            goto done;
        }
        dset = H5Dopen2(file, higan__ds_names[k], H5P_DEFAULT);
        if (dset < 0) { rc = higan__error(HIGAN_ERR_FORMAT, "dataset '%s': cannot open HDF5 dataset '%s'", path, higan__ds_names[k]); goto done; }
        space = H5Dget_space(dset);
        type = H5Dget_type(dset);
        ndim = space >= 0 ? H5Sget_simple_extent_ndims(space) : -1;
        higan__ds_h5_typename(type, tn, sizeof tn);
        if (type < 0 || H5Tget_class(type) != H5T_INTEGER || H5Tget_size(type) != elem ||
            (H5Tget_sign(type) == H5T_SGN_NONE) != (higan__ds_dtypes[k] == HIGAN_U8) || ndim != want) {
            rc = higan__error(HIGAN_ERR_FORMAT, "dataset '%s': HDF5 dataset '%s' is %s with %d dimensions, expected %s with %d",
                              path, higan__ds_names[k], tn, ndim, higan_dtype_name(higan__ds_dtypes[k]), want);
            goto done;
        }
        H5Sget_simple_extent_dims(space, dims, NULL);
        numel = 1;
        for (d = 0; d < want; ++d) { shape[k][d] = (int64_t)dims[d]; numel *= (int64_t)dims[d]; }
        if (k == 0 && shape[0][0] != HIGAN_DATASET_HEIGHT) {
            rc = higan__error(HIGAN_ERR_FORMAT, "dataset '%s': imgs has height %lld, expected %d", path,
                              (long long)shape[0][0], HIGAN_DATASET_HEIGHT);
            goto done;
        }
        if (k >= 2 && k != 3 && shape[k][0] != shape[1][0]) {
            rc = higan__error(HIGAN_ERR_FORMAT, "dataset '%s': HDF5 dataset '%s' has %lld entries but img_seek_idxs has %lld",
                              path, higan__ds_names[k], (long long)shape[k][0], (long long)shape[1][0]);
            goto done;
        }
        *dst[k] = HIGAN_MALLOC(numel ? (size_t)numel * elem : 1);
        if (!*dst[k]) { rc = higan__error(HIGAN_ERR_NOMEM, "dataset '%s': out of memory for '%s'", path, higan__ds_names[k]); goto done; }
        if (numel && H5Dread(dset, higan__ds_h5_native(k), H5S_ALL, H5S_ALL, H5P_DEFAULT, *dst[k]) < 0) {
            rc = higan__error(HIGAN_ERR_FORMAT, "dataset '%s': cannot read HDF5 dataset '%s' (truncated or corrupt?)",
                              path, higan__ds_names[k]);
            goto done;
        }
        H5Tclose(type); type = -1;
        H5Sclose(space); space = -1;
        H5Dclose(dset); dset = -1;
    }
    ds->count = shape[1][0];
    ds->total_width = shape[0][1];
    ds->total_chars = shape[3][0];
    ds->capacity_cols = ds->total_width;
    ds->capacity_chars = ds->total_chars;
    ds->capacity_count = ds->count;
    rc = higan__ds_validate(ds, path);
done:
    if (type >= 0) H5Tclose(type);
    if (space >= 0) H5Sclose(space);
    if (dset >= 0) H5Dclose(dset);
    if (file >= 0) H5Fclose(file);
    H5Eset_auto2(H5E_DEFAULT, old_fn, old_data);
    if (rc != HIGAN_OK) higan_dataset_free(ds);
    return rc;
}
/* Writes one dataset; imgs chunked and gzip level 4 as gen_h5file (h5py compression='gzip',
   compression_opts=4). */
static int higan__ds_h5_write(hid_t file, int k, int64_t d0, int64_t d1, const void *data) {
    hsize_t dims[2], chunk[2];
    hid_t space, dcpl = H5P_DEFAULT, dset;
    int ok, rank = k == 0 ? 2 : 1;
    static const char zero[8] = {0};
    dims[0] = (hsize_t)d0; dims[1] = (hsize_t)d1;
    space = H5Screate_simple(rank, dims, NULL);
    if (space < 0) return 0;
    if (k == 0) {
        dcpl = H5Pcreate(H5P_DATASET_CREATE);
        chunk[0] = HIGAN_DATASET_HEIGHT;
        chunk[1] = d1 < 1 ? 1 : d1 < 4096 ? (hsize_t)d1 : 4096;   /* 256 KiB chunks */
        if (dcpl < 0 || H5Pset_chunk(dcpl, 2, chunk) < 0 || H5Pset_deflate(dcpl, 4) < 0) {
            if (dcpl >= 0) H5Pclose(dcpl);
            H5Sclose(space);
            return 0;
        }
    }
    dset = H5Dcreate2(file, higan__ds_names[k], higan__ds_h5_native(k), space, H5P_DEFAULT, dcpl, H5P_DEFAULT);
    ok = dset >= 0;
    if (ok && d0 * (rank == 2 ? d1 : 1) > 0)
        ok = H5Dwrite(dset, higan__ds_h5_native(k), H5S_ALL, H5S_ALL, H5P_DEFAULT, data ? data : (const void *)zero) >= 0;
    if (dset >= 0) ok &= H5Dclose(dset) >= 0;
    if (dcpl != H5P_DEFAULT) H5Pclose(dcpl);
    H5Sclose(space);
    return ok;
}
static higan_status higan__ds_save_h5(const higan_dataset *ds, const char *path) {
    H5E_auto2_t old_fn;
    void *old_data;
    hid_t file;
    char *tmp;
    size_t n = strlen(path);
    uint8_t *packed = NULL;
    const uint8_t *imgs = ds->imgs;
    int ok;
    if (ds->capacity_cols != ds->total_width && ds->total_width > 0) {
        int64_t r;
        packed = (uint8_t *)HIGAN_MALLOC((size_t)ds->total_width * HIGAN_DATASET_HEIGHT);
        if (!packed) return higan__error(HIGAN_ERR_NOMEM, "dataset save '%s': out of memory", path);
        for (r = 0; r < HIGAN_DATASET_HEIGHT; ++r)
            memcpy(packed + r * ds->total_width, ds->imgs + r * ds->capacity_cols, (size_t)ds->total_width);
        imgs = packed;
    }
    tmp = (char *)HIGAN_MALLOC(n + 5);
    if (!tmp) { HIGAN_FREE(packed); return higan__error(HIGAN_ERR_NOMEM, "dataset save '%s': out of memory", path); }
    memcpy(tmp, path, n);
    memcpy(tmp + n, ".tmp", 5);
    H5Eget_auto2(H5E_DEFAULT, &old_fn, &old_data);
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    file = H5Fcreate(tmp, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    if (file < 0) {
        H5Eset_auto2(H5E_DEFAULT, old_fn, old_data);
        higan__error(HIGAN_ERR_IO, "cannot save '%s': cannot create '%s'", path, tmp);
        HIGAN_FREE(tmp); HIGAN_FREE(packed);
        return HIGAN_ERR_IO;
    }
    ok = higan__ds_h5_write(file, 0, HIGAN_DATASET_HEIGHT, ds->total_width, imgs) &&
         higan__ds_h5_write(file, 3, ds->total_chars, 0, ds->lbs) &&
         higan__ds_h5_write(file, 1, ds->count, 0, ds->img_seek_idxs) &&
         higan__ds_h5_write(file, 2, ds->count, 0, ds->img_lens) &&
         higan__ds_h5_write(file, 4, ds->count, 0, ds->lb_seek_idxs) &&
         higan__ds_h5_write(file, 5, ds->count, 0, ds->lb_lens) &&
         higan__ds_h5_write(file, 6, ds->count, 0, ds->wids);
    ok &= H5Fclose(file) >= 0;
    H5Eset_auto2(H5E_DEFAULT, old_fn, old_data);
    HIGAN_FREE(packed);
    if (!ok) {
        remove(tmp);
        higan__error(HIGAN_ERR_IO, "cannot save '%s': writing HDF5 '%s' failed (disk full?)", path, tmp);
        HIGAN_FREE(tmp);
        return HIGAN_ERR_IO;
    }
    if (rename(tmp, path) != 0) {
        int e = errno;
        remove(tmp);
        higan__error(HIGAN_ERR_IO, "cannot save '%s': cannot rename '%s' onto it: %s", path, tmp, strerror(e));
        HIGAN_FREE(tmp);
        return HIGAN_ERR_IO;
    }
    HIGAN_FREE(tmp);
    return HIGAN_OK;
}
#endif /* HIGAN_HDF5 */

HIGAN_DEF higan_status higan_dataset_save(const higan_dataset *ds, const char *path) {
    if (!ds || !path) return higan__error(HIGAN_ERR_ARG, "dataset_save: NULL argument");
    if (higan_dataset_is_hdf5_path(path)) {
#ifdef HIGAN_HDF5
        return higan__ds_save_h5(ds, path);
#else
        return higan__error(HIGAN_ERR_UNSUPPORTED, "dataset '%s': built without HDF5 support: rebuild with make HDF5=1 "
                            "(needs libhdf5-dev and pkg-config), or use a .safetensors path", path);
#endif
    }
    return higan__ds_save_st(ds, path);
}
HIGAN_DEF higan_status higan_dataset_load(higan_dataset *ds, const char *path) {
    if (!ds) return higan__error(HIGAN_ERR_ARG, "dataset_load: NULL argument");
    higan_dataset_init(ds);
    if (!path) return higan__error(HIGAN_ERR_ARG, "dataset_load: NULL path");
    if (higan_dataset_is_hdf5_path(path)) {
#ifdef HIGAN_HDF5
        return higan__ds_load_h5(ds, path);
#else
        return higan__error(HIGAN_ERR_UNSUPPORTED, "dataset '%s': built without HDF5 support: rebuild with make HDF5=1 "
                            "(needs libhdf5-dev and pkg-config), or convert it with h5convert on a machine that has it",
                            path);
#endif
    }
    return higan__ds_load_st(ds, path);
}
#endif /* HIGAN_DATASET_IMPL_INCLUDED */
