// test_cuda_train.cu - issue 6 steps 4-6: parameter stores on a backend (higan_params_to_backend),
// the optimizer through the table, checkpoints of device-trained stores, and the trainers on a
// device tape (higan_cuda_backend) against the same calls on a CPU tape:
//   - Adam and zero_grad through the mirror equal the CPU bit for bit (3 steps); the trainers'
//     reductions (moments: torch.std's two passes; find_nonfinite) against the CPU entries
//   - one recognizer pretraining step, one writer-identifier step and one full GAN iteration
//     (D step + G step, tiny configuration of tests/test_gan.c, injected draws) from the same
//     state on a CPU tape and a device tape: losses, parameter gradients (per tensor, relative
//     to the tensor's largest), buffers, and the weights after Adam
//   - a checkpoint saved from the device-trained GAN equals the downloaded store and reloads
//     (into a CPU trainer and into a device trainer: the upload after load)
//   - a NaN in the batch stops the device D step (HIGAN_GAN_NONFINITE) without an Adam step
//   - the device data arenas start at 1 MB and grow (the steps retry after restoring state)
//
// Tolerances, and why (emulation: the routed ops run as CUDA functors on the host, with double
// accumulators in the emulated GEMMs; ops not yet routed call the CPU kernels):
//   losses                 relative 1e-4 (reductions in another order; the G step's balancing
//                          stds divide gradients)
//   parameter gradients    per tensor, max |dev - cpu| <= 1e-3 x the tensor's largest |cpu|
//                          (1e-2 for G + E after the G step: its gradient comes through the
//                          frozen R's LSTM and CTC, W and the contextual loss, whose
//                          1 / (rmin + 1e-5) amplifies rounding, and the balancing factors
//                          gp = std_adv / std_x are ratios of device reductions; the
//                          oracle test (tests/test_gan.c) sees the same sensitivity between
//                          PyTorch's fp32 and fp64 runs); tensors whose largest gradient is
//                          below 1e-4 of the store's largest (biases before a batch-statistics
//                          BN: 0 up to rounding) must stay below 1e-4 of it on the device too
//   buffers                1e-5 + 1e-4 |cpu| (running statistics, u0, sv0)
//   weights after Adam     1e-6 max(1, |w|) for elements whose gradient is >= 1e-3 of its
//                          tensor's largest (Adam's first step moves a weight by lr * sign(g):
//                          the sign of a near-zero gradient is rounding noise)
//
// THE GUARD. Device memory is inaccessible to host code during the device-side trainer calls
// (as on a GPU): a CPU kernel or host loop that touched a device buffer would crash the test.
// HIGAN_TEST_GUARD=0 runs the trainer tests unguarded (in plain emulation a host access to
// device memory computes the right values: for debugging). The store / Adam / reduction tests
// always run guarded.
#include "cuda_check.h"
#include "gan_fixture.h"

static int guard_wanted(void) {
    const char *g = getenv("HIGAN_TEST_GUARD");
    return !g || !*g || strcmp(g, "0") != 0;
}
static higan_backend BE;        // the CUDA table on G

// A new device tape: host arena (bookkeeping) and a device data arena of data_mb.
typedef struct { higan_arena host, data; higan_tape t; } dev_tape;
static int dev_tape_init(dev_tape *d, size_t data_mb) {
    return dev_tape_open(&d->t, &d->host, &d->data, &BE, (size_t)16 << 20, data_mb << 20, 4096);
}
static void dev_tape_free(dev_tape *d) { dev_tape_close(&d->t, &d->host, &d->data, &BE); }

