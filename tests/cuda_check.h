// cuda_check.h - what every tests/test_cuda*.cu binary shares: higan.h and higan_cuda.cuh
// (their implementations: tests/cuda_impl.cu, linked in), check.h, a CUDA context G, a
// device arena DA and a host arena HA for the current test (fresh() empties both), an RNG R,
// helpers that move data between them, comparisons, and cuda_test_begin / cuda_test_end for
// main(): without a CUDA device a binary prints "SKIP <name>: no CUDA device" and
// "RESULT 0 0" and exits 0; with HIGAN_REQUIRE_CUDA=1 (make test-cuda) that is a failure.
// Built with -DHIGAN_CUDA_EMULATE (build/test_cuda*_emu) everything runs on the host through
// higan_cuda.cuh's emulation, with device memory guarded (HIGAN_CUDA_EMULATE_GUARD).
#ifndef HIGAN_TEST_CUDA_CHECK_H
#define HIGAN_TEST_CUDA_CHECK_H
// The implementations are not here: tests/cuda_impl.cu compiles them once (per build flavour)
// into an object that every CUDA test binary links.
#include "higan.h"
#ifdef HIGAN_CUDA_EMULATE   // as in cuda_impl.cu: declares higan_cuda_emulate_guard
#  define HIGAN_CUDA_EMULATE_GUARD
#endif
#include "higan_cuda.cuh"
#include "check.h"
#ifdef HIGAN_CUDA_EMULATE
#  include <signal.h>
#  include <sys/wait.h>
#  include <unistd.h>
#endif

static higan_cuda G;            // the CUDA context
static higan_cuda_arena DA;     // device memory of the current test
static higan_arena HA;          // host memory of the current test
static higan_rng R;

static void fresh(void) {
    higan_arena_reset(&HA);
    higan_cuda_arena_reset(&DA);
}
static int ok(higan_status st, const char *what) {
    if (st != HIGAN_OK) CHECK(0, "%s: status %d: %s", what, st, higan_last_error());
    return st == HIGAN_OK;
}
static float *hnew(int64_t n) {
    float *p = higan_arena_floats(&HA, n > 0 ? n : 1);
    if (!p) { fprintf(stderr, "host test arena overflow\n"); abort(); }
    return p;
}
static float *hrand(int64_t n, float lo, float hi) {
    float *p = hnew(n);
    higan_rng_fill_uniform(&R, p, n, lo, hi);
    return p;
}
static float *hcopy(const float *src, int64_t n) {
    float *p = hnew(n);
    memcpy(p, src, (size_t)n * sizeof(float));
    return p;
}
static void *dalloc(size_t bytes) {
    void *p = higan_cuda_arena_alloc(&DA, bytes ? bytes : 1);
    if (!p) { fprintf(stderr, "device test arena overflow: %s\n", higan_last_error()); abort(); }
    return p;
}
static float *dnew(int64_t n) { return (float *)dalloc((size_t)n * sizeof(float)); }
// device copy of host data (NULL stays NULL)
static float *dup(const float *h, int64_t n) {
    float *d;
    if (!h) return NULL;
    d = dnew(n);
    ok(higan_cuda_upload(&G, d, h, (size_t)n * sizeof(float)), "upload");
    return d;
}
static int *dupi(const int *h, int64_t n) {
    int *d = (int *)dalloc((size_t)n * sizeof(int));
    ok(higan_cuda_upload(&G, d, h, (size_t)n * sizeof(int)), "upload ints");
    return d;
}
static float *fetch(const float *d, int64_t n) {
    float *h = hnew(n);
    ok(higan_cuda_download(&G, h, d, (size_t)n * sizeof(float)), "download");
    return h;
}
static void cmp(const char *name, const float *d, const float *ref, int64_t n, float atol, float rtol) {
    check_close(name, fetch(d, n), ref, n, atol, rtol);
}
// like cmp, with +-inf mapped to +-1e30 on both sides (equal infinities pass, an infinity
// against a finite value fails)
static void cmp_inf(const char *name, const float *d, const float *ref, int64_t n, float atol, float rtol) {
    float *g = fetch(d, n), *r = hcopy(ref, n);
    int64_t i;
    for (i = 0; i < n; ++i) {
        if (isinf(g[i])) g[i] = g[i] > 0 ? 1e30f : -1e30f;
        if (isinf(r[i])) r[i] = r[i] > 0 ? 1e30f : -1e30f;
    }
    check_close(name, g, r, n, atol, rtol);
}
static void cmp_i32(const char *name, const int32_t *d, const int32_t *ref, int64_t n) {
    int32_t *h = (int32_t *)higan_arena_alloc(&HA, (size_t)n * sizeof(int32_t));
    int64_t i, bad = 0;
    ok(higan_cuda_download(&G, h, d, (size_t)n * sizeof(int32_t)), "download ints");
    for (i = 0; i < n; ++i) bad += h[i] != ref[i];
    CHECK(bad == 0, "%s: %lld ints, %lld differ", name, (long long)n, (long long)bad);
}

