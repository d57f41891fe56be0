/* Tests of the sequence ops and losses: LSTM (packed, variable lengths), CTC loss, greedy CTC
   decoding, cross-entropy (higan.h). Finite-difference gradient checks through the tape
   ops and PyTorch oracle comparisons (tests/oracle/make_seq.py). */
#define HIGAN_IMPLEMENTATION
#include "higan.h"
#include "check.h"

static void fill_normal(float *x, int64_t n, uint64_t seed, float scale) {
    higan_rng r;
    higan_rng_seed(&r, seed);
    higan_rng_fill_normal(&r, x, n, 0.0f, scale);
}
static void fill_uniform(float *x, int64_t n, uint64_t seed, float lo, float hi) {
    higan_rng r;
    higan_rng_seed(&r, seed);
    higan_rng_fill_uniform(&r, x, n, lo, hi);
}

/* ==== LSTM ================================================================================ */
#define MAXW 64
typedef struct {
    int64_t B, T, IN, H;
    int L, bidir;
    int lengths[16];
    float *w[MAXW];        /* every weight, PyTorch order */
    int64_t wshape[MAXW][2];
    int wndim[MAXW];
    int free_first, free_count;   /* weights [free_first, free_first + free_count) are inputs */
} lstm_cfg;

static int lstm_nw(const lstm_cfg *c) { return c->L * (c->bidir ? 2 : 1) * 4; }

static void lstm_cfg_init(lstm_cfg *c, int64_t B, int64_t T, int64_t IN, int64_t H, int L,
                          int bidir, const int *lengths, uint64_t seed) {
    int64_t D = bidir ? 2 : 1;
    int l, d, k;
    memset(c, 0, sizeof *c);
    c->B = B; c->T = T; c->IN = IN; c->H = H; c->L = L; c->bidir = bidir;
    for (k = 0; k < B; ++k) c->lengths[k] = lengths[k];
    for (l = 0; l < L; ++l)
        for (d = 0; d < D; ++d) {
            int base = (int)((l * D + d) * 4);
            int64_t in_dim = l == 0 ? IN : D * H;
            c->wndim[base] = 2; c->wshape[base][0] = 4 * H; c->wshape[base][1] = in_dim;
            c->wndim[base + 1] = 2; c->wshape[base + 1][0] = 4 * H; c->wshape[base + 1][1] = H;
            c->wndim[base + 2] = 1; c->wshape[base + 2][0] = 4 * H;
            c->wndim[base + 3] = 1; c->wshape[base + 3][0] = 4 * H;
            for (k = 0; k < 4; ++k) {
                int64_t n = c->wshape[base + k][0] * (c->wndim[base + k] == 2 ? c->wshape[base + k][1] : 1);
                c->w[base + k] = (float *)malloc(sizeof(float) * (size_t)n);
                fill_uniform(c->w[base + k], n, seed + (uint64_t)(base + k) * 7919u, -0.7f, 0.7f);
            }
        }
}
static void lstm_cfg_free(lstm_cfg *c) {
    int k;
    for (k = 0; k < lstm_nw(c); ++k) free(c->w[k]);
}

/* in[0] = x, in[1..] = the free weights; the rest are wrapped constants */
static higan_var *build_lstm(higan_tape *t, higan_var **in, void *ctx) {
    lstm_cfg *c = (lstm_cfg *)ctx;
    higan_var *w[MAXW];
    int k;
    for (k = 0; k < lstm_nw(c); ++k) {
        if (k >= c->free_first && k < c->free_first + c->free_count) w[k] = in[1 + k - c->free_first];
        else w[k] = higan_var_wrap(t, c->w[k], c->wndim[k], c->wshape[k]);
    }
    return higan_lstm(t, in[0], c->lengths, (int)c->H, c->L, c->bidir, w);
}

static void lstm_gradcheck(const char *name, lstm_cfg *c, int free_first, int free_count) {
    check_input ins[16];
    float *x;
    int64_t nx = c->B * c->T * c->IN;
    int k;
    x = (float *)malloc(sizeof(float) * (size_t)nx);
    fill_normal(x, nx, 99, 1.0f);
    ins[0].data = x; ins[0].ndim = 3; ins[0].grad = 1;
    ins[0].shape[0] = c->B; ins[0].shape[1] = c->T; ins[0].shape[2] = c->IN; ins[0].shape[3] = 1;
    c->free_first = free_first; c->free_count = free_count;
    for (k = 0; k < free_count; ++k) {
        int wi = free_first + k;
        ins[1 + k].data = c->w[wi]; ins[1 + k].ndim = c->wndim[wi]; ins[1 + k].grad = 1;
        ins[1 + k].shape[0] = c->wshape[wi][0]; ins[1 + k].shape[1] = c->wshape[wi][1];
        ins[1 + k].shape[2] = 1; ins[1 + k].shape[3] = 1;
    }
    check_gradients(name, build_lstm, c, ins, 1 + free_count, 1e-2f, 2e-3f, 2e-2f);
    free(x);
}

