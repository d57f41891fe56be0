/* test_conv: conv2d and linear, at every CPU level this machine has.
   (a) finite-difference gradient checks of the tape ops (asymmetric padding, stride 2, 5x5,
       1x1, no bias, linear 2-D and 3-D);
   (b) PyTorch oracle fixtures (tests/oracle/conv_*.safetensors, make_conv.py): forward, dx,
       dw, db through the tape ops;
   (c) the GEMM paths against the direct reference loops on shapes large enough for several
       K blocks and tiles, and 1 vs 2 threads bit-identical;
   (d) each way of running a pass (packed GEMM, channel-vector and pixel-vector direct
       convolution: higan__conv_force) on shapes that reach their edge cases: channel panels
       and tiles not filled, row tails of pixel vectors, samples split into row chunks, no
       padding (read in place), strides, asymmetric padding;
   (e) nearest upsampling fused into the convolution (higan_upsample_conv2d) against upsample +
       the reference loops, threads, gradients. */
#define HIGAN_IMPLEMENTATION
#include "higan.h"
#include "check.h"

static const char *lvl(void) { return higan_cpu_level_name(higan_cpu_level()); }

/* ---- (a) gradient checks --------------------------------------------------------------- */
typedef struct { int64_t sh, sw, pt, pb, pl, pr; int bias; } conv_cfg;
static higan_var *build_conv(higan_tape *t, higan_var **in, void *ctx) {
    const conv_cfg *c = (const conv_cfg *)ctx;
    return higan_conv2d(t, in[0], in[1], c->bias ? in[2] : NULL, c->sh, c->sw, c->pt, c->pb, c->pl, c->pr);
}
static void gradcheck_conv(const char *name, int64_t N, int64_t IC, int64_t H, int64_t W, int64_t OC,
                           int64_t KH, int64_t KW, conv_cfg cfg) {
    check_input in[3];
    char label[128];
    int k;
    in[0].ndim = 4; in[0].shape[0] = N; in[0].shape[1] = IC; in[0].shape[2] = H; in[0].shape[3] = W;
    in[1].ndim = 4; in[1].shape[0] = OC; in[1].shape[1] = IC; in[1].shape[2] = KH; in[1].shape[3] = KW;
    in[2].ndim = 1; in[2].shape[0] = OC;
    in[0].data = check_rand_array(N * IC * H * W);
    in[1].data = check_rand_array(OC * IC * KH * KW);
    in[2].data = check_rand_array(OC);
    for (k = 0; k < 3; ++k) in[k].grad = 1;
    snprintf(label, sizeof label, "%s conv2d %s", lvl(), name);
    /* conv is linear in each input: central differences are exact up to float rounding */
    check_gradients(label, build_conv, &cfg, in, cfg.bias ? 3 : 2, 1e-2f, 1e-3f, 1e-3f);
    for (k = 0; k < 3; ++k) free(in[k].data);
}
static higan_var *build_linear(higan_tape *t, higan_var **in, void *ctx) {
    return higan_linear(t, in[0], in[1], *(const int *)ctx ? in[2] : NULL);
}
static void gradcheck_linear(const char *name, int ndim, const int64_t *xshape, int64_t OUT, int bias) {
    check_input in[3];
    char label[128];
    int64_t n = 1, IN = xshape[ndim - 1];
    int k;
    in[0].ndim = ndim;
    for (k = 0; k < ndim; ++k) { in[0].shape[k] = xshape[k]; n *= xshape[k]; }
    in[1].ndim = 2; in[1].shape[0] = OUT; in[1].shape[1] = IN;
    in[2].ndim = 1; in[2].shape[0] = OUT;
    in[0].data = check_rand_array(n);
    in[1].data = check_rand_array(OUT * IN);
    in[2].data = check_rand_array(OUT);
    for (k = 0; k < 3; ++k) in[k].grad = 1;
    snprintf(label, sizeof label, "%s linear %s", lvl(), name);
    check_gradients(label, build_linear, &bias, in, bias ? 3 : 2, 1e-2f, 1e-3f, 1e-3f);
    for (k = 0; k < 3; ++k) free(in[k].data);
}
static conv_cfg cfg(int64_t sh, int64_t sw, int64_t pt, int64_t pb, int64_t pl, int64_t pr, int bias) {
    conv_cfg c;
    c.sh = sh; c.sw = sw; c.pt = pt; c.pb = pb; c.pl = pl; c.pr = pr; c.bias = bias;
    return c;
}
static void gradchecks(void) {
    static const int64_t x2[2] = {3, 5}, x3[3] = {2, 3, 5};
    gradcheck_conv("3x3 pad 1", 2, 3, 5, 6, 4, 3, 3, cfg(1, 1, 1, 1, 1, 1, 1));
    gradcheck_conv("3x3 asym pad (0,1,2,1) stride 2", 2, 2, 6, 7, 3, 3, 3, cfg(2, 2, 0, 1, 2, 1, 1));
    gradcheck_conv("5x5 stride 2 pad 0", 1, 2, 9, 8, 3, 5, 5, cfg(2, 2, 0, 0, 0, 0, 1));
    gradcheck_conv("1x1 no bias", 2, 3, 4, 5, 4, 1, 1, cfg(1, 1, 0, 0, 0, 0, 0));
    gradcheck_conv("1x1 stride 2 pad 1", 1, 3, 5, 4, 2, 1, 1, cfg(2, 2, 1, 1, 1, 1, 1));
    gradcheck_conv("2x3 stride (1,2) no bias", 2, 2, 5, 7, 3, 2, 3, cfg(1, 2, 1, 0, 0, 1, 0));
    gradcheck_linear("2-D", 2, x2, 4, 1);
    gradcheck_linear("3-D no bias", 3, x3, 4, 0);
}

