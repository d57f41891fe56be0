/* Tests of the eval-mode Generator at each word's own width (higan.h, Generator section,
   higan__gen_needs / higan_generator_forward; higan_generate_words): the receptive-field
   margin, bit-for-bit equality of the valid columns with the padded-batch computation
   (official configuration and small ones, every CPU level, 1 and 2 threads, width groups
   split into several forwards, the L-wide group, empty and over-long lens), agreement with
   the PyTorch padded-batch oracle, the library calls on top, and a timing printout (padded
   vs per-word, words of mixed lengths; HIGAN_WIDTH_BENCH=1 adds 64 words). */
#define HIGAN_IMPLEMENTATION
#include "higan.h"
#include "check.h"
#include <time.h>

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

typedef struct { higan_params P; higan_generator G; } gen;

/* A randomly initialised Generator with non-trivial eval BatchNorm statistics and gains. */
static void gen_make(gen *g, int64_t ch, int64_t bottom, uint64_t seed) {
    higan_generator_config cfg = higan_generator_default_config();
    higan_rng r;
    int i;
    cfg.ch = ch; cfg.bottom = bottom;
    higan_params_init(&g->P);
    higan_generator_register(&g->G, &g->P, "", &cfg);
    higan_params_alloc(&g->P);
    higan_rng_seed(&r, seed);
    higan_generator_init(&g->G, &r);
    for (i = 0; i < g->P.count; ++i) {
        const higan_param_entry *e = &g->P.entries[i];
        float *d = higan_params_data(&g->P, i);
        int64_t k;
        if (strstr(e->name, "stored_mean")) higan_rng_fill_normal(&r, d, e->numel, 0.0f, 0.2f);
        if (strstr(e->name, "stored_var")) higan_rng_fill_uniform(&r, d, e->numel, 0.5f, 1.5f);
        if (strstr(e->name, "output_layer.0.gain")) for (k = 0; k < e->numel; ++k) d[k] = 1.0f + 0.3f * higan_rng_normal(&r);
        if (strstr(e->name, "output_layer.0.bias")) higan_rng_fill_normal(&r, d, e->numel, 0.0f, 0.3f);
    }
}
static void gen_free(gen *g) { higan_params_free(&g->P); }

/* Random labels 1..n_class-1 for each word's characters, 0 (pad) after them. */
static int *make_labels(const int *lens, int64_t B, int64_t L, uint64_t seed) {
    int *lab = (int *)malloc(sizeof(int) * (size_t)(B * L));
    higan_rng r;
    int64_t b, c;
    higan_rng_seed(&r, seed);
    for (b = 0; b < B; ++b)
        for (c = 0; c < L; ++c) lab[b * L + c] = c < lens[b] ? 1 + (int)(higan_rng_u64(&r) % 79) : 0;
    return lab;
}

/* The eval forward under no_grad (full: the whole padded width); a malloc'd copy of the
   output [B, C, H, W], or NULL. secs / flops: time and GEMM work of the forward. */
static float *run_g(gen *g, higan_tape *T, const float *z, const int *labels, const int *lens,
                    int64_t B, int64_t L, int full, double *secs, uint64_t *flops) {
    int64_t zs[2];
    higan_var *zv, *y;
    float *out = NULL;
    double t0;
    higan_tape_reset(T);
    g->G.eval_full_width = full;
    higan_no_grad_begin(T);
    zs[0] = B; zs[1] = g->G.cfg.style_dim;
    zv = higan_var_new(T, 2, zs);
    memcpy(zv->data, z, sizeof(float) * (size_t)(B * zs[1]));
    higan_gemm_flops_reset();
    t0 = now_s();
    y = higan_generator_forward(T, &g->G, zv, labels, lens, L, 0);
    if (secs) *secs = now_s() - t0;
    if (flops) *flops = higan_gemm_flops();
    higan_no_grad_end(T);
    g->G.eval_full_width = 0;
    if (y) {
        out = (float *)malloc(sizeof(float) * (size_t)higan_var_numel(y));
        memcpy(out, y->data, sizeof(float) * (size_t)higan_var_numel(y));
    } else {
        printf("      forward failed: %s\n", higan_last_error());
    }
    return out;
}

/* differing values, the largest difference, and the first differing column of word b */
static int64_t diff_count(const float *a, const float *b, int64_t n, double *maxd) {
    int64_t i, bad = 0;
    *maxd = 0;
    for (i = 0; i < n; ++i)
        if (memcmp(&a[i], &b[i], sizeof(float)) != 0) {
            double d = fabs((double)a[i] - (double)b[i]);
            ++bad;
            if (d > *maxd || d != d) *maxd = d;
        }
    return bad;
}

