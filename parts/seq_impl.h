/* ==== SEQUENCE OPS AND LOSSES: implementation ================================= */

static float higan__sigmoidf(float x) { return 1.0f / (1.0f + expf(-x)); }

/* ---- LSTM ------------------------------------------------------------------------------ */
/* Cache layout: outputs of layers 0..L-2 [B,T,D*H] each, then per (layer, direction):
   gate activations [B,T,4H] (i, f, g, o after sigmoid/tanh) and cell states [B,T,H]. */
HIGAN_DEF int64_t higan_lstm_cache_floats(int64_t B, int64_t T, int64_t H, int num_layers,
                                          int bidirectional) {
    int64_t D = bidirectional ? 2 : 1;
    return (int64_t)(num_layers - 1) * B * T * D * H + (int64_t)num_layers * D * B * T * 5 * H;
}
/* offset of layer l's output */
static int64_t higan__lstm_out_off(int64_t B, int64_t T, int64_t DH, int l) { return (int64_t)l * B * T * DH; }
/* offset of the gates of (layer l, direction d); its cells follow at + B*T*4H */
static int64_t higan__lstm_gates_off(int64_t B, int64_t T, int64_t H, int64_t D, int L, int l, int d) {
    return (int64_t)(L - 1) * B * T * D * H + ((int64_t)l * D + d) * B * T * 5 * H;
}
/* Time index of sample b at processing step s (the reverse direction runs from its own end). */
static int64_t higan__lstm_time(int d, int len, int64_t s) { return d == 0 ? s : (int64_t)len - 1 - s; }

HIGAN_DEF higan_status higan_lstm_forward(float *y, float *cache, const float *x, const int *lengths,
                                          const float *const *weights, int64_t B, int64_t T,
                                          int64_t IN, int64_t H, int num_layers, int bidirectional,
                                          higan_arena *scratch) {
    int64_t D = bidirectional ? 2 : 1, DH = D * H, H4 = 4 * H, b, s, j, maxlen = 0;
    size_t mark = higan_arena_mark(scratch);
    float *hs, *cs, *R;
    int l, d;
    HIGAN_ASSERT(B > 0 && T > 0 && IN > 0 && H > 0 && num_layers > 0);
    for (b = 0; b < B; ++b) {
        HIGAN_ASSERT(lengths[b] >= 0 && lengths[b] <= T);
        if (lengths[b] > maxlen) maxlen = lengths[b];
    }
    if (!cache) cache = higan_arena_floats(scratch, higan_lstm_cache_floats(B, T, H, num_layers, bidirectional));
    hs = higan_arena_floats(scratch, B * H);      /* h of the previous step [B,H] */
    cs = higan_arena_floats(scratch, B * H);      /* c of the previous step [B,H] */
    R = higan_arena_floats(scratch, B * H4);      /* h_prev W_hh^T [B,4H] */
    if (!cache || !hs || !cs || !R) { higan_arena_release(scratch, mark); return HIGAN_ERR_NOMEM; }
    for (l = 0; l < num_layers; ++l) {
        const float *in = l == 0 ? x : cache + higan__lstm_out_off(B, T, DH, l - 1);
        int64_t in_dim = l == 0 ? IN : DH;
        float *out = l == num_layers - 1 ? y : cache + higan__lstm_out_off(B, T, DH, l);
        for (d = 0; d < (int)D; ++d) {
            const float *const *w = weights + ((int64_t)l * D + d) * 4;
            const float *w_ih = w[0], *w_hh = w[1], *b_ih = w[2], *b_hh = w[3];
            float *G = cache + higan__lstm_gates_off(B, T, H, D, num_layers, l, d);  /* [B,T,4H] */
            float *Cs = G + B * T * H4;                                          /* [B,T,H] */
            /* input projections of all steps at once: G = b_ih + b_hh + in W_ih^T */
            for (j = 0; j < B * T; ++j) {
                int64_t k;
                for (k = 0; k < H4; ++k)
                    G[j * H4 + k] = (b_ih ? b_ih[k] : 0.0f) + (b_hh ? b_hh[k] : 0.0f);
            }
            higan_gemm(0, 1, B * T, H4, in_dim, 1.0f, in, in_dim, w_ih, in_dim, 1.0f, G, H4);
            memset(hs, 0, (size_t)(B * H) * sizeof(float));
            memset(cs, 0, (size_t)(B * H) * sizeof(float));
            for (s = 0; s < maxlen; ++s) {
                if (s > 0) higan_gemm(0, 1, B, H4, H, 1.0f, hs, H, w_hh, H, 0.0f, R, H4);
                else memset(R, 0, (size_t)(B * H4) * sizeof(float));   /* h0 = 0 */
                HIGAN__PARALLEL_FOR_IF(B * H >= 4096)
                for (b = 0; b < B; ++b) {
                    int64_t t, k;
                    float *g, *r, *cc, *o;
                    if (lengths[b] <= s) continue;
                    t = higan__lstm_time(d, lengths[b], s);
                    g = G + (b * T + t) * H4;
                    r = R + b * H4;
                    cc = Cs + (b * T + t) * H;
                    o = out + (b * T + t) * DH + d * H;
                    for (k = 0; k < H; ++k) {
                        float gi = higan__sigmoidf(g[k] + r[k]);
                        float gf = higan__sigmoidf(g[H + k] + r[H + k]);
                        float gg = tanhf(g[2 * H + k] + r[2 * H + k]);
                        float go = higan__sigmoidf(g[3 * H + k] + r[3 * H + k]);
                        float c = gf * cs[b * H + k] + gi * gg;
                        float h = go * tanhf(c);
                        g[k] = gi; g[H + k] = gf; g[2 * H + k] = gg; g[3 * H + k] = go;
                        cc[k] = c;
                        o[k] = h;
                        cs[b * H + k] = c;
                        hs[b * H + k] = h;
                    }
                }
            }
            /* padded steps: zero output (pad_packed_sequence); gates/cells unused there */
            for (b = 0; b < B; ++b) {
                int64_t t;
                for (t = lengths[b]; t < T; ++t)
                    memset(out + (b * T + t) * DH + d * H, 0, (size_t)H * sizeof(float));
            }
        }
    }
    higan_arena_release(scratch, mark);
    return HIGAN_OK;
}

