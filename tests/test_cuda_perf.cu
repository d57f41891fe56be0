// test_cuda_perf.cu - memory and precision of the device backend (issue 6):
//   - arena recycling on a device tape: the Generator's train-mode forward and backward with
//     higan_tape_backward_release on a device tape peaks lower than the same step without
//     recycling (a free-list table of 0 entries), with bit-identical gradients;
//   - bf16 GEMMs on the device (higan_cuda_set_precision): against the CPU's bf16 GEMM
//     (higan_set_precision(HIGAN_PRECISION_BF16)) and against fp32.
// Without a CUDA device it prints SKIP; build/test_cuda_perf_emu runs it through the host
// emulation with device memory guarded (see tests/cuda_check.h).
// a small bf16 scratch (8192 values), so that the bf16 GEMMs below run in groups of batch
// items and in blocks of rows (the default is 64 MB)
#define HIGAN_CUDA_BF16_SCRATCH_BYTES ((size_t)1 << 14)
#include "cuda_check.h"

/* ---- arena recycling on a device tape ---------------------------------------------------- */
// The Generator's train-mode step: gen_train_step of cuda_check.h (release: backward_release).
static void test_device_recycling(void) {
    const int64_t B = GEN_B, L = GEN_L;
    higan_model m;
    higan_backend be;
    higan_cuda_params dp;
    higan_arena hh, dd;
    higan_tape td;
    int64_t zd, np, nb, nout;
    float *z, *Rw, *g[3], *b[3], *gz[3], loss[3];
    size_t peak[3], recycled[3];
    int run, dropped[3];
    const char *names[3] = {"no recycling, backward", "recycling, backward", "recycling, backward_release"};
    if (!load_generator(&m)) return;
    zd = m.cfg.G.style_dim; np = m.G.p->n_param; nb = m.G.p->n_buffer;
    nout = B * m.cfg.G.input_nc * 64 * 32 * L;
    z = hrand(B * zd, -1.0f, 1.0f);
    Rw = hrand(nout, -1.0f, 1.0f);
    guard(1);
    higan_cuda_backend(&be, &G);
    ok(higan_cuda_params_init(&G, &dp, m.G.p), "Generator mirror");
    higan_cuda_params_attach(&dp, m.G.p);
    dev_tape_open(&td, &hh, &dd, &be, (size_t)8 << 20, (size_t)256 << 20, 1024);
    CHECK(dd.recycled != NULL && dd.max_recycled > 0, "a device arena has a host block table (%d entries)",
          dd.max_recycled);
    for (run = 0; run < 3; ++run) {
        higan_var *zv = NULL, *lv;
        g[run] = hnew(np); b[run] = hnew(nb); gz[run] = hnew(B * zd);
        // the same state for every run: the host store's values and buffers, gradients zero
        ok(higan_cuda_params_upload(&G, &dp, m.G.p, HIGAN_CUDA_ALL), "upload the Generator");
        ok(higan_cuda_params_zero_grad(&G, &dp), "device zero_grad");
        dd.max_recycled = run == 0 ? 0 : HIGAN_ARENA_MAX_RECYCLED;   // 0: every block handed back is dropped
        dd.recycle_dropped = 0;
        dd.peak = 0;
        lv = gen_train_step(&m, &td, z, Rw, run == 2, &zv);
        CHECK(lv != NULL, "%s: forward and backward (%s)", names[run], lv ? "ok" : higan_last_error());
        if (!lv) break;
        higan_var_read(&td, lv, &loss[run], 1);
        ok(higan_cuda_download(&G, gz[run], zv->grad, sizeof(float) * (size_t)(B * zd)), "download dz");
        ok(higan_cuda_download(&G, g[run], dp.grad, sizeof(float) * (size_t)np), "download parameter gradients");
        ok(higan_cuda_download(&G, b[run], dp.buffer, sizeof(float) * (size_t)nb), "download buffers");
        ok(higan_tape_sync(&td), "device sync");
        peak[run] = dd.peak; recycled[run] = dd.recycled_bytes; dropped[run] = dd.recycle_dropped;
        printf("  %-30s device arena peak %8.3f MB, recycled at the end %8.3f MB, blocks dropped %d\n", names[run],
               (double)peak[run] / 1e6, (double)recycled[run] / 1e6, dropped[run]);
    }
    if (run == 3) {
        int i;
        CHECK(dropped[0] > 0 && recycled[0] == 0, "run 0 recycles nothing (%d blocks dropped)", dropped[0]);
        CHECK(dropped[1] == 0 && dropped[2] == 0 && recycled[1] > 0 && recycled[2] > recycled[1],
              "runs 1, 2 recycle on the device (%zu, %zu bytes free at the end)", recycled[1], recycled[2]);
        CHECK(peak[1] < peak[0] && peak[2] < peak[1],
              "device arena peak: no recycling %zu > recycling %zu > backward_release %zu bytes (%.1f%% of the first)",
              peak[0], peak[1], peak[2], 100.0 * (double)peak[2] / (double)peak[0]);
        for (i = 1; i < 3; ++i) {
            CHECK(memcmp(&loss[i], &loss[0], sizeof(float)) == 0, "%s: loss bit-identical (%.9g)", names[i],
                  (double)loss[i]);
            CHECK(memcmp(g[i], g[0], sizeof(float) * (size_t)np) == 0,
                  "%s: %lld parameter gradients bit-identical to no recycling", names[i], (long long)np);
            CHECK(memcmp(gz[i], gz[0], sizeof(float) * (size_t)(B * zd)) == 0, "%s: dL/dz bit-identical", names[i]);
            CHECK(memcmp(b[i], b[0], sizeof(float) * (size_t)nb) == 0, "%s: buffers bit-identical", names[i]);
        }
    }
    dd.max_recycled = HIGAN_ARENA_MAX_RECYCLED;
    higan_cuda_params_attach(NULL, m.G.p);
    higan_cuda_params_free(&dp);
    dev_tape_close(&td, &hh, &dd, &be);
    guard(0);
    higan_model_free(&m);
}

