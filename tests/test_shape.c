/* Shape, pooling, padding, activation and elementwise ops (higan.h):
   finite-difference gradchecks of every tape op, PyTorch oracle comparisons of forward and
   backward (tests/oracle/make_shape.py), dropout statistics, thread-count independence. */
#define HIGAN_IMPLEMENTATION
#include "higan.h"
#include "check.h"

static higan_arena A;
static higan_tape T;

/* ---- helpers ------------------------------------------------------------------------------- */
static void fill_normal(float *x, int64_t n, uint64_t seed) {
    higan_rng r;
    higan_rng_seed(&r, seed);
    higan_rng_fill_normal(&r, x, n, 0.0f, 1.0f);
}
/* values with |x| >= margin: no relu kink within a finite-difference step */
static void fill_away_from_zero(float *x, int64_t n, uint64_t seed, float margin) {
    int64_t i;
    fill_normal(x, n, seed);
    for (i = 0; i < n; ++i) x[i] += x[i] >= 0 ? margin : -margin;
}
static check_input input(float *data, int ndim, int64_t d0, int64_t d1, int64_t d2, int64_t d3) {
    check_input in;
    in.data = data; in.ndim = ndim;
    in.shape[0] = d0; in.shape[1] = d1; in.shape[2] = d2; in.shape[3] = d3;
    in.grad = 1;
    return in;
}
static int same_shape_as(const higan_var *v, const higan_st_tensor *t) {
    int d;
    if (!v || !t || v->ndim != t->ndim) return 0;
    for (d = 0; d < v->ndim; ++d) if (v->shape[d] != t->shape[d]) return 0;
    return 1;
}
/* A fixture float tensor copied into an arena variable. */
static higan_var *load_var(higan_tape *t, const higan_safetensors *st, const char *name) {
    const higan_st_tensor *ti = higan_safetensors_find(st, name);
    higan_var *v;
    if (!ti) { CHECK(0, "fixture tensor '%s' missing", name); return NULL; }
    v = higan_var_new(t, ti->ndim, ti->shape);
    if (!v || higan_safetensors_read_f32(st, name, v->data, ti->numel) != HIGAN_OK) {
        CHECK(0, "load '%s': %s", name, higan_last_error());
        return NULL;
    }
    return v;
}
static void load_lens(const higan_safetensors *st, const char *name, int *lens, int64_t n) {
    int64_t buf[16], i;
    CHECK(n <= 16 && higan_safetensors_read_i64(st, name, buf, n) == HIGAN_OK, "lens '%s' loaded", name);
    for (i = 0; i < n; ++i) lens[i] = (int)buf[i];
}

/* Oracle: build the op on the fixture inputs `names` (all requiring gradients), compare the
   output with y<tag>, run backward seeded with dy<tag>, compare every input's gradient with
   d<name><tag>. */
static void oracle_case(const higan_safetensors *st, const char *op, const char *tag,
                        check_build_fn build, void *ctx, int n, const char *const *names,
                        float atol, float rtol) {
    higan_var *in[8], *y;
    char key[128], label[192];
    float *ref, *dy;
    int64_t numel;
    int k;
    higan_tape_reset(&T);
    for (k = 0; k < n; ++k) {
        if (!(in[k] = load_var(&T, st, names[k]))) return;
        in[k]->requires_grad = 1;
    }
    y = build(&T, in, ctx);
    snprintf(key, sizeof key, "y%s", tag);
    snprintf(label, sizeof label, "oracle %s%s forward", op, tag);
    if (!y) { CHECK(0, "%s: op returned NULL: %s", label, higan_last_error()); return; }
    CHECK(same_shape_as(y, higan_safetensors_find(st, key)), "%s: output shape", label);
    if (!(ref = check_load(st, key, &numel))) return;
    if (numel == higan_var_numel(y)) check_close(label, y->data, ref, numel, atol, rtol);
    free(ref);
    snprintf(key, sizeof key, "dy%s", tag);
    if (!(dy = check_load(st, key, &numel))) return;
    CHECK(higan_tape_backward(&T, y, dy) == HIGAN_OK, "oracle %s%s backward runs", op, tag);
    free(dy);
    for (k = 0; k < n; ++k) {
        int64_t m = higan_var_numel(in[k]);
        float *got = (float *)calloc((size_t)m, sizeof(float));
        if (higan_var_has_grad(&T, in[k])) memcpy(got, in[k]->grad, (size_t)m * sizeof(float));
        snprintf(key, sizeof key, "d%s%s", names[k], tag);
        snprintf(label, sizeof label, "oracle %s%s d%s", op, tag, names[k]);
        if ((ref = check_load(st, key, &numel)) != NULL) {
            if (numel == m) check_close(label, got, ref, m, atol, rtol);
            else CHECK(0, "%s: %lld values, fixture has %lld", label, (long long)m, (long long)numel);
            free(ref);
        }
        free(got);
    }
}
static int open_fixture(higan_safetensors *st, const char *file) { return check_open_fixture(st, file); }

