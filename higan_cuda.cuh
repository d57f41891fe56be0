/* higan_cuda.cuh - CUDA backend for higan.h: device memory and the raw ops as CUDA kernels
   (cuBLAS for every GEMM) - MIT or public domain

   STATUS: first layer of issue 6. Everything here compiles (nvcc 13, sm_80 + sm_90) but was
   written on a machine without a GPU: none of it has run on a GPU yet (only through the host
   emulation, HIGAN_CUDA_EMULATE). tests/test_cuda.cu compares
   every op with higan.h's CPU kernels; run `make test-cuda` on a GPU machine first.

   USAGE
   -----
   In exactly one CUDA file (.cu, compiled by nvcc, linked with -lcublas):
       #define HIGAN_IMPLEMENTATION          // here or in another (C or C++) file
       #include "higan.h"
       #define HIGAN_CUDA_IMPLEMENTATION
       #include "higan_cuda.cuh"
   Other files include higan.h then higan_cuda.cuh without the defines. Only the CUDA
   Toolkit is needed (runtime API and cuBLAS). The header is CUDA C++: include it from .cu
   files only. higan.h must come first (this header uses its types: higan_status,
   higan_params, higan_adam, higan_conv2d_shape).

   CONFIGURATION MACROS (before the implementation include)
       HIGAN_CUDA_CONV_SCRATCH_FLOATS   conv2d im2col block, floats (default 1 << 24, 64 MB):
                                        a smaller value makes conv work in more, smaller
                                        groups of samples (tests use it to cover grouping)
       HIGAN_CUDA_BLAS_WORKSPACE        bytes of cuBLAS workspace given to the handle at
                                        init (default 32 MB), so cuBLAS allocates nothing later
       HIGAN_CUDA_BF16_SCRATCH_BYTES    device scratch for the bf16 GEMMs' rounded operands
                                        (default 64 MB), allocated when HIGAN_PRECISION_BF16
                                        is first selected; larger GEMMs run in blocks
       HIGAN_CUDA_EMULATE               run everything on the host, for tests without a GPU:
                                        "device" memory is host memory, every kernel functor
                                        runs in host loops, GEMMs go
                                        through a host model of cublasSgemm(StridedBatched)
                                        and of cublasGemm(StridedBatched)Ex with bf16 operands
                                        (bf16 GEMMs; TF32 is not modelled: fp32), with
                                        cuBLAS's argument checks. It checks index math,
                                        launch sequences and GEMM arguments, and the barriers
                                        of block kernels (next), not CUDA itself (launch
                                        limits, cuBLAS numerics, races between blocks).
       HIGAN_CUDA_EMULATE_THREADS       (emulation) host threads per block of the kernels that
                                        use __syncthreads (default 4, a power of two; the
                                        environment variable of the same name overrides it):
                                        they meet at a real barrier, so a missing barrier or a
                                        read of another thread's write before one shows as a
                                        wrong result here too (1: serial, as before).
       HIGAN_CUDA_EMULATE_GUARD         (with HIGAN_CUDA_EMULATE, POSIX) emulated device memory
                                        comes from mmap and, while higan_cuda_emulate_guard(1)
                                        is on, is PROT_NONE outside the emulated CUDA calls:
                                        host code that touches device memory directly (which
                                        works in plain emulation but faults on a GPU) crashes.

   CONVENTIONS (the same as higan.h's raw kernels, plus a context)
       - Every op is higan_cuda_<op>_forward / _backward(ctx, <the CPU kernel's arguments in
         the CPU kernel's order>): outputs first, backward ACCUMULATES (+=) into every
         gradient, a NULL gradient means "not needed" and that work is skipped. Shapes and
         layouts are the CPU's (NCHW, row-major), so a test can run both on the same data.
       - Every float / int array argument is a DEVICE pointer. Exceptions: arrays OF
         pointers (concat's xs / dxs, the LSTM's weights / dweights) are host arrays holding
         device pointers; shape structs and scalars are host values.
       - Work is queued on ctx->stream and runs asynchronously. A function returns
         HIGAN_OK, HIGAN_ERR_NOMEM (device arena overflow or cudaMalloc failure),
         HIGAN_ERR_ARG (missing scratch, unsupported size) or HIGAN_ERR_DEVICE (launch or
         cuBLAS failure), with higan_last_error() set. A fault inside a running kernel
         surfaces at a later call, at latest at higan_cuda_sync().
       - Programmer errors that the CPU kernels catch with HIGAN_ASSERT on shapes are
         asserted on the host here too. Values inside device arrays (indices, labels,
         lengths) cannot be asserted without a copy: out-of-range ones are clamped or give
         NaN outputs (stated per op), never an out-of-bounds access.
       - No cudaMalloc after setup: scratch comes from a device arena (higan_cuda_arena, one
         allocation, mark/release like higan_arena). All users of an arena must use one
         stream: a released block is reused by later work in stream order.
       - Reductions are deterministic: fixed block trees in double, or serial loops in the
         CPU kernel's order; no atomics. Results are not bit-identical to the CPU (FMA
         contraction, other summation trees, CUDA's expf/tanhf/logf within 2 ulp) except
         where stated (Adam, pooling, upsampling, copies): tests use stated tolerances.
       - fp32 by default; higan_cuda_set_precision(ctx, HIGAN_PRECISION_TF32) (or
         higan_cuda_set_tf32(ctx, 1)) lets cuBLAS use TF32 tensor cores, HIGAN_PRECISION_BF16
         runs every GEMM on bf16 operands rounded as the CPU's bf16 GEMM rounds them (fp32
         sums, tensors stay fp32): mixed precision, see higan_cuda_set_precision.

   DIFFERENCES FROM THE CPU SIGNATURES (all forced by the device)
       - spectral norm: sigma is a device float [1] (forward writes it, backward reads it);
         forward with y == NULL computes u, v, sigma only (higan_spectral_norm_sigma).
       - embedding backward takes num (rows of dweight) after n_idx: the deterministic
         kernel runs one thread per (row, column) of dweight.
       - conv2d forward also needs scratch (im2col) unless the conv is 1x1/stride 1/no pad:
         higan_cuda_conv2d_scratch_bytes(s) bytes (forward and backward alike).
       - CTC backward takes max_target_length (>= every target length) instead of scratch:
         it sizes the shared memory of the beta recursion.
       - the LSTM runs T steps (the host does not know max(lengths)); padded steps are
         skipped inside the kernels, so results are the same.
       - sigmoid has no CPU raw kernel (it lives inside the CPU LSTM): same formula
         1 / (1 + expf(-x)), backward from y.
       - dropout forward takes a host rng and a host scratch arena: the mask is drawn on the
         host (the CPU's draws, same rng stream) and uploaded; mask must be a device buffer.
       - greedy CTC decoding decodes a whole batch (scores [T,B,C] or [B,T,C] on the device,
         labels and lengths into host arrays): device argmax, host collapse.
       - contextual loss: the cache (higan_cx_cache) holds device arrays
         (higan_cuda_cx_cache_alloc); forward and backward need a device scratch arena.
       - the tape and the networks: through higan_cuda_backend (BACKEND below), so far the
         Generator's ops (generation, and its train-mode forward and backward), those of the
         style and recognition networks, the Discriminator's and PatchDiscriminator's, the
         GAN losses', and the trainers' own host code (parameter stores, Adam, reductions).

   API INDEX
       errors      HIGAN_CUDA_CHECK(call), HIGAN_CUDA_STATUS(call), higan_cuda_status,
                   higan_cublas_status
       device      higan_cuda_available, higan_cuda_device_name, higan_cuda_init/free/sync,
                   higan_cuda_set_tf32, higan_cuda_set_precision, higan_cuda_get_precision
       memory      higan_cuda_malloc/free_memory, higan_cuda_upload/download/copy/zero,
                   higan_cuda_arena_init/free/reset/alloc/floats/zeros/mark/release/status
       params      higan_cuda_params_init/free/upload/download/zero_grad, higan_cuda_params_data,
                   higan_cuda_params_grad, higan_cuda_params_idata, higan_cuda_adam_step
                   (or a store's own mirror: higan.h's higan_params_to_backend)
       trainers    higan_cuda_moments, higan_cuda_find_nonfinite (table entries moments,
                   find_nonfinite, adam_step)
       gemm        higan_cuda_gemm (row-major, higan_gemm's contract)
       layers      conv2d (+ _scratch_bytes), linear, spectral_norm, batch_norm_stats,
                   batch_norm2d, cond_batch_norm, embedding (+ _renorm), lstm
       shape       upsample_nearest, avg_pool2, max_pool3s2, pad, concat, slice, permute,
                   masked_sum_width, masked_mean_width
       elementwise relu, leaky_relu, tanh, sigmoid, log_softmax, add, sub, mul, scale, add_nc,
                   sum_all, mean_all, exp, dropout (+ higan_cuda_dropout_mask)
       losses      hinge_d_real, hinge_d_fake, hinge_g, masked_l1, kl_gaussian, cross_entropy,
                   ctc_loss, cx_loss (+ higan_cuda_cx_cache_alloc, _scratch_bytes)
       decoding    higan_cuda_ctc_greedy_decode, higan_cuda_argmax_rows, higan_cuda_ctc_collapse

   DESIGN NOTE: BACKEND SWITCHING
       Progress (session 4, no GPU; everything checked in emulation only, with device memory
       made inaccessible to host code: HIGAN_CUDA_EMULATE_GUARD):
         step 1 done: higan_backend in higan.h (the entries the Generator's ops need, forward
           and backward, plus mul / sum_all / mean_all; no CPU fallback entries: an op that
           is not in the table calls the CPU kernel directly and so needs the CPU backend);
           the CPU instance higan_cpu_backend(), the default (CPU results bit for bit as before:
           generated PNGs and 5 GAN iterations' losses and weights compared with the old code).
         step 2 done for those ops: t->data is the float arena (== t->arena on the CPU), a
           device arena through higan_backend_arena_init; higan_tape_mark / _release cover both.
           Recycling (session 5): an arena's free list is a host table of (offset, size) blocks
           (the same best-fit policy for host and device arenas), so a device tape hands
           spent gradients and, with higan_tape_backward_release, spent values back as the CPU
           does (safe in stream order: every user of the arena queues on ctx->stream). Of the
           in-place gradient tricks, add's (dx = dy, aliasing only) runs on a device too;
           the in-place ReLU backward (a host loop) stays host-only.
         step 3 done for: linear, conv2d, spectral_norm, batch_norm2d, cond_batch_norm,
           embedding (+ renorm), upsample_nearest, relu (+ in place), tanh, add, mul, concat,
           slice (split), reshape, permute, sum_all, mean_all, the Generator's eval mask;
           the Generator's host loops (word placement, z rows) use fill / copy / copy_rows.
           The CPU's faster eval paths stay host-only (higan_upsample_conv2d and its cached
           phase weights, the per-word forwards run as parallel jobs, in-place gradients):
           a device tape takes the padded forward, and higan_generate_words with batch 0
           runs same-length groups at their exact width (the words-alone numbers).
         step 3 done also for the style and recognition networks (session 5): pad,
           max_pool3s2, leaky_relu, dropout (host-drawn mask, uploaded) and the backbone's
           fused relu(dropout), log_softmax, LSTM (host arrays of device weight pointers,
           lengths uploaded, scratch from the data arena's free top), CTC (targets uploaded,
           the host's max target length), cross-entropy, argmax_rows for greedy decoding
           (higan_recognizer_decode_tape: device argmax, host collapse); BN running stats in
           the device mirror, the StyleEncoder's eps drawn on the host and uploaded,
           higan_backbone_features' padded input uploaded and its feature downloaded. Test:
           tests/test_cuda_nets.cu (train step, eval, decoding, features; CPU tape vs CUDA tape).
         step 3 done also for the BigGAN side (session 5): the Discriminator and
           PatchDiscriminator (avg_pool2, masked width sum / mean, higan__bg_div_rows and
           extract_patches, these two with new kernels here, bit-identical to the CPU, no
           atomics) and the GAN losses (hinge x3, masked L1, KL, cx loss, sub, scale, add_nc,
           exp); int arrays uploaded once per op (higan__tape_ints); the cx loss keeps its
           cache in the tape's data arena (higan_cx_cache_alloc on t->data: bookkeeping only)
           and takes its scratch above the arena's top (a higan_cuda_arena view, as conv2d;
           overflow marks the data arena with the size needed). Test: tests/test_cuda_gan.cu
           (each op, and a D+P train step: scores, input and per-tensor parameter gradients,
           u0 / sv0).
         step 4 done (session 5): the generic mirror in higan.h (higan_params_mirror, through
           any backend's table; higan_cuda_params is that struct): a store owns one with
           higan_params_to_backend (higan_model_to_backend for a model), and then
           higan_params_zero_grad / higan_adam_step dispatch to it (table entry adam_step, the
           CPU's scalars from higan_adam_update: bit for bit the CPU's Adam), checkpoints
           download first (higan_params_add_to_writer) and loads upload after
           (higan_params_load); int64 buffers stay host counters.
         step 5 done (session 5) for the trainers' host code: batch upload, loss reads
           (higan_var_read), the balancing stds and the gradients' NaN check as device
           reductions (entries moments, find_nonfinite: only scalars come back), the D
           step's fakes kept by device copies, retry snapshots of buffers and G's embedding
           as device copies, device data arenas grown on overflow; the pretraining steps and
           evaluations on a model moved to the tape's backend; higan_gan_trainer_set_backend;
           the drivers' --device cuda (build/train_*_cuda).
         step 6 in emulation (tests/test_cuda_train.cu, guarded): one GAN iteration and both
           pretraining steps, CPU tape vs device tape, from the same state; checkpoints of
           device-trained stores. bench/: --device cuda (bench/run_gpu.sh). Not yet: a GPU.
       The original plan:
       Goal: drivers take --device cuda and nothing else in the networks or trainers
       changes. Every network builds its graph through tape ops (higan_conv2d(t, ...)),
       and every tape op calls raw kernels directly on var->data; so the switch belongs in
       the tape, as a function table:
         1. higan.h gets `typedef struct higan_backend { void *ctx; <one pointer per raw
            kernel, with the CPU signature plus a leading void *ctx>; alloc / zero / copy /
            upload / download / sync; } higan_backend;` and a CPU instance whose entries
            wrap today's kernels. higan_cuda.cuh fills a CUDA instance with the functions
            below (ctx = higan_cuda *). Ops missing on one side fall back through
            download -> CPU kernel -> upload, so the table is complete from day one.
         2. higan_tape gets `const higan_backend *be` and a second arena: t->arena stays a
            HOST arena for higan_var structs, op contexts and copied int arrays (the host
            writes them), t->data is the device arena for every float buffer (var->data,
            var->grad, caches, scratch). higan_var_new / higan_var_grad / higan_tape_ctx
            choose the arena; higan_var_grad's memset becomes be->zero; higan__backward's
            seed loop becomes be->upload + be->add (or be->fill for the default seed 1).
         3. Each tape op replaces `higan_X_forward(...)` by `t->be->X_forward(t->be->ctx,
            ...)`, same arguments; backward closures likewise. Int arrays the op copies
            (embedding idx, masked lens, CE labels, CTC targets/lengths, LSTM lengths) are
            also uploaded into t->data once, in the op; the CTC op passes the host-computed
            max target length; the LSTM op passes host arrays of device weight pointers.
         4. higan_params gets an optional device mirror (higan_cuda_params *, opaque in
            higan.h): higan_param_var points data/grad into it when the tape's backend is
            the device; higan_params_zero_grad and higan_adam_step dispatch to
            higan_cuda_params_zero_grad / higan_cuda_adam_step. Buffers written by ops
            then live on the device: BN running stats are updated in place by the CUDA
            stats kernel; spectral norm's u0 update is the forward with u == u0, and sv0
            gets a device copy of sigma (higan_cuda_copy); num_batches_tracked (int64) can
            stay a host counter. Checkpoint save = params_download then the existing
            writer; load = the existing reader then params_upload.
         5. Host code that touches var->data / var->grad outside raw kernels must go
            through the backend too (grep '->data\[' and '->grad\[' after the networks
            section): the trainers' loss reads (o->v[...] = l->data[0] in the GAN trainer,
            *loss = L->data[0] in pretraining) -> a higan_var_read(t, v, host, n); the GAN
            trainer's gradient balancing (higan__gan_std over gradients, then scaling) ->
            a device reduction + scale; private tape ops with their own loops
            (higan__bg_mask_width, higan__bg_div_rows, extract_patches, the backbone's
            input padding in higan_backbone_features) -> table entries; cx_loss's tape op
            calls higan_cuda_cx_loss_forward / _backward with a device cache. Batch
            inputs enter through a new higan_var_upload(t, host, ndim, shape). Dropout
            draws its mask on the host (same rng stream) and uploads it
            (higan_cuda_dropout_forward, host arena t->arena as staging). Embedding
            max_norm renorm runs on the device (higan_cuda_embedding_renorm). CER/WER
            decoding: higan_cuda_ctc_greedy_decode (only the argmax indices come back).
         6. Test: one GAN iteration with the CPU and the CUDA backend from the same
            checkpoint, losses and updated parameters compared within tolerance; then
            bench/ (iteration at batch 8 / 32, generation words/s at batch 1 / 256).
*/
#ifndef HIGAN_CUDA_CUH
#define HIGAN_CUDA_CUH

#ifndef HIGAN_H
#  error "include higan.h before higan_cuda.cuh"
#endif
#ifndef __cplusplus
#  error "higan_cuda.cuh is CUDA C++: compile it with nvcc (a .cu file)"
#endif

#include <cuda_runtime.h>
#include <cublas_v2.h>

/* ==== ERRORS ================================================================= */
/* A readable message in higan_last_error() ("CUDA error cudaErrorX (text) in <expr> at
   file:line") and the matching status: HIGAN_ERR_NOMEM for allocation failures,
   HIGAN_ERR_UNSUPPORTED for no device / driver / architecture, HIGAN_ERR_DEVICE otherwise.
   HIGAN_OK for cudaSuccess / CUBLAS_STATUS_SUCCESS (the message is left alone). */
HIGAN_DEF higan_status higan_cuda_status(cudaError_t e, const char *expr, const char *file, int line);
HIGAN_DEF higan_status higan_cublas_status(cublasStatus_t e, const char *expr, const char *file, int line);
static inline higan_status higan__cuda_check(cudaError_t e, const char *expr, const char *file, int line) {
    return higan_cuda_status(e, expr, file, line);
}
static inline higan_status higan__cuda_check(cublasStatus_t e, const char *expr, const char *file, int line) {
    return higan_cublas_status(e, expr, file, line);
}
/* The status of a CUDA runtime or cuBLAS call, as an expression. */
#define HIGAN_CUDA_STATUS(call) higan__cuda_check((call), #call, __FILE__, __LINE__)
/* Returns the status from the enclosing function when the call failed. */
#define HIGAN_CUDA_CHECK(call)                                                    \
    do {                                                                          \
        higan_status higan__cuda_st_ = HIGAN_CUDA_STATUS(call);                   \
        if (higan__cuda_st_ != HIGAN_OK) return higan__cuda_st_;                  \
    } while (0)

/* ==== DEVICE AND CONTEXT ====================================================== */
/* 1 when at least one CUDA device can be used; 0 without a device or driver (never fails). */
HIGAN_DEF int higan_cuda_available(void);
#if defined(HIGAN_CUDA_EMULATE) && defined(HIGAN_CUDA_EMULATE_GUARD)
/* on = 1: device memory is inaccessible to host code outside emulated CUDA calls (see
   HIGAN_CUDA_EMULATE_GUARD); 0 (default): always accessible. */
HIGAN_DEF void higan_cuda_emulate_guard(int on);
#endif
/* Name of a device ("NVIDIA H100 80GB HBM3"), for benchmark reports. */
HIGAN_DEF higan_status higan_cuda_device_name(int device, char *buf, size_t size);

typedef struct higan_cuda {
    int device;
    cudaStream_t stream;      /* every kernel and cuBLAS call of this context */
    cublasHandle_t blas;
    void *blas_workspace;     /* given to cuBLAS once (no allocation inside GEMMs) */
    float *ws;                /* HIGAN_CUDA_WS_FLOATS device floats for op scalars */
    int tf32;                 /* 1: cuBLAS may use TF32 tensor cores */
    higan_status backend_error;   /* first error of a call through higan_cuda_backend's table
                                     since its last sync (its entries return nothing) */
    /* precision (higan_cuda_set_precision): HIGAN_PRECISION_FP32 (default), _TF32, _BF16 */
    int precision;
    uint16_t *bf16;           /* BF16: scratch for the rounded operands (one allocation when
                                 BF16 is first selected; reused by every GEMM, stream order) */
    size_t bf16_elems;        /* its size in bf16 values (HIGAN_CUDA_BF16_SCRATCH_BYTES / 2) */
} higan_cuda;
#define HIGAN_CUDA_WS_FLOATS 64
/* Selects the device, creates a non-blocking stream and a cuBLAS handle bound to it. */
HIGAN_DEF higan_status higan_cuda_init(higan_cuda *ctx, int device);
HIGAN_DEF void higan_cuda_free(higan_cuda *ctx);
/* Waits for everything queued on ctx->stream; reports errors of kernels that ran. */
HIGAN_DEF higan_status higan_cuda_sync(higan_cuda *ctx);
/* on = 1: cuBLAS GEMMs (conv, linear, LSTM) may round inputs to TF32; 0 (default): fp32. */
HIGAN_DEF higan_status higan_cuda_set_tf32(higan_cuda *ctx, int on);
/* Precision of every GEMM of ctx (conv, linear, LSTM, contextual loss), higan.h's enum:
   HIGAN_PRECISION_FP32 (default): cublasSgemm in fp32.
   HIGAN_PRECISION_TF32: the same with TF32 tensor cores (higan_cuda_set_tf32(ctx, 1)).
   HIGAN_PRECISION_BF16: both operands rounded to bfloat16 exactly as the CPU's bf16 GEMM
     rounds them (round to nearest even, magnitudes below FLT_MIN to signed zero, NaN kept),
     by a conversion kernel into ctx's bf16 scratch, then cublasGemmEx /
     cublasGemmStridedBatchedEx (CUDA_R_16BF operands, fp32 C, CUBLAS_COMPUTE_32F): fp32 sums
     of exact products, as on the CPU (only the summation order differs). Tensors stay fp32.
     The first selection allocates the scratch, HIGAN_CUDA_BF16_SCRATCH_BYTES (default 64 MB;
     later GEMMs allocate nothing): a GEMM whose operands do not fit runs in groups of
     batch items, then in blocks of rows, columns and depth (partial sums added in C). */
HIGAN_DEF higan_status higan_cuda_set_precision(higan_cuda *ctx, higan_precision p);
HIGAN_DEF higan_precision higan_cuda_get_precision(const higan_cuda *ctx);

/* ==== MEMORY ================================================================== */
/* Plain device allocations for setup (arenas and parameter stores use these once). */
HIGAN_DEF higan_status higan_cuda_malloc(void **ptr, size_t bytes);
HIGAN_DEF void higan_cuda_free_memory(void *ptr);
/* Host -> device (the host buffer may be reused on return), device -> host (synchronous:
   the host data is valid on return), device -> device, device zero fill; on ctx->stream. */
HIGAN_DEF higan_status higan_cuda_upload(higan_cuda *ctx, void *dst, const void *src, size_t bytes);
HIGAN_DEF higan_status higan_cuda_download(higan_cuda *ctx, void *dst, const void *src, size_t bytes);
HIGAN_DEF higan_status higan_cuda_copy(higan_cuda *ctx, void *dst, const void *src, size_t bytes);
HIGAN_DEF higan_status higan_cuda_zero(higan_cuda *ctx, void *dst, size_t bytes);

/* Device arena: higan_arena's contract on device memory (one cudaMalloc, 256-byte aligned
   blocks, sticky overflow reported with the size needed). Never pass it to higan_arena_*. */
typedef struct higan_cuda_arena {
    unsigned char *base;   /* device memory */
    size_t capacity, used, needed, peak;
    int overflow;
} higan_cuda_arena;
HIGAN_DEF higan_status higan_cuda_arena_init(higan_cuda_arena *a, size_t capacity);
HIGAN_DEF void higan_cuda_arena_free(higan_cuda_arena *a);
HIGAN_DEF void higan_cuda_arena_reset(higan_cuda_arena *a);
HIGAN_DEF void *higan_cuda_arena_alloc(higan_cuda_arena *a, size_t bytes);     /* NULL on overflow */
HIGAN_DEF float *higan_cuda_arena_floats(higan_cuda_arena *a, int64_t count);  /* uninitialised */
HIGAN_DEF float *higan_cuda_arena_zeros(higan_cuda *ctx, higan_cuda_arena *a, int64_t count);
HIGAN_DEF size_t higan_cuda_arena_mark(const higan_cuda_arena *a);
HIGAN_DEF void higan_cuda_arena_release(higan_cuda_arena *a, size_t mark);
HIGAN_DEF higan_status higan_cuda_arena_status(const higan_cuda_arena *a);

/* ==== PARAMETER STORE MIRROR ==================================================== */
/* The device copy of an allocated higan_params: higan.h's generic mirror (the same offsets,
   one cudaMalloc for values, gradients, Adam m and v, float buffers and int64 buffers). The
   host store keeps the names and shapes; copies happen only at the edges (start, checkpoints).
   These calls are that mirror through higan_cuda_backend's table, for code that keeps its own;
   a store can also own one (higan_params_to_backend, what the trainers use). */
typedef higan_params_mirror higan_cuda_params;
enum {
    HIGAN_CUDA_VALUES = 1,    /* trainable values */
    HIGAN_CUDA_GRADS = 2,
    HIGAN_CUDA_ADAM = 4,      /* Adam m and v */
    HIGAN_CUDA_BUFFERS = 8,   /* float and int64 buffers (running stats, u0, counters) */
    HIGAN_CUDA_ALL = 15
};
/* Allocates the mirror of p (p must be allocated), zero-filled. */
HIGAN_DEF higan_status higan_cuda_params_init(higan_cuda *ctx, higan_cuda_params *d, const higan_params *p);
HIGAN_DEF void higan_cuda_params_free(higan_cuda_params *d);
/* what: a mix of HIGAN_CUDA_VALUES / _GRADS / _ADAM / _BUFFERS. Download is synchronous. */
HIGAN_DEF higan_status higan_cuda_params_upload(higan_cuda *ctx, higan_cuda_params *d, const higan_params *p, int what);
HIGAN_DEF higan_status higan_cuda_params_download(higan_cuda *ctx, const higan_cuda_params *d, higan_params *p, int what);
/* Device pointers of tensor `handle` of p (as higan_params_data / _grad / _idata). */
HIGAN_DEF float *higan_cuda_params_data(const higan_cuda_params *d, const higan_params *p, int handle);
HIGAN_DEF float *higan_cuda_params_grad(const higan_cuda_params *d, const higan_params *p, int handle);
HIGAN_DEF int64_t *higan_cuda_params_idata(const higan_cuda_params *d, const higan_params *p, int handle);
HIGAN_DEF higan_status higan_cuda_params_zero_grad(higan_cuda *ctx, higan_cuda_params *d);
/* higan_adam_step on the device: the same float math in the same order, without FMA
   contraction (explicit _rn intrinsics), so the values match the CPU bit for bit. */
HIGAN_DEF higan_status higan_cuda_adam_step(higan_cuda *ctx, higan_adam *opt, higan_cuda_params *d);

/* ==== GEMM, CONV2D, LINEAR ====================================================== */
/* higan_gemm's contract (row-major, C[M,N] = alpha op(A) op(B) + beta C, beta == 0: C not
   read) through cublasSgemm on the transposed problem (C^T = op(B)^T op(A)^T in cuBLAS's
   column-major view). Sizes and leading dimensions must fit in int. */
HIGAN_DEF higan_status higan_cuda_gemm(higan_cuda *ctx, int trans_a, int trans_b, int64_t M, int64_t N,
                                       int64_t K, float alpha, const float *A, int64_t lda,
                                       const float *B, int64_t ldb, float beta, float *C, int64_t ldc);
/* conv2d, higan_conv2d_shape as on the CPU. im2col into scratch for a group of samples
   (ns = HIGAN_CUDA_CONV_SCRATCH_FLOATS / (KD*P), 1 <= ns <= N, KD = IC*KH*KW, P = OH*OW),
   then one strided-batched GEMM y_n[OC,P] = w[OC,KD] col_n[KD,P] per group. Backward: db by
   a per-channel reduction; dw += dy_n col_n^T (one GEMM per sample, beta 1); dx: dcol =
   w^T dy_n (batched) then a gather col2im (one thread per dx element: no atomics).
   1x1 / stride 1 / unpadded convs use x directly and need no scratch. */
HIGAN_DEF size_t higan_cuda_conv2d_scratch_bytes(const higan_conv2d_shape *s);
HIGAN_DEF higan_status higan_cuda_conv2d_forward(higan_cuda *ctx, float *y, const float *x, const float *w,
                                                 const float *b, const higan_conv2d_shape *s,
                                                 higan_cuda_arena *scratch);
HIGAN_DEF higan_status higan_cuda_conv2d_backward(higan_cuda *ctx, float *dx, float *dw, float *db,
                                                  const float *dy, const float *x, const float *w,
                                                  const higan_conv2d_shape *s, higan_cuda_arena *scratch);
/* y [N, OUT] = x [N, IN] w[OUT, IN]^T + b; dx += dy w; dw += dy^T x; db += column sums. */
HIGAN_DEF higan_status higan_cuda_linear_forward(higan_cuda *ctx, float *y, const float *x, const float *w,
                                                 const float *b, int64_t N, int64_t IN, int64_t OUT);
HIGAN_DEF higan_status higan_cuda_linear_backward(higan_cuda *ctx, float *dx, float *dw, float *db,
                                                  const float *dy, const float *x, const float *w,
                                                  int64_t N, int64_t IN, int64_t OUT);

/* ==== NORMALISATION OPS ========================================================== */
/* Spectral norm (one power iteration). sigma: DEVICE float [1]. y may be NULL (sigma only);
   u may alias u0. */
HIGAN_DEF higan_status higan_cuda_spectral_norm_forward(higan_cuda *ctx, float *y, float *u, float *v,
                                                        float *sigma, const float *w, const float *u0,
                                                        int64_t out, int64_t in, float eps);
HIGAN_DEF higan_status higan_cuda_spectral_norm_backward(higan_cuda *ctx, float *dw, const float *dy,
                                                         const float *w, const float *u, const float *v,
                                                         const float *sigma, int64_t out, int64_t in);
/* Batch statistics, BatchNorm2d, conditional batch norm: x [N, C, HW]; the CPU's contract
   (one block per channel, double accumulators, two-pass variance). */
HIGAN_DEF higan_status higan_cuda_batch_norm_stats(higan_cuda *ctx, float *mean, float *rstd,
                                                   float *running_mean, float *running_var,
                                                   const float *x, float momentum, float eps,
                                                   int batch_stats, int64_t N, int64_t C, int64_t HW);
HIGAN_DEF higan_status higan_cuda_batch_norm2d_forward(higan_cuda *ctx, float *y, float *mean, float *rstd,
                                                       const float *x, const float *weight, const float *bias,
                                                       float *running_mean, float *running_var,
                                                       float momentum, float eps, int batch_stats,
                                                       int64_t N, int64_t C, int64_t HW);
HIGAN_DEF higan_status higan_cuda_batch_norm2d_backward(higan_cuda *ctx, float *dx, float *dweight,
                                                        float *dbias, const float *dy, const float *x,
                                                        const float *mean, const float *rstd,
                                                        const float *weight, int batch_stats,
                                                        int64_t N, int64_t C, int64_t HW);
HIGAN_DEF higan_status higan_cuda_cond_batch_norm_forward(higan_cuda *ctx, float *y, float *mean, float *rstd,
                                                          const float *x, const float *gain,
                                                          const float *bias, float *running_mean,
                                                          float *running_var, float momentum, float eps,
                                                          int batch_stats, int64_t N, int64_t C, int64_t HW);
HIGAN_DEF higan_status higan_cuda_cond_batch_norm_backward(higan_cuda *ctx, float *dx, float *dgain,
                                                           float *dbias, const float *dy, const float *x,
                                                           const float *mean, const float *rstd,
                                                           const float *gain, int batch_stats,
                                                           int64_t N, int64_t C, int64_t HW);
/* Embedding: weight [num, D], idx [n_idx] (device ints). An idx outside [0, num) gives a
   NaN row in y and is skipped by renorm and backward. Backward takes num (see above);
   cost O(num * D * n_idx), fine for HiGAN+'s alphabets and writer tables. */
HIGAN_DEF higan_status higan_cuda_embedding_renorm(higan_cuda *ctx, float *weight, const int *idx,
                                                   int64_t n_idx, int64_t num, int64_t D, float max_norm);
HIGAN_DEF higan_status higan_cuda_embedding_forward(higan_cuda *ctx, float *y, const float *weight,
                                                    const int *idx, int64_t n_idx, int64_t num, int64_t D);
HIGAN_DEF higan_status higan_cuda_embedding_backward(higan_cuda *ctx, float *dweight, const float *dy,
                                                     const int *idx, int64_t n_idx, int64_t num,
                                                     int64_t D, int padding_idx);

/* ==== SHAPE, POOLING, PADDING, ACTIVATION AND ELEMENTWISE OPS ====================== */
HIGAN_DEF higan_status higan_cuda_upsample_nearest_forward(higan_cuda *ctx, float *y, const float *x,
                                                           int64_t N, int64_t C, int64_t H, int64_t W,
                                                           int sh, int sw);
HIGAN_DEF higan_status higan_cuda_upsample_nearest_backward(higan_cuda *ctx, float *dx, const float *dy,
                                                            int64_t N, int64_t C, int64_t H, int64_t W,
                                                            int sh, int sw);
HIGAN_DEF higan_status higan_cuda_avg_pool2_forward(higan_cuda *ctx, float *y, const float *x, int64_t N,
                                                    int64_t C, int64_t H, int64_t W);
HIGAN_DEF higan_status higan_cuda_avg_pool2_backward(higan_cuda *ctx, float *dx, const float *dy, int64_t N,
                                                     int64_t C, int64_t H, int64_t W);
/* argmax: device int32 [like y] or NULL. */
HIGAN_DEF higan_status higan_cuda_max_pool3s2_forward(higan_cuda *ctx, float *y, int32_t *argmax,
                                                      const float *x, int64_t N, int64_t C, int64_t H,
                                                      int64_t W);
HIGAN_DEF higan_status higan_cuda_max_pool3s2_backward(higan_cuda *ctx, float *dx, const float *dy,
                                                       const int32_t *argmax, int64_t N, int64_t C,
                                                       int64_t H, int64_t W);
HIGAN_DEF higan_status higan_cuda_pad_forward(higan_cuda *ctx, float *y, const float *x, int64_t N, int64_t C,
                                              int64_t H, int64_t W, int top, int bottom, int left,
                                              int right, float value);
HIGAN_DEF higan_status higan_cuda_pad_backward(higan_cuda *ctx, float *dx, const float *dy, int64_t N,
                                               int64_t C, int64_t H, int64_t W, int top, int bottom,
                                               int left, int right);
HIGAN_DEF higan_status higan_cuda_relu_forward(higan_cuda *ctx, float *y, const float *x, int64_t n);
HIGAN_DEF higan_status higan_cuda_relu_backward(higan_cuda *ctx, float *dx, const float *dy, const float *x, int64_t n);
HIGAN_DEF higan_status higan_cuda_leaky_relu_forward(higan_cuda *ctx, float *y, const float *x, float slope,
                                                     int64_t n);
HIGAN_DEF higan_status higan_cuda_leaky_relu_backward(higan_cuda *ctx, float *dx, const float *dy,
                                                      const float *x, float slope, int64_t n);
HIGAN_DEF higan_status higan_cuda_tanh_forward(higan_cuda *ctx, float *y, const float *x, int64_t n);
HIGAN_DEF higan_status higan_cuda_tanh_backward(higan_cuda *ctx, float *dx, const float *dy, const float *y,
                                                int64_t n);   /* from y */
HIGAN_DEF higan_status higan_cuda_sigmoid_forward(higan_cuda *ctx, float *y, const float *x, int64_t n);
HIGAN_DEF higan_status higan_cuda_sigmoid_backward(higan_cuda *ctx, float *dx, const float *dy, const float *y,
                                                   int64_t n);   /* from y: dx += dy y (1 - y) */
/* xs / dxs: HOST arrays of n device pointers (dxs[i] may be NULL); sizes: host array. */
HIGAN_DEF higan_status higan_cuda_concat_forward(higan_cuda *ctx, float *y, const float *const *xs,
                                                 const int64_t *sizes, int n, int64_t outer, int64_t inner);
