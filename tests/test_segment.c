/* test_segment.c - data_tools/segment.h: page -> lines -> words on pages composed here.

   The test draws synthetic "handwriting" (thick anti-aliased polylines: x-height loops and
   zigzags, ascenders, descenders, i dots, cursive joins and separate letters) on 4 lines of
   3-5 words with known boxes, rotates the page by a few degrees, adds an uneven lighting
   gradient and noise, saves it as a PNG, and runs the segmenter on that file. Checks: the
   skew angle (within 1 degree), the number of lines and of words per line, each detected
   box against its true box (IoU > 0.5 after mapping through the deskew, centre inside),
   the word images (height 64, ink bright on a clean 0 background), the files written, and
   bad inputs (missing, not an image, tiny, blank, huge), and a sheet photographed on a dark
   table. No fonts needed.
   Leaves build/segment_test_page.png and build/segment_overview.png (and *_table.png for the
   sheet on a table) for people to look at; the words go to build/segment_test_words/. */
#define HIGAN_IMPLEMENTATION
#include "higan.h"
#include "check.h"
#define SEG_STB_IMPLEMENTATION
#include "data_tools/segment.h"
#include <sys/stat.h>
#include <sys/types.h>

#define PAGE_W 960
#define PAGE_H 440
#define MAX_WORDS 32

typedef struct {
    float *cov;                 /* [PAGE_H][PAGE_W] ink coverage 0..1 */
    int bx0, by0, bx1, by1;     /* box of the word being drawn (coverage > 0.5) */
} canvas;

typedef struct {
    int line, index;
    int x0, y0, x1, y1;         /* true box in the composed (unrotated) page */
} true_word;

static float g_xh = 20.0f;      /* x-height of the composed handwriting, px */

static float frand(higan_rng *r, float a, float b) { return a + (b - a) * higan_rng_uniform(r); }

/* thick segment, anti-aliased: coverage = clamp(rad + 0.5 - distance) */
static void draw_seg(canvas *cv, float x0, float y0, float x1, float y1, float rad) {
    int xa = (int)floorf((x0 < x1 ? x0 : x1) - rad - 2), xb = (int)ceilf((x0 > x1 ? x0 : x1) + rad + 2);
    int ya = (int)floorf((y0 < y1 ? y0 : y1) - rad - 2), yb = (int)ceilf((y0 > y1 ? y0 : y1) + rad + 2);
    float dx = x1 - x0, dy = y1 - y0, L2 = dx * dx + dy * dy;
    int x, y;
    for (y = ya; y <= yb; ++y) for (x = xa; x <= xb; ++x) {
        float px = (float)x + 0.5f, py = (float)y + 0.5f, t, ex, ey, d, c;
        if (x < 0 || y < 0 || x >= PAGE_W || y >= PAGE_H) continue;
        t = L2 > 0 ? ((px - x0) * dx + (py - y0) * dy) / L2 : 0;
        if (t < 0) t = 0;
        if (t > 1) t = 1;
        ex = px - (x0 + t * dx); ey = py - (y0 + t * dy);
        d = sqrtf(ex * ex + ey * ey);
        c = rad + 0.5f - d;
        if (c <= 0) continue;
        if (c > 1) c = 1;
        if (c > cv->cov[y * PAGE_W + x]) cv->cov[y * PAGE_W + x] = c;
        if (c > 0.5f) {
            if (x < cv->bx0) cv->bx0 = x;
            if (y < cv->by0) cv->by0 = y;
            if (x + 1 > cv->bx1) cv->bx1 = x + 1;
            if (y + 1 > cv->by1) cv->by1 = y + 1;
        }
    }
}

static void draw_poly(canvas *cv, const float *xs, const float *ys, int n, float rad) {
    int i;
    for (i = 0; i + 1 < n; ++i) draw_seg(cv, xs[i], ys[i], xs[i + 1], ys[i + 1], rad);
}

/* One letter starting at x (baseline y, x-height xh); returns the x where it ends.
   *ex, *ey: end point of the stroke (for a cursive join). */
