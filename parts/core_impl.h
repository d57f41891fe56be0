/* ---- core: configuration, errors, CPU level, threads, arena, RNG, params, tape, Adam ---- */
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#if defined(HIGAN_MALLOC) || defined(HIGAN_REALLOC) || defined(HIGAN_FREE)
#  if !defined(HIGAN_MALLOC) || !defined(HIGAN_REALLOC) || !defined(HIGAN_FREE)
#    error "define all of HIGAN_MALLOC, HIGAN_REALLOC and HIGAN_FREE, or none of them"
#  endif
#else
#  define HIGAN_MALLOC(sz) malloc(sz)
#  define HIGAN_REALLOC(p, sz) realloc(p, sz)
#  define HIGAN_FREE(p) free(p)
#endif

#if defined(__cplusplus) && __cplusplus >= 201103L
#  define HIGAN__TLS thread_local
#elif defined(__GNUC__)
#  define HIGAN__TLS __thread
#elif defined(_MSC_VER)
#  define HIGAN__TLS __declspec(thread)
#else
#  define HIGAN__TLS
#endif

/* 64-bit sizes must be 64 bits (negative array size otherwise). */
typedef char higan__check_int64[sizeof(int64_t) == 8 ? 1 : -1];

static higan_abort_callback higan__abort_cb;
HIGAN_DEF void higan_set_abort_callback(higan_abort_callback cb) { higan__abort_cb = cb; }
static void higan__assert_fail(const char *file, int line, const char *expr) {
    fprintf(stderr, "%s:%d: higan assertion failed: %s\n", file, line, expr);
    if (higan__abort_cb) higan__abort_cb(file, line, expr);
    abort();
}
#ifndef HIGAN_ASSERT
#  define HIGAN_ASSERT(c) ((c) ? (void)0 : higan__assert_fail(__FILE__, __LINE__, #c))
#endif

static HIGAN__TLS char higan__error_message[1024];
HIGAN_DEF const char *higan_last_error(void) { return higan__error_message; }
/* Sets the thread's error message and returns status, so callers write
   `return higan__error(HIGAN_ERR_IO, "open %s: %s", path, strerror(errno));` */
static higan_status higan__error(higan_status status, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(higan__error_message, sizeof higan__error_message, fmt, ap);
    va_end(ap);
    return status;
}

/* ---- CPU level --------------------------------------------------------------------- */
#if !defined(HIGAN_NO_SIMD) && defined(__GNUC__) && defined(__x86_64__) && !defined(__CUDACC__)
#  define HIGAN__X86_SIMD 1
#endif
HIGAN_DEF higan_cpu higan_cpu_detect(void) {
#ifdef HIGAN__X86_SIMD
    __builtin_cpu_init();
#  ifndef HIGAN_NO_AVX512
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx2") &&
        __builtin_cpu_supports("fma"))
        return HIGAN_CPU_AVX512;
#  endif
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return HIGAN_CPU_AVX2;
#endif
    return HIGAN_CPU_SCALAR;
}
static int higan__cpu_level = -1;
HIGAN_DEF const char *higan_cpu_level_name(higan_cpu level) {
    switch (level) {
    case HIGAN_CPU_SCALAR: return "scalar";
    case HIGAN_CPU_AVX2: return "avx2";
    case HIGAN_CPU_AVX512: return "avx512";
    }
    return "unknown";
}
HIGAN_DEF higan_status higan_cpu_set_level(higan_cpu level) {
    higan_cpu best = higan_cpu_detect();
    if ((int)level < 0 || level > best)
        return higan__error(HIGAN_ERR_UNSUPPORTED, "CPU level %s is not available here (best: %s)",
                            higan_cpu_level_name(level), higan_cpu_level_name(best));
    higan__cpu_level = (int)level;
    return HIGAN_OK;
}
HIGAN_DEF higan_cpu higan_cpu_level(void) {
    if (higan__cpu_level < 0) {
        const char *env = getenv("HIGAN_CPU");
        higan_cpu best = higan_cpu_detect(), want = best;
        if (env && *env) {
            if (!strcmp(env, "scalar")) want = HIGAN_CPU_SCALAR;
            else if (!strcmp(env, "avx2")) want = HIGAN_CPU_AVX2;
            else if (!strcmp(env, "avx512")) want = HIGAN_CPU_AVX512;
            else fprintf(stderr, "higan: ignoring unknown HIGAN_CPU=%s\n", env);
            if (want > best) {
                fprintf(stderr, "higan: HIGAN_CPU=%s not supported here, using %s\n", env,
                        higan_cpu_level_name(best));
                want = best;
            }
        }
        higan__cpu_level = (int)want;
    }
    return (higan_cpu)higan__cpu_level;
}

