/* Tests of the normalisation ops: spectral norm, BatchNorm2d, conditional batch norm,
   embedding. Finite-difference gradient checks and PyTorch oracle comparisons
   (tests/oracle/make_nn.py). */
#define HIGAN_IMPLEMENTATION
#include "higan.h"
#include "check.h"

#define ATOL 1e-5f
#define RTOL 1e-4f

static void fill(float *x, int64_t n, uint64_t seed, float lo, float hi) {
    higan_rng r;
    higan_rng_seed(&r, seed);
    higan_rng_fill_uniform(&r, x, n, lo, hi);
}

/* ================================ gradient checks ====================================== */

/* ---- spectral norm ---- */
typedef struct { float *u0, *u0_init; int64_t out; int train; float sv0; } sn_gc;
static higan_var *build_sn(higan_tape *t, higan_var **in, void *p) {
    sn_gc *c = (sn_gc *)p;
    memcpy(c->u0, c->u0_init, sizeof(float) * (size_t)c->out);   /* same u0 every build */
    return higan_spectral_norm(t, in[0], c->u0, &c->sv0, c->out, c->train);
}

static void gradcheck_spectral_norm(void) {
    /* W [3, 2, 2, 2] -> [3, 8]. BigGAN's gradient holds u and v constant; that is the exact
       derivative of W / sigma(W) only when u0 is the converged top singular vector (sigma is
       then stationary in u and v), so u0 is converged first with the no-gradient helper. */
    enum { OUT = 3, IN = 8 };
    float w[OUT * IN], u0[OUT], u0_init[OUT], v[IN], sigma = 0;
    int it, mode;
    sn_gc c;
    check_input ins[1];
    fill(w, OUT * IN, 11, -1.0f, 1.0f);
    for (it = 0; it < IN; ++it) w[it] += 2.0f * (float)(it % 3) - 1.5f;  /* dominant direction */
    fill(u0_init, OUT, 12, -1.0f, 1.0f);
    for (it = 0; it < 200; ++it)
        sigma = higan_spectral_norm_sigma(u0_init, v, w, u0_init, OUT, IN, HIGAN_SN_EPS);
    CHECK(sigma > 0 && sigma == sigma, "spectral norm: power iteration (sigma %g)", sigma);
    ins[0].data = w; ins[0].ndim = 4; ins[0].grad = 1;
    ins[0].shape[0] = OUT; ins[0].shape[1] = 2; ins[0].shape[2] = 2; ins[0].shape[3] = 2;
    for (mode = 0; mode < 2; ++mode) {
        c.u0 = u0; c.u0_init = u0_init; c.out = OUT; c.train = mode; c.sv0 = 0;
        check_gradients(mode ? "spectral_norm train" : "spectral_norm eval", build_sn, &c, ins, 1,
                        1e-3f, 2e-3f, 1e-2f);
    }
}

/* ---- batch norm ---- */
typedef struct { float rm[3], rv[3], rm0[3], rv0[3]; int64_t nbt; int train, affine; } bn_gc;
static higan_var *build_bn(higan_tape *t, higan_var **in, void *p) {
    bn_gc *c = (bn_gc *)p;
    memcpy(c->rm, c->rm0, sizeof c->rm); memcpy(c->rv, c->rv0, sizeof c->rv);
    return higan_batch_norm2d(t, in[0], c->affine ? in[1] : NULL, c->affine ? in[2] : NULL,
                              c->rm, c->rv, &c->nbt, 0.1f, 1e-5f, c->train);
}

