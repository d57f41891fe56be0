/* Tests of the style and recognition networks (higan.h): StyleBackbone,
   StyleEncoder (VAE mode), WriterIdentifier, Recognizer, the alphabet and text encoding.
   Official key names and parameter counts; PyTorch oracle comparisons of the forward
   outputs, all gradients and the BN running statistics in train and eval mode
   (tests/oracle/make_styler.py); finite-difference checks of the blocks. */
#define HIGAN_IMPLEMENTATION
#include "higan.h"
#include "check.h"

#define ATOL 1e-5f
#define RTOL 1e-4f
/* Gradients: these small random networks give gradients up to ~10^3 that are float32 sums of
   many terms of that size, so the absolute tolerance also scales with the tensor's largest
   reference value: atol = ATOL + GRAD_SCALE_TOL * max|ref| (measured: <= 1.2e-5 relative to
   the largest value; nmse ~1e-12). */
#define GRAD_SCALE_TOL 5e-5f
/* Forward outputs of the deep CNN likewise: a value near 0 can be the difference of terms of
   the tensor's scale (scalar vs SIMD summation order differs by ~5e-6 of max|ref|). */
#define FWD_SCALE_TOL 1e-5f

static float max_abs(const float *x, int64_t n) {
    float m = 0;
    int64_t i;
    for (i = 0; i < n; ++i) if (fabsf(x[i]) > m) m = fabsf(x[i]);
    return m;
}

/* parameter elements and keys (buffers included) of a store */
static int64_t count_params(const higan_params *p) {
    int64_t n = 0;
    int i;
    for (i = 0; i < p->count; ++i) if (p->entries[i].kind == HIGAN_PARAM) n += p->entries[i].numel;
    return n;
}

/* ==== alphabet and text ======================================================================= */
static void test_alphabet(void) {
    const char *a = higan_alphabet();
    int labels[96], n, i, ok = 1;
    char text[96];
    CHECK(strlen(a) == HIGAN_ALPHABET_SIZE, "alphabet has %d symbols", (int)strlen(a));
    CHECK(a[0] == '`' && a[1] == ' ' && a[2] == 'A' && a[27] == 'Z' && a[28] == 'a' && a[53] == 'z' &&
          a[54] == '0' && a[63] == '9', "alphabet: blank, space, A-Z, a-z, 0-9 at 0, 1, 2, 28, 54");
    CHECK(!strcmp(a + 64, "'-\"/,.+_!#&():;?"), "alphabet: punctuation 64..79 in the official order");
    for (i = 1; i < HIGAN_ALPHABET_SIZE; ++i) ok &= higan_char_label((unsigned char)a[i]) == i;
    CHECK(ok && higan_char_label('`') == -1 && higan_char_label('%') == -1 && higan_char_label(0xE9) == -1,
          "char_label inverts the alphabet; '`', '%%', 0xE9 have no label");

    n = higan_text_encode("Hello, World 42?", labels, 64);
    CHECK(n == 16 && labels[0] == 9 && labels[1] == 32 && labels[5] == 68 && labels[6] == 1 &&
          labels[13] == 58 && labels[14] == 56 && labels[15] == 79, "encode 'Hello, World 42?' (n %d)", n);
    CHECK(higan_text_decode(labels, n, text, sizeof text) == 16 && !strcmp(text, "Hello, World 42?"),
          "decode inverts encode: '%s'", text);
    n = higan_text_encode(a + 1, labels, 96);   /* every writable symbol */
    ok = n == 79;
    for (i = 0; ok && i < n; ++i) ok = labels[i] == i + 1;
    CHECK(ok, "encode every writable symbol to 1..79");

    n = higan_text_encode("caf\xC3\xA9s", labels, 64);
    CHECK(n == HIGAN_ERR_ARG && strstr(higan_last_error(), "character '\xC3\xA9' (U+00E9) at position 3 is not in the HiGAN+ alphabet"),
          "encode 'cafés' fails: %s", higan_last_error());
    n = higan_text_encode("50%", labels, 64);
    CHECK(n == HIGAN_ERR_ARG && strstr(higan_last_error(), "character '%' (U+0025) at position 2"),
          "encode '50%%' fails: %s", higan_last_error());
    n = higan_text_encode("\xE2\x82\xAC" "1", labels, 64);
    CHECK(n == HIGAN_ERR_ARG && strstr(higan_last_error(), "(U+20AC) at position 0"), "encode '€1' fails: %s",
          higan_last_error());
    n = higan_text_encode("a`b", labels, 64);
    CHECK(n == HIGAN_ERR_ARG && strstr(higan_last_error(), "'`' (U+0060) at position 1") &&
          strstr(higan_last_error(), "blank"), "encode 'a`b' fails: %s", higan_last_error());
    n = higan_text_encode("ab\tc", labels, 64);
    CHECK(n == HIGAN_ERR_ARG && strstr(higan_last_error(), "U+0009 at position 2"), "encode a tab fails: %s",
          higan_last_error());
    n = higan_text_encode("", labels, 64);
    CHECK(n == HIGAN_ERR_ARG && strstr(higan_last_error(), "empty text"), "encode '' fails: %s", higan_last_error());
    n = higan_text_encode("ab\xC3", labels, 64);
    CHECK(n == HIGAN_ERR_ARG && strstr(higan_last_error(), "invalid UTF-8"), "truncated UTF-8 fails: %s",
          higan_last_error());
    n = higan_text_encode("abcdef", labels, 5);
    CHECK(n == HIGAN_ERR_ARG && strstr(higan_last_error(), "longer than 5"), "too long fails: %s", higan_last_error());
    CHECK(higan_text_encode("abcde", labels, 5) == 5, "exactly max characters is fine");

    /* decoding: pad 0 skipped, snprintf-like truncation, bad labels rejected */
    {
        int padded[6] = {35, 32, 39, 39, 42, 0};    /* "hello" + pad */
        int bad[2] = {3, 80};
        CHECK(higan_text_decode(padded, 6, text, sizeof text) == 5 && !strcmp(text, "hello"), "decode skips the pad");
        CHECK(higan_text_decode(padded, 6, text, 3) == 5 && !strcmp(text, "he"), "decode truncates like snprintf");
        CHECK(higan_text_decode(padded, 6, NULL, 0) == 5, "decode measures with NULL output");
        CHECK(higan_text_decode(bad, 2, text, sizeof text) == HIGAN_ERR_ARG && strstr(higan_last_error(), "label 80"),
              "decode rejects label 80: %s", higan_last_error());
    }
    /* greedy CTC decoding to text: "to" then "o" with repeats and blanks between: "too" */
    {
        int path[9] = {0, 47, 47, 42, 0, 42, 42, 0, 0}, t;
        float scores[9 * HIGAN_ALPHABET_SIZE];
        for (t = 0; t < 9 * HIGAN_ALPHABET_SIZE; ++t) scores[t] = -1.0f;
        for (t = 0; t < 9; ++t) scores[t * HIGAN_ALPHABET_SIZE + path[t]] = 2.0f;
        n = higan_ctc_decode_text(scores, HIGAN_ALPHABET_SIZE, 9, text, sizeof text);
        CHECK(n == 3 && !strcmp(text, "too"), "ctc_decode_text: '%s'", text);
    }
}

