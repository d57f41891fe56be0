/* prepare_iam on a tiny fixture in the exact IAM layout, built here under build/iam_fixture. */
#define _POSIX_C_SOURCE 200809L
#define HIGAN_IMPLEMENTATION
#include "higan.h"
#include "check.h"
#define PREPARE_IAM_NO_MAIN
#include "data_tools/prepare_iam.c"
#define STB_IMAGE_WRITE_IMPLEMENTATION
#include <stb/stb_image_write.h>

#define FIX "build/iam_fixture"

static void mk(const char *p) { piam_mkdir(p); }
static void write_text(const char *path, const char *text) {
    FILE *f = fopen(path, "w");
    if (!f) { CHECK(0, "cannot write %s", path); return; }
    fputs(text, f);
    fclose(f);
}
/* PNG of w x h gray pixels from fn */
static void write_png(const char *path, int w, int h, int kind) {
    unsigned char *p = (unsigned char *)malloc((size_t)w * (size_t)h);
    int x, y;
    for (y = 0; y < h; ++y)
        for (x = 0; x < w; ++x) {
            unsigned char v = 255;
            if (kind == 1) v = 100;                                              /* uniform gray */
            if (kind == 2) v = x < w / 2 ? 0 : 255;                              /* left half ink */
            if (kind == 3) v = (x >= 10 && x < 20 && y >= 20 && y < 40) ? 0 : 255; /* a black block */
            if (kind == 4) v = (unsigned char)((x * 7 + y * 3) & 255);
            p[(size_t)y * (size_t)w + x] = v;
        }
    CHECK(stbi_write_png(path, w, h, 1, p, w) != 0, "fixture PNG %s (%dx%d)", path, w, h);
    free(p);
}

