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
#ifndef HIGAN__MIN
#  define HIGAN__MIN(a, b) ((a) < (b) ? (a) : (b))
#endif
#ifndef HIGAN__MAX
#  define HIGAN__MAX(a, b) ((a) > (b) ? (a) : (b))
#endif
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

/* Register tiles (MR rows x NR = NV*VW columns of C): scalar 4x8 (32 scalars), AVX2 6x16
   (12 ymm accumulators), AVX-512 6x64 (24 zmm). Every tile tried (AVX-512 6x64, 14x32,
   12x32, 8x48, 6x32; AVX2 6x16, 4x24) runs at the FMA peak with its panels in L1 on the
   Zen 4 this was tuned on; 6x64 was fastest in the full GEMM (and wastes little on edge
   rows: M is padded to a multiple of 6 only). */
HIGAN__DEFINE_UKR(scalar, higan__ukr_scalar, 4, 8)
HIGAN__DEFINE_VEC_OPS(scalar)
#ifdef HIGAN__X86_SIMD
HIGAN__DEFINE_UKR(avx2, higan__ukr_avx2, 6, 2)
HIGAN__DEFINE_VEC_OPS(avx2)
#  ifdef HIGAN__GEMM_AVX512
HIGAN__DEFINE_UKR(avx512, higan__ukr_avx512, 6, 4)
HIGAN__DEFINE_VEC_OPS(avx512)
#  endif
#endif

/* ---- dispatch ------------------------------------------------------------------------------ */
typedef void (*higan__ukr_fn)(int64_t kc, const float *a, const float *b, float *c, int64_t ldc,
                              float beta);
/* A GEMM level: register tile mr x nr and cache blocks. kc: K block (an A panel of mr x kc,
   12 KB for 6 x 512, stays in L1 while the B block streams past it; C is read and written
   once per K block); mc: rows of A packed at once; nc: columns of B packed at once. The
   values were measured on the Zen 4 (1 MB L2) this was tuned on: kc 256..512 and large nc
   were best (the B block need not fit L2: its panels stream sequentially). */
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
#define HIGAN__MAX_NC 2048   /* nc of every level is at most this (a stack row in the packer) */
#define HIGAN__T_CHUNK 64    /* pixels per transposed block in the dW packer */
/* Adding a level, e.g. an AMX-BF16 tile kernel (HIGAN_CPU_AMX after HIGAN_CPU_AVX512 in
   higan_cpu, detected with AMX-TILE/AMX-BF16 and the Linux arch_prctl permission): one more
   higan__level_ops entry here plus its branch in higan__ops() below. Its micro-kernel gets
   the same packed panels; for BF16 it would convert them to VNNI pairs in its own pack
   routines (a flag in higan__gemm_kernel choosing them in higan__gemm_driver), while the
   blocking, batching and threading of the driver stay shared. */
static const higan__level_ops higan__ops_scalar = {
    {4, 8, 256, 1020, 2048, higan__ukr_scalar}, higan__add_scalar, higan__sum_scalar};
#ifdef HIGAN__X86_SIMD
static const higan__level_ops higan__ops_avx2 = {
    {6, 16, 512, 1020, 2048, higan__ukr_avx2}, higan__add_avx2, higan__sum_avx2};
#  ifdef HIGAN__GEMM_AVX512
static const higan__level_ops higan__ops_avx512 = {
    {6, 64, 512, 1020, 2048, higan__ukr_avx512}, higan__add_avx512, higan__sum_avx512};
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

/* d[0..mr) = s[0..mr): fixed-size copies for the tile heights in use (inlined, no loop). */
static inline void higan__copy_mr(float *d, const float *s, int mr) {
    int i;
    switch (mr) {
    case 4: memcpy(d, s, 4 * sizeof(float)); break;
    case 6: memcpy(d, s, 6 * sizeof(float)); break;
    default: for (i = 0; i < mr; ++i) d[i] = s[i];
    }
}

