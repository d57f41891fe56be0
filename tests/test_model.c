/* Tests of the model section of higan.h: the seven HiGAN+ networks in their parameter stores, checkpoint
   save/load (round trip, metadata, load errors, configuration checks), a torch.save .pth
   converted with data_tools/pth.h against tests/oracle/make_model.py, generation
   (determinism over runs, threads and CPU levels), style from a reference image, image input
   and bad input. Temporary files go to build/. */
#define HIGAN_IMPLEMENTATION
#include "higan.h"
#include "check.h"
#include "data_tools/pth.h"

#define TMP_FULL "build/test_model_full.safetensors"
#define TMP_BAD "build/test_model_bad.safetensors"
#define TMP_PTH "build/test_model_from_pth.safetensors"
#define TMP_RESAVED "build/test_model_resaved.safetensors"

/* the tiny configuration, also in tests/oracle/make_model.py */
static higan_model_config tiny_config(unsigned nets) {
    higan_model_config c = higan_model_default_config(nets);
    c.G.ch = 2; c.G.style_dim = 8; c.G.embed_dim = 8;
    c.D.ch = 2; c.P.ch = 2;
    c.B.resolution = 2; c.B.max_dim = 32;
    c.n_writer = 5;
    c.R.cnn.resolution = 2; c.R.cnn.max_dim = 32;
    return c;
}

/* the configurations agree on the networks they hold */
static int config_equal(const higan_model_config *a, const higan_model_config *b) {
    unsigned n = a->nets;
    if (a->nets != b->nets) return 0;
    if ((n & HIGAN_NETS_DEPLOY) &&
        !(a->G.ch == b->G.ch && a->G.style_dim == b->G.style_dim && a->G.embed_dim == b->G.embed_dim &&
          a->G.n_class == b->G.n_class && a->G.bottom == b->G.bottom && a->G.input_nc == b->G.input_nc &&
          a->B.resolution == b->B.resolution && a->B.max_dim == b->B.max_dim &&
          a->B.in_channel == b->B.in_channel && a->B.dropout == b->B.dropout)) return 0;
    if ((n & HIGAN_NET_BIT(HIGAN_NET_DISCRIMINATOR)) &&
        !(a->D.ch == b->D.ch && a->D.resolution == b->D.resolution && a->D.input_nc == b->D.input_nc)) return 0;
    if ((n & HIGAN_NET_BIT(HIGAN_NET_PATCH_DISCRIMINATOR)) &&
        !(a->P.ch == b->P.ch && a->P.resolution == b->P.resolution && a->P.input_nc == b->P.input_nc)) return 0;
    if ((n & HIGAN_NET_BIT(HIGAN_NET_WRITER_IDENTIFIER)) && a->n_writer != b->n_writer) return 0;
    if ((n & HIGAN_NET_BIT(HIGAN_NET_RECOGNIZER)) &&
        !(a->R.cnn.resolution == b->R.cnn.resolution && a->R.cnn.max_dim == b->R.cnn.max_dim &&
          a->R.cnn.in_channel == b->R.cnn.in_channel && a->R.cnn.dropout == b->R.cnn.dropout &&
          a->R.n_class == b->R.n_class && a->R.rnn_depth == b->R.rnn_depth)) return 0;
    return 1;
}

static int same_bytes(const void *a, const void *b, size_t n) {
    return n == 0 || (a && b && memcmp(a, b, n) == 0);
}

/* every store of a and b holds the same names, shapes and bytes (Adam m and v too if adam) */
static int stores_equal(const higan_model *a, const higan_model *b, int adam_store_mask) {
    int s, i;
    for (s = 0; s < HIGAN_STORE_COUNT; ++s) {
        const higan_params *p = &a->store[s], *q = &b->store[s];
        if (p->count != q->count || p->n_param != q->n_param || p->n_buffer != q->n_buffer ||
            p->n_ibuffer != q->n_ibuffer) return 0;
        for (i = 0; i < p->count; ++i)
            if (strcmp(p->entries[i].name, q->entries[i].name) || p->entries[i].numel != q->entries[i].numel) return 0;
        for (i = 0; i < p->count; ++i) {     /* tensor by tensor (the blocks hold alignment gaps) */
            const higan_param_entry *e = &p->entries[i], *f = &q->entries[i];
            size_t n = (size_t)e->numel;
            if (e->kind == HIGAN_BUFFER_I64) {
                if (!same_bytes(p->ibuffer + e->offset, q->ibuffer + f->offset, sizeof(int64_t) * n)) return 0;
            } else if (e->kind == HIGAN_BUFFER) {
                if (!same_bytes(p->buffer + e->offset, q->buffer + f->offset, sizeof(float) * n)) return 0;
            } else {
                if (!same_bytes(p->value + e->offset, q->value + f->offset, sizeof(float) * n)) return 0;
                if ((adam_store_mask & (1 << s)) &&
                    (!same_bytes(p->adam_m + e->offset, q->adam_m + f->offset, sizeof(float) * n) ||
                     !same_bytes(p->adam_v + e->offset, q->adam_v + f->offset, sizeof(float) * n))) return 0;
            }
        }
    }
    return 1;
}

/* a call that should succeed: its error message is printed only when it fails */
#define CHECK_OK(expr, ...)                                                             \
    do { higan_status rc_ = (expr);                                                     \
         CHECK(rc_ == HIGAN_OK, __VA_ARGS__);                                           \
         if (rc_ != HIGAN_OK) printf("      error %d: %s\n", rc_, higan_last_error()); } while (0)

