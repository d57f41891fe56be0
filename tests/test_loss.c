/* Tests of the GAN losses: hinge, masked L1, KL, contextual (higan.h).
   Finite-difference gradient checks through the tape ops and PyTorch oracle comparisons
   (tests/oracle/make_loss.py, a faithful torch copy of HiGAN+'s losses). */
#define HIGAN_IMPLEMENTATION
#include "higan.h"
#include "check.h"

static void fill(float *x, int64_t n, uint64_t seed, float scale) {
    higan_rng r;
    higan_rng_seed(&r, seed);
    higan_rng_fill_normal(&r, x, n, 0.0f, scale);
}

/* ---- builders for check_gradients ---- */
static higan_var *build_hinge_real(higan_tape *t, higan_var **in, void *ctx) { (void)ctx; return higan_hinge_d_real(t, in[0]); }
static higan_var *build_hinge_fake(higan_tape *t, higan_var **in, void *ctx) { (void)ctx; return higan_hinge_d_fake(t, in[0]); }
static higan_var *build_hinge_g(higan_tape *t, higan_var **in, void *ctx) { (void)ctx; return higan_hinge_g(t, in[0]); }
static higan_var *build_l1(higan_tape *t, higan_var **in, void *ctx) { return higan_masked_l1(t, in[0], in[1], (const int *)ctx); }
static higan_var *build_kl(higan_tape *t, higan_var **in, void *ctx) { (void)ctx; return higan_kl_gaussian(t, in[0], in[1]); }
static higan_var *build_cx(higan_tape *t, higan_var **in, void *ctx) { (void)ctx; return higan_cx_loss(t, in[0], in[1], HIGAN_CX_SIGMA, HIGAN_CX_B); }

static void set_input(check_input *ci, float *data, int ndim, int64_t a, int64_t b, int64_t c, int64_t d) {
    ci->data = data; ci->ndim = ndim;
    ci->shape[0] = a; ci->shape[1] = b; ci->shape[2] = c; ci->shape[3] = d;
    ci->grad = 1;
}

static void gradcheck_hinge(void) {
    float x[2 * 3 * 4];
    check_input in[1];
    int64_t i;
    fill(x, 24, 1, 1.5f);
    for (i = 0; i < 24; ++i) {   /* keep away from the kinks at +-1 */
        if (fabsf(x[i] - 1.0f) < 0.05f) x[i] += 0.2f;
        if (fabsf(x[i] + 1.0f) < 0.05f) x[i] -= 0.2f;
    }
    set_input(&in[0], x, 4, 2, 1, 3, 4);
    check_gradients("hinge_d_real", build_hinge_real, NULL, in, 1, 1e-2f, 1e-4f, 1e-3f);
    check_gradients("hinge_d_fake", build_hinge_fake, NULL, in, 1, 1e-2f, 1e-4f, 1e-3f);
    check_gradients("hinge_g", build_hinge_g, NULL, in, 1, 1e-2f, 1e-4f, 1e-3f);
}

static void gradcheck_l1(void) {
    float a[2 * 2 * 3 * 5], b[2 * 2 * 3 * 5];
    int lens[2] = {3, 5};
    check_input in[2];
    fill(a, 60, 2, 1.0f); fill(b, 60, 3, 1.0f);
    set_input(&in[0], a, 4, 2, 2, 3, 5);
    set_input(&in[1], b, 4, 2, 2, 3, 5);
    check_gradients("masked_l1", build_l1, lens, in, 2, 1e-3f, 1e-4f, 1e-3f);
}

static void gradcheck_kl(void) {
    float mu[3 * 4], lv[3 * 4];
    check_input in[2];
    fill(mu, 12, 4, 1.0f); fill(lv, 12, 5, 0.7f);
    set_input(&in[0], mu, 2, 3, 4, 1, 1);
    set_input(&in[1], lv, 2, 3, 4, 1, 1);
    check_gradients("kl_gaussian", build_kl, NULL, in, 2, 1e-3f, 2e-4f, 2e-3f);
}

