#ifndef HIGAN_BIGGAN_API_INCLUDED
#define HIGAN_BIGGAN_API_INCLUDED
/* ==== BIGGAN-SIDE NETWORKS OF HIGAN+: Generator, Discriminator, PatchDiscriminator ======
   (networks/BigGAN_networks.py, networks/BigGAN_layers.py of ganji15/HiGANplus.)
   Every module is a small struct of parameter handles into a higan_params store (plus its
   configuration). Life cycle:
       higan_params P; higan_generator G; higan_rng r;
       higan_params_init(&P);
       higan_generator_register(&G, &P, "Generator", NULL);  // NULL: official configuration
       higan_params_alloc(&P);
       higan_generator_init(&G, &r);            // or higan_params_load(&P, &st, "", NULL)
       out = higan_generator_forward(&T, &G, z, labels, lens, L, train);
   Registered names are the official state_dict keys below the given prefix ("" gives the
   bare keys, "Generator" gives "Generator.blocks.0.0.conv1.weight", as the checkpoint's
   top-level dict nests them). Buffers (u0, sv0, stored_mean, stored_var) are HIGAN_BUFFER.
   train: BatchNorm uses batch statistics and updates stored_mean/stored_var (momentum 0.1,
   eps 1e-5); spectral norm stores u0 <- u and sv0 <- sigma (also under no_grad, exactly as
   BigGAN in training mode). eval: stored statistics; sigma recomputed from u0 each forward.
   Every forward returns NULL when an input is NULL or the arena overflows (sticky). */

/* ---- layers ------------------------------------------------------------------------------ */
/* SNLinear: weight [out, in], bias [out] (optional), buffers u0 [1, out], sv0 [1].
   forward: y = x (W / sigma)^T + b; x [N, in] or [B, T, in]. */
typedef struct higan_sn_linear {
    higan_params *p;
    int weight, bias, u0, sv0;      /* handles; bias -1 when absent */
    int64_t in, out;
} higan_sn_linear;
HIGAN_DEF void higan_sn_linear_register(higan_sn_linear *m, higan_params *p, const char *prefix,
                                        int64_t in, int64_t out, int bias);
HIGAN_DEF higan_var *higan_sn_linear_forward(higan_tape *t, const higan_sn_linear *m,
                                             higan_var *x, int train);

/* SNConv2d: weight [out, in, k, k], bias [out] (optional), u0 [1, out], sv0 [1];
   stride 1, zero padding pad on every side. x [N, in, H, W]. */
typedef struct higan_sn_conv2d {
    higan_params *p;
    int weight, bias, u0, sv0;
    int64_t in, out, k, pad;
} higan_sn_conv2d;
HIGAN_DEF void higan_sn_conv2d_register(higan_sn_conv2d *m, higan_params *p, const char *prefix,
                                        int64_t in, int64_t out, int64_t k, int64_t pad, int bias);
HIGAN_DEF higan_var *higan_sn_conv2d_forward(higan_tape *t, const higan_sn_conv2d *m,
                                             higan_var *x, int train);

/* ccbn (G's conditional BN, norm_style 'bn'): gain, bias = SNLinear(y_dim -> C, no bias);
   buffers stored_mean [C] (0), stored_var [C] (1).
   forward: batch_norm(x) * (1 + gain(y)) + bias(y); x [N, C, H, W], y [N, y_dim]. */
typedef struct higan_ccbn {
    higan_params *p;
    higan_sn_linear gain, bias;
    int stored_mean, stored_var;
    int64_t C;
} higan_ccbn;
HIGAN_DEF void higan_ccbn_register(higan_ccbn *m, higan_params *p, const char *prefix,
                                   int64_t C, int64_t y_dim);
HIGAN_DEF higan_var *higan_ccbn_forward(higan_tape *t, const higan_ccbn *m, higan_var *x,
                                        higan_var *y, int train);

/* bn (G's output BN): parameters gain [C] (1), bias [C] (0); buffers stored_mean,
   stored_var. forward: F.batch_norm(x, stored_mean, stored_var, gain, bias, train). */