/* ---- the store's mirror, Adam, zero_grad, the reductions -------------------------------------- */
static void register_store(higan_params *p) {
    int64_t s1[2] = {7, 5}, s2[1] = {40000}, s3[1] = {3}, s4[1] = {1}, s5[2] = {3, 11};
    higan_params_init(p);
    higan_params_add(p, "w", HIGAN_PARAM, 2, s1);
    higan_params_add(p, "b", HIGAN_PARAM, 1, s2);
    higan_params_add(p, "running", HIGAN_BUFFER, 1, s3);
    higan_params_add(p, "count", HIGAN_BUFFER_I64, 1, s4);
    higan_params_add(p, "v", HIGAN_PARAM, 2, s5);
}
static void test_store_adam(void) {
    higan_params P, Q;
    higan_adam a = higan_adam_default(2e-3), b = higan_adam_default(2e-3);
    float *g, *tb;
    int step, h;
    int64_t k, nz = 0;
    fresh();
    register_store(&P);
    register_store(&Q);
    if (!ok(higan_params_alloc(&P), "alloc P") || !ok(higan_params_alloc(&Q), "alloc Q")) return;
    higan_rng_fill_uniform(&R, P.value, P.n_param, -1, 1);
    higan_rng_fill_uniform(&R, P.buffer, P.n_buffer, -1, 1);
    P.ibuffer[0] = 42;
    memcpy(Q.value, P.value, sizeof(float) * (size_t)P.n_param);
    memcpy(Q.buffer, P.buffer, sizeof(float) * (size_t)P.n_buffer);
    Q.ibuffer[0] = 42;
    ok(higan_params_to_backend(&Q, &BE), "store to the device");
    CHECK(Q.mirror_be == &BE && Q.dev_value == Q.mirror.value && Q.dev_grad == Q.mirror.grad &&
          Q.dev_buffer == Q.mirror.buffer, "to_backend attaches the owned mirror (tapes use it)");
    g = hnew(P.n_param);
    guard(1);   // from here on the host must not touch Q's mirror
    for (step = 0; step < 3; ++step) {   // the same gradients on both sides
        higan_rng_fill_uniform(&R, g, P.n_param, -1, 1);
        memcpy(P.grad, g, sizeof(float) * (size_t)P.n_param);
        memcpy(Q.grad, g, sizeof(float) * (size_t)P.n_param);
        higan_params_upload(&Q, HIGAN_PARAMS_GRADS);
        higan_adam_step(&a, &P);
        higan_adam_step(&b, &Q);      // dispatches to the mirror
    }
    CHECK(a.step == 3 && b.step == 3, "adam step counters %lld %lld", (long long)a.step, (long long)b.step);
    // the host arrays of Q are stale until a download
    higan_params_download(&Q, HIGAN_PARAMS_STATE);
    check_close("Adam through the mirror: values after 3 steps (bit for bit)", Q.value, P.value, P.n_param, 0, 0);
    check_close("Adam through the mirror: m", Q.adam_m, P.adam_m, P.n_param, 0, 0);
    check_close("Adam through the mirror: v", Q.adam_v, P.adam_v, P.n_param, 0, 0);
    // one tensor from / into the mirror
    h = higan_params_find(&Q, "b");
    tb = hnew(40000);
    higan_params_read(&Q, h, tb);
    check_close("params_read of a tensor on the device", tb, higan_params_data(&P, h), 40000, 0, 0);
    for (k = 0; k < 40000; ++k) tb[k] = (float)k;
    higan_params_write(&Q, h, tb);
    higan_params_zero_grad(&Q);       // dispatches: the mirror's gradients
    ok(BE.sync(BE.ctx), "table sync after Adam, write, zero_grad");
    guard(0);
    higan_params_download(&Q, HIGAN_PARAMS_GRADS | HIGAN_PARAMS_VALUES);
    for (k = 0; k < Q.n_param; ++k) nz += Q.grad[k] != 0.0f;
    CHECK(nz == 0, "zero_grad on the mirror clears every gradient (%lld nonzero)", (long long)nz);
    check_close("params_write into the mirror", higan_params_data(&Q, h), tb, 40000, 0, 0);
    // home: state comes back, the int64 counter stays the host's
    Q.ibuffer[0] = 43;   // the host counter moved on (as the batch-norm ops count on the host)
    ok(higan_params_to_backend(&Q, NULL), "store back to the host");
    CHECK(Q.mirror_be == NULL && Q.dev_value == NULL && Q.ibuffer[0] == 43,
          "to_backend(NULL): mirror freed, detached, host counter kept (%lld)", (long long)Q.ibuffer[0]);
    check_close("buffers after the round trip", Q.buffer, P.buffer, P.n_buffer, 0, 0);
    higan_params_free(&P);
    higan_params_free(&Q);
}

