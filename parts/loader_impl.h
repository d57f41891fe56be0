#ifndef HIGAN_LOADER_IMPL_INCLUDED
#define HIGAN_LOADER_IMPL_INCLUDED
/* ---- training data: resampling kernels, batch loader, lexicon ------------------------------ */
#if !defined(HIGAN_NO_THREADS) && (defined(__unix__) || defined(__APPLE__))
#  include <pthread.h>
#  define HIGAN__LOADER_THREADS 1
#endif

/* ---- small helpers ------------------------------------------------------------------------- */
/* OpenCV's cvFloor/cvCeil (int results) and saturate_cast (round half to even, then clamp). */
static int higan__cv_floor(double x) { int i = (int)x; return i - (i > x); }
static int higan__cv_ceil(double x) { int i = (int)x; return i + (i < x); }
static int higan__cv_floorf(float x) { int i = (int)x; return i - ((float)i > x); }
static uint8_t higan__ld_sat_u8(float x) {
    float r = rintf(x);                       /* cvRound: nearest, ties to even */
    return (uint8_t)(r < 0.0f ? 0 : r > 255.0f ? 255 : (int)r);
}
static short higan__ld_sat_short(float x) {
    float r = rintf(x);
    return (short)(r < -32768.0f ? -32768 : r > 32767.0f ? 32767 : (int)r);
}
static int64_t higan__ld_ceil32(int64_t w) { return (w + 31) / 32 * 32; }

/* ================================================================================================
   cv2.resize (OpenCV 4.x imgproc/src/resize.cpp), single channel
   ================================================================================================ */
enum { HIGAN__CV_COPY, HIGAN__CV_AREA_FAST, HIGAN__CV_AREA, HIGAN__CV_GENERIC };
typedef struct {
    double scale_x, scale_y, inv_x, inv_y;   /* src/dst and dst/src */
    int iscale_x, iscale_y;
    int path, area_mode;                      /* area_mode: generic path with INTER_AREA weights */
} higan__cv_plan;

static void higan__cv_plan_make(higan__cv_plan *p, int64_t dw, int64_t dh, int64_t sw, int64_t sh, int area) {
    int fast;
    p->inv_x = (double)dw / (double)sw;
    p->inv_y = (double)dh / (double)sh;
    p->scale_x = 1.0 / p->inv_x;
    p->scale_y = 1.0 / p->inv_y;
    p->iscale_x = (int)rint(p->scale_x);
    p->iscale_y = (int)rint(p->scale_y);
    fast = fabs(p->scale_x - p->iscale_x) < 2.220446049250313e-16 &&
           fabs(p->scale_y - p->iscale_y) < 2.220446049250313e-16;
    p->area_mode = 0;
    if (dw == sw && dh == sh) { p->path = HIGAN__CV_COPY; return; }
    /* exactly 2x2 shrinking: INTER_LINEAR equals INTER_AREA and cv2 runs the area code */
    if (!area && fast && p->iscale_x == 2 && p->iscale_y == 2) area = 1;
    if (area && p->scale_x >= 1 && p->scale_y >= 1) {
        p->path = fast ? HIGAN__CV_AREA_FAST : HIGAN__CV_AREA;
        return;
    }
    p->path = HIGAN__CV_GENERIC;
    p->area_mode = area;
}

/* Source index and fractional weight of output d along one axis (generic path). */
static void higan__cv_axis(const higan__cv_plan *p, int64_t d, int xaxis, int *s, float *f) {
    double scale = xaxis ? p->scale_x : p->scale_y, inv = xaxis ? p->inv_x : p->inv_y;
    float fx;
    int sx;
    if (!p->area_mode) {
        fx = (float)((d + 0.5) * scale - 0.5);
        sx = higan__cv_floorf(fx);
        fx -= (float)sx;
    } else {
        sx = higan__cv_floor((double)d * scale);
        fx = (float)((double)(d + 1) - (sx + 1) * inv);
        fx = fx <= 0 ? 0.f : fx - (float)higan__cv_floorf(fx);
    }
    *s = sx;
    *f = fx;
}

/* One output column of the horizontal pass: clamped source column and weights.
   edge = 1 beyond the last full pair (cv2's xmax): the value is S[sx] * ONE. */
static void higan__cv_xcoef(const higan__cv_plan *p, int64_t dx, int64_t sw, int *sx, float *fx, int *edge) {
    higan__cv_axis(p, dx, 1, sx, fx);
    *edge = 0;
    if (*sx < 0) { *fx = 0; *sx = 0; }
    if (*sx + 1 >= sw) { *edge = 1; if (*sx >= sw - 1) { *fx = 0; *sx = (int)sw - 1; } }
}

/* Generic bilinear, uint8 in OpenCV's fixed point: 11-bit weights, HResizeLinear ints,
   VResizeLinear<uchar> ((b0*(S0>>4))>>16) + ((b1*(S1>>4))>>16) + 2) >> 2. dst [dh, dw]. */
/* Rows of the vertical pass: clamped rows r0, r1 (cv2 clamps rows, not weights) and fy. */
typedef struct { int r0, r1, b0, b1; float fy; } higan__cv_row;   /* b0, b1: 11-bit weights */
static void higan__cv_ycoef(const higan__cv_plan *p, int64_t dy, int64_t sh, higan__cv_row *c) {
    int sy;
    higan__cv_axis(p, dy, 0, &sy, &c->fy);
    c->r0 = sy < 0 ? 0 : sy >= sh ? (int)sh - 1 : sy;
    c->r1 = sy + 1 < 0 ? 0 : sy + 1 >= sh ? (int)sh - 1 : sy + 1;
    c->b0 = higan__ld_sat_short((1.f - c->fy) * 2048);
    c->b1 = higan__ld_sat_short(c->fy * 2048);
}
/* The loops run column-outer so each column's weights are computed once; the rows' weights
   are cached for up to this many output rows (the 64-px word images), else recomputed. */
#define HIGAN__CV_YCACHE 128

/* Generic bilinear, uint8 in OpenCV's fixed point: 11-bit weights, HResizeLinear ints,
   VResizeLinear<uchar> ((b0*(S0>>4))>>16) + ((b1*(S1>>4))>>16) + 2) >> 2. dst [dh, dw]. */
static void higan__cv_generic_u8(uint8_t *dst, int64_t dw, int64_t dh, const uint8_t *src, int64_t sw,
                                 int64_t sh, int64_t ss, const higan__cv_plan *p) {
    higan__cv_row cache[HIGAN__CV_YCACHE];
    int64_t dy, dx;
    for (dy = 0; dy < dh && dy < HIGAN__CV_YCACHE; ++dy) higan__cv_ycoef(p, dy, sh, &cache[dy]);
    for (dx = 0; dx < dw; ++dx) {
        int sx, edge, a0 = 2048, a1 = 0;
        float fx;
        higan__cv_xcoef(p, dx, sw, &sx, &fx, &edge);
        if (!edge) { a0 = higan__ld_sat_short((1.f - fx) * 2048); a1 = higan__ld_sat_short(fx * 2048); }
        for (dy = 0; dy < dh; ++dy) {
            higan__cv_row c;
            int b0, b1, h0, h1;
            const uint8_t *S0, *S1;
            if (dy < HIGAN__CV_YCACHE) c = cache[dy]; else higan__cv_ycoef(p, dy, sh, &c);
            b0 = c.b0; b1 = c.b1;
            S0 = src + (int64_t)c.r0 * ss;
            S1 = src + (int64_t)c.r1 * ss;
            if (edge) { h0 = S0[sx] * 2048; h1 = S1[sx] * 2048; }
            else { h0 = S0[sx] * a0 + S0[sx + 1] * a1; h1 = S1[sx] * a0 + S1[sx + 1] * a1; }
            dst[dy * dw + dx] = (uint8_t)((((b0 * (h0 >> 4)) >> 16) + ((b1 * (h1 >> 4)) >> 16) + 2) >> 2);
        }
    }
}
static void higan__cv_generic_f32(float *dst, int64_t dw, int64_t dh, const float *src, int64_t sw,
                                  int64_t sh, int64_t ss, const higan__cv_plan *p) {
    higan__cv_row cache[HIGAN__CV_YCACHE];
    int64_t dy, dx;
    for (dy = 0; dy < dh && dy < HIGAN__CV_YCACHE; ++dy) higan__cv_ycoef(p, dy, sh, &cache[dy]);
    for (dx = 0; dx < dw; ++dx) {
        int sx, edge;
        float fx, a0 = 1.f, a1 = 0.f;
        higan__cv_xcoef(p, dx, sw, &sx, &fx, &edge);
        if (!edge) { a0 = 1.f - fx; a1 = fx; }
        for (dy = 0; dy < dh; ++dy) {
            higan__cv_row c;
            float h0, h1;
            const float *S0, *S1;
            if (dy < HIGAN__CV_YCACHE) c = cache[dy]; else higan__cv_ycoef(p, dy, sh, &c);
            S0 = src + (int64_t)c.r0 * ss;
            S1 = src + (int64_t)c.r1 * ss;
            if (edge) { h0 = S0[sx]; h1 = S1[sx]; }
            else { h0 = S0[sx] * a0 + S0[sx + 1] * a1; h1 = S1[sx] * a0 + S1[sx + 1] * a1; }
            dst[dy * dw + dx] = h0 * (1.f - c.fy) + h1 * c.fy;
        }
    }
}

