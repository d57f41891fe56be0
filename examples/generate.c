/* generate.c - write handwriting with HiGAN+ (higan.h).

   generate --checkpoint CKPT (--text TEXT | --text-file FILE) STYLE -o out.png [options]
   generate --init-random CKPT [--seed N] [--all]

   STYLE is one of
       --seed N                       a random style, z ~ N(0, I) drawn from seed N
       --style-image IMG --style-text WORD
                                      the style of a reference word image (PNG/JPEG/BMP...,
                                      dark ink on light paper) with its transcription (only its
                                      length matters: it sets the scale, 32 px per character);
                                      repeat the pair for several references: their style
                                      vectors are averaged
       --style-file FILE              a style vector saved with --save-style
       --seeds N,N,...                one block of the text per seed, stacked (e.g. the
                                      README's demo: three random styles)
   Options
       --interp-steps N               N rows: the text in styles interpolated (torch.lerp, as the
                                      official eval_interp) from STYLE to a second style given by
                                      --seed2 N, --style2-file FILE or (repeatable)
                                      --style2-image IMG --style2-text WORD
       --save-style FILE              write STYLE's vector (safetensors, one tensor "style")
       --width PX                     wrap lines at PX pixels (page width; default: no wrapping)
       --gap PX                       space between words (16)
       --line-gap PX                  extra space between lines (0)
       --margin PX                    blank border (8)
       --no-baseline                  align word tops instead of baselines
       --transparent                  black ink on a transparent background (alpha = ink)
   A newline in the text starts a new line. Words are generated one by one in the same style
   and placed on a common baseline estimated from each word's ink row profile (see
   higan_word_baseline in higan.h). The second form writes a randomly initialised checkpoint
   (Generator, StyleEncoder, StyleBackbone at the official sizes; --all: all seven networks,
   e.g. to try examples/evaluate.c): the examples run before any training exists, and their
   output is noise.

   The output depends only on the checkpoint, the style source, the text and the options: the
   same PNG bytes on every run and for every thread count. The SIMD levels (HIGAN_CPU=scalar|
   avx2|avx512) round floats differently (up to ~4e-7 apart), so very rarely one pixel lands
   one gray level apart between levels. Build (from the repository root): make, or
       cc -std=c99 -O2 -I. examples/generate.c -o build/generate -lm     (+ -fopenmp)
   stb_image / stb_image_write come from Debian's libstb-dev (/usr/include/stb).

   --device cuda runs the Generator on an NVIDIA GPU: the same source built by nvcc with
   HIGAN_WITH_CUDA (make builds it as build/generate_cuda):
       nvcc -x cu -std=c++17 -O2 -I. -DHIGAN_WITH_CUDA examples/generate.c -o build/generate_cuda -lcublas
   Only the setup differs (the tape's backend, a device arena, the Generator's weights mirrored
   on the device: see open_device); the generation calls are the CPU's. Styles from reference
   images are computed on the CPU. The GPU's sums run in another order, so pixels may land a
   gray level apart from the CPU build's. A build without HIGAN_WITH_CUDA answers --device cuda
   with an error. --precision bf16 (either device) rounds GEMM operands to bfloat16 with fp32
   sums (higan_set_precision on the CPU, higan_cuda_set_precision on the GPU, whose bf16
   operands are rounded exactly as the CPU's); tf32 is the GPU's TF32 tensor-core mode. */
#define _POSIX_C_SOURCE 200809L     /* mkdir (example_util.h) */
#define HIGAN_IMPLEMENTATION
#include "higan.h"
#ifdef HIGAN_WITH_CUDA
#  define HIGAN_CUDA_IMPLEMENTATION
#  include "higan_cuda.cuh"
#endif

#define EXAMPLE_READ_IMAGES           /* reference images */
#include "example_util.h"

#define MAX_REFS 32
#define MAX_ROWS 64

