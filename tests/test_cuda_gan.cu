// test_cuda_gan.cu - the BigGAN side of HiGAN+ (Discriminator, PatchDiscriminator, the GAN
// losses) on a device tape (higan_cuda_backend's table) against the CPU tape.
//
// Every test runs the same graph twice from the same host inputs: on a CPU tape and on a tape
// whose backend is higan_cuda_backend (values, gradients and scratch in device memory), and
// compares the outputs and the gradients that the backward pass left in the inputs (and, for
// the networks, in every parameter tensor and the spectral norms' u0 / sv0 buffers). Built as
// build/test_cuda_gan_emu everything runs through higan_cuda.cuh's host emulation with device
// memory guarded (higan_cuda_emulate_guard(1)): a tape op that still ran a CPU kernel or a
// host loop on a device buffer would fault.
//
// Tolerances (|got - ref| <= atol + rtol |ref|), after the table at the top of test_cuda.cu:
//   exact (0, 0)      avg_pool2, sub, scale's forward, add_nc's forward, div_rows and
//                     extract_patches (the same float operations in the same order)
//   1e-6, 1e-5        other elementwise results (FMA contraction on the GPU, expf within 2 ulp)
//   1e-5, 1e-4        reductions (hinge, masked L1, KL, masked width sums, add_nc's bias
//                     gradient: double sums in another order)
//   1e-5, 1e-4 and    the cx loss value, and its gradients (1 / (rmin + 1e-5) amplifies the
//   2e-4, 2e-4        similarity GEMM's rounding)
//   1e-3 relative     the networks' input and parameter gradients, per tensor relative to its
//                     largest value (GEMM chains; cuBLAS sums in another order)
#include "cuda_check.h"

static higan_backend BE;
static higan_arena CH, HH, DD;   // CPU tape arena; device tape: host arena, data arena
static higan_tape TC, TD;

// n floats of v's gradient (device or host) into host memory (zeros when it has none)
static float *grad_read(higan_tape *t, const higan_var *v, int64_t n) {
    float *h = hnew(n);
    if (!v->grad) { memset(h, 0, sizeof(float) * (size_t)n); return h; }
    t->be->download(t->be->ctx, h, v->grad, sizeof(float) * (size_t)n);
    return h;
}

/* ---- one op on both tapes ------------------------------------------------------------------- */
typedef higan_var *(*op_build)(higan_tape *t, higan_var **in, void *ctx);
typedef struct { const float *data; int ndim; int64_t shape[4]; int grad; } op_in;
typedef struct { float *y, *g[4]; int64_t ny; int ok; } op_out;

static int64_t in_numel(const op_in *in) {
    int64_t n = 1;
    int d;
    for (d = 0; d < in->ndim; ++d) n *= in->shape[d];
    return n;
}
static void op_run(higan_tape *t, op_build build, void *ctx, const op_in *ins, int n, const float *seed_or_null,
                   float **seed, op_out *o) {
    higan_var *v[4], *y;
    int k;
    memset(o, 0, sizeof *o);
    higan_tape_reset(t);
    for (k = 0; k < n; ++k) {
        if (!(v[k] = higan_var_upload(t, ins[k].data, ins[k].ndim, ins[k].shape))) return;
        v[k]->requires_grad = ins[k].grad;
    }
    if (!(y = build(t, v, ctx))) return;
    o->ny = higan_var_numel(y);
    o->y = hnew(o->ny);
    higan_var_read(t, y, o->y, o->ny);
    if (!*seed) *seed = seed_or_null ? (float *)seed_or_null : hrand(o->ny, -1.0f, 1.0f);
    if (y->requires_grad) {
        if (higan_tape_backward(t, y, *seed) != HIGAN_OK) return;
        for (k = 0; k < n; ++k)
            if (ins[k].grad) o->g[k] = grad_read(t, v[k], higan_var_numel(v[k]));
    }
    o->ok = higan_tape_sync(t) == HIGAN_OK;
}
// Runs build on the CPU tape, then on the device tape (guarded), and compares the output
// (atol, rtol) and every input gradient (gatol, grtol), seeded with seed (NULL: random).
static void op_compare(const char *name, op_build build, void *ctx, const op_in *ins, int n, const float *seed,
                       float atol, float rtol, float gatol, float grtol) {
    op_out c, d;
    float *s = NULL;
    char label[160];
    int k;
    op_run(&TC, build, ctx, ins, n, seed, &s, &c);
    guard(1);
    op_run(&TD, build, ctx, ins, n, seed, &s, &d);
    guard(0);
    CHECK(c.ok && d.ok && c.ny == d.ny, "%s: runs on both tapes (cpu %d, cuda %d: %s)", name, c.ok, d.ok,
          c.ok && d.ok ? "ok" : higan_last_error());
    if (!c.ok || !d.ok || c.ny != d.ny) return;
    snprintf(label, sizeof label, "%s forward (device tape vs CPU tape)", name);
    check_close(label, d.y, c.y, c.ny, atol, rtol);
    for (k = 0; k < n; ++k) {
        if (!ins[k].grad) continue;
        snprintf(label, sizeof label, "%s backward, d input %d", name, k);
        check_close(label, d.g[k], c.g[k], in_numel(&ins[k]), gatol, grtol);
    }
}

