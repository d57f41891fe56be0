/* evaluate.c - evaluate a HiGAN+ model on a test set (higan.h, higan_evaluate).

   evaluate --checkpoint CKPT --dataset TEST.safetensors [--json OUT.json] [options]

   For every word of the test set, as the official validate in guided mode: the style of the
   real image (StyleBackbone + StyleEncoder on the image resized to 32 px per character), a
   generated image of the same text in that style, rescaled to the real image's width (area
   when shrinking, bilinear otherwise). Reported:
     CER, WER    of the generated words read by the Recognizer (greedy CTC), and of the real
                 images for reference; the correct Levenshtein distance (the official decode
                 also collapses repeated letters of the ground truth);
     WIER        writer-identification error: the WriterIdentifier's prediction for the
                 generated image differs from its prediction for the real one; plus the
                 accuracy of both against the test set's writer ids (minus --wid-offset);
     FID, KID    between real and generated images, on features of the StyleBackbone (the
                 masked mean of its final sequence feature), not on Inception features (those
                 weights are not available here): compare numbers only for the same feature
                 backbone. KID x 100, 50 subsets of min(1000, n), as the official code;
     PSNR, SSIM  real vs generated (the reconstruction), images in [0, 1] (skimage semantics).
   Networks: G, E and B from --checkpoint; the Recognizer and the WriterIdentifier from
   --checkpoint too, unless --recognizer / --writer-id name other checkpoints (a writer-id file
   brings the StyleBackbone it was trained on); the feature backbone is --checkpoint's
   StyleBackbone unless --features names another checkpoint (its StyleBackbone, or the CNN of
   its Recognizer when it has no StyleBackbone). Figures a network is missing for are NaN
   (null in the JSON). A random checkpoint (generate --init-random CKPT --all) runs end to
   end: its figures are those of noise.

   Options
     --json OUT.json      write the figures as JSON
     --samples OUT.png    the first --n-samples (8) real / generated pairs, one pair per row
     --limit N            the first N words only
     --seed N             seed of the KID subsets (0)
     --kid-subsets N      (50)      --kid-subset-size N (1000)
     --wid-offset N       subtracted from the writer ids (default: the test set's smallest id)
     --writers LO-HI      only the words of writers LO..HI (e.g. the writers the
                          WriterIdentifier was trained on, for the writer-ID accuracy)
     --threads N          OpenMP threads (results do not depend on it)
     --quiet              no progress line
   Build: make (build/evaluate), or cc -std=c99 -O2 -I. examples/evaluate.c -o build/evaluate -lm */
#define _POSIX_C_SOURCE 200809L     /* mkdir (example_util.h) */
#define HIGAN_IMPLEMENTATION
#include "higan.h"

#include "example_util.h"


static void usage(FILE *f) {
    fprintf(f,
        "usage: evaluate --checkpoint CKPT --dataset TEST.safetensors [--json OUT.json] [--samples OUT.png]\n"
        "                [--recognizer CKPT] [--writer-id CKPT] [--features CKPT] [--limit N] [--seed N]\n"
        "                [--kid-subsets N] [--kid-subset-size N] [--wid-offset N] [--writers LO-HI]\n"
        "                [--n-samples N]\n"
        "                [--threads N] [--quiet]\n");
}

static int parse_i64(const char *s, int64_t *out) {
    char *end;
    long long v;
    if (!s || !*s) return 0;
    v = strtoll(s, &end, 10);
    if (*end || v < 0) return 0;
    *out = (int64_t)v;
    return 1;
}

