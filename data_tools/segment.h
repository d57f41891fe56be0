/* segment.h - from a photo or scan of a handwritten page to word images (style references).

   Header-only, every function static (prefix seg_). Used by data_tools/segment_page.c,
   tests/test_segment.c and any example that wants to cut a page into words.

   Pipeline (seg_segment):
     1. grayscale float, 1 = paper, 0 = ink (seg_load_gray: stb_image, alpha composited on
        white, pages over SEG_MAX_SIDE px on the long side are downscaled by area averaging);
     2. background normalisation (seg_normalize_background): the dark surround of a
        photographed sheet (darker than half the paper and connected to the image border) is
        masked; the paper brightness is estimated on a coarse grid (a high percentile per
        block, a 3x3-block max, a 3x3-block mean, bilinear upsampling) and the page is divided
        by it (gain capped in dark areas), which flattens uneven lighting and shadows;
     3. binarisation: Sauvola (integral images, window twice the text height measured on a
        first Otsu pass) or global Otsu, both with an absolute contrast floor (ink at least
        min_contrast darker than the paper); 8-connected components; not text: specks
        (area < 0.3 stroke width^2), large components touching the border, components taller
        than 6 or wider than 60 median component heights;
     4. deskew: the angle in [-max_angle, max_angle] that maximises the sum of squares of the
        horizontal projection profile of the ink (0.2 deg grid, then 0.02 deg around the
        best); the normalised page is rotated back (bilinear, canvas enlarged so nothing is
        cut) and binarised again;
     5. lines: a density of component centroids (area-weighted, Gaussian-smoothed) whose
        peaks are the lines; ascenders and descenders of neighbouring lines do not fill its
        valleys as they fill those of the ink profile. Close peaks or shallow valleys merge;
        components go to the line whose band holds their centroid; the x-height is the
        half-maximum band of each line's own ink profile; small components (i dots,
        commas) follow their nearest letter-sized component (within 1.5 x-heights, else
        they are dropped);
     6. words: per line, letter-sized components in x order; the gap in front of each is
        measured row by row between its ink and the ink on its left (a quarter x-height of
        vertical slack), so overhangs (T bars, j and f tails) do not hide gaps; the page's
        gaps are split into letter and word gaps (Otsu on log gaps, refined to the largest
        relative jump nearby; see seg__gap_threshold), or --word-gap x-heights;
     7. each word (seg_word_image): box + margin, ink bright (255) on 0, background = pixels
        outside the word's own components dilated by 1-3 px (other words' ink is removed
        even inside the box), grayscale ink kept (stretched from the paper noise level to
        the 95th percentile of the ink), scaled to height 64 with the aspect ratio kept
        (area when shrinking, bilinear when enlarging), as in HiGAN+'s data (spec section 4).
   Tested on composed pages (tests/test_segment.c): skew within 0.3 deg, lines and words
   exact for x-heights from about 12 px up; smaller writing should be scanned at a higher
   resolution.

   Coordinates: the deskewed page (result->page) is the input rotated by -angle on a canvas
   large enough to hold it; seg_to_input / seg_from_input map points between the two. A
   positive angle means the text goes down to the right in the input (image y points down).

   Files (seg_write_outputs): DIR/word_LLL_WWW.png (line, word, from 0) as dark ink on white
   (what a person expects, and what examples/generate.c's --style-image reads; the library
   inverts to ink-bright when it loads them), DIR/transcriptions.txt ("word_000_001.png<TAB>"
   per line: the user types each word after the tab), DIR/overview.png (the input page with
   a coloured box and a "line.word" label around every word).

   stb: include this after stb_image.h / stb_image_write.h have been included, or define
   SEG_STB_IMPLEMENTATION in exactly one file before including it to get their
   implementations from here. */
#ifndef HIGAN_SEGMENT_H
#define HIGAN_SEGMENT_H
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#if defined(__GNUC__)
#  pragma GCC diagnostic push
#  pragma GCC diagnostic ignored "-Wunused-function"
#  pragma GCC diagnostic ignored "-Wsign-compare"
#  pragma GCC diagnostic ignored "-Wmissing-field-initializers"
#endif
#ifdef SEG_STB_IMPLEMENTATION
#  define STB_IMAGE_IMPLEMENTATION
#  define STBI_FAILURE_USERMSG
#  define STB_IMAGE_WRITE_IMPLEMENTATION
#endif
#include <stb/stb_image.h>
#include <stb/stb_image_write.h>
#include <stb/stb_easy_font.h>
#if defined(__GNUC__)
#  pragma GCC diagnostic pop
#endif

#if defined(__GNUC__)
#  define SEG_DEF static __attribute__((unused))
#else
#  define SEG_DEF static
#endif

#define SEG_MAX_SIDE 4000     /* longer pages are downscaled to this */
#define SEG_MIN_SIDE 24       /* smaller images are rejected */
#define SEG_PI 3.14159265358979323846

enum { SEG_SAUVOLA = 0, SEG_OTSU = 1 };

typedef struct seg_params {
    int binarize;          /* SEG_SAUVOLA (default) or SEG_OTSU */
    float sauvola_k;       /* Sauvola k, 0.2..0.5 (default 0.3) */
    int window;            /* Sauvola window in px (odd); 0 = twice the text height */
    float min_contrast;    /* ink is at least this much darker than the paper (0.15) */
    int deskew;            /* 1: estimate and undo the skew */
    float max_angle;       /* skew search range in degrees (10) */
    float word_gap;        /* word gap threshold in x-heights; 0 = from the gap distribution */
    int margin;            /* crop margin in px; < 0 = auto (x-height / 6, at least dilation + 2) */
} seg_params;

typedef struct seg_comp {
    int x0, y0, x1, y1;    /* bounding box, half-open */
    int area;
    double sx, sy;         /* sums of pixel x, y (centroid = s / area) */
    int line, word;        /* assignment, -1 = none (dropped) */
    int major;             /* 1: a letter-sized component; 0: dot, comma, speck */
} seg_comp;

typedef struct seg_word {
    int x0, y0, x1, y1;    /* box in the deskewed page, half-open, margin included */
    int line, index;       /* line number and word number in the line, from 0 */
} seg_word;

typedef struct seg_result {
    int in_w, in_h;        /* input size (after the downscale of huge pages) */
    int w, h;              /* deskewed page size */
    float angle;           /* detected skew in degrees (0 when deskew is off) */
    float *page;           /* [h][w] normalised gray of the deskewed page: 1 paper, 0 ink */
    uint8_t *ink;          /* [h][w] 1 = ink of a kept component */
    int *label;            /* [h][w] component index, -1 = background */
    int ncomp;
    seg_comp *comps;
    int nlines;
    int nwords;
    seg_word *words;       /* sorted by line, then x */
    float xheight;         /* median x-height (core band height) in px */
    float stroke;          /* median stroke width in px */
    float text_height;     /* area-weighted median component height in px */
    float gap_threshold;   /* word gap threshold used, px */
    int window;            /* Sauvola window used */
    int margin;            /* crop margin used */
    char error[256];
} seg_result;

SEG_DEF void seg_params_default(seg_params *p) {
    p->binarize = SEG_SAUVOLA;
    p->sauvola_k = 0.3f;
    p->window = 0;
    p->min_contrast = 0.15f;
    p->deskew = 1;
    p->max_angle = 10.0f;
    p->word_gap = 0.0f;
    p->margin = -1;
}

SEG_DEF void seg_free(seg_result *r) {
    free(r->page); free(r->ink); free(r->label); free(r->comps); free(r->words);
    r->page = NULL; r->ink = NULL; r->label = NULL; r->comps = NULL; r->words = NULL;
    r->ncomp = r->nwords = r->nlines = 0;
}

/* ---- small utilities ------------------------------------------------------------------- */
static int seg__cmp_float(const void *a, const void *b) {
    float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}
static int seg__clampi(int v, int lo, int hi) { return v < lo ? lo : v > hi ? hi : v; }
static float seg__clampf(float v, float lo, float hi) { return v < lo ? lo : v > hi ? hi : v; }

/* error message into err[cap] (vsnprintf: long paths are cut, never overflow) */
static void seg__errf(char *err, int cap, const char *fmt, ...) {
    va_list ap;
    if (!err || cap <= 0) return;
    va_start(ap, fmt);
    vsnprintf(err, (size_t)cap, fmt, ap);
    va_end(ap);
}

/* q-quantile (0..1) of v[0..n) (sorts v in place); 0 when n == 0 */
static float seg__quantile(float *v, int n, float q) {
    int i;
    if (n <= 0) return 0.0f;
    qsort(v, (size_t)n, sizeof *v, seg__cmp_float);
    i = (int)(q * (float)(n - 1) + 0.5f);
    return v[seg__clampi(i, 0, n - 1)];
}

