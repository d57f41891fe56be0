/* check.h - tiny test harness shared by tests/test_*.c.
   Every test binary: #include "check.h" (after higan.h with HIGAN_IMPLEMENTATION in that
   file), calls CHECK(...)/check_close/check_gradients, and returns check_finish().
   Each binary prints "RESULT <passed> <failed>" last; tests/run_tests.sh adds them up. */
#ifndef HIGAN_TEST_CHECK_H
#define HIGAN_TEST_CHECK_H
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Reproducible test inputs: a 64-bit LCG; a test sets check_rng_state for its own sequence. */
static uint64_t check_rng_state = 12345;
static inline float check_frand(void) {   /* uniform in [-1, 1) */
    check_rng_state = check_rng_state * 6364136223846793005ull + 1442695040888963407ull;
    return (float)((double)(check_rng_state >> 11) / 9007199254740992.0 * 2.0 - 1.0);
}
static inline float *check_rand_array(int64_t n) {   /* n values of check_frand (free it) */
    float *p = (float *)malloc(sizeof(float) * (size_t)(n ? n : 1));
    int64_t i;
    for (i = 0; i < n; ++i) p[i] = check_frand();
    return p;
}

static int check__passed, check__failed;

#define CHECK(cond, ...) check__report((cond) ? 1 : 0, __FILE__, __LINE__, __VA_ARGS__)
static inline void check__report(int ok, const char *file, int line, const char *fmt, ...);
#include <stdarg.h>
static inline void check__report(int ok, const char *file, int line, const char *fmt, ...) {
    va_list ap;
    if (ok) ++check__passed; else ++check__failed;
    printf("%s ", ok ? "PASS" : "FAIL");
    va_start(ap, fmt); vprintf(fmt, ap); va_end(ap);
    if (!ok) printf("   (%s:%d)", file, line);
    printf("\n");
    fflush(stdout);
}

static inline int check_finish(void) {
    printf("RESULT %d %d\n", check__passed, check__failed);
    return check__failed ? 1 : 0;
}

/* |got - ref| <= atol + rtol*|ref| elementwise. On failure prints the 5 worst elements. */
static inline int check_close(const char *name, const float *got, const float *ref, int64_t n,
                       float atol, float rtol) {
    int64_t i, bad = 0, worst[5] = {-1, -1, -1, -1, -1};
    double worst_excess[5] = {0, 0, 0, 0, 0}, max_abs = 0, num = 0, den = 0;
    for (i = 0; i < n; ++i) {
        double d = fabs((double)got[i] - (double)ref[i]);
        double excess = d - (atol + rtol * fabs((double)ref[i]));
        int k;
        if (!(d == d) || !(got[i] == got[i])) excess = 1e30, d = 1e30;   /* NaN */
        if (d > max_abs) max_abs = d;
        num += d * d; den += (double)ref[i] * ref[i];
        if (excess > 0) {
            ++bad;
            for (k = 0; k < 5; ++k) if (worst[k] < 0 || excess > worst_excess[k]) {
                int j;
                for (j = 4; j > k; --j) { worst[j] = worst[j-1]; worst_excess[j] = worst_excess[j-1]; }
                worst[k] = i; worst_excess[k] = excess;
                break;
            }
        }
    }
    check__report(bad == 0, __FILE__, __LINE__, "%s: %lld values, max |diff| %.3g, nmse %.3g%s",
                  name, (long long)n, max_abs, den > 0 ? num / den : num,
                  bad ? " -- mismatches:" : "");
    if (bad) {
        int k;
        printf("      %lld of %lld outside atol %g rtol %g\n", (long long)bad, (long long)n, atol, rtol);
        for (k = 0; k < 5 && worst[k] >= 0; ++k)
            printf("      [%lld] got %.8g  ref %.8g\n", (long long)worst[k], got[worst[k]], ref[worst[k]]);
    }
    return bad == 0;
}

/* ---- finite-difference gradient check of tape ops ------------------------------------
   build(t, in, ctx) makes an output from the input vars. The check uses the loss
   L = sum(out * r) with a fixed random r, seeds backward with r, and compares the analytic
   gradient of every input with grad[i] != 0 against central differences of L (accumulated
   in double) over all its elements. Keep shapes tiny. Returns 1 if all inputs pass. */
typedef higan_var *(*check_build_fn)(higan_tape *t, higan_var **in, void *ctx);
typedef struct check_input {
    float *data;            /* values, perturbed in place during the check and restored */
    int ndim;
    int64_t shape[4];
    int grad;               /* 1: check this input's gradient */
} check_input;