static void test_reductions(void) {
    const int64_t n = 10007;
    float *x, *dx;
    double mc[2], md[2];
    int64_t fc, fd;
    const higan_backend *cpu = higan_cpu_backend();
    fresh();
    x = hrand(n, -3, 5);
    dx = dup(x, n);
    guard(1);
    cpu->moments(cpu->ctx, mc, x, n);
    BE.moments(BE.ctx, md, dx, n);
    CHECK(fabs(md[0] - mc[0]) <= 1e-12 * fabs(mc[0]) + 1e-15 && fabs(md[1] - mc[1]) <= 1e-12 * mc[1],
          "moments on the device: mean %.17g / %.17g, sum of squares %.17g / %.17g", md[0], mc[0], md[1], mc[1]);
    cpu->find_nonfinite(cpu->ctx, &fc, x, n);
    BE.find_nonfinite(BE.ctx, &fd, dx, n);
    CHECK(fc == -1 && fd == -1, "find_nonfinite: all finite (%lld, %lld)", (long long)fc, (long long)fd);
    guard(0);
    {
        const float nan = NAN, inf = INFINITY;
        ok(higan_cuda_upload(&G, dx + 5000, &inf, sizeof inf), "put an inf");
        ok(higan_cuda_upload(&G, dx + 9000, &nan, sizeof nan), "put a nan");
        x[5000] = inf; x[9000] = nan;
    }
    guard(1);
    cpu->find_nonfinite(cpu->ctx, &fc, x, n);
    BE.find_nonfinite(BE.ctx, &fd, dx, n);
    guard(0);
    CHECK(fc == 5000 && fd == 5000, "find_nonfinite: the first of an inf and a nan (%lld, %lld)", (long long)fc,
          (long long)fd);
    ok(BE.sync(BE.ctx), "table sync after the reductions");
}

