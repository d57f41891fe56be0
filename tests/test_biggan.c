/* Tests of the BigGAN-side networks (higan.h): Generator, Discriminator,
   PatchDiscriminator and the all-patches extractor, against tests/oracle/make_biggan.py
   (PyTorch 1.13, official module structure and state_dict keys, reduced widths), plus
   finite-difference checks, the official parameter counts and the load errors. */
#define HIGAN_IMPLEMENTATION
#include "higan.h"
#include "check.h"

/* fp32 against PyTorch: forward outputs and gradients */
#define ATOL 1e-5f
#define RTOL 1e-4f

/* The backward seed of the oracle (loss = sum(out * r)): same floats as seed_r() there. */
static float *seed_r(int64_t n) {
    float *r = (float *)malloc(sizeof(float) * (size_t)n);
    int64_t i;
    for (i = 0; i < n; ++i) r[i] = (float)(((i * 37) % 101) - 50) / 50.0f;
    return r;
}

/* |got - ref| <= atol + rtol |ref| everywhere? Quiet; adds the max difference to *maxd. */
static int close_quiet(const float *got, const float *ref, int64_t n, float atol, float rtol,
                       double *maxd) {
    int64_t i;
    int ok = 1;
    for (i = 0; i < n; ++i) {
        double d = fabs((double)got[i] - (double)ref[i]);
        if (!(d <= atol + rtol * fabs((double)ref[i]))) ok = 0;
        if (d > *maxd || d != d) *maxd = d != d ? 1e30 : d;
    }
    return ok;
}

/* Gradients: training-mode BatchNorm makes every gradient upstream of it a difference of
   large sums (its backward subtracts the batch means of dy and dy*x_hat), so fp32 rounding
   is relative to the scale of the whole tensor, not to each element: the conv biases in
   front of a BN have an exact gradient 0 and get fp32 noise ~1e-5 on both sides, and small
   elements of a tensor whose largest entries are ~100 carry errors ~1e-4. PyTorch float32
   itself differs from its float64 (the reference here) by up to 1.1e-5 x max|ref| on this
   fixture. So gradients get atol + rtol |ref| + GRAD_SCALE_TOL * max|ref| per tensor, and
   a tensor whose reference is 0 up to float64 rounding (the G conv biases in train mode,
   all followed by a BN that removes them) gets atol ZERO_GRAD_TOL: fp32 cancellation noise
   of a sum over B*H*W (up to 24576) values, which PyTorch float32 shows too (4.3e-5). */
#define GRAD_SCALE_TOL 3e-5f
#define ZERO_GRAD_TOL 1e-4f
static float max_abs(const float *x, int64_t n) {
    float m = 0;
    int64_t i;
    for (i = 0; i < n; ++i) if (fabsf(x[i]) > m) m = fabsf(x[i]);
    return m;
}
static int grad_close(const char *name, const float *got, const float *ref, int64_t n,
                      int verbose, double *maxd, double *max_scaled) {
    float scale = max_abs(ref, n), atol = scale < 1e-9f ? ZERO_GRAD_TOL : ATOL + GRAD_SCALE_TOL * scale;
    double d = 0;
    int ok = close_quiet(got, ref, n, atol, RTOL, &d);
    if (d > *maxd) *maxd = d;
    if (scale >= 1e-9f && d / scale > *max_scaled) *max_scaled = d / scale;
    if (verbose || !ok) {
        char label[256];
        if (scale < 1e-9f) snprintf(label, sizeof label, "%s (exactly 0: atol %.0e)", name, (double)atol);
        else snprintf(label, sizeof label, "%s (atol %.2g = 1e-5 + %.0e x max|ref| %.3g)", name,
                      (double)atol, (double)GRAD_SCALE_TOL, (double)scale);
        check_close(label, got, ref, n, atol, RTOL);
    }
    return ok;
}

/* Compare every parameter gradient with "<tag>.grad.<name>" and every buffer (plus the
   embedding weight, renormalised in place) with "<tag>.after.<name>". */
static void compare_state(const char *what, const higan_params *P, const higan_safetensors *st,
                          const char *tag) {
    char key[256];
    int i, ngrad = 0, nbuf = 0, bad = 0;
    double maxg = 0, maxs = 0, maxb = 0;
    for (i = 0; i < P->count; ++i) {
        const higan_param_entry *e = &P->entries[i];
        int64_t n = 0;
        float *ref;
        int is_emb = strstr(e->name, "text_embedding.weight") != NULL;
        if (e->kind == HIGAN_PARAM) {
            snprintf(key, sizeof key, "%s.grad.%s", tag, e->name);
            if (!(ref = check_load(st, key, &n))) { ++bad; continue; }
            if (n != e->numel) { ++bad; CHECK(0, "%s: %lld values, model %lld", key, (long long)n, (long long)e->numel); }
            else bad += !grad_close(key, higan_params_grad(P, i), ref, n, 0, &maxg, &maxs);
            ++ngrad;
            free(ref);
        }
        if (e->kind == HIGAN_BUFFER || is_emb) {
            snprintf(key, sizeof key, "%s.after.%s", tag, e->name);
            if (!(ref = check_load(st, key, &n))) { ++bad; continue; }
            if (n != e->numel || !close_quiet(higan_params_data(P, i), ref, n, ATOL, RTOL, &maxb)) {
                ++bad;
                check_close(key, higan_params_data(P, i), ref, n < e->numel ? n : e->numel, ATOL, RTOL);
            }
            ++nbuf;
            free(ref);
        }
    }
    CHECK(bad == 0, "%s: %d parameter gradients (max |diff| %.3g, %.2g x max|ref|) and %d "
          "buffers after (max |diff| %.3g) match the oracle", what, ngrad, maxg, maxs, nbuf, maxb);
}