/* ---- build functions (ctx carries the op's parameters) --------------------------------------- */
typedef struct { int a, b, c, d; float v; } iparams;
static higan_var *b_upsample(higan_tape *t, higan_var **in, void *p) {
    iparams *q = (iparams *)p;
    return higan_upsample_nearest(t, in[0], q->a, q->b);
}
static higan_var *b_avgpool(higan_tape *t, higan_var **in, void *p) { (void)p; return higan_avg_pool2(t, in[0]); }
static higan_var *b_maxpool(higan_tape *t, higan_var **in, void *p) { (void)p; return higan_max_pool3s2(t, in[0]); }
static higan_var *b_pad(higan_tape *t, higan_var **in, void *p) {
    iparams *q = (iparams *)p;
    return higan_pad(t, in[0], q->a, q->b, q->c, q->d, q->v);
}
static higan_var *b_relu(higan_tape *t, higan_var **in, void *p) { (void)p; return higan_relu(t, in[0]); }
static higan_var *b_leaky(higan_tape *t, higan_var **in, void *p) { return higan_leaky_relu(t, in[0], ((iparams *)p)->v); }
static higan_var *b_tanh(higan_tape *t, higan_var **in, void *p) { (void)p; return higan_tanh(t, in[0]); }
static higan_var *b_exp(higan_tape *t, higan_var **in, void *p) { (void)p; return higan_exp(t, in[0]); }
static higan_var *b_concat(higan_tape *t, higan_var **in, void *p) {
    iparams *q = (iparams *)p;   /* a: count, b: dim */
    return higan_concat(t, in, q->a, q->b);
}
static higan_var *b_slice(higan_tape *t, higan_var **in, void *p) {
    iparams *q = (iparams *)p;   /* a: dim, b: start, c: len */
    return higan_slice(t, in[0], q->a, q->b, q->c);
}
/* torch.cat([piece * (i + 1) for i, piece in enumerate(x.split(2, dim=1))], 1) */
static higan_var *b_split(higan_tape *t, higan_var **in, void *p) {
    higan_var *parts[3];
    int64_t sizes[3] = {2, 2, 1};
    int i;
    (void)p;
    if (higan_split(t, in[0], 1, 3, sizes, parts) != HIGAN_OK) return NULL;
    for (i = 0; i < 3; ++i) parts[i] = higan_scale(t, parts[i], (float)(i + 1));
    return higan_concat(t, parts, 3, -3);
}
typedef struct { int ndim; int64_t shape[4]; int perm[4]; } rparams;
/* reshape (if ndim > 0) then permute */
static higan_var *b_reshape_permute(higan_tape *t, higan_var **in, void *p) {
    rparams *q = (rparams *)p;
    higan_var *x = in[0];
    if (q->ndim > 0) x = higan_reshape(t, x, q->ndim, q->shape);
    return higan_permute(t, x, q->perm);
}
typedef struct { const int *lens; int mean; float eps; } mparams;
static higan_var *b_masked(higan_tape *t, higan_var **in, void *p) {
    mparams *q = (mparams *)p;
    return q->mean ? higan_masked_mean_width(t, in[0], q->lens, q->eps)
                   : higan_masked_sum_width(t, in[0], q->lens);
}
static higan_var *b_log_softmax(higan_tape *t, higan_var **in, void *p) { (void)p; return higan_log_softmax(t, in[0]); }
static higan_var *b_add(higan_tape *t, higan_var **in, void *p) { (void)p; return higan_add(t, in[0], in[1]); }
static higan_var *b_sub(higan_tape *t, higan_var **in, void *p) { (void)p; return higan_sub(t, in[0], in[1]); }
static higan_var *b_mul(higan_tape *t, higan_var **in, void *p) { (void)p; return higan_mul(t, in[0], in[1]); }
static higan_var *b_square(higan_tape *t, higan_var **in, void *p) { (void)p; return higan_mul(t, in[0], in[0]); }
static higan_var *b_scale(higan_tape *t, higan_var **in, void *p) { return higan_scale(t, in[0], ((iparams *)p)->v); }
static higan_var *b_add_nc(higan_tape *t, higan_var **in, void *p) { (void)p; return higan_add_nc(t, in[0], in[1]); }
static higan_var *b_sum(higan_tape *t, higan_var **in, void *p) { (void)p; return higan_sum_all(t, in[0]); }
static higan_var *b_mean(higan_tape *t, higan_var **in, void *p) { (void)p; return higan_mean_all(t, in[0]); }
typedef struct { float p; uint64_t seed; } dparams;
static higan_var *b_dropout(higan_tape *t, higan_var **in, void *p) {
    dparams *q = (dparams *)p;
    higan_rng r;
    higan_rng_seed(&r, q->seed);   /* same mask on every call: differentiable for the check */
    return higan_dropout(t, in[0], q->p, 1, &r);
}

/* ---- oracle tests ---------------------------------------------------------------------------- */
static const char *const NX[] = {"x"};