static void make_fixture(void) {
    static const char *const dirs[] = {"build", FIX, FIX "/ascii", FIX "/words", FIX "/words/a01", FIX "/words/a01/a01-000u",
        FIX "/words/a01/a01-003", FIX "/words/b02", FIX "/words/b02/b02-010", FIX "/words/c03", FIX "/words/c03/c03-020",
        FIX "/words/d04", FIX "/words/d04/d04-030", FIX "/words/e05", FIX "/words/e05/e05-000", FIX "/splits"};
    size_t i;
    for (i = 0; i < sizeof dirs / sizeof dirs[0]; ++i) mk(dirs[i]);
    write_text(FIX "/ascii/forms.txt",
        "#--- forms.txt (fixture) ---\n"
        "# format: a01-000u 000 2 prt 7 5 52 36\n"
        "a01-000u 000 2 prt 7 5 52 36\n"
        "a01-003 001 2 prt 11 6 64 40\n"
        "b02-010 002 3 prt 9 4 70 45\n"
        "c03-020 003 2 prt 4 2 30 20\n"
        "d04-030 004 2 prt 8 3 40 25\n");
    write_text(FIX "/ascii/words.txt",
        "#--- words.txt (fixture) ---\n"
        "#\n"
        "# a01-000u-00-00 ok 154 1 408 768 27 51 AT A\n"
        "a01-000u-00-00 ok 154 408 768 27 51 AT A\n"
        "a01-000u-00-01 ok 154 507 766 213 48 NN MOVE\n"
        "a01-000u-00-02 err 154 796 764 70 50 TO to\n"
        "a01-000u-00-03 ok 154\n"
        "a01-003-00-00 ok 156 395 932 441 100 VBN 50%\n"
        "a01-003-00-01 ok 156 901 958 147 79 IN Hello,\n"
        "b02-010-00-00 ok 182 1000 900 60 40 NN stop\n"
        "b02-010-00-01 ok 182 1100 900 60 40 NN gone\n"
        "b02-010-00-02 ok 182 1200 900 5000 40 NN wide\n"
        "c03-020-00-00 ok 170 100 200 80 50 \" \"\n"
        "c03-020-01-00 ok 170 100 300 80 50 PPS it's\n"
        "d04-030-00-00 ok 160 100 200 90 50 CD 1990\r\n"
        "d04-030-00-01 ok 160 200 200 90 50 CD zero\n"
        "e05-000-00-00 ok 150 100 100 50 50 NN orphan\n");
    write_png(FIX "/words/a01/a01-000u/a01-000u-00-00.png", 30, 20, 1);   /* enlarged to 96 x 64 */
    write_png(FIX "/words/a01/a01-000u/a01-000u-00-01.png", 200, 100, 2); /* shrunk to 128 x 64 */
    write_png(FIX "/words/a01/a01-000u/a01-000u-00-02.png", 70, 50, 4);   /* err line */
    write_png(FIX "/words/a01/a01-003/a01-003-00-00.png", 60, 40, 4);     /* label outside the alphabet */
    write_png(FIX "/words/a01/a01-003/a01-003-00-01.png", 50, 64, 3);     /* already 64 high */
    write_text(FIX "/words/b02/b02-010/b02-010-00-00.png", "this is not a PNG file\n");
    remove(FIX "/words/b02/b02-010/b02-010-00-01.png");                    /* missing */
    write_png(FIX "/words/b02/b02-010/b02-010-00-02.png", 5000, 40, 4);   /* 8000 wide at height 64 */
    write_png(FIX "/words/c03/c03-020/c03-020-00-00.png", 80, 50, 4);
    write_png(FIX "/words/c03/c03-020/c03-020-01-00.png", 81, 47, 4);
    write_png(FIX "/words/d04/d04-030/d04-030-00-00.png", 90, 50, 4);
    write_text(FIX "/words/d04/d04-030/d04-030-00-01.png", "");           /* 0 bytes */
    write_png(FIX "/words/e05/e05-000/e05-000-00-00.png", 50, 50, 4);     /* form not in forms.txt */
    write_text(FIX "/test_writers.txt", "# test writers\n1\n004\n");
    write_text(FIX "/splits/trainset.txt", "a01-000u-00\nb02-010-00\n");
    write_text(FIX "/splits/validationset1.txt", "c03-020-00\n");
    write_text(FIX "/splits/validationset2.txt", "c03-020-01\n");
    write_text(FIX "/splits/testset.txt", "a01-003-00\nd04-030\n");
}

static int run(prepare_iam_stats *st, const char *a1, const char *a2, const char *a3, const char *a4, const char *a5,
               const char *a6) {
    char *argv[16];
    int argc = 0;
    argv[argc++] = (char *)"prepare_iam";
    argv[argc++] = (char *)FIX;
    argv[argc++] = (char *)"--quiet";
    if (a1) argv[argc++] = (char *)a1;
    if (a2) argv[argc++] = (char *)a2;
    if (a3) argv[argc++] = (char *)a3;
    if (a4) argv[argc++] = (char *)a4;
    if (a5) argv[argc++] = (char *)a5;
    if (a6) argv[argc++] = (char *)a6;
    return prepare_iam_main(argc, argv, st);
}
static int label_is(const higan_dataset *ds, int64_t i, const char *want) {
    char lb[64];
    return i < ds->count && higan_dataset_label(ds, i, lb, sizeof lb) >= 0 && !strcmp(lb, want);
}
static int wid_set(const higan_dataset *ds, unsigned char *seen) {
    int64_t i;
    int n = 0;
    memset(seen, 0, 1024);
    for (i = 0; i < ds->count; ++i) if (ds->wids[i] >= 0 && ds->wids[i] < 1024 && !seen[ds->wids[i]]++) ++n;
    return n;
}