static void test_lstm_gradcheck(void) {
    lstm_cfg c;
    int len3[3] = {4, 3, 1}, len2[2] = {2, 4};
    /* bidirectional, 2 layers: x plus layer-0 weights, then x plus layer-1 weights */
    lstm_cfg_init(&c, 3, 4, 3, 2, 2, 1, len3, 11);
    lstm_gradcheck("lstm bi L2 (layer-0 weights)", &c, 0, 8);
    lstm_gradcheck("lstm bi L2 (layer-1 weights)", &c, 8, 8);
    lstm_cfg_free(&c);
    /* unidirectional, 2 layers, all weights; T = 5 > max length */
    lstm_cfg_init(&c, 2, 5, 3, 3, 2, 0, len2, 12);
    lstm_gradcheck("lstm uni L2", &c, 0, 8);
    lstm_cfg_free(&c);
}

/* A PyTorch LSTM case of seq_lstm.safetensors: forward, dx and every weight gradient. */
static void test_lstm_oracle_case(const higan_safetensors *st, const char *prefix, int L, int bidir) {
    static const char *kinds[4] = {"weight_ih", "weight_hh", "bias_ih", "bias_hh"};
    char name[128];
    const higan_st_tensor *tx, *tlen, *tw;
    float *x, *yref, *dy, *dxref, *w[MAXW], *gref[MAXW];
    higan_var *wv[MAXW], *xv, *y;
    int64_t lens64[8], B, T, IN, H, D = bidir ? 2 : 1, nw = L * D * 4, ny;
    int lengths[8], l, d, k, ok = 1;
    higan_arena arena;
    higan_tape tape;
    snprintf(name, sizeof name, "%sx", prefix);
    tx = higan_safetensors_find(st, name);
    snprintf(name, sizeof name, "%slengths", prefix);
    tlen = higan_safetensors_find(st, name);
    snprintf(name, sizeof name, "%sweight_hh_l0", prefix);
    tw = higan_safetensors_find(st, name);
    if (!tx || !tlen || !tw) { CHECK(0, "lstm oracle %s: tensors missing", prefix); return; }
    B = tx->shape[0]; T = tx->shape[1]; IN = tx->shape[2]; H = tw->shape[1];
    higan_safetensors_read_i64(st, tlen->name, lens64, B);
    for (k = 0; k < B; ++k) lengths[k] = (int)lens64[k];
    snprintf(name, sizeof name, "%sx", prefix); x = check_load(st, name, NULL);
    snprintf(name, sizeof name, "%sy", prefix); yref = check_load(st, name, &ny);
    snprintf(name, sizeof name, "%sdy", prefix); dy = check_load(st, name, NULL);
    snprintf(name, sizeof name, "%sdx", prefix); dxref = check_load(st, name, NULL);
    for (l = 0; l < L; ++l)
        for (d = 0; d < D; ++d)
            for (k = 0; k < 4; ++k) {
                int i = (int)((l * D + d) * 4 + k);
                snprintf(name, sizeof name, "%s%s_l%d%s", prefix, kinds[k], l, d ? "_reverse" : "");
                w[i] = check_load(st, name, NULL);
                snprintf(name, sizeof name, "%sgrad.%s_l%d%s", prefix, kinds[k], l, d ? "_reverse" : "");
                gref[i] = check_load(st, name, NULL);
                if (!w[i] || !gref[i]) ok = 0;
            }
    if (!x || !yref || !dy || !dxref || !ok) return;
    higan_arena_init(&arena, 4 << 20);
    higan_tape_init(&tape, &arena, 64);
    {
        int64_t xs[3];
        xs[0] = B; xs[1] = T; xs[2] = IN;
        xv = higan_var_wrap(&tape, x, 3, xs);
        xv->requires_grad = 1;
    }
    for (l = 0; l < L; ++l)
        for (d = 0; d < D; ++d)
            for (k = 0; k < 4; ++k) {
                int i = (int)((l * D + d) * 4 + k);
                int64_t s[2];
                s[0] = 4 * H; s[1] = k == 0 ? (l == 0 ? IN : D * H) : H;
                wv[i] = higan_var_wrap(&tape, w[i], k < 2 ? 2 : 1, s);
                wv[i]->requires_grad = 1;
            }
    y = higan_lstm(&tape, xv, lengths, (int)H, L, bidir, wv);
    CHECK(y != NULL && y->ndim == 3 && y->shape[2] == D * H, "lstm %s: output [B,T,D*H]", prefix);
    if (y) {
        char label[160];
        snprintf(label, sizeof label, "lstm %s forward vs torch", prefix);
        check_close(label, y->data, yref, ny, 1e-5f, 1e-4f);
        CHECK(higan_tape_backward(&tape, y, dy) == HIGAN_OK, "lstm %s: backward", prefix);
        snprintf(label, sizeof label, "lstm %s dx vs torch", prefix);
        check_close(label, xv->grad, dxref, B * T * IN, 1e-5f, 1e-4f);
        for (k = 0; k < nw; ++k) {
            snprintf(label, sizeof label, "lstm %s dweight[%d] (%s l%d%s) vs torch", prefix, k,
                     kinds[k % 4], (int)(k / (4 * D)), (k / 4) % D ? " reverse" : "");
            check_close(label, wv[k]->grad, gref[k], higan_var_numel(wv[k]), 1e-5f, 1e-4f);
        }
        /* inference path (no cache kept) gives the same output bit for bit */
        {
            float *y2 = (float *)malloc(sizeof(float) * (size_t)ny);
            higan_var *y3;
            size_t before;
            higan_status st2 = higan_lstm_forward(y2, NULL, x, lengths, (const float *const *)w, B, T,
                                                  IN, H, L, bidir, &arena);
            CHECK(st2 == HIGAN_OK && memcmp(y2, y->data, sizeof(float) * (size_t)ny) == 0,
                  "lstm %s: cache-less forward identical", prefix);
            higan_no_grad_begin(&tape);
            before = arena.used;
            y3 = higan_lstm(&tape, xv, lengths, (int)H, L, bidir, wv);
            CHECK(y3 && memcmp(y3->data, y->data, sizeof(float) * (size_t)ny) == 0 &&
                  arena.used - before < (size_t)(higan_lstm_cache_floats(B, T, H, L, bidir) * 4),
                  "lstm %s: no_grad forward identical and keeps no cache", prefix);
            higan_no_grad_end(&tape);
            free(y2);
        }
    }
    higan_tape_free(&tape);
    higan_arena_free(&arena);
    free(x); free(yref); free(dy); free(dxref);
    for (k = 0; k < nw; ++k) { free(w[k]); free(gref[k]); }
}

