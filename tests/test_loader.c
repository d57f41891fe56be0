/* Tests of the training data path (higan.h): cv2 / PIL resampling kernels against
   OpenCV and Pillow (tests/oracle/make_loader.py), the official style + augmentation pipeline
   of one word, the batch loader (shapes, padding, sorting, alignment, epochs, determinism,
   threaded == synchronous, augmentation rules, errors) and the lexicon (rules, sampling). */
#define HIGAN_IMPLEMENTATION
#include "higan.h"
#include "check.h"

#define H HIGAN_DATASET_HEIGHT

/* ---- fixtures ------------------------------------------------------------------------------ */
static int has_tensor(const higan_safetensors *st, const char *name) { return higan_safetensors_find(st, name) != NULL; }
static const higan_st_tensor *tensor2d(const higan_safetensors *st, const char *name, int64_t *h, int64_t *w) {
    const higan_st_tensor *t = higan_safetensors_find(st, name);
    if (!t) return NULL;
    *h = t->ndim == 2 ? t->shape[0] : 1;
    *w = t->shape[t->ndim - 1];
    return t;
}
static uint8_t *load_u8(const higan_safetensors *st, const char *name, int64_t *n) {
    float *f = check_load(st, name, n);
    uint8_t *u;
    int64_t i;
    if (!f) return NULL;
    u = (uint8_t *)malloc((size_t)(*n ? *n : 1));
    for (i = 0; i < *n; ++i) u[i] = (uint8_t)f[i];
    free(f);
    return u;
}

/* kind: "area", "linear", "pil_lanczos", "pil_bilinear" */
static void resize_u8(const char *kind, uint8_t *dst, int64_t dw, int64_t dh, const uint8_t *src, int64_t sw,
                      int64_t sh, int64_t ss, higan_arena *ar) {
    if (!strcmp(kind, "area")) higan_resize_area(dst, dw, dh, src, sw, sh, ss);
    else if (!strcmp(kind, "linear")) higan_resize_linear(dst, dw, dh, src, sw, sh, ss);
    else CHECK(higan_resize_pil(dst, dw, dh, src, sw, sh, ss, strstr(kind, "lanczos") ? HIGAN_PIL_LANCZOS
                                : HIGAN_PIL_BILINEAR, ar) == HIGAN_OK, "%s: resize_pil: %s", kind, higan_last_error());
}
static void resize_f32(const char *kind, float *dst, int64_t dw, int64_t dh, const float *src, int64_t sw,
                       int64_t sh, int64_t ss, higan_arena *ar) {
    if (!strcmp(kind, "area")) higan_resize_area_f32(dst, dw, dh, src, sw, sh, ss);
    else if (!strcmp(kind, "linear")) higan_resize_linear_f32(dst, dw, dh, src, sw, sh, ss);
    else CHECK(higan_resize_pil_f32(dst, dw, dh, src, sw, sh, ss, strstr(kind, "lanczos") ? HIGAN_PIL_LANCZOS
                                    : HIGAN_PIL_BILINEAR, ar) == HIGAN_OK, "%s: resize_pil_f32: %s", kind, higan_last_error());
}

/* Every case of a kind: uint8 must match within +-1 gray level (reported: how many differ at
   all; OpenCV's and Pillow's integer arithmetic is reproduced, so we expect 0), float within
   1e-4. The source is also read through a wider row stride. */
