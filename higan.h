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
       HIGAN_NO_AVX512         compile scalar and AVX2 kernels only
       HIGAN_HDF5              read/write HiGAN+ .hdf5 datasets through libhdf5 (link -lhdf5)
       HIGAN_NO_THREADS        no background thread in the data loader
   Environment:
       HIGAN_CPU=scalar|avx2|avx512   force a CPU kernel level (tests use this)
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
         variable that requires one, intermediates included.
       - No allocation happens in forward or backward: activations and caches come from a
         fixed arena (higan_arena). Overflow is sticky and reported with the size needed.
       - I/O and format errors return a higan_status (< 0) and set higan_last_error().
         Programmer errors (wrong shapes) trip HIGAN_ASSERT. The library never calls exit().

   API INDEX (each layer/op name is a tape op higan_<name>(tape, ...) over raw kernels
   higan_<name>_forward / higan_<name>_backward)
       errors      higan_last_error, higan_set_abort_callback
       cpu         higan_cpu_detect, higan_cpu_level, higan_cpu_set_level, higan_cpu_level_name,
                   higan_set_num_threads, higan_get_num_threads
       memory      higan_arena_init/free/reset/alloc/floats/zeros/mark/release/status
       rng         higan_rng_seed, higan_rng_u64, higan_rng_uniform, higan_rng_normal,
                   higan_rng_fill_normal, higan_rng_fill_uniform
       params      higan_params_init/add/alloc/free/find/zero_grad, higan_params_data,
                   higan_params_grad, higan_params_idata
       tape        higan_tape_init/free/reset/status/backward/grad_wrt, higan_var_new,
                   higan_var_wrap, higan_param_var, higan_var_grad, higan_var_has_grad,
                   higan_op_output, higan_tape_record, higan_tape_ctx, higan_no_grad_begin/end
       gemm        higan_gemm, higan_gemm_ref
       layers      conv2d, linear, spectral_norm, batch_norm2d, cond_batch_norm, embedding, lstm
       shape       upsample_nearest, avg_pool2, max_pool3s2, pad, concat, slice, split, reshape,
                   permute, masked_sum_width, masked_mean_width, dropout, extract_patches
       elementwise relu, leaky_relu, tanh, log_softmax, add, sub, mul, scale, add_nc, sum_all,
                   mean_all, exp
       losses      ctc_loss (+ higan_ctc_greedy_decode), cross_entropy, hinge_d_real,
                   hinge_d_fake, hinge_g, masked_l1, kl_gaussian, cx_loss
       optimizer   higan_adam_default, higan_adam_step, higan_lr_linear_decay
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
                   higan_model_num_params, higan_net_name
       generation  higan_generate_word, higan_generate_text, higan_style_from_image(s),
                   higan_style_random, higan_style_average, higan_style_lerp,
                   higan_style_save/load, higan_image_to_input, higan_image_resize
       data        higan_dataset_init/append/save/load/free/label/pixel/image,
                   higan_loader_init/next/free, higan_lexicon_load/sample,
                   higan_resize_area/linear/pil
       evaluation  higan_edit_distance, higan_text_score_*, higan_wier, higan_fid, higan_kid,
                   higan_psnr, higan_ssim, higan_backbone_features, higan_evaluate

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
    HIGAN_ERR_UNSUPPORTED = -5 /* e.g. forcing a CPU level this CPU lacks */
};
/* The message of the last error of this thread ("" if none). */
HIGAN_DEF const char *higan_last_error(void);
/* Called (with file, line and the failed expression) before abort() on HIGAN_ASSERT. */
typedef void (*higan_abort_callback)(const char *file, int line, const char *expr);
HIGAN_DEF void higan_set_abort_callback(higan_abort_callback cb);

/* ==== CPU LEVEL AND THREADS ============================================== */
typedef enum { HIGAN_CPU_SCALAR = 0, HIGAN_CPU_AVX2 = 1, HIGAN_CPU_AVX512 = 2 } higan_cpu;
HIGAN_DEF higan_cpu higan_cpu_detect(void);    /* best level this CPU and build support */
HIGAN_DEF higan_cpu higan_cpu_level(void);     /* the level in use (HIGAN_CPU honoured) */
HIGAN_DEF higan_status higan_cpu_set_level(higan_cpu level);
HIGAN_DEF const char *higan_cpu_level_name(higan_cpu level);
HIGAN_DEF void higan_set_num_threads(int n);          /* results never depend on n */
HIGAN_DEF int higan_get_num_threads(void);

