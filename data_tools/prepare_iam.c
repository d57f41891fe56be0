/* prepare_iam - builds HiGAN+'s word datasets from the official IAM Handwriting Database.

   usage: prepare_iam IAM_ROOT [options]      (prepare_iam --help lists the options)

   Input (the layout of the IAM distribution, https://fki.tic.heia-fr.ch/databases/iam-handwriting-database):
     IAM_ROOT/ascii/words.txt    "a01-000u-00-00 ok 154 408 768 27 51 AT A": word id, segmentation
                                 result ok/err, graylevel, x y w h, grammatical tag, transcription
                                 (field 9 onwards); lines starting with '#' are comments
     IAM_ROOT/ascii/forms.txt    "a01-000u 000 2 prt 7 5 52 36": form id, writer id, ...
     IAM_ROOT/words/a01/a01-000u/a01-000u-00-00.png
   Output (-o DIR, default .): trnval.safetensors and test.safetensors (HiGAN+'s
   trnvalset/testset_words64_OrgSz layout; see higan.h), optionally
   train.safetensors and val.safetensors (--val). A name ending in .hdf5 is written with
   libhdf5 (builds with make HDF5=1).

   Each word: 'err' lines skipped (counted; --keep-err keeps them), transcriptions with a
   character outside HiGAN+'s 80-symbol alphabet skipped (counted and listed), the PNG read
   as 8-bit grayscale, resized to height 64 keeping the aspect ratio (width round(w*64/h),
   at least 1; area average on an axis that shrinks, bilinear with half-pixel centres on an
   axis that grows, like OpenCV's INTER_AREA / INTER_LINEAR), then inverted (255 - v: ink
   bright on 0). The writer id is the form's writer in forms.txt, stored as is (HiGAN+'s
   loader subtracts the minimum). A missing or unreadable PNG, an empty image or a result
   wider than HIGAN_DATASET_MAX_WIDTH is reported by file name and skipped (--strict: fatal).

   Split (by writer, so no writer is in both sets):
     --split-dir DIR     IAM's "large writer independent text line recognition task" lists:
                         DIR/trainset.txt, validationset1.txt, validationset2.txt (train+val)
                         and testset.txt (test), one line id (a01-000u-00) or form id per
                         line. These give 372 train+val and 128 test writers, the counts of
                         HiGAN+'s configs. Words of lines in no list are skipped (counted).
     --test-writers FILE writer ids (integers, whitespace separated, '#' comments) of the test
                         set; every other writer is train+val.
     default             --test-frac F (default 0.434) of the writers: the writer ids that occur
                         in words.txt (with a form in forms.txt), sorted ascending, shuffled by
                         Fisher-Yates with higan_rng seeded --seed (default 1; j = u64 % (i+1)
                         for i = n-1 .. 1); the first round(F * n) are test. With IAM's 657
                         writers that is 285 test and 372 train+val writers.
   Validation (--val): train.safetensors and val.safetensors are written as well (trnval is
   their union, the set HiGAN+ trains on). With --split-dir val = validationset1 + 2;
   otherwise round(--val-frac F * n) (default 0.1) of the train+val writers, sorted and
   shuffled in the same way with seed + 1.
   Records keep the order of words.txt. */
#ifndef _POSIX_C_SOURCE
#define _POSIX_C_SOURCE 200809L
#endif
#ifndef HIGAN_IMPLEMENTATION
#define HIGAN_IMPLEMENTATION
#endif
#include "higan.h"
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#ifdef _WIN32
#include <direct.h>
#define piam_mkdir(p) _mkdir(p)
#else
#define piam_mkdir(p) mkdir(p, 0777)
#endif
#define STB_IMAGE_IMPLEMENTATION
#define STBI_ONLY_PNG
#include <stb/stb_image.h>

typedef struct prepare_iam_opts {
    const char *root;              /* IAM_ROOT */
    const char *words_path;        /* default ROOT/ascii/words.txt */
    const char *forms_path;        /* default ROOT/ascii/forms.txt */
    const char *images_dir;        /* default ROOT/words */
    const char *out_dir;           /* default "." */
    const char *trnval_name, *test_name, *train_name, *val_name;
    const char *split_dir, *test_writers;
    double test_frac, val_frac;
    uint64_t seed;
    int val, keep_err, strict, quiet;
} prepare_iam_opts;

typedef struct prepare_iam_stats {
    long lines, comments, malformed;            /* words.txt */
    long ok, err, err_skipped;                  /* segmentation flags */
    long bad_alphabet, no_writer, not_in_split; /* label / writer / split filters */
    long missing, unreadable, empty, too_wide;  /* image problems */
    long trnval, test, train, val;              /* words written */
    int writers, writers_trnval, writers_test, writers_val;
} prepare_iam_stats;

static void piam_default_opts(prepare_iam_opts *o) {
    memset(o, 0, sizeof *o);
    o->out_dir = ".";
    o->trnval_name = "trnval.safetensors";
    o->test_name = "test.safetensors";
    o->train_name = "train.safetensors";
    o->val_name = "val.safetensors";
    o->test_frac = 0.434;
    o->val_frac = 0.1;
    o->seed = 1;
}