static void gradcheck_batch_norm(void) {
    enum { N = 2, C = 3, H = 2, W = 3 };
    float x[N * C * H * W], wt[C], b[C];
    check_input ins[3];
    bn_gc c;
    int mode, affine, k;
    fill(x, N * C * H * W, 21, -2.0f, 2.0f);
    fill(wt, C, 22, 0.5f, 1.5f);
    fill(b, C, 23, -1.0f, 1.0f);
    fill(c.rm0, C, 24, -0.5f, 0.5f);
    fill(c.rv0, C, 25, 0.5f, 1.5f);
    for (k = 0; k < 3; ++k) { ins[k].ndim = 1; ins[k].shape[0] = C; ins[k].grad = 1; }
    ins[0].data = x; ins[0].ndim = 4;
    ins[0].shape[0] = N; ins[0].shape[1] = C; ins[0].shape[2] = H; ins[0].shape[3] = W;
    ins[1].data = wt; ins[2].data = b;
    for (affine = 1; affine >= 0; --affine)
        for (mode = 1; mode >= 0; --mode) {
            char name[64];
            c.train = mode; c.affine = affine; c.nbt = 0;
            snprintf(name, sizeof name, "batch_norm2d %s %s", affine ? "affine" : "plain",
                     mode ? "train" : "eval");
            check_gradients(name, build_bn, &c, ins, affine ? 3 : 1, 1e-2f, 2e-3f, 1e-2f);
        }
}

/* ---- conditional batch norm ---- */
typedef struct { float sm[3], sv[3], sm0[3], sv0[3]; int train; } cbn_gc;
static higan_var *build_cbn(higan_tape *t, higan_var **in, void *p) {
    cbn_gc *c = (cbn_gc *)p;
    memcpy(c->sm, c->sm0, sizeof c->sm); memcpy(c->sv, c->sv0, sizeof c->sv);
    return higan_cond_batch_norm(t, in[0], in[1], in[2], c->sm, c->sv, 0.1f, 1e-4f, c->train);
}

static void gradcheck_cond_batch_norm(void) {
    enum { N = 2, C = 3, H = 3, W = 2 };
    float x[N * C * H * W], g[N * C], b[N * C];
    check_input ins[3];
    cbn_gc c;
    int mode, k;
    fill(x, N * C * H * W, 31, -1.5f, 2.5f);
    fill(g, N * C, 32, -0.5f, 0.5f);
    fill(b, N * C, 33, -1.0f, 1.0f);
    fill(c.sm0, C, 34, -0.5f, 0.5f);
    fill(c.sv0, C, 35, 0.5f, 1.5f);
    for (k = 1; k < 3; ++k) { ins[k].ndim = 2; ins[k].shape[0] = N; ins[k].shape[1] = C; ins[k].grad = 1; }
    ins[0].data = x; ins[0].ndim = 4; ins[0].grad = 1;
    ins[0].shape[0] = N; ins[0].shape[1] = C; ins[0].shape[2] = H; ins[0].shape[3] = W;
    ins[1].data = g; ins[2].data = b;
    for (mode = 1; mode >= 0; --mode) {
        c.train = mode;
        check_gradients(mode ? "cond_batch_norm train" : "cond_batch_norm eval", build_cbn, &c,
                        ins, 3, 1e-2f, 2e-3f, 1e-2f);
    }
}

/* ---- embedding (no max_norm, no padding: FD sees every row) ---- */
static const int emb_idx[7] = {2, 0, 4, 2, 1, 2, 0};
static higan_var *build_emb(higan_tape *t, higan_var **in, void *p) {
    (void)p;
    return higan_embedding(t, in[0], emb_idx, 7, -1, 0.0f);
}

static void gradcheck_embedding(void) {
    float w[5 * 3];
    check_input ins[1];
    fill(w, 15, 41, -1.0f, 1.0f);
    ins[0].data = w; ins[0].ndim = 2; ins[0].shape[0] = 5; ins[0].shape[1] = 3; ins[0].grad = 1;
    check_gradients("embedding", build_emb, NULL, ins, 1, 1e-2f, 1e-3f, 1e-3f);
}

/* ================================ PyTorch oracle ======================================= */

static higan_var *wrap_fixture(higan_tape *t, const higan_safetensors *st, const char *name,
                               float *data, int requires_grad) {
    const higan_st_tensor *ti = higan_safetensors_find(st, name);
    higan_var *v;
    if (!ti || !data) return NULL;
    v = higan_var_wrap(t, data, ti->ndim, ti->shape);
    if (v) v->requires_grad = requires_grad;
    return v;
}

