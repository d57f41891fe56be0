/* higan_bench: HiGAN+ training and inference workloads timed on fixed IAM-shaped batches, with
   the GEMM work done (GFLOP/s), the fraction of this machine's measured peak and each
   workload's peak memory. bench/torch_bench.py runs the same workloads with PyTorch and
   bench/run.sh puts both in one table (see bench/README.md).

   build/bench_higan_bench [--threads N] [--repeats N] [--warmup N] [--workload NAME]...
                           [--precision fp32|bf16] [--json FILE] [--gan-config FILE]
                           [--ocr-config FILE] [--gan-batch N] [--max-arena-mb N] [--no-fork]

   The fixed batch (issue 7): batch 8, real words of [10, 8, 6, 6, 4, 4, 4, 1] characters
   (style images 64 x 32*len, padded to 64 x 320), augmented images of widths [224, 128, 160,
   192, 128, 160, 128, 32] (padded to 224), fake words of [10, 9, 8, 6, 6, 2, 1, 1] characters
   (labels padded to 10), writer ids fixed. The fake words, z and the VAE noise are injected
   into the trainer (tr.inject_d / tr.inject_g), so every repeat and both implementations
   do the same work. Networks at the official IAM sizes: the model.* keys of
   configs/gan_iam.cfg (G ch 64, style 32, embedding 120, D and PatchD ch 64; StyleBackbone and
   Recognizer resolution 16, max_dim 256, BiLSTM depth 2, 372 writers), the Recognizer of
   configs/ocr_iam.cfg (dropout 0.2) for its own training step. Weights are the official
   random initialisations (no pretrained files needed: the work does not depend on them).

   Workloads
     d_step     one D step (higan_gan_d_step): three generator passes under no_grad, D and
                PatchD on fakes, real and augmented images, backward, Adam on D + P
     g_step     one G step (higan_gan_g_step): generator passes, D, PatchD, the frozen
                recognizer (3 CTC), backbone (info, writer id, contextual loss), five gradient
                probes, backward, Adam on G + E
     iteration  the amortised iteration, D + G / num_critic_train (4): derived from the two
                rows above (times, work), its memory the larger of the two
     gen8       generator inference (eval, no_grad) of the 8 fake words in one batch
     gen64      the same for 64 words (the 8 lengths 8 times) in one batch
     ocr_train  one Recognizer training step (higan_ocr_train_step): batch 8 of the real
                images, train-mode forward, CTC, backward, Adam (lr 1e-3)
     ocr_fwd    the Recognizer's eval forward on the same batch (no_grad)

   Method: each workload runs in a forked child (setup, --warmup untimed runs, then --repeats
   timed runs); the parent reads the child's ru_maxrss (wait4) as its peak memory, which
   includes the process's setup (weights, optimizer state, arena pages actually touched).
   Work = higan_gemm_flops() of one run (2*M*N*K of every GEMM: convolutions, linears, LSTM).
   The peak is measured in a child too: a register-only AVX-512 FMA loop (fp32), a
   vdpbf16ps loop (AVX512-BF16) and a tdpbf16ps loop (AMX-BF16) where the CPU has them, on one
   core and on --threads threads at once, each from the threads' CPU time (what the cores can
   do) and from wall time (what this run got on a shared machine). "% peak" = GFLOP/s (wall)
   over the CPU-time all-threads peak of the precision in use (fp32: the FMA loop; bf16: AMX
   if present, else vdpbf16ps); "%pk cpu" = GFLOP per CPU second over one core's peak. "cpu" =
   CPU time / (threads x wall time) of a run: below 100 % when other work shares the cores.
   --precision bf16 calls higan_set_precision(HIGAN_PRECISION_BF16).
   --gan-batch N runs the D and G steps on N of the 8 words (entries b * 8 / N of each list:
   the full batch needs more memory than a 24 GB machine has, see bench/README.md);
   --max-arena-mb caps the tape arena's growth (default half of MemAvailable), so that a
   workload too big for the machine fails with "the arena needs more than ..." instead of
   pushing a shared machine into the OOM killer.
   --no-fork runs everything in this process (peak memory is then the running maximum).

   More workloads (not in "all", so run.sh's table with PyTorch is unchanged), on the CPU or
   with --device cuda on the GPU:
     gen1       generator inference of 1 word (10 characters), words/s
     gen256     generator inference of 256 words (the 8 fake lengths 32 times) in one batch
     gan8       one full GAN iteration at batch 8 (the 8 words, whatever --gan-batch says): the
                D step then the G step (higan_gan_iteration when G is due); the D and G parts
                are printed too, with the amortised iteration D + G / 4 as "iteration" has it
     gan32      the same at batch 32 (the 8 words 4 times)
   The GPU (build/bench_higan_bench_cuda: this file built by nvcc with -DHIGAN_WITH_CUDA and
   higan_cuda.cuh; _emu: through its host emulation, to try the path without a GPU):
     --device cuda   the workloads run on a device tape (higan_cuda_backend; the Generator's
                     weights mirrored on the device, activations in a device arena that grows
                     after an overflow); default workloads gen1, gen256, gan8, gan32. Each
                     timed run ends with higan_tape_sync (cudaStreamSynchronize), so the wall
                     time covers the queued GPU work; warm-up runs come first (cuBLAS and
                     kernel set-up, arena sizing). GEMM work is not counted on the device
                     (GFLOP 0): compare times and words/s with the CPU rows of the same
                     workloads (--device cpu --workload gen1,gen256,gan8,gan32).
     --precision fp32|tf32|bf16   on the device: higan_cuda_set_precision (tf32: device only)
     gan8, gan32     the GAN iteration on the device: the trainer's stores moved there
                     (higan_gan_trainer_set_backend), a device tape whose arenas the steps grow.
   The peak loops (x86 intrinsics) are left out of the CUDA build; CUDA is first touched in
   each workload's child (a forked process must not inherit a CUDA context). */
#ifndef _GNU_SOURCE                 /* (g++, under nvcc too, defines it) */
#  define _GNU_SOURCE               /* fork, wait4, syscall */
#endif
#define HIGAN_IMPLEMENTATION
#include "higan.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/resource.h>
#include <sys/time.h>
#include <sys/types.h>
#include <sys/wait.h>
#ifdef HIGAN_WITH_CUDA
#  define HIGAN_CUDA_IMPLEMENTATION
#  include "higan_cuda.cuh"
#endif
#if defined(__x86_64__) && defined(__GNUC__) && !defined(HIGAN_WITH_CUDA)
#  include <cpuid.h>
#  include <immintrin.h>
#  include <sys/syscall.h>
#  define BENCH_X86 1
#endif
#ifdef _OPENMP
#  include <omp.h>
#endif

#define B_WORDS 8
#define L_MAX 10
#define MAX_REPEATS 256

static const int REAL_LENS[B_WORDS] = {10, 8, 6, 6, 4, 4, 4, 1};
static const int FAKE_LENS[B_WORDS] = {10, 9, 8, 6, 6, 2, 1, 1};
static const int AUG_WIDTHS[B_WORDS] = {224, 128, 160, 192, 128, 160, 128, 32};

#define N_BIG 256                   /* words of gen256 */
#define MAX_GAN 32                  /* words of gan32: the 8 words 4 times */

enum { W_D, W_G, W_ITER, W_GEN8, W_GEN64, W_OCR_TRAIN, W_OCR_FWD, W_GEN1, W_GEN256, W_GAN8, W_GAN32, W_COUNT };
static const char *const WL_NAMES[W_COUNT] = {"d_step", "g_step", "iteration", "gen8", "gen64", "ocr_train",
                                              "ocr_fwd", "gen1", "gen256", "gan8", "gan32"};
/* "all": the CPU set compared with PyTorch; with --device cuda the GPU set */
#define WL_ALL_CPU ((1u << W_GEN1) - 1)
#define WL_ALL_CUDA ((1u << W_GEN1) | (1u << W_GEN256) | (1u << W_GAN8) | (1u << W_GAN32))
#define WL_DEVICE_OK ((1u << W_GEN8) | (1u << W_GEN64) | WL_ALL_CUDA)   /* what --device cuda runs */
static int gen_words(int w) { return w == W_GEN1 ? 1 : w == W_GEN8 ? B_WORDS : w == W_GEN64 ? 64 : w == W_GEN256 ? N_BIG : 0; }
static int gan_words(int w) { return w == W_GAN8 ? B_WORDS : w == W_GAN32 ? MAX_GAN : 0; }

/* ---- options and results ------------------------------------------------------------------- */
typedef struct {
    int threads, repeats, warmup, bf16, fork, gan_batch;
    int cuda, tf32;                 /* --device cuda; --precision tf32 (device only) */
    size_t arena_max_mb;            /* arena growth limit (0: none) */
    unsigned want;                  /* bit per workload */
    const char *json, *gan_cfg, *ocr_cfg;
} bench_opts;

