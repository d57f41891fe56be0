/* Recognizer pretraining learns: a tiny Recognizer trained with the library's pretraining
   step (CTC + Adam, RandomScale augmentation, the per-epoch loader) on words drawn with
   made-up glyphs (no fonts needed) reads held-out words far better than chance.
   Also: CER/WER arithmetic, the augmenter, the loss plot. */
#define HIGAN_IMPLEMENTATION
#include "higan.h"
#include "check.h"

/* ---- a toy script: every letter is a fixed set of strokes on a 3x3 grid of points ---- */
static const char LETTERS[] = "abcdefghijkl";
#define NLET 12
/* strokes between grid points 0..8 (row-major 3x3): 20 candidate strokes */
static const int STROKE[20][2] = {{0,1},{1,2},{3,4},{4,5},{6,7},{7,8},{0,3},{3,6},{1,4},{4,7},
                                  {2,5},{5,8},{0,4},{4,8},{2,4},{4,6},{1,3},{1,5},{3,7},{5,7}};
typedef struct { float slant, thick, scale, dy, space; } writer;

static uint32_t hash32(uint32_t x) {
    x ^= x >> 16; x *= 0x7feb352dU; x ^= x >> 15; x *= 0x846ca68bU; x ^= x >> 16;
    return x;
}
/* strokes of letter i: 4 distinct strokes chosen by a hash, distinct sets per letter */
static unsigned letter_strokes(int i) {
    unsigned m = 0;
    uint32_t h = hash32((uint32_t)i * 7919u + 17u);
    int bits = 0;
    while (bits < 4) { if (!(m & (1u << (h % 20)))) { m |= 1u << (h % 20); ++bits; } h = hash32(h); }
    return m;
}
static void draw_line(uint8_t *img, int W, float x0, float y0, float x1, float y1, float r) {
    int x, y, xa = (int)floorf(fminf(x0, x1) - r - 1), xb = (int)ceilf(fmaxf(x0, x1) + r + 1);
    int ya = (int)floorf(fminf(y0, y1) - r - 1), yb = (int)ceilf(fmaxf(y0, y1) + r + 1);
    float dx = x1 - x0, dy = y1 - y0, len2 = dx * dx + dy * dy + 1e-6f;
    for (y = ya < 0 ? 0 : ya; y <= yb && y < 64; ++y)
        for (x = xa < 0 ? 0 : xa; x <= xb && x < W; ++x) {
            float t = ((x - x0) * dx + (y - y0) * dy) / len2, px, py, d;
            t = t < 0 ? 0 : t > 1 ? 1 : t;
            px = x0 + t * dx - x; py = y0 + t * dy - y;
            d = sqrtf(px * px + py * py);
            if (d < r) img[y * W + x] = 255;
            else if (d < r + 1 && img[y * W + x] < (uint8_t)(255 * (r + 1 - d))) img[y * W + x] = (uint8_t)(255 * (r + 1 - d));
        }
}
/* renders word (letters of LETTERS) in a writer's hand; returns the width */
static int render(uint8_t *img, int cap_w, const char *word, const writer *wr, higan_rng *rng) {
    int n = (int)strlen(word), W = 0, i, s;
    float cell = 22.0f * wr->scale, x = 4;
    W = (int)(n * (cell + wr->space) + 8);
    if (W > cap_w) W = cap_w;
    memset(img, 0, (size_t)(64 * W));
    for (i = 0; i < n; ++i) {
        int li = (int)(strchr(LETTERS, word[i]) - LETTERS);
        unsigned m = letter_strokes(li);
        float jx = (higan_rng_uniform(rng) - 0.5f) * 3, jy = (higan_rng_uniform(rng) - 0.5f) * 4;
        for (s = 0; s < 20; ++s) {
            float pts[2][2];
            int e;
            if (!(m & (1u << s))) continue;
            for (e = 0; e < 2; ++e) {
                int p = STROKE[s][e], gx = p % 3, gy = p / 3;
                float yy = 14 + wr->dy + jy + gy * 16.0f * wr->scale;
                pts[e][0] = x + jx + gx * cell * 0.4f + (40 - yy) * wr->slant;
                pts[e][1] = yy;
            }
            draw_line(img, W, pts[0][0], pts[0][1], pts[1][0], pts[1][1], wr->thick);
        }
        x += cell + wr->space;
    }
    return W;
}
static void make_set(higan_dataset *ds, int n_writers, int per_writer, uint64_t seed) {
    static uint8_t img[64 * 512];
    higan_rng r;
    int w, k, i;
    higan_rng_seed(&r, seed);
    higan_dataset_init(ds);
    for (w = 0; w < n_writers; ++w) {
        writer wr;
        higan_rng wrng;
        higan_rng_seed(&wrng, 1000 + (uint64_t)w);       /* the writer's traits do not depend on seed */
        wr.slant = (higan_rng_uniform(&wrng) - 0.3f) * 0.5f;
        wr.thick = 1.2f + 1.5f * higan_rng_uniform(&wrng);
        wr.scale = 0.85f + 0.3f * higan_rng_uniform(&wrng);
        wr.dy = (higan_rng_uniform(&wrng) - 0.5f) * 8;
        wr.space = 2 + 6 * higan_rng_uniform(&wrng);
        for (k = 0; k < per_writer; ++k) {
            char word[8];
            int len = 2 + (int)(higan_rng_u64(&r) % 4), W;
            for (i = 0; i < len; ++i) word[i] = LETTERS[higan_rng_u64(&r) % NLET];
            word[len] = 0;
            W = render(img, 512, word, &wr, &r);
            higan_dataset_append(ds, img, W, word, w);
        }
    }
    higan_dataset_pack(ds);
}