/* ==== parameter and key counts at the official configuration ================================== */
static void test_counts(void) {
    higan_params p;
    higan_style_backbone bb;
    higan_style_encoder enc;
    higan_writer_identifier wid;
    higan_recognizer rec;
    higan_backbone_config cfg;
    int i;
    higan_params_init(&p);
    higan_style_backbone_register(&bb, &p, "StyleBackbone", NULL);
    CHECK(count_params(&p) == 1617328 && p.count == 125, "StyleBackbone: %lld params (1,617,328), %d keys (125)",
          (long long)count_params(&p), p.count);
    CHECK(bb.out_dim == 256 && bb.conv1.out == 16 && bb.blocks[0].fout == 16 && bb.blocks[1].fout == 32 &&
          bb.blocks[2].fout == 32 && bb.blocks[3].fout == 64 && bb.blocks[4].fout == 64 &&
          bb.blocks[5].fout == 128 && bb.blocks[6].fout == 128 && bb.blocks[7].fout == 256,
          "StyleBackbone: channel schedule 16,16,32,32,64,64,128,128,256");
    {
        static const char *const keys[] = {
            "StyleBackbone.cnn_backbone.1.conv.weight", "StyleBackbone.cnn_backbone.1.conv.bias",
            "StyleBackbone.cnn_backbone.2.conv_0.conv.weight", "StyleBackbone.cnn_backbone.2.conv_0.norm.running_mean",
            "StyleBackbone.cnn_backbone.2.conv_1.norm.num_batches_tracked",
            "StyleBackbone.cnn_backbone.4.conv_s.conv.weight", "StyleBackbone.cnn_backbone.9.conv_s.conv.weight",
            "StyleBackbone.cnn_backbone.13.conv_s.conv.weight", "StyleBackbone.cnn_backbone.16.conv_s.conv.weight",
            "StyleBackbone.cnn_ctc.1.conv.weight", "StyleBackbone.cnn_ctc.1.norm.running_var"};
        int ok = 1;
        for (i = 0; i < (int)(sizeof keys / sizeof keys[0]); ++i) {
            int h = higan_params_find(&p, keys[i]);
            if (h < 0) { ok = 0; printf("      missing %s\n", keys[i]); }
        }
        ok &= higan_params_find(&p, "StyleBackbone.cnn_backbone.2.conv_s.conv.weight") < 0 &&
              higan_params_find(&p, "StyleBackbone.cnn_backbone.4.conv_s.conv.bias") < 0;
        i = higan_params_find(&p, "StyleBackbone.cnn_backbone.16.conv_1.conv.weight");
        ok &= i >= 0 && p.entries[i].shape[0] == 256 && p.entries[i].shape[1] == 128 && p.entries[i].shape[2] == 3;
        i = higan_params_find(&p, "StyleBackbone.cnn_backbone.2.conv_0.norm.num_batches_tracked");
        ok &= i >= 0 && p.entries[i].kind == HIGAN_BUFFER_I64 && p.entries[i].ndim == 0;
        CHECK(ok, "StyleBackbone: official key names and shapes");
    }
    higan_params_free(&p);

    higan_params_init(&p);
    higan_style_encoder_register(&enc, &p, "StyleEncoder", 256, 32);
    CHECK(count_params(&p) == 148032 && p.count == 8 && higan_params_find(&p, "StyleEncoder.linear_style.2.weight") >= 0 &&
          higan_params_find(&p, "StyleEncoder.mu.weight") >= 0 && higan_params_find(&p, "StyleEncoder.logvar.bias") >= 0,
          "StyleEncoder: %lld params (148,032), %d keys (8)", (long long)count_params(&p), p.count);
    higan_params_free(&p);

    higan_params_init(&p);
    higan_writer_identifier_register(&wid, &p, "WriterIdentifier", 256, 372);
    CHECK(count_params(&p) == 161396 && p.count == 4 && higan_params_find(&p, "WriterIdentifier.linear_wid.2.weight") >= 0,
          "WriterIdentifier(372): %lld params (161,396), %d keys (4)", (long long)count_params(&p), p.count);
    higan_params_free(&p);
    higan_params_init(&p);
    higan_writer_identifier_register(&wid, &p, "WriterIdentifier", 256, 128);
    CHECK(count_params(&p) == 98688 && p.count == 4, "WriterIdentifier(128): %lld params (98,688)",
          (long long)count_params(&p));
    higan_params_free(&p);

    higan_params_init(&p);
    higan_recognizer_register(&rec, &p, "Recognizer", NULL);
    i = higan_params_find(&p, "Recognizer.rnn_ctc.lstm.weight_ih_l1_reverse");
    CHECK(count_params(&p) == 2428416 && p.count == 143 && i >= 0 && p.entries[i].shape[0] == 512 &&
          p.entries[i].shape[1] == 256 && higan_params_find(&p, "Recognizer.ctc_cls.weight") >= 0 &&
          higan_params_find(&p, "Recognizer.rnn_ctc.lstm.bias_hh_l0") >= 0 &&
          higan_params_find(&p, "Recognizer.cnn_ctc.1.norm.weight") >= 0,
          "Recognizer: %lld params (2,428,416), %d keys (143)", (long long)count_params(&p), p.count);
    higan_params_free(&p);

    /* max_dim clamps the schedule, and fin == fout blocks get no conv_s (as upstream) */
    higan_params_init(&p);
    cfg = higan_backbone_default_config();
    cfg.resolution = 4; cfg.max_dim = 16;
    higan_style_backbone_register(&bb, &p, "", &cfg);
    CHECK(bb.out_dim == 16 && bb.blocks[5].fout == 16 && !bb.blocks[5].has_shortcut && !bb.blocks[7].has_shortcut &&
          higan_params_find(&p, "cnn_backbone.9.conv_s.conv.weight") >= 0 &&
          higan_params_find(&p, "cnn_backbone.13.conv_s.conv.weight") < 0, "backbone 4/16: clamped, empty prefix");
    higan_params_free(&p);
}

