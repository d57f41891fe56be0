/* Tests of the generation features (higan.h) and of the evaluation pipeline
   (higan.h): baseline estimation and line layout (wrapping at the width, common
   baselines) on synthetic word images, 8-bit output with transparency, averaged styles,
   interpolation, style files, text generation on a tiny random model, and higan_evaluate
   end to end on a tiny random model and a tiny dataset. Temporary files go to build/. */
#define HIGAN_IMPLEMENTATION
#include "higan.h"
#include "check.h"

#define TMP_STYLE "build/test_generate_style.safetensors"
#define TMP_MODEL "build/test_generate_model.safetensors"

/* the tiny configuration of tests/test_model.c */
static higan_model_config tiny_config(unsigned nets) {
    higan_model_config c = higan_model_default_config(nets);
    c.G.ch = 2; c.G.style_dim = 8; c.G.embed_dim = 8;
    c.D.ch = 2; c.P.ch = 2;
    c.B.resolution = 2; c.B.max_dim = 32;
    c.n_writer = 5;
    c.R.cnn.resolution = 2; c.R.cnn.max_dim = 32;
    return c;
}
static int contains(const char *haystack, const char *needle) { return strstr(haystack, needle) != NULL; }

/* A synthetic word [64, w] with its baseline at row b: a core band (rows b-20 .. b-1, columns
   2 .. w-3), a 2-pixel ascender (rows b-35 .. b-21) and a 2-pixel descender (rows b .. b+11). */
static float *synthetic_word(int w, int b) {
    float *img = (float *)malloc(sizeof(float) * 64 * (size_t)w);
    int y, x;
    for (y = 0; y < 64; ++y)
        for (x = 0; x < w; ++x) {
            int ink = (y >= b - 20 && y < b && x >= 2 && x < w - 2) ||
                      (y >= b - 35 && y < b - 20 && (x == 4 || x == 5)) ||
                      (y >= b && y < b + 12 && (x == w - 6 || x == w - 5));
            img[y * w + x] = ink ? 0.9f : -1.0f;
        }
    return img;
}

static void test_baseline(void) {
    static const int bases[] = {34, 40, 46, 52};
    float blank[64 * 10];
    int k;
    for (k = 0; k < 4; ++k) {
        float *img = synthetic_word(60 + 10 * k, bases[k]);
        int64_t b = higan_word_baseline(img, 64, 60 + 10 * k);
        CHECK(b == bases[k], "baseline of a synthetic word with ascender and descender: %lld (true %d)", (long long)b, bases[k]);
        free(img);
    }
    {   /* capitals: thin vertical strokes under a dense top bar (T, E): the band is the whole letter */
        float *caps = (float *)malloc(sizeof(float) * 64 * 80);
        int y, x;
        for (y = 0; y < 64; ++y)
            for (x = 0; x < 80; ++x)
                caps[y * 80 + x] = ((y >= 14 && y < 17 && x >= 2 && x < 78) || (y >= 14 && y < 44 && x % 8 < 2) ||
                                    (y == 43 && x < 40)) ? 0.9f : -1.0f;
        CHECK(higan_word_baseline(caps, 64, 80) == 44, "baseline of capitals with a dense top bar: %lld (true 44)",
              (long long)higan_word_baseline(caps, 64, 80));
        free(caps);
    }
    for (k = 0; k < 64 * 10; ++k) blank[k] = -1.0f;
    CHECK(higan_word_baseline(blank, 64, 10) == 40, "no ink: the default 5/8 of the height");
}

