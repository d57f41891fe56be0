#ifndef HIGAN_BIGGAN_IMPL_INCLUDED
#define HIGAN_BIGGAN_IMPL_INCLUDED
/* ==== BIGGAN-SIDE NETWORKS (implementation) ================================================
   Pure composition of the tested tape ops (spectral norm, linear, conv2d, (conditional)
   batch norm, embedding, upsample, avg pool, concat, permute, masked width sum) plus three
   small ops of this part: the all-patches extractor (public) and two private helpers, the
   generator's eval mask (columns beyond the text set to -1) and the division of D's pooled
   features by the character counts. */

/* "<prefix>.<suffix>", or "<suffix>" for an empty prefix. */
static void higan__bg_name(char *buf, const char *prefix, const char *suffix) {
    int n;
    if (!prefix) prefix = "";
    n = snprintf(buf, HIGAN_MAX_NAME, "%s%s%s", prefix, *prefix ? "." : "", suffix);
    HIGAN_ASSERT(n > 0 && n < HIGAN_MAX_NAME && "parameter name too long");
}

/* ---- init helpers (N02 as networks/utils.py:init_weights, PyTorch default biases) -------- */
static void higan__bg_fill(higan_params *p, int h, float v) {
    float *d = higan_params_data(p, h);
    int64_t i, n = p->entries[h].numel;
    for (i = 0; i < n; ++i) d[i] = v;
}
static void higan__bg_normal(higan_params *p, int h, higan_rng *r, float std) {
    higan_rng_fill_normal(r, higan_params_data(p, h), p->entries[h].numel, 0.0f, std);
}
/* weight N(0, 0.02); bias U(-1/sqrt(fan_in), 1/sqrt(fan_in)); u0 N(0, 1); sv0 1 */
static void higan__bg_sn_init(higan_params *p, int weight, int bias, int u0, int sv0,
                              int64_t fan_in, higan_rng *r) {
    higan__bg_normal(p, weight, r, 0.02f);
    if (bias >= 0) {
        float bound = (float)(1.0 / sqrt((double)fan_in));
        higan_rng_fill_uniform(r, higan_params_data(p, bias), p->entries[bias].numel, -bound, bound);
    }
    higan__bg_normal(p, u0, r, 1.0f);
    higan__bg_fill(p, sv0, 1.0f);
}
static void higan__bg_sn_linear_init(const higan_sn_linear *m, higan_rng *r) {
    higan__bg_sn_init(m->p, m->weight, m->bias, m->u0, m->sv0, m->in, r);
}
static void higan__bg_sn_conv_init(const higan_sn_conv2d *m, higan_rng *r) {
    higan__bg_sn_init(m->p, m->weight, m->bias, m->u0, m->sv0, m->in * m->k * m->k, r);
}
static void higan__bg_ccbn_init(const higan_ccbn *m, higan_rng *r) {
    higan__bg_fill(m->p, m->stored_mean, 0.0f);
    higan__bg_fill(m->p, m->stored_var, 1.0f);
    higan__bg_sn_linear_init(&m->gain, r);
    higan__bg_sn_linear_init(&m->bias, r);
}

/* ---- SNLinear / SNConv2d ------------------------------------------------------------------ */
static void higan__bg_sn_buffers(higan_params *p, const char *prefix, int64_t out, int *u0, int *sv0) {
    char name[HIGAN_MAX_NAME];
    int64_t s[2];
    s[0] = 1; s[1] = out;
    higan__bg_name(name, prefix, "u0");
    *u0 = higan_params_add(p, name, HIGAN_BUFFER, 2, s);
    higan__bg_name(name, prefix, "sv0");
    *sv0 = higan_params_add(p, name, HIGAN_BUFFER, 1, s);   /* [1] */
}

HIGAN_DEF void higan_sn_linear_register(higan_sn_linear *m, higan_params *p, const char *prefix,
                                        int64_t in, int64_t out, int bias) {
    char name[HIGAN_MAX_NAME];
    int64_t s[2];
    m->p = p; m->in = in; m->out = out; m->bias = -1;
    s[0] = out; s[1] = in;
    higan__bg_name(name, prefix, "weight");
    m->weight = higan_params_add(p, name, HIGAN_PARAM, 2, s);
    if (bias) {
        higan__bg_name(name, prefix, "bias");
        m->bias = higan_params_add(p, name, HIGAN_PARAM, 1, &out);
    }
    higan__bg_sn_buffers(p, prefix, out, &m->u0, &m->sv0);
}

