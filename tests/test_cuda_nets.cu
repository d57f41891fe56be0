// test_cuda_nets.cu - the style and recognition networks (StyleBackbone, StyleEncoder,
// WriterIdentifier, Recognizer: CNN + BiLSTM + CTC) on a device tape, through
// higan_cuda_backend's table, against the same networks on a CPU tape.
//
// Each network is built small (the official layout, resolution 2, max_dim 32), its store is
// mirrored on the device (higan_cuda_params_init / upload / attach) and both tapes run the
// same train-mode forward, loss and backward from the same state: the same rng seeds, so the
// backbone's dropout (p > 0) draws the same masks on both (the device uploads the host-drawn
// mask) and the VAE draws the same noise. Compared: outputs, losses, the input gradient, every
// parameter gradient per tensor (relative to its own largest value), the BN running stats
// after the step; then eval-mode forwards (running stats), greedy decoding (the device's
// argmax, host collapse), higan_backbone_features and higan_style_from_image.
//
// Under emulation (build/test_cuda_nets_emu) device memory is guarded (PROT_NONE outside
// emulated CUDA calls while higan_cuda_emulate_guard(1) is on): host code that reads or
// writes device memory crashes there, as on a GPU. Every network runs guarded
// (NETS_GUARD_STYLE 0 runs the StyleEncoder / WriterIdentifier test unguarded, for debugging).
//
// Tolerances (|got - ref| <= atol + rtol |ref|; see the table at the top of test_cuda.cu):
//   2e-4, 2e-4   network outputs (conv / linear GEMMs in another order, batch norm and
//                softmax reductions in another tree, LSTM chains)
//   1e-5 rel.    losses (CTC, cross-entropy, means)
//   1e-3 rel.    gradients: every parameter tensor relative to its own largest value (the
//                biases of convs feeding a batch-statistics BN have gradient 0 mathematically:
//                they must stay below 1e-4 of the largest gradient on both sides)
//   1e-5, 1e-4   running statistics
//   exact        decoded text (argmax indices), dropout masks (through the outputs)
#include "cuda_check.h"

#ifndef NETS_GUARD_STYLE
#define NETS_GUARD_STYLE 1
#endif

// the device side of one store: the table, tapes and the mirror
typedef struct {
    higan_backend be;
    higan_cuda_params dp;
    higan_arena ch, hh, dd;    // CPU tape arena; device tape: host arena, data arena
    higan_tape tc, td;
} rig;
static int rig_init(rig *g, higan_params *p) {
    higan_cuda_backend(&g->be, &G);
    if (!ok(higan_cuda_params_init(&G, &g->dp, p), "mirror")) return 0;
    ok(higan_cuda_params_upload(&G, &g->dp, p, HIGAN_CUDA_ALL), "upload the store");
    higan_cuda_params_attach(&g->dp, p);
    dev_tape_open(&g->td, &g->hh, &g->dd, &g->be, (size_t)16 << 20, (size_t)256 << 20, 4096);
    ok(higan_arena_init(&g->ch, (size_t)256 << 20), "CPU arena");
    higan_tape_init(&g->tc, &g->ch, 4096);
    return 1;
}
static void rig_free(rig *g, higan_params *p) {
    higan_cuda_params_attach(NULL, p);
    higan_cuda_params_free(&g->dp);
    dev_tape_close(&g->td, &g->hh, &g->dd, &g->be);
    higan_tape_free(&g->tc);
    higan_arena_free(&g->ch);
}
// both sides from the host store's state, gradients zero
static void rig_sync_state(rig *g, higan_params *p) {
    ok(higan_cuda_params_upload(&G, &g->dp, p, HIGAN_CUDA_ALL), "re-upload the store");
    higan_params_zero_grad(p);
    ok(higan_cuda_params_zero_grad(&G, &g->dp), "device zero_grad");
    higan_tape_reset(&g->tc);
    higan_tape_reset(&g->td);
}