typedef struct higan_bn_out {
    higan_params *p;
    int gain, bias, stored_mean, stored_var;
    int64_t C;
} higan_bn_out;
HIGAN_DEF void higan_bn_out_register(higan_bn_out *m, higan_params *p, const char *prefix, int64_t C);
HIGAN_DEF higan_var *higan_bn_out_forward(higan_tape *t, const higan_bn_out *m, higan_var *x,
                                          int train);

/* GBlock: h = conv2(relu(bn2(conv1(up(relu(bn1(x, y)))), y))) + conv_sc(up(x)).
   conv1/conv2 3x3 pad 1, conv_sc 1x1 (present when in != out or upsampling), up = nearest
   upsampling by (up_h, up_w) (1, 1: none). Keys: conv1, conv2, conv_sc, bn1, bn2. */
typedef struct higan_gblock {
    higan_sn_conv2d conv1, conv2, conv_sc;
    higan_ccbn bn1, bn2;
    int has_sc, up_h, up_w;
} higan_gblock;
HIGAN_DEF void higan_gblock_register(higan_gblock *b, higan_params *p, const char *prefix,
                                     int64_t in, int64_t out, int up_h, int up_w, int64_t y_dim);
HIGAN_DEF higan_var *higan_gblock_forward(higan_tape *t, const higan_gblock *b, higan_var *x,
                                          higan_var *y, int train);

/* DBlock (D_wide): h = pool(conv2(relu(conv1(preact ? relu(x) : x)))) + shortcut(x);
   shortcut: preact ? pool(conv_sc(x)) : conv_sc(pool(x)); conv_sc 1x1 exists when
   in != out or down; pool = AvgPool2d(2) when down. Keys: conv1, conv2, conv_sc. */
typedef struct higan_dblock {
    higan_sn_conv2d conv1, conv2, conv_sc;
    int has_sc, preact, down;
} higan_dblock;
HIGAN_DEF void higan_dblock_register(higan_dblock *b, higan_params *p, const char *prefix,
                                     int64_t in, int64_t out, int preact, int down);
HIGAN_DEF higan_var *higan_dblock_forward(higan_tape *t, const higan_dblock *b, higan_var *x,
                                          int train);

/* ---- Generator ------------------------------------------------------------------------- */
typedef struct higan_generator_config {
    int64_t ch;          /* 64: channel multiplier (blocks 8ch->4ch->2ch->ch->ch) */
    int64_t style_dim;   /* 32: z size, and the size of each of the 4 style chunks */
    int64_t embed_dim;   /* 120 */
    int64_t n_class;     /* 80 (index 0 = padding) */
    int64_t bottom;      /* 4: bottom width and height; a character is 8*bottom = 32 px wide */
    int64_t input_nc;    /* 1: output channels */
} higan_generator_config;
HIGAN_DEF higan_generator_config higan_generator_default_config(void);

typedef struct higan_generator {
    higan_generator_config cfg;
    higan_params *p;
    int text_embedding;                    /* Embedding(n_class, embed_dim, padding 0, max_norm 1) */
    higan_sn_linear filter_linear;         /* style_dim + embed_dim -> 8ch * bottom^2 */
    higan_sn_linear style_linear;          /* style_dim -> 4 * style_dim */
    higan_gblock blocks[4];                /* up (2,1), (2,2), (2,2), (2,2) */
    higan_bn_out out_bn;                   /* output_layer.0 */
    higan_sn_conv2d out_conv;              /* output_layer.2: ch -> input_nc, 3x3 pad 1 */
} higan_generator;
/* cfg NULL: the official configuration. */
HIGAN_DEF void higan_generator_register(higan_generator *g, higan_params *p, const char *prefix,
                                        const higan_generator_config *cfg);
/* Official init ('N02'): conv/linear/embedding weights N(0, 0.02) (padding row included),
   biases U(+-1/sqrt(fan_in)) as PyTorch, u0 N(0, 1), sv0 1, BN gain 1 / bias 0,
   stored_mean 0, stored_var 1. Call after higan_params_alloc. */