/* ==== ARENA: per-step memory for activations and backward caches ======== */
typedef struct higan_arena {
    unsigned char *base;
    size_t capacity;   /* bytes */
    size_t used;       /* bytes handed out (64-byte aligned) */
    size_t needed;     /* bytes that would have been needed (> capacity after overflow) */
    size_t peak;       /* high-water mark over the arena's life */
    int overflow;      /* sticky until reset */
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
HIGAN_DEF void higan_params_zero_grad(higan_params *p);

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
} higan_var;
struct higan_tape;
typedef void (*higan_backward_fn)(struct higan_tape *t, void *ctx);
typedef struct higan_tape_entry { higan_backward_fn backward; void *ctx; higan_var *out; } higan_tape_entry;
typedef struct higan_tape {
    higan_arena *arena;
    higan_tape_entry *entries;
    int count, capacity;
    int no_grad;          /* > 0: nothing is recorded (like torch.no_grad) */
    int param_grads;      /* 0: parameter gradients are not accumulated (gradient probes) */
    int overflow;         /* entry table full (sticky until reset) */
    int pass;             /* current backward pass id */
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
   intermediate and leaf variables then hold the gradient of this backward only, while
   parameter stores accumulate across calls (as PyTorch's .grad does). */
HIGAN_DEF higan_status higan_tape_backward(higan_tape *t, higan_var *out, const float *seed);
/* Gradient of out with respect to wrt only: parameter gradients untouched, the tape stops
   at wrt's producer. The result is in wrt->grad. Clears earlier intermediate gradients. */
HIGAN_DEF higan_status higan_tape_grad_wrt(higan_tape *t, higan_var *out, higan_var *wrt);
/* 1 if v holds a gradient from the latest backward pass. */
HIGAN_DEF int higan_var_has_grad(const higan_tape *t, const higan_var *v);

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
HIGAN_DEF void higan_adam_step(higan_adam *opt, higan_params *p);
/* HiGAN+'s LambdaLR factor: 1 - min(max(0, (epoch - start) / length), 0.999). */
HIGAN_DEF float higan_lr_linear_decay(int epoch, int start, int length);

/* Parameter stores as safetensors: names prefixed with prefix (may be ""), buffers included;
   with_optimizer adds "<name>.adam_m"/".adam_v" and the step in metadata "adam_step". */
HIGAN_DEF higan_status higan_params_add_to_writer(const higan_params *p, higan_safetensors_writer *w,
        const char *prefix, const higan_adam *opt);
/* Loads every tensor of p from st (names prefixed). Checks all names and shapes and reports
   every missing, unexpected (with this prefix) or mis-shaped tensor in the message. */
HIGAN_DEF higan_status higan_params_load(higan_params *p, const higan_safetensors *st,
        const char *prefix, higan_adam *opt);

#include "parts/gemm_api.h"
#include "parts/nn_api.h"
#include "parts/shape_api.h"
#include "parts/seq_api.h"
#include "parts/loss_api.h"
#include "parts/styler_api.h"
#include "parts/dataset_api.h"
#include "parts/loader_api.h"
#include "parts/biggan_api.h"
#include "parts/model_api.h"
#include "parts/eval_api.h"

#endif /* HIGAN_H */

/* ======================================================================== */
/*                             IMPLEMENTATION                               */
/* ======================================================================== */
#ifdef HIGAN_IMPLEMENTATION
#ifndef HIGAN__IMPLEMENTED
#define HIGAN__IMPLEMENTED
#include "parts/core_impl.h"
#include "parts/safetensors_impl.h"
#include "parts/gemm_impl.h"
#include "parts/nn_impl.h"
#include "parts/shape_impl.h"
#include "parts/seq_impl.h"
#include "parts/loss_impl.h"
#include "parts/styler_impl.h"
#include "parts/dataset_impl.h"
#include "parts/loader_impl.h"
#include "parts/biggan_impl.h"
#include "parts/model_impl.h"
#include "parts/eval_impl.h"
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
