/* ---- shape: upsample, pools, pads, activations, concat/slice, reshape/permute, masked width
        reductions, dropout, log-softmax, elementwise helpers ---------------------------------
   Every kernel is plain scalar C: these ops are memory bound. Parallel loops run over
   independent outputs only (planes, rows or elements), so results never depend on the
   thread count; reductions (sum_all, masked sums, log-softmax rows) stay in one thread each. */

/* Elementwise loops go parallel only above this many values (thread start-up costs more). */
#define HIGAN__SHAPE_PAR ((int64_t)1 << 15)

/* ---- tape helpers shared by the ops below ------------------------------------------------ */
typedef struct { higan_var *x, *y; float s; } higan__unary_ctx;
typedef struct { higan_var *a, *b, *y; } higan__binary_ctx;

/* Records fn with a {x, y, s} context when y needs a gradient. Returns y (NULL on overflow). */
static higan_var *higan__record_unary(higan_tape *t, higan_var *x, higan_var *y,
                                      higan_backward_fn fn, float s) {
    higan__unary_ctx *c;
    if (!y) return NULL;
    if (y->requires_grad) {
        if (!(c = (higan__unary_ctx *)higan_tape_ctx(t, sizeof *c))) return NULL;
        c->x = x; c->y = y; c->s = s;
        higan_tape_record(t, y, fn, c);
    }
    return y;
}
static higan_var *higan__record_binary(higan_tape *t, higan_var *a, higan_var *b, higan_var *y,
                                       higan_backward_fn fn) {
    higan__binary_ctx *c;
    if (!y) return NULL;
    if (y->requires_grad) {
        if (!(c = (higan__binary_ctx *)higan_tape_ctx(t, sizeof *c))) return NULL;
        c->a = a; c->b = b; c->y = y;
        higan_tape_record(t, y, fn, c);
    }
    return y;
}
/* A dim given from the end (-1 = last) turned into 0..ndim-1. */
static int higan__dim(const higan_var *x, int dim) {
    if (dim < 0) dim += x->ndim;
    HIGAN_ASSERT(dim >= 0 && dim < x->ndim);
    return dim;
}
/* x viewed as [outer, shape[dim], inner]. */
static void higan__outer_inner(const higan_var *x, int dim, int64_t *outer, int64_t *inner) {
    int d;
    *outer = 1; *inner = 1;
    for (d = 0; d < dim; ++d) *outer *= x->shape[d];
    for (d = dim + 1; d < x->ndim; ++d) *inner *= x->shape[d];
}
static int higan__same_shape(const higan_var *a, const higan_var *b) {
    int d;
    if (a->ndim != b->ndim) return 0;
    for (d = 0; d < a->ndim; ++d) if (a->shape[d] != b->shape[d]) return 0;
    return 1;
}

/* ---- nearest upsampling: x [N,C,H,W] -> y [N,C,H*sh,W*sw] ------------------------------- */
HIGAN_DEF void higan_upsample_nearest_forward(float *y, const float *x, int64_t N, int64_t C,
                                              int64_t H, int64_t W, int sh, int sw) {
    int64_t p, P = N * C, Ho = H * sh, Wo = W * sw;
    HIGAN_ASSERT(sh >= 1 && sw >= 1);
    HIGAN__PARALLEL_FOR_IF(P * Ho * Wo > HIGAN__SHAPE_PAR)
    for (p = 0; p < P; ++p) {
        const float *xp = x + p * H * W;
        float *yp = y + p * Ho * Wo;
        int64_t h, w;
        int a, b;
        for (h = 0; h < H; ++h) {
            float *row = yp + h * sh * Wo;
            for (w = 0; w < W; ++w) {
                float v = xp[h * W + w];
                for (b = 0; b < sw; ++b) row[w * sw + b] = v;
            }
            for (a = 1; a < sh; ++a) memcpy(row + a * Wo, row, (size_t)Wo * sizeof(float));
        }
    }
}
/* dx [N,C,H,W] += block sums of dy [N,C,H*sh,W*sw] (PyTorch's order: output rows, then columns). */
HIGAN_DEF void higan_upsample_nearest_backward(float *dx, const float *dy, int64_t N, int64_t C,
                                               int64_t H, int64_t W, int sh, int sw) {
    int64_t p, P = N * C, Ho = H * sh, Wo = W * sw;
    if (!dx) return;
    HIGAN_ASSERT(sh >= 1 && sw >= 1);
    HIGAN__PARALLEL_FOR_IF(P * Ho * Wo > HIGAN__SHAPE_PAR)
    for (p = 0; p < P; ++p) {
        const float *gp = dy + p * Ho * Wo;
        float *dp = dx + p * H * W;
        int64_t h, w;
        int a, b;
        for (h = 0; h < H; ++h)
            for (w = 0; w < W; ++w) {
                float s = 0.0f;
                for (a = 0; a < sh; ++a)
                    for (b = 0; b < sw; ++b) s += gp[(h * sh + a) * Wo + w * sw + b];
                dp[h * W + w] += s;
            }
    }
}
typedef struct { higan_var *x, *y; int sh, sw; } higan__upsample_ctx;
static void higan__upsample_backward_op(higan_tape *t, void *p) {
    higan__upsample_ctx *c = (higan__upsample_ctx *)p;
    float *dx = higan_var_grad(t, c->x);
    if (dx) higan_upsample_nearest_backward(dx, c->y->grad, c->x->shape[0], c->x->shape[1],
                                            c->x->shape[2], c->x->shape[3], c->sh, c->sw);
}
HIGAN_DEF higan_var *higan_upsample_nearest(higan_tape *t, higan_var *x, int sh, int sw) {
    higan_var *y;
    higan__upsample_ctx *c;
    int64_t s[4];
    if (!x) return NULL;
    HIGAN_ASSERT(x->ndim == 4 && sh >= 1 && sw >= 1);
    s[0] = x->shape[0]; s[1] = x->shape[1]; s[2] = x->shape[2] * sh; s[3] = x->shape[3] * sw;
    if (!(y = higan_op_output(t, 4, s, &x, 1))) return NULL;
    higan_upsample_nearest_forward(y->data, x->data, x->shape[0], x->shape[1], x->shape[2],
                                   x->shape[3], sh, sw);
    if (y->requires_grad) {
        if (!(c = (higan__upsample_ctx *)higan_tape_ctx(t, sizeof *c))) return NULL;
        c->x = x; c->y = y; c->sh = sh; c->sw = sw;
        higan_tape_record(t, y, higan__upsample_backward_op, c);
    }
    return y;
}