HIGAN_DEF higan_status higan_lstm_backward(float *dx, float *const *dweights, const float *dy,
                                           const float *y, const float *cache, const float *x,
                                           const int *lengths, const float *const *weights,
                                           int64_t B, int64_t T, int64_t IN, int64_t H,
                                           int num_layers, int bidirectional, higan_arena *scratch) {
    int64_t D = bidirectional ? 2 : 1, DH = D * H, H4 = 4 * H, b, s, maxlen = 0;
    size_t mark = higan_arena_mark(scratch);
    float *dG, *Hp, *dbuf[2], *dAs, *dh, *dc;
    int l, d, lmin = -1, k;
    HIGAN_ASSERT(B > 0 && T > 0 && IN > 0 && H > 0 && num_layers > 0);
    for (b = 0; b < B; ++b) if (lengths[b] > maxlen) maxlen = lengths[b];
    /* lowest layer that has to be reached: dx, or the lowest layer with a weight gradient */
    if (dx) lmin = 0;
    else if (dweights)
        for (l = num_layers - 1; l >= 0; --l)
            for (k = 0; k < (int)(D * 4); ++k) if (dweights[(int64_t)l * D * 4 + k]) lmin = l;
    if (lmin < 0 || maxlen == 0) return HIGAN_OK;
    dG = higan_arena_floats(scratch, B * T * H4);   /* d pre-activations [B,T,4H] */
    Hp = higan_arena_floats(scratch, B * T * H);    /* h before each step [B,T,H] */
    dbuf[0] = num_layers > 1 ? higan_arena_floats(scratch, B * T * DH) : NULL;
    dbuf[1] = num_layers > 2 ? higan_arena_floats(scratch, B * T * DH) : NULL;
    dAs = higan_arena_floats(scratch, B * H4);      /* this step's d pre-activations [B,4H] */
    dh = higan_arena_floats(scratch, B * H);        /* recurrent dh [B,H] */
    dc = higan_arena_floats(scratch, B * H);        /* recurrent dc [B,H] */
    if (!dG || !Hp || (num_layers > 1 && !dbuf[0]) || (num_layers > 2 && !dbuf[1]) || !dAs || !dh || !dc) {
        higan_arena_release(scratch, mark);
        return HIGAN_ERR_NOMEM;
    }
    for (l = num_layers - 1; l >= lmin; --l) {
        const float *in = l == 0 ? x : cache + higan__lstm_out_off(B, T, DH, l - 1);
        int64_t in_dim = l == 0 ? IN : DH;
        const float *out = l == num_layers - 1 ? y : cache + higan__lstm_out_off(B, T, DH, l);
        const float *dout = l == num_layers - 1 ? dy : dbuf[l & 1];
        float *din = l == lmin ? (l == 0 ? dx : NULL) : dbuf[(l - 1) & 1];
        if (din && l > 0) memset(din, 0, (size_t)(B * T * DH) * sizeof(float));
        for (d = 0; d < (int)D; ++d) {
            const float *const *w = weights + ((int64_t)l * D + d) * 4;
            float *const *dw = dweights ? dweights + ((int64_t)l * D + d) * 4 : NULL;
            const float *G = cache + higan__lstm_gates_off(B, T, H, D, num_layers, l, d);
            const float *Cs = G + B * T * H4;
            memset(dG, 0, (size_t)(B * T * H4) * sizeof(float));
            memset(dh, 0, (size_t)(B * H) * sizeof(float));
            memset(dc, 0, (size_t)(B * H) * sizeof(float));
            for (s = maxlen - 1; s >= 0; --s) {
                HIGAN__PARALLEL_FOR_IF(B * H >= 4096)
                for (b = 0; b < B; ++b) {
                    int64_t t, tp, j;
                    const float *g, *cc, *cp, *dyo;
                    float *da;
                    if (lengths[b] <= s) {   /* not started yet (in reverse time): no gradient */
                        memset(dAs + b * H4, 0, (size_t)H4 * sizeof(float));
                        continue;
                    }
                    t = higan__lstm_time(d, lengths[b], s);
                    tp = d == 0 ? t - 1 : t + 1;          /* the step processed before t */
                    g = G + (b * T + t) * H4;
                    cc = Cs + (b * T + t) * H;
                    cp = s > 0 ? Cs + (b * T + tp) * H : NULL;
                    dyo = dout + (b * T + t) * DH + d * H;
                    da = dG + (b * T + t) * H4;
                    for (j = 0; j < H; ++j) {
                        float gi = g[j], gf = g[H + j], gg = g[2 * H + j], go = g[3 * H + j];
                        float tc = tanhf(cc[j]);
                        float dhj = dyo[j] + dh[b * H + j];
                        float dcj = dc[b * H + j] + dhj * go * (1.0f - tc * tc);
                        float c_prev = cp ? cp[j] : 0.0f;
                        da[j] = dcj * gg * gi * (1.0f - gi);
                        da[H + j] = dcj * c_prev * gf * (1.0f - gf);
                        da[2 * H + j] = dcj * gi * (1.0f - gg * gg);
                        da[3 * H + j] = dhj * tc * go * (1.0f - go);
                        dc[b * H + j] = dcj * gf;
                    }
                    memcpy(dAs + b * H4, da, (size_t)H4 * sizeof(float));
                }
                /* dh for the previous step: dA W_hh (nothing flows before the first step) */
                if (s > 0) higan_gemm(0, 0, B, H, H4, 1.0f, dAs, H4, w[1], H, 0.0f, dh, H);
            }
            /* weight gradients over all steps at once */
            if (dw && dw[0]) higan_gemm(1, 0, H4, in_dim, B * T, 1.0f, dG, H4, in, in_dim, 1.0f, dw[0], in_dim);
            if (dw && dw[1]) {
                HIGAN__PARALLEL_FOR_IF(B * T * H >= 65536)
                for (b = 0; b < B; ++b) {
                    int64_t t;
                    for (t = 0; t < T; ++t) {
                        int64_t tp = d == 0 ? t - 1 : t + 1;
                        float *hp = Hp + (b * T + t) * H;
                        if (t < lengths[b] && tp >= 0 && tp < lengths[b])
                            memcpy(hp, out + (b * T + tp) * DH + d * H, (size_t)H * sizeof(float));
                        else
                            memset(hp, 0, (size_t)H * sizeof(float));
                    }
                }
                higan_gemm(1, 0, H4, H, B * T, 1.0f, dG, H4, Hp, H, 1.0f, dw[1], H);
            }
            for (k = 2; k < 4; ++k) {
                float *db = dw ? dw[k] : NULL;
                int64_t j;
                if (!db) continue;
                HIGAN__PARALLEL_FOR_IF(H4 * B * T >= 65536)
                for (j = 0; j < H4; ++j) {
                    int64_t r;
                    float acc = 0.0f;
                    for (r = 0; r < B * T; ++r) acc += dG[r * H4 + j];
                    db[j] += acc;
                }
            }
            if (din) higan_gemm(0, 0, B * T, in_dim, H4, 1.0f, dG, H4, w[0], in_dim, 1.0f, din, in_dim);
        }
    }
    higan_arena_release(scratch, mark);
    return HIGAN_OK;
}

