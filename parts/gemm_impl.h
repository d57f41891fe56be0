/* ==== GEMM, CONV2D, LINEAR (implementation) ================================================
   Layout of this fragment:
     1. SIMD vocabulary: one set of inline helpers per ISA (scalar, AVX2+FMA, AVX-512F),
        named higan__v<op>_<isa>, plus HIGAN__TGT_<isa> (the function target attribute) and
        HIGAN__VW_<isa> (floats per vector). Kernels are written once as macro templates over
        <isa> and instantiated for every ISA compiled in, all in one binary; the run-time
        dispatch (higan__ops) picks the instantiation for higan_cpu_level().
     2. Kernels written once: GEMM micro-kernel, vector add / sum with a scalar tail.
     3. The blocked GEMM driver (BLIS-style packing, scalar code shared by every level).
     4. higan_gemm / higan_gemm_ref, conv2d (implicit GEMM), linear, tape ops. */
#ifdef HIGAN__X86_SIMD
#include <immintrin.h>
#endif

#if defined(__GNUC__) && !defined(__CUDACC__)
#  define HIGAN__UNROLL _Pragma("GCC unroll 16")
#else
#  define HIGAN__UNROLL
#endif
#define HIGAN__MIN(a, b) ((a) < (b) ? (a) : (b))
#define HIGAN__CEIL_DIV(a, b) (((a) + (b) - 1) / (b))

/* ---- 1. SIMD vocabulary ------------------------------------------------------------------ */
/* scalar: a "vector" of one float; mul + add (not fmaf, a library call without FMA) */
#define HIGAN__TGT_scalar
#define HIGAN__VW_scalar 1
typedef float higan__vt_scalar;
static inline float higan__vzero_scalar(void) { return 0.0f; }
static inline float higan__vload_scalar(const float *p) { return *p; }
static inline void higan__vstore_scalar(float *p, float v) { *p = v; }
static inline float higan__vset1_scalar(float x) { return x; }
static inline float higan__vfma_scalar(float a, float b, float c) { return a * b + c; }
static inline float higan__vadd_scalar(float a, float b) { return a + b; }
static inline float higan__vmul_scalar(float a, float b) { return a * b; }
static inline float higan__vhsum_scalar(float v) { return v; }

#ifdef HIGAN__X86_SIMD
/* AVX2 + FMA: 8 floats */
#  define HIGAN__TGT_avx2 __attribute__((target("avx2,fma")))
#  define HIGAN__VW_avx2 8
typedef __m256 higan__vt_avx2;
static inline HIGAN__TGT_avx2 __m256 higan__vzero_avx2(void) { return _mm256_setzero_ps(); }
static inline HIGAN__TGT_avx2 __m256 higan__vload_avx2(const float *p) { return _mm256_loadu_ps(p); }
static inline HIGAN__TGT_avx2 void higan__vstore_avx2(float *p, __m256 v) { _mm256_storeu_ps(p, v); }
static inline HIGAN__TGT_avx2 __m256 higan__vset1_avx2(float x) { return _mm256_set1_ps(x); }
static inline HIGAN__TGT_avx2 __m256 higan__vfma_avx2(__m256 a, __m256 b, __m256 c) { return _mm256_fmadd_ps(a, b, c); }
static inline HIGAN__TGT_avx2 __m256 higan__vadd_avx2(__m256 a, __m256 b) { return _mm256_add_ps(a, b); }
static inline HIGAN__TGT_avx2 __m256 higan__vmul_avx2(__m256 a, __m256 b) { return _mm256_mul_ps(a, b); }
static inline HIGAN__TGT_avx2 float higan__vhsum_avx2(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}
#  ifndef HIGAN_NO_AVX512
#    define HIGAN__GEMM_AVX512 1
/* AVX-512F: 16 floats */
#    define HIGAN__TGT_avx512 __attribute__((target("avx512f,avx2,fma")))
#    define HIGAN__VW_avx512 16
typedef __m512 higan__vt_avx512;
static inline HIGAN__TGT_avx512 __m512 higan__vzero_avx512(void) { return _mm512_setzero_ps(); }
static inline HIGAN__TGT_avx512 __m512 higan__vload_avx512(const float *p) { return _mm512_loadu_ps(p); }
static inline HIGAN__TGT_avx512 void higan__vstore_avx512(float *p, __m512 v) { _mm512_storeu_ps(p, v); }
static inline HIGAN__TGT_avx512 __m512 higan__vset1_avx512(float x) { return _mm512_set1_ps(x); }
static inline HIGAN__TGT_avx512 __m512 higan__vfma_avx512(__m512 a, __m512 b, __m512 c) { return _mm512_fmadd_ps(a, b, c); }
static inline HIGAN__TGT_avx512 __m512 higan__vadd_avx512(__m512 a, __m512 b) { return _mm512_add_ps(a, b); }
static inline HIGAN__TGT_avx512 __m512 higan__vmul_avx512(__m512 a, __m512 b) { return _mm512_mul_ps(a, b); }
/* through memory: GCC 12's 512->256 extract intrinsics warn (-Wuninitialized) in C++ */
static inline HIGAN__TGT_avx512 float higan__vhsum_avx512(__m512 v) {
    float t[16];
    _mm512_storeu_ps(t, v);
    return higan__vhsum_avx2(_mm256_add_ps(_mm256_loadu_ps(t), _mm256_loadu_ps(t + 8)));
}
#  endif
#endif

/* ---- 2. kernels written once ------------------------------------------------------------- */
/* GEMM micro-kernel: C[MR, NV*VW] (row stride ldc) = A_panel * B_panel (+ beta * C).
   a: packed A panel [kc][MR]; b: packed B panel [kc][NV*VW]. The MR x NV accumulators stay
   in registers (the unrolled loops are fully resolved at compile time). beta == 0: C is not
   read; beta == 1: plain add (what every K block after the first uses). */