static void usage(FILE *f) {
    fprintf(f,
        "usage: generate --checkpoint CKPT (--text TEXT | --text-file FILE) STYLE -o OUT.png [options]\n"
        "       generate --init-random CKPT [--seed N] [--all]\n"
        "STYLE: --seed N | --style-image IMG --style-text WORD (repeatable: averaged) | --style-file FILE\n"
        "       | --seeds N,N,... (one block of the text per random style, stacked)\n"
        "  --checkpoint CKPT       higan safetensors checkpoint (Generator; StyleEncoder and\n"
        "                          StyleBackbone too for --style-image)\n"
        "  --text TEXT             words separated by spaces; a newline starts a new line\n"
        "  --text-file FILE        the text from a file\n"
        "  --seed N                a random style from seed N (with --init-random: the weights' seed)\n"
        "  --style-image IMG       a photo or scan of one handwritten word (dark ink on light paper)\n"
        "  --style-text WORD       what IMG shows (its number of characters sets the scale)\n"
        "  --style-file FILE       a style vector written by --save-style\n"
        "  --save-style FILE       write the style vector (safetensors, tensor \"style\")\n"
        "  --interp-steps N        N rows interpolating to a second style:\n"
        "     --seed2 N | --style2-file FILE | --style2-image IMG --style2-text WORD (repeatable)\n"
        "  -o, --output OUT.png    grayscale PNG, dark ink on white\n"
        "  --transparent           black ink on a transparent background instead\n"
        "  --width PX              wrap lines at this page width (default: no wrapping)\n"
        "  --gap PX                space between words (default 16)\n"
        "  --line-gap PX           extra space between lines (default 0)\n"
        "  --margin PX             blank border (default 8)\n"
        "  --no-baseline           align word tops instead of baselines\n"
        "  --all                   (--init-random) all seven networks, not only the deploy set\n"
        "  --device cpu|cuda       where the Generator runs (default cpu; cuda: build/generate_cuda)\n"
        "  --precision P           GEMM precision where the Generator runs: fp32 (default), bf16\n"
        "                          (bf16 operands, fp32 sums), tf32 (--device cuda only); the CPU\n"
        "                          side of a --device cuda run keeps HIGAN_PRECISION (default fp32)\n");
}

static int parse_u64(const char *s, uint64_t *out) {
    char *end;
    unsigned long long v;
    if (!s || !*s || *s == '-') return 0;
    v = strtoull(s, &end, 10);
    if (*end) return 0;
    *out = (uint64_t)v;
    return 1;
}

static int utf8_chars(const char *s) {
    int n = 0;
    for (; *s; ++s) n += ((unsigned char)*s & 0xC0) != 0x80;
    return n;
}

/* The arena for the activations. A call that overflows it stops at the first allocation
   that fails, so arena.needed is a lower bound: grow (at least doubling) and retry.
   With a device backend (be) the activations live in a second arena in device memory (data)
   and arena holds the tape's bookkeeping only. */
typedef struct { higan_arena arena, data; higan_tape tape; const higan_backend *be; } workspace;
static int workspace_init(workspace *ws, size_t bytes, size_t data_bytes, const higan_backend *be) {
    ws->be = be;
    if (higan_arena_init(&ws->arena, bytes) != HIGAN_OK) return 0;
    if (be && higan_backend_arena_init(&ws->data, be, data_bytes) != HIGAN_OK) { higan_arena_free(&ws->arena); return 0; }
    if (higan_tape_init(&ws->tape, &ws->arena, 1024) != HIGAN_OK) {
        if (be) higan_backend_arena_free(&ws->data, be);
        higan_arena_free(&ws->arena);
        return 0;
    }
    if (be) higan_tape_set_backend(&ws->tape, be, &ws->data);
    return 1;
}
static void workspace_free(workspace *ws) {
    higan_tape_free(&ws->tape);
    if (ws->be) higan_backend_arena_free(&ws->data, ws->be);
    higan_arena_free(&ws->arena);
}
static size_t grown(const higan_arena *a) {
    size_t need = a->needed + a->needed / 4;
    if (!a->overflow) return a->capacity;
    return need < 2 * a->capacity ? 2 * a->capacity : need;
}
static int workspace_grow(workspace *ws) {
    const higan_backend *be = ws->be;
    size_t host = grown(&ws->arena), data = be ? grown(&ws->data) : 0;
    if (!ws->arena.overflow && !(be && ws->data.overflow)) return 0;
    if (host > ((size_t)1 << 36) || data > ((size_t)1 << 36)) return 0;   /* 64 GB: give up */
    workspace_free(ws);
    return workspace_init(ws, host, data, be);
}