static float draw_letter(canvas *cv, higan_rng *r, float x, float base, float xh, float rad,
                         float *sx, float *sy, float *ex, float *ey) {
    float xs[40], ys[40], w = xh * frand(r, 0.55f, 0.85f);
    int kind = (int)(higan_rng_uniform(r) * 6.0f), n = 0, i;
    float top = base - xh;
    xs[0] = ys[0] = 0;
    switch (kind) {
    case 0: case 1: {           /* loop (a, o, e) */
        float cx = x + w / 2, cy = base - xh / 2;
        for (i = 0; i <= 24; ++i) {
            float a = (float)(2 * SEG_PI * i / 24.0) + 0.6f;
            xs[n] = cx + 0.5f * w * cosf(a); ys[n] = cy + 0.5f * xh * sinf(a); ++n;
        }
        break;
    }
    case 2: {                   /* zigzag (m, n, w) */
        int k, humps = 2 + (int)(higan_rng_uniform(r) * 2);
        for (k = 0; k <= humps; ++k) {
            xs[n] = x + w * k / humps; ys[n] = (k & 1) ? top + frand(r, 0, 2) : base - frand(r, 0, 2); ++n;
        }
        break;
    }
    case 3: {                   /* ascender (l, h, b) */
        xs[n] = x; ys[n] = base; ++n;
        xs[n] = x + 0.15f * w; ys[n] = base - 1.8f * xh; ++n;
        xs[n] = x + 0.3f * w; ys[n] = base - 1.6f * xh; ++n;
        xs[n] = x + 0.2f * w; ys[n] = base - 0.2f * xh; ++n;
        xs[n] = x + 0.6f * w; ys[n] = top + 0.2f * xh; ++n;
        xs[n] = x + w; ys[n] = base; ++n;
        break;
    }
    case 4: {                   /* descender (g, p, y) */
        xs[n] = x; ys[n] = top; ++n;
        xs[n] = x + 0.5f * w; ys[n] = base; ++n;
        xs[n] = x + w; ys[n] = top; ++n;
        xs[n] = x + 0.6f * w; ys[n] = base + 0.8f * xh; ++n;
        xs[n] = x + 0.2f * w; ys[n] = base + 0.7f * xh; ++n;
        xs[n] = x + 0.5f * w; ys[n] = base + 0.2f * xh; ++n;
        xs[n] = x + w; ys[n] = base; ++n;
        break;
    }
    default: {                  /* i with its dot */
        w = 0.35f * xh;
        xs[n] = x; ys[n] = top + 0.1f * xh; ++n;
        xs[n] = x + 0.3f * w; ys[n] = base; ++n;
        xs[n] = x + w; ys[n] = base - 0.2f * xh; ++n;
        draw_seg(cv, x + 0.2f * w, top - 0.55f * xh, x + 0.35f * w, top - 0.45f * xh, rad);
        break;
    }
    }
    draw_poly(cv, xs, ys, n, rad);
    *sx = xs[0]; *sy = ys[0]; *ex = xs[n - 1]; *ey = ys[n - 1];
    return x + w;
}

/* One word; returns its end x and stores the true box */
static float draw_word(canvas *cv, higan_rng *r, float x, float base, float xh, float rad, true_word *tw) {
    int nl = 3 + (int)(higan_rng_uniform(r) * 5), k;
    float px = 0, py = 0;
    cv->bx0 = PAGE_W; cv->by0 = PAGE_H; cv->bx1 = 0; cv->by1 = 0;
    for (k = 0; k < nl; ++k) {
        float sx, sy, ex, ey, join = higan_rng_uniform(r);
        if (k > 0 && join < 0.5f) {          /* cursive join to the next letter */
            x += 0.15f * xh;
            x = draw_letter(cv, r, x, base, xh, rad, &sx, &sy, &ex, &ey);
            draw_seg(cv, px, py, sx, sy, rad);
        } else {                                 /* separate letter, small gap */
            x += k > 0 ? frand(r, 0.05f, 0.25f) * xh + 2 * rad : 0;
            x = draw_letter(cv, r, x, base, xh, rad, &sx, &sy, &ex, &ey);
        }
        px = ex; py = ey;
    }
    tw->x0 = cv->bx0; tw->y0 = cv->by0; tw->x1 = cv->bx1; tw->y1 = cv->by1;
    return x;
}

