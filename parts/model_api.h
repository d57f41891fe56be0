#ifndef HIGAN_MODEL_API_INCLUDED
#define HIGAN_MODEL_API_INCLUDED
/* ==== MODEL: the HiGAN+ networks together, checkpoints, generation ==========================
   A higan_model holds up to seven networks in five parameter stores, grouped as the official
   optimizers: G+E (OPT.G), D+P (OPT.D), and StyleBackbone, WriterIdentifier, Recognizer each
   in its own store (frozen by default: HiGAN+ trains them beforehand; clear
   m->store[...].frozen to train one). Tensor names are "<Network>.<official state_dict key>"
   (Generator.blocks.0.0.conv1.weight), buffers included, so a checkpoint converted from a
   .pth (data_tools/pth2safetensors) loads directly.
       higan_model m;
       higan_model_config cfg = higan_model_default_config(HIGAN_NETS_DEPLOY);
       higan_model_init(&m, &cfg, 42);                       // or: memset(&m, 0, sizeof m);
       higan_model_save(&m, "ckpt.safetensors", NULL);        //     higan_model_load(&m, path, 0, NULL)
       higan_model_free(&m);
   The networks keep pointers into the model: do not copy or move an initialised model.

   Checkpoint metadata (all strings): "higan.version", "higan.networks" (comma-separated),
   "higan.alphabet", "higan.config.<Network>" ("ch=64 style_dim=32 ..." key=value list) and,
   with optimizer state, "OPT.<x>.adam_step" / "OPT.<x>.adam_hparams" next to the tensors
   "<name>.adam_m" / "<name>.adam_v". */

enum {
    HIGAN_NET_GENERATOR = 0, HIGAN_NET_STYLE_ENCODER, HIGAN_NET_STYLE_BACKBONE,
    HIGAN_NET_DISCRIMINATOR, HIGAN_NET_PATCH_DISCRIMINATOR, HIGAN_NET_WRITER_IDENTIFIER,
    HIGAN_NET_RECOGNIZER, HIGAN_NET_COUNT
};
#define HIGAN_NET_BIT(net) (1u << (net))
#define HIGAN_NETS_DEPLOY 0x07u      /* Generator, StyleEncoder, StyleBackbone: generation */
#define HIGAN_NETS_ALL    0x7Fu      /* all seven: training */
/* parameter stores (one optimizer each) */
enum { HIGAN_STORE_GE = 0, HIGAN_STORE_DP, HIGAN_STORE_BACKBONE, HIGAN_STORE_WID, HIGAN_STORE_OCR,
       HIGAN_STORE_COUNT };
HIGAN_DEF const char *higan_net_name(int net);      /* "Generator", ...; NULL when out of range */
HIGAN_DEF int higan_net_store(int net);             /* HIGAN_STORE_* holding that network */

typedef struct higan_model_config {
    unsigned nets;                       /* HIGAN_NET_BIT mask: HIGAN_NETS_DEPLOY or _ALL */
    higan_generator_config G;            /* G.style_dim is also the StyleEncoder's output */
    higan_discriminator_config D, P;     /* resolution 64 and 32 */
    higan_backbone_config B;             /* its output width is the input of E and W */
    int64_t n_writer;                    /* WriterIdentifier classes: 372 */
    higan_recognizer_config R;
} higan_model_config;
/* The official configuration with the given networks. */
HIGAN_DEF higan_model_config higan_model_default_config(unsigned nets);

typedef struct higan_model {
    higan_model_config cfg;
    higan_params store[HIGAN_STORE_COUNT];
    higan_generator G;
    higan_style_encoder E;
    higan_style_backbone B;
    higan_discriminator D, P;
    higan_writer_identifier W;
    higan_recognizer R;
    int initialised;
    int opt_loaded[HIGAN_STORE_COUNT];   /* set by higan_model_load: optimizer state restored */
} higan_model;

/* Registers, allocates and randomly initialises the networks of cfg (official inits: N02
   for G, D, P and the backbone, PyTorch defaults for E, W, R). Each network draws from its
   own stream derived from seed, so G is the same whichever other networks are included.
   HIGAN_ERR_ARG for an invalid configuration, HIGAN_ERR_NOMEM. m need not be zeroed. */
