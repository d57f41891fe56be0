/* synthetic.h - a synthetic multi-writer handwriting dataset rendered from handwriting fonts
   with stb_truetype, written in HiGAN+'s dataset layout (higan_dataset: 64 px high word images,
   ink bright on 0). Used by data_tools/make_synthetic.c and tests/test_synthetic.c.

   Include it after higan.h (with HIGAN_IMPLEMENTATION in that file):
       #define HIGAN_IMPLEMENTATION
       #include "higan.h"
       #include "data_tools/synthetic.h"
   Everything here is static (syn_ prefix). Needs <stb/stb_truetype.h> (Debian: libstb-dev).

   Model. Every font file is one base writer; --variants K gives K writers per font. A writer
   has fixed traits drawn from (seed, font file name, variant): the fraction of the 64 px that
   the font's ascender-to-descender box takes (size), slant, stroke weight, horizontal width,
   letter spacing, baseline wobble, ink intensity, pen pressure and grain, blur and paper noise.
   Every word adds small jitter from its own generator seeded by (seed, writer, word index),
   so the output does not depend on the thread count or the order of rendering, and one seed
   gives byte-identical files.

   Rendering of one word (all geometry at SYN_SS x supersampling, then area-resampled):
     glyphs (stbtt, subpixel positions, font kerning, letter spacing) -> shear (slant) and a
     smooth baseline wobble (inverse-mapped, bilinear) -> stroke weight (grey dilation or
     erosion with a fractional disc) -> crop: horizontally to the ink plus a margin,
     vertically to the font's body box (top of b/d/h/k/l/capitals to the bottom of g/j/p/q/y)
     united with the word's ink, padded so that the body box takes `size` of the height ->
     resample to height 64 keeping the aspect -> gaussian blur -> ink intensity, pressure and
     grain -> paper noise -> 8 bits. Heights therefore vary naturally: a word with a tall
     capital or a deep descender gets smaller letters, as in IAM's word crops. */
#ifndef HIGAN_SYNTHETIC_H
#define HIGAN_SYNTHETIC_H

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

/* No fused multiply-adds: the files must not depend on -march (GCC keeps them off in ISO C
   modes such as -std=c99; clang would contract within expressions). */
#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#endif

#define STBTT_STATIC
#define STB_TRUETYPE_IMPLEMENTATION
#if defined(__GNUC__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wunused-function"
#pragma GCC diagnostic ignored "-Wsign-compare"
#pragma GCC diagnostic ignored "-Wunused-parameter"
#endif
#include <stb/stb_truetype.h>
#if defined(__GNUC__)
#pragma GCC diagnostic pop
#endif

#if defined(__GNUC__)
#define SYN_DEF static __attribute__((unused))   /* a program need not use every function */
#else
#define SYN_DEF static
#endif
#define SYN_SS 2               /* supersampling factor of the geometry */
#define SYN_MIN_WORD 2         /* word lengths kept from the word list */
#define SYN_MAX_WORD 19
#define SYN_DEFAULT_WORDS "/usr/share/dict/words"
#define SYN_PI 3.14159265358979f

/* ---- errors --------------------------------------------------------------------------- */
#if defined(__GNUC__)
static __thread char syn__err[1024];   /* per thread: words are rendered in parallel */
#else
static char syn__err[1024];
#endif
SYN_DEF const char *syn_last_error(void) { return syn__err; }
static int syn__fail(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(syn__err, sizeof syn__err, fmt, ap);
    va_end(ap);
    return -1;
}

/* ---- the default fonts: Debian packages, licences, quirks ------------------------------ */
typedef struct syn_font_entry {
    const char *path;
    const char *package;
    const char *licence;
    const char *avoid;      /* characters drawn badly (hollow outlines): words with them are skipped */
    int connected;          /* joined script: letter spacing and per-letter jitter stay tiny */
} syn_font_entry;
/* Joscelyn (fonts-joscelyn) is left out: its swashes dwarf the letters. breipfont.ttf is
   left out: a near-copy of Breip.ttf. DejaVu is not handwriting. */
static const syn_font_entry syn_default_fonts[] = {
    {"/usr/share/fonts/truetype/sjfonts/SteveHand.ttf", "fonts-sjfonts", "GPL-2 with font exception", "", 0},
    {"/usr/share/fonts/truetype/sjfonts/Delphine.ttf", "fonts-sjfonts", "GPL-2 with font exception", "", 0},
    {"/usr/share/fonts/truetype/kristi/Kristi.ttf", "fonts-kristi", "OFL-1.1", "", 0},
    {"/usr/share/fonts/truetype/fifthhorseman/dkg.ttf", "fonts-dkg-handwriting", "GPL-3+ (source also OFL-1.1)", "", 0},
    {"/usr/share/fonts/truetype/fifthhorseman/dkgBd.ttf", "fonts-dkg-handwriting", "GPL-3+ (source also OFL-1.1)", "", 0},
    {"/usr/share/fonts/truetype/fifthhorseman/dkgIt.ttf", "fonts-dkg-handwriting", "GPL-3+ (source also OFL-1.1)", "", 0},
    {"/usr/share/fonts/truetype/fifthhorseman/dkgBI.ttf", "fonts-dkg-handwriting", "GPL-3+ (source also OFL-1.1)", "", 0},
    {"/usr/share/fonts/truetype/breip/Breip.ttf", "fonts-breip", "OFL-1.0", "", 0},
    /* capitals, digits and some punctuation are hollow outlines: lower-case words only */
    {"/usr/share/fonts/truetype/femkeklaver/femkeklaver.ttf", "fonts-femkeklaver", "CC-BY-SA-3.0",
     "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789\"/+_!#&()?", 0},
    {"/usr/share/fonts/opentype/dancingscript/DancingScript-Regular.otf", "fonts-dancingscript", "OFL-1.1", "", 1},
    {"/usr/share/fonts/opentype/dancingscript/DancingScript-Bold.otf", "fonts-dancingscript", "OFL-1.1", "", 1},
    {"/usr/share/fonts/truetype/ecolier-court/Ecolier-court.ttf", "fonts-ecolier-court", "OFL-1.1", "", 1},
    {"/usr/share/fonts/truetype/klee/KleeOne-Regular.ttf", "fonts-klee", "OFL-1.1", "", 0},
    {"/usr/share/fonts/truetype/klee/KleeOne-SemiBold.ttf", "fonts-klee", "OFL-1.1", "", 0},
    {"/usr/share/fonts/truetype/rufscript/Rufscript010.ttf", "fonts-rufscript", "GPL-3+ with font exception", "", 0},
    {"/usr/share/fonts/opentype/kaushanscript/KaushanScript-Regular.otf", "fonts-kaushanscript", "OFL-1.1", "", 1},
    /* the following draw lower case as capitals: detected, their writers write in capitals */
    {"/usr/share/fonts/truetype/humor-sans/Humor-Sans.ttf", "fonts-humor-sans", "OFL-1.1", "", 0},
    {"/usr/share/fonts/opentype/bwht/BecauseWeBuild-Regular.otf", "fonts-bwht", "OFL-1.1", "", 0},
    {"/usr/share/fonts/opentype/bwht/BecauseWeConnect-Regular.otf", "fonts-bwht", "OFL-1.1", "", 0},
    {"/usr/share/fonts/opentype/bwht/BecauseWeCreate-Regular.otf", "fonts-bwht", "OFL-1.1", "", 0},
    {"/usr/share/fonts/opentype/bwht/BecauseWeLearn-Regular.otf", "fonts-bwht", "OFL-1.1", "", 0},
    {"/usr/share/fonts/opentype/bwht/BecauseWeMentor-Regular.otf", "fonts-bwht", "OFL-1.1", "", 0},
    {"/usr/share/fonts/opentype/bwht/BecauseWeOrganize-Regular.otf", "fonts-bwht", "OFL-1.1", "", 0},
};
#define SYN_N_DEFAULT_FONTS ((int)(sizeof syn_default_fonts / sizeof syn_default_fonts[0]))
SYN_DEF const syn_font_entry *syn_default_entry(const char *path) {
    int i;
    for (i = 0; i < SYN_N_DEFAULT_FONTS; ++i) if (!strcmp(syn_default_fonts[i].path, path)) return &syn_default_fonts[i];
    return NULL;
}
SYN_DEF int syn__file_exists(const char *path) {
    FILE *f = fopen(path, "rb");
    if (f) fclose(f);
    return f != NULL;
}