/* ==== init ===================================================================================== */
static void test_init(void) {
    higan_params p;
    higan_style_backbone bb;
    higan_recognizer rec;
    higan_rng rng;
    int h;
    double s = 0, s2 = 0, mx = 0;
    int64_t i, n;
    float *w;
    higan_params_init(&p);
    higan_style_backbone_register(&bb, &p, "StyleBackbone", NULL);
    higan_recognizer_register(&rec, &p, "Recognizer", NULL);
    higan_params_alloc(&p);
    higan_rng_seed(&rng, 1);
    higan_style_backbone_init(&bb, &rng, HIGAN_INIT_N02);
    higan_recognizer_init(&rec, &rng, HIGAN_INIT_TORCH);
    h = higan_params_find(&p, "StyleBackbone.cnn_backbone.16.conv_1.conv.weight");
    w = higan_params_data(&p, h); n = p.entries[h].numel;
    for (i = 0; i < n; ++i) { s += w[i]; s2 += (double)w[i] * w[i]; }
    CHECK(fabs(s / n) < 1e-3 && fabs(sqrt(s2 / n) - 0.02) < 1e-3, "N02 conv weight: mean %.2g std %.4f",
          s / n, sqrt(s2 / n));
    h = higan_params_find(&p, "StyleBackbone.cnn_backbone.16.conv_1.conv.bias");
    w = higan_params_data(&p, h);
    for (i = 0, mx = 0; i < 256; ++i) if (fabs(w[i]) > mx) mx = fabs(w[i]);
    CHECK(mx <= 1.0 / sqrt(128 * 9) && mx > 0.8 / sqrt(128 * 9), "N02 keeps PyTorch's bias U(+-1/sqrt(fan_in)): max %.4f", mx);
    h = higan_params_find(&p, "Recognizer.cnn_backbone.2.conv_0.conv.weight");
    w = higan_params_data(&p, h); n = p.entries[h].numel;
    for (i = 0, mx = 0; i < n; ++i) if (fabs(w[i]) > mx) mx = fabs(w[i]);
    CHECK(mx <= 1.0 / sqrt(16 * 9) && mx > 0.9 / sqrt(16 * 9), "TORCH conv weight U(+-1/sqrt(fan_in)): max %.4f", mx);
    h = higan_params_find(&p, "Recognizer.rnn_ctc.lstm.weight_hh_l1_reverse");
    w = higan_params_data(&p, h); n = p.entries[h].numel;
    for (i = 0, mx = 0; i < n; ++i) if (fabs(w[i]) > mx) mx = fabs(w[i]);
    CHECK(mx <= 1.0 / sqrt(128.0) && mx > 0.99 / sqrt(128.0), "LSTM U(+-1/sqrt(hidden)): max %.4f", mx);
    h = higan_params_find(&p, "Recognizer.cnn_ctc.1.norm.running_var");
    CHECK(higan_params_data(&p, h)[7] == 1.0f &&
          higan_params_data(&p, higan_params_find(&p, "Recognizer.cnn_ctc.1.norm.weight"))[3] == 1.0f &&
          higan_params_data(&p, higan_params_find(&p, "Recognizer.cnn_ctc.1.norm.bias"))[3] == 0.0f,
          "BN init: weight 1, bias 0, running_var 1");
    higan_params_free(&p);
}

/* ==== oracle: backbone + encoder + writer identifier ============================================ */
static int64_t *load_i64(const higan_safetensors *st, const char *name, int64_t n) {
    int64_t *v = (int64_t *)calloc((size_t)n, sizeof(int64_t));
    CHECK(higan_safetensors_read_i64(st, name, v, n) == HIGAN_OK, "read %s", name);
    return v;
}
/* atol + scale * max|ref| elementwise (see GRAD_SCALE_TOL, FWD_SCALE_TOL) */
static void compare_var_ex(const higan_safetensors *st, const char *name, const higan_var *v, float atol, float rtol,
                           float scale) {
    int64_t n = 0;
    float *ref = check_load(st, name, &n);
    if (!ref) return;
    if (!v) { CHECK(0, "%s: no output (%s)", name, higan_last_error()); free(ref); return; }
    atol += scale * max_abs(ref, n);
    if (n != higan_var_numel(v)) CHECK(0, "%s: %lld values, fixture %lld", name, (long long)higan_var_numel(v), (long long)n);
    else check_close(name, v->data, ref, n, atol, rtol);
    free(ref);
}
static void compare_var(const higan_safetensors *st, const char *name, const higan_var *v, float atol, float rtol) {
    compare_var_ex(st, name, v, atol, rtol, FWD_SCALE_TOL);
}
static void compare_grad(const higan_safetensors *st, const char *name, const higan_var *v) {
    compare_var_ex(st, name, v, ATOL, RTOL, GRAD_SCALE_TOL);
}
/* every parameter gradient of a train step against <prefix><name>.
   The bias of a conv followed by batch norm with batch statistics has gradient exactly 0 (the
   BN subtracts the batch mean); both sides hold float32 cancellation noise of the size of
   1e-6 of the conv weight's gradient, so there both must only be below 1e-5 of it. */