HIGAN_DEF higan_status higan_model_init(higan_model *m, const higan_model_config *cfg, uint64_t seed);
HIGAN_DEF void higan_model_free(higan_model *m);                 /* safe on a zeroed model */
/* Trainable elements of one network (buffers excluded), 0 if it is not in the model. */
HIGAN_DEF int64_t higan_model_num_params(const higan_model *m, int net);

/* One safetensors file with every tensor of every network (written to path.tmp, then
   renamed). opts: NULL, or HIGAN_STORE_COUNT pointers (NULL entries: no optimizer state for
   that store): Adam m and v and the step are saved with the store's parameters. */
HIGAN_DEF higan_status higan_model_save(const higan_model *m, const char *path,
                                        const higan_adam *const *opts);
/* Loads the networks in nets (a HIGAN_NET_BIT mask; 0: those of an initialised model, or
   every network in the file for a zeroed one).
   - Zeroed model (initialised == 0): the configuration comes from the file's metadata
     ("higan.config.<Network>"; the official configuration where it is absent, as in a
     converted official .pth), then the model is built and loaded.
   - Initialised model: the file's metadata must agree with m->cfg; nets must be networks of
     the model, and networks sharing a store (G+E, D+P) are loaded together.
   Every tensor name and shape is checked (higan_params_load): the error names each missing,
   unexpected and mis-shaped tensor, and a network the file lacks. Networks in the file that
   were not asked for are ignored. opts: NULL, or HIGAN_STORE_COUNT Adam states; where the
   file has a store's optimizer state it is restored (m and v, opts[s].step) and
   m->opt_loaded[s] is set. On failure a zeroed model stays zeroed; an initialised one may
   have some stores loaded. */
HIGAN_DEF higan_status higan_model_load(higan_model *m, const char *path, unsigned nets,
                                        higan_adam *opts);
HIGAN_DEF higan_status higan_model_load_safetensors(higan_model *m, const higan_safetensors *st,
                                                    unsigned nets, higan_adam *opts);

/* ---- generation ------------------------------------------------------------------------------
   Images are float [H, W] in [-1, 1] with the ink bright and the background -1 (the official
   convention; display as (1 - x) * 127.5). A word is 16 * bottom = 64 pixels high and gets
   8 * bottom = 32 pixels per character. The calls below run in eval mode under no_grad on
   the caller's tape and give the arena back (mark/release) before returning. An arena that
   is too small gives HIGAN_ERR_NOMEM; arena.needed is then a lower bound (the forward stops
   at the first allocation that fails) and the overflow stays until higan_tape_reset or a
   new arena: grow it (e.g. double) and call again. The official Generator needs about
   31 MB for 2 characters, 93 MB for 10, 171 MB for 20 (about 15 + 7.8 per character). */
#define HIGAN_IMAGE_HEIGHT 64
#define HIGAN_CHAR_WIDTH 32            /* style references are resized to 32 px per character */
#define HIGAN_MAX_WORD_LEN 64          /* characters in one generated word or style reference */
#define HIGAN_MAX_IMAGE_WIDTH 65536    /* widest input image (pixels) */

/* Generates one word (spaces are characters too: the official demo splits a line into
   words first) in the given style (G.style_dim floats, e.g. from higan_style_from_image or
   higan_style_random) into out [input_nc, 16*bottom, 8*bottom*len], out_cap floats.
   Returns the image width in pixels, or a negative status: HIGAN_ERR_ARG for empty text, a
   character outside the alphabet (named, with its position), more than HIGAN_MAX_WORD_LEN
   characters, out_cap too small, or a model without a Generator. out NULL: checks the text
   and returns the width only. Note: as PyTorch's Embedding(max_norm=1), the looked-up
   embedding rows are renormalised in place (the first use changes them, later ones not). */
HIGAN_DEF int higan_generate_word(higan_model *m, higan_tape *t, const char *text, const float *style,
                                  float *out, int64_t out_cap);
/* Style of a reference word image img [64, W] (ink bright, in [-1, 1]) showing n_chars
   characters: resized to 32 * n_chars pixels wide (higan_image_resize: area when
   shrinking, linear when enlarging), StyleBackbone then StyleEncoder (eval, mu), into
   style_out [G.style_dim]. HIGAN_ERR_ARG for W outside 1..HIGAN_MAX_IMAGE_WIDTH, n_chars
   outside 1..HIGAN_MAX_WORD_LEN, or a model without StyleBackbone or StyleEncoder. */