/* ---- the ops, one at a time ------------------------------------------------------------------ */
typedef struct { const int *lens; float eps, s; int kind; int64_t size, step; } op_ctx;
static higan_var *b_avg_pool2(higan_tape *t, higan_var **in, void *c) { (void)c; return higan_avg_pool2(t, in[0]); }
static higan_var *b_sub(higan_tape *t, higan_var **in, void *c) { (void)c; return higan_sub(t, in[0], in[1]); }
static higan_var *b_scale(higan_tape *t, higan_var **in, void *c) { return higan_scale(t, in[0], ((op_ctx *)c)->s); }
static higan_var *b_add_nc(higan_tape *t, higan_var **in, void *c) { (void)c; return higan_add_nc(t, in[0], in[1]); }
static higan_var *b_exp(higan_tape *t, higan_var **in, void *c) { (void)c; return higan_exp(t, in[0]); }
static higan_var *b_masked_sum(higan_tape *t, higan_var **in, void *c) {
    return higan_masked_sum_width(t, in[0], ((op_ctx *)c)->lens);
}
static higan_var *b_masked_mean(higan_tape *t, higan_var **in, void *c) {
    return higan_masked_mean_width(t, in[0], ((op_ctx *)c)->lens, ((op_ctx *)c)->eps);
}
static higan_var *b_div_rows(higan_tape *t, higan_var **in, void *c) {   // the Discriminator's private op
    return higan_div_rows(t, in[0], ((op_ctx *)c)->lens);
}
static higan_var *b_patches(higan_tape *t, higan_var **in, void *c) {
    const op_ctx *o = (const op_ctx *)c;
    return higan_extract_patches(t, in[0], o->lens, o->size, o->step);
}
static higan_var *b_hinge(higan_tape *t, higan_var **in, void *c) {
    int kind = ((op_ctx *)c)->kind;
    return kind == 0 ? higan_hinge_d_real(t, in[0]) : kind == 1 ? higan_hinge_d_fake(t, in[0]) : higan_hinge_g(t, in[0]);
}
static higan_var *b_masked_l1(higan_tape *t, higan_var **in, void *c) {
    return higan_masked_l1(t, in[0], in[1], ((op_ctx *)c)->lens);
}
static higan_var *b_kl(higan_tape *t, higan_var **in, void *c) { (void)c; return higan_kl_gaussian(t, in[0], in[1]); }
static higan_var *b_cx(higan_tape *t, higan_var **in, void *c) {
    (void)c;
    return higan_cx_loss(t, in[0], in[1], HIGAN_CX_SIGMA, HIGAN_CX_B);
}

static op_in mk_in(const float *data, int ndim, int64_t a, int64_t b, int64_t c, int64_t d, int grad) {
    op_in in;
    in.data = data; in.ndim = ndim; in.grad = grad;
    in.shape[0] = a; in.shape[1] = b; in.shape[2] = c; in.shape[3] = d;
    return in;
}

