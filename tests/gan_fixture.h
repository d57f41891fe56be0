/* gan_fixture.h - the tiny GAN fixture of tests/test_gan.c and tests/test_cuda_train.cu: the
   configuration of tests/oracle/make_gan.py and a random batch of 4 words. Include after
   higan.h. */
#ifndef HIGAN_TEST_GAN_FIXTURE_H
#define HIGAN_TEST_GAN_FIXTURE_H
#include <stdlib.h>
#include <string.h>

/* the configuration of make_gan.py for the networks nets (HIGAN_NETS_ALL: the whole GAN) */
static inline higan_model_config tiny_config(unsigned nets) {
    higan_model_config c = higan_model_default_config(nets);
    c.G.ch = 2; c.G.style_dim = 8; c.G.embed_dim = 8;
    c.D.ch = 2; c.P.ch = 2;
    c.B.resolution = 2; c.B.max_dim = 32; c.B.dropout = 0.0f;
    c.n_writer = 5;
    c.R.cnn.resolution = 2; c.R.cnn.max_dim = 32; c.R.cnn.dropout = 0.0f; c.R.rnn_depth = 2;
    return c;
}

/* 4 words of 4, 3, 3, 2 characters: random images 64 x 32 per character (padded to 128 with
   -1), augmented images of widths 128, 96, 64, 96, random labels, writers 0, 4, 2, 4 */
typedef struct {
    float *imgs, *aug;
    int img_lens[4], labels[16], label_lens[4], wids[4], aug_lens[4];
    higan_batch b;
} tiny_batch;
static inline void make_batch(tiny_batch *tb, higan_rng *r) {
    static const int lens[4] = {4, 3, 3, 2}, augl[4] = {128, 96, 64, 96}, w[4] = {0, 4, 2, 4};
    int b, j, h, x;
    memset(&tb->b, 0, sizeof tb->b);
    tb->imgs = (float *)malloc(sizeof(float) * 4 * 64 * 128);
    tb->aug = (float *)malloc(sizeof(float) * 4 * 64 * 128);
    for (b = 0; b < 4; ++b) {
        tb->label_lens[b] = lens[b];
        tb->img_lens[b] = 32 * lens[b];
        tb->aug_lens[b] = augl[b];
        tb->wids[b] = w[b];
        for (j = 0; j < 4; ++j) tb->labels[b * 4 + j] = j < lens[b] ? 2 + (int)(higan_rng_uniform(r) * 77.0f) : 0;
        for (h = 0; h < 64; ++h)
            for (x = 0; x < 128; ++x) {
                float v = higan_rng_uniform(r) * 2.0f - 1.0f;
                tb->imgs[((int64_t)b * 64 + h) * 128 + x] = x < tb->img_lens[b] ? v : -1.0f;
                tb->aug[((int64_t)b * 64 + h) * 128 + x] = x < augl[b] ? -v : -1.0f;
            }
    }
    tb->b.B = 4; tb->b.width = 128; tb->b.label_width = 4;
    tb->b.imgs = tb->imgs; tb->b.img_lens = tb->img_lens; tb->b.labels = tb->labels;
    tb->b.label_lens = tb->label_lens; tb->b.wids = tb->wids;
    tb->b.aug_width = 128; tb->b.aug_imgs = tb->aug; tb->b.aug_lens = tb->aug_lens;
}
static inline void free_batch(tiny_batch *tb) { free(tb->imgs); free(tb->aug); }
#endif