static void test_resample_kind(const higan_safetensors *st, const char *kind) {
    higan_arena ar;
    int i, n_cases = 0;
    higan_arena_init(&ar, (size_t)4 << 20);
    for (i = 0;; ++i) {
        char name[64], dname[64];
        int64_t sh = 1, sw = 1, dh = 1, dw = 1, n, k, y, bad = 0, maxd = 0, stride;
        uint8_t *src, *ref, *got, *wide;
        float *srcf, *reff, *gotf, *widef;
        snprintf(name, sizeof name, "%s_u8_%d.src", kind, i);
        snprintf(dname, sizeof dname, "%s_u8_%d.dst", kind, i);
        if (!has_tensor(st, name)) break;
        ++n_cases;
        tensor2d(st, name, &sh, &sw);
        tensor2d(st, dname, &dh, &dw);
        src = load_u8(st, name, &n);
        ref = load_u8(st, dname, &n);
        got = (uint8_t *)malloc((size_t)(dw * dh));
        stride = sw + 7;
        wide = (uint8_t *)malloc((size_t)(stride * sh));
        memset(wide, 0xAB, (size_t)(stride * sh));
        for (y = 0; y < sh; ++y) memcpy(wide + y * stride, src + y * sw, (size_t)sw);
        resize_u8(kind, got, dw, dh, src, sw, sh, sw, &ar);
        for (k = 0; k < dw * dh; ++k) {
            int d = abs((int)got[k] - (int)ref[k]);
            if (d) ++bad;
            if (d > maxd) maxd = d;
        }
        CHECK(maxd <= 1 && bad == 0, "%s uint8 case %d: %lldx%lld -> %lldx%lld: %lld of %lld values differ, max %lld "
              "(tolerance 1 gray level; 0 expected)", kind, i, (long long)sh, (long long)sw, (long long)dh,
              (long long)dw, (long long)bad, (long long)(dw * dh), (long long)maxd);
        for (k = 0; k < dw * dh; ++k) got[k] = 0;
        resize_u8(kind, got, dw, dh, wide, sw, sh, stride, &ar);
        for (k = 0, bad = 0; k < dw * dh; ++k) bad += got[k] != ref[k];
        CHECK(bad == 0, "%s uint8 case %d with row stride %lld: %lld differ", kind, i, (long long)stride, (long long)bad);
        free(src); free(ref); free(got); free(wide);

        snprintf(name, sizeof name, "%s_f32_%d.src", kind, i);
        snprintf(dname, sizeof dname, "%s_f32_%d.dst", kind, i);
        srcf = check_load(st, name, &n);
        reff = check_load(st, dname, &n);
        if (!srcf || !reff) { free(srcf); free(reff); continue; }
        gotf = (float *)malloc(sizeof(float) * (size_t)(dw * dh));
        widef = (float *)malloc(sizeof(float) * (size_t)(stride * sh));
        for (k = 0; k < stride * sh; ++k) widef[k] = 1e9f;
        for (y = 0; y < sh; ++y) memcpy(widef + y * stride, srcf + y * sw, sizeof(float) * (size_t)sw);
        resize_f32(kind, gotf, dw, dh, widef, sw, sh, stride, &ar);
        snprintf(name, sizeof name, "%s float case %d (%lldx%lld -> %lldx%lld)", kind, i, (long long)sh,
                 (long long)sw, (long long)dh, (long long)dw);
        check_close(name, gotf, reff, dw * dh, 1e-4f, 0);
        free(srcf); free(reff); free(gotf); free(widef);
    }
    CHECK(n_cases >= 10, "%s: %d oracle cases", kind, n_cases);
    CHECK(ar.used == 0 && !ar.overflow, "%s: scratch arena restored", kind);
    higan_arena_free(&ar);
}

static void test_resample(void) {
    higan_safetensors cv, pil;
    higan_arena tiny;
    uint8_t src[4 * 40], dst[4 * 20];
    if (check_open_fixture(&cv, "loader_cv2.safetensors")) {
        test_resample_kind(&cv, "area");
        test_resample_kind(&cv, "linear");
        higan_safetensors_free(&cv);
    }
    if (check_open_fixture(&pil, "loader_pil.safetensors")) {
        test_resample_kind(&pil, "pil_lanczos");
        test_resample_kind(&pil, "pil_bilinear");
        higan_safetensors_free(&pil);
    }
    /* a too small scratch arena is an error, not an overflow */
    memset(src, 7, sizeof src);
    higan_arena_init(&tiny, 64);
    CHECK(higan_resize_pil(dst, 20, 4, src, 40, 4, 40, HIGAN_PIL_LANCZOS, &tiny) == HIGAN_ERR_NOMEM &&
          strstr(higan_last_error(), "scratch"), "resize_pil with a small arena: %s", higan_last_error());
    higan_arena_free(&tiny);
    CHECK(higan_resize_pil_scratch_bytes(20, 4, 40, 4, HIGAN_PIL_LANCZOS) > 0 &&
          higan_resize_pil_scratch_bytes(40, 4, 40, 4, HIGAN_PIL_LANCZOS) == 0, "scratch sizes");
}

