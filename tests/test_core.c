/* Core: arena, RNG, parameter store, tape mechanics, Adam against torch.optim.Adam. */
#define HIGAN_IMPLEMENTATION
#include "higan.h"
#include "check.h"

/* Two tiny ops written against the public tape API, so the tape is tested on its own. */
typedef struct { higan_var *a, *b, *y; } mul_ctx;
static void mul_backward(higan_tape *t, void *p) {
    mul_ctx *c = (mul_ctx *)p;
    float *da = higan_var_grad(t, c->a), *db = higan_var_grad(t, c->b);
    int64_t i, n = higan_var_numel(c->y);
    for (i = 0; i < n; ++i) {
        if (da) da[i] += c->y->grad[i] * c->b->data[i];
        if (db) db[i] += c->y->grad[i] * c->a->data[i];
    }
}
static higan_var *mul(higan_tape *t, higan_var *a, higan_var *b) {
    higan_var *in[2], *y;
    mul_ctx *c;
    int64_t i;
    in[0] = a; in[1] = b;
    if (!(y = higan_op_output(t, a->ndim, a->shape, in, 2))) return NULL;
    for (i = 0; i < higan_var_numel(y); ++i) y->data[i] = a->data[i] * b->data[i];
    if (y->requires_grad) {
        if (!(c = (mul_ctx *)higan_tape_ctx(t, sizeof *c))) return NULL;
        c->a = a; c->b = b; c->y = y;
        higan_tape_record(t, y, mul_backward, c);
    }
    return y;
}
typedef struct { higan_var *x, *y; } sum_ctx;
static void sum_backward(higan_tape *t, void *p) {
    sum_ctx *c = (sum_ctx *)p;
    float *dx = higan_var_grad(t, c->x);
    int64_t i;
    if (dx) for (i = 0; i < higan_var_numel(c->x); ++i) dx[i] += c->y->grad[0];
}
static higan_var *sum(higan_tape *t, higan_var *x) {
    int64_t one = 1, i;
    higan_var *y;
    sum_ctx *c;
    if (!(y = higan_op_output(t, 1, &one, &x, 1))) return NULL;
    y->data[0] = 0;
    for (i = 0; i < higan_var_numel(x); ++i) y->data[0] += x->data[i];
    if (y->requires_grad) {
        if (!(c = (sum_ctx *)higan_tape_ctx(t, sizeof *c))) return NULL;
        c->x = x; c->y = y;
        higan_tape_record(t, y, sum_backward, c);
    }
    return y;
}

static void test_arena(void) {
    higan_arena a;
    void *p, *q;
    size_t mark;
    CHECK(higan_arena_init(&a, 1000) == HIGAN_OK, "arena init");
    p = higan_arena_alloc(&a, 10);
    q = higan_arena_alloc(&a, 100);
    CHECK(p && q && ((uintptr_t)p % 64) == 0 && ((uintptr_t)q % 64) == 0, "arena: 64-byte aligned blocks");
    CHECK((char *)q - (char *)p == 64, "arena: blocks packed");
    mark = higan_arena_mark(&a);
    higan_arena_alloc(&a, 200);
    higan_arena_release(&a, mark);
    CHECK(higan_arena_mark(&a) == mark, "arena: release to mark");
    CHECK(higan_arena_alloc(&a, 5000) == NULL, "arena: overflow returns NULL");
    CHECK(higan_arena_alloc(&a, 1) == NULL, "arena: overflow is sticky");
    CHECK(higan_arena_status(&a) == HIGAN_ERR_NOMEM && strstr(higan_last_error(), "5312") != NULL,
          "arena: status names the bytes needed: %s", higan_last_error());
    higan_arena_reset(&a);
    CHECK(higan_arena_status(&a) == HIGAN_OK && higan_arena_alloc(&a, 64) != NULL, "arena: reset clears overflow");
    CHECK(a.peak >= 64 * 3 + 256, "arena: peak tracked (%zu)", a.peak);
    higan_arena_free(&a);
}

