/* ==== NORMALISATION OPS (implementation) ================================================
   Reductions are accumulated in double inside one thread; parallel loops only split
   independent outputs (rows, channels, planes), so results do not depend on the threads. */

/* ---- spectral norm -------------------------------------------------------------------- */
#define HIGAN__SN_BLOCK 64   /* columns per block of v = u0 W (W is then streamed by rows) */

HIGAN_DEF float higan_spectral_norm_sigma(float *u, float *v, const float *w, const float *u0,
                                          int64_t out, int64_t in, float eps) {
    int64_t j0, i, j;
    double nv = 0, nt = 0, sigma = 0;
    float dv, dt;
    /* v [in] = u0 [out] . W [out, in], blocks of columns so each thread owns its columns */
    HIGAN__PARALLEL_FOR_IF(out * in >= 65536)
    for (j0 = 0; j0 < in; j0 += HIGAN__SN_BLOCK) {
        double acc[HIGAN__SN_BLOCK];
        int64_t jn = in - j0 < HIGAN__SN_BLOCK ? in - j0 : HIGAN__SN_BLOCK, ii, jj;
        for (jj = 0; jj < jn; ++jj) acc[jj] = 0;
        for (ii = 0; ii < out; ++ii) {
            const float *wr = w + ii * in + j0;
            double ui = (double)u0[ii];
            for (jj = 0; jj < jn; ++jj) acc[jj] += ui * (double)wr[jj];
        }
        for (jj = 0; jj < jn; ++jj) v[j0 + jj] = (float)acc[jj];
    }
    /* F.normalize: a / max(||a||, eps) */
    for (j = 0; j < in; ++j) nv += (double)v[j] * (double)v[j];
    nv = sqrt(nv);
    dv = (float)(nv > (double)eps ? nv : (double)eps);
    for (j = 0; j < in; ++j) v[j] = v[j] / dv;
    /* t [out] = v . W^T (kept in u until normalised; u may alias u0, no longer needed) */
    HIGAN__PARALLEL_FOR_IF(out * in >= 65536)
    for (i = 0; i < out; ++i) {
        const float *wr = w + i * in;
        double acc = 0;
        int64_t jj;
        for (jj = 0; jj < in; ++jj) acc += (double)wr[jj] * (double)v[jj];
        u[i] = (float)acc;
    }
    for (i = 0; i < out; ++i) nt += (double)u[i] * (double)u[i];
    nt = sqrt(nt);
    dt = (float)(nt > (double)eps ? nt : (double)eps);
    /* sigma = t . u with u = normalize(t), as BigGAN's (v W^T) u^T */
    for (i = 0; i < out; ++i) {
        float ui = u[i] / dt;
        sigma += (double)u[i] * (double)ui;
        u[i] = ui;
    }
    return (float)sigma;
}

/* y, w: [out, in]; u [out], v [in]; sigma [1] */
HIGAN_DEF void higan_spectral_norm_forward(float *y, float *u, float *v, float *sigma,
                                           const float *w, const float *u0,
                                           int64_t out, int64_t in, float eps) {
    int64_t i;
    float s = higan_spectral_norm_sigma(u, v, w, u0, out, in, eps);
    *sigma = s;
    HIGAN__PARALLEL_FOR_IF(out * in >= 65536)
    for (i = 0; i < out; ++i) {
        int64_t j;
        for (j = 0; j < in; ++j) y[i * in + j] = w[i * in + j] / s;
    }
}

/* dw, dy, w: [out, in]; u [out], v [in] */
HIGAN_DEF void higan_spectral_norm_backward(float *dw, const float *dy, const float *w,
                                            const float *u, const float *v, float sigma,
                                            int64_t out, int64_t in) {
    int64_t k, i, n = out * in;
    double dot = 0;
    float coef;
    if (!dw) return;
    /* d sigma = -sum(dy * W) / sigma^2; sigma = u^T W v so d sigma / dW = u v^T */
    for (k = 0; k < n; ++k) dot += (double)dy[k] * (double)w[k];
    coef = (float)(dot / ((double)sigma * (double)sigma));
    HIGAN__PARALLEL_FOR_IF(n >= 65536)
    for (i = 0; i < out; ++i) {
        float ci = coef * u[i];
        int64_t j;
        for (j = 0; j < in; ++j) dw[i * in + j] += dy[i * in + j] / sigma - ci * v[j];
    }
}