typedef struct {
    higan_var *x, *y;
    higan_var **w;          /* num_layers*D*4 */
    const float **wdata;    /* their data pointers */
    float **dw;             /* gradient pointers, filled in backward */
    int *lengths;
    float *cache;
    int64_t B, T, IN, H;
    int num_layers, bidirectional;
} higan__lstm_ctx;

static void higan__lstm_backward_op(higan_tape *t, void *p) {
    higan__lstm_ctx *c = (higan__lstm_ctx *)p;
    int64_t D = c->bidirectional ? 2 : 1, nw = c->num_layers * D * 4, k;
    float *dx = higan_var_grad(t, c->x);
    size_t mark;
    int any = dx != NULL;
    for (k = 0; k < nw; ++k) {
        c->dw[k] = higan_var_grad(t, c->w[k]);
        any |= c->dw[k] != NULL;
    }
    if (!any) return;
    mark = higan_arena_mark(t->arena);
    higan_lstm_backward(dx, c->dw, c->y->grad, c->y->data, c->cache, c->x->data, c->lengths,
                        c->wdata, c->B, c->T, c->IN, c->H, c->num_layers, c->bidirectional,
                        t->arena);   /* an overflow stays sticky in the arena: backward reports it */
    higan_arena_release(t->arena, mark);
}