typedef struct { float *value, *buffer; } snapshot;
static snapshot snap_take(const higan_params *P) {
    snapshot s;
    s.value = (float *)malloc(sizeof(float) * (size_t)(P->n_param ? P->n_param : 1));
    s.buffer = (float *)malloc(sizeof(float) * (size_t)(P->n_buffer ? P->n_buffer : 1));
    memcpy(s.value, P->value, sizeof(float) * (size_t)P->n_param);
    memcpy(s.buffer, P->buffer, sizeof(float) * (size_t)P->n_buffer);
    return s;
}
static void snap_restore(higan_params *P, const snapshot *s) {
    memcpy(P->value, s->value, sizeof(float) * (size_t)P->n_param);
    memcpy(P->buffer, s->buffer, sizeof(float) * (size_t)P->n_buffer);
    higan_params_zero_grad(P);
}
static void snap_free(snapshot *s) { free(s->value); free(s->buffer); }

static int64_t meta_int(const higan_safetensors *st, const char *key, int64_t dflt) {
    const char *v = higan_safetensors_meta(st, key);
    return v ? (int64_t)atol(v) : dflt;
}

static int *load_ints(const higan_safetensors *st, const char *name, int64_t *n) {
    float *f = check_load(st, name, n);
    int *r;
    int64_t i;
    if (!f) return NULL;
    r = (int *)malloc(sizeof(int) * (size_t)*n);
    for (i = 0; i < *n; ++i) r[i] = (int)f[i];
    free(f);
    return r;
}