/* ---- threads ------------------------------------------------------------------------ */
static int higan__num_threads = 0;
HIGAN_DEF void higan_set_num_threads(int n) { higan__num_threads = n < 1 ? 1 : n; }
HIGAN_DEF int higan_get_num_threads(void) {
    if (higan__num_threads <= 0) {
        const char *env = getenv("HIGAN_THREADS");
        int n = env ? atoi(env) : 0;
#ifdef _OPENMP
        if (n <= 0) n = omp_get_max_threads();
#endif
        higan__num_threads = n > 0 ? n : 1;
    }
    return higan__num_threads;
}
#define higan__threads() higan_get_num_threads()
/* Put before a `for` whose iterations write disjoint outputs. Static schedule, so each
   output is computed by one thread in one order: results never depend on the thread count. */
#ifdef _OPENMP
#  define HIGAN__PARALLEL_FOR _Pragma("omp parallel for schedule(static) num_threads(higan__threads())")
#  define HIGAN__PRAGMA(x) _Pragma(#x)
#  define HIGAN__PARALLEL_FOR_IF(cond) HIGAN__PRAGMA(omp parallel for schedule(static) num_threads(higan__threads()) if(cond))
#else
#  define HIGAN__PARALLEL_FOR
#  define HIGAN__PARALLEL_FOR_IF(cond)
#endif

/* ---- arena -------------------------------------------------------------------------- */
#define HIGAN__ALIGN 64
static size_t higan__round_up(size_t n) { return (n + (HIGAN__ALIGN - 1)) & ~(size_t)(HIGAN__ALIGN - 1); }

HIGAN_DEF higan_status higan_arena_init(higan_arena *a, size_t capacity) {
    memset(a, 0, sizeof *a);
    capacity = higan__round_up(capacity);
    /* over-allocate to align the base by hand: HIGAN_MALLOC need not align to 64 */
    a->base = (unsigned char *)HIGAN_MALLOC(capacity + HIGAN__ALIGN);
    if (!a->base) return higan__error(HIGAN_ERR_NOMEM, "arena: cannot allocate %zu bytes", capacity);
    a->capacity = capacity;
    return HIGAN_OK;
}
HIGAN_DEF void higan_arena_free(higan_arena *a) {
    if (a->base) HIGAN_FREE(a->base);
    memset(a, 0, sizeof *a);
}
HIGAN_DEF void higan_arena_reset(higan_arena *a) { a->used = 0; a->needed = 0; a->overflow = 0; }
static unsigned char *higan__arena_start(const higan_arena *a) {
    uintptr_t p = (uintptr_t)a->base;
    return a->base + ((HIGAN__ALIGN - (p & (HIGAN__ALIGN - 1))) & (HIGAN__ALIGN - 1));
}
HIGAN_DEF void *higan_arena_alloc(higan_arena *a, size_t bytes) {
    size_t n = higan__round_up(bytes ? bytes : 1);
    a->needed = (a->overflow ? a->needed : a->used) + n;
    if (a->overflow || !a->base || a->used + n > a->capacity) {
        if (!a->overflow)
            higan__error(HIGAN_ERR_NOMEM, "arena overflow: a request of %zu bytes does not fit "
                         "(%zu of %zu used)", bytes, a->used, a->capacity);
        a->overflow = 1;
        return NULL;
    }
    {
        void *p = higan__arena_start(a) + a->used;
        a->used += n;
        if (a->used > a->peak) a->peak = a->used;
        return p;
    }
}
HIGAN_DEF float *higan_arena_floats(higan_arena *a, int64_t count) {
    HIGAN_ASSERT(count >= 0);
    return (float *)higan_arena_alloc(a, (size_t)count * sizeof(float));
}
HIGAN_DEF float *higan_arena_zeros(higan_arena *a, int64_t count) {
    float *p = higan_arena_floats(a, count);
    if (p) memset(p, 0, (size_t)count * sizeof(float));
    return p;
}
HIGAN_DEF size_t higan_arena_mark(const higan_arena *a) { return a->used; }
HIGAN_DEF void higan_arena_release(higan_arena *a, size_t mark) {
    HIGAN_ASSERT(mark <= a->used || a->overflow);
    if (!a->overflow) a->used = mark;
}
HIGAN_DEF higan_status higan_arena_status(const higan_arena *a) {
    if (!a->overflow) return HIGAN_OK;
    return higan__error(HIGAN_ERR_NOMEM, "arena overflow: this step needs at least %zu bytes but "
                        "the arena has %zu; create it with a larger capacity", a->needed, a->capacity);
}