/* The weight divided by sigma (one power step from u0; u0/sv0 updated when train). */
static higan_var *higan__bg_sn_weight(higan_tape *t, higan_params *p, int weight, int u0, int sv0,
                                      int64_t out, int train) {
    return higan_spectral_norm(t, higan_param_var(t, p, weight), higan_params_data(p, u0),
                               higan_params_data(p, sv0), out, train);
}

HIGAN_DEF higan_var *higan_sn_linear_forward(higan_tape *t, const higan_sn_linear *m,
                                             higan_var *x, int train) {
    higan_var *w, *b = NULL;
    if (!x) return NULL;
    HIGAN_ASSERT(x->shape[x->ndim - 1] == m->in);
    if (!(w = higan__bg_sn_weight(t, m->p, m->weight, m->u0, m->sv0, m->out, train))) return NULL;
    if (m->bias >= 0 && !(b = higan_param_var(t, m->p, m->bias))) return NULL;
    return higan_linear(t, x, w, b);
}

HIGAN_DEF void higan_sn_conv2d_register(higan_sn_conv2d *m, higan_params *p, const char *prefix,
                                        int64_t in, int64_t out, int64_t k, int64_t pad, int bias) {
    char name[HIGAN_MAX_NAME];
    int64_t s[4];
    m->p = p; m->in = in; m->out = out; m->k = k; m->pad = pad; m->bias = -1;
    s[0] = out; s[1] = in; s[2] = k; s[3] = k;
    higan__bg_name(name, prefix, "weight");
    m->weight = higan_params_add(p, name, HIGAN_PARAM, 4, s);
    if (bias) {
        higan__bg_name(name, prefix, "bias");
        m->bias = higan_params_add(p, name, HIGAN_PARAM, 1, &out);
    }
    higan__bg_sn_buffers(p, prefix, out, &m->u0, &m->sv0);
}

HIGAN_DEF higan_var *higan_sn_conv2d_forward(higan_tape *t, const higan_sn_conv2d *m,
                                             higan_var *x, int train) {
    higan_var *w, *b = NULL;
    if (!x) return NULL;
    HIGAN_ASSERT(x->ndim == 4 && x->shape[1] == m->in);
    if (!(w = higan__bg_sn_weight(t, m->p, m->weight, m->u0, m->sv0, m->out, train))) return NULL;
    if (m->bias >= 0 && !(b = higan_param_var(t, m->p, m->bias))) return NULL;
    return higan_conv2d(t, x, w, b, 1, 1, m->pad, m->pad, m->pad, m->pad);
}

/* ---- ccbn / bn ---------------------------------------------------------------------------- */
HIGAN_DEF void higan_ccbn_register(higan_ccbn *m, higan_params *p, const char *prefix,
                                   int64_t C, int64_t y_dim) {
    char name[HIGAN_MAX_NAME];
    m->p = p; m->C = C;
    /* state_dict order: own buffers first, then the gain and bias children */
    higan__bg_name(name, prefix, "stored_mean");
    m->stored_mean = higan_params_add(p, name, HIGAN_BUFFER, 1, &C);
    higan__bg_name(name, prefix, "stored_var");
    m->stored_var = higan_params_add(p, name, HIGAN_BUFFER, 1, &C);
    higan__bg_name(name, prefix, "gain");
    higan_sn_linear_register(&m->gain, p, name, y_dim, C, 0);
    higan__bg_name(name, prefix, "bias");
    higan_sn_linear_register(&m->bias, p, name, y_dim, C, 0);
}

HIGAN_DEF higan_var *higan_ccbn_forward(higan_tape *t, const higan_ccbn *m, higan_var *x,
                                        higan_var *y, int train) {
    higan_var *gain, *bias;
    if (!x || !y) return NULL;
    HIGAN_ASSERT(x->ndim >= 2 && x->shape[1] == m->C && y->shape[0] == x->shape[0]);
    gain = higan_sn_linear_forward(t, &m->gain, y, train);   /* the op adds the 1 */
    bias = higan_sn_linear_forward(t, &m->bias, y, train);
    return higan_cond_batch_norm(t, x, gain, bias, higan_params_data(m->p, m->stored_mean),
                                 higan_params_data(m->p, m->stored_var), 0.1f, 1e-5f, train);
}