/* ---- Generator against the oracle -------------------------------------------------------- */
static void test_generator_oracle(void) {
    higan_safetensors st;
    higan_params P;
    higan_generator G;
    higan_generator_config cfg;
    higan_arena A;
    higan_tape T;
    snapshot s0;
    int64_t nz, nl, nb, B, L, i, nout;
    float *z0 = NULL, *r = NULL, *outref, *dzref;
    int *labels = NULL, *lens = NULL, mode;
    higan_status rc;
    if (!check_open_fixture(&st, "biggan_generator.safetensors")) return;
    cfg = higan_generator_default_config();
    cfg.ch = meta_int(&st, "ch", 2);
    cfg.style_dim = meta_int(&st, "style_dim", 32);
    cfg.embed_dim = meta_int(&st, "embed_dim", 8);
    cfg.n_class = meta_int(&st, "n_class", 80);
    cfg.bottom = meta_int(&st, "bottom", 4);
    cfg.input_nc = meta_int(&st, "input_nc", 1);
    higan_params_init(&P);
    higan_generator_register(&G, &P, "", &cfg);   /* bare keys; the file nests them */
    higan_params_alloc(&P);
    rc = higan_params_load(&P, &st, "Generator.", NULL);
    CHECK(rc == HIGAN_OK, "G: load %d tensors by official names (prefix 'Generator.'): %s",
          P.count, rc == HIGAN_OK ? "ok" : higan_last_error());
    z0 = check_load(&st, "z", &nz);
    labels = load_ints(&st, "labels", &nl);
    lens = load_ints(&st, "lens", &nb);
    if (rc != HIGAN_OK || !z0 || !labels || !lens) goto done;
    B = nb; L = nl / nb;
    s0 = snap_take(&P);
    higan_arena_init(&A, (size_t)64 << 20);
    higan_tape_init(&T, &A, 4096);
    nout = B * cfg.input_nc * 16 * cfg.bottom * 8 * cfg.bottom * L;
    r = seed_r(nout);
    for (mode = 0; mode < 2; ++mode) {
        const char *tag = mode ? "eval" : "train";
        int train = !mode;
        char key[64], what[64];
        higan_var *z, *out;
        int64_t shp[2], n;
        snap_restore(&P, &s0);
        higan_tape_reset(&T);
        shp[0] = B; shp[1] = cfg.style_dim;
        z = higan_var_new(&T, 2, shp);
        memcpy(z->data, z0, sizeof(float) * (size_t)nz);
        z->requires_grad = 1;
        out = higan_generator_forward(&T, &G, z, labels, lens, L, train);
        CHECK(out != NULL, "G %s: forward (%s)", tag, out ? "ok" : higan_last_error());
        if (!out) continue;
        CHECK(out->ndim == 4 && out->shape[0] == B && out->shape[1] == cfg.input_nc &&
              out->shape[2] == 16 * cfg.bottom && out->shape[3] == 8 * cfg.bottom * L,
              "G %s: output shape [%lld,%lld,%lld,%lld]", tag, (long long)out->shape[0],
              (long long)out->shape[1], (long long)out->shape[2], (long long)out->shape[3]);
        snprintf(key, sizeof key, "%s.out", tag);
        if ((outref = check_load(&st, key, &n))) {
            snprintf(what, sizeof what, "G %s: output", tag);
            check_close(what, out->data, outref, n, ATOL, RTOL);
            free(outref);
        }
        if (!train) {   /* background -1 from column 32 * len on, exactly */
            int64_t b, c, h, W = out->shape[3], H = out->shape[2], masked = 0, wrong = 0, inside_m1 = 0;
            for (b = 0; b < B; ++b)
                for (h = 0; h < H; ++h)
                    for (c = 0; c < W; ++c) {
                        float v = out->data[(b * H + h) * W + c];
                        if (c >= 32 * (int64_t)lens[b]) { ++masked; wrong += v != -1.0f; }
                        else inside_m1 += v == -1.0f;
                    }
            CHECK(masked > 0 && wrong == 0 && inside_m1 == 0,
                  "G eval: %lld values beyond 32*len are exactly -1 (%lld wrong), none inside",
                  (long long)masked, (long long)wrong);
        }
        rc = higan_tape_backward(&T, out, r);
        CHECK(rc == HIGAN_OK, "G %s: backward", tag);
        snprintf(key, sizeof key, "%s.dz", tag);
        if ((dzref = check_load(&st, key, &n))) {
            double m1 = 0, m2 = 0;
            snprintf(what, sizeof what, "G %s: d z", tag);
            grad_close(what, z->grad, dzref, n, 1, &m1, &m2);
            free(dzref);
        }
        snprintf(what, sizeof what, "G %s", tag);
        compare_state(what, &P, &st, tag);
    }
    /* train mode under no_grad: same output, and u0/sv0/stored stats still advance */
    {
        higan_var *z, *out;
        int64_t shp[2], n;
        snap_restore(&P, &s0);
        higan_tape_reset(&T);
        higan_no_grad_begin(&T);
        shp[0] = B; shp[1] = cfg.style_dim;
        z = higan_var_wrap(&T, z0, 2, shp);
        out = higan_generator_forward(&T, &G, z, labels, lens, L, 1);
        higan_no_grad_end(&T);
        CHECK(out && T.count == 0, "G train under no_grad: forward, nothing recorded");
        if (out && (outref = check_load(&st, "train.out", &n))) {
            check_close("G train under no_grad: output", out->data, outref, n, ATOL, RTOL);
            free(outref);
        }
        {   /* buffers only: gradients are all zero here, so compare just the buffers */
            char key[256];
            int bad = 0, nbuf = 0;
            double maxb = 0;
            for (i = 0; i < P.count; ++i) {
                float *ref;
                if (P.entries[i].kind != HIGAN_BUFFER) continue;
                snprintf(key, sizeof key, "train.after.%s", P.entries[i].name);
                if (!(ref = check_load(&st, key, &n))) { ++bad; continue; }
                bad += !close_quiet(higan_params_data(&P, (int)i), ref, n, ATOL, RTOL, &maxb);
                ++nbuf;
                free(ref);
            }
            CHECK(bad == 0, "G train under no_grad: %d buffers (u0, sv0, stored stats) updated "
                  "as in train (max |diff| %.3g)", nbuf, maxb);
        }
    }
    /* results do not depend on the thread count */
    {
        int t0 = higan_get_num_threads(), k;
        float *o[2] = {NULL, NULL};
        for (k = 0; k < 2; ++k) {
            higan_var *z, *out;
            int64_t shp[2];
            higan_set_num_threads(k + 1);
            snap_restore(&P, &s0);
            higan_tape_reset(&T);
            shp[0] = B; shp[1] = cfg.style_dim;
            z = higan_var_wrap(&T, z0, 2, shp);
            z->requires_grad = 1;
            out = higan_generator_forward(&T, &G, z, labels, lens, L, 1);
            if (!out) break;
            higan_tape_backward(&T, out, r);
            o[k] = (float *)malloc(sizeof(float) * (size_t)(nout + P.n_param));
            memcpy(o[k], out->data, sizeof(float) * (size_t)nout);
            memcpy(o[k] + nout, P.grad, sizeof(float) * (size_t)P.n_param);
        }
        higan_set_num_threads(t0);
        CHECK(o[0] && o[1] && memcmp(o[0], o[1], sizeof(float) * (size_t)(nout + P.n_param)) == 0,
              "G train: output and parameter gradients bit-identical for 1 and 2 threads");
        free(o[0]); free(o[1]);
    }
    snap_free(&s0);
    higan_tape_free(&T);
    higan_arena_free(&A);
done:
    free(z0); free(labels); free(lens); free(r);
    higan_params_free(&P);
    higan_safetensors_free(&st);
}