/* ---- (b) PyTorch oracle ------------------------------------------------------------------ */
static void oracle_conv(const char *file) {
    higan_safetensors st;
    int64_t cfgv[14], nx = 0, nw = 0, ny = 0, i;
    float *x, *w, *b = NULL, *dy, *y_ref, *dx_ref, *dw_ref, *db_ref = NULL;
    higan_arena arena;
    higan_tape tape;
    higan_var *vx, *vw, *vb = NULL, *vy;
    int64_t xs[4], ws[4], bs[1];
    char label[160];
    if (!check_open_fixture(&st, file)) return;
    if (higan_safetensors_read_i64(&st, "config", cfgv, 14) != HIGAN_OK) {
        CHECK(0, "%s: config: %s", file, higan_last_error());
        higan_safetensors_free(&st);
        return;
    }
    x = check_load(&st, "x", &nx); w = check_load(&st, "w", &nw); dy = check_load(&st, "dy", &ny);
    y_ref = check_load(&st, "y", NULL); dx_ref = check_load(&st, "dx", NULL); dw_ref = check_load(&st, "dw", NULL);
    if (cfgv[13]) { b = check_load(&st, "b", NULL); db_ref = check_load(&st, "db", NULL); }
    if (!x || !w || !dy || !y_ref || !dx_ref || !dw_ref || (cfgv[13] && (!b || !db_ref))) goto done;
    for (i = 0; i < 4; ++i) { xs[i] = cfgv[i]; }
    ws[0] = cfgv[4]; ws[1] = cfgv[1]; ws[2] = cfgv[5]; ws[3] = cfgv[6]; bs[0] = cfgv[4];
    higan_arena_init(&arena, (size_t)8 << 20);
    higan_tape_init(&tape, &arena, 64);
    vx = higan_var_wrap(&tape, x, 4, xs); vx->requires_grad = 1;
    vw = higan_var_wrap(&tape, w, 4, ws); vw->requires_grad = 1;
    if (b) { vb = higan_var_wrap(&tape, b, 1, bs); vb->requires_grad = 1; }
    vy = higan_conv2d(&tape, vx, vw, vb, cfgv[7], cfgv[8], cfgv[9], cfgv[10], cfgv[11], cfgv[12]);
    CHECK(vy && higan_var_numel(vy) == ny, "%s %s: output shape", lvl(), file);
    if (vy && higan_var_numel(vy) == ny) {
        snprintf(label, sizeof label, "%s %s y", lvl(), file);
        check_close(label, vy->data, y_ref, ny, 1e-5f, 1e-4f);
        CHECK(higan_tape_backward(&tape, vy, dy) == HIGAN_OK, "%s %s: backward", lvl(), file);
        snprintf(label, sizeof label, "%s %s dx", lvl(), file);
        check_close(label, vx->grad, dx_ref, nx, 1e-5f, 1e-4f);
        snprintf(label, sizeof label, "%s %s dw", lvl(), file);
        check_close(label, vw->grad, dw_ref, nw, 1e-5f, 1e-4f);
        if (vb) {
            snprintf(label, sizeof label, "%s %s db", lvl(), file);
            check_close(label, vb->grad, db_ref, cfgv[4], 1e-5f, 1e-4f);
        }
    }
    higan_tape_free(&tape);
    higan_arena_free(&arena);
done:
    free(x); free(w); free(b); free(dy); free(y_ref); free(dx_ref); free(dw_ref); free(db_ref);
    higan_safetensors_free(&st);
}

