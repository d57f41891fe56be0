/* ==== GAN LOSSES (HiGAN+): hinge, masked L1, KL, contextual ============== */
/* Reductions are accumulated in double, serially (bit-identical for any thread count). */

/* ---- hinge ---------------------------------------------------------------- */
/* x: [n] -> y: [1] = mean(relu(1 - x)) */
HIGAN_DEF void higan_hinge_d_real_forward(float *y, const float *x, int64_t n) {
    double s = 0;
    int64_t i;
    for (i = 0; i < n; ++i) { float v = 1.0f - x[i]; if (v > 0) s += v; }
    y[0] = (float)(s / (double)n);
}
/* dx: [n] += -dy/n where 1 - x > 0 (relu'(0) = 0 like PyTorch) */
HIGAN_DEF void higan_hinge_d_real_backward(float *dx, const float *dy, const float *x, int64_t n) {
    float g = -dy[0] / (float)n;
    int64_t i;
    if (!dx) return;
    for (i = 0; i < n; ++i) if (1.0f - x[i] > 0) dx[i] += g;
}
/* x: [n] -> y: [1] = mean(relu(1 + x)) */
HIGAN_DEF void higan_hinge_d_fake_forward(float *y, const float *x, int64_t n) {
    double s = 0;
    int64_t i;
    for (i = 0; i < n; ++i) { float v = 1.0f + x[i]; if (v > 0) s += v; }
    y[0] = (float)(s / (double)n);
}
HIGAN_DEF void higan_hinge_d_fake_backward(float *dx, const float *dy, const float *x, int64_t n) {
    float g = dy[0] / (float)n;
    int64_t i;
    if (!dx) return;
    for (i = 0; i < n; ++i) if (1.0f + x[i] > 0) dx[i] += g;
}
/* x: [n] -> y: [1] = -mean(x) */
HIGAN_DEF void higan_hinge_g_forward(float *y, const float *x, int64_t n) {
    double s = 0;
    int64_t i;
    for (i = 0; i < n; ++i) s += x[i];
    y[0] = (float)(-s / (double)n);
}
HIGAN_DEF void higan_hinge_g_backward(float *dx, const float *dy, int64_t n) {
    float g = -dy[0] / (float)n;
    int64_t i;
    if (!dx) return;
    for (i = 0; i < n; ++i) dx[i] += g;
}

typedef struct { higan_var *x, *y; int kind; } higan__hinge_ctx;   /* kind 0 real, 1 fake, 2 g */
static void higan__hinge_backward_op(higan_tape *t, void *p) {
    higan__hinge_ctx *c = (higan__hinge_ctx *)p;
    float *dx = higan_var_grad(t, c->x);
    int64_t n = higan_var_numel(c->x);
    if (!dx) return;
    if (c->kind == 0) higan_hinge_d_real_backward(dx, c->y->grad, c->x->data, n);
    else if (c->kind == 1) higan_hinge_d_fake_backward(dx, c->y->grad, c->x->data, n);
    else higan_hinge_g_backward(dx, c->y->grad, n);
}
static higan_var *higan__hinge_op(higan_tape *t, higan_var *x, int kind) {
    int64_t one = 1, n;
    higan_var *y;
    higan__hinge_ctx *c;
    if (!x || !(y = higan_op_output(t, 1, &one, &x, 1))) return NULL;
    n = higan_var_numel(x);
    HIGAN_ASSERT(n > 0);
    if (kind == 0) higan_hinge_d_real_forward(y->data, x->data, n);
    else if (kind == 1) higan_hinge_d_fake_forward(y->data, x->data, n);
    else higan_hinge_g_forward(y->data, x->data, n);
    if (y->requires_grad) {
        if (!(c = (higan__hinge_ctx *)higan_tape_ctx(t, sizeof *c))) return NULL;
        c->x = x; c->y = y; c->kind = kind;
        higan_tape_record(t, y, higan__hinge_backward_op, c);
    }
    return y;
}
HIGAN_DEF higan_var *higan_hinge_d_real(higan_tape *t, higan_var *x) { return higan__hinge_op(t, x, 0); }
HIGAN_DEF higan_var *higan_hinge_d_fake(higan_tape *t, higan_var *x) { return higan__hinge_op(t, x, 1); }
HIGAN_DEF higan_var *higan_hinge_g(higan_tape *t, higan_var *x) { return higan__hinge_op(t, x, 2); }