/* Composes a page of nlines lines with words_per_line[] words, rotated by angle_deg about the
   centre, lit unevenly, with noise; returns gray [PAGE_H][PAGE_W] (1 = paper), fills tw. */
static float *compose_page(uint64_t seed, int nlines, const int *words_per_line, float angle_deg,
                           int frame, true_word *tw, int *ntw) {
    canvas cv;
    higan_rng r;
    float *rot = (float *)calloc((size_t)PAGE_W * PAGE_H, sizeof(float));
    float *page = (float *)malloc(sizeof(float) * PAGE_W * PAGE_H);
    float xh = g_xh, rad = 0.08f * g_xh, a = (float)(angle_deg * SEG_PI / 180.0), ca = cosf(a), sa = sinf(a);
    int l, k, x, y, n = 0;
    cv.cov = (float *)calloc((size_t)PAGE_W * PAGE_H, sizeof(float));
    higan_rng_seed(&r, seed);
    for (l = 0; l < nlines; ++l) {
        float base = 2.0f * xh + 50.0f + l * 3.0f * xh, xpos = 70.0f + frand(&r, 0, 30);
        for (k = 0; k < words_per_line[l]; ++k) {
            tw[n].line = l; tw[n].index = k;
            xpos = draw_word(&cv, &r, xpos, base + frand(&r, -2, 2), xh, rad, &tw[n]);
            xpos += frand(&r, 0.9f, 1.4f) * xh;
            ++n;
        }
    }
    *ntw = n;
    /* input(x) = composed(R(-a) (x - c) + c): the text direction becomes (cos a, sin a) */
    for (y = 0; y < PAGE_H; ++y) for (x = 0; x < PAGE_W; ++x) {
        float dx = (float)x + 0.5f - 0.5f * PAGE_W, dy = (float)y + 0.5f - 0.5f * PAGE_H;
        float u = ca * dx + sa * dy + 0.5f * PAGE_W, v = -sa * dx + ca * dy + 0.5f * PAGE_H;
        rot[y * PAGE_W + x] = seg__sample(cv.cov, PAGE_W, PAGE_H, u, v, 0.0f);
    }
    /* lighting: 0.95 at the top left down to ~0.5 at the bottom right, plus a soft shadow;
       Gaussian noise and a few dark specks */
    for (y = 0; y < PAGE_H; ++y) for (x = 0; x < PAGE_W; ++x) {
        float fx = (float)x / PAGE_W, fy = (float)y / PAGE_H;
        float paper = 0.95f - 0.3f * fx - 0.15f * fy - 0.1f * expf(-((fx - 0.7f) * (fx - 0.7f) + (fy - 0.3f) * (fy - 0.3f)) / 0.02f);
        float v = paper * (1.0f - 0.8f * rot[y * PAGE_W + x]) + 0.05f * higan_rng_normal(&r);
        /* frame: a photographed sheet on a dark table, the sheet's edges 25-45 px inside */
        if (frame && (x < 25 + y / 22 || y < 30 || x >= PAGE_W - 40 || y >= PAGE_H - 25))
            v = 0.2f + 0.03f * higan_rng_normal(&r);
        page[y * PAGE_W + x] = seg__clampf(v, 0.0f, 1.0f);
    }
    for (k = 0; k < 300; ++k) {
        int sx = (int)(higan_rng_uniform(&r) * PAGE_W), sy = (int)(higan_rng_uniform(&r) * PAGE_H);
        page[sy * PAGE_W + sx] *= 0.4f;
    }
    free(rot); free(cv.cov);
    return page;
}

static int save_gray_png(const char *path, const float *g, int w, int h) {
    uint8_t *b = (uint8_t *)malloc((size_t)w * h);
    int i, ok;
    for (i = 0; i < w * h; ++i) b[i] = (uint8_t)(seg__clampf(g[i], 0, 1) * 255.0f + 0.5f);
    ok = stbi_write_png(path, w, h, 1, b, w);
    free(b);
    return ok;
}

