/* gemm_bench: the fp32 peak of one core (a register-only FMA loop), higan_gemm on a large
   square-ish product, and conv2d forward / input-gradient (dgrad) / weight-gradient (wgrad) on
   the convolution shapes of the HiGAN+ networks (IAM size: 64 px high words, batch 8, widths
   up to 256; the patch discriminator sees hundreds of 32 x 32 patches; "small" rows are the
   narrow networks of configs/gan_small.cfg), each in GFLOP/s and % of the measured peak, with
   1 and 2 threads, in fp32 and in bf16 (higan_set_precision; against the vdpbf16ps peak where
   the CPU has AVX512_BF16). Each figure is the best (min time) of several runs: on a machine
   shared with other work the minimum is the least disturbed.

   Build and run: make build/bench_gemm_bench && ./build/bench_gemm_bench [options] [filter...]
     filter        only the conv shapes whose name contains one of these strings
     --reps N      runs per figure (default 5)
     --no-gemm     skip the square GEMM table
     --threads N   the second thread count (default 2; 0: one thread only)
     --pass P      only pass P (0 forward, 1 dgrad, 2 wgrad) of each shape (for profiling)
     --fp32, --bf16  only that precision (default both: HIGAN_PRECISION_FP32, then _BF16)
     --way W       force every convolution one way: 0 packed GEMM, 1 channel-vector direct,
                   2 pixel-vector direct (default: chosen per pass)
   HIGAN_CPU=avx2 (or scalar) benchmarks that level instead of the best one. */
#define _POSIX_C_SOURCE 199309L
#define HIGAN_IMPLEMENTATION
#include "higan.h"
#include <time.h>

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}
/* CPU time of the whole process (all threads): on a machine shared with other work it leaves
   out the time this process waited for a core, so flops / CPU time / peak (measured the same
   way) is the efficiency of the code itself. With OMP_WAIT_POLICY=passive idle threads sleep
   and are not counted, so the 2-thread figure does not see load imbalance: compare the
   wall-clock column for that. */
static double cpu_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Single-core fp32 peak: independent FMA chains that never touch memory. */
#ifdef HIGAN__X86_SIMD
#  ifdef HIGAN__GEMM_AVX512
__attribute__((target("avx512f"))) static float peak_avx512(int64_t iters) {
    __m512 a[12], m = _mm512_set1_ps(0.999999f), d = _mm512_set1_ps(1e-7f);
    int64_t it;
    int i;
    float out[16], s = 0;
    for (i = 0; i < 12; ++i) a[i] = _mm512_set1_ps((float)i);
    for (it = 0; it < iters; ++it)
        HIGAN__UNROLL for (i = 0; i < 12; ++i) a[i] = _mm512_fmadd_ps(a[i], m, d);
    for (i = 1; i < 12; ++i) a[0] = _mm512_add_ps(a[0], a[i]);
    _mm512_storeu_ps(out, a[0]);
    for (i = 0; i < 16; ++i) s += out[i];
    return s;
}
#  endif
__attribute__((target("avx2,fma"))) static float peak_avx2(int64_t iters) {
    __m256 a[12], m = _mm256_set1_ps(0.999999f), d = _mm256_set1_ps(1e-7f);
    int64_t it;
    int i;
    float out[8], s = 0;
    for (i = 0; i < 12; ++i) a[i] = _mm256_set1_ps((float)i);
    for (it = 0; it < iters; ++it)
        HIGAN__UNROLL for (i = 0; i < 12; ++i) a[i] = _mm256_fmadd_ps(a[i], m, d);
    for (i = 1; i < 12; ++i) a[0] = _mm256_add_ps(a[0], a[i]);
    _mm256_storeu_ps(out, a[0]);
    for (i = 0; i < 8; ++i) s += out[i];
    return s;
}
#endif
#ifdef HIGAN__BF16_KERNELS
/* bf16 peak: vdpbf16ps adds 2 products per fp32 lane (4 flops), 12 independent chains */
HIGAN__TGT_bf16 static float peak_bf16(int64_t iters) {
    __m512 a[12];
    const __m512bh m = (__m512bh)_mm512_set1_ps(1e-3f), d = (__m512bh)_mm512_set1_ps(1e-3f);
    int64_t it;
    int i;
    float out[16], s = 0;
    for (i = 0; i < 12; ++i) a[i] = _mm512_set1_ps((float)i);
    for (it = 0; it < iters; ++it)
        HIGAN__UNROLL for (i = 0; i < 12; ++i) a[i] = _mm512_dpbf16_ps(a[i], m, d);
    for (i = 1; i < 12; ++i) a[0] = _mm512_add_ps(a[0], a[i]);
    _mm512_storeu_ps(out, a[0]);
    for (i = 0; i < 16; ++i) s += out[i];
    return s;
}
#endif
static volatile float sink;
static int reps = 5;