/* Pack the block rows [i0, i0+mc) x k [k0, k0+kc) of op(A), times alpha, into panels of mr
   rows (panel q at dst + q*pstride, laid out [kc][mr], rows past mc zero). Each source row is
   read contiguously: a row-major A panel by panel (its mr rows as mr streams, k outer), a
   transposed A by groups of panels (per k one contiguous segment of a row of A^T; single
   panels would revisit the same rows of A^T, whose stride aliases in L1). */
static void higan__pack_a_block(float *dst, int64_t pstride, const higan__src *s, int64_t i0,
                                int64_t mc, int64_t k0, int64_t kc, int mr, float alpha) {
    const int64_t np = HIGAN__CEIL_DIV(mc, mr);
    int64_t q;
    if (s->kind == HIGAN__SRC_MAT) {
        HIGAN__PARALLEL_FOR_IF(np > 1 && kc * mc >= 32768)
        for (q = 0; q < np; ++q) {
            const float *rows[HIGAN__MAX_MR];
            float *pd = dst + q * pstride;
            const int64_t m = HIGAN__MIN(mr, mc - q * mr);
            int64_t i, kk;
            for (i = 0; i < m; ++i) rows[i] = s->p + (i0 + q * mr + i) * s->ld + k0;
            for (kk = 0; kk < kc; ++kk) {
                float *d = pd + kk * mr;
                if (alpha == 1.0f) for (i = 0; i < m; ++i) d[i] = rows[i][kk];
                else for (i = 0; i < m; ++i) d[i] = alpha * rows[i][kk];
                for (; i < mr; ++i) d[i] = 0.0f;
            }
        }
    } else {
        /* groups of panels about 64 floats wide: per k one contiguous source segment,
           written to a few panels */
        const int64_t g = mr >= 64 ? 1 : 64 / mr, ng = HIGAN__CEIL_DIV(np, g);
        HIGAN_ASSERT(s->kind == HIGAN__SRC_MAT_T);
        HIGAN__PARALLEL_FOR_IF(ng > 1 && kc * mc >= 32768)
        for (q = 0; q < ng; ++q) {
            const int64_t q1 = HIGAN__MIN(np, (q + 1) * g);
            int64_t qq, i, k;
            for (k = 0; k < kc; ++k) {
                const float *src = s->p + (k0 + k) * s->ld + i0;
                for (qq = q * g; qq < q1; ++qq) {
                    float *d = dst + qq * pstride + k * mr;
                    const float *sq = src + qq * mr;
                    const int64_t m = HIGAN__MIN(mr, mc - qq * mr);
                    if (alpha == 1.0f && m == mr) { higan__copy_mr(d, sq, mr); continue; }
                    if (alpha == 1.0f) for (i = 0; i < m; ++i) d[i] = sq[i];
                    else for (i = 0; i < m; ++i) d[i] = alpha * sq[i];
                    for (; i < mr; ++i) d[i] = 0.0f;
                }
            }
        }
    }
}

/* count pixels of row (ic, kh, kw) of col(x_n), from output pixel (oh, ow) on, into d[0],
   d[ds], d[2 ds], ...: x_n[ic, oh*sh - pad_top + kh, ow*sw - pad_left + kw], 0 outside the
   image. Walks output rows as runs: per run one bounds computation, then zeros,
   a (strided) copy, zeros; no test per element. */