/* ---- hashing and generators ------------------------------------------------------------ */
static uint64_t syn__mix(uint64_t h, uint64_t v) {
    uint64_t z = h ^ (v + 0x9E3779B97F4A7C15ull + (h << 6) + (h >> 2));
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}
static uint64_t syn__hash_str(const char *s) {      /* FNV-1a */
    uint64_t h = 1469598103934665603ull;
    while (*s) { h ^= (unsigned char)*s++; h *= 1099511628211ull; }
    return h;
}
/* Tags keep the streams of different purposes apart. */
enum { SYN_TAG_WRITER = 1, SYN_TAG_WORD = 2, SYN_TAG_SHUFFLE = 3, SYN_TAG_PICK = 4, SYN_TAG_HELDOUT = 5 };
static void syn__rng(higan_rng *r, uint64_t seed, uint64_t tag, uint64_t a, uint64_t b) {
    higan_rng_seed(r, syn__mix(syn__mix(syn__mix(syn__mix(0x5EEDull, seed), tag), a), b));
}
static float syn__u(higan_rng *r, float lo, float hi) { return lo + (hi - lo) * higan_rng_uniform(r); }
static uint32_t syn__below(higan_rng *r, uint32_t n) {     /* uniform in [0, n), n >= 1 */
    return (uint32_t)(((higan_rng_u64(r) >> 32) * (uint64_t)n) >> 32);
}

/* ---- fonts ----------------------------------------------------------------------------- */
typedef struct syn_font {
    char *path;
    const char *name;        /* file name inside path */
    unsigned char *data;
    stbtt_fontinfo info;
    int caps_only;           /* lower case drawn as capitals (or missing): write words in capitals */
    int connected;
    char avoid[128];         /* characters this font cannot write well */
    float body_top, body_bottom;   /* font units, y up: ascender top and descender bottom */
    float stroke;            /* typical stroke thickness, font units */
    uint64_t key;            /* hash of the file name: traits do not depend on the font order */
} syn_font;

static float syn__median(float *v, int n) {
    int i, j;
    for (i = 1; i < n; ++i) { float x = v[i]; for (j = i; j > 0 && v[j - 1] > x; --j) v[j] = v[j - 1]; v[j] = x; }
    return n ? v[n / 2] : 0.0f;
}
static int syn__glyph(const syn_font *f, int c) { return stbtt_FindGlyphIndex(&f->info, c); }

/* Typical stroke thickness in font units: the median length of the horizontal ink runs
   (coverage >= 0.5) of a few letters drawn with the body box 128 px high. */
static float syn__measure_stroke(const syn_font *f) {
    const char *letters = "nlodiuNLOIH";
    int hist[129], total = 0, i, k, x, y;
    float sc = 128.0f / (f->body_top - f->body_bottom);
    memset(hist, 0, sizeof hist);
    for (i = 0; letters[i]; ++i) {
        int w, h, xo, yo, g = syn__glyph(f, letters[i]);
        unsigned char *bm;
        if (!g) continue;
        bm = stbtt_GetGlyphBitmap(&f->info, sc, sc, g, &w, &h, &xo, &yo);
        if (!bm) continue;
        for (y = 0; y < h; ++y)
            for (x = 0; x < w;) {
                int run = 0;
                while (x < w && bm[y * w + x] >= 128) { ++run; ++x; }
                if (run) { ++hist[run > 128 ? 128 : run]; ++total; }
                else ++x;
            }
        stbtt_FreeBitmap(bm, NULL);
    }
    if (!total) return 0.05f * (f->body_top - f->body_bottom);
    for (k = 0, i = 0; i <= 128; ++i) if ((k += hist[i]) * 2 >= total) break;
    return (float)i / sc;
}

SYN_DEF void syn_font_free(syn_font *f) {
    free(f->path); free(f->data);
    memset(f, 0, sizeof *f);
}
/* Loads a TrueType/OpenType font and measures it. Errors name the file. */
SYN_DEF int syn_font_load(syn_font *f, const char *path) {
    FILE *fp;
    long n;
    int i, k, x0, y0, x1, y1, top = 0, bottom = 0, have_lower = 1, offset;
    float ratios[32];
    const syn_font_entry *e;
    const char *slash;
    memset(f, 0, sizeof *f);
    if (!(fp = fopen(path, "rb"))) return syn__fail("cannot open font file '%s': %s", path, strerror(errno));
    if (fseek(fp, 0, SEEK_END) != 0 || (n = ftell(fp)) < 0 || fseek(fp, 0, SEEK_SET) != 0) {
        fclose(fp);
        return syn__fail("cannot read font file '%s'", path);
    }
    if (n < 12) { fclose(fp); return syn__fail("font file '%s' is not a TrueType/OpenType font (%ld bytes)", path, n); }
    f->data = (unsigned char *)malloc((size_t)n);
    if (!f->data) { fclose(fp); return syn__fail("out of memory reading font file '%s'", path); }
    if (fread(f->data, 1, (size_t)n, fp) != (size_t)n) {
        fclose(fp); syn_font_free(f);
        return syn__fail("cannot read font file '%s': %s", path, strerror(errno));
    }
    fclose(fp);
    offset = stbtt_GetFontOffsetForIndex(f->data, 0);
    if (offset < 0 || !stbtt_InitFont(&f->info, f->data, offset)) {
        syn_font_free(f);
        return syn__fail("font file '%s' is not a TrueType/OpenType font that stb_truetype can read", path);
    }
    f->path = (char *)malloc(strlen(path) + 1);
    if (!f->path) { syn_font_free(f); return syn__fail("out of memory"); }
    strcpy(f->path, path);
    slash = strrchr(f->path, '/');
    f->name = slash ? slash + 1 : f->path;
    f->key = syn__hash_str(f->name);
    if ((e = syn_default_entry(path)) != NULL) {
        f->connected = e->connected;
        strncpy(f->avoid, e->avoid, sizeof f->avoid - 1);
    }
    /* every letter needs a glyph; without lower case the font may still write capitals */
    for (i = 0; i < 26; ++i) {
        if (!syn__glyph(f, 'A' + i)) {
            syn_font_free(f);
            return syn__fail("font file '%s' has no glyph for '%c': it cannot write the alphabet", path, 'A' + i);
        }
        if (!syn__glyph(f, 'a' + i)) have_lower = 0;
    }
    /* Lower case drawn as capitals (fonts-bwht, Humor Sans): the median height ratio of
       x-height letters to their capitals is ~1 there and 0.33..0.87 in true lower case. */
    k = 0;
    if (have_lower) {
        const char *xs = "acemnorsuvwxz";
        for (i = 0; xs[i]; ++i) {
            int a0, b0, a1, b1;
            stbtt_GetCodepointBox(&f->info, xs[i], &x0, &y0, &x1, &y1);
            stbtt_GetCodepointBox(&f->info, xs[i] - 32, &a0, &b0, &a1, &b1);
            if (b1 > b0) ratios[k++] = (float)(y1 - y0) / (float)(b1 - b0);
        }
    }
    f->caps_only = !have_lower || (k > 0 && syn__median(ratios, k) >= 0.92f);
    /* body box: tallest ascender or capital, deepest descender (at least 20% of the top) */
    {
        const char *ups = f->caps_only ? "BDEFHKLT" : "bdfhklBDEFHKLT", *downs = f->caps_only ? "" : "gjpqy";
        for (i = 0; ups[i]; ++i)
            if (stbtt_GetCodepointBox(&f->info, ups[i], &x0, &y0, &x1, &y1) && y1 > top) top = y1;
        for (i = 0; downs[i]; ++i)
            if (stbtt_GetCodepointBox(&f->info, downs[i], &x0, &y0, &x1, &y1) && y0 < bottom) bottom = y0;
    }
    if (top <= 0) { syn_font_free(f); return syn__fail("font file '%s': letters have no height", path); }
    f->body_top = (float)top;
    f->body_bottom = (float)bottom < -0.2f * (float)top ? (float)bottom : -0.2f * (float)top;
    f->stroke = syn__measure_stroke(f);
    return 0;
}

