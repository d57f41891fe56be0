/* train_gan.c - train HiGAN+ (the GAN) with higan.h, as the official
   GlobalLocalAdversarialModel.train (networks/model.py; configs/gan_iam.yml).

   train_gan -c configs/gan_small.cfg [--resume CKPT] [--set key=value]... [--threads N] [--device cpu|cuda]
   train_gan -c configs/gan_iam.cfg --bench N [--bench-chars L] [--device cpu|cuda]

   Every iteration runs a D step (D and PatchD hinge losses on three kinds of fakes against
   real and augmented real words); every 4th a G step (adversarial, CTC through the frozen
   recognizer, style and content reconstruction, writer identification, contextual loss, KL,
   with the official adaptive gradient balancing): see the GAN TRAINING section of higan.h. The recognizer R and
   the writer identifier W with its StyleBackbone B come pretrained (examples/train_ocr.c,
   examples/train_wid.c: training.pretrained_r / training.pretrained_w, upstream's names; their
   configurations are taken from those checkpoints) or start fresh when the keys are empty.

   Writes into output.dir:
     last.safetensors  checkpoint (every output.ckpt_every_steps, at the end and at Ctrl-C;
                       atomic): all seven networks, both Adams, the RNG, the position.
                       --resume last.safetensors continues exactly as if never stopped. It is
                       also an ordinary model file (examples/generate.c --checkpoint).
     log.csv           every iteration's losses (the G ones are empty between G steps)
     loss.png          loss plot (every output.plot_every_steps and at the end)
     samples.png       sample grid (every output.sample_every_steps and at the end): the texts of
                       sample.texts (columns) in fixed styles (rows): sample.random_styles
                       random z, then the styles of the first word of sample.data_styles
                       writers of the training set. Sampling runs G in eval mode and leaves
                       the training state untouched (G's embedding is restored afterwards).
   A NaN or Inf loss (or gradient) stops the run naming the step and the loss; the last
   checkpoint written stays the good one. Ctrl-C saves and exits; a second one ends at once.

   Options
     -c, --config FILE configuration (YAML subset, see the training section of higan.h); unknown keys are errors
     --set key=value   override a configuration value (repeatable)
     --resume CKPT     continue from a checkpoint of this run (output.dir/last.safetensors)
     --threads N       OpenMP threads (results never depend on it)
     --device cuda     train on an NVIDIA GPU: this source built by nvcc with HIGAN_WITH_CUDA (make
                       build/train_gan_cuda); only the setup differs (example_device_* in
                       example_util.h, higan_gan_trainer_set_backend)
     --bench N         time N iterations (after one warm-up) on random batches of the configured
                       size (training.batch_size words of --bench-chars characters, 8 by
                       default) and report seconds per D step and per G step; nothing is written
   Build: make (build/train_gan), or cc -std=c99 -O2 -fopenmp -I. examples/train_gan.c -o
   build/train_gan -lm. stb_image_write comes from Debian's libstb-dev. */
#define _POSIX_C_SOURCE 200809L     /* mkdir, clock_gettime */
#define HIGAN_IMPLEMENTATION
#include "higan.h"
#ifdef HIGAN_WITH_CUDA
#  define HIGAN_CUDA_IMPLEMENTATION
#  include "higan_cuda.cuh"
#endif

#include "example_util.h"

#define MAX_SETS 64
#define MAX_TEXTS 16
#define MAX_STYLES 16

typedef struct {
    /* paths */
    const char *train_path, *lexicon_path, *out_dir, *pre_r, *pre_w;
    /* training */
    uint64_t seed;
    int64_t epochs, max_steps;
    int batch_size, max_width, arena_mb;
    higan_gan_options gan;
    /* logging */
    double print_seconds;
    int64_t sample_every, plot_every, ckpt_every;
    const char *texts;
    int random_styles, data_styles;
} run_config;

static void die(const char *what) {
    fprintf(stderr, "train_gan: %s: %s\n", what, higan_last_error());
    exit(1);
}

