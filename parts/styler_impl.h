#ifndef HIGAN_STYLER_IMPL_INCLUDED
#define HIGAN_STYLER_IMPL_INCLUDED
/* ==== STYLE AND RECOGNITION NETWORKS (implementation; see styler_api.h) ================== */

/* "<prefix>.<key>" (just key when prefix is empty or NULL) */
static void higan__sty_name(char *buf, const char *prefix, const char *key) {
    size_t pl = prefix ? strlen(prefix) : 0, kl = strlen(key);
    HIGAN_ASSERT(pl + kl + 2 <= HIGAN_MAX_NAME && "parameter name too long");
    if (pl) { memcpy(buf, prefix, pl); buf[pl++] = '.'; }
    memcpy(buf + pl, key, kl + 1);
}
static int higan__sty_add(higan_params *p, const char *prefix, const char *key, higan_param_kind kind,
                          int ndim, int64_t d0, int64_t d1, int64_t d2, int64_t d3) {
    char name[HIGAN_MAX_NAME];
    int64_t shape[4];
    shape[0] = d0; shape[1] = d1; shape[2] = d2; shape[3] = d3;
    higan__sty_name(name, prefix, key);
    return higan_params_add(p, name, kind, ndim, shape);
}
/* A parameter's var, or NULL for an absent one (handle -1). */
static higan_var *higan__sty_pv(higan_tape *t, const higan_params *p, int h) {
    return h < 0 ? NULL : higan_param_var(t, p, h);
}
/* PyTorch's default for conv/linear (kaiming_uniform_(a=sqrt(5)) for the weight, which is
   U(+-1/sqrt(fan_in)), and U(+-1/sqrt(fan_in)) for the bias), or N02 weights. */
static void higan__sty_init_wb(const higan_params *p, int w, int b, int64_t fan_in, higan_rng *rng,
                               higan_init_kind init) {
    float bound = 1.0f / (float)sqrt((double)fan_in);
    int64_t n = p->entries[w].numel;
    if (init == HIGAN_INIT_N02) higan_rng_fill_normal(rng, higan_params_data(p, w), n, 0.0f, 0.02f);
    else higan_rng_fill_uniform(rng, higan_params_data(p, w), n, -bound, bound);
    if (b >= 0) higan_rng_fill_uniform(rng, higan_params_data(p, b), p->entries[b].numel, -bound, bound);
}

/* ---- BatchNorm2d -------------------------------------------------------------------------- */
HIGAN_DEF void higan_bn2d_register(higan_bn2d *m, higan_params *p, const char *prefix, int64_t C) {
    memset(m, 0, sizeof *m);
    m->params = p;
    m->C = C;
    m->momentum = 0.1f;
    m->eps = 1e-5f;
    m->weight = higan__sty_add(p, prefix, "weight", HIGAN_PARAM, 1, C, 0, 0, 0);
    m->bias = higan__sty_add(p, prefix, "bias", HIGAN_PARAM, 1, C, 0, 0, 0);
    m->running_mean = higan__sty_add(p, prefix, "running_mean", HIGAN_BUFFER, 1, C, 0, 0, 0);
    m->running_var = higan__sty_add(p, prefix, "running_var", HIGAN_BUFFER, 1, C, 0, 0, 0);
    /* 0-d in PyTorch state_dicts */
    m->num_batches_tracked = higan__sty_add(p, prefix, "num_batches_tracked", HIGAN_BUFFER_I64, 0, 0, 0, 0, 0);
}
HIGAN_DEF void higan_bn2d_init(const higan_bn2d *m) {
    const higan_params *p = m->params;
    float *w = higan_params_data(p, m->weight), *b = higan_params_data(p, m->bias);
    float *rm = higan_params_data(p, m->running_mean), *rv = higan_params_data(p, m->running_var);
    int64_t c;
    for (c = 0; c < m->C; ++c) { w[c] = 1.0f; b[c] = 0.0f; rm[c] = 0.0f; rv[c] = 1.0f; }
    higan_params_idata(p, m->num_batches_tracked)[0] = 0;
}
HIGAN_DEF higan_var *higan_bn2d_forward(higan_tape *t, const higan_bn2d *m, higan_var *x, int train) {
    const higan_params *p = m->params;
    if (!x) return NULL;
    HIGAN_ASSERT(x->ndim >= 2 && x->shape[1] == m->C);
    return higan_batch_norm2d(t, x, higan_param_var(t, p, m->weight), higan_param_var(t, p, m->bias),
                              higan_params_data(p, m->running_mean), higan_params_data(p, m->running_var),
                              higan_params_idata(p, m->num_batches_tracked), m->momentum, m->eps, train);
}