/* one workload's result, sent from the child through a pipe */
typedef struct {
    int ok, n, nonfinite;
    double t[MAX_REPEATS];
    double t_d[MAX_REPEATS];        /* gan8, gan32: the D step's part of each run (the rest: G) */
    double cpu[MAX_REPEATS];        /* process CPU seconds of each run (all threads) */
    double flops;                   /* GEMM flops of one run (the last) */
    double arena_mb;                /* the tape arena's high-water mark */
    double setup_s;
    double peak_mb;                 /* ru_maxrss of the child (set by the parent) */
    char msg[256];
    char device[256];               /* --device cuda: the GPU's name */
} wl_result;

typedef struct {
    double fp32_1, fp32_n, bf16_1, bf16_n, amx_1, amx_n;   /* GFLOP/s over wall time; 0: absent */
    double fp32_1c, fp32_nc, bf16_1c, bf16_nc, amx_1c, amx_nc;   /* over each thread's CPU time */
    int has_bf16, has_amx, amx_os;  /* amx_os: the kernel granted the tile state */
    int ok;
} peak_result;

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}
static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}
static void stats(const double *t, int n, double *med, double *mn, double *mx) {
    double s[MAX_REPEATS];
    memcpy(s, t, sizeof(double) * (size_t)n);
    qsort(s, (size_t)n, sizeof *s, cmp_double);
    *med = n % 2 ? s[n / 2] : 0.5 * (s[n / 2 - 1] + s[n / 2]);
    *mn = s[0];
    *mx = s[n - 1];
}

/* ---- peak: register-only loops --------------------------------------------------------------- */
static volatile float sink;
#ifdef BENCH_X86
/* 12 independent FMA chains: 12 * 16 lanes * 2 flops per iteration */
__attribute__((target("avx512f"))) static float loop_fma(int64_t iters) {
    __m512 a0 = _mm512_set1_ps(0.f), a1 = _mm512_set1_ps(1.f), a2 = _mm512_set1_ps(2.f), a3 = _mm512_set1_ps(3.f);
    __m512 a4 = _mm512_set1_ps(4.f), a5 = _mm512_set1_ps(5.f), a6 = _mm512_set1_ps(6.f), a7 = _mm512_set1_ps(7.f);
    __m512 a8 = _mm512_set1_ps(8.f), a9 = _mm512_set1_ps(9.f), a10 = _mm512_set1_ps(10.f), a11 = _mm512_set1_ps(11.f);
    const __m512 m = _mm512_set1_ps(0.999999f), d = _mm512_set1_ps(1e-7f);
    int64_t it;
    for (it = 0; it < iters; ++it) {
        a0 = _mm512_fmadd_ps(a0, m, d); a1 = _mm512_fmadd_ps(a1, m, d); a2 = _mm512_fmadd_ps(a2, m, d);
        a3 = _mm512_fmadd_ps(a3, m, d); a4 = _mm512_fmadd_ps(a4, m, d); a5 = _mm512_fmadd_ps(a5, m, d);
        a6 = _mm512_fmadd_ps(a6, m, d); a7 = _mm512_fmadd_ps(a7, m, d); a8 = _mm512_fmadd_ps(a8, m, d);
        a9 = _mm512_fmadd_ps(a9, m, d); a10 = _mm512_fmadd_ps(a10, m, d); a11 = _mm512_fmadd_ps(a11, m, d);
    }
    a0 = _mm512_add_ps(_mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(a2, a3)),
                       _mm512_add_ps(_mm512_add_ps(a4, a5), _mm512_add_ps(a6, a7)));
    a0 = _mm512_add_ps(a0, _mm512_add_ps(_mm512_add_ps(a8, a9), _mm512_add_ps(a10, a11)));
    return _mm512_reduce_add_ps(a0);
}
#define FLOPS_FMA (12.0 * 16 * 2)

/* vdpbf16ps: 16 lanes, each 2 bf16 products added to an fp32 sum (4 flops); 12 chains */
__attribute__((target("avx512f,avx512bf16"))) static float loop_bf16(int64_t iters) {
    /* distinct starting values: identical chains would be merged into one by the compiler */
    __m512 a0 = _mm512_set1_ps(0.f), a1 = _mm512_set1_ps(1.f), a2 = _mm512_set1_ps(2.f), a3 = _mm512_set1_ps(3.f);
    __m512 a4 = _mm512_set1_ps(4.f), a5 = _mm512_set1_ps(5.f), a6 = _mm512_set1_ps(6.f), a7 = _mm512_set1_ps(7.f);
    __m512 a8 = _mm512_set1_ps(8.f), a9 = _mm512_set1_ps(9.f), a10 = _mm512_set1_ps(10.f), a11 = _mm512_set1_ps(11.f);
    const __m512bh x = (__m512bh)_mm512_set1_epi32(0x3f803f80);     /* 1.0, 1.0 */
    const __m512bh y = (__m512bh)_mm512_set1_epi32(0x35803580);     /* 2^-20, 2^-20 */
    int64_t it;
    for (it = 0; it < iters; ++it) {
        a0 = _mm512_dpbf16_ps(a0, x, y); a1 = _mm512_dpbf16_ps(a1, x, y); a2 = _mm512_dpbf16_ps(a2, x, y);
        a3 = _mm512_dpbf16_ps(a3, x, y); a4 = _mm512_dpbf16_ps(a4, x, y); a5 = _mm512_dpbf16_ps(a5, x, y);
        a6 = _mm512_dpbf16_ps(a6, x, y); a7 = _mm512_dpbf16_ps(a7, x, y); a8 = _mm512_dpbf16_ps(a8, x, y);
        a9 = _mm512_dpbf16_ps(a9, x, y); a10 = _mm512_dpbf16_ps(a10, x, y); a11 = _mm512_dpbf16_ps(a11, x, y);
    }
    a0 = _mm512_add_ps(_mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(a2, a3)),
                       _mm512_add_ps(_mm512_add_ps(a4, a5), _mm512_add_ps(a6, a7)));
    a0 = _mm512_add_ps(a0, _mm512_add_ps(_mm512_add_ps(a8, a9), _mm512_add_ps(a10, a11)));
    return _mm512_reduce_add_ps(a0);
}
#define FLOPS_BF16 (12.0 * 16 * 4)

/* AMX-BF16: C[16x16 fp32] += A[16x32 bf16] B[32x16 bf16 pairs], 16*16*32*2 flops per
   tdpbf16ps, into four independent accumulator tiles. Untested on this machine (no AMX);
   it runs in the peak child, so a fault there only loses the AMX figure. */
#  if defined(__linux__) && ((defined(__GNUC__) && __GNUC__ >= 11) || defined(__clang__))
#    define BENCH_AMX_CODE 1
typedef struct {
    unsigned char palette_id, start_row, reserved[14];
    unsigned short colsb[16];
    unsigned char rows[16];
} amx_tilecfg;
__attribute__((target("amx-tile,amx-bf16"))) static float loop_amx(int64_t iters) {
    static unsigned short abuf[16 * 32] __attribute__((aligned(64)));
    static unsigned short bbuf[16 * 32] __attribute__((aligned(64)));
    float cbuf[16 * 16] __attribute__((aligned(64)));
    amx_tilecfg cfg;
    int64_t it;
    int i;
    for (i = 0; i < 16 * 32; ++i) { abuf[i] = 0x3f80; bbuf[i] = 0x3580; }
    memset(&cfg, 0, sizeof cfg);
    cfg.palette_id = 1;
    for (i = 0; i < 6; ++i) { cfg.rows[i] = 16; cfg.colsb[i] = 64; }
    _tile_loadconfig(&cfg);
    _tile_zero(0); _tile_zero(1); _tile_zero(2); _tile_zero(3);
    _tile_loadd(4, abuf, 64);
    _tile_loadd(5, bbuf, 64);
    for (it = 0; it < iters; ++it) {
        _tile_dpbf16ps(0, 4, 5); _tile_dpbf16ps(1, 4, 5); _tile_dpbf16ps(2, 4, 5); _tile_dpbf16ps(3, 4, 5);
    }
    _tile_stored(0, cbuf, 64);
    _tile_release();
    return cbuf[0];
}
#    define FLOPS_AMX (4.0 * 16 * 16 * 32 * 2)
#  endif

static int cpu_has_amx(void) {
    unsigned a, b, c, d;
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return 0;
    return (d >> 22 & 1) && (d >> 24 & 1);     /* AMX-BF16, AMX-TILE */
}
#endif /* BENCH_X86 */

static double process_cpu(void) {
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}
#ifdef BENCH_X86
static double thread_cpu(void) {
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}
#endif