/* bilinear sample of img[h][w] at continuous (x, y), pixel centres at +0.5; outside = fill */
static float seg__sample(const float *img, int w, int h, float x, float y, float fill) {
    float fx = x - 0.5f, fy = y - 0.5f, ax, ay, v00, v01, v10, v11;
    int x0, y0;
    if (fx < -1.0f || fy < -1.0f || fx > (float)w || fy > (float)h) return fill;
    x0 = (int)floorf(fx); y0 = (int)floorf(fy);
    ax = fx - (float)x0; ay = fy - (float)y0;
#define SEG__PX(xx, yy) (((xx) < 0 || (yy) < 0 || (xx) >= w || (yy) >= h) ? fill : img[(size_t)(yy) * w + (xx)])
    v00 = SEG__PX(x0, y0); v01 = SEG__PX(x0 + 1, y0);
    v10 = SEG__PX(x0, y0 + 1); v11 = SEG__PX(x0 + 1, y0 + 1);
#undef SEG__PX
    return (v00 * (1 - ax) + v01 * ax) * (1 - ay) + (v10 * (1 - ax) + v11 * ax) * ay;
}

/* 1-D resampling of n_in samples (stride si) to n_out (stride so): area averaging when
   shrinking, bilinear with half-pixel centres when enlarging (cv2 INTER_AREA / INTER_LINEAR). */
static void seg__resample_1d(float *out, int n_out, int so, const float *in, int n_in, int si) {
    int i;
    double s = (double)n_in / (double)n_out;
    if (n_out <= n_in) {
        for (i = 0; i < n_out; ++i) {
            double a = i * s, b = (i + 1) * s, acc = 0;
            int j = (int)floor(a);
            for (; j < n_in && (double)j < b; ++j) {
                double lo = a > j ? a : (double)j, hi = b < j + 1 ? b : (double)(j + 1);
                if (hi > lo) acc += (hi - lo) * in[(size_t)j * si];
            }
            out[(size_t)i * so] = (float)(acc / s);
        }
    } else {
        for (i = 0; i < n_out; ++i) {
            double x = (i + 0.5) * s - 0.5, a;
            int j;
            if (x < 0) x = 0;
            if (x > n_in - 1) x = n_in - 1;
            j = (int)floor(x); a = x - j;
            if (j + 1 < n_in) out[(size_t)i * so] = (float)((1 - a) * in[(size_t)j * si] + a * in[(size_t)(j + 1) * si]);
            else out[(size_t)i * so] = in[(size_t)j * si];
        }
    }
}

/* resize src[sh][sw] -> dst[dh][dw] (separable); returns 0, or -1 when out of memory */
SEG_DEF int seg_resize(float *dst, int dw, int dh, const float *src, int sw, int sh) {
    float *tmp = (float *)malloc(sizeof(float) * (size_t)dw * (size_t)sh);
    int y, x;
    if (!tmp) return -1;
    for (y = 0; y < sh; ++y) seg__resample_1d(tmp + (size_t)y * dw, dw, 1, src + (size_t)y * sw, sw, 1);
    for (x = 0; x < dw; ++x) seg__resample_1d(dst + x, dh, dw, tmp + x, sh, dw);
    free(tmp);
    return 0;
}

/* ---- loading ----------------------------------------------------------------------------- */
/* Grayscale float [h][w] of an image file, 1 = white. Alpha is composited on white. Pages
   longer than SEG_MAX_SIDE are downscaled (*scale = new/original, else 1). NULL + err on
   failure (message names the file). */
SEG_DEF float *seg_load_gray(const char *path, int *w_out, int *h_out, float *scale,
                             char *err, int errcap) {
    int w, h, ch, i, n;
    unsigned char *px = stbi_load(path, &w, &h, &ch, 0);
    float *g, *out;
    if (scale) *scale = 1.0f;
    if (!px) {
        FILE *f = fopen(path, "rb");
        if (!f) seg__errf(err, errcap, "cannot open '%s'", path);
        else { fclose(f); seg__errf(err, errcap, "'%s' is not a readable image (%s)", path, stbi_failure_reason()); }
        return NULL;
    }
    if (w < SEG_MIN_SIDE || h < SEG_MIN_SIDE) {
        seg__errf(err, errcap, "'%s' is too small (%dx%d); a page needs at least %d px on each side",
                 path, w, h, SEG_MIN_SIDE);
        stbi_image_free(px);
        return NULL;
    }
    n = w * h;
    g = (float *)malloc(sizeof(float) * (size_t)n);
    if (!g) { stbi_image_free(px); seg__errf(err, errcap, "'%s': out of memory", path); return NULL; }
    for (i = 0; i < n; ++i) {
        const unsigned char *p = px + (size_t)i * ch;
        float v, a = 1.0f;
        if (ch >= 3) v = (0.299f * p[0] + 0.587f * p[1] + 0.114f * p[2]) / 255.0f;
        else v = p[0] / 255.0f;
        if (ch == 2) a = p[1] / 255.0f;
        if (ch == 4) a = p[3] / 255.0f;
        g[i] = v * a + (1.0f - a);
    }
    stbi_image_free(px);
    if (w > SEG_MAX_SIDE || h > SEG_MAX_SIDE) {
        float s = (float)SEG_MAX_SIDE / (float)(w > h ? w : h);
        int nw = (int)(w * s + 0.5f), nh = (int)(h * s + 0.5f);
        if (nw < 1) nw = 1;
        if (nh < 1) nh = 1;
        out = (float *)malloc(sizeof(float) * (size_t)nw * (size_t)nh);
        if (!out || seg_resize(out, nw, nh, g, w, h)) {
            free(out); free(g);
            seg__errf(err, errcap, "'%s': out of memory", path);
            return NULL;
        }
        free(g);
        g = out;
        if (scale) *scale = s;
        w = nw; h = nh;
    }
    *w_out = w; *h_out = h;
    return g;
}

/* ---- background normalisation ----------------------------------------------------------- */
/* off[i] = 1 for the dark surround of a photographed sheet: pixels darker than thr that are
   connected (8-neighbours) to the image border, dilated by 2 px. Returns 0, -1 out of memory. */
static int seg__off_sheet(uint8_t *off, const float *gray, int w, int h, float thr) {
    size_t n = (size_t)w * h, i;
    int *stack = (int *)malloc(sizeof(int) * n), sp = 0, x, y, k;
    uint8_t *tmp = (uint8_t *)malloc(n);
    if (!stack || !tmp) { free(stack); free(tmp); return -1; }
    memset(off, 0, n);
    for (y = 0; y < h; ++y)
        for (x = 0; x < w; ++x) {
            i = (size_t)y * w + x;
            if ((x == 0 || y == 0 || x == w - 1 || y == h - 1) && gray[i] < thr && !off[i]) { off[i] = 1; stack[sp++] = (int)i; }
        }
    while (sp) {
        int p = stack[--sp], px = p % w, py = p / w, dx, dy;
        for (dy = -1; dy <= 1; ++dy) for (dx = -1; dx <= 1; ++dx) {
            int qx = px + dx, qy = py + dy;
            size_t q;
            if (qx < 0 || qy < 0 || qx >= w || qy >= h) continue;
            q = (size_t)qy * w + qx;
            if (!off[q] && gray[q] < thr) { off[q] = 1; stack[sp++] = (int)q; }
        }
    }
    /* dilate by 2 px: the anti-aliased rim of the sheet */
    for (y = 0; y < h; ++y)
        for (x = 0; x < w; ++x) {
            uint8_t v = 0;
            for (k = -2; k <= 2 && !v; ++k) if (x + k >= 0 && x + k < w) v = off[(size_t)y * w + x + k];
            tmp[(size_t)y * w + x] = v;
        }
    for (y = 0; y < h; ++y)
        for (x = 0; x < w; ++x) {
            uint8_t v = 0;
            for (k = -2; k <= 2 && !v; ++k) if (y + k >= 0 && y + k < h) v = tmp[(size_t)(y + k) * w + x];
            off[(size_t)y * w + x] = v;
        }
    free(stack); free(tmp);
    return 0;
}

/* out = 1 - (paper - gray) / max(paper, ref / 2), clipped to [0, 1]: gray / paper where the
   paper is lit, with the gain capped in dark areas so that their noise is not blown up.
   ref, the paper's brightness, is the 90th percentile of the page. The dark surround of a
   photographed sheet (darker than ref / 2 and connected to the image border) is set to 1.
   The paper brightness is estimated on a grid of B x B blocks (B ~ long side / 48): 80th
   percentile per block (surround excluded), max over 3x3 blocks (blocks full of ink take
   the paper of their neighbours), mean over 3x3 blocks, bilinear between block centres. */