/* ---- the official style + augmentation pipeline of one word, with fixed draws --------------- */
static uint8_t word_pixel(int64_t y, int64_t x) {   /* make_loader.py word_image */
    int64_t v = (x * 37 + y * 11 + (x * y) % 13 * 29) % 256;
    return (uint8_t)(((x / 5 + y / 7) % 3 == 0) ? 0 : v);
}
static void test_pipeline(void) {
    higan_safetensors st;
    higan_arena ar;
    int i, k;
    float *lut;
    int64_t n;
    if (!check_open_fixture(&st, "loader_pipeline.safetensors")) return;
    higan_arena_init(&ar, (size_t)1 << 20);
    lut = check_load(&st, "pixel_lut", &n);
    if (lut) {
        int same = 1;
        for (k = 0; k < 256; ++k) {
            float v = higan_pixel_to_float((uint8_t)k);
            if (memcmp(&v, &lut[k], sizeof v)) same = 0;
        }
        CHECK(same && n == 256, "pixel conversion bit-identical to ToTensor + Normalize(0.5, 0.5)");
        CHECK(higan_pixel_to_float(0) == -1.0f && higan_pixel_to_float(255) == 1.0f, "0 -> -1, 255 -> 1");
        free(lut);
    }
    for (i = 0;; ++i) {
        char name[64];
        int64_t p[6], w, nc, cw, off, nw, ws, y, x, bad_s = 0, bad_a = 0;
        uint8_t *img, *style, *aug, *ref_s, *ref_a;
        snprintf(name, sizeof name, "pipe_%d.params", i);
        if (!has_tensor(&st, name)) break;
        if (higan_safetensors_read_i64(&st, name, p, 6) != HIGAN_OK) { CHECK(0, "%s", higan_last_error()); break; }
        w = p[0]; nc = p[1]; cw = p[2]; off = p[3]; nw = p[4]; ws = 32 * nc;
        img = (uint8_t *)malloc((size_t)(H * w));
        for (y = 0; y < H; ++y) for (x = 0; x < w; ++x) img[y * w + x] = word_pixel(y, x);
        style = (uint8_t *)malloc((size_t)(H * ws));
        aug = (uint8_t *)malloc((size_t)(H * nw));
        if (ws < w) higan_resize_area(style, ws, H, img, w, H, w);
        else higan_resize_linear(style, ws, H, img, w, H, w);
        CHECK(higan_resize_pil(aug, nw, H, style + off, cw, H, ws, p[5] ? HIGAN_PIL_BILINEAR : HIGAN_PIL_LANCZOS,
                               &ar) == HIGAN_OK, "pipeline %d aug resize", i);
        snprintf(name, sizeof name, "pipe_%d.style", i);
        ref_s = load_u8(&st, name, &n);
        snprintf(name, sizeof name, "pipe_%d.aug", i);
        ref_a = load_u8(&st, name, &n);
        if (ref_s && ref_a) {
            for (y = 0; y < 8; ++y) {
                for (x = 0; x < ws; ++x) bad_s += abs((int)style[(20 + y) * ws + x] - (int)ref_s[y * ws + x]) > 0;
                for (x = 0; x < nw; ++x) bad_a += abs((int)aug[(20 + y) * nw + x] - (int)ref_a[y * nw + x]) > 0;
            }
            CHECK(bad_s == 0 && bad_a == 0, "pipeline %d: %lld px (%lld chars) -> style %lld, clip %lld at %lld, "
                  "scale to %lld (%s): %lld + %lld values differ from cv2/PIL", i, (long long)w, (long long)nc,
                  (long long)ws, (long long)cw, (long long)off, (long long)nw, p[5] ? "bilinear" : "lanczos",
                  (long long)bad_s, (long long)bad_a);
        }
        free(img); free(style); free(aug); free(ref_s); free(ref_a);
    }
    CHECK(i >= 5, "pipeline cases: %d", i);
    higan_arena_free(&ar);
    higan_safetensors_free(&st);
}

/* ---- RandomClip + RandomScale draws ------------------------------------------------------- */
static void test_augment_rules(void) {
    higan_rng rng;
    higan_arena ar;
    int64_t ws, t;
    uint8_t *style = (uint8_t *)malloc(H * 320), *out = (uint8_t *)malloc(H * 512), *ref = (uint8_t *)malloc(H * 512);
    higan_rng_seed(&rng, 99);
    higan_arena_init(&ar, (size_t)1 << 20);
    for (t = 0; t < H * 320; ++t) style[t] = (uint8_t)(t * 13 % 251);
    for (ws = 96; ws <= 320; ws += 224 - 96 + 64) {          /* 96 (no clip) and 288 (clip) */
        int seen_cw[320] = {0}, bad = 0, same_out = 1, lanczos = 0, bilinear = 0;
        double rmin = 1, rmax = -1;
        int64_t offmax = 0, cwmin = 1 << 30, cwmax = 0;
        for (t = 0; t < 4000; ++t) {
            double d[3];
            int64_t nw, cw, off, expect;
            if (higan__ld_augment(out, &nw, d, style, ws, &rng, &ar) != HIGAN_OK) { bad++; continue; }
            cw = (int64_t)d[0]; off = (int64_t)d[1];
            if (ws > 128) { if (cw < 128 || cw >= ws || off < 0 || off >= ws - cw) bad++; }
            else if (cw != ws || off != 0) bad++;
            if (d[2] < -0.4 || d[2] >= 0.4) bad++;
            expect = ((int64_t)((double)cw * (1 + d[2])) + 31) / 32 * 32;
            if (nw != expect || nw % 32) bad++;
            seen_cw[cw]++;
            if (cw < cwmin) cwmin = cw;
            if (cw > cwmax) cwmax = cw;
            if (off > offmax) offmax = off;
            if (d[2] < rmin) rmin = d[2];
            if (d[2] > rmax) rmax = d[2];
            if (d[2] > 0) ++bilinear; else ++lanczos;
            if (t < 50) {                     /* output = PIL resize of the crop */
                higan_resize_pil(ref, nw, H, style + off, cw, H, ws, d[2] > 0 ? HIGAN_PIL_BILINEAR : HIGAN_PIL_LANCZOS, &ar);
                if (memcmp(ref, out, (size_t)(H * nw))) same_out = 0;
            }
        }
        CHECK(bad == 0, "augment w=%lld: every draw within the official ranges (clip [128, w), offset [0, w - clip), "
              "ratio [-0.4, 0.4), width ceil32(int(clip (1 + ratio))))", (long long)ws);
        if (ws > 128)
            CHECK(cwmin == 128 && cwmax == ws - 1 && offmax > (ws - 128) / 2,
                  "augment w=%lld: clip widths cover [128, %lld] (seen %lld..%lld), offsets up to %lld",
                  (long long)ws, (long long)ws - 1, (long long)cwmin, (long long)cwmax, (long long)offmax);
        CHECK(rmin < -0.39 && rmax > 0.39 && bilinear > 1800 && lanczos > 1800,
              "augment w=%lld: ratios span [%.3f, %.3f], bilinear %d / lanczos %d", (long long)ws, rmin, rmax,
              bilinear, lanczos);
        CHECK(same_out, "augment w=%lld: output is PIL resize of the clipped region", (long long)ws);
    }
    free(style); free(out); free(ref);
    higan_arena_free(&ar);
}