/* ---- RNG: xoshiro256** seeded through splitmix64 -------------------------------------- */
static uint64_t higan__splitmix64(uint64_t *x) {
    uint64_t z = (*x += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}
HIGAN_DEF void higan_rng_seed(higan_rng *r, uint64_t seed) {
    int i;
    for (i = 0; i < 4; ++i) r->s[i] = higan__splitmix64(&seed);
}
static uint64_t higan__rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }
HIGAN_DEF uint64_t higan_rng_u64(higan_rng *r) {
    uint64_t *s = r->s, result = higan__rotl(s[1] * 5, 7) * 9, t = s[1] << 17;
    s[2] ^= s[0]; s[3] ^= s[1]; s[1] ^= s[2]; s[0] ^= s[3];
    s[2] ^= t; s[3] = higan__rotl(s[3], 45);
    return result;
}
HIGAN_DEF float higan_rng_uniform(higan_rng *r) {
    return (float)(higan_rng_u64(r) >> 40) * (1.0f / 16777216.0f);   /* 24 bits: exact floats */
}
HIGAN_DEF float higan_rng_normal(higan_rng *r) {
    /* Box-Muller on doubles; u1 in (0, 1] so log never sees 0. */
    double u1 = ((double)(higan_rng_u64(r) >> 11) + 1.0) * (1.0 / 9007199254740992.0);
    double u2 = (double)(higan_rng_u64(r) >> 11) * (1.0 / 9007199254740992.0);
    return (float)(sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2));
}
HIGAN_DEF void higan_rng_fill_normal(higan_rng *r, float *x, int64_t n, float mean, float std) {
    int64_t i;
    for (i = 0; i < n; ++i) x[i] = mean + std * higan_rng_normal(r);
}
HIGAN_DEF void higan_rng_fill_uniform(higan_rng *r, float *x, int64_t n, float lo, float hi) {
    int64_t i;
    for (i = 0; i < n; ++i) x[i] = lo + (hi - lo) * higan_rng_uniform(r);
}