/* Recycled blocks: best fit, split, merge with both neighbours, trimmed by release. */
static void test_arena_recycle(void) {
    higan_arena a;
    unsigned char *b[6], *r;
    size_t mark;
    int i;
    higan_arena_init(&a, 1 << 16);
    for (i = 0; i < 6; ++i) b[i] = (unsigned char *)higan_arena_alloc(&a, 256);
    higan_arena_recycle(&a, b[1], 256);
    higan_arena_recycle(&a, b[4], 200);                      /* rounded up to 256 */
    CHECK(a.recycled_bytes == 512, "recycle: bytes counted (%zu)", a.recycled_bytes);
    r = (unsigned char *)higan_arena_alloc_recycled(&a, 100);
    CHECK(r == b[1] + 128, "recycle: a smaller request takes the top of the first best fit");
    r = (unsigned char *)higan_arena_alloc_recycled(&a, 256);
    CHECK(r == b[4], "recycle: an exact fit is taken whole");
    r = (unsigned char *)higan_arena_alloc_recycled(&a, 512);
    CHECK(r == b[5] + 256 && a.used == 8 * 256, "recycle: nothing fits, the top grows");
    higan_arena_recycle(&a, b[2], 256);
    higan_arena_recycle(&a, b[3], 256);                      /* merges with b[2] */
    CHECK(a.recycled_bytes == 128 + 512, "recycle: %zu bytes after two more", a.recycled_bytes);
    higan_arena_recycle(&a, b[1] + 128, 128);                /* merges b[1] (128 left) .. b[3] */
    r = (unsigned char *)higan_arena_alloc_recycled(&a, 768);
    CHECK(r == b[1] && a.recycled_bytes == 0, "recycle: neighbours merged into one block");
    higan_arena_recycle(&a, b[0], 1024);                     /* b[0] .. b[3] */
    mark = (size_t)(b[2] - b[0]);
    higan_arena_release(&a, mark);
    CHECK(a.used == mark && a.recycled_bytes == mark, "recycle: release trims what lies above the mark");
    r = (unsigned char *)higan_arena_alloc_recycled(&a, 1024);
    CHECK(r == b[0] && a.used == 1024 && a.recycled_bytes == 0,
          "recycle: the trimmed part is the top again; a block ending at the top grows into it");
    higan_arena_reset(&a);
    CHECK(a.n_recycled == 0 && a.recycled_bytes == 0, "recycle: reset forgets recycled blocks");
    higan_arena_free(&a);
}

/* The free list is a host table of (offset, size) in address order (so device arenas use the
   same policy): its entries, a full table (blocks left out, counted), and an arena made by
   higan_backend_arena_init keeping the same bookkeeping. */
static void test_arena_recycle_table(void) {
    higan_arena a;
    unsigned char *b[8], *r;
    int i, pass;
    for (pass = 0; pass < 2; ++pass) {
        if (pass == 0) higan_arena_init(&a, 1 << 16);
        else CHECK(higan_backend_arena_init(&a, higan_cpu_backend(), 1 << 16) == HIGAN_OK, "table: backend arena");
        CHECK(a.recycled != NULL && a.max_recycled > 0 && a.n_recycled == 0, "table: allocated at init (%d entries)",
              a.max_recycled);
        for (i = 0; i < 8; ++i) b[i] = (unsigned char *)higan_arena_alloc(&a, 128);
        higan_arena_recycle(&a, b[5], 128);
        higan_arena_recycle(&a, b[1], 128);
        higan_arena_recycle(&a, b[3], 128);
        CHECK(a.n_recycled == 3 && a.recycled[0].offset == 128 && a.recycled[1].offset == 384 &&
              a.recycled[2].offset == 640 && a.recycled[2].size == 128, "table: three blocks in address order");
        higan_arena_recycle(&a, b[4], 128);                   /* joins b[3] and b[5] */
        CHECK(a.n_recycled == 2 && a.recycled[1].offset == 384 && a.recycled[1].size == 384 &&
              a.recycled_bytes == 512, "table: merged with both neighbours (%d blocks)", a.n_recycled);
        higan_arena_recycle(&a, b[2], 128);                   /* joins b[1] .. b[5] */
        CHECK(a.n_recycled == 1 && a.recycled[0].offset == 128 && a.recycled[0].size == 640, "table: one block");
        r = (unsigned char *)higan_arena_alloc_recycled(&a, 64);
        CHECK(r == b[5] + 64 && a.recycled[0].size == 576, "table: best fit hands out the top part");
        higan_arena_release(&a, 320);                          /* trims the block to [128, 320) */
        CHECK(a.n_recycled == 1 && a.recycled[0].size == 192 && a.recycled_bytes == 192 && a.used == 320,
              "table: release trims the straddling block");
        higan_arena_reset(&a);
        /* a full table: a block that merges still goes in, a new one is left out and counted */
        for (i = 0; i < 8; ++i) b[i] = (unsigned char *)higan_arena_alloc(&a, 128);
        a.max_recycled = 2;
        higan_arena_recycle(&a, b[1], 128);
        higan_arena_recycle(&a, b[3], 128);
        higan_arena_recycle(&a, b[5], 128);                    /* no room: dropped */
        CHECK(a.n_recycled == 2 && a.recycle_dropped == 1 && a.recycled_bytes == 256, "table: full, one dropped");
        higan_arena_recycle(&a, b[2], 128);                    /* merges b[1] .. b[3] */
        CHECK(a.n_recycled == 1 && a.recycled[0].size == 384 && a.recycled_bytes == 384, "table: merging needs no room");
        r = (unsigned char *)higan_arena_alloc_recycled(&a, 384);
        CHECK(r == b[1] && a.n_recycled == 0 && a.recycled_bytes == 0, "table: exact fit taken whole");
        a.max_recycled = HIGAN_ARENA_MAX_RECYCLED;
        if (pass == 0) higan_arena_free(&a);
        else higan_backend_arena_free(&a, higan_cpu_backend());
        CHECK(a.recycled == NULL && a.base == NULL, "table: freed");
    }
}