static void compare_param_grads(const higan_safetensors *st, const higan_params *p, const char *prefix,
                                const char *what) {
    int i, ok = 1, n = 0;
    for (i = 0; i < p->count; ++i) {
        char name[256], sib[256];
        float *ref;
        const char *nm = p->entries[i].name;
        size_t nl = strlen(nm);
        int64_t numel = p->entries[i].numel;
        if (p->entries[i].kind != HIGAN_PARAM) continue;
        snprintf(name, sizeof name, "%s%s", prefix, nm);
        ref = check_load(st, name, NULL);
        if (!ref) { ok = 0; continue; }
        ++n;
        if (nl > 9 && !strcmp(nm + nl - 9, "conv.bias")) {
            int hw;
            snprintf(sib, sizeof sib, "%.*snorm.weight", (int)(nl - 9), nm);
            if (higan_params_find(p, sib) >= 0) {
                float *wref;
                snprintf(sib, sizeof sib, "%s%.*sconv.weight", prefix, (int)(nl - 9), nm);
                hw = higan_params_find(p, sib + strlen(prefix));
                wref = check_load(st, sib, NULL);
                if (wref && hw >= 0) {
                    float tol = ATOL + 1e-5f * max_abs(wref, p->entries[hw].numel);
                    float g = max_abs(higan_params_grad(p, i), numel), r = max_abs(ref, numel);
                    int good = g <= tol && r <= tol;
                    CHECK(good, "%s: zero in exact arithmetic (conv before batch-stat BN): max |got| %.3g, "
                          "|ref| %.3g, bound %.3g", name, g, r, tol);
                    ok &= good;
                } else ok = 0;
                free(wref); free(ref);
                continue;
            }
        }
        if (!check_close(name, higan_params_grad(p, i), ref, numel, ATOL + GRAD_SCALE_TOL * max_abs(ref, numel), RTOL)) ok = 0;
        ++n;
        free(ref);
    }
    CHECK(ok, "%s: all %d parameter gradients match PyTorch", what, n);
}
/* BN running stats and num_batches_tracked after the train step */
static void compare_buffers(const higan_safetensors *st, const higan_params *p, const char *prefix, const char *what) {
    int i, ok = 1, n = 0;
    for (i = 0; i < p->count; ++i) {
        char name[256];
        const higan_param_entry *e = &p->entries[i];
        if (e->kind == HIGAN_PARAM) continue;
        snprintf(name, sizeof name, "%s%s", prefix, e->name);
        if (e->kind == HIGAN_BUFFER_I64) {
            int64_t v = -1;
            if (higan_safetensors_read_i64(st, name, &v, 1) != HIGAN_OK || v != higan_params_idata(p, i)[0]) {
                printf("      %s: %lld, PyTorch %lld\n", name, (long long)higan_params_idata(p, i)[0], (long long)v);
                ok = 0;
            }
        } else {
            float *ref = check_load(st, name, NULL);
            if (!ref || !check_close(name, higan_params_data(p, i), ref, e->numel, 1e-6f, 1e-5f)) ok = 0;
            free(ref);
        }
        ++n;
    }
    CHECK(ok, "%s: all %d BN buffers after the train step match PyTorch", what, n);
}
/* L += sum(out * r) with r from the fixture (kept alive in rs[]) */
static higan_var *add_term(higan_tape *t, const higan_safetensors *st, const char *rname, higan_var *out,
                           higan_var *L, float **keep) {
    int64_t n = 0;
    float *r = check_load(st, rname, &n);
    higan_var *rv, *term;
    *keep = r;
    if (!r || !out) return NULL;
    HIGAN_ASSERT(n == higan_var_numel(out));
    rv = higan_var_wrap(t, r, out->ndim, out->shape);
    term = higan_sum_all(t, higan_mul(t, out, rv));
    return L ? higan_add(t, L, term) : term;
}