/* ---- bf16 GEMMs on the device ---------------------------------------------------------------
   Tolerances: against the CPU's bf16 GEMM (higan_set_precision(HIGAN_PRECISION_BF16)) and
   higan_gemm_ref_bf16, 1e-4 abs + 1e-4 rel: both round the operands the same way and the
   products of bf16 values are exact, so only the summation order differs (as for fp32).
   Against fp32: the largest error within 1e-2 of the largest |value| (bf16 keeps 8 bits of
   mantissa, 2^-9 relative per operand), and above 1e-5 (the operands really were rounded). */
static void bf16_gemm_case(int ta, int tb, int64_t M, int64_t N, int64_t K, float beta) {
    const int64_t lda = (ta ? M : K) + 3, ldb = (tb ? K : N) + 2, ldc = N + 1;
    const float alpha = 0.75f;
    float *A, *B, *C0, *Cref, *Ccpu, *C32, *got, *dC;
    char name[128];
    double e;
    fresh();
    A = hrand((ta ? K : M) * lda, -1, 1);
    B = hrand((tb ? N : K) * ldb, -1, 1);
    C0 = hrand(M * ldc, -1, 1);
    Cref = hcopy(C0, M * ldc); Ccpu = hcopy(C0, M * ldc); C32 = hcopy(C0, M * ldc);
    higan_gemm_ref_bf16((int)ta, (int)tb, M, N, K, alpha, A, lda, B, ldb, beta, Cref, ldc);
    higan_gemm_ref((int)ta, (int)tb, M, N, K, alpha, A, lda, B, ldb, beta, C32, ldc);
    higan_set_precision(HIGAN_PRECISION_BF16);
    higan_gemm((int)ta, (int)tb, M, N, K, alpha, A, lda, B, ldb, beta, Ccpu, ldc);
    higan_set_precision(HIGAN_PRECISION_FP32);
    dC = dup(C0, M * ldc);
    ok(higan_cuda_set_precision(&G, HIGAN_PRECISION_BF16), "precision bf16");
    CHECK(higan_cuda_get_precision(&G) == HIGAN_PRECISION_BF16 && G.bf16 && !G.tf32, "bf16 selected");
    ok(higan_cuda_gemm(&G, ta, tb, M, N, K, alpha, dup(A, (ta ? K : M) * lda), lda, dup(B, (tb ? N : K) * ldb), ldb,
                       beta, dC, ldc), "gemm bf16");
    ok(higan_cuda_set_precision(&G, HIGAN_PRECISION_FP32), "precision fp32");
    got = fetch(dC, M * ldc);
    snprintf(name, sizeof name, "bf16 gemm ta=%d tb=%d beta=%g %lldx%lldx%lld vs the CPU's bf16 GEMM", ta, tb,
             (double)beta, (long long)M, (long long)N, (long long)K);
    check_close(name, got, Ccpu, M * ldc, 1e-4f, 1e-4f);
    snprintf(name, sizeof name, "bf16 gemm ta=%d tb=%d beta=%g vs higan_gemm_ref_bf16", ta, tb, (double)beta);
    check_close(name, got, Cref, M * ldc, 1e-4f, 1e-4f);
    e = rel_err(got, C32, M * ldc);
    CHECK(e <= 1e-2 && e > 1e-5, "bf16 gemm ta=%d tb=%d vs fp32: largest error %.3g of the largest value "
          "(within 1e-2, above 1e-5)", ta, tb, e);
}
static void test_bf16_gemm(void) {
    int ta, tb;
    CHECK(higan_cuda_get_precision(&G) == HIGAN_PRECISION_FP32, "fp32 is the default device precision");
    for (ta = 0; ta < 2; ++ta)
        for (tb = 0; tb < 2; ++tb) {
            bf16_gemm_case(ta, tb, 37, 29, 53, 0.0f);        // fits the scratch at once
            bf16_gemm_case(ta, tb, 200, 29, 53, 0.5f);       // A in blocks of rows of C
            bf16_gemm_case(ta, tb, 30, 300, 41, 0.5f);       // B in blocks of columns of C
            bf16_gemm_case(ta, tb, 150, 170, 47, 0.0f);      // both
            bf16_gemm_case(ta, tb, 9, 7, 5000, 0.5f);        // K in blocks (partial sums in C)
        }
    {   // operands already bf16 values: the bf16 GEMM equals the fp32 one
        const int64_t M = 24, N = 16, K = 40;
        float *A = hrand(M * K, -1, 1), *B = hrand(K * N, -1, 1), *C = hnew(M * N), *dC;
        int64_t i;
        for (i = 0; i < M * K; ++i) A[i] = higan_bf16_round(A[i]);
        for (i = 0; i < K * N; ++i) B[i] = higan_bf16_round(B[i]);
        higan_gemm_ref(0, 0, M, N, K, 1.0f, A, K, B, N, 0.0f, C, N);
        dC = dnew(M * N);
        ok(higan_cuda_set_precision(&G, HIGAN_PRECISION_BF16), "precision bf16");
        ok(higan_cuda_gemm(&G, 0, 0, M, N, K, 1.0f, dup(A, M * K), K, dup(B, K * N), N, 0.0f, dC, N), "gemm bf16");
        ok(higan_cuda_set_precision(&G, HIGAN_PRECISION_TF32), "precision tf32");
        CHECK(G.tf32 && higan_cuda_get_precision(&G) == HIGAN_PRECISION_TF32, "tf32 through set_precision");
        ok(higan_cuda_set_precision(&G, HIGAN_PRECISION_FP32), "precision fp32");
        CHECK(!G.tf32, "fp32 again");
        cmp("bf16 gemm of bf16-exact operands = fp32 gemm", dC, C, M * N, 1e-5f, 1e-5f);
    }
}
/* conv2d forward and backward in bf16 (batched GEMMs with a shared weight, im2col groups)
   against the CPU's conv2d in HIGAN_PRECISION_BF16, and against fp32. */