/* ---- comparing a CPU-trained store with a device-trained one ---------------------------------- */
typedef struct { double grad, buf, val; int zero, skipped_small, host_written, bad; } cmp_figures;
// The device model's host buffer arrays before and after a step: a network that updated its
// running statistics in the host arrays instead of the mirror (whose copies would go stale)
// fails the comparison.
typedef struct { float *before[HIGAN_STORE_COUNT], *after[HIGAN_STORE_COUNT]; } host_bufs;
static void host_bufs_take(float **dst, const higan_model *m) {
    int s;
    for (s = 0; s < HIGAN_STORE_COUNT; ++s) {
        const higan_params *p = &m->store[s];
        dst[s] = (float *)malloc(sizeof(float) * (size_t)(p->n_buffer > 0 ? p->n_buffer : 1));
        if (p->n_buffer) memcpy(dst[s], p->buffer, sizeof(float) * (size_t)p->n_buffer);
    }
}
static void host_bufs_free(host_bufs *h) {
    int s;
    for (s = 0; s < HIGAN_STORE_COUNT; ++s) { free(h->before[s]); free(h->after[s]); }
}
// q: the device store, already downloaded (HIGAN_PARAMS_STATE | HIGAN_PARAMS_GRADS); hb: its host
// buffer arrays before / after the step (a buffer written there is compared from there: with
// any such write is a failure)
static double grad_tol = 1e-3;   // per tensor, relative to its largest (see the top)
static cmp_figures compare_stores(const char *label, const higan_params *p, const higan_params *q, int grads,
                                  const host_bufs *hb, int store) {
    cmp_figures f;
    double gmax = 0.0;
    int h;
    int64_t k;
    memset(&f, 0, sizeof f);
    for (k = 0; k < p->n_param; ++k) if (fabs((double)p->grad[k]) > gmax) gmax = fabs((double)p->grad[k]);
    for (h = 0; h < p->count; ++h) {
        const higan_param_entry *e = &p->entries[h];
        const float *pg = p->grad + e->offset, *qg = q->grad + e->offset;
        const float *pv = (e->kind == HIGAN_PARAM ? p->value : p->buffer) + e->offset;
        const float *qv = (e->kind == HIGAN_PARAM ? q->value : q->buffer) + e->offset;
        double tmax = 0.0, dmax = 0.0, err = 0.0;
        if (e->kind == HIGAN_BUFFER_I64) {
            if (memcmp(p->ibuffer + e->offset, q->ibuffer + e->offset, sizeof(int64_t) * (size_t)e->numel)) {
                ++f.bad;
                printf("    %s: %s differs\n", label, e->name);
            }
            continue;
        }
        if (e->kind == HIGAN_BUFFER) {
            if (hb && memcmp(hb->before[store] + e->offset, hb->after[store] + e->offset,
                             sizeof(float) * (size_t)e->numel)) {
                ++f.host_written;
                qv = hb->after[store] + e->offset;
                ++f.bad;   /* a network updated it in the host arrays, not in the mirror */
                printf("    %s: buffer %s was updated on the host\n", label, e->name);
            }
            for (k = 0; k < e->numel; ++k) {
                double d = fabs((double)pv[k] - (double)qv[k]) / (1e-5 + 1e-4 * fabs((double)pv[k]));
                if (!(d == d)) d = 1e30;
                if (d > err) err = d;
            }
            if (err > f.buf) f.buf = err;
            if (err > 1.0) { ++f.bad; printf("    %s: buffer %s off by %.3g x the tolerance\n", label, e->name, err); }
            continue;
        }
        if (!grads) continue;
        for (k = 0; k < e->numel; ++k) {
            if (fabs((double)pg[k]) > tmax) tmax = fabs((double)pg[k]);
            if (fabs((double)qg[k]) > dmax) dmax = fabs((double)qg[k]);
        }
        if (tmax < 1e-4 * gmax) {     // numerically zero: must stay so on the device
            ++f.zero;
            if (dmax >= 1e-4 * gmax) { ++f.bad; printf("    %s: %s should be ~0, largest %.3g\n", label, e->name, dmax); }
            continue;
        }
        err = rel_err(qg, pg, e->numel);
        if (!(err == err)) err = 1e30;
        if (err > f.grad) f.grad = err;
        if (err > grad_tol) { ++f.bad; printf("    %s: gradient of %s: relative error %.3g\n", label, e->name, err); }
        err = 0.0;   // the weights after Adam, where the gradient's sign is clear
        for (k = 0; k < e->numel; ++k) {
            double d;
            if (fabs((double)pg[k]) < 1e-3 * tmax) { ++f.skipped_small; continue; }
            d = fabs((double)pv[k] - (double)qv[k]) / (fabs((double)pv[k]) > 1.0 ? fabs((double)pv[k]) : 1.0);
            if (!(d == d)) d = 1e30;
            if (d > err) err = d;
        }
        if (err > f.val) f.val = err;
        if (err > 1e-6) { ++f.bad; printf("    %s: %s after Adam: %.3g\n", label, e->name, err); }
    }
    return f;
}
static void report(const char *label, cmp_figures f) {
    printf("  %s: gradients %.3g (rel. to each tensor's largest), buffers %.3g x tol, weights after Adam %.3g; "
           "%d tensors numerically zero, %d elements with near-zero gradients left out of the weights; %d buffers "
           "updated in the host arrays (must be 0)\n",
           label, f.grad, f.buf, f.val, f.zero, f.skipped_small, f.host_written);
    CHECK(f.bad == 0, "%s: every tensor within the stated tolerances (gradients %.3g, buffers %.3g, weights %.3g)",
          label, f.grad, f.buf, f.val);
}
static void check_loss(const char *name, float c, float d) {
    CHECK(fabs((double)c - (double)d) <= 1e-4 * fabs((double)c) + 1e-6, "%s: cpu %.9g, cuda %.9g", name, (double)c,
          (double)d);
}

/* the tiny configuration and batch of tests/test_gan.c: tiny_config, tiny_batch, make_batch
   (gan_fixture.h) */