typedef struct { higan_var *w, *y; float *u, *v; float sigma; int64_t out, in; } higan__sn_ctx;

static void higan__sn_backward_op(higan_tape *t, void *p) {
    higan__sn_ctx *c = (higan__sn_ctx *)p;
    float *dw = higan_var_grad(t, c->w);
    if (dw) higan_spectral_norm_backward(dw, c->y->grad, c->w->data, c->u, c->v, c->sigma,
                                         c->out, c->in);
}

HIGAN_DEF higan_var *higan_spectral_norm(higan_tape *t, higan_var *w, float *u0, float *sv0,
                                         int64_t out_features, int train) {
    higan_var *y;
    higan__sn_ctx *c = NULL;
    float *u, *v, sigma;
    int64_t n, in, i;
    if (!w) return NULL;
    n = higan_var_numel(w);
    HIGAN_ASSERT(u0 != NULL && out_features > 0 && n % out_features == 0);
    in = n / out_features;
    if (!(y = higan_op_output(t, w->ndim, w->shape, &w, 1))) return NULL;
    u = higan_arena_floats(t->arena, out_features);
    v = higan_arena_floats(t->arena, in);
    if (!u || !v) return NULL;
    if (y->requires_grad && !(c = (higan__sn_ctx *)higan_tape_ctx(t, sizeof *c))) return NULL;
    higan_spectral_norm_forward(y->data, u, v, &sigma, w->data, u0, out_features, in,
                                HIGAN_SN_EPS);
    if (train) {   /* BigGAN updates the buffers in training mode only */
        for (i = 0; i < out_features; ++i) u0[i] = u[i];
        if (sv0) sv0[0] = sigma;
    }
    if (c) {
        c->w = w; c->y = y; c->u = u; c->v = v; c->sigma = sigma;
        c->out = out_features; c->in = in;
        higan_tape_record(t, y, higan__sn_backward_op, c);
    }
    return y;
}

/* ---- batch statistics (the one place for BN / CBN statistics) --------------------------- */
/* x [N, C, HW]; mean, rstd, running_mean, running_var [C] */
HIGAN_DEF void higan_batch_norm_stats(float *mean, float *rstd, float *running_mean,
                                      float *running_var, const float *x, float momentum,
                                      float eps, int batch_stats,
                                      int64_t N, int64_t C, int64_t HW) {
    int64_t c, M = N * HW;
    if (!batch_stats) {
        HIGAN_ASSERT(running_mean != NULL && running_var != NULL);
        for (c = 0; c < C; ++c) {
            mean[c] = running_mean[c];
            rstd[c] = (float)(1.0 / sqrt((double)running_var[c] + (double)eps));
        }
        return;
    }
    HIGAN_ASSERT(M > 0);
    HIGAN_ASSERT(M > 1 || running_var == NULL);   /* unbiased variance needs 2 values */
    HIGAN__PARALLEL_FOR_IF(M * C >= 32768)
    for (c = 0; c < C; ++c) {
        double s = 0, q = 0, m, var;
        int64_t nn, k;
        for (nn = 0; nn < N; ++nn) {
            const float *xp = x + (nn * C + c) * HW;
            for (k = 0; k < HW; ++k) s += (double)xp[k];
        }
        m = s / (double)M;
        for (nn = 0; nn < N; ++nn) {   /* two passes: no cancellation in the variance */
            const float *xp = x + (nn * C + c) * HW;
            for (k = 0; k < HW; ++k) { double d = (double)xp[k] - m; q += d * d; }
        }
        var = q / (double)M;
        mean[c] = (float)m;
        rstd[c] = (float)(1.0 / sqrt(var + (double)eps));
        if (running_mean)
            running_mean[c] = (float)((double)momentum * m + (1.0 - (double)momentum) * (double)running_mean[c]);
        if (running_var)
            running_var[c] = (float)((double)momentum * (q / (double)(M - 1)) +
                                     (1.0 - (double)momentum) * (double)running_var[c]);
    }
}