static void test_backbone_oracle(void) {
    higan_safetensors st;
    higan_params P;
    higan_style_backbone bb;
    higan_style_encoder enc;
    higan_writer_identifier wid;
    higan_backbone_config cfg = higan_backbone_default_config();
    higan_arena arena;
    higan_tape t;
    higan_var *xv, *seq, *feats[3], *z, *mu, *logvar, *w, *L = NULL;
    float *x, *noise, *keep[16];
    int64_t *lens64, xs[4] = {3, 1, 64, 96};
    int lens[3], i, nk = 0;
    if (!check_open_fixture(&st, "styler_backbone.safetensors")) return;
    cfg.resolution = 2; cfg.max_dim = 32;
    higan_params_init(&P);
    higan_style_backbone_register(&bb, &P, "StyleBackbone", &cfg);
    higan_style_encoder_register(&enc, &P, "StyleEncoder", bb.out_dim, 8);
    higan_writer_identifier_register(&wid, &P, "WriterIdentifier", bb.out_dim, 5);
    higan_params_alloc(&P);
    i = higan_params_load(&P, &st, "params.", NULL);
    CHECK(i == HIGAN_OK, "backbone/encoder/WID: load %d tensors by official name %s", P.count, i ? higan_last_error() : "");
    x = check_load(&st, "x", NULL);
    noise = check_load(&st, "noise", NULL);
    lens64 = load_i64(&st, "img_lens", 3);
    for (i = 0; i < 3; ++i) lens[i] = (int)lens64[i];
    higan_arena_init(&arena, (size_t)64 << 20);
    higan_tape_init(&t, &arena, 4096);

    /* ---- train ---- */
    higan_params_zero_grad(&P);
    xv = higan_var_wrap(&t, x, 4, xs);
    xv->requires_grad = 1;
    seq = higan_style_backbone_forward(&t, &bb, xv, 1, NULL, feats);
    z = higan_style_encoder_forward(&t, &enc, seq, lens, 1, NULL, noise, &mu, &logvar);
    w = higan_writer_identifier_forward(&t, &wid, seq, lens);
    CHECK(seq && seq->ndim == 3 && seq->shape[1] == 32 && seq->shape[2] == 6 && feats[0] && feats[0]->shape[1] == 8 &&
          feats[0]->shape[2] == 16 && feats[0]->shape[3] == 27 && feats[1]->shape[3] == 14 && feats[2]->shape[2] == 3 &&
          feats[2]->shape[3] == 6, "train forward shapes: seq [3,32,6], feat2 [3,8,16,27], feat3 [..,14], feat4 [..,3,6]");
    compare_var(&st, "train.feat2", feats[0], ATOL, RTOL);
    compare_var(&st, "train.feat3", feats[1], ATOL, RTOL);
    compare_var(&st, "train.feat4", feats[2], ATOL, RTOL);
    compare_var(&st, "train.seq", seq, ATOL, RTOL);
    compare_var(&st, "train.mu", mu, ATOL, RTOL);
    compare_var(&st, "train.logvar", logvar, ATOL, RTOL);
    compare_var(&st, "train.z", z, ATOL, RTOL);
    compare_var(&st, "train.wid", w, ATOL, RTOL);
    L = add_term(&t, &st, "r.feat2", feats[0], L, &keep[nk++]);
    L = add_term(&t, &st, "r.feat3", feats[1], L, &keep[nk++]);
    L = add_term(&t, &st, "r.feat4", feats[2], L, &keep[nk++]);
    L = add_term(&t, &st, "r.seq", seq, L, &keep[nk++]);
    L = add_term(&t, &st, "r.z", z, L, &keep[nk++]);
    L = add_term(&t, &st, "r.mu", mu, L, &keep[nk++]);
    L = add_term(&t, &st, "r.logvar", logvar, L, &keep[nk++]);
    L = add_term(&t, &st, "r.wid", w, L, &keep[nk++]);
    CHECK(L && higan_tape_backward(&t, L, NULL) == HIGAN_OK, "train backward %s", L ? "" : higan_last_error());
    if (L) {
        CHECK(higan_var_has_grad(&t, xv), "the input image has a gradient");
        compare_grad(&st, "train.dx", xv->grad ? higan_var_wrap(&t, xv->grad, 4, xs) : NULL);
        compare_param_grads(&st, &P, "train.grad.", "backbone/encoder/WID train");
    }
    compare_buffers(&st, &P, "train.after.", "StyleBackbone");
    printf("      arena peak %.1f MB, %d tape entries\n", (double)arena.peak / (1 << 20), t.count);

    /* ---- eval with the updated running stats ---- */
    higan_tape_reset(&t);
    higan_params_zero_grad(&P);
    L = NULL;
    xv = higan_var_wrap(&t, x, 4, xs);
    xv->requires_grad = 1;
    seq = higan_style_backbone_forward(&t, &bb, xv, 0, NULL, feats);
    z = higan_style_encoder_forward(&t, &enc, seq, lens, 0, NULL, NULL, &mu, &logvar);
    w = higan_writer_identifier_forward(&t, &wid, seq, lens);
    CHECK(z == mu, "encoder without VAE mode returns mu");
    compare_var(&st, "eval.feat4", feats[2], ATOL, RTOL);
    compare_var(&st, "eval.seq", seq, ATOL, RTOL);
    compare_var(&st, "eval.mu", mu, ATOL, RTOL);
    compare_var(&st, "eval.wid", w, ATOL, RTOL);
    L = add_term(&t, &st, "r.feat4", feats[2], L, &keep[nk++]);
    L = add_term(&t, &st, "r.seq", seq, L, &keep[nk++]);
    L = add_term(&t, &st, "r.mu", mu, L, &keep[nk++]);
    L = add_term(&t, &st, "r.wid", w, L, &keep[nk++]);
    CHECK(L && higan_tape_backward(&t, L, NULL) == HIGAN_OK, "eval backward %s", L ? "" : higan_last_error());
    if (L) compare_grad(&st, "eval.dx", higan_var_wrap(&t, xv->grad, 4, xs));
    {   /* eval leaves the running stats alone */
        int h = higan_params_find(&P, "StyleBackbone.cnn_backbone.2.conv_0.norm.num_batches_tracked");
        CHECK(higan_params_idata(&P, h)[0] == 4, "eval: num_batches_tracked stays 4");
    }

    /* ---- VAE sampling from the rng: z = mu + exp(logvar / 2) * N(0,1) draws ---- */
    {
        higan_rng r1, r2;
        float eps[24];
        int ok = 1, k;
        higan_tape_reset(&t);
        higan_no_grad_begin(&t);
        xv = higan_var_wrap(&t, x, 4, xs);
        seq = higan_style_backbone_forward(&t, &bb, xv, 0, NULL, NULL);
        higan_rng_seed(&r1, 5); higan_rng_seed(&r2, 5);
        z = higan_style_encoder_forward(&t, &enc, seq, lens, 1, &r1, NULL, &mu, &logvar);
        higan_rng_fill_normal(&r2, eps, 24, 0.0f, 1.0f);
        for (k = 0; z && k < 24; ++k)
            ok &= fabsf(z->data[k] - (mu->data[k] + expf(0.5f * logvar->data[k]) * eps[k])) <= 1e-5f + 1e-5f * fabsf(z->data[k]);
        CHECK(z && ok && z != mu, "VAE mode draws N(0,1) noise from the rng");
        higan_no_grad_end(&t);
    }
    for (i = 0; i < nk; ++i) free(keep[i]);
    free(x); free(noise); free(lens64);
    higan_tape_free(&t);
    higan_arena_free(&arena);
    higan_params_free(&P);
    higan_safetensors_free(&st);
}