HIGAN_DEF void higan_bn_out_register(higan_bn_out *m, higan_params *p, const char *prefix, int64_t C) {
    char name[HIGAN_MAX_NAME];
    m->p = p; m->C = C;
    higan__bg_name(name, prefix, "gain");
    m->gain = higan_params_add(p, name, HIGAN_PARAM, 1, &C);
    higan__bg_name(name, prefix, "bias");
    m->bias = higan_params_add(p, name, HIGAN_PARAM, 1, &C);
    higan__bg_name(name, prefix, "stored_mean");
    m->stored_mean = higan_params_add(p, name, HIGAN_BUFFER, 1, &C);
    higan__bg_name(name, prefix, "stored_var");
    m->stored_var = higan_params_add(p, name, HIGAN_BUFFER, 1, &C);
}

HIGAN_DEF higan_var *higan_bn_out_forward(higan_tape *t, const higan_bn_out *m, higan_var *x,
                                          int train) {
    higan_var *gain, *bias;
    if (!x) return NULL;
    HIGAN_ASSERT(x->ndim >= 2 && x->shape[1] == m->C);
    if (!(gain = higan_param_var(t, m->p, m->gain)) || !(bias = higan_param_var(t, m->p, m->bias)))
        return NULL;
    return higan_batch_norm2d(t, x, gain, bias, higan_params_data(m->p, m->stored_mean),
                              higan_params_data(m->p, m->stored_var), NULL, 0.1f, 1e-5f, train);
}

/* ---- GBlock / DBlock ---------------------------------------------------------------------- */
HIGAN_DEF void higan_gblock_register(higan_gblock *b, higan_params *p, const char *prefix,
                                     int64_t in, int64_t out, int up_h, int up_w, int64_t y_dim) {
    char name[HIGAN_MAX_NAME];
    b->up_h = up_h; b->up_w = up_w;
    b->has_sc = in != out || up_h != 1 || up_w != 1;
    /* state_dict order of BigGAN_layers.GBlock: conv1, conv2, conv_sc, bn1, bn2 */
    higan__bg_name(name, prefix, "conv1");
    higan_sn_conv2d_register(&b->conv1, p, name, in, out, 3, 1, 1);
    higan__bg_name(name, prefix, "conv2");
    higan_sn_conv2d_register(&b->conv2, p, name, out, out, 3, 1, 1);
    if (b->has_sc) {
        higan__bg_name(name, prefix, "conv_sc");
        higan_sn_conv2d_register(&b->conv_sc, p, name, in, out, 1, 0, 1);
    }
    higan__bg_name(name, prefix, "bn1");
    higan_ccbn_register(&b->bn1, p, name, in, y_dim);
    higan__bg_name(name, prefix, "bn2");
    higan_ccbn_register(&b->bn2, p, name, out, y_dim);
}

HIGAN_DEF higan_var *higan_gblock_forward(higan_tape *t, const higan_gblock *b, higan_var *x,
                                          higan_var *y, int train) {
    higan_var *h, *sc = x;
    int up = b->up_h != 1 || b->up_w != 1;
    h = higan_relu(t, higan_ccbn_forward(t, &b->bn1, x, y, train));
    if (up) {
        h = higan_upsample_nearest(t, h, b->up_h, b->up_w);
        sc = higan_upsample_nearest(t, x, b->up_h, b->up_w);
    }
    h = higan_sn_conv2d_forward(t, &b->conv1, h, train);
    h = higan_relu(t, higan_ccbn_forward(t, &b->bn2, h, y, train));
    h = higan_sn_conv2d_forward(t, &b->conv2, h, train);
    if (b->has_sc) sc = higan_sn_conv2d_forward(t, &b->conv_sc, sc, train);
    return higan_add(t, h, sc);
}

HIGAN_DEF void higan_dblock_register(higan_dblock *b, higan_params *p, const char *prefix,
                                     int64_t in, int64_t out, int preact, int down) {
    char name[HIGAN_MAX_NAME];
    b->preact = preact; b->down = down;
    b->has_sc = in != out || down;
    higan__bg_name(name, prefix, "conv1");
    higan_sn_conv2d_register(&b->conv1, p, name, in, out, 3, 1, 1);   /* wide: hidden = out */
    higan__bg_name(name, prefix, "conv2");
    higan_sn_conv2d_register(&b->conv2, p, name, out, out, 3, 1, 1);
    if (b->has_sc) {
        higan__bg_name(name, prefix, "conv_sc");
        higan_sn_conv2d_register(&b->conv_sc, p, name, in, out, 1, 0, 1);
    }
}