/* y = x_hat * g + b per plane (n, c), with g = scale_c[c] | 1 + gain_nc[n, c] | 1 and
   b = shift_c[c] | shift_nc[n, c] | 0. x, y [N, C, HW]. */
static void higan__norm_apply(float *y, const float *x, const float *mean, const float *rstd,
                              const float *scale_c, const float *shift_c,
                              const float *gain_nc, const float *shift_nc,
                              int64_t N, int64_t C, int64_t HW) {
    int64_t p;
    HIGAN__PARALLEL_FOR_IF(N * C * HW >= 32768)
    for (p = 0; p < N * C; ++p) {
        int64_t c = p % C, k;
        float m = mean[c], r = rstd[c];
        float g = scale_c ? scale_c[c] : gain_nc ? 1.0f + gain_nc[p] : 1.0f;
        float b = shift_c ? shift_c[c] : shift_nc ? shift_nc[p] : 0.0f;
        const float *xp = x + p * HW;
        float *yp = y + p * HW;
        for (k = 0; k < HW; ++k) yp[k] = (xp[k] - m) * r * g + b;
    }
}

/* Backward of higan__norm_apply (+ of the statistics when batch_stats). Per channel c:
   dxh = dy * g;  dx = rstd * (dxh - mean(dxh) - x_hat * mean(dxh * x_hat))  (batch_stats)
                  dx = rstd * dxh                                           (fixed stats)
   d scale_c / d shift_c [C] and d gain_nc / d shift_nc [N, C] get sum(dy * x_hat), sum(dy). */
static void higan__norm_backward(float *dx, float *dscale_c, float *dshift_c,
                                 float *dgain_nc, float *dshift_nc, const float *dy,
                                 const float *x, const float *mean, const float *rstd,
                                 const float *scale_c, const float *gain_nc, int batch_stats,
                                 int64_t N, int64_t C, int64_t HW) {
    int64_t c;
    double M = (double)(N * HW);
    HIGAN__PARALLEL_FOR_IF(N * C * HW >= 32768)
    for (c = 0; c < C; ++c) {
        double sum_g_dy = 0, sum_g_dyxh = 0, all_dy = 0, all_dyxh = 0;
        float m = mean[c], r = rstd[c];
        int64_t nn, k;
        for (nn = 0; nn < N; ++nn) {
            const float *xp = x + (nn * C + c) * HW, *gp = dy + (nn * C + c) * HW;
            double s = 0, sx = 0, g;
            for (k = 0; k < HW; ++k) {
                float xh = (xp[k] - m) * r;
                s += (double)gp[k];
                sx += (double)gp[k] * (double)xh;
            }
            g = scale_c ? (double)scale_c[c] : gain_nc ? (double)(1.0f + gain_nc[nn * C + c]) : 1.0;
            if (dgain_nc) dgain_nc[nn * C + c] += (float)sx;
            if (dshift_nc) dshift_nc[nn * C + c] += (float)s;
            all_dy += s; all_dyxh += sx;
            sum_g_dy += g * s; sum_g_dyxh += g * sx;
        }
        if (dscale_c) dscale_c[c] += (float)all_dyxh;
        if (dshift_c) dshift_c[c] += (float)all_dy;
        if (dx) {
            float a = batch_stats ? (float)(sum_g_dy / M) : 0.0f;
            float b = batch_stats ? (float)(sum_g_dyxh / M) : 0.0f;
            for (nn = 0; nn < N; ++nn) {
                const float *xp = x + (nn * C + c) * HW, *gp = dy + (nn * C + c) * HW;
                float *dp = dx + (nn * C + c) * HW;
                float g = scale_c ? scale_c[c] : gain_nc ? 1.0f + gain_nc[nn * C + c] : 1.0f;
                for (k = 0; k < HW; ++k) {
                    float xh = (xp[k] - m) * r;
                    dp[k] += r * (gp[k] * g - a - xh * b);
                }
            }
        }
    }
}