/* Integer-factor shrinking (resizeAreaFast_): box sums; uint8 2x2 rounds (sum + 2) >> 2, other
   factors sum * (1.f / area) rounded half to even; boxes cut by the border average what is in. */
static void higan__cv_area_fast_u8(uint8_t *dst, int64_t dw, int64_t dh, const uint8_t *src, int64_t sw,
                                   int64_t sh, int64_t ss, const higan__cv_plan *p) {
    int kx = p->iscale_x, ky = p->iscale_y, area = kx * ky, i, j;
    float scale = 1.f / (float)area;
    int64_t dwidth1 = sw / kx, dy, dx;
    for (dy = 0; dy < dh; ++dy) {
        int64_t sy0 = dy * ky, full = sy0 + ky <= sh ? dwidth1 : 0;
        uint8_t *D = dst + dy * dw;
        if (sy0 >= sh) { for (dx = 0; dx < dw; ++dx) D[dx] = 0; continue; }
        for (dx = 0; dx < dw; ++dx) {
            int64_t sx0 = dx * kx;
            if (dx < full) {
                const uint8_t *S = src + sy0 * ss + sx0;
                int sum = 0;
                if (kx == 2 && ky == 2) { D[dx] = (uint8_t)((S[0] + S[1] + S[ss] + S[ss + 1] + 2) >> 2); continue; }
                for (j = 0; j < ky; ++j) for (i = 0; i < kx; ++i) sum += S[j * ss + i];
                D[dx] = higan__ld_sat_u8((float)sum * scale);
            } else {
                int sum = 0, count = 0;
                for (j = 0; j < ky && sy0 + j < sh; ++j)
                    for (i = 0; i < kx && sx0 + i < sw; ++i) { sum += src[(sy0 + j) * ss + sx0 + i]; ++count; }
                D[dx] = count ? higan__ld_sat_u8((float)sum / (float)count) : 0;
            }
        }
    }
}
static void higan__cv_area_fast_f32(float *dst, int64_t dw, int64_t dh, const float *src, int64_t sw,
                                    int64_t sh, int64_t ss, const higan__cv_plan *p) {
    int kx = p->iscale_x, ky = p->iscale_y, area = kx * ky, i, j;
    float scale = 1.f / (float)area;
    int64_t dwidth1 = sw / kx, dy, dx;
    for (dy = 0; dy < dh; ++dy) {
        int64_t sy0 = dy * ky, full = sy0 + ky <= sh ? dwidth1 : 0;
        float *D = dst + dy * dw;
        if (sy0 >= sh) { for (dx = 0; dx < dw; ++dx) D[dx] = 0; continue; }
        for (dx = 0; dx < dw; ++dx) {
            int64_t sx0 = dx * kx;
            float sum = 0;
            int count = 0;
            if (dx < full) {
                for (j = 0; j < ky; ++j) for (i = 0; i < kx; ++i) sum += src[(sy0 + j) * ss + sx0 + i];
                D[dx] = sum * scale;
            } else {
                for (j = 0; j < ky && sy0 + j < sh; ++j)
                    for (i = 0; i < kx && sx0 + i < sw; ++i) { sum += src[(sy0 + j) * ss + sx0 + i]; ++count; }
                D[dx] = count ? sum / (float)count : 0;
            }
        }
    }
}

/* computeResizeAreaTab for one output index: the source cells it covers with float weights, in
   OpenCV's order (leading partial cell, whole cells, trailing partial cell). */
typedef struct { int64_t s1, s2; int lead, tail; float a_lead, a_mid, a_tail; } higan__cv_cell;
static void higan__cv_area_cell(higan__cv_cell *c, int64_t d, int64_t ssize, double scale) {
    double fs1 = (double)d * scale, fs2 = fs1 + scale;
    double cell = scale < (double)ssize - fs1 ? scale : (double)ssize - fs1;
    int64_t s1 = higan__cv_ceil(fs1), s2 = higan__cv_floor(fs2);
    double t;
    if (s2 > ssize - 1) s2 = ssize - 1;
    if (s1 > s2) s1 = s2;
    c->s1 = s1; c->s2 = s2;
    c->lead = (double)s1 - fs1 > 1e-3;
    c->a_lead = (float)(((double)s1 - fs1) / cell);
    c->a_mid = (float)(1.0 / cell);
    t = fs2 - (double)s2;
    c->tail = t > 1e-3;
    t = t < 1.0 ? t : 1.0;
    c->a_tail = (float)((t < cell ? t : cell) / cell);
}
/* Weighted sum of one source row over one output cell (buf[dx] += S[si] * alpha, from 0). */
static float higan__cv_area_row_u8(const uint8_t *S, const higan__cv_cell *c) {
    float buf = 0;
    int64_t s;
    if (c->lead) buf += S[c->s1 - 1] * c->a_lead;
    for (s = c->s1; s < c->s2; ++s) buf += S[s] * c->a_mid;
    if (c->tail) buf += S[c->s2] * c->a_tail;
    return buf;
}
static float higan__cv_area_row_f32(const float *S, const higan__cv_cell *c) {
    float buf = 0;
    int64_t s;
    if (c->lead) buf += S[c->s1 - 1] * c->a_lead;
    for (s = c->s1; s < c->s2; ++s) buf += S[s] * c->a_mid;
    if (c->tail) buf += S[c->s2] * c->a_tail;
    return buf;
}
/* resizeArea_: sum over the output row's source rows of beta * (row sum), in float. */
#define HIGAN__CV_AREA_BODY(ROWFN, STORE)                                                            \
    higan__cv_cell cache[HIGAN__CV_YCACHE];                                                        \
    int64_t dy, dx, s;                                                                             \
    for (dy = 0; dy < dh && dy < HIGAN__CV_YCACHE; ++dy) higan__cv_area_cell(&cache[dy], dy, sh, p->scale_y); \
    for (dx = 0; dx < dw; ++dx) {                                                                  \
        higan__cv_cell cx;                                                                         \
        higan__cv_area_cell(&cx, dx, sw, p->scale_x);                                              \
        for (dy = 0; dy < dh; ++dy) {                                                              \
            higan__cv_cell cy;                                                                     \
            float sum = 0;                                                                         \
            if (dy < HIGAN__CV_YCACHE) cy = cache[dy]; else higan__cv_area_cell(&cy, dy, sh, p->scale_y); \
            if (cy.lead) sum += cy.a_lead * ROWFN(src + (cy.s1 - 1) * ss, &cx);                    \
            for (s = cy.s1; s < cy.s2; ++s) sum += cy.a_mid * ROWFN(src + s * ss, &cx);            \
            if (cy.tail) sum += cy.a_tail * ROWFN(src + cy.s2 * ss, &cx);                          \
            STORE;                                                                                 \
        }                                                                                          \
    }
