/* h5convert - HiGAN+ word datasets between HDF5 (the official .hdf5 files) and safetensors.

     h5convert in.hdf5 out.safetensors     HDF5 -> safetensors
     h5convert in.safetensors out.hdf5     safetensors -> HDF5 (imgs chunked, gzip level 4)

   The direction follows the extensions (.hdf5 / .h5 vs anything else). Both files hold the
   same seven arrays (imgs, img_seek_idxs, img_lens, lbs, lb_seek_idxs, lb_lens, wids) with
   the same dtypes; the input is fully validated (higan_dataset_load) before anything is
   written, and the output is written to out.tmp and renamed, never half-written.
   Needs a build with HDF5 support (make HDF5=1); otherwise it says so and exits with 1. */
#define HIGAN_IMPLEMENTATION
#include "higan.h"
#include <stdio.h>
#include <string.h>

static void usage(FILE *f) {
    fprintf(f, "usage: h5convert IN OUT\n"
               "  IN.hdf5 OUT.safetensors   convert HiGAN+'s HDF5 word dataset to safetensors\n"
               "  IN.safetensors OUT.hdf5   and back (imgs chunked, gzip level 4, as gen_h5file)\n"
               "The direction follows the extensions (.hdf5 or .h5 is HDF5).\n");
}

int main(int argc, char **argv) {
    higan_dataset ds;
    int in_h5, out_h5;
    long long writers = 0;
    if (argc == 2 && (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help"))) { usage(stdout); return 0; }
    if (argc != 3) { usage(stderr); return 1; }
    in_h5 = higan_dataset_is_hdf5_path(argv[1]);
    out_h5 = higan_dataset_is_hdf5_path(argv[2]);
    if (in_h5 == out_h5) {
        fprintf(stderr, "h5convert: exactly one of '%s' and '%s' must be an .hdf5/.h5 file\n", argv[1], argv[2]);
        usage(stderr);
        return 1;
    }
    if (!higan_dataset_has_hdf5()) {
        fprintf(stderr, "h5convert: built without HDF5 support: rebuild with make HDF5=1 "
                        "(needs libhdf5-dev and pkg-config)\n");
        return 1;
    }
    if (!strcmp(argv[1], argv[2])) { fprintf(stderr, "h5convert: input and output are the same file\n"); return 1; }
    if (higan_dataset_load(&ds, argv[1]) != HIGAN_OK) {
        fprintf(stderr, "h5convert: %s\n", higan_last_error());
        return 1;
    }
    if (higan_dataset_save(&ds, argv[2]) != HIGAN_OK) {
        fprintf(stderr, "h5convert: %s\n", higan_last_error());
        higan_dataset_free(&ds);
        return 1;
    }
    {
        /* distinct writer ids, for the summary */
        int64_t i;
        static unsigned char seen[65536];
        for (i = 0; i < ds.count; ++i) {
            unsigned idx = (unsigned)((int)ds.wids[i] + 32768);
            if (!seen[idx]) { seen[idx] = 1; ++writers; }
        }
    }
    printf("%s -> %s: %lld words, %lld writers, %lld image columns, %lld label characters\n", argv[1], argv[2],
           (long long)ds.count, writers, (long long)ds.total_width, (long long)ds.total_chars);
    higan_dataset_free(&ds);
    return 0;
}
