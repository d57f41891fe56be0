/* gemm_bench: GFLOP/s of higan_gemm (M=256, K=1152, N=2048) and of a HiGAN+ conv2d (forward,
   and backward with dx, dw, db) at every CPU level this machine has, with 1 and 2 threads
   (median of several runs), next to a register-only FMA loop that measures this core's fp32
   peak.
   Build and run: make build/bench_gemm_bench && ./build/bench_gemm_bench */
#define _POSIX_C_SOURCE 199309L
#define HIGAN_IMPLEMENTATION
#include "higan.h"
#include <time.h>

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}
static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}
static double median(double *v, int n) {
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
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
static volatile float sink;
static double measure_peak(higan_cpu level) {
    double best = 0;
#ifdef HIGAN__X86_SIMD
    const int64_t iters = 20000000;
    int r;
    for (r = 0; r < 3; ++r) {
        double t0 = now(), t, gf;
        int lanes = 8;
#  ifdef HIGAN__GEMM_AVX512
        if (level == HIGAN_CPU_AVX512) { sink = peak_avx512(iters); lanes = 16; }
        else
#  endif
        sink = peak_avx2(iters);
        t = now() - t0;
        gf = 2.0 * 12 * lanes * (double)iters / t * 1e-9;
        if (gf > best) best = gf;
    }
#else
    (void)level;
#endif
    return best;
}

static double bench_gemm(int64_t M, int64_t N, int64_t K, const float *A, const float *B, float *C,
                         int reps) {
    double g[16];
    int r;
    higan_gemm(0, 0, M, N, K, 1.0f, A, K, B, N, 0.0f, C, N);   /* warm-up, grows the pack buffer */
    for (r = 0; r < reps; ++r) {
        double t0 = now();
        higan_gemm(0, 0, M, N, K, 1.0f, A, K, B, N, 0.0f, C, N);
        g[r] = 2.0 * (double)M * (double)N * (double)K / (now() - t0) * 1e-9;
    }
    return median(g, reps);
}

/* backward 0: forward; 1: backward with dx, dw and db (twice the forward's flops) */
static double bench_conv(const higan_conv2d_shape *s, const float *x, const float *w, const float *b,
                         float *y, float *dx, float *dw, float *db, higan_arena *scratch,
                         int backward, int reps) {
    double g[16], flops = 2.0 * (double)s->N * (double)s->OC * (double)(higan_conv2d_out_h(s) * higan_conv2d_out_w(s)) *
                          (double)(s->IC * s->KH * s->KW) * (backward ? 2.0 : 1.0);
    int r;
    for (r = -1; r < reps; ++r) {   /* r = -1: warm-up */
        double t0 = now();
        if (backward) higan_conv2d_backward(dx, dw, db, y, x, w, s, scratch);
        else higan_conv2d_forward(y, x, w, b, s, NULL);
        if (r >= 0) g[r] = flops / (now() - t0) * 1e-9;
    }
    return median(g, reps);
}

int main(void) {
    const int64_t M = 256, K = 1152, N = 2048;
    /* a HiGAN+ generator conv: 3x3 pad 1 on a 16 x 64 feature map, 128 -> 128 channels */
    higan_conv2d_shape cs = higan_conv2d_make_shape(8, 128, 16, 64, 128, 3, 3, 1, 1, 1, 1, 1, 1);
    int64_t xn = cs.N * cs.IC * cs.H * cs.W, wn = cs.OC * cs.IC * 9, yn = cs.N * cs.OC * cs.H * cs.W, i;
    float *A = (float *)malloc(sizeof(float) * (size_t)(M * K));
    float *B = (float *)malloc(sizeof(float) * (size_t)(K * N));
    float *C = (float *)malloc(sizeof(float) * (size_t)(M * N));
    float *x = (float *)malloc(sizeof(float) * (size_t)xn), *w = (float *)malloc(sizeof(float) * (size_t)wn);
    float *b = (float *)malloc(sizeof(float) * (size_t)cs.OC), *y = (float *)malloc(sizeof(float) * (size_t)yn);
    float *dx = (float *)calloc((size_t)xn, sizeof(float)), *dw = (float *)calloc((size_t)wn, sizeof(float));
    float *db = (float *)calloc((size_t)cs.OC, sizeof(float));
    higan_arena scratch;
    higan_rng rng;
    higan_cpu best = higan_cpu_detect();
    int lv, max_threads = higan_get_num_threads();
    higan_rng_seed(&rng, 1);
    higan_rng_fill_uniform(&rng, A, M * K, -1, 1);
    higan_rng_fill_uniform(&rng, B, K * N, -1, 1);
    higan_rng_fill_uniform(&rng, x, xn, -1, 1);
    higan_rng_fill_uniform(&rng, w, wn, -0.1f, 0.1f);
    for (i = 0; i < cs.OC; ++i) b[i] = 0.01f * (float)i;
    higan_arena_init(&scratch, higan_conv2d_scratch_bytes(&cs));
    printf("higan gemm bench: C[%lld,%lld] = A[%lld,%lld] B[%lld,%lld]; conv2d N=%lld %lld->%lld ch "
           "%lldx%lld 3x3 pad 1 (GFLOP/s, median)\n",
           (long long)M, (long long)N, (long long)M, (long long)K, (long long)K, (long long)N,
           (long long)cs.N, (long long)cs.IC, (long long)cs.OC, (long long)cs.H, (long long)cs.W);
    printf("%-7s %7s | %7s %7s | %7s %7s | %7s %7s | %s\n", "level", "peak/1c", "gemm 1t", "gemm 2t",
           "fwd 1t", "fwd 2t", "bwd 1t", "bwd 2t", "gemm 1t / peak");
    for (lv = HIGAN_CPU_SCALAR; lv <= (int)best; ++lv) {
        higan_cpu level = (higan_cpu)lv;
        int reps = level == HIGAN_CPU_SCALAR ? 3 : 9;
        double peak = level == HIGAN_CPU_SCALAR ? 0 : measure_peak(level);
        double g1, g2, c1, c2, d1, d2;
        higan_cpu_set_level(level);
        higan_set_num_threads(1);
        g1 = bench_gemm(M, N, K, A, B, C, reps);
        c1 = bench_conv(&cs, x, w, b, y, dx, dw, db, &scratch, 0, reps);
        d1 = bench_conv(&cs, x, w, b, y, dx, dw, db, &scratch, 1, reps);
        higan_set_num_threads(max_threads < 2 ? 2 : max_threads);
        g2 = bench_gemm(M, N, K, A, B, C, reps);
        c2 = bench_conv(&cs, x, w, b, y, dx, dw, db, &scratch, 0, reps);
        d2 = bench_conv(&cs, x, w, b, y, dx, dw, db, &scratch, 1, reps);
        if (peak > 0) printf("%-7s %7.1f | ", higan_cpu_level_name(level), peak);
        else printf("%-7s %7s | ", higan_cpu_level_name(level), "-");
        printf("%7.1f %7.1f | %7.1f %7.1f | %7.1f %7.1f | ", g1, g2, c1, c2, d1, d2);
        if (peak > 0) printf("%.0f%%\n", 100.0 * g1 / peak); else printf("-\n");
    }
    printf("(2t: %d threads; peak/1c: register-only FMA loop on one core; fwd/bwd: conv2d forward,\n"
           " backward with dx, dw, db; wall-clock medians, so a busy machine lowers the 2t columns)\n",
           max_threads < 2 ? 2 : max_threads);
    higan_arena_free(&scratch);
    free(A); free(B); free(C); free(x); free(w); free(b); free(y); free(dx); free(dw); free(db);
    higan_gemm_free_buffers();
    return 0;
}
