#ifndef HIGAN_STYLER_API_INCLUDED
#define HIGAN_STYLER_API_INCLUDED
/* ==== STYLE AND RECOGNITION NETWORKS: StyleBackbone, StyleEncoder, WriterIdentifier,
   Recognizer; the 80-symbol alphabet ======================================================
   HiGAN+'s networks/module.py and networks/block.py, with the official state_dict names
   (spec section 2). Every module is a struct of handles into a higan_params store plus its
   configuration, used in three steps:
       1. <module>_register(m, store, prefix, ...)   adds its tensors as "<prefix>.<key>"
          (prefix "" gives the bare key), before higan_params_alloc;
       2. <module>_init(m, rng, init) after higan_params_alloc (or higan_params_load);
       3. <module>_forward(tape, m, ...) builds the forward on the tape (the backward comes
          with higan_tape_backward). train: batch-norm batch statistics and running-stat
          updates (also under no_grad, like PyTorch in train mode) and dropout;
          eval: running statistics, no dropout.
   A module keeps a pointer to its store: the store must outlive it and stay at one address.
   Forwards return NULL on arena or tape overflow or a bad argument (higan_last_error). */

/* Weight initialisation. HIGAN_INIT_TORCH: PyTorch's defaults (conv and linear weights and
   biases U(-1/sqrt(fan_in), 1/sqrt(fan_in)), LSTM U(-1/sqrt(hidden), 1/sqrt(hidden)));
   HIGAN_INIT_N02: HiGAN+'s 'N02', conv and linear weights N(0, 0.02), biases as PyTorch.
   Batch norm: weight 1, bias 0, running mean 0, running var 1, num_batches_tracked 0. */
typedef enum { HIGAN_INIT_TORCH = 0, HIGAN_INIT_N02 = 1 } higan_init_kind;

/* ---- BatchNorm2d: "<prefix>.{weight,bias,running_mean,running_var,num_batches_tracked}" --- */
typedef struct higan_bn2d {
    higan_params *params;
    int weight, bias, running_mean, running_var, num_batches_tracked;   /* handles */
    int64_t C;
    float momentum, eps;    /* 0.1, 1e-5 */
} higan_bn2d;
HIGAN_DEF void higan_bn2d_register(higan_bn2d *m, higan_params *p, const char *prefix, int64_t C);
HIGAN_DEF void higan_bn2d_init(const higan_bn2d *m);
/* x [N, C, H, W] -> same shape */
HIGAN_DEF higan_var *higan_bn2d_forward(higan_tape *t, const higan_bn2d *m, higan_var *x, int train);

/* ---- Conv2dBlock: "<prefix>.conv.{weight,bias}" and "<prefix>.norm.*" --------------------
   Official order: pad -> conv -> [BN] -> [ReLU], or with act_first: [ReLU] -> pad -> conv ->
   [BN]. The zero pad is folded into the convolution (identical result). */
typedef struct higan_conv_block {
    higan_params *params;
    int weight, bias;       /* bias -1: none (use_bias=False) */
    higan_bn2d norm;
    int has_norm, relu, act_first;
    int64_t in, out, ks, stride, pad;
} higan_conv_block;
HIGAN_DEF void higan_conv_block_register(higan_conv_block *m, higan_params *p, const char *prefix,
                                         int64_t in, int64_t out, int64_t ks, int64_t stride,
                                         int64_t pad, int use_bias, int norm, int relu,
                                         int act_first);
HIGAN_DEF void higan_conv_block_init(const higan_conv_block *m, higan_rng *rng, higan_init_kind init);
/* x [N, in, H, W] -> [N, out, (H + 2 pad - ks) / stride + 1, likewise W] */
HIGAN_DEF higan_var *higan_conv_block_forward(higan_tape *t, const higan_conv_block *m, higan_var *x,
                                              int train);

/* ---- ActFirstResBlock(fin, fout): "<prefix>.conv_0", "<prefix>.conv_1" (3x3, pad 1, ReLU
   first, BN, hidden min(fin, fout)) and, when fin != fout, "<prefix>.conv_s" (1x1, no bias,
   no norm). y = x_s + conv_1(dropout(conv_0(x))), x_s = conv_s(x) or x. */