static void test_layout_baseline(void) {
    static const int bases[] = {40, 46, 34};
    static const int64_t widths[] = {60, 80, 50};
    float *imgs[3];
    higan_page page;
    higan_layout_options o = higan_layout_default_options();
    int k, ok = 1;
    for (k = 0; k < 3; ++k) imgs[k] = synthetic_word((int)widths[k], bases[k]);
    CHECK(higan_layout_words(&page, (const float *const *)imgs, widths, NULL, 3, 64, &o) == HIGAN_OK, "lay out 3 words");
    CHECK(page.n_lines == 1 && page.width == 8 + 60 + 16 + 80 + 16 + 50 + 8, "one line, %lld px wide", (long long)page.width);
    /* ascent 46, descent 64 - 34 = 30: one line of 76 rows between margins of 8 */
    CHECK(page.height == 8 + 46 + 30 + 8, "page height %lld", (long long)page.height);
    for (k = 0; k < 3; ++k) {
        const higan_page_word *w = &page.words[k];
        int64_t xi = w->x + 10, line_base = 8 + 46;
        ok &= w->baseline == bases[k] && w->y + w->baseline == line_base;
        /* the row above the common baseline is the bottom of every core band; the row at it is blank */
        ok &= page.pixels[(line_base - 1) * page.width + xi] == 0.9f && page.pixels[line_base * page.width + xi] == -1.0f;
        ok &= page.pixels[(line_base - 20) * page.width + xi] == 0.9f && page.pixels[(line_base - 21) * page.width + xi] == -1.0f;
    }
    CHECK(ok, "every word's core band ends on the common baseline row %d", 8 + 46);
    higan_page_free(&page);
    o.align_baseline = 0;
    higan_layout_words(&page, (const float *const *)imgs, widths, NULL, 3, 64, &o);
    CHECK(page.words[0].y == 8 && page.words[1].y == 8 && page.words[2].y == 8 && page.height == 80, "without alignment: tops aligned");
    higan_page_free(&page);
    for (k = 0; k < 3; ++k) free(imgs[k]);
}

static void test_layout_wrap(void) {
    int64_t widths[40], i, prev_end = 0;
    float *imgs[40];
    int breaks[40], ok = 1, greedy = 1;
    higan_page page;
    higan_layout_options o = higan_layout_default_options();
    higan_rng r;
    float *img = synthetic_word(400, 40);
    /* 100, 100, 100, 40 at max width 220, no margin: two words per line */
    for (i = 0; i < 40; ++i) imgs[i] = img;
    widths[0] = widths[1] = widths[2] = 100; widths[3] = 40;
    o.max_width = 220; o.margin = 0; o.align_baseline = 0;   /* positions only (the image is reused at any width) */
    CHECK(higan_layout_words(&page, (const float *const *)imgs, widths, NULL, 4, 64, &o) == HIGAN_OK, "lay out 100, 100, 100, 40 at 220 px");
    CHECK(page.n_lines == 2 && page.width == 220 && page.words[1].line == 0 && page.words[2].line == 1 &&
          page.words[3].line == 1 && page.words[1].x == 116 && page.words[2].x == 0 && page.words[3].x == 116,
          "wrapped after the second word (100 + 16 + 100 = 216 fits, 332 does not)");
    CHECK(page.height == 128 && page.words[2].y == 64, "two lines of 64 rows");
    higan_page_free(&page);
    memset(breaks, 0, sizeof breaks);
    breaks[1] = 1;
    higan_layout_words(&page, (const float *const *)imgs, widths, breaks, 4, 64, &o);
    CHECK(page.n_lines == 3 && page.words[1].line == 1 && page.words[1].x == 0, "a paragraph break starts a new line");
    higan_page_free(&page);
    widths[2] = 300;
    higan_layout_words(&page, (const float *const *)imgs, widths, NULL, 4, 64, &o);
    CHECK(page.n_lines == 3 && page.width == 300 && page.words[2].x == 0 && page.words[2].line == 1 && page.words[3].line == 2,
          "a word wider than the line: its own line, wider page");
    higan_page_free(&page);
    /* random widths: greedy and within the width */
    higan_rng_seed(&r, 4);
    for (i = 0; i < 40; ++i) widths[i] = 20 + (int64_t)(higan_rng_uniform(&r) * 180.0f);
    o = higan_layout_default_options();
    o.max_width = 500;
    o.align_baseline = 0;
    higan_layout_words(&page, (const float *const *)imgs, widths, NULL, 40, 64, &o);
    for (i = 0; i < 40; ++i) {
        const higan_page_word *w = &page.words[i];
        ok &= w->x >= 8 && w->x + w->width <= 500 - 8;
        if (i > 0 && w->line != page.words[i - 1].line) greedy &= prev_end + 16 + w->width > 500 - 8 && w->x == 8;
        if (i > 0 && w->line == page.words[i - 1].line) ok &= w->x == prev_end + 16;
        prev_end = w->x + w->width;
    }
    CHECK(ok && page.width == 500, "40 random words at 500 px: every word inside the margins (%lld lines)", (long long)page.n_lines);
    CHECK(greedy, "every line break was needed (the word did not fit on the line before)");
    higan_page_free(&page);
    CHECK(higan_layout_words(&page, (const float *const *)imgs, widths, NULL, 0, 64, &o) == HIGAN_ERR_ARG, "no words: %s", higan_last_error());
    widths[0] = 0;
    CHECK(higan_layout_words(&page, (const float *const *)imgs, widths, NULL, 2, 64, &o) == HIGAN_ERR_ARG && page.pixels == NULL,
          "a zero-width word: %s", higan_last_error());
    free(img);
}