/* ==== oracle: recognizer ========================================================================= */
static void test_recognizer_oracle(void) {
    higan_safetensors st;
    higan_params P;
    higan_recognizer rec;
    higan_recognizer_config cfg = higan_recognizer_default_config();
    higan_arena arena;
    higan_tape t;
    higan_var *xv, *lp, *logits, *L;
    float *x, *r = NULL;
    int64_t *lens64, *dec64, xs[4] = {3, 1, 64, 96};
    int lens[3], i;
    if (!check_open_fixture(&st, "styler_recognizer.safetensors")) return;
    cfg.cnn.resolution = 2; cfg.cnn.max_dim = 32;
    higan_params_init(&P);
    higan_recognizer_register(&rec, &P, "Recognizer", &cfg);
    higan_params_alloc(&P);
    i = higan_params_load(&P, &st, "params.", NULL);
    CHECK(i == HIGAN_OK, "recognizer: load %d tensors by official name %s", P.count, i ? higan_last_error() : "");
    x = check_load(&st, "x", NULL);
    lens64 = load_i64(&st, "img_lens", 3);
    for (i = 0; i < 3; ++i) lens[i] = (int)lens64[i];
    higan_arena_init(&arena, (size_t)64 << 20);
    higan_tape_init(&t, &arena, 4096);

    /* train: log_softmax [T, B, 80] */
    higan_params_zero_grad(&P);
    xv = higan_var_wrap(&t, x, 4, xs);
    xv->requires_grad = 1;
    lp = higan_recognizer_forward(&t, &rec, xv, lens, 1, NULL);
    CHECK(lp && lp->ndim == 3 && lp->shape[0] == 6 && lp->shape[1] == 3 && lp->shape[2] == 80,
          "train output: log-probs [T=6, B=3, 80]");
    compare_var(&st, "train.log_probs", lp, ATOL, RTOL);
    L = add_term(&t, &st, "r.log_probs", lp, NULL, &r);
    CHECK(L && higan_tape_backward(&t, L, NULL) == HIGAN_OK, "recognizer train backward %s", L ? "" : higan_last_error());
    if (L) {
        compare_grad(&st, "train.dx", higan_var_wrap(&t, xv->grad, 4, xs));
        compare_param_grads(&st, &P, "train.grad.", "recognizer train");
    }
    compare_buffers(&st, &P, "train.after.", "Recognizer");
    printf("      arena peak %.1f MB, %d tape entries\n", (double)arena.peak / (1 << 20), t.count);

    /* eval: logits [B, T, 80], gradient seeded with r transposed to [B, T, 80] */
    higan_tape_reset(&t);
    higan_params_zero_grad(&P);
    xv = higan_var_wrap(&t, x, 4, xs);
    xv->requires_grad = 1;
    logits = higan_recognizer_forward(&t, &rec, xv, lens, 0, NULL);
    CHECK(logits && logits->shape[0] == 3 && logits->shape[1] == 6 && logits->shape[2] == 80, "eval output: logits [B=3, T=6, 80]");
    compare_var(&st, "eval.logits", logits, ATOL, RTOL);
    if (logits && r) {
        float *seed = (float *)malloc(sizeof(float) * 3 * 6 * 80);
        int b, tt, c;
        for (b = 0; b < 3; ++b) for (tt = 0; tt < 6; ++tt) for (c = 0; c < 80; ++c)
            seed[(b * 6 + tt) * 80 + c] = r[(tt * 3 + b) * 80 + c];
        CHECK(higan_tape_backward(&t, logits, seed) == HIGAN_OK, "recognizer eval backward");
        compare_grad(&st, "eval.dx", higan_var_wrap(&t, xv->grad, 4, xs));
        free(seed);
    }
    /* greedy decoding of each sample over its len // 16 frames */
    dec64 = load_i64(&st, "eval.decoded", 18);
    if (logits) {
        int ok = 1;
        for (i = 0; i < 3; ++i) {
            char got[32], want[32];
            int labels[6], n = 0, k;
            for (k = 0; k < 6 && dec64[i * 6 + k] >= 0; ++k) labels[n++] = (int)dec64[i * 6 + k];
            higan_text_decode(labels, n, want, sizeof want);
            k = higan_recognizer_decode(logits, 0, i, lens[i], got, sizeof got);
            if (k != n || strcmp(got, want)) { ok = 0; printf("      sample %d: '%s', PyTorch '%s'\n", i, got, want); }
        }
        /* the [T, B, C] layout of train mode decodes the same scores to the same text */
        {
            int64_t tbc[3] = {6, 3, 80};
            higan_var *tr = higan_var_new(&t, 3, tbc);
            int b, tt, c;
            for (b = 0; tr && b < 3; ++b) for (tt = 0; tt < 6; ++tt) for (c = 0; c < 80; ++c)
                tr->data[(tt * 3 + b) * 80 + c] = logits->data[(b * 6 + tt) * 80 + c];
            for (i = 0; tr && i < 3; ++i) {
                char a[32], bb[32];
                higan_recognizer_decode(logits, 0, i, lens[i], a, sizeof a);
                higan_recognizer_decode(tr, 1, i, lens[i], bb, sizeof bb);
                ok &= !strcmp(a, bb);
            }
            ok &= tr != NULL;
        }
        CHECK(ok, "greedy decoding to text matches PyTorch's argmax path");
    }
    /* shorter lengths: T = max(len // 16) = 4 as pad_packed_sequence gives */
    {
        int64_t *s64 = load_i64(&st, "eval.short_lens", 3);
        int slen[3];
        for (i = 0; i < 3; ++i) slen[i] = (int)s64[i];
        higan_tape_reset(&t);
        higan_no_grad_begin(&t);
        xv = higan_var_wrap(&t, x, 4, xs);
        logits = higan_recognizer_forward(&t, &rec, xv, slen, 0, NULL);
        CHECK(logits && logits->shape[1] == 4, "eval with lengths 64,64,32 gives T = 4");
        compare_var(&st, "eval.short_logits", logits, ATOL, RTOL);
        /* a width below 16 px or beyond the image is refused with a message */
        slen[2] = 8;
        CHECK(higan_recognizer_forward(&t, &rec, xv, slen, 0, NULL) == NULL &&
              strstr(higan_last_error(), "image 2 has width 8"), "width 8 refused: %s", higan_last_error());
        higan_no_grad_end(&t);
        free(s64);
    }
    free(r); free(x); free(lens64); free(dec64);
    higan_tape_free(&t);
    higan_arena_free(&arena);
    higan_params_free(&P);
    higan_safetensors_free(&st);
}