/* ---- BatchNorm2d ------------------------------------------------------------------------ */
/* y, x [N, C, HW]; mean, rstd, weight, bias, running_* [C] */
HIGAN_DEF void higan_batch_norm2d_forward(float *y, float *mean, float *rstd, const float *x,
                                          const float *weight, const float *bias,
                                          float *running_mean, float *running_var,
                                          float momentum, float eps, int batch_stats,
                                          int64_t N, int64_t C, int64_t HW) {
    higan_batch_norm_stats(mean, rstd, running_mean, running_var, x, momentum, eps, batch_stats,
                           N, C, HW);
    higan__norm_apply(y, x, mean, rstd, weight, bias, NULL, NULL, N, C, HW);
}

/* dx, dy, x [N, C, HW]; dweight, dbias, mean, rstd, weight [C] */
HIGAN_DEF void higan_batch_norm2d_backward(float *dx, float *dweight, float *dbias,
                                           const float *dy, const float *x, const float *mean,
                                           const float *rstd, const float *weight,
                                           int batch_stats, int64_t N, int64_t C, int64_t HW) {
    if (!dx && !dweight && !dbias) return;
    higan__norm_backward(dx, dweight, dbias, NULL, NULL, dy, x, mean, rstd, weight, NULL,
                         batch_stats, N, C, HW);
}

typedef struct {
    higan_var *x, *w, *b, *y;   /* w, b: BN weight/bias or CBN gain/bias */
    float *mean, *rstd;
    int batch_stats, cond;
    int64_t N, C, HW;
} higan__bn_ctx;

static void higan__bn_backward_op(higan_tape *t, void *p) {
    higan__bn_ctx *c = (higan__bn_ctx *)p;
    float *dx = higan_var_grad(t, c->x);
    float *dw = c->w ? higan_var_grad(t, c->w) : NULL;
    float *db = c->b ? higan_var_grad(t, c->b) : NULL;
    if (!dx && !dw && !db) return;
    if (c->cond)
        higan__norm_backward(dx, NULL, NULL, dw, db, c->y->grad, c->x->data, c->mean, c->rstd,
                             NULL, c->w->data, c->batch_stats, c->N, c->C, c->HW);
    else
        higan__norm_backward(dx, dw, db, NULL, NULL, c->y->grad, c->x->data, c->mean, c->rstd,
                             c->w ? c->w->data : NULL, NULL, c->batch_stats, c->N, c->C, c->HW);
}

/* Shared tape op body of batch norm (cond 0: w, b are [C] or NULL) and conditional batch norm
   (cond 1: w = gain, b = bias, [N, C]). */