static void test_lstm_oracle(void) {
    higan_safetensors st;
    if (!check_open_fixture(&st, "seq_lstm.safetensors")) return;
    test_lstm_oracle_case(&st, "bi.", 2, 1);
    test_lstm_oracle_case(&st, "uni.", 2, 0);
    test_lstm_oracle_case(&st, "bi3.", 3, 1);
    higan_safetensors_free(&st);
}

/* Results bit-identical for 1 and 2 threads (bigger shapes so the parallel loops run),
   only dx requested (weights frozen: dweights skipped but dx flows). */
static void test_lstm_threads_and_frozen(void) {
    lstm_cfg c;
    /* B*H >= 4096 so the per-step loops run in parallel too */
    int lens[16] = {9, 7, 3, 9, 1, 5, 8, 2, 9, 4, 6, 9, 1, 2, 8, 7}, run, k;
    int64_t B = 16, T = 10, IN = 12, H = 256, xs[3];
    float *x = (float *)malloc(sizeof(float) * (size_t)(B * T * IN));
    float *out[2], *dx[2];
    higan_arena arena;
    higan_tape tape;
    lstm_cfg_init(&c, B, T, IN, H, 2, 1, lens, 21);
    fill_normal(x, B * T * IN, 5, 1.0f);
    higan_arena_init(&arena, 64 << 20);
    higan_tape_init(&tape, &arena, 64);
    xs[0] = B; xs[1] = T; xs[2] = IN;
    for (run = 0; run < 2; ++run) {
        higan_var *w[MAXW], *xv, *y;
        higan_set_num_threads(run + 1);
        higan_tape_reset(&tape);
        xv = higan_var_wrap(&tape, x, 3, xs);
        xv->requires_grad = 1;
        for (k = 0; k < lstm_nw(&c); ++k) w[k] = higan_var_wrap(&tape, c.w[k], c.wndim[k], c.wshape[k]);
        y = higan_lstm(&tape, xv, c.lengths, (int)H, 2, 1, w);
        out[run] = dx[run] = NULL;
        if (!y || higan_tape_backward(&tape, y, NULL) != HIGAN_OK) { CHECK(0, "lstm threads run %d: %s", run, higan_last_error()); continue; }
        out[run] = (float *)malloc(sizeof(float) * (size_t)higan_var_numel(y));
        dx[run] = (float *)malloc(sizeof(float) * (size_t)(B * T * IN));
        memcpy(out[run], y->data, sizeof(float) * (size_t)higan_var_numel(y));
        memcpy(dx[run], xv->grad, sizeof(float) * (size_t)(B * T * IN));
    }
    higan_set_num_threads(1);
    if (out[0] && out[1]) {
        int64_t i, n = B * T * IN, pad_nonzero = 0;
        CHECK(memcmp(out[0], out[1], sizeof(float) * (size_t)(B * T * 2 * H)) == 0 &&
              memcmp(dx[0], dx[1], sizeof(float) * (size_t)n) == 0,
              "lstm: output and dx bit-identical with 1 and 2 threads");
        for (i = 0; i < B; ++i) {
            int64_t t, j;
            for (t = lens[i]; t < T; ++t)
                for (j = 0; j < 2 * H; ++j) pad_nonzero += out[0][(i * T + t) * 2 * H + j] != 0.0f;
            for (t = lens[i]; t < T; ++t)
                for (j = 0; j < IN; ++j) pad_nonzero += dx[0][(i * T + t) * IN + j] != 0.0f;
        }
        CHECK(pad_nonzero == 0, "lstm: padded outputs and padded dx are zero");
    }
    for (run = 0; run < 2; ++run) { free(out[run]); free(dx[run]); }
    /* arena overflow gives NULL, not a crash */
    {
        higan_arena small;
        higan_tape t2;
        higan_var *w[MAXW], *xv;
        higan_arena_init(&small, 4096);
        higan_tape_init(&t2, &small, 16);
        xv = higan_var_wrap(&t2, x, 3, xs);
        for (k = 0; k < lstm_nw(&c); ++k) w[k] = higan_var_wrap(&t2, c.w[k], c.wndim[k], c.wshape[k]);
        CHECK(higan_lstm(&t2, xv, c.lengths, (int)H, 2, 1, w) == NULL &&
              higan_tape_status(&t2) == HIGAN_ERR_NOMEM, "lstm: arena overflow returns NULL");
        higan_tape_free(&t2);
        higan_arena_free(&small);
    }
    higan_tape_free(&tape);
    higan_arena_free(&arena);
    lstm_cfg_free(&c);
    free(x);
}