/* ---- Conv2dBlock ---------------------------------------------------------------------------- */
HIGAN_DEF void higan_conv_block_register(higan_conv_block *m, higan_params *p, const char *prefix,
                                         int64_t in, int64_t out, int64_t ks, int64_t stride,
                                         int64_t pad, int use_bias, int norm, int relu,
                                         int act_first) {
    char sub[HIGAN_MAX_NAME];
    memset(m, 0, sizeof *m);
    m->params = p;
    m->in = in; m->out = out; m->ks = ks; m->stride = stride; m->pad = pad;
    m->has_norm = norm; m->relu = relu; m->act_first = act_first;
    higan__sty_name(sub, prefix, "conv");
    m->weight = higan__sty_add(p, sub, "weight", HIGAN_PARAM, 4, out, in, ks, ks);
    m->bias = use_bias ? higan__sty_add(p, sub, "bias", HIGAN_PARAM, 1, out, 0, 0, 0) : -1;
    if (norm) {
        higan__sty_name(sub, prefix, "norm");
        higan_bn2d_register(&m->norm, p, sub, out);
    }
}
HIGAN_DEF void higan_conv_block_init(const higan_conv_block *m, higan_rng *rng, higan_init_kind init) {
    higan__sty_init_wb(m->params, m->weight, m->bias, m->in * m->ks * m->ks, rng, init);
    if (m->has_norm) higan_bn2d_init(&m->norm);
}
HIGAN_DEF higan_var *higan_conv_block_forward(higan_tape *t, const higan_conv_block *m, higan_var *x,
                                              int train) {
    const higan_params *p = m->params;
    higan_var *h = x;
    if (!h) return NULL;
    HIGAN_ASSERT(h->ndim == 4 && h->shape[1] == m->in);
    if (m->relu && m->act_first) h = higan_relu(t, h);
    /* ZeroPad2d(pad) then an unpadded conv == a conv with zero padding */
    h = higan_conv2d(t, h, higan_param_var(t, p, m->weight), higan__sty_pv(t, p, m->bias),
                     m->stride, m->stride, m->pad, m->pad, m->pad, m->pad);
    if (m->has_norm) h = h ? higan_bn2d_forward(t, &m->norm, h, train) : NULL;
    if (m->relu && !m->act_first) h = higan_relu(t, h);
    return h;
}

/* ---- ActFirstResBlock ------------------------------------------------------------------------ */
HIGAN_DEF void higan_afrb_register(higan_afrb *m, higan_params *p, const char *prefix, int64_t fin,
                                   int64_t fout, float dropout) {
    char sub[HIGAN_MAX_NAME];
    int64_t fhid = fin < fout ? fin : fout;
    memset(m, 0, sizeof *m);
    m->fin = fin; m->fout = fout; m->dropout = dropout;
    m->has_shortcut = fin != fout;
    higan__sty_name(sub, prefix, "conv_0");
    higan_conv_block_register(&m->conv_0, p, sub, fin, fhid, 3, 1, 1, 1, 1, 1, 1);
    higan__sty_name(sub, prefix, "conv_1");
    higan_conv_block_register(&m->conv_1, p, sub, fhid, fout, 3, 1, 1, 1, 1, 1, 1);
    if (m->has_shortcut) {
        higan__sty_name(sub, prefix, "conv_s");
        higan_conv_block_register(&m->conv_s, p, sub, fin, fout, 1, 1, 0, 0, 0, 0, 0);
    }
}
HIGAN_DEF void higan_afrb_init(const higan_afrb *m, higan_rng *rng, higan_init_kind init) {
    higan_conv_block_init(&m->conv_0, rng, init);
    higan_conv_block_init(&m->conv_1, rng, init);
    if (m->has_shortcut) higan_conv_block_init(&m->conv_s, rng, init);
}
HIGAN_DEF higan_var *higan_afrb_forward(higan_tape *t, const higan_afrb *m, higan_var *x, int train,
                                        higan_rng *rng) {
    higan_var *xs, *dx;
    if (!x) return NULL;
    xs = m->has_shortcut ? higan_conv_block_forward(t, &m->conv_s, x, train) : x;
    dx = higan_conv_block_forward(t, &m->conv_0, x, train);
    dx = higan_dropout(t, dx, m->dropout, train, rng);
    dx = higan_conv_block_forward(t, &m->conv_1, dx, train);
    return (xs && dx) ? higan_add(t, xs, dx) : NULL;
}