static higan_var *higan__bn_op(higan_tape *t, higan_var *x, higan_var *w, higan_var *b,
                               float *running_mean, float *running_var, float momentum,
                               float eps, int train, int cond) {
    higan_var *ins[3];
    higan_var *y;
    higan__bn_ctx *c = NULL;
    float *mean, *rstd;
    int64_t N, C, HW = 1;
    int n_in = 0, d, batch_stats;
    HIGAN_ASSERT(x->ndim >= 2);
    N = x->shape[0]; C = x->shape[1];
    for (d = 2; d < x->ndim; ++d) HW *= x->shape[d];
    if (w) HIGAN_ASSERT(higan_var_numel(w) == (cond ? N * C : C));
    if (b) HIGAN_ASSERT(higan_var_numel(b) == (cond ? N * C : C));
    /* like nn.BatchNorm: without running stats the batch statistics are used in eval too */
    batch_stats = train || !running_mean || !running_var;
    ins[n_in++] = x;
    if (w) ins[n_in++] = w;
    if (b) ins[n_in++] = b;
    if (!(y = higan_op_output(t, x->ndim, x->shape, ins, n_in))) return NULL;
    mean = higan_arena_floats(t->arena, C);
    rstd = higan_arena_floats(t->arena, C);
    if (!mean || !rstd) return NULL;
    if (y->requires_grad && !(c = (higan__bn_ctx *)higan_tape_ctx(t, sizeof *c))) return NULL;
    /* eval without running stats: batch statistics but nothing to update */
    if (batch_stats && !train) running_mean = running_var = NULL;
    higan_batch_norm_stats(mean, rstd, running_mean, running_var, x->data, momentum, eps,
                           batch_stats, N, C, HW);
    if (cond)
        higan__norm_apply(y->data, x->data, mean, rstd, NULL, NULL, w->data, b->data, N, C, HW);
    else
        higan__norm_apply(y->data, x->data, mean, rstd, w ? w->data : NULL, b ? b->data : NULL,
                          NULL, NULL, N, C, HW);
    if (c) {
        c->x = x; c->w = w; c->b = b; c->y = y; c->mean = mean; c->rstd = rstd;
        c->batch_stats = batch_stats; c->cond = cond; c->N = N; c->C = C; c->HW = HW;
        higan_tape_record(t, y, higan__bn_backward_op, c);
    }
    return y;
}

HIGAN_DEF higan_var *higan_batch_norm2d(higan_tape *t, higan_var *x, higan_var *weight,
                                        higan_var *bias, float *running_mean,
                                        float *running_var, int64_t *num_batches_tracked,
                                        float momentum, float eps, int train) {
    higan_var *y;
    if (!x) return NULL;
    y = higan__bn_op(t, x, weight, bias, running_mean, running_var, momentum, eps, train, 0);
    if (y && train && num_batches_tracked) ++*num_batches_tracked;
    return y;
}

/* ---- conditional batch norm ------------------------------------------------------------- */
/* y, x [N, C, HW]; mean, rstd, running_* [C]; gain, bias [N, C] */
HIGAN_DEF void higan_cond_batch_norm_forward(float *y, float *mean, float *rstd, const float *x,
                                             const float *gain, const float *bias,
                                             float *running_mean, float *running_var,
                                             float momentum, float eps, int batch_stats,
                                             int64_t N, int64_t C, int64_t HW) {
    higan_batch_norm_stats(mean, rstd, running_mean, running_var, x, momentum, eps, batch_stats,
                           N, C, HW);
    higan__norm_apply(y, x, mean, rstd, NULL, NULL, gain, bias, N, C, HW);
}

/* dx, dy, x [N, C, HW]; dgain, dbias, gain [N, C]; mean, rstd [C] */
HIGAN_DEF void higan_cond_batch_norm_backward(float *dx, float *dgain, float *dbias,
                                              const float *dy, const float *x,
                                              const float *mean, const float *rstd,
                                              const float *gain, int batch_stats,
                                              int64_t N, int64_t C, int64_t HW) {
    if (!dx && !dgain && !dbias) return;
    higan__norm_backward(dx, NULL, NULL, dgain, dbias, dy, x, mean, rstd, NULL, gain,
                         batch_stats, N, C, HW);
}

HIGAN_DEF higan_var *higan_cond_batch_norm(higan_tape *t, higan_var *x, higan_var *gain,
                                           higan_var *bias, float *stored_mean,
                                           float *stored_var, float momentum, float eps,
                                           int train) {
    if (!x || !gain || !bias) return NULL;
    return higan__bn_op(t, x, gain, bias, stored_mean, stored_var, momentum, eps, train, 1);
}

