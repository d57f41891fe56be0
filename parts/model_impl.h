#ifndef HIGAN_MODEL_IMPL_INCLUDED
#define HIGAN_MODEL_IMPL_INCLUDED
/* ==== MODEL implementation: networks in stores, checkpoints, generation, image input ====== */

static const char *const higan__model_net_names[HIGAN_NET_COUNT] = {
    "Generator", "StyleEncoder", "StyleBackbone", "Discriminator", "PatchDiscriminator",
    "WriterIdentifier", "Recognizer"};
static const int higan__model_net_stores[HIGAN_NET_COUNT] = {
    HIGAN_STORE_GE, HIGAN_STORE_GE, HIGAN_STORE_BACKBONE, HIGAN_STORE_DP, HIGAN_STORE_DP,
    HIGAN_STORE_WID, HIGAN_STORE_OCR};
/* metadata names of the optimizer of each store (the official checkpoint's OPT.G / OPT.D) */
static const char *const higan__model_store_names[HIGAN_STORE_COUNT] = {
    "OPT.G", "OPT.D", "OPT.B", "OPT.W", "OPT.R"};

HIGAN_DEF const char *higan_net_name(int net) {
    return net >= 0 && net < HIGAN_NET_COUNT ? higan__model_net_names[net] : NULL;
}
HIGAN_DEF int higan_net_store(int net) {
    HIGAN_ASSERT(net >= 0 && net < HIGAN_NET_COUNT);
    return higan__model_net_stores[net];
}
static unsigned higan__model_store_nets(int s) {
    unsigned mask = 0;
    int n;
    for (n = 0; n < HIGAN_NET_COUNT; ++n) if (higan__model_net_stores[n] == s) mask |= HIGAN_NET_BIT(n);
    return mask;
}
/* "Generator, StyleBackbone" for a mask */
static void higan__model_list(char *buf, size_t cap, unsigned nets) {
    int n;
    buf[0] = 0;
    for (n = 0; n < HIGAN_NET_COUNT; ++n)
        if (nets & HIGAN_NET_BIT(n))
            snprintf(buf + strlen(buf), cap - strlen(buf), "%s%s", buf[0] ? ", " : "", higan__model_net_names[n]);
    if (!buf[0]) snprintf(buf, cap, "none");
}

HIGAN_DEF higan_model_config higan_model_default_config(unsigned nets) {
    higan_model_config c;
    memset(&c, 0, sizeof c);
    c.nets = nets;
    c.G = higan_generator_default_config();
    c.D = higan_discriminator_default_config(64);
    c.P = higan_discriminator_default_config(32);
    c.B = higan_backbone_default_config();
    c.n_writer = 372;
    c.R = higan_recognizer_default_config();
    return c;
}

/* width of the backbone's output (c4 = min(16 r, max_dim)), the input of E and W */
static int64_t higan__model_backbone_out(const higan_backbone_config *b) {
    int64_t nf = b->resolution;
    int i;
    for (i = 0; i < 4; ++i) nf = 2 * nf < b->max_dim ? 2 * nf : b->max_dim;
    return nf;
}

/* ---- configuration: validation and the key=value metadata ---------------------------------- */
#define HIGAN__MODEL_RANGE(v, lo, hi, what)                                                        \
    do { if ((int64_t)(v) < (int64_t)(lo) || (int64_t)(v) > (int64_t)(hi))                          \
        return higan__error(HIGAN_ERR_ARG, "model config: %s = %lld is outside [%lld, %lld]", what,  \
                            (long long)(v), (long long)(lo), (long long)(hi)); } while (0)
static higan_status higan__model_check_backbone(const higan_backbone_config *b, const char *who) {
    char what[64];
    snprintf(what, sizeof what, "%s resolution", who); HIGAN__MODEL_RANGE(b->resolution, 1, 1024, what);
    snprintf(what, sizeof what, "%s max_dim", who);    HIGAN__MODEL_RANGE(b->max_dim, 1, 4096, what);
    snprintf(what, sizeof what, "%s in_channel", who); HIGAN__MODEL_RANGE(b->in_channel, 1, 4, what);
    if (!(b->dropout >= 0.0f && b->dropout < 1.0f))
        return higan__error(HIGAN_ERR_ARG, "model config: %s dropout = %g is outside [0, 1)", who, (double)b->dropout);
    return HIGAN_OK;
}
static higan_status higan__model_check_config(const higan_model_config *c) {
    higan_status st;
    unsigned n = c->nets;
    if (n == 0 || (n & ~HIGAN_NETS_ALL))
        return higan__error(HIGAN_ERR_ARG, "model config: nets = 0x%x; use HIGAN_NETS_DEPLOY, HIGAN_NETS_ALL "
                            "or HIGAN_NET_BIT(HIGAN_NET_...) values", n);
    if (n & (HIGAN_NET_BIT(HIGAN_NET_GENERATOR) | HIGAN_NET_BIT(HIGAN_NET_STYLE_ENCODER)))
        HIGAN__MODEL_RANGE(c->G.style_dim, 1, 4096, "G.style_dim");
    if (n & HIGAN_NET_BIT(HIGAN_NET_GENERATOR)) {
        HIGAN__MODEL_RANGE(c->G.ch, 1, 512, "G.ch");
        HIGAN__MODEL_RANGE(c->G.embed_dim, 1, 4096, "G.embed_dim");
        HIGAN__MODEL_RANGE(c->G.n_class, HIGAN_ALPHABET_SIZE, HIGAN_ALPHABET_SIZE, "G.n_class (the alphabet size)");
        HIGAN__MODEL_RANGE(c->G.bottom, 1, 16, "G.bottom");
        HIGAN__MODEL_RANGE(c->G.input_nc, 1, 4, "G.input_nc");
    }
    if (n & HIGAN_NET_BIT(HIGAN_NET_DISCRIMINATOR)) {
        HIGAN__MODEL_RANGE(c->D.ch, 1, 512, "D.ch");
        HIGAN__MODEL_RANGE(c->D.input_nc, 1, 4, "D.input_nc");
        if (c->D.resolution != 64 && c->D.resolution != 32)
            return higan__error(HIGAN_ERR_ARG, "model config: D.resolution = %lld; use 64 or 32", (long long)c->D.resolution);
    }
    if (n & HIGAN_NET_BIT(HIGAN_NET_PATCH_DISCRIMINATOR)) {
        HIGAN__MODEL_RANGE(c->P.ch, 1, 512, "P.ch");
        HIGAN__MODEL_RANGE(c->P.input_nc, 1, 4, "P.input_nc");
        if (c->P.resolution != 64 && c->P.resolution != 32)
            return higan__error(HIGAN_ERR_ARG, "model config: P.resolution = %lld; use 32 or 64", (long long)c->P.resolution);
    }
    if (n & (HIGAN_NET_BIT(HIGAN_NET_STYLE_BACKBONE) | HIGAN_NET_BIT(HIGAN_NET_STYLE_ENCODER) |
             HIGAN_NET_BIT(HIGAN_NET_WRITER_IDENTIFIER)))
        if ((st = higan__model_check_backbone(&c->B, "B")) != HIGAN_OK) return st;
    if (n & HIGAN_NET_BIT(HIGAN_NET_WRITER_IDENTIFIER)) HIGAN__MODEL_RANGE(c->n_writer, 1, 1000000, "n_writer");
    if (n & HIGAN_NET_BIT(HIGAN_NET_RECOGNIZER)) {
        if ((st = higan__model_check_backbone(&c->R.cnn, "R.cnn")) != HIGAN_OK) return st;
        HIGAN__MODEL_RANGE(c->R.n_class, HIGAN_ALPHABET_SIZE, HIGAN_ALPHABET_SIZE, "R.n_class (the alphabet size)");
        HIGAN__MODEL_RANGE(c->R.rnn_depth, 0, HIGAN_RECOGNIZER_MAX_DEPTH, "R.rnn_depth");
        if (c->R.rnn_depth > 0 && higan__model_backbone_out(&c->R.cnn) < 2)
            return higan__error(HIGAN_ERR_ARG, "model config: the Recognizer's LSTM needs a CNN output of at least 2 channels");
    }
    return HIGAN_OK;
}