/* ---- masked L1 (recn_l1_loss) --------------------------------------------- */
static double higan__masked_l1_divisor(const int *lens, int64_t N, int64_t M) {
    double s = 0;
    int64_t n;
    for (n = 0; n < N; ++n) s += (double)lens[n];
    return (double)M * s;
}
/* a, b: [N, M, W], lens: [N] -> y: [1] */
HIGAN_DEF void higan_masked_l1_forward(float *y, const float *a, const float *b, const int *lens,
                                       int64_t N, int64_t M, int64_t W) {
    double s = 0;
    int64_t n, m, w;
    for (n = 0; n < N; ++n) {
        int64_t len = lens[n] < W ? lens[n] : W;
        for (m = 0; m < M; ++m) {
            const float *pa = a + (n * M + m) * W, *pb = b + (n * M + m) * W;
            for (w = 0; w < len; ++w) s += fabsf(pa[w] - pb[w]);
        }
    }
    y[0] = (float)(s / higan__masked_l1_divisor(lens, N, M));
}
/* da, db: [N, M, W] += +-dy * sign(a - b) / divisor inside the mask */
HIGAN_DEF void higan_masked_l1_backward(float *da, float *db, const float *dy, const float *a,
                                        const float *b, const int *lens,
                                        int64_t N, int64_t M, int64_t W) {
    float g = (float)((double)dy[0] / higan__masked_l1_divisor(lens, N, M));
    int64_t n, m, w;
    if (!da && !db) return;
    for (n = 0; n < N; ++n) {
        int64_t len = lens[n] < W ? lens[n] : W;
        for (m = 0; m < M; ++m) {
            int64_t o = (n * M + m) * W;
            for (w = 0; w < len; ++w) {
                float d = a[o + w] - b[o + w];
                float s = d > 0 ? g : (d < 0 ? -g : 0.0f);    /* sign(0) = 0 like PyTorch */
                if (da) da[o + w] += s;
                if (db) db[o + w] -= s;
            }
        }
    }
}
typedef struct { higan_var *a, *b, *y; int *lens; } higan__masked_l1_ctx;
static void higan__masked_l1_dims(const higan_var *a, int64_t *N, int64_t *M, int64_t *W) {
    int d;
    *N = a->shape[0]; *W = a->shape[a->ndim - 1]; *M = 1;
    for (d = 1; d < a->ndim - 1; ++d) *M *= a->shape[d];
}
static void higan__masked_l1_backward_op(higan_tape *t, void *p) {
    higan__masked_l1_ctx *c = (higan__masked_l1_ctx *)p;
    float *da = higan_var_grad(t, c->a), *db = higan_var_grad(t, c->b);
    int64_t N, M, W;
    higan__masked_l1_dims(c->a, &N, &M, &W);
    higan_masked_l1_backward(da, db, c->y->grad, c->a->data, c->b->data, c->lens, N, M, W);
}
HIGAN_DEF higan_var *higan_masked_l1(higan_tape *t, higan_var *a, higan_var *b, const int *lens) {
    higan_var *in[2];
    higan_var *y;
    higan__masked_l1_ctx *c;
    int64_t one = 1, N, M, W;
    int d;
    if (!a || !b) return NULL;
    HIGAN_ASSERT(a->ndim >= 2 && a->ndim == b->ndim && lens);
    for (d = 0; d < a->ndim; ++d) HIGAN_ASSERT(a->shape[d] == b->shape[d]);
    in[0] = a; in[1] = b;
    if (!(y = higan_op_output(t, 1, &one, in, 2))) return NULL;
    higan__masked_l1_dims(a, &N, &M, &W);
    higan_masked_l1_forward(y->data, a->data, b->data, lens, N, M, W);
    if (y->requires_grad) {
        if (!(c = (higan__masked_l1_ctx *)higan_tape_ctx(t, sizeof *c))) return NULL;
        if (!(c->lens = (int *)higan_arena_alloc(t->arena, sizeof(int) * (size_t)N))) return NULL;
        memcpy(c->lens, lens, sizeof(int) * (size_t)N);
        c->a = a; c->b = b; c->y = y;
        higan_tape_record(t, y, higan__masked_l1_backward_op, c);
    }
    return y;
}

