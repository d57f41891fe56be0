/* ==== SEQUENCE OPS AND LOSSES: LSTM, CTC, greedy CTC decoding, cross-entropy ===== */
/* Raw kernels: outputs first, backward ACCUMULATES (+=) and skips a NULL gradient.
   Tape ops (no suffix) return NULL when an input is NULL or the arena overflows; integer
   arrays (lengths, targets, labels) are copied, so the caller's arrays may die at once. */

/* -- LSTM, exactly nn.LSTM(IN, H, num_layers, bidirectional=D==2, batch_first=True) fed
   through pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False) and
   pad_packed_sequence(batch_first=True, total_length=T):
     x [B,T,IN], lengths [B] (0 <= lengths[b] <= T, any order) -> y [B,T,D*H],
     y[b,t,:] = 0 for t >= lengths[b]; forward direction in y[..., 0:H], reverse in
     y[..., H:2H]; the reverse direction starts at each sequence's own last valid step;
     zero initial h and c; no dropout. Gate order i, f, g, o.
   weights: num_layers*D*4 pointers in PyTorch's parameter order
     layer l, direction d (0 forward, 1 reverse): w_ih [4H, in_l], w_hh [4H, H],
     b_ih [4H], b_hh [4H]   at index (l*D + d)*4 + {0,1,2,3};   in_0 = IN, in_l = D*H.
   Biases may be NULL in the raw kernels (no bias).
   cache: higan_lstm_cache_floats() floats the backward needs (intermediate layer outputs,
   gate activations, cell states). Forward with cache == NULL (inference) takes it from
   scratch and releases it. Scratch also needs B*6H floats in forward and
   B*T*(5H + 2*D*H) + B*6H floats in backward (plus 64-byte alignment per block); both
   release it before returning. They return HIGAN_OK or HIGAN_ERR_NOMEM (scratch overflow,
   sticky in the arena; the outputs are then not valid). Parallel over the batch inside each
   step and in higan_gemm: bit-identical for any thread count. */
HIGAN_DEF int64_t higan_lstm_cache_floats(int64_t B, int64_t T, int64_t H, int num_layers,
                                          int bidirectional);
HIGAN_DEF higan_status higan_lstm_forward(float *y, float *cache, const float *x, const int *lengths,
                                          const float *const *weights, int64_t B, int64_t T,
                                          int64_t IN, int64_t H, int num_layers, int bidirectional,
                                          higan_arena *scratch);
/* dweights: num_layers*D*4 gradient pointers in the order of weights (each may be NULL), or
   NULL for none. y and cache are the forward's. Padded positions of dy are ignored and the
   padded positions of dx get nothing. */
HIGAN_DEF higan_status higan_lstm_backward(float *dx, float *const *dweights, const float *dy,
                                           const float *y, const float *cache, const float *x,
                                           const int *lengths, const float *const *weights,
                                           int64_t B, int64_t T, int64_t IN, int64_t H,
                                           int num_layers, int bidirectional, higan_arena *scratch);
/* x [B,T,IN] -> [B,T,D*H]. weights: num_layers*D*4 vars as above, none NULL. */
HIGAN_DEF higan_var *higan_lstm(higan_tape *t, higan_var *x, const int *lengths, int hidden,
                                int num_layers, int bidirectional, higan_var **weights);

/* -- CTC loss, F.ctc_loss(log_probs, targets, input_lengths, target_lengths, blank,
   reduction='mean', zero_infinity):
     log_probs [T,B,C] (a log_softmax output), targets concatenated (sum of target_lengths
     labels in [0, C)), input_lengths [B] (<= T), target_lengths [B].
     nll[b] = -log p(target_b | log_probs[:input_lengths[b], b, :]) (alpha recursion in log
     space, float, like PyTorch's CPU kernel); with zero_infinity an infeasible sample
     (nll = inf) counts as 0.   y = mean_b nll[b] / max(target_lengths[b], 1).
   alpha: higan_ctc_alpha_floats() floats, kept for the backward.
   The backward is PyTorch's: dlog_probs[t,b,c] += g_b * (exp(lp) - exp(log(sum_s alpha
   beta [l'_s = c]) + nll - lp)) for t < input_lengths[b], with g_b = dy / B / max(L_b, 1):
   the gradient with respect to the logits under a log_softmax, which is also correct
   through higan_log_softmax's backward (its rows sum to 0). Infeasible samples under
   zero_infinity get 0; without it they give inf/NaN gradients, as in PyTorch.
   Backward scratch: B*(2*(2*max L + 1) + C) floats. */
HIGAN_DEF int64_t higan_ctc_alpha_floats(int64_t T, int64_t B, const int *target_lengths);
HIGAN_DEF void higan_ctc_loss_forward(float *y, float *nll, float *alpha, const float *log_probs,
                                      const int *targets, const int *input_lengths,
                                      const int *target_lengths, int64_t T, int64_t B, int64_t C,
                                      int blank, int zero_infinity);
HIGAN_DEF higan_status higan_ctc_loss_backward(float *dlog_probs, const float *dy,
                                               const float *log_probs, const float *nll,
                                               const float *alpha, const int *targets,
                                               const int *input_lengths, const int *target_lengths,
                                               int64_t T, int64_t B, int64_t C, int blank,
                                               int zero_infinity, higan_arena *scratch);
/* log_probs [T,B,C] -> scalar (ndim 1, shape {1}). */
HIGAN_DEF higan_var *higan_ctc_loss(higan_tape *t, higan_var *log_probs, const int *targets,
                                    const int *input_lengths, const int *target_lengths,
                                    int blank, int zero_infinity);

/* -- Greedy (best path) CTC decoding of one sample: scores [T,C] (any monotone scores:
   logits, probabilities or log-probabilities), argmax per step (first maximum on ties),
   collapse repeats, then drop blanks. Writes at most max_out labels to out and returns the
   full decoded length (like snprintf: a result > max_out means out was truncated).
   For log_probs [T,B,C] use higan_ctc_greedy_decode_strided with stride B*C and
   scores = log_probs + b*C. */
HIGAN_DEF int higan_ctc_greedy_decode(const float *scores, int T, int C, int blank, int *out,
                                      int max_out);
HIGAN_DEF int higan_ctc_greedy_decode_strided(const float *scores, int64_t step_stride, int T,
                                              int C, int blank, int *out, int max_out);

/* -- Cross-entropy, F.cross_entropy(logits, labels) (mean over N, no ignore_index, no
   weights): logits [N,C], labels [N] in [0, C).
   y = mean_n (logsumexp(logits[n]) - logits[n, labels[n]]);  lse [N] (may be NULL in the
   forward) keeps each row's logsumexp for the backward:
   dlogits += dy * (softmax - onehot) / N. */
HIGAN_DEF void higan_cross_entropy_forward(float *y, float *lse, const float *logits,
                                           const int *labels, int64_t N, int64_t C);
HIGAN_DEF void higan_cross_entropy_backward(float *dlogits, const float *dy, const float *logits,
                                            const float *lse, const int *labels, int64_t N,
                                            int64_t C);
/* logits [N,C] -> scalar (ndim 1, shape {1}). */
HIGAN_DEF higan_var *higan_cross_entropy(higan_tape *t, higan_var *logits, const int *labels);
