/* Tests of data_tools/synthetic.h (make_synthetic): reproducibility, labels, image layout,
   writers and held-out splits, errors that name the file. Needs Debian's handwriting fonts
   (.ci/run installs them); without any of them it prints SKIP lines and passes. */
#define _POSIX_C_SOURCE 200809L     /* mkdir */
#include <sys/stat.h>
#include <sys/types.h>
#define HIGAN_IMPLEMENTATION
#include "higan.h"
#include "check.h"
#include "data_tools/synthetic.h"

#define DIR_A "build/test_synthetic_a"
#define DIR_B "build/test_synthetic_b"
#define DIR_C "build/test_synthetic_c"
#define WORDS "build/test_synthetic_words.txt"

static int write_text(const char *path, const char *text) {
    FILE *f = fopen(path, "wb");
    if (!f) return -1;
    fputs(text, f);
    return fclose(f);
}
static unsigned char *read_all(const char *path, long *n) {
    FILE *f = fopen(path, "rb");
    unsigned char *b;
    *n = 0;
    if (!f) return NULL;
    fseek(f, 0, SEEK_END); *n = ftell(f); fseek(f, 0, SEEK_SET);
    b = (unsigned char *)malloc((size_t)*n + 1);
    if (b && fread(b, 1, (size_t)*n, f) != (size_t)*n) { free(b); b = NULL; }
    fclose(f);
    return b;
}
/* 1 same bytes, 0 different, -1 unreadable */
static int same_file(const char *a, const char *b) {
    long na, nb;
    unsigned char *x = read_all(a, &na), *y = read_all(b, &nb);
    int r = (!x || !y) ? -1 : (na == nb && !memcmp(x, y, (size_t)na));
    free(x); free(y);
    return r;
}
static void lower(char *s) { for (; *s; ++s) *s = (char)tolower((unsigned char)*s); }

/* the word list: kept words and words the filter must drop */
static const char *words_text =
    "apple\nbanana\ncherry\ndate\nelder\nfig\ngrape\nhoney\nink\njam\nkiwi\nlemon\nmango\nnut\nolive\n"
    "pear\nquince\nraisin\nsugar\ntea\numami\nvanilla\nwalnut\nxylophone\nyam\nzest\n"
    "Anne's\nBoston\nJune\nx-ray\ndon't\nR2D2\n(ok)\nwhat?\n  spaced  \r\napple\n"   /* 'apple' again: a duplicate */
    "a\ncaf\xc3\xa9\nbacktick`s\nthisiswaytoolongforalabel\ntab\there\n\n";
static const int words_kept = 26 + 9;   /* 26 fruit words, 9 more; 'apple' once */