/* The integer fields of a network's configuration, as written in "higan.config.<Network>".
   StyleEncoder's fields (style_dim, in_dim) belong to G and B and are handled apart. */
typedef struct { const char *key; int64_t *p64; int *p32; } higan__model_field;
static int higan__model_fields(higan_model_config *c, int net, higan__model_field *f) {
    int n = 0;
#define HIGAN__F64(k, x) (f[n].key = (k), f[n].p64 = &(x), f[n].p32 = NULL, ++n)
#define HIGAN__F32(k, x) (f[n].key = (k), f[n].p64 = NULL, f[n].p32 = &(x), ++n)
    switch (net) {
    case HIGAN_NET_GENERATOR:
        HIGAN__F64("ch", c->G.ch); HIGAN__F64("style_dim", c->G.style_dim);
        HIGAN__F64("embed_dim", c->G.embed_dim); HIGAN__F64("n_class", c->G.n_class);
        HIGAN__F64("bottom", c->G.bottom); HIGAN__F64("input_nc", c->G.input_nc);
        break;
    case HIGAN_NET_STYLE_BACKBONE:
        HIGAN__F32("resolution", c->B.resolution); HIGAN__F32("max_dim", c->B.max_dim);
        HIGAN__F32("in_channel", c->B.in_channel);
        break;
    case HIGAN_NET_DISCRIMINATOR:
        HIGAN__F64("ch", c->D.ch); HIGAN__F64("resolution", c->D.resolution); HIGAN__F64("input_nc", c->D.input_nc);
        break;
    case HIGAN_NET_PATCH_DISCRIMINATOR:
        HIGAN__F64("ch", c->P.ch); HIGAN__F64("resolution", c->P.resolution); HIGAN__F64("input_nc", c->P.input_nc);
        break;
    case HIGAN_NET_WRITER_IDENTIFIER:
        HIGAN__F64("n_writer", c->n_writer);
        break;
    case HIGAN_NET_RECOGNIZER:
        HIGAN__F32("resolution", c->R.cnn.resolution); HIGAN__F32("max_dim", c->R.cnn.max_dim);
        HIGAN__F32("in_channel", c->R.cnn.in_channel); HIGAN__F32("n_class", c->R.n_class);
        HIGAN__F32("rnn_depth", c->R.rnn_depth);
        break;
    default: break;
    }
#undef HIGAN__F64
#undef HIGAN__F32
    return n;
}
static int64_t higan__model_field_get(const higan__model_field *f) { return f->p64 ? *f->p64 : (int64_t)*f->p32; }

/* "ch=64 style_dim=32 ..." */
static void higan__model_config_string(const higan_model_config *cfg, int net, char *buf, size_t cap) {
    higan_model_config c = *cfg;
    higan__model_field f[8];
    int i, n = higan__model_fields(&c, net, f);
    buf[0] = 0;
    for (i = 0; i < n; ++i)
        snprintf(buf + strlen(buf), cap - strlen(buf), "%s%s=%lld", i ? " " : "", f[i].key,
                 (long long)higan__model_field_get(&f[i]));
    if (net == HIGAN_NET_STYLE_ENCODER)
        snprintf(buf, cap, "style_dim=%lld in_dim=%lld", (long long)c.G.style_dim,
                 (long long)higan__model_backbone_out(&c.B));
    else if (net == HIGAN_NET_WRITER_IDENTIFIER)
        snprintf(buf + strlen(buf), cap - strlen(buf), " in_dim=%lld", (long long)higan__model_backbone_out(&c.B));
    else if (net == HIGAN_NET_STYLE_BACKBONE)
        snprintf(buf + strlen(buf), cap - strlen(buf), " dropout=%.9g", (double)c.B.dropout);
    else if (net == HIGAN_NET_RECOGNIZER)
        snprintf(buf + strlen(buf), cap - strlen(buf), " dropout=%.9g", (double)c.R.cnn.dropout);
}
/* Value of key in a "k=v k=v" list; 1 if found. */
static int higan__model_kv(const char *s, const char *key, double *v) {
    size_t kl = strlen(key);
    while (*s) {
        while (*s == ' ') ++s;
        if (!strncmp(s, key, kl) && s[kl] == '=') {
            char *end;
            *v = strtod(s + kl + 1, &end);
            return end != s + kl + 1 && (*end == ' ' || *end == 0);
        }
        while (*s && *s != ' ') ++s;
    }
    return 0;
}
static higan_status higan__model_kv_int(const char *s, const char *meta, const char *key, int64_t *out) {
    double v;
    if (!higan__model_kv(s, key, &v))
        return higan__error(HIGAN_ERR_FORMAT, "metadata %s = '%.200s' has no number '%s='", meta, s, key);
    if (!(v >= -1e9 && v <= 1e9) || v != floor(v))
        return higan__error(HIGAN_ERR_FORMAT, "metadata %s: %s = %g is not an integer", meta, key, v);
    *out = (int64_t)v;
    return HIGAN_OK;
}

/* Configuration of the networks in want as the checkpoint's metadata gives it (the
   official configuration where it is absent); has gets the networks that had metadata. */
static higan_status higan__model_config_from_meta(const higan_safetensors *st, unsigned want,
                                                  higan_model_config *fc, unsigned *has) {
    char key[96];
    int net, i, n;
    double dv;
    int64_t v;
    higan_status rc;
    *fc = higan_model_default_config(want);
    *has = 0;
    for (net = 0; net < HIGAN_NET_COUNT; ++net) {
        higan__model_field f[8];
        const char *s;
        if (!(want & HIGAN_NET_BIT(net)) || net == HIGAN_NET_STYLE_ENCODER) continue;
        snprintf(key, sizeof key, "higan.config.%s", higan__model_net_names[net]);
        if (!(s = higan_safetensors_meta(st, key))) continue;
        *has |= HIGAN_NET_BIT(net);
        n = higan__model_fields(fc, net, f);
        for (i = 0; i < n; ++i) {
            if ((rc = higan__model_kv_int(s, key, f[i].key, &v)) != HIGAN_OK) return rc;
            if (f[i].p64) *f[i].p64 = v; else *f[i].p32 = (int)v;
        }
        if (net == HIGAN_NET_STYLE_BACKBONE && higan__model_kv(s, "dropout", &dv)) fc->B.dropout = (float)dv;
        if (net == HIGAN_NET_RECOGNIZER && higan__model_kv(s, "dropout", &dv)) fc->R.cnn.dropout = (float)dv;
    }
    /* StyleEncoder: its style_dim is G's, its in_dim the backbone's output */
    if (want & HIGAN_NET_BIT(HIGAN_NET_STYLE_ENCODER)) {
        const char *s = higan_safetensors_meta(st, "higan.config.StyleEncoder");
        if (s) {
            *has |= HIGAN_NET_BIT(HIGAN_NET_STYLE_ENCODER);
            if ((rc = higan__model_kv_int(s, "higan.config.StyleEncoder", "style_dim", &v)) != HIGAN_OK) return rc;
            if ((*has & HIGAN_NET_BIT(HIGAN_NET_GENERATOR)) && v != fc->G.style_dim)
                return higan__error(HIGAN_ERR_FORMAT, "metadata disagrees: StyleEncoder style_dim %lld, Generator "
                                    "style_dim %lld", (long long)v, (long long)fc->G.style_dim);
            fc->G.style_dim = v;
        }
    }
    for (i = 0; i < 2; ++i) {   /* StyleEncoder and WriterIdentifier read the backbone's output */
        const char *s;
        net = i == 0 ? HIGAN_NET_STYLE_ENCODER : HIGAN_NET_WRITER_IDENTIFIER;
        snprintf(key, sizeof key, "higan.config.%s", higan__model_net_names[net]);
        if (!(*has & HIGAN_NET_BIT(net)) || !(s = higan_safetensors_meta(st, key))) continue;
        if ((rc = higan__model_kv_int(s, key, "in_dim", &v)) != HIGAN_OK) return rc;
        if (v != higan__model_backbone_out(&fc->B))
            return higan__error(HIGAN_ERR_FORMAT, "metadata disagrees: %s in_dim %lld, but the StyleBackbone "
                                "configuration gives %lld", higan__model_net_names[net], (long long)v,
                                (long long)higan__model_backbone_out(&fc->B));
    }
    return HIGAN_OK;
}

