/* ==== NORMALISATION OPS: spectral norm, batch norm, conditional batch norm, embedding ===
   Raw kernels on float arrays (outputs first, backward accumulates with +=, NULL gradient
   = skip) and tape ops on top. Layout of the batch-norm family: x is [N, C, HW] with HW the
   product of every dimension after the channel (NCHW, or [N, C] with HW = 1). */

/* ---- spectral norm (BigGAN style, one power iteration, num_svs = 1) ----------------------
   W is viewed as [out, in] (in = numel / out). From u0 [out]:
       v = normalize(u0 W), u = normalize(v W^T), sigma = (v W^T) . u
   normalize(a) = a / max(||a||, eps). The tape op uses eps = HIGAN_SN_EPS (HiGAN+'s 1e-8). */
#define HIGAN_SN_EPS 1e-8f

/* sigma of W without gradients (also the first half of the forward). u [out], v [in] receive
   the singular vectors; u may be the same array as u0 (then u0 is updated in place, as the
   train step does). Use it in network code to recompute sigma outside the tape. */
HIGAN_DEF float higan_spectral_norm_sigma(float *u, float *v, const float *w, const float *u0,
                                          int64_t out, int64_t in, float eps);
/* y = W / sigma. y, w [out*in]; u [out], v [in] caches; *sigma out. u may alias u0. */
HIGAN_DEF void higan_spectral_norm_forward(float *y, float *u, float *v, float *sigma,
                                           const float *w, const float *u0,
                                           int64_t out, int64_t in, float eps);
/* dW += dY / sigma - (sum dY*W) / sigma^2 * u v^T   (u, v held constant, as BigGAN does). */
HIGAN_DEF void higan_spectral_norm_backward(float *dw, const float *dy, const float *w,
                                            const float *u, const float *v, float sigma,
                                            int64_t out, int64_t in);
/* Tape op: the normalised weight W / sigma (same shape as w). out_features = rows of the
   [out, in] view (w->shape[0] for conv and linear weights). u0 [out_features] is required;
   sv0 [1] may be NULL. train: u0 <- u and sv0 <- sigma (also under no_grad, like BigGAN in
   training mode). eval: sigma is recomputed from u0, which is left unchanged. The gradient
   flows to w through W / sigma and through sigma (with u, v constant). */
HIGAN_DEF higan_var *higan_spectral_norm(higan_tape *t, higan_var *w, float *u0, float *sv0,
                                         int64_t out_features, int train);

/* ---- batch statistics shared by batch norm and conditional batch norm -------------------
   mean, rstd [C]: what x is normalised with, x_hat = (x - mean) * rstd.
   batch_stats (1: train, or no running stats given): batch mean and biased variance; when
     running_mean / running_var are given they are updated with
     running = (1 - momentum) * running + momentum * batch (unbiased variance for running_var).
     Needs N*HW > 1 (HIGAN_ASSERT, as PyTorch refuses it too).
   batch_stats 0: mean = running_mean, rstd = 1 / sqrt(running_var + eps); nothing updated. */
HIGAN_DEF void higan_batch_norm_stats(float *mean, float *rstd, float *running_mean,
                                      float *running_var, const float *x, float momentum,
                                      float eps, int batch_stats,
                                      int64_t N, int64_t C, int64_t HW);

/* ---- BatchNorm2d -------------------------------------------------------------------------
   y = x_hat * weight[c] + bias[c] (weight, bias [C], each may be NULL = 1 / 0).
   Forward computes mean/rstd [C] (caches) with higan_batch_norm_stats. Backward: batch_stats
   as in the forward (1: gradient also flows through the batch mean and variance). */
HIGAN_DEF void higan_batch_norm2d_forward(float *y, float *mean, float *rstd, const float *x,
                                          const float *weight, const float *bias,
                                          float *running_mean, float *running_var,
                                          float momentum, float eps, int batch_stats,
                                          int64_t N, int64_t C, int64_t HW);