/* 1 if the font writes every character of word (after upper-casing for caps-only fonts)
   with a real glyph and none it draws badly. */
SYN_DEF int syn_font_can_write(const syn_font *f, const char *word) {
    const unsigned char *s = (const unsigned char *)word;
    for (; *s; ++s) {
        int c = *s;
        if (f->caps_only && c >= 'a' && c <= 'z') c -= 32;
        if (c == ' ') continue;           /* a missing space glyph becomes a plain advance */
        if (strchr(f->avoid, c) || !syn__glyph(f, c)) return 0;
    }
    return 1;
}

/* ---- writers ---------------------------------------------------------------------------- */
typedef struct syn_writer {
    int font;          /* index into the font array */
    int variant;
    int id;            /* writer id in the files (train writers first, 0..) */
    int test;          /* held out: only in the test file */
    uint64_t key;
    float size;        /* fraction of the 64 px taken by the font's body box */
    float slant;       /* shear, tan of the angle; > 0 leans right */
    float weight;      /* stroke dilation (> 0) or erosion (< 0), output pixels */
    float width;       /* horizontal stretch of the glyphs */
    float spacing;     /* extra advance per letter, fraction of the body height */
    float wobble_amp;  /* baseline wobble amplitude, fraction of the body height */
    float wobble_len;  /* its wavelength, in body heights */
    float jitter;      /* per-letter size and height jitter (0 for joined scripts) */
    float ink;         /* peak ink intensity, 0..1 */
    float pressure;    /* smooth ink variation along the word, 0..1 */
    float grain;       /* per-pixel ink dropout, 0..1 */
    float blur;        /* gaussian sigma, output pixels */
    float noise;       /* paper noise, grey levels (std) */
} syn_writer;

SYN_DEF void syn_writer_traits(syn_writer *w, uint64_t seed, const syn_font *f, int font_index, int variant) {
    higan_rng r;
    memset(w, 0, sizeof *w);
    w->font = font_index;
    w->variant = variant;
    w->key = syn__mix(f->key, (uint64_t)variant);
    syn__rng(&r, seed, SYN_TAG_WRITER, w->key, 0);
    w->size = syn__u(&r, 0.72f, 0.92f);
    w->slant = (float)tan(syn__u(&r, -7.0f, 13.0f) * SYN_PI / 180.0f);
    {   /* stroke weight in [-0.15, 0.65] px, narrowed so that the stroke stays within 1.4..5.5
           output px (dilation adds 2 weight); thick fonts get thinned instead */
        float stroke = f->stroke * (float)HIGAN_DATASET_HEIGHT * w->size / (f->body_top - f->body_bottom);
        float alo = 0.5f * (1.4f - stroke), ahi = 0.5f * (5.5f - stroke);
        float lo = alo > -0.15f ? alo : -0.15f, hi = ahi < 0.65f ? ahi : 0.65f;
        if (lo > hi) { hi = ahi > -1.0f ? ahi : -1.0f; lo = hi - 0.3f; }
        w->weight = syn__u(&r, lo, hi);
    }
    w->width = syn__u(&r, 0.86f, 1.14f);
    w->spacing = f->connected ? syn__u(&r, -0.012f, 0.012f) : syn__u(&r, -0.02f, 0.05f);
    w->wobble_amp = syn__u(&r, 0.0f, 0.035f);
    w->wobble_len = syn__u(&r, 2.5f, 6.0f);
    w->jitter = f->connected ? 0.0f : syn__u(&r, 0.0f, 0.03f);
    w->ink = syn__u(&r, 0.72f, 1.0f);
    w->pressure = syn__u(&r, 0.0f, 0.25f);
    w->grain = syn__u(&r, 0.0f, 0.2f);
    w->blur = syn__u(&r, 0.3f, 0.85f);
    w->noise = syn__u(&r, 0.0f, 9.0f);
}

/* ---- image helpers ---------------------------------------------------------------------- */
/* Grey dilation (r > 0) or erosion (r < 0) by a disc of radius |r| pixels with a soft edge:
   a neighbour at distance d counts with weight clamp(|r| + 1 - d, 0, 1). a -> b, [h][w]. */
static int syn__morph(float *b, const float *a, int h, int w, float r) {
    int R = (int)ceilf(fabsf(r)), y, x, dy, dx, n = 0, W1 = w + 1;
    float rr = fabsf(r), wts[64];
    int offs_y[64], offs_x[64];
    int *sat;       /* summed-area table of (a > 0): pixels with no ink nearby stay 0 fast */
    if (R > 3) R = 3;
    for (dy = -R; dy <= R; ++dy)
        for (dx = -R; dx <= R; ++dx) {
            float d = sqrtf((float)(dx * dx + dy * dy)), wt = rr + 1.0f - d;
            if (wt <= 0.0f || (dx == 0 && dy == 0)) continue;
            offs_y[n] = dy; offs_x[n] = dx; wts[n] = wt > 1.0f ? 1.0f : wt; ++n;
        }
    sat = (int *)calloc((size_t)(h + 1) * (size_t)W1, sizeof(int));
    if (!sat) return -1;
    for (y = 0; y < h; ++y)
        for (x = 0; x < w; ++x)
            sat[(size_t)(y + 1) * W1 + x + 1] = (a[(size_t)y * w + x] > 0.0f) + sat[(size_t)y * W1 + x + 1] +
                                                sat[(size_t)(y + 1) * W1 + x] - sat[(size_t)y * W1 + x];
    for (y = 0; y < h; ++y) {
        int y0 = y - R < 0 ? 0 : y - R, y1 = y + R + 1 > h ? h : y + R + 1;
        for (x = 0; x < w; ++x) {
            int x0 = x - R < 0 ? 0 : x - R, x1 = x + R + 1 > w ? w : x + R + 1, i;
            float best;
            if (sat[(size_t)y1 * W1 + x1] - sat[(size_t)y0 * W1 + x1] - sat[(size_t)y1 * W1 + x0] +
                sat[(size_t)y0 * W1 + x0] == 0) { b[(size_t)y * w + x] = 0.0f; continue; }
            best = r > 0 ? a[(size_t)y * w + x] : 1.0f - a[(size_t)y * w + x];
            for (i = 0; i < n; ++i) {
                int yy = y + offs_y[i], xx = x + offs_x[i];
                float v;
                if (yy < 0 || yy >= h || xx < 0 || xx >= w) v = r > 0 ? 0.0f : 1.0f;
                else v = r > 0 ? a[(size_t)yy * w + xx] : 1.0f - a[(size_t)yy * w + xx];
                v *= wts[i];
                if (v > best) best = v;
            }
            b[(size_t)y * w + x] = r > 0 ? best : 1.0f - best;
        }
    }
    free(sat);
    return 0;
}
/* Box (area) resampling of one line: n_out samples covering [lo, lo + n_out * k) of src
   (n_src samples with stride st; zero outside). */
