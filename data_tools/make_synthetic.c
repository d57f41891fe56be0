/* make_synthetic - a synthetic multi-writer handwriting dataset from handwriting fonts.

   make_synthetic -o DIR [--fonts a.ttf,b.otf | default] [--words FILE] [--per-writer N]
                  [--variants K] [--seed S] [--test-writers N] [--test-words-frac F]
                  [--caps upper|skip] [--hdf5] [--threads N] [--grid out.png] [--quiet]

   Writes DIR/train.safetensors, DIR/test.safetensors (HiGAN+'s dataset layout, see
   higan.h) and DIR/writers.tsv (each writer's font and traits). The files are
   byte-for-byte the same for the same seed, fonts and word list, whatever the thread count.
   Rendering: data_tools/synthetic.h. Fonts and licences: data_tools/README_synthetic.md.

   Build: cc -std=c99 -O2 -Wall -Wextra -I. data_tools/make_synthetic.c -o build/make_synthetic -lm
   (add -fopenmp to render on several threads). */
#define _POSIX_C_SOURCE 200809L     /* mkdir */
#include <sys/stat.h>
#include <sys/types.h>
#define HIGAN_IMPLEMENTATION
#include "higan.h"
#include "data_tools/synthetic.h"
#define STB_IMAGE_WRITE_STATIC
#define STB_IMAGE_WRITE_IMPLEMENTATION
#if defined(__GNUC__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wunused-function"
#pragma GCC diagnostic ignored "-Wsign-compare"
#pragma GCC diagnostic ignored "-Wunused-parameter"
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"
#endif
#include <stb/stb_image_write.h>
#if defined(__GNUC__)
#pragma GCC diagnostic pop
#endif

static void usage(FILE *f) {
    fprintf(f,
        "usage: make_synthetic -o DIR [options]\n"
        "  -o DIR                  output folder (created): train.safetensors, test.safetensors, writers.tsv\n"
        "  --fonts LIST            comma-separated font files, or 'default' (the Debian handwriting fonts\n"
        "                          that are installed; see data_tools/README_synthetic.md)\n"
        "  --words FILE            word list, one word a line (default %s); words of %d..%d\n"
        "                          characters inside the HiGAN+ alphabet are kept\n"
        "  --per-writer N          words per writer (default 500)\n"
        "  --variants K            writers per font, each with its own traits (default 1)\n"
        "  --seed S                seed of everything (default 1)\n"
        "  --test-writers N        writers held out of the train file, whole fonts (default 2)\n"
        "  --test-words-frac F     fraction of the words held out of the train file (default 0.05)\n"
        "  --caps upper|skip       fonts that draw lower case as capitals: write words in capitals\n"
        "                          (default) or leave those fonts out\n"
        "  --hdf5                  write train.hdf5 / test.hdf5 (needs a build with HIGAN_HDF5)\n"
        "  --threads N             render on N threads (OpenMP builds; the output never depends on it)\n"
        "  --grid FILE.png         also write a PNG of 40 words of 10 writers, black on white\n"
        "  --quiet                 no progress messages\n",
        SYN_DEFAULT_WORDS, SYN_MIN_WORD, SYN_MAX_WORD);
}

static int parse_int(const char *opt, const char *s, long lo, long hi, long *out) {
    char *end;
    long v;
    errno = 0;
    v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi) {
        fprintf(stderr, "make_synthetic: %s needs an integer in %ld..%ld, got '%s'\n", opt, lo, hi, s);
        return -1;
    }
    *out = v;
    return 0;
}