/* ---- batch loader ------------------------------------------------------------------------- */
static const char *const words[] = {"a", "to", "the", "Hello", "world", "it's", "x", "quick", "brown", "fox",
                                    "jumps", "over", "lazy", "dogs", "A-1", "HiGAN", "e.g.", "well", "no", "yes",
                                    "ab", "handwriting"};
#define N_WORDS ((int)(sizeof words / sizeof words[0]))
static int rec_width(int i) { return 20 + (i * 37) % 230; }       /* 20..249: shrink and enlarge */
static uint8_t rec_pixel(int i, int y, int x) { return (uint8_t)(((x * 7 + y * 3 + i * 50) % 256) * ((x / 3 + y / 5 + i) % 4 != 0)); }

static void build_dataset(higan_dataset *ds) {
    int i, y, x;
    higan_dataset_init(ds);
    for (i = 0; i < N_WORDS; ++i) {
        int w = rec_width(i);
        uint8_t *img = (uint8_t *)malloc((size_t)(H * w));
        for (y = 0; y < H; ++y) for (x = 0; x < w; ++x) img[y * w + x] = rec_pixel(i, y, x);
        CHECK(higan_dataset_append(ds, img, w, words[i], 100 + i % 7) == HIGAN_OK || 0, "append %d: %s", i, higan_last_error());
        free(img);
    }
}

/* The style image of record r as the loader should make it, as floats. */
static void expected_style(const higan_dataset *ds, int64_t r, int process_style, float *out, int64_t *ws_out) {
    int64_t w = ds->img_lens[r], ws = higan_loader_style_width(ds, r, process_style), y, x;
    uint8_t *img = (uint8_t *)malloc((size_t)(H * w)), *st = (uint8_t *)malloc((size_t)(H * ws));
    for (y = 0; y < H; ++y) for (x = 0; x < w; ++x) img[y * w + x] = higan_dataset_pixel(ds, r, (int)y, (int)x);
    if (ws < w) higan_resize_area(st, ws, H, img, w, H, w);
    else higan_resize_linear(st, ws, H, img, w, H, w);
    for (x = 0; x < H * ws; ++x) out[x] = higan_pixel_to_float(st[x]);
    *ws_out = ws;
    free(img); free(st);
}

/* Checks one batch against the dataset; returns the number of problems. */
static int check_batch(const higan_loader *L, const higan_batch *b, int shuffle, float *scratch) {
    const higan_dataset *ds = L->ds;
    int k, j, bad = 0;
    int64_t y, x, maxw = 0, maxl = 0, maxa = 0;
    for (k = 0; k < b->B; ++k) {
        int64_t r = b->records[k], ws;
        int labels[64];
        int n = higan_dataset_label_codes(ds, r, labels, 64);
        if (b->img_lens[k] > maxw) maxw = b->img_lens[k];
        if (b->label_lens[k] > maxl) maxl = b->label_lens[k];
        /* sorted by width, descending; equal widths in reverse drawn order */
        if (k > 0 && b->img_lens[k] > b->img_lens[k - 1]) { bad++; printf("      not sorted at %d\n", k); }
        if (!shuffle && k > 0 && b->img_lens[k] == b->img_lens[k - 1] && b->records[k] > b->records[k - 1]) {
            bad++; printf("      tie order at %d\n", k);
        }
        /* labels, lengths, writer ids aligned with the image */
        if (n != b->label_lens[k]) bad++;
        for (j = 0; j < b->label_width; ++j)
            if (b->labels[k * b->label_width + j] != (j < n ? labels[j] : 0)) { bad++; break; }
        if (b->wids[k] != ds->wids[r] - L->wid_min) bad++;
        /* pixels: the style image, then -1 */
        expected_style(ds, r, L->opt.process_style, scratch, &ws);
        if (ws != b->img_lens[k]) { bad++; printf("      width %d vs %lld\n", b->img_lens[k], (long long)ws); }
        for (y = 0; y < H; ++y)
            for (x = 0; x < b->width; ++x) {
                float v = b->imgs[((int64_t)k * H + y) * b->width + x];
                if (v != (x < ws ? scratch[y * ws + x] : -1.0f)) { bad++; y = H; break; }
            }
        if (b->aug_imgs) {
            int64_t a = b->aug_lens[k];
            if (a % 32 || a < 32 || a > ((ws * 14 / 10) + 31) / 32 * 32) { bad++; printf("      aug width %lld for %lld\n", (long long)a, (long long)ws); }
            if (a > maxa) maxa = a;
            for (y = 0; y < H; ++y)
                for (x = a; x < b->aug_width; ++x)
                    if (b->aug_imgs[((int64_t)k * H + y) * b->aug_width + x] != -1.0f) { bad++; y = H; break; }
        }
    }
    if (b->width != (maxw + 31) / 32 * 32 || b->width % 32) { bad++; printf("      batch width %lld\n", (long long)b->width); }
    if (b->label_width != maxl) bad++;
    if (b->aug_imgs && b->aug_width != maxa) bad++;
    return bad;
}