/* ---- the margin ---------------------------------------------------------------------- */
static void test_margin(void) {
    static const int64_t bottoms[] = {4, 1, 2, 3, 8};
    static const int64_t want[] = {1, 4, 2, 2, 1};
    int k;
    for (k = 0; k < 5; ++k) {
        gen g;
        gen_make(&g, 2, bottoms[k], 1);
        CHECK(higan_generator_margin(&g.G) == want[k], "bottom %lld: margin %lld character(s) (want ceil(4 / bottom) = %lld)",
              (long long)bottoms[k], (long long)higan_generator_margin(&g.G), (long long)want[k]);
        gen_free(&g);
    }
}

/* The padded computation itself (full width): a word of 3 characters gives the same valid
   columns at L = 4 (one pad character, the margin) as at L = 6, but not at L = 3 (no pad
   character: zero padding where the padded batch has the pad symbol's features). */
static void test_receptive_field(void) {
    gen g;
    higan_arena A;
    higan_tape T;
    int lens[1] = {3}, lab6[6] = {12, 40, 7, 0, 0, 0};
    float z[32], *o6, *o4, *o3;
    int64_t H = 64, c, r, first = -1, ndiff = 0;
    int ok4 = 1;
    higan_rng rr;
    gen_make(&g, 8, 4, 2);
    higan_arena_init(&A, (size_t)64 << 20);
    higan_tape_init(&T, &A, 4096);
    higan_rng_seed(&rr, 3);
    higan_rng_fill_normal(&rr, z, 32, 0.0f, 1.0f);
    o6 = run_g(&g, &T, z, lab6, lens, 1, 6, 1, NULL, NULL);
    o4 = run_g(&g, &T, z, lab6, lens, 1, 4, 1, NULL, NULL);   /* labels [12, 40, 7, 0] */
    o3 = run_g(&g, &T, z, lab6, lens, 1, 3, 1, NULL, NULL);
    if (o6 && o4 && o3) {
        for (r = 0; r < H; ++r)
            for (c = 0; c < 96; ++c) {
                ok4 &= memcmp(&o4[r * 128 + c], &o6[r * 192 + c], sizeof(float)) == 0;
                if (memcmp(&o3[r * 96 + c], &o6[r * 192 + c], sizeof(float)) != 0) {
                    ++ndiff;
                    if (first < 0 || c < first) first = c;
                }
            }
        CHECK(ok4, "padded computation: 'abc' at L = 4 (one pad character) has the valid columns of L = 6, bit for bit");
        CHECK(ndiff > 0 && first >= 64, "padded computation at L = 3 (no pad character) differs in %lld values, from column %lld "
              "(inside the last character: the receptive field reaches the next character)", (long long)ndiff, (long long)first);
    } else {
        CHECK(0, "forwards ran");
    }
    free(o6); free(o4); free(o3);
    higan_tape_free(&T);
    higan_arena_free(&A);
    gen_free(&g);
}

/* Per-word (default) vs padded (eval_full_width) on one batch: the whole output bit for bit
   (valid columns computed, masked ones -1 in both). */
static void check_batch(gen *g, higan_tape *T, const int *lens, int64_t B, int64_t L, uint64_t seed,
                        const char *what) {
    float *z = (float *)malloc(sizeof(float) * (size_t)(B * g->G.cfg.style_dim));
    int *lab = make_labels(lens, B, L, seed);
    float *pad, *word;
    uint64_t fp = 0, fw = 0;
    higan_rng r;
    higan_rng_seed(&r, seed + 1);
    higan_rng_fill_normal(&r, z, B * g->G.cfg.style_dim, 0.0f, 1.0f);
    pad = run_g(g, T, z, lab, lens, B, L, 1, NULL, &fp);
    word = run_g(g, T, z, lab, lens, B, L, 0, NULL, &fw);
    if (pad && word) {
        const int64_t n = B * g->G.cfg.input_nc * 16 * g->G.cfg.bottom * 8 * g->G.cfg.bottom * L;
        double maxd;
        int64_t bad = diff_count(word, pad, n, &maxd), i, masked = 0, m1 = 0;
        for (i = 0; i < n; ++i) {   /* masked columns: -1 */
            const int64_t W = 8 * g->G.cfg.bottom * L, col = i % W;
            const int64_t b = i / (n / B);
            if (col >= 8 * g->G.cfg.bottom * lens[b]) { ++masked; m1 += word[i] == -1.0f; }
        }
        /* bit for bit today (every output element is the same GEMM sum in both); 1e-6 is the
           bound should a GEMM ever block K by the shape (a bug, e.g. a column reading zero
           padding instead of the pad character, is off by 1e-3 or more) */
        CHECK(maxd <= 1e-6 && masked == m1, "%s [%s]: per-word = padded, %s (%lld of %lld differ, max %.3g; %lld masked -1); "
              "GEMM work %.3f vs %.3f GFLOP", what, higan_cpu_level_name(higan_cpu_level()),
              bad == 0 ? "bit for bit" : "within 1e-6", (long long)bad, (long long)n, maxd, (long long)masked,
              (double)fw * 1e-9, (double)fp * 1e-9);
    } else {
        CHECK(0, "%s: forwards ran", what);
    }
    free(pad); free(word); free(z); free(lab);
}