/* ==== finite differences through the blocks (tiny shapes) ======================================= */
typedef struct { const higan_afrb *m; int train; } afrb_ctx;
static higan_var *build_afrb(higan_tape *t, higan_var **in, void *ctx) {
    afrb_ctx *c = (afrb_ctx *)ctx;
    return higan_afrb_forward(t, c->m, in[0], c->train, NULL);
}
typedef struct { const higan_style_encoder *e; const int *lens; const float *noise; } enc_ctx;
static higan_var *build_enc(higan_tape *t, higan_var **in, void *ctx) {
    enc_ctx *c = (enc_ctx *)ctx;
    return higan_style_encoder_forward(t, c->e, in[0], c->lens, 1, NULL, c->noise, NULL, NULL);
}
typedef struct { const higan_writer_identifier *w; const int *lens; } wid_ctx;
static higan_var *build_wid(higan_tape *t, higan_var **in, void *ctx) {
    wid_ctx *c = (wid_ctx *)ctx;
    return higan_writer_identifier_forward(t, c->w, in[0], c->lens);
}
static void test_gradcheck(void) {
    higan_params P;
    higan_afrb blk;
    higan_style_encoder enc;
    higan_writer_identifier wid;
    higan_rng rng;
    check_input in;
    afrb_ctx ac;
    enc_ctx ec;
    wid_ctx wc;
    float x[2 * 3 * 4 * 5], feat[2 * 6 * 5], noise[2 * 3];
    int lens[2] = {80, 48}, k;
    higan_params_init(&P);
    higan_afrb_register(&blk, &P, "blk", 3, 4, 0.0f);
    higan_style_encoder_register(&enc, &P, "enc", 6, 3);
    higan_writer_identifier_register(&wid, &P, "wid", 6, 4);
    higan_params_alloc(&P);
    higan_rng_seed(&rng, 77);
    higan_afrb_init(&blk, &rng, HIGAN_INIT_TORCH);
    higan_style_encoder_init(&enc, &rng, HIGAN_INIT_TORCH);
    higan_writer_identifier_init(&wid, &rng, HIGAN_INIT_TORCH);
    /* BN with non-trivial affine and running stats */
    for (k = 0; k < 4; ++k) {
        higan_params_data(&P, blk.conv_1.norm.weight)[k] = 0.5f + 0.3f * (float)k;
        higan_params_data(&P, blk.conv_1.norm.bias)[k] = 0.1f * (float)k;
        higan_params_data(&P, blk.conv_1.norm.running_var)[k] = 0.7f + 0.2f * (float)k;
    }
    /* away from the ReLU kinks: positive inputs, and conv_0's BN shifted well above 0 */
    for (k = 0; k < 3; ++k) higan_params_data(&P, blk.conv_0.norm.bias)[k] = 4.0f;
    higan_rng_fill_uniform(&rng, x, 2 * 3 * 4 * 5, 0.3f, 1.5f);
    higan_rng_fill_normal(&rng, feat, 2 * 6 * 5, 0.0f, 1.0f);
    higan_rng_fill_normal(&rng, noise, 6, 0.0f, 1.0f);
    memset(&in, 0, sizeof in);
    in.data = x; in.ndim = 4; in.shape[0] = 2; in.shape[1] = 3; in.shape[2] = 4; in.shape[3] = 5; in.grad = 1;
    ac.m = &blk; ac.train = 1;
    check_gradients("afrb train (3->4, conv_s)", build_afrb, &ac, &in, 1, 1e-2f, 2e-3f, 2e-2f);
    ac.train = 0;
    check_gradients("afrb eval", build_afrb, &ac, &in, 1, 1e-2f, 2e-3f, 2e-2f);
    in.data = feat; in.ndim = 3; in.shape[0] = 2; in.shape[1] = 6; in.shape[2] = 5; in.shape[3] = 1;
    ec.e = &enc; ec.lens = lens; ec.noise = noise;
    check_gradients("style encoder VAE z (lens 80, 48 -> 5, 3 positions)", build_enc, &ec, &in, 1, 1e-2f, 1e-3f, 1e-2f);
    wc.w = &wid; wc.lens = lens;
    check_gradients("writer identifier (lens 80, 48 -> 2, 1 positions)", build_wid, &wc, &in, 1, 1e-2f, 1e-3f, 1e-2f);
    higan_params_free(&P);
}

/* ==== dropout: eval ignores it; train draws from the rng ======================================== */
static void set_dropout(higan_style_backbone *b, float p) {
    int k;
    for (k = 0; k < 8; ++k) b->blocks[k].dropout = k < 4 ? p / 2 : p;
}
static void test_dropout(void) {
    higan_params P;
    higan_style_backbone a;
    higan_backbone_config cfg = higan_backbone_default_config();
    higan_arena arena;
    higan_tape t;
    higan_rng rng;
    float x[1 * 1 * 64 * 32];
    int64_t xs[4] = {1, 1, 64, 32};
    higan_var *y0, *y1, *y2;
    int64_t i, n;
    int same = 1, differ = 0;
    cfg.resolution = 2; cfg.max_dim = 8; cfg.dropout = 0.2f;
    higan_params_init(&P);
    higan_style_backbone_register(&a, &P, "B", &cfg);
    higan_params_alloc(&P);
    higan_rng_seed(&rng, 3);
    higan_style_backbone_init(&a, &rng, HIGAN_INIT_N02);
    higan_rng_fill_uniform(&rng, x, 64 * 32, -1.0f, 1.0f);
    CHECK(a.blocks[0].dropout == 0.1f && a.blocks[4].dropout == 0.2f, "dropout: first stage p/2, second stage p");
    higan_arena_init(&arena, (size_t)16 << 20);
    higan_tape_init(&t, &arena, 1024);
    higan_no_grad_begin(&t);
    y0 = higan_style_backbone_forward(&t, &a, higan_var_wrap(&t, x, 4, xs), 0, NULL, NULL);
    set_dropout(&a, 0.0f);                      /* the eval result must not depend on p */
    y1 = higan_style_backbone_forward(&t, &a, higan_var_wrap(&t, x, 4, xs), 0, NULL, NULL);
    n = y0 && y1 ? higan_var_numel(y0) : 0;
    for (i = 0; i < n; ++i) same &= y0->data[i] == y1->data[i];
    CHECK(n > 0 && same, "eval: dropout is the identity");
    /* train: batch statistics either way; with p > 0 the output changes, and the same rng
       seed gives the same output */
    y0 = higan_style_backbone_forward(&t, &a, higan_var_wrap(&t, x, 4, xs), 1, NULL, NULL);
    set_dropout(&a, 0.2f);
    higan_rng_seed(&rng, 9);
    y1 = higan_style_backbone_forward(&t, &a, higan_var_wrap(&t, x, 4, xs), 1, &rng, NULL);
    higan_rng_seed(&rng, 9);
    y2 = higan_style_backbone_forward(&t, &a, higan_var_wrap(&t, x, 4, xs), 1, &rng, NULL);
    same = y0 && y1 && y2;
    for (i = 0; same && i < n; ++i) { differ |= y1->data[i] != y0->data[i]; same &= y1->data[i] == y2->data[i]; }
    CHECK(same && differ, "train: dropout changes the output, reproducibly from the rng seed");
    higan_no_grad_end(&t);
    higan_tape_free(&t);
    higan_arena_free(&arena);
    higan_params_free(&P);
}