static int batches_equal(const higan_batch *a, const higan_batch *b) {
    if (a->B != b->B || a->width != b->width || a->label_width != b->label_width || a->aug_width != b->aug_width ||
        a->epoch != b->epoch || a->index != b->index) return 0;
    if (memcmp(a->imgs, b->imgs, sizeof(float) * (size_t)(a->B * H * a->width))) return 0;
    if (memcmp(a->img_lens, b->img_lens, sizeof(int) * (size_t)a->B)) return 0;
    if (memcmp(a->labels, b->labels, sizeof(int) * (size_t)(a->B * a->label_width))) return 0;
    if (memcmp(a->label_lens, b->label_lens, sizeof(int) * (size_t)a->B)) return 0;
    if (memcmp(a->wids, b->wids, sizeof(int) * (size_t)a->B)) return 0;
    if (memcmp(a->records, b->records, sizeof(int64_t) * (size_t)a->B)) return 0;
    if ((a->aug_imgs == NULL) != (b->aug_imgs == NULL)) return 0;
    if (a->aug_imgs && (memcmp(a->aug_imgs, b->aug_imgs, sizeof(float) * (size_t)(a->B * H * a->aug_width)) ||
                        memcmp(a->aug_lens, b->aug_lens, sizeof(int) * (size_t)a->B))) return 0;
    return 1;
}

/* One epoch: every batch checked; counts how often each record appears. */
static int run_epoch(higan_loader *L, int *seen, int shuffle, float *scratch, int *n_batches, int *bad,
                     const void **bufs) {
    higan_batch b;
    higan_status st;
    *n_batches = 0;
    while ((st = higan_loader_next(L, &b)) == HIGAN_OK) {
        int k;
        *bad += check_batch(L, &b, shuffle, scratch);
        for (k = 0; k < b.B; ++k) seen[b.records[k]]++;
        if (b.index != *n_batches) ++*bad;
        if (bufs) {                            /* at most two batch buffers ever */
            if (!bufs[0] || bufs[0] == b.imgs) bufs[0] = b.imgs;
            else if (!bufs[1] || bufs[1] == b.imgs) bufs[1] = b.imgs;
            else ++*bad;
        }
        ++*n_batches;
    }
    return st;
}

static void test_loader_basic(const higan_dataset *ds) {
    higan_loader L;
    higan_loader_options o = higan_loader_default_options();
    float *scratch = (float *)malloc(sizeof(float) * H * 1024);
    int seen[N_WORDS], nb, bad = 0, k, ok, e;
    const void *bufs[2] = {NULL, NULL};
    higan_status st;

    /* defaults = the official training settings */
    CHECK(o.batch_size == 8 && o.shuffle && o.drop_last && o.seed == 123456 && o.process_style && o.augment &&
          o.threaded && !o.max_width, "default options");

    /* drop_last off, no shuffle: every record once, ties in reverse drawn order */
    o.batch_size = 5; o.shuffle = 0; o.drop_last = 0; o.threaded = 0;
    CHECK(higan_loader_init(&L, ds, &o) == HIGAN_OK, "loader init: %s", higan_last_error());
    CHECK(L.n_records == N_WORDS && L.n_batches == (N_WORDS + 4) / 5 && L.wid_min == 100,
          "loader sizes: %lld records, %lld batches, wid min %d", (long long)L.n_records, (long long)L.n_batches, L.wid_min);
    memset(seen, 0, sizeof seen);
    st = run_epoch(&L, seen, 0, scratch, &nb, &bad, bufs);
    for (k = 0, ok = 1; k < N_WORDS; ++k) ok &= seen[k] == 1;
    CHECK(st == HIGAN_LOADER_EPOCH_END && nb == L.n_batches && ok && bad == 0,
          "unshuffled epoch: %d batches, every record exactly once, batches consistent (%d problems)", nb, bad);
    higan_loader_free(&L);

    /* shuffled, drop_last off, threaded: 3 epochs, each a permutation; epochs differ */
    bufs[0] = bufs[1] = NULL;
    o.shuffle = 1; o.threaded = 1; o.batch_size = 4;
    CHECK(higan_loader_init(&L, ds, &o) == HIGAN_OK, "loader init (threaded): %s", higan_last_error());
    for (e = 0; e < 3; ++e) {
        memset(seen, 0, sizeof seen);
        bad = 0;
        st = run_epoch(&L, seen, 1, scratch, &nb, &bad, bufs);
        for (k = 0, ok = 1; k < N_WORDS; ++k) ok &= seen[k] == 1;
        CHECK(st == HIGAN_LOADER_EPOCH_END && nb == L.n_batches && ok && bad == 0,
              "shuffled epoch %d: %d batches (last partial), every record exactly once (%d problems)", e, nb, bad);
    }
    CHECK(bufs[0] && bufs[1] && bufs[0] != bufs[1], "batches alternate between two loader-owned buffers");
    higan_loader_free(&L);

    /* drop_last on: only full batches, all distinct */
    o.batch_size = 8; o.drop_last = 1; o.threaded = 0;
    CHECK(higan_loader_init(&L, ds, &o) == HIGAN_OK, "loader init (drop_last): %s", higan_last_error());
    memset(seen, 0, sizeof seen);
    bad = 0;
    st = run_epoch(&L, seen, 1, scratch, &nb, &bad, NULL);
    for (k = 0, ok = 0; k < N_WORDS; ++k) { ok += seen[k]; if (seen[k] > 1) bad++; }
    CHECK(st == HIGAN_LOADER_EPOCH_END && nb == N_WORDS / 8 && ok == nb * 8 && bad == 0,
          "drop_last epoch: %d full batches, %d distinct records", nb, ok);
    {   /* the next call starts epoch 1 */
        higan_batch b;
        CHECK(higan_loader_next(&L, &b) == HIGAN_OK && b.epoch == 1 && b.index == 0 && b.B == 8, "next epoch starts");
    }
    higan_loader_free(&L);

    /* process_style off: the stored widths */
    o.process_style = 0; o.drop_last = 0; o.batch_size = 6;
    CHECK(higan_loader_init(&L, ds, &o) == HIGAN_OK, "loader init (no process_style): %s", higan_last_error());
    memset(seen, 0, sizeof seen);
    bad = 0;
    st = run_epoch(&L, seen, 1, scratch, &nb, &bad, NULL);
    for (k = 0, ok = 1; k < N_WORDS; ++k) ok &= seen[k] == 1;
    CHECK(st == HIGAN_LOADER_EPOCH_END && ok && bad == 0, "epoch without process_style (%d problems)", bad);
    higan_loader_free(&L);

    /* augment off */
    o.process_style = 1; o.augment = 0;
    CHECK(higan_loader_init(&L, ds, &o) == HIGAN_OK, "loader init (no augment): %s", higan_last_error());
    {
        higan_batch b;
        CHECK(higan_loader_next(&L, &b) == HIGAN_OK && !b.aug_imgs && !b.aug_lens && b.aug_width == 0 &&
              check_batch(&L, &b, 1, scratch) == 0, "batch without augmentation");
    }
    higan_loader_free(&L);

    /* max_width: long words left out */
    o.augment = 1; o.max_width = 128;
    CHECK(higan_loader_init(&L, ds, &o) == HIGAN_OK, "loader init (max_width): %s", higan_last_error());
    memset(seen, 0, sizeof seen);
    bad = 0;
    st = run_epoch(&L, seen, 1, scratch, &nb, &bad, NULL);
    for (k = 0, ok = 1, e = 0; k < N_WORDS; ++k) {
        int in = (int)strlen(words[k]) * 32 <= 128;
        ok &= seen[k] == in;
        e += !in;
    }
    CHECK(ok && bad == 0 && L.n_skipped == e && L.width_cap <= 128,
          "max_width 128: %lld words left out, the rest once each", (long long)L.n_skipped);
    higan_loader_free(&L);
    free(scratch);
}