static int level_forced(void) { return getenv("HIGAN_CPU") != NULL; }

static void test_exact(void) {
    static const int lens_a[4] = {1, 3, 10, 17};
    static const int lens_b[7] = {16, 17, 3, 0, 3, 20, 1};        /* L = 17: the L-wide group, empty, over-long */
    static const int lens_c[14] = {7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 1, 1};  /* 12 x width 8: two forwards */
    static const higan_cpu levels[3] = {HIGAN_CPU_SCALAR, HIGAN_CPU_AVX2, HIGAN_CPU_AVX512};
    higan_cpu best = higan_cpu_detect(), saved = higan_cpu_level();
    higan_arena A;
    higan_tape T;
    gen g64, g8, gb2, gb1;
    int k, threads = higan_get_num_threads();
    higan_arena_init(&A, (size_t)768 << 20);
    higan_tape_init(&T, &A, 4096);
    gen_make(&g64, 64, 4, 5);     /* the official configuration */
    gen_make(&g8, 8, 4, 6);
    gen_make(&gb2, 4, 2, 7);      /* bottom 2: margin 2, 32-pixel-high images */
    gen_make(&gb1, 4, 1, 8);      /* bottom 1: margin 4 */
    for (k = 0; k < 3; ++k) {
        if (level_forced() ? levels[k] != saved : levels[k] > best) continue;
        higan_cpu_set_level(levels[k]);
        check_batch(&g64, &T, lens_a, 4, 17, 10, "official G, lens [1, 3, 10, 17]");
        check_batch(&g8, &T, lens_b, 7, 17, 11, "ch 8, lens [16, 17, 3, 0, 3, 20, 1] at L 17");
        check_batch(&g8, &T, lens_c, 14, 7, 12, "ch 8, 12 words of 7 and 2 of 1 (a width group in 2 forwards)");
        check_batch(&gb2, &T, lens_a, 4, 17, 13, "ch 4 bottom 2, lens [1, 3, 10, 17]");
        check_batch(&gb1, &T, lens_b, 7, 17, 14, "ch 4 bottom 1, lens [16, 17, 3, 0, 3, 20, 1] at L 17");
    }
    higan_cpu_set_level(saved);
    higan_set_num_threads(threads == 1 ? 2 : 1);
    check_batch(&g8, &T, lens_b, 7, 17, 11, threads == 1 ? "2 threads" : "1 thread");
    higan_set_num_threads(threads);
    {   /* 2 threads in an arena sized for one: the forwards (3 here) that do not fit a thread's
           half run alone afterwards (higan__gen_jobs), with the same numbers */
        const int64_t B = 14, L = 7;
        float z[14 * 32];
        int lab[14 * 7];
        float *o1, *o2;
        size_t need;
        higan_arena A1, A2;
        higan_tape T1, T2;
        higan_rng rr;
        int64_t i;
        higan_rng_seed(&rr, 31);
        higan_rng_fill_normal(&rr, z, B * 32, 0.0f, 1.0f);
        for (i = 0; i < B * L; ++i) lab[i] = i % L < lens_c[i / L] ? 1 + (int)((i * 7) % 79) : 0;
        higan_arena_init(&A1, (size_t)256 << 20);
        higan_tape_init(&T1, &A1, 4096);
        higan_set_num_threads(1);
        o1 = run_g(&g8, &T1, z, lab, lens_c, B, L, 0, NULL, NULL);
        need = A1.peak;
        higan_arena_init(&A2, need);
        higan_tape_init(&T2, &A2, 4096);
        higan_set_num_threads(2);
        o2 = run_g(&g8, &T2, z, lab, lens_c, B, L, 0, NULL, NULL);
        higan_set_num_threads(threads);
        CHECK(o1 && o2 && !memcmp(o1, o2, sizeof(float) * (size_t)(B * 64 * 32 * L)),
              "2 threads in an arena of the 1-thread run's %.1f MB: runs, bit for bit", (double)need / 1048576.0);
        free(o1); free(o2);
        higan_tape_free(&T1); higan_tape_free(&T2);
        higan_arena_free(&A1); higan_arena_free(&A2);
    }
    gen_free(&g64); gen_free(&g8); gen_free(&gb2); gen_free(&gb1);
    higan_tape_free(&T);
    higan_arena_free(&A);
}