static void test_resize(void) {
    uint8_t src[2 * 64], dst[4 * 64], big[128 * 128], out[64 * 64];
    int y, x, ok = 1;
    for (y = 0; y < 64; ++y) { src[y * 2] = 0; src[y * 2 + 1] = 255; }
    piam_resize_invert(src, 2, 64, dst, 4);   /* bilinear, half-pixel centres: 0, 63.75, 191.25, 255 */
    for (y = 0; y < 64; ++y) ok &= dst[y * 4] == 255 && dst[y * 4 + 1] == 191 && dst[y * 4 + 2] == 64 && dst[y * 4 + 3] == 0;
    CHECK(ok, "bilinear enlarge 2 -> 4 columns (inverted): %d %d %d %d", dst[0], dst[1], dst[2], dst[3]);
    for (y = 0; y < 128; ++y) for (x = 0; x < 128; ++x) big[y * 128 + x] = (uint8_t)(((x ^ y) & 1) ? 255 : 0);
    piam_resize_invert(big, 128, 128, out, 64);   /* area average of 2x2 checker cells = 127.5 -> 128 */
    ok = 1;
    for (y = 0; y < 64 * 64; ++y) ok &= out[y] == 127;
    CHECK(ok, "area shrink 128 -> 64 averages (inverted 127): %d", out[0]);
    for (y = 0; y < 96; ++y) for (x = 0; x < 96; ++x) big[y * 96 + x] = (uint8_t)(x < 48 ? 10 : 250);
    piam_resize_invert(big, 96, 96, out, 64);     /* 1.5x shrink: column 31 covers [46.5, 48), 32 covers [48, 49.5) */
    ok = 1;
    for (y = 0; y < 64; ++y) ok &= out[y * 64] == 245 && out[y * 64 + 31] == 245 && out[y * 64 + 32] == 5 && out[y * 64 + 63] == 5;
    CHECK(ok, "area shrink 1.5x keeps the edge (got %d, %d)", out[31], out[32]);
}