static void higan__cv_area_u8(uint8_t *dst, int64_t dw, int64_t dh, const uint8_t *src, int64_t sw,
                              int64_t sh, int64_t ss, const higan__cv_plan *p) {
    HIGAN__CV_AREA_BODY(higan__cv_area_row_u8, dst[dy * dw + dx] = higan__ld_sat_u8(sum))
}
static void higan__cv_area_f32(float *dst, int64_t dw, int64_t dh, const float *src, int64_t sw,
                               int64_t sh, int64_t ss, const higan__cv_plan *p) {
    HIGAN__CV_AREA_BODY(higan__cv_area_row_f32, dst[dy * dw + dx] = sum)
}
#undef HIGAN__CV_AREA_BODY

static void higan__cv_resize_u8(uint8_t *dst, int64_t dw, int64_t dh, const uint8_t *src, int64_t sw,
                                int64_t sh, int64_t ss, int area) {
    higan__cv_plan p;
    int64_t y;
    HIGAN_ASSERT(dst && src && dw > 0 && dh > 0 && sw > 0 && sh > 0 && ss >= sw);
    higan__cv_plan_make(&p, dw, dh, sw, sh, area);
    switch (p.path) {
    case HIGAN__CV_COPY: for (y = 0; y < sh; ++y) memcpy(dst + y * dw, src + y * ss, (size_t)sw); break;
    case HIGAN__CV_AREA_FAST: higan__cv_area_fast_u8(dst, dw, dh, src, sw, sh, ss, &p); break;
    case HIGAN__CV_AREA: higan__cv_area_u8(dst, dw, dh, src, sw, sh, ss, &p); break;
    default: higan__cv_generic_u8(dst, dw, dh, src, sw, sh, ss, &p); break;
    }
}
static void higan__cv_resize_f32(float *dst, int64_t dw, int64_t dh, const float *src, int64_t sw,
                                 int64_t sh, int64_t ss, int area) {
    higan__cv_plan p;
    int64_t y;
    HIGAN_ASSERT(dst && src && dw > 0 && dh > 0 && sw > 0 && sh > 0 && ss >= sw);
    higan__cv_plan_make(&p, dw, dh, sw, sh, area);
    switch (p.path) {
    case HIGAN__CV_COPY: for (y = 0; y < sh; ++y) memcpy(dst + y * dw, src + y * ss, sizeof(float) * (size_t)sw); break;
    case HIGAN__CV_AREA_FAST: higan__cv_area_fast_f32(dst, dw, dh, src, sw, sh, ss, &p); break;
    case HIGAN__CV_AREA: higan__cv_area_f32(dst, dw, dh, src, sw, sh, ss, &p); break;
    default: higan__cv_generic_f32(dst, dw, dh, src, sw, sh, ss, &p); break;
    }
}
HIGAN_DEF void higan_resize_area(uint8_t *dst, int64_t dw, int64_t dh,
                                 const uint8_t *src, int64_t sw, int64_t sh, int64_t src_stride) {
    higan__cv_resize_u8(dst, dw, dh, src, sw, sh, src_stride, 1);
}
HIGAN_DEF void higan_resize_area_f32(float *dst, int64_t dw, int64_t dh,
                                     const float *src, int64_t sw, int64_t sh, int64_t src_stride) {
    higan__cv_resize_f32(dst, dw, dh, src, sw, sh, src_stride, 1);
}
HIGAN_DEF void higan_resize_linear(uint8_t *dst, int64_t dw, int64_t dh,
                                   const uint8_t *src, int64_t sw, int64_t sh, int64_t src_stride) {
    higan__cv_resize_u8(dst, dw, dh, src, sw, sh, src_stride, 0);
}
HIGAN_DEF void higan_resize_linear_f32(float *dst, int64_t dw, int64_t dh,
                                       const float *src, int64_t sw, int64_t sh, int64_t src_stride) {
    higan__cv_resize_f32(dst, dw, dh, src, sw, sh, src_stride, 0);
}

/* ================================================================================================
   PIL Image.resize (Pillow libImaging/Resample.c, ImagingResample with box (0, 0, w, h))
   ================================================================================================ */
#define HIGAN__PIL_PRECISION 22    /* PRECISION_BITS = 32 - 8 - 2 */
static double higan__pil_filter(double x, higan_pil_filter f) {
    if (f == HIGAN_PIL_BILINEAR) {
        if (x < 0.0) x = -x;
        return x < 1.0 ? 1.0 - x : 0.0;
    }
    if (-3.0 <= x && x < 3.0) {               /* lanczos: sinc(x) * sinc(x / 3) */
        double a = x, b = x / 3, sa, sb;
        if (a == 0.0) sa = 1.0; else { a *= 3.14159265358979323846; sa = sin(a) / a; }
        if (b == 0.0) sb = 1.0; else { b *= 3.14159265358979323846; sb = sin(b) / b; }
        return sa * sb;
    }
    return 0.0;
}
static int64_t higan__pil_ksize(int64_t in, int64_t out, higan_pil_filter f) {
    double filterscale = (double)(float)in / (double)out;
    if (filterscale < 1.0) filterscale = 1.0;
    return (int64_t)ceil((f == HIGAN_PIL_BILINEAR ? 1.0 : 3.0) * filterscale) * 2 + 1;
}
static size_t higan__ld_align64(size_t n) { return (n + 63) & ~(size_t)63; }
/* Bytes of one axis' tables: bounds (2 ints per output), double weights, int weights. */
static size_t higan__pil_axis_bytes(int64_t in, int64_t out, higan_pil_filter f) {
    int64_t k = higan__pil_ksize(in, out, f);
    return higan__ld_align64(sizeof(int) * 2 * (size_t)out) + higan__ld_align64(sizeof(double) * (size_t)(out * k)) +
           higan__ld_align64(sizeof(int32_t) * (size_t)(out * k));
}
HIGAN_DEF size_t higan_resize_pil_scratch_bytes(int64_t dw, int64_t dh, int64_t sw, int64_t sh,
                                                higan_pil_filter filter) {
    size_t n = 0;
    int horiz = dw != sw, vert = dh != sh;
    if (horiz) n += higan__pil_axis_bytes(sw, dw, filter);
    if (vert) n += higan__pil_axis_bytes(sh, dh, filter);
    if (horiz && vert) n += higan__ld_align64(sizeof(float) * (size_t)(sh * dw));   /* intermediate */
    return n;
}
/* precompute_coeffs + normalize_coeffs_8bpc: per output, first input (bounds[2o]), count
   (bounds[2o+1]) and ksize weights (double kk, fixed-point ik). */