static void gradcheck_cx(void) {
    /* target [2, 4, 3, 4] (P = 12), inference [2, 4, 2, 3] (Q = 6): random features give
       unique min/max; the step stays below the gaps between them */
    float ft[2 * 4 * 12], fi[2 * 4 * 6], ft2[1 * 5 * 9], fi2[1 * 5 * 9];
    check_input in[2];
    int64_t i;
    fill(ft, 96, 6, 1.0f); fill(fi, 48, 7, 1.0f);
    set_input(&in[0], ft, 4, 2, 4, 3, 4);
    set_input(&in[1], fi, 4, 2, 4, 2, 3);
    /* central differences of a float32 loss with eps 1e-3: ~1e-4 noise, hence atol 1e-3 */
    check_gradients("cx (P != Q)", build_cx, NULL, in, 2, 1e-3f, 1e-3f, 1e-2f);
    /* same size, inference near the target: small minima amplify through r / (min + eps) */
    fill(ft2, 45, 8, 1.0f); fill(fi2, 45, 9, 0.4f);
    for (i = 0; i < 45; ++i) fi2[i] += ft2[i];
    set_input(&in[0], ft2, 4, 1, 5, 3, 3);
    set_input(&in[1], fi2, 4, 1, 5, 3, 3);
    check_gradients("cx (near target)", build_cx, NULL, in, 2, 1e-3f, 1e-3f, 1e-2f);
}

/* ---- oracle comparisons ---- */
/* Runs a one- or two-input loss (nb NULL: one input) on fixture tensors, seeds backward
   with the fixture's dy, compares y and the gradients of the inputs. */
static void oracle_run(const char *label, const higan_safetensors *st, const char *na, const char *nb,
                       const char *ny, const char *ndy, const char *nda, const char *ndb,
                       check_build_fn fn, void *ctx,
                       float atol, float rtol) {
    const higan_st_tensor *ta = higan_safetensors_find(st, na), *tb = nb ? higan_safetensors_find(st, nb) : NULL;
    float *a, *b = NULL, *y, *dy, *da, *db = NULL;
    higan_arena arena;
    higan_tape tape;
    higan_var *in[2], *out;
    char name[256];
    int k;
    if (!ta || (nb && !tb)) { CHECK(0, "%s: fixture tensors missing", label); return; }
    a = check_load(st, na, NULL); y = check_load(st, ny, NULL); dy = check_load(st, ndy, NULL);
    da = check_load(st, nda, NULL);
    if (nb) { b = check_load(st, nb, NULL); db = check_load(st, ndb, NULL); }
    if (!a || !y || !dy || !da || (nb && (!b || !db))) return;
    higan_arena_init(&arena, (size_t)16 << 20);
    higan_tape_init(&tape, &arena, 64);
    in[0] = higan_var_wrap(&tape, a, ta->ndim, ta->shape);
    in[0]->requires_grad = 1;
    in[1] = NULL;
    if (nb) { in[1] = higan_var_wrap(&tape, b, tb->ndim, tb->shape); in[1]->requires_grad = 1; }
    out = fn(&tape, in, ctx);
    if (!out) { CHECK(0, "%s: op failed: %s", label, higan_last_error()); goto done; }
    snprintf(name, sizeof name, "%s forward", label);
    check_close(name, out->data, y, 1, atol, rtol);
    CHECK(higan_tape_backward(&tape, out, dy) == HIGAN_OK, "%s backward ran", label);
    for (k = 0; k < (nb ? 2 : 1); ++k) {
        const float *ref = k ? db : da;
        snprintf(name, sizeof name, "%s grad %s", label, k ? nb : na);
        if (!in[k]->grad) { CHECK(0, "%s: no gradient", name); continue; }
        check_close(name, in[k]->grad, ref, higan_var_numel(in[k]), atol, rtol);
    }
done:
    higan_tape_free(&tape);
    higan_arena_free(&arena);
    free(a); free(b); free(y); free(dy); free(da); free(db);
}

static void oracle_hinge(void) {
    higan_safetensors st;
    if (!check_open_fixture(&st, "loss_hinge.safetensors")) return;
    oracle_run("oracle hinge_d_real", &st, "x", NULL, "y_real", "dy", "dx_real", NULL, build_hinge_real, NULL, 1e-5f, 1e-4f);
    oracle_run("oracle hinge_d_fake", &st, "x", NULL, "y_fake", "dy", "dx_fake", NULL, build_hinge_fake, NULL, 1e-5f, 1e-4f);
    oracle_run("oracle hinge_g", &st, "x", NULL, "y_g", "dy", "dx_g", NULL, build_hinge_g, NULL, 1e-5f, 1e-4f);
    higan_safetensors_free(&st);
}

static void oracle_l1(void) {
    higan_safetensors st;
    int64_t lens64[3];
    int lens[3];
    if (!check_open_fixture(&st, "loss_masked_l1.safetensors")) return;
    if (higan_safetensors_read_i64(&st, "lens", lens64, 3) != HIGAN_OK) { CHECK(0, "lens: %s", higan_last_error()); }
    else lens[0] = (int)lens64[0], lens[1] = (int)lens64[1], lens[2] = (int)lens64[2],
         oracle_run("oracle masked_l1", &st, "a", "b", "y", "dy", "da", "db", build_l1, lens, 1e-5f, 1e-4f);
    higan_safetensors_free(&st);
}