HIGAN_DEF higan_status higan_style_from_image(higan_model *m, higan_tape *t, const float *img, int64_t W,
                                              int n_chars, float *style_out);
/* A random style: G.style_dim draws of N(0, 1) (the official z ~ N(0, I)). */
HIGAN_DEF void higan_style_random(const higan_model *m, higan_rng *rng, float *style_out);

/* A photo or scan of a word (8-bit pixels, rows top to bottom, channels 1 gray, 2 gray +
   alpha, 3 RGB, 4 RGBA) to the network input: gray (0.299 R + 0.587 G + 0.114 B; alpha
   composited over white), scaled to 64 pixels high keeping the aspect ratio (width
   floor(w * 64 / h), at least 1; area when shrinking, linear when enlarging, as the
   official ImageDataset), inverted so the ink is bright, mapped to [-1, 1]: out [64, width].
   Returns the width, or a negative status (HIGAN_ERR_ARG: empty image, a side over 32768,
   a result wider than HIGAN_MAX_IMAGE_WIDTH, out_cap < 64 * width floats). out NULL:
   returns the width only. */
HIGAN_DEF int higan_image_to_input(const unsigned char *pixels, int w, int h, int channels,
                                   float *out, int64_t out_cap);
/* Resamples x [in_h, in_w] to y [out_h, out_w], each axis separately as OpenCV's
   cv2.resize does it: INTER_AREA (exact pixel-area weights) on an axis that shrinks,
   INTER_LINEAR (half-pixel centres, edges clamped) on one that enlarges or keeps its size.
   Computed in float (OpenCV rounds uint8 results; the difference is below 1/255).
   HIGAN_ERR_NOMEM for the small weight tables, HIGAN_ERR_ARG for a size < 1. */
HIGAN_DEF higan_status higan_image_resize(float *y, int64_t out_h, int64_t out_w, const float *x,
                                          int64_t in_h, int64_t in_w);

/* ---- styles: several references, interpolation, files ----------------------------------------
   A style is G.style_dim floats (the StyleEncoder's mu, or z ~ N(0, I)). */
/* out = the mean of n styles (styles [n, dim], row-major), summed in double. n >= 1. */
HIGAN_DEF void higan_style_average(const float *styles, int n, int64_t dim, float *out);
/* Style of several reference word images: higan_style_from_image of each (imgs[i] [64,
   widths[i]] showing n_chars[i] characters), then averaged (higan_style_average). Errors as
   higan_style_from_image, naming the reference index; HIGAN_ERR_ARG for n < 1. */
HIGAN_DEF higan_status higan_style_from_images(higan_model *m, higan_tape *t, const float *const *imgs,
                                               const int64_t *widths, const int *n_chars, int n,
                                               float *style_out);
/* out = a + w (b - a), as torch.lerp (computed as b - (b - a)(1 - w) when w >= 0.5, so w = 0
   gives exactly a and w = 1 exactly b). The official eval_interp uses w = i / (steps - 1). */
HIGAN_DEF void higan_style_lerp(const float *a, const float *b, int64_t dim, float w, float *out);
/* A style file: safetensors with one F32 tensor "style" of shape [dim] (metadata
   "higan.style_dim"). Save writes path.tmp and renames it. Load accepts [dim] or [1, dim]
   and returns dim, or a negative status: HIGAN_ERR_IO/FORMAT (named), HIGAN_ERR_ARG when
   dim > cap floats (style NULL with cap 0: returns dim only). */
HIGAN_DEF higan_status higan_style_save(const char *path, const float *style, int64_t dim);
HIGAN_DEF int64_t higan_style_load(const char *path, float *style, int64_t cap);