/* ---- Linear ------------------------------------------------------------------------------------ */
HIGAN_DEF void higan_linear_layer_register(higan_linear_layer *m, higan_params *p, const char *prefix,
                                           int64_t in, int64_t out, int use_bias) {
    memset(m, 0, sizeof *m);
    m->params = p;
    m->in = in; m->out = out;
    m->weight = higan__sty_add(p, prefix, "weight", HIGAN_PARAM, 2, out, in, 0, 0);
    m->bias = use_bias ? higan__sty_add(p, prefix, "bias", HIGAN_PARAM, 1, out, 0, 0, 0) : -1;
}
HIGAN_DEF void higan_linear_layer_init(const higan_linear_layer *m, higan_rng *rng, higan_init_kind init) {
    higan__sty_init_wb(m->params, m->weight, m->bias, m->in, rng, init);
}
HIGAN_DEF higan_var *higan_linear_layer_forward(higan_tape *t, const higan_linear_layer *m, higan_var *x) {
    if (!x) return NULL;
    HIGAN_ASSERT(x->shape[x->ndim - 1] == m->in);
    return higan_linear(t, x, higan_param_var(t, m->params, m->weight), higan__sty_pv(t, m->params, m->bias));
}

/* ---- StyleBackbone ----------------------------------------------------------------------------- */
HIGAN_DEF higan_backbone_config higan_backbone_default_config(void) {
    higan_backbone_config c;
    c.resolution = 16;
    c.max_dim = 256;
    c.in_channel = 1;
    c.dropout = 0.0f;
    return c;
}
/* cnn_backbone indices of the eight ActFirstResBlocks */
static const int higan__sty_afrb_index[8] = {2, 4, 7, 9, 12, 13, 15, 16};