// a variable's values on the host (a copy in HA; downloaded from the device tape)
static float *val(higan_tape *t, const higan_var *v) {
    float *h = hnew(higan_var_numel(v));
    higan_var_read(t, v, h, higan_var_numel(v));
    return h;
}
static float *gradv(higan_tape *t, const higan_var *v) {
    int64_t n = higan_var_numel(v);
    float *h = hnew(n);
    if (!v->grad) { memset(h, 0, sizeof(float) * (size_t)n); return h; }
    t->be->download(t->be->ctx, h, v->grad, sizeof(float) * (size_t)n);
    return h;
}
static double max_abs_diff(const float *a, const float *b, int64_t n) {
    double w = 0.0;
    int64_t i;
    for (i = 0; i < n; ++i) if (fabs((double)a[i] - (double)b[i]) > w) w = fabs((double)a[i] - (double)b[i]);
    return w;
}
// outputs of both tapes: shapes equal, values within atol + rtol |ref|
static void cmp_var(const char *what, higan_tape *tc, const higan_var *c, higan_tape *td, const higan_var *d,
                    float atol, float rtol) {
    float *hc, *hd;
    int k, same = c && d && c->ndim == d->ndim;
    for (k = 0; same && k < c->ndim; ++k) same = c->shape[k] == d->shape[k];
    CHECK(same, "%s: the same shape on both tapes", what);
    if (!same) return;
    hc = val(tc, c); hd = val(td, d);
    check_close(what, hd, hc, higan_var_numel(c), atol, rtol);
    printf("    %-44s largest |cpu - cuda| %.3g (of %lld values)\n", what,
           max_abs_diff(hc, hd, higan_var_numel(c)), (long long)higan_var_numel(c));
}
static void cmp_scalar(const char *what, higan_tape *tc, const higan_var *c, higan_tape *td, const higan_var *d,
                       double rtol) {
    float a = 0.0f, b = 0.0f;
    if (!c || !d) { CHECK(0, "%s: missing", what); return; }
    higan_var_read(tc, c, &a, 1);
    higan_var_read(td, d, &b, 1);
    CHECK(fabs((double)a - (double)b) <= rtol * fabs((double)a) + 1e-7, "%s: cpu %.9g, cuda %.9g", what, (double)a,
          (double)b);
    printf("    %-44s cpu %.9g cuda %.9g\n", what, (double)a, (double)b);
}
// the input gradient dL/dx on both tapes: within 1e-3 of its largest (what: the check's
// network, label: the printed row)
static void cmp_input_grad(const char *what, const char *label, rig *g, const higan_var *xc, const higan_var *xd) {
    float *a = gradv(&g->tc, xc), *b = gradv(&g->td, xd);
    double e = rel_err(b, a, higan_var_numel(xc));
    CHECK(e <= 1e-3, "%s dL/dx within 1e-3 of its largest (%.3g)", what, e);
    printf("    %-44s relative error %.3g\n", label, e);
}
// every parameter tensor's gradient on the device against the host's, relative to its own
// largest value; tensors whose gradient is numerically zero (< 1e-4 of the largest) must stay so
static void cmp_param_grads(const char *what, rig *g, const higan_params *p) {
    float *gd = hnew(p->n_param);
    double gmax = 0.0, worst = 0.0;
    int h, bad = 0, zero = 0, n = 0;
    int64_t k;
    ok(higan_cuda_download(&G, gd, g->dp.grad, sizeof(float) * (size_t)p->n_param), "download gradients");
    for (k = 0; k < p->n_param; ++k) if (fabs((double)p->grad[k]) > gmax) gmax = fabs((double)p->grad[k]);
    for (h = 0; h < p->count; ++h) {
        const higan_param_entry *en = &p->entries[h];
        double tmax = 0.0, dmax = 0.0, e;
        if (en->kind != HIGAN_PARAM) continue;
        ++n;
        for (k = 0; k < en->numel; ++k) {
            if (fabs((double)p->grad[en->offset + k]) > tmax) tmax = fabs((double)p->grad[en->offset + k]);
            if (fabs((double)gd[en->offset + k]) > dmax) dmax = fabs((double)gd[en->offset + k]);
        }
        if (tmax < 1e-4 * gmax) {
            ++zero;
            if (dmax >= 1e-4 * gmax) { ++bad; printf("      %s: should be ~0, largest %.3g\n", en->name, dmax); }
            continue;
        }
        e = rel_err(gd + en->offset, p->grad + en->offset, en->numel);
        if (e > worst) worst = e;
        if (e > 1e-3) { ++bad; printf("      %s: relative error %.3g\n", en->name, e); }
    }
    CHECK(bad == 0 && gmax > 0.0, "%s: each of %d parameter gradients within 1e-3 of its largest (worst %.3g; %d "
          "numerically zero on both)", what, n, worst, zero);
    printf("    %-44s worst relative error per tensor %.3g (%d tensors, %d ~0)\n", what, worst, n, zero);
}
static void cmp_buffers(const char *what, rig *g, const higan_params *p) {
    float *bd = hnew(p->n_buffer > 0 ? p->n_buffer : 1);
    if (p->n_buffer == 0) return;
    ok(higan_cuda_download(&G, bd, g->dp.buffer, sizeof(float) * (size_t)p->n_buffer), "download buffers");
    check_close(what, bd, p->buffer, p->n_buffer, 1e-5f, 1e-4f);
    printf("    %-44s largest |cpu - cuda| %.3g\n", what, max_abs_diff(bd, p->buffer, p->n_buffer));
}

