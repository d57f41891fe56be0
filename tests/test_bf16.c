/* test_bf16: HIGAN_PRECISION_BF16 (bf16 operands, fp32 accumulation) at every CPU level this
   machine has (HIGAN_CPU=<level> in the environment: that level only).
   (a) higan_bf16_round: round to nearest even, ties, denormals, Inf/NaN, overflow;
   (b) the precision setting (default, HIGAN_PRECISION, set/get);
   (c) higan_gemm in bf16 against higan_gemm_ref_bf16 (the same bf16 operands, double sums:
       only the fp32 summation differs, so the tolerance is the fp32 one) and against the fp32
       reference within the bf16 bound |C_bf16 - C| <= 2^-7 sum_k |a_k b_k| (+ fp32 slack):
       each operand is within a relative 2^-8 (half an ulp of an 8-bit significand) of its
       fp32 value, a product within 2^-8 + 2^-8 + 2^-16 < 2^-7; all transposes, odd K (the
       K pairs are padded), K over the 512 block, alpha/beta; 1 vs 2 threads bit-identical;
   (d) conv2d forward, dgrad, wgrad in bf16 along each way (packed GEMM, channel-vector and
       pixel-vector direct convolutions) against the direct loops on bf16-rounded operands
       (tight) and against the fp32 loops within the same bound (the bound per output is
       the reference convolution of |x| and |w|, of |dy| and |w|, of |dy| and |x|); 1 vs 2
       threads bit-identical;
   (e) whole networks at a small configuration (Generator, Discriminator, StyleBackbone,
       Recognizer, eval mode): the relative L2 difference of the bf16 output from the fp32
       output is printed and bounded. */
#define HIGAN_IMPLEMENTATION
#include "higan.h"
#include "check.h"

static float *copy_array(const float *x, int64_t n, int mode) {   /* mode 0 copy, 1 |x|, 2 bf16 */
    float *p = (float *)malloc(sizeof(float) * (size_t)(n ? n : 1));
    int64_t i;
    for (i = 0; i < n; ++i) p[i] = mode == 1 ? fabsf(x[i]) : mode == 2 ? higan_bf16_round(x[i]) : x[i];
    return p;
}
static const char *lvl(void) { return higan_cpu_level_name(higan_cpu_level()); }
static float bits_to_float(uint32_t u) { float f; memcpy(&f, &u, sizeof f); return f; }
static uint32_t float_bits(float f) { uint32_t u; memcpy(&u, &f, sizeof u); return u; }

/* |got - ref| <= atol + 2^-7 * bound elementwise */
static void check_bound(const char *name, const float *got, const float *ref, const float *bound,
                        int64_t n, float atol) {
    int64_t i, bad = 0, worst = -1;
    double wex = 0, maxd = 0;
    for (i = 0; i < n; ++i) {
        double d = fabs((double)got[i] - (double)ref[i]), ex = d - (atol + bound[i] / 128.0);
        if (!(d == d)) ex = 1e30;
        if (d > maxd) maxd = d;
        if (ex > 0) { ++bad; if (ex > wex) { wex = ex; worst = i; } }
    }
    CHECK(bad == 0, "%s: %lld values within 2^-7 sum|a b| of fp32 (max |diff| %.3g)%s", name,
          (long long)n, maxd, bad ? " -- outside:" : "");
    if (bad) printf("      %lld outside; worst at %lld: got %g ref %g bound %g\n", (long long)bad,
                    (long long)worst, got[worst], ref[worst], atol + bound[worst] / 128.0);
}