/* GFLOP/s of loop k (0 fma, 1 bf16, 2 amx) on n threads at once, best of 3: *cpu_best from
   each thread's own CPU time (what the cores can do, whatever else runs on them), the
   return value from wall time (what this process got while the machine was as loaded as
   it was). */
#ifdef BENCH_X86   /* (not in the CUDA build) */
#define MAX_PEAK_THREADS 1024
static double run_peak(int k, int n, int64_t iters, double *cpu_best) {
    static double cpu_gf[MAX_PEAK_THREADS];
    double best = 0, flops = 0;
    int r;
    if (n > MAX_PEAK_THREADS) n = MAX_PEAK_THREADS;
    *cpu_best = 0;
#ifdef BENCH_X86
    flops = k == 0 ? FLOPS_FMA : k == 1 ? FLOPS_BF16 : 0;
#  ifdef BENCH_AMX_CODE
    if (k == 2) flops = FLOPS_AMX;
#  endif
#endif
    for (r = 0; r < 3 && flops > 0; ++r) {
        double t0 = now(), t;
        int i;
#ifdef _OPENMP
#  pragma omp parallel for num_threads(n) schedule(static, 1)
#endif
        for (i = 0; i < n; ++i) {
            float s = 0;
            double c0 = thread_cpu();
#ifdef BENCH_X86
            if (k == 0) s = loop_fma(iters);
            else if (k == 1) s = loop_bf16(iters);
#  ifdef BENCH_AMX_CODE
            else s = loop_amx(iters);
#  endif
#endif
            if (s == 12345.678f) sink = s;
            cpu_gf[i] = flops * (double)iters / (thread_cpu() - c0) * 1e-9;
        }
        t = now() - t0;
        if (flops * (double)iters * n / t * 1e-9 > best) best = flops * (double)iters * n / t * 1e-9;
        for (t = 0, i = 0; i < n; ++i) t += cpu_gf[i];
        if (t > *cpu_best) *cpu_best = t;
    }
    return best;
}

#endif

static void measure_peak(peak_result *p, int threads) {
    memset(p, 0, sizeof *p);
#ifdef BENCH_X86
    p->fp32_1 = run_peak(0, 1, 10000000, &p->fp32_1c);
    p->fp32_n = run_peak(0, threads, 10000000, &p->fp32_nc);
    p->has_bf16 = __builtin_cpu_supports("avx512bf16") != 0;
    if (p->has_bf16) {
        p->bf16_1 = run_peak(1, 1, 5000000, &p->bf16_1c);
        p->bf16_n = run_peak(1, threads, 5000000, &p->bf16_nc);
    }
    p->has_amx = cpu_has_amx();
#  ifdef BENCH_AMX_CODE
    /* Linux hands out the AMX tile state only on request (ARCH_REQ_XCOMP_PERM, XTILEDATA) */
    if (p->has_amx && syscall(SYS_arch_prctl, 0x1023, 18) == 0) {
        p->amx_os = 1;
        p->amx_1 = run_peak(2, 1, 2000000, &p->amx_1c);
        p->amx_n = run_peak(2, threads, 2000000, &p->amx_nc);
    }
#  endif
#else
    (void)threads;
#endif
    p->ok = 1;
}

/* ---- the fixed batch ---------------------------------------------------------------------- */
typedef struct {
    float *imgs, *aug, *z_d, *eps_d, *z_g, *eps_g, *z64;
    int labels[MAX_GAN * L_MAX], label_lens[MAX_GAN], img_lens[MAX_GAN], aug_lens[MAX_GAN], wids[MAX_GAN];
    int fake_d[MAX_GAN * L_MAX], fake_g[MAX_GAN * L_MAX], fake_lens[MAX_GAN];
    int labels64[N_BIG * L_MAX], lens64[N_BIG];   /* gen64 (the first 64), gen1, gen256 */
    int64_t width, aug_width;
    higan_batch batch;
    higan_gan_draws dd, dg;
} bench_data;

static void word_labels(higan_rng *r, int *labels, const int *lens, int n) {
    int b, j;
    for (b = 0; b < n; ++b)
        for (j = 0; j < L_MAX; ++j)
            labels[b * L_MAX + j] = j < lens[b] ? 2 + (int)(higan_rng_u64(r) % 78) : 0;   /* 2..79 */
}
/* [n, 1, 64, W] in [-1, 1] inside each width, -1 (background) beyond it, as the loader pads */
static float *word_images(higan_rng *r, const int *widths, int n, int64_t W) {
    float *x = (float *)malloc(sizeof(float) * (size_t)(n * 64 * W));
    int b;
    int64_t y, c;
    if (!x) return NULL;
    higan_rng_fill_uniform(r, x, n * 64 * W, -1.0f, 1.0f);
    for (b = 0; b < n; ++b)
        for (y = 0; y < 64; ++y)
            for (c = widths[b]; c < W; ++c) x[((int64_t)b * 64 + y) * W + c] = -1.0f;
    return x;
}

/* The batch of n words: entries b * 8 / n of the lists (all 8 for n = 8; --gan-batch 2 takes
   words 0 and 4: real 10 and 4 characters, fake 10 and 6, aug widths 224 and 128). Word 0
   is always in, so the label width stays 10 and the images 320 pixels wide. n > 8 (gan32):
   the 8 words n / 8 times. */
static int make_data(bench_data *d, int64_t style_dim, int n) {
    higan_rng r;
    int b, rl[MAX_GAN], fl[MAX_GAN];
    memset(d, 0, sizeof *d);
    higan_rng_seed(&r, 20240607);
    d->width = (int64_t)HIGAN_CHAR_WIDTH * L_MAX;
    d->aug_width = 0;
    for (b = 0; b < n; ++b) {
        int k = n <= B_WORDS ? b * B_WORDS / n : b % B_WORDS;
        rl[b] = REAL_LENS[k];
        fl[b] = FAKE_LENS[k];
        d->label_lens[b] = REAL_LENS[k];
        d->img_lens[b] = HIGAN_CHAR_WIDTH * REAL_LENS[k];      /* process_style: 32 px per character */
        d->aug_lens[b] = AUG_WIDTHS[k];
        d->fake_lens[b] = FAKE_LENS[k];
        d->wids[b] = (37 * k + 5) % 372;
        if (AUG_WIDTHS[k] > d->aug_width) d->aug_width = AUG_WIDTHS[k];
    }
    word_labels(&r, d->labels, rl, n);
    word_labels(&r, d->fake_d, fl, n);
    word_labels(&r, d->fake_g, fl, n);
    for (b = 0; b < 64; ++b) d->lens64[b] = FAKE_LENS[b % B_WORDS];
    word_labels(&r, d->labels64, d->lens64, 64);
    d->imgs = word_images(&r, d->img_lens, n, d->width);
    d->aug = word_images(&r, d->aug_lens, n, d->aug_width);
    d->z_d = (float *)malloc(sizeof(float) * (size_t)(4 * MAX_GAN * style_dim + N_BIG * style_dim));
    if (!d->imgs || !d->aug || !d->z_d) return 0;
    d->eps_d = d->z_d + MAX_GAN * style_dim;
    d->z_g = d->eps_d + MAX_GAN * style_dim;
    d->eps_g = d->z_g + MAX_GAN * style_dim;
    d->z64 = d->eps_g + MAX_GAN * style_dim;
    higan_rng_fill_normal(&r, d->z_d, 4 * MAX_GAN * style_dim + 64 * style_dim, 0.0f, 1.0f);
    /* words 64 .. 255 (gen256) after everything else: the other workloads' data as before */
    for (b = 64; b < N_BIG; ++b) d->lens64[b] = FAKE_LENS[b % B_WORDS];
    word_labels(&r, d->labels64 + 64 * L_MAX, d->lens64 + 64, N_BIG - 64);
    higan_rng_fill_normal(&r, d->z64 + 64 * style_dim, (N_BIG - 64) * style_dim, 0.0f, 1.0f);
    d->batch.B = n;
    d->batch.width = d->width;
    d->batch.imgs = d->imgs;
    d->batch.img_lens = d->img_lens;
    d->batch.label_width = L_MAX;
    d->batch.labels = d->labels;
    d->batch.label_lens = d->label_lens;
    d->batch.wids = d->wids;
    d->batch.aug_width = d->aug_width;
    d->batch.aug_imgs = d->aug;
    d->batch.aug_lens = d->aug_lens;
    d->dd.labels = d->fake_d; d->dd.lens = d->fake_lens; d->dd.z = d->z_d; d->dd.eps = d->eps_d;
    d->dg.labels = d->fake_g; d->dg.lens = d->fake_lens; d->dg.z = d->z_g; d->dg.eps = d->eps_g;
    return 1;
}
static void free_data(bench_data *d) {
    free(d->imgs); free(d->aug); free(d->z_d);
    memset(d, 0, sizeof *d);
}