static int file_exists(const char *path) {
    FILE *f = fopen(path, "rb");
    if (f) fclose(f);
    return f != NULL;
}

/* The configuration of the networks in nets as a checkpoint's metadata gives it. */
static void peek_config(const char *path, unsigned nets, higan_model_config *out) {
    higan_model m;
    memset(&m, 0, sizeof m);
    if (higan_model_load(&m, path, nets, NULL) != HIGAN_OK) die(path);
    *out = m.cfg;
    higan_model_free(&m);
}

static void read_config(higan_config *c, run_config *rc, higan_model_config *mc) {
    higan_gan_options d = higan_gan_default_options();
    rc->seed = (uint64_t)higan_config_int(c, "seed", 123456, 0, INT64_MAX);
    rc->train_path = higan_config_str(c, "data.train", "");
    rc->lexicon_path = higan_config_str(c, "data.lexicon", "/usr/share/dict/words");
    rc->pre_r = higan_config_str(c, "training.pretrained_r", "");
    rc->pre_w = higan_config_str(c, "training.pretrained_w", "");
    rc->out_dir = higan_config_str(c, "output.dir", "runs/gan");
    rc->epochs = higan_config_int(c, "training.epochs", 69, 1, 1000000);
    rc->max_steps = higan_config_int(c, "training.max_steps", 0, 0, INT64_MAX);
    rc->batch_size = (int)higan_config_int(c, "training.batch_size", 8, 1, 4096);
    rc->max_width = (int)higan_config_int(c, "training.max_width", 0, 0, HIGAN_DATASET_MAX_WIDTH);
    rc->arena_mb = (int)higan_config_int(c, "training.arena_mb", 512, 1, 1 << 20);
    rc->gan = d;
    rc->gan.lr = higan_config_real(c, "training.lr", d.lr, 0.0, 1.0);
    rc->gan.beta1 = higan_config_real(c, "training.adam_b1", d.beta1, 0.0, 0.999999);
    rc->gan.beta2 = higan_config_real(c, "training.adam_b2", d.beta2, 0.0, 0.999999);
    rc->gan.num_critic_train = (int)higan_config_int(c, "training.num_critic_train", d.num_critic_train, 1, 1000);
    rc->gan.vae_mode = higan_config_bool(c, "training.vae_mode", d.vae_mode);
    rc->gan.lambda_ctx = (float)higan_config_real(c, "training.lambda_ctx", d.lambda_ctx, 0.0, 1e6);
    rc->gan.lambda_kl = (float)higan_config_real(c, "training.lambda_kl", d.lambda_kl, 0.0, 1e6);
    rc->gan.start_decay_epoch = (int)higan_config_int(c, "training.start_decay_epoch", d.start_decay_epoch, 0, 1000000);
    rc->gan.n_epochs_decay = (int)higan_config_int(c, "training.n_epochs_decay", d.n_epochs_decay, 0, 1000000);
    rc->gan.frozen_bn = higan_config_bool(c, "training.frozen_bn", d.frozen_bn);
    rc->print_seconds = higan_config_real(c, "output.print_every_seconds", 10.0, 0.0, 1e6);
    rc->sample_every = higan_config_int(c, "output.sample_every_steps", 200, 0, INT64_MAX);
    rc->plot_every = higan_config_int(c, "output.plot_every_steps", 200, 0, INT64_MAX);
    rc->ckpt_every = higan_config_int(c, "output.ckpt_every_steps", 1000, 0, INT64_MAX);
    rc->texts = higan_config_str(c, "sample.texts", "HiGAN+ handwriting in C");
    rc->random_styles = (int)higan_config_int(c, "sample.random_styles", 4, 0, MAX_STYLES);
    rc->data_styles = (int)higan_config_int(c, "sample.data_styles", 4, 0, MAX_STYLES);
    if (rc->random_styles + rc->data_styles > MAX_STYLES || rc->random_styles + rc->data_styles < 1) {
        fprintf(stderr, "train_gan: sample.random_styles + sample.data_styles must be 1..%d\n", MAX_STYLES);
        exit(1);
    }
    *mc = higan_model_default_config(HIGAN_NETS_ALL);
    higan_config_model(c, mc);
}