/* The PyTorch oracle's eval output (padded batch, lens [4, 2, 3] at L 4) from the per-word
   path; and the recording (gradient) path, which runs the padded width, gives the same. */
static void test_oracle(void) {
    higan_safetensors st;
    gen g;
    higan_generator_config cfg = higan_generator_default_config();
    higan_arena A;
    higan_tape T;
    int64_t B, L, i, n;
    float *z, *ref, *word;
    int *labels, *lens;
    if (!check_open_fixture(&st, "biggan_generator.safetensors")) return;
    cfg.ch = 2; cfg.embed_dim = 8;
    higan_params_init(&g.P);
    higan_generator_register(&g.G, &g.P, "", &cfg);
    higan_params_alloc(&g.P);
    CHECK(higan_params_load(&g.P, &st, "Generator.", NULL) == HIGAN_OK, "oracle G loaded");
    {
        int64_t nz, nl, nn, no;
        float *fl = check_load(&st, "labels", &nl), *fn = check_load(&st, "lens", &nn);
        z = check_load(&st, "z", &nz);
        ref = check_load(&st, "eval.out", &no);
        if (!fl || !fn || !z || !ref) { CHECK(0, "oracle tensors present"); return; }
        B = nn; L = nl / nn;
        labels = (int *)malloc(sizeof(int) * (size_t)nl);
        lens = (int *)malloc(sizeof(int) * (size_t)nn);
        for (i = 0; i < nl; ++i) labels[i] = (int)fl[i];
        for (i = 0; i < nn; ++i) lens[i] = (int)fn[i];
        free(fl); free(fn);
    }
    higan_arena_init(&A, (size_t)64 << 20);
    higan_tape_init(&T, &A, 4096);
    word = run_g(&g, &T, z, labels, lens, B, L, 0, NULL, NULL);
    n = B * 64 * 32 * L;
    if (word) check_close("per-word eval G vs PyTorch's padded batch (lens [4, 2, 3], L 4)", word, ref, n, 1e-5f, 1e-4f);
    {   /* recording path (z needs a gradient): the padded width, the same numbers */
        int64_t zs[2];
        higan_var *zv, *y;
        double maxd;
        higan_tape_reset(&T);
        zs[0] = B; zs[1] = 32;
        zv = higan_var_new(&T, 2, zs);
        memcpy(zv->data, z, sizeof(float) * (size_t)(B * 32));
        zv->requires_grad = 1;
        y = higan_generator_forward(&T, &g.G, zv, labels, lens, L, 0);
        CHECK(y && word && diff_count(y->data, word, n, &maxd) == 0,
              "eval forward with gradients (padded width) = the no-grad per-word forward, bit for bit");
    }
    free(word); free(z); free(ref); free(labels); free(lens);
    higan_tape_free(&T);
    higan_arena_free(&A);
    higan_safetensors_free(&st);
    gen_free(&g);
}