/* ---- Recognizer: train step with CTC (dropout on), eval, decoding ---------------------------- */
typedef struct { higan_var *x, *lp, *loss; } rec_out;
static const int64_t RB = 3, RW = 96;
static const int rec_lens[3] = {80, 64, 48};                     // frames 5, 4, 3: T' = 5 < T = 6
static const int rec_targets[7] = {12, 40, 40, 7, 66, 3, 3};     // lengths 3, 2, 2 (repeats need blanks)
static const int rec_tlens[3] = {3, 2, 2}, rec_inlens[3] = {5, 4, 3};
static int rec_train(higan_tape *t, const higan_recognizer *r, const float *x, higan_rng *rng, rec_out *o) {
    int64_t xs[4];
    xs[0] = RB; xs[1] = 1; xs[2] = 64; xs[3] = RW;
    memset(o, 0, sizeof *o);
    if (!(o->x = higan_var_upload(t, x, 4, xs))) return 0;
    o->x->requires_grad = 1;
    o->lp = higan_recognizer_forward(t, r, o->x, rec_lens, 1, rng);
    o->loss = o->lp ? higan_ctc_loss(t, o->lp, rec_targets, rec_inlens, rec_tlens, 0, 1) : NULL;
    return o->loss && higan_tape_backward(t, o->loss, NULL) == HIGAN_OK && higan_tape_sync(t) == HIGAN_OK;
}
static void test_recognizer(void) {
    higan_params P;
    higan_recognizer rec;
    higan_recognizer_config cfg = higan_recognizer_default_config();
    higan_rng init, rc, rd;
    rig g;
    rec_out oc, od;
    float *x;
    int okc, okd, i;
    printf("  Recognizer (CNN with dropout 0.2, BiLSTM depth 2, CTC), batch %lld, width %lld\n", (long long)RB,
           (long long)RW);
    fresh();
    cfg.cnn.resolution = 2; cfg.cnn.max_dim = 32; cfg.cnn.dropout = 0.2f;
    higan_params_init(&P);
    higan_recognizer_register(&rec, &P, "Recognizer", &cfg);
    if (!ok(higan_params_alloc(&P), "params")) return;
    higan_rng_seed(&init, 7);
    higan_recognizer_init(&rec, &init, HIGAN_INIT_TORCH);
    x = hrand(RB * 64 * RW, -1.0f, 1.0f);
    if (!rig_init(&g, &P)) return;
    guard(1);

    // train: dropout masks from the same rng state on both tapes
    rig_sync_state(&g, &P);
    higan_rng_seed(&rc, 11); higan_rng_seed(&rd, 11);
    okc = rec_train(&g.tc, &rec, x, &rc, &oc);
    okd = rec_train(&g.td, &rec, x, &rd, &od);
    CHECK(okc && okd, "recognizer train step on both tapes (%s)", okd ? "" : higan_last_error());
    if (okc && okd) {
        CHECK(memcmp(&rc, &rd, sizeof rc) == 0, "both tapes leave the dropout rng in the same state");
        cmp_var("train log-probs [T', B, 80]", &g.tc, oc.lp, &g.td, od.lp, 2e-4f, 2e-4f);
        cmp_scalar("CTC loss", &g.tc, oc.loss, &g.td, od.loss, 1e-5);
        cmp_input_grad("recognizer", "train dL/dx", &g, oc.x, od.x);
        cmp_param_grads("recognizer parameter gradients", &g, &P);
        cmp_buffers("recognizer running stats after the step", &g, &P);
    }
    CHECK(g.dd.peak > 0 && g.hh.peak > 0, "device tape used its arenas (data peak %.1f MB, host peak %.1f KB)",
          (double)g.dd.peak / 1e6, (double)g.hh.peak / 1e3);

    // eval (running stats, no dropout): logits, then greedy decoding of both layouts
    rig_sync_state(&g, &P);
    {
        int64_t xs[4] = {RB, 1, 64, RW};
        higan_var *xc, *xd, *lc, *ld, *tc_, *td_;
        int dec_ok = 1;
        higan_no_grad_begin(&g.tc); higan_no_grad_begin(&g.td);
        xc = higan_var_upload(&g.tc, x, 4, xs);
        xd = higan_var_upload(&g.td, x, 4, xs);
        lc = higan_recognizer_forward(&g.tc, &rec, xc, rec_lens, 0, NULL);
        ld = higan_recognizer_forward(&g.td, &rec, xd, rec_lens, 0, NULL);
        CHECK(lc && ld && higan_tape_sync(&g.td) == HIGAN_OK, "recognizer eval forward on both tapes");
        if (lc && ld) {
            static const int perm[3] = {1, 0, 2};
            cmp_var("eval logits [B, T', 80]", &g.tc, lc, &g.td, ld, 2e-4f, 2e-4f);
            tc_ = higan_permute(&g.tc, lc, perm);   // the [T, B, C] layout of train mode
            td_ = higan_permute(&g.td, ld, perm);
            for (i = 0; i < RB; ++i) {
                char a[64], b[64], a2[64], b2[64];
                int na = higan_recognizer_decode(lc, 0, i, rec_lens[i], a, sizeof a);
                int nb = higan_recognizer_decode_tape(&g.td, ld, 0, i, rec_lens[i], b, sizeof b);
                int na2 = higan_recognizer_decode_tape(&g.tc, tc_, 1, i, rec_lens[i], a2, sizeof a2);
                int nb2 = higan_recognizer_decode_tape(&g.td, td_, 1, i, rec_lens[i], b2, sizeof b2);
                if (na < 0 || na != nb || strcmp(a, b) || na2 != na || nb2 != na || strcmp(a2, a) || strcmp(b2, a)) {
                    dec_ok = 0;
                    printf("      sample %d: cpu '%s' (%d), cuda '%s' (%d), [T,B,C] cpu '%s' cuda '%s'\n", i, a, na, b,
                           nb, a2, b2);
                } else {
                    printf("    decoded sample %d: '%s' (%d labels) on both\n", i, a, na);
                }
            }
            CHECK(dec_ok, "greedy decoding on the device (argmax there, collapse on the host) gives the CPU's text, "
                  "both layouts");
            CHECK(higan_recognizer_decode_tape(&g.td, ld, 0, 7, 80, NULL, 0) == HIGAN_ERR_ARG,
                  "decode_tape: sample out of range refused");
        }
        higan_no_grad_end(&g.tc); higan_no_grad_end(&g.td);
    }
    // eval with gradients (BN on running stats backward), no dropout: dL/dx of mean(logits * R)
    rig_sync_state(&g, &P);
    {
        int64_t xs[4] = {RB, 1, 64, RW};
        higan_var *xc = higan_var_upload(&g.tc, x, 4, xs), *xd = higan_var_upload(&g.td, x, 4, xs);
        higan_var *lc, *ld, *Lc = NULL, *Ld = NULL;
        xc->requires_grad = xd->requires_grad = 1;
        lc = higan_recognizer_forward(&g.tc, &rec, xc, rec_lens, 0, NULL);
        ld = higan_recognizer_forward(&g.td, &rec, xd, rec_lens, 0, NULL);
        if (lc && ld) {
            float *Rw = hrand(higan_var_numel(lc), -1.0f, 1.0f);
            Lc = higan_mean_all(&g.tc, higan_mul(&g.tc, lc, higan_var_upload(&g.tc, Rw, lc->ndim, lc->shape)));
            Ld = higan_mean_all(&g.td, higan_mul(&g.td, ld, higan_var_upload(&g.td, Rw, ld->ndim, ld->shape)));
        }
        CHECK(Lc && Ld && higan_tape_backward(&g.tc, Lc, NULL) == HIGAN_OK &&
              higan_tape_backward(&g.td, Ld, NULL) == HIGAN_OK && higan_tape_sync(&g.td) == HIGAN_OK,
              "recognizer eval forward and backward on both tapes");
        if (Lc && Ld) {
            cmp_input_grad("eval", "eval dL/dx", &g, xc, xd);
            cmp_param_grads("recognizer eval parameter gradients", &g, &P);
        }
    }
    guard(0);
    rig_free(&g, &P);
    higan_params_free(&P);
}