/* ---- sample grid -------------------------------------------------------------------------- */
typedef struct {
    int n_texts, n_random, n_data;
    char texts[MAX_TEXTS][HIGAN_MAX_WORD_LEN + 1];
    float *random;                  /* [n_random, style_dim] fixed z */
    float *ref[MAX_STYLES];         /* reference word images [64, ref_w] (ink bright, [-1, 1]) */
    int64_t ref_w[MAX_STYLES];
    int ref_chars[MAX_STYLES];
} sampler;

/* Fixed styles: random z from their own seed, and the first word of each of the first writers
   of the training set, encoded with the current StyleEncoder at every sampling. */
static void sampler_init(sampler *sp, const run_config *rc, const higan_gan_trainer *tr, const higan_dataset *ds) {
    int64_t sd = tr->model.cfg.G.style_dim, i;
    int wids[MAX_STYLES], k;
    char buf[1024], *tok;
    higan_rng r;
    memset(sp, 0, sizeof *sp);
    snprintf(buf, sizeof buf, "%s", rc->texts);
    for (tok = strtok(buf, " "); tok && sp->n_texts < MAX_TEXTS; tok = strtok(NULL, " ")) {
        int lab[HIGAN_MAX_WORD_LEN];
        if (higan_text_encode(tok, lab, HIGAN_MAX_WORD_LEN) < 0) die("sample.texts");
        snprintf(sp->texts[sp->n_texts++], sizeof sp->texts[0], "%s", tok);
    }
    if (!sp->n_texts) { fprintf(stderr, "train_gan: sample.texts is empty\n"); exit(1); }
    sp->random = (float *)malloc(sizeof(float) * (size_t)(sd * (rc->random_styles + 1)));
    if (!sp->random) { fprintf(stderr, "train_gan: out of memory\n"); exit(1); }
    higan_rng_seed(&r, rc->seed + 1);
    for (k = 0; k < rc->random_styles; ++k) higan_style_random(&tr->model, &r, sp->random + (sp->n_random++) * sd);
    for (i = 0; i < ds->count && sp->n_data < rc->data_styles; ++i) {
        int dup = 0, w = ds->wids[i];
        int64_t x, y, W = ds->img_lens[i];
        float *img;
        for (k = 0; k < sp->n_data; ++k) dup |= wids[k] == w;
        if (dup || ds->lb_lens[i] < 1 || ds->lb_lens[i] > HIGAN_MAX_WORD_LEN) continue;
        if (!(img = (float *)malloc(sizeof(float) * (size_t)(64 * W)))) { fprintf(stderr, "train_gan: out of memory\n"); exit(1); }
        for (y = 0; y < 64; ++y)
            for (x = 0; x < W; ++x)
                img[y * W + x] = higan_pixel_to_float(ds->imgs[y * ds->total_width + ds->img_seek_idxs[i] + x]);
        wids[sp->n_data] = w;
        sp->ref[sp->n_data] = img;
        sp->ref_w[sp->n_data] = W;
        sp->ref_chars[sp->n_data++] = ds->lb_lens[i];
    }
}

static void sampler_free(sampler *sp) {
    int k;
    free(sp->random);
    for (k = 0; k < sp->n_data; ++k) free(sp->ref[k]);
}

/* The grid: texts (columns) x styles (rows), G and E in eval mode. Leaves the training state
   as it was (G's embedding rows are renormalised by any forward: restored afterwards). */