static void test_loader_determinism(const higan_dataset *ds) {
    higan_loader A, S, C;
    higan_loader_options o = higan_loader_default_options();
    int i, same = 1, differs = 0, n = 0;
    o.batch_size = 5; o.drop_last = 0; o.seed = 7;
    o.threaded = 1;
    CHECK(higan_loader_init(&A, ds, &o) == HIGAN_OK, "init threaded: %s", higan_last_error());
    o.threaded = 0;
    CHECK(higan_loader_init(&S, ds, &o) == HIGAN_OK, "init synchronous: %s", higan_last_error());
    o.seed = 8;
    CHECK(higan_loader_init(&C, ds, &o) == HIGAN_OK, "init other seed: %s", higan_last_error());
    for (i = 0; i < 3 * ((N_WORDS + 4) / 5 + 1); ++i) {   /* three epochs, end markers included */
        higan_batch a, s, c;
        higan_status sa = higan_loader_next(&A, &a), ss = higan_loader_next(&S, &s), sc = higan_loader_next(&C, &c);
        if (sa != ss || sa != sc) { same = 0; break; }
        if (sa == HIGAN_LOADER_EPOCH_END) continue;
        ++n;
        if (!batches_equal(&a, &s)) same = 0;
        if (!batches_equal(&a, &c)) differs = 1;
    }
    CHECK(same && n == 3 * ((N_WORDS + 4) / 5), "threaded == synchronous bit for bit over 3 epochs (%d batches)", n);
    CHECK(differs, "another seed gives other batches");
    higan_loader_free(&A); higan_loader_free(&S); higan_loader_free(&C);

    /* a moved loader struct keeps working (the thread does not hold the caller's struct) */
    o.seed = 7; o.threaded = 1;
    {
        higan_loader *moved = (higan_loader *)malloc(sizeof *moved);
        higan_batch b1, b2;
        higan_loader tmp;
        CHECK(higan_loader_init(&tmp, ds, &o) == HIGAN_OK, "init: %s", higan_last_error());
        *moved = tmp;
        memset(&tmp, 0xCD, sizeof tmp);
        o.threaded = 0;
        CHECK(higan_loader_init(&S, ds, &o) == HIGAN_OK, "init: %s", higan_last_error());
        CHECK(higan_loader_next(moved, &b1) == HIGAN_OK && higan_loader_next(&S, &b2) == HIGAN_OK &&
              batches_equal(&b1, &b2), "moved threaded loader");
        higan_loader_free(moved); higan_loader_free(&S);
        free(moved);
    }
}