static void cmp(const higan_safetensors *st, const char *ref_name, const char *label,
                const float *got, int64_t n, float atol, float rtol) {
    int64_t m = 0;
    float *ref = check_load(st, ref_name, &m);
    if (!ref) return;
    if (!got) CHECK(0, "%s: no value computed", label);
    else if (m != n) CHECK(0, "%s: %lld values, fixture has %lld", label, (long long)n, (long long)m);
    else check_close(label, got, ref, n, atol, rtol);
    free(ref);
}

static void oracle_spectral_norm(void) {
    static const char *tags[2] = {"conv", "lin"};
    higan_safetensors st;
    higan_arena A;
    higan_tape T;
    int k, mode;
    if (!check_open_fixture(&st, "nn_spectral_norm.safetensors")) return;
    higan_arena_init(&A, (size_t)1 << 20);
    higan_tape_init(&T, &A, 64);
    for (k = 0; k < 2; ++k) {
        char nm[64], lb[128];
        int64_t nw = 0, nu = 0;
        float *w, *u0, *dy, *u0_init, sv0;
        higan_var *W, *y;
        snprintf(nm, sizeof nm, "%s_w", tags[k]); w = check_load(&st, nm, &nw);
        snprintf(nm, sizeof nm, "%s_u0", tags[k]); u0_init = check_load(&st, nm, &nu);
        snprintf(nm, sizeof nm, "%s_dy", tags[k]); dy = check_load(&st, nm, NULL);
        if (!w || !u0_init || !dy) { free(w); free(u0_init); free(dy); continue; }
        u0 = (float *)malloc(sizeof(float) * (size_t)nu);
        for (mode = 1; mode >= 0; --mode) {
            const char *md = mode ? "train" : "eval";
            memcpy(u0, u0_init, sizeof(float) * (size_t)nu);
            sv0 = 0;
            higan_tape_reset(&T);
            snprintf(nm, sizeof nm, "%s_w", tags[k]);
            W = wrap_fixture(&T, &st, nm, w, 1);
            y = W ? higan_spectral_norm(&T, W, u0, &sv0, nu, mode) : NULL;
            CHECK(y != NULL, "spectral_norm %s %s runs", tags[k], md);
            if (!y) continue;
            CHECK(y->ndim == W->ndim && y->shape[0] == W->shape[0], "spectral_norm keeps the shape");
            CHECK(higan_tape_backward(&T, y, dy) == HIGAN_OK, "spectral_norm backward");
            snprintf(nm, sizeof nm, "%s_%s_y", tags[k], md);
            snprintf(lb, sizeof lb, "spectral_norm %s %s: W/sigma", tags[k], md);
            cmp(&st, nm, lb, y->data, nw, ATOL, RTOL);
            snprintf(nm, sizeof nm, "%s_%s_dw", tags[k], md);
            snprintf(lb, sizeof lb, "spectral_norm %s %s: dW", tags[k], md);
            cmp(&st, nm, lb, W->grad, nw, ATOL, RTOL);
            snprintf(nm, sizeof nm, "%s_%s_u0", tags[k], md);
            snprintf(lb, sizeof lb, "spectral_norm %s %s: u0 after", tags[k], md);
            cmp(&st, nm, lb, u0, nu, ATOL, RTOL);
            snprintf(nm, sizeof nm, "%s_%s_sv0", tags[k], md);
            snprintf(lb, sizeof lb, "spectral_norm %s %s: sv0 after", tags[k], md);
            cmp(&st, nm, lb, &sv0, 1, ATOL, RTOL);
        }
        /* two train steps: u0 carries over; second step under no_grad (buffers still update) */
        memcpy(u0, u0_init, sizeof(float) * (size_t)nu);
        sv0 = 0;
        higan_tape_reset(&T);
        snprintf(nm, sizeof nm, "%s_w", tags[k]);
        W = wrap_fixture(&T, &st, nm, w, 1);
        y = W ? higan_spectral_norm(&T, W, u0, &sv0, nu, 1) : NULL;
        higan_no_grad_begin(&T);
        y = y ? higan_spectral_norm(&T, W, u0, &sv0, nu, 1) : NULL;
        higan_no_grad_end(&T);
        CHECK(y != NULL && !y->requires_grad, "spectral_norm under no_grad records nothing");
        if (y) {
            snprintf(nm, sizeof nm, "%s_train2_y", tags[k]);
            snprintf(lb, sizeof lb, "spectral_norm %s 2nd step: W/sigma", tags[k]);
            cmp(&st, nm, lb, y->data, nw, ATOL, RTOL);
            snprintf(nm, sizeof nm, "%s_train2_u0", tags[k]);
            snprintf(lb, sizeof lb, "spectral_norm %s 2nd step: u0", tags[k]);
            cmp(&st, nm, lb, u0, nu, ATOL, RTOL);
            snprintf(nm, sizeof nm, "%s_train2_sv0", tags[k]);
            snprintf(lb, sizeof lb, "spectral_norm %s 2nd step: sv0", tags[k]);
            cmp(&st, nm, lb, &sv0, 1, ATOL, RTOL);
        }
        free(w); free(u0_init); free(dy); free(u0);
    }
    higan_tape_free(&T);
    higan_arena_free(&A);
    higan_safetensors_free(&st);
}

