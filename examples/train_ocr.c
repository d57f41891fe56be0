/* train_ocr.c - pretrain HiGAN+'s Recognizer (the OCR network) with CTC (higan.h).

   train_ocr -c CONFIG [--resume CKPT] [--set key=value ...] [--threads N] [--device cpu|cuda]

   --device cuda trains on an NVIDIA GPU: the same source built by nvcc with HIGAN_WITH_CUDA
   (make build/train_ocr_cuda); only the setup differs (example_device_* in example_util.h).

   As the official RecognizeModel.train (configs/ocr_iam.yml): style images (32 px per
   character) through RandomScale, CTC with input lengths width / 16, Adam, the learning rate
   decayed linearly per epoch; the held-out set is read with greedy decoding and scored with
   CER and WER (the plain Levenshtein distance of the strings, not the official decode that
   also collapses doubled letters of the reference). Writes into output.dir:
       last.safetensors   checkpoint (weights, Adam state, RNG, position): every
                          output.ckpt_every_steps, at each epoch end, at the end and on Ctrl-C
       best.safetensors   the checkpoint with the lowest held-out CER so far
       log.csv            step, epoch, lr, ctc, cer, wer (cer/wer on validation rows)
       loss.png           the CSV plotted (every output.plot_every_steps and at the end)
   --resume continues exactly where the checkpoint stopped (bit for bit the run that never
   stopped). A NaN or Inf loss stops the run, naming the step; the last checkpoint is kept.
   Ctrl-C saves and exits; a second Ctrl-C ends at once.

   Configs: configs/ocr_iam.cfg (official hyper-parameters), configs/ocr_small.cfg (the
   synthetic set on a laptop). Datasets: data_tools/make_synthetic or data_tools/prepare_iam.
   Build: make (or cc -std=c99 -O2 -fopenmp -I. examples/train_ocr.c -o build/train_ocr -lm -lpthread) */
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
    const char *train_path, *test_path, *out_dir;
    int batch_size, epochs, start_decay, n_decay, augment, max_width;
    double lr;
    int valid_batch, valid_start_epoch, valid_every_epochs, valid_every_steps, valid_show;
    int64_t valid_max_words;
    int ckpt_every, plot_every, plot_w, plot_h;
    double print_every;
    size_t arena_mb;
} options;

static void read_config(higan_config *c, options *o, higan_model_config *mc) {
    o->seed = (uint64_t)higan_config_int(c, "seed", 123456, 0, INT64_MAX);
    o->train_path = higan_config_str(c, "data.train", NULL);
    o->test_path = higan_config_str(c, "data.test", NULL);
    o->batch_size = (int)higan_config_int(c, "training.batch_size", 128, 1, 4096);
    o->epochs = (int)higan_config_int(c, "training.epochs", 73, 1, 100000);
    o->lr = higan_config_real(c, "training.lr", 1e-3, 0, 1);
    o->start_decay = (int)higan_config_int(c, "training.start_decay_epoch", 40, 0, 100000);
    o->n_decay = (int)higan_config_int(c, "training.n_epochs_decay", 30, 0, 100000);
    o->augment = higan_config_bool(c, "training.augment", 1);
    o->max_width = (int)higan_config_int(c, "training.max_width", 0, 0, 1 << 20);
    o->arena_mb = (size_t)higan_config_int(c, "training.arena_mb", 64, 1, 1 << 20);
    o->valid_batch = (int)higan_config_int(c, "valid.batch_size", 64, 1, 4096);
    o->valid_start_epoch = (int)higan_config_int(c, "valid.start_epoch", 1, 0, 100000);
    o->valid_every_epochs = (int)higan_config_int(c, "valid.every_epochs", 1, 0, 100000);
    o->valid_every_steps = (int)higan_config_int(c, "valid.every_steps", 0, 0, 1 << 30);
    o->valid_max_words = higan_config_int(c, "valid.max_words", 0, 0, INT64_MAX);
    o->valid_show = (int)higan_config_int(c, "valid.show_words", 5, 0, 1000);
    o->out_dir = higan_config_str(c, "output.dir", "runs/ocr");
    o->ckpt_every = (int)higan_config_int(c, "output.ckpt_every_steps", 500, 0, 1 << 30);
    o->plot_every = (int)higan_config_int(c, "output.plot_every_steps", 200, 0, 1 << 30);
    o->print_every = higan_config_real(c, "output.print_every_seconds", 10, 0, 1e6);
    o->plot_w = (int)higan_config_int(c, "output.plot_width", 800, 160, 8192);
    o->plot_h = (int)higan_config_int(c, "output.plot_height", 600, 60, 8192);
    higan_config_model(c, mc);
}