HIGAN_DEF higan_var *higan_dblock_forward(higan_tape *t, const higan_dblock *b, higan_var *x,
                                          int train) {
    higan_var *h, *sc = x;
    h = b->preact ? higan_relu(t, x) : x;
    h = higan_sn_conv2d_forward(t, &b->conv1, h, train);
    h = higan_sn_conv2d_forward(t, &b->conv2, higan_relu(t, h), train);
    if (b->down) h = higan_avg_pool2(t, h);
    if (b->preact) {   /* preactivated blocks: conv_sc, then pool; the first block: the reverse */
        if (b->has_sc) sc = higan_sn_conv2d_forward(t, &b->conv_sc, sc, train);
        if (b->down) sc = higan_avg_pool2(t, sc);
    } else {
        if (b->down) sc = higan_avg_pool2(t, sc);
        if (b->has_sc) sc = higan_sn_conv2d_forward(t, &b->conv_sc, sc, train);
    }
    return higan_add(t, h, sc);
}

/* ---- private op: set columns w >= lens[n] to a constant (G's eval mask) -------------------
   x, y [N, C, H, W]; lens [N]. y = x * mask + (mask - 1) with mask = (w < lens[n]), which
   is x inside and -1 outside for value -1; gradient dy * mask. */
static void higan__bg_mask_width_forward(float *y, const float *x, const int *lens, float value,
                                         int64_t N, int64_t C, int64_t H, int64_t W) {
    int64_t p;
    HIGAN__PARALLEL_FOR_IF(N * C * H * W > ((int64_t)1 << 15))
    for (p = 0; p < N * C * H; ++p) {
        int64_t n = p / (C * H), w;
        const float *xr = x + p * W;
        float *yr = y + p * W;
        for (w = 0; w < W; ++w) yr[w] = w < (int64_t)lens[n] ? xr[w] : value;
    }
}
static void higan__bg_mask_width_backward(float *dx, const float *dy, const int *lens,
                                          int64_t N, int64_t C, int64_t H, int64_t W) {
    int64_t p;
    HIGAN__PARALLEL_FOR_IF(N * C * H * W > ((int64_t)1 << 15))
    for (p = 0; p < N * C * H; ++p) {
        int64_t n = p / (C * H), w, wv = (int64_t)lens[n] < W ? (int64_t)lens[n] : W;
        const float *dr = dy + p * W;
        float *xr = dx + p * W;
        for (w = 0; w < wv; ++w) xr[w] += dr[w];
    }
}
typedef struct { higan_var *x, *y; int *lens; } higan__bg_lens_ctx;
static void higan__bg_mask_width_backward_op(higan_tape *t, void *p) {
    higan__bg_lens_ctx *c = (higan__bg_lens_ctx *)p;
    float *dx = higan_var_grad(t, c->x);
    if (dx) higan__bg_mask_width_backward(dx, c->y->grad, c->lens, c->x->shape[0], c->x->shape[1],
                                          c->x->shape[2], c->x->shape[3]);
}
static int *higan__bg_copy_lens(higan_tape *t, const int *lens, int64_t n) {
    int *c = (int *)higan_arena_alloc(t->arena, sizeof(int) * (size_t)(n ? n : 1));
    if (c) memcpy(c, lens, sizeof(int) * (size_t)n);
    return c;
}
static higan_var *higan__bg_mask_width(higan_tape *t, higan_var *x, const int *lens, float value) {
    higan_var *y;
    higan__bg_lens_ctx *c;
    if (!x) return NULL;
    HIGAN_ASSERT(x->ndim == 4);
    if (!(y = higan_op_output(t, 4, x->shape, &x, 1))) return NULL;
    higan__bg_mask_width_forward(y->data, x->data, lens, value, x->shape[0], x->shape[1],
                                 x->shape[2], x->shape[3]);
    if (y->requires_grad) {
        if (!(c = (higan__bg_lens_ctx *)higan_tape_ctx(t, sizeof *c))) return NULL;
        if (!(c->lens = higan__bg_copy_lens(t, lens, x->shape[0]))) return NULL;
        c->x = x; c->y = y;
        higan_tape_record(t, y, higan__bg_mask_width_backward_op, c);
    }
    return y;
}