#define HIGAN__DEFINE_UKR(ISA, NAME, MR, NV)                                                    \
static HIGAN__TGT_##ISA void NAME(int64_t kc, const float *a, const float *b, float *c,         \
                                  int64_t ldc, float beta) {                                   \
    higan__vt_##ISA acc[MR][NV], bv[NV];                                                        \
    int64_t k;                                                                                  \
    int i, v;                                                                                   \
    HIGAN__UNROLL for (i = 0; i < MR; ++i)                                                      \
        HIGAN__UNROLL for (v = 0; v < NV; ++v) acc[i][v] = higan__vzero_##ISA();                \
    for (k = 0; k < kc; ++k) {                                                                  \
        HIGAN__UNROLL for (v = 0; v < NV; ++v) bv[v] = higan__vload_##ISA(b + v * HIGAN__VW_##ISA); \
        HIGAN__UNROLL for (i = 0; i < MR; ++i) {                                                \
            higan__vt_##ISA ai = higan__vset1_##ISA(a[i]);                                      \
            HIGAN__UNROLL for (v = 0; v < NV; ++v)                                              \
                acc[i][v] = higan__vfma_##ISA(ai, bv[v], acc[i][v]);                            \
        }                                                                                       \
        a += MR;                                                                                \
        b += NV * HIGAN__VW_##ISA;                                                              \
    }                                                                                           \
    if (beta == 0.0f) {                                                                         \
        HIGAN__UNROLL for (i = 0; i < MR; ++i) HIGAN__UNROLL for (v = 0; v < NV; ++v)          \
            higan__vstore_##ISA(c + i * ldc + v * HIGAN__VW_##ISA, acc[i][v]);                  \
    } else if (beta == 1.0f) {                                                                  \
        HIGAN__UNROLL for (i = 0; i < MR; ++i) HIGAN__UNROLL for (v = 0; v < NV; ++v) {        \
            float *cp = c + i * ldc + v * HIGAN__VW_##ISA;                                      \
            higan__vstore_##ISA(cp, higan__vadd_##ISA(acc[i][v], higan__vload_##ISA(cp)));      \
        }                                                                                       \
    } else {                                                                                    \
        higan__vt_##ISA bb = higan__vset1_##ISA(beta);                                          \
        HIGAN__UNROLL for (i = 0; i < MR; ++i) HIGAN__UNROLL for (v = 0; v < NV; ++v) {        \
            float *cp = c + i * ldc + v * HIGAN__VW_##ISA;                                      \
            higan__vstore_##ISA(cp, higan__vadd_##ISA(acc[i][v],                                \
                                    higan__vmul_##ISA(bb, higan__vload_##ISA(cp))));            \
        }                                                                                       \
    }                                                                                           \
}

/* y[n] += x[n] and sum(x[n]): vector body, scalar tail. The sum keeps 4 vector partial sums
   (fixed order: deterministic for a level, different between levels). */
#define HIGAN__DEFINE_VEC_OPS(ISA)                                                              \
static HIGAN__TGT_##ISA void higan__add_##ISA(int64_t n, float *y, const float *x) {            \
    int64_t i = 0;                                                                              \
    for (; i + HIGAN__VW_##ISA <= n; i += HIGAN__VW_##ISA)                                      \
        higan__vstore_##ISA(y + i, higan__vadd_##ISA(higan__vload_##ISA(y + i),                 \
                                                     higan__vload_##ISA(x + i)));               \
    for (; i < n; ++i) y[i] += x[i];                                                            \
}                                                                                               \
static HIGAN__TGT_##ISA float higan__sum_##ISA(int64_t n, const float *x) {                     \
    higan__vt_##ISA s0 = higan__vzero_##ISA(), s1 = s0, s2 = s0, s3 = s0;                       \
    int64_t i = 0;                                                                              \
    float s;                                                                                    \
    for (; i + 4 * HIGAN__VW_##ISA <= n; i += 4 * HIGAN__VW_##ISA) {                            \
        s0 = higan__vadd_##ISA(s0, higan__vload_##ISA(x + i));                                  \
        s1 = higan__vadd_##ISA(s1, higan__vload_##ISA(x + i + HIGAN__VW_##ISA));                \
        s2 = higan__vadd_##ISA(s2, higan__vload_##ISA(x + i + 2 * HIGAN__VW_##ISA));            \
        s3 = higan__vadd_##ISA(s3, higan__vload_##ISA(x + i + 3 * HIGAN__VW_##ISA));            \
    }                                                                                           \
    for (; i + HIGAN__VW_##ISA <= n; i += HIGAN__VW_##ISA)                                      \
        s0 = higan__vadd_##ISA(s0, higan__vload_##ISA(x + i));                                  \
    s = higan__vhsum_##ISA(higan__vadd_##ISA(higan__vadd_##ISA(s0, s1),                         \
                                             higan__vadd_##ISA(s2, s3)));                       \
    for (; i < n; ++i) s += x[i];                                                               \
    return s;                                                                                   \
}

/* Register tiles (MR rows x NR = NV*VW columns of C):
   scalar 4x8 (32 scalars), AVX2 6x16 (12 ymm accumulators), AVX-512 14x32 (28 zmm). */
HIGAN__DEFINE_UKR(scalar, higan__ukr_scalar, 4, 8)
HIGAN__DEFINE_VEC_OPS(scalar)
#ifdef HIGAN__X86_SIMD
HIGAN__DEFINE_UKR(avx2, higan__ukr_avx2, 6, 2)
HIGAN__DEFINE_VEC_OPS(avx2)
#  ifdef HIGAN__GEMM_AVX512
HIGAN__DEFINE_UKR(avx512, higan__ukr_avx512, 14, 2)
HIGAN__DEFINE_VEC_OPS(avx512)
#  endif
#endif

/* ---- dispatch ------------------------------------------------------------------------------ */
typedef void (*higan__ukr_fn)(int64_t kc, const float *a, const float *b, float *c, int64_t ldc,
                              float beta);
/* A GEMM level: register tile mr x nr and cache blocks. kc: K block (an A panel of mr x kc and
   a B panel of kc x nr stay in L1/L2), mc: rows of A packed at once, nc: columns of B packed
   at once (kc x nc floats stay in L2 while every A panel sweeps over them). */