/* ---- parameter store ---------------------------------------------------------------- */
HIGAN_DEF void higan_params_init(higan_params *p) { memset(p, 0, sizeof *p); }
HIGAN_DEF int higan_params_add(higan_params *p, const char *name, higan_param_kind kind,
                               int ndim, const int64_t *shape) {
    higan_param_entry *e;
    int d;
    HIGAN_ASSERT(!p->allocated && "register every tensor before higan_params_alloc");
    HIGAN_ASSERT(ndim >= 0 && ndim <= 4);
    HIGAN_ASSERT(strlen(name) < HIGAN_MAX_NAME);
    HIGAN_ASSERT(higan_params_find(p, name) < 0 && "duplicate parameter name");
    if (p->count == p->capacity) {
        int cap = p->capacity ? 2 * p->capacity : 64;
        higan_param_entry *grown = (higan_param_entry *)HIGAN_REALLOC(p->entries, (size_t)cap * sizeof *grown);
        HIGAN_ASSERT(grown && "out of memory registering parameters");
        p->entries = grown;
        p->capacity = cap;
    }
    e = &p->entries[p->count];
    memset(e, 0, sizeof *e);
    strcpy(e->name, name);
    e->kind = kind;
    e->ndim = ndim;
    e->numel = 1;
    for (d = 0; d < ndim; ++d) { HIGAN_ASSERT(shape[d] >= 0); e->shape[d] = shape[d]; e->numel *= shape[d]; }
    /* offsets rounded to 16 floats so every tensor starts 64-byte aligned */
    if (kind == HIGAN_PARAM)       { e->offset = (size_t)p->n_param;   p->n_param   += (e->numel + 15) & ~(int64_t)15; }
    else if (kind == HIGAN_BUFFER) { e->offset = (size_t)p->n_buffer;  p->n_buffer  += (e->numel + 15) & ~(int64_t)15; }
    else                           { e->offset = (size_t)p->n_ibuffer; p->n_ibuffer += e->numel; }
    return p->count++;
}
static void *higan__alloc_aligned_zero(int64_t bytes, void **raw) {
    unsigned char *r = (unsigned char *)HIGAN_MALLOC((size_t)bytes + HIGAN__ALIGN);
    uintptr_t a;
    *raw = r;
    if (!r) return NULL;
    a = ((uintptr_t)r + HIGAN__ALIGN - 1) & ~(uintptr_t)(HIGAN__ALIGN - 1);
    memset((void *)a, 0, (size_t)bytes);
    return (void *)a;
}
/* The raw (unaligned) pointers are kept at the end of one small block so that
   higan_params_free can release them; the struct only exposes aligned ones. */