HIGAN_DEF void higan_batch_norm2d_backward(float *dx, float *dweight, float *dbias,
                                           const float *dy, const float *x, const float *mean,
                                           const float *rstd, const float *weight,
                                           int batch_stats, int64_t N, int64_t C, int64_t HW);
/* Tape op. x: [N, C, H, W] (ndim 2..4 accepted: [N, C, ...]). weight, bias: [C] vars or NULL
   (no affine). running_mean / running_var [C] and num_batches_tracked may be NULL. train:
   batch statistics, running stats updated, *num_batches_tracked += 1. eval: running stats;
   without running stats the batch statistics are used (track_running_stats=False). */
HIGAN_DEF higan_var *higan_batch_norm2d(higan_tape *t, higan_var *x, higan_var *weight,
                                        higan_var *bias, float *running_mean,
                                        float *running_var, int64_t *num_batches_tracked,
                                        float momentum, float eps, int train);

/* ---- conditional batch norm (HiGAN+ / BigGAN ccbn, norm_style 'bn') ---------------------
   y = x_hat * (1 + gain[n, c]) + bias[n, c]; gain, bias [N, C]; stats as in batch norm
   (F.batch_norm without affine on stored_mean / stored_var). */
HIGAN_DEF void higan_cond_batch_norm_forward(float *y, float *mean, float *rstd, const float *x,
                                             const float *gain, const float *bias,
                                             float *running_mean, float *running_var,
                                             float momentum, float eps, int batch_stats,
                                             int64_t N, int64_t C, int64_t HW);
HIGAN_DEF void higan_cond_batch_norm_backward(float *dx, float *dgain, float *dbias,
                                              const float *dy, const float *x,
                                              const float *mean, const float *rstd,
                                              const float *gain, int batch_stats,
                                              int64_t N, int64_t C, int64_t HW);
/* Tape op. x: [N, C, ...]; gain, bias: vars with N*C elements (outputs of linear layers).
   stored_mean / stored_var [C] may be NULL (then batch statistics always). */
HIGAN_DEF higan_var *higan_cond_batch_norm(higan_tape *t, higan_var *x, higan_var *gain,
                                           higan_var *bias, float *stored_mean,
                                           float *stored_var, float momentum, float eps,
                                           int train);

/* ---- embedding ----------------------------------------------------------------------------
   weight [num, D]; idx [n_idx] with 0 <= idx < num (HIGAN_ASSERT). */
/* PyTorch's embedding_renorm_: every distinct looked-up row whose L2 norm exceeds max_norm
   is scaled IN PLACE by max_norm / (norm + 1e-7). */
HIGAN_DEF void higan_embedding_renorm(float *weight, const int *idx, int64_t n_idx, int64_t num,
                                      int64_t D, float max_norm);
/* y [n_idx, D] = weight[idx[i], :]. */
HIGAN_DEF void higan_embedding_forward(float *y, const float *weight, const int *idx,
                                       int64_t n_idx, int64_t num, int64_t D);
/* dweight[idx[i], :] += dy[i, :], except rows with idx[i] == padding_idx (padding_idx < 0:
   none). */
HIGAN_DEF void higan_embedding_backward(float *dweight, const float *dy, const int *idx,
                                        int64_t n_idx, int64_t D, int padding_idx);
/* Tape op: [n_idx, D] (reshape the result for [B, L, D]: the data is contiguous).
   padding_idx < 0: none (PyTorch's negative padding_idx must be converted by the caller).
   max_norm > 0: the looked-up rows of weight->data are renormalised in place first, so the
   gradient is with respect to the renormalised weight, as in PyTorch. idx is copied. */
HIGAN_DEF higan_var *higan_embedding(higan_tape *t, higan_var *weight, const int *idx,
                                     int64_t n_idx, int padding_idx, float max_norm);