/* ---- small helpers --------------------------------------------------------------------- */
/* Reads one line (any length) into *buf without the newline / CR. 0 at EOF. */
static int piam_getline(FILE *f, char **buf, size_t *cap) {
    size_t len = 0;
    int c;
    if (!*buf) {
        *cap = 256;
        if (!(*buf = (char *)malloc(*cap))) return -1;
    }
    while ((c = fgetc(f)) != EOF) {
        if (c == '\n') break;
        if (len + 1 >= *cap) {
            char *q = (char *)realloc(*buf, *cap * 2);
            if (!q) return -1;
            *buf = q;
            *cap *= 2;
        }
        (*buf)[len++] = (char)c;
    }
    if (c == EOF && len == 0) return 0;
    while (len > 0 && ((*buf)[len - 1] == '\r')) --len;
    (*buf)[len] = 0;
    return 1;
}
static char *piam_strdup(const char *s) {
    size_t n = strlen(s) + 1;
    char *p = (char *)malloc(n);
    if (p) memcpy(p, s, n);
    return p;
}
static char *piam_join(const char *a, const char *b) {
    size_t n = strlen(a), m = strlen(b);
    char *p = (char *)malloc(n + m + 2);
    if (!p) return NULL;
    memcpy(p, a, n);
    p[n] = '/';
    memcpy(p + n + 1, b, m + 1);
    return p;
}
static int piam_is_space(char c) { return c == ' ' || c == '\t'; }
/* Splits s in place into at most max whitespace-separated fields; the last field keeps the
   rest of the line (trimmed). Returns the field count. */
static int piam_fields(char *s, char **f, int max) {
    int n = 0;
    while (*s && n < max) {
        while (piam_is_space(*s)) ++s;
        if (!*s) break;
        f[n++] = s;
        if (n == max) {
            size_t len = strlen(s);
            while (len > 0 && piam_is_space(s[len - 1])) s[--len] = 0;
            break;
        }
        while (*s && !piam_is_space(*s)) ++s;
        if (*s) *s++ = 0;
    }
    return n;
}
static int piam_cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }
static int piam_cmp_int(const void *a, const void *b) {
    int x = *(const int *)a, y = *(const int *)b;
    return x < y ? -1 : x > y;
}
/* Copies the first k '-'-separated parts of id into out (cap bytes). 0 if id has fewer. */
static int piam_prefix(const char *id, int k, char *out, size_t cap) {
    size_t i;
    int parts = 1;
    for (i = 0; id[i]; ++i) {
        if (id[i] == '-' && parts++ == k) break;
    }
    if (parts < k || i >= cap) return 0;
    memcpy(out, id, i);
    out[i] = 0;
    return 1;
}

/* ---- image: load, resize to height 64, invert -------------------------------------------- */
/* Taps of one axis: dst sample j reads src[start[j] .. start[j] + n[j]) with weights
   w[j * maxt ..]. Area average when shrinking (S > D), bilinear with half-pixel centres when
   growing or equal (S <= D; identity when S == D). */