HIGAN_DEF void higan_style_backbone_register(higan_style_backbone *b, higan_params *p,
                                             const char *prefix, const higan_backbone_config *cfg) {
    char sub[HIGAN_MAX_NAME], key[64];
    int64_t fin[8], fout[8], nf, df;
    int i, k = 0;
    memset(b, 0, sizeof *b);
    b->params = p;
    b->cfg = cfg ? *cfg : higan_backbone_default_config();
    HIGAN_ASSERT(b->cfg.resolution > 0 && b->cfg.max_dim > 0 && b->cfg.in_channel > 0);
    /* the official channel schedule (StyleBackbone.__init__) */
    nf = b->cfg.resolution;
    for (i = 0; i < 2; ++i) {
        int64_t nf_out = 2 * nf < b->cfg.max_dim ? 2 * nf : b->cfg.max_dim;
        fin[k] = nf; fout[k++] = nf;
        fin[k] = nf; fout[k++] = nf_out;
        nf = nf_out;
    }
    df = nf;
    for (i = 0; i < 2; ++i) {
        int64_t df_out = 2 * df < b->cfg.max_dim ? 2 * df : b->cfg.max_dim;
        fin[k] = df; fout[k++] = df;
        fin[k] = df; fout[k++] = df_out;
        df = df_out;
    }
    b->out_dim = df;
    higan__sty_name(sub, prefix, "cnn_backbone.1");
    higan_conv_block_register(&b->conv1, p, sub, b->cfg.in_channel, b->cfg.resolution, 5, 2, 0, 1, 0, 0, 0);
    for (i = 0; i < 8; ++i) {
        snprintf(key, sizeof key, "cnn_backbone.%d", higan__sty_afrb_index[i]);
        higan__sty_name(sub, prefix, key);
        higan_afrb_register(&b->blocks[i], p, sub, fin[i], fout[i],
                            i < 4 ? b->cfg.dropout / 2 : b->cfg.dropout);
    }
    higan__sty_name(sub, prefix, "cnn_ctc.1");
    higan_conv_block_register(&b->ctc, p, sub, df, df, 3, 1, 0, 1, 1, 1, 0);
}
HIGAN_DEF void higan_style_backbone_init(const higan_style_backbone *b, higan_rng *rng,
                                         higan_init_kind init) {
    int i;
    higan_conv_block_init(&b->conv1, rng, init);
    for (i = 0; i < 8; ++i) higan_afrb_init(&b->blocks[i], rng, init);
    higan_conv_block_init(&b->ctc, rng, init);
}
HIGAN_DEF higan_var *higan_style_backbone_forward(higan_tape *t, const higan_style_backbone *b,
                                                  higan_var *x, int train, higan_rng *rng,
                                                  higan_var **feats) {
    higan_var *h;
    int64_t seq_shape[3];
    if (feats) feats[0] = feats[1] = feats[2] = NULL;
    if (!x) return NULL;
    HIGAN_ASSERT(x->ndim == 4 && x->shape[1] == b->cfg.in_channel);
    h = higan_pad(t, x, 2, 2, 2, 2, -1.0f);                          /* 0: ConstantPad2d(2, -1) */
    h = higan_conv_block_forward(t, &b->conv1, h, train);             /* 1 */
    h = higan_afrb_forward(t, &b->blocks[0], h, train, rng);          /* 2 */
    h = higan_pad(t, h, 0, 0, 1, 1, 0.0f);                            /* 3 */
    h = higan_afrb_forward(t, &b->blocks[1], h, train, rng);          /* 4 */
    h = higan_max_pool3s2(t, higan_pad(t, h, 1, 1, 1, 1, 0.0f));      /* 5, 6 */
    h = higan_afrb_forward(t, &b->blocks[2], h, train, rng);          /* 7 */
    h = higan_pad(t, h, 0, 0, 1, 1, 0.0f);                            /* 8 */
    h = higan_afrb_forward(t, &b->blocks[3], h, train, rng);          /* 9: feat2 */
    if (feats) feats[0] = h;
    h = higan_max_pool3s2(t, higan_pad(t, h, 1, 1, 1, 1, 0.0f));      /* 10, 11 */
    h = higan_afrb_forward(t, &b->blocks[4], h, train, rng);          /* 12 */
    h = higan_afrb_forward(t, &b->blocks[5], h, train, rng);          /* 13: feat3 */
    if (feats) feats[1] = h;
    h = higan_max_pool3s2(t, h);                                      /* 14 */
    h = higan_afrb_forward(t, &b->blocks[6], h, train, rng);          /* 15 */
    h = higan_afrb_forward(t, &b->blocks[7], h, train, rng);          /* 16: feat4 */
    if (feats) feats[2] = h;
    h = higan_pad(t, h, 0, 0, 1, 1, 0.0f);                            /* 17 */
    h = higan_conv_block_forward(t, &b->ctc, higan_relu(t, h), train); /* cnn_ctc */
    if (!h) return NULL;
    HIGAN_ASSERT(h->shape[2] == 1 && "StyleBackbone: the input height must be 64");
    seq_shape[0] = h->shape[0]; seq_shape[1] = h->shape[1]; seq_shape[2] = h->shape[3];
    return higan_reshape(t, h, 3, seq_shape);                         /* squeeze(-2) */
}

/* lens[b] = img_lens[b] / scale, in the arena (the masked ops copy it again) */
static int *higan__sty_lens(higan_tape *t, const int *img_lens, int64_t B, int scale) {
    int *lens = (int *)higan_arena_alloc(t->arena, sizeof(int) * (size_t)(B > 0 ? B : 1));
    int64_t i;
    if (!lens) return NULL;
    for (i = 0; i < B; ++i) {
        HIGAN_ASSERT(img_lens[i] >= 0);
        lens[i] = img_lens[i] / scale;
    }
    return lens;
}