static float iou(float ax0, float ay0, float ax1, float ay1, float bx0, float by0, float bx1, float by1) {
    float ix = (ax1 < bx1 ? ax1 : bx1) - (ax0 > bx0 ? ax0 : bx0);
    float iy = (ay1 < by1 ? ay1 : by1) - (ay0 > by0 ? ay0 : by0), inter, uni;
    if (ix <= 0 || iy <= 0) return 0;
    inter = ix * iy;
    uni = (ax1 - ax0) * (ay1 - ay0) + (bx1 - bx0) * (by1 - by0) - inter;
    return inter / uni;
}

/* true box (composed frame) -> deskewed frame: composed -> input (rotation by angle about
   the centre) -> seg_from_input; the box of the 4 corners */
static void true_box_deskewed(const seg_result *res, const true_word *t, float angle_deg, float *b) {
    float a = (float)(angle_deg * SEG_PI / 180.0), ca = cosf(a), sa = sinf(a);
    float cx[4], cy[4];
    int k;
    cx[0] = (float)t->x0; cy[0] = (float)t->y0; cx[1] = (float)t->x1; cy[1] = (float)t->y0;
    cx[2] = (float)t->x1; cy[2] = (float)t->y1; cx[3] = (float)t->x0; cy[3] = (float)t->y1;
    b[0] = b[1] = 1e9f; b[2] = b[3] = -1e9f;
    for (k = 0; k < 4; ++k) {
        float dx = cx[k] - 0.5f * PAGE_W, dy = cy[k] - 0.5f * PAGE_H, ix, iy, u, v;
        ix = ca * dx - sa * dy + 0.5f * PAGE_W; iy = sa * dx + ca * dy + 0.5f * PAGE_H;
        seg_from_input(res, ix, iy, &u, &v);
        if (u < b[0]) b[0] = u;
        if (v < b[1]) b[1] = v;
        if (u > b[2]) b[2] = u;
        if (v > b[3]) b[3] = v;
    }
}