static void test_oracle_upsample(void) {
    higan_safetensors st;
    static const int f[4][2] = {{2, 1}, {2, 2}, {1, 3}, {3, 2}};
    int i;
    if (!open_fixture(&st, "shape_upsample.safetensors")) return;
    for (i = 0; i < 4; ++i) {
        iparams q;
        char tag[16];
        q.a = f[i][0]; q.b = f[i][1];
        snprintf(tag, sizeof tag, "_%d%d", q.a, q.b);
        oracle_case(&st, "upsample", tag, b_upsample, &q, 1, NX, 1e-5f, 1e-4f);
    }
    higan_safetensors_free(&st);
}
static void test_oracle_pools(void) {
    higan_safetensors st;
    static const char *const NXT[] = {"xt"};
    if (open_fixture(&st, "shape_avgpool.safetensors")) {
        oracle_case(&st, "avg_pool2", "", b_avgpool, NULL, 1, NX, 1e-5f, 1e-4f);
        higan_safetensors_free(&st);
    }
    if (open_fixture(&st, "shape_maxpool.safetensors")) {
        oracle_case(&st, "max_pool3s2", "", b_maxpool, NULL, 1, NX, 0.0f, 0.0f);
        /* many ties: the gradient must go to PyTorch's first max, exactly */
        oracle_case(&st, "max_pool3s2", "_ties", b_maxpool, NULL, 1, NXT, 0.0f, 0.0f);
        higan_safetensors_free(&st);
    }
}
static void test_oracle_pad(void) {
    higan_safetensors st;
    static const int pads[4][4] = {{1, 2, 0, 3}, {2, 2, 2, 2}, {-1, 1, 2, -2}, {0, 0, 1, 1}};
    static const float vals[4] = {-1.0f, 0.0f, 0.5f, 0.0f};
    int i;
    if (!open_fixture(&st, "shape_pad.safetensors")) return;
    for (i = 0; i < 4; ++i) {
        iparams q;
        char tag[16];
        q.a = pads[i][0]; q.b = pads[i][1]; q.c = pads[i][2]; q.d = pads[i][3]; q.v = vals[i];
        snprintf(tag, sizeof tag, "_%d", i);
        oracle_case(&st, "pad", tag, b_pad, &q, 1, NX, 0.0f, 0.0f);
    }
    higan_safetensors_free(&st);
}
static void test_oracle_act(void) {
    higan_safetensors st;
    iparams q;
    if (!open_fixture(&st, "shape_act.safetensors")) return;
    oracle_case(&st, "act", "_relu", b_relu, NULL, 1, NX, 0.0f, 0.0f);
    q.v = 0.2f;
    oracle_case(&st, "act", "_leaky", b_leaky, &q, 1, NX, 1e-6f, 1e-6f);
    q.v = 0.01f;
    oracle_case(&st, "act", "_leaky01", b_leaky, &q, 1, NX, 1e-6f, 1e-6f);
    oracle_case(&st, "act", "_tanh", b_tanh, NULL, 1, NX, 1e-5f, 1e-4f);
    oracle_case(&st, "act", "_exp", b_exp, NULL, 1, NX, 1e-5f, 1e-4f);
    higan_safetensors_free(&st);
}
static void test_oracle_concat_slice(void) {
    higan_safetensors st;
    iparams q;
    static const char *const n1[] = {"a", "b"}, *const n0[] = {"a", "c"}, *const n3[] = {"a", "d"},
                             *const n2[] = {"e", "a", "f"};
    if (open_fixture(&st, "shape_concat.safetensors")) {
        q.a = 2; q.b = 1; oracle_case(&st, "concat", "_d1", b_concat, &q, 2, n1, 0.0f, 0.0f);
        q.a = 2; q.b = 0; oracle_case(&st, "concat", "_d0", b_concat, &q, 2, n0, 0.0f, 0.0f);
        q.a = 2; q.b = -1; oracle_case(&st, "concat", "_d3", b_concat, &q, 2, n3, 0.0f, 0.0f);
        q.a = 3; q.b = 2; oracle_case(&st, "concat", "_d2", b_concat, &q, 3, n2, 0.0f, 0.0f);
        /* raw kernels: backward with a NULL gradient skips that input */
        {
            float *a = check_load(&st, "a", NULL), *b = check_load(&st, "b", NULL);
            float *y = check_load(&st, "y_d1", NULL), *dy = check_load(&st, "dy_d1", NULL);
            float *db_ref = check_load(&st, "db_d1", NULL);
            float out[2 * 5 * 5 * 7], db[2 * 2 * 5 * 7];
            const float *xs[2];
            float *dxs[2];
            int64_t sizes[2] = {3 * 5 * 7, 2 * 5 * 7};   /* dim 1 with inner folded in */
            if (a && b && y && dy && db_ref) {
                xs[0] = a; xs[1] = b;
                higan_concat_forward(out, xs, sizes, 2, 2, 1);
                check_close("concat_forward kernel", out, y, 2 * 5 * 5 * 7, 0.0f, 0.0f);
                memset(db, 0, sizeof db);
                dxs[0] = NULL; dxs[1] = db;
                higan_concat_backward(dxs, dy, sizes, 2, 2, 1);
                check_close("concat_backward kernel (NULL first grad)", db, db_ref, 2 * 2 * 5 * 7, 0.0f, 0.0f);
            }
            free(a); free(b); free(y); free(dy); free(db_ref);
        }
        higan_safetensors_free(&st);
    }
    if (open_fixture(&st, "shape_slice.safetensors")) {
        q.a = 1; q.b = 1; q.c = 3; oracle_case(&st, "slice", "_d1", b_slice, &q, 1, NX, 0.0f, 0.0f);
        q.a = 0; q.b = 1; q.c = 1; oracle_case(&st, "slice", "_d0", b_slice, &q, 1, NX, 0.0f, 0.0f);
        q.a = -1; q.b = 2; q.c = 2; oracle_case(&st, "slice", "_d3", b_slice, &q, 1, NX, 0.0f, 0.0f);
        oracle_case(&st, "split", "_split", b_split, NULL, 1, NX, 0.0f, 0.0f);
        higan_safetensors_free(&st);
    }
}
static void test_oracle_permute(void) {
    higan_safetensors st;
    rparams q;
    static const char *const nh[] = {"h"}, *const n3[] = {"p3"}, *const n4[] = {"p4"},
                             *const n2[] = {"p2"}, *const nq[] = {"q"};
    if (!open_fixture(&st, "shape_permute.safetensors")) return;
    /* HiGAN+ G: h.view(B, L*4, 4, -1).permute(0, 3, 2, 1) */
    q.ndim = 4; q.shape[0] = 2; q.shape[1] = 12; q.shape[2] = 4; q.shape[3] = -1;
    q.perm[0] = 0; q.perm[1] = 3; q.perm[2] = 2; q.perm[3] = 1;
    oracle_case(&st, "view+permute", "_g", b_reshape_permute, &q, 1, nh, 0.0f, 0.0f);
    q.ndim = 0;
    q.perm[0] = 1; q.perm[1] = 0; q.perm[2] = 2;
    oracle_case(&st, "permute", "_102", b_reshape_permute, &q, 1, n3, 0.0f, 0.0f);
    q.perm[0] = 0; q.perm[1] = 2; q.perm[2] = 1;
    oracle_case(&st, "permute", "_021", b_reshape_permute, &q, 1, n3, 0.0f, 0.0f);
    q.perm[0] = 2; q.perm[1] = 0; q.perm[2] = 3; q.perm[3] = 1;
    oracle_case(&st, "permute", "_2031", b_reshape_permute, &q, 1, n4, 0.0f, 0.0f);
    q.perm[0] = 1; q.perm[1] = 0;
    oracle_case(&st, "permute", "_10", b_reshape_permute, &q, 1, n2, 0.0f, 0.0f);
    /* [B,C,1,T] -> [B,T,C] */
    q.ndim = 3; q.shape[0] = 2; q.shape[1] = 4; q.shape[2] = 5;
    q.perm[0] = 0; q.perm[1] = 2; q.perm[2] = 1;
    oracle_case(&st, "squeeze+permute", "_sq", b_reshape_permute, &q, 1, nq, 0.0f, 0.0f);
    higan_safetensors_free(&st);
}
static void test_oracle_masked(void) {
    higan_safetensors st;
    mparams q;
    int lens3[4], lens4[4];
    static const char *const n3[] = {"x3"}, *const n4[] = {"x4"};
    if (!open_fixture(&st, "shape_masked.safetensors")) return;
    load_lens(&st, "lens3", lens3, 4);
    load_lens(&st, "lens4", lens4, 4);
    q.eps = 1e-8f;
    q.lens = lens3; q.mean = 0; oracle_case(&st, "masked", "_sum3", b_masked, &q, 1, n3, 1e-5f, 1e-4f);
    q.lens = lens3; q.mean = 1; oracle_case(&st, "masked", "_mean3", b_masked, &q, 1, n3, 1e-5f, 1e-4f);
    q.lens = lens4; q.mean = 0; oracle_case(&st, "masked", "_sum4", b_masked, &q, 1, n4, 1e-5f, 1e-4f);
    q.lens = lens4; q.mean = 1; oracle_case(&st, "masked", "_mean4", b_masked, &q, 1, n4, 1e-5f, 1e-4f);
    higan_safetensors_free(&st);
}
static void test_oracle_log_softmax(void) {
    higan_safetensors st;
    static const char *const n2[] = {"x2"};
    if (!open_fixture(&st, "shape_logsoftmax.safetensors")) return;
    oracle_case(&st, "log_softmax", "", b_log_softmax, NULL, 1, NX, 1e-5f, 1e-4f);
    oracle_case(&st, "log_softmax", "_2", b_log_softmax, NULL, 1, n2, 1e-5f, 1e-4f);
    higan_safetensors_free(&st);
}
static void test_oracle_elementwise(void) {
    higan_safetensors st;
    iparams q;
    static const char *const nab[] = {"a", "b"}, *const na[] = {"a"}, *const nnc[] = {"a", "bias"},
                             *const nnc3[] = {"c3", "bias"};
    if (!open_fixture(&st, "shape_elementwise.safetensors")) return;
    oracle_case(&st, "elementwise", "_add", b_add, NULL, 2, nab, 0.0f, 0.0f);
    oracle_case(&st, "elementwise", "_sub", b_sub, NULL, 2, nab, 0.0f, 0.0f);
    oracle_case(&st, "elementwise", "_mul", b_mul, NULL, 2, nab, 0.0f, 0.0f);
    q.v = -0.75f;
    oracle_case(&st, "elementwise", "_scale", b_scale, &q, 1, na, 0.0f, 0.0f);
    oracle_case(&st, "elementwise", "_addnc", b_add_nc, NULL, 2, nnc, 1e-5f, 1e-4f);
    oracle_case(&st, "elementwise", "_addnc3", b_add_nc, NULL, 2, nnc3, 1e-5f, 1e-4f);
    oracle_case(&st, "elementwise", "_sum", b_sum, NULL, 1, na, 1e-5f, 1e-4f);
    oracle_case(&st, "elementwise", "_mean", b_mean, NULL, 1, na, 1e-5f, 1e-4f);
    higan_safetensors_free(&st);
}