/* ---- KL of a diagonal Gaussian (KLloss) ------------------------------------ */
/* mu, logvar: [N, D] -> y: [1] = mean_n -1/2 sum_d (1 + logvar - mu^2 - exp(logvar)) */
HIGAN_DEF void higan_kl_gaussian_forward(float *y, const float *mu, const float *logvar, int64_t N, int64_t D) {
    double s = 0;
    int64_t i;
    for (i = 0; i < N * D; ++i)
        s += (double)(1.0f + logvar[i] - mu[i] * mu[i] - expf(logvar[i]));
    y[0] = (float)(-0.5 * s / (double)N);
}
/* dmu += dy*mu/N, dlogvar += dy*(exp(logvar) - 1)/(2N) */
HIGAN_DEF void higan_kl_gaussian_backward(float *dmu, float *dlogvar, const float *dy, const float *mu,
                                          const float *logvar, int64_t N, int64_t D) {
    float g = dy[0] / (float)N;
    int64_t i;
    if (dmu) for (i = 0; i < N * D; ++i) dmu[i] += g * mu[i];
    if (dlogvar) for (i = 0; i < N * D; ++i) dlogvar[i] += 0.5f * g * (expf(logvar[i]) - 1.0f);
}
typedef struct { higan_var *mu, *logvar, *y; } higan__kl_ctx;
static void higan__kl_backward_op(higan_tape *t, void *p) {
    higan__kl_ctx *c = (higan__kl_ctx *)p;
    float *dmu = higan_var_grad(t, c->mu), *dlv = higan_var_grad(t, c->logvar);
    int64_t N = c->mu->shape[0];
    higan_kl_gaussian_backward(dmu, dlv, c->y->grad, c->mu->data, c->logvar->data, N,
                               higan_var_numel(c->mu) / N);
}
HIGAN_DEF higan_var *higan_kl_gaussian(higan_tape *t, higan_var *mu, higan_var *logvar) {
    higan_var *in[2];
    higan_var *y;
    higan__kl_ctx *c;
    int64_t one = 1, N;
    int d;
    if (!mu || !logvar) return NULL;
    HIGAN_ASSERT(mu->ndim == logvar->ndim && mu->shape[0] > 0);
    for (d = 0; d < mu->ndim; ++d) HIGAN_ASSERT(mu->shape[d] == logvar->shape[d]);
    in[0] = mu; in[1] = logvar;
    if (!(y = higan_op_output(t, 1, &one, in, 2))) return NULL;
    N = mu->shape[0];
    higan_kl_gaussian_forward(y->data, mu->data, logvar->data, N, higan_var_numel(mu) / N);
    if (y->requires_grad) {
        if (!(c = (higan__kl_ctx *)higan_tape_ctx(t, sizeof *c))) return NULL;
        c->mu = mu; c->logvar = logvar; c->y = y;
        higan_tape_record(t, y, higan__kl_backward_op, c);
    }
    return y;
}

/* ---- contextual loss (CXLoss) ---------------------------------------------- */
/* The similarity matrix is kept transposed, S[q][p] (q: inference position, p: target
   position), so that the min, the softmax and their backward run along contiguous rows. */

/* S: [Q, P] = i_hat^T t_hat;  i_hat: [C, Q], t_hat: [C, P] */
static void higan__cx_sim(float *S, const float *i_hat, const float *t_hat, int64_t C, int64_t P, int64_t Q) {
    higan_gemm(1, 0, Q, P, C, 1.0f, i_hat, Q, t_hat, P, 0.0f, S, P);
}
/* From G = dS [Q, P]: dih [C, Q] = t_hat G^T; dth [C, P] = i_hat G (when want_t). */
static void higan__cx_dsim(float *dth, float *dih, const float *G, const float *i_hat, const float *t_hat,
                           int64_t C, int64_t P, int64_t Q, int want_t) {
    higan_gemm(0, 1, C, Q, P, 1.0f, t_hat, P, G, P, 0.0f, dih, Q);
    if (want_t) higan_gemm(0, 0, C, P, Q, 1.0f, i_hat, Q, G, P, 0.0f, dth, P);
}