/* The file's configuration (networks in has) against an initialised model's. */
static higan_status higan__model_config_compare(const higan_model *m, const higan_model_config *fc,
                                                unsigned has, const char *label) {
    higan_model_config a = *fc, b = m->cfg;
    int net, i, n;
    for (net = 0; net < HIGAN_NET_COUNT; ++net) {
        higan__model_field fa[8], fb[8];
        if (!(has & HIGAN_NET_BIT(net))) continue;
        if (net == HIGAN_NET_STYLE_ENCODER) {
            if (a.G.style_dim != b.G.style_dim)
                return higan__error(HIGAN_ERR_FORMAT, "%s: StyleEncoder style_dim is %lld in the file but %lld in "
                                    "the model", label, (long long)a.G.style_dim, (long long)b.G.style_dim);
        }
        if (net == HIGAN_NET_STYLE_ENCODER || net == HIGAN_NET_WRITER_IDENTIFIER) {
            int64_t ia = higan__model_backbone_out(&a.B), ib = higan__model_backbone_out(&b.B);
            if (ia != ib)
                return higan__error(HIGAN_ERR_FORMAT, "%s: %s in_dim is %lld in the file but %lld in the model",
                                    label, higan__model_net_names[net], (long long)ia, (long long)ib);
        }
        n = higan__model_fields(&a, net, fa);
        higan__model_fields(&b, net, fb);
        for (i = 0; i < n; ++i) {
            int64_t va = higan__model_field_get(&fa[i]), vb = higan__model_field_get(&fb[i]);
            if (va != vb)
                return higan__error(HIGAN_ERR_FORMAT, "%s: %s %s is %lld in the file but %lld in the model "
                                    "(initialise the model with the file's configuration, or load into a "
                                    "zeroed model)", label, higan__model_net_names[net], fa[i].key,
                                    (long long)va, (long long)vb);
        }
    }
    return HIGAN_OK;
}

/* ---- building and initialising ---------------------------------------------------------------- */
static higan_status higan__model_build(higan_model *m, const higan_model_config *cfg) {
    higan_status st;
    unsigned n = cfg->nets;
    int64_t bout;
    int s;
    memset(m, 0, sizeof *m);
    if ((st = higan__model_check_config(cfg)) != HIGAN_OK) return st;
    m->cfg = *cfg;
    for (s = 0; s < HIGAN_STORE_COUNT; ++s) higan_params_init(&m->store[s]);
    bout = higan__model_backbone_out(&cfg->B);
    if (n & HIGAN_NET_BIT(HIGAN_NET_GENERATOR))
        higan_generator_register(&m->G, &m->store[HIGAN_STORE_GE], "Generator", &m->cfg.G);
    if (n & HIGAN_NET_BIT(HIGAN_NET_STYLE_ENCODER))
        higan_style_encoder_register(&m->E, &m->store[HIGAN_STORE_GE], "StyleEncoder", bout, cfg->G.style_dim);
    if (n & HIGAN_NET_BIT(HIGAN_NET_STYLE_BACKBONE))
        higan_style_backbone_register(&m->B, &m->store[HIGAN_STORE_BACKBONE], "StyleBackbone", &m->cfg.B);
    if (n & HIGAN_NET_BIT(HIGAN_NET_DISCRIMINATOR))
        higan_discriminator_register(&m->D, &m->store[HIGAN_STORE_DP], "Discriminator", &m->cfg.D);
    if (n & HIGAN_NET_BIT(HIGAN_NET_PATCH_DISCRIMINATOR))
        higan_discriminator_register(&m->P, &m->store[HIGAN_STORE_DP], "PatchDiscriminator", &m->cfg.P);
    if (n & HIGAN_NET_BIT(HIGAN_NET_WRITER_IDENTIFIER))
        higan_writer_identifier_register(&m->W, &m->store[HIGAN_STORE_WID], "WriterIdentifier", bout, cfg->n_writer);
    if (n & HIGAN_NET_BIT(HIGAN_NET_RECOGNIZER))
        higan_recognizer_register(&m->R, &m->store[HIGAN_STORE_OCR], "Recognizer", &m->cfg.R);
    for (s = 0; s < HIGAN_STORE_COUNT; ++s) {
        if (m->store[s].count == 0) continue;
        if ((st = higan_params_alloc(&m->store[s])) != HIGAN_OK) { higan_model_free(m); return st; }
    }
    /* pretrained beforehand and frozen during GAN training (gradients still flow through) */
    m->store[HIGAN_STORE_BACKBONE].frozen = 1;
    m->store[HIGAN_STORE_WID].frozen = 1;
    m->store[HIGAN_STORE_OCR].frozen = 1;
    m->initialised = 1;
    return HIGAN_OK;
}

HIGAN_DEF higan_status higan_model_init(higan_model *m, const higan_model_config *cfg, uint64_t seed) {
    higan_status st;
    higan_rng r;
    int net;
    if (!m || !cfg) return higan__error(HIGAN_ERR_ARG, "model_init: NULL argument");
    if ((st = higan__model_build(m, cfg)) != HIGAN_OK) return st;
    for (net = 0; net < HIGAN_NET_COUNT; ++net) {
        if (!(cfg->nets & HIGAN_NET_BIT(net))) continue;
        /* one stream per network: a network's init does not depend on the others present */
        higan_rng_seed(&r, seed ^ (0x9E3779B97F4A7C15ull * (uint64_t)(net + 1)));
        switch (net) {
        case HIGAN_NET_GENERATOR: higan_generator_init(&m->G, &r); break;
        case HIGAN_NET_STYLE_ENCODER: higan_style_encoder_init(&m->E, &r, HIGAN_INIT_TORCH); break;
        case HIGAN_NET_STYLE_BACKBONE: higan_style_backbone_init(&m->B, &r, HIGAN_INIT_N02); break;
        case HIGAN_NET_DISCRIMINATOR: higan_discriminator_init(&m->D, &r); break;
        case HIGAN_NET_PATCH_DISCRIMINATOR: higan_discriminator_init(&m->P, &r); break;
        case HIGAN_NET_WRITER_IDENTIFIER: higan_writer_identifier_init(&m->W, &r, HIGAN_INIT_TORCH); break;
        default: higan_recognizer_init(&m->R, &r, HIGAN_INIT_TORCH); break;
        }
    }
    return HIGAN_OK;
}

HIGAN_DEF void higan_model_free(higan_model *m) {
    int s;
    if (!m) return;
    for (s = 0; s < HIGAN_STORE_COUNT; ++s) higan_params_free(&m->store[s]);
    memset(m, 0, sizeof *m);
}

HIGAN_DEF int64_t higan_model_num_params(const higan_model *m, int net) {
    const higan_params *p;
    size_t l;
    int64_t total = 0;
    int i;
    if (!m || !m->initialised || net < 0 || net >= HIGAN_NET_COUNT || !(m->cfg.nets & HIGAN_NET_BIT(net))) return 0;
    p = &m->store[higan__model_net_stores[net]];
    l = strlen(higan__model_net_names[net]);
    for (i = 0; i < p->count; ++i)
        if (p->entries[i].kind == HIGAN_PARAM && !strncmp(p->entries[i].name, higan__model_net_names[net], l) &&
            p->entries[i].name[l] == '.')
            total += p->entries[i].numel;
    return total;
}