/* ==== CTC ================================================================================= */
/* A local log-softmax over the last dim, so the CTC gradcheck runs through logits (PyTorch's
   CTC gradient assumes normalised log_probs) without depending on another fragment. */
typedef struct { higan_var *x, *y; int64_t rows, cols; } lsm_ctx;
static void lsm_backward(higan_tape *t, void *p) {
    lsm_ctx *c = (lsm_ctx *)p;
    float *dx = higan_var_grad(t, c->x);
    int64_t r, j;
    if (!dx) return;
    for (r = 0; r < c->rows; ++r) {
        double s = 0;
        for (j = 0; j < c->cols; ++j) s += c->y->grad[r * c->cols + j];
        for (j = 0; j < c->cols; ++j)
            dx[r * c->cols + j] += c->y->grad[r * c->cols + j] - (float)(exp((double)c->y->data[r * c->cols + j]) * s);
    }
}
static higan_var *local_log_softmax(higan_tape *t, higan_var *x) {
    higan_var *y;
    lsm_ctx *c;
    int64_t r, j, cols = x->shape[x->ndim - 1], rows = higan_var_numel(x) / cols;
    if (!(y = higan_op_output(t, x->ndim, x->shape, &x, 1))) return NULL;
    for (r = 0; r < rows; ++r) {
        double m = x->data[r * cols], s = 0;
        for (j = 1; j < cols; ++j) if (x->data[r * cols + j] > m) m = x->data[r * cols + j];
        for (j = 0; j < cols; ++j) s += exp(x->data[r * cols + j] - m);
        for (j = 0; j < cols; ++j) y->data[r * cols + j] = (float)(x->data[r * cols + j] - m - log(s));
    }
    if (y->requires_grad) {
        if (!(c = (lsm_ctx *)higan_tape_ctx(t, sizeof *c))) return NULL;
        c->x = x; c->y = y; c->rows = rows; c->cols = cols;
        higan_tape_record(t, y, lsm_backward, c);
    }
    return y;
}

typedef struct { const int *targets, *input_lengths, *target_lengths; int zero_infinity; } ctc_cfg;
static higan_var *build_ctc(higan_tape *t, higan_var **in, void *ctx) {
    ctc_cfg *c = (ctc_cfg *)ctx;
    return higan_ctc_loss(t, local_log_softmax(t, in[0]), c->targets, c->input_lengths,
                          c->target_lengths, 0, c->zero_infinity);
}