/* composes, saves, loads back, segments, checks; writes outputs when dir != NULL */
static void run_page(const char *name, uint64_t seed, int nlines, const int *wpl, float angle, int frame,
                     int method, const char *png, const char *dir, const char *overview) {
    true_word tw[MAX_WORDS];
    int ntw = 0, w = 0, h = 0, i, l, ok_boxes = 1, ok_centres = 1, ok_imgs = 1, ok_count = 1;
    float scale = 0, worst_iou = 1.0f;
    char err[512];
    float *page = compose_page(seed, nlines, wpl, angle, frame, tw, &ntw), *gray;
    seg_params p;
    seg_result res;
    CHECK(save_gray_png(png, page, PAGE_W, PAGE_H), "%s: composed page written to %s", name, png);
    free(page);
    gray = seg_load_gray(png, &w, &h, &scale, err, (int)sizeof err);
    CHECK(gray && w == PAGE_W && h == PAGE_H && scale == 1.0f, "%s: page loads back (%dx%d)", name, w, h);
    if (!gray) return;
    seg_params_default(&p);
    p.binarize = method;
    if (seg_segment(&res, gray, w, h, &p) != 0) {
        CHECK(0, "%s: segmentation failed: %s", name, res.error);
        seg_free(&res); free(gray);
        return;
    }
    printf("   %s: angle %.2f (true %.2f), %d lines, %d words, x-height %.1f, stroke %.1f, gap threshold %.1f, window %d\n",
           name, res.angle, angle, res.nlines, res.nwords, res.xheight, res.stroke, res.gap_threshold, res.window);
    CHECK(fabsf(res.angle - angle) < 1.0f, "%s: skew %.2f deg found within 1 deg of %.2f", name, res.angle, angle);
    CHECK(res.nlines == nlines, "%s: %d lines found, %d drawn", name, res.nlines, nlines);
    for (l = 0; l < nlines; ++l) {
        int cnt = 0;
        for (i = 0; i < res.nwords; ++i) cnt += res.words[i].line == l;
        if (cnt != wpl[l]) { ok_count = 0; printf("      line %d: %d words found, %d drawn\n", l, cnt, wpl[l]); }
    }
    CHECK(ok_count && res.nwords == ntw, "%s: words per line right (%d words)", name, res.nwords);
    for (i = 0; i < ntw; ++i) {
        float b[4], v;
        int j, found = -1;
        true_box_deskewed(&res, &tw[i], angle, b);
        for (j = 0; j < res.nwords; ++j) if (res.words[j].line == tw[i].line && res.words[j].index == tw[i].index) found = j;
        if (found < 0) { ok_boxes = ok_centres = 0; continue; }
        {
            const seg_word *d = &res.words[found];
            float cx = 0.5f * (b[0] + b[2]), cy = 0.5f * (b[1] + b[3]), m = (float)res.margin;
            /* the detected ink box: the crop box less its margin */
            v = iou(b[0], b[1], b[2], b[3], d->x0 + m, d->y0 + m, d->x1 - m, d->y1 - m);
            if (v < worst_iou) worst_iou = v;
            if (v <= 0.5f) { ok_boxes = 0; printf("      word %d.%d: IoU %.2f\n", tw[i].line, tw[i].index, v); }
            if (!(cx > d->x0 && cx < d->x1 && cy > d->y0 && cy < d->y1)) ok_centres = 0;
        }
    }
    CHECK(ok_boxes, "%s: every detected box overlaps its true box (worst IoU %.2f > 0.5)", name, worst_iou);
    CHECK(ok_centres, "%s: every true box centre lies inside its detected box", name);
    /* word images: height 64, clean 0 background at the corners, bright ink */
    for (i = 0; i < res.nwords; ++i) {
        int ow = 0, k, mx = 0;
        uint8_t *img = seg_word_image(&res, i, 64, &ow);
        if (!img) { ok_imgs = 0; continue; }
        for (k = 0; k < ow * 64; ++k) if (img[k] > mx) mx = img[k];
        if (ow < 16 || ow > 1024 || mx < 200 || img[0] || img[ow - 1] || img[63 * ow] || img[63 * ow + ow - 1]) {
            ok_imgs = 0;
            printf("      word %d: width %d, max %d, corners %d %d %d %d\n", i, ow, mx, img[0], img[ow - 1], img[63 * ow], img[63 * ow + ow - 1]);
        }
        free(img);
    }
    CHECK(ok_imgs, "%s: word images are 64 high, ink bright (max >= 200) on a 0 background", name);
    if (dir) {
        char path[512], line[256];
        FILE *f;
        int nlin = 0, good = 1, ow, oh, oc;
        uint8_t *im;
        mkdir(dir, 0755);
        CHECK(seg_write_outputs(&res, gray, dir, 64, 1, err, (int)sizeof err) == 0, "%s: outputs written to %s", name, dir);
        snprintf(path, sizeof path, "%s/transcriptions.txt", dir);
        f = fopen(path, "rb");
        if (f) {
            while (fgets(line, sizeof line, f)) {
                char want[64];
                snprintf(want, sizeof want, "word_%03d_%03d.png\t\n", res.words[nlin < res.nwords ? nlin : 0].line,
                         res.words[nlin < res.nwords ? nlin : 0].index);
                if (strcmp(line, want)) good = 0;
                ++nlin;
            }
            fclose(f);
        }
        CHECK(f && good && nlin == res.nwords, "%s: transcriptions.txt has one 'word_LLL_WWW.png<TAB>' line per word (%d)", name, nlin);
        snprintf(path, sizeof path, "%s/word_000_000.png", dir);
        im = stbi_load(path, &ow, &oh, &oc, 1);
        CHECK(im && oh == 64 && im[0] == 255, "%s: word_000_000.png is 64 high, dark ink on white", name);
        stbi_image_free(im);
        err[0] = 0;
        CHECK(seg_write_outputs(&res, gray, dir, 64, 0, err, (int)sizeof err) != 0 && strstr(err, "exists"),
              "%s: an existing transcriptions.txt is kept: %s", name, err);
        /* the user types the words (one left empty), then the dataset is built */
        {
            higan_dataset ds;
            int n, skipped = -1, k, same = 1;
            snprintf(path, sizeof path, "%s/transcriptions.txt", dir);
            f = fopen(path, "wb");
            for (k = 0; f && k < res.nwords; ++k) {
                if (k == 2) fprintf(f, "word_%03d_%03d.png\t\n", res.words[k].line, res.words[k].index);
                else fprintf(f, "word_%03d_%03d.png\tw%c%d\r\n", res.words[k].line, res.words[k].index, 'a' + k % 26, k);
            }
            if (f) fclose(f);
            higan_dataset_init(&ds);
            n = seg_dataset_from_transcriptions(&ds, path, 7, &skipped, err, (int)sizeof err);
            CHECK(n == res.nwords - 1 && skipped == 1, "%s: dataset from transcriptions: %d words, %d skipped (%s)",
                  name, n, skipped, n < 0 ? err : "ok");
            if (n == res.nwords - 1) {
                char lab[64], want[64];
                int ow2, oh2, oc2, pw;
                uint8_t *png;
                higan_dataset_label(&ds, 2, lab, (int)sizeof lab);        /* record 2 = word 3 */
                snprintf(want, sizeof want, "w%c%d", 'a' + 3 % 26, 3);
                snprintf(path, sizeof path, "%s/word_%03d_%03d.png", dir, res.words[3].line, res.words[3].index);
                png = stbi_load(path, &ow2, &oh2, &oc2, 1);
                pw = png ? ow2 : -1;
                for (k = 0; png && k < ow2 * 64 && pw == ds.img_lens[2]; ++k)
                    if (higan_dataset_pixel(&ds, 2, k / ow2, k % ow2) != 255 - png[k]) same = 0;
                stbi_image_free(png);
                CHECK(!strcmp(lab, want) && ds.wids[2] == 7 && pw == ds.img_lens[2] && same,
                      "%s: record 2 is '%s' (writer %d), its image the inverted PNG (width %d)", name, lab, ds.wids[2], pw);
                snprintf(path, sizeof path, "%s/words.safetensors", dir);
                CHECK(higan_dataset_save(&ds, path) == HIGAN_OK, "%s: dataset saved to %s", name, path);
            }
            higan_dataset_free(&ds);
            /* a word outside the alphabet: an error naming the file and line */
            snprintf(path, sizeof path, "%s/transcriptions_bad.txt", dir);
            f = fopen(path, "wb");
            if (f) { fprintf(f, "word_000_000.png\tgood\nword_000_001.png\tna\xc3\xafve\n"); fclose(f); }
            higan_dataset_init(&ds);
            err[0] = 0;
            n = seg_dataset_from_transcriptions(&ds, path, 0, &skipped, err, (int)sizeof err);
            CHECK(n < 0 && strstr(err, "transcriptions_bad.txt:2"), "%s: bad transcription: %s", name, err);
            higan_dataset_free(&ds);
            f = fopen(path, "wb");
            if (f) { fprintf(f, "missing.png\tword\n"); fclose(f); }
            higan_dataset_init(&ds);
            err[0] = 0;
            n = seg_dataset_from_transcriptions(&ds, path, 0, &skipped, err, (int)sizeof err);
            CHECK(n < 0 && strstr(err, "missing.png"), "%s: missing word image: %s", name, err);
            higan_dataset_free(&ds);
        }
    }
    if (overview) {
        uint8_t *ov = seg_overview(&res, gray);
        CHECK(ov && stbi_write_png(overview, res.in_w, res.in_h, 3, ov, res.in_w * 3), "%s: overview written to %s", name, overview);
        free(ov);
    }
    /* mapping round trip */
    {
        float u, v, x, y;
        seg_from_input(&res, 123.0f, 45.0f, &u, &v);
        seg_to_input(&res, u, v, &x, &y);
        CHECK(fabsf(x - 123.0f) < 1e-3f && fabsf(y - 45.0f) < 1e-3f, "%s: seg_to_input(seg_from_input(p)) = p", name);
    }
    seg_free(&res);
    free(gray);
}