/* ---- finite-difference gradient checks ------------------------------------------------------- */
static void test_gradchecks(void) {
    float x[2 * 3 * 5 * 7], x2[2 * 3 * 5 * 7], x3[2 * 2 * 5 * 7], bias[6];
    check_input in[3];
    iparams q;
    int64_t i, n = 2 * 3 * 5 * 7;

    fill_normal(x, n, 11);
    fill_normal(x2, n, 12);
    fill_normal(x3, 2 * 2 * 5 * 7, 13);
    fill_normal(bias, 6, 14);

    in[0] = input(x, 4, 2, 3, 5, 7);
    q.a = 2; q.b = 3;
    check_gradients("upsample_nearest (2,3)", b_upsample, &q, in, 1, 1e-2f, 1e-3f, 1e-3f);
    check_gradients("avg_pool2 (odd H, W)", b_avgpool, NULL, in, 1, 1e-2f, 1e-3f, 1e-3f);
    q.a = 1; q.b = 2; q.c = -1; q.d = 3; q.v = -1.0f;
    check_gradients("pad (1,2,-1,3) value -1", b_pad, &q, in, 1, 1e-2f, 1e-3f, 1e-3f);

    /* max pool: distinct values 0.05 apart, far more than the 1e-3 step */
    {
        float xm[2 * 2 * 7 * 9];
        int64_t m = 2 * 2 * 7 * 9;
        higan_rng r;
        higan_rng_seed(&r, 5);
        for (i = 0; i < m; ++i) xm[i] = 0.05f * (float)i - 6.0f;
        for (i = m - 1; i > 0; --i) {   /* Fisher-Yates shuffle */
            int64_t j = (int64_t)(higan_rng_u64(&r) % (uint64_t)(i + 1));
            float tmp = xm[i]; xm[i] = xm[j]; xm[j] = tmp;
        }
        in[0] = input(xm, 4, 2, 2, 7, 9);
        check_gradients("max_pool3s2", b_maxpool, NULL, in, 1, 1e-3f, 1e-3f, 1e-3f);
    }

    /* activations: inputs at least 0.1 away from the kink */
    fill_away_from_zero(x, n, 21, 0.1f);
    in[0] = input(x, 4, 2, 3, 5, 7);
    check_gradients("relu", b_relu, NULL, in, 1, 1e-3f, 1e-3f, 1e-3f);
    q.v = 0.2f;
    check_gradients("leaky_relu 0.2", b_leaky, &q, in, 1, 1e-3f, 1e-3f, 1e-3f);
    check_gradients("tanh", b_tanh, NULL, in, 1, 1e-3f, 2e-3f, 2e-3f);
    check_gradients("exp", b_exp, NULL, in, 1, 1e-3f, 2e-3f, 2e-3f);
    check_gradients("log_softmax (last dim 7)", b_log_softmax, NULL, in, 1, 1e-3f, 2e-3f, 2e-3f);

    /* concat along dim 1 of [2,3,5,7] and [2,2,5,7]; along dim 0 of [2,3,5,7] twice */
    fill_normal(x, n, 22);
    in[0] = input(x, 4, 2, 3, 5, 7);
    in[1] = input(x3, 4, 2, 2, 5, 7);
    q.a = 2; q.b = 1;
    check_gradients("concat dim 1", b_concat, &q, in, 2, 1e-2f, 1e-3f, 1e-3f);
    in[1] = input(x2, 4, 2, 3, 5, 7);
    q.a = 2; q.b = 0;
    check_gradients("concat dim 0", b_concat, &q, in, 2, 1e-2f, 1e-3f, 1e-3f);
    q.a = 1; q.b = 1; q.c = 2;
    check_gradients("slice dim 1 [1:3]", b_slice, &q, in, 1, 1e-2f, 1e-3f, 1e-3f);
    in[0] = input(x, 4, 2, 5, 3, 7);
    check_gradients("split 2,2,1 + scale + concat", b_split, NULL, in, 1, 1e-2f, 1e-3f, 1e-3f);
    {
        rparams r;
        in[0] = input(x, 3, 2, 3, 35, 1);
        r.ndim = 4; r.shape[0] = 2; r.shape[1] = 7; r.shape[2] = -1; r.shape[3] = 5;
        r.perm[0] = 0; r.perm[1] = 3; r.perm[2] = 2; r.perm[3] = 1;
        check_gradients("reshape + permute(0,3,2,1)", b_reshape_permute, &r, in, 1, 1e-2f, 1e-3f, 1e-3f);
        in[0] = input(x, 3, 5, 6, 7, 1);
        r.ndim = 0; r.perm[0] = 2; r.perm[1] = 0; r.perm[2] = 1;
        check_gradients("permute(2,0,1)", b_reshape_permute, &r, in, 1, 1e-2f, 1e-3f, 1e-3f);
    }
    {
        mparams m;
        int lens[2] = {5, 2};
        m.lens = lens; m.eps = 1e-8f;
        in[0] = input(x, 4, 2, 3, 5, 7);
        m.mean = 0;
        check_gradients("masked_sum_width lens {5,2}", b_masked, &m, in, 1, 1e-2f, 1e-3f, 1e-3f);
        m.mean = 1;
        check_gradients("masked_mean_width lens {5,2}", b_masked, &m, in, 1, 1e-2f, 1e-3f, 1e-3f);
        in[0] = input(x, 3, 2, 3, 7, 1);
        lens[0] = 0; lens[1] = 9;
        check_gradients("masked_mean_width [B,C,T] lens {0,9}", b_masked, &m, in, 1, 1e-2f, 1e-3f, 1e-3f);
    }
    {
        dparams d;
        d.p = 0.4f; d.seed = 77;
        in[0] = input(x, 4, 2, 3, 5, 7);
        check_gradients("dropout p=0.4 (fixed mask)", b_dropout, &d, in, 1, 1e-2f, 1e-3f, 1e-3f);
    }

    in[0] = input(x, 4, 2, 3, 5, 7);
    in[1] = input(x2, 4, 2, 3, 5, 7);
    check_gradients("add", b_add, NULL, in, 2, 1e-2f, 1e-3f, 1e-3f);
    check_gradients("sub", b_sub, NULL, in, 2, 1e-2f, 1e-3f, 1e-3f);
    check_gradients("mul", b_mul, NULL, in, 2, 1e-2f, 1e-3f, 1e-3f);
    q.v = 1.7f;
    check_gradients("scale 1.7", b_scale, &q, in, 1, 1e-2f, 1e-3f, 1e-3f);
    in[1] = input(bias, 2, 2, 3, 1, 1);
    check_gradients("add_nc", b_add_nc, NULL, in, 2, 1e-2f, 1e-3f, 1e-3f);
    check_gradients("sum_all", b_sum, NULL, in, 1, 1e-2f, 1e-3f, 1e-3f);
    check_gradients("mean_all", b_mean, NULL, in, 1, 1e-2f, 1e-3f, 1e-3f);
    /* one var used twice: the gradients of both uses accumulate */
    check_gradients("mul(x, x)", b_square, NULL, in, 1, 1e-2f, 1e-3f, 1e-3f);
}