static void oracle_linear_case(const higan_safetensors *st, const char *tag, int bias) {
    char nm[32], label[160];
    const higan_st_tensor *tx;
    float *x, *w, *b = NULL, *dy, *y_ref, *dx_ref, *dw_ref, *db_ref = NULL;
    int64_t nx = 0, nw = 0, ny = 0, nb = 0, ws[2];
    higan_arena arena;
    higan_tape tape;
    higan_var *vx, *vw, *vb = NULL, *vy;
    snprintf(nm, sizeof nm, "x%s", tag); tx = higan_safetensors_find(st, nm);
    x = check_load(st, nm, &nx);
    snprintf(nm, sizeof nm, "w%s", tag); w = check_load(st, nm, &nw);
    snprintf(nm, sizeof nm, "dy%s", tag); dy = check_load(st, nm, &ny);
    snprintf(nm, sizeof nm, "y%s", tag); y_ref = check_load(st, nm, NULL);
    snprintf(nm, sizeof nm, "dx%s", tag); dx_ref = check_load(st, nm, NULL);
    snprintf(nm, sizeof nm, "dw%s", tag); dw_ref = check_load(st, nm, NULL);
    if (bias) {
        snprintf(nm, sizeof nm, "b%s", tag); b = check_load(st, nm, &nb);
        snprintf(nm, sizeof nm, "db%s", tag); db_ref = check_load(st, nm, NULL);
    }
    if (!tx || !x || !w || !dy || !y_ref || !dx_ref || !dw_ref || (bias && (!b || !db_ref))) goto done;
    ws[1] = tx->shape[tx->ndim - 1]; ws[0] = nw / ws[1];
    higan_arena_init(&arena, (size_t)1 << 20);
    higan_tape_init(&tape, &arena, 64);
    vx = higan_var_wrap(&tape, x, tx->ndim, tx->shape); vx->requires_grad = 1;
    vw = higan_var_wrap(&tape, w, 2, ws); vw->requires_grad = 1;
    if (b) { vb = higan_var_wrap(&tape, b, 1, &nb); vb->requires_grad = 1; }
    vy = higan_linear(&tape, vx, vw, vb);
    CHECK(vy && higan_var_numel(vy) == ny && vy->ndim == tx->ndim, "%s linear%s: output shape", lvl(), tag);
    if (vy && higan_var_numel(vy) == ny) {
        snprintf(label, sizeof label, "%s linear%s y", lvl(), tag);
        check_close(label, vy->data, y_ref, ny, 1e-5f, 1e-4f);
        CHECK(higan_tape_backward(&tape, vy, dy) == HIGAN_OK, "%s linear%s: backward", lvl(), tag);
        snprintf(label, sizeof label, "%s linear%s dx", lvl(), tag);
        check_close(label, vx->grad, dx_ref, nx, 1e-5f, 1e-4f);
        snprintf(label, sizeof label, "%s linear%s dw", lvl(), tag);
        check_close(label, vw->grad, dw_ref, nw, 1e-5f, 1e-4f);
        if (vb) {
            snprintf(label, sizeof label, "%s linear%s db", lvl(), tag);
            check_close(label, vb->grad, db_ref, nb, 1e-5f, 1e-4f);
        }
    }
    higan_tape_free(&tape);
    higan_arena_free(&arena);
done:
    free(x); free(w); free(b); free(dy); free(y_ref); free(dx_ref); free(dw_ref); free(db_ref);
}
static void oracles(void) {
    static const char *files[] = {"conv_3x3p1.safetensors", "conv_5x5s2.safetensors",
                                  "conv_1x1.safetensors", "conv_asym.safetensors",
                                  "conv_s21.safetensors", "conv_1x1s2.safetensors"};
    higan_safetensors st;
    int i;
    for (i = 0; i < (int)(sizeof files / sizeof files[0]); ++i) oracle_conv(files[i]);
    if (check_open_fixture(&st, "conv_linear.safetensors")) {
        oracle_linear_case(&st, "_2d", 1);
        oracle_linear_case(&st, "_3d", 0);
        higan_safetensors_free(&st);
    }
}