/* --device cuda: the CUDA backend, and the Generator's weights in a device mirror. */
typedef struct {
#ifdef HIGAN_WITH_CUDA
    higan_cuda cuda;
    higan_cuda_params params;
#endif
    higan_backend table;
    int on;
} device;
static int open_device(device *d, higan_model *m, higan_precision prec) {
#ifdef HIGAN_WITH_CUDA
    char name[256];
    if (!higan_cuda_available()) { fprintf(stderr, "generate: --device cuda: no CUDA device found\n"); return 0; }
    if (higan_cuda_init(&d->cuda, 0) != HIGAN_OK) { fprintf(stderr, "generate: --device cuda: %s\n", higan_last_error()); return 0; }
    d->on = 1;
    if (higan_cuda_set_precision(&d->cuda, prec) != HIGAN_OK) {
        fprintf(stderr, "generate: --device cuda: --precision: %s\n", higan_last_error());
        return 0;
    }
    higan_cuda_backend(&d->table, &d->cuda);
    if (higan_cuda_params_init(&d->cuda, &d->params, m->G.p) != HIGAN_OK ||
        higan_cuda_params_upload(&d->cuda, &d->params, m->G.p, HIGAN_CUDA_ALL) != HIGAN_OK) {
        fprintf(stderr, "generate: --device cuda: the Generator's weights: %s\n", higan_last_error());
        return 0;
    }
    higan_cuda_params_attach(&d->params, m->G.p);
    if (higan_cuda_device_name(0, name, sizeof name) == HIGAN_OK) fprintf(stderr, "generate: running on %s\n", name);
    return 1;
#else
    (void)d; (void)m; (void)prec;
    fprintf(stderr, "generate: --device cuda: this build has no CUDA backend; use build/generate_cuda "
                    "(examples/generate.c built by nvcc with -DHIGAN_WITH_CUDA)\n");
    return 0;
#endif
}
static void close_device(device *d, higan_model *m) {
#ifdef HIGAN_WITH_CUDA
    if (d->params.block) {
        higan_cuda_params_attach(NULL, m->G.p);
        higan_cuda_params_free(&d->params);
    }
    if (d->on) higan_cuda_free(&d->cuda);
#else
    (void)m;
#endif
    d->on = 0;
}

static int init_random(const char *path, uint64_t seed, int all) {
    higan_model m;
    higan_model_config cfg = higan_model_default_config(all ? HIGAN_NETS_ALL : HIGAN_NETS_DEPLOY);
    int net;
    if (higan_model_init(&m, &cfg, seed) != HIGAN_OK) { fprintf(stderr, "generate: %s\n", higan_last_error()); return 1; }
    if (higan_model_save(&m, path, NULL) != HIGAN_OK) {
        fprintf(stderr, "generate: %s\n", higan_last_error());
        higan_model_free(&m);
        return 1;
    }
    printf("wrote %s: random weights (seed %llu) for", path, (unsigned long long)seed);
    for (net = 0; net < HIGAN_NET_COUNT; ++net)
        if (cfg.nets & HIGAN_NET_BIT(net))
            printf(" %s (%lld parameters)", higan_net_name(net), (long long)higan_model_num_params(&m, net));
    printf("\n");
    higan_model_free(&m);
    return 0;
}

static char *read_file(const char *path) {
    FILE *f = fopen(path, "rb");
    char *buf = NULL;
    long n;
    if (!f) return NULL;
    if (fseek(f, 0, SEEK_END) == 0 && (n = ftell(f)) >= 0 && fseek(f, 0, SEEK_SET) == 0 &&
        (buf = (char *)malloc((size_t)n + 1)) != NULL) {
        if (fread(buf, 1, (size_t)n, f) != (size_t)n) { free(buf); buf = NULL; }
        else buf[n] = 0;
    }
    fclose(f);
    return buf;
}