static void oracle_kl(void) {
    higan_safetensors st;
    if (!check_open_fixture(&st, "loss_kl.safetensors")) return;
    oracle_run("oracle kl_gaussian", &st, "mu", "logvar", "y", "dy", "dmu", "dlogvar", build_kl, NULL, 1e-5f, 1e-4f);
    higan_safetensors_free(&st);
}

static void oracle_cx(void) {
    higan_safetensors st;
    if (!check_open_fixture(&st, "loss_cx.safetensors")) return;
    oracle_run("oracle cx (P != Q)", &st, "a_ft", "a_fi", "a_y", "a_dy", "a_dft", "a_dfi", build_cx, NULL, 1e-5f, 1e-4f);
    oracle_run("oracle cx (near target)", &st, "b_ft", "b_fi", "b_y", "b_dy", "b_dft", "b_dfi", build_cx, NULL, 1e-5f, 1e-4f);
    oracle_run("oracle cx (larger maps)", &st, "c_ft", "c_fi", "c_y", "c_dy", "c_dft", "c_dfi", build_cx, NULL, 1e-5f, 1e-4f);
    higan_safetensors_free(&st);
}

/* Raw kernels: NULL gradients skip work, backward accumulates, no-grad forward works. */
static void kernel_contracts(void) {
    float ft[2 * 3 * 5], fi[2 * 3 * 4], dft[30], dfi[24], dft2[30], dfi2[24], y1, y2, dy = 1.0f;
    higan_arena arena;
    higan_cx_cache cache;
    int64_t i;
    int ok;
    fill(ft, 30, 21, 1.0f); fill(fi, 24, 22, 1.0f);
    higan_arena_init(&arena, (size_t)1 << 20);
    ok = higan_cx_cache_alloc(&cache, &arena, 2, 3, 5, 4) == HIGAN_OK;
    CHECK(ok, "cx cache alloc");
    higan_cx_loss_forward(&y1, &cache, ft, fi, 2, 3, 5, 4, 0.5f, 1.0f, &arena);
    higan_cx_loss_forward(&y2, NULL, ft, fi, 2, 3, 5, 4, 0.5f, 1.0f, &arena);
    CHECK(y1 == y2 && y1 == y1, "cx forward with and without cache agree (%g, %g)", y1, y2);
    for (i = 0; i < 30; ++i) { dft[i] = 1.0f; dft2[i] = 0.0f; }
    for (i = 0; i < 24; ++i) { dfi[i] = 1.0f; dfi2[i] = 0.0f; }
    higan_cx_loss_backward(dft, dfi, &dy, &cache, 2, 3, 5, 4, 0.5f, 1.0f, &arena);
    higan_cx_loss_backward(dft2, NULL, &dy, &cache, 2, 3, 5, 4, 0.5f, 1.0f, &arena);
    higan_cx_loss_backward(NULL, dfi2, &dy, &cache, 2, 3, 5, 4, 0.5f, 1.0f, &arena);
    for (i = 0; i < 30; ++i) dft[i] -= 1.0f;
    for (i = 0; i < 24; ++i) dfi[i] -= 1.0f;
    check_close("cx backward accumulates / NULL skips (dT)", dft, dft2, 30, 1e-6f, 1e-5f);
    check_close("cx backward accumulates / NULL skips (dI)", dfi, dfi2, 24, 1e-6f, 1e-5f);
    CHECK(arena.used == 0 || higan_arena_status(&arena) == HIGAN_OK, "arena fine");
    higan_arena_free(&arena);
}