/* ---- StyleEncoder ------------------------------------------------------------------------------ */
HIGAN_DEF void higan_style_encoder_register(higan_style_encoder *e, higan_params *p, const char *prefix,
                                            int64_t in_dim, int64_t style_dim) {
    char sub[HIGAN_MAX_NAME];
    memset(e, 0, sizeof *e);
    e->params = p;
    e->in_dim = in_dim; e->style_dim = style_dim;
    higan__sty_name(sub, prefix, "linear_style.0");
    higan_linear_layer_register(&e->linear0, p, sub, in_dim, in_dim, 1);
    higan__sty_name(sub, prefix, "linear_style.2");
    higan_linear_layer_register(&e->linear2, p, sub, in_dim, in_dim, 1);
    higan__sty_name(sub, prefix, "mu");
    higan_linear_layer_register(&e->mu, p, sub, in_dim, style_dim, 1);
    higan__sty_name(sub, prefix, "logvar");
    higan_linear_layer_register(&e->logvar, p, sub, in_dim, style_dim, 1);
}
HIGAN_DEF void higan_style_encoder_init(const higan_style_encoder *e, higan_rng *rng, higan_init_kind init) {
    higan_linear_layer_init(&e->linear0, rng, init);
    higan_linear_layer_init(&e->linear2, rng, init);
    higan_linear_layer_init(&e->mu, rng, init);
    higan_linear_layer_init(&e->logvar, rng, init);
}
HIGAN_DEF higan_var *higan_style_encoder_forward(higan_tape *t, const higan_style_encoder *e,
                                                 higan_var *feat, const int *img_lens, int vae_mode,
                                                 higan_rng *rng, const float *noise,
                                                 higan_var **mu_out, higan_var **logvar_out) {
    higan_var *h, *mu, *logvar, *eps, *z;
    int *lens;
    int64_t B;
    if (mu_out) *mu_out = NULL;
    if (logvar_out) *logvar_out = NULL;
    if (!feat) return NULL;
    HIGAN_ASSERT(feat->ndim == 3 && feat->shape[1] == e->in_dim);
    B = feat->shape[0];
    if (!(lens = higan__sty_lens(t, img_lens, B, HIGAN_BACKBONE_LEN_SCALE))) return NULL;
    h = higan_masked_mean_width(t, feat, lens, 1e-8f);                /* [B, in_dim] */
    h = higan_leaky_relu(t, higan_linear_layer_forward(t, &e->linear0, h), 0.01f);
    h = higan_leaky_relu(t, higan_linear_layer_forward(t, &e->linear2, h), 0.01f);
    mu = higan_linear_layer_forward(t, &e->mu, h);
    logvar = higan_linear_layer_forward(t, &e->logvar, h);
    if (!mu || !logvar) return NULL;
    if (mu_out) *mu_out = mu;
    if (logvar_out) *logvar_out = logvar;
    if (!vae_mode) return mu;
    /* reparameterize: z = eps * exp(0.5 logvar) + mu */
    if (!(eps = higan_var_new(t, 2, mu->shape))) return NULL;
    if (noise) memcpy(eps->data, noise, sizeof(float) * (size_t)higan_var_numel(mu));
    else {
        HIGAN_ASSERT(rng != NULL && "StyleEncoder: VAE mode needs an rng or noise");
        higan_rng_fill_normal(rng, eps->data, higan_var_numel(mu), 0.0f, 1.0f);
    }
    z = higan_mul(t, eps, higan_exp(t, higan_scale(t, logvar, 0.5f)));
    return higan_add(t, z, mu);
}