/* ---- embedding -------------------------------------------------------------------------- */
/* weight [num, D]; idx [n_idx] */
HIGAN_DEF void higan_embedding_renorm(float *weight, const int *idx, int64_t n_idx, int64_t num,
                                      int64_t D, float max_norm) {
    int64_t i, j, k;
    for (i = 0; i < n_idx; ++i) {
        float *row;
        double nrm = 0, normf;
        HIGAN_ASSERT(idx[i] >= 0 && (int64_t)idx[i] < num);
        for (j = 0; j < i; ++j) if (idx[j] == idx[i]) break;
        if (j < i) continue;   /* each distinct row once, as PyTorch (sorted unique) */
        row = weight + (int64_t)idx[i] * D;
        for (k = 0; k < D; ++k) nrm += (double)row[k] * (double)row[k];
        normf = (double)(float)sqrt(nrm);   /* PyTorch takes the float norm as a double */
        if (normf > (double)max_norm) {
            float scale = (float)((double)max_norm / (normf + 1e-7));
            for (k = 0; k < D; ++k) row[k] *= scale;
        }
    }
}

/* y [n_idx, D]; weight [num, D] */
HIGAN_DEF void higan_embedding_forward(float *y, const float *weight, const int *idx,
                                       int64_t n_idx, int64_t num, int64_t D) {
    int64_t i;
    for (i = 0; i < n_idx; ++i) {
        HIGAN_ASSERT(idx[i] >= 0 && (int64_t)idx[i] < num);
        memcpy(y + i * D, weight + (int64_t)idx[i] * D, sizeof(float) * (size_t)D);
    }
}

/* dweight [num, D]; dy [n_idx, D]. Serial: rows may repeat (a reduction). */
HIGAN_DEF void higan_embedding_backward(float *dweight, const float *dy, const int *idx,
                                        int64_t n_idx, int64_t D, int padding_idx) {
    int64_t i, k;
    if (!dweight) return;
    for (i = 0; i < n_idx; ++i) {
        float *dr;
        const float *g = dy + i * D;
        if (padding_idx >= 0 && idx[i] == padding_idx) continue;
        dr = dweight + (int64_t)idx[i] * D;
        for (k = 0; k < D; ++k) dr[k] += g[k];
    }
}

typedef struct { higan_var *w, *y; int *idx; int64_t n_idx, D; int padding_idx; } higan__emb_ctx;

static void higan__emb_backward_op(higan_tape *t, void *p) {
    higan__emb_ctx *c = (higan__emb_ctx *)p;
    float *dw = higan_var_grad(t, c->w);
    if (dw) higan_embedding_backward(dw, c->y->grad, c->idx, c->n_idx, c->D, c->padding_idx);
}

HIGAN_DEF higan_var *higan_embedding(higan_tape *t, higan_var *weight, const int *idx,
                                     int64_t n_idx, int padding_idx, float max_norm) {
    higan_var *y;
    higan__emb_ctx *c = NULL;
    int64_t shape[2], num, D;
    if (!weight) return NULL;
    HIGAN_ASSERT(weight->ndim == 2 && n_idx >= 0 && (n_idx == 0 || idx != NULL));
    num = weight->shape[0]; D = weight->shape[1];
    shape[0] = n_idx; shape[1] = D;
    if (!(y = higan_op_output(t, 2, shape, &weight, 1))) return NULL;
    if (y->requires_grad) {
        if (!(c = (higan__emb_ctx *)higan_tape_ctx(t, sizeof *c))) return NULL;
        c->idx = (int *)higan_arena_alloc(t->arena, sizeof(int) * (size_t)(n_idx ? n_idx : 1));
        if (!c->idx) return NULL;
        if (n_idx) memcpy(c->idx, idx, sizeof(int) * (size_t)n_idx);
    }
    if (max_norm > 0) higan_embedding_renorm(weight->data, idx, n_idx, num, D, max_norm);
    higan_embedding_forward(y->data, weight->data, idx, n_idx, num, D);
    if (c) {
        c->w = weight; c->y = y; c->n_idx = n_idx; c->D = D; c->padding_idx = padding_idx;
        higan_tape_record(t, y, higan__emb_backward_op, c);
    }
    return y;
}