typedef struct { void *raw[6]; } higan__params_raw;
HIGAN_DEF higan_status higan_params_alloc(higan_params *p) {
    higan__params_raw *raw;
    int64_t np = p->n_param ? p->n_param : 1;
    HIGAN_ASSERT(!p->allocated);
    raw = (higan__params_raw *)HIGAN_MALLOC(sizeof *raw);
    if (!raw) return higan__error(HIGAN_ERR_NOMEM, "params: out of memory");
    memset(raw, 0, sizeof *raw);
    p->value = (float *)higan__alloc_aligned_zero(np * 4, &raw->raw[0]);
    p->grad = (float *)higan__alloc_aligned_zero(np * 4, &raw->raw[1]);
    p->adam_m = (float *)higan__alloc_aligned_zero(np * 4, &raw->raw[2]);
    p->adam_v = (float *)higan__alloc_aligned_zero(np * 4, &raw->raw[3]);
    p->buffer = (float *)higan__alloc_aligned_zero((p->n_buffer ? p->n_buffer : 1) * 4, &raw->raw[4]);
    p->ibuffer = (int64_t *)higan__alloc_aligned_zero((p->n_ibuffer ? p->n_ibuffer : 1) * 8, &raw->raw[5]);
    p->allocated = 1;
    /* stash raw pointers behind the entry table's capacity marker */
    p->entries = (higan_param_entry *)HIGAN_REALLOC(p->entries, (size_t)(p->count + 1) * sizeof(higan_param_entry) + sizeof *raw);
    HIGAN_ASSERT(p->entries);
    memcpy((unsigned char *)(p->entries + p->count + 1), raw, sizeof *raw);
    HIGAN_FREE(raw);
    p->capacity = p->count;
    {
        higan__params_raw *r = (higan__params_raw *)(void *)(p->entries + p->count + 1);
        int i;
        for (i = 0; i < 6; ++i)
            if (!r->raw[i]) { higan_params_free(p); return higan__error(HIGAN_ERR_NOMEM, "params: out of memory"); }
    }
    return HIGAN_OK;
}
HIGAN_DEF void higan_params_free(higan_params *p) {
    if (p->allocated) {
        higan__params_raw *r = (higan__params_raw *)(void *)(p->entries + p->count + 1);
        int i;
        for (i = 0; i < 6; ++i) if (r->raw[i]) HIGAN_FREE(r->raw[i]);
    }
    if (p->entries) HIGAN_FREE(p->entries);
    memset(p, 0, sizeof *p);
}
HIGAN_DEF int higan_params_find(const higan_params *p, const char *name) {
    int i;
    for (i = 0; i < p->count; ++i) if (!strcmp(p->entries[i].name, name)) return i;
    return -1;
}
HIGAN_DEF float *higan_params_data(const higan_params *p, int h) {
    HIGAN_ASSERT(p->allocated && h >= 0 && h < p->count);
    if (p->entries[h].kind == HIGAN_PARAM) return p->value + p->entries[h].offset;
    HIGAN_ASSERT(p->entries[h].kind == HIGAN_BUFFER);
    return p->buffer + p->entries[h].offset;
}
HIGAN_DEF float *higan_params_grad(const higan_params *p, int h) {
    HIGAN_ASSERT(p->allocated && h >= 0 && h < p->count);
    return p->entries[h].kind == HIGAN_PARAM ? p->grad + p->entries[h].offset : NULL;
}
HIGAN_DEF int64_t *higan_params_idata(const higan_params *p, int h) {
    HIGAN_ASSERT(p->allocated && h >= 0 && h < p->count && p->entries[h].kind == HIGAN_BUFFER_I64);
    return p->ibuffer + p->entries[h].offset;
}
HIGAN_DEF void higan_params_zero_grad(higan_params *p) {
    if (p->allocated) memset(p->grad, 0, (size_t)p->n_param * sizeof(float));
}

/* ---- tape ----------------------------------------------------------------------------- */
HIGAN_DEF higan_status higan_tape_init(higan_tape *t, higan_arena *a, int max_entries) {
    memset(t, 0, sizeof *t);
    t->arena = a;
    t->entries = (higan_tape_entry *)HIGAN_MALLOC((size_t)(max_entries > 0 ? max_entries : 1) * sizeof(higan_tape_entry));
    if (!t->entries) return higan__error(HIGAN_ERR_NOMEM, "tape: cannot allocate %d entries", max_entries);
    t->capacity = max_entries;
    t->param_grads = 1;
    t->pass = 1;
    return HIGAN_OK;
}
HIGAN_DEF void higan_tape_free(higan_tape *t) {
    if (t->entries) HIGAN_FREE(t->entries);
    memset(t, 0, sizeof *t);
}
HIGAN_DEF void higan_tape_reset(higan_tape *t) {
    t->count = 0;
    t->overflow = 0;
    t->no_grad = 0;
    t->param_grads = 1;
    t->pass = 1;
    higan_arena_reset(t->arena);
}
HIGAN_DEF higan_status higan_tape_status(const higan_tape *t) {
    if (t->overflow)
        return higan__error(HIGAN_ERR_NOMEM, "tape overflow: more than %d ops recorded; "
                            "initialise the tape with more entries", t->capacity);
    return higan_arena_status(t->arena);
}
HIGAN_DEF void higan_no_grad_begin(higan_tape *t) { ++t->no_grad; }
HIGAN_DEF void higan_no_grad_end(higan_tape *t) { HIGAN_ASSERT(t->no_grad > 0); --t->no_grad; }

