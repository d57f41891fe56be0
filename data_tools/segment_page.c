/* segment_page - cut a photo or scan of a handwritten page into word images that serve as
   style references (examples/generate.c --style-image) or as a small dataset of your own
   handwriting.

   segment_page [options] PAGE.(png|jpg|...) OUTDIR
       writes OUTDIR/word_LLL_WWW.png (line LLL, word WWW, from 0): 64 px high, dark ink on
       white, background cleaned; OUTDIR/transcriptions.txt: one "word_LLL_WWW.png<TAB>" line
       per image, type each word after its tab; OUTDIR/overview.png: the page with a box and
       a "line.word" label around every word found.
   segment_page --dataset OUTDIR/transcriptions.txt OUT.safetensors [--writer N]
       once the transcriptions are typed: the words (ink-bright, as HiGAN+ stores them) in
       the dataset container of higan.h (.hdf5 with a HIGAN_HDF5 build). Lines
       left empty are skipped.

   Algorithms: data_tools/segment.h (background normalisation, Sauvola/Otsu, deskew by
   projection profiles, lines from a centroid density, words from the gap distribution).
   Exit status: 0 ok, 1 error, 2 usage.

   Build: cc -std=c99 -O2 -Wall -Wextra -I. data_tools/segment_page.c -o build/segment_page -lm */
#define _POSIX_C_SOURCE 200809L     /* mkdir */
#include <sys/stat.h>
#include <sys/types.h>
#include <errno.h>
#define HIGAN_IMPLEMENTATION
#define HIGAN_STATIC
#include "higan.h"
#define SEG_STB_IMPLEMENTATION
#include "data_tools/segment.h"

static void usage(FILE *f) {
    fprintf(f,
        "usage: segment_page [options] PAGE.png OUTDIR\n"
        "       segment_page --dataset OUTDIR/transcriptions.txt OUT.safetensors [--writer N]\n"
        "  PAGE                  photo or scan of a handwritten page (PNG, JPEG, BMP, TGA, ...)\n"
        "  OUTDIR                created if needed: word_LLL_WWW.png (64 px high, dark ink on white),\n"
        "                        transcriptions.txt (type each word after its tab), overview.png\n"
        "  --otsu                global Otsu binarisation instead of Sauvola\n"
        "  --sauvola-k K         Sauvola k (default 0.3; larger keeps less faint ink)\n"
        "  --window N            Sauvola window in px (default: twice the text height)\n"
        "  --min-contrast C      ink is at least C darker than the paper, 0..1 (default 0.15)\n"
        "  --no-deskew           do not estimate and undo the skew\n"
        "  --max-angle DEG       skew search range (default 10)\n"
        "  --word-gap X          a gap wider than X x-heights separates words\n"
        "                        (default: from the distribution of the page's gaps)\n"
        "  --margin N            crop margin in px (default: x-height / 6, at least 3)\n"
        "  --height N            height of the word images (default 64, what HiGAN+ uses)\n"
        "  --force               overwrite an existing OUTDIR/transcriptions.txt\n"
        "  --dataset TXT OUT     build a dataset file from typed transcriptions\n"
        "  --writer N            writer id of those words (default 0)\n"
        "  -q                    print errors only\n");
}

static int parse_num(const char *opt, const char *s, double lo, double hi, double *out) {
    char *end;
    double v = strtod(s, &end);
    if (end == s || *end || !(v >= lo && v <= hi)) {
        fprintf(stderr, "segment_page: %s wants a number in [%g, %g], got '%s'\n", opt, lo, hi, s);
        return 0;
    }
    *out = v;
    return 1;
}

static int make_dir(const char *dir) {
    struct stat st;
    if (stat(dir, &st) == 0) {
        if (S_ISDIR(st.st_mode)) return 1;
        fprintf(stderr, "segment_page: '%s' exists and is not a folder\n", dir);
        return 0;
    }
    if (mkdir(dir, 0777) != 0) {
        fprintf(stderr, "segment_page: cannot create folder '%s': %s\n", dir, strerror(errno));
        return 0;
    }
    return 1;
}

static int run_dataset(const char *txt, const char *out, int wid, int quiet) {
    higan_dataset ds;
    char err[8192];
    int skipped = 0, n;
    higan_dataset_init(&ds);
    n = seg_dataset_from_transcriptions(&ds, txt, wid, &skipped, err, (int)sizeof err);
    if (n < 0) { fprintf(stderr, "segment_page: %s\n", err); higan_dataset_free(&ds); return 1; }
    if (n == 0) {
        fprintf(stderr, "segment_page: '%s' has no transcribed words yet (%d lines without a word): "
                "type each word after the tab\n", txt, skipped);
        higan_dataset_free(&ds);
        return 1;
    }
    if (higan_dataset_save(&ds, out) != HIGAN_OK) {
        fprintf(stderr, "segment_page: %s\n", higan_last_error());
        higan_dataset_free(&ds);
        return 1;
    }
    if (!quiet) {
        printf("%s: %d words of writer %d (%lld columns)", out, n, wid, (long long)ds.total_width);
        if (skipped) printf("; %d lines without a transcription skipped", skipped);
        printf("\n");
    }
    higan_dataset_free(&ds);
    return 0;
}