typedef struct { int *bounds; double *kk; int32_t *ik; int64_t ksize; } higan__pil_axis;
static int higan__pil_coeffs(higan__pil_axis *a, int64_t in, int64_t out, higan_pil_filter f, higan_arena *ar) {
    double support, scale, filterscale, center, ww, ss;
    int64_t xx, x, xmin, xmax;
    a->ksize = higan__pil_ksize(in, out, f);
    a->bounds = (int *)higan_arena_alloc(ar, sizeof(int) * 2 * (size_t)out);
    a->kk = (double *)higan_arena_alloc(ar, sizeof(double) * (size_t)(out * a->ksize));
    a->ik = (int32_t *)higan_arena_alloc(ar, sizeof(int32_t) * (size_t)(out * a->ksize));
    if (!a->bounds || !a->kk || !a->ik) return 0;
    filterscale = scale = (double)(float)in / (double)out;    /* (in1 - in0) is a float in PIL */
    if (filterscale < 1.0) filterscale = 1.0;
    support = (f == HIGAN_PIL_BILINEAR ? 1.0 : 3.0) * filterscale;
    for (xx = 0; xx < out; ++xx) {
        double *k = a->kk + xx * a->ksize;
        center = (xx + 0.5) * scale;
        ww = 0.0;
        ss = 1.0 / filterscale;
        xmin = (int64_t)(center - support + 0.5);              /* C truncation, as PIL */
        if (xmin < 0) xmin = 0;
        xmax = (int64_t)(center + support + 0.5);
        if (xmax > in) xmax = in;
        xmax -= xmin;
        for (x = 0; x < xmax; ++x) {
            double w = higan__pil_filter((x + xmin - center + 0.5) * ss, f);
            k[x] = w;
            ww += w;
        }
        for (x = 0; x < xmax; ++x) if (ww != 0.0) k[x] /= ww;
        for (; x < a->ksize; ++x) k[x] = 0;
        a->bounds[xx * 2] = (int)xmin;
        a->bounds[xx * 2 + 1] = (int)xmax;
        for (x = 0; x < a->ksize; ++x)
            a->ik[xx * a->ksize + x] = k[x] < 0 ? (int32_t)(-0.5 + k[x] * (1 << HIGAN__PIL_PRECISION))
                                                : (int32_t)(0.5 + k[x] * (1 << HIGAN__PIL_PRECISION));
    }
    return 1;
}
static uint8_t higan__pil_clip8(int64_t ss) {
    /* clip8: ss >> PRECISION_BITS (arithmetic), clamped to 0..255 */
    int64_t v = ss >= 0 ? ss >> HIGAN__PIL_PRECISION : -((-ss + (1 << HIGAN__PIL_PRECISION) - 1) >> HIGAN__PIL_PRECISION);
    return (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : v);
}
/* Horizontal pass, rows [0, h): out [h, ow] <- in (stride is). */
static void higan__pil_h_u8(uint8_t *out, int64_t ow, int64_t h, const uint8_t *in, int64_t is, const higan__pil_axis *a) {
    int64_t yy, xx, x;
    for (yy = 0; yy < h; ++yy)
        for (xx = 0; xx < ow; ++xx) {
            int xmin = a->bounds[xx * 2], xmax = a->bounds[xx * 2 + 1];
            const int32_t *k = a->ik + xx * a->ksize;
            const uint8_t *S = in + yy * is + xmin;
            int64_t ss0 = 1 << (HIGAN__PIL_PRECISION - 1);
            for (x = 0; x < xmax; ++x) ss0 += (int64_t)S[x] * k[x];
            out[yy * ow + xx] = higan__pil_clip8(ss0);
        }
}
/* Vertical pass: out [oh, w] <- in [.., w] (stride is). */
static void higan__pil_v_u8(uint8_t *out, int64_t oh, int64_t w, const uint8_t *in, int64_t is, const higan__pil_axis *a) {
    int64_t yy, xx, y;
    for (yy = 0; yy < oh; ++yy) {
        int ymin = a->bounds[yy * 2], ymax = a->bounds[yy * 2 + 1];
        const int32_t *k = a->ik + yy * a->ksize;
        for (xx = 0; xx < w; ++xx) {
            int64_t ss0 = 1 << (HIGAN__PIL_PRECISION - 1);
            for (y = 0; y < ymax; ++y) ss0 += (int64_t)in[(y + ymin) * is + xx] * k[y];
            out[yy * w + xx] = higan__pil_clip8(ss0);
        }
    }
}
static void higan__pil_h_f32(float *out, int64_t ow, int64_t h, const float *in, int64_t is, const higan__pil_axis *a) {
    int64_t yy, xx, x;
    for (yy = 0; yy < h; ++yy)
        for (xx = 0; xx < ow; ++xx) {
            int xmin = a->bounds[xx * 2], xmax = a->bounds[xx * 2 + 1];
            const double *k = a->kk + xx * a->ksize;
            const float *S = in + yy * is + xmin;
            double ss = 0.0;
            for (x = 0; x < xmax; ++x) ss += S[x] * k[x];
            out[yy * ow + xx] = (float)ss;
        }
}
static void higan__pil_v_f32(float *out, int64_t oh, int64_t w, const float *in, int64_t is, const higan__pil_axis *a) {
    int64_t yy, xx, y;
    for (yy = 0; yy < oh; ++yy) {
        int ymin = a->bounds[yy * 2], ymax = a->bounds[yy * 2 + 1];
        const double *k = a->kk + yy * a->ksize;
        for (xx = 0; xx < w; ++xx) {
            double ss = 0.0;
            for (y = 0; y < ymax; ++y) ss += in[(y + ymin) * is + xx] * k[y];
            out[yy * w + xx] = (float)ss;
        }
    }
}
HIGAN_DEF higan_status higan_resize_pil(uint8_t *dst, int64_t dw, int64_t dh,
                                        const uint8_t *src, int64_t sw, int64_t sh, int64_t src_stride,
                                        higan_pil_filter filter, higan_arena *scratch) {
    higan__pil_axis ax, ay;
    int horiz = dw != sw, vert = dh != sh;
    size_t mark;
    int64_t y;
    HIGAN_ASSERT(dst && src && dw > 0 && dh > 0 && sw > 0 && sh > 0 && src_stride >= sw);
    HIGAN_ASSERT(filter == HIGAN_PIL_BILINEAR || filter == HIGAN_PIL_LANCZOS);
    if (!horiz && !vert) {                                   /* PIL copies */
        for (y = 0; y < sh; ++y) memcpy(dst + y * dw, src + y * src_stride, (size_t)sw);
        return HIGAN_OK;
    }
    HIGAN_ASSERT(scratch);
    mark = higan_arena_mark(scratch);
    if ((horiz && !higan__pil_coeffs(&ax, sw, dw, filter, scratch)) ||
        (vert && !higan__pil_coeffs(&ay, sh, dh, filter, scratch))) {
        higan_arena_release(scratch, mark);
        return higan__error(HIGAN_ERR_NOMEM, "resize_pil: scratch arena too small (needs %zu bytes)",
                            higan_resize_pil_scratch_bytes(dw, dh, sw, sh, filter));
    }
    if (horiz && vert) {
        uint8_t *tmp = (uint8_t *)higan_arena_alloc(scratch, sizeof(float) * (size_t)(sh * dw));
        if (!tmp) {
            higan_arena_release(scratch, mark);
            return higan__error(HIGAN_ERR_NOMEM, "resize_pil: scratch arena too small (needs %zu bytes)",
                                higan_resize_pil_scratch_bytes(dw, dh, sw, sh, filter));
        }
        higan__pil_h_u8(tmp, dw, sh, src, src_stride, &ax);
        higan__pil_v_u8(dst, dh, dw, tmp, dw, &ay);
    } else if (horiz) higan__pil_h_u8(dst, dw, sh, src, src_stride, &ax);
    else higan__pil_v_u8(dst, dh, dw, src, src_stride, &ay);
    higan_arena_release(scratch, mark);
    return HIGAN_OK;
}
HIGAN_DEF higan_status higan_resize_pil_f32(float *dst, int64_t dw, int64_t dh,
                                            const float *src, int64_t sw, int64_t sh, int64_t src_stride,
                                            higan_pil_filter filter, higan_arena *scratch) {
    higan__pil_axis ax, ay;
    int horiz = dw != sw, vert = dh != sh;
    size_t mark;
    int64_t y;
    HIGAN_ASSERT(dst && src && dw > 0 && dh > 0 && sw > 0 && sh > 0 && src_stride >= sw);
    HIGAN_ASSERT(filter == HIGAN_PIL_BILINEAR || filter == HIGAN_PIL_LANCZOS);
    if (!horiz && !vert) {
        for (y = 0; y < sh; ++y) memcpy(dst + y * dw, src + y * src_stride, sizeof(float) * (size_t)sw);
        return HIGAN_OK;
    }
    HIGAN_ASSERT(scratch);
    mark = higan_arena_mark(scratch);
    if ((horiz && !higan__pil_coeffs(&ax, sw, dw, filter, scratch)) ||
        (vert && !higan__pil_coeffs(&ay, sh, dh, filter, scratch))) {
        higan_arena_release(scratch, mark);
        return higan__error(HIGAN_ERR_NOMEM, "resize_pil: scratch arena too small (needs %zu bytes)",
                            higan_resize_pil_scratch_bytes(dw, dh, sw, sh, filter));
    }
    if (horiz && vert) {
        float *tmp = (float *)higan_arena_alloc(scratch, sizeof(float) * (size_t)(sh * dw));
        if (!tmp) {
            higan_arena_release(scratch, mark);
            return higan__error(HIGAN_ERR_NOMEM, "resize_pil: scratch arena too small (needs %zu bytes)",
                                higan_resize_pil_scratch_bytes(dw, dh, sw, sh, filter));
        }
        higan__pil_h_f32(tmp, dw, sh, src, src_stride, &ax);
        higan__pil_v_f32(dst, dh, dw, tmp, dw, &ay);
    } else if (horiz) higan__pil_h_f32(dst, dw, sh, src, src_stride, &ax);
    else higan__pil_v_f32(dst, dh, dw, src, src_stride, &ay);
    higan_arena_release(scratch, mark);
    return HIGAN_OK;
}

