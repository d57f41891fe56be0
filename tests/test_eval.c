/* Tests of the eval section of higan.h: Levenshtein, CER/WER (the correct distance, not the official
   repeat-collapsing one), writer-ID error, symmetric eigenvalues, FID and KID (against
   scipy / the official metric code, tests/oracle/make_eval.py), PSNR and SSIM (against
   skimage), the official rescale_images (against F.interpolate), backbone features. */
#define HIGAN_IMPLEMENTATION
#include "higan.h"
#include "check.h"

static int close_d(double got, double ref, double atol, double rtol) {
    return fabs(got - ref) <= atol + rtol * fabs(ref);
}

static void test_levenshtein(void) {
    int a[300], b[300], i;
    CHECK(higan_edit_distance_utf8("kitten", "sitting") == 3, "kitten / sitting: 3");
    CHECK(higan_edit_distance_utf8("flaw", "lawn") == 2, "flaw / lawn: 2");
    CHECK(higan_edit_distance_utf8("", "abc") == 3 && higan_edit_distance_utf8("abc", "") == 3, "against the empty string: its length");
    CHECK(higan_edit_distance_utf8("", "") == 0 && higan_edit_distance_utf8("same", "same") == 0, "equal strings: 0");
    CHECK(higan_edit_distance_utf8("hello", "helo") == 1 && higan_edit_distance_utf8("helo", "hello") == 1, "a doubled letter counts");
    CHECK(higan_edit_distance_utf8("abc", "cab") == 2, "abc / cab: 2");
    CHECK(higan_edit_distance_utf8("h\xC3\xA9llo", "hello") == 1, "UTF-8: one code point differs: 1");
    CHECK(higan_utf8_length("h\xC3\xA9llo") == 5 && higan_utf8_length("a\xFF" "b") == 3, "UTF-8 lengths (invalid byte counts once)");
    for (i = 0; i < 300; ++i) { a[i] = 7; b[i] = 7; }
    b[299] = 8;
    CHECK(higan_edit_distance(a, 300, b, 300) == 1, "300 labels, one substitution (heap row)");
    CHECK(higan_edit_distance(a, 300, b, 299) == 1, "300 vs 299 labels: 1");
    CHECK(higan_edit_distance(a, 0, b, 299) == 299, "empty vs 299 labels");
    for (i = 0; i < 300; ++i) b[i] = i % 2 ? 7 : 9;
    CHECK(higan_edit_distance(a, 300, b, 300) == 150, "every other label differs: 150");
}

static void test_text_score(void) {
    higan_text_score s;
    const char *hyp[] = {"helo", "hello", "bok", "cat", "Moon"};
    const char *ref[] = {"hello", "hello", "book", "cat", "moon"};
    int i;
    higan_text_score_init(&s);
    CHECK(isnan(higan_text_score_cer(&s)) && isnan(higan_text_score_wer(&s)), "empty score: NaN");
    for (i = 0; i < 5; ++i) higan_text_score_add(&s, hyp[i], ref[i]);
    /* the official decode collapses "hello" -> "helo" and "book" -> "bok" in both strings and
       would report CER 1/17 = one error (Moon) and WER 1/5; the correct figures: */
    CHECK(s.edits == 3 && s.ref_chars == 21 && s.words == 5 && s.wrong_words == 3,
          "edits %lld / %lld chars, %lld of %lld words wrong", (long long)s.edits, (long long)s.ref_chars,
          (long long)s.wrong_words, (long long)s.words);
    CHECK(close_d(higan_text_score_cer(&s), 3.0 / 21.0, 0, 1e-15), "CER = 3/21 (repeats count): %g", higan_text_score_cer(&s));
    CHECK(close_d(higan_text_score_wer(&s), 3.0 / 5.0, 0, 1e-15), "WER = 3/5: %g", higan_text_score_wer(&s));
    higan_text_score_init(&s);
    higan_text_score_add(&s, "", "abc");
    higan_text_score_add(&s, "abcd", "abc");
    CHECK(s.edits == 4 && s.ref_chars == 6 && s.wrong_words == 2, "an empty reading: every character an error");
}

