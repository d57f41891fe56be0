// cuda_impl.cu - the implementations of higan.h and higan_cuda.cuh for the CUDA test binaries,
// compiled once per flavour (build/cuda_impl.o for the GPU, build/cuda_impl_emu.o with
// HIGAN_CUDA_EMULATE) and linked into every tests/test_cuda*.cu binary: compiling the whole
// header in each test file was most of the CUDA tests' build time.
#define HIGAN_IMPLEMENTATION
#include "higan.h"
// small im2col blocks, so that the conv tests run in several groups of samples
#define HIGAN_CUDA_CONV_SCRATCH_FLOATS 1500
// emulation: device memory can be made inaccessible to host code (higan_cuda_emulate_guard)
#ifdef HIGAN_CUDA_EMULATE
#  define HIGAN_CUDA_EMULATE_GUARD
#endif
#define HIGAN_CUDA_IMPLEMENTATION
#include "higan_cuda.cuh"
