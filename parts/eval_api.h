#ifndef HIGAN_EVAL_API_INCLUDED
#define HIGAN_EVAL_API_INCLUDED
/* ==== EVALUATION: text and writer metrics, FID/KID, PSNR/SSIM, the test-set evaluation =====
   HiGAN+'s AdversarialModel.validate and metric/ (spec section 6), with these differences:
   - CER/WER use the correct Levenshtein distance between the decoded text and the true label.
     The official code passes both through LabelConverter.decode, which also collapses
     repeated letters of the ground truth ("hello" -> "helo"), so it scores "helo" as a
     perfect reading of "hello" and "hello" as one error.
   - FID/KID are computed on features of the project's own StyleBackbone (or any backbone the
     caller passes, e.g. the Recognizer's CNN or a StyleBackbone from another checkpoint),
     not on the TF-Inception pool features (those weights are not available here). The
     numbers are therefore not comparable with published FID/KID values, only with each
     other for the same feature backbone.
   - FID takes the matrix square root through symmetric eigen-decompositions (Jacobi, in
     double): tr sqrtm(C1 C2) = tr sqrtm(sqrt(C1) C2 sqrt(C1)), eigenvalues below 1e-12 of
     the largest (rounding noise of singular covariances, e.g. fewer samples than
     dimensions) taken as 0, where scipy's sqrtm of the non-symmetric product may fail or
     add 1e-6 to the diagonals.
   - KID draws its subsets with the library RNG (the official code uses numpy's global RNG),
     so its value for n > subset size differs by the subset noise; for n <= subset size every
     subset is a permutation of the whole set and the result is exact. */

/* ---- edit distance, CER, WER -------------------------------------------------------------- */
/* Levenshtein distance (insertions, deletions and substitutions, cost 1 each) between two
   label sequences. Returns the distance, or HIGAN_ERR_NOMEM (a row of nb + 1 integers is
   allocated when nb > 255). */
HIGAN_DEF int64_t higan_edit_distance(const int *a, int64_t na, const int *b, int64_t nb);
/* The same between two UTF-8 strings, by code point (a byte that is not valid UTF-8 counts
   as one character). */
HIGAN_DEF int64_t higan_edit_distance_utf8(const char *a, const char *b);
/* Characters (code points) of a UTF-8 string, counted as higan_edit_distance_utf8 does. */
HIGAN_DEF int64_t higan_utf8_length(const char *s);

/* Accumulated character and word errors of (hypothesis, reference) pairs, one word each, as
   the official validate_ocr: CER = sum of distances / sum of reference lengths; WER = the
   fraction of pairs whose distance is not 0. */
typedef struct higan_text_score {
    int64_t edits, ref_chars;   /* sum of Levenshtein distances, sum of reference lengths */
    int64_t words, wrong_words; /* pairs, pairs with any error */
} higan_text_score;
HIGAN_DEF void higan_text_score_init(higan_text_score *s);
HIGAN_DEF higan_status higan_text_score_add(higan_text_score *s, const char *hyp, const char *ref);
HIGAN_DEF double higan_text_score_cer(const higan_text_score *s);   /* NaN when empty */
HIGAN_DEF double higan_text_score_wer(const higan_text_score *s);   /* NaN when empty */

/* ---- writer identification ------------------------------------------------------------------ */
/* Index of the largest of n values (the first one on ties, as torch.max). */
HIGAN_DEF int64_t higan_argmax(const float *x, int64_t n);
/* Writer-identification error rate, as the official validate_wid: 1 - the fraction of
   samples whose generated image gets the same predicted writer as its real image. NaN for n 0. */
HIGAN_DEF double higan_wier(const int *pred_real, const int *pred_fake, int64_t n);

/* ---- FID and KID ------------------------------------------------------------------------------ */
/* Eigen-decomposition of a symmetric matrix a [n, n] (row-major, double; destroyed) by the
   cyclic Jacobi method: eigenvalues in w [n] (not sorted), eigenvectors as the columns of v
   [n, n] (may be NULL). HIGAN_ERR_NOMEM, or HIGAN_ERR_FORMAT when 100 sweeps do not converge. */