static void test_writer(void) {
    int pr[6] = {1, 2, 3, 4, 5, 6}, pf[6] = {1, 2, 0, 4, 0, 0};
    float x[5] = {0.5f, 2.0f, -1.0f, 2.0f, 1.0f};
    CHECK(higan_argmax(x, 5) == 1, "argmax: the first of two equal maxima");
    CHECK(close_d(higan_wier(pr, pf, 6), 0.5, 0, 1e-15), "WIER: 3 of 6 disagree: %g", higan_wier(pr, pf, 6));
    CHECK(higan_wier(pr, pr, 6) == 0.0 && isnan(higan_wier(pr, pf, 0)), "WIER 0 for agreement, NaN for no samples");
}

static void test_eig(const higan_safetensors *st) {
    float *in = check_load(st, "eig_in", NULL), *wref = check_load(st, "eig_w", NULL);
    double a[81], a0[81], w[9], v[81], ws[9];
    float got[9];
    int i, j, k;
    double worst = 0.0;
    if (!in || !wref) return;
    for (i = 0; i < 81; ++i) a[i] = a0[i] = in[i];
    CHECK(higan_sym_eig(a, 9, w, v) == HIGAN_OK, "Jacobi on a 9 x 9 symmetric matrix");
    for (i = 0; i < 9; ++i) ws[i] = w[i];
    for (i = 0; i < 9; ++i) for (j = i + 1; j < 9; ++j) if (ws[j] < ws[i]) { double t = ws[i]; ws[i] = ws[j]; ws[j] = t; }
    for (i = 0; i < 9; ++i) got[i] = (float)ws[i];
    check_close("eigenvalues vs numpy eigvalsh", got, wref, 9, 1e-5f, 1e-5f);
    for (i = 0; i < 9; ++i)
        for (j = 0; j < 9; ++j) {
            double r = 0.0;
            for (k = 0; k < 9; ++k) r += v[i * 9 + k] * w[k] * v[j * 9 + k];
            if (fabs(r - a0[i * 9 + j]) > worst) worst = fabs(r - a0[i * 9 + j]);
        }
    CHECK(worst < 1e-12, "V diag(w) V^T reproduces the matrix (max error %.3g)", worst);
    free(in); free(wref);
}

static void test_fid(const higan_safetensors *st) {
    int64_t na, nb;
    float *a = check_load(st, "fid_a", &na), *b = check_load(st, "fid_b", &nb);
    float *ref_ab = check_load(st, "fid_ab", NULL), *ref_ba = check_load(st, "fid_ba", NULL);
    float small[3 * 6];
    double f = 0, g = 0;
    int i;
    higan_status rc;
    if (!a || !b || !ref_ab || !ref_ba) return;
    na /= 6; nb /= 6;
    rc = higan_fid(a, na, b, nb, 6, &f);
    CHECK(rc == HIGAN_OK && close_d(f, ref_ab[0], 1e-6, 1e-5),
          "FID vs scipy sqrtm (n %lld, %lld, d 6): %.9g vs %.9g", (long long)na, (long long)nb, f, (double)ref_ab[0]);
    rc = higan_fid(b, nb, a, na, 6, &g);
    CHECK(rc == HIGAN_OK && close_d(g, ref_ba[0], 1e-6, 1e-5) && close_d(f, g, 0, 1e-9),
          "FID(b, a) = FID(a, b): %.12g %.12g", g, f);
    rc = higan_fid(a, na, a, na, 6, &f);
    CHECK(rc == HIGAN_OK && fabs(f) < 1e-9, "FID of identical sets: %.3g", f);
    /* fewer vectors than dimensions: singular covariances, still finite and 0 for identical sets */
    for (i = 0; i < 18; ++i) small[i] = (float)sin(1.7 * i);
    rc = higan_fid(small, 3, small, 3, 6, &f);
    CHECK(rc == HIGAN_OK && fabs(f) < 1e-9, "FID of identical rank-2 sets: %.3g", f);
    rc = higan_fid(small, 3, a, na, 6, &f);
    CHECK(rc == HIGAN_OK && isfinite(f) && f > 0, "FID with a singular covariance: %.6g", f);
    CHECK(higan_fid(a, 1, b, nb, 6, &f) == HIGAN_ERR_ARG, "FID of one vector: %s", higan_last_error());
    free(a); free(b); free(ref_ab); free(ref_ba);
}