SEG_DEF int seg_normalize_background(float *out, const float *gray, int w, int h) {
    int B = (w > h ? w : h) / 48, gw, gh, bx, by, x, y, i, ns, step;
    float *blk, *mx, *sm, *tmp, ref, den;
    uint8_t *off;
    if (B < 8) B = 8;
    gw = (w + B - 1) / B; gh = (h + B - 1) / B;
    step = (int)((int64_t)w * h / 200000) + 1;
    blk = (float *)malloc(sizeof(float) * (size_t)gw * gh * 3);
    tmp = (float *)malloc(sizeof(float) * ((size_t)B * B > (size_t)w * h / step + 1 ? (size_t)B * B : (size_t)w * h / step + 1));
    off = (uint8_t *)malloc((size_t)w * h);
    if (!blk || !tmp || !off) { free(blk); free(tmp); free(off); return -1; }
    mx = blk + (size_t)gw * gh; sm = mx + (size_t)gw * gh;
    for (i = 0, ns = 0; i < w * h; i += step) tmp[ns++] = gray[i];
    ref = seg__quantile(tmp, ns, 0.9f);
    if (ref < 1e-3f) ref = 1e-3f;
    if (seg__off_sheet(off, gray, w, h, 0.5f * ref)) { free(blk); free(tmp); free(off); return -1; }
    for (by = 0; by < gh; ++by)
        for (bx = 0; bx < gw; ++bx) {
            int n = 0;
            for (y = by * B; y < (by + 1) * B && y < h; ++y)
                for (x = bx * B; x < (bx + 1) * B && x < w; ++x)
                    if (!off[(size_t)y * w + x]) tmp[n++] = gray[(size_t)y * w + x];
            blk[by * gw + bx] = n >= B ? seg__quantile(tmp, n, 0.8f) : 0.0f;   /* 0: no paper here */
        }
    for (by = 0; by < gh; ++by)
        for (bx = 0; bx < gw; ++bx) {
            float m = 0; int dx, dy;
            for (dy = -1; dy <= 1; ++dy) for (dx = -1; dx <= 1; ++dx) {
                int yy = by + dy, xx = bx + dx;
                if (yy >= 0 && yy < gh && xx >= 0 && xx < gw && blk[yy * gw + xx] > m) m = blk[yy * gw + xx];
            }
            mx[by * gw + bx] = m > 0 ? m : ref;
        }
    for (by = 0; by < gh; ++by)
        for (bx = 0; bx < gw; ++bx) {
            float s = 0; int dx, dy, n = 0;
            for (dy = -1; dy <= 1; ++dy) for (dx = -1; dx <= 1; ++dx) {
                int yy = by + dy, xx = bx + dx;
                if (yy >= 0 && yy < gh && xx >= 0 && xx < gw) { s += mx[yy * gw + xx]; ++n; }
            }
            sm[by * gw + bx] = s / (float)n;
        }
    for (y = 0; y < h; ++y)
        for (x = 0; x < w; ++x) {
            /* block centres at (b + 0.5) * B */
            float gx = ((float)x + 0.5f) / (float)B - 0.5f, gy = ((float)y + 0.5f) / (float)B - 0.5f, bg;
            int x0, y0, x1, y1;
            float ax, ay;
            gx = seg__clampf(gx, 0.0f, (float)(gw - 1)); gy = seg__clampf(gy, 0.0f, (float)(gh - 1));
            x0 = (int)gx; y0 = (int)gy; x1 = x0 + 1 < gw ? x0 + 1 : x0; y1 = y0 + 1 < gh ? y0 + 1 : y0;
            ax = gx - (float)x0; ay = gy - (float)y0;
            bg = (sm[y0 * gw + x0] * (1 - ax) + sm[y0 * gw + x1] * ax) * (1 - ay)
               + (sm[y1 * gw + x0] * (1 - ax) + sm[y1 * gw + x1] * ax) * ay;
            i = y * w + x;
            den = bg > 0.5f * ref ? bg : 0.5f * ref;
            out[i] = off[i] ? 1.0f : seg__clampf(1.0f - (bg - gray[i]) / den, 0.0f, 1.0f);
        }
    free(blk); free(tmp); free(off);
    return 0;
}

/* ---- binarisation ------------------------------------------------------------------------ */
/* Otsu threshold of values in [0, 1] (256-bin histogram); returns the threshold value. */
SEG_DEF float seg_otsu(const float *v, int64_t n) {
    double hist[256], sum = 0, sumb = 0, wb = 0, best = -1;
    int64_t i;
    int k, bestk = 128;
    memset(hist, 0, sizeof hist);
    for (i = 0; i < n; ++i) { k = seg__clampi((int)(v[i] * 255.0f + 0.5f), 0, 255); hist[k] += 1; sum += k; }
    for (k = 0; k < 256; ++k) {
        double wf, mb, mf, between;
        wb += hist[k];
        if (wb == 0) continue;
        wf = (double)n - wb;
        if (wf == 0) break;
        sumb += k * hist[k];
        mb = sumb / wb; mf = (sum - sumb) / wf;
        between = wb * wf * (mb - mf) * (mb - mf);
        if (between > best) { best = between; bestk = k; }
    }
    return ((float)bestk + 0.5f) / 255.0f;
}

/* ink[i] = 1 where norm[i] is ink. Sauvola: T = m (1 + k (s / 0.5 - 1)) over a window x window
   box (integral images in double); Otsu: one global threshold. Both also require
   norm < 1 - min_contrast. */
SEG_DEF int seg_binarize(uint8_t *ink, const float *norm, int w, int h, int method, float k,
                         int window, float min_contrast) {
    float floor_t = 1.0f - min_contrast;
    int x, y;
    if (method == SEG_OTSU) {
        float t = seg_otsu(norm, (int64_t)w * h);
        if (t > floor_t) t = floor_t;
        for (y = 0; y < h; ++y) for (x = 0; x < w; ++x) {
            size_t i = (size_t)y * w + x;
            ink[i] = (uint8_t)(norm[i] < t);
        }
        return 0;
    } else {
        int r = window / 2;
        size_t W1 = (size_t)w + 1;
        double *S = (double *)malloc(sizeof(double) * W1 * (size_t)(h + 1) * 2), *Q;
        if (!S) return -1;
        Q = S + W1 * (size_t)(h + 1);
        for (x = 0; x <= w; ++x) S[x] = Q[x] = 0;
        for (y = 1; y <= h; ++y) {
            double rs = 0, rq = 0;
            S[(size_t)y * W1] = Q[(size_t)y * W1] = 0;
            for (x = 1; x <= w; ++x) {
                double v = norm[(size_t)(y - 1) * w + (x - 1)];
                rs += v; rq += v * v;
                S[(size_t)y * W1 + x] = S[(size_t)(y - 1) * W1 + x] + rs;
                Q[(size_t)y * W1 + x] = Q[(size_t)(y - 1) * W1 + x] + rq;
            }
        }
        for (y = 0; y < h; ++y) {
            int ya = y - r < 0 ? 0 : y - r, yb = y + r + 1 > h ? h : y + r + 1;
            for (x = 0; x < w; ++x) {
                int xa = x - r < 0 ? 0 : x - r, xb = x + r + 1 > w ? w : x + r + 1;
                double cnt = (double)(yb - ya) * (xb - xa);
                double s = S[(size_t)yb * W1 + xb] - S[(size_t)ya * W1 + xb] - S[(size_t)yb * W1 + xa] + S[(size_t)ya * W1 + xa];
                double q = Q[(size_t)yb * W1 + xb] - Q[(size_t)ya * W1 + xb] - Q[(size_t)yb * W1 + xa] + Q[(size_t)ya * W1 + xa];
                double m = s / cnt, var = q / cnt - m * m, sd = var > 0 ? sqrt(var) : 0;
                double t = m * (1.0 + k * (sd / 0.5 - 1.0));
                float v = norm[(size_t)y * w + x];
                ink[(size_t)y * w + x] = (uint8_t)(v < t && v < floor_t);
            }
        }
        free(S);
        return 0;
    }
}

/* ---- connected components (8-connectivity) ---------------------------------------------- */
/* label[i] = component index or -1; *comps malloc'd. Returns the count, -1 out of memory. */
SEG_DEF int seg_components(int *label, seg_comp **comps_out, const uint8_t *ink, int w, int h) {
    size_t n = (size_t)w * h, i;
    int *stack = (int *)malloc(sizeof(int) * (n ? n : 1));
    int cap = 256, nc = 0;
    seg_comp *c = (seg_comp *)malloc(sizeof(seg_comp) * (size_t)cap);
    *comps_out = NULL;
    if (!stack || !c) { free(stack); free(c); return -1; }
    for (i = 0; i < n; ++i) label[i] = -1;
    for (i = 0; i < n; ++i) {
        int sp = 0;
        seg_comp *k;
        if (!ink[i] || label[i] >= 0) continue;
        if (nc == cap) {
            seg_comp *nc2 = (seg_comp *)realloc(c, sizeof(seg_comp) * (size_t)cap * 2);
            if (!nc2) { free(stack); free(c); return -1; }
            c = nc2; cap *= 2;
        }
        k = &c[nc];
        k->x0 = w; k->y0 = h; k->x1 = 0; k->y1 = 0; k->area = 0; k->sx = k->sy = 0;
        k->line = k->word = -1; k->major = 0;
        label[i] = nc; stack[sp++] = (int)i;
        while (sp) {
            int p = stack[--sp], px = p % w, py = p / w, dx, dy;
            k->area++; k->sx += px; k->sy += py;
            if (px < k->x0) k->x0 = px;
            if (py < k->y0) k->y0 = py;
            if (px + 1 > k->x1) k->x1 = px + 1;
            if (py + 1 > k->y1) k->y1 = py + 1;
            for (dy = -1; dy <= 1; ++dy) for (dx = -1; dx <= 1; ++dx) {
                int qx = px + dx, qy = py + dy;
                size_t q;
                if (qx < 0 || qy < 0 || qx >= w || qy >= h) continue;
                q = (size_t)qy * w + qx;
                if (ink[q] && label[q] < 0) { label[q] = nc; stack[sp++] = (int)q; }
            }
        }
        ++nc;
    }
    free(stack);
    *comps_out = c;
    return nc;
}