static void test_loader_errors(higan_dataset *ds) {
    higan_loader L;
    higan_loader_options o = higan_loader_default_options();
    int32_t keep;
    o.threaded = 0;
    o.n_writers = 5;                                   /* ids 100..106 map to 0..6 */
    CHECK(higan_loader_init(&L, ds, &o) == HIGAN_ERR_ARG && strstr(higan_last_error(), "record 5") &&
          strstr(higan_last_error(), "\"it's\"") && strstr(higan_last_error(), "writer"),
          "writer id outside n_writers names the record: %s", higan_last_error());
    o.n_writers = 7;
    CHECK(higan_loader_init(&L, ds, &o) == HIGAN_OK, "7 writers fit");
    higan_loader_free(&L);
    o.n_writers = 0;
    keep = ds->lbs[ds->lb_seek_idxs[9] + 1];
    ds->lbs[ds->lb_seek_idxs[9] + 1] = 0xE9;           /* "fox" -> "f\u00e9x" */
    CHECK(higan_loader_init(&L, ds, &o) == HIGAN_ERR_FORMAT && strstr(higan_last_error(), "record 9") &&
          strstr(higan_last_error(), "U+00E9"), "label outside the alphabet names the record: %s", higan_last_error());
    ds->lbs[ds->lb_seek_idxs[9] + 1] = '`';
    CHECK(higan_loader_init(&L, ds, &o) == HIGAN_ERR_FORMAT && strstr(higan_last_error(), "record 9"),
          "the blank '`' in a label: %s", higan_last_error());
    ds->lbs[ds->lb_seek_idxs[9] + 1] = keep;
    o.batch_size = 100;
    CHECK(higan_loader_init(&L, ds, &o) == HIGAN_ERR_ARG && strstr(higan_last_error(), "no batch"),
          "drop_last with fewer words than a batch: %s", higan_last_error());
    o.batch_size = 0;
    CHECK(higan_loader_init(&L, ds, &o) == HIGAN_ERR_ARG, "batch size 0: %s", higan_last_error());
    {
        higan_batch b;
        memset(&L, 0, sizeof L);
        CHECK(higan_loader_next(&L, &b) == HIGAN_ERR_ARG, "next on an uninitialised loader");
        higan_loader_free(&L);
    }
}

/* ---- lexicon ------------------------------------------------------------------------------ */
static void test_lexicon(void) {
    higan_safetensors st;
    higan_lexicon lex;
    char joined[4096], path[64];
    int64_t n, i, pos;
    int ok;
    FILE *f;
    if (check_open_fixture(&st, "loader_pipeline.safetensors")) {
        uint8_t *text = load_u8(&st, "lexicon.text", &n), *expect;
        int64_t ne;
        expect = load_u8(&st, "lexicon.words", &ne);
        higan_lexicon_init(&lex);
        if (text && expect) {
            ok = higan_lexicon_load_text(&lex, (const char *)text, (size_t)n) == HIGAN_OK;
            CHECK(ok, "lexicon load_text%s%s", ok ? "" : ": ", ok ? "" : higan_last_error());
            for (i = 0, pos = 0; i < lex.count; ++i)
                pos += snprintf(joined + pos, sizeof joined - (size_t)pos, "%s%s", i ? "\n" : "", higan_lexicon_word(&lex, i));
            ok = pos == ne && !memcmp(joined, expect, (size_t)ne);
            for (i = 0; i < pos; ++i) if (joined[i] == '\n') joined[i] = '|';
            CHECK(ok, "lexicon rules as get_lexicon: %lld words [%s] (lines %lld, dropped %lld)",
                  (long long)lex.count, joined, (long long)lex.lines, (long long)lex.dropped);
            /* the same through a file */
            snprintf(path, sizeof path, "/tmp/higan_lexicon_%d.txt", (int)(uintptr_t)&lex % 100000);
            f = fopen(path, "wb");
            if (f) { fwrite(text, 1, (size_t)n, f); fclose(f); }
            higan_lexicon_free(&lex);
            higan_lexicon_init(&lex);
            ok = higan_lexicon_load(&lex, path) == HIGAN_OK;
            CHECK(ok && lex.count == 15 && !strcmp(higan_lexicon_word(&lex, 0), "hello"),
                  "lexicon from a file: %lld words", (long long)lex.count);
            remove(path);
        }
        higan_lexicon_free(&lex);
        free(text); free(expect);
        higan_safetensors_free(&st);
    }
    higan_lexicon_init(&lex);
    CHECK(higan_lexicon_load(&lex, "/nonexistent/words.txt") == HIGAN_ERR_IO &&
          strstr(higan_last_error(), "/nonexistent/words.txt"), "missing lexicon: %s", higan_last_error());
    CHECK(higan_lexicon_load_text(&lex, "good\nbad\xff\n", 10) == HIGAN_ERR_FORMAT && strstr(higan_last_error(), "line 2"),
          "invalid UTF-8 names the line: %s", higan_last_error());
    higan_lexicon_free(&lex);
    {
        const char t[] = "ab\nABC\nXy\nx\nmixed Case\n";
        higan_lexicon_init(&lex);
        CHECK(higan_lexicon_load_text(&lex, t, sizeof t - 1) == HIGAN_OK && lex.count == 4 &&
              !strcmp(higan_lexicon_word(&lex, 1), "abc") && !strcmp(higan_lexicon_word(&lex, 3), "mixed case") &&
              lex.lines == 5 && lex.dropped == 1, "lower-casing, short lines");
        higan_lexicon_free(&lex);
    }
}