/* ---- (c) GEMM paths vs the direct loops; thread invariance --------------------------------- */
static void versus_ref(const char *name, higan_conv2d_shape s, int bias) {
    const int64_t OH = higan_conv2d_out_h(&s), OW = higan_conv2d_out_w(&s);
    const int64_t nx = s.N * s.IC * s.H * s.W, nw = s.OC * s.IC * s.KH * s.KW, ny = s.N * s.OC * OH * OW;
    float *x = check_rand_array(nx), *w = check_rand_array(nw), *b = bias ? check_rand_array(s.OC) : NULL, *dy = check_rand_array(ny);
    float *y = check_rand_array(ny), *yr = check_rand_array(ny);
    float *dx = check_rand_array(nx), *dw = check_rand_array(nw), *db = check_rand_array(s.OC);
    float *dxr = (float *)malloc(sizeof(float) * (size_t)nx), *dwr = (float *)malloc(sizeof(float) * (size_t)nw);
    float *dbr = (float *)malloc(sizeof(float) * (size_t)s.OC);
    float *y2 = (float *)malloc(sizeof(float) * (size_t)ny), *dx2 = (float *)malloc(sizeof(float) * (size_t)nx);
    float *dw2 = (float *)malloc(sizeof(float) * (size_t)nw), *db2 = (float *)malloc(sizeof(float) * (size_t)s.OC);
    float *dx0 = (float *)malloc(sizeof(float) * (size_t)nx), *dw0 = (float *)malloc(sizeof(float) * (size_t)nw);
    float *db0 = (float *)malloc(sizeof(float) * (size_t)s.OC);
    int64_t KD = s.IC * s.KH * s.KW;
    float tol = 2e-6f * (float)KD;       /* fp32 sums of KD products of values in [-1, 1] */
    float tolw = 2e-6f * (float)(s.N * OH * OW);
    higan_arena arena;
    char label[200];
    int keep = higan_get_num_threads();
    higan_arena_init(&arena, higan_conv2d_scratch_bytes(&s) + 4096);
    /* backward accumulates: start every gradient from the same nonzero values */
    memcpy(dx0, dx, sizeof(float) * (size_t)nx); memcpy(dxr, dx, sizeof(float) * (size_t)nx);
    memcpy(dw0, dw, sizeof(float) * (size_t)nw); memcpy(dwr, dw, sizeof(float) * (size_t)nw);
    memcpy(db0, db, sizeof(float) * (size_t)s.OC); memcpy(dbr, db, sizeof(float) * (size_t)s.OC);
    higan_set_num_threads(1);
    CHECK(higan_conv2d_forward(y, x, w, b, &s, &arena) == HIGAN_OK, "%s %s forward status", lvl(), name);
    CHECK(higan_conv2d_backward(dx, dw, db, dy, x, w, &s, &arena) == HIGAN_OK && arena.used == 0,
          "%s %s backward status, scratch released", lvl(), name);
    higan_conv2d_forward_ref(yr, x, w, b, &s);
    higan_conv2d_backward_ref(dxr, dwr, dbr, dy, x, w, &s);
    snprintf(label, sizeof label, "%s %s y vs direct loops", lvl(), name);
    check_close(label, y, yr, ny, tol, 1e-5f);
    snprintf(label, sizeof label, "%s %s dx vs direct loops", lvl(), name);
    check_close(label, dx, dxr, nx, 2e-6f * (float)(s.OC * s.KH * s.KW) + 1e-5f, 1e-5f);
    snprintf(label, sizeof label, "%s %s dw vs direct loops", lvl(), name);
    check_close(label, dw, dwr, nw, tolw, 1e-5f);
    snprintf(label, sizeof label, "%s %s db vs direct loops", lvl(), name);
    check_close(label, db, dbr, s.OC, tolw, 1e-5f);
    /* two threads: the same bits */
    memcpy(dx2, dx0, sizeof(float) * (size_t)nx);
    memcpy(dw2, dw0, sizeof(float) * (size_t)nw);
    memcpy(db2, db0, sizeof(float) * (size_t)s.OC);
    higan_set_num_threads(2);
    higan_conv2d_forward(y2, x, w, b, &s, &arena);
    higan_conv2d_backward(dx2, dw2, db2, dy, x, w, &s, &arena);
    higan_set_num_threads(keep);
    CHECK(!memcmp(y, y2, sizeof(float) * (size_t)ny) && !memcmp(dx, dx2, sizeof(float) * (size_t)nx) &&
          !memcmp(dw, dw2, sizeof(float) * (size_t)nw) && !memcmp(db, db2, sizeof(float) * (size_t)s.OC),
          "%s %s: 1 and 2 threads bit-identical (y, dx, dw, db)", lvl(), name);
    /* NULL gradients are skipped */
    memcpy(dx2, dx0, sizeof(float) * (size_t)nx);
    higan_conv2d_backward(dx2, NULL, NULL, dy, x, w, &s, &arena);
    CHECK(!memcmp(dx, dx2, sizeof(float) * (size_t)nx), "%s %s: dx alone equals dx with dw, db", lvl(), name);
    higan_arena_free(&arena);
    free(x); free(w); free(b); free(dy); free(y); free(yr); free(dx); free(dw); free(db);
    free(dxr); free(dwr); free(dbr); free(y2); free(dx2); free(dw2); free(db2); free(dx0); free(dw0); free(db0);
}
static void large_cases(void) {
    /* KD = 360 > one K block; OC and pixels not multiples of any tile */
    versus_ref("3x3 p1 40->35 11x13", higan_conv2d_make_shape(2, 40, 11, 13, 35, 3, 3, 1, 1, 1, 1, 1, 1), 1);
    versus_ref("5x5 s2 16->21 19x23", higan_conv2d_make_shape(2, 16, 19, 23, 21, 5, 5, 2, 2, 0, 0, 0, 0), 1);
    versus_ref("3x3 asym (0,1,2,1) s(2,1)", higan_conv2d_make_shape(3, 9, 10, 17, 7, 3, 3, 2, 1, 0, 1, 2, 1), 0);
    versus_ref("1x1 300->33 9x31", higan_conv2d_make_shape(2, 300, 9, 31, 33, 1, 1, 1, 1, 0, 0, 0, 0), 0);
    versus_ref("empty batch N=0", higan_conv2d_make_shape(0, 3, 5, 5, 2, 3, 3, 1, 1, 1, 1, 1, 1), 1);
    versus_ref("4x4 s2 p1 24->40 16x40", higan_conv2d_make_shape(2, 24, 16, 40, 40, 4, 4, 2, 2, 1, 1, 1, 1), 1);
    /* dx scratch in groups of 2 samples (then 1), and in pixel blocks of one sample */
    versus_ref("3x3 p1 32->5 50x100 N=3", higan_conv2d_make_shape(3, 32, 50, 100, 5, 3, 3, 1, 1, 1, 1, 1, 1), 1);
    versus_ref("3x3 p1 64->4 96x96 (pixel blocks)", higan_conv2d_make_shape(1, 64, 96, 96, 4, 3, 3, 1, 1, 1, 1, 1, 1), 1);
}
static const char *way_name(int way) {
    return way < 0 ? "auto" : way == 0 ? "packed" : way == 1 ? "chanvec" : "pixvec";
}
static void forced_ways(void) {
    int way;
    for (way = 0; way <= 2; ++way) {
        char nm[160];
        higan__conv_force = way;
#define W(name, shape, bias) \
        snprintf(nm, sizeof nm, "[%s] %s", way_name(way), name); versus_ref(nm, shape, bias)
        W("3x3 p1 40->35 11x13", higan_conv2d_make_shape(2, 40, 11, 13, 35, 3, 3, 1, 1, 1, 1, 1, 1), 1);
        W("3x3 p1 24->80 7x21 (2 channel panels)", higan_conv2d_make_shape(2, 24, 7, 21, 80, 3, 3, 1, 1, 1, 1, 1, 1), 1);
        W("3x3 p1 3->1 9x37 (one output channel)", higan_conv2d_make_shape(3, 3, 9, 37, 1, 3, 3, 1, 1, 1, 1, 1, 1), 1);
        W("3x3 p1 5->3 8x17", higan_conv2d_make_shape(2, 5, 8, 17, 3, 3, 3, 1, 1, 1, 1, 1, 1), 0);
        W("3x3 p1 7->9 6x40", higan_conv2d_make_shape(2, 7, 6, 40, 9, 3, 3, 1, 1, 1, 1, 1, 1), 1);
        W("3x3 p1 4->4 4x4 (tiny images)", higan_conv2d_make_shape(5, 4, 4, 4, 4, 3, 3, 1, 1, 1, 1, 1, 1), 1);
        W("3x3 p1 17->18 3x5", higan_conv2d_make_shape(7, 17, 3, 5, 18, 3, 3, 1, 1, 1, 1, 1, 1), 1);
        W("3x3 p0 20->17 5x19 (no padding)", higan_conv2d_make_shape(2, 20, 5, 19, 17, 3, 3, 1, 1, 0, 0, 0, 0), 1);
        W("3x3 asym (0,2,2,1) 16->20 9x23", higan_conv2d_make_shape(2, 16, 9, 23, 20, 3, 3, 1, 1, 0, 2, 2, 1), 1);
        W("3x3 s(2,1) p1 16->19 10x33", higan_conv2d_make_shape(2, 16, 10, 33, 19, 3, 3, 2, 1, 1, 1, 1, 1), 1);
        W("5x5 s2 p2 18->16 13x29", higan_conv2d_make_shape(2, 18, 13, 29, 16, 5, 5, 2, 2, 2, 2, 2, 2), 0);
        W("1x3 p(0,0,1,1) 16->16 6x50", higan_conv2d_make_shape(2, 16, 6, 50, 16, 1, 3, 1, 1, 0, 0, 1, 1), 1);
        /* one sample larger than a chunk: output rows in chunks */
        W("3x3 p1 64->20 36x130 (row chunks)", higan_conv2d_make_shape(1, 64, 36, 130, 20, 3, 3, 1, 1, 1, 1, 1, 1), 1);
        W("3x3 p1 8->4 70x300 (row chunks, few channels)", higan_conv2d_make_shape(2, 8, 70, 300, 4, 3, 3, 1, 1, 1, 1, 1, 1), 1);
#undef W
    }
    higan__conv_force = -1;
}