static void test_kid(const higan_safetensors *st) {
    int64_t na, nb, nc;
    float *a = check_load(st, "kid_a", &na), *b = check_load(st, "kid_b", &nb), *c = check_load(st, "kid_c", &nc);
    float *ref_ab = check_load(st, "mmd2_ab", NULL), *ref_ac = check_load(st, "mmd2_ac", NULL), *big;
    double m = 0, m2 = 0, k1 = 0, k2 = 0, k3 = 0, ref;
    higan_rng r;
    int64_t i;
    higan_status rc;
    if (!a || !b || !c || !ref_ab || !ref_ac) return;
    na /= 7; nb /= 7; nc /= 7;
    rc = higan_mmd2_poly(a, na, b, nb, 7, &m);
    CHECK(rc == HIGAN_OK && close_d(m, ref_ab[0], 1e-7, 1e-5),
          "unbiased MMD^2 (30 vs 30) vs the official estimator: %.9g vs %.9g", m, (double)ref_ab[0]);
    rc = higan_mmd2_poly(a, na, c, nc, 7, &m);
    CHECK(rc == HIGAN_OK && close_d(m, ref_ac[0], 1e-7, 1e-5),
          "unbiased MMD^2 (30 vs 23): %.9g vs %.9g", m, (double)ref_ac[0]);
    rc = higan_mmd2_poly(c, nc, a, na, 7, &m2);
    CHECK(rc == HIGAN_OK && close_d(m, m2, 1e-14, 1e-12), "MMD^2 symmetric: %.12g %.12g", m, m2);
    /* subsets of min(1000, n) = n: every subset is the whole set, KID = 100 MMD^2 */
    higan_rng_seed(&r, 5);
    rc = higan_kid(a, na, b, nb, 7, 50, 1000, &r, &k1);
    CHECK(rc == HIGAN_OK && close_d(k1, 100.0 * ref_ab[0], 1e-5, 1e-5),
          "KID x 100 with subsets of the whole set: %.9g vs %.9g", k1, 100.0 * ref_ab[0]);
    higan_rng_seed(&r, 5);
    higan_kid(b, nb, a, na, 7, 50, 1000, &r, &k2);
    CHECK(close_d(k1, k2, 1e-12, 1e-10), "KID symmetric: %.12g %.12g", k1, k2);
    /* real subsets: deterministic, thread-independent, near the full-set value */
    higan_rng_seed(&r, 11);
    higan_kid(a, na, b, nb, 7, 20, 12, &r, &k1);
    higan_set_num_threads(1);
    higan_rng_seed(&r, 11);
    higan_kid(a, na, b, nb, 7, 20, 12, &r, &k2);
    higan_set_num_threads(2);
    higan_rng_seed(&r, 11);
    higan_kid(a, na, b, nb, 7, 20, 12, &r, &k3);
    CHECK(k1 == k2 && k2 == k3 && isfinite(k1), "KID with subsets of 12: same on 1 and 2 threads (%.9g)", k1);
    CHECK(fabs(k1 - 100.0 * ref_ab[0]) < 100.0 * fabs(ref_ab[0]) + 20.0, "KID of subsets near the full value: %.4g vs %.4g",
          k1, 100.0 * ref_ab[0]);
    /* sets too large for the kernel matrix: the on-the-fly path gives the same subsets' MMD^2 */
    big = (float *)malloc(sizeof(float) * 3200 * 3);
    for (i = 0; i < 3200 * 3; ++i) big[i] = (float)sin(0.61 * (double)i) + (i >= 1600 * 3 ? 0.3f : 0.0f);
    {
        int64_t pa[1600], pb[1600], j, s, t;
        float sa[5 * 3], sb[5 * 3];
        double acc = 0.0, one;
        higan_rng_seed(&r, 3);
        for (s = 0; s < 2; ++s) {        /* the draws of higan_kid, replayed */
            for (j = 0; j < 1600; ++j) pa[j] = pb[j] = j;
            for (j = 0; j < 5; ++j) { int64_t q = j + higan__eval_randint(&r, 1600 - j); t = pa[j]; pa[j] = pa[q]; pa[q] = t; }
            for (j = 0; j < 5; ++j) { int64_t q = j + higan__eval_randint(&r, 1600 - j); t = pb[j]; pb[j] = pb[q]; pb[q] = t; }
            for (j = 0; j < 5; ++j) {
                memcpy(sa + j * 3, big + pa[j] * 3, sizeof(float) * 3);
                memcpy(sb + j * 3, big + 1600 * 3 + pb[j] * 3, sizeof(float) * 3);
            }
            higan_mmd2_poly(sa, 5, sb, 5, 3, &one);
            acc += one;
        }
        ref = acc / 2 * 100.0;
        higan_rng_seed(&r, 3);
        rc = higan_kid(big, 1600, big + 1600 * 3, 1600, 3, 2, 5, &r, &k1);
        CHECK(rc == HIGAN_OK && close_d(k1, ref, 1e-12, 1e-9),
              "KID of 1600 + 1600 vectors (kernel on the fly): %.12g vs %.12g", k1, ref);
    }
    free(big);
    CHECK(higan_kid(a, 1, b, nb, 7, 50, 1000, &r, &k1) == HIGAN_ERR_ARG, "KID of one vector: %s", higan_last_error());
    free(a); free(b); free(c); free(ref_ab); free(ref_ac);
}