static void test_pixels(void) {
    const float v[8] = {-1.0f, -0.5f, 0.0f, 0.5f, 1.0f, 2.0f, -3.0f, NAN};
    const unsigned char gray[8] = {255, 191, 128, 64, 0, 0, 255, 255};
    const unsigned char alpha[8] = {0, 64, 128, 191, 255, 255, 0, 0};
    unsigned char g[8], ga[16];
    int i, ok = 1;
    higan_image_to_pixels(v, 8, 0, g);
    higan_image_to_pixels(v, 8, 1, ga);
    for (i = 0; i < 8; ++i) ok &= g[i] == gray[i] && ga[2 * i] == 0 && ga[2 * i + 1] == alpha[i];
    CHECK(ok, "8-bit output: gray = round((1 - v) 127.5); transparent: black ink, alpha = round((v + 1) 127.5)");
}

static void test_styles(void) {
    higan_model m;
    higan_model_config cfg = tiny_config(HIGAN_NETS_DEPLOY);
    higan_arena arena;
    higan_tape tape;
    float *img1 = (float *)malloc(sizeof(float) * 64 * 90), *img2 = (float *)malloc(sizeof(float) * 64 * 170);
    float s1[8], s2[8], avg[8], want[8], got[8], mid[8], loaded[8];
    const float *imgs[2];
    int64_t widths[2] = {90, 170};
    int chars[2] = {3, 5}, i, ok = 1;
    higan_arena_init(&arena, (size_t)32 << 20);
    higan_tape_init(&tape, &arena, 1024);
    CHECK(higan_model_init(&m, &cfg, 7) == HIGAN_OK, "tiny deploy model");
    for (i = 0; i < 64 * 90; ++i) img1[i] = (float)sin(0.3 * i);
    for (i = 0; i < 64 * 170; ++i) img2[i] = (float)cos(0.07 * i) * 0.8f;
    imgs[0] = img1; imgs[1] = img2;
    higan_style_from_image(&m, &tape, img1, 90, 3, s1);
    higan_style_from_image(&m, &tape, img2, 170, 5, s2);
    CHECK(higan_style_from_images(&m, &tape, imgs, widths, chars, 2, avg) == HIGAN_OK, "style of two references");
    for (i = 0; i < 8; ++i) want[i] = (float)(((double)s1[i] + (double)s2[i]) / 2.0);
    CHECK(memcmp(avg, want, sizeof avg) == 0 && memcmp(s1, s2, sizeof s1) != 0, "averaged style = mean of the two styles");
    higan_style_from_images(&m, &tape, imgs, widths, chars, 1, got);
    CHECK(memcmp(got, s1, sizeof got) == 0, "one reference: its own style");
    CHECK(higan_style_from_images(&m, &tape, imgs, widths, chars, 0, got) == HIGAN_ERR_ARG, "no reference: %s", higan_last_error());
    widths[1] = 0;
    CHECK(higan_style_from_images(&m, &tape, imgs, widths, chars, 2, got) == HIGAN_ERR_ARG && contains(higan_last_error(), "reference 1"),
          "a bad reference is named: %s", higan_last_error());
    /* interpolation: exact at both ends */
    higan_style_lerp(s1, s2, 8, 0.0f, got);
    ok &= memcmp(got, s1, sizeof got) == 0;
    higan_style_lerp(s1, s2, 8, 1.0f, got);
    ok &= memcmp(got, s2, sizeof got) == 0;
    CHECK(ok, "interpolation endpoints are exactly the two styles");
    higan_style_lerp(s1, s2, 8, 0.5f, mid);
    check_close("interpolation midpoint = the mean", mid, want, 8, 1e-6f, 1e-6f);
    /* style file */
    CHECK(higan_style_save(TMP_STYLE, avg, 8) == HIGAN_OK, "save a style file");
    CHECK(higan_style_load(TMP_STYLE, NULL, 0) == 8, "its dimension: 8");
    CHECK(higan_style_load(TMP_STYLE, loaded, 8) == 8 && memcmp(loaded, avg, sizeof avg) == 0, "style file round trip: the same bytes");
    CHECK(higan_style_load(TMP_STYLE, loaded, 4) == HIGAN_ERR_ARG, "room for 4 values only: %s", higan_last_error());
    higan_model_save(&m, TMP_MODEL, NULL);
    CHECK(higan_style_load(TMP_MODEL, loaded, 8) == HIGAN_ERR_FORMAT && contains(higan_last_error(), "no tensor 'style'"),
          "a checkpoint is not a style file: %s", higan_last_error());
    CHECK(higan_style_load("build/no_such_style.safetensors", loaded, 8) == HIGAN_ERR_IO, "missing file: %s", higan_last_error());
    higan_model_free(&m);
    higan_tape_free(&tape);
    higan_arena_free(&arena);
    free(img1); free(img2);
}

