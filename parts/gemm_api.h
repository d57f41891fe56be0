/* ==== GEMM, CONV2D, LINEAR ================================================
   All matrices are row-major float32. The fast paths dispatch at run time on
   higan_cpu_level() (scalar, AVX2+FMA, AVX-512F kernels live in one binary) and run on
   higan_get_num_threads() threads; results are bit-identical for any thread count (the K
   reduction is never split across threads) but differ in the last bits between levels. */

/* C[M,N] = alpha * op(A)[M,K] * op(B)[K,N] + beta * C.
   op(A) = A ([M,K], row stride lda) or, with trans_a, A^T (A is [K,M], row stride lda);
   op(B) = B ([K,N], row stride ldb) or, with trans_b, B^T (B is [N,K], row stride ldb).
   beta == 0 means C is not read (NaNs in C are overwritten). C must not alias A or B. */
HIGAN_DEF void higan_gemm(int trans_a, int trans_b, int64_t M, int64_t N, int64_t K, float alpha,
                          const float *A, int64_t lda, const float *B, int64_t ldb,
                          float beta, float *C, int64_t ldc);
/* The reference: a plain triple loop (double accumulators), same contract, single thread. */
HIGAN_DEF void higan_gemm_ref(int trans_a, int trans_b, int64_t M, int64_t N, int64_t K, float alpha,
                              const float *A, int64_t lda, const float *B, int64_t ldb,
                              float beta, float *C, int64_t ldc);
/* higan_gemm keeps one packing buffer per calling thread (grown on demand, at most about
   6 MB); this frees the calling thread's buffer (call it before a worker thread ends). */
HIGAN_DEF void higan_gemm_free_buffers(void);

/* ---- conv2d (cross-correlation, as torch.nn.functional.conv2d, groups = 1, no dilation) ----
   x [N, IC, H, W], w [OC, IC, KH, KW], b [OC] (optional), y [N, OC, OH, OW] with
   OH = (H + pad_top + pad_bottom - KH) / stride_h + 1, OW likewise; padding is zeros and may
   be asymmetric (F.pad(x, (left, right, top, bottom)) followed by an unpadded conv). */
typedef struct higan_conv2d_shape {
    int64_t N, IC, H, W;
    int64_t OC, KH, KW;
    int64_t stride_h, stride_w;
    int64_t pad_top, pad_bottom, pad_left, pad_right;
} higan_conv2d_shape;
/* Fills every field (an alternative to designated initialisers). */
HIGAN_DEF higan_conv2d_shape higan_conv2d_make_shape(int64_t N, int64_t IC, int64_t H, int64_t W,
        int64_t OC, int64_t KH, int64_t KW, int64_t stride_h, int64_t stride_w,
        int64_t pad_top, int64_t pad_bottom, int64_t pad_left, int64_t pad_right);
HIGAN_DEF int64_t higan_conv2d_out_h(const higan_conv2d_shape *s);
HIGAN_DEF int64_t higan_conv2d_out_w(const higan_conv2d_shape *s);
/* Bytes of scratch that higan_conv2d_backward takes from its arena (forward takes none). */
HIGAN_DEF size_t higan_conv2d_scratch_bytes(const higan_conv2d_shape *s);

/* y = conv(x, w) + b (b may be NULL). Implicit GEMM: y_n[OC, OH*OW] = w[OC, IC*KH*KW] col(x_n)
   for every sample in one blocked GEMM (w packed once), whose packing reads col(x_n)
   straight from x (no im2col buffer). scratch is unused (may be NULL); kept for symmetry. */
HIGAN_DEF higan_status higan_conv2d_forward(float *y, const float *x, const float *w, const float *b,
                                            const higan_conv2d_shape *s, higan_arena *scratch);
/* dx += conv_transpose(dy, w) (GEMM w^T dy_n into a scratch column block, then col2im);
   dw += sum_n dy_n col(x_n)^T (one GEMM with K = N*OH*OW, col packed from x); db += sum of
   dy over N, OH, OW. Each is skipped when NULL. dx needs higan_conv2d_scratch_bytes(s) of
   scratch (at most 16 MB; released before returning): HIGAN_ERR_NOMEM (arena overflow,
   sticky) if it does not fit, HIGAN_ERR_ARG if scratch is NULL. 1x1 stride-1 unpadded convs
   need no scratch (x and dx are the GEMM operands themselves). */
HIGAN_DEF higan_status higan_conv2d_backward(float *dx, float *dw, float *db, const float *dy,
                                             const float *x, const float *w,
                                             const higan_conv2d_shape *s, higan_arena *scratch);
/* Direct 7-loop reference versions (single thread, double accumulators), for tests. */
HIGAN_DEF void higan_conv2d_forward_ref(float *y, const float *x, const float *w, const float *b,
                                        const higan_conv2d_shape *s);
HIGAN_DEF void higan_conv2d_backward_ref(float *dx, float *dw, float *db, const float *dy,
                                         const float *x, const float *w, const higan_conv2d_shape *s);
/* Tape op. x [N, IC, H, W], w [OC, IC, KH, KW], b [OC] or NULL; scratch from t->arena. */
HIGAN_DEF higan_var *higan_conv2d(higan_tape *t, higan_var *x, higan_var *w, higan_var *b,
                                  int64_t stride_h, int64_t stride_w, int64_t pad_top,
                                  int64_t pad_bottom, int64_t pad_left, int64_t pad_right);

/* ---- linear (PyTorch layout) -----------------------------------------------------------
   y [N, OUT] = x [N, IN] w[OUT, IN]^T + b [OUT] (b may be NULL). */
HIGAN_DEF void higan_linear_forward(float *y, const float *x, const float *w, const float *b,
                                    int64_t N, int64_t IN, int64_t OUT);
/* dx [N, IN] += dy w; dw [OUT, IN] += dy^T x; db [OUT] += column sums of dy. */
HIGAN_DEF void higan_linear_backward(float *dx, float *dw, float *db, const float *dy,
                                     const float *x, const float *w,
                                     int64_t N, int64_t IN, int64_t OUT);
/* Tape op. x is [N, IN] or [B, T, IN] (leading dims are rows), w [OUT, IN], b [OUT] or NULL.
   The output keeps x's leading dims with OUT last. */
HIGAN_DEF higan_var *higan_linear(higan_tape *t, higan_var *x, higan_var *w, higan_var *b);