/* ---- Discriminator / PatchDiscriminator against the oracle -------------------------------- */
static void test_discriminator_oracle(int patch) {
    const char *file = patch ? "biggan_patch.safetensors" : "biggan_discriminator.safetensors";
    const char *prefix = patch ? "PatchDiscriminator." : "Discriminator.";
    const char *nm = patch ? "P" : "D";
    higan_safetensors st;
    higan_params P;
    higan_discriminator D;
    higan_discriminator_config cfg;
    higan_arena A;
    higan_tape T;
    snapshot s0;
    int64_t nx, nb, ny;
    float *x0 = NULL, *r = NULL, *ref;
    int *xl = NULL, *yl = NULL, mode;
    higan_status rc;
    if (!check_open_fixture(&st, file)) return;
    cfg = higan_discriminator_default_config(patch ? 32 : 64);
    cfg.ch = meta_int(&st, "ch", 2);
    higan_params_init(&P);
    higan_discriminator_register(&D, &P, "", &cfg);
    higan_params_alloc(&P);
    rc = higan_params_load(&P, &st, prefix, NULL);
    CHECK(rc == HIGAN_OK, "%s: load %d tensors by official names (prefix '%s'): %s", nm, P.count,
          prefix, rc == HIGAN_OK ? "ok" : higan_last_error());
    x0 = check_load(&st, "x", &nx);
    xl = load_ints(&st, patch ? "lens" : "x_lens", &nb);
    if (!patch) yl = load_ints(&st, "y_lens", &ny);
    if (rc != HIGAN_OK || !x0 || !xl || (!patch && !yl)) goto done;
    s0 = snap_take(&P);
    higan_arena_init(&A, (size_t)64 << 20);
    higan_tape_init(&T, &A, 4096);
    for (mode = 0; mode < 2; ++mode) {
        const char *tag = mode ? "eval" : "train";
        char key[64], what[64];
        higan_var *x, *in, *out;
        int64_t shp[4], n;
        snap_restore(&P, &s0);
        higan_tape_reset(&T);
        shp[0] = nb; shp[1] = 1; shp[2] = 64; shp[3] = nx / (nb * 64);
        x = higan_var_new(&T, 4, shp);
        memcpy(x->data, x0, sizeof(float) * (size_t)nx);
        x->requires_grad = 1;
        if (patch) {
            size_t before;
            in = higan_extract_patches(&T, x, xl, 32, 8);
            before = A.used - A.recycled_bytes;
            out = higan_discriminator_forward(&T, &D, in, NULL, NULL, !mode);
            if (in && out) {
                /* values kept for backward: about 2.6 x the first conv's output (in-place
                   ReLUs, pooled and added values handed back); all of them would be > 6 x */
                double first = (double)in->shape[0] * (double)cfg.ch * 32 * 32 * sizeof(float);
                double kept = (double)(A.used - A.recycled_bytes - before);
                CHECK(kept < 3.2 * first, "%s %s: forward keeps %.2f x the first conv's output", nm, tag,
                      kept / first);
            }
        } else {
            out = higan_discriminator_forward(&T, &D, x, xl, yl, !mode);
        }
        CHECK(out != NULL, "%s %s: forward (%s)", nm, tag, out ? "ok" : higan_last_error());
        if (!out) continue;
        snprintf(key, sizeof key, "%s.out", tag);
        if ((ref = check_load(&st, key, &n))) {
            snprintf(what, sizeof what, "%s %s: scores", nm, tag);
            CHECK(out->ndim == 2 && out->shape[0] == n && out->shape[1] == 1,
                  "%s: output shape [%lld, 1]", what, (long long)n);
            if (higan_var_numel(out) == n) check_close(what, out->data, ref, n, ATOL, RTOL);
            free(ref);
            r = seed_r(n);
            /* eval: the last backward of a step, handing values back as it goes */
            rc = mode ? higan_tape_backward_release(&T, out, r) : higan_tape_backward(&T, out, r);
            free(r); r = NULL;
            CHECK(rc == HIGAN_OK, "%s %s: backward", nm, tag);
        }
        snprintf(key, sizeof key, "%s.dx", tag);
        if ((ref = check_load(&st, key, &n))) {
            double m1 = 0, m2 = 0;
            snprintf(what, sizeof what, patch ? "%s %s: d image (through the patches)" : "%s %s: d x",
                     nm, tag);
            grad_close(what, x->grad, ref, n, 1, &m1, &m2);
            free(ref);
        }
        snprintf(what, sizeof what, "%s %s", nm, tag);
        compare_state(what, &P, &st, tag);
    }
    snap_free(&s0);
    higan_tape_free(&T);
    higan_arena_free(&A);
done:
    free(x0); free(xl); free(yl);
    higan_params_free(&P);
    higan_safetensors_free(&st);
}