static void oracle_batch_norm(void) {
    higan_safetensors st;
    higan_arena A;
    higan_tape T;
    float *x, *wt, *b, *rm0, *rv0, *dy, rm[3], rv[3];
    int64_t nx = 0, C = 0, nbt_ref = 0;
    int affine, mode;
    if (!check_open_fixture(&st, "nn_batch_norm.safetensors")) return;
    higan_arena_init(&A, (size_t)1 << 20);
    higan_tape_init(&T, &A, 64);
    x = check_load(&st, "x", &nx); wt = check_load(&st, "weight", &C); b = check_load(&st, "bias", NULL);
    rm0 = check_load(&st, "running_mean", NULL); rv0 = check_load(&st, "running_var", NULL);
    dy = check_load(&st, "dy", NULL);
    if (x && wt && b && rm0 && rv0 && dy && C == 3) {
        for (affine = 1; affine >= 0; --affine)
            for (mode = 1; mode >= 0; --mode) {
                char pre[32], nm[64], lb[128];
                int64_t nbt = 3;
                higan_var *X, *Wv = NULL, *B = NULL, *y;
                snprintf(pre, sizeof pre, "%s_%s_", affine ? "affine" : "plain", mode ? "train" : "eval");
                memcpy(rm, rm0, sizeof rm); memcpy(rv, rv0, sizeof rv);
                higan_tape_reset(&T);
                X = wrap_fixture(&T, &st, "x", x, 1);
                if (affine) { Wv = wrap_fixture(&T, &st, "weight", wt, 1); B = wrap_fixture(&T, &st, "bias", b, 1); }
                y = higan_batch_norm2d(&T, X, Wv, B, rm, rv, &nbt, 0.1f, 1e-5f, mode);
                CHECK(y != NULL, "batch_norm2d %s: runs", pre);
                if (!y) continue;
                CHECK(higan_tape_backward(&T, y, dy) == HIGAN_OK, "batch_norm2d %s: backward", pre);
#define BN_CMP(suffix, got, n) do { snprintf(nm, sizeof nm, "%s" suffix, pre); \
    snprintf(lb, sizeof lb, "batch_norm2d %s", nm); cmp(&st, nm, lb, got, n, ATOL, RTOL); } while (0)
                BN_CMP("y", y->data, nx);
                BN_CMP("dx", X->grad, nx);
                if (affine) { BN_CMP("dweight", Wv->grad, C); BN_CMP("dbias", B->grad, C); }
                BN_CMP("running_mean", rm, C);
                BN_CMP("running_var", rv, C);
#undef BN_CMP
                snprintf(nm, sizeof nm, "%snum_batches_tracked", pre);
                if (higan_safetensors_read_i64(&st, nm, &nbt_ref, 1) == HIGAN_OK)
                    CHECK(nbt == nbt_ref, "batch_norm2d %s: %lld (ref %lld)", nm, (long long)nbt, (long long)nbt_ref);
                else CHECK(0, "fixture %s: %s", nm, higan_last_error());
            }
    }
    free(x); free(wt); free(b); free(rm0); free(rv0); free(dy);
    higan_tape_free(&T);
    higan_arena_free(&A);
    higan_safetensors_free(&st);
}