static void test_ctc_gradcheck(void) {
    /* T 6, B 4, C 4: repeated labels, a shorter input, an empty target, and (under
       zero_infinity) an infeasible sample that must contribute nothing */
    int targets[] = {1, 1, 2, 3, 2, 2, /* b2: */ 1, 2, 1, 3, 2};
    int input_lengths[4] = {6, 5, 6, 3};
    int target_lengths[4] = {3, 3, 0, 5};
    float z[6 * 4 * 4];
    check_input in;
    ctc_cfg c;
    fill_normal(z, 96, 31, 1.5f);
    in.data = z; in.ndim = 3; in.shape[0] = 6; in.shape[1] = 4; in.shape[2] = 4; in.shape[3] = 1;
    in.grad = 1;
    c.targets = targets; c.input_lengths = input_lengths; c.target_lengths = target_lengths;
    c.zero_infinity = 1;
    check_gradients("ctc (through log_softmax, zero_infinity)", build_ctc, &c, &in, 1, 1e-2f, 1e-3f, 1e-2f);
    /* all feasible, zero_infinity off */
    target_lengths[3] = 1;
    c.zero_infinity = 0;
    check_gradients("ctc (through log_softmax)", build_ctc, &c, &in, 1, 1e-2f, 1e-3f, 1e-2f);
}

static int *load_ints(const higan_safetensors *st, const char *name, int64_t *n_out) {
    const higan_st_tensor *t = higan_safetensors_find(st, name);
    int64_t *tmp, i;
    int *r;
    if (!t) { CHECK(0, "fixture tensor '%s' missing", name); return NULL; }
    tmp = (int64_t *)malloc(sizeof(int64_t) * (size_t)(t->numel + 1));
    r = (int *)malloc(sizeof(int) * (size_t)(t->numel + 1));
    if (higan_safetensors_read_i64(st, name, tmp, t->numel) != HIGAN_OK) {
        CHECK(0, "fixture tensor '%s': %s", name, higan_last_error());
        free(tmp); free(r); return NULL;
    }
    for (i = 0; i < t->numel; ++i) r[i] = (int)tmp[i];
    if (n_out) *n_out = t->numel;
    free(tmp);
    return r;
}

static void test_ctc_oracle_case(const higan_safetensors *st, const char *prefix, int zero_infinity) {
    char name[128], label[160];
    const higan_st_tensor *tlp;
    float *lp, *loss_ref, *scale, *grad_ref;
    int *targets, *il, *tl;
    higan_arena arena;
    higan_tape tape;
    higan_var *lpv, *y;
    int64_t n;
    snprintf(name, sizeof name, "%slog_probs", prefix);
    tlp = higan_safetensors_find(st, name);
    lp = check_load(st, name, &n);
    snprintf(name, sizeof name, "%sloss", prefix); loss_ref = check_load(st, name, NULL);
    snprintf(name, sizeof name, "%sscale", prefix); scale = check_load(st, name, NULL);
    snprintf(name, sizeof name, "%sgrad", prefix); grad_ref = check_load(st, name, NULL);
    snprintf(name, sizeof name, "%stargets", prefix); targets = load_ints(st, name, NULL);
    snprintf(name, sizeof name, "%sinput_lengths", prefix); il = load_ints(st, name, NULL);
    snprintf(name, sizeof name, "%starget_lengths", prefix); tl = load_ints(st, name, NULL);
    if (!tlp || !lp || !loss_ref || !scale || !grad_ref || !targets || !il || !tl) return;
    higan_arena_init(&arena, 1 << 20);
    higan_tape_init(&tape, &arena, 16);
    lpv = higan_var_wrap(&tape, lp, 3, tlp->shape);
    lpv->requires_grad = 1;
    y = higan_ctc_loss(&tape, lpv, targets, il, tl, 0, zero_infinity);
    CHECK(y && y->ndim == 1 && y->shape[0] == 1, "ctc %s: scalar output", prefix);
    if (y) {
        snprintf(label, sizeof label, "ctc %s loss vs torch", prefix);
        check_close(label, y->data, loss_ref, 1, 1e-5f, 1e-5f);
        CHECK(higan_tape_backward(&tape, y, scale) == HIGAN_OK, "ctc %s backward", prefix);
        snprintf(label, sizeof label, "ctc %s dlog_probs vs torch", prefix);
        check_close(label, lpv->grad, grad_ref, n, 1e-6f, 1e-4f);
    }
    higan_tape_free(&tape);
    higan_arena_free(&arena);
    free(lp); free(loss_ref); free(scale); free(grad_ref); free(targets); free(il); free(tl);
}