/* median horizontal run length of ink (stroke width estimate) */
SEG_DEF float seg_stroke_width(const uint8_t *ink, int w, int h) {
    int64_t hist[65];
    int64_t total = 0, acc = 0;
    int x, y, k;
    memset(hist, 0, sizeof hist);
    for (y = 0; y < h; ++y) {
        int run = 0;
        for (x = 0; x <= w; ++x) {
            if (x < w && ink[(size_t)y * w + x]) ++run;
            else if (run) { hist[run > 64 ? 64 : run]++; ++total; run = 0; }
        }
    }
    if (!total) return 1.0f;
    for (k = 1; k <= 64; ++k) { acc += hist[k]; if (2 * acc >= total) return (float)k; }
    return 64.0f;
}

/* Removes specks (area < min_area) from ink, label and the component list (re-indexed). */
static int seg__drop_small(uint8_t *ink, int *label, seg_comp *c, int nc, int w, int h, int min_area) {
    int *map = (int *)malloc(sizeof(int) * (size_t)(nc ? nc : 1)), j, m = 0;
    size_t i, n = (size_t)w * h;
    if (!map) return -1;
    for (j = 0; j < nc; ++j) {
        if (c[j].area >= min_area) { map[j] = m; c[m++] = c[j]; }
        else map[j] = -1;
    }
    for (i = 0; i < n; ++i) if (label[i] >= 0) {
        label[i] = map[label[i]];
        if (label[i] < 0) ink[i] = 0;
    }
    free(map);
    return m;
}

/* area-weighted median of component heights */
static float seg__weighted_median_height(const seg_comp *c, int nc) {
    int j, y;
    int64_t total = 0, acc = 0;
    int maxh = 0;
    int64_t *hist;
    for (j = 0; j < nc; ++j) { if (c[j].y1 - c[j].y0 > maxh) maxh = c[j].y1 - c[j].y0; total += c[j].area; }
    if (!nc || !total) return 0.0f;
    hist = (int64_t *)calloc((size_t)maxh + 1, sizeof(int64_t));
    if (!hist) return (float)maxh;
    for (j = 0; j < nc; ++j) hist[c[j].y1 - c[j].y0] += c[j].area;
    for (y = 0; y <= maxh; ++y) { acc += hist[y]; if (2 * acc >= total) break; }
    free(hist);
    return (float)(y > maxh ? maxh : y);
}

/* ---- deskew -------------------------------------------------------------------------------- */
static double seg__profile_score(const float *px, const float *py, int n, double a, int *bins, int nb, double off) {
    double s = sin(a), c = cos(a), score = 0;
    int i;
    memset(bins, 0, sizeof(int) * (size_t)nb);
    for (i = 0; i < n; ++i) {
        int b = (int)floor(-px[i] * s + py[i] * c + off);
        if (b >= 0 && b < nb) bins[b]++;
    }
    for (i = 0; i < nb; ++i) score += (double)bins[i] * bins[i];
    return score;
}

/* Skew angle in degrees (text direction (cos a, sin a), y down) in [-max_deg, max_deg]:
   maximises the sum of squares of the projection profile of the ink perpendicular to a. */
SEG_DEF float seg_estimate_skew(const uint8_t *ink, int w, int h, float max_deg) {
    int64_t count = 0, i, n = (int64_t)w * h;
    int stride, m = 0, nb, step;
    float *px, *py;
    int *bins;
    double best = -1, besta = 0, a, off, diag = sqrt((double)w * w + (double)h * h);
    for (i = 0; i < n; ++i) count += ink[i];
    if (count < 2 || max_deg <= 0) return 0.0f;
    stride = (int)(count / 300000) + 1;           /* at most ~300k points */
    px = (float *)malloc(sizeof(float) * (size_t)(count / stride + 1));
    py = (float *)malloc(sizeof(float) * (size_t)(count / stride + 1));
    nb = (int)diag + 4;
    bins = (int *)malloc(sizeof(int) * (size_t)nb);
    if (!px || !py || !bins) { free(px); free(py); free(bins); return 0.0f; }
    count = 0;
    for (i = 0; i < n; ++i) if (ink[i]) {
        if (count++ % stride) continue;
        px[m] = (float)(i % w) + 0.5f - 0.5f * w;
        py[m] = (float)(i / w) + 0.5f - 0.5f * h;
        ++m;
    }
    off = diag / 2 + 2;
    for (step = 0; step <= (int)(2 * max_deg / 0.2 + 0.5); ++step) {
        double sc;
        a = -max_deg + 0.2 * step;
        sc = seg__profile_score(px, py, m, a * SEG_PI / 180.0, bins, nb, off);
        if (sc > best) { best = sc; besta = a; }
    }
    {
        double center = besta;
        for (step = -15; step <= 15; ++step) {
            double sc;
            a = center + 0.02 * step;
            if (a < -max_deg || a > max_deg) continue;
            sc = seg__profile_score(px, py, m, a * SEG_PI / 180.0, bins, nb, off);
            if (sc > best) { best = sc; besta = a; }
        }
    }
    free(px); free(py); free(bins);
    return (float)besta;
}

/* deskewed point (u, v) -> input point (x, y), continuous coordinates */
SEG_DEF void seg_to_input(const seg_result *r, float u, float v, float *x, float *y) {
    double a = r->angle * SEG_PI / 180.0, c = cos(a), s = sin(a);
    double du = u - 0.5 * r->w, dv = v - 0.5 * r->h;
    *x = (float)(c * du - s * dv + 0.5 * r->in_w);
    *y = (float)(s * du + c * dv + 0.5 * r->in_h);
}
/* input point (x, y) -> deskewed point (u, v) */
SEG_DEF void seg_from_input(const seg_result *r, float x, float y, float *u, float *v) {
    double a = r->angle * SEG_PI / 180.0, c = cos(a), s = sin(a);
    double dx = x - 0.5 * r->in_w, dy = y - 0.5 * r->in_h;
    *u = (float)(c * dx + s * dy + 0.5 * r->w);
    *v = (float)(-s * dx + c * dy + 0.5 * r->h);
}

/* ---- binarise + components + specks (shared by the two passes) --------------------------- */
static int seg__ink_pass(seg_result *r, const float *norm, int w, int h, const seg_params *p, int window,
                         uint8_t *ink, int *label, seg_comp **comps) {
    int nc, min_area;
    float sw;
    if (seg_binarize(ink, norm, w, h, p->binarize, p->sauvola_k, window, p->min_contrast)) return -1;
    nc = seg_components(label, comps, ink, w, h);
    if (nc < 0) return -1;
    /* not text: large components touching the image border (the table or shadow around a
       photographed sheet, a dark scanner lid), and components taller than 6 median
       component heights or wider than 60 (the rim of the sheet, a ruled line) */
    {
        int j, nh = 0;
        float *hs = (float *)malloc(sizeof(float) * (size_t)(nc ? nc : 1)), hm;
        seg_comp *c = *comps;
        if (!hs) return -1;
        for (j = 0; j < nc; ++j) if (c[j].area >= 4) hs[nh++] = (float)(c[j].y1 - c[j].y0);
        hm = seg__quantile(hs, nh, 0.5f);
        free(hs);
        if (hm < 2) hm = 2;
        for (j = 0; j < nc; ++j) {
            int cw = c[j].x1 - c[j].x0, ch = c[j].y1 - c[j].y0;
            if (((c[j].x0 == 0 || c[j].y0 == 0 || c[j].x1 == w || c[j].y1 == h) && (cw > w / 4 || ch > h / 4))
                || (float)ch > 6 * hm || (float)cw > 60 * hm) c[j].area = 0;
        }
        if ((nc = seg__drop_small(ink, label, c, nc, w, h, 1)) < 0) return -1;
    }
    sw = seg_stroke_width(ink, w, h);
    r->stroke = sw;
    min_area = (int)(0.3f * sw * sw);
    if (min_area < 4) min_area = 4;
    return seg__drop_small(ink, label, *comps, nc, w, h, min_area);
}