/* ---- configurations ------------------------------------------------------------------------- */
/* The model.* keys of a training config applied to the official defaults (the file's other
   sections are ignored); the defaults alone when the file cannot be read. */
static higan_model_config read_model_config(unsigned nets, const char *path) {
    higan_model_config mc = higan_model_default_config(nets);
    higan_config c;
    higan_config_init(&c);
    if (path && higan_config_load(&c, path) == HIGAN_OK) {
        higan_config_model(&c, &mc);
        if (c.status != HIGAN_OK) {
            fprintf(stderr, "higan_bench: %s: %s; using the official defaults\n", path, higan_last_error());
            mc = higan_model_default_config(nets);
        }
    } else if (path) {
        fprintf(stderr, "higan_bench: cannot read %s; using the official defaults\n", path);
    }
    higan_config_free(&c);
    return mc;
}

/* ---- workloads ----------------------------------------------------------------------------- */
typedef struct {
    const bench_opts *o;
    bench_data data;
    higan_model_config gan_mc, ocr_mc;
    /* GAN */
    higan_gan_trainer tr;
    /* generator only */
    higan_params gp;
    higan_generator G;
    /* recognizer */
    higan_model ocr;
    higan_adam ocr_opt;
    higan_rng rng;
    higan_arena arena;
    higan_tape tape;
    int nonfinite;
    double d_s;                     /* gan8, gan32: the last run's D step, seconds */
#ifdef HIGAN_WITH_CUDA
    /* --device cuda: the context, its table, the Generator's device mirror, the tape's host
       arena (variables, contexts) and device arena (every float buffer) */
    higan_cuda cuda;
    higan_backend be;
    higan_cuda_params dp;
    higan_arena host, dev;
    int cuda_on;
#endif
} bench_ctx;

static int tape_setup(bench_ctx *c, size_t mb) {
    if (c->o->arena_max_mb && mb > c->o->arena_max_mb) mb = c->o->arena_max_mb;
    if (higan_arena_init(&c->arena, mb << 20) != HIGAN_OK) return 0;
    return higan_tape_init(&c->tape, &c->arena, 1 << 14) == HIGAN_OK;
}

/* The Generator workloads' weights (official random init; the work does not depend on them). */
static int gen_setup(bench_ctx *c) {
    higan_rng_seed(&c->rng, 7);
    higan_params_init(&c->gp);
    higan_generator_register(&c->G, &c->gp, "Generator", &c->gan_mc.G);
    if (higan_params_alloc(&c->gp) != HIGAN_OK) return 0;
    higan_generator_init(&c->G, &c->rng);
    return 1;
}

/* The GAN trainer (IAM shapes: the model.* keys of --gan-config) on n words of the fixed batch,
   with the draws injected (every run does the same work). B and R without dropout, as
   train_gan runs them. */
static int gan_setup(bench_ctx *c, int n) {
    higan_model_config mc = c->gan_mc;
    higan_gan_options go = higan_gan_default_options();
    mc.B.dropout = 0.0f;
    mc.R.cnn.dropout = 0.0f;
    go.arena_max = c->o->arena_max_mb << 20;
    if (higan_gan_trainer_init(&c->tr, &mc, &go, NULL, 123456) != HIGAN_OK) return 0;
    higan_gan_set_epoch(&c->tr, 0);
    if (!make_data(&c->data, mc.G.style_dim, n)) return 0;
    c->tr.inject_d = &c->data.dd;
    c->tr.inject_g = &c->data.dg;
    return 1;
}

/* --device cuda: a device tape for workload w (its own CUDA context: this runs in the
   workload's child). */
static int setup_device(bench_ctx *c, int w, char *msg, char *device) {
#ifdef HIGAN_WITH_CUDA
    size_t dev_mb = 256;
    if (!((1u << w) & WL_DEVICE_OK)) {
        snprintf(msg, 256, "%s runs on the CPU only (--device cpu)", WL_NAMES[w]);
        return 0;
    }
    if (!higan_cuda_available()) { snprintf(msg, 256, "--device cuda: no CUDA device"); return 0; }
    if (higan_cuda_init(&c->cuda, 0) != HIGAN_OK) goto fail;
    c->cuda_on = 1;
    (void)higan_cuda_device_name(0, device, 256);
    if (higan_cuda_set_precision(&c->cuda, c->o->tf32 ? HIGAN_PRECISION_TF32
                                          : c->o->bf16 ? HIGAN_PRECISION_BF16 : HIGAN_PRECISION_FP32) != HIGAN_OK)
        goto fail;
    higan_cuda_backend(&c->be, &c->cuda);
    if (w == W_GAN8 || w == W_GAN32) {
        /* the trainer as on the CPU, its stores moved to the device (higan_gan_trainer_set_backend:
           weights, Adam moments, buffers, snapshot room); the steps grow both arenas themselves */
        if (!gan_setup(c, gan_words(w)) || higan_gan_trainer_set_backend(&c->tr, &c->be) != HIGAN_OK) goto fail;
    } else {
        if (!gen_setup(c) || !make_data(&c->data, c->gan_mc.G.style_dim, B_WORDS)) goto fail;
        if (higan_cuda_params_init(&c->cuda, &c->dp, &c->gp) != HIGAN_OK ||
            higan_cuda_params_upload(&c->cuda, &c->dp, &c->gp, HIGAN_CUDA_ALL) != HIGAN_OK)
            goto fail;
        higan_cuda_params_attach(&c->dp, &c->gp);
    }
    if (c->o->arena_max_mb && dev_mb > c->o->arena_max_mb) dev_mb = c->o->arena_max_mb;
    if (higan_arena_init(&c->host, (size_t)64 << 20) != HIGAN_OK ||
        higan_backend_arena_init(&c->dev, &c->be, dev_mb << 20) != HIGAN_OK ||
        higan_tape_init(&c->tape, &c->host, 1 << 14) != HIGAN_OK)
        goto fail;
    higan_tape_set_backend(&c->tape, &c->be, &c->dev);
    return 1;
fail:
    snprintf(msg, 256, "device setup: %.200s", higan_last_error());
    return 0;
#else
    (void)c; (void)w; (void)device;
    snprintf(msg, 256, "--device cuda needs build/bench_higan_bench_cuda (this file built by nvcc with "
                       "-DHIGAN_WITH_CUDA)");
    return 0;
#endif
}

static int setup(bench_ctx *c, int w, char *msg) {
    int64_t sd;
    if (w == W_D || w == W_G) {
        if (!gan_setup(c, c->o->gan_batch) || !tape_setup(c, 2048)) goto fail;
        return 1;
    }
    if (w == W_GAN8 || w == W_GAN32) {   /* the same iteration as on the device, on the CPU */
        if (!gan_setup(c, gan_words(w)) || !tape_setup(c, w == W_GAN8 ? 2048 : 8192)) goto fail;
        return 1;
    }
    if (gen_words(w)) {
        if (!gen_setup(c)) goto fail;
        sd = c->gan_mc.G.style_dim;
        if (!make_data(&c->data, sd, B_WORDS) || !tape_setup(c, gen_words(w) <= B_WORDS ? 256 : 2048)) goto fail;
        return 1;
    }
    if (w == W_OCR_TRAIN || w == W_OCR_FWD) {
        higan_model_config mc = c->ocr_mc;
        if (higan_model_init(&c->ocr, &mc, 123456) != HIGAN_OK) goto fail;
        c->ocr.store[HIGAN_STORE_OCR].frozen = 0;
        c->ocr_opt = higan_adam_default(1e-3);
        higan_rng_seed(&c->rng, 11);
        if (!make_data(&c->data, 1, B_WORDS) || !tape_setup(c, 512)) goto fail;
        return 1;
    }
fail:
    snprintf(msg, 256, "setup: %.200s", higan_last_error());
    return 0;
}

/* After an overflow: a bigger arena (as higan_train_grow: 1.25 x needed, at least double)
   unless that passes --max-arena-mb; 0 with msg set when it cannot grow. */
static int grow(bench_ctx *c, char *msg) {
    size_t lim = c->o->arena_max_mb << 20, cap = c->arena.needed + c->arena.needed / 4;
    if (cap < 2 * c->arena.capacity) cap = 2 * c->arena.capacity;
    if (c->arena.overflow && lim && cap > lim) {
        snprintf(msg, 256, "the arena needs more than %.0f MB (limit --max-arena-mb %.0f)",
                 (double)c->arena.needed / 1048576.0, (double)lim / 1048576.0);
        return 0;
    }
    if (higan_train_grow(&c->tape)) return 1;
    snprintf(msg, 256, "%.200s", higan_last_error());
    return 0;
}