HIGAN_DEF higan_var *higan_lstm(higan_tape *t, higan_var *x, const int *lengths, int hidden,
                                int num_layers, int bidirectional, higan_var **weights) {
    int64_t D = bidirectional ? 2 : 1, nw, k, B, T, IN, H = hidden, shape[3];
    higan_var **inputs;
    higan_var *y;
    higan__lstm_ctx *c;
    const float **wdata;
    float *cache = NULL;
    size_t mark;
    int l, d;
    if (!x || !weights) return NULL;
    HIGAN_ASSERT(x->ndim == 3 && hidden > 0 && num_layers > 0 && lengths);
    nw = (int64_t)num_layers * D * 4;
    for (k = 0; k < nw; ++k) if (!weights[k]) return NULL;
    B = x->shape[0]; T = x->shape[1]; IN = x->shape[2];
    for (k = 0; k < B; ++k) HIGAN_ASSERT(lengths[k] >= 0 && lengths[k] <= T);
    for (l = 0; l < num_layers; ++l)
        for (d = 0; d < (int)D; ++d) {
            higan_var *const *w = weights + ((int64_t)l * D + d) * 4;
            int64_t in_dim = l == 0 ? IN : D * H;
            HIGAN_ASSERT(higan_var_numel(w[0]) == 4 * H * in_dim && w[0]->shape[0] == 4 * H);
            HIGAN_ASSERT(higan_var_numel(w[1]) == 4 * H * H && w[1]->shape[0] == 4 * H);
            HIGAN_ASSERT(higan_var_numel(w[2]) == 4 * H && higan_var_numel(w[3]) == 4 * H);
        }
    inputs = (higan_var **)higan_arena_alloc(t->arena, (size_t)(nw + 1) * sizeof(higan_var *));
    wdata = (const float **)higan_arena_alloc(t->arena, (size_t)nw * sizeof(float *));
    if (!inputs || !wdata) return NULL;
    inputs[0] = x;
    for (k = 0; k < nw; ++k) { inputs[k + 1] = weights[k]; wdata[k] = weights[k]->data; }
    shape[0] = B; shape[1] = T; shape[2] = D * H;
    if (!(y = higan_op_output(t, 3, shape, inputs, (int)(nw + 1)))) return NULL;
    c = NULL;
    if (y->requires_grad) {
        if (!(c = (higan__lstm_ctx *)higan_tape_ctx(t, sizeof *c))) return NULL;
        c->w = (higan_var **)higan_arena_alloc(t->arena, (size_t)nw * sizeof(higan_var *));
        c->dw = (float **)higan_arena_alloc(t->arena, (size_t)nw * sizeof(float *));
        c->lengths = (int *)higan_arena_alloc(t->arena, (size_t)B * sizeof(int));
        cache = higan_arena_floats(t->arena, higan_lstm_cache_floats(B, T, H, num_layers, bidirectional));
        if (!c->w || !c->dw || !c->lengths || !cache) return NULL;
        for (k = 0; k < nw; ++k) c->w[k] = weights[k];
        memcpy(c->lengths, lengths, (size_t)B * sizeof(int));
        c->x = x; c->y = y; c->wdata = wdata; c->cache = cache;
        c->B = B; c->T = T; c->IN = IN; c->H = H;
        c->num_layers = num_layers; c->bidirectional = bidirectional;
    }
    mark = higan_arena_mark(t->arena);
    if (higan_lstm_forward(y->data, cache, x->data, lengths, wdata, B, T, IN, H, num_layers,
                           bidirectional, t->arena) != HIGAN_OK) return NULL;
    higan_arena_release(t->arena, mark);
    if (c) higan_tape_record(t, y, higan__lstm_backward_op, c);
    return y;
}