static void syn__resample_line(float *out, int n_out, const float *src, int n_src, int st, double lo, double k) {
    int j;
    for (j = 0; j < n_out; ++j) {
        double a = lo + j * k, b = a + k, acc = 0.0;
        int i = (int)floor(a), i_end = (int)ceil(b);
        for (; i < i_end; ++i) {
            double l = a > i ? a : (double)i, r = b < i + 1 ? b : (double)(i + 1);
            if (i >= 0 && i < n_src && r > l) acc += (r - l) * src[(size_t)i * st];
        }
        out[j] = (float)(acc / k);
    }
}
/* Separable gaussian blur of [h][w] in place (zero outside), sigma in pixels. */
static int syn__blur(float *img, int h, int w, float sigma) {
    float kern[16], *tmp;
    int R, i, x, y;
    double sum = 0.0;
    if (sigma < 0.05f) return 0;
    R = (int)ceilf(3.0f * sigma);
    if (R > 7) R = 7;
    for (i = -R; i <= R; ++i) { kern[i + R] = expf(-0.5f * (float)(i * i) / (sigma * sigma)); sum += kern[i + R]; }
    for (i = 0; i <= 2 * R; ++i) kern[i] = (float)(kern[i] / sum);
    tmp = (float *)malloc(sizeof(float) * (size_t)h * (size_t)w);
    if (!tmp) return -1;
    for (y = 0; y < h; ++y)
        for (x = 0; x < w; ++x) {
            float acc = 0.0f;
            for (i = -R; i <= R; ++i) if (x + i >= 0 && x + i < w) acc += kern[i + R] * img[(size_t)y * w + x + i];
            tmp[(size_t)y * w + x] = acc;
        }
    for (y = 0; y < h; ++y)
        for (x = 0; x < w; ++x) {
            float acc = 0.0f;
            for (i = -R; i <= R; ++i) if (y + i >= 0 && y + i < h) acc += kern[i + R] * tmp[(size_t)(y + i) * w + x];
            img[(size_t)y * w + x] = acc;
        }
    free(tmp);
    return 0;
}

/* ---- rendering one word ----------------------------------------------------------------- */
typedef struct syn__glyph_pos { int glyph; float x, y, sx, sy; int x0, y0, x1, y1; } syn__glyph_pos;

/* Renders word (the text as it is written: caps-only fonts expect it upper-cased already) for
   writer w, with the word's jitter drawn from rng. On success returns the width and sets *out
   to a malloc'd [64][width] image (ink bright on 0); -1 on error (syn_last_error). */