#ifdef HIGAN_WITH_CUDA
/* --device cuda after an overflow: the arena that overflowed grows (1.25 x needed, at least
   double; the device one within --max-arena-mb), the tape keeps its backend. */
static int grow_device(bench_ctx *c, char *msg) {
    size_t lim = c->o->arena_max_mb << 20;
    if (c->dev.overflow) {
        size_t cap = c->dev.needed + c->dev.needed / 4;
        if (cap < 2 * c->dev.capacity) cap = 2 * c->dev.capacity;
        if (lim && cap > lim) {
            snprintf(msg, 256, "the device arena needs more than %.0f MB (limit --max-arena-mb %.0f)",
                     (double)c->dev.needed / 1048576.0, (double)lim / 1048576.0);
            return 0;
        }
        higan_backend_arena_free(&c->dev, &c->be);
        if (higan_backend_arena_init(&c->dev, &c->be, cap) != HIGAN_OK) {
            snprintf(msg, 256, "%.200s", higan_last_error());
            return 0;
        }
    }
    if (c->host.overflow || c->tape.overflow) {
        size_t cap = c->host.overflow ? 2 * c->host.needed : c->host.capacity;
        int entries = c->tape.overflow ? 2 * c->tape.capacity : c->tape.capacity;
        higan_tape_free(&c->tape);
        higan_arena_free(&c->host);
        if (higan_arena_init(&c->host, cap) != HIGAN_OK || higan_tape_init(&c->tape, &c->host, entries) != HIGAN_OK) {
            snprintf(msg, 256, "%.200s", higan_last_error());
            return 0;
        }
    }
    higan_tape_set_backend(&c->tape, &c->be, &c->dev);   /* the new arena (or the same) */
    higan_tape_reset(&c->tape);
    return 1;
}
#endif

/* An eval forward under no_grad; grows the arena and runs again when it overflows. On a
   device tape z is uploaded, and the run ends with a sync (the GPU's work is done). */
static int gen_forward(bench_ctx *c, int n, char *msg) {
    int attempt;
    const int *labels = n == B_WORDS ? c->data.fake_d : c->data.labels64;
    const int *lens = n == B_WORDS ? c->data.fake_lens : c->data.lens64;
    for (attempt = 0; attempt < 16; ++attempt) {
        int64_t zs[2];
        higan_var *z, *y;
        higan_tape_reset(&c->tape);
        higan_no_grad_begin(&c->tape);
        zs[0] = n; zs[1] = c->gan_mc.G.style_dim;
        z = c->o->cuda ? higan_var_upload(&c->tape, c->data.z64, 2, zs) : higan_var_wrap(&c->tape, c->data.z64, 2, zs);
        y = higan_generator_forward(&c->tape, &c->G, z, labels, lens, L_MAX, 0);
        higan_no_grad_end(&c->tape);
#ifdef HIGAN_WITH_CUDA
        if (c->o->cuda) {
            higan_status st = higan_tape_sync(&c->tape);
            if (y && st == HIGAN_OK) return 1;
            if (st != HIGAN_ERR_NOMEM || !(c->dev.overflow || c->host.overflow || c->tape.overflow)) {
                snprintf(msg, 256, "generator on the device: %.200s", higan_last_error());
                return 0;
            }
            if (!grow_device(c, msg)) return 0;
            continue;
        }
#endif
        if (y) return 1;
        if (!grow(c, msg)) return 0;
    }
    snprintf(msg, 256, "generator: the arena keeps overflowing");
    return 0;
}

static int ocr_forward(bench_ctx *c, char *msg) {
    int attempt;
    for (attempt = 0; attempt < 16; ++attempt) {
        int64_t s[4];
        higan_var *x, *y;
        higan_tape_reset(&c->tape);
        higan_no_grad_begin(&c->tape);
        s[0] = B_WORDS; s[1] = 1; s[2] = HIGAN_IMAGE_HEIGHT; s[3] = c->data.width;
        x = higan_var_wrap(&c->tape, c->data.imgs, 4, s);
        y = higan_recognizer_forward(&c->tape, &c->ocr.R, x, c->data.img_lens, 0, NULL);
        higan_no_grad_end(&c->tape);
        if (y) return 1;
        if (!grow(c, msg)) return 0;
    }
    snprintf(msg, 256, "recognizer: the arena keeps overflowing");
    return 0;
}

/* gan8, gan32: one full GAN iteration, the D step then the G step on the same batch (what
   higan_gan_iteration does when the G step is due). On a device each step ends with a sync
   (higan__gan_step), and the run with one more, so both times cover the queued GPU work. A
   non-finite loss still did the step's work (Adam skipped): counted, not an error. */
static int gan_iteration(bench_ctx *c, int w, char *msg) {
    higan_status st;
    double t0 = now();
    st = higan_gan_d_step(&c->tr, &c->tape, &c->data.batch, NULL);
    c->d_s = now() - t0;
    if (st == HIGAN_GAN_NONFINITE) ++c->nonfinite;
    else if (st != HIGAN_OK) goto fail;
    st = higan_gan_g_step(&c->tr, &c->tape, &c->data.batch, NULL);
    if (st == HIGAN_GAN_NONFINITE) ++c->nonfinite;
    else if (st != HIGAN_OK) goto fail;
#ifdef HIGAN_WITH_CUDA
    if (c->o->cuda && (st = higan_tape_sync(&c->tape)) != HIGAN_OK) goto fail;
#endif
    ++c->tr.iter;
    return 1;
fail:
    snprintf(msg, 256, "%s: %.200s", WL_NAMES[w], higan_last_error());
    return 0;
}

/* one run of workload w */
static int run_once(bench_ctx *c, int w, char *msg) {
    higan_status st = HIGAN_OK;
    float loss;
    switch (w) {
    case W_GAN8: case W_GAN32: return gan_iteration(c, w, msg);
    case W_D: st = higan_gan_d_step(&c->tr, &c->tape, &c->data.batch, NULL); break;
    case W_G: st = higan_gan_g_step(&c->tr, &c->tape, &c->data.batch, NULL); break;
    case W_GEN1: case W_GEN8: case W_GEN64: case W_GEN256: return gen_forward(c, gen_words(w), msg);
    case W_OCR_TRAIN:
        st = higan_ocr_train_step(&c->ocr, &c->tape, c->data.imgs, B_WORDS, c->data.width, c->data.img_lens,
                                  c->data.labels, L_MAX, c->data.label_lens, &c->ocr_opt, &c->rng, &loss);
        break;
    case W_OCR_FWD: return ocr_forward(c, msg);
    default: break;
    }
    if (st == HIGAN_GAN_NONFINITE) { ++c->nonfinite; return 1; }   /* the work was done; Adam skipped */
    if (st != HIGAN_OK) { snprintf(msg, 256, "%s: %.200s", WL_NAMES[w], higan_last_error()); return 0; }
    return 1;
}

static void teardown(bench_ctx *c) {
#ifdef HIGAN_WITH_CUDA
    if (c->cuda_on) {
        higan_tape_free(&c->tape);
        higan_arena_free(&c->host);
        if (c->dev.base) higan_backend_arena_free(&c->dev, &c->be);
        if (c->dp.block) {
            higan_cuda_params_attach(NULL, &c->gp);
            higan_cuda_params_free(&c->dp);
        }
        higan_gan_trainer_free(&c->tr);   /* its mirrors use the context */
        higan_cuda_free(&c->cuda);
        c->cuda_on = 0;
    }
#endif
    higan_gan_trainer_free(&c->tr);
    higan_params_free(&c->gp);
    higan_model_free(&c->ocr);
    higan_tape_free(&c->tape);
    higan_arena_free(&c->arena);
    free_data(&c->data);
}

static void set_precision(const bench_opts *o) {
    higan_set_precision(o->bf16 ? HIGAN_PRECISION_BF16 : HIGAN_PRECISION_FP32);
}

/* the whole life of one workload (what a child does) */
static void run_workload(const bench_opts *o, const higan_model_config *gan_mc, const higan_model_config *ocr_mc,
                         int w, wl_result *r) {
    bench_ctx *c = (bench_ctx *)calloc(1, sizeof(bench_ctx));
    double t0;
    int i;
    memset(r, 0, sizeof *r);
    if (!c) { snprintf(r->msg, sizeof r->msg, "out of memory"); return; }
    c->o = o;
    c->gan_mc = *gan_mc;
    c->ocr_mc = *ocr_mc;
    if (o->threads > 0) higan_set_num_threads(o->threads);
    set_precision(o);
    t0 = now();
    if (!(o->cuda ? setup_device(c, w, r->msg, r->device) : setup(c, w, r->msg))) { teardown(c); free(c); return; }
    r->setup_s = now() - t0;
    for (i = 0; i < o->warmup; ++i)
        if (!run_once(c, w, r->msg)) { teardown(c); free(c); return; }
    for (i = 0; i < o->repeats; ++i) {
        double t1, c1;
        higan_gemm_flops_reset();
        c1 = process_cpu();
        t1 = now();
        if (!run_once(c, w, r->msg)) { teardown(c); free(c); return; }
        r->t[i] = now() - t1;
        r->t_d[i] = c->d_s;
        r->cpu[i] = process_cpu() - c1;
        r->flops = (double)higan_gemm_flops();
    }
    r->n = o->repeats;
    r->nonfinite = c->nonfinite;
    r->arena_mb = (double)c->arena.peak / 1048576.0;
#ifdef HIGAN_WITH_CUDA
    if (o->cuda) r->arena_mb = (double)c->dev.peak / 1048576.0;   /* the device arena */
#endif
    r->ok = 1;
    teardown(c);
    free(c);
}