static higan_var *higan__var_struct(higan_tape *t, int ndim, const int64_t *shape) {
    higan_var *v = (higan_var *)higan_arena_alloc(t->arena, sizeof(higan_var));
    int d;
    HIGAN_ASSERT(ndim >= 1 && ndim <= 4);
    if (!v) return NULL;
    memset(v, 0, sizeof *v);
    v->ndim = ndim;
    for (d = 0; d < 4; ++d) v->shape[d] = d < ndim ? shape[d] : 1;
    v->producer = -1;
    return v;
}
HIGAN_DEF int64_t higan_var_numel(const higan_var *v) {
    int64_t n = 1;
    int d;
    for (d = 0; d < v->ndim; ++d) n *= v->shape[d];
    return n;
}
HIGAN_DEF higan_var *higan_var_new(higan_tape *t, int ndim, const int64_t *shape) {
    higan_var *v = higan__var_struct(t, ndim, shape);
    if (!v) return NULL;
    v->data = higan_arena_floats(t->arena, higan_var_numel(v));
    return v->data ? v : NULL;
}
HIGAN_DEF higan_var *higan_var_wrap(higan_tape *t, float *data, int ndim, const int64_t *shape) {
    higan_var *v = higan__var_struct(t, ndim, shape);
    if (v) v->data = data;
    return v;
}
HIGAN_DEF higan_var *higan_param_var(higan_tape *t, const higan_params *p, int h) {
    const higan_param_entry *e;
    higan_var *v;
    int64_t one = 1;
    HIGAN_ASSERT(p->allocated && h >= 0 && h < p->count);
    e = &p->entries[h];
    HIGAN_ASSERT(e->kind != HIGAN_BUFFER_I64);
    v = higan__var_struct(t, e->ndim ? e->ndim : 1, e->ndim ? e->shape : &one);
    if (!v) return NULL;
    v->data = higan_params_data(p, h);
    v->is_param = 1;
    if (e->kind == HIGAN_PARAM && !p->frozen) {
        v->grad = p->grad + e->offset;
        v->requires_grad = 1;
    }
    return v;
}
HIGAN_DEF float *higan_var_grad(higan_tape *t, higan_var *v) {
    if (!v->requires_grad) return NULL;
    if (v->is_param) return t->param_grads ? v->grad : NULL;
    if (v->grad_pass != t->pass) {
        int64_t n = higan_var_numel(v);
        if (!v->grad) v->grad = higan_arena_floats(t->arena, n);
        if (!v->grad) return NULL;                 /* arena overflow: reported by backward */
        memset(v->grad, 0, (size_t)n * sizeof(float));
        v->grad_pass = t->pass;
    }
    return v->grad;
}
HIGAN_DEF int higan_var_has_grad(const higan_tape *t, const higan_var *v) {
    return v->grad != NULL && (v->is_param || v->grad_pass == t->pass);
}
HIGAN_DEF higan_var *higan_op_output(higan_tape *t, int ndim, const int64_t *shape,
                                     higan_var *const *inputs, int n_inputs) {
    higan_var *v;
    int i, needs = 0;
    for (i = 0; i < n_inputs; ++i) {
        if (!inputs[i]) return NULL;
        needs |= inputs[i]->requires_grad;
    }
    v = higan_var_new(t, ndim, shape);
    if (v) v->requires_grad = needs && t->no_grad == 0;
    return v;
}
HIGAN_DEF void *higan_tape_ctx(higan_tape *t, size_t bytes) { return higan_arena_alloc(t->arena, bytes); }
HIGAN_DEF void higan_tape_record(higan_tape *t, higan_var *out, higan_backward_fn fn, void *ctx) {
    if (!out->requires_grad || t->no_grad) return;
    if (t->count == t->capacity) {
        if (!t->overflow) higan__error(HIGAN_ERR_NOMEM, "tape overflow (%d entries)", t->capacity);
        t->overflow = 1;
        return;
    }
    t->entries[t->count].backward = fn;
    t->entries[t->count].ctx = ctx;
    t->entries[t->count].out = out;
    out->producer = t->count++;
}
static higan_status higan__backward(higan_tape *t, higan_var *out, const float *seed, int stop) {
    higan_status st = higan_tape_status(t);
    float *g;
    int64_t i, n;
    int e;
    if (st != HIGAN_OK) return st;
    if (!out->requires_grad)
        return higan__error(HIGAN_ERR_ARG, "backward: the output does not depend on anything "
                            "that requires a gradient");
    ++t->pass;
    g = higan_var_grad(t, out);
    if (!g) return higan_tape_status(t);
    n = higan_var_numel(out);
    for (i = 0; i < n; ++i) g[i] += seed ? seed[i] : 1.0f;
    for (e = out->producer; e > stop; --e) {
        higan_tape_entry *en = &t->entries[e];
        if (en->out->grad_pass == t->pass) en->backward(t, en->ctx);
    }
    return higan_arena_status(t->arena);
}
HIGAN_DEF higan_status higan_tape_backward(higan_tape *t, higan_var *out, const float *seed) {
    return higan__backward(t, out, seed, -1);
}
HIGAN_DEF higan_status higan_tape_grad_wrt(higan_tape *t, higan_var *out, higan_var *wrt) {
    int keep = t->param_grads;
    higan_status st;
    if (!wrt->requires_grad)
        return higan__error(HIGAN_ERR_ARG, "grad_wrt: the variable does not require a gradient");
    t->param_grads = 0;
    st = higan__backward(t, out, NULL, wrt->producer);
    t->param_grads = keep;
    if (st == HIGAN_OK && wrt->grad_pass != t->pass) {
        /* out does not depend on wrt: the gradient is zero */
        float *g = higan_var_grad(t, wrt);
        if (!g) return higan_tape_status(t);
    }
    return st;
}