/* ---- save ------------------------------------------------------------------------------------- */
/* Renames metadata key from to to in a writer (params_add_to_writer writes "adam_step"). */
static higan_status higan__model_meta_rename(higan_safetensors_writer *w, const char *from, const char *to) {
    int i;
    for (i = 0; i < w->meta_count; ++i)
        if (!strcmp(w->meta_keys[i], from)) {
            size_t n = strlen(to) + 1;
            char *k = (char *)HIGAN_MALLOC(n);
            if (!k) return higan__error(HIGAN_ERR_NOMEM, "model_save: out of memory");
            memcpy(k, to, n);
            HIGAN_FREE(w->meta_keys[i]);
            w->meta_keys[i] = k;
        }
    return HIGAN_OK;
}

HIGAN_DEF higan_status higan_model_save(const higan_model *m, const char *path,
                                        const higan_adam *const *opts) {
    higan_safetensors_writer w;
    higan_status st = HIGAN_OK;
    char key[96], val[512];
    unsigned cfg_nets;
    int net, s;
    if (!m || !path) return higan__error(HIGAN_ERR_ARG, "model_save: NULL argument");
    if (!m->initialised) return higan__error(HIGAN_ERR_ARG, "model_save: the model is not initialised");
    higan_safetensors_writer_init(&w);
    higan__model_list(val, sizeof val, m->cfg.nets);
    st = higan_safetensors_writer_meta(&w, "higan.version", HIGAN_VERSION_STRING);
    if (st == HIGAN_OK) st = higan_safetensors_writer_meta(&w, "higan.networks", val);
    if (st == HIGAN_OK) st = higan_safetensors_writer_meta(&w, "higan.alphabet", HIGAN_ALPHABET_STRING);
    /* the backbone's configuration also fixes the input width of E and W */
    cfg_nets = m->cfg.nets;
    if (cfg_nets & (HIGAN_NET_BIT(HIGAN_NET_STYLE_ENCODER) | HIGAN_NET_BIT(HIGAN_NET_WRITER_IDENTIFIER)))
        cfg_nets |= HIGAN_NET_BIT(HIGAN_NET_STYLE_BACKBONE);
    for (net = 0; net < HIGAN_NET_COUNT && st == HIGAN_OK; ++net) {
        if (!(cfg_nets & HIGAN_NET_BIT(net))) continue;
        snprintf(key, sizeof key, "higan.config.%s", higan__model_net_names[net]);
        higan__model_config_string(&m->cfg, net, val, sizeof val);
        st = higan_safetensors_writer_meta(&w, key, val);
    }
    for (s = 0; s < HIGAN_STORE_COUNT && st == HIGAN_OK; ++s) {
        const higan_adam *opt = opts ? opts[s] : NULL;
        if (m->store[s].count == 0) continue;
        st = higan_params_add_to_writer(&m->store[s], &w, "", opt);
        if (st == HIGAN_OK && opt) {
            snprintf(key, sizeof key, "%s.adam_step", higan__model_store_names[s]);
            st = higan__model_meta_rename(&w, "adam_step", key);
            snprintf(key, sizeof key, "%s.adam_hparams", higan__model_store_names[s]);
            if (st == HIGAN_OK) st = higan__model_meta_rename(&w, "adam_hparams", key);
        }
    }
    if (st == HIGAN_OK) st = higan_safetensors_writer_save(&w, path);
    higan_safetensors_writer_free(&w);
    return st;
}

/* ---- load ------------------------------------------------------------------------------------- */
static int higan__model_has_prefix(const char *name, int net) {
    size_t l = strlen(higan__model_net_names[net]);
    return !strncmp(name, higan__model_net_names[net], l) && name[l] == '.';
}

/* Loads store s from the tensors of st that belong to the networks in nets (a view of st). */
static higan_status higan__model_load_store(higan_model *m, const higan_safetensors *st, int s, unsigned nets,
                                            higan_adam *opt, const char *label) {
    higan_safetensors view;
    char step_key[] = "adam_step", opt_key[64], *keys[1], *values[1];
    const char *step;
    higan_status rc;
    int i, net;
    memset(&view, 0, sizeof view);
    view.data = st->data;
    view.tensors = (higan_st_tensor *)HIGAN_MALLOC(sizeof(higan_st_tensor) * (size_t)(st->count > 0 ? st->count : 1));
    if (!view.tensors) return higan__error(HIGAN_ERR_NOMEM, "model_load: out of memory");
    for (i = 0; i < st->count; ++i)
        for (net = 0; net < HIGAN_NET_COUNT; ++net)
            if ((nets & HIGAN_NET_BIT(net)) && higan__model_has_prefix(st->tensors[i].name, net)) {
                view.tensors[view.count++] = st->tensors[i];
                break;
            }
    snprintf(opt_key, sizeof opt_key, "%s.adam_step", higan__model_store_names[s]);
    step = opt ? higan_safetensors_meta(st, opt_key) : NULL;
    if (step) {   /* higan_params_load reads the step as "adam_step" */
        keys[0] = step_key;
        values[0] = (char *)step;
        view.meta_keys = keys;
        view.meta_values = values;
        view.meta_count = 1;
    }
    rc = higan_params_load(&m->store[s], &view, "", step ? opt : NULL);
    HIGAN_FREE(view.tensors);
    if (rc != HIGAN_OK) {
        char msg[1024];
        const char *e = higan_last_error(), *skip = "params_load (prefix ''): ";
        if (!strncmp(e, skip, strlen(skip))) e += strlen(skip);
        snprintf(msg, sizeof msg, "%s", e);
        return higan__error(rc, "%s: %s", label, msg);
    }
    m->opt_loaded[s] = step != NULL;
    return HIGAN_OK;
}

static higan_status higan__model_load(higan_model *m, const higan_safetensors *st, unsigned nets,
                                      higan_adam *opts, const char *label) {
    higan_model_config fc;
    higan_status rc;
    unsigned present = 0, want, has;
    char list_a[256], list_b[256];
    const char *alpha;
    int i, net, s, built = 0;
    if (nets & ~HIGAN_NETS_ALL) return higan__error(HIGAN_ERR_ARG, "model_load: nets = 0x%x is not a network mask", nets);
    for (i = 0; i < st->count; ++i)
        for (net = 0; net < HIGAN_NET_COUNT; ++net)
            if (higan__model_has_prefix(st->tensors[i].name, net)) present |= HIGAN_NET_BIT(net);
    higan__model_list(list_b, sizeof list_b, present);
    if (m->initialised) {
        want = nets ? nets : m->cfg.nets;
        if (want & ~m->cfg.nets) {
            higan__model_list(list_a, sizeof list_a, want & ~m->cfg.nets);
            return higan__error(HIGAN_ERR_ARG, "%s: the model has no %s (initialise it with those networks)", label, list_a);
        }
        for (s = 0; s < HIGAN_STORE_COUNT; ++s) {
            unsigned in_model = m->cfg.nets & higan__model_store_nets(s);
            if ((want & in_model) && (want & in_model) != in_model) {
                higan__model_list(list_a, sizeof list_a, in_model);
                return higan__error(HIGAN_ERR_ARG, "%s: %s share one parameter store and load together", label, list_a);
            }
        }
    } else {
        want = nets ? nets : present;
        if (!want)
            return higan__error(HIGAN_ERR_FORMAT, "%s holds no HiGAN+ network (no tensor named Generator.*, "
                                "StyleEncoder.*, StyleBackbone.*, Discriminator.*, PatchDiscriminator.*, "
                                "WriterIdentifier.* or Recognizer.*)", label);
    }
    if (want & ~present) {
        higan__model_list(list_a, sizeof list_a, want & ~present);
        return higan__error(HIGAN_ERR_FORMAT, "%s has no %s (it holds: %s)", label, list_a, list_b);
    }
    alpha = higan_safetensors_meta(st, "higan.alphabet");
    if (alpha && strcmp(alpha, HIGAN_ALPHABET_STRING) != 0)
        return higan__error(HIGAN_ERR_FORMAT, "%s was trained with another alphabet ('%.100s'), not HiGAN+'s '%s'",
                            label, alpha, HIGAN_ALPHABET_STRING);
    if ((rc = higan__model_config_from_meta(st, want, &fc, &has)) != HIGAN_OK) {
        char msg[1024];
        snprintf(msg, sizeof msg, "%s", higan_last_error());
        return higan__error(rc, "%s: %s", label, msg);
    }
    if (m->initialised) {
        if ((rc = higan__model_config_compare(m, &fc, has, label)) != HIGAN_OK) return rc;
    } else {
        if ((rc = higan__model_build(m, &fc)) != HIGAN_OK) {
            char msg[1024];
            snprintf(msg, sizeof msg, "%s", higan_last_error());
            return higan__error(rc, "%s: %s", label, msg);
        }
        built = 1;
    }
    for (s = 0; s < HIGAN_STORE_COUNT; ++s) m->opt_loaded[s] = 0;
    for (s = 0; s < HIGAN_STORE_COUNT; ++s) {
        unsigned sn = want & higan__model_store_nets(s);
        if (!sn) continue;
        if ((rc = higan__model_load_store(m, st, s, sn, opts ? &opts[s] : NULL, label)) != HIGAN_OK) {
            if (built) higan_model_free(m);
            return rc;
        }
    }
    return HIGAN_OK;
}