static void write_samples(const sampler *sp, higan_gan_trainer *tr, higan_tape *t, const char *path) {
    const int pad = 8, H = HIGAN_IMAGE_HEIGHT;
    int64_t sd = tr->model.cfg.G.style_dim, emb_n = tr->model.cfg.G.n_class * tr->model.cfg.G.embed_dim;
    higan_params *ge = &tr->model.store[HIGAN_STORE_GE];
    float *keep = (float *)malloc(sizeof(float) * (size_t)emb_n), *word, *style;
    int col_w[MAX_TEXTS], width = pad, height, r, c, n_rows = sp->n_random + sp->n_data;
    unsigned char *png;
    for (c = 0; c < sp->n_texts; ++c) {
        col_w[c] = higan_generate_word(&tr->model, t, sp->texts[c], NULL, NULL, 0);
        width += col_w[c] + pad;
    }
    height = pad + n_rows * (H + pad);
    png = (unsigned char *)malloc((size_t)width * (size_t)height);
    word = (float *)malloc(sizeof(float) * (size_t)(H * HIGAN_CHAR_WIDTH * HIGAN_MAX_WORD_LEN));
    style = (float *)malloc(sizeof(float) * (size_t)sd);
    if (!keep || !png || !word || !style) { fprintf(stderr, "train_gan: out of memory\n"); exit(1); }
    higan_params_read(ge, tr->model.G.text_embedding, keep);   /* from the device when training there */
    memset(png, 255, (size_t)width * (size_t)height);
    for (r = 0; r < n_rows; ++r) {
        int x0 = pad;
        if (r < sp->n_random) {
            memcpy(style, sp->random + r * sd, sizeof(float) * (size_t)sd);
        } else {
            int k = r - sp->n_random;
            higan_status st;
            while ((st = higan_style_from_image(&tr->model, t, sp->ref[k], sp->ref_w[k], sp->ref_chars[k], style)) ==
                   HIGAN_ERR_NOMEM && higan_train_grow(t)) {}
            if (st != HIGAN_OK) die("sample style");
        }
        for (c = 0; c < sp->n_texts; ++c) {
            int w, x, y;
            while ((w = higan_generate_word(&tr->model, t, sp->texts[c], style, word,
                                            H * HIGAN_CHAR_WIDTH * HIGAN_MAX_WORD_LEN)) == HIGAN_ERR_NOMEM &&
                   higan_train_grow(t)) {}
            if (w < 0) die("sample");
            for (y = 0; y < H; ++y)
                for (x = 0; x < w; ++x) {
                    float v = (1.0f - word[y * w + x]) * 127.5f;      /* ink bright -> dark on white */
                    png[(size_t)(pad + r * (H + pad) + y) * (size_t)width + (size_t)(x0 + x)] =
                        (unsigned char)(v < 0 ? 0 : v > 255 ? 255 : v + 0.5f);
                }
            x0 += col_w[c] + pad;
        }
    }
    higan_params_write(ge, tr->model.G.text_embedding, keep);
    if (!stbi_write_png(path, width, height, 1, png, width)) fprintf(stderr, "train_gan: cannot write %s\n", path);
    free(keep); free(png); free(word); free(style);
}