/* ---- dropout --------------------------------------------------------------------------------- */
static void test_dropout(void) {
    enum { N = 100000 };
    float *x = (float *)malloc(N * sizeof(float)), *dy = (float *)malloc(N * sizeof(float));
    float *y1 = (float *)malloc(N * sizeof(float)), scale = 1.0f / (1.0f - 0.3f);
    int64_t shape[1] = {N}, i, zeros = 0, bad = 0, bad_grad = 0;
    higan_var *vx, *vy;
    higan_rng r;
    fill_away_from_zero(x, N, 31, 0.01f);
    fill_normal(dy, N, 32);

    higan_tape_reset(&T);
    higan_rng_seed(&r, 99);
    vx = higan_var_wrap(&T, x, 1, shape);
    vx->requires_grad = 1;
    vy = higan_dropout(&T, vx, 0.3f, 1, &r);
    CHECK(vy && vy != vx, "dropout train makes a new var");
    if (vy) {
        for (i = 0; i < N; ++i) {
            if (vy->data[i] == 0.0f) ++zeros;
            else if (vy->data[i] != x[i] * scale) ++bad;
        }
        CHECK(fabs((double)zeros / N - 0.3) < 0.01, "dropout p=0.3 drops %.4f of values", (double)zeros / N);
        CHECK(bad == 0, "dropout kept values are x * 1/(1-p) exactly (%lld bad)", (long long)bad);
        memcpy(y1, vy->data, N * sizeof(float));
        CHECK(higan_tape_backward(&T, vy, dy) == HIGAN_OK, "dropout backward runs");
        for (i = 0; i < N; ++i) {
            float want = vy->data[i] == 0.0f ? 0.0f : dy[i] * scale;
            if (vx->grad[i] != want) ++bad_grad;
        }
        CHECK(bad_grad == 0, "dropout backward = mask * scale * dy exactly (%lld bad)", (long long)bad_grad);
    }
    /* same seed, same mask; the raw kernel matches the tape op */
    {
        float *y2 = (float *)malloc(N * sizeof(float)), *mask = (float *)malloc(N * sizeof(float));
        float *dx = (float *)calloc(N, sizeof(float));
        higan_rng_seed(&r, 99);
        higan_dropout_forward(y2, mask, x, 0.3f, &r, N);
        CHECK(memcmp(y1, y2, N * sizeof(float)) == 0, "dropout: same seed gives the same mask");
        higan_dropout_backward(dx, dy, mask, N);
        for (bad = 0, i = 0; i < N; ++i) if (dx[i] != dy[i] * mask[i]) ++bad;
        CHECK(bad == 0, "dropout_backward kernel = dy * mask");
        higan_rng_seed(&r, 100);
        higan_dropout_forward(y2, NULL, x, 0.3f, &r, N);
        CHECK(memcmp(y1, y2, N * sizeof(float)) != 0, "dropout: another seed, another mask (mask NULL ok)");
        higan_rng_seed(&r, 1);
        higan_dropout_forward(y2, mask, x, 1.0f, &r, N);
        for (bad = 0, i = 0; i < N; ++i) if (y2[i] != 0.0f || mask[i] != 0.0f) ++bad;
        CHECK(bad == 0, "dropout p=1 gives zeros");
        free(y2); free(mask); free(dx);
    }
    /* eval and p = 0: identity (the same var) */
    higan_tape_reset(&T);
    vx = higan_var_wrap(&T, x, 1, shape);
    CHECK(higan_dropout(&T, vx, 0.3f, 0, &r) == vx, "dropout eval is the identity");
    CHECK(higan_dropout(&T, vx, 0.0f, 1, &r) == vx, "dropout p=0 is the identity");
    CHECK(higan_dropout(&T, NULL, 0.3f, 1, &r) == NULL, "dropout NULL in, NULL out");
    free(x); free(dy); free(y1);
}

