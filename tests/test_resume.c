/* Exact resume: K training steps straight vs K/2 steps, Ctrl-C (a real SIGINT), checkpoint,
   fresh model/RNG/arena, resume, K/2 steps: every weight, buffer, Adam moment and step, RNG
   state and loss must be identical bit for bit, with other thread counts on each side.
   Run for recognizer pretraining (BiLSTM, dropout, RandomScale) and writer-identifier
   pretraining (RandomClip). Also: NaN stops with the loss named and the last checkpoint
   intact; config files (sections, overrides, errors naming file and line); CSV resume. */
#define HIGAN_IMPLEMENTATION
#include "higan.h"
#include "check.h"
#include <signal.h>

enum { MODE_OCR = 0, MODE_WID = 1 };

/* ---- a small dataset: blobs and bars that depend on the label and the writer ---- */
static void make_set(higan_dataset *ds, int n, uint64_t seed) {
    static uint8_t img[64 * 256];
    higan_rng r;
    int i, x, y;
    higan_rng_seed(&r, seed);
    higan_dataset_init(ds);
    for (i = 0; i < n; ++i) {
        char word[8];
        int len = 2 + (int)(higan_rng_u64(&r) % 3), k, w = 30 + (int)(higan_rng_u64(&r) % 100), wid = i % 3;
        for (k = 0; k < len; ++k) word[k] = (char)('a' + higan_rng_u64(&r) % 6);
        word[len] = 0;
        for (y = 0; y < 64; ++y)
            for (x = 0; x < w; ++x) {
                int c = word[(x * len) / w] - 'a';
                int on = ((y / (4 + c)) + (x / (3 + wid))) % 3 == 0 && y > 10 + 3 * wid && y < 54;
                img[y * w + x] = on ? (uint8_t)(200 + higan_rng_u64(&r) % 56) : (uint8_t)(higan_rng_u64(&r) % 20);
            }
        higan_dataset_append(ds, img, w, word, 10 + wid);
    }
    higan_dataset_pack(ds);
}

typedef struct {
    int mode;
    higan_model m;
    higan_arena arena;
    higan_tape tape;
    higan_rng rng;
    higan_augmenter aug;
    higan_train_state s;
    double best;            /* a registered value */
    float losses[64];
    int n_losses;
} run;

static void run_init(run *r, int mode, uint64_t seed) {
    higan_model_config mc;
    memset(r, 0, sizeof *r);
    r->mode = mode;
    if (mode == MODE_OCR) {
        mc = higan_model_default_config(HIGAN_NET_BIT(HIGAN_NET_RECOGNIZER));
        mc.R.cnn.resolution = 4; mc.R.cnn.max_dim = 16; mc.R.cnn.dropout = 0.2f; mc.R.rnn_depth = 1;
    } else {
        mc = higan_model_default_config(HIGAN_NET_BIT(HIGAN_NET_STYLE_BACKBONE) | HIGAN_NET_BIT(HIGAN_NET_WRITER_IDENTIFIER));
        mc.B.resolution = 4; mc.B.max_dim = 16; mc.B.dropout = 0.2f; mc.n_writer = 3;
    }
    higan_model_init(&r->m, &mc, seed);
    higan_arena_init(&r->arena, (size_t)1 << 20);     /* too small: exercises the retried step */
    higan_tape_init(&r->tape, &r->arena, 64);
    higan_rng_seed(&r->rng, seed * 31 + 1);
    higan_augmenter_init(&r->aug);
    higan_train_state_init(&r->s);
    if (mode == MODE_OCR) {
        r->m.store[HIGAN_STORE_OCR].frozen = 0;
        r->s.opt_stores = 1u << HIGAN_STORE_OCR;
    } else {
        r->m.store[HIGAN_STORE_BACKBONE].frozen = 0;
        r->m.store[HIGAN_STORE_WID].frozen = 0;
        r->s.opt_stores = (1u << HIGAN_STORE_BACKBONE) | (1u << HIGAN_STORE_WID);
    }
    higan_train_state_add_rng(&r->s, "train", &r->rng);
    higan_train_state_add_value(&r->s, "best", &r->best);
    r->best = 1.0 / (double)(seed + 3);
}
static void run_free(run *r) {
    higan_augmenter_free(&r->aug);
    higan_tape_free(&r->tape);
    higan_arena_free(&r->arena);
    higan_model_free(&r->m);
}