/* ---- WriterIdentifier -------------------------------------------------------------------------- */
HIGAN_DEF void higan_writer_identifier_register(higan_writer_identifier *w, higan_params *p,
                                                const char *prefix, int64_t in_dim, int64_t n_writer) {
    char sub[HIGAN_MAX_NAME];
    memset(w, 0, sizeof *w);
    w->params = p;
    w->in_dim = in_dim; w->n_writer = n_writer;
    higan__sty_name(sub, prefix, "linear_wid.0");
    higan_linear_layer_register(&w->linear0, p, sub, in_dim, in_dim, 1);
    higan__sty_name(sub, prefix, "linear_wid.2");
    higan_linear_layer_register(&w->linear2, p, sub, in_dim, n_writer, 1);
}
HIGAN_DEF void higan_writer_identifier_init(const higan_writer_identifier *w, higan_rng *rng,
                                            higan_init_kind init) {
    higan_linear_layer_init(&w->linear0, rng, init);
    higan_linear_layer_init(&w->linear2, rng, init);
}
HIGAN_DEF higan_var *higan_writer_identifier_forward(higan_tape *t, const higan_writer_identifier *w,
                                                     higan_var *feat, const int *img_lens) {
    higan_var *h;
    int *lens;
    if (!feat) return NULL;
    HIGAN_ASSERT(feat->ndim == 3 && feat->shape[1] == w->in_dim);
    if (!(lens = higan__sty_lens(t, img_lens, feat->shape[0], HIGAN_WID_LEN_SCALE))) return NULL;
    h = higan_masked_mean_width(t, feat, lens, 1e-8f);
    h = higan_leaky_relu(t, higan_linear_layer_forward(t, &w->linear0, h), 0.01f);
    return higan_linear_layer_forward(t, &w->linear2, h);
}

