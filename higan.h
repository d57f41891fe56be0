/* higan.h - v0.1.0 - HiGAN+ handwriting generation in portable C99 - MIT or public domain

   Trains and runs HiGAN+ (Gan, Kang, Wang, Zhou, Lu: "HiGAN+: Handwriting Imitation GAN
   with Disentangled Representations", ACM TOG 2022) without Python.

   USAGE
   -----
   Do this in *one* C or C++ file:
       #define HIGAN_IMPLEMENTATION
       #include "higan.h"
   Every other file includes "higan.h" without the define.

   CONFIGURATION MACROS (define before the implementation include)
       HIGAN_STATIC            make every function static (private to that file)
       HIGAN_DEF               linkage of public functions (default: extern, extern "C" in C++)
       HIGAN_MALLOC(sz)        allocator (default malloc); define HIGAN_MALLOC, HIGAN_REALLOC
       HIGAN_REALLOC(p,sz)     and HIGAN_FREE all three or none
       HIGAN_FREE(p)
       HIGAN_ASSERT(c)         programmer-error check (default: message + abort callback + abort())
       HIGAN_NO_SIMD           compile only the scalar kernels
       HIGAN_NO_AVX512         compile scalar and AVX2 kernels only (no bf16 or AMX kernels)
       HIGAN_NO_AMX            leave out the AMX-BF16 kernel (and its arch_prctl request)
       HIGAN_HDF5              read/write HiGAN+ .hdf5 datasets through libhdf5 (link -lhdf5)
       HIGAN_NO_THREADS        no background thread in the data loader
   Environment (each read once, at first use):
       HIGAN_CPU=scalar|avx2|avx512|avx512bf16|amx   force a CPU kernel level (a level this CPU
                                      lacks falls back to the best one, with a message)
       HIGAN_PRECISION=fp32|bf16      GEMM precision (default fp32; bf16: bf16 operands, fp32
                                      sums, fp32 tensors: see higan_set_precision)
       HIGAN_THREADS=n                threads for the parallel kernels (OpenMP builds)
       OMP_WAIT_POLICY=passive        advisable on a machine busy with other work

   CONVENTIONS
       - Tensors are float32, row-major, NCHW. Sizes are int64_t.
       - Every op is a pair of plain functions on float arrays, outputs first:
             higan_<op>_forward (y, ..., x, params, dims)
             higan_<op>_backward(dx, dparams..., dy, saved..., dims)
         Backward ACCUMULATES (+=) into every gradient; a NULL gradient pointer means
         "not needed" and that work is skipped.
       - On top sits a light tape (higan_tape): higan_<op>(tape, vars...) runs the forward
         kernel, allocates its output in the per-step arena and records the backward.
         higan_tape_backward() gives gradients of any scalar with respect to every
         leaf and parameter that requires one (intermediates with v->retain_grad).
       - No allocation happens in forward or backward: activations and caches come from a
         fixed arena (higan_arena). Overflow is sticky and reported with the size needed.
         Spent gradients (and, in higan_tape_backward_release, spent values) go back into
         the arena for reuse as the backward passes them.
       - I/O and format errors return a higan_status (< 0) and set higan_last_error().
         Programmer errors (wrong shapes) trip HIGAN_ASSERT. The library never calls exit().

   API INDEX (each layer/op name is a tape op higan_<name>(tape, ...) over raw kernels
   higan_<name>_forward / higan_<name>_backward)
       errors      higan_last_error, higan_set_error, higan_set_abort_callback
       cpu         higan_cpu_detect, higan_cpu_level, higan_cpu_set_level, higan_cpu_level_name,
                   higan_set_num_threads, higan_get_num_threads, higan_set_precision,
                   higan_get_precision, higan_bf16_round
       memory      higan_arena_init/free/reset/alloc/floats/zeros/mark/release/status,
                   higan_arena_alloc_recycled, higan_arena_recycle
       rng         higan_rng_seed, higan_rng_u64, higan_rng_uniform, higan_rng_normal,
                   higan_rng_fill_normal, higan_rng_fill_uniform
       params      higan_params_init/add/alloc/free/find/zero_grad, higan_params_data,
                   higan_params_grad, higan_params_idata; on a backend: higan_params_to_backend,
                   higan_params_download/upload/read/write, higan_params_mirror_*
       tape        higan_tape_init/free/reset/status/backward/backward_release/grad_wrt,
                   higan_var_new,
                   higan_var_wrap, higan_param_var, higan_var_grad, higan_var_has_grad,
                   higan_op_output, higan_tape_record, higan_tape_ctx, higan_no_grad_begin/end
       gemm        higan_gemm, higan_gemm_ref, higan_gemm_ref_bf16, higan_gemm_free_buffers,
                   higan_gemm_flops, higan_gemm_flops_reset
       layers      conv2d, upsample_conv2d (+ higan_conv2d_upsampled_forward[_wp]/_weights), linear,
                   spectral_norm, batch_norm2d, cond_batch_norm, embedding, lstm
       shape       upsample_nearest, avg_pool2, max_pool3s2, pad, concat, slice, split, reshape,
                   permute, masked_sum_width, masked_mean_width, dropout, extract_patches
       elementwise relu, leaky_relu, tanh, log_softmax, add, sub, mul, scale, add_nc, sum_all,
                   mean_all, exp
       losses      ctc_loss (+ higan_ctc_greedy_decode), cross_entropy, hinge_d_real,
                   hinge_d_fake, hinge_g, masked_l1, kl_gaussian, cx_loss
       optimizer   higan_adam_default, higan_adam_step, higan_adam_update, higan_lr_linear_decay
       files       higan_safetensors_load/parse/free/find/read_f32/read_i64/meta,
                   higan_safetensors_writer_init/add/meta/save/free,
                   higan_params_add_to_writer, higan_params_load
       networks    higan_generator_*, higan_discriminator_*, higan_style_backbone_*,
                   higan_style_encoder_*, higan_writer_identifier_*, higan_recognizer_*
                   (_register, _init, _forward), modules higan_sn_linear_*, higan_sn_conv2d_*,
                   higan_ccbn_*, higan_gblock_*, higan_dblock_*, higan_conv_block_*,
                   higan_afrb_*, higan_bn2d_*, higan_linear_layer_*
       text        higan_alphabet, higan_char_label, higan_text_encode, higan_text_decode,
                   higan_ctc_decode_text
       model       higan_model_default_config, higan_model_init/free/save/load,
                   higan_model_num_params, higan_net_name, higan_model_to_backend
       generation  higan_generate_word(s), higan_generate_text, higan_style_from_image(s),
                   higan_style_random, higan_style_average, higan_style_lerp,
                   higan_style_save/load, higan_image_to_input, higan_image_resize
       data        higan_dataset_init/append/save/load/free/label/pixel/image,
                   higan_loader_init/next/free, higan_lexicon_load/sample,
                   higan_resize_area/linear/pil
       evaluation  higan_edit_distance, higan_text_score_*, higan_wier, higan_fid, higan_kid,
                   higan_psnr, higan_ssim, higan_backbone_features, higan_evaluate
       backends    higan_cpu_backend, higan_tape_set_backend, higan_backend_arena_init/free,
                   higan_tape_sync, higan_tape_mark/release, higan_var_upload, higan_var_read,
                   higan_params_set_device (CUDA: higan_cuda_backend in higan_cuda.cuh)

   A SMALL TRAINING STEP
       higan_params P; higan_arena A; higan_tape T; higan_adam opt = higan_adam_default(1e-3f);
       higan_params_init(&P);
       int w = higan_params_add(&P, "fc.weight", HIGAN_PARAM, 2, (int64_t[]){10, 4});
       int b = higan_params_add(&P, "fc.bias",   HIGAN_PARAM, 1, (int64_t[]){10});
       higan_params_alloc(&P);                            // one block each: values, grads, m, v
       higan_arena_init(&A, 1 << 20); higan_tape_init(&T, &A, 1024);
       for (step = 0; step < 100; ++step) {
           higan_tape_reset(&T);  higan_params_zero_grad(&P);
           higan_var *x = higan_var_wrap(&T, xs, 2, (int64_t[]){8, 4});
           higan_var *logits = higan_linear(&T, x, higan_param_var(&T, &P, w),
                                            higan_param_var(&T, &P, b));
           higan_var *loss = higan_cross_entropy(&T, logits, labels);
           if (!loss) { puts(higan_last_error()); break; }    // arena overflow etc.
           higan_tape_backward(&T, loss, NULL);
           higan_adam_step(&opt, &P);
       }
*/
#ifndef HIGAN_H
#define HIGAN_H

#define HIGAN_VERSION_MAJOR 0
#define HIGAN_VERSION_MINOR 1
#define HIGAN_VERSION_PATCH 0
#define HIGAN_VERSION_STRING "0.1.0"

#include <stddef.h>
#include <stdint.h>

#ifndef HIGAN_DEF
#  if defined(HIGAN_STATIC) && defined(__GNUC__)
#    define HIGAN_DEF static __attribute__((unused))   /* a user need not call everything */
#  elif defined(HIGAN_STATIC)
#    define HIGAN_DEF static
#  elif defined(__cplusplus)
#    define HIGAN_DEF extern "C"
#  else
#    define HIGAN_DEF extern
#  endif
#endif

/* ==== ERRORS ============================================================ */
typedef int higan_status;
enum {
    HIGAN_OK = 0,
    HIGAN_ERR_IO = -1,        /* open/read/write/rename failed */
    HIGAN_ERR_FORMAT = -2,    /* malformed or unexpected file content */
    HIGAN_ERR_NOMEM = -3,     /* malloc failed or arena overflow */
    HIGAN_ERR_ARG = -4,       /* invalid user input (text, sizes, names) */
    HIGAN_ERR_UNSUPPORTED = -5, /* e.g. forcing a CPU level this CPU lacks */
    HIGAN_ERR_DEVICE = -6      /* GPU runtime or library failure (higan_cuda.cuh) */
};
/* The message of the last error of this thread ("" if none). */
HIGAN_DEF const char *higan_last_error(void);
/* Sets that message (printf format) and returns status: for code built on higan (backends). */
HIGAN_DEF higan_status higan_set_error(higan_status status, const char *fmt, ...);
/* Called (with file, line and the failed expression) before abort() on HIGAN_ASSERT. */
typedef void (*higan_abort_callback)(const char *file, int line, const char *expr);
HIGAN_DEF void higan_set_abort_callback(higan_abort_callback cb);

/* ==== CPU LEVEL AND THREADS ============================================== */
/* Kernel levels, each including the ones below: AVX2+FMA, AVX-512F, AVX-512F + AVX512_BF16
   (vdpbf16ps: bf16 GEMMs at twice the fp32 rate), AMX-BF16 tiles (bf16 GEMMs; needs Linux's
   arch_prctl(ARCH_REQ_XCOMP_PERM) grant, asked for at detection). fp32 work is the same at
   the three top levels. */
typedef enum {
    HIGAN_CPU_SCALAR = 0, HIGAN_CPU_AVX2 = 1, HIGAN_CPU_AVX512 = 2, HIGAN_CPU_AVX512BF16 = 3,
    HIGAN_CPU_AMX = 4
} higan_cpu;
HIGAN_DEF higan_cpu higan_cpu_detect(void);    /* best level this CPU and build support */
HIGAN_DEF higan_cpu higan_cpu_level(void);     /* the level in use (HIGAN_CPU honoured) */
HIGAN_DEF higan_status higan_cpu_set_level(higan_cpu level);
HIGAN_DEF const char *higan_cpu_level_name(higan_cpu level);
HIGAN_DEF void higan_set_num_threads(int n);          /* results never depend on n */
HIGAN_DEF int higan_get_num_threads(void);
/* Precision of every GEMM (higan_gemm, conv2d, linear, LSTM gates, contextual loss):
   HIGAN_PRECISION_BF16 rounds both operands to bfloat16 (round to nearest even; inputs below
   FLT_MIN count as zero, as the AVX512_BF16 instructions do) and accumulates in fp32; every
   tensor stays fp32 (parameters, gradients and Adam state are the master copies), so training
   and inference use it unchanged: mixed precision. Default fp32, or HIGAN_PRECISION=bf16|fp32
   in the environment (read once). Fast at HIGAN_CPU_AVX512BF16 and above; below, the same
   numbers at the fp32 speed (the operands are rounded when packed). */
typedef enum { HIGAN_PRECISION_FP32 = 0, HIGAN_PRECISION_BF16 = 1 } higan_precision;
HIGAN_DEF void higan_set_precision(higan_precision p);
HIGAN_DEF higan_precision higan_get_precision(void);
HIGAN_DEF float higan_bf16_round(float x);     /* x rounded to bf16 (as an fp32 value) */

/* ==== ARENA: per-step memory for activations and backward caches ======== */
typedef struct higan_arena {
    unsigned char *base;
    size_t capacity;   /* bytes */
    size_t used;       /* bytes handed out (64-byte aligned) */
    size_t needed;     /* bytes that would have been needed (> capacity after overflow) */
    size_t peak;       /* high-water mark over the arena's life */
    int overflow;      /* sticky until reset */
    void *recycled;    /* blocks handed back for reuse (tape variables), address order */
    size_t recycled_bytes;
} higan_arena;
HIGAN_DEF higan_status higan_arena_init(higan_arena *a, size_t capacity);
HIGAN_DEF void higan_arena_free(higan_arena *a);
HIGAN_DEF void higan_arena_reset(higan_arena *a);
/* 64-byte aligned, uninitialised; NULL on overflow (then higan_arena_status says how much). */
HIGAN_DEF void *higan_arena_alloc(higan_arena *a, size_t bytes);
HIGAN_DEF float *higan_arena_floats(higan_arena *a, int64_t count);       /* uninitialised */
HIGAN_DEF float *higan_arena_zeros(higan_arena *a, int64_t count);        /* zero-filled */
HIGAN_DEF size_t higan_arena_mark(const higan_arena *a);                  /* for scratch */
HIGAN_DEF void higan_arena_release(higan_arena *a, size_t mark);
/* Blocks in the middle of the arena can be handed back (higan_arena_recycle) and are then
   reused, best fit first, by higan_arena_alloc_recycled: the tape's variables and gradients
   use this, so a backward pass reuses the memory of the values it no longer needs.
   Scratch taken between a mark and its release keeps using the top of the arena. */
HIGAN_DEF void *higan_arena_alloc_recycled(higan_arena *a, size_t bytes);
HIGAN_DEF void higan_arena_recycle(higan_arena *a, void *p, size_t bytes);
HIGAN_DEF higan_status higan_arena_status(const higan_arena *a);

/* ==== RNG: xoshiro256**, explicit state, bit-reproducible =============== */
typedef struct higan_rng { uint64_t s[4]; } higan_rng;
HIGAN_DEF void higan_rng_seed(higan_rng *r, uint64_t seed);
HIGAN_DEF uint64_t higan_rng_u64(higan_rng *r);
HIGAN_DEF float higan_rng_uniform(higan_rng *r);                 /* [0, 1) */
HIGAN_DEF float higan_rng_normal(higan_rng *r);                  /* N(0, 1), Box-Muller */
HIGAN_DEF void higan_rng_fill_normal(higan_rng *r, float *x, int64_t n, float mean, float std);
HIGAN_DEF void higan_rng_fill_uniform(higan_rng *r, float *x, int64_t n, float lo, float hi);

/* ==== PARAMETER STORE ===================================================== */
/* Two phases: register every tensor (higan_params_add), then higan_params_alloc points
   each one into a single block per kind. Trainable parameters own a value, a gradient and
   Adam m and v; buffers (running stats, spectral-norm u0/sv0) own a value only. */
typedef enum { HIGAN_PARAM = 0, HIGAN_BUFFER = 1, HIGAN_BUFFER_I64 = 2 } higan_param_kind;
#define HIGAN_MAX_NAME 128
struct higan_backend;
/* A store's copy in a backend's memory (higan_params_mirror_init): the store's offsets in one
   allocation (be->alloc), laid out value | grad | adam_m | adam_v | buffer | ibuffer |
   buffer_copy, each part 256-byte aligned. higan_cuda.cuh's higan_cuda_params is this struct. */
typedef struct higan_params_mirror {
    float *value, *grad, *adam_m, *adam_v;   /* n_param each */
    float *buffer;                           /* n_buffer */
    int64_t *ibuffer;                        /* n_ibuffer */
    float *buffer_copy;                      /* n_buffer: room for a copy of the buffers (the
                                                trainers' snapshots for retried steps) */
    int64_t n_param, n_buffer, n_ibuffer;
    void *block;                             /* the one allocation */
} higan_params_mirror;
/* What a copy between a store and its mirror moves (or-ed). */
enum {
    HIGAN_PARAMS_VALUES = 1,    /* trainable values */
    HIGAN_PARAMS_GRADS = 2,
    HIGAN_PARAMS_ADAM = 4,      /* Adam m and v */
    HIGAN_PARAMS_BUFFERS = 8,   /* float buffers (running stats, spectral-norm u0 / sv0) */
    HIGAN_PARAMS_IBUFFERS = 16, /* int64 buffers (num_batches_tracked) */
    HIGAN_PARAMS_STATE = 1 | 4 | 8,   /* what a checkpoint needs from a device-trained store */
    HIGAN_PARAMS_ALL = 31
};
typedef struct higan_param_entry {
    char name[HIGAN_MAX_NAME];
    higan_param_kind kind;
    int ndim;
    int64_t shape[4];
    int64_t numel;
    size_t offset;      /* elements into the block of its kind */
} higan_param_entry;
typedef struct higan_params {
    higan_param_entry *entries;
    int count, capacity;
    int64_t n_param, n_buffer, n_ibuffer;   /* elements per kind */
    float *value, *grad, *adam_m, *adam_v;  /* n_param each */
    float *buffer;                          /* n_buffer */
    int64_t *ibuffer;                       /* n_ibuffer (e.g. num_batches_tracked) */
    int frozen;     /* 1: higan_param_var gives no gradients (frozen net still passes dx) */
    int allocated;
    /* Device mirror (higan_params_set_device; NULL: none): the same offsets in a backend's
       memory. A tape whose backend is a device points parameter variables and the buffers the
       networks pass to ops (running stats, u0, sv0) there. */
    float *dev_value, *dev_grad, *dev_buffer;
    int64_t *dev_ibuffer;
    /* The mirror the store owns (higan_params_to_backend; mirror_be NULL: none). While it is
       set the mirror is authoritative for values, gradients, Adam state and float buffers:
       higan_params_zero_grad and higan_adam_step act on it, checkpoints download it first
       (higan_params_add_to_writer) and loads upload after (higan_params_load). */
    higan_params_mirror mirror;
    const struct higan_backend *mirror_be;
} higan_params;
HIGAN_DEF void higan_params_init(higan_params *p);
HIGAN_DEF int higan_params_add(higan_params *p, const char *name, higan_param_kind kind,
                               int ndim, const int64_t *shape);            /* returns handle */
HIGAN_DEF higan_status higan_params_alloc(higan_params *p);                 /* zero-filled */
HIGAN_DEF void higan_params_free(higan_params *p);
HIGAN_DEF int higan_params_find(const higan_params *p, const char *name);   /* -1 if absent */
HIGAN_DEF float *higan_params_data(const higan_params *p, int handle);      /* float kinds */
HIGAN_DEF float *higan_params_grad(const higan_params *p, int handle);      /* NULL for buffers */
HIGAN_DEF int64_t *higan_params_idata(const higan_params *p, int handle);   /* I64 buffers */
HIGAN_DEF void higan_params_zero_grad(higan_params *p);      /* the mirror's when it has one */
/* Attaches a device mirror of p (e.g. higan_cuda_params_attach in higan_cuda.cuh): arrays
   of n_param, n_param, n_buffer floats and n_ibuffer int64 in device memory, or all NULL to
   detach. Copies between them are the caller's (the mirror is authoritative while a device
   tape trains or renormalises embeddings in it). */
HIGAN_DEF void higan_params_set_device(higan_params *p, float *value, float *grad, float *buffer,
                                       int64_t *ibuffer);
/* The store on a backend (generic over higan_backend: no device types here):
   higan_params_to_backend(p, be) with a device backend allocates p's mirror through be->alloc,
   uploads everything (HIGAN_PARAMS_ALL) and attaches it (higan_params_set_device), so tapes on
   be train in it; be NULL (or the CPU) downloads HIGAN_PARAMS_STATE and gradients back into
   the host arrays and frees the mirror. A store on one backend is used with tapes of that
   backend only. The int64 buffers (num_batches_tracked) stay host counters (the ops count on
   the host): they are uploaded, never downloaded. HIGAN_ERR_NOMEM / the backend's error. */
HIGAN_DEF higan_status higan_params_to_backend(higan_params *p, const struct higan_backend *be);
/* Copies between the host arrays and the owned mirror (no-ops without one); what: or-ed
   HIGAN_PARAMS_*. Download is synchronous; upload is queued (errors at the backend's sync). */
HIGAN_DEF void higan_params_download(higan_params *p, int what);
HIGAN_DEF void higan_params_upload(higan_params *p, int what);
/* One tensor (a float kind) from / into wherever it lives (the mirror when the store has one),
   numel floats of host memory. */
HIGAN_DEF void higan_params_read(const higan_params *p, int handle, float *host);
HIGAN_DEF void higan_params_write(higan_params *p, int handle, const float *host);
/* The mirror itself, for code that keeps its own (higan_cuda_params): allocated zero-filled
   through be, copied with what as above, freed through be. */
HIGAN_DEF higan_status higan_params_mirror_init(higan_params_mirror *d, const struct higan_backend *be,
                                                const higan_params *p);
HIGAN_DEF void higan_params_mirror_free(higan_params_mirror *d, const struct higan_backend *be);
HIGAN_DEF void higan_params_mirror_upload(const higan_params_mirror *d, const struct higan_backend *be,
                                          const higan_params *p, int what);
HIGAN_DEF void higan_params_mirror_download(const higan_params_mirror *d, const struct higan_backend *be,
                                            higan_params *p, int what);

/* ==== TAPE: light reverse-mode autodiff over the per-step arena ========== */
typedef struct higan_var {
    float *data;
    float *grad;          /* NULL until some backward writes it; see higan_var_grad */
    int64_t shape[4];
    int ndim;
    int requires_grad;    /* gradient wanted (leaf flag, or any input requires one) */
    int grad_pass;        /* backward pass whose gradient grad holds (see higan_var_grad) */
    int is_param;         /* grad points into a parameter store */
    int producer;         /* tape entry that made it, -1 for leaves */
    int owns_data;        /* data came from higan_var_new (not a view, input or parameter) */
    int retain_grad;      /* keep the gradient after backward although an op made v */
} higan_var;
struct higan_tape;
typedef void (*higan_backward_fn)(struct higan_tape *t, void *ctx);
typedef struct higan_tape_entry { higan_backward_fn backward; void *ctx; higan_var *out; } higan_tape_entry;
struct higan_backend;
typedef struct higan_tape {
    higan_arena *arena;   /* host memory: variables, op contexts, copied int arrays; on the
                             CPU backend also every float buffer (data == arena) */
    higan_tape_entry *entries;
    int count, capacity;
    int no_grad;          /* > 0: nothing is recorded (like torch.no_grad) */
    int param_grads;      /* 0: parameter gradients are not accumulated (gradient probes) */
    int overflow;         /* entry table full (sticky until reset) */
    int pass;             /* current backward pass id */
    const struct higan_backend *be;   /* the kernels (higan_cpu_backend() after init) */
    higan_arena *data;    /* float buffers (values, gradients, op caches, scratch): arena on
                             the CPU; with a device backend an arena in device memory
                             (higan_backend_arena_init) */
} higan_tape;
HIGAN_DEF higan_status higan_tape_init(higan_tape *t, higan_arena *a, int max_entries);
HIGAN_DEF void higan_tape_free(higan_tape *t);
HIGAN_DEF void higan_tape_reset(higan_tape *t);          /* also resets the arena */
HIGAN_DEF higan_status higan_tape_status(const higan_tape *t); /* arena or table overflow */
HIGAN_DEF void higan_no_grad_begin(higan_tape *t);
HIGAN_DEF void higan_no_grad_end(higan_tape *t);
/* New variable with arena storage (uninitialised). NULL on overflow. */
HIGAN_DEF higan_var *higan_var_new(higan_tape *t, int ndim, const int64_t *shape);
/* Wrap caller-owned data (inputs). requires_grad 0 unless set by the caller afterwards. */
HIGAN_DEF higan_var *higan_var_wrap(higan_tape *t, float *data, int ndim, const int64_t *shape);
/* A parameter of a store; requires a gradient unless the store is frozen. */
HIGAN_DEF higan_var *higan_param_var(higan_tape *t, const higan_params *p, int handle);
HIGAN_DEF int64_t higan_var_numel(const higan_var *v);
/* Gradient buffer of v for accumulation: zeroed on first use in a pass. NULL when v needs
   no gradient (or is a parameter while param_grads is 0). */
HIGAN_DEF float *higan_var_grad(higan_tape *t, higan_var *v);
/* Output variable of an op with the given inputs: requires_grad if any input does. */
HIGAN_DEF higan_var *higan_op_output(higan_tape *t, int ndim, const int64_t *shape,
                                     higan_var *const *inputs, int n_inputs);
/* Record the backward of the op that produced out (no-op when nothing needs gradients). */
HIGAN_DEF void higan_tape_record(higan_tape *t, higan_var *out, higan_backward_fn fn, void *ctx);
HIGAN_DEF void *higan_tape_ctx(higan_tape *t, size_t bytes);   /* op context, in the arena */
/* Backward from out, seeded with seed (numel(out) values) or 1 when seed is NULL.
   Runs the tape from out's producer down to entry 0. Every backward starts a new pass:
   leaf variables then hold the gradient of this backward only, while parameter stores
   accumulate across calls (as PyTorch's .grad does). The gradient of a variable made by an
   op lives only until that op's backward has used it (its buffer is then reused, like
   PyTorch's non-leaf .grad), unless v->retain_grad is set (PyTorch's retain_grad()). */
HIGAN_DEF higan_status higan_tape_backward(higan_tape *t, higan_var *out, const float *seed);
/* The same, as the last backward of a step (PyTorch's backward without retain_graph): the
   value of every variable an op made goes back to the arena once that op's backward has run,
   so the gradients reuse it. Afterwards only out, leaves and parameters keep their values;
   the tape cannot be backpropagated again before higan_tape_reset. */
HIGAN_DEF higan_status higan_tape_backward_release(higan_tape *t, higan_var *out, const float *seed);
/* Gradient of out with respect to wrt only: parameter gradients untouched, the tape stops
   at wrt's producer. The result is in wrt->grad. Clears earlier intermediate gradients. */
HIGAN_DEF higan_status higan_tape_grad_wrt(higan_tape *t, higan_var *out, higan_var *wrt);
/* 1 if v holds a gradient from the latest backward pass. */
HIGAN_DEF int higan_var_has_grad(const higan_tape *t, const higan_var *v);
/* Marks of both arenas of a tape (host and data), for scratch that spans ops: code that
   may run on a device tape takes these instead of higan_arena_mark(t->arena). */
typedef struct higan_tape_pos { size_t host, data; } higan_tape_pos;
HIGAN_DEF higan_tape_pos higan_tape_mark(const higan_tape *t);
HIGAN_DEF void higan_tape_release(higan_tape *t, higan_tape_pos pos);

/* ==== SAFETENSORS ========================================================= */
typedef enum { HIGAN_F32 = 0, HIGAN_F16, HIGAN_BF16, HIGAN_I64, HIGAN_I32, HIGAN_I16, HIGAN_U8 } higan_dtype;
HIGAN_DEF const char *higan_dtype_name(higan_dtype d);
HIGAN_DEF size_t higan_dtype_size(higan_dtype d);
#define HIGAN_ST_MAX_DIMS 8
typedef struct higan_st_tensor {
    char *name;
    higan_dtype dtype;
    int ndim;
    int64_t shape[HIGAN_ST_MAX_DIMS];
    int64_t numel;
    size_t begin, end;    /* byte offsets into the data section */
} higan_st_tensor;
typedef struct higan_safetensors {
    unsigned char *file;      /* whole file, owned */
    size_t file_size;
    const unsigned char *data; /* start of the data section */
    higan_st_tensor *tensors;
    int count;
    char **meta_keys, **meta_values;
    int meta_count;
} higan_safetensors;
HIGAN_DEF higan_status higan_safetensors_load(higan_safetensors *st, const char *path);
/* Parse a buffer (copied). */
HIGAN_DEF higan_status higan_safetensors_parse(higan_safetensors *st, const void *buf, size_t size);
HIGAN_DEF void higan_safetensors_free(higan_safetensors *st);
HIGAN_DEF const higan_st_tensor *higan_safetensors_find(const higan_safetensors *st, const char *name);
/* Read a tensor converted to float32; fails unless it has exactly numel elements. */
HIGAN_DEF higan_status higan_safetensors_read_f32(const higan_safetensors *st, const char *name,
                                                  float *out, int64_t numel);
HIGAN_DEF higan_status higan_safetensors_read_i64(const higan_safetensors *st, const char *name,
                                                  int64_t *out, int64_t numel);
HIGAN_DEF const char *higan_safetensors_meta(const higan_safetensors *st, const char *key);

typedef struct higan_st_entry { char *name; higan_dtype dtype; int ndim; int64_t shape[HIGAN_ST_MAX_DIMS]; const void *data; } higan_st_entry;
typedef struct higan_safetensors_writer {
    higan_st_entry *entries; int count, capacity;
    char **meta_keys, **meta_values; int meta_count, meta_capacity;
} higan_safetensors_writer;
HIGAN_DEF void higan_safetensors_writer_init(higan_safetensors_writer *w);
/* data is referenced, not copied: keep it alive until save. */
HIGAN_DEF higan_status higan_safetensors_writer_add(higan_safetensors_writer *w, const char *name,
        higan_dtype dtype, int ndim, const int64_t *shape, const void *data);
HIGAN_DEF higan_status higan_safetensors_writer_meta(higan_safetensors_writer *w, const char *key, const char *value);
/* Writes path.tmp then renames it to path: never a half-written file. */
HIGAN_DEF higan_status higan_safetensors_writer_save(const higan_safetensors_writer *w, const char *path);
HIGAN_DEF void higan_safetensors_writer_free(higan_safetensors_writer *w);

/* ==== OPTIMIZER ============================================================ */
/* Adam with bias correction (PyTorch semantics, no weight decay); step counts updates. */
typedef struct higan_adam { double lr, beta1, beta2, eps; int64_t step; } higan_adam;  /* doubles, as torch keeps them */
HIGAN_DEF higan_adam higan_adam_default(double lr);            /* betas (0.9, 0.999), eps 1e-8 */
/* On the store's mirror when it has one (higan_params_to_backend), else on the host arrays. */
HIGAN_DEF void higan_adam_step(higan_adam *opt, higan_params *p);
/* One step on n values w with gradients g and state m, v in be's memory (be NULL: the CPU):
   counts the step and computes the scalars once on the host, as higan_adam_step. */
HIGAN_DEF void higan_adam_update(higan_adam *opt, const struct higan_backend *be, float *w, const float *g,
                                 float *m, float *v, int64_t n);
/* HiGAN+'s LambdaLR factor: 1 - min(max(0, (epoch - start) / length), 0.999). */
HIGAN_DEF float higan_lr_linear_decay(int epoch, int start, int length);

/* Parameter stores as safetensors: names prefixed with prefix (may be ""), buffers included;
   with_optimizer adds "<name>.adam_m"/".adam_v" and the step in metadata "adam_step".
   A store on a backend (higan_params_to_backend) is downloaded first / uploaded after. */
HIGAN_DEF higan_status higan_params_add_to_writer(const higan_params *p, higan_safetensors_writer *w,
        const char *prefix, const higan_adam *opt);
/* Loads every tensor of p from st (names prefixed). Checks all names and shapes and reports
   every missing, unexpected (with this prefix) or mis-shaped tensor in the message. */
HIGAN_DEF higan_status higan_params_load(higan_params *p, const higan_safetensors *st,
        const char *prefix, higan_adam *opt);

/* ==== GEMM, CONV2D, LINEAR ================================================
   All matrices are row-major float32. The fast paths dispatch at run time on
   higan_cpu_level() (scalar, AVX2+FMA, AVX-512F, AVX512-BF16 and AMX-BF16 kernels live in one
   binary) and run on higan_get_num_threads() threads; results are bit-identical for any
   thread count (the K reduction is never split across threads) but differ in the last bits
   between levels. In HIGAN_PRECISION_BF16 (higan_set_precision) every product here (GEMM,
   convolution, linear, and through higan_gemm the LSTM gates and the contextual loss) takes
   bf16-rounded operands and sums in fp32. */

/* C[M,N] = alpha * op(A)[M,K] * op(B)[K,N] + beta * C.
   op(A) = A ([M,K], row stride lda) or, with trans_a, A^T (A is [K,M], row stride lda);
   op(B) = B ([K,N], row stride ldb) or, with trans_b, B^T (B is [N,K], row stride ldb).
   beta == 0 means C is not read (NaNs in C are overwritten). C must not alias A or B. */
HIGAN_DEF void higan_gemm(int trans_a, int trans_b, int64_t M, int64_t N, int64_t K, float alpha,
                          const float *A, int64_t lda, const float *B, int64_t ldb,
                          float beta, float *C, int64_t ldc);
/* The reference: a plain triple loop (double accumulators), same contract, single thread. */
HIGAN_DEF void higan_gemm_ref(int trans_a, int trans_b, int64_t M, int64_t N, int64_t K, float alpha,
                              const float *A, int64_t lda, const float *B, int64_t ldb,
                              float beta, float *C, int64_t ldc);
/* The bf16 reference: higan_gemm_ref on round_bf16(alpha * op(A)) and round_bf16(op(B))
   (round to nearest even, see higan_bf16_round): what higan_gemm computes in
   HIGAN_PRECISION_BF16, but with double accumulators. Independent of the precision setting. */
HIGAN_DEF void higan_gemm_ref_bf16(int trans_a, int trans_b, int64_t M, int64_t N, int64_t K, float alpha,
                                   const float *A, int64_t lda, const float *B, int64_t ldb,
                                   float beta, float *C, int64_t ldc);
/* higan_gemm and conv2d keep one packing buffer per calling thread (grown on demand to at
   most about 16 MB: packed panels, the padded copies and results of a chunk of a
   convolution); this frees the calling thread's buffer (call it before a worker thread ends). */
HIGAN_DEF void higan_gemm_free_buffers(void);
/* Multiply-add work done by every GEMM (higan_gemm, conv2d, linear, LSTM) since the last
   reset, as 2*M*N*K summed: benchmarks divide it by time to get GFLOP/s. */
HIGAN_DEF uint64_t higan_gemm_flops(void);
HIGAN_DEF void higan_gemm_flops_reset(void);

/* ---- conv2d (cross-correlation, as torch.nn.functional.conv2d, groups = 1, no dilation) ----
   x [N, IC, H, W], w [OC, IC, KH, KW], b [OC] (optional), y [N, OC, OH, OW] with
   OH = (H + pad_top + pad_bottom - KH) / stride_h + 1, OW likewise; padding is zeros and may
   be asymmetric (F.pad(x, (left, right, top, bottom)) followed by an unpadded conv). */
typedef struct higan_conv2d_shape {
    int64_t N, IC, H, W;
    int64_t OC, KH, KW;
    int64_t stride_h, stride_w;
    int64_t pad_top, pad_bottom, pad_left, pad_right;
} higan_conv2d_shape;
/* Fills every field (an alternative to designated initialisers). */
HIGAN_DEF higan_conv2d_shape higan_conv2d_make_shape(int64_t N, int64_t IC, int64_t H, int64_t W,
        int64_t OC, int64_t KH, int64_t KW, int64_t stride_h, int64_t stride_w,
        int64_t pad_top, int64_t pad_bottom, int64_t pad_left, int64_t pad_right);
HIGAN_DEF int64_t higan_conv2d_out_h(const higan_conv2d_shape *s);
HIGAN_DEF int64_t higan_conv2d_out_w(const higan_conv2d_shape *s);
/* Bytes of scratch that higan_conv2d_backward takes from its arena (forward takes none). */
HIGAN_DEF size_t higan_conv2d_scratch_bytes(const higan_conv2d_shape *s);

/* y = conv(x, w) + b (b may be NULL): y_n[OC, OH*OW] = w[OC, IC*KH*KW] col(x_n). At the SIMD
   levels a direct convolution that reads the pixels in place from a zero-padded copy of x
   (one copy, not the KH*KW of im2col) with either the channels or the pixels along the
   vectors, whichever fills them better; otherwise (scalar level, 1x1 stride-1 convolutions,
   shapes neither suits) one blocked GEMM whose packing reads col(x_n) straight from x. Both
   work in the calling thread's packing buffer; scratch is unused (may be NULL). */
HIGAN_DEF higan_status higan_conv2d_forward(float *y, const float *x, const float *w, const float *b,
                                            const higan_conv2d_shape *s, higan_arena *scratch);
/* dx += conv_transpose(dy, w); dw += sum_n dy_n col(x_n)^T; db += sum of dy over N, OH, OW.
   Each is skipped when NULL. Direct convolutions as in the forward where they apply (dx: for
   stride 1, as the forward convolution of dy with the flipped, transposed weights; dw: with
   the pixels of every sample as the K of one product), else the GEMM ways: dx by GEMM w^T dy_n
   into a scratch column block, then col2im; dw by one GEMM with K = N*OH*OW, col packed from
   x. dx needs a scratch arena (scratch NULL: HIGAN_ERR_ARG) and, on the GEMM way,
   higan_conv2d_scratch_bytes(s) of it (at most 16 MB; released before returning):
   HIGAN_ERR_NOMEM (arena overflow, sticky) if it does not fit. 1x1 stride-1 unpadded convs
   need no scratch (x and dx are the GEMM operands themselves). */
HIGAN_DEF higan_status higan_conv2d_backward(float *dx, float *dw, float *db, const float *dy,
                                             const float *x, const float *w,
                                             const higan_conv2d_shape *s, higan_arena *scratch);
/* Direct 7-loop reference versions (single thread, double accumulators), for tests. */
HIGAN_DEF void higan_conv2d_forward_ref(float *y, const float *x, const float *w, const float *b,
                                        const higan_conv2d_shape *s);
HIGAN_DEF void higan_conv2d_backward_ref(float *dx, float *dw, float *db, const float *dy,
                                         const float *x, const float *w, const higan_conv2d_shape *s);
/* Tape op. x [N, IC, H, W], w [OC, IC, KH, KW], b [OC] or NULL; scratch from t->arena. */
HIGAN_DEF higan_var *higan_conv2d(higan_tape *t, higan_var *x, higan_var *w, higan_var *b,
                                  int64_t stride_h, int64_t stride_w, int64_t pad_top,
                                  int64_t pad_bottom, int64_t pad_left, int64_t pad_right);
/* Nearest upsampling by (uh, uw) followed by a stride-1 convolution, without the upsampled
   image: y = conv2d(upsample_nearest(x, uh, uw), w) + b. s describes that convolution (s->H,
   s->W: the upsampled size uh * H, uw * W of x [N, IC, H, W]; stride 1). Output pixel
   (uh m + a, uw q + c) reads the x rows m + floor((a + kh - pad_top) / uh) (and likewise the
   columns), so each phase (a, c) is a convolution of x with the taps that land on the same x
   pixel summed: (KH + uh - 1) / uh x (KW + uw - 1) / uw of them at most (a 3x3 after 2x2
   upsampling: 2x2 taps, 2.25x fewer multiplies). Same numbers as the two ops up to the
   rounding of the summed weights (not bit-identical to them); bit-identical for any thread
   count. The summed weights and each phase's output come from scratch (released before
   returning): HIGAN_ERR_NOMEM if they do not fit; HIGAN_ERR_UNSUPPORTED when a phase would
   need a negative padding (a pad larger than the kernel allows; never for 3x3 pad <= 1). */
HIGAN_DEF higan_status higan_conv2d_upsampled_forward(float *y, const float *x, const float *w, const float *b,
                                                      const higan_conv2d_shape *s, int64_t uh, int64_t uw,
                                                      higan_arena *scratch);
/* The same with the summed weights given: wp from higan_conv2d_upsampled_weights with this
   s's OC, IC, KH, KW, pad_top, pad_left and uh, uw (for several calls with one weight); w is
   then unused (may be NULL). wp NULL: as higan_conv2d_upsampled_forward. */
HIGAN_DEF higan_status higan_conv2d_upsampled_forward_wp(float *y, const float *x, const float *w, const float *wp,
                                                         const float *b, const higan_conv2d_shape *s, int64_t uh,
                                                         int64_t uw, higan_arena *scratch);
/* The summed weights of every phase (a, c) (a < uh, c < uw, in that order), [OC, IC, Ta, Tc]
   each, concatenated; wp has higan_conv2d_upsampled_weights_size(...) floats. */
HIGAN_DEF int64_t higan_conv2d_upsampled_weights_size(int64_t OC, int64_t IC, int64_t KH, int64_t KW,
                                                      int64_t pad_top, int64_t pad_left, int64_t uh, int64_t uw);
HIGAN_DEF void higan_conv2d_upsampled_weights(float *wp, const float *w, int64_t OC, int64_t IC, int64_t KH,
                                              int64_t KW, int64_t pad_top, int64_t pad_left, int64_t uh, int64_t uw);
/* Tape op: conv2d(upsample_nearest(x, uh, uw), w, b), stride 1, forward by
   higan_conv2d_upsampled_forward (where it returns HIGAN_ERR_UNSUPPORTED: the two ops). The
   backward is the two ops' (the upsampled x rebuilt in scratch: N*IC*H*W floats, twice when
   dx is wanted, plus higan_conv2d_scratch_bytes). */
HIGAN_DEF higan_var *higan_upsample_conv2d(higan_tape *t, higan_var *x, higan_var *w, higan_var *b,
                                           int uh, int uw, int64_t pad_top, int64_t pad_bottom,
                                           int64_t pad_left, int64_t pad_right);

/* ---- linear (PyTorch layout) -----------------------------------------------------------
   y [N, OUT] = x [N, IN] w[OUT, IN]^T + b [OUT] (b may be NULL). */
HIGAN_DEF void higan_linear_forward(float *y, const float *x, const float *w, const float *b,
                                    int64_t N, int64_t IN, int64_t OUT);
/* dx [N, IN] += dy w; dw [OUT, IN] += dy^T x; db [OUT] += column sums of dy. */
HIGAN_DEF void higan_linear_backward(float *dx, float *dw, float *db, const float *dy,
                                     const float *x, const float *w,
                                     int64_t N, int64_t IN, int64_t OUT);
/* Tape op. x is [N, IN] or [B, T, IN] (leading dims are rows), w [OUT, IN], b [OUT] or NULL.
   The output keeps x's leading dims with OUT last. */
HIGAN_DEF higan_var *higan_linear(higan_tape *t, higan_var *x, higan_var *w, higan_var *b);
/* ==== NORMALISATION OPS: spectral norm, batch norm, conditional batch norm, embedding ===
   Raw kernels on float arrays (outputs first, backward accumulates with +=, NULL gradient
   = skip) and tape ops on top. Layout of the batch-norm family: x is [N, C, HW] with HW the
   product of every dimension after the channel (NCHW, or [N, C] with HW = 1). */

/* ---- spectral norm (BigGAN style, one power iteration, num_svs = 1) ----------------------
   W is viewed as [out, in] (in = numel / out). From u0 [out]:
       v = normalize(u0 W), u = normalize(v W^T), sigma = (v W^T) . u
   normalize(a) = a / max(||a||, eps). The tape op uses eps = HIGAN_SN_EPS (HiGAN+'s 1e-8). */
#define HIGAN_SN_EPS 1e-8f

/* sigma of W without gradients (also the first half of the forward). u [out], v [in] receive
   the singular vectors; u may be the same array as u0 (then u0 is updated in place, as the
   train step does). Use it in network code to recompute sigma outside the tape. */
HIGAN_DEF float higan_spectral_norm_sigma(float *u, float *v, const float *w, const float *u0,
                                          int64_t out, int64_t in, float eps);
/* y = W / sigma. y, w [out*in]; u [out], v [in] caches; *sigma out. u may alias u0. */
HIGAN_DEF void higan_spectral_norm_forward(float *y, float *u, float *v, float *sigma,
                                           const float *w, const float *u0,
                                           int64_t out, int64_t in, float eps);
/* dW += dY / sigma - (sum dY*W) / sigma^2 * u v^T   (u, v held constant, as BigGAN does). */
HIGAN_DEF void higan_spectral_norm_backward(float *dw, const float *dy, const float *w,
                                            const float *u, const float *v, float sigma,
                                            int64_t out, int64_t in);
/* Tape op: the normalised weight W / sigma (same shape as w). out_features = rows of the
   [out, in] view (w->shape[0] for conv and linear weights). u0 [out_features] is required;
   sv0 [1] may be NULL. train: u0 <- u and sv0 <- sigma (also under no_grad, like BigGAN in
   training mode). eval: sigma is recomputed from u0, which is left unchanged. The gradient
   flows to w through W / sigma and through sigma (with u, v constant). */
HIGAN_DEF higan_var *higan_spectral_norm(higan_tape *t, higan_var *w, float *u0, float *sv0,
                                         int64_t out_features, int train);

/* ---- batch statistics shared by batch norm and conditional batch norm -------------------
   mean, rstd [C]: what x is normalised with, x_hat = (x - mean) * rstd.
   batch_stats (1: train, or no running stats given): batch mean and biased variance; when
     running_mean / running_var are given they are updated with
     running = (1 - momentum) * running + momentum * batch (unbiased variance for running_var).
     Needs N*HW > 1 (HIGAN_ASSERT, as PyTorch refuses it too).
   batch_stats 0: mean = running_mean, rstd = 1 / sqrt(running_var + eps); nothing updated. */
HIGAN_DEF void higan_batch_norm_stats(float *mean, float *rstd, float *running_mean,
                                      float *running_var, const float *x, float momentum,
                                      float eps, int batch_stats,
                                      int64_t N, int64_t C, int64_t HW);

/* ---- BatchNorm2d -------------------------------------------------------------------------
   y = x_hat * weight[c] + bias[c] (weight, bias [C], each may be NULL = 1 / 0).
   Forward computes mean/rstd [C] (caches) with higan_batch_norm_stats. Backward: batch_stats
   as in the forward (1: gradient also flows through the batch mean and variance). */
HIGAN_DEF void higan_batch_norm2d_forward(float *y, float *mean, float *rstd, const float *x,
                                          const float *weight, const float *bias,
                                          float *running_mean, float *running_var,
                                          float momentum, float eps, int batch_stats,
                                          int64_t N, int64_t C, int64_t HW);
HIGAN_DEF void higan_batch_norm2d_backward(float *dx, float *dweight, float *dbias,
                                           const float *dy, const float *x, const float *mean,
                                           const float *rstd, const float *weight,
                                           int batch_stats, int64_t N, int64_t C, int64_t HW);
/* Tape op. x: [N, C, H, W] (ndim 2..4 accepted: [N, C, ...]). weight, bias: [C] vars or NULL
   (no affine). running_mean / running_var [C] and num_batches_tracked may be NULL. train:
   batch statistics, running stats updated, *num_batches_tracked += 1. eval: running stats;
   without running stats the batch statistics are used (track_running_stats=False). */
HIGAN_DEF higan_var *higan_batch_norm2d(higan_tape *t, higan_var *x, higan_var *weight,
                                        higan_var *bias, float *running_mean,
                                        float *running_var, int64_t *num_batches_tracked,
                                        float momentum, float eps, int train);

/* ---- conditional batch norm (HiGAN+ / BigGAN ccbn, norm_style 'bn') ---------------------
   y = x_hat * (1 + gain[n, c]) + bias[n, c]; gain, bias [N, C]; stats as in batch norm
   (F.batch_norm without affine on stored_mean / stored_var). */
HIGAN_DEF void higan_cond_batch_norm_forward(float *y, float *mean, float *rstd, const float *x,
                                             const float *gain, const float *bias,
                                             float *running_mean, float *running_var,
                                             float momentum, float eps, int batch_stats,
                                             int64_t N, int64_t C, int64_t HW);
HIGAN_DEF void higan_cond_batch_norm_backward(float *dx, float *dgain, float *dbias,
                                              const float *dy, const float *x,
                                              const float *mean, const float *rstd,
                                              const float *gain, int batch_stats,
                                              int64_t N, int64_t C, int64_t HW);
/* Tape op. x: [N, C, ...]; gain, bias: vars with N*C elements (outputs of linear layers).
   stored_mean / stored_var [C] may be NULL (then batch statistics always). */
HIGAN_DEF higan_var *higan_cond_batch_norm(higan_tape *t, higan_var *x, higan_var *gain,
                                           higan_var *bias, float *stored_mean,
                                           float *stored_var, float momentum, float eps,
                                           int train);

/* ---- embedding ----------------------------------------------------------------------------
   weight [num, D]; idx [n_idx] with 0 <= idx < num (HIGAN_ASSERT). */
/* PyTorch's embedding_renorm_: every distinct looked-up row whose L2 norm exceeds max_norm
   is scaled IN PLACE by max_norm / (norm + 1e-7). */
HIGAN_DEF void higan_embedding_renorm(float *weight, const int *idx, int64_t n_idx, int64_t num,
                                      int64_t D, float max_norm);
/* y [n_idx, D] = weight[idx[i], :]. */
HIGAN_DEF void higan_embedding_forward(float *y, const float *weight, const int *idx,
                                       int64_t n_idx, int64_t num, int64_t D);
/* dweight[idx[i], :] += dy[i, :], except rows with idx[i] == padding_idx (padding_idx < 0:
   none). */
HIGAN_DEF void higan_embedding_backward(float *dweight, const float *dy, const int *idx,
                                        int64_t n_idx, int64_t D, int padding_idx);
/* Tape op: [n_idx, D] (reshape the result for [B, L, D]: the data is contiguous).
   padding_idx < 0: none (PyTorch's negative padding_idx must be converted by the caller).
   max_norm > 0: the looked-up rows of weight->data are renormalised in place first, so the
   gradient is with respect to the renormalised weight, as in PyTorch. idx is copied. */
HIGAN_DEF higan_var *higan_embedding(higan_tape *t, higan_var *weight, const int *idx,
                                     int64_t n_idx, int padding_idx, float max_norm);
/* ==== SHAPE, POOLING, PADDING, ACTIVATION AND ELEMENTWISE OPS ============ */
/* All tensors float32, row-major; image ops take NCHW. Raw kernels: outputs first, backward
   ACCUMULATES (+=) and skips a NULL gradient. Tape ops (no suffix) return NULL when an input
   is NULL or the arena overflows. */

/* -- nearest upsampling by integer factors (F.interpolate(x, scale_factor=(sh, sw)), 'nearest')
      x [N,C,H,W] -> y [N,C,H*sh,W*sw] */
HIGAN_DEF void higan_upsample_nearest_forward(float *y, const float *x, int64_t N, int64_t C,
                                              int64_t H, int64_t W, int sh, int sw);
HIGAN_DEF void higan_upsample_nearest_backward(float *dx, const float *dy, int64_t N, int64_t C,
                                               int64_t H, int64_t W, int sh, int sw);
HIGAN_DEF higan_var *higan_upsample_nearest(higan_tape *t, higan_var *x, int sh, int sw);

/* -- 2x2 average pooling, stride 2 (nn.AvgPool2d(2)): x [N,C,H,W] -> y [N,C,H/2,W/2], floor */
HIGAN_DEF void higan_avg_pool2_forward(float *y, const float *x, int64_t N, int64_t C,
                                       int64_t H, int64_t W);
HIGAN_DEF void higan_avg_pool2_backward(float *dx, const float *dy, int64_t N, int64_t C,
                                        int64_t H, int64_t W);
HIGAN_DEF higan_var *higan_avg_pool2(higan_tape *t, higan_var *x);

/* -- 3x3 max pooling, stride 2, no padding (nn.MaxPool2d(3, 2)):
      x [N,C,H,W] (H, W >= 3) -> y [N,C,(H-3)/2+1,(W-3)/2+1].
      argmax [like y] (may be NULL) gets the index h*W+w of the max inside its x plane: the
      first max in row-major window order, a NaN wins, exactly like PyTorch. */
HIGAN_DEF void higan_max_pool3s2_forward(float *y, int32_t *argmax, const float *x, int64_t N,
                                         int64_t C, int64_t H, int64_t W);
HIGAN_DEF void higan_max_pool3s2_backward(float *dx, const float *dy, const int32_t *argmax,
                                          int64_t N, int64_t C, int64_t H, int64_t W);
HIGAN_DEF higan_var *higan_max_pool3s2(higan_tape *t, higan_var *x);

/* -- constant padding, amounts in the order (top, bottom, left, right); this is
      F.pad(x, (left, right, top, bottom), value=value). Negative amounts crop like F.pad.
      x [N,C,H,W] -> y [N,C,H+top+bottom,W+left+right]. Zero padding: value 0. */
HIGAN_DEF void higan_pad_forward(float *y, const float *x, int64_t N, int64_t C, int64_t H,
                                 int64_t W, int top, int bottom, int left, int right, float value);
HIGAN_DEF void higan_pad_backward(float *dx, const float *dy, int64_t N, int64_t C, int64_t H,
                                  int64_t W, int top, int bottom, int left, int right);
HIGAN_DEF higan_var *higan_pad(higan_tape *t, higan_var *x, int top, int bottom, int left,
                               int right, float value);

/* -- activations, elementwise over n values (any shape). relu'(0) = 0 like PyTorch. */
HIGAN_DEF void higan_relu_forward(float *y, const float *x, int64_t n);
HIGAN_DEF void higan_relu_backward(float *dx, const float *dy, const float *x, int64_t n);
HIGAN_DEF higan_var *higan_relu(higan_tape *t, higan_var *x);
HIGAN_DEF void higan_leaky_relu_forward(float *y, const float *x, float slope, int64_t n);
HIGAN_DEF void higan_leaky_relu_backward(float *dx, const float *dy, const float *x, float slope,
                                         int64_t n);
HIGAN_DEF higan_var *higan_leaky_relu(higan_tape *t, higan_var *x, float slope);
HIGAN_DEF void higan_tanh_forward(float *y, const float *x, int64_t n);
HIGAN_DEF void higan_tanh_backward(float *dx, const float *dy, const float *y, int64_t n); /* from y */
HIGAN_DEF higan_var *higan_tanh(higan_tape *t, higan_var *x);

/* -- concat / slice along a dim. A tensor is viewed as [outer, size, inner] around the dim
      (outer = product of the dims before it, inner = product of the dims after it).
      concat: xs[i] [outer, sizes[i], inner] -> y [outer, sum sizes, inner].
      backward: dxs[i] may be NULL (skipped). */
HIGAN_DEF void higan_concat_forward(float *y, const float *const *xs, const int64_t *sizes, int n,
                                    int64_t outer, int64_t inner);
HIGAN_DEF void higan_concat_backward(float *const *dxs, const float *dy, const int64_t *sizes,
                                     int n, int64_t outer, int64_t inner);
/* torch.cat(xs, dim): every other dim must agree; dim may be negative (from the end). */
HIGAN_DEF higan_var *higan_concat(higan_tape *t, higan_var *const *xs, int n, int dim);
/* slice: x [outer, size, inner] -> y [outer, len, inner] = x[:, start:start+len, :];
   backward adds dy into that slice of dx. */
HIGAN_DEF void higan_slice_forward(float *y, const float *x, int64_t outer, int64_t size,
                                   int64_t inner, int64_t start, int64_t len);
HIGAN_DEF void higan_slice_backward(float *dx, const float *dy, int64_t outer, int64_t size,
                                    int64_t inner, int64_t start, int64_t len);
/* x.narrow(dim, start, len) as a copy; dim may be negative. torch.split(x, k, dim) is a
   series of slices (higan_split does that: out[i] gets sizes[i] along dim, which must add up
   to x's size; returns HIGAN_OK or HIGAN_ERR_NOMEM on arena overflow). */
HIGAN_DEF higan_var *higan_slice(higan_tape *t, higan_var *x, int dim, int64_t start, int64_t len);
HIGAN_DEF higan_status higan_split(higan_tape *t, higan_var *x, int dim, int n, const int64_t *sizes,
                          higan_var **out);

/* -- reshape: a VIEW. y shares x's data (no copy) with another shape of the same numel; one
      entry of shape may be -1 (inferred). y gets its own gradient buffer, added into x's in
      backward. Never write into y->data (it is x->data). */
HIGAN_DEF higan_var *higan_reshape(higan_tape *t, higan_var *x, int ndim, const int64_t *shape);

/* -- permute (a copy): y = x.permute(perm), 1..4 dims. shape is x's shape; y's shape[i] is
      shape[perm[i]]. Backward scatters dy back (a bijection: plain adds). */
HIGAN_DEF void higan_permute_forward(float *y, const float *x, int ndim, const int64_t *shape,
                                     const int *perm);
HIGAN_DEF void higan_permute_backward(float *dx, const float *dy, int ndim, const int64_t *shape,
                                      const int *perm);
HIGAN_DEF higan_var *higan_permute(higan_tape *t, higan_var *x, const int *perm);

/* -- masked reductions over the width: x [N,C,H,W] (or [N,C,T], taken as H = 1) -> y [N,C].
      Only columns w < lens[n] count (lens[n] >= 0; values > W count all W columns).
      sum:  y[n,c] = sum over h and w < lens[n] of x[n,c,h,w]
      mean: y[n,c] = sum / ((float)(H * lens[n]) + eps). With H = 1 and eps = 1e-8 this is
            HiGAN+'s StyleEncoder/WriterIdentifier pooling:
            (feat * len2mask(len)).sum(-1) / (len + 1e-8) with len = img_len // 16 (the
            caller divides); the divisor uses lens[n] as given, not clamped to W. */
HIGAN_DEF void higan_masked_sum_width_forward(float *y, const float *x, const int *lens,
                                              int64_t N, int64_t C, int64_t H, int64_t W);
HIGAN_DEF void higan_masked_sum_width_backward(float *dx, const float *dy, const int *lens,
                                               int64_t N, int64_t C, int64_t H, int64_t W);
HIGAN_DEF void higan_masked_mean_width_forward(float *y, const float *x, const int *lens,
                                               int64_t N, int64_t C, int64_t H, int64_t W, float eps);
HIGAN_DEF void higan_masked_mean_width_backward(float *dx, const float *dy, const int *lens,
                                                int64_t N, int64_t C, int64_t H, int64_t W, float eps);
HIGAN_DEF higan_var *higan_masked_sum_width(higan_tape *t, higan_var *x, const int *lens);
HIGAN_DEF higan_var *higan_masked_mean_width(higan_tape *t, higan_var *x, const int *lens, float eps);

/* -- dropout. Train: mask[i] = 1/(1-p) with probability 1-p, else 0; y = x * mask. One
      higan_rng_u64 draw per call keys the mask: element i keeps its value when u_i >= p, u_i
      a 24-bit uniform hashed from the key and i (counter-based: the mask is the same for any
      thread count and CPU level).
      p >= 1 gives all zeros (like PyTorch). The tape op returns x itself in eval mode or
      when p <= 0 (identity, nothing recorded). */
HIGAN_DEF void higan_dropout_forward(float *y, float *mask, const float *x, float p,
                                     higan_rng *rng, int64_t n);
HIGAN_DEF void higan_dropout_backward(float *dx, const float *dy, const float *mask, int64_t n);
HIGAN_DEF higan_var *higan_dropout(higan_tape *t, higan_var *x, float p, int train, higan_rng *rng);
/* The mask [n] that higan_dropout_forward would apply, with the same rng draw (for other
   backends: higan_cuda_dropout_forward uploads it). */
HIGAN_DEF void higan_dropout_mask(float *mask, float p, higan_rng *rng, int64_t n);

/* -- log-softmax over the last dim: x [rows, cols] -> y. Backward from y:
      dx = dy - softmax * sum(dy) per row. */
HIGAN_DEF void higan_log_softmax_forward(float *y, const float *x, int64_t rows, int64_t cols);
HIGAN_DEF void higan_log_softmax_backward(float *dx, const float *dy, const float *y, int64_t rows,
                                          int64_t cols);
HIGAN_DEF higan_var *higan_log_softmax(higan_tape *t, higan_var *x);

/* -- small elementwise helpers (same shapes unless stated) */
HIGAN_DEF void higan_add_forward(float *y, const float *a, const float *b, int64_t n);
HIGAN_DEF void higan_add_backward(float *da, float *db, const float *dy, int64_t n);
HIGAN_DEF higan_var *higan_add(higan_tape *t, higan_var *a, higan_var *b);         /* a + b */
HIGAN_DEF void higan_sub_forward(float *y, const float *a, const float *b, int64_t n);
HIGAN_DEF void higan_sub_backward(float *da, float *db, const float *dy, int64_t n);
HIGAN_DEF higan_var *higan_sub(higan_tape *t, higan_var *a, higan_var *b);         /* a - b */
HIGAN_DEF void higan_mul_forward(float *y, const float *a, const float *b, int64_t n);
HIGAN_DEF void higan_mul_backward(float *da, float *db, const float *dy, const float *a,
                                  const float *b, int64_t n);
HIGAN_DEF higan_var *higan_mul(higan_tape *t, higan_var *a, higan_var *b);         /* a * b */
HIGAN_DEF void higan_scale_forward(float *y, const float *x, float s, int64_t n);
HIGAN_DEF void higan_scale_backward(float *dx, const float *dy, float s, int64_t n);
HIGAN_DEF higan_var *higan_scale(higan_tape *t, higan_var *x, float s);            /* s * x */
/* x [N,C,...] + b [N,C] broadcast over the trailing HW values of each (n, c). */
HIGAN_DEF void higan_add_nc_forward(float *y, const float *x, const float *b, int64_t N, int64_t C,
                                    int64_t HW);
HIGAN_DEF void higan_add_nc_backward(float *dx, float *db, const float *dy, int64_t N, int64_t C,
                                     int64_t HW);
HIGAN_DEF higan_var *higan_add_nc(higan_tape *t, higan_var *x, higan_var *b);
/* sum / mean of all n values -> y [1] (accumulated in double, one thread: deterministic). */
HIGAN_DEF void higan_sum_all_forward(float *y, const float *x, int64_t n);
HIGAN_DEF void higan_sum_all_backward(float *dx, const float *dy, int64_t n);
HIGAN_DEF higan_var *higan_sum_all(higan_tape *t, higan_var *x);
HIGAN_DEF void higan_mean_all_forward(float *y, const float *x, int64_t n);
HIGAN_DEF void higan_mean_all_backward(float *dx, const float *dy, int64_t n);
HIGAN_DEF higan_var *higan_mean_all(higan_tape *t, higan_var *x);
HIGAN_DEF void higan_exp_forward(float *y, const float *x, int64_t n);
HIGAN_DEF void higan_exp_backward(float *dx, const float *dy, const float *y, int64_t n); /* from y */
HIGAN_DEF higan_var *higan_exp(higan_tape *t, higan_var *x);
/* ==== SEQUENCE OPS AND LOSSES: LSTM, CTC, greedy CTC decoding, cross-entropy ===== */
/* Raw kernels: outputs first, backward ACCUMULATES (+=) and skips a NULL gradient.
   Tape ops (no suffix) return NULL when an input is NULL or the arena overflows; integer
   arrays (lengths, targets, labels) are copied, so the caller's arrays may die at once. */

/* -- LSTM, exactly nn.LSTM(IN, H, num_layers, bidirectional=D==2, batch_first=True) fed
   through pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False) and
   pad_packed_sequence(batch_first=True, total_length=T):
     x [B,T,IN], lengths [B] (0 <= lengths[b] <= T, any order) -> y [B,T,D*H],
     y[b,t,:] = 0 for t >= lengths[b]; forward direction in y[..., 0:H], reverse in
     y[..., H:2H]; the reverse direction starts at each sequence's own last valid step;
     zero initial h and c; no dropout. Gate order i, f, g, o.
   weights: num_layers*D*4 pointers in PyTorch's parameter order
     layer l, direction d (0 forward, 1 reverse): w_ih [4H, in_l], w_hh [4H, H],
     b_ih [4H], b_hh [4H]   at index (l*D + d)*4 + {0,1,2,3};   in_0 = IN, in_l = D*H.
   Biases may be NULL in the raw kernels (no bias).
   cache: higan_lstm_cache_floats() floats the backward needs (intermediate layer outputs,
   gate activations, cell states). Forward with cache == NULL (inference) takes it from
   scratch and releases it. Scratch also needs D*(B*6H + 4H*H) floats in forward and
   B*T*(6*D*H + H) + D*B*6H floats in backward (plus 64-byte alignment per block); both
   release it before returning. They return HIGAN_OK or HIGAN_ERR_NOMEM (scratch overflow,
   sticky in the arena; the outputs are then not valid). The products over all steps go
   through higan_gemm; the recurrences (h W_hh^T per step, with a small register-tiled
   kernel) run one direction per thread, each in a fixed order: bit-identical for any
   thread count. */
HIGAN_DEF int64_t higan_lstm_cache_floats(int64_t B, int64_t T, int64_t H, int num_layers,
                                          int bidirectional);
HIGAN_DEF higan_status higan_lstm_forward(float *y, float *cache, const float *x, const int *lengths,
                                          const float *const *weights, int64_t B, int64_t T,
                                          int64_t IN, int64_t H, int num_layers, int bidirectional,
                                          higan_arena *scratch);
/* dweights: num_layers*D*4 gradient pointers in the order of weights (each may be NULL), or
   NULL for none. y and cache are the forward's. Padded positions of dy are ignored and the
   padded positions of dx get nothing. */
HIGAN_DEF higan_status higan_lstm_backward(float *dx, float *const *dweights, const float *dy,
                                           const float *y, const float *cache, const float *x,
                                           const int *lengths, const float *const *weights,
                                           int64_t B, int64_t T, int64_t IN, int64_t H,
                                           int num_layers, int bidirectional, higan_arena *scratch);
/* x [B,T,IN] -> [B,T,D*H]. weights: num_layers*D*4 vars as above, none NULL. */
HIGAN_DEF higan_var *higan_lstm(higan_tape *t, higan_var *x, const int *lengths, int hidden,
                                int num_layers, int bidirectional, higan_var **weights);

/* -- CTC loss, F.ctc_loss(log_probs, targets, input_lengths, target_lengths, blank,
   reduction='mean', zero_infinity):
     log_probs [T,B,C] (a log_softmax output), targets concatenated (sum of target_lengths
     labels in [0, C)), input_lengths [B] (<= T), target_lengths [B].
     nll[b] = -log p(target_b | log_probs[:input_lengths[b], b, :]) (alpha recursion in log
     space, float, like PyTorch's CPU kernel); with zero_infinity an infeasible sample
     (nll = inf) counts as 0.   y = mean_b nll[b] / max(target_lengths[b], 1).
   alpha: higan_ctc_alpha_floats() floats, kept for the backward.
   The backward is PyTorch's: dlog_probs[t,b,c] += g_b * (exp(lp) - exp(log(sum_s alpha
   beta [l'_s = c]) + nll - lp)) for t < input_lengths[b], with g_b = dy / B / max(L_b, 1):
   the gradient with respect to the logits under a log_softmax, which is also correct
   through higan_log_softmax's backward (its rows sum to 0). Infeasible samples under
   zero_infinity get 0; without it they give inf/NaN gradients, as in PyTorch.
   Backward scratch: B*(2*(2*max L + 1) + C) floats. */
HIGAN_DEF int64_t higan_ctc_alpha_floats(int64_t T, int64_t B, const int *target_lengths);
HIGAN_DEF void higan_ctc_loss_forward(float *y, float *nll, float *alpha, const float *log_probs,
                                      const int *targets, const int *input_lengths,
                                      const int *target_lengths, int64_t T, int64_t B, int64_t C,
                                      int blank, int zero_infinity);
HIGAN_DEF higan_status higan_ctc_loss_backward(float *dlog_probs, const float *dy,
                                               const float *log_probs, const float *nll,
                                               const float *alpha, const int *targets,
                                               const int *input_lengths, const int *target_lengths,
                                               int64_t T, int64_t B, int64_t C, int blank,
                                               int zero_infinity, higan_arena *scratch);
/* log_probs [T,B,C] -> scalar (ndim 1, shape {1}). */
HIGAN_DEF higan_var *higan_ctc_loss(higan_tape *t, higan_var *log_probs, const int *targets,
                                    const int *input_lengths, const int *target_lengths,
                                    int blank, int zero_infinity);

/* -- Greedy (best path) CTC decoding of one sample: scores [T,C] (any monotone scores:
   logits, probabilities or log-probabilities), argmax per step (first maximum on ties),
   collapse repeats, then drop blanks. Writes at most max_out labels to out and returns the
   full decoded length (like snprintf: a result > max_out means out was truncated).
   For log_probs [T,B,C] use higan_ctc_greedy_decode_strided with stride B*C and
   scores = log_probs + b*C. */
HIGAN_DEF int higan_ctc_greedy_decode(const float *scores, int T, int C, int blank, int *out,
                                      int max_out);
HIGAN_DEF int higan_ctc_greedy_decode_strided(const float *scores, int64_t step_stride, int T,
                                              int C, int blank, int *out, int max_out);

/* -- Cross-entropy, F.cross_entropy(logits, labels) (mean over N, no ignore_index, no
   weights): logits [N,C], labels [N] in [0, C).
   y = mean_n (logsumexp(logits[n]) - logits[n, labels[n]]);  lse [N] (may be NULL in the
   forward) keeps each row's logsumexp for the backward:
   dlogits += dy * (softmax - onehot) / N. */
HIGAN_DEF void higan_cross_entropy_forward(float *y, float *lse, const float *logits,
                                           const int *labels, int64_t N, int64_t C);
HIGAN_DEF void higan_cross_entropy_backward(float *dlogits, const float *dy, const float *logits,
                                            const float *lse, const int *labels, int64_t N,
                                            int64_t C);
/* logits [N,C] -> scalar (ndim 1, shape {1}). */
HIGAN_DEF higan_var *higan_cross_entropy(higan_tape *t, higan_var *logits, const int *labels);
/* ==== GAN LOSSES (HiGAN+): hinge, masked L1, KL, contextual ============== */
/* Every loss is a scalar: y points to one float; the tape ops return a var of ndim 1,
   shape {1}. Backward kernels take dy (one float) and accumulate into the gradients. */

/* -- Hinge losses (BigGAN style). x: any shape, n = numel.
   d_real: mean(relu(1 - x))    discriminator loss on real scores
   d_fake: mean(relu(1 + x))    discriminator loss on fake scores
   g:      -mean(x)             generator (adversarial) loss
   HiGAN+ averages d_real over the plain and augmented real batches itself:
   (d_real(D(real)) + d_real(D(aug))) / 2. The relu gradient is 0 at the kink. */
HIGAN_DEF void higan_hinge_d_real_forward(float *y, const float *x, int64_t n);
HIGAN_DEF void higan_hinge_d_real_backward(float *dx, const float *dy, const float *x, int64_t n);
HIGAN_DEF void higan_hinge_d_fake_forward(float *y, const float *x, int64_t n);
HIGAN_DEF void higan_hinge_d_fake_backward(float *dx, const float *dy, const float *x, int64_t n);
HIGAN_DEF void higan_hinge_g_forward(float *y, const float *x, int64_t n);
HIGAN_DEF void higan_hinge_g_backward(float *dx, const float *dy, int64_t n);
HIGAN_DEF higan_var *higan_hinge_d_real(higan_tape *t, higan_var *x);
HIGAN_DEF higan_var *higan_hinge_d_fake(higan_tape *t, higan_var *x);
HIGAN_DEF higan_var *higan_hinge_g(higan_tape *t, higan_var *x);

/* -- Masked L1, HiGAN+'s recn_l1_loss(img1, img2, img_lens):
   a, b: [N, ..., W] (HiGAN+: [N, C, H, W]); M = product of the middle dims (C*H);
   lens: [N] valid widths.
   y = sum_{n, m, w < lens[n]} |a - b| / (M * sum_n lens[n])
   The divisor uses lens as given (not clipped to W), exactly like the official code;
   tv_loss and the perceptual loss call it with lens - 1 or lens / scale.
   Gradient: sign(a - b) / divisor inside the mask (0 where a == b), -that for b. */
HIGAN_DEF void higan_masked_l1_forward(float *y, const float *a, const float *b, const int *lens,
                                       int64_t N, int64_t M, int64_t W);
HIGAN_DEF void higan_masked_l1_backward(float *da, float *db, const float *dy, const float *a,
                                        const float *b, const int *lens,
                                        int64_t N, int64_t M, int64_t W);
/* a and b must have the same shape (ndim >= 2); lens is copied. */
HIGAN_DEF higan_var *higan_masked_l1(higan_tape *t, higan_var *a, higan_var *b, const int *lens);

/* -- KL divergence of N(mu, exp(logvar)) from N(0, 1), HiGAN+'s KLloss:
   mu, logvar: [N, D];  y = mean_n( -1/2 * sum_d (1 + logvar - mu^2 - exp(logvar)) )
   dmu = dy * mu / N;   dlogvar = dy * (exp(logvar) - 1) / (2 N) */
HIGAN_DEF void higan_kl_gaussian_forward(float *y, const float *mu, const float *logvar, int64_t N, int64_t D);
HIGAN_DEF void higan_kl_gaussian_backward(float *dmu, float *dlogvar, const float *dy, const float *mu,
                                          const float *logvar, int64_t N, int64_t D);
/* mu, logvar: same shape [N, ...] (D = numel / N). */
HIGAN_DEF higan_var *higan_kl_gaussian(higan_tape *t, higan_var *mu, higan_var *logvar);

/* -- Contextual loss, HiGAN+'s CXLoss(sigma=0.5, b=1.0)(featureT, featureI):
   feat_t: target (real) [N, C, P] with P = HT*WT; feat_i: inference (generated)
   [N, C, Q] with Q = HI*WI (the spatial sizes of the two may differ).
     mean[c]  = mean over n and p of feat_t[n, c, p]            (target only)
     t^, i^   = (feat - mean) / ||feat - mean||_2 over c        (no epsilon)
     r[p, q]  = (1 - t^[:, p] . i^[:, q]) / 2
     r~[p, q] = r[p, q] / (min_p' r[p', q] + 1e-5)              (min over target positions)
     w[p, q]  = exp((b - r~)/sigma) / sum_p' exp((b - r~[p', q])/sigma)
     cx_n     = mean_p max_q w[p, q]
     y        = mean_n -log(cx_n + 1e-5)
   Backward goes through the centring mean, the norms, the softmax, the min (to its
   first argmin p) and the max (to its first argmax q), like PyTorch autograd. */
#define HIGAN_CX_SIGMA 0.5f
#define HIGAN_CX_B 1.0f
typedef struct higan_cx_cache {
    float *t_hat;     /* [N, C, P] centred, channel-normalised target */
    float *i_hat;     /* [N, C, Q] centred, channel-normalised inference */
    float *t_norm;    /* [N, P] channel norms of the centred target */
    float *i_norm;    /* [N, Q] channel norms of the centred inference */
    float *r_min;     /* [N, Q] min over p of r */
    float *w_sum;     /* [N, Q] sum over p of exp((b - r~)/sigma) */
    float *cx;        /* [N] mean_p max_q w */
    int64_t *p_min;   /* [N, Q] argmin over p of r */
    int64_t *q_max;   /* [N, P] argmax over q of w */
} higan_cx_cache;
/* Points every array of c into arena a; HIGAN_ERR_NOMEM on overflow. */
HIGAN_DEF higan_status higan_cx_cache_alloc(higan_cx_cache *c, higan_arena *a,
                                            int64_t N, int64_t C, int64_t P, int64_t Q);
/* cache may be NULL (forward only; then its arrays come from scratch and are released).
   scratch: Q*P + C floats (plus the cache when cache is NULL). */
HIGAN_DEF void higan_cx_loss_forward(float *y, higan_cx_cache *cache, const float *feat_t,
                                     const float *feat_i, int64_t N, int64_t C, int64_t P, int64_t Q,
                                     float sigma, float b, higan_arena *scratch);
/* scratch: Q*P + C*(P + Q) + C + Q floats. */
HIGAN_DEF void higan_cx_loss_backward(float *dfeat_t, float *dfeat_i, const float *dy,
                                      const higan_cx_cache *cache, int64_t N, int64_t C, int64_t P,
                                      int64_t Q, float sigma, float b, higan_arena *scratch);
/* feat_t [N, C, ...], feat_i [N, C, ...] (ndim >= 2, same N and C; HiGAN+: 4-D). */
HIGAN_DEF higan_var *higan_cx_loss(higan_tape *t, higan_var *feat_t, higan_var *feat_i,
                                          float sigma, float b);
/* ==== STYLE AND RECOGNITION NETWORKS: StyleBackbone, StyleEncoder, WriterIdentifier,
   Recognizer; the 80-symbol alphabet ======================================================
   HiGAN+'s networks/module.py and networks/block.py, with the official state_dict names
   (spec section 2). Every module is a struct of handles into a higan_params store plus its
   configuration, used in three steps:
       1. <module>_register(m, store, prefix, ...)   adds its tensors as "<prefix>.<key>"
          (prefix "" gives the bare key), before higan_params_alloc;
       2. <module>_init(m, rng, init) after higan_params_alloc (or higan_params_load);
       3. <module>_forward(tape, m, ...) builds the forward on the tape (the backward comes
          with higan_tape_backward). train: batch-norm batch statistics and running-stat
          updates (also under no_grad, like PyTorch in train mode) and dropout;
          eval: running statistics, no dropout.
   A module keeps a pointer to its store: the store must outlive it and stay at one address.
   Forwards return NULL on arena or tape overflow or a bad argument (higan_last_error). */

/* Weight initialisation. HIGAN_INIT_TORCH: PyTorch's defaults (conv and linear weights and
   biases U(-1/sqrt(fan_in), 1/sqrt(fan_in)), LSTM U(-1/sqrt(hidden), 1/sqrt(hidden)));
   HIGAN_INIT_N02: HiGAN+'s 'N02', conv and linear weights N(0, 0.02), biases as PyTorch.
   Batch norm: weight 1, bias 0, running mean 0, running var 1, num_batches_tracked 0. */
typedef enum { HIGAN_INIT_TORCH = 0, HIGAN_INIT_N02 = 1 } higan_init_kind;

/* ---- BatchNorm2d: "<prefix>.{weight,bias,running_mean,running_var,num_batches_tracked}" --- */
typedef struct higan_bn2d {
    higan_params *params;
    int weight, bias, running_mean, running_var, num_batches_tracked;   /* handles */
    int64_t C;
    float momentum, eps;    /* 0.1, 1e-5 */
} higan_bn2d;
HIGAN_DEF void higan_bn2d_register(higan_bn2d *m, higan_params *p, const char *prefix, int64_t C);
HIGAN_DEF void higan_bn2d_init(const higan_bn2d *m);
/* x [N, C, H, W] -> same shape */
HIGAN_DEF higan_var *higan_bn2d_forward(higan_tape *t, const higan_bn2d *m, higan_var *x, int train);

/* ---- Conv2dBlock: "<prefix>.conv.{weight,bias}" and "<prefix>.norm.*" --------------------
   Official order: pad -> conv -> [BN] -> [ReLU], or with act_first: [ReLU] -> pad -> conv ->
   [BN]. The zero pad is folded into the convolution (identical result). */
typedef struct higan_conv_block {
    higan_params *params;
    int weight, bias;       /* bias -1: none (use_bias=False) */
    higan_bn2d norm;
    int has_norm, relu, act_first;
    int64_t in, out, ks, stride, pad;
} higan_conv_block;
HIGAN_DEF void higan_conv_block_register(higan_conv_block *m, higan_params *p, const char *prefix,
                                         int64_t in, int64_t out, int64_t ks, int64_t stride,
                                         int64_t pad, int use_bias, int norm, int relu,
                                         int act_first);
HIGAN_DEF void higan_conv_block_init(const higan_conv_block *m, higan_rng *rng, higan_init_kind init);
/* x [N, in, H, W] -> [N, out, (H + 2 pad - ks) / stride + 1, likewise W] */
HIGAN_DEF higan_var *higan_conv_block_forward(higan_tape *t, const higan_conv_block *m, higan_var *x,
                                              int train);

/* ---- ActFirstResBlock(fin, fout): "<prefix>.conv_0", "<prefix>.conv_1" (3x3, pad 1, ReLU
   first, BN, hidden min(fin, fout)) and, when fin != fout, "<prefix>.conv_s" (1x1, no bias,
   no norm). y = x_s + conv_1(dropout(conv_0(x))), x_s = conv_s(x) or x. */
typedef struct higan_afrb {
    higan_conv_block conv_0, conv_1, conv_s;
    int has_shortcut;
    int64_t fin, fout;
    float dropout;
} higan_afrb;
HIGAN_DEF void higan_afrb_register(higan_afrb *m, higan_params *p, const char *prefix, int64_t fin,
                                   int64_t fout, float dropout);
HIGAN_DEF void higan_afrb_init(const higan_afrb *m, higan_rng *rng, higan_init_kind init);
/* x [N, fin, H, W] -> [N, fout, H, W]; rng only for dropout in train mode (else may be NULL) */
HIGAN_DEF higan_var *higan_afrb_forward(higan_tape *t, const higan_afrb *m, higan_var *x, int train,
                                        higan_rng *rng);

/* ---- nn.Linear: "<prefix>.{weight [out, in], bias [out]}" -------------------------------- */
typedef struct higan_linear_layer {
    higan_params *params;
    int weight, bias;       /* bias -1: none */
    int64_t in, out;
} higan_linear_layer;
HIGAN_DEF void higan_linear_layer_register(higan_linear_layer *m, higan_params *p, const char *prefix,
                                           int64_t in, int64_t out, int use_bias);
HIGAN_DEF void higan_linear_layer_init(const higan_linear_layer *m, higan_rng *rng, higan_init_kind init);
/* x [N, in] or [B, T, in] -> [.., out] */
HIGAN_DEF higan_var *higan_linear_layer_forward(higan_tape *t, const higan_linear_layer *m, higan_var *x);

/* ---- StyleBackbone (also the CNN of the Recognizer) ---------------------------------------
   "<prefix>.cnn_backbone.{1,2,4,7,9,12,13,15,16}.*" and "<prefix>.cnn_ctc.1.*".
   Channels with resolution r, max_dim m: c(k) = min(r * 2^k, m):
   1: 1->r; AFRBs 2: r->r, 4: r->c1, 7: c1->c1, 9: c1->c2, 12: c2->c2, 13: c2->c3,
   15: c3->c3, 16: c3->c4; cnn_ctc: c4->c4 (r=16, m=256: 16,16,32,32,64,64,128,128,256).
   Layers: ConstantPad2d(2, -1), conv 5x5 stride 2; AFRB; ZeroPad (l/r 1); AFRB; ZeroPad 1,
   MaxPool 3/2 (the zeros take part in the max); AFRB; ZeroPad l/r 1; AFRB (feat2); ZeroPad
   1, MaxPool 3/2; AFRB; AFRB (feat3); MaxPool 3/2; AFRB; AFRB (feat4); ZeroPad l/r 1; then
   cnn_ctc: ReLU, conv 3x3 no pad, BN, ReLU. Input [B, in_channel, 64, W] (the height must
   give a 1-row output: 64), output [B, c4, T] with T = W / 16 for W a multiple of 16.
   Dropout: cfg.dropout in the AFRBs of the second stage (12..16), half of it in 2..9. */
typedef struct higan_backbone_config {
    int resolution;     /* 16 */
    int max_dim;        /* 256 */
    int in_channel;     /* 1 */
    float dropout;      /* 0 (GAN), 0.2 (WID training) */
} higan_backbone_config;
HIGAN_DEF higan_backbone_config higan_backbone_default_config(void);
typedef struct higan_style_backbone {
    higan_params *params;
    higan_backbone_config cfg;
    higan_conv_block conv1;     /* cnn_backbone.1 */
    higan_afrb blocks[8];       /* cnn_backbone.{2,4,7,9,12,13,15,16} */
    higan_conv_block ctc;       /* cnn_ctc.1 */
    int64_t out_dim;            /* c4 (256) */
} higan_style_backbone;
#define HIGAN_BACKBONE_LEN_SCALE 16     /* sequence positions = image width / 16 */
HIGAN_DEF void higan_style_backbone_register(higan_style_backbone *b, higan_params *p,
                                             const char *prefix, const higan_backbone_config *cfg);
/* StyleBackbone uses HIGAN_INIT_N02 (the official 'N02'); the Recognizer's CNN TORCH. */
HIGAN_DEF void higan_style_backbone_init(const higan_style_backbone *b, higan_rng *rng,
                                         higan_init_kind init);
/* x [B, in_channel, 64, W] -> sequence feature [B, out_dim, T]. feats (may be NULL) receives
   the outputs of cnn_backbone.9, .13 and .16 (feat2, feat3, feat4 of the contextual loss:
   [B, c2, 16, W/4 + 3], [B, c3, 8, W/8 + 2], [B, c4, 3, W/16] for W a multiple of 32).
   rng: dropout in train mode only (may be NULL when cfg.dropout is 0 or in eval). */
HIGAN_DEF higan_var *higan_style_backbone_forward(higan_tape *t, const higan_style_backbone *b,
                                                  higan_var *x, int train, higan_rng *rng,
                                                  higan_var **feats);

/* ---- StyleEncoder: "<prefix>.linear_style.{0,2}.*", "<prefix>.mu.*", "<prefix>.logvar.*" ---
   style = masked mean of feat over the first img_len // 16 positions (divisor len + 1e-8);
   h = lrelu(L2(lrelu(L0(style)))) (slope 0.01); mu = mu(h), logvar = logvar(h);
   z = mu + exp(0.5 logvar) * eps in VAE mode, z = mu otherwise. */
typedef struct higan_style_encoder {
    higan_params *params;
    higan_linear_layer linear0, linear2, mu, logvar;
    int64_t in_dim, style_dim;      /* 256, 32 */
} higan_style_encoder;
HIGAN_DEF void higan_style_encoder_register(higan_style_encoder *e, higan_params *p, const char *prefix,
                                            int64_t in_dim, int64_t style_dim);
HIGAN_DEF void higan_style_encoder_init(const higan_style_encoder *e, higan_rng *rng, higan_init_kind init);
/* feat [B, in_dim, T] (a backbone output), img_lens [B] image widths in pixels (copied).
   Returns z [B, style_dim]; *mu and *logvar (each may be NULL) receive the heads (logvar is
   always computed). vae_mode: eps = noise [B, style_dim] when given, else N(0, 1) drawn from
   rng (B * style_dim draws in row-major order). Without vae_mode z is mu itself. */
HIGAN_DEF higan_var *higan_style_encoder_forward(higan_tape *t, const higan_style_encoder *e,
                                                 higan_var *feat, const int *img_lens, int vae_mode,
                                                 higan_rng *rng, const float *noise,
                                                 higan_var **mu, higan_var **logvar);

/* ---- WriterIdentifier: "<prefix>.linear_wid.{0,2}.*" ---------------------------------------
   Runs on an external backbone feature. Masked mean over the first img_len // 32 positions
   (the official quirk: only the left half of the sequence), Linear, LeakyReLU(0.01), Linear. */
typedef struct higan_writer_identifier {
    higan_params *params;
    higan_linear_layer linear0, linear2;
    int64_t in_dim, n_writer;       /* 256, 372 (the test-set WID: 128) */
} higan_writer_identifier;
#define HIGAN_WID_LEN_SCALE 32
HIGAN_DEF void higan_writer_identifier_register(higan_writer_identifier *w, higan_params *p,
                                                const char *prefix, int64_t in_dim, int64_t n_writer);
HIGAN_DEF void higan_writer_identifier_init(const higan_writer_identifier *w, higan_rng *rng,
                                            higan_init_kind init);
/* feat [B, in_dim, T], img_lens [B] in pixels -> logits [B, n_writer] */
HIGAN_DEF higan_var *higan_writer_identifier_forward(higan_tape *t, const higan_writer_identifier *w,
                                                     higan_var *feat, const int *img_lens);

/* ---- Recognizer: "<prefix>.cnn_backbone.*", "<prefix>.cnn_ctc.*" (as the backbone),
   "<prefix>.rnn_ctc.lstm.{weight_ih,weight_hh,bias_ih,bias_hh}_l{k}[_reverse]" (BiLSTM,
   hidden out_dim / 2 per direction, batch_first, over img_len // 16 frames as
   pack_padded_sequence) and "<prefix>.ctc_cls.{weight,bias}" (Linear out_dim -> n_class). */
typedef struct higan_recognizer_config {
    higan_backbone_config cnn;      /* 16, 256, 1, dropout 0 */
    int n_class;                    /* 80 */
    int rnn_depth;                  /* 2 (0: no LSTM, ctc_cls on the CNN feature) */
} higan_recognizer_config;
HIGAN_DEF higan_recognizer_config higan_recognizer_default_config(void);
#define HIGAN_RECOGNIZER_MAX_DEPTH 4
typedef struct higan_recognizer {
    higan_params *params;
    higan_recognizer_config cfg;
    higan_style_backbone cnn;
    int lstm[HIGAN_RECOGNIZER_MAX_DEPTH * 2 * 4];   /* (layer*2 + dir)*4 + {w_ih,w_hh,b_ih,b_hh} */
    int64_t hidden;                                 /* out_dim / 2 */
    higan_linear_layer ctc_cls;
} higan_recognizer;
HIGAN_DEF void higan_recognizer_register(higan_recognizer *r, higan_params *p, const char *prefix,
                                         const higan_recognizer_config *cfg);
/* The official Recognizer uses HIGAN_INIT_TORCH. */
HIGAN_DEF void higan_recognizer_init(const higan_recognizer *r, higan_rng *rng, higan_init_kind init);
/* x [B, 1, 64, W], img_lens [B] widths in pixels (copied; 1 <= img_len // 16 <= W / 16, any
   order: PyTorch's pack_padded_sequence wants them descending, the result is the same).
   T = max_b img_len // 16 (pad_packed_sequence's length), frames >= each length see zero
   LSTM outputs. train: log_softmax [T, B, n_class] (for higan_ctc_loss with input lengths
   img_len // 16); eval: raw logits [B, T, n_class]. */
HIGAN_DEF higan_var *higan_recognizer_forward(higan_tape *t, const higan_recognizer *r, higan_var *x,
                                              const int *img_lens, int train, higan_rng *rng);
/* Greedy CTC decoding of sample b of a recognizer output (layout per train) over its
   img_len // 16 frames, to text. Returns the text length (snprintf-like: out gets at most
   cap - 1 characters and a NUL), or a negative status. */
HIGAN_DEF int higan_recognizer_decode(const higan_var *out, int train, int b, int img_len,
                                      char *text, int cap);

/* ---- Alphabet (lib/alphabet.py 'all'): index 0 '`' is the CTC blank and the label pad,
   1 ' ', 2..27 A-Z, 28..53 a-z, 54..63 0-9, 64..79 '-"/,.+_!#&():;? ------------------------ */
#define HIGAN_ALPHABET_SIZE 80
#define HIGAN_ALPHABET_STRING "` ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789'-\"/,.+_!#&():;?"
HIGAN_DEF const char *higan_alphabet(void);
/* Label of one byte character, or -1 if it is not in the alphabet (or is the blank '`'). */
HIGAN_DEF int higan_char_label(int c);
/* UTF-8 text -> labels in out[0..max). Returns the number of labels, or a negative status
   (HIGAN_ERR_ARG) with a message naming the first offending character and its position
   (0-based, in characters): a character outside the alphabet, the blank '`', invalid UTF-8,
   empty text, or more than max characters. */
HIGAN_DEF int higan_text_encode(const char *utf8, int *out, int max);
/* labels -> text; label 0 (pad/blank) is skipped. Returns the text length (snprintf-like:
   out gets at most cap - 1 characters and a NUL; out may be NULL when cap is 0), or
   HIGAN_ERR_ARG for a label outside [0, 80). */
HIGAN_DEF int higan_text_decode(const int *labels, int n, char *out, int cap);
/* Greedy CTC decoding to text: scores [T, 80] with row stride step_stride floats (logits,
   probabilities or log-probabilities), blank 0. Return as higan_text_decode. */
HIGAN_DEF int higan_ctc_decode_text(const float *scores, int64_t step_stride, int T, char *out, int cap);
/* ==== DATASET: HiGAN+'s word-image container (lib/datasets.py gen_h5file layout) ======== */
/* Images are 64 px high, ink bright (255) on a 0 background, stored side by side in one
   [64, total_width] uint8 array; labels are Unicode code points. The tensors (safetensors)
   or datasets (HDF5) have exactly these names and dtypes:
       imgs          U8  [64, total_width]      img_seek_idxs I64 [count]   img_lens I16 [count]
       lbs           I32 [total_chars]          lb_seek_idxs  I64 [count]   lb_lens  I16 [count]
       wids          I16 [count]   (raw writer ids; HiGAN+'s loader subtracts the minimum)
   Row stride of imgs: ds->capacity_cols. It equals total_width after higan_dataset_load and
   higan_dataset_pack. While a dataset is being built with higan_dataset_append the rows
   keep spare room (appending would otherwise move every row each time), so read pixels with
   higan_dataset_image / higan_dataset_pixel, or call higan_dataset_pack first.
   Every record points into the arrays: img_seek_idxs[i] + img_lens[i] <= total_width etc. */
typedef struct higan_dataset {
    int64_t count;          /* number of word images */
    int64_t total_width;    /* columns of imgs */
    int64_t total_chars;    /* entries of lbs */
    uint8_t *imgs;          /* [64, total_width] row-major (row stride capacity_cols) */
    int64_t *img_seek_idxs; /* [count] first column of each image */
    int16_t *img_lens;      /* [count] width of each image */
    int32_t *lbs;           /* [total_chars] label characters as Unicode code points */
    int64_t *lb_seek_idxs;  /* [count] */
    int16_t *lb_lens;       /* [count] */
    int16_t *wids;          /* [count] writer ids */
    /* private building state follows; treat as opaque */
    int64_t capacity_cols, capacity_chars, capacity_count;
} higan_dataset;
#define HIGAN_DATASET_HEIGHT 64
#define HIGAN_DATASET_MAX_WIDTH 4096   /* images wider than this are rejected */
#define HIGAN_DATASET_MAX_LABEL 4096   /* label characters per word (int16 lengths) */

HIGAN_DEF void higan_dataset_init(higan_dataset *ds);
/* Append one word image (height 64, row-major [64][w], ink bright) with its UTF-8 label and
   writer id. Checks: w in 1..HIGAN_DATASET_MAX_WIDTH, label non-empty and inside the 80-symbol
   alphabet (higan_text_encode), wid in the int16 range, else HIGAN_ERR_ARG with a message
   naming the label. Nothing is appended on error. */
HIGAN_DEF higan_status higan_dataset_append(higan_dataset *ds, const uint8_t *img, int w,
                                            const char *label, int wid);
/* safetensors with exactly the tensor names above (atomic: tmp + rename); .hdf5/.h5 paths go
   through libhdf5 when compiled with HIGAN_HDF5 (make HDF5=1), else a clear error. */
HIGAN_DEF higan_status higan_dataset_save(const higan_dataset *ds, const char *path);
/* Replaces *ds (whose previous contents are NOT freed: pass an initialised-empty or freed
   dataset). Validates every tensor (present, dtype, rank, height 64, matching counts) and
   every record (seek/len inside the arrays, lengths >= 1, widths <= HIGAN_DATASET_MAX_WIDTH,
   label code points in the alphabet); errors name the file and the record index. On error
   *ds is left empty (initialised). */
HIGAN_DEF higan_status higan_dataset_load(higan_dataset *ds, const char *path);
HIGAN_DEF void higan_dataset_free(higan_dataset *ds);
/* The label of word i as UTF-8 (returns length; truncates to cap like snprintf).
   HIGAN_ERR_ARG for i outside [0, count). */
HIGAN_DEF int higan_dataset_label(const higan_dataset *ds, int64_t i, char *out, int cap);

/* ---- additions ---- */
/* Compacts imgs to row stride total_width (capacity_cols = total_width). Cheap when packed. */
HIGAN_DEF higan_status higan_dataset_pack(higan_dataset *ds);
/* Pixel (row y in [0,64), column x in [0, img_lens[i])) of word i; any stride. */
HIGAN_DEF uint8_t higan_dataset_pixel(const higan_dataset *ds, int64_t i, int y, int x);
/* Copies word i as row-major [64][img_lens[i]] into out (cap bytes). Returns the width,
   or HIGAN_ERR_ARG (bad index or cap < 64 * width). */
HIGAN_DEF int higan_dataset_image(const higan_dataset *ds, int64_t i, uint8_t *out, int64_t cap);
/* Label of word i as alphabet indices (higan_text_encode's labels). Returns the length,
   or a negative status (bad index, code point outside the alphabet, length > max). */
HIGAN_DEF int higan_dataset_label_codes(const higan_dataset *ds, int64_t i, int *out, int max);
/* 1 if the path ends in .hdf5 or .h5 (case-insensitive): save/load use libhdf5. */
HIGAN_DEF int higan_dataset_is_hdf5_path(const char *path);
/* 1 when this build has HDF5 support (compiled with HIGAN_HDF5). */
HIGAN_DEF int higan_dataset_has_hdf5(void);
/* ==== TRAINING DATA: resampling, batch loader with augmentation, lexicon ================= */
/* Reproduces HiGAN+'s data pipeline (lib/datasets.py, lib/transforms.py, lib/alphabet.py,
   networks/utils.py idx_to_words) in C. Needs the dataset container (higan_dataset) above.

   RESAMPLING KERNELS. Grayscale images, row-major, src row stride src_stride elements (>= sw),
   dst packed [dh, dw]. Every size >= 1. Results match the libraries named below: the uint8
   versions bit for bit (their fixed-point or float arithmetic and rounding are reproduced),
   the float versions to float rounding (accumulation order may differ).
     higan_resize_area   cv2.resize(..., interpolation=cv2.INTER_AREA) (OpenCV 4.x): box
                         averaging with fractional edge weights when shrinking in both
                         directions (integer factors: exact box sums; 2x2 rounds half up, other
                         factors and fractional ratios round half to even); enlarging in a
                         direction uses OpenCV's area-mode bilinear weights, as cv2 does.
     higan_resize_linear cv2.resize(..., interpolation=cv2.INTER_LINEAR): half-pixel centres,
                         edge replication; uint8 in OpenCV's 11-bit fixed point. (Exactly 2x
                         shrinking in both directions is INTER_AREA in cv2; reproduced.)
     higan_resize_pil    PIL Image.resize (Pillow 9.x ImagingResample): separable convolution
                         with the filter support scaled by the shrink factor (antialiasing),
                         horizontal pass first; uint8 in 22-bit fixed point with an 8-bit
                         intermediate ("L" images), float in double ("F" images). Needs scratch
                         memory: higan_resize_pil_scratch_bytes(...) bytes of the arena. */
typedef enum {
    HIGAN_PIL_LANCZOS = 1,   /* PIL.Image.LANCZOS (= ANTIALIAS): a = 3 windowed sinc */
    HIGAN_PIL_BILINEAR = 2   /* PIL.Image.BILINEAR: triangle, support 1 */
} higan_pil_filter;
/* dst [dh, dw] <- src [sh, sw] (row stride src_stride) */
HIGAN_DEF void higan_resize_area(uint8_t *dst, int64_t dw, int64_t dh,
                                 const uint8_t *src, int64_t sw, int64_t sh, int64_t src_stride);
HIGAN_DEF void higan_resize_area_f32(float *dst, int64_t dw, int64_t dh,
                                     const float *src, int64_t sw, int64_t sh, int64_t src_stride);
HIGAN_DEF void higan_resize_linear(uint8_t *dst, int64_t dw, int64_t dh,
                                   const uint8_t *src, int64_t sw, int64_t sh, int64_t src_stride);
HIGAN_DEF void higan_resize_linear_f32(float *dst, int64_t dw, int64_t dh,
                                       const float *src, int64_t sw, int64_t sh, int64_t src_stride);
/* Scratch bytes (arena, 64-byte aligned allocations included) for one higan_resize_pil call. */
HIGAN_DEF size_t higan_resize_pil_scratch_bytes(int64_t dw, int64_t dh, int64_t sw, int64_t sh,
                                                higan_pil_filter filter);
/* HIGAN_ERR_NOMEM (arena overflow, nothing written) or HIGAN_OK. The arena is restored. */
HIGAN_DEF higan_status higan_resize_pil(uint8_t *dst, int64_t dw, int64_t dh,
                                        const uint8_t *src, int64_t sw, int64_t sh, int64_t src_stride,
                                        higan_pil_filter filter, higan_arena *scratch);
HIGAN_DEF higan_status higan_resize_pil_f32(float *dst, int64_t dw, int64_t dh,
                                            const float *src, int64_t sw, int64_t sh, int64_t src_stride,
                                            higan_pil_filter filter, higan_arena *scratch);
/* uint8 -> [-1, 1] as torchvision's ToTensor + Normalize(0.5, 0.5): (v / 255 - 0.5) / 0.5 in
   float32 (= v / 127.5 - 1 to the last bit or so); 0 (background) -> -1, 255 (ink) -> 1. */
HIGAN_DEF float higan_pixel_to_float(uint8_t v);

/* ---- Batch loader ----------------------------------------------------------------------
   Batches as HiGAN+'s training DataLoader builds them (Hdf5Dataset with process_style,
   RandomClip + RandomScale, sort_collect_fn_style):
     - style image: each word resized to 32 * len(label) x 64 (cv2 INTER_AREA when narrower
       than the stored image, INTER_LINEAR otherwise); without process_style the stored image;
     - aug image (augment): the style image through RandomClip (if w > 128: width uniform in
       [128, w), then offset uniform in [0, w - width)) and RandomScale (ratio uniform in
       [-0.4, 0.4), width int(w * (1 + ratio)) rounded up to a multiple of 32 (at least 32),
       PIL BILINEAR when ratio > 0, else PIL LANCZOS (ANTIALIAS));
     - pixels (v / 255 - 0.5) / 0.5: ink bright, background and padding -1;
     - images padded on the right with -1 to the batch's widest width rounded up to 32;
     - samples sorted by style width, descending (numpy argsort of the widths, reversed:
       equal widths end up in the reverse of their drawn order), every array kept aligned;
     - labels 0-padded alphabet indices, writer ids minus the dataset's smallest id.
   Randomness (shuffling and augmentation) comes from one higan_rng seeded with opt.seed and
   used strictly in order (epoch shuffle, then per batch and per sample in drawn order: clip
   width, clip offset, scale ratio), so results are the same with and without the thread.
   The loader keeps a pointer to the dataset: keep it alive and unchanged meanwhile. */
typedef struct higan_loader_options {
    int batch_size;     /* samples per batch (official: 8) */
    int shuffle;        /* reshuffle at every epoch start (official: 1) */
    int drop_last;      /* drop the last incomplete batch (official: 1) */
    uint64_t seed;      /* seed of the loader's RNG */
    int process_style;  /* resize to 32 px per character (official: 1) */
    int augment;        /* make aug_imgs (official: 1) */
    int max_width;      /* 0: none; else words whose padded style width exceeds it are left
                           out of every epoch (n_skipped counts them) */
    int threaded;       /* 1: a background thread prepares the next batch (double buffer) */
    int n_writers;      /* > 0: every remapped writer id must be < n_writers (else an error
                           naming the record); 0: no check */
} higan_loader_options;
/* The official training settings: batch 8, shuffle, drop_last, seed 123456, process_style,
   augment, no max width, threaded, n_writers 0. */
HIGAN_DEF higan_loader_options higan_loader_default_options(void);

/* One batch. Every pointer points into the loader and stays valid until the next
   higan_loader_next (or higan_loader_free). B <= batch_size. */
typedef struct higan_batch {
    int B;
    int64_t width;       /* columns of imgs: max img_lens rounded up to a multiple of 32 */
    float *imgs;         /* [B, 1, 64, width] in [-1, 1], padding -1 */
    int *img_lens;       /* [B] style widths (descending) */
    int64_t label_width; /* columns of labels: max label_lens */
    int *labels;         /* [B, label_width] alphabet indices, 0-padded */
    int *label_lens;     /* [B] */
    int *wids;           /* [B] writer ids minus the dataset's minimum */
    int64_t *records;    /* [B] dataset record index of each sample */
    int64_t aug_width;   /* columns of aug_imgs (0 when augment is off) */
    float *aug_imgs;     /* [B, 1, 64, aug_width] or NULL */
    int *aug_lens;       /* [B] aug widths (multiples of 32) or NULL */
    int64_t epoch;       /* 0-based */
    int64_t index;       /* batch index within the epoch */
} higan_batch;

typedef struct higan_loader {
    const higan_dataset *ds;
    higan_loader_options opt;
    int64_t n_records;      /* words in each epoch */
    int64_t n_skipped;      /* words left out by max_width */
    int64_t n_batches;      /* batches per epoch */
    int wid_min;            /* smallest writer id of the dataset */
    int64_t width_cap;      /* largest padded style width */
    int64_t aug_width_cap;  /* largest possible aug width */
    int64_t label_cap;      /* longest label */
    void *priv;             /* buffers, producer state, thread */
} higan_loader;
#define HIGAN_LOADER_EPOCH_END 1   /* higan_loader_next: the epoch is over, no batch */
/* Checks every record (label in the alphabet, lengths, writer ids) with errors naming the
   record, allocates both batch buffers and all scratch memory, and with opt->threaded starts
   the producer thread (builds without threads fall back to the synchronous path).
   opt NULL: the defaults. */
HIGAN_DEF higan_status higan_loader_init(higan_loader *L, const higan_dataset *ds,
                                         const higan_loader_options *opt);
/* HIGAN_OK with the next batch in *out; HIGAN_LOADER_EPOCH_END after the last batch of an
   epoch (the next call starts the next epoch, reshuffled); < 0 on error. */
HIGAN_DEF higan_status higan_loader_next(higan_loader *L, higan_batch *out);
HIGAN_DEF void higan_loader_free(higan_loader *L);
/* The style width of record i under these options (32 * label length with process_style,
   else the stored width). */
HIGAN_DEF int64_t higan_loader_style_width(const higan_dataset *ds, int64_t i, int process_style);

/* ---- Lexicon (lib/alphabet.py get_lexicon, networks/utils.py idx_to_words) --------------
   Loading keeps a line (universal newlines, UTF-8) when, after Python's str.strip(), it has
   at least 2 characters, all in the alphabet, and fewer than HIGAN_LEXICON_MAX_LEN; kept words
   are lower-cased. Duplicates are kept (as the official list). One difference: the official
   accepts '`' (its alphabet string includes the CTC blank); this library does not. */
#define HIGAN_LEXICON_MAX_LEN 20
typedef struct higan_lexicon {
    int64_t count;        /* words */
    char *text;           /* the words, each NUL-terminated */
    int64_t *offsets;     /* [count] start of each word in text */
    int64_t text_bytes, text_capacity, capacity;
    int64_t lines, dropped;   /* lines read by the last load, lines dropped by it */
} higan_lexicon;
HIGAN_DEF void higan_lexicon_init(higan_lexicon *lex);
/* Appends the kept words of a file. HIGAN_ERR_IO (cannot open/read), HIGAN_ERR_FORMAT (invalid
   UTF-8, naming the line), HIGAN_ERR_NOMEM. */
HIGAN_DEF higan_status higan_lexicon_load(higan_lexicon *lex, const char *path);
/* The same rules on text in memory (n bytes; may hold NULs). */
HIGAN_DEF higan_status higan_lexicon_load_text(higan_lexicon *lex, const char *text, size_t n);
HIGAN_DEF const char *higan_lexicon_word(const higan_lexicon *lex, int64_t i);
HIGAN_DEF void higan_lexicon_free(higan_lexicon *lex);
/* n random words as idx_to_words: n uniform indices first; then per word, in order, the first
   letter upper-cased with probability 0.5 and, when max_len >= 1 and the word is longer,
   a random max_len-character substring (start uniform in [0, len - max_len), as
   np.random.randint); finally a stable sort by length, descending. Labels go to
   labels[i * label_stride ...] 0-padded up to label_stride (>= max_len when max_len >= 1, else
   >= HIGAN_LEXICON_MAX_LEN - 1), lengths to lens[i]. Returns the longest length, or
   HIGAN_ERR_ARG for an empty lexicon. */
HIGAN_DEF int higan_lexicon_sample(const higan_lexicon *lex, higan_rng *rng, int n, int max_len,
                                   int *labels, int64_t label_stride, int *lens);
/* ==== BIGGAN-SIDE NETWORKS OF HIGAN+: Generator, Discriminator, PatchDiscriminator ======
   (networks/BigGAN_networks.py, networks/BigGAN_layers.py of ganji15/HiGANplus.)
   Every module is a small struct of parameter handles into a higan_params store (plus its
   configuration). Life cycle:
       higan_params P; higan_generator G; higan_rng r;
       higan_params_init(&P);
       higan_generator_register(&G, &P, "Generator", NULL);  // NULL: official configuration
       higan_params_alloc(&P);
       higan_generator_init(&G, &r);            // or higan_params_load(&P, &st, "", NULL)
       out = higan_generator_forward(&T, &G, z, labels, lens, L, train);
   Registered names are the official state_dict keys below the given prefix ("" gives the
   bare keys, "Generator" gives "Generator.blocks.0.0.conv1.weight", as the checkpoint's
   top-level dict nests them). Buffers (u0, sv0, stored_mean, stored_var) are HIGAN_BUFFER.
   train: BatchNorm uses batch statistics and updates stored_mean/stored_var (momentum 0.1,
   eps 1e-5); spectral norm stores u0 <- u and sv0 <- sigma (also under no_grad, exactly as
   BigGAN in training mode). eval: stored statistics; sigma recomputed from u0 each forward.
   Every forward returns NULL when an input is NULL or the arena overflows (sticky). */

/* ---- layers ------------------------------------------------------------------------------ */
/* SNLinear: weight [out, in], bias [out] (optional), buffers u0 [1, out], sv0 [1].
   forward: y = x (W / sigma)^T + b; x [N, in] or [B, T, in]. */
typedef struct higan_sn_linear {
    higan_params *p;
    int weight, bias, u0, sv0;      /* handles; bias -1 when absent */
    int64_t in, out;
} higan_sn_linear;
HIGAN_DEF void higan_sn_linear_register(higan_sn_linear *m, higan_params *p, const char *prefix,
                                        int64_t in, int64_t out, int bias);
HIGAN_DEF higan_var *higan_sn_linear_forward(higan_tape *t, const higan_sn_linear *m,
                                             higan_var *x, int train);

/* SNConv2d: weight [out, in, k, k], bias [out] (optional), u0 [1, out], sv0 [1];
   stride 1, zero padding pad on every side. x [N, in, H, W]. */
typedef struct higan_sn_conv2d {
    higan_params *p;
    int weight, bias, u0, sv0;
    int64_t in, out, k, pad;
} higan_sn_conv2d;
HIGAN_DEF void higan_sn_conv2d_register(higan_sn_conv2d *m, higan_params *p, const char *prefix,
                                        int64_t in, int64_t out, int64_t k, int64_t pad, int bias);
HIGAN_DEF higan_var *higan_sn_conv2d_forward(higan_tape *t, const higan_sn_conv2d *m,
                                             higan_var *x, int train);

/* ccbn (G's conditional BN, norm_style 'bn'): gain, bias = SNLinear(y_dim -> C, no bias);
   buffers stored_mean [C] (0), stored_var [C] (1).
   forward: batch_norm(x) * (1 + gain(y)) + bias(y); x [N, C, H, W], y [N, y_dim]. */
typedef struct higan_ccbn {
    higan_params *p;
    higan_sn_linear gain, bias;
    int stored_mean, stored_var;
    int64_t C;
} higan_ccbn;
HIGAN_DEF void higan_ccbn_register(higan_ccbn *m, higan_params *p, const char *prefix,
                                   int64_t C, int64_t y_dim);
HIGAN_DEF higan_var *higan_ccbn_forward(higan_tape *t, const higan_ccbn *m, higan_var *x,
                                        higan_var *y, int train);

/* bn (G's output BN): parameters gain [C] (1), bias [C] (0); buffers stored_mean,
   stored_var. forward: F.batch_norm(x, stored_mean, stored_var, gain, bias, train). */
typedef struct higan_bn_out {
    higan_params *p;
    int gain, bias, stored_mean, stored_var;
    int64_t C;
} higan_bn_out;
HIGAN_DEF void higan_bn_out_register(higan_bn_out *m, higan_params *p, const char *prefix, int64_t C);
HIGAN_DEF higan_var *higan_bn_out_forward(higan_tape *t, const higan_bn_out *m, higan_var *x,
                                          int train);

/* GBlock: h = conv2(relu(bn2(conv1(up(relu(bn1(x, y)))), y))) + conv_sc(up(x)).
   conv1/conv2 3x3 pad 1, conv_sc 1x1 (present when in != out or upsampling), up = nearest
   upsampling by (up_h, up_w) (1, 1: none). Keys: conv1, conv2, conv_sc, bn1, bn2. */
typedef struct higan_gblock {
    higan_sn_conv2d conv1, conv2, conv_sc;
    higan_ccbn bn1, bn2;
    int has_sc, up_h, up_w;
} higan_gblock;
HIGAN_DEF void higan_gblock_register(higan_gblock *b, higan_params *p, const char *prefix,
                                     int64_t in, int64_t out, int up_h, int up_w, int64_t y_dim);
HIGAN_DEF higan_var *higan_gblock_forward(higan_tape *t, const higan_gblock *b, higan_var *x,
                                          higan_var *y, int train);

/* DBlock (D_wide): h = pool(conv2(relu(conv1(preact ? relu(x) : x)))) + shortcut(x);
   shortcut: preact ? pool(conv_sc(x)) : conv_sc(pool(x)); conv_sc 1x1 exists when
   in != out or down; pool = AvgPool2d(2) when down. Keys: conv1, conv2, conv_sc. */
typedef struct higan_dblock {
    higan_sn_conv2d conv1, conv2, conv_sc;
    int has_sc, preact, down;
} higan_dblock;
HIGAN_DEF void higan_dblock_register(higan_dblock *b, higan_params *p, const char *prefix,
                                     int64_t in, int64_t out, int preact, int down);
HIGAN_DEF higan_var *higan_dblock_forward(higan_tape *t, const higan_dblock *b, higan_var *x,
                                          int train);

/* ---- Generator ------------------------------------------------------------------------- */
typedef struct higan_generator_config {
    int64_t ch;          /* 64: channel multiplier (blocks 8ch->4ch->2ch->ch->ch) */
    int64_t style_dim;   /* 32: z size, and the size of each of the 4 style chunks */
    int64_t embed_dim;   /* 120 */
    int64_t n_class;     /* 80 (index 0 = padding) */
    int64_t bottom;      /* 4: bottom width and height; a character is 8*bottom = 32 px wide */
    int64_t input_nc;    /* 1: output channels */
} higan_generator_config;
HIGAN_DEF higan_generator_config higan_generator_default_config(void);

typedef struct higan_generator {
    higan_generator_config cfg;
    higan_params *p;
    int text_embedding;                    /* Embedding(n_class, embed_dim, padding 0, max_norm 1) */
    higan_sn_linear filter_linear;         /* style_dim + embed_dim -> 8ch * bottom^2 */
    higan_sn_linear style_linear;          /* style_dim -> 4 * style_dim */
    higan_gblock blocks[4];                /* up (2,1), (2,2), (2,2), (2,2) */
    higan_bn_out out_bn;                   /* output_layer.0 */
    higan_sn_conv2d out_conv;              /* output_layer.2: ch -> input_nc, 3x3 pad 1 */
    int eval_full_width;                   /* 0 (set by register): eval forwards without
                                              gradients compute each word at its own width
                                              (see higan_generator_forward); 1: the whole
                                              padded batch, as the official code (for
                                              comparisons and benchmarks) */
} higan_generator;
/* cfg NULL: the official configuration. */
HIGAN_DEF void higan_generator_register(higan_generator *g, higan_params *p, const char *prefix,
                                        const higan_generator_config *cfg);
/* Official init ('N02'): conv/linear/embedding weights N(0, 0.02) (padding row included),
   biases U(+-1/sqrt(fan_in)) as PyTorch, u0 N(0, 1), sv0 1, BN gain 1 / bias 0,
   stored_mean 0, stored_var 1. Call after higan_params_alloc. */
HIGAN_DEF void higan_generator_init(higan_generator *g, higan_rng *rng);
/* z [B, style_dim]; labels [B, L] row-major, right-padded with 0; lens [B] characters.
   Returns the image [B, input_nc, 16*bottom, 8*bottom*L] after tanh (64 x 32L).
   The looked-up embedding rows are renormalised in place (max_norm 1) as PyTorch does.
   eval (train 0): columns >= lens[b] * H / 2 (= 32 * len) are set to -1 (gradient 0).
   Less work in eval mode: when no gradient is recorded (under higan_no_grad_begin, or z
   needs none and the store is frozen) and eval_full_width is 0, the words are not run at the
   padded width L. Word b is computed at min(lens[b] + higan_generator_margin(g), L)
   characters (its labels up to there, pad symbols included, as the padded batch has them),
   words of the same width in one forward (about 32 characters per forward, the arena given
   back in between, the normalised weights computed once), and inside the network only the
   columns that the kept output columns depend on. The valid columns are bit for bit those
   of the padded computation (the same GEMM sum for every output element;
   tests/test_width.c checks it at every CPU level), the masked ones -1 as before; a word
   with lens[b] <= 0 costs nothing. With 2+ threads those forwards run side by side, one per
   thread (each in an equal share of the arena's free space; one that does not fit runs alone
   afterwards): the same numbers for any thread count. In every eval forward (train 0) the
   GBlocks' conv1(upsample(h)) is one higan_upsample_conv2d (2.25x fewer multiplies; the last
   bits differ from the two separate ops), and the looked-up embedding rows of the batch are
   renormalised once. */
HIGAN_DEF higan_var *higan_generator_forward(higan_tape *t, const higan_generator *g, higan_var *z,
                                             const int *labels, const int *lens, int64_t L,
                                             int train);
/* Characters right of a word that its valid output columns depend on in eval mode (the
   receptive field of the last valid column, in whole characters): 1 for the official
   configuration (bottom 4), ceil(4 / bottom) in general. See the derivation at
   higan__gen_needs. */
HIGAN_DEF int64_t higan_generator_margin(const higan_generator *g);

/* ---- Discriminator / PatchDiscriminator -------------------------------------------------- */
typedef struct higan_discriminator_config {
    int64_t ch;          /* 64: blocks in_nc->ch->2ch->4ch->4ch */
    int64_t resolution;  /* 64 (Discriminator) or 32 (PatchDiscriminator): same layers */
    int64_t input_nc;    /* 1 */
} higan_discriminator_config;
HIGAN_DEF higan_discriminator_config higan_discriminator_default_config(int64_t resolution);

typedef struct higan_discriminator {
    higan_discriminator_config cfg;
    higan_params *p;
    higan_dblock blocks[4];    /* down, down, down, none; block 0 without preactivation */
    higan_sn_linear linear;    /* 4ch -> 1 */
} higan_discriminator;
/* cfg NULL: official Discriminator (resolution 64); prefix "Discriminator" or
   "PatchDiscriminator" (or "" for bare keys). */
HIGAN_DEF void higan_discriminator_register(higan_discriminator *d, higan_params *p,
                                            const char *prefix,
                                            const higan_discriminator_config *cfg);
HIGAN_DEF void higan_discriminator_init(higan_discriminator *d, higan_rng *rng);
/* x [B, input_nc, H, W] -> scores [B, 1]. After the blocks: ReLU, then
   x_lens == NULL: sum over H and W (PatchDiscriminator on patches);
   x_lens given: sum over H and the first x_lens[b] * W_h / W (floor) columns, divided by
   y_lens[b] (the number of characters) when y_lens is not NULL. Then SNLinear. */
HIGAN_DEF higan_var *higan_discriminator_forward(higan_tape *t, const higan_discriminator *d,
                                                 higan_var *x, const int *x_lens,
                                                 const int *y_lens, int train);

/* ---- all patches (networks/utils.py extract_all_patches, block 32, step 8) ---------------
   x [B, C, H, W]; every size x size window at stride step whose columns lie inside the
   valid width lens[b] (lens NULL: W): n_rows = (H - size) / step + 1 rows (H - size must
   be a multiple of step, as for H = 64) times cols_b = (lens[b] - size) / step + 1 columns
   (0 when lens[b] < size; lens[b] > W counts as W). Order: image b, then row, then column:
   patch (b, r, c) = x[b, :, r*step : r*step+size, c*step : c*step+size].
   y [P, C, size, size] with P = higan_extract_patches_count(...). The backward scatter-adds
   (overlapping windows add up), parallel over (b, c) planes only. */
HIGAN_DEF int64_t higan_extract_patches_count(const int *lens, int64_t B, int64_t H, int64_t W,
                                              int64_t size, int64_t step);
HIGAN_DEF void higan_extract_patches_forward(float *y, const float *x, const int *lens, int64_t B,
                                             int64_t C, int64_t H, int64_t W, int64_t size,
                                             int64_t step);
HIGAN_DEF void higan_extract_patches_backward(float *dx, const float *dy, const int *lens,
                                              int64_t B, int64_t C, int64_t H, int64_t W,
                                              int64_t size, int64_t step);
/* Tape op (lens copied). HiGAN+: higan_extract_patches(t, imgs, img_lens, 32, 8). Needs at
   least one patch (HIGAN_ASSERT). */
HIGAN_DEF higan_var *higan_extract_patches(higan_tape *t, higan_var *x, const int *lens,
                                           int64_t size, int64_t step);
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
/* Every store of m on backend be (higan_params_to_backend; be NULL: back to the host arrays):
   tapes on be then run the networks in its memory, higan_adam_step / _zero_grad act there,
   and saving (higan_model_save, higan_checkpoint_save) downloads, loading uploads. */
HIGAN_DEF higan_status higan_model_to_backend(higan_model *m, const struct higan_backend *be);

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
/* Generates n words at once: word i (texts[i]) in the style styles + i * style_stride
   (style_stride 0: one style for every word) into outs[i] [input_nc, 16*bottom,
   8*bottom*len_i], caps[i] floats (widths as higan_generate_word returns them).
   batch 0: each word exactly as higan_generate_word makes it (alone, nothing right of it);
     words of the same length share a forward (about 32 characters per forward).
   batch 1: each word as the official Generator renders it in one batch padded to the longest
     word with the pad symbol (label 0): a shorter word's last columns then see its first pad
     character. Computed at each word's own width plus the receptive-field margin, only its
     valid columns (higan_generator_forward); with m->G.eval_full_width set, the official way
     (the whole padded width, about 32 characters per forward), the same numbers.
   Errors as higan_generate_word, naming the word; HIGAN_ERR_ARG for n < 1 or NULL arrays.
   On HIGAN_ERR_NOMEM grow the arena and call again. */
HIGAN_DEF higan_status higan_generate_words(higan_model *m, higan_tape *t, const char *const *texts, int64_t n,
                                            const float *styles, int64_t style_stride, int batch,
                                            float *const *outs, const int64_t *caps);
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
   new line). Each word is made as higan_generate_word makes it (channel 0 of the output; the
   words go through higan_generate_words, batch 0: same-length words share a forward). Errors as
   higan_generate_word (naming the word), HIGAN_ERR_ARG for text without words. On
   HIGAN_ERR_NOMEM from the arena, nothing is kept: grow the arena and call again. */
HIGAN_DEF higan_status higan_generate_text(higan_model *m, higan_tape *t, const char *text, const float *style,
                                           const higan_layout_options *opt, higan_page *page);
/* An image in [-1, 1] (ink bright) to 8-bit pixels. transparent 0: one gray byte per pixel,
   dark ink on white, round((1 - v) * 127.5); transparent 1: two bytes per pixel (gray +
   alpha, as PNG's gray-alpha), black ink whose alpha is the ink, round((v + 1) * 127.5).
   v is clamped to [-1, 1] first. out: n or 2 n bytes. */
HIGAN_DEF void higan_image_to_pixels(const float *x, int64_t n, int transparent, unsigned char *out);
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

/* ==== TRAINING: configuration files, run bookkeeping, exact resume, recognizer and writer-
   identifier pretraining =====================================================================
   Shared by every training driver (examples/train_ocr.c, train_wid.c, train_gan.c). Needs
   model_api.h (higan_model), loader_api.h (higan_loader, higan_batch), dataset_api.h.

   A DRIVER'S LOOP (see examples/train_ocr.c):
       higan_config c;  higan_config_load(&c, "configs/ocr_small.cfg");   // + higan_config_set
       n = higan_config_int(&c, "training.batch_size", 128, 1, 4096);     // getters declare keys
       ...; if (higan_config_finish(&c)) error;                           // unknown keys, bad values
       higan_train_state s; higan_train_state_init(&s);
       s.opt_stores = 1u << HIGAN_STORE_OCR; s.opt[HIGAN_STORE_OCR] = higan_adam_default(lr);
       higan_train_state_add_rng(&s, "train", &rng);                      // every RNG the loop uses
       if (resume) higan_checkpoint_load(path, &m, &s);                   // weights, Adam, RNGs, position
       higan_train_catch_sigint();
       while (s.epoch < epochs && !higan_train_interrupted()) {
           higan_train_loader_open(&L, &ds, &lopt, s.epoch, s.batch);     // same batches as never stopped
           while (higan_loader_next(&L, &b) == HIGAN_OK && !higan_train_interrupted()) {
               step ...; higan_train_check_losses(s.step, n, names, losses);   // NaN/Inf: stop
               s.step++; s.batch++;
               higan_progress_update(...); higan_csv_write(...);
               if (s.step % every == 0) higan_checkpoint_save(path, &m, &s);  // atomic
           }
           higan_loader_free(&L); if (epoch done) { s.epoch++; s.batch = 0; }
       }
       higan_checkpoint_save(path, &m, &s);                               // also after Ctrl-C

   EXACT RESUME. A checkpoint holds every network's tensors (buffers included), Adam m, v and
   step of each store in s.opt_stores, the state of every registered RNG, registered double
   values, and the position (step, epoch, batch within the epoch). Because the loader keeps its
   RNG private, each epoch has its own loader whose seed is derived from (seed, epoch)
   (higan_train_loader_open); a resumed run re-creates the epoch's loader and draws the
   batches already consumed again (fast-forward), so the run continues bit for bit as if it
   had never stopped. Results never depend on the thread count, so a run may resume with
   other HIGAN_THREADS. */

/* ---- configuration files -------------------------------------------------------------------
   A small YAML subset, one setting per line:
       # comment                      (also after a value: "lr: 1e-3   # Adam")
       seed: 123456                   key: value   (or key = value)
       training:                      a section header: indented lines below it get the
         batch_size: 128              dotted key "training.batch_size" (sections may nest)
         lr = 1.0e-3
       model.R.max_dim: 64            dotted keys may also be written out in full
   Values may be quoted ('..' or ".."); "~", "null" and "" mean empty. Lists and multi-line
   values are not supported (an error names the line). Duplicate keys are errors.
   The driver declares the keys it knows by asking for them with the getters (each with a
   default used when the key is absent); higan_config_finish then fails on the first value
   that did not parse or was out of range, else on any key that no getter asked for, with a
   message "file:line: ..." naming the key. */
typedef struct higan_config {
    char name[256];         /* file name used in messages */
    int count, capacity;
    char **keys, **values;
    int *lines;             /* line of each key in the file; 0: set with higan_config_set */
    unsigned char *used;    /* asked for by a getter */
    char **known;           /* every key a getter asked for (for "did you mean") */
    int n_known, known_capacity;
    higan_status status;    /* first getter error (sticky), HIGAN_OK otherwise */
    char error[768];
} higan_config;
HIGAN_DEF void higan_config_init(higan_config *c);
/* Parses a file (appending to c). Syntax errors: HIGAN_ERR_FORMAT "file:line: ...". */
HIGAN_DEF higan_status higan_config_load(higan_config *c, const char *path);
/* The same on text in memory; name is used in messages. */
HIGAN_DEF higan_status higan_config_parse(higan_config *c, const char *text, const char *name);
/* A command-line override "key=value" (or "key: value"): replaces the key's value or adds
   it (an unknown key is still reported by higan_config_finish, as "command line"). */
HIGAN_DEF higan_status higan_config_set(higan_config *c, const char *assignment);
HIGAN_DEF void higan_config_free(higan_config *c);
/* The value of key (NULL if absent); does not mark the key as known. */
HIGAN_DEF const char *higan_config_get(const higan_config *c, const char *key);
/* Typed getters: the key's value, or def when the key is absent or empty. A value that does
   not parse or lies outside [lo, hi] records an error (the first one is kept) and gives def. */
HIGAN_DEF int64_t higan_config_int(higan_config *c, const char *key, int64_t def, int64_t lo, int64_t hi);
HIGAN_DEF double higan_config_real(higan_config *c, const char *key, double def, double lo, double hi);
/* true/false, yes/no, on/off, 1/0 (case-insensitive) */
HIGAN_DEF int higan_config_bool(higan_config *c, const char *key, int def);
/* The value (valid until higan_config_free), or def. */
HIGAN_DEF const char *higan_config_str(higan_config *c, const char *key, const char *def);
/* HIGAN_OK, or the first getter error, or an unknown key (HIGAN_ERR_ARG, file:line named). */
HIGAN_DEF higan_status higan_config_finish(higan_config *c);
/* Reads "model.*" keys for the networks in mc->nets into mc (its current values are the
   defaults): model.G.{ch,style_dim,embed_dim,bottom}, model.D.ch, model.P.ch,
   model.B.{resolution,max_dim,dropout}, model.n_writer, model.R.{resolution,max_dim,dropout,
   rnn_depth}. */
HIGAN_DEF void higan_config_model(higan_config *c, higan_model_config *mc);
/* The whole configuration as "key: value" lines (for checkpoint metadata and logs); returns
   the length (snprintf-like). */
HIGAN_DEF int higan_config_dump(const higan_config *c, char *out, int cap);

/* ---- training state and checkpoints ------------------------------------------------------ */
#define HIGAN_TRAIN_MAX_RNG 8
#define HIGAN_TRAIN_MAX_VALUES 16
#define HIGAN_TRAIN_NAME 48
typedef struct higan_train_state {
    int64_t step;            /* optimizer iterations done */
    int64_t epoch;           /* epoch of the next batch (0-based) */
    int64_t batch;           /* batches of that epoch already consumed */
    higan_adam opt[HIGAN_STORE_COUNT];   /* one optimizer per parameter store */
    unsigned opt_stores;     /* bit s: opt[s] is in use (saved; required when loading) */
    int n_rng;
    char rng_name[HIGAN_TRAIN_MAX_RNG][HIGAN_TRAIN_NAME];
    higan_rng *rng[HIGAN_TRAIN_MAX_RNG];
    int n_value;
    char value_name[HIGAN_TRAIN_MAX_VALUES][HIGAN_TRAIN_NAME];
    double *value[HIGAN_TRAIN_MAX_VALUES];
    const char *config_text; /* saved as metadata "train.config" when not NULL (not loaded) */
} higan_train_state;
HIGAN_DEF void higan_train_state_init(higan_train_state *s);
/* Registers an RNG (kept by pointer) saved and restored by the checkpoint. */
HIGAN_DEF void higan_train_state_add_rng(higan_train_state *s, const char *name, higan_rng *r);
/* Registers a double (kept by pointer) saved exactly and restored (e.g. best CER). */
HIGAN_DEF void higan_train_state_add_value(higan_train_state *s, const char *name, double *v);

/* Writes path atomically (path.tmp, then rename: an interrupted save never damages the last
   checkpoint): the model (higan_model_save's tensors and metadata, Adam state of the stores
   in s->opt_stores) plus "train.*" metadata (step, epoch, batch, values as exact decimal)
   and one I64 [4] tensor "train.rng.<name>" per RNG. Refuses (HIGAN_ERR_ARG, naming the
   tensor) a model with a NaN or Inf parameter or buffer, so a bad state never replaces a good
   checkpoint. The checkpoint is also an ordinary model file for higan_model_load. */
HIGAN_DEF higan_status higan_checkpoint_save(const char *path, const higan_model *m,
                                             const higan_train_state *s);
/* Restores an initialised model (its configuration must agree with the file), the Adam
   state of every store in s->opt_stores (an error if the file lacks one), every registered
   RNG and value (an error naming a missing one) and the position. Hyper-parameters (lr,
   betas) stay as the caller set them. */
HIGAN_DEF higan_status higan_checkpoint_load(const char *path, higan_model *m, higan_train_state *s);
/* HIGAN_OK, or HIGAN_ERR_ARG naming the first tensor of m with a NaN or Inf. */
HIGAN_DEF higan_status higan_model_check_finite(const higan_model *m);

/* The loader of epoch `epoch`, its RNG seeded from (opt->seed, epoch), with the first `skip`
   batches drawn and dropped: the batches a never-interrupted run sees. skip may equal the
   epoch's batch count (a checkpoint taken after its last batch: the next call of
   higan_loader_next then ends the epoch); HIGAN_ERR_ARG when it is larger. */
HIGAN_DEF higan_status higan_train_loader_open(higan_loader *L, const higan_dataset *ds,
                                               const higan_loader_options *opt, int64_t epoch,
                                               int64_t skip);
/* The seed of epoch's loader. */
HIGAN_DEF uint64_t higan_train_epoch_seed(uint64_t seed, int64_t epoch);

/* ---- run bookkeeping ------------------------------------------------------------------- */
/* Wall-clock seconds from an arbitrary origin (monotonic where the platform allows). */
HIGAN_DEF double higan_time_seconds(void);
/* Ctrl-C: the first SIGINT sets a flag the loop polls (it then saves and exits); a second
   one ends the process as usual. */
HIGAN_DEF void higan_train_catch_sigint(void);
HIGAN_DEF int higan_train_interrupted(void);
HIGAN_DEF void higan_train_set_interrupted(int on);     /* tests; also clears */
/* HIGAN_OK when every loss is finite, else HIGAN_ERR_ARG with "step N: loss 'name' is nan
   (or inf)" as the message. */
HIGAN_DEF higan_status higan_train_check_losses(int64_t step, int n, const char *const *names,
                                                const float *values);

/* Progress line on stderr, at most one per interval seconds (and when forced):
     step 1200/5000 epoch 3 | ctc 1.2345 | 85.3 img/s | ETA 0h12m
   The losses shown are averages of the values passed since the previous line; images/s and
   the ETA come from the time since higan_progress_init. */
#define HIGAN_PROGRESS_MAX 16
typedef struct higan_progress {
    double t0, t_last, interval;
    int64_t step0, total_steps, images, images_last;
    double sum[HIGAN_PROGRESS_MAX];
    int count;
} higan_progress;
HIGAN_DEF void higan_progress_init(higan_progress *p, int64_t step, int64_t total_steps, double interval);
/* Adds one step (images processed in it, losses); prints when due or force. Returns 1 when
   a line was printed. */
HIGAN_DEF int higan_progress_update(higan_progress *p, int64_t step, int64_t epoch, int n,
                                    const char *const *names, const float *values,
                                    int64_t images, int force);

/* CSV log: header "step,epoch,<names...>", one flushed row per write. resume_step < 0
   starts a new file; >= 0 keeps the rows of an existing file (same header) with
   step <= resume_step and appends after them (rows written after the checkpoint that is
   resumed are dropped). NaN values are written as empty cells. */
#define HIGAN_CSV_MAX 32
typedef struct higan_csv { void *file; int n; } higan_csv;
HIGAN_DEF higan_status higan_csv_open(higan_csv *c, const char *path, int n, const char *const *names,
                                      int64_t resume_step);
HIGAN_DEF higan_status higan_csv_write(higan_csv *c, int64_t step, int64_t epoch, const double *values);
HIGAN_DEF void higan_csv_close(higan_csv *c);

/* Loss plot of a CSV log into rgb [height][width][3]: one panel per column after step and
   epoch, each value against the step (light: raw, dark: running mean), with its name and
   y range written on it. Needs width >= 160, height >= 60 per panel. The driver writes it
   as PNG (stb_image_write) so that this library stays free of image-file code. */
HIGAN_DEF higan_status higan_plot_csv(const char *csv_path, unsigned char *rgb, int width, int height);
/* Writes text into rgb with the built-in 3x5 font scaled by scale (ASCII; letters shown
   in upper case). */
HIGAN_DEF void higan_plot_text(unsigned char *rgb, int width, int height, int x, int y, const char *text,
                               int scale, const unsigned char color[3]);

/* ---- augmentation for pretraining (lib/transforms.py) ---------------------------------------
   The loader's augment option applies RandomClip and RandomScale together (the GAN's
   pipeline); recognizer pretraining uses RandomScale only and writer-identifier pretraining
   RandomClip only. These run on a batch made without the loader's augmentation (its style
   images) and draw from the given RNG:
     RandomClip (width > 128): width uniform in [128, w), offset uniform in [0, w - width);
     the length given to the network is the width rounded up to 32 (official collate).
     RandomScale: ratio uniform in [-0.4, 0.4), width int(w (1 + ratio)) rounded up to 32
     (at least 32), PIL BILINEAR when ratio > 0 else LANCZOS, on the float image.
   Images are padded with -1 to the widest length. */
typedef struct higan_augmenter {
    float *imgs;        /* [B, 1, 64, width] */
    int *lens;          /* [B] */
    int64_t width;
    int B;
    int64_t cap;        /* floats allocated for imgs */
    int lens_cap;
    float *tmp;         /* one image */
    int64_t tmp_cap;
    higan_arena scratch;
} higan_augmenter;
HIGAN_DEF void higan_augmenter_init(higan_augmenter *a);
HIGAN_DEF higan_status higan_augment_batch(higan_augmenter *a, const higan_batch *b, int random_clip,
                                           int random_scale, higan_rng *rng);
HIGAN_DEF void higan_augmenter_free(higan_augmenter *a);

/* ---- arena growth ------------------------------------------------------------------------ */
/* After a step failed with an arena or tape-table overflow: grows the arena to 1.25 x what
   was needed (and doubles the tape table when it overflowed; a device tape's data arena
   through its backend), resets the tape, returns 1 so the caller retries the step (restoring
   any state the failed attempt changed). Returns 0 when the failure was no overflow or the
   memory cannot be had. */
HIGAN_DEF int higan_train_grow(higan_tape *t);

/* ---- recognizer pretraining (RecognizeModel.train) ---------------------------------------
   One Adam step of m's Recognizer (store HIGAN_STORE_OCR, which must not be frozen) on a
   batch: train-mode forward on imgs [B, 1, 64, W] with widths img_lens, CTC (blank 0, mean,
   zero_infinity) with input lengths img_len / 16, backward, Adam. labels [B, label_stride]
   0-padded. *loss receives the loss. A non-finite loss leaves the weights untouched and
   returns HIGAN_ERR_ARG ("loss 'ctc' is nan"). Arena overflows are handled (grown, retried
   with the batch-norm buffers and rng restored). */
HIGAN_DEF higan_status higan_ocr_train_step(higan_model *m, higan_tape *t, const float *imgs, int B,
                                            int64_t W, const int *img_lens, const int *labels,
                                            int64_t label_stride, const int *label_lens,
                                            higan_adam *opt, higan_rng *rng, float *loss);
/* Greedy-decoding CER/WER of m's Recognizer (eval mode) on the style images (32 px per
   character) of ds, in batches: all words when max_words <= 0, else max_words words evenly
   spread over ds (every count/max_words-th: a quick estimate that sees every writer).
   on_word (may be NULL) sees every prediction with its record index in ds. */
typedef void (*higan_word_callback)(void *user, int64_t record, const char *pred, const char *ref);
HIGAN_DEF higan_status higan_ocr_evaluate(higan_model *m, higan_tape *t, const higan_dataset *ds,
                                          int batch_size, int64_t max_words, higan_text_score *out,
                                          higan_word_callback on_word, void *user);

/* ---- writer-identifier pretraining (WriterIdentifyModel.train) ----------------------------
   Copies the Recognizer's CNN (Recognizer.cnn_backbone.*, Recognizer.cnn_ctc.*, buffers
   included) of src into dst's StyleBackbone (StyleBackbone.*): both configurations must
   have the same resolution, max_dim and in_channel. */
HIGAN_DEF higan_status higan_backbone_from_recognizer(higan_model *dst, const higan_model *src);
/* One Adam step of StyleBackbone + WriterIdentifier together (stores HIGAN_STORE_BACKBONE and
   HIGAN_STORE_WID, not frozen; opt_b and opt_w hold the same hyper-parameters, as the
   official single optimizer over both): cross-entropy of W(B(imgs), img_lens) against wids.
   *loss gets the loss, *correct (may be NULL) the arg-max hits. */
HIGAN_DEF higan_status higan_wid_train_step(higan_model *m, higan_tape *t, const float *imgs, int B,
                                            int64_t W, const int *img_lens, const int *wids,
                                            higan_adam *opt_b, higan_adam *opt_w, higan_rng *rng,
                                            float *loss, int *correct);
/* Writer-identification accuracy (eval mode) on the style images (32 px per character) of
   ds: writer ids are taken relative to wid_offset (the training set's smallest id) and words
   of writers outside the identifier's classes are skipped (held-out writers); max_words > 0
   takes an evenly spread subset as higan_ocr_evaluate does. The official validation reads the stored
   images (its validation set is the training split); style images are what the GAN's
   writer loss sees. */
HIGAN_DEF higan_status higan_wid_evaluate(higan_model *m, higan_tape *t, const higan_dataset *ds,
                                          int wid_offset, int batch_size, int64_t max_words,
                                          int64_t *correct, int64_t *total);
/* ==== GAN TRAINING: HiGAN+'s GlobalLocalAdversarialModel.train as library calls ==============
   (networks/model.py of ganji15/HiGANplus; spec section 5.) Needs model_api.h (the seven
   networks), loader_api.h (higan_batch, higan_lexicon) and the ops and losses.

       higan_gan_trainer tr;
       higan_gan_options o = higan_gan_default_options();
       higan_model_config mc = higan_model_default_config(HIGAN_NETS_ALL);
       higan_gan_trainer_init(&tr, &mc, &o, &lexicon, 123456);
       higan_model_load(&tr.model, "ocr.safetensors", HIGAN_NET_BIT(HIGAN_NET_RECOGNIZER), NULL);
       higan_model_load(&tr.model, "wid.safetensors", HIGAN_NET_BIT(HIGAN_NET_STYLE_BACKBONE) |
                        HIGAN_NET_BIT(HIGAN_NET_WRITER_IDENTIFIER), NULL);
       higan_gan_set_epoch(&tr, epoch);                     // LR decay, once per epoch
       while (higan_loader_next(&loader, &batch) == HIGAN_OK) {
           higan_gan_losses l;
           if (higan_gan_iteration(&tr, &tape, &batch, &l) != HIGAN_OK) break;  // D (+ G) step
       }
       higan_gan_trainer_free(&tr);

   ONE ITERATION (as the official loop body):
   D step, every iteration. Under no_grad: words drawn from the lexicon (as idx_to_words:
   cropped to the batch's label width, sorted by length), z ~ N(0, I), enc_z = E(B(real))
   (VAE: mu + exp(logvar / 2) eps); fake = G(z, words), style = G(enc_z, words),
   recn = G(enc_z, real labels); cat = [fake; style; recn] with lengths 32 * characters.
     loss = mean relu(1 + D(cat)) + mean relu(1 + P(patches(cat)))
          + (mean relu(1 - D(real)) + mean relu(1 - D(aug))) / 2
          + mean relu(1 - P([patches(real); patches(aug)]))
   (patches: every 32 x 32 window at stride 8 inside each image's width), backward, Adam on
   D + P.
   G step, when iter % num_critic_train == 0 (before iter is counted), with fresh words, z and
   VAE noise; D and P are frozen (their store's frozen flag: no parameter gradients, the
   gradient still reaches the images):
     adv       = -mean D(cat),  adv_patch = -mean P(patches(cat))
     ctc       = CTC(R(fake)) + CTC(R(recn)) + CTC(R(style)) (input lengths 2 per character,
                 blank 0, mean over target lengths, zero_infinity), R frozen
     info      = mean |E(B(fake)) - z| (E's mu)
     recn      = masked L1(recn, real, real widths)
     wid       = CE(W(B([style; recn])), [wids; wids]),  W and B frozen
     ctx       = sum over B's feat2, feat3, feat4 of CX(real, style) + CX(real, recn): the real
                 features from E's backbone pass, the fake ones from W's
     kl        = KL(mu, logvar) of E's VAE pass (0 without vae_mode)
     gp_x      = std(d adv / d cat) / (std(d L_x / d t_x) + 1e-8) + 1, detached, unbiased std,
                 with t_x: R's log-probs of fake for the CTC of fake only, the fake images for
                 info, W's logits for wid, enc_z for recn; gp_ctc <= 100, gp_wid <= 10
     total     = adv + adv_patch + gp_ctc ctc + gp_info info + gp_wid wid + gp_recn recn
                 + lambda_ctx ctx + lambda_kl kl
   backward, Adam on G + E.
   Every network runs in train mode, as upstream's set_mode('train'): G's batch norms use
   batch statistics and update their stored statistics (also in the D step's no_grad
   passes), every spectral norm advances u0 on every forward (D and P also in the G step).
   The frozen R and B also normalise with batch statistics and update their running
   statistics: that is the official behaviour (options.frozen_bn 0); frozen_bn 1 runs them in
   eval mode (stored statistics, untouched), as upstream's unused frozen_bn() would.

   ON A DEVICE. higan_gan_trainer_set_backend(tr, be) moves the model's stores to be; the steps
   then take a tape on be and run the same code: batches are uploaded, losses read back, the
   balancing stds and the NaN check of the gradients are device reductions (scalars come
   back), snapshots are device copies. higan_ocr_train_step / higan_wid_train_step (and the
   evaluations) likewise take a model moved with higan_model_to_backend and a tape on that
   backend; a model and tape on different backends is HIGAN_ERR_ARG.

   RANDOMNESS. All draws come from tr->rng, per step in this order: the words
   (higan_lexicon_sample with max_len = the batch's label width), z (B * style_dim normals),
   the VAE noise (B * style_dim normals, when vae_mode). Tests can inject them instead
   (tr->inject_d, tr->inject_g; nothing is drawn then).

   MEMORY. The steps reset the tape (and its arena) first. When the arena or the tape table
   overflows, a step restores what the failed attempt changed (batch-norm and spectral-norm
   buffers, G's renormalised embedding, the RNG), grows the arena (and table) and runs again,
   up to options.arena_max bytes (0: no limit); so a tape made with a small arena works. */

typedef struct higan_gan_options {
    double lr;                  /* 2e-4 (both optimizers) */
    double beta1, beta2;        /* 0.5, 0.999 (eps 1e-8, no weight decay) */
    int num_critic_train;       /* 4: a G step when iter % 4 == 0 */
    int vae_mode;               /* 1 */
    float lambda_ctx;           /* 2.0 */
    float lambda_kl;            /* 1e-4 */
    float gp_ctc_max;           /* 100 */
    float gp_wid_max;           /* 10 */
    int frozen_bn;              /* 0: official (R, B in train mode); 1: R, B batch norms in eval */
    int start_decay_epoch;      /* 25 \  LR factor of 0-based epoch e: 1 - min(max(0, (e - 25) / */
    int n_epochs_decay;         /* 46 /  (46 + 1)), 0.999), upstream's LambdaLR per epoch     */
    size_t arena_max;           /* growth limit in bytes; 0: none */
} higan_gan_options;
/* The official values (configs/gan_iam.yml). */
HIGAN_DEF higan_gan_options higan_gan_default_options(void);

/* The random inputs of one step (tests inject them). L is the batch's label width. */
typedef struct higan_gan_draws {
    const int *labels;          /* [B, L] fake words, 0-padded, lengths descending */
    const int *lens;            /* [B] characters, 1..L */
    const float *z;             /* [B, style_dim] */
    const float *eps;           /* [B, style_dim] VAE noise (unused without vae_mode) */
} higan_gan_draws;

/* Losses of an iteration, by index; the names are upstream's meters. */
enum {
    HIGAN_GAN_REAL_DISC = 0,    /* "real_disc_loss"       (D step) */
    HIGAN_GAN_FAKE_DISC,        /* "fake_disc_loss" */
    HIGAN_GAN_REAL_DISC_PATCH,  /* "real_disc_loss_patch" */
    HIGAN_GAN_FAKE_DISC_PATCH,  /* "fake_disc_loss_patch" */
    HIGAN_GAN_DISC,             /* "disc_loss"            the D step's total */
    HIGAN_GAN_ADV,              /* "adv_loss"             (G step) */
    HIGAN_GAN_ADV_PATCH,        /* "adv_loss_patch" */
    HIGAN_GAN_CTC,              /* "fake_ctc_loss"        rand + recn + style */
    HIGAN_GAN_CTC_RAND,         /* "fake_ctc_loss_rand" */
    HIGAN_GAN_CTC_STYLE,        /* "fake_ctc_loss_style" */
    HIGAN_GAN_CTC_RECN,         /* "fake_ctc_loss_recn" */
    HIGAN_GAN_INFO,             /* "info_loss" */
    HIGAN_GAN_RECN,             /* "recn_loss" */
    HIGAN_GAN_WID,              /* "fake_wid_loss" */
    HIGAN_GAN_CTX,              /* "ctx_loss" */
    HIGAN_GAN_KL,               /* "kl_loss" */
    HIGAN_GAN_GP_CTC,           /* "gp_ctc" */
    HIGAN_GAN_GP_INFO,          /* "gp_info" */
    HIGAN_GAN_GP_WID,           /* "gp_wid" */
    HIGAN_GAN_GP_RECN,          /* "gp_recn" */
    HIGAN_GAN_G,                /* "g_loss"               the G step's total */
    HIGAN_GAN_N_LOSSES
};
typedef struct higan_gan_losses {
    float v[HIGAN_GAN_N_LOSSES];    /* G-step entries are NaN when no G step ran */
    int g_step;                     /* 1: this iteration ran a G step */
    double std_adv, std_ctc, std_info, std_wid, std_recn;   /* the balancing stds (G step) */
} higan_gan_losses;
HIGAN_DEF const char *higan_gan_loss_name(int i);   /* NULL when out of range */

typedef struct higan_gan_trainer {
    higan_model model;          /* all seven networks (R, B, W frozen); do not move tr */
    higan_adam opt_g, opt_d;    /* G + E (store HIGAN_STORE_GE), D + P (HIGAN_STORE_DP) */
    higan_gan_options opt;
    const higan_lexicon *lexicon;   /* random words (kept by pointer) */
    higan_rng rng;              /* every random draw of the steps */
    int64_t iter;               /* iterations done: upstream's iter_count */
    int64_t epoch;              /* epoch whose LR factor is in use (-1: none set yet) */
    const higan_gan_draws *inject_d, *inject_g;   /* NULL, or the draws of the next step */
    void *priv;                 /* snapshot for retries */
} higan_gan_trainer;

/* Builds the model (cfg NULL: the official configuration; every network is required) with
   higan_model_init(seed), the two Adams (lr, betas of opt; opt NULL: the defaults) and the
   RNG (seeded with seed ^ a constant, so it differs from the networks' init streams). Load
   pretrained R and W + B afterwards with higan_model_load on tr->model. lex may be NULL when
   every step gets injected draws. HIGAN_ERR_ARG, HIGAN_ERR_NOMEM. */
HIGAN_DEF higan_status higan_gan_trainer_init(higan_gan_trainer *tr, const higan_model_config *cfg,
                                              const higan_gan_options *opt, const higan_lexicon *lex,
                                              uint64_t seed);
HIGAN_DEF void higan_gan_trainer_free(higan_gan_trainer *tr);   /* safe on a zeroed trainer */
/* Moves the trainer (its model's stores: higan_model_to_backend, and its snapshot room) to
   backend be (NULL: back to the host); the steps then take a tape on be (higan_tape_set_backend
   with a data arena from higan_backend_arena_init): the same calls, results within rounding
   of the CPU's. Load pretrained networks before or after (loads upload). */
HIGAN_DEF higan_status higan_gan_trainer_set_backend(higan_gan_trainer *tr, const struct higan_backend *be);
/* Sets both learning rates to lr * the linear-decay factor of the 0-based epoch: call it at the
   start of every epoch (upstream steps its LambdaLR after each epoch, so epoch e trains with
   the factor of e). Until it is called the factor of epoch 0 (1) is used. */
HIGAN_DEF void higan_gan_set_epoch(higan_gan_trainer *tr, int64_t epoch);

/* The D step and the G step on a batch of the official loader (process_style and augment on:
   imgs 32 px per character, width 32 * label_width; aug_imgs). Results in *out (may be NULL;
   a step fills its own entries). Neither step changes tr->iter. A non-finite loss or
   parameter gradient skips the Adam update and returns HIGAN_GAN_NONFINITE with "loss 'name'
   is nan" (or "the gradient of 'tensor' is inf") as the message; the buffers have moved on,
   as the forward pass did. Other errors: HIGAN_ERR_ARG (a batch
   that does not fit, no lexicon), HIGAN_ERR_NOMEM (arena limit, malloc). */
#define HIGAN_GAN_NONFINITE 2
HIGAN_DEF higan_status higan_gan_d_step(higan_gan_trainer *tr, higan_tape *t, const higan_batch *b,
                                        higan_gan_losses *out);
HIGAN_DEF higan_status higan_gan_g_step(higan_gan_trainer *tr, higan_tape *t, const higan_batch *b,
                                        higan_gan_losses *out);
/* One iteration: the D step, the G step when tr->iter % num_critic_train == 0, then
   ++tr->iter. out->g_step tells whether G ran (the G entries of out are NaN otherwise). On an
   error tr->iter is not advanced (but a finished D step stays applied). */
HIGAN_DEF higan_status higan_gan_iteration(higan_gan_trainer *tr, higan_tape *t, const higan_batch *b,
                                           higan_gan_losses *out);

/* ==== BACKENDS: where a tape's kernels run (CPU, or a device such as higan_cuda.cuh's) =====
   A tape calls its ops' raw kernels through a function table, t->be. higan_tape_init selects
   higan_cpu_backend(), whose entries are the CPU kernels above (results bit for bit those of
   calling them directly). A device backend (higan_cuda_backend in higan_cuda.cuh) fills the
   same table with its kernels; then the tape's float buffers live in device memory:
       higan_backend be; higan_cuda ctx; higan_cuda_params dp; higan_arena host, dev;
       higan_cuda_init(&ctx, 0); higan_cuda_backend(&be, &ctx);
       higan_arena_init(&host, 1 << 20);                         // variables, contexts
       higan_backend_arena_init(&dev, &be, 512 << 20);           // values, gradients, scratch
       higan_tape_init(&T, &host, 1024); higan_tape_set_backend(&T, &be, &dev);
       higan_cuda_params_init(&ctx, &dp, m.G.p); higan_cuda_params_upload(&ctx, &dp, m.G.p, HIGAN_CUDA_ALL);
       higan_cuda_params_attach(&dp, m.G.p);                     // parameter vars on the device
       higan_generate_words(&m, &T, ...);                        // as on the CPU
   Every entry takes the backend's ctx first, then the CPU kernel's arguments in its order;
   float and int arrays are in the backend's memory (arrays OF pointers, shape structs and
   scalars on the host). Device errors are sticky in the backend and reported by sync (a
   kernel's fault surfaces at the next sync at the latest); higan_tape_sync calls it.
   Status (issue 6, step by step): the ops of the Generator (everything higan_generator_forward
   runs, in eval and train mode, higan_generate_word(s), higan_generate_text) and mul,
   sum_all, mean_all dispatch through the table, forward and backward (the tape's backward
   seeds and zeroes gradients through it; parameter gradients go to the device mirror). The
   trainers' own work does too: parameter stores on a backend (higan_params_to_backend,
   higan_model_to_backend), Adam and zero_grad on the mirror, the GAN trainer's reductions
   (adam_step, moments, find_nonfinite below); the training calls take a device tape
   (higan_gan_trainer_set_backend for the GAN). The other ops (discriminators, style and
   recognition networks, losses, LSTM, CTC, pools, dropout, ...) still call the CPU kernels
   directly: on a device tape they are programmer errors (they would read device memory on
   the host), not yet caught. */
typedef struct higan_backend {
    const char *name;     /* "cpu", "cuda" */
    int device;           /* 0: buffers are host memory; 1: device memory (host code must copy) */
    void *ctx;            /* first argument of every entry */
    /* memory: alloc/free_memory for setup (arenas); the rest are queued in order */
    void *(*alloc)(void *ctx, size_t bytes);                   /* NULL on failure (message set) */
    void (*free_memory)(void *ctx, void *p);
    void (*zero)(void *ctx, void *dst, size_t bytes);
    void (*copy)(void *ctx, void *dst, const void *src, size_t bytes);         /* within */
    void (*upload)(void *ctx, void *dst, const void *src, size_t bytes);       /* host -> */
    void (*download)(void *ctx, void *dst, const void *src, size_t bytes);     /* -> host, synchronous */
    void (*fill)(void *ctx, float *dst, float value, int64_t n);
    /* rows floats x rows: dst[r * dst_stride + i] = src[r * src_stride + i], i < cols */
    void (*copy_rows)(void *ctx, float *dst, int64_t dst_stride, const float *src, int64_t src_stride,
                      int64_t cols, int64_t rows);
    higan_status (*sync)(void *ctx);   /* waits for queued work; first error since the last sync */
    /* kernels (the CPU names without higan_; see each CPU kernel for the contract) */
    void (*linear_forward)(void *ctx, float *y, const float *x, const float *w, const float *b,
                           int64_t N, int64_t IN, int64_t OUT);
    void (*conv2d_forward)(void *ctx, float *y, const float *x, const float *w, const float *b,
                           const higan_conv2d_shape *s, higan_arena *scratch);   /* scratch: t->data */
    /* sigma: one float in the backend's memory */
    void (*spectral_norm_forward)(void *ctx, float *y, float *u, float *v, float *sigma, const float *w,
                                  const float *u0, int64_t out, int64_t in, float eps);
    void (*batch_norm2d_forward)(void *ctx, float *y, float *mean, float *rstd, const float *x,
                                 const float *weight, const float *bias, float *running_mean,
                                 float *running_var, float momentum, float eps, int batch_stats,
                                 int64_t N, int64_t C, int64_t HW);
    void (*cond_batch_norm_forward)(void *ctx, float *y, float *mean, float *rstd, const float *x,
                                    const float *gain, const float *bias, float *running_mean,
                                    float *running_var, float momentum, float eps, int batch_stats,
                                    int64_t N, int64_t C, int64_t HW);
    void (*embedding_renorm)(void *ctx, float *weight, const int *idx, int64_t n_idx, int64_t num,
                             int64_t D, float max_norm);
    void (*embedding_forward)(void *ctx, float *y, const float *weight, const int *idx, int64_t n_idx,
                              int64_t num, int64_t D);
    void (*upsample_nearest_forward)(void *ctx, float *y, const float *x, int64_t N, int64_t C, int64_t H,
                                     int64_t W, int sh, int sw);
    void (*relu_forward)(void *ctx, float *y, const float *x, int64_t n);
    void (*tanh_forward)(void *ctx, float *y, const float *x, int64_t n);
    void (*add_forward)(void *ctx, float *y, const float *a, const float *b, int64_t n);
    void (*concat_forward)(void *ctx, float *y, const float *const *xs, const int64_t *sizes, int n,
                           int64_t outer, int64_t inner);     /* xs, sizes: host arrays */
    void (*slice_forward)(void *ctx, float *y, const float *x, int64_t outer, int64_t size, int64_t inner,
                          int64_t start, int64_t len);
    void (*permute_forward)(void *ctx, float *y, const float *x, int ndim, const int64_t *shape,
                            const int *perm);                /* shape, perm: host arrays */
    /* y [N,C,H,W] = x where w < lens[n], else value (the Generator's eval mask) */
    void (*mask_width_forward)(void *ctx, float *y, const float *x, const int *lens, float value,
                               int64_t N, int64_t C, int64_t H, int64_t W);
    void (*mul_forward)(void *ctx, float *y, const float *a, const float *b, int64_t n);
    void (*sum_all_forward)(void *ctx, float *y, const float *x, int64_t n);    /* y: one float */
    void (*mean_all_forward)(void *ctx, float *y, const float *x, int64_t n);
    /* backward kernels of the same ops (accumulate, NULL gradient: skipped) */
    void (*linear_backward)(void *ctx, float *dx, float *dw, float *db, const float *dy, const float *x,
                            const float *w, int64_t N, int64_t IN, int64_t OUT);
    void (*conv2d_backward)(void *ctx, float *dx, float *dw, float *db, const float *dy, const float *x,
                            const float *w, const higan_conv2d_shape *s, higan_arena *scratch);
    void (*spectral_norm_backward)(void *ctx, float *dw, const float *dy, const float *w, const float *u,
                                   const float *v, const float *sigma, int64_t out, int64_t in);
    void (*batch_norm2d_backward)(void *ctx, float *dx, float *dweight, float *dbias, const float *dy,
                                  const float *x, const float *mean, const float *rstd, const float *weight,
                                  int batch_stats, int64_t N, int64_t C, int64_t HW);
    void (*cond_batch_norm_backward)(void *ctx, float *dx, float *dgain, float *dbias, const float *dy,
                                     const float *x, const float *mean, const float *rstd, const float *gain,
                                     int batch_stats, int64_t N, int64_t C, int64_t HW);
    /* num: rows of dweight (the CPU kernel does not need it) */
    void (*embedding_backward)(void *ctx, float *dweight, const float *dy, const int *idx, int64_t n_idx,
                               int64_t num, int64_t D, int padding_idx);
    void (*upsample_nearest_backward)(void *ctx, float *dx, const float *dy, int64_t N, int64_t C, int64_t H,
                                      int64_t W, int sh, int sw);
    void (*relu_backward)(void *ctx, float *dx, const float *dy, const float *x, int64_t n);
    void (*tanh_backward)(void *ctx, float *dx, const float *dy, const float *y, int64_t n);
    void (*add_backward)(void *ctx, float *da, float *db, const float *dy, int64_t n);
    void (*mul_backward)(void *ctx, float *da, float *db, const float *dy, const float *a, const float *b,
                         int64_t n);
    void (*concat_backward)(void *ctx, float *const *dxs, const float *dy, const int64_t *sizes, int n,
                            int64_t outer, int64_t inner);    /* dxs, sizes: host arrays */
    void (*slice_backward)(void *ctx, float *dx, const float *dy, int64_t outer, int64_t size, int64_t inner,
                           int64_t start, int64_t len);
    void (*permute_backward)(void *ctx, float *dx, const float *dy, int ndim, const int64_t *shape,
                             const int *perm);
    void (*mask_width_backward)(void *ctx, float *dx, const float *dy, const int *lens, int64_t N, int64_t C,
                                int64_t H, int64_t W);
    void (*sum_all_backward)(void *ctx, float *dx, const float *dy, int64_t n);
    void (*mean_all_backward)(void *ctx, float *dx, const float *dy, int64_t n);
    /* ---- parameter stores and trainers (issue 6 steps 4-6: mirror, optimizer, trainers) ---- */
    /* Adam's update of n values (higan_adam_update computes the scalars on the host):
       m = b1 m + omb1 g; v = b2 v + (omb2 g) g; w -= step_size (m / (sqrt(v) / bc2_sqrt + eps)) */
    void (*adam_step)(void *ctx, float *w, const float *g, float *m, float *v, int64_t n, float b1, float b2,
                      float omb1, float omb2, float step_size, float bc2_sqrt, float eps);
    /* Synchronous reductions with host results (only scalars come back):
       out[0] = mean of x, out[1] = sum of (x - mean)^2, both in double (torch.std's passes) */
    void (*moments)(void *ctx, double *out, const float *x, int64_t n);
    /* *first = index of the first NaN or Inf of x (-1: all finite) */
    void (*find_nonfinite)(void *ctx, int64_t *first, const float *x, int64_t n);
} higan_backend;
/* The CPU kernels (the default of every tape). */
HIGAN_DEF const higan_backend *higan_cpu_backend(void);
/* be NULL: the CPU. A device backend needs data, an arena made by higan_backend_arena_init
   with the same backend (the CPU ignores data: its buffers stay in t->arena). */
HIGAN_DEF void higan_tape_set_backend(higan_tape *t, const higan_backend *be, higan_arena *data);
/* An arena whose memory comes from be->alloc (device memory for a device backend: only the
   bookkeeping calls alloc / mark / release / reset / status may be used on it, and it is
   freed with higan_backend_arena_free, never higan_arena_free). */
HIGAN_DEF higan_status higan_backend_arena_init(higan_arena *a, const higan_backend *be, size_t capacity);
HIGAN_DEF void higan_backend_arena_free(higan_arena *a, const higan_backend *be);
/* Waits for the tape's queued device work: the first device error, else arena overflow. */
HIGAN_DEF higan_status higan_tape_sync(higan_tape *t);
/* A new variable holding a copy of host data (uploaded on a device tape). NULL on overflow. */
HIGAN_DEF higan_var *higan_var_upload(higan_tape *t, const float *host, int ndim, const int64_t *shape);
/* Copies n values of v into host memory (a download on a device tape: synchronous). */
HIGAN_DEF void higan_var_read(higan_tape *t, const higan_var *v, float *host, int64_t n);

#endif /* HIGAN_H */

/* ======================================================================== */
/*                             IMPLEMENTATION                               */
/* ======================================================================== */
#ifdef HIGAN_IMPLEMENTATION
#ifndef HIGAN__IMPLEMENTED
#define HIGAN__IMPLEMENTED
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
#  define HIGAN__NO_TLS 1
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
HIGAN_DEF higan_status higan_set_error(higan_status status, const char *fmt, ...) {
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
#if defined(HIGAN__X86_SIMD) && !defined(HIGAN_NO_AVX512)
#  define HIGAN__BF16_KERNELS 1
#  if defined(__linux__) && !defined(HIGAN_NO_AMX)
#    define HIGAN__AMX 1
#  endif
#endif
#ifdef HIGAN__AMX
/* AMX tile data needs the kernel's permission per process (Linux 5.16+): arch_prctl(
   ARCH_REQ_XCOMP_PERM = 0x1023, XFEATURE_XTILEDATA = 18), made as a raw syscall (SYS_arch_prctl
   = 158 on x86-64) so that no feature-test macro is needed; then XCR0 bits 17-18 (XTILECFG,
   XTILEDATA) must be on. This machine (Zen 4) has no AMX: never run here. */
static int higan__amx_permitted(void) {
    long ret;
    unsigned lo, hi;
    __asm__ __volatile__("syscall" : "=a"(ret) : "a"(158L), "D"(0x1023L), "S"(18L) : "rcx", "r11", "memory");
    if (ret != 0) return 0;
    __asm__ __volatile__("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    (void)hi;
    return (lo & (3u << 17)) == (3u << 17);
}
#endif
static int higan__cpu_best = -1;
HIGAN_DEF higan_cpu higan_cpu_detect(void) {
    if (higan__cpu_best >= 0) return (higan_cpu)higan__cpu_best;
    higan__cpu_best = HIGAN_CPU_SCALAR;
#ifdef HIGAN__X86_SIMD
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) {
        higan__cpu_best = HIGAN_CPU_AVX2;
#  ifndef HIGAN_NO_AVX512
        if (__builtin_cpu_supports("avx512f")) {
            higan__cpu_best = HIGAN_CPU_AVX512;
            if (__builtin_cpu_supports("avx512bf16") && __builtin_cpu_supports("avx512bw") &&
                __builtin_cpu_supports("avx512vl")) {
                higan__cpu_best = HIGAN_CPU_AVX512BF16;
#    ifdef HIGAN__AMX
                if (__builtin_cpu_supports("amx-tile") && __builtin_cpu_supports("amx-bf16") &&
                    higan__amx_permitted())
                    higan__cpu_best = HIGAN_CPU_AMX;
#    endif
            }
        }
#  endif
    }
#endif
    return (higan_cpu)higan__cpu_best;
}
static int higan__cpu_level = -1;
HIGAN_DEF const char *higan_cpu_level_name(higan_cpu level) {
    switch (level) {
    case HIGAN_CPU_SCALAR: return "scalar";
    case HIGAN_CPU_AVX2: return "avx2";
    case HIGAN_CPU_AVX512: return "avx512";
    case HIGAN_CPU_AVX512BF16: return "avx512bf16";
    case HIGAN_CPU_AMX: return "amx";
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
            else if (!strcmp(env, "avx512bf16")) want = HIGAN_CPU_AVX512BF16;
            else if (!strcmp(env, "amx")) want = HIGAN_CPU_AMX;
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

/* ---- GEMM precision ---------------------------------------------------------------------- */
static int higan__precision = -1;
HIGAN_DEF void higan_set_precision(higan_precision p) {
    HIGAN_ASSERT(p == HIGAN_PRECISION_FP32 || p == HIGAN_PRECISION_BF16);
    higan__precision = (int)p;
}
HIGAN_DEF higan_precision higan_get_precision(void) {
    if (higan__precision < 0) {
        const char *env = getenv("HIGAN_PRECISION");
        higan__precision = HIGAN_PRECISION_FP32;
        if (env && *env) {
            if (!strcmp(env, "bf16")) higan__precision = HIGAN_PRECISION_BF16;
            else if (strcmp(env, "fp32")) fprintf(stderr, "higan: ignoring unknown HIGAN_PRECISION=%s\n", env);
        }
    }
    return (higan_precision)higan__precision;
}
/* fp32 -> bf16 bits, round to nearest even; inputs below FLT_MIN in magnitude become a signed
   zero and NaNs stay (quiet) NaNs, as vcvtne2ps2bf16 does. */
static uint16_t higan__bf16_bits(float x) {
    uint32_t u;
    memcpy(&u, &x, sizeof u);
    if ((u & 0x7f800000u) == 0) return (uint16_t)((u >> 16) & 0x8000u);           /* zero, denormal */
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x0040u);  /* NaN */
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}
static float higan__bf16_float(uint16_t b) {
    const uint32_t u = (uint32_t)b << 16;
    float x;
    memcpy(&x, &u, sizeof x);
    return x;
}
HIGAN_DEF float higan_bf16_round(float x) { return higan__bf16_float(higan__bf16_bits(x)); }

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
/* >0 on a thread that runs whole forwards of its own next to others (the word-parallel
   generation, higan__gen_jobs): its ops then run on it alone. Thread-local; where the compiler
   has no thread-local storage the word-parallel path is off and this stays 0. */
#ifdef _OPENMP
static HIGAN__TLS int higan__worker;
#  define higan__threads() (higan__worker ? 1 : higan_get_num_threads())
#endif
/* Put before a `for` whose iterations write disjoint outputs. Static schedule, so each
   output is computed by one thread in one order: results never depend on the thread count. */
#ifdef _OPENMP
#  define HIGAN__PARALLEL_FOR _Pragma("omp parallel for schedule(static) num_threads(higan__threads())")
#  define HIGAN__PRAGMA(x) _Pragma(#x)
#  define HIGAN__PARALLEL_FOR_IF(cond) HIGAN__PRAGMA(omp parallel for schedule(static) num_threads(higan__threads()) if(cond))
/* A parallel region (if cond) whose loops share out their iterations with HIGAN__FOR_NOWAIT:
   static schedule, no barrier at the end. Loops of equal iteration counts in one region give
   each thread the same iterations, so a thread may go on to the next loop at once when it only
   reads what it wrote itself. Variables declared outside are shared: loop counters of the
   region's outer loops must be declared inside it (or be the region's loop). */
#  define HIGAN__PARALLEL_IF(cond) HIGAN__PRAGMA(omp parallel num_threads(higan__threads()) if(cond))
#  define HIGAN__FOR_NOWAIT _Pragma("omp for schedule(static) nowait")
#else
#  define HIGAN__PARALLEL_FOR
#  define HIGAN__PARALLEL_FOR_IF(cond)
#  define HIGAN__PARALLEL_IF(cond)
#  define HIGAN__FOR_NOWAIT
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
HIGAN_DEF void higan_arena_reset(higan_arena *a) {
    a->used = 0; a->needed = 0; a->overflow = 0;
    a->recycled = NULL; a->recycled_bytes = 0;
}
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

/* Recycled blocks: a singly linked list in address order, the header stored in the block
   itself (every block is a multiple of 64 bytes). Neighbours merge when handed back. */
typedef struct higan__free_block { size_t size; struct higan__free_block *next; } higan__free_block;
/* Drop the recycled memory at or above offset `top` (it is part of the top again). */
static void higan__arena_trim_recycled(higan_arena *a, size_t top) {
    unsigned char *limit = higan__arena_start(a) + top;
    higan__free_block **link = (higan__free_block **)&a->recycled;
    while (*link) {
        higan__free_block *b = *link;
        unsigned char *lo = (unsigned char *)b;
        if (lo >= limit) {                       /* the rest of the list lies above too */
            while (*link) { a->recycled_bytes -= (*link)->size; *link = (*link)->next; }
            return;
        }
        if (lo + b->size > limit) {              /* straddles: keep the part below */
            a->recycled_bytes -= (size_t)(lo + b->size - limit);
            b->size = (size_t)(limit - lo);
        }
        link = &b->next;
    }
}
HIGAN_DEF void higan_arena_release(higan_arena *a, size_t mark) {
    HIGAN_ASSERT(mark <= a->used || a->overflow);
    if (!a->overflow) {
        a->used = mark;
        if (a->recycled) higan__arena_trim_recycled(a, mark);
    }
}
HIGAN_DEF void higan_arena_recycle(higan_arena *a, void *p, size_t bytes) {
    unsigned char *lo = (unsigned char *)p, *start;
    size_t n = higan__round_up(bytes ? bytes : 1);
    higan__free_block **link = (higan__free_block **)&a->recycled, *prev = NULL, *b;
    if (!p || a->overflow) return;
    start = higan__arena_start(a);
    HIGAN_ASSERT(lo >= start && lo + n <= start + a->used && ((size_t)(lo - start) & (HIGAN__ALIGN - 1)) == 0);
    while (*link && (unsigned char *)*link < lo) { prev = *link; link = &prev->next; }
    HIGAN_ASSERT(!*link || lo + n <= (unsigned char *)*link);          /* not handed back twice */
    HIGAN_ASSERT(!prev || (unsigned char *)prev + prev->size <= lo);
    a->recycled_bytes += n;
    if (prev && (unsigned char *)prev + prev->size == lo) {            /* merge with the block below */
        prev->size += n;
        b = prev;
    } else {
        b = (higan__free_block *)p;
        b->size = n;
        b->next = *link;
        *link = b;
    }
    if (b->next && (unsigned char *)b + b->size == (unsigned char *)b->next) {   /* and above */
        b->size += b->next->size;
        b->next = b->next->next;
    }
}
/* Hand back every byte of [from, to) (offsets, 64-aligned), parts of which may already be
   recycled: those blocks are taken out first, what they held outside the range goes back. */
static void higan__arena_recycle_range(higan_arena *a, size_t from, size_t to) {
    unsigned char *lo = higan__arena_start(a) + from, *hi = higan__arena_start(a) + to;
    unsigned char *keep_lo = NULL, *keep_hi = NULL;
    size_t n_lo = 0, n_hi = 0;
    higan__free_block **link = (higan__free_block **)&a->recycled;
    HIGAN_ASSERT(from <= to && to <= a->used);
    if (a->overflow || from == to) return;
    while (*link) {
        higan__free_block *b = *link;
        unsigned char *bl = (unsigned char *)b, *bh = bl + b->size;
        if (bh <= lo) { link = &b->next; continue; }
        if (bl >= hi) break;
        if (bl < lo) { keep_lo = bl; n_lo = (size_t)(lo - bl); }
        if (bh > hi) { keep_hi = hi; n_hi = (size_t)(bh - hi); }
        a->recycled_bytes -= b->size;
        *link = b->next;
    }
    higan_arena_recycle(a, lo, (size_t)(hi - lo));
    if (keep_lo) higan_arena_recycle(a, keep_lo, n_lo);
    if (keep_hi) higan_arena_recycle(a, keep_hi, n_hi);
}
HIGAN_DEF void *higan_arena_alloc_recycled(higan_arena *a, size_t bytes) {
    size_t n = higan__round_up(bytes ? bytes : 1);
    higan__free_block **link, **best = NULL;
    if (a->overflow) return higan_arena_alloc(a, bytes);
    for (link = (higan__free_block **)&a->recycled; *link; link = &(*link)->next)
        if ((*link)->size >= n && (!best || (*link)->size < (*best)->size)) {
            best = link;
            if ((*link)->size == n) break;
        }
    if (!best) {
        /* No block fits: if the highest one ends at the top, start there and grow the top by
           the rest (else big gradients would skip a large block that lies just below). */
        higan__free_block **last = NULL;
        for (link = (higan__free_block **)&a->recycled; *link; link = &(*link)->next) last = link;
        if (last && (unsigned char *)*last + (*last)->size == higan__arena_start(a) + a->used &&
            a->used - (*last)->size + n <= a->capacity) {
            higan__free_block *b = *last;
            a->recycled_bytes -= b->size;
            a->used += n - b->size;
            if (a->used > a->peak) a->peak = a->used;
            *last = NULL;
            return b;
        }
        return higan_arena_alloc(a, bytes);
    }
    {
        higan__free_block *b = *best;
        a->recycled_bytes -= n;
        if (b->size == n) {
            *best = b->next;
        } else {                                  /* hand out the top part, the rest stays */
            b->size -= n;
            return (unsigned char *)b + b->size;
        }
        return b;
    }
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
    if (p->mirror_be) higan_params_mirror_free(&p->mirror, p->mirror_be);
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
    if (!p->allocated) return;
    if (p->mirror_be) p->mirror_be->zero(p->mirror_be->ctx, p->mirror.grad, (size_t)p->n_param * sizeof(float));
    else memset(p->grad, 0, (size_t)p->n_param * sizeof(float));
}

HIGAN_DEF void higan_params_set_device(higan_params *p, float *value, float *grad, float *buffer,
                                       int64_t *ibuffer) {
    p->dev_value = value; p->dev_grad = grad; p->dev_buffer = buffer; p->dev_ibuffer = ibuffer;
}
/* ---- the store on a backend: its mirror ---------------------------------------------------- */
static size_t higan__mirror_part(int64_t n, size_t elem) {   /* bytes of one part, 256-byte multiple */
    return ((size_t)(n > 0 ? n : 1) * elem + 255) & ~(size_t)255;
}
HIGAN_DEF higan_status higan_params_mirror_init(higan_params_mirror *d, const higan_backend *be, const higan_params *p) {
    size_t fp, fb, bytes;
    unsigned char *b;
    HIGAN_ASSERT(p->allocated && be);
    memset(d, 0, sizeof *d);
    fp = higan__mirror_part(p->n_param, sizeof(float));
    fb = higan__mirror_part(p->n_buffer, sizeof(float));
    bytes = 4 * fp + 2 * fb + higan__mirror_part(p->n_ibuffer, sizeof(int64_t));
    b = (unsigned char *)be->alloc(be->ctx, bytes);
    if (!b) return higan__error(HIGAN_ERR_NOMEM, "%s backend: cannot allocate the mirror of a store (%zu bytes)",
                                be->name, bytes);
    d->block = b;
    d->value = (float *)(void *)b;
    d->grad = (float *)(void *)(b + fp);
    d->adam_m = (float *)(void *)(b + 2 * fp);
    d->adam_v = (float *)(void *)(b + 3 * fp);
    d->buffer = (float *)(void *)(b + 4 * fp);
    d->ibuffer = (int64_t *)(void *)(b + 4 * fp + fb);
    d->buffer_copy = (float *)(void *)(b + bytes - fb);
    d->n_param = p->n_param; d->n_buffer = p->n_buffer; d->n_ibuffer = p->n_ibuffer;
    be->zero(be->ctx, b, bytes);
    return HIGAN_OK;
}
HIGAN_DEF void higan_params_mirror_free(higan_params_mirror *d, const higan_backend *be) {
    if (d->block) be->free_memory(be->ctx, d->block);
    memset(d, 0, sizeof *d);
}
static void higan__mirror_match(const higan_params_mirror *d, const higan_params *p) {
    HIGAN_ASSERT(p->allocated && d->block);
    HIGAN_ASSERT(d->n_param == p->n_param && d->n_buffer == p->n_buffer && d->n_ibuffer == p->n_ibuffer
                 && "mirror made from another store");
}
HIGAN_DEF void higan_params_mirror_upload(const higan_params_mirror *d, const higan_backend *be,
                                          const higan_params *p, int what) {
    size_t fp = (size_t)p->n_param * sizeof(float);
    higan__mirror_match(d, p);
    if (what & HIGAN_PARAMS_VALUES) be->upload(be->ctx, d->value, p->value, fp);
    if (what & HIGAN_PARAMS_GRADS) be->upload(be->ctx, d->grad, p->grad, fp);
    if (what & HIGAN_PARAMS_ADAM) {
        be->upload(be->ctx, d->adam_m, p->adam_m, fp);
        be->upload(be->ctx, d->adam_v, p->adam_v, fp);
    }
    if (what & HIGAN_PARAMS_BUFFERS) be->upload(be->ctx, d->buffer, p->buffer, (size_t)p->n_buffer * sizeof(float));
    if (what & HIGAN_PARAMS_IBUFFERS) be->upload(be->ctx, d->ibuffer, p->ibuffer, (size_t)p->n_ibuffer * sizeof(int64_t));
}
HIGAN_DEF void higan_params_mirror_download(const higan_params_mirror *d, const higan_backend *be,
                                            higan_params *p, int what) {
    size_t fp = (size_t)p->n_param * sizeof(float);
    higan__mirror_match(d, p);
    if (what & HIGAN_PARAMS_VALUES) be->download(be->ctx, p->value, d->value, fp);
    if (what & HIGAN_PARAMS_GRADS) be->download(be->ctx, p->grad, d->grad, fp);
    if (what & HIGAN_PARAMS_ADAM) {
        be->download(be->ctx, p->adam_m, d->adam_m, fp);
        be->download(be->ctx, p->adam_v, d->adam_v, fp);
    }
    if (what & HIGAN_PARAMS_BUFFERS) be->download(be->ctx, p->buffer, d->buffer, (size_t)p->n_buffer * sizeof(float));
    if (what & HIGAN_PARAMS_IBUFFERS)
        be->download(be->ctx, p->ibuffer, d->ibuffer, (size_t)p->n_ibuffer * sizeof(int64_t));
}
HIGAN_DEF higan_status higan_params_to_backend(higan_params *p, const higan_backend *be) {
    higan_status st;
    HIGAN_ASSERT(p->allocated);
    if (be && !be->device) be = NULL;
    if (p->mirror_be == be) return HIGAN_OK;
    if (p->mirror_be) {   /* home first (also before moving to another backend) */
        const higan_backend *old = p->mirror_be;
        higan_params_mirror_download(&p->mirror, old, p, HIGAN_PARAMS_STATE | HIGAN_PARAMS_GRADS);
        st = old->sync(old->ctx);
        higan_params_set_device(p, NULL, NULL, NULL, NULL);
        higan_params_mirror_free(&p->mirror, old);
        p->mirror_be = NULL;
        if (st != HIGAN_OK) return st;
    }
    if (!be) return HIGAN_OK;
    if ((st = higan_params_mirror_init(&p->mirror, be, p)) != HIGAN_OK) return st;
    higan_params_mirror_upload(&p->mirror, be, p, HIGAN_PARAMS_ALL);
    if ((st = be->sync(be->ctx)) != HIGAN_OK) { higan_params_mirror_free(&p->mirror, be); return st; }
    p->mirror_be = be;
    higan_params_set_device(p, p->mirror.value, p->mirror.grad, p->mirror.buffer, p->mirror.ibuffer);
    return HIGAN_OK;
}
HIGAN_DEF void higan_params_download(higan_params *p, int what) {
    if (p->mirror_be) higan_params_mirror_download(&p->mirror, p->mirror_be, p, what);
}
HIGAN_DEF void higan_params_upload(higan_params *p, int what) {
    if (p->mirror_be) higan_params_mirror_upload(&p->mirror, p->mirror_be, p, what);
}
HIGAN_DEF void higan_params_read(const higan_params *p, int h, float *host) {
    const float *src = higan_params_data(p, h);
    size_t bytes = sizeof(float) * (size_t)p->entries[h].numel;
    if (!p->mirror_be) { memcpy(host, src, bytes); return; }
    src = (p->entries[h].kind == HIGAN_PARAM ? p->mirror.value : p->mirror.buffer) + p->entries[h].offset;
    p->mirror_be->download(p->mirror_be->ctx, host, src, bytes);
}
HIGAN_DEF void higan_params_write(higan_params *p, int h, const float *host) {
    float *dst = higan_params_data(p, h);
    size_t bytes = sizeof(float) * (size_t)p->entries[h].numel;
    if (!p->mirror_be) { memcpy(dst, host, bytes); return; }
    dst = (p->entries[h].kind == HIGAN_PARAM ? p->mirror.value : p->mirror.buffer) + p->entries[h].offset;
    p->mirror_be->upload(p->mirror_be->ctx, dst, host, bytes);
}
/* higan_params_data in the memory of t's backend (the device mirror on a device tape). */
static float *higan__tape_params_data(const higan_tape *t, const higan_params *p, int h) {
    float *d = higan_params_data(p, h);
    if (!t->be->device) return d;
    HIGAN_ASSERT(p->dev_value && p->dev_buffer && "device tape: the store has no device mirror");
    return p->entries[h].kind == HIGAN_PARAM ? p->dev_value + p->entries[h].offset
                                             : p->dev_buffer + p->entries[h].offset;
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
    t->be = higan_cpu_backend();
    t->data = a;
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
    if (t->data && t->data != t->arena) higan_arena_reset(t->data);
}
HIGAN_DEF higan_status higan_tape_status(const higan_tape *t) {
    if (t->overflow)
        return higan__error(HIGAN_ERR_NOMEM, "tape overflow: more than %d ops recorded; "
                            "initialise the tape with more entries", t->capacity);
    if (t->data && t->data != t->arena && t->data->overflow) return higan_arena_status(t->data);
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
    v->data = (float *)higan_arena_alloc_recycled(t->data, (size_t)higan_var_numel(v) * sizeof(float));
    v->owns_data = 1;
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
    v->data = higan__tape_params_data(t, p, h);
    v->is_param = 1;
    if (e->kind == HIGAN_PARAM && !p->frozen) {
        v->grad = (t->be->device ? p->dev_grad : p->grad) + e->offset;
        v->requires_grad = 1;
    }
    return v;
}
HIGAN_DEF float *higan_var_grad(higan_tape *t, higan_var *v) {
    if (!v->requires_grad) return NULL;
    if (v->is_param) return t->param_grads ? v->grad : NULL;
    if (v->grad_pass != t->pass) {
        int64_t n = higan_var_numel(v);
        if (!v->grad) v->grad = (float *)higan_arena_alloc_recycled(t->data, (size_t)n * sizeof(float));
        if (!v->grad) return NULL;                 /* arena overflow: reported by backward */
        t->be->zero(t->be->ctx, v->grad, (size_t)n * sizeof(float));
        v->grad_pass = t->pass;
    }
    return v->grad;
}
/* Gradient buffer for x in the backward of an elementwise op y = f(x): y's own gradient
   buffer when x has none yet in this pass and y's is spent after this op (the op then
   computes dx in place over dy and sets y->grad to NULL), else higan_var_grad(t, x). */
static float *higan__var_grad_take(higan_tape *t, higan_var *x, higan_var *y) {
    /* host memory only: the callers then run in-place loops on the host */
    if (!t->be->device && x->requires_grad && !x->is_param && x->grad_pass != t->pass && !y->is_param && !y->retain_grad &&
        y->grad && y->grad_pass == t->pass && higan_var_numel(x) == higan_var_numel(y)) {
        if (x->grad) higan_arena_recycle(t->data, x->grad, (size_t)higan_var_numel(x) * sizeof(float));
        x->grad = y->grad;
        x->grad_pass = t->pass;
        return x->grad;
    }
    return higan_var_grad(t, x);
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
/* Host ints an op passes to its kernel: the array itself on the CPU, an uploaded copy in
   t->data on a device (NULL on overflow). */
static const int *higan__tape_ints(higan_tape *t, const int *host, int64_t n) {
    int *d;
    if (!t->be->device) return host;
    if (!(d = (int *)higan_arena_alloc(t->data, sizeof(int) * (size_t)(n > 0 ? n : 1)))) return NULL;
    if (n > 0) t->be->upload(t->be->ctx, d, host, sizeof(int) * (size_t)n);
    return d;
}
HIGAN_DEF higan_tape_pos higan_tape_mark(const higan_tape *t) {
    higan_tape_pos p;
    p.host = higan_arena_mark(t->arena);
    p.data = t->data && t->data != t->arena ? higan_arena_mark(t->data) : 0;
    return p;
}
HIGAN_DEF void higan_tape_release(higan_tape *t, higan_tape_pos pos) {
    higan_arena_release(t->arena, pos.host);
    if (t->data && t->data != t->arena) higan_arena_release(t->data, pos.data);
}
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
/* After the backward of the op that made v: its gradient is spent (and, when release, its
   value too); both go back to the arena. */
static void higan__tape_spent(higan_tape *t, higan_var *v, int release) {
    size_t bytes = (size_t)higan_var_numel(v) * sizeof(float);
    if (t->be->device) return;   /* the free list lives in the blocks: host memory only (for now) */
    if (v->grad && !v->is_param && !v->retain_grad) {
        higan_arena_recycle(t->data, v->grad, bytes);
        v->grad = NULL;
        v->grad_pass = 0;
    }
    if (release && v->owns_data && v->data) {
        higan_arena_recycle(t->data, v->data, bytes);
        v->data = NULL;
        v->owns_data = 0;
    }
}
static higan_status higan__backward(higan_tape *t, higan_var *out, const float *seed, int stop,
                                    int release) {
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
    if (!t->be->device) {
        for (i = 0; i < n; ++i) g[i] += seed ? seed[i] : 1.0f;
    } else {   /* the seed staged in the device arena, then added */
        size_t mark = higan_arena_mark(t->data);
        float *sd = higan_arena_floats(t->data, n);
        if (!sd) return higan_tape_status(t);
        if (seed) t->be->upload(t->be->ctx, sd, seed, sizeof(float) * (size_t)n);
        else t->be->fill(t->be->ctx, sd, 1.0f, n);
        t->be->add_forward(t->be->ctx, g, g, sd, n);
        higan_arena_release(t->data, mark);
    }
    for (e = out->producer; e > stop; --e) {
        higan_tape_entry *en = &t->entries[e];
        if (en->out->grad_pass != t->pass) continue;
        en->backward(t, en->ctx);
        if (t->arena->overflow || t->data->overflow) break;   /* a NULL gradient skipped work: report it */
        higan__tape_spent(t, en->out, release && en->out != out);
    }
    return t->data->overflow ? higan_arena_status(t->data) : higan_arena_status(t->arena);
}
HIGAN_DEF higan_status higan_tape_backward(higan_tape *t, higan_var *out, const float *seed) {
    return higan__backward(t, out, seed, -1, 0);
}
HIGAN_DEF higan_status higan_tape_backward_release(higan_tape *t, higan_var *out, const float *seed) {
    return higan__backward(t, out, seed, -1, 1);
}
HIGAN_DEF higan_status higan_tape_grad_wrt(higan_tape *t, higan_var *out, higan_var *wrt) {
    int keep = t->param_grads;
    higan_status st;
    if (!wrt->requires_grad)
        return higan__error(HIGAN_ERR_ARG, "grad_wrt: the variable does not require a gradient");
    t->param_grads = 0;
    st = higan__backward(t, out, NULL, wrt->producer, 0);
    t->param_grads = keep;
    if (st == HIGAN_OK && wrt->grad_pass != t->pass) {
        /* out does not depend on wrt: the gradient is zero */
        float *g = higan_var_grad(t, wrt);
        if (!g) return higan_tape_status(t);
    }
    return st;
}

/* ---- Adam ------------------------------------------------------------------------------ */
/* The update of elements [0, n) (see higan_adam_step): the scalar reference, and an AVX-512
   body doing the same float operations in the same order (sqrt and division are correctly
   rounded, and nothing is fused: the same bits as the scalar loop). */
static void higan__adam_scalar(float *w, const float *g, float *m, float *v, int64_t n, float b1, float b2,
                               float one_minus_b1, float one_minus_b2, float step_size, float bc2_sqrt, float eps) {
    int64_t i;
    for (i = 0; i < n; ++i) {
        float gi = g[i];
        m[i] = m[i] * b1 + gi * one_minus_b1;
        v[i] = v[i] * b2 + one_minus_b2 * gi * gi;
        w[i] -= step_size * (m[i] / (sqrtf(v[i]) / bc2_sqrt + eps));
    }
}
#if defined(HIGAN__X86_SIMD) && !defined(HIGAN_NO_AVX512)
/* defined with the normalisation kernels, after immintrin.h */
static void higan__adam_avx512(float *w, const float *g, float *m, float *v, int64_t n, float b1, float b2,
                               float one_minus_b1, float one_minus_b2, float step_size, float bc2_sqrt, float eps);
#endif
HIGAN_DEF higan_adam higan_adam_default(double lr) {
    higan_adam a;
    a.lr = lr; a.beta1 = 0.9; a.beta2 = 0.999; a.eps = 1e-8; a.step = 0;
    return a;
}
/* Adam's elementwise update on the host (the CPU backend's adam_step entry). */
static void higan__adam_apply(float *w, const float *g, float *m, float *v, int64_t n, float b1, float b2,
                              float one_minus_b1, float one_minus_b2, float step_size, float bc2_sqrt, float eps) {
    int64_t i;
#if defined(HIGAN__X86_SIMD) && !defined(HIGAN_NO_AVX512)
    const int simd = higan_cpu_level() >= HIGAN_CPU_AVX512;
#endif
    /* chunks of 16384 (elementwise: any split gives the same bits) */
    HIGAN__PARALLEL_FOR_IF(n > 65536)
    for (i = 0; i < (n + 16383) / 16384; ++i) {
        int64_t i0 = i * 16384, len = n - i0 < 16384 ? n - i0 : 16384;
#if defined(HIGAN__X86_SIMD) && !defined(HIGAN_NO_AVX512)
        if (simd) {
            higan__adam_avx512(w + i0, g + i0, m + i0, v + i0, len, b1, b2, one_minus_b1, one_minus_b2,
                               step_size, bc2_sqrt, eps);
            continue;
        }
#endif
        higan__adam_scalar(w + i0, g + i0, m + i0, v + i0, len, b1, b2, one_minus_b1, one_minus_b2,
                           step_size, bc2_sqrt, eps);
    }
}
/* PyTorch's single-tensor Adam: m = b1 m + (1-b1) g; v = b2 v + (1-b2) g^2;
   p -= (lr / (1 - b1^t)) * m / (sqrt(v) / sqrt(1 - b2^t) + eps). */
HIGAN_DEF void higan_adam_update(higan_adam *opt, const higan_backend *be, float *w, const float *g, float *m,
                                 float *v, int64_t n) {
    /* scalars in double, then rounded once to float, as torch does with Python floats */
    float b1 = (float)opt->beta1, b2 = (float)opt->beta2, eps = (float)opt->eps;
    float one_minus_b1 = (float)(1.0 - opt->beta1), one_minus_b2 = (float)(1.0 - opt->beta2);
    float step_size, bc2_sqrt;
    opt->step += 1;
    step_size = (float)(opt->lr / (1.0 - pow(opt->beta1, (double)opt->step)));
    bc2_sqrt = (float)sqrt(1.0 - pow(opt->beta2, (double)opt->step));
    if (be && be->device)
        be->adam_step(be->ctx, w, g, m, v, n, b1, b2, one_minus_b1, one_minus_b2, step_size, bc2_sqrt, eps);
    else
        higan__adam_apply(w, g, m, v, n, b1, b2, one_minus_b1, one_minus_b2, step_size, bc2_sqrt, eps);
}
HIGAN_DEF void higan_adam_step(higan_adam *opt, higan_params *p) {
    HIGAN_ASSERT(p->allocated);
    if (p->mirror_be)
        higan_adam_update(opt, p->mirror_be, p->mirror.value, p->mirror.grad, p->mirror.adam_m, p->mirror.adam_v,
                          p->n_param);
    else
        higan_adam_update(opt, NULL, p->value, p->grad, p->adam_m, p->adam_v, p->n_param);
}
HIGAN_DEF float higan_lr_linear_decay(int epoch, int start, int length) {
    double f = (double)(epoch - start) / (double)(length > 0 ? length : 1);
    if (f < 0) f = 0;
    if (f > 0.999) f = 0.999;
    return (float)(1.0 - f);
}
/* ---- safetensors: reader, writer, parameter-store save/load ---------------------------
   File layout: 8-byte little-endian header length N, N bytes of UTF-8 JSON header (padded
   with spaces), then the data section. Each tensor's data_offsets [begin, end) are relative
   to the data section, and together the tensors must cover it exactly.
   The reader never trusts the file: every length, offset and count is checked before use,
   and all multi-byte values are assembled from bytes (data may be unaligned, host order
   does not matter). */
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define HIGAN__ST_MAX_HEADER 100000000ull   /* 100 MB, the reference (Rust) reader's limit */
#define HIGAN__ST_NDTYPES 7

static const char *const higan__st_dtype_names[HIGAN__ST_NDTYPES] = {
    "F32", "F16", "BF16", "I64", "I32", "I16", "U8"};
static const size_t higan__st_dtype_sizes[HIGAN__ST_NDTYPES] = {4, 2, 2, 8, 4, 2, 1};

HIGAN_DEF const char *higan_dtype_name(higan_dtype d) {
    return ((int)d >= 0 && (int)d < HIGAN__ST_NDTYPES) ? higan__st_dtype_names[(int)d] : "invalid";
}
HIGAN_DEF size_t higan_dtype_size(higan_dtype d) {
    return ((int)d >= 0 && (int)d < HIGAN__ST_NDTYPES) ? higan__st_dtype_sizes[(int)d] : 0;
}
static int higan__st_is_float(higan_dtype d) { return d == HIGAN_F32 || d == HIGAN_F16 || d == HIGAN_BF16; }

/* ---- small helpers ----------------------------------------------------------------- */
static char *higan__st_strdup(const char *s) {
    size_t n = strlen(s) + 1;
    char *r = (char *)HIGAN_MALLOC(n);
    if (r) memcpy(r, s, n);
    return r;
}
static uint16_t higan__st_rd16(const unsigned char *p) { return (uint16_t)(p[0] | (p[1] << 8)); }
static uint32_t higan__st_rd32(const unsigned char *p) {
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}
static uint64_t higan__st_rd64(const unsigned char *p) {
    return (uint64_t)higan__st_rd32(p) | ((uint64_t)higan__st_rd32(p + 4) << 32);
}
static int higan__st_host_le(void) {
    uint16_t one = 1;
    unsigned char b;
    memcpy(&b, &one, 1);
    return b == 1;
}
static float higan__st_f32_bits(uint32_t bits) {
    float f;
    memcpy(&f, &bits, 4);
    return f;
}
/* IEEE half -> float, exact for every value (subnormals, +-0, inf, NaN payload kept). */
static float higan__st_half_to_float(uint16_t h) {
    uint32_t sign = (uint32_t)(h >> 15) << 31, exp = (uint32_t)(h >> 10) & 0x1f, man = h & 0x3ffu;
    if (exp == 0) {   /* zero or subnormal: man * 2^-24, exact in float */
        float v = (float)man * 5.9604644775390625e-08f;
        return sign ? -v : v;
    }
    if (exp == 31) return higan__st_f32_bits(sign | 0x7f800000u | (man << 13));
    return higan__st_f32_bits(sign | ((exp + 112u) << 23) | (man << 13));
}

/* Strict UTF-8 check (no overlongs, no surrogates, <= U+10FFFF). Returns the index of the
   first bad byte, or n when valid. */
static size_t higan__st_utf8_check(const unsigned char *s, size_t n) {
    size_t i = 0;
    while (i < n) {
        unsigned c = s[i];
        size_t len, k;
        uint32_t cp;
        if (c < 0x80) { ++i; continue; }
        if (c >= 0xC2 && c <= 0xDF) { len = 2; cp = c & 0x1f; }
        else if (c >= 0xE0 && c <= 0xEF) { len = 3; cp = c & 0x0f; }
        else if (c >= 0xF0 && c <= 0xF4) { len = 4; cp = c & 0x07; }
        else return i;
        if (n - i < len) return i;
        for (k = 1; k < len; ++k) {
            if ((s[i + k] & 0xC0) != 0x80) return i;
            cp = (cp << 6) | (s[i + k] & 0x3f);
        }
        if ((len == 3 && cp < 0x800) || (len == 4 && (cp < 0x10000 || cp > 0x10FFFF)) ||
            (cp >= 0xD800 && cp <= 0xDFFF))
            return i;
        i += len;
    }
    return n;
}

/* Growable string (headers, error lists). Allocation failure is sticky in oom. */
typedef struct { char *s; size_t len, cap; int oom; } higan__st_sb;
static void higan__st_sb_put(higan__st_sb *b, const char *s, size_t n) {
    if (b->oom) return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        char *grown;
        while (cap < b->len + n + 1) cap *= 2;
        grown = (char *)HIGAN_REALLOC(b->s, cap);
        if (!grown) { b->oom = 1; return; }
        b->s = grown;
        b->cap = cap;
    }
    memcpy(b->s + b->len, s, n);
    b->len += n;
    b->s[b->len] = 0;
}
static void higan__st_sb_str(higan__st_sb *b, const char *s) { higan__st_sb_put(b, s, strlen(s)); }
static void higan__st_sb_printf(higan__st_sb *b, const char *fmt, ...) {
    char tmp[512];
    int n;
    va_list ap;
    va_start(ap, fmt);
    n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (n < 0) return;
    higan__st_sb_put(b, tmp, (size_t)n < sizeof tmp ? (size_t)n : sizeof tmp - 1);
}
/* JSON string literal; the bytes are already valid UTF-8, so only " \ and controls escape. */
static void higan__st_sb_json(higan__st_sb *b, const char *s) {
    static const char hex[] = "0123456789abcdef";
    const unsigned char *p = (const unsigned char *)s;
    higan__st_sb_put(b, "\"", 1);
    for (; *p; ++p) {
        char e[8];
        switch (*p) {
        case '"': higan__st_sb_put(b, "\\\"", 2); break;
        case '\\': higan__st_sb_put(b, "\\\\", 2); break;
        case '\b': higan__st_sb_put(b, "\\b", 2); break;
        case '\f': higan__st_sb_put(b, "\\f", 2); break;
        case '\n': higan__st_sb_put(b, "\\n", 2); break;
        case '\r': higan__st_sb_put(b, "\\r", 2); break;
        case '\t': higan__st_sb_put(b, "\\t", 2); break;
        default:
            if (*p < 0x20) {
                e[0] = '\\'; e[1] = 'u'; e[2] = '0'; e[3] = '0';
                e[4] = hex[*p >> 4]; e[5] = hex[*p & 15];
                higan__st_sb_put(b, e, 6);
            } else {
                higan__st_sb_put(b, (const char *)p, 1);
            }
        }
    }
    higan__st_sb_put(b, "\"", 1);
}
static void higan__st_sb_shape(higan__st_sb *b, int ndim, const int64_t *shape) {
    int d;
    higan__st_sb_put(b, "[", 1);
    for (d = 0; d < ndim; ++d) higan__st_sb_printf(b, d ? ",%lld" : "%lld", (long long)shape[d]);
    higan__st_sb_put(b, "]", 1);
}

/* ---- JSON header parser -------------------------------------------------------------
   Recursive descent over exactly the safetensors schema: a top-level object of
   name -> {"dtype": str, "shape": [uint...], "data_offsets": [uint, uint]} plus an
   optional "__metadata__": {str: str}. No generic recursion, so no depth limit is needed. */
typedef struct {
    const unsigned char *s;   /* header bytes */
    size_t n, i;              /* length, cursor */
    size_t data_size;         /* bytes in the data section (for offset range checks) */
    char err[400];
} higan__st_jp;

static int higan__st_jfail(higan__st_jp *j, const char *fmt, ...) {
    if (!j->err[0]) {
        int k = snprintf(j->err, sizeof j->err, "header JSON, byte %llu: ", (unsigned long long)j->i);
        va_list ap;
        if (k < 0 || (size_t)k >= sizeof j->err) k = 0;
        va_start(ap, fmt);
        vsnprintf(j->err + k, sizeof j->err - (size_t)k, fmt, ap);
        va_end(ap);
    }
    return 0;
}
static void higan__st_ws(higan__st_jp *j) {
    while (j->i < j->n && (j->s[j->i] == ' ' || j->s[j->i] == '\t' || j->s[j->i] == '\n' || j->s[j->i] == '\r')) ++j->i;
}
static int higan__st_peek(higan__st_jp *j) { higan__st_ws(j); return j->i < j->n ? j->s[j->i] : -1; }
static const char *higan__st_found(higan__st_jp *j, char *buf) {
    int c = j->i < j->n ? j->s[j->i] : -1;
    if (c < 0) return "end of header";
    if (c >= 0x21 && c < 0x7f) { buf[0] = '\''; buf[1] = (char)c; buf[2] = '\''; buf[3] = 0; }
    else snprintf(buf, 8, "0x%02x", (unsigned)c);
    return buf;
}
static int higan__st_expect(higan__st_jp *j, int c, const char *where) {
    char f[8];
    if (higan__st_peek(j) != c) return higan__st_jfail(j, "expected '%c' %s, found %s", c, where, higan__st_found(j, f));
    ++j->i;
    return 1;
}
static int higan__st_hex4(const unsigned char *p, uint32_t *out) {
    int k;
    uint32_t v = 0;
    for (k = 0; k < 4; ++k) {
        int c = p[k], d;
        if (c >= '0' && c <= '9') d = c - '0';
        else if (c >= 'a' && c <= 'f') d = c - 'a' + 10;
        else if (c >= 'A' && c <= 'F') d = c - 'A' + 10;
        else return 0;
        v = (v << 4) | (uint32_t)d;
    }
    *out = v;
    return 1;
}
/* Parses a string literal into a new NUL-terminated UTF-8 string (*out, HIGAN_MALLOC). */
static int higan__st_string(higan__st_jp *j, char **out, const char *what) {
    size_t k, end;
    char *o, f[8];
    size_t w = 0;
    *out = NULL;
    if (higan__st_peek(j) != '"') return higan__st_jfail(j, "expected a string (%s), found %s", what, higan__st_found(j, f));
    ++j->i;
    /* find the closing quote; a backslash always consumes the next byte */
    for (k = j->i; k < j->n && j->s[k] != '"'; k += (j->s[k] == '\\') ? 2 : 1) {}
    if (k >= j->n) return higan__st_jfail(j, "unterminated string (%s)", what);
    end = k;
    o = (char *)HIGAN_MALLOC(end - j->i + 1);   /* decoding never grows a string */
    if (!o) return higan__st_jfail(j, "out of memory");
    while (j->i < end) {
        unsigned c = j->s[j->i];
        uint32_t cp, lo;
        if (c < 0x20) { HIGAN_FREE(o); return higan__st_jfail(j, "raw control character 0x%02x in string (%s)", c, what); }
        if (c != '\\') { o[w++] = (char)c; ++j->i; continue; }
        c = j->s[j->i + 1];   /* exists: the scan above stopped only after a complete escape */
        switch (c) {
        case '"': o[w++] = '"'; j->i += 2; continue;
        case '\\': o[w++] = '\\'; j->i += 2; continue;
        case '/': o[w++] = '/'; j->i += 2; continue;
        case 'b': o[w++] = '\b'; j->i += 2; continue;
        case 'f': o[w++] = '\f'; j->i += 2; continue;
        case 'n': o[w++] = '\n'; j->i += 2; continue;
        case 'r': o[w++] = '\r'; j->i += 2; continue;
        case 't': o[w++] = '\t'; j->i += 2; continue;
        case 'u': break;
        default:
            HIGAN_FREE(o);
            return higan__st_jfail(j, "invalid escape '\\%c' in string (%s)", (c >= 0x21 && c < 0x7f) ? (char)c : '?', what);
        }
        if (end - j->i < 6 || !higan__st_hex4(j->s + j->i + 2, &cp)) {
            HIGAN_FREE(o);
            return higan__st_jfail(j, "\\u needs 4 hex digits (%s)", what);
        }
        j->i += 6;
        if (cp >= 0xDC00 && cp <= 0xDFFF) { HIGAN_FREE(o); return higan__st_jfail(j, "unpaired low surrogate \\u%04X (%s)", (unsigned)cp, what); }
        if (cp >= 0xD800 && cp <= 0xDBFF) {
            if (end - j->i < 6 || j->s[j->i] != '\\' || j->s[j->i + 1] != 'u' ||
                !higan__st_hex4(j->s + j->i + 2, &lo) || lo < 0xDC00 || lo > 0xDFFF) {
                HIGAN_FREE(o);
                return higan__st_jfail(j, "high surrogate \\u%04X not followed by a low surrogate (%s)", (unsigned)cp, what);
            }
            j->i += 6;
            cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
        }
        if (cp == 0) { HIGAN_FREE(o); return higan__st_jfail(j, "\\u0000 is not allowed (%s)", what); }
        if (cp < 0x80) o[w++] = (char)cp;
        else if (cp < 0x800) { o[w++] = (char)(0xC0 | (cp >> 6)); o[w++] = (char)(0x80 | (cp & 0x3f)); }
        else if (cp < 0x10000) {
            o[w++] = (char)(0xE0 | (cp >> 12)); o[w++] = (char)(0x80 | ((cp >> 6) & 0x3f));
            o[w++] = (char)(0x80 | (cp & 0x3f));
        } else {
            o[w++] = (char)(0xF0 | (cp >> 18)); o[w++] = (char)(0x80 | ((cp >> 12) & 0x3f));
            o[w++] = (char)(0x80 | ((cp >> 6) & 0x3f)); o[w++] = (char)(0x80 | (cp & 0x3f));
        }
    }
    o[w] = 0;
    j->i = end + 1;
    *out = o;
    return 1;
}
/* Non-negative integer <= INT64_MAX. */
static int higan__st_uint(higan__st_jp *j, uint64_t *out, const char *what) {
    const uint64_t max = (uint64_t)INT64_MAX;
    uint64_t v = 0;
    int c = higan__st_peek(j);
    char f[8];
    if (c == '-') return higan__st_jfail(j, "%s must be non-negative", what);
    if (c < '0' || c > '9') return higan__st_jfail(j, "expected an integer in %s, found %s", what, higan__st_found(j, f));
    if (c == '0' && j->i + 1 < j->n && j->s[j->i + 1] >= '0' && j->s[j->i + 1] <= '9')
        return higan__st_jfail(j, "leading zero in %s", what);
    while (j->i < j->n && j->s[j->i] >= '0' && j->s[j->i] <= '9') {
        uint64_t d = (uint64_t)(j->s[j->i] - '0');
        if (v > (max - d) / 10) return higan__st_jfail(j, "%s value too large", what);
        v = v * 10 + d;
        ++j->i;
    }
    if (j->i < j->n && (j->s[j->i] == '.' || j->s[j->i] == 'e' || j->s[j->i] == 'E'))
        return higan__st_jfail(j, "%s must be an integer", what);
    *out = v;
    return 1;
}
static int higan__st_uint_array(higan__st_jp *j, uint64_t *out, int max, int *count, const char *what) {
    char f[8];
    *count = 0;
    if (!higan__st_expect(j, '[', what)) return 0;
    if (higan__st_peek(j) == ']') { ++j->i; return 1; }
    for (;;) {
        int c;
        if (*count == max) return higan__st_jfail(j, "%s has more than %d entries", what, max);
        if (!higan__st_uint(j, &out[*count], what)) return 0;
        ++*count;
        c = higan__st_peek(j);
        ++j->i;
        if (c == ']') return 1;
        if (c != ',') { --j->i; return higan__st_jfail(j, "expected ',' or ']' in %s, found %s", what, higan__st_found(j, f)); }
    }
}
static int higan__st_parse_dtype(const char *s, higan_dtype *d) {
    int k;
    static const char *const unsupported[] = {"F64", "BOOL", "I8", "U16", "U32", "U64", "F8_E4M3",
                                              "F8_E5M2", "F8_E8M0", "F6_E2M3", "F6_E3M2", "F4",
                                              "C64", "C128", 0};
    for (k = 0; k < HIGAN__ST_NDTYPES; ++k)
        if (!strcmp(s, higan__st_dtype_names[k])) { *d = (higan_dtype)k; return 1; }
    for (k = 0; unsupported[k]; ++k)
        if (!strcmp(s, unsupported[k])) return 0;
    return -1;
}
/* One tensor entry; t->name is set by the caller (and freed with st on failure). */
static int higan__st_tensor(higan__st_jp *j, higan_st_tensor *t) {
    int have_dtype = 0, have_shape = 0, have_off = 0, n, d;
    uint64_t shape[HIGAN_ST_MAX_DIMS], off[2], numel = 1;
    char f[8];
    if (!higan__st_expect(j, '{', "to open the tensor entry")) return 0;
    if (higan__st_peek(j) == '}') ++j->i;
    else for (;;) {
        char *key;
        int c, field;
        if (!higan__st_string(j, &key, "field name")) return 0;
        field = !strcmp(key, "dtype") ? 0 : !strcmp(key, "shape") ? 1 : !strcmp(key, "data_offsets") ? 2 : -1;
        if (field < 0) {
            higan__st_jfail(j, "tensor '%s': unknown field '%s'", t->name, key);
            HIGAN_FREE(key);
            return 0;
        }
        HIGAN_FREE(key);
        if ((field == 0 && have_dtype) || (field == 1 && have_shape) || (field == 2 && have_off))
            return higan__st_jfail(j, "tensor '%s': duplicate field", t->name);
        if (!higan__st_expect(j, ':', "after a field name")) return 0;
        if (field == 0) {
            char *ds;
            int r;
            if (!higan__st_string(j, &ds, "dtype")) return 0;
            r = higan__st_parse_dtype(ds, &t->dtype);
            if (r <= 0) {
                higan__st_jfail(j, "tensor '%s': %s dtype '%s' (supported: F32 F16 BF16 I64 I32 I16 U8)",
                                t->name, r == 0 ? "unsupported" : "unknown", ds);
                HIGAN_FREE(ds);
                return 0;
            }
            HIGAN_FREE(ds);
            have_dtype = 1;
        } else if (field == 1) {
            if (!higan__st_uint_array(j, shape, HIGAN_ST_MAX_DIMS, &n, "shape")) return 0;
            t->ndim = n;
            for (d = 0; d < n; ++d) {
                /* overflow: numel must stay <= INT64_MAX */
                if (shape[d] != 0 && numel > (uint64_t)INT64_MAX / shape[d])
                    return higan__st_jfail(j, "tensor '%s': shape element count overflows", t->name);
                numel *= shape[d];
                t->shape[d] = (int64_t)shape[d];
            }
            have_shape = 1;
        } else {
            if (!higan__st_uint_array(j, off, 2, &n, "data_offsets")) return 0;
            if (n != 2) return higan__st_jfail(j, "tensor '%s': data_offsets needs 2 entries, has %d", t->name, n);
            if (off[0] > off[1])
                return higan__st_jfail(j, "tensor '%s': data_offsets begin %llu > end %llu", t->name,
                                       (unsigned long long)off[0], (unsigned long long)off[1]);
            if (off[1] > (uint64_t)j->data_size)
                return higan__st_jfail(j, "tensor '%s': data_offsets end %llu is past the data section (%llu bytes)",
                                       t->name, (unsigned long long)off[1], (unsigned long long)j->data_size);
            t->begin = (size_t)off[0];
            t->end = (size_t)off[1];
            have_off = 1;
        }
        c = higan__st_peek(j);
        ++j->i;
        if (c == '}') break;
        if (c != ',') { --j->i; return higan__st_jfail(j, "expected ',' or '}' in tensor '%s', found %s", t->name, higan__st_found(j, f)); }
    }
    if (!have_dtype || !have_shape || !have_off)
        return higan__st_jfail(j, "tensor '%s': missing %s", t->name,
                               !have_dtype ? "dtype" : !have_shape ? "shape" : "data_offsets");
    t->numel = (int64_t)numel;
    /* byte count: numel * size must not overflow and must match the offsets */
    if (numel > (uint64_t)INT64_MAX / higan_dtype_size(t->dtype))
        return higan__st_jfail(j, "tensor '%s': %llu elements of %s do not fit in 2^63 bytes", t->name,
                               (unsigned long long)numel, higan_dtype_name(t->dtype));
    if ((uint64_t)(t->end - t->begin) != numel * higan_dtype_size(t->dtype))
        return higan__st_jfail(j, "tensor '%s': data_offsets [%llu, %llu] hold %llu bytes but %s with %llu elements needs %llu",
                               t->name, (unsigned long long)t->begin, (unsigned long long)t->end,
                               (unsigned long long)(t->end - t->begin), higan_dtype_name(t->dtype),
                               (unsigned long long)numel, (unsigned long long)(numel * higan_dtype_size(t->dtype)));
    return 1;
}
static int higan__st_metadata(higan__st_jp *j, higan_safetensors *st) {
    int cap = 0;
    char f[8];
    if (!higan__st_expect(j, '{', "to open __metadata__")) return 0;
    if (higan__st_peek(j) == '}') { ++j->i; return 1; }
    for (;;) {
        char *k, *v;
        int c;
        if (!higan__st_string(j, &k, "metadata key")) return 0;
        if (!higan__st_expect(j, ':', "after a metadata key")) { HIGAN_FREE(k); return 0; }
        if (higan__st_peek(j) != '"') {
            higan__st_jfail(j, "metadata value of '%s' must be a string", k);
            HIGAN_FREE(k);
            return 0;
        }
        if (!higan__st_string(j, &v, "metadata value")) { HIGAN_FREE(k); return 0; }
        if (st->meta_count == cap) {
            int nc = cap ? 2 * cap : 8;
            char **nk = (char **)HIGAN_REALLOC(st->meta_keys, (size_t)nc * sizeof(char *));
            char **nv;
            if (nk) st->meta_keys = nk;
            nv = nk ? (char **)HIGAN_REALLOC(st->meta_values, (size_t)nc * sizeof(char *)) : NULL;
            if (nv) st->meta_values = nv;
            if (!nk || !nv) { HIGAN_FREE(k); HIGAN_FREE(v); return higan__st_jfail(j, "out of memory"); }
            cap = nc;
        }
        st->meta_keys[st->meta_count] = k;
        st->meta_values[st->meta_count] = v;
        ++st->meta_count;
        c = higan__st_peek(j);
        ++j->i;
        if (c == '}') return 1;
        if (c != ',') { --j->i; return higan__st_jfail(j, "expected ',' or '}' in __metadata__, found %s", higan__st_found(j, f)); }
    }
}
static int higan__st_header(higan__st_jp *j, higan_safetensors *st) {
    int cap = 0, have_meta = 0;
    char f[8];
    if (j->n == 0 || j->s[0] != '{') return higan__st_jfail(j, "the header must start with '{', found %s", higan__st_found(j, f));
    ++j->i;
    if (higan__st_peek(j) == '}') ++j->i;
    else for (;;) {
        char *name;
        int c;
        if (!higan__st_string(j, &name, "tensor name")) return 0;
        if (!higan__st_expect(j, ':', "after a tensor name")) { HIGAN_FREE(name); return 0; }
        if (!strcmp(name, "__metadata__")) {
            HIGAN_FREE(name);
            if (have_meta) return higan__st_jfail(j, "duplicate __metadata__");
            have_meta = 1;
            if (!higan__st_metadata(j, st)) return 0;
        } else {
            if (st->count == cap) {
                int nc = cap ? 2 * cap : 16;
                higan_st_tensor *nt = (higan_st_tensor *)HIGAN_REALLOC(st->tensors, (size_t)nc * sizeof *nt);
                if (!nt) { HIGAN_FREE(name); return higan__st_jfail(j, "out of memory"); }
                st->tensors = nt;
                cap = nc;
            }
            memset(&st->tensors[st->count], 0, sizeof st->tensors[0]);
            st->tensors[st->count].name = name;   /* owned by st from here */
            if (!higan__st_tensor(j, &st->tensors[st->count++])) return 0;
        }
        c = higan__st_peek(j);
        ++j->i;
        if (c == '}') break;
        if (c != ',') { --j->i; return higan__st_jfail(j, "expected ',' or '}' after an entry, found %s", higan__st_found(j, f)); }
    }
    higan__st_ws(j);
    if (j->i != j->n) return higan__st_jfail(j, "unexpected bytes after the header object (only space padding may follow)");
    return 1;
}

/* ---- reader ---------------------------------------------------------------------------- */
static int higan__st_cmp_str(const void *a, const void *b) {
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}
static int higan__st_cmp_off(const void *a, const void *b) {
    const higan_st_tensor *x = *(const higan_st_tensor *const *)a, *y = *(const higan_st_tensor *const *)b;
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    if (x->end != y->end) return x->end < y->end ? -1 : 1;
    return 0;
}
HIGAN_DEF void higan_safetensors_free(higan_safetensors *st) {
    int i;
    if (!st) return;
    for (i = 0; i < st->count; ++i) HIGAN_FREE(st->tensors[i].name);
    for (i = 0; i < st->meta_count; ++i) { HIGAN_FREE(st->meta_keys[i]); HIGAN_FREE(st->meta_values[i]); }
    HIGAN_FREE(st->tensors);
    HIGAN_FREE(st->meta_keys);
    HIGAN_FREE(st->meta_values);
    HIGAN_FREE(st->file);
    memset(st, 0, sizeof *st);
}
/* Sorted copy of n string pointers: the first duplicate, or NULL. (*oom set on failure.) */
static const char *higan__st_find_dup(const char *const *names, int n, int stride_is_tensor,
                                      const higan_st_tensor *ts, int *oom) {
    const char **v;
    const char *dup = NULL;
    int i;
    *oom = 0;
    if (n < 2) return NULL;
    v = (const char **)HIGAN_MALLOC((size_t)n * sizeof *v);
    if (!v) { *oom = 1; return NULL; }
    for (i = 0; i < n; ++i) v[i] = stride_is_tensor ? ts[i].name : names[i];
    qsort(v, (size_t)n, sizeof *v, higan__st_cmp_str);
    for (i = 1; i < n && !dup; ++i) if (!strcmp(v[i - 1], v[i])) dup = v[i];
    HIGAN_FREE(v);
    return dup;   /* points into st's own strings */
}
/* Takes ownership of buf (HIGAN_MALLOC'd, size bytes). src names the input in errors. */
static higan_status higan__st_parse_owned(higan_safetensors *st, unsigned char *buf, size_t size, const char *src) {
    char msg[600];
    higan__st_jp j;
    uint64_t hlen;
    const char *dup;
    const higan_st_tensor **order = NULL;
    size_t bad, pos;
    int i, oom;
    memset(st, 0, sizeof *st);
    st->file = buf;
    st->file_size = size;
    msg[0] = 0;
    if (size < 8) {
        snprintf(msg, sizeof msg, "file is %llu bytes, too short for the 8-byte header length", (unsigned long long)size);
        goto fail;
    }
    hlen = higan__st_rd64(buf);
    if (hlen == 0) { snprintf(msg, sizeof msg, "header length is 0"); goto fail; }
    if (hlen > HIGAN__ST_MAX_HEADER) {
        snprintf(msg, sizeof msg, "header length %llu exceeds the 100 MB limit", (unsigned long long)hlen);
        goto fail;
    }
    if (hlen > (uint64_t)(size - 8)) {
        snprintf(msg, sizeof msg, "header length %llu runs past the end of the file (%llu bytes)",
                 (unsigned long long)hlen, (unsigned long long)size);
        goto fail;
    }
    bad = higan__st_utf8_check(buf + 8, (size_t)hlen);
    if (bad != (size_t)hlen) {
        snprintf(msg, sizeof msg, "header is not valid UTF-8 (byte %llu)", (unsigned long long)bad);
        goto fail;
    }
    st->data = buf + 8 + (size_t)hlen;
    memset(&j, 0, sizeof j);
    j.s = buf + 8;
    j.n = (size_t)hlen;
    j.data_size = size - 8 - (size_t)hlen;
    if (!higan__st_header(&j, st)) { snprintf(msg, sizeof msg, "%s", j.err); goto fail; }
    dup = higan__st_find_dup(NULL, st->count, 1, st->tensors, &oom);
    if (!oom && dup) { snprintf(msg, sizeof msg, "duplicate tensor name '%s'", dup); goto fail; }
    if (!oom) dup = higan__st_find_dup((const char *const *)st->meta_keys, st->meta_count, 0, NULL, &oom);
    if (!oom && dup) { snprintf(msg, sizeof msg, "duplicate metadata key '%s'", dup); goto fail; }
    if (oom) { snprintf(msg, sizeof msg, "out of memory"); goto fail; }
    /* the tensors must tile the data section: no gaps, no overlaps, nothing left over */
    if (st->count > 0) {
        order = (const higan_st_tensor **)HIGAN_MALLOC((size_t)st->count * sizeof *order);
        if (!order) { snprintf(msg, sizeof msg, "out of memory"); goto fail; }
        for (i = 0; i < st->count; ++i) order[i] = &st->tensors[i];
        qsort(order, (size_t)st->count, sizeof *order, higan__st_cmp_off);
    }
    pos = 0;
    for (i = 0; i < st->count; ++i) {
        if (order[i]->begin > pos) {
            snprintf(msg, sizeof msg, "data bytes [%llu, %llu) belong to no tensor (gap before '%s')",
                     (unsigned long long)pos, (unsigned long long)order[i]->begin, order[i]->name);
            goto fail;
        }
        if (order[i]->begin < pos) {
            snprintf(msg, sizeof msg, "tensor '%s' (bytes [%llu, %llu)) overlaps tensor '%s'", order[i]->name,
                     (unsigned long long)order[i]->begin, (unsigned long long)order[i]->end, order[i - 1]->name);
            goto fail;
        }
        pos = order[i]->end;
    }
    if (pos != (size_t)j.data_size) {
        snprintf(msg, sizeof msg, "data section has %llu bytes but the tensors cover %llu",
                 (unsigned long long)j.data_size, (unsigned long long)pos);
        goto fail;
    }
    HIGAN_FREE(order);
    return HIGAN_OK;
fail:
    HIGAN_FREE(order);
    higan_safetensors_free(st);
    return higan__error(HIGAN_ERR_FORMAT, "safetensors %s: %s", src, msg);
}
HIGAN_DEF higan_status higan_safetensors_parse(higan_safetensors *st, const void *buf, size_t size) {
    unsigned char *copy;
    if (!st || (!buf && size)) return higan__error(HIGAN_ERR_ARG, "safetensors_parse: NULL argument");
    copy = (unsigned char *)HIGAN_MALLOC(size ? size : 1);
    if (!copy) { memset(st, 0, sizeof *st); return higan__error(HIGAN_ERR_NOMEM, "safetensors_parse: cannot allocate %llu bytes", (unsigned long long)size); }
    if (size) memcpy(copy, buf, size);
    return higan__st_parse_owned(st, copy, size, "buffer");
}
HIGAN_DEF higan_status higan_safetensors_load(higan_safetensors *st, const char *path) {
    FILE *f;
    unsigned char *buf;
    size_t cap = 1 << 16, len = 0;
    long hint;
    if (!st) return higan__error(HIGAN_ERR_ARG, "safetensors_load: NULL argument");
    memset(st, 0, sizeof *st);
    if (!path) return higan__error(HIGAN_ERR_ARG, "safetensors_load: NULL path");
    f = fopen(path, "rb");
    if (!f) return higan__error(HIGAN_ERR_IO, "cannot open '%s': %s", path, strerror(errno));
    /* The size is only a hint (ftell gives LONG_MAX for a directory on Linux): read until
       EOF, starting from the hinted size when it is plausible and can be allocated. */
    buf = NULL;
    if (fseek(f, 0, SEEK_END) == 0 && (hint = ftell(f)) >= 0 && hint < LONG_MAX &&
        (unsigned long)hint < (size_t)-1 / 4 && (size_t)hint + 1 > cap) {
        buf = (unsigned char *)HIGAN_MALLOC((size_t)hint + 1);
        if (buf) cap = (size_t)hint + 1;
    }
    rewind(f);
    if (!buf) buf = (unsigned char *)HIGAN_MALLOC(cap);
    if (!buf) { fclose(f); return higan__error(HIGAN_ERR_NOMEM, "cannot allocate %llu bytes to read '%s'", (unsigned long long)cap, path); }
    for (;;) {
        size_t got = fread(buf + len, 1, cap - len, f);
        len += got;
        if (len < cap) break;
        {
            unsigned char *grown = (unsigned char *)HIGAN_REALLOC(buf, cap * 2);
            if (!grown) { HIGAN_FREE(buf); fclose(f); return higan__error(HIGAN_ERR_NOMEM, "out of memory reading '%s'", path); }
            buf = grown;
            cap *= 2;
        }
    }
    if (ferror(f)) {
        int e = errno;
        HIGAN_FREE(buf);
        fclose(f);
        return higan__error(HIGAN_ERR_IO, "cannot read '%s': %s", path, strerror(e));
    }
    fclose(f);
    return higan__st_parse_owned(st, buf, len, path);
}
HIGAN_DEF const higan_st_tensor *higan_safetensors_find(const higan_safetensors *st, const char *name) {
    int i;
    if (!st || !name) return NULL;
    for (i = 0; i < st->count; ++i) if (!strcmp(st->tensors[i].name, name)) return &st->tensors[i];
    return NULL;
}
HIGAN_DEF const char *higan_safetensors_meta(const higan_safetensors *st, const char *key) {
    int i;
    if (!st || !key) return NULL;
    for (i = 0; i < st->meta_count; ++i) if (!strcmp(st->meta_keys[i], key)) return st->meta_values[i];
    return NULL;
}
static higan_status higan__st_lookup(const higan_safetensors *st, const char *name, int64_t numel,
                                     const void *out, const higan_st_tensor **t) {
    if (!st || !name || (!out && numel > 0)) return higan__error(HIGAN_ERR_ARG, "safetensors read: NULL argument");
    *t = higan_safetensors_find(st, name);
    if (!*t) return higan__error(HIGAN_ERR_ARG, "safetensors: no tensor named '%s'", name);
    if ((*t)->numel != numel)
        return higan__error(HIGAN_ERR_FORMAT, "safetensors: tensor '%s' has %lld elements, expected %lld",
                            name, (long long)(*t)->numel, (long long)numel);
    return HIGAN_OK;
}
HIGAN_DEF higan_status higan_safetensors_read_f32(const higan_safetensors *st, const char *name,
                                                  float *out, int64_t numel) {
    const higan_st_tensor *t;
    const unsigned char *p;
    int64_t i;
    higan_status s = higan__st_lookup(st, name, numel, out, &t);
    if (s != HIGAN_OK) return s;
    p = st->data + t->begin;
    switch (t->dtype) {
    case HIGAN_F32: for (i = 0; i < numel; ++i) out[i] = higan__st_f32_bits(higan__st_rd32(p + 4 * i)); break;
    case HIGAN_F16: for (i = 0; i < numel; ++i) out[i] = higan__st_half_to_float(higan__st_rd16(p + 2 * i)); break;
    case HIGAN_BF16: for (i = 0; i < numel; ++i) out[i] = higan__st_f32_bits((uint32_t)higan__st_rd16(p + 2 * i) << 16); break;
    case HIGAN_I64: for (i = 0; i < numel; ++i) out[i] = (float)(int64_t)higan__st_rd64(p + 8 * i); break;
    case HIGAN_I32: for (i = 0; i < numel; ++i) out[i] = (float)(int32_t)higan__st_rd32(p + 4 * i); break;
    case HIGAN_I16: for (i = 0; i < numel; ++i) out[i] = (float)(int16_t)higan__st_rd16(p + 2 * i); break;
    case HIGAN_U8: for (i = 0; i < numel; ++i) out[i] = (float)p[i]; break;
    }
    return HIGAN_OK;
}
HIGAN_DEF higan_status higan_safetensors_read_i64(const higan_safetensors *st, const char *name,
                                                  int64_t *out, int64_t numel) {
    const higan_st_tensor *t;
    const unsigned char *p;
    int64_t i;
    higan_status s = higan__st_lookup(st, name, numel, out, &t);
    if (s != HIGAN_OK) return s;
    p = st->data + t->begin;
    switch (t->dtype) {
    case HIGAN_I64: for (i = 0; i < numel; ++i) out[i] = (int64_t)higan__st_rd64(p + 8 * i); break;
    case HIGAN_I32: for (i = 0; i < numel; ++i) out[i] = (int32_t)higan__st_rd32(p + 4 * i); break;
    case HIGAN_I16: for (i = 0; i < numel; ++i) out[i] = (int16_t)higan__st_rd16(p + 2 * i); break;
    case HIGAN_U8: for (i = 0; i < numel; ++i) out[i] = p[i]; break;
    default:
        return higan__error(HIGAN_ERR_FORMAT, "safetensors: tensor '%s' has dtype %s, expected an integer dtype",
                            name, higan_dtype_name(t->dtype));
    }
    return HIGAN_OK;
}

/* ---- writer ------------------------------------------------------------------------------ */
HIGAN_DEF void higan_safetensors_writer_init(higan_safetensors_writer *w) { memset(w, 0, sizeof *w); }
HIGAN_DEF void higan_safetensors_writer_free(higan_safetensors_writer *w) {
    int i;
    if (!w) return;
    for (i = 0; i < w->count; ++i) HIGAN_FREE(w->entries[i].name);
    for (i = 0; i < w->meta_count; ++i) { HIGAN_FREE(w->meta_keys[i]); HIGAN_FREE(w->meta_values[i]); }
    HIGAN_FREE(w->entries);
    HIGAN_FREE(w->meta_keys);
    HIGAN_FREE(w->meta_values);
    memset(w, 0, sizeof *w);
}
/* Bytes of an entry; the shape was validated by writer_add. */
static uint64_t higan__st_entry_bytes(const higan_st_entry *e) {
    uint64_t n = 1;
    int d;
    for (d = 0; d < e->ndim; ++d) n *= (uint64_t)e->shape[d];
    return n * higan_dtype_size(e->dtype);
}
HIGAN_DEF higan_status higan_safetensors_writer_add(higan_safetensors_writer *w, const char *name,
        higan_dtype dtype, int ndim, const int64_t *shape, const void *data) {
    higan_st_entry *e;
    uint64_t numel = 1;
    int d, i;
    if (!w || !name) return higan__error(HIGAN_ERR_ARG, "safetensors writer: NULL argument");
    if (higan_dtype_size(dtype) == 0) return higan__error(HIGAN_ERR_ARG, "safetensors writer: '%s': invalid dtype %d", name, (int)dtype);
    if (ndim < 0 || ndim > HIGAN_ST_MAX_DIMS || (ndim > 0 && !shape))
        return higan__error(HIGAN_ERR_ARG, "safetensors writer: '%s': bad ndim %d", name, ndim);
    for (d = 0; d < ndim; ++d) {
        if (shape[d] < 0) return higan__error(HIGAN_ERR_ARG, "safetensors writer: '%s': negative dimension", name);
        if (shape[d] && numel > (uint64_t)(INT64_MAX / 8) / (uint64_t)shape[d])
            return higan__error(HIGAN_ERR_ARG, "safetensors writer: '%s': shape too large", name);
        numel *= (uint64_t)shape[d];
    }
    if (!data && numel > 0) return higan__error(HIGAN_ERR_ARG, "safetensors writer: '%s': NULL data", name);
    if (!strcmp(name, "__metadata__")) return higan__error(HIGAN_ERR_ARG, "safetensors writer: the name '__metadata__' is reserved");
    if (higan__st_utf8_check((const unsigned char *)name, strlen(name)) != strlen(name))
        return higan__error(HIGAN_ERR_ARG, "safetensors writer: tensor name '%s' is not valid UTF-8", name);
    for (i = 0; i < w->count; ++i)
        if (!strcmp(w->entries[i].name, name)) return higan__error(HIGAN_ERR_ARG, "safetensors writer: duplicate tensor name '%s'", name);
    if (w->count == w->capacity) {
        int nc = w->capacity ? 2 * w->capacity : 32;
        higan_st_entry *ne = (higan_st_entry *)HIGAN_REALLOC(w->entries, (size_t)nc * sizeof *ne);
        if (!ne) return higan__error(HIGAN_ERR_NOMEM, "safetensors writer: out of memory");
        w->entries = ne;
        w->capacity = nc;
    }
    e = &w->entries[w->count];
    memset(e, 0, sizeof *e);
    if (!(e->name = higan__st_strdup(name))) return higan__error(HIGAN_ERR_NOMEM, "safetensors writer: out of memory");
    e->dtype = dtype;
    e->ndim = ndim;
    for (d = 0; d < ndim; ++d) e->shape[d] = shape[d];
    e->data = data;
    ++w->count;
    return HIGAN_OK;
}
/* Sets a metadata string; a key set twice keeps the last value. */
HIGAN_DEF higan_status higan_safetensors_writer_meta(higan_safetensors_writer *w, const char *key, const char *value) {
    char *k, *v;
    int i;
    if (!w || !key || !value) return higan__error(HIGAN_ERR_ARG, "safetensors writer: NULL argument");
    if (higan__st_utf8_check((const unsigned char *)key, strlen(key)) != strlen(key) ||
        higan__st_utf8_check((const unsigned char *)value, strlen(value)) != strlen(value))
        return higan__error(HIGAN_ERR_ARG, "safetensors writer: metadata '%s' is not valid UTF-8", key);
    if (!(v = higan__st_strdup(value))) return higan__error(HIGAN_ERR_NOMEM, "safetensors writer: out of memory");
    for (i = 0; i < w->meta_count; ++i)
        if (!strcmp(w->meta_keys[i], key)) { HIGAN_FREE(w->meta_values[i]); w->meta_values[i] = v; return HIGAN_OK; }
    if (w->meta_count == w->meta_capacity) {
        int nc = w->meta_capacity ? 2 * w->meta_capacity : 8;
        char **nk = (char **)HIGAN_REALLOC(w->meta_keys, (size_t)nc * sizeof(char *));
        char **nv;
        if (nk) w->meta_keys = nk;
        nv = nk ? (char **)HIGAN_REALLOC(w->meta_values, (size_t)nc * sizeof(char *)) : NULL;
        if (nv) w->meta_values = nv;
        if (!nk || !nv) { HIGAN_FREE(v); return higan__error(HIGAN_ERR_NOMEM, "safetensors writer: out of memory"); }
        w->meta_capacity = nc;
    }
    if (!(k = higan__st_strdup(key))) { HIGAN_FREE(v); return higan__error(HIGAN_ERR_NOMEM, "safetensors writer: out of memory"); }
    w->meta_keys[w->meta_count] = k;
    w->meta_values[w->meta_count] = v;
    ++w->meta_count;
    return HIGAN_OK;
}
/* Writes n bytes of tensor data in little-endian order (byte-swapped on big-endian hosts). */
static int higan__st_write_data(FILE *f, const higan_st_entry *e, uint64_t n) {
    size_t es = higan_dtype_size(e->dtype);
    const unsigned char *p = (const unsigned char *)e->data;
    unsigned char chunk[4096];
    uint64_t done = 0;
    if (n == 0) return 1;
    if (es == 1 || higan__st_host_le()) return fwrite(p, 1, (size_t)n, f) == (size_t)n;
    while (done < n) {
        size_t m = (size_t)(n - done < sizeof chunk ? n - done : sizeof chunk), i, k;
        for (i = 0; i < m; i += es)
            for (k = 0; k < es; ++k) chunk[i + k] = p[done + i + es - 1 - k];
        if (fwrite(chunk, 1, m, f) != m) return 0;
        done += m;
    }
    return 1;
}
HIGAN_DEF higan_status higan_safetensors_writer_save(const higan_safetensors_writer *w, const char *path) {
    higan__st_sb h, tmp;
    uint64_t off = 0, total;
    unsigned char len8[8];
    FILE *f = NULL;
    int i, k, err = 0;
    const char *what = NULL;
    if (!w || !path) return higan__error(HIGAN_ERR_ARG, "safetensors save: NULL argument");
    memset(&h, 0, sizeof h);
    memset(&tmp, 0, sizeof tmp);
    /* header, tensors in insertion order */
    higan__st_sb_put(&h, "{", 1);
    if (w->meta_count > 0) {
        higan__st_sb_str(&h, "\"__metadata__\":{");
        for (i = 0; i < w->meta_count; ++i) {
            if (i) higan__st_sb_put(&h, ",", 1);
            higan__st_sb_json(&h, w->meta_keys[i]);
            higan__st_sb_put(&h, ":", 1);
            higan__st_sb_json(&h, w->meta_values[i]);
        }
        higan__st_sb_put(&h, "}", 1);
    }
    for (i = 0; i < w->count; ++i) {
        const higan_st_entry *e = &w->entries[i];
        uint64_t bytes = higan__st_entry_bytes(e);
        if (i || w->meta_count > 0) higan__st_sb_put(&h, ",", 1);
        higan__st_sb_json(&h, e->name);
        higan__st_sb_printf(&h, ":{\"dtype\":\"%s\",\"shape\":", higan_dtype_name(e->dtype));
        higan__st_sb_shape(&h, e->ndim, e->shape);
        higan__st_sb_printf(&h, ",\"data_offsets\":[%llu,%llu]}", (unsigned long long)off, (unsigned long long)(off + bytes));
        off += bytes;
    }
    higan__st_sb_put(&h, "}", 1);
    while (!h.oom && h.len % 8) higan__st_sb_put(&h, " ", 1);   /* keeps the data section 8-byte aligned */
    if (h.oom) return higan__error(HIGAN_ERR_NOMEM, "safetensors save '%s': out of memory", path);
    if ((uint64_t)h.len > HIGAN__ST_MAX_HEADER) {
        HIGAN_FREE(h.s);
        return higan__error(HIGAN_ERR_ARG, "safetensors save '%s': header of %llu bytes exceeds 100 MB", path, (unsigned long long)h.len);
    }
    total = h.len;
    for (k = 0; k < 8; ++k) len8[k] = (unsigned char)(total >> (8 * k));

    higan__st_sb_str(&tmp, path);
    higan__st_sb_str(&tmp, ".tmp");
    if (tmp.oom) { HIGAN_FREE(h.s); return higan__error(HIGAN_ERR_NOMEM, "safetensors save '%s': out of memory", path); }
    f = fopen(tmp.s, "wb");
    if (!f) { err = errno; what = "cannot create"; goto fail; }
    if (fwrite(len8, 1, 8, f) != 8 || fwrite(h.s, 1, h.len, f) != h.len) { err = errno; what = "cannot write"; goto fail; }
    for (i = 0; i < w->count; ++i)
        if (!higan__st_write_data(f, &w->entries[i], higan__st_entry_bytes(&w->entries[i]))) { err = errno; what = "cannot write"; goto fail; }
    if (fflush(f) != 0) { err = errno; what = "cannot write"; goto fail; }
    k = fclose(f);
    f = NULL;
    if (k != 0) { err = errno; what = "cannot close"; goto fail; }
    if (rename(tmp.s, path) != 0) {
#ifdef _WIN32
        /* Windows' rename does not replace an existing file; this fallback is not atomic. */
        if (!(remove(path) == 0 && rename(tmp.s, path) == 0))
#endif
        { err = errno; what = "cannot rename the temporary file onto"; goto fail; }
    }
    HIGAN_FREE(h.s);
    HIGAN_FREE(tmp.s);
    return HIGAN_OK;
fail:
    /* remove only the temporary file we created; what was at path stays untouched */
    if (f) fclose(f);
    if (strcmp(what, "cannot create") != 0) remove(tmp.s);
    higan__error(HIGAN_ERR_IO, "cannot save '%s': %s '%s': %s", path, what,
                 strcmp(what, "cannot rename the temporary file onto") == 0 ? path : tmp.s,
                 err ? strerror(err) : "I/O error");
    HIGAN_FREE(h.s);
    HIGAN_FREE(tmp.s);
    return HIGAN_ERR_IO;
}

/* ---- parameter stores ------------------------------------------------------------------ */
static const char *const higan__st_suffix[3] = {"", ".adam_m", ".adam_v"};
/* which: 0 value (or buffer), 1 adam_m, 2 adam_v */
static void *higan__st_param_ptr(const higan_params *p, const higan_param_entry *e, int which) {
    if (e->kind == HIGAN_BUFFER_I64) return p->ibuffer + e->offset;
    if (e->kind == HIGAN_BUFFER) return p->buffer + e->offset;
    return (which == 0 ? p->value : which == 1 ? p->adam_m : p->adam_v) + e->offset;
}
HIGAN_DEF higan_status higan_params_add_to_writer(const higan_params *p, higan_safetensors_writer *w,
        const char *prefix, const higan_adam *opt) {
    char *name, num[160];
    size_t plen, cap;
    int i, s, n0;
    higan_status st = HIGAN_OK;
    if (!p || !w) return higan__error(HIGAN_ERR_ARG, "params_add_to_writer: NULL argument");
    if (!p->allocated) return higan__error(HIGAN_ERR_ARG, "params_add_to_writer: the store is not allocated");
    /* a store trained on a backend: its host arrays are a cache, refreshed here (their contents
       change, the store as the caller sees it does not) */
    if (p->mirror_be)
        higan_params_download((higan_params *)(uintptr_t)p, HIGAN_PARAMS_VALUES | HIGAN_PARAMS_BUFFERS |
                              (opt ? HIGAN_PARAMS_ADAM : 0));
    if (!prefix) prefix = "";
    plen = strlen(prefix);
    cap = plen + HIGAN_MAX_NAME + 16;
    name = (char *)HIGAN_MALLOC(cap);
    if (!name) return higan__error(HIGAN_ERR_NOMEM, "params_add_to_writer: out of memory");
    n0 = w->count;
    for (i = 0; i < p->count && st == HIGAN_OK; ++i) {
        const higan_param_entry *e = &p->entries[i];
        int ns = (opt && e->kind == HIGAN_PARAM) ? 3 : 1;
        for (s = 0; s < ns && st == HIGAN_OK; ++s) {
            snprintf(name, cap, "%s%s%s", prefix, e->name, higan__st_suffix[s]);
            st = higan_safetensors_writer_add(w, name, e->kind == HIGAN_BUFFER_I64 ? HIGAN_I64 : HIGAN_F32,
                                              e->ndim, e->shape, higan__st_param_ptr(p, e, s));
        }
    }
    if (st == HIGAN_OK && opt) {
        /* the step is what load restores; the hyperparameters are for people reading the file */
        snprintf(name, cap, "%sadam_step", prefix);
        snprintf(num, sizeof num, "%lld", (long long)opt->step);
        st = higan_safetensors_writer_meta(w, name, num);
        if (st == HIGAN_OK) {
            snprintf(name, cap, "%sadam_hparams", prefix);
            snprintf(num, sizeof num, "lr=%.9g beta1=%.9g beta2=%.9g eps=%.9g",
                     (double)opt->lr, (double)opt->beta1, (double)opt->beta2, (double)opt->eps);
            st = higan_safetensors_writer_meta(w, name, num);
        }
    }
    if (st != HIGAN_OK)   /* leave the writer's tensors as they were */
        while (w->count > n0) HIGAN_FREE(w->entries[--w->count].name);
    HIGAN_FREE(name);
    return st;
}

/* Problem lists for higan_params_load: items kept NUL-separated, cut to fit at the end. */
typedef struct { higan__st_sb sb; int n; } higan__st_list;
static void higan__st_list_add(higan__st_list *l, const char *item) {
    higan__st_sb_put(&l->sb, item, strlen(item) + 1);
    ++l->n;
}
/* Appends whole items while they fit in budget bytes (at least one), then "... (N more)". */
static void higan__st_list_emit(higan__st_sb *msg, const higan__st_list *l, size_t budget) {
    size_t at = 0, used = 0;
    int k;
    for (k = 0; k < l->n && l->sb.s && !l->sb.oom; ++k) {
        size_t n = strlen(l->sb.s + at);
        if (k > 0 && used + n + 2 > budget) break;
        if (k > 0) higan__st_sb_put(msg, ", ", 2);
        higan__st_sb_put(msg, l->sb.s + at, n);
        used += n + 2;
        at += n + 1;
    }
    if (k < l->n) higan__st_sb_printf(msg, ", ... (%d more)", l->n - k);
}
/* Checks the tensor called name in st against a store entry; 1 if it can be loaded. */
static int higan__st_check_one(const higan_safetensors *st, const char *name, const higan_param_entry *e,
                               higan__st_list *missing, higan__st_list *shaped, higan__st_list *typed) {
    const higan_st_tensor *t = higan_safetensors_find(st, name);
    higan__st_sb item;
    int d, same;
    if (!t) { higan__st_list_add(missing, name); return 0; }
    same = t->ndim == e->ndim;
    for (d = 0; same && d < e->ndim; ++d) same = t->shape[d] == e->shape[d];
    /* PyTorch stores some one-element tensors (num_batches_tracked) as 0-d: [] matches [1] */
    if (!same && t->numel == 1 && e->numel == 1) same = 1;
    memset(&item, 0, sizeof item);
    if (!same) {
        higan__st_sb_str(&item, name);
        higan__st_sb_str(&item, " (file ");
        higan__st_sb_shape(&item, t->ndim, t->shape);
        higan__st_sb_str(&item, ", model ");
        higan__st_sb_shape(&item, e->ndim, e->shape);
        higan__st_sb_str(&item, ")");
        higan__st_list_add(shaped, item.s && !item.oom ? item.s : name);
    } else if (e->kind == HIGAN_BUFFER_I64 ? higan__st_is_float(t->dtype) : !higan__st_is_float(t->dtype)) {
        higan__st_sb_str(&item, name);
        higan__st_sb_printf(&item, " (file %s, model %s)", higan_dtype_name(t->dtype),
                            e->kind == HIGAN_BUFFER_I64 ? "an integer dtype" : "F32/F16/BF16");
        higan__st_list_add(typed, item.s && !item.oom ? item.s : name);
        same = 0;
    }
    HIGAN_FREE(item.s);
    return same;
}
static int higan__st_ends_with(const char *s, size_t n, const char *suf) {
    size_t k = strlen(suf);
    return n > k && !memcmp(s + n - k, suf, k);
}
HIGAN_DEF higan_status higan_params_load(higan_params *p, const higan_safetensors *st,
        const char *prefix, higan_adam *opt) {
    static const char *const label[5] = {"missing", "unexpected", "mis-shaped", "wrong dtype", "metadata"};
    higan__st_list lists[5];   /* in the order of label */
    higan__st_sb msg, item;
    char *name, base[HIGAN_MAX_NAME];
    size_t plen, cap;
    int i, s, l, problems = 0, nonempty = 0;
    int64_t step = 0;
    higan_status rc = HIGAN_OK;
    if (!p || !st) return higan__error(HIGAN_ERR_ARG, "params_load: NULL argument");
    if (!p->allocated) return higan__error(HIGAN_ERR_ARG, "params_load: the store is not allocated");
    if (!prefix) prefix = "";
    plen = strlen(prefix);
    cap = plen + HIGAN_MAX_NAME + 16;
    name = (char *)HIGAN_MALLOC(cap);
    if (!name) return higan__error(HIGAN_ERR_NOMEM, "params_load: out of memory");
    memset(lists, 0, sizeof lists);
    /* 1. validate everything; nothing is written to p unless all checks pass */
    for (i = 0; i < p->count; ++i) {
        const higan_param_entry *e = &p->entries[i];
        int ns = (opt && e->kind == HIGAN_PARAM) ? 3 : 1;
        for (s = 0; s < ns; ++s) {
            snprintf(name, cap, "%s%s%s", prefix, e->name, higan__st_suffix[s]);
            higan__st_check_one(st, name, e, &lists[0], &lists[2], &lists[3]);
        }
    }
    for (i = 0; i < st->count; ++i) {
        const char *tn = st->tensors[i].name, *rest;
        size_t rl;
        if (strncmp(tn, prefix, plen) != 0) continue;
        rest = tn + plen;
        if (higan_params_find(p, rest) >= 0) continue;
        rl = strlen(rest);
        /* optimizer state of a known parameter is expected (and ignored when opt is NULL) */
        if ((higan__st_ends_with(rest, rl, ".adam_m") || higan__st_ends_with(rest, rl, ".adam_v")) && rl - 7 < sizeof base) {
            int h;
            memcpy(base, rest, rl - 7);
            base[rl - 7] = 0;
            h = higan_params_find(p, base);
            if (h >= 0 && p->entries[h].kind == HIGAN_PARAM) continue;
        }
        higan__st_list_add(&lists[1], tn);
    }
    if (opt) {
        const char *v;
        snprintf(name, cap, "%sadam_step", prefix);
        v = higan_safetensors_meta(st, name);
        memset(&item, 0, sizeof item);
        if (!v) {
            higan__st_sb_printf(&item, "'%s' missing", name);
        } else {
            const char *c = v;
            int ok = *c != 0;
            for (; *c && ok; ++c) {
                if (*c < '0' || *c > '9' || step > (INT64_MAX - (*c - '0')) / 10) ok = 0;
                else step = step * 10 + (*c - '0');
            }
            if (!ok) higan__st_sb_printf(&item, "'%s' = '%.40s' is not a step count", name, v);
        }
        if (item.len) higan__st_list_add(&lists[4], item.s);
        HIGAN_FREE(item.s);
    }
    for (l = 0; l < 5; ++l) { problems += lists[l].n; nonempty += lists[l].n > 0; }
    if (problems) {
        /* split what higan_last_error can hold (1 KB) between the non-empty lists */
        size_t budget = 860 / (size_t)nonempty;
        int first = 1;
        memset(&msg, 0, sizeof msg);
        higan__st_sb_printf(&msg, "params_load (prefix '%.40s'): %d problem%s", prefix, problems, problems > 1 ? "s" : "");
        for (l = 0; l < 5; ++l) {
            if (!lists[l].n) continue;
            higan__st_sb_printf(&msg, "%s %s %d: ", first ? ":" : ";", label[l], lists[l].n);
            higan__st_list_emit(&msg, &lists[l], budget);
            first = 0;
        }
        rc = higan__error(HIGAN_ERR_FORMAT, "%s", msg.s && !msg.oom ? msg.s : "params_load: checkpoint does not match (out of memory listing the problems)");
        HIGAN_FREE(msg.s);
    } else {
        /* 2. copy; every read is known to succeed */
        for (i = 0; i < p->count && rc == HIGAN_OK; ++i) {
            const higan_param_entry *e = &p->entries[i];
            int ns = (opt && e->kind == HIGAN_PARAM) ? 3 : 1;
            for (s = 0; s < ns && rc == HIGAN_OK; ++s) {
                snprintf(name, cap, "%s%s%s", prefix, e->name, higan__st_suffix[s]);
                rc = e->kind == HIGAN_BUFFER_I64
                   ? higan_safetensors_read_i64(st, name, (int64_t *)higan__st_param_ptr(p, e, s), e->numel)
                   : higan_safetensors_read_f32(st, name, (float *)higan__st_param_ptr(p, e, s), e->numel);
            }
        }
        if (rc == HIGAN_OK && opt) opt->step = step;
        if (rc == HIGAN_OK && p->mirror_be)   /* a store on a backend: the loaded values there too */
            higan_params_upload(p, HIGAN_PARAMS_VALUES | HIGAN_PARAMS_BUFFERS | HIGAN_PARAMS_IBUFFERS |
                                   (opt ? HIGAN_PARAMS_ADAM : 0));
    }
    for (l = 0; l < 5; ++l) HIGAN_FREE(lists[l].sb.s);
    HIGAN_FREE(name);
    return rc;
}
/* ==== GEMM, CONV2D, LINEAR (implementation) ================================================
   Layout of this fragment:
     1. SIMD vocabulary: one set of inline helpers per ISA (scalar, AVX2+FMA, AVX-512F),
        named higan__v<op>_<isa>, plus HIGAN__TGT_<isa> (the function target attribute) and
        HIGAN__VW_<isa> (floats per vector). Kernels are written once as macro templates over
        <isa> and instantiated for every ISA compiled in, all in one binary; the run-time
        dispatch (higan__ops) picks the instantiation for higan_cpu_level().
     2. Kernels written once: GEMM micro-kernel, vector add / sum with a scalar tail, the
        direct-convolution kernels (channel-vector, pixel-vector, dot product) and the 8 x 8
        transposes; the bf16 GEMM kernels (AVX512-BF16 vdpbf16ps; AMX-BF16, never run on the
        machine this was written on: it has no AMX) and their panel conversions; the level
        tables (higan__ops) and the precision's GEMM kernel (higan__gemm_k).
     3. The blocked GEMM driver (BLIS-style packing, scalar code shared by every level; in
        bf16 the packed panels are converted in place for the bf16 kernels).
     4. higan_gemm / higan_gemm_ref(_bf16), conv2d, linear, tape ops.
     5. (within 4) the direct convolutions and the choice between them and the GEMM. */
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
/* lane masks (the first n lanes): the pixel-vector kernels' row tails */
typedef __m256i higan__mt_avx2;
static inline HIGAN__TGT_avx2 __m256i higan__vmask_avx2(int n) {
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}
static inline HIGAN__TGT_avx2 __m256 higan__vloadm_avx2(const float *p, __m256i m) { return _mm256_maskload_ps(p, m); }
static inline HIGAN__TGT_avx2 void higan__vstorem_avx2(float *p, __m256 v, __m256i m) { _mm256_maskstore_ps(p, m, v); }
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
typedef __mmask16 higan__mt_avx512;
static inline HIGAN__TGT_avx512 __mmask16 higan__vmask_avx512(int n) {
    return (__mmask16)(n >= 16 ? 0xFFFFu : (1u << n) - 1u);
}
static inline HIGAN__TGT_avx512 __m512 higan__vloadm_avx512(const float *p, __mmask16 m) { return _mm512_maskz_loadu_ps(m, p); }
static inline HIGAN__TGT_avx512 void higan__vstorem_avx512(float *p, __m512 v, __mmask16 m) { _mm512_mask_storeu_ps(p, m, v); }
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

/* Direct-convolution micro-kernel: C[MR, NV*VW] (row stride ldc) = (or += when beta) A B, where
   row i of A is read in place: A(i, k) = arow[i][aoff[k]] (a pixel's window in a zero-padded
   image, or one (ic, kh, kw) row of col(x): see section 5), broadcast; B is a packed panel
   [kc][NV*VW] of channels. Rows past the end of a tile point at a valid row (their C rows are
   scratch). */
#define HIGAN__DEFINE_UKR_DIRECT(ISA, NAME, MR, NV)                                             \
static HIGAN__TGT_##ISA void NAME(int64_t kc, const float *const *arow, const int32_t *aoff,    \
                                  const float *b, float *c, int64_t ldc, int beta) {           \
    higan__vt_##ISA acc[MR][NV], bv[NV];                                                        \
    const float *ap[MR];                                                                        \
    int64_t k;                                                                                  \
    int i, v;                                                                                   \
    HIGAN__UNROLL for (i = 0; i < MR; ++i) ap[i] = arow[i];                                     \
    HIGAN__UNROLL for (i = 0; i < MR; ++i)                                                      \
        HIGAN__UNROLL for (v = 0; v < NV; ++v) acc[i][v] = higan__vzero_##ISA();                \
    for (k = 0; k < kc; ++k) {                                                                  \
        const int64_t o = aoff[k];                                                              \
        HIGAN__UNROLL for (v = 0; v < NV; ++v) bv[v] = higan__vload_##ISA(b + v * HIGAN__VW_##ISA); \
        HIGAN__UNROLL for (i = 0; i < MR; ++i) {                                                \
            higan__vt_##ISA ai = higan__vset1_##ISA(ap[i][o]);                                  \
            HIGAN__UNROLL for (v = 0; v < NV; ++v)                                              \
                acc[i][v] = higan__vfma_##ISA(ai, bv[v], acc[i][v]);                            \
        }                                                                                       \
        b += NV * HIGAN__VW_##ISA;                                                              \
    }                                                                                           \
    if (!beta) {                                                                                \
        HIGAN__UNROLL for (i = 0; i < MR; ++i) HIGAN__UNROLL for (v = 0; v < NV; ++v)          \
            higan__vstore_##ISA(c + i * ldc + v * HIGAN__VW_##ISA, acc[i][v]);                  \
    } else {                                                                                    \
        HIGAN__UNROLL for (i = 0; i < MR; ++i) HIGAN__UNROLL for (v = 0; v < NV; ++v) {        \
            float *cp = c + i * ldc + v * HIGAN__VW_##ISA;                                      \
            higan__vstore_##ISA(cp, higan__vadd_##ISA(acc[i][v], higan__vload_##ISA(cp)));      \
        }                                                                                       \
    }                                                                                           \
}

/* Pixel-vector micro-kernel (direct convolution with few output channels, section 5):
   C rows i < MR (row stride ldc) at NV vectors of VW output pixels each:
       C[i][v] (=, or += with beta) bias[i] + sum_k a[k][i] * bvec[v][koff[k] .. + VW)
   a: packed weights [kc][MR]; bvec[v]: the first input pixel of vector v in the padded image
   (VW consecutive output pixels of one row read VW consecutive inputs at stride 1); the
   stores are masked to lanes[v] pixels and to the first `rows` rows. */
#define HIGAN__DEFINE_UKR_PIX(ISA, NAME, MR, NV)                                                \
static HIGAN__TGT_##ISA void NAME(int64_t kc, const float *a, const float *const *bvec,         \
        const int32_t *koff, float *const *cvec, int64_t ldc, const int *lanes, int beta,       \
        int rows, const float *bias) {                                                          \
    higan__vt_##ISA acc[MR][NV], bv[NV];                                                        \
    const float *bp[NV];                                                                        \
    int64_t k;                                                                                  \
    int i, v;                                                                                   \
    HIGAN__UNROLL for (v = 0; v < NV; ++v) bp[v] = bvec[v];                                     \
    HIGAN__UNROLL for (i = 0; i < MR; ++i) {                                                    \
        const higan__vt_##ISA b0 = higan__vset1_##ISA(bias[i]);                                 \
        HIGAN__UNROLL for (v = 0; v < NV; ++v) acc[i][v] = b0;                                  \
    }                                                                                           \
    for (k = 0; k < kc; ++k) {                                                                  \
        const int64_t o = koff[k];                                                              \
        HIGAN__UNROLL for (v = 0; v < NV; ++v) bv[v] = higan__vload_##ISA(bp[v] + o);           \
        HIGAN__UNROLL for (i = 0; i < MR; ++i) {                                                \
            higan__vt_##ISA ai = higan__vset1_##ISA(a[i]);                                      \
            HIGAN__UNROLL for (v = 0; v < NV; ++v)                                              \
                acc[i][v] = higan__vfma_##ISA(ai, bv[v], acc[i][v]);                            \
        }                                                                                       \
        a += MR;                                                                                \
    }                                                                                           \
    HIGAN__UNROLL for (v = 0; v < NV; ++v) {                                                    \
        const higan__mt_##ISA m = higan__vmask_##ISA(lanes[v]);                                 \
        HIGAN__UNROLL for (i = 0; i < MR; ++i) {                                                \
            float *cp = cvec[v] + i * ldc;                                                      \
            if (i >= rows || !lanes[v]) continue;                                               \
            if (beta) acc[i][v] = higan__vadd_##ISA(acc[i][v], higan__vloadm_##ISA(cp, m));     \
            higan__vstorem_##ISA(cp, acc[i][v], m);                                             \
        }                                                                                       \
    }                                                                                           \
}
/* Dot-product micro-kernel (weight gradient with few output channels): MRO x MRK vector
   partial sums part[(i*MRK + j)*VW ..] += sum over the pixel vectors t of
   drow[i][dyoff[t] ..] * (xb + koff[j])[xoff[t] ..], both loads masked to lanes[t] (the lanes
   past a row's end add 0). */
#define HIGAN__DEFINE_UKR_DOT(ISA, NAME, MRO, MRK)                                              \
static HIGAN__TGT_##ISA void NAME(int64_t nvec, const int32_t *xoff, const int64_t *dyoff,      \
        const int *lanes, const float *xb, const int32_t *koff, const float *const *drow,       \
        float *part) {                                                                          \
    higan__vt_##ISA acc[MRO][MRK], dv[MRO];                                                     \
    const float *kp[MRK], *dp[MRO];                                                             \
    int64_t t;                                                                                  \
    int i, j;                                                                                   \
    HIGAN__UNROLL for (j = 0; j < MRK; ++j) kp[j] = xb + koff[j];                               \
    HIGAN__UNROLL for (i = 0; i < MRO; ++i) dp[i] = drow[i];                                    \
    HIGAN__UNROLL for (i = 0; i < MRO; ++i) HIGAN__UNROLL for (j = 0; j < MRK; ++j)             \
        acc[i][j] = higan__vload_##ISA(part + (i * MRK + j) * HIGAN__VW_##ISA);                 \
    for (t = 0; t < nvec; ++t) {                                                                \
        const higan__mt_##ISA m = higan__vmask_##ISA(lanes[t]);                                 \
        const int64_t xo = xoff[t], yo = dyoff[t];                                              \
        HIGAN__UNROLL for (i = 0; i < MRO; ++i) dv[i] = higan__vloadm_##ISA(dp[i] + yo, m);     \
        HIGAN__UNROLL for (j = 0; j < MRK; ++j) {                                               \
            const higan__vt_##ISA xv = higan__vloadm_##ISA(kp[j] + xo, m);                      \
            HIGAN__UNROLL for (i = 0; i < MRO; ++i)                                             \
                acc[i][j] = higan__vfma_##ISA(dv[i], xv, acc[i][j]);                            \
        }                                                                                       \
    }                                                                                           \
    HIGAN__UNROLL for (i = 0; i < MRO; ++i) HIGAN__UNROLL for (j = 0; j < MRK; ++j)             \
        higan__vstore_##ISA(part + (i * MRK + j) * HIGAN__VW_##ISA, acc[i][j]);                 \
}

/* dst[c * ldd + r] (mode 0: =, 1: +=, 2: = ... + bias[c]) src[r * lds + c] for r < rows,
   c < cols: the layout changes of the direct convolution (section 5), in 8 x 8 blocks
   transposed in AVX registers, scalar at the edges. x86 levels only. */
#define HIGAN__DEFINE_TRANSPOSE(ISA)                                                            \
static HIGAN__TGT_##ISA void higan__transpose_##ISA(float *dst, int64_t ldd, const float *src,  \
        int64_t lds, int64_t rows, int64_t cols, int mode, const float *bias) {                \
    const int64_t r8 = rows & ~(int64_t)7, c8 = cols & ~(int64_t)7;                             \
    int64_t r0, c0, r, c;                                                                       \
    /* channel blocks outer: each destination row is finished before the next (rows of dst    \
       may be a multiple of 4 KB apart and would evict each other) */                          \
    for (c0 = 0; c0 < c8; c0 += 8) {                                                            \
        for (r0 = 0; r0 < r8; r0 += 8) {                                                        \
            __m256 v[8], t[8], u[8];                                                            \
            int i;                                                                              \
            for (i = 0; i < 8; ++i) v[i] = _mm256_loadu_ps(src + (r0 + i) * lds + c0);          \
            for (i = 0; i < 8; i += 2) {                                                        \
                t[i] = _mm256_unpacklo_ps(v[i], v[i + 1]);                                      \
                t[i + 1] = _mm256_unpackhi_ps(v[i], v[i + 1]);                                  \
            }                                                                                   \
            for (i = 0; i < 8; i += 4) {                                                        \
                u[i] = _mm256_shuffle_ps(t[i], t[i + 2], _MM_SHUFFLE(1, 0, 1, 0));              \
                u[i + 1] = _mm256_shuffle_ps(t[i], t[i + 2], _MM_SHUFFLE(3, 2, 3, 2));          \
                u[i + 2] = _mm256_shuffle_ps(t[i + 1], t[i + 3], _MM_SHUFFLE(1, 0, 1, 0));      \
                u[i + 3] = _mm256_shuffle_ps(t[i + 1], t[i + 3], _MM_SHUFFLE(3, 2, 3, 2));      \
            }                                                                                   \
            for (i = 0; i < 4; ++i) {                                                           \
                v[i] = _mm256_permute2f128_ps(u[i], u[i + 4], 0x20);                            \
                v[i + 4] = _mm256_permute2f128_ps(u[i], u[i + 4], 0x31);                        \
            }                                                                                   \
            for (i = 0; i < 8; ++i) {                                                           \
                float *d = dst + (c0 + i) * ldd + r0;                                           \
                if (mode == 1) v[i] = _mm256_add_ps(v[i], _mm256_loadu_ps(d));                  \
                else if (mode == 2) v[i] = _mm256_add_ps(v[i], _mm256_set1_ps(bias[c0 + i]));   \
                _mm256_storeu_ps(d, v[i]);                                                      \
            }                                                                                   \
        }                                                                                       \
        for (c = c0; c < c0 + 8; ++c)                                                           \
            for (r = r8; r < rows; ++r) {                                                       \
                float *d = dst + c * ldd + r;                                                   \
                const float x = src[r * lds + c];                                               \
                *d = mode == 1 ? *d + x : mode == 2 ? x + bias[c] : x;                          \
            }                                                                                   \
    }                                                                                           \
    for (c = c8; c < cols; ++c)                                                                 \
        for (r = 0; r < rows; ++r) {                                                            \
            float *d = dst + c * ldd + r;                                                       \
            const float x = src[r * lds + c];                                                   \
            *d = mode == 1 ? *d + x : mode == 2 ? x + bias[c] : x;                              \
        }                                                                                       \
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
/* direct-conv tiles: 6 rows x 1..NV vectors of channels (narrower panels for the last
   channels) */
HIGAN__DEFINE_TRANSPOSE(avx2)
HIGAN__DEFINE_UKR_DIRECT(avx2, higan__ukrd_avx2_1, 6, 1)
HIGAN__DEFINE_UKR_DIRECT(avx2, higan__ukrd_avx2_2, 6, 2)
/* pixel-vector tiles MR x NV (MR 1, 2, 4, 6 output channels) and dot tiles MRO x MRK */
HIGAN__DEFINE_UKR_PIX(avx2, higan__ukrp_avx2_1, 1, 8)
HIGAN__DEFINE_UKR_PIX(avx2, higan__ukrp_avx2_2, 2, 6)
HIGAN__DEFINE_UKR_PIX(avx2, higan__ukrp_avx2_4, 4, 3)
HIGAN__DEFINE_UKR_PIX(avx2, higan__ukrp_avx2_6, 6, 2)
HIGAN__DEFINE_UKR_DOT(avx2, higan__ukrt_avx2_1, 1, 8)
HIGAN__DEFINE_UKR_DOT(avx2, higan__ukrt_avx2_2, 2, 5)
HIGAN__DEFINE_UKR_DOT(avx2, higan__ukrt_avx2_4, 4, 2)
#  ifdef HIGAN__GEMM_AVX512
HIGAN__DEFINE_UKR(avx512, higan__ukr_avx512, 6, 4)
HIGAN__DEFINE_VEC_OPS(avx512)
HIGAN__DEFINE_TRANSPOSE(avx512)
HIGAN__DEFINE_UKR_DIRECT(avx512, higan__ukrd_avx512_1, 6, 1)
HIGAN__DEFINE_UKR_DIRECT(avx512, higan__ukrd_avx512_2, 6, 2)
HIGAN__DEFINE_UKR_DIRECT(avx512, higan__ukrd_avx512_3, 6, 3)
HIGAN__DEFINE_UKR_DIRECT(avx512, higan__ukrd_avx512_4, 6, 4)
HIGAN__DEFINE_UKR_PIX(avx512, higan__ukrp_avx512_1, 1, 8)
HIGAN__DEFINE_UKR_PIX(avx512, higan__ukrp_avx512_2, 2, 8)
HIGAN__DEFINE_UKR_PIX(avx512, higan__ukrp_avx512_4, 4, 6)
HIGAN__DEFINE_UKR_PIX(avx512, higan__ukrp_avx512_6, 6, 4)
HIGAN__DEFINE_UKR_PIX(avx512, higan__ukrp_avx512_8, 8, 3)
HIGAN__DEFINE_UKR_DOT(avx512, higan__ukrt_avx512_1, 1, 12)
HIGAN__DEFINE_UKR_DOT(avx512, higan__ukrt_avx512_2, 2, 8)
HIGAN__DEFINE_UKR_DOT(avx512, higan__ukrt_avx512_4, 4, 5)
#  endif
#endif

#define HIGAN__MAX_MR 32   /* the AMX tile; 6 elsewhere */
#define HIGAN__MAX_NR 64
/* ---- bf16 GEMM micro-kernels (HIGAN_PRECISION_BF16) -----------------------------------------
   The driver packs fp32 panels as always, then converts them in place (higan__bf16_panels):
   A panels [kc][mr] -> [ceil(kc/2)][mr][2] bf16 (K pairs), B panels [kc][nr] ->
   [ceil(kc/2)][nr][2] (the pairs of vdpbf16ps; K padded with a zero). Each pair of A is one
   32-bit broadcast; vdpbf16ps adds a0*b0 + a1*b1 (exact bf16 products) to fp32 accumulators. */
#ifdef HIGAN__BF16_KERNELS
#  define HIGAN__TGT_bf16 __attribute__((target("avx512f,avx512bf16,avx512bw,avx512vl,avx2,fma")))
static HIGAN__TGT_bf16 void higan__ukr_bf16(int64_t kc, const float *a, const float *b, float *c,
                                            int64_t ldc, float beta) {
    __m512 acc[6][4], bv[4];
    const int64_t kp = (kc + 1) / 2;
    int64_t k;
    int i, v;
    HIGAN__UNROLL for (i = 0; i < 6; ++i) HIGAN__UNROLL for (v = 0; v < 4; ++v) acc[i][v] = _mm512_setzero_ps();
    for (k = 0; k < kp; ++k) {
        HIGAN__UNROLL for (v = 0; v < 4; ++v) bv[v] = _mm512_loadu_ps(b + v * 16);
        HIGAN__UNROLL for (i = 0; i < 6; ++i) {
            const __m512 ai = _mm512_set1_ps(a[i]);   /* the bf16 pair (k, k+1) of row i */
            HIGAN__UNROLL for (v = 0; v < 4; ++v)
                acc[i][v] = _mm512_dpbf16_ps(acc[i][v], (__m512bh)ai, (__m512bh)bv[v]);
        }
        a += 6;
        b += 64;
    }
    HIGAN__UNROLL for (i = 0; i < 6; ++i) HIGAN__UNROLL for (v = 0; v < 4; ++v) {
        float *cp = c + i * ldc + v * 16;
        if (beta == 0.0f) _mm512_storeu_ps(cp, acc[i][v]);
        else if (beta == 1.0f) _mm512_storeu_ps(cp, _mm512_add_ps(acc[i][v], _mm512_loadu_ps(cp)));
        else _mm512_storeu_ps(cp, _mm512_add_ps(acc[i][v], _mm512_mul_ps(_mm512_set1_ps(beta), _mm512_loadu_ps(cp))));
    }
}
/* One panel [kc][w] fp32 -> [ceil(kc/2)][w][2] bf16 in place, w a multiple of 16: rows 2k and
   2k+1 are converted together (vcvtne2ps2bf16: round to nearest even, denormals as zero) and
   interleaved; pair row k lands at word k*w, never past the rows still to be read. */
static HIGAN__TGT_bf16 void higan__bf16_pairs_avx512(float *p, int w, int64_t kc) {
    const __m512i idx = _mm512_set_epi16(31, 15, 30, 14, 29, 13, 28, 12, 27, 11, 26, 10, 25, 9, 24, 8,
                                         23, 7, 22, 6, 21, 5, 20, 4, 19, 3, 18, 2, 17, 1, 16, 0);
    const int64_t kp = (kc + 1) / 2;
    int64_t k;
    int g;
    for (k = 0; k < kp; ++k) {
        __m512i out[HIGAN__MAX_NR / 16];
        const float *r0 = p + 2 * k * w, *r1 = r0 + w;
        for (g = 0; g < w / 16; ++g) {
            const __m512 lo = _mm512_loadu_ps(r0 + 16 * g);
            const __m512 hi = 2 * k + 1 < kc ? _mm512_loadu_ps(r1 + 16 * g) : _mm512_setzero_ps();
            out[g] = _mm512_permutexvar_epi16(idx, (__m512i)_mm512_cvtne2ps_pbh(hi, lo));
        }
        for (g = 0; g < w / 16; ++g) _mm512_storeu_si512((void *)(p + k * w + 16 * g), out[g]);
    }
}
/* bf16 direct convolutions (channel vectors; HIGAN_PRECISION_BF16 at AVX512_BF16 levels): the
   vocabulary "bf16" is AVX-512 whose multiply-add is vdpbf16ps on 32-bit words holding bf16
   pairs, so HIGAN__DEFINE_UKR_DIRECT gives the forward / dgrad kernel: A words are channel
   pairs of the padded image (one broadcast per pixel and K pair), B words weight pairs. */
#define HIGAN__VW_bf16 16
typedef __m512 higan__vt_bf16;
static inline HIGAN__TGT_bf16 __m512 higan__vzero_bf16(void) { return _mm512_setzero_ps(); }
static inline HIGAN__TGT_bf16 __m512 higan__vload_bf16(const float *p) { return _mm512_loadu_ps(p); }
static inline HIGAN__TGT_bf16 void higan__vstore_bf16(float *p, __m512 v) { _mm512_storeu_ps(p, v); }
static inline HIGAN__TGT_bf16 __m512 higan__vset1_bf16(float x) { return _mm512_set1_ps(x); }   /* bits kept */
static inline HIGAN__TGT_bf16 __m512 higan__vfma_bf16(__m512 a, __m512 b, __m512 c) {
    return _mm512_dpbf16_ps(c, (__m512bh)a, (__m512bh)b);
}
static inline HIGAN__TGT_bf16 __m512 higan__vadd_bf16(__m512 a, __m512 b) { return _mm512_add_ps(a, b); }
HIGAN__DEFINE_UKR_DIRECT(bf16, higan__ukrd_bf16_1, 6, 1)
HIGAN__DEFINE_UKR_DIRECT(bf16, higan__ukrd_bf16_2, 6, 2)
HIGAN__DEFINE_UKR_DIRECT(bf16, higan__ukrd_bf16_3, 6, 3)
HIGAN__DEFINE_UKR_DIRECT(bf16, higan__ukrd_bf16_4, 6, 4)
/* The wgrad kernel: K runs over pairs of neighbouring output pixels, so A (a row (ic, kh, kw)
   of col(x) in the plain bf16 padded image) is one unaligned 32-bit load at arow[i] + aoff[k]
   (elements of 2 bytes); B words are dy pairs of those pixels [kp][NV*16]. */
#define HIGAN__DEFINE_UKR_DIRECT_W16(NAME, MR, NV)                                              \
static HIGAN__TGT_bf16 void NAME(int64_t kc, const uint16_t *const *arow, const int32_t *aoff,   \
                                 const float *b, float *c, int64_t ldc, int beta) {             \
    __m512 acc[MR][NV], bv[NV];                                                                 \
    const uint16_t *ap[MR];                                                                     \
    int64_t k;                                                                                  \
    int i, v;                                                                                   \
    HIGAN__UNROLL for (i = 0; i < MR; ++i) ap[i] = arow[i];                                     \
    HIGAN__UNROLL for (i = 0; i < MR; ++i)                                                      \
        HIGAN__UNROLL for (v = 0; v < NV; ++v) acc[i][v] = _mm512_setzero_ps();                 \
    for (k = 0; k < kc; ++k) {                                                                  \
        const int64_t o = aoff[k];                                                              \
        HIGAN__UNROLL for (v = 0; v < NV; ++v) bv[v] = _mm512_loadu_ps(b + v * 16);             \
        HIGAN__UNROLL for (i = 0; i < MR; ++i) {                                                \
            int32_t wd;                                                                         \
            __m512 ai;                                                                          \
            memcpy(&wd, ap[i] + o, sizeof wd);                                                  \
            ai = _mm512_castsi512_ps(_mm512_set1_epi32(wd));                                    \
            HIGAN__UNROLL for (v = 0; v < NV; ++v)                                              \
                acc[i][v] = _mm512_dpbf16_ps(acc[i][v], (__m512bh)ai, (__m512bh)bv[v]);        \
        }                                                                                       \
        b += NV * 16;                                                                           \
    }                                                                                           \
    HIGAN__UNROLL for (i = 0; i < MR; ++i) HIGAN__UNROLL for (v = 0; v < NV; ++v) {            \
        float *cp = c + i * ldc + v * 16;                                                       \
        _mm512_storeu_ps(cp, beta ? _mm512_add_ps(acc[i][v], _mm512_loadu_ps(cp)) : acc[i][v]); \
    }                                                                                           \
}
HIGAN__DEFINE_UKR_DIRECT_W16(higan__ukrw_bf16_1, 6, 1)
HIGAN__DEFINE_UKR_DIRECT_W16(higan__ukrw_bf16_2, 6, 2)
HIGAN__DEFINE_UKR_DIRECT_W16(higan__ukrw_bf16_3, 6, 3)
HIGAN__DEFINE_UKR_DIRECT_W16(higan__ukrw_bf16_4, 6, 4)
/* dst[i] = bf16(a[i]) | bf16(b[i]) << 16 (b NULL: 0), and dst16[i] = bf16(a[i]): the bf16
   layouts of the direct convolutions (vcvtne2ps2bf16 / vcvtneps2bf16: round to nearest even,
   denormals as zero, as higan__bf16_bits) */
static HIGAN__TGT_bf16 void higan__bf16_interleave_avx512(uint32_t *dst, const float *a, const float *b,
                                                         int64_t n) {
    const __m512i idx = _mm512_set_epi16(31, 15, 30, 14, 29, 13, 28, 12, 27, 11, 26, 10, 25, 9, 24, 8,
                                         23, 7, 22, 6, 21, 5, 20, 4, 19, 3, 18, 2, 17, 1, 16, 0);
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        const __m512 lo = _mm512_loadu_ps(a + i), hi = b ? _mm512_loadu_ps(b + i) : _mm512_setzero_ps();
        _mm512_storeu_si512((void *)(dst + i), _mm512_permutexvar_epi16(idx, (__m512i)_mm512_cvtne2ps_pbh(hi, lo)));
    }
    for (; i < n; ++i) dst[i] = (uint32_t)higan__bf16_bits(a[i]) | (b ? (uint32_t)higan__bf16_bits(b[i]) << 16 : 0u);
}
static HIGAN__TGT_bf16 void higan__bf16_round_avx512(float *p, int64_t n) {
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        const __m256i h = (__m256i)_mm512_cvtneps_pbh(_mm512_loadu_ps(p + i));
        /* maskz forms: GCC 12's unmasked ones read an "undefined" register (-Wuninitialized in C++) */
        _mm512_storeu_si512((void *)(p + i), _mm512_maskz_slli_epi32((__mmask16)0xFFFF,
                            _mm512_maskz_cvtepu16_epi32((__mmask16)0xFFFF, h), 16));
    }
    for (; i < n; ++i) p[i] = higan_bf16_round(p[i]);
}
static HIGAN__TGT_bf16 void higan__bf16_row_avx512(uint16_t *dst, const float *a, int64_t n) {
    int64_t i = 0;
    for (; i + 16 <= n; i += 16)
        _mm256_storeu_si256((__m256i *)(void *)(dst + i), (__m256i)_mm512_cvtneps_pbh(_mm512_loadu_ps(a + i)));
    for (; i < n; ++i) dst[i] = higan__bf16_bits(a[i]);
}
#endif

#ifdef HIGAN__AMX
/* AMX-BF16 micro-kernel, 32 x 32: C tiles 0-3 (2 x 2 of 16 x 16 fp32), A tiles 4-5 (16 rows x
   32 bf16), B tiles 6-7 (16 K pairs x 16 columns x 2). Panels: A [kp/32][32 rows][32 bf16]
   (tile rows contiguous), B [kp/2][32][2] with kp = kc rounded up to 32 (zero padded).
   UNTESTED: written for Sapphire Rapids-class CPUs; the machine this was developed on (AMD
   Zen 4) has no AMX, so this code has never run. It is only reached at HIGAN_CPU_AMX, which
   higan_cpu_detect() reports only with AMX-TILE + AMX-BF16 and the Linux permission. */
#  define HIGAN__TGT_amx __attribute__((target("amx-tile,amx-bf16,avx512f,avx2,fma")))
typedef struct {
    uint8_t palette, start_row, reserved[14];
    uint16_t colsb[16];
    uint8_t rows[16];
} higan__tilecfg;
static HIGAN__TLS int higan__amx_configured;
static HIGAN__TGT_amx void higan__ukr_amx(int64_t kc, const float *a, const float *b, float *c,
                                          int64_t ldc, float beta) {
    const int64_t nkb = (kc + 31) / 32;
    const unsigned char *ap = (const unsigned char *)a, *bp = (const unsigned char *)b;
    float tmp[32 * 32];
    int64_t kb;
    int i, j;
    if (!higan__amx_configured) {   /* tile shapes, once per thread */
        higan__tilecfg cfg;
        memset(&cfg, 0, sizeof cfg);
        cfg.palette = 1;
        for (i = 0; i < 8; ++i) { cfg.rows[i] = 16; cfg.colsb[i] = 64; }
        _tile_loadconfig(&cfg);
        higan__amx_configured = 1;
    }
    _tile_zero(0); _tile_zero(1); _tile_zero(2); _tile_zero(3);
    for (kb = 0; kb < nkb; ++kb) {
        _tile_loadd(4, ap + kb * 2048, 64);
        _tile_loadd(5, ap + kb * 2048 + 1024, 64);
        _tile_loadd(6, bp + kb * 2048, 128);
        _tile_loadd(7, bp + kb * 2048 + 64, 128);
        _tile_dpbf16ps(0, 4, 6);
        _tile_dpbf16ps(1, 4, 7);
        _tile_dpbf16ps(2, 5, 6);
        _tile_dpbf16ps(3, 5, 7);
    }
    _tile_stored(0, tmp, 128);
    _tile_stored(1, tmp + 16, 128);
    _tile_stored(2, tmp + 16 * 32, 128);
    _tile_stored(3, tmp + 16 * 32 + 16, 128);
    for (i = 0; i < 32; ++i)
        for (j = 0; j < 32; ++j) {
            float *cp = c + i * ldc + j;
            const float v = tmp[i * 32 + j];
            *cp = beta == 0.0f ? v : beta == 1.0f ? v + *cp : v + beta * *cp;
        }
}
#endif

/* Converts np packed panels (panel q at p + q*pstride, [kc][w] fp32) for a bf16 kernel:
   pack 1: each value rounded to bf16 (fp32 kernels on bf16 operands: the levels without
   bf16 instructions); 2: K pairs as above; 3 (AMX): B as 2 with K padded to 32, A
   [kp/32][w][32]. In place: the bf16 layout is half the size of the fp32 one. */
static void higan__bf16_panels(float *p, int64_t np, int w, int64_t kc, int64_t pstride, int pack,
                               int is_b, int vec) {
    int64_t q;
    HIGAN__PARALLEL_FOR_IF(np > 1 && np * w * kc >= 65536)
    for (q = 0; q < np; ++q) {
        float *pp = p + q * pstride;
        int64_t k, i;
        if (pack == 1) {
            for (k = 0; k < kc * w; ++k) pp[k] = higan_bf16_round(pp[k]);
            continue;
        }
#ifdef HIGAN__BF16_KERNELS
        if (vec && w % 16 == 0 && (pack == 2 || is_b) && kc % 2 == 0 && (pack == 2 || kc % 32 == 0)) {
            higan__bf16_pairs_avx512(pp, w, kc);
            continue;
        }
#else
        (void)vec;
#endif
        if (pack == 2 || is_b) {   /* pairs; AMX pads K to 32 */
            const int64_t kp = pack == 3 ? (kc + 31) / 32 * 32 : kc;
            for (k = 0; k < (kp + 1) / 2; ++k) {
                uint16_t row[2 * HIGAN__MAX_NR > 2 * HIGAN__MAX_MR ? 2 * HIGAN__MAX_NR : 2 * HIGAN__MAX_MR];
                for (i = 0; i < w; ++i) {
                    row[2 * i] = 2 * k < kc ? higan__bf16_bits(pp[2 * k * w + i]) : 0;
                    row[2 * i + 1] = 2 * k + 1 < kc ? higan__bf16_bits(pp[(2 * k + 1) * w + i]) : 0;
                }
                memcpy(pp + k * w, row, (size_t)w * 2 * sizeof(uint16_t));
            }
        } else {                   /* AMX A: blocks of 32 k, each [w rows][32] */
            const int64_t nkb = (kc + 31) / 32;
            float blk[32 * HIGAN__MAX_MR];
            for (k = 0; k < nkb; ++k) {
                const int64_t k0 = 32 * k, kn = HIGAN__MIN(32, kc - k0);
                uint16_t *dst = (uint16_t *)(void *)(pp + k * w * 16);
                int64_t kk;
                memcpy(blk, pp + k0 * w, (size_t)(kn * w) * sizeof(float));
                for (i = 0; i < w; ++i)
                    for (kk = 0; kk < 32; ++kk)
                        dst[i * 32 + kk] = kk < kn ? higan__bf16_bits(blk[kk * w + i]) : 0;
            }
        }
    }
}

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
    int pack;   /* panels: 0 fp32; bf16 operands: 1 rounded fp32, 2 K pairs, 3 AMX (see
                   higan__bf16_panels) */
    int vec;    /* 1: the AVX512-BF16 panel conversion may be used */
} higan__gemm_kernel;
typedef void (*higan__ukrd_fn)(int64_t kc, const float *const *arow, const int32_t *aoff,
                               const float *b, float *c, int64_t ldc, int beta);
/* Direct convolution (section 5): tiles of mr rows x nv*vw channels, ukr[nv - 1] for nv in
   1..nvmax; mr == 0: not available at this level (the packed GEMM path is used). */
typedef void (*higan__ukrp_fn)(int64_t kc, const float *a, const float *const *bvec,
                               const int32_t *koff, float *const *cvec, int64_t ldc,
                               const int *lanes, int beta, int rows, const float *bias);
typedef void (*higan__ukrt_fn)(int64_t nvec, const int32_t *xoff, const int64_t *dyoff,
                               const int *lanes, const float *xb, const int32_t *koff,
                               const float *const *drow, float *part);
typedef void (*higan__ukrw_fn)(int64_t kc, const uint16_t *const *arow, const int32_t *aoff,
                               const float *b, float *c, int64_t ldc, int beta);
/* pixel-vector tile: mr output channels x nv vectors; dot tile: mro x mrk (mr 0: none) */
typedef struct { int mr, nv; higan__ukrp_fn ukr; } higan__ukrp_tile;
typedef struct { int mro, mrk; higan__ukrt_fn ukr; } higan__ukrt_tile;
typedef struct higan__dconv_kernel {
    int mr, vw, nvmax;
    higan__ukrd_fn ukr[4];
    void (*transpose)(float *dst, int64_t ldd, const float *src, int64_t lds, int64_t rows,
                      int64_t cols, int mode, const float *bias);
    higan__ukrp_tile pix[5];    /* by increasing mr */
    higan__ukrt_tile dot[3];    /* by increasing mro */
    /* bf16 (HIGAN_PRECISION_BF16) channel-vector kernels and layouts; NULL: the fp32 kernels
       on rounded operands */
    higan__ukrd_fn ukr_bf16[4];
    higan__ukrw_fn ukrw_bf16[4];
    void (*interleave)(uint32_t *dst, const float *a, const float *b, int64_t n);
    void (*row16)(uint16_t *dst, const float *a, int64_t n);
    void (*round16)(float *p, int64_t n);   /* p rounded to bf16 values in place */
} higan__dconv_kernel;
typedef struct higan__level_ops {
    higan__gemm_kernel gemm;        /* fp32 */
    higan__gemm_kernel gemm_bf16;   /* HIGAN_PRECISION_BF16 */
    void (*add)(int64_t n, float *y, const float *x);
    float (*sum)(int64_t n, const float *x);
    higan__dconv_kernel dc;
} higan__level_ops;
#define HIGAN__MAX_NC 2048   /* nc of every level is at most this (a stack row in the packer) */
#define HIGAN__T_CHUNK 64    /* pixels per transposed block in the dW packer */
/* Levels: fp32 and bf16 GEMM kernels, vector add / sum, direct-convolution kernels. The bf16
   kernel of the levels without bf16 instructions is the fp32 one on rounded panels (pack 1):
   the same numbers as the bf16 instructions up to the order of the fp32 additions. */
#define HIGAN__DC_NOBF16 {NULL, NULL, NULL, NULL}, {NULL, NULL, NULL, NULL}, NULL, NULL, NULL
#define HIGAN__DC_NONE {0, 1, 0, {NULL, NULL, NULL, NULL}, NULL, {{0, 0, NULL}, {0, 0, NULL}, \
    {0, 0, NULL}, {0, 0, NULL}, {0, 0, NULL}}, {{0, 0, NULL}, {0, 0, NULL}, {0, 0, NULL}}, HIGAN__DC_NOBF16}
static const higan__level_ops higan__ops_scalar = {
    {4, 8, 256, 1020, 2048, higan__ukr_scalar, 0, 0}, {4, 8, 256, 1020, 2048, higan__ukr_scalar, 1, 0},
    higan__add_scalar, higan__sum_scalar, HIGAN__DC_NONE};
#ifdef HIGAN__X86_SIMD
static const higan__level_ops higan__ops_avx2 = {
    {6, 16, 512, 1020, 2048, higan__ukr_avx2, 0, 0}, {6, 16, 512, 1020, 2048, higan__ukr_avx2, 1, 0},
    higan__add_avx2, higan__sum_avx2,
    {6, 8, 2, {higan__ukrd_avx2_1, higan__ukrd_avx2_2, NULL, NULL}, higan__transpose_avx2,
     {{1, 8, higan__ukrp_avx2_1}, {2, 6, higan__ukrp_avx2_2}, {4, 3, higan__ukrp_avx2_4},
      {6, 2, higan__ukrp_avx2_6}, {0, 0, NULL}},
     {{1, 8, higan__ukrt_avx2_1}, {2, 5, higan__ukrt_avx2_2}, {4, 2, higan__ukrt_avx2_4}}, HIGAN__DC_NOBF16}};
#  ifdef HIGAN__GEMM_AVX512
#    define HIGAN__DC_AVX512_(BF) {6, 16, 4, {higan__ukrd_avx512_1, higan__ukrd_avx512_2, higan__ukrd_avx512_3, \
    higan__ukrd_avx512_4}, higan__transpose_avx512, {{1, 8, higan__ukrp_avx512_1}, \
    {2, 8, higan__ukrp_avx512_2}, {4, 6, higan__ukrp_avx512_4}, {6, 4, higan__ukrp_avx512_6}, \
    {8, 3, higan__ukrp_avx512_8}}, {{1, 12, higan__ukrt_avx512_1}, {2, 8, higan__ukrt_avx512_2}, \
    {4, 5, higan__ukrt_avx512_4}}, BF}
#    define HIGAN__DC_AVX512 HIGAN__DC_AVX512_(HIGAN__DC_NOBF16)
#    define HIGAN__DC_BF16 {higan__ukrd_bf16_1, higan__ukrd_bf16_2, higan__ukrd_bf16_3, higan__ukrd_bf16_4}, \
    {higan__ukrw_bf16_1, higan__ukrw_bf16_2, higan__ukrw_bf16_3, higan__ukrw_bf16_4}, \
    higan__bf16_interleave_avx512, higan__bf16_row_avx512, higan__bf16_round_avx512
#    define HIGAN__GEMM_AVX512_FP32 {6, 64, 512, 1020, 2048, higan__ukr_avx512, 0, 0}
static const higan__level_ops higan__ops_avx512 = {
    HIGAN__GEMM_AVX512_FP32, {6, 64, 512, 1020, 2048, higan__ukr_avx512, 1, 0},
    higan__add_avx512, higan__sum_avx512, HIGAN__DC_AVX512};
#    ifdef HIGAN__BF16_KERNELS
/* bf16: the same 6 x 64 tile, K in pairs (a K block of 512 is 256 pairs) */
static const higan__level_ops higan__ops_avx512bf16 = {
    HIGAN__GEMM_AVX512_FP32, {6, 64, 512, 1020, 2048, higan__ukr_bf16, 2, 1},
    higan__add_avx512, higan__sum_avx512, HIGAN__DC_AVX512_(HIGAN__DC_BF16)};
#    endif
#    ifdef HIGAN__AMX
/* AMX: 32 x 32 tiles (never run here: see higan__ukr_amx) */
static const higan__level_ops higan__ops_amx = {
    HIGAN__GEMM_AVX512_FP32, {32, 32, 512, 1024, 2048, higan__ukr_amx, 3, 1},
    higan__add_avx512, higan__sum_avx512, HIGAN__DC_AVX512_(HIGAN__DC_BF16)};
#    endif
#  endif
#endif
static const higan__level_ops *higan__ops(void) {
    higan_cpu level = higan_cpu_level();
    (void)level;
#ifdef HIGAN__X86_SIMD
#  ifdef HIGAN__GEMM_AVX512
#    ifdef HIGAN__AMX
    if (level >= HIGAN_CPU_AMX) return &higan__ops_amx;
#    endif
#    ifdef HIGAN__BF16_KERNELS
    if (level >= HIGAN_CPU_AVX512BF16) return &higan__ops_avx512bf16;
#    endif
    if (level >= HIGAN_CPU_AVX512) return &higan__ops_avx512;
#  endif
    if (level >= HIGAN_CPU_AVX2) return &higan__ops_avx2;
#endif
    return &higan__ops_scalar;
}
/* the GEMM kernel of this level for the current precision */
static const higan__gemm_kernel *higan__gemm_k(const higan__level_ops *ops) {
    return higan_get_precision() == HIGAN_PRECISION_BF16 ? &ops->gemm_bf16 : &ops->gemm;
}
static int higan__bf16_mode(void) { return higan_get_precision() == HIGAN_PRECISION_BF16; }

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
   be allocated (slow but correct). bf16: round(alpha a) round(b), as the packed kernels. */
static void higan__gemm_unpacked(int64_t M, int64_t N, int64_t K, float alpha, const higan__src *A,
                                 const higan__src *B, float beta, float *C, int64_t ldc, int bf16) {
    int64_t i, j, k;
    for (i = 0; i < M; ++i)
        for (j = 0; j < N; ++j) {
            float acc = 0.0f, *c = C + i * ldc + j;
            if (bf16) {
                for (k = 0; k < K; ++k)
                    acc += higan_bf16_round(alpha * higan__src_a_at(A, i, k)) * higan_bf16_round(higan__src_b_at(B, k, j));
                *c = acc + (beta == 0.0f ? 0.0f : beta * *c);
                continue;
            }
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
/* the GEMM work counter (relaxed atomic: callers may run GEMMs on several threads) */
static uint64_t higan__gemm_flop_counter;
static void higan__count_flops(uint64_t n) {
#if defined(__GNUC__) || defined(__clang__)
    __atomic_fetch_add(&higan__gemm_flop_counter, n, __ATOMIC_RELAXED);
#else
    higan__gemm_flop_counter += n;
#endif
}
HIGAN_DEF uint64_t higan_gemm_flops(void) {
#if defined(__GNUC__) || defined(__clang__)
    return __atomic_load_n(&higan__gemm_flop_counter, __ATOMIC_RELAXED);
#else
    return higan__gemm_flop_counter;
#endif
}
HIGAN_DEF void higan_gemm_flops_reset(void) {
#if defined(__GNUC__) || defined(__clang__)
    __atomic_store_n(&higan__gemm_flop_counter, 0, __ATOMIC_RELAXED);
#else
    higan__gemm_flop_counter = 0;
#endif
}

static void higan__gemm_driver(const higan__gemm_kernel *kr, int64_t M, int64_t N, int64_t K,
                               float alpha, const higan__src *A, const higan__src *B, float beta,
                               float *C, int64_t ldc, const higan__batch *bt) {
    const int mr = kr->mr, nr = kr->nr;
    const int64_t kq = kr->pack == 3 ? 32 : 1;   /* AMX panels hold K rounded up to 32 */
    higan__batch one;
    int64_t nk, kcs, kcsp, mcs, ncs, jc, pc, ic, nbn, kseg, b, g0, gsz;
    float *ap, *bp;
    if (!bt) { one.nb = 1; one.along_k = 0; one.a_step = one.b_step = one.c_step = 0; bt = &one; }
    if (M <= 0 || N <= 0 || bt->nb <= 0) return;
    higan__count_flops((uint64_t)(2 * M * N * K * (bt->along_k ? 1 : bt->nb)));
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
    kcsp = HIGAN__CEIL_DIV(kcs, kq) * kq;
    ap = higan__gemm_buffer((size_t)(mcs * kcsp + kcsp * ncs));
    if (!ap) {
        for (b = 0; b < bt->nb; ++b) {
            const higan__src As = higan__src_step(A, bt->along_k ? bt->a_step : 0, b);
            const higan__src Bs = higan__src_step(B, bt->b_step, b);
            if (bt->along_k) higan__gemm_unpacked(M, N, kseg, alpha, &As, &Bs, b ? 1.0f : beta, C, ldc, kr->pack != 0);
            else higan__gemm_unpacked(M, N, K, alpha, &As, &Bs, beta, C + b * bt->c_step, ldc, kr->pack != 0);
        }
        return;
    }
    bp = ap + mcs * kcsp;
    /* N-batches go in groups (higan__gemm_group); A is packed once per group and K block */
    gsz = higan__gemm_group(kr, nbn, M, N, K);
    for (ic = 0; ic < M; ic += mcs)
    for (g0 = 0; g0 < nbn; g0 += gsz) {
        const int64_t mc = HIGAN__MIN(mcs, M - ic), nir = HIGAN__CEIL_DIV(mc, mr);
        for (pc = 0; pc < K; pc += kcs) {
            const int64_t kc = HIGAN__MIN(kcs, K - pc), kcp = HIGAN__CEIL_DIV(kc, kq) * kq;
            const float beta_k = pc == 0 ? beta : 1.0f;
            if (bt->along_k) higan__pack_a_k(ap, mr * kcp, A, bt, kseg, ic, mc, pc, kc, mr, alpha);
            else higan__pack_a_block(ap, mr * kcp, A, ic, mc, pc, kc, mr, alpha);
            if (kr->pack) higan__bf16_panels(ap, nir, mr, kc, mr * kcp, kr->pack, 0, kr->vec);
            for (b = g0; b < HIGAN__MIN(nbn, g0 + gsz); ++b) {
                const higan__src Bb = higan__src_step(B, bt->b_step, b);
                float *Cb = C + b * bt->c_step;
                for (jc = 0; jc < N; jc += ncs) {
                    const int64_t nc = HIGAN__MIN(ncs, N - jc), njr = HIGAN__CEIL_DIV(nc, nr);
                    const int64_t ntile = nir * njr;
                    int64_t t;
                    if (bt->along_k) higan__pack_b_k(bp, nr * kcp, B, bt, kseg, pc, kc, jc, nc, nr);
                    else higan__pack_b_block(bp, nr * kcp, &Bb, pc, kc, jc, nc, nr);
                    if (kr->pack) higan__bf16_panels(bp, njr, nr, kc, nr * kcp, kr->pack, 1, kr->vec);
                    /* tiles row-panel major: an A panel stays in L1 while the B block streams
                       past it */
                    HIGAN__PARALLEL_FOR_IF(ntile > 1 && mc * nc * kc >= 131072)
                    for (t = 0; t < ntile; ++t) {
                        const int64_t tr = t / njr, tj = t % njr;
                        const int64_t m = HIGAN__MIN(mr, mc - tr * mr), n = HIGAN__MIN(nr, nc - tj * nr);
                        const float *a = ap + tr * mr * kcp, *bb = bp + tj * nr * kcp;
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
    higan__gemm_driver(higan__gemm_k(higan__ops()), M, N, K, alpha, &a, &b, beta, C, ldc, NULL);
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

HIGAN_DEF void higan_gemm_ref_bf16(int trans_a, int trans_b, int64_t M, int64_t N, int64_t K, float alpha,
                                   const float *A, int64_t lda, const float *B, int64_t ldb,
                                   float beta, float *C, int64_t ldc) {
    int64_t i, j, k;
    higan__gemm_check(trans_a, trans_b, M, N, K, A, lda, B, ldb, C, ldc);
    for (i = 0; i < M; ++i)
        for (j = 0; j < N; ++j) {
            double acc = 0.0;
            for (k = 0; k < K; ++k) {
                float a = higan_bf16_round(alpha * (trans_a ? A[k * lda + i] : A[i * lda + k]));
                float b = higan_bf16_round(trans_b ? B[j * ldb + k] : B[k * ldb + j]);
                acc += (double)a * (double)b;
            }
            C[i * ldc + j] = (float)(acc + (beta == 0.0f ? 0.0 : (double)beta * (double)C[i * ldc + j]));
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

/* ---- 5. direct convolution ------------------------------------------------------------------
   The packed GEMM turns a convolution into a product with the im2col matrix col(x) [KD =
   IC*KH*KW, OH*OW], which its packing materialises (KH*KW copies of x): with few channels that
   copy costs as much as the multiply. These passes instead vectorise over channels and read
   the pixels in place:
     forward  C[pixel, oc] = sum_k x~[pix[pixel] + koff[k]] w[oc, k]
     wgrad    C[k, oc]     = sum_pixel x~[koff[k] + pix[pixel]] dy[oc, pixel]
     dgrad    (stride 1) a forward convolution of dy, zero-padded by (KH-1-pad_top, ...), with
              the flipped, transposed weights w'[ic, oc, kh, kw] = w[oc, ic, KH-1-kh, KW-1-kw]
   x~ is x zero-padded, copied once per chunk (several samples, or output rows of one sample):
   one copy of x instead of KH*KW; none when the convolution has no padding. koff[k] is the
   offset of k = (ic, kh, kw) in x~ and pix[] the offset of each output pixel's window. The
   micro-kernel (HIGAN__DEFINE_UKR_DIRECT) broadcasts x~ values against a packed panel of
   channels: the weights (forward, dgrad; packed once per call) or dy^T (wgrad; packed per
   block of pixels, OC values per pixel). C is [pixels, OC] (forward) or [KD, OC] (wgrad),
   transposed into place at the end of a chunk / of the call. Any stride works for forward and
   wgrad. Every output element is summed by one thread in a fixed order: bit-identical for
   any thread count. */
#define HIGAN__DCONV_X_FLOATS ((int64_t)1 << 18)   /* padded input held per chunk */
#define HIGAN__DCONV_C_FLOATS ((int64_t)1 << 18)   /* forward results [pixels, OC] per chunk */
#define HIGAN__DCONV_PX_MAX ((int64_t)1 << 18)     /* output pixels per chunk */
#define HIGAN__DCONV_B_FLOATS ((int64_t)1 << 16)   /* packed B of one K block, all panels */
#define HIGAN__DCONV_TB 8                          /* tiles per parallel block (forward) */
#define HIGAN__DCONV_KC 256                        /* K block of the forward (B panel 64 KB) */
typedef struct higan__dplan {
    int64_t OH, OW, P, KD, Hp, Wp;
    int copy;       /* x is copied into zero-padded chunks (else read in place) */
    int64_t ns;     /* samples per chunk */
    int64_t rows;   /* output rows per chunk (OH: whole samples) */
    int64_t SH;     /* image rows of one sample in a chunk (its layout stride) */
    int64_t XS;     /* floats of one sample in a chunk: IC*SH*Wp */
} higan__dplan;
/* cfloats: floats of results per output pixel held for a chunk (0: none); force_copy: pad a
   copy even without padding */
static void higan__dplan_init(higan__dplan *d, const higan_conv2d_shape *s, int64_t cfloats, int force_copy) {
    int64_t per;
    d->OH = higan_conv2d_out_h(s); d->OW = higan_conv2d_out_w(s); d->P = d->OH * d->OW;
    d->KD = s->IC * s->KH * s->KW;
    d->copy = force_copy || s->pad_top || s->pad_bottom || s->pad_left || s->pad_right;
    d->Hp = s->H + s->pad_top + s->pad_bottom; d->Wp = s->W + s->pad_left + s->pad_right;
    per = s->IC * d->Hp * d->Wp;
    HIGAN_ASSERT(per < ((int64_t)1 << 31));       /* int32 offsets inside a sample */
    d->ns = HIGAN__MAX(s->N, 1);
    if (d->copy) d->ns = HIGAN__MIN(d->ns, HIGAN__DCONV_X_FLOATS / per);
    else d->ns = HIGAN__MIN(d->ns, (((int64_t)1 << 31) - 1) / per);
    if (cfloats) d->ns = HIGAN__MIN(d->ns, HIGAN__DCONV_C_FLOATS / (d->P * cfloats));
    d->ns = HIGAN__MIN(d->ns, HIGAN__DCONV_PX_MAX / d->P);
    d->rows = d->OH;
    d->SH = d->Hp;
    if (d->ns < 1) {   /* one sample is too large: chunks of output rows */
        d->ns = 1;
        if (d->copy)
            d->rows = HIGAN__MIN(d->rows, (HIGAN__DCONV_X_FLOATS / (s->IC * d->Wp) - s->KH) / s->stride_h + 1);
        if (cfloats) d->rows = HIGAN__MIN(d->rows, HIGAN__DCONV_C_FLOATS / (d->OW * cfloats));
        d->rows = HIGAN__MAX(1, HIGAN__MIN(d->rows, HIGAN__DCONV_PX_MAX / d->OW));
        if (d->copy) d->SH = HIGAN__MIN(d->Hp, (d->rows - 1) * s->stride_h + s->KH);
    }
    d->XS = s->IC * d->SH * d->Wp;
}
/* p[0..n) rounded to bf16 values (the direct convolutions' operands in HIGAN_PRECISION_BF16):
   vcvtneps2bf16 where the level has it, else the scalar rounding (the same numbers) */
static void higan__round_bf16_n(const higan__dconv_kernel *dk, float *p, int64_t n) {
    int64_t i;
    if (dk->round16) { dk->round16(p, n); return; }
    for (i = 0; i < n; ++i) p[i] = higan_bf16_round(p[i]);
}
/* The chunk's padded image: samples [n0, n0+ns), padded rows [pr0, pr0+nrows) of each,
   laid out [ns][IC][SH][Wp]. Parallel over (sample, channel) planes. */
static void higan__dconv_fill(float *xp, const higan__dconv_kernel *dk, const higan__dplan *d,
                              const higan_conv2d_shape *s, const float *x, int64_t n0, int64_t ns,
                              int64_t pr0, int64_t nrows) {
    const int64_t H = s->H, W = s->W, pl = s->pad_left, pr = s->pad_right, Wp = d->Wp;
    const int bf16 = higan__bf16_mode();
    int64_t t;
    HIGAN__PARALLEL_FOR_IF(ns * s->IC > 1 && ns * d->XS >= 65536)
    for (t = 0; t < ns * s->IC; ++t) {
        const float *src = x + (n0 * s->IC + t) * H * W;
        float *dst = xp + t * d->SH * Wp;
        int64_t r;
        for (r = 0; r < nrows; ++r) {
            const int64_t ih = pr0 + r - s->pad_top;
            float *row = dst + r * Wp;
            if (ih < 0 || ih >= H) { memset(row, 0, (size_t)Wp * sizeof(float)); continue; }
            if (pl) memset(row, 0, (size_t)pl * sizeof(float));
            memcpy(row + pl, src + ih * W, (size_t)W * sizeof(float));
            if (bf16) higan__round_bf16_n(dk, row + pl, W);
            if (pr) memset(row + pl + W, 0, (size_t)pr * sizeof(float));
        }
    }
}
/* The same padded image in bf16 with channel pairs interleaved (HIGAN_PRECISION_BF16 at the
   levels with bf16 kernels): 32-bit word (icp, r, c) = bf16 x[2icp] | bf16 x[2icp+1] << 16 (0
   for the missing channel of an odd IC), laid out [ns][ceil(IC/2)][SH][Wp] (d planned with
   IC/2 channels). */
static void higan__dconv_fill_pairs(uint32_t *xp, const higan__dconv_kernel *dk, const higan__dplan *d,
                                    const higan_conv2d_shape *s, const float *x, int64_t n0, int64_t ns,
                                    int64_t pr0, int64_t nrows) {
    const int64_t H = s->H, W = s->W, pl = s->pad_left, pr = s->pad_right, Wp = d->Wp;
    const int64_t icp = (s->IC + 1) / 2;
    int64_t t;
    HIGAN__PARALLEL_FOR_IF(ns * icp > 1 && ns * d->XS >= 65536)
    for (t = 0; t < ns * icp; ++t) {
        const int64_t n = t / icp, c = 2 * (t % icp);
        const float *s0 = x + ((n0 + n) * s->IC + c) * H * W, *s1 = c + 1 < s->IC ? s0 + H * W : NULL;
        uint32_t *dst = xp + t * d->SH * Wp;
        int64_t r;
        for (r = 0; r < nrows; ++r) {
            const int64_t ih = pr0 + r - s->pad_top;
            uint32_t *row = dst + r * Wp;
            if (ih < 0 || ih >= H) { memset(row, 0, (size_t)Wp * sizeof(uint32_t)); continue; }
            if (pl) memset(row, 0, (size_t)pl * sizeof(uint32_t));
            dk->interleave(row + pl, s0 + ih * W, s1 ? s1 + ih * W : NULL, W);
            if (pr) memset(row + pl + W, 0, (size_t)pr * sizeof(uint32_t));
        }
    }
}
/* koff[k] for k = (ic, kh, kw) < KD; entries up to kpad repeat koff[0] (rows of a last tile) */
static void higan__dconv_koff(int32_t *koff, const higan__dplan *d, const higan_conv2d_shape *s, int64_t kpad) {
    const int64_t KK = s->KH * s->KW;
    int64_t k;
    for (k = 0; k < kpad; ++k) {
        const int64_t kk = k < d->KD ? k : 0, r = kk % KK;
        koff[k] = (int32_t)((kk / KK) * d->SH * d->Wp + (r / s->KW) * d->Wp + r % s->KW);
    }
}
/* pix[q] for the output pixels q of a chunk (samples [0, ns) of it, output rows [oh0, oh0+nr)),
   then up to qpad copies of pix[0] */
static void higan__dconv_pix(int32_t *pix, const higan__dplan *d, const higan_conv2d_shape *s,
                             int64_t ns, int64_t oh0, int64_t nr, int64_t pr0, int64_t qpad) {
    int64_t q = 0, n, oh, ow;
    for (n = 0; n < ns; ++n)
        for (oh = oh0; oh < oh0 + nr; ++oh)
            for (ow = 0; ow < d->OW; ++ow)
                pix[q++] = (int32_t)(n * d->XS + (oh * s->stride_h - pr0) * d->Wp + ow * s->stride_w);
    for (; q < qpad; ++q) pix[q] = pix[0];
}
static float *higan__align16(float *p) { return (float *)(((uintptr_t)p + 63) & ~(uintptr_t)63); }

/* y [N, OC, OH, OW] = conv(x, w) (+ b), or += conv(x, w) with accumulate. wflip: w holds the
   weights of the convolution this one is the dgrad of, [IC, OC, KH, KW] in this call's terms,
   used flipped and transposed. Returns 0 (nothing written) if the buffer cannot be had. */
static int higan__dconv_forward(const higan__dconv_kernel *dk, const higan_conv2d_shape *s, float *y,
                                const float *x, const float *w, int wflip, const float *b, int accumulate) {
    const int mr = dk->mr, vw = dk->vw;
    const int64_t NR = (int64_t)dk->nvmax * vw, OC = s->OC, OCp = HIGAN__CEIL_DIV(OC, vw) * vw;
    const int64_t npan = HIGAN__CEIL_DIV(OC, NR), KK = s->KH * s->KW;
    const int bf16 = higan__bf16_mode(), pairs = bf16 && dk->ukr_bf16[0];
    const higan__ukrd_fn *ukr = pairs ? dk->ukr_bf16 : dk->ukr;
    higan_conv2d_shape sp = *s;   /* pairs: the image as IC/2 channels of bf16 pairs */
    higan__dplan d;
    int64_t KD, tmax, xfl, kcs, nk, n0, oh0, p;
    float *buf, *bpk, *xp, *cb;
    int32_t *pix, *koff;
    if (pairs) sp.IC = (s->IC + 1) / 2;
    higan__dplan_init(&d, &sp, OCp, bf16);   /* bf16: x rounded in the copy */
    KD = d.KD;                               /* pairs: K pairs (icp, kh, kw) */
    if (s->N == 0 || d.P == 0) return 1;
    tmax = HIGAN__CEIL_DIV(d.ns * d.rows * d.OW, mr) * mr;
    xfl = d.copy ? HIGAN__CEIL_DIV(d.ns * d.XS, 16) * 16 : 0;
    buf = higan__gemm_buffer((size_t)(npan * NR * KD + xfl + tmax * OCp + tmax + KD + 64));
    if (!buf) return 0;
    bpk = buf; xp = bpk + npan * NR * KD; cb = higan__align16(xp + xfl);
    pix = (int32_t *)(cb + tmax * OCp); koff = pix + tmax;
    /* B: panels of NR channels (the last narrower), [KD][nv*vw] each */
    HIGAN__PARALLEL_FOR_IF(npan > 1 && OC * KD >= 65536)
    for (p = 0; p < npan; ++p) {
        const int64_t cols = HIGAN__MIN(NR, OC - p * NR), nvw = HIGAN__CEIL_DIV(cols, vw) * vw;
        float *dst = bpk + p * NR * KD;
        int64_t j, k;
        if (pairs) {   /* word (kp = (icp, kh, kw), j) = bf16 pair of input channels 2icp, 2icp+1 */
            uint32_t *dq = (uint32_t *)(void *)dst;
            for (j = 0; j < nvw; ++j)
                for (k = 0; k < KD; ++k) {
                    const int64_t oc = p * NR + j, ic = 2 * (k / KK), r = k % KK;
                    uint32_t v = 0;
                    int h;
                    if (j < cols)
                        for (h = 0; h < 2 && ic + h < s->IC; ++h)
                            v |= (uint32_t)higan__bf16_bits(wflip ? w[((ic + h) * OC + oc) * KK + KK - 1 - r]
                                                                  : w[(oc * s->IC + ic + h) * KK + r]) << (16 * h);
                    dq[k * nvw + j] = v;
                }
            continue;
        }
        if (!wflip) {
            dk->transpose(dst, nvw, w + p * NR * KD, KD, cols, KD, 0, NULL);
        } else {   /* row k = (ic, kh, kw) <- w[ic, oc, KH-1-kh, KW-1-kw]: one ic's rows at a time */
            int64_t ic, r;
            for (ic = 0; ic < s->IC; ++ic)
                for (j = 0; j < cols; ++j) {
                    const float *src = w + (ic * OC + p * NR + j) * KK;
                    for (r = 0; r < KK; ++r) dst[(ic * KK + KK - 1 - r) * nvw + j] = src[r];
                }
        }
        for (j = cols; j < nvw; ++j)
            for (k = 0; k < KD; ++k) dst[k * nvw + j] = 0.0f;
        if (bf16) higan__round_bf16_n(dk, dst, KD * nvw);
    }
    higan__dconv_koff(koff, &d, &sp, KD);
    nk = HIGAN__CEIL_DIV(KD, HIGAN__MIN(HIGAN__DCONV_KC, HIGAN__MAX(16, HIGAN__DCONV_B_FLOATS / (npan * NR))));
    kcs = HIGAN__CEIL_DIV(KD, nk);
    for (n0 = 0; n0 < s->N; n0 += d.ns)
        for (oh0 = 0; oh0 < d.OH; oh0 += d.rows) {
            const int64_t ns = HIGAN__MIN(d.ns, s->N - n0), nr = HIGAN__MIN(d.rows, d.OH - oh0);
            const int64_t pr0 = d.copy ? oh0 * s->stride_h : 0, npx = ns * nr * d.OW;
            const int64_t ntile = HIGAN__CEIL_DIV(npx, mr), nblk = HIGAN__CEIL_DIV(ntile, HIGAN__DCONV_TB);
            const int64_t spx = nr * d.OW;   /* pixels of one sample in the chunk */
            const float *xb;
            int64_t t;
            if (pairs) {
                higan__dconv_fill_pairs((uint32_t *)(void *)xp, dk, &d, s, x, n0, ns, pr0,
                                        HIGAN__MIN(d.Hp - pr0, (nr - 1) * s->stride_h + s->KH));
                xb = xp;
            } else if (d.copy) {
                higan__dconv_fill(xp, dk, &d, s, x, n0, ns, pr0,
                                  HIGAN__MIN(d.Hp - pr0, (nr - 1) * s->stride_h + s->KH));
                xb = xp;
            } else {
                xb = x + n0 * s->IC * s->H * s->W;
            }
            higan__dconv_pix(pix, &d, &sp, ns, oh0, nr, pr0, ntile * mr);
            /* K blocks in order; within one, blocks of HIGAN__DCONV_TB tiles in parallel. The
               last K block writes each tile block's cb [pixels, OCp] transposed into y right
               away (split at sample ends), so that the stores overlap the multiplies. One
               parallel region for all K blocks: the static schedule gives every thread the
               same tile blocks in each K block (OpenMP guarantees it for equal loops), so
               each thread's tiles need nobody else's work and no barrier (nowait). */
            HIGAN__PARALLEL_IF(nblk > 1 && ntile * HIGAN__MIN(kcs, KD) * OC >= 32768)
            {
            int64_t pc;   /* private: declared in the region */
            for (pc = 0; pc < KD; pc += kcs) {
                const int64_t kc = HIGAN__MIN(kcs, KD - pc);
                HIGAN__FOR_NOWAIT
                for (t = 0; t < nblk; ++t) {
                    const int64_t t1 = HIGAN__MIN(ntile, (t + 1) * HIGAN__DCONV_TB);
                    int64_t tt, q;
                    for (tt = t * HIGAN__DCONV_TB; tt < t1; ++tt) {
                        const float *arow[HIGAN__MAX_MR];
                        int64_t i, pp;
                        for (i = 0; i < mr; ++i) arow[i] = xb + pix[tt * mr + i];
                        for (pp = 0; pp < npan; ++pp) {
                            const int64_t nv = HIGAN__CEIL_DIV(HIGAN__MIN(NR, OC - pp * NR), vw);
                            ukr[nv - 1](kc, arow, koff + pc, bpk + pp * NR * KD + pc * nv * vw,
                                        cb + tt * mr * OCp + pp * NR, OCp, pc > 0);
                        }
                    }
                    if (pc + kc < KD) continue;
                    for (q = t * HIGAN__DCONV_TB * mr; q < HIGAN__MIN(npx, t1 * mr);) {
                        const int64_t n = q / spx, r = q % spx;
                        const int64_t run = HIGAN__MIN(HIGAN__MIN(npx, t1 * mr) - q, spx - r);
                        dk->transpose(y + (n0 + n) * OC * d.P + oh0 * d.OW + r, d.P, cb + q * OCp, OCp,
                                      run, OC, accumulate ? 1 : b ? 2 : 0, b);
                        q += run;
                    }
                }
            }
            }
        }
    return 1;
}

/* bf16 wgrad at the levels with bf16 kernels (stride_w 1): K runs over pairs of neighbouring
   output pixels of a row (a row of odd width ends with a pair whose second pixel has dy 0;
   its x~ value, a real pixel or padding, is multiplied by that 0). x~ is the plain bf16
   padded image [ns][IC][SH][Wp] of 2-byte elements, so a row (ic, kh, kw) of col(x) at a pair
   is one 32-bit load; B = dy^T pairs [kp][nv*16] (converted per channel row, transposed as
   32-bit words). Returns 0 if no buffer. */
static int higan__dconv_wgrad_pairs(const higan__dconv_kernel *dk, const higan_conv2d_shape *s, float *dw,
                                    const float *x, const float *dy) {
    const int mr = dk->mr, vw = dk->vw;
    const int64_t NR = (int64_t)dk->nvmax * vw, OC = s->OC, OCp = HIGAN__CEIL_DIV(OC, vw) * vw;
    const int64_t npan = HIGAN__CEIL_DIV(OC, NR);
    higan__dplan d;
    int64_t KD, KDt, OWq, kcmax, qmax, xfl, n0, oh0;
    float *buf, *dwt, *bb, *dyw;
    uint16_t *xp;
    int32_t *pix, *koff;
    int first = 1;
    higan__dplan_init(&d, s, 0, 1);
    KD = d.KD;
    if (s->N == 0 || d.P == 0) return 1;
    KDt = HIGAN__CEIL_DIV(KD, mr) * mr;
    OWq = (d.OW + 1) / 2;
    kcmax = HIGAN__MAX(16, HIGAN__DCONV_B_FLOATS / (npan * NR));
    qmax = d.ns * d.rows * OWq;
    xfl = HIGAN__CEIL_DIV((d.ns * d.XS + 64) / 2 + 1, 16) * 16;
    buf = higan__gemm_buffer((size_t)(KDt * OCp + npan * NR * kcmax + OC * kcmax + xfl + qmax + KDt + 128));
    if (!buf) return 0;
    dwt = buf; bb = higan__align16(dwt + KDt * OCp); dyw = higan__align16(bb + npan * NR * kcmax);
    xp = (uint16_t *)(void *)higan__align16(dyw + OC * kcmax);
    pix = (int32_t *)(void *)((float *)(void *)xp + xfl); koff = pix + qmax;
    memset(xp + d.ns * d.XS, 0, 64 * sizeof(uint16_t));   /* read (times 0) past the last pair */
    higan__dconv_koff(koff, &d, s, KDt);
    for (n0 = 0; n0 < s->N; n0 += d.ns)
        for (oh0 = 0; oh0 < d.OH; oh0 += d.rows) {
            const int64_t ns = HIGAN__MIN(d.ns, s->N - n0), nr = HIGAN__MIN(d.rows, d.OH - oh0);
            const int64_t pr0 = oh0 * s->stride_h, nq = ns * nr * OWq;
            const int64_t nrows = HIGAN__MIN(d.Hp - pr0, (nr - 1) * s->stride_h + s->KH);
            const int64_t ntile = (KDt / mr) * npan;
            int64_t q = 0, n, oh, j, t, pc;
            HIGAN__PARALLEL_FOR_IF(ns * s->IC > 1 && ns * d.XS >= 65536)
            for (t = 0; t < ns * s->IC; ++t) {   /* the padded bf16 image */
                const float *src = x + (n0 * s->IC + t) * s->H * s->W;
                uint16_t *dst = xp + t * d.SH * d.Wp;
                int64_t r;
                for (r = 0; r < nrows; ++r) {
                    const int64_t ih = pr0 + r - s->pad_top;
                    uint16_t *row = dst + r * d.Wp;
                    if (ih < 0 || ih >= s->H) { memset(row, 0, (size_t)d.Wp * sizeof(uint16_t)); continue; }
                    memset(row, 0, (size_t)s->pad_left * sizeof(uint16_t));
                    dk->row16(row + s->pad_left, src + ih * s->W, s->W);
                    memset(row + s->pad_left + s->W, 0, (size_t)s->pad_right * sizeof(uint16_t));
                }
            }
            for (n = 0; n < ns; ++n)
                for (oh = oh0; oh < oh0 + nr; ++oh)
                    for (j = 0; j < OWq; ++j)
                        pix[q++] = (int32_t)(n * d.XS + (oh * s->stride_h - pr0) * d.Wp + 2 * j);
            for (pc = 0; pc < nq; pc += kcmax) {
                const int64_t kc = HIGAN__MIN(kcmax, nq - pc);
                int64_t oc, p;
                /* dyw [oc][pair] words: bf16 dy of the block's pixel pairs, row run by row run */
                HIGAN__PARALLEL_FOR_IF(OC > 1 && OC * kc >= 16384)
                for (oc = 0; oc < OC; ++oc) {
                    uint16_t *dst = (uint16_t *)(void *)(dyw + oc * kcmax);
                    int64_t qq = pc;
                    while (qq < pc + kc) {
                        const int64_t nn = qq / (nr * OWq), r = qq % (nr * OWq), ohh = oh0 + r / OWq;
                        const int64_t j0 = r % OWq, j1 = HIGAN__MIN(OWq, j0 + (pc + kc - qq));
                        const int64_t e1 = HIGAN__MIN(2 * j1, d.OW);
                        dk->row16(dst + 2 * (qq - pc), dy + ((n0 + nn) * OC + oc) * d.P + ohh * d.OW + 2 * j0,
                                  e1 - 2 * j0);
                        if (2 * j1 > d.OW) dst[2 * (qq - pc + j1 - j0) - 1] = 0;
                        qq += j1 - j0;
                    }
                }
                HIGAN__PARALLEL_FOR_IF(npan > 1 && kc * OC >= 16384)
                for (p = 0; p < npan; ++p) {
                    const int64_t cols = HIGAN__MIN(NR, OC - p * NR), nvw = HIGAN__CEIL_DIV(cols, vw) * vw;
                    float *dst = bb + p * NR * kcmax;
                    int64_t jj, kk;
                    dk->transpose(dst, nvw, dyw + p * NR * kcmax, kcmax, cols, kc, 0, NULL);
                    for (jj = cols; jj < nvw; ++jj)
                        for (kk = 0; kk < kc; ++kk) dst[kk * nvw + jj] = 0.0f;
                }
                HIGAN__PARALLEL_FOR_IF(ntile > 1 && kc * KD * OC >= 16384)
                for (t = 0; t < ntile; ++t) {
                    const int64_t rt = t / npan, pp = t % npan;
                    const int64_t nv = HIGAN__CEIL_DIV(HIGAN__MIN(NR, OC - pp * NR), vw);
                    const uint16_t *arow[HIGAN__MAX_MR];
                    int64_t i;
                    for (i = 0; i < mr; ++i) arow[i] = xp + koff[rt * mr + i];
                    dk->ukrw_bf16[nv - 1](kc, arow, pix + pc, bb + pp * NR * kcmax,
                                          dwt + rt * mr * OCp + pp * NR, OCp, !first);
                }
                first = 0;
            }
        }
    dk->transpose(dw, KD, dwt, OCp, KD, OC, 1, NULL);
    return 1;
}

/* dw [OC, KD] += sum_n dy_n [OC, P] col(x_n)^T, as dwT [KD, OC] = col(x) [KD, pixels] dy^T
   [pixels, OC] over blocks of pixels, then added transposed. Returns 0 if no buffer. */
static int higan__dconv_wgrad(const higan__dconv_kernel *dk, const higan_conv2d_shape *s, float *dw,
                              const float *x, const float *dy) {
    const int mr = dk->mr, vw = dk->vw;
    const int64_t NR = (int64_t)dk->nvmax * vw, OC = s->OC, OCp = HIGAN__CEIL_DIV(OC, vw) * vw;
    const int64_t npan = HIGAN__CEIL_DIV(OC, NR);
    higan__dplan d;
    int64_t KD, KDt, kcmax, pxmax, xfl, n0, oh0;
    float *buf, *dwt, *bb, *xp;
    int32_t *pix, *koff;
    const int bf16 = higan__bf16_mode();
    int first = 1;
    if (bf16 && dk->ukrw_bf16[0] && s->stride_w == 1) return higan__dconv_wgrad_pairs(dk, s, dw, x, dy);
    higan__dplan_init(&d, s, 0, bf16);
    KD = d.KD;
    if (s->N == 0 || d.P == 0) return 1;
    KDt = HIGAN__CEIL_DIV(KD, mr) * mr;
    kcmax = HIGAN__MAX(16, HIGAN__DCONV_B_FLOATS / (npan * NR));
    pxmax = d.ns * d.rows * d.OW;
    xfl = d.copy ? HIGAN__CEIL_DIV(d.ns * d.XS, 16) * 16 : 0;
    buf = higan__gemm_buffer((size_t)(KDt * OCp + npan * NR * kcmax + xfl + pxmax + KDt + 64));
    if (!buf) return 0;
    dwt = buf; bb = higan__align16(dwt + KDt * OCp); xp = bb + npan * NR * kcmax;
    pix = (int32_t *)(void *)(xp + xfl); koff = pix + pxmax;
    higan__dconv_koff(koff, &d, s, KDt);
    for (n0 = 0; n0 < s->N; n0 += d.ns)
        for (oh0 = 0; oh0 < d.OH; oh0 += d.rows) {
            const int64_t ns = HIGAN__MIN(d.ns, s->N - n0), nr = HIGAN__MIN(d.rows, d.OH - oh0);
            const int64_t pr0 = d.copy ? oh0 * s->stride_h : 0, npx = ns * nr * d.OW;
            const int64_t ntile = (KDt / mr) * npan;
            const float *xb;
            int64_t pc, t;
            if (d.copy) {
                higan__dconv_fill(xp, dk, &d, s, x, n0, ns, pr0,
                                  HIGAN__MIN(d.Hp - pr0, (nr - 1) * s->stride_h + s->KH));
                xb = xp;
            } else {
                xb = x + n0 * s->IC * s->H * s->W;
            }
            higan__dconv_pix(pix, &d, s, ns, oh0, nr, pr0, npx);
            for (pc = 0; pc < npx; pc += kcmax) {
                const int64_t kc = HIGAN__MIN(kcmax, npx - pc);
                int64_t p;
                /* dy^T for pixels [pc, pc+kc) of the chunk: B panels [kc][nv*vw], transposed
                   from each sample's run of pixels */
                HIGAN__PARALLEL_FOR_IF(npan > 1 && kc * OC >= 16384)
                for (p = 0; p < npan; ++p) {
                    const int64_t cols = HIGAN__MIN(NR, OC - p * NR), nvw = HIGAN__CEIL_DIV(cols, vw) * vw;
                    const int64_t spx = nr * d.OW;   /* pixels of one sample in the chunk */
                    float *dst = bb + p * NR * kcmax;
                    int64_t j, kk = 0;
                    while (kk < kc) {
                        const int64_t q = pc + kk, n = q / spx, r = q % spx, run = HIGAN__MIN(kc - kk, spx - r);
                        dk->transpose(dst + kk * nvw, nvw, dy + ((n0 + n) * OC + p * NR) * d.P + oh0 * d.OW + r,
                                      d.P, cols, run, 0, NULL);
                        kk += run;
                    }
                    for (j = cols; j < nvw; ++j)
                        for (kk = 0; kk < kc; ++kk) dst[kk * nvw + j] = 0.0f;
                    if (bf16) higan__round_bf16_n(dk, dst, kc * nvw);
                }
                HIGAN__PARALLEL_FOR_IF(ntile > 1 && kc * KD * OC >= 32768)
                for (t = 0; t < ntile; ++t) {
                    const int64_t rt = t / npan, pp = t % npan;
                    const int64_t nv = HIGAN__CEIL_DIV(HIGAN__MIN(NR, OC - pp * NR), vw);
                    const float *arow[HIGAN__MAX_MR];
                    int64_t i;
                    for (i = 0; i < mr; ++i) arow[i] = xb + koff[rt * mr + i];
                    dk->ukr[nv - 1](kc, arow, pix + pc, bb + pp * NR * kcmax,
                                    dwt + rt * mr * OCp + pp * NR, OCp, !first);
                }
                first = 0;
            }
        }
    dk->transpose(dw, KD, dwt, OCp, KD, OC, 1, NULL);
    return 1;
}

/* Pixel-vector passes, for few channels along the vector: vectors of VW output pixels of one
   row (stride_w 1) instead. Forward / dgrad: C[oc, pixels] = w[oc, k] x~[k, pixels], the
   weights broadcast from a packed panel [KD][mr], the pixels loaded in place from x~, the
   results stored straight into y (no transpose). Wgrad: dot products dw[oc, k] = sum over
   pixel vectors of dy[oc, vector] * x~[k, vector], kept as vector partial sums per (oc, k)
   and added across lanes at the end. x~ is always the padded copy here (the vectors of a row
   tail read past the row). */
#define HIGAN__PCONV_VBLOCK 256   /* pixel vectors per block of the dot products */
static int higan__pconv_forward(const higan__dconv_kernel *dk, const higan__ukrp_tile *tl,
                                const higan_conv2d_shape *s, float *y, const float *x,
                                const float *w, int wflip, const float *b, int accumulate) {
    const int mr = tl->mr, nvt = tl->nv, vw = dk->vw;
    const int64_t OC = s->OC, KK = s->KH * s->KW, npan = HIGAN__CEIL_DIV(OC, mr);
    higan__dplan d;
    int64_t KD, vpr, tmax, xfl, n0, oh0, m;
    float *buf, *apk, *xp;
    int32_t *xoff, *koff;
    int64_t *yoff;
    int *lanes;
    higan__dplan_init(&d, s, 0, 1);
    KD = d.KD;
    if (s->N == 0 || d.P == 0) return 1;
    vpr = HIGAN__CEIL_DIV(d.OW, vw);
    tmax = HIGAN__CEIL_DIV(d.ns * d.rows * vpr, nvt) * nvt;
    xfl = HIGAN__CEIL_DIV(d.ns * d.XS + 64, 16) * 16;   /* + slack: row-tail vectors read past */
    buf = higan__gemm_buffer((size_t)(npan * KD * mr + xfl + 4 * tmax + KD + 64));
    if (!buf) return 0;
    apk = buf; xp = higan__align16(apk + npan * KD * mr);
    yoff = (int64_t *)(void *)(xp + xfl); xoff = (int32_t *)(void *)(yoff + tmax);
    lanes = (int *)(void *)(xoff + tmax); koff = (int32_t *)(void *)(lanes + tmax);
    memset(xp + d.ns * d.XS, 0, 64 * sizeof(float));
    for (m = 0; m < npan; ++m) {   /* A panels [KD][mr]: rows (output channels) past OC zero */
        float *dst = apk + m * KD * mr;
        int64_t i, k;
        for (i = 0; i < mr; ++i) {
            const int64_t oc = m * mr + i;
            for (k = 0; k < KD; ++k)
                dst[k * mr + i] = oc >= OC ? 0.0f : !wflip ? w[oc * KD + k]
                                : w[((k / KK) * OC + oc) * KK + KK - 1 - k % KK];
        }
        if (higan__bf16_mode()) higan__round_bf16_n(dk, dst, KD * mr);
    }
    higan__dconv_koff(koff, &d, s, KD);
    for (n0 = 0; n0 < s->N; n0 += d.ns)
        for (oh0 = 0; oh0 < d.OH; oh0 += d.rows) {
            const int64_t ns = HIGAN__MIN(d.ns, s->N - n0), nr = HIGAN__MIN(d.rows, d.OH - oh0);
            const int64_t pr0 = oh0 * s->stride_h, nvec = ns * nr * vpr;
            const int64_t ntile = HIGAN__CEIL_DIV(nvec, nvt);
            int64_t q = 0, n, oh, v, t;
            higan__dconv_fill(xp, dk, &d, s, x, n0, ns, pr0,
                              HIGAN__MIN(d.Hp - pr0, (nr - 1) * s->stride_h + s->KH));
            for (n = 0; n < ns; ++n)
                for (oh = oh0; oh < oh0 + nr; ++oh)
                    for (v = 0; v < vpr; ++v, ++q) {
                        xoff[q] = (int32_t)(n * d.XS + (oh * s->stride_h - pr0) * d.Wp + v * vw);
                        yoff[q] = (n0 + n) * OC * d.P + oh * d.OW + v * vw;
                        lanes[q] = (int)HIGAN__MIN(vw, d.OW - v * vw);
                    }
            for (; q < ntile * nvt; ++q) { xoff[q] = xoff[0]; yoff[q] = yoff[0]; lanes[q] = 0; }
            HIGAN__PARALLEL_FOR_IF(ntile * npan > 1 && nvec * vw * KD * OC >= 32768)
            for (t = 0; t < ntile * npan; ++t) {
                const int64_t tt = t / npan, mm = t % npan;
                const float *bvec[8];
                float *cvec[8], bl[8];
                const int rows = (int)HIGAN__MIN(mr, OC - mm * mr);
                int i;
                for (i = 0; i < nvt; ++i) {
                    bvec[i] = xp + xoff[tt * nvt + i];
                    cvec[i] = y + yoff[tt * nvt + i] + mm * mr * d.P;
                }
                for (i = 0; i < mr; ++i) bl[i] = (b && !accumulate && i < rows) ? b[mm * mr + i] : 0.0f;
                tl->ukr(KD, apk + mm * KD * mr, bvec, koff, cvec, d.P, lanes + tt * nvt, accumulate,
                        rows, bl);
            }
        }
    return 1;
}

static int higan__pconv_wgrad(const higan__dconv_kernel *dk, const higan__ukrt_tile *tl,
                              const higan_conv2d_shape *s, float *dw, const float *x, const float *dy) {
    const int mro = tl->mro, mrk = tl->mrk, vw = dk->vw;
    const int64_t OC = s->OC, noc = HIGAN__CEIL_DIV(OC, mro);
    higan__dplan d;
    int64_t KD, nkt, ntile, vpr, vmax, xfl, dyfl, n0, oh0, oc;
    float *buf, *part, *xp, *dyc;
    const int bf16 = higan__bf16_mode();
    int32_t *xoff, *koff;
    int64_t *yoff;
    int *lanes;
    higan__dplan_init(&d, s, 0, 1);
    KD = d.KD;
    if (s->N == 0 || d.P == 0) return 1;
    nkt = HIGAN__CEIL_DIV(KD, mrk);
    ntile = noc * nkt;
    vpr = HIGAN__CEIL_DIV(d.OW, vw);
    vmax = d.ns * d.rows * vpr;
    xfl = HIGAN__CEIL_DIV(d.ns * d.XS, 16) * 16;
    /* bf16: dy of the chunk is read from a rounded copy [ns][OC][rows*OW] */
    dyfl = bf16 ? HIGAN__CEIL_DIV(d.ns * OC * d.rows * d.OW + 16, 16) * 16 : 0;
    buf = higan__gemm_buffer((size_t)(ntile * mro * mrk * vw + xfl + 4 * vmax + nkt * mrk + dyfl + 64));
    if (!buf) return 0;
    part = buf; xp = higan__align16(part + ntile * mro * mrk * vw);
    yoff = (int64_t *)(void *)(xp + xfl); xoff = (int32_t *)(void *)(yoff + vmax);
    lanes = (int *)(void *)(xoff + vmax); koff = (int32_t *)(void *)(lanes + vmax);
    dyc = (float *)(void *)(koff + nkt * mrk);
    memset(part, 0, (size_t)(ntile * mro * mrk * vw) * sizeof(float));
    higan__dconv_koff(koff, &d, s, nkt * mrk);
    for (n0 = 0; n0 < s->N; n0 += d.ns)
        for (oh0 = 0; oh0 < d.OH; oh0 += d.rows) {
            const int64_t ns = HIGAN__MIN(d.ns, s->N - n0), nr = HIGAN__MIN(d.rows, d.OH - oh0);
            const int64_t pr0 = oh0 * s->stride_h, nvec = ns * nr * vpr;
            int64_t q = 0, n, oh, v, vb;
            higan__dconv_fill(xp, dk, &d, s, x, n0, ns, pr0,
                              HIGAN__MIN(d.Hp - pr0, (nr - 1) * s->stride_h + s->KH));
            for (n = 0; n < ns; ++n)
                for (oh = oh0; oh < oh0 + nr; ++oh)
                    for (v = 0; v < vpr; ++v, ++q) {
                        xoff[q] = (int32_t)(n * d.XS + (oh * s->stride_h - pr0) * d.Wp + v * vw);
                        yoff[q] = bf16 ? (n * OC * nr + oh - oh0) * d.OW + v * vw
                                       : (n0 + n) * OC * d.P + oh * d.OW + v * vw;
                        lanes[q] = (int)HIGAN__MIN(vw, d.OW - v * vw);
                    }
            if (bf16) {   /* the chunk's rows of dy, rounded */
                int64_t t;
                HIGAN__PARALLEL_FOR_IF(ns * OC > 1 && ns * OC * nr * d.OW >= 65536)
                for (t = 0; t < ns * OC; ++t) {
                    float *dst = dyc + t * nr * d.OW;
                    memcpy(dst, dy + ((n0 + t / OC) * OC + t % OC) * d.P + oh0 * d.OW, (size_t)(nr * d.OW) * sizeof(float));
                    higan__round_bf16_n(dk, dst, nr * d.OW);
                }
            }
            /* blocks of pixel vectors: their dy and x~ rows stay in cache across the tiles */
            for (vb = 0; vb < nvec; vb += HIGAN__PCONV_VBLOCK) {
                const int64_t nb = HIGAN__MIN(HIGAN__PCONV_VBLOCK, nvec - vb);
                int64_t t;
                HIGAN__PARALLEL_FOR_IF(ntile > 1 && nb * vw * KD * OC >= 32768)
                for (t = 0; t < ntile; ++t) {
                    const int64_t ot = t / nkt, kt = t % nkt;
                    const float *drow[8];
                    int i;
                    for (i = 0; i < mro; ++i) {
                        const int64_t oc_i = ot * mro + i < OC ? ot * mro + i : 0;
                        drow[i] = bf16 ? dyc + oc_i * nr * d.OW : dy + oc_i * d.P;
                    }
                    tl->ukr(nb, xoff + vb, yoff + vb, lanes + vb, xp, koff + kt * mrk, drow,
                            part + t * mro * mrk * vw);
                }
            }
        }
    /* dw[oc, k] += the lanes of its partial sum, in lane order */
    HIGAN__PARALLEL_FOR_IF(OC > 1 && OC * KD * vw >= 65536)
    for (oc = 0; oc < OC; ++oc) {
        int64_t k;
        int l;
        for (k = 0; k < KD; ++k) {
            const float *pp = part + ((oc / mro) * nkt + k / mrk) * mro * mrk * vw +
                              ((oc % mro) * mrk + k % mrk) * vw;
            float acc = 0.0f;
            for (l = 0; l < vw; ++l) acc += pp[l];
            dw[oc * KD + k] += acc;
        }
    }
    return 1;
}

/* ---- choosing a way per pass ------------------------------------------------------------------
   A rough model of the fraction of the FMA peak each way reaches, from how full its vectors
   and tiles are (measured on the shapes in bench/gemm_bench.c): channel vectors (c), pixel
   vectors (p), or the packed GEMM (about 25% on the shapes where the others do worse). */
/* Tests force a way here: -1 choose, 0 the packed GEMM, 1 channel vectors, 2 pixel vectors
   (a forced way that cannot run the pass falls back to the packed GEMM). */
static int higan__conv_force = -1;
static double higan__fill(int64_t n, int64_t unit) { return (double)n / (double)(HIGAN__CEIL_DIV(n, unit) * unit); }
static const higan__ukrp_tile *higan__pick_pix(const higan__dconv_kernel *dk, int64_t M, double *frac) {
    const higan__ukrp_tile *best = NULL;
    double bf = 0;
    int i;
    for (i = 0; i < 5; ++i) {
        const higan__ukrp_tile *t = &dk->pix[i];
        double f;
        if (!t->mr) continue;
        f = higan__fill(M, t->mr) * (t->mr >= 4 ? 1.0 : 0.8);   /* narrow tiles: load-bound */
        if (f >= bf) { bf = f; best = t; }
    }
    *frac = bf;
    return best;
}
/* forward-shaped pass (a forward, or a dgrad as its transposed forward): 1 if done here */
static int higan__dconv_fwd_any(const higan__level_ops *ops, const higan_conv2d_shape *s, float *y,
                                const float *x, const float *w, int wflip, const float *b, int accumulate) {
    const higan__dconv_kernel *dk = &ops->dc;
    const int64_t KD = s->IC * s->KH * s->KW, OW = higan_conv2d_out_w(s);
    const higan__ukrp_tile *pt = NULL;
    double ec = 0, ep = 0, rowf = 0;
    int done = 0;
    if (!dk->mr) return 0;
    ec = higan__fill(s->OC, dk->vw) * (double)KD / (double)(KD + 16);
    if (s->stride_w == 1 && dk->pix[0].mr) {
        pt = higan__pick_pix(dk, s->OC, &rowf);
        ep = 0.85 * higan__fill(OW, dk->vw) * rowf;
    }
    if (higan__conv_force >= 0) { ec = higan__conv_force == 1; ep = higan__conv_force == 2 && pt ? 1 : 0; }
    if (ec >= ep && ec > 0.25) done = higan__dconv_forward(dk, s, y, x, w, wflip, b, accumulate);
    else if (ep > ec && ep > 0.25) done = higan__pconv_forward(dk, pt, s, y, x, w, wflip, b, accumulate);
    if (done) higan__count_flops((uint64_t)(2 * s->N * s->OC * KD * higan_conv2d_out_h(s) * OW));   /* as the GEMM would */
    return done;
}
static int higan__dconv_wgrad_any(const higan__level_ops *ops, const higan_conv2d_shape *s, float *dw,
                                  const float *x, const float *dy) {
    const higan__dconv_kernel *dk = &ops->dc;
    const higan__ukrt_tile *tt = NULL;
    double ec, et = 0;
    int i, done = 0;
    if (!dk->mr) return 0;
    ec = higan__fill(s->OC, dk->vw);
    if (s->stride_w == 1)
        for (i = 0; i < 3; ++i) {
            const higan__ukrt_tile *t = &dk->dot[i];
            double f;
            if (!t->mro) continue;
            f = 0.6 * higan__fill(higan_conv2d_out_w(s), dk->vw) * higan__fill(s->OC, t->mro);
            if (f >= et) { et = f; tt = t; }
        }
    if (higan__conv_force >= 0) { ec = higan__conv_force == 1; et = higan__conv_force == 2 && tt ? 1 : 0; }
    if (ec >= et && ec > 0.25) done = higan__dconv_wgrad(dk, s, dw, x, dy);
    else if (et > ec && et > 0.25) done = higan__pconv_wgrad(dk, tt, s, dw, x, dy);
    if (done)
        higan__count_flops((uint64_t)(2 * s->N * s->OC * s->IC * s->KH * s->KW * higan_conv2d_out_h(s) *
                                      higan_conv2d_out_w(s)));
    return done;
}
/* dgrad as a forward convolution of dy: stride 1, and every padding at most kernel size - 1 */
static int higan__dconv_dgrad_any(const higan__level_ops *ops, const higan_conv2d_shape *s, float *dx,
                                  const float *dy, const float *w) {
    higan_conv2d_shape t;
    if (s->stride_h != 1 || s->stride_w != 1 || s->pad_top >= s->KH || s->pad_bottom >= s->KH ||
        s->pad_left >= s->KW || s->pad_right >= s->KW)
        return 0;
    t = higan_conv2d_make_shape(s->N, s->OC, higan_conv2d_out_h(s), higan_conv2d_out_w(s), s->IC,
                                s->KH, s->KW, 1, 1, s->KH - 1 - s->pad_top, s->KH - 1 - s->pad_bottom,
                                s->KW - 1 - s->pad_left, s->KW - 1 - s->pad_right);
    return higan__dconv_fwd_any(ops, &t, dx, dy, w, 1, NULL, 1);
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
    if (!higan__conv_pointwise(s) && higan__dconv_fwd_any(ops, s, y, x, w, 0, b, 0)) return HIGAN_OK;
    higan__src_mat(&A, w, KD, 0);
    bt.along_k = 0; bt.a_step = 0; bt.b_step = s->IC * s->H * s->W; bt.c_step = s->OC * P;
    /* groups of samples as the driver would make them, so the bias written into C is still
       in cache when the GEMM adds to it (beta = 1) */
    g = higan__gemm_group(higan__gemm_k(ops), s->N, s->OC, P, KD);
    for (n0 = 0; n0 < s->N; n0 += g) {
        float *yg = y + n0 * s->OC * P;
        const float *xg = x + n0 * s->IC * s->H * s->W;
        bt.nb = HIGAN__MIN(g, s->N - n0);
        if (b)
            for (oc = 0; oc < bt.nb * s->OC; ++oc)
                for (p = 0; p < P; ++p) yg[oc * P + p] = b[oc % s->OC];
        if (higan__conv_pointwise(s)) higan__src_mat(&B, xg, P, 0);
        else higan__src_im2col(&B, xg, s, 0);
        higan__gemm_driver(higan__gemm_k(ops), s->OC, P, KD, 1.0f, &A, &B, b ? 1.0f : 0.0f, yg, P, &bt);
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
    if (dw && !higan__conv_pointwise(s) && higan__dconv_wgrad_any(ops, s, dw, x, dy)) dw = NULL;  /* done */
    if (dx && scratch && !higan__conv_pointwise(s) && higan__dconv_dgrad_any(ops, s, dx, dy, w)) dx = NULL;
    if (dw) {
        /* dw [OC, KD] += sum_n dy_n [OC, P] col(x_n)^T [P, KD]: one product, K = N*P (samples
           in order; C is read and written once per K block, not once per sample) */
        higan__batch bt;
        higan__src_mat(&A, dy, P, 0);
        if (higan__conv_pointwise(s)) higan__src_mat(&B, x, P, 1);
        else higan__src_im2col(&B, x, s, 1);
        bt.nb = s->N; bt.along_k = 1; bt.a_step = s->OC * P; bt.b_step = s->IC * s->H * s->W; bt.c_step = 0;
        higan__gemm_driver(higan__gemm_k(ops), s->OC, KD, s->N * P, 1.0f, &A, &B, 1.0f, dw, KD, &bt);
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
            higan__gemm_driver(higan__gemm_k(ops), s->IC, P, s->OC, 1.0f, &A, &B, 1.0f, dx, P, &bt);
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
                    higan__gemm_driver(higan__gemm_k(ops), KD, P, s->OC, 1.0f, &A, &B, 0.0f, dcol, P, &bt);
                    for (i = 0; i < bt.nb; ++i)
                        higan__col2im_add(dx + (n0 + i) * s->IC * s->H * s->W, dcol + i * KD * P, s, 0, P);
                }
            } else {
                for (n0 = 0; n0 < s->N; ++n0)
                    for (p0 = 0; p0 < P; p0 += chunk) {
                        const int64_t pc = HIGAN__MIN(chunk, P - p0);
                        higan__src_mat(&B, dy + n0 * s->OC * P + p0, P, 0);
                        higan__gemm_driver(higan__gemm_k(ops), KD, pc, s->OC, 1.0f, &A, &B, 0.0f, dcol, pc, NULL);
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
    mark = higan_arena_mark(t->data);
    t->be->conv2d_backward(t->be->ctx, dx, dw, db, c->y->grad, c->x->data, c->w->data, &c->s, t->data);
    higan_arena_release(t->data, mark);
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
    mark = higan_arena_mark(t->data);
    t->be->conv2d_forward(t->be->ctx, y->data, x->data, w->data, b ? b->data : NULL, &s, t->data);
    higan_arena_release(t->data, mark);
    if (y->requires_grad) {
        if (!(c = (higan__conv2d_ctx *)higan_tape_ctx(t, sizeof *c))) return NULL;
        c->x = x; c->w = w; c->b = b; c->y = y; c->s = s;
        higan_tape_record(t, y, higan__conv2d_backward_op, c);
    }
    return y;
}

/* ---- upsampled convolution (nearest upsampling fused into a stride-1 conv) --------------------- */
static int64_t higan__floor_div(int64_t a, int64_t b) { return a >= 0 ? a / b : -((-a + b - 1) / b); }
/* taps and offsets of every phase of one axis (a < u): off[a * K + k], T[a], lo[a] = -smallest
   offset; returns 0 where a would need a negative left padding */
static int higan__up_taps(int64_t u, int64_t K, int64_t p, int64_t *off, int64_t *T, int64_t *lo) {
    int64_t a, k;
    HIGAN_ASSERT(u >= 1 && u <= 16 && K >= 1 && K <= 64);
    for (a = 0; a < u; ++a) {
        const int64_t l = higan__floor_div(a - p, u), h = higan__floor_div(a + K - 1 - p, u);
        for (k = 0; k < K; ++k) off[a * K + k] = higan__floor_div(a + k - p, u) - l;
        T[a] = h - l + 1;
        lo[a] = -l;
        if (lo[a] < 0) return 0;
    }
    return 1;
}
HIGAN_DEF int64_t higan_conv2d_upsampled_weights_size(int64_t OC, int64_t IC, int64_t KH, int64_t KW,
                                                      int64_t pad_top, int64_t pad_left, int64_t uh, int64_t uw) {
    int64_t offh[16 * 64], offw[16 * 64], Th[16], Tw[16], lh[16], lw[16], a, c, n = 0;
    higan__up_taps(uh, KH, pad_top, offh, Th, lh);
    higan__up_taps(uw, KW, pad_left, offw, Tw, lw);
    for (a = 0; a < uh; ++a)
        for (c = 0; c < uw; ++c) n += OC * IC * Th[a] * Tw[c];
    return n;
}
HIGAN_DEF void higan_conv2d_upsampled_weights(float *wp, const float *w, int64_t OC, int64_t IC, int64_t KH,
                                              int64_t KW, int64_t pad_top, int64_t pad_left, int64_t uh, int64_t uw) {
    int64_t offh[16 * 64], offw[16 * 64], Th[16], Tw[16], lh[16], lw[16], base[256], a, c, t, np = 0, n = 0;
    higan__up_taps(uh, KH, pad_top, offh, Th, lh);
    higan__up_taps(uw, KW, pad_left, offw, Tw, lw);
    HIGAN_ASSERT(uh * uw <= 256);
    for (a = 0; a < uh; ++a)
        for (c = 0; c < uw; ++c) { base[np++] = n; n += OC * IC * Th[a] * Tw[c]; }
    /* one pass over w: each (oc, ic) kernel's taps summed into every phase, in (kh, kw) order */
    HIGAN__PARALLEL_FOR_IF(OC * IC > 1 && OC * IC * KH * KW * uh * uw >= 262144)
    for (t = 0; t < OC * IC; ++t) {
        const float *src = w + t * KH * KW;
        int64_t pa, pc, kh, kw, q = 0;
        for (pa = 0; pa < uh; ++pa)
            for (pc = 0; pc < uw; ++pc, ++q) {
                const int64_t Ta = Th[pa], Tc = Tw[pc];
                const int64_t *oh = offh + pa * KH, *ow = offw + pc * KW;
                float *dst = wp + base[q] + t * Ta * Tc;
                for (kh = 0; kh < Ta * Tc; ++kh) dst[kh] = 0.0f;
                for (kh = 0; kh < KH; ++kh)
                    for (kw = 0; kw < KW; ++kw) dst[oh[kh] * Tc + ow[kw]] += src[kh * KW + kw];
            }
    }
}
HIGAN_DEF higan_status higan_conv2d_upsampled_forward(float *y, const float *x, const float *w, const float *b,
                                                      const higan_conv2d_shape *s, int64_t uh, int64_t uw,
                                                      higan_arena *scratch) {
    return higan_conv2d_upsampled_forward_wp(y, x, w, NULL, b, s, uh, uw, scratch);
}
HIGAN_DEF higan_status higan_conv2d_upsampled_forward_wp(float *y, const float *x, const float *w, const float *wp,
                                                         const float *b, const higan_conv2d_shape *s, int64_t uh,
                                                         int64_t uw, higan_arena *scratch) {
    int64_t offh[16 * 64], offw[16 * 64], Th[16], Tw[16], lh[16], lw[16], na[16], nc[16], ph[16], pw[16];
    int64_t yo[256], wo[256];
    const int64_t OH = higan_conv2d_out_h(s), OW = higan_conv2d_out_w(s);
    const int64_t OC = s->OC, IC = s->IC, N = s->N;
    int64_t Hx, Wx, a, c, q, t, ny = 0, nw = 0;
    size_t mark;
    float *yp;
    higan__conv_check(s);
    HIGAN_ASSERT(uh >= 1 && uw >= 1 && uh <= 16 && uw <= 16 && s->stride_h == 1 && s->stride_w == 1);
    HIGAN_ASSERT(s->H % uh == 0 && s->W % uw == 0 && s->KH <= 64 && s->KW <= 64 && scratch && (w || wp));
    Hx = s->H / uh; Wx = s->W / uw;
    if (!higan__up_taps(uh, s->KH, s->pad_top, offh, Th, lh) || !higan__up_taps(uw, s->KW, s->pad_left, offw, Tw, lw))
        return higan__error(HIGAN_ERR_UNSUPPORTED, "conv2d_upsampled: a phase needs a negative padding");
    /* phase outputs and the padding below / right of x each needs (checked before anything
       is written) */
    for (a = 0; a < uh; ++a) {
        na[a] = OH > a ? (OH - a + uh - 1) / uh : 0;
        ph[a] = na[a] - 1 + Th[a] - Hx - lh[a];
        if (na[a] && ph[a] < 0) return higan__error(HIGAN_ERR_UNSUPPORTED, "conv2d_upsampled: negative padding");
    }
    for (c = 0; c < uw; ++c) {
        nc[c] = OW > c ? (OW - c + uw - 1) / uw : 0;
        pw[c] = nc[c] - 1 + Tw[c] - Wx - lw[c];
        if (nc[c] && pw[c] < 0) return higan__error(HIGAN_ERR_UNSUPPORTED, "conv2d_upsampled: negative padding");
    }
    if (N == 0 || OH == 0 || OW == 0) return HIGAN_OK;
    for (a = q = 0; a < uh; ++a)
        for (c = 0; c < uw; ++c, ++q) {
            yo[q] = ny; ny += N * OC * na[a] * nc[c];
            wo[q] = nw; nw += OC * IC * Th[a] * Tw[c];
        }
    mark = higan_arena_mark(scratch);
    if (!wp) {
        float *wq = higan_arena_floats(scratch, nw);
        if (!wq) return HIGAN_ERR_NOMEM;
        higan_conv2d_upsampled_weights(wq, w, OC, IC, s->KH, s->KW, s->pad_top, s->pad_left, uh, uw);
        wp = wq;
    }
    /* every phase's output [N, OC, na, nc] (one phase alone: straight into y) */
    yp = uh * uw == 1 ? y : higan_arena_floats(scratch, ny);
    if (!yp) { higan_arena_release(scratch, mark); return HIGAN_ERR_NOMEM; }
    for (a = q = 0; a < uh; ++a)
        for (c = 0; c < uw; ++c, ++q) {
            higan_conv2d_shape ps;
            higan_status st;
            if (!na[a] || !nc[c]) continue;
            ps = higan_conv2d_make_shape(N, IC, Hx, Wx, OC, Th[a], Tw[c], 1, 1, lh[a], ph[a], lw[c], pw[c]);
            st = higan_conv2d_forward(yp + yo[q], x, wp + wo[q], b, &ps, scratch);
            if (st != HIGAN_OK) { higan_arena_release(scratch, mark); return st; }
        }
    /* interleave: output row uh m + a, column uw n + c is phase (a, c)'s (m, n) */
    if (yp != y) {
        HIGAN__PARALLEL_FOR_IF(N * OC > 1 && N * OC * OH * OW >= 65536)
        for (t = 0; t < N * OC; ++t) {
            int64_t i, j, m;
            for (i = 0; i < OH; ++i) {
                const int64_t pa = i % uh;
                float *dst = y + (t * OH + i) * OW;
                m = i / uh;
                if (uw == 1) {
                    memcpy(dst, yp + yo[pa] + (t * na[pa] + m) * nc[0], sizeof(float) * (size_t)OW);
                } else if (uw == 2) {
                    const float *s0 = yp + yo[pa * 2] + (t * na[pa] + m) * nc[0];
                    const float *s1 = yp + yo[pa * 2 + 1] + (t * na[pa] + m) * nc[1];
                    for (j = 0; j < nc[1]; ++j) { dst[2 * j] = s0[j]; dst[2 * j + 1] = s1[j]; }
                    if (nc[0] > nc[1]) dst[2 * nc[1]] = s0[nc[1]];
                } else {
                    for (j = 0; j < OW; ++j) {
                        const int64_t pc = j % uw;
                        dst[j] = yp[yo[pa * uw + pc] + (t * na[pa] + m) * nc[pc] + j / uw];
                    }
                }
            }
        }
    }
    higan_arena_release(scratch, mark);
    return HIGAN_OK;
}
/* backward: the gradients of conv2d(up(x)) (the same function; the forward's rounding plays no
   part): up(x) rebuilt in scratch, the convolution's backward on it, dx += the block sums */
typedef struct { higan_var *x, *w, *b, *y; higan_conv2d_shape s; int uh, uw; } higan__upconv_ctx;
static void higan__upconv_backward_op(higan_tape *t, void *p) {
    higan__upconv_ctx *c = (higan__upconv_ctx *)p;
    float *dx = higan_var_grad(t, c->x), *dw = higan_var_grad(t, c->w);
    float *db = c->b ? higan_var_grad(t, c->b) : NULL, *xu, *dxu = NULL;
    const int64_t nu = c->s.N * c->s.IC * c->s.H * c->s.W;
    size_t mark;
    if (!dx && !dw && !db) return;
    mark = higan_arena_mark(t->arena);
    xu = higan_arena_floats(t->arena, nu);
    if (dx) dxu = higan_arena_zeros(t->arena, nu);
    if (xu && (!dx || dxu)) {
        higan_upsample_nearest_forward(xu, c->x->data, c->s.N, c->s.IC, c->s.H / c->uh, c->s.W / c->uw, c->uh, c->uw);
        higan_conv2d_backward(dxu, dw, db, c->y->grad, xu, c->w->data, &c->s, t->arena);
        if (dx) higan_upsample_nearest_backward(dx, dxu, c->s.N, c->s.IC, c->s.H / c->uh, c->s.W / c->uw, c->uh, c->uw);
    }
    higan_arena_release(t->arena, mark);
}
HIGAN_DEF higan_var *higan_upsample_conv2d(higan_tape *t, higan_var *x, higan_var *w, higan_var *b,
                                           int uh, int uw, int64_t pad_top, int64_t pad_bottom,
                                           int64_t pad_left, int64_t pad_right) {
    higan_var *in[3], *y;
    higan__upconv_ctx *c;
    higan_conv2d_shape s;
    int64_t shape[4];
    size_t mark;
    higan_status st;
    if (!x || !w) return NULL;
    HIGAN_ASSERT(x->ndim == 4 && w->ndim == 4 && w->shape[1] == x->shape[1] && uh >= 1 && uw >= 1);
    if (b) HIGAN_ASSERT(b->ndim == 1 && b->shape[0] == w->shape[0]);
    in[0] = x; in[1] = w; in[2] = b;
    s = higan_conv2d_make_shape(x->shape[0], x->shape[1], uh * x->shape[2], uw * x->shape[3], w->shape[0],
                                w->shape[2], w->shape[3], 1, 1, pad_top, pad_bottom, pad_left, pad_right);
    higan__conv_check(&s);
    shape[0] = s.N; shape[1] = s.OC; shape[2] = higan_conv2d_out_h(&s); shape[3] = higan_conv2d_out_w(&s);
    if (!(y = higan_op_output(t, 4, shape, in, b ? 3 : 2))) return NULL;
    mark = higan_arena_mark(t->arena);
    st = higan_conv2d_upsampled_forward(y->data, x->data, w->data, b ? b->data : NULL, &s, uh, uw, t->arena);
    higan_arena_release(t->arena, mark);
    if (st == HIGAN_ERR_UNSUPPORTED)   /* (y is left unused in the arena) */
        return higan_conv2d(t, higan_upsample_nearest(t, x, uh, uw), w, b, 1, 1, pad_top, pad_bottom, pad_left,
                            pad_right);
    if (st != HIGAN_OK) return NULL;
    if (y->requires_grad) {
        if (!(c = (higan__upconv_ctx *)higan_tape_ctx(t, sizeof *c))) return NULL;
        c->x = x; c->w = w; c->b = b; c->y = y; c->s = s; c->uh = uh; c->uw = uw;
        higan_tape_record(t, y, higan__upconv_backward_op, c);
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
    t->be->linear_backward(t->be->ctx, dx, dw, db, c->y->grad, c->x->data, c->w->data, c->n, c->in, c->out);
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
    t->be->linear_forward(t->be->ctx, y->data, x->data, w->data, b ? b->data : NULL, rows, IN, OUT);
    if (y->requires_grad) {
        if (!(c = (higan__linear_ctx *)higan_tape_ctx(t, sizeof *c))) return NULL;
        c->x = x; c->w = w; c->b = b; c->y = y; c->n = rows; c->in = IN; c->out = OUT;
        higan_tape_record(t, y, higan__linear_backward_op, c);
    }
    return y;
}
/* ==== NORMALISATION OPS (implementation) ================================================
   Reductions are accumulated in double inside one thread; parallel loops only split
   independent outputs (rows, channels, planes), so results do not depend on the threads. */

/* ---- spectral norm -------------------------------------------------------------------- */
#define HIGAN__SN_BLOCK 64   /* columns per block of v = u0 W (W is then streamed by rows) */

HIGAN_DEF float higan_spectral_norm_sigma(float *u, float *v, const float *w, const float *u0,
                                          int64_t out, int64_t in, float eps) {
    int64_t j0, i, j;
    double nv = 0, nt = 0, sigma = 0;
    float dv, dt;
    /* v [in] = u0 [out] . W [out, in], blocks of columns so each thread owns its columns */
    HIGAN__PARALLEL_FOR_IF(out * in >= 65536)
    for (j0 = 0; j0 < in; j0 += HIGAN__SN_BLOCK) {
        double acc[HIGAN__SN_BLOCK];
        int64_t jn = in - j0 < HIGAN__SN_BLOCK ? in - j0 : HIGAN__SN_BLOCK, ii, jj;
        for (jj = 0; jj < jn; ++jj) acc[jj] = 0;
        for (ii = 0; ii < out; ++ii) {
            const float *wr = w + ii * in + j0;
            double ui = (double)u0[ii];
            for (jj = 0; jj < jn; ++jj) acc[jj] += ui * (double)wr[jj];
        }
        for (jj = 0; jj < jn; ++jj) v[j0 + jj] = (float)acc[jj];
    }
    /* F.normalize: a / max(||a||, eps) */
    for (j = 0; j < in; ++j) nv += (double)v[j] * (double)v[j];
    nv = sqrt(nv);
    dv = (float)(nv > (double)eps ? nv : (double)eps);
    for (j = 0; j < in; ++j) v[j] = v[j] / dv;
    /* t [out] = v . W^T (kept in u until normalised; u may alias u0, no longer needed) */
    HIGAN__PARALLEL_FOR_IF(out * in >= 65536)
    for (i = 0; i < out; ++i) {
        const float *wr = w + i * in;
        double acc = 0;
        int64_t jj;
        for (jj = 0; jj < in; ++jj) acc += (double)wr[jj] * (double)v[jj];
        u[i] = (float)acc;
    }
    for (i = 0; i < out; ++i) nt += (double)u[i] * (double)u[i];
    nt = sqrt(nt);
    dt = (float)(nt > (double)eps ? nt : (double)eps);
    /* sigma = t . u with u = normalize(t), as BigGAN's (v W^T) u^T */
    for (i = 0; i < out; ++i) {
        float ui = u[i] / dt;
        sigma += (double)u[i] * (double)ui;
        u[i] = ui;
    }
    return (float)sigma;
}

/* y, w: [out, in]; u [out], v [in]; sigma [1] */
HIGAN_DEF void higan_spectral_norm_forward(float *y, float *u, float *v, float *sigma,
                                           const float *w, const float *u0,
                                           int64_t out, int64_t in, float eps) {
    int64_t i;
    float s = higan_spectral_norm_sigma(u, v, w, u0, out, in, eps);
    *sigma = s;
    HIGAN__PARALLEL_FOR_IF(out * in >= 65536)
    for (i = 0; i < out; ++i) {
        int64_t j;
        for (j = 0; j < in; ++j) y[i * in + j] = w[i * in + j] / s;
    }
}

/* dw, dy, w: [out, in]; u [out], v [in] */
HIGAN_DEF void higan_spectral_norm_backward(float *dw, const float *dy, const float *w,
                                            const float *u, const float *v, float sigma,
                                            int64_t out, int64_t in) {
    int64_t k, i, n = out * in;
    double dot = 0;
    float coef;
    if (!dw) return;
    /* d sigma = -sum(dy * W) / sigma^2; sigma = u^T W v so d sigma / dW = u v^T */
    for (k = 0; k < n; ++k) dot += (double)dy[k] * (double)w[k];
    coef = (float)(dot / ((double)sigma * (double)sigma));
    HIGAN__PARALLEL_FOR_IF(n >= 65536)
    for (i = 0; i < out; ++i) {
        float ci = coef * u[i];
        int64_t j;
        for (j = 0; j < in; ++j) dw[i * in + j] += dy[i * in + j] / sigma - ci * v[j];
    }
}

typedef struct { higan_var *w, *y; float *u, *v; float *sigma; int64_t out, in; } higan__sn_ctx;

static void higan__sn_backward_op(higan_tape *t, void *p) {
    higan__sn_ctx *c = (higan__sn_ctx *)p;
    float *dw = higan_var_grad(t, c->w);
    if (dw) t->be->spectral_norm_backward(t->be->ctx, dw, c->y->grad, c->w->data, c->u, c->v, c->sigma,
                                          c->out, c->in);
}

HIGAN_DEF higan_var *higan_spectral_norm(higan_tape *t, higan_var *w, float *u0, float *sv0,
                                         int64_t out_features, int train) {
    higan_var *y;
    higan__sn_ctx *c = NULL;
    float *u, *v, *sigma;
    int64_t n, in;
    if (!w) return NULL;
    n = higan_var_numel(w);
    HIGAN_ASSERT(u0 != NULL && out_features > 0 && n % out_features == 0);
    in = n / out_features;
    if (!(y = higan_op_output(t, w->ndim, w->shape, &w, 1))) return NULL;
    u = higan_arena_floats(t->data, out_features);
    v = higan_arena_floats(t->data, in);
    sigma = higan_arena_floats(t->data, 1);     /* the backend's memory: a device writes it */
    if (!u || !v || !sigma) return NULL;
    if (y->requires_grad && !(c = (higan__sn_ctx *)higan_tape_ctx(t, sizeof *c))) return NULL;
    t->be->spectral_norm_forward(t->be->ctx, y->data, u, v, sigma, w->data, u0, out_features, in,
                                 HIGAN_SN_EPS);
    if (train) {   /* BigGAN updates the buffers in training mode only */
        t->be->copy(t->be->ctx, u0, u, sizeof(float) * (size_t)out_features);
        if (sv0) t->be->copy(t->be->ctx, sv0, sigma, sizeof(float));
    }
    if (c) {
        c->w = w; c->y = y; c->u = u; c->v = v; c->sigma = sigma;
        c->out = out_features; c->in = in;
        higan_tape_record(t, y, higan__sn_backward_op, c);
    }
    return y;
}

/* ---- batch statistics (the one place for BN / CBN statistics) --------------------------- */
/* Per-plane kernels of the statistics, normalisation and its backward. The scalar ones are the
   reference; the AVX-512 ones widen 8 floats at a time to doubles (the same double sums in
   another, fixed order) and do the float arithmetic of the scalar loops in the same order, so
   y and dx differ from the scalar ones only through the last bits of mean / rstd / the sums. */
typedef struct {
    double (*sum)(const float *x, int64_t n);                      /* sum x */
    double (*sqdev)(const float *x, int64_t n, double m);          /* sum (x - m)^2 */
    /* s += sum g, sx += sum g * xh, xh = (x - m) * r in float */
    void (*dsums)(const float *g, const float *x, int64_t n, float m, float r, double *s, double *sx);
    /* y = (x - m) * r * gain + shift */
    void (*apply)(float *y, const float *x, int64_t n, float m, float r, float gain, float shift);
    /* dx += r * (g * gain - a - xh * b), xh = (x - m) * r */
    void (*dx)(float *dx, const float *g, const float *x, int64_t n, float m, float r, float gain,
               float a, float b);
} higan__bn_kernels;
static double higan__bn_sum_scalar(const float *x, int64_t n) {
    double s = 0;
    int64_t k;
    for (k = 0; k < n; ++k) s += (double)x[k];
    return s;
}
static double higan__bn_sqdev_scalar(const float *x, int64_t n, double m) {
    double q = 0;
    int64_t k;
    for (k = 0; k < n; ++k) { double d = (double)x[k] - m; q += d * d; }
    return q;
}
static void higan__bn_dsums_scalar(const float *g, const float *x, int64_t n, float m, float r,
                                   double *s, double *sx) {
    double a = 0, b = 0;
    int64_t k;
    for (k = 0; k < n; ++k) {
        float xh = (x[k] - m) * r;
        a += (double)g[k];
        b += (double)g[k] * (double)xh;
    }
    *s += a; *sx += b;
}
static void higan__bn_apply_scalar(float *y, const float *x, int64_t n, float m, float r, float gain,
                                   float shift) {
    int64_t k;
    for (k = 0; k < n; ++k) y[k] = (x[k] - m) * r * gain + shift;
}
static void higan__bn_dx_scalar(float *dx, const float *g, const float *x, int64_t n, float m, float r,
                                float gain, float a, float b) {
    int64_t k;
    for (k = 0; k < n; ++k) {
        float xh = (x[k] - m) * r;
        dx[k] += r * (g[k] * gain - a - xh * b);
    }
}
#ifdef HIGAN__GEMM_AVX512
/* 16 floats widened to two vectors of 8 doubles (the maskz forms: GCC 12's plain ones start
   from an undefined vector and warn -Wmaybe-uninitialized in C++) */
static inline HIGAN__TGT_avx512 __m512d higan__bn_lo_avx512(__m512 v) {
    return _mm512_maskz_cvtps_pd((__mmask8)0xFF, _mm256_castpd_ps(_mm512_maskz_extractf64x4_pd((__mmask8)0xF,
                                                                                              _mm512_castps_pd(v), 0)));
}
static inline HIGAN__TGT_avx512 __m512d higan__bn_hi_avx512(__m512 v) {
    return _mm512_maskz_cvtps_pd((__mmask8)0xFF, _mm256_castpd_ps(_mm512_maskz_extractf64x4_pd((__mmask8)0xF,
                                                                                              _mm512_castps_pd(v), 1)));
}
static inline HIGAN__TGT_avx512 double higan__bn_hsum_avx512(__m512d v) {
    double t[8];
    _mm512_storeu_pd(t, v);
    return ((t[0] + t[1]) + (t[2] + t[3])) + ((t[4] + t[5]) + (t[6] + t[7]));
}
static HIGAN__TGT_avx512 double higan__bn_sum_avx512(const float *x, int64_t n) {
    __m512d s0 = _mm512_setzero_pd(), s1 = s0;
    double s;
    int64_t k = 0;
    for (; k + 16 <= n; k += 16) {
        __m512 v = _mm512_loadu_ps(x + k);
        s0 = _mm512_add_pd(s0, higan__bn_lo_avx512(v));
        s1 = _mm512_add_pd(s1, higan__bn_hi_avx512(v));
    }
    s = higan__bn_hsum_avx512(_mm512_add_pd(s0, s1));
    for (; k < n; ++k) s += (double)x[k];
    return s;
}
static HIGAN__TGT_avx512 double higan__bn_sqdev_avx512(const float *x, int64_t n, double m) {
    __m512d q0 = _mm512_setzero_pd(), q1 = q0, mv = _mm512_set1_pd(m);
    double q;
    int64_t k = 0;
    for (; k + 16 <= n; k += 16) {
        __m512 v = _mm512_loadu_ps(x + k);
        __m512d d0 = _mm512_sub_pd(higan__bn_lo_avx512(v), mv), d1 = _mm512_sub_pd(higan__bn_hi_avx512(v), mv);
        q0 = _mm512_add_pd(q0, _mm512_mul_pd(d0, d0));
        q1 = _mm512_add_pd(q1, _mm512_mul_pd(d1, d1));
    }
    q = higan__bn_hsum_avx512(_mm512_add_pd(q0, q1));
    for (; k < n; ++k) { double d = (double)x[k] - m; q += d * d; }
    return q;
}
static HIGAN__TGT_avx512 void higan__bn_dsums_avx512(const float *g, const float *x, int64_t n, float m,
                                                     float r, double *s, double *sx) {
    __m512d s0 = _mm512_setzero_pd(), s1 = s0, t0 = s0, t1 = s0;
    __m512 mv = _mm512_set1_ps(m), rv = _mm512_set1_ps(r);
    double a, b;
    int64_t k = 0;
    for (; k + 16 <= n; k += 16) {
        __m512 gv = _mm512_loadu_ps(g + k);
        __m512 xh = _mm512_mul_ps(_mm512_sub_ps(_mm512_loadu_ps(x + k), mv), rv);
        __m512d g0 = higan__bn_lo_avx512(gv), g1 = higan__bn_hi_avx512(gv);
        s0 = _mm512_add_pd(s0, g0);
        s1 = _mm512_add_pd(s1, g1);
        t0 = _mm512_add_pd(t0, _mm512_mul_pd(g0, higan__bn_lo_avx512(xh)));
        t1 = _mm512_add_pd(t1, _mm512_mul_pd(g1, higan__bn_hi_avx512(xh)));
    }
    a = higan__bn_hsum_avx512(_mm512_add_pd(s0, s1));
    b = higan__bn_hsum_avx512(_mm512_add_pd(t0, t1));
    for (; k < n; ++k) {
        float xh = (x[k] - m) * r;
        a += (double)g[k];
        b += (double)g[k] * (double)xh;
    }
    *s += a; *sx += b;
}
static HIGAN__TGT_avx512 void higan__bn_apply_avx512(float *y, const float *x, int64_t n, float m, float r,
                                                     float gain, float shift) {
    __m512 mv = _mm512_set1_ps(m), rv = _mm512_set1_ps(r), gv = _mm512_set1_ps(gain), bv = _mm512_set1_ps(shift);
    int64_t k = 0;
    for (; k + 16 <= n; k += 16)
        _mm512_storeu_ps(y + k, _mm512_add_ps(_mm512_mul_ps(_mm512_mul_ps(_mm512_sub_ps(_mm512_loadu_ps(x + k), mv),
                                                                          rv), gv), bv));
    if (k < n) {
        __mmask16 t = (__mmask16)((1u << (n - k)) - 1u);
        _mm512_mask_storeu_ps(y + k, t, _mm512_add_ps(_mm512_mul_ps(_mm512_mul_ps(_mm512_sub_ps(
            _mm512_maskz_loadu_ps(t, x + k), mv), rv), gv), bv));
    }
}
static HIGAN__TGT_avx512 void higan__bn_dx_avx512(float *dx, const float *g, const float *x, int64_t n, float m,
                                                  float r, float gain, float a, float b) {
    __m512 mv = _mm512_set1_ps(m), rv = _mm512_set1_ps(r), gn = _mm512_set1_ps(gain);
    __m512 av = _mm512_set1_ps(a), bv = _mm512_set1_ps(b);
    int64_t k = 0;
    for (; k < n; k += 16) {
        __mmask16 t = (__mmask16)(n - k >= 16 ? 0xFFFFu : (1u << (n - k)) - 1u);
        __m512 xh, d;
        xh = _mm512_mul_ps(_mm512_sub_ps(_mm512_maskz_loadu_ps(t, x + k), mv), rv);
        d = _mm512_sub_ps(_mm512_sub_ps(_mm512_mul_ps(_mm512_maskz_loadu_ps(t, g + k), gn), av), _mm512_mul_ps(xh, bv));
        _mm512_mask_storeu_ps(dx + k, t, _mm512_add_ps(_mm512_maskz_loadu_ps(t, dx + k), _mm512_mul_ps(rv, d)));
    }
}
#endif
#ifdef HIGAN__GEMM_AVX512
/* Adam's AVX-512 body (see higan__adam_scalar in the OPTIMIZER section) */
static HIGAN__TGT_avx512 void higan__adam_avx512(
        float *w, const float *g, float *m, float *v, int64_t n, float b1, float b2, float one_minus_b1,
        float one_minus_b2, float step_size, float bc2_sqrt, float eps) {
    const __m512 vb1 = _mm512_set1_ps(b1), vb2 = _mm512_set1_ps(b2), va1 = _mm512_set1_ps(one_minus_b1);
    const __m512 va2 = _mm512_set1_ps(one_minus_b2), vs = _mm512_set1_ps(step_size);
    const __m512 vc = _mm512_set1_ps(bc2_sqrt), ve = _mm512_set1_ps(eps);
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        __m512 gi = _mm512_loadu_ps(g + i);
        __m512 mi = _mm512_add_ps(_mm512_mul_ps(_mm512_loadu_ps(m + i), vb1), _mm512_mul_ps(gi, va1));
        __m512 vi = _mm512_add_ps(_mm512_mul_ps(_mm512_loadu_ps(v + i), vb2), _mm512_mul_ps(_mm512_mul_ps(va2, gi), gi));
        __m512 den = _mm512_add_ps(_mm512_div_ps(_mm512_maskz_sqrt_ps((__mmask16)0xFFFF, vi), vc), ve);
        _mm512_storeu_ps(m + i, mi);
        _mm512_storeu_ps(v + i, vi);
        _mm512_storeu_ps(w + i, _mm512_sub_ps(_mm512_loadu_ps(w + i), _mm512_mul_ps(vs, _mm512_div_ps(mi, den))));
    }
    higan__adam_scalar(w + i, g + i, m + i, v + i, n - i, b1, b2, one_minus_b1, one_minus_b2, step_size, bc2_sqrt, eps);
}
#endif
static const higan__bn_kernels *higan__bn_k(void) {
    static const higan__bn_kernels scalar = {higan__bn_sum_scalar, higan__bn_sqdev_scalar, higan__bn_dsums_scalar,
                                             higan__bn_apply_scalar, higan__bn_dx_scalar};
#ifdef HIGAN__GEMM_AVX512
    static const higan__bn_kernels avx512 = {higan__bn_sum_avx512, higan__bn_sqdev_avx512, higan__bn_dsums_avx512,
                                             higan__bn_apply_avx512, higan__bn_dx_avx512};
    if (higan_cpu_level() >= HIGAN_CPU_AVX512) return &avx512;
#endif
    return &scalar;
}

/* x [N, C, HW]; mean, rstd, running_mean, running_var [C] */
HIGAN_DEF void higan_batch_norm_stats(float *mean, float *rstd, float *running_mean,
                                      float *running_var, const float *x, float momentum,
                                      float eps, int batch_stats,
                                      int64_t N, int64_t C, int64_t HW) {
    const higan__bn_kernels *K = higan__bn_k();
    int64_t c, M = N * HW;
    if (!batch_stats) {
        HIGAN_ASSERT(running_mean != NULL && running_var != NULL);
        for (c = 0; c < C; ++c) {
            mean[c] = running_mean[c];
            rstd[c] = (float)(1.0 / sqrt((double)running_var[c] + (double)eps));
        }
        return;
    }
    HIGAN_ASSERT(M > 0);
    HIGAN_ASSERT(M > 1 || running_var == NULL);   /* unbiased variance needs 2 values */
    HIGAN__PARALLEL_FOR_IF(C > 1 && M * C >= 32768)
    for (c = 0; c < C; ++c) {
        double s = 0, q = 0, m, var;
        int64_t nn;
        for (nn = 0; nn < N; ++nn) s += K->sum(x + (nn * C + c) * HW, HW);
        m = s / (double)M;
        /* two passes: no cancellation in the variance */
        for (nn = 0; nn < N; ++nn) q += K->sqdev(x + (nn * C + c) * HW, HW, m);
        var = q / (double)M;
        mean[c] = (float)m;
        rstd[c] = (float)(1.0 / sqrt(var + (double)eps));
        if (running_mean)
            running_mean[c] = (float)((double)momentum * m + (1.0 - (double)momentum) * (double)running_mean[c]);
        if (running_var)
            running_var[c] = (float)((double)momentum * (q / (double)(M - 1)) +
                                     (1.0 - (double)momentum) * (double)running_var[c]);
    }
}

/* y = x_hat * g + b per plane (n, c), with g = scale_c[c] | 1 + gain_nc[n, c] | 1 and
   b = shift_c[c] | shift_nc[n, c] | 0. x, y [N, C, HW]. */
static void higan__norm_apply(float *y, const float *x, const float *mean, const float *rstd,
                              const float *scale_c, const float *shift_c,
                              const float *gain_nc, const float *shift_nc,
                              int64_t N, int64_t C, int64_t HW) {
    const higan__bn_kernels *K = higan__bn_k();
    int64_t p;
    HIGAN__PARALLEL_FOR_IF(N * C > 1 && N * C * HW >= 32768)
    for (p = 0; p < N * C; ++p) {
        int64_t c = p % C;
        float g = scale_c ? scale_c[c] : gain_nc ? 1.0f + gain_nc[p] : 1.0f;
        float b = shift_c ? shift_c[c] : shift_nc ? shift_nc[p] : 0.0f;
        K->apply(y + p * HW, x + p * HW, HW, mean[c], rstd[c], g, b);
    }
}

/* Backward of higan__norm_apply (+ of the statistics when batch_stats). Per channel c:
   dxh = dy * g;  dx = rstd * (dxh - mean(dxh) - x_hat * mean(dxh * x_hat))  (batch_stats)
                  dx = rstd * dxh                                           (fixed stats)
   d scale_c / d shift_c [C] and d gain_nc / d shift_nc [N, C] get sum(dy * x_hat), sum(dy). */
static void higan__norm_backward(float *dx, float *dscale_c, float *dshift_c,
                                 float *dgain_nc, float *dshift_nc, const float *dy,
                                 const float *x, const float *mean, const float *rstd,
                                 const float *scale_c, const float *gain_nc, int batch_stats,
                                 int64_t N, int64_t C, int64_t HW) {
    const higan__bn_kernels *K = higan__bn_k();
    int64_t c;
    double M = (double)(N * HW);
    HIGAN__PARALLEL_FOR_IF(C > 1 && N * C * HW >= 32768)
    for (c = 0; c < C; ++c) {
        double sum_g_dy = 0, sum_g_dyxh = 0, all_dy = 0, all_dyxh = 0;
        float m = mean[c], r = rstd[c];
        int64_t nn;
        for (nn = 0; nn < N; ++nn) {
            double s = 0, sx = 0, g;
            K->dsums(dy + (nn * C + c) * HW, x + (nn * C + c) * HW, HW, m, r, &s, &sx);
            g = scale_c ? (double)scale_c[c] : gain_nc ? (double)(1.0f + gain_nc[nn * C + c]) : 1.0;
            if (dgain_nc) dgain_nc[nn * C + c] += (float)sx;
            if (dshift_nc) dshift_nc[nn * C + c] += (float)s;
            all_dy += s; all_dyxh += sx;
            sum_g_dy += g * s; sum_g_dyxh += g * sx;
        }
        if (dscale_c) dscale_c[c] += (float)all_dyxh;
        if (dshift_c) dshift_c[c] += (float)all_dy;
        if (dx) {
            float a = batch_stats ? (float)(sum_g_dy / M) : 0.0f;
            float b = batch_stats ? (float)(sum_g_dyxh / M) : 0.0f;
            for (nn = 0; nn < N; ++nn) {
                float g = scale_c ? scale_c[c] : gain_nc ? 1.0f + gain_nc[nn * C + c] : 1.0f;
                K->dx(dx + (nn * C + c) * HW, dy + (nn * C + c) * HW, x + (nn * C + c) * HW, HW, m, r, g, a, b);
            }
        }
    }
}

/* ---- BatchNorm2d ------------------------------------------------------------------------ */
/* y, x [N, C, HW]; mean, rstd, weight, bias, running_* [C] */
HIGAN_DEF void higan_batch_norm2d_forward(float *y, float *mean, float *rstd, const float *x,
                                          const float *weight, const float *bias,
                                          float *running_mean, float *running_var,
                                          float momentum, float eps, int batch_stats,
                                          int64_t N, int64_t C, int64_t HW) {
    higan_batch_norm_stats(mean, rstd, running_mean, running_var, x, momentum, eps, batch_stats,
                           N, C, HW);
    higan__norm_apply(y, x, mean, rstd, weight, bias, NULL, NULL, N, C, HW);
}

/* dx, dy, x [N, C, HW]; dweight, dbias, mean, rstd, weight [C] */
HIGAN_DEF void higan_batch_norm2d_backward(float *dx, float *dweight, float *dbias,
                                           const float *dy, const float *x, const float *mean,
                                           const float *rstd, const float *weight,
                                           int batch_stats, int64_t N, int64_t C, int64_t HW) {
    if (!dx && !dweight && !dbias) return;
    higan__norm_backward(dx, dweight, dbias, NULL, NULL, dy, x, mean, rstd, weight, NULL,
                         batch_stats, N, C, HW);
}

typedef struct {
    higan_var *x, *w, *b, *y;   /* w, b: BN weight/bias or CBN gain/bias */
    float *mean, *rstd;
    int batch_stats, cond;
    int64_t N, C, HW;
} higan__bn_ctx;

static void higan__bn_backward_op(higan_tape *t, void *p) {
    higan__bn_ctx *c = (higan__bn_ctx *)p;
    float *dx = higan_var_grad(t, c->x);
    float *dw = c->w ? higan_var_grad(t, c->w) : NULL;
    float *db = c->b ? higan_var_grad(t, c->b) : NULL;
    if (!dx && !dw && !db) return;
    /* the raw kernels are these two calls of the shared backward */
    if (c->cond)
        t->be->cond_batch_norm_backward(t->be->ctx, dx, dw, db, c->y->grad, c->x->data, c->mean, c->rstd,
                                        c->w->data, c->batch_stats, c->N, c->C, c->HW);
    else
        t->be->batch_norm2d_backward(t->be->ctx, dx, dw, db, c->y->grad, c->x->data, c->mean, c->rstd,
                                     c->w ? c->w->data : NULL, c->batch_stats, c->N, c->C, c->HW);
}

/* Shared tape op body of batch norm (cond 0: w, b are [C] or NULL) and conditional batch norm
   (cond 1: w = gain, b = bias, [N, C]). */
static higan_var *higan__bn_op(higan_tape *t, higan_var *x, higan_var *w, higan_var *b,
                               float *running_mean, float *running_var, float momentum,
                               float eps, int train, int cond) {
    higan_var *ins[3];
    higan_var *y;
    higan__bn_ctx *c = NULL;
    float *mean, *rstd;
    int64_t N, C, HW = 1;
    int n_in = 0, d, batch_stats;
    HIGAN_ASSERT(x->ndim >= 2);
    N = x->shape[0]; C = x->shape[1];
    for (d = 2; d < x->ndim; ++d) HW *= x->shape[d];
    if (w) HIGAN_ASSERT(higan_var_numel(w) == (cond ? N * C : C));
    if (b) HIGAN_ASSERT(higan_var_numel(b) == (cond ? N * C : C));
    /* like nn.BatchNorm: without running stats the batch statistics are used in eval too */
    batch_stats = train || !running_mean || !running_var;
    ins[n_in++] = x;
    if (w) ins[n_in++] = w;
    if (b) ins[n_in++] = b;
    if (!(y = higan_op_output(t, x->ndim, x->shape, ins, n_in))) return NULL;
    mean = higan_arena_floats(t->data, C);
    rstd = higan_arena_floats(t->data, C);
    if (!mean || !rstd) return NULL;
    if (y->requires_grad && !(c = (higan__bn_ctx *)higan_tape_ctx(t, sizeof *c))) return NULL;
    /* eval without running stats: batch statistics but nothing to update */
    if (batch_stats && !train) running_mean = running_var = NULL;
    /* the raw kernels are the statistics then the affine map, as written out before */
    if (cond)
        t->be->cond_batch_norm_forward(t->be->ctx, y->data, mean, rstd, x->data, w->data, b->data,
                                       running_mean, running_var, momentum, eps, batch_stats, N, C, HW);
    else
        t->be->batch_norm2d_forward(t->be->ctx, y->data, mean, rstd, x->data, w ? w->data : NULL,
                                    b ? b->data : NULL, running_mean, running_var, momentum, eps,
                                    batch_stats, N, C, HW);
    if (c) {
        c->x = x; c->w = w; c->b = b; c->y = y; c->mean = mean; c->rstd = rstd;
        c->batch_stats = batch_stats; c->cond = cond; c->N = N; c->C = C; c->HW = HW;
        higan_tape_record(t, y, higan__bn_backward_op, c);
    }
    return y;
}

HIGAN_DEF higan_var *higan_batch_norm2d(higan_tape *t, higan_var *x, higan_var *weight,
                                        higan_var *bias, float *running_mean,
                                        float *running_var, int64_t *num_batches_tracked,
                                        float momentum, float eps, int train) {
    higan_var *y;
    if (!x) return NULL;
    y = higan__bn_op(t, x, weight, bias, running_mean, running_var, momentum, eps, train, 0);
    if (y && train && num_batches_tracked) ++*num_batches_tracked;
    return y;
}

/* ---- conditional batch norm ------------------------------------------------------------- */
/* y, x [N, C, HW]; mean, rstd, running_* [C]; gain, bias [N, C] */
HIGAN_DEF void higan_cond_batch_norm_forward(float *y, float *mean, float *rstd, const float *x,
                                             const float *gain, const float *bias,
                                             float *running_mean, float *running_var,
                                             float momentum, float eps, int batch_stats,
                                             int64_t N, int64_t C, int64_t HW) {
    higan_batch_norm_stats(mean, rstd, running_mean, running_var, x, momentum, eps, batch_stats,
                           N, C, HW);
    higan__norm_apply(y, x, mean, rstd, NULL, NULL, gain, bias, N, C, HW);
}

/* dx, dy, x [N, C, HW]; dgain, dbias, gain [N, C]; mean, rstd [C] */
HIGAN_DEF void higan_cond_batch_norm_backward(float *dx, float *dgain, float *dbias,
                                              const float *dy, const float *x,
                                              const float *mean, const float *rstd,
                                              const float *gain, int batch_stats,
                                              int64_t N, int64_t C, int64_t HW) {
    if (!dx && !dgain && !dbias) return;
    higan__norm_backward(dx, NULL, NULL, dgain, dbias, dy, x, mean, rstd, NULL, gain,
                         batch_stats, N, C, HW);
}

HIGAN_DEF higan_var *higan_cond_batch_norm(higan_tape *t, higan_var *x, higan_var *gain,
                                           higan_var *bias, float *stored_mean,
                                           float *stored_var, float momentum, float eps,
                                           int train) {
    if (!x || !gain || !bias) return NULL;
    return higan__bn_op(t, x, gain, bias, stored_mean, stored_var, momentum, eps, train, 1);
}

/* ---- embedding -------------------------------------------------------------------------- */
/* weight [num, D]; idx [n_idx] */
HIGAN_DEF void higan_embedding_renorm(float *weight, const int *idx, int64_t n_idx, int64_t num,
                                      int64_t D, float max_norm) {
    int64_t i, j, k;
    for (i = 0; i < n_idx; ++i) {
        float *row;
        double nrm = 0, normf;
        HIGAN_ASSERT(idx[i] >= 0 && (int64_t)idx[i] < num);
        for (j = 0; j < i; ++j) if (idx[j] == idx[i]) break;
        if (j < i) continue;   /* each distinct row once, as PyTorch (sorted unique) */
        row = weight + (int64_t)idx[i] * D;
        for (k = 0; k < D; ++k) nrm += (double)row[k] * (double)row[k];
        normf = (double)(float)sqrt(nrm);   /* PyTorch takes the float norm as a double */
        if (normf > (double)max_norm) {
            float scale = (float)((double)max_norm / (normf + 1e-7));
            for (k = 0; k < D; ++k) row[k] *= scale;
        }
    }
}

/* y [n_idx, D]; weight [num, D] */
HIGAN_DEF void higan_embedding_forward(float *y, const float *weight, const int *idx,
                                       int64_t n_idx, int64_t num, int64_t D) {
    int64_t i;
    for (i = 0; i < n_idx; ++i) {
        HIGAN_ASSERT(idx[i] >= 0 && (int64_t)idx[i] < num);
        memcpy(y + i * D, weight + (int64_t)idx[i] * D, sizeof(float) * (size_t)D);
    }
}

/* dweight [num, D]; dy [n_idx, D]. Serial: rows may repeat (a reduction). */
HIGAN_DEF void higan_embedding_backward(float *dweight, const float *dy, const int *idx,
                                        int64_t n_idx, int64_t D, int padding_idx) {
    int64_t i, k;
    if (!dweight) return;
    for (i = 0; i < n_idx; ++i) {
        float *dr;
        const float *g = dy + i * D;
        if (padding_idx >= 0 && idx[i] == padding_idx) continue;
        dr = dweight + (int64_t)idx[i] * D;
        for (k = 0; k < D; ++k) dr[k] += g[k];
    }
}

typedef struct { higan_var *w, *y; int *idx; int64_t n_idx, D; int padding_idx; } higan__emb_ctx;

static void higan__emb_backward_op(higan_tape *t, void *p) {
    higan__emb_ctx *c = (higan__emb_ctx *)p;
    float *dw = higan_var_grad(t, c->w);
    if (dw) t->be->embedding_backward(t->be->ctx, dw, c->y->grad, c->idx, c->n_idx, c->w->shape[0], c->D,
                                      c->padding_idx);
}

HIGAN_DEF higan_var *higan_embedding(higan_tape *t, higan_var *weight, const int *idx,
                                     int64_t n_idx, int padding_idx, float max_norm) {
    higan_var *y;
    higan__emb_ctx *c = NULL;
    int64_t shape[2], num, D;
    if (!weight) return NULL;
    HIGAN_ASSERT(weight->ndim == 2 && n_idx >= 0 && (n_idx == 0 || idx != NULL));
    num = weight->shape[0]; D = weight->shape[1];
    shape[0] = n_idx; shape[1] = D;
    if (!(y = higan_op_output(t, 2, shape, &weight, 1))) return NULL;
    if (y->requires_grad && !t->be->device) {   /* the backward's copy (a device uses di below) */
        if (!(c = (higan__emb_ctx *)higan_tape_ctx(t, sizeof *c))) return NULL;
        c->idx = (int *)higan_arena_alloc(t->arena, sizeof(int) * (size_t)(n_idx ? n_idx : 1));
        if (!c->idx) return NULL;
        if (n_idx) memcpy(c->idx, idx, sizeof(int) * (size_t)n_idx);
    }
    {
        const int *di = higan__tape_ints(t, idx, n_idx);   /* idx itself on the CPU */
        if (!di) return NULL;
        if (y->requires_grad && t->be->device) {
            if (!(c = (higan__emb_ctx *)higan_tape_ctx(t, sizeof *c))) return NULL;
            c->idx = (int *)di;
        }
        if (max_norm > 0) t->be->embedding_renorm(t->be->ctx, weight->data, di, n_idx, num, D, max_norm);
        t->be->embedding_forward(t->be->ctx, y->data, weight->data, di, n_idx, num, D);
    }
    if (c) {
        c->w = weight; c->y = y; c->n_idx = n_idx; c->D = D; c->padding_idx = padding_idx;
        higan_tape_record(t, y, higan__emb_backward_op, c);
    }
    return y;
}
/* ---- shape: upsample, pools, pads, activations, concat/slice, reshape/permute, masked width
        reductions, dropout, log-softmax, elementwise helpers ---------------------------------
   The scalar loops are the reference; max pooling and the elementwise kernels (relu, add,
   dropout, pad backward) have AVX-512 forms with the same bits. Parallel loops run over
   independent outputs only (planes, rows or elements), so results never depend on the
   thread count; reductions (sum_all, masked sums, log-softmax rows) stay in one thread each. */

/* Elementwise loops go parallel only above this many values (thread start-up costs more). */
#define HIGAN__SHAPE_PAR ((int64_t)1 << 15)

/* ---- elementwise kernels: the scalar loops are the reference; on AVX-512 the same operations
   16 lanes at a time (selects, adds, multiplies: the same bits), on chunks of HIGAN__EW_CHUNK
   values split over the threads (elementwise: any split gives the same bits). GCC -O2 does
   not vectorise the scalar selects, and these ops are a good part of a recognizer step. ------ */
#define HIGAN__EW_CHUNK ((int64_t)1 << 14)
enum { HIGAN__EW_RELU, HIGAN__EW_RELU_BWD, HIGAN__EW_ADD, HIGAN__EW_ACC, HIGAN__EW_ACC_MUL, HIGAN__EW_DROPOUT,
       HIGAN__EW_DROPOUT_RELU, HIGAN__EW_RELU_MASK_BWD };
typedef struct {
    int kind;
    float *y;             /* output (accumulated into for the _BWD / ACC kinds) */
    const float *a, *b;   /* inputs (see higan__ew_scalar) */
    float *mask;          /* dropout: the mask out (may be NULL) */
    float p, scale;       /* dropout */
    uint32_t k0, k1;      /* dropout key */
} higan__ew_args;
/* Dropout's uniform of element i: two rounds of the lowbias32 mixer over the 32-bit counter
   and the key, 24 bits (exact floats). */
static uint32_t higan__mix32(uint32_t x) {
    x ^= x >> 16; x *= 0x7feb352dU; x ^= x >> 15; x *= 0x846ca68bU; x ^= x >> 16;
    return x;
}
static float higan__dropout_uniform(uint32_t k0, uint32_t k1, uint64_t i) {
    uint32_t h = higan__mix32(higan__mix32((uint32_t)i ^ k0) + k1 + (uint32_t)(i >> 32) * 0x9E3779B9U);
    return (float)(h >> 8) * (1.0f / 16777216.0f);
}
/* [i0, i0 + n) of the op: RELU y = relu(a) (NaN stays); RELU_BWD y += b where a > 0; ADD
   y = a + b; ACC y += a; ACC_MUL y += a * b; DROPOUT mask = u >= p ? scale : 0, y = a * mask;
   DROPOUT_RELU the same, then y = relu(y); RELU_MASK_BWD y += b * mask where a > 0. */
static void higan__ew_scalar(const higan__ew_args *e, int64_t i0, int64_t n) {
    float *y = e->y + i0;
    const float *a = e->a + i0, *b = e->b ? e->b + i0 : NULL;
    int64_t i;
    switch (e->kind) {
    case HIGAN__EW_RELU: for (i = 0; i < n; ++i) y[i] = a[i] > 0.0f ? a[i] : (a[i] != a[i] ? a[i] : 0.0f); break;
    case HIGAN__EW_RELU_BWD: for (i = 0; i < n; ++i) if (a[i] > 0.0f) y[i] += b[i]; break;
    case HIGAN__EW_ADD: for (i = 0; i < n; ++i) y[i] = a[i] + b[i]; break;
    case HIGAN__EW_ACC: for (i = 0; i < n; ++i) y[i] += a[i]; break;
    case HIGAN__EW_ACC_MUL: for (i = 0; i < n; ++i) y[i] += a[i] * b[i]; break;
    case HIGAN__EW_RELU_MASK_BWD: for (i = 0; i < n; ++i) if (a[i] > 0.0f) y[i] += b[i] * e->mask[i0 + i]; break;
    default:
        for (i = 0; i < n; ++i) {
            float m = higan__dropout_uniform(e->k0, e->k1, (uint64_t)(i0 + i)) >= e->p ? e->scale : 0.0f, v;
            if (e->mask) e->mask[i0 + i] = m;
            v = a[i] * m;
            y[i] = e->kind == HIGAN__EW_DROPOUT || v > 0.0f || v != v ? v : 0.0f;
        }
    }
}
#ifdef HIGAN__GEMM_AVX512
/* maskz forms: see higan__bn_lo_avx512 */
static inline HIGAN__TGT_avx512 __m512i higan__srli_avx512(__m512i x, unsigned n) {
    return _mm512_maskz_srli_epi32((__mmask16)0xFFFF, x, n);
}
static inline HIGAN__TGT_avx512 __m512i higan__mix32_avx512(__m512i x) {
    x = _mm512_xor_si512(x, higan__srli_avx512(x, 16));
    x = _mm512_mullo_epi32(x, _mm512_set1_epi32(0x7feb352d));
    x = _mm512_xor_si512(x, higan__srli_avx512(x, 15));
    x = _mm512_mullo_epi32(x, _mm512_set1_epi32((int)0x846ca68bU));
    return _mm512_xor_si512(x, higan__srli_avx512(x, 16));
}
static HIGAN__TGT_avx512 void higan__ew_avx512(const higan__ew_args *e, int64_t i0, int64_t n) {
    float *y = e->y + i0;
    const float *a = e->a + i0, *b = e->b ? e->b + i0 : NULL;
    const __m512 zero = _mm512_setzero_ps();
    int64_t i;
    for (i = 0; i < n; i += 16) {
        __mmask16 t = (__mmask16)(n - i >= 16 ? 0xFFFFu : (1u << (n - i)) - 1u);
        __m512 av = _mm512_maskz_loadu_ps(t, a + i), r;
        switch (e->kind) {
        case HIGAN__EW_RELU:
            r = _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(av, zero, _CMP_GT_OQ) | _mm512_cmp_ps_mask(av, av, _CMP_UNORD_Q), av);
            break;
        case HIGAN__EW_RELU_BWD:
            r = _mm512_maskz_loadu_ps(t, y + i);
            r = _mm512_mask_add_ps(r, _mm512_cmp_ps_mask(av, zero, _CMP_GT_OQ), r, _mm512_maskz_loadu_ps(t, b + i));
            break;
        case HIGAN__EW_ADD: r = _mm512_add_ps(av, _mm512_maskz_loadu_ps(t, b + i)); break;
        case HIGAN__EW_ACC: r = _mm512_add_ps(_mm512_maskz_loadu_ps(t, y + i), av); break;
        case HIGAN__EW_ACC_MUL:
            r = _mm512_add_ps(_mm512_maskz_loadu_ps(t, y + i), _mm512_mul_ps(av, _mm512_maskz_loadu_ps(t, b + i)));
            break;
        case HIGAN__EW_RELU_MASK_BWD:
            r = _mm512_maskz_loadu_ps(t, y + i);
            r = _mm512_mask_add_ps(r, _mm512_cmp_ps_mask(av, zero, _CMP_GT_OQ), r,
                                   _mm512_mul_ps(_mm512_maskz_loadu_ps(t, b + i), _mm512_maskz_loadu_ps(t, e->mask + i0 + i)));
            break;
        default: {
            uint64_t g = (uint64_t)(i0 + i);   /* chunks never cross a multiple of 2^32 */
            __m512i c = _mm512_add_epi32(_mm512_set1_epi32((int)(uint32_t)g),
                                         _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15));
            __m512i h = higan__mix32_avx512(_mm512_xor_si512(c, _mm512_set1_epi32((int)e->k0)));
            __m512 u, m;
            h = higan__mix32_avx512(_mm512_add_epi32(h, _mm512_set1_epi32((int)(e->k1 + (uint32_t)(g >> 32) * 0x9E3779B9U))));
            u = _mm512_mul_ps(_mm512_maskz_cvtepi32_ps((__mmask16)0xFFFF, higan__srli_avx512(h, 8)),
                              _mm512_set1_ps(1.0f / 16777216.0f));
            m = _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(u, _mm512_set1_ps(e->p), _CMP_GE_OQ), _mm512_set1_ps(e->scale));
            if (e->mask) _mm512_mask_storeu_ps(e->mask + i0 + i, t, m);
            r = _mm512_mul_ps(av, m);
            if (e->kind == HIGAN__EW_DROPOUT_RELU)
                r = _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(r, zero, _CMP_GT_OQ) | _mm512_cmp_ps_mask(r, r, _CMP_UNORD_Q), r);
        }
        }
        _mm512_mask_storeu_ps(y + i, t, r);
    }
}
#endif
typedef void (*higan__ew_fn)(const higan__ew_args *e, int64_t i0, int64_t n);
static higan__ew_fn higan__ew_kernel(void) {
#ifdef HIGAN__GEMM_AVX512
    if (higan_cpu_level() >= HIGAN_CPU_AVX512) return higan__ew_avx512;
#endif
    return higan__ew_scalar;
}
static void higan__ew_run(const higan__ew_args *e, int64_t n) {
    higan__ew_fn k = higan__ew_kernel();
    int64_t c;
    HIGAN__PARALLEL_FOR_IF(n > HIGAN__SHAPE_PAR)
    for (c = 0; c < (n + HIGAN__EW_CHUNK - 1) / HIGAN__EW_CHUNK; ++c) {
        int64_t i0 = c * HIGAN__EW_CHUNK;
        k(e, i0, n - i0 < HIGAN__EW_CHUNK ? n - i0 : HIGAN__EW_CHUNK);
    }
}
static void higan__ew(int kind, float *y, const float *a, const float *b, int64_t n) {
    higan__ew_args e;
    memset(&e, 0, sizeof e);
    e.kind = kind; e.y = y; e.a = a; e.b = b;
    higan__ew_run(&e, n);
}

/* ---- tape helpers shared by the ops below ------------------------------------------------ */
typedef struct { higan_var *x, *y; float s; } higan__unary_ctx;
typedef struct { higan_var *a, *b, *y; } higan__binary_ctx;

/* Records fn with a {x, y, s} context when y needs a gradient. Returns y (NULL on overflow). */
static higan_var *higan__record_unary(higan_tape *t, higan_var *x, higan_var *y,
                                      higan_backward_fn fn, float s) {
    higan__unary_ctx *c;
    if (!y) return NULL;
    if (y->requires_grad) {
        if (!(c = (higan__unary_ctx *)higan_tape_ctx(t, sizeof *c))) return NULL;
        c->x = x; c->y = y; c->s = s;
        higan_tape_record(t, y, fn, c);
    }
    return y;
}
static higan_var *higan__record_binary(higan_tape *t, higan_var *a, higan_var *b, higan_var *y,
                                       higan_backward_fn fn) {
    higan__binary_ctx *c;
    if (!y) return NULL;
    if (y->requires_grad) {
        if (!(c = (higan__binary_ctx *)higan_tape_ctx(t, sizeof *c))) return NULL;
        c->a = a; c->b = b; c->y = y;
        higan_tape_record(t, y, fn, c);
    }
    return y;
}
/* A dim given from the end (-1 = last) turned into 0..ndim-1. */
static int higan__dim(const higan_var *x, int dim) {
    if (dim < 0) dim += x->ndim;
    HIGAN_ASSERT(dim >= 0 && dim < x->ndim);
    return dim;
}
/* x viewed as [outer, shape[dim], inner]. */
static void higan__outer_inner(const higan_var *x, int dim, int64_t *outer, int64_t *inner) {
    int d;
    *outer = 1; *inner = 1;
    for (d = 0; d < dim; ++d) *outer *= x->shape[d];
    for (d = dim + 1; d < x->ndim; ++d) *inner *= x->shape[d];
}
static int higan__same_shape(const higan_var *a, const higan_var *b) {
    int d;
    if (a->ndim != b->ndim) return 0;
    for (d = 0; d < a->ndim; ++d) if (a->shape[d] != b->shape[d]) return 0;
    return 1;
}

/* ---- nearest upsampling: x [N,C,H,W] -> y [N,C,H*sh,W*sw] ------------------------------- */
HIGAN_DEF void higan_upsample_nearest_forward(float *y, const float *x, int64_t N, int64_t C,
                                              int64_t H, int64_t W, int sh, int sw) {
    int64_t p, P = N * C, Ho = H * sh, Wo = W * sw;
    HIGAN_ASSERT(sh >= 1 && sw >= 1);
    HIGAN__PARALLEL_FOR_IF(P * Ho * Wo > HIGAN__SHAPE_PAR)
    for (p = 0; p < P; ++p) {
        const float *xp = x + p * H * W;
        float *yp = y + p * Ho * Wo;
        int64_t h, w;
        int a, b;
        for (h = 0; h < H; ++h) {
            float *row = yp + h * sh * Wo;
            for (w = 0; w < W; ++w) {
                float v = xp[h * W + w];
                for (b = 0; b < sw; ++b) row[w * sw + b] = v;
            }
            for (a = 1; a < sh; ++a) memcpy(row + a * Wo, row, (size_t)Wo * sizeof(float));
        }
    }
}
/* dx [N,C,H,W] += block sums of dy [N,C,H*sh,W*sw] (PyTorch's order: output rows, then columns). */
HIGAN_DEF void higan_upsample_nearest_backward(float *dx, const float *dy, int64_t N, int64_t C,
                                               int64_t H, int64_t W, int sh, int sw) {
    int64_t p, P = N * C, Ho = H * sh, Wo = W * sw;
    if (!dx) return;
    HIGAN_ASSERT(sh >= 1 && sw >= 1);
    HIGAN__PARALLEL_FOR_IF(P * Ho * Wo > HIGAN__SHAPE_PAR)
    for (p = 0; p < P; ++p) {
        const float *gp = dy + p * Ho * Wo;
        float *dp = dx + p * H * W;
        int64_t h, w;
        int a, b;
        for (h = 0; h < H; ++h)
            for (w = 0; w < W; ++w) {
                float s = 0.0f;
                for (a = 0; a < sh; ++a)
                    for (b = 0; b < sw; ++b) s += gp[(h * sh + a) * Wo + w * sw + b];
                dp[h * W + w] += s;
            }
    }
}
typedef struct { higan_var *x, *y; int sh, sw; } higan__upsample_ctx;
static void higan__upsample_backward_op(higan_tape *t, void *p) {
    higan__upsample_ctx *c = (higan__upsample_ctx *)p;
    float *dx = higan_var_grad(t, c->x);
    if (dx) t->be->upsample_nearest_backward(t->be->ctx, dx, c->y->grad, c->x->shape[0], c->x->shape[1],
                                             c->x->shape[2], c->x->shape[3], c->sh, c->sw);
}
HIGAN_DEF higan_var *higan_upsample_nearest(higan_tape *t, higan_var *x, int sh, int sw) {
    higan_var *y;
    higan__upsample_ctx *c;
    int64_t s[4];
    if (!x) return NULL;
    HIGAN_ASSERT(x->ndim == 4 && sh >= 1 && sw >= 1);
    s[0] = x->shape[0]; s[1] = x->shape[1]; s[2] = x->shape[2] * sh; s[3] = x->shape[3] * sw;
    if (!(y = higan_op_output(t, 4, s, &x, 1))) return NULL;
    t->be->upsample_nearest_forward(t->be->ctx, y->data, x->data, x->shape[0], x->shape[1], x->shape[2],
                                    x->shape[3], sh, sw);
    if (y->requires_grad) {
        if (!(c = (higan__upsample_ctx *)higan_tape_ctx(t, sizeof *c))) return NULL;
        c->x = x; c->y = y; c->sh = sh; c->sw = sw;
        higan_tape_record(t, y, higan__upsample_backward_op, c);
    }
    return y;
}

/* ---- 2x2 average pooling, stride 2: x [N,C,H,W] -> y [N,C,H/2,W/2] ------------------------- */
HIGAN_DEF void higan_avg_pool2_forward(float *y, const float *x, int64_t N, int64_t C,
                                       int64_t H, int64_t W) {
    int64_t p, P = N * C, Ho = H / 2, Wo = W / 2;
    HIGAN__PARALLEL_FOR_IF(P * Ho * Wo > HIGAN__SHAPE_PAR)
    for (p = 0; p < P; ++p) {
        const float *xp = x + p * H * W;
        float *yp = y + p * Ho * Wo;
        int64_t h, w;
        for (h = 0; h < Ho; ++h)
            for (w = 0; w < Wo; ++w) {
                const float *q = xp + 2 * h * W + 2 * w;
                /* summed in PyTorch's window order, then divided: bit-compatible */
                yp[h * Wo + w] = (((q[0] + q[1]) + q[W]) + q[W + 1]) / 4.0f;
            }
    }
}
/* dx [N,C,H,W] += dy/4 on every window; a trailing odd row/column gets nothing. */
HIGAN_DEF void higan_avg_pool2_backward(float *dx, const float *dy, int64_t N, int64_t C,
                                        int64_t H, int64_t W) {
    int64_t p, P = N * C, Ho = H / 2, Wo = W / 2;
    if (!dx) return;
    HIGAN__PARALLEL_FOR_IF(P * Ho * Wo > HIGAN__SHAPE_PAR)
    for (p = 0; p < P; ++p) {
        const float *gp = dy + p * Ho * Wo;
        float *dp = dx + p * H * W;
        int64_t h, w;
        for (h = 0; h < Ho; ++h)
            for (w = 0; w < Wo; ++w) {
                float g = gp[h * Wo + w] / 4.0f;
                float *q = dp + 2 * h * W + 2 * w;
                q[0] += g; q[1] += g; q[W] += g; q[W + 1] += g;
            }
    }
}
static void higan__avg_pool2_backward_op(higan_tape *t, void *p) {
    higan__unary_ctx *c = (higan__unary_ctx *)p;
    float *dx = higan_var_grad(t, c->x);
    if (dx) higan_avg_pool2_backward(dx, c->y->grad, c->x->shape[0], c->x->shape[1],
                                     c->x->shape[2], c->x->shape[3]);
}
HIGAN_DEF higan_var *higan_avg_pool2(higan_tape *t, higan_var *x) {
    higan_var *y;
    int64_t s[4];
    if (!x) return NULL;
    HIGAN_ASSERT(x->ndim == 4 && x->shape[2] >= 2 && x->shape[3] >= 2);
    s[0] = x->shape[0]; s[1] = x->shape[1]; s[2] = x->shape[2] / 2; s[3] = x->shape[3] / 2;
    if (!(y = higan_op_output(t, 4, s, &x, 1))) return NULL;
    higan_avg_pool2_forward(y->data, x->data, x->shape[0], x->shape[1], x->shape[2], x->shape[3]);
    return higan__record_unary(t, x, y, higan__avg_pool2_backward_op, 0.0f);
}

/* ---- 3x3 max pooling, stride 2, no padding: x [N,C,H,W] -> y [N,C,(H-3)/2+1,(W-3)/2+1] ---- */
#ifdef HIGAN__GEMM_AVX512
/* Output row h of one plane, 16 outputs at a time: the even, odd and next-even input columns of
   each window row are gathered from two loads by vpermt2ps. The same scan as the scalar loop
   (row-major window order; a strictly larger value or any NaN takes over), so y and argmax are
   bit-identical to it. The last, partial block loads only columns < W (masked loads) and
   stores only its outputs. */
static inline HIGAN__TGT_avx512 __mmask16 higan__cols_mask(int64_t n) {   /* the first n of 16 lanes */
    return (__mmask16)(n >= 16 ? 0xFFFFu : n <= 0 ? 0u : (1u << n) - 1u);
}
static HIGAN__TGT_avx512 void higan__maxpool_row_avx512(float *yr, int32_t *ar, const float *xp,
                                                       int64_t W, int64_t h, int64_t Wo) {
    const __m512i ev = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    const __m512i od = _mm512_add_epi32(ev, _mm512_set1_epi32(1));
    int64_t w0;
    for (w0 = 0; w0 < Wo; w0 += 16) {
        __m512 m = _mm512_setzero_ps();
        __m512i best = _mm512_setzero_si512();
        const int64_t left = W - 2 * w0;   /* columns of the row from r on */
        const __mmask16 mo = higan__cols_mask(Wo - w0);
        int i, j;
        for (i = 0; i < 3; ++i) {
            const float *r = xp + (2 * h + i) * W + 2 * w0;
            /* columns 2w, 2w + 1 from r[0 .. 31], 2w + 2 from r[2 .. 32] (r[33]: never needed) */
            __m512 a = _mm512_maskz_loadu_ps(higan__cols_mask(left), r);
            __m512 b = _mm512_maskz_loadu_ps(higan__cols_mask(left - 16), r + 16);
            __m512 a2 = _mm512_maskz_loadu_ps(higan__cols_mask(left - 2), r + 2);
            __m512 b2 = _mm512_maskz_loadu_ps((__mmask16)(higan__cols_mask(left - 18) & 0x7FFFu), r + 18);
            __m512 v[3];
            __m512i base = _mm512_add_epi32(ev, _mm512_set1_epi32((int)((2 * h + i) * W + 2 * w0)));
            v[0] = _mm512_permutex2var_ps(a, ev, b);
            v[1] = _mm512_permutex2var_ps(a, od, b);
            v[2] = _mm512_permutex2var_ps(a2, ev, b2);
            for (j = 0; j < 3; ++j) {
                __m512i k = _mm512_add_epi32(base, _mm512_set1_epi32(j));
                if (i == 0 && j == 0) { m = v[0]; best = k; continue; }
                {
                    __mmask16 take = _mm512_cmp_ps_mask(v[j], m, _CMP_GT_OQ) |
                                     _mm512_cmp_ps_mask(v[j], v[j], _CMP_UNORD_Q);
                    m = _mm512_mask_mov_ps(m, take, v[j]);
                    best = _mm512_mask_mov_epi32(best, take, k);
                }
            }
        }
        _mm512_mask_storeu_ps(yr + w0, mo, m);
        if (ar) _mm512_mask_storeu_epi32((void *)(ar + w0), mo, best);
    }
}
#endif
HIGAN_DEF void higan_max_pool3s2_forward(float *y, int32_t *argmax, const float *x, int64_t N,
                                         int64_t C, int64_t H, int64_t W) {
    int64_t p, P = N * C, Ho = (H - 3) / 2 + 1, Wo = (W - 3) / 2 + 1;
#ifdef HIGAN__GEMM_AVX512
    const int simd = higan_cpu_level() >= HIGAN_CPU_AVX512;
#endif
    HIGAN_ASSERT(H >= 3 && W >= 3 && H * W <= INT32_MAX);
    HIGAN__PARALLEL_FOR_IF(P * Ho * Wo > HIGAN__SHAPE_PAR / 4)
    for (p = 0; p < P; ++p) {
        const float *xp = x + p * H * W;
        float *yp = y + p * Ho * Wo;
        int32_t *ap = argmax ? argmax + p * Ho * Wo : NULL;
        int64_t h, w, i, j;
        for (h = 0; h < Ho; ++h) {
#ifdef HIGAN__GEMM_AVX512
            if (simd) {
                higan__maxpool_row_avx512(yp + h * Wo, ap ? ap + h * Wo : NULL, xp, W, h, Wo);
                continue;
            }
#endif
            for (w = 0; w < Wo; ++w) {
                int64_t best = 2 * h * W + 2 * w;
                float m = xp[best];
                /* PyTorch's scan: a strictly larger value or any NaN takes over */
                for (i = 0; i < 3; ++i)
                    for (j = 0; j < 3; ++j) {
                        int64_t k = (2 * h + i) * W + 2 * w + j;
                        float v = xp[k];
                        if (v > m || v != v) { m = v; best = k; }
                    }
                yp[h * Wo + w] = m;
                if (ap) ap[h * Wo + w] = (int32_t)best;
            }
        }
    }
}
/* dx [N,C,H,W] += dy routed to the argmax of each window (windows overlap: one thread per plane). */
HIGAN_DEF void higan_max_pool3s2_backward(float *dx, const float *dy, const int32_t *argmax,
                                          int64_t N, int64_t C, int64_t H, int64_t W) {
    int64_t p, P = N * C, Ho = (H - 3) / 2 + 1, Wo = (W - 3) / 2 + 1;
    if (!dx) return;
    HIGAN_ASSERT(H >= 3 && W >= 3);
    HIGAN__PARALLEL_FOR_IF(P * Ho * Wo > HIGAN__SHAPE_PAR / 4)
    for (p = 0; p < P; ++p) {
        const float *gp = dy + p * Ho * Wo;
        const int32_t *ap = argmax + p * Ho * Wo;
        float *dp = dx + p * H * W;
        int64_t k;
        for (k = 0; k < Ho * Wo; ++k) dp[ap[k]] += gp[k];
    }
}
typedef struct { higan_var *x, *y; int32_t *argmax; } higan__maxpool_ctx;
static void higan__maxpool_backward_op(higan_tape *t, void *p) {
    higan__maxpool_ctx *c = (higan__maxpool_ctx *)p;
    float *dx = higan_var_grad(t, c->x);
    if (dx) higan_max_pool3s2_backward(dx, c->y->grad, c->argmax, c->x->shape[0], c->x->shape[1],
                                       c->x->shape[2], c->x->shape[3]);
}
HIGAN_DEF higan_var *higan_max_pool3s2(higan_tape *t, higan_var *x) {
    higan_var *y;
    higan__maxpool_ctx *c = NULL;
    int32_t *argmax = NULL;
    int64_t s[4];
    if (!x) return NULL;
    HIGAN_ASSERT(x->ndim == 4 && x->shape[2] >= 3 && x->shape[3] >= 3);
    s[0] = x->shape[0]; s[1] = x->shape[1];
    s[2] = (x->shape[2] - 3) / 2 + 1; s[3] = (x->shape[3] - 3) / 2 + 1;
    if (!(y = higan_op_output(t, 4, s, &x, 1))) return NULL;
    if (y->requires_grad) {   /* the argmax is kept only when a backward will need it */
        argmax = (int32_t *)higan_arena_alloc(t->arena, (size_t)higan_var_numel(y) * sizeof(int32_t));
        if (!argmax || !(c = (higan__maxpool_ctx *)higan_tape_ctx(t, sizeof *c))) return NULL;
    }
    higan_max_pool3s2_forward(y->data, argmax, x->data, x->shape[0], x->shape[1], x->shape[2],
                              x->shape[3]);
    if (c) {
        c->x = x; c->y = y; c->argmax = argmax;
        higan_tape_record(t, y, higan__maxpool_backward_op, c);
    }
    return y;
}

/* ---- constant padding (top, bottom, left, right); negative amounts crop ------------------- */
/* Valid output columns [w0, w1) map to input column w - left. */
static void higan__pad_cols(int64_t W, int64_t Wo, int left, int64_t *w0, int64_t *w1) {
    *w0 = left > 0 ? left : 0;
    *w1 = W + left < Wo ? W + left : Wo;
    if (*w1 < *w0) *w1 = *w0;
}
/* x [N,C,H,W] -> y [N,C,H+top+bottom,W+left+right] */
HIGAN_DEF void higan_pad_forward(float *y, const float *x, int64_t N, int64_t C, int64_t H,
                                 int64_t W, int top, int bottom, int left, int right, float value) {
    int64_t p, P = N * C, Ho = H + top + bottom, Wo = W + left + right, w0, w1;
    HIGAN_ASSERT(Ho >= 0 && Wo >= 0);
    higan__pad_cols(W, Wo, left, &w0, &w1);
    HIGAN__PARALLEL_FOR_IF(P * Ho * Wo > HIGAN__SHAPE_PAR)
    for (p = 0; p < P; ++p) {
        const float *xp = x + p * H * W;
        float *yp = y + p * Ho * Wo;
        int64_t h, w;
        for (h = 0; h < Ho; ++h) {
            int64_t hi = h - top;
            float *row = yp + h * Wo;
            if (hi < 0 || hi >= H) {
                for (w = 0; w < Wo; ++w) row[w] = value;
                continue;
            }
            for (w = 0; w < w0; ++w) row[w] = value;
            if (w1 > w0) memcpy(row + w0, xp + hi * W + (w0 - left), (size_t)(w1 - w0) * sizeof(float));
            for (w = w1; w < Wo; ++w) row[w] = value;
        }
    }
}
/* dx [N,C,H,W] += the interior of dy [N,C,Ho,Wo] */
HIGAN_DEF void higan_pad_backward(float *dx, const float *dy, int64_t N, int64_t C, int64_t H,
                                  int64_t W, int top, int bottom, int left, int right) {
    int64_t p, P = N * C, Ho = H + top + bottom, Wo = W + left + right, w0, w1;
    higan__ew_fn acc = higan__ew_kernel();
    if (!dx) return;
    HIGAN_ASSERT(Ho >= 0 && Wo >= 0);
    higan__pad_cols(W, Wo, left, &w0, &w1);
    HIGAN__PARALLEL_FOR_IF(P * Ho * Wo > HIGAN__SHAPE_PAR)
    for (p = 0; p < P; ++p) {
        const float *gp = dy + p * Ho * Wo;
        float *dp = dx + p * H * W;
        higan__ew_args e;
        int64_t h;
        memset(&e, 0, sizeof e);
        e.kind = HIGAN__EW_ACC;
        for (h = 0; h < Ho; ++h) {
            int64_t hi = h - top;
            if (hi < 0 || hi >= H || w1 <= w0) continue;
            e.y = dp + hi * W + (w0 - left);   /* the row's interior += */
            e.a = gp + h * Wo + w0;
            acc(&e, 0, w1 - w0);
        }
    }
}
typedef struct { higan_var *x, *y; int top, bottom, left, right; } higan__pad_ctx;
static void higan__pad_backward_op(higan_tape *t, void *p) {
    higan__pad_ctx *c = (higan__pad_ctx *)p;
    float *dx = higan_var_grad(t, c->x);
    if (dx) higan_pad_backward(dx, c->y->grad, c->x->shape[0], c->x->shape[1], c->x->shape[2],
                               c->x->shape[3], c->top, c->bottom, c->left, c->right);
}
HIGAN_DEF higan_var *higan_pad(higan_tape *t, higan_var *x, int top, int bottom, int left,
                               int right, float value) {
    higan_var *y;
    higan__pad_ctx *c;
    int64_t s[4];
    if (!x) return NULL;
    HIGAN_ASSERT(x->ndim == 4);
    s[0] = x->shape[0]; s[1] = x->shape[1];
    s[2] = x->shape[2] + top + bottom; s[3] = x->shape[3] + left + right;
    HIGAN_ASSERT(s[2] >= 1 && s[3] >= 1);
    if (!(y = higan_op_output(t, 4, s, &x, 1))) return NULL;
    higan_pad_forward(y->data, x->data, x->shape[0], x->shape[1], x->shape[2], x->shape[3],
                      top, bottom, left, right, value);
    if (y->requires_grad) {
        if (!(c = (higan__pad_ctx *)higan_tape_ctx(t, sizeof *c))) return NULL;
        c->x = x; c->y = y; c->top = top; c->bottom = bottom; c->left = left; c->right = right;
        higan_tape_record(t, y, higan__pad_backward_op, c);
    }
    return y;
}

/* ---- activations (n values, any shape) ------------------------------------------------------ */
HIGAN_DEF void higan_relu_forward(float *y, const float *x, int64_t n) {
    higan__ew(HIGAN__EW_RELU, y, x, NULL, n);   /* NaN stays */
}
HIGAN_DEF void higan_relu_backward(float *dx, const float *dy, const float *x, int64_t n) {
    if (dx) higan__ew(HIGAN__EW_RELU_BWD, dx, x, dy, n);
}
static void higan__relu_backward_op(higan_tape *t, void *p) {
    higan__unary_ctx *c = (higan__unary_ctx *)p;
    float *dx = higan_var_grad(t, c->x);
    if (dx) t->be->relu_backward(t->be->ctx, dx, c->y->grad, c->x->data, higan_var_numel(c->x));
}
HIGAN_DEF higan_var *higan_relu(higan_tape *t, higan_var *x) {
    higan_var *y;
    if (!x || !(y = higan_op_output(t, x->ndim, x->shape, &x, 1))) return NULL;
    t->be->relu_forward(t->be->ctx, y->data, x->data, higan_var_numel(x));
    return higan__record_unary(t, x, y, higan__relu_backward_op, 0.0f);
}

/* In-place ReLU for a network that owns x: y shares x's memory, so x's value is gone. Only
   for an x made by an op whose backward does not read its own output (conv, linear, add)
   and that nothing else reads afterwards. The backward reads y > 0, the same set as x > 0. */
static void higan__relu_inplace_backward_op(higan_tape *t, void *p) {
    higan__unary_ctx *c = (higan__unary_ctx *)p;
    int64_t i, n = higan_var_numel(c->x);
    float *dx = higan__var_grad_take(t, c->x, c->y);
    if (dx == c->y->grad) {             /* in place: dx = 0 + (y > 0 ? dy : 0), as below */
        float *g = dx;
        const float *y = c->y->data;
        c->y->grad = NULL;
        HIGAN__PARALLEL_FOR_IF(n > HIGAN__SHAPE_PAR)
        for (i = 0; i < n; ++i) g[i] = y[i] > 0.0f ? 0.0f + g[i] : 0.0f;
    } else if (dx) {
        t->be->relu_backward(t->be->ctx, dx, c->y->grad, c->y->data, n);
    }
}
static higan_var *higan__relu_inplace(higan_tape *t, higan_var *x) {
    higan_var *y;
    if (!x) return NULL;
    HIGAN_ASSERT(x->owns_data);
    if (!(y = higan_var_wrap(t, x->data, x->ndim, x->shape))) return NULL;
    y->requires_grad = x->requires_grad && t->no_grad == 0;
    t->be->relu_forward(t->be->ctx, y->data, x->data, higan_var_numel(x));
    return higan__record_unary(t, x, y, higan__relu_inplace_backward_op, 0.0f);
}
/* A network hands back the value of a variable it made once no op will read it again: not
   its consumers' forward (all done) nor any backward (pooling, add and conv's output need
   none). The variable keeps its shape and its gradient; its data becomes NULL. */
static void higan__var_drop(higan_tape *t, higan_var *v) {
    if (!v || !v->owns_data || !v->data || t->be->device) return;
    higan_arena_recycle(t->data, v->data, (size_t)higan_var_numel(v) * sizeof(float));
    v->data = NULL;
    v->owns_data = 0;
}

HIGAN_DEF void higan_leaky_relu_forward(float *y, const float *x, float slope, int64_t n) {
    int64_t i;
    HIGAN__PARALLEL_FOR_IF(n > HIGAN__SHAPE_PAR)
    for (i = 0; i < n; ++i) y[i] = x[i] > 0.0f ? x[i] : x[i] * slope;
}
HIGAN_DEF void higan_leaky_relu_backward(float *dx, const float *dy, const float *x, float slope,
                                         int64_t n) {
    int64_t i;
    if (!dx) return;
    HIGAN__PARALLEL_FOR_IF(n > HIGAN__SHAPE_PAR)
    for (i = 0; i < n; ++i) dx[i] += x[i] > 0.0f ? dy[i] : dy[i] * slope;
}
static void higan__leaky_backward_op(higan_tape *t, void *p) {
    higan__unary_ctx *c = (higan__unary_ctx *)p;
    float *dx = higan_var_grad(t, c->x);
    if (dx) higan_leaky_relu_backward(dx, c->y->grad, c->x->data, c->s, higan_var_numel(c->x));
}
HIGAN_DEF higan_var *higan_leaky_relu(higan_tape *t, higan_var *x, float slope) {
    higan_var *y;
    if (!x || !(y = higan_op_output(t, x->ndim, x->shape, &x, 1))) return NULL;
    higan_leaky_relu_forward(y->data, x->data, slope, higan_var_numel(x));
    return higan__record_unary(t, x, y, higan__leaky_backward_op, slope);
}

HIGAN_DEF void higan_tanh_forward(float *y, const float *x, int64_t n) {
    int64_t i;
    HIGAN__PARALLEL_FOR_IF(n > HIGAN__SHAPE_PAR / 8)
    for (i = 0; i < n; ++i) y[i] = tanhf(x[i]);
}
HIGAN_DEF void higan_tanh_backward(float *dx, const float *dy, const float *y, int64_t n) {
    int64_t i;
    if (!dx) return;
    HIGAN__PARALLEL_FOR_IF(n > HIGAN__SHAPE_PAR)
    for (i = 0; i < n; ++i) dx[i] += dy[i] * (1.0f - y[i] * y[i]);
}
static void higan__tanh_backward_op(higan_tape *t, void *p) {
    higan__unary_ctx *c = (higan__unary_ctx *)p;
    float *dx = higan_var_grad(t, c->x);
    if (dx) t->be->tanh_backward(t->be->ctx, dx, c->y->grad, c->y->data, higan_var_numel(c->x));
}
HIGAN_DEF higan_var *higan_tanh(higan_tape *t, higan_var *x) {
    higan_var *y;
    if (!x || !(y = higan_op_output(t, x->ndim, x->shape, &x, 1))) return NULL;
    t->be->tanh_forward(t->be->ctx, y->data, x->data, higan_var_numel(x));
    return higan__record_unary(t, x, y, higan__tanh_backward_op, 0.0f);
}

/* ---- concat / slice: tensors viewed as [outer, size, inner] around the dim -------------------- */
/* dx [outer, len, inner] += dy[:, start:start+len, :] of dy [outer, size, inner] (concat backward) */
static void higan__gather_add(float *dx, const float *dy, int64_t outer, int64_t size, int64_t inner,
                              int64_t start, int64_t len) {
    int64_t o;
    HIGAN__PARALLEL_FOR_IF(outer * len * inner > HIGAN__SHAPE_PAR)
    for (o = 0; o < outer; ++o) {
        float *d = dx + o * len * inner;
        const float *g = dy + (o * size + start) * inner;
        int64_t k;
        for (k = 0; k < len * inner; ++k) d[k] += g[k];
    }
}
HIGAN_DEF void higan_concat_forward(float *y, const float *const *xs, const int64_t *sizes, int n,
                                    int64_t outer, int64_t inner) {
    int64_t o, S = 0;
    int i;
    for (i = 0; i < n; ++i) S += sizes[i];
    HIGAN__PARALLEL_FOR_IF(outer > 1 && outer * S * inner > HIGAN__SHAPE_PAR)
    for (o = 0; o < outer; ++o) {
        int64_t off = 0;
        int k;
        for (k = 0; k < n; ++k) {
            memcpy(y + (o * S + off) * inner, xs[k] + o * sizes[k] * inner,
                   (size_t)(sizes[k] * inner) * sizeof(float));
            off += sizes[k];
        }
    }
}
HIGAN_DEF void higan_concat_backward(float *const *dxs, const float *dy, const int64_t *sizes,
                                     int n, int64_t outer, int64_t inner) {
    int64_t S = 0, off = 0;
    int i;
    for (i = 0; i < n; ++i) S += sizes[i];
    for (i = 0; i < n; ++i) {
        if (dxs[i]) higan__gather_add(dxs[i], dy, outer, S, inner, off, sizes[i]);
        off += sizes[i];
    }
}
HIGAN_DEF void higan_slice_forward(float *y, const float *x, int64_t outer, int64_t size,
                                   int64_t inner, int64_t start, int64_t len) {
    int64_t o;
    HIGAN_ASSERT(start >= 0 && len >= 0 && start + len <= size);
    HIGAN__PARALLEL_FOR_IF(outer > 1 && outer * len * inner > HIGAN__SHAPE_PAR)
    for (o = 0; o < outer; ++o)
        memcpy(y + o * len * inner, x + (o * size + start) * inner, (size_t)(len * inner) * sizeof(float));
}
HIGAN_DEF void higan_slice_backward(float *dx, const float *dy, int64_t outer, int64_t size,
                                    int64_t inner, int64_t start, int64_t len) {
    int64_t o;
    if (!dx) return;
    HIGAN_ASSERT(start >= 0 && len >= 0 && start + len <= size);
    HIGAN__PARALLEL_FOR_IF(outer * len * inner > HIGAN__SHAPE_PAR)
    for (o = 0; o < outer; ++o) {
        float *d = dx + (o * size + start) * inner;
        const float *g = dy + o * len * inner;
        int64_t k;
        for (k = 0; k < len * inner; ++k) d[k] += g[k];
    }
}

typedef struct { higan_var **xs; higan_var *y; int n, dim; } higan__concat_ctx;
static void higan__concat_backward_op(higan_tape *t, void *p) {
    higan__concat_ctx *c = (higan__concat_ctx *)p;
    int64_t outer, inner, *sizes;
    float **dxs;
    size_t mark;
    int i;
    higan__outer_inner(c->y, c->dim, &outer, &inner);
    /* dx_i += dy[:, off:off+size_i, :]. Every gradient buffer is taken before the mark (on the
       CPU they come from the same arena and must outlive the release); the host tables after. */
    for (i = 0; i < c->n; ++i) (void)higan_var_grad(t, c->xs[i]);
    mark = higan_arena_mark(t->arena);
    dxs = (float **)higan_arena_alloc(t->arena, sizeof(float *) * (size_t)c->n);
    sizes = (int64_t *)higan_arena_alloc(t->arena, sizeof(int64_t) * (size_t)c->n);
    for (i = 0; dxs && sizes && i < c->n; ++i) {
        dxs[i] = higan_var_grad(t, c->xs[i]);
        sizes[i] = c->xs[i]->shape[c->dim];
    }
    if (dxs && sizes) t->be->concat_backward(t->be->ctx, dxs, c->y->grad, sizes, c->n, outer, inner);
    higan_arena_release(t->arena, mark);
}
HIGAN_DEF higan_var *higan_concat(higan_tape *t, higan_var *const *xs, int n, int dim) {
    higan_var *y;
    higan__concat_ctx *c = NULL;
    const float **ptrs;
    int64_t s[4], outer, inner, S = 0, *sizes;
    size_t mark;
    int i, d;
    HIGAN_ASSERT(n >= 1);
    for (i = 0; i < n; ++i) if (!xs[i]) return NULL;
    dim = higan__dim(xs[0], dim);
    for (i = 0; i < n; ++i) {
        HIGAN_ASSERT(xs[i]->ndim == xs[0]->ndim);
        for (d = 0; d < xs[0]->ndim; ++d)
            HIGAN_ASSERT(d == dim || xs[i]->shape[d] == xs[0]->shape[d]);
        S += xs[i]->shape[dim];
    }
    for (d = 0; d < 4; ++d) s[d] = xs[0]->shape[d];
    s[dim] = S;
    if (!(y = higan_op_output(t, xs[0]->ndim, s, xs, n))) return NULL;
    if (y->requires_grad) {
        if (!(c = (higan__concat_ctx *)higan_tape_ctx(t, sizeof *c))) return NULL;
        if (!(c->xs = (higan_var **)higan_arena_alloc(t->arena, (size_t)n * sizeof(higan_var *)))) return NULL;
        for (i = 0; i < n; ++i) c->xs[i] = xs[i];
        c->y = y; c->n = n; c->dim = dim;
    }
    higan__outer_inner(y, dim, &outer, &inner);
    mark = higan_arena_mark(t->arena);   /* scratch tables for the kernel */
    ptrs = (const float **)higan_arena_alloc(t->arena, (size_t)n * sizeof(const float *));
    sizes = (int64_t *)higan_arena_alloc(t->arena, (size_t)n * sizeof(int64_t));
    if (!ptrs || !sizes) return NULL;
    for (i = 0; i < n; ++i) { ptrs[i] = xs[i]->data; sizes[i] = xs[i]->shape[dim]; }
    t->be->concat_forward(t->be->ctx, y->data, ptrs, sizes, n, outer, inner);
    higan_arena_release(t->arena, mark);
    if (y->requires_grad) higan_tape_record(t, y, higan__concat_backward_op, c);
    return y;
}

typedef struct { higan_var *x, *y; int dim; int64_t start; } higan__slice_ctx;
static void higan__slice_backward_op(higan_tape *t, void *p) {
    higan__slice_ctx *c = (higan__slice_ctx *)p;
    float *dx = higan_var_grad(t, c->x);
    int64_t outer, inner;
    higan__outer_inner(c->x, c->dim, &outer, &inner);
    if (dx) t->be->slice_backward(t->be->ctx, dx, c->y->grad, outer, c->x->shape[c->dim], inner, c->start,
                                  c->y->shape[c->dim]);
}
HIGAN_DEF higan_var *higan_slice(higan_tape *t, higan_var *x, int dim, int64_t start, int64_t len) {
    higan_var *y;
    higan__slice_ctx *c;
    int64_t s[4], outer, inner;
    int d;
    if (!x) return NULL;
    dim = higan__dim(x, dim);
    HIGAN_ASSERT(start >= 0 && len >= 1 && start + len <= x->shape[dim]);
    for (d = 0; d < 4; ++d) s[d] = x->shape[d];
    s[dim] = len;
    if (!(y = higan_op_output(t, x->ndim, s, &x, 1))) return NULL;
    higan__outer_inner(x, dim, &outer, &inner);
    t->be->slice_forward(t->be->ctx, y->data, x->data, outer, x->shape[dim], inner, start, len);
    if (y->requires_grad) {
        if (!(c = (higan__slice_ctx *)higan_tape_ctx(t, sizeof *c))) return NULL;
        c->x = x; c->y = y; c->dim = dim; c->start = start;
        higan_tape_record(t, y, higan__slice_backward_op, c);
    }
    return y;
}
HIGAN_DEF higan_status higan_split(higan_tape *t, higan_var *x, int dim, int n, const int64_t *sizes,
                                   higan_var **out) {
    int64_t off = 0;
    int i;
    higan_status st;
    for (i = 0; i < n; ++i) out[i] = NULL;
    if (!x) {   /* keep the message of an earlier overflow, which is the usual cause */
        st = higan_tape_status(t);
        return st != HIGAN_OK ? st : higan__error(HIGAN_ERR_ARG, "split: input is NULL");
    }
    dim = higan__dim(x, dim);
    for (i = 0; i < n; ++i) off += sizes[i];
    HIGAN_ASSERT(off == x->shape[dim]);
    for (off = 0, i = 0; i < n; off += sizes[i], ++i)
        if (!(out[i] = higan_slice(t, x, dim, off, sizes[i]))) {
            st = higan_tape_status(t);
            return st != HIGAN_OK ? st : higan__error(HIGAN_ERR_NOMEM, "split: slice %d failed", i);
        }
    return HIGAN_OK;
}

/* ---- reshape: a view (shared data, own gradient buffer) -------------------------------------- */
static void higan__reshape_backward_op(higan_tape *t, void *p) {
    higan__unary_ctx *c = (higan__unary_ctx *)p;
    float *dx = higan_var_grad(t, c->x);
    if (dx) t->be->add_backward(t->be->ctx, dx, NULL, c->y->grad, higan_var_numel(c->x));
}
HIGAN_DEF higan_var *higan_reshape(higan_tape *t, higan_var *x, int ndim, const int64_t *shape) {
    higan_var *y;
    int64_t s[4], known = 1, n;
    int d, infer = -1;
    if (!x) return NULL;
    HIGAN_ASSERT(ndim >= 1 && ndim <= 4);
    for (d = 0; d < ndim; ++d) {
        s[d] = shape[d];
        if (shape[d] == -1) { HIGAN_ASSERT(infer < 0 && "reshape: at most one -1"); infer = d; }
        else { HIGAN_ASSERT(shape[d] >= 0); known *= shape[d]; }
    }
    n = higan_var_numel(x);
    if (infer >= 0) {
        HIGAN_ASSERT(known > 0 && n % known == 0);
        s[infer] = n / known;
    } else {
        HIGAN_ASSERT(known == n && "reshape: element count differs");
    }
    if (!(y = higan_var_wrap(t, x->data, ndim, s))) return NULL;
    y->requires_grad = x->requires_grad && t->no_grad == 0;
    return higan__record_unary(t, x, y, higan__reshape_backward_op, 0.0f);
}

/* ---- permute (copy), up to 4 dims --------------------------------------------------------------- */
/* Output sizes ys and input strides xs per output dim, padded in front to 4 dims. */
static void higan__permute_setup(int ndim, const int64_t *shape, const int *perm, int64_t ys[4],
                                 int64_t xs[4]) {
    int64_t st[4];
    int d, seen = 0;
    HIGAN_ASSERT(ndim >= 1 && ndim <= 4);
    st[ndim - 1] = 1;
    for (d = ndim - 2; d >= 0; --d) st[d] = st[d + 1] * shape[d + 1];
    for (d = 0; d < ndim; ++d) {
        HIGAN_ASSERT(perm[d] >= 0 && perm[d] < ndim && !(seen & (1 << perm[d])) && "not a permutation");
        seen |= 1 << perm[d];
    }
    for (d = 0; d < 4; ++d) {
        int k = d - (4 - ndim);
        ys[d] = k < 0 ? 1 : shape[perm[k]];
        xs[d] = k < 0 ? 0 : st[perm[k]];
    }
}
/* x [shape] -> y [shape[perm[0]], ..., shape[perm[ndim-1]]] */
HIGAN_DEF void higan_permute_forward(float *y, const float *x, int ndim, const int64_t *shape,
                                     const int *perm) {
    int64_t ys[4], xs[4], p, P;
    higan__permute_setup(ndim, shape, perm, ys, xs);
    P = ys[0] * ys[1];
    HIGAN__PARALLEL_FOR_IF(P > 1 && P * ys[2] * ys[3] > HIGAN__SHAPE_PAR)
    for (p = 0; p < P; ++p) {
        int64_t i0 = p / ys[1], i1 = p % ys[1], i2, i3;
        const float *xb = x + i0 * xs[0] + i1 * xs[1];
        float *yb = y + p * ys[2] * ys[3];
        for (i2 = 0; i2 < ys[2]; ++i2)
            for (i3 = 0; i3 < ys[3]; ++i3) yb[i2 * ys[3] + i3] = xb[i2 * xs[2] + i3 * xs[3]];
    }
}
/* dx [shape] += dy permuted back; each dx element receives exactly one dy element. */
HIGAN_DEF void higan_permute_backward(float *dx, const float *dy, int ndim, const int64_t *shape,
                                      const int *perm) {
    int64_t ys[4], xs[4], p, P;
    if (!dx) return;
    higan__permute_setup(ndim, shape, perm, ys, xs);
    P = ys[0] * ys[1];
    HIGAN__PARALLEL_FOR_IF(P > 1 && P * ys[2] * ys[3] > HIGAN__SHAPE_PAR)
    for (p = 0; p < P; ++p) {
        int64_t i0 = p / ys[1], i1 = p % ys[1], i2, i3;
        float *db = dx + i0 * xs[0] + i1 * xs[1];
        const float *gb = dy + p * ys[2] * ys[3];
        for (i2 = 0; i2 < ys[2]; ++i2)
            for (i3 = 0; i3 < ys[3]; ++i3) db[i2 * xs[2] + i3 * xs[3]] += gb[i2 * ys[3] + i3];
    }
}
typedef struct { higan_var *x, *y; int perm[4]; } higan__permute_ctx;
static void higan__permute_backward_op(higan_tape *t, void *p) {
    higan__permute_ctx *c = (higan__permute_ctx *)p;
    float *dx = higan_var_grad(t, c->x);
    if (dx) t->be->permute_backward(t->be->ctx, dx, c->y->grad, c->x->ndim, c->x->shape, c->perm);
}
HIGAN_DEF higan_var *higan_permute(higan_tape *t, higan_var *x, const int *perm) {
    higan_var *y;
    higan__permute_ctx *c;
    int64_t s[4];
    int d;
    if (!x) return NULL;
    for (d = 0; d < x->ndim; ++d) {
        HIGAN_ASSERT(perm[d] >= 0 && perm[d] < x->ndim);
        s[d] = x->shape[perm[d]];
    }
    if (!(y = higan_op_output(t, x->ndim, s, &x, 1))) return NULL;
    t->be->permute_forward(t->be->ctx, y->data, x->data, x->ndim, x->shape, perm);
    if (y->requires_grad) {
        if (!(c = (higan__permute_ctx *)higan_tape_ctx(t, sizeof *c))) return NULL;
        c->x = x; c->y = y;
        for (d = 0; d < 4; ++d) c->perm[d] = d < x->ndim ? perm[d] : d;
        higan_tape_record(t, y, higan__permute_backward_op, c);
    }
    return y;
}

/* ---- masked width reductions: x [N,C,H,W] -> y [N,C] over h and w < lens[n] ------------------- */
static int64_t higan__valid_cols(int len, int64_t W) {
    HIGAN_ASSERT(len >= 0);
    return (int64_t)len < W ? (int64_t)len : W;
}
/* mean != 0: divide by (float)(H * lens[n]) + eps; the sum runs in double. */
static void higan__masked_width_forward(float *y, const float *x, const int *lens, int64_t N,
                                        int64_t C, int64_t H, int64_t W, float eps, int mean) {
    int64_t p;
    HIGAN__PARALLEL_FOR_IF(N * C * H * W > HIGAN__SHAPE_PAR)
    for (p = 0; p < N * C; ++p) {
        int64_t n = p / C, wv = higan__valid_cols(lens[n], W), h, w;
        const float *xp = x + p * H * W;
        double s = 0.0;
        for (h = 0; h < H; ++h)
            for (w = 0; w < wv; ++w) s += xp[h * W + w];
        y[p] = mean ? (float)s / ((float)(H * (int64_t)lens[n]) + eps) : (float)s;
    }
}
static void higan__masked_width_backward(float *dx, const float *dy, const int *lens, int64_t N,
                                         int64_t C, int64_t H, int64_t W, float eps, int mean) {
    int64_t p;
    if (!dx) return;
    HIGAN__PARALLEL_FOR_IF(N * C * H * W > HIGAN__SHAPE_PAR)
    for (p = 0; p < N * C; ++p) {
        int64_t n = p / C, wv = higan__valid_cols(lens[n], W), h, w;
        float g = mean ? dy[p] / ((float)(H * (int64_t)lens[n]) + eps) : dy[p];
        float *dp = dx + p * H * W;
        for (h = 0; h < H; ++h)
            for (w = 0; w < wv; ++w) dp[h * W + w] += g;
    }
}
HIGAN_DEF void higan_masked_sum_width_forward(float *y, const float *x, const int *lens,
                                              int64_t N, int64_t C, int64_t H, int64_t W) {
    higan__masked_width_forward(y, x, lens, N, C, H, W, 0.0f, 0);
}
HIGAN_DEF void higan_masked_sum_width_backward(float *dx, const float *dy, const int *lens,
                                               int64_t N, int64_t C, int64_t H, int64_t W) {
    higan__masked_width_backward(dx, dy, lens, N, C, H, W, 0.0f, 0);
}
HIGAN_DEF void higan_masked_mean_width_forward(float *y, const float *x, const int *lens,
                                               int64_t N, int64_t C, int64_t H, int64_t W, float eps) {
    higan__masked_width_forward(y, x, lens, N, C, H, W, eps, 1);
}
HIGAN_DEF void higan_masked_mean_width_backward(float *dx, const float *dy, const int *lens,
                                                int64_t N, int64_t C, int64_t H, int64_t W, float eps) {
    higan__masked_width_backward(dx, dy, lens, N, C, H, W, eps, 1);
}
typedef struct { higan_var *x, *y; int *lens; float eps; int mean; } higan__masked_ctx;
/* [N,C,T] is [N,C,1,T] */
static void higan__masked_dims(const higan_var *x, int64_t *H, int64_t *W) {
    HIGAN_ASSERT(x->ndim == 3 || x->ndim == 4);
    *H = x->ndim == 4 ? x->shape[2] : 1;
    *W = x->ndim == 4 ? x->shape[3] : x->shape[2];
}
static void higan__masked_backward_op(higan_tape *t, void *p) {
    higan__masked_ctx *c = (higan__masked_ctx *)p;
    float *dx = higan_var_grad(t, c->x);
    int64_t H, W;
    higan__masked_dims(c->x, &H, &W);
    if (dx) higan__masked_width_backward(dx, c->y->grad, c->lens, c->x->shape[0], c->x->shape[1],
                                         H, W, c->eps, c->mean);
}
static higan_var *higan__masked_width(higan_tape *t, higan_var *x, const int *lens, float eps,
                                      int mean) {
    higan_var *y;
    higan__masked_ctx *c;
    int64_t s[2], H, W, n;
    if (!x) return NULL;
    higan__masked_dims(x, &H, &W);
    s[0] = x->shape[0]; s[1] = x->shape[1];
    if (!(y = higan_op_output(t, 2, s, &x, 1))) return NULL;
    higan__masked_width_forward(y->data, x->data, lens, s[0], s[1], H, W, eps, mean);
    if (y->requires_grad) {   /* lens copied: the caller's array may be gone by backward */
        if (!(c = (higan__masked_ctx *)higan_tape_ctx(t, sizeof *c))) return NULL;
        if (!(c->lens = (int *)higan_arena_alloc(t->arena, (size_t)s[0] * sizeof(int)))) return NULL;
        for (n = 0; n < s[0]; ++n) c->lens[n] = lens[n];
        c->x = x; c->y = y; c->eps = eps; c->mean = mean;
        higan_tape_record(t, y, higan__masked_backward_op, c);
    }
    return y;
}
HIGAN_DEF higan_var *higan_masked_sum_width(higan_tape *t, higan_var *x, const int *lens) {
    return higan__masked_width(t, x, lens, 0.0f, 0);
}
HIGAN_DEF higan_var *higan_masked_mean_width(higan_tape *t, higan_var *x, const int *lens, float eps) {
    return higan__masked_width(t, x, lens, eps, 1);
}

/* ---- dropout ------------------------------------------------------------------------------------- */
/* One rng draw keys the whole mask (see the declaration). mask may be NULL. */
HIGAN_DEF void higan_dropout_forward(float *y, float *mask, const float *x, float p,
                                     higan_rng *rng, int64_t n) {
    uint64_t key = higan_rng_u64(rng);
    higan__ew_args e;
    memset(&e, 0, sizeof e);
    e.kind = HIGAN__EW_DROPOUT; e.y = y; e.a = x; e.mask = mask; e.p = p;
    e.scale = p < 1.0f ? 1.0f / (1.0f - p) : 0.0f;
    e.k0 = (uint32_t)key; e.k1 = (uint32_t)(key >> 32);
    higan__ew_run(&e, n);
}
HIGAN_DEF void higan_dropout_backward(float *dx, const float *dy, const float *mask, int64_t n) {
    if (dx) higan__ew(HIGAN__EW_ACC_MUL, dx, dy, mask, n);
}
HIGAN_DEF void higan_dropout_mask(float *mask, float p, higan_rng *rng, int64_t n) {
    uint64_t key = higan_rng_u64(rng);
    float scale = p < 1.0f ? 1.0f / (1.0f - p) : 0.0f;
    int64_t i;
    for (i = 0; i < n; ++i)
        mask[i] = higan__dropout_uniform((uint32_t)key, (uint32_t)(key >> 32), (uint64_t)i) >= p ? scale : 0.0f;
}
typedef struct { higan_var *x, *y; float *mask; } higan__dropout_ctx;
static void higan__dropout_backward_op(higan_tape *t, void *p) {
    higan__dropout_ctx *c = (higan__dropout_ctx *)p;
    float *dx = higan_var_grad(t, c->x);
    if (dx) higan_dropout_backward(dx, c->y->grad, c->mask, higan_var_numel(c->x));
}
HIGAN_DEF higan_var *higan_dropout(higan_tape *t, higan_var *x, float p, int train, higan_rng *rng) {
    higan_var *y;
    higan__dropout_ctx *c = NULL;
    float *mask = NULL;
    int64_t n;
    if (!x) return NULL;
    if (!train || p <= 0.0f) return x;           /* identity: no copy, nothing recorded */
    HIGAN_ASSERT(rng != NULL);
    if (!(y = higan_op_output(t, x->ndim, x->shape, &x, 1))) return NULL;
    n = higan_var_numel(x);
    if (y->requires_grad) {
        if (!(mask = higan_arena_floats(t->arena, n))) return NULL;
        if (!(c = (higan__dropout_ctx *)higan_tape_ctx(t, sizeof *c))) return NULL;
    }
    higan_dropout_forward(y->data, mask, x->data, p, rng, n);
    if (c) {
        c->x = x; c->y = y; c->mask = mask;
        higan_tape_record(t, y, higan__dropout_backward_op, c);
    }
    return y;
}

/* relu(dropout(x)) in one pass each way (the StyleBackbone's dropout before an act-first conv
   block): the same mask and values as the two ops (the mask is >= 0, so the order does not
   matter). Backward dx += dy * mask where y > 0. Train mode and p > 0 only (else: relu). */
static void higan__dropout_relu_backward_op(higan_tape *t, void *p) {
    higan__dropout_ctx *c = (higan__dropout_ctx *)p;
    float *dx = higan_var_grad(t, c->x);
    higan__ew_args e;
    if (!dx) return;
    memset(&e, 0, sizeof e);
    e.kind = HIGAN__EW_RELU_MASK_BWD; e.y = dx; e.a = c->y->data; e.b = c->y->grad; e.mask = c->mask;
    higan__ew_run(&e, higan_var_numel(c->x));
}
static higan_var *higan__dropout_relu(higan_tape *t, higan_var *x, float p, int train, higan_rng *rng) {
    higan_var *y;
    higan__dropout_ctx *c = NULL;
    higan__ew_args e;
    uint64_t key;
    if (!x) return NULL;
    if (!train || p <= 0.0f) return higan_relu(t, x);
    HIGAN_ASSERT(rng != NULL);
    if (!(y = higan_op_output(t, x->ndim, x->shape, &x, 1))) return NULL;
    memset(&e, 0, sizeof e);
    if (y->requires_grad) {
        if (!(e.mask = higan_arena_floats(t->arena, higan_var_numel(x)))) return NULL;
        if (!(c = (higan__dropout_ctx *)higan_tape_ctx(t, sizeof *c))) return NULL;
    }
    key = higan_rng_u64(rng);   /* as higan_dropout_forward */
    e.kind = HIGAN__EW_DROPOUT_RELU; e.y = y->data; e.a = x->data; e.p = p;
    e.scale = p < 1.0f ? 1.0f / (1.0f - p) : 0.0f;
    e.k0 = (uint32_t)key; e.k1 = (uint32_t)(key >> 32);
    higan__ew_run(&e, higan_var_numel(x));
    if (c) {
        c->x = x; c->y = y; c->mask = e.mask;
        higan_tape_record(t, y, higan__dropout_relu_backward_op, c);
    }
    return y;
}

/* ---- log-softmax over the last dim: x [rows, cols] ----------------------------------------------- */
HIGAN_DEF void higan_log_softmax_forward(float *y, const float *x, int64_t rows, int64_t cols) {
    int64_t r;
    HIGAN__PARALLEL_FOR_IF(rows > 1 && rows * cols > HIGAN__SHAPE_PAR / 8)
    for (r = 0; r < rows; ++r) {
        const float *xr = x + r * cols;
        float *yr = y + r * cols, m = xr[0], lse;
        double s = 0.0;
        int64_t j;
        for (j = 1; j < cols; ++j) if (xr[j] > m) m = xr[j];
        for (j = 0; j < cols; ++j) s += exp((double)(xr[j] - m));
        lse = (float)log(s);
        for (j = 0; j < cols; ++j) yr[j] = xr[j] - m - lse;
    }
}
/* dx += dy - exp(y) * sum(dy) per row */
HIGAN_DEF void higan_log_softmax_backward(float *dx, const float *dy, const float *y, int64_t rows,
                                          int64_t cols) {
    int64_t r;
    if (!dx) return;
    HIGAN__PARALLEL_FOR_IF(rows > 1 && rows * cols > HIGAN__SHAPE_PAR / 8)
    for (r = 0; r < rows; ++r) {
        const float *gr = dy + r * cols, *yr = y + r * cols;
        float *dr = dx + r * cols, gs;
        double s = 0.0;
        int64_t j;
        for (j = 0; j < cols; ++j) s += gr[j];
        gs = (float)s;
        for (j = 0; j < cols; ++j) dr[j] += gr[j] - expf(yr[j]) * gs;
    }
}
static void higan__log_softmax_backward_op(higan_tape *t, void *p) {
    higan__unary_ctx *c = (higan__unary_ctx *)p;
    float *dx = higan_var_grad(t, c->x);
    int64_t cols = c->x->shape[c->x->ndim - 1];
    if (dx) higan_log_softmax_backward(dx, c->y->grad, c->y->data, higan_var_numel(c->x) / cols, cols);
}
HIGAN_DEF higan_var *higan_log_softmax(higan_tape *t, higan_var *x) {
    higan_var *y;
    int64_t cols;
    if (!x || !(y = higan_op_output(t, x->ndim, x->shape, &x, 1))) return NULL;
    cols = x->shape[x->ndim - 1];
    HIGAN_ASSERT(cols >= 1);
    higan_log_softmax_forward(y->data, x->data, higan_var_numel(x) / cols, cols);
    return higan__record_unary(t, x, y, higan__log_softmax_backward_op, 0.0f);
}

/* ---- elementwise helpers -------------------------------------------------------------------------- */
HIGAN_DEF void higan_add_forward(float *y, const float *a, const float *b, int64_t n) {
    higan__ew(HIGAN__EW_ADD, y, a, b, n);
}
HIGAN_DEF void higan_add_backward(float *da, float *db, const float *dy, int64_t n) {
    if (da) higan__ew(HIGAN__EW_ACC, da, dy, NULL, n);
    if (db) higan__ew(HIGAN__EW_ACC, db, dy, NULL, n);
}
static void higan__add_backward_op(higan_tape *t, void *p) {
    higan__binary_ctx *c = (higan__binary_ctx *)p;
    int64_t n = higan_var_numel(c->y);
    float *db = higan_var_grad(t, c->b), *da;
    t->be->add_backward(t->be->ctx, NULL, db, c->y->grad, n);   /* b first: a may take dy's buffer */
    da = c->a != c->b ? higan__var_grad_take(t, c->a, c->y) : higan_var_grad(t, c->a);
    if (da == c->y->grad) {   /* da is dy (a -0.0 stays -0.0 where 0 + dy gives +0.0) */
        c->y->grad = NULL;
    } else {
        t->be->add_backward(t->be->ctx, da, NULL, c->y->grad, n);
    }
}
HIGAN_DEF higan_var *higan_add(higan_tape *t, higan_var *a, higan_var *b) {
    higan_var *in[2], *y;
    in[0] = a; in[1] = b;
    if (!a || !b) return NULL;
    HIGAN_ASSERT(higan__same_shape(a, b));
    if (!(y = higan_op_output(t, a->ndim, a->shape, in, 2))) return NULL;
    t->be->add_forward(t->be->ctx, y->data, a->data, b->data, higan_var_numel(a));
    return higan__record_binary(t, a, b, y, higan__add_backward_op);
}

HIGAN_DEF void higan_sub_forward(float *y, const float *a, const float *b, int64_t n) {
    int64_t i;
    HIGAN__PARALLEL_FOR_IF(n > HIGAN__SHAPE_PAR)
    for (i = 0; i < n; ++i) y[i] = a[i] - b[i];
}
HIGAN_DEF void higan_sub_backward(float *da, float *db, const float *dy, int64_t n) {
    int64_t i;
    if (da) {
        HIGAN__PARALLEL_FOR_IF(n > HIGAN__SHAPE_PAR)
        for (i = 0; i < n; ++i) da[i] += dy[i];
    }
    if (db) {
        HIGAN__PARALLEL_FOR_IF(n > HIGAN__SHAPE_PAR)
        for (i = 0; i < n; ++i) db[i] -= dy[i];
    }
}
static void higan__sub_backward_op(higan_tape *t, void *p) {
    higan__binary_ctx *c = (higan__binary_ctx *)p;
    float *da = higan_var_grad(t, c->a), *db = higan_var_grad(t, c->b);
    higan_sub_backward(da, db, c->y->grad, higan_var_numel(c->y));
}
HIGAN_DEF higan_var *higan_sub(higan_tape *t, higan_var *a, higan_var *b) {
    higan_var *in[2], *y;
    in[0] = a; in[1] = b;
    if (!a || !b) return NULL;
    HIGAN_ASSERT(higan__same_shape(a, b));
    if (!(y = higan_op_output(t, a->ndim, a->shape, in, 2))) return NULL;
    higan_sub_forward(y->data, a->data, b->data, higan_var_numel(a));
    return higan__record_binary(t, a, b, y, higan__sub_backward_op);
}

HIGAN_DEF void higan_mul_forward(float *y, const float *a, const float *b, int64_t n) {
    int64_t i;
    HIGAN__PARALLEL_FOR_IF(n > HIGAN__SHAPE_PAR)
    for (i = 0; i < n; ++i) y[i] = a[i] * b[i];
}
HIGAN_DEF void higan_mul_backward(float *da, float *db, const float *dy, const float *a,
                                  const float *b, int64_t n) {
    int64_t i;
    if (da) {
        HIGAN__PARALLEL_FOR_IF(n > HIGAN__SHAPE_PAR)
        for (i = 0; i < n; ++i) da[i] += dy[i] * b[i];
    }
    if (db) {
        HIGAN__PARALLEL_FOR_IF(n > HIGAN__SHAPE_PAR)
        for (i = 0; i < n; ++i) db[i] += dy[i] * a[i];
    }
}
static void higan__mul_backward_op(higan_tape *t, void *p) {
    higan__binary_ctx *c = (higan__binary_ctx *)p;
    float *da = higan_var_grad(t, c->a), *db = higan_var_grad(t, c->b);
    t->be->mul_backward(t->be->ctx, da, db, c->y->grad, c->a->data, c->b->data, higan_var_numel(c->y));
}
HIGAN_DEF higan_var *higan_mul(higan_tape *t, higan_var *a, higan_var *b) {
    higan_var *in[2], *y;
    in[0] = a; in[1] = b;
    if (!a || !b) return NULL;
    HIGAN_ASSERT(higan__same_shape(a, b));
    if (!(y = higan_op_output(t, a->ndim, a->shape, in, 2))) return NULL;
    t->be->mul_forward(t->be->ctx, y->data, a->data, b->data, higan_var_numel(a));
    return higan__record_binary(t, a, b, y, higan__mul_backward_op);
}

HIGAN_DEF void higan_scale_forward(float *y, const float *x, float s, int64_t n) {
    int64_t i;
    HIGAN__PARALLEL_FOR_IF(n > HIGAN__SHAPE_PAR)
    for (i = 0; i < n; ++i) y[i] = x[i] * s;
}
HIGAN_DEF void higan_scale_backward(float *dx, const float *dy, float s, int64_t n) {
    int64_t i;
    if (!dx) return;
    HIGAN__PARALLEL_FOR_IF(n > HIGAN__SHAPE_PAR)
    for (i = 0; i < n; ++i) dx[i] += dy[i] * s;
}
static void higan__scale_backward_op(higan_tape *t, void *p) {
    higan__unary_ctx *c = (higan__unary_ctx *)p;
    float *dx = higan_var_grad(t, c->x);
    if (dx) higan_scale_backward(dx, c->y->grad, c->s, higan_var_numel(c->x));
}
HIGAN_DEF higan_var *higan_scale(higan_tape *t, higan_var *x, float s) {
    higan_var *y;
    if (!x || !(y = higan_op_output(t, x->ndim, x->shape, &x, 1))) return NULL;
    higan_scale_forward(y->data, x->data, s, higan_var_numel(x));
    return higan__record_unary(t, x, y, higan__scale_backward_op, s);
}

/* x [N,C,HW] + b [N,C] */
HIGAN_DEF void higan_add_nc_forward(float *y, const float *x, const float *b, int64_t N, int64_t C,
                                    int64_t HW) {
    int64_t p;
    HIGAN__PARALLEL_FOR_IF(N * C * HW > HIGAN__SHAPE_PAR)
    for (p = 0; p < N * C; ++p) {
        int64_t k;
        float v = b[p];
        for (k = 0; k < HW; ++k) y[p * HW + k] = x[p * HW + k] + v;
    }
}
HIGAN_DEF void higan_add_nc_backward(float *dx, float *db, const float *dy, int64_t N, int64_t C,
                                     int64_t HW) {
    int64_t p;
    if (dx) higan_add_backward(dx, NULL, dy, N * C * HW);
    if (!db) return;
    HIGAN__PARALLEL_FOR_IF(N * C * HW > HIGAN__SHAPE_PAR)
    for (p = 0; p < N * C; ++p) {
        double s = 0.0;
        int64_t k;
        for (k = 0; k < HW; ++k) s += dy[p * HW + k];
        db[p] += (float)s;
    }
}
static void higan__add_nc_backward_op(higan_tape *t, void *p) {
    higan__binary_ctx *c = (higan__binary_ctx *)p;
    float *dx = higan_var_grad(t, c->a), *db = higan_var_grad(t, c->b);
    int64_t N = c->a->shape[0], C = c->a->shape[1];
    higan_add_nc_backward(dx, db, c->y->grad, N, C, higan_var_numel(c->a) / (N * C));
}
HIGAN_DEF higan_var *higan_add_nc(higan_tape *t, higan_var *x, higan_var *b) {
    higan_var *in[2], *y;
    int64_t N, C;
    in[0] = x; in[1] = b;
    if (!x || !b) return NULL;
    HIGAN_ASSERT(x->ndim >= 2);
    N = x->shape[0]; C = x->shape[1];
    HIGAN_ASSERT(b->shape[0] == N && higan_var_numel(b) == N * C && "bias must be [N,C]");
    if (!(y = higan_op_output(t, x->ndim, x->shape, in, 2))) return NULL;
    higan_add_nc_forward(y->data, x->data, b->data, N, C, N * C > 0 ? higan_var_numel(x) / (N * C) : 0);
    return higan__record_binary(t, x, b, y, higan__add_nc_backward_op);
}

HIGAN_DEF void higan_sum_all_forward(float *y, const float *x, int64_t n) {
    double s = 0.0;
    int64_t i;
    for (i = 0; i < n; ++i) s += x[i];
    y[0] = (float)s;
}
HIGAN_DEF void higan_sum_all_backward(float *dx, const float *dy, int64_t n) {
    int64_t i;
    float g = dy[0];
    if (!dx) return;
    HIGAN__PARALLEL_FOR_IF(n > HIGAN__SHAPE_PAR)
    for (i = 0; i < n; ++i) dx[i] += g;
}
static void higan__sum_all_backward_op(higan_tape *t, void *p) {
    higan__unary_ctx *c = (higan__unary_ctx *)p;
    float *dx = higan_var_grad(t, c->x);
    if (dx) t->be->sum_all_backward(t->be->ctx, dx, c->y->grad, higan_var_numel(c->x));
}
HIGAN_DEF higan_var *higan_sum_all(higan_tape *t, higan_var *x) {
    higan_var *y;
    int64_t one = 1;
    if (!x || !(y = higan_op_output(t, 1, &one, &x, 1))) return NULL;
    t->be->sum_all_forward(t->be->ctx, y->data, x->data, higan_var_numel(x));
    return higan__record_unary(t, x, y, higan__sum_all_backward_op, 0.0f);
}
HIGAN_DEF void higan_mean_all_forward(float *y, const float *x, int64_t n) {
    double s = 0.0;
    int64_t i;
    for (i = 0; i < n; ++i) s += x[i];
    y[0] = (float)(s / (double)(n > 0 ? n : 1));
}
HIGAN_DEF void higan_mean_all_backward(float *dx, const float *dy, int64_t n) {
    int64_t i;
    float g;
    if (!dx || n <= 0) return;
    g = dy[0] / (float)n;
    HIGAN__PARALLEL_FOR_IF(n > HIGAN__SHAPE_PAR)
    for (i = 0; i < n; ++i) dx[i] += g;
}
static void higan__mean_all_backward_op(higan_tape *t, void *p) {
    higan__unary_ctx *c = (higan__unary_ctx *)p;
    float *dx = higan_var_grad(t, c->x);
    if (dx) t->be->mean_all_backward(t->be->ctx, dx, c->y->grad, higan_var_numel(c->x));
}
HIGAN_DEF higan_var *higan_mean_all(higan_tape *t, higan_var *x) {
    higan_var *y;
    int64_t one = 1;
    if (!x || !(y = higan_op_output(t, 1, &one, &x, 1))) return NULL;
    t->be->mean_all_forward(t->be->ctx, y->data, x->data, higan_var_numel(x));
    return higan__record_unary(t, x, y, higan__mean_all_backward_op, 0.0f);
}

HIGAN_DEF void higan_exp_forward(float *y, const float *x, int64_t n) {
    int64_t i;
    HIGAN__PARALLEL_FOR_IF(n > HIGAN__SHAPE_PAR / 8)
    for (i = 0; i < n; ++i) y[i] = expf(x[i]);
}
HIGAN_DEF void higan_exp_backward(float *dx, const float *dy, const float *y, int64_t n) {
    int64_t i;
    if (!dx) return;
    HIGAN__PARALLEL_FOR_IF(n > HIGAN__SHAPE_PAR)
    for (i = 0; i < n; ++i) dx[i] += dy[i] * y[i];
}
static void higan__exp_backward_op(higan_tape *t, void *p) {
    higan__unary_ctx *c = (higan__unary_ctx *)p;
    float *dx = higan_var_grad(t, c->x);
    if (dx) higan_exp_backward(dx, c->y->grad, c->y->data, higan_var_numel(c->x));
}
HIGAN_DEF higan_var *higan_exp(higan_tape *t, higan_var *x) {
    higan_var *y;
    if (!x || !(y = higan_op_output(t, x->ndim, x->shape, &x, 1))) return NULL;
    higan_exp_forward(y->data, x->data, higan_var_numel(x));
    return higan__record_unary(t, x, y, higan__exp_backward_op, 0.0f);
}
/* ==== SEQUENCE OPS AND LOSSES: implementation ================================= */

static float higan__sigmoidf(float x) { return 1.0f / (1.0f + expf(-x)); }

/* ---- LSTM ------------------------------------------------------------------------------ */
/* Cache layout: outputs of layers 0..L-2 [B,T,D*H] each, then per (layer, direction):
   gate activations [B,T,4H] (i, f, g, o after sigmoid/tanh) and cell states [B,T,H]. */
HIGAN_DEF int64_t higan_lstm_cache_floats(int64_t B, int64_t T, int64_t H, int num_layers,
                                          int bidirectional) {
    int64_t D = bidirectional ? 2 : 1;
    return (int64_t)(num_layers - 1) * B * T * D * H + (int64_t)num_layers * D * B * T * 5 * H;
}
/* offset of layer l's output */
static int64_t higan__lstm_out_off(int64_t B, int64_t T, int64_t DH, int l) { return (int64_t)l * B * T * DH; }
/* offset of the gates of (layer l, direction d); its cells follow at + B*T*4H */
static int64_t higan__lstm_gates_off(int64_t B, int64_t T, int64_t H, int64_t D, int L, int l, int d) {
    return (int64_t)(L - 1) * B * T * D * H + ((int64_t)l * D + d) * B * T * 5 * H;
}
/* Time index of sample b at processing step s (the reverse direction runs from its own end). */
static int64_t higan__lstm_time(int d, int len, int64_t s) { return d == 0 ? s : (int64_t)len - 1 - s; }

/* R[b, :] = h[b, :] WT for b < B: h [B, K], WT [K, N] (row stride N), R [B, N]. The LSTM's
   recurrent products (h W_hh^T, with WT = W_hh^T, in the forward; dA W_hh, with WT = W_hh, in
   the backward): a few rows, too small for the blocked GEMM, whose packing of the whole W_hh
   at every step would cost more than the product. Tiles of 4 rows x 4 vectors of
   accumulators; one thread; fixed order (the same bits whatever runs it). */
#define HIGAN__DEFINE_LSTM_MM(ISA)                                                              \
static HIGAN__TGT_##ISA void higan__lstm_mm_##ISA(float *R, const float *h, const float *WT,     \
                                                  int64_t B, int64_t K, int64_t N) {            \
    const int64_t NB = 4 * HIGAN__VW_##ISA;                                                     \
    int64_t b0, n0, k;                                                                          \
    for (b0 = 0; b0 < B; b0 += 4) {                                                             \
        const float *hr[4];                                                                     \
        int i, v, nb = (int)(B - b0 < 4 ? B - b0 : 4);                                          \
        for (i = 0; i < 4; ++i) hr[i] = h + (b0 + (i < nb ? i : 0)) * K;   /* spare rows: row 0 */ \
        for (n0 = 0; n0 + NB <= N; n0 += NB) {                                                  \
            higan__vt_##ISA acc[4][4], wv[4];                                                   \
            HIGAN__UNROLL for (i = 0; i < 4; ++i)                                               \
                HIGAN__UNROLL for (v = 0; v < 4; ++v) acc[i][v] = higan__vzero_##ISA();         \
            for (k = 0; k < K; ++k) {                                                           \
                const float *w = WT + k * N + n0;                                               \
                HIGAN__UNROLL for (v = 0; v < 4; ++v) wv[v] = higan__vload_##ISA(w + v * HIGAN__VW_##ISA); \
                HIGAN__UNROLL for (i = 0; i < 4; ++i) {                                         \
                    higan__vt_##ISA a = higan__vset1_##ISA(hr[i][k]);                           \
                    HIGAN__UNROLL for (v = 0; v < 4; ++v) acc[i][v] = higan__vfma_##ISA(a, wv[v], acc[i][v]); \
                }                                                                               \
            }                                                                                   \
            for (i = 0; i < nb; ++i)                                                            \
                HIGAN__UNROLL for (v = 0; v < 4; ++v)                                           \
                    higan__vstore_##ISA(R + (b0 + i) * N + n0 + v * HIGAN__VW_##ISA, acc[i][v]); \
        }                                                                                       \
        for (; n0 < N; ++n0)                                                                    \
            for (i = 0; i < nb; ++i) {                                                          \
                float s = 0.0f;                                                                 \
                for (k = 0; k < K; ++k) s += hr[i][k] * WT[k * N + n0];                         \
                R[(b0 + i) * N + n0] = s;                                                       \
            }                                                                                   \
    }                                                                                           \
}
HIGAN__DEFINE_LSTM_MM(scalar)
#ifdef HIGAN__X86_SIMD
HIGAN__DEFINE_LSTM_MM(avx2)
#  ifdef HIGAN__GEMM_AVX512
HIGAN__DEFINE_LSTM_MM(avx512)
#  endif
#endif
typedef void (*higan__lstm_mm_fn)(float *R, const float *h, const float *WT, int64_t B, int64_t K, int64_t N);
static higan__lstm_mm_fn higan__lstm_mm_k(void) {
#ifdef HIGAN__X86_SIMD
#  ifdef HIGAN__GEMM_AVX512
    if (higan_cpu_level() >= HIGAN_CPU_AVX512) return higan__lstm_mm_avx512;
#  endif
    if (higan_cpu_level() >= HIGAN_CPU_AVX2) return higan__lstm_mm_avx2;
#endif
    return higan__lstm_mm_scalar;
}

/* The recurrence of one (layer, direction) of the forward, on one thread: G [B,T,4H] holds the
   input projections (+ biases) and gets the gate activations, Cs [B,T,H] the cells, out
   [B,T,DH] (columns d*H ..) the outputs. work: hs, cs [B,H], R [B,4H], WT [H,4H]. */
static void higan__lstm_forward_dir(float *G, float *Cs, float *out, const int *lengths, const float *w_hh,
                                    int64_t B, int64_t T, int64_t H, int64_t DH, int d, int64_t maxlen,
                                    float *work, higan__lstm_mm_fn mm) {
    int64_t H4 = 4 * H, b, s, j, k;
    float *hs = work, *cs = hs + B * H, *R = cs + B * H, *WT = R + B * H4;
    for (j = 0; j < H; ++j)                      /* WT = W_hh^T [H, 4H] */
        for (k = 0; k < H4; ++k) WT[j * H4 + k] = w_hh[k * H + j];
    memset(hs, 0, (size_t)(B * H) * sizeof(float));
    memset(cs, 0, (size_t)(B * H) * sizeof(float));
    for (s = 0; s < maxlen; ++s) {
        if (s > 0) mm(R, hs, WT, B, H, H4);
        else memset(R, 0, (size_t)(B * H4) * sizeof(float));   /* h0 = 0 */
        for (b = 0; b < B; ++b) {
            int64_t t;
            float *g, *r, *cc, *o;
            if (lengths[b] <= s) continue;
            t = higan__lstm_time(d, lengths[b], s);
            g = G + (b * T + t) * H4;
            r = R + b * H4;
            cc = Cs + (b * T + t) * H;
            o = out + (b * T + t) * DH + d * H;
            for (k = 0; k < H; ++k) {
                float gi = higan__sigmoidf(g[k] + r[k]);
                float gf = higan__sigmoidf(g[H + k] + r[H + k]);
                float gg = tanhf(g[2 * H + k] + r[2 * H + k]);
                float go = higan__sigmoidf(g[3 * H + k] + r[3 * H + k]);
                float c = gf * cs[b * H + k] + gi * gg;
                float h = go * tanhf(c);
                g[k] = gi; g[H + k] = gf; g[2 * H + k] = gg; g[3 * H + k] = go;
                cc[k] = c;
                o[k] = h;
                cs[b * H + k] = c;
                hs[b * H + k] = h;
            }
        }
    }
    /* padded steps: zero output (pad_packed_sequence); gates/cells unused there */
    for (b = 0; b < B; ++b) {
        int64_t t;
        for (t = lengths[b]; t < T; ++t) memset(out + (b * T + t) * DH + d * H, 0, (size_t)H * sizeof(float));
    }
}

HIGAN_DEF higan_status higan_lstm_forward(float *y, float *cache, const float *x, const int *lengths,
                                          const float *const *weights, int64_t B, int64_t T,
                                          int64_t IN, int64_t H, int num_layers, int bidirectional,
                                          higan_arena *scratch) {
    int64_t D = bidirectional ? 2 : 1, DH = D * H, H4 = 4 * H, b, j, maxlen = 0, per = 2 * B * H + B * H4 + H * H4;
    size_t mark = higan_arena_mark(scratch);
    higan__lstm_mm_fn mm = higan__lstm_mm_k();
    float *work;
    int l, d;
    HIGAN_ASSERT(B > 0 && T > 0 && IN > 0 && H > 0 && num_layers > 0);
    for (b = 0; b < B; ++b) {
        HIGAN_ASSERT(lengths[b] >= 0 && lengths[b] <= T);
        if (lengths[b] > maxlen) maxlen = lengths[b];
    }
    if (!cache) cache = higan_arena_floats(scratch, higan_lstm_cache_floats(B, T, H, num_layers, bidirectional));
    work = higan_arena_floats(scratch, D * per);   /* per direction: see higan__lstm_forward_dir */
    if (!cache || !work) { higan_arena_release(scratch, mark); return HIGAN_ERR_NOMEM; }
    for (l = 0; l < num_layers; ++l) {
        const float *in = l == 0 ? x : cache + higan__lstm_out_off(B, T, DH, l - 1);
        int64_t in_dim = l == 0 ? IN : DH;
        float *out = l == num_layers - 1 ? y : cache + higan__lstm_out_off(B, T, DH, l);
        for (d = 0; d < (int)D; ++d) {
            const float *const *w = weights + ((int64_t)l * D + d) * 4;
            const float *w_ih = w[0], *b_ih = w[2], *b_hh = w[3];
            float *G = cache + higan__lstm_gates_off(B, T, H, D, num_layers, l, d);  /* [B,T,4H] */
            /* input projections of all steps at once: G = b_ih + b_hh + in W_ih^T */
            for (j = 0; j < B * T; ++j) {
                int64_t k;
                for (k = 0; k < H4; ++k)
                    G[j * H4 + k] = (b_ih ? b_ih[k] : 0.0f) + (b_hh ? b_hh[k] : 0.0f);
            }
            higan_gemm(0, 1, B * T, H4, in_dim, 1.0f, in, in_dim, w_ih, in_dim, 1.0f, G, H4);
        }
        /* the recurrences of the two directions are independent: one thread each */
        higan__count_flops((uint64_t)(2 * D * (maxlen > 0 ? maxlen - 1 : 0) * B * H4 * H));
        HIGAN__PARALLEL_FOR_IF(D > 1 && B * H4 * H * maxlen >= 65536)
        for (d = 0; d < (int)D; ++d) {
            float *G = cache + higan__lstm_gates_off(B, T, H, D, num_layers, l, d);
            higan__lstm_forward_dir(G, G + B * T * H4, out, lengths, weights[((int64_t)l * D + d) * 4 + 1],
                                    B, T, H, DH, d, maxlen, work + d * per, mm);
        }
    }
    higan_arena_release(scratch, mark);
    return HIGAN_OK;
}

/* The recurrence of one (layer, direction) of the backward, on one thread: dG [B,T,4H] gets the
   gradients of the gate pre-activations. work: dAs [B,4H], dh, dc [B,H]. */
static void higan__lstm_backward_dir(float *dG, const float *G, const float *Cs, const float *dout,
                                     const int *lengths, const float *w_hh, int64_t B, int64_t T, int64_t H,
                                     int64_t DH, int d, int64_t maxlen, float *work, higan__lstm_mm_fn mm) {
    int64_t H4 = 4 * H, b, s;
    float *dAs = work, *dh = dAs + B * H4, *dc = dh + B * H;
    memset(dG, 0, (size_t)(B * T * H4) * sizeof(float));
    memset(dh, 0, (size_t)(B * H) * sizeof(float));
    memset(dc, 0, (size_t)(B * H) * sizeof(float));
    for (s = maxlen - 1; s >= 0; --s) {
        for (b = 0; b < B; ++b) {
            int64_t t, tp, j;
            const float *g, *cc, *cp, *dyo;
            float *da;
            if (lengths[b] <= s) {   /* not started yet (in reverse time): no gradient */
                memset(dAs + b * H4, 0, (size_t)H4 * sizeof(float));
                continue;
            }
            t = higan__lstm_time(d, lengths[b], s);
            tp = d == 0 ? t - 1 : t + 1;          /* the step processed before t */
            g = G + (b * T + t) * H4;
            cc = Cs + (b * T + t) * H;
            cp = s > 0 ? Cs + (b * T + tp) * H : NULL;
            dyo = dout + (b * T + t) * DH + d * H;
            da = dG + (b * T + t) * H4;
            for (j = 0; j < H; ++j) {
                float gi = g[j], gf = g[H + j], gg = g[2 * H + j], go = g[3 * H + j];
                float tc = tanhf(cc[j]);
                float dhj = dyo[j] + dh[b * H + j];
                float dcj = dc[b * H + j] + dhj * go * (1.0f - tc * tc);
                float c_prev = cp ? cp[j] : 0.0f;
                da[j] = dcj * gg * gi * (1.0f - gi);
                da[H + j] = dcj * c_prev * gf * (1.0f - gf);
                da[2 * H + j] = dcj * gi * (1.0f - gg * gg);
                da[3 * H + j] = dhj * tc * go * (1.0f - go);
                dc[b * H + j] = dcj * gf;
            }
            memcpy(dAs + b * H4, da, (size_t)H4 * sizeof(float));
        }
        /* dh for the previous step: dA W_hh (nothing flows before the first step) */
        if (s > 0) mm(dh, dAs, w_hh, B, H4, H);
    }
}

HIGAN_DEF higan_status higan_lstm_backward(float *dx, float *const *dweights, const float *dy,
                                           const float *y, const float *cache, const float *x,
                                           const int *lengths, const float *const *weights,
                                           int64_t B, int64_t T, int64_t IN, int64_t H,
                                           int num_layers, int bidirectional, higan_arena *scratch) {
    int64_t D = bidirectional ? 2 : 1, DH = D * H, H4 = 4 * H, b, maxlen = 0, per = B * H4 + 2 * B * H;
    size_t mark = higan_arena_mark(scratch);
    higan__lstm_mm_fn mm = higan__lstm_mm_k();
    float *dG, *Hp, *dbuf[2], *work;
    int l, d, lmin = -1, k;
    HIGAN_ASSERT(B > 0 && T > 0 && IN > 0 && H > 0 && num_layers > 0);
    for (b = 0; b < B; ++b) if (lengths[b] > maxlen) maxlen = lengths[b];
    /* lowest layer that has to be reached: dx, or the lowest layer with a weight gradient */
    if (dx) lmin = 0;
    else if (dweights)
        for (l = num_layers - 1; l >= 0; --l)
            for (k = 0; k < (int)(D * 4); ++k) if (dweights[(int64_t)l * D * 4 + k]) lmin = l;
    if (lmin < 0 || maxlen == 0) return HIGAN_OK;
    dG = higan_arena_floats(scratch, D * B * T * H4);   /* d pre-activations [D][B,T,4H] */
    Hp = higan_arena_floats(scratch, B * T * H);        /* h before each step [B,T,H] */
    dbuf[0] = num_layers > 1 ? higan_arena_floats(scratch, B * T * DH) : NULL;
    dbuf[1] = num_layers > 2 ? higan_arena_floats(scratch, B * T * DH) : NULL;
    work = higan_arena_floats(scratch, D * per);        /* per direction: see higan__lstm_backward_dir */
    if (!dG || !Hp || (num_layers > 1 && !dbuf[0]) || (num_layers > 2 && !dbuf[1]) || !work) {
        higan_arena_release(scratch, mark);
        return HIGAN_ERR_NOMEM;
    }
    for (l = num_layers - 1; l >= lmin; --l) {
        const float *in = l == 0 ? x : cache + higan__lstm_out_off(B, T, DH, l - 1);
        int64_t in_dim = l == 0 ? IN : DH;
        const float *out = l == num_layers - 1 ? y : cache + higan__lstm_out_off(B, T, DH, l);
        const float *dout = l == num_layers - 1 ? dy : dbuf[l & 1];
        float *din = l == lmin ? (l == 0 ? dx : NULL) : dbuf[(l - 1) & 1];
        if (din && l > 0) memset(din, 0, (size_t)(B * T * DH) * sizeof(float));
        /* the recurrences of the two directions are independent: one thread each */
        higan__count_flops((uint64_t)(2 * D * (maxlen - 1) * B * H4 * H));
        HIGAN__PARALLEL_FOR_IF(D > 1 && B * H4 * H * maxlen >= 65536)
        for (d = 0; d < (int)D; ++d) {
            const float *G = cache + higan__lstm_gates_off(B, T, H, D, num_layers, l, d);
            higan__lstm_backward_dir(dG + d * B * T * H4, G, G + B * T * H4, dout, lengths,
                                     weights[((int64_t)l * D + d) * 4 + 1], B, T, H, DH, d, maxlen,
                                     work + d * per, mm);
        }
        /* then the products over all steps, direction after direction (fixed order into din) */
        for (d = 0; d < (int)D; ++d) {
            const float *const *w = weights + ((int64_t)l * D + d) * 4;
            float *const *dw = dweights ? dweights + ((int64_t)l * D + d) * 4 : NULL;
            const float *dGd = dG + d * B * T * H4;
            /* weight gradients over all steps at once */
            if (dw && dw[0]) higan_gemm(1, 0, H4, in_dim, B * T, 1.0f, dGd, H4, in, in_dim, 1.0f, dw[0], in_dim);
            if (dw && dw[1]) {
                HIGAN__PARALLEL_FOR_IF(B * T * H >= 65536)
                for (b = 0; b < B; ++b) {
                    int64_t t;
                    for (t = 0; t < T; ++t) {
                        int64_t tp = d == 0 ? t - 1 : t + 1;
                        float *hp = Hp + (b * T + t) * H;
                        if (t < lengths[b] && tp >= 0 && tp < lengths[b])
                            memcpy(hp, out + (b * T + tp) * DH + d * H, (size_t)H * sizeof(float));
                        else
                            memset(hp, 0, (size_t)H * sizeof(float));
                    }
                }
                higan_gemm(1, 0, H4, H, B * T, 1.0f, dGd, H4, Hp, H, 1.0f, dw[1], H);
            }
            for (k = 2; k < 4; ++k) {
                float *db = dw ? dw[k] : NULL;
                int64_t j0;
                if (!db) continue;
                /* column sums of dG, row after row (each column's order as a plain loop over r) */
                HIGAN__PARALLEL_FOR_IF(H4 > 64 && H4 * B * T >= 65536)
                for (j0 = 0; j0 < H4; j0 += 64) {
                    float acc[64];
                    int64_t r, j, nj = H4 - j0 < 64 ? H4 - j0 : 64;
                    for (j = 0; j < nj; ++j) acc[j] = 0.0f;
                    for (r = 0; r < B * T; ++r)
                        for (j = 0; j < nj; ++j) acc[j] += dGd[r * H4 + j0 + j];
                    for (j = 0; j < nj; ++j) db[j0 + j] += acc[j];
                }
            }
            if (din) higan_gemm(0, 0, B * T, in_dim, H4, 1.0f, dGd, H4, w[0], in_dim, 1.0f, din, in_dim);
        }
    }
    higan_arena_release(scratch, mark);
    return HIGAN_OK;
}

typedef struct {
    higan_var *x, *y;
    higan_var **w;          /* num_layers*D*4 */
    const float **wdata;    /* their data pointers */
    float **dw;             /* gradient pointers, filled in backward */
    int *lengths;
    float *cache;
    int64_t B, T, IN, H;
    int num_layers, bidirectional;
} higan__lstm_ctx;

static void higan__lstm_backward_op(higan_tape *t, void *p) {
    higan__lstm_ctx *c = (higan__lstm_ctx *)p;
    int64_t D = c->bidirectional ? 2 : 1, nw = c->num_layers * D * 4, k;
    float *dx = higan_var_grad(t, c->x);
    size_t mark;
    int any = dx != NULL;
    for (k = 0; k < nw; ++k) {
        c->dw[k] = higan_var_grad(t, c->w[k]);
        any |= c->dw[k] != NULL;
    }
    if (!any) return;
    mark = higan_arena_mark(t->arena);
    higan_lstm_backward(dx, c->dw, c->y->grad, c->y->data, c->cache, c->x->data, c->lengths,
                        c->wdata, c->B, c->T, c->IN, c->H, c->num_layers, c->bidirectional,
                        t->arena);   /* an overflow stays sticky in the arena: backward reports it */
    higan_arena_release(t->arena, mark);
}

HIGAN_DEF higan_var *higan_lstm(higan_tape *t, higan_var *x, const int *lengths, int hidden,
                                int num_layers, int bidirectional, higan_var **weights) {
    int64_t D = bidirectional ? 2 : 1, nw, k, B, T, IN, H = hidden, shape[3];
    higan_var **inputs;
    higan_var *y;
    higan__lstm_ctx *c;
    const float **wdata;
    float *cache = NULL;
    size_t mark;
    int l, d;
    if (!x || !weights) return NULL;
    HIGAN_ASSERT(x->ndim == 3 && hidden > 0 && num_layers > 0 && lengths);
    nw = (int64_t)num_layers * D * 4;
    for (k = 0; k < nw; ++k) if (!weights[k]) return NULL;
    B = x->shape[0]; T = x->shape[1]; IN = x->shape[2];
    for (k = 0; k < B; ++k) HIGAN_ASSERT(lengths[k] >= 0 && lengths[k] <= T);
    for (l = 0; l < num_layers; ++l)
        for (d = 0; d < (int)D; ++d) {
            higan_var *const *w = weights + ((int64_t)l * D + d) * 4;
            int64_t in_dim = l == 0 ? IN : D * H;
            HIGAN_ASSERT(higan_var_numel(w[0]) == 4 * H * in_dim && w[0]->shape[0] == 4 * H);
            HIGAN_ASSERT(higan_var_numel(w[1]) == 4 * H * H && w[1]->shape[0] == 4 * H);
            HIGAN_ASSERT(higan_var_numel(w[2]) == 4 * H && higan_var_numel(w[3]) == 4 * H);
        }
    inputs = (higan_var **)higan_arena_alloc(t->arena, (size_t)(nw + 1) * sizeof(higan_var *));
    wdata = (const float **)higan_arena_alloc(t->arena, (size_t)nw * sizeof(float *));
    if (!inputs || !wdata) return NULL;
    inputs[0] = x;
    for (k = 0; k < nw; ++k) { inputs[k + 1] = weights[k]; wdata[k] = weights[k]->data; }
    shape[0] = B; shape[1] = T; shape[2] = D * H;
    if (!(y = higan_op_output(t, 3, shape, inputs, (int)(nw + 1)))) return NULL;
    c = NULL;
    if (y->requires_grad) {
        if (!(c = (higan__lstm_ctx *)higan_tape_ctx(t, sizeof *c))) return NULL;
        c->w = (higan_var **)higan_arena_alloc(t->arena, (size_t)nw * sizeof(higan_var *));
        c->dw = (float **)higan_arena_alloc(t->arena, (size_t)nw * sizeof(float *));
        c->lengths = (int *)higan_arena_alloc(t->arena, (size_t)B * sizeof(int));
        cache = higan_arena_floats(t->arena, higan_lstm_cache_floats(B, T, H, num_layers, bidirectional));
        if (!c->w || !c->dw || !c->lengths || !cache) return NULL;
        for (k = 0; k < nw; ++k) c->w[k] = weights[k];
        memcpy(c->lengths, lengths, (size_t)B * sizeof(int));
        c->x = x; c->y = y; c->wdata = wdata; c->cache = cache;
        c->B = B; c->T = T; c->IN = IN; c->H = H;
        c->num_layers = num_layers; c->bidirectional = bidirectional;
    }
    mark = higan_arena_mark(t->arena);
    if (higan_lstm_forward(y->data, cache, x->data, lengths, wdata, B, T, IN, H, num_layers,
                           bidirectional, t->arena) != HIGAN_OK) return NULL;
    higan_arena_release(t->arena, mark);
    if (c) higan_tape_record(t, y, higan__lstm_backward_op, c);
    return y;
}

/* ---- CTC loss ------------------------------------------------------------------------ */
static int64_t higan__ctc_alpha_offset(int64_t T, int64_t b, const int *target_lengths) {
    int64_t i, off = 0;
    for (i = 0; i < b; ++i) off += T * (2 * (int64_t)target_lengths[i] + 1);
    return off;
}
static int64_t higan__ctc_target_offset(int64_t b, const int *target_lengths) {
    int64_t i, off = 0;
    for (i = 0; i < b; ++i) off += target_lengths[i];
    return off;
}
HIGAN_DEF int64_t higan_ctc_alpha_floats(int64_t T, int64_t B, const int *target_lengths) {
    return higan__ctc_alpha_offset(T, B, target_lengths);
}
/* Label of extended position s (blank, l1, blank, l2, ..., blank). */
static int higan__ctc_label(const int *tg, int64_t s, int blank) { return (s & 1) ? tg[s / 2] : blank; }
/* log(exp(a) + exp(b) + exp(c)) the way PyTorch's CPU kernel computes it. */
static float higan__lse3(float a, float b, float c) {
    float m = a;
    if (b > m) m = b;
    if (c > m) m = c;
    if (m == -INFINITY) m = 0.0f;   /* cannot do -inf - -inf */
    return logf(expf(a - m) + expf(b - m) + expf(c - m)) + m;
}

HIGAN_DEF void higan_ctc_loss_forward(float *y, float *nll, float *alpha, const float *log_probs,
                                      const int *targets, const int *input_lengths,
                                      const int *target_lengths, int64_t T, int64_t B, int64_t C,
                                      int blank, int zero_infinity) {
    int64_t b;
    float sum = 0.0f;
    HIGAN_ASSERT(T > 0 && B > 0 && C > 0 && blank >= 0 && blank < C);
    HIGAN__PARALLEL_FOR_IF(B > 1 && T * C > 4096)
    for (b = 0; b < B; ++b) {
        int64_t Tb = input_lengths[b], L = target_lengths[b], S = 2 * L + 1, t, s;
        const int *tg = targets + higan__ctc_target_offset(b, target_lengths);
        float *la = alpha + higan__ctc_alpha_offset(T, b, target_lengths);   /* [T,S] */
        float v;
        HIGAN_ASSERT(Tb >= 0 && Tb <= T && L >= 0);
        for (s = 0; s < L; ++s) HIGAN_ASSERT(tg[s] >= 0 && tg[s] < C);
        for (s = 0; s < T * S; ++s) la[s] = -INFINITY;
        if (Tb == 0) v = L == 0 ? 0.0f : INFINITY;
        else {
            const float *lp = log_probs + b * C;   /* row t at lp + t*B*C */
            la[0] = lp[blank];
            if (L > 0) la[1] = lp[tg[0]];
            for (t = 1; t < Tb; ++t) {
                const float *prev = la + (t - 1) * S, *lpt = lp + t * B * C;
                float *cur = la + t * S;
                for (s = 0; s < S; ++s) {
                    int l = higan__ctc_label(tg, s, blank);
                    float a2 = s > 0 ? prev[s - 1] : -INFINITY;
                    float a3 = (s > 1 && higan__ctc_label(tg, s - 2, blank) != l) ? prev[s - 2] : -INFINITY;
                    cur[s] = higan__lse3(prev[s], a2, a3) + lpt[l];
                }
            }
            if (L == 0) v = -la[(Tb - 1) * S];
            else {
                float l1 = la[(Tb - 1) * S + 2 * L], l2 = la[(Tb - 1) * S + 2 * L - 1];
                float m = l1 > l2 ? l1 : l2;
                if (m == -INFINITY) m = 0.0f;
                v = -(logf(expf(l1 - m) + expf(l2 - m)) + m);
            }
        }
        nll[b] = v;
    }
    for (b = 0; b < B; ++b) {
        float v = nll[b];
        if (zero_infinity && v == INFINITY) v = 0.0f;
        sum += v / (float)(target_lengths[b] > 1 ? target_lengths[b] : 1);
    }
    y[0] = sum / (float)B;
}

HIGAN_DEF higan_status higan_ctc_loss_backward(float *dlog_probs, const float *dy,
                                               const float *log_probs, const float *nll,
                                               const float *alpha, const int *targets,
                                               const int *input_lengths, const int *target_lengths,
                                               int64_t T, int64_t B, int64_t C, int blank,
                                               int zero_infinity, higan_arena *scratch) {
    int64_t b, Smax = 1, per;
    size_t mark;
    float *work;
    if (!dlog_probs) return HIGAN_OK;
    for (b = 0; b < B; ++b) if (2 * (int64_t)target_lengths[b] + 1 > Smax) Smax = 2 * (int64_t)target_lengths[b] + 1;
    per = 2 * Smax + C;
    mark = higan_arena_mark(scratch);
    work = higan_arena_floats(scratch, B * per);
    if (!work) { higan_arena_release(scratch, mark); return HIGAN_ERR_NOMEM; }
    HIGAN__PARALLEL_FOR_IF(B > 1 && T * C > 4096)
    for (b = 0; b < B; ++b) {
        int64_t Tb = input_lengths[b], L = target_lengths[b], S = 2 * L + 1, t, s, c;
        const int *tg = targets + higan__ctc_target_offset(b, target_lengths);
        const float *la = alpha + higan__ctc_alpha_offset(T, b, target_lengths);
        const float *lp = log_probs + b * C;
        float *gb = dlog_probs + b * C;
        float *lb_next = work + b * per, *lb_cur = lb_next + Smax, *lcab = lb_cur + Smax;
        float v = nll[b];
        float gr = dy[0] / (float)B / (float)(L > 1 ? L : 1);
        if (Tb == 0 || (zero_infinity && v == INFINITY)) continue;    /* zero gradient */
        for (t = Tb - 1; t >= 0; --t) {
            const float *lpt = lp + t * B * C, *lat = la + t * S;
            float *tmp;
            for (c = 0; c < C; ++c) lcab[c] = -INFINITY;
            if (t == Tb - 1) {
                /* beta starts at the last two extended positions */
                for (s = 0; s < S; ++s) lb_cur[s] = -INFINITY;
                lb_cur[2 * L] = lpt[blank];
                lcab[blank] = lat[2 * L] + lb_cur[2 * L];
                if (L > 0) {
                    int l = higan__ctc_label(tg, 2 * L - 1, blank);
                    lb_cur[2 * L - 1] = lpt[l];
                    lcab[l] = lat[2 * L - 1] + lb_cur[2 * L - 1];
                }
            } else {
                for (s = 2 * L; s >= 0; --s) {
                    int l = higan__ctc_label(tg, s, blank);
                    float b2 = s < 2 * L ? lb_next[s + 1] : -INFINITY;
                    float b3 = (s < 2 * L - 1 && higan__ctc_label(tg, s + 2, blank) != l) ? lb_next[s + 2] : -INFINITY;
                    float lab;
                    lb_cur[s] = higan__lse3(lb_next[s], b2, b3) + lpt[l];
                    lab = lat[s] + lb_cur[s];
                    if (lcab[l] == -INFINITY) lcab[l] = lab;
                    else {
                        float m = lcab[l] > lab ? lcab[l] : lab;
                        lcab[l] = logf(expf(lcab[l] - m) + expf(lab - m)) + m;
                    }
                }
            }
            for (c = 0; c < C; ++c)
                gb[t * B * C + c] += (expf(lpt[c]) - expf(lcab[c] + v - lpt[c])) * gr;
            tmp = lb_next; lb_next = lb_cur; lb_cur = tmp;
        }
    }
    higan_arena_release(scratch, mark);
    return HIGAN_OK;
}

typedef struct {
    higan_var *lp, *y;
    int *targets, *input_lengths, *target_lengths;
    float *nll, *alpha;
    int64_t T, B, C;
    int blank, zero_infinity;
} higan__ctc_ctx;

static void higan__ctc_backward_op(higan_tape *t, void *p) {
    higan__ctc_ctx *c = (higan__ctc_ctx *)p;
    float *dlp = higan_var_grad(t, c->lp);
    size_t mark;
    if (!dlp) return;
    mark = higan_arena_mark(t->arena);
    higan_ctc_loss_backward(dlp, c->y->grad, c->lp->data, c->nll, c->alpha, c->targets,
                            c->input_lengths, c->target_lengths, c->T, c->B, c->C, c->blank,
                            c->zero_infinity, t->arena);
    higan_arena_release(t->arena, mark);
}

HIGAN_DEF higan_var *higan_ctc_loss(higan_tape *t, higan_var *log_probs, const int *targets,
                                    const int *input_lengths, const int *target_lengths,
                                    int blank, int zero_infinity) {
    int64_t T, B, C, ntg, one = 1, k;
    higan_var *y;
    higan__ctc_ctx *c;
    int *ints;
    float *nll, *alpha;
    if (!log_probs) return NULL;
    HIGAN_ASSERT(log_probs->ndim == 3 && targets && input_lengths && target_lengths);
    T = log_probs->shape[0]; B = log_probs->shape[1]; C = log_probs->shape[2];
    ntg = higan__ctc_target_offset(B, target_lengths);
    for (k = 0; k < B; ++k) HIGAN_ASSERT(input_lengths[k] >= 0 && input_lengths[k] <= T && target_lengths[k] >= 0);
    if (!(y = higan_op_output(t, 1, &one, &log_probs, 1))) return NULL;
    nll = higan_arena_floats(t->arena, B);
    alpha = higan_arena_floats(t->arena, higan_ctc_alpha_floats(T, B, target_lengths));
    if (!nll || !alpha) return NULL;
    higan_ctc_loss_forward(y->data, nll, alpha, log_probs->data, targets, input_lengths,
                           target_lengths, T, B, C, blank, zero_infinity);
    if (y->requires_grad) {
        if (!(c = (higan__ctc_ctx *)higan_tape_ctx(t, sizeof *c))) return NULL;
        if (!(ints = (int *)higan_arena_alloc(t->arena, (size_t)(ntg + 2 * B) * sizeof(int)))) return NULL;
        c->input_lengths = ints; c->target_lengths = ints + B; c->targets = ints + 2 * B;
        memcpy(c->input_lengths, input_lengths, (size_t)B * sizeof(int));
        memcpy(c->target_lengths, target_lengths, (size_t)B * sizeof(int));
        if (ntg) memcpy(c->targets, targets, (size_t)ntg * sizeof(int));
        c->lp = log_probs; c->y = y; c->nll = nll; c->alpha = alpha;
        c->T = T; c->B = B; c->C = C; c->blank = blank; c->zero_infinity = zero_infinity;
        higan_tape_record(t, y, higan__ctc_backward_op, c);
    }
    return y;
}

/* ---- greedy CTC decoding ----------------------------------------------------------- */
HIGAN_DEF int higan_ctc_greedy_decode_strided(const float *scores, int64_t step_stride, int T,
                                              int C, int blank, int *out, int max_out) {
    int t, c, n = 0, prev = -1;
    for (t = 0; t < T; ++t) {
        const float *row = scores + (int64_t)t * step_stride;
        int best = 0;
        for (c = 1; c < C; ++c) if (row[c] > row[best]) best = c;
        if (best != prev && best != blank) {
            if (out && n < max_out) out[n] = best;
            ++n;
        }
        prev = best;
    }
    return n;
}
HIGAN_DEF int higan_ctc_greedy_decode(const float *scores, int T, int C, int blank, int *out,
                                      int max_out) {
    return higan_ctc_greedy_decode_strided(scores, C, T, C, blank, out, max_out);
}

/* ---- cross-entropy --------------------------------------------------------------------- */
HIGAN_DEF void higan_cross_entropy_forward(float *y, float *lse, const float *logits,
                                           const int *labels, int64_t N, int64_t C) {
    int64_t n;
    double sum = 0.0;
    HIGAN_ASSERT(N > 0 && C > 0);
    for (n = 0; n < N; ++n) {
        const float *x = logits + n * C;
        float m = x[0], l;
        double e = 0.0;
        int64_t c;
        HIGAN_ASSERT(labels[n] >= 0 && labels[n] < C);
        for (c = 1; c < C; ++c) if (x[c] > m) m = x[c];
        for (c = 0; c < C; ++c) e += exp((double)(x[c] - m));
        l = (float)log(e) + m;
        if (lse) lse[n] = l;
        sum += (double)(l - x[labels[n]]);
    }
    y[0] = (float)(sum / (double)N);
}
HIGAN_DEF void higan_cross_entropy_backward(float *dlogits, const float *dy, const float *logits,
                                            const float *lse, const int *labels, int64_t N,
                                            int64_t C) {
    int64_t n;
    float g;
    if (!dlogits) return;
    g = dy[0] / (float)N;
    HIGAN__PARALLEL_FOR_IF(N * C > 65536)
    for (n = 0; n < N; ++n) {
        int64_t c;
        for (c = 0; c < C; ++c) {
            float p = expf(logits[n * C + c] - lse[n]);
            dlogits[n * C + c] += g * (p - (c == labels[n] ? 1.0f : 0.0f));
        }
    }
}

typedef struct { higan_var *x, *y; float *lse; int *labels; } higan__ce_ctx;
static void higan__ce_backward_op(higan_tape *t, void *p) {
    higan__ce_ctx *c = (higan__ce_ctx *)p;
    float *dx = higan_var_grad(t, c->x);
    if (dx) higan_cross_entropy_backward(dx, c->y->grad, c->x->data, c->lse, c->labels,
                                         c->x->shape[0], c->x->shape[1]);
}
HIGAN_DEF higan_var *higan_cross_entropy(higan_tape *t, higan_var *logits, const int *labels) {
    int64_t N, C, one = 1;
    higan_var *y;
    higan__ce_ctx *c;
    float *lse;
    if (!logits) return NULL;
    HIGAN_ASSERT(logits->ndim == 2 && labels);
    N = logits->shape[0]; C = logits->shape[1];
    if (!(y = higan_op_output(t, 1, &one, &logits, 1))) return NULL;
    if (!(lse = higan_arena_floats(t->arena, N))) return NULL;
    higan_cross_entropy_forward(y->data, lse, logits->data, labels, N, C);
    if (y->requires_grad) {
        if (!(c = (higan__ce_ctx *)higan_tape_ctx(t, sizeof *c))) return NULL;
        if (!(c->labels = (int *)higan_arena_alloc(t->arena, (size_t)N * sizeof(int)))) return NULL;
        memcpy(c->labels, labels, (size_t)N * sizeof(int));
        c->x = logits; c->y = y; c->lse = lse;
        higan_tape_record(t, y, higan__ce_backward_op, c);
    }
    return y;
}
/* ==== GAN LOSSES (HiGAN+): hinge, masked L1, KL, contextual ============== */
/* Reductions are accumulated in double, serially (bit-identical for any thread count). */

/* ---- hinge ---------------------------------------------------------------- */
/* x: [n] -> y: [1] = mean(relu(1 - x)) */
HIGAN_DEF void higan_hinge_d_real_forward(float *y, const float *x, int64_t n) {
    double s = 0;
    int64_t i;
    for (i = 0; i < n; ++i) { float v = 1.0f - x[i]; if (v > 0) s += v; }
    y[0] = (float)(s / (double)n);
}
/* dx: [n] += -dy/n where 1 - x > 0 (relu'(0) = 0 like PyTorch) */
HIGAN_DEF void higan_hinge_d_real_backward(float *dx, const float *dy, const float *x, int64_t n) {
    float g = -dy[0] / (float)n;
    int64_t i;
    if (!dx) return;
    for (i = 0; i < n; ++i) if (1.0f - x[i] > 0) dx[i] += g;
}
/* x: [n] -> y: [1] = mean(relu(1 + x)) */
HIGAN_DEF void higan_hinge_d_fake_forward(float *y, const float *x, int64_t n) {
    double s = 0;
    int64_t i;
    for (i = 0; i < n; ++i) { float v = 1.0f + x[i]; if (v > 0) s += v; }
    y[0] = (float)(s / (double)n);
}
HIGAN_DEF void higan_hinge_d_fake_backward(float *dx, const float *dy, const float *x, int64_t n) {
    float g = dy[0] / (float)n;
    int64_t i;
    if (!dx) return;
    for (i = 0; i < n; ++i) if (1.0f + x[i] > 0) dx[i] += g;
}
/* x: [n] -> y: [1] = -mean(x) */
HIGAN_DEF void higan_hinge_g_forward(float *y, const float *x, int64_t n) {
    double s = 0;
    int64_t i;
    for (i = 0; i < n; ++i) s += x[i];
    y[0] = (float)(-s / (double)n);
}
HIGAN_DEF void higan_hinge_g_backward(float *dx, const float *dy, int64_t n) {
    float g = -dy[0] / (float)n;
    int64_t i;
    if (!dx) return;
    for (i = 0; i < n; ++i) dx[i] += g;
}

typedef struct { higan_var *x, *y; int kind; } higan__hinge_ctx;   /* kind 0 real, 1 fake, 2 g */
static void higan__hinge_backward_op(higan_tape *t, void *p) {
    higan__hinge_ctx *c = (higan__hinge_ctx *)p;
    float *dx = higan_var_grad(t, c->x);
    int64_t n = higan_var_numel(c->x);
    if (!dx) return;
    if (c->kind == 0) higan_hinge_d_real_backward(dx, c->y->grad, c->x->data, n);
    else if (c->kind == 1) higan_hinge_d_fake_backward(dx, c->y->grad, c->x->data, n);
    else higan_hinge_g_backward(dx, c->y->grad, n);
}
static higan_var *higan__hinge_op(higan_tape *t, higan_var *x, int kind) {
    int64_t one = 1, n;
    higan_var *y;
    higan__hinge_ctx *c;
    if (!x || !(y = higan_op_output(t, 1, &one, &x, 1))) return NULL;
    n = higan_var_numel(x);
    HIGAN_ASSERT(n > 0);
    if (kind == 0) higan_hinge_d_real_forward(y->data, x->data, n);
    else if (kind == 1) higan_hinge_d_fake_forward(y->data, x->data, n);
    else higan_hinge_g_forward(y->data, x->data, n);
    if (y->requires_grad) {
        if (!(c = (higan__hinge_ctx *)higan_tape_ctx(t, sizeof *c))) return NULL;
        c->x = x; c->y = y; c->kind = kind;
        higan_tape_record(t, y, higan__hinge_backward_op, c);
    }
    return y;
}
HIGAN_DEF higan_var *higan_hinge_d_real(higan_tape *t, higan_var *x) { return higan__hinge_op(t, x, 0); }
HIGAN_DEF higan_var *higan_hinge_d_fake(higan_tape *t, higan_var *x) { return higan__hinge_op(t, x, 1); }
HIGAN_DEF higan_var *higan_hinge_g(higan_tape *t, higan_var *x) { return higan__hinge_op(t, x, 2); }

/* ---- masked L1 (recn_l1_loss) --------------------------------------------- */
static double higan__masked_l1_divisor(const int *lens, int64_t N, int64_t M) {
    double s = 0;
    int64_t n;
    for (n = 0; n < N; ++n) s += (double)lens[n];
    return (double)M * s;
}
/* a, b: [N, M, W], lens: [N] -> y: [1] */
HIGAN_DEF void higan_masked_l1_forward(float *y, const float *a, const float *b, const int *lens,
                                       int64_t N, int64_t M, int64_t W) {
    double s = 0;
    int64_t n, m, w;
    for (n = 0; n < N; ++n) {
        int64_t len = lens[n] < W ? lens[n] : W;
        for (m = 0; m < M; ++m) {
            const float *pa = a + (n * M + m) * W, *pb = b + (n * M + m) * W;
            for (w = 0; w < len; ++w) s += fabsf(pa[w] - pb[w]);
        }
    }
    y[0] = (float)(s / higan__masked_l1_divisor(lens, N, M));
}
/* da, db: [N, M, W] += +-dy * sign(a - b) / divisor inside the mask */
HIGAN_DEF void higan_masked_l1_backward(float *da, float *db, const float *dy, const float *a,
                                        const float *b, const int *lens,
                                        int64_t N, int64_t M, int64_t W) {
    float g = (float)((double)dy[0] / higan__masked_l1_divisor(lens, N, M));
    int64_t n, m, w;
    if (!da && !db) return;
    for (n = 0; n < N; ++n) {
        int64_t len = lens[n] < W ? lens[n] : W;
        for (m = 0; m < M; ++m) {
            int64_t o = (n * M + m) * W;
            for (w = 0; w < len; ++w) {
                float d = a[o + w] - b[o + w];
                float s = d > 0 ? g : (d < 0 ? -g : 0.0f);    /* sign(0) = 0 like PyTorch */
                if (da) da[o + w] += s;
                if (db) db[o + w] -= s;
            }
        }
    }
}
typedef struct { higan_var *a, *b, *y; int *lens; } higan__masked_l1_ctx;
static void higan__masked_l1_dims(const higan_var *a, int64_t *N, int64_t *M, int64_t *W) {
    int d;
    *N = a->shape[0]; *W = a->shape[a->ndim - 1]; *M = 1;
    for (d = 1; d < a->ndim - 1; ++d) *M *= a->shape[d];
}
static void higan__masked_l1_backward_op(higan_tape *t, void *p) {
    higan__masked_l1_ctx *c = (higan__masked_l1_ctx *)p;
    float *da = higan_var_grad(t, c->a), *db = higan_var_grad(t, c->b);
    int64_t N, M, W;
    higan__masked_l1_dims(c->a, &N, &M, &W);
    higan_masked_l1_backward(da, db, c->y->grad, c->a->data, c->b->data, c->lens, N, M, W);
}
HIGAN_DEF higan_var *higan_masked_l1(higan_tape *t, higan_var *a, higan_var *b, const int *lens) {
    higan_var *in[2];
    higan_var *y;
    higan__masked_l1_ctx *c;
    int64_t one = 1, N, M, W;
    int d;
    if (!a || !b) return NULL;
    HIGAN_ASSERT(a->ndim >= 2 && a->ndim == b->ndim && lens);
    for (d = 0; d < a->ndim; ++d) HIGAN_ASSERT(a->shape[d] == b->shape[d]);
    in[0] = a; in[1] = b;
    if (!(y = higan_op_output(t, 1, &one, in, 2))) return NULL;
    higan__masked_l1_dims(a, &N, &M, &W);
    higan_masked_l1_forward(y->data, a->data, b->data, lens, N, M, W);
    if (y->requires_grad) {
        if (!(c = (higan__masked_l1_ctx *)higan_tape_ctx(t, sizeof *c))) return NULL;
        if (!(c->lens = (int *)higan_arena_alloc(t->arena, sizeof(int) * (size_t)N))) return NULL;
        memcpy(c->lens, lens, sizeof(int) * (size_t)N);
        c->a = a; c->b = b; c->y = y;
        higan_tape_record(t, y, higan__masked_l1_backward_op, c);
    }
    return y;
}

/* ---- KL of a diagonal Gaussian (KLloss) ------------------------------------ */
/* mu, logvar: [N, D] -> y: [1] = mean_n -1/2 sum_d (1 + logvar - mu^2 - exp(logvar)) */
HIGAN_DEF void higan_kl_gaussian_forward(float *y, const float *mu, const float *logvar, int64_t N, int64_t D) {
    double s = 0;
    int64_t i;
    for (i = 0; i < N * D; ++i)
        s += (double)(1.0f + logvar[i] - mu[i] * mu[i] - expf(logvar[i]));
    y[0] = (float)(-0.5 * s / (double)N);
}
/* dmu += dy*mu/N, dlogvar += dy*(exp(logvar) - 1)/(2N) */
HIGAN_DEF void higan_kl_gaussian_backward(float *dmu, float *dlogvar, const float *dy, const float *mu,
                                          const float *logvar, int64_t N, int64_t D) {
    float g = dy[0] / (float)N;
    int64_t i;
    if (dmu) for (i = 0; i < N * D; ++i) dmu[i] += g * mu[i];
    if (dlogvar) for (i = 0; i < N * D; ++i) dlogvar[i] += 0.5f * g * (expf(logvar[i]) - 1.0f);
}
typedef struct { higan_var *mu, *logvar, *y; } higan__kl_ctx;
static void higan__kl_backward_op(higan_tape *t, void *p) {
    higan__kl_ctx *c = (higan__kl_ctx *)p;
    float *dmu = higan_var_grad(t, c->mu), *dlv = higan_var_grad(t, c->logvar);
    int64_t N = c->mu->shape[0];
    higan_kl_gaussian_backward(dmu, dlv, c->y->grad, c->mu->data, c->logvar->data, N,
                               higan_var_numel(c->mu) / N);
}
HIGAN_DEF higan_var *higan_kl_gaussian(higan_tape *t, higan_var *mu, higan_var *logvar) {
    higan_var *in[2];
    higan_var *y;
    higan__kl_ctx *c;
    int64_t one = 1, N;
    int d;
    if (!mu || !logvar) return NULL;
    HIGAN_ASSERT(mu->ndim == logvar->ndim && mu->shape[0] > 0);
    for (d = 0; d < mu->ndim; ++d) HIGAN_ASSERT(mu->shape[d] == logvar->shape[d]);
    in[0] = mu; in[1] = logvar;
    if (!(y = higan_op_output(t, 1, &one, in, 2))) return NULL;
    N = mu->shape[0];
    higan_kl_gaussian_forward(y->data, mu->data, logvar->data, N, higan_var_numel(mu) / N);
    if (y->requires_grad) {
        if (!(c = (higan__kl_ctx *)higan_tape_ctx(t, sizeof *c))) return NULL;
        c->mu = mu; c->logvar = logvar; c->y = y;
        higan_tape_record(t, y, higan__kl_backward_op, c);
    }
    return y;
}

/* ---- contextual loss (CXLoss) ---------------------------------------------- */
/* The similarity matrix is kept transposed, S[q][p] (q: inference position, p: target
   position), so that the min, the softmax and their backward run along contiguous rows. */

/* S: [Q, P] = i_hat^T t_hat;  i_hat: [C, Q], t_hat: [C, P] */
static void higan__cx_sim(float *S, const float *i_hat, const float *t_hat, int64_t C, int64_t P, int64_t Q) {
    higan_gemm(1, 0, Q, P, C, 1.0f, i_hat, Q, t_hat, P, 0.0f, S, P);
}
/* From G = dS [Q, P]: dih [C, Q] = t_hat G^T; dth [C, P] = i_hat G (when want_t). */
static void higan__cx_dsim(float *dth, float *dih, const float *G, const float *i_hat, const float *t_hat,
                           int64_t C, int64_t P, int64_t Q, int want_t) {
    higan_gemm(0, 1, C, Q, P, 1.0f, t_hat, P, G, P, 0.0f, dih, Q);
    if (want_t) higan_gemm(0, 0, C, P, Q, 1.0f, i_hat, Q, G, P, 0.0f, dth, P);
}

/* Centre x [C, L] by mean [C], normalise each column over C: xh [C, L], norm [L]. */
static void higan__cx_normalize(float *xh, float *norm, const float *x, const float *mean, int64_t C, int64_t L) {
    int64_t l;
    HIGAN__PARALLEL_FOR_IF(C * L > 32768)
    for (l = 0; l < L; ++l) {
        int64_t c;
        double s = 0;
        float nr;
        for (c = 0; c < C; ++c) { float v = x[c * L + l] - mean[c]; s += (double)v * v; }
        nr = (float)sqrt(s);
        norm[l] = nr;
        for (c = 0; c < C; ++c) xh[c * L + l] = (x[c * L + l] - mean[c]) / nr;
    }
}

/* In place: dxh [C, L] (gradient of xh = v/||v||) -> dv = (dxh - xh (xh . dxh)) / ||v|| */
static void higan__cx_dnormalize(float *dxh, const float *xh, const float *norm, int64_t C, int64_t L) {
    int64_t l;
    HIGAN__PARALLEL_FOR_IF(C * L > 32768)
    for (l = 0; l < L; ++l) {
        int64_t c;
        double s = 0;
        float fs;
        for (c = 0; c < C; ++c) s += (double)xh[c * L + l] * dxh[c * L + l];
        fs = (float)s;
        for (c = 0; c < C; ++c) dxh[c * L + l] = (dxh[c * L + l] - xh[c * L + l] * fs) / norm[l];
    }
}

/* Row q of the weights: r = (1 - s)/2, r~ = r/(rmin + 1e-5), e = exp((b - r~)/sigma). */
#define HIGAN__CX_EPS 1e-5f
static float higan__cx_e(float s, float rden, float sigma, float b) {
    float r = (1.0f - s) / 2.0f;
    return expf((b - r / rden) / sigma);
}

HIGAN_DEF higan_status higan_cx_cache_alloc(higan_cx_cache *c, higan_arena *a,
                                            int64_t N, int64_t C, int64_t P, int64_t Q) {
    c->t_hat = higan_arena_floats(a, N * C * P);
    c->i_hat = higan_arena_floats(a, N * C * Q);
    c->t_norm = higan_arena_floats(a, N * P);
    c->i_norm = higan_arena_floats(a, N * Q);
    c->r_min = higan_arena_floats(a, N * Q);
    c->w_sum = higan_arena_floats(a, N * Q);
    c->cx = higan_arena_floats(a, N);
    c->p_min = (int64_t *)higan_arena_alloc(a, sizeof(int64_t) * (size_t)(N * Q));
    c->q_max = (int64_t *)higan_arena_alloc(a, sizeof(int64_t) * (size_t)(N * P));
    if (!c->t_hat || !c->i_hat || !c->t_norm || !c->i_norm || !c->r_min || !c->w_sum || !c->cx ||
        !c->p_min || !c->q_max)
        return higan__error(HIGAN_ERR_NOMEM, "cx loss: arena overflow");
    return HIGAN_OK;
}

/* feat_t: [N, C, P], feat_i: [N, C, Q] -> y: [1]; fills cache (see higan_cx_cache). */
HIGAN_DEF void higan_cx_loss_forward(float *y, higan_cx_cache *cache, const float *feat_t,
                                     const float *feat_i, int64_t N, int64_t C, int64_t P, int64_t Q,
                                     float sigma, float b, higan_arena *scratch) {
    size_t mark = higan_arena_mark(scratch);
    higan_cx_cache local;
    float *mean, *S, *mx;
    double loss = 0;
    int64_t n, c, p, q;
    y[0] = NAN;
    if (!cache) {
        if (higan_cx_cache_alloc(&local, scratch, N, C, P, Q) != HIGAN_OK) goto done;
        cache = &local;
    }
    mean = higan_arena_floats(scratch, C);
    S = higan_arena_floats(scratch, Q * P);
    mx = higan_arena_floats(scratch, P);
    if (!mean || !S || !mx) goto done;
    /* per-channel mean of the target over batch and positions */
    for (c = 0; c < C; ++c) {
        double s = 0;
        for (n = 0; n < N; ++n) for (p = 0; p < P; ++p) s += feat_t[(n * C + c) * P + p];
        mean[c] = (float)(s / (double)(N * P));
    }
    for (n = 0; n < N; ++n) {
        float *th = cache->t_hat + n * C * P, *ih = cache->i_hat + n * C * Q;
        float *rmin = cache->r_min + n * Q, *wsum = cache->w_sum + n * Q;
        int64_t *pmin = cache->p_min + n * Q, *qmax = cache->q_max + n * P;
        double cxs = 0;
        higan__cx_normalize(th, cache->t_norm + n * P, feat_t + n * C * P, mean, C, P);
        higan__cx_normalize(ih, cache->i_norm + n * Q, feat_i + n * C * Q, mean, C, Q);
        higan__cx_sim(S, ih, th, C, P, Q);
        /* each row q: min over p of r (first argmin), then w = softmax over p */
        HIGAN__PARALLEL_FOR_IF(Q * P > 16384)
        for (q = 0; q < Q; ++q) {
            float *row = S + q * P;
            float best = (1.0f - row[0]) / 2.0f, rden;
            int64_t arg = 0, k;
            double es = 0;
            for (k = 1; k < P; ++k) {
                float r = (1.0f - row[k]) / 2.0f;
                if (r < best) { best = r; arg = k; }
            }
            rmin[q] = best; pmin[q] = arg;
            rden = best + HIGAN__CX_EPS;
            for (k = 0; k < P; ++k) { row[k] = higan__cx_e(row[k], rden, sigma, b); es += row[k]; }
            wsum[q] = (float)es;
            for (k = 0; k < P; ++k) row[k] = row[k] / wsum[q];
        }
        /* max over q for each p (first argmax in q order) */
        for (p = 0; p < P; ++p) { mx[p] = S[p]; qmax[p] = 0; }
        for (q = 1; q < Q; ++q) {
            const float *row = S + q * P;
            for (p = 0; p < P; ++p) if (row[p] > mx[p]) { mx[p] = row[p]; qmax[p] = q; }
        }
        for (p = 0; p < P; ++p) cxs += mx[p];
        cache->cx[n] = (float)(cxs / (double)P);
        loss += -log((double)(cache->cx[n] + HIGAN__CX_EPS));
    }
    y[0] = (float)(loss / (double)N);
done:
    higan_arena_release(scratch, mark);
}

/* dfeat_t: [N, C, P], dfeat_i: [N, C, Q] (either may be NULL) += gradients of y. */
HIGAN_DEF void higan_cx_loss_backward(float *dfeat_t, float *dfeat_i, const float *dy,
                                      const higan_cx_cache *cache, int64_t N, int64_t C, int64_t P,
                                      int64_t Q, float sigma, float b, higan_arena *scratch) {
    size_t mark = higan_arena_mark(scratch);
    float *G, *dth, *dih, *dmean;
    int64_t n, c, p, q;
    if (!dfeat_t && !dfeat_i) return;
    G = higan_arena_floats(scratch, Q * P);
    dth = higan_arena_floats(scratch, C * P);
    dih = higan_arena_floats(scratch, C * Q);
    dmean = higan_arena_zeros(scratch, C);
    if (!G || !dth || !dih || !dmean) goto done;   /* sticky arena overflow, seen by the caller */
    for (n = 0; n < N; ++n) {
        const float *th = cache->t_hat + n * C * P, *ih = cache->i_hat + n * C * Q;
        const float *tn = cache->t_norm + n * P, *in = cache->i_norm + n * Q;
        const float *rmin = cache->r_min + n * Q, *wsum = cache->w_sum + n * Q;
        const int64_t *pmin = cache->p_min + n * Q, *qmax = cache->q_max + n * P;
        /* y = mean_n -log(cx_n + eps), cx_n = mean_p max_q w: gradient of each max */
        float gmx = -dy[0] / (float)N / (cache->cx[n] + HIGAN__CX_EPS) / (float)P;
        higan__cx_sim(G, ih, th, C, P, Q);
        /* G row q: similarities in, d(loss)/d(similarity) out */
        HIGAN__PARALLEL_FOR_IF(Q * P > 16384)
        for (q = 0; q < Q; ++q) {
            float *row = G + q * P;
            float rden = rmin[q] + HIGAN__CX_EPS;
            double sdw = 0, dden = 0;
            int64_t k;
            /* softmax over p: sum_k dw_k w_k (dw is gmx at the argmax entries, else 0);
               w recomputed with the forward's exact expression */
            for (k = 0; k < P; ++k)
                if (qmax[k] == q) sdw += (double)gmx * (higan__cx_e(row[k], rden, sigma, b) / wsum[q]);
            for (k = 0; k < P; ++k) {
                float r = (1.0f - row[k]) / 2.0f;
                float w = higan__cx_e(row[k], rden, sigma, b) / wsum[q];
                float dw = qmax[k] == q ? gmx : 0.0f;
                float drt = -(w / sigma) * (dw - (float)sdw);   /* d r~ */
                dden += (double)drt * r;
                row[k] = -0.5f * (drt / rden);                   /* r = (1 - s)/2 */
            }
            /* r~ = r / (min_p r + eps): the min's gradient goes to its argmin */
            row[pmin[q]] += -0.5f * (float)(-dden / ((double)rden * rden));
        }
        /* through s = i_hat^T t_hat, then the channel normalisation (column-wise) */
        higan__cx_dsim(dth, dih, G, ih, th, C, P, Q, dfeat_t != NULL);
        if (dfeat_t) higan__cx_dnormalize(dth, th, tn, C, P);
        higan__cx_dnormalize(dih, ih, in, C, Q);
        /* feat - mean: into the features, and (target only) the mean */
        for (c = 0; c < C; ++c) {
            double s = 0;
            if (dfeat_t) {
                float *d = dfeat_t + (n * C + c) * P;
                for (p = 0; p < P; ++p) { d[p] += dth[c * P + p]; s += dth[c * P + p]; }
            }
            if (dfeat_i) {
                float *d = dfeat_i + (n * C + c) * Q;
                for (q = 0; q < Q; ++q) d[q] += dih[c * Q + q];
            }
            if (dfeat_t) for (q = 0; q < Q; ++q) s += dih[c * Q + q];
            dmean[c] -= (float)s;
        }
    }
    if (dfeat_t) {   /* mean[c] = mean over n, p of feat_t[n, c, p] */
        for (c = 0; c < C; ++c) {
            float g = dmean[c] / (float)(N * P);
            for (n = 0; n < N; ++n) {
                float *d = dfeat_t + (n * C + c) * P;
                for (p = 0; p < P; ++p) d[p] += g;
            }
        }
    }
done:
    higan_arena_release(scratch, mark);
}

typedef struct { higan_var *ft, *fi, *y; higan_cx_cache cache; int64_t N, C, P, Q; float sigma, b; } higan__cx_ctx;
static void higan__cx_backward_op(higan_tape *t, void *p) {
    higan__cx_ctx *c = (higan__cx_ctx *)p;
    float *dt = higan_var_grad(t, c->ft), *di = higan_var_grad(t, c->fi);
    higan_cx_loss_backward(dt, di, c->y->grad, &c->cache, c->N, c->C, c->P, c->Q, c->sigma, c->b, t->arena);
}
HIGAN_DEF higan_var *higan_cx_loss(higan_tape *t, higan_var *feat_t, higan_var *feat_i, float sigma, float b) {
    higan_var *in[2];
    higan_var *y;
    higan__cx_ctx *c = NULL;
    int64_t one = 1, N, C, P, Q;
    if (!feat_t || !feat_i) return NULL;
    HIGAN_ASSERT(feat_t->ndim >= 2 && feat_i->ndim >= 2);
    HIGAN_ASSERT(feat_t->shape[0] == feat_i->shape[0] && feat_t->shape[1] == feat_i->shape[1]);
    N = feat_t->shape[0]; C = feat_t->shape[1];
    HIGAN_ASSERT(N > 0 && C > 0);
    P = higan_var_numel(feat_t) / (N * C); Q = higan_var_numel(feat_i) / (N * C);
    HIGAN_ASSERT(P > 0 && Q > 0);
    in[0] = feat_t; in[1] = feat_i;
    if (!(y = higan_op_output(t, 1, &one, in, 2))) return NULL;
    if (y->requires_grad) {   /* the cache lives in the arena until backward */
        if (!(c = (higan__cx_ctx *)higan_tape_ctx(t, sizeof *c))) return NULL;
        if (higan_cx_cache_alloc(&c->cache, t->arena, N, C, P, Q) != HIGAN_OK) return NULL;
        c->ft = feat_t; c->fi = feat_i; c->y = y;
        c->N = N; c->C = C; c->P = P; c->Q = Q; c->sigma = sigma; c->b = b;
    }
    higan_cx_loss_forward(y->data, c ? &c->cache : NULL, feat_t->data, feat_i->data, N, C, P, Q,
                          sigma, b, t->arena);
    if (higan_arena_status(t->arena) != HIGAN_OK) return NULL;   /* scratch overflow */
    if (c) higan_tape_record(t, y, higan__cx_backward_op, c);
    return y;
}
/* ==== STYLE AND RECOGNITION NETWORKS (implementation; see styler_api.h) ================== */

/* "<prefix>.<key>" (just key when prefix is empty or NULL) */
static void higan__sty_name(char *buf, const char *prefix, const char *key) {
    size_t pl = prefix ? strlen(prefix) : 0, kl = strlen(key);
    HIGAN_ASSERT(pl + kl + 2 <= HIGAN_MAX_NAME && "parameter name too long");
    if (pl) { memcpy(buf, prefix, pl); buf[pl++] = '.'; }
    memcpy(buf + pl, key, kl + 1);
}
static int higan__sty_add(higan_params *p, const char *prefix, const char *key, higan_param_kind kind,
                          int ndim, int64_t d0, int64_t d1, int64_t d2, int64_t d3) {
    char name[HIGAN_MAX_NAME];
    int64_t shape[4];
    shape[0] = d0; shape[1] = d1; shape[2] = d2; shape[3] = d3;
    higan__sty_name(name, prefix, key);
    return higan_params_add(p, name, kind, ndim, shape);
}
/* A parameter's var, or NULL for an absent one (handle -1). */
static higan_var *higan__sty_pv(higan_tape *t, const higan_params *p, int h) {
    return h < 0 ? NULL : higan_param_var(t, p, h);
}
/* PyTorch's default for conv/linear (kaiming_uniform_(a=sqrt(5)) for the weight, which is
   U(+-1/sqrt(fan_in)), and U(+-1/sqrt(fan_in)) for the bias), or N02 weights. */
static void higan__sty_init_wb(const higan_params *p, int w, int b, int64_t fan_in, higan_rng *rng,
                               higan_init_kind init) {
    float bound = 1.0f / (float)sqrt((double)fan_in);
    int64_t n = p->entries[w].numel;
    if (init == HIGAN_INIT_N02) higan_rng_fill_normal(rng, higan_params_data(p, w), n, 0.0f, 0.02f);
    else higan_rng_fill_uniform(rng, higan_params_data(p, w), n, -bound, bound);
    if (b >= 0) higan_rng_fill_uniform(rng, higan_params_data(p, b), p->entries[b].numel, -bound, bound);
}

/* ---- BatchNorm2d -------------------------------------------------------------------------- */
HIGAN_DEF void higan_bn2d_register(higan_bn2d *m, higan_params *p, const char *prefix, int64_t C) {
    memset(m, 0, sizeof *m);
    m->params = p;
    m->C = C;
    m->momentum = 0.1f;
    m->eps = 1e-5f;
    m->weight = higan__sty_add(p, prefix, "weight", HIGAN_PARAM, 1, C, 0, 0, 0);
    m->bias = higan__sty_add(p, prefix, "bias", HIGAN_PARAM, 1, C, 0, 0, 0);
    m->running_mean = higan__sty_add(p, prefix, "running_mean", HIGAN_BUFFER, 1, C, 0, 0, 0);
    m->running_var = higan__sty_add(p, prefix, "running_var", HIGAN_BUFFER, 1, C, 0, 0, 0);
    /* 0-d in PyTorch state_dicts */
    m->num_batches_tracked = higan__sty_add(p, prefix, "num_batches_tracked", HIGAN_BUFFER_I64, 0, 0, 0, 0, 0);
}
HIGAN_DEF void higan_bn2d_init(const higan_bn2d *m) {
    const higan_params *p = m->params;
    float *w = higan_params_data(p, m->weight), *b = higan_params_data(p, m->bias);
    float *rm = higan_params_data(p, m->running_mean), *rv = higan_params_data(p, m->running_var);
    int64_t c;
    for (c = 0; c < m->C; ++c) { w[c] = 1.0f; b[c] = 0.0f; rm[c] = 0.0f; rv[c] = 1.0f; }
    higan_params_idata(p, m->num_batches_tracked)[0] = 0;
}
HIGAN_DEF higan_var *higan_bn2d_forward(higan_tape *t, const higan_bn2d *m, higan_var *x, int train) {
    const higan_params *p = m->params;
    if (!x) return NULL;
    HIGAN_ASSERT(x->ndim >= 2 && x->shape[1] == m->C);
    return higan_batch_norm2d(t, x, higan_param_var(t, p, m->weight), higan_param_var(t, p, m->bias),
                              higan_params_data(p, m->running_mean), higan_params_data(p, m->running_var),
                              higan_params_idata(p, m->num_batches_tracked), m->momentum, m->eps, train);
}

/* ---- Conv2dBlock ---------------------------------------------------------------------------- */
HIGAN_DEF void higan_conv_block_register(higan_conv_block *m, higan_params *p, const char *prefix,
                                         int64_t in, int64_t out, int64_t ks, int64_t stride,
                                         int64_t pad, int use_bias, int norm, int relu,
                                         int act_first) {
    char sub[HIGAN_MAX_NAME];
    memset(m, 0, sizeof *m);
    m->params = p;
    m->in = in; m->out = out; m->ks = ks; m->stride = stride; m->pad = pad;
    m->has_norm = norm; m->relu = relu; m->act_first = act_first;
    higan__sty_name(sub, prefix, "conv");
    m->weight = higan__sty_add(p, sub, "weight", HIGAN_PARAM, 4, out, in, ks, ks);
    m->bias = use_bias ? higan__sty_add(p, sub, "bias", HIGAN_PARAM, 1, out, 0, 0, 0) : -1;
    if (norm) {
        higan__sty_name(sub, prefix, "norm");
        higan_bn2d_register(&m->norm, p, sub, out);
    }
}
HIGAN_DEF void higan_conv_block_init(const higan_conv_block *m, higan_rng *rng, higan_init_kind init) {
    higan__sty_init_wb(m->params, m->weight, m->bias, m->in * m->ks * m->ks, rng, init);
    if (m->has_norm) higan_bn2d_init(&m->norm);
}
/* skip_act: the caller applied the act-first relu already (fused with its dropout) */
static higan_var *higan__conv_block_forward(higan_tape *t, const higan_conv_block *m, higan_var *x, int train,
                                            int skip_act) {
    const higan_params *p = m->params;
    higan_var *h = x;
    if (!h) return NULL;
    HIGAN_ASSERT(h->ndim == 4 && h->shape[1] == m->in);
    if (m->relu && m->act_first && !skip_act) h = higan_relu(t, h);
    /* ZeroPad2d(pad) then an unpadded conv == a conv with zero padding */
    h = higan_conv2d(t, h, higan_param_var(t, p, m->weight), higan__sty_pv(t, p, m->bias),
                     m->stride, m->stride, m->pad, m->pad, m->pad, m->pad);
    if (m->has_norm) h = h ? higan_bn2d_forward(t, &m->norm, h, train) : NULL;
    if (m->relu && !m->act_first) h = higan_relu(t, h);
    return h;
}
HIGAN_DEF higan_var *higan_conv_block_forward(higan_tape *t, const higan_conv_block *m, higan_var *x,
                                              int train) {
    return higan__conv_block_forward(t, m, x, train, 0);
}

/* ---- ActFirstResBlock ------------------------------------------------------------------------ */
HIGAN_DEF void higan_afrb_register(higan_afrb *m, higan_params *p, const char *prefix, int64_t fin,
                                   int64_t fout, float dropout) {
    char sub[HIGAN_MAX_NAME];
    int64_t fhid = fin < fout ? fin : fout;
    memset(m, 0, sizeof *m);
    m->fin = fin; m->fout = fout; m->dropout = dropout;
    m->has_shortcut = fin != fout;
    higan__sty_name(sub, prefix, "conv_0");
    higan_conv_block_register(&m->conv_0, p, sub, fin, fhid, 3, 1, 1, 1, 1, 1, 1);
    higan__sty_name(sub, prefix, "conv_1");
    higan_conv_block_register(&m->conv_1, p, sub, fhid, fout, 3, 1, 1, 1, 1, 1, 1);
    if (m->has_shortcut) {
        higan__sty_name(sub, prefix, "conv_s");
        higan_conv_block_register(&m->conv_s, p, sub, fin, fout, 1, 1, 0, 0, 0, 0, 0);
    }
}
HIGAN_DEF void higan_afrb_init(const higan_afrb *m, higan_rng *rng, higan_init_kind init) {
    higan_conv_block_init(&m->conv_0, rng, init);
    higan_conv_block_init(&m->conv_1, rng, init);
    if (m->has_shortcut) higan_conv_block_init(&m->conv_s, rng, init);
}
HIGAN_DEF higan_var *higan_afrb_forward(higan_tape *t, const higan_afrb *m, higan_var *x, int train,
                                        higan_rng *rng) {
    higan_var *xs, *dx;
    if (!x) return NULL;
    xs = m->has_shortcut ? higan_conv_block_forward(t, &m->conv_s, x, train) : x;
    dx = higan_conv_block_forward(t, &m->conv_0, x, train);
    if (train && m->dropout > 0.0f && m->conv_1.relu && m->conv_1.act_first) {
        /* conv_1 starts with its relu: one fused pass (the same values as dropout, then relu) */
        dx = higan__dropout_relu(t, dx, m->dropout, train, rng);
        dx = higan__conv_block_forward(t, &m->conv_1, dx, train, 1);
    } else {
        dx = higan_dropout(t, dx, m->dropout, train, rng);
        dx = higan_conv_block_forward(t, &m->conv_1, dx, train);
    }
    return (xs && dx) ? higan_add(t, xs, dx) : NULL;
}

/* ---- Linear ------------------------------------------------------------------------------------ */
HIGAN_DEF void higan_linear_layer_register(higan_linear_layer *m, higan_params *p, const char *prefix,
                                           int64_t in, int64_t out, int use_bias) {
    memset(m, 0, sizeof *m);
    m->params = p;
    m->in = in; m->out = out;
    m->weight = higan__sty_add(p, prefix, "weight", HIGAN_PARAM, 2, out, in, 0, 0);
    m->bias = use_bias ? higan__sty_add(p, prefix, "bias", HIGAN_PARAM, 1, out, 0, 0, 0) : -1;
}
HIGAN_DEF void higan_linear_layer_init(const higan_linear_layer *m, higan_rng *rng, higan_init_kind init) {
    higan__sty_init_wb(m->params, m->weight, m->bias, m->in, rng, init);
}
HIGAN_DEF higan_var *higan_linear_layer_forward(higan_tape *t, const higan_linear_layer *m, higan_var *x) {
    if (!x) return NULL;
    HIGAN_ASSERT(x->shape[x->ndim - 1] == m->in);
    return higan_linear(t, x, higan_param_var(t, m->params, m->weight), higan__sty_pv(t, m->params, m->bias));
}

/* ---- StyleBackbone ----------------------------------------------------------------------------- */
HIGAN_DEF higan_backbone_config higan_backbone_default_config(void) {
    higan_backbone_config c;
    c.resolution = 16;
    c.max_dim = 256;
    c.in_channel = 1;
    c.dropout = 0.0f;
    return c;
}
/* cnn_backbone indices of the eight ActFirstResBlocks */
static const int higan__sty_afrb_index[8] = {2, 4, 7, 9, 12, 13, 15, 16};

HIGAN_DEF void higan_style_backbone_register(higan_style_backbone *b, higan_params *p,
                                             const char *prefix, const higan_backbone_config *cfg) {
    char sub[HIGAN_MAX_NAME], key[64];
    int64_t fin[8], fout[8], nf, df;
    int i, k = 0;
    memset(b, 0, sizeof *b);
    b->params = p;
    b->cfg = cfg ? *cfg : higan_backbone_default_config();
    HIGAN_ASSERT(b->cfg.resolution > 0 && b->cfg.max_dim > 0 && b->cfg.in_channel > 0);
    /* the official channel schedule (StyleBackbone.__init__) */
    nf = b->cfg.resolution;
    for (i = 0; i < 2; ++i) {
        int64_t nf_out = 2 * nf < b->cfg.max_dim ? 2 * nf : b->cfg.max_dim;
        fin[k] = nf; fout[k++] = nf;
        fin[k] = nf; fout[k++] = nf_out;
        nf = nf_out;
    }
    df = nf;
    for (i = 0; i < 2; ++i) {
        int64_t df_out = 2 * df < b->cfg.max_dim ? 2 * df : b->cfg.max_dim;
        fin[k] = df; fout[k++] = df;
        fin[k] = df; fout[k++] = df_out;
        df = df_out;
    }
    b->out_dim = df;
    higan__sty_name(sub, prefix, "cnn_backbone.1");
    higan_conv_block_register(&b->conv1, p, sub, b->cfg.in_channel, b->cfg.resolution, 5, 2, 0, 1, 0, 0, 0);
    for (i = 0; i < 8; ++i) {
        snprintf(key, sizeof key, "cnn_backbone.%d", higan__sty_afrb_index[i]);
        higan__sty_name(sub, prefix, key);
        higan_afrb_register(&b->blocks[i], p, sub, fin[i], fout[i],
                            i < 4 ? b->cfg.dropout / 2 : b->cfg.dropout);
    }
    higan__sty_name(sub, prefix, "cnn_ctc.1");
    higan_conv_block_register(&b->ctc, p, sub, df, df, 3, 1, 0, 1, 1, 1, 0);
}
HIGAN_DEF void higan_style_backbone_init(const higan_style_backbone *b, higan_rng *rng,
                                         higan_init_kind init) {
    int i;
    higan_conv_block_init(&b->conv1, rng, init);
    for (i = 0; i < 8; ++i) higan_afrb_init(&b->blocks[i], rng, init);
    higan_conv_block_init(&b->ctc, rng, init);
}
HIGAN_DEF higan_var *higan_style_backbone_forward(higan_tape *t, const higan_style_backbone *b,
                                                  higan_var *x, int train, higan_rng *rng,
                                                  higan_var **feats) {
    higan_var *h;
    int64_t seq_shape[3];
    if (feats) feats[0] = feats[1] = feats[2] = NULL;
    if (!x) return NULL;
    HIGAN_ASSERT(x->ndim == 4 && x->shape[1] == b->cfg.in_channel);
    h = higan_pad(t, x, 2, 2, 2, 2, -1.0f);                          /* 0: ConstantPad2d(2, -1) */
    h = higan_conv_block_forward(t, &b->conv1, h, train);             /* 1 */
    h = higan_afrb_forward(t, &b->blocks[0], h, train, rng);          /* 2 */
    h = higan_pad(t, h, 0, 0, 1, 1, 0.0f);                            /* 3 */
    h = higan_afrb_forward(t, &b->blocks[1], h, train, rng);          /* 4 */
    h = higan_max_pool3s2(t, higan_pad(t, h, 1, 1, 1, 1, 0.0f));      /* 5, 6 */
    h = higan_afrb_forward(t, &b->blocks[2], h, train, rng);          /* 7 */
    h = higan_pad(t, h, 0, 0, 1, 1, 0.0f);                            /* 8 */
    h = higan_afrb_forward(t, &b->blocks[3], h, train, rng);          /* 9: feat2 */
    if (feats) feats[0] = h;
    h = higan_max_pool3s2(t, higan_pad(t, h, 1, 1, 1, 1, 0.0f));      /* 10, 11 */
    h = higan_afrb_forward(t, &b->blocks[4], h, train, rng);          /* 12 */
    h = higan_afrb_forward(t, &b->blocks[5], h, train, rng);          /* 13: feat3 */
    if (feats) feats[1] = h;
    h = higan_max_pool3s2(t, h);                                      /* 14 */
    h = higan_afrb_forward(t, &b->blocks[6], h, train, rng);          /* 15 */
    h = higan_afrb_forward(t, &b->blocks[7], h, train, rng);          /* 16: feat4 */
    if (feats) feats[2] = h;
    h = higan_pad(t, h, 0, 0, 1, 1, 0.0f);                            /* 17 */
    h = higan_conv_block_forward(t, &b->ctc, higan_relu(t, h), train); /* cnn_ctc */
    if (!h) return NULL;
    HIGAN_ASSERT(h->shape[2] == 1 && "StyleBackbone: the input height must be 64");
    seq_shape[0] = h->shape[0]; seq_shape[1] = h->shape[1]; seq_shape[2] = h->shape[3];
    return higan_reshape(t, h, 3, seq_shape);                         /* squeeze(-2) */
}

/* lens[b] = img_lens[b] / scale, in the arena (the masked ops copy it again) */
static int *higan__sty_lens(higan_tape *t, const int *img_lens, int64_t B, int scale) {
    int *lens = (int *)higan_arena_alloc(t->arena, sizeof(int) * (size_t)(B > 0 ? B : 1));
    int64_t i;
    if (!lens) return NULL;
    for (i = 0; i < B; ++i) {
        HIGAN_ASSERT(img_lens[i] >= 0);
        lens[i] = img_lens[i] / scale;
    }
    return lens;
}

/* ---- StyleEncoder ------------------------------------------------------------------------------ */
HIGAN_DEF void higan_style_encoder_register(higan_style_encoder *e, higan_params *p, const char *prefix,
                                            int64_t in_dim, int64_t style_dim) {
    char sub[HIGAN_MAX_NAME];
    memset(e, 0, sizeof *e);
    e->params = p;
    e->in_dim = in_dim; e->style_dim = style_dim;
    higan__sty_name(sub, prefix, "linear_style.0");
    higan_linear_layer_register(&e->linear0, p, sub, in_dim, in_dim, 1);
    higan__sty_name(sub, prefix, "linear_style.2");
    higan_linear_layer_register(&e->linear2, p, sub, in_dim, in_dim, 1);
    higan__sty_name(sub, prefix, "mu");
    higan_linear_layer_register(&e->mu, p, sub, in_dim, style_dim, 1);
    higan__sty_name(sub, prefix, "logvar");
    higan_linear_layer_register(&e->logvar, p, sub, in_dim, style_dim, 1);
}
HIGAN_DEF void higan_style_encoder_init(const higan_style_encoder *e, higan_rng *rng, higan_init_kind init) {
    higan_linear_layer_init(&e->linear0, rng, init);
    higan_linear_layer_init(&e->linear2, rng, init);
    higan_linear_layer_init(&e->mu, rng, init);
    higan_linear_layer_init(&e->logvar, rng, init);
}
HIGAN_DEF higan_var *higan_style_encoder_forward(higan_tape *t, const higan_style_encoder *e,
                                                 higan_var *feat, const int *img_lens, int vae_mode,
                                                 higan_rng *rng, const float *noise,
                                                 higan_var **mu_out, higan_var **logvar_out) {
    higan_var *h, *mu, *logvar, *eps, *z;
    int *lens;
    int64_t B;
    if (mu_out) *mu_out = NULL;
    if (logvar_out) *logvar_out = NULL;
    if (!feat) return NULL;
    HIGAN_ASSERT(feat->ndim == 3 && feat->shape[1] == e->in_dim);
    B = feat->shape[0];
    if (!(lens = higan__sty_lens(t, img_lens, B, HIGAN_BACKBONE_LEN_SCALE))) return NULL;
    h = higan_masked_mean_width(t, feat, lens, 1e-8f);                /* [B, in_dim] */
    h = higan_leaky_relu(t, higan_linear_layer_forward(t, &e->linear0, h), 0.01f);
    h = higan_leaky_relu(t, higan_linear_layer_forward(t, &e->linear2, h), 0.01f);
    mu = higan_linear_layer_forward(t, &e->mu, h);
    logvar = higan_linear_layer_forward(t, &e->logvar, h);
    if (!mu || !logvar) return NULL;
    if (mu_out) *mu_out = mu;
    if (logvar_out) *logvar_out = logvar;
    if (!vae_mode) return mu;
    /* reparameterize: z = eps * exp(0.5 logvar) + mu */
    if (!(eps = higan_var_new(t, 2, mu->shape))) return NULL;
    if (noise) memcpy(eps->data, noise, sizeof(float) * (size_t)higan_var_numel(mu));
    else {
        HIGAN_ASSERT(rng != NULL && "StyleEncoder: VAE mode needs an rng or noise");
        higan_rng_fill_normal(rng, eps->data, higan_var_numel(mu), 0.0f, 1.0f);
    }
    z = higan_mul(t, eps, higan_exp(t, higan_scale(t, logvar, 0.5f)));
    return higan_add(t, z, mu);
}

/* ---- WriterIdentifier -------------------------------------------------------------------------- */
HIGAN_DEF void higan_writer_identifier_register(higan_writer_identifier *w, higan_params *p,
                                                const char *prefix, int64_t in_dim, int64_t n_writer) {
    char sub[HIGAN_MAX_NAME];
    memset(w, 0, sizeof *w);
    w->params = p;
    w->in_dim = in_dim; w->n_writer = n_writer;
    higan__sty_name(sub, prefix, "linear_wid.0");
    higan_linear_layer_register(&w->linear0, p, sub, in_dim, in_dim, 1);
    higan__sty_name(sub, prefix, "linear_wid.2");
    higan_linear_layer_register(&w->linear2, p, sub, in_dim, n_writer, 1);
}
HIGAN_DEF void higan_writer_identifier_init(const higan_writer_identifier *w, higan_rng *rng,
                                            higan_init_kind init) {
    higan_linear_layer_init(&w->linear0, rng, init);
    higan_linear_layer_init(&w->linear2, rng, init);
}
HIGAN_DEF higan_var *higan_writer_identifier_forward(higan_tape *t, const higan_writer_identifier *w,
                                                     higan_var *feat, const int *img_lens) {
    higan_var *h;
    int *lens;
    if (!feat) return NULL;
    HIGAN_ASSERT(feat->ndim == 3 && feat->shape[1] == w->in_dim);
    if (!(lens = higan__sty_lens(t, img_lens, feat->shape[0], HIGAN_WID_LEN_SCALE))) return NULL;
    h = higan_masked_mean_width(t, feat, lens, 1e-8f);
    h = higan_leaky_relu(t, higan_linear_layer_forward(t, &w->linear0, h), 0.01f);
    return higan_linear_layer_forward(t, &w->linear2, h);
}

/* ---- Recognizer -------------------------------------------------------------------------------- */
HIGAN_DEF higan_recognizer_config higan_recognizer_default_config(void) {
    higan_recognizer_config c;
    c.cnn = higan_backbone_default_config();
    c.n_class = HIGAN_ALPHABET_SIZE;
    c.rnn_depth = 2;
    return c;
}
HIGAN_DEF void higan_recognizer_register(higan_recognizer *r, higan_params *p, const char *prefix,
                                         const higan_recognizer_config *cfg) {
    static const char *const kind[4] = {"weight_ih", "weight_hh", "bias_ih", "bias_hh"};
    char sub[HIGAN_MAX_NAME], key[64];
    int l, d, k;
    memset(r, 0, sizeof *r);
    r->params = p;
    r->cfg = cfg ? *cfg : higan_recognizer_default_config();
    HIGAN_ASSERT(r->cfg.rnn_depth >= 0 && r->cfg.rnn_depth <= HIGAN_RECOGNIZER_MAX_DEPTH);
    HIGAN_ASSERT(r->cfg.n_class > 0);
    higan_style_backbone_register(&r->cnn, p, prefix, &r->cfg.cnn);
    r->hidden = r->cnn.out_dim / 2;       /* DeepBLSTM(df, df): hidden df // 2 per direction */
    for (k = 0; k < (int)(sizeof r->lstm / sizeof r->lstm[0]); ++k) r->lstm[k] = -1;
    for (l = 0; l < r->cfg.rnn_depth; ++l)
        for (d = 0; d < 2; ++d)
            for (k = 0; k < 4; ++k) {
                int64_t in_l = l == 0 ? r->cnn.out_dim : 2 * r->hidden;
                snprintf(key, sizeof key, "rnn_ctc.lstm.%s_l%d%s", kind[k], l, d ? "_reverse" : "");
                r->lstm[(l * 2 + d) * 4 + k] =
                    k == 0 ? higan__sty_add(p, prefix, key, HIGAN_PARAM, 2, 4 * r->hidden, in_l, 0, 0)
                  : k == 1 ? higan__sty_add(p, prefix, key, HIGAN_PARAM, 2, 4 * r->hidden, r->hidden, 0, 0)
                  :          higan__sty_add(p, prefix, key, HIGAN_PARAM, 1, 4 * r->hidden, 0, 0, 0);
            }
    higan__sty_name(sub, prefix, "ctc_cls");
    higan_linear_layer_register(&r->ctc_cls, p, sub, r->cfg.rnn_depth > 0 ? 2 * r->hidden : r->cnn.out_dim,
                                r->cfg.n_class, 1);
}
HIGAN_DEF void higan_recognizer_init(const higan_recognizer *r, higan_rng *rng, higan_init_kind init) {
    float bound = 1.0f / (float)sqrt((double)(r->hidden > 0 ? r->hidden : 1));
    int k;
    higan_style_backbone_init(&r->cnn, rng, init);
    /* nn.LSTM.reset_parameters: every tensor U(+-1/sqrt(hidden)); init_weights leaves it */
    for (k = 0; k < r->cfg.rnn_depth * 8; ++k)
        higan_rng_fill_uniform(rng, higan_params_data(r->params, r->lstm[k]),
                               r->params->entries[r->lstm[k]].numel, -bound, bound);
    higan_linear_layer_init(&r->ctc_cls, rng, init);
}
HIGAN_DEF higan_var *higan_recognizer_forward(higan_tape *t, const higan_recognizer *r, higan_var *x,
                                              const int *img_lens, int train, higan_rng *rng) {
    static const int perm_btc[3] = {0, 2, 1}, perm_tbc[3] = {1, 0, 2};
    higan_var *h, *w[HIGAN_RECOGNIZER_MAX_DEPTH * 2 * 4];
    int *lens = NULL;
    int64_t B, T, i, t_max = 0;
    int k;
    h = higan_style_backbone_forward(t, &r->cnn, x, train, rng, NULL);     /* [B, C, T] */
    if (!h) return NULL;
    B = h->shape[0]; T = h->shape[2];
    h = higan_permute(t, h, perm_btc);                                       /* [B, T, C] */
    if (r->cfg.rnn_depth > 0) {
        if (!(lens = higan__sty_lens(t, img_lens, B, HIGAN_BACKBONE_LEN_SCALE))) return NULL;
        for (i = 0; i < B; ++i) {
            if (lens[i] < 1 || lens[i] > T) {
                higan__error(HIGAN_ERR_ARG, "Recognizer: image %d has width %d, which gives %d frames; "
                             "need 1..%d (the width must be 16..%d pixels)", (int)i, img_lens[i], lens[i],
                             (int)T, (int)(16 * T + 15));
                return NULL;
            }
            if (lens[i] > t_max) t_max = lens[i];
        }
        for (k = 0; k < r->cfg.rnn_depth * 8; ++k) w[k] = higan_param_var(t, r->params, r->lstm[k]);
        h = higan_lstm(t, h, lens, (int)r->hidden, r->cfg.rnn_depth, 1, w);  /* [B, T, 2H] */
        if (h && t_max < T) h = higan_slice(t, h, 1, 0, t_max);             /* pad_packed_sequence */
    }
    h = higan_linear_layer_forward(t, &r->ctc_cls, h);                       /* [B, T', n_class] */
    if (!train || !h) return h;
    return higan_permute(t, higan_log_softmax(t, h), perm_tbc);              /* [T', B, n_class] */
}
HIGAN_DEF int higan_recognizer_decode(const higan_var *out, int train, int b, int img_len,
                                      char *text, int cap) {
    int64_t B, T, C, stride;
    const float *scores;
    int frames;
    if (!out || out->ndim != 3) return higan__error(HIGAN_ERR_ARG, "recognizer_decode: not a recognizer output");
    B = train ? out->shape[1] : out->shape[0];
    T = train ? out->shape[0] : out->shape[1];
    C = out->shape[2];
    if (b < 0 || b >= B) return higan__error(HIGAN_ERR_ARG, "recognizer_decode: sample %d of %d", b, (int)B);
    if (C != HIGAN_ALPHABET_SIZE)
        return higan__error(HIGAN_ERR_ARG, "recognizer_decode: %d classes, the alphabet has %d", (int)C,
                            HIGAN_ALPHABET_SIZE);
    frames = img_len / HIGAN_BACKBONE_LEN_SCALE;
    if (frames > T) frames = (int)T;
    if (frames < 0) frames = 0;
    scores = train ? out->data + (int64_t)b * C : out->data + (int64_t)b * T * C;
    stride = train ? B * C : C;
    return higan_ctc_decode_text(scores, stride, frames, text, cap);
}

/* ---- Alphabet and text -------------------------------------------------------------------------- */
static const char higan__sty_alphabet[] = HIGAN_ALPHABET_STRING;
HIGAN_DEF const char *higan_alphabet(void) { return higan__sty_alphabet; }
HIGAN_DEF int higan_char_label(int c) {
    int i;
    if (c <= 0 || c == '`' || c > 127) return -1;
    for (i = 1; i < HIGAN_ALPHABET_SIZE; ++i) if (higan__sty_alphabet[i] == c) return i;
    return -1;
}
HIGAN_DEF int higan_text_encode(const char *utf8, int *out, int max) {
    const unsigned char *s = (const unsigned char *)utf8;
    int64_t i = 0;
    int pos = 0;
    if (!utf8) return higan__error(HIGAN_ERR_ARG, "text_encode: NULL text");
    if (!s[0]) return higan__error(HIGAN_ERR_ARG, "text_encode: empty text (a word needs at least one character)");
    while (s[i]) {
        unsigned c = s[i], cp, minimum;
        int len, k, label;
        if (c < 0x80)                { len = 1; cp = c;        minimum = 0; }
        else if ((c & 0xE0) == 0xC0) { len = 2; cp = c & 0x1F; minimum = 0x80; }
        else if ((c & 0xF0) == 0xE0) { len = 3; cp = c & 0x0F; minimum = 0x800; }
        else if ((c & 0xF8) == 0xF0) { len = 4; cp = c & 0x07; minimum = 0x10000; }
        else return higan__error(HIGAN_ERR_ARG, "text_encode: invalid UTF-8 byte 0x%02X at position %d", c, pos);
        for (k = 1; k < len; ++k) {
            if ((s[i + k] & 0xC0) != 0x80)
                return higan__error(HIGAN_ERR_ARG, "text_encode: invalid UTF-8 sequence at position %d", pos);
            cp = (cp << 6) | (s[i + k] & 0x3F);
        }
        if (cp < minimum || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
            return higan__error(HIGAN_ERR_ARG, "text_encode: invalid UTF-8 sequence at position %d", pos);
        label = higan_char_label((int)cp);
        if (label < 0) {
            if (cp == '`')
                return higan__error(HIGAN_ERR_ARG, "character '`' (U+0060) at position %d is the CTC blank "
                                    "and padding symbol of the HiGAN+ alphabet, not a writable character", pos);
            if (cp < 0x20 || cp == 0x7F)
                return higan__error(HIGAN_ERR_ARG, "control character U+%04X at position %d is not in the "
                                    "HiGAN+ alphabet", cp, pos);
            return higan__error(HIGAN_ERR_ARG, "character '%.*s' (U+%04X) at position %d is not in the "
                                "HiGAN+ alphabet", len, (const char *)(s + i), cp, pos);
        }
        if (pos >= max)
            return higan__error(HIGAN_ERR_ARG, "text_encode: the text is longer than %d characters", max);
        out[pos++] = label;
        i += len;
    }
    return pos;
}
HIGAN_DEF int higan_text_decode(const int *labels, int n, char *out, int cap) {
    int i, len = 0;
    for (i = 0; i < n; ++i)
        if (labels[i] < 0 || labels[i] >= HIGAN_ALPHABET_SIZE)
            return higan__error(HIGAN_ERR_ARG, "text_decode: label %d at position %d is outside [0, %d)",
                                labels[i], i, HIGAN_ALPHABET_SIZE);
    for (i = 0; i < n; ++i) {
        if (labels[i] == 0) continue;                /* blank / pad */
        if (out && len < cap - 1) out[len] = higan__sty_alphabet[labels[i]];
        ++len;
    }
    if (out && cap > 0) out[len < cap - 1 ? len : cap - 1] = 0;
    return len;
}
HIGAN_DEF int higan_ctc_decode_text(const float *scores, int64_t step_stride, int T, char *out, int cap) {
    int small[256], *labels = small, n, r;
    n = higan_ctc_greedy_decode_strided(scores, step_stride, T, HIGAN_ALPHABET_SIZE, 0, small, 256);
    if (n > 256) {
        labels = (int *)HIGAN_MALLOC(sizeof(int) * (size_t)n);
        if (!labels) return higan__error(HIGAN_ERR_NOMEM, "ctc_decode_text: out of memory");
        higan_ctc_greedy_decode_strided(scores, step_stride, T, HIGAN_ALPHABET_SIZE, 0, labels, n);
    }
    r = higan_text_decode(labels, n, out, cap);
    if (labels != small) HIGAN_FREE(labels);
    return r;
}
/* ---- dataset: HiGAN+'s word container; safetensors always, HDF5 under HIGAN_HDF5 ---------- */
#include <ctype.h>
#include <stdio.h>
#include <string.h>
#ifdef HIGAN_HDF5
#include <hdf5.h>
#endif

static const char *const higan__ds_names[7] = {
    "imgs", "img_seek_idxs", "img_lens", "lbs", "lb_seek_idxs", "lb_lens", "wids"
};
static const higan_dtype higan__ds_dtypes[7] = {
    HIGAN_U8, HIGAN_I64, HIGAN_I16, HIGAN_I32, HIGAN_I64, HIGAN_I16, HIGAN_I16
};

HIGAN_DEF void higan_dataset_init(higan_dataset *ds) {
    if (ds) memset(ds, 0, sizeof *ds);
}
HIGAN_DEF void higan_dataset_free(higan_dataset *ds) {
    if (!ds) return;
    HIGAN_FREE(ds->imgs);
    HIGAN_FREE(ds->img_seek_idxs);
    HIGAN_FREE(ds->img_lens);
    HIGAN_FREE(ds->lbs);
    HIGAN_FREE(ds->lb_seek_idxs);
    HIGAN_FREE(ds->lb_lens);
    HIGAN_FREE(ds->wids);
    memset(ds, 0, sizeof *ds);
}
HIGAN_DEF int higan_dataset_has_hdf5(void) {
#ifdef HIGAN_HDF5
    return 1;
#else
    return 0;
#endif
}
/* Copies the current error message (the next higan__error call overwrites it). */
static void higan__ds_last_error(char *out, size_t cap) {
    const char *e = higan_last_error();
    size_t n = strlen(e);
    if (n > cap - 1) n = cap - 1;
    memcpy(out, e, n);
    out[n] = 0;
}
static int higan__ds_ends_with(const char *s, const char *suffix) {
    size_t n = strlen(s), m = strlen(suffix), i;
    if (n < m) return 0;
    for (i = 0; i < m; ++i)
        if (tolower((unsigned char)s[n - m + i]) != tolower((unsigned char)suffix[i])) return 0;
    return 1;
}
HIGAN_DEF int higan_dataset_is_hdf5_path(const char *path) {
    return path && (higan__ds_ends_with(path, ".hdf5") || higan__ds_ends_with(path, ".h5"));
}

/* Grows a malloc'd array to hold at least need elements of size sz (doubling). */
static int higan__ds_grow(void **p, int64_t *cap, int64_t need, size_t sz) {
    int64_t n = *cap;
    void *q;
    if (need <= n) return 1;
    if (n < 16) n = 16;
    while (n < need) n *= 2;
    q = HIGAN_REALLOC(*p, (size_t)n * sz);
    if (!q) return 0;
    *p = q;
    *cap = n;
    return 1;
}
/* imgs: grow the row stride to at least need columns, re-laying the 64 rows out. */
static int higan__ds_grow_cols(higan_dataset *ds, int64_t need) {
    int64_t n = ds->capacity_cols, r;
    uint8_t *q;
    if (need <= n) return 1;
    if (n < 256) n = 256;
    while (n < need) n *= 2;
    q = (uint8_t *)HIGAN_MALLOC((size_t)n * HIGAN_DATASET_HEIGHT);
    if (!q) return 0;
    for (r = 0; r < HIGAN_DATASET_HEIGHT; ++r)
        if (ds->total_width) memcpy(q + r * n, ds->imgs + r * ds->capacity_cols, (size_t)ds->total_width);
    HIGAN_FREE(ds->imgs);
    ds->imgs = q;
    ds->capacity_cols = n;
    return 1;
}

HIGAN_DEF higan_status higan_dataset_append(higan_dataset *ds, const uint8_t *img, int w,
                                            const char *label, int wid) {
    int codes_small[256], n, k, r;
    int64_t i;
    if (!ds || !img || !label) return higan__error(HIGAN_ERR_ARG, "dataset_append: NULL argument");
    if (w < 1 || w > HIGAN_DATASET_MAX_WIDTH)
        return higan__error(HIGAN_ERR_ARG, "dataset_append: word '%.200s' has width %d, expected 1..%d",
                            label, w, HIGAN_DATASET_MAX_WIDTH);
    if (wid < -32768 || wid > 32767)
        return higan__error(HIGAN_ERR_ARG, "dataset_append: word '%.200s' has writer id %d outside the int16 range",
                            label, wid);
    if (!label[0]) return higan__error(HIGAN_ERR_ARG, "dataset_append: empty label (a word needs at least one character)");
    if (strlen(label) > HIGAN_DATASET_MAX_LABEL)
        return higan__error(HIGAN_ERR_ARG, "dataset_append: label '%.60s...' is longer than %d characters",
                            label, HIGAN_DATASET_MAX_LABEL);
    {
        /* the alphabet is ASCII, so the label has at most strlen(label) characters */
        int *codes = codes_small;
        size_t len = strlen(label);
        if (len > 256) {
            codes = (int *)HIGAN_MALLOC(len * sizeof(int));
            if (!codes) return higan__error(HIGAN_ERR_NOMEM, "dataset_append: out of memory");
        }
        n = higan_text_encode(label, codes, (int)len);
        if (codes != codes_small) HIGAN_FREE(codes);
        if (n < 0) {
            char msg[512];
            higan__ds_last_error(msg, sizeof msg);
            return higan__error(HIGAN_ERR_ARG, "dataset_append: label '%.200s': %s", label, msg);
        }
    }
    if (!higan__ds_grow_cols(ds, ds->total_width + w) ||
        !higan__ds_grow((void **)&ds->lbs, &ds->capacity_chars, ds->total_chars + n, sizeof(int32_t)))
        return higan__error(HIGAN_ERR_NOMEM, "dataset_append: out of memory");
    if (ds->count + 1 > ds->capacity_count) {
        int64_t c = ds->capacity_count, c1;
        int ok = 1;
        c1 = c;
        ok &= higan__ds_grow((void **)&ds->img_seek_idxs, &c1, ds->count + 1, sizeof(int64_t)); c1 = c;
        ok &= higan__ds_grow((void **)&ds->img_lens, &c1, ds->count + 1, sizeof(int16_t)); c1 = c;
        ok &= higan__ds_grow((void **)&ds->lb_seek_idxs, &c1, ds->count + 1, sizeof(int64_t)); c1 = c;
        ok &= higan__ds_grow((void **)&ds->lb_lens, &c1, ds->count + 1, sizeof(int16_t)); c1 = c;
        ok &= higan__ds_grow((void **)&ds->wids, &c1, ds->count + 1, sizeof(int16_t));
        if (!ok) return higan__error(HIGAN_ERR_NOMEM, "dataset_append: out of memory");
        ds->capacity_count = c1;
    }
    for (r = 0; r < HIGAN_DATASET_HEIGHT; ++r)
        memcpy(ds->imgs + r * ds->capacity_cols + ds->total_width, img + (size_t)r * (size_t)w, (size_t)w);
    /* code points of the label (ASCII: one byte per character) */
    {
        const unsigned char *s = (const unsigned char *)label;
        for (k = 0; k < n; ++k) ds->lbs[ds->total_chars + k] = (int32_t)s[k];
    }
    i = ds->count;
    ds->img_seek_idxs[i] = ds->total_width;
    ds->img_lens[i] = (int16_t)w;
    ds->lb_seek_idxs[i] = ds->total_chars;
    ds->lb_lens[i] = (int16_t)n;
    ds->wids[i] = (int16_t)wid;
    ds->total_width += w;
    ds->total_chars += n;
    ds->count = i + 1;
    return HIGAN_OK;
}

HIGAN_DEF higan_status higan_dataset_pack(higan_dataset *ds) {
    int64_t r;
    if (!ds) return higan__error(HIGAN_ERR_ARG, "dataset_pack: NULL argument");
    if (ds->capacity_cols == ds->total_width || !ds->imgs) { ds->capacity_cols = ds->total_width; return HIGAN_OK; }
    for (r = 1; r < HIGAN_DATASET_HEIGHT; ++r)   /* moves go left: ascending rows never overwrite unread data */
        memmove(ds->imgs + r * ds->total_width, ds->imgs + r * ds->capacity_cols, (size_t)ds->total_width);
    if (ds->total_width > 0) {
        uint8_t *q = (uint8_t *)HIGAN_REALLOC(ds->imgs, (size_t)ds->total_width * HIGAN_DATASET_HEIGHT);
        if (q) ds->imgs = q;   /* a failed shrink keeps the (larger) block */
    }
    ds->capacity_cols = ds->total_width;
    return HIGAN_OK;
}
HIGAN_DEF uint8_t higan_dataset_pixel(const higan_dataset *ds, int64_t i, int y, int x) {
    HIGAN_ASSERT(ds && i >= 0 && i < ds->count && y >= 0 && y < HIGAN_DATASET_HEIGHT && x >= 0 && x < ds->img_lens[i]);
    return ds->imgs[(int64_t)y * ds->capacity_cols + ds->img_seek_idxs[i] + x];
}
HIGAN_DEF int higan_dataset_image(const higan_dataset *ds, int64_t i, uint8_t *out, int64_t cap) {
    int w, r;
    if (!ds || i < 0 || i >= ds->count)
        return higan__error(HIGAN_ERR_ARG, "dataset_image: index %lld outside [0, %lld)", (long long)i,
                            (long long)(ds ? ds->count : 0));
    w = ds->img_lens[i];
    if (!out || cap < (int64_t)w * HIGAN_DATASET_HEIGHT)
        return higan__error(HIGAN_ERR_ARG, "dataset_image: word %lld needs %d bytes, the buffer has %lld",
                            (long long)i, w * HIGAN_DATASET_HEIGHT, (long long)cap);
    for (r = 0; r < HIGAN_DATASET_HEIGHT; ++r)
        memcpy(out + (size_t)r * (size_t)w, ds->imgs + r * ds->capacity_cols + ds->img_seek_idxs[i], (size_t)w);
    return w;
}

/* Appends code point cp as UTF-8 to out (cap bytes, snprintf-like); returns the byte count. */
static int higan__ds_utf8(int32_t cp, char *out, int pos, int cap) {
    unsigned char b[4];
    int n, k;
    if (cp < 0x80) { b[0] = (unsigned char)cp; n = 1; }
    else if (cp < 0x800) { b[0] = (unsigned char)(0xC0 | (cp >> 6)); b[1] = (unsigned char)(0x80 | (cp & 0x3F)); n = 2; }
    else if (cp < 0x10000) { b[0] = (unsigned char)(0xE0 | (cp >> 12)); b[1] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
                             b[2] = (unsigned char)(0x80 | (cp & 0x3F)); n = 3; }
    else { b[0] = (unsigned char)(0xF0 | ((cp >> 18) & 0x07)); b[1] = (unsigned char)(0x80 | ((cp >> 12) & 0x3F));
           b[2] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F)); b[3] = (unsigned char)(0x80 | (cp & 0x3F)); n = 4; }
    for (k = 0; k < n; ++k) if (out && pos + k < cap - 1) out[pos + k] = (char)b[k];
    return n;
}
HIGAN_DEF int higan_dataset_label(const higan_dataset *ds, int64_t i, char *out, int cap) {
    int64_t k, s;
    int len = 0, n;
    if (!ds || i < 0 || i >= ds->count)
        return higan__error(HIGAN_ERR_ARG, "dataset_label: index %lld outside [0, %lld)", (long long)i,
                            (long long)(ds ? ds->count : 0));
    s = ds->lb_seek_idxs[i];
    n = ds->lb_lens[i];
    for (k = 0; k < n; ++k) {
        int32_t cp = ds->lbs[s + k];
        if (cp < 0 || cp > 0x10FFFF) cp = 0xFFFD;
        len += higan__ds_utf8(cp, out, len, cap);
    }
    if (out && cap > 0) out[len < cap - 1 ? len : cap - 1] = 0;
    return len;
}
HIGAN_DEF int higan_dataset_label_codes(const higan_dataset *ds, int64_t i, int *out, int max) {
    int64_t k, s;
    int n;
    if (!ds || i < 0 || i >= ds->count)
        return higan__error(HIGAN_ERR_ARG, "dataset_label_codes: index %lld outside [0, %lld)", (long long)i,
                            (long long)(ds ? ds->count : 0));
    s = ds->lb_seek_idxs[i];
    n = ds->lb_lens[i];
    if (n > max) return higan__error(HIGAN_ERR_ARG, "dataset_label_codes: word %lld has %d characters, more than %d",
                                     (long long)i, n, max);
    for (k = 0; k < n; ++k) {
        int32_t cp = ds->lbs[s + k];
        int c = (cp > 0 && cp < 128) ? higan_char_label((int)cp) : -1;
        if (c < 0) return higan__error(HIGAN_ERR_ARG, "dataset_label_codes: word %lld: code point U+%04X is not in the alphabet",
                                       (long long)i, (unsigned)cp);
        out[k] = c;
    }
    return n;
}

/* ---- validation shared by both formats ---------------------------------------------------- */
/* Checks every record of a dataset whose arrays are all set; names path and record. */
static higan_status higan__ds_validate(const higan_dataset *ds, const char *path) {
    int64_t i, k;
    for (i = 0; i < ds->count; ++i) {
        int64_t s = ds->img_seek_idxs[i], w = ds->img_lens[i];
        int64_t ls = ds->lb_seek_idxs[i], n = ds->lb_lens[i];
        if (w < 1)
            return higan__error(HIGAN_ERR_FORMAT, "dataset '%s': record %lld: img_lens is %lld (must be >= 1)",
                                path, (long long)i, (long long)w);
        if (w > HIGAN_DATASET_MAX_WIDTH)
            return higan__error(HIGAN_ERR_FORMAT, "dataset '%s': record %lld: image width %lld exceeds the maximum %d",
                                path, (long long)i, (long long)w, HIGAN_DATASET_MAX_WIDTH);
        if (s < 0 || s > ds->total_width - w)
            return higan__error(HIGAN_ERR_FORMAT, "dataset '%s': record %lld: image columns [%lld, %lld) lie outside "
                                "imgs (width %lld)", path, (long long)i, (long long)s, (long long)s + w,
                                (long long)ds->total_width);
        if (n < 1)
            return higan__error(HIGAN_ERR_FORMAT, "dataset '%s': record %lld: lb_lens is %lld (must be >= 1)",
                                path, (long long)i, (long long)n);
        if (ls < 0 || ls > ds->total_chars - n)
            return higan__error(HIGAN_ERR_FORMAT, "dataset '%s': record %lld: label characters [%lld, %lld) lie "
                                "outside lbs (%lld entries)", path, (long long)i, (long long)ls, (long long)ls + n,
                                (long long)ds->total_chars);
        for (k = 0; k < n; ++k) {
            int32_t cp = ds->lbs[ls + k];
            if (!(cp > 0 && cp < 128 && higan_char_label((int)cp) >= 0))
                return higan__error(HIGAN_ERR_FORMAT, "dataset '%s': record %lld: label character %lld is code point "
                                    "%ld (U+%04lX), not in the HiGAN+ alphabet", path, (long long)i, (long long)k,
                                    (long)cp, (unsigned long)(uint32_t)cp);
        }
    }
    return HIGAN_OK;
}

/* ---- safetensors ------------------------------------------------------------------------- */
static higan_status higan__ds_save_st(const higan_dataset *ds, const char *path) {
    higan_safetensors_writer w;
    int64_t shape[2];
    uint8_t *packed = NULL;
    const uint8_t *imgs = ds->imgs;
    higan_status rc = HIGAN_OK;
    static const uint8_t empty8[1] = {0};
    if (ds->capacity_cols != ds->total_width && ds->total_width > 0) {
        /* still in building layout: write a packed copy (higan_dataset_pack avoids it) */
        int64_t r;
        packed = (uint8_t *)HIGAN_MALLOC((size_t)ds->total_width * HIGAN_DATASET_HEIGHT);
        if (!packed) return higan__error(HIGAN_ERR_NOMEM, "dataset save '%s': out of memory", path);
        for (r = 0; r < HIGAN_DATASET_HEIGHT; ++r)
            memcpy(packed + r * ds->total_width, ds->imgs + r * ds->capacity_cols, (size_t)ds->total_width);
        imgs = packed;
    }
    higan_safetensors_writer_init(&w);
    shape[0] = HIGAN_DATASET_HEIGHT; shape[1] = ds->total_width;
    if (rc == HIGAN_OK) rc = higan_safetensors_writer_add(&w, "imgs", HIGAN_U8, 2, shape, imgs ? (const void *)imgs : (const void *)empty8);
    shape[0] = ds->count;
    if (rc == HIGAN_OK) rc = higan_safetensors_writer_add(&w, "img_seek_idxs", HIGAN_I64, 1, shape, ds->img_seek_idxs ? (const void *)ds->img_seek_idxs : (const void *)empty8);
    if (rc == HIGAN_OK) rc = higan_safetensors_writer_add(&w, "img_lens", HIGAN_I16, 1, shape, ds->img_lens ? (const void *)ds->img_lens : (const void *)empty8);
    if (rc == HIGAN_OK) rc = higan_safetensors_writer_add(&w, "lb_seek_idxs", HIGAN_I64, 1, shape, ds->lb_seek_idxs ? (const void *)ds->lb_seek_idxs : (const void *)empty8);
    if (rc == HIGAN_OK) rc = higan_safetensors_writer_add(&w, "lb_lens", HIGAN_I16, 1, shape, ds->lb_lens ? (const void *)ds->lb_lens : (const void *)empty8);
    if (rc == HIGAN_OK) rc = higan_safetensors_writer_add(&w, "wids", HIGAN_I16, 1, shape, ds->wids ? (const void *)ds->wids : (const void *)empty8);
    shape[0] = ds->total_chars;
    if (rc == HIGAN_OK) rc = higan_safetensors_writer_add(&w, "lbs", HIGAN_I32, 1, shape, ds->lbs ? (const void *)ds->lbs : (const void *)empty8);
    if (rc == HIGAN_OK) rc = higan_safetensors_writer_meta(&w, "format", "higan-dataset");
    if (rc == HIGAN_OK) rc = higan_safetensors_writer_save(&w, path);
    higan_safetensors_writer_free(&w);
    HIGAN_FREE(packed);
    return rc;
}

static higan_status higan__ds_load_st(higan_dataset *ds, const char *path) {
    higan_safetensors st;
    const higan_st_tensor *t[7];
    void **dst[7];
    int k;
    int64_t count;
    if (higan_safetensors_load(&st, path) != HIGAN_OK) {
        char msg[900];
        higan_status rc;
        higan__ds_last_error(msg, sizeof msg);
        rc = strstr(msg, "cannot open") == msg || strstr(msg, "cannot read") == msg ? HIGAN_ERR_IO : HIGAN_ERR_FORMAT;
        return higan__error(rc, "dataset '%s': %s", path, msg);
    }
    for (k = 0; k < 7; ++k) {
        t[k] = higan_safetensors_find(&st, higan__ds_names[k]);
        if (!t[k]) {
            higan_safetensors_free(&st);
            return higan__error(HIGAN_ERR_FORMAT, "dataset '%s': tensor '%s' is missing", path, higan__ds_names[k]);
        }
        if (t[k]->dtype != higan__ds_dtypes[k] || t[k]->ndim != (k == 0 ? 2 : 1)) {
            higan_status rc = higan__error(HIGAN_ERR_FORMAT, "dataset '%s': tensor '%s' is %s with %d dimensions, expected %s with %d",
                                           path, higan__ds_names[k], higan_dtype_name(t[k]->dtype), t[k]->ndim,
                                           higan_dtype_name(higan__ds_dtypes[k]), k == 0 ? 2 : 1);
            higan_safetensors_free(&st);
            return rc;
        }
    }
    if (t[0]->shape[0] != HIGAN_DATASET_HEIGHT) {
        higan_status rc = higan__error(HIGAN_ERR_FORMAT, "dataset '%s': imgs has height %lld, expected %d", path,
                                       (long long)t[0]->shape[0], HIGAN_DATASET_HEIGHT);
        higan_safetensors_free(&st);
        return rc;
    }
    count = t[1]->shape[0];
    for (k = 2; k < 7; ++k) {
        if (k == 3) continue;   /* lbs has total_chars entries */
        if (t[k]->shape[0] != count) {
            higan_status rc = higan__error(HIGAN_ERR_FORMAT, "dataset '%s': tensor '%s' has %lld entries but img_seek_idxs has %lld",
                                           path, higan__ds_names[k], (long long)t[k]->shape[0], (long long)count);
            higan_safetensors_free(&st);
            return rc;
        }
    }
    dst[0] = (void **)&ds->imgs; dst[1] = (void **)&ds->img_seek_idxs; dst[2] = (void **)&ds->img_lens;
    dst[3] = (void **)&ds->lbs; dst[4] = (void **)&ds->lb_seek_idxs; dst[5] = (void **)&ds->lb_lens;
    dst[6] = (void **)&ds->wids;
    ds->count = count;
    ds->total_width = t[0]->shape[1];
    ds->total_chars = t[3]->shape[0];
    /* small arrays: copies (safetensors data is little-endian, as every supported host) */
    for (k = 1; k < 7; ++k) {
        size_t bytes = t[k]->end - t[k]->begin;
        void *p = HIGAN_MALLOC(bytes ? bytes : 1);
        if (!p) {
            higan_safetensors_free(&st);
            higan_dataset_free(ds);
            return higan__error(HIGAN_ERR_NOMEM, "dataset '%s': out of memory", path);
        }
        if (bytes) memcpy(p, st.data + t[k]->begin, bytes);
        *dst[k] = p;
    }
    /* imgs (the bulk of the file): moved to the front of the file buffer, which we then own */
    {
        size_t bytes = t[0]->end - t[0]->begin;
        unsigned char *block = st.file, *q;
        memmove(block, st.data + t[0]->begin, bytes);
        st.file = NULL;
        q = (unsigned char *)HIGAN_REALLOC(block, bytes ? bytes : 1);
        ds->imgs = (uint8_t *)(q ? q : block);
    }
    higan_safetensors_free(&st);
    ds->capacity_cols = ds->total_width;
    ds->capacity_chars = ds->total_chars;
    ds->capacity_count = ds->count;
    if (higan__ds_validate(ds, path) != HIGAN_OK) {
        higan_dataset_free(ds);
        return HIGAN_ERR_FORMAT;
    }
    return HIGAN_OK;
}

/* ---- HDF5 (HiGAN+'s own files) ------------------------------------------------------------ */
#ifdef HIGAN_HDF5
/* Native memory types of the seven datasets, and a readable name of a file datatype. */
static hid_t higan__ds_h5_native(int k) {
    switch (higan__ds_dtypes[k]) {
    case HIGAN_U8: return H5T_NATIVE_UINT8;
    case HIGAN_I16: return H5T_NATIVE_INT16;
    case HIGAN_I32: return H5T_NATIVE_INT32;
    default: return H5T_NATIVE_INT64;
    }
}
static void higan__ds_h5_typename(hid_t type, char *out, size_t cap) {
    H5T_class_t cls = H5Tget_class(type);
    size_t sz = H5Tget_size(type);
    if (cls == H5T_INTEGER)
        snprintf(out, cap, "%s%d", H5Tget_sign(type) == H5T_SGN_NONE ? "uint" : "int", (int)(sz * 8));
    else if (cls == H5T_FLOAT) snprintf(out, cap, "float%d", (int)(sz * 8));
    else snprintf(out, cap, "a non-numeric type");
}
static higan_status higan__ds_load_h5(higan_dataset *ds, const char *path) {
    hid_t file = -1, dset = -1, space = -1, type = -1;
    H5E_auto2_t old_fn;
    void *old_data;
    void **dst[7];
    int64_t shape[7][2];
    int k;
    higan_status rc = HIGAN_OK;
    FILE *probe;
    H5Eget_auto2(H5E_DEFAULT, &old_fn, &old_data);
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);   /* our messages replace HDF5's stack dumps */
    dst[0] = (void **)&ds->imgs; dst[1] = (void **)&ds->img_seek_idxs; dst[2] = (void **)&ds->img_lens;
    dst[3] = (void **)&ds->lbs; dst[4] = (void **)&ds->lb_seek_idxs; dst[5] = (void **)&ds->lb_lens;
    dst[6] = (void **)&ds->wids;
    probe = fopen(path, "rb");
    if (!probe) { rc = higan__error(HIGAN_ERR_IO, "dataset '%s': cannot open: %s", path, strerror(errno)); goto done; }
    fclose(probe);
    file = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    if (file < 0) { rc = higan__error(HIGAN_ERR_FORMAT, "dataset '%s': not a readable HDF5 file (truncated or corrupt?)", path); goto done; }
    for (k = 0; k < 7; ++k) {
        int ndim, want = k == 0 ? 2 : 1, d;
        hsize_t dims[2] = {0, 0};
        size_t elem = higan_dtype_size(higan__ds_dtypes[k]);
        int64_t numel;
        char tn[32];
        if (H5Lexists(file, higan__ds_names[k], H5P_DEFAULT) <= 0) {
            rc = higan__error(HIGAN_ERR_FORMAT, "dataset '%s': HDF5 dataset '%s' is missing", path, higan__ds_names[k]);
            goto done;
        }
        dset = H5Dopen2(file, higan__ds_names[k], H5P_DEFAULT);
        if (dset < 0) { rc = higan__error(HIGAN_ERR_FORMAT, "dataset '%s': cannot open HDF5 dataset '%s'", path, higan__ds_names[k]); goto done; }
        space = H5Dget_space(dset);
        type = H5Dget_type(dset);
        ndim = space >= 0 ? H5Sget_simple_extent_ndims(space) : -1;
        higan__ds_h5_typename(type, tn, sizeof tn);
        if (type < 0 || H5Tget_class(type) != H5T_INTEGER || H5Tget_size(type) != elem ||
            (H5Tget_sign(type) == H5T_SGN_NONE) != (higan__ds_dtypes[k] == HIGAN_U8) || ndim != want) {
            rc = higan__error(HIGAN_ERR_FORMAT, "dataset '%s': HDF5 dataset '%s' is %s with %d dimensions, expected %s with %d",
                              path, higan__ds_names[k], tn, ndim, higan_dtype_name(higan__ds_dtypes[k]), want);
            goto done;
        }
        H5Sget_simple_extent_dims(space, dims, NULL);
        numel = 1;
        for (d = 0; d < want; ++d) { shape[k][d] = (int64_t)dims[d]; numel *= (int64_t)dims[d]; }
        if (k == 0 && shape[0][0] != HIGAN_DATASET_HEIGHT) {
            rc = higan__error(HIGAN_ERR_FORMAT, "dataset '%s': imgs has height %lld, expected %d", path,
                              (long long)shape[0][0], HIGAN_DATASET_HEIGHT);
            goto done;
        }
        if (k >= 2 && k != 3 && shape[k][0] != shape[1][0]) {
            rc = higan__error(HIGAN_ERR_FORMAT, "dataset '%s': HDF5 dataset '%s' has %lld entries but img_seek_idxs has %lld",
                              path, higan__ds_names[k], (long long)shape[k][0], (long long)shape[1][0]);
            goto done;
        }
        *dst[k] = HIGAN_MALLOC(numel ? (size_t)numel * elem : 1);
        if (!*dst[k]) { rc = higan__error(HIGAN_ERR_NOMEM, "dataset '%s': out of memory for '%s'", path, higan__ds_names[k]); goto done; }
        if (numel && H5Dread(dset, higan__ds_h5_native(k), H5S_ALL, H5S_ALL, H5P_DEFAULT, *dst[k]) < 0) {
            rc = higan__error(HIGAN_ERR_FORMAT, "dataset '%s': cannot read HDF5 dataset '%s' (truncated or corrupt?)",
                              path, higan__ds_names[k]);
            goto done;
        }
        H5Tclose(type); type = -1;
        H5Sclose(space); space = -1;
        H5Dclose(dset); dset = -1;
    }
    ds->count = shape[1][0];
    ds->total_width = shape[0][1];
    ds->total_chars = shape[3][0];
    ds->capacity_cols = ds->total_width;
    ds->capacity_chars = ds->total_chars;
    ds->capacity_count = ds->count;
    rc = higan__ds_validate(ds, path);
done:
    if (type >= 0) H5Tclose(type);
    if (space >= 0) H5Sclose(space);
    if (dset >= 0) H5Dclose(dset);
    if (file >= 0) H5Fclose(file);
    H5Eset_auto2(H5E_DEFAULT, old_fn, old_data);
    if (rc != HIGAN_OK) higan_dataset_free(ds);
    return rc;
}
/* Writes one dataset; imgs chunked and gzip level 4 as gen_h5file (h5py compression='gzip',
   compression_opts=4). */
static int higan__ds_h5_write(hid_t file, int k, int64_t d0, int64_t d1, const void *data) {
    hsize_t dims[2], chunk[2];
    hid_t space, dcpl = H5P_DEFAULT, dset;
    int ok, rank = k == 0 ? 2 : 1;
    static const char zero[8] = {0};
    dims[0] = (hsize_t)d0; dims[1] = (hsize_t)d1;
    space = H5Screate_simple(rank, dims, NULL);
    if (space < 0) return 0;
    if (k == 0) {
        dcpl = H5Pcreate(H5P_DATASET_CREATE);
        chunk[0] = HIGAN_DATASET_HEIGHT;
        chunk[1] = d1 < 1 ? 1 : d1 < 4096 ? (hsize_t)d1 : 4096;   /* 256 KiB chunks */
        if (dcpl < 0 || H5Pset_chunk(dcpl, 2, chunk) < 0 || H5Pset_deflate(dcpl, 4) < 0) {
            if (dcpl >= 0) H5Pclose(dcpl);
            H5Sclose(space);
            return 0;
        }
    }
    dset = H5Dcreate2(file, higan__ds_names[k], higan__ds_h5_native(k), space, H5P_DEFAULT, dcpl, H5P_DEFAULT);
    ok = dset >= 0;
    if (ok && d0 * (rank == 2 ? d1 : 1) > 0)
        ok = H5Dwrite(dset, higan__ds_h5_native(k), H5S_ALL, H5S_ALL, H5P_DEFAULT, data ? data : (const void *)zero) >= 0;
    if (dset >= 0) ok &= H5Dclose(dset) >= 0;
    if (dcpl != H5P_DEFAULT) H5Pclose(dcpl);
    H5Sclose(space);
    return ok;
}
static higan_status higan__ds_save_h5(const higan_dataset *ds, const char *path) {
    H5E_auto2_t old_fn;
    void *old_data;
    hid_t file;
    char *tmp;
    size_t n = strlen(path);
    uint8_t *packed = NULL;
    const uint8_t *imgs = ds->imgs;
    int ok;
    if (ds->capacity_cols != ds->total_width && ds->total_width > 0) {
        int64_t r;
        packed = (uint8_t *)HIGAN_MALLOC((size_t)ds->total_width * HIGAN_DATASET_HEIGHT);
        if (!packed) return higan__error(HIGAN_ERR_NOMEM, "dataset save '%s': out of memory", path);
        for (r = 0; r < HIGAN_DATASET_HEIGHT; ++r)
            memcpy(packed + r * ds->total_width, ds->imgs + r * ds->capacity_cols, (size_t)ds->total_width);
        imgs = packed;
    }
    tmp = (char *)HIGAN_MALLOC(n + 5);
    if (!tmp) { HIGAN_FREE(packed); return higan__error(HIGAN_ERR_NOMEM, "dataset save '%s': out of memory", path); }
    memcpy(tmp, path, n);
    memcpy(tmp + n, ".tmp", 5);
    H5Eget_auto2(H5E_DEFAULT, &old_fn, &old_data);
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    file = H5Fcreate(tmp, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    if (file < 0) {
        H5Eset_auto2(H5E_DEFAULT, old_fn, old_data);
        higan__error(HIGAN_ERR_IO, "cannot save '%s': cannot create '%s'", path, tmp);
        HIGAN_FREE(tmp); HIGAN_FREE(packed);
        return HIGAN_ERR_IO;
    }
    ok = higan__ds_h5_write(file, 0, HIGAN_DATASET_HEIGHT, ds->total_width, imgs) &&
         higan__ds_h5_write(file, 3, ds->total_chars, 0, ds->lbs) &&
         higan__ds_h5_write(file, 1, ds->count, 0, ds->img_seek_idxs) &&
         higan__ds_h5_write(file, 2, ds->count, 0, ds->img_lens) &&
         higan__ds_h5_write(file, 4, ds->count, 0, ds->lb_seek_idxs) &&
         higan__ds_h5_write(file, 5, ds->count, 0, ds->lb_lens) &&
         higan__ds_h5_write(file, 6, ds->count, 0, ds->wids);
    ok &= H5Fclose(file) >= 0;
    H5Eset_auto2(H5E_DEFAULT, old_fn, old_data);
    HIGAN_FREE(packed);
    if (!ok) {
        remove(tmp);
        higan__error(HIGAN_ERR_IO, "cannot save '%s': writing HDF5 '%s' failed (disk full?)", path, tmp);
        HIGAN_FREE(tmp);
        return HIGAN_ERR_IO;
    }
    if (rename(tmp, path) != 0) {
        int e = errno;
        remove(tmp);
        higan__error(HIGAN_ERR_IO, "cannot save '%s': cannot rename '%s' onto it: %s", path, tmp, strerror(e));
        HIGAN_FREE(tmp);
        return HIGAN_ERR_IO;
    }
    HIGAN_FREE(tmp);
    return HIGAN_OK;
}
#endif /* HIGAN_HDF5 */

HIGAN_DEF higan_status higan_dataset_save(const higan_dataset *ds, const char *path) {
    if (!ds || !path) return higan__error(HIGAN_ERR_ARG, "dataset_save: NULL argument");
    if (higan_dataset_is_hdf5_path(path)) {
#ifdef HIGAN_HDF5
        return higan__ds_save_h5(ds, path);
#else
        return higan__error(HIGAN_ERR_UNSUPPORTED, "dataset '%s': built without HDF5 support: rebuild with make HDF5=1 "
                            "(needs libhdf5-dev and pkg-config), or use a .safetensors path", path);
#endif
    }
    return higan__ds_save_st(ds, path);
}
HIGAN_DEF higan_status higan_dataset_load(higan_dataset *ds, const char *path) {
    if (!ds) return higan__error(HIGAN_ERR_ARG, "dataset_load: NULL argument");
    higan_dataset_init(ds);
    if (!path) return higan__error(HIGAN_ERR_ARG, "dataset_load: NULL path");
    if (higan_dataset_is_hdf5_path(path)) {
#ifdef HIGAN_HDF5
        return higan__ds_load_h5(ds, path);
#else
        return higan__error(HIGAN_ERR_UNSUPPORTED, "dataset '%s': built without HDF5 support: rebuild with make HDF5=1 "
                            "(needs libhdf5-dev and pkg-config), or convert it with h5convert on a machine that has it",
                            path);
#endif
    }
    return higan__ds_load_st(ds, path);
}
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
/* The passes take void pointers so that one driver (higan__resize_pil) serves both types.
   Horizontal pass: out [h, ow] <- in [h, ..] (row stride is). */
typedef void (*higan__pil_pass)(void *out, int64_t n_out, int64_t n_other, const void *in, int64_t is,
                                const higan__pil_axis *a);
static void higan__pil_h_u8(void *out_, int64_t ow, int64_t h, const void *in_, int64_t is, const higan__pil_axis *a) {
    uint8_t *out = (uint8_t *)out_;
    const uint8_t *in = (const uint8_t *)in_;
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
static void higan__pil_v_u8(void *out_, int64_t oh, int64_t w, const void *in_, int64_t is, const higan__pil_axis *a) {
    uint8_t *out = (uint8_t *)out_;
    const uint8_t *in = (const uint8_t *)in_;
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
static void higan__pil_h_f32(void *out_, int64_t ow, int64_t h, const void *in_, int64_t is, const higan__pil_axis *a) {
    float *out = (float *)out_;
    const float *in = (const float *)in_;
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
static void higan__pil_v_f32(void *out_, int64_t oh, int64_t w, const void *in_, int64_t is, const higan__pil_axis *a) {
    float *out = (float *)out_;
    const float *in = (const float *)in_;
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
/* PIL's order: the horizontal pass first (into a [sh, dw] temporary), then the vertical one. */
static higan_status higan__resize_pil(void *dst, int64_t dw, int64_t dh, const void *src, int64_t sw, int64_t sh,
                                      int64_t src_stride, higan_pil_filter filter, higan_arena *scratch,
                                      size_t elem, higan__pil_pass hpass, higan__pil_pass vpass) {
    higan__pil_axis ax, ay;
    int horiz = dw != sw, vert = dh != sh;
    size_t mark;
    int64_t y;
    void *tmp = NULL;
    HIGAN_ASSERT(dst && src && dw > 0 && dh > 0 && sw > 0 && sh > 0 && src_stride >= sw);
    HIGAN_ASSERT(filter == HIGAN_PIL_BILINEAR || filter == HIGAN_PIL_LANCZOS);
    if (!horiz && !vert) {                                   /* PIL copies */
        for (y = 0; y < sh; ++y)
            memcpy((char *)dst + (size_t)(y * dw) * elem, (const char *)src + (size_t)(y * src_stride) * elem, elem * (size_t)sw);
        return HIGAN_OK;
    }
    HIGAN_ASSERT(scratch);
    mark = higan_arena_mark(scratch);
    if ((horiz && !higan__pil_coeffs(&ax, sw, dw, filter, scratch)) ||
        (vert && !higan__pil_coeffs(&ay, sh, dh, filter, scratch)) ||
        (horiz && vert && !(tmp = higan_arena_alloc(scratch, sizeof(float) * (size_t)(sh * dw))))) {
        higan_arena_release(scratch, mark);
        return higan__error(HIGAN_ERR_NOMEM, "resize_pil: scratch arena too small (needs %zu bytes)",
                            higan_resize_pil_scratch_bytes(dw, dh, sw, sh, filter));
    }
    if (horiz && vert) {
        hpass(tmp, dw, sh, src, src_stride, &ax);
        vpass(dst, dh, dw, tmp, dw, &ay);
    } else if (horiz) hpass(dst, dw, sh, src, src_stride, &ax);
    else vpass(dst, dh, dw, src, src_stride, &ay);
    higan_arena_release(scratch, mark);
    return HIGAN_OK;
}
HIGAN_DEF higan_status higan_resize_pil(uint8_t *dst, int64_t dw, int64_t dh,
                                        const uint8_t *src, int64_t sw, int64_t sh, int64_t src_stride,
                                        higan_pil_filter filter, higan_arena *scratch) {
    return higan__resize_pil(dst, dw, dh, src, sw, sh, src_stride, filter, scratch, 1, higan__pil_h_u8, higan__pil_v_u8);
}
HIGAN_DEF higan_status higan_resize_pil_f32(float *dst, int64_t dw, int64_t dh,
                                            const float *src, int64_t sw, int64_t sh, int64_t src_stride,
                                            higan_pil_filter filter, higan_arena *scratch) {
    return higan__resize_pil(dst, dw, dh, src, sw, sh, src_stride, filter, scratch, sizeof(float), higan__pil_h_f32,
                             higan__pil_v_f32);
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
/* ==== BIGGAN-SIDE NETWORKS (implementation) ================================================
   Pure composition of the tested tape ops (spectral norm, linear, conv2d, (conditional)
   batch norm, embedding, upsample, avg pool, concat, permute, masked width sum) plus three
   small ops of this part: the all-patches extractor (public) and two private helpers, the
   generator's eval mask (columns beyond the text set to -1) and the division of D's pooled
   features by the character counts. */

/* "<prefix>.<suffix>", or "<suffix>" for an empty prefix. */
static void higan__bg_name(char *buf, const char *prefix, const char *suffix) {
    int n;
    if (!prefix) prefix = "";
    n = snprintf(buf, HIGAN_MAX_NAME, "%s%s%s", prefix, *prefix ? "." : "", suffix);
    HIGAN_ASSERT(n > 0 && n < HIGAN_MAX_NAME && "parameter name too long");
}

/* ---- init helpers (N02 as networks/utils.py:init_weights, PyTorch default biases) -------- */
static void higan__bg_fill(higan_params *p, int h, float v) {
    float *d = higan_params_data(p, h);
    int64_t i, n = p->entries[h].numel;
    for (i = 0; i < n; ++i) d[i] = v;
}
static void higan__bg_normal(higan_params *p, int h, higan_rng *r, float std) {
    higan_rng_fill_normal(r, higan_params_data(p, h), p->entries[h].numel, 0.0f, std);
}
/* weight N(0, 0.02); bias U(-1/sqrt(fan_in), 1/sqrt(fan_in)); u0 N(0, 1); sv0 1 */
static void higan__bg_sn_init(higan_params *p, int weight, int bias, int u0, int sv0,
                              int64_t fan_in, higan_rng *r) {
    higan__bg_normal(p, weight, r, 0.02f);
    if (bias >= 0) {
        float bound = (float)(1.0 / sqrt((double)fan_in));
        higan_rng_fill_uniform(r, higan_params_data(p, bias), p->entries[bias].numel, -bound, bound);
    }
    higan__bg_normal(p, u0, r, 1.0f);
    higan__bg_fill(p, sv0, 1.0f);
}
static void higan__bg_sn_linear_init(const higan_sn_linear *m, higan_rng *r) {
    higan__bg_sn_init(m->p, m->weight, m->bias, m->u0, m->sv0, m->in, r);
}
static void higan__bg_sn_conv_init(const higan_sn_conv2d *m, higan_rng *r) {
    higan__bg_sn_init(m->p, m->weight, m->bias, m->u0, m->sv0, m->in * m->k * m->k, r);
}
static void higan__bg_ccbn_init(const higan_ccbn *m, higan_rng *r) {
    higan__bg_fill(m->p, m->stored_mean, 0.0f);
    higan__bg_fill(m->p, m->stored_var, 1.0f);
    higan__bg_sn_linear_init(&m->gain, r);
    higan__bg_sn_linear_init(&m->bias, r);
}

/* ---- SNLinear / SNConv2d ------------------------------------------------------------------ */
static void higan__bg_sn_buffers(higan_params *p, const char *prefix, int64_t out, int *u0, int *sv0) {
    char name[HIGAN_MAX_NAME];
    int64_t s[2];
    s[0] = 1; s[1] = out;
    higan__bg_name(name, prefix, "u0");
    *u0 = higan_params_add(p, name, HIGAN_BUFFER, 2, s);
    higan__bg_name(name, prefix, "sv0");
    *sv0 = higan_params_add(p, name, HIGAN_BUFFER, 1, s);   /* [1] */
}

HIGAN_DEF void higan_sn_linear_register(higan_sn_linear *m, higan_params *p, const char *prefix,
                                        int64_t in, int64_t out, int bias) {
    char name[HIGAN_MAX_NAME];
    int64_t s[2];
    m->p = p; m->in = in; m->out = out; m->bias = -1;
    s[0] = out; s[1] = in;
    higan__bg_name(name, prefix, "weight");
    m->weight = higan_params_add(p, name, HIGAN_PARAM, 2, s);
    if (bias) {
        higan__bg_name(name, prefix, "bias");
        m->bias = higan_params_add(p, name, HIGAN_PARAM, 1, &out);
    }
    higan__bg_sn_buffers(p, prefix, out, &m->u0, &m->sv0);
}

/* The weight divided by sigma (one power step from u0; u0/sv0 updated when train). */
static higan_var *higan__bg_sn_weight(higan_tape *t, higan_params *p, int weight, int u0, int sv0,
                                      int64_t out, int train) {
    return higan_spectral_norm(t, higan_param_var(t, p, weight), higan__tape_params_data(t, p, u0),
                               higan__tape_params_data(t, p, sv0), out, train);
}

HIGAN_DEF higan_var *higan_sn_linear_forward(higan_tape *t, const higan_sn_linear *m,
                                             higan_var *x, int train) {
    higan_var *w, *b = NULL;
    if (!x) return NULL;
    HIGAN_ASSERT(x->shape[x->ndim - 1] == m->in);
    if (!(w = higan__bg_sn_weight(t, m->p, m->weight, m->u0, m->sv0, m->out, train))) return NULL;
    if (m->bias >= 0 && !(b = higan_param_var(t, m->p, m->bias))) return NULL;
    return higan_linear(t, x, w, b);
}

HIGAN_DEF void higan_sn_conv2d_register(higan_sn_conv2d *m, higan_params *p, const char *prefix,
                                        int64_t in, int64_t out, int64_t k, int64_t pad, int bias) {
    char name[HIGAN_MAX_NAME];
    int64_t s[4];
    m->p = p; m->in = in; m->out = out; m->k = k; m->pad = pad; m->bias = -1;
    s[0] = out; s[1] = in; s[2] = k; s[3] = k;
    higan__bg_name(name, prefix, "weight");
    m->weight = higan_params_add(p, name, HIGAN_PARAM, 4, s);
    if (bias) {
        higan__bg_name(name, prefix, "bias");
        m->bias = higan_params_add(p, name, HIGAN_PARAM, 1, &out);
    }
    higan__bg_sn_buffers(p, prefix, out, &m->u0, &m->sv0);
}

HIGAN_DEF higan_var *higan_sn_conv2d_forward(higan_tape *t, const higan_sn_conv2d *m,
                                             higan_var *x, int train) {
    higan_var *w, *b = NULL;
    if (!x) return NULL;
    HIGAN_ASSERT(x->ndim == 4 && x->shape[1] == m->in);
    if (!(w = higan__bg_sn_weight(t, m->p, m->weight, m->u0, m->sv0, m->out, train))) return NULL;
    if (m->bias >= 0 && !(b = higan_param_var(t, m->p, m->bias))) return NULL;
    return higan_conv2d(t, x, w, b, 1, 1, m->pad, m->pad, m->pad, m->pad);
}

/* ---- ccbn / bn ---------------------------------------------------------------------------- */
HIGAN_DEF void higan_ccbn_register(higan_ccbn *m, higan_params *p, const char *prefix,
                                   int64_t C, int64_t y_dim) {
    char name[HIGAN_MAX_NAME];
    m->p = p; m->C = C;
    /* state_dict order: own buffers first, then the gain and bias children */
    higan__bg_name(name, prefix, "stored_mean");
    m->stored_mean = higan_params_add(p, name, HIGAN_BUFFER, 1, &C);
    higan__bg_name(name, prefix, "stored_var");
    m->stored_var = higan_params_add(p, name, HIGAN_BUFFER, 1, &C);
    higan__bg_name(name, prefix, "gain");
    higan_sn_linear_register(&m->gain, p, name, y_dim, C, 0);
    higan__bg_name(name, prefix, "bias");
    higan_sn_linear_register(&m->bias, p, name, y_dim, C, 0);
}

HIGAN_DEF higan_var *higan_ccbn_forward(higan_tape *t, const higan_ccbn *m, higan_var *x,
                                        higan_var *y, int train) {
    higan_var *gain, *bias;
    if (!x || !y) return NULL;
    HIGAN_ASSERT(x->ndim >= 2 && x->shape[1] == m->C && y->shape[0] == x->shape[0]);
    gain = higan_sn_linear_forward(t, &m->gain, y, train);   /* the op adds the 1 */
    bias = higan_sn_linear_forward(t, &m->bias, y, train);
    return higan_cond_batch_norm(t, x, gain, bias, higan__tape_params_data(t, m->p, m->stored_mean),
                                 higan__tape_params_data(t, m->p, m->stored_var), 0.1f, 1e-5f, train);
}

HIGAN_DEF void higan_bn_out_register(higan_bn_out *m, higan_params *p, const char *prefix, int64_t C) {
    char name[HIGAN_MAX_NAME];
    m->p = p; m->C = C;
    higan__bg_name(name, prefix, "gain");
    m->gain = higan_params_add(p, name, HIGAN_PARAM, 1, &C);
    higan__bg_name(name, prefix, "bias");
    m->bias = higan_params_add(p, name, HIGAN_PARAM, 1, &C);
    higan__bg_name(name, prefix, "stored_mean");
    m->stored_mean = higan_params_add(p, name, HIGAN_BUFFER, 1, &C);
    higan__bg_name(name, prefix, "stored_var");
    m->stored_var = higan_params_add(p, name, HIGAN_BUFFER, 1, &C);
}

HIGAN_DEF higan_var *higan_bn_out_forward(higan_tape *t, const higan_bn_out *m, higan_var *x,
                                          int train) {
    higan_var *gain, *bias;
    if (!x) return NULL;
    HIGAN_ASSERT(x->ndim >= 2 && x->shape[1] == m->C);
    if (!(gain = higan_param_var(t, m->p, m->gain)) || !(bias = higan_param_var(t, m->p, m->bias)))
        return NULL;
    return higan_batch_norm2d(t, x, gain, bias, higan__tape_params_data(t, m->p, m->stored_mean),
                              higan__tape_params_data(t, m->p, m->stored_var), NULL, 0.1f, 1e-5f, train);
}

/* ---- GBlock / DBlock ---------------------------------------------------------------------- */
HIGAN_DEF void higan_gblock_register(higan_gblock *b, higan_params *p, const char *prefix,
                                     int64_t in, int64_t out, int up_h, int up_w, int64_t y_dim) {
    char name[HIGAN_MAX_NAME];
    b->up_h = up_h; b->up_w = up_w;
    b->has_sc = in != out || up_h != 1 || up_w != 1;
    /* state_dict order of BigGAN_layers.GBlock: conv1, conv2, conv_sc, bn1, bn2 */
    higan__bg_name(name, prefix, "conv1");
    higan_sn_conv2d_register(&b->conv1, p, name, in, out, 3, 1, 1);
    higan__bg_name(name, prefix, "conv2");
    higan_sn_conv2d_register(&b->conv2, p, name, out, out, 3, 1, 1);
    if (b->has_sc) {
        higan__bg_name(name, prefix, "conv_sc");
        higan_sn_conv2d_register(&b->conv_sc, p, name, in, out, 1, 0, 1);
    }
    higan__bg_name(name, prefix, "bn1");
    higan_ccbn_register(&b->bn1, p, name, in, y_dim);
    higan__bg_name(name, prefix, "bn2");
    higan_ccbn_register(&b->bn2, p, name, out, y_dim);
}

HIGAN_DEF higan_var *higan_gblock_forward(higan_tape *t, const higan_gblock *b, higan_var *x,
                                          higan_var *y, int train) {
    /* Memory: the batch norms' outputs are rectified in place (their backward reads their
       input), and the two conv outputs go back to the arena once added (no backward reads
       them). */
    higan_var *h, *sc = x, *out;
    int up = b->up_h != 1 || b->up_w != 1;
    h = higan__relu_inplace(t, higan_ccbn_forward(t, &b->bn1, x, y, train));
    if (up && !train && h && !t->be->device) {
        /* eval: conv1(up(h)) in one op (higan_upsample_conv2d: the upsampling folded into the
           weights, 2.25x fewer multiplies for 2x2; the per-word eval forward does the same,
           so that its columns equal these bit for bit) */
        const higan_sn_conv2d *m = &b->conv1;
        higan_var *w = higan__bg_sn_weight(t, m->p, m->weight, m->u0, m->sv0, m->out, train), *bias = NULL;
        if (!w || (m->bias >= 0 && !(bias = higan_param_var(t, m->p, m->bias)))) return NULL;
        h = higan_upsample_conv2d(t, h, w, bias, b->up_h, b->up_w, m->pad, m->pad, m->pad, m->pad);
        sc = higan_upsample_nearest(t, x, b->up_h, b->up_w);
    } else {
        if (up) {
            h = higan_upsample_nearest(t, h, b->up_h, b->up_w);
            sc = higan_upsample_nearest(t, x, b->up_h, b->up_w);
        }
        h = higan_sn_conv2d_forward(t, &b->conv1, h, train);
    }
    h = higan__relu_inplace(t, higan_ccbn_forward(t, &b->bn2, h, y, train));
    h = higan_sn_conv2d_forward(t, &b->conv2, h, train);
    if (b->has_sc) sc = higan_sn_conv2d_forward(t, &b->conv_sc, sc, train);
    out = higan_add(t, h, sc);
    if (out) {
        higan__var_drop(t, h);
        if (b->has_sc) higan__var_drop(t, sc);
    }
    return out;
}

HIGAN_DEF void higan_dblock_register(higan_dblock *b, higan_params *p, const char *prefix,
                                     int64_t in, int64_t out, int preact, int down) {
    char name[HIGAN_MAX_NAME];
    b->preact = preact; b->down = down;
    b->has_sc = in != out || down;
    higan__bg_name(name, prefix, "conv1");
    higan_sn_conv2d_register(&b->conv1, p, name, in, out, 3, 1, 1);   /* wide: hidden = out */
    higan__bg_name(name, prefix, "conv2");
    higan_sn_conv2d_register(&b->conv2, p, name, out, out, 3, 1, 1);
    if (b->has_sc) {
        higan__bg_name(name, prefix, "conv_sc");
        higan_sn_conv2d_register(&b->conv_sc, p, name, in, out, 1, 0, 1);
    }
}

HIGAN_DEF higan_var *higan_dblock_forward(higan_tape *t, const higan_dblock *b, higan_var *x,
                                          int train) {
    /* Memory (the patch discriminator runs this on every 32x32 window): conv1's output is
       rectified in place, and the values that no backward reads (what pooling and add take
       in: their backward needs shapes only) go back to the arena as soon as they are used. */
    higan_var *h, *h2, *sc = x, *sc1 = NULL, *y;
    h = b->preact ? higan_relu(t, x) : x;
    h = higan_sn_conv2d_forward(t, &b->conv1, h, train);
    h = higan_sn_conv2d_forward(t, &b->conv2, higan__relu_inplace(t, h), train);
    h2 = b->down ? higan_avg_pool2(t, h) : h;
    if (h2 != h) higan__var_drop(t, h);
    if (b->preact) {   /* preactivated blocks: conv_sc, then pool; the first block: the reverse */
        if (b->has_sc) sc = sc1 = higan_sn_conv2d_forward(t, &b->conv_sc, sc, train);
        if (b->down) sc = higan_avg_pool2(t, sc);
        if (sc1 && sc != sc1) higan__var_drop(t, sc1);
    } else {
        if (b->down) sc = higan_avg_pool2(t, sc);
        if (b->has_sc) sc = higan_sn_conv2d_forward(t, &b->conv_sc, sc, train);
    }
    y = higan_add(t, h2, sc);
    if (y) {
        higan__var_drop(t, h2);
        if (sc != x) higan__var_drop(t, sc);
    }
    return y;
}

/* ---- private op: set columns w >= lens[n] to a constant (G's eval mask) -------------------
   x, y [N, C, H, W]; lens [N]. y = x * mask + (mask - 1) with mask = (w < lens[n]), which
   is x inside and -1 outside for value -1; gradient dy * mask. */
static void higan__bg_mask_width_forward(float *y, const float *x, const int *lens, float value,
                                         int64_t N, int64_t C, int64_t H, int64_t W) {
    int64_t p;
    HIGAN__PARALLEL_FOR_IF(N * C * H * W > ((int64_t)1 << 15))
    for (p = 0; p < N * C * H; ++p) {
        int64_t n = p / (C * H), w;
        const float *xr = x + p * W;
        float *yr = y + p * W;
        for (w = 0; w < W; ++w) yr[w] = w < (int64_t)lens[n] ? xr[w] : value;
    }
}
static void higan__bg_mask_width_backward(float *dx, const float *dy, const int *lens,
                                          int64_t N, int64_t C, int64_t H, int64_t W) {
    int64_t p;
    HIGAN__PARALLEL_FOR_IF(N * C * H * W > ((int64_t)1 << 15))
    for (p = 0; p < N * C * H; ++p) {
        int64_t n = p / (C * H), w, wv = (int64_t)lens[n] < W ? (int64_t)lens[n] : W;
        const float *dr = dy + p * W;
        float *xr = dx + p * W;
        for (w = 0; w < wv; ++w) xr[w] += dr[w];
    }
}
typedef struct { higan_var *x, *y; int *lens; } higan__bg_lens_ctx;
static void higan__bg_mask_width_backward_op(higan_tape *t, void *p) {
    higan__bg_lens_ctx *c = (higan__bg_lens_ctx *)p;
    float *dx = higan_var_grad(t, c->x);
    if (dx) t->be->mask_width_backward(t->be->ctx, dx, c->y->grad, c->lens, c->x->shape[0], c->x->shape[1],
                                       c->x->shape[2], c->x->shape[3]);
}
static int *higan__bg_copy_lens(higan_tape *t, const int *lens, int64_t n) {
    int *c = (int *)higan_arena_alloc(t->arena, sizeof(int) * (size_t)(n ? n : 1));
    if (c) memcpy(c, lens, sizeof(int) * (size_t)n);
    return c;
}
static higan_var *higan__bg_mask_width(higan_tape *t, higan_var *x, const int *lens, float value) {
    higan_var *y;
    higan__bg_lens_ctx *c;
    if (!x) return NULL;
    HIGAN_ASSERT(x->ndim == 4);
    if (!(y = higan_op_output(t, 4, x->shape, &x, 1))) return NULL;
    {
        const int *dl = higan__tape_ints(t, lens, x->shape[0]);
        if (!dl) return NULL;
        t->be->mask_width_forward(t->be->ctx, y->data, x->data, dl, value, x->shape[0], x->shape[1],
                                  x->shape[2], x->shape[3]);
        if (y->requires_grad) {   /* a device keeps its uploaded copy; the CPU copies lens */
            if (!(c = (higan__bg_lens_ctx *)higan_tape_ctx(t, sizeof *c))) return NULL;
            c->lens = t->be->device ? (int *)dl : higan__bg_copy_lens(t, lens, x->shape[0]);
            if (!c->lens) return NULL;
            c->x = x; c->y = y;
            higan_tape_record(t, y, higan__bg_mask_width_backward_op, c);
        }
    }
    return y;
}

/* ---- private op: y [N, C] = x [N, C] / den[n] (true division, as h / y_lens) -------------- */
static void higan__bg_div_rows_backward_op(higan_tape *t, void *p) {
    higan__bg_lens_ctx *c = (higan__bg_lens_ctx *)p;
    float *dx = higan_var_grad(t, c->x);
    int64_t n, k, C = c->x->shape[1];
    if (!dx) return;
    for (n = 0; n < c->x->shape[0]; ++n)
        for (k = 0; k < C; ++k) dx[n * C + k] += c->y->grad[n * C + k] / (float)c->lens[n];
}
static higan_var *higan__bg_div_rows(higan_tape *t, higan_var *x, const int *den) {
    higan_var *y;
    higan__bg_lens_ctx *c;
    int64_t n, k, C;
    if (!x) return NULL;
    HIGAN_ASSERT(x->ndim == 2);
    C = x->shape[1];
    if (!(y = higan_op_output(t, 2, x->shape, &x, 1))) return NULL;
    for (n = 0; n < x->shape[0]; ++n)
        for (k = 0; k < C; ++k) y->data[n * C + k] = x->data[n * C + k] / (float)den[n];
    if (y->requires_grad) {
        if (!(c = (higan__bg_lens_ctx *)higan_tape_ctx(t, sizeof *c))) return NULL;
        if (!(c->lens = higan__bg_copy_lens(t, den, x->shape[0]))) return NULL;
        c->x = x; c->y = y;
        higan_tape_record(t, y, higan__bg_div_rows_backward_op, c);
    }
    return y;
}

/* ---- Generator ---------------------------------------------------------------------------- */
HIGAN_DEF higan_generator_config higan_generator_default_config(void) {
    higan_generator_config c;
    c.ch = 64; c.style_dim = 32; c.embed_dim = 120; c.n_class = 80; c.bottom = 4; c.input_nc = 1;
    return c;
}

HIGAN_DEF void higan_generator_register(higan_generator *g, higan_params *p, const char *prefix,
                                        const higan_generator_config *cfg) {
    static const int up_h[4] = {2, 2, 2, 2}, up_w[4] = {1, 2, 2, 2};
    static const int in_mult[4] = {8, 4, 2, 1}, out_mult[4] = {4, 2, 1, 1};
    char name[HIGAN_MAX_NAME], sub[HIGAN_MAX_NAME];
    int64_t s[2], ch, zd;
    int i;
    g->cfg = cfg ? *cfg : higan_generator_default_config();
    g->p = p;
    g->eval_full_width = 0;
    ch = g->cfg.ch; zd = g->cfg.style_dim;
    HIGAN_ASSERT(ch > 0 && zd > 0 && g->cfg.embed_dim > 0 && g->cfg.n_class > 0 && g->cfg.bottom > 0);
    s[0] = g->cfg.n_class; s[1] = g->cfg.embed_dim;
    higan__bg_name(name, prefix, "text_embedding.weight");
    g->text_embedding = higan_params_add(p, name, HIGAN_PARAM, 2, s);
    higan__bg_name(name, prefix, "filter_linear");
    higan_sn_linear_register(&g->filter_linear, p, name, zd + g->cfg.embed_dim,
                             8 * ch * g->cfg.bottom * g->cfg.bottom, 1);
    higan__bg_name(name, prefix, "style_linear");
    higan_sn_linear_register(&g->style_linear, p, name, zd, 4 * zd, 1);
    for (i = 0; i < 4; ++i) {
        snprintf(sub, sizeof sub, "blocks.%d.0", i);
        higan__bg_name(name, prefix, sub);
        higan_gblock_register(&g->blocks[i], p, name, in_mult[i] * ch, out_mult[i] * ch,
                              up_h[i], up_w[i], zd);
    }
    higan__bg_name(name, prefix, "output_layer.0");
    higan_bn_out_register(&g->out_bn, p, name, ch);
    higan__bg_name(name, prefix, "output_layer.2");
    higan_sn_conv2d_register(&g->out_conv, p, name, ch, g->cfg.input_nc, 3, 1, 1);
}

HIGAN_DEF void higan_generator_init(higan_generator *g, higan_rng *rng) {
    int i;
    higan__bg_normal(g->p, g->text_embedding, rng, 0.02f);   /* padding row too, as N02 did */
    higan__bg_sn_linear_init(&g->filter_linear, rng);
    higan__bg_sn_linear_init(&g->style_linear, rng);
    for (i = 0; i < 4; ++i) {
        const higan_gblock *b = &g->blocks[i];
        higan__bg_sn_conv_init(&b->conv1, rng);
        higan__bg_sn_conv_init(&b->conv2, rng);
        if (b->has_sc) higan__bg_sn_conv_init(&b->conv_sc, rng);
        higan__bg_ccbn_init(&b->bn1, rng);
        higan__bg_ccbn_init(&b->bn2, rng);
    }
    higan__bg_fill(g->p, g->out_bn.gain, 1.0f);
    higan__bg_fill(g->p, g->out_bn.bias, 0.0f);
    higan__bg_fill(g->p, g->out_bn.stored_mean, 0.0f);
    higan__bg_fill(g->p, g->out_bn.stored_var, 1.0f);
    higan__bg_sn_conv_init(&g->out_conv, rng);
}

/* Spectrally normalised weights of an eval forward, computed once and shared by every
   forward of one call (sigma depends only on the weight and u0, which eval leaves alone:
   the same numbers each time, and in a 1-character forward the power iterations are about
   a third of the time). */
typedef struct { higan_var *w, *b; } higan__gen_lin;
typedef struct higan__gen_weights {
    higan__gen_lin style, filter, out;
    higan__gen_lin conv1[4], conv2[4], conv_sc[4], bn1_gain[4], bn1_bias[4], bn2_gain[4], bn2_bias[4];
    float *up1[4];   /* conv1's summed phase weights (higan_conv2d_upsampled_weights) */
} higan__gen_weights;
static int higan__gen_lin_get(higan_tape *t, higan_params *p, int weight, int bias, int u0, int sv0,
                              int64_t out, higan__gen_lin *l) {
    l->w = higan__bg_sn_weight(t, p, weight, u0, sv0, out, 0);
    l->b = bias >= 0 ? higan_param_var(t, p, bias) : NULL;
    return l->w && (bias < 0 || l->b);
}
#define HIGAN__GEN_LIN(t, m, l) higan__gen_lin_get(t, (m)->p, (m)->weight, (m)->bias, (m)->u0, (m)->sv0, (m)->out, l)
static int higan__gen_weights_eval(higan_tape *t, const higan_generator *g, higan__gen_weights *W) {
    int i, ok = HIGAN__GEN_LIN(t, &g->style_linear, &W->style) && HIGAN__GEN_LIN(t, &g->filter_linear, &W->filter) &&
                HIGAN__GEN_LIN(t, &g->out_conv, &W->out);
    for (i = 0; i < 4 && ok; ++i) {
        const higan_gblock *b = &g->blocks[i];
        ok = HIGAN__GEN_LIN(t, &b->conv1, &W->conv1[i]) && HIGAN__GEN_LIN(t, &b->conv2, &W->conv2[i]) &&
             (!b->has_sc || HIGAN__GEN_LIN(t, &b->conv_sc, &W->conv_sc[i])) &&
             HIGAN__GEN_LIN(t, &b->bn1.gain, &W->bn1_gain[i]) && HIGAN__GEN_LIN(t, &b->bn1.bias, &W->bn1_bias[i]) &&
             HIGAN__GEN_LIN(t, &b->bn2.gain, &W->bn2_gain[i]) && HIGAN__GEN_LIN(t, &b->bn2.bias, &W->bn2_bias[i]);
        W->up1[i] = NULL;
        if (ok && (b->up_h != 1 || b->up_w != 1)) {
            const higan_sn_conv2d *m = &b->conv1;
            W->up1[i] = higan_arena_floats(t->arena, higan_conv2d_upsampled_weights_size(m->out, m->in, m->k, m->k,
                                                                                           m->pad, m->pad, b->up_h, b->up_w));
            ok = W->up1[i] != NULL;
            if (ok)
                higan_conv2d_upsampled_weights(W->up1[i], W->conv1[i].w->data, m->out, m->in, m->k, m->k, m->pad, m->pad,
                                               b->up_h, b->up_w);
        }
    }
    return ok;
}

/* The stem: ys[4] = style_linear(z) chunks, and h [B, 8ch, bottom, bottom*L] =
   filter_linear([z per character || embedding]) laid out as the official view/permute.
   W: cached eval weights (NULL: the modules compute theirs); with W the embedding rows are
   not renormalised here: the caller did it once for all its forwards (higan__gen_renorm). */
static higan_var *higan__gen_stem(higan_tape *t, const higan_generator *g, const higan__gen_weights *W,
                                  higan_var *z, const int *labels, int64_t L, int train, higan_var **ys) {
    const higan_generator_config *cf = &g->cfg;
    higan_var *emb, *zs, *cat[2], *h, **reps;
    int64_t B, zd = cf->style_dim, E = cf->embed_dim, bt = cf->bottom, C0 = 8 * cf->ch;
    int64_t s[4], sizes[4], i;
    int perm[4];
    B = z->shape[0];
    /* ys = style_linear(z).split(style_dim): chunk i drives block i's bn1 and bn2 */
    for (i = 0; i < 4; ++i) sizes[i] = zd;
    h = W ? higan_linear(t, z, W->style.w, W->style.b) : higan_sn_linear_forward(t, &g->style_linear, z, train);
    if (higan_split(t, h, 1, 4, sizes, ys) != HIGAN_OK) return NULL;
    /* text embedding (max_norm 1: looked-up rows renormalised in place, padding row 0) */
    emb = higan_embedding(t, higan_param_var(t, g->p, g->text_embedding), labels, B * L, 0, W ? 0.0f : 1.0f);
    s[0] = B; s[1] = L; s[2] = E;
    emb = higan_reshape(t, emb, 3, s);
    /* [z repeated per character || embedding] -> [B, L, zd + E] */
    s[0] = B; s[1] = 1; s[2] = zd;
    zs = higan_reshape(t, z, 3, s);
    if (L > 1 && zs) {
        if (!(reps = (higan_var **)higan_arena_alloc(t->arena, sizeof(higan_var *) * (size_t)L)))
            return NULL;
        for (i = 0; i < L; ++i) reps[i] = zs;
        zs = higan_concat(t, reps, (int)L, 1);
    }
    cat[0] = zs; cat[1] = emb;
    h = higan_concat(t, cat, 2, 2);
    h = W ? higan_linear(t, h, W->filter.w, W->filter.b) : higan_sn_linear_forward(t, &g->filter_linear, h, train);
    /* view(B, L*bottom, bottom, C0).permute(0, 3, 2, 1) -> [B, C0, bottom, L*bottom] */
    s[0] = B; s[1] = L * bt; s[2] = bt; s[3] = C0;
    h = higan_reshape(t, h, 4, s);
    perm[0] = 0; perm[1] = 3; perm[2] = 2; perm[3] = 1;
    return higan_permute(t, h, perm);
}

/* ---- eval at a word's own width -----------------------------------------------------------
   Receptive field, in columns, of the first n output columns (exact, stride-1 convs and
   nearest upsampling only; eval BatchNorm, ReLU, tanh and the ccbn are per pixel, and
   filter_linear maps character l to the bottom columns [bottom*l, bottom*(l+1)) alone):
     a k x k conv with padding p reads, for output column j, input columns up to
       j + k - 1 - p: n outputs need n + (k - 1 - p) inputs (3x3 pad 1: n + 1);
     nearest upsampling by u: n outputs need ceil(n / u) inputs;
     a GBlock: conv2(conv1(up(.))) needs ceil((n + 2) / u) input columns; its shortcut
       conv_sc(up(x)) (1x1) only ceil(n / u) of them.
   need[4] = columns of the output conv's input, need[i] = columns of block i's input.
   Official configuration (bottom 4, up_w 1, 2, 2, 2), a word of len characters whose
   32 * len output columns are kept:
     output conv input   32 len + 1                 (32 px a character at the output)
     block 3 input       ceil((32 len + 3) / 2) = 16 len + 2
     block 2 input       ceil((16 len + 4) / 2) =  8 len + 2
     block 1 input       ceil(( 8 len + 4) / 2) =  4 len + 2
     block 0 input       4 len + 2 + 2          =  4 len + 4 = 4 (len + 1)
   so the valid columns depend on the word's characters and exactly one more (the first pad
   symbol, label 0): the margin is 1 character. In general block 0 needs bottom * len + 4
   columns, a margin of ceil(4 / bottom) characters, for every len. Zero padding at the
   right edge of a narrower computation is never read by the kept columns, so they equal the
   padded batch's (the left edge is the same in both). */
static void higan__gen_needs(const higan_generator *g, int64_t out_cols, int64_t need[5]) {
    int64_t n = out_cols + g->out_conv.k - 1 - g->out_conv.pad;
    int i;
    need[4] = n;
    for (i = 3; i >= 0; --i) {
        const higan_gblock *b = &g->blocks[i];
        n += (b->conv2.k - 1 - b->conv2.pad) + (b->conv1.k - 1 - b->conv1.pad);
        n = (n + b->up_w - 1) / b->up_w;
        need[i] = n;
    }
}
HIGAN_DEF int64_t higan_generator_margin(const higan_generator *g) {
    int64_t need[5], bt = g->cfg.bottom;
    higan__gen_needs(g, 8 * bt, need);               /* one character; any length gives the same */
    return (need[0] + bt - 1) / bt - 1;
}
/* x[..., :n] (a copy) when x is wider */
static higan_var *higan__gen_crop(higan_tape *t, higan_var *x, int64_t n) {
    if (!x || x->shape[3] <= n) return x;
    return higan_slice(t, x, 3, 0, n);
}
/* SNConv2d (eval, weights l) on the first W columns of a tensor that is `full` columns wide
   in the padded computation: zero padding on the right only at the true right edge
   (W == full); elsewhere none, so the output has W - (k - 1 - pad) columns, each reading
   real columns only (identical to the padded computation's). */
static higan_var *higan__gen_conv(higan_tape *t, const higan_sn_conv2d *m, const higan__gen_lin *l,
                                  higan_var *x, int64_t full) {
    if (!x) return NULL;
    return higan_conv2d(t, x, l->w, l->b, 1, 1, m->pad, m->pad, m->pad, x->shape[3] >= full ? m->pad : 0);
}
/* h [N, C, H, W] += up(sc)[..., :H, :W] with sc [N, C, >= H / uh, >= ceil(W / uw)] (eval, no
   gradient: h is the block's own fresh output): the residual sum of a GBlock without the
   upsampled and cropped copies, the same float sums as higan_add. Parallel over planes. */
static void higan__gen_add_up(higan_var *h, const higan_var *sc, int uh, int uw) {
    const int64_t P = h->shape[0] * h->shape[1], H = h->shape[2], W = h->shape[3];
    const int64_t Hs = sc->shape[2], Ws = sc->shape[3];
    int64_t p;
    HIGAN_ASSERT(sc->shape[0] * sc->shape[1] == P && Hs * uh >= H && Ws * uw >= W);
    HIGAN__PARALLEL_FOR_IF(P > 1 && P * H * W >= 65536)
    for (p = 0; p < P; ++p) {
        int64_t i, j;
        for (i = 0; i < H; ++i) {
            float *d = h->data + (p * H + i) * W;
            const float *r = sc->data + (p * Hs + i / uh) * Ws;
            if (uw == 1)
                for (j = 0; j < W; ++j) d[j] = d[j] + r[j];
            else if (uw == 2) {
                for (j = 0; j + 1 < W; j += 2) { d[j] = d[j] + r[j / 2]; d[j + 1] = d[j + 1] + r[j / 2]; }
                if (j < W) d[j] = d[j] + r[j / 2];
            } else
                for (j = 0; j < W; ++j) d[j] = d[j] + r[j / uw];
        }
    }
}
/* conv(up(x)) (eval, no gradient) as higan__gen_conv, the phase weights wp cached */
static higan_var *higan__gen_upconv(higan_tape *t, const higan_sn_conv2d *m, const higan__gen_lin *l, const float *wp,
                                    higan_var *x, int uh, int uw, int64_t full) {
    higan_conv2d_shape s;
    int64_t shape[4];
    higan_var *y;
    size_t mark;
    higan_status st;
    if (!x) return NULL;
    s = higan_conv2d_make_shape(x->shape[0], x->shape[1], uh * x->shape[2], uw * x->shape[3], m->out, m->k, m->k,
                                1, 1, m->pad, m->pad, m->pad, uw * x->shape[3] >= full ? m->pad : 0);
    shape[0] = s.N; shape[1] = s.OC; shape[2] = higan_conv2d_out_h(&s); shape[3] = higan_conv2d_out_w(&s);
    if (!(y = higan_var_new(t, 4, shape))) return NULL;
    mark = higan_arena_mark(t->arena);
    st = higan_conv2d_upsampled_forward_wp(y->data, x->data, NULL, wp, l->b ? l->b->data : NULL, &s, uh, uw, t->arena);
    higan_arena_release(t->arena, mark);
    HIGAN_ASSERT(st != HIGAN_ERR_UNSUPPORTED);   /* 3x3 pad 1 never is */
    return st == HIGAN_OK ? y : NULL;
}
/* ccbn (eval) with cached gain / bias weights */
static higan_var *higan__gen_ccbn(higan_tape *t, const higan_ccbn *m, const higan__gen_lin *gain,
                                  const higan__gen_lin *bias, higan_var *x, higan_var *y) {
    return higan_cond_batch_norm(t, x, higan_linear(t, y, gain->w, NULL), higan_linear(t, y, bias->w, NULL),
                                 higan__tape_params_data(t, m->p, m->stored_mean),
                                 higan__tape_params_data(t, m->p, m->stored_var), 0.1f, 1e-5f, 0);
}
/* GBlock i (eval) on the first `need` columns of x, whose full width is full_in. The
   shortcut applies its 1x1 conv before the upsampling: conv_sc(up(x)) and up(conv_sc(x)) are
   the same numbers pixel for pixel (each output pixel is the same K-sum of the same input
   pixel), for 1/u of the work. */
static higan_var *higan__gen_block_eval(higan_tape *t, const higan_generator *g, const higan__gen_weights *W,
                                        int i, higan_var *x, higan_var *y, int64_t need, int64_t full_in) {
    const higan_gblock *b = &g->blocks[i];
    const int64_t full = full_in * b->up_w;
    int up = b->up_h != 1 || b->up_w != 1;
    higan_var *h, *sc;
    int64_t n;
    if (!(x = higan__gen_crop(t, x, need))) return NULL;
    h = higan_relu(t, higan__gen_ccbn(t, &b->bn1, &W->bn1_gain[i], &W->bn1_bias[i], x, y));
    /* conv1(up(h)) without the upsampled copy, on the cached phase weights: the numbers of
       higan_upsample_conv2d in the padded eval */
    h = up ? higan__gen_upconv(t, &b->conv1, &W->conv1[i], W->up1[i], h, b->up_h, b->up_w, full)
           : higan__gen_conv(t, &b->conv1, &W->conv1[i], h, full);
    h = higan_relu(t, higan__gen_ccbn(t, &b->bn2, &W->bn2_gain[i], &W->bn2_bias[i], h, y));
    if (!(h = higan__gen_conv(t, &b->conv2, &W->conv2[i], h, full))) return NULL;
    n = h->shape[3];
    sc = b->has_sc ? higan__gen_conv(t, &b->conv_sc, &W->conv_sc[i], higan__gen_crop(t, x, (n + b->up_w - 1) / b->up_w), 0)
                   : x;
    if (!sc) return NULL;
    higan__gen_add_up(h, sc, b->up_h, b->up_w);   /* h + crop(up(sc)), in place */
    return h;
}
/* Eval forward of words computed Lg characters wide (labels [n, Lg]) whose padded batch is
   L >= Lg characters wide: at least the first out_cols output columns, each equal to the
   padded computation's (before the mask). */
static higan_var *higan__gen_forward_cols(higan_tape *t, const higan_generator *g, const higan__gen_weights *W,
                                          higan_var *z, const int *labels, int64_t Lg, int64_t L,
                                          int64_t out_cols) {
    higan_var *ys[4], *h, *gain, *bias;
    int64_t need[5], full = g->cfg.bottom * L;
    int i;
    higan__gen_needs(g, out_cols, need);
    h = higan__gen_stem(t, g, W, z, labels, Lg, 0, ys);
    for (i = 0; i < 4; ++i) {
        h = higan__gen_block_eval(t, g, W, i, h, ys[i], need[i], full);
        full *= g->blocks[i].up_w;
    }
    /* block 3 gives need[4] columns here or one more (the ceil above): one column more
       through the output layer is cheaper than a cropping copy */
    gain = higan_param_var(t, g->p, g->out_bn.gain);
    bias = higan_param_var(t, g->p, g->out_bn.bias);
    h = higan_relu(t, higan_batch_norm2d(t, h, gain, bias, higan__tape_params_data(t, g->p, g->out_bn.stored_mean),
                                         higan__tape_params_data(t, g->p, g->out_bn.stored_var), NULL, 0.1f, 1e-5f, 0));
    return higan_tanh(t, higan__gen_conv(t, &g->out_conv, &W->out, h, full));
}

/* Words per forward: about this many characters. A forward's activations take about 7.8 MB
   a character in the official configuration, and the GEMMs run per sample, so larger groups
   gain nothing measurable (16, 64 and 256 characters timed the same within noise). */
#ifndef HIGAN__GEN_GROUP_CHARS
#  define HIGAN__GEN_GROUP_CHARS 32
#endif

/* ---- independent forwards on the threads ---------------------------------------------------
   The per-word eval generation is a list of forwards (jobs) that share nothing but read-only
   weights and write disjoint outputs. Run one after the other, each spends much of its time in
   small ops whose parallel loops (fork, join, a futex wake-up each) leave the second thread
   idle; so with 2+ threads and 2+ jobs every thread runs whole jobs instead, its ops on itself
   alone (higan__worker), on a tape of its own whose arena is an equal share of t's free space.
   The jobs are handed out dynamically in the caller's order (put the largest first). Every
   op gives the same numbers on one thread as on many, so each job's output is the serial
   run's bit for bit, whichever thread runs it. A job that does not fit its share runs again
   afterwards in the whole free arena, alone (what fits without threads fits with them: an
   arena sized for the serial run works, only slower). job(tt, ctx, i) returns 1, or 0 with
   the cause in tt's status or higan_last_error, having written no output; its arena
   allocations are given back after each job. */
typedef int (*higan__gen_job_fn)(higan_tape *tt, void *ctx, int64_t i);
static higan_status higan__gen_job_fail(higan_tape *tt) {
    return higan_tape_status(tt) != HIGAN_OK ? HIGAN_ERR_NOMEM : HIGAN_ERR_ARG;
}
#define HIGAN__GEN_JOBS_MAX 1024   /* jobs handed out at once (a flag each on the stack) */
static higan_status higan__gen_jobs(higan_tape *t, int64_t njobs, higan__gen_job_fn job, void *ctx) {
#if defined(_OPENMP) && !defined(HIGAN__NO_TLS)
    higan_arena *pa = t->arena;
    int nt = higan__threads();
#endif
    unsigned char done[HIGAN__GEN_JOBS_MAX];
    int64_t j0, i;
    for (j0 = 0; j0 < njobs; j0 += HIGAN__GEN_JOBS_MAX) {
        const int64_t nj = HIGAN__MIN(HIGAN__GEN_JOBS_MAX, njobs - j0);
        int par = 0;
        memset(done, 0, sizeof done);
#if defined(_OPENMP) && !defined(HIGAN__NO_TLS)
        if (nt > 1 && nj > 1 && !pa->overflow && !t->be->device) {
            higan_arena sub[8];
            higan_tape st[8];
            higan_status rc[8];
            char msg[sizeof higan__error_message];
            const size_t used0 = pa->used;
            unsigned char *base = higan__arena_start(pa) + used0;
            size_t slice, peak = 0;
            int k, nw = (int)HIGAN__MIN(HIGAN__MIN(nt, 8), nj);
            par = 1;
            slice = ((pa->capacity - used0) / (size_t)nw) & ~(size_t)(HIGAN__ALIGN - 1);
            (void)higan__ops();   /* lazily set globals (CPU level, precision) before the threads */
            (void)higan_get_precision();
            for (k = 0; k < nw; ++k) {
                memset(&sub[k], 0, sizeof sub[k]);
                sub[k].base = base + (size_t)k * slice;   /* 64-byte aligned: arena_start adds nothing */
                sub[k].capacity = slice;
                st[k] = *t;
                st[k].arena = st[k].data = &sub[k];   /* host tape: one arena for both */
                st[k].entries = NULL; st[k].capacity = 0; st[k].count = 0; st[k].overflow = 0;
                st[k].no_grad = 1;
                rc[k] = HIGAN_OK;
            }
            msg[0] = 0;
#pragma omp parallel num_threads(nw)
            {
                const int me = omp_get_thread_num();
                int64_t j;
                higan__worker = 1;
#pragma omp for schedule(dynamic, 1)
                for (j = 0; j < nj; ++j) {
                    size_t mark;
                    if (me >= nw || rc[me] != HIGAN_OK) continue;   /* a failed share takes no more jobs */
                    mark = higan_arena_mark(&sub[me]);
                    if (job(&st[me], ctx, j0 + j)) {
                        done[j] = 1;
                    } else {
                        rc[me] = higan__gen_job_fail(&st[me]);
                        if (rc[me] != HIGAN_ERR_NOMEM) {
#pragma omp critical(higan__gen_jobs_msg)
                            snprintf(msg, sizeof msg, "%s", higan_last_error());
                        }
                    }
                    higan_arena_release(&sub[me], mark);
                }
                higan__worker = 0;
            }
            for (k = 0; k < nw; ++k) {
                if (rc[k] != HIGAN_OK && rc[k] != HIGAN_ERR_NOMEM) return higan__error(rc[k], "%s", msg);
                peak += sub[k].peak;
            }
            if (used0 + peak > pa->peak) pa->peak = used0 + peak;   /* the bytes the shares used */
        }
#endif
        /* without threads, or the jobs a share had no room for (or left after its overflow):
           one after the other in the whole free arena (the same numbers) */
        for (i = 0; i < nj; ++i) {
            higan_tape_pos mark;
            int ok;
            if (par && done[i]) continue;
            mark = higan_tape_mark(t);
            ok = job(t, ctx, j0 + i);
            higan_tape_release(t, mark);
            if (!ok) return higan__gen_job_fail(t);
        }
    }
    return HIGAN_OK;
}
/* The distinct labels of words [0, n) (labels[b * stride + l], l < lens[b]) renormalised once
   in the Generator's embedding (max_norm 1, PyTorch's embedding_renorm_ over the batch), so
   that the forwards of the per-word paths, which run with cached weights (stem W != NULL),
   look rows up without writing them: the same rows whatever the grouping and the threads. */
static void higan__gen_renorm(const higan_generator *g, const int *labels, int64_t stride, const int *lens,
                              int64_t n) {
    int idx[256], seen[256];
    const int64_t num = g->cfg.n_class;
    int64_t b, l, k = 0;
    float *w = higan_params_data(g->p, g->text_embedding);
    HIGAN_ASSERT(num <= 256);
    for (l = 0; l < num; ++l) seen[l] = 0;
    for (b = 0; b < n; ++b)
        for (l = 0; l < lens[b]; ++l) {
            const int c = labels[b * stride + l];
            HIGAN_ASSERT(c >= 0 && c < num);
            if (!seen[c]) { seen[c] = 1; idx[k++] = c; }
        }
    higan_embedding_renorm(w, idx, k, num, g->cfg.embed_dim, 1.0f);
}

/* The eval forward by width groups (see higan_generator_forward). Under no_grad. */
typedef struct {
    const higan_generator *g;
    const higan__gen_weights *gw;
    const higan_var *z;
    const int *labels, *lens, *order, *chunk;   /* chunk[3 i ..]: first word in order, words, width */
    int64_t L;
    higan_var *out;
} higan__gen_words_ctx;
static int higan__gen_words_job(higan_tape *t, void *p, int64_t ci) {
    const higan__gen_words_ctx *c = (const higan__gen_words_ctx *)p;
    const higan_generator *g = c->g;
    const int64_t e = c->chunk[3 * ci], n = c->chunk[3 * ci + 1], wg = c->chunk[3 * ci + 2];
    const int64_t zd = g->cfg.style_dim, cpc = 8 * g->cfg.bottom, L = c->L;
    const int64_t C = c->out->shape[1], H = c->out->shape[2], W = c->out->shape[3], plane = H * W;
    int64_t maxlen = 0, zs[2], k;
    int *lab = (int *)higan_arena_alloc(t->arena, sizeof(int) * (size_t)(n * wg));
    higan_var *zg, *y;
    zs[0] = n; zs[1] = zd;
    if (!lab || !(zg = higan_var_new(t, 2, zs))) return 0;
    for (k = 0; k < n; ++k) {
        const int64_t b = c->order[e + k], len = c->lens[b] > L ? L : c->lens[b];
        t->be->copy(t->be->ctx, zg->data + k * zd, c->z->data + b * zd, sizeof(float) * (size_t)zd);
        memcpy(lab + k * wg, c->labels + b * L, sizeof(int) * (size_t)wg);
        if (len > maxlen) maxlen = len;
    }
    if (!(y = higan__gen_forward_cols(t, g, c->gw, zg, lab, wg, L, cpc * maxlen))) return 0;
    for (k = 0; k < n; ++k) {                  /* the valid columns into place */
        const int64_t b = c->order[e + k], len = c->lens[b] > L ? L : c->lens[b], Wy = y->shape[3];
        /* the C * H rows of word k: out rows W apart, y rows Wy apart */
        t->be->copy_rows(t->be->ctx, c->out->data + b * C * plane, W, y->data + k * C * H * Wy, Wy,
                         cpc * len, C * H);
    }
    return 1;
}
static higan_var *higan__gen_forward_words(higan_tape *t, const higan_generator *g, higan_var *z,
                                           const int *labels, const int *lens, int64_t L) {
    const int64_t B = z->shape[0], bt = g->cfg.bottom, cpc = 8 * bt;
    const int64_t C = g->cfg.input_nc, H = 16 * bt, W = cpc * L;
    int64_t s[4], i, j, e, wg, nch = 0, margin = higan_generator_margin(g);
    int *width, *order, *chunk, *all;
    higan__gen_weights gw;
    higan__gen_words_ctx ctx;
    higan_var *out;
    s[0] = B; s[1] = C; s[2] = H; s[3] = W;
    if (!(out = higan_var_new(t, 4, s)) || !higan__gen_weights_eval(t, g, &gw)) return NULL;
    width = (int *)higan_arena_alloc(t->arena, sizeof(int) * (size_t)(5 * B + B));
    if (!width) return NULL;
    order = width + B; chunk = order + B; all = chunk + 3 * B;
    t->be->fill(t->be->ctx, out->data, -1.0f, B * C * H * W);     /* the masked background */
    /* the embedding rows of the whole padded batch renormalised once, as its forward does */
    for (i = 0; i < B; ++i) all[i] = (int)L;
    higan__gen_renorm(g, labels, L, all, B);
    /* computed width of each word (0: nothing valid), and the words sorted by it */
    for (i = 0; i < B; ++i) {
        const int64_t len = lens[i] < 0 ? 0 : lens[i] > L ? L : lens[i];
        width[i] = len == 0 ? 0 : (int)(len + margin < L ? len + margin : L);
        order[i] = (int)i;
    }
    for (i = 1; i < B; ++i)     /* insertion sort by width, stable */
        for (j = i; j > 0 && width[order[j - 1]] > width[order[j]]; --j) {
            int tmp = order[j]; order[j] = order[j - 1]; order[j - 1] = tmp;
        }
    /* one forward per chunk of a width group, the widest groups first (the largest jobs
       first, for the threads) */
    for (i = B; i > 0; i = j) {
        int64_t per;
        wg = width[order[i - 1]];
        for (j = i; j > 0 && width[order[j - 1]] == wg; --j) {}
        if (wg == 0) break;
        per = HIGAN__GEN_GROUP_CHARS / wg < 1 ? 1 : HIGAN__GEN_GROUP_CHARS / wg;
        for (e = j; e < i; e += per) {
            chunk[3 * nch] = (int)e;
            chunk[3 * nch + 1] = (int)(i - e < per ? i - e : per);
            chunk[3 * nch + 2] = (int)wg;
            ++nch;
        }
    }
    ctx.g = g; ctx.gw = &gw; ctx.z = z; ctx.labels = labels; ctx.lens = lens; ctx.order = order;
    ctx.chunk = chunk; ctx.L = L; ctx.out = out;
    return higan__gen_jobs(t, nch, higan__gen_words_job, &ctx) == HIGAN_OK ? out : NULL;
}

HIGAN_DEF higan_var *higan_generator_forward(higan_tape *t, const higan_generator *g, higan_var *z,
                                             const int *labels, const int *lens, int64_t L,
                                             int train) {
    higan_var *ys[4], *h;
    int64_t B, i;
    if (!z) return NULL;
    HIGAN_ASSERT(z->ndim == 2 && z->shape[1] == g->cfg.style_dim && L >= 1 && labels && lens);
    B = z->shape[0];
    /* the per-word eval path runs host kernels (cached phase weights, in-place sums): a
       device tape takes the padded forward, whose valid columns are the same numbers */
    if (!train && !g->eval_full_width && !t->be->device &&
        (t->no_grad > 0 || (!z->requires_grad && g->p->frozen))) {
        for (i = 0; i < B && lens[i] >= L; ++i) {}
        if (i < B) return higan__gen_forward_words(t, g, z, labels, lens, L);   /* something to save */
    }
    h = higan__gen_stem(t, g, NULL, z, labels, L, train, ys);
    for (i = 0; i < 4; ++i) h = higan_gblock_forward(t, &g->blocks[i], h, ys[i], train);
    h = higan__relu_inplace(t, higan_bn_out_forward(t, &g->out_bn, h, train));
    h = higan_tanh(t, higan_sn_conv2d_forward(t, &g->out_conv, h, train));
    if (!train && h) {   /* eval: background (-1) from column y_lens * H // 2 on */
        int *cols = (int *)higan_arena_alloc(t->arena, sizeof(int) * (size_t)B);
        if (!cols) return NULL;
        for (i = 0; i < B; ++i) cols[i] = (int)((int64_t)lens[i] * h->shape[2] / 2);
        h = higan__bg_mask_width(t, h, cols, -1.0f);
    }
    return h;
}

/* ---- Discriminator ------------------------------------------------------------------------ */
HIGAN_DEF higan_discriminator_config higan_discriminator_default_config(int64_t resolution) {
    higan_discriminator_config c;
    c.ch = 64; c.resolution = resolution; c.input_nc = 1;
    return c;
}

HIGAN_DEF void higan_discriminator_register(higan_discriminator *d, higan_params *p,
                                            const char *prefix,
                                            const higan_discriminator_config *cfg) {
    char name[HIGAN_MAX_NAME], sub[HIGAN_MAX_NAME];
    int64_t ch, in[4], out[4];
    int i;
    d->cfg = cfg ? *cfg : higan_discriminator_default_config(64);
    d->p = p;
    /* D_arch[64] and D_arch[32] are the same layers: resolution only names the use */
    HIGAN_ASSERT(d->cfg.resolution == 64 || d->cfg.resolution == 32);
    ch = d->cfg.ch;
    in[0] = d->cfg.input_nc; in[1] = ch; in[2] = 2 * ch; in[3] = 4 * ch;
    out[0] = ch; out[1] = 2 * ch; out[2] = 4 * ch; out[3] = 4 * ch;
    for (i = 0; i < 4; ++i) {
        snprintf(sub, sizeof sub, "blocks.%d.0", i);
        higan__bg_name(name, prefix, sub);
        higan_dblock_register(&d->blocks[i], p, name, in[i], out[i], i > 0, i < 3);
    }
    higan__bg_name(name, prefix, "linear");
    higan_sn_linear_register(&d->linear, p, name, 4 * ch, 1, 1);
}

HIGAN_DEF void higan_discriminator_init(higan_discriminator *d, higan_rng *rng) {
    int i;
    for (i = 0; i < 4; ++i) {
        const higan_dblock *b = &d->blocks[i];
        higan__bg_sn_conv_init(&b->conv1, rng);
        higan__bg_sn_conv_init(&b->conv2, rng);
        if (b->has_sc) higan__bg_sn_conv_init(&b->conv_sc, rng);
    }
    higan__bg_sn_linear_init(&d->linear, rng);
}

HIGAN_DEF higan_var *higan_discriminator_forward(higan_tape *t, const higan_discriminator *d,
                                                 higan_var *x, const int *x_lens,
                                                 const int *y_lens, int train) {
    higan_var *h = x;
    int *cols;
    int64_t B, Wh, i;
    if (!x) return NULL;
    HIGAN_ASSERT(x->ndim == 4 && x->shape[1] == d->cfg.input_nc);
    B = x->shape[0];
    for (i = 0; i < 4; ++i) h = higan_dblock_forward(t, &d->blocks[i], h, train);
    h = higan__relu_inplace(t, h);   /* the last block's sum: nothing else reads it */
    if (!h) return NULL;
    /* valid columns: h_lens = x_lens * W_h // W_x (all columns without lengths) */
    Wh = h->shape[3];
    if (!(cols = (int *)higan_arena_alloc(t->arena, sizeof(int) * (size_t)B))) return NULL;
    for (i = 0; i < B; ++i) {
        int64_t c = x_lens ? (int64_t)x_lens[i] * Wh / x->shape[3] : Wh;
        cols[i] = (int)(c < 0 ? 0 : c);
    }
    h = higan_masked_sum_width(t, h, cols);
    if (x_lens && y_lens) h = higan__bg_div_rows(t, h, y_lens);   /* per character */
    return higan_sn_linear_forward(t, &d->linear, h, train);
}

/* ---- all patches -------------------------------------------------------------------------- */
static int64_t higan__patch_cols(const int *lens, int64_t b, int64_t W, int64_t size, int64_t step) {
    int64_t len = lens ? (int64_t)lens[b] : W;
    if (len > W) len = W;
    return len < size ? 0 : (len - size) / step + 1;   /* Python's floor for len < size: none */
}

HIGAN_DEF int64_t higan_extract_patches_count(const int *lens, int64_t B, int64_t H, int64_t W,
                                              int64_t size, int64_t step) {
    int64_t b, n = 0;
    HIGAN_ASSERT(size > 0 && step > 0 && H >= size && (H - size) % step == 0);
    for (b = 0; b < B; ++b) n += higan__patch_cols(lens, b, W, size, step);
    return n * ((H - size) / step + 1);
}

/* y [P, C, size, size]; x [B, C, H, W]. Parallel over (image, patch row). */
HIGAN_DEF void higan_extract_patches_forward(float *y, const float *x, const int *lens, int64_t B,
                                             int64_t C, int64_t H, int64_t W, int64_t size,
                                             int64_t step) {
    int64_t rows = (H - size) / step + 1, q;
    HIGAN_ASSERT(size > 0 && step > 0 && H >= size && (H - size) % step == 0);
    HIGAN__PARALLEL_FOR_IF(B * rows > 1 && B * C * H * W > ((int64_t)1 << 15))
    for (q = 0; q < B * rows; ++q) {
        int64_t b = q / rows, r = q % rows, first = 0, bb, cols, c, k, i;
        for (bb = 0; bb < b; ++bb) first += rows * higan__patch_cols(lens, bb, W, size, step);
        cols = higan__patch_cols(lens, b, W, size, step);
        for (c = 0; c < cols; ++c) {
            float *yp = y + (first + r * cols + c) * C * size * size;
            for (k = 0; k < C; ++k) {
                const float *xs = x + ((b * C + k) * H + r * step) * W + c * step;
                for (i = 0; i < size; ++i)
                    memcpy(yp + (k * size + i) * size, xs + i * W, sizeof(float) * (size_t)size);
            }
        }
    }
}

/* dx [B, C, H, W] += scatter of dy [P, C, size, size]; one (b, channel) plane per thread. */
HIGAN_DEF void higan_extract_patches_backward(float *dx, const float *dy, const int *lens,
                                              int64_t B, int64_t C, int64_t H, int64_t W,
                                              int64_t size, int64_t step) {
    int64_t rows = (H - size) / step + 1, q;
    if (!dx) return;
    HIGAN_ASSERT(size > 0 && step > 0 && H >= size && (H - size) % step == 0);
    HIGAN__PARALLEL_FOR_IF(B * C > 1 && B * C * H * W > ((int64_t)1 << 15))
    for (q = 0; q < B * C; ++q) {
        int64_t b = q / C, k = q % C, first = 0, bb, cols, r, c, i, j;
        float *dp = dx + q * H * W;
        for (bb = 0; bb < b; ++bb) first += rows * higan__patch_cols(lens, bb, W, size, step);
        cols = higan__patch_cols(lens, b, W, size, step);
        for (r = 0; r < rows; ++r)
            for (c = 0; c < cols; ++c) {
                const float *gp = dy + ((first + r * cols + c) * C + k) * size * size;
                float *d0 = dp + r * step * W + c * step;
                for (i = 0; i < size; ++i)
                    for (j = 0; j < size; ++j) d0[i * W + j] += gp[i * size + j];
            }
    }
}

typedef struct { higan_var *x, *y; int *lens; int64_t size, step; } higan__patches_ctx;
static void higan__patches_backward_op(higan_tape *t, void *p) {
    higan__patches_ctx *c = (higan__patches_ctx *)p;
    float *dx = higan_var_grad(t, c->x);
    if (dx) higan_extract_patches_backward(dx, c->y->grad, c->lens, c->x->shape[0], c->x->shape[1],
                                           c->x->shape[2], c->x->shape[3], c->size, c->step);
}
HIGAN_DEF higan_var *higan_extract_patches(higan_tape *t, higan_var *x, const int *lens,
                                           int64_t size, int64_t step) {
    higan_var *y;
    higan__patches_ctx *c;
    int64_t s[4], P;
    if (!x) return NULL;
    HIGAN_ASSERT(x->ndim == 4);
    P = higan_extract_patches_count(lens, x->shape[0], x->shape[2], x->shape[3], size, step);
    HIGAN_ASSERT(P > 0 && "extract_patches: no image is as wide as one patch");
    s[0] = P; s[1] = x->shape[1]; s[2] = size; s[3] = size;
    if (!(y = higan_op_output(t, 4, s, &x, 1))) return NULL;
    higan_extract_patches_forward(y->data, x->data, lens, x->shape[0], x->shape[1], x->shape[2],
                                  x->shape[3], size, step);
    if (y->requires_grad) {
        if (!(c = (higan__patches_ctx *)higan_tape_ctx(t, sizeof *c))) return NULL;
        c->lens = NULL;
        if (lens && !(c->lens = higan__bg_copy_lens(t, lens, x->shape[0]))) return NULL;
        c->x = x; c->y = y; c->size = size; c->step = step;
        higan_tape_record(t, y, higan__patches_backward_op, c);
    }
    return y;
}
/* ==== BACKENDS (implementation): the CPU table, device arenas, tape helpers ================
   The CPU entries call the raw kernels with the same arguments (ctx unused), so a tape on the
   CPU backend computes exactly what the direct calls did. */
static void *higan__cpu_alloc(void *ctx, size_t bytes) {
    void *p = HIGAN_MALLOC(bytes ? bytes : 1);
    (void)ctx;
    if (!p) higan__error(HIGAN_ERR_NOMEM, "cpu backend: cannot allocate %zu bytes", bytes);
    return p;
}
static void higan__cpu_free_memory(void *ctx, void *p) { (void)ctx; if (p) HIGAN_FREE(p); }
static void higan__cpu_zero(void *ctx, void *dst, size_t bytes) { (void)ctx; if (bytes) memset(dst, 0, bytes); }
static void higan__cpu_copy(void *ctx, void *dst, const void *src, size_t bytes) {
    (void)ctx;
    if (bytes && dst != src) memmove(dst, src, bytes);
}
static void higan__cpu_fill(void *ctx, float *dst, float value, int64_t n) {
    int64_t i;
    (void)ctx;
    for (i = 0; i < n; ++i) dst[i] = value;
}
static void higan__cpu_copy_rows(void *ctx, float *dst, int64_t dst_stride, const float *src, int64_t src_stride,
                                 int64_t cols, int64_t rows) {
    int64_t r;
    (void)ctx;
    for (r = 0; r < rows; ++r) memcpy(dst + r * dst_stride, src + r * src_stride, sizeof(float) * (size_t)cols);
}
static higan_status higan__cpu_sync(void *ctx) { (void)ctx; return HIGAN_OK; }
static void higan__cpu_linear_forward(void *ctx, float *y, const float *x, const float *w, const float *b,
                                      int64_t N, int64_t IN, int64_t OUT) {
    (void)ctx;
    higan_linear_forward(y, x, w, b, N, IN, OUT);
}
static void higan__cpu_conv2d_forward(void *ctx, float *y, const float *x, const float *w, const float *b,
                                      const higan_conv2d_shape *s, higan_arena *scratch) {
    (void)ctx;
    (void)higan_conv2d_forward(y, x, w, b, s, scratch);   /* cannot fail: scratch is unused */
}
static void higan__cpu_spectral_norm_forward(void *ctx, float *y, float *u, float *v, float *sigma, const float *w,
                                             const float *u0, int64_t out, int64_t in, float eps) {
    (void)ctx;
    higan_spectral_norm_forward(y, u, v, sigma, w, u0, out, in, eps);
}
static void higan__cpu_batch_norm2d_forward(void *ctx, float *y, float *mean, float *rstd, const float *x,
                                            const float *weight, const float *bias, float *running_mean,
                                            float *running_var, float momentum, float eps, int batch_stats,
                                            int64_t N, int64_t C, int64_t HW) {
    (void)ctx;
    higan_batch_norm2d_forward(y, mean, rstd, x, weight, bias, running_mean, running_var, momentum, eps,
                               batch_stats, N, C, HW);
}
static void higan__cpu_cond_batch_norm_forward(void *ctx, float *y, float *mean, float *rstd, const float *x,
                                               const float *gain, const float *bias, float *running_mean,
                                               float *running_var, float momentum, float eps, int batch_stats,
                                               int64_t N, int64_t C, int64_t HW) {
    (void)ctx;
    higan_cond_batch_norm_forward(y, mean, rstd, x, gain, bias, running_mean, running_var, momentum, eps,
                                  batch_stats, N, C, HW);
}
static void higan__cpu_embedding_renorm(void *ctx, float *weight, const int *idx, int64_t n_idx, int64_t num,
                                        int64_t D, float max_norm) {
    (void)ctx;
    higan_embedding_renorm(weight, idx, n_idx, num, D, max_norm);
}
static void higan__cpu_embedding_forward(void *ctx, float *y, const float *weight, const int *idx, int64_t n_idx,
                                         int64_t num, int64_t D) {
    (void)ctx;
    higan_embedding_forward(y, weight, idx, n_idx, num, D);
}
static void higan__cpu_upsample_nearest_forward(void *ctx, float *y, const float *x, int64_t N, int64_t C,
                                                int64_t H, int64_t W, int sh, int sw) {
    (void)ctx;
    higan_upsample_nearest_forward(y, x, N, C, H, W, sh, sw);
}
static void higan__cpu_relu_forward(void *ctx, float *y, const float *x, int64_t n) {
    (void)ctx;
    higan_relu_forward(y, x, n);
}
static void higan__cpu_tanh_forward(void *ctx, float *y, const float *x, int64_t n) {
    (void)ctx;
    higan_tanh_forward(y, x, n);
}
static void higan__cpu_add_forward(void *ctx, float *y, const float *a, const float *b, int64_t n) {
    (void)ctx;
    higan_add_forward(y, a, b, n);
}
static void higan__cpu_concat_forward(void *ctx, float *y, const float *const *xs, const int64_t *sizes, int n,
                                      int64_t outer, int64_t inner) {
    (void)ctx;
    higan_concat_forward(y, xs, sizes, n, outer, inner);
}
static void higan__cpu_slice_forward(void *ctx, float *y, const float *x, int64_t outer, int64_t size,
                                     int64_t inner, int64_t start, int64_t len) {
    (void)ctx;
    higan_slice_forward(y, x, outer, size, inner, start, len);
}
static void higan__cpu_permute_forward(void *ctx, float *y, const float *x, int ndim, const int64_t *shape,
                                       const int *perm) {
    (void)ctx;
    higan_permute_forward(y, x, ndim, shape, perm);
}
static void higan__cpu_mask_width_forward(void *ctx, float *y, const float *x, const int *lens, float value,
                                          int64_t N, int64_t C, int64_t H, int64_t W) {
    (void)ctx;
    higan__bg_mask_width_forward(y, x, lens, value, N, C, H, W);
}
static void higan__cpu_mul_forward(void *ctx, float *y, const float *a, const float *b, int64_t n) {
    (void)ctx;
    higan_mul_forward(y, a, b, n);
}
static void higan__cpu_sum_all_forward(void *ctx, float *y, const float *x, int64_t n) {
    (void)ctx;
    higan_sum_all_forward(y, x, n);
}
static void higan__cpu_mean_all_forward(void *ctx, float *y, const float *x, int64_t n) {
    (void)ctx;
    higan_mean_all_forward(y, x, n);
}
static void higan__cpu_linear_backward(void *ctx, float *dx, float *dw, float *db, const float *dy, const float *x,
                                       const float *w, int64_t N, int64_t IN, int64_t OUT) {
    (void)ctx;
    higan_linear_backward(dx, dw, db, dy, x, w, N, IN, OUT);
}
static void higan__cpu_conv2d_backward(void *ctx, float *dx, float *dw, float *db, const float *dy, const float *x,
                                       const float *w, const higan_conv2d_shape *s, higan_arena *scratch) {
    (void)ctx;
    (void)higan_conv2d_backward(dx, dw, db, dy, x, w, s, scratch);   /* overflow: sticky in scratch */
}
static void higan__cpu_spectral_norm_backward(void *ctx, float *dw, const float *dy, const float *w, const float *u,
                                              const float *v, const float *sigma, int64_t out, int64_t in) {
    (void)ctx;
    higan_spectral_norm_backward(dw, dy, w, u, v, *sigma, out, in);
}
static void higan__cpu_batch_norm2d_backward(void *ctx, float *dx, float *dweight, float *dbias, const float *dy,
                                             const float *x, const float *mean, const float *rstd,
                                             const float *weight, int batch_stats, int64_t N, int64_t C,
                                             int64_t HW) {
    (void)ctx;
    higan_batch_norm2d_backward(dx, dweight, dbias, dy, x, mean, rstd, weight, batch_stats, N, C, HW);
}
static void higan__cpu_cond_batch_norm_backward(void *ctx, float *dx, float *dgain, float *dbias, const float *dy,
                                                const float *x, const float *mean, const float *rstd,
                                                const float *gain, int batch_stats, int64_t N, int64_t C,
                                                int64_t HW) {
    (void)ctx;
    higan_cond_batch_norm_backward(dx, dgain, dbias, dy, x, mean, rstd, gain, batch_stats, N, C, HW);
}
static void higan__cpu_embedding_backward(void *ctx, float *dweight, const float *dy, const int *idx, int64_t n_idx,
                                          int64_t num, int64_t D, int padding_idx) {
    (void)ctx; (void)num;
    higan_embedding_backward(dweight, dy, idx, n_idx, D, padding_idx);
}
static void higan__cpu_upsample_nearest_backward(void *ctx, float *dx, const float *dy, int64_t N, int64_t C,
                                                 int64_t H, int64_t W, int sh, int sw) {
    (void)ctx;
    higan_upsample_nearest_backward(dx, dy, N, C, H, W, sh, sw);
}
static void higan__cpu_relu_backward(void *ctx, float *dx, const float *dy, const float *x, int64_t n) {
    (void)ctx;
    higan_relu_backward(dx, dy, x, n);
}
static void higan__cpu_tanh_backward(void *ctx, float *dx, const float *dy, const float *y, int64_t n) {
    (void)ctx;
    higan_tanh_backward(dx, dy, y, n);
}
static void higan__cpu_add_backward(void *ctx, float *da, float *db, const float *dy, int64_t n) {
    (void)ctx;
    higan_add_backward(da, db, dy, n);
}
static void higan__cpu_mul_backward(void *ctx, float *da, float *db, const float *dy, const float *a, const float *b,
                                    int64_t n) {
    (void)ctx;
    higan_mul_backward(da, db, dy, a, b, n);
}
static void higan__cpu_concat_backward(void *ctx, float *const *dxs, const float *dy, const int64_t *sizes, int n,
                                       int64_t outer, int64_t inner) {
    (void)ctx;
    higan_concat_backward(dxs, dy, sizes, n, outer, inner);
}
static void higan__cpu_slice_backward(void *ctx, float *dx, const float *dy, int64_t outer, int64_t size,
                                      int64_t inner, int64_t start, int64_t len) {
    (void)ctx;
    higan_slice_backward(dx, dy, outer, size, inner, start, len);
}
static void higan__cpu_permute_backward(void *ctx, float *dx, const float *dy, int ndim, const int64_t *shape,
                                        const int *perm) {
    (void)ctx;
    higan_permute_backward(dx, dy, ndim, shape, perm);
}
static void higan__cpu_mask_width_backward(void *ctx, float *dx, const float *dy, const int *lens, int64_t N,
                                           int64_t C, int64_t H, int64_t W) {
    (void)ctx;
    higan__bg_mask_width_backward(dx, dy, lens, N, C, H, W);
}
static void higan__cpu_sum_all_backward(void *ctx, float *dx, const float *dy, int64_t n) {
    (void)ctx;
    higan_sum_all_backward(dx, dy, n);
}
static void higan__cpu_mean_all_backward(void *ctx, float *dx, const float *dy, int64_t n) {
    (void)ctx;
    higan_mean_all_backward(dx, dy, n);
}
/* ---- parameter stores and trainers ---- */
static void higan__cpu_adam_step(void *ctx, float *w, const float *g, float *m, float *v, int64_t n, float b1,
                                 float b2, float omb1, float omb2, float step_size, float bc2_sqrt, float eps) {
    (void)ctx;
    higan__adam_apply(w, g, m, v, n, b1, b2, omb1, omb2, step_size, bc2_sqrt, eps);
}
static void higan__cpu_moments(void *ctx, double *out, const float *x, int64_t n) {
    double mean = 0, ss = 0;
    int64_t i;
    (void)ctx;
    for (i = 0; i < n; ++i) mean += x[i];          /* in order: the GAN trainer's std, bit for bit */
    mean /= (double)(n > 0 ? n : 1);
    for (i = 0; i < n; ++i) ss += ((double)x[i] - mean) * ((double)x[i] - mean);
    out[0] = mean;
    out[1] = ss;
}
static void higan__cpu_find_nonfinite(void *ctx, int64_t *first, const float *x, int64_t n) {
    int64_t i;
    (void)ctx;
    *first = -1;
    for (i = 0; i < n; ++i)
        if (!(x[i] == x[i]) || x[i] > 3.4e38f || x[i] < -3.4e38f) { *first = i; return; }
}
static higan_backend higan__cpu_backend_table;
static int higan__cpu_backend_ready;
HIGAN_DEF const higan_backend *higan_cpu_backend(void) {
    higan_backend *b = &higan__cpu_backend_table;
    if (higan__cpu_backend_ready) return b;   /* the same values each time: a benign race */
    memset(b, 0, sizeof *b);
    b->name = "cpu";
    b->device = 0;
    b->ctx = NULL;
    b->alloc = higan__cpu_alloc;
    b->free_memory = higan__cpu_free_memory;
    b->zero = higan__cpu_zero;
    b->copy = higan__cpu_copy;
    b->upload = higan__cpu_copy;
    b->download = higan__cpu_copy;
    b->fill = higan__cpu_fill;
    b->copy_rows = higan__cpu_copy_rows;
    b->sync = higan__cpu_sync;
    b->linear_forward = higan__cpu_linear_forward;
    b->conv2d_forward = higan__cpu_conv2d_forward;
    b->spectral_norm_forward = higan__cpu_spectral_norm_forward;
    b->batch_norm2d_forward = higan__cpu_batch_norm2d_forward;
    b->cond_batch_norm_forward = higan__cpu_cond_batch_norm_forward;
    b->embedding_renorm = higan__cpu_embedding_renorm;
    b->embedding_forward = higan__cpu_embedding_forward;
    b->upsample_nearest_forward = higan__cpu_upsample_nearest_forward;
    b->relu_forward = higan__cpu_relu_forward;
    b->tanh_forward = higan__cpu_tanh_forward;
    b->add_forward = higan__cpu_add_forward;
    b->concat_forward = higan__cpu_concat_forward;
    b->slice_forward = higan__cpu_slice_forward;
    b->permute_forward = higan__cpu_permute_forward;
    b->mask_width_forward = higan__cpu_mask_width_forward;
    b->mul_forward = higan__cpu_mul_forward;
    b->sum_all_forward = higan__cpu_sum_all_forward;
    b->mean_all_forward = higan__cpu_mean_all_forward;
    b->linear_backward = higan__cpu_linear_backward;
    b->conv2d_backward = higan__cpu_conv2d_backward;
    b->spectral_norm_backward = higan__cpu_spectral_norm_backward;
    b->batch_norm2d_backward = higan__cpu_batch_norm2d_backward;
    b->cond_batch_norm_backward = higan__cpu_cond_batch_norm_backward;
    b->embedding_backward = higan__cpu_embedding_backward;
    b->upsample_nearest_backward = higan__cpu_upsample_nearest_backward;
    b->relu_backward = higan__cpu_relu_backward;
    b->tanh_backward = higan__cpu_tanh_backward;
    b->add_backward = higan__cpu_add_backward;
    b->mul_backward = higan__cpu_mul_backward;
    b->concat_backward = higan__cpu_concat_backward;
    b->slice_backward = higan__cpu_slice_backward;
    b->permute_backward = higan__cpu_permute_backward;
    b->mask_width_backward = higan__cpu_mask_width_backward;
    b->sum_all_backward = higan__cpu_sum_all_backward;
    b->mean_all_backward = higan__cpu_mean_all_backward;
    b->adam_step = higan__cpu_adam_step;
    b->moments = higan__cpu_moments;
    b->find_nonfinite = higan__cpu_find_nonfinite;
    higan__cpu_backend_ready = 1;
    return b;
}
HIGAN_DEF void higan_tape_set_backend(higan_tape *t, const higan_backend *be, higan_arena *data) {
    if (!be) be = higan_cpu_backend();
    HIGAN_ASSERT(!be->device || (data && data != t->arena && "a device tape needs its own data arena"));
    t->be = be;
    t->data = be->device ? data : t->arena;
}
HIGAN_DEF higan_status higan_backend_arena_init(higan_arena *a, const higan_backend *be, size_t capacity) {
    memset(a, 0, sizeof *a);
    capacity = higan__round_up(capacity);
    a->base = (unsigned char *)be->alloc(be->ctx, capacity + HIGAN__ALIGN);
    if (!a->base) return higan__error(HIGAN_ERR_NOMEM, "%s backend: cannot allocate an arena of %zu bytes",
                                      be->name, capacity);
    a->capacity = capacity;
    return HIGAN_OK;
}
HIGAN_DEF void higan_backend_arena_free(higan_arena *a, const higan_backend *be) {
    if (a->base) be->free_memory(be->ctx, a->base);
    memset(a, 0, sizeof *a);
}
HIGAN_DEF higan_status higan_tape_sync(higan_tape *t) {
    higan_status st = t->be->sync(t->be->ctx);
    return st != HIGAN_OK ? st : higan_tape_status(t);
}
HIGAN_DEF higan_var *higan_var_upload(higan_tape *t, const float *host, int ndim, const int64_t *shape) {
    higan_var *v = higan_var_new(t, ndim, shape);
    if (v) t->be->upload(t->be->ctx, v->data, host, sizeof(float) * (size_t)higan_var_numel(v));
    return v;
}
HIGAN_DEF void higan_var_read(higan_tape *t, const higan_var *v, float *host, int64_t n) {
    HIGAN_ASSERT(n >= 0 && n <= higan_var_numel(v) && v->data);
    t->be->download(t->be->ctx, host, v->data, sizeof(float) * (size_t)n);
}

/* ==== MODEL implementation: networks in stores, checkpoints, generation, image input ====== */

static const char *const higan__model_net_names[HIGAN_NET_COUNT] = {
    "Generator", "StyleEncoder", "StyleBackbone", "Discriminator", "PatchDiscriminator",
    "WriterIdentifier", "Recognizer"};
static const int higan__model_net_stores[HIGAN_NET_COUNT] = {
    HIGAN_STORE_GE, HIGAN_STORE_GE, HIGAN_STORE_BACKBONE, HIGAN_STORE_DP, HIGAN_STORE_DP,
    HIGAN_STORE_WID, HIGAN_STORE_OCR};
/* metadata names of the optimizer of each store (the official checkpoint's OPT.G / OPT.D) */
static const char *const higan__model_store_names[HIGAN_STORE_COUNT] = {
    "OPT.G", "OPT.D", "OPT.B", "OPT.W", "OPT.R"};

HIGAN_DEF const char *higan_net_name(int net) {
    return net >= 0 && net < HIGAN_NET_COUNT ? higan__model_net_names[net] : NULL;
}
HIGAN_DEF int higan_net_store(int net) {
    HIGAN_ASSERT(net >= 0 && net < HIGAN_NET_COUNT);
    return higan__model_net_stores[net];
}
static unsigned higan__model_store_nets(int s) {
    unsigned mask = 0;
    int n;
    for (n = 0; n < HIGAN_NET_COUNT; ++n) if (higan__model_net_stores[n] == s) mask |= HIGAN_NET_BIT(n);
    return mask;
}
/* "Generator, StyleBackbone" for a mask */
static void higan__model_list(char *buf, size_t cap, unsigned nets) {
    int n;
    buf[0] = 0;
    for (n = 0; n < HIGAN_NET_COUNT; ++n)
        if (nets & HIGAN_NET_BIT(n))
            snprintf(buf + strlen(buf), cap - strlen(buf), "%s%s", buf[0] ? ", " : "", higan__model_net_names[n]);
    if (!buf[0]) snprintf(buf, cap, "none");
}

HIGAN_DEF higan_model_config higan_model_default_config(unsigned nets) {
    higan_model_config c;
    memset(&c, 0, sizeof c);
    c.nets = nets;
    c.G = higan_generator_default_config();
    c.D = higan_discriminator_default_config(64);
    c.P = higan_discriminator_default_config(32);
    c.B = higan_backbone_default_config();
    c.n_writer = 372;
    c.R = higan_recognizer_default_config();
    return c;
}

/* width of the backbone's output (c4 = min(16 r, max_dim)), the input of E and W */
static int64_t higan__model_backbone_out(const higan_backbone_config *b) {
    int64_t nf = b->resolution;
    int i;
    for (i = 0; i < 4; ++i) nf = 2 * nf < b->max_dim ? 2 * nf : b->max_dim;
    return nf;
}

/* ---- configuration: validation and the key=value metadata ---------------------------------- */
#define HIGAN__MODEL_RANGE(v, lo, hi, what)                                                        \
    do { if ((int64_t)(v) < (int64_t)(lo) || (int64_t)(v) > (int64_t)(hi))                          \
        return higan__error(HIGAN_ERR_ARG, "model config: %s = %lld is outside [%lld, %lld]", what,  \
                            (long long)(v), (long long)(lo), (long long)(hi)); } while (0)
static higan_status higan__model_check_backbone(const higan_backbone_config *b, const char *who) {
    char what[64];
    snprintf(what, sizeof what, "%s resolution", who); HIGAN__MODEL_RANGE(b->resolution, 1, 1024, what);
    snprintf(what, sizeof what, "%s max_dim", who);    HIGAN__MODEL_RANGE(b->max_dim, 1, 4096, what);
    snprintf(what, sizeof what, "%s in_channel", who); HIGAN__MODEL_RANGE(b->in_channel, 1, 4, what);
    if (!(b->dropout >= 0.0f && b->dropout < 1.0f))
        return higan__error(HIGAN_ERR_ARG, "model config: %s dropout = %g is outside [0, 1)", who, (double)b->dropout);
    return HIGAN_OK;
}
static higan_status higan__model_check_config(const higan_model_config *c) {
    higan_status st;
    unsigned n = c->nets;
    if (n == 0 || (n & ~HIGAN_NETS_ALL))
        return higan__error(HIGAN_ERR_ARG, "model config: nets = 0x%x; use HIGAN_NETS_DEPLOY, HIGAN_NETS_ALL "
                            "or HIGAN_NET_BIT(HIGAN_NET_...) values", n);
    if (n & (HIGAN_NET_BIT(HIGAN_NET_GENERATOR) | HIGAN_NET_BIT(HIGAN_NET_STYLE_ENCODER)))
        HIGAN__MODEL_RANGE(c->G.style_dim, 1, 4096, "G.style_dim");
    if (n & HIGAN_NET_BIT(HIGAN_NET_GENERATOR)) {
        HIGAN__MODEL_RANGE(c->G.ch, 1, 512, "G.ch");
        HIGAN__MODEL_RANGE(c->G.embed_dim, 1, 4096, "G.embed_dim");
        HIGAN__MODEL_RANGE(c->G.n_class, HIGAN_ALPHABET_SIZE, HIGAN_ALPHABET_SIZE, "G.n_class (the alphabet size)");
        HIGAN__MODEL_RANGE(c->G.bottom, 1, 16, "G.bottom");
        HIGAN__MODEL_RANGE(c->G.input_nc, 1, 4, "G.input_nc");
    }
    if (n & HIGAN_NET_BIT(HIGAN_NET_DISCRIMINATOR)) {
        HIGAN__MODEL_RANGE(c->D.ch, 1, 512, "D.ch");
        HIGAN__MODEL_RANGE(c->D.input_nc, 1, 4, "D.input_nc");
        if (c->D.resolution != 64 && c->D.resolution != 32)
            return higan__error(HIGAN_ERR_ARG, "model config: D.resolution = %lld; use 64 or 32", (long long)c->D.resolution);
    }
    if (n & HIGAN_NET_BIT(HIGAN_NET_PATCH_DISCRIMINATOR)) {
        HIGAN__MODEL_RANGE(c->P.ch, 1, 512, "P.ch");
        HIGAN__MODEL_RANGE(c->P.input_nc, 1, 4, "P.input_nc");
        if (c->P.resolution != 64 && c->P.resolution != 32)
            return higan__error(HIGAN_ERR_ARG, "model config: P.resolution = %lld; use 32 or 64", (long long)c->P.resolution);
    }
    if (n & (HIGAN_NET_BIT(HIGAN_NET_STYLE_BACKBONE) | HIGAN_NET_BIT(HIGAN_NET_STYLE_ENCODER) |
             HIGAN_NET_BIT(HIGAN_NET_WRITER_IDENTIFIER)))
        if ((st = higan__model_check_backbone(&c->B, "B")) != HIGAN_OK) return st;
    if (n & HIGAN_NET_BIT(HIGAN_NET_WRITER_IDENTIFIER)) HIGAN__MODEL_RANGE(c->n_writer, 1, 1000000, "n_writer");
    if (n & HIGAN_NET_BIT(HIGAN_NET_RECOGNIZER)) {
        if ((st = higan__model_check_backbone(&c->R.cnn, "R.cnn")) != HIGAN_OK) return st;
        HIGAN__MODEL_RANGE(c->R.n_class, HIGAN_ALPHABET_SIZE, HIGAN_ALPHABET_SIZE, "R.n_class (the alphabet size)");
        HIGAN__MODEL_RANGE(c->R.rnn_depth, 0, HIGAN_RECOGNIZER_MAX_DEPTH, "R.rnn_depth");
        if (c->R.rnn_depth > 0 && higan__model_backbone_out(&c->R.cnn) < 2)
            return higan__error(HIGAN_ERR_ARG, "model config: the Recognizer's LSTM needs a CNN output of at least 2 channels");
    }
    return HIGAN_OK;
}

/* The integer fields of a network's configuration, as written in "higan.config.<Network>".
   StyleEncoder's fields (style_dim, in_dim) belong to G and B and are handled apart. */
typedef struct { const char *key; int64_t *p64; int *p32; } higan__model_field;
static int higan__model_fields(higan_model_config *c, int net, higan__model_field *f) {
    int n = 0;
#define HIGAN__F64(k, x) (f[n].key = (k), f[n].p64 = &(x), f[n].p32 = NULL, ++n)
#define HIGAN__F32(k, x) (f[n].key = (k), f[n].p64 = NULL, f[n].p32 = &(x), ++n)
    switch (net) {
    case HIGAN_NET_GENERATOR:
        HIGAN__F64("ch", c->G.ch); HIGAN__F64("style_dim", c->G.style_dim);
        HIGAN__F64("embed_dim", c->G.embed_dim); HIGAN__F64("n_class", c->G.n_class);
        HIGAN__F64("bottom", c->G.bottom); HIGAN__F64("input_nc", c->G.input_nc);
        break;
    case HIGAN_NET_STYLE_BACKBONE:
        HIGAN__F32("resolution", c->B.resolution); HIGAN__F32("max_dim", c->B.max_dim);
        HIGAN__F32("in_channel", c->B.in_channel);
        break;
    case HIGAN_NET_DISCRIMINATOR:
        HIGAN__F64("ch", c->D.ch); HIGAN__F64("resolution", c->D.resolution); HIGAN__F64("input_nc", c->D.input_nc);
        break;
    case HIGAN_NET_PATCH_DISCRIMINATOR:
        HIGAN__F64("ch", c->P.ch); HIGAN__F64("resolution", c->P.resolution); HIGAN__F64("input_nc", c->P.input_nc);
        break;
    case HIGAN_NET_WRITER_IDENTIFIER:
        HIGAN__F64("n_writer", c->n_writer);
        break;
    case HIGAN_NET_RECOGNIZER:
        HIGAN__F32("resolution", c->R.cnn.resolution); HIGAN__F32("max_dim", c->R.cnn.max_dim);
        HIGAN__F32("in_channel", c->R.cnn.in_channel); HIGAN__F32("n_class", c->R.n_class);
        HIGAN__F32("rnn_depth", c->R.rnn_depth);
        break;
    default: break;
    }
#undef HIGAN__F64
#undef HIGAN__F32
    return n;
}
static int64_t higan__model_field_get(const higan__model_field *f) { return f->p64 ? *f->p64 : (int64_t)*f->p32; }

/* "ch=64 style_dim=32 ..." */
static void higan__model_config_string(const higan_model_config *cfg, int net, char *buf, size_t cap) {
    higan_model_config c = *cfg;
    higan__model_field f[8];
    int i, n = higan__model_fields(&c, net, f);
    buf[0] = 0;
    for (i = 0; i < n; ++i)
        snprintf(buf + strlen(buf), cap - strlen(buf), "%s%s=%lld", i ? " " : "", f[i].key,
                 (long long)higan__model_field_get(&f[i]));
    if (net == HIGAN_NET_STYLE_ENCODER)
        snprintf(buf, cap, "style_dim=%lld in_dim=%lld", (long long)c.G.style_dim,
                 (long long)higan__model_backbone_out(&c.B));
    else if (net == HIGAN_NET_WRITER_IDENTIFIER)
        snprintf(buf + strlen(buf), cap - strlen(buf), " in_dim=%lld", (long long)higan__model_backbone_out(&c.B));
    else if (net == HIGAN_NET_STYLE_BACKBONE)
        snprintf(buf + strlen(buf), cap - strlen(buf), " dropout=%.9g", (double)c.B.dropout);
    else if (net == HIGAN_NET_RECOGNIZER)
        snprintf(buf + strlen(buf), cap - strlen(buf), " dropout=%.9g", (double)c.R.cnn.dropout);
}
/* Value of key in a "k=v k=v" list; 1 if found. */
static int higan__model_kv(const char *s, const char *key, double *v) {
    size_t kl = strlen(key);
    while (*s) {
        while (*s == ' ') ++s;
        if (!strncmp(s, key, kl) && s[kl] == '=') {
            char *end;
            *v = strtod(s + kl + 1, &end);
            return end != s + kl + 1 && (*end == ' ' || *end == 0);
        }
        while (*s && *s != ' ') ++s;
    }
    return 0;
}
static higan_status higan__model_kv_int(const char *s, const char *meta, const char *key, int64_t *out) {
    double v;
    if (!higan__model_kv(s, key, &v))
        return higan__error(HIGAN_ERR_FORMAT, "metadata %s = '%.200s' has no number '%s='", meta, s, key);
    if (!(v >= -1e9 && v <= 1e9) || v != floor(v))
        return higan__error(HIGAN_ERR_FORMAT, "metadata %s: %s = %g is not an integer", meta, key, v);
    *out = (int64_t)v;
    return HIGAN_OK;
}

/* Configuration of the networks in want as the checkpoint's metadata gives it (the
   official configuration where it is absent); has gets the networks that had metadata. */
static higan_status higan__model_config_from_meta(const higan_safetensors *st, unsigned want,
                                                  higan_model_config *fc, unsigned *has) {
    char key[96];
    int net, i, n;
    double dv;
    int64_t v = 0;
    higan_status rc;
    *fc = higan_model_default_config(want);
    *has = 0;
    for (net = 0; net < HIGAN_NET_COUNT; ++net) {
        higan__model_field f[8];
        const char *s;
        if (!(want & HIGAN_NET_BIT(net)) || net == HIGAN_NET_STYLE_ENCODER) continue;
        snprintf(key, sizeof key, "higan.config.%s", higan__model_net_names[net]);
        if (!(s = higan_safetensors_meta(st, key))) continue;
        *has |= HIGAN_NET_BIT(net);
        n = higan__model_fields(fc, net, f);
        for (i = 0; i < n; ++i) {
            if ((rc = higan__model_kv_int(s, key, f[i].key, &v)) != HIGAN_OK) return rc;
            if (f[i].p64) *f[i].p64 = v; else *f[i].p32 = (int)v;
        }
        if (net == HIGAN_NET_STYLE_BACKBONE && higan__model_kv(s, "dropout", &dv)) fc->B.dropout = (float)dv;
        if (net == HIGAN_NET_RECOGNIZER && higan__model_kv(s, "dropout", &dv)) fc->R.cnn.dropout = (float)dv;
    }
    /* StyleEncoder: its style_dim is G's, its in_dim the backbone's output */
    if (want & HIGAN_NET_BIT(HIGAN_NET_STYLE_ENCODER)) {
        const char *s = higan_safetensors_meta(st, "higan.config.StyleEncoder");
        if (s) {
            *has |= HIGAN_NET_BIT(HIGAN_NET_STYLE_ENCODER);
            if ((rc = higan__model_kv_int(s, "higan.config.StyleEncoder", "style_dim", &v)) != HIGAN_OK) return rc;
            if ((*has & HIGAN_NET_BIT(HIGAN_NET_GENERATOR)) && v != fc->G.style_dim)
                return higan__error(HIGAN_ERR_FORMAT, "metadata disagrees: StyleEncoder style_dim %lld, Generator "
                                    "style_dim %lld", (long long)v, (long long)fc->G.style_dim);
            fc->G.style_dim = v;
        }
    }
    for (i = 0; i < 2; ++i) {   /* StyleEncoder and WriterIdentifier read the backbone's output */
        const char *s;
        net = i == 0 ? HIGAN_NET_STYLE_ENCODER : HIGAN_NET_WRITER_IDENTIFIER;
        snprintf(key, sizeof key, "higan.config.%s", higan__model_net_names[net]);
        if (!(*has & HIGAN_NET_BIT(net)) || !(s = higan_safetensors_meta(st, key))) continue;
        if ((rc = higan__model_kv_int(s, key, "in_dim", &v)) != HIGAN_OK) return rc;
        if (v != higan__model_backbone_out(&fc->B))
            return higan__error(HIGAN_ERR_FORMAT, "metadata disagrees: %s in_dim %lld, but the StyleBackbone "
                                "configuration gives %lld", higan__model_net_names[net], (long long)v,
                                (long long)higan__model_backbone_out(&fc->B));
    }
    return HIGAN_OK;
}

/* The file's configuration (networks in has) against an initialised model's. */
static higan_status higan__model_config_compare(const higan_model *m, const higan_model_config *fc,
                                                unsigned has, const char *label) {
    higan_model_config a = *fc, b = m->cfg;
    int net, i, n;
    for (net = 0; net < HIGAN_NET_COUNT; ++net) {
        higan__model_field fa[8], fb[8];
        memset(fa, 0, sizeof fa); memset(fb, 0, sizeof fb);   /* -O3 cannot see the counts agree */
        if (!(has & HIGAN_NET_BIT(net))) continue;
        if (net == HIGAN_NET_STYLE_ENCODER) {
            if (a.G.style_dim != b.G.style_dim)
                return higan__error(HIGAN_ERR_FORMAT, "%s: StyleEncoder style_dim is %lld in the file but %lld in "
                                    "the model", label, (long long)a.G.style_dim, (long long)b.G.style_dim);
        }
        if (net == HIGAN_NET_STYLE_ENCODER || net == HIGAN_NET_WRITER_IDENTIFIER) {
            int64_t ia = higan__model_backbone_out(&a.B), ib = higan__model_backbone_out(&b.B);
            if (ia != ib)
                return higan__error(HIGAN_ERR_FORMAT, "%s: %s in_dim is %lld in the file but %lld in the model",
                                    label, higan__model_net_names[net], (long long)ia, (long long)ib);
        }
        n = higan__model_fields(&a, net, fa);
        higan__model_fields(&b, net, fb);
        for (i = 0; i < n; ++i) {
            int64_t va = higan__model_field_get(&fa[i]), vb = higan__model_field_get(&fb[i]);
            if (va != vb)
                return higan__error(HIGAN_ERR_FORMAT, "%s: %s %s is %lld in the file but %lld in the model "
                                    "(initialise the model with the file's configuration, or load into a "
                                    "zeroed model)", label, higan__model_net_names[net], fa[i].key,
                                    (long long)va, (long long)vb);
        }
    }
    return HIGAN_OK;
}

/* ---- building and initialising ---------------------------------------------------------------- */
static higan_status higan__model_build(higan_model *m, const higan_model_config *cfg) {
    higan_status st;
    unsigned n = cfg->nets;
    int64_t bout;
    int s;
    memset(m, 0, sizeof *m);
    if ((st = higan__model_check_config(cfg)) != HIGAN_OK) return st;
    m->cfg = *cfg;
    for (s = 0; s < HIGAN_STORE_COUNT; ++s) higan_params_init(&m->store[s]);
    bout = higan__model_backbone_out(&cfg->B);
    if (n & HIGAN_NET_BIT(HIGAN_NET_GENERATOR))
        higan_generator_register(&m->G, &m->store[HIGAN_STORE_GE], "Generator", &m->cfg.G);
    if (n & HIGAN_NET_BIT(HIGAN_NET_STYLE_ENCODER))
        higan_style_encoder_register(&m->E, &m->store[HIGAN_STORE_GE], "StyleEncoder", bout, cfg->G.style_dim);
    if (n & HIGAN_NET_BIT(HIGAN_NET_STYLE_BACKBONE))
        higan_style_backbone_register(&m->B, &m->store[HIGAN_STORE_BACKBONE], "StyleBackbone", &m->cfg.B);
    if (n & HIGAN_NET_BIT(HIGAN_NET_DISCRIMINATOR))
        higan_discriminator_register(&m->D, &m->store[HIGAN_STORE_DP], "Discriminator", &m->cfg.D);
    if (n & HIGAN_NET_BIT(HIGAN_NET_PATCH_DISCRIMINATOR))
        higan_discriminator_register(&m->P, &m->store[HIGAN_STORE_DP], "PatchDiscriminator", &m->cfg.P);
    if (n & HIGAN_NET_BIT(HIGAN_NET_WRITER_IDENTIFIER))
        higan_writer_identifier_register(&m->W, &m->store[HIGAN_STORE_WID], "WriterIdentifier", bout, cfg->n_writer);
    if (n & HIGAN_NET_BIT(HIGAN_NET_RECOGNIZER))
        higan_recognizer_register(&m->R, &m->store[HIGAN_STORE_OCR], "Recognizer", &m->cfg.R);
    for (s = 0; s < HIGAN_STORE_COUNT; ++s) {
        if (m->store[s].count == 0) continue;
        if ((st = higan_params_alloc(&m->store[s])) != HIGAN_OK) { higan_model_free(m); return st; }
    }
    /* pretrained beforehand and frozen during GAN training (gradients still flow through) */
    m->store[HIGAN_STORE_BACKBONE].frozen = 1;
    m->store[HIGAN_STORE_WID].frozen = 1;
    m->store[HIGAN_STORE_OCR].frozen = 1;
    m->initialised = 1;
    return HIGAN_OK;
}

HIGAN_DEF higan_status higan_model_init(higan_model *m, const higan_model_config *cfg, uint64_t seed) {
    higan_status st;
    higan_rng r;
    int net;
    if (!m || !cfg) return higan__error(HIGAN_ERR_ARG, "model_init: NULL argument");
    if ((st = higan__model_build(m, cfg)) != HIGAN_OK) return st;
    for (net = 0; net < HIGAN_NET_COUNT; ++net) {
        if (!(cfg->nets & HIGAN_NET_BIT(net))) continue;
        /* one stream per network: a network's init does not depend on the others present */
        higan_rng_seed(&r, seed ^ (0x9E3779B97F4A7C15ull * (uint64_t)(net + 1)));
        switch (net) {
        case HIGAN_NET_GENERATOR: higan_generator_init(&m->G, &r); break;
        case HIGAN_NET_STYLE_ENCODER: higan_style_encoder_init(&m->E, &r, HIGAN_INIT_TORCH); break;
        case HIGAN_NET_STYLE_BACKBONE: higan_style_backbone_init(&m->B, &r, HIGAN_INIT_N02); break;
        case HIGAN_NET_DISCRIMINATOR: higan_discriminator_init(&m->D, &r); break;
        case HIGAN_NET_PATCH_DISCRIMINATOR: higan_discriminator_init(&m->P, &r); break;
        case HIGAN_NET_WRITER_IDENTIFIER: higan_writer_identifier_init(&m->W, &r, HIGAN_INIT_TORCH); break;
        default: higan_recognizer_init(&m->R, &r, HIGAN_INIT_TORCH); break;
        }
    }
    return HIGAN_OK;
}

HIGAN_DEF void higan_model_free(higan_model *m) {
    int s;
    if (!m) return;
    for (s = 0; s < HIGAN_STORE_COUNT; ++s) higan_params_free(&m->store[s]);
    memset(m, 0, sizeof *m);
}

HIGAN_DEF int64_t higan_model_num_params(const higan_model *m, int net) {
    const higan_params *p;
    size_t l;
    int64_t total = 0;
    int i;
    if (!m || !m->initialised || net < 0 || net >= HIGAN_NET_COUNT || !(m->cfg.nets & HIGAN_NET_BIT(net))) return 0;
    p = &m->store[higan__model_net_stores[net]];
    l = strlen(higan__model_net_names[net]);
    for (i = 0; i < p->count; ++i)
        if (p->entries[i].kind == HIGAN_PARAM && !strncmp(p->entries[i].name, higan__model_net_names[net], l) &&
            p->entries[i].name[l] == '.')
            total += p->entries[i].numel;
    return total;
}

HIGAN_DEF higan_status higan_model_to_backend(higan_model *m, const higan_backend *be) {
    int s;
    higan_status st;
    if (!m || !m->initialised) return higan__error(HIGAN_ERR_ARG, "model_to_backend: the model is not initialised");
    for (s = 0; s < HIGAN_STORE_COUNT; ++s)
        if (m->store[s].allocated && (st = higan_params_to_backend(&m->store[s], be)) != HIGAN_OK) return st;
    return HIGAN_OK;
}

/* ---- save ------------------------------------------------------------------------------------- */
/* Renames metadata key from to to in a writer (params_add_to_writer writes "adam_step"). */
static higan_status higan__model_meta_rename(higan_safetensors_writer *w, const char *from, const char *to) {
    int i;
    for (i = 0; i < w->meta_count; ++i)
        if (!strcmp(w->meta_keys[i], from)) {
            size_t n = strlen(to) + 1;
            char *k = (char *)HIGAN_MALLOC(n);
            if (!k) return higan__error(HIGAN_ERR_NOMEM, "model_save: out of memory");
            memcpy(k, to, n);
            HIGAN_FREE(w->meta_keys[i]);
            w->meta_keys[i] = k;
        }
    return HIGAN_OK;
}

HIGAN_DEF higan_status higan_model_save(const higan_model *m, const char *path,
                                        const higan_adam *const *opts) {
    higan_safetensors_writer w;
    higan_status st = HIGAN_OK;
    char key[96], val[512];
    unsigned cfg_nets;
    int net, s;
    if (!m || !path) return higan__error(HIGAN_ERR_ARG, "model_save: NULL argument");
    if (!m->initialised) return higan__error(HIGAN_ERR_ARG, "model_save: the model is not initialised");
    higan_safetensors_writer_init(&w);
    higan__model_list(val, sizeof val, m->cfg.nets);
    st = higan_safetensors_writer_meta(&w, "higan.version", HIGAN_VERSION_STRING);
    if (st == HIGAN_OK) st = higan_safetensors_writer_meta(&w, "higan.networks", val);
    if (st == HIGAN_OK) st = higan_safetensors_writer_meta(&w, "higan.alphabet", HIGAN_ALPHABET_STRING);
    /* the backbone's configuration also fixes the input width of E and W */
    cfg_nets = m->cfg.nets;
    if (cfg_nets & (HIGAN_NET_BIT(HIGAN_NET_STYLE_ENCODER) | HIGAN_NET_BIT(HIGAN_NET_WRITER_IDENTIFIER)))
        cfg_nets |= HIGAN_NET_BIT(HIGAN_NET_STYLE_BACKBONE);
    for (net = 0; net < HIGAN_NET_COUNT && st == HIGAN_OK; ++net) {
        if (!(cfg_nets & HIGAN_NET_BIT(net))) continue;
        snprintf(key, sizeof key, "higan.config.%s", higan__model_net_names[net]);
        higan__model_config_string(&m->cfg, net, val, sizeof val);
        st = higan_safetensors_writer_meta(&w, key, val);
    }
    for (s = 0; s < HIGAN_STORE_COUNT && st == HIGAN_OK; ++s) {
        const higan_adam *opt = opts ? opts[s] : NULL;
        if (m->store[s].count == 0) continue;
        st = higan_params_add_to_writer(&m->store[s], &w, "", opt);
        if (st == HIGAN_OK && opt) {
            snprintf(key, sizeof key, "%s.adam_step", higan__model_store_names[s]);
            st = higan__model_meta_rename(&w, "adam_step", key);
            snprintf(key, sizeof key, "%s.adam_hparams", higan__model_store_names[s]);
            if (st == HIGAN_OK) st = higan__model_meta_rename(&w, "adam_hparams", key);
        }
    }
    if (st == HIGAN_OK) st = higan_safetensors_writer_save(&w, path);
    higan_safetensors_writer_free(&w);
    return st;
}

/* ---- load ------------------------------------------------------------------------------------- */
static int higan__model_has_prefix(const char *name, int net) {
    size_t l = strlen(higan__model_net_names[net]);
    return !strncmp(name, higan__model_net_names[net], l) && name[l] == '.';
}

/* Loads store s from the tensors of st that belong to the networks in nets (a view of st). */
static higan_status higan__model_load_store(higan_model *m, const higan_safetensors *st, int s, unsigned nets,
                                            higan_adam *opt, const char *label) {
    higan_safetensors view;
    char step_key[] = "adam_step", opt_key[64], *keys[1], *values[1];
    const char *step;
    higan_status rc;
    int i, net;
    memset(&view, 0, sizeof view);
    view.data = st->data;
    view.tensors = (higan_st_tensor *)HIGAN_MALLOC(sizeof(higan_st_tensor) * (size_t)(st->count > 0 ? st->count : 1));
    if (!view.tensors) return higan__error(HIGAN_ERR_NOMEM, "model_load: out of memory");
    for (i = 0; i < st->count; ++i)
        for (net = 0; net < HIGAN_NET_COUNT; ++net)
            if ((nets & HIGAN_NET_BIT(net)) && higan__model_has_prefix(st->tensors[i].name, net)) {
                view.tensors[view.count++] = st->tensors[i];
                break;
            }
    snprintf(opt_key, sizeof opt_key, "%s.adam_step", higan__model_store_names[s]);
    step = opt ? higan_safetensors_meta(st, opt_key) : NULL;
    if (step) {   /* higan_params_load reads the step as "adam_step" */
        keys[0] = step_key;
        values[0] = (char *)step;
        view.meta_keys = keys;
        view.meta_values = values;
        view.meta_count = 1;
    }
    rc = higan_params_load(&m->store[s], &view, "", step ? opt : NULL);
    HIGAN_FREE(view.tensors);
    if (rc != HIGAN_OK) {
        char msg[1024];
        const char *e = higan_last_error(), *skip = "params_load (prefix ''): ";
        if (!strncmp(e, skip, strlen(skip))) e += strlen(skip);
        snprintf(msg, sizeof msg, "%s", e);
        return higan__error(rc, "%s: %s", label, msg);
    }
    m->opt_loaded[s] = step != NULL;
    return HIGAN_OK;
}

static higan_status higan__model_load(higan_model *m, const higan_safetensors *st, unsigned nets,
                                      higan_adam *opts, const char *label) {
    higan_model_config fc;
    higan_status rc;
    unsigned present = 0, want, has;
    char list_a[256], list_b[256];
    const char *alpha;
    int i, net, s, built = 0;
    if (nets & ~HIGAN_NETS_ALL) return higan__error(HIGAN_ERR_ARG, "model_load: nets = 0x%x is not a network mask", nets);
    for (i = 0; i < st->count; ++i)
        for (net = 0; net < HIGAN_NET_COUNT; ++net)
            if (higan__model_has_prefix(st->tensors[i].name, net)) present |= HIGAN_NET_BIT(net);
    higan__model_list(list_b, sizeof list_b, present);
    if (m->initialised) {
        want = nets ? nets : m->cfg.nets;
        if (want & ~m->cfg.nets) {
            higan__model_list(list_a, sizeof list_a, want & ~m->cfg.nets);
            return higan__error(HIGAN_ERR_ARG, "%s: the model has no %s (initialise it with those networks)", label, list_a);
        }
        for (s = 0; s < HIGAN_STORE_COUNT; ++s) {
            unsigned in_model = m->cfg.nets & higan__model_store_nets(s);
            if ((want & in_model) && (want & in_model) != in_model) {
                higan__model_list(list_a, sizeof list_a, in_model);
                return higan__error(HIGAN_ERR_ARG, "%s: %s share one parameter store and load together", label, list_a);
            }
        }
    } else {
        want = nets ? nets : present;
        if (!want)
            return higan__error(HIGAN_ERR_FORMAT, "%s holds no HiGAN+ network (no tensor named Generator.*, "
                                "StyleEncoder.*, StyleBackbone.*, Discriminator.*, PatchDiscriminator.*, "
                                "WriterIdentifier.* or Recognizer.*)", label);
    }
    if (want & ~present) {
        higan__model_list(list_a, sizeof list_a, want & ~present);
        return higan__error(HIGAN_ERR_FORMAT, "%s has no %s (it holds: %s)", label, list_a, list_b);
    }
    alpha = higan_safetensors_meta(st, "higan.alphabet");
    if (alpha && strcmp(alpha, HIGAN_ALPHABET_STRING) != 0)
        return higan__error(HIGAN_ERR_FORMAT, "%s was trained with another alphabet ('%.100s'), not HiGAN+'s '%s'",
                            label, alpha, HIGAN_ALPHABET_STRING);
    if ((rc = higan__model_config_from_meta(st, want, &fc, &has)) != HIGAN_OK) {
        char msg[1024];
        snprintf(msg, sizeof msg, "%s", higan_last_error());
        return higan__error(rc, "%s: %s", label, msg);
    }
    if (m->initialised) {
        if ((rc = higan__model_config_compare(m, &fc, has, label)) != HIGAN_OK) return rc;
    } else {
        if ((rc = higan__model_build(m, &fc)) != HIGAN_OK) {
            char msg[1024];
            snprintf(msg, sizeof msg, "%s", higan_last_error());
            return higan__error(rc, "%s: %s", label, msg);
        }
        built = 1;
    }
    for (s = 0; s < HIGAN_STORE_COUNT; ++s) m->opt_loaded[s] = 0;
    for (s = 0; s < HIGAN_STORE_COUNT; ++s) {
        unsigned sn = want & higan__model_store_nets(s);
        if (!sn) continue;
        if ((rc = higan__model_load_store(m, st, s, sn, opts ? &opts[s] : NULL, label)) != HIGAN_OK) {
            if (built) higan_model_free(m);
            return rc;
        }
    }
    return HIGAN_OK;
}

HIGAN_DEF higan_status higan_model_load_safetensors(higan_model *m, const higan_safetensors *st,
                                                    unsigned nets, higan_adam *opts) {
    if (!m || !st) return higan__error(HIGAN_ERR_ARG, "model_load: NULL argument");
    return higan__model_load(m, st, nets, opts, "checkpoint");
}

HIGAN_DEF higan_status higan_model_load(higan_model *m, const char *path, unsigned nets, higan_adam *opts) {
    higan_safetensors st;
    higan_status rc;
    char label[300];
    if (!m || !path) return higan__error(HIGAN_ERR_ARG, "model_load: NULL argument");
    if ((rc = higan_safetensors_load(&st, path)) != HIGAN_OK) return rc;
    snprintf(label, sizeof label, "checkpoint '%.256s'", path);
    rc = higan__model_load(m, &st, nets, opts, label);
    higan_safetensors_free(&st);
    return rc;
}

/* ---- image resampling (cv2.resize INTER_AREA / INTER_LINEAR, per axis) ------------------------ */
typedef struct {
    int64_t *first;   /* [dsize + 1]: taps of destination d are first[d] .. first[d+1]-1 */
    int64_t *src;
    float *w;
} higan__taps;
static void higan__taps_free(higan__taps *t) { HIGAN_FREE(t->first); HIGAN_FREE(t->src); HIGAN_FREE(t->w); }
static higan_status higan__taps_make(higan__taps *t, int64_t ssize, int64_t dsize) {
    double scale = (double)ssize / (double)dsize;
    int64_t cap = ssize + 2 * dsize + 2, k = 0, d;
    t->first = (int64_t *)HIGAN_MALLOC(sizeof(int64_t) * (size_t)(dsize + 1));
    t->src = (int64_t *)HIGAN_MALLOC(sizeof(int64_t) * (size_t)cap);
    t->w = (float *)HIGAN_MALLOC(sizeof(float) * (size_t)cap);
    if (!t->first || !t->src || !t->w) { higan__taps_free(t); return higan__error(HIGAN_ERR_NOMEM, "image_resize: out of memory"); }
    for (d = 0; d < dsize; ++d) {
        t->first[d] = k;
        if (dsize < ssize) {   /* INTER_AREA: OpenCV's computeResizeAreaTab */
            double fs1 = (double)d * scale, fs2 = fs1 + scale;
            double cell = scale < (double)ssize - fs1 ? scale : (double)ssize - fs1;
            int64_t s1 = (int64_t)ceil(fs1), s2 = (int64_t)floor(fs2), sx;
            if (s2 > ssize - 1) s2 = ssize - 1;
            if (s1 > s2) s1 = s2;
            if ((double)s1 - fs1 > 1e-3) { t->src[k] = s1 - 1; t->w[k++] = (float)(((double)s1 - fs1) / cell); }
            for (sx = s1; sx < s2; ++sx) { t->src[k] = sx; t->w[k++] = (float)(1.0 / cell); }
            if (fs2 - (double)s2 > 1e-3) {
                double part = fs2 - (double)s2 < 1.0 ? fs2 - (double)s2 : 1.0;
                t->src[k] = s2; t->w[k++] = (float)((part < cell ? part : cell) / cell);
            }
        } else {               /* INTER_LINEAR: half-pixel centres, clamped at the edges */
            float fx = (float)(((double)d + 0.5) * scale - 0.5);
            int64_t sx = (int64_t)floor(fx);
            fx -= (float)sx;
            if (sx < 0) { fx = 0.0f; sx = 0; }
            if (sx >= ssize - 1) { fx = 0.0f; sx = ssize - 1; }
            t->src[k] = sx; t->w[k++] = 1.0f - fx;
            if (fx != 0.0f) { t->src[k] = sx + 1; t->w[k++] = fx; }
        }
    }
    t->first[dsize] = k;
    return HIGAN_OK;
}
/* a source image: floats, or 8-bit pixels converted to gray on the fly */
typedef struct { const float *f; const unsigned char *u8; int channels; int64_t stride; } higan__img_src;
static double higan__img_at(const higan__img_src *s, int64_t y, int64_t x) {
    const unsigned char *p;
    double g, a;
    if (s->f) return s->f[y * s->stride + x];
    p = s->u8 + (y * s->stride + x) * s->channels;
    switch (s->channels) {
    case 1: return p[0];
    case 2: a = p[1] / 255.0; return p[0] * a + 255.0 * (1.0 - a);          /* over white */
    case 3: return 0.299 * p[0] + 0.587 * p[1] + 0.114 * p[2];
    default:
        g = 0.299 * p[0] + 0.587 * p[1] + 0.114 * p[2];
        a = p[3] / 255.0;
        return g * a + 255.0 * (1.0 - a);
    }
}
static higan_status higan__resize(float *y, int64_t out_h, int64_t out_w, const higan__img_src *x,
                                  int64_t in_h, int64_t in_w) {
    higan__taps ty, tx;
    higan_status st;
    int64_t dy, dx, i, j;
    if (out_h < 1 || out_w < 1 || in_h < 1 || in_w < 1)
        return higan__error(HIGAN_ERR_ARG, "image_resize: empty image (%lld x %lld to %lld x %lld)",
                            (long long)in_h, (long long)in_w, (long long)out_h, (long long)out_w);
    if ((st = higan__taps_make(&ty, in_h, out_h)) != HIGAN_OK) return st;
    if ((st = higan__taps_make(&tx, in_w, out_w)) != HIGAN_OK) { higan__taps_free(&ty); return st; }
    for (dy = 0; dy < out_h; ++dy)
        for (dx = 0; dx < out_w; ++dx) {
            double acc = 0.0;
            for (i = ty.first[dy]; i < ty.first[dy + 1]; ++i) {
                double row = 0.0;
                for (j = tx.first[dx]; j < tx.first[dx + 1]; ++j)
                    row += (double)tx.w[j] * higan__img_at(x, ty.src[i], tx.src[j]);
                acc += (double)ty.w[i] * row;
            }
            y[dy * out_w + dx] = (float)acc;
        }
    higan__taps_free(&ty);
    higan__taps_free(&tx);
    return HIGAN_OK;
}
HIGAN_DEF higan_status higan_image_resize(float *y, int64_t out_h, int64_t out_w, const float *x,
                                          int64_t in_h, int64_t in_w) {
    higan__img_src src;
    if (!y || !x) return higan__error(HIGAN_ERR_ARG, "image_resize: NULL argument");
    src.f = x; src.u8 = NULL; src.channels = 1; src.stride = in_w;
    return higan__resize(y, out_h, out_w, &src, in_h, in_w);
}

HIGAN_DEF int higan_image_to_input(const unsigned char *pixels, int w, int h, int channels,
                                   float *out, int64_t out_cap) {
    higan__img_src src;
    higan_status st;
    int64_t W, i;
    if (!pixels && out) return higan__error(HIGAN_ERR_ARG, "image_to_input: NULL pixels");
    if (w < 1 || h < 1) return higan__error(HIGAN_ERR_ARG, "image_to_input: empty image (%d x %d pixels)", w, h);
    if (w > 32768 || h > 32768)
        return higan__error(HIGAN_ERR_ARG, "image_to_input: %d x %d pixels is too large (at most 32768 a side)", w, h);
    if (channels < 1 || channels > 4)
        return higan__error(HIGAN_ERR_ARG, "image_to_input: %d channels (use 1 gray, 2 gray+alpha, 3 RGB, 4 RGBA)", channels);
    /* official ImageDataset: new_w = int(w * (64 / h)) */
    W = (int64_t)floor((double)w * ((double)HIGAN_IMAGE_HEIGHT / (double)h));
    if (W < 1) W = 1;
    if (W > HIGAN_MAX_IMAGE_WIDTH)
        return higan__error(HIGAN_ERR_ARG, "image_to_input: a %d x %d image is %lld pixels wide at height 64 "
                            "(at most %d): crop it to one word", w, h, (long long)W, HIGAN_MAX_IMAGE_WIDTH);
    if (!out) return (int)W;
    if (out_cap < HIGAN_IMAGE_HEIGHT * W)
        return higan__error(HIGAN_ERR_ARG, "image_to_input: out has %lld floats, needs %lld (64 x %lld)",
                            (long long)out_cap, (long long)(HIGAN_IMAGE_HEIGHT * W), (long long)W);
    src.f = NULL; src.u8 = pixels; src.channels = channels; src.stride = w;
    if ((st = higan__resize(out, HIGAN_IMAGE_HEIGHT, W, &src, h, w)) != HIGAN_OK) return st;
    /* invert (ink bright) and ToTensor + Normalize(0.5, 0.5): (255 - g) / 127.5 - 1 */
    for (i = 0; i < HIGAN_IMAGE_HEIGHT * W; ++i) out[i] = (float)(1.0 - (double)out[i] / 127.5);
    return (int)W;
}

/* ---- generation ------------------------------------------------------------------------------- */
HIGAN_DEF void higan_style_random(const higan_model *m, higan_rng *rng, float *style_out) {
    HIGAN_ASSERT(m && m->initialised && rng && style_out);
    higan_rng_fill_normal(rng, style_out, m->cfg.G.style_dim, 0.0f, 1.0f);
}

HIGAN_DEF int higan_generate_word(higan_model *m, higan_tape *t, const char *text, const float *style,
                                  float *out, int64_t out_cap) {
    int labels[HIGAN_MAX_WORD_LEN], n, lens[1];
    int64_t H, W, C, zs[2];
    higan_tape_pos mark;
    higan_var *z, *y;
    higan_status rc = HIGAN_OK;
    if (!m || !m->initialised || !(m->cfg.nets & HIGAN_NET_BIT(HIGAN_NET_GENERATOR)))
        return higan__error(HIGAN_ERR_ARG, "generate_word: the model has no Generator");
    if ((n = higan_text_encode(text, labels, HIGAN_MAX_WORD_LEN)) < 0) return n;
    H = 16 * m->cfg.G.bottom;
    W = 8 * m->cfg.G.bottom * n;
    C = m->cfg.G.input_nc;
    if (!out) return (int)W;
    if (!t || !style) return higan__error(HIGAN_ERR_ARG, "generate_word: NULL tape or style");
    if (out_cap < C * H * W)
        return higan__error(HIGAN_ERR_ARG, "generate_word: out has %lld floats, '%s' needs %lld (%lld x %lld x %lld)",
                            (long long)out_cap, text, (long long)(C * H * W), (long long)C, (long long)H, (long long)W);
    mark = higan_tape_mark(t);
    higan_no_grad_begin(t);
    zs[0] = 1; zs[1] = m->cfg.G.style_dim;
    z = higan_var_upload(t, style, 2, zs);
    lens[0] = n;
    y = z ? higan_generator_forward(t, &m->G, z, labels, lens, n, 0) : NULL;
    higan_no_grad_end(t);
    if (y) higan_var_read(t, y, out, C * H * W);
    else rc = higan_tape_status(t) != HIGAN_OK ? HIGAN_ERR_NOMEM : HIGAN_ERR_ARG;   /* message already set */
    if (y && t->be->device && (rc = higan_tape_sync(t)) != HIGAN_OK) y = NULL;
    higan_tape_release(t, mark);
    return rc != HIGAN_OK ? rc : (int)W;
}

/* one forward of k words: z rows from the styles of idx[0..k), labels [k, L] (0-padded),
   lens; the first 8*bottom*len columns of each word into its output */
static higan_status higan__generate_run(higan_model *m, higan_tape *t, const higan__gen_weights *gw,
                                        const int *codes, const int *lens, const int *idx, int64_t k,
                                        int64_t L, const float *styles, int64_t style_stride,
                                        float *const *outs) {
    const int64_t zd = m->cfg.G.style_dim, C = m->cfg.G.input_nc, H = 16 * m->cfg.G.bottom;
    const int64_t cpc = 8 * m->cfg.G.bottom;
    higan_tape_pos mark = higan_tape_mark(t);
    int *lab = (int *)higan_arena_alloc(t->arena, sizeof(int) * (size_t)(k * L + k));
    int *ln = lab ? lab + k * L : NULL;
    int64_t zs[2], j, c, r;
    higan_var *z = NULL, *y = NULL;
    const float *yh = NULL;
    zs[0] = k; zs[1] = zd;
    if (lab && (z = higan_var_new(t, 2, zs)) != NULL) {
        for (j = 0; j < k; ++j) {
            const int i = idx[j];
            t->be->upload(t->be->ctx, z->data + j * zd, styles + i * style_stride, sizeof(float) * (size_t)zd);
            memcpy(lab + j * L, codes + (int64_t)i * HIGAN_MAX_WORD_LEN, sizeof(int) * (size_t)lens[i]);
            for (c = lens[i]; c < L; ++c) lab[j * L + c] = 0;
            ln[j] = lens[i];
        }
        /* gw (words alone, all L long): the forward at exactly their width */
        y = gw ? higan__gen_forward_cols(t, &m->G, gw, z, lab, L, L, cpc * L)
               : higan_generator_forward(t, &m->G, z, lab, ln, L, 0);
    }
    if (y && !t->be->device) {
        yh = y->data;
    } else if (y) {      /* a device tape: the images come back in one download */
        float *h = higan_arena_floats(t->arena, higan_var_numel(y));
        higan_status st;
        if (h) higan_var_read(t, y, h, higan_var_numel(y));
        if ((st = higan_tape_sync(t)) != HIGAN_OK) { higan_tape_release(t, mark); return st; }
        if (!h) y = NULL;
        yh = h;
    }
    if (y)
        for (j = 0; j < k; ++j) {
            const int64_t w = cpc * lens[idx[j]];
            for (c = 0; c < C; ++c)
                for (r = 0; r < H; ++r)
                    memcpy(outs[idx[j]] + (c * H + r) * w, yh + ((j * C + c) * H + r) * (cpc * L),
                           sizeof(float) * (size_t)w);
        }
    higan_tape_release(t, mark);
    if (y) return HIGAN_OK;
    return higan_tape_status(t) != HIGAN_OK ? HIGAN_ERR_NOMEM : higan__error(HIGAN_ERR_ARG, "generate_words: forward failed");
}

/* generate_words alone: one job per chunk of same-length words */
typedef struct {
    higan_model *m;
    const higan__gen_weights *gw;
    const int *codes, *lens, *idx, *chunk;   /* chunk[2 i ..]: first index into idx, words */
    const float *styles;
    int64_t style_stride;
    float *const *outs;
} higan__generate_ctx;
static int higan__generate_job(higan_tape *t, void *p, int64_t ci) {
    const higan__generate_ctx *c = (const higan__generate_ctx *)p;
    const int *idx = c->idx + c->chunk[2 * ci];
    return higan__generate_run(c->m, t, c->gw, c->codes, c->lens, idx, c->chunk[2 * ci + 1], c->lens[idx[0]],
                               c->styles, c->style_stride, c->outs) == HIGAN_OK;
}

HIGAN_DEF higan_status higan_generate_words(higan_model *m, higan_tape *t, const char *const *texts, int64_t n,
                                            const float *styles, int64_t style_stride, int batch,
                                            float *const *outs, const int64_t *caps) {
    int *codes = NULL, *lens = NULL, *idx = NULL, *chunk = NULL;
    int64_t i, j, e, L = 0, C, H, per;
    higan__gen_weights gw;
    higan_tape_pos mark;
    higan_status rc = HIGAN_OK;
    if (!m || !m->initialised || !(m->cfg.nets & HIGAN_NET_BIT(HIGAN_NET_GENERATOR)))
        return higan__error(HIGAN_ERR_ARG, "generate_words: the model has no Generator");
    if (!t || !texts || !styles || !outs || !caps || n < 1 || style_stride < 0)
        return higan__error(HIGAN_ERR_ARG, "generate_words: NULL argument, n %lld or style_stride %lld",
                            (long long)n, (long long)style_stride);
    C = m->cfg.G.input_nc;
    H = 16 * m->cfg.G.bottom;
    codes = (int *)HIGAN_MALLOC(sizeof(int) * (size_t)(n * (HIGAN_MAX_WORD_LEN + 4)));
    if (!codes) return higan__error(HIGAN_ERR_NOMEM, "generate_words: out of memory");
    lens = codes + n * HIGAN_MAX_WORD_LEN;
    idx = lens + n;
    chunk = idx + n;
    for (i = 0; i < n && rc == HIGAN_OK; ++i) {
        int len = texts[i] ? higan_text_encode(texts[i], codes + i * HIGAN_MAX_WORD_LEN, HIGAN_MAX_WORD_LEN)
                           : higan__error(HIGAN_ERR_ARG, "NULL text");
        if (len >= 0 && (!outs[i] || caps[i] < C * H * 8 * m->cfg.G.bottom * len))
            len = higan__error(HIGAN_ERR_ARG, "out has %lld floats, needs %lld", (long long)caps[i],
                               (long long)(C * H * 8 * m->cfg.G.bottom * len));
        if (len < 0) {
            char msg[1024];
            snprintf(msg, sizeof msg, "%s", higan_last_error());
            rc = higan__error((higan_status)len, "generate_words: word %lld '%.100s': %s", (long long)(i + 1),
                              texts[i] ? texts[i] : "(null)", msg);
        } else {
            lens[i] = len;
            if (len > L) L = len;
        }
    }
    if (rc != HIGAN_OK) { HIGAN_FREE(codes); return rc; }
    mark = higan_tape_mark(t);
    higan_no_grad_begin(t);
    if (batch) {
        /* one padded batch (the Generator runs it by width groups); chunks of the padded width
           when it computes that width */
        per = m->G.eval_full_width ? HIGAN__MAX(1, HIGAN__GEN_GROUP_CHARS / L) : n;
        for (i = 0; i < n; ++i) idx[i] = (int)i;
        for (e = 0; e < n && rc == HIGAN_OK; e += per)
            rc = higan__generate_run(m, t, NULL, codes, lens, idx + e, HIGAN__MIN(per, n - e), L, styles,
                                     style_stride, outs);
    } else if (!t->be->device && !higan__gen_weights_eval(t, &m->G, &gw)) {
        rc = higan_tape_status(t) != HIGAN_OK ? HIGAN_ERR_NOMEM : higan__error(HIGAN_ERR_ARG, "generate_words: weights");
    } else {
        /* alone: same-length words together, each forward exactly its words' width, the
           normalised weights computed once, the embedding rows renormalised once; the
           longest words' forwards first (higan__gen_jobs). A device tape runs the same
           groups through the Generator's own forward (the cached weights and the renorm
           here are host kernels; higan__gen_jobs runs them one after the other there). */
        higan__generate_ctx gc;
        int64_t nch = 0;
        if (!t->be->device) higan__gen_renorm(&m->G, codes, HIGAN_MAX_WORD_LEN, lens, n);
        for (i = 0; i < n; ++i) idx[i] = (int)i;
        for (i = 1; i < n; ++i)    /* insertion sort by length, stable */
            for (j = i; j > 0 && lens[idx[j - 1]] > lens[idx[j]]; --j) { int s = idx[j]; idx[j] = idx[j - 1]; idx[j - 1] = s; }
        for (i = n; i > 0; i = j) {
            const int64_t len = lens[idx[i - 1]];
            for (j = i; j > 0 && lens[idx[j - 1]] == len; --j) {}
            if (len == 0) break;
            per = HIGAN__MAX(1, HIGAN__GEN_GROUP_CHARS / len);
            for (e = j; e < i; e += per) {
                chunk[2 * nch] = (int)e;
                chunk[2 * nch + 1] = (int)HIGAN__MIN(per, i - e);
                ++nch;
            }
        }
        gc.m = m; gc.gw = t->be->device ? NULL : &gw; gc.codes = codes; gc.lens = lens; gc.idx = idx; gc.chunk = chunk;
        gc.styles = styles; gc.style_stride = style_stride; gc.outs = outs;
        rc = higan__gen_jobs(t, nch, higan__generate_job, &gc);
    }
    higan_no_grad_end(t);
    higan_tape_release(t, mark);
    HIGAN_FREE(codes);
    return rc;
}

HIGAN_DEF higan_status higan_style_from_image(higan_model *m, higan_tape *t, const float *img, int64_t W,
                                              int n_chars, float *style_out) {
    const unsigned need = HIGAN_NET_BIT(HIGAN_NET_STYLE_BACKBONE) | HIGAN_NET_BIT(HIGAN_NET_STYLE_ENCODER);
    int64_t xs[4];
    int lens[1];
    higan_tape_pos mark;
    higan_var *x, *feat, *mu;
    float *host = NULL;
    higan_status rc = HIGAN_OK;
    if (!m || !m->initialised || (m->cfg.nets & need) != need)
        return higan__error(HIGAN_ERR_ARG, "style_from_image: the model needs a StyleBackbone and a StyleEncoder");
    if (m->cfg.B.in_channel != 1)
        return higan__error(HIGAN_ERR_ARG, "style_from_image: the StyleBackbone takes %d channels, not 1", m->cfg.B.in_channel);
    if (!t || !img || !style_out) return higan__error(HIGAN_ERR_ARG, "style_from_image: NULL argument");
    if (W < 1 || W > HIGAN_MAX_IMAGE_WIDTH)
        return higan__error(HIGAN_ERR_ARG, "style_from_image: image width %lld is outside 1..%d", (long long)W,
                            HIGAN_MAX_IMAGE_WIDTH);
    if (n_chars < 1 || n_chars > HIGAN_MAX_WORD_LEN)
        return higan__error(HIGAN_ERR_ARG, "style_from_image: %d characters; the reference must show 1..%d",
                            n_chars, HIGAN_MAX_WORD_LEN);
    mark = higan_tape_mark(t);
    higan_no_grad_begin(t);
    xs[0] = 1; xs[1] = 1; xs[2] = HIGAN_IMAGE_HEIGHT; xs[3] = (int64_t)HIGAN_CHAR_WIDTH * n_chars;
    lens[0] = (int)xs[3];
    x = higan_var_new(t, 4, xs);
    /* the resized image on the host (x itself on the CPU; staged and uploaded on a device tape) */
    if (x && !(host = t->be->device ? higan_arena_floats(t->arena, xs[2] * xs[3]) : x->data)) x = NULL;
    /* process_style: 32 px per character, area when shrinking, linear otherwise */
    if (x && (rc = higan_image_resize(host, HIGAN_IMAGE_HEIGHT, xs[3], img, HIGAN_IMAGE_HEIGHT, W)) != HIGAN_OK) x = NULL;
    if (x && host != x->data) t->be->upload(t->be->ctx, x->data, host, sizeof(float) * (size_t)(xs[2] * xs[3]));
    feat = x ? higan_style_backbone_forward(t, &m->B, x, 0, NULL, NULL) : NULL;
    mu = feat ? higan_style_encoder_forward(t, &m->E, feat, lens, 0, NULL, NULL, NULL, NULL) : NULL;
    higan_no_grad_end(t);
    if (mu) higan_var_read(t, mu, style_out, m->cfg.G.style_dim);
    else if (rc == HIGAN_OK) rc = higan_tape_status(t) != HIGAN_OK ? HIGAN_ERR_NOMEM : HIGAN_ERR_ARG;
    higan_tape_release(t, mark);
    return rc;
}

/* ---- styles: average, interpolation, files ---------------------------------------------------- */
HIGAN_DEF void higan_style_average(const float *styles, int n, int64_t dim, float *out) {
    int64_t j;
    int i;
    HIGAN_ASSERT(styles && out && n >= 1 && dim >= 0);
    for (j = 0; j < dim; ++j) {
        double acc = 0.0;
        for (i = 0; i < n; ++i) acc += styles[(int64_t)i * dim + j];
        out[j] = (float)(acc / n);
    }
}

HIGAN_DEF higan_status higan_style_from_images(higan_model *m, higan_tape *t, const float *const *imgs,
                                               const int64_t *widths, const int *n_chars, int n,
                                               float *style_out) {
    float *all;
    int64_t dim;
    higan_status rc = HIGAN_OK;
    int i;
    if (n < 1) return higan__error(HIGAN_ERR_ARG, "style_from_images: %d references (give at least one)", n);
    if (!m || !m->initialised || !imgs || !widths || !n_chars || !style_out)
        return higan__error(HIGAN_ERR_ARG, "style_from_images: NULL argument or uninitialised model");
    dim = m->cfg.G.style_dim;
    all = (float *)HIGAN_MALLOC(sizeof(float) * (size_t)(dim * n));
    if (!all) return higan__error(HIGAN_ERR_NOMEM, "style_from_images: out of memory");
    for (i = 0; i < n && rc == HIGAN_OK; ++i) {
        rc = higan_style_from_image(m, t, imgs[i], widths[i], n_chars[i], all + (int64_t)i * dim);
        if (rc != HIGAN_OK) {
            char msg[1024];
            snprintf(msg, sizeof msg, "%s", higan_last_error());
            higan__error(rc, "reference %d: %s", i, msg);
        }
    }
    if (rc == HIGAN_OK) higan_style_average(all, n, dim, style_out);
    HIGAN_FREE(all);
    return rc;
}

HIGAN_DEF void higan_style_lerp(const float *a, const float *b, int64_t dim, float w, float *out) {
    int64_t j;
    HIGAN_ASSERT(a && b && out && dim >= 0);
    for (j = 0; j < dim; ++j) {   /* torch.lerp's two-sided formula: exact at both ends */
        float d = b[j] - a[j];
        out[j] = w < 0.5f ? a[j] + w * d : b[j] - d * (1.0f - w);
    }
}

HIGAN_DEF higan_status higan_style_save(const char *path, const float *style, int64_t dim) {
    higan_safetensors_writer w;
    higan_status st;
    char buf[32];
    int64_t shape[1];
    if (!path || !style || dim < 1) return higan__error(HIGAN_ERR_ARG, "style_save: NULL argument or empty style");
    shape[0] = dim;
    snprintf(buf, sizeof buf, "%lld", (long long)dim);
    higan_safetensors_writer_init(&w);
    st = higan_safetensors_writer_add(&w, "style", HIGAN_F32, 1, shape, style);
    if (st == HIGAN_OK) st = higan_safetensors_writer_meta(&w, "higan.style_dim", buf);
    if (st == HIGAN_OK) st = higan_safetensors_writer_meta(&w, "higan.version", HIGAN_VERSION_STRING);
    if (st == HIGAN_OK) st = higan_safetensors_writer_save(&w, path);
    higan_safetensors_writer_free(&w);
    return st;
}

HIGAN_DEF int64_t higan_style_load(const char *path, float *style, int64_t cap) {
    higan_safetensors st;
    const higan_st_tensor *t;
    higan_status rc;
    int64_t dim;
    if (!path) return higan__error(HIGAN_ERR_ARG, "style_load: NULL path");
    if ((rc = higan_safetensors_load(&st, path)) != HIGAN_OK) return rc;
    t = higan_safetensors_find(&st, "style");
    if (!t || !(t->ndim == 1 || (t->ndim == 2 && t->shape[0] == 1)) || t->numel < 1) {
        higan_safetensors_free(&st);
        return higan__error(HIGAN_ERR_FORMAT, "style file '%.256s': %s", path,
                            t ? "tensor 'style' is not [dim] or [1, dim]" : "no tensor 'style'");
    }
    dim = t->numel;
    if (style || cap > 0) {
        if (dim > cap) {
            higan_safetensors_free(&st);
            return higan__error(HIGAN_ERR_ARG, "style file '%.256s' holds %lld values, room for %lld (a model with "
                                "another style_dim?)", path, (long long)dim, (long long)cap);
        }
        if (!style) { higan_safetensors_free(&st); return higan__error(HIGAN_ERR_ARG, "style_load: NULL style"); }
        if ((rc = higan_safetensors_read_f32(&st, "style", style, dim)) != HIGAN_OK) {
            char msg[1024];
            snprintf(msg, sizeof msg, "%s", higan_last_error());
            higan_safetensors_free(&st);
            return higan__error(rc, "style file '%.256s': %s", path, msg);
        }
    }
    higan_safetensors_free(&st);
    return dim;
}

/* ---- layout ----------------------------------------------------------------------------------- */
HIGAN_DEF higan_layout_options higan_layout_default_options(void) {
    higan_layout_options o;
    o.max_width = 0;
    o.word_gap = 16;
    o.line_gap = 0;
    o.margin = 8;
    o.align_baseline = 1;
    return o;
}

HIGAN_DEF int64_t higan_word_baseline(const float *img, int64_t H, int64_t W) {
    double small[256], *p = small, pmax = 0.0, mean = 0.0, thr, best_mass = -1.0, mass = 0.0;
    int64_t y, x, cnt = 0, best_end = -1, run_last = -1, gap = 0, fallback;
    HIGAN_ASSERT(img && H >= 1 && W >= 1);
    fallback = (5 * H) / 8 < 1 ? 1 : (5 * H) / 8;
    if (H > 256 && !(p = (double *)HIGAN_MALLOC(sizeof(double) * (size_t)H))) return fallback;
    for (y = 0; y < H; ++y) {          /* ink row profile: brighter than mid-gray, by strength */
        double acc = 0.0;
        for (x = 0; x < W; ++x) {
            float v = img[y * W + x];
            acc += v > 1.0f ? 1.0 : v > 0.0f ? (double)v : 0.0;
        }
        p[y] = acc;
        if (acc > pmax) pmax = acc;
    }
    if (!(pmax > 0.0)) { if (p != small) HIGAN_FREE(p); return fallback; }
    for (y = 0; y < H; ++y) if (p[y] >= 0.1 * pmax) { mean += p[y]; ++cnt; }
    thr = 0.5 * mean / (double)cnt;    /* half the mean density of the inked rows */
    /* runs of rows at or above thr (gaps of up to 2 rows bridged); the run holding the most
       ink is the core band, the row after its last dense row the baseline */
    for (y = 0; y <= H; ++y) {
        if (y < H && p[y] >= thr) {
            if (run_last < 0) mass = 0.0;
            else for (x = run_last + 1; x < y; ++x) mass += p[x];     /* a bridged gap */
            mass += p[y];
            run_last = y;
            gap = 0;
        } else if (run_last >= 0 && (y == H || ++gap > 2)) {
            if (mass > best_mass) { best_mass = mass; best_end = run_last; }
            run_last = -1;
            gap = 0;
        }
    }
    if (p != small) HIGAN_FREE(p);
    return best_end >= 0 ? best_end + 1 : fallback;
}

HIGAN_DEF void higan_page_free(higan_page *page) {
    if (!page) return;
    HIGAN_FREE(page->pixels);
    HIGAN_FREE(page->words);
    memset(page, 0, sizeof *page);
}

HIGAN_DEF higan_status higan_layout_words(higan_page *page, const float *const *imgs, const int64_t *widths,
                                          const int *breaks, int64_t n, int64_t H,
                                          const higan_layout_options *opt) {
    higan_layout_options o = opt ? *opt : higan_layout_default_options();
    higan_page_word *wd;
    int64_t i, j, avail, line, cx, max_line = 0, top, first, y, x;
    if (!page) return higan__error(HIGAN_ERR_ARG, "layout_words: NULL page");
    memset(page, 0, sizeof *page);
    if (n < 1 || !imgs || !widths) return higan__error(HIGAN_ERR_ARG, "layout_words: no words");
    if (H < 1 || H > 65536) return higan__error(HIGAN_ERR_ARG, "layout_words: image height %lld", (long long)H);
    if (o.max_width < 0 || o.word_gap < 0 || o.line_gap < 0 || o.margin < 0 ||
        o.max_width > 1000000 || o.word_gap > 100000 || o.line_gap > 100000 || o.margin > 100000)
        return higan__error(HIGAN_ERR_ARG, "layout_words: options out of range (max_width %lld, word_gap %lld, "
                            "line_gap %lld, margin %lld)", (long long)o.max_width, (long long)o.word_gap,
                            (long long)o.line_gap, (long long)o.margin);
    for (i = 0; i < n; ++i)
        if (!imgs[i] || widths[i] < 1 || widths[i] > HIGAN_MAX_IMAGE_WIDTH)
            return higan__error(HIGAN_ERR_ARG, "layout_words: word %lld has width %lld", (long long)i,
                                (long long)widths[i]);
    wd = (higan_page_word *)HIGAN_MALLOC(sizeof(higan_page_word) * (size_t)n);
    if (!wd) return higan__error(HIGAN_ERR_NOMEM, "layout_words: out of memory");
    /* greedy wrapping: the content x of every word and its line */
    avail = o.max_width > 0 ? o.max_width - 2 * o.margin : -1;
    line = 0; cx = 0;
    for (i = 0; i < n; ++i) {
        int64_t start = i == 0 ? 0 : cx + o.word_gap;
        if (i > 0 && ((breaks && breaks[i]) || (avail >= 0 && start + widths[i] > avail))) { ++line; start = 0; }
        wd[i].x = start;
        wd[i].width = widths[i];
        wd[i].line = line;
        wd[i].baseline = o.align_baseline ? higan_word_baseline(imgs[i], H, widths[i]) : 0;
        cx = start + widths[i];
        if (cx > max_line) max_line = cx;
    }
    page->n_lines = line + 1;
    page->width = (o.max_width > max_line + 2 * o.margin) ? o.max_width : max_line + 2 * o.margin;
    /* lines top to bottom: each as tall as its largest ascent plus its largest descent */
    top = o.margin;
    for (first = 0; first < n; first = j) {
        int64_t asc = 0, desc = 0;
        for (j = first; j < n && wd[j].line == wd[first].line; ++j) {
            if (wd[j].baseline > asc) asc = wd[j].baseline;
            if (H - wd[j].baseline > desc) desc = H - wd[j].baseline;
        }
        for (i = first; i < j; ++i) { wd[i].x += o.margin; wd[i].y = top + asc - wd[i].baseline; }
        top += asc + desc + (j < n ? o.line_gap : 0);
    }
    page->height = top + o.margin;
    if (page->width * page->height > ((int64_t)1 << 31)) {
        HIGAN_FREE(wd);
        memset(page, 0, sizeof *page);
        return higan__error(HIGAN_ERR_ARG, "layout_words: a %lld x %lld page is too large",
                            (long long)page->width, (long long)page->height);
    }
    page->pixels = (float *)HIGAN_MALLOC(sizeof(float) * (size_t)(page->width * page->height));
    if (!page->pixels) { HIGAN_FREE(wd); memset(page, 0, sizeof *page); return higan__error(HIGAN_ERR_NOMEM, "layout_words: out of memory"); }
    for (i = 0; i < page->width * page->height; ++i) page->pixels[i] = -1.0f;
    for (i = 0; i < n; ++i)            /* the brighter (inkier) value wins where images overlap */
        for (y = 0; y < H; ++y) {
            float *dst = page->pixels + (wd[i].y + y) * page->width + wd[i].x;
            const float *src = imgs[i] + y * widths[i];
            for (x = 0; x < widths[i]; ++x) if (src[x] > dst[x]) dst[x] = src[x];
        }
    page->words = wd;
    page->n_words = n;
    return HIGAN_OK;
}

HIGAN_DEF higan_status higan_generate_text(higan_model *m, higan_tape *t, const char *text, const float *style,
                                           const higan_layout_options *opt, higan_page *page) {
    char *copy = NULL, **word = NULL;
    float **imgs = NULL;
    int64_t *widths = NULL, *caps = NULL, n = 0, i, H, C;
    int *breaks = NULL, brk = 0;
    size_t len, k;
    higan_status rc = HIGAN_OK;
    if (!page) return higan__error(HIGAN_ERR_ARG, "generate_text: NULL page");
    memset(page, 0, sizeof *page);
    if (!m || !m->initialised || !(m->cfg.nets & HIGAN_NET_BIT(HIGAN_NET_GENERATOR)))
        return higan__error(HIGAN_ERR_ARG, "generate_text: the model has no Generator");
    if (!t || !text || !style) return higan__error(HIGAN_ERR_ARG, "generate_text: NULL argument");
    len = strlen(text);
    H = 16 * m->cfg.G.bottom;
    C = m->cfg.G.input_nc;
    copy = (char *)HIGAN_MALLOC(len + 1);
    word = (char **)HIGAN_MALLOC(sizeof(char *) * (len / 2 + 1));
    breaks = (int *)HIGAN_MALLOC(sizeof(int) * (len / 2 + 1));
    widths = (int64_t *)HIGAN_MALLOC(sizeof(int64_t) * (len / 2 + 1));
    caps = (int64_t *)HIGAN_MALLOC(sizeof(int64_t) * (len / 2 + 1));
    imgs = (float **)HIGAN_MALLOC(sizeof(float *) * (len / 2 + 1));
    if (!copy || !word || !breaks || !widths || !caps || !imgs) { rc = higan__error(HIGAN_ERR_NOMEM, "generate_text: out of memory"); goto done; }
    memcpy(copy, text, len + 1);
    for (k = 0; k < len; ) {   /* words: runs of anything but ' ', '\t', '\r', '\n' */
        char c = copy[k];
        if (c == ' ' || c == '\t' || c == '\r' || c == '\n') { if (c == '\n') brk = 1; copy[k++] = 0; continue; }
        word[n] = copy + k;
        breaks[n] = brk;
        imgs[n] = NULL;
        brk = 0;
        ++n;
        while (k < len && copy[k] != ' ' && copy[k] != '\t' && copy[k] != '\r' && copy[k] != '\n') ++k;
    }
    if (n == 0) { rc = higan__error(HIGAN_ERR_ARG, "generate_text: the text has no words"); goto done; }
    for (i = 0; i < n; ++i) {          /* check every word before running the network */
        int W = higan_generate_word(m, t, word[i], NULL, NULL, 0);
        if (W < 0) {
            char msg[1024];
            snprintf(msg, sizeof msg, "%s", higan_last_error());
            rc = higan__error(W, "generate_text: word %lld '%.100s': %s", (long long)(i + 1), word[i], msg);
            n = i;
            goto done;
        }
        widths[i] = W;
    }
    for (i = 0; i < n; ++i) {
        if (!(imgs[i] = (float *)HIGAN_MALLOC(sizeof(float) * (size_t)(C * H * widths[i])))) {
            rc = higan__error(HIGAN_ERR_NOMEM, "generate_text: out of memory");
            break;
        }
        caps[i] = C * H * widths[i];
    }
    /* every word alone, as higan_generate_word (channel 0 first) */
    if (rc == HIGAN_OK) rc = higan_generate_words(m, t, (const char *const *)word, n, style, 0, 0, imgs, caps);
    if (rc == HIGAN_OK) rc = higan_layout_words(page, (const float *const *)imgs, widths, breaks, n, H, opt);
done:
    if (imgs) for (i = 0; i < n; ++i) HIGAN_FREE(imgs[i]);
    HIGAN_FREE(imgs); HIGAN_FREE(widths); HIGAN_FREE(caps); HIGAN_FREE(breaks); HIGAN_FREE(word); HIGAN_FREE(copy);
    return rc;
}

HIGAN_DEF void higan_image_to_pixels(const float *x, int64_t n, int transparent, unsigned char *out) {
    int64_t i;
    HIGAN_ASSERT(x && out && n >= 0);
    for (i = 0; i < n; ++i) {
        float v = x[i] < -1.0f ? -1.0f : x[i] > 1.0f ? 1.0f : x[i];
        if (v != v) v = -1.0f;        /* NaN: background */
        if (transparent) {
            out[2 * i] = 0;
            out[2 * i + 1] = (unsigned char)floor((v + 1.0f) * 127.5f + 0.5f);
        } else {
            out[i] = (unsigned char)floor((1.0f - v) * 127.5f + 0.5f);
        }
    }
}

#undef HIGAN__MODEL_RANGE
/* ==== EVALUATION implementation ============================================================ */

/* ---- edit distance, CER, WER -------------------------------------------------------------- */
HIGAN_DEF int64_t higan_edit_distance(const int *a, int64_t na, const int *b, int64_t nb) {
    int64_t small[256], *row = small, i, j, r;
    if (na < 0 || nb < 0 || (na && !a) || (nb && !b))
        return higan__error(HIGAN_ERR_ARG, "edit_distance: bad arguments");
    if (nb + 1 > 256 && !(row = (int64_t *)HIGAN_MALLOC(sizeof(int64_t) * (size_t)(nb + 1))))
        return higan__error(HIGAN_ERR_NOMEM, "edit_distance: out of memory");
    for (j = 0; j <= nb; ++j) row[j] = j;          /* distance from the empty prefix of a */
    for (i = 1; i <= na; ++i) {
        int64_t diag = row[0];                     /* D[i-1][j-1] */
        row[0] = i;
        for (j = 1; j <= nb; ++j) {
            int64_t up = row[j], best = diag + (a[i - 1] != b[j - 1]);
            if (up + 1 < best) best = up + 1;              /* delete a[i-1] */
            if (row[j - 1] + 1 < best) best = row[j - 1] + 1;  /* insert b[j-1] */
            diag = up;
            row[j] = best;
        }
    }
    r = row[nb];
    if (row != small) HIGAN_FREE(row);
    return r;
}

/* Code points of a UTF-8 string into out (NULL: count only). A byte that does not start a
   valid sequence becomes 0x110000 + byte (never equal to a real code point). */
static int64_t higan__eval_utf8(const char *str, int *out) {
    const unsigned char *s = (const unsigned char *)str;
    int64_t n = 0;
    while (*s) {
        unsigned c = *s, cp;
        int len = c < 0x80 ? 1 : (c & 0xE0) == 0xC0 ? 2 : (c & 0xF0) == 0xE0 ? 3 : (c & 0xF8) == 0xF0 ? 4 : 0, k;
        cp = len == 1 ? c : len == 2 ? (c & 0x1F) : len == 3 ? (c & 0x0F) : (c & 0x07);
        for (k = 1; k < len; ++k) {
            if ((s[k] & 0xC0) != 0x80) { len = 0; break; }
            cp = (cp << 6) | (s[k] & 0x3F);
        }
        if (len == 0) { cp = 0x110000u + c; len = 1; }
        if (out) out[n] = (int)cp;
        ++n;
        s += len;
    }
    return n;
}
HIGAN_DEF int64_t higan_utf8_length(const char *s) { return s ? higan__eval_utf8(s, NULL) : 0; }

HIGAN_DEF int64_t higan_edit_distance_utf8(const char *a, const char *b) {
    int sa[128], sb[128], *ca = sa, *cb = sb;
    int64_t na, nb, r;
    if (!a || !b) return higan__error(HIGAN_ERR_ARG, "edit_distance_utf8: NULL string");
    na = higan__eval_utf8(a, NULL);
    nb = higan__eval_utf8(b, NULL);
    if (na > 128) ca = (int *)HIGAN_MALLOC(sizeof(int) * (size_t)na);
    if (nb > 128) cb = (int *)HIGAN_MALLOC(sizeof(int) * (size_t)nb);
    if (!ca || !cb) r = higan__error(HIGAN_ERR_NOMEM, "edit_distance_utf8: out of memory");
    else {
        higan__eval_utf8(a, ca);
        higan__eval_utf8(b, cb);
        r = higan_edit_distance(ca, na, cb, nb);
    }
    if (ca && ca != sa) HIGAN_FREE(ca);
    if (cb && cb != sb) HIGAN_FREE(cb);
    return r;
}

HIGAN_DEF void higan_text_score_init(higan_text_score *s) { memset(s, 0, sizeof *s); }
HIGAN_DEF higan_status higan_text_score_add(higan_text_score *s, const char *hyp, const char *ref) {
    int64_t d;
    if (!s || !hyp || !ref) return higan__error(HIGAN_ERR_ARG, "text_score_add: NULL argument");
    if ((d = higan_edit_distance_utf8(hyp, ref)) < 0) return (higan_status)d;
    s->edits += d;
    s->ref_chars += higan_utf8_length(ref);
    s->words += 1;
    s->wrong_words += d > 0;
    return HIGAN_OK;
}
HIGAN_DEF double higan_text_score_cer(const higan_text_score *s) {
    return s && s->ref_chars > 0 ? (double)s->edits / (double)s->ref_chars : NAN;
}
HIGAN_DEF double higan_text_score_wer(const higan_text_score *s) {
    return s && s->words > 0 ? (double)s->wrong_words / (double)s->words : NAN;
}

/* ---- writer identification ------------------------------------------------------------------ */
HIGAN_DEF int64_t higan_argmax(const float *x, int64_t n) {
    int64_t i, best = 0;
    HIGAN_ASSERT(x && n >= 1);
    for (i = 1; i < n; ++i) if (x[i] > x[best]) best = i;
    return best;
}
HIGAN_DEF double higan_wier(const int *pred_real, const int *pred_fake, int64_t n) {
    int64_t i, same = 0;
    if (n <= 0 || !pred_real || !pred_fake) return NAN;
    for (i = 0; i < n; ++i) same += pred_real[i] == pred_fake[i];
    return 1.0 - (double)same / (double)n;
}

/* ---- symmetric eigen-decomposition (cyclic Jacobi) ------------------------------------------- */
HIGAN_DEF higan_status higan_sym_eig(double *a, int64_t n, double *w, double *v) {
    int64_t p, q, k;
    int sweep;
    if (!a || !w || n < 1) return higan__error(HIGAN_ERR_ARG, "sym_eig: bad arguments");
    if (v) for (p = 0; p < n; ++p) for (q = 0; q < n; ++q) v[p * n + q] = p == q;
    for (sweep = 0; sweep < 100; ++sweep) {
        double off = 0.0, diag = 0.0;
        for (p = 0; p < n; ++p) {
            diag += a[p * n + p] * a[p * n + p];
            for (q = p + 1; q < n; ++q) off += 2.0 * a[p * n + q] * a[p * n + q];
        }
        if (off == 0.0 || off <= 1e-30 * diag) break;
        for (p = 0; p < n - 1; ++p)
            for (q = p + 1; q < n; ++q) {
                double apq = a[p * n + q], theta, t, c, s;
                if (apq == 0.0) continue;
                /* rotation J (c at pp and qq, s at pq, -s at qp) with (J^T A J)_pq = 0 */
                theta = (a[q * n + q] - a[p * n + p]) / (2.0 * apq);
                t = (theta >= 0.0 ? 1.0 : -1.0) / (fabs(theta) + sqrt(theta * theta + 1.0));
                c = 1.0 / sqrt(t * t + 1.0);
                s = t * c;
                for (k = 0; k < n; ++k) {          /* A <- A J (columns p, q) */
                    double akp = a[k * n + p], akq = a[k * n + q];
                    a[k * n + p] = c * akp - s * akq;
                    a[k * n + q] = s * akp + c * akq;
                }
                for (k = 0; k < n; ++k) {          /* A <- J^T A (rows p, q) */
                    double apk = a[p * n + k], aqk = a[q * n + k];
                    a[p * n + k] = c * apk - s * aqk;
                    a[q * n + k] = s * apk + c * aqk;
                }
                a[p * n + q] = a[q * n + p] = 0.0;
                if (v)
                    for (k = 0; k < n; ++k) {      /* V <- V J */
                        double vkp = v[k * n + p], vkq = v[k * n + q];
                        v[k * n + p] = c * vkp - s * vkq;
                        v[k * n + q] = s * vkp + c * vkq;
                    }
            }
        if (sweep == 99) return higan__error(HIGAN_ERR_FORMAT, "sym_eig: Jacobi did not converge in 100 sweeps");
    }
    for (p = 0; p < n; ++p) w[p] = a[p * n + p];
    return HIGAN_OK;
}

/* ---- FID ----------------------------------------------------------------------------------- */
/* mean [d] and unbiased covariance [d, d] of x [n, d] (n >= 2), in double */
static void higan__eval_gauss(const float *x, int64_t n, int64_t d, double *mean, double *cov, double *xc) {
    int64_t i, j;
    for (j = 0; j < d; ++j) {
        double acc = 0.0;
        for (i = 0; i < n; ++i) acc += x[i * d + j];
        mean[j] = acc / (double)n;
    }
    for (i = 0; i < n; ++i) for (j = 0; j < d; ++j) xc[i * d + j] = (double)x[i * d + j] - mean[j];
    HIGAN__PARALLEL_FOR
    for (j = 0; j < d; ++j) {            /* row j of the upper triangle: independent outputs */
        int64_t ii, k;
        double *row = cov + j * d;
        for (k = j; k < d; ++k) row[k] = 0.0;
        for (ii = 0; ii < n; ++ii) {
            double xj = xc[ii * d + j];
            const double *xr = xc + ii * d;
            for (k = j; k < d; ++k) row[k] += xj * xr[k];
        }
        for (k = j; k < d; ++k) row[k] /= (double)(n - 1);
    }
    for (j = 0; j < d; ++j) for (i = 0; i < j; ++i) cov[j * d + i] = cov[i * d + j];
}
/* c [d, d] = a b (all [d, d], double) */
static void higan__eval_matmul(double *c, const double *a, const double *b, int64_t d) {
    int64_t i;
    HIGAN__PARALLEL_FOR
    for (i = 0; i < d; ++i) {
        int64_t j, k;
        double *ci = c + i * d;
        for (j = 0; j < d; ++j) ci[j] = 0.0;
        for (k = 0; k < d; ++k) {
            double aik = a[i * d + k];
            const double *bk = b + k * d;
            for (j = 0; j < d; ++j) ci[j] += aik * bk[j];
        }
    }
}
/* Eigenvalues of a positive semi-definite matrix that are below 1e-12 of the largest are
   rounding noise of zero ones (singular covariances): set them to 0 before the square root. */
static void higan__eval_clip_eig(double *w, int64_t d) {
    double mx = 0.0;
    int64_t j;
    for (j = 0; j < d; ++j) if (w[j] > mx) mx = w[j];
    for (j = 0; j < d; ++j) if (w[j] <= 1e-12 * mx) w[j] = 0.0;
}
HIGAN_DEF higan_status higan_fid(const float *a, int64_t na, const float *b, int64_t nb, int64_t d, double *fid) {
    double *mu_a, *mu_b, *ca, *cb, *va, *wa, *sa, *tmp, *xc, diff = 0.0, tr_a = 0.0, tr_b = 0.0, tr_s = 0.0;
    int64_t i, j, nmax = na > nb ? na : nb;
    higan_status rc = HIGAN_OK;
    if (!a || !b || !fid || na < 2 || nb < 2 || d < 1)
        return higan__error(HIGAN_ERR_ARG, "fid: needs at least 2 feature vectors per set (got %lld and %lld) of "
                            "dimension >= 1", (long long)na, (long long)nb);
    mu_a = (double *)HIGAN_MALLOC(sizeof(double) * (size_t)(2 * d));
    ca = (double *)HIGAN_MALLOC(sizeof(double) * (size_t)(5 * d * d));
    wa = (double *)HIGAN_MALLOC(sizeof(double) * (size_t)d);
    xc = (double *)HIGAN_MALLOC(sizeof(double) * (size_t)(nmax * d));
    if (!mu_a || !ca || !wa || !xc) {
        HIGAN_FREE(mu_a); HIGAN_FREE(ca); HIGAN_FREE(wa); HIGAN_FREE(xc);
        return higan__error(HIGAN_ERR_NOMEM, "fid: out of memory (d = %lld)", (long long)d);
    }
    mu_b = mu_a + d;
    cb = ca + d * d; va = cb + d * d; sa = va + d * d; tmp = sa + d * d;
    higan__eval_gauss(a, na, d, mu_a, ca, xc);
    higan__eval_gauss(b, nb, d, mu_b, cb, xc);
    for (j = 0; j < d; ++j) {
        diff += (mu_a[j] - mu_b[j]) * (mu_a[j] - mu_b[j]);
        tr_a += ca[j * d + j];
        tr_b += cb[j * d + j];
    }
    /* sqrt(C_a) = V diag(sqrt(max(w, 0))) V^T */
    memcpy(tmp, ca, sizeof(double) * (size_t)(d * d));
    rc = higan_sym_eig(tmp, d, wa, va);
    if (rc == HIGAN_OK) {
        higan__eval_clip_eig(wa, d);
        for (j = 0; j < d; ++j) wa[j] = sqrt(wa[j]);
        for (i = 0; i < d; ++i) for (j = 0; j < d; ++j) tmp[i * d + j] = va[i * d + j] * wa[j];
        for (i = 0; i < d; ++i)
            for (j = 0; j < d; ++j) {
                double acc = 0.0;
                int64_t k;
                for (k = 0; k < d; ++k) acc += tmp[i * d + k] * va[j * d + k];
                sa[i * d + j] = acc;
            }
        /* M = sqrt(C_a) C_b sqrt(C_a): symmetric, with the eigenvalues of C_a C_b */
        higan__eval_matmul(tmp, sa, cb, d);
        higan__eval_matmul(va, tmp, sa, d);
        for (i = 0; i < d; ++i) for (j = 0; j < i; ++j) va[i * d + j] = va[j * d + i] = 0.5 * (va[i * d + j] + va[j * d + i]);
        rc = higan_sym_eig(va, d, wa, NULL);
    }
    if (rc == HIGAN_OK) {
        higan__eval_clip_eig(wa, d);
        for (j = 0; j < d; ++j) tr_s += sqrt(wa[j]);
        *fid = diff + tr_a + tr_b - 2.0 * tr_s;
    }
    HIGAN_FREE(mu_a); HIGAN_FREE(ca); HIGAN_FREE(wa); HIGAN_FREE(xc);
    return rc;
}

/* ---- KID ------------------------------------------------------------------------------------- */
/* Rows of a then b as one set of na + nb vectors; K (or NULL) holds every kernel value. */
typedef struct {
    const float *a, *b;
    int64_t na, nb, d;
    const double *K;
} higan__kid_set;
static double higan__kid_k(const higan__kid_set *S, int64_t u, int64_t v) {
    const float *x, *y;
    double dot = 0.0, k;
    int64_t j;
    if (S->K) return S->K[u * (S->na + S->nb) + v];
    x = u < S->na ? S->a + u * S->d : S->b + (u - S->na) * S->d;
    y = v < S->na ? S->a + v * S->d : S->b + (v - S->na) * S->d;
    for (j = 0; j < S->d; ++j) dot += (double)x[j] * (double)y[j];
    k = dot / (double)S->d + 1.0;       /* sklearn polynomial_kernel: gamma 1/d, coef0 1, degree 3 */
    return k * k * k;
}
/* Unbiased MMD^2 between the rows ia[0..ma) of a and ib[0..mb) of b (indices into a and b).
   rows: 2 ma + mb doubles of scratch holding per-row sums, added up in a fixed order so the
   result does not depend on the thread count. */
static double higan__kid_mmd2(const higan__kid_set *S, const int64_t *ia, int64_t ma, const int64_t *ib,
                              int64_t mb, double *rows) {
    int64_t i, total = ma + mb;
    double sxx = 0.0, syy = 0.0, sxy = 0.0;
    HIGAN__PARALLEL_FOR
    for (i = 0; i < total; ++i) {
        int64_t j;
        if (i < ma) {                     /* sum_{j != i} k(a_i, a_j) and sum_j k(a_i, b_j) */
            double xx = 0.0, xy = 0.0;
            for (j = 0; j < ma; ++j) if (j != i) xx += higan__kid_k(S, ia[i], ia[j]);
            for (j = 0; j < mb; ++j) xy += higan__kid_k(S, ia[i], S->na + ib[j]);
            rows[i] = xx;
            rows[total + i] = xy;
        } else {                          /* sum_{j != i} k(b_i, b_j) */
            double yy = 0.0;
            int64_t bi = i - ma;
            for (j = 0; j < mb; ++j) if (j != bi) yy += higan__kid_k(S, S->na + ib[bi], S->na + ib[j]);
            rows[i] = yy;
        }
    }
    for (i = 0; i < ma; ++i) { sxx += rows[i]; sxy += rows[total + i]; }
    for (i = ma; i < total; ++i) syy += rows[i];
    return sxx / ((double)ma * (double)(ma - 1)) + syy / ((double)mb * (double)(mb - 1)) -
           2.0 * sxy / ((double)ma * (double)mb);
}
HIGAN_DEF higan_status higan_mmd2_poly(const float *a, int64_t na, const float *b, int64_t nb, int64_t d, double *mmd2) {
    higan__kid_set S;
    int64_t *idx, i, m = na > nb ? na : nb;
    double *rows;
    if (!a || !b || !mmd2 || na < 2 || nb < 2 || d < 1)
        return higan__error(HIGAN_ERR_ARG, "mmd2_poly: needs at least 2 vectors per set (got %lld and %lld)",
                            (long long)na, (long long)nb);
    idx = (int64_t *)HIGAN_MALLOC(sizeof(int64_t) * (size_t)m);
    rows = (double *)HIGAN_MALLOC(sizeof(double) * (size_t)(2 * na + nb));
    if (!idx || !rows) { HIGAN_FREE(idx); HIGAN_FREE(rows); return higan__error(HIGAN_ERR_NOMEM, "mmd2_poly: out of memory"); }
    for (i = 0; i < m; ++i) idx[i] = i;
    S.a = a; S.b = b; S.na = na; S.nb = nb; S.d = d; S.K = NULL;
    *mmd2 = higan__kid_mmd2(&S, idx, na, idx, nb, rows);
    HIGAN_FREE(idx); HIGAN_FREE(rows);
    return HIGAN_OK;
}
/* uniform integer in [0, n) without modulo bias */
static int64_t higan__eval_randint(higan_rng *r, int64_t n) {
    uint64_t un = (uint64_t)n, limit = UINT64_MAX - UINT64_MAX % un, x;
    do x = higan_rng_u64(r); while (x >= limit);
    return (int64_t)(x % un);
}
/* kernel matrices of sets up to this many vectors (a and b together) are computed once */
#define HIGAN__KID_FULL_MAX 3072
HIGAN_DEF higan_status higan_kid(const float *a, int64_t na, const float *b, int64_t nb, int64_t d,
                                 int n_subsets, int64_t subset_size, higan_rng *rng, double *kid) {
    higan__kid_set S;
    int64_t m, nt = na + nb, *perm_a, *perm_b, i;
    double *rows, *K = NULL, acc = 0.0;
    int s;
    if (!a || !b || !kid || !rng || na < 2 || nb < 2 || d < 1 || n_subsets < 1 || subset_size < 2)
        return higan__error(HIGAN_ERR_ARG, "kid: needs at least 2 vectors per set (got %lld and %lld), subsets "
                            "of 2 or more (%lld) and at least one subset (%d)", (long long)na, (long long)nb,
                            (long long)subset_size, n_subsets);
    m = subset_size < na ? subset_size : na;
    if (nb < m) m = nb;
    perm_a = (int64_t *)HIGAN_MALLOC(sizeof(int64_t) * (size_t)na);
    perm_b = (int64_t *)HIGAN_MALLOC(sizeof(int64_t) * (size_t)nb);
    rows = (double *)HIGAN_MALLOC(sizeof(double) * (size_t)(3 * m));
    if (nt <= HIGAN__KID_FULL_MAX) K = (double *)HIGAN_MALLOC(sizeof(double) * (size_t)(nt * nt));
    if (!perm_a || !perm_b || !rows || (nt <= HIGAN__KID_FULL_MAX && !K)) {
        HIGAN_FREE(perm_a); HIGAN_FREE(perm_b); HIGAN_FREE(rows); HIGAN_FREE(K);
        return higan__error(HIGAN_ERR_NOMEM, "kid: out of memory");
    }
    S.a = a; S.b = b; S.na = na; S.nb = nb; S.d = d; S.K = NULL;
    if (K) {
        HIGAN__PARALLEL_FOR
        for (i = 0; i < nt; ++i) {
            int64_t j;
            for (j = i; j < nt; ++j) K[i * nt + j] = higan__kid_k(&S, i, j);
        }
        for (i = 0; i < nt; ++i) {
            int64_t j;
            for (j = 0; j < i; ++j) K[i * nt + j] = K[j * nt + i];
        }
        S.K = K;
    }
    for (s = 0; s < n_subsets; ++s) {
        /* numpy choice(n, m, replace=False) in spirit: the first m of a partial shuffle */
        for (i = 0; i < na; ++i) perm_a[i] = i;
        for (i = 0; i < nb; ++i) perm_b[i] = i;
        for (i = 0; i < m; ++i) {
            int64_t j = i + higan__eval_randint(rng, na - i), t = perm_a[i];
            perm_a[i] = perm_a[j]; perm_a[j] = t;
        }
        for (i = 0; i < m; ++i) {
            int64_t j = i + higan__eval_randint(rng, nb - i), t = perm_b[i];
            perm_b[i] = perm_b[j]; perm_b[j] = t;
        }
        acc += higan__kid_mmd2(&S, perm_a, m, perm_b, m, rows);
    }
    *kid = acc / n_subsets * 100.0;
    HIGAN_FREE(perm_a); HIGAN_FREE(perm_b); HIGAN_FREE(rows); HIGAN_FREE(K);
    return HIGAN_OK;
}

/* ---- PSNR and SSIM ------------------------------------------------------------------------------ */
HIGAN_DEF double higan_psnr(const float *x, const float *y, int64_t n) {
    double mse = 0.0;
    int64_t i;
    if (!x || !y || n < 1) return NAN;
    for (i = 0; i < n; ++i) { double d = (double)x[i] - (double)y[i]; mse += d * d; }
    mse /= (double)n;
    return mse > 0.0 ? 10.0 * log10(1.0 / mse) : INFINITY;
}

HIGAN_DEF double higan_ssim(const float *x, const float *y, int64_t H, int64_t W) {
    const double C1 = 0.01 * 0.01, C2 = 0.03 * 0.03, NP = 49.0, cov_norm = 49.0 / 48.0;
    int64_t OW, r, c, k, q;
    double *hs, total = 0.0;       /* horizontal 7-sums of x, y, xx, yy, xy: [5][H][OW] */
    if (!x || !y || H < 7 || W < 7) return NAN;
    OW = W - 6;
    if (!(hs = (double *)HIGAN_MALLOC(sizeof(double) * (size_t)(5 * H * OW)))) return NAN;
    for (r = 0; r < H; ++r)
        for (c = 0; c < OW; ++c) {
            double s[5] = {0, 0, 0, 0, 0};
            for (k = 0; k < 7; ++k) {
                double a = x[r * W + c + k], b = y[r * W + c + k];
                s[0] += a; s[1] += b; s[2] += a * a; s[3] += b * b; s[4] += a * b;
            }
            for (q = 0; q < 5; ++q) hs[(q * H + r) * OW + c] = s[q];
        }
    for (r = 0; r + 7 <= H; ++r)
        for (c = 0; c < OW; ++c) {
            double s[5] = {0, 0, 0, 0, 0}, ux, uy, vx, vy, vxy;
            for (k = 0; k < 7; ++k) for (q = 0; q < 5; ++q) s[q] += hs[(q * H + r + k) * OW + c];
            ux = s[0] / NP; uy = s[1] / NP;
            vx = cov_norm * (s[2] / NP - ux * ux);
            vy = cov_norm * (s[3] / NP - uy * uy);
            vxy = cov_norm * (s[4] / NP - ux * uy);
            total += ((2.0 * ux * uy + C1) * (2.0 * vxy + C2)) / ((ux * ux + uy * uy + C1) * (vx + vy + C2));
        }
    HIGAN_FREE(hs);
    return total / (double)((H - 6) * OW);
}

/* ---- the official rescale_images (F.interpolate 'area' / 'bilinear') ------------------------- */
HIGAN_DEF void higan_rescale_width(float *y, int64_t out_w, const float *x, int64_t H, int64_t in_w) {
    int64_t r, j, k;
    HIGAN_ASSERT(y && x && H >= 1 && in_w >= 1 && out_w >= 1);
    if (out_w < in_w) {                  /* adaptive average pooling */
        for (j = 0; j < out_w; ++j) {
            int64_t s0 = (j * in_w) / out_w, s1 = ((j + 1) * in_w + out_w - 1) / out_w;
            for (r = 0; r < H; ++r) {
                float acc = 0.0f;
                for (k = s0; k < s1; ++k) acc += x[r * in_w + k];
                y[r * out_w + j] = acc / (float)(s1 - s0);
            }
        }
    } else {                             /* bilinear, align_corners=False */
        /* PyTorch (CPU, float): the scale in float, the source index in double (acc type),
           lambda rounded to float, 1 - lambda in float */
        float scale = (float)in_w / (float)out_w;
        for (j = 0; j < out_w; ++j) {
            double src = (double)scale * ((double)j + 0.5) - 0.5;
            float l1, l0;
            int64_t i0, i1;
            if (src < 0.0) src = 0.0;
            i0 = (int64_t)floor(src);
            if (i0 > in_w - 1) i0 = in_w - 1;
            l1 = (float)(src - (double)i0);
            if (l1 < 0.0f) l1 = 0.0f;
            if (l1 > 1.0f) l1 = 1.0f;
            l0 = 1.0f - l1;
            i1 = i0 + (i0 < in_w - 1 ? 1 : 0);
            for (r = 0; r < H; ++r) y[r * out_w + j] = l0 * x[r * in_w + i0] + l1 * x[r * in_w + i1];
        }
    }
}

/* ---- backbone features ---------------------------------------------------------------------- */
HIGAN_DEF higan_status higan_backbone_features(const higan_style_backbone *b, higan_tape *t, const float *img,
                                               int64_t W, float *feat) {
    int64_t xs[4], Wp, r, T, C, P, p, c;
    size_t mark;
    higan_var *x, *y;
    higan_status rc = HIGAN_OK;
    if (!b || !t || !img || !feat) return higan__error(HIGAN_ERR_ARG, "backbone_features: NULL argument");
    if (b->cfg.in_channel != 1)
        return higan__error(HIGAN_ERR_ARG, "backbone_features: the backbone takes %d channels, not 1", b->cfg.in_channel);
    if (W < 1 || W > HIGAN_MAX_IMAGE_WIDTH)
        return higan__error(HIGAN_ERR_ARG, "backbone_features: image width %lld", (long long)W);
    Wp = (W + 31) / 32 * 32;
    mark = higan_arena_mark(t->arena);
    higan_no_grad_begin(t);
    xs[0] = 1; xs[1] = 1; xs[2] = HIGAN_IMAGE_HEIGHT; xs[3] = Wp;
    x = higan_var_new(t, 4, xs);
    if (x)
        for (r = 0; r < HIGAN_IMAGE_HEIGHT; ++r) {
            memcpy(x->data + r * Wp, img + r * W, sizeof(float) * (size_t)W);
            for (c = W; c < Wp; ++c) x->data[r * Wp + c] = -1.0f;
        }
    y = x ? higan_style_backbone_forward(t, b, x, 0, NULL, NULL) : NULL;
    higan_no_grad_end(t);
    if (!y) rc = higan_tape_status(t) != HIGAN_OK ? HIGAN_ERR_NOMEM : HIGAN_ERR_ARG;
    else {
        C = y->shape[1]; T = y->shape[2];
        P = (W + HIGAN_BACKBONE_LEN_SCALE - 1) / HIGAN_BACKBONE_LEN_SCALE;
        if (P > T) P = T;
        if (P < 1) P = 1;
        for (c = 0; c < C; ++c) {
            double acc = 0.0;
            for (p = 0; p < P; ++p) acc += y->data[c * T + p];
            feat[c] = (float)(acc / (double)P);
        }
    }
    higan_arena_release(t->arena, mark);
    return rc;
}
/* ---- the test-set evaluation ------------------------------------------------------------------ */
HIGAN_DEF higan_eval_options higan_eval_default_options(void) {
    higan_eval_options o;
    memset(&o, 0, sizeof o);
    o.kid_subsets = 50;
    o.kid_subset_size = 1000;
    o.wid_offset = -1;
    return o;
}

typedef struct {
    higan_arena arena;
    higan_tape tape;
} higan__eval_ws;
static higan_status higan__eval_ws_init(higan__eval_ws *w, size_t bytes) {
    higan_status st;
    if ((st = higan_arena_init(&w->arena, bytes)) != HIGAN_OK) return st;
    if ((st = higan_tape_init(&w->tape, &w->arena, 1024)) != HIGAN_OK) { higan_arena_free(&w->arena); return st; }
    return HIGAN_OK;
}
static void higan__eval_ws_free(higan__eval_ws *w) { higan_tape_free(&w->tape); higan_arena_free(&w->arena); }
/* After HIGAN_ERR_NOMEM: a bigger arena (needed is a lower bound: at least double). */
static higan_status higan__eval_ws_grow(higan__eval_ws *w) {
    size_t need = w->arena.needed + w->arena.needed / 4;
    if (need < 2 * w->arena.capacity) need = 2 * w->arena.capacity;
    if (need > ((size_t)1 << 36)) return higan__error(HIGAN_ERR_NOMEM, "evaluate: more than 64 GB of activations needed");
    higan__eval_ws_free(w);
    return higan__eval_ws_init(w, need);
}

/* [1, 1, 64, W rounded up to 32] var holding img [64, W], padded with -1 */
static higan_var *higan__eval_input(higan_tape *t, const float *img, int64_t W) {
    int64_t xs[4], Wp = (W + 31) / 32 * 32, r, c;
    higan_var *x;
    xs[0] = 1; xs[1] = 1; xs[2] = HIGAN_IMAGE_HEIGHT; xs[3] = Wp;
    if (!(x = higan_var_new(t, 4, xs))) return NULL;
    for (r = 0; r < HIGAN_IMAGE_HEIGHT; ++r) {
        memcpy(x->data + r * Wp, img + r * W, sizeof(float) * (size_t)W);
        for (c = W; c < Wp; ++c) x->data[r * Wp + c] = -1.0f;
    }
    return x;
}
/* The Recognizer's greedy reading of img [64, W] (eval mode). */
static higan_status higan__eval_read(const higan_recognizer *R, higan_tape *t, const float *img, int64_t W,
                                     char *text, int cap) {
    size_t mark = higan_arena_mark(t->arena);
    int lens[1], n;
    higan_var *x, *y;
    higan_status rc = HIGAN_OK;
    lens[0] = (int)W;
    higan_no_grad_begin(t);
    x = higan__eval_input(t, img, W);
    y = x ? higan_recognizer_forward(t, R, x, lens, 0, NULL) : NULL;
    higan_no_grad_end(t);
    if (!y) rc = higan_tape_status(t) != HIGAN_OK ? HIGAN_ERR_NOMEM : HIGAN_ERR_ARG;
    else if ((n = higan_recognizer_decode(y, 0, 0, lens[0], text, cap)) < 0) rc = n;
    higan_arena_release(t->arena, mark);
    return rc;
}
/* The WriterIdentifier's predicted writer of img [64, W]. */
static higan_status higan__eval_writer(const higan_writer_identifier *Wn, const higan_style_backbone *B,
                                       higan_tape *t, const float *img, int64_t W, int *pred) {
    size_t mark = higan_arena_mark(t->arena);
    int lens[1];
    higan_var *x, *f, *y;
    higan_status rc = HIGAN_OK;
    lens[0] = (int)W;
    higan_no_grad_begin(t);
    x = higan__eval_input(t, img, W);
    f = x ? higan_style_backbone_forward(t, B, x, 0, NULL, NULL) : NULL;
    y = f ? higan_writer_identifier_forward(t, Wn, f, lens) : NULL;
    higan_no_grad_end(t);
    if (!y) rc = higan_tape_status(t) != HIGAN_OK ? HIGAN_ERR_NOMEM : HIGAN_ERR_ARG;
    else *pred = (int)higan_argmax(y->data, y->shape[1]);
    higan_arena_release(t->arena, mark);
    return rc;
}

/* per-record buffers of the evaluation */
typedef struct {
    uint8_t *u8, *style_u8;
    float *real, *style, *fake, *fake_w, *real01, *fake01, *z;
    char label[4 * HIGAN_MAX_WORD_LEN + 8], read_real[512], read_fake[512];
    int pred_real, pred_fake;
} higan__eval_buf;

HIGAN_DEF higan_status higan_evaluate(higan_model *m, const higan_dataset *ds, const higan_eval_options *opt_in,
                                      higan_eval_result *res) {
    const unsigned need = HIGAN_NET_BIT(HIGAN_NET_GENERATOR) | HIGAN_NET_BIT(HIGAN_NET_STYLE_ENCODER) |
                          HIGAN_NET_BIT(HIGAN_NET_STYLE_BACKBONE);
    higan_eval_options opt = opt_in ? *opt_in : higan_eval_default_options();
    const higan_recognizer *R;
    const higan_writer_identifier *Wn;
    const higan_style_backbone *WB, *FB;
    higan__eval_ws ws;
    higan__eval_buf bf;
    higan_text_score sr, sf;
    higan_rng rng;
    float *feat_real = NULL, *feat_fake = NULL, lut[256];
    int *pred_real = NULL, *pred_fake = NULL, wid_min = 0, wid_ok = 1;
    int64_t n_total, i, D, max_w = 1, n = 0, acc_real = 0, acc_fake = 0, Gw, cap;
    double psnr_sum = 0.0, ssim_sum = 0.0;
    higan_status rc = HIGAN_OK;
    if (!res) return higan__error(HIGAN_ERR_ARG, "evaluate: NULL result");
    memset(res, 0, sizeof *res);
    if (!m || !m->initialised || (m->cfg.nets & need) != need)
        return higan__error(HIGAN_ERR_ARG, "evaluate: the model needs a Generator, a StyleEncoder and a StyleBackbone");
    if (16 * m->cfg.G.bottom != HIGAN_IMAGE_HEIGHT)
        return higan__error(HIGAN_ERR_ARG, "evaluate: the Generator makes %lld-pixel-high images, not 64",
                            (long long)(16 * m->cfg.G.bottom));
    if (!ds || ds->count < 1) return higan__error(HIGAN_ERR_ARG, "evaluate: empty dataset");
    R = opt.R ? opt.R : (m->cfg.nets & HIGAN_NET_BIT(HIGAN_NET_RECOGNIZER)) ? &m->R : NULL;
    Wn = opt.W ? opt.W : (m->cfg.nets & HIGAN_NET_BIT(HIGAN_NET_WRITER_IDENTIFIER)) ? &m->W : NULL;
    WB = opt.W_backbone ? opt.W_backbone : &m->B;
    FB = opt.feature_backbone ? opt.feature_backbone : &m->B;
    if (Wn && Wn->in_dim != WB->out_dim)
        return higan__error(HIGAN_ERR_ARG, "evaluate: the WriterIdentifier reads %lld features, its backbone gives %lld",
                            (long long)Wn->in_dim, (long long)WB->out_dim);
    if (FB->cfg.in_channel != 1 || WB->cfg.in_channel != 1 || (R && R->cfg.cnn.in_channel != 1))
        return higan__error(HIGAN_ERR_ARG, "evaluate: every backbone must take 1 channel");
    n_total = opt.limit > 0 && opt.limit < ds->count ? opt.limit : ds->count;
    D = FB->out_dim;
    for (i = 0; i < n_total; ++i) if (ds->img_lens[i] > max_w) max_w = ds->img_lens[i];
    for (i = 0; i < ds->count; ++i) if (i == 0 || ds->wids[i] < wid_min) wid_min = ds->wids[i];
    if (opt.wid_offset >= 0) wid_min = opt.wid_offset;
    Gw = 8 * m->cfg.G.bottom * HIGAN_MAX_WORD_LEN;      /* widest generated word */
    cap = max_w > Gw ? max_w : Gw;
    memset(&bf, 0, sizeof bf);
    bf.u8 = (uint8_t *)HIGAN_MALLOC((size_t)(HIGAN_IMAGE_HEIGHT * cap));
    bf.style_u8 = (uint8_t *)HIGAN_MALLOC((size_t)(HIGAN_IMAGE_HEIGHT * cap));
    bf.real = (float *)HIGAN_MALLOC(sizeof(float) * (size_t)(HIGAN_IMAGE_HEIGHT * cap));
    bf.style = (float *)HIGAN_MALLOC(sizeof(float) * (size_t)(HIGAN_IMAGE_HEIGHT * cap));
    bf.fake = (float *)HIGAN_MALLOC(sizeof(float) * (size_t)(m->cfg.G.input_nc * HIGAN_IMAGE_HEIGHT * cap));
    bf.fake_w = (float *)HIGAN_MALLOC(sizeof(float) * (size_t)(HIGAN_IMAGE_HEIGHT * cap));
    bf.real01 = (float *)HIGAN_MALLOC(sizeof(float) * (size_t)(HIGAN_IMAGE_HEIGHT * cap));
    bf.fake01 = (float *)HIGAN_MALLOC(sizeof(float) * (size_t)(HIGAN_IMAGE_HEIGHT * cap));
    bf.z = (float *)HIGAN_MALLOC(sizeof(float) * (size_t)m->cfg.G.style_dim);
    feat_real = (float *)HIGAN_MALLOC(sizeof(float) * (size_t)(n_total * D));
    feat_fake = (float *)HIGAN_MALLOC(sizeof(float) * (size_t)(n_total * D));
    pred_real = (int *)HIGAN_MALLOC(sizeof(int) * (size_t)n_total);
    pred_fake = (int *)HIGAN_MALLOC(sizeof(int) * (size_t)n_total);
    if (!bf.u8 || !bf.style_u8 || !bf.real || !bf.style || !bf.fake || !bf.fake_w || !bf.real01 || !bf.fake01 ||
        !bf.z || !feat_real || !feat_fake || !pred_real || !pred_fake) {
        rc = higan__error(HIGAN_ERR_NOMEM, "evaluate: out of memory");
        goto done;
    }
    if ((rc = higan__eval_ws_init(&ws, opt.arena_bytes ? opt.arena_bytes : ((size_t)64 << 20))) != HIGAN_OK) goto done;
    for (i = 0; i < 256; ++i) lut[i] = higan_pixel_to_float((uint8_t)i);
    higan_text_score_init(&sr);
    higan_text_score_init(&sf);
    for (i = 0; i < n_total && rc == HIGAN_OK; ++i) {
        int codes[HIGAN_MAX_WORD_LEN], len, Wg = 0;
        int64_t w, ws_w, k;
        higan_tape *t;
        len = higan_dataset_label_codes(ds, i, codes, HIGAN_MAX_WORD_LEN);
        if (len < 1) { ++res->n_skipped; continue; }         /* longer than a generated word can be */
        higan_dataset_label(ds, i, bf.label, (int)sizeof bf.label);
        w = higan_dataset_image(ds, i, bf.u8, HIGAN_IMAGE_HEIGHT * cap);
        if (w < 1) { rc = (higan_status)w; break; }
        /* the loader's process_style: 32 px per character (cv2 area when narrower, else linear) */
        ws_w = (int64_t)HIGAN_CHAR_WIDTH * len;
        if (ws_w < w) higan_resize_area(bf.style_u8, ws_w, HIGAN_IMAGE_HEIGHT, bf.u8, w, HIGAN_IMAGE_HEIGHT, w);
        else higan_resize_linear(bf.style_u8, ws_w, HIGAN_IMAGE_HEIGHT, bf.u8, w, HIGAN_IMAGE_HEIGHT, w);
        for (k = 0; k < HIGAN_IMAGE_HEIGHT * w; ++k) bf.real[k] = lut[bf.u8[k]];
        for (k = 0; k < HIGAN_IMAGE_HEIGHT * ws_w; ++k) bf.style[k] = lut[bf.style_u8[k]];
        for (;;) {                      /* one record; again with a bigger arena on overflow */
            higan_tape_reset(&ws.tape);
            t = &ws.tape;
            rc = higan_style_from_image(m, t, bf.style, ws_w, len, bf.z);     /* E(B(style)): mu */
            if (rc == HIGAN_OK) {
                Wg = higan_generate_word(m, t, bf.label, bf.z, bf.fake, m->cfg.G.input_nc * HIGAN_IMAGE_HEIGHT * cap);
                if (Wg < 0) rc = Wg;
            }
            if (rc == HIGAN_OK && R) rc = higan__eval_read(R, t, bf.style, ws_w, bf.read_real, (int)sizeof bf.read_real);
            if (rc == HIGAN_OK && R) rc = higan__eval_read(R, t, bf.fake, Wg, bf.read_fake, (int)sizeof bf.read_fake);
            if (rc == HIGAN_OK && Wn) rc = higan__eval_writer(Wn, WB, t, bf.style, ws_w, &bf.pred_real);
            if (rc == HIGAN_OK && Wn) rc = higan__eval_writer(Wn, WB, t, bf.fake, Wg, &bf.pred_fake);
            if (rc == HIGAN_OK) {
                higan_rescale_width(bf.fake_w, w, bf.fake, HIGAN_IMAGE_HEIGHT, Wg);   /* channel 0 */
                rc = higan_backbone_features(FB, t, bf.real, w, feat_real + n * D);
            }
            if (rc == HIGAN_OK) rc = higan_backbone_features(FB, t, bf.fake_w, w, feat_fake + n * D);
            if (rc != HIGAN_ERR_NOMEM) break;
            if ((rc = higan__eval_ws_grow(&ws)) != HIGAN_OK) break;
        }
        if (rc != HIGAN_OK) {
            char msg[1024];
            snprintf(msg, sizeof msg, "%s", higan_last_error());
            rc = higan__error(rc, "evaluate: record %lld ('%s'): %s", (long long)i, bf.label, msg);
            break;
        }
        if (R) {
            higan_text_score_add(&sr, bf.read_real, bf.label);
            higan_text_score_add(&sf, bf.read_fake, bf.label);
        } else bf.read_real[0] = bf.read_fake[0] = 0;
        if (Wn) {
            int truth = ds->wids[i] - wid_min;
            pred_real[n] = bf.pred_real;
            pred_fake[n] = bf.pred_fake;
            if (truth < 0 || truth >= Wn->n_writer) wid_ok = 0;
            acc_real += bf.pred_real == truth;
            acc_fake += bf.pred_fake == truth;
        }
        for (k = 0; k < HIGAN_IMAGE_HEIGHT * w; ++k) {
            bf.real01[k] = (bf.real[k] + 1.0f) / 2.0f;
            bf.fake01[k] = (bf.fake_w[k] + 1.0f) / 2.0f;
        }
        psnr_sum += higan_psnr(bf.real01, bf.fake01, HIGAN_IMAGE_HEIGHT * w);
        if (w >= 7) { ssim_sum += higan_ssim(bf.real01, bf.fake01, HIGAN_IMAGE_HEIGHT, w); ++res->n_ssim; }
        if (opt.on_pair) opt.on_pair(opt.user, i, bf.real, bf.fake_w, w, bf.label, bf.read_real, bf.read_fake);
        ++n;
        if (opt.progress) opt.progress(opt.user, i + 1, n_total);
    }
    higan__eval_ws_free(&ws);
    if (rc != HIGAN_OK) goto done;
    res->n = n;
    res->feature_dim = D;
    res->cer_real = R ? higan_text_score_cer(&sr) : NAN;
    res->wer_real = R ? higan_text_score_wer(&sr) : NAN;
    res->cer_fake = R ? higan_text_score_cer(&sf) : NAN;
    res->wer_fake = R ? higan_text_score_wer(&sf) : NAN;
    res->wier = Wn ? higan_wier(pred_real, pred_fake, n) : NAN;
    res->wid_acc_real = Wn && wid_ok && n > 0 ? (double)acc_real / (double)n : NAN;
    res->wid_acc_fake = Wn && wid_ok && n > 0 ? (double)acc_fake / (double)n : NAN;
    res->psnr = n > 0 ? psnr_sum / (double)n : NAN;
    res->ssim = res->n_ssim > 0 ? ssim_sum / (double)res->n_ssim : NAN;
    res->fid = res->kid = NAN;
    if (n >= 2) {
        higan_rng_seed(&rng, opt.seed);
        if ((rc = higan_fid(feat_real, n, feat_fake, n, D, &res->fid)) == HIGAN_OK)
            rc = higan_kid(feat_real, n, feat_fake, n, D, opt.kid_subsets, opt.kid_subset_size, &rng, &res->kid);
    }
done:
    HIGAN_FREE(bf.u8); HIGAN_FREE(bf.style_u8); HIGAN_FREE(bf.real); HIGAN_FREE(bf.style); HIGAN_FREE(bf.fake);
    HIGAN_FREE(bf.fake_w); HIGAN_FREE(bf.real01); HIGAN_FREE(bf.fake01); HIGAN_FREE(bf.z);
    HIGAN_FREE(feat_real); HIGAN_FREE(feat_fake); HIGAN_FREE(pred_real); HIGAN_FREE(pred_fake);
    return rc;
}
/* ==== TRAINING implementation: config files, checkpoints, run bookkeeping, pretraining ==== */
#include <ctype.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* ================================================================================================
   Configuration files
   ================================================================================================ */
/* copies the last error message (it may be overwritten by the next error) */
static void higan__tr_errcopy(char *dst, size_t cap) {
    const char *e = higan_last_error();
    size_t n = strlen(e);
    if (n >= cap) n = cap - 1;
    memcpy(dst, e, n);
    dst[n] = 0;
}
static char *higan__tr_strdup(const char *s) {
    size_t n = strlen(s) + 1;
    char *d = (char *)HIGAN_MALLOC(n);
    if (d) memcpy(d, s, n);
    return d;
}
HIGAN_DEF void higan_config_init(higan_config *c) { memset(c, 0, sizeof *c); }
HIGAN_DEF void higan_config_free(higan_config *c) {
    int i;
    if (!c) return;
    for (i = 0; i < c->count; ++i) { HIGAN_FREE(c->keys[i]); HIGAN_FREE(c->values[i]); }
    for (i = 0; i < c->n_known; ++i) HIGAN_FREE(c->known[i]);
    HIGAN_FREE(c->known);
    HIGAN_FREE(c->keys); HIGAN_FREE(c->values); HIGAN_FREE(c->lines); HIGAN_FREE(c->used);
    memset(c, 0, sizeof *c);
}
static int higan__cfg_find(const higan_config *c, const char *key) {
    int i;
    for (i = 0; i < c->count; ++i) if (!strcmp(c->keys[i], key)) return i;
    return -1;
}
static higan_status higan__cfg_add(higan_config *c, const char *key, const char *value, int line) {
    if (c->count == c->capacity) {
        int cap = c->capacity ? 2 * c->capacity : 32;
        char **k = (char **)HIGAN_REALLOC(c->keys, sizeof(char *) * (size_t)cap);
        char **v;
        int *l;
        unsigned char *u;
        if (!k) return higan__error(HIGAN_ERR_NOMEM, "config: out of memory");
        c->keys = k;
        if (!(v = (char **)HIGAN_REALLOC(c->values, sizeof(char *) * (size_t)cap))) return higan__error(HIGAN_ERR_NOMEM, "config: out of memory");
        c->values = v;
        if (!(l = (int *)HIGAN_REALLOC(c->lines, sizeof(int) * (size_t)cap))) return higan__error(HIGAN_ERR_NOMEM, "config: out of memory");
        c->lines = l;
        if (!(u = (unsigned char *)HIGAN_REALLOC(c->used, (size_t)cap))) return higan__error(HIGAN_ERR_NOMEM, "config: out of memory");
        c->used = u;
        c->capacity = cap;
    }
    c->keys[c->count] = higan__tr_strdup(key);
    c->values[c->count] = higan__tr_strdup(value);
    if (!c->keys[c->count] || !c->values[c->count]) {
        HIGAN_FREE(c->keys[c->count]); HIGAN_FREE(c->values[c->count]);
        return higan__error(HIGAN_ERR_NOMEM, "config: out of memory");
    }
    c->lines[c->count] = line;
    c->used[c->count] = 0;
    c->count++;
    return HIGAN_OK;
}
static int higan__cfg_keychar(int ch) { return isalnum(ch) || ch == '_' || ch == '.' || ch == '-'; }

/* Value text after the separator: trims, strips a comment, unquotes. 0 on success; -1 with
   *why set on a syntax error. *quoted tells whether the value was quoted. */
static int higan__cfg_value(const char *s, char *out, size_t cap, int *quoted, const char **why) {
    size_t n = 0;
    *quoted = 0;
    while (*s == ' ' || *s == '\t') ++s;
    if (*s == '"' || *s == '\'') {
        char q = *s++;
        while (*s && *s != q) { if (n + 1 < cap) out[n++] = *s; ++s; }
        if (*s != q) { *why = "unterminated quoted value"; return -1; }
        ++s;
        while (*s == ' ' || *s == '\t') ++s;
        if (*s && *s != '#') { *why = "text after a quoted value"; return -1; }
        out[n] = 0;
        *quoted = 1;
        return 0;
    }
    if (*s == '[' || *s == '{' || *s == '|' || *s == '>' || *s == '&' || *s == '*' || *s == '!') {
        *why = "lists, mappings, anchors and multi-line values are not supported"; return -1;
    }
    {
        const char *e = s;
        while (*e && !(*e == '#' && (e == s || e[-1] == ' ' || e[-1] == '\t'))) ++e;
        while (e > s && (e[-1] == ' ' || e[-1] == '\t')) --e;
        n = (size_t)(e - s);
        if (n >= cap) n = cap - 1;
        memcpy(out, s, n);
        out[n] = 0;
    }
    if (!strcmp(out, "~") || !strcmp(out, "null")) out[0] = 0;
    return 0;
}

#define HIGAN__CFG_DEPTH 8
HIGAN_DEF higan_status higan_config_parse(higan_config *c, const char *text, const char *name) {
    int indent[HIGAN__CFG_DEPTH], depth = 0, line = 0;
    char prefix[HIGAN__CFG_DEPTH][256];
    char pending[256];          /* a "key:" header without children yet */
    int pending_line = 0;
    const char *p = text;
    char buf[1024], key[256], full[512], value[768];
    higan_status st;
    if (!c || !text) return higan__error(HIGAN_ERR_ARG, "config_parse: NULL argument");
    snprintf(c->name, sizeof c->name, "%s", name ? name : "config");
    pending[0] = 0;
    while (*p) {
        const char *e = p, *s, *why = NULL;
        size_t n, k;
        int ind = 0, quoted, d, sep;
        while (*e && *e != '\n') ++e;
        n = (size_t)(e - p);
        ++line;
        if (n >= sizeof buf) return higan__error(HIGAN_ERR_FORMAT, "%s:%d: line longer than %d characters", c->name, line, (int)sizeof buf - 1);
        memcpy(buf, p, n);
        buf[n] = 0;
        p = *e ? e + 1 : e;
        if (n && buf[n - 1] == '\r') buf[--n] = 0;
        for (s = buf; *s == ' ' || *s == '\t'; ++s) {
            if (*s == '\t') return higan__error(HIGAN_ERR_FORMAT, "%s:%d: tab in the indentation (use spaces)", c->name, line);
            ++ind;
        }
        if (!*s || *s == '#') continue;
        if (!strncmp(s, "---", 3) && (s[3] == 0 || s[3] == ' ')) continue;   /* YAML document marker */
        /* the key */
        for (k = 0; higan__cfg_keychar((unsigned char)s[k]); ++k) {
            if (k + 1 >= sizeof key) return higan__error(HIGAN_ERR_FORMAT, "%s:%d: key too long", c->name, line);
            key[k] = s[k];
        }
        key[k] = 0;
        if (k == 0) return higan__error(HIGAN_ERR_FORMAT, "%s:%d: expected 'key: value' or 'key = value', got '%.60s'", c->name, line, s);
        s += k;
        while (*s == ' ' || *s == '\t') ++s;
        if (*s != ':' && *s != '=')
            return higan__error(HIGAN_ERR_FORMAT, "%s:%d: expected ':' or '=' after the key '%s'", c->name, line, key);
        sep = *s++;
        if (sep == ':' && *s && *s != ' ' && *s != '\t')
            return higan__error(HIGAN_ERR_FORMAT, "%s:%d: expected a space after '%s:'", c->name, line, key);
        if (higan__cfg_value(s, value, sizeof value, &quoted, &why) != 0)
            return higan__error(HIGAN_ERR_FORMAT, "%s:%d: key '%s': %s", c->name, line, key, why);
        /* a pending header is a key with an empty value unless this line is indented below it */
        if (pending[0] && !(depth > 0 && ind > indent[depth - 1] && !strcmp(prefix[depth - 1], pending))) {
            if (higan__cfg_find(c, pending) >= 0)
                return higan__error(HIGAN_ERR_FORMAT, "%s:%d: duplicate key '%s'", c->name, pending_line, pending);
            if ((st = higan__cfg_add(c, pending, "", pending_line)) != HIGAN_OK) return st;
        }
        pending[0] = 0;
        while (depth > 0 && indent[depth - 1] >= ind) --depth;
        if (depth > 0) snprintf(full, sizeof full, "%s.%s", prefix[depth - 1], key);
        else snprintf(full, sizeof full, "%s", key);
        if (strlen(full) >= 256) return higan__error(HIGAN_ERR_FORMAT, "%s:%d: key '%.80s...' too long", c->name, line, full);
        if (sep == ':' && !value[0] && !quoted) {      /* section header (or an empty value) */
            if (depth == HIGAN__CFG_DEPTH) return higan__error(HIGAN_ERR_FORMAT, "%s:%d: sections nested too deep", c->name, line);
            indent[depth] = ind;
            memcpy(prefix[depth], full, strlen(full) + 1);   /* < 256: checked above */
            ++depth;
            memcpy(pending, full, strlen(full) + 1);
            pending_line = line;
            continue;
        }
        if ((d = higan__cfg_find(c, full)) >= 0)
            return higan__error(HIGAN_ERR_FORMAT, "%s:%d: duplicate key '%s' (first set on line %d)", c->name, line, full, c->lines[d]);
        if ((st = higan__cfg_add(c, full, value, line)) != HIGAN_OK) return st;
    }
    if (pending[0]) {
        if (higan__cfg_find(c, pending) >= 0)
            return higan__error(HIGAN_ERR_FORMAT, "%s:%d: duplicate key '%s'", c->name, pending_line, pending);
        if ((st = higan__cfg_add(c, pending, "", pending_line)) != HIGAN_OK) return st;
    }
    return HIGAN_OK;
}

HIGAN_DEF higan_status higan_config_load(higan_config *c, const char *path) {
    FILE *f;
    char *text;
    long size;
    size_t got;
    higan_status st;
    if (!c || !path) return higan__error(HIGAN_ERR_ARG, "config_load: NULL argument");
    if (!(f = fopen(path, "rb"))) return higan__error(HIGAN_ERR_IO, "config: cannot open '%s'", path);
    if (fseek(f, 0, SEEK_END) != 0 || (size = ftell(f)) < 0 || fseek(f, 0, SEEK_SET) != 0) {
        fclose(f);
        return higan__error(HIGAN_ERR_IO, "config: cannot read '%s'", path);
    }
    if (size > (1 << 20)) { fclose(f); return higan__error(HIGAN_ERR_FORMAT, "config: '%s' is larger than 1 MB", path); }
    text = (char *)HIGAN_MALLOC((size_t)size + 1);
    if (!text) { fclose(f); return higan__error(HIGAN_ERR_NOMEM, "config: out of memory"); }
    got = fread(text, 1, (size_t)size, f);
    fclose(f);
    if (got != (size_t)size) { HIGAN_FREE(text); return higan__error(HIGAN_ERR_IO, "config: cannot read '%s'", path); }
    text[size] = 0;
    if (memchr(text, 0, (size_t)size)) { HIGAN_FREE(text); return higan__error(HIGAN_ERR_FORMAT, "config: '%s' is not a text file", path); }
    st = higan_config_parse(c, text, path);
    HIGAN_FREE(text);
    return st;
}

HIGAN_DEF higan_status higan_config_set(higan_config *c, const char *assignment) {
    char key[256], value[768];
    const char *s = assignment, *why = NULL;
    size_t k;
    int quoted, i;
    if (!c || !assignment) return higan__error(HIGAN_ERR_ARG, "config_set: NULL argument");
    while (*s == ' ') ++s;
    for (k = 0; higan__cfg_keychar((unsigned char)s[k]) && k + 1 < sizeof key; ++k) key[k] = s[k];
    key[k] = 0;
    s += k;
    while (*s == ' ') ++s;
    if (!k || (*s != '=' && *s != ':'))
        return higan__error(HIGAN_ERR_ARG, "command line: expected key=value, got '%.100s'", assignment);
    ++s;
    if (higan__cfg_value(s, value, sizeof value, &quoted, &why) != 0)
        return higan__error(HIGAN_ERR_ARG, "command line: key '%s': %s", key, why);
    if ((i = higan__cfg_find(c, key)) >= 0) {
        char *v = higan__tr_strdup(value);
        if (!v) return higan__error(HIGAN_ERR_NOMEM, "config: out of memory");
        HIGAN_FREE(c->values[i]);
        c->values[i] = v;
        c->lines[i] = 0;
        return HIGAN_OK;
    }
    return higan__cfg_add(c, key, value, 0);
}

HIGAN_DEF const char *higan_config_get(const higan_config *c, const char *key) {
    int i = c ? higan__cfg_find(c, key) : -1;
    return i >= 0 ? c->values[i] : NULL;
}
/* "file:12" or "command line" */
static void higan__cfg_where(const higan_config *c, int i, char *out, size_t cap) {
    if (c->lines[i] > 0) snprintf(out, cap, "%s:%d", c->name, c->lines[i]);
    else snprintf(out, cap, "command line");
}
static void higan__cfg_fail(higan_config *c, int i, const char *msg) {
    char where[300];
    if (c->status != HIGAN_OK) return;
    higan__cfg_where(c, i, where, sizeof where);
    c->status = HIGAN_ERR_ARG;
    snprintf(c->error, sizeof c->error, "%s: %s: %s", where, c->keys[i], msg);
}
/* index of a present, non-empty key (marked as known), else -1 */
static int higan__cfg_lookup(higan_config *c, const char *key) {
    int i = higan__cfg_find(c, key), k;
    for (k = 0; k < c->n_known && strcmp(c->known[k], key); ++k) {}
    if (k == c->n_known) {                       /* remember it (best effort: only for hints) */
        if (c->n_known == c->known_capacity) {
            int cap = c->known_capacity ? 2 * c->known_capacity : 32;
            char **nk = (char **)HIGAN_REALLOC(c->known, sizeof(char *) * (size_t)cap);
            if (nk) { c->known = nk; c->known_capacity = cap; }
        }
        if (c->n_known < c->known_capacity && (c->known[c->n_known] = higan__tr_strdup(key)) != NULL) c->n_known++;
    }
    if (i < 0) return -1;
    c->used[i] = 1;
    return c->values[i][0] ? i : -1;
}
HIGAN_DEF int64_t higan_config_int(higan_config *c, const char *key, int64_t def, int64_t lo, int64_t hi) {
    int i = higan__cfg_lookup(c, key);
    char *end, msg[300];
    double dv;
    long long v;
    if (i < 0) return def;
    errno = 0;
    v = strtoll(c->values[i], &end, 10);
    if (*end == 'e' || *end == 'E' || *end == '.') {     /* 1e5 or 100.0 written for an integer */
        dv = strtod(c->values[i], &end);
        if (*end || dv != floor(dv) || fabs(dv) > 9e15) {
            snprintf(msg, sizeof msg, "'%.200s' is not an integer", c->values[i]);
            higan__cfg_fail(c, i, msg);
            return def;
        }
        v = (long long)dv;
    } else if (*end || end == c->values[i] || errno) {
        snprintf(msg, sizeof msg, "'%.200s' is not an integer", c->values[i]);
        higan__cfg_fail(c, i, msg);
        return def;
    }
    if (v < lo || v > hi) {
        snprintf(msg, sizeof msg, "%.200s is outside [%lld, %lld]", c->values[i], (long long)lo, (long long)hi);
        higan__cfg_fail(c, i, msg);
        return def;
    }
    return (int64_t)v;
}
HIGAN_DEF double higan_config_real(higan_config *c, const char *key, double def, double lo, double hi) {
    int i = higan__cfg_lookup(c, key);
    char *end, msg[300];
    double v;
    if (i < 0) return def;
    v = strtod(c->values[i], &end);
    if (*end || end == c->values[i] || v != v) {
        snprintf(msg, sizeof msg, "'%.200s' is not a number", c->values[i]);
        higan__cfg_fail(c, i, msg);
        return def;
    }
    if (v < lo || v > hi) {
        snprintf(msg, sizeof msg, "%.200s is outside [%g, %g]", c->values[i], lo, hi);
        higan__cfg_fail(c, i, msg);
        return def;
    }
    return v;
}
static int higan__cfg_ieq(const char *a, const char *b) {
    for (; *a && *b; ++a, ++b) if (tolower((unsigned char)*a) != tolower((unsigned char)*b)) return 0;
    return *a == *b;
}
HIGAN_DEF int higan_config_bool(higan_config *c, const char *key, int def) {
    int i = higan__cfg_lookup(c, key);
    const char *v;
    char msg[300];
    if (i < 0) return def;
    v = c->values[i];
    if (higan__cfg_ieq(v, "true") || higan__cfg_ieq(v, "yes") || higan__cfg_ieq(v, "on") || !strcmp(v, "1")) return 1;
    if (higan__cfg_ieq(v, "false") || higan__cfg_ieq(v, "no") || higan__cfg_ieq(v, "off") || !strcmp(v, "0")) return 0;
    snprintf(msg, sizeof msg, "'%.200s' is not a boolean (true/false)", v);
    higan__cfg_fail(c, i, msg);
    return def;
}
HIGAN_DEF const char *higan_config_str(higan_config *c, const char *key, const char *def) {
    int i = higan__cfg_lookup(c, key);
    return i < 0 ? def : c->values[i];
}
HIGAN_DEF higan_status higan_config_finish(higan_config *c) {
    int i, j;
    if (!c) return higan__error(HIGAN_ERR_ARG, "config_finish: NULL argument");
    if (c->status != HIGAN_OK) return higan__error(c->status, "%s", c->error);
    for (i = 0; i < c->count; ++i) {
        char where[300], hint[320];
        int best = -1;
        int64_t bd = 1 << 30;
        if (c->used[i]) continue;
        for (j = 0; j < c->n_known; ++j) {        /* a known key spelled nearly the same */
            int64_t d = higan_edit_distance_utf8(c->keys[i], c->known[j]);
            if (d >= 0 && d < bd) { bd = d; best = j; }
        }
        hint[0] = 0;
        if (best >= 0 && bd <= 3) snprintf(hint, sizeof hint, " (did you mean '%.250s'?)", c->known[best]);
        higan__cfg_where(c, i, where, sizeof where);
        return higan__error(HIGAN_ERR_ARG, "%s: unknown key '%s'%s", where, c->keys[i], hint);
    }
    return HIGAN_OK;
}
HIGAN_DEF int higan_config_dump(const higan_config *c, char *out, int cap) {
    int i, n = 0;
    if (cap > 0) out[0] = 0;
    for (i = 0; i < c->count; ++i) {
        int k = snprintf(cap > n ? out + n : NULL, cap > n ? (size_t)(cap - n) : 0, "%s: %s\n", c->keys[i], c->values[i]);
        if (k > 0) n += k;
    }
    return n;
}
HIGAN_DEF void higan_config_model(higan_config *c, higan_model_config *mc) {
    unsigned n = mc->nets;
    if (n & (HIGAN_NET_BIT(HIGAN_NET_GENERATOR) | HIGAN_NET_BIT(HIGAN_NET_STYLE_ENCODER)))
        mc->G.style_dim = higan_config_int(c, "model.G.style_dim", mc->G.style_dim, 1, 4096);
    if (n & HIGAN_NET_BIT(HIGAN_NET_GENERATOR)) {
        mc->G.ch = higan_config_int(c, "model.G.ch", mc->G.ch, 1, 512);
        mc->G.embed_dim = higan_config_int(c, "model.G.embed_dim", mc->G.embed_dim, 1, 4096);
        mc->G.bottom = higan_config_int(c, "model.G.bottom", mc->G.bottom, 1, 16);
    }
    if (n & HIGAN_NET_BIT(HIGAN_NET_DISCRIMINATOR)) mc->D.ch = higan_config_int(c, "model.D.ch", mc->D.ch, 1, 512);
    if (n & HIGAN_NET_BIT(HIGAN_NET_PATCH_DISCRIMINATOR)) mc->P.ch = higan_config_int(c, "model.P.ch", mc->P.ch, 1, 512);
    if (n & (HIGAN_NET_BIT(HIGAN_NET_STYLE_BACKBONE) | HIGAN_NET_BIT(HIGAN_NET_STYLE_ENCODER) |
             HIGAN_NET_BIT(HIGAN_NET_WRITER_IDENTIFIER))) {
        mc->B.resolution = (int)higan_config_int(c, "model.B.resolution", mc->B.resolution, 1, 1024);
        mc->B.max_dim = (int)higan_config_int(c, "model.B.max_dim", mc->B.max_dim, 1, 4096);
        mc->B.dropout = (float)higan_config_real(c, "model.B.dropout", mc->B.dropout, 0.0, 0.99);
    }
    if (n & HIGAN_NET_BIT(HIGAN_NET_WRITER_IDENTIFIER))
        mc->n_writer = higan_config_int(c, "model.n_writer", mc->n_writer, 1, 1000000);
    if (n & HIGAN_NET_BIT(HIGAN_NET_RECOGNIZER)) {
        mc->R.cnn.resolution = (int)higan_config_int(c, "model.R.resolution", mc->R.cnn.resolution, 1, 1024);
        mc->R.cnn.max_dim = (int)higan_config_int(c, "model.R.max_dim", mc->R.cnn.max_dim, 1, 4096);
        mc->R.cnn.dropout = (float)higan_config_real(c, "model.R.dropout", mc->R.cnn.dropout, 0.0, 0.99);
        mc->R.rnn_depth = (int)higan_config_int(c, "model.R.rnn_depth", mc->R.rnn_depth, 0, HIGAN_RECOGNIZER_MAX_DEPTH);
    }
}

/* ================================================================================================
   Training state, checkpoints
   ================================================================================================ */
HIGAN_DEF void higan_train_state_init(higan_train_state *s) {
    int k;
    memset(s, 0, sizeof *s);
    for (k = 0; k < HIGAN_STORE_COUNT; ++k) s->opt[k] = higan_adam_default(1e-3);
}
HIGAN_DEF void higan_train_state_add_rng(higan_train_state *s, const char *name, higan_rng *r) {
    HIGAN_ASSERT(s && name && r && s->n_rng < HIGAN_TRAIN_MAX_RNG && strlen(name) < HIGAN_TRAIN_NAME);
    snprintf(s->rng_name[s->n_rng], HIGAN_TRAIN_NAME, "%s", name);
    s->rng[s->n_rng++] = r;
}
HIGAN_DEF void higan_train_state_add_value(higan_train_state *s, const char *name, double *v) {
    HIGAN_ASSERT(s && name && v && s->n_value < HIGAN_TRAIN_MAX_VALUES && strlen(name) < HIGAN_TRAIN_NAME);
    snprintf(s->value_name[s->n_value], HIGAN_TRAIN_NAME, "%s", name);
    s->value[s->n_value++] = v;
}

static int higan__tr_finite(float x) { return x == x && x - x == 0.0f; }
HIGAN_DEF higan_status higan_model_check_finite(const higan_model *m) {
    int s, i;
    int64_t j;
    if (!m || !m->initialised) return higan__error(HIGAN_ERR_ARG, "model_check_finite: the model is not initialised");
    for (s = 0; s < HIGAN_STORE_COUNT; ++s) {
        const higan_params *p = &m->store[s];
        if (p->mirror_be)   /* trained on a backend: the host arrays are a cache, refreshed here */
            higan_params_download((higan_params *)(uintptr_t)p, HIGAN_PARAMS_VALUES | HIGAN_PARAMS_BUFFERS);
        for (i = 0; i < p->count; ++i) {
            const higan_param_entry *e = &p->entries[i];
            const float *x;
            if (e->kind == HIGAN_BUFFER_I64) continue;
            x = (e->kind == HIGAN_PARAM ? p->value : p->buffer) + e->offset;
            for (j = 0; j < e->numel; ++j)
                if (!higan__tr_finite(x[j]))
                    return higan__error(HIGAN_ERR_ARG, "%s[%lld] is %s", e->name, (long long)j, x[j] != x[j] ? "nan" : "inf");
        }
    }
    return HIGAN_OK;
}

HIGAN_DEF higan_status higan_checkpoint_save(const char *path, const higan_model *m, const higan_train_state *s) {
    const higan_adam *opts[HIGAN_STORE_COUNT];
    higan_safetensors st;
    higan_safetensors_writer w;
    higan_status rc;
    int64_t rng_data[HIGAN_TRAIN_MAX_RNG][4];
    int64_t shape4[1] = {4};
    char *tmp, key[128], val[64];
    size_t plen;
    int k, i;
    if (!path || !m || !s) return higan__error(HIGAN_ERR_ARG, "checkpoint_save: NULL argument");
    if ((rc = higan_model_check_finite(m)) != HIGAN_OK) {
        char msg[600];
        higan__tr_errcopy(msg, sizeof msg);
        return higan__error(rc, "checkpoint '%s' not written: %s (the previous checkpoint is kept)", path, msg);
    }
    for (k = 0; k < HIGAN_STORE_COUNT; ++k)
        opts[k] = (s->opt_stores & (1u << k)) && m->store[k].count ? &s->opt[k] : NULL;
    plen = strlen(path);
    tmp = (char *)HIGAN_MALLOC(plen + 16);
    if (!tmp) return higan__error(HIGAN_ERR_NOMEM, "checkpoint_save: out of memory");
    /* the model's own writer, then its tensors again with the training state added: one
       file, renamed into place at the end (higan_safetensors_writer_save) */
    snprintf(tmp, plen + 16, "%s.model.tmp", path);
    if ((rc = higan_model_save(m, tmp, opts)) != HIGAN_OK) { HIGAN_FREE(tmp); return rc; }
    rc = higan_safetensors_load(&st, tmp);
    remove(tmp);
    HIGAN_FREE(tmp);
    if (rc != HIGAN_OK) return rc;
    higan_safetensors_writer_init(&w);
    for (i = 0; i < st.count && rc == HIGAN_OK; ++i) {
        const higan_st_tensor *t = &st.tensors[i];
        rc = higan_safetensors_writer_add(&w, t->name, t->dtype, t->ndim, t->shape, st.data + t->begin);
    }
    for (i = 0; i < st.meta_count && rc == HIGAN_OK; ++i)
        rc = higan_safetensors_writer_meta(&w, st.meta_keys[i], st.meta_values[i]);
    for (k = 0; k < s->n_rng && rc == HIGAN_OK; ++k) {
        memcpy(rng_data[k], s->rng[k]->s, sizeof rng_data[k]);
        snprintf(key, sizeof key, "train.rng.%s", s->rng_name[k]);
        rc = higan_safetensors_writer_add(&w, key, HIGAN_I64, 1, shape4, rng_data[k]);
    }
#define HIGAN__TR_META(name, fmt, v) \
    if (rc == HIGAN_OK) { snprintf(val, sizeof val, fmt, v); rc = higan_safetensors_writer_meta(&w, name, val); }
    HIGAN__TR_META("train.step", "%lld", (long long)s->step);
    HIGAN__TR_META("train.epoch", "%lld", (long long)s->epoch);
    HIGAN__TR_META("train.batch", "%lld", (long long)s->batch);
    for (k = 0; k < s->n_value && rc == HIGAN_OK; ++k) {
        snprintf(key, sizeof key, "train.value.%s", s->value_name[k]);
        snprintf(val, sizeof val, "%.17g", *s->value[k]);     /* round-trips exactly */
        rc = higan_safetensors_writer_meta(&w, key, val);
    }
#undef HIGAN__TR_META
    if (rc == HIGAN_OK && s->config_text) rc = higan_safetensors_writer_meta(&w, "train.config", s->config_text);
    if (rc == HIGAN_OK) rc = higan_safetensors_writer_save(&w, path);
    higan_safetensors_writer_free(&w);
    higan_safetensors_free(&st);
    return rc;
}

static higan_status higan__tr_meta_i64(const higan_safetensors *st, const char *path, const char *key, int64_t *out) {
    const char *v = higan_safetensors_meta(st, key);
    char *end;
    long long x;
    if (!v) return higan__error(HIGAN_ERR_FORMAT, "checkpoint '%s' has no '%s': not a training checkpoint "
                                "(a plain model file can initialise weights, not resume)", path, key);
    x = strtoll(v, &end, 10);
    if (*end || end == v || x < 0) return higan__error(HIGAN_ERR_FORMAT, "checkpoint '%s': %s = '%.40s' is not a count", path, key, v);
    *out = (int64_t)x;
    return HIGAN_OK;
}
static const char *const higan__tr_store_names[HIGAN_STORE_COUNT] = {
    "Generator + StyleEncoder (OPT.G)", "Discriminator + PatchDiscriminator (OPT.D)", "StyleBackbone (OPT.B)",
    "WriterIdentifier (OPT.W)", "Recognizer (OPT.R)"};
HIGAN_DEF higan_status higan_checkpoint_load(const char *path, higan_model *m, higan_train_state *s) {
    higan_safetensors st;
    higan_adam opts[HIGAN_STORE_COUNT];
    higan_status rc;
    int64_t step = 0, epoch = 0, batch = 0, rd[4];
    double values[HIGAN_TRAIN_MAX_VALUES];
    char key[128];
    int k;
    if (!path || !m || !s) return higan__error(HIGAN_ERR_ARG, "checkpoint_load: NULL argument");
    if (!m->initialised) return higan__error(HIGAN_ERR_ARG, "checkpoint_load: initialise the model first");
    if ((rc = higan_safetensors_load(&st, path)) != HIGAN_OK) return rc;
    /* everything is checked before anything is changed, except the model's own load */
    rc = higan__tr_meta_i64(&st, path, "train.step", &step);
    if (rc == HIGAN_OK) rc = higan__tr_meta_i64(&st, path, "train.epoch", &epoch);
    if (rc == HIGAN_OK) rc = higan__tr_meta_i64(&st, path, "train.batch", &batch);
    for (k = 0; k < s->n_rng && rc == HIGAN_OK; ++k) {
        snprintf(key, sizeof key, "train.rng.%s", s->rng_name[k]);
        if (!higan_safetensors_find(&st, key)) rc = higan__error(HIGAN_ERR_FORMAT, "checkpoint '%s' has no RNG state '%s'", path, key);
        else if ((rc = higan_safetensors_read_i64(&st, key, rd, 4)) != HIGAN_OK) {
            char msg[400];
            higan__tr_errcopy(msg, sizeof msg);
            rc = higan__error(rc, "checkpoint '%s': %s", path, msg);
        }
    }
    for (k = 0; k < s->n_value && rc == HIGAN_OK; ++k) {
        const char *v;
        char *end;
        snprintf(key, sizeof key, "train.value.%s", s->value_name[k]);
        if (!(v = higan_safetensors_meta(&st, key))) rc = higan__error(HIGAN_ERR_FORMAT, "checkpoint '%s' has no '%s'", path, key);
        else {
            values[k] = strtod(v, &end);
            if (*end || end == v) rc = higan__error(HIGAN_ERR_FORMAT, "checkpoint '%s': %s = '%.40s' is not a number", path, key, v);
        }
    }
    if (rc == HIGAN_OK) {
        memcpy(opts, s->opt, sizeof opts);
        rc = higan_model_load_safetensors(m, &st, 0, opts);
        if (rc != HIGAN_OK) {
            char msg[800];
            higan__tr_errcopy(msg, sizeof msg);
            rc = higan__error(rc, "checkpoint '%s': %s", path, msg);
        }
    }
    for (k = 0; k < HIGAN_STORE_COUNT && rc == HIGAN_OK; ++k)
        if ((s->opt_stores & (1u << k)) && m->store[k].count && !m->opt_loaded[k])
            rc = higan__error(HIGAN_ERR_FORMAT, "checkpoint '%s' has no optimizer state for %s (its networks "
                              "were not being trained when it was saved)", path, higan__tr_store_names[k]);
    if (rc == HIGAN_OK) {
        for (k = 0; k < HIGAN_STORE_COUNT; ++k)
            if (s->opt_stores & (1u << k)) s->opt[k].step = opts[k].step;
        for (k = 0; k < s->n_rng; ++k) {
            snprintf(key, sizeof key, "train.rng.%s", s->rng_name[k]);
            higan_safetensors_read_i64(&st, key, rd, 4);
            memcpy(s->rng[k]->s, rd, sizeof rd);
        }
        for (k = 0; k < s->n_value; ++k) *s->value[k] = values[k];
        s->step = step;
        s->epoch = epoch;
        s->batch = batch;
    }
    higan_safetensors_free(&st);
    return rc;
}

/* splitmix64: decorrelates seeds that differ in a few bits */
static uint64_t higan__tr_mix(uint64_t x) {
    x += 0x9E3779B97F4A7C15ull;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
    return x ^ (x >> 31);
}
HIGAN_DEF uint64_t higan_train_epoch_seed(uint64_t seed, int64_t epoch) {
    return higan__tr_mix(seed ^ higan__tr_mix((uint64_t)epoch + 1));
}
HIGAN_DEF higan_status higan_train_loader_open(higan_loader *L, const higan_dataset *ds,
                                               const higan_loader_options *opt, int64_t epoch, int64_t skip) {
    higan_loader_options o = opt ? *opt : higan_loader_default_options();
    higan_status rc;
    higan_batch b;
    int64_t i;
    o.seed = higan_train_epoch_seed(o.seed, epoch);
    if ((rc = higan_loader_init(L, ds, &o)) != HIGAN_OK) return rc;
    if (skip < 0 || skip > L->n_batches) {
        int64_t nb = L->n_batches;
        higan_loader_free(L);
        return higan__error(HIGAN_ERR_ARG, "train_loader_open: cannot skip %lld of the epoch's %lld batches",
                            (long long)skip, (long long)nb);
    }
    for (i = 0; i < skip; ++i)      /* the same RNG draws as the batches already trained on */
        if ((rc = higan_loader_next(L, &b)) != HIGAN_OK) {
            char msg[600];
            if (rc < 0) higan__tr_errcopy(msg, sizeof msg);
            else snprintf(msg, sizeof msg, "epoch ended early");
            higan_loader_free(L);
            return higan__error(rc < 0 ? rc : HIGAN_ERR_ARG, "train_loader_open: fast-forward: %s", msg);
        }
    return HIGAN_OK;
}

/* ================================================================================================
   Run bookkeeping: time, Ctrl-C, NaN checks, progress line, CSV
   ================================================================================================ */
HIGAN_DEF double higan_time_seconds(void) {
#if defined(_OPENMP)
    return omp_get_wtime();
#elif defined(CLOCK_MONOTONIC)
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
#else
    return (double)time(NULL);    /* strict C99 without POSIX: 1 s resolution */
#endif
}

static volatile sig_atomic_t higan__tr_stop_flag = 0;
static void higan__tr_on_sigint(int sig) {
    higan__tr_stop_flag = 1;
    signal(sig, SIG_DFL);            /* a second Ctrl-C ends the process */
}
HIGAN_DEF void higan_train_catch_sigint(void) { signal(SIGINT, higan__tr_on_sigint); }
HIGAN_DEF int higan_train_interrupted(void) { return higan__tr_stop_flag != 0; }
HIGAN_DEF void higan_train_set_interrupted(int on) { higan__tr_stop_flag = on ? 1 : 0; }

HIGAN_DEF higan_status higan_train_check_losses(int64_t step, int n, const char *const *names, const float *values) {
    int i;
    for (i = 0; i < n; ++i)
        if (!higan__tr_finite(values[i]))
            return higan__error(HIGAN_ERR_ARG, "step %lld: loss '%s' is %s", (long long)step, names[i],
                                values[i] != values[i] ? "nan" : "inf");
    return HIGAN_OK;
}

HIGAN_DEF void higan_progress_init(higan_progress *p, int64_t step, int64_t total_steps, double interval) {
    memset(p, 0, sizeof *p);
    p->t0 = p->t_last = higan_time_seconds();
    p->step0 = step;
    p->total_steps = total_steps;
    p->interval = interval;
}
HIGAN_DEF int higan_progress_update(higan_progress *p, int64_t step, int64_t epoch, int n,
                                    const char *const *names, const float *values, int64_t images, int force) {
    double now = higan_time_seconds(), el, rate;
    char line[1024];
    size_t at = 0;
    int i;
    if (n > HIGAN_PROGRESS_MAX) n = HIGAN_PROGRESS_MAX;
    for (i = 0; i < n; ++i) p->sum[i] += values[i];
    p->count++;
    p->images += images;
    if (!force && now - p->t_last < p->interval) return 0;
    el = now - p->t0;
    rate = el > 0 ? (double)p->images / el : 0;
    if (p->total_steps > 0)
        at += (size_t)snprintf(line + at, sizeof line - at, "step %lld/%lld epoch %lld", (long long)step,
                               (long long)p->total_steps, (long long)epoch);
    else
        at += (size_t)snprintf(line + at, sizeof line - at, "step %lld epoch %lld", (long long)step, (long long)epoch);
    for (i = 0; i < n && at < sizeof line; ++i)
        at += (size_t)snprintf(line + at, sizeof line - at, " | %s %.4g", names[i], p->sum[i] / (p->count ? p->count : 1));
    if (at < sizeof line) at += (size_t)snprintf(line + at, sizeof line - at, " | %.1f img/s", rate);
    if (p->total_steps > 0 && step > p->step0 && at < sizeof line) {
        double eta = el / (double)(step - p->step0) * (double)(p->total_steps - step);
        if (eta < 0) eta = 0;
        at += (size_t)snprintf(line + at, sizeof line - at, " | ETA %dh%02dm%02ds", (int)(eta / 3600),
                               (int)(eta / 60) % 60, (int)eta % 60);
    }
    fprintf(stderr, "%s\n", line);
    fflush(stderr);
    for (i = 0; i < HIGAN_PROGRESS_MAX; ++i) p->sum[i] = 0;
    p->count = 0;
    p->t_last = now;
    return 1;
}

/* Reads a whole text file (NUL-terminated); NULL if it cannot be read. */
static char *higan__tr_read_text(const char *path, size_t *size_out) {
    FILE *f = fopen(path, "rb");
    char *buf = NULL;
    size_t n = 0, cap = 0, got;
    if (!f) return NULL;
    for (;;) {
        if (n + 4096 + 1 > cap) {
            char *nb;
            cap = cap ? 2 * cap : 65536;
            nb = (char *)HIGAN_REALLOC(buf, cap);
            if (!nb) { HIGAN_FREE(buf); fclose(f); return NULL; }
            buf = nb;
        }
        got = fread(buf + n, 1, 4096, f);
        n += got;
        if (got < 4096) break;
    }
    fclose(f);
    buf[n] = 0;
    if (size_out) *size_out = n;
    return buf;
}
static void higan__csv_header(char *out, size_t cap, int n, const char *const *names) {
    int i;
    size_t at = (size_t)snprintf(out, cap, "step,epoch");
    for (i = 0; i < n && at < cap; ++i) at += (size_t)snprintf(out + at, cap - at, ",%s", names[i]);
}
HIGAN_DEF higan_status higan_csv_open(higan_csv *c, const char *path, int n, const char *const *names,
                                      int64_t resume_step) {
    char header[2048];
    FILE *f;
    int i;
    memset(c, 0, sizeof *c);
    if (!path || n < 0 || n > HIGAN_CSV_MAX) return higan__error(HIGAN_ERR_ARG, "csv_open: bad arguments");
    for (i = 0; i < n; ++i)
        if (strchr(names[i], ',') || strchr(names[i], '\n'))
            return higan__error(HIGAN_ERR_ARG, "csv_open: column name '%s' has a comma or newline", names[i]);
    higan__csv_header(header, sizeof header, n, names);
    if (resume_step >= 0) {
        size_t size = 0, hl = strlen(header);
        char *text = higan__tr_read_text(path, &size);
        if (text) {
            /* keep the header and the rows up to resume_step, rewritten atomically */
            char *tmp = (char *)HIGAN_MALLOC(strlen(path) + 8);
            const char *p;
            if (!tmp) { HIGAN_FREE(text); return higan__error(HIGAN_ERR_NOMEM, "csv_open: out of memory"); }
            if (strncmp(text, header, hl) != 0 || (text[hl] != '\n' && text[hl] != '\r')) {
                HIGAN_FREE(text); HIGAN_FREE(tmp);
                return higan__error(HIGAN_ERR_FORMAT, "csv log '%s' has other columns than '%s'; move it away or "
                                    "start a new run", path, header);
            }
            sprintf(tmp, "%s.tmp", path);
            if (!(f = fopen(tmp, "wb"))) { HIGAN_FREE(text); HIGAN_FREE(tmp); return higan__error(HIGAN_ERR_IO, "csv: cannot write '%s'", path); }
            fprintf(f, "%s\n", header);
            p = strchr(text, '\n');
            p = p ? p + 1 : text + size;
            while (*p) {
                const char *e = strchr(p, '\n');
                size_t len = e ? (size_t)(e - p) : strlen(p);
                char *end;
                long long st = strtoll(p, &end, 10);
                if (end != p && *end == ',' && st <= resume_step && (e || len > 0)) {
                    fwrite(p, 1, len, f);
                    fputc('\n', f);
                }
                p += len + (e ? 1 : 0);
            }
            HIGAN_FREE(text);
            if (fclose(f) != 0 || rename(tmp, path) != 0) {
                remove(tmp); HIGAN_FREE(tmp);
                return higan__error(HIGAN_ERR_IO, "csv: cannot rewrite '%s'", path);
            }
            HIGAN_FREE(tmp);
            if (!(f = fopen(path, "ab"))) return higan__error(HIGAN_ERR_IO, "csv: cannot append to '%s'", path);
            c->file = f;
            c->n = n;
            return HIGAN_OK;
        }
    }
    if (!(f = fopen(path, "wb"))) return higan__error(HIGAN_ERR_IO, "csv: cannot create '%s'", path);
    fprintf(f, "%s\n", header);
    fflush(f);
    c->file = f;
    c->n = n;
    return HIGAN_OK;
}
HIGAN_DEF higan_status higan_csv_write(higan_csv *c, int64_t step, int64_t epoch, const double *values) {
    FILE *f = (FILE *)c->file;
    int i;
    if (!f) return higan__error(HIGAN_ERR_ARG, "csv_write: log not open");
    fprintf(f, "%lld,%lld", (long long)step, (long long)epoch);
    for (i = 0; i < c->n; ++i) {
        if (values[i] == values[i]) fprintf(f, ",%.8g", values[i]);
        else fputc(',', f);
    }
    fputc('\n', f);
    if (fflush(f) != 0 || ferror(f)) return higan__error(HIGAN_ERR_IO, "csv: write failed");
    return HIGAN_OK;
}
HIGAN_DEF void higan_csv_close(higan_csv *c) {
    if (c && c->file) fclose((FILE *)c->file);
    if (c) memset(c, 0, sizeof *c);
}

/* ================================================================================================
   Loss plot: a tiny rasteriser with a 3x5 font
   ================================================================================================ */
/* rows top to bottom, 3 bits each (4 = left column) */
static const char higan__font_chars[] = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ.-+:/_%(),=|[]? ";
static const unsigned char higan__font_rows[][5] = {
    {7,5,5,5,7},{2,6,2,2,7},{7,1,7,4,7},{7,1,7,1,7},{5,5,7,1,1},{7,4,7,1,7},{7,4,7,5,7},{7,1,1,1,1},
    {7,5,7,5,7},{7,5,7,1,7},
    {2,5,7,5,5},{6,5,6,5,6},{3,4,4,4,3},{6,5,5,5,6},{7,4,6,4,7},{7,4,6,4,4},{3,4,5,5,3},{5,5,7,5,5},
    {7,2,2,2,7},{1,1,1,5,2},{5,5,6,5,5},{4,4,4,4,7},{5,7,7,5,5},{6,5,5,5,5},{2,5,5,5,2},{6,5,6,4,4},
    {2,5,5,6,3},{6,5,6,5,5},{3,4,2,1,6},{7,2,2,2,2},{5,5,5,5,7},{5,5,5,5,2},{5,5,7,7,5},{5,5,2,5,5},
    {5,5,2,2,2},{7,1,2,4,7},
    {0,0,0,0,2},{0,0,7,0,0},{0,2,7,2,0},{0,2,0,2,0},{1,1,2,4,4},{0,0,0,0,7},{5,1,2,4,5},{1,2,2,2,1},
    {4,2,2,2,4},{0,0,0,2,4},{0,7,0,7,0},{2,2,2,2,2},{6,4,4,4,6},{3,1,1,1,3},{7,1,2,0,2},{0,0,0,0,0}};
static void higan__plot_px(unsigned char *rgb, int W, int H, int x, int y, const unsigned char c[3]) {
    if (x < 0 || y < 0 || x >= W || y >= H) return;
    rgb[((size_t)y * (size_t)W + (size_t)x) * 3 + 0] = c[0];
    rgb[((size_t)y * (size_t)W + (size_t)x) * 3 + 1] = c[1];
    rgb[((size_t)y * (size_t)W + (size_t)x) * 3 + 2] = c[2];
}
HIGAN_DEF void higan_plot_text(unsigned char *rgb, int width, int height, int x, int y, const char *text,
                               int scale, const unsigned char color[3]) {
    int i, r, b, dx, dy;
    for (i = 0; text[i]; ++i) {
        int ch = toupper((unsigned char)text[i]);
        const char *at = strchr(higan__font_chars, ch);
        int g = at && ch ? (int)(at - higan__font_chars) : (int)(strchr(higan__font_chars, '?') - higan__font_chars);
        for (r = 0; r < 5; ++r)
            for (b = 0; b < 3; ++b)
                if (higan__font_rows[g][r] & (4 >> b))
                    for (dy = 0; dy < scale; ++dy)
                        for (dx = 0; dx < scale; ++dx)
                            higan__plot_px(rgb, width, height, x + (i * 4 + b) * scale + dx, y + r * scale + dy, color);
    }
}
static void higan__plot_line(unsigned char *rgb, int W, int H, int x0, int y0, int x1, int y1, const unsigned char c[3]) {
    int dx = abs(x1 - x0), dy = -abs(y1 - y0), sx = x0 < x1 ? 1 : -1, sy = y0 < y1 ? 1 : -1, err = dx + dy;
    for (;;) {                                   /* Bresenham */
        int e2;
        higan__plot_px(rgb, W, H, x0, y0, c);
        if (x0 == x1 && y0 == y1) break;
        e2 = 2 * err;
        if (e2 >= dy) { err += dy; x0 += sx; }
        if (e2 <= dx) { err += dx; y0 += sy; }
    }
}
static int higan__plot_cmp(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}
/* one panel: series y over steps x (n points, NaN = missing) into the box [x0, x0+w) x [y0, y0+h) */
static void higan__plot_panel(unsigned char *rgb, int W, int H, int px, int py, int pw, int ph, const char *name,
                              const double *xs, const double *ys, int n, double *sorted, int *xsp, int *ems,
                              int *idx) {
    static const unsigned char black[3] = {0, 0, 0}, grey[3] = {200, 200, 200}, light[3] = {150, 190, 235},
                               dark[3] = {20, 70, 160}, text[3] = {60, 60, 60};
    int i, m = 0, left = px + 42, right = px + pw - 8, top = py + 16, bottom = py + ph - 16;
    double lo, hi, xmin = 0, xmax = 1;
    char buf[64];
    int lastx = 0, lasty = 0, have_last = 0, half, k;
    higan_plot_text(rgb, W, H, px + 4, py + 4, name, 2, black);
    if (right - left < 20 || bottom - top < 20) return;
    for (i = 0; i < n; ++i) if (ys[i] == ys[i]) sorted[m++] = ys[i];
    /* frame */
    higan__plot_line(rgb, W, H, left, top, left, bottom, grey);
    higan__plot_line(rgb, W, H, left, bottom, right, bottom, grey);
    higan__plot_line(rgb, W, H, right, top, right, bottom, grey);
    higan__plot_line(rgb, W, H, left, top, right, top, grey);
    if (m == 0) { higan_plot_text(rgb, W, H, left + 4, top + 4, "no data", 1, text); return; }
    qsort(sorted, (size_t)m, sizeof(double), higan__plot_cmp);
    /* y range: 1st to 99th percentile, so a few early spikes do not flatten the curve */
    lo = sorted[(int)((m - 1) * 0.01)];
    hi = sorted[(int)((m - 1) * 0.99 + 0.5)];
    if (hi - lo < 1e-12 * (fabs(hi) + 1e-30)) { hi += 0.5 * (fabs(hi) + 1e-6); lo -= 0.5 * (fabs(lo) + 1e-6); }
    { double pad = 0.05 * (hi - lo); hi += pad; lo -= pad; }
    /* x range: every row's step, so that the panels line up */
    for (i = 0; i < n; ++i) if (xs[i] == xs[i]) { xmin = xmax = xs[i]; break; }
    for (i = 0; i < n; ++i) if (xs[i] == xs[i]) { if (xs[i] < xmin) xmin = xs[i]; if (xs[i] > xmax) xmax = xs[i]; }
    if (xmax <= xmin) xmax = xmin + 1;
    snprintf(buf, sizeof buf, "%.3g", hi); higan_plot_text(rgb, W, H, px + 2, top, buf, 1, text);
    snprintf(buf, sizeof buf, "%.3g", lo); higan_plot_text(rgb, W, H, px + 2, bottom - 5, buf, 1, text);
    snprintf(buf, sizeof buf, "%.0f", xmin); higan_plot_text(rgb, W, H, left, bottom + 4, buf, 1, text);
    snprintf(buf, sizeof buf, "%.0f", xmax); higan_plot_text(rgb, W, H, right - 4 * (int)strlen(buf), bottom + 4, buf, 1, text);
    /* raw values, light; a centred moving mean over about 4% of the points, dark; dots when
       the points are few (a validation column) */
    half = m / 50;
    for (i = 0; i < n; ++i) {
        double v = ys[i], yc;
        if (v != v) continue;
        xsp[i] = left + (int)((xs[i] - xmin) / (xmax - xmin) * (right - left) + 0.5);
        yc = v < lo ? lo : v > hi ? hi : v;
        ems[i] = bottom - (int)((yc - lo) / (hi - lo) * (bottom - top) + 0.5);
        if (have_last) higan__plot_line(rgb, W, H, lastx, lasty, xsp[i], ems[i], light);
        lastx = xsp[i]; lasty = ems[i];
        have_last = 1;
    }
    if (m <= 60) {
        for (i = 0; i < n; ++i) {
            int dx, dy;
            if (ys[i] != ys[i]) continue;
            for (dy = -1; dy <= 1; ++dy)
                for (dx = -1; dx <= 1; ++dx) higan__plot_px(rgb, W, H, xsp[i] + dx, ems[i] + dy, dark);
        }
        if (m > 1) {
            have_last = 0;
            for (i = 0; i < n; ++i) {
                if (ys[i] != ys[i]) continue;
                if (have_last) higan__plot_line(rgb, W, H, lastx, lasty, xsp[i], ems[i], dark);
                lastx = xsp[i]; lasty = ems[i];
                have_last = 1;
            }
        }
        return;
    }
    /* finite values in order, their moving mean */
    for (i = 0, k = 0; i < n; ++i) if (ys[i] == ys[i]) { sorted[k] = ys[i]; idx[k++] = i; }
    have_last = 0;
    for (k = 0; k < m; ++k) {
        int a = k - half < 0 ? 0 : k - half, b = k + half >= m ? m - 1 : k + half, j, y;
        double sum = 0, yc;
        for (j = a; j <= b; ++j) sum += sorted[j];
        yc = sum / (b - a + 1);
        yc = yc < lo ? lo : yc > hi ? hi : yc;
        y = bottom - (int)((yc - lo) / (hi - lo) * (bottom - top) + 0.5);
        if (have_last) higan__plot_line(rgb, W, H, lastx, lasty, xsp[idx[k]], y, dark);
        lastx = xsp[idx[k]]; lasty = y;
        have_last = 1;
    }
}
HIGAN_DEF higan_status higan_plot_csv(const char *csv_path, unsigned char *rgb, int width, int height) {
    char *text, *p, *names[HIGAN_CSV_MAX + 2];
    double *vals = NULL, *xs = NULL, *col = NULL, *sorted = NULL;
    int *xsp = NULL, *ems = NULL, *idx = NULL;
    int ncol = 0, nrow = 0, cap = 0, i, j, npanel, gx, gy;
    higan_status rc = HIGAN_OK;
    if (!csv_path || !rgb || width < 160 || height < 60) return higan__error(HIGAN_ERR_ARG, "plot_csv: bad arguments");
    memset(rgb, 255, (size_t)width * (size_t)height * 3);
    if (!(text = higan__tr_read_text(csv_path, NULL))) return higan__error(HIGAN_ERR_IO, "plot: cannot read '%s'", csv_path);
    /* header */
    p = text;
    while (*p && *p != '\n' && ncol < HIGAN_CSV_MAX + 2) {
        names[ncol++] = p;
        while (*p && *p != ',' && *p != '\n' && *p != '\r') ++p;
        if (*p == ',') *p++ = 0;
        else if (*p == '\r') { *p++ = 0; }
    }
    if (*p == '\n') *p++ = 0;
    if (ncol < 3) { HIGAN_FREE(text); return higan__error(HIGAN_ERR_FORMAT, "plot: '%s' has no value columns", csv_path); }
    /* rows */
    while (*p) {
        char *e;
        if (nrow == cap) {
            double *nv;
            cap = cap ? 2 * cap : 1024;
            nv = (double *)HIGAN_REALLOC(vals, sizeof(double) * (size_t)cap * (size_t)ncol);
            if (!nv) { rc = higan__error(HIGAN_ERR_NOMEM, "plot: out of memory"); goto done; }
            vals = nv;
        }
        for (j = 0; j < ncol; ++j) {
            double v = NAN;
            if (*p && *p != ',' && *p != '\n' && *p != '\r') {
                v = strtod(p, &e);
                if (e == p) v = NAN;
                p = e;
            }
            while (*p && *p != ',' && *p != '\n') ++p;
            if (*p == ',') ++p;
            vals[(size_t)nrow * (size_t)ncol + (size_t)j] = v;
        }
        while (*p && *p != '\n') ++p;
        if (*p == '\n') ++p;
        ++nrow;
    }
    npanel = ncol - 2;
    gx = npanel <= 3 ? 1 : npanel <= 8 ? 2 : 3;
    gy = (npanel + gx - 1) / gx;
    xs = (double *)HIGAN_MALLOC(sizeof(double) * (size_t)(nrow + 1));
    col = (double *)HIGAN_MALLOC(sizeof(double) * (size_t)(nrow + 1));
    sorted = (double *)HIGAN_MALLOC(sizeof(double) * (size_t)(nrow + 1));
    xsp = (int *)HIGAN_MALLOC(sizeof(int) * (size_t)(nrow + 1));
    ems = (int *)HIGAN_MALLOC(sizeof(int) * (size_t)(nrow + 1));
    idx = (int *)HIGAN_MALLOC(sizeof(int) * (size_t)(nrow + 1));
    if (!xs || !col || !sorted || !xsp || !ems || !idx) { rc = higan__error(HIGAN_ERR_NOMEM, "plot: out of memory"); goto done; }
    for (i = 0; i < nrow; ++i) xs[i] = vals[(size_t)i * (size_t)ncol];
    for (j = 0; j < npanel; ++j) {
        int pw = width / gx, ph = height / gy;
        for (i = 0; i < nrow; ++i) col[i] = vals[(size_t)i * (size_t)ncol + (size_t)j + 2];
        higan__plot_panel(rgb, width, height, (j % gx) * pw, (j / gx) * ph, pw, ph, names[j + 2], xs, col, nrow, sorted, xsp, ems, idx);
    }
done:
    HIGAN_FREE(vals); HIGAN_FREE(xs); HIGAN_FREE(col); HIGAN_FREE(sorted); HIGAN_FREE(xsp); HIGAN_FREE(ems); HIGAN_FREE(idx);
    HIGAN_FREE(text);
    return rc;
}

/* ================================================================================================
   Augmentation (RandomClip / RandomScale on float images)
   ================================================================================================ */
static uint64_t higan__tr_below(higan_rng *r, uint64_t n) {        /* uniform in [0, n), unbiased */
    uint64_t x, threshold = (0 - n) % n;
    do x = higan_rng_u64(r); while (x < threshold);
    return x % n;
}
static double higan__tr_unit(higan_rng *r) { return (double)(higan_rng_u64(r) >> 11) * (1.0 / 9007199254740992.0); }
static int64_t higan__tr_ceil32(int64_t w) { return (w + 31) / 32 * 32; }

HIGAN_DEF void higan_augmenter_init(higan_augmenter *a) { memset(a, 0, sizeof *a); }
HIGAN_DEF void higan_augmenter_free(higan_augmenter *a) {
    if (!a) return;
    HIGAN_FREE(a->imgs); HIGAN_FREE(a->lens); HIGAN_FREE(a->tmp);
    higan_arena_free(&a->scratch);
    memset(a, 0, sizeof *a);
}
HIGAN_DEF higan_status higan_augment_batch(higan_augmenter *a, const higan_batch *b, int random_clip,
                                           int random_scale, higan_rng *rng) {
    const int64_t H = HIGAN_DATASET_HEIGHT;
    int64_t WA = 0, need, y, x;
    int k;
    /* per sample: clip width, clip offset, content width after scaling, length, scale flag */
    int64_t *plan;
    if (!a || !b || !rng) return higan__error(HIGAN_ERR_ARG, "augment_batch: NULL argument");
    if (b->B < 1) return higan__error(HIGAN_ERR_ARG, "augment_batch: empty batch");
    plan = (int64_t *)HIGAN_MALLOC(sizeof(int64_t) * 5 * (size_t)b->B);
    if (!plan) return higan__error(HIGAN_ERR_NOMEM, "augment_batch: out of memory");
    for (k = 0; k < b->B; ++k) {                 /* draws in sample order: clip, then scale */
        int64_t w = b->img_lens[k], cw = w, off = 0, nw = w, len;
        double ratio = 0;
        if (random_clip && w > 128) {
            cw = 128 + (int64_t)higan__tr_below(rng, (uint64_t)(w - 128));
            off = (int64_t)higan__tr_below(rng, (uint64_t)(w - cw));
        }
        nw = cw;
        if (random_scale) {
            ratio = (higan__tr_unit(rng) - 0.5) * 2 * 0.4;
            nw = higan__tr_ceil32((int64_t)((double)cw * (1 + ratio)));
            if (nw < 32) nw = 32;
        }
        len = higan__tr_ceil32(nw);
        plan[5 * k + 0] = cw; plan[5 * k + 1] = off; plan[5 * k + 2] = nw; plan[5 * k + 3] = len;
        plan[5 * k + 4] = random_scale ? (ratio > 0 ? 1 : 2) : 0;
        if (len > WA) WA = len;
    }
    need = (int64_t)b->B * H * WA;
    if (need > a->cap) {
        HIGAN_FREE(a->imgs);
        a->cap = 0;
        if (!(a->imgs = (float *)HIGAN_MALLOC(sizeof(float) * (size_t)need))) { HIGAN_FREE(plan); return higan__error(HIGAN_ERR_NOMEM, "augment_batch: out of memory"); }
        a->cap = need;
    }
    if (b->B > a->lens_cap) {
        HIGAN_FREE(a->lens);
        a->lens_cap = 0;
        if (!(a->lens = (int *)HIGAN_MALLOC(sizeof(int) * (size_t)b->B))) { HIGAN_FREE(plan); return higan__error(HIGAN_ERR_NOMEM, "augment_batch: out of memory"); }
        a->lens_cap = b->B;
    }
    a->B = b->B;
    a->width = WA;
    for (k = 0; k < b->B; ++k) {
        int64_t cw = plan[5 * k], off = plan[5 * k + 1], nw = plan[5 * k + 2];
        const float *src = b->imgs + (int64_t)k * H * b->width + off;
        float *dst = a->imgs + (int64_t)k * H * WA;
        a->lens[k] = (int)plan[5 * k + 3];
        if (plan[5 * k + 4]) {                   /* resample into tmp [64, nw], then copy */
            higan_pil_filter f = plan[5 * k + 4] == 1 ? HIGAN_PIL_BILINEAR : HIGAN_PIL_LANCZOS;
            size_t sb = higan_resize_pil_scratch_bytes(nw, H, cw, H, f);
            higan_status rc;
            if (H * nw > a->tmp_cap) {
                HIGAN_FREE(a->tmp);
                a->tmp_cap = 0;
                if (!(a->tmp = (float *)HIGAN_MALLOC(sizeof(float) * (size_t)(H * nw)))) { HIGAN_FREE(plan); return higan__error(HIGAN_ERR_NOMEM, "augment_batch: out of memory"); }
                a->tmp_cap = H * nw;
            }
            if (sb > a->scratch.capacity) {
                higan_arena_free(&a->scratch);
                if (higan_arena_init(&a->scratch, sb * 2) != HIGAN_OK) { HIGAN_FREE(plan); return higan__error(HIGAN_ERR_NOMEM, "augment_batch: out of memory"); }
            }
            higan_arena_reset(&a->scratch);
            rc = higan_resize_pil_f32(a->tmp, nw, H, src, cw, H, b->width, f, &a->scratch);
            if (rc != HIGAN_OK) { HIGAN_FREE(plan); return rc; }
            for (y = 0; y < H; ++y) {
                for (x = 0; x < nw; ++x) {        /* the official resamples uint8: clip as it does */
                    float v = a->tmp[y * nw + x];
                    dst[y * WA + x] = v < -1.0f ? -1.0f : v > 1.0f ? 1.0f : v;
                }
                for (; x < WA; ++x) dst[y * WA + x] = -1.0f;
            }
        } else {
            for (y = 0; y < H; ++y) {
                memcpy(dst + y * WA, src + y * b->width, sizeof(float) * (size_t)cw);
                for (x = cw; x < WA; ++x) dst[y * WA + x] = -1.0f;
            }
        }
    }
    HIGAN_FREE(plan);
    return HIGAN_OK;
}

/* ================================================================================================
   Arena growth and state snapshots for retried steps
   ================================================================================================ */
/* the capacity an overflowed arena grows to */
static size_t higan__tr_grown(const higan_arena *a) {
    size_t cap = a->needed + a->needed / 4;
    if (cap < 2 * a->capacity) cap = 2 * a->capacity;
    if (cap < ((size_t)1 << 24)) cap = (size_t)1 << 24;
    return cap;
}
HIGAN_DEF int higan_train_grow(higan_tape *t) {
    higan_arena *a = t->arena, *d = t->data;
    int grown = 0;
    if (t->be->device) (void)t->be->sync(t->be->ctx);   /* the failed attempt's (overflow) errors are spent */
    if (a->overflow) {
        size_t cap = higan__tr_grown(a);
        higan_arena_free(a);
        if (higan_arena_init(a, cap) != HIGAN_OK) return 0;
        grown = 1;
    }
    if (d && d != a && d->overflow) {   /* a device tape's data arena, through its backend */
        size_t cap = higan__tr_grown(d);
        higan_backend_arena_free(d, t->be);
        if (higan_backend_arena_init(d, t->be, cap) != HIGAN_OK) return 0;
        grown = 1;
    }
    if (t->overflow) {
        int cap = t->capacity * 2;
        higan_tape_free(t);
        if (higan_tape_init(t, a, cap) != HIGAN_OK) return 0;
        grown = 1;
    }
    higan_tape_reset(t);
    return grown;
}

/* Buffers (batch-norm statistics) of some stores and an RNG, restored when a step is retried. */
typedef struct {
    float *f[HIGAN_STORE_COUNT];
    int64_t *i[HIGAN_STORE_COUNT];
    unsigned dev;                    /* bit k: store k's float buffers are in its mirror's buffer_copy */
    higan_rng rng;
} higan__tr_snap;
/* Float buffers of a store on a backend: a device copy into its mirror's buffer_copy. */
static void higan__tr_copy_buffers(const higan_params *p, int restore) {
    const higan_backend *be = p->mirror_be;
    if (restore) be->copy(be->ctx, p->mirror.buffer, p->mirror.buffer_copy, sizeof(float) * (size_t)p->n_buffer);
    else be->copy(be->ctx, p->mirror.buffer_copy, p->mirror.buffer, sizeof(float) * (size_t)p->n_buffer);
}
static higan_status higan__tr_snap_take(higan__tr_snap *s, const higan_model *m, unsigned stores, const higan_rng *rng) {
    int k;
    memset(s, 0, sizeof *s);
    if (rng) s->rng = *rng;
    for (k = 0; k < HIGAN_STORE_COUNT; ++k) {
        const higan_params *p = &m->store[k];
        if (!(stores & (1u << k))) continue;
        if (p->n_buffer && p->mirror_be) {
            higan__tr_copy_buffers(p, 0);
            s->dev |= 1u << k;
        }
        /* the host arrays also on a backend: an op that still gets host pointers to a network's
           running statistics (one not in the backend's table yet) updates them there */
        if (p->n_buffer) {
            if (!(s->f[k] = (float *)HIGAN_MALLOC(sizeof(float) * (size_t)p->n_buffer))) return higan__error(HIGAN_ERR_NOMEM, "train: out of memory");
            memcpy(s->f[k], p->buffer, sizeof(float) * (size_t)p->n_buffer);
        }
        if (p->n_ibuffer) {
            if (!(s->i[k] = (int64_t *)HIGAN_MALLOC(sizeof(int64_t) * (size_t)p->n_ibuffer))) return higan__error(HIGAN_ERR_NOMEM, "train: out of memory");
            memcpy(s->i[k], p->ibuffer, sizeof(int64_t) * (size_t)p->n_ibuffer);
        }
    }
    return HIGAN_OK;
}
static void higan__tr_snap_restore(const higan__tr_snap *s, higan_model *m, higan_rng *rng) {
    int k;
    if (rng) *rng = s->rng;
    for (k = 0; k < HIGAN_STORE_COUNT; ++k) {
        higan_params *p = &m->store[k];
        if (s->dev & (1u << k)) higan__tr_copy_buffers(p, 1);
        if (s->f[k]) memcpy(p->buffer, s->f[k], sizeof(float) * (size_t)p->n_buffer);
        if (s->i[k]) memcpy(p->ibuffer, s->i[k], sizeof(int64_t) * (size_t)p->n_ibuffer);
    }
}
static void higan__tr_snap_free(higan__tr_snap *s) {
    int k;
    for (k = 0; k < HIGAN_STORE_COUNT; ++k) { HIGAN_FREE(s->f[k]); HIGAN_FREE(s->i[k]); }
}
/* the status of a failed forward/backward: an overflow of the tape or its arena, or another error */
static int higan__tr_overflowed(const higan_tape *t) {
    return t->overflow || t->arena->overflow || (t->data && t->data->overflow);
}
/* A batch input: wrapped on the CPU (no copy), uploaded on a device tape. */
static higan_var *higan__tr_input(higan_tape *t, const float *host, int ndim, const int64_t *shape) {
    return t->be->device ? higan_var_upload(t, host, ndim, shape) : higan_var_wrap(t, (float *)(uintptr_t)host, ndim, shape);
}
/* The first value of v on the host (a loss). */
static float higan__tr_scalar(higan_tape *t, const higan_var *v) {
    float x;
    higan_var_read(t, v, &x, 1);
    return x;
}
/* A host copy of v (values downloaded on a device tape) for host-side reading (decoding,
   arg-max); *tmp holds the malloc'd values to free (NULL on the CPU: v itself is returned). */
static const higan_var *higan__tr_host_var(higan_tape *t, const higan_var *v, higan_var *copy, float **tmp) {
    *tmp = NULL;
    if (!t->be->device) return v;
    *copy = *v;
    if (!(*tmp = (float *)HIGAN_MALLOC(sizeof(float) * (size_t)higan_var_numel(v)))) return NULL;
    higan_var_read(t, v, *tmp, higan_var_numel(v));
    copy->data = *tmp;
    copy->grad = NULL;
    return copy;
}
/* The stores a call on t uses must live where t's kernels run (higan_model_to_backend). */
static higan_status higan__tr_check_backend(const higan_model *m, const higan_tape *t, unsigned stores, const char *who) {
    int k;
    for (k = 0; k < HIGAN_STORE_COUNT; ++k) {
        const higan_params *p = &m->store[k];
        if (!(stores & (1u << k)) || !p->allocated) continue;
        if (t->be->device ? p->mirror_be != t->be : p->mirror_be != NULL)
            return higan__error(HIGAN_ERR_ARG, "%s: the tape runs on the %s backend but store %d of the model %s; "
                                "move the model with higan_model_to_backend (the tape's backend)", who, t->be->name, k,
                                p->mirror_be ? "lives on another backend" : "is on the host");
    }
    return HIGAN_OK;
}

/* ================================================================================================
   Recognizer pretraining
   ================================================================================================ */
HIGAN_DEF higan_status higan_ocr_train_step(higan_model *m, higan_tape *t, const float *imgs, int B,
                                            int64_t W, const int *img_lens, const int *labels,
                                            int64_t label_stride, const int *label_lens,
                                            higan_adam *opt, higan_rng *rng, float *loss) {
    higan_params *store;
    higan__tr_snap snap;
    int *in_lens = NULL, *targets = NULL;
    int64_t total = 0, shape[4];
    higan_status rc = HIGAN_OK;
    int b, j, attempt;
    if (!m || !t || !imgs || !img_lens || !labels || !label_lens || !opt || !loss || B < 1)
        return higan__error(HIGAN_ERR_ARG, "ocr_train_step: bad arguments");
    if (!(m->cfg.nets & HIGAN_NET_BIT(HIGAN_NET_RECOGNIZER))) return higan__error(HIGAN_ERR_ARG, "ocr_train_step: the model has no Recognizer");
    store = &m->store[HIGAN_STORE_OCR];
    if (store->frozen) return higan__error(HIGAN_ERR_ARG, "ocr_train_step: the Recognizer's store is frozen (clear m->store[HIGAN_STORE_OCR].frozen)");
    if ((rc = higan__tr_check_backend(m, t, 1u << HIGAN_STORE_OCR, "ocr_train_step")) != HIGAN_OK) return rc;
    for (b = 0; b < B; ++b) total += label_lens[b];
    in_lens = (int *)HIGAN_MALLOC(sizeof(int) * (size_t)B);
    targets = (int *)HIGAN_MALLOC(sizeof(int) * (size_t)(total > 0 ? total : 1));
    if (!in_lens || !targets) { HIGAN_FREE(in_lens); HIGAN_FREE(targets); return higan__error(HIGAN_ERR_NOMEM, "ocr_train_step: out of memory"); }
    for (b = 0, total = 0; b < B; ++b) {
        in_lens[b] = img_lens[b] / HIGAN_BACKBONE_LEN_SCALE;
        for (j = 0; j < label_lens[b]; ++j) targets[total++] = labels[(int64_t)b * label_stride + j];
    }
    if ((rc = higan__tr_snap_take(&snap, m, 1u << HIGAN_STORE_OCR, rng)) != HIGAN_OK) goto out;
    shape[0] = B; shape[1] = 1; shape[2] = HIGAN_IMAGE_HEIGHT; shape[3] = W;
    for (attempt = 0; attempt < 12; ++attempt) {
        higan_var *x, *lp, *L;
        higan_tape_reset(t);
        higan_params_zero_grad(store);
        x = higan__tr_input(t, imgs, 4, shape);
        lp = higan_recognizer_forward(t, &m->R, x, img_lens, 1, rng);
        L = higan_ctc_loss(t, lp, targets, in_lens, label_lens, 0, 1);
        if (L) {
            *loss = higan__tr_scalar(t, L);
            if (!higan__tr_finite(*loss)) {
                higan__tr_snap_restore(&snap, m, rng);
                rc = higan__error(HIGAN_ERR_ARG, "loss 'ctc' is %s", *loss != *loss ? "nan" : "inf");
                goto out;
            }
            rc = higan_tape_backward_release(t, L, NULL);
            if (rc == HIGAN_OK && !higan__tr_overflowed(t)) {
                higan_adam_step(opt, store);
                if (t->be->device) rc = higan_tape_sync(t);   /* the device's errors, if any */
                goto out;
            }
        }
        if (!higan__tr_overflowed(t) || !higan_train_grow(t)) { rc = higan_tape_status(t); if (rc == HIGAN_OK) rc = HIGAN_ERR_ARG; goto out; }
        higan__tr_snap_restore(&snap, m, rng);
    }
    rc = higan__error(HIGAN_ERR_NOMEM, "ocr_train_step: the arena keeps overflowing");
out:
    higan__tr_snap_free(&snap);
    HIGAN_FREE(in_lens);
    HIGAN_FREE(targets);
    return rc;
}

/* An evenly spread subset of max_words words of ds (every (count / max_words)-th word), so a
   quick estimate sees every writer; *orig (malloc'd) maps its records back to ds. */
static higan_status higan__tr_subset(const higan_dataset *ds, int64_t max_words, higan_dataset *out, int64_t **orig) {
    int64_t n = max_words, k, i, maxw = 1;
    uint8_t *img;
    char label[HIGAN_DATASET_MAX_LABEL * 4 + 8];
    higan_status rc = HIGAN_OK;
    for (i = 0; i < ds->count; ++i) if (ds->img_lens[i] > maxw) maxw = ds->img_lens[i];
    higan_dataset_init(out);
    *orig = (int64_t *)HIGAN_MALLOC(sizeof(int64_t) * (size_t)n);
    img = (uint8_t *)HIGAN_MALLOC((size_t)(HIGAN_DATASET_HEIGHT * maxw));
    if (!*orig || !img) { HIGAN_FREE(*orig); HIGAN_FREE(img); *orig = NULL; return higan__error(HIGAN_ERR_NOMEM, "evaluate: out of memory"); }
    for (k = 0; k < n && rc == HIGAN_OK; ++k) {
        int w;
        i = k * ds->count / n;
        (*orig)[k] = i;
        w = higan_dataset_image(ds, i, img, HIGAN_DATASET_HEIGHT * maxw);
        if (w < 0 || higan_dataset_label(ds, i, label, (int)sizeof label) < 0) { rc = HIGAN_ERR_ARG; break; }
        rc = higan_dataset_append(out, img, w, label, ds->wids[i]);
    }
    HIGAN_FREE(img);
    if (rc != HIGAN_OK) { higan_dataset_free(out); HIGAN_FREE(*orig); *orig = NULL; }
    return rc;
}

/* An evaluation loader: every word in dataset order, style images, no augmentation. */
static higan_status higan__tr_eval_loader(higan_loader *L, const higan_dataset *ds, int batch_size) {
    higan_loader_options o = higan_loader_default_options();
    o.batch_size = batch_size > 0 ? batch_size : 64;
    o.shuffle = 0;
    o.drop_last = 0;
    o.augment = 0;
    o.process_style = 1;
    o.threaded = 0;
    return higan_loader_init(L, ds, &o);
}
HIGAN_DEF higan_status higan_ocr_evaluate(higan_model *m, higan_tape *t, const higan_dataset *ds,
                                          int batch_size, int64_t max_words, higan_text_score *out,
                                          higan_word_callback on_word, void *user) {
    higan_loader L;
    higan_batch b;
    higan_status rc;
    char pred[HIGAN_MAX_WORD_LEN * 4 + 8], ref[HIGAN_DATASET_MAX_LABEL + 8];
    higan_dataset sub;
    int64_t *orig = NULL;
    if (!m || !t || !ds || !out) return higan__error(HIGAN_ERR_ARG, "ocr_evaluate: NULL argument");
    if (!(m->cfg.nets & HIGAN_NET_BIT(HIGAN_NET_RECOGNIZER))) return higan__error(HIGAN_ERR_ARG, "ocr_evaluate: the model has no Recognizer");
    if ((rc = higan__tr_check_backend(m, t, 1u << HIGAN_STORE_OCR, "ocr_evaluate")) != HIGAN_OK) return rc;
    higan_text_score_init(out);
    if (max_words > 0 && max_words < ds->count) {
        if ((rc = higan__tr_subset(ds, max_words, &sub, &orig)) != HIGAN_OK) return rc;
        ds = &sub;
    }
    if ((rc = higan__tr_eval_loader(&L, ds, batch_size)) != HIGAN_OK) { if (orig) { higan_dataset_free(&sub); HIGAN_FREE(orig); } return rc; }
    while ((rc = higan_loader_next(&L, &b)) == HIGAN_OK) {
        int64_t shape[4];
        higan_var *x, *logits = NULL, copy;
        const higan_var *hl;
        float *tmp;
        int k, attempt;
        shape[0] = b.B; shape[1] = 1; shape[2] = HIGAN_IMAGE_HEIGHT; shape[3] = b.width;
        for (attempt = 0; attempt < 12; ++attempt) {
            higan_tape_reset(t);
            higan_no_grad_begin(t);
            x = higan__tr_input(t, b.imgs, 4, shape);
            logits = higan_recognizer_forward(t, &m->R, x, b.img_lens, 0, NULL);
            higan_no_grad_end(t);
            if (logits || !higan__tr_overflowed(t) || !higan_train_grow(t)) break;
        }
        if (!logits) { rc = higan_tape_status(t); if (rc == HIGAN_OK) rc = HIGAN_ERR_ARG; break; }
        if (!(hl = higan__tr_host_var(t, logits, &copy, &tmp))) { rc = higan__error(HIGAN_ERR_NOMEM, "ocr_evaluate: out of memory"); break; }
        for (k = 0; k < b.B; ++k) {
            int n = higan_recognizer_decode(hl, 0, k, b.img_lens[k], pred, (int)sizeof pred);
            if (n < 0) { rc = n; break; }
            higan_text_decode(b.labels + (int64_t)k * b.label_width, b.label_lens[k], ref, (int)sizeof ref);
            if ((rc = higan_text_score_add(out, pred, ref)) != HIGAN_OK) break;
            if (on_word) on_word(user, orig ? orig[b.records[k]] : b.records[k], pred, ref);
        }
        HIGAN_FREE(tmp);
        if (rc < 0) break;
    }
    if (rc == HIGAN_LOADER_EPOCH_END) rc = HIGAN_OK;
    higan_loader_free(&L);
    higan_tape_reset(t);
    if (orig) { higan_dataset_free(&sub); HIGAN_FREE(orig); }
    return rc;
}

/* ================================================================================================
   Writer-identifier pretraining
   ================================================================================================ */
HIGAN_DEF higan_status higan_backbone_from_recognizer(higan_model *dst, const higan_model *src) {
    const higan_params *rp;
    higan_params *bp;
    int i;
    if (!dst || !src || !dst->initialised || !src->initialised)
        return higan__error(HIGAN_ERR_ARG, "backbone_from_recognizer: uninitialised model");
    if (!(dst->cfg.nets & HIGAN_NET_BIT(HIGAN_NET_STYLE_BACKBONE)))
        return higan__error(HIGAN_ERR_ARG, "backbone_from_recognizer: the target model has no StyleBackbone");
    if (!(src->cfg.nets & HIGAN_NET_BIT(HIGAN_NET_RECOGNIZER)))
        return higan__error(HIGAN_ERR_ARG, "backbone_from_recognizer: the source model has no Recognizer");
    if (dst->cfg.B.resolution != src->cfg.R.cnn.resolution || dst->cfg.B.max_dim != src->cfg.R.cnn.max_dim ||
        dst->cfg.B.in_channel != src->cfg.R.cnn.in_channel)
        return higan__error(HIGAN_ERR_ARG, "backbone_from_recognizer: the StyleBackbone (resolution %d, max_dim %d) and the "
                            "Recognizer's CNN (resolution %d, max_dim %d) differ", dst->cfg.B.resolution, dst->cfg.B.max_dim,
                            src->cfg.R.cnn.resolution, src->cfg.R.cnn.max_dim);
    bp = &dst->store[HIGAN_STORE_BACKBONE];
    rp = &src->store[HIGAN_STORE_OCR];
    if (rp->mirror_be) higan_params_download((higan_params *)(uintptr_t)rp, HIGAN_PARAMS_VALUES | HIGAN_PARAMS_BUFFERS);
    for (i = 0; i < bp->count; ++i) {          /* check all first */
        const higan_param_entry *e = &bp->entries[i];
        char name[HIGAN_MAX_NAME + 16];
        const char *rest = strchr(e->name, '.');
        int h, d;
        if (!rest) continue;
        snprintf(name, sizeof name, "Recognizer%s", rest);
        if ((h = higan_params_find(rp, name)) < 0)
            return higan__error(HIGAN_ERR_FORMAT, "backbone_from_recognizer: the Recognizer has no %s", name);
        if (rp->entries[h].kind != e->kind || rp->entries[h].ndim != e->ndim)
            return higan__error(HIGAN_ERR_FORMAT, "backbone_from_recognizer: %s and %s differ", name, e->name);
        for (d = 0; d < e->ndim; ++d)
            if (rp->entries[h].shape[d] != e->shape[d])
                return higan__error(HIGAN_ERR_FORMAT, "backbone_from_recognizer: %s and %s differ in shape", name, e->name);
    }
    for (i = 0; i < bp->count; ++i) {
        const higan_param_entry *e = &bp->entries[i];
        char name[HIGAN_MAX_NAME + 16];
        const char *rest = strchr(e->name, '.');
        int h;
        if (!rest) continue;
        snprintf(name, sizeof name, "Recognizer%s", rest);
        h = higan_params_find(rp, name);
        if (e->kind == HIGAN_BUFFER_I64)
            memcpy(higan_params_idata(bp, i), higan_params_idata(rp, h), sizeof(int64_t) * (size_t)e->numel);
        else
            memcpy(higan_params_data(bp, i), higan_params_data(rp, h), sizeof(float) * (size_t)e->numel);
    }
    higan_params_upload(bp, HIGAN_PARAMS_VALUES | HIGAN_PARAMS_BUFFERS | HIGAN_PARAMS_IBUFFERS);   /* when on a backend */
    return HIGAN_OK;
}

static int higan__tr_argmax(const float *x, int64_t n) {
    int64_t i, best = 0;
    for (i = 1; i < n; ++i) if (x[i] > x[best]) best = i;
    return (int)best;
}
HIGAN_DEF higan_status higan_wid_train_step(higan_model *m, higan_tape *t, const float *imgs, int B,
                                            int64_t W, const int *img_lens, const int *wids,
                                            higan_adam *opt_b, higan_adam *opt_w, higan_rng *rng,
                                            float *loss, int *correct) {
    higan_params *sb, *sw;
    higan__tr_snap snap;
    int64_t shape[4];
    higan_status rc;
    int b, attempt;
    const unsigned need = HIGAN_NET_BIT(HIGAN_NET_STYLE_BACKBONE) | HIGAN_NET_BIT(HIGAN_NET_WRITER_IDENTIFIER);
    if (!m || !t || !imgs || !img_lens || !wids || !opt_b || !opt_w || !loss || B < 1)
        return higan__error(HIGAN_ERR_ARG, "wid_train_step: bad arguments");
    if ((m->cfg.nets & need) != need) return higan__error(HIGAN_ERR_ARG, "wid_train_step: the model needs StyleBackbone and WriterIdentifier");
    sb = &m->store[HIGAN_STORE_BACKBONE];
    sw = &m->store[HIGAN_STORE_WID];
    if (sb->frozen || sw->frozen) return higan__error(HIGAN_ERR_ARG, "wid_train_step: clear m->store[HIGAN_STORE_BACKBONE / _WID].frozen");
    if ((rc = higan__tr_check_backend(m, t, (1u << HIGAN_STORE_BACKBONE) | (1u << HIGAN_STORE_WID), "wid_train_step")) != HIGAN_OK)
        return rc;
    for (b = 0; b < B; ++b)
        if (wids[b] < 0 || wids[b] >= m->cfg.n_writer)
            return higan__error(HIGAN_ERR_ARG, "wid_train_step: writer %d outside the identifier's %lld classes", wids[b], (long long)m->cfg.n_writer);
    if ((rc = higan__tr_snap_take(&snap, m, (1u << HIGAN_STORE_BACKBONE) | (1u << HIGAN_STORE_WID), rng)) != HIGAN_OK) {
        higan__tr_snap_free(&snap);
        return rc;
    }
    shape[0] = B; shape[1] = 1; shape[2] = HIGAN_IMAGE_HEIGHT; shape[3] = W;
    for (attempt = 0; attempt < 12; ++attempt) {
        higan_var *x, *feat, *logits, *L;
        higan_tape_reset(t);
        higan_params_zero_grad(sb);
        higan_params_zero_grad(sw);
        x = higan__tr_input(t, imgs, 4, shape);
        feat = higan_style_backbone_forward(t, &m->B, x, 1, rng, NULL);
        logits = higan_writer_identifier_forward(t, &m->W, feat, img_lens);
        L = higan_cross_entropy(t, logits, wids);
        if (L) {
            *loss = higan__tr_scalar(t, L);
            if (!higan__tr_finite(*loss)) {
                higan__tr_snap_restore(&snap, m, rng);
                higan__tr_snap_free(&snap);
                return higan__error(HIGAN_ERR_ARG, "loss 'wid' is %s", *loss != *loss ? "nan" : "inf");
            }
            if (correct) {
                higan_var copy;
                float *tmp;
                const higan_var *hl = higan__tr_host_var(t, logits, &copy, &tmp);
                if (!hl) { higan__tr_snap_free(&snap); return higan__error(HIGAN_ERR_NOMEM, "wid_train_step: out of memory"); }
                *correct = 0;
                for (b = 0; b < B; ++b)
                    *correct += higan__tr_argmax(hl->data + (int64_t)b * m->cfg.n_writer, m->cfg.n_writer) == wids[b];
                HIGAN_FREE(tmp);
            }
            rc = higan_tape_backward_release(t, L, NULL);
            if (rc == HIGAN_OK && !higan__tr_overflowed(t)) {
                higan_adam_step(opt_b, sb);
                higan_adam_step(opt_w, sw);
                higan__tr_snap_free(&snap);
                return t->be->device ? higan_tape_sync(t) : HIGAN_OK;
            }
        }
        if (!higan__tr_overflowed(t) || !higan_train_grow(t)) {
            higan__tr_snap_free(&snap);
            rc = higan_tape_status(t);
            return rc == HIGAN_OK ? HIGAN_ERR_ARG : rc;
        }
        higan__tr_snap_restore(&snap, m, rng);
    }
    higan__tr_snap_free(&snap);
    return higan__error(HIGAN_ERR_NOMEM, "wid_train_step: the arena keeps overflowing");
}

HIGAN_DEF higan_status higan_wid_evaluate(higan_model *m, higan_tape *t, const higan_dataset *ds,
                                          int wid_offset, int batch_size, int64_t max_words,
                                          int64_t *correct, int64_t *total) {
    higan_loader L;
    higan_batch b;
    higan_status rc;
    const unsigned need = HIGAN_NET_BIT(HIGAN_NET_STYLE_BACKBONE) | HIGAN_NET_BIT(HIGAN_NET_WRITER_IDENTIFIER);
    higan_dataset sub;
    int64_t *orig = NULL;
    if (!m || !t || !ds || !correct || !total) return higan__error(HIGAN_ERR_ARG, "wid_evaluate: NULL argument");
    if ((m->cfg.nets & need) != need) return higan__error(HIGAN_ERR_ARG, "wid_evaluate: the model needs StyleBackbone and WriterIdentifier");
    if ((rc = higan__tr_check_backend(m, t, (1u << HIGAN_STORE_BACKBONE) | (1u << HIGAN_STORE_WID), "wid_evaluate")) != HIGAN_OK)
        return rc;
    *correct = *total = 0;
    if (max_words > 0 && max_words < ds->count) {
        if ((rc = higan__tr_subset(ds, max_words, &sub, &orig)) != HIGAN_OK) return rc;
        ds = &sub;
    }
    if ((rc = higan__tr_eval_loader(&L, ds, batch_size)) != HIGAN_OK) { if (orig) { higan_dataset_free(&sub); HIGAN_FREE(orig); } return rc; }
    while ((rc = higan_loader_next(&L, &b)) == HIGAN_OK) {
        int64_t shape[4];
        higan_var *x, *feat, *logits = NULL, copy;
        const higan_var *hl;
        float *tmp;
        int k, attempt;
        shape[0] = b.B; shape[1] = 1; shape[2] = HIGAN_IMAGE_HEIGHT; shape[3] = b.width;
        for (attempt = 0; attempt < 12; ++attempt) {
            higan_tape_reset(t);
            higan_no_grad_begin(t);
            x = higan__tr_input(t, b.imgs, 4, shape);
            feat = higan_style_backbone_forward(t, &m->B, x, 0, NULL, NULL);
            logits = higan_writer_identifier_forward(t, &m->W, feat, b.img_lens);
            higan_no_grad_end(t);
            if (logits || !higan__tr_overflowed(t) || !higan_train_grow(t)) break;
        }
        if (!logits) { rc = higan_tape_status(t); if (rc == HIGAN_OK) rc = HIGAN_ERR_ARG; break; }
        if (!(hl = higan__tr_host_var(t, logits, &copy, &tmp))) { rc = higan__error(HIGAN_ERR_NOMEM, "wid_evaluate: out of memory"); break; }
        for (k = 0; k < b.B; ++k) {
            int truth = (int)ds->wids[b.records[k]] - wid_offset;
            if (truth < 0 || truth >= m->cfg.n_writer) continue;     /* a writer it was not trained on */
            *correct += higan__tr_argmax(hl->data + (int64_t)k * m->cfg.n_writer, m->cfg.n_writer) == truth;
            *total += 1;
        }
        HIGAN_FREE(tmp);
    }
    if (rc == HIGAN_LOADER_EPOCH_END) rc = HIGAN_OK;
    higan_loader_free(&L);
    higan_tape_reset(t);
    if (orig) { higan_dataset_free(&sub); HIGAN_FREE(orig); }
    return rc;
}
/* ==== GAN TRAINING implementation (networks/model.py GlobalLocalAdversarialModel.train) ==== */

static const char *const higan__gan_loss_names[HIGAN_GAN_N_LOSSES] = {
    "real_disc_loss", "fake_disc_loss", "real_disc_loss_patch", "fake_disc_loss_patch", "disc_loss",
    "adv_loss", "adv_loss_patch", "fake_ctc_loss", "fake_ctc_loss_rand", "fake_ctc_loss_style",
    "fake_ctc_loss_recn", "info_loss", "recn_loss", "fake_wid_loss", "ctx_loss", "kl_loss",
    "gp_ctc", "gp_info", "gp_wid", "gp_recn", "g_loss"};

HIGAN_DEF const char *higan_gan_loss_name(int i) {
    return i >= 0 && i < HIGAN_GAN_N_LOSSES ? higan__gan_loss_names[i] : NULL;
}

HIGAN_DEF higan_gan_options higan_gan_default_options(void) {
    higan_gan_options o;
    memset(&o, 0, sizeof o);
    o.lr = 2e-4;
    o.beta1 = 0.5;
    o.beta2 = 0.999;
    o.num_critic_train = 4;
    o.vae_mode = 1;
    o.lambda_ctx = 2.0f;
    o.lambda_kl = 1e-4f;
    o.gp_ctc_max = 100.0f;
    o.gp_wid_max = 10.0f;
    o.frozen_bn = 0;
    o.start_decay_epoch = 25;
    o.n_epochs_decay = 46;
    o.arena_max = 0;
    return o;
}

/* What a step changes before its optimizer update, saved so that a step that ran out of
   arena can be run again from the same state: every buffer of every store (batch-norm
   statistics, spectral-norm u0/sv0, num_batches_tracked), G's embedding (renormalised in
   place) and the RNG. */
typedef struct higan__gan_priv {
    float *buf[HIGAN_STORE_COUNT];
    int64_t *ibuf[HIGAN_STORE_COUNT];
    float *emb;
    int64_t emb_n;
    higan_rng rng;
    const higan_backend *be;    /* set_backend: the model's stores live there */
    float *emb_dev;             /* the embedding's snapshot in be's memory */
} higan__gan_priv;

/* On a backend the float buffers go to each mirror's buffer_copy and the embedding to emb_dev
   (device copies); the int64 counters stay on the host. */
static void higan__gan_snapshot(higan_gan_trainer *tr, int restore) {
    higan__gan_priv *p = (higan__gan_priv *)tr->priv;
    higan_params *ge = &tr->model.store[HIGAN_STORE_GE];
    float *emb = higan_params_data(ge, tr->model.G.text_embedding);
    int s;
    if (p->be) {
        const higan_backend *be = p->be;
        float *demb = ge->mirror.value + ge->entries[tr->model.G.text_embedding].offset;
        size_t bytes = sizeof(float) * (size_t)p->emb_n;
        for (s = 0; s < HIGAN_STORE_COUNT; ++s) {
            higan_params *st = &tr->model.store[s];
            if (st->n_buffer) higan__tr_copy_buffers(st, restore);
            if (st->n_buffer) {   /* and the host arrays (see higan__tr_snap_take) */
                if (restore) memcpy(st->buffer, p->buf[s], sizeof(float) * (size_t)st->n_buffer);
                else memcpy(p->buf[s], st->buffer, sizeof(float) * (size_t)st->n_buffer);
            }
            if (st->n_ibuffer) {
                if (restore) memcpy(st->ibuffer, p->ibuf[s], sizeof(int64_t) * (size_t)st->n_ibuffer);
                else memcpy(p->ibuf[s], st->ibuffer, sizeof(int64_t) * (size_t)st->n_ibuffer);
            }
        }
        if (restore) { be->copy(be->ctx, demb, p->emb_dev, bytes); tr->rng = p->rng; }
        else { be->copy(be->ctx, p->emb_dev, demb, bytes); p->rng = tr->rng; }
        return;
    }
    for (s = 0; s < HIGAN_STORE_COUNT; ++s) {
        higan_params *st = &tr->model.store[s];
        if (st->n_buffer) {
            if (restore) memcpy(st->buffer, p->buf[s], sizeof(float) * (size_t)st->n_buffer);
            else memcpy(p->buf[s], st->buffer, sizeof(float) * (size_t)st->n_buffer);
        }
        if (st->n_ibuffer) {
            if (restore) memcpy(st->ibuffer, p->ibuf[s], sizeof(int64_t) * (size_t)st->n_ibuffer);
            else memcpy(p->ibuf[s], st->ibuffer, sizeof(int64_t) * (size_t)st->n_ibuffer);
        }
    }
    if (restore) { memcpy(emb, p->emb, sizeof(float) * (size_t)p->emb_n); tr->rng = p->rng; }
    else { memcpy(p->emb, emb, sizeof(float) * (size_t)p->emb_n); p->rng = tr->rng; }
}

HIGAN_DEF void higan_gan_trainer_free(higan_gan_trainer *tr) {
    higan__gan_priv *p;
    int s;
    if (!tr) return;
    p = (higan__gan_priv *)tr->priv;
    if (p) {
        if (p->emb_dev) p->be->free_memory(p->be->ctx, p->emb_dev);
        for (s = 0; s < HIGAN_STORE_COUNT; ++s) {
            if (p->buf[s]) HIGAN_FREE(p->buf[s]);
            if (p->ibuf[s]) HIGAN_FREE(p->ibuf[s]);
        }
        if (p->emb) HIGAN_FREE(p->emb);
        HIGAN_FREE(p);
    }
    higan_model_free(&tr->model);
    memset(tr, 0, sizeof *tr);
}

HIGAN_DEF higan_status higan_gan_trainer_init(higan_gan_trainer *tr, const higan_model_config *cfg,
                                              const higan_gan_options *opt, const higan_lexicon *lex,
                                              uint64_t seed) {
    higan_model_config mc;
    higan__gan_priv *p;
    higan_status st;
    int s;
    if (!tr) return higan__error(HIGAN_ERR_ARG, "gan_trainer_init: NULL trainer");
    memset(tr, 0, sizeof *tr);
    mc = cfg ? *cfg : higan_model_default_config(HIGAN_NETS_ALL);
    if ((mc.nets & HIGAN_NETS_ALL) != HIGAN_NETS_ALL)
        return higan__error(HIGAN_ERR_ARG, "gan_trainer_init: GAN training needs all seven networks "
                            "(config nets = 0x%x, need 0x%x)", mc.nets, HIGAN_NETS_ALL);
    if (8 * mc.G.bottom * 2 != HIGAN_IMAGE_HEIGHT)
        return higan__error(HIGAN_ERR_ARG, "gan_trainer_init: G.bottom = %lld makes %lld-pixel images; the "
                            "data is %d pixels high (bottom 4)", (long long)mc.G.bottom,
                            (long long)(16 * mc.G.bottom), HIGAN_IMAGE_HEIGHT);
    tr->opt = opt ? *opt : higan_gan_default_options();
    if (tr->opt.num_critic_train < 1)
        return higan__error(HIGAN_ERR_ARG, "gan_trainer_init: num_critic_train = %d (must be >= 1)",
                            tr->opt.num_critic_train);
    if ((st = higan_model_init(&tr->model, &mc, seed)) != HIGAN_OK) { memset(tr, 0, sizeof *tr); return st; }
    tr->opt_g = higan_adam_default(tr->opt.lr);
    tr->opt_g.beta1 = tr->opt.beta1;
    tr->opt_g.beta2 = tr->opt.beta2;
    tr->opt_d = tr->opt_g;
    tr->lexicon = lex;
    higan_rng_seed(&tr->rng, seed ^ 0x6A09E667F3BCC909ull);
    tr->epoch = -1;
    p = (higan__gan_priv *)HIGAN_MALLOC(sizeof *p);
    if (!p) { higan_gan_trainer_free(tr); return higan__error(HIGAN_ERR_NOMEM, "gan_trainer_init: out of memory"); }
    memset(p, 0, sizeof *p);
    tr->priv = p;
    for (s = 0; s < HIGAN_STORE_COUNT; ++s) {
        const higan_params *ps = &tr->model.store[s];
        if (ps->n_buffer && !(p->buf[s] = (float *)HIGAN_MALLOC(sizeof(float) * (size_t)ps->n_buffer))) break;
        if (ps->n_ibuffer && !(p->ibuf[s] = (int64_t *)HIGAN_MALLOC(sizeof(int64_t) * (size_t)ps->n_ibuffer))) break;
    }
    p->emb_n = mc.G.n_class * mc.G.embed_dim;
    if (s < HIGAN_STORE_COUNT || !(p->emb = (float *)HIGAN_MALLOC(sizeof(float) * (size_t)p->emb_n))) {
        higan_gan_trainer_free(tr);
        return higan__error(HIGAN_ERR_NOMEM, "gan_trainer_init: out of memory");
    }
    return HIGAN_OK;
}

HIGAN_DEF higan_status higan_gan_trainer_set_backend(higan_gan_trainer *tr, const higan_backend *be) {
    higan__gan_priv *p;
    higan_status st;
    if (!tr || !tr->priv) return higan__error(HIGAN_ERR_ARG, "gan_trainer_set_backend: uninitialised trainer");
    p = (higan__gan_priv *)tr->priv;
    if (be && !be->device) be = NULL;
    if (p->be == be) return HIGAN_OK;
    if (p->emb_dev) { p->be->free_memory(p->be->ctx, p->emb_dev); p->emb_dev = NULL; }
    p->be = NULL;
    if ((st = higan_model_to_backend(&tr->model, be)) != HIGAN_OK) return st;
    if (be) {
        if (!(p->emb_dev = (float *)be->alloc(be->ctx, sizeof(float) * (size_t)p->emb_n))) {
            higan_model_to_backend(&tr->model, NULL);
            return higan__error(HIGAN_ERR_NOMEM, "gan_trainer_set_backend: %s backend: out of memory", be->name);
        }
        p->be = be;
    }
    return HIGAN_OK;
}

HIGAN_DEF void higan_gan_set_epoch(higan_gan_trainer *tr, int64_t epoch) {
    double f = higan_lr_linear_decay((int)epoch, tr->opt.start_decay_epoch, tr->opt.n_epochs_decay + 1);
    tr->epoch = epoch;
    tr->opt_g.lr = tr->opt.lr * f;
    tr->opt_d.lr = tr->opt.lr * f;
}

/* ---- helpers ------------------------------------------------------------------------------ */
static int *higan__gan_ints(higan_tape *t, int64_t n) {
    return (int *)higan_arena_alloc(t->arena, sizeof(int) * (size_t)(n > 0 ? n : 1));
}
/* images [B, 1, 64, W] of the batch as a leaf (no gradient; uploaded on a device tape) */
static higan_var *higan__gan_images(higan_tape *t, float *x, int B, int64_t W) {
    int64_t s[4];
    s[0] = B; s[1] = 1; s[2] = HIGAN_IMAGE_HEIGHT; s[3] = W;
    return higan__tr_input(t, x, 4, s);
}
/* unbiased std of all n values of g (a gradient; torch.std), in double: the backend's
   reduction (on a device only the two moments come back) */
static double higan__gan_std(higan_tape *t, const float *g, int64_t n) {
    double mo[2];
    if (n < 2) return 0.0;
    t->be->moments(t->be->ctx, mo, g, n);
    return sqrt(mo[1] / (double)(n - 1));
}
/* the concatenated CTC targets of 0-padded rows */
static int *higan__gan_targets(higan_tape *t, const int *labels, int64_t stride, const int *lens, int B) {
    int64_t n = 0;
    int b, j;
    int *out;
    for (b = 0; b < B; ++b) n += lens[b];
    if (!(out = higan__gan_ints(t, n))) return NULL;
    for (n = 0, b = 0; b < B; ++b)
        for (j = 0; j < lens[b]; ++j) out[n++] = labels[(int64_t)b * stride + j];
    return out;
}

typedef struct higan__gan_step_draws { int *labels, *lens; float *z, *eps; } higan__gan_step_draws;

/* The words, z and VAE noise of one step, in the arena (injected or drawn, in that order). */
static higan_status higan__gan_draw(higan_gan_trainer *tr, higan_tape *t, const higan_gan_draws *inj,
                                    int B, int64_t L, higan__gan_step_draws *d) {
    int64_t sd = tr->model.cfg.G.style_dim, i;
    d->labels = higan__gan_ints(t, B * L);
    d->lens = higan__gan_ints(t, B);
    d->z = higan_arena_floats(t->arena, B * sd);
    d->eps = higan_arena_floats(t->arena, B * sd);
    if (!d->labels || !d->lens || !d->z || !d->eps) return higan_tape_status(t);
    if (inj) {
        memcpy(d->labels, inj->labels, sizeof(int) * (size_t)(B * L));
        memcpy(d->lens, inj->lens, sizeof(int) * (size_t)B);
        memcpy(d->z, inj->z, sizeof(float) * (size_t)(B * sd));
        if (tr->opt.vae_mode) memcpy(d->eps, inj->eps, sizeof(float) * (size_t)(B * sd));
    } else {
        int n;
        if (!tr->lexicon) return higan__error(HIGAN_ERR_ARG, "gan step: no lexicon for the random words");
        if ((n = higan_lexicon_sample(tr->lexicon, &tr->rng, B, (int)L, d->labels, L, d->lens)) < 0) return n;
        higan_rng_fill_normal(&tr->rng, d->z, B * sd, 0.0f, 1.0f);
        if (tr->opt.vae_mode) higan_rng_fill_normal(&tr->rng, d->eps, B * sd, 0.0f, 1.0f);
    }
    for (i = 0; i < B; ++i)
        if (d->lens[i] < 1 || d->lens[i] > L)
            return higan__error(HIGAN_ERR_ARG, "gan step: random word %lld has %d characters (1..%lld)",
                                (long long)i, d->lens[i], (long long)L);
    return HIGAN_OK;
}

static higan_status higan__gan_check_batch(const higan_gan_trainer *tr, const higan_batch *b) {
    int64_t cw = 8 * tr->model.cfg.G.bottom;
    int i;
    if (!b || b->B < 1 || !b->imgs || !b->img_lens || !b->labels || !b->label_lens || !b->wids)
        return higan__error(HIGAN_ERR_ARG, "gan step: empty or incomplete batch");
    if (!b->aug_imgs || !b->aug_lens)
        return higan__error(HIGAN_ERR_ARG, "gan step: the batch has no augmented images (loader option augment)");
    if (b->width != cw * b->label_width)
        return higan__error(HIGAN_ERR_ARG, "gan step: images are %lld pixels wide, the generator makes %lld "
                            "(%lld px x %lld characters): use the loader's process_style",
                            (long long)b->width, (long long)(cw * b->label_width), (long long)cw,
                            (long long)b->label_width);
    for (i = 0; i < b->B; ++i) {
        if (b->label_lens[i] < 1 || b->img_lens[i] < 32 || b->aug_lens[i] < 32 || b->img_lens[i] > b->width ||
            b->aug_lens[i] > b->aug_width)
            return higan__error(HIGAN_ERR_ARG, "gan step: sample %d has label length %d, width %d, aug width %d",
                                i, b->label_lens[i], b->img_lens[i], b->aug_lens[i]);
        if (b->wids[i] < 0 || b->wids[i] >= tr->model.cfg.n_writer)
            return higan__error(HIGAN_ERR_ARG, "gan step: sample %d has writer id %d; the WriterIdentifier has "
                                "%lld classes", i, b->wids[i], (long long)tr->model.cfg.n_writer);
    }
    return HIGAN_OK;
}

/* NULL from an op: the tape's overflow, or the op's own error */
static higan_status higan__gan_fail(higan_tape *t) {
    higan_status st = higan_tape_status(t);
    if (st != HIGAN_OK) return st;
    return higan_last_error()[0] ? HIGAN_ERR_ARG : higan__error(HIGAN_ERR_ARG, "gan step: an op failed");
}

static higan_status higan__gan_finite(const higan_gan_losses *o, int from, int to) {
    int i;
    for (i = from; i < to; ++i)
        if (!(o->v[i] == o->v[i]) || o->v[i] > 3.4e38f || o->v[i] < -3.4e38f)
            return higan__error(HIGAN_GAN_NONFINITE, "loss '%s' is %s", higan__gan_loss_names[i],
                                o->v[i] == o->v[i] ? "inf" : "nan");
    return HIGAN_OK;
}

/* A NaN can hide from the losses (a ReLU turns NaN scores into 0) and still reach the weights
   through the parameter gradients: refuse to step then. */
static higan_status higan__gan_grads_finite(const higan_params *p) {
    int i;
    int64_t k;
    if (p->mirror_be) {   /* one device reduction over the gradient block; the tensor from the offset */
        const higan_backend *be = p->mirror_be;
        int64_t first;
        float g;
        be->find_nonfinite(be->ctx, &first, p->mirror.grad, p->n_param);
        if (first < 0) return HIGAN_OK;
        be->download(be->ctx, &g, p->mirror.grad + first, sizeof g);
        for (i = p->count - 1; i > 0; --i)
            if (p->entries[i].kind == HIGAN_PARAM && (int64_t)p->entries[i].offset <= first) break;
        return higan__error(HIGAN_GAN_NONFINITE, "the gradient of '%s' is %s", p->entries[i].name,
                            g == g ? "inf" : "nan");
    }
    for (i = 0; i < p->count; ++i) {
        const float *g = higan_params_grad(p, i);
        if (!g) continue;
        for (k = 0; k < p->entries[i].numel; ++k)
            if (!(g[k] == g[k]) || g[k] > 3.4e38f || g[k] < -3.4e38f)
                return higan__error(HIGAN_GAN_NONFINITE, "the gradient of '%s' is %s", p->entries[i].name,
                                    g[k] == g[k] ? "inf" : "nan");
    }
    return HIGAN_OK;
}

/* The three fakes of both steps: fake = G(z, words), enc_z = E(B(real)), style = G(enc_z, words),
   recn = G(enc_z, real labels). feats (G step) receives B's feat2..4 of the real images. */
typedef struct higan__gan_fakes {
    higan_var *z, *fake, *enc_z, *mu, *logvar, *style, *recn, *cat;
    higan_var *real_feats[3];
    int *cat_lb_lens, *cat_img_lens;   /* [3B] */
} higan__gan_fakes;

static higan_status higan__gan_make_fakes(higan_gan_trainer *tr, higan_tape *t, const higan_batch *b,
                                          const higan__gan_step_draws *d, higan_var *real, int want_feats,
                                          higan__gan_fakes *f) {
    higan_model *m = &tr->model;
    int B = b->B, i;
    int64_t L = b->label_width, cw = 8 * m->cfg.G.bottom, zs[2];
    int bn_train = !tr->opt.frozen_bn;
    higan_var *feat, *parts[3];
    memset(f, 0, sizeof *f);
    zs[0] = B; zs[1] = m->cfg.G.style_dim;
    if (!(f->z = higan_var_new(t, 2, zs))) return higan__gan_fail(t);
    t->be->upload(t->be->ctx, f->z->data, d->z, sizeof(float) * (size_t)(zs[0] * zs[1]));   /* a copy on the CPU */
    f->fake = higan_generator_forward(t, &m->G, f->z, d->labels, d->lens, L, 1);
    feat = higan_style_backbone_forward(t, &m->B, real, bn_train, &tr->rng, want_feats ? f->real_feats : NULL);
    f->enc_z = higan_style_encoder_forward(t, &m->E, feat, b->img_lens, tr->opt.vae_mode, &tr->rng, d->eps,
                                           &f->mu, &f->logvar);
    f->style = higan_generator_forward(t, &m->G, f->enc_z, d->labels, d->lens, L, 1);
    f->recn = higan_generator_forward(t, &m->G, f->enc_z, b->labels, b->label_lens, L, 1);
    parts[0] = f->fake; parts[1] = f->style; parts[2] = f->recn;
    f->cat = higan_concat(t, parts, 3, 0);
    f->cat_lb_lens = higan__gan_ints(t, 3 * B);
    f->cat_img_lens = higan__gan_ints(t, 3 * B);
    if (!f->cat || !f->cat_lb_lens || !f->cat_img_lens) return higan__gan_fail(t);
    for (i = 0; i < B; ++i) {
        f->cat_lb_lens[i] = d->lens[i];
        f->cat_lb_lens[B + i] = d->lens[i];
        f->cat_lb_lens[2 * B + i] = b->label_lens[i];
    }
    for (i = 0; i < 3 * B; ++i) f->cat_img_lens[i] = (int)(cw * f->cat_lb_lens[i]);
    return HIGAN_OK;
}

/* ---- D step --------------------------------------------------------------------------------- */
/* The D step's fakes come from no_grad passes: keep their images and lengths (copied to the
   top of the arena) and hand back everything the generator passes allocated since mark. */
static higan_status higan__gan_keep_fakes_only(higan_tape *t, higan_tape_pos pos, higan__gan_fakes *f, int n) {
    size_t top = higan_arena_mark(t->arena), mark = pos.host;
    if (t->be->device) {
        /* device: the data arena has no recycling; copy cat above everything, release the
           generator passes' values (data arena back to its mark), then copy cat down to the
           mark: the two copies cannot overlap (cat itself lies between mark and the top) */
        const higan_backend *be = t->be;
        higan_arena *d = t->data;
        int64_t numel = higan_var_numel(f->cat);
        size_t bytes = sizeof(float) * (size_t)numel, dmark = pos.data;
        float *hi = higan_arena_floats(d, numel), *lo;
        int *lb = (int *)higan_arena_alloc(t->arena, sizeof(int) * (size_t)n);
        int *img = (int *)higan_arena_alloc(t->arena, sizeof(int) * (size_t)n);
        higan_var *cat;
        if (!hi || !lb || !img) return higan__gan_fail(t);
        be->copy(be->ctx, hi, f->cat->data, bytes);
        memcpy(lb, f->cat_lb_lens, sizeof(int) * (size_t)n);
        memcpy(img, f->cat_img_lens, sizeof(int) * (size_t)n);
        higan_arena_release(d, dmark);
        if (!(lo = higan_arena_floats(d, numel))) return higan__gan_fail(t);
        be->copy(be->ctx, lo, hi, bytes);
        if (!(cat = higan_var_wrap(t, lo, f->cat->ndim, f->cat->shape))) return higan__gan_fail(t);
        higan__arena_recycle_range(t->arena, mark, top);
        memset(f, 0, sizeof *f);
        f->cat = cat; f->cat_lb_lens = lb; f->cat_img_lens = img;
        return HIGAN_OK;
    }
    int64_t numel = higan_var_numel(f->cat);
    float *data = higan_arena_floats(t->arena, numel);
    int *lb = (int *)higan_arena_alloc(t->arena, sizeof(int) * (size_t)n);
    int *img = (int *)higan_arena_alloc(t->arena, sizeof(int) * (size_t)n);
    higan_var *cat;
    if (!data || !lb || !img) return higan__gan_fail(t);
    memcpy(data, f->cat->data, sizeof(float) * (size_t)numel);
    memcpy(lb, f->cat_lb_lens, sizeof(int) * (size_t)n);
    memcpy(img, f->cat_img_lens, sizeof(int) * (size_t)n);
    if (!(cat = higan_var_wrap(t, data, f->cat->ndim, f->cat->shape))) return higan__gan_fail(t);
    higan__arena_recycle_range(t->arena, mark, top);
    memset(f, 0, sizeof *f);
    f->cat = cat; f->cat_lb_lens = lb; f->cat_img_lens = img;
    return HIGAN_OK;
}

static higan_status higan__gan_d_once(higan_gan_trainer *tr, higan_tape *t, const higan_batch *b,
                                      higan_gan_losses *o) {
    higan_model *m = &tr->model;
    higan__gan_step_draws d;
    higan__gan_fakes f;
    higan_var *real, *aug, *fd, *fp, *rd, *rda, *rp, *ap, *pp[2], *l_fake, *l_fake_p, *l_real, *l_real_p, *total;
    higan_status st;
    higan_tape_pos mark;
    higan_tape_reset(t);
    higan_params_zero_grad(&m->store[HIGAN_STORE_DP]);
    if ((st = higan__gan_draw(tr, t, tr->inject_d, b->B, b->label_width, &d)) != HIGAN_OK) return st;
    real = higan__gan_images(t, b->imgs, b->B, b->width);
    aug = higan__gan_images(t, b->aug_imgs, b->B, b->aug_width);
    if (!real || !aug) return higan__gan_fail(t);
    higan_no_grad_begin(t);
    mark = higan_tape_mark(t);
    st = higan__gan_make_fakes(tr, t, b, &d, real, 0, &f);
    higan_no_grad_end(t);
    if (st != HIGAN_OK) return st;
    if ((st = higan__gan_keep_fakes_only(t, mark, &f, 3 * b->B)) != HIGAN_OK) return st;
    /* fake_disc_loss, then its patch term, then the real ones: the order of the u0 updates */
    fd = higan_discriminator_forward(t, &m->D, f.cat, f.cat_img_lens, f.cat_lb_lens, 1);
    l_fake = higan_hinge_d_fake(t, fd);
    fp = higan_discriminator_forward(t, &m->P, higan_extract_patches(t, f.cat, f.cat_img_lens, 32, 8), NULL, NULL, 1);
    l_fake_p = higan_hinge_d_fake(t, fp);
    rd = higan_discriminator_forward(t, &m->D, real, b->img_lens, b->label_lens, 1);
    rda = higan_discriminator_forward(t, &m->D, aug, b->aug_lens, b->label_lens, 1);
    l_real = higan_scale(t, higan_add(t, higan_hinge_d_real(t, rd), higan_hinge_d_real(t, rda)), 0.5f);
    pp[0] = rp = higan_extract_patches(t, real, b->img_lens, 32, 8);
    pp[1] = ap = higan_extract_patches(t, aug, b->aug_lens, 32, 8);
    l_real_p = (rp && ap) ? higan_hinge_d_real(t, higan_discriminator_forward(t, &m->P, higan_concat(t, pp, 2, 0),
                                                                              NULL, NULL, 1)) : NULL;
    total = higan_add(t, higan_add(t, higan_add(t, l_real, l_fake), l_real_p), l_fake_p);
    if (!total) return higan__gan_fail(t);
    o->v[HIGAN_GAN_REAL_DISC] = higan__tr_scalar(t, l_real);
    o->v[HIGAN_GAN_FAKE_DISC] = higan__tr_scalar(t, l_fake);
    o->v[HIGAN_GAN_REAL_DISC_PATCH] = higan__tr_scalar(t, l_real_p);
    o->v[HIGAN_GAN_FAKE_DISC_PATCH] = higan__tr_scalar(t, l_fake_p);
    o->v[HIGAN_GAN_DISC] = higan__tr_scalar(t, total);
    if ((st = higan__gan_finite(o, HIGAN_GAN_REAL_DISC, HIGAN_GAN_DISC + 1)) != HIGAN_OK) return st;
    if ((st = higan_tape_backward_release(t, total, NULL)) != HIGAN_OK) return st;
    if ((st = higan__gan_grads_finite(&m->store[HIGAN_STORE_DP])) != HIGAN_OK) return st;
    higan_adam_step(&tr->opt_d, &m->store[HIGAN_STORE_DP]);
    return HIGAN_OK;
}

/* ---- G step --------------------------------------------------------------------------------- */
/* d loss / d wrt, then its unbiased std */
static higan_status higan__gan_probe(higan_tape *t, higan_var *loss, higan_var *wrt, double *std) {
    higan_status st = higan_tape_grad_wrt(t, loss, wrt);
    if (st != HIGAN_OK) return st;
    *std = higan__gan_std(t, wrt->grad, higan_var_numel(wrt));
    return HIGAN_OK;
}

static float higan__gan_gp(double std_adv, double std_x, float cap) {
    float gp = (float)(std_adv / (std_x + 1e-8)) + 1.0f;
    return cap > 0 && gp > cap ? cap : gp;
}

/* CTC of R(x) (log-probs [T, B, 80], input lengths img_len / 16) against 0-padded labels */
static higan_var *higan__gan_ctc(higan_gan_trainer *tr, higan_tape *t, higan_var *x, const int *img_lens,
                                 const int *labels, int64_t stride, const int *lens, int B, higan_var **lp_out) {
    higan_var *lp;
    int *targets = higan__gan_targets(t, labels, stride, lens, B), *in_lens = higan__gan_ints(t, B);
    int i;
    if (!targets || !in_lens) return NULL;
    for (i = 0; i < B; ++i) in_lens[i] = img_lens[i] / 16;
    if (!tr->opt.frozen_bn) {
        lp = higan_recognizer_forward(t, &tr->model.R, x, img_lens, 1, &tr->rng);
    } else {   /* batch norms in eval mode, the training output: log_softmax over [T, B, C] */
        int perm[3];
        perm[0] = 1; perm[1] = 0; perm[2] = 2;
        lp = higan_log_softmax(t, higan_permute(t, higan_recognizer_forward(t, &tr->model.R, x, img_lens, 0, NULL),
                                                perm));
    }
    if (lp_out) *lp_out = lp;
    return lp ? higan_ctc_loss(t, lp, targets, in_lens, lens, 0, 1) : NULL;
}

static higan_status higan__gan_g_once(higan_gan_trainer *tr, higan_tape *t, const higan_batch *b,
                                      higan_gan_losses *o) {
    higan_model *m = &tr->model;
    higan__gan_step_draws d;
    higan__gan_fakes f;
    int B = b->B, i, k;
    int64_t L = b->label_width, cw = 8 * m->cfg.G.bottom, sd = m->cfg.G.style_dim;
    int bn_train = !tr->opt.frozen_bn;
    int *fake_img_lens, *real_lb_img_lens, *z_lens, *cs_lens, *wids2;
    higan_var *real, *adv, *adv_p, *lp_rand = NULL, *ctc_rand, *ctc_style, *ctc_recn, *ctc, *styles, *info;
    higan_var *recn, *cs_parts[2], *feat_w, *feats_w[3], *logits, *wid, *ctx = NULL, *kl = NULL, *total;
    float gp_ctc, gp_info, gp_wid, gp_recn;
    higan_status st;
    higan_tape_reset(t);
    higan_params_zero_grad(&m->store[HIGAN_STORE_GE]);
    if ((st = higan__gan_draw(tr, t, tr->inject_g, B, L, &d)) != HIGAN_OK) return st;
    if (!(real = higan__gan_images(t, b->imgs, B, b->width))) return higan__gan_fail(t);
    if ((st = higan__gan_make_fakes(tr, t, b, &d, real, 1, &f)) != HIGAN_OK) return st;
    /* adversarial terms */
    adv = higan_hinge_g(t, higan_discriminator_forward(t, &m->D, f.cat, f.cat_img_lens, f.cat_lb_lens, 1));
    adv_p = higan_hinge_g(t, higan_discriminator_forward(t, &m->P, higan_extract_patches(t, f.cat, f.cat_img_lens,
                                                                                       32, 8), NULL, NULL, 1));
    /* CTC through the frozen recognizer: rand, style, recn (upstream's order of the passes) */
    fake_img_lens = higan__gan_ints(t, B);
    real_lb_img_lens = higan__gan_ints(t, B);
    z_lens = higan__gan_ints(t, B);
    cs_lens = higan__gan_ints(t, 2 * B);
    wids2 = higan__gan_ints(t, 2 * B);
    if (!fake_img_lens || !real_lb_img_lens || !z_lens || !cs_lens || !wids2) return higan__gan_fail(t);
    for (i = 0; i < B; ++i) {
        fake_img_lens[i] = (int)(cw * d.lens[i]);
        real_lb_img_lens[i] = (int)(cw * b->label_lens[i]);
        z_lens[i] = (int)sd;
        cs_lens[i] = fake_img_lens[i];
        cs_lens[B + i] = real_lb_img_lens[i];
        wids2[i] = wids2[B + i] = b->wids[i];
    }
    ctc_rand = higan__gan_ctc(tr, t, f.fake, fake_img_lens, d.labels, L, d.lens, B, &lp_rand);
    ctc_style = higan__gan_ctc(tr, t, f.style, fake_img_lens, d.labels, L, d.lens, B, NULL);
    ctc_recn = higan__gan_ctc(tr, t, f.recn, real_lb_img_lens, b->labels, L, b->label_lens, B, NULL);
    ctc = higan_add(t, higan_add(t, ctc_rand, ctc_recn), ctc_style);
    /* style reconstruction: E's mu of the random-style fakes against z (mean |.|) */
    styles = higan_style_encoder_forward(t, &m->E, higan_style_backbone_forward(t, &m->B, f.fake, bn_train, &tr->rng,
                                                                                 NULL),
                                         fake_img_lens, 0, NULL, NULL, NULL, NULL);
    info = higan_masked_l1(t, styles, f.z, z_lens);
    /* content reconstruction */
    recn = higan_masked_l1(t, f.recn, real, b->img_lens);
    /* writer identification of [style; recn] against the real writers, twice */
    cs_parts[0] = f.style; cs_parts[1] = f.recn;
    feat_w = higan_style_backbone_forward(t, &m->B, higan_concat(t, cs_parts, 2, 0), bn_train, &tr->rng, feats_w);
    logits = higan_writer_identifier_forward(t, &m->W, feat_w, cs_lens);
    wid = higan_cross_entropy(t, logits, wids2);
    /* contextual loss: real features (E's pass) against style and recn (W's pass) */
    for (k = 0; k < 3 && feat_w; ++k) {
        higan_var *fs = higan_slice(t, feats_w[k], 0, 0, B), *fr = higan_slice(t, feats_w[k], 0, B, B);
        higan_var *c1 = higan_cx_loss(t, f.real_feats[k], fs, HIGAN_CX_SIGMA, HIGAN_CX_B);
        higan_var *c2 = higan_cx_loss(t, f.real_feats[k], fr, HIGAN_CX_SIGMA, HIGAN_CX_B);
        ctx = ctx ? higan_add(t, ctx, c1) : c1;
        ctx = higan_add(t, ctx, c2);
    }
    if (tr->opt.vae_mode) kl = higan_kl_gaussian(t, f.mu, f.logvar);
    if (!adv || !adv_p || !ctc || !info || !recn || !wid || !ctx || (tr->opt.vae_mode && !kl))
        return higan__gan_fail(t);
    /* adaptive balancing: each std w.r.t. upstream's tensor */
    if ((st = higan__gan_probe(t, adv, f.cat, &o->std_adv)) != HIGAN_OK) return st;
    if ((st = higan__gan_probe(t, ctc_rand, lp_rand, &o->std_ctc)) != HIGAN_OK) return st;
    if ((st = higan__gan_probe(t, info, f.fake, &o->std_info)) != HIGAN_OK) return st;
    if ((st = higan__gan_probe(t, wid, logits, &o->std_wid)) != HIGAN_OK) return st;
    if ((st = higan__gan_probe(t, recn, f.enc_z, &o->std_recn)) != HIGAN_OK) return st;
    gp_ctc = higan__gan_gp(o->std_adv, o->std_ctc, tr->opt.gp_ctc_max);
    gp_info = higan__gan_gp(o->std_adv, o->std_info, 0);
    gp_wid = higan__gan_gp(o->std_adv, o->std_wid, tr->opt.gp_wid_max);
    gp_recn = higan__gan_gp(o->std_adv, o->std_recn, 0);
    total = higan_add(t, adv, adv_p);
    total = higan_add(t, total, higan_scale(t, ctc, gp_ctc));
    total = higan_add(t, total, higan_scale(t, info, gp_info));
    total = higan_add(t, total, higan_scale(t, wid, gp_wid));
    total = higan_add(t, total, higan_scale(t, recn, gp_recn));
    total = higan_add(t, total, higan_scale(t, ctx, tr->opt.lambda_ctx));
    if (kl) total = higan_add(t, total, higan_scale(t, kl, tr->opt.lambda_kl));
    if (!total) return higan__gan_fail(t);
    o->v[HIGAN_GAN_ADV] = higan__tr_scalar(t, adv);
    o->v[HIGAN_GAN_ADV_PATCH] = higan__tr_scalar(t, adv_p);
    o->v[HIGAN_GAN_CTC] = higan__tr_scalar(t, ctc);
    o->v[HIGAN_GAN_CTC_RAND] = higan__tr_scalar(t, ctc_rand);
    o->v[HIGAN_GAN_CTC_STYLE] = higan__tr_scalar(t, ctc_style);
    o->v[HIGAN_GAN_CTC_RECN] = higan__tr_scalar(t, ctc_recn);
    o->v[HIGAN_GAN_INFO] = higan__tr_scalar(t, info);
    o->v[HIGAN_GAN_RECN] = higan__tr_scalar(t, recn);
    o->v[HIGAN_GAN_WID] = higan__tr_scalar(t, wid);
    o->v[HIGAN_GAN_CTX] = higan__tr_scalar(t, ctx);
    o->v[HIGAN_GAN_KL] = kl ? higan__tr_scalar(t, kl) : 0.0f;
    o->v[HIGAN_GAN_GP_CTC] = gp_ctc;
    o->v[HIGAN_GAN_GP_INFO] = gp_info;
    o->v[HIGAN_GAN_GP_WID] = gp_wid;
    o->v[HIGAN_GAN_GP_RECN] = gp_recn;
    o->v[HIGAN_GAN_G] = higan__tr_scalar(t, total);
    if ((st = higan__gan_finite(o, HIGAN_GAN_ADV, HIGAN_GAN_G + 1)) != HIGAN_OK) return st;
    if ((st = higan_tape_backward_release(t, total, NULL)) != HIGAN_OK) return st;
    if ((st = higan__gan_grads_finite(&m->store[HIGAN_STORE_GE])) != HIGAN_OK) return st;
    higan_adam_step(&tr->opt_g, &m->store[HIGAN_STORE_GE]);
    return HIGAN_OK;
}

/* ---- retry on arena overflow ----------------------------------------------------------------- */
/* an overflowed arena's new capacity within options.arena_max; 0: no more room */
static size_t higan__gan_grown(const higan_gan_trainer *tr, const higan_arena *a) {
    size_t cap = a->capacity * 2, need = a->needed + a->needed / 4;
    if (need > cap) cap = need;
    if (tr->opt.arena_max && cap > tr->opt.arena_max) {
        if (a->capacity >= tr->opt.arena_max) return 0;
        cap = tr->opt.arena_max;
    }
    return cap;
}
static int higan__gan_grow(const higan_gan_trainer *tr, higan_tape *t) {
    higan_arena *a = t->arena, *d = t->data;
    if (t->be->device) (void)t->be->sync(t->be->ctx);   /* the failed attempt's (overflow) errors are spent */
    if (t->overflow) {
        int cap = t->capacity * 2;
        higan_tape_entry *e;
        if (cap <= t->capacity) return 0;
        e = (higan_tape_entry *)HIGAN_REALLOC(t->entries, sizeof(higan_tape_entry) * (size_t)cap);
        if (!e) return 0;
        t->entries = e;
        t->capacity = cap;
    }
    if (a->overflow) {
        size_t cap = higan__gan_grown(tr, a);
        if (!cap) return 0;
        higan_arena_free(a);
        if (higan_arena_init(a, cap) != HIGAN_OK) return 0;
    }
    if (d && d != a && d->overflow) {   /* a device tape's data arena, through its backend */
        size_t cap = higan__gan_grown(tr, d);
        if (!cap) return 0;
        higan_backend_arena_free(d, t->be);
        if (higan_backend_arena_init(d, t->be, cap) != HIGAN_OK) return 0;
    }
    higan_tape_reset(t);
    return 1;
}

static higan_status higan__gan_step(higan_gan_trainer *tr, higan_tape *t, const higan_batch *b,
                                    higan_gan_losses *out, int g) {
    higan_gan_losses tmp;
    higan_gan_losses *o = out ? out : &tmp;
    higan_status st;
    int i;
    if (!tr || !tr->priv || !t) return higan__error(HIGAN_ERR_ARG, "gan step: NULL or uninitialised trainer");
    if ((st = higan__gan_check_batch(tr, b)) != HIGAN_OK) return st;
    if ((st = higan__tr_check_backend(&tr->model, t, (1u << HIGAN_STORE_COUNT) - 1, "gan step")) != HIGAN_OK)
        return st;
    if (!out) for (i = 0; i < HIGAN_GAN_N_LOSSES; ++i) tmp.v[i] = NAN;
    for (;;) {
        int keep_frozen = tr->model.store[HIGAN_STORE_DP].frozen;
        higan__gan_snapshot(tr, 0);
        if (g) {
            tr->model.store[HIGAN_STORE_DP].frozen = 1;     /* set_requires_grad([D, P], False) */
            st = higan__gan_g_once(tr, t, b, o);
            tr->model.store[HIGAN_STORE_DP].frozen = keep_frozen;
        } else {
            st = higan__gan_d_once(tr, t, b, o);
        }
        if (st == HIGAN_ERR_NOMEM && higan__tr_overflowed(t)) {
            size_t needed = t->data->overflow ? t->data->needed : t->arena->needed;
            higan__gan_snapshot(tr, 1);
            if (higan__gan_grow(tr, t)) continue;
            return higan__error(HIGAN_ERR_NOMEM, "gan step: the arena needs more than %llu bytes (limit %llu) "
                                "or memory ran out", (unsigned long long)needed,
                                (unsigned long long)tr->opt.arena_max);
        }
        if (g) o->g_step = 1;
        if (st == HIGAN_OK && t->be->device) st = higan_tape_sync(t);   /* the device's errors, if any */
        return st;
    }
}

HIGAN_DEF higan_status higan_gan_d_step(higan_gan_trainer *tr, higan_tape *t, const higan_batch *b,
                                        higan_gan_losses *out) {
    return higan__gan_step(tr, t, b, out, 0);
}
HIGAN_DEF higan_status higan_gan_g_step(higan_gan_trainer *tr, higan_tape *t, const higan_batch *b,
                                        higan_gan_losses *out) {
    return higan__gan_step(tr, t, b, out, 1);
}

HIGAN_DEF higan_status higan_gan_iteration(higan_gan_trainer *tr, higan_tape *t, const higan_batch *b,
                                           higan_gan_losses *out) {
    higan_gan_losses tmp;
    higan_gan_losses *o = out ? out : &tmp;
    higan_status st;
    int i;
    if (!tr || !tr->priv) return higan__error(HIGAN_ERR_ARG, "gan_iteration: uninitialised trainer");
    for (i = 0; i < HIGAN_GAN_N_LOSSES; ++i) o->v[i] = NAN;
    o->g_step = 0;
    o->std_adv = o->std_ctc = o->std_info = o->std_wid = o->std_recn = NAN;
    if (tr->epoch < 0) higan_gan_set_epoch(tr, 0);
    if ((st = higan_gan_d_step(tr, t, b, o)) != HIGAN_OK) return st;
    if (tr->iter % tr->opt.num_critic_train == 0 && (st = higan_gan_g_step(tr, t, b, o)) != HIGAN_OK) return st;
    ++tr->iter;
    return HIGAN_OK;
}
#endif
#endif /* HIGAN_IMPLEMENTATION */

/* REVISION HISTORY
   0.1.0 (2026-11-22)  core ops with forward/backward pairs, tape, GEMM (AVX2/AVX-512), Adam,
                       safetensors; the seven HiGAN+ networks; checkpoints and .pth conversion;
                       datasets, loader, augmentation; generation and evaluation.

   LICENSE
   This software is available under two licenses; choose whichever you prefer.
   A) MIT License. Copyright (c) 2026 the higan authors. Permission is hereby granted, free of
      charge, to any person obtaining a copy of this software and associated documentation
      files (the "Software"), to deal in the Software without restriction, including without
      limitation the rights to use, copy, modify, merge, publish, distribute, sublicense,
      and/or sell copies of the Software, and to permit persons to whom the Software is
      furnished to do so, subject to the following conditions: The above copyright notice and
      this permission notice shall be included in all copies or substantial portions of the
      Software. THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR
      IMPLIED, INCLUDING BUT NOT LIMITED TO THE WARRANTIES OF MERCHANTABILITY, FITNESS FOR A
      PARTICULAR PURPOSE AND NONINFRINGEMENT. IN NO EVENT SHALL THE AUTHORS OR COPYRIGHT
      HOLDERS BE LIABLE FOR ANY CLAIM, DAMAGES OR OTHER LIABILITY, WHETHER IN AN ACTION OF
      CONTRACT, TORT OR OTHERWISE, ARISING FROM, OUT OF OR IN CONNECTION WITH THE SOFTWARE OR
      THE USE OR OTHER DEALINGS IN THE SOFTWARE.
   B) Public domain (www.unlicense.org). Anyone is free to copy, modify, publish, use,
      compile, sell, or distribute this software, either in source code form or as a
      compiled binary, for any purpose, commercial or non-commercial, and by any means.
*/