HIGAN_DEF higan_status higan_model_load_safetensors(higan_model *m, const higan_safetensors *st,
                                                    unsigned nets, higan_adam *opts) {
    if (!m || !st) return higan__error(HIGAN_ERR_ARG, "model_load: NULL argument");
    return higan__model_load(m, st, nets, opts, "checkpoint");
}

HIGAN_DEF higan_status higan_model_load(higan_model *m, const char *path, unsigned nets, higan_adam *opts) {
    higan_safetensors st;
    higan_status rc;
    char label[300];
    if (!m || !path) return higan__error(HIGAN_ERR_ARG, "model_load: NULL argument");
    if ((rc = higan_safetensors_load(&st, path)) != HIGAN_OK) return rc;
    snprintf(label, sizeof label, "checkpoint '%.256s'", path);
    rc = higan__model_load(m, &st, nets, opts, label);
    higan_safetensors_free(&st);
    return rc;
}

/* ---- image resampling (cv2.resize INTER_AREA / INTER_LINEAR, per axis) ------------------------ */
typedef struct {
    int64_t *first;   /* [dsize + 1]: taps of destination d are first[d] .. first[d+1]-1 */
    int64_t *src;
    float *w;
} higan__taps;
static void higan__taps_free(higan__taps *t) { HIGAN_FREE(t->first); HIGAN_FREE(t->src); HIGAN_FREE(t->w); }
static higan_status higan__taps_make(higan__taps *t, int64_t ssize, int64_t dsize) {
    double scale = (double)ssize / (double)dsize;
    int64_t cap = ssize + 2 * dsize + 2, k = 0, d;
    t->first = (int64_t *)HIGAN_MALLOC(sizeof(int64_t) * (size_t)(dsize + 1));
    t->src = (int64_t *)HIGAN_MALLOC(sizeof(int64_t) * (size_t)cap);
    t->w = (float *)HIGAN_MALLOC(sizeof(float) * (size_t)cap);
    if (!t->first || !t->src || !t->w) { higan__taps_free(t); return higan__error(HIGAN_ERR_NOMEM, "image_resize: out of memory"); }
    for (d = 0; d < dsize; ++d) {
        t->first[d] = k;
        if (dsize < ssize) {   /* INTER_AREA: OpenCV's computeResizeAreaTab */
            double fs1 = (double)d * scale, fs2 = fs1 + scale;
            double cell = scale < (double)ssize - fs1 ? scale : (double)ssize - fs1;
            int64_t s1 = (int64_t)ceil(fs1), s2 = (int64_t)floor(fs2), sx;
            if (s2 > ssize - 1) s2 = ssize - 1;
            if (s1 > s2) s1 = s2;
            if ((double)s1 - fs1 > 1e-3) { t->src[k] = s1 - 1; t->w[k++] = (float)(((double)s1 - fs1) / cell); }
            for (sx = s1; sx < s2; ++sx) { t->src[k] = sx; t->w[k++] = (float)(1.0 / cell); }
            if (fs2 - (double)s2 > 1e-3) {
                double part = fs2 - (double)s2 < 1.0 ? fs2 - (double)s2 : 1.0;
                t->src[k] = s2; t->w[k++] = (float)((part < cell ? part : cell) / cell);
            }
        } else {               /* INTER_LINEAR: half-pixel centres, clamped at the edges */
            float fx = (float)(((double)d + 0.5) * scale - 0.5);
            int64_t sx = (int64_t)floor(fx);
            fx -= (float)sx;
            if (sx < 0) { fx = 0.0f; sx = 0; }
            if (sx >= ssize - 1) { fx = 0.0f; sx = ssize - 1; }
            t->src[k] = sx; t->w[k++] = 1.0f - fx;
            if (fx != 0.0f) { t->src[k] = sx + 1; t->w[k++] = fx; }
        }
    }
    t->first[dsize] = k;
    return HIGAN_OK;
}
/* a source image: floats, or 8-bit pixels converted to gray on the fly */
typedef struct { const float *f; const unsigned char *u8; int channels; int64_t stride; } higan__img_src;
static double higan__img_at(const higan__img_src *s, int64_t y, int64_t x) {
    const unsigned char *p;
    double g, a;
    if (s->f) return s->f[y * s->stride + x];
    p = s->u8 + (y * s->stride + x) * s->channels;
    switch (s->channels) {
    case 1: return p[0];
    case 2: a = p[1] / 255.0; return p[0] * a + 255.0 * (1.0 - a);          /* over white */
    case 3: return 0.299 * p[0] + 0.587 * p[1] + 0.114 * p[2];
    default:
        g = 0.299 * p[0] + 0.587 * p[1] + 0.114 * p[2];
        a = p[3] / 255.0;
        return g * a + 255.0 * (1.0 - a);
    }
}
static higan_status higan__resize(float *y, int64_t out_h, int64_t out_w, const higan__img_src *x,
                                  int64_t in_h, int64_t in_w) {
    higan__taps ty, tx;
    higan_status st;
    int64_t dy, dx, i, j;
    if (out_h < 1 || out_w < 1 || in_h < 1 || in_w < 1)
        return higan__error(HIGAN_ERR_ARG, "image_resize: empty image (%lld x %lld to %lld x %lld)",
                            (long long)in_h, (long long)in_w, (long long)out_h, (long long)out_w);
    if ((st = higan__taps_make(&ty, in_h, out_h)) != HIGAN_OK) return st;
    if ((st = higan__taps_make(&tx, in_w, out_w)) != HIGAN_OK) { higan__taps_free(&ty); return st; }
    for (dy = 0; dy < out_h; ++dy)
        for (dx = 0; dx < out_w; ++dx) {
            double acc = 0.0;
            for (i = ty.first[dy]; i < ty.first[dy + 1]; ++i) {
                double row = 0.0;
                for (j = tx.first[dx]; j < tx.first[dx + 1]; ++j)
                    row += (double)tx.w[j] * higan__img_at(x, ty.src[i], tx.src[j]);
                acc += (double)ty.w[i] * row;
            }
            y[dy * out_w + dx] = (float)acc;
        }
    higan__taps_free(&ty);
    higan__taps_free(&tx);
    return HIGAN_OK;
}
HIGAN_DEF higan_status higan_image_resize(float *y, int64_t out_h, int64_t out_w, const float *x,
                                          int64_t in_h, int64_t in_w) {
    higan__img_src src;
    if (!y || !x) return higan__error(HIGAN_ERR_ARG, "image_resize: NULL argument");
    src.f = x; src.u8 = NULL; src.channels = 1; src.stride = in_w;
    return higan__resize(y, out_h, out_w, &src, in_h, in_w);
}