typedef struct higan_afrb {
    higan_conv_block conv_0, conv_1, conv_s;
    int has_shortcut;
    int64_t fin, fout;
    float dropout;
} higan_afrb;
HIGAN_DEF void higan_afrb_register(higan_afrb *m, higan_params *p, const char *prefix, int64_t fin,
                                   int64_t fout, float dropout);
HIGAN_DEF void higan_afrb_init(const higan_afrb *m, higan_rng *rng, higan_init_kind init);
/* x [N, fin, H, W] -> [N, fout, H, W]; rng only for dropout in train mode (else may be NULL) */
HIGAN_DEF higan_var *higan_afrb_forward(higan_tape *t, const higan_afrb *m, higan_var *x, int train,
                                        higan_rng *rng);

/* ---- nn.Linear: "<prefix>.{weight [out, in], bias [out]}" -------------------------------- */
typedef struct higan_linear_layer {
    higan_params *params;
    int weight, bias;       /* bias -1: none */
    int64_t in, out;
} higan_linear_layer;
HIGAN_DEF void higan_linear_layer_register(higan_linear_layer *m, higan_params *p, const char *prefix,
                                           int64_t in, int64_t out, int use_bias);
HIGAN_DEF void higan_linear_layer_init(const higan_linear_layer *m, higan_rng *rng, higan_init_kind init);
/* x [N, in] or [B, T, in] -> [.., out] */
HIGAN_DEF higan_var *higan_linear_layer_forward(higan_tape *t, const higan_linear_layer *m, higan_var *x);

/* ---- StyleBackbone (also the CNN of the Recognizer) ---------------------------------------
   "<prefix>.cnn_backbone.{1,2,4,7,9,12,13,15,16}.*" and "<prefix>.cnn_ctc.1.*".
   Channels with resolution r, max_dim m: c(k) = min(r * 2^k, m):
   1: 1->r; AFRBs 2: r->r, 4: r->c1, 7: c1->c1, 9: c1->c2, 12: c2->c2, 13: c2->c3,
   15: c3->c3, 16: c3->c4; cnn_ctc: c4->c4 (r=16, m=256: 16,16,32,32,64,64,128,128,256).
   Layers: ConstantPad2d(2, -1), conv 5x5 stride 2; AFRB; ZeroPad (l/r 1); AFRB; ZeroPad 1,
   MaxPool 3/2 (the zeros take part in the max); AFRB; ZeroPad l/r 1; AFRB (feat2); ZeroPad
   1, MaxPool 3/2; AFRB; AFRB (feat3); MaxPool 3/2; AFRB; AFRB (feat4); ZeroPad l/r 1; then
   cnn_ctc: ReLU, conv 3x3 no pad, BN, ReLU. Input [B, in_channel, 64, W] (the height must
   give a 1-row output: 64), output [B, c4, T] with T = W / 16 for W a multiple of 16.
   Dropout: cfg.dropout in the AFRBs of the second stage (12..16), half of it in 2..9. */
typedef struct higan_backbone_config {
    int resolution;     /* 16 */
    int max_dim;        /* 256 */
    int in_channel;     /* 1 */
    float dropout;      /* 0 (GAN), 0.2 (WID training) */
} higan_backbone_config;
HIGAN_DEF higan_backbone_config higan_backbone_default_config(void);
typedef struct higan_style_backbone {
    higan_params *params;
    higan_backbone_config cfg;
    higan_conv_block conv1;     /* cnn_backbone.1 */
    higan_afrb blocks[8];       /* cnn_backbone.{2,4,7,9,12,13,15,16} */
    higan_conv_block ctc;       /* cnn_ctc.1 */
    int64_t out_dim;            /* c4 (256) */
} higan_style_backbone;
#define HIGAN_BACKBONE_LEN_SCALE 16     /* sequence positions = image width / 16 */
HIGAN_DEF void higan_style_backbone_register(higan_style_backbone *b, higan_params *p,
                                             const char *prefix, const higan_backbone_config *cfg);