/* A style source: a seed, a style file or reference images (averaged). */
typedef struct {
    int have_seed;
    uint64_t seed;
    const char *file;
    const char *images[MAX_REFS], *texts[MAX_REFS];
    int n_images, n_texts;
} style_source;
static int source_given(const style_source *s) { return s->have_seed + (s->file != NULL) + (s->n_images > 0 || s->n_texts > 0); }

/* Resolves a style source into style (G.style_dim floats). 1 on success. */
static int make_style(higan_model *m, workspace *ws, const style_source *s, const char *what, float *style) {
    int64_t dim = m->cfg.G.style_dim;
    if (s->have_seed) {
        higan_rng r;
        higan_rng_seed(&r, s->seed);
        higan_style_random(m, &r, style);
        return 1;
    }
    if (s->file) {
        int64_t d = higan_style_load(s->file, style, dim);
        if (d < 0) { fprintf(stderr, "generate: %s\n", higan_last_error()); return 0; }
        if (d != dim) {
            fprintf(stderr, "generate: %s holds a %lld-value style, the model's is %lld\n", s->file, (long long)d, (long long)dim);
            return 0;
        }
        return 1;
    } else {
        float *inputs[MAX_REFS];
        int64_t widths[MAX_REFS];
        int chars[MAX_REFS], i, ok = 1;
        higan_status st;
        for (i = 0; i < s->n_images; ++i) inputs[i] = NULL;
        for (i = 0; i < s->n_images && ok; ++i) {
            int w, h, ch, W;
            unsigned char *px = stbi_load(s->images[i], &w, &h, &ch, 0);
            if (!px) { fprintf(stderr, "generate: cannot read image '%s': %s\n", s->images[i], stbi_failure_reason()); ok = 0; break; }
            W = higan_image_to_input(px, w, h, ch, NULL, 0);
            if (W > 0 && !(inputs[i] = (float *)malloc(sizeof(float) * HIGAN_IMAGE_HEIGHT * (size_t)W))) W = HIGAN_ERR_NOMEM;
            if (W > 0) W = higan_image_to_input(px, w, h, ch, inputs[i], (int64_t)HIGAN_IMAGE_HEIGHT * W);
            stbi_image_free(px);
            if (W < 0) { fprintf(stderr, "generate: '%s': %s\n", s->images[i], higan_last_error()); ok = 0; break; }
            widths[i] = W;
            chars[i] = utf8_chars(s->texts[i]);
        }
        if (ok) {
            st = higan_style_from_images(m, &ws->tape, (const float *const *)inputs, widths, chars, s->n_images, style);
            while (st == HIGAN_ERR_NOMEM && workspace_grow(ws))
                st = higan_style_from_images(m, &ws->tape, (const float *const *)inputs, widths, chars, s->n_images, style);
            if (st != HIGAN_OK) { fprintf(stderr, "generate: %s from the reference images: %s\n", what, higan_last_error()); ok = 0; }
        }
        for (i = 0; i < s->n_images; ++i) free(inputs[i]);
        return ok;
    }
}