/* ---- private op: y [N, C] = x [N, C] / den[n] (true division, as h / y_lens) -------------- */
static void higan__bg_div_rows_backward_op(higan_tape *t, void *p) {
    higan__bg_lens_ctx *c = (higan__bg_lens_ctx *)p;
    float *dx = higan_var_grad(t, c->x);
    int64_t n, k, C = c->x->shape[1];
    if (!dx) return;
    for (n = 0; n < c->x->shape[0]; ++n)
        for (k = 0; k < C; ++k) dx[n * C + k] += c->y->grad[n * C + k] / (float)c->lens[n];
}
static higan_var *higan__bg_div_rows(higan_tape *t, higan_var *x, const int *den) {
    higan_var *y;
    higan__bg_lens_ctx *c;
    int64_t n, k, C;
    if (!x) return NULL;
    HIGAN_ASSERT(x->ndim == 2);
    C = x->shape[1];
    if (!(y = higan_op_output(t, 2, x->shape, &x, 1))) return NULL;
    for (n = 0; n < x->shape[0]; ++n)
        for (k = 0; k < C; ++k) y->data[n * C + k] = x->data[n * C + k] / (float)den[n];
    if (y->requires_grad) {
        if (!(c = (higan__bg_lens_ctx *)higan_tape_ctx(t, sizeof *c))) return NULL;
        if (!(c->lens = higan__bg_copy_lens(t, den, x->shape[0]))) return NULL;
        c->x = x; c->y = y;
        higan_tape_record(t, y, higan__bg_div_rows_backward_op, c);
    }
    return y;
}

/* ---- Generator ---------------------------------------------------------------------------- */
HIGAN_DEF higan_generator_config higan_generator_default_config(void) {
    higan_generator_config c;
    c.ch = 64; c.style_dim = 32; c.embed_dim = 120; c.n_class = 80; c.bottom = 4; c.input_nc = 1;
    return c;
}

HIGAN_DEF void higan_generator_register(higan_generator *g, higan_params *p, const char *prefix,
                                        const higan_generator_config *cfg) {
    static const int up_h[4] = {2, 2, 2, 2}, up_w[4] = {1, 2, 2, 2};
    static const int in_mult[4] = {8, 4, 2, 1}, out_mult[4] = {4, 2, 1, 1};
    char name[HIGAN_MAX_NAME], sub[HIGAN_MAX_NAME];
    int64_t s[2], ch, zd;
    int i;
    g->cfg = cfg ? *cfg : higan_generator_default_config();
    g->p = p;
    ch = g->cfg.ch; zd = g->cfg.style_dim;
    HIGAN_ASSERT(ch > 0 && zd > 0 && g->cfg.embed_dim > 0 && g->cfg.n_class > 0 && g->cfg.bottom > 0);
    s[0] = g->cfg.n_class; s[1] = g->cfg.embed_dim;
    higan__bg_name(name, prefix, "text_embedding.weight");
    g->text_embedding = higan_params_add(p, name, HIGAN_PARAM, 2, s);
    higan__bg_name(name, prefix, "filter_linear");
    higan_sn_linear_register(&g->filter_linear, p, name, zd + g->cfg.embed_dim,
                             8 * ch * g->cfg.bottom * g->cfg.bottom, 1);
    higan__bg_name(name, prefix, "style_linear");
    higan_sn_linear_register(&g->style_linear, p, name, zd, 4 * zd, 1);
    for (i = 0; i < 4; ++i) {
        snprintf(sub, sizeof sub, "blocks.%d.0", i);
        higan__bg_name(name, prefix, sub);
        higan_gblock_register(&g->blocks[i], p, name, in_mult[i] * ch, out_mult[i] * ch,
                              up_h[i], up_w[i], zd);
    }
    higan__bg_name(name, prefix, "output_layer.0");
    higan_bn_out_register(&g->out_bn, p, name, ch);
    higan__bg_name(name, prefix, "output_layer.2");
    higan_sn_conv2d_register(&g->out_conv, p, name, ch, g->cfg.input_nc, 3, 1, 1);
}