static void test_main_run(void) {
    prepare_iam_stats st;
    higan_dataset tr, te;
    unsigned char s1[1024], s2[1024];
    int rc, i, ok;
    rc = run(&st, "-o", "build/iam_out1", "--test-writers", FIX "/test_writers.txt", NULL, NULL);
    CHECK(rc == 0, "prepare_iam with --test-writers runs (rc %d)", rc);
    CHECK(st.lines == 17 && st.comments == 3 && st.malformed == 1, "words.txt: 17 lines, 3 comments, 1 malformed (%ld %ld %ld)",
          st.lines, st.comments, st.malformed);
    CHECK(st.ok == 12 && st.err == 1 && st.err_skipped == 1, "12 ok and 1 err line, err skipped (%ld %ld %ld)", st.ok, st.err,
          st.err_skipped);
    CHECK(st.bad_alphabet == 1 && st.no_writer == 1 && st.missing == 1 && st.unreadable == 2 && st.too_wide == 1,
          "skips: alphabet %ld, no writer %ld, missing %ld, unreadable %ld, too wide %ld", st.bad_alphabet, st.no_writer,
          st.missing, st.unreadable, st.too_wide);
    CHECK(st.trnval == 4 && st.test == 2 && st.writers == 5, "4 trnval and 2 test words, 5 writers (%ld %ld %d)", st.trnval,
          st.test, st.writers);
    if (higan_dataset_load(&tr, "build/iam_out1/trnval.safetensors") != HIGAN_OK ||
        higan_dataset_load(&te, "build/iam_out1/test.safetensors") != HIGAN_OK) {
        CHECK(0, "outputs load: %s", higan_last_error());
        return;
    }
    CHECK(tr.count == 4 && label_is(&tr, 0, "A") && label_is(&tr, 1, "MOVE") && label_is(&tr, 2, "\"") &&
          label_is(&tr, 3, "it's"), "trnval labels in words.txt order");
    CHECK(te.count == 2 && label_is(&te, 0, "Hello,") && label_is(&te, 1, "1990"), "test labels (CRLF line handled)");
    CHECK(tr.wids[0] == 0 && tr.wids[1] == 0 && tr.wids[2] == 3 && tr.wids[3] == 3 && te.wids[0] == 1 && te.wids[1] == 4,
          "writer ids from forms.txt");
    CHECK(wid_set(&tr, s1) == 2 && wid_set(&te, s2) == 2 && !s1[1] && !s1[4] && !s2[0] && !s2[3],
          "split is disjoint by writer ({0,3} vs {1,4})");
    /* widths round(w * 64 / h): 30x20 -> 96, 200x100 -> 128, 80x50 -> 102, 81x47 -> 110; 50x64 -> 50, 90x50 -> 115 */
    CHECK(tr.img_lens[0] == 96 && tr.img_lens[1] == 128 && tr.img_lens[2] == 102 && tr.img_lens[3] == 110 &&
          te.img_lens[0] == 50 && te.img_lens[1] == 115, "widths keep the aspect ratio at height 64");
    ok = 1;
    for (i = 0; i < 64 * 96; ++i) ok &= higan_dataset_pixel(&tr, 0, i / 96, i % 96) == 155;
    CHECK(ok, "uniform gray 100 enlarged and inverted: 155 everywhere");
    ok = 1;
    for (i = 0; i < 64; ++i)
        ok &= higan_dataset_pixel(&tr, 1, i, 0) == 255 && higan_dataset_pixel(&tr, 1, i, 63) == 255 &&
              higan_dataset_pixel(&tr, 1, i, 64) == 0 && higan_dataset_pixel(&tr, 1, i, 127) == 0;
    CHECK(ok, "left-half ink shrunk: ink bright (255) on 0");
    ok = 1;
    for (i = 0; i < 64 * 50; ++i) {
        int y = i / 50, x = i % 50;
        ok &= higan_dataset_pixel(&te, 0, y, x) == ((x >= 10 && x < 20 && y >= 20 && y < 40) ? 255 : 0);
    }
    CHECK(ok, "64-high image kept exactly and inverted");
    higan_dataset_free(&tr);
    higan_dataset_free(&te);

    /* --keep-err keeps the err word */
    rc = run(&st, "-o", "build/iam_out1", "--test-writers", FIX "/test_writers.txt", "--keep-err", NULL);
    CHECK(rc == 0 && st.err_skipped == 0 && st.trnval == 5, "--keep-err keeps the 'err' word (%ld)", st.trnval);
    /* --strict stops at the first bad image */
    rc = run(&st, "-o", "build/iam_out_strict", "--test-writers", FIX "/test_writers.txt", "--strict", NULL);
    CHECK(rc == 1, "--strict fails on the malformed line");
    write_text(FIX "/ascii/words_bad.txt", "b02-010-00-00 ok 182 1000 900 60 40 NN stop\n");
    rc = run(&st, "-o", "build/iam_out_strict", "--words", FIX "/ascii/words_bad.txt", "--strict", NULL);
    CHECK(rc == 1, "--strict fails on an unreadable image");
    rc = run(&st, "-o", "build/iam_out_strict", "--words", FIX "/ascii/words_bad.txt", NULL, NULL);
    CHECK(rc == 0 && st.unreadable == 1 && st.trnval + st.test == 0, "without --strict it is skipped");
    /* missing words.txt */
    {
        char *argv[4];
        argv[0] = (char *)"prepare_iam"; argv[1] = (char *)"build/no_such_iam"; argv[2] = (char *)"--quiet";
        CHECK(prepare_iam_main(3, argv, &st) == 1, "a missing IAM root fails cleanly");
    }
}