typedef struct higan__gemm_kernel {
    int mr, nr;
    int64_t kc, mc, nc;
    higan__ukr_fn ukr;
} higan__gemm_kernel;
typedef struct higan__level_ops {
    higan__gemm_kernel gemm;
    void (*add)(int64_t n, float *y, const float *x);
    float (*sum)(int64_t n, const float *x);
} higan__level_ops;
#define HIGAN__MAX_MR 16
#define HIGAN__MAX_NR 64
/* A new level (for instance an AMX-BF16 tile kernel, HIGAN_CPU_AMX after AVX-512 in
   higan_cpu) is one more entry here: its micro-kernel takes the same packed panels (or
   converts them to BF16 pairs in its own pack routines, selected by a flag in
   higan__gemm_kernel) and the driver below is shared. */
static const higan__level_ops higan__ops_scalar = {
    {4, 8, 256, 256, 1024, higan__ukr_scalar}, higan__add_scalar, higan__sum_scalar};
#ifdef HIGAN__X86_SIMD
static const higan__level_ops higan__ops_avx2 = {
    {6, 16, 256, 288, 1024, higan__ukr_avx2}, higan__add_avx2, higan__sum_avx2};
#  ifdef HIGAN__GEMM_AVX512
static const higan__level_ops higan__ops_avx512 = {
    {14, 32, 256, 336, 1024, higan__ukr_avx512}, higan__add_avx512, higan__sum_avx512};
#  endif
#endif
static const higan__level_ops *higan__ops(void) {
    higan_cpu level = higan_cpu_level();
    (void)level;
#ifdef HIGAN__X86_SIMD
#  ifdef HIGAN__GEMM_AVX512
    if (level >= HIGAN_CPU_AVX512) return &higan__ops_avx512;
#  endif
    if (level >= HIGAN_CPU_AVX2) return &higan__ops_avx2;
#endif
    return &higan__ops_scalar;
}

/* ---- 3. the blocked GEMM driver ---------------------------------------------------------------
   Operands are described by a source so that conv2d can hand the GEMM its im2col matrix
   without materialising it: the pack routines read the input image directly. */
enum {
    HIGAN__SRC_MAT = 0,    /* element (r, c) = p[r * ld + c] */
    HIGAN__SRC_MAT_T,      /* element (r, c) = p[c * ld + r] */
    HIGAN__SRC_IM2COL,     /* B of a conv forward: (k = (ic, kh, kw), j = (oh, ow)) of x_n */
    HIGAN__SRC_IM2COL_T    /* B of a conv dW: (k = (oh, ow), j = (ic, kh, kw)) of x_n */
};
typedef struct higan__src {
    int kind;
    const float *p;
    int64_t ld;
    const higan_conv2d_shape *cs;   /* im2col kinds: p is one sample [IC, H, W] */
    int64_t oh, ow;                 /* im2col kinds: output size */
} higan__src;
static void higan__src_mat(higan__src *s, const float *p, int64_t ld, int trans) {
    s->kind = trans ? HIGAN__SRC_MAT_T : HIGAN__SRC_MAT;
    s->p = p; s->ld = ld; s->cs = NULL; s->oh = s->ow = 0;
}

/* Pack rows [i0, i0+m) x k [k0, k0+kc) of op(A) (m <= mr) times alpha into dst [kc][mr],
   rows m..mr-1 zero. */
static void higan__pack_a(float *dst, const higan__src *s, int64_t i0, int64_t m, int64_t k0,
                          int64_t kc, int mr, float alpha) {
    int64_t i, k;
    if (s->kind == HIGAN__SRC_MAT) {
        for (i = 0; i < m; ++i) {
            const float *row = s->p + (i0 + i) * s->ld + k0;
            for (k = 0; k < kc; ++k) dst[k * mr + i] = alpha * row[k];
        }
    } else {
        HIGAN_ASSERT(s->kind == HIGAN__SRC_MAT_T);
        for (k = 0; k < kc; ++k) {
            const float *col = s->p + (k0 + k) * s->ld + i0;
            for (i = 0; i < m; ++i) dst[k * mr + i] = alpha * col[i];
        }
    }
    if (m < mr)
        for (k = 0; k < kc; ++k)
            for (i = m; i < mr; ++i) dst[k * mr + i] = 0.0f;
}

/* Pack k [k0, k0+kc) x columns [j0, j0+n) of op(B) (n <= nr) into dst [kc][nr], columns
   n..nr-1 zero. */
static void higan__pack_b(float *dst, const higan__src *s, int64_t k0, int64_t kc, int64_t j0,
                          int64_t n, int nr) {
    int64_t k, j;
    switch (s->kind) {
    case HIGAN__SRC_MAT:
        for (k = 0; k < kc; ++k) memcpy(dst + k * nr, s->p + (k0 + k) * s->ld + j0, (size_t)n * sizeof(float));
        break;
    case HIGAN__SRC_MAT_T:
        for (j = 0; j < n; ++j) {
            const float *col = s->p + (j0 + j) * s->ld + k0;
            for (k = 0; k < kc; ++k) dst[k * nr + j] = col[k];
        }
        break;
    case HIGAN__SRC_IM2COL: {
        /* row k = (ic, kh, kw); column j = output pixel (oh, ow), walked incrementally */
        const higan_conv2d_shape *cs = s->cs;
        int64_t KK = cs->KH * cs->KW, H = cs->H, W = cs->W, OW = s->ow;
        for (k = 0; k < kc; ++k) {
            int64_t kk = k0 + k, ic = kk / KK, r = kk % KK, kh = r / cs->KW, kw = r % cs->KW;
            const float *xc = s->p + ic * H * W;
            int64_t oh = j0 / OW, ow = j0 % OW;
            float *d = dst + k * nr;
            int64_t ih = oh * cs->stride_h - cs->pad_top + kh;
            int64_t iw = ow * cs->stride_w - cs->pad_left + kw;
            int64_t iw0 = kw - cs->pad_left;
            for (j = 0; j < n; ++j) {
                d[j] = ((uint64_t)ih < (uint64_t)H && (uint64_t)iw < (uint64_t)W) ? xc[ih * W + iw] : 0.0f;
                iw += cs->stride_w;
                if (++ow == OW) { ow = 0; iw = iw0; ih += cs->stride_h; }
            }
        }
        break;
    }
    case HIGAN__SRC_IM2COL_T: {
        /* row k = output pixel (oh, ow); column j = (ic, kh, kw) */
        const higan_conv2d_shape *cs = s->cs;
        int64_t KK = cs->KH * cs->KW, H = cs->H, W = cs->W, OW = s->ow;
        int64_t off[HIGAN__MAX_NR], khv[HIGAN__MAX_NR], kwv[HIGAN__MAX_NR];
        int64_t oh = k0 / OW, ow = k0 % OW;
        for (j = 0; j < n; ++j) {
            int64_t jj = j0 + j, r = jj % KK;
            off[j] = (jj / KK) * H * W;
            khv[j] = r / cs->KW;
            kwv[j] = r % cs->KW;
        }
        for (k = 0; k < kc; ++k) {
            int64_t ih0 = oh * cs->stride_h - cs->pad_top, iw0 = ow * cs->stride_w - cs->pad_left;
            float *d = dst + k * nr;
            for (j = 0; j < n; ++j) {
                int64_t ih = ih0 + khv[j], iw = iw0 + kwv[j];
                d[j] = ((uint64_t)ih < (uint64_t)H && (uint64_t)iw < (uint64_t)W) ? s->p[off[j] + ih * W + iw] : 0.0f;
            }
            if (++ow == OW) { ow = 0; ++oh; }
        }
        break;
    }
    default:
        HIGAN_ASSERT(0 && "bad GEMM source");
    }
    if (n < nr)
        for (k = 0; k < kc; ++k)
            for (j = n; j < nr; ++j) dst[k * nr + j] = 0.0f;
}