static float seg__box_dist(const seg_comp *a, const seg_comp *b) {
    int dx = a->x0 - b->x1, dy = a->y0 - b->y1;
    if (b->x0 - a->x1 > dx) dx = b->x0 - a->x1;
    if (b->y0 - a->y1 > dy) dy = b->y0 - a->y1;
    if (dx < 0) dx = 0;
    if (dy < 0) dy = 0;
    return sqrtf((float)dx * dx + (float)dy * dy);
}

/* Gaussian smoothing of a 1-D profile (edges: renormalised weights) */
static void seg__smooth(float *out, const float *in, int n, float sigma) {
    int rad = (int)(3 * sigma), y, k;
    for (y = 0; y < n; ++y) {
        double acc = 0, ws = 0;
        for (k = -rad; k <= rad; ++k) {
            double wk = exp(-0.5 * k * k / ((double)sigma * sigma));
            if (y + k >= 0 && y + k < n) { acc += wk * in[y + k]; ws += wk; }
        }
        out[y] = (float)(acc / ws);
    }
}

/* order[0..n) (component indices) sorted by (line, x0, index); insertion sort: a page has
   at most a few thousand letters */
static void seg__sort_by_line_x(int *order, int n, const seg_comp *c) {
    int a, b;
    for (a = 1; a < n; ++a) {
        int v = order[a];
        b = a - 1;
        while (b >= 0 && (c[order[b]].line > c[v].line ||
                          (c[order[b]].line == c[v].line && (c[order[b]].x0 > c[v].x0 ||
                           (c[order[b]].x0 == c[v].x0 && order[b] > v))))) {
            order[b + 1] = order[b]; --b;
        }
        order[b + 1] = v;
    }
}

/* Word gap threshold in px from the gaps between components of the page's lines.
   1. A two-class Otsu split (letter gaps / word gaps) of log(gap): the log keeps a few very
      wide gaps from pulling the split up; gaps over 3 x-heights (word gaps anyway) are left out.
   2. Refined to the largest relative jump between consecutive sorted gaps, (g[k] + c) /
      (g[k-1] + c) with c = x-height / 5, among the jumps that reach within a factor 2 of
      that split:
      the emptiest stretch of the distribution, where Otsu alone lands too low when one class
      is much more spread than the other.
   Used when the classes are apart (geometric means a factor 2 apart, or a jump of 1.3 or
   more), kept within [0.15, 1.5] x-heights; else (one class only) half an x-height. */
static float seg__gap_threshold(const float *gaps, int n, float xh) {
    float *g = (float *)malloc(sizeof(float) * (size_t)(n ? n : 1)), T = 0.5f * xh, t0;
    double tot = 0, left = 0, best = -1, m0 = 0, m1 = 0, cst = 0.2 * xh, best_jump = 0;
    int k, m = 0, best_k = -1;
    if (!g) return T;
    for (k = 0; k < n; ++k) if (gaps[k] <= 3.0f * xh) g[m++] = gaps[k];
    qsort(g, (size_t)m, sizeof(float), seg__cmp_float);
    for (k = 0; k < m; ++k) tot += log(g[k]);
    for (k = 1; k < m; ++k) {                 /* classes g[0..k) and g[k..m) */
        double ma, mb, bv;
        left += log(g[k - 1]);
        if (g[k] == g[k - 1]) continue;
        ma = left / k; mb = (tot - left) / (m - k);
        bv = (double)k * (m - k) * (mb - ma) * (mb - ma);
        if (bv > best) { best = bv; best_k = k; m0 = ma; m1 = mb; }
    }
    if (best_k > 0) {
        int split = best_k;
        t0 = 0.5f * (g[best_k - 1] + g[best_k]);
        for (k = 1; k < m; ++k) {
            double jump = (g[k] + cst) / (g[k - 1] + cst);
            if (g[k - 1] > 2.0f * t0 || g[k] < 0.5f * t0) continue;   /* jumps across [t0/2, 2 t0] */
            if (jump > best_jump) { best_jump = jump; split = k; }
        }
        if (m1 - m0 >= log(2.0) || best_jump >= 1.3)
            T = seg__clampf(0.5f * (g[split - 1] + g[split]), 0.15f * xh, 1.5f * xh);
    }
    free(g);
    return T;
}

/* ---- the whole segmentation --------------------------------------------------------------- */
/* gray [h][w], 1 = paper. Returns 0, or -1 with r->error set. r must be freed with seg_free
   in both cases. */