HIGAN_DEF void higan_generator_init(higan_generator *g, higan_rng *rng) {
    int i;
    higan__bg_normal(g->p, g->text_embedding, rng, 0.02f);   /* padding row too, as N02 did */
    higan__bg_sn_linear_init(&g->filter_linear, rng);
    higan__bg_sn_linear_init(&g->style_linear, rng);
    for (i = 0; i < 4; ++i) {
        const higan_gblock *b = &g->blocks[i];
        higan__bg_sn_conv_init(&b->conv1, rng);
        higan__bg_sn_conv_init(&b->conv2, rng);
        if (b->has_sc) higan__bg_sn_conv_init(&b->conv_sc, rng);
        higan__bg_ccbn_init(&b->bn1, rng);
        higan__bg_ccbn_init(&b->bn2, rng);
    }
    higan__bg_fill(g->p, g->out_bn.gain, 1.0f);
    higan__bg_fill(g->p, g->out_bn.bias, 0.0f);
    higan__bg_fill(g->p, g->out_bn.stored_mean, 0.0f);
    higan__bg_fill(g->p, g->out_bn.stored_var, 1.0f);
    higan__bg_sn_conv_init(&g->out_conv, rng);
}

HIGAN_DEF higan_var *higan_generator_forward(higan_tape *t, const higan_generator *g, higan_var *z,
                                             const int *labels, const int *lens, int64_t L,
                                             int train) {
    const higan_generator_config *cf = &g->cfg;
    higan_var *ys[4], *emb, *zs, *cat[2], *h, **reps;
    int64_t B, zd = cf->style_dim, E = cf->embed_dim, bt = cf->bottom, C0 = 8 * cf->ch;
    int64_t s[4], sizes[4], i;
    int perm[4];
    if (!z) return NULL;
    HIGAN_ASSERT(z->ndim == 2 && z->shape[1] == zd && L >= 1 && labels && lens);
    B = z->shape[0];
    /* ys = style_linear(z).split(style_dim): chunk i drives block i's bn1 and bn2 */
    for (i = 0; i < 4; ++i) sizes[i] = zd;
    if (higan_split(t, higan_sn_linear_forward(t, &g->style_linear, z, train), 1, 4, sizes, ys) != HIGAN_OK)
        return NULL;
    /* text embedding (max_norm 1: looked-up rows renormalised in place, padding row 0) */
    emb = higan_embedding(t, higan_param_var(t, g->p, g->text_embedding), labels, B * L, 0, 1.0f);
    s[0] = B; s[1] = L; s[2] = E;
    emb = higan_reshape(t, emb, 3, s);
    /* [z repeated per character || embedding] -> [B, L, zd + E] */
    s[0] = B; s[1] = 1; s[2] = zd;
    zs = higan_reshape(t, z, 3, s);
    if (L > 1 && zs) {
        if (!(reps = (higan_var **)higan_arena_alloc(t->arena, sizeof(higan_var *) * (size_t)L)))
            return NULL;
        for (i = 0; i < L; ++i) reps[i] = zs;
        zs = higan_concat(t, reps, (int)L, 1);
    }
    cat[0] = zs; cat[1] = emb;
    h = higan_sn_linear_forward(t, &g->filter_linear, higan_concat(t, cat, 2, 2), train);
    /* view(B, L*bottom, bottom, C0).permute(0, 3, 2, 1) -> [B, C0, bottom, L*bottom] */
    s[0] = B; s[1] = L * bt; s[2] = bt; s[3] = C0;
    h = higan_reshape(t, h, 4, s);
    perm[0] = 0; perm[1] = 3; perm[2] = 2; perm[3] = 1;
    h = higan_permute(t, h, perm);
    for (i = 0; i < 4; ++i) h = higan_gblock_forward(t, &g->blocks[i], h, ys[i], train);
    h = higan_relu(t, higan_bn_out_forward(t, &g->out_bn, h, train));
    h = higan_tanh(t, higan_sn_conv2d_forward(t, &g->out_conv, h, train));
    if (!train && h) {   /* eval: background (-1) from column y_lens * H // 2 on */
        int *cols = (int *)higan_arena_alloc(t->arena, sizeof(int) * (size_t)B);
        if (!cols) return NULL;
        for (i = 0; i < B; ++i) cols[i] = (int)((int64_t)lens[i] * h->shape[2] / 2);
        h = higan__bg_mask_width(t, h, cols, -1.0f);
    }
    return h;
}

/* ---- Discriminator ------------------------------------------------------------------------ */
HIGAN_DEF higan_discriminator_config higan_discriminator_default_config(int64_t resolution) {
    higan_discriminator_config c;
    c.ch = 64; c.resolution = resolution; c.input_nc = 1;
    return c;
}