typedef struct { int *start, *n; double *w; int maxt; } piam_taps;
static void piam_taps_free(piam_taps *t) { free(t->start); free(t->n); free(t->w); }
static int piam_taps_make(piam_taps *t, int S, int D) {
    int j;
    double scale = (double)S / (double)D;
    t->maxt = S > D ? (int)ceil(scale) + 2 : 2;
    t->start = (int *)malloc(sizeof(int) * (size_t)D);
    t->n = (int *)malloc(sizeof(int) * (size_t)D);
    t->w = (double *)malloc(sizeof(double) * (size_t)D * (size_t)t->maxt);
    if (!t->start || !t->n || !t->w) { piam_taps_free(t); return 0; }
    for (j = 0; j < D; ++j) {
        double *w = t->w + (size_t)j * (size_t)t->maxt;
        if (S > D) {
            double x0 = j * scale, x1 = (j + 1) * scale;
            int s0 = (int)floor(x0), s, k = 0;
            if (x1 > S) x1 = S;
            for (s = s0; s < S && s < x1; ++s) {
                double lo = s > x0 ? s : x0, hi = s + 1 < x1 ? s + 1 : x1;
                if (hi > lo && k < t->maxt) w[k++] = (hi - lo) / scale;
                else if (k == 0) ++s0;   /* zero overlap at the left edge */
            }
            t->start[j] = s0;
            t->n[j] = k;
        } else {
            double f = (j + 0.5) * scale - 0.5;
            int i0;
            if (f < 0) f = 0;
            i0 = (int)floor(f);
            if (i0 >= S - 1) { i0 = S - 1; f = i0; }
            t->start[j] = i0;
            if (f - i0 > 0) { t->n[j] = 2; w[0] = 1.0 - (f - i0); w[1] = f - i0; }
            else { t->n[j] = 1; w[0] = 1.0; }
        }
    }
    return 1;
}
/* src [h][w] -> dst [64][nw], inverted. 0 on out of memory. */
static int piam_resize_invert(const uint8_t *src, int w, int h, uint8_t *dst, int nw) {
    piam_taps tx, ty;
    double *tmp;
    int x, y, k;
    memset(&tx, 0, sizeof tx);
    memset(&ty, 0, sizeof ty);
    tmp = (double *)malloc(sizeof(double) * (size_t)h * (size_t)nw);
    if (!tmp || !piam_taps_make(&tx, w, nw) || !piam_taps_make(&ty, h, HIGAN_DATASET_HEIGHT)) {
        free(tmp); piam_taps_free(&tx); piam_taps_free(&ty);
        return 0;
    }
    for (y = 0; y < h; ++y)               /* horizontal pass: [h][w] -> [h][nw] */
        for (x = 0; x < nw; ++x) {
            const double *wt = tx.w + (size_t)x * (size_t)tx.maxt;
            const uint8_t *row = src + (size_t)y * (size_t)w + tx.start[x];
            double acc = 0;
            for (k = 0; k < tx.n[x]; ++k) acc += wt[k] * row[k];
            tmp[(size_t)y * (size_t)nw + x] = acc;
        }
    for (y = 0; y < HIGAN_DATASET_HEIGHT; ++y)   /* vertical pass: [h][nw] -> [64][nw] */
        for (x = 0; x < nw; ++x) {
            const double *wt = ty.w + (size_t)y * (size_t)ty.maxt;
            double acc = 0;
            int v;
            for (k = 0; k < ty.n[y]; ++k) acc += wt[k] * tmp[(size_t)(ty.start[y] + k) * (size_t)nw + x];
            v = (int)floor(acc + 0.5);
            v = v < 0 ? 0 : v > 255 ? 255 : v;
            dst[(size_t)y * (size_t)nw + x] = (uint8_t)(255 - v);
        }
    free(tmp);
    piam_taps_free(&tx);
    piam_taps_free(&ty);
    return 1;
}

/* ---- tables ------------------------------------------------------------------------------ */
typedef struct { char *form; int wid; } piam_form;
static int piam_cmp_form(const void *a, const void *b) {
    return strcmp(((const piam_form *)a)->form, ((const piam_form *)b)->form);
}
typedef struct { char *id, *text; int ok, line_no, wid, split; } piam_word;   /* split: 0 none, 1 train, 2 val, 3 test */
enum { PIAM_NONE = 0, PIAM_TRAIN = 1, PIAM_VAL = 2, PIAM_TEST = 3 };

typedef struct { char **v; int n, cap; } piam_strs;
static int piam_strs_push(piam_strs *s, const char *x) {
    if (s->n == s->cap) {
        int nc = s->cap ? s->cap * 2 : 256;
        char **q = (char **)realloc(s->v, sizeof(char *) * (size_t)nc);
        if (!q) return 0;
        s->v = q;
        s->cap = nc;
    }
    return (s->v[s->n] = piam_strdup(x)) != NULL ? (++s->n, 1) : 0;
}
static void piam_strs_free(piam_strs *s) {
    int i;
    for (i = 0; i < s->n; ++i) free(s->v[i]);
    free(s->v);
    memset(s, 0, sizeof *s);
}
static int piam_strs_has(const piam_strs *s, const char *x) {
    return s->n > 0 && bsearch(&x, s->v, (size_t)s->n, sizeof(char *), piam_cmp_str) != NULL;
}
/* Reads whitespace-separated tokens of a list file ('#' starts a comment line). */
static int piam_read_list(const char *path, piam_strs *out) {
    FILE *f = fopen(path, "r");
    char *line = NULL, *tok[1];
    size_t cap = 0;
    int r;
    if (!f) { fprintf(stderr, "prepare_iam: cannot open '%s': %s\n", path, strerror(errno)); return 0; }
    while ((r = piam_getline(f, &line, &cap)) > 0) {
        char *s = line;
        if (line[0] == '#') continue;
        for (;;) {
            while (piam_is_space(*s)) ++s;
            if (!*s) break;
            tok[0] = s;
            while (*s && !piam_is_space(*s)) ++s;
            if (*s) *s++ = 0;
            if (!piam_strs_push(out, tok[0])) { r = -1; break; }
        }
        if (r < 0) break;
    }
    free(line);
    fclose(f);
    if (r < 0) { fprintf(stderr, "prepare_iam: out of memory reading '%s'\n", path); return 0; }
    if (out->n > 1) qsort(out->v, (size_t)out->n, sizeof(char *), piam_cmp_str);
    return 1;
}
static int piam_parse_int(const char *s, int *v) {
    char *end;
    long x;
    errno = 0;
    x = strtol(s, &end, 10);
    if (errno || end == s || *end || x < -32768 || x > 32767) return 0;
    *v = (int)x;
    return 1;
}