/* StyleBackbone uses HIGAN_INIT_N02 (the official 'N02'); the Recognizer's CNN TORCH. */
HIGAN_DEF void higan_style_backbone_init(const higan_style_backbone *b, higan_rng *rng,
                                         higan_init_kind init);
/* x [B, in_channel, 64, W] -> sequence feature [B, out_dim, T]. feats (may be NULL) receives
   the outputs of cnn_backbone.9, .13 and .16 (feat2, feat3, feat4 of the contextual loss:
   [B, c2, 16, W/4 + 3], [B, c3, 8, W/8 + 2], [B, c4, 3, W/16] for W a multiple of 32).
   rng: dropout in train mode only (may be NULL when cfg.dropout is 0 or in eval). */
HIGAN_DEF higan_var *higan_style_backbone_forward(higan_tape *t, const higan_style_backbone *b,
                                                  higan_var *x, int train, higan_rng *rng,
                                                  higan_var **feats);

/* ---- StyleEncoder: "<prefix>.linear_style.{0,2}.*", "<prefix>.mu.*", "<prefix>.logvar.*" ---
   style = masked mean of feat over the first img_len // 16 positions (divisor len + 1e-8);
   h = lrelu(L2(lrelu(L0(style)))) (slope 0.01); mu = mu(h), logvar = logvar(h);
   z = mu + exp(0.5 logvar) * eps in VAE mode, z = mu otherwise. */
typedef struct higan_style_encoder {
    higan_params *params;
    higan_linear_layer linear0, linear2, mu, logvar;
    int64_t in_dim, style_dim;      /* 256, 32 */
} higan_style_encoder;
HIGAN_DEF void higan_style_encoder_register(higan_style_encoder *e, higan_params *p, const char *prefix,
                                            int64_t in_dim, int64_t style_dim);
HIGAN_DEF void higan_style_encoder_init(const higan_style_encoder *e, higan_rng *rng, higan_init_kind init);
/* feat [B, in_dim, T] (a backbone output), img_lens [B] image widths in pixels (copied).
   Returns z [B, style_dim]; *mu and *logvar (each may be NULL) receive the heads (logvar is
   always computed). vae_mode: eps = noise [B, style_dim] when given, else N(0, 1) drawn from
   rng (B * style_dim draws in row-major order). Without vae_mode z is mu itself. */
HIGAN_DEF higan_var *higan_style_encoder_forward(higan_tape *t, const higan_style_encoder *e,
                                                 higan_var *feat, const int *img_lens, int vae_mode,
                                                 higan_rng *rng, const float *noise,
                                                 higan_var **mu, higan_var **logvar);

/* ---- WriterIdentifier: "<prefix>.linear_wid.{0,2}.*" ---------------------------------------
   Runs on an external backbone feature. Masked mean over the first img_len // 32 positions
   (the official quirk: only the left half of the sequence), Linear, LeakyReLU(0.01), Linear. */
typedef struct higan_writer_identifier {
    higan_params *params;
    higan_linear_layer linear0, linear2;
    int64_t in_dim, n_writer;       /* 256, 372 (the test-set WID: 128) */
} higan_writer_identifier;
#define HIGAN_WID_LEN_SCALE 32
HIGAN_DEF void higan_writer_identifier_register(higan_writer_identifier *w, higan_params *p,
                                                const char *prefix, int64_t in_dim, int64_t n_writer);
HIGAN_DEF void higan_writer_identifier_init(const higan_writer_identifier *w, higan_rng *rng,
                                            higan_init_kind init);
/* feat [B, in_dim, T], img_lens [B] in pixels -> logits [B, n_writer] */
HIGAN_DEF higan_var *higan_writer_identifier_forward(higan_tape *t, const higan_writer_identifier *w,
                                                     higan_var *feat, const int *img_lens);

/* ---- Recognizer: "<prefix>.cnn_backbone.*", "<prefix>.cnn_ctc.*" (as the backbone),
   "<prefix>.rnn_ctc.lstm.{weight_ih,weight_hh,bias_ih,bias_hh}_l{k}[_reverse]" (BiLSTM,
   hidden out_dim / 2 per direction, batch_first, over img_len // 16 frames as
   pack_padded_sequence) and "<prefix>.ctc_cls.{weight,bias}" (Linear out_dim -> n_class). */