/* ---- extract_patches: brute force and finite differences --------------------------------- */
typedef struct { const int *lens; int64_t size, step; } patch_cfg;
static higan_var *build_patches(higan_tape *t, higan_var **in, void *ctx) {
    patch_cfg *c = (patch_cfg *)ctx;
    return higan_extract_patches(t, in[0], c->lens, c->size, c->step);
}
static void test_patches(void) {
    /* x [2, 2, 10, 11], windows 4 at stride 3: rows (10-4)/3+1 = 3; cols (11-4)/3+1 = 3 and
       (5-4)/3+1 = 1 for lens {11 (or more), 5}; a third image narrower than a window */
    int lens[3] = {13, 5, 3};
    int64_t B = 3, C = 2, H = 10, W = 11, size = 4, step = 3, P, p, n, i, j, b, r, c, k, bad = 0;
    float *x, *y, *g, *dx, *ref;
    patch_cfg pc;
    check_input in;
    P = higan_extract_patches_count(lens, B, H, W, size, step);
    CHECK(P == 3 * (3 + 1 + 0), "extract_patches: count %lld (expect 12)", (long long)P);
    CHECK(higan_extract_patches_count(NULL, 2, 64, 76, 32, 8) == 2 * 5 * 6 &&
          higan_extract_patches_count(lens, 1, 64, 128, 32, 8) == 0,
          "extract_patches: HiGAN+ counts (5 rows x ((len-32)//8+1) cols, none below 32)");
    n = B * C * H * W;
    x = (float *)malloc(sizeof(float) * (size_t)n);
    dx = (float *)calloc((size_t)n, sizeof(float));
    ref = (float *)calloc((size_t)n, sizeof(float));
    y = (float *)malloc(sizeof(float) * (size_t)(P * C * size * size));
    g = (float *)malloc(sizeof(float) * (size_t)(P * C * size * size));
    for (i = 0; i < n; ++i) x[i] = (float)i;
    for (i = 0; i < P * C * size * size; ++i) g[i] = (float)((i * 7) % 13) - 6.0f;
    higan_extract_patches_forward(y, x, lens, B, C, H, W, size, step);
    higan_extract_patches_backward(dx, g, lens, B, C, H, W, size, step);
    /* brute force in the documented order: image, row, column */
    p = 0;
    for (b = 0; b < B; ++b) {
        int64_t len = lens[b] > W ? W : lens[b], cols = len < size ? 0 : (len - size) / step + 1;
        for (r = 0; r < (H - size) / step + 1; ++r)
            for (c = 0; c < cols; ++c, ++p)
                for (k = 0; k < C; ++k)
                    for (i = 0; i < size; ++i)
                        for (j = 0; j < size; ++j) {
                            int64_t xi = ((b * C + k) * H + r * step + i) * W + c * step + j;
                            int64_t yi = ((p * C + k) * size + i) * size + j;
                            bad += y[yi] != x[xi];
                            ref[xi] += g[yi];
                        }
    }
    CHECK(p == P && bad == 0, "extract_patches: forward equals the brute-force windows");
    check_close("extract_patches: backward equals the brute-force scatter-add", dx, ref, n, 0, 0);
    /* finite differences through the tape op (linear op: exact up to rounding) */
    for (i = 0; i < n; ++i) x[i] = (float)((i * 29) % 17) / 17.0f - 0.5f;
    pc.lens = lens; pc.size = size; pc.step = step;
    in.data = x; in.ndim = 4; in.shape[0] = B; in.shape[1] = C; in.shape[2] = H; in.shape[3] = W;
    in.grad = 1;
    check_gradients("extract_patches", build_patches, &pc, &in, 1, 1e-2f, 1e-3f, 1e-3f);
    free(x); free(y); free(g); free(dx); free(ref);
}

/* ---- the private helper ops: finite differences -------------------------------------------- */
static higan_var *build_mask(higan_tape *t, higan_var **in, void *ctx) {
    return higan__bg_mask_width(t, in[0], (const int *)ctx, -1.0f);
}
static higan_var *build_div(higan_tape *t, higan_var **in, void *ctx) {
    return higan_div_rows(t, in[0], (const int *)ctx);
}
static void test_helpers(void) {
    int cols[2] = {3, 9}, den[3] = {3, 1, 2};
    float x[2 * 2 * 3 * 5], v[3 * 4];
    check_input in;
    int i;
    for (i = 0; i < 60; ++i) x[i] = (float)((i * 13) % 11) / 11.0f - 0.3f;
    for (i = 0; i < 12; ++i) v[i] = (float)((i * 5) % 7) / 7.0f - 0.4f;
    in.data = x; in.ndim = 4; in.shape[0] = 2; in.shape[1] = 2; in.shape[2] = 3; in.shape[3] = 5;
    in.grad = 1;
    check_gradients("G eval mask (columns >= len set to -1)", build_mask, cols, &in, 1, 1e-2f, 1e-3f, 1e-3f);
    in.data = v; in.ndim = 2; in.shape[0] = 3; in.shape[1] = 4;
    check_gradients("D division by y_lens", build_div, den, &in, 1, 1e-2f, 1e-3f, 1e-3f);
}