/* ---- reshape view, NULL propagation, no_grad, overflow ----------------------------------------- */
static void test_misc(void) {
    float x[24];
    int64_t s[4] = {2, 3, 4, 1}, r[2] = {-1, 6}, i;
    higan_var *vx, *vy, *vz;
    int lens[2] = {1, 2}, perm[3] = {2, 1, 0};
    higan_arena small;
    higan_tape ts;
    for (i = 0; i < 24; ++i) x[i] = (float)i;
    higan_tape_reset(&T);
    vx = higan_var_wrap(&T, x, 3, s);
    vx->requires_grad = 1;
    vy = higan_reshape(&T, vx, 2, r);
    CHECK(vy && vy->data == vx->data && vy->ndim == 2 && vy->shape[0] == 4 && vy->shape[1] == 6,
          "reshape is a view with -1 inferred (4 x 6)");
    CHECK(vy && vy->requires_grad, "reshape of a var needing grad needs grad");
    vz = higan_sum_all(&T, higan_scale(&T, vy, 2.0f));
    CHECK(vz && higan_tape_backward(&T, vz, NULL) == HIGAN_OK && vx->grad && vx->grad[5] == 2.0f &&
          vx->grad[23] == 2.0f, "reshape backward adds the gradient into x");

    /* NULL in, NULL out */
    CHECK(!higan_upsample_nearest(&T, NULL, 2, 2) && !higan_avg_pool2(&T, NULL) &&
          !higan_max_pool3s2(&T, NULL) && !higan_pad(&T, NULL, 1, 1, 1, 1, 0) &&
          !higan_relu(&T, NULL) && !higan_leaky_relu(&T, NULL, 0.2f) && !higan_tanh(&T, NULL) &&
          !higan_slice(&T, NULL, 0, 0, 1) && !higan_reshape(&T, NULL, 2, r) &&
          !higan_permute(&T, NULL, perm) && !higan_masked_sum_width(&T, NULL, lens) &&
          !higan_masked_mean_width(&T, NULL, lens, 1e-8f) && !higan_log_softmax(&T, NULL) &&
          !higan_add(&T, vx, NULL) && !higan_sub(&T, NULL, vx) && !higan_mul(&T, vx, NULL) &&
          !higan_scale(&T, NULL, 2) && !higan_add_nc(&T, NULL, vx) && !higan_sum_all(&T, NULL) &&
          !higan_mean_all(&T, NULL) && !higan_exp(&T, NULL), "every op: NULL input gives NULL");
    {
        higan_var *two[2];
        two[0] = vx; two[1] = NULL;
        CHECK(!higan_concat(&T, two, 2, 0), "concat with a NULL input gives NULL");
    }
    /* no_grad: nothing recorded */
    {
        int before = T.count;
        higan_no_grad_begin(&T);
        vy = higan_permute(&T, vx, perm);
        higan_no_grad_end(&T);
        CHECK(vy && !vy->requires_grad && T.count == before, "no_grad: output needs no grad, tape unchanged");
    }
    /* arena overflow is reported, not a crash */
    higan_arena_init(&small, 4096);
    higan_tape_init(&ts, &small, 16);
    {
        int64_t big[4] = {1, 1, 16, 16};
        float xb[256];
        memset(xb, 0, sizeof xb);
        vx = higan_var_wrap(&ts, xb, 4, big);
        vy = higan_upsample_nearest(&ts, vx, 4, 4);
        CHECK(vy == NULL && higan_tape_status(&ts) == HIGAN_ERR_NOMEM, "arena overflow: NULL and ERR_NOMEM (%s)",
              higan_last_error());
        CHECK(higan_relu(&ts, vy) == NULL, "overflow propagates as NULL");
    }
    higan_tape_free(&ts);
    higan_arena_free(&small);
}