static int contains(const char *haystack, const char *needle) { return strstr(haystack, needle) != NULL; }

/* Copies src to dst, dropping tensor drop, flattening tensor flatten to 1-D, adding a 2-float
   tensor extra, and setting metadata meta_key to meta_value (any may be NULL). */
static int rewrite(const char *src, const char *dst, const char *drop, const char *flatten,
                   const char *extra, const char *meta_key, const char *meta_value) {
    static const float extra_data[2] = {1.0f, 2.0f};
    higan_safetensors st;
    higan_safetensors_writer w;
    int i, ok = 1;
    if (higan_safetensors_load(&st, src) != HIGAN_OK) return 0;
    higan_safetensors_writer_init(&w);
    for (i = 0; i < st.meta_count; ++i) ok &= higan_safetensors_writer_meta(&w, st.meta_keys[i], st.meta_values[i]) == HIGAN_OK;
    if (meta_key) ok &= higan_safetensors_writer_meta(&w, meta_key, meta_value) == HIGAN_OK;
    for (i = 0; i < st.count; ++i) {
        const higan_st_tensor *t = &st.tensors[i];
        if (drop && !strcmp(t->name, drop)) continue;
        if (flatten && !strcmp(t->name, flatten)) {
            int64_t n = t->numel;
            ok &= higan_safetensors_writer_add(&w, t->name, t->dtype, 1, &n, st.data + t->begin) == HIGAN_OK;
        } else {
            ok &= higan_safetensors_writer_add(&w, t->name, t->dtype, t->ndim, t->shape, st.data + t->begin) == HIGAN_OK;
        }
    }
    if (extra) {
        int64_t two = 2;
        ok &= higan_safetensors_writer_add(&w, extra, HIGAN_F32, 1, &two, extra_data) == HIGAN_OK;
    }
    ok &= higan_safetensors_writer_save(&w, dst) == HIGAN_OK;
    higan_safetensors_writer_free(&w);
    higan_safetensors_free(&st);
    return ok;
}