/* ---- (a) rounding -------------------------------------------------------------------------- */
static void rounding(void) {
    const float one = 1.0f, ulp = 1.0f / 128.0f;   /* bf16 spacing in [1, 2) */
    CHECK(higan_bf16_round(one) == one && higan_bf16_round(-2.5f) == -2.5f, "bf16: exact values kept");
    CHECK(higan_bf16_round(one + ulp / 2) == one, "bf16: tie 1 + 2^-8 rounds to even (1)");
    CHECK(higan_bf16_round(one + 3 * ulp / 2) == one + 2 * ulp, "bf16: tie 1 + 3*2^-8 rounds to even (1 + 2^-6)");
    CHECK(higan_bf16_round(one + ulp / 2 + 1e-6f) == one + ulp, "bf16: above a tie rounds up");
    CHECK(higan_bf16_round(bits_to_float(0x3f80ffffu)) == one + ulp, "bf16: 0x3f80ffff -> 0x3f81");
    CHECK(float_bits(higan_bf16_round(1e-40f)) == 0 && float_bits(higan_bf16_round(-1e-40f)) == 0x80000000u,
          "bf16: denormal inputs become signed zeros (as vcvtne2ps2bf16)");
    CHECK(isinf(higan_bf16_round(INFINITY)) && isnan(higan_bf16_round(NAN)), "bf16: Inf and NaN kept");
    CHECK(isinf(higan_bf16_round(3.4e38f)), "bf16: values past the largest bf16 round to Inf");
    CHECK(float_bits(higan_bf16_round(0.1f)) == 0x3dcd0000u, "bf16: 0.1 -> 0x3dcd");
}

/* ---- (b) precision setting -------------------------------------------------------------------- */
static void precision_setting(void) {
    const char *env = getenv("HIGAN_PRECISION");
    higan_precision want = env && !strcmp(env, "bf16") ? HIGAN_PRECISION_BF16 : HIGAN_PRECISION_FP32;
    CHECK(higan_get_precision() == want, "precision at start: %s (HIGAN_PRECISION=%s)",
          higan_get_precision() == HIGAN_PRECISION_BF16 ? "bf16" : "fp32", env ? env : "(unset)");
    higan_set_precision(HIGAN_PRECISION_BF16);
    CHECK(higan_get_precision() == HIGAN_PRECISION_BF16, "set_precision bf16");
    higan_set_precision(HIGAN_PRECISION_FP32);
    CHECK(higan_get_precision() == HIGAN_PRECISION_FP32, "set_precision fp32");
}

/* ---- (c) GEMM ------------------------------------------------------------------------------- */
static void gemm_one(int ta, int tb, int64_t M, int64_t N, int64_t K, float alpha, float beta) {
    const int64_t lda = ta ? M : K, ldb = tb ? K : N;
    float *A = check_rand_array(M * K), *B = check_rand_array(K * N), *C0 = check_rand_array(M * N);
    float *C = copy_array(C0, M * N, 0), *Rb = copy_array(C0, M * N, 0), *Rf = copy_array(C0, M * N, 0);
    float *Aa = copy_array(A, M * K, 1), *Ba = copy_array(B, K * N, 1), *bound = check_rand_array(M * N);
    char name[160];
    higan_set_precision(HIGAN_PRECISION_BF16);
    higan_gemm(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, N);
    higan_set_precision(HIGAN_PRECISION_FP32);
    higan_gemm_ref_bf16(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, Rb, N);
    higan_gemm_ref(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, Rf, N);
    higan_gemm_ref(ta, tb, M, N, K, alpha < 0 ? -alpha : alpha, Aa, lda, Ba, ldb, 0.0f, bound, N);
    snprintf(name, sizeof name, "%s bf16 gemm %c%c %lldx%lldx%lld alpha %g beta %g vs bf16 reference", lvl(),
             ta ? 'T' : 'N', tb ? 'T' : 'N', (long long)M, (long long)N, (long long)K, alpha, beta);
    check_close(name, C, Rb, M * N, 1e-5f + 4e-7f * (float)K * (alpha < 0 ? -alpha : alpha), 1e-5f);
    snprintf(name, sizeof name, "%s bf16 gemm %c%c %lldx%lldx%lld vs fp32", lvl(), ta ? 'T' : 'N',
             tb ? 'T' : 'N', (long long)M, (long long)N, (long long)K);
    check_bound(name, C, Rf, bound, M * N, 1e-5f + 4e-7f * (float)K);
    free(A); free(B); free(C0); free(C); free(Rb); free(Rf); free(Aa); free(Ba); free(bound);
}
static void gemm_threads(int ta, int tb, int64_t M, int64_t N, int64_t K) {
    float *A = check_rand_array(M * K), *B = check_rand_array(K * N), *C1 = check_rand_array(M * N);
    float *C2 = copy_array(C1, M * N, 0);
    int keep = higan_get_num_threads();
    higan_set_precision(HIGAN_PRECISION_BF16);
    higan_set_num_threads(1);
    higan_gemm(ta, tb, M, N, K, 1.0f, A, ta ? M : K, B, tb ? K : N, 0.5f, C1, N);
    higan_set_num_threads(2);
    higan_gemm(ta, tb, M, N, K, 1.0f, A, ta ? M : K, B, tb ? K : N, 0.5f, C2, N);
    higan_set_num_threads(keep);
    higan_set_precision(HIGAN_PRECISION_FP32);
    CHECK(!memcmp(C1, C2, sizeof(float) * (size_t)(M * N)), "%s bf16 gemm %c%c %lldx%lldx%lld: 1 and 2 threads bit-identical",
          lvl(), ta ? 'T' : 'N', tb ? 'T' : 'N', (long long)M, (long long)N, (long long)K);
    free(A); free(B); free(C1); free(C2);
}
static void gemms(void) {
    static const int64_t shapes[][3] = {{1, 1, 1}, {3, 5, 7}, {13, 17, 19}, {6, 64, 2}, {7, 70, 33},
                                        {64, 64, 64}, {31, 130, 513}, {100, 37, 1030}, {5, 2100, 9}};
    static const float ab[][2] = {{1.0f, 0.0f}, {0.5f, 1.0f}, {-1.5f, 0.25f}, {2.0f, -1.0f}};
    int s, ta, tb, combo = 0;
    for (s = 0; s < (int)(sizeof shapes / sizeof shapes[0]); ++s)
        for (ta = 0; ta < 2; ++ta)
            for (tb = 0; tb < 2; ++tb) {
                const float *p = ab[combo++ % 4];
                gemm_one(ta, tb, shapes[s][0], shapes[s][1], shapes[s][2], p[0], p[1]);
            }
    gemm_threads(0, 0, 203, 301, 517);
    gemm_threads(1, 1, 203, 301, 517);
    gemm_threads(0, 1, 7, 2100, 300);
}