/* ---- whole networks: finite differences (eval: the buffers stay fixed) -------------------- */
typedef struct { higan_generator *g; const int *labels, *lens; int64_t L; } g_ctx;
static higan_var *build_g(higan_tape *t, higan_var **in, void *ctx) {
    g_ctx *c = (g_ctx *)ctx;
    return higan_generator_forward(t, c->g, in[0], c->labels, c->lens, c->L, 0);
}
typedef struct { higan_discriminator *d; const int *xl, *yl; } d_ctx;
static higan_var *build_d(higan_tape *t, higan_var **in, void *ctx) {
    d_ctx *c = (d_ctx *)ctx;
    return higan_discriminator_forward(t, c->d, in[0], c->xl, c->yl, 0);
}
static void test_gradcheck_networks(void) {
    higan_params PG, PD;
    higan_generator G;
    higan_discriminator D;
    higan_generator_config gc = higan_generator_default_config();
    higan_discriminator_config dc = higan_discriminator_default_config(64);
    higan_rng rng;
    g_ctx gx;
    d_ctx dx;
    check_input in;
    int labels[2 * 3] = {3, 9, 5, 7, 0, 0}, lens[2] = {3, 1}, xl[2] = {24, 13}, yl[2] = {3, 2};
    float z[2 * 4], img[2 * 1 * 64 * 24];
    int i;
    higan_rng_seed(&rng, 7);
    /* tiny generator: 16 x 8L images */
    gc.ch = 1; gc.style_dim = 4; gc.embed_dim = 3; gc.n_class = 12; gc.bottom = 1;
    higan_params_init(&PG);
    higan_generator_register(&G, &PG, "", &gc);
    higan_params_alloc(&PG);
    higan_generator_init(&G, &rng);
    for (i = 0; i < 2 * 4; ++i) z[i] = higan_rng_normal(&rng);
    gx.g = &G; gx.labels = labels; gx.lens = lens; gx.L = 3;
    in.data = z; in.ndim = 2; in.shape[0] = 2; in.shape[1] = 4; in.grad = 1;
    check_gradients("tiny Generator eval, d z", build_g, &gx, &in, 1, 1e-3f, 2e-3f, 2e-2f);
    /* small discriminator (ch 1) on 64 x 24 images with lengths */
    dc.ch = 1;
    higan_params_init(&PD);
    higan_discriminator_register(&D, &PD, "", &dc);
    higan_params_alloc(&PD);
    higan_discriminator_init(&D, &rng);
    for (i = 0; i < 2 * 64 * 24; ++i) img[i] = higan_rng_uniform(&rng) * 2.0f - 1.0f;
    dx.d = &D; dx.xl = xl; dx.yl = yl;
    in.data = img; in.ndim = 4; in.shape[0] = 2; in.shape[1] = 1; in.shape[2] = 64; in.shape[3] = 24;
    check_gradients("small Discriminator eval, d x", build_d, &dx, &in, 1, 1e-2f, 2e-3f, 2e-2f);
    higan_params_free(&PG);
    higan_params_free(&PD);
}