HIGAN_DEF void higan_generator_init(higan_generator *g, higan_rng *rng);
/* z [B, style_dim]; labels [B, L] row-major, right-padded with 0; lens [B] characters.
   Returns the image [B, input_nc, 16*bottom, 8*bottom*L] after tanh (64 x 32L).
   The looked-up embedding rows are renormalised in place (max_norm 1) as PyTorch does.
   eval (train 0): columns >= lens[b] * H / 2 (= 32 * len) are set to -1 (gradient 0). */
HIGAN_DEF higan_var *higan_generator_forward(higan_tape *t, const higan_generator *g, higan_var *z,
                                             const int *labels, const int *lens, int64_t L,
                                             int train);

/* ---- Discriminator / PatchDiscriminator -------------------------------------------------- */
typedef struct higan_discriminator_config {
    int64_t ch;          /* 64: blocks in_nc->ch->2ch->4ch->4ch */
    int64_t resolution;  /* 64 (Discriminator) or 32 (PatchDiscriminator): same layers */
    int64_t input_nc;    /* 1 */
} higan_discriminator_config;
HIGAN_DEF higan_discriminator_config higan_discriminator_default_config(int64_t resolution);

typedef struct higan_discriminator {
    higan_discriminator_config cfg;
    higan_params *p;
    higan_dblock blocks[4];    /* down, down, down, none; block 0 without preactivation */
    higan_sn_linear linear;    /* 4ch -> 1 */
} higan_discriminator;
/* cfg NULL: official Discriminator (resolution 64); prefix "Discriminator" or
   "PatchDiscriminator" (or "" for bare keys). */
HIGAN_DEF void higan_discriminator_register(higan_discriminator *d, higan_params *p,
                                            const char *prefix,
                                            const higan_discriminator_config *cfg);
HIGAN_DEF void higan_discriminator_init(higan_discriminator *d, higan_rng *rng);
/* x [B, input_nc, H, W] -> scores [B, 1]. After the blocks: ReLU, then
   x_lens == NULL: sum over H and W (PatchDiscriminator on patches);
   x_lens given: sum over H and the first x_lens[b] * W_h / W (floor) columns, divided by
   y_lens[b] (the number of characters) when y_lens is not NULL. Then SNLinear. */
HIGAN_DEF higan_var *higan_discriminator_forward(higan_tape *t, const higan_discriminator *d,
                                                 higan_var *x, const int *x_lens,
                                                 const int *y_lens, int train);

/* ---- all patches (networks/utils.py extract_all_patches, block 32, step 8) ---------------
   x [B, C, H, W]; every size x size window at stride step whose columns lie inside the
   valid width lens[b] (lens NULL: W): n_rows = (H - size) / step + 1 rows (H - size must
   be a multiple of step, as for H = 64) times cols_b = (lens[b] - size) / step + 1 columns
   (0 when lens[b] < size; lens[b] > W counts as W). Order: image b, then row, then column:
   patch (b, r, c) = x[b, :, r*step : r*step+size, c*step : c*step+size].
   y [P, C, size, size] with P = higan_extract_patches_count(...). The backward scatter-adds
   (overlapping windows add up), parallel over (b, c) planes only. */
HIGAN_DEF int64_t higan_extract_patches_count(const int *lens, int64_t B, int64_t H, int64_t W,
                                              int64_t size, int64_t step);
HIGAN_DEF void higan_extract_patches_forward(float *y, const float *x, const int *lens, int64_t B,
                                             int64_t C, int64_t H, int64_t W, int64_t size,
                                             int64_t step);
HIGAN_DEF void higan_extract_patches_backward(float *dx, const float *dy, const int *lens,
                                              int64_t B, int64_t C, int64_t H, int64_t W,
                                              int64_t size, int64_t step);
/* Tape op (lens copied). HiGAN+: higan_extract_patches(t, imgs, img_lens, 32, 8). Needs at
   least one patch (HIGAN_ASSERT). */
HIGAN_DEF higan_var *higan_extract_patches(higan_tape *t, higan_var *x, const int *lens,
                                           int64_t size, int64_t step);

#endif /* HIGAN_BIGGAN_API_INCLUDED */