HIGAN_DEF int higan_image_to_input(const unsigned char *pixels, int w, int h, int channels,
                                   float *out, int64_t out_cap) {
    higan__img_src src;
    higan_status st;
    int64_t W, i;
    if (!pixels && out) return higan__error(HIGAN_ERR_ARG, "image_to_input: NULL pixels");
    if (w < 1 || h < 1) return higan__error(HIGAN_ERR_ARG, "image_to_input: empty image (%d x %d pixels)", w, h);
    if (w > 32768 || h > 32768)
        return higan__error(HIGAN_ERR_ARG, "image_to_input: %d x %d pixels is too large (at most 32768 a side)", w, h);
    if (channels < 1 || channels > 4)
        return higan__error(HIGAN_ERR_ARG, "image_to_input: %d channels (use 1 gray, 2 gray+alpha, 3 RGB, 4 RGBA)", channels);
    /* official ImageDataset: new_w = int(w * (64 / h)) */
    W = (int64_t)floor((double)w * ((double)HIGAN_IMAGE_HEIGHT / (double)h));
    if (W < 1) W = 1;
    if (W > HIGAN_MAX_IMAGE_WIDTH)
        return higan__error(HIGAN_ERR_ARG, "image_to_input: a %d x %d image is %lld pixels wide at height 64 "
                            "(at most %d): crop it to one word", w, h, (long long)W, HIGAN_MAX_IMAGE_WIDTH);
    if (!out) return (int)W;
    if (out_cap < HIGAN_IMAGE_HEIGHT * W)
        return higan__error(HIGAN_ERR_ARG, "image_to_input: out has %lld floats, needs %lld (64 x %lld)",
                            (long long)out_cap, (long long)(HIGAN_IMAGE_HEIGHT * W), (long long)W);
    src.f = NULL; src.u8 = pixels; src.channels = channels; src.stride = w;
    if ((st = higan__resize(out, HIGAN_IMAGE_HEIGHT, W, &src, h, w)) != HIGAN_OK) return st;
    /* invert (ink bright) and ToTensor + Normalize(0.5, 0.5): (255 - g) / 127.5 - 1 */
    for (i = 0; i < HIGAN_IMAGE_HEIGHT * W; ++i) out[i] = (float)(1.0 - (double)out[i] / 127.5);
    return (int)W;
}

/* ---- generation ------------------------------------------------------------------------------- */
HIGAN_DEF void higan_style_random(const higan_model *m, higan_rng *rng, float *style_out) {
    HIGAN_ASSERT(m && m->initialised && rng && style_out);
    higan_rng_fill_normal(rng, style_out, m->cfg.G.style_dim, 0.0f, 1.0f);
}

HIGAN_DEF int higan_generate_word(higan_model *m, higan_tape *t, const char *text, const float *style,
                                  float *out, int64_t out_cap) {
    int labels[HIGAN_MAX_WORD_LEN], n, lens[1];
    int64_t H, W, C, zs[2];
    size_t mark;
    higan_var *z, *y;
    higan_status rc = HIGAN_OK;
    if (!m || !m->initialised || !(m->cfg.nets & HIGAN_NET_BIT(HIGAN_NET_GENERATOR)))
        return higan__error(HIGAN_ERR_ARG, "generate_word: the model has no Generator");
    if ((n = higan_text_encode(text, labels, HIGAN_MAX_WORD_LEN)) < 0) return n;
    H = 16 * m->cfg.G.bottom;
    W = 8 * m->cfg.G.bottom * n;
    C = m->cfg.G.input_nc;
    if (!out) return (int)W;
    if (!t || !style) return higan__error(HIGAN_ERR_ARG, "generate_word: NULL tape or style");
    if (out_cap < C * H * W)
        return higan__error(HIGAN_ERR_ARG, "generate_word: out has %lld floats, '%s' needs %lld (%lld x %lld x %lld)",
                            (long long)out_cap, text, (long long)(C * H * W), (long long)C, (long long)H, (long long)W);
    mark = higan_arena_mark(t->arena);
    higan_no_grad_begin(t);
    zs[0] = 1; zs[1] = m->cfg.G.style_dim;
    z = higan_var_new(t, 2, zs);
    if (z) memcpy(z->data, style, sizeof(float) * (size_t)zs[1]);
    lens[0] = n;
    y = z ? higan_generator_forward(t, &m->G, z, labels, lens, n, 0) : NULL;
    higan_no_grad_end(t);
    if (y) memcpy(out, y->data, sizeof(float) * (size_t)(C * H * W));
    else rc = higan_tape_status(t) != HIGAN_OK ? HIGAN_ERR_NOMEM : HIGAN_ERR_ARG;   /* message already set */
    higan_arena_release(t->arena, mark);
    return rc != HIGAN_OK ? rc : (int)W;
}

HIGAN_DEF higan_status higan_style_from_image(higan_model *m, higan_tape *t, const float *img, int64_t W,
                                              int n_chars, float *style_out) {
    const unsigned need = HIGAN_NET_BIT(HIGAN_NET_STYLE_BACKBONE) | HIGAN_NET_BIT(HIGAN_NET_STYLE_ENCODER);
    int64_t xs[4];
    int lens[1];
    size_t mark;
    higan_var *x, *feat, *mu;
    higan_status rc = HIGAN_OK;
    if (!m || !m->initialised || (m->cfg.nets & need) != need)
        return higan__error(HIGAN_ERR_ARG, "style_from_image: the model needs a StyleBackbone and a StyleEncoder");
    if (m->cfg.B.in_channel != 1)
        return higan__error(HIGAN_ERR_ARG, "style_from_image: the StyleBackbone takes %d channels, not 1", m->cfg.B.in_channel);
    if (!t || !img || !style_out) return higan__error(HIGAN_ERR_ARG, "style_from_image: NULL argument");
    if (W < 1 || W > HIGAN_MAX_IMAGE_WIDTH)
        return higan__error(HIGAN_ERR_ARG, "style_from_image: image width %lld is outside 1..%d", (long long)W,
                            HIGAN_MAX_IMAGE_WIDTH);
    if (n_chars < 1 || n_chars > HIGAN_MAX_WORD_LEN)
        return higan__error(HIGAN_ERR_ARG, "style_from_image: %d characters; the reference must show 1..%d",
                            n_chars, HIGAN_MAX_WORD_LEN);
    mark = higan_arena_mark(t->arena);
    higan_no_grad_begin(t);
    xs[0] = 1; xs[1] = 1; xs[2] = HIGAN_IMAGE_HEIGHT; xs[3] = (int64_t)HIGAN_CHAR_WIDTH * n_chars;
    lens[0] = (int)xs[3];
    x = higan_var_new(t, 4, xs);
    /* process_style: 32 px per character, area when shrinking, linear otherwise */
    if (x && (rc = higan_image_resize(x->data, HIGAN_IMAGE_HEIGHT, xs[3], img, HIGAN_IMAGE_HEIGHT, W)) != HIGAN_OK) x = NULL;
    feat = x ? higan_style_backbone_forward(t, &m->B, x, 0, NULL, NULL) : NULL;
    mu = feat ? higan_style_encoder_forward(t, &m->E, feat, lens, 0, NULL, NULL, NULL, NULL) : NULL;
    higan_no_grad_end(t);
    if (mu) memcpy(style_out, mu->data, sizeof(float) * (size_t)m->cfg.G.style_dim);
    else if (rc == HIGAN_OK) rc = higan_tape_status(t) != HIGAN_OK ? HIGAN_ERR_NOMEM : HIGAN_ERR_ARG;
    higan_arena_release(t->arena, mark);
    return rc;
}

/* ---- styles: average, interpolation, files ---------------------------------------------------- */
HIGAN_DEF void higan_style_average(const float *styles, int n, int64_t dim, float *out) {
    int64_t j;
    int i;
    HIGAN_ASSERT(styles && out && n >= 1 && dim >= 0);
    for (j = 0; j < dim; ++j) {
        double acc = 0.0;
        for (i = 0; i < n; ++i) acc += styles[(int64_t)i * dim + j];
        out[j] = (float)(acc / n);
    }
}