int main(int argc, char **argv) {
    const char *page = NULL, *outdir = NULL, *ds_txt = NULL, *ds_out = NULL;
    int i, quiet = 0, force = 0, height = 64, wid = 0, rc = 1, w, h, l;
    float scale = 1.0f, *gray;
    char err[8192];
    seg_params p;
    seg_result r;
    double v;
    seg_params_default(&p);
    for (i = 1; i < argc; ++i) {
        const char *a = argv[i];
        int more = i + 1 < argc;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) { usage(stdout); return 0; }
        else if (!strcmp(a, "-q")) quiet = 1;
        else if (!strcmp(a, "--otsu")) p.binarize = SEG_OTSU;
        else if (!strcmp(a, "--no-deskew")) p.deskew = 0;
        else if (!strcmp(a, "--force")) force = 1;
        else if (!strcmp(a, "--sauvola-k") && more) { if (!parse_num(a, argv[++i], 0.01, 1.0, &v)) return 2; p.sauvola_k = (float)v; }
        else if (!strcmp(a, "--window") && more) { if (!parse_num(a, argv[++i], 3, 4001, &v)) return 2; p.window = (int)v; }
        else if (!strcmp(a, "--min-contrast") && more) { if (!parse_num(a, argv[++i], 0.01, 0.9, &v)) return 2; p.min_contrast = (float)v; }
        else if (!strcmp(a, "--max-angle") && more) { if (!parse_num(a, argv[++i], 0, 45, &v)) return 2; p.max_angle = (float)v; }
        else if (!strcmp(a, "--word-gap") && more) { if (!parse_num(a, argv[++i], 0.01, 100, &v)) return 2; p.word_gap = (float)v; }
        else if (!strcmp(a, "--margin") && more) { if (!parse_num(a, argv[++i], 0, 1000, &v)) return 2; p.margin = (int)v; }
        else if (!strcmp(a, "--height") && more) { if (!parse_num(a, argv[++i], 8, 1024, &v)) return 2; height = (int)v; }
        else if (!strcmp(a, "--writer") && more) { if (!parse_num(a, argv[++i], -32768, 32767, &v)) return 2; wid = (int)v; }
        else if (!strcmp(a, "--dataset") && i + 2 < argc) { ds_txt = argv[++i]; ds_out = argv[++i]; }
        else if (a[0] == '-' && a[1]) { fprintf(stderr, "segment_page: unknown or incomplete option '%s'\n", a); usage(stderr); return 2; }
        else if (!page) page = a;
        else if (!outdir) outdir = a;
        else { fprintf(stderr, "segment_page: unexpected argument '%s'\n", a); usage(stderr); return 2; }
    }
    if (ds_txt) {
        if (page) { fprintf(stderr, "segment_page: --dataset takes no page\n"); return 2; }
        return run_dataset(ds_txt, ds_out, wid, quiet);
    }
    if (!page || !outdir) { usage(stderr); return 2; }

    gray = seg_load_gray(page, &w, &h, &scale, err, (int)sizeof err);
    if (!gray) { fprintf(stderr, "segment_page: %s\n", err); return 1; }
    if (!quiet && scale != 1.0f)
        printf("%s: downscaled to %dx%d (the long side is capped at %d px)\n", page, w, h, SEG_MAX_SIDE);
    if (seg_segment(&r, gray, w, h, &p) != 0) {
        fprintf(stderr, "segment_page: '%s': %s\n", page, r.error);
        goto done;
    }
    if (!quiet) {
        printf("%s: %dx%d, skew %.2f deg, %d lines, %d words (x-height %.0f px, stroke %.0f px, "
               "word gaps > %.1f px, %s)\n", page, w, h, r.angle, r.nlines, r.nwords, r.xheight, r.stroke,
               r.gap_threshold, p.binarize == SEG_OTSU ? "Otsu" : "Sauvola");
        for (l = 0; l < r.nlines; ++l) {
            int n = 0, k;
            for (k = 0; k < r.nwords; ++k) n += r.words[k].line == l;
            printf("  line %d: %d words\n", l, n);
        }
    }
    if (!make_dir(outdir)) goto done;
    if (seg_write_outputs(&r, gray, outdir, height, force, err, (int)sizeof err) != 0) {
        fprintf(stderr, "segment_page: %s\n", err);
        goto done;
    }
    for (i = 0; i < r.nwords; ++i) {
        const seg_word *wd = &r.words[i];
        int ow = (int)((double)(wd->x1 - wd->x0) * height / (wd->y1 - wd->y0) + 0.5);
        if (ow > 4096)
            fprintf(stderr, "segment_page: note: word_%03d_%03d.png is %d px wide (over the dataset's 4096): "
                    "several words merged? try --word-gap\n", wd->line, wd->index, ow);
    }
    if (!quiet)
        printf("wrote %d word images, %s/transcriptions.txt and %s/overview.png\n"
               "next: type each word after its tab in %s/transcriptions.txt (delete lines of bad crops),\n"
               "      then: segment_page --dataset %s/transcriptions.txt mywords.safetensors\n",
               r.nwords, outdir, outdir, outdir, outdir);
    rc = 0;
done:
    seg_free(&r);
    free(gray);
    return rc;
}