SYN_DEF int syn_render_word(const syn_font *f, const syn_writer *w, const char *word, higan_rng *rng,
                           uint8_t **out) {
    const int H = HIGAN_DATASET_HEIGHT;
    int n = (int)strlen(word), i, ok = -1;
    syn__glyph_pos *gp = NULL;
    float *A = NULL, *B = NULL, *C = NULL, *img = NULL;
    uint8_t *res = NULL;
    float size, slant, spacing, ink, weight, blur, body_px, s, pen, ymin, ymax, xmin, xmax;
    float amp, wl, phase, tilt, pad, base, offx, offy, shear_lo, shear_hi, p_len, p_phase;
    int Wa, Ha, Wb, Hb, x, y, ox;
    *out = NULL;
    if (n < 1) return syn__fail("empty word");
    /* the word's jitter (the order of draws is part of the format: keep it) */
    size = w->size * (1.0f + 0.03f * higan_rng_normal(rng));
    slant = w->slant + 0.025f * higan_rng_normal(rng);
    spacing = w->spacing + (w->jitter > 0 ? 0.006f : 0.002f) * higan_rng_normal(rng);
    ink = w->ink * (1.0f + 0.04f * higan_rng_normal(rng));
    weight = w->weight + 0.05f * higan_rng_normal(rng);
    blur = w->blur * (1.0f + 0.1f * higan_rng_normal(rng));
    phase = syn__u(rng, 0.0f, 2.0f * SYN_PI);
    tilt = 0.012f * higan_rng_normal(rng);
    p_len = syn__u(rng, 1.5f, 4.0f);
    p_phase = syn__u(rng, 0.0f, 2.0f * SYN_PI);
    if (size < 0.5f) size = 0.5f;
    if (size > 0.98f) size = 0.98f;
    if (ink > 1.0f) ink = 1.0f;
    body_px = (float)(H * SYN_SS) * size;             /* body box height, supersampled pixels */
    s = body_px / (f->body_top - f->body_bottom);       /* pixels per font unit */
    amp = w->wobble_amp * body_px;
    wl = w->wobble_len * body_px;

    /* 1. layout: glyph positions (baseline at y = 0, y down) */
    gp = (syn__glyph_pos *)calloc((size_t)n, sizeof *gp);
    if (!gp) { syn__fail("out of memory"); goto done; }
    pen = 0.0f;
    xmin = 0.0f; xmax = 1.0f;
    ymin = -f->body_top * s; ymax = -f->body_bottom * s;
    for (i = 0; i < n; ++i) {
        int c = (unsigned char)word[i], adv, lsb, g = syn__glyph(f, c);
        float js = 1.0f + w->jitter * higan_rng_normal(rng), jy = w->jitter * 0.5f * body_px * higan_rng_normal(rng);
        gp[i].glyph = g;
        gp[i].sx = s * w->width * js; gp[i].sy = s * js;
        gp[i].x = pen; gp[i].y = jy;
        if (g) {
            stbtt_GetGlyphHMetrics(&f->info, g, &adv, &lsb);
            stbtt_GetGlyphBitmapBoxSubpixel(&f->info, g, gp[i].sx, gp[i].sy, 0.0f, 0.0f,
                                            &gp[i].x0, &gp[i].y0, &gp[i].x1, &gp[i].y1);
        } else {                                        /* a space without a glyph */
            adv = (int)(0.3f * (f->body_top - f->body_bottom)); gp[i].x0 = gp[i].x1 = gp[i].y0 = gp[i].y1 = 0;
        }
        if (gp[i].x1 > gp[i].x0) {
            if (pen + gp[i].x0 < xmin) xmin = pen + gp[i].x0;
            if (pen + gp[i].x1 + 1 > xmax) xmax = pen + gp[i].x1 + 1;
            if (jy + gp[i].y0 < ymin) ymin = jy + gp[i].y0;
            if (jy + gp[i].y1 + 1 > ymax) ymax = jy + gp[i].y1 + 1;
        }
        pen += adv * gp[i].sx + spacing * body_px;
        if (i + 1 < n) {
            int g2 = syn__glyph(f, (unsigned char)word[i + 1]);
            if (g && g2) pen += gp[i].sx * (float)stbtt_GetGlyphKernAdvance(&f->info, g, g2);
        }
    }
    if (pen > xmax) xmax = pen;

    /* 2. glyphs into canvas A: max-combined so that joins of scripts stay one stroke */
    pad = 4.0f + 2.0f * SYN_SS;
    Wa = (int)ceilf(xmax - xmin + 2 * pad);
    Ha = (int)ceilf(ymax - ymin + 2 * pad);
    if (Wa > 60000 || Ha > 4000) { syn__fail("word '%s' is too large to render", word); goto done; }
    base = pad - ymin;                                  /* baseline row in A */
    A = (float *)calloc((size_t)Wa * (size_t)Ha, sizeof(float));
    if (!A) { syn__fail("out of memory"); goto done; }
    for (i = 0; i < n; ++i) {
        float gx = pad - xmin + gp[i].x, gy = base + gp[i].y, fx, fy;
        int ix, iy, bw, bh, x0, y0, x1, y1, yy, xx;
        unsigned char *bm;
        if (!gp[i].glyph) continue;
        ix = (int)floorf(gx); iy = (int)floorf(gy);
        fx = gx - (float)ix; fy = gy - (float)iy;
        stbtt_GetGlyphBitmapBoxSubpixel(&f->info, gp[i].glyph, gp[i].sx, gp[i].sy, fx, fy, &x0, &y0, &x1, &y1);
        bw = x1 - x0; bh = y1 - y0;
        if (bw <= 0 || bh <= 0) continue;
        /* zeroed: stbtt writes nothing for a glyph without contours (e.g. a space with a box) */
        bm = (unsigned char *)calloc((size_t)bw * (size_t)bh, 1);
        if (!bm) { syn__fail("out of memory"); goto done; }
        stbtt_MakeGlyphBitmapSubpixel(&f->info, bm, bw, bh, bw, gp[i].sx, gp[i].sy, fx, fy, gp[i].glyph);
        for (yy = 0; yy < bh; ++yy)
            for (xx = 0; xx < bw; ++xx) {
                int X = ix + x0 + xx, Y = iy + y0 + yy;
                float v = bm[(size_t)yy * bw + xx] * (1.0f / 255.0f);
                if (X >= 0 && X < Wa && Y >= 0 && Y < Ha && v > A[(size_t)Y * Wa + X]) A[(size_t)Y * Wa + X] = v;
            }
        free(bm);
    }

    /* 3. shear and baseline wobble into canvas B, inverse-mapped:
          X = x + slant (base - y) + offx,  Y = y + wob(X) + offy */
    shear_lo = slant * (base - (float)Ha); shear_hi = slant * base;
    if (shear_lo > shear_hi) { float t = shear_lo; shear_lo = shear_hi; shear_hi = t; }
    offx = -shear_lo + 1.0f;
    Wb = Wa + (int)ceilf(shear_hi - shear_lo) + 2;
    offy = amp + fabsf(tilt) * 0.5f * (float)Wb + 2.0f;
    Hb = Ha + (int)ceilf(2.0f * offy);
    B = (float *)calloc((size_t)Wb * (size_t)Hb, sizeof(float));
    C = (float *)calloc((size_t)Wb * (size_t)Hb, sizeof(float));
    if (!B || !C) { syn__fail("out of memory"); goto done; }
    for (x = 0; x < Wb; ++x) {
        float X = (float)x + 0.5f;
        float wob = amp * sinf(2.0f * SYN_PI * X / wl + phase) + tilt * (X - 0.5f * (float)Wb);
        for (y = 0; y < Hb; ++y) {
            float ya = (float)y + 0.5f - offy - wob, xa = X - offx - slant * (base - ya);
            float fxa = xa - 0.5f, fya = ya - 0.5f, ax, ay, v = 0.0f;
            int x0 = (int)floorf(fxa), y0 = (int)floorf(fya), dx, dy;
            ax = fxa - (float)x0; ay = fya - (float)y0;
            for (dy = 0; dy < 2; ++dy)
                for (dx = 0; dx < 2; ++dx) {
                    int xx = x0 + dx, yy = y0 + dy;
                    if (xx >= 0 && xx < Wa && yy >= 0 && yy < Ha)
                        v += (dx ? ax : 1.0f - ax) * (dy ? ay : 1.0f - ay) * A[(size_t)yy * Wa + xx];
                }
            B[(size_t)y * Wb + x] = v;
        }
    }

    /* 4. stroke weight, in supersampled pixels (the output scale is about 1 / SYN_SS) */
    if (fabsf(weight) > 0.04f) {
        if (syn__morph(C, B, Hb, Wb, weight * (float)SYN_SS) != 0) { syn__fail("out of memory"); goto done; }
        { float *t = B; B = C; C = t; }
    }

    /* 5. crop: ink box horizontally, body box united with the ink vertically */
    {
        int c0 = Wb, c1 = -1, r0i = Hb, r1i = -1, wo;
        float wob_c, top_row, bot_row, band_top, band_bot, band_h, total_h, extra, mx, r0, k, cx0, cx1;
        for (y = 0; y < Hb; ++y)
            for (x = 0; x < Wb; ++x)
                if (B[(size_t)y * Wb + x] > 0.1f) {
                    if (x < c0) c0 = x;
                    if (x > c1) c1 = x;
                    if (y < r0i) r0i = y;
                    if (y > r1i) r1i = y;
                }
        if (c1 < 0) { syn__fail("word '%s' rendered no ink", word); goto done; }
        wob_c = amp * sinf(2.0f * SYN_PI * (0.5f * (float)(c0 + c1 + 1)) / wl + phase) +
                tilt * (0.5f * (float)(c0 + c1 + 1) - 0.5f * (float)Wb);
        top_row = base - f->body_top * s + offy + wob_c;
        bot_row = base - f->body_bottom * s + offy + wob_c;
        band_top = top_row < (float)r0i ? top_row : (float)r0i;
        band_bot = bot_row > (float)(r1i + 1) ? bot_row : (float)(r1i + 1);
        band_h = band_bot - band_top;
        total_h = body_px / size;
        if (total_h < band_h) total_h = band_h * 1.04f;
        extra = total_h - band_h;
        r0 = band_top - extra * syn__u(rng, 0.3f, 0.7f);
        k = total_h / (float)H;                           /* source rows per output row */
        mx = body_px * syn__u(rng, 0.03f, 0.08f);
        cx0 = (float)c0 - mx; cx1 = (float)(c1 + 1) + mx;
        wo = (int)floorf((cx1 - cx0) / k + 0.5f);
        if (wo < 1) wo = 1;
        if (wo > HIGAN_DATASET_MAX_WIDTH) {
            syn__fail("word '%s' is %d pixels wide, more than %d", word, wo, HIGAN_DATASET_MAX_WIDTH);
            goto done;
        }
        /* 6. resample to [64][wo]: rows first (into C as [64][Wb]), then columns */
        for (x = 0; x < Wb; ++x) {
            float col[HIGAN_DATASET_HEIGHT];
            syn__resample_line(col, H, B + x, Hb, Wb, r0, k);
            for (y = 0; y < H; ++y) C[(size_t)y * Wb + x] = col[y];
        }
        img = (float *)malloc(sizeof(float) * (size_t)H * (size_t)wo);
        if (!img) { syn__fail("out of memory"); goto done; }
        for (y = 0; y < H; ++y) syn__resample_line(img + (size_t)y * wo, wo, C + (size_t)y * Wb, Wb, 1, cx0, (double)(cx1 - cx0) / wo);
        ox = wo;
    }

    /* 7. blur, ink, pressure, grain, paper noise, 8 bits */
    if (syn__blur(img, H, ox, blur) != 0) { syn__fail("out of memory"); goto done; }
    res = (uint8_t *)malloc((size_t)H * (size_t)ox);
    if (!res) { syn__fail("out of memory"); goto done; }
    for (x = 0; x < ox; ++x) {
        float press = 1.0f - w->pressure * (0.5f + 0.5f * sinf(2.0f * SYN_PI * (float)x / ((float)H * p_len) + p_phase));
        for (y = 0; y < H; ++y) {
            float v = img[(size_t)y * ox + x], g = 1.0f - w->grain * higan_rng_uniform(rng);
            v = 255.0f * ink * press * g * (v > 1.0f ? 1.0f : v);
            if (w->noise > 0.0f) v += w->noise * higan_rng_normal(rng);
            v = floorf(v + 0.5f);
            res[(size_t)y * ox + x] = (uint8_t)(v < 0.0f ? 0.0f : v > 255.0f ? 255.0f : v);
        }
    }
    *out = res; res = NULL;
    ok = ox;
done:
    free(gp); free(A); free(B); free(C); free(img); free(res);
    return ok;
}

/* ---- word lists ----------------------------------------------------------------------------- */
typedef struct syn_words { char **w; int n; char *buf; } syn_words;
SYN_DEF void syn_words_free(syn_words *ws) { free(ws->w); free(ws->buf); memset(ws, 0, sizeof *ws); }
static int syn__word_ok(const char *s, int len) {
    int i;
    if (len < SYN_MIN_WORD || len > SYN_MAX_WORD) return 0;
    for (i = 0; i < len; ++i) if (higan_char_label((unsigned char)s[i]) < 0) return 0;
    return 1;
}
static int syn__strcmp_p(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }
/* Reads a word list (one word a line, surrounding spaces ignored), keeps words of 2..19
   characters that are all in the 80-symbol alphabet, drops duplicates; sorted, so the
   result depends only on the set of words. Errors name the file. */