/* ---- children -------------------------------------------------------------------------------- */
static int read_full(int fd, void *buf, size_t n) {
    unsigned char *p = (unsigned char *)buf;
    while (n) {
        ssize_t k = read(fd, p, n);
        if (k < 0 && errno == EINTR) continue;
        if (k <= 0) return 0;
        p += k;
        n -= (size_t)k;
    }
    return 1;
}
static void write_full(int fd, const void *buf, size_t n) {
    const unsigned char *p = (const unsigned char *)buf;
    while (n) {
        ssize_t k = write(fd, p, n);
        if (k < 0 && errno == EINTR) continue;
        if (k <= 0) return;
        p += k;
        n -= (size_t)k;
    }
}

/* Runs fn(arg, out) in a child and copies out back; *maxrss_mb gets the child's peak RSS.
   Returns 0 when the child died (signal) or wrote nothing. */
typedef void (*child_fn)(void *arg, void *out);
static int in_child(const bench_opts *o, child_fn fn, void *arg, void *out, size_t n, double *maxrss_mb,
                    char *why) {
    int fd[2], status = 0, ok;
    pid_t pid;
    struct rusage ru;
    if (!o->fork) {
        getrusage(RUSAGE_SELF, &ru);
        fn(arg, out);
        getrusage(RUSAGE_SELF, &ru);
        *maxrss_mb = (double)ru.ru_maxrss / 1024.0;
        return 1;
    }
    fflush(stdout);
    fflush(stderr);
    if (pipe(fd) != 0) { snprintf(why, 256, "pipe: %s", strerror(errno)); return 0; }
    pid = fork();
    if (pid < 0) { snprintf(why, 256, "fork: %s", strerror(errno)); close(fd[0]); close(fd[1]); return 0; }
    if (pid == 0) {
        close(fd[0]);
        fn(arg, out);
        write_full(fd[1], out, n);
        close(fd[1]);
        _exit(0);
    }
    close(fd[1]);
    ok = read_full(fd[0], out, n);
    close(fd[0]);
    memset(&ru, 0, sizeof ru);
    while (wait4(pid, &status, 0, &ru) < 0 && errno == EINTR) {}
    *maxrss_mb = (double)ru.ru_maxrss / 1024.0;      /* Linux: kilobytes */
    if (!ok) {
        if (WIFSIGNALED(status)) snprintf(why, 256, "the child died of signal %d", WTERMSIG(status));
        else snprintf(why, 256, "the child exited (%d) without a result", WEXITSTATUS(status));
        return 0;
    }
    return 1;
}

typedef struct { const bench_opts *o; const higan_model_config *gan, *ocr; int w; } wl_arg;
static void child_workload(void *arg, void *out) {
    const wl_arg *a = (const wl_arg *)arg;
    run_workload(a->o, a->gan, a->ocr, a->w, (wl_result *)out);
}
static void child_peak(void *arg, void *out) {
    const bench_opts *o = (const bench_opts *)arg;
    measure_peak((peak_result *)out, o->threads > 0 ? o->threads : 1);
}

/* ---- output -------------------------------------------------------------------------------------- */
typedef struct { int have; double med, mn, mx, cpu, flops, peak_mb, arena_mb, setup_s, d_med, g_med; int nonfinite; } row;

/* cpu: median CPU seconds of a run over threads * median wall seconds: how much of its
   threads' time the workload got (and used) */
static void print_row(const char *name, const row *r, const char *why, double peak, double peak1, int threads) {
    double gf, gfc;
    if (!r->have) { printf("%-10s failed: %s\n", name, why && why[0] ? why : "see above"); return; }
    gf = r->flops / r->med * 1e-9;
    gfc = r->cpu > 0 ? r->flops / r->cpu * 1e-9 : 0.0;
    printf("%-10s %9.4f %9.4f %9.4f %5.0f%% %9.2f %8.1f %7.1f%% %7.1f%% %8.0f %8.0f\n", name, r->med, r->mn, r->mx,
           100.0 * r->cpu / (r->med * threads), r->flops * 1e-9, gf, peak > 0 ? 100.0 * gf / peak : 0.0,
           peak1 > 0 ? 100.0 * gfc / peak1 : 0.0, r->peak_mb, r->arena_mb);
}

static void json_row(FILE *f, const char *name, const row *r, const wl_result *res, double peak, double peak1,
                     int *first) {
    int i;
    if (!r->have) {       /* the reason, with quotes and backslashes made harmless for JSON */
        char m[256];
        snprintf(m, sizeof m, "%s", res && res->msg[0] ? res->msg : "failed");
        for (i = 0; m[i]; ++i)
            if (m[i] == '"' || m[i] == '\\' || (unsigned char)m[i] < 32) m[i] = '\'';
        fprintf(f, "%s\n    \"%s\": {\"failed\": \"%s\"}", *first ? "" : ",", name, m);
        *first = 0;
        return;
    }
    fprintf(f, "%s\n    \"%s\": {\"median_s\": %.6g, \"min_s\": %.6g, \"max_s\": %.6g, \"cpu_s\": %.6g, "
               "\"flops\": %.6g, \"gflops_s\": %.6g, \"pct_peak\": %.4g, \"pct_peak_cpu\": %.4g, \"peak_mb\": %.6g, "
               "\"arena_mb\": %.6g, \"setup_s\": %.4g, \"nonfinite\": %d, ",
            *first ? "" : ",", name, r->med, r->mn, r->mx, r->cpu, r->flops, r->flops / r->med * 1e-9,
            peak > 0 ? 100.0 * r->flops / r->med * 1e-9 / peak : 0.0,
            peak1 > 0 && r->cpu > 0 ? 100.0 * r->flops / r->cpu * 1e-9 / peak1 : 0.0, r->peak_mb, r->arena_mb,
            r->setup_s, r->nonfinite);
    if (r->d_med > 0)       /* gan8, gan32: the two steps, and the iteration amortised as "iteration" */
        fprintf(f, "\"d_step_median_s\": %.6g, \"g_step_median_s\": %.6g, \"amortised_s\": %.6g, ", r->d_med,
                r->g_med, r->d_med + r->g_med / (double)higan_gan_default_options().num_critic_train);
    fprintf(f, "\"times_s\": [");
    for (i = 0; res && i < res->n; ++i) fprintf(f, "%s%.6g", i ? ", " : "", res->t[i]);
    fprintf(f, "]}");
    *first = 0;
}

/* MemAvailable of /proc/meminfo in MB (0 where unknown) */
static size_t mem_available_mb(void) {
    FILE *f = fopen("/proc/meminfo", "r");
    char line[256];
    unsigned long long kb = 0;
    if (!f) return 0;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "MemAvailable: %llu kB", &kb) == 1) break;
    fclose(f);
    return (size_t)(kb / 1024);
}

static void usage(void) {
    fprintf(stderr,
            "usage: higan_bench [--threads N] [--repeats N] [--warmup N] [--workload NAME]... [--precision fp32|bf16|tf32]\n"
            "                   [--json FILE] [--gan-config FILE] [--ocr-config FILE] [--gan-batch N]\n"
            "                   [--max-arena-mb N] [--no-fork] [--device cpu|cuda]\n"
            "workloads: d_step g_step iteration gen8 gen64 ocr_train ocr_fwd all (default all; comma lists work),\n"
            "           gen1 gen256 gan8 gan32 (CPU or device); with --device cuda, all = gen1 gen256 gan8 gan32\n"
            "           (tf32 and --device cuda: build/bench_higan_bench_cuda)\n");
}