static void bf16_conv_case(const char *label, higan_conv2d_shape s) {
    const int64_t OH = higan_conv2d_out_h(&s), OW = higan_conv2d_out_w(&s);
    const int64_t nx = s.N * s.IC * s.H * s.W, nw = s.OC * s.IC * s.KH * s.KW, ny = s.N * s.OC * OH * OW;
    float *x, *w, *b, *y, *y32, *dy, *dx, *dw, *db, *dx0, *dw0, *db0, *dx32, *dw32, *db32;
    float *d_x, *d_w, *d_y, *d_dx, *d_dw, *d_db, *got;
    char name[160];
    double e;
    fresh();
    x = hrand(nx, -1, 1); w = hrand(nw, -1, 1); b = hrand(s.OC, -1, 1);
    dy = hrand(ny, -1, 1);
    dx0 = hrand(nx, -1, 1); dw0 = hrand(nw, -1, 1); db0 = hrand(s.OC, -1, 1);
    y = hnew(ny); y32 = hnew(ny);
    dx = hcopy(dx0, nx); dw = hcopy(dw0, nw); db = hcopy(db0, s.OC);
    dx32 = hcopy(dx0, nx); dw32 = hcopy(dw0, nw); db32 = hcopy(db0, s.OC);
    higan_conv2d_forward_ref(y32, x, w, b, &s);
    higan_conv2d_backward_ref(dx32, dw32, db32, dy, x, w, &s);
    {   // the CPU's bf16 conv (its scratch from HA)
        higan_set_precision(HIGAN_PRECISION_BF16);
        higan_conv2d_forward(y, x, w, b, &s, &HA);
        higan_conv2d_backward(dx, dw, db, dy, x, w, &s, &HA);
        higan_set_precision(HIGAN_PRECISION_FP32);
    }
    d_x = dup(x, nx); d_w = dup(w, nw); d_y = dnew(ny);
    d_dx = dup(dx0, nx); d_dw = dup(dw0, nw); d_db = dup(db0, s.OC);
    ok(higan_cuda_set_precision(&G, HIGAN_PRECISION_BF16), "precision bf16");
    ok(higan_cuda_conv2d_forward(&G, d_y, d_x, d_w, dup(b, s.OC), &s, &DA), "conv2d forward bf16");
    ok(higan_cuda_conv2d_backward(&G, d_dx, d_dw, d_db, dup(dy, ny), d_x, d_w, &s, &DA), "conv2d backward bf16");
    ok(higan_cuda_set_precision(&G, HIGAN_PRECISION_FP32), "precision fp32");
    snprintf(name, sizeof name, "bf16 conv2d %s forward vs the CPU's bf16", label);
    got = fetch(d_y, ny); check_close(name, got, y, ny, 1e-4f, 1e-4f);
    e = rel_err(got, y32, ny);
    CHECK(e <= 1e-2 && e > 1e-5, "bf16 conv2d %s forward vs fp32: %.3g (within 1e-2, above 1e-5)", label, e);
    snprintf(name, sizeof name, "bf16 conv2d %s dx vs the CPU's bf16", label);
    got = fetch(d_dx, nx); check_close(name, got, dx, nx, 1e-4f, 1e-4f);
    e = rel_err(got, dx32, nx);
    CHECK(e <= 1e-2, "bf16 conv2d %s dx vs fp32: %.3g (within 1e-2)", label, e);
    snprintf(name, sizeof name, "bf16 conv2d %s dw vs the CPU's bf16", label);
    got = fetch(d_dw, nw); check_close(name, got, dw, nw, 1e-4f, 1e-4f);
    e = rel_err(got, dw32, nw);
    CHECK(e <= 1e-2, "bf16 conv2d %s dw vs fp32: %.3g (within 1e-2)", label, e);
    snprintf(name, sizeof name, "bf16 conv2d %s db (a reduction: fp32 both)", label);
    cmp(name, d_db, db, s.OC, 1e-5f, 1e-5f);
}
static void test_bf16_conv(void) {
    bf16_conv_case("3x3 s1 p1 N=5", higan_conv2d_make_shape(5, 2, 6, 6, 3, 3, 3, 1, 1, 1, 1, 1, 1));
    bf16_conv_case("3x3 s2 p1 IC=16 OC=24", higan_conv2d_make_shape(2, 16, 12, 10, 24, 3, 3, 2, 2, 1, 1, 1, 1));
    bf16_conv_case("1x1 pointwise", higan_conv2d_make_shape(3, 4, 5, 7, 6, 1, 1, 1, 1, 0, 0, 0, 0));
}

