/* ==== GAN LOSSES (HiGAN+): hinge, masked L1, KL, contextual ============== */
/* Every loss is a scalar: y points to one float; the tape ops return a var of ndim 1,
   shape {1}. Backward kernels take dy (one float) and accumulate into the gradients. */

/* -- Hinge losses (BigGAN style). x: any shape, n = numel.
   d_real: mean(relu(1 - x))    discriminator loss on real scores
   d_fake: mean(relu(1 + x))    discriminator loss on fake scores
   g:      -mean(x)             generator (adversarial) loss
   HiGAN+ averages d_real over the plain and augmented real batches itself:
   (d_real(D(real)) + d_real(D(aug))) / 2. The relu gradient is 0 at the kink. */
HIGAN_DEF void higan_hinge_d_real_forward(float *y, const float *x, int64_t n);
HIGAN_DEF void higan_hinge_d_real_backward(float *dx, const float *dy, const float *x, int64_t n);
HIGAN_DEF void higan_hinge_d_fake_forward(float *y, const float *x, int64_t n);
HIGAN_DEF void higan_hinge_d_fake_backward(float *dx, const float *dy, const float *x, int64_t n);
HIGAN_DEF void higan_hinge_g_forward(float *y, const float *x, int64_t n);
HIGAN_DEF void higan_hinge_g_backward(float *dx, const float *dy, int64_t n);
HIGAN_DEF higan_var *higan_hinge_d_real(higan_tape *t, higan_var *x);
HIGAN_DEF higan_var *higan_hinge_d_fake(higan_tape *t, higan_var *x);
HIGAN_DEF higan_var *higan_hinge_g(higan_tape *t, higan_var *x);

/* -- Masked L1, HiGAN+'s recn_l1_loss(img1, img2, img_lens):
   a, b: [N, ..., W] (HiGAN+: [N, C, H, W]); M = product of the middle dims (C*H);
   lens: [N] valid widths.
   y = sum_{n, m, w < lens[n]} |a - b| / (M * sum_n lens[n])
   The divisor uses lens as given (not clipped to W), exactly like the official code;
   tv_loss and the perceptual loss call it with lens - 1 or lens / scale.
   Gradient: sign(a - b) / divisor inside the mask (0 where a == b), -that for b. */
HIGAN_DEF void higan_masked_l1_forward(float *y, const float *a, const float *b, const int *lens,
                                       int64_t N, int64_t M, int64_t W);
HIGAN_DEF void higan_masked_l1_backward(float *da, float *db, const float *dy, const float *a,
                                        const float *b, const int *lens,
                                        int64_t N, int64_t M, int64_t W);
/* a and b must have the same shape (ndim >= 2); lens is copied. */
HIGAN_DEF higan_var *higan_masked_l1(higan_tape *t, higan_var *a, higan_var *b, const int *lens);

/* -- KL divergence of N(mu, exp(logvar)) from N(0, 1), HiGAN+'s KLloss:
   mu, logvar: [N, D];  y = mean_n( -1/2 * sum_d (1 + logvar - mu^2 - exp(logvar)) )
   dmu = dy * mu / N;   dlogvar = dy * (exp(logvar) - 1) / (2 N) */
HIGAN_DEF void higan_kl_gaussian_forward(float *y, const float *mu, const float *logvar, int64_t N, int64_t D);
HIGAN_DEF void higan_kl_gaussian_backward(float *dmu, float *dlogvar, const float *dy, const float *mu,
                                          const float *logvar, int64_t N, int64_t D);
/* mu, logvar: same shape [N, ...] (D = numel / N). */
HIGAN_DEF higan_var *higan_kl_gaussian(higan_tape *t, higan_var *mu, higan_var *logvar);

/* -- Contextual loss, HiGAN+'s CXLoss(sigma=0.5, b=1.0)(featureT, featureI):
   feat_t: target (real) [N, C, P] with P = HT*WT; feat_i: inference (generated)
   [N, C, Q] with Q = HI*WI (the spatial sizes of the two may differ).
     mean[c]  = mean over n and p of feat_t[n, c, p]            (target only)
     t^, i^   = (feat - mean) / ||feat - mean||_2 over c        (no epsilon)
     r[p, q]  = (1 - t^[:, p] . i^[:, q]) / 2
     r~[p, q] = r[p, q] / (min_p' r[p', q] + 1e-5)              (min over target positions)
     w[p, q]  = exp((b - r~)/sigma) / sum_p' exp((b - r~[p', q])/sigma)
     cx_n     = mean_p max_q w[p, q]
     y        = mean_n -log(cx_n + 1e-5)
   Backward goes through the centring mean, the norms, the softmax, the min (to its
   first argmin p) and the max (to its first argmax q), like PyTorch autograd. */
#define HIGAN_CX_SIGMA 0.5f
#define HIGAN_CX_B 1.0f
typedef struct higan_cx_cache {
    float *t_hat;     /* [N, C, P] centred, channel-normalised target */
    float *i_hat;     /* [N, C, Q] centred, channel-normalised inference */
    float *t_norm;    /* [N, P] channel norms of the centred target */
    float *i_norm;    /* [N, Q] channel norms of the centred inference */
    float *r_min;     /* [N, Q] min over p of r */
    float *w_sum;     /* [N, Q] sum over p of exp((b - r~)/sigma) */
    float *cx;        /* [N] mean_p max_q w */
    int64_t *p_min;   /* [N, Q] argmin over p of r */
    int64_t *q_max;   /* [N, P] argmax over q of w */
} higan_cx_cache;
/* Points every array of c into arena a; HIGAN_ERR_NOMEM on overflow. */
HIGAN_DEF higan_status higan_cx_cache_alloc(higan_cx_cache *c, higan_arena *a,
                                            int64_t N, int64_t C, int64_t P, int64_t Q);
/* cache may be NULL (forward only; then its arrays come from scratch and are released).
   scratch: Q*P + C floats (plus the cache when cache is NULL). */
HIGAN_DEF void higan_cx_loss_forward(float *y, higan_cx_cache *cache, const float *feat_t,
                                     const float *feat_i, int64_t N, int64_t C, int64_t P, int64_t Q,
                                     float sigma, float b, higan_arena *scratch);
/* scratch: Q*P + C*(P + Q) + C + Q floats. */
HIGAN_DEF void higan_cx_loss_backward(float *dfeat_t, float *dfeat_i, const float *dy,
                                      const higan_cx_cache *cache, int64_t N, int64_t C, int64_t P,
                                      int64_t Q, float sigma, float b, higan_arena *scratch);
/* feat_t [N, C, ...], feat_i [N, C, ...] (ndim >= 2, same N and C; HiGAN+: 4-D). */
HIGAN_DEF higan_var *higan_cx_loss(higan_tape *t, higan_var *feat_t, higan_var *feat_i,
                                          float sigma, float b);
