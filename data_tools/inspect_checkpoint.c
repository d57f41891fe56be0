/* inspect_checkpoint - list the networks and tensors of a higan safetensors checkpoint.

   usage: inspect_checkpoint [--summary] [--network NAME] file.safetensors

   Prints the metadata, then each network (the name before the first '.') with every tensor's
   name, dtype, shape and element count, and a table of per-network counts:
     parameters  trainable elements (not a buffer, not optimizer state)
     buffers     elements of tensors whose last name part is u0, sv0, stored_mean, stored_var,
                 running_mean, running_var or num_batches_tracked
     optimizer   elements of "<param>.adam_m" / ".adam_v" (written with the Adam state)
   --summary prints only the metadata and the table; --network only that network's tensors.
   Exit status: 0 ok, 1 unreadable file, 2 usage.

   Build: cc -std=c99 -O2 -Wall -Wextra -I. data_tools/inspect_checkpoint.c -o build/inspect_checkpoint -lm */
#define HIGAN_IMPLEMENTATION
#define HIGAN_STATIC
#include "higan.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct net_info {
    char name[HIGAN_MAX_NAME];
    int tensors;
    int64_t params, buffers, optimizer;
    uint64_t bytes;
} net_info;

enum { KIND_PARAM, KIND_BUFFER, KIND_OPT };

static int tensor_kind(const char *name) {
    static const char *const buffers[] = {"u0", "sv0", "stored_mean", "stored_var", "running_mean",
                                          "running_var", "num_batches_tracked"};
    const char *last = strrchr(name, '.');
    size_t n = strlen(name), i;
    if (n > 7 && (!strcmp(name + n - 7, ".adam_m") || !strcmp(name + n - 7, ".adam_v"))) return KIND_OPT;
    last = last ? last + 1 : name;
    for (i = 0; i < sizeof buffers / sizeof buffers[0]; ++i)
        if (!strcmp(last, buffers[i])) return KIND_BUFFER;
    return KIND_PARAM;
}

/* network part of a name: before the first '.'; "" when there is none */
static void network_of(const char *name, char *out, size_t n) {
    const char *dot = strchr(name, '.');
    size_t l = dot ? (size_t)(dot - name) : 0;
    if (l >= n) l = n - 1;
    memcpy(out, name, l);
    out[l] = 0;
}

/* 1234567 -> "1,234,567" */
static const char *grouped(int64_t v, char *buf) {
    char tmp[32];
    int n, i, o = 0, neg = v < 0;
    snprintf(tmp, sizeof tmp, "%lld", (long long)(neg ? -v : v));
    n = (int)strlen(tmp);
    if (neg) buf[o++] = '-';
    for (i = 0; i < n; ++i) {
        if (i && (n - i) % 3 == 0) buf[o++] = ',';
        buf[o++] = tmp[i];
    }
    buf[o] = 0;
    return buf;
}

static const higan_safetensors *sort_st;
static int by_offset(const void *a, const void *b) {
    const higan_st_tensor *x = &sort_st->tensors[*(const int *)a], *y = &sort_st->tensors[*(const int *)b];
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    return strcmp(x->name, y->name);
}