static void test_elementwise_pool(void) {
    op_in in[2];
    op_ctx o;
    fresh();
    memset(&o, 0, sizeof o);
    in[0] = mk_in(hrand(2 * 3 * 7 * 9, -2, 2), 4, 2, 3, 7, 9, 1);   // odd H and W: a trailing row / column
    op_compare("avg_pool2 [2,3,7,9]", b_avg_pool2, &o, in, 1, NULL, 0, 0, 0, 0);
    in[0] = mk_in(hrand(2 * 3 * 5, -2, 2), 3, 2, 3, 5, 0, 1);
    in[1] = mk_in(hrand(2 * 3 * 5, -2, 2), 3, 2, 3, 5, 0, 1);
    op_compare("sub [2,3,5]", b_sub, &o, in, 2, NULL, 0, 0, 0, 0);
    in[1].grad = 0;
    op_compare("sub, b without gradient", b_sub, &o, in, 2, NULL, 0, 0, 0, 0);
    o.s = -0.37f;
    in[0] = mk_in(hrand(97, -2, 2), 1, 97, 0, 0, 0, 1);
    op_compare("scale by -0.37 [97]", b_scale, &o, in, 1, NULL, 0, 0, 1e-6f, 1e-5f);
    in[0] = mk_in(hrand(2 * 3 * 4 * 5, -2, 2), 4, 2, 3, 4, 5, 1);
    in[1] = mk_in(hrand(2 * 3, -2, 2), 2, 2, 3, 0, 0, 1);
    op_compare("add_nc [2,3,4,5] + [2,3]", b_add_nc, &o, in, 2, NULL, 0, 0, 1e-5f, 1e-4f);
    in[0] = mk_in(hrand(3 * 50, -3, 3), 2, 3, 50, 0, 0, 1);
    op_compare("exp [3,50]", b_exp, &o, in, 1, NULL, 1e-6f, 1e-5f, 1e-6f, 1e-5f);
}

static void test_masked_div_patches(void) {
    static const int lens[3] = {9, 3, 0};          // longer than W, inside, empty
    static const int lens3[2] = {6, 2};
    static const int den[3] = {4, 1, 7};
    static const int plens[3] = {30, 13, 5};       // 6, 2 and no patch columns
    static const int hlens[2] = {50, 37};          // HiGAN+'s geometry: 5 rows, 3 and 1 columns
    op_in in[1];
    op_ctx o;
    fresh();
    memset(&o, 0, sizeof o);
    o.lens = lens;
    in[0] = mk_in(hrand(3 * 4 * 2 * 7, -2, 2), 4, 3, 4, 2, 7, 1);
    op_compare("masked_sum_width [3,4,2,7], lens 9 3 0", b_masked_sum, &o, in, 1, NULL, 1e-5f, 1e-4f, 0, 0);
    o.eps = 1e-8f;
    op_compare("masked_mean_width [3,4,2,7], lens 9 3 0", b_masked_mean, &o, in, 1, NULL, 1e-5f, 1e-4f, 1e-6f, 1e-5f);
    o.lens = lens3;
    in[0] = mk_in(hrand(2 * 5 * 8, -2, 2), 3, 2, 5, 8, 0, 1);
    op_compare("masked_mean_width [2,5,8] (a sequence), lens 6 2", b_masked_mean, &o, in, 1, NULL, 1e-5f, 1e-4f,
               1e-6f, 1e-5f);
    o.lens = den;
    in[0] = mk_in(hrand(3 * 11, -2, 2), 2, 3, 11, 0, 0, 1);
    op_compare("div_rows [3,11] / 4 1 7", b_div_rows, &o, in, 1, NULL, 0, 0, 0, 0);
    o.lens = plens; o.size = 8; o.step = 4;
    in[0] = mk_in(hrand(3 * 2 * 16 * 30, -2, 2), 4, 3, 2, 16, 30, 1);
    op_compare("extract_patches [3,2,16,30] 8/4, lens 30 13 5", b_patches, &o, in, 1, NULL, 0, 0, 0, 0);
    o.lens = NULL;
    op_compare("extract_patches [3,2,16,30] 8/4, no lens", b_patches, &o, in, 1, NULL, 0, 0, 0, 0);
    o.lens = hlens; o.size = 32; o.step = 8;
    in[0] = mk_in(hrand(2 * 1 * 64 * 50, -2, 2), 4, 2, 1, 64, 50, 1);
    op_compare("extract_patches [2,1,64,50] 32/8 (HiGAN+), lens 50 37", b_patches, &o, in, 1, NULL, 0, 0, 0, 0);
}