static void linear_threads(void) {
    const int64_t N = 37, IN = 300, OUT = 130;
    float *x = check_rand_array(N * IN), *w = check_rand_array(OUT * IN), *b = check_rand_array(OUT), *dy = check_rand_array(N * OUT);
    float *y1 = check_rand_array(N * OUT), *y2 = check_rand_array(N * OUT), *dx1 = check_rand_array(N * IN);
    float *dx2 = (float *)malloc(sizeof(float) * (size_t)(N * IN)), *dw1 = check_rand_array(OUT * IN);
    float *dw2 = (float *)malloc(sizeof(float) * (size_t)(OUT * IN)), *db1 = check_rand_array(OUT);
    float *db2 = (float *)malloc(sizeof(float) * (size_t)OUT);
    float *yr = (float *)malloc(sizeof(float) * (size_t)(N * OUT));
    int keep = higan_get_num_threads();
    int64_t i, j;
    char label[100];
    memcpy(dx2, dx1, sizeof(float) * (size_t)(N * IN));
    memcpy(dw2, dw1, sizeof(float) * (size_t)(OUT * IN));
    memcpy(db2, db1, sizeof(float) * (size_t)OUT);
    higan_set_num_threads(1);
    higan_linear_forward(y1, x, w, b, N, IN, OUT);
    higan_linear_backward(dx1, dw1, db1, dy, x, w, N, IN, OUT);
    higan_set_num_threads(2);
    higan_linear_forward(y2, x, w, b, N, IN, OUT);
    higan_linear_backward(dx2, dw2, db2, dy, x, w, N, IN, OUT);
    higan_set_num_threads(keep);
    CHECK(!memcmp(y1, y2, sizeof(float) * (size_t)(N * OUT)) && !memcmp(dx1, dx2, sizeof(float) * (size_t)(N * IN)) &&
          !memcmp(dw1, dw2, sizeof(float) * (size_t)(OUT * IN)) && !memcmp(db1, db2, sizeof(float) * (size_t)OUT),
          "%s linear %lldx%lld->%lld: 1 and 2 threads bit-identical", lvl(), (long long)N, (long long)IN, (long long)OUT);
    for (i = 0; i < N; ++i)
        for (j = 0; j < OUT; ++j) {
            double acc = b[j];
            int64_t k;
            for (k = 0; k < IN; ++k) acc += (double)x[i * IN + k] * (double)w[j * IN + k];
            yr[i * OUT + j] = (float)acc;
        }
    snprintf(label, sizeof label, "%s linear forward vs double loop", lvl());
    check_close(label, y1, yr, N * OUT, 1e-4f, 1e-5f);
    free(x); free(w); free(b); free(dy); free(y1); free(y2); free(dx1); free(dx2); free(dw1); free(dw2);
    free(db1); free(db2); free(yr);
}