/* ---- CTC loss ------------------------------------------------------------------------ */
static int64_t higan__ctc_alpha_offset(int64_t T, int64_t b, const int *target_lengths) {
    int64_t i, off = 0;
    for (i = 0; i < b; ++i) off += T * (2 * (int64_t)target_lengths[i] + 1);
    return off;
}
static int64_t higan__ctc_target_offset(int64_t b, const int *target_lengths) {
    int64_t i, off = 0;
    for (i = 0; i < b; ++i) off += target_lengths[i];
    return off;
}
HIGAN_DEF int64_t higan_ctc_alpha_floats(int64_t T, int64_t B, const int *target_lengths) {
    return higan__ctc_alpha_offset(T, B, target_lengths);
}
/* Label of extended position s (blank, l1, blank, l2, ..., blank). */
static int higan__ctc_label(const int *tg, int64_t s, int blank) { return (s & 1) ? tg[s / 2] : blank; }
/* log(exp(a) + exp(b) + exp(c)) the way PyTorch's CPU kernel computes it. */
static float higan__lse3(float a, float b, float c) {
    float m = a;
    if (b > m) m = b;
    if (c > m) m = c;
    if (m == -INFINITY) m = 0.0f;   /* cannot do -inf - -inf */
    return logf(expf(a - m) + expf(b - m) + expf(c - m)) + m;
}