/* The last backward of a step hands values back as it goes: same gradients, less memory. */
static void test_backward_release(void) {
    enum { N = 4096, DEPTH = 8 };
    higan_arena a;
    higan_tape t;
    higan_params p;
    int64_t shape[1] = {N};
    float *xs = (float *)malloc(sizeof(float) * N), *g_keep = (float *)malloc(sizeof(float) * N);
    size_t peak_keep = 0, peak_release, recycled_keep = 0;
    int hw, i, k, release, ok = 1;
    higan_var *h[DEPTH + 1], *loss = NULL;
    higan_arena_init(&a, 4 << 20);
    higan_tape_init(&t, &a, 64);
    higan_params_init(&p);
    hw = higan_params_add(&p, "w", HIGAN_PARAM, 1, shape);
    higan_params_alloc(&p);
    for (i = 0; i < N; ++i) {
        xs[i] = 1.0f + 0.001f * (float)(i % 7);
        higan_params_data(&p, hw)[i] = 0.99f + 0.0001f * (float)(i % 13);
    }
    for (release = 0; release < 2; ++release) {
        higan_tape_reset(&t);
        higan_params_zero_grad(&p);
        a.peak = 0;
        /* h_k = w * h_(k-1), loss = sum(h_DEPTH): eight [N] values live at the end of forward */
        h[0] = higan_var_wrap(&t, xs, 1, shape);
        for (k = 1; k <= DEPTH; ++k) h[k] = mul(&t, higan_param_var(&t, &p, hw), h[k - 1]);
        loss = sum(&t, h[DEPTH]);
        CHECK(loss != NULL, "release: forward");
        CHECK((release ? higan_tape_backward_release(&t, loss, NULL) : higan_tape_backward(&t, loss, NULL))
              == HIGAN_OK, "release: backward (release %d)", release);
        if (!release) {
            memcpy(g_keep, higan_params_grad(&p, hw), sizeof(float) * N);
            peak_keep = a.peak;
            recycled_keep = a.recycled_bytes;
            CHECK(h[3]->data != NULL && h[3]->grad == NULL && recycled_keep >= N * sizeof(float),
                  "release: the plain backward keeps values, hands back spent gradients (%zu bytes)",
                  recycled_keep);
        } else {
            peak_release = a.peak;
            ok = memcmp(g_keep, higan_params_grad(&p, hw), sizeof(float) * N) == 0;
            CHECK(ok, "release: parameter gradients bit-identical to the plain backward");
            CHECK(h[3]->data == NULL && h[DEPTH]->data == NULL && loss->data != NULL && h[0]->data == xs,
                  "release: op values handed back; the output and the input keep theirs");
            CHECK(peak_release <= peak_keep && a.recycled_bytes >= recycled_keep + DEPTH * N * sizeof(float),
                  "release: %zu bytes handed back (plain: %zu), peak %zu (plain: %zu)", a.recycled_bytes,
                  recycled_keep, peak_release, peak_keep);
        }
    }
    higan_params_free(&p);
    higan_tape_free(&t);
    higan_arena_free(&a);
    free(xs); free(g_keep);
}