HIGAN_DEF higan_status higan_cuda_concat_backward(higan_cuda *ctx, float *const *dxs, const float *dy,
                                                  const int64_t *sizes, int n, int64_t outer, int64_t inner);
HIGAN_DEF higan_status higan_cuda_slice_forward(higan_cuda *ctx, float *y, const float *x, int64_t outer,
                                                int64_t size, int64_t inner, int64_t start, int64_t len);
HIGAN_DEF higan_status higan_cuda_slice_backward(higan_cuda *ctx, float *dx, const float *dy, int64_t outer,
                                                 int64_t size, int64_t inner, int64_t start, int64_t len);
/* shape, perm: host arrays (ndim 1..4). */
HIGAN_DEF higan_status higan_cuda_permute_forward(higan_cuda *ctx, float *y, const float *x, int ndim,
                                                  const int64_t *shape, const int *perm);
HIGAN_DEF higan_status higan_cuda_permute_backward(higan_cuda *ctx, float *dx, const float *dy, int ndim,
                                                   const int64_t *shape, const int *perm);
/* lens: device ints [N]; a negative length counts as 0 (the CPU asserts). */
HIGAN_DEF higan_status higan_cuda_masked_sum_width_forward(higan_cuda *ctx, float *y, const float *x,
                                                           const int *lens, int64_t N, int64_t C,
                                                           int64_t H, int64_t W);
HIGAN_DEF higan_status higan_cuda_masked_sum_width_backward(higan_cuda *ctx, float *dx, const float *dy,
                                                            const int *lens, int64_t N, int64_t C,
                                                            int64_t H, int64_t W);
HIGAN_DEF higan_status higan_cuda_masked_mean_width_forward(higan_cuda *ctx, float *y, const float *x,
                                                            const int *lens, int64_t N, int64_t C,
                                                            int64_t H, int64_t W, float eps);
HIGAN_DEF higan_status higan_cuda_masked_mean_width_backward(higan_cuda *ctx, float *dx, const float *dy,
                                                             const int *lens, int64_t N, int64_t C,
                                                             int64_t H, int64_t W, float eps);
HIGAN_DEF higan_status higan_cuda_log_softmax_forward(higan_cuda *ctx, float *y, const float *x, int64_t rows,
                                                      int64_t cols);
HIGAN_DEF higan_status higan_cuda_log_softmax_backward(higan_cuda *ctx, float *dx, const float *dy,
                                                       const float *y, int64_t rows, int64_t cols);
HIGAN_DEF higan_status higan_cuda_add_forward(higan_cuda *ctx, float *y, const float *a, const float *b, int64_t n);
HIGAN_DEF higan_status higan_cuda_add_backward(higan_cuda *ctx, float *da, float *db, const float *dy, int64_t n);
HIGAN_DEF higan_status higan_cuda_sub_forward(higan_cuda *ctx, float *y, const float *a, const float *b, int64_t n);
HIGAN_DEF higan_status higan_cuda_sub_backward(higan_cuda *ctx, float *da, float *db, const float *dy, int64_t n);
HIGAN_DEF higan_status higan_cuda_mul_forward(higan_cuda *ctx, float *y, const float *a, const float *b, int64_t n);
HIGAN_DEF higan_status higan_cuda_mul_backward(higan_cuda *ctx, float *da, float *db, const float *dy,
                                               const float *a, const float *b, int64_t n);
HIGAN_DEF higan_status higan_cuda_scale_forward(higan_cuda *ctx, float *y, const float *x, float s, int64_t n);
HIGAN_DEF higan_status higan_cuda_scale_backward(higan_cuda *ctx, float *dx, const float *dy, float s, int64_t n);
/* x [N,C,HW] + b [N,C] (bias broadcast over HW) */
HIGAN_DEF higan_status higan_cuda_add_nc_forward(higan_cuda *ctx, float *y, const float *x, const float *b,
                                                 int64_t N, int64_t C, int64_t HW);
HIGAN_DEF higan_status higan_cuda_add_nc_backward(higan_cuda *ctx, float *dx, float *db, const float *dy,
                                                  int64_t N, int64_t C, int64_t HW);
/* y: device float [1]; dy: device float [1]. */
HIGAN_DEF higan_status higan_cuda_sum_all_forward(higan_cuda *ctx, float *y, const float *x, int64_t n);
HIGAN_DEF higan_status higan_cuda_sum_all_backward(higan_cuda *ctx, float *dx, const float *dy, int64_t n);
HIGAN_DEF higan_status higan_cuda_mean_all_forward(higan_cuda *ctx, float *y, const float *x, int64_t n);
HIGAN_DEF higan_status higan_cuda_mean_all_backward(higan_cuda *ctx, float *dx, const float *dy, int64_t n);
HIGAN_DEF higan_status higan_cuda_exp_forward(higan_cuda *ctx, float *y, const float *x, int64_t n);
HIGAN_DEF higan_status higan_cuda_exp_backward(higan_cuda *ctx, float *dx, const float *dy, const float *y,
                                               int64_t n);
/* Dropout: the mask is drawn on the HOST from rng exactly as higan_dropout_forward draws it
   (one higan_rng_uniform per element, in order; mask[i] = 1/(1-p) when u >= p, else 0; p >= 1:
   all 0), so the same rng state gives the CPU's mask and leaves rng in the CPU's state; it is
   uploaded into mask (DEVICE [n], required: the device applies it from there), then
   y = x * mask on the device. host_scratch stages n floats (released before returning).
   Backward: dx += dy * mask. Both bit-identical to the CPU (no FMA contraction). */
HIGAN_DEF void higan_cuda_dropout_mask(float *mask, float p, higan_rng *rng, int64_t n);  /* host mask */
HIGAN_DEF higan_status higan_cuda_dropout_forward(higan_cuda *ctx, float *y, float *mask, const float *x,
                                                  float p, higan_rng *rng, int64_t n,
                                                  higan_arena *host_scratch);
HIGAN_DEF higan_status higan_cuda_dropout_backward(higan_cuda *ctx, float *dx, const float *dy,
                                                   const float *mask, int64_t n);

/* ==== LOSSES =================================================================== */
/* Scalars y and dy are device floats [1]; int arrays are device arrays. */
HIGAN_DEF higan_status higan_cuda_hinge_d_real_forward(higan_cuda *ctx, float *y, const float *x, int64_t n);
HIGAN_DEF higan_status higan_cuda_hinge_d_real_backward(higan_cuda *ctx, float *dx, const float *dy,
                                                        const float *x, int64_t n);
HIGAN_DEF higan_status higan_cuda_hinge_d_fake_forward(higan_cuda *ctx, float *y, const float *x, int64_t n);
HIGAN_DEF higan_status higan_cuda_hinge_d_fake_backward(higan_cuda *ctx, float *dx, const float *dy,
                                                        const float *x, int64_t n);
HIGAN_DEF higan_status higan_cuda_hinge_g_forward(higan_cuda *ctx, float *y, const float *x, int64_t n);
HIGAN_DEF higan_status higan_cuda_hinge_g_backward(higan_cuda *ctx, float *dx, const float *dy, int64_t n);
HIGAN_DEF higan_status higan_cuda_masked_l1_forward(higan_cuda *ctx, float *y, const float *a, const float *b,
                                                    const int *lens, int64_t N, int64_t M, int64_t W);
HIGAN_DEF higan_status higan_cuda_masked_l1_backward(higan_cuda *ctx, float *da, float *db, const float *dy,
                                                     const float *a, const float *b, const int *lens,
                                                     int64_t N, int64_t M, int64_t W);
HIGAN_DEF higan_status higan_cuda_kl_gaussian_forward(higan_cuda *ctx, float *y, const float *mu,
                                                      const float *logvar, int64_t N, int64_t D);
HIGAN_DEF higan_status higan_cuda_kl_gaussian_backward(higan_cuda *ctx, float *dmu, float *dlogvar,
                                                       const float *dy, const float *mu,
                                                       const float *logvar, int64_t N, int64_t D);
/* lse [N] may be NULL in the forward. A label outside [0, C) makes y NaN. */
HIGAN_DEF higan_status higan_cuda_cross_entropy_forward(higan_cuda *ctx, float *y, float *lse,
                                                        const float *logits, const int *labels,
                                                        int64_t N, int64_t C);
HIGAN_DEF higan_status higan_cuda_cross_entropy_backward(higan_cuda *ctx, float *dlogits, const float *dy,
                                                         const float *logits, const float *lse,
                                                         const int *labels, int64_t N, int64_t C);
/* CTC: the CPU's layout (log_probs [T,B,C], alpha higan_ctc_alpha_floats(T, B, target_lengths)
   floats, per-sample offsets computed on the device). One block per sample; the recursion
   over t runs inside the block (alpha in global memory, beta in shared memory). A target
   outside [0, C) or an input length outside [0, T] makes that sample's nll NaN. Backward:
   max_target_length >= every target length (host value; sizes shared memory, which must fit
   in 45 KB: 2 (2 max_target_length + 1) floats); a longer target gets NaN gradients. */
HIGAN_DEF higan_status higan_cuda_ctc_loss_forward(higan_cuda *ctx, float *y, float *nll, float *alpha,
                                                   const float *log_probs, const int *targets,
                                                   const int *input_lengths, const int *target_lengths,
                                                   int64_t T, int64_t B, int64_t C, int blank,
                                                   int zero_infinity);
HIGAN_DEF higan_status higan_cuda_ctc_loss_backward(higan_cuda *ctx, float *dlog_probs, const float *dy,
                                                    const float *log_probs, const float *nll,
                                                    const float *alpha, const int *targets,
                                                    const int *input_lengths, const int *target_lengths,
                                                    int64_t T, int64_t B, int64_t C, int blank,
                                                    int zero_infinity, int max_target_length);
/* Greedy (best path) CTC decoding, as higan_ctc_greedy_decode_strided for every sample:
   the argmax over classes runs on the device (first maximum on ties, NaN entries as on the
   CPU), only the int indices come back, and the collapse (repeats, then blanks) runs on the
   host, so the labels and lengths are the CPU's exactly.
   argmax_rows: best [rows] (DEVICE ints) = argmax over the cols of x [rows, cols].
   ctc_collapse: the host half, on indices best (step t at best[t * step_stride]); returns the
   full decoded length and writes at most max_out labels (like the CPU decoder).
   ctc_greedy_decode: scores [T, B, C] (time_major = 1, CTC's layout) or [B, T, C] (0), DEVICE;
   input_lengths: HOST ints [B] in [0, T], or NULL (all T); out: HOST ints [B, max_out] (row b
   at b * max_out; may be NULL), out_lengths: HOST ints [B], the full decoded length of each
   sample (> max_out: out was truncated). Scratch: T*B ints on the device and on the host
   (both released). The download synchronises the stream. */
HIGAN_DEF higan_status higan_cuda_argmax_rows(higan_cuda *ctx, int *best, const float *x, int64_t rows,
                                              int64_t cols);
HIGAN_DEF int higan_cuda_ctc_collapse(const int *best, int64_t step_stride, int T, int blank, int *out,
                                      int max_out);
HIGAN_DEF higan_status higan_cuda_ctc_greedy_decode(higan_cuda *ctx, int *out, int *out_lengths,
                                                    const float *scores, const int *input_lengths,
                                                    int64_t T, int64_t B, int64_t C, int time_major,
                                                    int blank, int max_out, higan_cuda_arena *scratch,
                                                    higan_arena *host_scratch);
/* Contextual loss (higan_cx_loss_forward / _backward; the formula is in higan.h). The cache is
   higan.h's higan_cx_cache with DEVICE arrays (higan_cuda_cx_cache_alloc: the same sizes, p_min
   and q_max int64). dy, y: device floats [1]. All N samples run at once: one batched GEMM for
   the similarities S [N, Q, P] (and, backward, two for their gradients), one block per row
   (n, q) for the min over p (first argmin: a (value, index) tree) and the softmax (double
   block sums), one thread per (n, p) for the max over q (serial, first argmax) and per
   column for the channel normalisation (serial over C, the CPU's order). Scratch (device
   arena, required): forward C + N*Q*P + N*P floats (plus the cache when cache is NULL),
   backward N*Q*P + N*C*(P + Q) + C floats; higan_cuda_cx_loss_scratch_bytes covers both.
   N, C, P, Q > 0 (asserted, like the tape op). */
HIGAN_DEF higan_status higan_cuda_cx_cache_alloc(higan_cx_cache *c, higan_cuda_arena *a, int64_t N, int64_t C,
                                                 int64_t P, int64_t Q);
HIGAN_DEF size_t higan_cuda_cx_loss_scratch_bytes(int64_t N, int64_t C, int64_t P, int64_t Q);
HIGAN_DEF higan_status higan_cuda_cx_loss_forward(higan_cuda *ctx, float *y, higan_cx_cache *cache,
                                                  const float *feat_t, const float *feat_i, int64_t N,
                                                  int64_t C, int64_t P, int64_t Q, float sigma, float b,
                                                  higan_cuda_arena *scratch);
HIGAN_DEF higan_status higan_cuda_cx_loss_backward(higan_cuda *ctx, float *dfeat_t, float *dfeat_i,
                                                   const float *dy, const higan_cx_cache *cache, int64_t N,
                                                   int64_t C, int64_t P, int64_t Q, float sigma, float b,
                                                   higan_cuda_arena *scratch);

/* ==== LSTM ====================================================================== */
/* higan_lstm_forward / _backward on the device: the same cache layout
   (higan_lstm_cache_floats), the same weight order; weights / dweights are HOST arrays of
   num_layers*D*4 device pointers. Per layer and direction: one GEMM for the input
   projections of all steps, then per step a cuBLAS GEMM h W_hh^T and a pointwise kernel.
   lengths: device ints, clamped to [0, T]. Scratch as on the CPU (device arena). */
HIGAN_DEF higan_status higan_cuda_lstm_forward(higan_cuda *ctx, float *y, float *cache, const float *x,
                                               const int *lengths, const float *const *weights,
                                               int64_t B, int64_t T, int64_t IN, int64_t H,
                                               int num_layers, int bidirectional,
                                               higan_cuda_arena *scratch);
HIGAN_DEF higan_status higan_cuda_lstm_backward(higan_cuda *ctx, float *dx, float *const *dweights,
                                                const float *dy, const float *y, const float *cache,
                                                const float *x, const int *lengths,
                                                const float *const *weights, int64_t B, int64_t T,
                                                int64_t IN, int64_t H, int num_layers,
                                                int bidirectional, higan_cuda_arena *scratch);

/* ==== BACKEND: higan.h's function table (higan_backend) filled with the CUDA ops ============
   With it a higan_tape runs its ops on the device (higan_tape_set_backend, see higan.h's
   BACKENDS section for the life cycle): the tape's float buffers come from a device arena
   (higan_backend_arena_init with this table), host ints that ops pass (embedding indices,
   mask lengths) are uploaded into it, conv2d takes its im2col scratch from its free top.
   Entries return nothing: the first failing call's status is kept in ctx->backend_error and
   returned by the table's sync (higan_tape_sync), which also waits for the stream. The table
   holds ctx: keep ctx alive and in place while the table is used.
   Covered so far: the ops of the Generator, forward and backward, and mul, sum_all, mean_all;
   the ops of the style and recognition networks, the Discriminator's, the PatchDiscriminator's
   and the GAN losses' (higan.h's table lists them). The LSTM takes its device scratch from
   the free top of the tape's data arena, like conv2d; the cx loss's is a device arena over
   that free top. */
HIGAN_DEF void higan_cuda_backend(higan_backend *be, higan_cuda *ctx);
/* Points p's device mirror (higan_params_set_device) at d, the mirror made from p by
   higan_cuda_params_init (NULL d: detach). Upload p's values first (HIGAN_CUDA_ALL). */
HIGAN_DEF void higan_cuda_params_attach(const higan_cuda_params *d, higan_params *p);
/* Device kernels of the table entries that have no higan_cuda_ function above. */
HIGAN_DEF higan_status higan_cuda_fill(higan_cuda *ctx, float *dst, float value, int64_t n);
HIGAN_DEF higan_status higan_cuda_copy_rows(higan_cuda *ctx, float *dst, int64_t dst_stride, const float *src,
                                            int64_t src_stride, int64_t cols, int64_t rows);
/* The trainers' reductions (synchronous, host results): mean and sum of squared deviations
   of x in double (out[2]); the index of x's first NaN or Inf (-1: none). */
HIGAN_DEF higan_status higan_cuda_moments(higan_cuda *ctx, double *out, const float *x, int64_t n);
HIGAN_DEF higan_status higan_cuda_find_nonfinite(higan_cuda *ctx, int64_t *first, const float *x, int64_t n);
/* y [N,C,H,W] = x where w < lens[n] (device ints), else value. */
HIGAN_DEF higan_status higan_cuda_mask_width_forward(higan_cuda *ctx, float *y, const float *x, const int *lens,
                                                     float value, int64_t N, int64_t C, int64_t H, int64_t W);
/* dx += dy where w < lens[n] (a negative length: nothing) */
HIGAN_DEF higan_status higan_cuda_mask_width_backward(higan_cuda *ctx, float *dx, const float *dy, const int *lens,
                                                      int64_t N, int64_t C, int64_t H, int64_t W);
/* ---- BigGAN side (the discriminators' private ops) ----
   div_rows: y [N, C] = x / (float)den[n] (den: device ints); backward dx += dy / (float)den[n].
   Bit-identical to the CPU (one IEEE division, one addition per element).
   extract_patches: higan_extract_patches_forward / _backward's contract (lens: device ints
   [B], or NULL for all W). Forward: one thread per (image, patch row, patch column up to the
   most an image of width W has, value); backward: one thread per dx value, adding the patches
   that cover it in the CPU's order (patch row, then column): no atomics, the CPU's bits. A
   thread finds its image's first patch by a loop over the images before it (O(B)). */
HIGAN_DEF higan_status higan_cuda_div_rows_forward(higan_cuda *ctx, float *y, const float *x, const int *den,
                                                   int64_t N, int64_t C);
HIGAN_DEF higan_status higan_cuda_div_rows_backward(higan_cuda *ctx, float *dx, const float *dy, const int *den,
                                                    int64_t N, int64_t C);
HIGAN_DEF higan_status higan_cuda_extract_patches_forward(higan_cuda *ctx, float *y, const float *x, const int *lens,
                                                          int64_t B, int64_t C, int64_t H, int64_t W, int64_t size,
                                                          int64_t step);
HIGAN_DEF higan_status higan_cuda_extract_patches_backward(higan_cuda *ctx, float *dx, const float *dy,
                                                           const int *lens, int64_t B, int64_t C, int64_t H,
                                                           int64_t W, int64_t size, int64_t step);

#endif /* HIGAN_CUDA_CUH */

/* ======================================================================== */
/*                             IMPLEMENTATION                               */
/* ======================================================================== */
#ifdef HIGAN_CUDA_IMPLEMENTATION
#ifndef HIGAN_CUDA__IMPLEMENTED
#define HIGAN_CUDA__IMPLEMENTED
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifndef HIGAN_CUDA_CONV_SCRATCH_FLOATS
#  define HIGAN_CUDA_CONV_SCRATCH_FLOATS ((int64_t)1 << 24)
#endif
#ifndef HIGAN_CUDA_BLAS_WORKSPACE
#  define HIGAN_CUDA_BLAS_WORKSPACE ((size_t)32 << 20)
#endif
#ifndef HIGAN_CUDA_BF16_SCRATCH_BYTES
#  define HIGAN_CUDA_BF16_SCRATCH_BYTES ((size_t)64 << 20)
#endif

/* higan.h's HIGAN_ASSERT exists only in the file with HIGAN_IMPLEMENTATION. */
#ifdef HIGAN_ASSERT
#  define HIGAN__CU_ASSERT(c) HIGAN_ASSERT(c)
#else
static void higan__cu_assert_fail(const char *file, int line, const char *expr) {
    fprintf(stderr, "%s:%d: higan assertion failed: %s\n", file, line, expr);
    abort();
}
#  define HIGAN__CU_ASSERT(c) ((c) ? (void)0 : higan__cu_assert_fail(__FILE__, __LINE__, #c))
#endif

/* ---- errors --------------------------------------------------------------------------- */
HIGAN_DEF higan_status higan_cuda_status(cudaError_t e, const char *expr, const char *file, int line) {
    higan_status st;
    if (e == cudaSuccess) return HIGAN_OK;
    (void)cudaGetLastError();   /* reset the runtime's last error, or the next launch check reports it */
    st = e == cudaErrorMemoryAllocation ? HIGAN_ERR_NOMEM
       : (e == cudaErrorNoDevice || e == cudaErrorInsufficientDriver ||
          e == cudaErrorNoKernelImageForDevice) ? HIGAN_ERR_UNSUPPORTED : HIGAN_ERR_DEVICE;
    return higan_set_error(st, "CUDA error %s (%s) in %s at %s:%d", cudaGetErrorName(e),
                           cudaGetErrorString(e), expr, file, line);
}
HIGAN_DEF higan_status higan_cublas_status(cublasStatus_t e, const char *expr, const char *file, int line) {
    higan_status st;
    if (e == CUBLAS_STATUS_SUCCESS) return HIGAN_OK;
    st = e == CUBLAS_STATUS_ALLOC_FAILED ? HIGAN_ERR_NOMEM
       : (e == CUBLAS_STATUS_NOT_SUPPORTED || e == CUBLAS_STATUS_ARCH_MISMATCH) ? HIGAN_ERR_UNSUPPORTED
       : HIGAN_ERR_DEVICE;
    return higan_set_error(st, "cuBLAS error %s (%s) in %s at %s:%d", cublasGetStatusName(e),
                           cublasGetStatusString(e), expr, file, line);
}
/* Launch errors (bad configuration, no kernel image) of the kernel just queued. */
static inline higan_status higan__cu_launched(const char *what, int line) {
    cudaError_t e = cudaGetLastError();
    return e == cudaSuccess ? HIGAN_OK : higan_cuda_status(e, what, __FILE__, line);
}
#define HIGAN__CU_LAUNCHED(what) higan__cu_launched(what, __LINE__)
#define HIGAN__CU_TRY(expr)                                                       \
    do {                                                                          \
        higan_status higan__cu_st_ = (expr);                                      \
        if (higan__cu_st_ != HIGAN_OK) return higan__cu_st_;                      \
    } while (0)

/* ---- device and context ---------------------------------------------------------------- */
#ifdef HIGAN_CUDA_EMULATE
/* ---- host emulation of the device (tests without a GPU) ----------------------------------- */
#include <pthread.h>
#include <thread>
#ifdef HIGAN_CUDA_EMULATE_GUARD
/* Every emulated allocation is a mapping of its own, recorded here; while the guard is on
   they are PROT_NONE except inside an emulated call (open .. close, nestable). Opening is lazy:
   inside a call, the first touch of a 64 KB chunk faults, a SIGSEGV handler makes that chunk
   accessible and records it, and close protects the recorded chunks again; so a call costs
   what it touches, not the size of all device memory. A fault outside a call, or outside every
   region, goes to the default action: the process dies of SIGSEGV, as a host access to device
   memory would on a GPU (ThreadSanitizer builds leave the guard off: TSan owns SIGSEGV). */
#include <sys/mman.h>
#include <signal.h>
#define HIGAN__EMU_MAX_REGIONS 1024
#define HIGAN__EMU_CHUNK ((uintptr_t)65536)
#define HIGAN__EMU_MAX_OPEN 65536
static struct { void *p; size_t n; } higan__emu_regions[HIGAN__EMU_MAX_REGIONS];
static int higan__emu_nregions, higan__emu_guard_on, higan__emu_depth;
static struct { uintptr_t p; size_t n; } higan__emu_opened[HIGAN__EMU_MAX_OPEN];
static int higan__emu_nopened;   /* appended atomically by the handler (any emulated thread) */
static int higan__emu_handler_set;
static void higan__emu_protect_all(int prot) {
    int i;
    for (i = 0; i < higan__emu_nregions; ++i)
        if (mprotect(higan__emu_regions[i].p, higan__emu_regions[i].n, prot) != 0) abort();
}
static void higan__emu_segv(int sig, siginfo_t *si, void *uc) {
    const uintptr_t a = (uintptr_t)si->si_addr;
    int i;
    (void)uc;
    if (__atomic_load_n(&higan__emu_depth, __ATOMIC_SEQ_CST) > 0)
        for (i = 0; i < higan__emu_nregions; ++i) {
            const uintptr_t r = (uintptr_t)higan__emu_regions[i].p, rn = (uintptr_t)higan__emu_regions[i].n;
            if (a >= r && a < r + rn) {
                uintptr_t c = r + ((a - r) & ~(HIGAN__EMU_CHUNK - 1));
                size_t n = (size_t)(c + HIGAN__EMU_CHUNK <= r + rn ? HIGAN__EMU_CHUNK : r + rn - c);
                const int k = __atomic_fetch_add(&higan__emu_nopened, 1, __ATOMIC_SEQ_CST);
                if (k >= HIGAN__EMU_MAX_OPEN) { c = r; n = (size_t)rn; }   /* list full: close protects all */
                if (mprotect((void *)c, n, PROT_READ | PROT_WRITE) != 0) break;
                if (k < HIGAN__EMU_MAX_OPEN) { higan__emu_opened[k].p = c; higan__emu_opened[k].n = n; }
                return;   /* the access runs again, now allowed */
            }
        }
    signal(sig, SIG_DFL);   /* a real fault: it happens again and kills the process */
}
static void higan__emu_open(void) {
    __atomic_add_fetch(&higan__emu_depth, 1, __ATOMIC_SEQ_CST);
}
static void higan__emu_close(void) {
    if (__atomic_sub_fetch(&higan__emu_depth, 1, __ATOMIC_SEQ_CST) == 0 && higan__emu_guard_on) {
        int i, n = higan__emu_nopened;
        if (n > HIGAN__EMU_MAX_OPEN) { higan__emu_protect_all(PROT_NONE); n = 0; }
        for (i = 0; i < n; ++i)   /* a chunk freed since is gone (munmap): mprotect fails, harmless */
            (void)mprotect((void *)higan__emu_opened[i].p, higan__emu_opened[i].n, PROT_NONE);
        higan__emu_nopened = 0;
    }
}
HIGAN_DEF void higan_cuda_emulate_guard(int on) {
#ifdef __SANITIZE_THREAD__
    (void)on;   /* ThreadSanitizer handles SIGSEGV itself: no guard */
#else
    if (higan__emu_guard_on == (on != 0)) return;
    if (on && !higan__emu_handler_set) {
        struct sigaction sa;
        memset(&sa, 0, sizeof sa);
        sa.sa_sigaction = higan__emu_segv;
        sa.sa_flags = SA_SIGINFO | SA_NODEFER;
        sigemptyset(&sa.sa_mask);
        if (sigaction(SIGSEGV, &sa, NULL) != 0) abort();
        higan__emu_handler_set = 1;
    }
    higan__emu_guard_on = on != 0;
    higan__emu_nopened = 0;
    higan__emu_protect_all(on ? PROT_NONE : PROT_READ | PROT_WRITE);
#endif
}
static void *higan__emu_malloc(size_t bytes) {
    size_t n = ((bytes ? bytes : 1) + 4095) & ~(size_t)4095;
    void *p;
    if (higan__emu_nregions == HIGAN__EMU_MAX_REGIONS) return NULL;
    p = mmap(NULL, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) return NULL;
    if (higan__emu_guard_on) (void)mprotect(p, n, PROT_NONE);   /* opened on first touch */
    higan__emu_regions[higan__emu_nregions].p = p;
    higan__emu_regions[higan__emu_nregions].n = n;
    ++higan__emu_nregions;
    return p;
}
static void higan__emu_free(void *p) {
    int i;
    if (!p) return;
    for (i = 0; i < higan__emu_nregions; ++i)
        if (higan__emu_regions[i].p == p) {
            (void)munmap(p, higan__emu_regions[i].n);
            higan__emu_regions[i] = higan__emu_regions[--higan__emu_nregions];
            return;
        }
    abort();   /* not an emulated device allocation */
}
#  define HIGAN__EMU_OPEN() higan__emu_open()
#  define HIGAN__EMU_CLOSE() higan__emu_close()
#else
static void *higan__emu_malloc(size_t bytes) { return aligned_alloc(256, ((bytes ? bytes : 1) + 255) & ~(size_t)255); }
static void higan__emu_free(void *p) { free(p); }
#  define HIGAN__EMU_OPEN() ((void)0)
#  define HIGAN__EMU_CLOSE() ((void)0)
#endif
HIGAN_DEF int higan_cuda_available(void) { return 1; }
HIGAN_DEF higan_status higan_cuda_device_name(int device, char *buf, size_t size) {
    (void)device;
    if (size) snprintf(buf, size, "host emulation (HIGAN_CUDA_EMULATE)");
    return HIGAN_OK;
}
HIGAN_DEF higan_status higan_cuda_init(higan_cuda *ctx, int device) {
    memset(ctx, 0, sizeof *ctx);
    ctx->device = device;
    ctx->ws = (float *)higan__emu_malloc(HIGAN_CUDA_WS_FLOATS * sizeof(float));
    return ctx->ws ? HIGAN_OK : higan_set_error(HIGAN_ERR_NOMEM, "emulated context: out of memory");
}
HIGAN_DEF void higan_cuda_free(higan_cuda *ctx) {
    higan__emu_free(ctx->ws);
    if (ctx->bf16) higan__emu_free(ctx->bf16);
    memset(ctx, 0, sizeof *ctx);
}
HIGAN_DEF higan_status higan_cuda_sync(higan_cuda *ctx) { (void)ctx; return HIGAN_OK; }
HIGAN_DEF higan_status higan_cuda_set_tf32(higan_cuda *ctx, int on) {   /* TF32 is not modelled: fp32 */
    ctx->tf32 = on != 0;
    ctx->precision = on ? HIGAN_PRECISION_TF32 : HIGAN_PRECISION_FP32;
    return HIGAN_OK;
}
static higan_status higan__cu_bf16_scratch(higan_cuda *ctx) {
    if (ctx->bf16) return HIGAN_OK;
    ctx->bf16 = (uint16_t *)higan__emu_malloc(HIGAN_CUDA_BF16_SCRATCH_BYTES);
    if (!ctx->bf16) return higan_set_error(HIGAN_ERR_NOMEM, "emulated bf16 scratch: out of memory");
    ctx->bf16_elems = HIGAN_CUDA_BF16_SCRATCH_BYTES / sizeof(uint16_t);
    return HIGAN_OK;
}
HIGAN_DEF higan_status higan_cuda_malloc(void **ptr, size_t bytes) {
    *ptr = higan__emu_malloc(bytes);
    return *ptr ? HIGAN_OK : higan_set_error(HIGAN_ERR_NOMEM, "emulated cudaMalloc of %zu bytes failed", bytes);
}
HIGAN_DEF void higan_cuda_free_memory(void *ptr) { higan__emu_free(ptr); }
HIGAN_DEF higan_status higan_cuda_upload(higan_cuda *ctx, void *dst, const void *src, size_t bytes) {
    (void)ctx; HIGAN__EMU_OPEN(); if (bytes) memcpy(dst, src, bytes); HIGAN__EMU_CLOSE(); return HIGAN_OK;
}
HIGAN_DEF higan_status higan_cuda_download(higan_cuda *ctx, void *dst, const void *src, size_t bytes) {
    (void)ctx; HIGAN__EMU_OPEN(); if (bytes) memcpy(dst, src, bytes); HIGAN__EMU_CLOSE(); return HIGAN_OK;
}
HIGAN_DEF higan_status higan_cuda_copy(higan_cuda *ctx, void *dst, const void *src, size_t bytes) {
    (void)ctx; HIGAN__EMU_OPEN(); if (bytes) memmove(dst, src, bytes); HIGAN__EMU_CLOSE(); return HIGAN_OK;
}
HIGAN_DEF higan_status higan_cuda_zero(higan_cuda *ctx, void *dst, size_t bytes) {
    (void)ctx; HIGAN__EMU_OPEN(); if (bytes) memset(dst, 0, bytes); HIGAN__EMU_CLOSE(); return HIGAN_OK;
}
/* cublasSgemmStridedBatched's contract on the host: column-major, op(A) [m,k], op(B) [k,n],
   cuBLAS's leading-dimension rules, beta == 0: C not read; double accumulators. It is fed
   exactly what the real call gets, so the row-major transpose trick is checked too.
   T: the operands' type, float (Sgemm) or uint16_t holding bf16 bits (the Ex calls below). */
static inline double higan__emu_load(const float *p, int64_t i) { return (double)p[i]; }
static inline double higan__emu_load(const uint16_t *p, int64_t i) {
    const uint32_t u = (uint32_t)p[i] << 16;
    float x;
    memcpy(&x, &u, sizeof x);
    return (double)x;
}
template <class T>
static cublasStatus_t higan__emu_gemm(cublasOperation_t opa, cublasOperation_t opb, int m, int n, int k,
                                      const float *alpha, const T *A, int lda, long long sa,
                                      const T *B, int ldb, long long sb, const float *beta, float *C,
                                      int ldc, long long sc, int batch) {
    int64_t bi, i, j, p;
    if (m < 0 || n < 0 || k < 0 || batch < 0 || lda < (opa == CUBLAS_OP_N ? (m > 1 ? m : 1) : (k > 1 ? k : 1)) ||
        ldb < (opb == CUBLAS_OP_N ? (k > 1 ? k : 1) : (n > 1 ? n : 1)) || ldc < (m > 1 ? m : 1))
        return CUBLAS_STATUS_INVALID_VALUE;
    HIGAN__EMU_OPEN();
    for (bi = 0; bi < batch; ++bi)
        for (j = 0; j < n; ++j)
            for (i = 0; i < m; ++i) {
                const T *a = A + bi * sa, *b = B + bi * sb;
                float *c = C + bi * sc + i + j * (int64_t)ldc;
                double acc = 0.0;
                for (p = 0; p < k; ++p)
                    acc += higan__emu_load(a, opa == CUBLAS_OP_N ? i + p * lda : p + i * lda) *
                           higan__emu_load(b, opb == CUBLAS_OP_N ? p + j * ldb : j + p * ldb);
                *c = (float)((double)*alpha * acc + (*beta == 0.0f ? 0.0 : (double)*beta * (double)*c));
            }
    HIGAN__EMU_CLOSE();
    return CUBLAS_STATUS_SUCCESS;
}
static cublasStatus_t higan__emu_sgemm(cublasOperation_t opa, cublasOperation_t opb, int m, int n, int k,
                                       const float *alpha, const float *A, int lda, long long sa,
                                       const float *B, int ldb, long long sb, const float *beta, float *C,
                                       int ldc, long long sc, int batch) {
    return higan__emu_gemm<float>(opa, opb, m, n, k, alpha, A, lda, sa, B, ldb, sb, beta, C, ldc, sc, batch);
}
/* cublasGemmStridedBatchedEx (and cublasGemmEx: batch 1) as higan_cuda uses them: bf16 A and
   B (the bits as they are: the conversion kernel did the rounding), fp32 C, fp32 compute;
   products of bf16 values are exact in double as in fp32, the sums in double. */
