/* test_gemm: higan_gemm at every CPU level this machine has, against higan_gemm_ref, on odd
   shapes (tiles, K blocks and N blocks not filled), all transposes, several alpha/beta and
   padded leading dimensions; beta == 0 never reads C; 1 and 2 threads give identical bits. */
#define HIGAN_IMPLEMENTATION
#include "higan.h"
#include "check.h"


typedef struct { int64_t M, N, K; } shape3;

/* One product at the current level against the reference. pad: extra leading-dim columns. */
static void check_one(int ta, int tb, int64_t M, int64_t N, int64_t K, float alpha, float beta, int64_t pad) {
    int64_t lda = (ta ? M : K) + pad, ldb = (tb ? K : N) + pad, ldc = N + pad;
    int64_t arows = ta ? K : M, brows = tb ? N : K, i, j;
    float *A = check_rand_array(arows * lda), *B = check_rand_array(brows * ldb);
    float *C = check_rand_array(M * ldc), *R = (float *)malloc(sizeof(float) * (size_t)(M * ldc + 1));
    float *got = (float *)malloc(sizeof(float) * (size_t)(M * N + 1)), *ref = (float *)malloc(sizeof(float) * (size_t)(M * N + 1));
    char name[200];
    int pad_ok = 1;
    if (beta == 0.0f)   /* C must not be read: NaNs would leak into the result */
        for (i = 0; i < M * ldc; ++i) C[i] = NAN;
    memcpy(R, C, sizeof(float) * (size_t)(M * ldc));
    higan_gemm(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
    higan_gemm_ref(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, R, ldc);
    for (i = 0; i < M; ++i)
        for (j = 0; j < N; ++j) { got[i * N + j] = C[i * ldc + j]; ref[i * N + j] = R[i * ldc + j]; }
    /* the padding columns of C are never written */
    for (i = 0; i < M; ++i)
        for (j = N; j < ldc; ++j)
            if (memcmp(&C[i * ldc + j], &R[i * ldc + j], sizeof(float))) pad_ok = 0;
    snprintf(name, sizeof name, "%s gemm %c%c M=%lld N=%lld K=%lld alpha=%g beta=%g pad=%lld",
             higan_cpu_level_name(higan_cpu_level()), ta ? 'T' : 'N', tb ? 'T' : 'N', (long long)M,
             (long long)N, (long long)K, alpha, beta, (long long)pad);
    /* fp32 sums of K products of values in [-1, 1]: error grows with K */
    check_close(name, got, ref, M * N, 1e-5f + 4e-7f * (float)K * (alpha < 0 ? -alpha : alpha), 1e-5f);
    if (pad > 0) CHECK(pad_ok, "%s: padding of C untouched", name);
    free(A); free(B); free(C); free(R); free(got); free(ref);
}

/* Same product on 1 and 2 threads: identical bits. */
static void check_threads(int ta, int tb, int64_t M, int64_t N, int64_t K) {
    int64_t lda = ta ? M : K, ldb = tb ? K : N;
    float *A = check_rand_array(M * K), *B = check_rand_array(K * N), *C0 = check_rand_array(M * N);
    float *C1 = (float *)malloc(sizeof(float) * (size_t)(M * N)), *C2 = (float *)malloc(sizeof(float) * (size_t)(M * N));
    int keep = higan_get_num_threads();
    memcpy(C1, C0, sizeof(float) * (size_t)(M * N));
    memcpy(C2, C0, sizeof(float) * (size_t)(M * N));
    higan_set_num_threads(1);
    higan_gemm(ta, tb, M, N, K, 0.75f, A, lda, B, ldb, 0.5f, C1, N);
    higan_set_num_threads(2);
    higan_gemm(ta, tb, M, N, K, 0.75f, A, lda, B, ldb, 0.5f, C2, N);
    higan_set_num_threads(keep);
    CHECK(!memcmp(C1, C2, sizeof(float) * (size_t)(M * N)),
          "%s gemm %c%c %lldx%lldx%lld: 1 and 2 threads bit-identical", higan_cpu_level_name(higan_cpu_level()),
          ta ? 'T' : 'N', tb ? 'T' : 'N', (long long)M, (long long)N, (long long)K);
    free(A); free(B); free(C0); free(C1); free(C2);
}

int main(void) {
    check_rng_state = 12345ull;                 /* the sequence this file always used */
    static const shape3 shapes[] = {
        {1, 1, 1}, {2, 3, 5}, {1, 37, 9}, {29, 1, 11}, {7, 15, 3}, {13, 17, 19}, {31, 33, 29},
        {6, 64, 8}, {14, 32, 16}, {64, 64, 64}, {65, 65, 65}, {97, 130, 300}, {15, 33, 513},
        {45, 1100, 70}, {400, 70, 37}, {1100, 20, 9}, {5, 2100, 7}   /* M > mc, N > nc */
    };
    static const float ab[][2] = {{1.0f, 0.0f}, {0.5f, 1.0f}, {-1.5f, 0.25f}, {2.0f, -1.0f}};
    const int nshapes = (int)(sizeof shapes / sizeof shapes[0]);
    higan_cpu best = higan_cpu_level();
    int lv, s, ta, tb, combo = 0;
    printf("CPU level at start: %s (detected: %s)\n", higan_cpu_level_name(best), higan_cpu_level_name(higan_cpu_detect()));
    for (lv = HIGAN_CPU_SCALAR; lv <= HIGAN_CPU_AMX; ++lv) {
        /* HIGAN_CPU=<level> in the environment: test only that level */
        if (getenv("HIGAN_CPU") && *getenv("HIGAN_CPU") && lv != (int)higan_cpu_level()) continue;
        if (higan_cpu_set_level((higan_cpu)lv) != HIGAN_OK) {
            printf("skip level %s: %s\n", higan_cpu_level_name((higan_cpu)lv), higan_last_error());
            continue;
        }
        for (s = 0; s < nshapes; ++s)
            for (ta = 0; ta < 2; ++ta)
                for (tb = 0; tb < 2; ++tb) {
                    const float *p = ab[combo++ % 4];
                    int64_t pad = (combo % 3 == 0) ? 3 : 0;
                    check_one(ta, tb, shapes[s].M, shapes[s].N, shapes[s].K, p[0], p[1], pad);
                }
        /* degenerate sizes: K = 0 gives beta*C; alpha = 0 ignores A and B */
        check_one(0, 0, 5, 7, 0, 1.0f, 0.5f, 0);
        check_one(0, 0, 5, 7, 0, 1.0f, 0.0f, 0);
        check_one(1, 1, 9, 4, 6, 0.0f, 2.0f, 1);
        for (ta = 0; ta < 2; ++ta)
            for (tb = 0; tb < 2; ++tb) check_threads(ta, tb, 203, 301, 517);
        check_threads(0, 0, 7, 2100, 300);   /* few rows: parallel over column tiles only */
    }
    higan_cpu_set_level(best);
    higan_gemm_free_buffers();
    {   /* the work counter the benchmarks use: 2*M*N*K per product */
        static float A[7 * 5], B[5 * 3], C[7 * 3];
        memset(A, 0, sizeof A); memset(B, 0, sizeof B);
        higan_gemm_flops_reset();
        higan_gemm(0, 0, 7, 3, 5, 1.0f, A, 5, B, 3, 0.0f, C, 3);
        higan_gemm(1, 1, 3, 7, 5, 1.0f, B, 3, A, 5, 0.0f, C, 7);
        CHECK(higan_gemm_flops() == 2u * 2 * 7 * 3 * 5, "flop counter: %llu after two 7x3x5 products",
              (unsigned long long)higan_gemm_flops());
        higan_gemm_flops_reset();
        CHECK(higan_gemm_flops() == 0, "flop counter reset");
    }
    return check_finish();
}