static void test_rng(void) {
    higan_rng r1, r2;
    double s = 0, s2 = 0, u_min = 1, u_max = 0;
    int i, same = 1, n = 200000;
    higan_rng_seed(&r1, 42); higan_rng_seed(&r2, 42);
    for (i = 0; i < 1000; ++i) same &= higan_rng_u64(&r1) == higan_rng_u64(&r2);
    CHECK(same, "rng: same seed, same stream");
    higan_rng_seed(&r2, 43);
    CHECK(higan_rng_u64(&r1) != higan_rng_u64(&r2), "rng: different seeds differ");
    for (i = 0; i < n; ++i) {
        float u = higan_rng_uniform(&r1), z = higan_rng_normal(&r1);
        if (u < u_min) u_min = u;
        if (u > u_max) u_max = u;
        s += z; s2 += (double)z * z;
    }
    CHECK(u_min >= 0 && u_max < 1 && u_min < 1e-3 && u_max > 0.999, "rng: uniform in [0,1)");
    CHECK(fabs(s / n) < 0.01 && fabs(s2 / n - 1) < 0.02, "rng: normal mean %.4f var %.4f", s / n, s2 / n);
}

static void test_params(void) {
    higan_params p;
    int64_t shape_w[2] = {3, 5}, shape_b[1] = {3}, one[1] = {1};
    int w, b, rm, nb;
    higan_params_init(&p);
    w = higan_params_add(&p, "fc.weight", HIGAN_PARAM, 2, shape_w);
    b = higan_params_add(&p, "fc.bias", HIGAN_PARAM, 1, shape_b);
    rm = higan_params_add(&p, "bn.running_mean", HIGAN_BUFFER, 1, shape_b);
    nb = higan_params_add(&p, "bn.num_batches_tracked", HIGAN_BUFFER_I64, 0, one);
    CHECK(higan_params_alloc(&p) == HIGAN_OK, "params alloc");
    CHECK(higan_params_find(&p, "fc.bias") == b && higan_params_find(&p, "nope") == -1, "params find");
    CHECK(((uintptr_t)higan_params_data(&p, b) % 64) == 0 && ((uintptr_t)higan_params_data(&p, w) % 64) == 0,
          "params: 64-byte aligned tensors");
    CHECK(higan_params_grad(&p, rm) == NULL && higan_params_grad(&p, w) != NULL, "params: buffers have no grad");
    CHECK(p.entries[nb].numel == 1 && higan_params_idata(&p, nb)[0] == 0, "params: scalar int64 buffer");
    CHECK(higan_params_data(&p, w)[14] == 0.0f, "params: zero-filled");
    higan_params_free(&p);
}