HIGAN_DEF higan_status higan_style_from_images(higan_model *m, higan_tape *t, const float *const *imgs,
                                               const int64_t *widths, const int *n_chars, int n,
                                               float *style_out) {
    float *all;
    int64_t dim;
    higan_status rc = HIGAN_OK;
    int i;
    if (n < 1) return higan__error(HIGAN_ERR_ARG, "style_from_images: %d references (give at least one)", n);
    if (!m || !m->initialised || !imgs || !widths || !n_chars || !style_out)
        return higan__error(HIGAN_ERR_ARG, "style_from_images: NULL argument or uninitialised model");
    dim = m->cfg.G.style_dim;
    all = (float *)HIGAN_MALLOC(sizeof(float) * (size_t)(dim * n));
    if (!all) return higan__error(HIGAN_ERR_NOMEM, "style_from_images: out of memory");
    for (i = 0; i < n && rc == HIGAN_OK; ++i) {
        rc = higan_style_from_image(m, t, imgs[i], widths[i], n_chars[i], all + (int64_t)i * dim);
        if (rc != HIGAN_OK) {
            char msg[1024];
            snprintf(msg, sizeof msg, "%s", higan_last_error());
            higan__error(rc, "reference %d: %s", i, msg);
        }
    }
    if (rc == HIGAN_OK) higan_style_average(all, n, dim, style_out);
    HIGAN_FREE(all);
    return rc;
}

HIGAN_DEF void higan_style_lerp(const float *a, const float *b, int64_t dim, float w, float *out) {
    int64_t j;
    HIGAN_ASSERT(a && b && out && dim >= 0);
    for (j = 0; j < dim; ++j) {   /* torch.lerp's two-sided formula: exact at both ends */
        float d = b[j] - a[j];
        out[j] = w < 0.5f ? a[j] + w * d : b[j] - d * (1.0f - w);
    }
}

HIGAN_DEF higan_status higan_style_save(const char *path, const float *style, int64_t dim) {
    higan_safetensors_writer w;
    higan_status st;
    char buf[32];
    int64_t shape[1];
    if (!path || !style || dim < 1) return higan__error(HIGAN_ERR_ARG, "style_save: NULL argument or empty style");
    shape[0] = dim;
    snprintf(buf, sizeof buf, "%lld", (long long)dim);
    higan_safetensors_writer_init(&w);
    st = higan_safetensors_writer_add(&w, "style", HIGAN_F32, 1, shape, style);
    if (st == HIGAN_OK) st = higan_safetensors_writer_meta(&w, "higan.style_dim", buf);
    if (st == HIGAN_OK) st = higan_safetensors_writer_meta(&w, "higan.version", HIGAN_VERSION_STRING);
    if (st == HIGAN_OK) st = higan_safetensors_writer_save(&w, path);
    higan_safetensors_writer_free(&w);
    return st;
}

HIGAN_DEF int64_t higan_style_load(const char *path, float *style, int64_t cap) {
    higan_safetensors st;
    const higan_st_tensor *t;
    higan_status rc;
    int64_t dim;
    if (!path) return higan__error(HIGAN_ERR_ARG, "style_load: NULL path");
    if ((rc = higan_safetensors_load(&st, path)) != HIGAN_OK) return rc;
    t = higan_safetensors_find(&st, "style");
    if (!t || !(t->ndim == 1 || (t->ndim == 2 && t->shape[0] == 1)) || t->numel < 1) {
        higan_safetensors_free(&st);
        return higan__error(HIGAN_ERR_FORMAT, "style file '%.256s': %s", path,
                            t ? "tensor 'style' is not [dim] or [1, dim]" : "no tensor 'style'");
    }
    dim = t->numel;
    if (style || cap > 0) {
        if (dim > cap) {
            higan_safetensors_free(&st);
            return higan__error(HIGAN_ERR_ARG, "style file '%.256s' holds %lld values, room for %lld (a model with "
                                "another style_dim?)", path, (long long)dim, (long long)cap);
        }
        if (!style) { higan_safetensors_free(&st); return higan__error(HIGAN_ERR_ARG, "style_load: NULL style"); }
        if ((rc = higan_safetensors_read_f32(&st, "style", style, dim)) != HIGAN_OK) {
            char msg[1024];
            snprintf(msg, sizeof msg, "%s", higan_last_error());
            higan_safetensors_free(&st);
            return higan__error(rc, "style file '%.256s': %s", path, msg);
        }
    }
    higan_safetensors_free(&st);
    return dim;
}

/* ---- layout ----------------------------------------------------------------------------------- */
HIGAN_DEF higan_layout_options higan_layout_default_options(void) {
    higan_layout_options o;
    o.max_width = 0;
    o.word_gap = 16;
    o.line_gap = 0;
    o.margin = 8;
    o.align_baseline = 1;
    return o;
}

HIGAN_DEF int64_t higan_word_baseline(const float *img, int64_t H, int64_t W) {
    double small[256], *p = small, pmax = 0.0, mean = 0.0, thr, best_mass = -1.0, mass = 0.0;
    int64_t y, x, cnt = 0, best_end = -1, run_last = -1, gap = 0, fallback;
    HIGAN_ASSERT(img && H >= 1 && W >= 1);
    fallback = (5 * H) / 8 < 1 ? 1 : (5 * H) / 8;
    if (H > 256 && !(p = (double *)HIGAN_MALLOC(sizeof(double) * (size_t)H))) return fallback;
    for (y = 0; y < H; ++y) {          /* ink row profile: brighter than mid-gray, by strength */
        double acc = 0.0;
        for (x = 0; x < W; ++x) {
            float v = img[y * W + x];
            acc += v > 1.0f ? 1.0 : v > 0.0f ? (double)v : 0.0;
        }
        p[y] = acc;
        if (acc > pmax) pmax = acc;
    }
    if (!(pmax > 0.0)) { if (p != small) HIGAN_FREE(p); return fallback; }
    for (y = 0; y < H; ++y) if (p[y] >= 0.1 * pmax) { mean += p[y]; ++cnt; }
    thr = 0.5 * mean / (double)cnt;    /* half the mean density of the inked rows */
    /* runs of rows at or above thr (gaps of up to 2 rows bridged); the run holding the most
       ink is the core band, the row after its last dense row the baseline */
    for (y = 0; y <= H; ++y) {
        if (y < H && p[y] >= thr) {
            if (run_last < 0) mass = 0.0;
            else for (x = run_last + 1; x < y; ++x) mass += p[x];     /* a bridged gap */
            mass += p[y];
            run_last = y;
            gap = 0;
        } else if (run_last >= 0 && (y == H || ++gap > 2)) {
            if (mass > best_mass) { best_mass = mass; best_end = run_last; }
            run_last = -1;
            gap = 0;
        }
    }
    if (p != small) HIGAN_FREE(p);
    return best_end >= 0 ? best_end + 1 : fallback;
}

HIGAN_DEF void higan_page_free(higan_page *page) {
    if (!page) return;
    HIGAN_FREE(page->pixels);
    HIGAN_FREE(page->words);
    memset(page, 0, sizeof *page);
}