/* ---- 2x2 average pooling, stride 2: x [N,C,H,W] -> y [N,C,H/2,W/2] ------------------------- */
HIGAN_DEF void higan_avg_pool2_forward(float *y, const float *x, int64_t N, int64_t C,
                                       int64_t H, int64_t W) {
    int64_t p, P = N * C, Ho = H / 2, Wo = W / 2;
    HIGAN__PARALLEL_FOR_IF(P * Ho * Wo > HIGAN__SHAPE_PAR)
    for (p = 0; p < P; ++p) {
        const float *xp = x + p * H * W;
        float *yp = y + p * Ho * Wo;
        int64_t h, w;
        for (h = 0; h < Ho; ++h)
            for (w = 0; w < Wo; ++w) {
                const float *q = xp + 2 * h * W + 2 * w;
                /* summed in PyTorch's window order, then divided: bit-compatible */
                yp[h * Wo + w] = (((q[0] + q[1]) + q[W]) + q[W + 1]) / 4.0f;
            }
    }
}
/* dx [N,C,H,W] += dy/4 on every window; a trailing odd row/column gets nothing. */
HIGAN_DEF void higan_avg_pool2_backward(float *dx, const float *dy, int64_t N, int64_t C,
                                        int64_t H, int64_t W) {
    int64_t p, P = N * C, Ho = H / 2, Wo = W / 2;
    if (!dx) return;
    HIGAN__PARALLEL_FOR_IF(P * Ho * Wo > HIGAN__SHAPE_PAR)
    for (p = 0; p < P; ++p) {
        const float *gp = dy + p * Ho * Wo;
        float *dp = dx + p * H * W;
        int64_t h, w;
        for (h = 0; h < Ho; ++h)
            for (w = 0; w < Wo; ++w) {
                float g = gp[h * Wo + w] / 4.0f;
                float *q = dp + 2 * h * W + 2 * w;
                q[0] += g; q[1] += g; q[W] += g; q[W + 1] += g;
            }
    }
}
static void higan__avg_pool2_backward_op(higan_tape *t, void *p) {
    higan__unary_ctx *c = (higan__unary_ctx *)p;
    float *dx = higan_var_grad(t, c->x);
    if (dx) higan_avg_pool2_backward(dx, c->y->grad, c->x->shape[0], c->x->shape[1],
                                     c->x->shape[2], c->x->shape[3]);
}
HIGAN_DEF higan_var *higan_avg_pool2(higan_tape *t, higan_var *x) {
    higan_var *y;
    int64_t s[4];
    if (!x) return NULL;
    HIGAN_ASSERT(x->ndim == 4 && x->shape[2] >= 2 && x->shape[3] >= 2);
    s[0] = x->shape[0]; s[1] = x->shape[1]; s[2] = x->shape[2] / 2; s[3] = x->shape[3] / 2;
    if (!(y = higan_op_output(t, 4, s, &x, 1))) return NULL;
    higan_avg_pool2_forward(y->data, x->data, x->shape[0], x->shape[1], x->shape[2], x->shape[3]);
    return higan__record_unary(t, x, y, higan__avg_pool2_backward_op, 0.0f);
}

/* ---- 3x3 max pooling, stride 2, no padding: x [N,C,H,W] -> y [N,C,(H-3)/2+1,(W-3)/2+1] ---- */
HIGAN_DEF void higan_max_pool3s2_forward(float *y, int32_t *argmax, const float *x, int64_t N,
                                         int64_t C, int64_t H, int64_t W) {
    int64_t p, P = N * C, Ho = (H - 3) / 2 + 1, Wo = (W - 3) / 2 + 1;
    HIGAN_ASSERT(H >= 3 && W >= 3 && H * W <= INT32_MAX);
    HIGAN__PARALLEL_FOR_IF(P * Ho * Wo > HIGAN__SHAPE_PAR / 4)
    for (p = 0; p < P; ++p) {
        const float *xp = x + p * H * W;
        float *yp = y + p * Ho * Wo;
        int32_t *ap = argmax ? argmax + p * Ho * Wo : NULL;
        int64_t h, w, i, j;
        for (h = 0; h < Ho; ++h)
            for (w = 0; w < Wo; ++w) {
                int64_t best = 2 * h * W + 2 * w;
                float m = xp[best];
                /* PyTorch's scan: a strictly larger value or any NaN takes over */
                for (i = 0; i < 3; ++i)
                    for (j = 0; j < 3; ++j) {
                        int64_t k = (2 * h + i) * W + 2 * w + j;
                        float v = xp[k];
                        if (v > m || v != v) { m = v; best = k; }
                    }
                yp[h * Wo + w] = m;
                if (ap) ap[h * Wo + w] = (int32_t)best;
            }
    }
}
/* dx [N,C,H,W] += dy routed to the argmax of each window (windows overlap: one thread per plane). */
HIGAN_DEF void higan_max_pool3s2_backward(float *dx, const float *dy, const int32_t *argmax,
                                          int64_t N, int64_t C, int64_t H, int64_t W) {
    int64_t p, P = N * C, Ho = (H - 3) / 2 + 1, Wo = (W - 3) / 2 + 1;
    if (!dx) return;
    HIGAN_ASSERT(H >= 3 && W >= 3);
    HIGAN__PARALLEL_FOR_IF(P * Ho * Wo > HIGAN__SHAPE_PAR / 4)
    for (p = 0; p < P; ++p) {
        const float *gp = dy + p * Ho * Wo;
        const int32_t *ap = argmax + p * Ho * Wo;
        float *dp = dx + p * H * W;
        int64_t k;
        for (k = 0; k < Ho * Wo; ++k) dp[ap[k]] += gp[k];
    }
}
typedef struct { higan_var *x, *y; int32_t *argmax; } higan__maxpool_ctx;
static void higan__maxpool_backward_op(higan_tape *t, void *p) {
    higan__maxpool_ctx *c = (higan__maxpool_ctx *)p;
    float *dx = higan_var_grad(t, c->x);
    if (dx) higan_max_pool3s2_backward(dx, c->y->grad, c->argmax, c->x->shape[0], c->x->shape[1],
                                       c->x->shape[2], c->x->shape[3]);
}
HIGAN_DEF higan_var *higan_max_pool3s2(higan_tape *t, higan_var *x) {
    higan_var *y;
    higan__maxpool_ctx *c = NULL;
    int32_t *argmax = NULL;
    int64_t s[4];
    if (!x) return NULL;
    HIGAN_ASSERT(x->ndim == 4 && x->shape[2] >= 3 && x->shape[3] >= 3);
    s[0] = x->shape[0]; s[1] = x->shape[1];
    s[2] = (x->shape[2] - 3) / 2 + 1; s[3] = (x->shape[3] - 3) / 2 + 1;
    if (!(y = higan_op_output(t, 4, s, &x, 1))) return NULL;
    if (y->requires_grad) {   /* the argmax is kept only when a backward will need it */
        argmax = (int32_t *)higan_arena_alloc(t->arena, (size_t)higan_var_numel(y) * sizeof(int32_t));
        if (!argmax || !(c = (higan__maxpool_ctx *)higan_tape_ctx(t, sizeof *c))) return NULL;
    }
    higan_max_pool3s2_forward(y->data, argmax, x->data, x->shape[0], x->shape[1], x->shape[2],
                              x->shape[3]);
    if (c) {
        c->x = x; c->y = y; c->argmax = argmax;
        higan_tape_record(t, y, higan__maxpool_backward_op, c);
    }
    return y;
}