static void test_tape(void) {
    higan_arena a;
    higan_tape t;
    higan_params p;
    int64_t shape[1] = {4};
    float xs[4] = {1, 2, 3, 4};
    int hw;
    higan_var *x, *w, *h, *y, *loss;
    float *wd, *wg;
    int i, ok;
    higan_arena_init(&a, 1 << 16);
    higan_tape_init(&t, &a, 64);
    higan_params_init(&p);
    hw = higan_params_add(&p, "w", HIGAN_PARAM, 1, shape);
    higan_params_alloc(&p);
    wd = higan_params_data(&p, hw); wg = higan_params_grad(&p, hw);
    for (i = 0; i < 4; ++i) wd[i] = 0.5f * (float)(i + 1);

    /* loss = sum((w*x) * (w*x)) ; dloss/dw = 2 w x^2 ; dloss/dh = 2 h */
    x = higan_var_wrap(&t, xs, 1, shape);
    w = higan_param_var(&t, &p, hw);
    h = mul(&t, w, x);
    h->retain_grad = 1;
    y = mul(&t, h, h);
    loss = sum(&t, y);
    CHECK(loss && t.count == 3, "tape: three ops recorded (%d)", t.count);
    CHECK(higan_tape_backward(&t, loss, NULL) == HIGAN_OK, "tape: backward");
    ok = 1;
    for (i = 0; i < 4; ++i) ok &= fabsf(wg[i] - 2 * wd[i] * xs[i] * xs[i]) < 1e-5f;
    CHECK(ok, "tape: parameter gradient 2 w x^2");
    ok = higan_var_has_grad(&t, h);
    for (i = 0; ok && i < 4; ++i) ok &= fabsf(h->grad[i] - 2 * h->data[i]) < 1e-5f;
    CHECK(ok, "tape: gradient of an intermediate variable");
    CHECK(!higan_var_has_grad(&t, x), "tape: inputs without requires_grad get no gradient");
    CHECK(!higan_var_has_grad(&t, y) && y->grad == NULL && y->data != NULL,
          "tape: a spent intermediate gradient goes back to the arena, the value stays");

    /* a second backward accumulates into parameters but not into intermediates */
    CHECK(higan_tape_backward(&t, loss, NULL) == HIGAN_OK, "tape: second backward");
    ok = 1;
    for (i = 0; i < 4; ++i) ok &= fabsf(wg[i] - 4 * wd[i] * xs[i] * xs[i]) < 1e-5f && fabsf(h->grad[i] - 2 * h->data[i]) < 1e-5f;
    CHECK(ok, "tape: params accumulate across backward calls, intermediates restart");

    /* gradient with respect to one tensor only: parameters untouched */
    higan_params_zero_grad(&p);
    CHECK(higan_tape_grad_wrt(&t, loss, h) == HIGAN_OK, "tape: grad_wrt");
    ok = 1;
    for (i = 0; i < 4; ++i) ok &= wg[i] == 0.0f && fabsf(h->grad[i] - 2 * h->data[i]) < 1e-5f;
    CHECK(ok, "tape: grad_wrt gives d loss/d h and leaves parameter gradients alone");

    /* frozen store: dx still flows, no dW */
    higan_tape_reset(&t);
    p.frozen = 1;
    x = higan_var_wrap(&t, xs, 1, shape);
    x->requires_grad = 1;
    w = higan_param_var(&t, &p, hw);
    loss = sum(&t, mul(&t, w, x));
    CHECK(higan_tape_backward(&t, loss, NULL) == HIGAN_OK, "tape: backward through frozen params");
    ok = 1;
    for (i = 0; i < 4; ++i) ok &= wg[i] == 0.0f && fabsf(x->grad[i] - wd[i]) < 1e-6f;
    CHECK(ok, "tape: frozen store passes dx, computes no dW");
    p.frozen = 0;

    /* no_grad records nothing */
    higan_tape_reset(&t);
    higan_no_grad_begin(&t);
    loss = sum(&t, mul(&t, higan_param_var(&t, &p, hw), higan_var_wrap(&t, xs, 1, shape)));
    higan_no_grad_end(&t);
    CHECK(loss && t.count == 0 && !loss->requires_grad, "tape: no_grad records nothing");
    CHECK(higan_tape_backward(&t, loss, NULL) == HIGAN_ERR_ARG, "tape: backward of a no_grad result is an error");

    /* arena overflow propagates as NULL and a status */
    {
        higan_arena small;
        higan_tape ts;
        int64_t big[1] = {100000};
        higan_arena_init(&small, 4096);
        higan_tape_init(&ts, &small, 8);
        CHECK(higan_var_new(&ts, 1, big) == NULL && higan_tape_status(&ts) == HIGAN_ERR_NOMEM,
              "tape: arena overflow reported: %s", higan_last_error());
        higan_tape_free(&ts); higan_arena_free(&small);
    }
    higan_params_free(&p);
    higan_tape_free(&t);
    higan_arena_free(&a);
}