/* ---- StyleBackbone + StyleEncoder (VAE) + WriterIdentifier: train step, eval, features -------- */
static const int64_t SB = 3, SW = 96, NWRITER = 5, SDIM = 8;
static const int sty_lens[3] = {96, 70, 48};
static const int sty_writers[3] = {4, 0, 2};
typedef struct { higan_var *x, *seq, *feats[3], *z, *mu, *logvar, *wid, *ce, *kl, *loss; } sty_out;
static int sty_train(higan_tape *t, const higan_style_backbone *bb, const higan_style_encoder *enc,
                     const higan_writer_identifier *wid, const float *x, const float *Rz, higan_rng *rng,
                     sty_out *o) {
    int64_t xs[4], zs[2];
    higan_var *m;
    xs[0] = SB; xs[1] = 1; xs[2] = 64; xs[3] = SW;
    zs[0] = SB; zs[1] = SDIM;
    memset(o, 0, sizeof *o);
    if (!(o->x = higan_var_upload(t, x, 4, xs))) return 0;
    o->x->requires_grad = 1;
    o->seq = higan_style_backbone_forward(t, bb, o->x, 1, rng, o->feats);
    o->z = higan_style_encoder_forward(t, enc, o->seq, sty_lens, 1, rng, NULL, &o->mu, &o->logvar);
    o->wid = higan_writer_identifier_forward(t, wid, o->seq, sty_lens);
    o->ce = higan_cross_entropy(t, o->wid, sty_writers);
    o->kl = higan_kl_gaussian(t, o->mu, o->logvar);
    m = higan_mean_all(t, higan_mul(t, o->z, higan_var_upload(t, Rz, 2, zs)));
    o->loss = higan_add(t, higan_add(t, m, o->ce), o->kl);
    return o->loss && higan_tape_backward(t, o->loss, NULL) == HIGAN_OK && higan_tape_sync(t) == HIGAN_OK;
}
static void test_style(void) {
    higan_params P;
    higan_style_backbone bb;
    higan_style_encoder enc;
    higan_writer_identifier wid;
    higan_backbone_config cfg = higan_backbone_default_config();
    higan_rng init, rc, rd;
    rig g;
    sty_out oc, od;
    float *x, *Rz;
    int okc, okd, k;
    printf("  StyleBackbone (dropout 0.3) + StyleEncoder (VAE, eps from the rng) + WriterIdentifier (CE), "
           "batch %lld, width %lld%s\n", (long long)SB, (long long)SW,
           NETS_GUARD_STYLE ? "" : " [unguarded]");
    fresh();
    cfg.resolution = 2; cfg.max_dim = 32; cfg.dropout = 0.3f;
    higan_params_init(&P);
    higan_style_backbone_register(&bb, &P, "StyleBackbone", &cfg);
    higan_style_encoder_register(&enc, &P, "StyleEncoder", bb.out_dim, SDIM);
    higan_writer_identifier_register(&wid, &P, "WriterIdentifier", bb.out_dim, NWRITER);
    if (!ok(higan_params_alloc(&P), "params")) return;
    higan_rng_seed(&init, 3);
    higan_style_backbone_init(&bb, &init, HIGAN_INIT_N02);
    higan_style_encoder_init(&enc, &init, HIGAN_INIT_TORCH);
    higan_writer_identifier_init(&wid, &init, HIGAN_INIT_TORCH);
    x = hrand(SB * 64 * SW, -1.0f, 1.0f);
    Rz = hrand(SB * SDIM, -1.0f, 1.0f);
    if (!rig_init(&g, &P)) return;
    guard(NETS_GUARD_STYLE);

    rig_sync_state(&g, &P);
    higan_rng_seed(&rc, 21); higan_rng_seed(&rd, 21);
    okc = sty_train(&g.tc, &bb, &enc, &wid, x, Rz, &rc, &oc);
    okd = sty_train(&g.td, &bb, &enc, &wid, x, Rz, &rd, &od);
    CHECK(okc && okd, "style train step on both tapes (%s)", okd ? "" : higan_last_error());
    if (okc && okd) {
        static const char *fn[3] = {"train feat2", "train feat3", "train feat4"};
        CHECK(memcmp(&rc, &rd, sizeof rc) == 0, "both tapes leave the rng (dropout, VAE noise) in the same state");
        for (k = 0; k < 3; ++k) cmp_var(fn[k], &g.tc, oc.feats[k], &g.td, od.feats[k], 2e-4f, 2e-4f);
        cmp_var("train backbone sequence [B, 32, T]", &g.tc, oc.seq, &g.td, od.seq, 2e-4f, 2e-4f);
        cmp_var("train mu", &g.tc, oc.mu, &g.td, od.mu, 2e-4f, 2e-4f);
        cmp_var("train logvar", &g.tc, oc.logvar, &g.td, od.logvar, 2e-4f, 2e-4f);
        cmp_var("train z (VAE)", &g.tc, oc.z, &g.td, od.z, 2e-4f, 2e-4f);
        cmp_var("train writer logits", &g.tc, oc.wid, &g.td, od.wid, 2e-4f, 2e-4f);
        cmp_scalar("writer cross-entropy", &g.tc, oc.ce, &g.td, od.ce, 1e-5);
        cmp_scalar("KL", &g.tc, oc.kl, &g.td, od.kl, 1e-5);
        cmp_scalar("total loss", &g.tc, oc.loss, &g.td, od.loss, 1e-5);
        cmp_input_grad("style", "train dL/dx", &g, oc.x, od.x);
        cmp_param_grads("backbone/encoder/WID parameter gradients", &g, &P);
        cmp_buffers("backbone running stats after the step", &g, &P);
    }

    // eval: running stats, z = mu, writer logits
    rig_sync_state(&g, &P);
    {
        int64_t xs[4] = {SB, 1, 64, SW};
        higan_var *sc, *sd, *zc, *zd, *wc, *wd, *muc, *mud;
        higan_no_grad_begin(&g.tc); higan_no_grad_begin(&g.td);
        sc = higan_style_backbone_forward(&g.tc, &bb, higan_var_upload(&g.tc, x, 4, xs), 0, NULL, NULL);
        sd = higan_style_backbone_forward(&g.td, &bb, higan_var_upload(&g.td, x, 4, xs), 0, NULL, NULL);
        zc = higan_style_encoder_forward(&g.tc, &enc, sc, sty_lens, 0, NULL, NULL, &muc, NULL);
        zd = higan_style_encoder_forward(&g.td, &enc, sd, sty_lens, 0, NULL, NULL, &mud, NULL);
        wc = higan_writer_identifier_forward(&g.tc, &wid, sc, sty_lens);
        wd = higan_writer_identifier_forward(&g.td, &wid, sd, sty_lens);
        CHECK(zc && zd && wc && wd && zc == muc && zd == mud && higan_tape_sync(&g.td) == HIGAN_OK,
              "style eval forward on both tapes (z = mu)");
        if (zc && zd && wc && wd) {
            cmp_var("eval backbone sequence", &g.tc, sc, &g.td, sd, 2e-4f, 2e-4f);
            cmp_var("eval z = mu", &g.tc, zc, &g.td, zd, 2e-4f, 2e-4f);
            cmp_var("eval writer logits", &g.tc, wc, &g.td, wd, 2e-4f, 2e-4f);
        }
        higan_no_grad_end(&g.tc); higan_no_grad_end(&g.td);
    }
    guard(0);

    // higan_backbone_features (input padding built on the host, uploaded; feature downloaded):
    // guarded, the backbone's ops all dispatch
    guard(1);
    rig_sync_state(&g, &P);
    {
        const int64_t widths[3] = {50, 96, 17};
        const int64_t D = bb.out_dim;
        float *fc = hnew(D), *fd = hnew(D), *img = hrand(64 * 96, -1.0f, 1.0f);
        double worst = 0.0;
        int good = 1;
        for (k = 0; k < 3; ++k) {
            higan_status a = higan_backbone_features(&bb, &g.tc, img, widths[k], fc);
            higan_status b = higan_backbone_features(&bb, &g.td, img, widths[k], fd);
            good &= a == HIGAN_OK && b == HIGAN_OK;
            if (a == HIGAN_OK && b == HIGAN_OK) {
                check_close("backbone_features on the device", fd, fc, D, 2e-4f, 2e-4f);
                if (max_abs_diff(fc, fd, D) > worst) worst = max_abs_diff(fc, fd, D);
            }
        }
        CHECK(good && g.dd.used == 0 && g.hh.used == 0,
              "backbone_features of widths 50, 96, 17 on both tapes, arenas given back (data %zu, host %zu bytes)",
              g.dd.used, g.hh.used);
        printf("    %-44s largest |cpu - cuda| %.3g\n", "backbone_features (3 widths)", worst);
    }
    guard(0);
    rig_free(&g, &P);
    higan_params_free(&P);
}