HIGAN_DEF float higan_pixel_to_float(uint8_t v) {
    /* ToTensor: float(v) / 255; Normalize: (x - 0.5) / 0.5, each step rounded to float */
    float x = (float)v / 255.0f;
    x = x - 0.5f;
    return x / 0.5f;
}

/* ---- random integers ------------------------------------------------------------------------ */
/* Uniform in [0, n), n >= 1, by rejection (unbiased). */
static uint64_t higan__ld_rng_below(higan_rng *r, uint64_t n) {
    uint64_t threshold = (0 - n) % n, x;
    do x = higan_rng_u64(r); while (x < threshold);
    return x % n;
}
/* Uniform double in [0, 1) with 53 bits (as numpy's random()). */
static double higan__ld_rng_double(higan_rng *r) {
    return (double)(higan_rng_u64(r) >> 11) * (1.0 / 9007199254740992.0);
}

/* ================================================================================================
   Batch loader
   ================================================================================================ */
typedef struct higan__loader_slot {
    higan_batch b;
    higan_status status;        /* HIGAN_OK, HIGAN_LOADER_EPOCH_END or < 0 */
    char msg[512];
    int ready;
    float *imgs, *aug;
    int *ints;                  /* img_lens, label_lens, wids, aug_lens [B each], labels [B, label_cap] */
    int64_t *records;
} higan__loader_slot;

typedef struct higan__loader_priv {
    higan_loader info;          /* copy of the public struct: the caller may move its own */
    higan__loader_slot slot[2];
    float lut[256];
    /* producer state: touched only by the producer (the thread when there is one) */
    higan_rng rng;
    int64_t *included;          /* [n_records] record ids in dataset order */
    int64_t *order;             /* [n_records] this epoch's order */
    int64_t epoch, pos, batch_index;
    int epoch_started;
    uint8_t *codes;             /* [total_chars] alphabet index of every label character */
    uint8_t *style_u8;          /* [64, width_cap] one style image */
    uint8_t *aug_u8;            /* [B][64, aug_width_cap] the batch's aug images */
    int *tmp;                   /* [3 B] widths, sort order, rank */
    higan_arena scratch;        /* PIL coefficient tables */
    int produce_next, consume_next, held;
#ifdef HIGAN__LOADER_THREADS
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int running, stop;
#endif
} higan__loader_priv;

HIGAN_DEF higan_loader_options higan_loader_default_options(void) {
    higan_loader_options o;
    memset(&o, 0, sizeof o);
    o.batch_size = 8;
    o.shuffle = 1;
    o.drop_last = 1;
    o.seed = 123456;
    o.process_style = 1;
    o.augment = 1;
    o.max_width = 0;
    o.threaded = 1;
    o.n_writers = 0;
    return o;
}
HIGAN_DEF int64_t higan_loader_style_width(const higan_dataset *ds, int64_t i, int process_style) {
    HIGAN_ASSERT(ds && i >= 0 && i < ds->count);
    return process_style ? 32 * (int64_t)ds->lb_lens[i] : (int64_t)ds->img_lens[i];
}
/* Largest aug width for a style width w: RandomClip keeps <= w, RandomScale's ratio < 0.4
   gives int(w' * (1 + ratio)) <= floor(1.4 w'), rounded up to 32 (at least 32). */
static int64_t higan__ld_aug_width_bound(int64_t w) {
    int64_t b = higan__ld_ceil32(w * 14 / 10 + 1);
    return b < 32 ? 32 : b;
}
static int64_t higan__ld_img_stride(const higan_dataset *ds) {
    return ds->capacity_cols > ds->total_width ? ds->capacity_cols : ds->total_width;
}

/* RandomClip(min_clip_width = 128) then RandomScale(var = 0.4) on one style image [64, ws]
   (packed): out [64, *nw] packed. draws (may be NULL) gets clip width, clip offset, ratio. */
static higan_status higan__ld_augment(uint8_t *out, int64_t *nw_out, double *draws, const uint8_t *style, int64_t ws,
                                   higan_rng *rng, higan_arena *scratch) {
    int64_t cw = ws, off = 0, nw;
    double ratio;
    if (ws > 128) {                   /* np.random.randint(128, w), then randint(0, w - width) */
        cw = 128 + (int64_t)higan__ld_rng_below(rng, (uint64_t)(ws - 128));
        off = (int64_t)higan__ld_rng_below(rng, (uint64_t)(ws - cw));
    }
    ratio = (higan__ld_rng_double(rng) - 0.5) * 2 * 0.4;
    nw = higan__ld_ceil32((int64_t)((double)cw * (1 + ratio)));   /* int() truncates, then up to 32 */
    if (nw < 32) nw = 32;             /* the official would fail on width 0 (only for w' = 1) */
    if (draws) { draws[0] = (double)cw; draws[1] = (double)off; draws[2] = ratio; }
    *nw_out = nw;
    return higan_resize_pil(out, nw, HIGAN_DATASET_HEIGHT, style + off, cw, HIGAN_DATASET_HEIGHT, ws,
                            ratio > 0 ? HIGAN_PIL_BILINEAR : HIGAN_PIL_LANCZOS, scratch);
}

/* Builds one item into slot s: a batch or the epoch-end marker. Sequential RNG use. */
static void higan__loader_produce(higan__loader_priv *P, higan__loader_slot *s) {
    const higan_loader *L = &P->info;
    const higan_dataset *ds = L->ds;
    const int B = L->opt.batch_size;
    const int64_t H = HIGAN_DATASET_HEIGHT, stride = higan__ld_img_stride(ds);
    int *wid = P->tmp, *idx = P->tmp + B, *rank = P->tmp + 2 * B;
    int64_t remaining, W, LW, WA = 0, i, y, x;
    int nb, k, j;
    higan_batch *b = &s->b;

    s->status = HIGAN_OK;
    s->msg[0] = 0;
    if (!P->epoch_started) {                     /* epoch start: (re)shuffle with the loader RNG */
        memcpy(P->order, P->included, sizeof(int64_t) * (size_t)L->n_records);
        if (L->opt.shuffle)
            for (i = L->n_records - 1; i > 0; --i) {
                int64_t r = (int64_t)higan__ld_rng_below(&P->rng, (uint64_t)(i + 1)), t = P->order[i];
                P->order[i] = P->order[r]; P->order[r] = t;
            }
        P->epoch_started = 1;
        P->pos = 0;
        P->batch_index = 0;
    }
    remaining = L->n_records - P->pos;
    if (remaining <= 0 || (L->opt.drop_last && remaining < B)) {
        b->B = 0;
        b->epoch = P->epoch;
        b->index = P->batch_index;
        s->status = HIGAN_LOADER_EPOCH_END;
        P->epoch++;
        P->epoch_started = 0;
        return;
    }
    nb = remaining < B ? (int)remaining : B;

    /* widths in drawn order; order = numpy argsort (stable for small batches) reversed */
    W = 0; LW = 0;
    for (k = 0; k < nb; ++k) {
        int64_t r = P->order[P->pos + k];
        wid[k] = (int)higan_loader_style_width(ds, r, L->opt.process_style);
        if (wid[k] > W) W = wid[k];
        if (ds->lb_lens[r] > LW) LW = ds->lb_lens[r];
        idx[k] = k;
    }
    for (k = 1; k < nb; ++k) {                   /* stable insertion sort, ascending */
        int v = idx[k];
        for (j = k - 1; j >= 0 && wid[idx[j]] > wid[v]; --j) idx[j + 1] = idx[j];
        idx[j + 1] = v;
    }
    for (k = 0; k < nb; ++k) rank[idx[k]] = nb - 1 - k;   /* reversed: widest first */
    W = higan__ld_ceil32(W);

    b->B = nb;
    b->width = W;
    b->label_width = LW;
    b->imgs = s->imgs;
    b->img_lens = s->ints;
    b->label_lens = s->ints + B;
    b->wids = s->ints + 2 * B;
    b->aug_lens = L->opt.augment ? s->ints + 3 * B : NULL;
    b->labels = s->ints + 4 * B;
    b->records = s->records;
    b->aug_imgs = L->opt.augment ? s->aug : NULL;
    b->epoch = P->epoch;
    b->index = P->batch_index;

    for (k = 0; k < nb; ++k) {                   /* drawn order: the RNG sequence is fixed */
        int64_t r = P->order[P->pos + k], w0 = ds->img_lens[r], ws = wid[k];
        int rk = rank[k], ll = ds->lb_lens[r];
        const uint8_t *img = ds->imgs + ds->img_seek_idxs[r];
        float *row;
        /* style image: cv2 INTER_AREA when narrower than the stored image, else INTER_LINEAR */
        if (ws < w0) higan_resize_area(P->style_u8, ws, H, img, w0, H, stride);
        else higan_resize_linear(P->style_u8, ws, H, img, w0, H, stride);
        for (y = 0; y < H; ++y) {
            row = b->imgs + ((int64_t)rk * H + y) * W;
            for (x = 0; x < ws; ++x) row[x] = P->lut[P->style_u8[y * ws + x]];
            for (; x < W; ++x) row[x] = -1.0f;
        }
        b->img_lens[rk] = (int)ws;
        b->label_lens[rk] = ll;
        b->wids[rk] = (int)ds->wids[r] - L->wid_min;
        b->records[rk] = r;
        for (j = 0; j < ll; ++j) b->labels[(int64_t)rk * LW + j] = P->codes[ds->lb_seek_idxs[r] + j];
        for (; j < LW; ++j) b->labels[(int64_t)rk * LW + j] = 0;

        if (L->opt.augment) {
            int64_t nw;
            uint8_t *out = P->aug_u8 + (int64_t)k * H * L->aug_width_cap;
            higan_status st = higan__ld_augment(out, &nw, NULL, P->style_u8, ws, &P->rng, &P->scratch);
            if (st != HIGAN_OK) {
                s->status = st;
                snprintf(s->msg, sizeof s->msg, "loader: record %lld: %.400s", (long long)r, higan_last_error());
                return;
            }
            HIGAN_ASSERT(nw <= L->aug_width_cap);
            b->aug_lens[rk] = (int)nw;
            if (nw > WA) WA = nw;
        }
    }
    if (L->opt.augment) {
        b->aug_width = WA;
        for (k = 0; k < nb; ++k) {
            int rk = rank[k];
            int64_t nw = b->aug_lens[rk];
            const uint8_t *a = P->aug_u8 + (int64_t)k * H * L->aug_width_cap;
            for (y = 0; y < H; ++y) {
                float *row = b->aug_imgs + ((int64_t)rk * H + y) * WA;
                for (x = 0; x < nw; ++x) row[x] = P->lut[a[y * nw + x]];
                for (; x < WA; ++x) row[x] = -1.0f;
            }
        }
    } else b->aug_width = 0;
    P->pos += nb;
    P->batch_index++;
}