int main(int argc, char **argv) {
    bench_opts o;
    higan_model_config gan_mc, ocr_mc;
    peak_result pk;
    static wl_result res[W_COUNT];
    row rows[W_COUNT];
    double rss, peak_use, peak_core;
    const char *peak_name;
    char why[256];
    int i, w;
    memset(&o, 0, sizeof o);
    o.threads = 0;
    o.repeats = 3;
    o.warmup = 1;
    o.fork = 1;
    o.gan_batch = B_WORDS;
    o.arena_max_mb = mem_available_mb() / 2;    /* never push a shared machine into the OOM killer */
    o.gan_cfg = "configs/gan_iam.cfg";
    o.ocr_cfg = "configs/ocr_iam.cfg";
    for (i = 1; i < argc; ++i) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--threads") && v) { o.threads = atoi(v); ++i; }
        else if (!strcmp(a, "--repeats") && v) { o.repeats = atoi(v); ++i; }
        else if (!strcmp(a, "--warmup") && v) { o.warmup = atoi(v); ++i; }
        else if (!strcmp(a, "--json") && v) { o.json = v; ++i; }
        else if (!strcmp(a, "--gan-config") && v) { o.gan_cfg = v; ++i; }
        else if (!strcmp(a, "--ocr-config") && v) { o.ocr_cfg = v; ++i; }
        else if (!strcmp(a, "--no-fork")) o.fork = 0;
        else if (!strcmp(a, "--gan-batch") && v) { o.gan_batch = atoi(v); ++i; }
        else if (!strcmp(a, "--max-arena-mb") && v) { o.arena_max_mb = (size_t)atol(v); ++i; }
        else if (!strcmp(a, "--precision") && v) {
            if (!strcmp(v, "bf16")) o.bf16 = 1;
            else if (!strcmp(v, "tf32")) o.tf32 = 1;
            else if (strcmp(v, "fp32")) { usage(); return 2; }
            ++i;
        } else if (!strcmp(a, "--device") && v) {
            if (!strcmp(v, "cuda")) o.cuda = 1;
            else if (strcmp(v, "cpu")) { usage(); return 2; }
            ++i;
        } else if (!strcmp(a, "--workload") && v) {
            char buf[256], *tok;
            snprintf(buf, sizeof buf, "%s", v);
            for (tok = strtok(buf, ","); tok; tok = strtok(NULL, ",")) {
                if (!strcmp(tok, "all")) { o.want |= 1u << W_COUNT; continue; }   /* resolved below */
                for (w = 0; w < W_COUNT && strcmp(tok, WL_NAMES[w]); ++w) {}
                if (w == W_COUNT) { fprintf(stderr, "higan_bench: unknown workload '%s'\n", tok); usage(); return 2; }
                o.want |= 1u << w;
            }
            ++i;
        } else { usage(); return 2; }
    }
    if (!o.want || (o.want & (1u << W_COUNT))) o.want = (o.want & ((1u << W_COUNT) - 1)) | (o.cuda ? WL_ALL_CUDA : WL_ALL_CPU);
    if (o.tf32 && !o.cuda) { fprintf(stderr, "higan_bench: --precision tf32 is for --device cuda\n"); return 2; }
#ifndef HIGAN_WITH_CUDA
    if (o.cuda) {
        fprintf(stderr, "higan_bench: --device cuda needs build/bench_higan_bench_cuda (make build/bench_higan_bench_cuda: "
                        "this file built by nvcc with -DHIGAN_WITH_CUDA)\n");
        return 2;
    }