/* Element (k, j) of op(B), for the unpacked fallback only. */
static float higan__src_b_at(const higan__src *s, int64_t k, int64_t j) {
    float v;
    higan__pack_b(&v, s, k, 1, j, 1, 1);
    return v;
}

/* One packing buffer per calling thread, grown on demand, 64-byte aligned. */
static HIGAN__TLS void *higan__gemm_raw;
static HIGAN__TLS size_t higan__gemm_cap;   /* floats */
static float *higan__gemm_buffer(size_t floats) {
    if (floats > higan__gemm_cap) {
        if (higan__gemm_raw) HIGAN_FREE(higan__gemm_raw);
        higan__gemm_raw = HIGAN_MALLOC(floats * sizeof(float) + 64);
        higan__gemm_cap = higan__gemm_raw ? floats : 0;
        if (!higan__gemm_raw) return NULL;
    }
    return (float *)(((uintptr_t)higan__gemm_raw + 63) & ~(uintptr_t)63);
}
HIGAN_DEF void higan_gemm_free_buffers(void) {
    if (higan__gemm_raw) HIGAN_FREE(higan__gemm_raw);
    higan__gemm_raw = NULL;
    higan__gemm_cap = 0;
}

/* C[M,N] = beta * C (beta 0: zero fill, C not read). */
static void higan__scale_c(int64_t M, int64_t N, float beta, float *C, int64_t ldc) {
    int64_t i, j;
    for (i = 0; i < M; ++i) {
        float *c = C + i * ldc;
        if (beta == 0.0f) memset(c, 0, (size_t)N * sizeof(float));
        else if (beta != 1.0f) for (j = 0; j < N; ++j) c[j] *= beta;
    }
}

/* C[M,N] = alpha * op(A)[M,K] op(B)[K,N] + beta * C.
   Loops (BLIS order): jc over N blocks of nc, pc over K blocks of kc (sequential: every C
   element sums its K blocks in the same order whatever the thread count), pack B block
   [kc x nc] (parallel over nr panels); ic over M blocks of mc, pack A block (parallel over mr
   panels); then the mr x nr tiles, parallel over tiles (each written by one thread). */
static void higan__gemm_driver(const higan__gemm_kernel *kr, int64_t M, int64_t N, int64_t K,
                               float alpha, const higan__src *A, const higan__src *B, float beta,
                               float *C, int64_t ldc) {
    const int mr = kr->mr, nr = kr->nr;
    int64_t nk, kcs, mcs, ncs, jc, pc, ic;
    float *ap, *bp;
    if (M <= 0 || N <= 0) return;
    if (K <= 0 || alpha == 0.0f) { higan__scale_c(M, N, beta, C, ldc); return; }
    nk = HIGAN__CEIL_DIV(K, kr->kc);
    kcs = HIGAN__CEIL_DIV(K, nk);                        /* balanced K blocks */
    mcs = HIGAN__MIN(HIGAN__CEIL_DIV(M, mr) * mr, kr->mc);
    ncs = HIGAN__MIN(HIGAN__CEIL_DIV(N, nr) * nr, kr->nc);
    ap = higan__gemm_buffer((size_t)(mcs * kcs + kcs * ncs));
    if (!ap) {
        /* no memory for the packing buffer: unpacked loop (slow but correct) */
        int64_t i, j, k;
        for (i = 0; i < M; ++i)
            for (j = 0; j < N; ++j) {
                float acc = 0.0f, *c = C + i * ldc + j;
                for (k = 0; k < K; ++k) {
                    float a = A->kind == HIGAN__SRC_MAT ? A->p[i * A->ld + k] : A->p[k * A->ld + i];
                    acc += a * higan__src_b_at(B, k, j);
                }
                *c = alpha * acc + (beta == 0.0f ? 0.0f : beta * *c);
            }
        return;
    }
    bp = ap + mcs * kcs;
    for (jc = 0; jc < N; jc += ncs) {
        const int64_t nc = HIGAN__MIN(ncs, N - jc), njr = HIGAN__CEIL_DIV(nc, nr);
        for (pc = 0; pc < K; pc += kcs) {
            const int64_t kc = HIGAN__MIN(kcs, K - pc);
            const float beta_k = pc == 0 ? beta : 1.0f;
            int64_t jr;
            HIGAN__PARALLEL_FOR_IF(njr > 1 && kc * nc >= 32768)
            for (jr = 0; jr < njr; ++jr)
                higan__pack_b(bp + jr * nr * kc, B, pc, kc, jc + jr * nr,
                              HIGAN__MIN(nr, nc - jr * nr), nr);
            for (ic = 0; ic < M; ic += mcs) {
                const int64_t mc = HIGAN__MIN(mcs, M - ic), nir = HIGAN__CEIL_DIV(mc, mr);
                const int64_t ntile = nir * njr;
                int64_t ir, t;
                HIGAN__PARALLEL_FOR_IF(nir > 1 && kc * mc >= 32768)
                for (ir = 0; ir < nir; ++ir)
                    higan__pack_a(ap + ir * mr * kc, A, ic + ir * mr, HIGAN__MIN(mr, mc - ir * mr),
                                  pc, kc, mr, alpha);
                /* tiles row-panel major: an A panel stays in L1 while B streams from L2 */
                HIGAN__PARALLEL_FOR_IF(ntile > 1 && mc * nc * kc >= 131072)
                for (t = 0; t < ntile; ++t) {
                    const int64_t tr = t / njr, tj = t % njr;
                    const int64_t m = HIGAN__MIN(mr, mc - tr * mr), n = HIGAN__MIN(nr, nc - tj * nr);
                    const float *a = ap + tr * mr * kc, *b = bp + tj * nr * kc;
                    float *c = C + (ic + tr * mr) * ldc + jc + tj * nr;
                    if (m == mr && n == nr) {
                        kr->ukr(kc, a, b, c, ldc, beta_k);
                    } else {
                        /* edge tile: full tile into tmp, then the same merge as the kernel's */
                        float tmp[HIGAN__MAX_MR * HIGAN__MAX_NR];
                        int64_t i, j;
                        kr->ukr(kc, a, b, tmp, nr, 0.0f);
                        for (i = 0; i < m; ++i)
                            for (j = 0; j < n; ++j) {
                                float *cp = c + i * ldc + j, v = tmp[i * nr + j];
                                if (beta_k == 0.0f) *cp = v;
                                else if (beta_k == 1.0f) *cp = v + *cp;
                                else *cp = v + beta_k * *cp;
                            }
                    }
                }
            }
        }
    }
}