static void test_seeded_split(void) {
    prepare_iam_stats st;
    higan_dataset tr, te, tr2;
    unsigned char s1[1024], s2[1024];
    int rc, k, disjoint = 1, n1, n2;
    rc = run(&st, "-o", "build/iam_out2", "--seed", "7", NULL, NULL);
    CHECK(rc == 0, "seeded split runs");
    if (higan_dataset_load(&tr, "build/iam_out2/trnval.safetensors") != HIGAN_OK ||
        higan_dataset_load(&te, "build/iam_out2/test.safetensors") != HIGAN_OK) { CHECK(0, "load: %s", higan_last_error()); return; }
    n1 = wid_set(&tr, s1);
    n2 = wid_set(&te, s2);
    for (k = 0; k < 1024; ++k) disjoint &= !(s1[k] && s2[k]);
    CHECK(disjoint && tr.count + te.count == 6, "seeded split: disjoint writers (%d trnval, %d test), all 6 words", n1, n2);
    CHECK(st.writers == 5 && st.writers_test + st.writers_trnval <= 5,
          "round(0.434 * 5) = 2 test writers chosen (%d with words)", st.writers_test);
    rc = run(&st, "-o", "build/iam_out3", "--seed", "7", NULL, NULL);
    CHECK(rc == 0 && higan_dataset_load(&tr2, "build/iam_out3/trnval.safetensors") == HIGAN_OK && tr2.count == tr.count &&
          !memcmp(tr2.wids, tr.wids, sizeof(int16_t) * (size_t)tr.count), "same seed, same split");
    higan_dataset_free(&tr2);
    {
        /* the chosen test writers follow the documented rule */
        int order[5] = {0, 1, 2, 3, 4}, ok = 1;
        piam_shuffle(order, 5, 7);
        for (k = 0; k < 5; ++k) ok &= k < 2 ? !s1[order[k]] : !s2[order[k]];
        CHECK(ok, "test writers are the first round(0.434 n) of the seeded shuffle");
    }
    higan_dataset_free(&tr);
    higan_dataset_free(&te);
}

static void test_split_dir(void) {
    prepare_iam_stats st;
    higan_dataset tr, va, te, tv;
    int rc = run(&st, "-o", "build/iam_out4", "--split-dir", FIX "/splits", "--val", NULL);
    CHECK(rc == 0, "--split-dir with --val runs");
    if (higan_dataset_load(&tr, "build/iam_out4/train.safetensors") != HIGAN_OK ||
        higan_dataset_load(&va, "build/iam_out4/val.safetensors") != HIGAN_OK ||
        higan_dataset_load(&te, "build/iam_out4/test.safetensors") != HIGAN_OK ||
        higan_dataset_load(&tv, "build/iam_out4/trnval.safetensors") != HIGAN_OK) { CHECK(0, "load: %s", higan_last_error()); return; }
    CHECK(tr.count == 2 && label_is(&tr, 0, "A") && label_is(&tr, 1, "MOVE"), "train from trainset.txt lines");
    CHECK(va.count == 2 && label_is(&va, 0, "\"") && label_is(&va, 1, "it's"), "val from validationset1 + 2");
    CHECK(te.count == 2 && label_is(&te, 0, "Hello,") && label_is(&te, 1, "1990"), "test from testset.txt (line and form ids)");
    CHECK(tv.count == 4 && st.not_in_split == 0, "trnval = train + val (%lld)", (long long)tv.count);
    higan_dataset_free(&tr); higan_dataset_free(&va); higan_dataset_free(&te); higan_dataset_free(&tv);
    /* words whose line is in no list are skipped and counted */
    write_text(FIX "/splits/testset.txt", "a01-003-00\n");
    rc = run(&st, "-o", "build/iam_out4", "--split-dir", FIX "/splits", NULL, NULL);
    CHECK(rc == 0 && st.not_in_split == 2 && st.test == 1, "words in no split list is skipped (%ld)", st.not_in_split);
    write_text(FIX "/splits/testset.txt", "a01-003-00\nd04-030\n");
}

int main(void) {
    make_fixture();
    test_resize();
    test_main_run();
    test_seeded_split();
    test_split_dir();
    return check_finish();
}