/* ---- 1. save / load round trip of all seven networks ----------------------------------------- */
static void test_round_trip(void) {
    higan_model_config cfg = tiny_config(HIGAN_NETS_ALL);
    higan_model a, b, c;
    higan_adam opt_g = higan_adam_default(2e-4), opt_d = higan_adam_default(2e-4), loaded[HIGAN_STORE_COUNT];
    const higan_adam *opts[HIGAN_STORE_COUNT] = {NULL, NULL, NULL, NULL, NULL};
    higan_safetensors st;
    higan_rng r;
    int s, net;
    int64_t i;
    CHECK_OK(higan_model_init(&a, &cfg, 1), "init all seven networks (tiny config)");
    for (net = 0; net < HIGAN_NET_COUNT; ++net)
        CHECK(higan_model_num_params(&a, net) > 0, "%s has %lld parameters", higan_net_name(net),
              (long long)higan_model_num_params(&a, net));
    CHECK(a.store[HIGAN_STORE_BACKBONE].frozen && a.store[HIGAN_STORE_WID].frozen && a.store[HIGAN_STORE_OCR].frozen &&
          !a.store[HIGAN_STORE_GE].frozen && !a.store[HIGAN_STORE_DP].frozen,
          "B, W, R frozen by default; G+E and D+P trainable");
    /* non-trivial int64 buffers and optimizer state */
    higan_rng_seed(&r, 77);
    for (s = 0; s < HIGAN_STORE_COUNT; ++s)
        for (i = 0; i < a.store[s].n_ibuffer; ++i) a.store[s].ibuffer[i] = 3 + i;
    for (s = HIGAN_STORE_GE; s <= HIGAN_STORE_DP; ++s) {
        higan_rng_fill_normal(&r, a.store[s].adam_m, a.store[s].n_param, 0.0f, 0.1f);
        higan_rng_fill_uniform(&r, a.store[s].adam_v, a.store[s].n_param, 0.0f, 0.01f);
    }
    opt_g.step = 17; opt_d.step = 5;
    opts[HIGAN_STORE_GE] = &opt_g;
    opts[HIGAN_STORE_DP] = &opt_d;
    CHECK_OK(higan_model_save(&a, TMP_FULL, opts), "save %s", TMP_FULL);

    /* metadata */
    if (higan_safetensors_load(&st, TMP_FULL) == HIGAN_OK) {
        const char *v;
        const higan_st_tensor *t;
        v = higan_safetensors_meta(&st, "higan.version");
        CHECK(v && !strcmp(v, HIGAN_VERSION_STRING), "metadata higan.version = %s", v ? v : "(absent)");
        v = higan_safetensors_meta(&st, "higan.alphabet");
        CHECK(v && !strcmp(v, HIGAN_ALPHABET_STRING), "metadata higan.alphabet = %s", v ? v : "(absent)");
        v = higan_safetensors_meta(&st, "higan.networks");
        CHECK(v && !strcmp(v, "Generator, StyleEncoder, StyleBackbone, Discriminator, PatchDiscriminator, "
                              "WriterIdentifier, Recognizer"), "metadata higan.networks = %s", v ? v : "(absent)");
        v = higan_safetensors_meta(&st, "higan.config.Generator");
        CHECK(v && !strcmp(v, "ch=2 style_dim=8 embed_dim=8 n_class=80 bottom=4 input_nc=1"),
              "metadata higan.config.Generator = %s", v ? v : "(absent)");
        v = higan_safetensors_meta(&st, "higan.config.StyleEncoder");
        CHECK(v && !strcmp(v, "style_dim=8 in_dim=32"), "metadata higan.config.StyleEncoder = %s", v ? v : "(absent)");
        v = higan_safetensors_meta(&st, "higan.config.StyleBackbone");
        CHECK(v && !strcmp(v, "resolution=2 max_dim=32 in_channel=1 dropout=0"),
              "metadata higan.config.StyleBackbone = %s", v ? v : "(absent)");
        v = higan_safetensors_meta(&st, "higan.config.WriterIdentifier");
        CHECK(v && !strcmp(v, "n_writer=5 in_dim=32"), "metadata higan.config.WriterIdentifier = %s", v ? v : "(absent)");
        v = higan_safetensors_meta(&st, "higan.config.Recognizer");
        CHECK(v && !strcmp(v, "resolution=2 max_dim=32 in_channel=1 n_class=80 rnn_depth=2 dropout=0"),
              "metadata higan.config.Recognizer = %s", v ? v : "(absent)");
        v = higan_safetensors_meta(&st, "higan.config.PatchDiscriminator");
        CHECK(v && !strcmp(v, "ch=2 resolution=32 input_nc=1"), "metadata higan.config.PatchDiscriminator = %s", v ? v : "(absent)");
        v = higan_safetensors_meta(&st, "OPT.G.adam_step");
        CHECK(v && !strcmp(v, "17"), "metadata OPT.G.adam_step = %s", v ? v : "(absent)");
        v = higan_safetensors_meta(&st, "OPT.D.adam_step");
        CHECK(v && !strcmp(v, "5"), "metadata OPT.D.adam_step = %s", v ? v : "(absent)");
        CHECK(!higan_safetensors_meta(&st, "OPT.B.adam_step") && !higan_safetensors_meta(&st, "adam_step"),
              "no optimizer metadata for stores saved without one");
        t = higan_safetensors_find(&st, "Generator.blocks.0.0.conv1.u0");
        CHECK(t && t->dtype == HIGAN_F32 && t->ndim == 2 && t->shape[0] == 1 && t->shape[1] == 8,
              "buffer Generator.blocks.0.0.conv1.u0 saved as F32 [1, 8]");
        t = higan_safetensors_find(&st, "StyleBackbone.cnn_backbone.2.conv_0.norm.num_batches_tracked");
        CHECK(t && t->dtype == HIGAN_I64, "StyleBackbone ...num_batches_tracked saved as I64");
        CHECK(higan_safetensors_find(&st, "Generator.text_embedding.weight.adam_m") &&
              higan_safetensors_find(&st, "PatchDiscriminator.linear.weight.adam_v") &&
              !higan_safetensors_find(&st, "Recognizer.ctc_cls.weight.adam_m"),
              "Adam m/v saved for G+E and D+P only");
        higan_safetensors_free(&st);
    } else {
        CHECK(0, "reopen %s: %s", TMP_FULL, higan_last_error());
    }

    /* into a zeroed model: configuration from the metadata, values and Adam state bit-exact */
    memset(&b, 0, sizeof b);
    memset(loaded, 0, sizeof loaded);
    CHECK_OK(higan_model_load(&b, TMP_FULL, 0, loaded), "load into a zeroed model");
    CHECK(b.initialised && config_equal(&a.cfg, &b.cfg), "configuration rebuilt from the metadata");
    CHECK(stores_equal(&a, &b, (1 << HIGAN_STORE_GE) | (1 << HIGAN_STORE_DP)),
          "all five stores bit-exact after the round trip (values, buffers, int64 buffers, Adam m and v)");
    CHECK(loaded[HIGAN_STORE_GE].step == 17 && loaded[HIGAN_STORE_DP].step == 5 && b.opt_loaded[HIGAN_STORE_GE] &&
          b.opt_loaded[HIGAN_STORE_DP] && !b.opt_loaded[HIGAN_STORE_BACKBONE] && !b.opt_loaded[HIGAN_STORE_OCR],
          "Adam steps restored (17, 5) where saved");
    /* into an initialised model with the same configuration, no optimizer */
    CHECK(higan_model_init(&c, &cfg, 99) == HIGAN_OK, "init a second model");
    CHECK(!stores_equal(&a, &c, 0), "a different seed gives different weights");
    CHECK_OK(higan_model_load(&c, TMP_FULL, 0, NULL), "load into an initialised model");
    CHECK(stores_equal(&a, &c, 0), "values and buffers bit-exact");
    higan_model_free(&c);
    /* only the deploy networks of the full checkpoint */
    memset(&c, 0, sizeof c);
    CHECK_OK(higan_model_load(&c, TMP_FULL, HIGAN_NETS_DEPLOY, NULL), "load the deploy set out of a full checkpoint");
    CHECK(c.cfg.nets == HIGAN_NETS_DEPLOY && c.store[HIGAN_STORE_DP].count == 0 &&
          c.store[HIGAN_STORE_GE].n_param == b.store[HIGAN_STORE_GE].n_param, "... only those networks");
    higan_model_free(&c);
    /* same seed, same weights; G does not depend on the other networks present */
    {
        higan_model_config dcfg = tiny_config(HIGAN_NETS_DEPLOY);
        CHECK(higan_model_init(&c, &dcfg, 1) == HIGAN_OK &&
              same_bytes(c.store[HIGAN_STORE_GE].value, a.store[HIGAN_STORE_GE].value,
                         sizeof(float) * (size_t)c.store[HIGAN_STORE_GE].n_param) &&
              same_bytes(c.store[HIGAN_STORE_BACKBONE].value, a.store[HIGAN_STORE_BACKBONE].value,
                         sizeof(float) * (size_t)c.store[HIGAN_STORE_BACKBONE].n_param),
              "init is reproducible and per network (deploy init = the deploy part of the full init)");
        higan_model_free(&c);
    }
    higan_model_free(&a);
    higan_model_free(&b);
}