int main(int argc, char **argv) {
    const char *ckpt = NULL, *text = NULL, *text_file = NULL, *out_path = NULL, *init_path = NULL, *save_path = NULL;
    style_source s1, s2;
    uint64_t v64, steps = 1, seeds[MAX_ROWS];
    int n_seeds = 0, plain_seed = 0;
    int transparent = 0, all = 0, i, rc = 1, n_rows = 0;
    higan_layout_options lo = higan_layout_default_options();
    higan_model m;
    workspace ws, dws, *gws = &ws;     /* gws: where the words are generated */
    device dev;
    const char *device_name = "cpu", *precision_name = NULL;
    higan_precision prec = HIGAN_PRECISION_FP32;
    float *style = NULL, *style_b = NULL, *row_style = NULL, *canvas = NULL;
    char *text_buf = NULL;
    higan_page *pages = NULL;
    int64_t W = 0, H = 0, y, k;
    unsigned char *png = NULL;

    memset(&s1, 0, sizeof s1);
    memset(&s2, 0, sizeof s2);
    memset(&m, 0, sizeof m);
    memset(&ws, 0, sizeof ws);
    memset(&dws, 0, sizeof dws);
    memset(&dev, 0, sizeof dev);
    for (i = 1; i < argc; ++i) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        int takes = 1;
        if (!strcmp(a, "--checkpoint") || !strcmp(a, "-c")) ckpt = v;
        else if (!strcmp(a, "--text") || !strcmp(a, "-t")) text = v;
        else if (!strcmp(a, "--text-file")) text_file = v;
        else if (!strcmp(a, "--output") || !strcmp(a, "-o")) out_path = v;
        else if (!strcmp(a, "--init-random")) init_path = v;
        else if (!strcmp(a, "--save-style")) save_path = v;
        else if (!strcmp(a, "--device")) {
            if (v && strcmp(v, "cpu") != 0 && strcmp(v, "cuda") != 0) {
                fprintf(stderr, "generate: --device takes cpu or cuda, not '%s'\n", v);
                return 2;
            }
            device_name = v;
        }
        else if (!strcmp(a, "--precision")) {
            if (v && strcmp(v, "fp32") != 0 && strcmp(v, "tf32") != 0 && strcmp(v, "bf16") != 0) {
                fprintf(stderr, "generate: --precision takes fp32, tf32 or bf16, not '%s'\n", v);
                return 2;
            }
            precision_name = v;
        }
        else if (!strcmp(a, "--style-file")) s1.file = v;
        else if (!strcmp(a, "--style2-file")) s2.file = v;
        else if (!strcmp(a, "--style-image") || !strcmp(a, "--style2-image")) {
            style_source *s = a[7] == '2' ? &s2 : &s1;
            if (s->n_images == MAX_REFS) { fprintf(stderr, "generate: at most %d reference images\n", MAX_REFS); return 2; }
            if (v) s->images[s->n_images++] = v;
        } else if (!strcmp(a, "--style-text") || !strcmp(a, "--style2-text")) {
            style_source *s = a[7] == '2' ? &s2 : &s1;
            if (s->n_texts == MAX_REFS) { fprintf(stderr, "generate: at most %d reference texts\n", MAX_REFS); return 2; }
            if (v) s->texts[s->n_texts++] = v;
        } else if (!strcmp(a, "--seed") || !strcmp(a, "--seed2")) {
            style_source *s = a[6] == '2' ? &s2 : &s1;
            if (!parse_u64(v, &s->seed)) { fprintf(stderr, "generate: %s needs a non-negative integer\n", a); return 2; }
            s->have_seed = 1;
            if (a[6] != '2') plain_seed = 1;
        } else if (!strcmp(a, "--seeds")) {
            const char *p = v;
            n_seeds = 0;
            while (p && *p) {
                char *end;
                if (*p < '0' || *p > '9' || n_seeds == MAX_ROWS) { n_seeds = -1; break; }
                seeds[n_seeds++] = (uint64_t)strtoull(p, &end, 10);
                p = *end == ',' ? end + 1 : end;
                if (*end && *end != ',') { n_seeds = -1; break; }
            }
            if (n_seeds < 1) { fprintf(stderr, "generate: --seeds needs 1..%d comma-separated non-negative integers\n", MAX_ROWS); return 2; }
            s1.have_seed = 1;
            s1.seed = seeds[0];
        } else if (!strcmp(a, "--interp-steps")) {
            if (!parse_u64(v, &steps) || steps < 1 || steps > 64) { fprintf(stderr, "generate: --interp-steps needs 1..64\n"); return 2; }
        } else if (!strcmp(a, "--width") || !strcmp(a, "--gap") || !strcmp(a, "--line-gap") || !strcmp(a, "--margin")) {
            if (!parse_u64(v, &v64) || v64 > 100000) { fprintf(stderr, "generate: %s needs 0..100000 pixels\n", a); return 2; }
            if (!strcmp(a, "--width")) lo.max_width = (int64_t)v64;
            else if (!strcmp(a, "--gap")) lo.word_gap = (int64_t)v64;
            else if (!strcmp(a, "--line-gap")) lo.line_gap = (int64_t)v64;
            else lo.margin = (int64_t)v64;
        } else if (!strcmp(a, "--no-baseline")) { lo.align_baseline = 0; takes = 0; }
        else if (!strcmp(a, "--transparent")) { transparent = 1; takes = 0; }
        else if (!strcmp(a, "--all")) { all = 1; takes = 0; }
        else if (!strcmp(a, "--help") || !strcmp(a, "-h")) { usage(stdout); return 0; }
        else { fprintf(stderr, "generate: unknown argument '%s'\n", a); usage(stderr); return 2; }
        if (takes && !v) { fprintf(stderr, "generate: %s needs a value\n", a); return 2; }
        i += takes;
    }
    if (init_path) {
        if (ckpt || text || text_file || s1.file || s1.n_images || s1.n_texts || out_path || transparent || source_given(&s2)) {
            fprintf(stderr, "generate: --init-random takes only --seed and --all\n");
            return 2;
        }
        return init_random(init_path, s1.have_seed ? s1.seed : 1, all);
    }
