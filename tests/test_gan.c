/* GAN training (higan.h): one D step and one G step against the PyTorch run of
   tests/oracle/make_gan.py (the official GlobalLocalAdversarialModel.train at a tiny
   configuration, float64), then a few iterations on random tiny data: finite losses, every
   trainable tensor of G, E, D, P gets a gradient, frozen R, B, W get none, the frozen_bn
   option, the retry after arena overflow, and the NaN stop. */
#define HIGAN_IMPLEMENTATION
#include "higan.h"
#include "check.h"
#include "gan_fixture.h"

#include <time.h>

static double cpu_seconds(void) { return (double)clock() / CLOCKS_PER_SEC; }   /* display only */

static int *load_ints(const higan_safetensors *st, const char *name, int64_t *n) {
    int64_t k, m = 0;
    float *f = check_load(st, name, &m);
    int *out;
    if (!f) return NULL;
    out = (int *)malloc(sizeof(int) * (size_t)m);
    for (k = 0; k < m; ++k) out[k] = (int)f[k];
    free(f);
    if (n) *n = m;
    return out;
}

/* Compares every tensor of store s whose kind is `kind` with "<prefix><name>" of the fixture:
   HIGAN_PARAM gradients (grads 1) or values, HIGAN_BUFFER float buffers, HIGAN_BUFFER_I64
   exactly. The error of a tensor is max|got - ref| / scale with scale = max(max|ref| of the
   tensor, rel_floor * max|ref| over the whole group): some gradients are zero up to rounding
   (e.g. a conv bias right before a train-mode batch norm) and are judged against the group's
   scale. adam_grads (values after Adam's first step, which moves a weight by lr * g / (|g| +
   1e-8), i.e. by the sign of g): elements whose reference gradient (adam_grads + name) is
   below 1e-3 of the group's largest are left out, their sign being rounding noise. */
static double compare_store(const char *label, const higan_safetensors *st, const higan_params *p,
                            higan_param_kind kind, int grads, const char *prefix, double rel_floor, double tol,
                            const char *adam_grads, int verbose) {
    double worst = 0, group = 0, gmax = 0;
    char worst_name[200] = "-";
    int i, pass, n = 0, missing = 0;
    int64_t skipped = 0;
    for (pass = 0; pass < 2; ++pass)
        for (i = 0; i < p->count; ++i) {
            const higan_param_entry *e = &p->entries[i];
            char name[300];
            int64_t k, m = 0;
            double scale = 0, err = 0;
            float *ref, *g = NULL;
            const float *got;
            if (e->kind != kind) continue;
            snprintf(name, sizeof name, "%s%s", prefix, e->name);
            if (!higan_safetensors_find(st, name)) { if (pass) ++missing; continue; }
            if (kind == HIGAN_BUFFER_I64) {
                int64_t *iref;
                const int64_t *igot = higan_params_idata(p, i);
                if (!pass) continue;
                iref = (int64_t *)malloc(sizeof(int64_t) * (size_t)e->numel);
                higan_safetensors_read_i64(st, name, iref, e->numel);
                for (k = 0; k < e->numel; ++k) if (iref[k] != igot[k]) err = 1e30;
                free(iref);
                ++n;
                if (err > worst) { worst = err; snprintf(worst_name, sizeof worst_name, "%s", e->name); }
                continue;
            }
            if (!(ref = check_load(st, name, &m))) continue;
            if (adam_grads) {
                snprintf(name, sizeof name, "%s%s", adam_grads, e->name);
                g = check_load(st, name, NULL);
            }
            for (k = 0; k < m; ++k) {
                if (fabs(ref[k]) > scale) scale = fabs(ref[k]);
                if (g && fabs(g[k]) > gmax) gmax = fabs(g[k]);
            }
            if (!pass) { if (scale > group) group = scale; free(ref); free(g); continue; }
            if (scale < rel_floor * group) scale = rel_floor * group;
            got = grads ? higan_params_grad(p, i) : higan_params_data(p, i);
            for (k = 0; k < m; ++k) {
                double d;
                if (g && fabs(g[k]) < 1e-3 * gmax) { ++skipped; continue; }
                d = fabs((double)got[k] - (double)ref[k]) / (scale > 0 ? scale : 1.0);
                if (!(d == d)) d = 1e30;
                if (d > err) err = d;
            }
            if (verbose && err > tol) printf("      %-60s %.3g\n", e->name, err);
            ++n;
            if (err > worst) { worst = err; snprintf(worst_name, sizeof worst_name, "%s", e->name); }
            free(ref);
            free(g);
        }
    if (n == 0 && missing == 0) return 0;     /* nothing of this kind in the store */
    CHECK(missing == 0 && worst <= tol, "%s: %d tensors, worst max|diff|/scale %.3g (%s)%s%s", label, n, worst,
          worst_name, missing ? " -- tensors missing in the fixture" : "",
          skipped ? " (elements with a near-zero gradient left out)" : "");
    return worst;
}

