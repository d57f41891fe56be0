/* generate.c - write a line of handwriting with HiGAN+ (higan.h).

   generate --checkpoint ckpt.safetensors --text "hello world"
            (--style-image ref.png --style-text "word" | --seed N) -o out.png
            [--transparent] [--gap PIXELS]
   generate --init-random ckpt.safetensors [--seed N]

   The first form loads a checkpoint (higan's safetensors, e.g. from data_tools/pth2safetensors
   or from --init-random), takes the handwriting style from a reference image of one word
   (PNG/JPEG/BMP..., with its transcription: only its length matters) or from a seed, writes
   every word of the text in that style and puts the words side by side, gap pixels apart
   (default 16), in a grayscale PNG: dark ink on white, or with --transparent black ink whose
   alpha is the ink strength. The second form writes a randomly initialised deploy checkpoint
   (Generator, StyleEncoder, StyleBackbone at the official sizes): it runs the example before
   any training exists, and its output is noise.

   The output depends only on the checkpoint, the style source and the text: the same PNG
   bytes on every run and for every thread count. The SIMD levels (HIGAN_CPU=scalar|avx2|
   avx512) round floats differently (up to ~4e-7 apart), so very rarely one pixel lands one
   gray level apart between levels. Build (from the repository root):
       cc -std=c99 -O2 -I. examples/generate.c -o build/generate -lm     (+ -fopenmp)
   stb_image / stb_image_write come from Debian's libstb-dev (/usr/include/stb). */
#define HIGAN_IMPLEMENTATION
#include "higan.h"
#include "parts/model_api.h"     /* until higan.h includes the model part */
#include "parts/model_impl.h"