/* ---- Recognizer -------------------------------------------------------------------------------- */
HIGAN_DEF higan_recognizer_config higan_recognizer_default_config(void) {
    higan_recognizer_config c;
    c.cnn = higan_backbone_default_config();
    c.n_class = HIGAN_ALPHABET_SIZE;
    c.rnn_depth = 2;
    return c;
}
HIGAN_DEF void higan_recognizer_register(higan_recognizer *r, higan_params *p, const char *prefix,
                                         const higan_recognizer_config *cfg) {
    static const char *const kind[4] = {"weight_ih", "weight_hh", "bias_ih", "bias_hh"};
    char sub[HIGAN_MAX_NAME], key[64];
    int l, d, k;
    memset(r, 0, sizeof *r);
    r->params = p;
    r->cfg = cfg ? *cfg : higan_recognizer_default_config();
    HIGAN_ASSERT(r->cfg.rnn_depth >= 0 && r->cfg.rnn_depth <= HIGAN_RECOGNIZER_MAX_DEPTH);
    HIGAN_ASSERT(r->cfg.n_class > 0);
    higan_style_backbone_register(&r->cnn, p, prefix, &r->cfg.cnn);
    r->hidden = r->cnn.out_dim / 2;       /* DeepBLSTM(df, df): hidden df // 2 per direction */
    for (k = 0; k < (int)(sizeof r->lstm / sizeof r->lstm[0]); ++k) r->lstm[k] = -1;
    for (l = 0; l < r->cfg.rnn_depth; ++l)
        for (d = 0; d < 2; ++d)
            for (k = 0; k < 4; ++k) {
                int64_t in_l = l == 0 ? r->cnn.out_dim : 2 * r->hidden;
                snprintf(key, sizeof key, "rnn_ctc.lstm.%s_l%d%s", kind[k], l, d ? "_reverse" : "");
                r->lstm[(l * 2 + d) * 4 + k] =
                    k == 0 ? higan__sty_add(p, prefix, key, HIGAN_PARAM, 2, 4 * r->hidden, in_l, 0, 0)
                  : k == 1 ? higan__sty_add(p, prefix, key, HIGAN_PARAM, 2, 4 * r->hidden, r->hidden, 0, 0)
                  :          higan__sty_add(p, prefix, key, HIGAN_PARAM, 1, 4 * r->hidden, 0, 0, 0);
            }
    higan__sty_name(sub, prefix, "ctc_cls");
    higan_linear_layer_register(&r->ctc_cls, p, sub, r->cfg.rnn_depth > 0 ? 2 * r->hidden : r->cnn.out_dim,
                                r->cfg.n_class, 1);
}
HIGAN_DEF void higan_recognizer_init(const higan_recognizer *r, higan_rng *rng, higan_init_kind init) {
    float bound = 1.0f / (float)sqrt((double)(r->hidden > 0 ? r->hidden : 1));
    int k;
    higan_style_backbone_init(&r->cnn, rng, init);
    /* nn.LSTM.reset_parameters: every tensor U(+-1/sqrt(hidden)); init_weights leaves it */
    for (k = 0; k < r->cfg.rnn_depth * 8; ++k)
        higan_rng_fill_uniform(rng, higan_params_data(r->params, r->lstm[k]),
                               r->params->entries[r->lstm[k]].numel, -bound, bound);
    higan_linear_layer_init(&r->ctc_cls, rng, init);
}
HIGAN_DEF higan_var *higan_recognizer_forward(higan_tape *t, const higan_recognizer *r, higan_var *x,
                                              const int *img_lens, int train, higan_rng *rng) {
    static const int perm_btc[3] = {0, 2, 1}, perm_tbc[3] = {1, 0, 2};
    higan_var *h, *w[HIGAN_RECOGNIZER_MAX_DEPTH * 2 * 4];
    int *lens = NULL;
    int64_t B, T, i, t_max = 0;
    int k;
    h = higan_style_backbone_forward(t, &r->cnn, x, train, rng, NULL);     /* [B, C, T] */
    if (!h) return NULL;
    B = h->shape[0]; T = h->shape[2];
    h = higan_permute(t, h, perm_btc);                                       /* [B, T, C] */
    if (r->cfg.rnn_depth > 0) {
        if (!(lens = higan__sty_lens(t, img_lens, B, HIGAN_BACKBONE_LEN_SCALE))) return NULL;
        for (i = 0; i < B; ++i) {
            if (lens[i] < 1 || lens[i] > T) {
                higan__error(HIGAN_ERR_ARG, "Recognizer: image %d has width %d, which gives %d frames; "
                             "need 1..%d (the width must be 16..%d pixels)", (int)i, img_lens[i], lens[i],
                             (int)T, (int)(16 * T + 15));
                return NULL;
            }
            if (lens[i] > t_max) t_max = lens[i];
        }
        for (k = 0; k < r->cfg.rnn_depth * 8; ++k) w[k] = higan_param_var(t, r->params, r->lstm[k]);
        h = higan_lstm(t, h, lens, (int)r->hidden, r->cfg.rnn_depth, 1, w);  /* [B, T, 2H] */
        if (h && t_max < T) h = higan_slice(t, h, 1, 0, t_max);             /* pad_packed_sequence */
    }
    h = higan_linear_layer_forward(t, &r->ctc_cls, h);                       /* [B, T', n_class] */
    if (!train || !h) return h;
    return higan_permute(t, higan_log_softmax(t, h), perm_tbc);              /* [T', B, n_class] */
}
HIGAN_DEF int higan_recognizer_decode(const higan_var *out, int train, int b, int img_len,
                                      char *text, int cap) {
    int64_t B, T, C, stride;
    const float *scores;
    int frames;
    if (!out || out->ndim != 3) return higan__error(HIGAN_ERR_ARG, "recognizer_decode: not a recognizer output");
    B = train ? out->shape[1] : out->shape[0];
    T = train ? out->shape[0] : out->shape[1];
    C = out->shape[2];
    if (b < 0 || b >= B) return higan__error(HIGAN_ERR_ARG, "recognizer_decode: sample %d of %d", b, (int)B);
    if (C != HIGAN_ALPHABET_SIZE)
        return higan__error(HIGAN_ERR_ARG, "recognizer_decode: %d classes, the alphabet has %d", (int)C,
                            HIGAN_ALPHABET_SIZE);
    frames = img_len / HIGAN_BACKBONE_LEN_SCALE;
    if (frames > T) frames = (int)T;
    if (frames < 0) frames = 0;
    scores = train ? out->data + (int64_t)b * C : out->data + (int64_t)b * T * C;
    stride = train ? B * C : C;
    return higan_ctc_decode_text(scores, stride, frames, text, cap);
}