SYN_DEF int syn_words_load(syn_words *ws, const char *path) {
    FILE *fp;
    long n;
    int cap = 0, i, j;
    char *p, *end;
    memset(ws, 0, sizeof *ws);
    if (!(fp = fopen(path, "rb"))) return syn__fail("cannot open word list '%s': %s", path, strerror(errno));
    if (fseek(fp, 0, SEEK_END) != 0 || (n = ftell(fp)) < 0 || fseek(fp, 0, SEEK_SET) != 0) {
        fclose(fp);
        return syn__fail("cannot read word list '%s'", path);
    }
    ws->buf = (char *)malloc((size_t)n + 1);
    if (!ws->buf) { fclose(fp); return syn__fail("out of memory reading '%s'", path); }
    if (fread(ws->buf, 1, (size_t)n, fp) != (size_t)n) {
        fclose(fp); syn_words_free(ws);
        return syn__fail("cannot read word list '%s': %s", path, strerror(errno));
    }
    fclose(fp);
    ws->buf[n] = 0;
    for (p = ws->buf, end = ws->buf + n; p < end;) {
        char *line = p, *e;
        while (p < end && *p != '\n') ++p;
        e = p;
        if (p < end) *p++ = 0;
        while (e > line && (e[-1] == '\r' || e[-1] == ' ' || e[-1] == '\t')) --e;
        *e = 0;
        while (*line == ' ' || *line == '\t') ++line;
        if (!syn__word_ok(line, (int)(e - line))) continue;
        if (ws->n == cap) {
            char **nw;
            cap = cap ? 2 * cap : 1024;
            nw = (char **)realloc(ws->w, sizeof(char *) * (size_t)cap);
            if (!nw) { syn_words_free(ws); return syn__fail("out of memory reading '%s'", path); }
            ws->w = nw;
        }
        ws->w[ws->n++] = line;
    }
    if (ws->n == 0) {
        syn_words_free(ws);
        return syn__fail("word list '%s' has no usable words (one word a line, %d..%d characters, all in "
                         "the HiGAN+ alphabet)", path, SYN_MIN_WORD, SYN_MAX_WORD);
    }
    qsort(ws->w, (size_t)ws->n, sizeof(char *), syn__strcmp_p);
    for (i = 1, j = 1; i < ws->n; ++i) if (strcmp(ws->w[i], ws->w[j - 1])) ws->w[j++] = ws->w[i];
    ws->n = j;
    return 0;
}

/* ---- the whole dataset ------------------------------------------------------------------------ */
enum { SYN_CAPS_UPPER = 0, SYN_CAPS_SKIP = 1 };
typedef struct syn_options {
    const char *out_dir;        /* NULL: build the datasets in memory only */
    const char *const *fonts;   /* font files; NULL or n_fonts 0: the installed default fonts */
    int n_fonts;
    const char *words;          /* word list; NULL: /usr/share/dict/words */
    int per_writer;             /* words per writer (train writers: train words) */
    int variants;               /* writers per font */
    uint64_t seed;
    int test_writers;           /* writers held out (whole fonts), only in the test file */
    float test_words_frac;      /* fraction of the words held out from the train file */
    int caps;                   /* SYN_CAPS_UPPER: caps-only fonts write words in capitals; SKIP: drop them */
    int hdf5;                   /* write .hdf5 instead of .safetensors */
    int quiet;
} syn_options;
SYN_DEF void syn_options_default(syn_options *o) {
    memset(o, 0, sizeof *o);
    o->per_writer = 500; o->variants = 1; o->seed = 1; o->test_writers = 2; o->test_words_frac = 0.05f;
}
typedef struct syn_result {
    higan_dataset train, test;
    syn_font *fonts; int n_fonts;
    syn_writer *writers; int n_writers, n_train_writers;
    int n_train_words, n_test_words;    /* the word split */
    int64_t skipped;                     /* words a writer's font could not write */
} syn_result;
SYN_DEF void syn_result_free(syn_result *r) {
    int i;
    higan_dataset_free(&r->train); higan_dataset_free(&r->test);
    for (i = 0; i < r->n_fonts; ++i) syn_font_free(&r->fonts[i]);
    free(r->fonts); free(r->writers);
    memset(r, 0, sizeof *r);
}

typedef struct syn__job { int writer, word; char text[SYN_MAX_WORD + 1]; } syn__job;

/* Picks up to count words for writer w from pool (indices into the word list) by a partial
   shuffle seeded with (seed, writer, tag), skipping words its font cannot write. Appends jobs. */
static int syn__pick(syn__job **jobs, int *n_jobs, int *cap_jobs, const syn_words *ws, const int *pool, int n_pool,
                     const syn_font *f, const syn_writer *w, int writer_index, int count, uint64_t seed,
                     uint64_t tag, int64_t *skipped) {
    int *idx, i, got = 0;
    higan_rng r;
    if (count <= 0 || n_pool <= 0) return 0;
    idx = (int *)malloc(sizeof(int) * (size_t)n_pool);
    if (!idx) return syn__fail("out of memory");
    memcpy(idx, pool, sizeof(int) * (size_t)n_pool);
    syn__rng(&r, seed, SYN_TAG_PICK + 16 * tag, w->key, 0);
    for (i = 0; i < n_pool && got < count; ++i) {
        int j = i + (int)syn__below(&r, (uint32_t)(n_pool - i)), t = idx[i], k;
        syn__job *jb;
        idx[i] = idx[j]; idx[j] = t;
        if (!syn_font_can_write(f, ws->w[idx[i]])) { ++*skipped; continue; }
        if (*n_jobs == *cap_jobs) {
            syn__job *nj;
            *cap_jobs = *cap_jobs ? 2 * *cap_jobs : 1024;
            nj = (syn__job *)realloc(*jobs, sizeof(syn__job) * (size_t)*cap_jobs);
            if (!nj) { free(idx); return syn__fail("out of memory"); }
            *jobs = nj;
        }
        jb = &(*jobs)[(*n_jobs)++];
        jb->writer = writer_index; jb->word = idx[i];
        strcpy(jb->text, ws->w[idx[i]]);
        if (f->caps_only) for (k = 0; jb->text[k]; ++k) jb->text[k] = (char)toupper((unsigned char)jb->text[k]);
        ++got;
    }
    free(idx);
    return 0;
}

/* Renders the jobs (in parallel where OpenMP is on; each word has its own generator, so the
   result is the same for any thread count) and appends them in order. */
static int syn__render_jobs(higan_dataset *ds, const syn__job *jobs, int n_jobs, const syn_result *res, uint64_t seed) {
    enum { CHUNK = 512 };
    uint8_t **imgs = (uint8_t **)calloc(CHUNK, sizeof(uint8_t *));
    int *widths = (int *)calloc(CHUNK, sizeof(int)), start, i;
    if (!imgs || !widths) { free(imgs); free(widths); return syn__fail("out of memory"); }
    for (start = 0; start < n_jobs; start += CHUNK) {
        int m = n_jobs - start < CHUNK ? n_jobs - start : CHUNK, bad = -1;
#ifdef _OPENMP
#pragma omp parallel for schedule(dynamic, 4) num_threads(higan_get_num_threads())
#endif
        for (i = 0; i < m; ++i) {
            const syn__job *jb = &jobs[start + i];
            const syn_writer *w = &res->writers[jb->writer];
            higan_rng r;
            syn__rng(&r, seed, SYN_TAG_WORD, w->key, (uint64_t)jb->word);
            widths[i] = syn_render_word(&res->fonts[w->font], w, jb->text, &r, &imgs[i]);
        }
        for (i = 0; i < m; ++i) {
            const syn__job *jb = &jobs[start + i];
            if (widths[i] < 0 && bad < 0) bad = i;
            if (bad < 0 && higan_dataset_append(ds, imgs[i], widths[i], jb->text, res->writers[jb->writer].id) != HIGAN_OK) {
                syn__fail("%s", higan_last_error());
                bad = i;
            }
            free(imgs[i]); imgs[i] = NULL;
        }
        if (bad >= 0) {
            const syn__job *jb = &jobs[start + bad];
            if (widths[bad] < 0) {   /* re-render to get the message on this thread */
                higan_rng r;
                uint8_t *im = NULL;
                syn__rng(&r, seed, SYN_TAG_WORD, res->writers[jb->writer].key, (uint64_t)jb->word);
                if (syn_render_word(&res->fonts[res->writers[jb->writer].font], &res->writers[jb->writer], jb->text, &r, &im) >= 0)
                    syn__fail("rendering '%s' failed", jb->text);
                free(im);
            }
            free(imgs); free(widths);
            return -1;
        }
    }
    free(imgs); free(widths);
    return 0;
}