/* ---- --bench: time iterations on random batches ----------------------------------------------- */
static void bench(higan_gan_trainer *tr, higan_tape *t, const run_config *rc, int iters, int chars) {
    int B = rc->batch_size, b, i, j;
    int64_t W = (int64_t)HIGAN_CHAR_WIDTH * chars;
    higan_batch batch;
    higan_lexicon lex;
    higan_rng r;
    double td = 0, tg = 0;
    static const char words[] = "handwriting\nimitation\ngenerative\nadversarial\nnetwork\nwords\nstyle\nthe\nof\n";
    float *imgs = (float *)malloc(sizeof(float) * (size_t)(B * 64 * W));
    float *aug = (float *)malloc(sizeof(float) * (size_t)(B * 64 * W));
    int *lens = (int *)malloc(sizeof(int) * (size_t)B * 5), *labels = (int *)malloc(sizeof(int) * (size_t)(B * chars));
    higan_gan_losses l;
    higan_lexicon_init(&lex);
    higan_lexicon_load_text(&lex, words, sizeof words - 1);
    tr->lexicon = &lex;
    higan_rng_seed(&r, 5);
    memset(&batch, 0, sizeof batch);
    for (b = 0; b < B; ++b) {
        lens[b] = chars;                     /* label lengths */
        lens[B + b] = (int)W;                /* style widths */
        lens[2 * B + b] = (int)W;            /* aug widths */
        lens[3 * B + b] = b % (int)tr->model.cfg.n_writer;
        for (j = 0; j < chars; ++j) labels[b * chars + j] = 2 + (int)(higan_rng_uniform(&r) * 77);
    }
    for (i = 0; i < B * 64 * W; ++i) { imgs[i] = higan_rng_uniform(&r) * 2 - 1; aug[i] = -imgs[i]; }
    batch.B = B; batch.width = W; batch.label_width = chars; batch.imgs = imgs; batch.img_lens = lens + B;
    batch.labels = labels; batch.label_lens = lens; batch.wids = lens + 3 * B; batch.aug_width = W;
    batch.aug_imgs = aug; batch.aug_lens = lens + 2 * B;
    fprintf(stderr, "bench: batch %d, %d characters (64 x %lld), %d iterations after a warm-up\n", B, chars,
            (long long)W, iters);
    for (i = 0; i <= iters; ++i) {
        double t0 = higan_time_seconds(), t1, t2;
        if (higan_gan_d_step(tr, t, &batch, &l) != HIGAN_OK) die("bench D step");
        t1 = higan_time_seconds();
        if (higan_gan_g_step(tr, t, &batch, &l) != HIGAN_OK) die("bench G step");
        t2 = higan_time_seconds();
        if (i > 0) { td += t1 - t0; tg += t2 - t1; }
        fprintf(stderr, "  %s: D step %.2f s, G step %.2f s (arena %.0f MB, peak %.0f MB)\n", i ? "iteration" : "warm-up",
                t1 - t0, t2 - t1, (double)t->data->capacity / 1048576.0, (double)t->data->peak / 1048576.0);
    }
    if (iters > 0)
        printf("bench: D step %.3f s, G step %.3f s; an iteration averages %.3f s (a G step every %d)\n",
               td / iters, tg / iters, td / iters + tg / iters / tr->opt.num_critic_train, tr->opt.num_critic_train);
    tr->lexicon = NULL;
    higan_lexicon_free(&lex);
    free(imgs); free(aug); free(lens); free(labels);
}