/* ---- 2. load errors --------------------------------------------------------------------------- */
static void expect_load_error(const char *what, const char *path, higan_model *m, unsigned nets,
                              const char *needle1, const char *needle2) {
    int was_init = m->initialised;
    higan_status rc = higan_model_load(m, path, nets, NULL);
    const char *e = higan_last_error();
    CHECK(rc != HIGAN_OK && contains(e, needle1) && (!needle2 || contains(e, needle2)),
          "%s fails naming '%s'%s%s: %s", what, needle1, needle2 ? " and " : "", needle2 ? needle2 : "", e);
    if (!was_init) CHECK(!m->initialised, "%s: the zeroed model stays zeroed", what);
}

static void test_load_errors(void) {
    higan_model z, m;
    higan_model_config cfg;
    memset(&z, 0, sizeof z);
    CHECK(rewrite(TMP_FULL, TMP_BAD, "Generator.blocks.1.0.conv2.weight", NULL, NULL, NULL, NULL), "write a file with a missing tensor");
    expect_load_error("missing tensor", TMP_BAD, &z, 0, "missing 1: Generator.blocks.1.0.conv2.weight", NULL);
    CHECK(rewrite(TMP_FULL, TMP_BAD, "Generator.filter_linear.u0", NULL, NULL, NULL, NULL), "write a file with a missing buffer");
    expect_load_error("missing buffer", TMP_BAD, &z, 0, "missing 1: Generator.filter_linear.u0", NULL);
    CHECK(rewrite(TMP_FULL, TMP_BAD, NULL, NULL, "Discriminator.blocks.9.0.conv1.weight", NULL, NULL), "write a file with an extra tensor");
    expect_load_error("extra tensor", TMP_BAD, &z, 0, "unexpected 1: Discriminator.blocks.9.0.conv1.weight", NULL);
    CHECK(rewrite(TMP_FULL, TMP_BAD, NULL, "StyleBackbone.cnn_ctc.1.conv.weight", NULL, NULL, NULL), "write a file with a mis-shaped tensor");
    expect_load_error("mis-shaped tensor", TMP_BAD, &z, 0, "mis-shaped 1: StyleBackbone.cnn_ctc.1.conv.weight (file [9216], model [32,32,3,3])", NULL);
    CHECK(rewrite(TMP_FULL, TMP_BAD, "Recognizer.ctc_cls.bias", "Recognizer.ctc_cls.weight", "Recognizer.extra", NULL, NULL),
          "write a file with three problems");
    expect_load_error("three problems", TMP_BAD, &z, 0, "missing 1: Recognizer.ctc_cls.bias", "unexpected 1: Recognizer.extra");
    CHECK(contains(higan_last_error(), "mis-shaped 1: Recognizer.ctc_cls.weight"), "... and mis-shaped Recognizer.ctc_cls.weight");
    CHECK(rewrite(TMP_FULL, TMP_BAD, NULL, NULL, NULL, "higan.config.Generator", "ch=two style_dim=8"), "write bad config metadata");
    expect_load_error("bad config metadata", TMP_BAD, &z, 0, "higan.config.Generator", "'ch='");
    CHECK(rewrite(TMP_FULL, TMP_BAD, NULL, NULL, NULL, "higan.alphabet", "abc"), "write another alphabet");
    expect_load_error("another alphabet", TMP_BAD, &z, 0, "another alphabet", NULL);
    expect_load_error("missing file", "build/no_such_checkpoint.safetensors", &z, 0, "no_such_checkpoint", NULL);

    /* into an initialised model: the same checks */
    cfg = tiny_config(HIGAN_NETS_ALL);
    CHECK(higan_model_init(&m, &cfg, 3) == HIGAN_OK, "init");
    CHECK(rewrite(TMP_FULL, TMP_BAD, "Generator.blocks.1.0.conv2.weight", NULL, NULL, NULL, NULL), "write a file with a missing tensor");
    expect_load_error("missing tensor (initialised model)", TMP_BAD, &m, 0, "Generator.blocks.1.0.conv2.weight", "missing");
    higan_model_free(&m);

    /* a different configuration */
    cfg = tiny_config(HIGAN_NETS_DEPLOY);
    cfg.G.ch = 4;
    CHECK(higan_model_init(&m, &cfg, 3) == HIGAN_OK, "init with G ch 4");
    expect_load_error("different configuration", TMP_FULL, &m, HIGAN_NETS_DEPLOY, "Generator ch is 2 in the file but 4 in the model", NULL);
    expect_load_error("networks the model lacks", TMP_FULL, &m, HIGAN_NETS_ALL, "the model has no Discriminator", NULL);
    expect_load_error("half a store", TMP_FULL, &m, HIGAN_NET_BIT(HIGAN_NET_GENERATOR), "Generator, StyleEncoder share one parameter store", NULL);
    higan_model_free(&m);
    cfg = tiny_config(HIGAN_NETS_DEPLOY);
    cfg.B.max_dim = 16;
    CHECK(higan_model_init(&m, &cfg, 3) == HIGAN_OK, "init with backbone max_dim 16");
    expect_load_error("different backbone", TMP_FULL, &m, 0, "StyleEncoder in_dim is 32 in the file but 16 in the model", NULL);
    higan_model_free(&m);

    /* a network the file lacks */
    cfg = tiny_config(HIGAN_NETS_DEPLOY);
    CHECK(higan_model_init(&m, &cfg, 3) == HIGAN_OK && higan_model_save(&m, TMP_BAD, NULL) == HIGAN_OK, "save a deploy checkpoint");
    higan_model_free(&m);
    expect_load_error("missing networks", TMP_BAD, &z, HIGAN_NETS_ALL,
                      "has no Discriminator, PatchDiscriminator, WriterIdentifier, Recognizer (it holds: Generator, StyleEncoder, StyleBackbone)", NULL);
    CHECK(higan_model_load(&z, TMP_BAD, 0, NULL) == HIGAN_OK && z.cfg.nets == HIGAN_NETS_DEPLOY, "nets 0 loads what the file holds");
    higan_model_free(&z);

    /* bad configurations */
    cfg = tiny_config(HIGAN_NETS_DEPLOY);
    cfg.G.ch = 0;
    CHECK(higan_model_init(&m, &cfg, 1) == HIGAN_ERR_ARG && contains(higan_last_error(), "G.ch") && !m.initialised,
          "init with G ch 0 fails: %s", higan_last_error());
    cfg = tiny_config(0);
    CHECK(higan_model_init(&m, &cfg, 1) == HIGAN_ERR_ARG, "init with no networks fails: %s", higan_last_error());
}