static int syn__join(char *out, size_t cap, const char *dir, const char *name) {
    int n = snprintf(out, cap, "%s%s%s", dir, (dir[0] && dir[strlen(dir) - 1] != '/') ? "/" : "", name);
    return n < 0 || (size_t)n >= cap ? syn__fail("path too long: %s/%s", dir, name) : 0;
}

/* Writes <out_dir>/writers.tsv: one line per writer with its font and traits. */
static int syn__write_manifest(const syn_result *r, const syn_options *o, const char *path) {
    FILE *fp = fopen(path, "w");
    int i;
    if (!fp) return syn__fail("cannot write '%s': %s", path, strerror(errno));
    fprintf(fp, "# make_synthetic seed %llu, %d words per writer, %d variants, %d train / %d test words\n",
            (unsigned long long)o->seed, o->per_writer, o->variants, r->n_train_words, r->n_test_words);
    fprintf(fp, "id\tsplit\tfont\tvariant\tcaps_only\tsize\tslant_deg\tweight\twidth\tspacing\twobble\t"
                "wobble_len\tjitter\tink\tpressure\tgrain\tblur\tnoise\n");
    for (i = 0; i < r->n_writers; ++i) {
        const syn_writer *w = &r->writers[i];
        fprintf(fp, "%d\t%s\t%s\t%d\t%d\t%.3f\t%.1f\t%.2f\t%.2f\t%.3f\t%.3f\t%.1f\t%.3f\t%.2f\t%.2f\t%.2f\t%.2f\t%.1f\n",
                w->id, w->test ? "test" : "train", r->fonts[w->font].path, w->variant, r->fonts[w->font].caps_only,
                w->size, atan(w->slant) * 180.0 / 3.14159265358979, w->weight, w->width, w->spacing,
                w->wobble_amp, w->wobble_len, w->jitter, w->ink, w->pressure, w->grain, w->blur, w->noise);
    }
    if (fclose(fp) != 0) return syn__fail("cannot write '%s'", path);
    return 0;
}

/* Builds the train and test datasets (and writes them with writers.tsv into out_dir unless
   it is NULL). Train file: the train writers, each writing per_writer train words. Test file:
   the held-out writers writing per_writer words (from the held-out words when there are any,
   else from all words) and, when words are held out, every train writer writing
   per_writer * test_words_frac held-out words (seen writers, unseen words). Writer ids: train
   writers 0..T-1 in font order, held-out writers after them. */
SYN_DEF int syn_generate(const syn_options *o, syn_result *r) {
    syn_words ws;
    int *perm = NULL, i, v, n_test_words, *test_pool, *train_pool, n_train_pool;
    int n_jobs = 0, cap_jobs = 0, held = 0, fid, rc = -1;
    syn__job *jobs = NULL;
    higan_rng rng;
    const char *words_path = o->words ? o->words : SYN_DEFAULT_WORDS;
    memset(r, 0, sizeof *r);
    higan_dataset_init(&r->train); higan_dataset_init(&r->test);
    memset(&ws, 0, sizeof ws);
    if (o->per_writer < 1) return syn__fail("--per-writer must be at least 1 (got %d)", o->per_writer);
    if (o->variants < 1 || o->variants > 1000) return syn__fail("--variants must be in 1..1000 (got %d)", o->variants);
    if (o->test_writers < 0) return syn__fail("--test-writers must be >= 0 (got %d)", o->test_writers);
    if (!(o->test_words_frac >= 0.0f && o->test_words_frac < 1.0f))
        return syn__fail("--test-words-frac must be in [0, 1) (got %g)", (double)o->test_words_frac);

    /* fonts */
    {
        int n_req = (o->fonts && o->n_fonts > 0) ? o->n_fonts : SYN_N_DEFAULT_FONTS;
        r->fonts = (syn_font *)calloc((size_t)n_req, sizeof(syn_font));
        if (!r->fonts) return syn__fail("out of memory");
        for (i = 0; i < n_req; ++i) {
            const char *path = (o->fonts && o->n_fonts > 0) ? o->fonts[i] : syn_default_fonts[i].path;
            syn_font *f = &r->fonts[r->n_fonts];
            if (!(o->fonts && o->n_fonts > 0) && !syn__file_exists(path)) {
                if (!o->quiet) fprintf(stderr, "make_synthetic: default font %s is not installed (package %s): skipped\n",
                                       path, syn_default_fonts[i].package);
                continue;
            }
            if (syn_font_load(f, path) != 0) goto fail;
            if (f->caps_only && o->caps == SYN_CAPS_SKIP) {
                if (!o->quiet) fprintf(stderr, "make_synthetic: %s draws lower case as capitals: skipped (--caps skip)\n", path);
                syn_font_free(f);
                continue;
            }
            if (f->caps_only && !o->quiet)
                fprintf(stderr, "make_synthetic: %s draws lower case as capitals: its writers write words in capitals\n", path);
            ++r->n_fonts;
        }
        if (r->n_fonts == 0) {
            syn__fail("no usable fonts: install Debian's handwriting fonts (apt-get install fonts-sjfonts fonts-kristi "
                      "fonts-dkg-handwriting fonts-breip fonts-femkeklaver fonts-bwht fonts-dancingscript "
                      "fonts-ecolier-court fonts-klee fonts-humor-sans fonts-rufscript fonts-kaushanscript) or pass --fonts");
            goto fail;
        }
        for (i = 0; i < r->n_fonts; ++i) {
            int j;
            for (j = 0; j < i; ++j)
                if (r->fonts[i].key == r->fonts[j].key) {
                    syn__fail("fonts '%s' and '%s' have the same file name: writers are keyed by it", r->fonts[j].path, r->fonts[i].path);
                    goto fail;
                }
        }
    }
    if (syn_words_load(&ws, words_path) != 0) goto fail;

    /* word split: a seeded shuffle, the first test_words_frac of it held out */
    perm = (int *)malloc(sizeof(int) * (size_t)ws.n);
    if (!perm) { syn__fail("out of memory"); goto fail; }
    for (i = 0; i < ws.n; ++i) perm[i] = i;
    syn__rng(&rng, o->seed, SYN_TAG_SHUFFLE, 0, 0);
    for (i = ws.n - 1; i > 0; --i) { int j = (int)syn__below(&rng, (uint32_t)(i + 1)), t = perm[i]; perm[i] = perm[j]; perm[j] = t; }
    n_test_words = (int)floor((double)o->test_words_frac * ws.n + 0.5);
    if (o->test_words_frac > 0.0f && n_test_words < 1) n_test_words = 1;
    if (n_test_words >= ws.n) {
        syn__fail("word list '%s' has %d usable words: too few to hold out %g of them", words_path, ws.n, (double)o->test_words_frac);
        goto fail;
    }
    test_pool = perm; train_pool = perm + n_test_words; n_train_pool = ws.n - n_test_words;
    r->n_train_words = n_train_pool; r->n_test_words = n_test_words;

    /* writers; held-out writers are whole fonts (variants of a held-out font would leak it) */
    r->n_writers = r->n_fonts * o->variants;
    r->writers = (syn_writer *)calloc((size_t)r->n_writers, sizeof(syn_writer));
    if (!r->writers) { syn__fail("out of memory"); goto fail; }
    for (fid = 0; fid < r->n_fonts; ++fid)
        for (v = 0; v < o->variants; ++v) syn_writer_traits(&r->writers[fid * o->variants + v], o->seed, &r->fonts[fid], fid, v);
    if (o->test_writers > 0) {
        int *fp_ = (int *)malloc(sizeof(int) * (size_t)r->n_fonts);
        if (!fp_) { syn__fail("out of memory"); goto fail; }
        if ((o->test_writers + o->variants - 1) / o->variants >= r->n_fonts) {
            free(fp_);
            syn__fail("--test-writers %d would hold out every font (%d fonts, %d variants each): no train writers left",
                      o->test_writers, r->n_fonts, o->variants);
            goto fail;
        }
        for (i = 0; i < r->n_fonts; ++i) fp_[i] = i;
        /* order the fonts by a seeded hash of their names: independent of the --fonts order */
        for (i = 1; i < r->n_fonts; ++i) {
            int x = fp_[i], j;
            uint64_t hx = syn__mix(syn__mix(o->seed, SYN_TAG_HELDOUT), r->fonts[x].key);
            for (j = i; j > 0 && syn__mix(syn__mix(o->seed, SYN_TAG_HELDOUT), r->fonts[fp_[j - 1]].key) > hx; --j) fp_[j] = fp_[j - 1];
            fp_[j] = x;
        }
        for (i = 0; held < o->test_writers; ++i) {
            for (v = 0; v < o->variants; ++v) r->writers[fp_[i] * o->variants + v].test = 1;
            held += o->variants;
        }
        if (held != o->test_writers && !o->quiet)
            fprintf(stderr, "make_synthetic: holding out %d writers (whole fonts of %d variants) for --test-writers %d\n",
                    held, o->variants, o->test_writers);
        free(fp_);
    }
    {
        int id = 0, pass;
        for (pass = 0; pass < 2; ++pass)
            for (i = 0; i < r->n_writers; ++i) if (r->writers[i].test == pass) r->writers[i].id = id++;
        r->n_train_writers = r->n_writers - held;
        if (id > 32767) { syn__fail("%d writers: ids must fit int16", id); goto fail; }
    }

    /* train file */
    for (i = 0; i < r->n_writers; ++i) {
        const syn_writer *w = &r->writers[i];
        if (w->test) continue;
        if (syn__pick(&jobs, &n_jobs, &cap_jobs, &ws, train_pool, n_train_pool, &r->fonts[w->font], w, i,
                      o->per_writer, o->seed, 0, &r->skipped) != 0) goto fail;
    }
    if (!o->quiet) fprintf(stderr, "make_synthetic: rendering %d train words of %d writers\n", n_jobs, r->n_train_writers);
    if (syn__render_jobs(&r->train, jobs, n_jobs, r, o->seed) != 0) goto fail;
    /* test file */
    n_jobs = 0;
    for (i = 0; i < r->n_writers; ++i) {
        const syn_writer *w = &r->writers[i];
        if (w->test) {
            if (n_test_words > 0) {
                if (syn__pick(&jobs, &n_jobs, &cap_jobs, &ws, test_pool, n_test_words, &r->fonts[w->font], w, i,
                              o->per_writer, o->seed, 1, &r->skipped) != 0) goto fail;
            } else if (syn__pick(&jobs, &n_jobs, &cap_jobs, &ws, perm, ws.n, &r->fonts[w->font], w, i,
                                 o->per_writer, o->seed, 1, &r->skipped) != 0) goto fail;
        } else if (n_test_words > 0) {
            int m = (int)floor((double)o->per_writer * o->test_words_frac + 0.5);
            if (m < 1) m = 1;
            if (syn__pick(&jobs, &n_jobs, &cap_jobs, &ws, test_pool, n_test_words, &r->fonts[w->font], w, i,
                          m, o->seed, 2, &r->skipped) != 0) goto fail;
        }
    }
    if (!o->quiet) fprintf(stderr, "make_synthetic: rendering %d test words\n", n_jobs);
    if (syn__render_jobs(&r->test, jobs, n_jobs, r, o->seed) != 0) goto fail;
    if (r->train.count == 0) { syn__fail("no train words: the fonts cannot write any word of '%s'", words_path); goto fail; }

    if (o->out_dir) {
        char path[4096];
        const char *ext = o->hdf5 ? "hdf5" : "safetensors";
        char name[64];
        sprintf(name, "train.%s", ext);
        if (syn__join(path, sizeof path, o->out_dir, name) != 0) goto fail;
        if (higan_dataset_save(&r->train, path) != HIGAN_OK) { syn__fail("%s", higan_last_error()); goto fail; }
        sprintf(name, "test.%s", ext);
        if (syn__join(path, sizeof path, o->out_dir, name) != 0) goto fail;
        if (r->test.count > 0) {
            if (higan_dataset_save(&r->test, path) != HIGAN_OK) { syn__fail("%s", higan_last_error()); goto fail; }
        } else {
            remove(path);    /* no stale test file from an earlier run */
            if (!o->quiet) fprintf(stderr, "make_synthetic: no test words (no held-out writers or words): no %s\n", path);
        }
        if (syn__join(path, sizeof path, o->out_dir, "writers.tsv") != 0) goto fail;
        if (syn__write_manifest(r, o, path) != 0) goto fail;
    }
    rc = 0;
fail:
    free(jobs); free(perm);
    syn_words_free(&ws);
    if (rc != 0) syn_result_free(r);
    return rc;
}