/* Runs fn reps times after a warm-up: best wall-clock and best CPU time, as GFLOP/s. */
typedef void (*work_fn)(void *ctx);
static void timeit(work_fn fn, void *ctx, double flops, double *gf_wall, double *gf_cpu) {
    double bw = 1e30, bc = 1e30;
    int r;
    for (r = -1; r < reps; ++r) {
        double t0 = now(), c0 = cpu_now(), t, c;
        fn(ctx);
        t = now() - t0;
        c = cpu_now() - c0;
        if (r < 0) continue;
        if (t < bw) bw = t;
        if (c < bc) bc = c;
    }
    *gf_wall = flops / bw * 1e-9;
    *gf_cpu = flops / (bc > 0 ? bc : bw) * 1e-9;
}

/* fp32 peak of one core at this level: GFLOP/s per CPU-second of a register-only FMA loop
   (0 for scalar) */
typedef struct { higan_cpu level; int64_t iters; int bf16; } peak_ctx;
static void peak_run(void *p) {
    const peak_ctx *c = (const peak_ctx *)p;
#ifdef HIGAN__BF16_KERNELS
    if (c->bf16) { sink = peak_bf16(c->iters); return; }
#endif
#ifdef HIGAN__X86_SIMD
#  ifdef HIGAN__GEMM_AVX512
    if (c->level >= HIGAN_CPU_AVX512) { sink = peak_avx512(c->iters); return; }
#  endif
    sink = peak_avx2(c->iters);
#else
    (void)c;
#endif
}
/* bf16: the vdpbf16ps rate (levels with AVX512_BF16), else the fp32 one */
static double measure_peak(higan_cpu level, int bf16) {
    peak_ctx c;
    double w, g;
    int keep = reps, lanes = level >= HIGAN_CPU_AVX512 ? 16 : 8;
    if (level == HIGAN_CPU_SCALAR) return 0;
    c.level = level; c.iters = 2000000;
    c.bf16 = bf16 && level >= HIGAN_CPU_AVX512BF16;
    reps = 15;
    timeit(peak_run, &c, (c.bf16 ? 4.0 : 2.0) * 12 * lanes * (double)c.iters, &w, &g);
    reps = keep;
    return g;
}

typedef struct { int64_t M, N, K; const float *A, *B; float *C; } gemm_ctx;
static void gemm_run(void *p) {
    const gemm_ctx *g = (const gemm_ctx *)p;
    higan_gemm(0, 0, g->M, g->N, g->K, 1.0f, g->A, g->K, g->B, g->N, 0.0f, g->C, g->N);
}

typedef struct {
    const char *name;
    int64_t N, IC, H, W, OC, K, stride, pad;
} conv_case;
/* The HiGAN+ shapes (see the GAN TRAINING section): P = PatchDiscriminator on 32 x 32 patches
   (N here is fewer patches than a real step has: the rate does not depend on it), D =
   Discriminator on 64 x 256 words (N = 8; 24 when it sees three kinds of fakes), G =
   Generator, B/R = StyleBackbone / Recognizer CNN; "s" rows: configs/gan_small.cfg. */
static const conv_case cases[] = {
    {"P 64-64 32x32", 64, 64, 32, 32, 64, 3, 1, 1},
    {"P 64-128 16x16", 64, 64, 16, 16, 128, 3, 1, 1},
    {"P 128-128 16x16", 64, 128, 16, 16, 128, 3, 1, 1},
    {"P 128-256 8x8", 64, 128, 8, 8, 256, 3, 1, 1},
    {"P 256-256 8x8", 64, 256, 8, 8, 256, 3, 1, 1},
    {"P 256-256 4x4", 128, 256, 4, 4, 256, 3, 1, 1},
    {"P 1-64 32x32", 256, 1, 32, 32, 64, 3, 1, 1},
    {"P 64-128 1x1 16x16", 64, 64, 16, 16, 128, 1, 1, 0},
    {"D 1-64 64x256", 8, 1, 64, 256, 64, 3, 1, 1},
    {"D 64-64 64x256", 8, 64, 64, 256, 64, 3, 1, 1},
    {"D 128-128 32x128", 8, 128, 32, 128, 128, 3, 1, 1},
    {"D 256-256 16x64", 8, 256, 16, 64, 256, 3, 1, 1},
    {"D 256-256 8x32", 8, 256, 8, 32, 256, 3, 1, 1},
    {"G 512-256 8x32", 8, 512, 8, 32, 256, 3, 1, 1},
    {"G 128-64 32x128", 8, 128, 32, 128, 64, 3, 1, 1},
    {"G 64-1 64x256", 8, 64, 64, 256, 1, 3, 1, 1},
    {"B 1-16 5x5s2 68x260", 8, 1, 68, 260, 16, 5, 2, 0},
    {"B 16-16 32x128", 8, 16, 32, 128, 16, 3, 1, 1},
    {"B 32-32 16x64", 8, 32, 16, 64, 32, 3, 1, 1},
    {"B 256-256 3x18 p0", 8, 256, 3, 18, 256, 3, 1, 0},
    {"s P 4-4 32x32", 512, 4, 32, 32, 4, 3, 1, 1},
    {"s P 8-8 16x16", 512, 8, 16, 16, 8, 3, 1, 1},
    {"s P 16-16 8x8", 512, 16, 8, 8, 16, 3, 1, 1},
    {"s D 8-8 64x256", 24, 8, 64, 256, 8, 3, 1, 1},
    {"s G 16-16 64x256", 8, 16, 64, 256, 16, 3, 1, 1},
    {"s G 64-64 8x34", 8, 64, 8, 34, 64, 3, 1, 1},
};