/* ---- (d) conv2d ------------------------------------------------------------------------------ */
static const char *way_name(int way) {
    return way < 0 ? "auto" : way == 0 ? "packed" : way == 1 ? "chanvec" : "pixvec";
}
static void conv_case(const char *name, higan_conv2d_shape s) {
    const int64_t OH = higan_conv2d_out_h(&s), OW = higan_conv2d_out_w(&s);
    const int64_t nx = s.N * s.IC * s.H * s.W, nw = s.OC * s.IC * s.KH * s.KW, ny = s.N * s.OC * OH * OW;
    float *x = check_rand_array(nx), *w = check_rand_array(nw), *b = check_rand_array(s.OC), *dy = check_rand_array(ny);
    float *xr = copy_array(x, nx, 2), *wr = copy_array(w, nw, 2), *dyr = copy_array(dy, ny, 2);
    float *xa = copy_array(x, nx, 1), *wa = copy_array(w, nw, 1), *dya = copy_array(dy, ny, 1);
    float *y = check_rand_array(ny), *dx = (float *)calloc((size_t)nx, sizeof(float)), *dw = (float *)calloc((size_t)nw, sizeof(float));
    float *y2 = check_rand_array(ny), *dx2 = (float *)calloc((size_t)nx, sizeof(float)), *dw2 = (float *)calloc((size_t)nw, sizeof(float));
    float *yb = check_rand_array(ny), *dxb = (float *)calloc((size_t)nx, sizeof(float)), *dwb = (float *)calloc((size_t)nw, sizeof(float));
    float *yf = check_rand_array(ny), *dxf = (float *)calloc((size_t)nx, sizeof(float)), *dwf = (float *)calloc((size_t)nw, sizeof(float));
    float *by = check_rand_array(ny), *bdx = (float *)calloc((size_t)nx, sizeof(float)), *bdw = (float *)calloc((size_t)nw, sizeof(float));
    const int64_t KD = s.IC * s.KH * s.KW;
    higan_arena arena;
    char label[220];
    int way, keep = higan_get_num_threads();
    higan_arena_init(&arena, higan_conv2d_scratch_bytes(&s) + 4096);
    /* references: bf16-rounded operands (tight), fp32, and the bounds sum |a b| */
    higan_conv2d_forward_ref(yb, xr, wr, b, &s);
    higan_conv2d_backward_ref(dxb, dwb, NULL, dyr, xr, wr, &s);
    higan_conv2d_forward_ref(yf, x, w, b, &s);
    higan_conv2d_backward_ref(dxf, dwf, NULL, dy, x, w, &s);
    higan_conv2d_forward_ref(by, xa, wa, NULL, &s);
    higan_conv2d_backward_ref(bdx, bdw, NULL, dya, xa, wa, &s);
    for (way = 0; way <= 2; ++way) {
        if (way > 0 && higan_cpu_level() == HIGAN_CPU_SCALAR) break;   /* packed GEMM only */
        higan__conv_force = way;
        higan_set_precision(HIGAN_PRECISION_BF16);
        memset(dx, 0, sizeof(float) * (size_t)nx); memset(dw, 0, sizeof(float) * (size_t)nw);
        memset(dx2, 0, sizeof(float) * (size_t)nx); memset(dw2, 0, sizeof(float) * (size_t)nw);
        higan_set_num_threads(1);
        higan_conv2d_forward(y, x, w, b, &s, &arena);
        higan_conv2d_backward(dx, dw, NULL, dy, x, w, &s, &arena);
        higan_set_num_threads(2);
        higan_conv2d_forward(y2, x, w, b, &s, &arena);
        higan_conv2d_backward(dx2, dw2, NULL, dy, x, w, &s, &arena);
        higan_set_num_threads(keep);
        higan_set_precision(HIGAN_PRECISION_FP32);
        snprintf(label, sizeof label, "%s [%s] bf16 %s y vs bf16-operand loops", lvl(), way_name(way), name);
        check_close(label, y, yb, ny, 2e-6f * (float)KD + 1e-5f, 1e-5f);
        snprintf(label, sizeof label, "%s [%s] bf16 %s dx vs bf16-operand loops", lvl(), way_name(way), name);
        check_close(label, dx, dxb, nx, 2e-6f * (float)(s.OC * s.KH * s.KW) + 1e-5f, 1e-5f);
        snprintf(label, sizeof label, "%s [%s] bf16 %s dw vs bf16-operand loops", lvl(), way_name(way), name);
        check_close(label, dw, dwb, nw, 2e-6f * (float)(s.N * OH * OW) + 1e-5f, 1e-5f);
        snprintf(label, sizeof label, "%s [%s] bf16 %s y", lvl(), way_name(way), name);
        check_bound(label, y, yf, by, ny, 2e-6f * (float)KD + 1e-5f);
        snprintf(label, sizeof label, "%s [%s] bf16 %s dx", lvl(), way_name(way), name);
        check_bound(label, dx, dxf, bdx, nx, 2e-6f * (float)(s.OC * s.KH * s.KW) + 1e-5f);
        snprintf(label, sizeof label, "%s [%s] bf16 %s dw", lvl(), way_name(way), name);
        check_bound(label, dw, dwf, bdw, nw, 2e-6f * (float)(s.N * OH * OW) + 1e-5f);
        CHECK(!memcmp(y, y2, sizeof(float) * (size_t)ny) && !memcmp(dx, dx2, sizeof(float) * (size_t)nx) &&
              !memcmp(dw, dw2, sizeof(float) * (size_t)nw), "%s [%s] bf16 %s: 1 and 2 threads bit-identical",
              lvl(), way_name(way), name);
    }
    higan__conv_force = -1;
    higan_arena_free(&arena);
    free(x); free(w); free(b); free(dy); free(xr); free(wr); free(dyr); free(xa); free(wa); free(dya);
    free(y); free(dx); free(dw); free(y2); free(dx2); free(dw2); free(yb); free(dxb); free(dwb);
    free(yf); free(dxf); free(dwf); free(by); free(bdx); free(bdw);
}
static void convs(void) {
    conv_case("3x3 p1 40->35 11x13", higan_conv2d_make_shape(2, 40, 11, 13, 35, 3, 3, 1, 1, 1, 1, 1, 1));
    conv_case("3x3 p1 24->80 7x21", higan_conv2d_make_shape(2, 24, 7, 21, 80, 3, 3, 1, 1, 1, 1, 1, 1));
    conv_case("3x3 p1 3->1 9x37", higan_conv2d_make_shape(3, 3, 9, 37, 1, 3, 3, 1, 1, 1, 1, 1, 1));
    conv_case("3x3 p1 5->4 8x33", higan_conv2d_make_shape(2, 5, 8, 33, 4, 3, 3, 1, 1, 1, 1, 1, 1));
    conv_case("3x3 p0 20->17 5x19", higan_conv2d_make_shape(2, 20, 5, 19, 17, 3, 3, 1, 1, 0, 0, 0, 0));
    conv_case("3x3 asym (0,2,2,1) 16->20 9x23", higan_conv2d_make_shape(2, 16, 9, 23, 20, 3, 3, 1, 1, 0, 2, 2, 1));
    conv_case("5x5 s2 p2 18->16 13x29", higan_conv2d_make_shape(2, 18, 13, 29, 16, 5, 5, 2, 2, 2, 2, 2, 2));
    conv_case("1x1 48->33 6x20", higan_conv2d_make_shape(2, 48, 6, 20, 33, 1, 1, 1, 1, 0, 0, 0, 0));
    conv_case("3x3 p1 64->20 36x130 (row chunks)", higan_conv2d_make_shape(1, 64, 36, 130, 20, 3, 3, 1, 1, 1, 1, 1, 1));
}