SEG_DEF int seg_segment(seg_result *r, const float *gray, int w, int h, const seg_params *p) {
    float *norm = NULL, *prof = NULL, *sm = NULL, *gaps = NULL, *gapv;
    uint8_t *ink0 = NULL;
    int *label0 = NULL, *peaks = NULL, *cuts = NULL, *order = NULL, *rowl = NULL, *rowr;
    seg_comp *c0 = NULL, *c;
    int nc0, nc, j, y, npk, i, rc = -1, nl, ngaps = 0, window;
    float hmed, xh, sigma;
    memset(r, 0, sizeof *r);
    r->in_w = w; r->in_h = h;
    if (w < SEG_MIN_SIDE || h < SEG_MIN_SIDE) {
        snprintf(r->error, sizeof r->error, "image too small (%dx%d)", w, h);
        return -1;
    }
    norm = (float *)malloc(sizeof(float) * (size_t)w * h);
    ink0 = (uint8_t *)malloc((size_t)w * h);
    label0 = (int *)malloc(sizeof(int) * (size_t)w * h);
    if (!norm || !ink0 || !label0 || seg_normalize_background(norm, gray, w, h)) goto oom;

    /* pass 0: Otsu with the contrast floor, to measure the text size */
    {
        seg_params p0 = *p;
        p0.binarize = SEG_OTSU;
        nc0 = seg__ink_pass(r, norm, w, h, &p0, 0, ink0, label0, &c0);
        if (nc0 < 0) goto oom;
        if (nc0 == 0) { snprintf(r->error, sizeof r->error, "no ink found (blank page, or contrast below %.2f)", p->min_contrast); goto fail; }
        hmed = seg__weighted_median_height(c0, nc0);
        window = p->window > 0 ? p->window : (int)(2 * hmed);
        window = seg__clampi(window | 1, 15, 401);
        r->window = window;
        if (p->binarize != SEG_OTSU) {
            free(c0); c0 = NULL;
            nc0 = seg__ink_pass(r, norm, w, h, p, window, ink0, label0, &c0);
            if (nc0 < 0) goto oom;
            if (nc0 == 0) { snprintf(r->error, sizeof r->error, "no ink found (blank page, or contrast below %.2f)", p->min_contrast); goto fail; }
        }
    }

    /* deskew */
    r->angle = p->deskew ? seg_estimate_skew(ink0, w, h, p->max_angle) : 0.0f;
    {
        double a = r->angle * SEG_PI / 180.0, ca = fabs(cos(a)), sa = fabs(sin(a));
        r->w = (int)ceil(w * ca + h * sa - 1e-6);
        r->h = (int)ceil(w * sa + h * ca - 1e-6);
        if (r->angle == 0.0f) { r->w = w; r->h = h; }
    }
    r->page = (float *)malloc(sizeof(float) * (size_t)r->w * r->h);
    r->ink = (uint8_t *)malloc((size_t)r->w * r->h);
    r->label = (int *)malloc(sizeof(int) * (size_t)r->w * r->h);
    if (!r->page || !r->ink || !r->label) goto oom;
    for (y = 0; y < r->h; ++y) {
        int x;
        for (x = 0; x < r->w; ++x) {
            float ix, iy;
            seg_to_input(r, (float)x + 0.5f, (float)y + 0.5f, &ix, &iy);
            r->page[(size_t)y * r->w + x] = seg__sample(norm, w, h, ix, iy, 1.0f);
        }
    }
    free(c0); c0 = NULL;
    free(ink0); ink0 = NULL; free(label0); label0 = NULL;
    nc = seg__ink_pass(r, r->page, r->w, r->h, p, window, r->ink, r->label, &r->comps);
    if (nc < 0) goto oom;
    r->ncomp = nc;
    c = r->comps;
    if (nc == 0) { snprintf(r->error, sizeof r->error, "no ink found after deskew"); goto fail; }
    hmed = seg__weighted_median_height(c, nc);
    r->text_height = hmed;

    /* lines: a density of component centroids (each adds its area at its centroid row),
       smoothed; its peaks are the lines. Unlike the ink profile, ascenders and descenders
       of neighbouring lines do not fill the valleys between them. Peaks closer than 0.8
       text heights, or not separated by a valley below half the smaller peak, are one
       line; the cuts lie in the middle of the lowest stretch between two lines. */
    prof = (float *)calloc((size_t)r->h, sizeof(float));
    sm = (float *)calloc((size_t)r->h, sizeof(float));
    peaks = (int *)malloc(sizeof(int) * (size_t)r->h);
    cuts = (int *)malloc(sizeof(int) * (size_t)(r->h + 1));
    if (!prof || !sm || !peaks || !cuts) goto oom;
    for (j = 0; j < nc; ++j) prof[seg__clampi((int)(c[j].sy / c[j].area + 0.5), 0, r->h - 1)] += (float)c[j].area;
    sigma = 0.15f * hmed;
    if (sigma < 1.0f) sigma = 1.0f;
    seg__smooth(sm, prof, r->h, sigma);
    {
        float mx = 0;
        for (y = 0; y < r->h; ++y) if (sm[y] > mx) mx = sm[y];
        npk = 0;
        for (y = 0; y < r->h; ++y) {
            float lft = y > 0 ? sm[y - 1] : 0, rgt = y + 1 < r->h ? sm[y + 1] : 0;
            if (sm[y] > lft && sm[y] >= rgt && sm[y] > 1e-3f * mx) peaks[npk++] = y;
        }
    }
    {
        int merged = 1;
        while (merged && npk > 1) {
            merged = 0;
            for (i = 0; i + 1 < npk; ++i) {
                int a = peaks[i], b = peaks[i + 1];
                float valley = sm[a], lo = sm[a] < sm[b] ? sm[a] : sm[b];
                for (y = a; y <= b; ++y) if (sm[y] < valley) valley = sm[y];
                if ((float)(b - a) < 0.8f * hmed || valley > 0.5f * lo) {
                    peaks[i] = sm[a] >= sm[b] ? a : b;
                    memmove(peaks + i + 1, peaks + i + 2, sizeof(int) * (size_t)(npk - i - 2));
                    --npk; merged = 1;
                    break;
                }
            }
        }
    }
    cuts[0] = 0;
    for (i = 0; i + 1 < npk; ++i) {
        int a = peaks[i], b = peaks[i + 1], first = a, last = a;
        float lo = sm[a];
        for (y = a; y <= b; ++y) {
            if (sm[y] < lo) { lo = sm[y]; first = last = y; }
            else if (sm[y] == lo) last = y;
        }
        cuts[i + 1] = (first + last + 1) / 2;
    }
    cuts[npk] = r->h;
    /* components -> lines by centroid (minor ones are re-assigned below) */
    for (j = 0; j < nc; ++j) {
        float cy = (float)(c[j].sy / c[j].area) + 0.5f;
        c[j].line = npk - 1;
        for (i = 0; i < npk; ++i) if (cy < (float)cuts[i + 1]) { c[j].line = i; break; }
    }

    /* x-height: per line, the ink profile of the line's own components (lightly smoothed);
       the band around its maximum where it stays >= half the maximum */
    {
        float *xs = (float *)malloc(sizeof(float) * (size_t)(npk ? npk : 1));
        int nx = 0;
        if (!xs) goto oom;
        for (i = 0; i < npk; ++i) {
            int a, b, top = -1, lo_y = r->h, hi_y = 0;
            memset(prof, 0, sizeof(float) * (size_t)r->h);
            for (j = 0; j < nc; ++j) if (c[j].line == i) {
                int x;
                if (c[j].y0 < lo_y) lo_y = c[j].y0;
                if (c[j].y1 > hi_y) hi_y = c[j].y1;
                for (y = c[j].y0; y < c[j].y1; ++y)
                    for (x = c[j].x0; x < c[j].x1; ++x) prof[y] += (float)(r->label[(size_t)y * r->w + x] == j);
            }
            if (lo_y >= hi_y) continue;
            seg__smooth(sm, prof, r->h, 1.0f + 0.03f * hmed);
            for (y = lo_y; y < hi_y; ++y) if (top < 0 || sm[y] > sm[top]) top = y;
            a = b = top;
            while (a > lo_y && sm[a - 1] >= 0.5f * sm[top]) --a;
            while (b + 1 < hi_y && sm[b + 1] >= 0.5f * sm[top]) ++b;
            xs[nx++] = (float)(b - a + 1);
        }
        xh = seg__quantile(xs, nx, 0.5f);
        free(xs);
        if (xh < 2) xh = 2;
        r->xheight = xh;
    }

    /* major components -> line by centroid; minor ones follow their nearest major one */
    for (j = 0; j < nc; ++j) {
        int cw = c[j].x1 - c[j].x0, ch = c[j].y1 - c[j].y0;
        c[j].major = (cw > ch ? cw : ch) >= 0.45f * xh;
        c[j].word = -1;
        if (!c[j].major) c[j].line = -1;
    }
    /* renumber lines that have a major component, top to bottom */
    {
        int *map = (int *)malloc(sizeof(int) * (size_t)(npk ? npk : 1));
        if (!map) goto oom;
        for (i = 0; i < npk; ++i) map[i] = 0;
        for (j = 0; j < nc; ++j) if (c[j].line >= 0) map[c[j].line] = 1;
        nl = 0;
        for (i = 0; i < npk; ++i) map[i] = map[i] ? nl++ : -1;
        for (j = 0; j < nc; ++j) if (c[j].line >= 0) c[j].line = map[c[j].line];
        free(map);
    }
    r->nlines = nl;
    if (nl == 0) { snprintf(r->error, sizeof r->error, "no text lines found"); goto fail; }

    /* words: per line, major components in x order. The gap in front of a component is the
       horizontal distance from its ink to the ink on its left in the same rows (within a
       quarter x-height up or down), so overhangs (the bar of a T, the tail of a j or f) do
       not shorten gaps as bounding boxes would; components interleaved with the ink on
       their left have no gap. The page's gaps are split into letter gaps and word gaps. */
    order = (int *)malloc(sizeof(int) * (size_t)nc);
    gaps = (float *)malloc(sizeof(float) * (size_t)nc * 2);
    rowl = (int *)malloc(sizeof(int) * (size_t)r->h * 2);
    if (!order || !gaps || !rowl) goto oom;
    gapv = gaps + nc;
    rowr = rowl + r->h;
    {
        int no = 0, curl = -1, wi = 0, wcount = 0, d = (int)(0.25f * xh + 0.5f), curx1 = 0;
        float T;
        for (j = 0; j < nc; ++j) if (c[j].major) order[no++] = j;
        seg__sort_by_line_x(order, no, c);
        for (i = 0; i < no; ++i) {
            int jj = order[i], x, dy;
            const seg_comp *k = &c[jj];
            float g = 1e30f;
            if (k->line != curl) {
                curl = k->line;
                for (y = 0; y < r->h; ++y) rowr[y] = -1;
                curx1 = k->x1;
            }
            for (y = k->y0; y < k->y1; ++y) {              /* leftmost ink of k per row */
                rowl[y] = -1;
                for (x = k->x0; x < k->x1; ++x) if (r->label[(size_t)y * r->w + x] == jj) { rowl[y] = x; break; }
            }
            if (i == 0 || c[order[i - 1]].line != k->line) gapv[i] = -1.0f;
            else {
                for (y = k->y0; y < k->y1; ++y) if (rowl[y] >= 0)
                    for (dy = -d; dy <= d; ++dy) {
                        int yy = y + dy;
                        if (yy >= 0 && yy < r->h && rowr[yy] >= 0 && (float)(rowl[y] - rowr[yy] - 1) < g)
                            g = (float)(rowl[y] - rowr[yy] - 1);
                    }
                if (g == 1e30f) g = (float)(k->x0 - curx1);   /* no rows in common: boxes */
                gapv[i] = g;
                if (g > 0) gaps[ngaps++] = g;
            }
            for (y = k->y0; y < k->y1; ++y)                  /* rightmost ink so far per row */
                for (x = k->x1 - 1; x >= k->x0; --x) if (r->label[(size_t)y * r->w + x] == jj) {
                    if (x > rowr[y]) rowr[y] = x;
                    break;
                }
            if (k->x1 > curx1) curx1 = k->x1;
        }
        if (p->word_gap > 0) T = p->word_gap * xh;
        else T = seg__gap_threshold(gaps, ngaps, xh);
        r->gap_threshold = T;
        curl = -1;
        for (i = 0; i < no; ++i) {
            seg_comp *k = &c[order[i]];
            if (k->line != curl) { curl = k->line; wi = 0; ++wcount; }
            else if (gapv[i] > T) { ++wi; ++wcount; }
            k->word = wi;
        }
        r->nwords = wcount;
    }

    /* minor components: with the nearest major component within 1.5 x-heights */
    for (j = 0; j < nc; ++j) if (!c[j].major) {
        float bestd = 1.5f * xh + 1e-3f;
        int bj = -1, k;
        for (k = 0; k < nc; ++k) if (c[k].major) {
            float d = seg__box_dist(&c[j], &c[k]);
            if (d < bestd) { bestd = d; bj = k; }
        }
        if (bj >= 0) { c[j].line = c[bj].line; c[j].word = c[bj].word; }
    }
    /* dropped minors leave the ink mask */
    {
        size_t q, n = (size_t)r->w * r->h;
        for (q = 0; q < n; ++q) if (r->label[q] >= 0 && c[r->label[q]].line < 0) { r->ink[q] = 0; r->label[q] = -1; }
    }

    /* word boxes */
    r->words = (seg_word *)malloc(sizeof(seg_word) * (size_t)(r->nwords ? r->nwords : 1));
    if (!r->words) goto oom;
    {
        int n = 0, l, margin = p->margin >= 0 ? p->margin : (int)(xh / 6);
        /* auto margin: at least the mask dilation of seg_word_image + 2, so the word image
           has a clean border */
        int rad = seg__clampi((int)(0.5f * r->stroke + 0.5f), 1, 3);
        if (p->margin < 0 && margin < rad + 2) margin = rad + 2;
        r->margin = margin;
        for (l = 0; l < nl; ++l) {
            int wi;
            for (wi = 0;; ++wi) {
                seg_word *wd = &r->words[n];
                int found = 0;
                if (n >= r->nwords) break;
                wd->x0 = r->w; wd->y0 = r->h; wd->x1 = 0; wd->y1 = 0;
                for (j = 0; j < nc; ++j) if (c[j].line == l && c[j].word == wi) {
                    found = 1;
                    if (c[j].x0 < wd->x0) wd->x0 = c[j].x0;
                    if (c[j].y0 < wd->y0) wd->y0 = c[j].y0;
                    if (c[j].x1 > wd->x1) wd->x1 = c[j].x1;
                    if (c[j].y1 > wd->y1) wd->y1 = c[j].y1;
                }
                if (!found) break;
                wd->x0 = seg__clampi(wd->x0 - margin, 0, r->w); wd->y0 = seg__clampi(wd->y0 - margin, 0, r->h);
                wd->x1 = seg__clampi(wd->x1 + margin, 0, r->w); wd->y1 = seg__clampi(wd->y1 + margin, 0, r->h);
                wd->line = l; wd->index = wi;
                ++n;
            }
        }
        r->nwords = n;
    }
    rc = 0;
    goto done;
oom:
    snprintf(r->error, sizeof r->error, "out of memory");
fail:
    rc = -1;
done:
    free(norm); free(ink0); free(label0); free(c0); free(prof); free(sm); free(peaks); free(cuts);
    free(order); free(gaps); free(rowl);
    (void)y;
    return rc;
}