static void test_metrics(void) {   /* the CER/WER of the drivers: higan_text_score (evaluation section) */
    higan_text_score s;
    higan_text_score_init(&s);
    CHECK(higan_edit_distance_utf8("book", "bok") == 1, "edit distance: a doubled letter counts (no collapsing)");
    higan_text_score_add(&s, "hello", "hello");
    higan_text_score_add(&s, "helo", "hello");
    higan_text_score_add(&s, "", "ab");
    CHECK(s.edits == 3 && s.ref_chars == 12 && s.words == 3 && s.wrong_words == 2, "text score counts");
    CHECK(fabs(higan_text_score_cer(&s) - 0.25) < 1e-12 && fabs(higan_text_score_wer(&s) - 2.0 / 3) < 1e-12, "CER 3/12, WER 2/3");
}

static void test_augment(const higan_dataset *ds) {
    higan_loader L;
    higan_loader_options o = higan_loader_default_options();
    higan_batch b;
    higan_augmenter a;
    higan_rng r1, r2;
    int k, ok = 1, ok2 = 1;
    o.batch_size = 6; o.augment = 0; o.threaded = 0;
    CHECK(higan_loader_init(&L, ds, &o) == HIGAN_OK, "loader init");
    CHECK(higan_loader_next(&L, &b) == HIGAN_OK, "a batch");
    higan_augmenter_init(&a);
    higan_rng_seed(&r1, 5);
    CHECK(higan_augment_batch(&a, &b, 0, 1, &r1) == HIGAN_OK, "RandomScale batch");
    for (k = 0; k < b.B; ++k) {
        int w = b.img_lens[k], lo = ((int)(0.6 * w) + 31) / 32 * 32, hi = ((int)(1.4 * w) + 32) / 32 * 32;
        ok &= a.lens[k] % 32 == 0 && a.lens[k] <= a.width && a.lens[k] >= lo && a.lens[k] <= hi;
    }
    CHECK(ok && a.width % 32 == 0, "scaled widths are multiples of 32 within 0.6..1.4 of the style width");
    for (k = 0; k < a.B * 64 * a.width; ++k) ok2 &= a.imgs[k] >= -1.0f && a.imgs[k] <= 1.0f;
    CHECK(ok2, "scaled pixels stay in [-1, 1]");
    /* RandomClip: clip only, widths rounded up to 32, content copied */
    higan_rng_seed(&r2, 9);
    CHECK(higan_augment_batch(&a, &b, 1, 0, &r2) == HIGAN_OK, "RandomClip batch");
    ok = 1;
    for (k = 0; k < b.B; ++k) ok &= a.lens[k] % 32 == 0 && (b.img_lens[k] <= 128 ? a.lens[k] == b.img_lens[k] : a.lens[k] <= b.img_lens[k]);
    CHECK(ok, "clipped lengths: narrow words unchanged, wider ones at most the style width");
    higan_augmenter_free(&a);
    higan_loader_free(&L);
}