int main(int argc, char **argv) {
    const char *config_path = NULL, *sets[MAX_SETS], *resume_path = NULL, *device = NULL;
    example_device dev;
    int n_sets = 0, resume = 0, threads = 0, bench_iters = -1, bench_chars = 8, i, failed = 0;
    higan_config cfg;
    run_config rc;
    higan_model_config mc;
    higan_gan_trainer tr;
    higan_train_state s;
    higan_dataset ds;
    higan_lexicon lex;
    higan_loader_options lopt;
    higan_arena arena;
    higan_tape tape;
    higan_progress prog;
    higan_csv csv;
    sampler sp;
    char ckpt[1100], csv_path[1100], png_path[1100], plot_path[1100], cfg_text[16384];
    const char *names[HIGAN_GAN_N_LOSSES];
    /* progress line: the D total, then the last G step's values */
    static const int shown[8] = {HIGAN_GAN_DISC, HIGAN_GAN_ADV, HIGAN_GAN_ADV_PATCH, HIGAN_GAN_CTC, HIGAN_GAN_WID,
                                 HIGAN_GAN_RECN, HIGAN_GAN_CTX, HIGAN_GAN_INFO};
    const char *shown_names[8] = {"D", "adv", "adv_p", "ctc", "wid", "recn", "ctx", "info"};
    float last[HIGAN_GAN_N_LOSSES];
    int64_t total_steps, n_batches;

    for (i = 1; i < argc; ++i) {
        if ((!strcmp(argv[i], "-c") || !strcmp(argv[i], "--config")) && i + 1 < argc) config_path = argv[++i];
        else if (!strcmp(argv[i], "--set") && i + 1 < argc && n_sets < MAX_SETS) sets[n_sets++] = argv[++i];
        else if (!strcmp(argv[i], "--resume") && i + 1 < argc) resume_path = argv[++i];
        else if (!strcmp(argv[i], "--threads") && i + 1 < argc) threads = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--bench") && i + 1 < argc) bench_iters = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--bench-chars") && i + 1 < argc) bench_chars = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--device") && i + 1 < argc) device = argv[++i];
        else {
            fprintf(stderr, "usage: train_gan -c CONFIG [--resume CKPT] [--set key=value]... [--threads N] [--device cpu|cuda]\n"
                            "       train_gan -c CONFIG --bench N [--bench-chars L] [--device cpu|cuda]\n");
            return 2;
        }
    }
    if (!config_path) { fprintf(stderr, "train_gan: -c CONFIG is required\n"); return 2; }
    if (threads > 0) higan_set_num_threads(threads);
    higan_config_init(&cfg);
    if (higan_config_load(&cfg, config_path) != HIGAN_OK) die("config");
    for (i = 0; i < n_sets; ++i) if (higan_config_set(&cfg, sets[i]) != HIGAN_OK) die("--set");
    read_config(&cfg, &rc, &mc);
    if (higan_config_finish(&cfg) != HIGAN_OK) die("config");
    if ((i = example_device_open(&dev, device, (size_t)rc.arena_mb << 20, "train_gan")) != 0) return i;
    higan_config_dump(&cfg, cfg_text, (int)sizeof cfg_text);
    snprintf(ckpt, sizeof ckpt, "%s/last.safetensors", rc.out_dir);
    snprintf(csv_path, sizeof csv_path, "%s/log.csv", rc.out_dir);
    snprintf(png_path, sizeof png_path, "%s/samples.png", rc.out_dir);
    snprintf(plot_path, sizeof plot_path, "%s/loss.png", rc.out_dir);
    if (resume_path && bench_iters < 0) {
        if (!file_exists(resume_path)) { fprintf(stderr, "train_gan: --resume: cannot open %s\n", resume_path); return 1; }
        resume = 1;
    }

    /* the networks' configuration: the checkpoint's when resuming, else the config file's with
       R (and B + W) as in their pretrained checkpoints; the GAN runs them without dropout */
    if (resume) {
        peek_config(resume_path, HIGAN_NETS_ALL, &mc);
    } else {
        higan_model_config pc;
        if (rc.pre_r[0]) { peek_config(rc.pre_r, HIGAN_NET_BIT(HIGAN_NET_RECOGNIZER), &pc); mc.R = pc.R; }
        if (rc.pre_w[0]) {
            peek_config(rc.pre_w, HIGAN_NET_BIT(HIGAN_NET_STYLE_BACKBONE) | HIGAN_NET_BIT(HIGAN_NET_WRITER_IDENTIFIER), &pc);
            mc.B = pc.B;
            mc.n_writer = pc.n_writer;
        }
    }
    mc.B.dropout = 0.0f;
    mc.R.cnn.dropout = 0.0f;
    higan_lexicon_init(&lex);
    if (bench_iters < 0 && higan_lexicon_load(&lex, rc.lexicon_path) != HIGAN_OK) die(rc.lexicon_path);
    if (higan_gan_trainer_init(&tr, &mc, &rc.gan, &lex, rc.seed) != HIGAN_OK) die("model");
    if (higan_arena_init(&arena, (size_t)rc.arena_mb << 20) != HIGAN_OK || higan_tape_init(&tape, &arena, 1 << 14) != HIGAN_OK)
        die("arena");
    example_device_attach(&dev, &tape);     /* --device cuda: the tape and the trainer on the device */
    if (higan_gan_trainer_set_backend(&tr, example_device_backend(&dev)) != HIGAN_OK) die("device");
    fprintf(stderr, "train_gan: G %lld, E %lld, D %lld, P %lld (trained); B %lld, W %lld, R %lld (frozen) parameters\n",
            (long long)higan_model_num_params(&tr.model, HIGAN_NET_GENERATOR),
            (long long)higan_model_num_params(&tr.model, HIGAN_NET_STYLE_ENCODER),
            (long long)higan_model_num_params(&tr.model, HIGAN_NET_DISCRIMINATOR),
            (long long)higan_model_num_params(&tr.model, HIGAN_NET_PATCH_DISCRIMINATOR),
            (long long)higan_model_num_params(&tr.model, HIGAN_NET_STYLE_BACKBONE),
            (long long)higan_model_num_params(&tr.model, HIGAN_NET_WRITER_IDENTIFIER),
            (long long)higan_model_num_params(&tr.model, HIGAN_NET_RECOGNIZER));
    if (bench_iters >= 0) {
        bench(&tr, &tape, &rc, bench_iters, bench_chars);
        higan_gan_trainer_free(&tr);
        higan_tape_free(&tape);
        higan_arena_free(&arena);
        example_device_close(&dev);
        higan_config_free(&cfg);
        return 0;
    }

    /* data */
    higan_dataset_init(&ds);
    if (!rc.train_path[0]) { fprintf(stderr, "train_gan: data.train is not set\n"); return 1; }
    if (higan_dataset_load(&ds, rc.train_path) != HIGAN_OK) die(rc.train_path);
    lopt = higan_loader_default_options();
    lopt.batch_size = rc.batch_size;
    lopt.seed = rc.seed;
    lopt.max_width = rc.max_width;
    lopt.n_writers = (int)tr.model.cfg.n_writer;
    if (example_make_dirs(rc.out_dir, "train_gan") != 0) return 1;

    /* state: both Adams, the RNG, the position */
    higan_train_state_init(&s);
    s.opt_stores = (1u << HIGAN_STORE_GE) | (1u << HIGAN_STORE_DP);
    s.opt[HIGAN_STORE_GE] = tr.opt_g;
    s.opt[HIGAN_STORE_DP] = tr.opt_d;
    higan_train_state_add_rng(&s, "gan", &tr.rng);
    s.config_text = cfg_text;
    if (resume) {
        if (higan_checkpoint_load(resume_path, &tr.model, &s) != HIGAN_OK) die("resume");
        tr.opt_g = s.opt[HIGAN_STORE_GE];
        tr.opt_d = s.opt[HIGAN_STORE_DP];
        tr.iter = s.step;
        fprintf(stderr, "train_gan: resumed %s at step %lld (epoch %lld, batch %lld)\n", resume_path, (long long)s.step,
                (long long)s.epoch, (long long)s.batch);
    } else {
        if (rc.pre_r[0] && higan_model_load(&tr.model, rc.pre_r, HIGAN_NET_BIT(HIGAN_NET_RECOGNIZER), NULL) != HIGAN_OK)
            die(rc.pre_r);
        if (rc.pre_w[0] && higan_model_load(&tr.model, rc.pre_w, HIGAN_NET_BIT(HIGAN_NET_STYLE_BACKBONE) |
                                            HIGAN_NET_BIT(HIGAN_NET_WRITER_IDENTIFIER), NULL) != HIGAN_OK)
            die(rc.pre_w);
        if (!rc.pre_r[0]) fprintf(stderr, "train_gan: no pretrained recognizer: R starts random (and stays frozen)\n");
        if (!rc.pre_w[0]) fprintf(stderr, "train_gan: no pretrained writer identifier: B and W start random (frozen)\n");
    }
    sampler_init(&sp, &rc, &tr, &ds);
    for (i = 0; i < HIGAN_GAN_N_LOSSES; ++i) { names[i] = higan_gan_loss_name(i); last[i] = 0.0f; }
    if (higan_csv_open(&csv, csv_path, HIGAN_GAN_N_LOSSES, names, resume ? s.step : -1) != HIGAN_OK) die(csv_path);
    {
        higan_loader probe;
        if (higan_loader_init(&probe, &ds, &lopt) != HIGAN_OK) die("loader");
        n_batches = probe.n_batches;
        higan_loader_free(&probe);
    }
    if (n_batches < 1) { fprintf(stderr, "train_gan: the training set has fewer than batch_size words\n"); return 1; }
    total_steps = rc.epochs * n_batches;
    if (rc.max_steps && rc.max_steps < total_steps) total_steps = rc.max_steps;
    fprintf(stderr, "train_gan: %lld words, %lld batches of %d per epoch, %lld epochs: %lld iterations\n",
            (long long)ds.count, (long long)n_batches, rc.batch_size, (long long)rc.epochs, (long long)total_steps);
    higan_progress_init(&prog, s.step, total_steps, rc.print_seconds);
    higan_train_catch_sigint();

    while (s.epoch < rc.epochs && s.step < total_steps && !higan_train_interrupted() && !failed) {
        higan_loader L;
        higan_batch b;
        int epoch_done = 0;
        if (higan_train_loader_open(&L, &ds, &lopt, s.epoch, s.batch) != HIGAN_OK) die("loader");
        higan_gan_set_epoch(&tr, s.epoch);
        while (s.step < total_steps && !higan_train_interrupted()) {
            higan_gan_losses l;
            double row[HIGAN_GAN_N_LOSSES];
            float prog_vals[8];
            higan_status st = higan_loader_next(&L, &b);
            if (st == HIGAN_LOADER_EPOCH_END) { epoch_done = 1; break; }
            if (st != HIGAN_OK) die("loader");
            st = higan_gan_iteration(&tr, &tape, &b, &l);
            if (st == HIGAN_GAN_NONFINITE) {
                fprintf(stderr, "train_gan: step %lld: %s; stopping (the last checkpoint, %s, is kept)\n",
                        (long long)s.step + 1, higan_last_error(), ckpt);
                failed = 1;
                break;
            }
            if (st != HIGAN_OK) die("iteration");
            s.step++;
            s.batch++;
            for (i = 0; i < HIGAN_GAN_N_LOSSES; ++i) {
                row[i] = l.v[i];
                if (i < HIGAN_GAN_ADV || l.g_step) last[i] = l.v[i];
            }
            for (i = 0; i < 8; ++i) prog_vals[i] = last[shown[i]];
            higan_csv_write(&csv, s.step, s.epoch, row);
            higan_progress_update(&prog, s.step, s.epoch, 8, shown_names, prog_vals, b.B, 0);
            if (rc.ckpt_every && s.step % rc.ckpt_every == 0) {
                s.opt[HIGAN_STORE_GE] = tr.opt_g;
                s.opt[HIGAN_STORE_DP] = tr.opt_d;
                if (higan_checkpoint_save(ckpt, &tr.model, &s) != HIGAN_OK) die("checkpoint");
            }
            if (rc.sample_every && s.step % rc.sample_every == 0) write_samples(&sp, &tr, &tape, png_path);
            if (rc.plot_every && s.step % rc.plot_every == 0) example_write_plot(csv_path, plot_path, 1200, 7 * 130, "train_gan");   /* 21 panels: 3 x 7 */
        }
        higan_loader_free(&L);
        if (epoch_done) { s.epoch++; s.batch = 0; }
    }
    higan_csv_close(&csv);
    if (!failed) {
        s.opt[HIGAN_STORE_GE] = tr.opt_g;
        s.opt[HIGAN_STORE_DP] = tr.opt_d;
        if (higan_checkpoint_save(ckpt, &tr.model, &s) != HIGAN_OK) die("checkpoint");
        write_samples(&sp, &tr, &tape, png_path);
        example_write_plot(csv_path, plot_path, 1200, 7 * 130, "train_gan");   /* 21 panels: 3 x 7 */
        fprintf(stderr, "train_gan: %s %s at step %lld (epoch %lld); samples %s, losses %s%s%s\n",
                higan_train_interrupted() ? "interrupted: saved" : "saved", ckpt, (long long)s.step,
                (long long)s.epoch, png_path, plot_path, higan_train_interrupted() ? "; continue with --resume " : "",
                higan_train_interrupted() ? ckpt : "");
    }
    sampler_free(&sp);
    higan_gan_trainer_free(&tr);
    higan_lexicon_free(&lex);
    higan_dataset_free(&ds);
    higan_tape_free(&tape);
    higan_arena_free(&arena);
    example_device_close(&dev);
    higan_config_free(&cfg);
    return failed ? 1 : 0;
}