static void test_losses(void) {
    static const char *hn[3] = {"hinge_d_real [40]", "hinge_d_fake [40]", "hinge_g [40]"};
    static const int lens[3] = {9, 4, 12};
    op_in in[2];
    op_ctx o;
    int k;
    fresh();
    memset(&o, 0, sizeof o);
    in[0] = mk_in(hrand(40, -2, 2), 2, 40, 1, 0, 0, 1);
    for (k = 0; k < 3; ++k) {
        o.kind = k;
        op_compare(hn[k], b_hinge, &o, in, 1, NULL, 1e-5f, 1e-4f, 1e-6f, 1e-5f);
    }
    o.lens = lens;
    in[0] = mk_in(hrand(3 * 2 * 4 * 9, -2, 2), 4, 3, 2, 4, 9, 1);
    in[1] = mk_in(hrand(3 * 2 * 4 * 9, -2, 2), 4, 3, 2, 4, 9, 1);
    op_compare("masked_l1 [3,2,4,9], lens 9 4 12", b_masked_l1, &o, in, 2, NULL, 1e-5f, 1e-4f, 1e-6f, 1e-5f);
    in[0].grad = 0;
    op_compare("masked_l1, a without gradient", b_masked_l1, &o, in, 2, NULL, 1e-5f, 1e-4f, 1e-6f, 1e-5f);
    in[0] = mk_in(hrand(4 * 6, -1.5f, 1.5f), 2, 4, 6, 0, 0, 1);
    in[1] = mk_in(hrand(4 * 6, -1.5f, 1.5f), 2, 4, 6, 0, 0, 1);
    op_compare("kl_gaussian [4,6]", b_kl, &o, in, 2, NULL, 1e-5f, 1e-4f, 1e-6f, 1e-5f);
}