HIGAN_DEF void higan_ctc_loss_forward(float *y, float *nll, float *alpha, const float *log_probs,
                                      const int *targets, const int *input_lengths,
                                      const int *target_lengths, int64_t T, int64_t B, int64_t C,
                                      int blank, int zero_infinity) {
    int64_t b;
    float sum = 0.0f;
    HIGAN_ASSERT(T > 0 && B > 0 && C > 0 && blank >= 0 && blank < C);
    HIGAN__PARALLEL_FOR_IF(B > 1 && T * C > 4096)
    for (b = 0; b < B; ++b) {
        int64_t Tb = input_lengths[b], L = target_lengths[b], S = 2 * L + 1, t, s;
        const int *tg = targets + higan__ctc_target_offset(b, target_lengths);
        float *la = alpha + higan__ctc_alpha_offset(T, b, target_lengths);   /* [T,S] */
        float v;
        HIGAN_ASSERT(Tb >= 0 && Tb <= T && L >= 0);
        for (s = 0; s < L; ++s) HIGAN_ASSERT(tg[s] >= 0 && tg[s] < C);
        for (s = 0; s < T * S; ++s) la[s] = -INFINITY;
        if (Tb == 0) v = L == 0 ? 0.0f : INFINITY;
        else {
            const float *lp = log_probs + b * C;   /* row t at lp + t*B*C */
            la[0] = lp[blank];
            if (L > 0) la[1] = lp[tg[0]];
            for (t = 1; t < Tb; ++t) {
                const float *prev = la + (t - 1) * S, *lpt = lp + t * B * C;
                float *cur = la + t * S;
                for (s = 0; s < S; ++s) {
                    int l = higan__ctc_label(tg, s, blank);
                    float a2 = s > 0 ? prev[s - 1] : -INFINITY;
                    float a3 = (s > 1 && higan__ctc_label(tg, s - 2, blank) != l) ? prev[s - 2] : -INFINITY;
                    cur[s] = higan__lse3(prev[s], a2, a3) + lpt[l];
                }
            }
            if (L == 0) v = -la[(Tb - 1) * S];
            else {
                float l1 = la[(Tb - 1) * S + 2 * L], l2 = la[(Tb - 1) * S + 2 * L - 1];
                float m = l1 > l2 ? l1 : l2;
                if (m == -INFINITY) m = 0.0f;
                v = -(logf(expf(l1 - m) + expf(l2 - m)) + m);
            }
        }
        nll[b] = v;
    }
    for (b = 0; b < B; ++b) {
        float v = nll[b];
        if (zero_infinity && v == INFINITY) v = 0.0f;
        sum += v / (float)(target_lengths[b] > 1 ? target_lengths[b] : 1);
    }
    y[0] = sum / (float)B;
}

HIGAN_DEF higan_status higan_ctc_loss_backward(float *dlog_probs, const float *dy,
                                               const float *log_probs, const float *nll,
                                               const float *alpha, const int *targets,
                                               const int *input_lengths, const int *target_lengths,
                                               int64_t T, int64_t B, int64_t C, int blank,
                                               int zero_infinity, higan_arena *scratch) {
    int64_t b, Smax = 1, per;
    size_t mark;
    float *work;
    if (!dlog_probs) return HIGAN_OK;
    for (b = 0; b < B; ++b) if (2 * (int64_t)target_lengths[b] + 1 > Smax) Smax = 2 * (int64_t)target_lengths[b] + 1;
    per = 2 * Smax + C;
    mark = higan_arena_mark(scratch);
    work = higan_arena_floats(scratch, B * per);
    if (!work) { higan_arena_release(scratch, mark); return HIGAN_ERR_NOMEM; }
    HIGAN__PARALLEL_FOR_IF(B > 1 && T * C > 4096)
    for (b = 0; b < B; ++b) {
        int64_t Tb = input_lengths[b], L = target_lengths[b], S = 2 * L + 1, t, s, c;
        const int *tg = targets + higan__ctc_target_offset(b, target_lengths);
        const float *la = alpha + higan__ctc_alpha_offset(T, b, target_lengths);
        const float *lp = log_probs + b * C;
        float *gb = dlog_probs + b * C;
        float *lb_next = work + b * per, *lb_cur = lb_next + Smax, *lcab = lb_cur + Smax;
        float v = nll[b];
        float gr = dy[0] / (float)B / (float)(L > 1 ? L : 1);
        if (Tb == 0 || (zero_infinity && v == INFINITY)) continue;    /* zero gradient */
        for (t = Tb - 1; t >= 0; --t) {
            const float *lpt = lp + t * B * C, *lat = la + t * S;
            float *tmp;
            for (c = 0; c < C; ++c) lcab[c] = -INFINITY;
            if (t == Tb - 1) {
                /* beta starts at the last two extended positions */
                for (s = 0; s < S; ++s) lb_cur[s] = -INFINITY;
                lb_cur[2 * L] = lpt[blank];
                lcab[blank] = lat[2 * L] + lb_cur[2 * L];
                if (L > 0) {
                    int l = higan__ctc_label(tg, 2 * L - 1, blank);
                    lb_cur[2 * L - 1] = lpt[l];
                    lcab[l] = lat[2 * L - 1] + lb_cur[2 * L - 1];
                }
            } else {
                for (s = 2 * L; s >= 0; --s) {
                    int l = higan__ctc_label(tg, s, blank);
                    float b2 = s < 2 * L ? lb_next[s + 1] : -INFINITY;
                    float b3 = (s < 2 * L - 1 && higan__ctc_label(tg, s + 2, blank) != l) ? lb_next[s + 2] : -INFINITY;
                    float lab;
                    lb_cur[s] = higan__lse3(lb_next[s], b2, b3) + lpt[l];
                    lab = lat[s] + lb_cur[s];
                    if (lcab[l] == -INFINITY) lcab[l] = lab;
                    else {
                        float m = lcab[l] > lab ? lcab[l] : lab;
                        lcab[l] = logf(expf(lcab[l] - m) + expf(lab - m)) + m;
                    }
                }
            }
            for (c = 0; c < C; ++c)
                gb[t * B * C + c] += (expf(lpt[c]) - expf(lcab[c] + v - lpt[c])) * gr;
            tmp = lb_next; lb_next = lb_cur; lb_cur = tmp;
        }
    }
    higan_arena_release(scratch, mark);
    return HIGAN_OK;
}