/* ---- constant padding (top, bottom, left, right); negative amounts crop ------------------- */
/* Valid output columns [w0, w1) map to input column w - left. */
static void higan__pad_cols(int64_t W, int64_t Wo, int left, int64_t *w0, int64_t *w1) {
    *w0 = left > 0 ? left : 0;
    *w1 = W + left < Wo ? W + left : Wo;
    if (*w1 < *w0) *w1 = *w0;
}
/* x [N,C,H,W] -> y [N,C,H+top+bottom,W+left+right] */
HIGAN_DEF void higan_pad_forward(float *y, const float *x, int64_t N, int64_t C, int64_t H,
                                 int64_t W, int top, int bottom, int left, int right, float value) {
    int64_t p, P = N * C, Ho = H + top + bottom, Wo = W + left + right, w0, w1;
    HIGAN_ASSERT(Ho >= 0 && Wo >= 0);
    higan__pad_cols(W, Wo, left, &w0, &w1);
    HIGAN__PARALLEL_FOR_IF(P * Ho * Wo > HIGAN__SHAPE_PAR)
    for (p = 0; p < P; ++p) {
        const float *xp = x + p * H * W;
        float *yp = y + p * Ho * Wo;
        int64_t h, w;
        for (h = 0; h < Ho; ++h) {
            int64_t hi = h - top;
            float *row = yp + h * Wo;
            if (hi < 0 || hi >= H) {
                for (w = 0; w < Wo; ++w) row[w] = value;
                continue;
            }
            for (w = 0; w < w0; ++w) row[w] = value;
            if (w1 > w0) memcpy(row + w0, xp + hi * W + (w0 - left), (size_t)(w1 - w0) * sizeof(float));
            for (w = w1; w < Wo; ++w) row[w] = value;
        }
    }
}
/* dx [N,C,H,W] += the interior of dy [N,C,Ho,Wo] */
HIGAN_DEF void higan_pad_backward(float *dx, const float *dy, int64_t N, int64_t C, int64_t H,
                                  int64_t W, int top, int bottom, int left, int right) {
    int64_t p, P = N * C, Ho = H + top + bottom, Wo = W + left + right, w0, w1;
    if (!dx) return;
    HIGAN_ASSERT(Ho >= 0 && Wo >= 0);
    higan__pad_cols(W, Wo, left, &w0, &w1);
    HIGAN__PARALLEL_FOR_IF(P * Ho * Wo > HIGAN__SHAPE_PAR)
    for (p = 0; p < P; ++p) {
        const float *gp = dy + p * Ho * Wo;
        float *dp = dx + p * H * W;
        int64_t h, w;
        for (h = 0; h < Ho; ++h) {
            int64_t hi = h - top;
            if (hi < 0 || hi >= H) continue;
            for (w = w0; w < w1; ++w) dp[hi * W + (w - left)] += gp[h * Wo + w];
        }
    }
}
typedef struct { higan_var *x, *y; int top, bottom, left, right; } higan__pad_ctx;
static void higan__pad_backward_op(higan_tape *t, void *p) {
    higan__pad_ctx *c = (higan__pad_ctx *)p;
    float *dx = higan_var_grad(t, c->x);
    if (dx) higan_pad_backward(dx, c->y->grad, c->x->shape[0], c->x->shape[1], c->x->shape[2],
                               c->x->shape[3], c->top, c->bottom, c->left, c->right);
}
HIGAN_DEF higan_var *higan_pad(higan_tape *t, higan_var *x, int top, int bottom, int left,
                               int right, float value) {
    higan_var *y;
    higan__pad_ctx *c;
    int64_t s[4];
    if (!x) return NULL;
    HIGAN_ASSERT(x->ndim == 4);
    s[0] = x->shape[0]; s[1] = x->shape[1];
    s[2] = x->shape[2] + top + bottom; s[3] = x->shape[3] + left + right;
    HIGAN_ASSERT(s[2] >= 1 && s[3] >= 1);
    if (!(y = higan_op_output(t, 4, s, &x, 1))) return NULL;
    higan_pad_forward(y->data, x->data, x->shape[0], x->shape[1], x->shape[2], x->shape[3],
                      top, bottom, left, right, value);
    if (y->requires_grad) {
        if (!(c = (higan__pad_ctx *)higan_tape_ctx(t, sizeof *c))) return NULL;
        c->x = x; c->y = y; c->top = top; c->bottom = bottom; c->left = left; c->right = right;
        higan_tape_record(t, y, higan__pad_backward_op, c);
    }
    return y;
}

/* ---- activations (n values, any shape) ------------------------------------------------------ */
HIGAN_DEF void higan_relu_forward(float *y, const float *x, int64_t n) {
    int64_t i;
    HIGAN__PARALLEL_FOR_IF(n > HIGAN__SHAPE_PAR)
    for (i = 0; i < n; ++i) y[i] = x[i] > 0.0f ? x[i] : (x[i] != x[i] ? x[i] : 0.0f); /* NaN stays */
}
HIGAN_DEF void higan_relu_backward(float *dx, const float *dy, const float *x, int64_t n) {
    int64_t i;
    if (!dx) return;
    HIGAN__PARALLEL_FOR_IF(n > HIGAN__SHAPE_PAR)
    for (i = 0; i < n; ++i) if (x[i] > 0.0f) dx[i] += dy[i];
}
static void higan__relu_backward_op(higan_tape *t, void *p) {
    higan__unary_ctx *c = (higan__unary_ctx *)p;
    float *dx = higan_var_grad(t, c->x);
    if (dx) higan_relu_backward(dx, c->y->grad, c->x->data, higan_var_numel(c->x));
}
HIGAN_DEF higan_var *higan_relu(higan_tape *t, higan_var *x) {
    higan_var *y;
    if (!x || !(y = higan_op_output(t, x->ndim, x->shape, &x, 1))) return NULL;
    higan_relu_forward(y->data, x->data, higan_var_numel(x));
    return higan__record_unary(t, x, y, higan__relu_backward_op, 0.0f);
}

HIGAN_DEF void higan_leaky_relu_forward(float *y, const float *x, float slope, int64_t n) {
    int64_t i;
    HIGAN__PARALLEL_FOR_IF(n > HIGAN__SHAPE_PAR)
    for (i = 0; i < n; ++i) y[i] = x[i] > 0.0f ? x[i] : x[i] * slope;
}
HIGAN_DEF void higan_leaky_relu_backward(float *dx, const float *dy, const float *x, float slope,
                                         int64_t n) {
    int64_t i;
    if (!dx) return;
    HIGAN__PARALLEL_FOR_IF(n > HIGAN__SHAPE_PAR)
    for (i = 0; i < n; ++i) dx[i] += x[i] > 0.0f ? dy[i] : dy[i] * slope;
}
static void higan__leaky_backward_op(higan_tape *t, void *p) {
    higan__unary_ctx *c = (higan__unary_ctx *)p;
    float *dx = higan_var_grad(t, c->x);
    if (dx) higan_leaky_relu_backward(dx, c->y->grad, c->x->data, c->s, higan_var_numel(c->x));
}
HIGAN_DEF higan_var *higan_leaky_relu(higan_tape *t, higan_var *x, float slope) {
    higan_var *y;
    if (!x || !(y = higan_op_output(t, x->ndim, x->shape, &x, 1))) return NULL;
    higan_leaky_relu_forward(y->data, x->data, slope, higan_var_numel(x));
    return higan__record_unary(t, x, y, higan__leaky_backward_op, slope);
}

HIGAN_DEF void higan_tanh_forward(float *y, const float *x, int64_t n) {
    int64_t i;
    HIGAN__PARALLEL_FOR_IF(n > HIGAN__SHAPE_PAR / 8)
    for (i = 0; i < n; ++i) y[i] = tanhf(x[i]);
}
HIGAN_DEF void higan_tanh_backward(float *dx, const float *dy, const float *y, int64_t n) {
    int64_t i;
    if (!dx) return;
    HIGAN__PARALLEL_FOR_IF(n > HIGAN__SHAPE_PAR)
    for (i = 0; i < n; ++i) dx[i] += dy[i] * (1.0f - y[i] * y[i]);
}
static void higan__tanh_backward_op(higan_tape *t, void *p) {
    higan__unary_ctx *c = (higan__unary_ctx *)p;
    float *dx = higan_var_grad(t, c->x);
    if (dx) higan_tanh_backward(dx, c->y->grad, c->y->data, higan_var_numel(c->x));
}
HIGAN_DEF higan_var *higan_tanh(higan_tape *t, higan_var *x) {
    higan_var *y;
    if (!x || !(y = higan_op_output(t, x->ndim, x->shape, &x, 1))) return NULL;
    higan_tanh_forward(y->data, x->data, higan_var_numel(x));
    return higan__record_unary(t, x, y, higan__tanh_backward_op, 0.0f);
}