static void test_ctc_oracle(void) {
    higan_safetensors st;
    if (!check_open_fixture(&st, "seq_ctc.safetensors")) return;
    test_ctc_oracle_case(&st, "a.", 1);
    test_ctc_oracle_case(&st, "b.", 0);
    higan_safetensors_free(&st);
}

/* Hand-checked values: one step, one label: nll = -lp[label]; infeasible without
   zero_infinity is inf. */
static void test_ctc_small(void) {
    float lp[2 * 3], nll[1], y, alpha[2 * 3];
    int targets[2] = {1, 1}, il[1] = {1}, tl[1] = {1};
    int k;
    for (k = 0; k < 3; ++k) lp[k] = logf(k == 1 ? 0.5f : 0.25f);
    higan_ctc_loss_forward(&y, nll, alpha, lp, targets, il, tl, 1, 1, 3, 0, 0);
    CHECK(fabsf(y - logf(2.0f)) < 1e-6f, "ctc: one step one label: loss = -log p (%g)", y);
    tl[0] = 2;   /* "1 1" needs 3 steps */
    higan_ctc_loss_forward(&y, nll, alpha, lp, targets, il, tl, 1, 1, 3, 0, 0);
    CHECK(isinf(y) && y > 0, "ctc: infeasible target gives +inf without zero_infinity");
    higan_ctc_loss_forward(&y, nll, alpha, lp, targets, il, tl, 1, 1, 3, 0, 1);
    CHECK(y == 0.0f, "ctc: infeasible target gives 0 with zero_infinity");
}

/* CTC and cross-entropy: loss and gradients bit-identical with 1 and 2 threads (sizes above
   the parallel thresholds). */
static void test_losses_threads(void) {
    int64_t T = 60, B = 3, C = 80, N = 300, NC = 256, run, k;
    int targets[3 * 20], il[3] = {60, 41, 55}, tl[3] = {20, 7, 13}, labels[300];
    float *z = (float *)malloc(sizeof(float) * (size_t)(T * B * C));
    float *lg = (float *)malloc(sizeof(float) * (size_t)(N * NC));
    float loss[2][2], *g[2][2];
    higan_arena arena;
    higan_tape tape;
    for (k = 0; k < 60; ++k) targets[k] = 1 + (int)((k * 37) % 79);
    for (k = 0; k < N; ++k) labels[k] = (int)((k * 101) % NC);
    fill_normal(z, T * B * C, 51, 2.0f);
    fill_normal(lg, N * NC, 52, 3.0f);
    higan_arena_init(&arena, 16 << 20);
    higan_tape_init(&tape, &arena, 64);
    for (run = 0; run < 2; ++run) {
        int64_t s3[3], s2[2];
        higan_var *zv, *lv, *y1, *y2;
        higan_set_num_threads((int)run + 1);
        higan_tape_reset(&tape);
        s3[0] = T; s3[1] = B; s3[2] = C; s2[0] = N; s2[1] = NC;
        zv = higan_var_wrap(&tape, z, 3, s3); zv->requires_grad = 1;
        lv = higan_var_wrap(&tape, lg, 2, s2); lv->requires_grad = 1;
        y1 = higan_ctc_loss(&tape, local_log_softmax(&tape, zv), targets, il, tl, 0, 1);
        y2 = higan_cross_entropy(&tape, lv, labels);
        g[run][0] = g[run][1] = NULL;
        if (!y1 || !y2 || higan_tape_backward(&tape, y1, NULL) != HIGAN_OK ||
            higan_tape_backward(&tape, y2, NULL) != HIGAN_OK) { CHECK(0, "loss threads: %s", higan_last_error()); continue; }
        loss[run][0] = y1->data[0]; loss[run][1] = y2->data[0];
        g[run][0] = (float *)malloc(sizeof(float) * (size_t)(T * B * C));
        g[run][1] = (float *)malloc(sizeof(float) * (size_t)(N * NC));
        memcpy(g[run][0], zv->grad, sizeof(float) * (size_t)(T * B * C));
        memcpy(g[run][1], lv->grad, sizeof(float) * (size_t)(N * NC));
    }
    higan_set_num_threads(1);
    if (g[0][0] && g[1][0])
        CHECK(loss[0][0] == loss[1][0] && loss[0][1] == loss[1][1] && isfinite(loss[0][0]) &&
              memcmp(g[0][0], g[1][0], sizeof(float) * (size_t)(T * B * C)) == 0 &&
              memcmp(g[0][1], g[1][1], sizeof(float) * (size_t)(N * NC)) == 0,
              "ctc and cross_entropy: bit-identical with 1 and 2 threads");
    for (run = 0; run < 2; ++run) { free(g[run][0]); free(g[run][1]); }
    higan_tape_free(&tape);
    higan_arena_free(&arena);
    free(z); free(lg);
}

