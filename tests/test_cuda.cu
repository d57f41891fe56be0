// test_cuda.cu - every CUDA op of higan_cuda.cuh against higan.h's CPU kernels.
//
// For each op: random inputs, the CPU reference (a higan.h raw kernel, or the _ref
// version where one exists) and the CUDA kernel run on the same data; the forward output
// and every gradient are compared with check_close. Backward gradients start from random
// values on both sides (so accumulation, +=, is checked) and some calls pass NULL
// gradients (skipped work). Without a CUDA device it prints "SKIP test_cuda: no CUDA
// device" and "RESULT 0 0" and exits 0; with HIGAN_REQUIRE_CUDA=1 (make test-cuda) a
// missing device is a failure.
//
// Built with -DHIGAN_CUDA_EMULATE (build/test_cuda_emu, part of make test where nvcc exists)
// the same tests run on the host through higan_cuda.cuh's emulation: the kernels' functors in
// host loops (one thread per block) and a host model of cuBLAS. That checks the index math,
// launch sequences and GEMM arguments without a GPU; it cannot check races, barriers, launch
// limits or cuBLAS itself, which only the real build on a GPU does.
//
// test_backend_generate runs the Generator through higan_cuda_backend's table (a tape on the
// device) against a CPU tape: generated words, and one train-mode forward and backward.
//
// Tolerances (|got - ref| <= atol + rtol |ref|), and why:
//   exact (0, 0)      copies, pooling, upsampling, permute, pad, relu, embedding, backward
//                     kernels that only add, Adam and dropout (explicit _rn intrinsics): the
//                     GPU does the same float operations in the same order; greedy CTC
//                     decoding and the cx loss's argmin / argmax indices (ints)
//   1e-6, 1e-5        other elementwise ops: nvcc contracts d + a * b into one FMA (one
//                     rounding instead of two), CUDA's expf / tanhf are within 2 ulp of glibc's
//   1e-5, 1e-4        reductions in double with another summation tree (norms, losses,
//                     batch norm, spectral norm, softmax)
//   1e-4, 1e-4        GEMM-based ops (cuBLAS sums K products in another order in fp32),
//                     CTC and LSTM gradients (long chains of exp/log in float)
//   2e-4, 2e-4        contextual loss gradients (1 / (rmin + 1e-5) amplifies the
//                     similarity GEMM's rounding)
//   2e-2, 2e-2        GEMM with TF32 enabled (10-bit mantissa inputs)
#include "cuda_check.h"