/* ---- recognizer and writer-identifier pretraining steps ---------------------------------------- */
static void test_pretraining(void) {
    const unsigned nets = HIGAN_NET_BIT(HIGAN_NET_RECOGNIZER) | HIGAN_NET_BIT(HIGAN_NET_STYLE_BACKBONE) |
                          HIGAN_NET_BIT(HIGAN_NET_WRITER_IDENTIFIER);
    higan_model_config mc = tiny_config(nets);
    higan_model mcpu, mdev;
    higan_arena ca;
    higan_tape ct;
    dev_tape dt;
    tiny_batch tb;
    higan_rng r, rc, rd;
    higan_adam oc = higan_adam_default(1e-3), od = higan_adam_default(1e-3);
    higan_adam bc = higan_adam_default(1e-3), bd = higan_adam_default(1e-3);
    higan_adam wc = higan_adam_default(1e-3), wd = higan_adam_default(1e-3);
    float lc = 0, ld = 0;
    int cc = -1, cd = -1, s;
    host_bufs hb;
    higan_status st;
    higan_rng_seed(&r, 5);
    make_batch(&tb, &r);
    if (!ok(higan_model_init(&mcpu, &mc, 11), "CPU model") || !ok(higan_model_init(&mdev, &mc, 11), "device model")) return;
    for (s = HIGAN_STORE_BACKBONE; s <= HIGAN_STORE_OCR; ++s) mcpu.store[s].frozen = mdev.store[s].frozen = 0;
    higan_arena_init(&ca, (size_t)64 << 20);
    higan_tape_init(&ct, &ca, 4096);
    if (!dev_tape_init(&dt, 1)) return;           // 1 MB: the first device step grows its data arena
    // a CPU tape with a model on the device (and the reverse) is refused, naming the fix
    ok(higan_model_to_backend(&mdev, &BE), "model to the device");
    higan_rng_seed(&rd, 3);
    st = higan_ocr_train_step(&mdev, &ct, tb.imgs, 4, 128, tb.img_lens, tb.labels, 4, tb.label_lens, &od, &rd, &ld);
    CHECK(st == HIGAN_ERR_ARG && strstr(higan_last_error(), "higan_model_to_backend") && od.step == 0,
          "a model on the device with a CPU tape: HIGAN_ERR_ARG (%s)", higan_last_error());
    st = higan_ocr_train_step(&mcpu, &dt.t, tb.imgs, 4, 128, tb.img_lens, tb.labels, 4, tb.label_lens, &oc, &rc, &lc);
    CHECK(st == HIGAN_ERR_ARG && oc.step == 0, "a host model with a device tape: HIGAN_ERR_ARG (%s)", higan_last_error());

    // one recognizer step on each side
    higan_rng_seed(&rc, 3);
    higan_rng_seed(&rd, 3);
    st = higan_ocr_train_step(&mcpu, &ct, tb.imgs, 4, 128, tb.img_lens, tb.labels, 4, tb.label_lens, &oc, &rc, &lc);
    ok(st, "CPU recognizer step");
    host_bufs_take(hb.before, &mdev);
    if (guard_wanted()) guard(1);
    st = higan_ocr_train_step(&mdev, &dt.t, tb.imgs, 4, 128, tb.img_lens, tb.labels, 4, tb.label_lens, &od, &rd, &ld);
    guard(0);
    host_bufs_take(hb.after, &mdev);
    CHECK(dt.data.capacity > ((size_t)1 << 20), "the device data arena grew from 1 MB to %.1f MB (a retried step)",
          (double)dt.data.capacity / 1048576.0);
    ok(st, "device recognizer step");
    check_loss("recognizer step: ctc loss", lc, ld);
    higan_params_download(&mdev.store[HIGAN_STORE_OCR], HIGAN_PARAMS_STATE | HIGAN_PARAMS_GRADS);
    report("recognizer step (Recognizer store)", compare_stores("ocr", &mcpu.store[HIGAN_STORE_OCR],
                                                                &mdev.store[HIGAN_STORE_OCR], 1, &hb, HIGAN_STORE_OCR));
    host_bufs_free(&hb);
    CHECK(od.step == 1 && !memcmp(&rc, &rd, sizeof rc), "recognizer step: Adam counted, the same rng draws");

    // one writer-identifier step on each side (train mode: the backbone's batch norms move)
    higan_rng_seed(&rc, 4);
    higan_rng_seed(&rd, 4);
    st = higan_wid_train_step(&mcpu, &ct, tb.imgs, 4, 128, tb.img_lens, tb.wids, &bc, &wc, &rc, &lc, &cc);
    ok(st, "CPU writer-identifier step");
    host_bufs_take(hb.before, &mdev);
    if (guard_wanted()) guard(1);
    st = higan_wid_train_step(&mdev, &dt.t, tb.imgs, 4, 128, tb.img_lens, tb.wids, &bd, &wd, &rd, &ld, &cd);
    guard(0);
    host_bufs_take(hb.after, &mdev);
    ok(st, "device writer-identifier step");
    check_loss("writer-identifier step: cross-entropy", lc, ld);
    CHECK(cc == cd, "writer-identifier step: arg-max hits %d (cpu) %d (cuda)", cc, cd);
    higan_params_download(&mdev.store[HIGAN_STORE_BACKBONE], HIGAN_PARAMS_STATE | HIGAN_PARAMS_GRADS);
    higan_params_download(&mdev.store[HIGAN_STORE_WID], HIGAN_PARAMS_STATE | HIGAN_PARAMS_GRADS);
    report("writer-id step (StyleBackbone store)", compare_stores("backbone", &mcpu.store[HIGAN_STORE_BACKBONE],
                                                                  &mdev.store[HIGAN_STORE_BACKBONE], 1, &hb,
                                                                  HIGAN_STORE_BACKBONE));
    report("writer-id step (WriterIdentifier store)", compare_stores("wid", &mcpu.store[HIGAN_STORE_WID],
                                                                     &mdev.store[HIGAN_STORE_WID], 1, &hb, HIGAN_STORE_WID));
    host_bufs_free(&hb);
    higan_model_free(&mdev);     // frees the mirrors through the table
    higan_model_free(&mcpu);
    dev_tape_free(&dt);
    higan_tape_free(&ct);
    higan_arena_free(&ca);
    free_batch(&tb);
}