/* progress line and the sample pairs */
typedef struct {
    double t0;
    int quiet;
    int n_samples, kept;
    float *real[64], *fake[64];
    int64_t width[64];
    char text[64][3][128];
} run_state;
static void progress(void *user, int64_t done, int64_t total) {
    run_state *s = (run_state *)user;
    double el = higan_time_seconds() - s->t0;
    if (s->quiet || (done % 10 && done != total)) return;
    fprintf(stderr, "\r  %lld / %lld words, %.1f words/s, ETA %.0f s   ", (long long)done, (long long)total,
            done / (el > 0 ? el : 1e-9), el / (double)done * (double)(total - done));
    if (done == total) fprintf(stderr, "\n");
}
static void on_pair(void *user, int64_t record, const float *real, const float *fake, int64_t w,
                    const char *label, const char *read_real, const char *read_fake) {
    run_state *s = (run_state *)user;
    int k = s->kept;
    (void)record;
    if (k >= s->n_samples) return;
    s->real[k] = (float *)malloc(sizeof(float) * 64 * (size_t)w);
    s->fake[k] = (float *)malloc(sizeof(float) * 64 * (size_t)w);
    if (!s->real[k] || !s->fake[k]) { free(s->real[k]); free(s->fake[k]); return; }
    memcpy(s->real[k], real, sizeof(float) * 64 * (size_t)w);
    memcpy(s->fake[k], fake, sizeof(float) * 64 * (size_t)w);
    s->width[k] = w;
    snprintf(s->text[k][0], 128, "%s", label);
    snprintf(s->text[k][1], 128, "%s", read_real);
    snprintf(s->text[k][2], 128, "%s", read_fake);
    s->kept = k + 1;
}
/* rows of "real | generated", 8 px apart, dark ink on white */
static int write_samples(const run_state *s, const char *path) {
    int64_t W = 0, H, x, y;
    int k, ok;
    float *canvas;
    unsigned char *png;
    for (k = 0; k < s->kept; ++k) if (2 * s->width[k] + 8 > W) W = 2 * s->width[k] + 8;
    H = 72 * (int64_t)s->kept;
    if (!s->kept) return 1;
    canvas = (float *)malloc(sizeof(float) * (size_t)(W * H));
    png = (unsigned char *)malloc((size_t)(W * H));
    if (!canvas || !png) { free(canvas); free(png); return 0; }
    for (x = 0; x < W * H; ++x) canvas[x] = -1.0f;
    for (k = 0; k < s->kept; ++k)
        for (y = 0; y < 64; ++y) {
            memcpy(canvas + (72 * k + y) * W, s->real[k] + y * s->width[k], sizeof(float) * (size_t)s->width[k]);
            memcpy(canvas + (72 * k + y) * W + s->width[k] + 8, s->fake[k] + y * s->width[k], sizeof(float) * (size_t)s->width[k]);
        }
    higan_image_to_pixels(canvas, W * H, 0, png);
    ok = stbi_write_png(path, (int)W, (int)H, 1, png, (int)W);
    free(canvas);
    free(png);
    return ok;
}

static void json_num(FILE *f, const char *key, double v, int last) {
    if (v == v && v - v == 0) fprintf(f, "  \"%s\": %.9g%s\n", key, v, last ? "" : ",");
    else fprintf(f, "  \"%s\": null%s\n", key, last ? "" : ",");
}
static void json_str(FILE *f, const char *key, const char *v) {
    fprintf(f, "  \"%s\": \"", key);
    for (; *v; ++v) {
        if (*v == '"' || *v == '\\') fprintf(f, "\\%c", *v);
        else if ((unsigned char)*v < 0x20) fprintf(f, "\\u%04x", (unsigned char)*v);
        else fputc(*v, f);
    }
    fprintf(f, "\",\n");
}

/* The words of writers lo..hi of src, copied into dst (an initialised, empty dataset). */
static int filter_writers(const higan_dataset *src, int lo, int hi, higan_dataset *dst) {
    int64_t i, y, w, n = 0;
    uint8_t *img = (uint8_t *)malloc((size_t)HIGAN_DATASET_HEIGHT * HIGAN_DATASET_MAX_WIDTH);
    char label[4 * HIGAN_MAX_WORD_LEN + 64];
    if (!img) { fprintf(stderr, "evaluate: out of memory\n"); return 0; }
    for (i = 0; i < src->count; ++i) {
        if (src->wids[i] < lo || src->wids[i] > hi) continue;
        w = src->img_lens[i];
        for (y = 0; y < HIGAN_DATASET_HEIGHT; ++y)
            memcpy(img + y * w, src->imgs + y * src->total_width + src->img_seek_idxs[i], (size_t)w);
        higan_dataset_label(src, i, label, (int)sizeof label);
        if (higan_dataset_append(dst, img, (int)w, label, src->wids[i]) != HIGAN_OK) {
            fprintf(stderr, "evaluate: --writers: %s\n", higan_last_error());
            free(img);
            return 0;
        }
        ++n;
    }
    free(img);
    if (!n) { fprintf(stderr, "evaluate: --writers %d-%d: the dataset has no word of these writers\n", lo, hi); return 0; }
    return 1;
}

static int load(higan_model *m, const char *path, unsigned nets, const char *what) {
    memset(m, 0, sizeof *m);
    if (higan_model_load(m, path, nets, NULL) != HIGAN_OK) {
        fprintf(stderr, "evaluate: %s: %s\n", what, higan_last_error());
        return 0;
    }
    return 1;
}