static void oracle_cond_batch_norm(void) {
    higan_safetensors st;
    higan_arena A;
    higan_tape T;
    float *x, *g, *b, *sm0, *sv0, *dy, sm[3], sv[3];
    int64_t nx = 0, ng = 0, C = 0;
    int mode;
    if (!check_open_fixture(&st, "nn_cond_batch_norm.safetensors")) return;
    higan_arena_init(&A, (size_t)1 << 20);
    higan_tape_init(&T, &A, 64);
    x = check_load(&st, "x", &nx); g = check_load(&st, "gain", &ng); b = check_load(&st, "bias", NULL);
    sm0 = check_load(&st, "stored_mean", &C); sv0 = check_load(&st, "stored_var", NULL);
    dy = check_load(&st, "dy", NULL);
    if (x && g && b && sm0 && sv0 && dy && C == 3) {
        for (mode = 1; mode >= 0; --mode) {
            const char *md = mode ? "train" : "eval";
            char nm[64], lb[128];
            higan_var *X, *G, *B, *y;
            memcpy(sm, sm0, sizeof sm); memcpy(sv, sv0, sizeof sv);
            higan_tape_reset(&T);
            X = wrap_fixture(&T, &st, "x", x, 1);
            G = wrap_fixture(&T, &st, "gain", g, 1);
            B = wrap_fixture(&T, &st, "bias", b, 1);
            y = higan_cond_batch_norm(&T, X, G, B, sm, sv, 0.1f, 1e-4f, mode);
            CHECK(y != NULL, "cond_batch_norm %s runs", md);
            if (!y) continue;
            CHECK(higan_tape_backward(&T, y, dy) == HIGAN_OK, "cond_batch_norm %s backward", md);
#define CBN_CMP(suffix, got, n) do { snprintf(nm, sizeof nm, "%s_" suffix, md); \
    snprintf(lb, sizeof lb, "cond_batch_norm %s", nm); cmp(&st, nm, lb, got, n, ATOL, RTOL); } while (0)
            CBN_CMP("y", y->data, nx);
            CBN_CMP("dx", X->grad, nx);
            CBN_CMP("dgain", G->grad, ng);
            CBN_CMP("dbias", B->grad, ng);
            CBN_CMP("stored_mean", sm, C);
            CBN_CMP("stored_var", sv, C);
#undef CBN_CMP
        }
    }
    free(x); free(g); free(b); free(sm0); free(sv0); free(dy);
    higan_tape_free(&T);
    higan_arena_free(&A);
    higan_safetensors_free(&st);
}