/* ---- Alphabet and text -------------------------------------------------------------------------- */
static const char higan__sty_alphabet[] = HIGAN_ALPHABET_STRING;
HIGAN_DEF const char *higan_alphabet(void) { return higan__sty_alphabet; }
HIGAN_DEF int higan_char_label(int c) {
    int i;
    if (c <= 0 || c == '`' || c > 127) return -1;
    for (i = 1; i < HIGAN_ALPHABET_SIZE; ++i) if (higan__sty_alphabet[i] == c) return i;
    return -1;
}
HIGAN_DEF int higan_text_encode(const char *utf8, int *out, int max) {
    const unsigned char *s = (const unsigned char *)utf8;
    int64_t i = 0;
    int pos = 0;
    if (!utf8) return higan__error(HIGAN_ERR_ARG, "text_encode: NULL text");
    if (!s[0]) return higan__error(HIGAN_ERR_ARG, "text_encode: empty text (a word needs at least one character)");
    while (s[i]) {
        unsigned c = s[i], cp, minimum;
        int len, k, label;
        if (c < 0x80)                { len = 1; cp = c;        minimum = 0; }
        else if ((c & 0xE0) == 0xC0) { len = 2; cp = c & 0x1F; minimum = 0x80; }
        else if ((c & 0xF0) == 0xE0) { len = 3; cp = c & 0x0F; minimum = 0x800; }
        else if ((c & 0xF8) == 0xF0) { len = 4; cp = c & 0x07; minimum = 0x10000; }
        else return higan__error(HIGAN_ERR_ARG, "text_encode: invalid UTF-8 byte 0x%02X at position %d", c, pos);
        for (k = 1; k < len; ++k) {
            if ((s[i + k] & 0xC0) != 0x80)
                return higan__error(HIGAN_ERR_ARG, "text_encode: invalid UTF-8 sequence at position %d", pos);
            cp = (cp << 6) | (s[i + k] & 0x3F);
        }
        if (cp < minimum || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
            return higan__error(HIGAN_ERR_ARG, "text_encode: invalid UTF-8 sequence at position %d", pos);
        label = higan_char_label((int)cp);
        if (label < 0) {
            if (cp == '`')
                return higan__error(HIGAN_ERR_ARG, "character '`' (U+0060) at position %d is the CTC blank "
                                    "and padding symbol of the HiGAN+ alphabet, not a writable character", pos);
            if (cp < 0x20 || cp == 0x7F)
                return higan__error(HIGAN_ERR_ARG, "control character U+%04X at position %d is not in the "
                                    "HiGAN+ alphabet", cp, pos);
            return higan__error(HIGAN_ERR_ARG, "character '%.*s' (U+%04X) at position %d is not in the "
                                "HiGAN+ alphabet", len, (const char *)(s + i), cp, pos);
        }
        if (pos >= max)
            return higan__error(HIGAN_ERR_ARG, "text_encode: the text is longer than %d characters", max);
        out[pos++] = label;
        i += len;
    }
    return pos;
}
HIGAN_DEF int higan_text_decode(const int *labels, int n, char *out, int cap) {
    int i, len = 0;
    for (i = 0; i < n; ++i)
        if (labels[i] < 0 || labels[i] >= HIGAN_ALPHABET_SIZE)
            return higan__error(HIGAN_ERR_ARG, "text_decode: label %d at position %d is outside [0, %d)",
                                labels[i], i, HIGAN_ALPHABET_SIZE);
    for (i = 0; i < n; ++i) {
        if (labels[i] == 0) continue;                /* blank / pad */
        if (out && len < cap - 1) out[len] = higan__sty_alphabet[labels[i]];
        ++len;
    }
    if (out && cap > 0) out[len < cap - 1 ? len : cap - 1] = 0;
    return len;
}
HIGAN_DEF int higan_ctc_decode_text(const float *scores, int64_t step_stride, int T, char *out, int cap) {
    int small[256], *labels = small, n, r;
    n = higan_ctc_greedy_decode_strided(scores, step_stride, T, HIGAN_ALPHABET_SIZE, 0, small, 256);
    if (n > 256) {
        labels = (int *)HIGAN_MALLOC(sizeof(int) * (size_t)n);
        if (!labels) return higan__error(HIGAN_ERR_NOMEM, "ctc_decode_text: out of memory");
        higan_ctc_greedy_decode_strided(scores, step_stride, T, HIGAN_ALPHABET_SIZE, 0, labels, n);
    }
    r = higan_text_decode(labels, n, out, cap);
    if (labels != small) HIGAN_FREE(labels);
    return r;
}

#endif /* HIGAN_STYLER_IMPL_INCLUDED */