static cublasStatus_t higan__emu_gemm_ex(cublasOperation_t opa, cublasOperation_t opb, int m, int n, int k,
                                         const float *alpha, const void *A, cudaDataType_t ta, int lda,
                                         long long sa, const void *B, cudaDataType_t tb, int ldb, long long sb,
                                         const float *beta, void *C, cudaDataType_t tc, int ldc, long long sc,
                                         int batch, cublasComputeType_t compute) {
    if (ta != CUDA_R_16BF || tb != CUDA_R_16BF || tc != CUDA_R_32F || compute != CUBLAS_COMPUTE_32F)
        return CUBLAS_STATUS_NOT_SUPPORTED;   /* the only combination modelled */
    return higan__emu_gemm<uint16_t>(opa, opb, m, n, k, alpha, (const uint16_t *)A, lda, sa, (const uint16_t *)B,
                                     ldb, sb, beta, (float *)C, ldc, sc, batch);
}
#else
HIGAN_DEF int higan_cuda_available(void) {
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess) {
        (void)cudaGetLastError();   /* clear it: "no driver" is an answer, not an error */
        return 0;
    }
    return n > 0;
}
HIGAN_DEF higan_status higan_cuda_device_name(int device, char *buf, size_t size) {
    cudaDeviceProp prop;
    if (size) buf[0] = 0;
    HIGAN_CUDA_CHECK(cudaGetDeviceProperties(&prop, device));
    if (size) snprintf(buf, size, "%s", prop.name);
    return HIGAN_OK;
}
HIGAN_DEF higan_status higan_cuda_init(higan_cuda *ctx, int device) {
    higan_status st;
    memset(ctx, 0, sizeof *ctx);
    ctx->device = device;
    HIGAN_CUDA_CHECK(cudaSetDevice(device));
    HIGAN_CUDA_CHECK(cudaStreamCreateWithFlags(&ctx->stream, cudaStreamNonBlocking));
    /* the workspace after the stream: cublasSetStream resets it to cuBLAS's default pool */
    if ((st = HIGAN_CUDA_STATUS(cublasCreate(&ctx->blas))) != HIGAN_OK ||
        (st = HIGAN_CUDA_STATUS(cublasSetStream(ctx->blas, ctx->stream))) != HIGAN_OK ||
        (st = HIGAN_CUDA_STATUS(cublasSetPointerMode(ctx->blas, CUBLAS_POINTER_MODE_HOST))) != HIGAN_OK ||
        (st = HIGAN_CUDA_STATUS(cublasSetMathMode(ctx->blas, CUBLAS_DEFAULT_MATH))) != HIGAN_OK ||
        (st = HIGAN_CUDA_STATUS(cudaMalloc(&ctx->blas_workspace, HIGAN_CUDA_BLAS_WORKSPACE))) != HIGAN_OK ||
        (st = HIGAN_CUDA_STATUS(cublasSetWorkspace(ctx->blas, ctx->blas_workspace,
                                                   HIGAN_CUDA_BLAS_WORKSPACE))) != HIGAN_OK ||
        (st = HIGAN_CUDA_STATUS(cudaMalloc((void **)&ctx->ws, HIGAN_CUDA_WS_FLOATS * sizeof(float)))) != HIGAN_OK) {
        higan_cuda_free(ctx);
        return st;
    }
    return HIGAN_OK;
}
HIGAN_DEF void higan_cuda_free(higan_cuda *ctx) {
    if (ctx->stream) (void)cudaStreamSynchronize(ctx->stream);
    if (ctx->blas) (void)cublasDestroy(ctx->blas);
    if (ctx->blas_workspace) (void)cudaFree(ctx->blas_workspace);
    if (ctx->ws) (void)cudaFree(ctx->ws);
    if (ctx->bf16) (void)cudaFree(ctx->bf16);
    if (ctx->stream) (void)cudaStreamDestroy(ctx->stream);
    memset(ctx, 0, sizeof *ctx);
}
HIGAN_DEF higan_status higan_cuda_sync(higan_cuda *ctx) {
    HIGAN_CUDA_CHECK(cudaStreamSynchronize(ctx->stream));
    return HIGAN_OK;
}
HIGAN_DEF higan_status higan_cuda_set_tf32(higan_cuda *ctx, int on) {
    HIGAN_CUDA_CHECK(cublasSetMathMode(ctx->blas, on ? CUBLAS_TF32_TENSOR_OP_MATH : CUBLAS_DEFAULT_MATH));
    ctx->tf32 = on != 0;
    ctx->precision = on ? HIGAN_PRECISION_TF32 : HIGAN_PRECISION_FP32;
    return HIGAN_OK;
}
static higan_status higan__cu_bf16_scratch(higan_cuda *ctx) {
    if (ctx->bf16) return HIGAN_OK;
    HIGAN_CUDA_CHECK(cudaMalloc((void **)&ctx->bf16, HIGAN_CUDA_BF16_SCRATCH_BYTES));
    ctx->bf16_elems = HIGAN_CUDA_BF16_SCRATCH_BYTES / sizeof(uint16_t);
    return HIGAN_OK;
}

/* ---- memory ------------------------------------------------------------------------------ */
HIGAN_DEF higan_status higan_cuda_malloc(void **ptr, size_t bytes) {
    *ptr = NULL;
    HIGAN_CUDA_CHECK(cudaMalloc(ptr, bytes ? bytes : 1));
    return HIGAN_OK;
}
HIGAN_DEF void higan_cuda_free_memory(void *ptr) { if (ptr) (void)cudaFree(ptr); }
HIGAN_DEF higan_status higan_cuda_upload(higan_cuda *ctx, void *dst, const void *src, size_t bytes) {
    if (!bytes) return HIGAN_OK;
    HIGAN_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, ctx->stream));
    return HIGAN_OK;
}
HIGAN_DEF higan_status higan_cuda_download(higan_cuda *ctx, void *dst, const void *src, size_t bytes) {
    if (!bytes) return HIGAN_OK;
    HIGAN_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, ctx->stream));
    HIGAN_CUDA_CHECK(cudaStreamSynchronize(ctx->stream));
    return HIGAN_OK;
}
HIGAN_DEF higan_status higan_cuda_copy(higan_cuda *ctx, void *dst, const void *src, size_t bytes) {
    if (!bytes) return HIGAN_OK;
    HIGAN_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, ctx->stream));
    return HIGAN_OK;
}
HIGAN_DEF higan_status higan_cuda_zero(higan_cuda *ctx, void *dst, size_t bytes) {
    if (!bytes) return HIGAN_OK;
    HIGAN_CUDA_CHECK(cudaMemsetAsync(dst, 0, bytes, ctx->stream));
    return HIGAN_OK;
}
#endif /* HIGAN_CUDA_EMULATE */
HIGAN_DEF higan_status higan_cuda_set_precision(higan_cuda *ctx, higan_precision p) {
    HIGAN__CU_ASSERT(p == HIGAN_PRECISION_FP32 || p == HIGAN_PRECISION_TF32 || p == HIGAN_PRECISION_BF16);
    if (p == HIGAN_PRECISION_BF16) HIGAN__CU_TRY(higan__cu_bf16_scratch(ctx));
    HIGAN__CU_TRY(higan_cuda_set_tf32(ctx, p == HIGAN_PRECISION_TF32));
    ctx->precision = (int)p;
    return HIGAN_OK;
}
HIGAN_DEF higan_precision higan_cuda_get_precision(const higan_cuda *ctx) { return (higan_precision)ctx->precision; }

/* ---- device arena: higan_arena's bookkeeping, 256-byte blocks --------------------------- */
#define HIGAN__CU_ALIGN 256
static size_t higan__cu_round(size_t n) { return (n + (HIGAN__CU_ALIGN - 1)) & ~(size_t)(HIGAN__CU_ALIGN - 1); }
HIGAN_DEF higan_status higan_cuda_arena_init(higan_cuda_arena *a, size_t capacity) {
    void *p = NULL;
    memset(a, 0, sizeof *a);
    capacity = higan__cu_round(capacity);
    HIGAN__CU_TRY(higan_cuda_malloc(&p, capacity));   /* cudaMalloc aligns to >= 256 bytes */
    a->base = (unsigned char *)p;
    a->capacity = capacity;
    return HIGAN_OK;
}
HIGAN_DEF void higan_cuda_arena_free(higan_cuda_arena *a) {
    higan_cuda_free_memory(a->base);
    memset(a, 0, sizeof *a);
}
HIGAN_DEF void higan_cuda_arena_reset(higan_cuda_arena *a) { a->used = 0; a->needed = 0; a->overflow = 0; }
HIGAN_DEF void *higan_cuda_arena_alloc(higan_cuda_arena *a, size_t bytes) {
    size_t n = higan__cu_round(bytes ? bytes : 1);
    a->needed = (a->overflow ? a->needed : a->used) + n;
    if (a->overflow || !a->base || a->used + n > a->capacity) {
        if (!a->overflow)
            higan_set_error(HIGAN_ERR_NOMEM, "device arena overflow: a request of %zu bytes does not "
                            "fit (%zu of %zu used)", bytes, a->used, a->capacity);
        a->overflow = 1;
        return NULL;
    }
    {
        void *p = a->base + a->used;
        a->used += n;
        if (a->used > a->peak) a->peak = a->used;
        return p;
    }
}
HIGAN_DEF float *higan_cuda_arena_floats(higan_cuda_arena *a, int64_t count) {
    HIGAN__CU_ASSERT(count >= 0);
    return (float *)higan_cuda_arena_alloc(a, (size_t)count * sizeof(float));
}
HIGAN_DEF float *higan_cuda_arena_zeros(higan_cuda *ctx, higan_cuda_arena *a, int64_t count) {
    float *p = higan_cuda_arena_floats(a, count);
    if (p && higan_cuda_zero(ctx, p, (size_t)count * sizeof(float)) != HIGAN_OK) return NULL;
    return p;
}
HIGAN_DEF size_t higan_cuda_arena_mark(const higan_cuda_arena *a) { return a->used; }
HIGAN_DEF void higan_cuda_arena_release(higan_cuda_arena *a, size_t mark) {
    HIGAN__CU_ASSERT(mark <= a->used || a->overflow);
    if (!a->overflow) a->used = mark;
}
HIGAN_DEF higan_status higan_cuda_arena_status(const higan_cuda_arena *a) {
    if (!a->overflow) return HIGAN_OK;
    return higan_set_error(HIGAN_ERR_NOMEM, "device arena overflow: this step needs at least %zu "
                           "bytes but the arena has %zu; create it with a larger capacity",
                           a->needed, a->capacity);
}

/* ---- parameter store mirror: higan.h's generic mirror through this backend's table -------- */
/* A table on ctx for one call that keeps ctx's pending table error (higan_cuda_backend resets
   it); the call's own status comes back from higan__cu_table_end. */
static void higan__cu_table_begin(higan_backend *be, higan_cuda *ctx, higan_status *saved) {
    *saved = ctx->backend_error;
    higan_cuda_backend(be, ctx);
}
static higan_status higan__cu_table_end(higan_cuda *ctx, higan_status saved) {
    higan_status st = ctx->backend_error;
    ctx->backend_error = saved;
    return st;
}
static int higan__cu_params_what(int what) {   /* HIGAN_CUDA_BUFFERS covers both buffer kinds */
    return (what & 7) | ((what & HIGAN_CUDA_BUFFERS) ? HIGAN_PARAMS_BUFFERS | HIGAN_PARAMS_IBUFFERS : 0);
}
HIGAN_DEF higan_status higan_cuda_params_init(higan_cuda *ctx, higan_cuda_params *d, const higan_params *p) {
    higan_backend be;
    higan_status saved, st;
    higan__cu_table_begin(&be, ctx, &saved);
    st = higan_params_mirror_init(d, &be, p);
    saved = higan__cu_table_end(ctx, saved);
    return st != HIGAN_OK ? st : saved;
}
HIGAN_DEF void higan_cuda_params_free(higan_cuda_params *d) {
    higan_cuda_free_memory(d->block);   /* what the table's free_memory does, without a context */
    memset(d, 0, sizeof *d);
}
HIGAN_DEF higan_status higan_cuda_params_upload(higan_cuda *ctx, higan_cuda_params *d, const higan_params *p, int what) {
    higan_backend be;
    higan_status saved;
    higan__cu_table_begin(&be, ctx, &saved);
    higan_params_mirror_upload(d, &be, p, higan__cu_params_what(what));
    return higan__cu_table_end(ctx, saved);
}
HIGAN_DEF higan_status higan_cuda_params_download(higan_cuda *ctx, const higan_cuda_params *d, higan_params *p, int what) {
    higan_backend be;
    higan_status saved;
    higan__cu_table_begin(&be, ctx, &saved);
    higan_params_mirror_download(d, &be, p, higan__cu_params_what(what));
    return higan__cu_table_end(ctx, saved);
}
static void higan__cu_params_match(const higan_cuda_params *d, const higan_params *p) {
    HIGAN__CU_ASSERT(p->allocated && d->block);
    HIGAN__CU_ASSERT(d->n_param == p->n_param && d->n_buffer == p->n_buffer && d->n_ibuffer == p->n_ibuffer
                     && "device mirror made from another store");
}
HIGAN_DEF float *higan_cuda_params_data(const higan_cuda_params *d, const higan_params *p, int h) {
    higan__cu_params_match(d, p);
    HIGAN__CU_ASSERT(h >= 0 && h < p->count);
    if (p->entries[h].kind == HIGAN_PARAM) return d->value + p->entries[h].offset;
    HIGAN__CU_ASSERT(p->entries[h].kind == HIGAN_BUFFER);
    return d->buffer + p->entries[h].offset;
}
HIGAN_DEF float *higan_cuda_params_grad(const higan_cuda_params *d, const higan_params *p, int h) {
    higan__cu_params_match(d, p);
    HIGAN__CU_ASSERT(h >= 0 && h < p->count);
    return p->entries[h].kind == HIGAN_PARAM ? d->grad + p->entries[h].offset : NULL;
}
HIGAN_DEF int64_t *higan_cuda_params_idata(const higan_cuda_params *d, const higan_params *p, int h) {
    higan__cu_params_match(d, p);
    HIGAN__CU_ASSERT(h >= 0 && h < p->count && p->entries[h].kind == HIGAN_BUFFER_I64);
    return d->ibuffer + p->entries[h].offset;
}
HIGAN_DEF higan_status higan_cuda_params_zero_grad(higan_cuda *ctx, higan_cuda_params *d) {
    return higan_cuda_zero(ctx, d->grad, (size_t)d->n_param * sizeof(float));
}

/* ---- launch helpers and block reductions ------------------------------------------------ */
/* Kernels are written as functors whose methods are __host__ __device__, launched by three
   templates: higan__cu_map (one call per element), higan__cu_rows (a double sum per row) and
   higan__cu_blocks (one thread block per item, for the kernels that need __syncthreads).
   Under HIGAN_CUDA_EMULATE the same functors run on the host (block kernels on a team of
   host threads, see HIGAN__SYNC below), so
   tests/test_cuda.cu can check the index math and launch sequences without a GPU. */
#define HIGAN__CU_HD __host__ __device__
/* Every kernel runs HIGAN__CU_BLOCK threads per block; reductions rely on it. */
#define HIGAN__CU_BLOCK 256
#define HIGAN__CU_MAX_GRID 65535
/* Inside a block functor: this thread, the block's threads, a block barrier. The emulation
   runs a block kernel's blocks on a team of host threads (HIGAN_CUDA_EMULATE_THREADS, a power
   of two, default 4; the environment variable of that name overrides it, 1 runs serially)
   meeting at a real barrier at every HIGAN__SYNC: a functor that reads what another thread
   writes without a barrier between, or that leaves threads out of a barrier, gives wrong
   results or hangs there too, not only on a GPU. */
#ifdef __CUDA_ARCH__
#  define HIGAN__TID ((int64_t)threadIdx.x)
#  define HIGAN__NTHR ((int64_t)HIGAN__CU_BLOCK)
#  define HIGAN__SYNC() __syncthreads()
#endif
#ifdef HIGAN_CUDA_EMULATE
#  ifndef HIGAN_CUDA_EMULATE_THREADS
#    define HIGAN_CUDA_EMULATE_THREADS 4
#  endif
static int higan__emu_nthr;                       /* threads per emulated block (set per launch) */
static thread_local int higan__emu_tid;           /* this host thread's index in its team */
static thread_local pthread_barrier_t *higan__emu_bar;
static void higan__emu_sync(void) { if (higan__emu_bar) pthread_barrier_wait(higan__emu_bar); }
/* HIGAN_CUDA_EMULATE_MAP_THREADS (environment, default 1): see higan__cu_map */
static int higan__emu_map_threads(void) {
    static int n = -1;
    if (n < 0) {
        const char *env = getenv("HIGAN_CUDA_EMULATE_MAP_THREADS");
        n = env && atoi(env) > 1 ? (atoi(env) < 64 ? atoi(env) : 64) : 1;
    }
    return n;
}
#endif
#ifdef __CUDA_ARCH__
#elif defined(HIGAN_CUDA_EMULATE)
#  define HIGAN__TID ((int64_t)higan__emu_tid)
#  define HIGAN__NTHR ((int64_t)higan__emu_nthr)
#  define HIGAN__SYNC() higan__emu_sync()
#else   /* host code of a GPU build: never runs (kernels run on the device) */
#  define HIGAN__TID ((int64_t)0)
#  define HIGAN__NTHR ((int64_t)1)
#  define HIGAN__SYNC() ((void)0)
#endif
static inline unsigned higan__cu_grid(int64_t n) {
    int64_t g = (n + HIGAN__CU_BLOCK - 1) / HIGAN__CU_BLOCK;
    return (unsigned)(g < 1 ? 1 : g > HIGAN__CU_MAX_GRID ? HIGAN__CU_MAX_GRID : g);
}
static inline unsigned higan__cu_blocks_for(int64_t items) {
    return (unsigned)(items < 1 ? 1 : items > HIGAN__CU_MAX_GRID ? HIGAN__CU_MAX_GRID : items);
}

/* Float operations rounded one at a time, as on the CPU: nvcc would contract a * b + c into
   one FMA (one rounding instead of two). Used where a kernel promises the CPU's bits. */
#ifdef __CUDA_ARCH__
#  define HIGAN__FADD(a, b) __fadd_rn(a, b)
#  define HIGAN__FSUB(a, b) __fsub_rn(a, b)
#  define HIGAN__FMUL(a, b) __fmul_rn(a, b)
#  define HIGAN__FDIV(a, b) __fdiv_rn(a, b)
#  define HIGAN__FSQRT(a) __fsqrt_rn(a)
#else   /* host (emulation): plain IEEE float operations, contraction is off in ISO C++ */
#  define HIGAN__FADD(a, b) ((a) + (b))
#  define HIGAN__FSUB(a, b) ((a) - (b))
#  define HIGAN__FMUL(a, b) ((a) * (b))
#  define HIGAN__FDIV(a, b) ((a) / (b))
#  define HIGAN__FSQRT(a) sqrtf(a)
#endif

/* Sum over the block in a fixed tree (deterministic); every thread gets the total. */
static HIGAN__CU_HD double higan__block_sum(double v, double *sh) {
#if defined(__CUDA_ARCH__) || defined(HIGAN_CUDA_EMULATE)   /* device, or an emulated team */
    const int t = (int)HIGAN__TID;
    int s;
    sh[t] = v;
    HIGAN__SYNC();
    for (s = (int)HIGAN__NTHR / 2; s > 0; s >>= 1) {
        if (t < s) sh[t] += sh[t + s];
        HIGAN__SYNC();
    }
    v = sh[0];
    HIGAN__SYNC();
#else
    (void)sh;
#endif
    return v;
}
static HIGAN__CU_HD float higan__block_max(float v, float *sh) {
#if defined(__CUDA_ARCH__) || defined(HIGAN_CUDA_EMULATE)   /* device, or an emulated team */
    const int t = (int)HIGAN__TID;
    int s;
    sh[t] = v;
    HIGAN__SYNC();
    for (s = (int)HIGAN__NTHR / 2; s > 0; s >>= 1) {
        if (t < s && sh[t + s] > sh[t]) sh[t] = sh[t + s];
        HIGAN__SYNC();
    }
    v = sh[0];
    HIGAN__SYNC();
#else
    (void)sh;
#endif
    return v;
}

/* First minimum over the block: each thread brings its (v, *i), the block's smallest v wins,
   ties to the smaller index (so per-thread first minima give the row's first minimum);
   every thread gets the value and *i. Indices travel as doubles (exact below 2^53). */
static HIGAN__CU_HD float higan__block_argmin(float v, int64_t *i, float *shf, double *sh) {
#if defined(__CUDA_ARCH__) || defined(HIGAN_CUDA_EMULATE)   /* device, or an emulated team */
    const int t = (int)HIGAN__TID;
    int s;
    shf[t] = v;
    sh[t] = (double)*i;
    HIGAN__SYNC();
    for (s = (int)HIGAN__NTHR / 2; s > 0; s >>= 1) {
        if (t < s && (shf[t + s] < shf[t] || (shf[t + s] == shf[t] && sh[t + s] < sh[t]))) {
            shf[t] = shf[t + s];
            sh[t] = sh[t + s];
        }
        HIGAN__SYNC();
    }
    v = shf[0];
    *i = (int64_t)sh[0];
    HIGAN__SYNC();
#else
    (void)i; (void)shf; (void)sh;
#endif
    return v;
}

/* Elementwise: f(i) for every i in [0, n), each i by one thread (grid-stride loop). */
template <class F> static __global__ void higan__k_map(int64_t n, F f) {
    int64_t i;
    for (i = (int64_t)blockIdx.x * HIGAN__CU_BLOCK + threadIdx.x; i < n; i += (int64_t)gridDim.x * HIGAN__CU_BLOCK)
        f(i);
}
template <class F> static higan_status higan__cu_map(higan_cuda *ctx, int64_t n, const F &f, const char *what) {
    if (n <= 0) return HIGAN_OK;
#ifdef HIGAN_CUDA_EMULATE
    {   /* HIGAN_CUDA_EMULATE_MAP_THREADS=k (environment) spreads the elements over k host threads,
           element i on thread i % k: under ThreadSanitizer (make tsan-cuda) two elements that
           write the same place, or one that reads another's output, are reported as races */
        const int map_threads = higan__emu_map_threads();
        int64_t i;
        (void)ctx; (void)what;
        HIGAN__EMU_OPEN();
        if (map_threads == 1 || n < 2) {
            for (i = 0; i < n; ++i) f(i);
        } else {
            std::thread team[64];
            int k, nt = (int64_t)map_threads < n ? map_threads : (int)n;
            for (k = 0; k < nt; ++k)
                team[k] = std::thread([&, k]() {
                    int64_t j;
                    for (j = k; j < n; j += nt) f(j);
                });
            for (k = 0; k < nt; ++k) team[k].join();
        }
        HIGAN__EMU_CLOSE();
        return HIGAN_OK;
    }
#else
    higan__k_map<F><<<higan__cu_grid(n), HIGAN__CU_BLOCK, 0, ctx->stream>>>(n, f);
    return HIGAN__CU_LAUNCHED(what);
#endif
}

/* Row reductions: for each row r in [0, rows), one block sums f.term(r, i) over i in [0, n)
   in double and one thread calls f.finish(r, sum). rows == 1 is a whole-array reduction. */
template <class F> static __global__ void higan__k_rows(int64_t rows, int64_t n, F f) {
    __shared__ double sh[HIGAN__CU_BLOCK];
    int64_t r, i;
    for (r = blockIdx.x; r < rows; r += gridDim.x) {
        double acc = 0.0;
        for (i = threadIdx.x; i < n; i += HIGAN__CU_BLOCK) acc += f.term(r, i);
        acc = higan__block_sum(acc, sh);
        if (threadIdx.x == 0) f.finish(r, acc);
    }
}
template <class F> static higan_status higan__cu_rows(higan_cuda *ctx, int64_t rows, int64_t n, const F &f,
                                                      const char *what) {
    if (rows <= 0) return HIGAN_OK;
#ifdef HIGAN_CUDA_EMULATE
    {
        int64_t r, i;
        (void)ctx; (void)what;
        HIGAN__EMU_OPEN();
        for (r = 0; r < rows; ++r) {
            double acc = 0.0;
            for (i = 0; i < n; ++i) acc += f.term(r, i);
            f.finish(r, acc);
        }
        HIGAN__EMU_CLOSE();
        return HIGAN_OK;
    }
#else
    higan__k_rows<F><<<higan__cu_blocks_for(rows), HIGAN__CU_BLOCK, 0, ctx->stream>>>(rows, n, f);
    return HIGAN__CU_LAUNCHED(what);
#endif
}

/* Block kernels: f(item, sh, shf, dyn) for every item in [0, items), one block per item, all
   HIGAN__CU_BLOCK threads of the block calling it (uniform control flow around every
   HIGAN__SYNC / block reduction). sh, shf: HIGAN__CU_BLOCK doubles / floats of shared
   memory for the reductions; dyn: dyn_floats floats of dynamic shared memory. */
template <class F> static __global__ void higan__k_blocks(int64_t items, F f) {
    __shared__ double sh[HIGAN__CU_BLOCK];
    __shared__ float shf[HIGAN__CU_BLOCK];
    extern __shared__ float higan__dyn_sh[];
    int64_t it;
    for (it = blockIdx.x; it < items; it += gridDim.x) {
        f(it, sh, shf, higan__dyn_sh);
        __syncthreads();   /* the next item reuses the shared memory */
    }
}
template <class F> static higan_status higan__cu_blocks(higan_cuda *ctx, int64_t items, const F &f,
                                                        size_t dyn_floats, const char *what) {
    if (items <= 0) return HIGAN_OK;
    /* 48 KB per block without opting in, of which the static sh / shf take 3 KB */
    if (dyn_floats * sizeof(float) + HIGAN__CU_BLOCK * (sizeof(double) + sizeof(float)) > 48 * 1024)
        return higan_set_error(HIGAN_ERR_ARG, "%s: %zu floats of dynamic shared memory do not fit in 48 KB",
                               what, dyn_floats);
#ifdef HIGAN_CUDA_EMULATE
    {   /* a team of nthr host threads runs the blocks one after another, as one block would;
           with HIGAN_CUDA_EMULATE_MAP_THREADS > 1 two teams take alternate blocks at the same
           time (each with its own shared memory), so races between blocks show under TSan */
        const char *env = getenv("HIGAN_CUDA_EMULATE_THREADS");
        const int nthr = env && *env ? atoi(env) : HIGAN_CUDA_EMULATE_THREADS;
        const int teams = higan__emu_map_threads() > 1 && items > 1 ? 2 : 1;
        double sh[2][HIGAN__CU_BLOCK];
        float shf[2][HIGAN__CU_BLOCK], *dyn[2] = {NULL, NULL};
        std::thread team[2 * 64];
        pthread_barrier_t bar[2];
        int k, g;
        (void)ctx;
        if (nthr < 1 || nthr > 64 || (nthr & (nthr - 1)))
            return higan_set_error(HIGAN_ERR_ARG, "%s: HIGAN_CUDA_EMULATE_THREADS must be a power of two in 1..64",
                                   what);
        for (g = 0; g < teams; ++g)
            if (!(dyn[g] = (float *)malloc((dyn_floats ? dyn_floats : 1) * sizeof(float)))) {
                free(dyn[0]);
                return higan_set_error(HIGAN_ERR_NOMEM, "%s: emulation out of memory", what);
            }
        higan__emu_nthr = nthr;
        HIGAN__EMU_OPEN();
        if (nthr == 1 && teams == 1) {
            int64_t it;
            higan__emu_tid = 0;
            for (it = 0; it < items; ++it) f(it, sh[0], shf[0], dyn[0]);
        } else {
            for (g = 0; g < teams; ++g) pthread_barrier_init(&bar[g], NULL, (unsigned)nthr);
            for (g = 0; g < teams; ++g)
                for (k = 0; k < nthr; ++k)
                    team[g * nthr + k] = std::thread([&, g, k]() {
                        int64_t it;
                        higan__emu_tid = k;
                        higan__emu_bar = &bar[g];
                        for (it = g; it < items; it += teams) {
                            f(it, sh[g], shf[g], dyn[g]);
                            higan__emu_sync();   /* the next block reuses the shared memory */
                        }
                        higan__emu_bar = NULL;
                    });
            for (k = 0; k < teams * nthr; ++k) team[k].join();
            for (g = 0; g < teams; ++g) pthread_barrier_destroy(&bar[g]);
        }
        HIGAN__EMU_CLOSE();
        for (g = 0; g < teams; ++g) free(dyn[g]);
        return HIGAN_OK;
    }
#else
    higan__k_blocks<F><<<higan__cu_blocks_for(items), HIGAN__CU_BLOCK, dyn_floats * sizeof(float), ctx->stream>>>(items, f);
    return HIGAN__CU_LAUNCHED(what);
#endif
}

/* ==== GEMM, CONV2D, LINEAR (implementation) ============================================== */
/* C_i[M,N] = beta C_i for K == 0 (beta 0: zeros, C not read), i < batch, stride sc. */
struct higan__f_scale_c {
    float *C; int64_t N, ldc, sc, MN; float beta;
    HIGAN__CU_HD void operator()(int64_t i) const {
        int64_t b = i / MN, r = (i % MN) / N, c = i % N;
        float *p = C + b * sc + r * ldc + c;
        *p = beta == 0.0f ? 0.0f : beta * *p;
    }
};
/* fp32 -> bf16 bits as higan.h's CPU GEMM rounds (higan__bf16_bits): magnitudes below
   FLT_MIN become a signed zero, NaN stays a quiet NaN, else round to nearest even. */
static HIGAN__CU_HD uint16_t higan__cu_bf16_bits(float x) {
#ifdef __CUDA_ARCH__
    uint32_t u = __float_as_uint(x);
#else
    uint32_t u;
    memcpy(&u, &x, sizeof u);
#endif
    if ((u & 0x7f800000u) == 0) return (uint16_t)((u >> 16) & 0x8000u);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x0040u);
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}
/* dst [count, rows, cols] (dense) = bf16(scale * src[b * stride + r * ld + c]) */
struct higan__f_to_bf16 {
    uint16_t *dst; const float *src; int64_t rows, cols, ld, stride; float scale;
    HIGAN__CU_HD void operator()(int64_t i) const {
        const int64_t rc = rows * cols, b = i / rc, r = (i % rc) / cols, c = i % cols;
        dst[i] = higan__cu_bf16_bits(scale * src[b * stride + r * ld + c]);
    }
};
static higan_status higan__cu_to_bf16(higan_cuda *ctx, uint16_t *dst, const float *src, int64_t rows, int64_t cols,
                                      int64_t ld, int64_t stride, int64_t count, float scale) {
    higan__f_to_bf16 f;
    f.dst = dst; f.src = src; f.rows = rows; f.cols = cols; f.ld = ld; f.stride = stride; f.scale = scale;
    return higan__cu_map(ctx, count * rows * cols, f, "gemm: operands to bf16");
}
/* higan__cu_gemm_batched in HIGAN_PRECISION_BF16 (same arguments, checked there): op(B) and
   alpha op(A) (alpha folded into A before rounding, as the CPU's bf16 GEMM and
   higan_gemm_ref_bf16 do; cuBLAS then gets alpha 1) converted into ctx->bf16 as dense blocks
   (B first, then A; an operand with stride 0 once per group), each pair one
   cublasGemm(StridedBatched)Ex. Operands larger than the scratch go in groups of batch items,
   then blocks of rows, columns and depth (the largest halved first; depth blocks after the
   first add onto C with beta 1, so C then holds fp32 partial sums). Stream order makes
   reusing the scratch safe. */