/* ---- 4. public GEMM ---------------------------------------------------------------------------- */
static void higan__gemm_check(int trans_a, int trans_b, int64_t M, int64_t N, int64_t K,
                              const float *A, int64_t lda, const float *B, int64_t ldb,
                              const float *C, int64_t ldc) {
    HIGAN_ASSERT(M >= 0 && N >= 0 && K >= 0);
    if (M > 0 && N > 0) HIGAN_ASSERT(C && ldc >= N);
    if (M > 0 && N > 0 && K > 0) {
        HIGAN_ASSERT(A && B);
        HIGAN_ASSERT(lda >= (trans_a ? M : K));
        HIGAN_ASSERT(ldb >= (trans_b ? K : N));
    }
}

HIGAN_DEF void higan_gemm(int trans_a, int trans_b, int64_t M, int64_t N, int64_t K, float alpha,
                          const float *A, int64_t lda, const float *B, int64_t ldb,
                          float beta, float *C, int64_t ldc) {
    higan__src a, b;
    higan__gemm_check(trans_a, trans_b, M, N, K, A, lda, B, ldb, C, ldc);
    higan__src_mat(&a, A, lda, trans_a);
    higan__src_mat(&b, B, ldb, trans_b);
    higan__gemm_driver(&higan__ops()->gemm, M, N, K, alpha, &a, &b, beta, C, ldc);
}

HIGAN_DEF void higan_gemm_ref(int trans_a, int trans_b, int64_t M, int64_t N, int64_t K, float alpha,
                              const float *A, int64_t lda, const float *B, int64_t ldb,
                              float beta, float *C, int64_t ldc) {
    int64_t i, j, k;
    higan__gemm_check(trans_a, trans_b, M, N, K, A, lda, B, ldb, C, ldc);
    for (i = 0; i < M; ++i)
        for (j = 0; j < N; ++j) {
            double acc = 0.0;
            for (k = 0; k < K; ++k) {
                float a = trans_a ? A[k * lda + i] : A[i * lda + k];
                float b = trans_b ? B[j * ldb + k] : B[k * ldb + j];
                acc += (double)a * (double)b;
            }
            C[i * ldc + j] = (float)((double)alpha * acc +
                                     (beta == 0.0f ? 0.0 : (double)beta * (double)C[i * ldc + j]));
        }
}

/* ---- conv2d -------------------------------------------------------------------------------------- */
HIGAN_DEF higan_conv2d_shape higan_conv2d_make_shape(int64_t N, int64_t IC, int64_t H, int64_t W,
        int64_t OC, int64_t KH, int64_t KW, int64_t stride_h, int64_t stride_w,
        int64_t pad_top, int64_t pad_bottom, int64_t pad_left, int64_t pad_right) {
    higan_conv2d_shape s;
    s.N = N; s.IC = IC; s.H = H; s.W = W; s.OC = OC; s.KH = KH; s.KW = KW;
    s.stride_h = stride_h; s.stride_w = stride_w;
    s.pad_top = pad_top; s.pad_bottom = pad_bottom; s.pad_left = pad_left; s.pad_right = pad_right;
    return s;
}
HIGAN_DEF int64_t higan_conv2d_out_h(const higan_conv2d_shape *s) {
    return (s->H + s->pad_top + s->pad_bottom - s->KH) / s->stride_h + 1;
}
HIGAN_DEF int64_t higan_conv2d_out_w(const higan_conv2d_shape *s) {
    return (s->W + s->pad_left + s->pad_right - s->KW) / s->stride_w + 1;
}
static void higan__conv_check(const higan_conv2d_shape *s) {
    HIGAN_ASSERT(s->N >= 0 && s->IC > 0 && s->H > 0 && s->W > 0 && s->OC > 0 && s->KH > 0 && s->KW > 0);
    HIGAN_ASSERT(s->stride_h > 0 && s->stride_w > 0);
    HIGAN_ASSERT(s->pad_top >= 0 && s->pad_bottom >= 0 && s->pad_left >= 0 && s->pad_right >= 0);
    HIGAN_ASSERT(s->H + s->pad_top + s->pad_bottom >= s->KH && s->W + s->pad_left + s->pad_right >= s->KW);
}
/* 1x1, stride 1, no padding: col(x_n) is x_n itself viewed as [IC, H*W]. */
static int higan__conv_pointwise(const higan_conv2d_shape *s) {
    return s->KH == 1 && s->KW == 1 && s->stride_h == 1 && s->stride_w == 1 && s->pad_top == 0 &&
           s->pad_bottom == 0 && s->pad_left == 0 && s->pad_right == 0;
}
static void higan__src_im2col(higan__src *src, const float *xn, const higan_conv2d_shape *s, int transposed) {
    src->kind = transposed ? HIGAN__SRC_IM2COL_T : HIGAN__SRC_IM2COL;
    src->p = xn; src->ld = 0; src->cs = s;
    src->oh = higan_conv2d_out_h(s); src->ow = higan_conv2d_out_w(s);
}
/* Output pixels per column block of the dx scratch: the whole image unless the block
   [IC*KH*KW, P] would pass 1M floats. */
