/* example_util.h - what the example programs share: PNG output through stb, folders, plots.

   Not part of the library: each example program includes it right after higan.h (where it
   defines HIGAN_IMPLEMENTATION), having defined _POSIX_C_SOURCE 200809L before any include
   (mkdir). Define EXAMPLE_READ_IMAGES first to get stb_image (reading PNG/JPEG/BMP) too.
   stb comes from Debian's libstb-dev (/usr/include/stb). */
#ifndef HIGAN_EXAMPLE_UTIL_H
#define HIGAN_EXAMPLE_UTIL_H

/* stb compiles with warnings that -Wall -Wextra would show in every example */
#if defined(__GNUC__)
#  pragma GCC diagnostic push
#  pragma GCC diagnostic ignored "-Wunused-function"
#  pragma GCC diagnostic ignored "-Wsign-compare"
#  pragma GCC diagnostic ignored "-Wmissing-field-initializers"
#endif
#ifdef EXAMPLE_READ_IMAGES
#  define STB_IMAGE_IMPLEMENTATION
#  define STBI_FAILURE_USERMSG
#  include <stb/stb_image.h>
#endif
#define STB_IMAGE_WRITE_IMPLEMENTATION
#include <stb/stb_image_write.h>
#if defined(__GNUC__)
#  pragma GCC diagnostic pop
#endif

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>

/* mkdir -p: creates path and its missing parents. 0, or -1 with a message naming prog. */
static inline int example_make_dirs(const char *path, const char *prog) {
    char buf[1024];
    size_t i, n = strlen(path);
    struct stat st;
    if (n == 0 || n >= sizeof buf) { fprintf(stderr, "%s: bad folder name '%s'\n", prog, path); return -1; }
    memcpy(buf, path, n + 1);
    for (i = 1; i <= n; ++i)
        if (buf[i] == '/' || buf[i] == 0) {
            char keep = buf[i];
            buf[i] = 0;
            if (mkdir(buf, 0777) != 0 && errno != EEXIST) {
                fprintf(stderr, "%s: cannot create %s: %s\n", prog, buf, strerror(errno));
                return -1;
            }
            buf[i] = keep;
        }
    if (stat(path, &st) != 0 || !S_ISDIR(st.st_mode)) { fprintf(stderr, "%s: %s is not a folder\n", prog, path); return -1; }
    return 0;
}

/* The training log (CSV of higan_csv_open) plotted into a w x h RGB PNG. 0, or -1 with a
   message naming prog (a plot that cannot be written never stops a training run). */
static inline int example_write_plot(const char *csv, const char *png, int w, int h, const char *prog) {
    unsigned char *rgb = (unsigned char *)malloc((size_t)w * (size_t)h * 3);
    int ok = rgb && higan_plot_csv(csv, rgb, w, h) == HIGAN_OK && stbi_write_png(png, w, h, 3, rgb, w * 3);
    if (!ok) fprintf(stderr, "%s: plot %s: %s\n", prog, png, rgb ? higan_last_error() : "out of memory");
    free(rgb);
    return ok ? 0 : -1;
}

/* --device cpu|cuda of the training drivers. The CUDA backend exists in builds of the same
   source by nvcc with HIGAN_WITH_CUDA (make: build/train_*_cuda); a CPU build answers "cuda"
   with an error. Only the setup differs: the tape runs on the backend with a data arena in
   device memory, and the driver moves its model there (higan_model_to_backend, or
   higan_gan_trainer_set_backend); the training calls are the CPU's. */
typedef struct example_device {
    int on;                  /* 1: the tape runs on table */
    higan_backend table;
    higan_arena data;        /* the tape's values, gradients and scratch (device memory) */
#ifdef HIGAN_WITH_CUDA
    higan_cuda cuda;
#endif
} example_device;
/* name NULL or "cpu": nothing to do. "cuda": the device, its table and a data arena of
   data_bytes (early, so that a CPU build refuses at once). 0, or 2 with a message naming prog. */