/* ---- official configuration: counts, key names, init, a forward ------------------------- */
static void count_params(const higan_params *P, int64_t *n_param, int *n_keys) {
    int i;
    *n_param = 0;
    for (i = 0; i < P->count; ++i)
        if (P->entries[i].kind == HIGAN_PARAM) *n_param += P->entries[i].numel;
    *n_keys = P->count;
}
static int has_shape(const higan_params *P, const char *name, int ndim, int64_t a, int64_t b,
                     int64_t c, int64_t d) {
    int h = higan_params_find(P, name), k;
    int64_t s[4];
    s[0] = a; s[1] = b; s[2] = c; s[3] = d;
    if (h < 0 || P->entries[h].ndim != ndim) return 0;
    for (k = 0; k < ndim; ++k) if (P->entries[h].shape[k] != s[k]) return 0;
    return 1;
}
static void test_official_config(void) {
    higan_params PG, PD, PP;
    higan_generator G;
    higan_discriminator D, Pd;
    higan_discriminator_config pc = higan_discriminator_default_config(32);
    int64_t n;
    int keys, ok;
    higan_params_init(&PG);
    higan_params_init(&PD);
    higan_params_init(&PP);
    higan_generator_register(&G, &PG, "Generator", NULL);
    higan_discriminator_register(&D, &PD, "Discriminator", NULL);
    higan_discriminator_register(&Pd, &PP, "PatchDiscriminator", &pc);
    count_params(&PG, &n, &keys);
    CHECK(n == 3935937 && keys == 129, "Generator: %lld params (3,935,937), %d keys (129)", (long long)n, keys);
    count_params(&PD, &n, &keys);
    CHECK(n == 2366145 && keys == 48, "Discriminator: %lld params (2,366,145), %d keys (48)", (long long)n, keys);
    count_params(&PP, &n, &keys);
    CHECK(n == 2366145 && keys == 48, "PatchDiscriminator: %lld params (2,366,145), %d keys (48)", (long long)n, keys);
    ok = has_shape(&PG, "Generator.text_embedding.weight", 2, 80, 120, 0, 0) &&
         has_shape(&PG, "Generator.filter_linear.weight", 2, 8192, 152, 0, 0) &&
         has_shape(&PG, "Generator.filter_linear.u0", 2, 1, 8192, 0, 0) &&
         has_shape(&PG, "Generator.filter_linear.sv0", 1, 1, 0, 0, 0) &&
         has_shape(&PG, "Generator.style_linear.weight", 2, 128, 32, 0, 0) &&
         has_shape(&PG, "Generator.blocks.0.0.conv1.weight", 4, 256, 512, 3, 3) &&
         has_shape(&PG, "Generator.blocks.0.0.conv_sc.weight", 4, 256, 512, 1, 1) &&
         has_shape(&PG, "Generator.blocks.3.0.conv_sc.bias", 1, 64, 0, 0, 0) &&
         has_shape(&PG, "Generator.blocks.0.0.bn1.gain.weight", 2, 512, 32, 0, 0) &&
         has_shape(&PG, "Generator.blocks.0.0.bn2.bias.u0", 2, 1, 256, 0, 0) &&
         has_shape(&PG, "Generator.blocks.0.0.bn1.stored_mean", 1, 512, 0, 0, 0) &&
         higan_params_find(&PG, "Generator.blocks.0.0.bn1.gain.bias") < 0 &&
         has_shape(&PG, "Generator.output_layer.0.gain", 1, 64, 0, 0, 0) &&
         has_shape(&PG, "Generator.output_layer.0.stored_var", 1, 64, 0, 0, 0) &&
         has_shape(&PG, "Generator.output_layer.2.weight", 4, 1, 64, 3, 3) &&
         PG.entries[higan_params_find(&PG, "Generator.blocks.0.0.bn1.stored_mean")].kind == HIGAN_BUFFER &&
         PG.entries[higan_params_find(&PG, "Generator.output_layer.0.gain")].kind == HIGAN_PARAM;
    CHECK(ok, "Generator: official key names, shapes and kinds");
    ok = has_shape(&PD, "Discriminator.blocks.0.0.conv1.weight", 4, 64, 1, 3, 3) &&
         has_shape(&PD, "Discriminator.blocks.0.0.conv_sc.weight", 4, 64, 1, 1, 1) &&
         has_shape(&PD, "Discriminator.blocks.3.0.conv2.weight", 4, 256, 256, 3, 3) &&
         higan_params_find(&PD, "Discriminator.blocks.3.0.conv_sc.weight") < 0 &&
         has_shape(&PD, "Discriminator.linear.weight", 2, 1, 256, 0, 0) &&
         has_shape(&PD, "Discriminator.linear.u0", 2, 1, 1, 0, 0) &&
         has_shape(&PP, "PatchDiscriminator.blocks.2.0.conv_sc.weight", 4, 256, 128, 1, 1);
    CHECK(ok, "Discriminator / PatchDiscriminator: official key names and shapes");
    /* init statistics and a forward of the full-size networks */
    if (higan_params_alloc(&PG) == HIGAN_OK && higan_params_alloc(&PD) == HIGAN_OK) {
        higan_rng rng;
        higan_arena A;
        higan_tape T;
        double s = 0, s2 = 0;
        int64_t i, m;
        int h, okb = 1, labels[2] = {30, 31}, lens[1] = {2}, xl[1] = {64}, yl[1] = {2};
        float *w, *u, bound, zz[32];
        higan_var *z, *img, *score;
        int64_t shp[2];
        higan_rng_seed(&rng, 1);
        higan_generator_init(&G, &rng);
        higan_discriminator_init(&D, &rng);
        h = higan_params_find(&PG, "Generator.filter_linear.weight");
        w = higan_params_data(&PG, h);
        m = PG.entries[h].numel;
        for (i = 0; i < m; ++i) { s += w[i]; s2 += (double)w[i] * w[i]; }
        s /= (double)m; s2 = sqrt(s2 / (double)m - s * s);
        h = higan_params_find(&PG, "Generator.blocks.1.0.conv1.bias");
        w = higan_params_data(&PG, h);
        bound = (float)(1.0 / sqrt(512.0 * 9.0 / 2.0));   /* fan_in = 256 * 3 * 3 */
        for (i = 0; i < PG.entries[h].numel; ++i) okb &= fabsf(w[i]) <= bound;
        u = higan_params_data(&PG, higan_params_find(&PG, "Generator.filter_linear.u0"));
        {
            double us = 0;
            for (i = 0; i < 8192; ++i) us += (double)u[i] * u[i];
            okb &= fabs(sqrt(us / 8192.0) - 1.0) < 0.05;
        }
        okb &= higan_params_data(&PG, higan_params_find(&PG, "Generator.filter_linear.sv0"))[0] == 1.0f &&
               higan_params_data(&PG, higan_params_find(&PG, "Generator.blocks.2.0.bn2.stored_var"))[5] == 1.0f &&
               higan_params_data(&PG, higan_params_find(&PG, "Generator.output_layer.0.gain"))[7] == 1.0f &&
               higan_params_data(&PG, higan_params_find(&PG, "Generator.text_embedding.weight"))[3] != 0.0f;
        CHECK(fabs(s) < 1e-3 && fabs(s2 - 0.02) < 1e-3 && okb,
              "init N02: weight mean %.2g std %.4f; biases within 1/sqrt(fan_in); u0 N(0,1); "
              "sv0, stored_var, gain 1; padding row not zero", s, s2);
        higan_arena_init(&A, (size_t)256 << 20);
        higan_tape_init(&T, &A, 4096);
        for (i = 0; i < 32; ++i) zz[i] = higan_rng_normal(&rng);
        for (h = 0; h < 2; ++h) {
            int64_t bad = 0;
            higan_tape_reset(&T);
            shp[0] = 1; shp[1] = 32;
            z = higan_var_wrap(&T, zz, 2, shp);
            img = higan_generator_forward(&T, &G, z, labels, lens, 2, h);
            score = img ? higan_discriminator_forward(&T, &D, img, xl, yl, h) : NULL;
            if (img) for (i = 0; i < 64 * 64; ++i) bad += !(img->data[i] >= -1.0f && img->data[i] <= 1.0f);
            CHECK(img && score && img->shape[2] == 64 && img->shape[3] == 64 && bad == 0 &&
                  score->data[0] == score->data[0],
                  "official G -> D, %s: image [1,1,64,64] in [-1,1], finite score (%s)",
                  h ? "train" : "eval", score ? "ok" : higan_last_error());
        }
        higan_tape_free(&T);
        higan_arena_free(&A);
    }
    higan_params_free(&PG);
    higan_params_free(&PD);
    higan_params_free(&PP);
}