static void oracle_embedding(void) {
    static const char *tags[2] = {"renorm", "plain"};
    higan_safetensors st;
    higan_arena A;
    higan_tape T;
    float *w0, *w, *dy;
    int64_t nw = 0, idx64[10];
    int idx[10], k, i;
    if (!check_open_fixture(&st, "nn_embedding.safetensors")) return;
    higan_arena_init(&A, (size_t)1 << 20);
    higan_tape_init(&T, &A, 64);
    w0 = check_load(&st, "weight", &nw);
    dy = check_load(&st, "dy", NULL);
    if (higan_safetensors_read_i64(&st, "idx", idx64, 10) != HIGAN_OK) {
        CHECK(0, "fixture idx: %s", higan_last_error());
        free(w0);
        w0 = NULL;
    }
    for (i = 0; i < 10; ++i) idx[i] = (int)idx64[i];
    w = (float *)malloc(sizeof(float) * (size_t)(nw ? nw : 1));
    for (k = 0; k < 2 && w0 && dy; ++k) {
        char nm[64], lb[128];
        higan_var *W, *y;
        memcpy(w, w0, sizeof(float) * (size_t)nw);
        higan_tape_reset(&T);
        W = wrap_fixture(&T, &st, "weight", w, 1);
        y = higan_embedding(&T, W, idx, 10, 0, k == 0 ? 1.0f : 0.0f);
        CHECK(y != NULL && y->ndim == 2 && y->shape[0] == 10 && y->shape[1] == 5,
              "embedding %s: output [10, 5]", tags[k]);
        if (!y) continue;
        CHECK(higan_tape_backward(&T, y, dy) == HIGAN_OK, "embedding %s backward", tags[k]);
        snprintf(nm, sizeof nm, "%s_weight_after", tags[k]);
        snprintf(lb, sizeof lb, "embedding %s", nm);
        cmp(&st, nm, lb, w, nw, ATOL, RTOL);
        snprintf(nm, sizeof nm, "%s_y", tags[k]);
        snprintf(lb, sizeof lb, "embedding %s", nm);
        cmp(&st, nm, lb, y->data, 50, ATOL, RTOL);
        snprintf(nm, sizeof nm, "%s_dweight", tags[k]);
        snprintf(lb, sizeof lb, "embedding %s (padding_idx 0)", nm);
        cmp(&st, nm, lb, W->grad, nw, ATOL, RTOL);
    }
    free(w0); free(w); free(dy);
    higan_tape_free(&T);
    higan_arena_free(&A);
    higan_safetensors_free(&st);
}

/* ============================ threads: bit-identical results =========================== */
/* Shapes above the parallel thresholds; 1 and 2 threads must give the same bits. */
static void run_big(int threads, float *out_bn, float *out_dx, float *out_sn, float *out_dw,
                    float *rm, float *rv) {
    enum { N = 4, C = 16, HW = 33 * 17, O = 64, I = 1153 };
    higan_arena A;
    higan_tape T;
    static float x[N * C * HW], dyb[N * C * HW], w[O * I], dys[O * I], g[N * C], b[N * C];
    float u0[O], sv0 = 0;
    int64_t sx[4] = {N, C, 33, 17}, sg[2] = {N, C}, sw[2] = {O, I};
    higan_var *X, *G, *B, *Y, *W, *S;
    fill(x, N * C * HW, 51, -2.0f, 3.0f); fill(dyb, N * C * HW, 52, -1.0f, 1.0f);
    fill(w, O * I, 53, -1.0f, 1.0f); fill(dys, O * I, 54, -1.0f, 1.0f);
    fill(g, N * C, 55, -0.5f, 0.5f); fill(b, N * C, 56, -0.5f, 0.5f);
    fill(u0, O, 57, -1.0f, 1.0f);
    higan_set_num_threads(threads);
    higan_arena_init(&A, (size_t)64 << 20);
    higan_tape_init(&T, &A, 64);
    X = higan_var_wrap(&T, x, 4, sx); X->requires_grad = 1;
    G = higan_var_wrap(&T, g, 2, sg); G->requires_grad = 1;
    B = higan_var_wrap(&T, b, 2, sg); B->requires_grad = 1;
    Y = higan_cond_batch_norm(&T, X, G, B, rm, rv, 0.1f, 1e-5f, 1);
    if (Y && higan_tape_backward(&T, Y, dyb) == HIGAN_OK) {
        memcpy(out_bn, Y->data, sizeof(float) * N * C * HW);
        memcpy(out_dx, X->grad, sizeof(float) * N * C * HW);
    }
    higan_tape_reset(&T);
    W = higan_var_wrap(&T, w, 2, sw); W->requires_grad = 1;
    S = higan_spectral_norm(&T, W, u0, &sv0, O, 1);
    if (S && higan_tape_backward(&T, S, dys) == HIGAN_OK) {
        memcpy(out_sn, S->data, sizeof(float) * O * I);
        memcpy(out_dw, W->grad, sizeof(float) * O * I);
    }
    higan_tape_free(&T);
    higan_arena_free(&A);
}

