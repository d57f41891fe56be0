/* train_wid.c - pretrain HiGAN+'s writer identifier with its style backbone (higan.h).

   train_wid -c CONFIG [--resume CKPT] [--set key=value ...] [--threads N] [--device cpu|cuda]

   --device cuda trains on an NVIDIA GPU: the same source built by nvcc with HIGAN_WITH_CUDA
   (make build/train_wid_cuda); only the setup differs (example_device_* in example_util.h).

   As the official WriterIdentifyModel.train (configs/wid_iam.yml): the StyleBackbone starts
   from a trained Recognizer's CNN (training.recognizer: a checkpoint of examples/train_ocr;
   its Recognizer.cnn_backbone.* and Recognizer.cnn_ctc.* tensors are copied by name into
   StyleBackbone.*, batch-norm statistics included), then StyleBackbone and WriterIdentifier
   are trained together with cross-entropy on style images (32 px per character) through
   RandomClip, Adam over both (one optimizer state per store, identical to the official single
   optimizer), the learning rate decayed linearly per epoch. Accuracy is measured on held-out
   words of the training writers (words of writers the identifier has no class for, e.g. the
   synthetic set's held-out writers, are skipped). Writes into output.dir: last.safetensors,
   best.safetensors (highest held-out accuracy), log.csv, loss.png, as train_ocr does.
   --resume continues bit for bit; NaN/Inf stops naming the step; Ctrl-C saves and exits.

   model.n_writer: the identifier's classes (official 372); left out, it is the number of
   writer ids of the training set (largest - smallest + 1).
   Configs: configs/wid_iam.cfg, configs/wid_small.cfg. */
#define _POSIX_C_SOURCE 200809L          /* mkdir, clock_gettime */
#define HIGAN_IMPLEMENTATION
#include "higan.h"
#ifdef HIGAN_WITH_CUDA
#  define HIGAN_CUDA_IMPLEMENTATION
#  include "higan_cuda.cuh"
#endif

#include "example_util.h"

typedef struct {
    uint64_t seed;
    const char *train_path, *test_path, *out_dir, *recognizer;
    int batch_size, epochs, start_decay, n_decay, random_clip, max_width;
    double lr;
    int valid_batch, valid_start_epoch, valid_every_epochs, valid_every_steps;
    int64_t valid_max_words;
    int ckpt_every, plot_every, plot_w, plot_h;
    double print_every;
    size_t arena_mb;
} options;

static void read_config(higan_config *c, options *o, higan_model_config *mc) {
    o->seed = (uint64_t)higan_config_int(c, "seed", 123456, 0, INT64_MAX);
    o->train_path = higan_config_str(c, "data.train", NULL);
    o->test_path = higan_config_str(c, "data.test", NULL);
    o->recognizer = higan_config_str(c, "training.recognizer", NULL);
    o->batch_size = (int)higan_config_int(c, "training.batch_size", 32, 1, 4096);
    o->epochs = (int)higan_config_int(c, "training.epochs", 73, 1, 100000);
    o->lr = higan_config_real(c, "training.lr", 1e-3, 0, 1);
    o->start_decay = (int)higan_config_int(c, "training.start_decay_epoch", 40, 0, 100000);
    o->n_decay = (int)higan_config_int(c, "training.n_epochs_decay", 34, 0, 100000);
    o->random_clip = higan_config_bool(c, "training.random_clip", 1);
    o->max_width = (int)higan_config_int(c, "training.max_width", 0, 0, 1 << 20);
    o->arena_mb = (size_t)higan_config_int(c, "training.arena_mb", 64, 1, 1 << 20);
    o->valid_batch = (int)higan_config_int(c, "valid.batch_size", 64, 1, 4096);
    o->valid_start_epoch = (int)higan_config_int(c, "valid.start_epoch", 1, 0, 100000);
    o->valid_every_epochs = (int)higan_config_int(c, "valid.every_epochs", 1, 0, 100000);
    o->valid_every_steps = (int)higan_config_int(c, "valid.every_steps", 0, 0, 1 << 30);
    o->valid_max_words = higan_config_int(c, "valid.max_words", 0, 0, INT64_MAX);
    o->out_dir = higan_config_str(c, "output.dir", "runs/wid");
    o->ckpt_every = (int)higan_config_int(c, "output.ckpt_every_steps", 500, 0, 1 << 30);
    o->plot_every = (int)higan_config_int(c, "output.plot_every_steps", 200, 0, 1 << 30);
    o->print_every = higan_config_real(c, "output.print_every_seconds", 10, 0, 1e6);
    o->plot_w = (int)higan_config_int(c, "output.plot_width", 800, 160, 8192);
    o->plot_h = (int)higan_config_int(c, "output.plot_height", 600, 60, 8192);
    higan_config_model(c, mc);
}