#endif
    if (o.want & (1u << W_ITER)) o.want |= (1u << W_D) | (1u << W_G);
    if (o.repeats < 1 || o.repeats > MAX_REPEATS || o.warmup < 0 || o.gan_batch < 1 || o.gan_batch > B_WORDS) {
        usage();
        return 2;
    }
    if (o.warmup < 1) o.warmup = 1;      /* the first run sizes the arena */
    if (o.threads <= 0) {
        const char *env = getenv("HIGAN_THREADS");
        o.threads = env && atoi(env) > 0 ? atoi(env) : 0;
#ifdef _OPENMP
        if (o.threads <= 0) {          /* omp_get_num_procs does not start the thread pool */
            const char *oe = getenv("OMP_NUM_THREADS");
            o.threads = oe && atoi(oe) > 0 ? atoi(oe) : omp_get_num_procs();
        }
#endif
        if (o.threads <= 0) o.threads = 1;
    }
    gan_mc = read_model_config(HIGAN_NETS_ALL, o.gan_cfg);
    ocr_mc = read_model_config(HIGAN_NET_BIT(HIGAN_NET_RECOGNIZER), o.ocr_cfg);

    printf("higan_bench: higan %s, %s%s kernels, %d threads, %s, %d warm-up + %d timed runs per workload%s\n",
           HIGAN_VERSION_STRING, o.cuda ? "CUDA (--device cuda; host side " : "",
           higan_cpu_level_name(higan_cpu_level()), o.threads, o.tf32 ? "tf32" : o.bf16 ? "bf16" : "fp32",
           o.warmup, o.repeats, o.fork ? "" : " (no fork)");
    if (o.cuda) printf("  device runs end with a stream sync; GEMM work is not counted on the device (GFLOP 0)\n");
    printf("  batch 8: real words 10,8,6,6,4,4,4,1 chars (64 x 32/char, padded to %d), aug widths "
           "224,128,160,192,128,160,128,32, fake words 10,9,8,6,6,2,1,1\n", HIGAN_CHAR_WIDTH * L_MAX);
    if (o.gan_batch != B_WORDS) {
        printf("  GAN steps on %d of these words (entries b * 8 / %d):", o.gan_batch, o.gan_batch);
        for (i = 0; i < o.gan_batch; ++i) printf(" %d", i * B_WORDS / o.gan_batch);
        printf("\n");
    }
    printf("  arena limit %.0f MB%s\n", (double)o.arena_max_mb,
           o.arena_max_mb ? " (--max-arena-mb; default half of MemAvailable)" : " (none)");
    printf("  G ch %lld style %lld embed %lld | D ch %lld, PatchD ch %lld | backbone %d/%d | R %d/%d depth %d, "
           "dropout %.2g | %lld writers\n",
           (long long)gan_mc.G.ch, (long long)gan_mc.G.style_dim, (long long)gan_mc.G.embed_dim, (long long)gan_mc.D.ch,
           (long long)gan_mc.P.ch, gan_mc.B.resolution, gan_mc.B.max_dim, ocr_mc.R.cnn.resolution,
           ocr_mc.R.cnn.max_dim, ocr_mc.R.rnn_depth, (double)ocr_mc.R.cnn.dropout, (long long)gan_mc.n_writer);
    fflush(stdout);

    /* the peak */
    memset(&pk, 0, sizeof pk);
    if (o.cuda) {
        pk.ok = 0;   /* the CPU's peak says nothing about the GPU's rows */
    } else if (!in_child(&o, child_peak, &o, &pk, sizeof pk, &rss, why)) {
        fprintf(stderr, "higan_bench: peak measurement failed: %s\n", why);
        memset(&pk, 0, sizeof pk);
    }
    if (!o.cuda) {
        printf("peak GFLOP/s (register-only loops, best of 3; 1 core / %d threads, from the threads' CPU time, "
               "[from wall time])\n  fp32 FMA (AVX-512)       %7.1f / %7.1f   [%.1f / %.1f]\n", o.threads, pk.fp32_1c,
               pk.fp32_nc, pk.fp32_1, pk.fp32_n);
        if (pk.has_bf16)
            printf("  AVX512-BF16 vdpbf16ps    %7.1f / %7.1f   [%.1f / %.1f]\n", pk.bf16_1c, pk.bf16_nc, pk.bf16_1,
                   pk.bf16_n);
        else printf("  AVX512-BF16              absent\n");
        if (pk.amx_os)
            printf("  AMX-BF16 tdpbf16ps       %7.1f / %7.1f   [%.1f / %.1f]\n", pk.amx_1c, pk.amx_nc, pk.amx_1, pk.amx_n);
        else if (pk.has_amx) printf("  AMX-BF16                 present, not usable (kernel refused the tile state)\n");
        else printf("  AMX-BF16                 absent\n");
    }
    /* % peak against what the cores can do (CPU-time figures): a loaded machine then shows
       as a lower fraction, and the denominator stays the same from run to run */
    if (o.bf16) {
        peak_use = pk.amx_nc > 0 ? pk.amx_nc : pk.bf16_nc;
        peak_core = pk.amx_nc > 0 ? pk.amx_1c : pk.bf16_1c;
        peak_name = pk.amx_nc > 0 ? "AMX-BF16" : "AVX512-BF16";
    } else {
        peak_use = pk.fp32_nc;
        peak_core = pk.fp32_1c;
        peak_name = "fp32 FMA";
    }

    /* the workloads, one child each */
    memset(rows, 0, sizeof rows);
    for (w = 0; w < W_COUNT; ++w) {
        wl_arg a;
        if (w == W_ITER || !(o.want & (1u << w))) continue;
        fprintf(stderr, "  %s ...\n", WL_NAMES[w]);
        a.o = &o; a.gan = &gan_mc; a.ocr = &ocr_mc; a.w = w;
        memset(&res[w], 0, sizeof res[w]);
        if (!in_child(&o, child_workload, &a, &res[w], sizeof res[w], &rss, why)) {
            fprintf(stderr, "higan_bench: %s: %s\n", WL_NAMES[w], why);
            snprintf(res[w].msg, sizeof res[w].msg, "%s", why);
            continue;
        }
        res[w].peak_mb = rss;
        if (!res[w].ok) { fprintf(stderr, "higan_bench: %s failed: %s\n", WL_NAMES[w], res[w].msg); continue; }
        rows[w].have = 1;
        stats(res[w].t, res[w].n, &rows[w].med, &rows[w].mn, &rows[w].mx);
        { double lo, hi; stats(res[w].cpu, res[w].n, &rows[w].cpu, &lo, &hi); }
        rows[w].flops = res[w].flops;
        rows[w].peak_mb = rss;
        rows[w].arena_mb = res[w].arena_mb;
        rows[w].setup_s = res[w].setup_s;
        rows[w].nonfinite = res[w].nonfinite;
        if (gan_words(w)) {     /* the D and G parts of the runs */
            double g[MAX_REPEATS], lo, hi;
            for (i = 0; i < res[w].n; ++i) g[i] = res[w].t[i] - res[w].t_d[i];
            stats(res[w].t_d, res[w].n, &rows[w].d_med, &lo, &hi);
            stats(g, res[w].n, &rows[w].g_med, &lo, &hi);
        }
        if (res[w].device[0]) printf("%s: on %s\n", WL_NAMES[w], res[w].device);
        if (res[w].nonfinite)
            fprintf(stderr, "higan_bench: %s: %d runs had a non-finite loss (work done, Adam skipped)\n",
                    WL_NAMES[w], res[w].nonfinite);
    }
    /* the amortised iteration: D + G / num_critic_train */
    if ((o.want & (1u << W_ITER)) && rows[W_D].have && rows[W_G].have) {
        const double k = 1.0 / (double)higan_gan_default_options().num_critic_train;
        row *r = &rows[W_ITER];
        r->have = 1;
        r->med = rows[W_D].med + k * rows[W_G].med;
        r->mn = rows[W_D].mn + k * rows[W_G].mn;
        r->mx = rows[W_D].mx + k * rows[W_G].mx;
        r->cpu = rows[W_D].cpu + k * rows[W_G].cpu;
        r->flops = rows[W_D].flops + k * rows[W_G].flops;
        r->peak_mb = rows[W_D].peak_mb > rows[W_G].peak_mb ? rows[W_D].peak_mb : rows[W_G].peak_mb;
        r->arena_mb = rows[W_D].arena_mb > rows[W_G].arena_mb ? rows[W_D].arena_mb : rows[W_G].arena_mb;
    }

    printf("\n%-10s %9s %9s %9s %6s %9s %8s %8s %8s %8s %8s\n", "workload", "median s", "min s", "max s", "cpu",
           "GFLOP", "GFLOP/s", "% peak", "%pk cpu", "peak MB", "arena MB");
    for (w = 0; w < W_COUNT; ++w)
        if (o.want & (1u << w))
            print_row(WL_NAMES[w], &rows[w], w == W_ITER ? "needs d_step and g_step" : res[w].msg, peak_use,
                      peak_core, o.threads);
    printf("(cpu: CPU time / (threads x wall time), below 100%% when the machine is shared; GFLOP: GEMM work of\n"
           " one run; %% peak: GFLOP/s (wall) over %s on %d threads, %.1f GFLOP/s; %%pk cpu: GFLOP per CPU\n"
           " second over one core's peak, %.1f (load-independent, but blind to idle threads); iteration =\n"
           " d_step + g_step / 4; peak MB: the workload's process (ru_maxrss), arena MB: its arena's high-water mark)\n",
           peak_name, o.threads, peak_use, peak_core);
    {   /* generator throughput: words over the median (and the best) run */
        const int gw[4] = {W_GEN1, W_GEN8, W_GEN64, W_GEN256};
        int k, any = 0;
        for (k = 0; k < 4; ++k)
            if (rows[gw[k]].have) {
                printf("%s%s: %.1f words/s (best %.1f)", any ? ", " : "", WL_NAMES[gw[k]],
                       gen_words(gw[k]) / rows[gw[k]].med, gen_words(gw[k]) / rows[gw[k]].mn);
                any = 1;
            }
        if (any) printf(" [%s]\n", o.cuda ? "device" : "CPU");
        for (k = 0; k < 2; ++k) {   /* the GAN iterations: the two steps, and amortised as "iteration" */
            w = k ? W_GAN32 : W_GAN8;
            if (rows[w].have)
                printf("%s [%s]: D step %.4f s + G step %.4f s (medians); amortised D + G / %d: %.4f s; "
                       "%.2f words/s through the full iteration\n", WL_NAMES[w], o.cuda ? "device" : "CPU",
                       rows[w].d_med, rows[w].g_med, higan_gan_default_options().num_critic_train,
                       rows[w].d_med + rows[w].g_med / (double)higan_gan_default_options().num_critic_train,
                       gan_words(w) / rows[w].med);
        }
    }

    if (o.json) {
        FILE *f = fopen(o.json, "w");
        int first = 1;
        if (!f) { fprintf(stderr, "higan_bench: cannot write %s\n", o.json); return 1; }
        fprintf(f, "{\n  \"tool\": \"higan\", \"version\": \"%s\", \"cpu_level\": \"%s\", \"threads\": %d, "
                   "\"precision\": \"%s\", \"repeats\": %d, \"warmup\": %d, \"gan_batch\": %d, "
                   "\"max_arena_mb\": %.0f, \"device\": \"%s\",\n",
                HIGAN_VERSION_STRING, higan_cpu_level_name(higan_cpu_level()), o.threads,
                o.tf32 ? "tf32" : o.bf16 ? "bf16" : "fp32", o.repeats, o.warmup, o.gan_batch, (double)o.arena_max_mb,
                o.cuda ? "cuda" : "cpu");
        fprintf(f, "  \"peak\": {\"fp32_1\": %.6g, \"fp32_n\": %.6g, \"bf16_1\": %.6g, \"bf16_n\": %.6g, "
                   "\"amx_1\": %.6g, \"amx_n\": %.6g, \"fp32_1_wall\": %.6g, \"fp32_n_wall\": %.6g, "
                   "\"bf16_1_wall\": %.6g, \"bf16_n_wall\": %.6g, \"amx_1_wall\": %.6g, \"amx_n_wall\": %.6g, "
                   "\"has_bf16\": %d, \"has_amx\": %d, \"amx_usable\": %d, \"used\": \"%s\", "
                   "\"used_gflops\": %.6g, \"used_core_gflops\": %.6g},\n",
                pk.fp32_1c, pk.fp32_nc, pk.bf16_1c, pk.bf16_nc, pk.amx_1c, pk.amx_nc, pk.fp32_1, pk.fp32_n, pk.bf16_1,
                pk.bf16_n, pk.amx_1, pk.amx_n, pk.has_bf16, pk.has_amx, pk.amx_os, peak_name, peak_use,
                peak_core);
        fprintf(f, "  \"config\": {\"G_ch\": %lld, \"style_dim\": %lld, \"embed_dim\": %lld, \"n_class\": %lld, "
                   "\"D_ch\": %lld, \"P_ch\": %lld, \"B_resolution\": %d, \"B_max_dim\": %d, \"n_writer\": %lld, "
                   "\"R_resolution\": %d, \"R_max_dim\": %d, \"R_depth\": %d, \"R_dropout\": %g, "
                   "\"num_critic_train\": %d},\n",
                (long long)gan_mc.G.ch, (long long)gan_mc.G.style_dim, (long long)gan_mc.G.embed_dim,
                (long long)gan_mc.G.n_class, (long long)gan_mc.D.ch, (long long)gan_mc.P.ch, gan_mc.B.resolution,
                gan_mc.B.max_dim, (long long)gan_mc.n_writer, ocr_mc.R.cnn.resolution, ocr_mc.R.cnn.max_dim,
                ocr_mc.R.rnn_depth, (double)ocr_mc.R.cnn.dropout, higan_gan_default_options().num_critic_train);
        fprintf(f, "  \"workloads\": {");
        for (w = 0; w < W_COUNT; ++w)
            if (o.want & (1u << w))
                json_row(f, WL_NAMES[w], &rows[w], w == W_ITER ? NULL : &res[w], peak_use, peak_core, &first);
        fprintf(f, "\n  }\n}\n");
        fclose(f);
    }
    for (w = 0; w < W_COUNT; ++w)
        if ((o.want & (1u << w)) && !rows[w].have) return 1;
    return 0;
}