/* ---- one GAN iteration, then its checkpoint ---------------------------------------------------- */
static void make_draws(higan_gan_draws *d, int *labels, int *lens, float *z, float *eps, higan_rng *r, int64_t sd) {
    static const int l[4] = {4, 4, 3, 1};   // descending
    int b, j;
    for (b = 0; b < 4; ++b) {
        lens[b] = l[b];
        for (j = 0; j < 4; ++j) labels[b * 4 + j] = j < l[b] ? 2 + (int)(higan_rng_uniform(r) * 77.0f) : 0;
    }
    higan_rng_fill_normal(r, z, 4 * sd, 0.0f, 1.0f);
    higan_rng_fill_normal(r, eps, 4 * sd, 0.0f, 1.0f);
    d->labels = labels; d->lens = lens; d->z = z; d->eps = eps;
}
static void test_gan_iteration(void) {
    higan_model_config mc = tiny_config(HIGAN_NETS_ALL);
    higan_gan_trainer tc, td, tl;
    higan_gan_draws dd, dg;
    int dl[16], dlen[4], gl[16], glen[4], i, s;
    float dz[32], deps[32], gz[32], geps[32];
    higan_gan_losses lc, ld;
    higan_arena ca;
    higan_tape ct;
    dev_tape dt;
    tiny_batch tb;
    higan_rng r;
    higan_status st;
    host_bufs hb;
    const char *path = "build/test_cuda_train_ckpt.safetensors";
    higan_rng_seed(&r, 7);
    make_batch(&tb, &r);
    make_draws(&dd, dl, dlen, dz, deps, &r, 8);
    make_draws(&dg, gl, glen, gz, geps, &r, 8);
    if (!ok(higan_gan_trainer_init(&tc, &mc, NULL, NULL, 1), "CPU trainer") ||
        !ok(higan_gan_trainer_init(&td, &mc, NULL, NULL, 1), "device trainer"))
        return;
    ok(higan_gan_trainer_set_backend(&td, &BE), "gan_trainer_set_backend");
    tc.inject_d = td.inject_d = &dd;
    tc.inject_g = td.inject_g = &dg;
    higan_arena_init(&ca, (size_t)1 << 20);      // small: the CPU step grows it
    higan_tape_init(&ct, &ca, 256);
    if (!dev_tape_init(&dt, 1)) return;           // 1 MB: the device step grows its data arena
    st = higan_gan_iteration(&tc, &ct, &tb.b, &lc);
    ok(st, "CPU GAN iteration");
    host_bufs_take(hb.before, &td.model);
    if (guard_wanted()) guard(1);
    st = higan_gan_iteration(&td, &dt.t, &tb.b, &ld);
    guard(0);
    host_bufs_take(hb.after, &td.model);
    ok(st, "device GAN iteration (D step + G step)");
    CHECK(lc.g_step && ld.g_step && tc.iter == 1 && td.iter == 1, "both ran a D and a G step");
    CHECK(dt.data.capacity > ((size_t)1 << 20), "the device data arena grew from 1 MB to %.1f MB (retried steps)",
          (double)dt.data.capacity / 1048576.0);
    printf("  GAN iteration: D %.6g / %.6g, G %.6g / %.6g (cpu / cuda); data arena peak %.1f MB\n",
           (double)lc.v[HIGAN_GAN_DISC], (double)ld.v[HIGAN_GAN_DISC], (double)lc.v[HIGAN_GAN_G],
           (double)ld.v[HIGAN_GAN_G], (double)dt.data.peak / 1048576.0);
    for (i = 0; i < HIGAN_GAN_N_LOSSES; ++i) check_loss(higan_gan_loss_name(i), lc.v[i], ld.v[i]);
    {   // the balancing stds: device moments of device gradients
        const double c[5] = {lc.std_adv, lc.std_ctc, lc.std_info, lc.std_wid, lc.std_recn};
        const double d[5] = {ld.std_adv, ld.std_ctc, ld.std_info, ld.std_wid, ld.std_recn};
        double worst = 0;
        for (i = 0; i < 5; ++i) {
            double e = fabs(c[i] - d[i]) / (fabs(c[i]) > 1e-30 ? fabs(c[i]) : 1e-30);
            if (!(e == e)) e = 1e30;
            if (e > worst) worst = e;
        }
        CHECK(worst <= 1e-3, "G step balancing stds (device reductions) within 1e-3 (worst %.3g)", worst);
    }
    for (s = 0; s < HIGAN_STORE_COUNT; ++s) higan_params_download(&td.model.store[s], HIGAN_PARAMS_STATE | HIGAN_PARAMS_GRADS);
    grad_tol = 1e-2;   // the G step: see the top
    report("GAN iteration, G + E (G step)", compare_stores("GE", &tc.model.store[HIGAN_STORE_GE],
                                                           &td.model.store[HIGAN_STORE_GE], 1, &hb, HIGAN_STORE_GE));
    grad_tol = 1e-3;
    report("GAN iteration, D + P (D step)", compare_stores("DP", &tc.model.store[HIGAN_STORE_DP],
                                                           &td.model.store[HIGAN_STORE_DP], 1, &hb, HIGAN_STORE_DP));
    for (s = HIGAN_STORE_BACKBONE; s <= HIGAN_STORE_OCR; ++s) {   // frozen: buffers only (train-mode BN)
        char label[64];
        snprintf(label, sizeof label, "GAN iteration, frozen store %d", s);
        report(label, compare_stores(label, &tc.model.store[s], &td.model.store[s], 0, &hb, s));
    }
    host_bufs_free(&hb);

    // checkpoint of the device-trained model: the downloaded store, and it reloads
    {
        higan_train_state sd, sl;
        int same = 1, same_dev = 1;
        higan_train_state_init(&sd);
        sd.opt_stores = (1u << HIGAN_STORE_GE) | (1u << HIGAN_STORE_DP);
        sd.opt[HIGAN_STORE_GE] = td.opt_g;
        sd.opt[HIGAN_STORE_DP] = td.opt_d;
        sd.step = 1;
        higan_train_state_add_rng(&sd, "gan", &td.rng);
        guard(1);   // saving touches the device through the table only
        st = higan_checkpoint_save(path, &td.model, &sd);
        guard(0);
        ok(st, "checkpoint of the device-trained trainer");
        // the reference: the downloaded state (HIGAN_PARAMS_STATE was downloaded above; the save
        // downloads again: the same bytes)
        if (ok(higan_gan_trainer_init(&tl, &mc, NULL, NULL, 2), "a fresh CPU trainer")) {
            higan_train_state_init(&sl);
            sl.opt_stores = sd.opt_stores;
            higan_train_state_add_rng(&sl, "gan", &tl.rng);
            ok(higan_checkpoint_load(path, &tl.model, &sl), "load it on the CPU");
            for (s = 0; s < HIGAN_STORE_COUNT; ++s) {
                const higan_params *p = &td.model.store[s], *q = &tl.model.store[s];
                if (memcmp(p->value, q->value, sizeof(float) * (size_t)p->n_param) ||
                    memcmp(p->buffer, q->buffer, sizeof(float) * (size_t)p->n_buffer)) same = 0;
                if ((sd.opt_stores & (1u << s)) && (memcmp(p->adam_m, q->adam_m, sizeof(float) * (size_t)p->n_param) ||
                                                     memcmp(p->adam_v, q->adam_v, sizeof(float) * (size_t)p->n_param)))
                    same = 0;
            }
            CHECK(same && sl.opt[HIGAN_STORE_GE].step == 1 && !memcmp(&tl.rng, &td.rng, sizeof tl.rng),
                  "the checkpoint holds the device's values, buffers and Adam state bit for bit, and reloads on the CPU");
            // into a trainer on the device: the load uploads
            ok(higan_gan_trainer_set_backend(&tl, &BE), "the reloaded trainer to the device");
            guard(1);
            st = higan_checkpoint_load(path, &tl.model, &sl);
            guard(0);
            ok(st, "load it into a trainer on the device");
            for (s = 0; s < HIGAN_STORE_COUNT; ++s) {
                higan_params *q = &tl.model.store[s];
                memset(q->value, 0, sizeof(float) * (size_t)q->n_param);   // what comes back is the device's
                higan_params_download(q, HIGAN_PARAMS_STATE);
                if (memcmp(td.model.store[s].value, q->value, sizeof(float) * (size_t)q->n_param) ||
                    memcmp(td.model.store[s].buffer, q->buffer, sizeof(float) * (size_t)q->n_buffer)) same_dev = 0;
            }
            CHECK(same_dev, "a checkpoint loaded into a device trainer is uploaded (downloaded again: bit for bit)");
            higan_gan_trainer_free(&tl);
        }
        remove(path);
    }
    {   // a NaN in the batch on the device: the loss is reported, Adam does not step
        higan_params *dp = &td.model.store[HIGAN_STORE_DP];
        float *before = (float *)malloc(sizeof(float) * (size_t)dp->n_param);
        int64_t steps = td.opt_d.step;
        higan_params_download(dp, HIGAN_PARAMS_VALUES);
        memcpy(before, dp->value, sizeof(float) * (size_t)dp->n_param);
        tb.imgs[5] = NAN;
        if (guard_wanted()) guard(1);
        st = higan_gan_d_step(&td, &dt.t, &tb.b, &ld);
        guard(0);
        CHECK(st == HIGAN_GAN_NONFINITE && strstr(higan_last_error(), "is nan") != NULL && td.opt_d.step == steps,
              "NaN image on the device: D step returns HIGAN_GAN_NONFINITE, no Adam step (%d: %s)", st,
              higan_last_error());
        higan_params_download(dp, HIGAN_PARAMS_VALUES);
        CHECK(!memcmp(before, dp->value, sizeof(float) * (size_t)dp->n_param), "... and D + P's weights are untouched");
        free(before);
    }
    ok(higan_tape_sync(&dt.t), "device tape sync");
    higan_gan_trainer_free(&td);
    higan_gan_trainer_free(&tc);
    dev_tape_free(&dt);
    higan_tape_free(&ct);
    higan_arena_free(&ca);
    free_batch(&tb);
}

static int want(const char *name) {
    const char *only = getenv("HIGAN_TEST_ONLY");
    return !only || !*only || !strcmp(only, name);
}
int main(void) {
    if (!cuda_test_begin("test_cuda_train")) return cuda_test_skip();
    higan_cuda_backend(&BE, &G);
    printf("  trainer tests %s (HIGAN_TEST_GUARD=%s)\n", guard_wanted() ? "guarded" : "unguarded",
           guard_wanted() ? "1" : "0: host accesses to device memory go unnoticed");
    // HIGAN_TEST_ONLY=name runs one of: store, reductions, pretraining, gan
    if (want("store")) test_store_adam();
    if (want("reductions")) test_reductions();
    if (want("pretraining")) test_pretraining();
    if (want("gan")) test_gan_iteration();
    ok(BE.sync(BE.ctx), "table sync at the end");
    return cuda_test_end();
}