/* The fixture's "dev.<name>": how far PyTorch's own float32 run of the step lands from its
   float64 reference (make_gan.py). Near-ties in the frozen backbone's max-pools and ReLUs on
   the generated images make a few results (the info probe, G's gradients) depend on float32
   rounding far more than the rest; the C port (float32) is allowed 3x that, never less than
   the fp32 tolerance given. */
static double fp32_dev(const higan_safetensors *st, const char *name) {
    char key[160];
    float *d;
    double v;
    snprintf(key, sizeof key, "dev.%s", name);
    if (!higan_safetensors_find(st, key)) return 0.0;
    d = check_load(st, key, NULL);
    v = d ? d[0] : 0.0;
    free(d);
    return v;
}

static void compare_scalar(const char *name, double got, const higan_safetensors *st, const char *ref_name,
                           double rtol, double atol) {
    float *ref = check_load(st, ref_name, NULL);
    double dev = fp32_dev(st, ref_name), err, tol;
    if (!ref) return;
    if (3.0 * dev > rtol) rtol = 3.0 * dev;
    err = fabs(got - (double)ref[0]) / (fabs((double)ref[0]) > 1e-6 ? fabs((double)ref[0]) : 1e-6);
    tol = rtol + atol / (fabs((double)ref[0]) > 1e-6 ? fabs((double)ref[0]) : 1e-6);
    CHECK(err <= tol, "%-22s %.8g vs %.8g: relative diff %.2g (allowed %.2g; PyTorch fp32 vs fp64: %.2g)",
          name, got, (double)ref[0], err, tol, dev);
    free(ref);
}