/* A grid for people to look at: `rows` writers spread over all writers, `per_row` words
   each (their first words in the files), black ink on white. *out is malloc'd [*h][*w]. */
SYN_DEF int syn_make_grid(const syn_result *r, int rows, int per_row, uint8_t **out, int *out_w, int *out_h) {
    const int H = HIGAN_DATASET_HEIGHT, gap = 12;
    int *wids, Wg = 1, Hg, row, n_rows;
    uint8_t *g;
    *out = NULL;
    if (r->n_writers < 1) return syn__fail("no writers");
    n_rows = rows < r->n_writers ? rows : r->n_writers;
    wids = (int *)malloc(sizeof(int) * (size_t)n_rows);
    if (!wids) return syn__fail("out of memory");
    for (row = 0; row < n_rows; ++row) wids[row] = (int)((int64_t)row * r->n_writers / n_rows);
    /* row widths */
    for (row = 0; row < n_rows; ++row) {
        int wsum = gap, found = 0, pass;
        for (pass = 0; pass < 2 && found < per_row; ++pass) {
            const higan_dataset *ds = pass ? &r->test : &r->train;
            int64_t i;
            for (i = 0; i < ds->count && found < per_row; ++i)
                if (ds->wids[i] == wids[row]) { wsum += ds->img_lens[i] + gap; ++found; }
        }
        if (wsum > Wg) Wg = wsum;
    }
    Hg = n_rows * (H + gap) + gap;
    g = (uint8_t *)malloc((size_t)Wg * (size_t)Hg);
    if (!g) { free(wids); return syn__fail("out of memory"); }
    memset(g, 255, (size_t)Wg * (size_t)Hg);
    for (row = 0; row < n_rows; ++row) {
        int x = gap, y0 = gap + row * (H + gap), found = 0, pass;
        for (pass = 0; pass < 2 && found < per_row; ++pass) {
            const higan_dataset *ds = pass ? &r->test : &r->train;
            int64_t i;
            for (i = 0; i < ds->count && found < per_row; ++i) {
                int y, xx, w;
                if (ds->wids[i] != wids[row]) continue;
                w = ds->img_lens[i];
                for (y = 0; y < H; ++y)
                    for (xx = 0; xx < w; ++xx)
                        g[(size_t)(y0 + y) * Wg + x + xx] = (uint8_t)(255 - higan_dataset_pixel(ds, i, y, xx));
                /* a faint frame shows the 64 px box */
                for (xx = -1; xx <= w; ++xx) { g[(size_t)(y0 - 1) * Wg + x + xx] = 200; g[(size_t)(y0 + H) * Wg + x + xx] = 200; }
                for (y = 0; y < H; ++y) { g[(size_t)(y0 + y) * Wg + x - 1] = 200; g[(size_t)(y0 + y) * Wg + x + w] = 200; }
                x += w + gap; ++found;
            }
        }
    }
    free(wids);
    *out = g; *out_w = Wg; *out_h = Hg;
    return 0;
}

#endif /* HIGAN_SYNTHETIC_H */