#if defined(__GNUC__)
#  pragma GCC diagnostic push
#  pragma GCC diagnostic ignored "-Wunused-function"
#  pragma GCC diagnostic ignored "-Wsign-compare"
#  pragma GCC diagnostic ignored "-Wmissing-field-initializers"
#endif
#define STB_IMAGE_IMPLEMENTATION
#define STBI_FAILURE_USERMSG
#include <stb/stb_image.h>
#define STB_IMAGE_WRITE_IMPLEMENTATION
#include <stb/stb_image_write.h>
#if defined(__GNUC__)
#  pragma GCC diagnostic pop
#endif

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void usage(FILE *f) {
    fprintf(f,
        "usage: generate --checkpoint CKPT --text TEXT (--style-image IMG --style-text WORD | --seed N)\n"
        "                -o OUT.png [--transparent] [--gap PIXELS]\n"
        "       generate --init-random CKPT [--seed N]\n"
        "  --checkpoint CKPT     higan safetensors checkpoint (Generator; StyleEncoder and\n"
        "                        StyleBackbone too for --style-image)\n"
        "  --text TEXT           words separated by spaces, each written separately\n"
        "  --style-image IMG     a photo or scan of one handwritten word (dark ink on light paper)\n"
        "  --style-text WORD     what IMG shows (its number of characters sets the scale)\n"
        "  --seed N              a random style from seed N (with --init-random: the weights' seed)\n"
        "  -o, --output OUT.png  grayscale PNG, dark ink on white\n"
        "  --transparent         black ink on a transparent background instead\n"
        "  --gap PIXELS          space between words (default 16)\n");
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
   that fails, so arena.needed is a lower bound: grow (at least doubling) and retry. */
typedef struct { higan_arena arena; higan_tape tape; } workspace;
static int workspace_init(workspace *ws, size_t bytes) {
    if (higan_arena_init(&ws->arena, bytes) != HIGAN_OK) return 0;
    if (higan_tape_init(&ws->tape, &ws->arena, 1024) != HIGAN_OK) { higan_arena_free(&ws->arena); return 0; }
    return 1;
}
static void workspace_free(workspace *ws) { higan_tape_free(&ws->tape); higan_arena_free(&ws->arena); }
static int workspace_grow(workspace *ws) {
    size_t need = ws->arena.needed + ws->arena.needed / 4;
    if (!ws->arena.overflow || ws->arena.capacity >= ((size_t)1 << 36)) return 0;   /* 64 GB: give up */
    if (need < 2 * ws->arena.capacity) need = 2 * ws->arena.capacity;
    workspace_free(ws);
    return workspace_init(ws, need);
}

static int init_random(const char *path, uint64_t seed) {
    higan_model m;
    higan_model_config cfg = higan_model_default_config(HIGAN_NETS_DEPLOY);
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

int main(int argc, char **argv) {
    const char *ckpt = NULL, *text = NULL, *style_image = NULL, *style_text = NULL, *out_path = NULL;
    const char *init_path = NULL;
    uint64_t seed = 0, gap64 = 16;
    int have_seed = 0, transparent = 0, i, rc = 1;
    higan_model m;
    workspace ws;
    float *style = NULL, *canvas = NULL, **words = NULL;
    int *widths = NULL, n_words = 0, H = 0, total = 0, gap, x;
    char *text_copy = NULL, *tok, **word_text = NULL;
    unsigned char *png = NULL;

    for (i = 1; i < argc; ++i) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        int takes = 1;
        if (!strcmp(a, "--checkpoint") || !strcmp(a, "-c")) ckpt = v;
        else if (!strcmp(a, "--text") || !strcmp(a, "-t")) text = v;
        else if (!strcmp(a, "--style-image")) style_image = v;
        else if (!strcmp(a, "--style-text")) style_text = v;
        else if (!strcmp(a, "--output") || !strcmp(a, "-o")) out_path = v;
        else if (!strcmp(a, "--init-random")) init_path = v;
        else if (!strcmp(a, "--seed")) {
            if (!parse_u64(v, &seed)) { fprintf(stderr, "generate: --seed needs a non-negative integer\n"); return 2; }
            have_seed = 1;
        } else if (!strcmp(a, "--gap")) {
            if (!parse_u64(v, &gap64) || gap64 > 4096) { fprintf(stderr, "generate: --gap needs 0..4096 pixels\n"); return 2; }
        } else if (!strcmp(a, "--transparent")) { transparent = 1; takes = 0; }
        else if (!strcmp(a, "--help") || !strcmp(a, "-h")) { usage(stdout); return 0; }
        else { fprintf(stderr, "generate: unknown argument '%s'\n", a); usage(stderr); return 2; }
        if (takes && !v) { fprintf(stderr, "generate: %s needs a value\n", a); return 2; }
        i += takes;
    }
    if (init_path) {
        if (ckpt || text || style_image || style_text || out_path || transparent) {
            fprintf(stderr, "generate: --init-random takes only --seed\n");
            return 2;
        }
        return init_random(init_path, have_seed ? seed : 1);
    }
    if (!ckpt || !text || !out_path) { fprintf(stderr, "generate: --checkpoint, --text and -o are required\n"); usage(stderr); return 2; }
    if (!!style_image != !!style_text) { fprintf(stderr, "generate: --style-image and --style-text go together\n"); return 2; }
    if (!style_image == !have_seed) {
        fprintf(stderr, "generate: give either --style-image IMG --style-text WORD or --seed N\n");
        return 2;
    }
    gap = (int)gap64;

    memset(&m, 0, sizeof m);
    if (higan_model_load(&m, ckpt, style_image ? HIGAN_NETS_DEPLOY : HIGAN_NET_BIT(HIGAN_NET_GENERATOR), NULL) != HIGAN_OK) {
        fprintf(stderr, "generate: %s\n", higan_last_error());
        return 1;
    }
    if (!workspace_init(&ws, (size_t)128 << 20)) { fprintf(stderr, "generate: %s\n", higan_last_error()); higan_model_free(&m); return 1; }
    style = (float *)malloc(sizeof(float) * (size_t)m.cfg.G.style_dim);
    text_copy = (char *)malloc(strlen(text) + 1);
    words = (float **)calloc(strlen(text) + 1, sizeof(float *));
    word_text = (char **)calloc(strlen(text) + 1, sizeof(char *));
    widths = (int *)calloc(strlen(text) + 1, sizeof(int));
    if (!style || !text_copy || !words || !word_text || !widths) { fprintf(stderr, "generate: out of memory\n"); goto done; }

    /* the words (checked before any network runs) */
    strcpy(text_copy, text);
    for (tok = strtok(text_copy, " \t\r\n"); tok; tok = strtok(NULL, " \t\r\n")) {
        int W = higan_generate_word(&m, &ws.tape, tok, NULL, NULL, 0);
        if (W < 0) { fprintf(stderr, "generate: word '%s': %s\n", tok, higan_last_error()); goto done; }
        widths[n_words] = W;
        word_text[n_words] = tok;
        total += W + (n_words ? gap : 0);
        ++n_words;
    }
    if (!n_words) { fprintf(stderr, "generate: --text has no words\n"); goto done; }

    /* the style */
    if (style_image) {
        int w, h, ch, W, n_chars = utf8_chars(style_text);
        unsigned char *px = stbi_load(style_image, &w, &h, &ch, 0);
        float *input;
        higan_status st;
        if (!px) { fprintf(stderr, "generate: cannot read image '%s': %s\n", style_image, stbi_failure_reason()); goto done; }
        W = higan_image_to_input(px, w, h, ch, NULL, 0);
        input = W > 0 ? (float *)malloc(sizeof(float) * HIGAN_IMAGE_HEIGHT * (size_t)W) : NULL;
        if (W > 0 && !input) { stbi_image_free(px); fprintf(stderr, "generate: out of memory\n"); goto done; }
        if (W > 0) W = higan_image_to_input(px, w, h, ch, input, (int64_t)HIGAN_IMAGE_HEIGHT * W);
        stbi_image_free(px);
        if (W < 0) { free(input); fprintf(stderr, "generate: '%s': %s\n", style_image, higan_last_error()); goto done; }
        st = higan_style_from_image(&m, &ws.tape, input, W, n_chars, style);
        while (st == HIGAN_ERR_NOMEM && workspace_grow(&ws))
            st = higan_style_from_image(&m, &ws.tape, input, W, n_chars, style);
        free(input);
        if (st != HIGAN_OK) { fprintf(stderr, "generate: style from '%s': %s\n", style_image, higan_last_error()); goto done; }
    } else {
        higan_rng r;
        higan_rng_seed(&r, seed);
        higan_style_random(&m, &r, style);
    }

    /* every word in that style */
    for (i = 0; i < n_words; ++i) {
        int64_t n = m.cfg.G.input_nc * 16 * m.cfg.G.bottom * (int64_t)widths[i];
        int W;
        if (!(words[i] = (float *)malloc(sizeof(float) * (size_t)n))) { fprintf(stderr, "generate: out of memory\n"); goto done; }
        W = higan_generate_word(&m, &ws.tape, word_text[i], style, words[i], n);
        while (W == HIGAN_ERR_NOMEM && workspace_grow(&ws))
            W = higan_generate_word(&m, &ws.tape, word_text[i], style, words[i], n);
        if (W < 0) { fprintf(stderr, "generate: word '%s': %s\n", word_text[i], higan_last_error()); goto done; }
    }

    /* side by side on the -1 background, then to 8 bits: (1 - x) * 127.5 (ink dark) */
    H = (int)(16 * m.cfg.G.bottom);
    canvas = (float *)malloc(sizeof(float) * (size_t)H * (size_t)total);
    png = (unsigned char *)malloc((size_t)H * (size_t)total * 2);
    if (!canvas || !png) { fprintf(stderr, "generate: out of memory\n"); goto done; }
    for (i = 0; i < H * total; ++i) canvas[i] = -1.0f;
    for (i = 0, x = 0; i < n_words; x += widths[i] + gap, ++i) {
        int y;
        for (y = 0; y < H; ++y)          /* channel 0 of [input_nc, H, W] */
            memcpy(canvas + (size_t)y * total + x, words[i] + (size_t)y * widths[i], sizeof(float) * (size_t)widths[i]);
    }
    for (i = 0; i < H * total; ++i) {
        float v = canvas[i] < -1.0f ? -1.0f : canvas[i] > 1.0f ? 1.0f : canvas[i];
        if (transparent) {
            png[2 * i] = 0;                                                   /* black ink */
            png[2 * i + 1] = (unsigned char)floor((v + 1.0f) * 127.5f + 0.5f);  /* ink strength */
        } else {
            png[i] = (unsigned char)floor((1.0f - v) * 127.5f + 0.5f);
        }
    }
    if (!stbi_write_png(out_path, total, H, transparent ? 2 : 1, png, total * (transparent ? 2 : 1))) {
        fprintf(stderr, "generate: cannot write '%s'\n", out_path);
        goto done;
    }
    printf("wrote %s: %d x %d, %d word%s (", out_path, total, H, n_words, n_words > 1 ? "s" : "");
    for (i = 0; i < n_words; ++i) printf("%s%s", i ? " " : "", word_text[i]);
    printf("), style from %s\n", style_image ? style_image : "the seed");
    rc = 0;
done:
    if (words) for (i = 0; i < n_words + 1; ++i) free(words[i]);
    free(words); free(word_text); free(widths); free(text_copy); free(style); free(canvas); free(png);
    workspace_free(&ws);
    higan_model_free(&m);
    return rc;
}
