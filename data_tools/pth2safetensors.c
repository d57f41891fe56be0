/* pth2safetensors - convert a PyTorch checkpoint (torch.save zip format, PyTorch >= 1.6)
   to higan safetensors, without Python.

   usage: pth2safetensors [options] input.pth
     -o FILE          output (default: the input name with .safetensors instead of its extension)
     --only A,B,...   keep only these networks (top-level keys), e.g. Generator,StyleEncoder,StyleBackbone
     --prefix NAME    the input is a plain state dict: name its tensors NAME.<key>
     --list           print the tensors that would be written; write nothing
     -q               print errors only

   A HiGAN+ checkpoint is a dict {Network: state_dict, 'OPT.G': ..., 'Epoch': ...}. Every
   tensor of every network is written as "<Network>.<key>" (buffers included: int64
   num_batches_tracked stays I64), in file order, with its dtype (F32/F16/BF16/I64/I32/I16/U8;
   float64 becomes F32, int8 I16, bool U8, each with a note). Views are resolved (storage
   offset and strides), shared storages are fine. Non-tensor entries (Epoch, scores,
   optimizer states) are skipped with a note; top-level scalars are kept as metadata.
   Exit status: 0 ok, 1 error, 2 usage.

   Build: cc -std=c99 -O2 -Wall -Wextra -I. data_tools/pth2safetensors.c -o build/pth2safetensors -lm */
#define HIGAN_IMPLEMENTATION
#define HIGAN_STATIC
#include "higan.h"
#include "data_tools/pth.h"

static void usage(FILE *f) {
    fprintf(f,
            "usage: pth2safetensors [options] input.pth\n"
            "  -o FILE          output file (default: input with the extension .safetensors)\n"
            "  --only A,B,...   keep only these networks, e.g. Generator,StyleEncoder,StyleBackbone\n"
            "  --prefix NAME    input is a plain state dict; name its tensors NAME.<key>\n"
            "  --list           list the tensors that would be written; write nothing\n"
            "  -q               quiet: print errors only\n");
}

/* "dir/x.pth" -> "dir/x.safetensors" */
static char *default_output(const char *in) {
    const char *slash = strrchr(in, '/'), *dot = strrchr(in, '.');
    size_t stem = (dot && (!slash || dot > slash + 1)) ? (size_t)(dot - in) : strlen(in);
    char *out = (char *)malloc(stem + 13);
    if (!out) return NULL;
    memcpy(out, in, stem);
    memcpy(out + stem, ".safetensors", 13);
    return out;
}

static const char *base_name(const char *p) {
    const char *s = strrchr(p, '/');
    return s ? s + 1 : p;
}

int main(int argc, char **argv) {
    const char *in = NULL, *out = NULL, *only = NULL, *prefix = NULL;
    char *out_alloc = NULL;
    int list = 0, quiet = 0, i, rc = 1;
    pth_checkpoint c;
    higan_safetensors_writer w;
    for (i = 1; i < argc; ++i) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) { usage(stdout); return 0; }
        else if (!strcmp(a, "-o") && i + 1 < argc) out = argv[++i];
        else if (!strcmp(a, "--only") && i + 1 < argc) only = argv[++i];
        else if (!strcmp(a, "--prefix") && i + 1 < argc) prefix = argv[++i];
        else if (!strcmp(a, "--list")) list = 1;
        else if (!strcmp(a, "-q")) quiet = 1;
        else if (a[0] == '-' && a[1]) { fprintf(stderr, "pth2safetensors: unknown or incomplete option '%s'\n", a); usage(stderr); return 2; }
        else if (!in) in = a;
        else { fprintf(stderr, "pth2safetensors: more than one input ('%s', '%s')\n", in, a); return 2; }
    }
    if (!in) { usage(stderr); return 2; }
    if (!out && !list) {
        if (!(out = out_alloc = default_output(in))) { fprintf(stderr, "pth2safetensors: out of memory\n"); return 1; }
        if (!strcmp(out, in)) { fprintf(stderr, "pth2safetensors: the output would overwrite the input; give -o\n"); free(out_alloc); return 2; }
    }
    higan_safetensors_writer_init(&w);
    if (pth_open_file(&c, in) != 0 || pth_extract(&c, prefix, only) != 0) {
        fprintf(stderr, "pth2safetensors: %s\n", c.err);
        goto done;
    }
    if (c.notes && !quiet) fprintf(stderr, "%s", c.notes);
    if (c.count == 0) { fprintf(stderr, "pth2safetensors: %s: no tensors to write\n", in); goto done; }
    if (list) {
        for (i = 0; i < c.count; ++i) {
            const pth_tensor *t = &c.tensors[i];
            int d;
            printf("%-60s %-4s [", t->name, higan_dtype_name(t->dtype));
            for (d = 0; d < t->ndim; ++d) printf("%s%lld", d ? ", " : "", (long long)t->shape[d]);
            printf("]\n");
        }
        for (i = 0; i < c.meta_count; ++i) printf("metadata %s = %s\n", c.meta_keys[i], c.meta_values[i]);
        rc = 0;
        goto done;
    }
    if (pth_add_to_writer(&c, &w) != 0 ||
        higan_safetensors_writer_meta(&w, "converted_from", base_name(in)) != HIGAN_OK) {
        fprintf(stderr, "pth2safetensors: %s\n", c.err[0] ? c.err : higan_last_error());
        goto done;
    }
    if (higan_safetensors_writer_save(&w, out) != HIGAN_OK) {
        fprintf(stderr, "pth2safetensors: %s\n", higan_last_error());
        goto done;
    }
    if (!quiet) {
        uint64_t bytes = 0;
        int nets = 0;
        for (i = 0; i < c.count; ++i) {
            const char *dot = strchr(c.tensors[i].name, '.');
            bytes += (uint64_t)c.tensors[i].numel * higan_dtype_size(c.tensors[i].dtype);
            if (i == 0 || strncmp(c.tensors[i].name, c.tensors[i - 1].name, (size_t)(dot - c.tensors[i].name) + 1)) ++nets;
        }
        printf("wrote %s: %d network%s, %d tensors, %llu bytes of data\n", out, nets, nets == 1 ? "" : "s", c.count,
               (unsigned long long)bytes);
    }
    rc = 0;
done:
    higan_safetensors_writer_free(&w);
    pth_close(&c);
    free(out_alloc);
    return rc;
}
