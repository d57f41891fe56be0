/* ==== SHAPE, POOLING, PADDING, ACTIVATION AND ELEMENTWISE OPS ============ */
/* All tensors float32, row-major; image ops take NCHW. Raw kernels: outputs first, backward
   ACCUMULATES (+=) and skips a NULL gradient. Tape ops (no suffix) return NULL when an input
   is NULL or the arena overflows. */

/* -- nearest upsampling by integer factors (F.interpolate(x, scale_factor=(sh, sw)), 'nearest')
      x [N,C,H,W] -> y [N,C,H*sh,W*sw] */
HIGAN_DEF void higan_upsample_nearest_forward(float *y, const float *x, int64_t N, int64_t C,
                                              int64_t H, int64_t W, int sh, int sw);
HIGAN_DEF void higan_upsample_nearest_backward(float *dx, const float *dy, int64_t N, int64_t C,
                                               int64_t H, int64_t W, int sh, int sw);
HIGAN_DEF higan_var *higan_upsample_nearest(higan_tape *t, higan_var *x, int sh, int sw);

/* -- 2x2 average pooling, stride 2 (nn.AvgPool2d(2)): x [N,C,H,W] -> y [N,C,H/2,W/2], floor */
HIGAN_DEF void higan_avg_pool2_forward(float *y, const float *x, int64_t N, int64_t C,
                                       int64_t H, int64_t W);
HIGAN_DEF void higan_avg_pool2_backward(float *dx, const float *dy, int64_t N, int64_t C,
                                        int64_t H, int64_t W);
HIGAN_DEF higan_var *higan_avg_pool2(higan_tape *t, higan_var *x);

/* -- 3x3 max pooling, stride 2, no padding (nn.MaxPool2d(3, 2)):
      x [N,C,H,W] (H, W >= 3) -> y [N,C,(H-3)/2+1,(W-3)/2+1].
      argmax [like y] (may be NULL) gets the index h*W+w of the max inside its x plane: the
      first max in row-major window order, a NaN wins, exactly like PyTorch. */
HIGAN_DEF void higan_max_pool3s2_forward(float *y, int32_t *argmax, const float *x, int64_t N,
                                         int64_t C, int64_t H, int64_t W);
HIGAN_DEF void higan_max_pool3s2_backward(float *dx, const float *dy, const int32_t *argmax,
                                          int64_t N, int64_t C, int64_t H, int64_t W);
HIGAN_DEF higan_var *higan_max_pool3s2(higan_tape *t, higan_var *x);

/* -- constant padding, amounts in the order (top, bottom, left, right); this is
      F.pad(x, (left, right, top, bottom), value=value). Negative amounts crop like F.pad.
      x [N,C,H,W] -> y [N,C,H+top+bottom,W+left+right]. Zero padding: value 0. */
HIGAN_DEF void higan_pad_forward(float *y, const float *x, int64_t N, int64_t C, int64_t H,
                                 int64_t W, int top, int bottom, int left, int right, float value);
HIGAN_DEF void higan_pad_backward(float *dx, const float *dy, int64_t N, int64_t C, int64_t H,
                                  int64_t W, int top, int bottom, int left, int right);
HIGAN_DEF higan_var *higan_pad(higan_tape *t, higan_var *x, int top, int bottom, int left,
                               int right, float value);

/* -- activations, elementwise over n values (any shape). relu'(0) = 0 like PyTorch. */
HIGAN_DEF void higan_relu_forward(float *y, const float *x, int64_t n);
HIGAN_DEF void higan_relu_backward(float *dx, const float *dy, const float *x, int64_t n);
HIGAN_DEF higan_var *higan_relu(higan_tape *t, higan_var *x);
HIGAN_DEF void higan_leaky_relu_forward(float *y, const float *x, float slope, int64_t n);
HIGAN_DEF void higan_leaky_relu_backward(float *dx, const float *dy, const float *x, float slope,
                                         int64_t n);
HIGAN_DEF higan_var *higan_leaky_relu(higan_tape *t, higan_var *x, float slope);
HIGAN_DEF void higan_tanh_forward(float *y, const float *x, int64_t n);
HIGAN_DEF void higan_tanh_backward(float *dx, const float *dy, const float *y, int64_t n); /* from y */
HIGAN_DEF higan_var *higan_tanh(higan_tape *t, higan_var *x);