/* The driver loop in miniature. Returns 0 when until_step was reached, 1 when interrupted
   (checkpoint written), -1 on a failed step (message in higan_last_error). nan_at: a step
   (1-based) before which the Recognizer's classifier is poisoned. */
static int run_steps(run *r, const higan_dataset *ds, int64_t until_step, int64_t interrupt_at, int64_t nan_at,
                     int ckpt_every, const char *ckpt, int threaded) {
    higan_loader_options lo = higan_loader_default_options();
    higan_loader L;
    higan_batch b;
    higan_status rc = HIGAN_OK;
    lo.batch_size = 4; lo.augment = 0; lo.threaded = threaded; lo.seed = 77;
    while (r->s.step < until_step) {
        if (higan_train_loader_open(&L, ds, &lo, r->s.epoch, r->s.batch) != HIGAN_OK) return -1;
        while (r->s.step < until_step && (rc = higan_loader_next(&L, &b)) == HIGAN_OK) {
            float loss = 0;
            int k;
            double f = higan_lr_linear_decay((int)r->s.epoch, 1, 3);
            for (k = 0; k < HIGAN_STORE_COUNT; ++k) r->s.opt[k].lr = 1e-3 * f;
            if (nan_at == r->s.step + 1) {
                int h = higan_params_find(&r->m.store[HIGAN_STORE_OCR], "Recognizer.ctc_cls.weight");
                higan_params_data(&r->m.store[HIGAN_STORE_OCR], h)[3] = NAN;
            }
            if (r->mode == MODE_OCR) {
                if (higan_augment_batch(&r->aug, &b, 0, 1, &r->rng) != HIGAN_OK) { higan_loader_free(&L); return -1; }
                rc = higan_ocr_train_step(&r->m, &r->tape, r->aug.imgs, r->aug.B, r->aug.width, r->aug.lens, b.labels,
                                          b.label_width, b.label_lens, &r->s.opt[HIGAN_STORE_OCR], &r->rng, &loss);
            } else {
                if (higan_augment_batch(&r->aug, &b, 1, 0, &r->rng) != HIGAN_OK) { higan_loader_free(&L); return -1; }
                rc = higan_wid_train_step(&r->m, &r->tape, r->aug.imgs, r->aug.B, r->aug.width, r->aug.lens, b.wids,
                                          &r->s.opt[HIGAN_STORE_BACKBONE], &r->s.opt[HIGAN_STORE_WID], &r->rng, &loss, NULL);
            }
            if (rc != HIGAN_OK) {     /* the driver names the step: the checkpoint stays as it was */
                char msg[300];
                snprintf(msg, sizeof msg, "%.250s", higan_last_error());
                higan__error(rc, "step %lld: %s", (long long)(r->s.step + 1), msg);
                higan_loader_free(&L);
                return -1;
            }
            r->losses[r->n_losses++] = loss;
            r->s.step++;
            r->s.batch++;
            if (interrupt_at == r->s.step) raise(SIGINT);      /* "Ctrl-C" */
            if (ckpt_every && r->s.step % ckpt_every == 0 && higan_checkpoint_save(ckpt, &r->m, &r->s) != HIGAN_OK) {
                higan_loader_free(&L);
                return -1;
            }
            if (higan_train_interrupted()) {
                higan_loader_free(&L);
                if (higan_checkpoint_save(ckpt, &r->m, &r->s) != HIGAN_OK) return -1;
                return 1;
            }
        }
        higan_loader_free(&L);
        if (rc < 0) return -1;
        if (rc == HIGAN_LOADER_EPOCH_END) { r->s.epoch++; r->s.batch = 0; }
    }
    return 0;
}