/* ---- higan_style_from_image (generation's reference route: resize on the host, upload, backbone,
   encoder, mu downloaded) on a device tape ---------------------------------------------------------- */
static void test_style_from_image(void) {
    higan_model_config cfg = higan_model_default_config(HIGAN_NET_BIT(HIGAN_NET_STYLE_BACKBONE) |
                                                        HIGAN_NET_BIT(HIGAN_NET_STYLE_ENCODER));
    higan_model m;
    rig g;
    float *img, sc[8], sd[8];
    higan_status a, b;
    fresh();
    cfg.G.style_dim = 8; cfg.B.resolution = 2; cfg.B.max_dim = 32;
    if (!ok(higan_model_init(&m, &cfg, 4), "model with a StyleBackbone and a StyleEncoder")) return;
    higan_cuda_params de;   // the encoder's store has its own mirror
    CHECK(m.B.params != m.E.params, "backbone and encoder in their own stores");
    if (!rig_init(&g, m.B.params)) return;
    ok(higan_cuda_params_init(&G, &de, m.E.params), "encoder mirror");
    ok(higan_cuda_params_upload(&G, &de, m.E.params, HIGAN_CUDA_ALL), "encoder upload");
    higan_cuda_params_attach(&de, m.E.params);
    img = hrand(64 * 150, -1.0f, 1.0f);
    guard(NETS_GUARD_STYLE);
    a = higan_style_from_image(&m, &g.tc, img, 150, 3, sc);
    b = higan_style_from_image(&m, &g.td, img, 150, 3, sd);
    CHECK(a == HIGAN_OK && b == HIGAN_OK && g.dd.used == 0 && g.hh.used == 0,
          "style_from_image on both tapes, arenas given back (%s)", b == HIGAN_OK ? "" : higan_last_error());
    if (a == HIGAN_OK && b == HIGAN_OK) {
        check_close("style_from_image (mu) on the device", sd, sc, 8, 2e-4f, 2e-4f);
        printf("    %-44s largest |cpu - cuda| %.3g\n", "style_from_image mu", max_abs_diff(sc, sd, 8));
    }
    guard(0);
    higan_cuda_params_attach(NULL, m.E.params);
    higan_cuda_params_free(&de);
    rig_free(&g, m.B.params);
    higan_model_free(&m);
}