/* ---- (e) nearest upsampling fused into the convolution (higan_conv2d_upsampled_forward,
   higan_upsample_conv2d): against upsample + the reference loops, 1 vs 2 threads, and the
   tape op's gradients by finite differences ---------------------------------------------- */
typedef struct { int uh, uw; int64_t pt, pb, pl, pr; int bias; } upconv_cfg;
static higan_var *build_upconv(higan_tape *t, higan_var **in, void *ctx) {
    const upconv_cfg *c = (const upconv_cfg *)ctx;
    return higan_upsample_conv2d(t, in[0], in[1], c->bias ? in[2] : NULL, c->uh, c->uw, c->pt, c->pb, c->pl, c->pr);
}
static void upconv_case(int64_t N, int64_t IC, int64_t H, int64_t W, int64_t OC, int64_t K, upconv_cfg c) {
    const higan_conv2d_shape s = higan_conv2d_make_shape(N, IC, c.uh * H, c.uw * W, OC, K, K, 1, 1, c.pt, c.pb,
                                                         c.pl, c.pr);
    const int64_t ny = N * OC * higan_conv2d_out_h(&s) * higan_conv2d_out_w(&s);
    float *x = check_rand_array(N * IC * H * W), *w = check_rand_array(OC * IC * K * K), *b = check_rand_array(OC);
    float *xu = (float *)malloc(sizeof(float) * (size_t)(N * IC * H * W * c.uh * c.uw));
    float *y1 = (float *)malloc(sizeof(float) * (size_t)ny), *y2 = (float *)malloc(sizeof(float) * (size_t)ny);
    float *yr = (float *)malloc(sizeof(float) * (size_t)ny);
    int keep = higan_get_num_threads();
    char label[160];
    higan_arena a;
    higan_status st1, st2;
    higan_arena_init(&a, (size_t)64 << 20);
    snprintf(label, sizeof label, "%s upsampled conv %lldx%lldx%lldx%lld -> %lld, %lldx%lld, up %dx%d, pad %lld %lld %lld %lld%s",
             lvl(), (long long)N, (long long)IC, (long long)H, (long long)W, (long long)OC, (long long)K, (long long)K,
             c.uh, c.uw, (long long)c.pt, (long long)c.pb, (long long)c.pl, (long long)c.pr, c.bias ? "" : ", no bias");
    higan_upsample_nearest_forward(xu, x, N, IC, H, W, c.uh, c.uw);
    higan_conv2d_forward_ref(yr, xu, w, c.bias ? b : NULL, &s);
    higan_set_num_threads(1);
    st1 = higan_conv2d_upsampled_forward(y1, x, w, c.bias ? b : NULL, &s, c.uh, c.uw, &a);
    higan_set_num_threads(2);
    st2 = higan_conv2d_upsampled_forward(y2, x, w, c.bias ? b : NULL, &s, c.uh, c.uw, &a);
    higan_set_num_threads(keep);
    CHECK(st1 == HIGAN_OK && st2 == HIGAN_OK && a.used == 0, "%s: ok, scratch given back", label);
    check_close(label, y1, yr, ny, 1e-4f, 1e-4f);
    CHECK(!memcmp(y1, y2, sizeof(float) * (size_t)ny), "%s: 1 and 2 threads bit-identical", label);
    {   /* the summed weights given once: the same numbers */
        const int64_t nw = higan_conv2d_upsampled_weights_size(OC, IC, K, K, c.pt, c.pl, c.uh, c.uw);
        float *wp = (float *)malloc(sizeof(float) * (size_t)nw);
        higan_conv2d_upsampled_weights(wp, w, OC, IC, K, K, c.pt, c.pl, c.uh, c.uw);
        st1 = higan_conv2d_upsampled_forward_wp(y2, x, NULL, wp, c.bias ? b : NULL, &s, c.uh, c.uw, &a);
        CHECK(st1 == HIGAN_OK && !memcmp(y1, y2, sizeof(float) * (size_t)ny), "%s: with the weights summed beforehand", label);
        free(wp);
    }
    higan_arena_free(&a);
    free(x); free(w); free(b); free(xu); free(y1); free(y2); free(yr);
}
static void upconv_gradcheck(int64_t N, int64_t IC, int64_t H, int64_t W, int64_t OC, int64_t K, upconv_cfg c) {
    check_input in[3];
    char label[128];
    int k;
    in[0].ndim = 4; in[0].shape[0] = N; in[0].shape[1] = IC; in[0].shape[2] = H; in[0].shape[3] = W;
    in[1].ndim = 4; in[1].shape[0] = OC; in[1].shape[1] = IC; in[1].shape[2] = K; in[1].shape[3] = K;
    in[2].ndim = 1; in[2].shape[0] = OC;
    in[0].data = check_rand_array(N * IC * H * W);
    in[1].data = check_rand_array(OC * IC * K * K);
    in[2].data = check_rand_array(OC);
    for (k = 0; k < 3; ++k) in[k].grad = 1;
    snprintf(label, sizeof label, "%s upsample_conv2d up %dx%d pad %lld %lld %lld %lld", lvl(), c.uh, c.uw,
             (long long)c.pt, (long long)c.pb, (long long)c.pl, (long long)c.pr);
    check_gradients(label, build_upconv, &c, in, c.bias ? 3 : 2, 1e-2f, 1e-3f, 1e-3f);
    for (k = 0; k < 3; ++k) free(in[k].data);
}
static void upsampled_cases(void) {
    upconv_cfg c;
    c.uh = 2; c.uw = 2; c.pt = 1; c.pb = 1; c.pl = 1; c.pr = 1; c.bias = 1;
    upconv_case(2, 5, 3, 4, 7, 3, c);              /* the GBlocks' conv1 */
    upconv_case(2, 64, 8, 12, 64, 3, c);           /* channel-vector kernels, several tiles */
    upconv_case(1, 48, 16, 40, 1, 3, c);           /* one output channel (pixel vectors) */
    upconv_gradcheck(2, 3, 3, 4, 4, 3, c);
    c.pr = 0;                                      /* the per-word eval: no right padding */
    upconv_case(2, 16, 4, 9, 24, 3, c);
    upconv_gradcheck(1, 2, 3, 3, 3, 3, c);
    c.uw = 1; c.pr = 1;                            /* block 0: rows only */
    upconv_case(3, 32, 4, 8, 40, 3, c);
    upconv_gradcheck(1, 3, 2, 4, 2, 3, c);
    c.uw = 2; c.uh = 1; c.bias = 0;                /* columns only, no bias */
    upconv_case(2, 6, 5, 3, 9, 3, c);
    c.uh = 3; c.uw = 2; c.pt = 2; c.pb = 2; c.pl = 2; c.pr = 1; c.bias = 1;   /* 5x5, odd factor */
    upconv_case(2, 4, 3, 5, 6, 5, c);
    upconv_gradcheck(1, 2, 2, 3, 2, 5, c);
    c.uh = 1; c.uw = 1; c.pt = 0; c.pb = 1; c.pl = 1; c.pr = 0;               /* no upsampling */
    upconv_case(2, 8, 6, 7, 5, 3, c);
}