/* ---- one iteration against the oracle -------------------------------------------------------- */
static void test_oracle(size_t arena_bytes, int tape_entries, int verbose) {
    higan_safetensors st;
    higan_gan_trainer tr;
    higan_gan_losses l;
    higan_gan_draws dd, dg;
    higan_batch b;
    higan_model_config mc = tiny_config(HIGAN_NETS_ALL);
    higan_arena arena;
    higan_tape tape;
    higan_status rc;
    higan_params *ge, *dp;
    float *real, *aug, *dz, *deps, *gz, *geps;
    int *real_lens, *labels, *label_lens, *wids, *aug_lens, *dl, *dlens, *gl, *glens;
    int64_t n_lab, n_real, n_aug;
    int i, s;
    double t0;
    if (!check_open_fixture(&st, "gan_step.safetensors")) return;
    rc = higan_gan_trainer_init(&tr, &mc, NULL, NULL, 1);
    CHECK(rc == HIGAN_OK, "trainer init (tiny configuration): %s", rc ? higan_last_error() : "ok");
    if (rc != HIGAN_OK) { higan_safetensors_free(&st); return; }
    rc = higan_model_load_safetensors(&tr.model, &st, HIGAN_NETS_ALL, NULL);
    CHECK(rc == HIGAN_OK, "load the oracle's seven networks: %s", rc ? higan_last_error() : "ok");
    real = check_load(&st, "in.real", &n_real);
    aug = check_load(&st, "in.aug", &n_aug);
    real_lens = load_ints(&st, "in.real_lens", NULL);
    labels = load_ints(&st, "in.labels", &n_lab);
    label_lens = load_ints(&st, "in.label_lens", NULL);
    wids = load_ints(&st, "in.wids", NULL);
    aug_lens = load_ints(&st, "in.aug_lens", NULL);
    dl = load_ints(&st, "in.d.fake_labels", NULL);
    dlens = load_ints(&st, "in.d.fake_lens", NULL);
    gl = load_ints(&st, "in.g.fake_labels", NULL);
    glens = load_ints(&st, "in.g.fake_lens", NULL);
    dz = check_load(&st, "in.d.z", NULL);
    deps = check_load(&st, "in.d.eps", NULL);
    gz = check_load(&st, "in.g.z", NULL);
    geps = check_load(&st, "in.g.eps", NULL);
    if (rc != HIGAN_OK || !real || !aug || !real_lens || !labels || !label_lens || !wids || !aug_lens || !dl ||
        !dlens || !gl || !glens || !dz || !deps || !gz || !geps) {
        higan_gan_trainer_free(&tr); higan_safetensors_free(&st); return;
    }
    memset(&b, 0, sizeof b);
    b.B = 3;
    b.label_width = n_lab / 3;
    b.width = n_real / (3 * 64);
    b.imgs = real; b.img_lens = real_lens; b.labels = labels; b.label_lens = label_lens; b.wids = wids;
    b.aug_width = n_aug / (3 * 64); b.aug_imgs = aug; b.aug_lens = aug_lens;
    dd.labels = dl; dd.lens = dlens; dd.z = dz; dd.eps = deps;
    dg.labels = gl; dg.lens = glens; dg.z = gz; dg.eps = geps;
    tr.inject_d = &dd;
    tr.inject_g = &dg;
    higan_arena_init(&arena, arena_bytes);
    higan_tape_init(&tape, &arena, tape_entries);
    higan_gan_set_epoch(&tr, 0);
    ge = &tr.model.store[HIGAN_STORE_GE];
    dp = &tr.model.store[HIGAN_STORE_DP];

    /* D step */
    t0 = cpu_seconds();
    rc = higan_gan_d_step(&tr, &tape, &b, &l);
    CHECK(rc == HIGAN_OK, "D step (arena %llu bytes at the start): %s", (unsigned long long)arena_bytes,
          rc ? higan_last_error() : "ok");
    if (verbose) printf("      D step %.3f s, arena now %llu bytes\n", cpu_seconds() - t0,
                        (unsigned long long)arena.capacity);
    if (rc == HIGAN_OK) {
        /* fp32 against fp64: losses to 1e-5 relative; gradients through the networks' batch
           norms, spectral norms and patch sums to 2e-4 of each tensor's largest entry */
        compare_scalar("real_disc_loss", l.v[HIGAN_GAN_REAL_DISC], &st, "d.real_disc_loss", 2e-5, 0);
        compare_scalar("fake_disc_loss", l.v[HIGAN_GAN_FAKE_DISC], &st, "d.fake_disc_loss", 2e-5, 0);
        /* the patch scores are ~-17 + 17.2 (bias shifted onto the hinges): float32 rounding
           of the raw sums is ~1e-6 absolute per score */
        compare_scalar("real_disc_loss_patch", l.v[HIGAN_GAN_REAL_DISC_PATCH], &st, "d.real_disc_loss_patch", 2e-5, 1e-6);
        compare_scalar("fake_disc_loss_patch", l.v[HIGAN_GAN_FAKE_DISC_PATCH], &st, "d.fake_disc_loss_patch", 2e-5, 1e-6);
        compare_scalar("disc_loss", l.v[HIGAN_GAN_DISC], &st, "d.disc_loss", 2e-5, 0);
        compare_store("D step: D and P gradients", &st, dp, HIGAN_PARAM, 1, "d.grad.", 1e-3,
                      3.0 * fp32_dev(&st, "d.grad") > 2e-4 ? 3.0 * fp32_dev(&st, "d.grad") : 2e-4, NULL, verbose);
        for (s = 0; s < HIGAN_STORE_COUNT; ++s) {
            char label[96];
            snprintf(label, sizeof label, "D step: buffers after (store %d)", s);
            compare_store(label, &st, &tr.model.store[s], HIGAN_BUFFER, 0, "d.after.", 1e-3, 2e-5, NULL, 0);
            snprintf(label, sizeof label, "D step: num_batches_tracked after (store %d)", s);
            if (tr.model.store[s].n_ibuffer)
                compare_store(label, &st, &tr.model.store[s], HIGAN_BUFFER_I64, 0, "d.after.", 0, 0, NULL, 0);
        }
        {   /* the embedding renormalised in place by the three no-grad G passes */
            int64_t n = 0;
            float *ref = check_load(&st, "d.after.Generator.text_embedding.weight", &n);
            if (ref) check_close("D step: G's renormalised embedding", higan_params_data(ge, tr.model.G.text_embedding),
                                 ref, n, 1e-6f, 1e-5f);
            free(ref);
        }
        /* Adam's first step moves each weight by about lr * sign(gradient): 2e-4 */
        compare_store("D step: D and P after Adam", &st, dp, HIGAN_PARAM, 0, "d.param.", 1.0, 1e-6, "d.grad.", 0);
    }

    /* G step (iter_count 0: num_critic_train divides it) */
    t0 = cpu_seconds();
    rc = higan_gan_g_step(&tr, &tape, &b, &l);
    CHECK(rc == HIGAN_OK, "G step: %s", rc ? higan_last_error() : "ok");
    if (verbose) printf("      G step %.3f s, arena now %llu bytes (peak %llu)\n", cpu_seconds() - t0,
                        (unsigned long long)arena.capacity, (unsigned long long)arena.peak);
    if (rc == HIGAN_OK) {
        static const struct { int idx; const char *ref; } G[] = {
            {HIGAN_GAN_ADV, "g.adv_loss"}, {HIGAN_GAN_ADV_PATCH, "g.adv_loss_patch"},
            {HIGAN_GAN_CTC, "g.fake_ctc_loss"}, {HIGAN_GAN_CTC_RAND, "g.fake_ctc_loss_rand"},
            {HIGAN_GAN_CTC_STYLE, "g.fake_ctc_loss_style"}, {HIGAN_GAN_CTC_RECN, "g.fake_ctc_loss_recn"},
            {HIGAN_GAN_INFO, "g.info_loss"}, {HIGAN_GAN_RECN, "g.recn_loss"},
            {HIGAN_GAN_WID, "g.fake_wid_loss"}, {HIGAN_GAN_CTX, "g.ctx_loss"},
            {HIGAN_GAN_KL, "g.kl_loss"}, {HIGAN_GAN_GP_CTC, "g.gp_ctc"},
            {HIGAN_GAN_GP_INFO, "g.gp_info"}, {HIGAN_GAN_GP_WID, "g.gp_wid"},
            {HIGAN_GAN_GP_RECN, "g.gp_recn"}, {HIGAN_GAN_G, "g.g_loss"}};
        const double stds[5] = {l.std_adv, l.std_ctc, l.std_info, l.std_wid, l.std_recn};
        const char *std_names[5] = {"g.std_adv", "g.std_ctc", "g.std_info", "g.std_wid", "g.std_recn"};
        for (i = 0; i < (int)(sizeof G / sizeof G[0]); ++i)
            compare_scalar(higan_gan_loss_name(G[i].idx), l.v[G[i].idx], &st, G[i].ref, 2e-5, 0);
        /* the probes' stds: gradients of single losses through the networks */
        for (i = 0; i < 5; ++i) compare_scalar(std_names[i] + 2, stds[i], &st, std_names[i], 1e-4, 0);
        compare_store("G step: G and E gradients", &st, ge, HIGAN_PARAM, 1, "g.grad.", 1e-3,
                      3.0 * fp32_dev(&st, "g.grad") > 2e-4 ? 3.0 * fp32_dev(&st, "g.grad") : 2e-4, NULL, verbose);
        for (s = 0; s < HIGAN_STORE_COUNT; ++s) {
            char label[96];
            snprintf(label, sizeof label, "G step: buffers after (store %d)", s);
            compare_store(label, &st, &tr.model.store[s], HIGAN_BUFFER, 0, "g.after.", 1e-3, 2e-5, NULL, 0);
            snprintf(label, sizeof label, "G step: num_batches_tracked after (store %d)", s);
            if (tr.model.store[s].n_ibuffer)
                compare_store(label, &st, &tr.model.store[s], HIGAN_BUFFER_I64, 0, "g.after.", 0, 0, NULL, 0);
        }
        compare_store("G step: G and E after Adam", &st, ge, HIGAN_PARAM, 0, "g.param.", 1.0, 1e-6, "g.grad.", 0);
        {   /* frozen stores got no gradient */
            int frozen_ok = 1;
            for (s = HIGAN_STORE_BACKBONE; s <= HIGAN_STORE_OCR; ++s) {
                int64_t k;
                for (k = 0; k < tr.model.store[s].n_param; ++k) if (tr.model.store[s].grad[k] != 0.0f) frozen_ok = 0;
            }
            CHECK(frozen_ok, "frozen R, B, W: no parameter gradients");
        }
    }
    higan_tape_free(&tape);
    higan_arena_free(&arena);
    higan_gan_trainer_free(&tr);
    higan_safetensors_free(&st);
    free(real); free(aug); free(real_lens); free(labels); free(label_lens); free(wids); free(aug_lens);
    free(dl); free(dlens); free(gl); free(glens); free(dz); free(deps); free(gz); free(geps);
}