/* ---- decoding of known scores: a different text per sample, repeats, blanks, both layouts ---- */
static void test_decode(void) {
    // best labels per frame (0 blank): "Hi" (repeats collapse), "GPPU" (a blank keeps a repeat),
    // "ok" (img_len 64: 4 frames of 6)
    static const int best[3][6] = {{9, 9, 0, 36, 36, 0}, {8, 17, 0, 17, 22, 0}, {42, 0, 38, 38, 7, 7}};
    static const int img_lens[3] = {96, 96, 64};
    static const char *want[3] = {"Hi", "GPPU", "ok"};   // labels of the alphabet
    higan_params P;
    rig g;
    float *sc, *tb;
    int64_t bs[3] = {3, 6, 80}, ts[3] = {6, 3, 80};
    int b, k, c, good = 1;
    fresh();
    sc = hrand(3 * 6 * 80, -1.0f, 1.0f); tb = hnew(3 * 6 * 80);
    for (b = 0; b < 3; ++b)
        for (k = 0; k < 6; ++k) {
            sc[(b * 6 + k) * 80 + best[b][k]] = 2.0f;
            for (c = 0; c < 80; ++c) tb[(k * 3 + b) * 80 + c] = sc[(b * 6 + k) * 80 + c];
        }
    higan_params_init(&P);
    {
        int64_t one = 4;
        higan_params_add(&P, "unused", HIGAN_PARAM, 1, &one);
    }
    if (!ok(higan_params_alloc(&P), "params") || !rig_init(&g, &P)) return;
    guard(1);
    {
        higan_var *vb = higan_var_upload(&g.td, sc, 3, bs), *vt = higan_var_upload(&g.td, tb, 3, ts);
        higan_var *cb = higan_var_upload(&g.tc, sc, 3, bs);
        for (b = 0; b < 3; ++b) {
            char x0[32], x1[32], x2[32], small[3];
            int n0 = higan_recognizer_decode(cb, 0, b, img_lens[b], x0, sizeof x0);
            int n1 = higan_recognizer_decode_tape(&g.td, vb, 0, b, img_lens[b], x1, sizeof x1);
            int n2 = higan_recognizer_decode_tape(&g.td, vt, 1, b, img_lens[b], x2, sizeof x2);
            int n3 = higan_recognizer_decode_tape(&g.td, vb, 0, b, img_lens[b], small, sizeof small);
            int ok1 = n0 == (int)strlen(want[b]) && !strcmp(x0, want[b]) && n1 == n0 && !strcmp(x1, want[b]) &&
                      n2 == n0 && !strcmp(x2, want[b]) && n3 == n0 && !strncmp(small, want[b], 2) && !small[2];
            if (!ok1) printf("      sample %d: cpu '%s' (%d), cuda [B,T,C] '%s' (%d), [T,B,C] '%s' (%d), want '%s'\n", b,
                             x0, n0, x1, n1, x2, n2, want[b]);
            good &= ok1;
        }
    }
    CHECK(good, "decode_tape of known scores: 'Hi', 'GPPU', 'ok' from both layouts, truncated like snprintf");
    guard(0);
    rig_free(&g, &P);
    higan_params_free(&P);
}