#ifndef HIGAN_WITH_CUDA
    if (device_name && !strcmp(device_name, "cuda") && !open_device(&dev, &m, prec)) return 2;   /* the error */
#endif
    if (precision_name) {   /* where the Generator runs: the CPU's setting, or the device's (open_device) */
        prec = !strcmp(precision_name, "bf16") ? HIGAN_PRECISION_BF16
             : !strcmp(precision_name, "tf32") ? HIGAN_PRECISION_TF32 : HIGAN_PRECISION_FP32;
        if (strcmp(device_name, "cuda") != 0) {
            if (prec == HIGAN_PRECISION_TF32) {
                fprintf(stderr, "generate: --precision tf32 is for --device cuda (the CPU has fp32 and bf16)\n");
                return 2;
            }
            higan_set_precision(prec);
        }
    }
    if (!ckpt || (!text == !text_file) || !out_path) {
        fprintf(stderr, "generate: --checkpoint, one of --text / --text-file, and -o are required\n");
        usage(stderr);
        return 2;
    }
    if (s1.n_images != s1.n_texts || s2.n_images != s2.n_texts) {
        fprintf(stderr, "generate: every --style-image needs its --style-text (and --style2-image its --style2-text)\n");
        return 2;
    }
    if (source_given(&s1) != 1) {
        fprintf(stderr, "generate: give exactly one style: --seed N, --style-image IMG --style-text WORD, or --style-file FILE\n");
        return 2;
    }
    if (n_seeds && (plain_seed || steps > 1 || source_given(&s1) != 1 || s1.file || s1.n_images)) {
        fprintf(stderr, "generate: --seeds is a style source of its own (no --seed, --style-*, --interp-steps)\n");
        return 2;
    }
    if ((steps > 1) != (source_given(&s2) == 1) || source_given(&s2) > 1) {
        fprintf(stderr, "generate: --interp-steps N (N >= 2) goes with one second style: --seed2, --style2-file or --style2-image/--style2-text\n");
        return 2;
    }
    if (text_file && !(text = text_buf = read_file(text_file))) { fprintf(stderr, "generate: cannot read '%s'\n", text_file); return 1; }

    /* E and B only when a reference image needs them */
    if (higan_model_load(&m, ckpt, (s1.n_images || s2.n_images) ? HIGAN_NETS_DEPLOY : HIGAN_NET_BIT(HIGAN_NET_GENERATOR), NULL) != HIGAN_OK) {
        fprintf(stderr, "generate: %s\n", higan_last_error());
        free(text_buf);
        return 1;
    }
    n_rows = n_seeds ? n_seeds : (int)steps;
    if (!workspace_init(&ws, (size_t)128 << 20, 0, NULL)) { fprintf(stderr, "generate: %s\n", higan_last_error()); goto done; }
    if (!strcmp(device_name, "cuda")) {   /* the words on the device: its own workspace */
        if (!open_device(&dev, &m, prec)) goto done;
        if (!workspace_init(&dws, (size_t)16 << 20, (size_t)512 << 20, &dev.table)) {
            fprintf(stderr, "generate: --device cuda: %s\n", higan_last_error());
            goto done;
        }
        gws = &dws;
    }
    style = (float *)malloc(sizeof(float) * (size_t)m.cfg.G.style_dim);
    style_b = (float *)malloc(sizeof(float) * (size_t)m.cfg.G.style_dim);
    row_style = (float *)malloc(sizeof(float) * (size_t)m.cfg.G.style_dim);
    pages = (higan_page *)calloc((size_t)n_rows, sizeof(higan_page));
    if (!style || !style_b || !row_style || !pages) { fprintf(stderr, "generate: out of memory\n"); goto done; }
    if (!make_style(&m, &ws, &s1, "style", style)) goto done;
    if (!n_seeds && n_rows > 1 && !make_style(&m, &ws, &s2, "second style", style_b)) goto done;
    if (save_path) {
        if (higan_style_save(save_path, style, m.cfg.G.style_dim) != HIGAN_OK) { fprintf(stderr, "generate: %s\n", higan_last_error()); goto done; }
        printf("wrote %s: the style vector (%lld values)\n", save_path, (long long)m.cfg.G.style_dim);
    }

    /* one page per row (the rows of an interpolation, or one per seed), stacked */
    for (i = 0; i < n_rows; ++i) {
        higan_status st;
        if (n_seeds) {
            higan_rng r;
            higan_rng_seed(&r, seeds[i]);
            higan_style_random(&m, &r, row_style);
        } else if (n_rows > 1) higan_style_lerp(style, style_b, m.cfg.G.style_dim, (float)i / (float)(n_rows - 1), row_style);
        else memcpy(row_style, style, sizeof(float) * (size_t)m.cfg.G.style_dim);
        st = higan_generate_text(&m, &gws->tape, text, row_style, &lo, &pages[i]);
        while (st == HIGAN_ERR_NOMEM && workspace_grow(gws)) st = higan_generate_text(&m, &gws->tape, text, row_style, &lo, &pages[i]);
        if (st != HIGAN_OK) { fprintf(stderr, "generate: %s\n", higan_last_error()); goto done; }
        if (pages[i].width > W) W = pages[i].width;
        H += pages[i].height;
    }
    canvas = (float *)malloc(sizeof(float) * (size_t)(W * H));
    png = (unsigned char *)malloc((size_t)(W * H) * 2);
    if (!canvas || !png) { fprintf(stderr, "generate: out of memory\n"); goto done; }
    for (k = 0; k < W * H; ++k) canvas[k] = -1.0f;
    for (i = 0, y = 0; i < n_rows; y += pages[i].height, ++i)
        for (k = 0; k < pages[i].height; ++k)
            memcpy(canvas + (y + k) * W, pages[i].pixels + k * pages[i].width, sizeof(float) * (size_t)pages[i].width);
    higan_image_to_pixels(canvas, W * H, transparent, png);
    if (!stbi_write_png(out_path, (int)W, (int)H, transparent ? 2 : 1, png, (int)W * (transparent ? 2 : 1))) {
        fprintf(stderr, "generate: cannot write '%s'\n", out_path);
        goto done;
    }
    printf("wrote %s: %lld x %lld, %lld word%s on %lld line%s", out_path, (long long)W, (long long)H,
           (long long)pages[0].n_words, pages[0].n_words > 1 ? "s" : "", (long long)pages[0].n_lines,
           pages[0].n_lines > 1 ? "s" : "");
    if (n_seeds) printf(" per block, %d blocks", n_seeds);
    else if (n_rows > 1) printf(", %d interpolation rows", n_rows);
    printf(", style from %s\n", n_seeds ? "seeds" : s1.have_seed ? "a seed" : s1.file ? s1.file : s1.n_images > 1 ? "averaged reference images" : s1.images[0]);
    rc = 0;
done:
    if (pages) for (i = 0; i < n_rows; ++i) higan_page_free(&pages[i]);
    free(pages); free(style); free(style_b); free(row_style); free(canvas); free(png); free(text_buf);
    workspace_free(&ws);
    if (gws == &dws) workspace_free(&dws);
    close_device(&dev, &m);
    higan_model_free(&m);
    return rc;
}