typedef struct higan_recognizer_config {
    higan_backbone_config cnn;      /* 16, 256, 1, dropout 0 */
    int n_class;                    /* 80 */
    int rnn_depth;                  /* 2 (0: no LSTM, ctc_cls on the CNN feature) */
} higan_recognizer_config;
HIGAN_DEF higan_recognizer_config higan_recognizer_default_config(void);
#define HIGAN_RECOGNIZER_MAX_DEPTH 4
typedef struct higan_recognizer {
    higan_params *params;
    higan_recognizer_config cfg;
    higan_style_backbone cnn;
    int lstm[HIGAN_RECOGNIZER_MAX_DEPTH * 2 * 4];   /* (layer*2 + dir)*4 + {w_ih,w_hh,b_ih,b_hh} */
    int64_t hidden;                                 /* out_dim / 2 */
    higan_linear_layer ctc_cls;
} higan_recognizer;
HIGAN_DEF void higan_recognizer_register(higan_recognizer *r, higan_params *p, const char *prefix,
                                         const higan_recognizer_config *cfg);
/* The official Recognizer uses HIGAN_INIT_TORCH. */
HIGAN_DEF void higan_recognizer_init(const higan_recognizer *r, higan_rng *rng, higan_init_kind init);
/* x [B, 1, 64, W], img_lens [B] widths in pixels (copied; 1 <= img_len // 16 <= W / 16, any
   order: PyTorch's pack_padded_sequence wants them descending, the result is the same).
   T = max_b img_len // 16 (pad_packed_sequence's length), frames >= each length see zero
   LSTM outputs. train: log_softmax [T, B, n_class] (for higan_ctc_loss with input lengths
   img_len // 16); eval: raw logits [B, T, n_class]. */
HIGAN_DEF higan_var *higan_recognizer_forward(higan_tape *t, const higan_recognizer *r, higan_var *x,
                                              const int *img_lens, int train, higan_rng *rng);
/* Greedy CTC decoding of sample b of a recognizer output (layout per train) over its
   img_len // 16 frames, to text. Returns the text length (snprintf-like: out gets at most
   cap - 1 characters and a NUL), or a negative status. */
HIGAN_DEF int higan_recognizer_decode(const higan_var *out, int train, int b, int img_len,
                                      char *text, int cap);

/* ---- Alphabet (lib/alphabet.py 'all'): index 0 '`' is the CTC blank and the label pad,
   1 ' ', 2..27 A-Z, 28..53 a-z, 54..63 0-9, 64..79 '-"/,.+_!#&():;? ------------------------ */
#define HIGAN_ALPHABET_SIZE 80
#define HIGAN_ALPHABET_STRING "` ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789'-\"/,.+_!#&():;?"
HIGAN_DEF const char *higan_alphabet(void);
/* Label of one byte character, or -1 if it is not in the alphabet (or is the blank '`'). */
HIGAN_DEF int higan_char_label(int c);
/* UTF-8 text -> labels in out[0..max). Returns the number of labels, or a negative status
   (HIGAN_ERR_ARG) with a message naming the first offending character and its position
   (0-based, in characters): a character outside the alphabet, the blank '`', invalid UTF-8,
   empty text, or more than max characters. */
HIGAN_DEF int higan_text_encode(const char *utf8, int *out, int max);
/* labels -> text; label 0 (pad/blank) is skipped. Returns the text length (snprintf-like:
   out gets at most cap - 1 characters and a NUL; out may be NULL when cap is 0), or
   HIGAN_ERR_ARG for a label outside [0, 80). */
HIGAN_DEF int higan_text_decode(const int *labels, int n, char *out, int cap);
/* Greedy CTC decoding to text: scores [T, 80] with row stride step_stride floats (logits,
   probabilities or log-probabilities), blank 0. Return as higan_text_decode. */
HIGAN_DEF int higan_ctc_decode_text(const float *scores, int64_t step_stride, int T, char *out, int cap);

#endif /* HIGAN_STYLER_API_INCLUDED */