static void higan__im2col_row(float *d, int64_t ds, const float *xn, const higan_conv2d_shape *cs,
                              int64_t OW, int64_t ic, int64_t kh, int64_t kw, int64_t oh,
                              int64_t ow, int64_t count) {
    const int64_t W = cs->W, sw = cs->stride_w;
    const float *xc = xn + ic * cs->H * W;
    int64_t q = 0, t;
    while (q < count) {
        const int64_t run = HIGAN__MIN(count - q, OW - ow);
        const int64_t ih = oh * cs->stride_h - cs->pad_top + kh;
        const int64_t iw0 = ow * sw - cs->pad_left + kw;     /* input column of the first pixel */
        int64_t lo = 0, hi = 0;                               /* valid pixels [lo, hi) of the run */
        if ((uint64_t)ih < (uint64_t)cs->H && iw0 < W) {
            lo = iw0 < 0 ? (-iw0 + sw - 1) / sw : 0;
            hi = (W - iw0 + sw - 1) / sw;
            if (hi > run) hi = run;
            if (lo > hi) lo = hi;
        }
        {
            float *dq = d + q * ds;
            for (t = 0; t < lo; ++t) dq[t * ds] = 0.0f;
            if (hi > lo) {
                const float *xr = xc + ih * W + iw0 + lo * sw;   /* first valid input */
                if (ds == 1 && sw == 1) memcpy(dq + lo, xr, (size_t)(hi - lo) * sizeof(float));
                else for (t = lo; t < hi; ++t) dq[t * ds] = xr[(t - lo) * sw];
            }
            for (t = hi; t < run; ++t) dq[t * ds] = 0.0f;
        }
        q += run;
        ow = 0;
        ++oh;
    }
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
        /* row k = (ic, kh, kw) of col(x_n), pixels [j0, j0+n) */
        const int64_t KK = s->cs->KH * s->cs->KW, oh = j0 / s->ow, ow = j0 % s->ow;
        for (k = 0; k < kc; ++k) {
            const int64_t kk = k0 + k, r = kk % KK;
            higan__im2col_row(dst + k * nr, 1, s->p, s->cs, s->ow, kk / KK, r / s->cs->KW,
                              r % s->cs->KW, oh, ow, n);
        }
        break;
    }
    case HIGAN__SRC_IM2COL_T: {
        /* column j = row (ic, kh, kw) of col(x_n), rows k = pixels [k0, k0+kc): for blocks of
           pixels, the n row segments (contiguous runs) into tmp, then transposed in L1 */
        const int64_t KK = s->cs->KH * s->cs->KW;
        int64_t ic[HIGAN__MAX_NR], kh[HIGAN__MAX_NR], kw[HIGAN__MAX_NR], kb;
        for (j = 0; j < n; ++j) {
            const int64_t jj = j0 + j, r = jj % KK;
            ic[j] = jj / KK; kh[j] = r / s->cs->KW; kw[j] = r % s->cs->KW;
        }
        for (kb = 0; kb < kc; kb += HIGAN__T_CHUNK) {
            const int64_t kn = HIGAN__MIN(HIGAN__T_CHUNK, kc - kb);
            const int64_t oh = (k0 + kb) / s->ow, ow = (k0 + kb) % s->ow;
            float tmp[HIGAN__MAX_NR * HIGAN__T_CHUNK];
            for (j = 0; j < n; ++j)
                higan__im2col_row(tmp + j * HIGAN__T_CHUNK, 1, s->p, s->cs, s->ow, ic[j], kh[j],
                                  kw[j], oh, ow, kn);
            for (k = 0; k < kn; ++k) {
                float *d = dst + (kb + k) * nr;
                for (j = 0; j < n; ++j) d[j] = tmp[j * HIGAN__T_CHUNK + k];
            }
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

/* Pack the block k [k0, k0+kc) x columns [j0, j0+nc) of op(B) into panels of nr columns
   (panel p at dst + p*pstride, laid out [kc][nr]). A plain row-major B and an im2col B are
   copied row by row (k outer: each source row read once, contiguously), split over threads
   by rows; the other sources are split by panels. */
static void higan__pack_b_block(float *dst, int64_t pstride, const higan__src *s, int64_t k0,
                                int64_t kc, int64_t j0, int64_t nc, int nr) {
    const int64_t np = HIGAN__CEIL_DIV(nc, nr);
    int64_t k, p;
    if (s->kind == HIGAN__SRC_MAT) {
        HIGAN__PARALLEL_FOR_IF(kc >= 16 && kc * nc >= 32768)
        for (k = 0; k < kc; ++k) {
            const float *src = s->p + (k0 + k) * s->ld + j0;
            int64_t q, j;
            for (q = 0; q < np; ++q) {
                float *d = dst + q * pstride + k * nr;
                const int64_t n = HIGAN__MIN(nr, nc - q * nr);
                memcpy(d, src + q * nr, (size_t)n * sizeof(float));
                for (j = n; j < nr; ++j) d[j] = 0.0f;
            }
        }
    } else if (s->kind == HIGAN__SRC_IM2COL) {
        /* one im2col row segment of nc pixels at a time (its runs span whole output rows,
           not one panel), then split into the panels */
        HIGAN_ASSERT(nc <= HIGAN__MAX_NC);
        HIGAN__PARALLEL_FOR_IF(kc >= 16 && kc * nc >= 32768)
        for (k = 0; k < kc; ++k) {
            float row[HIGAN__MAX_NC];
            const int64_t KK = s->cs->KH * s->cs->KW, kk = k0 + k, r = kk % KK;
            int64_t q, j;
            higan__im2col_row(row, 1, s->p, s->cs, s->ow, kk / KK, r / s->cs->KW, r % s->cs->KW,
                              j0 / s->ow, j0 % s->ow, nc);
            for (q = 0; q < np; ++q) {
                float *d = dst + q * pstride + k * nr;
                const int64_t n = HIGAN__MIN(nr, nc - q * nr);
                memcpy(d, row + q * nr, (size_t)n * sizeof(float));
                for (j = n; j < nr; ++j) d[j] = 0.0f;
            }
        }
    } else {
        HIGAN__PARALLEL_FOR_IF(np > 1 && kc * nc >= 32768)
        for (p = 0; p < np; ++p)
            higan__pack_b(dst + p * pstride, s, k0, kc, j0 + p * nr, HIGAN__MIN(nr, nc - p * nr), nr);
    }
}

/* Element (k, j) of op(B) / (i, k) of op(A), for the unpacked fallback only. */
static float higan__src_b_at(const higan__src *s, int64_t k, int64_t j) {
    float v;
    higan__pack_b(&v, s, k, 1, j, 1, 1);
    return v;
}
static float higan__src_a_at(const higan__src *s, int64_t i, int64_t k) {
    return s->kind == HIGAN__SRC_MAT ? s->p[i * s->ld + k] : s->p[k * s->ld + i];
}
/* C = alpha op(A) op(B) + beta C without packing: used only when the packing buffer cannot
   be allocated (slow but correct). */
static void higan__gemm_unpacked(int64_t M, int64_t N, int64_t K, float alpha, const higan__src *A,
                                 const higan__src *B, float beta, float *C, int64_t ldc) {
    int64_t i, j, k;
    for (i = 0; i < M; ++i)
        for (j = 0; j < N; ++j) {
            float acc = 0.0f, *c = C + i * ldc + j;
            for (k = 0; k < K; ++k) acc += higan__src_a_at(A, i, k) * higan__src_b_at(B, k, j);
            *c = alpha * acc + (beta == 0.0f ? 0.0f : beta * *c);
        }
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

/* Several products in one driver call (conv2d over a batch of samples).
   along_k 0: nb products C_b[M,N] = alpha op(A) op(B_b) + beta C_b sharing A (packed once
     for all of them); B_b is B with its pointer advanced by b*b_step, C_b = C + b*c_step.
   along_k 1: one product whose K is nb segments of K/nb: segment b uses A and B with their
     pointers advanced by b*a_step and b*b_step (sum over samples of dY_n col(x_n)^T). */
#define HIGAN__GEMM_GROUP_FLOATS ((int64_t)1 << 17)
typedef struct higan__batch {
    int64_t nb;
    int along_k;
    int64_t a_step, b_step, c_step;
} higan__batch;
/* Products of an N-batch per group: all of them when K is one block (each C is then
   written once and A is packed once), else as many as keep their C in cache. */
static int64_t higan__gemm_group(const higan__gemm_kernel *kr, int64_t nb, int64_t M, int64_t N,
                                 int64_t K) {
    if (K <= kr->kc) return HIGAN__MAX(nb, 1);
    return HIGAN__MIN(nb, HIGAN__MAX(1, HIGAN__GEMM_GROUP_FLOATS / (M * N)));
}
static higan__src higan__src_step(const higan__src *s, int64_t step, int64_t b) {
    higan__src r = *s;
    r.p += b * step;
    return r;
}
/* Pack k [k0, k0+kc) of a K-segmented operand: each piece inside one segment is packed at
   its row offset of the panels (panels are laid out k-major, so a piece is a sub-block). */
static void higan__pack_a_k(float *dst, int64_t pstride, const higan__src *A, const higan__batch *bt,
                            int64_t kseg, int64_t i0, int64_t mc, int64_t k0, int64_t kc, int mr, float alpha) {
    int64_t k = k0;
    while (k < k0 + kc) {
        const int64_t b = k / kseg, kl = k % kseg, len = HIGAN__MIN(kseg - kl, k0 + kc - k);
        const higan__src As = higan__src_step(A, bt->a_step, b);
        higan__pack_a_block(dst + (k - k0) * mr, pstride, &As, i0, mc, kl, len, mr, alpha);
        k += len;
    }
}
static void higan__pack_b_k(float *dst, int64_t pstride, const higan__src *B, const higan__batch *bt,
                            int64_t kseg, int64_t k0, int64_t kc, int64_t j0, int64_t nc, int nr) {
    int64_t k = k0;
    while (k < k0 + kc) {
        const int64_t b = k / kseg, kl = k % kseg, len = HIGAN__MIN(kseg - kl, k0 + kc - k);
        const higan__src Bs = higan__src_step(B, bt->b_step, b);
        higan__pack_b_block(dst + (k - k0) * nr, pstride, &Bs, kl, len, j0, nc, nr);
        k += len;
    }
}

/* C[M,N] = alpha * op(A)[M,K] op(B)[K,N] + beta * C (bt: NULL, or a batch as above).
   Loops: ic over M blocks of mc; (groups of an N-batch); pc over K blocks of kc (sequential:
   every C element sums its K blocks in the same order whatever the thread count); pack the
   A block [mc x kc]; for each product of the group, jc over N blocks of nc: pack the B block
   [kc x nc], then the mr x nr tiles, parallel over tiles (each tile written by one thread).
   With M <= mc, every B is packed exactly once, and A once per group. */
static void higan__gemm_driver(const higan__gemm_kernel *kr, int64_t M, int64_t N, int64_t K,
                               float alpha, const higan__src *A, const higan__src *B, float beta,
                               float *C, int64_t ldc, const higan__batch *bt) {
    const int mr = kr->mr, nr = kr->nr;
    higan__batch one;
    int64_t nk, kcs, mcs, ncs, jc, pc, ic, nbn, kseg, b, g0, gsz;
    float *ap, *bp;
    if (!bt) { one.nb = 1; one.along_k = 0; one.a_step = one.b_step = one.c_step = 0; bt = &one; }
    if (M <= 0 || N <= 0 || bt->nb <= 0) return;
    nbn = bt->along_k ? 1 : bt->nb;              /* products along N */
    kseg = bt->along_k ? K / bt->nb : K;          /* K of one segment */
    HIGAN_ASSERT(!bt->along_k || kseg * bt->nb == K);
    if (K <= 0 || alpha == 0.0f) {
        for (b = 0; b < nbn; ++b) higan__scale_c(M, N, beta, C + b * bt->c_step, ldc);
        return;
    }
    nk = HIGAN__CEIL_DIV(K, kr->kc);
    kcs = HIGAN__CEIL_DIV(K, nk);                        /* balanced K blocks */
    mcs = HIGAN__MIN(HIGAN__CEIL_DIV(M, mr) * mr, kr->mc);
    ncs = HIGAN__MIN(HIGAN__CEIL_DIV(N, nr) * nr, kr->nc);
    ap = higan__gemm_buffer((size_t)(mcs * kcs + kcs * ncs));
    if (!ap) {
        for (b = 0; b < bt->nb; ++b) {
            const higan__src As = higan__src_step(A, bt->along_k ? bt->a_step : 0, b);
            const higan__src Bs = higan__src_step(B, bt->b_step, b);
            if (bt->along_k) higan__gemm_unpacked(M, N, kseg, alpha, &As, &Bs, b ? 1.0f : beta, C, ldc);
            else higan__gemm_unpacked(M, N, K, alpha, &As, &Bs, beta, C + b * bt->c_step, ldc);
        }
        return;
    }
    bp = ap + mcs * kcs;
    /* N-batches go in groups (higan__gemm_group); A is packed once per group and K block */
    gsz = higan__gemm_group(kr, nbn, M, N, K);
    for (ic = 0; ic < M; ic += mcs)
    for (g0 = 0; g0 < nbn; g0 += gsz) {
        const int64_t mc = HIGAN__MIN(mcs, M - ic), nir = HIGAN__CEIL_DIV(mc, mr);
        for (pc = 0; pc < K; pc += kcs) {
            const int64_t kc = HIGAN__MIN(kcs, K - pc);
            const float beta_k = pc == 0 ? beta : 1.0f;
            if (bt->along_k) higan__pack_a_k(ap, mr * kc, A, bt, kseg, ic, mc, pc, kc, mr, alpha);
            else higan__pack_a_block(ap, mr * kc, A, ic, mc, pc, kc, mr, alpha);
            for (b = g0; b < HIGAN__MIN(nbn, g0 + gsz); ++b) {
                const higan__src Bb = higan__src_step(B, bt->b_step, b);
                float *Cb = C + b * bt->c_step;
                for (jc = 0; jc < N; jc += ncs) {
                    const int64_t nc = HIGAN__MIN(ncs, N - jc), njr = HIGAN__CEIL_DIV(nc, nr);
                    const int64_t ntile = nir * njr;
                    int64_t t;
                    if (bt->along_k) higan__pack_b_k(bp, nr * kc, B, bt, kseg, pc, kc, jc, nc, nr);
                    else higan__pack_b_block(bp, nr * kc, &Bb, pc, kc, jc, nc, nr);
                    /* tiles row-panel major: an A panel stays in L1 while the B block streams
                       past it */
                    HIGAN__PARALLEL_FOR_IF(ntile > 1 && mc * nc * kc >= 131072)
                    for (t = 0; t < ntile; ++t) {
                        const int64_t tr = t / njr, tj = t % njr;
                        const int64_t m = HIGAN__MIN(mr, mc - tr * mr), n = HIGAN__MIN(nr, nc - tj * nr);
                        const float *a = ap + tr * mr * kc, *bb = bp + tj * nr * kc;
                        float *c = Cb + (ic + tr * mr) * ldc + jc + tj * nr;
                        if (m == mr && n == nr) {
                            kr->ukr(kc, a, bb, c, ldc, beta_k);
                        } else {
                            /* edge tile: full tile into tmp, then the same merge as the kernel's */
                            float tmp[HIGAN__MAX_MR * HIGAN__MAX_NR];
                            int64_t i, j;
                            kr->ukr(kc, a, bb, tmp, nr, 0.0f);
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
    higan__gemm_driver(&higan__ops()->gemm, M, N, K, alpha, &a, &b, beta, C, ldc, NULL);
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
/* The dx scratch holds dcol for a group of whole samples, [ns][KD, P], up to 4M floats (w^T
   is packed once per group: large groups matter when P is small);
   when one sample is larger, for a block of `chunk` output pixels of one sample. */
#define HIGAN__CONV_SCRATCH_FLOATS ((int64_t)1 << 22)
static void higan__conv_dx_blocks(const higan_conv2d_shape *s, int64_t *ns, int64_t *chunk) {
    const int64_t P = higan_conv2d_out_h(s) * higan_conv2d_out_w(s), KD = s->IC * s->KH * s->KW;
    if (KD * P <= HIGAN__CONV_SCRATCH_FLOATS) {
        *ns = HIGAN__MIN(s->N, HIGAN__CONV_SCRATCH_FLOATS / (KD * P));
        if (*ns < 1) *ns = 1;
        *chunk = P;
    } else {
        *ns = 1;
        *chunk = (HIGAN__CONV_SCRATCH_FLOATS / KD) & ~(int64_t)63;
        if (*chunk < 64) *chunk = 64;
    }
}
HIGAN_DEF size_t higan_conv2d_scratch_bytes(const higan_conv2d_shape *s) {
    int64_t ns, chunk;
    if (higan__conv_pointwise(s)) return 0;
    higan__conv_dx_blocks(s, &ns, &chunk);
    return (size_t)(ns * s->IC * s->KH * s->KW * chunk) * sizeof(float) + 64;
}

/* y [N, OC, P = OH*OW]: y_n[OC, P] = w[OC, KD] col(x_n)[KD, P] (+ b broadcast), all samples
   in one driver call so that w is packed once. */
HIGAN_DEF higan_status higan_conv2d_forward(float *y, const float *x, const float *w, const float *b,
                                            const higan_conv2d_shape *s, higan_arena *scratch) {
    const higan__level_ops *ops = higan__ops();
    int64_t P, KD, g, n0, oc, p;
    higan__src A, B;
    higan__batch bt;
    (void)scratch;
    higan__conv_check(s);
    P = higan_conv2d_out_h(s) * higan_conv2d_out_w(s);
    KD = s->IC * s->KH * s->KW;
    higan__src_mat(&A, w, KD, 0);
    bt.along_k = 0; bt.a_step = 0; bt.b_step = s->IC * s->H * s->W; bt.c_step = s->OC * P;
    /* groups of samples as the driver would make them, so the bias written into C is still
       in cache when the GEMM adds to it (beta = 1) */
    g = higan__gemm_group(&ops->gemm, s->N, s->OC, P, KD);
    for (n0 = 0; n0 < s->N; n0 += g) {
        float *yg = y + n0 * s->OC * P;
        const float *xg = x + n0 * s->IC * s->H * s->W;
        bt.nb = HIGAN__MIN(g, s->N - n0);
        if (b)
            for (oc = 0; oc < bt.nb * s->OC; ++oc)
                for (p = 0; p < P; ++p) yg[oc * P + p] = b[oc % s->OC];
        if (higan__conv_pointwise(s)) higan__src_mat(&B, xg, P, 0);
        else higan__src_im2col(&B, xg, s, 0);
        higan__gemm_driver(&ops->gemm, s->OC, P, KD, 1.0f, &A, &B, b ? 1.0f : 0.0f, yg, P, &bt);
    }
    return HIGAN_OK;
}

/* dx_n [IC, H, W] += col2im(dcol) for output pixels [p0, p0+pc); dcol [KD, pc].
   Parallel over input channels: each channel's rows of dcol only touch that channel. Each
   row (ic, kh, kw) is walked as runs of one output row (as in higan__im2col_row): the valid
   part of a run is one vector add for stride 1. */
static void higan__col2im_add(float *dxn, const float *dcol, const higan_conv2d_shape *s,
                              int64_t p0, int64_t pc) {
    const int64_t OW = higan_conv2d_out_w(s), H = s->H, W = s->W, KH = s->KH, KW = s->KW;
    const int64_t sw = s->stride_w;
    void (*add)(int64_t, float *, const float *) = higan__ops()->add;
    int64_t ic;
    HIGAN__PARALLEL_FOR_IF(s->IC > 1 && s->IC * KH * KW * pc >= 65536)
    for (ic = 0; ic < s->IC; ++ic) {
        float *xc = dxn + ic * H * W;
        int64_t kh, kw;
        for (kh = 0; kh < KH; ++kh)
            for (kw = 0; kw < KW; ++kw) {
                const float *row = dcol + ((ic * KH + kh) * KW + kw) * pc;
                int64_t oh = p0 / OW, ow = p0 % OW, q = 0, t;
                while (q < pc) {
                    const int64_t run = HIGAN__MIN(pc - q, OW - ow);
                    const int64_t ih = oh * s->stride_h - s->pad_top + kh;
                    const int64_t iw0 = ow * sw - s->pad_left + kw;
                    if ((uint64_t)ih < (uint64_t)H && iw0 < W) {
                        int64_t lo = iw0 < 0 ? (-iw0 + sw - 1) / sw : 0, hi = (W - iw0 + sw - 1) / sw;
                        if (hi > run) hi = run;
                        if (hi > lo) {
                            float *xr = xc + ih * W + iw0 + lo * sw;
                            const float *rq = row + q + lo;
                            if (sw == 1) add(hi - lo, xr, rq);
                            else for (t = 0; t < hi - lo; ++t) xr[t * sw] += rq[t];
                        }
                    }
                    q += run;
                    ow = 0;
                    ++oh;
                }
            }
    }
}

HIGAN_DEF higan_status higan_conv2d_backward(float *dx, float *dw, float *db, const float *dy,
                                             const float *x, const float *w,
                                             const higan_conv2d_shape *s, higan_arena *scratch) {
    const higan__level_ops *ops = higan__ops();
    int64_t P, KD;
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
        /* dw [OC, KD] += sum_n dy_n [OC, P] col(x_n)^T [P, KD]: one product, K = N*P (samples
           in order; C is read and written once per K block, not once per sample) */
        higan__batch bt;
        higan__src_mat(&A, dy, P, 0);
        if (higan__conv_pointwise(s)) higan__src_mat(&B, x, P, 1);
        else higan__src_im2col(&B, x, s, 1);
        bt.nb = s->N; bt.along_k = 1; bt.a_step = s->OC * P; bt.b_step = s->IC * s->H * s->W; bt.c_step = 0;
        higan__gemm_driver(&ops->gemm, s->OC, KD, s->N * P, 1.0f, &A, &B, 1.0f, dw, KD, &bt);
    }
    if (dx) {
        /* dcol_n [KD, P] = w^T [KD, OC] dy_n [OC, P]; dx_n += col2im(dcol_n). w^T is packed
           once per group of samples. */
        higan__batch bt;
        higan__src_mat(&A, w, KD, 1);
        bt.along_k = 0; bt.a_step = 0; bt.b_step = s->OC * P;
        if (higan__conv_pointwise(s)) {
            bt.nb = s->N; bt.c_step = s->IC * P;
            higan__src_mat(&B, dy, P, 0);
            higan__gemm_driver(&ops->gemm, s->IC, P, s->OC, 1.0f, &A, &B, 1.0f, dx, P, &bt);
        } else {
            int64_t ns, chunk, n0, p0, i;
            size_t mark;
            float *dcol;
            if (!scratch) return higan__error(HIGAN_ERR_ARG, "conv2d backward: dx needs a scratch arena");
            higan__conv_dx_blocks(s, &ns, &chunk);
            mark = higan_arena_mark(scratch);
            dcol = higan_arena_floats(scratch, ns * KD * chunk);
            if (!dcol) return higan_arena_status(scratch);
            if (chunk == P) {
                for (n0 = 0; n0 < s->N; n0 += ns) {
                    bt.nb = HIGAN__MIN(ns, s->N - n0); bt.c_step = KD * P;
                    higan__src_mat(&B, dy + n0 * s->OC * P, P, 0);
                    higan__gemm_driver(&ops->gemm, KD, P, s->OC, 1.0f, &A, &B, 0.0f, dcol, P, &bt);
                    for (i = 0; i < bt.nb; ++i)
                        higan__col2im_add(dx + (n0 + i) * s->IC * s->H * s->W, dcol + i * KD * P, s, 0, P);
                }
            } else {
                for (n0 = 0; n0 < s->N; ++n0)
                    for (p0 = 0; p0 < P; p0 += chunk) {
                        const int64_t pc = HIGAN__MIN(chunk, P - p0);
                        higan__src_mat(&B, dy + n0 * s->OC * P + p0, P, 0);
                        higan__gemm_driver(&ops->gemm, KD, pc, s->OC, 1.0f, &A, &B, 0.0f, dcol, pc, NULL);
                        higan__col2im_add(dx + n0 * s->IC * s->H * s->W, dcol, s, p0, pc);
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