/* ---- GEMM ------------------------------------------------------------------------------ */
static void test_gemm(void) {
    int ta, tb, bi;
    for (ta = 0; ta < 2; ++ta)
        for (tb = 0; tb < 2; ++tb)
            for (bi = 0; bi < 2; ++bi) {
                const int64_t M = 37, N = 29, K = 53;
                const int64_t lda = (ta ? M : K) + 3, ldb = (tb ? K : N) + 2, ldc = N + 1;
                const float alpha = 0.75f, beta = bi ? 0.5f : 0.0f;
                float *A, *B, *C, *Cd;
                int64_t i, j;
                char name[96];
                fresh();
                A = hrand((ta ? K : M) * lda, -1, 1);
                B = hrand((tb ? N : K) * ldb, -1, 1);
                C = hrand(M * ldc, -1, 1);
                Cd = hcopy(C, M * ldc);
                if (beta == 0.0f)   // C must not be read: NaNs in the M x N block are overwritten
                    for (i = 0; i < M; ++i) for (j = 0; j < N; ++j) Cd[i * ldc + j] = NAN;
                float *dC = dup(Cd, M * ldc);
                higan_gemm_ref((int)ta, (int)tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
                ok(higan_cuda_gemm(&G, ta, tb, M, N, K, alpha, dup(A, (ta ? K : M) * lda), lda,
                                   dup(B, (tb ? N : K) * ldb), ldb, beta, dC, ldc), "gemm");
                snprintf(name, sizeof name, "gemm ta=%d tb=%d beta=%g (37x29x53, padded ld)", ta, tb, beta);
                cmp(name, dC, C, M * ldc, 1e-4f, 1e-4f);
            }
    for (bi = 0; bi < 2; ++bi) {   // K = 0: C = beta C
        float *C, *dC;
        fresh();
        C = hrand(20, -1, 1);
        dC = dup(C, 20);
        higan_gemm_ref(0, 0, 5, 4, 0, 1.0f, C, 1, C, 4, bi ? 0.5f : 0.0f, C, 4);
        ok(higan_cuda_gemm(&G, 0, 0, 5, 4, 0, 1.0f, dC, 1, dC, 4, bi ? 0.5f : 0.0f, dC, 4), "gemm K=0");
        cmp(bi ? "gemm K=0 beta 0.5" : "gemm K=0 beta 0", dC, C, 20, 0, 0);
    }
    {   // TF32: looser, and back to fp32 afterwards
        const int64_t M = 64, N = 48, K = 96;
        float *A, *B, *C, *dC;
        fresh();
        A = hrand(M * K, -1, 1); B = hrand(K * N, -1, 1); C = hnew(M * N);
        dC = dnew(M * N);
        higan_gemm_ref(0, 0, M, N, K, 1.0f, A, K, B, N, 0.0f, C, N);
        ok(higan_cuda_set_tf32(&G, 1), "tf32 on");
        ok(higan_cuda_gemm(&G, 0, 0, M, N, K, 1.0f, dup(A, M * K), K, dup(B, K * N), N, 0.0f, dC, N), "gemm tf32");
        ok(higan_cuda_set_tf32(&G, 0), "tf32 off");
        cmp("gemm with TF32 (64x48x96)", dC, C, M * N, 2e-2f, 2e-2f);
    }
}

/* ---- conv2d ---------------------------------------------------------------------------- */
static void conv_case(const char *label, higan_conv2d_shape s, int with_bias) {
    const int64_t OH = higan_conv2d_out_h(&s), OW = higan_conv2d_out_w(&s);
    const int64_t nx = s.N * s.IC * s.H * s.W, nw = s.OC * s.IC * s.KH * s.KW, ny = s.N * s.OC * OH * OW;
    float *x, *w, *b, *y, *dy, *dx, *dw, *db, *dx0, *dw0, *db0;
    float *d_x, *d_w, *d_y, *d_dy, *d_dx, *d_dw, *d_db;
    char name[160];
    fresh();
    x = hrand(nx, -1, 1); w = hrand(nw, -1, 1); b = with_bias ? hrand(s.OC, -1, 1) : NULL;
    y = hnew(ny);
    d_x = dup(x, nx); d_w = dup(w, nw); d_y = dnew(ny);
    higan_conv2d_forward_ref(y, x, w, b, &s);
    ok(higan_cuda_conv2d_forward(&G, d_y, d_x, d_w, dup(b, s.OC), &s, &DA), "conv2d forward");
    snprintf(name, sizeof name, "conv2d %s forward%s", label, with_bias ? "" : " (no bias)");
    cmp(name, d_y, y, ny, 1e-4f, 1e-4f);
    // backward: every gradient accumulates onto random values
    dy = hrand(ny, -1, 1);
    dx0 = hrand(nx, -1, 1); dw0 = hrand(nw, -1, 1); db0 = hrand(s.OC, -1, 1);
    dx = hcopy(dx0, nx); dw = hcopy(dw0, nw); db = hcopy(db0, s.OC);
    d_dy = dup(dy, ny); d_dx = dup(dx0, nx); d_dw = dup(dw0, nw); d_db = dup(db0, s.OC);
    higan_conv2d_backward_ref(dx, dw, db, dy, x, w, &s);
    ok(higan_cuda_conv2d_backward(&G, d_dx, d_dw, d_db, d_dy, d_x, d_w, &s, &DA), "conv2d backward");
    snprintf(name, sizeof name, "conv2d %s dx", label); cmp(name, d_dx, dx, nx, 1e-4f, 1e-4f);
    snprintf(name, sizeof name, "conv2d %s dw", label); cmp(name, d_dw, dw, nw, 1e-4f, 1e-4f);
    snprintf(name, sizeof name, "conv2d %s db", label); cmp(name, d_db, db, s.OC, 1e-4f, 1e-4f);
    // dw only (dx, db NULL: skipped)
    dw = hcopy(dw0, nw);
    d_dw = dup(dw0, nw);
    higan_conv2d_backward_ref(NULL, dw, NULL, dy, x, w, &s);
    ok(higan_cuda_conv2d_backward(&G, NULL, d_dw, NULL, d_dy, d_x, d_w, &s, &DA), "conv2d backward dw only");
    snprintf(name, sizeof name, "conv2d %s dw alone", label); cmp(name, d_dw, dw, nw, 1e-4f, 1e-4f);
}
static void test_conv(void) {
    higan_conv2d_shape s;
    size_t need;
    // 3x3 pad 1 (KD*P = 648: groups of 2 samples, 2 + 2 + 1)
    conv_case("3x3 s1 p1 N=5", higan_conv2d_make_shape(5, 2, 6, 6, 3, 3, 3, 1, 1, 1, 1, 1, 1), 1);
    conv_case("3x3 s1 p1 N=5", higan_conv2d_make_shape(5, 2, 6, 6, 3, 3, 3, 1, 1, 1, 1, 1, 1), 0);
    // 4x3 kernel, stride (2, 1), asymmetric padding (one sample per group)
    conv_case("4x3 s(2,1) pad(0,1,1,0)", higan_conv2d_make_shape(2, 3, 9, 11, 4, 4, 3, 2, 1, 0, 1, 1, 0), 1);
    // pointwise: the GEMM path without im2col
    conv_case("1x1 pointwise", higan_conv2d_make_shape(3, 4, 5, 7, 6, 1, 1, 1, 1, 0, 0, 0, 0), 1);
    // 1x1 with stride 2 goes through im2col
    conv_case("1x1 s2", higan_conv2d_make_shape(2, 3, 7, 8, 2, 1, 1, 2, 2, 0, 0, 0, 0), 1);
    // stride 2 with padding, bigger channels (several GEMM tiles)
    conv_case("3x3 s2 p1 IC=16 OC=24", higan_conv2d_make_shape(2, 16, 12, 10, 24, 3, 3, 2, 2, 1, 1, 1, 1), 1);
    // no scratch arena: a clear error, not a crash
    fresh();
    s = higan_conv2d_make_shape(1, 1, 4, 4, 1, 3, 3, 1, 1, 1, 1, 1, 1);
    CHECK(higan_cuda_conv2d_forward(&G, dnew(16), dnew(16), dnew(9), NULL, &s, NULL) == HIGAN_ERR_ARG,
          "conv2d forward without scratch: HIGAN_ERR_ARG (%s)", higan_last_error());
    need = higan_cuda_conv2d_scratch_bytes(&s);
    CHECK(need >= 9 * 16 * sizeof(float), "conv2d scratch bytes %zu cover one im2col block", need);
}

/* ---- linear ---------------------------------------------------------------------------- */
static void test_linear(void) {
    const int64_t N = 7, IN = 9, OUT = 5;
    int wb;
    for (wb = 0; wb < 2; ++wb) {
        float *x, *w, *b, *y, *dy, *dx, *dw, *db, *d_x, *d_w, *d_y, *d_dx, *d_dw, *d_db;
        fresh();
        x = hrand(N * IN, -1, 1); w = hrand(OUT * IN, -1, 1); b = wb ? hrand(OUT, -1, 1) : NULL;
        y = hnew(N * OUT);
        d_x = dup(x, N * IN); d_w = dup(w, OUT * IN); d_y = dnew(N * OUT);
        higan_linear_forward(y, x, w, b, N, IN, OUT);
        ok(higan_cuda_linear_forward(&G, d_y, d_x, d_w, dup(b, OUT), N, IN, OUT), "linear forward");
        cmp(wb ? "linear forward" : "linear forward (no bias)", d_y, y, N * OUT, 1e-5f, 1e-4f);
        dy = hrand(N * OUT, -1, 1);
        dx = hrand(N * IN, -1, 1); dw = hrand(OUT * IN, -1, 1); db = hrand(OUT, -1, 1);
        d_dx = dup(dx, N * IN); d_dw = dup(dw, OUT * IN); d_db = dup(db, OUT);
        higan_linear_backward(dx, dw, wb ? db : NULL, dy, x, w, N, IN, OUT);
        ok(higan_cuda_linear_backward(&G, d_dx, d_dw, wb ? d_db : NULL, dup(dy, N * OUT), d_x, d_w, N, IN, OUT),
           "linear backward");
        cmp("linear dx", d_dx, dx, N * IN, 1e-5f, 1e-4f);
        cmp("linear dw", d_dw, dw, OUT * IN, 1e-5f, 1e-4f);
        cmp(wb ? "linear db" : "linear db untouched (NULL)", d_db, db, OUT, 0, 0);
    }
}

/* ---- spectral norm --------------------------------------------------------------------- */
static void sn_case(int64_t out, int64_t in) {
    float *w = hrand(out * in, -1, 1), *u0 = hrand(out, -1, 1), *y = hnew(out * in), *u = hnew(out),
          *v = hnew(in), sigma, *dy, *dw;
    float *d_w = dup(w, out * in), *d_u0 = dup(u0, out), *d_y = dnew(out * in), *d_u = dnew(out),
          *d_v = dnew(in), *d_sigma = dnew(1), *d_dw;
    char name[96];
    higan_spectral_norm_forward(y, u, v, &sigma, w, u0, out, in, HIGAN_SN_EPS);
    ok(higan_cuda_spectral_norm_forward(&G, d_y, d_u, d_v, d_sigma, d_w, d_u0, out, in, HIGAN_SN_EPS), "sn forward");
    snprintf(name, sizeof name, "spectral norm %lldx%lld W/sigma", (long long)out, (long long)in);
    cmp(name, d_y, y, out * in, 1e-5f, 1e-4f);
    cmp("spectral norm u", d_u, u, out, 1e-5f, 1e-4f);
    cmp("spectral norm v", d_v, v, in, 1e-5f, 1e-4f);
    cmp("spectral norm sigma", d_sigma, &sigma, 1, 1e-5f, 1e-4f);
    // u aliasing u0 (the train step's in-place update), sigma only (y NULL)
    ok(higan_cuda_spectral_norm_forward(&G, NULL, d_u0, d_v, d_sigma, d_w, d_u0, out, in, HIGAN_SN_EPS),
       "sn forward in place");
    cmp("spectral norm u0 updated in place", d_u0, u, out, 1e-5f, 1e-4f);
    cmp("spectral norm sigma (y NULL)", d_sigma, &sigma, 1, 1e-5f, 1e-4f);
    dy = hrand(out * in, -1, 1); dw = hrand(out * in, -1, 1);
    d_dw = dup(dw, out * in);
    higan_spectral_norm_backward(dw, dy, w, u, v, sigma, out, in);
    ok(higan_cuda_spectral_norm_backward(&G, d_dw, dup(dy, out * in), d_w, d_u, d_v, d_sigma, out, in), "sn backward");
    cmp("spectral norm dW", d_dw, dw, out * in, 1e-5f, 1e-4f);
}
static void test_spectral_norm(void) {
    fresh(); sn_case(6, 10);
    fresh(); sn_case(64, 288);   // a conv weight [64, 32*3*3]: multi-thread reductions
}

/* ---- batch norm, conditional batch norm ------------------------------------------------- */
static void bn_case(int64_t N, int64_t C, int64_t HW, int cond, int affine, int batch_stats, int running) {
    const int64_t n = N * C * HW, np = cond ? N * C : C;
    float *x = hrand(n, -2, 3), *wt = affine ? hrand(np, -1, 1) : NULL, *bs = affine ? hrand(np, -1, 1) : NULL;
    float *rm = running ? hrand(C, -1, 1) : NULL, *rv = running ? hrand(C, 0.5f, 2) : NULL;
    float *y = hnew(n), *mean = hnew(C), *rstd = hnew(C);
    float *d_x = dup(x, n), *d_wt = dup(wt, np), *d_bs = dup(bs, np), *d_rm = dup(rm, C), *d_rv = dup(rv, C);
    float *d_y = dnew(n), *d_mean = dnew(C), *d_rstd = dnew(C);
    float *dy = hrand(n, -1, 1), *dx = hrand(n, -1, 1), *dwt = hrand(np, -1, 1), *dbs = hrand(np, -1, 1);
    float *d_dx = dup(dx, n), *d_dwt = dup(dwt, np), *d_dbs = dup(dbs, np);
    char tag[96], name[160];
    snprintf(tag, sizeof tag, "%s N=%lld C=%lld HW=%lld%s%s%s", cond ? "cbn" : "bn", (long long)N, (long long)C,
             (long long)HW, affine ? "" : " no-affine", batch_stats ? " train" : " eval", running ? "" : " no-running");
    if (cond) {
        higan_cond_batch_norm_forward(y, mean, rstd, x, wt, bs, rm, rv, 0.1f, 1e-5f, batch_stats, N, C, HW);
        ok(higan_cuda_cond_batch_norm_forward(&G, d_y, d_mean, d_rstd, d_x, d_wt, d_bs, d_rm, d_rv, 0.1f, 1e-5f,
                                              batch_stats, N, C, HW), "cbn forward");
    } else {
        higan_batch_norm2d_forward(y, mean, rstd, x, wt, bs, rm, rv, 0.1f, 1e-5f, batch_stats, N, C, HW);
        ok(higan_cuda_batch_norm2d_forward(&G, d_y, d_mean, d_rstd, d_x, d_wt, d_bs, d_rm, d_rv, 0.1f, 1e-5f,
                                           batch_stats, N, C, HW), "bn forward");
    }
    snprintf(name, sizeof name, "%s y", tag); cmp(name, d_y, y, n, 1e-5f, 1e-4f);
    snprintf(name, sizeof name, "%s mean", tag); cmp(name, d_mean, mean, C, 1e-5f, 1e-4f);
    snprintf(name, sizeof name, "%s rstd", tag); cmp(name, d_rstd, rstd, C, 1e-5f, 1e-4f);
    if (running) {
        snprintf(name, sizeof name, "%s running mean", tag); cmp(name, d_rm, rm, C, 1e-6f, 1e-5f);
        snprintf(name, sizeof name, "%s running var", tag); cmp(name, d_rv, rv, C, 1e-6f, 1e-5f);
    }
    if (cond) {
        higan_cond_batch_norm_backward(dx, dwt, dbs, dy, x, mean, rstd, wt, batch_stats, N, C, HW);
        ok(higan_cuda_cond_batch_norm_backward(&G, d_dx, d_dwt, d_dbs, dup(dy, n), d_x, d_mean, d_rstd, d_wt,
                                               batch_stats, N, C, HW), "cbn backward");
    } else {
        higan_batch_norm2d_backward(dx, affine ? dwt : NULL, affine ? dbs : NULL, dy, x, mean, rstd, wt,
                                    batch_stats, N, C, HW);
        ok(higan_cuda_batch_norm2d_backward(&G, d_dx, affine ? d_dwt : NULL, affine ? d_dbs : NULL, dup(dy, n),
                                            d_x, d_mean, d_rstd, d_wt, batch_stats, N, C, HW), "bn backward");
    }
    // the GPU backward used its own mean/rstd, the CPU its own: differences stay within tolerance
    snprintf(name, sizeof name, "%s dx", tag); cmp(name, d_dx, dx, n, 1e-4f, 1e-4f);
    if (affine) {
        snprintf(name, sizeof name, "%s d%s", tag, cond ? "gain" : "weight"); cmp(name, d_dwt, dwt, np, 1e-4f, 1e-4f);
        snprintf(name, sizeof name, "%s dbias", tag); cmp(name, d_dbs, dbs, np, 1e-4f, 1e-4f);
    }
}
static void test_batch_norm(void) {
    fresh(); bn_case(3, 5, 7, 0, 1, 1, 1);
    fresh(); bn_case(3, 5, 7, 0, 1, 0, 1);      // eval: running statistics
    fresh(); bn_case(4, 6, 1, 0, 0, 1, 0);      // [N, C] input, no affine, no running stats
    fresh(); bn_case(4, 3, 300, 0, 1, 1, 1);    // M = 1200 > one block of threads
    fresh(); bn_case(3, 5, 7, 1, 1, 1, 1);      // conditional
    fresh(); bn_case(3, 5, 7, 1, 1, 0, 1);
    fresh(); bn_case(2, 4, 513, 1, 1, 1, 0);
}

/* ---- embedding ------------------------------------------------------------------------- */
static void test_embedding(void) {
    const int64_t num = 7, D = 5, n_idx = 12;
    const int idx[12] = {3, 1, 2, 3, 6, 0, 3, 2, 5, 1, 4, 3};
    float *w, *y, *dy, *dw, *d_w, *d_y, *d_dw;
    int *d_idx;
    fresh();
    w = hrand(num * D, -1, 1); y = hnew(n_idx * D);
    d_w = dup(w, num * D); d_y = dnew(n_idx * D); d_idx = dupi(idx, n_idx);
    higan_embedding_forward(y, w, idx, n_idx, num, D);
    ok(higan_cuda_embedding_forward(&G, d_y, d_w, d_idx, n_idx, num, D), "embedding forward");
    cmp("embedding forward", d_y, y, n_idx * D, 0, 0);
    dy = hrand(n_idx * D, -1, 1); dw = hrand(num * D, -1, 1); d_dw = dup(dw, num * D);
    higan_embedding_backward(dw, dy, idx, n_idx, D, 2);
    ok(higan_cuda_embedding_backward(&G, d_dw, dup(dy, n_idx * D), d_idx, n_idx, num, D, 2), "embedding backward");
    cmp("embedding backward (repeats, padding_idx 2; same order: exact)", d_dw, dw, num * D, 0, 0);
    // renorm: rows scaled up so that some norms exceed max_norm
    {
        float *w3 = hrand(num * D, -2, 2), *d_w3 = dup(w3, num * D);
        higan_embedding_renorm(w3, idx, n_idx, num, D, 1.5f);
        ok(higan_cuda_embedding_renorm(&G, d_w3, d_idx, n_idx, num, D, 1.5f), "embedding renorm");
        cmp("embedding renorm (max_norm 1.5)", d_w3, w3, num * D, 1e-6f, 1e-6f);
    }
}

/* ---- shape ops -------------------------------------------------------------------------- */
static void test_upsample_pools_pad(void) {
    const int64_t N = 2, C = 3;
    {   // nearest upsampling by (2, 3)
        const int64_t H = 4, W = 5, n = N * C * H * W, m = n * 6;
        float *x, *y, *dy, *dx, *d_y, *d_dx;
        fresh();
        x = hrand(n, -1, 1); y = hnew(m); dy = hrand(m, -1, 1); dx = hrand(n, -1, 1);
        d_y = dnew(m); d_dx = dup(dx, n);
        higan_upsample_nearest_forward(y, x, N, C, H, W, 2, 3);
        ok(higan_cuda_upsample_nearest_forward(&G, d_y, dup(x, n), N, C, H, W, 2, 3), "upsample forward");
        cmp("upsample nearest (2,3) forward", d_y, y, m, 0, 0);
        higan_upsample_nearest_backward(dx, dy, N, C, H, W, 2, 3);
        ok(higan_cuda_upsample_nearest_backward(&G, d_dx, dup(dy, m), N, C, H, W, 2, 3), "upsample backward");
        cmp("upsample nearest backward (same order: exact)", d_dx, dx, n, 0, 0);
    }
    {   // 2x2 average pooling on odd sizes
        const int64_t H = 7, W = 9, n = N * C * H * W, m = N * C * 3 * 4;
        float *x, *y, *dy, *dx, *d_y, *d_dx;
        fresh();
        x = hrand(n, -1, 1); y = hnew(m); dy = hrand(m, -1, 1); dx = hrand(n, -1, 1);
        d_y = dnew(m); d_dx = dup(dx, n);
        higan_avg_pool2_forward(y, x, N, C, H, W);
        ok(higan_cuda_avg_pool2_forward(&G, d_y, dup(x, n), N, C, H, W), "avg pool forward");
        cmp("avg pool 2x2 forward (odd H, W)", d_y, y, m, 0, 0);
        higan_avg_pool2_backward(dx, dy, N, C, H, W);
        ok(higan_cuda_avg_pool2_backward(&G, d_dx, dup(dy, m), N, C, H, W), "avg pool backward");
        cmp("avg pool 2x2 backward", d_dx, dx, n, 0, 0);
    }
    {   // 3x3 stride 2 max pooling, values on a 0.5 grid: ties decide the argmax
        const int64_t H = 9, W = 12, Ho = 4, Wo = 5, n = N * C * H * W, m = N * C * Ho * Wo;
        float *x, *y, *dy, *dx, *d_y, *d_dx;
        int32_t *am, *d_am;
        int64_t i;
        fresh();
        x = hrand(n, -2, 2);
        for (i = 0; i < n; ++i) x[i] = floorf(x[i] * 2.0f) / 2.0f;
        y = hnew(m); dy = hrand(m, -1, 1); dx = hrand(n, -1, 1);
        am = (int32_t *)higan_arena_alloc(&HA, (size_t)m * sizeof(int32_t));
        d_y = dnew(m); d_dx = dup(dx, n); d_am = (int32_t *)dalloc((size_t)m * sizeof(int32_t));
        higan_max_pool3s2_forward(y, am, x, N, C, H, W);
        ok(higan_cuda_max_pool3s2_forward(&G, d_y, d_am, dup(x, n), N, C, H, W), "max pool forward");
        cmp("max pool 3x3 s2 forward (ties)", d_y, y, m, 0, 0);
        cmp_i32("max pool 3x3 s2 argmax (first max in window order)", d_am, am, m);
        higan_max_pool3s2_backward(dx, dy, am, N, C, H, W);
        ok(higan_cuda_max_pool3s2_backward(&G, d_dx, dup(dy, m), d_am, N, C, H, W), "max pool backward");
        cmp("max pool 3x3 s2 backward (overlapping windows, same order: exact)", d_dx, dx, n, 0, 0);
    }
    {   // padding, then cropping with negative amounts
        const int64_t H = 5, W = 6, n = N * C * H * W;
        int c;
        for (c = 0; c < 2; ++c) {
            const int top = c ? -1 : 1, bottom = 2, left = c ? 0 : 3, right = c ? -2 : 0;
            const int64_t m = N * C * (H + top + bottom) * (W + left + right);
            float *x, *y, *dy, *dx, *d_y, *d_dx;
            fresh();
            x = hrand(n, -1, 1); y = hnew(m); dy = hrand(m, -1, 1); dx = hrand(n, -1, 1);
            d_y = dnew(m); d_dx = dup(dx, n);
            higan_pad_forward(y, x, N, C, H, W, top, bottom, left, right, 0.5f);
            ok(higan_cuda_pad_forward(&G, d_y, dup(x, n), N, C, H, W, top, bottom, left, right, 0.5f), "pad forward");
            cmp(c ? "pad forward (-1, 2, 0, -2: crops)" : "pad forward (1, 2, 3, 0), value 0.5", d_y, y, m, 0, 0);
            higan_pad_backward(dx, dy, N, C, H, W, top, bottom, left, right);
            ok(higan_cuda_pad_backward(&G, d_dx, dup(dy, m), N, C, H, W, top, bottom, left, right), "pad backward");
            cmp(c ? "pad backward (crops)" : "pad backward", d_dx, dx, n, 0, 0);
        }
    }
}

static void test_activations(void) {
    const int64_t n = 1000;
    float *x, *y, *dy, *dx, *d_x, *d_y, *d_dy, *d_dx;
    int64_t i;
    fresh();
    x = hrand(n, -4, 4);
    for (i = 0; i < n; i += 17) x[i] = 0.0f;   // relu'(0) = 0
    d_x = dup(x, n); y = hnew(n); d_y = dnew(n); dy = hrand(n, -1, 1); d_dy = dup(dy, n);
    // relu
    higan_relu_forward(y, x, n);
    ok(higan_cuda_relu_forward(&G, d_y, d_x, n), "relu forward"); cmp("relu forward", d_y, y, n, 0, 0);
    dx = hrand(n, -1, 1); d_dx = dup(dx, n);
    higan_relu_backward(dx, dy, x, n);
    ok(higan_cuda_relu_backward(&G, d_dx, d_dy, d_x, n), "relu backward"); cmp("relu backward", d_dx, dx, n, 0, 0);
    // leaky relu
    higan_leaky_relu_forward(y, x, 0.2f, n);
    ok(higan_cuda_leaky_relu_forward(&G, d_y, d_x, 0.2f, n), "leaky forward");
    cmp("leaky relu forward", d_y, y, n, 0, 0);
    dx = hrand(n, -1, 1); d_dx = dup(dx, n);
    higan_leaky_relu_backward(dx, dy, x, 0.2f, n);
    ok(higan_cuda_leaky_relu_backward(&G, d_dx, d_dy, d_x, 0.2f, n), "leaky backward");
    cmp("leaky relu backward", d_dx, dx, n, 1e-6f, 1e-5f);   // dx + dy * slope may be one FMA
    // tanh (backward from y: the CPU's y, uploaded, so only the backward formula is compared)
    higan_tanh_forward(y, x, n);
    ok(higan_cuda_tanh_forward(&G, d_y, d_x, n), "tanh forward"); cmp("tanh forward", d_y, y, n, 1e-6f, 1e-5f);
    dx = hrand(n, -1, 1); d_dx = dup(dx, n);
    higan_tanh_backward(dx, dy, y, n);
    ok(higan_cuda_tanh_backward(&G, d_dx, d_dy, dup(y, n), n), "tanh backward");
    cmp("tanh backward", d_dx, dx, n, 1e-6f, 1e-5f);
    // sigmoid: no CPU raw kernel; the reference is higan's LSTM formula
    for (i = 0; i < n; ++i) y[i] = 1.0f / (1.0f + expf(-x[i]));
    ok(higan_cuda_sigmoid_forward(&G, d_y, d_x, n), "sigmoid forward"); cmp("sigmoid forward", d_y, y, n, 1e-6f, 1e-5f);
    dx = hrand(n, -1, 1); d_dx = dup(dx, n);
    {
        float *ref = hcopy(dx, n);
        for (i = 0; i < n; ++i) ref[i] += dy[i] * (y[i] * (1.0f - y[i]));
        ok(higan_cuda_sigmoid_backward(&G, d_dx, d_dy, dup(y, n), n), "sigmoid backward");
        cmp("sigmoid backward", d_dx, ref, n, 1e-6f, 1e-5f);
    }
    // exp
    higan_exp_forward(y, x, n);
    ok(higan_cuda_exp_forward(&G, d_y, d_x, n), "exp forward"); cmp("exp forward", d_y, y, n, 1e-6f, 1e-5f);
    dx = hrand(n, -1, 1); d_dx = dup(dx, n);
    higan_exp_backward(dx, dy, y, n);
    ok(higan_cuda_exp_backward(&G, d_dx, d_dy, dup(y, n), n), "exp backward");
    cmp("exp backward", d_dx, dx, n, 1e-6f, 1e-5f);
}

static void test_concat_slice_permute(void) {
    {   // concat of 3 along a middle dim; backward with one NULL gradient
        const int64_t outer = 4, inner = 5, sizes[3] = {2, 3, 1}, S = 6;
        const float *xs[3];
        const float *d_xs[3];
        float *dxs[3], *d_dxs[3], *y, *dy, *d_y, *d_dy;
        int i;
        fresh();
        for (i = 0; i < 3; ++i) { xs[i] = hrand(outer * sizes[i] * inner, -1, 1); d_xs[i] = dup(xs[i], outer * sizes[i] * inner); }
        y = hnew(outer * S * inner); d_y = dnew(outer * S * inner);
        higan_concat_forward(y, xs, sizes, 3, outer, inner);
        ok(higan_cuda_concat_forward(&G, d_y, d_xs, sizes, 3, outer, inner), "concat forward");
        cmp("concat forward", d_y, y, outer * S * inner, 0, 0);
        dy = hrand(outer * S * inner, -1, 1); d_dy = dup(dy, outer * S * inner);
        for (i = 0; i < 3; ++i) {
            dxs[i] = i == 1 ? NULL : hrand(outer * sizes[i] * inner, -1, 1);
            d_dxs[i] = i == 1 ? NULL : dup(dxs[i], outer * sizes[i] * inner);
        }
        higan_concat_backward(dxs, dy, sizes, 3, outer, inner);
        ok(higan_cuda_concat_backward(&G, d_dxs, d_dy, sizes, 3, outer, inner), "concat backward");
        cmp("concat backward input 0", d_dxs[0], dxs[0], outer * sizes[0] * inner, 0, 0);
        cmp("concat backward input 2 (input 1 NULL)", d_dxs[2], dxs[2], outer * sizes[2] * inner, 0, 0);
    }
    {   // slice
        const int64_t outer = 3, size = 7, inner = 4, start = 2, len = 3;
        float *x, *y, *dy, *dx, *d_y, *d_dx;
        fresh();
        x = hrand(outer * size * inner, -1, 1); y = hnew(outer * len * inner); d_y = dnew(outer * len * inner);
        higan_slice_forward(y, x, outer, size, inner, start, len);
        ok(higan_cuda_slice_forward(&G, d_y, dup(x, outer * size * inner), outer, size, inner, start, len), "slice forward");
        cmp("slice forward", d_y, y, outer * len * inner, 0, 0);
        dy = hrand(outer * len * inner, -1, 1); dx = hrand(outer * size * inner, -1, 1); d_dx = dup(dx, outer * size * inner);
        higan_slice_backward(dx, dy, outer, size, inner, start, len);
        ok(higan_cuda_slice_backward(&G, d_dx, dup(dy, outer * len * inner), outer, size, inner, start, len), "slice backward");
        cmp("slice backward", d_dx, dx, outer * size * inner, 0, 0);
    }
    {   // permute 4-D and 3-D
        const int64_t s4[4] = {2, 3, 4, 5}, s3[3] = {3, 4, 5};
        const int p4[4] = {0, 2, 3, 1}, p3[3] = {2, 0, 1};
        int c;
        for (c = 0; c < 2; ++c) {
            const int nd = c ? 3 : 4;
            const int64_t *sh = c ? s3 : s4;
            const int *pm = c ? p3 : p4;
            const int64_t n = c ? 60 : 120;
            float *x, *y, *dy, *dx, *d_y, *d_dx;
            fresh();
            x = hrand(n, -1, 1); y = hnew(n); d_y = dnew(n);
            higan_permute_forward(y, x, nd, sh, pm);
            ok(higan_cuda_permute_forward(&G, d_y, dup(x, n), nd, sh, pm), "permute forward");
            cmp(c ? "permute (2,0,1) forward" : "permute (0,2,3,1) forward", d_y, y, n, 0, 0);
            dy = hrand(n, -1, 1); dx = hrand(n, -1, 1); d_dx = dup(dx, n);
            higan_permute_backward(dx, dy, nd, sh, pm);
            ok(higan_cuda_permute_backward(&G, d_dx, dup(dy, n), nd, sh, pm), "permute backward");
            cmp(c ? "permute (2,0,1) backward" : "permute (0,2,3,1) backward", d_dx, dx, n, 0, 0);
        }
    }
}

static void test_masked_width_softmax_elementwise(void) {
    {   // masked width sum / mean; lens 0 and > W included
        const int64_t N = 3, C = 2, H = 4, W = 6, n = N * C * H * W;
        const int lens[3] = {6, 0, 9};
        int mean;
        for (mean = 0; mean < 2; ++mean) {
            float *x, *y, *dy, *dx, *d_y, *d_dx;
            int *d_lens;
            fresh();
            x = hrand(n, -1, 1); y = hnew(N * C); d_y = dnew(N * C); d_lens = dupi(lens, N);
            dy = hrand(N * C, -1, 1); dx = hrand(n, -1, 1); d_dx = dup(dx, n);
            if (mean) {
                higan_masked_mean_width_forward(y, x, lens, N, C, H, W, 1e-8f);
                ok(higan_cuda_masked_mean_width_forward(&G, d_y, dup(x, n), d_lens, N, C, H, W, 1e-8f), "masked mean");
                higan_masked_mean_width_backward(dx, dy, lens, N, C, H, W, 1e-8f);
                ok(higan_cuda_masked_mean_width_backward(&G, d_dx, dup(dy, N * C), d_lens, N, C, H, W, 1e-8f), "masked mean bwd");
            } else {
                higan_masked_sum_width_forward(y, x, lens, N, C, H, W);
                ok(higan_cuda_masked_sum_width_forward(&G, d_y, dup(x, n), d_lens, N, C, H, W), "masked sum");
                higan_masked_sum_width_backward(dx, dy, lens, N, C, H, W);
                ok(higan_cuda_masked_sum_width_backward(&G, d_dx, dup(dy, N * C), d_lens, N, C, H, W), "masked sum bwd");
            }
            cmp(mean ? "masked mean width forward" : "masked sum width forward", d_y, y, N * C, 1e-6f, 1e-5f);
            cmp(mean ? "masked mean width backward" : "masked sum width backward", d_dx, dx, n, 0, 0);
        }
    }
    {   // log-softmax, narrow and wide rows
        int c;
        for (c = 0; c < 2; ++c) {
            const int64_t rows = c ? 5 : 7, cols = c ? 300 : 13, n = rows * cols;
            float *x, *y, *dy, *dx, *d_y, *d_dx;
            fresh();
            x = hrand(n, -5, 5); y = hnew(n); d_y = dnew(n);
            higan_log_softmax_forward(y, x, rows, cols);
            ok(higan_cuda_log_softmax_forward(&G, d_y, dup(x, n), rows, cols), "log_softmax forward");
            cmp(c ? "log_softmax forward (300 columns)" : "log_softmax forward", d_y, y, n, 1e-5f, 1e-5f);
            dy = hrand(n, -1, 1); dx = hrand(n, -1, 1); d_dx = dup(dx, n);
            higan_log_softmax_backward(dx, dy, y, rows, cols);
            ok(higan_cuda_log_softmax_backward(&G, d_dx, dup(dy, n), dup(y, n), rows, cols), "log_softmax backward");
            cmp(c ? "log_softmax backward (300 columns)" : "log_softmax backward", d_dx, dx, n, 1e-5f, 1e-5f);
        }
    }
    {   // add, sub, mul, scale, add_nc, sum_all, mean_all
        const int64_t N = 3, C = 4, HW = 11, n = N * C * HW;
        float *a, *b, *y, *dy, *da, *db, *d_a, *d_b, *d_y, *d_dy, *d_da, *d_db, *bnc, *dbnc, *d_dbnc;
        fresh();
        a = hrand(n, -1, 1); b = hrand(n, -1, 1); y = hnew(n); dy = hrand(n, -1, 1);
        d_a = dup(a, n); d_b = dup(b, n); d_y = dnew(n); d_dy = dup(dy, n);
        higan_add_forward(y, a, b, n); ok(higan_cuda_add_forward(&G, d_y, d_a, d_b, n), "add"); cmp("add forward", d_y, y, n, 0, 0);
        higan_sub_forward(y, a, b, n); ok(higan_cuda_sub_forward(&G, d_y, d_a, d_b, n), "sub"); cmp("sub forward", d_y, y, n, 0, 0);
        higan_mul_forward(y, a, b, n); ok(higan_cuda_mul_forward(&G, d_y, d_a, d_b, n), "mul"); cmp("mul forward", d_y, y, n, 0, 0);
        higan_scale_forward(y, a, -0.3f, n); ok(higan_cuda_scale_forward(&G, d_y, d_a, -0.3f, n), "scale");
        cmp("scale forward", d_y, y, n, 0, 0);
        da = hrand(n, -1, 1); db = hrand(n, -1, 1); d_da = dup(da, n); d_db = dup(db, n);
        higan_add_backward(da, db, dy, n); ok(higan_cuda_add_backward(&G, d_da, d_db, d_dy, n), "add bwd");
        higan_sub_backward(da, db, dy, n); ok(higan_cuda_sub_backward(&G, d_da, d_db, d_dy, n), "sub bwd");
        higan_mul_backward(da, db, dy, a, b, n); ok(higan_cuda_mul_backward(&G, d_da, d_db, d_dy, d_a, d_b, n), "mul bwd");
        higan_scale_backward(da, dy, -0.3f, n); ok(higan_cuda_scale_backward(&G, d_da, d_dy, -0.3f, n), "scale bwd");
        higan_scale_backward(db, dy, 1.0f, n); ok(higan_cuda_scale_backward(&G, d_db, d_dy, 1.0f, n), "scale bwd 1");
        cmp("add/sub/mul/scale backward da", d_da, da, n, 1e-6f, 1e-5f);   // FMA: d + dy * b
        cmp("add/sub/mul/scale backward db", d_db, db, n, 1e-6f, 1e-5f);
        bnc = hrand(N * C, -1, 1);
        higan_add_nc_forward(y, a, bnc, N, C, HW);
        ok(higan_cuda_add_nc_forward(&G, d_y, d_a, dup(bnc, N * C), N, C, HW), "add_nc");
        cmp("add_nc forward", d_y, y, n, 0, 0);
        dbnc = hrand(N * C, -1, 1); d_dbnc = dup(dbnc, N * C);
        da = hrand(n, -1, 1); d_da = dup(da, n);   // fresh: the FMA-rounded sums above differ in the last bit
        higan_add_nc_backward(da, dbnc, dy, N, C, HW);
        ok(higan_cuda_add_nc_backward(&G, d_da, d_dbnc, d_dy, N, C, HW), "add_nc bwd");
        cmp("add_nc backward dx", d_da, da, n, 0, 0);
        cmp("add_nc backward db", d_dbnc, dbnc, N * C, 1e-6f, 1e-5f);
        {
            float s[2], g = 0.7f, *d_s = dnew(2);
            higan_sum_all_forward(&s[0], a, n); higan_mean_all_forward(&s[1], a, n);
            ok(higan_cuda_sum_all_forward(&G, d_s, d_a, n), "sum_all");
            ok(higan_cuda_mean_all_forward(&G, d_s + 1, d_a, n), "mean_all");
            cmp("sum_all, mean_all forward", d_s, s, 2, 1e-6f, 1e-5f);
            higan_sum_all_backward(da, &g, n); ok(higan_cuda_sum_all_backward(&G, d_da, dup(&g, 1), n), "sum_all bwd");
            higan_mean_all_backward(da, &g, n); ok(higan_cuda_mean_all_backward(&G, d_da, dup(&g, 1), n), "mean_all bwd");
            cmp("sum_all, mean_all backward", d_da, da, n, 0, 0);
        }
    }
}

/* ---- losses --------------------------------------------------------------------------- */
static void test_losses(void) {
    {   // hinge: values around the kinks
        const int64_t n = 100;
        float *x, *y = NULL, dyv = 0.8f, *dx, *d_x, *d_y, *d_dx, *d_dy;
        int kind;
        fresh();
        x = hrand(n, -2.5f, 2.5f);
        x[0] = 1.0f; x[1] = -1.0f;   // exactly at the kinks: gradient 0
        d_x = dup(x, n); d_y = dnew(1); d_dy = dup(&dyv, 1);
        y = hnew(1);
        for (kind = 0; kind < 3; ++kind) {
            const char *nm = kind == 0 ? "hinge d_real" : kind == 1 ? "hinge d_fake" : "hinge g";
            char name[64];
            dx = hrand(n, -1, 1); d_dx = dup(dx, n);
            if (kind == 0) {
                higan_hinge_d_real_forward(y, x, n); ok(higan_cuda_hinge_d_real_forward(&G, d_y, d_x, n), nm);
                higan_hinge_d_real_backward(dx, &dyv, x, n); ok(higan_cuda_hinge_d_real_backward(&G, d_dx, d_dy, d_x, n), nm);
            } else if (kind == 1) {
                higan_hinge_d_fake_forward(y, x, n); ok(higan_cuda_hinge_d_fake_forward(&G, d_y, d_x, n), nm);
                higan_hinge_d_fake_backward(dx, &dyv, x, n); ok(higan_cuda_hinge_d_fake_backward(&G, d_dx, d_dy, d_x, n), nm);
            } else {
                higan_hinge_g_forward(y, x, n); ok(higan_cuda_hinge_g_forward(&G, d_y, d_x, n), nm);
                higan_hinge_g_backward(dx, &dyv, n); ok(higan_cuda_hinge_g_backward(&G, d_dx, d_dy, n), nm);
            }
            snprintf(name, sizeof name, "%s forward", nm); cmp(name, d_y, y, 1, 1e-6f, 1e-5f);
            snprintf(name, sizeof name, "%s backward", nm); cmp(name, d_dx, dx, n, 0, 0);
        }
    }
    {   // masked L1 with ties a == b and lens 0-ish / > W
        const int64_t N = 3, M = 4, W = 10, n = N * M * W;
        const int lens[3] = {10, 3, 12};
        float *a, *b, y, dyv = 1.3f, *da, *db, *d_a, *d_b, *d_y, *d_da, *d_db;
        int *d_lens;
        int64_t i;
        fresh();
        a = hrand(n, -1, 1); b = hrand(n, -1, 1);
        for (i = 0; i < n; i += 7) b[i] = a[i];
        d_a = dup(a, n); d_b = dup(b, n); d_y = dnew(1); d_lens = dupi(lens, N);
        higan_masked_l1_forward(&y, a, b, lens, N, M, W);
        ok(higan_cuda_masked_l1_forward(&G, d_y, d_a, d_b, d_lens, N, M, W), "masked l1");
        cmp("masked l1 forward", d_y, &y, 1, 1e-6f, 1e-5f);
        da = hrand(n, -1, 1); db = hrand(n, -1, 1); d_da = dup(da, n); d_db = dup(db, n);
        higan_masked_l1_backward(da, db, &dyv, a, b, lens, N, M, W);
        ok(higan_cuda_masked_l1_backward(&G, d_da, d_db, dup(&dyv, 1), d_a, d_b, d_lens, N, M, W), "masked l1 bwd");
        cmp("masked l1 backward da", d_da, da, n, 0, 0);
        cmp("masked l1 backward db", d_db, db, n, 0, 0);
    }
    {   // KL
        const int64_t N = 4, D = 6, n = N * D;
        float *mu, *lv, y, dyv = 0.9f, *dmu, *dlv, *d_mu, *d_lv, *d_y, *d_dmu, *d_dlv;
        fresh();
        mu = hrand(n, -1, 1); lv = hrand(n, -2, 1);
        d_mu = dup(mu, n); d_lv = dup(lv, n); d_y = dnew(1);
        higan_kl_gaussian_forward(&y, mu, lv, N, D);
        ok(higan_cuda_kl_gaussian_forward(&G, d_y, d_mu, d_lv, N, D), "kl");
        cmp("kl gaussian forward", d_y, &y, 1, 1e-6f, 1e-5f);
        dmu = hrand(n, -1, 1); dlv = hrand(n, -1, 1); d_dmu = dup(dmu, n); d_dlv = dup(dlv, n);
        higan_kl_gaussian_backward(dmu, dlv, &dyv, mu, lv, N, D);
        ok(higan_cuda_kl_gaussian_backward(&G, d_dmu, d_dlv, dup(&dyv, 1), d_mu, d_lv, N, D), "kl bwd");
        cmp("kl gaussian dmu", d_dmu, dmu, n, 1e-6f, 1e-5f);
        cmp("kl gaussian dlogvar", d_dlv, dlv, n, 1e-6f, 1e-5f);
    }
    {   // cross-entropy
        const int64_t N = 5, C = 11, n = N * C;
        const int labels[5] = {3, 0, 10, 3, 7};
        float *x, y, *lse, dyv = 1.1f, *dx, *d_x, *d_y, *d_lse, *d_dx;
        int *d_lab;
        fresh();
        x = hrand(n, -4, 4); lse = hnew(N);
        d_x = dup(x, n); d_y = dnew(1); d_lse = dnew(N); d_lab = dupi(labels, N);
        higan_cross_entropy_forward(&y, lse, x, labels, N, C);
        ok(higan_cuda_cross_entropy_forward(&G, d_y, d_lse, d_x, d_lab, N, C), "ce");
        cmp("cross entropy forward", d_y, &y, 1, 1e-6f, 1e-5f);
        cmp("cross entropy logsumexp", d_lse, lse, N, 1e-6f, 1e-5f);
        dx = hrand(n, -1, 1); d_dx = dup(dx, n);
        higan_cross_entropy_backward(dx, &dyv, x, lse, labels, N, C);
        ok(higan_cuda_cross_entropy_backward(&G, d_dx, dup(&dyv, 1), d_x, d_lse, d_lab, N, C), "ce bwd");
        cmp("cross entropy backward", d_dx, dx, n, 1e-6f, 1e-5f);
    }
}

/* ---- CTC ------------------------------------------------------------------------------ */
static void ctc_case(int zero_infinity) {
    const int64_t T = 12, B = 4, C = 6;
    const int target_lengths[4] = {3, 0, 5, 2};
    // sample 2 with zero_infinity: 4 steps for 5 labels, infeasible (nll = inf)
    const int input_lengths[4] = {12, 7, zero_infinity ? 4 : 10, 12};
    const int targets[10] = {1, 2, 2, /* none */ 3, 1, 4, 4, 5, /**/ 2, 5};
    float *lp, y, *nll, *alpha, *dlp, dyv = 0.7f;
    float *d_lp, *d_y, *d_nll, *d_alpha, *d_dlp;
    int *d_tg, *d_il, *d_tl;
    int64_t na = higan_ctc_alpha_floats(T, B, target_lengths);
    higan_arena scratch;
    char name[96];
    fresh();
    lp = hrand(T * B * C, -3, 3);
    higan_log_softmax_forward(lp, lp, T * B, C);
    nll = hnew(B); alpha = hnew(na);
    d_lp = dup(lp, T * B * C); d_y = dnew(1); d_nll = dnew(B); d_alpha = dnew(na);
    d_tg = dupi(targets, 10); d_il = dupi(input_lengths, B); d_tl = dupi(target_lengths, B);
    higan_ctc_loss_forward(&y, nll, alpha, lp, targets, input_lengths, target_lengths, T, B, C, 0, zero_infinity);
    ok(higan_cuda_ctc_loss_forward(&G, d_y, d_nll, d_alpha, d_lp, d_tg, d_il, d_tl, T, B, C, 0, zero_infinity), "ctc");
    snprintf(name, sizeof name, "ctc loss (zero_infinity %d)", zero_infinity);
    cmp(name, d_y, &y, 1, 1e-5f, 1e-5f);
    cmp_inf("ctc nll per sample", d_nll, nll, B, 1e-5f, 1e-5f);
    cmp_inf("ctc alpha (the CPU's layout)", d_alpha, alpha, na, 1e-4f, 1e-5f);
    dlp = hrand(T * B * C, -1, 1); d_dlp = dup(dlp, T * B * C);
    higan_arena_init(&scratch, 1 << 16);
    higan_ctc_loss_backward(dlp, &dyv, lp, nll, alpha, targets, input_lengths, target_lengths, T, B, C, 0,
                            zero_infinity, &scratch);
    higan_arena_free(&scratch);
    ok(higan_cuda_ctc_loss_backward(&G, d_dlp, dup(&dyv, 1), d_lp, d_nll, d_alpha, d_tg, d_il, d_tl, T, B, C, 0,
                                    zero_infinity, 5), "ctc bwd");
    snprintf(name, sizeof name, "ctc backward (zero_infinity %d)", zero_infinity);
    cmp(name, d_dlp, dlp, T * B * C, 1e-4f, 1e-4f);
}
static void test_ctc(void) {
    ctc_case(1);
    ctc_case(0);
}

/* ---- dropout, greedy CTC decoding, contextual loss ----------------------------------------- */
// Dropout: both sides draw from rngs in the same state; the mask, y, dx and the rng state
// afterwards must be the CPU's bit for bit (tolerance 0).
static void dropout_case(int64_t n, float p) {
    higan_rng ra, rb;
    float *x, *y, *mask, *dy, *dx, *d_x, *d_y, *d_mask, *d_dx;
    char name[96];
    fresh();
    higan_rng_seed(&ra, 4242 + (uint64_t)n);
    rb = ra;
    x = hrand(n, -2, 2); y = hnew(n); mask = hnew(n);
    d_x = dup(x, n); d_y = dnew(n); d_mask = dnew(n);
    higan_dropout_forward(y, mask, x, p, &ra, n);
    ok(higan_cuda_dropout_forward(&G, d_y, d_mask, d_x, p, &rb, n, &HA), "dropout forward");
    snprintf(name, sizeof name, "dropout n=%lld p=%g: y", (long long)n, (double)p);
    if (n > 0) cmp(name, d_y, y, n, 0, 0);
    snprintf(name, sizeof name, "dropout n=%lld p=%g: mask", (long long)n, (double)p);
    if (n > 0) cmp(name, d_mask, mask, n, 0, 0);
    CHECK(memcmp(&ra, &rb, sizeof ra) == 0, "dropout n=%lld p=%g: the rng ends in the CPU's state",
          (long long)n, (double)p);
    dy = hrand(n, -1, 1); dx = hrand(n, -1, 1); d_dx = dup(dx, n);
    higan_dropout_backward(dx, dy, mask, n);
    ok(higan_cuda_dropout_backward(&G, d_dx, dup(dy, n), d_mask, n), "dropout backward");
    ok(higan_cuda_dropout_backward(&G, NULL, d_y, d_mask, n), "dropout backward, dx NULL");
    snprintf(name, sizeof name, "dropout n=%lld p=%g: dx accumulates", (long long)n, (double)p);
    if (n > 0) cmp(name, d_dx, dx, n, 0, 0);
}
static void test_dropout(void) {
    int64_t i, kept = 0;
    float m[1000];
    higan_rng r;
    dropout_case(1000, 0.3f);   // several blocks' worth, scale 1/0.7 (not a power of 2)
    dropout_case(257, 0.0f);    // everything kept, scale 1
    dropout_case(100, 1.0f);    // everything dropped (scale 0)
    dropout_case(0, 0.5f);      // empty: one key draw, as the CPU
    // the host mask alone: about 1 - p kept
    higan_rng_seed(&r, 99);
    higan_cuda_dropout_mask(m, 0.25f, &r, 1000);
    for (i = 0; i < 1000; ++i) kept += m[i] != 0.0f;
    CHECK(kept > 700 && kept < 800, "dropout mask p=0.25 keeps %lld of 1000", (long long)kept);
    {   // no host scratch: an error, not a crash
        float *d = dnew(4);
        higan_rng_seed(&r, 1);
        CHECK(higan_cuda_dropout_forward(&G, d, d, d, 0.5f, &r, 4, NULL) == HIGAN_ERR_ARG,
              "dropout without host scratch: HIGAN_ERR_ARG (%s)", higan_last_error());
    }
}

// Greedy decoding against higan_ctc_greedy_decode_strided per sample: scores quantised to
// multiples of 0.5 (ties everywhere), NaN entries, a row of equal values, input lengths
// 0 < ... <= T (the masked widths), truncation by max_out. Exact.
static void greedy_case(int time_major, int blank, const int *lens, int max_out, int with_out) {
    const int64_t T = 13, B = 5, C = 7;
    float *s;
    int *ref, *got, nref[5], ngot[5], *best_ref, b, t, c, bad = 0;
    int64_t i, stride = time_major ? B * C : C;
    char name[160];
    fresh();
    s = hrand(T * B * C, -2, 2);
    for (i = 0; i < T * B * C; ++i) s[i] = floorf(s[i] * 2.0f) / 2.0f;
#define SC(t_, b_, c_) s[(time_major ? ((int64_t)(t_) * B + (b_)) : ((int64_t)(b_) * T + (t_))) * C + (c_)]
    SC(2, 1, 0) = NAN;                                   // NaN first: the CPU keeps index 0
    SC(3, 2, 4) = NAN;                                   // NaN inside: skipped
    for (c = 0; c < C; ++c) SC(4, 0, c) = 0.25f;         // all equal: index 0
    for (t = 0; t < 6; ++t)                              // sample 3: a path with repeats and blanks
        for (c = 0; c < C; ++c) SC(t, 3, c) = c == (t < 2 ? 2 : t < 4 ? blank : 2) ? 5.0f : 0.0f;
#undef SC
    ref = (int *)higan_arena_alloc(&HA, sizeof(int) * (size_t)(B * (max_out > 0 ? max_out : 1)));
    got = (int *)higan_arena_alloc(&HA, sizeof(int) * (size_t)(B * (max_out > 0 ? max_out : 1)));
    for (i = 0; i < B * max_out; ++i) ref[i] = got[i] = -7;   // untouched slots stay equal
    for (b = 0; b < B; ++b) {
        const float *sb = s + (time_major ? (int64_t)b * C : (int64_t)b * T * C);
        nref[b] = higan_ctc_greedy_decode_strided(sb, stride, lens ? lens[b] : (int)T, (int)C, blank,
                                                  ref + (int64_t)b * max_out, max_out);
        ngot[b] = -1;
    }
    ok(higan_cuda_ctc_greedy_decode(&G, with_out ? got : NULL, ngot, dup(s, T * B * C), lens, T, B, C, time_major,
                                    blank, max_out, &DA, &HA), "greedy decode");
    for (b = 0; b < B; ++b) bad += ngot[b] != nref[b];
    if (with_out) for (i = 0; i < B * max_out; ++i) bad += got[i] != ref[i];
    snprintf(name, sizeof name, "greedy decode %s blank %d max_out %d%s%s: labels and lengths (n = %d %d %d %d %d)",
             time_major ? "[T,B,C]" : "[B,T,C]", blank, max_out, lens ? ", input lengths" : "",
             with_out ? "" : ", lengths only", nref[0], nref[1], nref[2], nref[3], nref[4]);
    CHECK(bad == 0, "%s: %d differ", name, bad);
    // the argmax alone, against a host scan of the same rows
    best_ref = (int *)higan_arena_alloc(&HA, sizeof(int) * (size_t)(T * B));
    for (i = 0; i < T * B; ++i) {
        int bi = 0;
        for (c = 1; c < C; ++c) if (s[i * C + c] > s[i * C + bi]) bi = c;
        best_ref[i] = bi;
    }
    {
        int *d_best = (int *)dalloc((size_t)(T * B) * sizeof(int));
        ok(higan_cuda_argmax_rows(&G, d_best, dup(s, T * B * C), T * B, C), "argmax rows");
        cmp_i32("argmax rows (first maximum, NaN as on the CPU)", d_best, best_ref, T * B);
    }
}
static void test_greedy_decode(void) {
    const int lens[5] = {13, 0, 5, 6, 1};
    int n[2] = {-1, -1};
    greedy_case(1, 0, NULL, 13, 1);
    greedy_case(1, 0, lens, 13, 1);
    greedy_case(0, 0, lens, 13, 1);
    greedy_case(0, 3, NULL, 13, 1);
    greedy_case(1, 2, lens, 2, 1);    // truncated: the full lengths come back
    greedy_case(0, 0, NULL, 0, 0);    // lengths only
    fresh();                          // T = 0: every sample empty, nothing launched
    ok(higan_cuda_ctc_greedy_decode(&G, NULL, n, NULL, NULL, 0, 2, 7, 1, 0, 4, &DA, &HA), "greedy T=0");
    CHECK(n[0] == 0 && n[1] == 0, "greedy decode T = 0: empty (%d %d)", n[0], n[1]);
    ok(higan_cuda_ctc_greedy_decode(&G, NULL, NULL, NULL, NULL, 5, 0, 7, 1, 0, 4, &DA, &HA), "greedy B=0");
}

// Contextual loss against higan_cx_loss_forward / _backward. Tolerances: the cache's
// normalised features and norms are the CPU's expressions in the CPU's order (1e-6, 1e-5:
// the target mean is a double tree sum on a GPU); everything after the similarity GEMM
// (cuBLAS vs the CPU GEMM: other fp32 summation order) 1e-5, 1e-4 for values, 2e-4, 2e-4 for
// gradients (1 / (rmin + eps) amplifies the GEMM's rounding); the argmin / argmax indices
// exactly.
static void cmp_i64(const char *name, const int64_t *d, const int64_t *ref, int64_t n) {
    int64_t *h = (int64_t *)higan_arena_alloc(&HA, (size_t)n * sizeof(int64_t));
    int64_t i, bad = 0;
    ok(higan_cuda_download(&G, h, d, (size_t)n * sizeof(int64_t)), "download int64");
    for (i = 0; i < n; ++i) bad += h[i] != ref[i];
    CHECK(bad == 0, "%s: %lld indices, %lld differ", name, (long long)n, (long long)bad);
}
static void cx_case(const char *label, int64_t N, int64_t C, int64_t P, int64_t Q, int ties) {
    const float sigma = HIGAN_CX_SIGMA, b = HIGAN_CX_B, dyv = 0.7f;
    float *ft, *fi, y, y2, *dft, *dfi, *dft0, *dfi0, *d_ft, *d_fi, *d_y, *d_dy, *d_dft, *d_dfi;
    higan_cx_cache hc, dc;
    char tag[160], name[224];
    int64_t c;
    fresh();
    snprintf(tag, sizeof tag, "cx loss %s (N=%lld C=%lld P=%lld Q=%lld)", label, (long long)N, (long long)C,
             (long long)P, (long long)Q);
    ft = hrand(N * C * P, -1, 1); fi = hrand(N * C * Q, -1, 1);
    if (ties) {   // sample 0: target columns 0 and P-1 equal (argmin ties: the first wins), inference
                  // column 1 near them (so the tie is the row's minimum), inference columns 0 and
                  // Q-1 equal (equal weight rows: max-over-q ties, the first wins)
        for (c = 0; c < C; ++c) {
            ft[c * P + P - 1] = ft[c * P];
            fi[c * Q + 1] = ft[c * P] + 0.05f * fi[c * Q + 1];
            fi[c * Q + Q - 1] = fi[c * Q];
        }
    }
    d_ft = dup(ft, N * C * P); d_fi = dup(fi, N * C * Q); d_y = dnew(1); d_dy = dup(&dyv, 1);
    if (!ok(higan_cx_cache_alloc(&hc, &HA, N, C, P, Q), "cpu cx cache") ||
        !ok(higan_cuda_cx_cache_alloc(&dc, &DA, N, C, P, Q), "device cx cache"))
        return;
    higan_cx_loss_forward(&y, &hc, ft, fi, N, C, P, Q, sigma, b, &HA);
    ok(higan_cuda_cx_loss_forward(&G, d_y, &dc, d_ft, d_fi, N, C, P, Q, sigma, b, &DA), "cx forward");
    snprintf(name, sizeof name, "%s y", tag); cmp(name, d_y, &y, 1, 1e-5f, 1e-4f);
    snprintf(name, sizeof name, "%s cache t_hat, t_norm", tag);
    cmp(name, dc.t_hat, hc.t_hat, N * C * P, 1e-6f, 1e-5f); cmp(name, dc.t_norm, hc.t_norm, N * P, 1e-6f, 1e-5f);
    snprintf(name, sizeof name, "%s cache i_hat, i_norm", tag);
    cmp(name, dc.i_hat, hc.i_hat, N * C * Q, 1e-6f, 1e-5f); cmp(name, dc.i_norm, hc.i_norm, N * Q, 1e-6f, 1e-5f);
    snprintf(name, sizeof name, "%s cache r_min, w_sum, cx", tag);
    cmp(name, dc.r_min, hc.r_min, N * Q, 1e-5f, 1e-4f); cmp(name, dc.w_sum, hc.w_sum, N * Q, 1e-5f, 1e-4f);
    cmp(name, dc.cx, hc.cx, N, 1e-5f, 1e-4f);
    snprintf(name, sizeof name, "%s cache p_min (first argmin)", tag); cmp_i64(name, dc.p_min, hc.p_min, N * Q);
    snprintf(name, sizeof name, "%s cache q_max (first argmax)", tag); cmp_i64(name, dc.q_max, hc.q_max, N * P);
    if (ties) {
        CHECK(hc.p_min[1] == 0, "%s: the tied minimum of row q=1 is at p=0 (p_min %lld)", tag, (long long)hc.p_min[1]);
    }
    // without a cache: the same value (scratch only)
    {
        float yc = fetch(d_y, 1)[0];
        ok(higan_cuda_cx_loss_forward(&G, d_y, NULL, d_ft, d_fi, N, C, P, Q, sigma, b, &DA), "cx forward, no cache");
        y2 = fetch(d_y, 1)[0];
        CHECK(y2 == yc, "%s: forward without a cache gives the same bits (%.8g, %.8g)", tag, (double)y2, (double)yc);
    }
    // backward: both gradients accumulate onto random values
    dft0 = hrand(N * C * P, -1, 1); dfi0 = hrand(N * C * Q, -1, 1);
    dft = hcopy(dft0, N * C * P); dfi = hcopy(dfi0, N * C * Q);
    d_dft = dup(dft0, N * C * P); d_dfi = dup(dfi0, N * C * Q);
    higan_cx_loss_backward(dft, dfi, &dyv, &hc, N, C, P, Q, sigma, b, &HA);
    ok(higan_cuda_cx_loss_backward(&G, d_dft, d_dfi, d_dy, &dc, N, C, P, Q, sigma, b, &DA), "cx backward");
    snprintf(name, sizeof name, "%s dfeat_t", tag); cmp(name, d_dft, dft, N * C * P, 2e-4f, 2e-4f);
    snprintf(name, sizeof name, "%s dfeat_i", tag); cmp(name, d_dfi, dfi, N * C * Q, 2e-4f, 2e-4f);
    // one gradient at a time (the other NULL: skipped)
    dft = hcopy(dft0, N * C * P); d_dft = dup(dft0, N * C * P);
    higan_cx_loss_backward(dft, NULL, &dyv, &hc, N, C, P, Q, sigma, b, &HA);
    ok(higan_cuda_cx_loss_backward(&G, d_dft, NULL, d_dy, &dc, N, C, P, Q, sigma, b, &DA), "cx backward dT");
    snprintf(name, sizeof name, "%s dfeat_t alone", tag); cmp(name, d_dft, dft, N * C * P, 2e-4f, 2e-4f);
    dfi = hcopy(dfi0, N * C * Q); d_dfi = dup(dfi0, N * C * Q);
    higan_cx_loss_backward(NULL, dfi, &dyv, &hc, N, C, P, Q, sigma, b, &HA);
    ok(higan_cuda_cx_loss_backward(&G, NULL, d_dfi, d_dy, &dc, N, C, P, Q, sigma, b, &DA), "cx backward dI");
    snprintf(name, sizeof name, "%s dfeat_i alone", tag); cmp(name, d_dfi, dfi, N * C * Q, 2e-4f, 2e-4f);
    ok(higan_cuda_cx_loss_backward(&G, NULL, NULL, d_dy, &dc, N, C, P, Q, sigma, b, NULL), "cx backward, nothing");
}
// The PyTorch oracle of tests/test_loss.c (tests/oracle/make_loss.py: a P != Q, b inference
// near the target, c larger maps) straight through the device ops, gradients onto zeros.
static void cx_oracle(void) {
    static const char *tags[3] = {"a", "b", "c"};
    higan_safetensors st;
    int k;
    if (!check_open_fixture(&st, "loss_cx.safetensors")) return;
    for (k = 0; k < 3; ++k) {
        char nm[6][16], name[128];
        const higan_st_tensor *tt, *ti;
        float *ft, *fi, *dyv, *y, *dft, *dfi, *d_ft, *d_fi, *d_y, *d_dft, *d_dfi;
        int64_t N, C, P, Q, nt, ni;
        higan_cx_cache dc;
        int j;
        static const char *sfx[6] = {"ft", "fi", "dy", "y", "dft", "dfi"};
        for (j = 0; j < 6; ++j) snprintf(nm[j], sizeof nm[j], "%s_%s", tags[k], sfx[j]);
        tt = higan_safetensors_find(&st, nm[0]); ti = higan_safetensors_find(&st, nm[1]);
        if (!tt || !ti) { CHECK(0, "cx oracle %s: tensors missing", tags[k]); continue; }
        ft = check_load(&st, nm[0], &nt); fi = check_load(&st, nm[1], &ni); dyv = check_load(&st, nm[2], NULL);
        y = check_load(&st, nm[3], NULL); dft = check_load(&st, nm[4], NULL); dfi = check_load(&st, nm[5], NULL);
        if (ft && fi && dyv && y && dft && dfi) {
            fresh();
            N = tt->shape[0]; C = tt->shape[1]; P = nt / (N * C); Q = ni / (N * C);
            d_ft = dup(ft, nt); d_fi = dup(fi, ni); d_y = dnew(1);
            d_dft = dnew(nt); d_dfi = dnew(ni);
            ok(higan_cuda_zero(&G, d_dft, (size_t)nt * sizeof(float)), "zero");
            ok(higan_cuda_zero(&G, d_dfi, (size_t)ni * sizeof(float)), "zero");
            if (ok(higan_cuda_cx_cache_alloc(&dc, &DA, N, C, P, Q), "cx cache")) {
                ok(higan_cuda_cx_loss_forward(&G, d_y, &dc, d_ft, d_fi, N, C, P, Q, HIGAN_CX_SIGMA, HIGAN_CX_B, &DA),
                   "cx oracle forward");
                ok(higan_cuda_cx_loss_backward(&G, d_dft, d_dfi, dup(dyv, 1), &dc, N, C, P, Q, HIGAN_CX_SIGMA,
                                               HIGAN_CX_B, &DA), "cx oracle backward");
                snprintf(name, sizeof name, "cx loss vs PyTorch, case %s: y", tags[k]); cmp(name, d_y, y, 1, 1e-5f, 1e-4f);
                snprintf(name, sizeof name, "cx loss vs PyTorch, case %s: dfeat_t", tags[k]);
                cmp(name, d_dft, dft, nt, 2e-4f, 2e-4f);
                snprintf(name, sizeof name, "cx loss vs PyTorch, case %s: dfeat_i", tags[k]);
                cmp(name, d_dfi, dfi, ni, 2e-4f, 2e-4f);
            }
        }
        free(ft); free(fi); free(dyv); free(y); free(dft); free(dfi);
    }
    higan_safetensors_free(&st);
}
static void test_cx_loss(void) {
    cx_oracle();
    cx_case("small, with ties", 2, 5, 7, 6, 1);
    cx_case("P > 256 (multi-thread rows)", 3, 24, 300, 40, 0);
    cx_case("P = 1", 2, 3, 1, 4, 0);
    cx_case("Q = 1", 1, 4, 5, 1, 0);
    cx_case("C = 1", 2, 1, 6, 5, 0);
    {   // scratch sized by higan_cuda_cx_loss_scratch_bytes: enough for both passes, one block (256 bytes) less fails
        const int64_t N = 2, C = 6, P = 9, Q = 7;
        size_t need = higan_cuda_cx_loss_scratch_bytes(N, C, P, Q);
        higan_cuda_arena a;
        higan_cx_cache dc;
        float *ft, *fi, *d_y, one = 1.0f;
        fresh();
        ft = dup(hrand(N * C * P, -1, 1), N * C * P); fi = dup(hrand(N * C * Q, -1, 1), N * C * Q);
        d_y = dnew(1);
        if (!ok(higan_cuda_cx_cache_alloc(&dc, &DA, N, C, P, Q), "cx cache")) return;
        if (!ok(higan_cuda_arena_init(&a, need), "exact scratch arena")) return;
        ok(higan_cuda_cx_loss_forward(&G, d_y, NULL, ft, fi, N, C, P, Q, 0.5f, 1.0f, &a), "cx forward in exact scratch");
        ok(higan_cuda_cx_loss_forward(&G, d_y, &dc, ft, fi, N, C, P, Q, 0.5f, 1.0f, &a), "cx forward (cache)");
        ok(higan_cuda_cx_loss_backward(&G, ft, fi, dup(&one, 1), &dc, N, C, P, Q, 0.5f, 1.0f, &a),
           "cx backward in exact scratch");
        CHECK(a.used == 0 && a.peak <= need, "cx scratch released (used %zu), peak %zu <= %zu", a.used, a.peak, need);
        higan_cuda_arena_free(&a);
        if (!ok(higan_cuda_arena_init(&a, need - 256), "short scratch arena")) return;
        CHECK(higan_cuda_cx_loss_forward(&G, d_y, NULL, ft, fi, N, C, P, Q, 0.5f, 1.0f, &a) == HIGAN_ERR_NOMEM,
              "cx forward in a short scratch: HIGAN_ERR_NOMEM (%s)", higan_last_error());
        higan_cuda_arena_free(&a);
        CHECK(higan_cuda_cx_loss_forward(&G, d_y, &dc, ft, fi, N, C, P, Q, 0.5f, 1.0f, NULL) == HIGAN_ERR_ARG,
              "cx forward without scratch: HIGAN_ERR_ARG (%s)", higan_last_error());
    }
}

/* ---- LSTM ----------------------------------------------------------------------------- */
static void lstm_case(int64_t B, int64_t T, int64_t IN, int64_t H, int L, int bidir, int biases, const int *lengths) {
    const int64_t D = bidir ? 2 : 1, DH = D * H, nw = (int64_t)L * D * 4;
    const float *w[32], *d_w[32];
    float *dw[32], *d_dw[32];
    int64_t sz[32], k, nc = higan_lstm_cache_floats(B, T, H, L, bidir);
    float *x, *y, *cache, *dy, *dx, *d_x, *d_y, *d_cache, *d_dx;
    int *d_len;
    higan_arena scratch;
    char tag[96], name[160];
    if (nw > 32) { CHECK(0, "lstm test: too many weights"); return; }
    fresh();
    snprintf(tag, sizeof tag, "lstm B=%lld T=%lld IN=%lld H=%lld L=%d %s%s", (long long)B, (long long)T,
             (long long)IN, (long long)H, L, bidir ? "bidirectional" : "forward", biases ? "" : " no bias");
    for (k = 0; k < nw; ++k) {
        int l = (int)(k / (D * 4)), kind = (int)(k % 4);
        int64_t in_l = l == 0 ? IN : DH;
        sz[k] = kind == 0 ? 4 * H * in_l : kind == 1 ? 4 * H * H : 4 * H;
        if (kind >= 2 && !biases) { w[k] = d_w[k] = NULL; dw[k] = d_dw[k] = NULL; continue; }
        w[k] = hrand(sz[k], -0.5f, 0.5f);
        d_w[k] = dup(w[k], sz[k]);
        dw[k] = hrand(sz[k], -1, 1);
        d_dw[k] = dup(dw[k], sz[k]);
    }
    x = hrand(B * T * IN, -1, 1); y = hnew(B * T * DH); cache = hnew(nc);
    // cells at padded steps are never written (unused): start both caches at 0
    memset(cache, 0, (size_t)nc * sizeof(float));
    d_x = dup(x, B * T * IN); d_y = dnew(B * T * DH); d_cache = dup(cache, nc); d_len = dupi(lengths, B);
    higan_arena_init(&scratch, (size_t)4 << 20);
    ok(higan_lstm_forward(y, cache, x, lengths, w, B, T, IN, H, L, bidir, &scratch), "cpu lstm forward");
    ok(higan_cuda_lstm_forward(&G, d_y, d_cache, d_x, d_len, d_w, B, T, IN, H, L, bidir, &DA), "lstm forward");
    snprintf(name, sizeof name, "%s y", tag); cmp(name, d_y, y, B * T * DH, 1e-5f, 1e-4f);
    snprintf(name, sizeof name, "%s cache (gates, cells, inner outputs)", tag); cmp(name, d_cache, cache, nc, 1e-5f, 1e-4f);
    dy = hrand(B * T * DH, -1, 1); dx = hrand(B * T * IN, -1, 1); d_dx = dup(dx, B * T * IN);
    ok(higan_lstm_backward(dx, dw, dy, y, cache, x, lengths, w, B, T, IN, H, L, bidir, &scratch), "cpu lstm backward");
    // the GPU backward runs on the CPU's forward results, so only the backward is compared
    ok(higan_cuda_lstm_backward(&G, d_dx, d_dw, dup(dy, B * T * DH), dup(y, B * T * DH), dup(cache, nc), d_x, d_len,
                                d_w, B, T, IN, H, L, bidir, &DA), "lstm backward");
    higan_arena_free(&scratch);
    snprintf(name, sizeof name, "%s dx", tag); cmp(name, d_dx, dx, B * T * IN, 1e-4f, 1e-4f);
    for (k = 0; k < nw; ++k) {
        static const char *kn[4] = {"w_ih", "w_hh", "b_ih", "b_hh"};
        if (!dw[k]) continue;
        snprintf(name, sizeof name, "%s d%s layer %lld dir %lld", tag, kn[k % 4], (long long)(k / (D * 4)),
                 (long long)((k / 4) % D));
        cmp(name, d_dw[k], dw[k], sz[k], 1e-4f, 1e-4f);
    }
}
static void test_lstm(void) {
    const int len3[3] = {5, 2, 0}, len4[4] = {3, 7, 7, 1};
    lstm_case(3, 5, 4, 3, 2, 1, 1, len3);
    lstm_case(4, 7, 6, 5, 1, 0, 0, len4);
    lstm_case(4, 7, 6, 5, 3, 1, 1, len4);   // 3 layers: both inner gradient buffers
}

/* ---- parameter store, Adam, arena and errors --------------------------------------------- */
static void test_params_adam(void) {
    higan_params P, Q;
    higan_cuda_params dP;
    higan_adam a = higan_adam_default(2e-3), b = higan_adam_default(2e-3);
    int64_t s1[2] = {7, 5}, s2[1] = {300}, s3[1] = {3}, s4[1] = {1};
    int step, i;
    fresh();
    higan_params_init(&P);
    higan_params_add(&P, "w", HIGAN_PARAM, 2, s1);
    higan_params_add(&P, "b", HIGAN_PARAM, 1, s2);
    higan_params_add(&P, "running", HIGAN_BUFFER, 1, s3);
    higan_params_add(&P, "count", HIGAN_BUFFER_I64, 1, s4);
    if (!ok(higan_params_alloc(&P), "params alloc")) return;
    higan_rng_fill_uniform(&R, P.value, P.n_param, -1, 1);
    higan_rng_fill_uniform(&R, P.buffer, P.n_buffer, -1, 1);
    P.ibuffer[0] = 42;
    if (!ok(higan_cuda_params_init(&G, &dP, &P), "device params init")) return;
    ok(higan_cuda_params_upload(&G, &dP, &P, HIGAN_CUDA_ALL), "params upload");
    for (step = 0; step < 3; ++step) {   // the same gradients on both sides
        higan_rng_fill_uniform(&R, P.grad, P.n_param, -1, 1);
        ok(higan_cuda_params_upload(&G, &dP, &P, HIGAN_CUDA_GRADS), "grads upload");
        higan_adam_step(&a, &P);
        ok(higan_cuda_adam_step(&G, &b, &dP), "adam step");
    }
    CHECK(a.step == 3 && b.step == 3, "adam step counters %lld %lld", (long long)a.step, (long long)b.step);
    higan_params_init(&Q);
    higan_params_add(&Q, "w", HIGAN_PARAM, 2, s1);
    higan_params_add(&Q, "b", HIGAN_PARAM, 1, s2);
    higan_params_add(&Q, "running", HIGAN_BUFFER, 1, s3);
    higan_params_add(&Q, "count", HIGAN_BUFFER_I64, 1, s4);
    if (ok(higan_params_alloc(&Q), "params alloc Q")) {
        ok(higan_cuda_params_download(&G, &dP, &Q, HIGAN_CUDA_ALL), "params download");
        check_close("adam values after 3 steps (no FMA: bit-exact)", Q.value, P.value, P.n_param, 0, 0);
        check_close("adam m", Q.adam_m, P.adam_m, P.n_param, 0, 0);
        check_close("adam v", Q.adam_v, P.adam_v, P.n_param, 0, 0);
        check_close("params buffers round trip", Q.buffer, P.buffer, P.n_buffer, 0, 0);
        CHECK(Q.ibuffer[0] == 42, "params int64 buffer round trip (%lld)", (long long)Q.ibuffer[0]);
        i = higan_params_find(&P, "b");
        {
            float v[300];
            ok(higan_cuda_download(&G, v, higan_cuda_params_data(&dP, &P, i), sizeof v), "tensor download");
            check_close("params_data points at tensor b", v, higan_params_data(&P, i), 300, 0, 0);
        }
        ok(higan_cuda_params_zero_grad(&G, &dP), "zero grad");
        ok(higan_cuda_params_download(&G, &dP, &Q, HIGAN_CUDA_GRADS), "grads download");
        {
            int64_t k, nz = 0;
            for (k = 0; k < Q.n_param; ++k) nz += Q.grad[k] != 0.0f;
            CHECK(nz == 0, "zero_grad clears every gradient (%lld nonzero)", (long long)nz);
        }
        higan_params_free(&Q);
    }
    higan_cuda_params_free(&dP);
    higan_params_free(&P);
}
#ifndef HIGAN_CUDA_EMULATE
static higan_status try_huge_malloc(void) {
    void *p = NULL;
    HIGAN_CUDA_CHECK(cudaMalloc(&p, (size_t)1 << 52));
    cudaFree(p);
    return HIGAN_OK;
}
#endif
static void test_arena_errors(void) {
    higan_cuda_arena a;
    if (!ok(higan_cuda_arena_init(&a, 1024), "small device arena")) return;
    CHECK(higan_cuda_arena_alloc(&a, 1000) != NULL, "device arena: 1000 bytes fit");
    CHECK(higan_cuda_arena_alloc(&a, 100) == NULL && higan_cuda_arena_status(&a) == HIGAN_ERR_NOMEM,
          "device arena overflow is sticky and reported: %s", higan_last_error());
    higan_cuda_arena_reset(&a);
    {
        size_t m = higan_cuda_arena_mark(&a);
        void *p1 = higan_cuda_arena_alloc(&a, 10), *p2;
        higan_cuda_arena_release(&a, m);
        p2 = higan_cuda_arena_alloc(&a, 10);
        CHECK(p1 == p2 && ((uintptr_t)p1 & 255) == 0, "device arena mark/release reuses 256-byte aligned blocks");
    }
    higan_cuda_arena_free(&a);
#ifndef HIGAN_CUDA_EMULATE   /* real CUDA and cuBLAS errors through HIGAN_CUDA_CHECK / _STATUS */
    {
        higan_status st;
        float one = 1.0f, *d;
        st = try_huge_malloc();
        CHECK(st == HIGAN_ERR_NOMEM && strstr(higan_last_error(), "cudaErrorMemoryAllocation") &&
              strstr(higan_last_error(), "cudaMalloc"),
              "HIGAN_CUDA_CHECK: 4 PB cudaMalloc -> HIGAN_ERR_NOMEM, message: %s", higan_last_error());
        fresh();
        d = dup(&one, 1);
        st = HIGAN_CUDA_STATUS(cublasSgemm(G.blas, CUBLAS_OP_N, CUBLAS_OP_N, 2, 2, 2, &one, d, 0, d, 0, &one, d, 0));
        CHECK(st == HIGAN_ERR_DEVICE && strstr(higan_last_error(), "CUBLAS_STATUS_INVALID_VALUE"),
              "HIGAN_CUDA_STATUS: cuBLAS bad lda -> HIGAN_ERR_DEVICE, message: %s", higan_last_error());
    }
#endif
    {
        char nm[256];
        CHECK(higan_cuda_device_name(G.device, nm, sizeof nm) == HIGAN_OK && nm[0], "device name: %s", nm);
    }
}

// ---- the backend switch: the Generator through higan_cuda_backend's table ---------------------
// The same higan_generate_words / higan_generate_word calls on a CPU tape and on a tape whose
// backend is the CUDA table (device data arena, parameters in a higan_cuda_params mirror),
// images compared. Tolerance 2e-4 absolute + 2e-4 relative on tanh outputs in [-1, 1]: about
// 14 GEMM-based layers (conv, linear) in a row, each summing in another order than the CPU
// (1e-4 per op above), the errors partly averaging out. The masked background (-1) and the
// image widths must match exactly. In the emulated build (build/test_cuda_emu) the device
// memory is PROT_NONE outside the emulated CUDA calls (HIGAN_CUDA_EMULATE_GUARD) during this
// test: a host access to device memory anywhere on the generation path crashes it, as it
// would fault on a GPU.
static void gen_compare(const char *what, float *const *a, float *const *b, const int64_t *n, int64_t k,
                        float atol, float rtol) {
    int64_t i, j;
    double worst = 0.0;
    for (i = 0; i < k; ++i) {
        check_close(what, b[i], a[i], n[i], atol, rtol);
        for (j = 0; j < n[i]; ++j) {
            double d = fabs((double)a[i][j] - (double)b[i][j]);
            if (d > worst) worst = d;
        }
    }
    printf("  %s: largest |cpu - cuda| %.3g over %lld words\n", what, worst, (long long)k);
}
// One training-mode step of the Generator on both tapes (gen_train_step of cuda_check.h).
static void backend_train_step(higan_model *m, higan_cuda_params *dp, higan_tape *tc, higan_tape *td) {
    const int64_t B = GEN_B, L = GEN_L, zd = m->cfg.G.style_dim, np = m->G.p->n_param, nb = m->G.p->n_buffer;
    const int64_t nout = B * m->cfg.G.input_nc * 64 * 32 * L;
    float *z = hrand(B * zd, -1.0f, 1.0f), *Rw = hrand(nout, -1.0f, 1.0f);
    float *gz_c = hnew(B * zd), *gz_d = hnew(B * zd), *g_d = hnew(np), *b_d = hnew(nb), lc = 0.0f, ld = 0.0f;
    higan_var *zc, *zdv, *loss_c, *loss_d;
    double e;
    // both sides from the same state: the host store's values and buffers on the device
    ok(higan_cuda_params_upload(&G, dp, m->G.p, HIGAN_CUDA_ALL), "re-upload the Generator");
    higan_params_zero_grad(m->G.p);
    ok(higan_cuda_params_zero_grad(&G, dp), "device zero_grad");
    loss_c = gen_train_step(m, tc, z, Rw, 0, &zc);
    loss_d = gen_train_step(m, td, z, Rw, 0, &zdv);
    CHECK(loss_c && loss_d, "train-mode forward and backward on both tapes");
    if (!loss_c || !loss_d) return;
    lc = loss_c->data[0];
    higan_var_read(td, loss_d, &ld, 1);
    memcpy(gz_c, zc->grad, sizeof(float) * (size_t)(B * zd));
    ok(higan_cuda_download(&G, gz_d, zdv->grad, sizeof(float) * (size_t)(B * zd)), "download dz");
    ok(higan_cuda_download(&G, g_d, dp->grad, sizeof(float) * (size_t)np), "download parameter gradients");
    ok(higan_cuda_download(&G, b_d, dp->buffer, sizeof(float) * (size_t)nb), "download buffers");
    ok(higan_tape_sync(td), "device backward sync");
    printf("  train step: loss cpu %.9g cuda %.9g; relative errors: dz %.3g, parameter gradients %.3g, "
           "buffers %.3g\n", (double)lc, (double)ld, rel_err(gz_d, gz_c, B * zd),
           rel_err(g_d, m->G.p->grad, np), rel_err(b_d, m->G.p->buffer, nb));
    CHECK(fabs((double)lc - (double)ld) <= 1e-5 * fabs((double)lc) + 1e-7, "train step loss: cpu %.9g, cuda %.9g",
          (double)lc, (double)ld);
    e = rel_err(gz_d, gz_c, B * zd);
    CHECK(e <= 1e-3, "dL/dz on the device within 1e-3 of the largest (%.3g)", e);
    e = rel_err(g_d, m->G.p->grad, np);
    CHECK(e <= 1e-3, "every Generator parameter gradient within 1e-3 of the largest (%.3g)", e);
    {   // per tensor, relative to the tensor's own largest gradient; the biases of convs that
        // feed a batch-statistics BN have gradient 0 mathematically (rounding noise here):
        // those tensors (largest gradient below 1e-4 of the global largest) must stay that small
        int h, bad = 0, zero = 0;
        double worst = 0.0, gmax = 0.0;
        int64_t k;
        for (k = 0; k < np; ++k) if (fabs((double)m->G.p->grad[k]) > gmax) gmax = fabs((double)m->G.p->grad[k]);
        for (h = 0; h < m->G.p->count; ++h) {
            const higan_param_entry *en = &m->G.p->entries[h];
            double tmax = 0.0, dmax = 0.0;
            if (en->kind != HIGAN_PARAM) continue;
            for (k = 0; k < en->numel; ++k) {
                if (fabs((double)m->G.p->grad[en->offset + k]) > tmax) tmax = fabs((double)m->G.p->grad[en->offset + k]);
                if (fabs((double)g_d[en->offset + k]) > dmax) dmax = fabs((double)g_d[en->offset + k]);
            }
            if (tmax < 1e-4 * gmax) {
                ++zero;
                if (dmax >= 1e-4 * gmax) { ++bad; printf("    %s: should be ~0, largest %.3g\n", en->name, dmax); }
                continue;
            }
            e = rel_err(g_d + en->offset, m->G.p->grad + en->offset, en->numel);
            if (e > worst) worst = e;
            if (e > 1e-3) { ++bad; printf("    %s: relative error %.3g\n", en->name, e); }
        }
        CHECK(bad == 0, "each parameter tensor's gradient within 1e-3 of its largest (worst %.3g; %d tensors "
              "numerically zero on both)", worst, zero);
    }
    check_close("train-mode buffers (running stats, u0, sv0) updated on the device", b_d, m->G.p->buffer, nb,
                1e-5f, 1e-4f);
}
static void test_backend_generate(void) {
    static const char *words[] = {"a", "Higan", "writes", "on", "GPUs", "xy", "Zebra", "handwriting"};
    const int64_t n = 8;
    higan_model m;
    higan_backend be;
    higan_cuda_params dp;
    higan_arena ch, hh, dd;
    higan_tape tc, td;
    float *styles, *oc[8], *od[8], *emb_host, *emb_dev;
    int64_t caps[8], zd, i, nemb;
    int h_emb, pass;
    higan_rng r;
    if (!load_generator(&m)) return;
    zd = m.cfg.G.style_dim;
    guard(1);
    styles = (float *)malloc(sizeof(float) * (size_t)(n * zd));
    higan_rng_seed(&r, 99);
    higan_rng_fill_normal(&r, styles, n * zd, 0.0f, 1.0f);
    for (i = 0; i < n; ++i) {
        caps[i] = 64 * 32 * (int64_t)strlen(words[i]) * m.cfg.G.input_nc;
        oc[i] = (float *)malloc(sizeof(float) * (size_t)caps[i]);
        od[i] = (float *)malloc(sizeof(float) * (size_t)caps[i]);
    }
    // the device side: table, arenas, the Generator's store mirrored (before any CPU forward
    // renormalises the embedding rows on the host: the device must do it in its mirror)
    higan_cuda_backend(&be, &G);
    CHECK(be.device == 1 && strcmp(be.name, "cuda") == 0, "higan_cuda_backend fills a device table");
    ok(higan_cuda_params_init(&G, &dp, m.G.p), "Generator mirror");
    ok(higan_cuda_params_upload(&G, &dp, m.G.p, HIGAN_CUDA_ALL), "Generator upload");
    higan_cuda_params_attach(&dp, m.G.p);
    dev_tape_open(&td, &hh, &dd, &be, (size_t)8 << 20, (size_t)256 << 20, 1024);
    CHECK(td.be == &be && td.data == &dd, "higan_tape_set_backend selects the table and the data arena");
    ok(higan_arena_init(&ch, (size_t)256 << 20), "CPU arena");
    higan_tape_init(&tc, &ch, 1024);
    CHECK(tc.be == higan_cpu_backend() && tc.data == &ch && !tc.be->device, "a new tape runs on the CPU backend");
    for (pass = 0; pass < 3; ++pass) {
        // 0: words alone (batch 0); 1: one padded batch at each word's width; 2: the padded
        // batch at full width (eval_full_width: GBlocks, the eval mask)
        const char *names[3] = {"generate_words batch 0", "generate_words batch 1", "batch 1, full width"};
        const int batch = pass > 0;
        m.G.eval_full_width = pass == 2;
        ok(higan_generate_words(&m, &td, words, n, styles, zd, batch, od, caps), "device generate_words");
        ok(higan_generate_words(&m, &tc, words, n, styles, zd, batch, oc, caps), "CPU generate_words");
        gen_compare(names[pass], oc, od, caps, n, 2e-4f, 2e-4f);
        CHECK(dd.used == 0 && hh.used == 0, "%s gives both arenas back (data %zu, host %zu bytes used)",
              names[pass], dd.used, hh.used);
    }
    m.G.eval_full_width = 0;
    printf("  device data arena peak %.1f MB, host arena peak %.1f MB\n", (double)dd.peak / 1e6, (double)hh.peak / 1e6);
    {   // one word, and its width
        int wc = higan_generate_word(&m, &tc, "Backend", styles + zd, oc[7], caps[7]);
        int wd = higan_generate_word(&m, &td, "Backend", styles + zd, od[7], caps[7]);
        CHECK(wc == 7 * 32 && wd == wc, "generate_word: widths %d (cpu) and %d (cuda)", wc, wd);
        check_close("generate_word on the device", od[7], oc[7], (int64_t)wc * 64, 2e-4f, 2e-4f);
    }
    // the embedding rows the words used were renormalised (max_norm 1) in the device mirror
    h_emb = m.G.text_embedding;
    nemb = m.G.p->entries[h_emb].numel;
    emb_host = higan_params_data(m.G.p, h_emb);
    emb_dev = hnew(nemb);
    ok(higan_cuda_download(&G, emb_dev, higan_cuda_params_data(&dp, m.G.p, h_emb), sizeof(float) * (size_t)nemb),
       "download the embedding");
    check_close("embedding rows renormalised on the device as on the host", emb_dev, emb_host, nemb, 1e-6f, 1e-5f);
    // a device arena too small: HIGAN_ERR_NOMEM, and the tape works again after a reset
    {
        higan_arena tiny;
        higan_tape tt;
        higan_status st;
        ok(higan_backend_arena_init(&tiny, &be, (size_t)1 << 20), "1 MB device arena");
        higan_tape_init(&tt, &hh, 1024);
        higan_tape_set_backend(&tt, &be, &tiny);
        st = higan_generate_words(&m, &tt, words, n, styles, zd, 0, od, caps);
        CHECK(st == HIGAN_ERR_NOMEM && tiny.overflow && tiny.needed > tiny.capacity,
              "1 MB device arena: HIGAN_ERR_NOMEM (%s)", higan_last_error());
        higan_tape_reset(&tt);
        CHECK(!tiny.overflow && higan_tape_sync(&tt) == HIGAN_OK, "after a reset the device tape is clean");
        higan_tape_free(&tt);
        higan_backend_arena_free(&tiny, &be);
    }
    ok(higan_tape_sync(&td), "device tape sync");
    backend_train_step(&m, &dp, &tc, &td);
    higan_cuda_params_attach(NULL, m.G.p);
    higan_cuda_params_free(&dp);
    dev_tape_close(&td, &hh, &dd, &be);
    higan_tape_free(&tc);
    higan_arena_free(&ch);
    for (i = 0; i < n; ++i) { free(oc[i]); free(od[i]); }
    free(styles);
    higan_model_free(&m);
#ifdef HIGAN_CUDA_EMULATE
    higan_cuda_emulate_guard(0);
#  ifndef __SANITIZE_THREAD__   // ThreadSanitizer (make tsan-cuda) handles the child's SIGSEGV itself
    {   // the guard works: a host write into device memory faults (checked in a child process)
        pid_t pid;
        int status = 0;
        float *d = dnew(4);
        fflush(stdout);
        higan_cuda_emulate_guard(1);
        pid = fork();
        if (pid == 0) { d[0] = 1.0f; _exit(0); }
        higan_cuda_emulate_guard(0);
        waitpid(pid, &status, 0);
        CHECK(pid > 0 && WIFSIGNALED(status) && WTERMSIG(status) == SIGSEGV,
              "emulation guard: a host write into device memory faults (signal %d)",
              WIFSIGNALED(status) ? WTERMSIG(status) : 0);
    }
#  endif
#endif
}
int main(void) {
    if (!cuda_test_begin("test_cuda")) return cuda_test_skip();
    test_arena_errors();
    test_gemm();
    test_conv();
    test_linear();
    test_spectral_norm();
    test_batch_norm();
    test_embedding();
    test_upsample_pools_pad();
    test_activations();
    test_concat_slice_permute();
    test_masked_width_softmax_elementwise();
    test_losses();
    test_ctc();
    test_dropout();
    test_greedy_decode();
    test_cx_loss();
    test_lstm();
    test_params_adam();
    test_backend_generate();
    return cuda_test_end();
}