// Largest |a - b| relative to the largest |b| (for gradients of very different scales).
static double rel_err(const float *a, const float *b, int64_t n) {
    double worst = 0.0, scale = 0.0;
    int64_t i;
    for (i = 0; i < n; ++i) {
        double d = fabs((double)a[i] - (double)b[i]);
        if (d > worst) worst = d;
        if (fabs((double)b[i]) > scale) scale = fabs((double)b[i]);
    }
    return scale > 0.0 ? worst / scale : worst;
}

// on = 1: device memory inaccessible to host code while device-side code runs (emulation with
// HIGAN_CUDA_EMULATE_GUARD; on a GPU it always is, and this does nothing)
static void guard(int on) {
#ifdef HIGAN_CUDA_EMULATE
    higan_cuda_emulate_guard(on);
#else
    (void)on;
#endif
}

// A device tape t on be: a host arena of host_bytes (variables, contexts) and a device data
// arena of data_bytes (every float buffer); 0 (a failed check) when an arena cannot be made.
static int dev_tape_open(higan_tape *t, higan_arena *host, higan_arena *data, const higan_backend *be,
                         size_t host_bytes, size_t data_bytes, int entries) {
    if (!ok(higan_arena_init(host, host_bytes), "device tape: host arena")) return 0;
    if (!ok(higan_backend_arena_init(data, be, data_bytes), "device tape: data arena")) return 0;
    higan_tape_init(t, host, entries);
    higan_tape_set_backend(t, be, data);
    return 1;
}
static void dev_tape_close(higan_tape *t, higan_arena *host, higan_arena *data, const higan_backend *be) {
    higan_tape_free(t);
    higan_backend_arena_free(data, be);
    higan_arena_free(host);
}

// The shipped small Generator (examples/models/) into m, zeroed first; 0 (a failed check) when
// the file cannot be read.
#define GEN_MODEL "examples/models/higan_small.safetensors"
static int load_generator(higan_model *m) {
    memset(m, 0, sizeof *m);
    if (higan_model_load(m, GEN_MODEL, HIGAN_NET_BIT(HIGAN_NET_GENERATOR), NULL) != HIGAN_OK) {
        CHECK(0, "load %s: %s", GEN_MODEL, higan_last_error());
        return 0;
    }
    return 1;
}
// The Generator's training batch of the device tests: 2 words of 2 and 3 characters.
#define GEN_B 2
#define GEN_L 3
static const int GEN_LABELS[GEN_B * GEN_L] = {5, 17, 0, 30, 41, 12}, GEN_LENS[GEN_B] = {2, 3};
// One training-mode forward and backward of the Generator (batch statistics and running-stat
// updates, u0 / sv0 updates, the embedding and every other op's backward) on a tape, on the
// batch above: loss = mean(G(z) * Rw), gradients of z (*zv) and of every parameter; release:
// higan_tape_backward_release (the arena recycles as the backward goes).
static higan_var *gen_train_step(higan_model *m, higan_tape *t, const float *z, const float *Rw, int release,
                                 higan_var **zv) {
    int64_t zs[2];
    higan_var *out, *rv, *loss;
    higan_tape_reset(t);
    zs[0] = GEN_B; zs[1] = m->cfg.G.style_dim;
    if (!(*zv = higan_var_upload(t, z, 2, zs))) return NULL;
    (*zv)->requires_grad = 1;
    if (!(out = higan_generator_forward(t, &m->G, *zv, GEN_LABELS, GEN_LENS, GEN_L, 1))) return NULL;
    if (!(rv = higan_var_upload(t, Rw, out->ndim, out->shape))) return NULL;
    loss = higan_mean_all(t, higan_mul(t, out, rv));
    if (!loss) return NULL;
    if ((release ? higan_tape_backward_release(t, loss, NULL) : higan_tape_backward(t, loss, NULL)) != HIGAN_OK)
        return NULL;
    return loss;
}

// main(): `if (!cuda_test_begin("test_x")) return cuda_test_skip();` ... tests ...
// `return cuda_test_end();`
static int cuda_test_skipped;
static int cuda_test_begin(const char *name) {
    const char *req = getenv("HIGAN_REQUIRE_CUDA");
    if (!higan_cuda_available()) {
        if (req && *req && strcmp(req, "0") != 0) {
            CHECK(0, "%s: no CUDA device, and HIGAN_REQUIRE_CUDA is set (make test-cuda needs a GPU)", name);
            return 0;
        }
        printf("SKIP %s: no CUDA device\n", name);
        cuda_test_skipped = 1;
        return 0;
    }
    if (!ok(higan_cuda_init(&G, 0), "cuda init")) return 0;
    if (!ok(higan_cuda_arena_init(&DA, (size_t)256 << 20), "device arena")) return 0;
    if (!ok(higan_arena_init(&HA, (size_t)256 << 20), "host arena")) return 0;
    higan_rng_seed(&R, 20240611);
    return 1;
}
// after a failed cuda_test_begin: "RESULT 0 0" (exit 0) when skipped, else the failure
static int cuda_test_skip(void) {
    if (cuda_test_skipped) { printf("RESULT 0 0\n"); return 0; }
    return check_finish();
}
static int cuda_test_end(void) {
    ok(higan_cuda_sync(&G), "final sync (errors of kernels that ran)");
    higan_cuda_arena_free(&DA);
    higan_arena_free(&HA);
    higan_cuda_free(&G);
    return check_finish();
}
#endif