/* Centre x [C, L] by mean [C], normalise each column over C: xh [C, L], norm [L]. */
static void higan__cx_normalize(float *xh, float *norm, const float *x, const float *mean, int64_t C, int64_t L) {
    int64_t l;
    HIGAN__PARALLEL_FOR_IF(C * L > 32768)
    for (l = 0; l < L; ++l) {
        int64_t c;
        double s = 0;
        float nr;
        for (c = 0; c < C; ++c) { float v = x[c * L + l] - mean[c]; s += (double)v * v; }
        nr = (float)sqrt(s);
        norm[l] = nr;
        for (c = 0; c < C; ++c) xh[c * L + l] = (x[c * L + l] - mean[c]) / nr;
    }
}

/* In place: dxh [C, L] (gradient of xh = v/||v||) -> dv = (dxh - xh (xh . dxh)) / ||v|| */
static void higan__cx_dnormalize(float *dxh, const float *xh, const float *norm, int64_t C, int64_t L) {
    int64_t l;
    HIGAN__PARALLEL_FOR_IF(C * L > 32768)
    for (l = 0; l < L; ++l) {
        int64_t c;
        double s = 0;
        float fs;
        for (c = 0; c < C; ++c) s += (double)xh[c * L + l] * dxh[c * L + l];
        fs = (float)s;
        for (c = 0; c < C; ++c) dxh[c * L + l] = (dxh[c * L + l] - xh[c * L + l] * fs) / norm[l];
    }
}

/* Row q of the weights: r = (1 - s)/2, r~ = r/(rmin + 1e-5), e = exp((b - r~)/sigma). */
#define HIGAN__CX_EPS 1e-5f
static float higan__cx_e(float s, float rden, float sigma, float b) {
    float r = (1.0f - s) / 2.0f;
    return expf((b - r / rden) / sigma);
}

HIGAN_DEF higan_status higan_cx_cache_alloc(higan_cx_cache *c, higan_arena *a,
                                            int64_t N, int64_t C, int64_t P, int64_t Q) {
    c->t_hat = higan_arena_floats(a, N * C * P);
    c->i_hat = higan_arena_floats(a, N * C * Q);
    c->t_norm = higan_arena_floats(a, N * P);
    c->i_norm = higan_arena_floats(a, N * Q);
    c->r_min = higan_arena_floats(a, N * Q);
    c->w_sum = higan_arena_floats(a, N * Q);
    c->cx = higan_arena_floats(a, N);
    c->p_min = (int64_t *)higan_arena_alloc(a, sizeof(int64_t) * (size_t)(N * Q));
    c->q_max = (int64_t *)higan_arena_alloc(a, sizeof(int64_t) * (size_t)(N * P));
    if (!c->t_hat || !c->i_hat || !c->t_norm || !c->i_norm || !c->r_min || !c->w_sum || !c->cx ||
        !c->p_min || !c->q_max)
        return higan__error(HIGAN_ERR_NOMEM, "cx loss: arena overflow");
    return HIGAN_OK;
}