/* ---- the single ops (dropout alone is not in the networks: their dropout is fused with the
   next relu), guarded: dropout (train, with and without gradients), leaky_relu, log_softmax,
   cross_entropy, pad, max_pool3s2 ---------------------------------------------------------------- */
typedef struct { higan_var *x, *d, *l, *ls, *ce, *pp, *mp, *loss; } ops_out;
static int ops_run(higan_tape *t, const float *x, const float *R, const float *R2, const int *labels,
                   higan_rng *rng, ops_out *o) {
    int64_t xs[2] = {6, 37}, ps[4] = {1, 2, 3, 37}, ms[4] = {1, 2, 8, 41};
    higan_var *a, *b;
    memset(o, 0, sizeof *o);
    if (!(o->x = higan_var_upload(t, x, 2, xs))) return 0;
    o->x->requires_grad = 1;
    o->d = higan_dropout(t, o->x, 0.3f, 1, rng);
    o->l = higan_leaky_relu(t, o->d, 0.1f);
    o->ls = higan_log_softmax(t, o->l);
    o->ce = higan_cross_entropy(t, o->l, labels);
    o->pp = higan_pad(t, higan_reshape(t, o->l, 4, ps), 3, 2, 1, 3, -0.5f);        // [1, 2, 8, 41]
    o->mp = higan_max_pool3s2(t, o->pp);                                            // [1, 2, 3, 20]
    a = higan_mean_all(t, higan_mul(t, o->ls, higan_var_upload(t, R, 2, xs)));
    b = o->pp ? higan_mean_all(t, higan_mul(t, o->pp, higan_var_upload(t, R2, 4, ms))) : NULL;
    o->loss = higan_add(t, higan_add(t, a, o->ce), higan_add(t, b, higan_sum_all(t, o->mp)));
    return o->loss && higan_tape_backward(t, o->loss, NULL) == HIGAN_OK && higan_tape_sync(t) == HIGAN_OK;
}
static void test_ops(void) {
    higan_params P;
    rig g;
    ops_out oc, od;
    higan_rng rc, rd;
    const int labels[6] = {0, 36, 5, 17, 17, 2};
    float *x, *R, *R2;
    int okc, okd;
    printf("  single ops: dropout, leaky_relu, log_softmax, cross_entropy, pad, max_pool3s2\n");
    fresh();
    higan_params_init(&P);   // a one-tensor store: the rig mirrors it (the ops use none)
    {
        int64_t one = 4;
        higan_params_add(&P, "unused", HIGAN_PARAM, 1, &one);
    }
    if (!ok(higan_params_alloc(&P), "params")) return;
    x = hrand(6 * 37, -2.0f, 2.0f);
    R = hrand(6 * 37, -1.0f, 1.0f);
    R2 = hrand(2 * 8 * 41, -1.0f, 1.0f);
    if (!rig_init(&g, &P)) return;
    guard(1);
    higan_rng_seed(&rc, 5); higan_rng_seed(&rd, 5);
    okc = ops_run(&g.tc, x, R, R2, labels, &rc, &oc);
    okd = ops_run(&g.td, x, R, R2, labels, &rd, &od);
    CHECK(okc && okd, "ops forward and backward on both tapes");
    if (okc && okd) {
        float *a, *b;
        CHECK(memcmp(&rc, &rd, sizeof rc) == 0, "dropout leaves the rng in the CPU's state");
        cmp_var("dropout (same mask: exact)", &g.tc, oc.d, &g.td, od.d, 0.0f, 0.0f);
        cmp_var("leaky_relu", &g.tc, oc.l, &g.td, od.l, 0.0f, 0.0f);
        cmp_var("log_softmax", &g.tc, oc.ls, &g.td, od.ls, 1e-5f, 1e-4f);
        cmp_var("pad", &g.tc, oc.pp, &g.td, od.pp, 0.0f, 0.0f);
        cmp_var("max_pool3s2", &g.tc, oc.mp, &g.td, od.mp, 0.0f, 0.0f);
        cmp_scalar("cross_entropy", &g.tc, oc.ce, &g.td, od.ce, 1e-5);
        cmp_scalar("ops loss", &g.tc, oc.loss, &g.td, od.loss, 1e-5);
        a = gradv(&g.tc, oc.x); b = gradv(&g.td, od.x);
        check_close("ops dL/dx", b, a, 6 * 37, 1e-6f, 1e-4f);
        printf("    %-44s largest |cpu - cuda| %.3g\n", "ops dL/dx", max_abs_diff(a, b, 6 * 37));
    }
    // without gradients the device still needs the mask (it applies it from device memory)
    higan_tape_reset(&g.tc); higan_tape_reset(&g.td);
    {
        int64_t xs[2] = {6, 37};
        higan_var *yc, *yd;
        higan_no_grad_begin(&g.tc); higan_no_grad_begin(&g.td);
        yc = higan_dropout(&g.tc, higan_var_upload(&g.tc, x, 2, xs), 0.5f, 1, &rc);
        yd = higan_dropout(&g.td, higan_var_upload(&g.td, x, 2, xs), 0.5f, 1, &rd);
        CHECK(yc && yd && higan_tape_sync(&g.td) == HIGAN_OK, "dropout without gradients on both tapes");
        if (yc && yd) cmp_var("dropout, no gradients", &g.tc, yc, &g.td, yd, 0.0f, 0.0f);
        higan_no_grad_end(&g.tc); higan_no_grad_end(&g.td);
    }
    guard(0);
    rig_free(&g, &P);
    higan_params_free(&P);
}