int main(int argc, char **argv) {
    const char *path = NULL, *only = NULL;
    int summary = 0, i, j, n_nets = 0, *order = NULL;
    net_info *nets = NULL, total;
    higan_safetensors st;
    char b1[32], b2[32], b3[32], b4[32];
    for (i = 1; i < argc; ++i) {
        if (!strcmp(argv[i], "--summary")) summary = 1;
        else if (!strcmp(argv[i], "--network") && i + 1 < argc) only = argv[++i];
        else if (argv[i][0] == '-' && argv[i][1]) { path = NULL; break; }
        else if (!path) path = argv[i];
        else { path = NULL; break; }
    }
    if (!path) {
        fprintf(stderr, "usage: inspect_checkpoint [--summary] [--network NAME] file.safetensors\n");
        return 2;
    }
    if (higan_safetensors_load(&st, path) != HIGAN_OK) {
        fprintf(stderr, "inspect_checkpoint: %s\n", higan_last_error());
        return 1;
    }
    /* tensors in data order (the order they were saved), grouped by network in order of appearance */
    order = (int *)malloc(sizeof(int) * (size_t)(st.count ? st.count : 1));
    nets = (net_info *)calloc((size_t)(st.count ? st.count : 1), sizeof(net_info));
    if (!order || !nets) { fprintf(stderr, "inspect_checkpoint: out of memory\n"); return 1; }
    for (i = 0; i < st.count; ++i) order[i] = i;
    sort_st = &st;
    qsort(order, (size_t)st.count, sizeof(int), by_offset);
    memset(&total, 0, sizeof total);
    for (i = 0; i < st.count; ++i) {
        const higan_st_tensor *t = &st.tensors[order[i]];
        char net[HIGAN_MAX_NAME];
        int kind = tensor_kind(t->name);
        network_of(t->name, net, sizeof net);
        for (j = 0; j < n_nets && strcmp(nets[j].name, net); ++j) {}
        if (j == n_nets) { snprintf(nets[j].name, sizeof nets[j].name, "%s", net); ++n_nets; }
        ++nets[j].tensors;
        if (kind == KIND_PARAM) nets[j].params += t->numel;
        else if (kind == KIND_BUFFER) nets[j].buffers += t->numel;
        else nets[j].optimizer += t->numel;
        nets[j].bytes += (uint64_t)(t->end - t->begin);
    }
    printf("%s: %d tensors, %llu bytes\n", path, st.count, (unsigned long long)st.file_size);
    if (st.meta_count) {
        printf("metadata:\n");
        for (i = 0; i < st.meta_count; ++i) printf("  %s = %s\n", st.meta_keys[i], st.meta_values[i]);
    }
    if (!summary) {
        for (j = 0; j < n_nets; ++j) {
            if (only && strcmp(only, nets[j].name)) continue;
            printf("\n%s\n", nets[j].name[0] ? nets[j].name : "(no network prefix)");
            for (i = 0; i < st.count; ++i) {
                const higan_st_tensor *t = &st.tensors[order[i]];
                char net[HIGAN_MAX_NAME], shape[128];
                int d, kind = tensor_kind(t->name);
                network_of(t->name, net, sizeof net);
                if (strcmp(net, nets[j].name)) continue;
                shape[0] = 0;
                for (d = 0; d < t->ndim; ++d)
                    snprintf(shape + strlen(shape), sizeof shape - strlen(shape), "%s%lld", d ? ", " : "", (long long)t->shape[d]);
                printf("  %-52s %-4s [%s]%*s %12s%s\n", t->name + (net[0] ? strlen(net) + 1 : 0), higan_dtype_name(t->dtype),
                       shape, (int)(strlen(shape) < 20 ? 20 - strlen(shape) : 0), "", grouped(t->numel, b1),
                       kind == KIND_BUFFER ? "  buffer" : kind == KIND_OPT ? "  optimizer" : "");
            }
        }
        printf("\n");
    }
    printf("%-22s %8s %14s %12s %14s %14s\n", "network", "tensors", "parameters", "buffers", "optimizer", "bytes");
    for (j = 0; j < n_nets; ++j) {
        if (only && strcmp(only, nets[j].name)) continue;
        printf("%-22s %8d %14s %12s %14s %14s\n", nets[j].name[0] ? nets[j].name : "(no prefix)", nets[j].tensors,
               grouped(nets[j].params, b1), grouped(nets[j].buffers, b2), grouped(nets[j].optimizer, b3),
               grouped((int64_t)nets[j].bytes, b4));
        total.tensors += nets[j].tensors;
        total.params += nets[j].params;
        total.buffers += nets[j].buffers;
        total.optimizer += nets[j].optimizer;
        total.bytes += nets[j].bytes;
    }
    printf("%-22s %8d %14s %12s %14s %14s\n", "total", total.tensors, grouped(total.params, b1),
           grouped(total.buffers, b2), grouped(total.optimizer, b3), grouped((int64_t)total.bytes, b4));
    if (only) {
        for (j = 0; j < n_nets && strcmp(only, nets[j].name); ++j) {}
        if (j == n_nets) fprintf(stderr, "inspect_checkpoint: no network '%s' in %s\n", only, path);
    }
    free(order);
    free(nets);
    higan_safetensors_free(&st);
    return 0;
}