/* ---- thread-count independence (sizes above the parallel thresholds) ---------------------------- */
typedef higan_var *(*big_fn)(higan_tape *t, higan_var *x);
static higan_var *big_chain(higan_tape *t, higan_var *x) {
    static const int lens[4] = {70, 33, 0, 200};
    int perm[4] = {0, 3, 2, 1};
    higan_var *h = higan_pad(t, x, 1, 1, 2, 0, -1.0f);
    h = higan_upsample_nearest(t, h, 2, 1);
    h = higan_max_pool3s2(t, h);
    h = higan_leaky_relu(t, h, 0.2f);
    h = higan_avg_pool2(t, higan_upsample_nearest(t, h, 2, 2));
    h = higan_permute(t, h, perm);
    h = higan_permute(t, h, perm);
    h = higan_tanh(t, h);
    return higan_masked_mean_width(t, h, lens, 1e-8f);
}
static void test_threads(void) {
    int64_t shape[4] = {4, 16, 20, 130}, n = 4 * 16 * 20 * 130, m, i;
    float *x = (float *)malloc((size_t)n * sizeof(float));
    float *y1 = NULL, *g1 = NULL;
    int run, old = higan_get_num_threads();
    fill_normal(x, n, 41);
    for (run = 0; run < 2; ++run) {
        higan_var *vx, *vy;
        higan_set_num_threads(run == 0 ? 1 : 3);
        higan_tape_reset(&T);
        vx = higan_var_wrap(&T, x, 4, shape);
        vx->requires_grad = 1;
        vy = big_chain(&T, vx);
        if (!vy) { CHECK(0, "threads chain: %s", higan_last_error()); break; }
        m = higan_var_numel(vy);
        {
            float *seed = (float *)malloc((size_t)m * sizeof(float));
            for (i = 0; i < m; ++i) seed[i] = (float)(i % 7) - 3.0f;
            higan_tape_backward(&T, vy, seed);
            free(seed);
        }
        if (run == 0) {
            y1 = (float *)malloc((size_t)m * sizeof(float));
            g1 = (float *)malloc((size_t)n * sizeof(float));
            memcpy(y1, vy->data, (size_t)m * sizeof(float));
            memcpy(g1, vx->grad, (size_t)n * sizeof(float));
        } else {
            CHECK(memcmp(y1, vy->data, (size_t)m * sizeof(float)) == 0, "1 vs 3 threads: forward bit-identical");
            CHECK(memcmp(g1, vx->grad, (size_t)n * sizeof(float)) == 0, "1 vs 3 threads: gradient bit-identical");
        }
    }
    higan_set_num_threads(old);
    free(x); free(y1); free(g1);
}