static inline double check__loss(higan_tape *t, check_build_fn build, void *ctx, check_input *ins, int n,
                          const float *r, int64_t *out_numel) {
    higan_var *vars[16];
    higan_var *y;
    double L = 0;
    int64_t i, m;
    int k;
    higan_tape_reset(t);
    higan_no_grad_begin(t);
    for (k = 0; k < n; ++k) vars[k] = higan_var_wrap(t, ins[k].data, ins[k].ndim, ins[k].shape);
    y = build(t, vars, ctx);
    higan_no_grad_end(t);
    if (!y) return NAN;
    m = higan_var_numel(y);
    if (out_numel) *out_numel = m;
    for (i = 0; i < m; ++i) L += (double)y->data[i] * (r ? r[i] : 1.0);
    return L;
}

static inline int check_gradients(const char *name, check_build_fn build, void *ctx, check_input *ins,
                           int n, float eps, float atol, float rtol) {
    higan_arena arena;
    higan_tape tape;
    higan_var *vars[16];
    higan_var *y;
    float *r, *analytic[16];
    int64_t m = 0, i;
    int k, all_ok = 1;
    uint64_t s = 0x9E3779B97F4A7C15ull;
    higan_arena_init(&arena, (size_t)64 << 20);
    higan_tape_init(&tape, &arena, 4096);
    check__loss(&tape, build, ctx, ins, n, NULL, &m);
    r = (float *)malloc(sizeof(float) * (size_t)(m ? m : 1));
    for (i = 0; i < m; ++i) { s = s * 6364136223846793005ull + 1442695040888963407ull;
                              r[i] = (float)((double)(s >> 11) / 9007199254740992.0 * 2.0 - 1.0); }
    /* analytic */
    higan_tape_reset(&tape);
    for (k = 0; k < n; ++k) {
        vars[k] = higan_var_wrap(&tape, ins[k].data, ins[k].ndim, ins[k].shape);
        vars[k]->requires_grad = ins[k].grad;
    }
    y = build(&tape, vars, ctx);
    if (!y) { CHECK(0, "%s: build failed: %s", name, higan_last_error()); free(r); return 0; }
    higan_tape_backward(&tape, y, r);
    for (k = 0; k < n; ++k) {
        int64_t numel = 1; int d;
        for (d = 0; d < ins[k].ndim; ++d) numel *= ins[k].shape[d];
        analytic[k] = NULL;
        if (!ins[k].grad) continue;
        analytic[k] = (float *)calloc((size_t)numel, sizeof(float));
        if (higan_var_has_grad(&tape, vars[k])) memcpy(analytic[k], vars[k]->grad, sizeof(float) * (size_t)numel);
    }
    for (k = 0; k < n; ++k) {
        int64_t numel = 1; int d;
        float *numeric;
        char label[256];
        if (!ins[k].grad) continue;
        for (d = 0; d < ins[k].ndim; ++d) numel *= ins[k].shape[d];
        numeric = (float *)malloc(sizeof(float) * (size_t)numel);
        for (i = 0; i < numel; ++i) {
            float keep = ins[k].data[i];
            double lp, lm;
            ins[k].data[i] = keep + eps; lp = check__loss(&tape, build, ctx, ins, n, r, NULL);
            ins[k].data[i] = keep - eps; lm = check__loss(&tape, build, ctx, ins, n, r, NULL);
            ins[k].data[i] = keep;
            numeric[i] = (float)((lp - lm) / (2.0 * eps));
        }
        snprintf(label, sizeof label, "gradcheck %s d/input%d", name, k);
        all_ok &= check_close(label, analytic[k], numeric, numel, atol, rtol);
        free(numeric); free(analytic[k]);
    }
    free(r);
    higan_tape_free(&tape);
    higan_arena_free(&arena);
    return all_ok;
}

/* Load a float tensor from an oracle fixture into a malloc'd array (NULL + FAIL if absent). */
static inline float *check_load(const higan_safetensors *st, const char *name, int64_t *numel_out) {
    const higan_st_tensor *t = higan_safetensors_find(st, name);
    float *x;
    if (!t) { CHECK(0, "fixture tensor '%s' missing", name); return NULL; }
    x = (float *)malloc(sizeof(float) * (size_t)(t->numel ? t->numel : 1));
    if (higan_safetensors_read_f32(st, name, x, t->numel) != HIGAN_OK) {
        CHECK(0, "fixture tensor '%s': %s", name, higan_last_error()); free(x); return NULL;
    }
    if (numel_out) *numel_out = t->numel;
    return x;
}

/* Open tests/oracle/<file>; FAIL (not crash) when missing. */
static inline int check_open_fixture(higan_safetensors *st, const char *file) {
    char path[512];
    snprintf(path, sizeof path, "tests/oracle/%s", file);
    if (higan_safetensors_load(st, path) != HIGAN_OK) {
        CHECK(0, "open fixture %s: %s (regenerate with `make oracle`)", path, higan_last_error());
        return 0;
    }
    return 1;
}
#endif