#ifdef HIGAN__LOADER_THREADS
static void *higan__loader_thread(void *arg) {
    higan__loader_priv *P = (higan__loader_priv *)arg;
    for (;;) {
        higan__loader_slot *s;
        pthread_mutex_lock(&P->mu);
        while (!P->stop && P->slot[P->produce_next].ready) pthread_cond_wait(&P->cv, &P->mu);
        if (P->stop) { pthread_mutex_unlock(&P->mu); break; }
        s = &P->slot[P->produce_next];
        pthread_mutex_unlock(&P->mu);
        higan__loader_produce(P, s);             /* the consumer never touches this slot now */
        pthread_mutex_lock(&P->mu);
        s->ready = 1;
        P->produce_next ^= 1;
        pthread_cond_broadcast(&P->cv);
        pthread_mutex_unlock(&P->mu);
    }
    return NULL;
}
#endif

static void higan__loader_release(higan_loader *L) {
    higan__loader_priv *P = (higan__loader_priv *)L->priv;
    int k;
    if (!P) return;
#ifdef HIGAN__LOADER_THREADS
    if (P->running) {
        pthread_mutex_lock(&P->mu);
        P->stop = 1;
        pthread_cond_broadcast(&P->cv);
        pthread_mutex_unlock(&P->mu);
        pthread_join(P->thread, NULL);
        pthread_cond_destroy(&P->cv);
        pthread_mutex_destroy(&P->mu);
        P->running = 0;
    }
#endif
    for (k = 0; k < 2; ++k) {
        HIGAN_FREE(P->slot[k].imgs); HIGAN_FREE(P->slot[k].aug);
        HIGAN_FREE(P->slot[k].ints); HIGAN_FREE(P->slot[k].records);
    }
    HIGAN_FREE(P->included); HIGAN_FREE(P->order); HIGAN_FREE(P->codes);
    HIGAN_FREE(P->style_u8); HIGAN_FREE(P->aug_u8); HIGAN_FREE(P->tmp);
    higan_arena_free(&P->scratch);
    HIGAN_FREE(P);
    L->priv = NULL;
}
HIGAN_DEF void higan_loader_free(higan_loader *L) {
    if (!L) return;
    higan__loader_release(L);
    memset(L, 0, sizeof *L);
}

/* The record's label as UTF-8 for messages. */
static const char *higan__loader_label(const higan_dataset *ds, int64_t i, char *buf, int cap) {
    if (higan_dataset_label(ds, i, buf, cap) < 0) snprintf(buf, (size_t)cap, "?");
    return buf;
}