HIGAN_DEF void higan_discriminator_register(higan_discriminator *d, higan_params *p,
                                            const char *prefix,
                                            const higan_discriminator_config *cfg) {
    char name[HIGAN_MAX_NAME], sub[HIGAN_MAX_NAME];
    int64_t ch, in[4], out[4];
    int i;
    d->cfg = cfg ? *cfg : higan_discriminator_default_config(64);
    d->p = p;
    /* D_arch[64] and D_arch[32] are the same layers: resolution only names the use */
    HIGAN_ASSERT(d->cfg.resolution == 64 || d->cfg.resolution == 32);
    ch = d->cfg.ch;
    in[0] = d->cfg.input_nc; in[1] = ch; in[2] = 2 * ch; in[3] = 4 * ch;
    out[0] = ch; out[1] = 2 * ch; out[2] = 4 * ch; out[3] = 4 * ch;
    for (i = 0; i < 4; ++i) {
        snprintf(sub, sizeof sub, "blocks.%d.0", i);
        higan__bg_name(name, prefix, sub);
        higan_dblock_register(&d->blocks[i], p, name, in[i], out[i], i > 0, i < 3);
    }
    higan__bg_name(name, prefix, "linear");
    higan_sn_linear_register(&d->linear, p, name, 4 * ch, 1, 1);
}

HIGAN_DEF void higan_discriminator_init(higan_discriminator *d, higan_rng *rng) {
    int i;
    for (i = 0; i < 4; ++i) {
        const higan_dblock *b = &d->blocks[i];
        higan__bg_sn_conv_init(&b->conv1, rng);
        higan__bg_sn_conv_init(&b->conv2, rng);
        if (b->has_sc) higan__bg_sn_conv_init(&b->conv_sc, rng);
    }
    higan__bg_sn_linear_init(&d->linear, rng);
}

HIGAN_DEF higan_var *higan_discriminator_forward(higan_tape *t, const higan_discriminator *d,
                                                 higan_var *x, const int *x_lens,
                                                 const int *y_lens, int train) {
    higan_var *h = x;
    int *cols;
    int64_t B, Wh, i;
    if (!x) return NULL;
    HIGAN_ASSERT(x->ndim == 4 && x->shape[1] == d->cfg.input_nc);
    B = x->shape[0];
    for (i = 0; i < 4; ++i) h = higan_dblock_forward(t, &d->blocks[i], h, train);
    h = higan_relu(t, h);
    if (!h) return NULL;
    /* valid columns: h_lens = x_lens * W_h // W_x (all columns without lengths) */
    Wh = h->shape[3];
    if (!(cols = (int *)higan_arena_alloc(t->arena, sizeof(int) * (size_t)B))) return NULL;
    for (i = 0; i < B; ++i) {
        int64_t c = x_lens ? (int64_t)x_lens[i] * Wh / x->shape[3] : Wh;
        cols[i] = (int)(c < 0 ? 0 : c);
    }
    h = higan_masked_sum_width(t, h, cols);
    if (x_lens && y_lens) h = higan__bg_div_rows(t, h, y_lens);   /* per character */
    return higan_sn_linear_forward(t, &d->linear, h, train);
}

/* ---- all patches -------------------------------------------------------------------------- */
static int64_t higan__patch_cols(const int *lens, int64_t b, int64_t W, int64_t size, int64_t step) {
    int64_t len = lens ? (int64_t)lens[b] : W;
    if (len > W) len = W;
    return len < size ? 0 : (len - size) / step + 1;   /* Python's floor for len < size: none */
}

HIGAN_DEF int64_t higan_extract_patches_count(const int *lens, int64_t B, int64_t H, int64_t W,
                                              int64_t size, int64_t step) {
    int64_t b, n = 0;
    HIGAN_ASSERT(size > 0 && step > 0 && H >= size && (H - size) % step == 0);
    for (b = 0; b < B; ++b) n += higan__patch_cols(lens, b, W, size, step);
    return n * ((H - size) / step + 1);
}