/* ---- word images ---------------------------------------------------------------------------- */
/* Word i as ink-bright uint8 [out_h][*out_w] (malloc'd): background 0, ink up to 255. */
SEG_DEF uint8_t *seg_word_image(const seg_result *r, int i, int out_h, int *out_w) {
    const seg_word *wd = &r->words[i];
    int bw = wd->x1 - wd->x0, bh = wd->y1 - wd->y0, x, y, rad, n_ink = 0, n_bg = 0, ow;
    float *d, *res, *vals, lo, hi;
    uint8_t *mask, *out;
    double bs = 0, bq = 0;
    if (bw <= 0 || bh <= 0) return NULL;
    rad = seg__clampi((int)(0.5f * r->stroke + 0.5f), 1, 3);
    d = (float *)malloc(sizeof(float) * (size_t)bw * bh);
    vals = (float *)malloc(sizeof(float) * (size_t)bw * bh);
    mask = (uint8_t *)calloc((size_t)bw * bh, 1);
    ow = (int)((double)bw * out_h / bh + 0.5);
    if (ow < 1) ow = 1;
    res = (float *)malloc(sizeof(float) * (size_t)ow * out_h);
    out = (uint8_t *)malloc((size_t)ow * out_h);
    if (!d || !vals || !mask || !res || !out) { free(d); free(vals); free(mask); free(res); free(out); return NULL; }
    /* mask = the word's own ink dilated by rad, not covering other components' ink */
    for (y = 0; y < bh; ++y) for (x = 0; x < bw; ++x) {
        int l = r->label[(size_t)(wd->y0 + y) * r->w + wd->x0 + x];
        if (l >= 0 && r->comps[l].line == wd->line && r->comps[l].word == wd->index) {
            int dx, dy;
            for (dy = -rad; dy <= rad; ++dy) for (dx = -rad; dx <= rad; ++dx) {
                int xx = x + dx, yy = y + dy, l2;
                if (xx < 0 || yy < 0 || xx >= bw || yy >= bh) continue;
                l2 = r->label[(size_t)(wd->y0 + yy) * r->w + wd->x0 + xx];
                if (l2 >= 0 && !(r->comps[l2].line == wd->line && r->comps[l2].word == wd->index)) continue;
                mask[(size_t)yy * bw + xx] = 1;
            }
            vals[n_ink++] = 1.0f - r->page[(size_t)(wd->y0 + y) * r->w + wd->x0 + x];
        }
    }
    for (y = 0; y < bh; ++y) for (x = 0; x < bw; ++x) {
        float dv = 1.0f - r->page[(size_t)(wd->y0 + y) * r->w + wd->x0 + x];
        d[(size_t)y * bw + x] = dv;
        if (!mask[(size_t)y * bw + x]) { bs += dv; bq += (double)dv * dv; ++n_bg; }
    }
    /* stretch: the paper noise level -> 0, the 95th percentile of the ink -> 1 */
    lo = 0.0f;
    if (n_bg) {
        double m = bs / n_bg, v = bq / n_bg - m * m;
        lo = (float)(m + 2.0 * (v > 0 ? sqrt(v) : 0.0));
        if (lo < 0) lo = 0;
    }
    hi = seg__quantile(vals, n_ink, 0.95f);
    if (hi < lo + 0.1f) hi = lo + 0.1f;
    for (y = 0; y < bh; ++y) for (x = 0; x < bw; ++x) {
        size_t q = (size_t)y * bw + x;
        d[q] = mask[q] ? seg__clampf((d[q] - lo) / (hi - lo), 0.0f, 1.0f) : 0.0f;
    }
    if (seg_resize(res, ow, out_h, d, bw, bh)) { free(d); free(vals); free(mask); free(res); free(out); return NULL; }
    for (x = 0; x < ow * out_h; ++x) out[x] = (uint8_t)(seg__clampf(res[x], 0.0f, 1.0f) * 255.0f + 0.5f);
    free(d); free(vals); free(mask); free(res);
    *out_w = ow;
    return out;
}

/* ---- overview ------------------------------------------------------------------------------- */
static void seg__dot(uint8_t *rgb, int w, int h, int x, int y, int t, const uint8_t col[3]) {
    int dx, dy;
    for (dy = 0; dy < t; ++dy) for (dx = 0; dx < t; ++dx) {
        int xx = x + dx - t / 2, yy = y + dy - t / 2;
        if (xx < 0 || yy < 0 || xx >= w || yy >= h) continue;
        memcpy(rgb + ((size_t)yy * w + xx) * 3, col, 3);
    }
}
static void seg__line(uint8_t *rgb, int w, int h, float x0, float y0, float x1, float y1, int t, const uint8_t col[3]) {
    float len = sqrtf((x1 - x0) * (x1 - x0) + (y1 - y0) * (y1 - y0));
    int n = (int)(len + 1), k;
    for (k = 0; k <= n; ++k) {
        float a = (float)k / (float)n;
        seg__dot(rgb, w, h, (int)floorf(x0 + a * (x1 - x0)), (int)floorf(y0 + a * (y1 - y0)), t, col);
    }
}

/* RGB [in_h][in_w][3] (malloc'd): the input page with each word's box (mapped back through
   the deskew) and its "line.word" label, one colour per line. */