static int same_bits(const void *a, const void *b, size_t n) { return memcmp(a, b, n) == 0; }
static void compare_runs(const char *what, const run *a, const run *b, const float *losses_b, int nb) {
    int s, ok = 1, k;
    for (s = 0; s < HIGAN_STORE_COUNT; ++s) {
        const higan_params *p = &a->m.store[s], *q = &b->m.store[s];
        if (!p->count) continue;
        ok &= p->n_param == q->n_param && p->n_buffer == q->n_buffer && p->n_ibuffer == q->n_ibuffer;
        ok &= same_bits(p->value, q->value, sizeof(float) * (size_t)p->n_param);
        ok &= same_bits(p->adam_m, q->adam_m, sizeof(float) * (size_t)p->n_param);
        ok &= same_bits(p->adam_v, q->adam_v, sizeof(float) * (size_t)p->n_param);
        if (p->n_buffer) ok &= same_bits(p->buffer, q->buffer, sizeof(float) * (size_t)p->n_buffer);
        if (p->n_ibuffer) ok &= same_bits(p->ibuffer, q->ibuffer, sizeof(int64_t) * (size_t)p->n_ibuffer);
        ok &= a->s.opt[s].step == b->s.opt[s].step;
    }
    CHECK(ok, "%s: weights, buffers, Adam m/v/step identical bit for bit", what);
    CHECK(same_bits(a->rng.s, b->rng.s, sizeof a->rng.s), "%s: RNG state identical", what);
    CHECK(a->s.step == b->s.step && a->s.epoch == b->s.epoch && a->s.batch == b->s.batch,
          "%s: position identical (step %lld epoch %lld batch %lld)", what, (long long)b->s.step, (long long)b->s.epoch,
          (long long)b->s.batch);
    ok = a->n_losses == nb;
    for (k = 0; ok && k < nb; ++k) ok &= same_bits(&a->losses[k], &losses_b[k], sizeof(float));
    CHECK(ok, "%s: the %d losses identical bit for bit (last %.6f)", what, nb, nb ? losses_b[nb - 1] : 0.0f);
    CHECK(a->best == b->best, "%s: registered value restored exactly", what);
}

static void test_resume(int mode, const higan_dataset *ds, int64_t K, int64_t half, int threads_a, int threads_b) {
    const char *ckpt = mode == MODE_OCR ? "build/test_resume_ocr.safetensors" : "build/test_resume_wid.safetensors";
    const char *name = mode == MODE_OCR ? "ocr" : "wid";
    run straight, first, second;
    float losses[64];
    int n = 0, k;
    char what[96];
    /* straight: threads_a */
    higan_set_num_threads(threads_a);
    run_init(&straight, mode, 5);
    CHECK(run_steps(&straight, ds, K, -1, -1, 0, ckpt, 1) == 0, "%s: %lld steps straight (%d thread%s): %s", name,
          (long long)K, threads_a, threads_a > 1 ? "s" : "", higan_last_error());
    /* interrupted: threads_b, a SIGINT after `half` steps */
    higan_set_num_threads(threads_b);
    run_init(&first, mode, 5);
    higan_train_catch_sigint();
    CHECK(run_steps(&first, ds, K, half, -1, 0, ckpt, 0) == 1 && first.s.step == half,
          "%s: SIGINT after step %lld stops the run with a checkpoint", name, (long long)half);
    CHECK(higan_train_interrupted(), "%s: the interrupt flag is set", name);
    higan_train_set_interrupted(0);
    signal(SIGINT, SIG_DFL);
    for (k = 0; k < first.n_losses; ++k) losses[n++] = first.losses[k];
    run_free(&first);
    /* a fresh start (other seeds: everything must come from the checkpoint), threads_a */
    higan_set_num_threads(threads_a);
    run_init(&second, mode, 999);
    CHECK(higan_checkpoint_load(ckpt, &second.m, &second.s) == HIGAN_OK, "%s: load the checkpoint: %s", name, higan_last_error());
    CHECK(second.s.step == half, "%s: resumed at step %lld (epoch %lld, batch %lld)", name, (long long)second.s.step,
          (long long)second.s.epoch, (long long)second.s.batch);
    CHECK(run_steps(&second, ds, K, -1, -1, 0, ckpt, 1) == 0, "%s: resumed to step %lld", name, (long long)K);
    for (k = 0; k < second.n_losses; ++k) losses[n++] = second.losses[k];
    snprintf(what, sizeof what, "%s resume at %lld of %lld, threads %d/%d", name, (long long)half, (long long)K, threads_a, threads_b);
    compare_runs(what, &straight, &second, losses, n);
    run_free(&straight);
    run_free(&second);
}