int main(int argc, char **argv) {
    const char *ckpt = NULL, *data = NULL, *json = NULL, *samples = NULL, *rec = NULL, *wid = NULL, *feat = NULL;
    higan_eval_options opt = higan_eval_default_options();
    higan_eval_result res;
    higan_model m, mr, mw, mf;
    higan_dataset ds;
    run_state rs;
    higan_safetensors st;
    char feat_desc[600];
    int64_t v;
    int i, rc = 1, k, wlo = -1, whi = -1;
    double seconds;
    FILE *f;

    memset(&rs, 0, sizeof rs);
    rs.n_samples = 8;
    memset(&m, 0, sizeof m); memset(&mr, 0, sizeof mr); memset(&mw, 0, sizeof mw); memset(&mf, 0, sizeof mf);
    higan_dataset_init(&ds);
    for (i = 1; i < argc; ++i) {
        const char *a = argv[i], *val = i + 1 < argc ? argv[i + 1] : NULL;
        int takes = 1;
        if (!strcmp(a, "--checkpoint") || !strcmp(a, "-c")) ckpt = val;
        else if (!strcmp(a, "--dataset") || !strcmp(a, "-d")) data = val;
        else if (!strcmp(a, "--json")) json = val;
        else if (!strcmp(a, "--samples")) samples = val;
        else if (!strcmp(a, "--recognizer")) rec = val;
        else if (!strcmp(a, "--writer-id")) wid = val;
        else if (!strcmp(a, "--features")) feat = val;
        else if (!strcmp(a, "--writers")) {
            if (!val || sscanf(val, "%d-%d", &wlo, &whi) != 2 || wlo < 0 || whi < wlo) {
                fprintf(stderr, "evaluate: --writers needs LO-HI (0 <= LO <= HI)\n");
                return 2;
            }
        }
        else if (!strcmp(a, "--quiet")) { rs.quiet = 1; takes = 0; }
        else if (!strcmp(a, "--help") || !strcmp(a, "-h")) { usage(stdout); return 0; }
        else if (!strcmp(a, "--limit") || !strcmp(a, "--seed") || !strcmp(a, "--kid-subsets") ||
                 !strcmp(a, "--kid-subset-size") || !strcmp(a, "--wid-offset") || !strcmp(a, "--threads") ||
                 !strcmp(a, "--n-samples")) {
            if (!parse_i64(val, &v) || v > 1000000000) { fprintf(stderr, "evaluate: %s needs a non-negative integer\n", a); return 2; }
            if (!strcmp(a, "--limit")) opt.limit = v;
            else if (!strcmp(a, "--seed")) opt.seed = (uint64_t)v;
            else if (!strcmp(a, "--kid-subsets")) opt.kid_subsets = (int)v;
            else if (!strcmp(a, "--kid-subset-size")) opt.kid_subset_size = v;
            else if (!strcmp(a, "--wid-offset")) opt.wid_offset = (int)v;
            else if (!strcmp(a, "--threads")) higan_set_num_threads((int)(v ? v : 1));
            else rs.n_samples = (int)(v < 64 ? v : 64);
        } else { fprintf(stderr, "evaluate: unknown argument '%s'\n", a); usage(stderr); return 2; }
        if (takes && !val) { fprintf(stderr, "evaluate: %s needs a value\n", a); return 2; }
        i += takes;
    }
    if (!ckpt || !data) { fprintf(stderr, "evaluate: --checkpoint and --dataset are required\n"); usage(stderr); return 2; }
    if (opt.kid_subsets < 1 || opt.kid_subset_size < 2) { fprintf(stderr, "evaluate: KID needs >= 1 subset of >= 2\n"); return 2; }

    if (!load(&m, ckpt, 0, "checkpoint")) return 1;
    if (higan_dataset_load(&ds, data) != HIGAN_OK) { fprintf(stderr, "evaluate: %s\n", higan_last_error()); goto done; }
    if (wlo >= 0) {
        higan_dataset all = ds;
        higan_dataset_init(&ds);
        k = filter_writers(&all, wlo, whi, &ds);
        higan_dataset_free(&all);
        if (!k) goto done;
    }
    if (rec) {
        if (!load(&mr, rec, HIGAN_NET_BIT(HIGAN_NET_RECOGNIZER), "--recognizer")) goto done;
        opt.R = &mr.R;
    }
    if (wid) {
        if (!load(&mw, wid, HIGAN_NET_BIT(HIGAN_NET_WRITER_IDENTIFIER) | HIGAN_NET_BIT(HIGAN_NET_STYLE_BACKBONE), "--writer-id")) goto done;
        opt.W = &mw.W;
        opt.W_backbone = &mw.B;
    }
    snprintf(feat_desc, sizeof feat_desc, "StyleBackbone of %.500s", ckpt);
    if (feat) {   /* a StyleBackbone, else a Recognizer's CNN */
        int has_b;
        if (higan_safetensors_load(&st, feat) != HIGAN_OK) { fprintf(stderr, "evaluate: --features: %s\n", higan_last_error()); goto done; }
        has_b = 0;
        for (k = 0; k < st.count; ++k) has_b |= !strncmp(st.tensors[k].name, "StyleBackbone.", 14);
        higan_safetensors_free(&st);
        if (!load(&mf, feat, HIGAN_NET_BIT(has_b ? HIGAN_NET_STYLE_BACKBONE : HIGAN_NET_RECOGNIZER), "--features")) goto done;
        opt.feature_backbone = has_b ? &mf.B : &mf.R.cnn;
        snprintf(feat_desc, sizeof feat_desc, "%s of %.500s", has_b ? "StyleBackbone" : "Recognizer CNN", feat);
    }
    opt.progress = progress;
    opt.on_pair = samples ? on_pair : NULL;
    opt.user = &rs;
    printf("evaluate %s on %s (%lld words%s", ckpt, data, (long long)ds.count, opt.limit ? ", limited" : "");
    if (wlo >= 0) printf(" of writers %d-%d", wlo, whi);
    printf(")\n");
    rs.t0 = higan_time_seconds();
    if (higan_evaluate(&m, &ds, &opt, &res) != HIGAN_OK) { fprintf(stderr, "\nevaluate: %s\n", higan_last_error()); goto done; }
    seconds = higan_time_seconds() - rs.t0;

    printf("words evaluated      %lld (%lld skipped: label longer than %d)\n", (long long)res.n, (long long)res.n_skipped, HIGAN_MAX_WORD_LEN);
    printf("CER / WER real       %.4f / %.4f   (recognizer on the test images)\n", res.cer_real, res.wer_real);
    printf("CER / WER generated  %.4f / %.4f\n", res.cer_fake, res.wer_fake);
    printf("WIER                 %.4f          (writer-ID disagreement, generated vs real)\n", res.wier);
    printf("writer-ID accuracy   %.4f real, %.4f generated\n", res.wid_acc_real, res.wid_acc_fake);
    printf("FID                  %.4f          (%s, %lld-d features)\n", res.fid, feat_desc, (long long)res.feature_dim);
    printf("KID x 100            %.4f\n", res.kid);
    printf("PSNR / SSIM          %.3f dB / %.4f (over %lld images)\n", res.psnr, res.ssim, (long long)res.n_ssim);
    printf("time                 %.1f s\n", seconds);
    if (json) {
        if (!(f = fopen(json, "w"))) { fprintf(stderr, "evaluate: cannot write '%s'\n", json); goto done; }
        fprintf(f, "{\n");
        json_str(f, "checkpoint", ckpt);
        json_str(f, "dataset", data);
        json_str(f, "feature_backbone", feat_desc);
        fprintf(f, "  \"n\": %lld,\n  \"n_skipped\": %lld,\n  \"feature_dim\": %lld,\n  \"n_ssim\": %lld,\n",
                (long long)res.n, (long long)res.n_skipped, (long long)res.feature_dim, (long long)res.n_ssim);
        json_num(f, "cer_real", res.cer_real, 0);
        json_num(f, "wer_real", res.wer_real, 0);
        json_num(f, "cer_fake", res.cer_fake, 0);
        json_num(f, "wer_fake", res.wer_fake, 0);
        json_num(f, "wier", res.wier, 0);
        json_num(f, "wid_acc_real", res.wid_acc_real, 0);
        json_num(f, "wid_acc_fake", res.wid_acc_fake, 0);
        json_num(f, "fid", res.fid, 0);
        json_num(f, "kid_x100", res.kid, 0);
        json_num(f, "psnr", res.psnr, 0);
        json_num(f, "ssim", res.ssim, 0);
        json_num(f, "seconds", seconds, 1);
        fprintf(f, "}\n");
        if (fclose(f) != 0) { fprintf(stderr, "evaluate: cannot write '%s'\n", json); goto done; }
        printf("wrote %s\n", json);
    }
    if (samples) {
        if (!write_samples(&rs, samples)) { fprintf(stderr, "evaluate: cannot write '%s'\n", samples); goto done; }
        printf("wrote %s: %d pairs (real | generated)", samples, rs.kept);
        for (k = 0; k < rs.kept; ++k) printf("%s '%s' read '%s' / '%s'", k ? "," : ":", rs.text[k][0], rs.text[k][1], rs.text[k][2]);
        printf("\n");
    }
    rc = 0;
done:
    for (k = 0; k < rs.kept; ++k) { free(rs.real[k]); free(rs.fake[k]); }
    higan_dataset_free(&ds);
    higan_model_free(&m); higan_model_free(&mr); higan_model_free(&mw); higan_model_free(&mf);
    return rc;
}