/* ---- long text: words in one style laid out as lines ---------------------------------------
   Words are placed left to right, word_gap pixels apart, inside a page of max_width pixels
   (margins included): a word that does not fit on the current line starts the next one
   (greedy wrapping; a word wider than the line gets a line of its own and widens the page).
   With align_baseline every word of a line is shifted vertically so that their baselines
   (higan_word_baseline) lie on one row; otherwise their tops are aligned. A line is as tall
   as its tallest ascent (baseline row) plus its tallest descent (height - baseline); lines
   follow each other line_gap pixels apart. Overlapping pixels keep the brighter (inkier)
   value, so the result does not depend on the drawing order. */
typedef struct higan_layout_options {
    int64_t max_width;    /* page width in pixels; 0: no wrapping (one line per paragraph,
                             the page as wide as its widest line) */
    int64_t word_gap;     /* pixels between the images of neighbouring words (16) */
    int64_t line_gap;     /* pixels between one line's bottom and the next line's top (0) */
    int64_t margin;       /* blank pixels around the text on every side (8) */
    int align_baseline;   /* 1: common baseline per line (default); 0: tops aligned */
} higan_layout_options;
HIGAN_DEF higan_layout_options higan_layout_default_options(void);

/* Baseline of a word image img [H, W] (ink bright, in [-1, 1]): the row just below the
   writing's core (x-height) band, where the ink density drops. Ink row profile
   p(y) = sum over x of clamp(img, 0, 1) (pixels brighter than mid-gray, by strength); the
   threshold is half the mean of p over the inked rows (p >= 0.1 max p); the rows at or above
   it form runs (gaps of up to 2 rows bridged), and the run holding the most ink is the core
   band: the baseline is the row after its last row. Ascenders and descenders (b, d, g, p, y)
   are thinner than the core, so they fall below the threshold; capitals are dense over their
   whole height, so their band is the whole letter. An image without ink gives the default
   5 H / 8. Returns a row in [1, H]. */
HIGAN_DEF int64_t higan_word_baseline(const float *img, int64_t H, int64_t W);

typedef struct higan_page_word {
    int64_t x, y;         /* top-left corner of the word image on the page */
    int64_t width;        /* image width */
    int64_t baseline;     /* its baseline row inside its image (0 when not aligning) */
    int64_t line;         /* 0-based line index */
} higan_page_word;
typedef struct higan_page {
    int64_t width, height;
    float *pixels;        /* [height, width], ink bright in [-1, 1], background -1 */
    int64_t n_words, n_lines;
    higan_page_word *words;   /* [n_words] where each word went */
} higan_page;
/* Lays out n word images imgs[i] [H, widths[i]] (row-major) on a new page (free it with
   higan_page_free). breaks (may be NULL): breaks[i] != 0 starts a new line at word i (a
   paragraph break). opt NULL: the defaults. HIGAN_ERR_ARG for n < 1, H < 1, a width < 1,
   negative options or a page over 2^31 pixels; HIGAN_ERR_NOMEM. On error the page is zeroed. */
HIGAN_DEF higan_status higan_layout_words(higan_page *page, const float *const *imgs, const int64_t *widths,
                                          const int *breaks, int64_t n, int64_t H,
                                          const higan_layout_options *opt);
HIGAN_DEF void higan_page_free(higan_page *page);     /* safe on a zeroed page */
/* Generates text in one style and lays it out (higan_layout_words): words are separated by
   spaces, tabs and carriage returns, and a newline ends a paragraph (the next word starts a
   new line). Each word is one higan_generate_word call (channel 0 of the output). Errors as
   higan_generate_word (naming the word), HIGAN_ERR_ARG for text without words. On
   HIGAN_ERR_NOMEM from the arena, nothing is kept: grow the arena and call again. */
HIGAN_DEF higan_status higan_generate_text(higan_model *m, higan_tape *t, const char *text, const float *style,
                                           const higan_layout_options *opt, higan_page *page);
/* An image in [-1, 1] (ink bright) to 8-bit pixels. transparent 0: one gray byte per pixel,
   dark ink on white, round((1 - v) * 127.5); transparent 1: two bytes per pixel (gray +
   alpha, as PNG's gray-alpha), black ink whose alpha is the ink, round((v + 1) * 127.5).
   v is clamped to [-1, 1] first. out: n or 2 n bytes. */
HIGAN_DEF void higan_image_to_pixels(const float *x, int64_t n, int transparent, unsigned char *out);

#endif /* HIGAN_MODEL_API_INCLUDED */