/* NaN in a loss: the run stops naming the step and the loss, the checkpoint saved before
   stays byte for byte, and saving a model holding a NaN is refused. */
static void test_nan(const higan_dataset *ds) {
    const char *ckpt = "build/test_resume_nan.safetensors";
    run r, back;
    unsigned char *before, *after;
    size_t nb = 0, na = 0;
    int rc;
    higan_set_num_threads(1);
    remove(ckpt);
    run_init(&r, MODE_OCR, 8);
    rc = run_steps(&r, ds, 10, -1, 6, 2, ckpt, 0);
    CHECK(rc == -1 && strstr(higan_last_error(), "step 6") && strstr(higan_last_error(), "loss 'ctc' is nan"),
          "NaN stops the run naming step and loss: \"%s\"", higan_last_error());
    CHECK(r.s.step == 5, "no step counted after the bad one (step %lld)", (long long)r.s.step);
    before = (unsigned char *)higan__tr_read_text(ckpt, &nb);
    CHECK(before && nb > 0, "the checkpoint of step 4 exists (%zu bytes)", nb);
    CHECK(higan_checkpoint_save(ckpt, &r.m, &r.s) == HIGAN_ERR_ARG && strstr(higan_last_error(), "Recognizer.ctc_cls.weight"),
          "saving a NaN model is refused naming the tensor: \"%s\"", higan_last_error());
    after = (unsigned char *)higan__tr_read_text(ckpt, &na);
    CHECK(before && after && na == nb && !memcmp(before, after, nb), "the last good checkpoint is intact");
    run_init(&back, MODE_OCR, 1);
    CHECK(higan_checkpoint_load(ckpt, &back.m, &back.s) == HIGAN_OK && back.s.step == 4 &&
          higan_model_check_finite(&back.m) == HIGAN_OK, "it loads, at step 4, all finite");
    CHECK(higan_model_save(&back.m, "build/test_resume_plain.safetensors", NULL) == HIGAN_OK &&
          higan_checkpoint_load("build/test_resume_plain.safetensors", &back.m, &back.s) == HIGAN_ERR_FORMAT &&
          strstr(higan_last_error(), "not a training checkpoint"), "a plain model file cannot be resumed: \"%s\"", higan_last_error());
    free(before); free(after);
    run_free(&r);
    run_free(&back);
}