int main(void) {
    check_rng_state = 777ull;                 /* the sequence this file always used */
    higan_cpu best = higan_cpu_level();
    int lv;
    for (lv = HIGAN_CPU_SCALAR; lv <= HIGAN_CPU_AMX; ++lv) {
        /* HIGAN_CPU=<level> in the environment: test only that level. The fp32 kernels of the
           bf16 levels are the AVX-512 ones: run there only when asked for (test_bf16 covers
           their bf16 kernels). */
        if (getenv("HIGAN_CPU") && *getenv("HIGAN_CPU")) { if (lv != (int)best) continue; }
        else if (lv > HIGAN_CPU_AVX512) continue;
        if (higan_cpu_set_level((higan_cpu)lv) != HIGAN_OK) {
            printf("skip level %s: %s\n", higan_cpu_level_name((higan_cpu)lv), higan_last_error());
            continue;
        }
        gradchecks();
        oracles();
        large_cases();
        if (higan_cpu_level() != HIGAN_CPU_SCALAR) forced_ways();   /* scalar: packed GEMM only */
        linear_threads();
        upsampled_cases();
    }
    higan_cpu_set_level(best);
    higan_gemm_free_buffers();
    {   /* every way (direct kernels or the GEMM) counts its work in higan_gemm_flops */
        higan_conv2d_shape cs = higan_conv2d_make_shape(2, 16, 8, 8, 16, 3, 3, 1, 1, 1, 1, 1, 1);
        const uint64_t work = 2u * 2 * 16 * (16 * 9) * 64;     /* 2 N OC KD P */
        static float cx[2 * 16 * 64], cw[16 * 16 * 9], cy[2 * 16 * 64], cdx[2 * 16 * 64], cdw[16 * 16 * 9];
        higan_arena ca;
        higan_arena_init(&ca, higan_conv2d_scratch_bytes(&cs) + 4096);
        memset(cx, 0, sizeof cx); memset(cw, 0, sizeof cw); memset(cdx, 0, sizeof cdx); memset(cdw, 0, sizeof cdw);
        higan_gemm_flops_reset();
        higan_conv2d_forward(cy, cx, cw, NULL, &cs, &ca);
        CHECK(higan_gemm_flops() == work, "conv forward counts 2*N*OC*KD*P: %llu", (unsigned long long)higan_gemm_flops());
        higan_gemm_flops_reset();
        higan_conv2d_backward(cdx, cdw, NULL, cy, cx, cw, &cs, &ca);
        CHECK(higan_gemm_flops() == 2 * work, "conv backward (dx and dw) counts twice that: %llu", (unsigned long long)higan_gemm_flops());
        higan_arena_free(&ca);
    }
    return check_finish();
}