typedef struct { int shown, max; } show_state;
static void show_word(void *user, int64_t record, const char *pred, const char *ref) {
    show_state *s = (show_state *)user;
    if (s->shown++ < s->max) fprintf(stderr, "    #%lld  %-20s -> %s\n", (long long)record, ref, pred);
}

int main(int argc, char **argv) {
    higan_config cfg;
    options o;
    higan_model_config mc = higan_model_default_config(HIGAN_NET_BIT(HIGAN_NET_RECOGNIZER));
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
    double best_cer = 1e30, last_cer = NAN, last_wer = NAN;
    const char *config_path = NULL, *resume = NULL, *device = NULL;
    example_device dev;
    const char *csv_names[4] = {"lr", "ctc", "cer", "wer"}, *loss_names[1] = {"ctc"};
    char last_path[1024], best_path[1024], csv_path[1024], png_path[1024], *config_text = NULL;
    int i, threads = 0, stop = 0, code = 0;
    int64_t total_steps, n_batches;
    higan_status rc = HIGAN_OK;

    if ((i = example_training_args(argc, argv, "train_ocr", "configs/ocr_small.cfg, configs/ocr_iam.cfg", &cfg, &config_path, &resume, &threads, &device)) != 0) return i;
    read_config(&cfg, &o, &mc);
    if (higan_config_finish(&cfg) != HIGAN_OK) { fprintf(stderr, "train_ocr: %s\n", higan_last_error()); return 2; }
    if ((i = example_device_open(&dev, device, o.arena_mb << 20, "train_ocr")) != 0) return i;
    if (!o.train_path || !o.test_path) { fprintf(stderr, "train_ocr: %s: set data.train and data.test\n", config_path); return 2; }
    if (threads > 0) higan_set_num_threads(threads);
    config_text = (char *)malloc((size_t)higan_config_dump(&cfg, NULL, 0) + 1);
    if (config_text) higan_config_dump(&cfg, config_text, higan_config_dump(&cfg, NULL, 0) + 1);

    /* data, model, optimizer state */
    higan_dataset_init(&train);
    higan_dataset_init(&test);
    if (higan_dataset_load(&train, o.train_path) != HIGAN_OK || higan_dataset_load(&test, o.test_path) != HIGAN_OK) {
        fprintf(stderr, "train_ocr: %s\n", higan_last_error());
        return 1;
    }
    if (higan_model_init(&m, &mc, o.seed) != HIGAN_OK) { fprintf(stderr, "train_ocr: %s\n", higan_last_error()); return 1; }
    m.store[HIGAN_STORE_OCR].frozen = 0;
    higan_train_state_init(&s);
    s.opt_stores = 1u << HIGAN_STORE_OCR;
    s.opt[HIGAN_STORE_OCR] = higan_adam_default(o.lr);
    s.config_text = config_text;
    higan_rng_seed(&rng, o.seed ^ 0x5DEECE66Dull);   /* dropout and augmentation */
    higan_train_state_add_rng(&s, "train", &rng);
    higan_train_state_add_value(&s, "best_cer", &best_cer);
    if (resume) {
        if (higan_checkpoint_load(resume, &m, &s) != HIGAN_OK) { fprintf(stderr, "train_ocr: %s\n", higan_last_error()); return 1; }
        fprintf(stderr, "resumed %s at step %lld (epoch %lld, batch %lld)\n", resume, (long long)s.step,
                (long long)s.epoch, (long long)s.batch);
    }
    if (example_make_dirs(o.out_dir, "train_ocr") != 0) return 1;
    snprintf(last_path, sizeof last_path, "%s/last.safetensors", o.out_dir);
    snprintf(best_path, sizeof best_path, "%s/best.safetensors", o.out_dir);
    snprintf(csv_path, sizeof csv_path, "%s/log.csv", o.out_dir);
    snprintf(png_path, sizeof png_path, "%s/loss.png", o.out_dir);
    if (higan_csv_open(&csv, csv_path, 4, csv_names, resume ? s.step : -1) != HIGAN_OK) {
        fprintf(stderr, "train_ocr: %s\n", higan_last_error());
        return 1;
    }
    lo.batch_size = o.batch_size;
    lo.seed = o.seed;
    lo.augment = 0;                /* RandomScale only (the loader's augment is the GAN's clip + scale) */
    lo.max_width = o.max_width;
    if (higan_loader_init(&L, &train, &lo) != HIGAN_OK) { fprintf(stderr, "train_ocr: %s\n", higan_last_error()); return 1; }
    n_batches = L.n_batches;
    higan_loader_free(&L);
    total_steps = n_batches * o.epochs;
    fprintf(stderr, "Recognizer: %lld parameters; %lld training words (%lld batches of %d per epoch), %lld held-out; "
            "%d epochs = %lld steps; %d thread%s, %s kernels\n",
            (long long)higan_model_num_params(&m, HIGAN_NET_RECOGNIZER), (long long)train.count, (long long)n_batches,
            o.batch_size, (long long)test.count, o.epochs, (long long)total_steps, higan_get_num_threads(),
            higan_get_num_threads() > 1 ? "s" : "", higan_cpu_level_name(higan_cpu_level()));
    if (higan_arena_init(&arena, o.arena_mb << 20) != HIGAN_OK || higan_tape_init(&tape, &arena, 4096) != HIGAN_OK) {
        fprintf(stderr, "train_ocr: %s\n", higan_last_error());
        return 1;
    }
    example_device_attach(&dev, &tape);     /* --device cuda: the tape and the model on the device */
    if (higan_model_to_backend(&m, example_device_backend(&dev)) != HIGAN_OK) {
        fprintf(stderr, "train_ocr: %s\n", higan_last_error());
        return 1;
    }
    higan_augmenter_init(&aug);
    higan_progress_init(&prog, s.step, total_steps, o.print_every);
    higan_train_catch_sigint();

    while (s.epoch < o.epochs && !stop) {
        higan_batch b;
        int validate_now = 0;
        s.opt[HIGAN_STORE_OCR].lr = o.lr * higan_lr_linear_decay((int)s.epoch, o.start_decay, o.n_decay + 1);
        if ((rc = higan_train_loader_open(&L, &train, &lo, s.epoch, s.batch)) != HIGAN_OK) break;
        while ((rc = higan_loader_next(&L, &b)) == HIGAN_OK) {
            float loss = 0;
            double row[4];
            const float *imgs = b.imgs;
            const int *lens = b.img_lens;
            int B = b.B;
            int64_t W = b.width;
            if (o.augment) {
                if ((rc = higan_augment_batch(&aug, &b, 0, 1, &rng)) != HIGAN_OK) break;
                imgs = aug.imgs; lens = aug.lens; W = aug.width;
            }
            rc = higan_ocr_train_step(&m, &tape, imgs, B, W, lens, b.labels, b.label_width, b.label_lens,
                                      &s.opt[HIGAN_STORE_OCR], &rng, &loss);
            if (rc != HIGAN_OK) {
                fprintf(stderr, "train_ocr: step %lld: %s\n", (long long)s.step + 1, higan_last_error());
                fprintf(stderr, "train_ocr: stopped; the last good checkpoint is %s\n", last_path);
                code = 1;
                stop = 1;
                break;
            }
            s.step++;
            s.batch++;
            higan_progress_update(&prog, s.step, s.epoch, 1, loss_names, &loss, B, 0);
            row[0] = s.opt[HIGAN_STORE_OCR].lr; row[1] = loss; row[2] = NAN; row[3] = NAN;
            if (o.valid_every_steps && s.step % o.valid_every_steps == 0) validate_now = 1;
            if (validate_now) {
                higan_text_score ts;
                show_state sh;
                sh.shown = 0; sh.max = o.valid_show;
                if ((rc = higan_ocr_evaluate(&m, &tape, &test, o.valid_batch, o.valid_max_words, &ts, show_word, &sh)) != HIGAN_OK) break;
                last_cer = higan_text_score_cer(&ts); last_wer = higan_text_score_wer(&ts);
                row[2] = last_cer; row[3] = last_wer;
                fprintf(stderr, "step %lld: held-out CER %.4f WER %.4f (%lld words)%s\n", (long long)s.step, last_cer,
                        last_wer, (long long)ts.words, last_cer < best_cer ? ", best so far" : "");
                if (last_cer < best_cer) {
                    best_cer = last_cer;
                    if ((rc = higan_checkpoint_save(best_path, &m, &s)) != HIGAN_OK) break;
                }
                validate_now = 0;
            }
            if ((rc = higan_csv_write(&csv, s.step, s.epoch, row)) != HIGAN_OK) break;
            if (o.ckpt_every && s.step % o.ckpt_every == 0 && (rc = higan_checkpoint_save(last_path, &m, &s)) != HIGAN_OK) break;
            if (o.plot_every && s.step % o.plot_every == 0) example_write_plot(csv_path, png_path, o.plot_w, o.plot_h, "train_ocr");
            if (higan_train_interrupted()) { stop = 1; break; }
        }
        higan_loader_free(&L);
        if (code) break;
        if (rc < 0) { fprintf(stderr, "train_ocr: %s\n", higan_last_error()); code = 1; break; }
        if (rc == HIGAN_LOADER_EPOCH_END) {
            int e = (int)s.epoch + 1;         /* 1-based number of the epoch just finished */
            s.epoch++;
            s.batch = 0;
            if (o.valid_every_epochs && e >= o.valid_start_epoch && (e % o.valid_every_epochs == 0 || e == o.epochs)) {
                higan_text_score ts;
                show_state sh;
                double row[4];
                sh.shown = 0; sh.max = o.valid_show;
                if (higan_ocr_evaluate(&m, &tape, &test, o.valid_batch, o.valid_max_words, &ts, show_word, &sh) != HIGAN_OK) {
                    fprintf(stderr, "train_ocr: %s\n", higan_last_error()); code = 1; break;
                }
                last_cer = higan_text_score_cer(&ts); last_wer = higan_text_score_wer(&ts);
                fprintf(stderr, "epoch %d: held-out CER %.4f WER %.4f (%lld words)%s\n", e, last_cer, last_wer,
                        (long long)ts.words, last_cer < best_cer ? ", best so far" : "");
                row[0] = s.opt[HIGAN_STORE_OCR].lr; row[1] = NAN; row[2] = last_cer; row[3] = last_wer;
                higan_csv_write(&csv, s.step, s.epoch, row);
                if (last_cer < best_cer) {
                    best_cer = last_cer;
                    if (higan_checkpoint_save(best_path, &m, &s) != HIGAN_OK) { fprintf(stderr, "train_ocr: %s\n", higan_last_error()); code = 1; break; }
                }
            }
            if (higan_checkpoint_save(last_path, &m, &s) != HIGAN_OK) { fprintf(stderr, "train_ocr: %s\n", higan_last_error()); code = 1; break; }
        }
    }
    if (!code) {
        higan_progress_update(&prog, s.step, s.epoch, 0, NULL, NULL, 0, 1);
        if (higan_checkpoint_save(last_path, &m, &s) != HIGAN_OK) { fprintf(stderr, "train_ocr: %s\n", higan_last_error()); code = 1; }
        else if (stop) fprintf(stderr, "interrupted at step %lld: saved %s; continue with --resume %s\n", (long long)s.step, last_path, last_path);
        else fprintf(stderr, "done: %lld steps, last held-out CER %.4f (best %.4f); %s\n", (long long)s.step, last_cer,
                     best_cer < 1e30 ? best_cer : NAN, last_path);
    }
    higan_csv_close(&csv);
    example_write_plot(csv_path, png_path, o.plot_w, o.plot_h, "train_ocr");
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