static void test_config(void) {
    higan_config c;
    higan_model_config mc = higan_model_default_config(HIGAN_NET_BIT(HIGAN_NET_RECOGNIZER));
    const char *text =
        "# a config\n"
        "seed: 123456\n"
        "training:\n"
        "  batch_size: 16     # small\n"
        "  lr = 1.0e-3\n"
        "  augment: true\n"
        "  ckpt_dir: 'runs/ocr'\n"
        "  resume: ~\n"
        "model:\n"
        "  R:\n"
        "    max_dim: 64\n"
        "    rnn_depth: 1\n"
        "  R.resolution: 8\n"
        "valid.batch_size: 32\n";
    FILE *f;
    higan_config_init(&c);
    CHECK(higan_config_parse(&c, text, "ocr.cfg") == HIGAN_OK, "parse a config: %s", higan_last_error());
    CHECK(higan_config_int(&c, "seed", 1, 0, INT64_MAX) == 123456, "top-level key");
    CHECK(higan_config_int(&c, "training.batch_size", 1, 1, 4096) == 16, "section key with a comment");
    CHECK(higan_config_real(&c, "training.lr", 0, 0, 1) == 1e-3, "key = value in a section");
    CHECK(higan_config_bool(&c, "training.augment", 0) == 1, "boolean");
    CHECK(!strcmp(higan_config_str(&c, "training.ckpt_dir", ""), "runs/ocr"), "quoted string");
    CHECK(!strcmp(higan_config_str(&c, "training.resume", "none"), "none"), "~ is empty: the default");
    CHECK(higan_config_int(&c, "training.epochs", 74, 1, 1000) == 74, "absent key: the default");
    CHECK(higan_config_set(&c, "training.batch_size=8") == HIGAN_OK && higan_config_int(&c, "training.batch_size", 1, 1, 4096) == 8,
          "command-line override");
    higan_config_model(&c, &mc);
    CHECK(mc.R.cnn.max_dim == 64 && mc.R.rnn_depth == 1 && mc.R.cnn.resolution == 8, "nested sections and dotted keys: model.R.*");
    CHECK(higan_config_finish(&c) != HIGAN_OK && strstr(higan_last_error(), "ocr.cfg:14") &&
          strstr(higan_last_error(), "unknown key 'valid.batch_size'"), "unknown key named with file and line: \"%s\"", higan_last_error());
    higan_config_free(&c);

    /* a bad value names file and line; a typo gets a suggestion */
    higan_config_init(&c);
    higan_config_parse(&c, "training:\n  epochs: many\n  batch_size: 0\n", "bad.cfg");
    higan_config_int(&c, "training.epochs", 1, 1, 1000);
    higan_config_int(&c, "training.batch_size", 1, 1, 1000);
    CHECK(higan_config_finish(&c) == HIGAN_ERR_ARG && strstr(higan_last_error(), "bad.cfg:2") &&
          strstr(higan_last_error(), "'many' is not an integer"), "bad value named: \"%s\"", higan_last_error());
    higan_config_free(&c);
    higan_config_init(&c);
    higan_config_parse(&c, "training:\n  batch_size: 0\n", "bad.cfg");
    higan_config_int(&c, "training.batch_size", 1, 1, 1000);
    CHECK(higan_config_finish(&c) == HIGAN_ERR_ARG && strstr(higan_last_error(), "bad.cfg:2") &&
          strstr(higan_last_error(), "outside [1, 1000]"), "value out of range named: \"%s\"", higan_last_error());
    higan_config_free(&c);
    higan_config_init(&c);
    higan_config_parse(&c, "training:\n  bacth_size: 4\n", "typo.cfg");
    higan_config_int(&c, "training.batch_size", 1, 1, 1000);
    CHECK(higan_config_finish(&c) == HIGAN_ERR_ARG && strstr(higan_last_error(), "typo.cfg:2") &&
          strstr(higan_last_error(), "did you mean 'training.batch_size'"), "typo: \"%s\"", higan_last_error());
    higan_config_free(&c);
    higan_config_init(&c);
    higan_config_set(&c, "training.nope=3");
    CHECK(higan_config_finish(&c) == HIGAN_ERR_ARG && strstr(higan_last_error(), "command line: unknown key 'training.nope'"),
          "unknown command-line key: \"%s\"", higan_last_error());
    higan_config_free(&c);
    /* syntax errors */
    higan_config_init(&c);
    CHECK(higan_config_parse(&c, "a: 1\nb 2\n", "syn.cfg") == HIGAN_ERR_FORMAT && strstr(higan_last_error(), "syn.cfg:2"),
          "missing separator: \"%s\"", higan_last_error());
    higan_config_free(&c);
    higan_config_init(&c);
    CHECK(higan_config_parse(&c, "a: 1\nx:\n  y: [1, 2]\n", "syn.cfg") == HIGAN_ERR_FORMAT && strstr(higan_last_error(), "syn.cfg:3"),
          "lists rejected: \"%s\"", higan_last_error());
    higan_config_free(&c);
    higan_config_init(&c);
    CHECK(higan_config_parse(&c, "a: 1\nt:\n  b: 2\nt.b: 3\n", "dup.cfg") == HIGAN_ERR_FORMAT && strstr(higan_last_error(), "dup.cfg:4") &&
          strstr(higan_last_error(), "duplicate key 't.b'"), "duplicate key: \"%s\"", higan_last_error());
    higan_config_free(&c);
    /* a file: the error names the path */
    f = fopen("build/test_resume.cfg", "wb");
    fputs("seed: 1\nwhat: 2\n", f);
    fclose(f);
    higan_config_init(&c);
    CHECK(higan_config_load(&c, "build/test_resume.cfg") == HIGAN_OK, "load a config file");
    higan_config_int(&c, "seed", 0, 0, 10);
    CHECK(higan_config_finish(&c) == HIGAN_ERR_ARG && strstr(higan_last_error(), "build/test_resume.cfg:2: unknown key 'what'"),
          "file error: \"%s\"", higan_last_error());
    higan_config_free(&c);
    higan_config_init(&c);
    CHECK(higan_config_load(&c, "build/no_such.cfg") == HIGAN_ERR_IO && strstr(higan_last_error(), "build/no_such.cfg"), "missing file named");
    higan_config_free(&c);
}