/* ---- concat / slice: tensors viewed as [outer, size, inner] around the dim -------------------- */
/* dx [outer, len, inner] += dy[:, start:start+len, :] of dy [outer, size, inner] (concat backward) */
static void higan__gather_add(float *dx, const float *dy, int64_t outer, int64_t size, int64_t inner,
                              int64_t start, int64_t len) {
    int64_t o;
    HIGAN__PARALLEL_FOR_IF(outer * len * inner > HIGAN__SHAPE_PAR)
    for (o = 0; o < outer; ++o) {
        float *d = dx + o * len * inner;
        const float *g = dy + (o * size + start) * inner;
        int64_t k;
        for (k = 0; k < len * inner; ++k) d[k] += g[k];
    }
}
HIGAN_DEF void higan_concat_forward(float *y, const float *const *xs, const int64_t *sizes, int n,
                                    int64_t outer, int64_t inner) {
    int64_t o, S = 0;
    int i;
    for (i = 0; i < n; ++i) S += sizes[i];
    HIGAN__PARALLEL_FOR_IF(outer > 1 && outer * S * inner > HIGAN__SHAPE_PAR)
    for (o = 0; o < outer; ++o) {
        int64_t off = 0;
        int k;
        for (k = 0; k < n; ++k) {
            memcpy(y + (o * S + off) * inner, xs[k] + o * sizes[k] * inner,
                   (size_t)(sizes[k] * inner) * sizeof(float));
            off += sizes[k];
        }
    }
}
HIGAN_DEF void higan_concat_backward(float *const *dxs, const float *dy, const int64_t *sizes,
                                     int n, int64_t outer, int64_t inner) {
    int64_t S = 0, off = 0;
    int i;
    for (i = 0; i < n; ++i) S += sizes[i];
    for (i = 0; i < n; ++i) {
        if (dxs[i]) higan__gather_add(dxs[i], dy, outer, S, inner, off, sizes[i]);
        off += sizes[i];
    }
}
HIGAN_DEF void higan_slice_forward(float *y, const float *x, int64_t outer, int64_t size,
                                   int64_t inner, int64_t start, int64_t len) {
    int64_t o;
    HIGAN_ASSERT(start >= 0 && len >= 0 && start + len <= size);
    HIGAN__PARALLEL_FOR_IF(outer > 1 && outer * len * inner > HIGAN__SHAPE_PAR)
    for (o = 0; o < outer; ++o)
        memcpy(y + o * len * inner, x + (o * size + start) * inner, (size_t)(len * inner) * sizeof(float));
}
HIGAN_DEF void higan_slice_backward(float *dx, const float *dy, int64_t outer, int64_t size,
                                    int64_t inner, int64_t start, int64_t len) {
    int64_t o;
    if (!dx) return;
    HIGAN_ASSERT(start >= 0 && len >= 0 && start + len <= size);
    HIGAN__PARALLEL_FOR_IF(outer * len * inner > HIGAN__SHAPE_PAR)
    for (o = 0; o < outer; ++o) {
        float *d = dx + (o * size + start) * inner;
        const float *g = dy + o * len * inner;
        int64_t k;
        for (k = 0; k < len * inner; ++k) d[k] += g[k];
    }
}

typedef struct { higan_var **xs; higan_var *y; int n, dim; } higan__concat_ctx;
static void higan__concat_backward_op(higan_tape *t, void *p) {
    higan__concat_ctx *c = (higan__concat_ctx *)p;
    int64_t outer, inner, S = c->y->shape[c->dim], off = 0;
    int i;
    higan__outer_inner(c->y, c->dim, &outer, &inner);
    for (i = 0; i < c->n; ++i) {   /* dx_i += dy[:, off:off+size_i, :] */
        float *dx = higan_var_grad(t, c->xs[i]);
        int64_t s = c->xs[i]->shape[c->dim];
        if (dx) higan__gather_add(dx, c->y->grad, outer, S, inner, off, s);
        off += s;
    }
}
HIGAN_DEF higan_var *higan_concat(higan_tape *t, higan_var *const *xs, int n, int dim) {
    higan_var *y;
    higan__concat_ctx *c = NULL;
    const float **ptrs;
    int64_t s[4], outer, inner, S = 0, *sizes;
    size_t mark;
    int i, d;
    HIGAN_ASSERT(n >= 1);
    for (i = 0; i < n; ++i) if (!xs[i]) return NULL;
    dim = higan__dim(xs[0], dim);
    for (i = 0; i < n; ++i) {
        HIGAN_ASSERT(xs[i]->ndim == xs[0]->ndim);
        for (d = 0; d < xs[0]->ndim; ++d)
            HIGAN_ASSERT(d == dim || xs[i]->shape[d] == xs[0]->shape[d]);
        S += xs[i]->shape[dim];
    }
    for (d = 0; d < 4; ++d) s[d] = xs[0]->shape[d];
    s[dim] = S;
    if (!(y = higan_op_output(t, xs[0]->ndim, s, xs, n))) return NULL;
    if (y->requires_grad) {
        if (!(c = (higan__concat_ctx *)higan_tape_ctx(t, sizeof *c))) return NULL;
        if (!(c->xs = (higan_var **)higan_arena_alloc(t->arena, (size_t)n * sizeof(higan_var *)))) return NULL;
        for (i = 0; i < n; ++i) c->xs[i] = xs[i];
        c->y = y; c->n = n; c->dim = dim;
    }
    higan__outer_inner(y, dim, &outer, &inner);
    mark = higan_arena_mark(t->arena);   /* scratch tables for the kernel */
    ptrs = (const float **)higan_arena_alloc(t->arena, (size_t)n * sizeof(const float *));
    sizes = (int64_t *)higan_arena_alloc(t->arena, (size_t)n * sizeof(int64_t));
    if (!ptrs || !sizes) return NULL;
    for (i = 0; i < n; ++i) { ptrs[i] = xs[i]->data; sizes[i] = xs[i]->shape[dim]; }
    higan_concat_forward(y->data, ptrs, sizes, n, outer, inner);
    higan_arena_release(t->arena, mark);
    if (y->requires_grad) higan_tape_record(t, y, higan__concat_backward_op, c);
    return y;
}

typedef struct { higan_var *x, *y; int dim; int64_t start; } higan__slice_ctx;
static void higan__slice_backward_op(higan_tape *t, void *p) {
    higan__slice_ctx *c = (higan__slice_ctx *)p;
    float *dx = higan_var_grad(t, c->x);
    int64_t outer, inner;
    higan__outer_inner(c->x, c->dim, &outer, &inner);
    if (dx) higan_slice_backward(dx, c->y->grad, outer, c->x->shape[c->dim], inner, c->start,
                                 c->y->shape[c->dim]);
}
HIGAN_DEF higan_var *higan_slice(higan_tape *t, higan_var *x, int dim, int64_t start, int64_t len) {
    higan_var *y;
    higan__slice_ctx *c;
    int64_t s[4], outer, inner;
    int d;
    if (!x) return NULL;
    dim = higan__dim(x, dim);
    HIGAN_ASSERT(start >= 0 && len >= 1 && start + len <= x->shape[dim]);
    for (d = 0; d < 4; ++d) s[d] = x->shape[d];
    s[dim] = len;
    if (!(y = higan_op_output(t, x->ndim, s, &x, 1))) return NULL;
    higan__outer_inner(x, dim, &outer, &inner);
    higan_slice_forward(y->data, x->data, outer, x->shape[dim], inner, start, len);
    if (y->requires_grad) {
        if (!(c = (higan__slice_ctx *)higan_tape_ctx(t, sizeof *c))) return NULL;
        c->x = x; c->y = y; c->dim = dim; c->start = start;
        higan_tape_record(t, y, higan__slice_backward_op, c);
    }
    return y;
}
HIGAN_DEF higan_status higan_split(higan_tape *t, higan_var *x, int dim, int n, const int64_t *sizes,
                                   higan_var **out) {
    int64_t off = 0;
    int i;
    higan_status st;
    for (i = 0; i < n; ++i) out[i] = NULL;
    if (!x) {   /* keep the message of an earlier overflow, which is the usual cause */
        st = higan_tape_status(t);
        return st != HIGAN_OK ? st : higan__error(HIGAN_ERR_ARG, "split: input is NULL");
    }
    dim = higan__dim(x, dim);
    for (i = 0; i < n; ++i) off += sizes[i];
    HIGAN_ASSERT(off == x->shape[dim]);
    for (off = 0, i = 0; i < n; off += sizes[i], ++i)
        if (!(out[i] = higan_slice(t, x, dim, off, sizes[i]))) {
            st = higan_tape_status(t);
            return st != HIGAN_OK ? st : higan__error(HIGAN_ERR_NOMEM, "split: slice %d failed", i);
        }
    return HIGAN_OK;
}