/* ---- 3. a torch.save .pth, converted, against PyTorch; the safetensors route ------------------- */
static void test_pth(void) {
    higan_safetensors fx;
    higan_safetensors_writer w;
    pth_checkpoint c;
    higan_model z, m, m2;
    higan_model_config cfg = tiny_config(HIGAN_NETS_DEPLOY);
    higan_arena arena;
    higan_tape tape;
    float *zz, *out_z, *out_style, *mu_shrink, *mu_grow, *img_shrink, *img_grow, *rs_shrink, *rs_grow;
    float got[64 * 96], got2[64 * 96], first[64 * 96], mu[8], resized[64 * 96];
    const char *text;
    int ok, W;
    if (!check_open_fixture(&fx, "model_deploy_out.safetensors")) return;
    text = higan_safetensors_meta(&fx, "text");
    CHECK(text && !strcmp(text, "Hi!"), "fixture text 'Hi!'");
    if (!text) return;
    ok = pth_open_file(&c, "tests/oracle/model_deploy.pth") == 0 && pth_extract(&c, NULL, NULL) == 0;
    CHECK(ok, "read tests/oracle/model_deploy.pth with data_tools/pth.h: %s", c.err);
    higan_safetensors_writer_init(&w);
    if (ok) ok = pth_add_to_writer(&c, &w) == 0 && higan_safetensors_writer_save(&w, TMP_PTH) == HIGAN_OK;
    CHECK(ok && c.count == 129 + 8 + 125, "converted %d tensors (G 129 + E 8 + B 125) to %s", c.count, TMP_PTH);
    higan_safetensors_writer_free(&w);
    pth_close(&c);
    if (!ok) { higan_safetensors_free(&fx); return; }

    /* no higan metadata: a zeroed model assumes the official configuration and says what differs */
    memset(&z, 0, sizeof z);
    CHECK(higan_model_load(&z, TMP_PTH, 0, NULL) == HIGAN_ERR_FORMAT &&
          contains(higan_last_error(), "mis-shaped") && contains(higan_last_error(), "Generator.text_embedding.weight (file [80,8], model [80,120])"),
          "a converted tiny .pth into a zeroed model: official configuration, mis-shaped tensors named: %.300s", higan_last_error());

    zz = check_load(&fx, "z", NULL);
    out_z = check_load(&fx, "out_z", NULL);
    out_style = check_load(&fx, "out_style", NULL);
    mu_shrink = check_load(&fx, "mu_shrink", NULL);
    mu_grow = check_load(&fx, "mu_grow", NULL);
    img_shrink = check_load(&fx, "img_shrink", NULL);
    img_grow = check_load(&fx, "img_grow", NULL);
    rs_shrink = check_load(&fx, "resized_shrink", NULL);
    rs_grow = check_load(&fx, "resized_grow", NULL);
    if (!zz || !out_z || !out_style || !mu_shrink || !mu_grow || !img_shrink || !img_grow || !rs_shrink || !rs_grow) goto done;

    higan_arena_init(&arena, (size_t)64 << 20);
    higan_tape_init(&tape, &arena, 4096);
    CHECK(higan_model_init(&m, &cfg, 5) == HIGAN_OK, "init tiny deploy model");
    CHECK_OK(higan_model_load(&m, TMP_PTH, 0, NULL), "load the converted .pth into it");

    /* generator output against PyTorch */
    W = higan_generate_word(&m, &tape, text, zz, got, 64 * 96);
    CHECK(W == 96, "generate '%s': width %d: %s", text, W, W < 0 ? higan_last_error() : "");
    check_close("G(z, 'Hi!') eval vs PyTorch", got, out_z, 64 * 96, 1e-5f, 1e-4f);
    memcpy(first, got, sizeof got);
    W = higan_generate_word(&m, &tape, text, mu_shrink, got, 64 * 96);
    check_close("G(mu, 'Hi!') eval vs PyTorch", got, out_style, 64 * 96, 1e-5f, 1e-4f);

    /* the reference route: cv2-style resize, backbone, encoder */
    CHECK(higan_image_resize(resized, 64, 96, img_shrink, 64, 150) == HIGAN_OK, "resize 150 -> 96");
    check_close("INTER_AREA 64x150 -> 64x96 vs the cv2 algorithm", resized, rs_shrink, 64 * 96, 1e-6f, 1e-6f);
    CHECK(higan_image_resize(resized, 64, 96, img_grow, 64, 50) == HIGAN_OK, "resize 50 -> 96");
    /* OpenCV (and higan) round the source position to float: 50 * 2^-24 relative, times pixel
       steps up to 2, gives up to 1e-5; the reference computes it in double */
    check_close("INTER_LINEAR 64x50 -> 64x96 vs torch linear (align_corners False)", resized, rs_grow, 64 * 96, 1e-5f, 1e-6f);
    CHECK_OK(higan_style_from_image(&m, &tape, img_shrink, 150, 3, mu), "style from a 64x150 reference");
    check_close("style (mu) of the shrunk reference vs PyTorch", mu, mu_shrink, 8, 1e-5f, 1e-4f);
    CHECK_OK(higan_style_from_image(&m, &tape, img_grow, 50, 3, mu), "style from a 64x50 reference");
    check_close("style (mu) of the enlarged reference vs PyTorch", mu, mu_grow, 8, 1e-5f, 1e-4f);
    CHECK(arena.used == 0 && tape.count == 0, "generation gives the arena back (used %zu) and records nothing", arena.used);

    /* the safetensors route: save with metadata, load into a zeroed model, same bytes */
    CHECK_OK(higan_model_save(&m, TMP_RESAVED, NULL), "save the loaded model");
    memset(&m2, 0, sizeof m2);
    CHECK_OK(higan_model_load(&m2, TMP_RESAVED, 0, NULL), "reload it into a zeroed model");
    CHECK(config_equal(&m2.cfg, &cfg), "the tiny configuration comes back from the metadata");
    W = higan_generate_word(&m2, &tape, text, zz, got2, 64 * 96);
    CHECK(W == 96 && memcmp(got2, first, sizeof got2) == 0, "the .pth route and the safetensors route give the same bytes");
    higan_model_free(&m2);
    higan_model_free(&m);
    higan_tape_free(&tape);
    higan_arena_free(&arena);
done:
    free(zz); free(out_z); free(out_style); free(mu_shrink); free(mu_grow);
    free(img_shrink); free(img_grow); free(rs_shrink); free(rs_grow);
    higan_safetensors_free(&fx);
}