static int64_t higan__conv_dx_chunk(const higan_conv2d_shape *s) {
    int64_t P = higan_conv2d_out_h(s) * higan_conv2d_out_w(s), KD = s->IC * s->KH * s->KW, c;
    if (KD * P <= ((int64_t)1 << 20)) return P;
    c = (((int64_t)1 << 20) / KD) & ~(int64_t)63;
    return c < 64 ? 64 : c;
}
HIGAN_DEF size_t higan_conv2d_scratch_bytes(const higan_conv2d_shape *s) {
    if (higan__conv_pointwise(s)) return 0;
    return (size_t)(s->IC * s->KH * s->KW * higan__conv_dx_chunk(s)) * sizeof(float) + 64;
}

/* y [N, OC, P = OH*OW]: per sample y_n[OC, P] = w[OC, KD] col(x_n)[KD, P] (+ b broadcast). */
HIGAN_DEF higan_status higan_conv2d_forward(float *y, const float *x, const float *w, const float *b,
                                            const higan_conv2d_shape *s, higan_arena *scratch) {
    const higan__level_ops *ops = higan__ops();
    int64_t P, KD, n;
    higan__src A, B;
    (void)scratch;
    higan__conv_check(s);
    P = higan_conv2d_out_h(s) * higan_conv2d_out_w(s);
    KD = s->IC * s->KH * s->KW;
    higan__src_mat(&A, w, KD, 0);
    for (n = 0; n < s->N; ++n) {
        float *yn = y + n * s->OC * P;
        const float *xn = x + n * s->IC * s->H * s->W;
        if (b) {
            int64_t oc, p;
            for (oc = 0; oc < s->OC; ++oc)
                for (p = 0; p < P; ++p) yn[oc * P + p] = b[oc];
        }
        if (higan__conv_pointwise(s)) higan__src_mat(&B, xn, P, 0);
        else higan__src_im2col(&B, xn, s, 0);
        higan__gemm_driver(&ops->gemm, s->OC, P, KD, 1.0f, &A, &B, b ? 1.0f : 0.0f, yn, P);
    }
    return HIGAN_OK;
}

/* dx_n [IC, H, W] += col2im(dcol) for output pixels [p0, p0+pc); dcol [KD, pc].
   Parallel over input channels: each channel's rows of dcol only touch that channel. */
static void higan__col2im_add(float *dxn, const float *dcol, const higan_conv2d_shape *s,
                              int64_t p0, int64_t pc) {
    const int64_t OW = higan_conv2d_out_w(s), H = s->H, W = s->W, KH = s->KH, KW = s->KW;
    int64_t ic;
    HIGAN__PARALLEL_FOR_IF(s->IC > 1 && s->IC * KH * KW * pc >= 65536)
    for (ic = 0; ic < s->IC; ++ic) {
        float *xc = dxn + ic * H * W;
        int64_t kh, kw, j;
        for (kh = 0; kh < KH; ++kh)
            for (kw = 0; kw < KW; ++kw) {
                const float *row = dcol + ((ic * KH + kh) * KW + kw) * pc;
                int64_t oh = p0 / OW, ow = p0 % OW;
                int64_t ih = oh * s->stride_h - s->pad_top + kh, iw = ow * s->stride_w - s->pad_left + kw;
                const int64_t iw0 = kw - s->pad_left;
                for (j = 0; j < pc; ++j) {
                    if ((uint64_t)ih < (uint64_t)H && (uint64_t)iw < (uint64_t)W) xc[ih * W + iw] += row[j];
                    iw += s->stride_w;
                    if (++ow == OW) { ow = 0; iw = iw0; ih += s->stride_h; }
                }
            }
    }
}