/* feat_t: [N, C, P], feat_i: [N, C, Q] -> y: [1]; fills cache (see higan_cx_cache). */
HIGAN_DEF void higan_cx_loss_forward(float *y, higan_cx_cache *cache, const float *feat_t,
                                     const float *feat_i, int64_t N, int64_t C, int64_t P, int64_t Q,
                                     float sigma, float b, higan_arena *scratch) {
    size_t mark = higan_arena_mark(scratch);
    higan_cx_cache local;
    float *mean, *S, *mx;
    double loss = 0;
    int64_t n, c, p, q;
    y[0] = NAN;
    if (!cache) {
        if (higan_cx_cache_alloc(&local, scratch, N, C, P, Q) != HIGAN_OK) goto done;
        cache = &local;
    }
    mean = higan_arena_floats(scratch, C);
    S = higan_arena_floats(scratch, Q * P);
    mx = higan_arena_floats(scratch, P);
    if (!mean || !S || !mx) goto done;
    /* per-channel mean of the target over batch and positions */
    for (c = 0; c < C; ++c) {
        double s = 0;
        for (n = 0; n < N; ++n) for (p = 0; p < P; ++p) s += feat_t[(n * C + c) * P + p];
        mean[c] = (float)(s / (double)(N * P));
    }
    for (n = 0; n < N; ++n) {
        float *th = cache->t_hat + n * C * P, *ih = cache->i_hat + n * C * Q;
        float *rmin = cache->r_min + n * Q, *wsum = cache->w_sum + n * Q;
        int64_t *pmin = cache->p_min + n * Q, *qmax = cache->q_max + n * P;
        double cxs = 0;
        higan__cx_normalize(th, cache->t_norm + n * P, feat_t + n * C * P, mean, C, P);
        higan__cx_normalize(ih, cache->i_norm + n * Q, feat_i + n * C * Q, mean, C, Q);
        higan__cx_sim(S, ih, th, C, P, Q);
        /* each row q: min over p of r (first argmin), then w = softmax over p */
        HIGAN__PARALLEL_FOR_IF(Q * P > 16384)
        for (q = 0; q < Q; ++q) {
            float *row = S + q * P;
            float best = (1.0f - row[0]) / 2.0f, rden;
            int64_t arg = 0, k;
            double es = 0;
            for (k = 1; k < P; ++k) {
                float r = (1.0f - row[k]) / 2.0f;
                if (r < best) { best = r; arg = k; }
            }
            rmin[q] = best; pmin[q] = arg;
            rden = best + HIGAN__CX_EPS;
            for (k = 0; k < P; ++k) { row[k] = higan__cx_e(row[k], rden, sigma, b); es += row[k]; }
            wsum[q] = (float)es;
            for (k = 0; k < P; ++k) row[k] = row[k] / wsum[q];
        }
        /* max over q for each p (first argmax in q order) */
        for (p = 0; p < P; ++p) { mx[p] = S[p]; qmax[p] = 0; }
        for (q = 1; q < Q; ++q) {
            const float *row = S + q * P;
            for (p = 0; p < P; ++p) if (row[p] > mx[p]) { mx[p] = row[p]; qmax[p] = q; }
        }
        for (p = 0; p < P; ++p) cxs += mx[p];
        cache->cx[n] = (float)(cxs / (double)P);
        loss += -log((double)(cache->cx[n] + HIGAN__CX_EPS));
    }
    y[0] = (float)(loss / (double)N);
done:
    higan_arena_release(scratch, mark);
}

/* dfeat_t: [N, C, P], dfeat_i: [N, C, Q] (either may be NULL) += gradients of y. */
HIGAN_DEF void higan_cx_loss_backward(float *dfeat_t, float *dfeat_i, const float *dy,
                                      const higan_cx_cache *cache, int64_t N, int64_t C, int64_t P,
                                      int64_t Q, float sigma, float b, higan_arena *scratch) {
    size_t mark = higan_arena_mark(scratch);
    float *G, *dth, *dih, *dmean;
    int64_t n, c, p, q;
    if (!dfeat_t && !dfeat_i) return;
    G = higan_arena_floats(scratch, Q * P);
    dth = higan_arena_floats(scratch, C * P);
    dih = higan_arena_floats(scratch, C * Q);
    dmean = higan_arena_zeros(scratch, C);
    if (!G || !dth || !dih || !dmean) goto done;   /* sticky arena overflow, seen by the caller */
    for (n = 0; n < N; ++n) {
        const float *th = cache->t_hat + n * C * P, *ih = cache->i_hat + n * C * Q;
        const float *tn = cache->t_norm + n * P, *in = cache->i_norm + n * Q;
        const float *rmin = cache->r_min + n * Q, *wsum = cache->w_sum + n * Q;
        const int64_t *pmin = cache->p_min + n * Q, *qmax = cache->q_max + n * P;
        /* y = mean_n -log(cx_n + eps), cx_n = mean_p max_q w: gradient of each max */
        float gmx = -dy[0] / (float)N / (cache->cx[n] + HIGAN__CX_EPS) / (float)P;
        higan__cx_sim(G, ih, th, C, P, Q);
        /* G row q: similarities in, d(loss)/d(similarity) out */
        HIGAN__PARALLEL_FOR_IF(Q * P > 16384)
        for (q = 0; q < Q; ++q) {
            float *row = G + q * P;
            float rden = rmin[q] + HIGAN__CX_EPS;
            double sdw = 0, dden = 0;
            int64_t k;
            /* softmax over p: sum_k dw_k w_k (dw is gmx at the argmax entries, else 0);
               w recomputed with the forward's exact expression */
            for (k = 0; k < P; ++k)
                if (qmax[k] == q) sdw += (double)gmx * (higan__cx_e(row[k], rden, sigma, b) / wsum[q]);
            for (k = 0; k < P; ++k) {
                float r = (1.0f - row[k]) / 2.0f;
                float w = higan__cx_e(row[k], rden, sigma, b) / wsum[q];
                float dw = qmax[k] == q ? gmx : 0.0f;
                float drt = -(w / sigma) * (dw - (float)sdw);   /* d r~ */
                dden += (double)drt * r;
                row[k] = -0.5f * (drt / rden);                   /* r = (1 - s)/2 */
            }
            /* r~ = r / (min_p r + eps): the min's gradient goes to its argmin */
            row[pmin[q]] += -0.5f * (float)(-dden / ((double)rden * rden));
        }
        /* through s = i_hat^T t_hat, then the channel normalisation (column-wise) */
        higan__cx_dsim(dth, dih, G, ih, th, C, P, Q, dfeat_t != NULL);
        if (dfeat_t) higan__cx_dnormalize(dth, th, tn, C, P);
        higan__cx_dnormalize(dih, ih, in, C, Q);
        /* feat - mean: into the features, and (target only) the mean */
        for (c = 0; c < C; ++c) {
            double s = 0;
            if (dfeat_t) {
                float *d = dfeat_t + (n * C + c) * P;
                for (p = 0; p < P; ++p) { d[p] += dth[c * P + p]; s += dth[c * P + p]; }
            }
            if (dfeat_i) {
                float *d = dfeat_i + (n * C + c) * Q;
                for (q = 0; q < Q; ++q) d[q] += dih[c * Q + q];
            }
            if (dfeat_t) for (q = 0; q < Q; ++q) s += dih[c * Q + q];
            dmean[c] -= (float)s;
        }
    }
    if (dfeat_t) {   /* mean[c] = mean over n, p of feat_t[n, c, p] */
        for (c = 0; c < C; ++c) {
            float g = dmean[c] / (float)(N * P);
            for (n = 0; n < N; ++n) {
                float *d = dfeat_t + (n * C + c) * P;
                for (p = 0; p < P; ++p) d[p] += g;
            }
        }
    }
done:
    higan_arena_release(scratch, mark);
}