/* ---- Adam ------------------------------------------------------------------------------ */
HIGAN_DEF higan_adam higan_adam_default(double lr) {
    higan_adam a;
    a.lr = lr; a.beta1 = 0.9; a.beta2 = 0.999; a.eps = 1e-8; a.step = 0;
    return a;
}
/* PyTorch's single-tensor Adam: m = b1 m + (1-b1) g; v = b2 v + (1-b2) g^2;
   p -= (lr / (1 - b1^t)) * m / (sqrt(v) / sqrt(1 - b2^t) + eps). */
HIGAN_DEF void higan_adam_step(higan_adam *opt, higan_params *p) {
    int64_t i, n = p->n_param;
    /* scalars in double, then rounded once to float, as torch does with Python floats */
    float b1 = (float)opt->beta1, b2 = (float)opt->beta2, eps = (float)opt->eps;
    float one_minus_b1 = (float)(1.0 - opt->beta1), one_minus_b2 = (float)(1.0 - opt->beta2);
    float step_size, bc2_sqrt;
    float *w = p->value, *g = p->grad, *m = p->adam_m, *v = p->adam_v;
    HIGAN_ASSERT(p->allocated);
    opt->step += 1;
    step_size = (float)(opt->lr / (1.0 - pow(opt->beta1, (double)opt->step)));
    bc2_sqrt = (float)sqrt(1.0 - pow(opt->beta2, (double)opt->step));
    HIGAN__PARALLEL_FOR_IF(n > 65536)
    for (i = 0; i < n; ++i) {
        float gi = g[i];
        m[i] = m[i] * b1 + gi * one_minus_b1;
        v[i] = v[i] * b2 + one_minus_b2 * gi * gi;
        w[i] -= step_size * (m[i] / (sqrtf(v[i]) / bc2_sqrt + eps));
    }
}
HIGAN_DEF float higan_lr_linear_decay(int epoch, int start, int length) {
    double f = (double)(epoch - start) / (double)(length > 0 ? length : 1);
    if (f < 0) f = 0;
    if (f > 0.999) f = 0.999;
    return (float)(1.0 - f);
}