// the contextual loss on three feature pairs of different shapes (the trainer's three style
// features), with both, one or no input needing a gradient (no gradient: no cache, the
// forward takes its cache from the scratch)
static void test_cx(void) {
    static const int64_t shp[3][5] = {{2, 8, 4, 6, 5}, {2, 16, 2, 3, 2}, {3, 4, 1, 9, 7}};   // N C H Wt Wi
    op_in in[2];
    op_ctx o;
    int f;
    memset(&o, 0, sizeof o);
    for (f = 0; f < 3; ++f) {
        const int64_t N = shp[f][0], C = shp[f][1], H = shp[f][2], Wt = shp[f][3], Wi = shp[f][4];
        char name[128];
        fresh();
        in[0] = mk_in(hrand(N * C * H * Wt, -1, 1), 4, N, C, H, Wt, 1);
        in[1] = mk_in(hrand(N * C * H * Wi, -1, 1), 4, N, C, H, Wi, 1);
        snprintf(name, sizeof name, "cx_loss feature %d: [%lld,%lld,%lld,%lld] vs [.., %lld]", f, (long long)N,
                 (long long)C, (long long)H, (long long)Wt, (long long)Wi);
        op_compare(name, b_cx, &o, in, 2, NULL, 1e-5f, 1e-4f, 2e-4f, 2e-4f);
        in[0].grad = 0;
        snprintf(name, sizeof name, "cx_loss feature %d, target without gradient", f);
        op_compare(name, b_cx, &o, in, 2, NULL, 1e-5f, 1e-4f, 2e-4f, 2e-4f);
        in[1].grad = 0;
        snprintf(name, sizeof name, "cx_loss feature %d, no gradient (no cache)", f);
        op_compare(name, b_cx, &o, in, 2, NULL, 1e-5f, 1e-4f, 2e-4f, 2e-4f);
    }
    {   // a device data arena with room for the inputs and the cache but not the scratch:
        // HIGAN_ERR_NOMEM (at the op, which returns NULL, and at the sync), clean after a reset
        higan_arena tiny;
        higan_tape tt;
        higan_var *v[2], *y;
        int64_t s[4] = {2, 4, 16, 16};   // P = Q = 256: scratch S [2, 256, 256] is 512 KB
        higan_status st;
        fresh();
        ok(higan_backend_arena_init(&tiny, &BE, (size_t)200 << 10), "200 KB device arena");
        higan_tape_init(&tt, &HH, 64);
        higan_tape_set_backend(&tt, &BE, &tiny);
        guard(1);
        v[0] = higan_var_upload(&tt, hrand(2 * 4 * 256, -1, 1), 4, s);
        v[1] = higan_var_upload(&tt, hrand(2 * 4 * 256, -1, 1), 4, s);
        v[0]->requires_grad = v[1]->requires_grad = 1;
        y = higan_cx_loss(&tt, v[0], v[1], HIGAN_CX_SIGMA, HIGAN_CX_B);
        st = higan_tape_sync(&tt);
        guard(0);
        CHECK(y == NULL && st == HIGAN_ERR_NOMEM && tiny.overflow && tiny.needed > tiny.capacity,
              "cx_loss without room for its device scratch: NULL and HIGAN_ERR_NOMEM, %zu bytes needed (%s)",
              tiny.needed, higan_last_error());
        higan_tape_reset(&tt);
        CHECK(!tiny.overflow && higan_tape_sync(&tt) == HIGAN_OK, "after a reset the device tape is clean");
        higan_tape_free(&tt);
        higan_backend_arena_free(&tiny, &BE);
        higan_arena_reset(&HH);
    }
}