typedef struct { higan_var *ft, *fi, *y; higan_cx_cache cache; int64_t N, C, P, Q; float sigma, b; } higan__cx_ctx;
static void higan__cx_backward_op(higan_tape *t, void *p) {
    higan__cx_ctx *c = (higan__cx_ctx *)p;
    float *dt = higan_var_grad(t, c->ft), *di = higan_var_grad(t, c->fi);
    higan_cx_loss_backward(dt, di, c->y->grad, &c->cache, c->N, c->C, c->P, c->Q, c->sigma, c->b, t->arena);
}
HIGAN_DEF higan_var *higan_cx_loss(higan_tape *t, higan_var *feat_t, higan_var *feat_i, float sigma, float b) {
    higan_var *in[2];
    higan_var *y;
    higan__cx_ctx *c = NULL;
    int64_t one = 1, N, C, P, Q;
    if (!feat_t || !feat_i) return NULL;
    HIGAN_ASSERT(feat_t->ndim >= 2 && feat_i->ndim >= 2);
    HIGAN_ASSERT(feat_t->shape[0] == feat_i->shape[0] && feat_t->shape[1] == feat_i->shape[1]);
    N = feat_t->shape[0]; C = feat_t->shape[1];
    HIGAN_ASSERT(N > 0 && C > 0);
    P = higan_var_numel(feat_t) / (N * C); Q = higan_var_numel(feat_i) / (N * C);
    HIGAN_ASSERT(P > 0 && Q > 0);
    in[0] = feat_t; in[1] = feat_i;
    if (!(y = higan_op_output(t, 1, &one, in, 2))) return NULL;
    if (y->requires_grad) {   /* the cache lives in the arena until backward */
        if (!(c = (higan__cx_ctx *)higan_tape_ctx(t, sizeof *c))) return NULL;
        if (higan_cx_cache_alloc(&c->cache, t->arena, N, C, P, Q) != HIGAN_OK) return NULL;
        c->ft = feat_t; c->fi = feat_i; c->y = y;
        c->N = N; c->C = C; c->P = P; c->Q = Q; c->sigma = sigma; c->b = b;
    }
    higan_cx_loss_forward(y->data, c ? &c->cache : NULL, feat_t->data, feat_i->data, N, C, P, Q,
                          sigma, b, t->arena);
    if (higan_arena_status(t->arena) != HIGAN_OK) return NULL;   /* scratch overflow */
    if (c) higan_tape_record(t, y, higan__cx_backward_op, c);
    return y;
}