static void test_generate_text(void) {
    higan_model m;
    higan_model_config cfg = tiny_config(HIGAN_NETS_DEPLOY);
    higan_arena arena, small;
    higan_tape tape, st;
    higan_page page;
    higan_layout_options o = higan_layout_default_options();
    higan_rng r;
    float style[8], *word = (float *)malloc(sizeof(float) * 64 * 64 * 2);
    int64_t y, x;
    int ok = 1;
    higan_arena_init(&arena, (size_t)32 << 20);
    higan_tape_init(&tape, &arena, 1024);
    higan_model_init(&m, &cfg, 7);
    higan_rng_seed(&r, 1);
    higan_style_random(&m, &r, style);
    CHECK(higan_generate_text(&m, &tape, "ab cd\nef", style, &o, &page) == HIGAN_OK, "generate 'ab cd\\nef'");
    CHECK(page.n_words == 3 && page.n_lines == 2 && page.words[2].line == 1 && page.words[1].line == 0,
          "3 words, the newline starts line 2");
    higan_generate_word(&m, &tape, "ab", style, word, 64 * 64);
    for (y = 0; y < 64; ++y)
        for (x = 0; x < 64; ++x) ok &= fabsf(page.pixels[(page.words[0].y + y) * page.width + page.words[0].x + x] - word[y * 64 + x]) <= 1e-6f;
    CHECK(ok, "the first word on the page is higan_generate_word's image");
    higan_page_free(&page);
    {   /* words of several lengths (same-length ones share a forward): each is generate_word's image */
        static const char *words[5] = {"ab", "cde", "ab", "f", "ghij"};
        int k, all = 1, same = 1;
        CHECK(higan_generate_text(&m, &tape, "ab cde ab f ghij", style, &o, &page) == HIGAN_OK && page.n_words == 5,
              "generate 'ab cde ab f ghij'");
        for (k = 0; k < 5 && page.n_words == 5; ++k) {
            int64_t W = higan_generate_word(&m, &tape, words[k], style, word, 64 * 64 * 2);
            const higan_page_word *pw = &page.words[k];
            for (y = 0; y < 64; ++y)
                for (x = 0; x < W; ++x) {
                    float v = page.pixels[(pw->y + y) * page.width + pw->x + x], w = word[y * W + x];
                    all &= fabsf(v - w) <= 1e-6f;    /* same-length words share a forward: the */
                    same &= v == w;                  /* same GEMM sums, bit for bit today */
                }
        }
        CHECK(all, "every word on the page is higan_generate_word's image (%s)", same ? "bit for bit" : "within 1e-6");
        higan_page_free(&page);
    }
    o.max_width = 64 * 2 + 16 + 16;
    CHECK(higan_generate_text(&m, &tape, "ab ab ab ab ab", style, &o, &page) == HIGAN_OK && page.n_lines == 3 && page.width == 160,
          "5 words of 64 px at 160 px: 3 lines");
    higan_page_free(&page);
    CHECK(higan_generate_text(&m, &tape, " \t\n ", style, &o, &page) == HIGAN_ERR_ARG, "no words: %s", higan_last_error());
    CHECK(higan_generate_text(&m, &tape, "ok b\xC3\xA4""d", style, &o, &page) == HIGAN_ERR_ARG && contains(higan_last_error(), "word 2"),
          "a bad word is named: %s", higan_last_error());
    higan_arena_init(&small, 64 << 10);
    higan_tape_init(&st, &small, 1024);
    CHECK(higan_generate_text(&m, &st, "ab cd", style, &o, &page) == HIGAN_ERR_NOMEM && page.pixels == NULL,
          "a 64 KB arena: HIGAN_ERR_NOMEM, nothing kept");
    higan_tape_free(&st);
    higan_arena_free(&small);
    higan_model_free(&m);
    higan_tape_free(&tape);
    higan_arena_free(&arena);
    free(word);
}