/* ---- a device arena too small for the recognizer (CNN, LSTM scratch): HIGAN_ERR_NOMEM, no crash ---- */
static void test_small_arena(void) {
    higan_params P;
    higan_recognizer rec;
    higan_recognizer_config cfg = higan_recognizer_default_config();
    higan_backend be;
    higan_cuda_params dp;
    higan_arena hh, tiny;
    higan_tape tt;
    higan_rng init;
    float *x;
    int64_t xs[4] = {2, 1, 64, 64};
    const int lens[2] = {64, 48};
    higan_var *y;
    size_t cap = (size_t)1 << 20;
    fresh();
    cfg.cnn.resolution = 2; cfg.cnn.max_dim = 32;
    higan_params_init(&P);
    higan_recognizer_register(&rec, &P, "R", &cfg);
    if (!ok(higan_params_alloc(&P), "params")) return;
    higan_rng_seed(&init, 1);
    higan_recognizer_init(&rec, &init, HIGAN_INIT_TORCH);
    x = hrand(2 * 64 * 64, -1.0f, 1.0f);
    higan_cuda_backend(&be, &G);
    ok(higan_cuda_params_init(&G, &dp, &P), "mirror");
    ok(higan_cuda_params_upload(&G, &dp, &P, HIGAN_CUDA_ALL), "upload");
    higan_cuda_params_attach(&dp, &P);
    ok(higan_arena_init(&hh, (size_t)4 << 20), "host arena");
    guard(1);
    // find a capacity that holds the CNN but not everything: grow until it works, the step
    // before must have failed with HIGAN_ERR_NOMEM and a sticky overflow
    {
        int failed_nomem = 0, worked = 0;
        for (cap = (size_t)64 << 10; cap <= ((size_t)64 << 20) && !worked; cap *= 2) {
            higan_status st;
            ok(higan_backend_arena_init(&tiny, &be, cap), "small device arena");
            higan_tape_init(&tt, &hh, 4096);
            higan_tape_set_backend(&tt, &be, &tiny);
            higan_no_grad_begin(&tt);
            y = higan_recognizer_forward(&tt, &rec, higan_var_upload(&tt, x, 4, xs), lens, 0, NULL);
            higan_no_grad_end(&tt);
            st = higan_tape_sync(&tt);
            if (y && st == HIGAN_OK) worked = 1;
            else failed_nomem += (st == HIGAN_ERR_NOMEM && tiny.overflow && tiny.needed > 0);
            higan_tape_free(&tt);
            higan_backend_arena_free(&tiny, &be);
            higan_arena_reset(&hh);
            higan_cuda_backend(&be, &G);   // a clean error state
        }
        CHECK(worked && failed_nomem > 0, "too small device arenas give HIGAN_ERR_NOMEM (%d sizes), %zu KB works",
              failed_nomem, cap / 2048);
    }
    guard(0);
    higan_cuda_params_attach(NULL, &P);
    higan_cuda_params_free(&dp);
    higan_arena_free(&hh);
    higan_params_free(&P);
}

int main(void) {
    if (!cuda_test_begin("test_cuda_nets")) return cuda_test_skip();
    test_ops();
    test_recognizer();
    test_decode();
    test_style();
    test_style_from_image();
    test_small_arena();
    return cuda_test_end();
}