static void test_threads(void) {
    enum { NB = 4 * 16 * 33 * 17, NS = 64 * 1153 };
    float *a[6], *b[6];
    int k, same = 1, t0 = higan_get_num_threads();
    size_t sz[6];
    sz[0] = sz[1] = NB; sz[2] = sz[3] = NS; sz[4] = sz[5] = 16;
    for (k = 0; k < 6; ++k) {
        a[k] = (float *)calloc(sz[k], sizeof(float));
        b[k] = (float *)calloc(sz[k], sizeof(float));
    }
    run_big(1, a[0], a[1], a[2], a[3], a[4], a[5]);
    run_big(2, b[0], b[1], b[2], b[3], b[4], b[5]);
    higan_set_num_threads(t0);
    for (k = 0; k < 6; ++k) same &= memcmp(a[k], b[k], sz[k] * sizeof(float)) == 0;
    CHECK(same, "cond_batch_norm and spectral_norm: 1 and 2 threads give identical bits");
    for (k = 0; k < 6; ++k) { free(a[k]); free(b[k]); }
}

/* ==================== SIMD level against the scalar reference ========================== */
/* batch_norm2d train forward + backward (plane sizes with and without a 16-float tail) at the
   detected level and at the scalar level: the same up to the last bits of the double sums. */
static void test_levels(void) {
    static const int64_t HWs[2][2] = {{33, 17}, {4, 40}};
    higan_cpu level = higan_cpu_level();
    int k, run;
    for (k = 0; k < 2; ++k) {
        int64_t N = 3, C = 5, H = HWs[k][0], W = HWs[k][1], n = N * C * H * W, s4[4], s1[1];
        float *x = (float *)malloc((size_t)n * sizeof(float)), *dy = (float *)malloc((size_t)n * sizeof(float));
        float *y[2], *dx[2], wt[5], bs[5], dw[2][5], db[2][5], rm[2][5], rv[2][5];
        char label[96];
        fill(x, n, 61 + (uint64_t)k, -2.0f, 3.0f); fill(dy, n, 62, -1.0f, 1.0f);
        fill(wt, C, 63, 0.5f, 1.5f); fill(bs, C, 64, -0.5f, 0.5f);
        s4[0] = N; s4[1] = C; s4[2] = H; s4[3] = W; s1[0] = C;
        for (run = 0; run < 2; ++run) {
            higan_arena A;
            higan_tape T;
            higan_var *X, *Wv, *B, *Y;
            int64_t nbt = 0, i;
            for (i = 0; i < C; ++i) { rm[run][i] = 0.0f; rv[run][i] = 1.0f; }
            y[run] = (float *)calloc((size_t)n, sizeof(float)); dx[run] = (float *)calloc((size_t)n, sizeof(float));
            higan_cpu_set_level(run == 0 ? HIGAN_CPU_SCALAR : level);
            higan_arena_init(&A, (size_t)8 << 20);
            higan_tape_init(&T, &A, 16);
            X = higan_var_wrap(&T, x, 4, s4); X->requires_grad = 1;
            Wv = higan_var_wrap(&T, wt, 1, s1); Wv->requires_grad = 1;
            B = higan_var_wrap(&T, bs, 1, s1); B->requires_grad = 1;
            Y = higan_batch_norm2d(&T, X, Wv, B, rm[run], rv[run], &nbt, 0.1f, 1e-5f, 1);
            if (Y && higan_tape_backward(&T, Y, dy) == HIGAN_OK) {
                memcpy(y[run], Y->data, (size_t)n * sizeof(float));
                memcpy(dx[run], X->grad, (size_t)n * sizeof(float));
                memcpy(dw[run], Wv->grad, sizeof wt); memcpy(db[run], B->grad, sizeof bs);
            } else CHECK(0, "batch_norm2d level run %d: %s", run, higan_last_error());
            higan_tape_free(&T);
            higan_arena_free(&A);
        }
        higan_cpu_set_level(level);
        snprintf(label, sizeof label, "batch_norm2d %s vs scalar, HW %d: y", higan_cpu_level_name(level), (int)(H * W));
        check_close(label, y[1], y[0], n, 1e-5f, 1e-5f);
        snprintf(label, sizeof label, "batch_norm2d %s vs scalar, HW %d: dx", higan_cpu_level_name(level), (int)(H * W));
        check_close(label, dx[1], dx[0], n, 1e-5f, 1e-5f);
        snprintf(label, sizeof label, "batch_norm2d %s vs scalar: dweight, dbias, running stats", higan_cpu_level_name(level));
        check_close(label, dw[1], dw[0], C, 1e-4f, 1e-5f);
        check_close(label, db[1], db[0], C, 1e-4f, 1e-5f);
        check_close(label, rm[1], rm[0], C, 1e-6f, 1e-6f);
        check_close(label, rv[1], rv[0], C, 1e-6f, 1e-6f);
        free(x); free(dy);
        for (run = 0; run < 2; ++run) { free(y[run]); free(dx[run]); }
    }
}