/* Reports a skipped record (the first 20 of each kind, then only counts). */
static void piam_skip(const prepare_iam_opts *o, long *counter, const char *what, const char *id, const char *detail) {
    ++*counter;
    if (o->quiet) return;
    if (*counter <= 20) fprintf(stderr, "prepare_iam: skipped %s: %s%s%s\n", id, what, detail ? ": " : "", detail ? detail : "");
    else if (*counter == 21) fprintf(stderr, "prepare_iam: (more '%s' records skipped; see the summary)\n", what);
}

/* Seeded Fisher-Yates shuffle of ascending ids (the documented split rule). */
static void piam_shuffle(int *v, int n, uint64_t seed) {
    higan_rng r;
    int i;
    higan_rng_seed(&r, seed);
    for (i = n - 1; i >= 1; --i) {
        int j = (int)(higan_rng_u64(&r) % (uint64_t)(i + 1)), t = v[i];
        v[i] = v[j];
        v[j] = t;
    }
}
static int piam_in(const int *v, int n, int x) {
    return n > 0 && bsearch(&x, v, (size_t)n, sizeof(int), piam_cmp_int) != NULL;
}

static int piam_save(const higan_dataset *ds, const char *dir, const char *name, const char *what, long n,
                     int writers, int quiet) {
    char *path = piam_join(dir, name);
    int ok;
    if (!path) { fprintf(stderr, "prepare_iam: out of memory\n"); return 0; }
    ok = higan_dataset_save(ds, path) == HIGAN_OK;
    if (!ok) fprintf(stderr, "prepare_iam: %s\n", higan_last_error());
    else if (!quiet) printf("%-7s %7ld words, %4d writers -> %s\n", what, n, writers, path);
    free(path);
    return ok;
}