static void test_psnr_ssim(const higan_safetensors *st) {
    float *x = check_load(st, "ssim_x", NULL), *y = check_load(st, "ssim_y", NULL);
    float *x2 = check_load(st, "ssim_x2", NULL), *y2 = check_load(st, "ssim_y2", NULL);
    float *s_ref = check_load(st, "ssim", NULL), *s2_ref = check_load(st, "ssim2", NULL), *p_ref = check_load(st, "psnr", NULL);
    double s, p;
    if (!x || !y || !x2 || !y2 || !s_ref || !s2_ref || !p_ref) return;
    s = higan_ssim(x, y, 64, 23);
    CHECK(close_d(s, s_ref[0], 1e-6, 1e-6), "SSIM 64 x 23 vs skimage: %.9g vs %.9g", s, (double)s_ref[0]);
    s = higan_ssim(x2, y2, 7, 9);
    CHECK(close_d(s, s2_ref[0], 1e-6, 1e-6), "SSIM 7 x 9 (3 windows) vs skimage: %.9g vs %.9g", s, (double)s2_ref[0]);
    p = higan_psnr(x, y, 64 * 23);
    CHECK(close_d(p, p_ref[0], 1e-5, 1e-6), "PSNR vs skimage: %.9g vs %.9g", p, (double)p_ref[0]);
    CHECK(fabs(higan_ssim(x, x, 64, 23) - 1.0) < 1e-12, "SSIM of an image with itself: 1");
    CHECK(isinf(higan_psnr(x, x, 64 * 23)), "PSNR of identical images: +inf");
    CHECK(isnan(higan_ssim(x, y, 64, 6)) && isnan(higan_ssim(x, y, 6, 23)), "SSIM below 7 pixels: NaN (skimage raises)");
    free(x); free(y); free(x2); free(y2); free(s_ref); free(s2_ref); free(p_ref);
}