HIGAN_DEF higan_status higan_loader_init(higan_loader *L, const higan_dataset *ds,
                                         const higan_loader_options *opt) {
    higan__loader_priv *P;
    int64_t i, j, n = 0, wmax = 0, amax = 0, lmax = 0, B, scratch_bytes;
    int wmin = 0, k;
    char lab[128];
    HIGAN_ASSERT(L);
    memset(L, 0, sizeof *L);
    L->opt = opt ? *opt : higan_loader_default_options();
    L->ds = ds;
    if (!ds || ds->count <= 0) return higan__error(HIGAN_ERR_ARG, "loader: empty dataset");
    if (L->opt.batch_size < 1) return higan__error(HIGAN_ERR_ARG, "loader: batch_size %d < 1", L->opt.batch_size);
    if (L->opt.max_width < 0) return higan__error(HIGAN_ERR_ARG, "loader: max_width %d < 0", L->opt.max_width);
    B = L->opt.batch_size;

    /* check every record; the writer-id minimum is over the whole dataset (as the official) */
    for (i = 0; i < ds->count; ++i) {
        int64_t seek = ds->img_seek_idxs[i], w = ds->img_lens[i], ls = ds->lb_seek_idxs[i], ll = ds->lb_lens[i];
        if (w < 1 || seek < 0 || seek + w > ds->total_width)
            return higan__error(HIGAN_ERR_FORMAT, "loader: record %lld: image columns [%lld, %lld) outside the "
                                "dataset's %lld columns", (long long)i, (long long)seek, (long long)(seek + w),
                                (long long)ds->total_width);
        if (ll < 1 || ls < 0 || ls + ll > ds->total_chars)
            return higan__error(HIGAN_ERR_FORMAT, "loader: record %lld: label characters [%lld, %lld) outside the "
                                "dataset's %lld (an empty label cannot be trained)", (long long)i, (long long)ls,
                                (long long)(ls + ll), (long long)ds->total_chars);
        if (i == 0 || ds->wids[i] < wmin) wmin = ds->wids[i];
    }
    L->wid_min = wmin;
    for (i = 0; i < ds->count; ++i) {
        int64_t ws = higan_loader_style_width(ds, i, L->opt.process_style), pw = higan__ld_ceil32(ws);
        if (L->opt.n_writers > 0 && ds->wids[i] - wmin >= L->opt.n_writers)
            return higan__error(HIGAN_ERR_ARG, "loader: record %lld (label \"%s\"): writer id %d is %d after "
                                "subtracting the dataset's minimum %d, outside the %d writers",
                                (long long)i, higan__loader_label(ds, i, lab, sizeof lab), ds->wids[i],
                                ds->wids[i] - wmin, wmin, L->opt.n_writers);
        if (L->opt.max_width > 0 && pw > L->opt.max_width) { L->n_skipped++; continue; }
        ++n;
        if (pw > wmax) wmax = pw;
        if (higan__ld_aug_width_bound(ws) > amax) amax = higan__ld_aug_width_bound(ws);
        if (ds->lb_lens[i] > lmax) lmax = ds->lb_lens[i];
    }
    L->n_records = n;
    L->n_batches = L->opt.drop_last ? n / B : (n + B - 1) / B;
    if (L->n_batches == 0)
        return higan__error(HIGAN_ERR_ARG, "loader: no batch: %lld words%s, batch size %d%s",
                            (long long)n, L->n_skipped ? " within max_width" : "", L->opt.batch_size,
                            L->opt.drop_last ? " with drop_last" : "");
    L->width_cap = wmax;
    L->aug_width_cap = L->opt.augment ? amax : 0;
    L->label_cap = lmax;

    P = (higan__loader_priv *)HIGAN_MALLOC(sizeof *P);
    if (!P) return higan__error(HIGAN_ERR_NOMEM, "loader: out of memory");
    memset(P, 0, sizeof *P);
    L->priv = P;
    P->held = -1;
    for (k = 0; k < 256; ++k) P->lut[k] = higan_pixel_to_float((uint8_t)k);
    higan_rng_seed(&P->rng, L->opt.seed);
    P->codes = (uint8_t *)HIGAN_MALLOC((size_t)(ds->total_chars > 0 ? ds->total_chars : 1));
    P->included = (int64_t *)HIGAN_MALLOC(sizeof(int64_t) * (size_t)n);
    P->order = (int64_t *)HIGAN_MALLOC(sizeof(int64_t) * (size_t)n);
    P->style_u8 = (uint8_t *)HIGAN_MALLOC((size_t)(HIGAN_DATASET_HEIGHT * wmax));
    P->aug_u8 = (uint8_t *)HIGAN_MALLOC((size_t)(B * HIGAN_DATASET_HEIGHT * (amax > 0 ? amax : 1)));
    P->tmp = (int *)HIGAN_MALLOC(sizeof(int) * 3 * (size_t)B);
    if (!P->codes || !P->included || !P->order || !P->style_u8 || !P->aug_u8 || !P->tmp) goto nomem;
    for (k = 0; k < 2; ++k) {
        higan__loader_slot *s = &P->slot[k];
        s->imgs = (float *)HIGAN_MALLOC(sizeof(float) * (size_t)(B * HIGAN_DATASET_HEIGHT * wmax));
        s->aug = (float *)HIGAN_MALLOC(sizeof(float) * (size_t)(B * HIGAN_DATASET_HEIGHT * (amax > 0 ? amax : 1)));
        s->ints = (int *)HIGAN_MALLOC(sizeof(int) * (size_t)(B * (4 + lmax)));
        s->records = (int64_t *)HIGAN_MALLOC(sizeof(int64_t) * (size_t)B);
        if (!s->imgs || !s->aug || !s->ints || !s->records) goto nomem;
    }
    /* PIL tables for the widest case: dw outputs times ksize <= max(6 sw / dw + 3, 7) weights,
       so dw * ksize <= 6 sw + 7 dw; plus bounds and 64-byte alignment */
    scratch_bytes = 4 * 64 + (int64_t)(sizeof(int) * 2) * amax +
                    (int64_t)(sizeof(double) + sizeof(int32_t)) * (6 * wmax + 7 * amax + 64);
    if (L->opt.augment && higan_arena_init(&P->scratch, (size_t)scratch_bytes) != HIGAN_OK) goto nomem;

    /* labels: code points -> alphabet indices, every record checked */
    for (i = 0, j = 0; i < ds->count; ++i) {
        int64_t c;
        for (c = 0; c < ds->lb_lens[i]; ++c) {
            int64_t at = ds->lb_seek_idxs[i] + c;
            int32_t cp = ds->lbs[at];
            int label = cp > 0 && cp < 128 ? higan_char_label((int)cp) : -1;
            if (label < 0) {
                higan__loader_release(L);
                return higan__error(HIGAN_ERR_FORMAT, "loader: record %lld (label \"%s\", writer %d): character "
                                    "U+%04X at position %lld is not in the HiGAN+ alphabet%s",
                                    (long long)i, higan__loader_label(ds, i, lab, sizeof lab), ds->wids[i],
                                    (unsigned)cp, (long long)c, cp == '`' ? " (it is the CTC blank and padding symbol)" : "");
            }
            P->codes[at] = (uint8_t)label;
        }
        if (!(L->opt.max_width > 0 &&
              higan__ld_ceil32(higan_loader_style_width(ds, i, L->opt.process_style)) > L->opt.max_width))
            P->included[j++] = i;
    }
    P->info = *L;
#ifdef HIGAN__LOADER_THREADS
    if (L->opt.threaded) {
        if (pthread_mutex_init(&P->mu, NULL) != 0) goto nothread;
        if (pthread_cond_init(&P->cv, NULL) != 0) { pthread_mutex_destroy(&P->mu); goto nothread; }
        if (pthread_create(&P->thread, NULL, higan__loader_thread, P) != 0) {
            pthread_cond_destroy(&P->cv); pthread_mutex_destroy(&P->mu); goto nothread;
        }
        P->running = 1;
    }
nothread:
    if (!P->running) L->opt.threaded = P->info.opt.threaded = 0;   /* synchronous fallback */
#else
    L->opt.threaded = P->info.opt.threaded = 0;
#endif
    return HIGAN_OK;
nomem:
    higan__loader_release(L);
    return higan__error(HIGAN_ERR_NOMEM, "loader: out of memory for batch buffers (batch %lld, width %lld)",
                        (long long)B, (long long)wmax);
}

HIGAN_DEF higan_status higan_loader_next(higan_loader *L, higan_batch *out) {
    higan__loader_priv *P;
    higan__loader_slot *s;
    HIGAN_ASSERT(L && out);
    P = (higan__loader_priv *)L->priv;
    if (!P) return higan__error(HIGAN_ERR_ARG, "loader_next: loader not initialised");
#ifdef HIGAN__LOADER_THREADS
    if (P->running) {
        pthread_mutex_lock(&P->mu);
        if (P->held >= 0) {                      /* the caller is done with its previous batch */
            P->slot[P->held].ready = 0;
            P->held = -1;
            pthread_cond_broadcast(&P->cv);
        }
        while (!P->slot[P->consume_next].ready) pthread_cond_wait(&P->cv, &P->mu);
        P->held = P->consume_next;
        P->consume_next ^= 1;
        pthread_mutex_unlock(&P->mu);
        s = &P->slot[P->held];
    } else
#endif
    {
        s = &P->slot[P->consume_next];
        P->consume_next ^= 1;
        higan__loader_produce(P, s);
    }
    *out = s->b;
    if (s->status < 0) return higan__error(s->status, "%s", s->msg);
    return s->status;
}

/* ================================================================================================
   Lexicon
   ================================================================================================ */