/* ---- the preparation ---------------------------------------------------------------------- */
static int prepare_iam_run(const prepare_iam_opts *o, prepare_iam_stats *st) {
    char *words_path = NULL, *forms_path = NULL, *images_dir = NULL, *line = NULL;
    size_t cap = 0;
    FILE *f = NULL;
    piam_form *forms = NULL;
    int n_forms = 0, cap_forms = 0;
    piam_word *words = NULL;
    long n_words = 0, cap_words = 0, i;
    int *writers = NULL, n_writers = 0, *test_w = NULL, n_test = 0, *val_w = NULL, n_val = 0;
    piam_strs trn_lines, val_lines, test_lines, test_list;
    higan_dataset ds_trnval, ds_test, ds_train, ds_val;
    uint8_t *img64 = NULL;
    int rc = 1, r;
    memset(st, 0, sizeof *st);
    memset(&trn_lines, 0, sizeof trn_lines);
    memset(&val_lines, 0, sizeof val_lines);
    memset(&test_lines, 0, sizeof test_lines);
    memset(&test_list, 0, sizeof test_list);
    higan_dataset_init(&ds_trnval);
    higan_dataset_init(&ds_test);
    higan_dataset_init(&ds_train);
    higan_dataset_init(&ds_val);
    if (!o->root && (!o->words_path || !o->forms_path || !o->images_dir)) {
        fprintf(stderr, "prepare_iam: no IAM root directory given\n");
        return 1;
    }
    words_path = o->words_path ? piam_strdup(o->words_path) : piam_join(o->root, "ascii/words.txt");
    forms_path = o->forms_path ? piam_strdup(o->forms_path) : piam_join(o->root, "ascii/forms.txt");
    images_dir = o->images_dir ? piam_strdup(o->images_dir) : piam_join(o->root, "words");
    img64 = (uint8_t *)malloc((size_t)HIGAN_DATASET_HEIGHT * HIGAN_DATASET_MAX_WIDTH);
    if (!words_path || !forms_path || !images_dir || !img64) { fprintf(stderr, "prepare_iam: out of memory\n"); goto done; }
    if (o->test_frac < 0 || o->test_frac > 1 || o->val_frac < 0 || o->val_frac > 1) {
        fprintf(stderr, "prepare_iam: --test-frac and --val-frac must be in [0, 1]\n");
        goto done;
    }

    /* forms.txt: form id -> writer id */
    if (!(f = fopen(forms_path, "r"))) { fprintf(stderr, "prepare_iam: cannot open '%s': %s\n", forms_path, strerror(errno)); goto done; }
    {
        long line_no = 0;
        while ((r = piam_getline(f, &line, &cap)) > 0) {
            char *fl[3];
            int wid, nf;
            ++line_no;
            if (line[0] == '#') continue;
            nf = piam_fields(line, fl, 3);   /* form id, writer id, rest */
            if (nf == 0) continue;
            if (nf < 2 || !piam_parse_int(fl[1], &wid)) {
                if (!o->quiet || o->strict)
                    fprintf(stderr, "prepare_iam: %s:%ld: malformed line (expected 'form-id writer-id ...')\n", forms_path, line_no);
                if (o->strict) goto done;
                continue;
            }
            if (n_forms == cap_forms) {
                int nc = cap_forms ? cap_forms * 2 : 1024;
                piam_form *q = (piam_form *)realloc(forms, sizeof *forms * (size_t)nc);
                if (!q) { r = -1; break; }
                forms = q;
                cap_forms = nc;
            }
            if (!(forms[n_forms].form = piam_strdup(fl[0]))) { r = -1; break; }
            forms[n_forms++].wid = wid;
        }
        if (r < 0) { fprintf(stderr, "prepare_iam: out of memory reading '%s'\n", forms_path); goto done; }
    }
    fclose(f);
    f = NULL;
    if (n_forms > 1) qsort(forms, (size_t)n_forms, sizeof *forms, piam_cmp_form);

    /* words.txt */
    if (!(f = fopen(words_path, "r"))) { fprintf(stderr, "prepare_iam: cannot open '%s': %s\n", words_path, strerror(errno)); goto done; }
    {
        long line_no = 0;
        while ((r = piam_getline(f, &line, &cap)) > 0) {
            char *fl[9];
            int nf;
            piam_word *w;
            ++line_no;
            ++st->lines;
            if (line[0] == '#') { ++st->comments; continue; }
            nf = piam_fields(line, fl, 9);
            if (nf == 0) { ++st->comments; continue; }
            if (nf < 9 || (strcmp(fl[1], "ok") != 0 && strcmp(fl[1], "err") != 0)) {
                ++st->malformed;
                if (!o->quiet || o->strict) fprintf(stderr, "prepare_iam: %s:%ld: malformed line (expected 9 fields: id ok|err graylevel x y w h tag text)\n",
                        words_path, line_no);
                if (o->strict) goto done;
                continue;
            }
            if (n_words == cap_words) {
                long nc = cap_words ? cap_words * 2 : 4096;
                piam_word *q = (piam_word *)realloc(words, sizeof *words * (size_t)nc);
                if (!q) { r = -1; break; }
                words = q;
                cap_words = nc;
            }
            w = &words[n_words];
            w->id = piam_strdup(fl[0]);
            w->text = piam_strdup(fl[8]);
            if (!w->id || !w->text) { free(w->id); free(w->text); r = -1; break; }
            w->ok = !strcmp(fl[1], "ok");
            w->line_no = (int)line_no;
            w->wid = -1000000;
            w->split = PIAM_NONE;
            ++n_words;
            if (w->ok) ++st->ok; else ++st->err;
        }
        if (r < 0) { fprintf(stderr, "prepare_iam: out of memory reading '%s'\n", words_path); goto done; }
    }
    fclose(f);
    f = NULL;

    /* writer of each word; the writer list */
    writers = (int *)malloc(sizeof(int) * (size_t)(n_words ? n_words : 1));
    if (!writers) { fprintf(stderr, "prepare_iam: out of memory\n"); goto done; }
    for (i = 0; i < n_words; ++i) {
        char form[128];
        piam_form key, *hit = NULL;
        if (piam_prefix(words[i].id, 2, form, sizeof form)) {
            key.form = form;
            key.wid = 0;
            hit = n_forms ? (piam_form *)bsearch(&key, forms, (size_t)n_forms, sizeof *forms, piam_cmp_form) : NULL;
        }
        if (hit) { words[i].wid = hit->wid; writers[n_writers++] = hit->wid; }
    }
    if (n_writers > 1) qsort(writers, (size_t)n_writers, sizeof(int), piam_cmp_int);
    {
        int a, b = 0;
        for (a = 0; a < n_writers; ++a) if (b == 0 || writers[a] != writers[b - 1]) writers[b++] = writers[a];
        n_writers = b;
    }
    st->writers = n_writers;

    /* split */
    if (o->split_dir) {
        static const char *const names[4] = {"trainset.txt", "validationset1.txt", "validationset2.txt", "testset.txt"};
        piam_strs *dst[4];
        int k;
        dst[0] = &trn_lines; dst[1] = &val_lines; dst[2] = &val_lines; dst[3] = &test_lines;
        for (k = 0; k < 4; ++k) {
            char *p = piam_join(o->split_dir, names[k]);
            int ok = p && piam_read_list(p, dst[k]);
            free(p);
            if (!ok) goto done;
        }
        for (i = 0; i < n_words; ++i) {
            char ln[128], form[128];
            int has_l = piam_prefix(words[i].id, 3, ln, sizeof ln), has_f = piam_prefix(words[i].id, 2, form, sizeof form);
            if ((has_l && piam_strs_has(&test_lines, ln)) || (has_f && piam_strs_has(&test_lines, form))) words[i].split = PIAM_TEST;
            else if ((has_l && piam_strs_has(&val_lines, ln)) || (has_f && piam_strs_has(&val_lines, form))) words[i].split = PIAM_VAL;
            else if ((has_l && piam_strs_has(&trn_lines, ln)) || (has_f && piam_strs_has(&trn_lines, form))) words[i].split = PIAM_TRAIN;
        }
    } else {
        int *order = (int *)malloc(sizeof(int) * (size_t)(n_writers ? n_writers : 1)), k, n_trnval = 0;
        if (!order) { fprintf(stderr, "prepare_iam: out of memory\n"); goto done; }
        test_w = (int *)malloc(sizeof(int) * (size_t)(n_writers ? n_writers : 1));
        val_w = (int *)malloc(sizeof(int) * (size_t)(n_writers ? n_writers : 1));
        if (!test_w || !val_w) { free(order); fprintf(stderr, "prepare_iam: out of memory\n"); goto done; }
        if (o->test_writers) {
            if (!piam_read_list(o->test_writers, &test_list)) { free(order); goto done; }
            for (k = 0; k < test_list.n; ++k) {
                int wid;
                if (!piam_parse_int(test_list.v[k], &wid)) {
                    fprintf(stderr, "prepare_iam: %s: '%s' is not a writer id\n", o->test_writers, test_list.v[k]);
                    free(order);
                    goto done;
                }
                if (!piam_in(writers, n_writers, wid)) {
                    if (!o->quiet) fprintf(stderr, "prepare_iam: note: test writer %d (%s) has no words\n", wid, o->test_writers);
                    continue;
                }
                if (!piam_in(test_w, n_test, wid)) {
                    test_w[n_test++] = wid;
                    qsort(test_w, (size_t)n_test, sizeof(int), piam_cmp_int);
                }
            }
        } else {
            memcpy(order, writers, sizeof(int) * (size_t)n_writers);
            piam_shuffle(order, n_writers, o->seed);
            n_test = (int)floor(o->test_frac * n_writers + 0.5);
            memcpy(test_w, order, sizeof(int) * (size_t)n_test);
            if (n_test > 1) qsort(test_w, (size_t)n_test, sizeof(int), piam_cmp_int);
        }
        /* validation writers among train+val */
        for (k = 0; k < n_writers; ++k) if (!piam_in(test_w, n_test, writers[k])) order[n_trnval++] = writers[k];
        if (o->val) {
            piam_shuffle(order, n_trnval, o->seed + 1);
            n_val = (int)floor(o->val_frac * n_trnval + 0.5);
            memcpy(val_w, order, sizeof(int) * (size_t)n_val);
            if (n_val > 1) qsort(val_w, (size_t)n_val, sizeof(int), piam_cmp_int);
        }
        free(order);
        for (i = 0; i < n_words; ++i) {
            if (words[i].wid == -1000000) continue;
            words[i].split = piam_in(test_w, n_test, words[i].wid) ? PIAM_TEST :
                             piam_in(val_w, n_val, words[i].wid) ? PIAM_VAL : PIAM_TRAIN;
        }
    }

    /* the words */
    for (i = 0; i < n_words; ++i) {
        piam_word *w = &words[i];
        char form[128], top[128], rel[512], *path = NULL, detail[300];
        int codes[512], iw, ih, comp, nw;
        uint8_t *pix;
        FILE *probe;
        higan_dataset *dst = NULL, *dst2 = NULL;
        if (!w->ok && !o->keep_err) { ++st->err_skipped; continue; }
        if (higan_text_encode(w->text, codes, 512) < 0) {
            snprintf(detail, sizeof detail, "'%.100s': %.180s", w->text, higan_last_error());
            piam_skip(o, &st->bad_alphabet, "label outside the alphabet", w->id, detail);
            continue;
        }
        if (w->wid == -1000000) {
            if (o->strict) { fprintf(stderr, "prepare_iam: %s (%s:%d): form not in %s\n", w->id, words_path, w->line_no, forms_path); goto done; }
            piam_skip(o, &st->no_writer, "form not in forms.txt", w->id, NULL);
            continue;
        }
        if (w->split == PIAM_NONE) { ++st->not_in_split; continue; }
        if (!piam_prefix(w->id, 1, top, sizeof top) || !piam_prefix(w->id, 2, form, sizeof form)) {
            if (o->strict) { fprintf(stderr, "prepare_iam: %s (%s:%d): malformed word id\n", w->id, words_path, w->line_no); goto done; }
            piam_skip(o, &st->missing, "malformed word id", w->id, NULL);
            continue;
        }
        snprintf(rel, sizeof rel, "%s/%s/%s.png", top, form, w->id);
        if (!(path = piam_join(images_dir, rel))) { fprintf(stderr, "prepare_iam: out of memory\n"); goto done; }
        if (!(probe = fopen(path, "rb"))) {
            if (o->strict) { fprintf(stderr, "prepare_iam: cannot open '%s': %s\n", path, strerror(errno)); free(path); goto done; }
            piam_skip(o, &st->missing, "missing image", path, strerror(errno));
            free(path);
            continue;
        }
        pix = stbi_load_from_file(probe, &iw, &ih, &comp, 1);
        fclose(probe);
        if (!pix || iw < 1 || ih < 1) {
            const char *why = pix ? "empty image" : stbi_failure_reason();
            stbi_image_free(pix);
            if (o->strict) { fprintf(stderr, "prepare_iam: cannot read '%s': %s\n", path, why ? why : "?"); free(path); goto done; }
            piam_skip(o, &st->unreadable, "unreadable image", path, why);
            free(path);
            continue;
        }
        nw = (int)floor((double)iw * HIGAN_DATASET_HEIGHT / ih + 0.5);
        if (nw < 1) nw = 1;
        if ((double)iw * HIGAN_DATASET_HEIGHT / ih + 0.5 > HIGAN_DATASET_MAX_WIDTH) {
            snprintf(detail, sizeof detail, "%dx%d would be %.0f px wide at height 64 (max %d)", iw, ih,
                     floor((double)iw * HIGAN_DATASET_HEIGHT / ih + 0.5), HIGAN_DATASET_MAX_WIDTH);
            stbi_image_free(pix);
            if (o->strict) { fprintf(stderr, "prepare_iam: '%s': %s\n", path, detail); free(path); goto done; }
            piam_skip(o, &st->too_wide, "image too wide", path, detail);
            free(path);
            continue;
        }
        r = piam_resize_invert(pix, iw, ih, img64, nw);
        stbi_image_free(pix);
        free(path);
        if (!r) { fprintf(stderr, "prepare_iam: out of memory resizing %s\n", w->id); goto done; }
        if (w->split == PIAM_TEST) { dst = &ds_test; ++st->test; }
        else {
            dst = &ds_trnval;
            ++st->trnval;
            if (o->val) {
                dst2 = w->split == PIAM_VAL ? &ds_val : &ds_train;
                if (w->split == PIAM_VAL) ++st->val; else ++st->train;
            }
        }
        if (higan_dataset_append(dst, img64, nw, w->text, w->wid) != HIGAN_OK ||
            (dst2 && higan_dataset_append(dst2, img64, nw, w->text, w->wid) != HIGAN_OK)) {
            fprintf(stderr, "prepare_iam: %s: %s\n", w->id, higan_last_error());
            goto done;
        }
    }

    /* writer counts per set */
    {
        higan_dataset *sets[4];
        int *cnt[4], k;
        sets[0] = &ds_trnval; sets[1] = &ds_test; sets[2] = &ds_val; sets[3] = &ds_train;
        cnt[0] = &st->writers_trnval; cnt[1] = &st->writers_test; cnt[2] = &st->writers_val; cnt[3] = NULL;
        for (k = 0; k < 3; ++k) {
            unsigned char *seen = (unsigned char *)calloc(65536, 1);
            int64_t j;
            if (!seen) { fprintf(stderr, "prepare_iam: out of memory\n"); goto done; }
            for (j = 0; j < sets[k]->count; ++j) {
                unsigned idx = (unsigned)((int)sets[k]->wids[j] + 32768);
                if (!seen[idx]) { seen[idx] = 1; ++*cnt[k]; }
            }
            free(seen);
        }
    }

    /* output */
    {
        struct stat sb;
        if (stat(o->out_dir, &sb) != 0 && piam_mkdir(o->out_dir) != 0) {
            fprintf(stderr, "prepare_iam: cannot create the output directory '%s': %s\n", o->out_dir, strerror(errno));
            goto done;
        }
    }
    higan_dataset_pack(&ds_trnval);
    higan_dataset_pack(&ds_test);
    if (!o->quiet) {
        printf("words.txt: %ld lines (%ld comments), %ld ok, %ld err%s, %ld malformed\n", st->lines, st->comments, st->ok,
               st->err, o->keep_err ? " (kept)" : " (skipped)", st->malformed);
        printf("skipped: %ld label outside the alphabet, %ld form without writer, %ld not in the split lists, "
               "%ld missing image, %ld unreadable, %ld too wide\n", st->bad_alphabet, st->no_writer, st->not_in_split,
               st->missing, st->unreadable, st->too_wide);
        printf("writers: %d (split: %s)\n", st->writers,
               o->split_dir ? "IAM task lists" : o->test_writers ? "test writer list" : "seeded fraction");
    }
    if (!piam_save(&ds_trnval, o->out_dir, o->trnval_name, "trnval", st->trnval, st->writers_trnval, o->quiet) ||
        !piam_save(&ds_test, o->out_dir, o->test_name, "test", st->test, st->writers_test, o->quiet))
        goto done;
    if (o->val) {
        higan_dataset_free(&ds_trnval);   /* keep peak memory down */
        higan_dataset_pack(&ds_train);
        higan_dataset_pack(&ds_val);
        if (!piam_save(&ds_train, o->out_dir, o->train_name, "train", st->train, st->writers_trnval - st->writers_val, o->quiet) ||
            !piam_save(&ds_val, o->out_dir, o->val_name, "val", st->val, st->writers_val, o->quiet))
            goto done;
    }
    rc = 0;
done:
    if (f) fclose(f);
    free(line);
    for (i = 0; i < n_forms; ++i) free(forms[i].form);
    free(forms);
    for (i = 0; i < n_words; ++i) { free(words[i].id); free(words[i].text); }
    free(words);
    free(writers);
    free(test_w);
    free(val_w);
    free(img64);
    free(words_path);
    free(forms_path);
    free(images_dir);
    piam_strs_free(&trn_lines);
    piam_strs_free(&val_lines);
    piam_strs_free(&test_lines);
    piam_strs_free(&test_list);
    higan_dataset_free(&ds_trnval);
    higan_dataset_free(&ds_test);
    higan_dataset_free(&ds_train);
    higan_dataset_free(&ds_val);
    return rc;
}