/* ---- higan_generate_words ---------------------------------------------------------------- */
static void test_generate_words(void) {
    static const char *texts[6] = {"a", "Hello", "to", "be", "xylophones", "Hi"};
    higan_model m;
    higan_model_config cfg = higan_model_default_config(HIGAN_NETS_DEPLOY);
    higan_arena A;
    higan_tape T;
    higan_rng r;
    float styles[6 * 8], *alone[6], *batch[6], *full[6], *one;
    int64_t caps[6], i, bad_alone = 0, bad_full = 0, diff_batch = 0, k;
    double max_alone = 0, max_full = 0;
    cfg.G.ch = 4; cfg.G.style_dim = 8; cfg.G.embed_dim = 8;
    cfg.B.resolution = 2; cfg.B.max_dim = 32;
    higan_model_init(&m, &cfg, 21);
    higan_arena_init(&A, (size_t)64 << 20);
    higan_tape_init(&T, &A, 4096);
    higan_rng_seed(&r, 4);
    higan_rng_fill_normal(&r, styles, 6 * 8, 0.0f, 1.0f);
    one = (float *)malloc(sizeof(float) * 64 * 320);
    for (i = 0; i < 6; ++i) {
        caps[i] = 64 * (int64_t)higan_generate_word(&m, &T, texts[i], NULL, NULL, 0);
        alone[i] = (float *)malloc(sizeof(float) * (size_t)caps[i]);
        batch[i] = (float *)malloc(sizeof(float) * (size_t)caps[i]);
        full[i] = (float *)malloc(sizeof(float) * (size_t)caps[i]);
    }
    CHECK(higan_generate_words(&m, &T, texts, 6, styles, 8, 0, alone, caps) == HIGAN_OK, "generate_words alone");
    CHECK(higan_generate_words(&m, &T, texts, 6, styles, 8, 1, batch, caps) == HIGAN_OK, "generate_words as one batch");
    m.G.eval_full_width = 1;
    CHECK(higan_generate_words(&m, &T, texts, 6, styles, 8, 1, full, caps) == HIGAN_OK, "generate_words as one batch, padded width");
    m.G.eval_full_width = 0;
    for (i = 0; i < 6; ++i) {
        higan_generate_word(&m, &T, texts[i], styles + 8 * i, one, 64 * 320);
        for (k = 0; k < caps[i]; ++k) {
            bad_alone += memcmp(&alone[i][k], &one[k], sizeof(float)) != 0;
            bad_full += memcmp(&batch[i][k], &full[i][k], sizeof(float)) != 0;
            diff_batch += memcmp(&batch[i][k], &alone[i][k], sizeof(float)) != 0;
            if (fabs((double)alone[i][k] - one[k]) > max_alone) max_alone = fabs((double)alone[i][k] - one[k]);
            if (fabs((double)batch[i][k] - full[i][k]) > max_full) max_full = fabs((double)batch[i][k] - full[i][k]);
        }
    }
    CHECK(max_alone <= 1e-6, "batch 0: every word is higan_generate_word's image (%lld values differ in the last bit, max %.3g)",
          (long long)bad_alone, max_alone);
    CHECK(max_full <= 1e-6, "batch 1: per-word = padded width (%lld values differ in the last bit, max %.3g)",
          (long long)bad_full, max_full);
    CHECK(diff_batch > 0 && memcmp(batch[4], alone[4], sizeof(float) * (size_t)caps[4]) == 0,
          "batch 1 differs from alone only for the words shorter than the longest (%lld values); the longest is the same", (long long)diff_batch);
    CHECK(higan_generate_words(&m, &T, texts, 6, styles, 8, 1, batch, caps) == HIGAN_OK &&
          memcmp(batch[1], full[1], sizeof(float) * (size_t)caps[1]) == 0, "again: the same (renormalised embedding rows stay)");
    {
        const char *bad[2] = {"ok", "b\xC3\xA4""d"};
        int64_t bcaps[2] = {64 * 320, 64 * 320};
        int64_t small[6] = {64 * 32, 64 * 32, 64 * 32, 64 * 32, 64 * 32, 64 * 32};
        float *bouts[2];
        bouts[0] = bouts[1] = one;
        CHECK(higan_generate_words(&m, &T, bad, 2, styles, 0, 1, bouts, bcaps) == HIGAN_ERR_ARG &&
              strstr(higan_last_error(), "word 2") != NULL, "a bad word is named: %s", higan_last_error());
        CHECK(higan_generate_words(&m, &T, texts, 6, styles, 8, 0, batch, small) == HIGAN_ERR_ARG &&
              strstr(higan_last_error(), "word 2 'Hello'") != NULL, "an output too small is named: %s", higan_last_error());
    }
    {
        higan_arena sa;
        higan_tape stp;
        higan_arena_init(&sa, 64 << 10);
        higan_tape_init(&stp, &sa, 1024);
        CHECK(higan_generate_words(&m, &stp, texts, 6, styles, 8, 1, batch, caps) == HIGAN_ERR_NOMEM, "64 KB arena: HIGAN_ERR_NOMEM");
        higan_tape_free(&stp);
        higan_arena_free(&sa);
    }
    for (i = 0; i < 6; ++i) { free(alone[i]); free(batch[i]); free(full[i]); }
    free(one);
    higan_model_free(&m);
    higan_tape_free(&T);
    higan_arena_free(&A);
}