static void test_csv_resume(void) {
    const char *path = "build/test_resume.csv";
    const char *names[2] = {"a", "b"}, *other[1] = {"x"};
    higan_csv c;
    double v[2];
    int i;
    char *text;
    CHECK(higan_csv_open(&c, path, 2, names, -1) == HIGAN_OK, "csv new");
    for (i = 1; i <= 6; ++i) { v[0] = i; v[1] = i == 3 ? NAN : 0.5 * i; higan_csv_write(&c, i, 0, v); }
    higan_csv_close(&c);
    CHECK(higan_csv_open(&c, path, 2, names, 4) == HIGAN_OK, "csv reopened at step 4");
    v[0] = 50; v[1] = 60; higan_csv_write(&c, 5, 0, v);
    higan_csv_close(&c);
    text = higan__tr_read_text(path, NULL);
    CHECK(text && !strcmp(text, "step,epoch,a,b\n1,0,1,0.5\n2,0,2,1\n3,0,3,\n4,0,4,2\n5,0,50,60\n"),
          "csv reopened at a checkpoint: later rows dropped, NaN as an empty cell");
    if (text && strcmp(text, "step,epoch,a,b\n1,0,1,0.5\n2,0,2,1\n3,0,3,\n4,0,4,2\n5,0,50,60\n")) printf("%s", text);
    free(text);
    CHECK(higan_csv_open(&c, path, 1, other, 4) == HIGAN_ERR_FORMAT, "other columns refused: %s", higan_last_error());
}

int main(void) {
    higan_dataset ds;
    int dflt;
    double t;
    make_set(&ds, 14, 4);          /* 3 batches of 4 per epoch (drop_last) */
    dflt = higan_get_num_threads();
    if (dflt < 2) dflt = 2;
    test_config();
    test_csv_resume();
    /* 3 batches per epoch: the OCR run (8 steps) stops mid-epoch (step 4: batch 1 of epoch 1), the
       WID run (7 steps) at an epoch end (step 3: the resumed loader skips the whole epoch). The
       interrupted half runs on the default threads (at least 2), the rest on one: few steps,
       because OpenMP's barriers are slow on a machine busy with other work */
    t = higan_time_seconds();
    test_resume(MODE_OCR, &ds, 8, 4, 1, dflt);
    printf("   ocr resume: %.1f s\n", higan_time_seconds() - t);
    t = higan_time_seconds();
    test_resume(MODE_WID, &ds, 7, 3, 1, dflt);
    printf("   wid resume: %.1f s\n", higan_time_seconds() - t);
    t = higan_time_seconds();
    test_nan(&ds);
    printf("   nan: %.1f s\n", higan_time_seconds() - t);
    higan_dataset_free(&ds);
    return check_finish();
}