HIGAN_DEF higan_status higan_sym_eig(double *a, int64_t n, double *w, double *v);
/* Fréchet distance between Gaussian fits of the rows of a [na, d] and b [nb, d]: means and
   unbiased covariances (np.cov, rowvar False), ||mu_a - mu_b||^2 + tr C_a + tr C_b
   - 2 tr sqrtm(C_a C_b). HIGAN_ERR_ARG for na or nb < 2 or d < 1; HIGAN_ERR_NOMEM. */
HIGAN_DEF higan_status higan_fid(const float *a, int64_t na, const float *b, int64_t nb, int64_t d, double *fid);
/* Unbiased MMD^2 between the rows of a [na, d] and b [nb, d] with the cubic polynomial
   kernel k(x, y) = (x.y / d + 1)^3: sum_{i != j} k(a_i, a_j) / (na (na - 1)) + the same for
   b - 2 sum k(a_i, b_j) / (na nb) (for na = nb the official _mmd2_and_variance 'unbiased').
   HIGAN_ERR_ARG for na or nb < 2. Sums in double. */
HIGAN_DEF higan_status higan_mmd2_poly(const float *a, int64_t na, const float *b, int64_t nb, int64_t d, double *mmd2);
/* KID as the official polynomial_mmd_averages x 100: the mean of higan_mmd2_poly over
   n_subsets pairs of random subsets (each drawn without replacement from rng: a's indices,
   then b's), both of size min(subset_size, na, nb). Official: 50 subsets of 1000. */
HIGAN_DEF higan_status higan_kid(const float *a, int64_t na, const float *b, int64_t nb, int64_t d,
                                 int n_subsets, int64_t subset_size, higan_rng *rng, double *kid);

/* ---- PSNR and SSIM ------------------------------------------------------------------------------ */
/* Images in [0, 1] (data_range 1), as skimage.metrics (0.19). PSNR = 10 log10(1 / MSE) over n
   pixels (+inf for identical images). */
HIGAN_DEF double higan_psnr(const float *x, const float *y, int64_t n);
/* SSIM of x, y [H, W] as structural_similarity(x, y, win_size=7, data_range=1): 7x7 uniform
   window means, sample (co)variances (x 49/48), C1 = 0.01^2, C2 = 0.03^2, the SSIM map
   averaged over the positions whose window lies inside the image (skimage crops 3 pixels on
   every side). In double (skimage computes in the input's precision, float32 for the official
   float32 arrays). NaN when H or W is below 7 (skimage raises an error). */
HIGAN_DEF double higan_ssim(const float *x, const float *y, int64_t H, int64_t W);

/* ---- resampling as the official rescale_images -------------------------------------------- */
/* x [H, in_w] -> y [H, out_w] as F.interpolate(x, (H, out_w)): mode 'area' (adaptive average
   pooling: output column j averages input columns floor(j in_w / out_w) .. ceil((j + 1) in_w
   / out_w) - 1) when out_w < in_w, else 'bilinear' with align_corners=False (half-pixel
   centres, clamped at the edges; float as PyTorch). The height is kept (an identity in both). */
HIGAN_DEF void higan_rescale_width(float *y, int64_t out_w, const float *x, int64_t H, int64_t in_w);

/* ---- backbone features ---------------------------------------------------------------------- */
/* Feature of one word image for FID/KID: img [64, W] (ink bright, in [-1, 1]) padded on the
   right with -1 to a multiple of 32, through the backbone (eval mode, under no_grad), and
   the final sequence feature [out_dim, T] averaged over its first ceil(W / 16) positions
   (the columns the word covers; the official Inception feature is likewise a masked mean
   over the word's columns). feat: b->out_dim floats. Uses t's arena and gives it back.
   HIGAN_ERR_NOMEM when the arena is too small (grow it and call again), HIGAN_ERR_ARG. */