/* -- concat / slice along a dim. A tensor is viewed as [outer, size, inner] around the dim
      (outer = product of the dims before it, inner = product of the dims after it).
      concat: xs[i] [outer, sizes[i], inner] -> y [outer, sum sizes, inner].
      backward: dxs[i] may be NULL (skipped). */
HIGAN_DEF void higan_concat_forward(float *y, const float *const *xs, const int64_t *sizes, int n,
                                    int64_t outer, int64_t inner);
HIGAN_DEF void higan_concat_backward(float *const *dxs, const float *dy, const int64_t *sizes,
                                     int n, int64_t outer, int64_t inner);
/* torch.cat(xs, dim): every other dim must agree; dim may be negative (from the end). */
HIGAN_DEF higan_var *higan_concat(higan_tape *t, higan_var *const *xs, int n, int dim);
/* slice: x [outer, size, inner] -> y [outer, len, inner] = x[:, start:start+len, :];
   backward adds dy into that slice of dx. */
HIGAN_DEF void higan_slice_forward(float *y, const float *x, int64_t outer, int64_t size,
                                   int64_t inner, int64_t start, int64_t len);
HIGAN_DEF void higan_slice_backward(float *dx, const float *dy, int64_t outer, int64_t size,
                                    int64_t inner, int64_t start, int64_t len);
/* x.narrow(dim, start, len) as a copy; dim may be negative. torch.split(x, k, dim) is a
   series of slices (higan_split does that: out[i] gets sizes[i] along dim, which must add up
   to x's size; returns HIGAN_OK or HIGAN_ERR_NOMEM on arena overflow). */
HIGAN_DEF higan_var *higan_slice(higan_tape *t, higan_var *x, int dim, int64_t start, int64_t len);
HIGAN_DEF higan_status higan_split(higan_tape *t, higan_var *x, int dim, int n, const int64_t *sizes,
                          higan_var **out);

/* -- reshape: a VIEW. y shares x's data (no copy) with another shape of the same numel; one
      entry of shape may be -1 (inferred). y gets its own gradient buffer, added into x's in
      backward. Never write into y->data (it is x->data). */
HIGAN_DEF higan_var *higan_reshape(higan_tape *t, higan_var *x, int ndim, const int64_t *shape);

/* -- permute (a copy): y = x.permute(perm), 1..4 dims. shape is x's shape; y's shape[i] is
      shape[perm[i]]. Backward scatters dy back (a bijection: plain adds). */
HIGAN_DEF void higan_permute_forward(float *y, const float *x, int ndim, const int64_t *shape,
                                     const int *perm);
HIGAN_DEF void higan_permute_backward(float *dx, const float *dy, int ndim, const int64_t *shape,
                                      const int *perm);
HIGAN_DEF higan_var *higan_permute(higan_tape *t, higan_var *x, const int *perm);

/* -- masked reductions over the width: x [N,C,H,W] (or [N,C,T], taken as H = 1) -> y [N,C].
      Only columns w < lens[n] count (lens[n] >= 0; values > W count all W columns).
      sum:  y[n,c] = sum over h and w < lens[n] of x[n,c,h,w]
      mean: y[n,c] = sum / ((float)(H * lens[n]) + eps). With H = 1 and eps = 1e-8 this is
            HiGAN+'s StyleEncoder/WriterIdentifier pooling:
            (feat * len2mask(len)).sum(-1) / (len + 1e-8) with len = img_len // 16 (the
            caller divides); the divisor uses lens[n] as given, not clamped to W. */
HIGAN_DEF void higan_masked_sum_width_forward(float *y, const float *x, const int *lens,
                                              int64_t N, int64_t C, int64_t H, int64_t W);
HIGAN_DEF void higan_masked_sum_width_backward(float *dx, const float *dy, const int *lens,
                                               int64_t N, int64_t C, int64_t H, int64_t W);
HIGAN_DEF void higan_masked_mean_width_forward(float *y, const float *x, const int *lens,
                                               int64_t N, int64_t C, int64_t H, int64_t W, float eps);
HIGAN_DEF void higan_masked_mean_width_backward(float *dx, const float *dy, const int *lens,
                                                int64_t N, int64_t C, int64_t H, int64_t W, float eps);