/* ---- random tiny data: tiny_batch, make_batch (gan_fixture.h) ---- */

static const char LEXICON[] = "hello\nworld\nquick\nbrown\nfox\njumps\nover\nthe\nlazy\ndog\nHandwriting\n"
                              "generation\nof\nwords\nit\nis\nand\nGAN\n";

static int any_nonzero(const float *g, int64_t n) {
    int64_t k;
    for (k = 0; k < n; ++k) if (g[k] != 0.0f) return 1;
    return 0;
}

static void test_random_iterations(void) {
    higan_gan_trainer tr;
    higan_lexicon lex;
    higan_model_config mc = tiny_config(HIGAN_NETS_ALL);
    higan_arena arena;
    higan_tape tape;
    higan_rng r;
    tiny_batch tb;
    higan_gan_losses l;
    unsigned char *got[2];
    int it, s, i, finite = 1, ok = 1, g_steps = 0, never = 0;
    const int stores[2] = {HIGAN_STORE_GE, HIGAN_STORE_DP};
    higan_lexicon_init(&lex);
    CHECK(higan_lexicon_load_text(&lex, LEXICON, sizeof LEXICON - 1) == HIGAN_OK && lex.count > 10, "lexicon");
    higan_rng_seed(&r, 99);
    make_batch(&tb, &r);
    {
        higan_status rc = higan_gan_trainer_init(&tr, &mc, NULL, &lex, 7);
        CHECK(rc == HIGAN_OK, "trainer init: %s", rc ? higan_last_error() : "ok");
    }
    higan_arena_init(&arena, (size_t)1 << 20);      /* too small: the first step grows it */
    higan_tape_init(&tape, &arena, 64);
    for (i = 0; i < 2; ++i) {
        got[i] = (unsigned char *)calloc((size_t)tr.model.store[stores[i]].count, 1);
    }
    for (it = 0; it < 5; ++it) {
        higan_status rc = higan_gan_iteration(&tr, &tape, &tb.b, &l);
        if (rc != HIGAN_OK) { CHECK(0, "iteration %d: %s", it, higan_last_error()); ok = 0; break; }
        g_steps += l.g_step;
        if (l.g_step != (it % 4 == 0)) ok = 0;
        for (i = 0; i < HIGAN_GAN_N_LOSSES; ++i) {
            int is_g = i >= HIGAN_GAN_ADV;
            if (is_g && !l.g_step) { if (l.v[i] == l.v[i]) finite = 0; continue; }   /* NaN when no G step */
            if (!(l.v[i] == l.v[i]) || fabsf(l.v[i]) > 1e30f) { finite = 0; printf("      %s = %g\n", higan_gan_loss_name(i), (double)l.v[i]); }
        }
        for (i = 0; i < 2; ++i) {
            const higan_params *p = &tr.model.store[stores[i]];
            if (stores[i] == HIGAN_STORE_GE && !l.g_step) continue;
            for (s = 0; s < p->count; ++s)
                if (p->entries[s].kind == HIGAN_PARAM && any_nonzero(higan_params_grad(p, s), p->entries[s].numel))
                    got[i][s] = 1;
        }
        if (it == 0 || it == 4)
            printf("      iteration %d: disc %.4f (real %.4f fake %.4f, patch %.4f %.4f) | G %.4f adv %.4f ctc %.4f "
                   "info %.4f recn %.4f wid %.4f ctx %.4f kl %.4f gp %.3f %.3f %.3f %.3f\n", it,
                   (double)l.v[HIGAN_GAN_DISC], (double)l.v[HIGAN_GAN_REAL_DISC], (double)l.v[HIGAN_GAN_FAKE_DISC],
                   (double)l.v[HIGAN_GAN_REAL_DISC_PATCH], (double)l.v[HIGAN_GAN_FAKE_DISC_PATCH],
                   (double)l.v[HIGAN_GAN_G], (double)l.v[HIGAN_GAN_ADV], (double)l.v[HIGAN_GAN_CTC],
                   (double)l.v[HIGAN_GAN_INFO], (double)l.v[HIGAN_GAN_RECN], (double)l.v[HIGAN_GAN_WID],
                   (double)l.v[HIGAN_GAN_CTX], (double)l.v[HIGAN_GAN_KL], (double)l.v[HIGAN_GAN_GP_CTC],
                   (double)l.v[HIGAN_GAN_GP_INFO], (double)l.v[HIGAN_GAN_GP_WID], (double)l.v[HIGAN_GAN_GP_RECN]);
    }
    CHECK(ok && tr.iter == 5 && g_steps == 2, "5 iterations: %lld counted, G steps at iterations 0 and 4 (%d)",
          (long long)tr.iter, g_steps);
    CHECK(finite, "every loss finite (G entries NaN in iterations without a G step)");
    for (i = 0; i < 2; ++i) {
        const higan_params *p = &tr.model.store[stores[i]];
        int n = 0;
        for (s = 0; s < p->count; ++s)
            if (p->entries[s].kind == HIGAN_PARAM) {
                ++n;
                if (!got[i][s]) { ++never; printf("      no gradient: %s\n", p->entries[s].name); }
            }
        CHECK(n > 0, "%s: %d trainable tensors checked", i ? "D + P" : "G + E", n);
        free(got[i]);
    }
    CHECK(never == 0, "every trainable tensor of G, E, D, P received a nonzero gradient");
    for (s = HIGAN_STORE_BACKBONE; s <= HIGAN_STORE_OCR; ++s)
        CHECK(!any_nonzero(tr.model.store[s].grad, tr.model.store[s].n_param), "frozen store %d: no gradient", s);
    CHECK(arena.capacity > ((size_t)1 << 20), "the arena grew from 1 MiB to %llu bytes",
          (unsigned long long)arena.capacity);
    CHECK(tape.capacity > 64, "the tape table grew from 64 to %d entries", tape.capacity);

    /* the same run with an arena that is large from the start: bit-identical weights */
    {
        higan_gan_trainer tr2;
        higan_arena a2;
        higan_tape t2;
        int same = 1;
        higan_gan_trainer_init(&tr2, &mc, NULL, &lex, 7);
        higan_arena_init(&a2, arena.capacity);
        higan_tape_init(&t2, &a2, tape.capacity);
        for (it = 0; it < 5; ++it) higan_gan_iteration(&tr2, &t2, &tb.b, &l);
        for (s = 0; s < HIGAN_STORE_COUNT; ++s) {
            const higan_params *p = &tr.model.store[s], *q = &tr2.model.store[s];
            if (p->n_param && memcmp(p->value, q->value, sizeof(float) * (size_t)p->n_param)) same = 0;
            if (p->n_buffer && memcmp(p->buffer, q->buffer, sizeof(float) * (size_t)p->n_buffer)) same = 0;
            if (p->n_param && memcmp(p->adam_m, q->adam_m, sizeof(float) * (size_t)p->n_param)) same = 0;
        }
        CHECK(same && !memcmp(&tr.rng, &tr2.rng, sizeof tr.rng),
              "a run whose arena grew (retried steps) equals one that never overflowed, bit for bit");
        higan_tape_free(&t2);
        higan_arena_free(&a2);
        higan_gan_trainer_free(&tr2);
    }

    /* frozen_bn: R and B normalise with their running statistics and leave them alone */
    {
        higan_gan_trainer tr3;
        higan_gan_options o = higan_gan_default_options();
        float *rb, *bb;
        const higan_params *pr, *pb;
        higan_status rc;
        o.frozen_bn = 1;
        higan_gan_trainer_init(&tr3, &mc, &o, &lex, 8);
        pr = &tr3.model.store[HIGAN_STORE_OCR];
        pb = &tr3.model.store[HIGAN_STORE_BACKBONE];
        rb = (float *)malloc(sizeof(float) * (size_t)pr->n_buffer);
        bb = (float *)malloc(sizeof(float) * (size_t)pb->n_buffer);
        memcpy(rb, pr->buffer, sizeof(float) * (size_t)pr->n_buffer);
        memcpy(bb, pb->buffer, sizeof(float) * (size_t)pb->n_buffer);
        rc = higan_gan_iteration(&tr3, &tape, &tb.b, &l);
        CHECK(rc == HIGAN_OK && l.g_step && l.v[HIGAN_GAN_G] == l.v[HIGAN_GAN_G],
              "frozen_bn 1: an iteration runs (g_loss %.4f)", (double)l.v[HIGAN_GAN_G]);
        CHECK(!memcmp(rb, pr->buffer, sizeof(float) * (size_t)pr->n_buffer) &&
              !memcmp(bb, pb->buffer, sizeof(float) * (size_t)pb->n_buffer),
              "frozen_bn 1: R's and B's running statistics unchanged");
        CHECK(memcmp(rb, tr.model.store[HIGAN_STORE_OCR].buffer, sizeof(float) * (size_t)pr->n_buffer) != 0,
              "frozen_bn 0 (official): R's running statistics moved");
        free(rb); free(bb);
        higan_gan_trainer_free(&tr3);
    }

    /* a NaN in the batch: the step reports the loss and leaves the weights alone */
    {
        float *before = (float *)malloc(sizeof(float) * (size_t)tr.model.store[HIGAN_STORE_DP].n_param);
        higan_status rc;
        memcpy(before, tr.model.store[HIGAN_STORE_DP].value, sizeof(float) * (size_t)tr.model.store[HIGAN_STORE_DP].n_param);
        tb.imgs[5] = NAN;
        rc = higan_gan_d_step(&tr, &tape, &tb.b, &l);
        CHECK(rc == HIGAN_GAN_NONFINITE && strstr(higan_last_error(), "is nan") != NULL,
              "NaN image: D step returns HIGAN_GAN_NONFINITE (%d: %s)", rc, higan_last_error());
        CHECK(!memcmp(before, tr.model.store[HIGAN_STORE_DP].value,
                      sizeof(float) * (size_t)tr.model.store[HIGAN_STORE_DP].n_param),
              "NaN image: D and P weights untouched");
        free(before);
    }
    {   /* a batch whose width does not match the labels is refused with a message */
        higan_batch bad = tb.b;
        bad.width = 96;
        CHECK(higan_gan_d_step(&tr, &tape, &bad, &l) == HIGAN_ERR_ARG && strstr(higan_last_error(), "process_style"),
              "mismatched batch refused: %s", higan_last_error());
    }
    {   /* names */
        CHECK(!strcmp(higan_gan_loss_name(HIGAN_GAN_CTC), "fake_ctc_loss") && higan_gan_loss_name(HIGAN_GAN_N_LOSSES) == NULL,
              "loss names");
    }
    higan_tape_free(&tape);
    higan_arena_free(&arena);
    higan_gan_trainer_free(&tr);
    higan_lexicon_free(&lex);
    free(tb.imgs);
    free(tb.aug);
}