static void bad_inputs(void) {
    char err[512];
    int w, h, i;
    float scale, *g;
    seg_result res;
    seg_params p;
    FILE *f;
    uint8_t *buf;
    seg_params_default(&p);
    err[0] = 0;
    g = seg_load_gray("build/no_such_page.png", &w, &h, &scale, err, (int)sizeof err);
    CHECK(!g && strstr(err, "build/no_such_page.png"), "missing file: %s", err);
    f = fopen("build/segment_not_an_image.png", "wb");
    if (f) { fputs("this is not an image\n", f); fclose(f); }
    err[0] = 0;
    g = seg_load_gray("build/segment_not_an_image.png", &w, &h, &scale, err, (int)sizeof err);
    CHECK(!g && strstr(err, "build/segment_not_an_image.png"), "not an image: %s", err);
    buf = (uint8_t *)malloc(4600 * 80);
    memset(buf, 255, 4600 * 80);
    stbi_write_png("build/segment_tiny.png", 10, 12, 1, buf, 10);
    err[0] = 0;
    g = seg_load_gray("build/segment_tiny.png", &w, &h, &scale, err, (int)sizeof err);
    CHECK(!g && strstr(err, "too small") && strstr(err, "build/segment_tiny.png"), "tiny image: %s", err);
    /* huge: downscaled to SEG_MAX_SIDE on the long side */
    stbi_write_png("build/segment_huge.png", 4600, 80, 1, buf, 4600);
    g = seg_load_gray("build/segment_huge.png", &w, &h, &scale, err, (int)sizeof err);
    CHECK(g && w == SEG_MAX_SIDE && h == 70 && fabsf(scale - 4000.0f / 4600.0f) < 1e-6f,
          "huge image downscaled to %dx%d (scale %.4f)", w, h, scale);
    free(g);
    free(buf);
    /* blank page: gradient + noise, no ink */
    {
        higan_rng r;
        int bw = 400, bh = 300;
        float *pg = (float *)malloc(sizeof(float) * (size_t)bw * bh);
        higan_rng_seed(&r, 7);
        for (i = 0; i < bw * bh; ++i)
            pg[i] = seg__clampf(0.9f - 0.3f * (float)(i % bw) / bw + 0.03f * higan_rng_normal(&r), 0, 1);
        CHECK(seg_segment(&res, pg, bw, bh, &p) != 0 && strstr(res.error, "no ink"), "blank page: %s", res.error);
        seg_free(&res);
        /* all black and all white pages: an error, no crash */
        for (i = 0; i < bw * bh; ++i) pg[i] = 0.0f;
        CHECK(seg_segment(&res, pg, bw, bh, &p) != 0, "black page: %s", res.error);
        seg_free(&res);
        for (i = 0; i < bw * bh; ++i) pg[i] = 1.0f;
        CHECK(seg_segment(&res, pg, bw, bh, &p) != 0, "white page: %s", res.error);
        seg_free(&res);
        CHECK(seg_segment(&res, pg, 10, 10, &p) != 0 && strstr(res.error, "too small"), "tiny array: %s", res.error);
        seg_free(&res);
        free(pg);
    }
}

int main(void) {
    static const int wpl1[4] = {4, 3, 5, 4}, wpl2[3] = {3, 5, 4};
    mkdir("build", 0755);
    run_page("sauvola +3deg", 1234, 4, wpl1, 3.0f, 0, SEG_SAUVOLA, "build/segment_test_page.png",
             "build/segment_test_words", "build/segment_overview.png");
    run_page("otsu +3deg", 1234, 4, wpl1, 3.0f, 0, SEG_OTSU, "build/segment_test_page.png", NULL, NULL);
    run_page("sauvola -2.5deg", 99, 3, wpl2, -2.5f, 0, SEG_SAUVOLA, "build/segment_test_page2.png", NULL, NULL);
    run_page("dark table around the sheet, +2deg", 77, 4, wpl1, 2.0f, 1, SEG_SAUVOLA, "build/segment_test_page_table.png",
             NULL, "build/segment_overview_table.png");
    bad_inputs();
    return check_finish();
}