static void piam_usage(FILE *f) {
    fprintf(f,
        "usage: prepare_iam IAM_ROOT [options]\n"
        "Builds HiGAN+'s word datasets (height 64, ink bright) from the IAM database:\n"
        "IAM_ROOT/ascii/words.txt, IAM_ROOT/ascii/forms.txt, IAM_ROOT/words/a01/a01-000u/*.png\n"
        "  -o DIR               output directory (default .; created if missing)\n"
        "  --trnval NAME        train+val file name (default trnval.safetensors; .hdf5 needs make HDF5=1)\n"
        "  --test NAME          test file name (default test.safetensors)\n"
        "  --split-dir DIR      IAM task lists trainset.txt, validationset1/2.txt, testset.txt\n"
        "  --test-writers FILE  writer ids of the test set\n"
        "  --test-frac F        else: seeded fraction of writers for test (default 0.434: 372 of IAM's 657 writers train)\n"
        "  --seed N             seed of the writer choice (default 1)\n"
        "  --val                also write train.safetensors and val.safetensors\n"
        "  --val-frac F         fraction of train+val writers for val without --split-dir (default 0.1)\n"
        "  --train NAME, --val-name NAME   their file names\n"
        "  --words FILE, --forms FILE, --images DIR   override the IAM paths\n"
        "  --keep-err           keep words whose segmentation is marked 'err'\n"
        "  --strict             stop at the first missing/unreadable/too wide image or malformed line\n"
        "  --quiet              print nothing but errors\n");
}