/* pass 0: forward; 1: dgrad (dx only); 2: wgrad (dw only) */
typedef struct {
    const higan_conv2d_shape *s;
    int pass;
    const float *x, *w, *b;
    float *y, *dx, *dw;
    higan_arena *scratch;
} conv_ctx;
static void conv_run(void *p) {
    const conv_ctx *c = (const conv_ctx *)p;
    if (c->pass == 0) higan_conv2d_forward(c->y, c->x, c->w, c->b, c->s, c->scratch);
    else if (c->pass == 1) higan_conv2d_backward(c->dx, NULL, NULL, c->y, c->x, c->w, c->s, c->scratch);
    else higan_conv2d_backward(NULL, c->dw, NULL, c->y, c->x, c->w, c->s, c->scratch);
}

static int wanted(const char *name, int argc, char **argv) {
    int i, any = 0;
    for (i = 1; i < argc; ++i) {
        if (argv[i][0] == '-') continue;
        any = 1;
        if (strstr(name, argv[i])) return 1;
    }
    return !any;
}

int main(int argc, char **argv) {
    higan_cpu level = higan_cpu_level();
    int threads2 = 2, do_gemm = 1, only_pass = -1, precs = 3, prec, i, t, pass;
    double peak, peak_b;
    higan_arena scratch;
    higan_rng rng;
    for (i = 1; i < argc; ++i) {
        if (!strcmp(argv[i], "--reps") && i + 1 < argc) { reps = atoi(argv[i + 1]); argv[i + 1] = (char *)"-"; }
        else if (!strcmp(argv[i], "--threads") && i + 1 < argc) { threads2 = atoi(argv[i + 1]); argv[i + 1] = (char *)"-"; }
        else if (!strcmp(argv[i], "--pass") && i + 1 < argc) { only_pass = atoi(argv[i + 1]); argv[i + 1] = (char *)"-"; }
        else if (!strcmp(argv[i], "--no-gemm")) do_gemm = 0;
        else if (!strcmp(argv[i], "--way") && i + 1 < argc) { higan__conv_force = atoi(argv[i + 1]); argv[i + 1] = (char *)"-"; }
        else if (!strcmp(argv[i], "--fp32")) precs = 1;
        else if (!strcmp(argv[i], "--bf16")) precs = 2;
    }
    if (reps < 1) reps = 1;
    if (reps > 1000) reps = 1000;
    higan_rng_seed(&rng, 1);
    higan_set_num_threads(1);
    peak = measure_peak(level, 0);
    peak_b = measure_peak(level, 1);
    printf("higan gemm/conv bench: level %s; peak per core (register-only loop, per CPU second):\n"
           "fp32 FMA %.1f GFLOP/s, bf16 %s %.1f GFLOP/s\n"
           "best of %d runs; 'GF/s' = GFLOP/s of wall-clock time, '%%pk' = GFLOP per CPU second / the\n"
           "precision's peak (the %%pk of %d threads is per core busy: it does not see idle waits)\n",
           higan_cpu_level_name(level), peak, level >= HIGAN_CPU_AVX512BF16 ? "vdpbf16ps" : "(= fp32 FMA)",
           peak_b, reps, threads2);
    for (prec = 0; prec < 2; ++prec) {
    if (!(precs & (1 << prec))) continue;
    higan_set_precision(prec ? HIGAN_PRECISION_BF16 : HIGAN_PRECISION_FP32);
    peak = prec ? peak_b : measure_peak(level, 0);
    printf("\n==== precision %s ====\n", prec ? "bf16 (bf16 operands, fp32 sums)" : "fp32");
    if (do_gemm) {
        gemm_ctx g;
        double w1, c1, w2, c2;
        g.M = 256; g.K = 1152; g.N = 2048;
        g.A = (float *)malloc(sizeof(float) * (size_t)(g.M * g.K));
        g.B = (float *)malloc(sizeof(float) * (size_t)(g.K * g.N));
        g.C = (float *)malloc(sizeof(float) * (size_t)(g.M * g.N));
        higan_rng_fill_uniform(&rng, (float *)g.A, g.M * g.K, -1, 1);
        higan_rng_fill_uniform(&rng, (float *)g.B, g.K * g.N, -1, 1);
        higan_set_num_threads(1);
        timeit(gemm_run, &g, 2.0 * (double)(g.M * g.N * g.K), &w1, &c1);
        higan_set_num_threads(threads2 < 1 ? 1 : threads2);
        timeit(gemm_run, &g, 2.0 * (double)(g.M * g.N * g.K), &w2, &c2);
        printf("\ngemm C[%lld,%lld] = A[%lld,%lld] B: 1t %.1f GF/s %3.0f%%pk | %dt %.1f GF/s %3.0f%%pk\n",
               (long long)g.M, (long long)g.N, (long long)g.M, (long long)g.K, w1,
               peak > 0 ? 100 * c1 / peak : 0.0, threads2, w2, peak > 0 ? 100 * c2 / peak : 0.0);
        free((void *)g.A); free((void *)g.B); free(g.C);
    }
    printf("\nconv2d (N input-channels -> output-channels, H x W; GFLOP of one pass)\n");
    printf("%-22s %6s |%-12s|%-12s|%-12s|%-12s|%-12s|%-12s\n", "shape", "GFLOP", " fwd 1t",
           " dgrad 1t", " wgrad 1t", " fwd 2t", " dgrad 2t", " wgrad 2t");
    higan_arena_init(&scratch, (size_t)64 << 20);
    for (i = 0; i < (int)(sizeof cases / sizeof cases[0]); ++i) {
        const conv_case *c = &cases[i];
        higan_conv2d_shape s = higan_conv2d_make_shape(c->N, c->IC, c->H, c->W, c->OC, c->K, c->K,
                                                       c->stride, c->stride, c->pad, c->pad, c->pad, c->pad);
        int64_t xn = s.N * s.IC * s.H * s.W, wn = s.OC * s.IC * s.KH * s.KW;
        int64_t yn = s.N * s.OC * higan_conv2d_out_h(&s) * higan_conv2d_out_w(&s);
        double flops = 2.0 * (double)yn * (double)(s.IC * s.KH * s.KW), gw[2][3], gc[2][3];
        conv_ctx cc;
        if (!wanted(c->name, argc, argv)) continue;
        cc.s = &s; cc.scratch = &scratch;
        cc.x = (float *)malloc(sizeof(float) * (size_t)xn); cc.w = (float *)malloc(sizeof(float) * (size_t)wn);
        cc.b = (float *)calloc((size_t)s.OC, sizeof(float)); cc.y = (float *)malloc(sizeof(float) * (size_t)yn);
        cc.dx = (float *)calloc((size_t)xn, sizeof(float)); cc.dw = (float *)calloc((size_t)wn, sizeof(float));
        higan_rng_fill_uniform(&rng, (float *)cc.x, xn, -1, 1);
        higan_rng_fill_uniform(&rng, (float *)cc.w, wn, -0.1f, 0.1f);
        higan_rng_fill_uniform(&rng, cc.y, yn, -1, 1);
        if (higan_conv2d_scratch_bytes(&s) > scratch.capacity) {
            higan_arena_free(&scratch);
            higan_arena_init(&scratch, higan_conv2d_scratch_bytes(&s));
        }
        for (t = 0; t < 2; ++t) {
            higan_set_num_threads(t ? threads2 : 1);
            for (pass = 0; pass < 3; ++pass) {
                gw[t][pass] = gc[t][pass] = 0;
                if ((t && threads2 < 1) || (only_pass >= 0 && pass != only_pass)) continue;
                cc.pass = pass;
                timeit(conv_run, &cc, flops, &gw[t][pass], &gc[t][pass]);
            }
        }
        printf("%-22s %6.3f |", c->name, flops * 1e-9);
        for (t = 0; t < 2; ++t)
            for (pass = 0; pass < 3; ++pass)
                printf("%6.1f %3.0f%%|", gw[t][pass], peak > 0 ? 100 * gc[t][pass] / peak : 0.0);
        printf("\n");
        fflush(stdout);
        free((void *)cc.x); free((void *)cc.w); free((void *)cc.b); free(cc.y); free(cc.dx); free(cc.dw);
    }
    higan_arena_free(&scratch);
    }
    higan_set_precision(HIGAN_PRECISION_FP32);
    higan_gemm_free_buffers();
    return 0;
}