/* linear (and so the LSTM gates, both higan_gemm) in bf16 against the rounded-operand loop */
static void linear_bf16(void) {
    const int64_t N = 9, IN = 70, OUT = 33;
    float *x = check_rand_array(N * IN), *w = check_rand_array(OUT * IN), *b = check_rand_array(OUT), *y = check_rand_array(N * OUT);
    float *r = check_rand_array(N * OUT);
    int64_t i, j, k;
    char label[100];
    higan_set_precision(HIGAN_PRECISION_BF16);
    higan_linear_forward(y, x, w, b, N, IN, OUT);
    higan_set_precision(HIGAN_PRECISION_FP32);
    for (i = 0; i < N; ++i)
        for (j = 0; j < OUT; ++j) {
            double acc = 0;
            for (k = 0; k < IN; ++k) acc += (double)higan_bf16_round(x[i * IN + k]) * higan_bf16_round(w[j * IN + k]);
            r[i * OUT + j] = (float)(acc + b[j]);
        }
    snprintf(label, sizeof label, "%s bf16 linear vs bf16-operand loop", lvl());
    check_close(label, y, r, N * OUT, 1e-4f, 1e-5f);
    free(x); free(w); free(b); free(y); free(r);
}

/* ---- (e) networks --------------------------------------------------------------------------- */
typedef struct { float *data; int64_t n; } out_copy;
static out_copy keep_out(const higan_var *v) {
    out_copy o;
    o.n = v ? higan_var_numel(v) : 0;
    o.data = copy_array(v ? v->data : NULL, o.n, 0);
    return o;
}
/* runs the four networks once; outs[0..3] */
static int run_nets(higan_model *m, higan_tape *t, const float *img, const float *z, out_copy *outs) {
    static const int labels[2 * 4] = {8, 15, 22, 3, 40, 41, 42, 0}, lens[2] = {4, 3};
    static const int xl[2] = {128, 96}, yl[2] = {4, 3};
    int64_t xs[4] = {2, 1, 64, 128}, zs[2];
    higan_var *x, *zv, *o;
    int i;
    zs[0] = 2; zs[1] = m->cfg.G.style_dim;
    for (i = 0; i < 4; ++i) {
        higan_tape_reset(t);
        higan_no_grad_begin(t);
        x = higan_var_new(t, 4, xs);
        memcpy(x->data, img, sizeof(float) * 2 * 64 * 128);
        if (i == 0) {
            zv = higan_var_new(t, 2, zs);
            memcpy(zv->data, z, sizeof(float) * (size_t)(2 * m->cfg.G.style_dim));
            o = higan_generator_forward(t, &m->G, zv, labels, lens, 4, 0);
        } else if (i == 1) {
            o = higan_discriminator_forward(t, &m->D, x, xl, yl, 0);
        } else if (i == 2) {
            o = higan_style_backbone_forward(t, &m->B, x, 0, NULL, NULL);
        } else {
            o = higan_recognizer_forward(t, &m->R, x, xl, 0, NULL);
        }
        higan_no_grad_end(t);
        if (!o) return 0;
        outs[i] = keep_out(o);
    }
    return 1;
}
static void networks(void) {
    static const char *names[4] = {"Generator", "Discriminator", "StyleBackbone", "Recognizer"};
    /* bound on ||bf16 - fp32|| / ||fp32||: measured 0.001 .. 0.004 on this machine (each
       GEMM adds relative errors of about 2^-8 per operand, partly averaging out over K, and
       they compound over the layers); 0.02 leaves room for other seeds and levels, while a
       kernel error (a lost pair, a wrong rounding) shows as 0.1 .. 1 */
    const double bound = 0.02;
    higan_model_config cfg = higan_model_default_config(HIGAN_NETS_ALL);
    higan_model m;
    higan_arena arena;
    higan_tape tape;
    out_copy f[4], h[4];
    float *img = check_rand_array(2 * 64 * 128), *z;
    int i;
    cfg.G.ch = 8; cfg.G.style_dim = 16; cfg.G.embed_dim = 16;
    cfg.D.ch = 8; cfg.P.ch = 4;
    cfg.B.resolution = 8; cfg.B.max_dim = 64;
    cfg.R.cnn.resolution = 8; cfg.R.cnn.max_dim = 64;
    cfg.n_writer = 10;
    if (higan_model_init(&m, &cfg, 11) != HIGAN_OK) { CHECK(0, "init small model: %s", higan_last_error()); free(img); return; }
    z = check_rand_array(2 * cfg.G.style_dim);
    higan_arena_init(&arena, (size_t)256 << 20);
    higan_tape_init(&tape, &arena, 1 << 14);
    higan_set_precision(HIGAN_PRECISION_FP32);
    if (!run_nets(&m, &tape, img, z, f)) CHECK(0, "fp32 networks: %s", higan_last_error());
    else {
        higan_set_precision(HIGAN_PRECISION_BF16);
        if (!run_nets(&m, &tape, img, z, h)) CHECK(0, "bf16 networks: %s", higan_last_error());
        else
            for (i = 0; i < 4; ++i) {
                double num = 0, den = 0, mx = 0;
                int64_t k;
                for (k = 0; k < f[i].n; ++k) {
                    double d = (double)h[i].data[k] - f[i].data[k];
                    num += d * d; den += (double)f[i].data[k] * f[i].data[k];
                    if (fabs(d) > mx) mx = fabs(d);
                }
                CHECK(h[i].n == f[i].n && den > 0 && sqrt(num / den) < bound,
                      "%s %s: bf16 vs fp32 output relative L2 difference %.4f (max |diff| %.3g) < %.2f",
                      lvl(), names[i], den > 0 ? sqrt(num / den) : -1.0, mx, bound);
                free(h[i].data);
            }
        for (i = 0; i < 4; ++i) free(f[i].data);
    }
    higan_set_precision(HIGAN_PRECISION_FP32);
    higan_tape_free(&tape);
    higan_arena_free(&arena);
    higan_model_free(&m);
    free(img); free(z);
}

int main(void) {
    check_rng_state = 4242ull;                 /* the sequence this file always used */
    higan_cpu best = higan_cpu_level();
    int lv;
    printf("CPU level at start: %s (detected: %s)\n", lvl(), higan_cpu_level_name(higan_cpu_detect()));
    rounding();
    precision_setting();
    for (lv = HIGAN_CPU_SCALAR; lv <= HIGAN_CPU_AMX; ++lv) {
        if (getenv("HIGAN_CPU") && *getenv("HIGAN_CPU") && lv != (int)best) continue;
        if (higan_cpu_set_level((higan_cpu)lv) != HIGAN_OK) {
            printf("skip level %s: %s\n", higan_cpu_level_name((higan_cpu)lv), higan_last_error());
            continue;
        }
        gemms();
        convs();
        linear_bf16();
        networks();
    }
    higan_cpu_set_level(best);
    higan_set_precision(HIGAN_PRECISION_FP32);
    higan_gemm_free_buffers();
    return check_finish();
}