/* ---- SIMD kernels against the scalar reference; counter-based dropout over threads -------------- */
static void test_levels(void) {
    /* widths with whole 16-output blocks and tails, odd and even, rows shorter than a block, a row
       of exactly one block */
    static const int64_t Ws[6] = {35, 36, 67, 70, 5, 34};
    higan_cpu level = higan_cpu_level();
    int wi;
    for (wi = 0; wi < 6; ++wi) {
        int64_t N = 2, C = 3, H = 9, W = Ws[wi], Ho = (H - 3) / 2 + 1, Wo = (W - 3) / 2 + 1;
        int64_t n = N * C * H * W, m = N * C * Ho * Wo, i;
        float *x = (float *)malloc((size_t)n * sizeof(float));
        float *y0 = (float *)malloc((size_t)m * sizeof(float)), *y1 = (float *)malloc((size_t)m * sizeof(float));
        int32_t *a0 = (int32_t *)malloc((size_t)m * sizeof(int32_t)), *a1 = (int32_t *)malloc((size_t)m * sizeof(int32_t));
        fill_normal(x, n, 77 + (uint64_t)wi);
        /* ties (rounded values), NaNs and infinities in some windows */
        for (i = 0; i < n; ++i) {
            if (i % 3 == 0) x[i] = (float)floor(x[i]);
            if (i % 97 == 5) x[i] = NAN;
            if (i % 89 == 7) x[i] = -INFINITY;
            if (i % 83 == 11) x[i] = INFINITY;
        }
        higan_cpu_set_level(HIGAN_CPU_SCALAR);
        higan_max_pool3s2_forward(y0, a0, x, N, C, H, W);
        higan_cpu_set_level(level);
        higan_max_pool3s2_forward(y1, a1, x, N, C, H, W);
        CHECK(memcmp(y0, y1, (size_t)m * sizeof(float)) == 0 && memcmp(a0, a1, (size_t)m * sizeof(int32_t)) == 0,
              "max_pool3s2 W=%d: %s = scalar, bit for bit (values and argmax, with ties and NaNs)",
              (int)W, higan_cpu_level_name(level));
        higan_max_pool3s2_forward(y1, NULL, x, N, C, H, W);
        CHECK(memcmp(y0, y1, (size_t)m * sizeof(float)) == 0, "max_pool3s2 W=%d without argmax = with", (int)W);
        free(x); free(y0); free(y1); free(a0); free(a1);
    }
    {   /* elementwise kernels (relu, add, dropout, pad backward): level = scalar, bit for bit */
        enum { N = 40003 };
        float *x = (float *)malloc(N * sizeof(float)), *g = (float *)malloc(N * sizeof(float));
        float *out[2];
        int run, bad = 0;
        fill_normal(x, N, 8);
        fill_normal(g, N, 9);
        x[3] = NAN; x[17] = -0.0f; x[18] = 0.0f; x[40000] = NAN;
        for (run = 0; run < 2; ++run) {
            higan_rng r;
            float *o = out[run] = (float *)calloc(8 * N, sizeof(float));
            higan_cpu_set_level(run == 0 ? HIGAN_CPU_SCALAR : level);
            higan_rng_seed(&r, 4);
            higan_relu_forward(o, x, N);
            memcpy(o + N, g, N * sizeof(float));
            higan_relu_backward(o + N, g, x, N);
            higan_add_forward(o + 2 * N, x, g, N);
            memcpy(o + 3 * N, g, N * sizeof(float));
            higan_add_backward(o + 3 * N, o + 4 * N, x, N);
            higan_dropout_forward(o + 5 * N, o + 6 * N, x, 0.3f, &r, N);
            higan_dropout_backward(o + 7 * N, g, o + 6 * N, N);
            /* pad backward: rows of 200 with 3 + 2 pad columns, 1 + 1 pad rows */
            higan_pad_backward(o + 4 * N, g, 1, 1, 195, 195, 1, 1, 3, 2);
        }
        higan_cpu_set_level(level);
        for (run = 0; run < 8; ++run)
            if (memcmp(out[0] + run * N, out[1] + run * N, N * sizeof(float)) != 0) bad |= 1 << run;
        CHECK(bad == 0, "relu, relu_backward, add, add_backward, pad_backward, dropout, dropout_backward: %s = scalar, "
              "bit for bit (mask of differing outputs %#x)", higan_cpu_level_name(level), bad);
        free(x); free(g); free(out[0]); free(out[1]);
    }
    {   /* the backbone's fused relu(dropout(x)) = the two ops: forward and gradient, each level */
        int64_t sh[4] = {2, 3, 7, 45}, n = 2 * 3 * 7 * 45, i;
        float *x = (float *)malloc((size_t)n * sizeof(float)), *dy = (float *)malloc((size_t)n * sizeof(float));
        float *res[4];
        int lv, way, bad = 0;
        fill_normal(x, n, 21);
        fill_normal(dy, n, 22);
        x[5] = NAN;
        for (lv = 0; lv < 2; ++lv)
            for (way = 0; way < 2; ++way) {
                higan_rng r;
                higan_var *vx, *vy;
                float *o = res[lv * 2 + way] = (float *)calloc((size_t)(2 * n), sizeof(float));
                higan_cpu_set_level(lv == 0 ? HIGAN_CPU_SCALAR : level);
                higan_rng_seed(&r, 6);
                higan_tape_reset(&T);
                vx = higan_var_wrap(&T, x, 4, sh);
                vx->requires_grad = 1;
                vy = way ? higan__dropout_relu(&T, vx, 0.25f, 1, &r) : higan_relu(&T, higan_dropout(&T, vx, 0.25f, 1, &r));
                if (!vy || higan_tape_backward(&T, vy, dy) != HIGAN_OK) { CHECK(0, "dropout_relu: %s", higan_last_error()); continue; }
                memcpy(o, vy->data, (size_t)n * sizeof(float));
                memcpy(o + n, vx->grad, (size_t)n * sizeof(float));
            }
        higan_cpu_set_level(level);
        for (i = 0; i < 2 * n; ++i) {
            float a = res[0][i], b = res[1][i], c = res[2][i], d = res[3][i];
            /* equal values (NaN with NaN; a zero gradient may be -0 one way, +0 the other) */
            if (!((a == b || (a != a && b != b)) && (a == c || (a != a && c != c)) && (a == d || (a != a && d != d)))) ++bad;
        }
        CHECK(bad == 0, "fused dropout+relu = relu(dropout(x)), forward and gradient, scalar and %s (%d bad)",
              higan_cpu_level_name(level), bad);
        for (way = 0; way < 4; ++way) free(res[way]);
        free(x); free(dy);
    }
    {   /* dropout: the mask does not depend on the thread count */
        enum { N = 200000 };
        float *x = (float *)malloc(N * sizeof(float)), *y[2], *mk[2];
        int run, old = higan_get_num_threads();
        fill_normal(x, N, 5);
        for (run = 0; run < 2; ++run) {
            higan_rng r;
            y[run] = (float *)malloc(N * sizeof(float));
            mk[run] = (float *)malloc(N * sizeof(float));
            higan_rng_seed(&r, 3);
            higan_set_num_threads(run == 0 ? 1 : 3);
            higan_dropout_forward(y[run], mk[run], x, 0.2f, &r, N);
        }
        higan_set_num_threads(old);
        CHECK(memcmp(y[0], y[1], N * sizeof(float)) == 0 && memcmp(mk[0], mk[1], N * sizeof(float)) == 0,
              "dropout: 1 vs 3 threads, the same mask");
        free(x);
        for (run = 0; run < 2; ++run) { free(y[run]); free(mk[run]); }
    }
}

int main(void) {
    higan_arena_init(&A, (size_t)256 << 20);
    higan_tape_init(&T, &A, 4096);
    printf("cpu level: %s, threads %d\n", higan_cpu_level_name(higan_cpu_level()), higan_get_num_threads());
    test_oracle_upsample();
    test_oracle_pools();
    test_oracle_pad();
    test_oracle_act();
    test_oracle_concat_slice();
    test_oracle_permute();
    test_oracle_masked();
    test_oracle_log_softmax();
    test_oracle_elementwise();
    test_gradchecks();
    test_dropout();
    test_misc();
    test_threads();
    test_levels();
    higan_tape_free(&T);
    higan_arena_free(&A);
    return check_finish();
}