typedef struct {
    higan_var *lp, *y;
    int *targets, *input_lengths, *target_lengths;
    float *nll, *alpha;
    int64_t T, B, C;
    int blank, zero_infinity;
} higan__ctc_ctx;

static void higan__ctc_backward_op(higan_tape *t, void *p) {
    higan__ctc_ctx *c = (higan__ctc_ctx *)p;
    float *dlp = higan_var_grad(t, c->lp);
    size_t mark;
    if (!dlp) return;
    mark = higan_arena_mark(t->arena);
    higan_ctc_loss_backward(dlp, c->y->grad, c->lp->data, c->nll, c->alpha, c->targets,
                            c->input_lengths, c->target_lengths, c->T, c->B, c->C, c->blank,
                            c->zero_infinity, t->arena);
    higan_arena_release(t->arena, mark);
}

HIGAN_DEF higan_var *higan_ctc_loss(higan_tape *t, higan_var *log_probs, const int *targets,
                                    const int *input_lengths, const int *target_lengths,
                                    int blank, int zero_infinity) {
    int64_t T, B, C, ntg, one = 1, k;
    higan_var *y;
    higan__ctc_ctx *c;
    int *ints;
    float *nll, *alpha;
    if (!log_probs) return NULL;
    HIGAN_ASSERT(log_probs->ndim == 3 && targets && input_lengths && target_lengths);
    T = log_probs->shape[0]; B = log_probs->shape[1]; C = log_probs->shape[2];
    ntg = higan__ctc_target_offset(B, target_lengths);
    for (k = 0; k < B; ++k) HIGAN_ASSERT(input_lengths[k] >= 0 && input_lengths[k] <= T && target_lengths[k] >= 0);
    if (!(y = higan_op_output(t, 1, &one, &log_probs, 1))) return NULL;
    nll = higan_arena_floats(t->arena, B);
    alpha = higan_arena_floats(t->arena, higan_ctc_alpha_floats(T, B, target_lengths));
    if (!nll || !alpha) return NULL;
    higan_ctc_loss_forward(y->data, nll, alpha, log_probs->data, targets, input_lengths,
                           target_lengths, T, B, C, blank, zero_infinity);
    if (y->requires_grad) {
        if (!(c = (higan__ctc_ctx *)higan_tape_ctx(t, sizeof *c))) return NULL;
        if (!(ints = (int *)higan_arena_alloc(t->arena, (size_t)(ntg + 2 * B) * sizeof(int)))) return NULL;
        c->input_lengths = ints; c->target_lengths = ints + B; c->targets = ints + 2 * B;
        memcpy(c->input_lengths, input_lengths, (size_t)B * sizeof(int));
        memcpy(c->target_lengths, target_lengths, (size_t)B * sizeof(int));
        if (ntg) memcpy(c->targets, targets, (size_t)ntg * sizeof(int));
        c->lp = log_probs; c->y = y; c->nll = nll; c->alpha = alpha;
        c->T = T; c->B = B; c->C = C; c->blank = blank; c->zero_infinity = zero_infinity;
        higan_tape_record(t, y, higan__ctc_backward_op, c);
    }
    return y;
}