static void test_plot(void) {
    higan_csv c;
    const char *names[2] = {"ctc", "cer"};
    unsigned char *rgb = (unsigned char *)malloc(320 * 200 * 3);
    double v[2];
    int i, dark = 0;
    CHECK(higan_csv_open(&c, "build/test_train_ocr.csv", 2, names, -1) == HIGAN_OK, "csv open");
    for (i = 0; i < 50; ++i) {
        v[0] = 10.0 / (1 + i); v[1] = i % 10 == 0 ? 1.0 - i / 60.0 : NAN;
        higan_csv_write(&c, i + 1, i / 20, v);
    }
    higan_csv_close(&c);
    CHECK(higan_plot_csv("build/test_train_ocr.csv", rgb, 320, 200) == HIGAN_OK, "plot the csv");
    for (i = 0; i < 320 * 200 * 3; i += 3) dark += rgb[i] < 100 && rgb[i + 2] > 120;
    CHECK(dark > 50, "the plot has blue curve pixels (%d)", dark);
    free(rgb);
}

int main(void) {
    higan_dataset train, test;
    higan_model m;
    higan_model_config mc = higan_model_default_config(HIGAN_NET_BIT(HIGAN_NET_RECOGNIZER));
    higan_arena arena;
    higan_tape tape;
    higan_loader L;
    higan_loader_options lo = higan_loader_default_options();
    higan_augmenter aug;
    higan_text_score before, after;
    higan_rng rng;
    higan_adam opt = higan_adam_default(1e-3);
    int64_t step = 0, epoch;
    const int steps = 120;
    double t0, t1;
    float loss = 0, first_loss = 0, last_loss = 0;

    test_metrics();
    make_set(&train, 6, 120, 1);
    make_set(&test, 6, 25, 2);
    CHECK(train.count == 720 && test.count == 150, "toy datasets: %lld train, %lld test words", (long long)train.count, (long long)test.count);
    test_augment(&train);
    test_plot();

    /* tiny and without the LSTM so that it learns within a few seconds; the BiLSTM path is
       trained in test_resume (and by examples/train_ocr) */
    mc.R.cnn.resolution = 4;
    mc.R.cnn.max_dim = 32;
    opt.lr = 3e-3;
    /* one thread: these kernels are too small to gain from two, and OpenMP's spinning
       threads lose badly on a machine busy with other work (results never depend on it) */
    higan_set_num_threads(1);
    mc.R.cnn.dropout = 0;
    mc.R.rnn_depth = 0;
    CHECK(higan_model_init(&m, &mc, 7) == HIGAN_OK, "tiny recognizer");
    printf("   tiny recognizer: %lld parameters\n", (long long)higan_model_num_params(&m, HIGAN_NET_RECOGNIZER));
    m.store[HIGAN_STORE_OCR].frozen = 0;
    higan_arena_init(&arena, (size_t)8 << 20);       /* small on purpose: the step grows it */
    higan_tape_init(&tape, &arena, 256);
    higan_rng_seed(&rng, 3);
    higan_augmenter_init(&aug);
    if (higan_ocr_evaluate(&m, &tape, &test, 50, 0, &before, NULL, NULL) != HIGAN_OK) CHECK(0, "evaluate untrained: %s", higan_last_error());

    lo.batch_size = 16; lo.augment = 0; lo.threaded = 1; lo.seed = 11;
    t0 = higan_time_seconds();
    for (epoch = 0; step < steps; ++epoch) {
        higan_batch b;
        CHECK(higan_train_loader_open(&L, &train, &lo, epoch, 0) == HIGAN_OK, "epoch %lld loader", (long long)epoch);
        while (step < steps && higan_loader_next(&L, &b) == HIGAN_OK) {
            higan_status rc;
            if (higan_augment_batch(&aug, &b, 0, 1, &rng) != HIGAN_OK) break;
            rc = higan_ocr_train_step(&m, &tape, aug.imgs, aug.B, aug.width, aug.lens, b.labels, b.label_width,
                                      b.label_lens, &opt, &rng, &loss);
            if (rc != HIGAN_OK) { CHECK(0, "step %lld: %s", (long long)step, higan_last_error()); step = steps; break; }
            if (step == 0) first_loss = loss;
            last_loss = loss;
            ++step;
        }
        higan_loader_free(&L);
    }
    t1 = higan_time_seconds();
    CHECK(arena.capacity > ((size_t)8 << 20), "the arena grew after overflowing (%zu MB)", arena.capacity >> 20);
    CHECK(higan_ocr_evaluate(&m, &tape, &test, 50, 0, &after, NULL, NULL) == HIGAN_OK, "evaluate trained");
    printf("   %d steps in %.1f s (%.0f ms/step), loss %.3f -> %.3f, held-out CER %.3f -> %.3f, WER %.3f -> %.3f\n",
           steps, t1 - t0, 1000 * (t1 - t0) / steps, first_loss, last_loss, higan_text_score_cer(&before),
           higan_text_score_cer(&after), higan_text_score_wer(&before), higan_text_score_wer(&after));
    CHECK(higan_text_score_cer(&before) > 0.8, "untrained CER near chance (%.3f)", higan_text_score_cer(&before));
    CHECK(higan_text_score_cer(&after) < 0.2, "trained CER well below chance (%.3f < 0.2)", higan_text_score_cer(&after));
    CHECK(last_loss < 0.5 * first_loss, "CTC loss fell (%.3f -> %.3f)", first_loss, last_loss);

    {   /* the writer identifier's backbone starts as the trained Recognizer's CNN */
        higan_model wm;
        higan_model_config wc = higan_model_default_config(HIGAN_NET_BIT(HIGAN_NET_STYLE_BACKBONE) |
                                                           HIGAN_NET_BIT(HIGAN_NET_WRITER_IDENTIFIER));
        higan_var *x, *fr, *fb;
        int64_t shape[4] = {2, 1, 64, 96};
        float *img = (float *)malloc(sizeof(float) * 2 * 64 * 96);
        int i, same;
        for (i = 0; i < 2 * 64 * 96; ++i) img[i] = higan_rng_uniform(&rng) * 2 - 1;
        wc.B.resolution = 4; wc.B.max_dim = 32; wc.n_writer = 6;
        higan_model_init(&wm, &wc, 1);
        wc.B.max_dim = 64;
        if (higan_backbone_from_recognizer(&wm, &m) != HIGAN_OK) CHECK(0, "StyleBackbone from the Recognizer: %s", higan_last_error());
        higan_tape_reset(&tape);
        higan_no_grad_begin(&tape);
        x = higan_var_wrap(&tape, img, 4, shape);
        fr = higan_style_backbone_forward(&tape, &m.R.cnn, x, 0, NULL, NULL);
        fb = higan_style_backbone_forward(&tape, &wm.B, x, 0, NULL, NULL);
        higan_no_grad_end(&tape);
        same = fr && fb && higan_var_numel(fr) == higan_var_numel(fb) &&
               !memcmp(fr->data, fb->data, sizeof(float) * (size_t)higan_var_numel(fr));
        CHECK(same, "the copied StyleBackbone computes the Recognizer's CNN features bit for bit");
        higan_model_free(&wm);
        wc.nets = HIGAN_NET_BIT(HIGAN_NET_STYLE_BACKBONE);
        higan_model_init(&wm, &wc, 1);
        CHECK(higan_backbone_from_recognizer(&wm, &m) == HIGAN_ERR_ARG && strstr(higan_last_error(), "max_dim"),
              "a backbone of another width is refused: %s", higan_last_error());
        higan_model_free(&wm);
        free(img);
    }
    higan_augmenter_free(&aug);
    higan_tape_free(&tape);
    higan_arena_free(&arena);
    higan_model_free(&m);
    higan_dataset_free(&train);
    higan_dataset_free(&test);
    return check_finish();
}