/* ==== greedy decoding ======================================================================= */
static void test_greedy_decode(void) {
    /* T 8, C 4, blank 0: path 1 1 0 1 2 2 0 0 -> 1 1 2 */
    static const int path[8] = {1, 1, 0, 1, 2, 2, 0, 0};
    float scores[8 * 4], lpb[8 * 2 * 4];
    int out[8], n, t, c, ok;
    for (t = 0; t < 8; ++t)
        for (c = 0; c < 4; ++c) scores[t * 4 + c] = c == path[t] ? 0.0f : -1.0f - 0.1f * (float)c;
    n = higan_ctc_greedy_decode(scores, 8, 4, 0, out, 8);
    CHECK(n == 3 && out[0] == 1 && out[1] == 1 && out[2] == 2, "greedy: 1 1 _ 1 2 2 _ _ -> 1 1 2 (n=%d)", n);
    n = higan_ctc_greedy_decode(scores, 8, 4, 0, out, 2);
    CHECK(n == 3 && out[0] == 1 && out[1] == 1, "greedy: truncated output returns full length");
    n = higan_ctc_greedy_decode(scores, 2, 4, 0, out, 8);
    CHECK(n == 1 && out[0] == 1, "greedy: repeats collapse (1 1 -> 1)");
    n = higan_ctc_greedy_decode(scores, 8, 4, 1, out, 8);
    CHECK(n == 3 && out[0] == 0 && out[1] == 2 && out[2] == 0, "greedy: other blank index (n=%d)", n);
    for (c = 0; c < 4; ++c) scores[c] = 0.0f;      /* tie: first max (blank) wins */
    n = higan_ctc_greedy_decode(scores, 1, 4, 0, out, 8);
    CHECK(n == 0, "greedy: ties go to the first maximum");
    CHECK(higan_ctc_greedy_decode(scores, 0, 4, 0, out, 8) == 0, "greedy: empty input");
    /* strided: [T,B,C] layout, sample 1 */
    for (t = 0; t < 8; ++t)
        for (c = 0; c < 4; ++c) {
            lpb[(t * 2 + 0) * 4 + c] = c == 3 ? 1.0f : 0.0f;
            lpb[(t * 2 + 1) * 4 + c] = c == path[7 - t] ? 1.0f : 0.0f;
        }
    n = higan_ctc_greedy_decode_strided(lpb + 4, 8, 8, 4, 0, out, 8);
    ok = n == 3 && out[0] == 2 && out[1] == 1 && out[2] == 1;
    CHECK(ok, "greedy strided: reversed path of sample 1 -> 2 1 1 (n=%d)", n);
}

/* ==== cross-entropy ======================================================================== */
static higan_var *build_ce(higan_tape *t, higan_var **in, void *ctx) {
    return higan_cross_entropy(t, in[0], (const int *)ctx);
}
static void test_cross_entropy(void) {
    float logits[4 * 5];
    int labels[4] = {0, 3, 4, 3};
    check_input in;
    higan_safetensors st;
    fill_normal(logits, 20, 41, 2.0f);
    in.data = logits; in.ndim = 2; in.shape[0] = 4; in.shape[1] = 5; in.shape[2] = 1; in.shape[3] = 1;
    in.grad = 1;
    check_gradients("cross_entropy", build_ce, labels, &in, 1, 1e-2f, 1e-3f, 1e-2f);
    /* large logits: numerically stable */
    {
        float big[2 * 3] = {1000.0f, 0.0f, -1000.0f, 88.0f, 90.0f, 89.0f}, y;
        int lab[2] = {0, 1};
        higan_cross_entropy_forward(&y, NULL, big, lab, 2, 3);
        CHECK(isfinite(y) && fabsf(y - 0.5f * 0.40760596f) < 1e-5f, "cross_entropy: stable for big logits (%g)", y);
    }
    if (check_open_fixture(&st, "seq_cross_entropy.safetensors")) {
        int64_t n;
        float *x = check_load(&st, "logits", &n), *loss = check_load(&st, "loss", NULL);
        float *scale = check_load(&st, "scale", NULL), *grad = check_load(&st, "grad", NULL);
        int *lab = load_ints(&st, "labels", NULL);
        const higan_st_tensor *tx = higan_safetensors_find(&st, "logits");
        if (x && loss && scale && grad && lab && tx) {
            higan_arena arena;
            higan_tape tape;
            higan_var *xv, *y;
            higan_arena_init(&arena, 1 << 16);
            higan_tape_init(&tape, &arena, 16);
            xv = higan_var_wrap(&tape, x, 2, tx->shape);
            xv->requires_grad = 1;
            y = higan_cross_entropy(&tape, xv, lab);
            if (y) {
                check_close("cross_entropy loss vs torch", y->data, loss, 1, 1e-5f, 1e-5f);
                CHECK(higan_tape_backward(&tape, y, scale) == HIGAN_OK, "cross_entropy backward");
                check_close("cross_entropy dlogits vs torch", xv->grad, grad, n, 1e-6f, 1e-4f);
            } else CHECK(0, "cross_entropy: %s", higan_last_error());
            higan_tape_free(&tape);
            higan_arena_free(&arena);
        }
        free(x); free(loss); free(scale); free(grad); free(lab);
        higan_safetensors_free(&st);
    }
}