SEG_DEF uint8_t *seg_overview(const seg_result *r, const float *gray) {
    static const uint8_t pal[6][3] = { {230, 25, 75}, {0, 130, 200}, {60, 180, 75}, {245, 130, 48},
                                       {145, 30, 180}, {0, 160, 160} };
    int W = r->in_w, H = r->in_h, i, t, fs;
    uint8_t *rgb = (uint8_t *)malloc((size_t)W * H * 3);
    static char vbuf[64 * 270];
    if (!rgb) return NULL;
    for (i = 0; i < W * H; ++i) {
        uint8_t v = (uint8_t)(seg__clampf(gray[i], 0.0f, 1.0f) * 255.0f + 0.5f);
        rgb[(size_t)i * 3] = rgb[(size_t)i * 3 + 1] = rgb[(size_t)i * 3 + 2] = v;
    }
    t = (W > H ? W : H) / 700 + 1;
    fs = (int)(r->xheight / 14.0f + 0.5f);
    if (fs < 1) fs = 1;
    for (i = 0; i < r->nwords; ++i) {
        const seg_word *wd = &r->words[i];
        const uint8_t *col = pal[wd->line % 6];
        float px[4], py[4], us[4], vs[4];
        int k, nq;
        char text[32];
        us[0] = (float)wd->x0; vs[0] = (float)wd->y0; us[1] = (float)wd->x1; vs[1] = (float)wd->y0;
        us[2] = (float)wd->x1; vs[2] = (float)wd->y1; us[3] = (float)wd->x0; vs[3] = (float)wd->y1;
        for (k = 0; k < 4; ++k) seg_to_input(r, us[k], vs[k], &px[k], &py[k]);
        for (k = 0; k < 4; ++k) seg__line(rgb, W, H, px[k], py[k], px[(k + 1) % 4], py[(k + 1) % 4], t, col);
        /* label above the top-left corner (stb_easy_font quads, scaled by fs) */
        snprintf(text, sizeof text, "%d.%d", wd->line, wd->index);
        nq = stb_easy_font_print(0, 0, text, NULL, vbuf, (int)sizeof vbuf);
        {   /* a light backing, so that labels stay legible over ink and other boxes */
            int tw = stb_easy_font_width(text), xx, yy;
            int lx0 = (int)px[0] - fs, lx1 = (int)px[0] + (tw + 1) * fs;
            int ly0 = (int)py[0] - 9 * fs - t - fs, ly1 = (int)py[0] - 9 * fs - t + 8 * fs;
            for (yy = ly0; yy < ly1; ++yy) for (xx = lx0; xx < lx1; ++xx)
                if (xx >= 0 && yy >= 0 && xx < W && yy < H) {
                    uint8_t *q = rgb + ((size_t)yy * W + xx) * 3;
                    q[0] = (uint8_t)((q[0] + 3 * 255) / 4); q[1] = (uint8_t)((q[1] + 3 * 255) / 4); q[2] = (uint8_t)((q[2] + 3 * 255) / 4);
                }
        }
        for (k = 0; k < nq; ++k) {
            float v0[2], v2[2];
            int qx0, qy0, qx1, qy1, xx, yy;
            memcpy(v0, vbuf + (size_t)k * 64, sizeof v0);          /* vertex 0: top left */
            memcpy(v2, vbuf + (size_t)k * 64 + 32, sizeof v2);     /* vertex 2: bottom right */
            qx0 = (int)(px[0] + v0[0] * fs); qy0 = (int)(py[0] - 9 * fs - t + v0[1] * fs);
            qx1 = (int)(px[0] + v2[0] * fs); qy1 = (int)(py[0] - 9 * fs - t + v2[1] * fs);
            for (yy = qy0; yy < qy1; ++yy) for (xx = qx0; xx < qx1; ++xx)
                if (xx >= 0 && yy >= 0 && xx < W && yy < H) memcpy(rgb + ((size_t)yy * W + xx) * 3, col, 3);
        }
    }
    return rgb;
}

/* ---- files ------------------------------------------------------------------------------------ */
/* Writes DIR/word_LLL_WWW.png (dark ink on white), DIR/transcriptions.txt and DIR/overview.png.
   DIR must exist. An existing transcriptions.txt is kept unless overwrite is set (the user
   may have typed into it). Returns 0, or -1 with err set. */
SEG_DEF int seg_write_outputs(const seg_result *r, const float *gray, const char *dir, int out_h,
                              int overwrite, char *err, int errcap) {
    char path[4096];
    FILE *tf;
    int i;
    uint8_t *ov;
    snprintf(path, sizeof path, "%s/transcriptions.txt", dir);
    tf = fopen(path, "rb");
    if (tf && !overwrite) {
        fclose(tf);
        seg__errf(err, errcap, "'%s' exists (it may hold your transcriptions); use --force to overwrite", path);
        return -1;
    }
    if (tf) fclose(tf);
    tf = fopen(path, "wb");
    if (!tf) { seg__errf(err, errcap, "cannot write '%s'", path); return -1; }
    for (i = 0; i < r->nwords; ++i) {
        int ow = 0, k;
        uint8_t *img = seg_word_image(r, i, out_h, &ow);
        char name[64];
        if (!img) { fclose(tf); seg__errf(err, errcap, "word %d: out of memory", i); return -1; }
        for (k = 0; k < ow * out_h; ++k) img[k] = (uint8_t)(255 - img[k]);
        snprintf(name, sizeof name, "word_%03d_%03d.png", r->words[i].line, r->words[i].index);
        snprintf(path, sizeof path, "%s/%s", dir, name);
        if (!stbi_write_png(path, ow, out_h, 1, img, ow)) {
            free(img); fclose(tf);
            seg__errf(err, errcap, "cannot write '%s'", path);
            return -1;
        }
        free(img);
        fprintf(tf, "%s\t\n", name);
    }
    if (fclose(tf)) { seg__errf(err, errcap, "cannot write '%s/transcriptions.txt'", dir); return -1; }
    ov = seg_overview(r, gray);
    snprintf(path, sizeof path, "%s/overview.png", dir);
    if (!ov || !stbi_write_png(path, r->in_w, r->in_h, 3, ov, r->in_w * 3)) {
        free(ov);
        seg__errf(err, errcap, "cannot write '%s'", path);
        return -1;
    }
    free(ov);
    return 0;
}

/* ---- transcriptions -> dataset (only when higan.h with the dataset API came first) -------- */
#ifdef HIGAN_H   /* the dataset container of higan.h */
/* Reads a transcriptions file ("IMAGE<TAB>WORD" per line; IMAGE relative to the file's
   folder; blank lines and lines starting with '#' ignored; lines whose WORD is empty are
   skipped and counted in *skipped) and appends each word image to ds with writer id wid.
   Images are read as grayscale dark ink on light paper (the PNGs seg_write_outputs writes),
   scaled to height 64 when they are not, and inverted to ink-bright. Returns the number
   appended, or -1 with err naming the file and line. */
SEG_DEF int seg_dataset_from_transcriptions(higan_dataset *ds, const char *txt_path, int wid,
                                            int *skipped, char *err, int errcap) {
    FILE *f = fopen(txt_path, "rb");
    char line[4096], dir[4096], path[8192];
    const char *slash = strrchr(txt_path, '/');
    int lineno = 0, added = 0;
    if (skipped) *skipped = 0;
    if (!f) { seg__errf(err, errcap, "cannot open '%s'", txt_path); return -1; }
    if (slash) {
        size_t n = (size_t)(slash - txt_path);
        if (n >= sizeof dir) n = sizeof dir - 1;
        memcpy(dir, txt_path, n); dir[n] = 0;
    } else strcpy(dir, ".");
    while (fgets(line, sizeof line, f)) {
        char *tab, *word, *end;
        int w, h, ch, k, ow;
        unsigned char *px;
        uint8_t *img;
        higan_status st;
        ++lineno;
        end = line + strlen(line);
        while (end > line && (end[-1] == '\n' || end[-1] == '\r' || end[-1] == ' ' || end[-1] == '\t')) *--end = 0;
        if (!line[0] || line[0] == '#') continue;
        tab = strchr(line, '\t');
        if (!tab) {
            /* "name.png" alone: nothing typed yet (the trailing tab was trimmed) */
            if (strchr(line, ' ') == NULL) { if (skipped) ++*skipped; continue; }
            seg__errf(err, errcap, "%s:%d: expected IMAGE<TAB>WORD", txt_path, lineno);
            fclose(f); return -1;
        }
        *tab = 0;
        word = tab + 1;
        while (*word == ' ' || *word == '\t') ++word;
        if (!*word) { if (skipped) ++*skipped; continue; }
        if (line[0] == '/') snprintf(path, sizeof path, "%s", line);
        else snprintf(path, sizeof path, "%s/%s", dir, line);
        px = stbi_load(path, &w, &h, &ch, 1);
        if (!px) {
            seg__errf(err, errcap, "%s:%d: cannot read image '%s' (%s)", txt_path, lineno, path, stbi_failure_reason());
            fclose(f); return -1;
        }
        if (h == HIGAN_DATASET_HEIGHT) {
            ow = w;
            img = (uint8_t *)malloc((size_t)w * h);
            if (img) for (k = 0; k < w * h; ++k) img[k] = (uint8_t)(255 - px[k]);
        } else {
            float *src = (float *)malloc(sizeof(float) * (size_t)w * h), *dst;
            ow = (int)((double)w * HIGAN_DATASET_HEIGHT / h + 0.5);
            if (ow < 1) ow = 1;
            dst = (float *)malloc(sizeof(float) * (size_t)ow * HIGAN_DATASET_HEIGHT);
            img = (uint8_t *)malloc((size_t)ow * HIGAN_DATASET_HEIGHT);
            if (src && dst && img) {
                for (k = 0; k < w * h; ++k) src[k] = (float)(255 - px[k]);
                if (seg_resize(dst, ow, HIGAN_DATASET_HEIGHT, src, w, h)) { free(img); img = NULL; }
                else for (k = 0; k < ow * HIGAN_DATASET_HEIGHT; ++k)
                    img[k] = (uint8_t)seg__clampf(dst[k] + 0.5f, 0.0f, 255.0f);
            } else { free(img); img = NULL; }
            free(src); free(dst);
        }
        stbi_image_free(px);
        if (!img) { seg__errf(err, errcap, "%s:%d: out of memory", txt_path, lineno); fclose(f); return -1; }
        st = higan_dataset_append(ds, img, ow, word, wid);
        free(img);
        if (st != HIGAN_OK) {
            seg__errf(err, errcap, "%s:%d: %s", txt_path, lineno, higan_last_error());
            fclose(f); return -1;
        }
        ++added;
    }
    fclose(f);
    return added;
}
#endif

#endif /* HIGAN_SEGMENT_H */