/* ---- 4. generation: determinism, CPU levels, threads, bad input ----------------------------- */
static void test_generation(void) {
    higan_model m, g_only;
    higan_model_config cfg = tiny_config(HIGAN_NETS_DEPLOY);
    higan_arena arena;
    higan_tape tape;
    higan_rng r;
    float style[8], style2[8], ref_style[8], lvl_style[8];
    float *a = (float *)malloc(sizeof(float) * 64 * 128), *b = (float *)malloc(sizeof(float) * 64 * 128);
    float *ref = (float *)malloc(sizeof(float) * 64 * 128), *img = (float *)malloc(sizeof(float) * 64 * 200);
    char long_text[HIGAN_MAX_WORD_LEN + 2];
    higan_cpu best = higan_cpu_detect(), lvl;
    int i, W;
    higan_arena_init(&arena, (size_t)64 << 20);
    higan_tape_init(&tape, &arena, 4096);
    CHECK(higan_model_init(&m, &cfg, 3) == HIGAN_OK, "init tiny deploy model");
    higan_rng_seed(&r, 9);
    higan_style_random(&m, &r, style);
    higan_rng_seed(&r, 9);
    higan_style_random(&m, &r, style2);
    CHECK(memcmp(style, style2, sizeof style) == 0, "same seed, same random style");
    higan_style_random(&m, &r, style2);
    CHECK(higan_generate_word(&m, &tape, "Word", NULL, NULL, 0) == 128, "width query: 'Word' is 128 px");
    W = higan_generate_word(&m, &tape, "Word", style, a, 64 * 128);
    CHECK(W == 128, "generate 'Word': %d", W);
    W = higan_generate_word(&m, &tape, "Word", style, b, 64 * 128);
    CHECK(W == 128 && memcmp(a, b, sizeof(float) * 64 * 128) == 0, "same style and text: the same bytes");
    higan_generate_word(&m, &tape, "Word", style2, b, 64 * 128);
    CHECK(memcmp(a, b, sizeof(float) * 64 * 128) != 0, "another style: another image");
    for (i = 0; i < 64 * 200; ++i) img[i] = (float)sin(0.37 * i) * (i % 200 < 150 ? 1.0f : 0.0f) - (i % 200 >= 150);

    /* CPU levels: scalar is the reference */
    CHECK(higan_cpu_set_level(HIGAN_CPU_SCALAR) == HIGAN_OK, "force scalar");
    higan_generate_word(&m, &tape, "Word", style, ref, 64 * 128);
    CHECK(higan_style_from_image(&m, &tape, img, 200, 4, ref_style) == HIGAN_OK, "style from image (scalar)");
    for (lvl = HIGAN_CPU_AVX2; lvl <= best; lvl = (higan_cpu)(lvl + 1)) {
        char label[128];
        higan_cpu_set_level(lvl);
        higan_generate_word(&m, &tape, "Word", style, b, 64 * 128);
        snprintf(label, sizeof label, "generate at %s vs scalar", higan_cpu_level_name(lvl));
        check_close(label, b, ref, 64 * 128, 1e-5f, 0.0f);
        higan_style_from_image(&m, &tape, img, 200, 4, lvl_style);
        snprintf(label, sizeof label, "style from image at %s vs scalar", higan_cpu_level_name(lvl));
        check_close(label, lvl_style, ref_style, 8, 1e-5f, 1e-5f);
    }
    higan_cpu_set_level(best);
#ifdef _OPENMP
    higan_set_num_threads(1);
    higan_generate_word(&m, &tape, "Word", style, a, 64 * 128);
    higan_set_num_threads(2);
    higan_generate_word(&m, &tape, "Word", style, b, 64 * 128);
    CHECK(memcmp(a, b, sizeof(float) * 64 * 128) == 0, "1 and 2 threads: the same bytes");
#endif

    /* bad input */
    CHECK(higan_generate_word(&m, &tape, "", style, a, 64 * 128) == HIGAN_ERR_ARG && contains(higan_last_error(), "empty"),
          "empty text: %s", higan_last_error());
    CHECK(higan_generate_word(&m, &tape, "h\xC3\xA9llo", style, a, 64 * 256) == HIGAN_ERR_ARG &&
          contains(higan_last_error(), "\xC3\xA9") && contains(higan_last_error(), "position 1"),
          "character outside the alphabet: %s", higan_last_error());
    CHECK(higan_generate_word(&m, &tape, "a`b", style, a, 64 * 128) == HIGAN_ERR_ARG, "the blank '`': %s", higan_last_error());
    memset(long_text, 'a', sizeof long_text - 1);
    long_text[sizeof long_text - 1] = 0;
    CHECK(higan_generate_word(&m, &tape, long_text, style, NULL, 0) == HIGAN_ERR_ARG,
          "%d characters: %s", HIGAN_MAX_WORD_LEN + 1, higan_last_error());
    long_text[HIGAN_MAX_WORD_LEN] = 0;
    CHECK(higan_generate_word(&m, &tape, long_text, style, NULL, 0) == 32 * HIGAN_MAX_WORD_LEN, "%d characters are fine", HIGAN_MAX_WORD_LEN);
    CHECK(higan_generate_word(&m, &tape, "Word", style, a, 64 * 127) == HIGAN_ERR_ARG && contains(higan_last_error(), "needs 8192"),
          "output buffer too small: %s", higan_last_error());
    CHECK(higan_style_from_image(&m, &tape, img, 0, 3, style2) == HIGAN_ERR_ARG, "zero-width reference: %s", higan_last_error());
    CHECK(higan_style_from_image(&m, &tape, img, HIGAN_MAX_IMAGE_WIDTH + 1, 3, style2) == HIGAN_ERR_ARG,
          "huge reference: %s", higan_last_error());
    CHECK(higan_style_from_image(&m, &tape, img, 200, 0, style2) == HIGAN_ERR_ARG, "0 characters: %s", higan_last_error());
    CHECK(higan_style_from_image(&m, &tape, img, 200, HIGAN_MAX_WORD_LEN + 1, style2) == HIGAN_ERR_ARG,
          "too many characters: %s", higan_last_error());
    cfg = tiny_config(HIGAN_NET_BIT(HIGAN_NET_GENERATOR));
    CHECK(higan_model_init(&g_only, &cfg, 3) == HIGAN_OK, "init a Generator-only model");
    CHECK(higan_style_from_image(&g_only, &tape, img, 200, 3, style2) == HIGAN_ERR_ARG &&
          contains(higan_last_error(), "StyleEncoder"), "style without E and B: %s", higan_last_error());
    higan_model_free(&g_only);
    cfg = tiny_config(HIGAN_NET_BIT(HIGAN_NET_DISCRIMINATOR));
    CHECK(higan_model_init(&g_only, &cfg, 3) == HIGAN_OK, "init a Discriminator-only model");
    CHECK(higan_generate_word(&g_only, &tape, "Word", style, a, 64 * 128) == HIGAN_ERR_ARG &&
          contains(higan_last_error(), "no Generator"), "generate without G: %s", higan_last_error());
    higan_model_free(&g_only);
    /* an arena too small: NOMEM with the size needed */
    {
        higan_arena small;
        higan_tape st;
        higan_arena_init(&small, 4096);
        higan_tape_init(&st, &small, 64);
        CHECK(higan_generate_word(&m, &st, "Word", style, a, 64 * 128) == HIGAN_ERR_NOMEM &&
              contains(higan_last_error(), "arena"), "arena too small: %s", higan_last_error());
        higan_tape_free(&st);
        higan_arena_free(&small);
    }
    higan_model_free(&m);
    higan_tape_free(&tape);
    higan_arena_free(&arena);
    free(a); free(b); free(ref); free(img);
}