/* The Generator's train-mode step in bf16 on a device tape against the same step on a CPU tape
   in bf16 (both round every GEMM operand the same way; fp32 sums in other orders, so an
   activation rounds to a neighbouring bf16 value now and then, and batch-statistics BN with
   batch 2 amplifies that), and against fp32 on the CPU. Bounds: the device within 5e-2 of the
   largest gradient of the CPU's bf16, and closer to it than the CPU's bf16 is to fp32
   (emulated: 0.0137 vs 0.0343; the loss 7e-7 vs 6e-6 apart). */
static void test_bf16_generator(void) {
    const int64_t B = GEN_B, L = GEN_L;
    higan_model m;
    higan_backend be;
    higan_cuda_params dp;
    higan_arena hh, dd, ch;
    higan_tape td, tc;
    int64_t zd, np, nout;
    float *z, *Rw, *g32, *g16, *gdev, *gz32, *gz16, *gzdev, l32 = 0, l16 = 0, ldev = 0;
    higan_var *zv, *lv;
    double e_cpu, e_dev, ez_cpu, ez_dev;
    if (!load_generator(&m)) return;
    fresh();
    zd = m.cfg.G.style_dim; np = m.G.p->n_param;
    nout = B * m.cfg.G.input_nc * 64 * 32 * L;
    z = hrand(B * zd, -1.0f, 1.0f); Rw = hrand(nout, -1.0f, 1.0f);
    g32 = hnew(np); g16 = hnew(np); gdev = hnew(np); gz32 = hnew(B * zd); gz16 = hnew(B * zd); gzdev = hnew(B * zd);
    higan_cuda_backend(&be, &G);
    ok(higan_cuda_params_init(&G, &dp, m.G.p), "Generator mirror");
    ok(higan_cuda_params_upload(&G, &dp, m.G.p, HIGAN_CUDA_ALL), "upload (before the CPU steps change buffers)");
    ok(higan_arena_init(&ch, (size_t)256 << 20), "CPU arena");
    higan_tape_init(&tc, &ch, 1024);
    {   // the CPU in fp32, then in bf16, from the same state (buffers saved and restored)
        float *buf = hcopy(m.G.p->buffer, m.G.p->n_buffer);
        int prec;
        for (prec = 0; prec < 2; ++prec) {
            memcpy(m.G.p->buffer, buf, sizeof(float) * (size_t)m.G.p->n_buffer);
            higan_params_zero_grad(m.G.p);
            higan_set_precision(prec ? HIGAN_PRECISION_BF16 : HIGAN_PRECISION_FP32);
            lv = gen_train_step(&m, &tc, z, Rw, 0, &zv);
            higan_set_precision(HIGAN_PRECISION_FP32);
            CHECK(lv != NULL, "CPU step (%s)", prec ? "bf16" : "fp32");
            if (!lv) goto done;
            *(prec ? &l16 : &l32) = lv->data[0];
            memcpy(prec ? g16 : g32, m.G.p->grad, sizeof(float) * (size_t)np);
            memcpy(prec ? gz16 : gz32, zv->grad, sizeof(float) * (size_t)(B * zd));
        }
        memcpy(m.G.p->buffer, buf, sizeof(float) * (size_t)m.G.p->n_buffer);
    }
    guard(1);
    higan_cuda_params_attach(&dp, m.G.p);
    dev_tape_open(&td, &hh, &dd, &be, (size_t)8 << 20, (size_t)256 << 20, 1024);
    ok(higan_cuda_params_zero_grad(&G, &dp), "device zero_grad");
    ok(higan_cuda_set_precision(&G, HIGAN_PRECISION_BF16), "precision bf16");
    lv = gen_train_step(&m, &td, z, Rw, 1, &zv);
    CHECK(lv != NULL, "device step in bf16 (%s)", lv ? "ok" : higan_last_error());
    if (lv) {
        higan_var_read(&td, lv, &ldev, 1);
        ok(higan_cuda_download(&G, gdev, dp.grad, sizeof(float) * (size_t)np), "download gradients");
        ok(higan_cuda_download(&G, gzdev, zv->grad, sizeof(float) * (size_t)(B * zd)), "download dz");
    }
    ok(higan_cuda_set_precision(&G, HIGAN_PRECISION_FP32), "precision fp32");
    ok(higan_tape_sync(&td), "device sync");
    higan_cuda_params_attach(NULL, m.G.p);
    dev_tape_close(&td, &hh, &dd, &be);
    guard(0);
    if (lv) {
        e_cpu = rel_err(g16, g32, np); e_dev = rel_err(gdev, g16, np);
        ez_cpu = rel_err(gz16, gz32, B * zd); ez_dev = rel_err(gzdev, gz16, B * zd);
        printf("  Generator step, loss: fp32 %.9g, CPU bf16 %.9g, device bf16 %.9g; parameter gradients: "
               "CPU bf16 vs fp32 %.3g, device vs CPU bf16 %.3g; dL/dz: %.3g, %.3g\n", (double)l32, (double)l16,
               (double)ldev, e_cpu, e_dev, ez_cpu, ez_dev);
        CHECK(fabs((double)ldev - (double)l16) <= 1e-3 * fabs((double)l16),
              "bf16 Generator step: device loss %.9g within 1e-3 (relative) of the CPU's bf16 %.9g", (double)ldev,
              (double)l16);
        CHECK(e_dev <= 5e-2 && ez_dev <= 5e-2,
              "bf16 Generator step: device gradients within 5e-2 of the largest of the CPU's bf16 (%.3g, dz %.3g)",
              e_dev, ez_dev);
        CHECK(e_dev < e_cpu && ez_dev < ez_cpu, "bf16 Generator step: the device is closer to the CPU's bf16 than "
              "bf16 is to fp32 (gradients %.3g < %.3g, dz %.3g < %.3g)", e_dev, e_cpu, ez_dev, ez_cpu);
        CHECK(e_cpu > 1e-4, "bf16 vs fp32 on the CPU: %.3g (the precision changed something)", e_cpu);
    }
done:
    higan_cuda_params_free(&dp);
    higan_tape_free(&tc);
    higan_arena_free(&ch);
    higan_model_free(&m);
}

int main(void) {
    if (!cuda_test_begin("test_cuda_perf")) return cuda_test_skip();
    test_device_recycling();
    test_bf16_gemm();
    test_bf16_conv();
    test_bf16_generator();
    return cuda_test_end();
}