HIGAN_DEF higan_status higan_conv2d_backward(float *dx, float *dw, float *db, const float *dy,
                                             const float *x, const float *w,
                                             const higan_conv2d_shape *s, higan_arena *scratch) {
    const higan__level_ops *ops = higan__ops();
    int64_t P, KD, n;
    higan__src A, B;
    higan__conv_check(s);
    P = higan_conv2d_out_h(s) * higan_conv2d_out_w(s);
    KD = s->IC * s->KH * s->KW;
    if (db) {
        int64_t oc;
        HIGAN__PARALLEL_FOR_IF(s->OC > 1 && s->N * s->OC * P >= 65536)
        for (oc = 0; oc < s->OC; ++oc) {
            float acc = 0.0f;
            int64_t nn;
            for (nn = 0; nn < s->N; ++nn) acc += ops->sum(P, dy + (nn * s->OC + oc) * P);
            db[oc] += acc;
        }
    }
    if (dw) {
        /* dw [OC, KD] += dy_n [OC, P] col(x_n)^T [P, KD], samples in order */
        for (n = 0; n < s->N; ++n) {
            const float *xn = x + n * s->IC * s->H * s->W;
            higan__src_mat(&A, dy + n * s->OC * P, P, 0);
            if (higan__conv_pointwise(s)) higan__src_mat(&B, xn, P, 1);
            else higan__src_im2col(&B, xn, s, 1);
            higan__gemm_driver(&ops->gemm, s->OC, KD, P, 1.0f, &A, &B, 1.0f, dw, KD);
        }
    }
    if (dx) {
        /* dcol [KD, P] = w^T [KD, OC] dy_n [OC, P]; dx_n += col2im(dcol) */
        higan__src_mat(&A, w, KD, 1);
        if (higan__conv_pointwise(s)) {
            for (n = 0; n < s->N; ++n) {
                higan__src_mat(&B, dy + n * s->OC * P, P, 0);
                higan__gemm_driver(&ops->gemm, s->IC, P, s->OC, 1.0f, &A, &B, 1.0f,
                                   dx + n * s->IC * P, P);
            }
        } else {
            const int64_t chunk = higan__conv_dx_chunk(s);
            size_t mark;
            float *dcol;
            if (!scratch) return higan__error(HIGAN_ERR_ARG, "conv2d backward: dx needs a scratch arena");
            mark = higan_arena_mark(scratch);
            dcol = higan_arena_floats(scratch, KD * chunk);
            if (!dcol) return higan_arena_status(scratch);
            for (n = 0; n < s->N; ++n) {
                int64_t p0;
                for (p0 = 0; p0 < P; p0 += chunk) {
                    const int64_t pc = HIGAN__MIN(chunk, P - p0);
                    higan__src_mat(&B, dy + n * s->OC * P + p0, P, 0);
                    higan__gemm_driver(&ops->gemm, KD, pc, s->OC, 1.0f, &A, &B, 0.0f, dcol, pc);
                    higan__col2im_add(dx + n * s->IC * s->H * s->W, dcol, s, p0, pc);
                }
            }
            higan_arena_release(scratch, mark);
        }
    }
    return HIGAN_OK;
}

/* Direct loops: input pixel (ih, iw) = (oh*sh - pad_top + kh, ow*sw - pad_left + kw). */
HIGAN_DEF void higan_conv2d_forward_ref(float *y, const float *x, const float *w, const float *b,
                                        const higan_conv2d_shape *s) {
    const int64_t OH = higan_conv2d_out_h(s), OW = higan_conv2d_out_w(s);
    int64_t n, oc, oh, ow, ic, kh, kw;
    higan__conv_check(s);
    for (n = 0; n < s->N; ++n)
        for (oc = 0; oc < s->OC; ++oc)
            for (oh = 0; oh < OH; ++oh)
                for (ow = 0; ow < OW; ++ow) {
                    double acc = b ? (double)b[oc] : 0.0;
                    for (ic = 0; ic < s->IC; ++ic)
                        for (kh = 0; kh < s->KH; ++kh)
                            for (kw = 0; kw < s->KW; ++kw) {
                                int64_t ih = oh * s->stride_h - s->pad_top + kh;
                                int64_t iw = ow * s->stride_w - s->pad_left + kw;
                                if (ih < 0 || ih >= s->H || iw < 0 || iw >= s->W) continue;
                                acc += (double)x[((n * s->IC + ic) * s->H + ih) * s->W + iw] *
                                       (double)w[((oc * s->IC + ic) * s->KH + kh) * s->KW + kw];
                            }
                    y[((n * s->OC + oc) * OH + oh) * OW + ow] = (float)acc;
                }
}
HIGAN_DEF void higan_conv2d_backward_ref(float *dx, float *dw, float *db, const float *dy,
                                         const float *x, const float *w, const higan_conv2d_shape *s) {
    const int64_t OH = higan_conv2d_out_h(s), OW = higan_conv2d_out_w(s);
    int64_t n, oc, oh, ow, ic, kh, kw;
    higan__conv_check(s);
    if (db)
        for (oc = 0; oc < s->OC; ++oc) {
            double acc = 0.0;
            for (n = 0; n < s->N; ++n)
                for (oh = 0; oh < OH * OW; ++oh) acc += (double)dy[(n * s->OC + oc) * OH * OW + oh];
            db[oc] += (float)acc;
        }
    if (dw)
        for (oc = 0; oc < s->OC; ++oc)
            for (ic = 0; ic < s->IC; ++ic)
                for (kh = 0; kh < s->KH; ++kh)
                    for (kw = 0; kw < s->KW; ++kw) {
                        double acc = 0.0;
                        for (n = 0; n < s->N; ++n)
                            for (oh = 0; oh < OH; ++oh)
                                for (ow = 0; ow < OW; ++ow) {
                                    int64_t ih = oh * s->stride_h - s->pad_top + kh;
                                    int64_t iw = ow * s->stride_w - s->pad_left + kw;
                                    if (ih < 0 || ih >= s->H || iw < 0 || iw >= s->W) continue;
                                    acc += (double)dy[((n * s->OC + oc) * OH + oh) * OW + ow] *
                                           (double)x[((n * s->IC + ic) * s->H + ih) * s->W + iw];
                                }
                        dw[((oc * s->IC + ic) * s->KH + kh) * s->KW + kw] += (float)acc;
                    }
    if (dx)
        for (n = 0; n < s->N; ++n)
            for (ic = 0; ic < s->IC; ++ic)
                for (oh = 0; oh < s->H; ++oh)          /* here (oh, ow) walk the input pixels */
                    for (ow = 0; ow < s->W; ++ow) {
                        double acc = 0.0;
                        for (oc = 0; oc < s->OC; ++oc)
                            for (kh = 0; kh < s->KH; ++kh)
                                for (kw = 0; kw < s->KW; ++kw) {
                                    int64_t th = oh + s->pad_top - kh, tw = ow + s->pad_left - kw;
                                    int64_t yh, yw;
                                    if (th < 0 || tw < 0 || th % s->stride_h || tw % s->stride_w) continue;
                                    yh = th / s->stride_h; yw = tw / s->stride_w;
                                    if (yh >= OH || yw >= OW) continue;
                                    acc += (double)dy[((n * s->OC + oc) * OH + yh) * OW + yw] *
                                           (double)w[((oc * s->IC + ic) * s->KH + kh) * s->KW + kw];
                                }
                        dx[((n * s->IC + ic) * s->H + oh) * s->W + ow] += (float)acc;
                    }
}