/* ---- reshape: a view (shared data, own gradient buffer) -------------------------------------- */
static void higan__reshape_backward_op(higan_tape *t, void *p) {
    higan__unary_ctx *c = (higan__unary_ctx *)p;
    float *dx = higan_var_grad(t, c->x);
    if (dx) higan_add_backward(dx, NULL, c->y->grad, higan_var_numel(c->x));
}
HIGAN_DEF higan_var *higan_reshape(higan_tape *t, higan_var *x, int ndim, const int64_t *shape) {
    higan_var *y;
    int64_t s[4], known = 1, n;
    int d, infer = -1;
    if (!x) return NULL;
    HIGAN_ASSERT(ndim >= 1 && ndim <= 4);
    for (d = 0; d < ndim; ++d) {
        s[d] = shape[d];
        if (shape[d] == -1) { HIGAN_ASSERT(infer < 0 && "reshape: at most one -1"); infer = d; }
        else { HIGAN_ASSERT(shape[d] >= 0); known *= shape[d]; }
    }
    n = higan_var_numel(x);
    if (infer >= 0) {
        HIGAN_ASSERT(known > 0 && n % known == 0);
        s[infer] = n / known;
    } else {
        HIGAN_ASSERT(known == n && "reshape: element count differs");
    }
    if (!(y = higan_var_wrap(t, x->data, ndim, s))) return NULL;
    y->requires_grad = x->requires_grad && t->no_grad == 0;
    return higan__record_unary(t, x, y, higan__reshape_backward_op, 0.0f);
}

/* ---- permute (copy), up to 4 dims --------------------------------------------------------------- */
/* Output sizes ys and input strides xs per output dim, padded in front to 4 dims. */
static void higan__permute_setup(int ndim, const int64_t *shape, const int *perm, int64_t ys[4],
                                 int64_t xs[4]) {
    int64_t st[4];
    int d, seen = 0;
    HIGAN_ASSERT(ndim >= 1 && ndim <= 4);
    st[ndim - 1] = 1;
    for (d = ndim - 2; d >= 0; --d) st[d] = st[d + 1] * shape[d + 1];
    for (d = 0; d < ndim; ++d) {
        HIGAN_ASSERT(perm[d] >= 0 && perm[d] < ndim && !(seen & (1 << perm[d])) && "not a permutation");
        seen |= 1 << perm[d];
    }
    for (d = 0; d < 4; ++d) {
        int k = d - (4 - ndim);
        ys[d] = k < 0 ? 1 : shape[perm[k]];
        xs[d] = k < 0 ? 0 : st[perm[k]];
    }
}
/* x [shape] -> y [shape[perm[0]], ..., shape[perm[ndim-1]]] */
HIGAN_DEF void higan_permute_forward(float *y, const float *x, int ndim, const int64_t *shape,
                                     const int *perm) {
    int64_t ys[4], xs[4], p, P;
    higan__permute_setup(ndim, shape, perm, ys, xs);
    P = ys[0] * ys[1];
    HIGAN__PARALLEL_FOR_IF(P > 1 && P * ys[2] * ys[3] > HIGAN__SHAPE_PAR)
    for (p = 0; p < P; ++p) {
        int64_t i0 = p / ys[1], i1 = p % ys[1], i2, i3;
        const float *xb = x + i0 * xs[0] + i1 * xs[1];
        float *yb = y + p * ys[2] * ys[3];
        for (i2 = 0; i2 < ys[2]; ++i2)
            for (i3 = 0; i3 < ys[3]; ++i3) yb[i2 * ys[3] + i3] = xb[i2 * xs[2] + i3 * xs[3]];
    }
}
/* dx [shape] += dy permuted back; each dx element receives exactly one dy element. */
HIGAN_DEF void higan_permute_backward(float *dx, const float *dy, int ndim, const int64_t *shape,
                                      const int *perm) {
    int64_t ys[4], xs[4], p, P;
    if (!dx) return;
    higan__permute_setup(ndim, shape, perm, ys, xs);
    P = ys[0] * ys[1];
    HIGAN__PARALLEL_FOR_IF(P > 1 && P * ys[2] * ys[3] > HIGAN__SHAPE_PAR)
    for (p = 0; p < P; ++p) {
        int64_t i0 = p / ys[1], i1 = p % ys[1], i2, i3;
        float *db = dx + i0 * xs[0] + i1 * xs[1];
        const float *gb = dy + p * ys[2] * ys[3];
        for (i2 = 0; i2 < ys[2]; ++i2)
            for (i3 = 0; i3 < ys[3]; ++i3) db[i2 * xs[2] + i3 * xs[3]] += gb[i2 * ys[3] + i3];
    }
}
typedef struct { higan_var *x, *y; int perm[4]; } higan__permute_ctx;
static void higan__permute_backward_op(higan_tape *t, void *p) {
    higan__permute_ctx *c = (higan__permute_ctx *)p;
    float *dx = higan_var_grad(t, c->x);
    if (dx) higan_permute_backward(dx, c->y->grad, c->x->ndim, c->x->shape, c->perm);
}
HIGAN_DEF higan_var *higan_permute(higan_tape *t, higan_var *x, const int *perm) {
    higan_var *y;
    higan__permute_ctx *c;
    int64_t s[4];
    int d;
    if (!x) return NULL;
    for (d = 0; d < x->ndim; ++d) {
        HIGAN_ASSERT(perm[d] >= 0 && perm[d] < x->ndim);
        s[d] = x->shape[perm[d]];
    }
    if (!(y = higan_op_output(t, x->ndim, s, &x, 1))) return NULL;
    higan_permute_forward(y->data, x->data, x->ndim, x->shape, perm);
    if (y->requires_grad) {
        if (!(c = (higan__permute_ctx *)higan_tape_ctx(t, sizeof *c))) return NULL;
        c->x = x; c->y = y;
        for (d = 0; d < 4; ++d) c->perm[d] = d < x->ndim ? perm[d] : d;
        higan_tape_record(t, y, higan__permute_backward_op, c);
    }
    return y;
}