HIGAN_DEF void higan_lexicon_init(higan_lexicon *lex) { memset(lex, 0, sizeof *lex); }
HIGAN_DEF void higan_lexicon_free(higan_lexicon *lex) {
    if (!lex) return;
    HIGAN_FREE(lex->text);
    HIGAN_FREE(lex->offsets);
    memset(lex, 0, sizeof *lex);
}
HIGAN_DEF const char *higan_lexicon_word(const higan_lexicon *lex, int64_t i) {
    HIGAN_ASSERT(lex && i >= 0 && i < lex->count);
    return lex->text + lex->offsets[i];
}
/* Python's str.isspace() (what str.strip() removes). */
static int higan__ld_py_space(uint32_t c) {
    return (c >= 0x09 && c <= 0x0D) || (c >= 0x1C && c <= 0x20) || c == 0x85 || c == 0xA0 ||
           c == 0x1680 || (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 ||
           c == 0x202F || c == 0x205F || c == 0x3000;
}
/* Strict UTF-8 decoding (Python's codec): returns the byte length, 0 if invalid. */
static int higan__ld_utf8_next(const unsigned char *s, size_t n, uint32_t *cp) {
    unsigned c = s[0], len, k;
    uint32_t v, minimum;
    if (c < 0x80) { *cp = c; return 1; }
    if ((c & 0xE0) == 0xC0) { len = 2; v = c & 0x1F; minimum = 0x80; }
    else if ((c & 0xF0) == 0xE0) { len = 3; v = c & 0x0F; minimum = 0x800; }
    else if ((c & 0xF8) == 0xF0) { len = 4; v = c & 0x07; minimum = 0x10000; }
    else return 0;
    if (n < len) return 0;
    for (k = 1; k < len; ++k) {
        if ((s[k] & 0xC0) != 0x80) return 0;
        v = (v << 6) | (s[k] & 0x3F);
    }
    if (v < minimum || v > 0x10FFFF || (v >= 0xD800 && v <= 0xDFFF)) return 0;
    *cp = v;
    return (int)len;
}
static higan_status higan__lexicon_push(higan_lexicon *lex, const char *w, int64_t n) {
    if (lex->count == lex->capacity) {
        int64_t cap = lex->capacity ? lex->capacity * 2 : 1024;
        int64_t *o = (int64_t *)HIGAN_REALLOC(lex->offsets, sizeof(int64_t) * (size_t)cap);
        if (!o) return higan__error(HIGAN_ERR_NOMEM, "lexicon: out of memory");
        lex->offsets = o; lex->capacity = cap;
    }
    if (lex->text_bytes + n + 1 > lex->text_capacity) {
        int64_t cap = lex->text_capacity ? lex->text_capacity * 2 : 16384;
        char *t;
        while (cap < lex->text_bytes + n + 1) cap *= 2;
        t = (char *)HIGAN_REALLOC(lex->text, (size_t)cap);
        if (!t) return higan__error(HIGAN_ERR_NOMEM, "lexicon: out of memory");
        lex->text = t; lex->text_capacity = cap;
    }
    lex->offsets[lex->count++] = lex->text_bytes;
    memcpy(lex->text + lex->text_bytes, w, (size_t)n);
    lex->text[lex->text_bytes + n] = 0;
    lex->text_bytes += n + 1;
    return HIGAN_OK;
}
/* One line (without its terminator), bytes [0, n): get_lexicon's rules. */
static higan_status higan__lexicon_line(higan_lexicon *lex, const unsigned char *s, size_t n, int64_t line_no) {
    size_t a = 0, b = n, i;
    int64_t chars = 0;
    int ok = 1;
    char word[HIGAN_LEXICON_MAX_LEN];
    uint32_t cp;
    /* validate UTF-8 and strip Python whitespace from both ends */
    for (i = 0; i < n;) {
        int len = higan__ld_utf8_next(s + i, n - i, &cp);
        if (!len) return higan__error(HIGAN_ERR_FORMAT, "lexicon: line %lld: invalid UTF-8 at byte %zu",
                                      (long long)line_no, i);
        i += (size_t)len;
    }
    while (a < b) {
        int len = higan__ld_utf8_next(s + a, b - a, &cp);
        if (!higan__ld_py_space(cp)) break;
        a += (size_t)len;
    }
    while (b > a) {                              /* step back over one UTF-8 character */
        size_t k = b - 1;
        while (k > a && (s[k] & 0xC0) == 0x80) --k;
        higan__ld_utf8_next(s + k, b - k, &cp);
        if (!higan__ld_py_space(cp)) break;
        b = k;
    }
    for (i = a; i < b;) {                        /* count characters; keep only the alphabet */
        int len = higan__ld_utf8_next(s + i, b - i, &cp);
        if (len != 1 || higan_char_label((int)cp) < 0) ok = 0;
        else if (chars < HIGAN_LEXICON_MAX_LEN) word[chars] = (char)(cp >= 'A' && cp <= 'Z' ? cp + 32 : cp);
        ++chars;
        i += (size_t)len;
    }
    if (chars < 2 || !ok || chars >= HIGAN_LEXICON_MAX_LEN) { lex->dropped++; return HIGAN_OK; }
    return higan__lexicon_push(lex, word, chars);
}
HIGAN_DEF higan_status higan_lexicon_load_text(higan_lexicon *lex, const char *text, size_t n) {
    const unsigned char *s = (const unsigned char *)text;
    size_t i = 0, start = 0;
    int64_t line_no = 0;
    higan_status st;
    HIGAN_ASSERT(lex && (text || n == 0));
    lex->lines = 0;
    lex->dropped = 0;
    /* universal newlines: \n, \r\n and \r end a line; a last line without one counts */
    while (i < n) {
        if (s[i] == '\n' || s[i] == '\r') {
            ++line_no;
            if ((st = higan__lexicon_line(lex, s + start, i - start, line_no)) != HIGAN_OK) return st;
            if (s[i] == '\r' && i + 1 < n && s[i + 1] == '\n') ++i;
            start = ++i;
        } else ++i;
    }
    if (start < n) {
        ++line_no;
        if ((st = higan__lexicon_line(lex, s + start, n - start, line_no)) != HIGAN_OK) return st;
    }
    lex->lines = line_no;
    return HIGAN_OK;
}
HIGAN_DEF higan_status higan_lexicon_load(higan_lexicon *lex, const char *path) {
    FILE *f;
    char *buf;
    long size;
    size_t got;
    higan_status st;
    HIGAN_ASSERT(lex && path);
    f = fopen(path, "rb");
    if (!f) return higan__error(HIGAN_ERR_IO, "lexicon: open %s: %s", path, strerror(errno));
    if (fseek(f, 0, SEEK_END) != 0 || (size = ftell(f)) < 0 || fseek(f, 0, SEEK_SET) != 0) {
        fclose(f);
        return higan__error(HIGAN_ERR_IO, "lexicon: cannot size %s", path);
    }
    buf = (char *)HIGAN_MALLOC((size_t)size + 1);
    if (!buf) { fclose(f); return higan__error(HIGAN_ERR_NOMEM, "lexicon: out of memory for %s", path); }
    got = fread(buf, 1, (size_t)size, f);
    fclose(f);
    if (got != (size_t)size) { HIGAN_FREE(buf); return higan__error(HIGAN_ERR_IO, "lexicon: read %s failed", path); }
    st = higan_lexicon_load_text(lex, buf, got);
    HIGAN_FREE(buf);
    if (st != HIGAN_OK) {
        char msg[1024];
        snprintf(msg, sizeof msg, "%.700s (file %.300s)", higan_last_error(), path);
        return higan__error(st, "%s", msg);
    }
    return HIGAN_OK;
}
HIGAN_DEF int higan_lexicon_sample(const higan_lexicon *lex, higan_rng *rng, int n, int max_len,
                                   int *labels, int64_t label_stride, int *lens) {
    int i, j, longest = 0;
    HIGAN_ASSERT(lex && rng && n >= 0 && (n == 0 || (labels && lens)));
    HIGAN_ASSERT(label_stride >= (max_len >= 1 ? max_len : HIGAN_LEXICON_MAX_LEN - 1));
    if (lex->count <= 0) return higan__error(HIGAN_ERR_ARG, "lexicon_sample: the lexicon is empty");
    HIGAN_ASSERT(lex->count <= 2147483647);
    for (i = 0; i < n; ++i) lens[i] = (int)higan__ld_rng_below(rng, (uint64_t)lex->count);   /* indices first */
    for (i = 0; i < n; ++i) {
        const char *w = higan_lexicon_word(lex, lens[i]);
        int len = (int)strlen(w), pos = 0;
        char first = w[0];
        int *row = labels + (int64_t)i * label_stride;
        if (higan__ld_rng_double(rng) < 0.5 && first >= 'a' && first <= 'z') first = (char)(first - 32);
        if (max_len >= 1 && len > max_len) {
            pos = (int)higan__ld_rng_below(rng, (uint64_t)(len - max_len));
            len = max_len;
        }
        for (j = 0; j < len; ++j) row[j] = higan_char_label(pos + j == 0 ? first : w[pos + j]);
        for (; j < label_stride; ++j) row[j] = 0;
        lens[i] = len;
    }
    for (i = 1; i < n; ++i) {                    /* stable, by length descending */
        for (j = i; j > 0 && lens[j - 1] < lens[j]; --j) {
            int64_t c;
            int t = lens[j]; lens[j] = lens[j - 1]; lens[j - 1] = t;
            for (c = 0; c < label_stride; ++c) {
                int *p = labels + (int64_t)j * label_stride + c, *q = p - label_stride;
                t = *p; *p = *q; *q = t;
            }
        }
    }
    for (i = 0; i < n; ++i) if (lens[i] > longest) longest = lens[i];
    return longest;
}
#endif /* HIGAN_LOADER_IMPL_INCLUDED */