int main(void) {
    const char *want[] = {
        "/usr/share/fonts/truetype/sjfonts/SteveHand.ttf",
        "/usr/share/fonts/opentype/dancingscript/DancingScript-Regular.otf",   /* joined script */
        "/usr/share/fonts/truetype/femkeklaver/femkeklaver.ttf",               /* lower case only */
        "/usr/share/fonts/opentype/bwht/BecauseWeLearn-Regular.otf",           /* capitals only */
        "/usr/share/fonts/truetype/klee/KleeOne-Regular.ttf",
    };
    const char *fonts[8];
    int n_fonts = 0, i;
    syn_options o;
    syn_result ra, rc;
    syn_words ws;
    higan_dataset tr, te;

    for (i = 0; i < (int)(sizeof want / sizeof want[0]); ++i) if (syn__file_exists(want[i])) fonts[n_fonts++] = want[i];
    if (n_fonts < 3) {
        printf("SKIP test_synthetic: %d of the handwriting fonts it uses are installed (needs 3; apt-get install "
               "fonts-sjfonts fonts-dancingscript fonts-femkeklaver fonts-bwht fonts-klee)\n", n_fonts);
        return check_finish();
    }
    mkdir("build", 0777); mkdir(DIR_A, 0777); mkdir(DIR_B, 0777); mkdir(DIR_C, 0777);
    CHECK(write_text(WORDS, words_text) == 0, "write %s", WORDS);

    /* ---- word list filter ---- */
    i = syn_words_load(&ws, WORDS);
    CHECK(i == 0, "load word list %s", i ? syn_last_error() : "");
    CHECK(ws.n == words_kept, "word list keeps %d words (got %d)", words_kept, ws.n);
    {
        int bad = 0, has_spaced = 0, has_poss = 0;
        for (i = 0; i < ws.n; ++i) {
            int n = (int)strlen(ws.w[i]);
            int codes[32];
            if (n < 2 || n > 19 || higan_text_encode(ws.w[i], codes, 32) != n) ++bad;
            if (!strcmp(ws.w[i], "spaced")) has_spaced = 1;
            if (!strcmp(ws.w[i], "Anne's")) has_poss = 1;
            if (i && strcmp(ws.w[i - 1], ws.w[i]) >= 0) ++bad;     /* sorted, no duplicates */
        }
        CHECK(bad == 0 && has_spaced && has_poss, "kept words: 2..19 characters of the alphabet, sorted, unique, "
              "trimmed, possessives kept");
    }
    syn_words_free(&ws);

    /* ---- fonts: measurements and coverage ---- */
    for (i = 0; i < n_fonts; ++i) {
        syn_font f;
        syn_writer w;
        const char *chunks[] = { "ABCDEFGHIJKLM", "NOPQRSTUVWXYZ", "abcdefghijklm", "nopqrstuvwxyz", "0123456789",
                                 "'-\"/,.+_!#&():;?", "ab cd" };
        int k, ok = 1, tried = 0;
        if (syn_font_load(&f, fonts[i]) != 0) { CHECK(0, "load %s: %s", fonts[i], syn_last_error()); continue; }
        if (strstr(fonts[i], "BecauseWe")) CHECK(f.caps_only == 1, "%s: lower case drawn as capitals detected", f.name);
        if (strstr(fonts[i], "SteveHand") || strstr(fonts[i], "Dancing"))
            CHECK(f.caps_only == 0, "%s: has lower case", f.name);
        if (strstr(fonts[i], "femkeklaver"))
            CHECK(!syn_font_can_write(&f, "Boston") && syn_font_can_write(&f, "boston"), "%s: hollow capitals avoided", f.name);
        syn_writer_traits(&w, 3, &f, 0, 0);
        for (k = 0; k < (int)(sizeof chunks / sizeof chunks[0]); ++k) {
            char text[32];
            int j, width;
            uint8_t *img = NULL;
            higan_rng r;
            strcpy(text, chunks[k]);
            if (f.caps_only) for (j = 0; text[j]; ++j) text[j] = (char)toupper((unsigned char)text[j]);
            if (!syn_font_can_write(&f, text)) continue;
            ++tried;
            higan_rng_seed(&r, (uint64_t)k);
            width = syn_render_word(&f, &w, text, &r, &img);
            if (width < 1 || width > HIGAN_DATASET_MAX_WIDTH) { ok = 0; printf("   %s '%s': %s\n", f.name, text, syn_last_error()); }
            else {
                int mx = 0;
                for (j = 0; j < HIGAN_DATASET_HEIGHT * width; ++j) if (img[j] > mx) mx = img[j];
                if (mx < 128) { ok = 0; printf("   %s '%s': faint (max %d)\n", f.name, text, mx); }
            }
            free(img);
        }
        CHECK(ok && tried >= 3, "%s renders every alphabet symbol it can write (%d strings)", f.name, tried);
        syn_font_free(&f);
    }

    /* ---- two runs with one seed: byte-identical, whatever the thread count ---- */
    syn_options_default(&o);
    o.fonts = fonts; o.n_fonts = n_fonts; o.words = WORDS;
    o.per_writer = 6; o.variants = 2; o.seed = 7; o.test_writers = 2; o.test_words_frac = 0.2f; o.quiet = 1;
    o.out_dir = DIR_A;
    higan_set_num_threads(1);
    i = syn_generate(&o, &ra);
    CHECK(i == 0, "generate seed 7 into " DIR_A " %s", i ? syn_last_error() : "");
    o.out_dir = DIR_B;
    higan_set_num_threads(2);
    i = syn_generate(&o, &rc);
    CHECK(i == 0, "generate seed 7 into " DIR_B " on 2 threads %s", i ? syn_last_error() : "");
    if (i == 0) syn_result_free(&rc);
    CHECK(same_file(DIR_A "/train.safetensors", DIR_B "/train.safetensors") == 1, "same seed: identical train files");
    CHECK(same_file(DIR_A "/test.safetensors", DIR_B "/test.safetensors") == 1, "same seed: identical test files");
    CHECK(same_file(DIR_A "/writers.tsv", DIR_B "/writers.tsv") == 1, "same seed: identical writers.tsv");
    o.out_dir = DIR_C; o.seed = 8;
    i = syn_generate(&o, &rc);
    CHECK(i == 0, "generate seed 8 %s", i ? syn_last_error() : "");
    if (i == 0) syn_result_free(&rc);
    CHECK(same_file(DIR_A "/train.safetensors", DIR_C "/train.safetensors") == 0, "another seed: a different train file");
    higan_set_num_threads(1);

    /* ---- the files ---- */
    higan_dataset_init(&tr); higan_dataset_init(&te);
    i = higan_dataset_load(&tr, DIR_A "/train.safetensors");
    CHECK(i == HIGAN_OK, "load the train file %s", i ? higan_last_error() : "");
    i = higan_dataset_load(&te, DIR_A "/test.safetensors");
    CHECK(i == HIGAN_OK, "load the test file %s", i ? higan_last_error() : "");
    CHECK(tr.count == ra.train.count && te.count == ra.test.count && tr.count > 0 && te.count > 0,
          "files hold what was built (%lld train, %lld test words)", (long long)tr.count, (long long)te.count);
    {
        int64_t k;
        int bad_label = 0, bad_ink = 0, bad_glyph = 0, bad_wid = 0;
        int seen[64];
        memset(seen, 0, sizeof seen);
        for (k = 0; k < tr.count + te.count; ++k) {
            const higan_dataset *ds = k < tr.count ? &tr : &te;
            int64_t j = k < tr.count ? k : k - tr.count;
            int codes[64], n = higan_dataset_label_codes(ds, j, codes, 64), w = ds->img_lens[j], y, x, mx = 0, wi;
            long hist[256], cum = 0;
            char lab[64];
            int median = 0;
            if (n < 2 || n > 19) ++bad_label;
            higan_dataset_label(ds, j, lab, sizeof lab);
            memset(hist, 0, sizeof hist);
            for (y = 0; y < HIGAN_DATASET_HEIGHT; ++y)
                for (x = 0; x < w; ++x) { int p = higan_dataset_pixel(ds, j, y, x); ++hist[p]; if (p > mx) mx = p; }
            while (median < 255 && (cum += hist[median]) * 2 < (long)HIGAN_DATASET_HEIGHT * w) ++median;
            if (mx < 128 || median > 40) { ++bad_ink; printf("   '%s': max %d, median %d\n", lab, mx, median); }
            for (wi = 0; wi < ra.n_writers && ra.writers[wi].id != ds->wids[j]; ++wi) {}
            if (wi == ra.n_writers) { ++bad_wid; continue; }
            if (ds->wids[j] < 64) seen[ds->wids[j]] |= ds == &tr ? 1 : 2;
            if (ds == &tr && ra.writers[wi].test) ++bad_wid;
            if (!syn_font_can_write(&ra.fonts[ra.writers[wi].font], lab)) ++bad_glyph;
            if (ra.fonts[ra.writers[wi].font].caps_only)
                for (x = 0; lab[x]; ++x) if (islower((unsigned char)lab[x])) { ++bad_glyph; break; }
        }
        CHECK(bad_label == 0, "every label is 2..19 symbols of the alphabet");
        CHECK(bad_ink == 0, "every image: 64 rows, ink bright (max >= 128) on a dark ground (median <= 40)");
        CHECK(bad_wid == 0, "every writer id is a known writer; no held-out writer in the train file");
        CHECK(bad_glyph == 0, "every word uses real glyphs of its writer's font (capitals for caps-only fonts)");
        /* every train writer appears in train; every held-out writer only in test */
        {
            int missing = 0, held = 0;
            for (i = 0; i < ra.n_writers; ++i) {
                int id = ra.writers[i].id;
                if (ra.writers[i].test) { ++held; if (seen[id] != 2) ++missing; }
                else if (!(seen[id] & 1)) ++missing;
                if (ra.writers[i].test != (id >= ra.n_train_writers)) ++missing;
            }
            CHECK(missing == 0 && held == 2 && ra.n_writers == 2 * n_fonts,
                  "%d writers (%d fonts x 2 variants), 2 held out with ids after the train writers",
                  ra.n_writers, n_fonts);
        }
    }
    {
        int a, b, dup = 0;
        for (a = 0; a < ra.n_writers; ++a)
            for (b = a + 1; b < ra.n_writers; ++b) {
                const syn_writer *x = &ra.writers[a], *y = &ra.writers[b];
                if (x->size == y->size || x->slant == y->slant || x->weight == y->weight || x->ink == y->ink ||
                    x->blur == y->blur || x->key == y->key) ++dup;
            }
        CHECK(dup == 0, "writers have distinct traits");
    }
    {
        /* held-out words: no label of the test file is in the train file (the held-out writers
           write held-out words too); train writers also write some of them */
        int64_t k, j;
        int leaks = 0, unseen = 0;
        for (k = 0; k < te.count; ++k) {
            char a[64], b[64];
            if (te.wids[k] < ra.n_train_writers) ++unseen;
            higan_dataset_label(&te, k, a, sizeof a); lower(a);
            for (j = 0; j < tr.count; ++j) {
                higan_dataset_label(&tr, j, b, sizeof b); lower(b);
                if (!strcmp(a, b)) ++leaks;
            }
        }
        CHECK(unseen > 0 && leaks == 0, "held-out words never in the train file (%lld test words, %d of them by "
              "train writers)", (long long)te.count, unseen);
    }
    {
        uint8_t *g = NULL;
        int gw = 0, gh = 0;
        int r = syn_make_grid(&ra, 10, 4, &g, &gw, &gh);
        CHECK(r == 0 && gh == 10 * (64 + 12) + 12 && gw > 64, "grid of 10 writers x 4 words (%dx%d)", gw, gh);
        free(g);
    }
    higan_dataset_free(&tr); higan_dataset_free(&te);
    syn_result_free(&ra);

    /* ---- errors name the file ---- */
    {
        const char *bad_fonts[2];
        int r;
        bad_fonts[0] = fonts[0]; bad_fonts[1] = "build/no_such_font.ttf";
        syn_options_default(&o);
        o.fonts = bad_fonts; o.n_fonts = 2; o.words = WORDS; o.per_writer = 2; o.test_writers = 0; o.quiet = 1;
        r = syn_generate(&o, &rc);
        CHECK(r != 0 && strstr(syn_last_error(), "build/no_such_font.ttf"), "missing font: %s", syn_last_error());
        CHECK(write_text("build/test_synthetic_bad.ttf", "this is not a font, just some text\n") == 0, "write bad font");
        bad_fonts[1] = "build/test_synthetic_bad.ttf";
        r = syn_generate(&o, &rc);
        CHECK(r != 0 && strstr(syn_last_error(), "build/test_synthetic_bad.ttf"), "unreadable font: %s", syn_last_error());
        o.n_fonts = 1;
        CHECK(write_text("build/test_synthetic_empty.txt", "a\n\ncaf\xc3\xa9\n`\n") == 0, "write empty word list");
        o.words = "build/test_synthetic_empty.txt";
        r = syn_generate(&o, &rc);
        CHECK(r != 0 && strstr(syn_last_error(), "build/test_synthetic_empty.txt"), "empty word list: %s", syn_last_error());
        o.words = "build/no_such_words.txt";
        r = syn_generate(&o, &rc);
        CHECK(r != 0 && strstr(syn_last_error(), "build/no_such_words.txt"), "missing word list: %s", syn_last_error());
        o.words = WORDS; o.test_writers = 5;
        r = syn_generate(&o, &rc);
        CHECK(r != 0, "holding out every writer is refused: %s", syn_last_error());
    }
    return check_finish();
}