/* ---- 5. image input ---------------------------------------------------------------------------- */
static void test_image_input(void) {
    unsigned char *px = (unsigned char *)malloc(256 * 128 * 4);
    float *out = (float *)malloc(sizeof(float) * 64 * 512);
    int i, W, ok;
    /* white 256 x 128 RGB with a black square: half size, -1 background, +1 ink */
    memset(px, 255, 256 * 128 * 3);
    for (i = 0; i < 256 * 128; ++i) {
        int y = i / 256, x = i % 256;
        if (y >= 32 && y < 96 && x >= 64 && x < 128) px[3 * i] = px[3 * i + 1] = px[3 * i + 2] = 0;
    }
    CHECK(higan_image_to_input(px, 256, 128, 3, NULL, 0) == 128, "256 x 128 -> width 128 at height 64");
    W = higan_image_to_input(px, 256, 128, 3, out, 64 * 512);
    ok = W == 128;
    for (i = 0; i < 64 * 128 && ok; ++i) {
        int y = i / 128, x = i % 128, ink = y >= 16 && y < 48 && x >= 32 && x < 64;
        ok = out[i] == (ink ? 1.0f : -1.0f);
    }
    CHECK(ok, "gray, halved (area), inverted: white -> -1, black -> +1 exactly");
    /* RGBA fully transparent (black RGB): composited over white -> background */
    memset(px, 0, 16 * 8 * 4);
    W = higan_image_to_input(px, 16, 8, 4, out, 64 * 512);
    ok = W == 128;
    for (i = 0; i < 64 * 128 && ok; ++i) ok = out[i] == -1.0f;
    CHECK(ok, "transparent RGBA -> background; 16 x 8 enlarged (linear) to 128 x 64");
    /* gray + alpha, opaque mid gray 51: 1 - 51/127.5 = 0.6 */
    for (i = 0; i < 10 * 10; ++i) { px[2 * i] = 51; px[2 * i + 1] = 255; }
    W = higan_image_to_input(px, 10, 10, 2, out, 64 * 512);
    CHECK(W == 64 && fabsf(out[0] - 0.6f) < 1e-6f && fabsf(out[64 * 64 - 1] - 0.6f) < 1e-6f, "gray + alpha: 51 -> 0.6");
    CHECK(higan_image_to_input(px, 0, 10, 1, out, 64 * 512) == HIGAN_ERR_ARG, "0-width image: %s", higan_last_error());
    CHECK(higan_image_to_input(px, 10, 0, 1, out, 64 * 512) == HIGAN_ERR_ARG, "0-height image: %s", higan_last_error());
    CHECK(higan_image_to_input(px, 10, 10, 5, out, 64 * 512) == HIGAN_ERR_ARG, "5 channels: %s", higan_last_error());
    CHECK(higan_image_to_input(px, 40000, 10, 1, NULL, 0) == HIGAN_ERR_ARG, "40000 px side: %s", higan_last_error());
    CHECK(higan_image_to_input(px, 30000, 16, 1, NULL, 0) == HIGAN_ERR_ARG, "30000 x 16 (120000 px at height 64): %s", higan_last_error());
    CHECK(higan_image_to_input(px, 10, 10, 1, out, 100) == HIGAN_ERR_ARG, "out too small: %s", higan_last_error());
    CHECK(higan_image_resize(out, 0, 5, out, 5, 5) == HIGAN_ERR_ARG, "resize to 0 rows: %s", higan_last_error());
    free(px);
    free(out);
}