/* held-out accuracy; logs it and keeps the best checkpoint */
static higan_status validate(higan_model *m, higan_tape *t, const higan_dataset *test, int wid_min, const options *o,
                             higan_train_state *s, double *best, double *acc, const char *best_path, const char *when) {
    int64_t correct = 0, total = 0;
    higan_status rc = higan_wid_evaluate(m, t, test, wid_min, o->valid_batch, o->valid_max_words, &correct, &total);
    if (rc != HIGAN_OK) return rc;
    *acc = total ? (double)correct / (double)total : 0.0;
    fprintf(stderr, "%s: held-out writer accuracy %.4f (%lld of %lld words)%s\n", when, *acc, (long long)correct,
            (long long)total, *acc > *best ? ", best so far" : "");
    if (*acc > *best) {
        *best = *acc;
        return higan_checkpoint_save(best_path, m, s);
    }
    return HIGAN_OK;
}

int main(int argc, char **argv) {
    higan_config cfg;
    options o;
    higan_model_config mc = higan_model_default_config(HIGAN_NET_BIT(HIGAN_NET_STYLE_BACKBONE) |
                                                       HIGAN_NET_BIT(HIGAN_NET_WRITER_IDENTIFIER));
    higan_model m;
    higan_dataset train, test;
    higan_arena arena;
    higan_tape tape;
    higan_loader L;
    higan_loader_options lo = higan_loader_default_options();
    higan_augmenter aug;
    higan_train_state s;
    higan_progress prog;
    higan_csv csv;
    higan_rng rng;
    double best_acc = -1, last_acc = NAN;
    const char *config_path = NULL, *resume = NULL, *device = NULL;
    example_device dev;
    const char *csv_names[4] = {"lr", "wid", "train_acc", "test_acc"}, *loss_names[2] = {"wid", "acc"};
    char last_path[1024], best_path[1024], csv_path[1024], png_path[1024], when[64], *config_text = NULL;
    int i, threads = 0, stop = 0, code = 0, wid_min = 0, wid_max = 0;
    int64_t total_steps, n_batches;
    higan_status rc = HIGAN_OK;

    if ((i = example_training_args(argc, argv, "train_wid", "configs/wid_small.cfg, configs/wid_iam.cfg", &cfg, &config_path, &resume, &threads, &device)) != 0) return i;
    /* the writer count defaults to the training set's: read the data path first */
    higan_dataset_init(&train);
    higan_dataset_init(&test);
    o.train_path = higan_config_get(&cfg, "data.train");
    if (o.train_path && higan_dataset_load(&train, o.train_path) != HIGAN_OK) { fprintf(stderr, "train_wid: %s\n", higan_last_error()); return 1; }
    for (i = 0; i < train.count; ++i) {
        if (i == 0 || train.wids[i] < wid_min) wid_min = train.wids[i];
        if (i == 0 || train.wids[i] > wid_max) wid_max = train.wids[i];
    }
    mc.n_writer = train.count ? wid_max - wid_min + 1 : 372;
    read_config(&cfg, &o, &mc);
    if (higan_config_finish(&cfg) != HIGAN_OK) { fprintf(stderr, "train_wid: %s\n", higan_last_error()); return 2; }
    if ((i = example_device_open(&dev, device, o.arena_mb << 20, "train_wid")) != 0) return i;
    if (!o.train_path || !o.test_path) { fprintf(stderr, "train_wid: %s: set data.train and data.test\n", config_path); return 2; }
    if (wid_max - wid_min >= mc.n_writer) {
        fprintf(stderr, "train_wid: the training set has writer ids %d..%d, more than model.n_writer = %lld\n", wid_min,
                wid_max, (long long)mc.n_writer);
        return 2;
    }
    if (threads > 0) higan_set_num_threads(threads);
    config_text = (char *)malloc((size_t)higan_config_dump(&cfg, NULL, 0) + 1);
    if (config_text) higan_config_dump(&cfg, config_text, higan_config_dump(&cfg, NULL, 0) + 1);
    if (higan_dataset_load(&test, o.test_path) != HIGAN_OK) { fprintf(stderr, "train_wid: %s\n", higan_last_error()); return 1; }

    if (higan_model_init(&m, &mc, o.seed) != HIGAN_OK) { fprintf(stderr, "train_wid: %s\n", higan_last_error()); return 1; }
    m.store[HIGAN_STORE_BACKBONE].frozen = 0;
    m.store[HIGAN_STORE_WID].frozen = 0;
    higan_train_state_init(&s);
    s.opt_stores = (1u << HIGAN_STORE_BACKBONE) | (1u << HIGAN_STORE_WID);
    s.opt[HIGAN_STORE_BACKBONE] = higan_adam_default(o.lr);
    s.opt[HIGAN_STORE_WID] = higan_adam_default(o.lr);
    s.config_text = config_text;
    higan_rng_seed(&rng, o.seed ^ 0x5DEECE66Dull);   /* dropout and RandomClip */
    higan_train_state_add_rng(&s, "train", &rng);
    higan_train_state_add_value(&s, "best_acc", &best_acc);
    if (resume) {
        if (higan_checkpoint_load(resume, &m, &s) != HIGAN_OK) { fprintf(stderr, "train_wid: %s\n", higan_last_error()); return 1; }
        fprintf(stderr, "resumed %s at step %lld (epoch %lld, batch %lld)\n", resume, (long long)s.step,
                (long long)s.epoch, (long long)s.batch);
    } else if (o.recognizer && o.recognizer[0]) {
        higan_model r;
        memset(&r, 0, sizeof r);
        if (higan_model_load(&r, o.recognizer, HIGAN_NET_BIT(HIGAN_NET_RECOGNIZER), NULL) != HIGAN_OK ||
            higan_backbone_from_recognizer(&m, &r) != HIGAN_OK) {
            fprintf(stderr, "train_wid: %s\n", higan_last_error());
            return 1;
        }
        higan_model_free(&r);
        fprintf(stderr, "StyleBackbone initialised from the Recognizer of %s\n", o.recognizer);
    } else fprintf(stderr, "train_wid: no training.recognizer: the StyleBackbone starts from random weights\n");

    if (example_make_dirs(o.out_dir, "train_wid") != 0) return 1;
    snprintf(last_path, sizeof last_path, "%s/last.safetensors", o.out_dir);
    snprintf(best_path, sizeof best_path, "%s/best.safetensors", o.out_dir);
    snprintf(csv_path, sizeof csv_path, "%s/log.csv", o.out_dir);
    snprintf(png_path, sizeof png_path, "%s/loss.png", o.out_dir);
    if (higan_csv_open(&csv, csv_path, 4, csv_names, resume ? s.step : -1) != HIGAN_OK) {
        fprintf(stderr, "train_wid: %s\n", higan_last_error());
        return 1;
    }
    lo.batch_size = o.batch_size;
    lo.seed = o.seed;
    lo.augment = 0;                /* RandomClip only (the loader's augment is the GAN's clip + scale) */
    lo.max_width = o.max_width;
    lo.n_writers = (int)mc.n_writer;
    if (higan_loader_init(&L, &train, &lo) != HIGAN_OK) { fprintf(stderr, "train_wid: %s\n", higan_last_error()); return 1; }
    n_batches = L.n_batches;
    higan_loader_free(&L);
    total_steps = n_batches * o.epochs;
    fprintf(stderr, "StyleBackbone %lld + WriterIdentifier %lld parameters (%lld writers); %lld training words (%lld "
            "batches of %d per epoch), %lld held-out; %d epochs = %lld steps; %d thread%s\n",
            (long long)higan_model_num_params(&m, HIGAN_NET_STYLE_BACKBONE),
            (long long)higan_model_num_params(&m, HIGAN_NET_WRITER_IDENTIFIER), (long long)mc.n_writer,
            (long long)train.count, (long long)n_batches, o.batch_size, (long long)test.count, o.epochs,
            (long long)total_steps, higan_get_num_threads(), higan_get_num_threads() > 1 ? "s" : "");
    if (higan_arena_init(&arena, o.arena_mb << 20) != HIGAN_OK || higan_tape_init(&tape, &arena, 4096) != HIGAN_OK) {
        fprintf(stderr, "train_wid: %s\n", higan_last_error());
        return 1;
    }
    example_device_attach(&dev, &tape);     /* --device cuda: the tape and the model on the device */
    if (higan_model_to_backend(&m, example_device_backend(&dev)) != HIGAN_OK) {
        fprintf(stderr, "train_wid: %s\n", higan_last_error());
        return 1;
    }
    higan_augmenter_init(&aug);
    higan_progress_init(&prog, s.step, total_steps, o.print_every);
    higan_train_catch_sigint();

    while (s.epoch < o.epochs && !stop) {
        higan_batch b;
        double lr = o.lr * higan_lr_linear_decay((int)s.epoch, o.start_decay, o.n_decay + 1);
        s.opt[HIGAN_STORE_BACKBONE].lr = lr;
        s.opt[HIGAN_STORE_WID].lr = lr;
        if ((rc = higan_train_loader_open(&L, &train, &lo, s.epoch, s.batch)) != HIGAN_OK) break;
        while ((rc = higan_loader_next(&L, &b)) == HIGAN_OK) {
            float vals[2], loss = 0;
            double row[4];
            const float *imgs = b.imgs;
            const int *lens = b.img_lens;
            int64_t W = b.width;
            int correct = 0;
            if (o.random_clip) {
                if ((rc = higan_augment_batch(&aug, &b, 1, 0, &rng)) != HIGAN_OK) break;
                imgs = aug.imgs; lens = aug.lens; W = aug.width;
            }
            rc = higan_wid_train_step(&m, &tape, imgs, b.B, W, lens, b.wids, &s.opt[HIGAN_STORE_BACKBONE],
                                      &s.opt[HIGAN_STORE_WID], &rng, &loss, &correct);
            if (rc != HIGAN_OK) {
                fprintf(stderr, "train_wid: step %lld: %s\n", (long long)s.step + 1, higan_last_error());
                fprintf(stderr, "train_wid: stopped; the last good checkpoint is %s\n", last_path);
                code = 1;
                stop = 1;
                break;
            }
            s.step++;
            s.batch++;
            vals[0] = loss;
            vals[1] = (float)correct / (float)b.B;
            higan_progress_update(&prog, s.step, s.epoch, 2, loss_names, vals, b.B, 0);
            row[0] = lr; row[1] = loss; row[2] = vals[1]; row[3] = NAN;
            if (o.valid_every_steps && s.step % o.valid_every_steps == 0) {
                snprintf(when, sizeof when, "step %lld", (long long)s.step);
                if ((rc = validate(&m, &tape, &test, wid_min, &o, &s, &best_acc, &last_acc, best_path, when)) != HIGAN_OK) break;
                row[3] = last_acc;
            }
            if ((rc = higan_csv_write(&csv, s.step, s.epoch, row)) != HIGAN_OK) break;
            if (o.ckpt_every && s.step % o.ckpt_every == 0 && (rc = higan_checkpoint_save(last_path, &m, &s)) != HIGAN_OK) break;
            if (o.plot_every && s.step % o.plot_every == 0) example_write_plot(csv_path, png_path, o.plot_w, o.plot_h, "train_wid");
            if (higan_train_interrupted()) { stop = 1; break; }
        }
        higan_loader_free(&L);
        if (code) break;
        if (rc < 0) { fprintf(stderr, "train_wid: %s\n", higan_last_error()); code = 1; break; }
        if (rc == HIGAN_LOADER_EPOCH_END) {
            int e = (int)s.epoch + 1;
            s.epoch++;
            s.batch = 0;
            if (o.valid_every_epochs && e >= o.valid_start_epoch && (e % o.valid_every_epochs == 0 || e == o.epochs)) {
                double row[4];
                snprintf(when, sizeof when, "epoch %d", e);
                if (validate(&m, &tape, &test, wid_min, &o, &s, &best_acc, &last_acc, best_path, when) != HIGAN_OK) {
                    fprintf(stderr, "train_wid: %s\n", higan_last_error()); code = 1; break;
                }
                row[0] = lr; row[1] = NAN; row[2] = NAN; row[3] = last_acc;
                higan_csv_write(&csv, s.step, s.epoch, row);
            }
            if (higan_checkpoint_save(last_path, &m, &s) != HIGAN_OK) { fprintf(stderr, "train_wid: %s\n", higan_last_error()); code = 1; break; }
        }
    }
    if (!code) {
        higan_progress_update(&prog, s.step, s.epoch, 0, NULL, NULL, 0, 1);
        if (higan_checkpoint_save(last_path, &m, &s) != HIGAN_OK) { fprintf(stderr, "train_wid: %s\n", higan_last_error()); code = 1; }
        else if (stop) fprintf(stderr, "interrupted at step %lld: saved %s; continue with --resume %s\n", (long long)s.step, last_path, last_path);
        else fprintf(stderr, "done: %lld steps, last held-out writer accuracy %.4f (best %.4f); %s\n", (long long)s.step,
                     last_acc, best_acc, last_path);
    }
    higan_csv_close(&csv);
    example_write_plot(csv_path, png_path, o.plot_w, o.plot_h, "train_wid");
    higan_augmenter_free(&aug);
    higan_tape_free(&tape);
    higan_arena_free(&arena);
    higan_model_free(&m);
    example_device_close(&dev);
    higan_dataset_free(&train);
    higan_dataset_free(&test);
    higan_config_free(&cfg);
    free(config_text);
    return code;
}