static void test_rescale(const higan_safetensors *st) {
    static const int widths[] = {53, 96, 101, 250, 7};
    float *in = check_load(st, "rescale_in", NULL), out[5 * 250];
    int k;
    if (!in) return;
    for (k = 0; k < 5; ++k) {
        char name[64];
        float *ref;
        snprintf(name, sizeof name, "rescale_%d", widths[k]);
        if (!(ref = check_load(st, name, NULL))) continue;
        higan_rescale_width(out, widths[k], in, 5, 96);
        snprintf(name, sizeof name, "rescale 96 -> %d vs F.interpolate (%s)", widths[k], widths[k] < 96 ? "area" : "bilinear");
        check_close(name, out, ref, 5 * widths[k], 1e-6f, 1e-5f);
        free(ref);
    }
    free(in);
}

static void test_features(void) {
    higan_params P;
    higan_style_backbone B;
    higan_backbone_config cfg = higan_backbone_default_config();
    higan_arena arena;
    higan_tape tape;
    higan_rng r;
    float img[64 * 50], img64[64 * 64], f1[32], f2[32], ref[32];
    int64_t xs[4] = {1, 1, 64, 64}, i, c;
    higan_var *x, *y;
    cfg.resolution = 2; cfg.max_dim = 32;
    higan_params_init(&P);
    higan_style_backbone_register(&B, &P, "B", &cfg);
    higan_params_alloc(&P);
    higan_rng_seed(&r, 3);
    higan_style_backbone_init(&B, &r, HIGAN_INIT_N02);
    higan_arena_init(&arena, (size_t)32 << 20);
    higan_tape_init(&tape, &arena, 1024);
    for (i = 0; i < 64 * 50; ++i) img[i] = (float)sin(0.13 * (double)i);
    for (i = 0; i < 64 * 64; ++i) img64[i] = (i % 64) < 50 ? img[(i / 64) * 50 + i % 64] : -1.0f;
    CHECK(higan_backbone_features(&B, &tape, img, 50, f1) == HIGAN_OK, "features of a 50-pixel image");
    CHECK(higan_backbone_features(&B, &tape, img64, 64, f2) == HIGAN_OK && !memcmp(f1, f2, sizeof f1),
          "the same image padded with -1 to 64 by the caller: the same features");
    /* by hand: backbone on the padded image, mean of the first ceil(50 / 16) = 4 positions */
    higan_tape_reset(&tape);
    higan_no_grad_begin(&tape);
    x = higan_var_new(&tape, 4, xs);
    memcpy(x->data, img64, sizeof img64);
    y = higan_style_backbone_forward(&tape, &B, x, 0, NULL, NULL);
    higan_no_grad_end(&tape);
    CHECK(y && y->shape[1] == 32 && y->shape[2] == 4, "backbone output [1, 32, 4]");
    if (y) {
        for (c = 0; c < 32; ++c) ref[c] = (float)(((double)y->data[c * 4] + y->data[c * 4 + 1] + y->data[c * 4 + 2] + y->data[c * 4 + 3]) / 4.0);
        check_close("features = masked mean of the sequence feature", f1, ref, 32, 1e-6f, 1e-6f);
    }
    higan_tape_free(&tape);
    higan_arena_free(&arena);
    higan_params_free(&P);
}

int main(void) {
    higan_safetensors st;
    test_levenshtein();
    test_text_score();
    test_writer();
    if (check_open_fixture(&st, "eval_metrics.safetensors")) {
        test_eig(&st);
        test_fid(&st);
        test_kid(&st);
        test_psnr_ssim(&st);
        test_rescale(&st);
        higan_safetensors_free(&st);
    }
    test_features();
    return check_finish();
}