typedef struct { higan_var *x, *w, *b, *y; higan_conv2d_shape s; } higan__conv2d_ctx;
static void higan__conv2d_backward_op(higan_tape *t, void *p) {
    higan__conv2d_ctx *c = (higan__conv2d_ctx *)p;
    /* take every gradient buffer before the scratch mark: they must outlive the release */
    float *dx = higan_var_grad(t, c->x), *dw = higan_var_grad(t, c->w);
    float *db = c->b ? higan_var_grad(t, c->b) : NULL;
    size_t mark;
    if (!dx && !dw && !db) return;
    mark = higan_arena_mark(t->arena);
    higan_conv2d_backward(dx, dw, db, c->y->grad, c->x->data, c->w->data, &c->s, t->arena);
    higan_arena_release(t->arena, mark);
}
HIGAN_DEF higan_var *higan_conv2d(higan_tape *t, higan_var *x, higan_var *w, higan_var *b,
                                  int64_t stride_h, int64_t stride_w, int64_t pad_top,
                                  int64_t pad_bottom, int64_t pad_left, int64_t pad_right) {
    higan_var *in[3], *y;
    higan__conv2d_ctx *c;
    higan_conv2d_shape s;
    int64_t shape[4];
    size_t mark;
    if (!x || !w) return NULL;
    HIGAN_ASSERT(x->ndim == 4 && w->ndim == 4 && w->shape[1] == x->shape[1]);
    if (b) HIGAN_ASSERT(b->ndim == 1 && b->shape[0] == w->shape[0]);
    s = higan_conv2d_make_shape(x->shape[0], x->shape[1], x->shape[2], x->shape[3], w->shape[0],
                                w->shape[2], w->shape[3], stride_h, stride_w, pad_top, pad_bottom,
                                pad_left, pad_right);
    higan__conv_check(&s);
    shape[0] = s.N; shape[1] = s.OC; shape[2] = higan_conv2d_out_h(&s); shape[3] = higan_conv2d_out_w(&s);
    in[0] = x; in[1] = w; in[2] = b;
    if (!(y = higan_op_output(t, 4, shape, in, b ? 3 : 2))) return NULL;
    mark = higan_arena_mark(t->arena);
    higan_conv2d_forward(y->data, x->data, w->data, b ? b->data : NULL, &s, t->arena);
    higan_arena_release(t->arena, mark);
    if (y->requires_grad) {
        if (!(c = (higan__conv2d_ctx *)higan_tape_ctx(t, sizeof *c))) return NULL;
        c->x = x; c->w = w; c->b = b; c->y = y; c->s = s;
        higan_tape_record(t, y, higan__conv2d_backward_op, c);
    }
    return y;
}

/* ---- linear -------------------------------------------------------------------------------------- */
/* y [N, OUT] = x [N, IN] w[OUT, IN]^T + b: C starts as the broadcast bias, then beta = 1. */
HIGAN_DEF void higan_linear_forward(float *y, const float *x, const float *w, const float *b,
                                    int64_t N, int64_t IN, int64_t OUT) {
    if (b) {
        int64_t i;
        for (i = 0; i < N; ++i) memcpy(y + i * OUT, b, (size_t)OUT * sizeof(float));
    }
    higan_gemm(0, 1, N, OUT, IN, 1.0f, x, IN, w, IN, b ? 1.0f : 0.0f, y, OUT);
}
HIGAN_DEF void higan_linear_backward(float *dx, float *dw, float *db, const float *dy,
                                     const float *x, const float *w,
                                     int64_t N, int64_t IN, int64_t OUT) {
    if (dx) higan_gemm(0, 0, N, IN, OUT, 1.0f, dy, OUT, w, IN, 1.0f, dx, IN);
    if (dw) higan_gemm(1, 0, OUT, IN, N, 1.0f, dy, OUT, x, IN, 1.0f, dw, IN);
    if (db) {
        const higan__level_ops *ops = higan__ops();
        int64_t i;
        for (i = 0; i < N; ++i) ops->add(OUT, db, dy + i * OUT);   /* rows in order */
    }
}

typedef struct { higan_var *x, *w, *b, *y; int64_t n, in, out; } higan__linear_ctx;
static void higan__linear_backward_op(higan_tape *t, void *p) {
    higan__linear_ctx *c = (higan__linear_ctx *)p;
    float *dx = higan_var_grad(t, c->x), *dw = higan_var_grad(t, c->w);
    float *db = c->b ? higan_var_grad(t, c->b) : NULL;
    higan_linear_backward(dx, dw, db, c->y->grad, c->x->data, c->w->data, c->n, c->in, c->out);
}
HIGAN_DEF higan_var *higan_linear(higan_tape *t, higan_var *x, higan_var *w, higan_var *b) {
    higan_var *in[3], *y;
    higan__linear_ctx *c;
    int64_t shape[4], rows = 1, IN, OUT;
    int d;
    if (!x || !w) return NULL;
    HIGAN_ASSERT((x->ndim == 2 || x->ndim == 3) && w->ndim == 2);
    IN = x->shape[x->ndim - 1];
    OUT = w->shape[0];
    HIGAN_ASSERT(w->shape[1] == IN);
    if (b) HIGAN_ASSERT(b->ndim == 1 && b->shape[0] == OUT);
    for (d = 0; d < x->ndim - 1; ++d) { rows *= x->shape[d]; shape[d] = x->shape[d]; }
    shape[x->ndim - 1] = OUT;
    in[0] = x; in[1] = w; in[2] = b;
    if (!(y = higan_op_output(t, x->ndim, shape, in, b ? 3 : 2))) return NULL;
    higan_linear_forward(y->data, x->data, w->data, b ? b->data : NULL, rows, IN, OUT);
    if (y->requires_grad) {
        if (!(c = (higan__linear_ctx *)higan_tape_ctx(t, sizeof *c))) return NULL;
        c->x = x; c->w = w; c->b = b; c->y = y; c->n = rows; c->in = IN; c->out = OUT;
        higan_tape_record(t, y, higan__linear_backward_op, c);
    }
    return y;
}