/* ---- greedy CTC decoding ----------------------------------------------------------- */
HIGAN_DEF int higan_ctc_greedy_decode_strided(const float *scores, int64_t step_stride, int T,
                                              int C, int blank, int *out, int max_out) {
    int t, c, n = 0, prev = -1;
    for (t = 0; t < T; ++t) {
        const float *row = scores + (int64_t)t * step_stride;
        int best = 0;
        for (c = 1; c < C; ++c) if (row[c] > row[best]) best = c;
        if (best != prev && best != blank) {
            if (out && n < max_out) out[n] = best;
            ++n;
        }
        prev = best;
    }
    return n;
}
HIGAN_DEF int higan_ctc_greedy_decode(const float *scores, int T, int C, int blank, int *out,
                                      int max_out) {
    return higan_ctc_greedy_decode_strided(scores, C, T, C, blank, out, max_out);
}

/* ---- cross-entropy --------------------------------------------------------------------- */
HIGAN_DEF void higan_cross_entropy_forward(float *y, float *lse, const float *logits,
                                           const int *labels, int64_t N, int64_t C) {
    int64_t n;
    double sum = 0.0;
    HIGAN_ASSERT(N > 0 && C > 0);
    for (n = 0; n < N; ++n) {
        const float *x = logits + n * C;
        float m = x[0], l;
        double e = 0.0;
        int64_t c;
        HIGAN_ASSERT(labels[n] >= 0 && labels[n] < C);
        for (c = 1; c < C; ++c) if (x[c] > m) m = x[c];
        for (c = 0; c < C; ++c) e += exp((double)(x[c] - m));
        l = (float)log(e) + m;
        if (lse) lse[n] = l;
        sum += (double)(l - x[labels[n]]);
    }
    y[0] = (float)(sum / (double)N);
}
HIGAN_DEF void higan_cross_entropy_backward(float *dlogits, const float *dy, const float *logits,
                                            const float *lse, const int *labels, int64_t N,
                                            int64_t C) {
    int64_t n;
    float g;
    if (!dlogits) return;
    g = dy[0] / (float)N;
    HIGAN__PARALLEL_FOR_IF(N * C > 65536)
    for (n = 0; n < N; ++n) {
        int64_t c;
        for (c = 0; c < C; ++c) {
            float p = expf(logits[n * C + c] - lse[n]);
            dlogits[n * C + c] += g * (p - (c == labels[n] ? 1.0f : 0.0f));
        }
    }
}

typedef struct { higan_var *x, *y; float *lse; int *labels; } higan__ce_ctx;
static void higan__ce_backward_op(higan_tape *t, void *p) {
    higan__ce_ctx *c = (higan__ce_ctx *)p;
    float *dx = higan_var_grad(t, c->x);
    if (dx) higan_cross_entropy_backward(dx, c->y->grad, c->x->data, c->lse, c->labels,
                                         c->x->shape[0], c->x->shape[1]);
}
HIGAN_DEF higan_var *higan_cross_entropy(higan_tape *t, higan_var *logits, const int *labels) {
    int64_t N, C, one = 1;
    higan_var *y;
    higan__ce_ctx *c;
    float *lse;
    if (!logits) return NULL;
    HIGAN_ASSERT(logits->ndim == 2 && labels);
    N = logits->shape[0]; C = logits->shape[1];
    if (!(y = higan_op_output(t, 1, &one, &logits, 1))) return NULL;
    if (!(lse = higan_arena_floats(t->arena, N))) return NULL;
    higan_cross_entropy_forward(y->data, lse, logits->data, labels, N, C);
    if (y->requires_grad) {
        if (!(c = (higan__ce_ctx *)higan_tape_ctx(t, sizeof *c))) return NULL;
        if (!(c->labels = (int *)higan_arena_alloc(t->arena, (size_t)N * sizeof(int)))) return NULL;
        memcpy(c->labels, labels, (size_t)N * sizeof(int));
        c->x = logits; c->y = y; c->lse = lse;
        higan_tape_record(t, y, higan__ce_backward_op, c);
    }
    return y;
}