static void test_adam(void) {
    higan_safetensors st;
    higan_params p;
    higan_adam opt = higan_adam_default(2e-4);
    int64_t n = 37, k;
    int h, step;
    char name[32];
    float *ref;
    if (!check_open_fixture(&st, "core_adam.safetensors")) return;
    opt.beta1 = 0.5;
    higan_params_init(&p);
    h = higan_params_add(&p, "w", HIGAN_PARAM, 1, &n);
    higan_params_alloc(&p);
    higan_safetensors_read_f32(&st, "w0", higan_params_data(&p, h), n);
    for (step = 0; step < 4; ++step) {
        snprintf(name, sizeof name, "grad%d", step);
        higan_safetensors_read_f32(&st, name, higan_params_grad(&p, h), n);
        higan_adam_step(&opt, &p);
        snprintf(name, sizeof name, "w%d", step + 1);
        ref = check_load(&st, name, NULL);
        if (ref) check_close(name, higan_params_data(&p, h), ref, n, 1e-7f, 1e-6f);
        free(ref);
    }
    CHECK(opt.step == 4, "adam: step counter");
    ref = check_load(&st, "exp_avg_sq", NULL);
    if (ref) check_close("adam: exp_avg_sq", p.adam_v, ref, n, 1e-9f, 1e-6f);
    free(ref);
    ref = check_load(&st, "lr_lambda", &n);
    if (ref) {
        float got[81];
        for (k = 0; k < 81; ++k) got[k] = higan_lr_linear_decay((int)k, 25, 47);
        check_close("lr linear decay (HiGAN+ lambda)", got, ref, 81, 1e-7f, 0);
    }
    free(ref);
    higan_params_free(&p);
    higan_safetensors_free(&st);
}

/* Adam at the detected level (AVX-512 body) = the scalar loop, bit for bit, on several chunks
   with a tail, with 1 and 2 threads. */
static void test_adam_levels(void) {
    int64_t n = 70001, k;
    higan_cpu level = higan_cpu_level();
    float *res[3];
    int run, step, old = higan_get_num_threads();
    for (run = 0; run < 3; ++run) {
        higan_params p;
        higan_adam opt = higan_adam_default(1e-3);
        higan_rng r;
        int h;
        higan_params_init(&p);
        h = higan_params_add(&p, "w", HIGAN_PARAM, 1, &n);
        higan_params_alloc(&p);
        higan_rng_seed(&r, 12);
        higan_rng_fill_normal(&r, higan_params_data(&p, h), n, 0.0f, 1.0f);
        higan_cpu_set_level(run == 0 ? HIGAN_CPU_SCALAR : level);
        higan_set_num_threads(run == 2 ? 2 : 1);
        for (step = 0; step < 3; ++step) {
            float *g = higan_params_grad(&p, h);
            higan_rng_fill_normal(&r, g, n, 0.0f, 1.0f);
            for (k = 0; k < n; k += 97) g[k] = 0.0f;
            higan_adam_step(&opt, &p);
        }
        res[run] = (float *)malloc(sizeof(float) * (size_t)(3 * n));
        memcpy(res[run], higan_params_data(&p, h), sizeof(float) * (size_t)n);
        memcpy(res[run] + n, p.adam_m, sizeof(float) * (size_t)n);
        memcpy(res[run] + 2 * n, p.adam_v, sizeof(float) * (size_t)n);
        higan_params_free(&p);
    }
    higan_cpu_set_level(level);
    higan_set_num_threads(old);
    CHECK(memcmp(res[0], res[1], sizeof(float) * (size_t)(3 * n)) == 0,
          "adam %s = scalar, bit for bit (w, exp_avg, exp_avg_sq)", higan_cpu_level_name(level));
    CHECK(memcmp(res[1], res[2], sizeof(float) * (size_t)(3 * n)) == 0, "adam: 1 and 2 threads, the same bits");
    for (run = 0; run < 3; ++run) free(res[run]);
}

static void test_cpu(void) {
    higan_cpu best = higan_cpu_detect();
    CHECK(higan_cpu_level() <= best, "cpu: level %s <= detected %s", higan_cpu_level_name(higan_cpu_level()),
          higan_cpu_level_name(best));
    CHECK(higan_cpu_set_level(HIGAN_CPU_SCALAR) == HIGAN_OK && higan_cpu_level() == HIGAN_CPU_SCALAR, "cpu: force scalar");
    if (best < HIGAN_CPU_AVX512)
        CHECK(higan_cpu_set_level(HIGAN_CPU_AVX512) == HIGAN_ERR_UNSUPPORTED, "cpu: unsupported level refused");
    higan_cpu_set_level(best);
}

int main(void) {
    test_arena();
    test_arena_recycle();
    test_arena_recycle_table();
    test_rng();
    test_params();
    test_tape();
    test_backward_release();
    test_adam();
    test_adam_levels();
    test_cpu();
    return check_finish();
}