static void test_lexicon_sample(void) {
    higan_lexicon lex;
    higan_rng rng;
    int labels[8 * 19], lens[8], t, k, j, caps = 0, firsts = 0, bad = 0, counts[4] = {0, 0, 0, 0};
    int starts[16] = {0}, cap_at0 = 0, at0 = 0;
    char text[64];
    const char *short_words = "ab\ncd\nef\ngh\n";
    higan_rng_seed(&rng, 5);
    higan_lexicon_init(&lex);
    CHECK(higan_lexicon_sample(&lex, &rng, 4, 5, labels, 19, lens) == HIGAN_ERR_ARG, "empty lexicon");
    higan_lexicon_load_text(&lex, short_words, strlen(short_words));
    for (t = 0; t < 1000; ++t) {
        int longest = higan_lexicon_sample(&lex, &rng, 8, 5, labels, 19, lens);
        if (longest != 2) bad++;
        for (k = 0; k < 8; ++k) {
            int n = higan_text_decode(labels + k * 19, 19, text, sizeof text);
            int w = -1;
            if (n != 2 || lens[k] != 2) { bad++; continue; }
            ++firsts;
            if (text[0] >= 'A' && text[0] <= 'Z') { ++caps; text[0] = (char)(text[0] + 32); }
            for (j = 0; j < 4; ++j) if (!strncmp(text, short_words + 3 * j, 2)) w = j;
            if (w < 0) bad++; else counts[w]++;
        }
    }
    CHECK(bad == 0, "samples are lexicon words, 0-padded");
    CHECK(fabs((double)caps / firsts - 0.5) < 0.02, "first letter capitalised %.3f of the time (p = 0.5)",
          (double)caps / firsts);
    CHECK(counts[0] > 1850 && counts[1] > 1850 && counts[2] > 1850 && counts[3] > 1850,
          "uniform word choice: %d %d %d %d of 8000", counts[0], counts[1], counts[2], counts[3]);
    higan_lexicon_free(&lex);

    /* cut to a random substring: start uniform in [0, len - max_len) (never the last start) */
    higan_lexicon_init(&lex);
    higan_lexicon_load_text(&lex, "abcdefghijklmnopqrs\nxyz\nlonger\n", 31);
    bad = 0;
    for (t = 0; t < 3000; ++t) {
        higan_lexicon_sample(&lex, &rng, 8, 5, labels, 5, lens);
        for (k = 0; k < 8; ++k) {
            int n = higan_text_decode(labels + k * 5, 5, text, sizeof text);
            if (k > 0 && lens[k] > lens[k - 1]) bad++;                  /* sorted, descending */
            if (n != lens[k] || n > 5) { bad++; continue; }
            {
                const char *alpha = "abcdefghijklmnopqrs";
                char low[8];
                int s = -1;
                memcpy(low, text, (size_t)n + 1);
                if (low[0] >= 'A' && low[0] <= 'Z') low[0] = (char)(low[0] + 32);
                if (!strcmp(low, "xyz") || !strcmp(low, "longe")) continue;   /* "longer": start 0 only */
                if (n == 5) for (j = 0; j + 5 <= 19; ++j) if (!memcmp(alpha + j, low, 5)) s = j;
                if (s < 0) { bad++; continue; }
                starts[s]++;
                if (s == 0) { ++at0; cap_at0 += text[0] == 'A'; }
                else if (text[0] != low[0]) bad++;                        /* only the word's first letter */
            }
        }
    }
    for (k = 0, j = 1; k < 14; ++k) j &= starts[k] > 0;
    CHECK(bad == 0 && j && starts[14] == 0, "cut words: substrings of 5, starts 0..13 all seen, start 14 never (%d)",
          starts[14]);
    CHECK(at0 > 100 && fabs((double)cap_at0 / at0 - 0.5) < 0.1, "cut words keep the capital only at start 0 (%d of %d)",
          cap_at0, at0);
    /* max_len 0: no cut */
    higan_lexicon_sample(&lex, &rng, 8, 0, labels, 19, lens);
    for (k = 0, bad = 0; k < 8; ++k) bad += lens[k] != 19 && lens[k] != 3 && lens[k] != 6;
    CHECK(bad == 0, "max_len 0 keeps whole words");
    higan_lexicon_free(&lex);
}

int main(void) {
    higan_dataset ds;
    test_resample();
    test_pipeline();
    test_augment_rules();
    build_dataset(&ds);
    if (ds.count == N_WORDS) {
        test_loader_basic(&ds);
        test_loader_determinism(&ds);
        test_loader_errors(&ds);
    } else CHECK(0, "dataset build failed");
    higan_dataset_free(&ds);
    test_lexicon();
    test_lexicon_sample();
    return check_finish();
}