static higan_status higan__cu_gemm_bf16(higan_cuda *ctx, int ta, int tb, int64_t M, int64_t N, int64_t K,
                                        float alpha, const float *A, int64_t lda, int64_t sa,
                                        const float *B, int64_t ldb, int64_t sb, float beta,
                                        float *C, int64_t ldc, int64_t sc, int64_t batch) {
    cublasOperation_t opa = ta ? CUBLAS_OP_T : CUBLAS_OP_N, opb = tb ? CUBLAS_OP_T : CUBLAS_OP_N;
    int64_t g = batch, mc = M, nc = N, kc = K, b0, m0, n0, k0;
    const float one = 1.0f;
#define HIGAN__BF16_NEED(g_, mc_, nc_, kc_) (((sa ? (g_) : 1) * (mc_) + (sb ? (g_) : 1) * (nc_)) * (kc_))
    while ((size_t)HIGAN__BF16_NEED(g, mc, nc, kc) > ctx->bf16_elems) {
        if (g > 1) g = (g + 1) / 2;
        else if (kc >= mc && kc >= nc && kc > 1) kc = (kc + 1) / 2;
        else if (mc >= nc && mc > 1) mc = (mc + 1) / 2;
        else if (nc > 1) nc = (nc + 1) / 2;
        else return higan_set_error(HIGAN_ERR_NOMEM, "bf16 GEMM: HIGAN_CUDA_BF16_SCRATCH_BYTES (%zu) is too small",
                                    ctx->bf16_elems * sizeof(uint16_t));
    }
#undef HIGAN__BF16_NEED
    for (b0 = 0; b0 < batch; b0 += g) {
        const int64_t gb = batch - b0 < g ? batch - b0 : g;
        for (n0 = 0; n0 < N; n0 += nc) {
            const int64_t nn = N - n0 < nc ? N - n0 : nc;
            for (k0 = 0; k0 < K; k0 += kc) {
                const int64_t kk = K - k0 < kc ? K - k0 : kc;
                const int64_t ldb2 = tb ? kk : nn, sb2 = sb ? nn * kk : 0;
                const float beta2 = k0 == 0 ? beta : 1.0f;
                uint16_t *hb = ctx->bf16, *ha = ctx->bf16 + (sb ? gb : 1) * nn * kk;
                /* op(B) [k0 .. k0 + kk, n0 .. n0 + nn] as stored: B[k][n] (tb = 0) or B[n][k] */
                HIGAN__CU_TRY(higan__cu_to_bf16(ctx, hb, B + b0 * sb + (tb ? n0 * ldb + k0 : k0 * ldb + n0),
                                                tb ? nn : kk, tb ? kk : nn, ldb, sb, sb ? gb : 1, 1.0f));
                for (m0 = 0; m0 < M; m0 += mc) {
                    const int64_t mm = M - m0 < mc ? M - m0 : mc;
                    const int64_t lda2 = ta ? mm : kk, sa2 = sa ? mm * kk : 0;
                    float *Cb = C + b0 * sc + m0 * ldc + n0;
                    /* op(A) [m0 .. m0 + mm, k0 .. k0 + kk] as stored: A[m][k] (ta = 0) or A[k][m] */
                    HIGAN__CU_TRY(higan__cu_to_bf16(ctx, ha, A + b0 * sa + (ta ? k0 * lda + m0 : m0 * lda + k0),
                                                    ta ? kk : mm, ta ? mm : kk, lda, sa, sa ? gb : 1, alpha));
#ifdef HIGAN_CUDA_EMULATE
                    HIGAN_CUDA_CHECK(higan__emu_gemm_ex(opb, opa, (int)nn, (int)mm, (int)kk, &one, hb, CUDA_R_16BF,
                                                        (int)ldb2, (long long)sb2, ha, CUDA_R_16BF, (int)lda2,
                                                        (long long)sa2, &beta2, Cb, CUDA_R_32F, (int)ldc,
                                                        (long long)sc, (int)gb, CUBLAS_COMPUTE_32F));
#else
                    if (gb == 1)
                        HIGAN_CUDA_CHECK(cublasGemmEx(ctx->blas, opb, opa, (int)nn, (int)mm, (int)kk, &one, hb,
                                                      CUDA_R_16BF, (int)ldb2, ha, CUDA_R_16BF, (int)lda2, &beta2, Cb,
                                                      CUDA_R_32F, (int)ldc, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
                    else
                        HIGAN_CUDA_CHECK(cublasGemmStridedBatchedEx(ctx->blas, opb, opa, (int)nn, (int)mm, (int)kk,
                                                                    &one, hb, CUDA_R_16BF, (int)ldb2, (long long)sb2,
                                                                    ha, CUDA_R_16BF, (int)lda2, (long long)sa2,
                                                                    &beta2, Cb, CUDA_R_32F, (int)ldc, (long long)sc,
                                                                    (int)gb, CUBLAS_COMPUTE_32F,
                                                                    CUBLAS_GEMM_DEFAULT));
#endif
                }
            }
        }
    }
    return HIGAN_OK;
}
/* Row-major batched GEMM: C_i = alpha op(A_i) op(B_i) + beta C_i with A_i = A + i*sa etc.
   (sa or sb may be 0: the same matrix for every i). cuBLAS is column-major: the row-major
   C [M,N] is its C^T [N,M] = op(B)^T op(A)^T, so B goes first with op(B) = trans_b ? T : N. */
static higan_status higan__cu_gemm_batched(higan_cuda *ctx, int ta, int tb, int64_t M, int64_t N, int64_t K,
                                           float alpha, const float *A, int64_t lda, int64_t sa,
                                           const float *B, int64_t ldb, int64_t sb, float beta,
                                           float *C, int64_t ldc, int64_t sc, int64_t batch) {
    cublasOperation_t opa = ta ? CUBLAS_OP_T : CUBLAS_OP_N, opb = tb ? CUBLAS_OP_T : CUBLAS_OP_N;
    HIGAN__CU_ASSERT(M >= 0 && N >= 0 && K >= 0 && batch >= 0);
    if (M == 0 || N == 0 || batch == 0) return HIGAN_OK;
    HIGAN__CU_ASSERT(C && ldc >= N);
    if (K == 0) {
        higan__f_scale_c f;
        f.C = C; f.N = N; f.ldc = ldc; f.sc = sc; f.MN = M * N; f.beta = beta;
        return higan__cu_map(ctx, batch * M * N, f, "gemm (K = 0)");
    }
    HIGAN__CU_ASSERT(A && B);
    HIGAN__CU_ASSERT(lda >= (ta ? M : K) && ldb >= (tb ? K : N));
    HIGAN__CU_ASSERT(M <= INT_MAX && N <= INT_MAX && K <= INT_MAX && lda <= INT_MAX && ldb <= INT_MAX &&
                     ldc <= INT_MAX && batch <= INT_MAX);
    if (ctx->precision == HIGAN_PRECISION_BF16)
        return higan__cu_gemm_bf16(ctx, ta, tb, M, N, K, alpha, A, lda, sa, B, ldb, sb, beta, C, ldc, sc, batch);
#ifdef HIGAN_CUDA_EMULATE
    HIGAN_CUDA_CHECK(higan__emu_sgemm(opb, opa, (int)N, (int)M, (int)K, &alpha, B, (int)ldb, (long long)sb, A,
                                      (int)lda, (long long)sa, &beta, C, (int)ldc, (long long)sc, (int)batch));
#else
    if (batch == 1)
        HIGAN_CUDA_CHECK(cublasSgemm(ctx->blas, opb, opa, (int)N, (int)M, (int)K, &alpha, B, (int)ldb,
                                     A, (int)lda, &beta, C, (int)ldc));
    else
        HIGAN_CUDA_CHECK(cublasSgemmStridedBatched(ctx->blas, opb, opa, (int)N, (int)M, (int)K, &alpha,
                                                   B, (int)ldb, (long long)sb, A, (int)lda, (long long)sa,
                                                   &beta, C, (int)ldc, (long long)sc, (int)batch));
#endif
    return HIGAN_OK;
}
HIGAN_DEF higan_status higan_cuda_gemm(higan_cuda *ctx, int trans_a, int trans_b, int64_t M, int64_t N,
                                       int64_t K, float alpha, const float *A, int64_t lda,
                                       const float *B, int64_t ldb, float beta, float *C, int64_t ldc) {
    return higan__cu_gemm_batched(ctx, trans_a, trans_b, M, N, K, alpha, A, lda, 0, B, ldb, 0, beta,
                                  C, ldc, 0, 1);
}

/* ---- conv2d ------------------------------------------------------------------------------ */
static void higan__cu_conv_check(const higan_conv2d_shape *s) {
    HIGAN__CU_ASSERT(s->N >= 0 && s->IC > 0 && s->H > 0 && s->W > 0 && s->OC > 0 && s->KH > 0 && s->KW > 0);
    HIGAN__CU_ASSERT(s->stride_h > 0 && s->stride_w > 0);
    HIGAN__CU_ASSERT(s->pad_top >= 0 && s->pad_bottom >= 0 && s->pad_left >= 0 && s->pad_right >= 0);
    HIGAN__CU_ASSERT(s->H + s->pad_top + s->pad_bottom >= s->KH && s->W + s->pad_left + s->pad_right >= s->KW);
}
static int higan__cu_conv_pointwise(const higan_conv2d_shape *s) {
    return s->KH == 1 && s->KW == 1 && s->stride_h == 1 && s->stride_w == 1 && s->pad_top == 0 &&
           s->pad_bottom == 0 && s->pad_left == 0 && s->pad_right == 0;
}
/* Samples per im2col group: as many as fit in HIGAN_CUDA_CONV_SCRATCH_FLOATS, at least 1. */
static int64_t higan__cu_conv_group(const higan_conv2d_shape *s) {
    int64_t P = higan_conv2d_out_h(s) * higan_conv2d_out_w(s), KD = s->IC * s->KH * s->KW;
    int64_t ns = HIGAN_CUDA_CONV_SCRATCH_FLOATS / (KD * P);
    if (ns > s->N) ns = s->N;
    return ns < 1 ? 1 : ns;
}
HIGAN_DEF size_t higan_cuda_conv2d_scratch_bytes(const higan_conv2d_shape *s) {
    higan__cu_conv_check(s);
    if (higan__cu_conv_pointwise(s)) return 0;
    return (size_t)(higan__cu_conv_group(s) * s->IC * s->KH * s->KW * higan_conv2d_out_h(s) *
                    higan_conv2d_out_w(s)) * sizeof(float) + HIGAN__CU_ALIGN;
}
/* col [nb][KD][P] from x [nb][IC][H][W]: col[n][(ic*KH + kh)*KW + kw][oh*OW + ow] =
   x[n][ic][oh*sh - pad_top + kh][ow*sw - pad_left + kw], 0 outside. One thread per col value. */
struct higan__f_im2col {
    float *col; const float *x; higan_conv2d_shape s; int64_t OW, P, KD;
    HIGAN__CU_HD void operator()(int64_t i) const {
        int64_t n = i / (KD * P), r = i % (KD * P), kd = r / P, p = r % P;
        int64_t ic = kd / (s.KH * s.KW), kk = kd % (s.KH * s.KW), kh = kk / s.KW, kw = kk % s.KW;
        int64_t ih = (p / OW) * s.stride_h - s.pad_top + kh, iw = (p % OW) * s.stride_w - s.pad_left + kw;
        col[i] = (ih >= 0 && ih < s.H && iw >= 0 && iw < s.W)
                     ? x[((n * s.IC + ic) * s.H + ih) * s.W + iw] : 0.0f;
    }
};
/* dx [nb][IC][H][W] += col2im(dcol [nb][KD][P]): one thread per dx value gathers the
   (kh, kw) taps that read it (output pixel (oh, ow) with oh*sh - pad_top + kh == h). */
struct higan__f_col2im {
    float *dx; const float *dcol; higan_conv2d_shape s; int64_t OH, OW, P, KD;
    HIGAN__CU_HD void operator()(int64_t i) const {
        int64_t w = i % s.W, h = (i / s.W) % s.H, ic = (i / (s.W * s.H)) % s.IC, n = i / (s.W * s.H * s.IC);
        const float *dn = dcol + n * KD * P;
        float acc = 0.0f;
        int64_t kh, kw;
        for (kh = 0; kh < s.KH; ++kh) {
            int64_t th = h + s.pad_top - kh, oh;
            if (th < 0 || th % s.stride_h) continue;
            oh = th / s.stride_h;
            if (oh >= OH) continue;
            for (kw = 0; kw < s.KW; ++kw) {
                int64_t tw = w + s.pad_left - kw, ow;
                if (tw < 0 || tw % s.stride_w) continue;
                ow = tw / s.stride_w;
                if (ow >= OW) continue;
                acc += dn[((ic * s.KH + kh) * s.KW + kw) * P + oh * OW + ow];
            }
        }
        dx[i] += acc;
    }
};
/* y [N, C, P] = b[c] */
struct higan__f_fill_bias {
    float *y; const float *b; int64_t C, P;
    HIGAN__CU_HD void operator()(int64_t i) const { y[i] = b[(i / P) % C]; }
};
/* db[c] += sum over n, p of dy [N, C, P] (rows = C) */
struct higan__r_bias_grad {
    float *db; const float *dy; int64_t C, P;
    HIGAN__CU_HD double term(int64_t c, int64_t i) const { return (double)dy[((i / P) * C + c) * P + i % P]; }
    HIGAN__CU_HD void finish(int64_t c, double s) const { db[c] += (float)s; }
};

HIGAN_DEF higan_status higan_cuda_conv2d_forward(higan_cuda *ctx, float *y, const float *x, const float *w,
                                                 const float *b, const higan_conv2d_shape *s,
                                                 higan_cuda_arena *scratch) {
    int64_t P, KD, CHW, ns, n0;
    float beta = b ? 1.0f : 0.0f;
    higan__cu_conv_check(s);
    if (s->N == 0) return HIGAN_OK;
    P = higan_conv2d_out_h(s) * higan_conv2d_out_w(s);
    KD = s->IC * s->KH * s->KW;
    CHW = s->IC * s->H * s->W;
    if (b) {
        higan__f_fill_bias f;
        f.y = y; f.b = b; f.C = s->OC; f.P = P;
        HIGAN__CU_TRY(higan__cu_map(ctx, s->N * s->OC * P, f, "conv2d bias"));
    }
    if (higan__cu_conv_pointwise(s))   /* y_n [OC, P] = w [OC, IC] x_n [IC, P] */
        return higan__cu_gemm_batched(ctx, 0, 0, s->OC, P, KD, 1.0f, w, KD, 0, x, P, CHW, beta,
                                      y, P, s->OC * P, s->N);
    if (!scratch) return higan_set_error(HIGAN_ERR_ARG, "conv2d forward on the GPU needs a scratch arena");
    ns = higan__cu_conv_group(s);
    {
        size_t mark = higan_cuda_arena_mark(scratch);
        float *col = higan_cuda_arena_floats(scratch, ns * KD * P);
        higan_status st = HIGAN_OK;
        if (!col) return higan_cuda_arena_status(scratch);
        for (n0 = 0; n0 < s->N && st == HIGAN_OK; n0 += ns) {
            int64_t nb = s->N - n0 < ns ? s->N - n0 : ns;
            higan__f_im2col f;
            f.col = col; f.x = x + n0 * CHW; f.s = *s; f.OW = higan_conv2d_out_w(s); f.P = P; f.KD = KD;
            st = higan__cu_map(ctx, nb * KD * P, f, "conv2d im2col");
            if (st == HIGAN_OK)   /* y_n [OC, P] = w [OC, KD] col_n [KD, P] */
                st = higan__cu_gemm_batched(ctx, 0, 0, s->OC, P, KD, 1.0f, w, KD, 0, col, P, KD * P, beta,
                                            y + n0 * s->OC * P, P, s->OC * P, nb);
        }
        higan_cuda_arena_release(scratch, mark);
        return st;
    }
}

HIGAN_DEF higan_status higan_cuda_conv2d_backward(higan_cuda *ctx, float *dx, float *dw, float *db,
                                                  const float *dy, const float *x, const float *w,
                                                  const higan_conv2d_shape *s, higan_cuda_arena *scratch) {
    int64_t P, KD, CHW, ns, n0, i;
    size_t mark;
    float *col;
    higan_status st = HIGAN_OK;
    higan__cu_conv_check(s);
    if (s->N == 0) return HIGAN_OK;
    P = higan_conv2d_out_h(s) * higan_conv2d_out_w(s);
    KD = s->IC * s->KH * s->KW;
    CHW = s->IC * s->H * s->W;
    if (db) {
        higan__r_bias_grad r;
        r.db = db; r.dy = dy; r.C = s->OC; r.P = P;
        HIGAN__CU_TRY(higan__cu_rows(ctx, s->OC, s->N * P, r, "conv2d db"));
    }
    if (!dw && !dx) return HIGAN_OK;
    if (higan__cu_conv_pointwise(s)) {
        /* dw [OC, IC] += dy_n [OC, P] x_n^T; dx_n [IC, P] += w^T [IC, OC] dy_n */
        if (dw)
            for (i = 0; i < s->N; ++i)
                HIGAN__CU_TRY(higan__cu_gemm_batched(ctx, 0, 1, s->OC, KD, P, 1.0f, dy + i * s->OC * P, P, 0,
                                                     x + i * CHW, P, 0, 1.0f, dw, KD, 0, 1));
        if (dx)
            HIGAN__CU_TRY(higan__cu_gemm_batched(ctx, 1, 0, KD, P, s->OC, 1.0f, w, KD, 0, dy, P, s->OC * P,
                                                 1.0f, dx, P, CHW, s->N));
        return HIGAN_OK;
    }
    if (!scratch) return higan_set_error(HIGAN_ERR_ARG, "conv2d backward on the GPU needs a scratch arena");
    ns = higan__cu_conv_group(s);
    mark = higan_cuda_arena_mark(scratch);
    col = higan_cuda_arena_floats(scratch, ns * KD * P);
    if (!col) return higan_cuda_arena_status(scratch);
    /* dw [OC, KD] += dy_n [OC, P] col_n^T [P, KD], samples in order */
    for (n0 = 0; dw && n0 < s->N && st == HIGAN_OK; n0 += ns) {
        int64_t nb = s->N - n0 < ns ? s->N - n0 : ns;
        higan__f_im2col f;
        f.col = col; f.x = x + n0 * CHW; f.s = *s; f.OW = higan_conv2d_out_w(s); f.P = P; f.KD = KD;
        st = higan__cu_map(ctx, nb * KD * P, f, "conv2d im2col");
        for (i = 0; i < nb && st == HIGAN_OK; ++i)
            st = higan__cu_gemm_batched(ctx, 0, 1, s->OC, KD, P, 1.0f, dy + (n0 + i) * s->OC * P, P, 0,
                                        col + i * KD * P, P, 0, 1.0f, dw, KD, 0, 1);
    }
    /* dcol_n [KD, P] = w^T [KD, OC] dy_n [OC, P]; dx_n += col2im(dcol_n) */
    for (n0 = 0; dx && n0 < s->N && st == HIGAN_OK; n0 += ns) {
        int64_t nb = s->N - n0 < ns ? s->N - n0 : ns;
        st = higan__cu_gemm_batched(ctx, 1, 0, KD, P, s->OC, 1.0f, w, KD, 0, dy + n0 * s->OC * P, P,
                                    s->OC * P, 0.0f, col, P, KD * P, nb);
        if (st == HIGAN_OK) {
            higan__f_col2im f;
            f.dx = dx + n0 * CHW; f.dcol = col; f.s = *s; f.OH = higan_conv2d_out_h(s);
            f.OW = higan_conv2d_out_w(s); f.P = P; f.KD = KD;
            st = higan__cu_map(ctx, nb * CHW, f, "conv2d col2im");
        }
    }
    higan_cuda_arena_release(scratch, mark);
    return st;
}

/* ---- linear --------------------------------------------------------------------------- */
/* db[j] += sum over rows of dy [N, OUT], rows in order (the CPU's order), one thread per j */
struct higan__f_col_sum {
    float *db; const float *dy; int64_t N, OUT;
    HIGAN__CU_HD void operator()(int64_t j) const {
        float acc = db[j];
        int64_t r;
        for (r = 0; r < N; ++r) acc += dy[r * OUT + j];
        db[j] = acc;
    }
};
HIGAN_DEF higan_status higan_cuda_linear_forward(higan_cuda *ctx, float *y, const float *x, const float *w,
                                                 const float *b, int64_t N, int64_t IN, int64_t OUT) {
    if (b) {   /* rows start as the bias, then beta = 1 */
        higan__f_fill_bias f;
        f.y = y; f.b = b; f.C = OUT; f.P = 1;
        HIGAN__CU_TRY(higan__cu_map(ctx, N * OUT, f, "linear bias"));
    }
    return higan__cu_gemm_batched(ctx, 0, 1, N, OUT, IN, 1.0f, x, IN, 0, w, IN, 0, b ? 1.0f : 0.0f,
                                  y, OUT, 0, 1);
}
HIGAN_DEF higan_status higan_cuda_linear_backward(higan_cuda *ctx, float *dx, float *dw, float *db,
                                                  const float *dy, const float *x, const float *w,
                                                  int64_t N, int64_t IN, int64_t OUT) {
    if (dx) HIGAN__CU_TRY(higan_cuda_gemm(ctx, 0, 0, N, IN, OUT, 1.0f, dy, OUT, w, IN, 1.0f, dx, IN));
    if (dw) HIGAN__CU_TRY(higan_cuda_gemm(ctx, 1, 0, OUT, IN, N, 1.0f, dy, OUT, x, IN, 1.0f, dw, IN));
    if (db) {
        higan__f_col_sum f;
        f.db = db; f.dy = dy; f.N = N; f.OUT = OUT;
        HIGAN__CU_TRY(higan__cu_map(ctx, OUT, f, "linear db"));
    }
    return HIGAN_OK;
}

/* ==== NORMALISATION OPS (implementation) =================================================== */
/* ---- spectral norm: v = normalize(u0 W), u = normalize(W v), sigma = (W v) . u ------------ */
/* v [in] = u0 [out] . W [out, in]: one thread per column j, rows in order, double. */
struct higan__f_sn_v {
    float *v; const float *w, *u0; int64_t out, in;
    HIGAN__CU_HD void operator()(int64_t j) const {
        double acc = 0.0;
        int64_t i;
        for (i = 0; i < out; ++i) acc += (double)u0[i] * (double)w[i * in + j];
        v[j] = (float)acc;
    }
};
/* v /= max(||v||, eps) (F.normalize), one block. */
struct higan__b_sn_normalize {
    float *v; int64_t in; float eps;
    HIGAN__CU_HD void operator()(int64_t, double *sh, float *, float *) const {
        double nv = 0.0;
        float dv;
        int64_t j;
        for (j = HIGAN__TID; j < in; j += HIGAN__NTHR) nv += (double)v[j] * (double)v[j];
        nv = sqrt(higan__block_sum(nv, sh));   /* each thread rescales only its own v[j] */
        dv = (float)(nv > (double)eps ? nv : (double)eps);
        for (j = HIGAN__TID; j < in; j += HIGAN__NTHR) v[j] = v[j] / dv;
    }
};
/* t [out] = W v (into u), one block per row. */
struct higan__r_sn_t {
    float *u; const float *w, *v; int64_t in;
    HIGAN__CU_HD double term(int64_t i, int64_t j) const { return (double)w[i * in + j] * (double)v[j]; }
    HIGAN__CU_HD void finish(int64_t i, double s) const { u[i] = (float)s; }
};
/* u = t / max(||t||, eps); sigma = sum t * u (BigGAN's (v W^T) u^T), one block. */
struct higan__b_sn_finish {
    float *u, *sigma; int64_t out; float eps;
    HIGAN__CU_HD void operator()(int64_t, double *sh, float *, float *) const {
        double nt = 0.0, sg = 0.0;
        float dt;
        int64_t i;
        for (i = HIGAN__TID; i < out; i += HIGAN__NTHR) nt += (double)u[i] * (double)u[i];
        nt = sqrt(higan__block_sum(nt, sh));   /* every u[i] is read before any is written */
        dt = (float)(nt > (double)eps ? nt : (double)eps);
        for (i = HIGAN__TID; i < out; i += HIGAN__NTHR) {
            float ui = u[i] / dt;
            sg += (double)u[i] * (double)ui;
            u[i] = ui;
        }
        sg = higan__block_sum(sg, sh);
        if (HIGAN__TID == 0) sigma[0] = (float)sg;
    }
};
struct higan__f_div_scalar {   /* y = w / s[0] */
    float *y; const float *w, *s;
    HIGAN__CU_HD void operator()(int64_t i) const { y[i] = w[i] / s[0]; }
};
HIGAN_DEF higan_status higan_cuda_spectral_norm_forward(higan_cuda *ctx, float *y, float *u, float *v,
                                                        float *sigma, const float *w, const float *u0,
                                                        int64_t out, int64_t in, float eps) {
    higan__f_sn_v fv;
    higan__r_sn_t rt;
    higan__b_sn_normalize bn;
    higan__b_sn_finish bf;
    HIGAN__CU_ASSERT(out > 0 && in > 0 && u && v && sigma && w && u0);
    fv.v = v; fv.w = w; fv.u0 = u0; fv.out = out; fv.in = in;
    HIGAN__CU_TRY(higan__cu_map(ctx, in, fv, "spectral norm v"));
    bn.v = v; bn.in = in; bn.eps = eps;
    HIGAN__CU_TRY(higan__cu_blocks(ctx, 1, bn, 0, "spectral norm normalize v"));
    rt.u = u; rt.w = w; rt.v = v; rt.in = in;   /* u may alias u0: u0 is no longer read */
    HIGAN__CU_TRY(higan__cu_rows(ctx, out, in, rt, "spectral norm W v"));
    bf.u = u; bf.sigma = sigma; bf.out = out; bf.eps = eps;
    HIGAN__CU_TRY(higan__cu_blocks(ctx, 1, bf, 0, "spectral norm sigma"));
    if (y) {
        higan__f_div_scalar f;
        f.y = y; f.w = w; f.s = sigma;
        HIGAN__CU_TRY(higan__cu_map(ctx, out * in, f, "spectral norm W / sigma"));
    }
    return HIGAN_OK;
}
/* coef = sum(dy * w) / sigma^2 into ws[0] (rows == 1) */
struct higan__r_sn_coef {
    float *coef; const float *dy, *w, *sigma;
    HIGAN__CU_HD double term(int64_t, int64_t k) const { return (double)dy[k] * (double)w[k]; }
    HIGAN__CU_HD void finish(int64_t, double s) const { coef[0] = (float)(s / ((double)sigma[0] * (double)sigma[0])); }
};
/* dw += dy / sigma - coef * u[i] * v[j] */
struct higan__f_sn_bwd {
    float *dw; const float *dy, *u, *v, *sigma, *coef; int64_t in;
    HIGAN__CU_HD void operator()(int64_t k) const {
        float ci = coef[0] * u[k / in];
        dw[k] += dy[k] / sigma[0] - ci * v[k % in];
    }
};
HIGAN_DEF higan_status higan_cuda_spectral_norm_backward(higan_cuda *ctx, float *dw, const float *dy,
                                                         const float *w, const float *u, const float *v,
                                                         const float *sigma, int64_t out, int64_t in) {
    higan__r_sn_coef r;
    higan__f_sn_bwd f;
    if (!dw) return HIGAN_OK;
    r.coef = ctx->ws; r.dy = dy; r.w = w; r.sigma = sigma;
    HIGAN__CU_TRY(higan__cu_rows(ctx, 1, out * in, r, "spectral norm backward dot"));
    f.dw = dw; f.dy = dy; f.u = u; f.v = v; f.sigma = sigma; f.coef = ctx->ws; f.in = in;
    return higan__cu_map(ctx, out * in, f, "spectral norm backward");
}

/* ---- batch statistics, batch norm, conditional batch norm --------------------------------- */
/* One block per channel c: mean, biased variance in two passes (double), running update. */
struct higan__b_bn_stats {
    float *mean, *rstd, *running_mean, *running_var; const float *x; float momentum, eps; int64_t N, C, HW;
    HIGAN__CU_HD void operator()(int64_t c, double *sh, float *, float *) const {
        const int64_t M = N * HW;
        double s = 0.0, q = 0.0, m;
        int64_t i;
        for (i = HIGAN__TID; i < M; i += HIGAN__NTHR) s += (double)x[((i / HW) * C + c) * HW + i % HW];
        m = higan__block_sum(s, sh) / (double)M;
        for (i = HIGAN__TID; i < M; i += HIGAN__NTHR) {
            double d = (double)x[((i / HW) * C + c) * HW + i % HW] - m;
            q += d * d;
        }
        q = higan__block_sum(q, sh);
        if (HIGAN__TID == 0) {
            mean[c] = (float)m;
            rstd[c] = (float)(1.0 / sqrt(q / (double)M + (double)eps));
            if (running_mean)
                running_mean[c] = (float)((double)momentum * m + (1.0 - (double)momentum) * (double)running_mean[c]);
            if (running_var)
                running_var[c] = (float)((double)momentum * (q / (double)(M - 1)) +
                                         (1.0 - (double)momentum) * (double)running_var[c]);
        }
    }
};
struct higan__f_bn_fixed {   /* eval: the running statistics */
    float *mean, *rstd; const float *running_mean, *running_var; float eps;
    HIGAN__CU_HD void operator()(int64_t c) const {
        mean[c] = running_mean[c];
        rstd[c] = (float)(1.0 / sqrt((double)running_var[c] + (double)eps));
    }
};
HIGAN_DEF higan_status higan_cuda_batch_norm_stats(higan_cuda *ctx, float *mean, float *rstd,
                                                   float *running_mean, float *running_var,
                                                   const float *x, float momentum, float eps,
                                                   int batch_stats, int64_t N, int64_t C, int64_t HW) {
    if (!batch_stats) {
        higan__f_bn_fixed f;
        HIGAN__CU_ASSERT(running_mean != NULL && running_var != NULL);
        f.mean = mean; f.rstd = rstd; f.running_mean = running_mean; f.running_var = running_var; f.eps = eps;
        return higan__cu_map(ctx, C, f, "batch norm running stats");
    }
    HIGAN__CU_ASSERT(N * HW > 0);
    HIGAN__CU_ASSERT(N * HW > 1 || running_var == NULL);   /* unbiased variance needs 2 values */
    {
        higan__b_bn_stats f;
        f.mean = mean; f.rstd = rstd; f.running_mean = running_mean; f.running_var = running_var; f.x = x;
        f.momentum = momentum; f.eps = eps; f.N = N; f.C = C; f.HW = HW;
        return higan__cu_blocks(ctx, C, f, 0, "batch norm stats");
    }
}
/* y = (x - mean) * rstd * g + b per plane p = (n, c): g = scale_c[c] | 1 + gain_nc[p] | 1,
   b = shift_c[c] | shift_nc[p] | 0 (higan__norm_apply). */
struct higan__f_norm_apply {
    float *y; const float *x, *mean, *rstd, *scale_c, *shift_c, *gain_nc, *shift_nc; int64_t C, HW;
    HIGAN__CU_HD void operator()(int64_t i) const {
        int64_t p = i / HW, c = p % C;
        float g = scale_c ? scale_c[c] : gain_nc ? 1.0f + gain_nc[p] : 1.0f;
        float b = shift_c ? shift_c[c] : shift_nc ? shift_nc[p] : 0.0f;
        y[i] = (x[i] - mean[c]) * rstd[c] * g + b;
    }
};
static higan_status higan__cu_norm_apply(higan_cuda *ctx, float *y, const float *x, const float *mean,
                                         const float *rstd, const float *scale_c, const float *shift_c,
                                         const float *gain_nc, const float *shift_nc,
                                         int64_t N, int64_t C, int64_t HW) {
    higan__f_norm_apply f;
    f.y = y; f.x = x; f.mean = mean; f.rstd = rstd; f.scale_c = scale_c; f.shift_c = shift_c;
    f.gain_nc = gain_nc; f.shift_nc = shift_nc; f.C = C; f.HW = HW;
    return higan__cu_map(ctx, N * C * HW, f, "norm apply");
}
/* Backward of the above (+ through the batch statistics when batch_stats), one block per
   channel c, the CPU's math (higan__norm_backward):
     per plane: s = sum dy, sx = sum dy * x_hat  (-> dgain_nc / dshift_nc [N, C])
     dscale_c / dshift_c [C] += sum over planes; a = sum g s / M, b = sum g sx / M
     dx += rstd * (dy * g - a - x_hat * b)          (a = b = 0 with fixed statistics) */
struct higan__b_norm_backward {
    float *dx, *dscale_c, *dshift_c, *dgain_nc, *dshift_nc;
    const float *dy, *x, *mean, *rstd, *scale_c, *gain_nc;
    int batch_stats; int64_t N, C, HW;
    HIGAN__CU_HD void operator()(int64_t c, double *sh, float *ab, float *) const {
        const double M = (double)(N * HW);
        const float m = mean[c], r = rstd[c];
        double sum_g_dy = 0, sum_g_dyxh = 0, all_dy = 0, all_dyxh = 0;   /* thread 0's */
        int64_t nn, k;
        for (nn = 0; nn < N; ++nn) {
            const float *xp = x + (nn * C + c) * HW, *gp = dy + (nn * C + c) * HW;
            double s = 0, sx = 0, g;
            for (k = HIGAN__TID; k < HW; k += HIGAN__NTHR) {
                float xh = (xp[k] - m) * r;
                s += (double)gp[k];
                sx += (double)gp[k] * (double)xh;
            }
            s = higan__block_sum(s, sh);
            sx = higan__block_sum(sx, sh);
            if (HIGAN__TID == 0) {
                g = scale_c ? (double)scale_c[c] : gain_nc ? (double)(1.0f + gain_nc[nn * C + c]) : 1.0;
                if (dgain_nc) dgain_nc[nn * C + c] += (float)sx;
                if (dshift_nc) dshift_nc[nn * C + c] += (float)s;
                all_dy += s; all_dyxh += sx;
                sum_g_dy += g * s; sum_g_dyxh += g * sx;
            }
        }
        if (HIGAN__TID == 0) {   /* a, b for every thread through shared memory */
            if (dscale_c) dscale_c[c] += (float)all_dyxh;
            if (dshift_c) dshift_c[c] += (float)all_dy;
            ab[0] = batch_stats ? (float)(sum_g_dy / M) : 0.0f;
            ab[1] = batch_stats ? (float)(sum_g_dyxh / M) : 0.0f;
        }
        HIGAN__SYNC();
        if (dx) {
            const float a = ab[0], b = ab[1];
            for (k = HIGAN__TID; k < N * HW; k += HIGAN__NTHR) {
                int64_t n = k / HW, o = (n * C + c) * HW + k % HW;
                float g = scale_c ? scale_c[c] : gain_nc ? 1.0f + gain_nc[n * C + c] : 1.0f;
                float xh = (x[o] - m) * r;
                dx[o] += r * (dy[o] * g - a - xh * b);
            }
        }
    }
};
static higan_status higan__cu_norm_backward(higan_cuda *ctx, float *dx, float *dscale_c, float *dshift_c,
                                            float *dgain_nc, float *dshift_nc, const float *dy,
                                            const float *x, const float *mean, const float *rstd,
                                            const float *scale_c, const float *gain_nc, int batch_stats,
                                            int64_t N, int64_t C, int64_t HW) {
    higan__b_norm_backward f;
    if (C <= 0 || N * HW <= 0) return HIGAN_OK;
    f.dx = dx; f.dscale_c = dscale_c; f.dshift_c = dshift_c; f.dgain_nc = dgain_nc; f.dshift_nc = dshift_nc;
    f.dy = dy; f.x = x; f.mean = mean; f.rstd = rstd; f.scale_c = scale_c; f.gain_nc = gain_nc;
    f.batch_stats = batch_stats; f.N = N; f.C = C; f.HW = HW;
    return higan__cu_blocks(ctx, C, f, 0, "norm backward");
}
HIGAN_DEF higan_status higan_cuda_batch_norm2d_forward(higan_cuda *ctx, float *y, float *mean, float *rstd,
                                                       const float *x, const float *weight, const float *bias,
                                                       float *running_mean, float *running_var,
                                                       float momentum, float eps, int batch_stats,
                                                       int64_t N, int64_t C, int64_t HW) {
    HIGAN__CU_TRY(higan_cuda_batch_norm_stats(ctx, mean, rstd, running_mean, running_var, x, momentum, eps,
                                              batch_stats, N, C, HW));
    return higan__cu_norm_apply(ctx, y, x, mean, rstd, weight, bias, NULL, NULL, N, C, HW);
}
HIGAN_DEF higan_status higan_cuda_batch_norm2d_backward(higan_cuda *ctx, float *dx, float *dweight,
                                                        float *dbias, const float *dy, const float *x,
                                                        const float *mean, const float *rstd,
                                                        const float *weight, int batch_stats,
                                                        int64_t N, int64_t C, int64_t HW) {
    if (!dx && !dweight && !dbias) return HIGAN_OK;
    return higan__cu_norm_backward(ctx, dx, dweight, dbias, NULL, NULL, dy, x, mean, rstd, weight, NULL,
                                   batch_stats, N, C, HW);
}
HIGAN_DEF higan_status higan_cuda_cond_batch_norm_forward(higan_cuda *ctx, float *y, float *mean, float *rstd,
                                                          const float *x, const float *gain,
                                                          const float *bias, float *running_mean,
                                                          float *running_var, float momentum, float eps,
                                                          int batch_stats, int64_t N, int64_t C, int64_t HW) {
    HIGAN__CU_TRY(higan_cuda_batch_norm_stats(ctx, mean, rstd, running_mean, running_var, x, momentum, eps,
                                              batch_stats, N, C, HW));
    return higan__cu_norm_apply(ctx, y, x, mean, rstd, NULL, NULL, gain, bias, N, C, HW);
}
HIGAN_DEF higan_status higan_cuda_cond_batch_norm_backward(higan_cuda *ctx, float *dx, float *dgain,
                                                           float *dbias, const float *dy, const float *x,
                                                           const float *mean, const float *rstd,
                                                           const float *gain, int batch_stats,
                                                           int64_t N, int64_t C, int64_t HW) {
    if (!dx && !dgain && !dbias) return HIGAN_OK;
    return higan__cu_norm_backward(ctx, dx, NULL, NULL, dgain, dbias, dy, x, mean, rstd, NULL, gain,
                                   batch_stats, N, C, HW);
}

/* ---- embedding -------------------------------------------------------------------------- */
/* One block per looked-up position i; only the first occurrence of each row renormalises it
   (PyTorch's unique rows), so no two blocks write one row. */
struct higan__b_emb_renorm {
    float *weight; const int *idx; int64_t num, D; float max_norm;
    HIGAN__CU_HD void operator()(int64_t i, double *sh, float *, float *) const {
        const int r = idx[i];
        int first = r >= 0 && (int64_t)r < num;
        double nrm = 0.0, normf;
        float *row;
        int64_t j, k;
        for (j = 0; j < i && first; ++j) if (idx[j] == r) first = 0;
        if (!first) return;   /* uniform over the block: no barrier is skipped by part of it */
        row = weight + (int64_t)r * D;
        for (k = HIGAN__TID; k < D; k += HIGAN__NTHR) nrm += (double)row[k] * (double)row[k];
        nrm = higan__block_sum(nrm, sh);
        normf = (double)(float)sqrt(nrm);   /* PyTorch takes the float norm as a double */
        if (normf > (double)max_norm) {
            float scale = (float)((double)max_norm / (normf + 1e-7));
            for (k = HIGAN__TID; k < D; k += HIGAN__NTHR) row[k] *= scale;
        }
    }
};
HIGAN_DEF higan_status higan_cuda_embedding_renorm(higan_cuda *ctx, float *weight, const int *idx,
                                                   int64_t n_idx, int64_t num, int64_t D, float max_norm) {
    higan__b_emb_renorm f;
    f.weight = weight; f.idx = idx; f.num = num; f.D = D; f.max_norm = max_norm;
    return higan__cu_blocks(ctx, n_idx, f, 0, "embedding renorm");
}
struct higan__f_emb_fwd {   /* y [n_idx, D] = weight[idx[i]] (NaN for a bad index) */
    float *y; const float *weight; const int *idx; int64_t num, D;
    HIGAN__CU_HD void operator()(int64_t k) const {
        int r = idx[k / D];
        y[k] = (r >= 0 && (int64_t)r < num) ? weight[(int64_t)r * D + k % D] : NAN;
    }
};
HIGAN_DEF higan_status higan_cuda_embedding_forward(higan_cuda *ctx, float *y, const float *weight,
                                                    const int *idx, int64_t n_idx, int64_t num, int64_t D) {
    higan__f_emb_fwd f;
    f.y = y; f.weight = weight; f.idx = idx; f.num = num; f.D = D;
    return higan__cu_map(ctx, n_idx * D, f, "embedding forward");
}
/* dweight[r, k] += dy[i, k] for every i with idx[i] == r (i in order, as the CPU's serial
   loop: the same float sums), one thread per (r, k); the padding row gets nothing. */
struct higan__f_emb_bwd {
    float *dweight; const float *dy; const int *idx; int64_t n_idx, D; int padding_idx;
    HIGAN__CU_HD void operator()(int64_t q) const {
        const int64_t r = q / D, k = q % D;
        float acc;
        int64_t i;
        int hit = 0;
        if (padding_idx >= 0 && r == (int64_t)padding_idx) return;
        acc = dweight[q];
        for (i = 0; i < n_idx; ++i)
            if ((int64_t)idx[i] == r) { acc += dy[i * D + k]; hit = 1; }
        if (hit) dweight[q] = acc;
    }
};
HIGAN_DEF higan_status higan_cuda_embedding_backward(higan_cuda *ctx, float *dweight, const float *dy,
                                                     const int *idx, int64_t n_idx, int64_t num,
                                                     int64_t D, int padding_idx) {
    higan__f_emb_bwd f;
    if (!dweight) return HIGAN_OK;
    f.dweight = dweight; f.dy = dy; f.idx = idx; f.n_idx = n_idx; f.D = D; f.padding_idx = padding_idx;
    return higan__cu_map(ctx, num * D, f, "embedding backward");
}

/* ==== SHAPE, POOLING, PADDING, ACTIVATION AND ELEMENTWISE OPS (implementation) ============= */
/* One thread per output value; backward kernels gather (one thread per dx value) so that
   nothing needs atomics and sums run in the CPU's order where it matters. */

/* ---- nearest upsampling: x [N,C,H,W] -> y [N,C,H*sh,W*sw] ---- */
struct higan__f_up_fwd {
    float *y; const float *x; int64_t H, W; int sh, sw;
    HIGAN__CU_HD void operator()(int64_t i) const {
        int64_t Wo = W * sw, HWo = H * sh * Wo, p = i / HWo, r = i % HWo;
        y[i] = x[p * H * W + (r / Wo / sh) * W + (r % Wo) / sw];
    }
};
/* dx[h, w] += block sum of dy, rows a then columns b (the CPU's order) */
struct higan__f_up_bwd {
    float *dx; const float *dy; int64_t H, W; int sh, sw;
    HIGAN__CU_HD void operator()(int64_t i) const {
        int64_t p = i / (H * W), h = (i / W) % H, w = i % W, Wo = W * sw;
        const float *gp = dy + p * H * sh * Wo;
        float s = 0.0f;
        int a, b;
        for (a = 0; a < sh; ++a)
            for (b = 0; b < sw; ++b) s += gp[(h * sh + a) * Wo + w * sw + b];
        dx[i] += s;
    }
};
HIGAN_DEF higan_status higan_cuda_upsample_nearest_forward(higan_cuda *ctx, float *y, const float *x,
                                                           int64_t N, int64_t C, int64_t H, int64_t W,
                                                           int sh, int sw) {
    higan__f_up_fwd f;
    HIGAN__CU_ASSERT(sh >= 1 && sw >= 1);
    f.y = y; f.x = x; f.H = H; f.W = W; f.sh = sh; f.sw = sw;
    return higan__cu_map(ctx, N * C * H * sh * W * sw, f, "upsample forward");
}
HIGAN_DEF higan_status higan_cuda_upsample_nearest_backward(higan_cuda *ctx, float *dx, const float *dy,
                                                            int64_t N, int64_t C, int64_t H, int64_t W,
                                                            int sh, int sw) {
    higan__f_up_bwd f;
    if (!dx) return HIGAN_OK;
    HIGAN__CU_ASSERT(sh >= 1 && sw >= 1);
    f.dx = dx; f.dy = dy; f.H = H; f.W = W; f.sh = sh; f.sw = sw;
    return higan__cu_map(ctx, N * C * H * W, f, "upsample backward");
}

/* ---- 2x2 average pooling, stride 2 ---- */
struct higan__f_avg_fwd {
    float *y; const float *x; int64_t H, W;
    HIGAN__CU_HD void operator()(int64_t i) const {
        int64_t Ho = H / 2, Wo = W / 2, p = i / (Ho * Wo), h = (i / Wo) % Ho, w = i % Wo;
        const float *q = x + p * H * W + 2 * h * W + 2 * w;
        y[i] = (((q[0] + q[1]) + q[W]) + q[W + 1]) / 4.0f;   /* PyTorch's order, as the CPU */
    }
};
struct higan__f_avg_bwd {   /* windows do not overlap: each thread owns 4 dx values */
    float *dx; const float *dy; int64_t H, W;
    HIGAN__CU_HD void operator()(int64_t i) const {
        int64_t Ho = H / 2, Wo = W / 2, p = i / (Ho * Wo), h = (i / Wo) % Ho, w = i % Wo;
        float g = dy[i] / 4.0f;
        float *q = dx + p * H * W + 2 * h * W + 2 * w;
        q[0] += g; q[1] += g; q[W] += g; q[W + 1] += g;
    }
};
HIGAN_DEF higan_status higan_cuda_avg_pool2_forward(higan_cuda *ctx, float *y, const float *x, int64_t N,
                                                    int64_t C, int64_t H, int64_t W) {
    higan__f_avg_fwd f;
    f.y = y; f.x = x; f.H = H; f.W = W;
    return higan__cu_map(ctx, N * C * (H / 2) * (W / 2), f, "avg pool forward");
}
HIGAN_DEF higan_status higan_cuda_avg_pool2_backward(higan_cuda *ctx, float *dx, const float *dy, int64_t N,
                                                     int64_t C, int64_t H, int64_t W) {
    higan__f_avg_bwd f;
    if (!dx) return HIGAN_OK;
    f.dx = dx; f.dy = dy; f.H = H; f.W = W;
    return higan__cu_map(ctx, N * C * (H / 2) * (W / 2), f, "avg pool backward");
}

/* ---- 3x3 max pooling, stride 2 ---- */
struct higan__f_max_fwd {
    float *y; int32_t *argmax; const float *x; int64_t H, W;
    HIGAN__CU_HD void operator()(int64_t o) const {
        int64_t Ho = (H - 3) / 2 + 1, Wo = (W - 3) / 2 + 1, p = o / (Ho * Wo), h = (o / Wo) % Ho, w = o % Wo;
        const float *xp = x + p * H * W;
        int64_t best = 2 * h * W + 2 * w, k;
        float m = xp[best];
        int i, j;
        for (i = 0; i < 3; ++i)   /* PyTorch's scan: a strictly larger value or a NaN wins */
            for (j = 0; j < 3; ++j) {
                float v;
                k = (2 * h + i) * W + 2 * w + j;
                v = xp[k];
                if (v > m || v != v) { m = v; best = k; }
            }
        y[o] = m;
        if (argmax) argmax[o] = (int32_t)best;
    }
};
/* dx[h, w] += dy of every window whose argmax is (h, w): the windows (oh, ow) covering it,
   in increasing output order (the CPU's order), at most 2 x 2 of them. */
struct higan__f_max_bwd {
    float *dx; const float *dy; const int32_t *argmax; int64_t H, W;
    HIGAN__CU_HD void operator()(int64_t i) const {
        int64_t Ho = (H - 3) / 2 + 1, Wo = (W - 3) / 2 + 1, p = i / (H * W), q = i % (H * W);
        int64_t h = q / W, w = q % W, oh, ow;
        int64_t oh0 = h >= 2 ? (h - 1) / 2 : 0, ow0 = w >= 2 ? (w - 1) / 2 : 0;
        int64_t oh1 = h / 2 < Ho - 1 ? h / 2 : Ho - 1, ow1 = w / 2 < Wo - 1 ? w / 2 : Wo - 1;
        const float *gp = dy + p * Ho * Wo;
        const int32_t *ap = argmax + p * Ho * Wo;
        float acc = dx[i];
        int hit = 0;
        for (oh = oh0; oh <= oh1; ++oh)
            for (ow = ow0; ow <= ow1; ++ow)
                if ((int64_t)ap[oh * Wo + ow] == q) { acc += gp[oh * Wo + ow]; hit = 1; }
        if (hit) dx[i] = acc;
    }
};
HIGAN_DEF higan_status higan_cuda_max_pool3s2_forward(higan_cuda *ctx, float *y, int32_t *argmax,
                                                      const float *x, int64_t N, int64_t C, int64_t H,
                                                      int64_t W) {
    higan__f_max_fwd f;
    HIGAN__CU_ASSERT(H >= 3 && W >= 3 && H * W <= INT32_MAX);
    f.y = y; f.argmax = argmax; f.x = x; f.H = H; f.W = W;
    return higan__cu_map(ctx, N * C * ((H - 3) / 2 + 1) * ((W - 3) / 2 + 1), f, "max pool forward");
}
HIGAN_DEF higan_status higan_cuda_max_pool3s2_backward(higan_cuda *ctx, float *dx, const float *dy,
                                                       const int32_t *argmax, int64_t N, int64_t C,
                                                       int64_t H, int64_t W) {
    higan__f_max_bwd f;
    if (!dx) return HIGAN_OK;
    HIGAN__CU_ASSERT(H >= 3 && W >= 3);
    f.dx = dx; f.dy = dy; f.argmax = argmax; f.H = H; f.W = W;
    return higan__cu_map(ctx, N * C * H * W, f, "max pool backward");
}

/* ---- constant padding (top, bottom, left, right); negative amounts crop ---- */
struct higan__f_pad_fwd {
    float *y; const float *x; int64_t H, W, Ho, Wo; int top, left; float value;
    HIGAN__CU_HD void operator()(int64_t i) const {
        int64_t p = i / (Ho * Wo), h = (i / Wo) % Ho - top, w = i % Wo - left;
        y[i] = (h >= 0 && h < H && w >= 0 && w < W) ? x[(p * H + h) * W + w] : value;
    }
};
struct higan__f_pad_bwd {   /* dx[h, w] += dy[h + top, w + left] when that is inside dy */
    float *dx; const float *dy; int64_t H, W, Ho, Wo; int top, left;
    HIGAN__CU_HD void operator()(int64_t i) const {
        int64_t p = i / (H * W), h = (i / W) % H + top, w = i % W + left;
        if (h >= 0 && h < Ho && w >= 0 && w < Wo) dx[i] += dy[(p * Ho + h) * Wo + w];
    }
};
HIGAN_DEF higan_status higan_cuda_pad_forward(higan_cuda *ctx, float *y, const float *x, int64_t N, int64_t C,
                                              int64_t H, int64_t W, int top, int bottom, int left,
                                              int right, float value) {
    higan__f_pad_fwd f;
    f.y = y; f.x = x; f.H = H; f.W = W; f.Ho = H + top + bottom; f.Wo = W + left + right;
    f.top = top; f.left = left; f.value = value;
    HIGAN__CU_ASSERT(f.Ho >= 0 && f.Wo >= 0);
    return higan__cu_map(ctx, N * C * f.Ho * f.Wo, f, "pad forward");
}
HIGAN_DEF higan_status higan_cuda_pad_backward(higan_cuda *ctx, float *dx, const float *dy, int64_t N,
                                               int64_t C, int64_t H, int64_t W, int top, int bottom,
                                               int left, int right) {
    higan__f_pad_bwd f;
    if (!dx) return HIGAN_OK;
    f.dx = dx; f.dy = dy; f.H = H; f.W = W; f.Ho = H + top + bottom; f.Wo = W + left + right;
    f.top = top; f.left = left;
    HIGAN__CU_ASSERT(f.Ho >= 0 && f.Wo >= 0);
    return higan__cu_map(ctx, N * C * H * W, f, "pad backward");
}

/* ---- activations ---- */
enum { HIGAN__ACT_RELU, HIGAN__ACT_LEAKY, HIGAN__ACT_TANH, HIGAN__ACT_SIGMOID, HIGAN__ACT_EXP };
struct higan__f_act_fwd {
    float *y; const float *x; float slope; int kind;
    HIGAN__CU_HD void operator()(int64_t i) const {
        float v = x[i];
        switch (kind) {
        case HIGAN__ACT_RELU: y[i] = v > 0.0f ? v : (v != v ? v : 0.0f); break;   /* NaN stays */
        case HIGAN__ACT_LEAKY: y[i] = v > 0.0f ? v : v * slope; break;
        case HIGAN__ACT_TANH: y[i] = tanhf(v); break;
        case HIGAN__ACT_SIGMOID: y[i] = 1.0f / (1.0f + expf(-v)); break;
        default: y[i] = expf(v); break;
        }
    }
};
/* relu / leaky take x; tanh / sigmoid / exp take y */
struct higan__f_act_bwd {
    float *dx; const float *dy, *xy; float slope; int kind;
    HIGAN__CU_HD void operator()(int64_t i) const {
        float v = xy[i], g = dy[i];
        switch (kind) {
        case HIGAN__ACT_RELU: if (v > 0.0f) dx[i] += g; break;
        case HIGAN__ACT_LEAKY: dx[i] += v > 0.0f ? g : g * slope; break;
        case HIGAN__ACT_TANH: dx[i] += g * (1.0f - v * v); break;
        case HIGAN__ACT_SIGMOID: dx[i] += g * (v * (1.0f - v)); break;
        default: dx[i] += g * v; break;
        }
    }
};
static higan_status higan__cu_act_fwd(higan_cuda *ctx, float *y, const float *x, float slope, int kind, int64_t n) {
    higan__f_act_fwd f;
    f.y = y; f.x = x; f.slope = slope; f.kind = kind;
    return higan__cu_map(ctx, n, f, "activation forward");
}
static higan_status higan__cu_act_bwd(higan_cuda *ctx, float *dx, const float *dy, const float *xy, float slope,
                                      int kind, int64_t n) {
    higan__f_act_bwd f;
    if (!dx) return HIGAN_OK;
    f.dx = dx; f.dy = dy; f.xy = xy; f.slope = slope; f.kind = kind;
    return higan__cu_map(ctx, n, f, "activation backward");
}
HIGAN_DEF higan_status higan_cuda_relu_forward(higan_cuda *ctx, float *y, const float *x, int64_t n) {
    return higan__cu_act_fwd(ctx, y, x, 0.0f, HIGAN__ACT_RELU, n);
}
HIGAN_DEF higan_status higan_cuda_relu_backward(higan_cuda *ctx, float *dx, const float *dy, const float *x, int64_t n) {
    return higan__cu_act_bwd(ctx, dx, dy, x, 0.0f, HIGAN__ACT_RELU, n);
}
HIGAN_DEF higan_status higan_cuda_leaky_relu_forward(higan_cuda *ctx, float *y, const float *x, float slope,
                                                     int64_t n) {
    return higan__cu_act_fwd(ctx, y, x, slope, HIGAN__ACT_LEAKY, n);
}
HIGAN_DEF higan_status higan_cuda_leaky_relu_backward(higan_cuda *ctx, float *dx, const float *dy,
                                                      const float *x, float slope, int64_t n) {
    return higan__cu_act_bwd(ctx, dx, dy, x, slope, HIGAN__ACT_LEAKY, n);
}
HIGAN_DEF higan_status higan_cuda_tanh_forward(higan_cuda *ctx, float *y, const float *x, int64_t n) {
    return higan__cu_act_fwd(ctx, y, x, 0.0f, HIGAN__ACT_TANH, n);
}
HIGAN_DEF higan_status higan_cuda_tanh_backward(higan_cuda *ctx, float *dx, const float *dy, const float *y,
                                                int64_t n) {
    return higan__cu_act_bwd(ctx, dx, dy, y, 0.0f, HIGAN__ACT_TANH, n);
}
HIGAN_DEF higan_status higan_cuda_sigmoid_forward(higan_cuda *ctx, float *y, const float *x, int64_t n) {
    return higan__cu_act_fwd(ctx, y, x, 0.0f, HIGAN__ACT_SIGMOID, n);
}
HIGAN_DEF higan_status higan_cuda_sigmoid_backward(higan_cuda *ctx, float *dx, const float *dy, const float *y,
                                                   int64_t n) {
    return higan__cu_act_bwd(ctx, dx, dy, y, 0.0f, HIGAN__ACT_SIGMOID, n);
}
HIGAN_DEF higan_status higan_cuda_exp_forward(higan_cuda *ctx, float *y, const float *x, int64_t n) {
    return higan__cu_act_fwd(ctx, y, x, 0.0f, HIGAN__ACT_EXP, n);
}
HIGAN_DEF higan_status higan_cuda_exp_backward(higan_cuda *ctx, float *dx, const float *dy, const float *y,
                                               int64_t n) {
    return higan__cu_act_bwd(ctx, dx, dy, y, 0.0f, HIGAN__ACT_EXP, n);
}

/* ---- concat / slice: [outer, size, inner] views ---- */
/* dst[o, dstart + k] (row length dsize*inner) op= src[o, sstart + k] (row length ssize*inner)
   for k < len*inner: the one copy kernel behind concat, slice and their backwards. */
struct higan__f_block_copy {
    float *dst; const float *src; int64_t dsize, dstart, ssize, sstart, len, inner; int add;
    HIGAN__CU_HD void operator()(int64_t i) const {
        int64_t row = len * inner, o = i / row, k = i % row;
        float v = src[(o * ssize + sstart) * inner + k];
        float *d = dst + (o * dsize + dstart) * inner + k;
        if (add) *d += v; else *d = v;
    }
};
static higan_status higan__cu_block_copy(higan_cuda *ctx, float *dst, int64_t dsize, int64_t dstart,
                                         const float *src, int64_t ssize, int64_t sstart, int64_t outer,
                                         int64_t len, int64_t inner, int add) {
    higan__f_block_copy f;
    f.dst = dst; f.src = src; f.dsize = dsize; f.dstart = dstart; f.ssize = ssize; f.sstart = sstart;
    f.len = len; f.inner = inner; f.add = add;
    return higan__cu_map(ctx, outer * len * inner, f, "block copy");
}
HIGAN_DEF higan_status higan_cuda_concat_forward(higan_cuda *ctx, float *y, const float *const *xs,
                                                 const int64_t *sizes, int n, int64_t outer, int64_t inner) {
    int64_t S = 0, off = 0;
    int i;
    for (i = 0; i < n; ++i) S += sizes[i];
    for (i = 0; i < n; ++i) {
        HIGAN__CU_TRY(higan__cu_block_copy(ctx, y, S, off, xs[i], sizes[i], 0, outer, sizes[i], inner, 0));
        off += sizes[i];
    }
    return HIGAN_OK;
}
HIGAN_DEF higan_status higan_cuda_concat_backward(higan_cuda *ctx, float *const *dxs, const float *dy,
                                                  const int64_t *sizes, int n, int64_t outer, int64_t inner) {
    int64_t S = 0, off = 0;
    int i;
    for (i = 0; i < n; ++i) S += sizes[i];
    for (i = 0; i < n; ++i) {
        if (dxs[i]) HIGAN__CU_TRY(higan__cu_block_copy(ctx, dxs[i], sizes[i], 0, dy, S, off, outer, sizes[i], inner, 1));
        off += sizes[i];
    }
    return HIGAN_OK;
}
HIGAN_DEF higan_status higan_cuda_slice_forward(higan_cuda *ctx, float *y, const float *x, int64_t outer,
                                                int64_t size, int64_t inner, int64_t start, int64_t len) {
    HIGAN__CU_ASSERT(start >= 0 && len >= 0 && start + len <= size);
    return higan__cu_block_copy(ctx, y, len, 0, x, size, start, outer, len, inner, 0);
}
HIGAN_DEF higan_status higan_cuda_slice_backward(higan_cuda *ctx, float *dx, const float *dy, int64_t outer,
                                                 int64_t size, int64_t inner, int64_t start, int64_t len) {
    if (!dx) return HIGAN_OK;
    HIGAN__CU_ASSERT(start >= 0 && len >= 0 && start + len <= size);
    return higan__cu_block_copy(ctx, dx, size, start, dy, len, 0, outer, len, inner, 1);
}

/* ---- permute (copy), up to 4 dims ---- */
/* Output sizes ys and input strides xs per output dim, padded in front to 4 dims. */
static void higan__cu_permute_setup(int ndim, const int64_t *shape, const int *perm, int64_t ys[4], int64_t xs[4]) {
    int64_t st[4];
    int d, seen = 0;
    HIGAN__CU_ASSERT(ndim >= 1 && ndim <= 4);
    st[ndim - 1] = 1;
    for (d = ndim - 2; d >= 0; --d) st[d] = st[d + 1] * shape[d + 1];
    for (d = 0; d < ndim; ++d) {
        HIGAN__CU_ASSERT(perm[d] >= 0 && perm[d] < ndim && !(seen & (1 << perm[d])) && "not a permutation");
        seen |= 1 << perm[d];
    }
    for (d = 0; d < 4; ++d) {
        int k = d - (4 - ndim);
        ys[d] = k < 0 ? 1 : shape[perm[k]];
        xs[d] = k < 0 ? 0 : st[perm[k]];
    }
}
struct higan__f_permute {   /* y[i] = x[...] or, backward, dx[...] += dy[i] (a bijection) */
    float *dst; const float *src; int64_t ys[4], xs[4]; int backward;
    HIGAN__CU_HD void operator()(int64_t i) const {
        int64_t r = i, i3 = r % ys[3], i2, i1, i0, o;
        r /= ys[3]; i2 = r % ys[2]; r /= ys[2]; i1 = r % ys[1]; i0 = r / ys[1];
        o = i0 * xs[0] + i1 * xs[1] + i2 * xs[2] + i3 * xs[3];
        if (backward) dst[o] += src[i]; else dst[i] = src[o];
    }
};
static higan_status higan__cu_permute(higan_cuda *ctx, float *dst, const float *src, int ndim,
                                      const int64_t *shape, const int *perm, int backward) {
    higan__f_permute f;
    int d;
    higan__cu_permute_setup(ndim, shape, perm, f.ys, f.xs);
    f.dst = dst; f.src = src; f.backward = backward;
    {
        int64_t n = 1;
        for (d = 0; d < 4; ++d) n *= f.ys[d];
        return higan__cu_map(ctx, n, f, "permute");
    }
}
HIGAN_DEF higan_status higan_cuda_permute_forward(higan_cuda *ctx, float *y, const float *x, int ndim,
                                                  const int64_t *shape, const int *perm) {
    return higan__cu_permute(ctx, y, x, ndim, shape, perm, 0);
}
HIGAN_DEF higan_status higan_cuda_permute_backward(higan_cuda *ctx, float *dx, const float *dy, int ndim,
                                                   const int64_t *shape, const int *perm) {
    if (!dx) return HIGAN_OK;
    return higan__cu_permute(ctx, dx, dy, ndim, shape, perm, 1);
}

/* ---- masked width reductions: x [N,C,H,W] -> y [N,C] over h and w < lens[n] ---- */
static HIGAN__CU_HD int64_t higan__cu_valid_cols(int len, int64_t W) {
    return len < 0 ? 0 : ((int64_t)len < W ? (int64_t)len : W);
}
struct higan__r_masked_width {   /* rows p = (n, c), terms over H*W */
    float *y; const float *x; const int *lens; int64_t C, H, W; float eps; int mean;
    HIGAN__CU_HD double term(int64_t p, int64_t i) const {
        return (i % W) < higan__cu_valid_cols(lens[p / C], W) ? (double)x[p * H * W + i] : 0.0;
    }
    HIGAN__CU_HD void finish(int64_t p, double s) const {
        int len = lens[p / C];
        y[p] = mean ? (float)s / ((float)(H * (int64_t)len) + eps) : (float)s;
    }
};
struct higan__f_masked_width_bwd {
    float *dx; const float *dy; const int *lens; int64_t C, H, W; float eps; int mean;
    HIGAN__CU_HD void operator()(int64_t i) const {
        int64_t p = i / (H * W);
        int len = lens[p / C];
        if ((i % W) < higan__cu_valid_cols(len, W))
            dx[i] += mean ? dy[p] / ((float)(H * (int64_t)len) + eps) : dy[p];
    }
};
static higan_status higan__cu_masked_width(higan_cuda *ctx, float *y, const float *x, const int *lens,
                                           int64_t N, int64_t C, int64_t H, int64_t W, float eps, int mean) {
    higan__r_masked_width r;
    r.y = y; r.x = x; r.lens = lens; r.C = C; r.H = H; r.W = W; r.eps = eps; r.mean = mean;
    return higan__cu_rows(ctx, N * C, H * W, r, "masked width forward");
}
static higan_status higan__cu_masked_width_bwd(higan_cuda *ctx, float *dx, const float *dy, const int *lens,
                                               int64_t N, int64_t C, int64_t H, int64_t W, float eps, int mean) {
    higan__f_masked_width_bwd f;
    if (!dx) return HIGAN_OK;
    f.dx = dx; f.dy = dy; f.lens = lens; f.C = C; f.H = H; f.W = W; f.eps = eps; f.mean = mean;
    return higan__cu_map(ctx, N * C * H * W, f, "masked width backward");
}
HIGAN_DEF higan_status higan_cuda_masked_sum_width_forward(higan_cuda *ctx, float *y, const float *x,
                                                           const int *lens, int64_t N, int64_t C,
                                                           int64_t H, int64_t W) {
    return higan__cu_masked_width(ctx, y, x, lens, N, C, H, W, 0.0f, 0);
}
HIGAN_DEF higan_status higan_cuda_masked_sum_width_backward(higan_cuda *ctx, float *dx, const float *dy,
                                                            const int *lens, int64_t N, int64_t C,
                                                            int64_t H, int64_t W) {
    return higan__cu_masked_width_bwd(ctx, dx, dy, lens, N, C, H, W, 0.0f, 0);
}
HIGAN_DEF higan_status higan_cuda_masked_mean_width_forward(higan_cuda *ctx, float *y, const float *x,
                                                            const int *lens, int64_t N, int64_t C,
                                                            int64_t H, int64_t W, float eps) {
    return higan__cu_masked_width(ctx, y, x, lens, N, C, H, W, eps, 1);
}
HIGAN_DEF higan_status higan_cuda_masked_mean_width_backward(higan_cuda *ctx, float *dx, const float *dy,
                                                             const int *lens, int64_t N, int64_t C,
                                                             int64_t H, int64_t W, float eps) {
    return higan__cu_masked_width_bwd(ctx, dx, dy, lens, N, C, H, W, eps, 1);
}

/* ---- log-softmax over the last dim: one block per row ---- */
struct higan__b_log_softmax_fwd {
    float *y; const float *x; int64_t cols;
    HIGAN__CU_HD void operator()(int64_t r, double *sh, float *shf, float *) const {
        const float *xr = x + r * cols;
        float *yr = y + r * cols, m = -INFINITY, lse;
        double s = 0.0;
        int64_t j;
        for (j = HIGAN__TID; j < cols; j += HIGAN__NTHR) if (xr[j] > m) m = xr[j];
        m = higan__block_max(m, shf);
        for (j = HIGAN__TID; j < cols; j += HIGAN__NTHR) s += exp((double)(xr[j] - m));
        lse = (float)log(higan__block_sum(s, sh));
        for (j = HIGAN__TID; j < cols; j += HIGAN__NTHR) yr[j] = xr[j] - m - lse;
    }
};
/* dx += dy - exp(y) * sum(dy) per row */
struct higan__b_log_softmax_bwd {
    float *dx; const float *dy, *y; int64_t cols;
    HIGAN__CU_HD void operator()(int64_t r, double *sh, float *, float *) const {
        const float *gr = dy + r * cols, *yr = y + r * cols;
        float *dr = dx + r * cols, gs;
        double s = 0.0;
        int64_t j;
        for (j = HIGAN__TID; j < cols; j += HIGAN__NTHR) s += (double)gr[j];
        gs = (float)higan__block_sum(s, sh);
        for (j = HIGAN__TID; j < cols; j += HIGAN__NTHR) dr[j] += gr[j] - expf(yr[j]) * gs;
    }
};
HIGAN_DEF higan_status higan_cuda_log_softmax_forward(higan_cuda *ctx, float *y, const float *x, int64_t rows,
                                                      int64_t cols) {
    higan__b_log_softmax_fwd f;
    HIGAN__CU_ASSERT(cols >= 1);
    f.y = y; f.x = x; f.cols = cols;
    return higan__cu_blocks(ctx, rows, f, 0, "log_softmax forward");
}
HIGAN_DEF higan_status higan_cuda_log_softmax_backward(higan_cuda *ctx, float *dx, const float *dy,
                                                       const float *y, int64_t rows, int64_t cols) {
    higan__b_log_softmax_bwd f;
    if (!dx) return HIGAN_OK;
    f.dx = dx; f.dy = dy; f.y = y; f.cols = cols;
    return higan__cu_blocks(ctx, rows, f, 0, "log_softmax backward");
}

/* ---- elementwise helpers ---- */
enum { HIGAN__BIN_ADD, HIGAN__BIN_SUB, HIGAN__BIN_MUL };
struct higan__f_binary {
    float *y; const float *a, *b; int op;
    HIGAN__CU_HD void operator()(int64_t i) const {
        y[i] = op == HIGAN__BIN_ADD ? a[i] + b[i] : op == HIGAN__BIN_SUB ? a[i] - b[i] : a[i] * b[i];
    }
};
/* d += s * g  (s = +1 / -1: exact adds) or d += g * m[i] (m != NULL) */
struct higan__f_axpy {
    float *d; const float *g, *m; float s;
    HIGAN__CU_HD void operator()(int64_t i) const {
        if (m) d[i] += g[i] * m[i];
        else if (s == 1.0f) d[i] += g[i];
        else if (s == -1.0f) d[i] -= g[i];
        else d[i] += g[i] * s;
    }
};
static higan_status higan__cu_binary(higan_cuda *ctx, float *y, const float *a, const float *b, int op, int64_t n) {
    higan__f_binary f;
    f.y = y; f.a = a; f.b = b; f.op = op;
    return higan__cu_map(ctx, n, f, "elementwise forward");
}
static higan_status higan__cu_axpy(higan_cuda *ctx, float *d, const float *g, const float *m, float s, int64_t n) {
    higan__f_axpy f;
    if (!d) return HIGAN_OK;
    f.d = d; f.g = g; f.m = m; f.s = s;
    return higan__cu_map(ctx, n, f, "elementwise backward");
}
HIGAN_DEF higan_status higan_cuda_add_forward(higan_cuda *ctx, float *y, const float *a, const float *b, int64_t n) {
    return higan__cu_binary(ctx, y, a, b, HIGAN__BIN_ADD, n);
}
HIGAN_DEF higan_status higan_cuda_add_backward(higan_cuda *ctx, float *da, float *db, const float *dy, int64_t n) {
    HIGAN__CU_TRY(higan__cu_axpy(ctx, da, dy, NULL, 1.0f, n));
    return higan__cu_axpy(ctx, db, dy, NULL, 1.0f, n);
}
HIGAN_DEF higan_status higan_cuda_sub_forward(higan_cuda *ctx, float *y, const float *a, const float *b, int64_t n) {
    return higan__cu_binary(ctx, y, a, b, HIGAN__BIN_SUB, n);
}
HIGAN_DEF higan_status higan_cuda_sub_backward(higan_cuda *ctx, float *da, float *db, const float *dy, int64_t n) {
    HIGAN__CU_TRY(higan__cu_axpy(ctx, da, dy, NULL, 1.0f, n));
    return higan__cu_axpy(ctx, db, dy, NULL, -1.0f, n);
}
HIGAN_DEF higan_status higan_cuda_mul_forward(higan_cuda *ctx, float *y, const float *a, const float *b, int64_t n) {
    return higan__cu_binary(ctx, y, a, b, HIGAN__BIN_MUL, n);
}
HIGAN_DEF higan_status higan_cuda_mul_backward(higan_cuda *ctx, float *da, float *db, const float *dy,
                                               const float *a, const float *b, int64_t n) {
    HIGAN__CU_TRY(higan__cu_axpy(ctx, da, dy, b, 0.0f, n));
    return higan__cu_axpy(ctx, db, dy, a, 0.0f, n);
}
struct higan__f_scale {
    float *y; const float *x; float s;
    HIGAN__CU_HD void operator()(int64_t i) const { y[i] = x[i] * s; }
};
HIGAN_DEF higan_status higan_cuda_scale_forward(higan_cuda *ctx, float *y, const float *x, float s, int64_t n) {
    higan__f_scale f;
    f.y = y; f.x = x; f.s = s;
    return higan__cu_map(ctx, n, f, "scale forward");
}
HIGAN_DEF higan_status higan_cuda_scale_backward(higan_cuda *ctx, float *dx, const float *dy, float s, int64_t n) {
    higan__f_axpy f;
    if (!dx) return HIGAN_OK;
    f.d = dx; f.g = dy; f.m = NULL; f.s = s;
    /* the CPU computes dy * s even for s = +-1; identical values, so the axpy shortcut is fine */
    return higan__cu_map(ctx, n, f, "scale backward");
}
struct higan__f_add_nc {   /* y [N*C, HW] = x + b[p] */
    float *y; const float *x, *b; int64_t HW;
    HIGAN__CU_HD void operator()(int64_t i) const { y[i] = x[i] + b[i / HW]; }
};
struct higan__r_plane_sum {   /* db[p] += sum of dy over the HW values of plane p */
    float *db; const float *dy; int64_t HW;
    HIGAN__CU_HD double term(int64_t p, int64_t k) const { return (double)dy[p * HW + k]; }
    HIGAN__CU_HD void finish(int64_t p, double s) const { db[p] += (float)s; }
};
HIGAN_DEF higan_status higan_cuda_add_nc_forward(higan_cuda *ctx, float *y, const float *x, const float *b,
                                                 int64_t N, int64_t C, int64_t HW) {
    higan__f_add_nc f;
    if (HW <= 0) return HIGAN_OK;
    f.y = y; f.x = x; f.b = b; f.HW = HW;
    return higan__cu_map(ctx, N * C * HW, f, "add_nc forward");
}
HIGAN_DEF higan_status higan_cuda_add_nc_backward(higan_cuda *ctx, float *dx, float *db, const float *dy,
                                                  int64_t N, int64_t C, int64_t HW) {
    if (dx) HIGAN__CU_TRY(higan__cu_axpy(ctx, dx, dy, NULL, 1.0f, N * C * HW));
    if (db) {
        higan__r_plane_sum r;
        r.db = db; r.dy = dy; r.HW = HW;
        HIGAN__CU_TRY(higan__cu_rows(ctx, N * C, HW, r, "add_nc db"));
    }
    return HIGAN_OK;
}
/* Whole-array sums into a device scalar; kind: 0 sum, 1 mean. */
struct higan__r_sum_all {
    float *y; const float *x; int64_t n; int mean;
    HIGAN__CU_HD double term(int64_t, int64_t i) const { return (double)x[i]; }
    HIGAN__CU_HD void finish(int64_t, double s) const {
        y[0] = mean ? (float)(s / (double)(n > 0 ? n : 1)) : (float)s;
    }
};
struct higan__f_fill_grad {   /* dx += dy[0] (sum) or dy[0] / (float)n (mean) */
    float *dx; const float *dy; int64_t n; int mean;
    HIGAN__CU_HD void operator()(int64_t i) const { dx[i] += mean ? dy[0] / (float)n : dy[0]; }
};
static higan_status higan__cu_sum_all(higan_cuda *ctx, float *y, const float *x, int64_t n, int mean) {
    higan__r_sum_all r;
    r.y = y; r.x = x; r.n = n; r.mean = mean;
    return higan__cu_rows(ctx, 1, n, r, "sum_all");
}
static higan_status higan__cu_fill_grad(higan_cuda *ctx, float *dx, const float *dy, int64_t n, int mean) {
    higan__f_fill_grad f;
    if (!dx || n <= 0) return HIGAN_OK;
    f.dx = dx; f.dy = dy; f.n = n; f.mean = mean;
    return higan__cu_map(ctx, n, f, "sum_all backward");
}
HIGAN_DEF higan_status higan_cuda_sum_all_forward(higan_cuda *ctx, float *y, const float *x, int64_t n) {
    return higan__cu_sum_all(ctx, y, x, n, 0);
}
HIGAN_DEF higan_status higan_cuda_sum_all_backward(higan_cuda *ctx, float *dx, const float *dy, int64_t n) {
    return higan__cu_fill_grad(ctx, dx, dy, n, 0);
}
HIGAN_DEF higan_status higan_cuda_mean_all_forward(higan_cuda *ctx, float *y, const float *x, int64_t n) {
    return higan__cu_sum_all(ctx, y, x, n, 1);
}
HIGAN_DEF higan_status higan_cuda_mean_all_backward(higan_cuda *ctx, float *dx, const float *dy, int64_t n) {
    return higan__cu_fill_grad(ctx, dx, dy, n, 1);
}

/* ---- dropout: host-drawn mask (higan_dropout_forward's draws), applied on the device ---- */
HIGAN_DEF void higan_cuda_dropout_mask(float *mask, float p, higan_rng *rng, int64_t n) {
    higan_dropout_mask(mask, p, rng, n);   /* the CPU's mask and draw */
}
struct higan__f_dropout {   /* forward y = x * mask; backward dx += dy * mask (two roundings) */
    float *y; const float *x, *mask; int backward;
    HIGAN__CU_HD void operator()(int64_t i) const {
        if (backward) y[i] = HIGAN__FADD(y[i], HIGAN__FMUL(x[i], mask[i]));
        else y[i] = HIGAN__FMUL(x[i], mask[i]);
    }
};
HIGAN_DEF higan_status higan_cuda_dropout_forward(higan_cuda *ctx, float *y, float *mask, const float *x,
                                                  float p, higan_rng *rng, int64_t n,
                                                  higan_arena *host_scratch) {
    higan__f_dropout f;
    size_t mark;
    float *h;
    higan_status st;
    HIGAN__CU_ASSERT(n >= 0 && rng != NULL);
    if (n == 0) {                  /* the CPU still draws the key */
        higan_dropout_mask(NULL, p, rng, 0);
        return HIGAN_OK;
    }
    HIGAN__CU_ASSERT(mask != NULL && "the device needs the mask in device memory");
    if (!host_scratch) return higan_set_error(HIGAN_ERR_ARG, "dropout forward: no host scratch arena");
    mark = higan_arena_mark(host_scratch);
    if (!(h = higan_arena_floats(host_scratch, n))) return higan_arena_status(host_scratch);
    higan_cuda_dropout_mask(h, p, rng, n);
    /* pageable source: the copy has left h when the call returns, so h can be released */
    st = higan_cuda_upload(ctx, mask, h, (size_t)n * sizeof(float));
    higan_arena_release(host_scratch, mark);
    if (st != HIGAN_OK) return st;
    f.y = y; f.x = x; f.mask = mask; f.backward = 0;
    return higan__cu_map(ctx, n, f, "dropout forward");
}
HIGAN_DEF higan_status higan_cuda_dropout_backward(higan_cuda *ctx, float *dx, const float *dy,
                                                   const float *mask, int64_t n) {
    higan__f_dropout f;
    if (!dx) return HIGAN_OK;
    f.y = dx; f.x = dy; f.mask = mask; f.backward = 1;
    return higan__cu_map(ctx, n, f, "dropout backward");
}

/* ==== LOSSES (implementation) ============================================================= */
/* ---- hinge: kind 0 d_real mean(relu(1 - x)), 1 d_fake mean(relu(1 + x)), 2 g -mean(x) ---- */
struct higan__r_hinge {
    float *y; const float *x; int64_t n; int kind;
    HIGAN__CU_HD double term(int64_t, int64_t i) const {
        float v;
        if (kind == 2) return (double)x[i];
        v = kind == 0 ? 1.0f - x[i] : 1.0f + x[i];
        return v > 0 ? (double)v : 0.0;
    }
    HIGAN__CU_HD void finish(int64_t, double s) const { y[0] = (float)((kind == 2 ? -s : s) / (double)n); }
};
struct higan__f_hinge_bwd {
    float *dx; const float *dy, *x; int64_t n; int kind;
    HIGAN__CU_HD void operator()(int64_t i) const {
        if (kind == 0) { if (1.0f - x[i] > 0) dx[i] += -dy[0] / (float)n; }
        else if (kind == 1) { if (1.0f + x[i] > 0) dx[i] += dy[0] / (float)n; }
        else dx[i] += -dy[0] / (float)n;
    }
};
static higan_status higan__cu_hinge(higan_cuda *ctx, float *y, const float *x, int64_t n, int kind) {
    higan__r_hinge r;
    HIGAN__CU_ASSERT(n > 0);
    r.y = y; r.x = x; r.n = n; r.kind = kind;
    return higan__cu_rows(ctx, 1, n, r, "hinge forward");
}
static higan_status higan__cu_hinge_bwd(higan_cuda *ctx, float *dx, const float *dy, const float *x, int64_t n,
                                        int kind) {
    higan__f_hinge_bwd f;
    if (!dx) return HIGAN_OK;
    f.dx = dx; f.dy = dy; f.x = x; f.n = n; f.kind = kind;
    return higan__cu_map(ctx, n, f, "hinge backward");
}
HIGAN_DEF higan_status higan_cuda_hinge_d_real_forward(higan_cuda *ctx, float *y, const float *x, int64_t n) {
    return higan__cu_hinge(ctx, y, x, n, 0);
}
HIGAN_DEF higan_status higan_cuda_hinge_d_real_backward(higan_cuda *ctx, float *dx, const float *dy,
                                                        const float *x, int64_t n) {
    return higan__cu_hinge_bwd(ctx, dx, dy, x, n, 0);
}
HIGAN_DEF higan_status higan_cuda_hinge_d_fake_forward(higan_cuda *ctx, float *y, const float *x, int64_t n) {
    return higan__cu_hinge(ctx, y, x, n, 1);
}
HIGAN_DEF higan_status higan_cuda_hinge_d_fake_backward(higan_cuda *ctx, float *dx, const float *dy,
                                                        const float *x, int64_t n) {
    return higan__cu_hinge_bwd(ctx, dx, dy, x, n, 1);
}
HIGAN_DEF higan_status higan_cuda_hinge_g_forward(higan_cuda *ctx, float *y, const float *x, int64_t n) {
    return higan__cu_hinge(ctx, y, x, n, 2);
}
HIGAN_DEF higan_status higan_cuda_hinge_g_backward(higan_cuda *ctx, float *dx, const float *dy, int64_t n) {
    return higan__cu_hinge_bwd(ctx, dx, dy, NULL, n, 2);
}

/* ---- masked L1: a, b [N, M, W], divisor M * sum_n lens[n] (lens as given) ---- */
static HIGAN__CU_HD double higan__cu_l1_divisor(const int *lens, int64_t N, int64_t M) {
    double s = 0;
    int64_t n;
    for (n = 0; n < N; ++n) s += (double)lens[n];
    return (double)M * s;
}
struct higan__r_masked_l1 {
    float *y; const float *a, *b; const int *lens; int64_t N, M, W;
    HIGAN__CU_HD double term(int64_t, int64_t i) const {
        int64_t n = i / (M * W), w = i % W;
        return w < (int64_t)lens[n] ? (double)fabsf(a[i] - b[i]) : 0.0;
    }
    HIGAN__CU_HD void finish(int64_t, double s) const { y[0] = (float)(s / higan__cu_l1_divisor(lens, N, M)); }
};
/* g = dy / divisor into ws[0] (one reduction over lens), then elementwise. */
struct higan__r_masked_l1_g {
    float *g; const float *dy; const int *lens; int64_t M;
    HIGAN__CU_HD double term(int64_t, int64_t n) const { return (double)lens[n]; }
    HIGAN__CU_HD void finish(int64_t, double s) const { g[0] = (float)((double)dy[0] / ((double)M * s)); }
};
struct higan__f_masked_l1_bwd {
    float *da, *db; const float *g, *a, *b; const int *lens; int64_t M, W;
    HIGAN__CU_HD void operator()(int64_t i) const {
        int64_t n = i / (M * W), w = i % W;
        if (w < (int64_t)lens[n]) {
            float d = a[i] - b[i], gg = g[0];
            float s = d > 0 ? gg : (d < 0 ? -gg : 0.0f);   /* sign(0) = 0 like PyTorch */
            if (da) da[i] += s;
            if (db) db[i] -= s;
        }
    }
};
HIGAN_DEF higan_status higan_cuda_masked_l1_forward(higan_cuda *ctx, float *y, const float *a, const float *b,
                                                    const int *lens, int64_t N, int64_t M, int64_t W) {
    higan__r_masked_l1 r;
    r.y = y; r.a = a; r.b = b; r.lens = lens; r.N = N; r.M = M; r.W = W;
    return higan__cu_rows(ctx, 1, N * M * W, r, "masked l1 forward");
}
HIGAN_DEF higan_status higan_cuda_masked_l1_backward(higan_cuda *ctx, float *da, float *db, const float *dy,
                                                     const float *a, const float *b, const int *lens,
                                                     int64_t N, int64_t M, int64_t W) {
    higan__r_masked_l1_g r;
    higan__f_masked_l1_bwd f;
    if ((!da && !db) || N * M * W <= 0) return HIGAN_OK;
    r.g = ctx->ws; r.dy = dy; r.lens = lens; r.M = M;
    HIGAN__CU_TRY(higan__cu_rows(ctx, 1, N, r, "masked l1 backward scale"));
    f.da = da; f.db = db; f.g = ctx->ws; f.a = a; f.b = b; f.lens = lens; f.M = M; f.W = W;
    return higan__cu_map(ctx, N * M * W, f, "masked l1 backward");
}

/* ---- KL of N(mu, exp(logvar)) from N(0, 1) ---- */
struct higan__r_kl {
    float *y; const float *mu, *logvar; int64_t N;
    HIGAN__CU_HD double term(int64_t, int64_t i) const {
        return (double)(1.0f + logvar[i] - mu[i] * mu[i] - expf(logvar[i]));
    }
    HIGAN__CU_HD void finish(int64_t, double s) const { y[0] = (float)(-0.5 * s / (double)N); }
};
struct higan__f_kl_bwd {
    float *dmu, *dlogvar; const float *dy, *mu, *logvar; int64_t N;
    HIGAN__CU_HD void operator()(int64_t i) const {
        float g = dy[0] / (float)N;
        if (dmu) dmu[i] += g * mu[i];
        if (dlogvar) dlogvar[i] += 0.5f * g * (expf(logvar[i]) - 1.0f);
    }
};
HIGAN_DEF higan_status higan_cuda_kl_gaussian_forward(higan_cuda *ctx, float *y, const float *mu,
                                                      const float *logvar, int64_t N, int64_t D) {
    higan__r_kl r;
    r.y = y; r.mu = mu; r.logvar = logvar; r.N = N;
    return higan__cu_rows(ctx, 1, N * D, r, "kl forward");
}
HIGAN_DEF higan_status higan_cuda_kl_gaussian_backward(higan_cuda *ctx, float *dmu, float *dlogvar,
                                                       const float *dy, const float *mu,
                                                       const float *logvar, int64_t N, int64_t D) {
    higan__f_kl_bwd f;
    if (!dmu && !dlogvar) return HIGAN_OK;
    f.dmu = dmu; f.dlogvar = dlogvar; f.dy = dy; f.mu = mu; f.logvar = logvar; f.N = N;
    return higan__cu_map(ctx, N * D, f, "kl backward");
}

/* ---- cross-entropy: one block walks the rows (N is a batch: small) ---- */
struct higan__b_ce_fwd {
    float *y, *lse; const float *logits; const int *labels; int64_t N, C;
    HIGAN__CU_HD void operator()(int64_t, double *sh, float *shf, float *) const {
        double total = 0.0;   /* thread 0's */
        int64_t n, c;
        for (n = 0; n < N; ++n) {
            const float *x = logits + n * C;
            float m = -INFINITY, l;
            double e = 0.0;
            for (c = HIGAN__TID; c < C; c += HIGAN__NTHR) if (x[c] > m) m = x[c];
            m = higan__block_max(m, shf);
            for (c = HIGAN__TID; c < C; c += HIGAN__NTHR) e += exp((double)(x[c] - m));
            e = higan__block_sum(e, sh);
            l = (float)log(e) + m;
            if (HIGAN__TID == 0) {
                int lab = labels[n];
                if (lse) lse[n] = l;
                total += (lab >= 0 && (int64_t)lab < C) ? (double)(l - x[lab]) : (double)NAN;
            }
        }
        if (HIGAN__TID == 0) y[0] = (float)(total / (double)N);
    }
};
struct higan__f_ce_bwd {   /* dlogits += dy/N * (softmax - onehot) */
    float *dlogits; const float *dy, *logits, *lse; const int *labels; int64_t N, C;
    HIGAN__CU_HD void operator()(int64_t i) const {
        int64_t n = i / C, c = i % C;
        float g = dy[0] / (float)N;
        float p = expf(logits[i] - lse[n]);
        dlogits[i] += g * (p - (c == (int64_t)labels[n] ? 1.0f : 0.0f));
    }
};
HIGAN_DEF higan_status higan_cuda_cross_entropy_forward(higan_cuda *ctx, float *y, float *lse,
                                                        const float *logits, const int *labels,
                                                        int64_t N, int64_t C) {
    higan__b_ce_fwd f;
    HIGAN__CU_ASSERT(N > 0 && C > 0);
    f.y = y; f.lse = lse; f.logits = logits; f.labels = labels; f.N = N; f.C = C;
    return higan__cu_blocks(ctx, 1, f, 0, "cross entropy forward");
}
HIGAN_DEF higan_status higan_cuda_cross_entropy_backward(higan_cuda *ctx, float *dlogits, const float *dy,
                                                         const float *logits, const float *lse,
                                                         const int *labels, int64_t N, int64_t C) {
    higan__f_ce_bwd f;
    if (!dlogits) return HIGAN_OK;
    f.dlogits = dlogits; f.dy = dy; f.logits = logits; f.lse = lse; f.labels = labels; f.N = N; f.C = C;
    return higan__cu_map(ctx, N * C, f, "cross entropy backward");
}

/* ---- CTC loss ----------------------------------------------------------------------------- */
static HIGAN__CU_HD int higan__cu_ctc_label(const int *tg, int64_t s, int blank) { return (s & 1) ? tg[s / 2] : blank; }
/* log(exp(a) + exp(b) + exp(c)) as PyTorch's CPU kernel (and higan__lse3) */
static HIGAN__CU_HD float higan__cu_lse3(float a, float b, float c) {
    float m = a;
    if (b > m) m = b;
    if (c > m) m = c;
    if (m == -INFINITY) m = 0.0f;
    return logf(expf(a - m) + expf(b - m) + expf(c - m)) + m;
}
/* Offsets of sample b: alpha at sum_{i<b} T (2 L_i + 1), targets at sum_{i<b} L_i. */
static HIGAN__CU_HD void higan__cu_ctc_offsets(const int *target_lengths, int64_t T, int64_t b, int64_t *aoff,
                                             int64_t *toff) {
    int64_t i, a = 0, t = 0;
    for (i = 0; i < b; ++i) {
        int64_t L = target_lengths[i] > 0 ? target_lengths[i] : 0;
        a += T * (2 * L + 1);
        t += L;
    }
    *aoff = a; *toff = t;
}
/* One block per sample b: alpha [T, S] (S = 2L + 1) recursion over t, threads over s (row t
   reads row t-1 of the same block, in global memory, after a barrier). shf[0]: "bad input". */
struct higan__b_ctc_alpha {
    float *nll, *alpha; const float *log_probs; const int *targets, *input_lengths, *target_lengths;
    int64_t T, B, C; int blank;
    HIGAN__CU_HD void operator()(int64_t b, double *, float *shf, float *) const {
        int64_t aoff, toff, Tb = input_lengths[b], L = target_lengths[b] > 0 ? target_lengths[b] : 0;
        int64_t S = 2 * L + 1, s, t;
        const int *tg;
        const float *lp = log_probs + b * C;
        float *la;
        higan__cu_ctc_offsets(target_lengths, T, b, &aoff, &toff);
        tg = targets + toff;
        la = alpha + aoff;
        if (HIGAN__TID == 0) {
            int bad = Tb < 0 || Tb > T;
            for (s = 0; s < L; ++s) if (tg[s] < 0 || (int64_t)tg[s] >= C) bad = 1;
            shf[0] = bad ? 1.0f : 0.0f;
        }
        for (s = HIGAN__TID; s < T * S; s += HIGAN__NTHR) la[s] = -INFINITY;
        HIGAN__SYNC();
        if (shf[0] != 0.0f) { if (HIGAN__TID == 0) nll[b] = NAN; return; }
        if (Tb == 0) { if (HIGAN__TID == 0) nll[b] = L == 0 ? 0.0f : INFINITY; return; }
        if (HIGAN__TID == 0) {
            la[0] = lp[blank];
            if (L > 0) la[1] = lp[tg[0]];
        }
        HIGAN__SYNC();
        for (t = 1; t < Tb; ++t) {
            const float *prev = la + (t - 1) * S, *lpt = lp + t * B * C;
            float *cur = la + t * S;
            for (s = HIGAN__TID; s < S; s += HIGAN__NTHR) {
                int l = higan__cu_ctc_label(tg, s, blank);
                float a2 = s > 0 ? prev[s - 1] : -INFINITY;
                float a3 = (s > 1 && higan__cu_ctc_label(tg, s - 2, blank) != l) ? prev[s - 2] : -INFINITY;
                cur[s] = higan__cu_lse3(prev[s], a2, a3) + lpt[l];
            }
            HIGAN__SYNC();   /* row t is complete (global writes visible to the block) */
        }
        if (HIGAN__TID == 0) {
            float v;
            if (L == 0) v = -la[(Tb - 1) * S];
            else {
                float l1 = la[(Tb - 1) * S + 2 * L], l2 = la[(Tb - 1) * S + 2 * L - 1];
                float m = l1 > l2 ? l1 : l2;
                if (m == -INFINITY) m = 0.0f;
                v = -(logf(expf(l1 - m) + expf(l2 - m)) + m);
            }
            nll[b] = v;
        }
    }
};
/* y = mean_b nll[b] / max(L_b, 1), serially in float in the CPU's order (one thread). */
struct higan__f_ctc_mean {
    float *y; const float *nll; const int *target_lengths; int64_t B; int zero_infinity;
    HIGAN__CU_HD void operator()(int64_t) const {
        float sum = 0.0f;
        int64_t b;
        for (b = 0; b < B; ++b) {
            float v = nll[b];
            if (zero_infinity && v == INFINITY) v = 0.0f;
            sum += v / (float)(target_lengths[b] > 1 ? target_lengths[b] : 1);
        }
        y[0] = sum / (float)B;
    }
};
HIGAN_DEF higan_status higan_cuda_ctc_loss_forward(higan_cuda *ctx, float *y, float *nll, float *alpha,
                                                   const float *log_probs, const int *targets,
                                                   const int *input_lengths, const int *target_lengths,
                                                   int64_t T, int64_t B, int64_t C, int blank,
                                                   int zero_infinity) {
    higan__b_ctc_alpha fa;
    higan__f_ctc_mean fm;
    HIGAN__CU_ASSERT(T > 0 && B > 0 && C > 0 && blank >= 0 && blank < C);
    fa.nll = nll; fa.alpha = alpha; fa.log_probs = log_probs; fa.targets = targets;
    fa.input_lengths = input_lengths; fa.target_lengths = target_lengths; fa.T = T; fa.B = B; fa.C = C;
    fa.blank = blank;
    HIGAN__CU_TRY(higan__cu_blocks(ctx, B, fa, 0, "ctc alpha"));
    fm.y = y; fm.nll = nll; fm.target_lengths = target_lengths; fm.B = B; fm.zero_infinity = zero_infinity;
    return higan__cu_map(ctx, 1, fm, "ctc mean");
}
/* One block per sample: beta recursion from t = Tb-1 down (two rows in shared memory, dyn),
   then per class c the log-sum over positions s with label c (s descending, the CPU's order)
   and dlog_probs[t, b, c] += g (exp(lp) - exp(lcab + nll - lp)). dyn: 2 Smax floats. */
struct higan__b_ctc_beta {
    float *dlog_probs; const float *dy, *log_probs, *nll, *alpha;
    const int *targets, *input_lengths, *target_lengths;
    int64_t T, B, C, Smax; int blank, zero_infinity;
    HIGAN__CU_HD void operator()(int64_t b, double *, float *, float *dyn) const {
        int64_t aoff, toff, Tb = input_lengths[b], L = target_lengths[b] > 0 ? target_lengths[b] : 0;
        int64_t S = 2 * L + 1, t, s, c;
        float *lb_next = dyn, *lb_cur = dyn + Smax;
        const float v = nll[b];
        const float gr = dy[0] / (float)B / (float)(L > 1 ? L : 1);
        const int *tg;
        const float *la, *lp = log_probs + b * C;
        float *gb = dlog_probs + b * C;
        higan__cu_ctc_offsets(target_lengths, T, b, &aoff, &toff);
        tg = targets + toff;
        la = alpha + aoff;
        if (Tb <= 0 || Tb > T || (zero_infinity && v == INFINITY) || v != v) return;   /* zero gradient */
        if (S > Smax) {   /* max_target_length was too small: make it visible */
            for (t = 0; t < Tb; ++t)
                for (c = HIGAN__TID; c < C; c += HIGAN__NTHR) gb[t * B * C + c] = NAN;
            return;
        }
        for (t = Tb - 1; t >= 0; --t) {
            const float *lpt = lp + t * B * C, *lat = la + t * S;
            float *tmp;
            if (t == Tb - 1) {   /* beta starts at the last two extended positions */
                for (s = HIGAN__TID; s < S; s += HIGAN__NTHR) lb_cur[s] = -INFINITY;
                HIGAN__SYNC();
                if (HIGAN__TID == 0) {
                    lb_cur[2 * L] = lpt[blank];
                    if (L > 0) lb_cur[2 * L - 1] = lpt[higan__cu_ctc_label(tg, 2 * L - 1, blank)];
                }
            } else {
                for (s = HIGAN__TID; s < S; s += HIGAN__NTHR) {
                    int l = higan__cu_ctc_label(tg, s, blank);
                    float b2 = s < 2 * L ? lb_next[s + 1] : -INFINITY;
                    float b3 = (s < 2 * L - 1 && higan__cu_ctc_label(tg, s + 2, blank) != l) ? lb_next[s + 2] : -INFINITY;
                    lb_cur[s] = higan__cu_lse3(lb_next[s], b2, b3) + lpt[l];
                }
            }
            HIGAN__SYNC();
            for (c = HIGAN__TID; c < C; c += HIGAN__NTHR) {
                float acc = -INFINITY;
                if (t == Tb - 1) {   /* the CPU assigns these two (the second may overwrite) */
                    if (c == blank) acc = lat[2 * L] + lb_cur[2 * L];
                    if (L > 0 && higan__cu_ctc_label(tg, 2 * L - 1, blank) == c) acc = lat[2 * L - 1] + lb_cur[2 * L - 1];
                } else {
                    for (s = 2 * L; s >= 0; --s) {
                        float lab, m;
                        if (higan__cu_ctc_label(tg, s, blank) != c) continue;
                        lab = lat[s] + lb_cur[s];
                        if (acc == -INFINITY) acc = lab;
                        else {
                            m = acc > lab ? acc : lab;
                            acc = logf(expf(acc - m) + expf(lab - m)) + m;
                        }
                    }
                }
                gb[t * B * C + c] += (expf(lpt[c]) - expf(acc + v - lpt[c])) * gr;
            }
            HIGAN__SYNC();   /* lb_next is about to be overwritten */
            tmp = lb_next; lb_next = lb_cur; lb_cur = tmp;
        }
    }
};
HIGAN_DEF higan_status higan_cuda_ctc_loss_backward(higan_cuda *ctx, float *dlog_probs, const float *dy,
                                                    const float *log_probs, const float *nll,
                                                    const float *alpha, const int *targets,
                                                    const int *input_lengths, const int *target_lengths,
                                                    int64_t T, int64_t B, int64_t C, int blank,
                                                    int zero_infinity, int max_target_length) {
    higan__b_ctc_beta f;
    if (!dlog_probs) return HIGAN_OK;
    HIGAN__CU_ASSERT(T > 0 && B > 0 && C > 0 && blank >= 0 && blank < C);
    f.dlog_probs = dlog_probs; f.dy = dy; f.log_probs = log_probs; f.nll = nll; f.alpha = alpha;
    f.targets = targets; f.input_lengths = input_lengths; f.target_lengths = target_lengths;
    f.T = T; f.B = B; f.C = C; f.Smax = 2 * (int64_t)(max_target_length > 0 ? max_target_length : 0) + 1;
    f.blank = blank; f.zero_infinity = zero_infinity;
    return higan__cu_blocks(ctx, B, f, (size_t)(2 * f.Smax), "ctc backward");
}

/* ---- greedy CTC decoding: device argmax, host collapse ------------------------------------- */
/* One thread per row, a serial scan in the CPU's order (best moves only on a strictly larger
   value), so ties and NaNs give the CPU's index. Rows are short (the alphabet). */
struct higan__f_argmax_rows {
    int *best; const float *x; int64_t cols;
    HIGAN__CU_HD void operator()(int64_t r) const {
        const float *row = x + r * cols;
        int64_t c, bi = 0;
        for (c = 1; c < cols; ++c) if (row[c] > row[bi]) bi = c;
        best[r] = (int)bi;
    }
};
HIGAN_DEF higan_status higan_cuda_argmax_rows(higan_cuda *ctx, int *best, const float *x, int64_t rows,
                                              int64_t cols) {
    higan__f_argmax_rows f;
    HIGAN__CU_ASSERT(rows >= 0 && cols >= 1 && cols <= INT_MAX);
    f.best = best; f.x = x; f.cols = cols;
    return higan__cu_map(ctx, rows, f, "argmax rows");
}
/* higan_ctc_greedy_decode_strided's collapse, on the argmax indices. */
HIGAN_DEF int higan_cuda_ctc_collapse(const int *best, int64_t step_stride, int T, int blank, int *out,
                                      int max_out) {
    int t, n = 0, prev = -1;
    for (t = 0; t < T; ++t) {
        int b = best[(int64_t)t * step_stride];
        if (b != prev && b != blank) {
            if (out && n < max_out) out[n] = b;
            ++n;
        }
        prev = b;
    }
    return n;
}
HIGAN_DEF higan_status higan_cuda_ctc_greedy_decode(higan_cuda *ctx, int *out, int *out_lengths,
                                                    const float *scores, const int *input_lengths,
                                                    int64_t T, int64_t B, int64_t C, int time_major,
                                                    int blank, int max_out, higan_cuda_arena *scratch,
                                                    higan_arena *host_scratch) {
    size_t dmark, hmark;
    int *dbest, *hbest;
    int64_t b;
    higan_status st;
    HIGAN__CU_ASSERT(T >= 0 && T <= INT_MAX && B >= 0 && C >= 1 && max_out >= 0);
    for (b = 0; b < B; ++b)
        HIGAN__CU_ASSERT(!input_lengths || (input_lengths[b] >= 0 && (int64_t)input_lengths[b] <= T));
    if (B == 0) return HIGAN_OK;
    if (T == 0) {   /* nothing to decode: every sample is empty */
        for (b = 0; b < B; ++b) out_lengths[b] = 0;
        return HIGAN_OK;
    }
    if (!scratch || !host_scratch)
        return higan_set_error(HIGAN_ERR_ARG, "ctc greedy decode: no device or host scratch arena");
    dmark = higan_cuda_arena_mark(scratch);
    hmark = higan_arena_mark(host_scratch);
    dbest = (int *)higan_cuda_arena_alloc(scratch, (size_t)(T * B) * sizeof(int));
    hbest = (int *)higan_arena_alloc(host_scratch, (size_t)(T * B) * sizeof(int));
    if (!dbest) st = higan_cuda_arena_status(scratch);
    else if (!hbest) st = higan_arena_status(host_scratch);
    else if ((st = higan_cuda_argmax_rows(ctx, dbest, scores, T * B, C)) == HIGAN_OK &&
             (st = higan_cuda_download(ctx, hbest, dbest, (size_t)(T * B) * sizeof(int))) == HIGAN_OK) {
        for (b = 0; b < B; ++b) {   /* step t of sample b: row t*B + b or b*T + t */
            int Tb = input_lengths ? input_lengths[b] : (int)T;
            out_lengths[b] = higan_cuda_ctc_collapse(time_major ? hbest + b : hbest + b * T, time_major ? B : 1,
                                                     Tb, blank, out ? out + b * (int64_t)max_out : NULL, max_out);
        }
    }
    higan_arena_release(host_scratch, hmark);
    higan_cuda_arena_release(scratch, dmark);
    return st;
}

/* ---- contextual loss ------------------------------------------------------------------------ */
/* The CPU's layout and expressions (higan.h, "contextual loss"): S is kept as [N, Q, P]
   (row (n, q) over target positions p); eps 1e-5 in the min's denominator and in the log. */
#define HIGAN__CU_CX_EPS 1e-5f
static HIGAN__CU_HD float higan__cu_cx_e(float s, float rden, float sigma, float b) {
    float r = (1.0f - s) / 2.0f;
    return expf((b - r / rden) / sigma);
}
struct higan__r_cx_mean {   /* mean[c] over n and p of feat_t [N, C, P] (the CPU's double sum) */
    float *mean; const float *x; int64_t N, C, P;
    HIGAN__CU_HD double term(int64_t c, int64_t i) const { return (double)x[((i / P) * C + c) * P + i % P]; }
    HIGAN__CU_HD void finish(int64_t c, double s) const { mean[c] = (float)(s / (double)(N * P)); }
};
/* Column j = (n, l) of x [N, C, L]: centre by mean, divide by the norm over c (serial in c:
   the CPU's double sum in its order, so xh and norm are the CPU's bits). */
struct higan__f_cx_norm {
    float *xh, *norm; const float *x, *mean; int64_t C, L;
    HIGAN__CU_HD void operator()(int64_t j) const {
        const int64_t off = (j / L) * C * L + j % L;
        const float *xc = x + off;
        float *hc = xh + off, nr;
        double s = 0.0;
        int64_t c;
        for (c = 0; c < C; ++c) { float v = xc[c * L] - mean[c]; s += (double)v * v; }
        nr = (float)sqrt(s);
        norm[j] = nr;
        for (c = 0; c < C; ++c) hc[c * L] = (xc[c * L] - mean[c]) / nr;
    }
};
/* Row (n, q) of S: first argmin over p of r = (1 - s)/2, then the softmax over p of
   e = exp((b - r/(rmin + eps))/sigma): S row in, w row out. */
struct higan__b_cx_rows {
    float *S, *rmin, *wsum; int64_t *pmin; int64_t P; float sigma, b;
    HIGAN__CU_HD void operator()(int64_t row, double *sh, float *shf, float *) const {
        float *s = S + row * P, best = INFINITY, rden, ws;
        int64_t k, arg = P;   /* threads without a column lose every comparison */
        double es = 0.0;
        for (k = HIGAN__TID; k < P; k += HIGAN__NTHR) {
            float r = (1.0f - s[k]) / 2.0f;
            if (r < best || arg == P) { best = r; arg = k; }
        }
        best = higan__block_argmin(best, &arg, shf, sh);
        rden = best + HIGAN__CU_CX_EPS;
        for (k = HIGAN__TID; k < P; k += HIGAN__NTHR) {
            float e = higan__cu_cx_e(s[k], rden, sigma, b);
            s[k] = e;
            es += (double)e;
        }
        ws = (float)higan__block_sum(es, sh);
        for (k = HIGAN__TID; k < P; k += HIGAN__NTHR) s[k] = s[k] / ws;
        if (HIGAN__TID == 0) { rmin[row] = best; pmin[row] = arg; wsum[row] = ws; }
    }
};
/* Column (n, p) of w [N, Q, P]: max over q, first argmax (serial in q, the CPU's order). */
struct higan__f_cx_colmax {
    float *mx; int64_t *qmax; const float *S; int64_t P, Q;
    HIGAN__CU_HD void operator()(int64_t j) const {
        const float *s = S + (j / P) * Q * P + j % P;
        float m = s[0];
        int64_t q, arg = 0;
        for (q = 1; q < Q; ++q) if (s[q * P] > m) { m = s[q * P]; arg = q; }
        mx[j] = m;
        qmax[j] = arg;
    }
};
struct higan__r_cx_cx {   /* cx[n] = mean over p of mx[n, p] */
    float *cx; const float *mx; int64_t P;
    HIGAN__CU_HD double term(int64_t n, int64_t p) const { return (double)mx[n * P + p]; }
    HIGAN__CU_HD void finish(int64_t n, double s) const { cx[n] = (float)(s / (double)P); }
};
struct higan__f_cx_loss {   /* y = mean_n -log(cx_n + eps), serial in n like the CPU */
    float *y; const float *cx; int64_t N;
    HIGAN__CU_HD void operator()(int64_t) const {
        double loss = 0.0;
        int64_t n;
        for (n = 0; n < N; ++n) loss += -log((double)(cx[n] + HIGAN__CU_CX_EPS));
        y[0] = (float)(loss / (double)N);
    }
};
static size_t higan__cu_cx_cache_bytes(int64_t N, int64_t C, int64_t P, int64_t Q) {
    return higan__cu_round((size_t)(N * C * P) * sizeof(float)) + higan__cu_round((size_t)(N * C * Q) * sizeof(float)) +
           higan__cu_round((size_t)(N * P) * sizeof(float)) + 3 * higan__cu_round((size_t)(N * Q) * sizeof(float)) +
           higan__cu_round((size_t)N * sizeof(float)) + higan__cu_round((size_t)(N * Q) * sizeof(int64_t)) +
           higan__cu_round((size_t)(N * P) * sizeof(int64_t));
}
HIGAN_DEF size_t higan_cuda_cx_loss_scratch_bytes(int64_t N, int64_t C, int64_t P, int64_t Q) {
    size_t f = higan__cu_cx_cache_bytes(N, C, P, Q) + higan__cu_round((size_t)C * sizeof(float)) +
               higan__cu_round((size_t)(N * Q * P) * sizeof(float)) + higan__cu_round((size_t)(N * P) * sizeof(float));
    size_t b = higan__cu_round((size_t)(N * Q * P) * sizeof(float)) + higan__cu_round((size_t)(N * C * P) * sizeof(float)) +
               higan__cu_round((size_t)(N * C * Q) * sizeof(float)) + higan__cu_round((size_t)C * sizeof(float));
    return f > b ? f : b;
}
HIGAN_DEF higan_status higan_cuda_cx_cache_alloc(higan_cx_cache *c, higan_cuda_arena *a, int64_t N, int64_t C,
                                                 int64_t P, int64_t Q) {
    c->t_hat = higan_cuda_arena_floats(a, N * C * P);
    c->i_hat = higan_cuda_arena_floats(a, N * C * Q);
    c->t_norm = higan_cuda_arena_floats(a, N * P);
    c->i_norm = higan_cuda_arena_floats(a, N * Q);
    c->r_min = higan_cuda_arena_floats(a, N * Q);
    c->w_sum = higan_cuda_arena_floats(a, N * Q);
    c->cx = higan_cuda_arena_floats(a, N);
    c->p_min = (int64_t *)higan_cuda_arena_alloc(a, sizeof(int64_t) * (size_t)(N * Q));
    c->q_max = (int64_t *)higan_cuda_arena_alloc(a, sizeof(int64_t) * (size_t)(N * P));
    if (!c->t_hat || !c->i_hat || !c->t_norm || !c->i_norm || !c->r_min || !c->w_sum || !c->cx ||
        !c->p_min || !c->q_max)
        return higan_cuda_arena_status(a);
    return HIGAN_OK;
}
/* S [N, Q, P] = i_hat_n^T t_hat_n for every n (one strided-batched GEMM) */
static higan_status higan__cu_cx_sim(higan_cuda *ctx, float *S, const higan_cx_cache *c, int64_t N, int64_t C,
                                     int64_t P, int64_t Q) {
    return higan__cu_gemm_batched(ctx, 1, 0, Q, P, C, 1.0f, c->i_hat, Q, C * Q, c->t_hat, P, C * P, 0.0f,
                                  S, P, Q * P, N);
}
static higan_status higan__cu_cx_forward(higan_cuda *ctx, float *y, higan_cx_cache *cache, const float *feat_t,
                                         const float *feat_i, int64_t N, int64_t C, int64_t P, int64_t Q,
                                         float sigma, float b, higan_cuda_arena *scratch) {
    higan_cx_cache local;
    float *mean, *S, *mx;
    if (!cache) {
        HIGAN__CU_TRY(higan_cuda_cx_cache_alloc(&local, scratch, N, C, P, Q));
        cache = &local;
    }
    mean = higan_cuda_arena_floats(scratch, C);
    S = higan_cuda_arena_floats(scratch, N * Q * P);
    mx = higan_cuda_arena_floats(scratch, N * P);
    if (!mean || !S || !mx) return higan_cuda_arena_status(scratch);
    {   /* per-channel mean of the target over batch and positions */
        higan__r_cx_mean r;
        r.mean = mean; r.x = feat_t; r.N = N; r.C = C; r.P = P;
        HIGAN__CU_TRY(higan__cu_rows(ctx, C, N * P, r, "cx mean"));
    }
    {
        higan__f_cx_norm f;
        f.mean = mean; f.C = C;
        f.xh = cache->t_hat; f.norm = cache->t_norm; f.x = feat_t; f.L = P;
        HIGAN__CU_TRY(higan__cu_map(ctx, N * P, f, "cx normalise target"));
        f.xh = cache->i_hat; f.norm = cache->i_norm; f.x = feat_i; f.L = Q;
        HIGAN__CU_TRY(higan__cu_map(ctx, N * Q, f, "cx normalise inference"));
    }
    HIGAN__CU_TRY(higan__cu_cx_sim(ctx, S, cache, N, C, P, Q));
    {
        higan__b_cx_rows f;
        f.S = S; f.rmin = cache->r_min; f.wsum = cache->w_sum; f.pmin = cache->p_min; f.P = P;
        f.sigma = sigma; f.b = b;
        HIGAN__CU_TRY(higan__cu_blocks(ctx, N * Q, f, 0, "cx softmax rows"));
    }
    {
        higan__f_cx_colmax f;
        higan__r_cx_cx r;
        higan__f_cx_loss l;
        f.mx = mx; f.qmax = cache->q_max; f.S = S; f.P = P; f.Q = Q;
        HIGAN__CU_TRY(higan__cu_map(ctx, N * P, f, "cx max over q"));
        r.cx = cache->cx; r.mx = mx; r.P = P;
        HIGAN__CU_TRY(higan__cu_rows(ctx, N, P, r, "cx mean of maxima"));
        l.y = y; l.cx = cache->cx; l.N = N;
        return higan__cu_map(ctx, 1, l, "cx loss");
    }
}
HIGAN_DEF higan_status higan_cuda_cx_loss_forward(higan_cuda *ctx, float *y, higan_cx_cache *cache,
                                                  const float *feat_t, const float *feat_i, int64_t N,
                                                  int64_t C, int64_t P, int64_t Q, float sigma, float b,
                                                  higan_cuda_arena *scratch) {
    size_t mark;
    higan_status st;
    HIGAN__CU_ASSERT(N > 0 && C > 0 && P > 0 && Q > 0);
    if (!scratch) return higan_set_error(HIGAN_ERR_ARG, "cx loss forward: no scratch arena");
    mark = higan_cuda_arena_mark(scratch);
    st = higan__cu_cx_forward(ctx, y, cache, feat_t, feat_i, N, C, P, Q, sigma, b, scratch);
    higan_cuda_arena_release(scratch, mark);
    return st;
}
/* Backward of row (n, q), on G = the similarities recomputed: G row q out = d loss / d s
   (the CPU's expressions: the softmax through the argmax entries of each column p, then the
   min's denominator, whose gradient goes to the row's argmin, added by thread 0 after the
   block sum's barriers have made every thread's G writes visible). */
struct higan__b_cx_grad_rows {
    float *G; const float *dy, *cx, *rmin, *wsum; const int64_t *pmin, *qmax; int64_t N, P, Q; float sigma, b;
    HIGAN__CU_HD void operator()(int64_t row, double *sh, float *, float *) const {
        const int64_t n = row / Q, q = row % Q, pm = pmin[row];
        const int64_t *qm = qmax + n * P;
        float *g = G + row * P;
        const float gmx = -dy[0] / (float)N / (cx[n] + HIGAN__CU_CX_EPS) / (float)P;
        const float rden = rmin[row] + HIGAN__CU_CX_EPS, ws = wsum[row];
        float fsdw;
        double sdw = 0.0, dden = 0.0;
        int64_t k;
        for (k = HIGAN__TID; k < P; k += HIGAN__NTHR)
            if (qm[k] == q) sdw += (double)gmx * (higan__cu_cx_e(g[k], rden, sigma, b) / ws);
        fsdw = (float)higan__block_sum(sdw, sh);
        for (k = HIGAN__TID; k < P; k += HIGAN__NTHR) {
            float r = (1.0f - g[k]) / 2.0f;
            float w = higan__cu_cx_e(g[k], rden, sigma, b) / ws;
            float dw = qm[k] == q ? gmx : 0.0f;
            float drt = -(w / sigma) * (dw - fsdw);   /* d r~ */
            dden += (double)drt * r;
            g[k] = -0.5f * (drt / rden);               /* r = (1 - s)/2 */
        }
        dden = higan__block_sum(dden, sh);
        if (HIGAN__TID == 0 && pm >= 0 && pm < P) g[pm] += -0.5f * (float)(-dden / ((double)rden * rden));
    }
};
/* In place on column j = (n, l) of dxh [N, C, L]: dv = (dxh - xh (xh . dxh)) / ||v||. */
struct higan__f_cx_dnorm {
    float *dxh; const float *xh, *norm; int64_t C, L;
    HIGAN__CU_HD void operator()(int64_t j) const {
        const int64_t off = (j / L) * C * L + j % L;
        float *d = dxh + off, fs;
        const float *h = xh + off, nr = norm[j];
        double s = 0.0;
        int64_t c;
        for (c = 0; c < C; ++c) s += (double)h[c * L] * d[c * L];
        fs = (float)s;
        for (c = 0; c < C; ++c) d[c * L] = HIGAN__FDIV(HIGAN__FSUB(d[c * L], HIGAN__FMUL(h[c * L], fs)), nr);
    }
};
/* The target mean's gradient: g[c] = -(sum over n of dth[n, c, :] and dih[n, c, :]) / (N P). */
struct higan__r_cx_dmean {
    float *g; const float *dth, *dih; int64_t N, C, P, Q;
    HIGAN__CU_HD double term(int64_t c, int64_t i) const {
        const int64_t n = i / (P + Q), k = i % (P + Q);
        return k < P ? (double)dth[(n * C + c) * P + k] : (double)dih[(n * C + c) * Q + (k - P)];
    }
    HIGAN__CU_HD void finish(int64_t c, double s) const { g[c] = (float)(-s) / (float)(N * P); }
};
/* dfeat_t [N, C, P] += dth, then += g[c] (two adds, the CPU's order); dfeat_i += dih (g NULL). */
struct higan__f_cx_acc {
    float *d; const float *src, *g; int64_t C, L;
    HIGAN__CU_HD void operator()(int64_t i) const {
        float v = d[i] + src[i];
        if (g) v = v + g[(i / L) % C];
        d[i] = v;
    }
};
static higan_status higan__cu_cx_backward(higan_cuda *ctx, float *dfeat_t, float *dfeat_i, const float *dy,
                                          const higan_cx_cache *cache, int64_t N, int64_t C, int64_t P,
                                          int64_t Q, float sigma, float b, higan_cuda_arena *scratch) {
    float *G = higan_cuda_arena_floats(scratch, N * Q * P);
    float *dth = dfeat_t ? higan_cuda_arena_floats(scratch, N * C * P) : NULL;
    float *dih = higan_cuda_arena_floats(scratch, N * C * Q);
    float *g = dfeat_t ? higan_cuda_arena_floats(scratch, C) : NULL;
    if (!G || !dih || (dfeat_t && (!dth || !g))) return higan_cuda_arena_status(scratch);
    HIGAN__CU_TRY(higan__cu_cx_sim(ctx, G, cache, N, C, P, Q));
    {
        higan__b_cx_grad_rows f;
        f.G = G; f.dy = dy; f.cx = cache->cx; f.rmin = cache->r_min; f.wsum = cache->w_sum;
        f.pmin = cache->p_min; f.qmax = cache->q_max; f.N = N; f.P = P; f.Q = Q; f.sigma = sigma; f.b = b;
        HIGAN__CU_TRY(higan__cu_blocks(ctx, N * Q, f, 0, "cx backward rows"));
    }
    /* through s = i_hat^T t_hat: dih_n [C, Q] = t_hat_n G_n^T (always: the target mean needs it
       too), dth_n [C, P] = i_hat_n G_n */
    HIGAN__CU_TRY(higan__cu_gemm_batched(ctx, 0, 1, C, Q, P, 1.0f, cache->t_hat, P, C * P, G, P, Q * P, 0.0f,
                                         dih, Q, C * Q, N));
    if (dfeat_t)
        HIGAN__CU_TRY(higan__cu_gemm_batched(ctx, 0, 0, C, P, Q, 1.0f, cache->i_hat, Q, C * Q, G, P, Q * P, 0.0f,
                                             dth, P, C * P, N));
    {   /* through the channel normalisation */
        higan__f_cx_dnorm f;
        f.C = C;
        if (dfeat_t) {
            f.dxh = dth; f.xh = cache->t_hat; f.norm = cache->t_norm; f.L = P;
            HIGAN__CU_TRY(higan__cu_map(ctx, N * P, f, "cx dnormalise target"));
        }
        f.dxh = dih; f.xh = cache->i_hat; f.norm = cache->i_norm; f.L = Q;
        HIGAN__CU_TRY(higan__cu_map(ctx, N * Q, f, "cx dnormalise inference"));
    }
    {   /* feat - mean: into the features and (target only) through the mean */
        higan__f_cx_acc f;
        f.C = C;
        if (dfeat_t) {
            higan__r_cx_dmean r;
            r.g = g; r.dth = dth; r.dih = dih; r.N = N; r.C = C; r.P = P; r.Q = Q;
            HIGAN__CU_TRY(higan__cu_rows(ctx, C, N * (P + Q), r, "cx dmean"));
            f.d = dfeat_t; f.src = dth; f.g = g; f.L = P;
            HIGAN__CU_TRY(higan__cu_map(ctx, N * C * P, f, "cx dfeat_t"));
        }
        if (dfeat_i) {
            f.d = dfeat_i; f.src = dih; f.g = NULL; f.L = Q;
            HIGAN__CU_TRY(higan__cu_map(ctx, N * C * Q, f, "cx dfeat_i"));
        }
    }
    return HIGAN_OK;
}
HIGAN_DEF higan_status higan_cuda_cx_loss_backward(higan_cuda *ctx, float *dfeat_t, float *dfeat_i,
                                                   const float *dy, const higan_cx_cache *cache, int64_t N,
                                                   int64_t C, int64_t P, int64_t Q, float sigma, float b,
                                                   higan_cuda_arena *scratch) {
    size_t mark;
    higan_status st;
    if (!dfeat_t && !dfeat_i) return HIGAN_OK;
    HIGAN__CU_ASSERT(N > 0 && C > 0 && P > 0 && Q > 0);
    if (!scratch) return higan_set_error(HIGAN_ERR_ARG, "cx loss backward: no scratch arena");
    mark = higan_cuda_arena_mark(scratch);
    st = higan__cu_cx_backward(ctx, dfeat_t, dfeat_i, dy, cache, N, C, P, Q, sigma, b, scratch);
    higan_cuda_arena_release(scratch, mark);
    return st;
}

/* ==== LSTM (implementation) ================================================================ */
/* The CPU's cache layout: outputs of layers 0..L-2 [B,T,D*H], then per (layer, direction)
   gate activations [B,T,4H] (i, f, g, o after sigmoid/tanh) and cell states [B,T,H]. */
static int64_t higan__cu_lstm_out_off(int64_t B, int64_t T, int64_t DH, int l) { return (int64_t)l * B * T * DH; }
static int64_t higan__cu_lstm_gates_off(int64_t B, int64_t T, int64_t H, int64_t D, int L, int l, int d) {
    return (int64_t)(L - 1) * B * T * D * H + ((int64_t)l * D + d) * B * T * 5 * H;
}
static HIGAN__CU_HD int64_t higan__cu_len(const int *lengths, int64_t b, int64_t T) {
    int64_t len = lengths[b];
    return len < 0 ? 0 : len > T ? T : len;
}
static HIGAN__CU_HD float higan__cu_sigmoidf(float x) { return 1.0f / (1.0f + expf(-x)); }
/* G [B*T, 4H] = b_ih + b_hh (either may be NULL) */
struct higan__f_lstm_bias {
    float *G; const float *b_ih, *b_hh; int64_t H4;
    HIGAN__CU_HD void operator()(int64_t i) const {
        int64_t k = i % H4;
        G[i] = (b_ih ? b_ih[k] : 0.0f) + (b_hh ? b_hh[k] : 0.0f);
    }
};
/* Step s of direction d, one thread per (b, k) of [B, H]: gates from G + R (R = h_prev W_hh^T),
   new c and h; samples with lengths[b] <= s are done (their state is left alone). */
struct higan__f_lstm_step {
    float *G, *Cs, *out, *hs, *cs; const float *R; const int *lengths; int64_t s, T, H, DH; int d;
    HIGAN__CU_HD void operator()(int64_t i) const {
        const int64_t b = i / H, k = i % H, H4 = 4 * H, len = higan__cu_len(lengths, b, T);
        int64_t t;
        float *g;
        const float *r;
        float gi, gf, gg, go, c, h;
        if (len <= s) return;
        t = d == 0 ? s : len - 1 - s;
        g = G + (b * T + t) * H4;
        r = R + b * H4;
        gi = higan__cu_sigmoidf(g[k] + r[k]);
        gf = higan__cu_sigmoidf(g[H + k] + r[H + k]);
        gg = tanhf(g[2 * H + k] + r[2 * H + k]);
        go = higan__cu_sigmoidf(g[3 * H + k] + r[3 * H + k]);
        c = gf * cs[b * H + k] + gi * gg;
        h = go * tanhf(c);
        g[k] = gi; g[H + k] = gf; g[2 * H + k] = gg; g[3 * H + k] = go;
        Cs[(b * T + t) * H + k] = c;
        out[(b * T + t) * DH + d * H + k] = h;
        cs[b * H + k] = c;
        hs[b * H + k] = h;
    }
};
/* out[b, t, d*H + k] = 0 for t >= lengths[b] (pad_packed_sequence) */
struct higan__f_lstm_pad {
    float *out; const int *lengths; int64_t T, H, DH; int d;
    HIGAN__CU_HD void operator()(int64_t i) const {
        int64_t k = i % H, t = (i / H) % T, b = i / (H * T);
        if (t >= higan__cu_len(lengths, b, T)) out[(b * T + t) * DH + d * H + k] = 0.0f;
    }
};
HIGAN_DEF higan_status higan_cuda_lstm_forward(higan_cuda *ctx, float *y, float *cache, const float *x,
                                               const int *lengths, const float *const *weights,
                                               int64_t B, int64_t T, int64_t IN, int64_t H,
                                               int num_layers, int bidirectional,
                                               higan_cuda_arena *scratch) {
    const int64_t D = bidirectional ? 2 : 1, DH = D * H, H4 = 4 * H;
    size_t mark;
    float *hs, *cs, *R;
    int64_t s;
    int l, d;
    higan_status st = HIGAN_OK;
    HIGAN__CU_ASSERT(B > 0 && T > 0 && IN > 0 && H > 0 && num_layers > 0 && scratch);
    mark = higan_cuda_arena_mark(scratch);
    if (!cache) cache = higan_cuda_arena_floats(scratch, higan_lstm_cache_floats(B, T, H, num_layers, bidirectional));
    hs = higan_cuda_arena_floats(scratch, B * H);    /* h of the previous step [B,H] */
    cs = higan_cuda_arena_floats(scratch, B * H);    /* c of the previous step [B,H] */
    R = higan_cuda_arena_floats(scratch, B * H4);    /* h_prev W_hh^T [B,4H] */
    if (!cache || !hs || !cs || !R) { higan_cuda_arena_release(scratch, mark); return higan_cuda_arena_status(scratch); }
    for (l = 0; l < num_layers && st == HIGAN_OK; ++l) {
        const float *in = l == 0 ? x : cache + higan__cu_lstm_out_off(B, T, DH, l - 1);
        const int64_t in_dim = l == 0 ? IN : DH;
        float *out = l == num_layers - 1 ? y : cache + higan__cu_lstm_out_off(B, T, DH, l);
        for (d = 0; d < (int)D && st == HIGAN_OK; ++d) {
            const float *const *w = weights + ((int64_t)l * D + d) * 4;
            float *G = cache + higan__cu_lstm_gates_off(B, T, H, D, num_layers, l, d);   /* [B,T,4H] */
            float *Cs = G + B * T * H4;                                                  /* [B,T,H] */
            higan__f_lstm_bias fb;
            higan__f_lstm_pad fp;
            fb.G = G; fb.b_ih = w[2]; fb.b_hh = w[3]; fb.H4 = H4;
            st = higan__cu_map(ctx, B * T * H4, fb, "lstm bias");
            /* input projections of all steps at once: G += in W_ih^T */
            if (st == HIGAN_OK)
                st = higan_cuda_gemm(ctx, 0, 1, B * T, H4, in_dim, 1.0f, in, in_dim, w[0], in_dim, 1.0f, G, H4);
            if (st == HIGAN_OK) st = higan_cuda_zero(ctx, hs, (size_t)(B * H) * sizeof(float));
            if (st == HIGAN_OK) st = higan_cuda_zero(ctx, cs, (size_t)(B * H) * sizeof(float));
            for (s = 0; s < T && st == HIGAN_OK; ++s) {
                higan__f_lstm_step f;
                if (s > 0) st = higan_cuda_gemm(ctx, 0, 1, B, H4, H, 1.0f, hs, H, w[1], H, 0.0f, R, H4);
                else st = higan_cuda_zero(ctx, R, (size_t)(B * H4) * sizeof(float));   /* h0 = 0 */
                f.G = G; f.Cs = Cs; f.out = out; f.hs = hs; f.cs = cs; f.R = R; f.lengths = lengths;
                f.s = s; f.T = T; f.H = H; f.DH = DH; f.d = d;
                if (st == HIGAN_OK) st = higan__cu_map(ctx, B * H, f, "lstm step");
            }
            fp.out = out; fp.lengths = lengths; fp.T = T; fp.H = H; fp.DH = DH; fp.d = d;
            if (st == HIGAN_OK) st = higan__cu_map(ctx, B * T * H, fp, "lstm padding");
        }
    }
    higan_cuda_arena_release(scratch, mark);
    return st;
}
/* Backward step s of direction d, one thread per (b, j): d pre-activations into dG (at time t)
   and dAs (this step's [B,4H], zero for finished samples), dc carried to the previous step.
   dh (recurrent) comes from the GEMM dAs W_hh of the step after (in processing order). */
struct higan__f_lstm_bstep {
    float *dG, *dAs, *dc; const float *dh, *G, *Cs, *dout; const int *lengths; int64_t s, T, H, DH; int d;
    HIGAN__CU_HD void operator()(int64_t i) const {
        const int64_t b = i / H, j = i % H, H4 = 4 * H, len = higan__cu_len(lengths, b, T);
        int64_t t, tp;
        const float *g, *cc, *cp, *dyo;
        float *da, gi, gf, gg, go, tc, dhj, dcj, c_prev;
        if (len <= s) {   /* not started yet (in reverse time): no gradient */
            dAs[b * H4 + j] = 0.0f; dAs[b * H4 + H + j] = 0.0f;
            dAs[b * H4 + 2 * H + j] = 0.0f; dAs[b * H4 + 3 * H + j] = 0.0f;
            return;
        }
        t = d == 0 ? s : len - 1 - s;
        tp = d == 0 ? t - 1 : t + 1;            /* the step processed before t */
        g = G + (b * T + t) * H4;
        cc = Cs + (b * T + t) * H;
        cp = s > 0 ? Cs + (b * T + tp) * H : NULL;
        dyo = dout + (b * T + t) * DH + d * H;
        da = dG + (b * T + t) * H4;
        gi = g[j]; gf = g[H + j]; gg = g[2 * H + j]; go = g[3 * H + j];
        tc = tanhf(cc[j]);
        dhj = dyo[j] + dh[b * H + j];
        dcj = dc[b * H + j] + dhj * go * (1.0f - tc * tc);
        c_prev = cp ? cp[j] : 0.0f;
        da[j] = dcj * gg * gi * (1.0f - gi);
        da[H + j] = dcj * c_prev * gf * (1.0f - gf);
        da[2 * H + j] = dcj * gi * (1.0f - gg * gg);
        da[3 * H + j] = dhj * tc * go * (1.0f - go);
        dc[b * H + j] = dcj * gf;
        dAs[b * H4 + j] = da[j]; dAs[b * H4 + H + j] = da[H + j];
        dAs[b * H4 + 2 * H + j] = da[2 * H + j]; dAs[b * H4 + 3 * H + j] = da[3 * H + j];
    }
};
/* Hp [B,T,H]: h before step t (the output at the previously processed time), 0 at the start */
struct higan__f_lstm_hprev {
    float *Hp; const float *out; const int *lengths; int64_t T, H, DH; int d;
    HIGAN__CU_HD void operator()(int64_t i) const {
        const int64_t k = i % H, t = (i / H) % T, b = i / (H * T), len = higan__cu_len(lengths, b, T);
        const int64_t tp = d == 0 ? t - 1 : t + 1;
        Hp[i] = (t < len && tp >= 0 && tp < len) ? out[(b * T + tp) * DH + d * H + k] : 0.0f;
    }
};
HIGAN_DEF higan_status higan_cuda_lstm_backward(higan_cuda *ctx, float *dx, float *const *dweights,
                                                const float *dy, const float *y, const float *cache,
                                                const float *x, const int *lengths,
                                                const float *const *weights, int64_t B, int64_t T,
                                                int64_t IN, int64_t H, int num_layers,
                                                int bidirectional, higan_cuda_arena *scratch) {
    const int64_t D = bidirectional ? 2 : 1, DH = D * H, H4 = 4 * H;
    size_t mark;
    float *dG, *Hp, *dbuf[2], *dAs, *dh, *dc;
    int64_t s;
    int l, d, lmin = -1, k;
    higan_status st = HIGAN_OK;
    HIGAN__CU_ASSERT(B > 0 && T > 0 && IN > 0 && H > 0 && num_layers > 0 && scratch);
    /* lowest layer that has to be reached: dx, or the lowest layer with a weight gradient */
    if (dx) lmin = 0;
    else if (dweights)
        for (l = num_layers - 1; l >= 0; --l)
            for (k = 0; k < (int)(D * 4); ++k) if (dweights[(int64_t)l * D * 4 + k]) lmin = l;
    if (lmin < 0) return HIGAN_OK;
    mark = higan_cuda_arena_mark(scratch);
    dG = higan_cuda_arena_floats(scratch, B * T * H4);   /* d pre-activations [B,T,4H] */
    Hp = higan_cuda_arena_floats(scratch, B * T * H);    /* h before each step [B,T,H] */
    dbuf[0] = num_layers > 1 ? higan_cuda_arena_floats(scratch, B * T * DH) : NULL;
    dbuf[1] = num_layers > 2 ? higan_cuda_arena_floats(scratch, B * T * DH) : NULL;
    dAs = higan_cuda_arena_floats(scratch, B * H4);      /* this step's d pre-activations [B,4H] */
    dh = higan_cuda_arena_floats(scratch, B * H);        /* recurrent dh [B,H] */
    dc = higan_cuda_arena_floats(scratch, B * H);        /* recurrent dc [B,H] */
    if (!dG || !Hp || (num_layers > 1 && !dbuf[0]) || (num_layers > 2 && !dbuf[1]) || !dAs || !dh || !dc) {
        higan_cuda_arena_release(scratch, mark);
        return higan_cuda_arena_status(scratch);
    }
    for (l = num_layers - 1; l >= lmin && st == HIGAN_OK; --l) {
        const float *in = l == 0 ? x : cache + higan__cu_lstm_out_off(B, T, DH, l - 1);
        const int64_t in_dim = l == 0 ? IN : DH;
        const float *out = l == num_layers - 1 ? y : cache + higan__cu_lstm_out_off(B, T, DH, l);
        const float *dout = l == num_layers - 1 ? dy : dbuf[l & 1];
        float *din = l == lmin ? (l == 0 ? dx : NULL) : dbuf[(l - 1) & 1];
        if (din && l > 0) st = higan_cuda_zero(ctx, din, (size_t)(B * T * DH) * sizeof(float));
        for (d = 0; d < (int)D && st == HIGAN_OK; ++d) {
            const float *const *w = weights + ((int64_t)l * D + d) * 4;
            float *const *dw = dweights ? dweights + ((int64_t)l * D + d) * 4 : NULL;
            const float *G = cache + higan__cu_lstm_gates_off(B, T, H, D, num_layers, l, d);
            const float *Cs = G + B * T * H4;
            st = higan_cuda_zero(ctx, dG, (size_t)(B * T * H4) * sizeof(float));
            if (st == HIGAN_OK) st = higan_cuda_zero(ctx, dh, (size_t)(B * H) * sizeof(float));
            if (st == HIGAN_OK) st = higan_cuda_zero(ctx, dc, (size_t)(B * H) * sizeof(float));
            for (s = T - 1; s >= 0 && st == HIGAN_OK; --s) {
                higan__f_lstm_bstep f;
                f.dG = dG; f.dAs = dAs; f.dc = dc; f.dh = dh; f.G = G; f.Cs = Cs; f.dout = dout;
                f.lengths = lengths; f.s = s; f.T = T; f.H = H; f.DH = DH; f.d = d;
                st = higan__cu_map(ctx, B * H, f, "lstm backward step");
                /* dh for the previous step: dA W_hh (nothing flows before the first step) */
                if (st == HIGAN_OK && s > 0)
                    st = higan_cuda_gemm(ctx, 0, 0, B, H, H4, 1.0f, dAs, H4, w[1], H, 0.0f, dh, H);
            }
            /* weight gradients over all steps at once */
            if (st == HIGAN_OK && dw && dw[0])
                st = higan_cuda_gemm(ctx, 1, 0, H4, in_dim, B * T, 1.0f, dG, H4, in, in_dim, 1.0f, dw[0], in_dim);
            if (st == HIGAN_OK && dw && dw[1]) {
                higan__f_lstm_hprev fh;
                fh.Hp = Hp; fh.out = out; fh.lengths = lengths; fh.T = T; fh.H = H; fh.DH = DH; fh.d = d;
                st = higan__cu_map(ctx, B * T * H, fh, "lstm h prev");
                if (st == HIGAN_OK)
                    st = higan_cuda_gemm(ctx, 1, 0, H4, H, B * T, 1.0f, dG, H4, Hp, H, 1.0f, dw[1], H);
            }
            for (k = 2; k < 4 && st == HIGAN_OK; ++k) {   /* db[j] += column sums of dG, rows in order */
                higan__f_col_sum fc;
                if (!dw || !dw[k]) continue;
                fc.db = dw[k]; fc.dy = dG; fc.N = B * T; fc.OUT = H4;
                st = higan__cu_map(ctx, H4, fc, "lstm db");
            }
            if (st == HIGAN_OK && din)
                st = higan_cuda_gemm(ctx, 0, 0, B * T, in_dim, H4, 1.0f, dG, H4, w[0], in_dim, 1.0f, din, in_dim);
        }
    }
    higan_cuda_arena_release(scratch, mark);
    return st;
}

/* ==== ADAM (implementation) ================================================================ */
/* higan_adam_step's float math, each operation rounded as on the CPU (no FMA contraction):
   m = b1 m + (1-b1) g; v = b2 v + ((1-b2) g) g; w -= step_size * (m / (sqrt(v) / bc2 + eps)). */
struct higan__f_adam {
    float *w, *m, *v; const float *g; float b1, b2, omb1, omb2, step_size, bc2_sqrt, eps;
    HIGAN__CU_HD void operator()(int64_t i) const {
        const float gi = g[i];
        const float mi = HIGAN__FADD(HIGAN__FMUL(m[i], b1), HIGAN__FMUL(gi, omb1));
        const float vi = HIGAN__FADD(HIGAN__FMUL(v[i], b2), HIGAN__FMUL(HIGAN__FMUL(omb2, gi), gi));
        const float den = HIGAN__FADD(HIGAN__FDIV(HIGAN__FSQRT(vi), bc2_sqrt), eps);
        m[i] = mi;
        v[i] = vi;
        w[i] = HIGAN__FSUB(w[i], HIGAN__FMUL(step_size, HIGAN__FDIV(mi, den)));
    }
};
static higan_status higan__cu_adam(higan_cuda *ctx, float *w, const float *g, float *m, float *v, int64_t n,
                                   float b1, float b2, float omb1, float omb2, float step_size, float bc2_sqrt,
                                   float eps) {
    higan__f_adam f;
    f.w = w; f.m = m; f.v = v; f.g = g;
    f.b1 = b1; f.b2 = b2; f.eps = eps; f.omb1 = omb1; f.omb2 = omb2;
    f.step_size = step_size; f.bc2_sqrt = bc2_sqrt;
    return higan__cu_map(ctx, n, f, "adam step");
}
/* the scalars (and the step count) come from higan.h's higan_adam_update, the CPU's code */
HIGAN_DEF higan_status higan_cuda_adam_step(higan_cuda *ctx, higan_adam *opt, higan_cuda_params *d) {
    higan_backend be;
    higan_status saved;
    HIGAN__CU_ASSERT(d->block != NULL);
    higan__cu_table_begin(&be, ctx, &saved);
    higan_adam_update(opt, &be, d->value, d->grad, d->adam_m, d->adam_v, d->n_param);
    return higan__cu_table_end(ctx, saved);
}

/* ---- trainers' reductions: only scalars come back to the host ---------------------------- */
struct higan__r_mean {   /* ws[0] (as a double) = mean */
    double *out; const float *x; int64_t n;
    HIGAN__CU_HD double term(int64_t, int64_t i) const { return (double)x[i]; }
    HIGAN__CU_HD void finish(int64_t, double s) const { out[0] = s / (double)(n > 0 ? n : 1); }
};
struct higan__r_ssdev {  /* ws[1] = sum of (x - mean)^2, mean from ws[0] */
    double *out; const float *x;
    HIGAN__CU_HD double term(int64_t, int64_t i) const { const double d = (double)x[i] - out[0]; return d * d; }
    HIGAN__CU_HD void finish(int64_t, double s) const { out[1] = s; }
};
/* Moments of x into host out[2] (mean, sum of squared deviations), in double, synchronous. */
HIGAN_DEF higan_status higan_cuda_moments(higan_cuda *ctx, double *out, const float *x, int64_t n) {
    higan__r_mean rm;
    higan__r_ssdev rs;
    double *dev = (double *)(void *)(ctx->ws + HIGAN_CUDA_WS_FLOATS - 8);   /* 2 doubles, 8-aligned */
    rm.out = dev; rm.x = x; rm.n = n;
    rs.out = dev; rs.x = x;
    HIGAN__CU_TRY(higan__cu_rows(ctx, 1, n, rm, "moments mean"));
    HIGAN__CU_TRY(higan__cu_rows(ctx, 1, n, rs, "moments squares"));
    return higan_cuda_download(ctx, out, dev, 2 * sizeof(double));
}
struct higan__b_nonfinite {   /* one block: the first index of a NaN / Inf (n when none) */
    double *out; const float *x; int64_t n;
    HIGAN__CU_HD void operator()(int64_t, double *sh, float *shf, float *) const {
        int64_t i, first = n;
        float v;
        for (i = HIGAN__TID; i < n; i += HIGAN__NTHR) {
            const float xi = x[i];
            if (!(xi == xi) || xi > 3.4e38f || xi < -3.4e38f) { first = i; break; }
        }
        v = first < n ? 0.0f : 1.0f;
        v = higan__block_argmin(v, &first, shf, sh);
        if (HIGAN__TID == 0) out[0] = (double)(v == 0.0f ? first : -1);
    }
};
/* *first (host) = index of the first NaN or Inf of x, -1 when all are finite; synchronous. */
HIGAN_DEF higan_status higan_cuda_find_nonfinite(higan_cuda *ctx, int64_t *first, const float *x, int64_t n) {
    higan__b_nonfinite f;
    double r = -1.0;
    double *dev = (double *)(void *)(ctx->ws + HIGAN_CUDA_WS_FLOATS - 8);
    *first = -1;
    if (n <= 0) return HIGAN_OK;
    f.out = dev; f.x = x; f.n = n;
    HIGAN__CU_TRY(higan__cu_blocks(ctx, 1, f, 0, "find nonfinite"));
    HIGAN__CU_TRY(higan_cuda_download(ctx, &r, dev, sizeof r));
    *first = (int64_t)r;
    return HIGAN_OK;
}

/* ==== BACKEND (implementation) ============================================================== */
struct higan__f_fill {
    float *y; float v;
    HIGAN__CU_HD void operator()(int64_t i) const { y[i] = v; }
};
HIGAN_DEF higan_status higan_cuda_fill(higan_cuda *ctx, float *dst, float value, int64_t n) {
    higan__f_fill f;
    f.y = dst; f.v = value;
    return higan__cu_map(ctx, n, f, "fill");
}
struct higan__f_copy_rows {   /* one thread per copied value */
    float *dst; const float *src; int64_t ds, ss, cols;
    HIGAN__CU_HD void operator()(int64_t i) const {
        const int64_t r = i / cols, c = i % cols;
        dst[r * ds + c] = src[r * ss + c];
    }
};
HIGAN_DEF higan_status higan_cuda_copy_rows(higan_cuda *ctx, float *dst, int64_t dst_stride, const float *src,
                                            int64_t src_stride, int64_t cols, int64_t rows) {
    higan__f_copy_rows f;
    HIGAN__CU_ASSERT(cols >= 0 && rows >= 0);
    if (cols == 0) return HIGAN_OK;
    f.dst = dst; f.src = src; f.ds = dst_stride; f.ss = src_stride; f.cols = cols;
    return higan__cu_map(ctx, rows * cols, f, "copy rows");
}
struct higan__f_mask_width {
    float *y; const float *x; const int *lens; float value; int64_t CH, W;
    HIGAN__CU_HD void operator()(int64_t i) const {
        const int64_t w = i % W, n = i / (CH * W);
        y[i] = w < (int64_t)lens[n] ? x[i] : value;
    }
};
HIGAN_DEF higan_status higan_cuda_mask_width_forward(higan_cuda *ctx, float *y, const float *x, const int *lens,
                                                     float value, int64_t N, int64_t C, int64_t H, int64_t W) {
    higan__f_mask_width f;
    f.y = y; f.x = x; f.lens = lens; f.value = value; f.CH = C * H; f.W = W;
    return higan__cu_map(ctx, N * C * H * W, f, "mask width");
}

struct higan__f_mask_width_back {
    float *dx; const float *dy; const int *lens; int64_t CH, W;
    HIGAN__CU_HD void operator()(int64_t i) const {
        const int64_t w = i % W, n = i / (CH * W);
        if (w < (int64_t)lens[n]) dx[i] += dy[i];
    }
};
HIGAN_DEF higan_status higan_cuda_mask_width_backward(higan_cuda *ctx, float *dx, const float *dy, const int *lens,
                                                      int64_t N, int64_t C, int64_t H, int64_t W) {
    higan__f_mask_width_back f;
    if (!dx) return HIGAN_OK;
    f.dx = dx; f.dy = dy; f.lens = lens; f.CH = C * H; f.W = W;
    return higan__cu_map(ctx, N * C * H * W, f, "mask width backward");
}

/* ---- BigGAN side: div_rows, extract_patches ---- */
struct higan__f_div_rows {   /* y [N, C] = x / den[n]; backward: y is dx (accumulated), x is dy */
    float *y; const float *x; const int *den; int64_t C; int acc;
    HIGAN__CU_HD void operator()(int64_t i) const {
        const float q = HIGAN__FDIV(x[i], (float)den[i / C]);
        y[i] = acc ? HIGAN__FADD(y[i], q) : q;
    }
};
HIGAN_DEF higan_status higan_cuda_div_rows_forward(higan_cuda *ctx, float *y, const float *x, const int *den,
                                                   int64_t N, int64_t C) {
    higan__f_div_rows f;
    f.y = y; f.x = x; f.den = den; f.C = C; f.acc = 0;
    return higan__cu_map(ctx, N * C, f, "div rows");
}
HIGAN_DEF higan_status higan_cuda_div_rows_backward(higan_cuda *ctx, float *dx, const float *dy, const int *den,
                                                    int64_t N, int64_t C) {
    higan__f_div_rows f;
    if (!dx) return HIGAN_OK;
    f.y = dx; f.x = dy; f.den = den; f.C = C; f.acc = 1;
    return higan__cu_map(ctx, N * C, f, "div rows backward");
}
/* patch columns of image b (higan.h's higan__patch_cols: lens NULL = W, > W counts as W,
   shorter than size: none) */
static HIGAN__CU_HD int64_t higan__cu_patch_cols(const int *lens, int64_t b, int64_t W, int64_t size, int64_t step) {
    int64_t len = lens ? (int64_t)lens[b] : W;
    if (len > W) len = W;
    return len < size ? 0 : (len - size) / step + 1;
}
struct higan__f_patches {   /* one thread per (b, r, c < cmax, k, i, j); a column c >= cols_b: nothing */
    float *y; const float *x; const int *lens; int64_t C, H, W, size, step, rows, cmax;
    HIGAN__CU_HD void operator()(int64_t t) const {
        const int64_t j = t % size, ii = (t / size) % size, k = (t / (size * size)) % C;
        const int64_t pc = t / (C * size * size), c = pc % cmax, r = (pc / cmax) % rows, b = pc / (cmax * rows);
        const int64_t cols = higan__cu_patch_cols(lens, b, W, size, step);
        int64_t bb, first = 0;
        if (c >= cols) return;
        for (bb = 0; bb < b; ++bb) first += rows * higan__cu_patch_cols(lens, bb, W, size, step);
        y[(((first + r * cols + c) * C + k) * size + ii) * size + j] =
            x[((b * C + k) * H + r * step + ii) * W + c * step + j];
    }
};
struct higan__f_patches_back {   /* one thread per dx [B, C, H, W] value */
    float *dx; const float *dy; const int *lens; int64_t C, H, W, size, step, rows;
    HIGAN__CU_HD void operator()(int64_t i) const {
        const int64_t w = i % W, h = (i / W) % H, k = (i / (H * W)) % C, b = i / (C * H * W);
        const int64_t cols = higan__cu_patch_cols(lens, b, W, size, step);
        /* the windows r with r step <= h < r step + size (likewise c) that exist */
        const int64_t r0 = h >= size ? (h - size) / step + 1 : 0, r1 = h / step < rows - 1 ? h / step : rows - 1;
        const int64_t c0 = w >= size ? (w - size) / step + 1 : 0, c1 = w / step < cols - 1 ? w / step : cols - 1;
        int64_t bb, first = 0, r, c;
        float acc;
        if (r0 > r1 || c0 > c1) return;
        for (bb = 0; bb < b; ++bb) first += rows * higan__cu_patch_cols(lens, bb, W, size, step);
        acc = dx[i];
        for (r = r0; r <= r1; ++r)   /* the CPU's order: patch row, then column */
            for (c = c0; c <= c1; ++c)
                acc = HIGAN__FADD(acc, dy[((first + r * cols + c) * C + k) * size * size +
                                          (h - r * step) * size + (w - c * step)]);
        dx[i] = acc;
    }
};
HIGAN_DEF higan_status higan_cuda_extract_patches_forward(higan_cuda *ctx, float *y, const float *x, const int *lens,
                                                          int64_t B, int64_t C, int64_t H, int64_t W, int64_t size,
                                                          int64_t step) {
    higan__f_patches f;
    HIGAN__CU_ASSERT(size > 0 && step > 0 && H >= size && (H - size) % step == 0);
    f.y = y; f.x = x; f.lens = lens; f.C = C; f.H = H; f.W = W; f.size = size; f.step = step;
    f.rows = (H - size) / step + 1;
    f.cmax = W >= size ? (W - size) / step + 1 : 0;   /* the most columns an image can have */
    if (f.cmax == 0) return HIGAN_OK;
    return higan__cu_map(ctx, B * f.rows * f.cmax * C * size * size, f, "extract patches");
}
HIGAN_DEF higan_status higan_cuda_extract_patches_backward(higan_cuda *ctx, float *dx, const float *dy,
                                                           const int *lens, int64_t B, int64_t C, int64_t H,
                                                           int64_t W, int64_t size, int64_t step) {
    higan__f_patches_back f;
    if (!dx) return HIGAN_OK;
    HIGAN__CU_ASSERT(size > 0 && step > 0 && H >= size && (H - size) % step == 0);
    f.dx = dx; f.dy = dy; f.lens = lens; f.C = C; f.H = H; f.W = W; f.size = size; f.step = step;
    f.rows = (H - size) / step + 1;
    return higan__cu_map(ctx, B * C * H * W, f, "extract patches backward");
}

HIGAN_DEF void higan_cuda_params_attach(const higan_cuda_params *d, higan_params *p) {
    if (!d) { higan_params_set_device(p, NULL, NULL, NULL, NULL); return; }
    higan__cu_params_match(d, p);
    higan_params_set_device(p, d->value, d->grad, d->buffer, d->ibuffer);
}

/* The table's entries: the higan_cuda_ op, its status kept when it is the first failure. */
static void higan__cub_note(void *c, higan_status st) {
    higan_cuda *ctx = (higan_cuda *)c;
    if (st != HIGAN_OK && ctx->backend_error == HIGAN_OK) ctx->backend_error = st;
}
#define HIGAN__CUB(c) ((higan_cuda *)(c))
static void *higan__cub_alloc(void *c, size_t bytes) {
    void *p = NULL;
    (void)c;
    return higan_cuda_malloc(&p, bytes) == HIGAN_OK ? p : NULL;
}
static void higan__cub_free_memory(void *c, void *p) { (void)c; higan_cuda_free_memory(p); }
static void higan__cub_zero(void *c, void *dst, size_t bytes) { higan__cub_note(c, higan_cuda_zero(HIGAN__CUB(c), dst, bytes)); }
static void higan__cub_copy(void *c, void *dst, const void *src, size_t bytes) {
    if (dst != src) higan__cub_note(c, higan_cuda_copy(HIGAN__CUB(c), dst, src, bytes));
}
static void higan__cub_upload(void *c, void *dst, const void *src, size_t bytes) {
    higan__cub_note(c, higan_cuda_upload(HIGAN__CUB(c), dst, src, bytes));
}
static void higan__cub_download(void *c, void *dst, const void *src, size_t bytes) {
    higan__cub_note(c, higan_cuda_download(HIGAN__CUB(c), dst, src, bytes));
}
static void higan__cub_fill(void *c, float *dst, float value, int64_t n) {
    higan__cub_note(c, higan_cuda_fill(HIGAN__CUB(c), dst, value, n));
}
static void higan__cub_copy_rows(void *c, float *dst, int64_t ds, const float *src, int64_t ss, int64_t cols,
                                 int64_t rows) {
    higan__cub_note(c, higan_cuda_copy_rows(HIGAN__CUB(c), dst, ds, src, ss, cols, rows));
}
static higan_status higan__cub_sync(void *c) {
    higan_cuda *ctx = HIGAN__CUB(c);
    higan_status st = higan_cuda_sync(ctx);
    if (ctx->backend_error != HIGAN_OK) st = ctx->backend_error;
    ctx->backend_error = HIGAN_OK;
    return st;
}
static void higan__cub_linear_forward(void *c, float *y, const float *x, const float *w, const float *b,
                                      int64_t N, int64_t IN, int64_t OUT) {
    higan__cub_note(c, higan_cuda_linear_forward(HIGAN__CUB(c), y, x, w, b, N, IN, OUT));
}
/* conv2d's scratch: a device arena over the free top of the tape's data arena (a higan_arena
   whose base is device memory; its blocks start at the base rounded up to 64 bytes, as
   higan.h's arena does). Overflow is passed back to the tape's arena, with the size needed. */
static void higan__cub_conv2d_forward(void *c, float *y, const float *x, const float *w, const float *b,
                                      const higan_conv2d_shape *s, higan_arena *scratch) {
    higan_cuda_arena view;
    size_t start, off;
    higan_status st;
    memset(&view, 0, sizeof view);
    if (scratch->overflow) { higan__cub_note(c, HIGAN_ERR_NOMEM); return; }
    start = ((size_t)(uintptr_t)scratch->base + 63) & ~(size_t)63;
    off = ((start + scratch->used + 255) & ~(size_t)255) - start;       /* 256-byte aligned view */
    if (off <= scratch->capacity) {
        view.base = (unsigned char *)(uintptr_t)(start + off);
        view.capacity = scratch->capacity - off;
    }
    st = higan_cuda_conv2d_forward(HIGAN__CUB(c), y, x, w, b, s, &view);
    if (view.overflow || (!view.base && higan_cuda_conv2d_scratch_bytes(s) > 0)) {
        scratch->overflow = 1;
        scratch->needed = off + (view.needed > 0 ? view.needed : higan_cuda_conv2d_scratch_bytes(s));
        if (st == HIGAN_OK) st = higan_set_error(HIGAN_ERR_NOMEM, "conv2d: the device arena has no room for "
                                                 "%zu bytes of scratch", higan_cuda_conv2d_scratch_bytes(s));
    } else if (view.peak + off > scratch->peak) {
        scratch->peak = view.peak + off;
    }
    higan__cub_note(c, st);
}
static void higan__cub_spectral_norm_forward(void *c, float *y, float *u, float *v, float *sigma, const float *w,
                                             const float *u0, int64_t out, int64_t in, float eps) {
    higan__cub_note(c, higan_cuda_spectral_norm_forward(HIGAN__CUB(c), y, u, v, sigma, w, u0, out, in, eps));
}
static void higan__cub_batch_norm2d_forward(void *c, float *y, float *mean, float *rstd, const float *x,
                                            const float *weight, const float *bias, float *running_mean,
                                            float *running_var, float momentum, float eps, int batch_stats,
                                            int64_t N, int64_t C, int64_t HW) {
    higan__cub_note(c, higan_cuda_batch_norm2d_forward(HIGAN__CUB(c), y, mean, rstd, x, weight, bias, running_mean,
                                                       running_var, momentum, eps, batch_stats, N, C, HW));
}
static void higan__cub_cond_batch_norm_forward(void *c, float *y, float *mean, float *rstd, const float *x,
                                               const float *gain, const float *bias, float *running_mean,
                                               float *running_var, float momentum, float eps, int batch_stats,
                                               int64_t N, int64_t C, int64_t HW) {
    higan__cub_note(c, higan_cuda_cond_batch_norm_forward(HIGAN__CUB(c), y, mean, rstd, x, gain, bias, running_mean,
                                                          running_var, momentum, eps, batch_stats, N, C, HW));
}
static void higan__cub_embedding_renorm(void *c, float *weight, const int *idx, int64_t n_idx, int64_t num,
                                        int64_t D, float max_norm) {
    higan__cub_note(c, higan_cuda_embedding_renorm(HIGAN__CUB(c), weight, idx, n_idx, num, D, max_norm));
}
static void higan__cub_embedding_forward(void *c, float *y, const float *weight, const int *idx, int64_t n_idx,
                                         int64_t num, int64_t D) {
    higan__cub_note(c, higan_cuda_embedding_forward(HIGAN__CUB(c), y, weight, idx, n_idx, num, D));
}
static void higan__cub_upsample_nearest_forward(void *c, float *y, const float *x, int64_t N, int64_t C,
                                                int64_t H, int64_t W, int sh, int sw) {
    higan__cub_note(c, higan_cuda_upsample_nearest_forward(HIGAN__CUB(c), y, x, N, C, H, W, sh, sw));
}
static void higan__cub_relu_forward(void *c, float *y, const float *x, int64_t n) {
    higan__cub_note(c, higan_cuda_relu_forward(HIGAN__CUB(c), y, x, n));
}
static void higan__cub_tanh_forward(void *c, float *y, const float *x, int64_t n) {
    higan__cub_note(c, higan_cuda_tanh_forward(HIGAN__CUB(c), y, x, n));
}
static void higan__cub_add_forward(void *c, float *y, const float *a, const float *b, int64_t n) {
    higan__cub_note(c, higan_cuda_add_forward(HIGAN__CUB(c), y, a, b, n));
}
static void higan__cub_concat_forward(void *c, float *y, const float *const *xs, const int64_t *sizes, int n,
                                      int64_t outer, int64_t inner) {
    higan__cub_note(c, higan_cuda_concat_forward(HIGAN__CUB(c), y, xs, sizes, n, outer, inner));
}
static void higan__cub_slice_forward(void *c, float *y, const float *x, int64_t outer, int64_t size,
                                     int64_t inner, int64_t start, int64_t len) {
    higan__cub_note(c, higan_cuda_slice_forward(HIGAN__CUB(c), y, x, outer, size, inner, start, len));
}
static void higan__cub_permute_forward(void *c, float *y, const float *x, int ndim, const int64_t *shape,
                                       const int *perm) {
    higan__cub_note(c, higan_cuda_permute_forward(HIGAN__CUB(c), y, x, ndim, shape, perm));
}
static void higan__cub_mask_width_forward(void *c, float *y, const float *x, const int *lens, float value,
                                          int64_t N, int64_t C, int64_t H, int64_t W) {
    higan__cub_note(c, higan_cuda_mask_width_forward(HIGAN__CUB(c), y, x, lens, value, N, C, H, W));
}
static void higan__cub_mul_forward(void *c, float *y, const float *a, const float *b, int64_t n) {
    higan__cub_note(c, higan_cuda_mul_forward(HIGAN__CUB(c), y, a, b, n));
}
static void higan__cub_sum_all_forward(void *c, float *y, const float *x, int64_t n) {
    higan__cub_note(c, higan_cuda_sum_all_forward(HIGAN__CUB(c), y, x, n));
}
static void higan__cub_mean_all_forward(void *c, float *y, const float *x, int64_t n) {
    higan__cub_note(c, higan_cuda_mean_all_forward(HIGAN__CUB(c), y, x, n));
}
static void higan__cub_linear_backward(void *c, float *dx, float *dw, float *db, const float *dy, const float *x,
                                       const float *w, int64_t N, int64_t IN, int64_t OUT) {
    higan__cub_note(c, higan_cuda_linear_backward(HIGAN__CUB(c), dx, dw, db, dy, x, w, N, IN, OUT));
}
/* conv2d backward: the same scratch view as the forward */
static void higan__cub_conv2d_backward(void *c, float *dx, float *dw, float *db, const float *dy, const float *x,
                                       const float *w, const higan_conv2d_shape *s, higan_arena *scratch) {
    higan_cuda_arena view;
    size_t start, off;
    higan_status st;
    memset(&view, 0, sizeof view);
    if (scratch->overflow) { higan__cub_note(c, HIGAN_ERR_NOMEM); return; }
    start = ((size_t)(uintptr_t)scratch->base + 63) & ~(size_t)63;
    off = ((start + scratch->used + 255) & ~(size_t)255) - start;
    if (off <= scratch->capacity) {
        view.base = (unsigned char *)(uintptr_t)(start + off);
        view.capacity = scratch->capacity - off;
    }
    st = higan_cuda_conv2d_backward(HIGAN__CUB(c), dx, dw, db, dy, x, w, s, &view);
    if (view.overflow || (!view.base && higan_cuda_conv2d_scratch_bytes(s) > 0)) {
        scratch->overflow = 1;
        scratch->needed = off + (view.needed > 0 ? view.needed : higan_cuda_conv2d_scratch_bytes(s));
        if (st == HIGAN_OK) st = higan_set_error(HIGAN_ERR_NOMEM, "conv2d backward: the device arena has no room "
                                                 "for %zu bytes of scratch", higan_cuda_conv2d_scratch_bytes(s));
    } else if (view.peak + off > scratch->peak) {
        scratch->peak = view.peak + off;
    }
    higan__cub_note(c, st);
}
static void higan__cub_spectral_norm_backward(void *c, float *dw, const float *dy, const float *w, const float *u,
                                              const float *v, const float *sigma, int64_t out, int64_t in) {
    higan__cub_note(c, higan_cuda_spectral_norm_backward(HIGAN__CUB(c), dw, dy, w, u, v, sigma, out, in));
}
static void higan__cub_batch_norm2d_backward(void *c, float *dx, float *dweight, float *dbias, const float *dy,
                                             const float *x, const float *mean, const float *rstd,
                                             const float *weight, int batch_stats, int64_t N, int64_t C,
                                             int64_t HW) {
    higan__cub_note(c, higan_cuda_batch_norm2d_backward(HIGAN__CUB(c), dx, dweight, dbias, dy, x, mean, rstd, weight,
                                                        batch_stats, N, C, HW));
}
static void higan__cub_cond_batch_norm_backward(void *c, float *dx, float *dgain, float *dbias, const float *dy,
                                                const float *x, const float *mean, const float *rstd,
                                                const float *gain, int batch_stats, int64_t N, int64_t C,
                                                int64_t HW) {
    higan__cub_note(c, higan_cuda_cond_batch_norm_backward(HIGAN__CUB(c), dx, dgain, dbias, dy, x, mean, rstd, gain,
                                                           batch_stats, N, C, HW));
}
static void higan__cub_embedding_backward(void *c, float *dweight, const float *dy, const int *idx, int64_t n_idx,
                                          int64_t num, int64_t D, int padding_idx) {
    higan__cub_note(c, higan_cuda_embedding_backward(HIGAN__CUB(c), dweight, dy, idx, n_idx, num, D, padding_idx));
}
static void higan__cub_upsample_nearest_backward(void *c, float *dx, const float *dy, int64_t N, int64_t C,
                                                 int64_t H, int64_t W, int sh, int sw) {
    higan__cub_note(c, higan_cuda_upsample_nearest_backward(HIGAN__CUB(c), dx, dy, N, C, H, W, sh, sw));
}
static void higan__cub_relu_backward(void *c, float *dx, const float *dy, const float *x, int64_t n) {
    higan__cub_note(c, higan_cuda_relu_backward(HIGAN__CUB(c), dx, dy, x, n));
}
static void higan__cub_tanh_backward(void *c, float *dx, const float *dy, const float *y, int64_t n) {
    higan__cub_note(c, higan_cuda_tanh_backward(HIGAN__CUB(c), dx, dy, y, n));
}
static void higan__cub_add_backward(void *c, float *da, float *db, const float *dy, int64_t n) {
    higan__cub_note(c, higan_cuda_add_backward(HIGAN__CUB(c), da, db, dy, n));
}
static void higan__cub_mul_backward(void *c, float *da, float *db, const float *dy, const float *a, const float *b,
                                    int64_t n) {
    higan__cub_note(c, higan_cuda_mul_backward(HIGAN__CUB(c), da, db, dy, a, b, n));
}
static void higan__cub_concat_backward(void *c, float *const *dxs, const float *dy, const int64_t *sizes, int n,
                                       int64_t outer, int64_t inner) {
    higan__cub_note(c, higan_cuda_concat_backward(HIGAN__CUB(c), dxs, dy, sizes, n, outer, inner));
}
static void higan__cub_slice_backward(void *c, float *dx, const float *dy, int64_t outer, int64_t size,
                                      int64_t inner, int64_t start, int64_t len) {
    higan__cub_note(c, higan_cuda_slice_backward(HIGAN__CUB(c), dx, dy, outer, size, inner, start, len));
}
static void higan__cub_permute_backward(void *c, float *dx, const float *dy, int ndim, const int64_t *shape,
                                        const int *perm) {
    higan__cub_note(c, higan_cuda_permute_backward(HIGAN__CUB(c), dx, dy, ndim, shape, perm));
}
static void higan__cub_mask_width_backward(void *c, float *dx, const float *dy, const int *lens, int64_t N,
                                           int64_t C, int64_t H, int64_t W) {
    higan__cub_note(c, higan_cuda_mask_width_backward(HIGAN__CUB(c), dx, dy, lens, N, C, H, W));
}
static void higan__cub_sum_all_backward(void *c, float *dx, const float *dy, int64_t n) {
    higan__cub_note(c, higan_cuda_sum_all_backward(HIGAN__CUB(c), dx, dy, n));
}
static void higan__cub_mean_all_backward(void *c, float *dx, const float *dy, int64_t n) {
    higan__cub_note(c, higan_cuda_mean_all_backward(HIGAN__CUB(c), dx, dy, n));
}
/* ---- style and recognition networks: the CUDA entries ---- */
/* A device arena over the free top of the tape's data arena (as conv2d's scratch above); after
   the call, higan__cub_nets_done passes an overflow (with the size needed) or the peak back. */
static size_t higan__cub_nets_view(higan_arena *scratch, higan_cuda_arena *view) {
    size_t start, off;
    memset(view, 0, sizeof *view);
    start = ((size_t)(uintptr_t)scratch->base + 63) & ~(size_t)63;
    off = ((start + scratch->used + 255) & ~(size_t)255) - start;       /* 256-byte aligned view */
    if (!scratch->overflow && off <= scratch->capacity) {
        view->base = (unsigned char *)(uintptr_t)(start + off);
        view->capacity = scratch->capacity - off;
    }
    return off;
}
static higan_status higan__cub_nets_done(higan_arena *scratch, const higan_cuda_arena *view, size_t off,
                                         higan_status st, const char *what) {
    if (view->overflow || !view->base) {
        if (!scratch->overflow) {
            scratch->overflow = 1;
            scratch->needed = off + view->needed;
        }
        if (st == HIGAN_OK || st == HIGAN_ERR_NOMEM)
            st = higan_set_error(HIGAN_ERR_NOMEM, "%s: the device arena has no room for its scratch", what);
    } else if (view->peak + off > scratch->peak) {
        scratch->peak = view->peak + off;
    }
    return st;
}
static void higan__cub_max_pool3s2_forward(void *c, float *y, int32_t *argmax, const float *x, int64_t N,
                                           int64_t C, int64_t H, int64_t W) {
    higan__cub_note(c, higan_cuda_max_pool3s2_forward(HIGAN__CUB(c), y, argmax, x, N, C, H, W));
}
static void higan__cub_max_pool3s2_backward(void *c, float *dx, const float *dy, const int32_t *argmax, int64_t N,
                                            int64_t C, int64_t H, int64_t W) {
    higan__cub_note(c, higan_cuda_max_pool3s2_backward(HIGAN__CUB(c), dx, dy, argmax, N, C, H, W));
}
static void higan__cub_pad_forward(void *c, float *y, const float *x, int64_t N, int64_t C, int64_t H, int64_t W,
                                   int top, int bottom, int left, int right, float value) {
    higan__cub_note(c, higan_cuda_pad_forward(HIGAN__CUB(c), y, x, N, C, H, W, top, bottom, left, right, value));
}
static void higan__cub_pad_backward(void *c, float *dx, const float *dy, int64_t N, int64_t C, int64_t H, int64_t W,
                                    int top, int bottom, int left, int right) {
    higan__cub_note(c, higan_cuda_pad_backward(HIGAN__CUB(c), dx, dy, N, C, H, W, top, bottom, left, right));
}
static void higan__cub_leaky_relu_forward(void *c, float *y, const float *x, float slope, int64_t n) {
    higan__cub_note(c, higan_cuda_leaky_relu_forward(HIGAN__CUB(c), y, x, slope, n));
}
static void higan__cub_leaky_relu_backward(void *c, float *dx, const float *dy, const float *x, float slope,
                                           int64_t n) {
    higan__cub_note(c, higan_cuda_leaky_relu_backward(HIGAN__CUB(c), dx, dy, x, slope, n));
}
static void higan__cub_dropout_forward(void *c, float *y, float *mask, const float *x, float p, higan_rng *rng,
                                       int64_t n, higan_arena *host_scratch) {
    higan__cub_note(c, higan_cuda_dropout_forward(HIGAN__CUB(c), y, mask, x, p, rng, n, host_scratch));
}
static void higan__cub_dropout_backward(void *c, float *dx, const float *dy, const float *mask, int64_t n) {
    higan__cub_note(c, higan_cuda_dropout_backward(HIGAN__CUB(c), dx, dy, mask, n));
}
/* relu(dropout(x)): the dropout (host mask, uploaded), then relu in place (NaN stays, as on the CPU) */
static void higan__cub_dropout_relu_forward(void *c, float *y, float *mask, const float *x, float p,
                                            higan_rng *rng, int64_t n, higan_arena *host_scratch) {
    higan_status st = higan_cuda_dropout_forward(HIGAN__CUB(c), y, mask, x, p, rng, n, host_scratch);
    if (st == HIGAN_OK) st = higan_cuda_relu_forward(HIGAN__CUB(c), y, y, n);
    higan__cub_note(c, st);
}
struct higan__f_dropout_relu_back {   /* dx += dy * mask where y > 0 (two roundings, as the CPU) */
    float *dx; const float *dy, *y, *mask;
    HIGAN__CU_HD void operator()(int64_t i) const {
        if (y[i] > 0.0f) dx[i] = HIGAN__FADD(dx[i], HIGAN__FMUL(dy[i], mask[i]));
    }
};
static void higan__cub_dropout_relu_backward(void *c, float *dx, const float *dy, const float *y,
                                             const float *mask, int64_t n) {
    higan__f_dropout_relu_back f;
    if (!dx) return;
    f.dx = dx; f.dy = dy; f.y = y; f.mask = mask;
    higan__cub_note(c, higan__cu_map(HIGAN__CUB(c), n, f, "dropout relu backward"));
}
static void higan__cub_log_softmax_forward(void *c, float *y, const float *x, int64_t rows, int64_t cols) {
    higan__cub_note(c, higan_cuda_log_softmax_forward(HIGAN__CUB(c), y, x, rows, cols));
}
static void higan__cub_log_softmax_backward(void *c, float *dx, const float *dy, const float *y, int64_t rows,
                                            int64_t cols) {
    higan__cub_note(c, higan_cuda_log_softmax_backward(HIGAN__CUB(c), dx, dy, y, rows, cols));
}
static void higan__cub_lstm_forward(void *c, float *y, float *cache, const float *x, const int *lengths,
                                    const float *const *weights, int64_t B, int64_t T, int64_t IN, int64_t H,
                                    int num_layers, int bidirectional, higan_arena *scratch) {
    higan_cuda_arena view;
    size_t off = higan__cub_nets_view(scratch, &view);
    higan_status st = view.base ? higan_cuda_lstm_forward(HIGAN__CUB(c), y, cache, x, lengths, weights, B, T, IN, H,
                                                          num_layers, bidirectional, &view)
                                : HIGAN_ERR_NOMEM;
    higan__cub_note(c, higan__cub_nets_done(scratch, &view, off, st, "lstm"));
}
static void higan__cub_lstm_backward(void *c, float *dx, float *const *dweights, const float *dy, const float *y,
                                     const float *cache, const float *x, const int *lengths,
                                     const float *const *weights, int64_t B, int64_t T, int64_t IN, int64_t H,
                                     int num_layers, int bidirectional, higan_arena *scratch) {
    higan_cuda_arena view;
    size_t off = higan__cub_nets_view(scratch, &view);
    higan_status st = view.base ? higan_cuda_lstm_backward(HIGAN__CUB(c), dx, dweights, dy, y, cache, x, lengths,
                                                           weights, B, T, IN, H, num_layers, bidirectional, &view)
                                : HIGAN_ERR_NOMEM;
    higan__cub_note(c, higan__cub_nets_done(scratch, &view, off, st, "lstm backward"));
}
static void higan__cub_ctc_loss_forward(void *c, float *y, float *nll, float *alpha, const float *log_probs,
                                        const int *targets, const int *input_lengths, const int *target_lengths,
                                        int64_t T, int64_t B, int64_t C, int blank, int zero_infinity) {
    higan__cub_note(c, higan_cuda_ctc_loss_forward(HIGAN__CUB(c), y, nll, alpha, log_probs, targets, input_lengths,
                                                   target_lengths, T, B, C, blank, zero_infinity));
}
static void higan__cub_ctc_loss_backward(void *c, float *dlog_probs, const float *dy, const float *log_probs,
                                         const float *nll, const float *alpha, const int *targets,
                                         const int *input_lengths, const int *target_lengths, int64_t T, int64_t B,
                                         int64_t C, int blank, int zero_infinity, int max_target_length,
                                         higan_arena *scratch) {
    (void)scratch;   /* beta lives in shared memory */
    higan__cub_note(c, higan_cuda_ctc_loss_backward(HIGAN__CUB(c), dlog_probs, dy, log_probs, nll, alpha, targets,
                                                    input_lengths, target_lengths, T, B, C, blank, zero_infinity,
                                                    max_target_length));
}
static void higan__cub_cross_entropy_forward(void *c, float *y, float *lse, const float *logits, const int *labels,
                                             int64_t N, int64_t C) {
    higan__cub_note(c, higan_cuda_cross_entropy_forward(HIGAN__CUB(c), y, lse, logits, labels, N, C));
}
static void higan__cub_cross_entropy_backward(void *c, float *dlogits, const float *dy, const float *logits,
                                              const float *lse, const int *labels, int64_t N, int64_t C) {
    higan__cub_note(c, higan_cuda_cross_entropy_backward(HIGAN__CUB(c), dlogits, dy, logits, lse, labels, N, C));
}
static void higan__cub_argmax_rows(void *c, int *best, const float *x, int64_t rows, int64_t cols) {
    higan__cub_note(c, higan_cuda_argmax_rows(HIGAN__CUB(c), best, x, rows, cols));
}
/* ---- BigGAN side: Discriminator, PatchDiscriminator, GAN losses ---- */
static void higan__cub_avg_pool2_forward(void *c, float *y, const float *x, int64_t N, int64_t C, int64_t H,
                                         int64_t W) {
    higan__cub_note(c, higan_cuda_avg_pool2_forward(HIGAN__CUB(c), y, x, N, C, H, W));
}
static void higan__cub_avg_pool2_backward(void *c, float *dx, const float *dy, int64_t N, int64_t C, int64_t H,
                                          int64_t W) {
    if (dx) higan__cub_note(c, higan_cuda_avg_pool2_backward(HIGAN__CUB(c), dx, dy, N, C, H, W));
}
static void higan__cub_sub_forward(void *c, float *y, const float *a, const float *b, int64_t n) {
    higan__cub_note(c, higan_cuda_sub_forward(HIGAN__CUB(c), y, a, b, n));
}
static void higan__cub_sub_backward(void *c, float *da, float *db, const float *dy, int64_t n) {
    higan__cub_note(c, higan_cuda_sub_backward(HIGAN__CUB(c), da, db, dy, n));
}
static void higan__cub_scale_forward(void *c, float *y, const float *x, float s, int64_t n) {
    higan__cub_note(c, higan_cuda_scale_forward(HIGAN__CUB(c), y, x, s, n));
}
static void higan__cub_scale_backward(void *c, float *dx, const float *dy, float s, int64_t n) {
    higan__cub_note(c, higan_cuda_scale_backward(HIGAN__CUB(c), dx, dy, s, n));
}
static void higan__cub_add_nc_forward(void *c, float *y, const float *x, const float *b, int64_t N, int64_t C,
                                      int64_t HW) {
    higan__cub_note(c, higan_cuda_add_nc_forward(HIGAN__CUB(c), y, x, b, N, C, HW));
}
static void higan__cub_add_nc_backward(void *c, float *dx, float *db, const float *dy, int64_t N, int64_t C,
                                       int64_t HW) {
    higan__cub_note(c, higan_cuda_add_nc_backward(HIGAN__CUB(c), dx, db, dy, N, C, HW));
}
static void higan__cub_exp_forward(void *c, float *y, const float *x, int64_t n) {
    higan__cub_note(c, higan_cuda_exp_forward(HIGAN__CUB(c), y, x, n));
}
static void higan__cub_exp_backward(void *c, float *dx, const float *dy, const float *y, int64_t n) {
    higan__cub_note(c, higan_cuda_exp_backward(HIGAN__CUB(c), dx, dy, y, n));
}
static void higan__cub_masked_width_forward(void *c, float *y, const float *x, const int *lens, int64_t N,
                                            int64_t C, int64_t H, int64_t W, float eps, int mean) {
    higan__cub_note(c, mean ? higan_cuda_masked_mean_width_forward(HIGAN__CUB(c), y, x, lens, N, C, H, W, eps)
                            : higan_cuda_masked_sum_width_forward(HIGAN__CUB(c), y, x, lens, N, C, H, W));
}
static void higan__cub_masked_width_backward(void *c, float *dx, const float *dy, const int *lens, int64_t N,
                                             int64_t C, int64_t H, int64_t W, float eps, int mean) {
    higan__cub_note(c, mean ? higan_cuda_masked_mean_width_backward(HIGAN__CUB(c), dx, dy, lens, N, C, H, W, eps)
                            : higan_cuda_masked_sum_width_backward(HIGAN__CUB(c), dx, dy, lens, N, C, H, W));
}
static void higan__cub_div_rows_forward(void *c, float *y, const float *x, const int *den, int64_t N, int64_t C) {
    higan__cub_note(c, higan_cuda_div_rows_forward(HIGAN__CUB(c), y, x, den, N, C));
}
static void higan__cub_div_rows_backward(void *c, float *dx, const float *dy, const int *den, int64_t N, int64_t C) {
    higan__cub_note(c, higan_cuda_div_rows_backward(HIGAN__CUB(c), dx, dy, den, N, C));
}
static void higan__cub_extract_patches_forward(void *c, float *y, const float *x, const int *lens, int64_t B,
                                               int64_t C, int64_t H, int64_t W, int64_t size, int64_t step) {
    higan__cub_note(c, higan_cuda_extract_patches_forward(HIGAN__CUB(c), y, x, lens, B, C, H, W, size, step));
}
static void higan__cub_extract_patches_backward(void *c, float *dx, const float *dy, const int *lens, int64_t B,
                                                int64_t C, int64_t H, int64_t W, int64_t size, int64_t step) {
    higan__cub_note(c, higan_cuda_extract_patches_backward(HIGAN__CUB(c), dx, dy, lens, B, C, H, W, size, step));
}
static void higan__cub_hinge_d_real_forward(void *c, float *y, const float *x, int64_t n) {
    higan__cub_note(c, higan_cuda_hinge_d_real_forward(HIGAN__CUB(c), y, x, n));
}
static void higan__cub_hinge_d_real_backward(void *c, float *dx, const float *dy, const float *x, int64_t n) {
    higan__cub_note(c, higan_cuda_hinge_d_real_backward(HIGAN__CUB(c), dx, dy, x, n));
}
static void higan__cub_hinge_d_fake_forward(void *c, float *y, const float *x, int64_t n) {
    higan__cub_note(c, higan_cuda_hinge_d_fake_forward(HIGAN__CUB(c), y, x, n));
}
static void higan__cub_hinge_d_fake_backward(void *c, float *dx, const float *dy, const float *x, int64_t n) {
    higan__cub_note(c, higan_cuda_hinge_d_fake_backward(HIGAN__CUB(c), dx, dy, x, n));
}
static void higan__cub_hinge_g_forward(void *c, float *y, const float *x, int64_t n) {
    higan__cub_note(c, higan_cuda_hinge_g_forward(HIGAN__CUB(c), y, x, n));
}
static void higan__cub_hinge_g_backward(void *c, float *dx, const float *dy, int64_t n) {
    higan__cub_note(c, higan_cuda_hinge_g_backward(HIGAN__CUB(c), dx, dy, n));
}
static void higan__cub_masked_l1_forward(void *c, float *y, const float *a, const float *b, const int *lens,
                                         int64_t N, int64_t M, int64_t W) {
    higan__cub_note(c, higan_cuda_masked_l1_forward(HIGAN__CUB(c), y, a, b, lens, N, M, W));
}
static void higan__cub_masked_l1_backward(void *c, float *da, float *db, const float *dy, const float *a,
                                          const float *b, const int *lens, int64_t N, int64_t M, int64_t W) {
    higan__cub_note(c, higan_cuda_masked_l1_backward(HIGAN__CUB(c), da, db, dy, a, b, lens, N, M, W));
}
static void higan__cub_kl_gaussian_forward(void *c, float *y, const float *mu, const float *logvar, int64_t N,
                                           int64_t D) {
    higan__cub_note(c, higan_cuda_kl_gaussian_forward(HIGAN__CUB(c), y, mu, logvar, N, D));
}
static void higan__cub_kl_gaussian_backward(void *c, float *dmu, float *dlogvar, const float *dy, const float *mu,
                                            const float *logvar, int64_t N, int64_t D) {
    higan__cub_note(c, higan_cuda_kl_gaussian_backward(HIGAN__CUB(c), dmu, dlogvar, dy, mu, logvar, N, D));
}
/* The cx loss's scratch: a device arena over the free top of the tape's data arena (as
   conv2d's, 256-byte aligned); what does not fit marks the data arena overflowed with the
   size needed, so the tape op sees it in higan_arena_status(t->data). */
static size_t higan__cub_top_view(higan_arena *a, higan_cuda_arena *view) {
    size_t start, off;
    memset(view, 0, sizeof *view);
    start = ((size_t)(uintptr_t)a->base + 63) & ~(size_t)63;
    off = ((start + a->used + 255) & ~(size_t)255) - start;
    if (!a->overflow && off <= a->capacity) {
        view->base = (unsigned char *)(uintptr_t)(start + off);
        view->capacity = a->capacity - off;
    }
    return off;
}
static higan_status higan__cub_top_done(higan_arena *a, const higan_cuda_arena *view, size_t off, size_t want,
                                        higan_status st, const char *what) {
    if (view->overflow || !view->base) {
        if (!a->overflow) a->needed = off + (view->needed > 0 ? view->needed : want);
        a->overflow = 1;
        if (st == HIGAN_OK) st = higan_set_error(HIGAN_ERR_NOMEM, "%s: the device arena has no room for %zu bytes "
                                                 "of scratch", what, want);
    } else if (view->peak + off > a->peak) {
        a->peak = view->peak + off;
    }
    return st;
}
static void higan__cub_cx_loss_forward(void *c, float *y, higan_cx_cache *cache, const float *feat_t,
                                       const float *feat_i, int64_t N, int64_t C, int64_t P, int64_t Q, float sigma,
                                       float b, higan_arena *scratch) {
    higan_cuda_arena view;
    size_t off = higan__cub_top_view(scratch, &view);
    higan_status st = view.base ? higan_cuda_cx_loss_forward(HIGAN__CUB(c), y, cache, feat_t, feat_i, N, C, P, Q,
                                                             sigma, b, &view) : HIGAN_OK;
    higan__cub_note(c, higan__cub_top_done(scratch, &view, off, higan_cuda_cx_loss_scratch_bytes(N, C, P, Q), st,
                                           "cx loss"));
}
static void higan__cub_cx_loss_backward(void *c, float *dfeat_t, float *dfeat_i, const float *dy,
                                        const higan_cx_cache *cache, int64_t N, int64_t C, int64_t P, int64_t Q,
                                        float sigma, float b, higan_arena *scratch) {
    higan_cuda_arena view;
    size_t off;
    higan_status st = HIGAN_OK;
    if (!dfeat_t && !dfeat_i) return;
    off = higan__cub_top_view(scratch, &view);
    if (view.base) st = higan_cuda_cx_loss_backward(HIGAN__CUB(c), dfeat_t, dfeat_i, dy, cache, N, C, P, Q, sigma, b,
                                                    &view);
    higan__cub_note(c, higan__cub_top_done(scratch, &view, off, higan_cuda_cx_loss_scratch_bytes(N, C, P, Q), st,
                                           "cx loss backward"));
}
/* ---- parameter stores and trainers ---- */
static void higan__cub_adam_step(void *c, float *w, const float *g, float *m, float *v, int64_t n, float b1,
                                 float b2, float omb1, float omb2, float step_size, float bc2_sqrt, float eps) {
    higan__cub_note(c, higan__cu_adam(HIGAN__CUB(c), w, g, m, v, n, b1, b2, omb1, omb2, step_size, bc2_sqrt, eps));
}
static void higan__cub_moments(void *c, double *out, const float *x, int64_t n) {
    higan_status st = higan_cuda_moments(HIGAN__CUB(c), out, x, n);
    if (st != HIGAN_OK) out[0] = out[1] = NAN;   /* and the error at the next sync */
    higan__cub_note(c, st);
}
static void higan__cub_find_nonfinite(void *c, int64_t *first, const float *x, int64_t n) {
    higan__cub_note(c, higan_cuda_find_nonfinite(HIGAN__CUB(c), first, x, n));
}
HIGAN_DEF void higan_cuda_backend(higan_backend *b, higan_cuda *ctx) {
    memset(b, 0, sizeof *b);
    b->name = "cuda";
    b->device = 1;
    b->ctx = ctx;
    ctx->backend_error = HIGAN_OK;
    b->upload = higan__cub_upload;
    b->download = higan__cub_download;
#define HIGAN__CUB_ENTRY(e) b->e = higan__cub_##e;
    HIGAN_BACKEND_ENTRIES(HIGAN__CUB_ENTRY)
#undef HIGAN__CUB_ENTRY
}

#endif /* HIGAN_CUDA__IMPLEMENTED */
#endif /* HIGAN_CUDA_IMPLEMENTATION */