HIGAN_DEF higan_status higan_backbone_features(const higan_style_backbone *b, higan_tape *t, const float *img,
                                               int64_t W, float *feat);

/* ---- the test-set evaluation ---------------------------------------------------------------- */
/* Per record of the dataset, in order (as the official validate in guided mode, spec §6):
     real     the stored image ([64, w], pixels v / 127.5 - 1) and its style image: resized to
              32 * len(label) wide (cv2 INTER_AREA when narrower, INTER_LINEAR otherwise, as
              the loader's process_style);
     fake     G(E(B(style image)), label): the same text in the encoded style (mu), 32 * len
              wide; rescaled to w with higan_rescale_width (the official rescale_images);
     CER/WER  the Recognizer reads the real and the fake style-width images (greedy CTC);
     WID      the WriterIdentifier (on its backbone) predicts the writer of the real and the
              fake style-width images: WIER (disagreement) and, against the dataset's writer
              ids minus wid_offset, the accuracy on real and on generated images;
     FID/KID  higan_backbone_features of the real and of the rescaled fake images (width w);
     PSNR/SSIM  real vs rescaled fake, (x + 1) / 2, per image, averaged.
   Records whose label is longer than HIGAN_MAX_WORD_LEN are skipped (counted). The arena is
   the evaluation's own and grows as needed. Results are the same for any thread count. */
typedef struct higan_eval_options {
    int64_t limit;                   /* evaluate the first limit records (0: all) */
    uint64_t seed;                   /* the KID subsets' RNG seed (0) */
    int kid_subsets;                 /* 50 */
    int64_t kid_subset_size;         /* 1000 */
    const higan_recognizer *R;       /* NULL: the model's Recognizer; none: CER/WER are NaN */
    const higan_writer_identifier *W;    /* NULL: the model's WriterIdentifier; none: NaN */
    const higan_style_backbone *W_backbone; /* the backbone W reads (NULL: the model's) */
    const higan_style_backbone *feature_backbone; /* FID/KID features (NULL: the model's B) */
    int wid_offset;                  /* subtracted from the writer ids (-1: the dataset's minimum,
                                        as the loader does) */
    size_t arena_bytes;              /* initial arena (0: 64 MB) */
    /* called after each record (may be NULL) */
    void (*progress)(void *user, int64_t done, int64_t total);
    /* called with each real and rescaled fake image [64, w] (may be NULL) */
    void (*on_pair)(void *user, int64_t record, const float *real, const float *fake, int64_t w,
                    const char *label, const char *read_real, const char *read_fake);
    void *user;
} higan_eval_options;
HIGAN_DEF higan_eval_options higan_eval_default_options(void);

typedef struct higan_eval_result {
    int64_t n;                     /* records evaluated */
    int64_t n_skipped;             /* records left out (label too long) */
    double cer_real, wer_real;     /* the Recognizer on the real images (reference) */
    double cer_fake, wer_fake;     /* ... on the generated images */
    double wier;                   /* writer-ID error of generated vs real predictions */
    double wid_acc_real, wid_acc_fake; /* writer-ID accuracy against the dataset ids (NaN when
                                          an id falls outside the WriterIdentifier's classes) */
    double fid, kid;               /* backbone features, real vs generated; kid x 100 */
    int64_t feature_dim;
    double psnr, ssim;             /* means over the images (ssim over those >= 7 wide) */
    int64_t n_ssim;
} higan_eval_result;
/* m needs a Generator, a StyleEncoder and a StyleBackbone. HIGAN_ERR_ARG (missing networks,
   an empty dataset), HIGAN_ERR_NOMEM, or an error of a network forward. */
HIGAN_DEF higan_status higan_evaluate(higan_model *m, const higan_dataset *ds, const higan_eval_options *opt,
                                      higan_eval_result *res);
#endif /* HIGAN_EVAL_API_INCLUDED */