/* ==== official sizes: shapes, finite values; thread count does not change a bit =============== */
static void test_full_size(void) {
    higan_params P;
    higan_style_backbone bb;
    higan_style_encoder enc;
    higan_writer_identifier wid;
    higan_recognizer rec;
    higan_arena arena;
    higan_tape t;
    higan_rng rng;
    int64_t xs[4] = {2, 1, 64, 128}, i, n;
    int lens[2] = {128, 96}, threads[2] = {1, 3}, k, finite = 1, same = 1;
    float *x = (float *)malloc(sizeof(float) * 2 * 64 * 128), *keep[2][3] = {{NULL, NULL, NULL}, {NULL, NULL, NULL}};
    int64_t sizes[3] = {0, 0, 0};
    higan_params_init(&P);
    higan_style_backbone_register(&bb, &P, "StyleBackbone", NULL);
    higan_style_encoder_register(&enc, &P, "StyleEncoder", 256, 32);
    higan_writer_identifier_register(&wid, &P, "WriterIdentifier", 256, 372);
    higan_recognizer_register(&rec, &P, "Recognizer", NULL);
    CHECK(higan_params_alloc(&P) == HIGAN_OK, "alloc the official B + E + W + R");
    higan_rng_seed(&rng, 42);
    higan_style_backbone_init(&bb, &rng, HIGAN_INIT_N02);
    higan_style_encoder_init(&enc, &rng, HIGAN_INIT_TORCH);
    higan_writer_identifier_init(&wid, &rng, HIGAN_INIT_TORCH);
    higan_recognizer_init(&rec, &rng, HIGAN_INIT_TORCH);
    higan_rng_fill_uniform(&rng, x, 2 * 64 * 128, -1.0f, 1.0f);
    for (i = 96; i < 128; ++i) for (k = 0; k < 64; ++k) x[64 * 128 + k * 128 + i] = -1.0f;
    higan_arena_init(&arena, (size_t)256 << 20);
    higan_tape_init(&t, &arena, 4096);
    for (k = 0; k < 2; ++k) {
        higan_var *xv, *seq, *feats[3], *z, *w, *lp, *L;
        int nthreads = higan_get_num_threads();
        higan_set_num_threads(threads[k]);
        higan_tape_reset(&t);
        higan_params_zero_grad(&P);
        xv = higan_var_wrap(&t, x, 4, xs);
        xv->requires_grad = 1;
        /* eval keeps the running stats unchanged between the two runs */
        seq = higan_style_backbone_forward(&t, &bb, xv, 0, NULL, feats);
        z = higan_style_encoder_forward(&t, &enc, seq, lens, 0, NULL, NULL, NULL, NULL);
        w = higan_writer_identifier_forward(&t, &wid, seq, lens);
        lp = higan_recognizer_forward(&t, &rec, xv, lens, 0, NULL);
        if (k == 0)
            CHECK(seq && seq->shape[1] == 256 && seq->shape[2] == 8 && feats[0]->shape[1] == 64 &&
                  feats[0]->shape[2] == 16 && feats[0]->shape[3] == 35 && feats[1]->shape[1] == 128 &&
                  feats[1]->shape[3] == 18 && feats[2]->shape[1] == 256 && feats[2]->shape[2] == 3 &&
                  feats[2]->shape[3] == 8 && z && z->shape[1] == 32 && w && w->shape[1] == 372 && lp &&
                  lp->shape[0] == 2 && lp->shape[1] == 8 && lp->shape[2] == 80,
                  "official sizes, 64x128: seq [2,256,8], feat2 [2,64,16,35], feat3 [2,128,8,18], "
                  "feat4 [2,256,3,8], z [2,32], WID [2,372], logits [2,8,80]");
        L = lp ? higan_add(&t, higan_add(&t, higan_sum_all(&t, z), higan_sum_all(&t, w)), higan_sum_all(&t, lp)) : NULL;
        CHECK(L && higan_tape_backward(&t, L, NULL) == HIGAN_OK, "official sizes, %d thread(s): forward and backward %s",
              threads[k], L ? "" : higan_last_error());
        higan_set_num_threads(nthreads);
        if (!L) break;
        sizes[0] = higan_var_numel(xv); sizes[1] = higan_var_numel(lp); sizes[2] = P.n_param;
        keep[k][0] = (float *)malloc(sizeof(float) * (size_t)sizes[0]); memcpy(keep[k][0], xv->grad, sizeof(float) * (size_t)sizes[0]);
        keep[k][1] = (float *)malloc(sizeof(float) * (size_t)sizes[1]); memcpy(keep[k][1], lp->data, sizeof(float) * (size_t)sizes[1]);
        keep[k][2] = (float *)malloc(sizeof(float) * (size_t)sizes[2]); memcpy(keep[k][2], P.grad, sizeof(float) * (size_t)sizes[2]);
        if (k == 0) printf("      official sizes: arena peak %.1f MB, %d tape entries\n", (double)arena.peak / (1 << 20), t.count);
    }
    if (keep[1][0]) {
        for (k = 0; k < 3; ++k) {
            n = sizes[k];
            for (i = 0; i < n; ++i) { finite &= isfinite(keep[0][k][i]) ? 1 : 0; same &= keep[0][k][i] == keep[1][k][i]; }
        }
        CHECK(finite, "official sizes: finite logits and gradients");
        CHECK(same, "official sizes: logits, input and parameter gradients bit-identical for 1 and 3 threads");
    }
    for (k = 0; k < 2; ++k) { free(keep[k][0]); free(keep[k][1]); free(keep[k][2]); }
    free(x);
    higan_tape_free(&t);
    higan_arena_free(&arena);
    higan_params_free(&P);
}

int main(void) {
    printf("CPU level: %s\n", higan_cpu_level_name(higan_cpu_level()));
    test_alphabet();
    test_counts();
    test_init();
    test_backbone_oracle();
    test_recognizer_oracle();
    test_gradcheck();
    test_dropout();
    test_full_size();
    return check_finish();
}