/* Trainer state = weights and buffers + both Adams + the RNG + the iteration count: saving it
   after 3 iterations and loading it into a fresh trainer, 3 more iterations give bit for bit
   what 6 uninterrupted iterations give (a G step lands on iteration 4 of both). */
static void test_resume(void) {
    higan_gan_trainer a, b;
    higan_lexicon lex;
    higan_model_config mc = tiny_config(HIGAN_NETS_ALL);
    higan_arena arena;
    higan_tape tape;
    higan_rng r;
    tiny_batch tb;
    higan_adam opts[HIGAN_STORE_COUNT];
    const higan_adam *save_opts[HIGAN_STORE_COUNT];
    const char *path = "build/test_gan_resume.safetensors";
    higan_rng saved_rng;
    int64_t saved_iter;
    int it, s, same = 1;
    higan_status rc;
    higan_lexicon_init(&lex);
    higan_lexicon_load_text(&lex, LEXICON, sizeof LEXICON - 1);
    higan_rng_seed(&r, 98);
    make_batch(&tb, &r);
    higan_arena_init(&arena, (size_t)64 << 20);
    higan_tape_init(&tape, &arena, 4096);
    higan_gan_trainer_init(&a, &mc, NULL, &lex, 11);
    for (it = 0; it < 3; ++it) higan_gan_iteration(&a, &tape, &tb.b, NULL);
    for (s = 0; s < HIGAN_STORE_COUNT; ++s) save_opts[s] = NULL;
    save_opts[HIGAN_STORE_GE] = &a.opt_g;
    save_opts[HIGAN_STORE_DP] = &a.opt_d;
    rc = higan_model_save(&a.model, path, save_opts);
    CHECK(rc == HIGAN_OK, "save after 3 iterations: %s", rc ? higan_last_error() : "ok");
    saved_rng = a.rng;
    saved_iter = a.iter;
    for (it = 0; it < 3; ++it) higan_gan_iteration(&a, &tape, &tb.b, NULL);

    higan_gan_trainer_init(&b, &mc, NULL, &lex, 12345);     /* other seed: everything comes from the file */
    for (s = 0; s < HIGAN_STORE_COUNT; ++s) opts[s] = higan_adam_default(0.1);
    rc = higan_model_load(&b.model, path, 0, opts);
    CHECK(rc == HIGAN_OK && b.model.opt_loaded[HIGAN_STORE_GE] && b.model.opt_loaded[HIGAN_STORE_DP],
          "load into a fresh trainer: %s", rc ? higan_last_error() : "ok");
    b.opt_g.step = opts[HIGAN_STORE_GE].step;
    b.opt_d.step = opts[HIGAN_STORE_DP].step;
    b.rng = saved_rng;
    b.iter = saved_iter;
    for (it = 0; it < 3; ++it) higan_gan_iteration(&b, &tape, &tb.b, NULL);
    for (s = 0; s < HIGAN_STORE_COUNT; ++s) {
        const higan_params *p = &a.model.store[s], *q = &b.model.store[s];
        if (p->n_param && (memcmp(p->value, q->value, sizeof(float) * (size_t)p->n_param) ||
                           memcmp(p->adam_m, q->adam_m, sizeof(float) * (size_t)p->n_param) ||
                           memcmp(p->adam_v, q->adam_v, sizeof(float) * (size_t)p->n_param))) same = 0;
        if (p->n_buffer && memcmp(p->buffer, q->buffer, sizeof(float) * (size_t)p->n_buffer)) same = 0;
        if (p->n_ibuffer && memcmp(p->ibuffer, q->ibuffer, sizeof(int64_t) * (size_t)p->n_ibuffer)) same = 0;
    }
    CHECK(same && a.iter == 6 && b.iter == 6 && a.opt_g.step == b.opt_g.step && a.opt_d.step == 6 &&
          b.opt_d.step == 6 && a.opt_g.step == 2 && !memcmp(&a.rng, &b.rng, sizeof a.rng),
          "3 + save/load + 3 iterations equal 6 uninterrupted ones, bit for bit (weights, buffers, Adam, RNG)");
    remove(path);
    higan_gan_trainer_free(&a);
    higan_gan_trainer_free(&b);
    higan_tape_free(&tape);
    higan_arena_free(&arena);
    higan_lexicon_free(&lex);
    free(tb.imgs);
    free(tb.aug);
}

int main(void) {
    /* tiny tensors: one thread (results never depend on the thread count, and on a busy
       shared machine idle OpenMP threads only spin) */
    higan_set_num_threads(1);
    printf("-- one D step and one G step against PyTorch (tests/oracle/make_gan.py)\n");
    test_oracle((size_t)256 << 20, 4096, 1);
    printf("-- the same from a 64 KiB arena and a 16-entry tape (every step retried after growing)\n");
    test_oracle((size_t)64 << 10, 16, 0);
    printf("-- random tiny data\n");
    test_random_iterations();
    printf("-- exact resume\n");
    test_resume();
    return check_finish();
}