static int prepare_iam_main(int argc, char **argv, prepare_iam_stats *st) {
    prepare_iam_opts o;
    prepare_iam_stats local;
    int i;
    piam_default_opts(&o);
    if (!st) st = &local;
    memset(st, 0, sizeof *st);
    for (i = 1; i < argc; ++i) {
        const char *a = argv[i];
        int has = i + 1 < argc;
#define PIAM_ARG(name) (!strcmp(a, name) && (has || (fprintf(stderr, "prepare_iam: %s needs a value\n", name), 0)))
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) { piam_usage(stdout); return 0; }
        else if (PIAM_ARG("-o")) o.out_dir = argv[++i];
        else if (PIAM_ARG("--trnval")) o.trnval_name = argv[++i];
        else if (PIAM_ARG("--test")) o.test_name = argv[++i];
        else if (PIAM_ARG("--train")) o.train_name = argv[++i];
        else if (PIAM_ARG("--val-name")) o.val_name = argv[++i];
        else if (PIAM_ARG("--split-dir")) o.split_dir = argv[++i];
        else if (PIAM_ARG("--test-writers")) o.test_writers = argv[++i];
        else if (PIAM_ARG("--test-frac")) o.test_frac = atof(argv[++i]);
        else if (PIAM_ARG("--val-frac")) o.val_frac = atof(argv[++i]);
        else if (PIAM_ARG("--seed")) o.seed = (uint64_t)strtoull(argv[++i], NULL, 10);
        else if (PIAM_ARG("--words")) o.words_path = argv[++i];
        else if (PIAM_ARG("--forms")) o.forms_path = argv[++i];
        else if (PIAM_ARG("--images")) o.images_dir = argv[++i];
        else if (!strcmp(a, "--val")) o.val = 1;
        else if (!strcmp(a, "--keep-err")) o.keep_err = 1;
        else if (!strcmp(a, "--strict")) o.strict = 1;
        else if (!strcmp(a, "--quiet")) o.quiet = 1;
        else if (a[0] == '-') { fprintf(stderr, "prepare_iam: unknown or incomplete option '%s'\n", a); piam_usage(stderr); return 1; }
        else if (!o.root) o.root = a;
        else { fprintf(stderr, "prepare_iam: unexpected argument '%s'\n", a); piam_usage(stderr); return 1; }
#undef PIAM_ARG
    }
    if (!o.root && (!o.words_path || !o.forms_path || !o.images_dir)) { piam_usage(stderr); return 1; }
    if (o.split_dir && o.test_writers) { fprintf(stderr, "prepare_iam: give --split-dir or --test-writers, not both\n"); return 1; }
    return prepare_iam_run(&o, st);
}

#ifndef PREPARE_IAM_NO_MAIN
int main(int argc, char **argv) { return prepare_iam_main(argc, argv, NULL); }
#endif