/* ---- masked width reductions: x [N,C,H,W] -> y [N,C] over h and w < lens[n] ------------------- */
static int64_t higan__valid_cols(int len, int64_t W) {
    HIGAN_ASSERT(len >= 0);
    return (int64_t)len < W ? (int64_t)len : W;
}
/* mean != 0: divide by (float)(H * lens[n]) + eps; the sum runs in double. */
static void higan__masked_width_forward(float *y, const float *x, const int *lens, int64_t N,
                                        int64_t C, int64_t H, int64_t W, float eps, int mean) {
    int64_t p;
    HIGAN__PARALLEL_FOR_IF(N * C * H * W > HIGAN__SHAPE_PAR)
    for (p = 0; p < N * C; ++p) {
        int64_t n = p / C, wv = higan__valid_cols(lens[n], W), h, w;
        const float *xp = x + p * H * W;
        double s = 0.0;
        for (h = 0; h < H; ++h)
            for (w = 0; w < wv; ++w) s += xp[h * W + w];
        y[p] = mean ? (float)s / ((float)(H * (int64_t)lens[n]) + eps) : (float)s;
    }
}
static void higan__masked_width_backward(float *dx, const float *dy, const int *lens, int64_t N,
                                         int64_t C, int64_t H, int64_t W, float eps, int mean) {
    int64_t p;
    if (!dx) return;
    HIGAN__PARALLEL_FOR_IF(N * C * H * W > HIGAN__SHAPE_PAR)
    for (p = 0; p < N * C; ++p) {
        int64_t n = p / C, wv = higan__valid_cols(lens[n], W), h, w;
        float g = mean ? dy[p] / ((float)(H * (int64_t)lens[n]) + eps) : dy[p];
        float *dp = dx + p * H * W;
        for (h = 0; h < H; ++h)
            for (w = 0; w < wv; ++w) dp[h * W + w] += g;
    }
}
HIGAN_DEF void higan_masked_sum_width_forward(float *y, const float *x, const int *lens,
                                              int64_t N, int64_t C, int64_t H, int64_t W) {
    higan__masked_width_forward(y, x, lens, N, C, H, W, 0.0f, 0);
}
HIGAN_DEF void higan_masked_sum_width_backward(float *dx, const float *dy, const int *lens,
                                               int64_t N, int64_t C, int64_t H, int64_t W) {
    higan__masked_width_backward(dx, dy, lens, N, C, H, W, 0.0f, 0);
}
HIGAN_DEF void higan_masked_mean_width_forward(float *y, const float *x, const int *lens,
                                               int64_t N, int64_t C, int64_t H, int64_t W, float eps) {
    higan__masked_width_forward(y, x, lens, N, C, H, W, eps, 1);
}
HIGAN_DEF void higan_masked_mean_width_backward(float *dx, const float *dy, const int *lens,
                                                int64_t N, int64_t C, int64_t H, int64_t W, float eps) {
    higan__masked_width_backward(dx, dy, lens, N, C, H, W, eps, 1);
}
typedef struct { higan_var *x, *y; int *lens; float eps; int mean; } higan__masked_ctx;
/* [N,C,T] is [N,C,1,T] */
static void higan__masked_dims(const higan_var *x, int64_t *H, int64_t *W) {
    HIGAN_ASSERT(x->ndim == 3 || x->ndim == 4);
    *H = x->ndim == 4 ? x->shape[2] : 1;
    *W = x->ndim == 4 ? x->shape[3] : x->shape[2];
}
static void higan__masked_backward_op(higan_tape *t, void *p) {
    higan__masked_ctx *c = (higan__masked_ctx *)p;
    float *dx = higan_var_grad(t, c->x);
    int64_t H, W;
    higan__masked_dims(c->x, &H, &W);
    if (dx) higan__masked_width_backward(dx, c->y->grad, c->lens, c->x->shape[0], c->x->shape[1],
                                         H, W, c->eps, c->mean);
}
static higan_var *higan__masked_width(higan_tape *t, higan_var *x, const int *lens, float eps,
                                      int mean) {
    higan_var *y;
    higan__masked_ctx *c;
    int64_t s[2], H, W, n;
    if (!x) return NULL;
    higan__masked_dims(x, &H, &W);
    s[0] = x->shape[0]; s[1] = x->shape[1];
    if (!(y = higan_op_output(t, 2, s, &x, 1))) return NULL;
    higan__masked_width_forward(y->data, x->data, lens, s[0], s[1], H, W, eps, mean);
    if (y->requires_grad) {   /* lens copied: the caller's array may be gone by backward */
        if (!(c = (higan__masked_ctx *)higan_tape_ctx(t, sizeof *c))) return NULL;
        if (!(c->lens = (int *)higan_arena_alloc(t->arena, (size_t)s[0] * sizeof(int)))) return NULL;
        for (n = 0; n < s[0]; ++n) c->lens[n] = lens[n];
        c->x = x; c->y = y; c->eps = eps; c->mean = mean;
        higan_tape_record(t, y, higan__masked_backward_op, c);
    }
    return y;
}
HIGAN_DEF higan_var *higan_masked_sum_width(higan_tape *t, higan_var *x, const int *lens) {
    return higan__masked_width(t, x, lens, 0.0f, 0);
}
HIGAN_DEF higan_var *higan_masked_mean_width(higan_tape *t, higan_var *x, const int *lens, float eps) {
    return higan__masked_width(t, x, lens, eps, 1);
}

/* ---- dropout ------------------------------------------------------------------------------------- */
/* Sequential: the rng stream fixes which element gets which draw. mask may be NULL. */
HIGAN_DEF void higan_dropout_forward(float *y, float *mask, const float *x, float p,
                                     higan_rng *rng, int64_t n) {
    int64_t i;
    float scale = p < 1.0f ? 1.0f / (1.0f - p) : 0.0f;
    for (i = 0; i < n; ++i) {
        float m = higan_rng_uniform(rng) >= p ? scale : 0.0f;
        if (mask) mask[i] = m;
        y[i] = x[i] * m;
    }
}
HIGAN_DEF void higan_dropout_backward(float *dx, const float *dy, const float *mask, int64_t n) {
    int64_t i;
    if (!dx) return;
    HIGAN__PARALLEL_FOR_IF(n > HIGAN__SHAPE_PAR)
    for (i = 0; i < n; ++i) dx[i] += dy[i] * mask[i];
}
typedef struct { higan_var *x, *y; float *mask; } higan__dropout_ctx;
static void higan__dropout_backward_op(higan_tape *t, void *p) {
    higan__dropout_ctx *c = (higan__dropout_ctx *)p;
    float *dx = higan_var_grad(t, c->x);
    if (dx) higan_dropout_backward(dx, c->y->grad, c->mask, higan_var_numel(c->x));
}
HIGAN_DEF higan_var *higan_dropout(higan_tape *t, higan_var *x, float p, int train, higan_rng *rng) {
    higan_var *y;
    higan__dropout_ctx *c = NULL;
    float *mask = NULL;
    int64_t n;
    if (!x) return NULL;
    if (!train || p <= 0.0f) return x;           /* identity: no copy, nothing recorded */
    HIGAN_ASSERT(rng != NULL);
    if (!(y = higan_op_output(t, x->ndim, x->shape, &x, 1))) return NULL;
    n = higan_var_numel(x);
    if (y->requires_grad) {
        if (!(mask = higan_arena_floats(t->arena, n))) return NULL;
        if (!(c = (higan__dropout_ctx *)higan_tape_ctx(t, sizeof *c))) return NULL;
    }
    higan_dropout_forward(y->data, mask, x->data, p, rng, n);
    if (c) {
        c->x = x; c->y = y; c->mask = mask;
        higan_tape_record(t, y, higan__dropout_backward_op, c);
    }
    return y;
}