/* y [P, C, size, size]; x [B, C, H, W]. Parallel over (image, patch row). */
HIGAN_DEF void higan_extract_patches_forward(float *y, const float *x, const int *lens, int64_t B,
                                             int64_t C, int64_t H, int64_t W, int64_t size,
                                             int64_t step) {
    int64_t rows = (H - size) / step + 1, q;
    HIGAN_ASSERT(size > 0 && step > 0 && H >= size && (H - size) % step == 0);
    HIGAN__PARALLEL_FOR_IF(B * rows > 1 && B * C * H * W > ((int64_t)1 << 15))
    for (q = 0; q < B * rows; ++q) {
        int64_t b = q / rows, r = q % rows, first = 0, bb, cols, c, k, i;
        for (bb = 0; bb < b; ++bb) first += rows * higan__patch_cols(lens, bb, W, size, step);
        cols = higan__patch_cols(lens, b, W, size, step);
        for (c = 0; c < cols; ++c) {
            float *yp = y + (first + r * cols + c) * C * size * size;
            for (k = 0; k < C; ++k) {
                const float *xs = x + ((b * C + k) * H + r * step) * W + c * step;
                for (i = 0; i < size; ++i)
                    memcpy(yp + (k * size + i) * size, xs + i * W, sizeof(float) * (size_t)size);
            }
        }
    }
}

/* dx [B, C, H, W] += scatter of dy [P, C, size, size]; one (b, channel) plane per thread. */
HIGAN_DEF void higan_extract_patches_backward(float *dx, const float *dy, const int *lens,
                                              int64_t B, int64_t C, int64_t H, int64_t W,
                                              int64_t size, int64_t step) {
    int64_t rows = (H - size) / step + 1, q;
    if (!dx) return;
    HIGAN_ASSERT(size > 0 && step > 0 && H >= size && (H - size) % step == 0);
    HIGAN__PARALLEL_FOR_IF(B * C > 1 && B * C * H * W > ((int64_t)1 << 15))
    for (q = 0; q < B * C; ++q) {
        int64_t b = q / C, k = q % C, first = 0, bb, cols, r, c, i, j;
        float *dp = dx + q * H * W;
        for (bb = 0; bb < b; ++bb) first += rows * higan__patch_cols(lens, bb, W, size, step);
        cols = higan__patch_cols(lens, b, W, size, step);
        for (r = 0; r < rows; ++r)
            for (c = 0; c < cols; ++c) {
                const float *gp = dy + ((first + r * cols + c) * C + k) * size * size;
                float *d0 = dp + r * step * W + c * step;
                for (i = 0; i < size; ++i)
                    for (j = 0; j < size; ++j) d0[i * W + j] += gp[i * size + j];
            }
    }
}

typedef struct { higan_var *x, *y; int *lens; int64_t size, step; } higan__patches_ctx;
static void higan__patches_backward_op(higan_tape *t, void *p) {
    higan__patches_ctx *c = (higan__patches_ctx *)p;
    float *dx = higan_var_grad(t, c->x);
    if (dx) higan_extract_patches_backward(dx, c->y->grad, c->lens, c->x->shape[0], c->x->shape[1],
                                           c->x->shape[2], c->x->shape[3], c->size, c->step);
}
HIGAN_DEF higan_var *higan_extract_patches(higan_tape *t, higan_var *x, const int *lens,
                                           int64_t size, int64_t step) {
    higan_var *y;
    higan__patches_ctx *c;
    int64_t s[4], P;
    if (!x) return NULL;
    HIGAN_ASSERT(x->ndim == 4);
    P = higan_extract_patches_count(lens, x->shape[0], x->shape[2], x->shape[3], size, step);
    HIGAN_ASSERT(P > 0 && "extract_patches: no image is as wide as one patch");
    s[0] = P; s[1] = x->shape[1]; s[2] = size; s[3] = size;
    if (!(y = higan_op_output(t, 4, s, &x, 1))) return NULL;
    higan_extract_patches_forward(y->data, x->data, lens, x->shape[0], x->shape[1], x->shape[2],
                                  x->shape[3], size, step);
    if (y->requires_grad) {
        if (!(c = (higan__patches_ctx *)higan_tape_ctx(t, sizeof *c))) return NULL;
        c->lens = NULL;
        if (lens && !(c->lens = higan__bg_copy_lens(t, lens, x->shape[0]))) return NULL;
        c->x = x; c->y = y; c->size = size; c->step = step;
        higan_tape_record(t, y, higan__patches_backward_op, c);
    }
    return y;
}

#endif /* HIGAN_BIGGAN_IMPL_INCLUDED */