HIGAN_DEF higan_var *higan_masked_sum_width(higan_tape *t, higan_var *x, const int *lens);
HIGAN_DEF higan_var *higan_masked_mean_width(higan_tape *t, higan_var *x, const int *lens, float eps);

/* -- dropout. Train: mask[i] = 1/(1-p) with probability 1-p, else 0 (one
      higan_rng_uniform draw per element, in order: keep when u >= p); y = x * mask.
      p >= 1 gives all zeros (like PyTorch). The tape op returns x itself in eval mode or
      when p <= 0 (identity, nothing recorded). */
HIGAN_DEF void higan_dropout_forward(float *y, float *mask, const float *x, float p,
                                     higan_rng *rng, int64_t n);
HIGAN_DEF void higan_dropout_backward(float *dx, const float *dy, const float *mask, int64_t n);
HIGAN_DEF higan_var *higan_dropout(higan_tape *t, higan_var *x, float p, int train, higan_rng *rng);

/* -- log-softmax over the last dim: x [rows, cols] -> y. Backward from y:
      dx = dy - softmax * sum(dy) per row. */
HIGAN_DEF void higan_log_softmax_forward(float *y, const float *x, int64_t rows, int64_t cols);
HIGAN_DEF void higan_log_softmax_backward(float *dx, const float *dy, const float *y, int64_t rows,
                                          int64_t cols);
HIGAN_DEF higan_var *higan_log_softmax(higan_tape *t, higan_var *x);

/* -- small elementwise helpers (same shapes unless stated) */
HIGAN_DEF void higan_add_forward(float *y, const float *a, const float *b, int64_t n);
HIGAN_DEF void higan_add_backward(float *da, float *db, const float *dy, int64_t n);
HIGAN_DEF higan_var *higan_add(higan_tape *t, higan_var *a, higan_var *b);         /* a + b */
HIGAN_DEF void higan_sub_forward(float *y, const float *a, const float *b, int64_t n);
HIGAN_DEF void higan_sub_backward(float *da, float *db, const float *dy, int64_t n);
HIGAN_DEF higan_var *higan_sub(higan_tape *t, higan_var *a, higan_var *b);         /* a - b */
HIGAN_DEF void higan_mul_forward(float *y, const float *a, const float *b, int64_t n);
HIGAN_DEF void higan_mul_backward(float *da, float *db, const float *dy, const float *a,
                                  const float *b, int64_t n);
HIGAN_DEF higan_var *higan_mul(higan_tape *t, higan_var *a, higan_var *b);         /* a * b */
HIGAN_DEF void higan_scale_forward(float *y, const float *x, float s, int64_t n);
HIGAN_DEF void higan_scale_backward(float *dx, const float *dy, float s, int64_t n);
HIGAN_DEF higan_var *higan_scale(higan_tape *t, higan_var *x, float s);            /* s * x */
/* x [N,C,...] + b [N,C] broadcast over the trailing HW values of each (n, c). */
HIGAN_DEF void higan_add_nc_forward(float *y, const float *x, const float *b, int64_t N, int64_t C,
                                    int64_t HW);
HIGAN_DEF void higan_add_nc_backward(float *dx, float *db, const float *dy, int64_t N, int64_t C,
                                     int64_t HW);
HIGAN_DEF higan_var *higan_add_nc(higan_tape *t, higan_var *x, higan_var *b);
/* sum / mean of all n values -> y [1] (accumulated in double, one thread: deterministic). */
HIGAN_DEF void higan_sum_all_forward(float *y, const float *x, int64_t n);
HIGAN_DEF void higan_sum_all_backward(float *dx, const float *dy, int64_t n);
HIGAN_DEF higan_var *higan_sum_all(higan_tape *t, higan_var *x);
HIGAN_DEF void higan_mean_all_forward(float *y, const float *x, int64_t n);
HIGAN_DEF void higan_mean_all_backward(float *dx, const float *dy, int64_t n);
HIGAN_DEF higan_var *higan_mean_all(higan_tape *t, higan_var *x);
HIGAN_DEF void higan_exp_forward(float *y, const float *x, int64_t n);
HIGAN_DEF void higan_exp_backward(float *dx, const float *dy, const float *y, int64_t n); /* from y */
HIGAN_DEF higan_var *higan_exp(higan_tape *t, higan_var *x);