/* ---- log-softmax over the last dim: x [rows, cols] ----------------------------------------------- */
HIGAN_DEF void higan_log_softmax_forward(float *y, const float *x, int64_t rows, int64_t cols) {
    int64_t r;
    HIGAN__PARALLEL_FOR_IF(rows > 1 && rows * cols > HIGAN__SHAPE_PAR / 8)
    for (r = 0; r < rows; ++r) {
        const float *xr = x + r * cols;
        float *yr = y + r * cols, m = xr[0], lse;
        double s = 0.0;
        int64_t j;
        for (j = 1; j < cols; ++j) if (xr[j] > m) m = xr[j];
        for (j = 0; j < cols; ++j) s += exp((double)(xr[j] - m));
        lse = (float)log(s);
        for (j = 0; j < cols; ++j) yr[j] = xr[j] - m - lse;
    }
}
/* dx += dy - exp(y) * sum(dy) per row */
HIGAN_DEF void higan_log_softmax_backward(float *dx, const float *dy, const float *y, int64_t rows,
                                          int64_t cols) {
    int64_t r;
    if (!dx) return;
    HIGAN__PARALLEL_FOR_IF(rows > 1 && rows * cols > HIGAN__SHAPE_PAR / 8)
    for (r = 0; r < rows; ++r) {
        const float *gr = dy + r * cols, *yr = y + r * cols;
        float *dr = dx + r * cols, gs;
        double s = 0.0;
        int64_t j;
        for (j = 0; j < cols; ++j) s += gr[j];
        gs = (float)s;
        for (j = 0; j < cols; ++j) dr[j] += gr[j] - expf(yr[j]) * gs;
    }
}
static void higan__log_softmax_backward_op(higan_tape *t, void *p) {
    higan__unary_ctx *c = (higan__unary_ctx *)p;
    float *dx = higan_var_grad(t, c->x);
    int64_t cols = c->x->shape[c->x->ndim - 1];
    if (dx) higan_log_softmax_backward(dx, c->y->grad, c->y->data, higan_var_numel(c->x) / cols, cols);
}
HIGAN_DEF higan_var *higan_log_softmax(higan_tape *t, higan_var *x) {
    higan_var *y;
    int64_t cols;
    if (!x || !(y = higan_op_output(t, x->ndim, x->shape, &x, 1))) return NULL;
    cols = x->shape[x->ndim - 1];
    HIGAN_ASSERT(cols >= 1);
    higan_log_softmax_forward(y->data, x->data, higan_var_numel(x) / cols, cols);
    return higan__record_unary(t, x, y, higan__log_softmax_backward_op, 0.0f);
}

/* ---- elementwise helpers -------------------------------------------------------------------------- */
HIGAN_DEF void higan_add_forward(float *y, const float *a, const float *b, int64_t n) {
    int64_t i;
    HIGAN__PARALLEL_FOR_IF(n > HIGAN__SHAPE_PAR)
    for (i = 0; i < n; ++i) y[i] = a[i] + b[i];
}
HIGAN_DEF void higan_add_backward(float *da, float *db, const float *dy, int64_t n) {
    int64_t i;
    if (da) {
        HIGAN__PARALLEL_FOR_IF(n > HIGAN__SHAPE_PAR)
        for (i = 0; i < n; ++i) da[i] += dy[i];
    }
    if (db) {
        HIGAN__PARALLEL_FOR_IF(n > HIGAN__SHAPE_PAR)
        for (i = 0; i < n; ++i) db[i] += dy[i];
    }
}
static void higan__add_backward_op(higan_tape *t, void *p) {
    higan__binary_ctx *c = (higan__binary_ctx *)p;
    float *da = higan_var_grad(t, c->a), *db = higan_var_grad(t, c->b);
    higan_add_backward(da, db, c->y->grad, higan_var_numel(c->y));
}
HIGAN_DEF higan_var *higan_add(higan_tape *t, higan_var *a, higan_var *b) {
    higan_var *in[2], *y;
    in[0] = a; in[1] = b;
    if (!a || !b) return NULL;
    HIGAN_ASSERT(higan__same_shape(a, b));
    if (!(y = higan_op_output(t, a->ndim, a->shape, in, 2))) return NULL;
    higan_add_forward(y->data, a->data, b->data, higan_var_numel(a));
    return higan__record_binary(t, a, b, y, higan__add_backward_op);
}

HIGAN_DEF void higan_sub_forward(float *y, const float *a, const float *b, int64_t n) {
    int64_t i;
    HIGAN__PARALLEL_FOR_IF(n > HIGAN__SHAPE_PAR)
    for (i = 0; i < n; ++i) y[i] = a[i] - b[i];
}
HIGAN_DEF void higan_sub_backward(float *da, float *db, const float *dy, int64_t n) {
    int64_t i;
    if (da) {
        HIGAN__PARALLEL_FOR_IF(n > HIGAN__SHAPE_PAR)
        for (i = 0; i < n; ++i) da[i] += dy[i];
    }
    if (db) {
        HIGAN__PARALLEL_FOR_IF(n > HIGAN__SHAPE_PAR)
        for (i = 0; i < n; ++i) db[i] -= dy[i];
    }
}
static void higan__sub_backward_op(higan_tape *t, void *p) {
    higan__binary_ctx *c = (higan__binary_ctx *)p;
    float *da = higan_var_grad(t, c->a), *db = higan_var_grad(t, c->b);
    higan_sub_backward(da, db, c->y->grad, higan_var_numel(c->y));
}
HIGAN_DEF higan_var *higan_sub(higan_tape *t, higan_var *a, higan_var *b) {
    higan_var *in[2], *y;
    in[0] = a; in[1] = b;
    if (!a || !b) return NULL;
    HIGAN_ASSERT(higan__same_shape(a, b));
    if (!(y = higan_op_output(t, a->ndim, a->shape, in, 2))) return NULL;
    higan_sub_forward(y->data, a->data, b->data, higan_var_numel(a));
    return higan__record_binary(t, a, b, y, higan__sub_backward_op);
}

HIGAN_DEF void higan_mul_forward(float *y, const float *a, const float *b, int64_t n) {
    int64_t i;
    HIGAN__PARALLEL_FOR_IF(n > HIGAN__SHAPE_PAR)
    for (i = 0; i < n; ++i) y[i] = a[i] * b[i];
}
HIGAN_DEF void higan_mul_backward(float *da, float *db, const float *dy, const float *a,
                                  const float *b, int64_t n) {
    int64_t i;
    if (da) {
        HIGAN__PARALLEL_FOR_IF(n > HIGAN__SHAPE_PAR)
        for (i = 0; i < n; ++i) da[i] += dy[i] * b[i];
    }
    if (db) {
        HIGAN__PARALLEL_FOR_IF(n > HIGAN__SHAPE_PAR)
        for (i = 0; i < n; ++i) db[i] += dy[i] * a[i];
    }
}
static void higan__mul_backward_op(higan_tape *t, void *p) {
    higan__binary_ctx *c = (higan__binary_ctx *)p;
    float *da = higan_var_grad(t, c->a), *db = higan_var_grad(t, c->b);
    higan_mul_backward(da, db, c->y->grad, c->a->data, c->b->data, higan_var_numel(c->y));
}
HIGAN_DEF higan_var *higan_mul(higan_tape *t, higan_var *a, higan_var *b) {
    higan_var *in[2], *y;
    in[0] = a; in[1] = b;
    if (!a || !b) return NULL;
    HIGAN_ASSERT(higan__same_shape(a, b));
    if (!(y = higan_op_output(t, a->ndim, a->shape, in, 2))) return NULL;
    higan_mul_forward(y->data, a->data, b->data, higan_var_numel(a));
    return higan__record_binary(t, a, b, y, higan__mul_backward_op);
}