/* ---- timing: padded vs per-word, official configuration ----------------------------------- */
static void time_batch(gen *g, higan_tape *T, const int *lens, int64_t B, int reps, const char *what) {
    int64_t L = 0, i, chars = 0, comp = 0, margin = higan_generator_margin(&g->G);
    float *z = (float *)malloc(sizeof(float) * (size_t)(B * g->G.cfg.style_dim));
    int *lab;
    double best[2] = {1e30, 1e30};
    uint64_t fl[2] = {0, 0};
    higan_rng r;
    int mode, k;
    for (i = 0; i < B; ++i) { if (lens[i] > L) L = lens[i]; chars += lens[i]; }
    for (i = 0; i < B; ++i) comp += lens[i] + margin < L ? lens[i] + margin : L;
    lab = make_labels(lens, B, L, 77);
    higan_rng_seed(&r, 78);
    higan_rng_fill_normal(&r, z, B * g->G.cfg.style_dim, 0.0f, 1.0f);
    for (k = 0; k < reps; ++k)
        for (mode = 0; mode < 2; ++mode) {
            /* padded: forwards of about 96 characters (B x L needs about 7.8 MB a character);
               per-word: one call (its own groups of about 32 characters) */
            const int64_t per = mode == 0 ? (96 / L > 1 ? 96 / L : 1) : B;
            double s, sum = 0;
            uint64_t f;
            int ok = 1;
            fl[mode] = 0;
            for (i = 0; i < B && ok; i += per) {
                const int64_t nb = B - i < per ? B - i : per;
                float *o = run_g(g, T, z + i * g->G.cfg.style_dim, lab + i * L, lens + i, nb, L, mode == 0, &s, &f);
                ok = o != NULL;
                sum += s;
                fl[mode] += f;
                free(o);
            }
            if (ok && sum < best[mode]) best[mode] = sum;
        }
    printf("TIME %s [%s, %d thread(s)], %lld words, %lld characters, padded to %lld x %lld = %lld, per-word widths %lld:\n"
           "     padded   %.3f s (%.1f words/s) %.1f GFLOP\n     per-word %.3f s (%.1f words/s) %.1f GFLOP   speed-up %.2fx (min of %d)\n",
           what, higan_cpu_level_name(higan_cpu_level()), higan_get_num_threads(), (long long)B, (long long)chars,
           (long long)B, (long long)L, (long long)(B * L), (long long)comp, best[0], (double)B / best[0], (double)fl[0] * 1e-9,
           best[1], (double)B / best[1], (double)fl[1] * 1e-9, best[0] / best[1], reps);
    CHECK(fl[1] < fl[0], "%s: per-word does less GEMM work (%.1f < %.1f GFLOP)", what, (double)fl[1] * 1e-9, (double)fl[0] * 1e-9);
    free(z); free(lab);
}

static void test_timing(void) {
    static const int fake8[8] = {10, 9, 8, 6, 6, 2, 1, 1};    /* the fake-word batch */
    gen g;
    higan_arena A;
    higan_tape T;
    const char *env = getenv("HIGAN_WIDTH_BENCH");
    int reps = env && atoi(env) > 0 ? 3 : 2;
    gen_make(&g, 64, 4, 9);
    higan_arena_init(&A, (size_t)1024 << 20);
    higan_tape_init(&T, &A, 4096);
    time_batch(&g, &T, fake8, 8, reps, "official G, lens [10, 9, 8, 6, 6, 2, 1, 1]");
    if (env && atoi(env) > 0) {
        /* 64 words, lengths as IAM test words run (many short ones, a few long) */
        static const int pool[16] = {1, 2, 2, 3, 3, 3, 4, 4, 5, 5, 6, 7, 8, 9, 10, 12};
        int lens64[64], i;
        higan_rng r;
        higan_rng_seed(&r, 64);
        for (i = 0; i < 64; ++i) lens64[i] = pool[higan_rng_u64(&r) % 16];
        time_batch(&g, &T, lens64, 64, reps, "official G, 64 words of 1..12 characters");
    }
    higan_tape_free(&T);
    higan_arena_free(&A);
    gen_free(&g);
}

int main(void) {
    test_margin();
    test_receptive_field();
    test_exact();
    test_oracle();
    test_generate_words();
    test_timing();
    return check_finish();
}