/* ---- the Discriminator and the PatchDiscriminator, forward + losses + backward ---------------- */
typedef struct {
    float *rd, *fd, *pr, *loss, *dxr, *dxf, *ev;
    int64_t np;   // patches
    int ok;
} net_out;
enum { NB = 2, NH = 64, NW = 56 };
// One D+P step as the trainer's discriminator half (train mode: u0 / sv0 updated): D on real
// images (with character counts) and fake ones (without), P on the patches of both, the three
// hinge losses; then an eval-mode D score of the real images.
static void net_run(higan_tape *t, const higan_discriminator *D, const higan_discriminator *Pd, const float *real,
                    const float *fake, net_out *o) {
    static const int xl[NB] = {56, 37}, yl[NB] = {4, 3};
    int64_t s[4] = {NB, 1, NH, NW};
    higan_var *xr, *xf, *rd, *fd, *pr, *pf, *loss, *ev;
    memset(o, 0, sizeof *o);
    higan_tape_reset(t);
    if (!(xr = higan_var_upload(t, real, 4, s)) || !(xf = higan_var_upload(t, fake, 4, s))) return;
    xr->requires_grad = xf->requires_grad = 1;
    rd = higan_discriminator_forward(t, D, xr, xl, yl, 1);
    fd = higan_discriminator_forward(t, D, xf, xl, NULL, 1);
    pr = higan_discriminator_forward(t, Pd, higan_extract_patches(t, xr, xl, 32, 8), NULL, NULL, 1);
    pf = higan_discriminator_forward(t, Pd, higan_extract_patches(t, xf, NULL, 32, 8), NULL, NULL, 1);
    // the untrained networks score everything above 1 (hinge_d_real's gradient would be 0):
    // hinge_g on the real scores, hinge_d_real on the negated patch scores
    loss = higan_add(t, higan_add(t, higan_hinge_g(t, rd), higan_hinge_d_fake(t, fd)),
                     higan_scale(t, higan_add(t, higan_hinge_d_real(t, higan_scale(t, pr, -1.0f)),
                                              higan_hinge_g(t, pf)), 0.5f));
    if (!loss) return;
    o->np = pr->shape[0];
    o->rd = hnew(NB); o->fd = hnew(NB); o->pr = hnew(o->np); o->loss = hnew(1);
    higan_var_read(t, rd, o->rd, NB);
    higan_var_read(t, fd, o->fd, NB);
    higan_var_read(t, pr, o->pr, o->np);
    higan_var_read(t, loss, o->loss, 1);
    if (higan_tape_backward(t, loss, NULL) != HIGAN_OK) return;
    o->dxr = grad_read(t, xr, NB * NH * NW);
    o->dxf = grad_read(t, xf, NB * NH * NW);
    higan_no_grad_begin(t);   // eval: sigma from the updated u0, nothing recorded
    ev = higan_discriminator_forward(t, D, xr, xl, yl, 0);
    higan_no_grad_end(t);
    if (!ev) return;
    o->ev = hnew(NB);
    higan_var_read(t, ev, o->ev, NB);
    o->ok = higan_tape_sync(t) == HIGAN_OK;
}
static double max_abs(const float *a, int64_t n) {
    double m = 0.0;
    int64_t i;
    for (i = 0; i < n; ++i) if (fabs((double)a[i]) > m) m = fabs((double)a[i]);
    return m;
}
static void test_discriminators(void) {
    higan_params P;
    higan_discriminator D, Pd;
    higan_discriminator_config dc = higan_discriminator_default_config(64), pc = higan_discriminator_default_config(32);
    higan_cuda_params dp;
    higan_rng r;
    net_out c, d;
    float *real, *fake, *g_d, *b_d, *b0;
    int64_t np_, nb_, k, moved, nbuf;
    int h, bad = 0, pass;
    double worst = 0.0;
    fresh();
    dc.ch = 2; pc.ch = 3;
    higan_params_init(&P);
    higan_discriminator_register(&D, &P, "Discriminator", &dc);
    higan_discriminator_register(&Pd, &P, "PatchDiscriminator", &pc);
    if (!ok(higan_params_alloc(&P), "D+P store")) return;
    higan_rng_seed(&r, 31);
    higan_discriminator_init(&D, &r);
    higan_discriminator_init(&Pd, &r);
    np_ = P.n_param; nb_ = P.n_buffer;
    real = hrand(NB * NH * NW, -1, 1);
    fake = hrand(NB * NH * NW, -1, 1);
    g_d = hnew(np_); b_d = hnew(nb_); b0 = hcopy(P.buffer, nb_);
    ok(higan_cuda_params_init(&G, &dp, &P), "D+P mirror");
    higan_cuda_params_attach(&dp, &P);
    for (pass = 0; pass < 2; ++pass) {   // 2: a second step from the first one's u0 / sv0
        if (pass == 0) ok(higan_cuda_params_upload(&G, &dp, &P, HIGAN_CUDA_ALL), "D+P upload");
        bad = 0; worst = 0.0;
        higan_params_zero_grad(&P);
        ok(higan_cuda_params_zero_grad(&G, &dp), "device zero_grad");
        net_run(&TC, &D, &Pd, real, fake, &c);
        guard(1);
        net_run(&TD, &D, &Pd, real, fake, &d);
        guard(0);
        CHECK(c.ok && d.ok, "step %d: D and P forward, losses and backward on both tapes (%s)", pass,
              c.ok && d.ok ? "ok" : higan_last_error());
        if (!c.ok || !d.ok) break;
        ok(higan_cuda_download(&G, g_d, dp.grad, sizeof(float) * (size_t)np_), "download parameter gradients");
        ok(higan_cuda_download(&G, b_d, dp.buffer, sizeof(float) * (size_t)nb_), "download buffers");
        printf("  step %d: loss cpu %.9g cuda %.9g; %lld patches; relative errors: dx real %.3g, dx fake %.3g, "
               "parameter gradients %.3g, buffers %.3g\n", pass, (double)c.loss[0], (double)d.loss[0],
               (long long)c.np, rel_err(d.dxr, c.dxr, NB * NH * NW), rel_err(d.dxf, c.dxf, NB * NH * NW),
               rel_err(g_d, P.grad, np_), rel_err(b_d, P.buffer, nb_));
        CHECK(c.np == d.np && c.np == 5 * (4 + 1), "patch count %lld (cpu) %lld (cuda)",
              (long long)c.np, (long long)d.np);
        check_close("D scores of real images (with character counts), train", d.rd, c.rd, NB, 1e-5f, 1e-4f);
        check_close("D scores of fake images (no character counts), train", d.fd, c.fd, NB, 1e-5f, 1e-4f);
        check_close("P scores of the real images' patches", d.pr, c.pr, c.np, 1e-5f, 1e-4f);
        check_close("D + P hinge loss", d.loss, c.loss, 1, 1e-6f, 1e-5f);
        check_close("D eval score from the updated u0", d.ev, c.ev, NB, 1e-5f, 1e-4f);
        CHECK(rel_err(d.dxr, c.dxr, NB * NH * NW) <= 1e-3 && rel_err(d.dxf, c.dxf, NB * NH * NW) <= 1e-3,
              "dL/d real and dL/d fake within 1e-3 of their largest (%.3g, %.3g)",
              rel_err(d.dxr, c.dxr, NB * NH * NW), rel_err(d.dxf, c.dxf, NB * NH * NW));
        for (h = 0; h < P.count; ++h) {   // per tensor, relative to its own largest gradient
            const higan_param_entry *en = &P.entries[h];
            double e;
            if (en->kind != HIGAN_PARAM) continue;
            e = rel_err(g_d + en->offset, P.grad + en->offset, en->numel);
            if (e > worst) worst = e;
            if (e > 1e-3) { ++bad; printf("    %s: relative error %.3g\n", en->name, e); }
        }
        CHECK(bad == 0, "step %d: each parameter tensor's gradient within 1e-3 of its largest (worst %.3g)", pass,
              worst);
        check_close("u0 / sv0 updated on the device as on the host", b_d, P.buffer, nb_, 1e-5f, 1e-4f);
        for (h = 0, moved = 0, nbuf = 0; h < P.count; ++h) {   // the store pads tensors: count u0 / sv0 only
            const higan_param_entry *en = &P.entries[h];
            if (en->kind != HIGAN_BUFFER) continue;
            for (k = 0; k < en->numel; ++k) moved += b_d[en->offset + k] != b0[en->offset + k];
            nbuf += en->numel;
        }
        CHECK(moved >= nbuf * 9 / 10, "step %d: the device step moved %lld of the %lld u0 / sv0 values", pass,
              (long long)moved, (long long)nbuf);
        memcpy(b0, b_d, sizeof(float) * (size_t)nb_);
        CHECK(max_abs(c.dxr, NB * NH * NW) > 0 && max_abs(c.dxf, NB * NH * NW) > 0 && max_abs(P.grad, np_) > 0,
              "step %d: the gradients compared are not zero (largest |dx real| %.3g, |dx fake| %.3g, parameter %.3g)",
              pass, max_abs(c.dxr, NB * NH * NW), max_abs(c.dxf, NB * NH * NW), max_abs(P.grad, np_));
    }
    higan_cuda_params_attach(NULL, &P);
    higan_cuda_params_free(&dp);
    higan_params_free(&P);
}

int main(void) {
    if (!cuda_test_begin("test_cuda_gan")) return cuda_test_skip();
    higan_cuda_backend(&BE, &G);
    if (!ok(higan_arena_init(&CH, (size_t)64 << 20), "CPU tape arena") ||
        !dev_tape_open(&TD, &HH, &DD, &BE, (size_t)8 << 20, (size_t)64 << 20, 4096))
        return cuda_test_end();
    higan_tape_init(&TC, &CH, 4096);
    test_elementwise_pool();
    test_masked_div_patches();
    test_losses();
    test_cx();
    test_discriminators();
    printf("  device data arena peak %.1f MB, host arena peak %.1f MB\n", (double)DD.peak / 1e6,
           (double)HH.peak / 1e6);
    dev_tape_close(&TD, &HH, &DD, &BE);
    higan_tape_free(&TC);
    higan_arena_free(&CH);
    return cuda_test_end();
}