HIGAN_DEF void higan_scale_forward(float *y, const float *x, float s, int64_t n) {
    int64_t i;
    HIGAN__PARALLEL_FOR_IF(n > HIGAN__SHAPE_PAR)
    for (i = 0; i < n; ++i) y[i] = x[i] * s;
}
HIGAN_DEF void higan_scale_backward(float *dx, const float *dy, float s, int64_t n) {
    int64_t i;
    if (!dx) return;
    HIGAN__PARALLEL_FOR_IF(n > HIGAN__SHAPE_PAR)
    for (i = 0; i < n; ++i) dx[i] += dy[i] * s;
}
static void higan__scale_backward_op(higan_tape *t, void *p) {
    higan__unary_ctx *c = (higan__unary_ctx *)p;
    float *dx = higan_var_grad(t, c->x);
    if (dx) higan_scale_backward(dx, c->y->grad, c->s, higan_var_numel(c->x));
}
HIGAN_DEF higan_var *higan_scale(higan_tape *t, higan_var *x, float s) {
    higan_var *y;
    if (!x || !(y = higan_op_output(t, x->ndim, x->shape, &x, 1))) return NULL;
    higan_scale_forward(y->data, x->data, s, higan_var_numel(x));
    return higan__record_unary(t, x, y, higan__scale_backward_op, s);
}

/* x [N,C,HW] + b [N,C] */
HIGAN_DEF void higan_add_nc_forward(float *y, const float *x, const float *b, int64_t N, int64_t C,
                                    int64_t HW) {
    int64_t p;
    HIGAN__PARALLEL_FOR_IF(N * C * HW > HIGAN__SHAPE_PAR)
    for (p = 0; p < N * C; ++p) {
        int64_t k;
        float v = b[p];
        for (k = 0; k < HW; ++k) y[p * HW + k] = x[p * HW + k] + v;
    }
}
HIGAN_DEF void higan_add_nc_backward(float *dx, float *db, const float *dy, int64_t N, int64_t C,
                                     int64_t HW) {
    int64_t p;
    if (dx) higan_add_backward(dx, NULL, dy, N * C * HW);
    if (!db) return;
    HIGAN__PARALLEL_FOR_IF(N * C * HW > HIGAN__SHAPE_PAR)
    for (p = 0; p < N * C; ++p) {
        double s = 0.0;
        int64_t k;
        for (k = 0; k < HW; ++k) s += dy[p * HW + k];
        db[p] += (float)s;
    }
}
static void higan__add_nc_backward_op(higan_tape *t, void *p) {
    higan__binary_ctx *c = (higan__binary_ctx *)p;
    float *dx = higan_var_grad(t, c->a), *db = higan_var_grad(t, c->b);
    int64_t N = c->a->shape[0], C = c->a->shape[1];
    higan_add_nc_backward(dx, db, c->y->grad, N, C, higan_var_numel(c->a) / (N * C));
}
HIGAN_DEF higan_var *higan_add_nc(higan_tape *t, higan_var *x, higan_var *b) {
    higan_var *in[2], *y;
    int64_t N, C;
    in[0] = x; in[1] = b;
    if (!x || !b) return NULL;
    HIGAN_ASSERT(x->ndim >= 2);
    N = x->shape[0]; C = x->shape[1];
    HIGAN_ASSERT(b->shape[0] == N && higan_var_numel(b) == N * C && "bias must be [N,C]");
    if (!(y = higan_op_output(t, x->ndim, x->shape, in, 2))) return NULL;
    higan_add_nc_forward(y->data, x->data, b->data, N, C, N * C > 0 ? higan_var_numel(x) / (N * C) : 0);
    return higan__record_binary(t, x, b, y, higan__add_nc_backward_op);
}

HIGAN_DEF void higan_sum_all_forward(float *y, const float *x, int64_t n) {
    double s = 0.0;
    int64_t i;
    for (i = 0; i < n; ++i) s += x[i];
    y[0] = (float)s;
}
HIGAN_DEF void higan_sum_all_backward(float *dx, const float *dy, int64_t n) {
    int64_t i;
    float g = dy[0];
    if (!dx) return;
    HIGAN__PARALLEL_FOR_IF(n > HIGAN__SHAPE_PAR)
    for (i = 0; i < n; ++i) dx[i] += g;
}
static void higan__sum_all_backward_op(higan_tape *t, void *p) {
    higan__unary_ctx *c = (higan__unary_ctx *)p;
    float *dx = higan_var_grad(t, c->x);
    if (dx) higan_sum_all_backward(dx, c->y->grad, higan_var_numel(c->x));
}
HIGAN_DEF higan_var *higan_sum_all(higan_tape *t, higan_var *x) {
    higan_var *y;
    int64_t one = 1;
    if (!x || !(y = higan_op_output(t, 1, &one, &x, 1))) return NULL;
    higan_sum_all_forward(y->data, x->data, higan_var_numel(x));
    return higan__record_unary(t, x, y, higan__sum_all_backward_op, 0.0f);
}
HIGAN_DEF void higan_mean_all_forward(float *y, const float *x, int64_t n) {
    double s = 0.0;
    int64_t i;
    for (i = 0; i < n; ++i) s += x[i];
    y[0] = (float)(s / (double)(n > 0 ? n : 1));
}
HIGAN_DEF void higan_mean_all_backward(float *dx, const float *dy, int64_t n) {
    int64_t i;
    float g;
    if (!dx || n <= 0) return;
    g = dy[0] / (float)n;
    HIGAN__PARALLEL_FOR_IF(n > HIGAN__SHAPE_PAR)
    for (i = 0; i < n; ++i) dx[i] += g;
}
static void higan__mean_all_backward_op(higan_tape *t, void *p) {
    higan__unary_ctx *c = (higan__unary_ctx *)p;
    float *dx = higan_var_grad(t, c->x);
    if (dx) higan_mean_all_backward(dx, c->y->grad, higan_var_numel(c->x));
}
HIGAN_DEF higan_var *higan_mean_all(higan_tape *t, higan_var *x) {
    higan_var *y;
    int64_t one = 1;
    if (!x || !(y = higan_op_output(t, 1, &one, &x, 1))) return NULL;
    higan_mean_all_forward(y->data, x->data, higan_var_numel(x));
    return higan__record_unary(t, x, y, higan__mean_all_backward_op, 0.0f);
}

HIGAN_DEF void higan_exp_forward(float *y, const float *x, int64_t n) {
    int64_t i;
    HIGAN__PARALLEL_FOR_IF(n > HIGAN__SHAPE_PAR / 8)
    for (i = 0; i < n; ++i) y[i] = expf(x[i]);
}
HIGAN_DEF void higan_exp_backward(float *dx, const float *dy, const float *y, int64_t n) {
    int64_t i;
    if (!dx) return;
    HIGAN__PARALLEL_FOR_IF(n > HIGAN__SHAPE_PAR)
    for (i = 0; i < n; ++i) dx[i] += dy[i] * y[i];
}
static void higan__exp_backward_op(higan_tape *t, void *p) {
    higan__unary_ctx *c = (higan__unary_ctx *)p;
    float *dx = higan_var_grad(t, c->x);
    if (dx) higan_exp_backward(dx, c->y->grad, c->y->data, higan_var_numel(c->x));
}
HIGAN_DEF higan_var *higan_exp(higan_tape *t, higan_var *x) {
    higan_var *y;
    if (!x || !(y = higan_op_output(t, x->ndim, x->shape, &x, 1))) return NULL;
    higan_exp_forward(y->data, x->data, higan_var_numel(x));
    return higan__record_unary(t, x, y, higan__exp_backward_op, 0.0f);
}