/* The recurrent products' SIMD tiles (4 rows x 4 vectors) with row and column tails (B = 5,
   4H = 288, H = 72) at the detected level against the scalar level, output and every gradient;
   and the weight gradients bit-identical for 1 and 2 threads (one direction per thread). */
static void test_lstm_levels(void) {
    enum { B = 5, T = 6, IN = 20, H = 72, L = 2 };
    int lens[B] = {6, 3, 5, 1, 6}, run, k;
    higan_cpu level = higan_cpu_level();
    int64_t xs[3] = {B, T, IN}, nw, ny = B * T * 2 * H, total = 0, off;
    float *x = (float *)malloc(sizeof(float) * B * T * IN), *res[3];
    lstm_cfg c;
    higan_arena arena;
    higan_tape tape;
    lstm_cfg_init(&c, B, T, IN, H, L, 1, lens, 33);
    nw = lstm_nw(&c);
    for (k = 0; k < nw; ++k) total += c.wshape[k][0] * (c.wndim[k] == 2 ? c.wshape[k][1] : 1);
    total += ny + B * T * IN;
    fill_normal(x, B * T * IN, 9, 1.0f);
    higan_arena_init(&arena, 32 << 20);
    higan_tape_init(&tape, &arena, 64);
    for (run = 0; run < 3; ++run) {   /* scalar 1 thread, level 1 thread, level 2 threads */
        higan_var *w[MAXW], *xv, *y;
        res[run] = (float *)calloc((size_t)total, sizeof(float));
        higan_cpu_set_level(run == 0 ? HIGAN_CPU_SCALAR : level);
        higan_set_num_threads(run == 2 ? 2 : 1);
        higan_tape_reset(&tape);
        xv = higan_var_wrap(&tape, x, 3, xs);
        xv->requires_grad = 1;
        for (k = 0; k < nw; ++k) {
            w[k] = higan_var_wrap(&tape, c.w[k], c.wndim[k], c.wshape[k]);
            w[k]->requires_grad = 1;
        }
        y = higan_lstm(&tape, xv, c.lengths, H, L, 1, w);
        if (!y || higan_tape_backward(&tape, y, NULL) != HIGAN_OK) { CHECK(0, "lstm levels run %d: %s", run, higan_last_error()); continue; }
        memcpy(res[run], y->data, sizeof(float) * (size_t)ny);
        memcpy(res[run] + ny, xv->grad, sizeof(float) * B * T * IN);
        for (off = ny + B * T * IN, k = 0; k < nw; ++k) {
            int64_t n = higan_var_numel(w[k]);
            memcpy(res[run] + off, w[k]->grad, sizeof(float) * (size_t)n);
            off += n;
        }
    }
    higan_cpu_set_level(level);
    higan_set_num_threads(1);
    {
        char label[96];
        snprintf(label, sizeof label, "lstm %s vs scalar: output, dx and every dweight", higan_cpu_level_name(level));
        check_close(label, res[1], res[0], total, 1e-5f, 1e-4f);
        CHECK(memcmp(res[1], res[2], sizeof(float) * (size_t)total) == 0,
              "lstm: output, dx and dweights bit-identical with 1 and 2 threads");
    }
    for (run = 0; run < 3; ++run) free(res[run]);
    free(x);
    lstm_cfg_free(&c);
    higan_tape_free(&tape);
    higan_arena_free(&arena);
}

int main(void) {
    printf("cpu level: %s\n", higan_cpu_level_name(higan_cpu_level()));
    higan_set_num_threads(1);
    test_lstm_gradcheck();
    test_lstm_oracle();
    test_lstm_threads_and_frozen();
    test_lstm_levels();
    test_ctc_small();
    test_ctc_gradcheck();
    test_ctc_oracle();
    test_losses_threads();
    test_greedy_decode();
    test_cross_entropy();
    return check_finish();
}