/* ================================ small API checks ===================================== */
static void test_misc(void) {
    higan_arena A;
    higan_tape T;
    float x[2 * 2 * 3], rm[2] = {0.5f, -0.5f}, rv[2] = {2.0f, 0.5f}, out[2 * 2 * 3];
    float mean[2], rstd[2];
    int64_t sx[3] = {2, 2, 3}, nbt = 7;
    higan_var *X, *y;
    int i;
    fill(x, 12, 61, -1.0f, 1.0f);
    higan_arena_init(&A, (size_t)1 << 16);
    higan_tape_init(&T, &A, 16);
    /* eval: running stats untouched, num_batches_tracked not incremented, plain formula */
    X = higan_var_wrap(&T, x, 3, sx);
    y = higan_batch_norm2d(&T, X, NULL, NULL, rm, rv, &nbt, 0.1f, 1e-5f, 0);
    CHECK(y != NULL && nbt == 7 && rm[0] == 0.5f && rv[1] == 0.5f && !y->requires_grad,
          "batch_norm2d eval leaves buffers alone");
    for (i = 0; i < 12; ++i) {
        int c = (i / 3) % 2;
        out[i] = (float)((x[i] - rm[c]) / sqrt(rv[c] + 1e-5));
    }
    if (y) check_close("batch_norm2d eval ([N, C, L] input)", y->data, out, 12, 1e-6f, 1e-6f);
    /* train without running stats: batch statistics, nothing to update */
    higan_batch_norm_stats(mean, rstd, NULL, NULL, x, 0.1f, 1e-5f, 1, 2, 2, 3);
    y = higan_batch_norm2d(&T, X, NULL, NULL, NULL, NULL, NULL, 0.1f, 1e-5f, 0);
    for (i = 0; i < 12; ++i) { int c = (i / 3) % 2; out[i] = (x[i] - mean[c]) * rstd[c]; }
    if (y) check_close("batch_norm2d eval without running stats uses batch stats", y->data, out, 12, 1e-6f, 1e-6f);
    /* NULL inputs propagate */
    CHECK(higan_batch_norm2d(&T, NULL, NULL, NULL, NULL, NULL, NULL, 0.1f, 1e-5f, 1) == NULL &&
          higan_cond_batch_norm(&T, X, NULL, X, NULL, NULL, 0.1f, 1e-5f, 1) == NULL &&
          higan_spectral_norm(&T, NULL, rm, NULL, 1, 1) == NULL &&
          higan_embedding(&T, NULL, NULL, 0, -1, 0.0f) == NULL, "NULL inputs give NULL");
    higan_tape_free(&T);
    higan_arena_free(&A);
}

int main(void) {
    printf("cpu level: %s, threads %d\n", higan_cpu_level_name(higan_cpu_level()), higan_get_num_threads());
    gradcheck_spectral_norm();
    gradcheck_batch_norm();
    gradcheck_cond_batch_norm();
    gradcheck_embedding();
    oracle_spectral_norm();
    oracle_batch_norm();
    oracle_cond_batch_norm();
    oracle_embedding();
    test_threads();
    test_levels();
    test_misc();
    return check_finish();
}