/* ---- 6. the official deploy set: parameter counts and one word ---------------------------------- */
static void test_official(void) {
    higan_model m;
    higan_model_config cfg = higan_model_default_config(HIGAN_NETS_DEPLOY);
    higan_arena arena;
    higan_tape tape;
    higan_rng r;
    float style[32], *img = (float *)malloc(sizeof(float) * 64 * 64);
    int W;
    if (higan_model_init(&m, &cfg, 7) != HIGAN_OK) { CHECK(0, "init official deploy: %s", higan_last_error()); free(img); return; }
    CHECK(higan_model_num_params(&m, HIGAN_NET_GENERATOR) == 3935937, "Generator: %lld parameters (official 3,935,937)",
          (long long)higan_model_num_params(&m, HIGAN_NET_GENERATOR));
    CHECK(higan_model_num_params(&m, HIGAN_NET_STYLE_ENCODER) == 148032, "StyleEncoder: %lld (official 148,032)",
          (long long)higan_model_num_params(&m, HIGAN_NET_STYLE_ENCODER));
    CHECK(higan_model_num_params(&m, HIGAN_NET_STYLE_BACKBONE) == 1617328, "StyleBackbone: %lld (official 1,617,328)",
          (long long)higan_model_num_params(&m, HIGAN_NET_STYLE_BACKBONE));
    CHECK(m.store[HIGAN_STORE_GE].count == 129 + 8 && m.store[HIGAN_STORE_BACKBONE].count == 125,
          "state_dict keys: G+E %d (129 + 8), B %d (125)", m.store[HIGAN_STORE_GE].count, m.store[HIGAN_STORE_BACKBONE].count);
    higan_arena_init(&arena, (size_t)256 << 20);
    higan_tape_init(&tape, &arena, 4096);
    higan_rng_seed(&r, 1);
    higan_style_random(&m, &r, style);
    W = higan_generate_word(&m, &tape, "ab", style, img, 64 * 64);
    CHECK(W == 64, "official G generates 'ab' (64 x 64), arena peak %.1f MB: %s", (double)arena.peak / 1048576.0,
          W < 0 ? higan_last_error() : "");
    higan_tape_free(&tape);
    higan_arena_free(&arena);
    higan_model_free(&m);
    free(img);
}

int main(void) {
    test_round_trip();
    test_load_errors();
    test_pth();
    test_generation();
    test_image_input();
    test_official();
    return check_finish();
}