/* ---- evaluation pipeline ---- */
typedef struct { int64_t calls, pixels; } pair_count;
static void on_pair(void *user, int64_t record, const float *real, const float *fake, int64_t w,
                    const char *label, const char *read_real, const char *read_fake) {
    pair_count *c = (pair_count *)user;
    (void)record; (void)real; (void)label; (void)read_real; (void)read_fake;
    c->calls += 1;
    c->pixels += 64 * w * (fake[0] == fake[0]);
}
static int finite_result(const higan_eval_result *r) {
    return isfinite(r->cer_real) && isfinite(r->wer_real) && isfinite(r->cer_fake) && isfinite(r->wer_fake) &&
           isfinite(r->wier) && isfinite(r->wid_acc_real) && isfinite(r->wid_acc_fake) && isfinite(r->fid) &&
           isfinite(r->kid) && isfinite(r->psnr) && isfinite(r->ssim);
}
static void test_evaluate(void) {
    static const char *labels[] = {"ab", "cat", "a", "Dog", "Hi", "xyz", "on"};
    static const int widths[] = {40, 90, 20, 100, 64, 5, 70};
    static const int wids[] = {3, 4, 3, 5, 4, 3, 7};
    higan_model m;
    higan_model_config cfg = tiny_config(HIGAN_NETS_DEPLOY | HIGAN_NET_BIT(HIGAN_NET_WRITER_IDENTIFIER) |
                                         HIGAN_NET_BIT(HIGAN_NET_RECOGNIZER));
    higan_dataset ds;
    higan_eval_options o = higan_eval_default_options();
    higan_eval_result r1, r2, r3;
    pair_count pc = {0, 0};
    uint8_t img[64 * 300];
    char long_label[80];
    int i, k;
    higan_status rc;
    higan_dataset_init(&ds);
    for (i = 0; i < 7; ++i) {
        for (k = 0; k < 64 * widths[i]; ++k) img[k] = (uint8_t)((k / widths[i] > 20 && k / widths[i] < 44 && (k * 7 + i) % 5 < 2) ? 230 : 0);
        higan_dataset_append(&ds, img, widths[i], labels[i], wids[i]);
    }
    memset(long_label, 'a', 70);
    long_label[70] = 0;
    higan_dataset_append(&ds, img, 300, long_label, 3);       /* longer than a generated word */
    CHECK(ds.count == 8, "tiny dataset of 8 words");
    CHECK(higan_model_init(&m, &cfg, 11) == HIGAN_OK, "tiny random model with G, E, B, W, R");
    o.on_pair = on_pair;
    o.user = &pc;
    o.limit = 8;
    rc = higan_evaluate(&m, &ds, &o, &r1);
    CHECK(rc == HIGAN_OK, "evaluate: %s", rc ? higan_last_error() : "ok");
    CHECK(r1.n == 7 && r1.n_skipped == 1 && r1.n_ssim == 6 && r1.feature_dim == 32,
          "7 records evaluated, the 70-letter one skipped, SSIM on the 6 at least 7 px wide");
    CHECK(finite_result(&r1), "finite figures: CER %.3f/%.3f WER %.3f/%.3f WIER %.3f acc %.3f/%.3f FID %.4g KID %.4g PSNR %.3f SSIM %.4f",
          r1.cer_real, r1.cer_fake, r1.wer_real, r1.wer_fake, r1.wier, r1.wid_acc_real, r1.wid_acc_fake, r1.fid, r1.kid,
          r1.psnr, r1.ssim);
    CHECK(r1.cer_fake >= 0 && r1.wer_fake >= 0 && r1.wer_fake <= 1 && r1.wier >= 0 && r1.wier <= 1 && r1.fid > -1e-9 &&
          r1.ssim >= -1 && r1.ssim <= 1, "figures in their ranges");
    CHECK(pc.calls == 7 && pc.pixels == 64 * (40 + 90 + 20 + 100 + 64 + 5 + 70), "on_pair: every real/fake pair at the real width");
    /* a small arena (grown on the way), one thread: the same figures */
    o.on_pair = NULL;
    o.arena_bytes = (size_t)1 << 20;
    higan_set_num_threads(1);
    rc = higan_evaluate(&m, &ds, &o, &r2);
    higan_set_num_threads(2);
    CHECK(rc == HIGAN_OK && memcmp(&r1, &r2, sizeof r1) == 0, "1 MB initial arena and 1 thread: the same figures");
    /* no recognizer and no writer identifier: those figures are NaN, the rest still computed */
    cfg = tiny_config(HIGAN_NETS_DEPLOY);
    higan_model_free(&m);
    higan_model_init(&m, &cfg, 11);
    o.limit = 3;
    rc = higan_evaluate(&m, &ds, &o, &r3);
    CHECK(rc == HIGAN_OK && r3.n == 3 && isnan(r3.cer_fake) && isnan(r3.wier) && isfinite(r3.fid) && isfinite(r3.psnr),
          "deploy-only model: CER/WIER NaN, FID %.4g, PSNR %.3f", r3.fid, r3.psnr);
    cfg = tiny_config(HIGAN_NET_BIT(HIGAN_NET_GENERATOR));
    higan_model_free(&m);
    higan_model_init(&m, &cfg, 11);
    CHECK(higan_evaluate(&m, &ds, &o, &r3) == HIGAN_ERR_ARG && contains(higan_last_error(), "StyleEncoder"),
          "a Generator alone cannot be evaluated: %s", higan_last_error());
    higan_model_free(&m);
    higan_dataset_free(&ds);
}

int main(void) {
    test_baseline();
    test_layout_baseline();
    test_layout_wrap();
    test_pixels();
    test_styles();
    test_generate_text();
    test_evaluate();
    return check_finish();
}