static inline int example_device_open(example_device *d, const char *name, size_t data_bytes, const char *prog) {
    memset(d, 0, sizeof *d);
    if (!name || !strcmp(name, "cpu")) return 0;
    if (strcmp(name, "cuda") != 0) { fprintf(stderr, "%s: --device takes cpu or cuda, not '%s'\n", prog, name); return 2; }
#ifdef HIGAN_WITH_CUDA
    {
        char dev_name[256];
        if (!higan_cuda_available()) { fprintf(stderr, "%s: --device cuda: no CUDA device found\n", prog); return 2; }
        if (higan_cuda_init(&d->cuda, 0) != HIGAN_OK) { fprintf(stderr, "%s: --device cuda: %s\n", prog, higan_last_error()); return 2; }
        higan_cuda_backend(&d->table, &d->cuda);
        if (higan_backend_arena_init(&d->data, &d->table, data_bytes) != HIGAN_OK) {
            fprintf(stderr, "%s: --device cuda: %s\n", prog, higan_last_error());
            higan_cuda_free(&d->cuda);
            return 2;
        }
        d->on = 1;
        if (higan_cuda_device_name(0, dev_name, sizeof dev_name) == HIGAN_OK) fprintf(stderr, "%s: running on %s\n", prog, dev_name);
        return 0;
    }
#else
    (void)data_bytes;
    fprintf(stderr, "%s: --device cuda: this build has no CUDA backend; use build/%s_cuda (the same source "
                    "built by nvcc with -DHIGAN_WITH_CUDA)\n", prog, prog);
    return 2;
#endif
}
/* The backend to move the model to (NULL: the CPU). */
static inline const higan_backend *example_device_backend(const example_device *d) { return d->on ? &d->table : NULL; }
/* Puts tape t on the device (nothing on the CPU). */
static inline void example_device_attach(example_device *d, higan_tape *t) {
    if (d->on) higan_tape_set_backend(t, &d->table, &d->data);
}
/* At the end, after the model is freed (its mirrors use the device) and with the tape unused. */
static inline void example_device_close(example_device *d) {
    if (!d->on) return;
    higan_backend_arena_free(&d->data, &d->table);
#ifdef HIGAN_WITH_CUDA
    higan_cuda_free(&d->cuda);
#endif
    d->on = 0;
}

/* The pretraining drivers' command line: -c CONFIG [--resume CKPT] [--set key=value ...]
   [--threads N] [--device cpu|cuda]. Loads CONFIG into cfg (initialised here) with the --set
   overrides on top. 0, or 2 (usage or config error, message printed naming prog; configs_hint
   lists examples). */
static inline int example_training_args(int argc, char **argv, const char *prog, const char *configs_hint,
                                        higan_config *cfg, const char **config_path, const char **resume,
                                        int *threads, const char **device) {
    higan_config file;
    int i, k;
    higan_config_init(cfg);
    for (i = 1; i < argc; ++i) {
        if ((!strcmp(argv[i], "-c") || !strcmp(argv[i], "--config")) && i + 1 < argc) *config_path = argv[++i];
        else if (!strcmp(argv[i], "--resume") && i + 1 < argc) *resume = argv[++i];
        else if (!strcmp(argv[i], "--threads") && i + 1 < argc) *threads = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--device") && i + 1 < argc) *device = argv[++i];
        else if (!strcmp(argv[i], "--set") && i + 1 < argc) {
            if (higan_config_set(cfg, argv[++i]) != HIGAN_OK) { fprintf(stderr, "%s: %s\n", prog, higan_last_error()); return 2; }
        } else {
            fprintf(stderr, "usage: %s -c CONFIG [--resume CKPT] [--set key=value ...] [--threads N] [--device cpu|cuda]\n", prog);
            return 2;
        }
    }
    if (!*config_path) { fprintf(stderr, "%s: give a configuration with -c (%s)\n", prog, configs_hint); return 2; }
    /* the file first, then the --set overrides on top */
    higan_config_init(&file);
    if (higan_config_load(&file, *config_path) != HIGAN_OK) { fprintf(stderr, "%s: %s\n", prog, higan_last_error()); return 2; }
    for (k = 0; k < cfg->count; ++k) {
        char a[1024];
        snprintf(a, sizeof a, "%s=%s", cfg->keys[k], cfg->values[k]);
        higan_config_set(&file, a);
    }
    higan_config_free(cfg);
    *cfg = file;
    return 0;
}

#endif /* HIGAN_EXAMPLE_UTIL_H */