/* ---- load errors name the tensor ----------------------------------------------------------- */
static void test_load_errors(void) {
    higan_safetensors st, bad;
    higan_safetensors_writer w;
    higan_params P;
    higan_generator G;
    higan_generator_config cfg = higan_generator_default_config();
    const char *path = "build/test_biggan_bad.safetensors";
    float extra[3] = {1, 2, 3};
    int i;
    higan_status rc;
    const char *msg;
    if (!check_open_fixture(&st, "biggan_generator.safetensors")) return;
    cfg.ch = 2; cfg.embed_dim = 8;
    higan_params_init(&P);
    higan_generator_register(&G, &P, "Generator", &cfg);
    higan_params_alloc(&P);
    higan_safetensors_writer_init(&w);
    for (i = 0; i < P.count; ++i) {
        const higan_st_tensor *t = higan_safetensors_find(&st, P.entries[i].name);
        int64_t shape[4];
        int d;
        if (!t) { CHECK(0, "fixture lacks %s", P.entries[i].name); continue; }
        if (strcmp(P.entries[i].name, "Generator.blocks.1.0.conv2.u0") == 0) continue;  /* missing */
        for (d = 0; d < t->ndim; ++d) shape[d] = t->shape[d];
        if (strcmp(P.entries[i].name, "Generator.style_linear.bias") == 0) shape[0] -= 1;  /* mis-shaped */
        higan_safetensors_writer_add(&w, P.entries[i].name, HIGAN_F32, t->ndim, shape, st.data + t->begin);
    }
    {
        int64_t s1 = 3;
        higan_safetensors_writer_add(&w, "Generator.blocks.9.0.conv1.weight", HIGAN_F32, 1, &s1, extra);
    }
    rc = higan_safetensors_writer_save(&w, path);
    higan_safetensors_writer_free(&w);
    CHECK(rc == HIGAN_OK, "write %s", path);
    if (rc == HIGAN_OK && higan_safetensors_load(&bad, path) == HIGAN_OK) {
        rc = higan_params_load(&P, &bad, "", NULL);
        msg = higan_last_error();
        CHECK(rc == HIGAN_ERR_FORMAT && strstr(msg, "Generator.blocks.1.0.conv2.u0") &&
              strstr(msg, "Generator.style_linear.bias") && strstr(msg, "Generator.blocks.9.0.conv1.weight"),
              "load errors name the missing, mis-shaped and unexpected tensors: %s", msg);
        higan_safetensors_free(&bad);
        /* the correct file with this prefix loads */
        rc = higan_params_load(&P, &st, "", NULL);
        CHECK(rc != HIGAN_OK && strstr(higan_last_error(), "unexpected") != NULL,
              "the fixture (outputs too) loaded with prefix \"\": other tensors are unexpected");
    }
    remove(path);
    higan_params_free(&P);
    higan_safetensors_free(&st);
}

int main(void) {
    printf("cpu level: %s\n", higan_cpu_level_name(higan_cpu_level()));
    test_patches();
    test_helpers();
    test_generator_oracle();
    test_discriminator_oracle(0);
    test_discriminator_oracle(1);
    test_gradcheck_networks();
    test_official_config();
    test_load_errors();
    return check_finish();
}