HIGAN_DEF higan_status higan_layout_words(higan_page *page, const float *const *imgs, const int64_t *widths,
                                          const int *breaks, int64_t n, int64_t H,
                                          const higan_layout_options *opt) {
    higan_layout_options o = opt ? *opt : higan_layout_default_options();
    higan_page_word *wd;
    int64_t i, j, avail, line, cx, max_line = 0, top, first, y, x;
    if (!page) return higan__error(HIGAN_ERR_ARG, "layout_words: NULL page");
    memset(page, 0, sizeof *page);
    if (n < 1 || !imgs || !widths) return higan__error(HIGAN_ERR_ARG, "layout_words: no words");
    if (H < 1 || H > 65536) return higan__error(HIGAN_ERR_ARG, "layout_words: image height %lld", (long long)H);
    if (o.max_width < 0 || o.word_gap < 0 || o.line_gap < 0 || o.margin < 0 ||
        o.max_width > 1000000 || o.word_gap > 100000 || o.line_gap > 100000 || o.margin > 100000)
        return higan__error(HIGAN_ERR_ARG, "layout_words: options out of range (max_width %lld, word_gap %lld, "
                            "line_gap %lld, margin %lld)", (long long)o.max_width, (long long)o.word_gap,
                            (long long)o.line_gap, (long long)o.margin);
    for (i = 0; i < n; ++i)
        if (!imgs[i] || widths[i] < 1 || widths[i] > HIGAN_MAX_IMAGE_WIDTH)
            return higan__error(HIGAN_ERR_ARG, "layout_words: word %lld has width %lld", (long long)i,
                                (long long)widths[i]);
    wd = (higan_page_word *)HIGAN_MALLOC(sizeof(higan_page_word) * (size_t)n);
    if (!wd) return higan__error(HIGAN_ERR_NOMEM, "layout_words: out of memory");
    /* greedy wrapping: the content x of every word and its line */
    avail = o.max_width > 0 ? o.max_width - 2 * o.margin : -1;
    line = 0; cx = 0;
    for (i = 0; i < n; ++i) {
        int64_t start = i == 0 ? 0 : cx + o.word_gap;
        if (i > 0 && ((breaks && breaks[i]) || (avail >= 0 && start + widths[i] > avail))) { ++line; start = 0; }
        wd[i].x = start;
        wd[i].width = widths[i];
        wd[i].line = line;
        wd[i].baseline = o.align_baseline ? higan_word_baseline(imgs[i], H, widths[i]) : 0;
        cx = start + widths[i];
        if (cx > max_line) max_line = cx;
    }
    page->n_lines = line + 1;
    page->width = (o.max_width > max_line + 2 * o.margin) ? o.max_width : max_line + 2 * o.margin;
    /* lines top to bottom: each as tall as its largest ascent plus its largest descent */
    top = o.margin;
    for (first = 0; first < n; first = j) {
        int64_t asc = 0, desc = 0;
        for (j = first; j < n && wd[j].line == wd[first].line; ++j) {
            if (wd[j].baseline > asc) asc = wd[j].baseline;
            if (H - wd[j].baseline > desc) desc = H - wd[j].baseline;
        }
        for (i = first; i < j; ++i) { wd[i].x += o.margin; wd[i].y = top + asc - wd[i].baseline; }
        top += asc + desc + (j < n ? o.line_gap : 0);
    }
    page->height = top + o.margin;
    if (page->width * page->height > ((int64_t)1 << 31)) {
        HIGAN_FREE(wd);
        memset(page, 0, sizeof *page);
        return higan__error(HIGAN_ERR_ARG, "layout_words: a %lld x %lld page is too large",
                            (long long)page->width, (long long)page->height);
    }
    page->pixels = (float *)HIGAN_MALLOC(sizeof(float) * (size_t)(page->width * page->height));
    if (!page->pixels) { HIGAN_FREE(wd); memset(page, 0, sizeof *page); return higan__error(HIGAN_ERR_NOMEM, "layout_words: out of memory"); }
    for (i = 0; i < page->width * page->height; ++i) page->pixels[i] = -1.0f;
    for (i = 0; i < n; ++i)            /* the brighter (inkier) value wins where images overlap */
        for (y = 0; y < H; ++y) {
            float *dst = page->pixels + (wd[i].y + y) * page->width + wd[i].x;
            const float *src = imgs[i] + y * widths[i];
            for (x = 0; x < widths[i]; ++x) if (src[x] > dst[x]) dst[x] = src[x];
        }
    page->words = wd;
    page->n_words = n;
    return HIGAN_OK;
}

HIGAN_DEF higan_status higan_generate_text(higan_model *m, higan_tape *t, const char *text, const float *style,
                                           const higan_layout_options *opt, higan_page *page) {
    char *copy = NULL, **word = NULL;
    float **imgs = NULL;
    int64_t *widths = NULL, n = 0, i, H, C;
    int *breaks = NULL, brk = 0;
    size_t len, k;
    higan_status rc = HIGAN_OK;
    if (!page) return higan__error(HIGAN_ERR_ARG, "generate_text: NULL page");
    memset(page, 0, sizeof *page);
    if (!m || !m->initialised || !(m->cfg.nets & HIGAN_NET_BIT(HIGAN_NET_GENERATOR)))
        return higan__error(HIGAN_ERR_ARG, "generate_text: the model has no Generator");
    if (!t || !text || !style) return higan__error(HIGAN_ERR_ARG, "generate_text: NULL argument");
    len = strlen(text);
    H = 16 * m->cfg.G.bottom;
    C = m->cfg.G.input_nc;
    copy = (char *)HIGAN_MALLOC(len + 1);
    word = (char **)HIGAN_MALLOC(sizeof(char *) * (len / 2 + 1));
    breaks = (int *)HIGAN_MALLOC(sizeof(int) * (len / 2 + 1));
    widths = (int64_t *)HIGAN_MALLOC(sizeof(int64_t) * (len / 2 + 1));
    imgs = (float **)HIGAN_MALLOC(sizeof(float *) * (len / 2 + 1));
    if (!copy || !word || !breaks || !widths || !imgs) { rc = higan__error(HIGAN_ERR_NOMEM, "generate_text: out of memory"); goto done; }
    memcpy(copy, text, len + 1);
    for (k = 0; k < len; ) {   /* words: runs of anything but ' ', '\t', '\r', '\n' */
        char c = copy[k];
        if (c == ' ' || c == '\t' || c == '\r' || c == '\n') { if (c == '\n') brk = 1; copy[k++] = 0; continue; }
        word[n] = copy + k;
        breaks[n] = brk;
        imgs[n] = NULL;
        brk = 0;
        ++n;
        while (k < len && copy[k] != ' ' && copy[k] != '\t' && copy[k] != '\r' && copy[k] != '\n') ++k;
    }
    if (n == 0) { rc = higan__error(HIGAN_ERR_ARG, "generate_text: the text has no words"); goto done; }
    for (i = 0; i < n; ++i) {          /* check every word before running the network */
        int W = higan_generate_word(m, t, word[i], NULL, NULL, 0);
        if (W < 0) {
            char msg[1024];
            snprintf(msg, sizeof msg, "%s", higan_last_error());
            rc = higan__error(W, "generate_text: word %lld '%.100s': %s", (long long)(i + 1), word[i], msg);
            n = i;
            goto done;
        }
        widths[i] = W;
    }
    for (i = 0; i < n; ++i) {
        int W;
        if (!(imgs[i] = (float *)HIGAN_MALLOC(sizeof(float) * (size_t)(C * H * widths[i])))) {
            rc = higan__error(HIGAN_ERR_NOMEM, "generate_text: out of memory");
            break;
        }
        W = higan_generate_word(m, t, word[i], style, imgs[i], C * H * widths[i]);   /* channel 0 first */
        if (W < 0) { rc = W; break; }
    }
    if (rc == HIGAN_OK) rc = higan_layout_words(page, (const float *const *)imgs, widths, breaks, n, H, opt);
done:
    if (imgs) for (i = 0; i < n; ++i) HIGAN_FREE(imgs[i]);
    HIGAN_FREE(imgs); HIGAN_FREE(widths); HIGAN_FREE(breaks); HIGAN_FREE(word); HIGAN_FREE(copy);
    return rc;
}

HIGAN_DEF void higan_image_to_pixels(const float *x, int64_t n, int transparent, unsigned char *out) {
    int64_t i;
    HIGAN_ASSERT(x && out && n >= 0);
    for (i = 0; i < n; ++i) {
        float v = x[i] < -1.0f ? -1.0f : x[i] > 1.0f ? 1.0f : x[i];
        if (v != v) v = -1.0f;        /* NaN: background */
        if (transparent) {
            out[2 * i] = 0;
            out[2 * i + 1] = (unsigned char)floor((v + 1.0f) * 127.5f + 0.5f);
        } else {
            out[i] = (unsigned char)floor((1.0f - v) * 127.5f + 0.5f);
        }
    }
}

#undef HIGAN__MODEL_RANGE
#endif /* HIGAN_MODEL_IMPL_INCLUDED */