int main(int argc, char **argv) {
    syn_options o;
    syn_result r;
    const char *grid = NULL, *fonts_arg = NULL;
    char *fonts_buf = NULL;
    const char **font_list = NULL;
    int i, n_fonts = 0, rc = 1;
    long v;
    syn_options_default(&o);
    for (i = 1; i < argc; ++i) {
        const char *a = argv[i], *val = i + 1 < argc ? argv[i + 1] : NULL;
        int takes = strcmp(a, "--hdf5") && strcmp(a, "--quiet") && strcmp(a, "-h") && strcmp(a, "--help");
        if (takes && !val) { fprintf(stderr, "make_synthetic: %s needs a value\n", a); usage(stderr); return 1; }
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) { usage(stdout); return 0; }
        else if (!strcmp(a, "--hdf5")) { o.hdf5 = 1; continue; }
        else if (!strcmp(a, "--quiet")) { o.quiet = 1; continue; }
        else if (!strcmp(a, "-o")) o.out_dir = val;
        else if (!strcmp(a, "--fonts")) fonts_arg = val;
        else if (!strcmp(a, "--words")) o.words = val;
        else if (!strcmp(a, "--grid")) grid = val;
        else if (!strcmp(a, "--per-writer")) { if (parse_int(a, val, 1, 1000000, &v)) return 1; o.per_writer = (int)v; }
        else if (!strcmp(a, "--variants")) { if (parse_int(a, val, 1, 1000, &v)) return 1; o.variants = (int)v; }
        else if (!strcmp(a, "--test-writers")) { if (parse_int(a, val, 0, 30000, &v)) return 1; o.test_writers = (int)v; }
        else if (!strcmp(a, "--threads")) { if (parse_int(a, val, 1, 1024, &v)) return 1; higan_set_num_threads((int)v); }
        else if (!strcmp(a, "--seed")) {
            char *end;
            errno = 0;
            o.seed = (uint64_t)strtoull(val, &end, 10);
            if (errno || end == val || *end || val[0] == '-') {
                fprintf(stderr, "make_synthetic: --seed needs a non-negative integer, got '%s'\n", val);
                return 1;
            }
        } else if (!strcmp(a, "--test-words-frac")) {
            char *end;
            double f = strtod(val, &end);
            if (end == val || *end || !(f >= 0.0 && f < 1.0)) {
                fprintf(stderr, "make_synthetic: --test-words-frac needs a number in [0, 1), got '%s'\n", val);
                return 1;
            }
            o.test_words_frac = (float)f;
        } else if (!strcmp(a, "--caps")) {
            if (!strcmp(val, "upper")) o.caps = SYN_CAPS_UPPER;
            else if (!strcmp(val, "skip")) o.caps = SYN_CAPS_SKIP;
            else { fprintf(stderr, "make_synthetic: --caps is 'upper' or 'skip', got '%s'\n", val); return 1; }
        } else { fprintf(stderr, "make_synthetic: unknown option '%s'\n", a); usage(stderr); return 1; }
        ++i;
    }
    if (!o.out_dir) { fprintf(stderr, "make_synthetic: -o DIR is required\n"); usage(stderr); return 1; }
    if (fonts_arg && strcmp(fonts_arg, "default")) {
        char *p;
        fonts_buf = (char *)malloc(strlen(fonts_arg) + 1);
        font_list = (const char **)malloc(sizeof(char *) * (strlen(fonts_arg) + 1));
        if (!fonts_buf || !font_list) { fprintf(stderr, "make_synthetic: out of memory\n"); goto out; }
        strcpy(fonts_buf, fonts_arg);
        for (p = strtok(fonts_buf, ","); p; p = strtok(NULL, ","))
            if (*p) font_list[n_fonts++] = p;
        if (n_fonts == 0) { fprintf(stderr, "make_synthetic: --fonts lists no files\n"); goto out; }
        o.fonts = font_list; o.n_fonts = n_fonts;
    }
    {   /* the folder and its missing parents (mkdir -p) */
        char *q, *dir = (char *)malloc(strlen(o.out_dir) + 1);
        if (!dir) { fprintf(stderr, "make_synthetic: out of memory\n"); goto out; }
        strcpy(dir, o.out_dir);
        for (q = dir + 1; *q; ++q)
            if (*q == '/') { *q = 0; mkdir(dir, 0777); *q = '/'; }
        free(dir);
    }
    if (mkdir(o.out_dir, 0777) != 0 && errno != EEXIST) {
        fprintf(stderr, "make_synthetic: cannot create folder '%s': %s\n", o.out_dir, strerror(errno));
        goto out;
    }
    if (syn_generate(&o, &r) != 0) { fprintf(stderr, "make_synthetic: %s\n", syn_last_error()); goto out; }
    if (!o.quiet) {
        int64_t tw = 0, k;
        for (k = 0; k < r.train.count; ++k) tw += r.train.img_lens[k];
        fprintf(stderr, "make_synthetic: %s: %lld train words (%d writers, mean width %.0f px), %lld test words "
                "(%d held-out writers); %lld words skipped as the font cannot write them\n",
                o.out_dir, (long long)r.train.count, r.n_train_writers,
                r.train.count ? (double)tw / (double)r.train.count : 0.0, (long long)r.test.count,
                r.n_writers - r.n_train_writers, (long long)r.skipped);
    }
    if (grid) {
        uint8_t *g;
        int gw = 0, gh = 0;
        if (syn_make_grid(&r, 10, 4, &g, &gw, &gh) != 0) {
            fprintf(stderr, "make_synthetic: grid: %s\n", syn_last_error());
            syn_result_free(&r);
            goto out;
        }
        if (!stbi_write_png(grid, gw, gh, 1, g, gw)) {
            fprintf(stderr, "make_synthetic: cannot write '%s'\n", grid);
            free(g); syn_result_free(&r);
            goto out;
        }
        free(g);
        if (!o.quiet) fprintf(stderr, "make_synthetic: wrote %s (%dx%d)\n", grid, gw, gh);
    }
    syn_result_free(&r);
    rc = 0;
out:
    free(fonts_buf); free(font_list);
    return rc;
}