/* Semantics worth pinning down beyond the fixtures. */
static void semantics(void) {
    float x[4] = {1.0f, -1.0f, 0.5f, -3.0f}, dx[4] = {0, 0, 0, 0}, y, dy = 1.0f;
    float a[2 * 3] = {1, 2, 3, 4, 5, 6}, b[2 * 3] = {1, 0, 3.5f, 2, 5, 9}, da[6] = {0, 0, 0, 0, 0, 0};
    float mu[2] = {0, 0}, lv[2] = {0, 0}, dmu[2] = {0, 0}, dlv[2] = {0, 0};
    int lens[2] = {3, 3};
    /* relu'(0) = 0: no gradient at the kink, like PyTorch */
    higan_hinge_d_real_forward(&y, x, 4);
    higan_hinge_d_real_backward(dx, &dy, x, 4);
    CHECK(y == (0.0f + 2.0f + 0.5f + 4.0f) / 4.0f && dx[0] == 0.0f && dx[1] == -0.25f,
          "hinge_d_real value %g, zero gradient at the kink", y);
    dx[0] = dx[1] = dx[2] = dx[3] = 0;
    higan_hinge_d_fake_backward(dx, &dy, x, 4);
    CHECK(dx[0] == 0.25f && dx[1] == 0.0f && dx[3] == 0.0f, "hinge_d_fake zero gradient at and past the kink");
    /* [N, D] with lens = D is HiGAN+'s info_loss mean(|a - b|); sign(0) = 0 */
    higan_masked_l1_forward(&y, a, b, lens, 2, 1, 3);
    higan_masked_l1_backward(da, NULL, &dy, a, b, lens, 2, 1, 3);
    CHECK(fabsf(y - (0 + 2 + 0.5f + 2 + 0 + 3) / 6.0f) < 1e-6f && da[0] == 0.0f && da[1] == 1.0f / 6.0f &&
          da[2] == -1.0f / 6.0f, "masked_l1 with full lens is mean |a - b| (%g)", y);
    /* KL of N(0, 1) from itself is 0 with zero gradients */
    higan_kl_gaussian_forward(&y, mu, lv, 1, 2);
    higan_kl_gaussian_backward(dmu, dlv, &dy, mu, lv, 1, 2);
    CHECK(y == 0.0f && dmu[0] == 0.0f && dlv[1] == 0.0f, "kl of the standard normal is 0");
}

/* Thread count must not change any bit. */
static void thread_invariance(void) {
    enum { N = 2, C = 24, HT = 8, WT = 40, HI = 8, WI = 36 };
    int64_t st[4] = {N, C, HT, WT}, si[4] = {N, C, HI, WI};
    float *ft = (float *)malloc(sizeof(float) * N * C * HT * WT), *fi = (float *)malloc(sizeof(float) * N * C * HI * WI);
    float *g[2][2], y[2];
    int run, k, threads = higan_get_num_threads();
    higan_arena arena;
    higan_tape tape;
    fill(ft, (int64_t)N * C * HT * WT, 31, 1.0f); fill(fi, (int64_t)N * C * HI * WI, 32, 1.0f);
    higan_arena_init(&arena, (size_t)64 << 20);
    higan_tape_init(&tape, &arena, 64);
    for (run = 0; run < 2; ++run) {
        higan_var *vt, *vi, *out;
        higan_set_num_threads(run == 0 ? 1 : (threads > 1 ? threads : 2));
        higan_tape_reset(&tape);
        vt = higan_var_wrap(&tape, ft, 4, st); vt->requires_grad = 1;
        vi = higan_var_wrap(&tape, fi, 4, si); vi->requires_grad = 1;
        out = higan_cx_loss(&tape, vt, vi, HIGAN_CX_SIGMA, HIGAN_CX_B);
        g[run][0] = g[run][1] = NULL;
        if (!out) { CHECK(0, "cx big: %s", higan_last_error()); continue; }
        y[run] = out->data[0];
        higan_tape_backward(&tape, out, NULL);
        g[run][0] = (float *)malloc(sizeof(float) * N * C * HT * WT);
        g[run][1] = (float *)malloc(sizeof(float) * N * C * HI * WI);
        memcpy(g[run][0], vt->grad, sizeof(float) * N * C * HT * WT);
        memcpy(g[run][1], vi->grad, sizeof(float) * N * C * HI * WI);
    }
    higan_set_num_threads(threads);
    if (g[0][0] && g[1][0]) {
        CHECK(y[0] == y[1], "cx forward identical for 1 and %d threads", threads > 1 ? threads : 2);
        CHECK(memcmp(g[0][0], g[1][0], sizeof(float) * N * C * HT * WT) == 0 &&
              memcmp(g[0][1], g[1][1], sizeof(float) * N * C * HI * WI) == 0,
              "cx gradients identical for 1 and several threads");
    }
    for (run = 0; run < 2; ++run) for (k = 0; k < 2; ++k) free(g[run][k]);
    higan_tape_free(&tape);
    higan_arena_free(&arena);
    free(ft); free(fi);
}

int main(void) {
    printf("cpu level: %s, threads %d\n", higan_cpu_level_name(higan_cpu_level()), higan_get_num_threads());
    gradcheck_hinge();
    gradcheck_l1();
    gradcheck_kl();
    gradcheck_cx();
    oracle_hinge();
    oracle_l1();
    oracle_kl();
    oracle_cx();
    kernel_contracts();
    semantics();
    thread_invariance();
    return check_finish();
}
