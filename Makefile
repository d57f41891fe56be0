# higan - build the tests, benchmarks and examples with plain cc.
#   make            build everything that can be built here
#   make test       build and run the tests (ends with "N passed, N failed")
#   make test-scalar  the same tests with every kernel forced to the scalar reference (slow)
#   make test-cuda  build and run tests/test_cuda*.cu on the GPU (fails without one)
#   make tsan-cuda  the emulated CUDA tests under ThreadSanitizer (kernel races; minutes)
#                   (make also builds build/generate_cuda, build/train_{gan,ocr,wid}_cuda: the
#                   examples built by nvcc, where --device cuda works; *_cuda_emu: emulated)
#   make oracle     regenerate tests/oracle/*.safetensors (needs python3 with torch)
#   make bench      build bench/ programs (with nvcc also build/bench_higan_bench_cuda: --device cuda)
#   make tools      build data_tools/ programs
#   make demo       the main job: the shipped model writes examples/demo.txt in three styles
#                   (out/demo.png)
# Options: NO_OMP=1 (no OpenMP), CC=..., CXX=..., NVCC=..., NO_CUDA=1
CC      ?= cc
CXX     ?= c++
NVCC    ?= nvcc
PYTHON  ?= /usr/bin/python3
CFLAGS  ?= -O2 -g
WARN    := -Wall -Wextra
BUILD   := build

# OpenMP when the compiler accepts it (results never depend on the thread count).
ifneq ($(NO_OMP),1)
  OMP_OK := $(shell echo 'int main(void){return 0;}' | $(CC) -fopenmp -x c - -o /dev/null 2>/dev/null && echo 1)
  ifeq ($(OMP_OK),1)
    OMPFLAGS := -fopenmp
  endif
endif
# CUDA targets only where nvcc exists.
ifneq ($(NO_CUDA),1)
  HAVE_NVCC := $(shell command -v $(NVCC) >/dev/null 2>&1 && echo 1)
endif

ALL_CFLAGS := -std=c99 $(CFLAGS) $(WARN) $(OMPFLAGS) -I.
LDLIBS  := -lm -lpthread

# HiGAN+ .hdf5 datasets through libhdf5: detected with pkg-config, never required.
# HDF5=0 leaves it out; HDF5=1 insists on it.
HDF5 ?= auto
ifneq ($(HDF5),0)
  HDF5_LIBS := $(shell pkg-config --libs hdf5 2>/dev/null)
  ifneq ($(strip $(HDF5_LIBS)),)
    ALL_CFLAGS += -DHIGAN_HDF5 $(shell pkg-config --cflags hdf5 2>/dev/null)
    LDLIBS     += $(HDF5_LIBS)
  else ifeq ($(HDF5),1)
    $(error HDF5=1 but pkg-config finds no hdf5: apt-get install libhdf5-dev pkg-config)
  endif
endif

# Rebuild everything when the flags change (HDF5 on/off, NO_OMP, CFLAGS).
FLAGS_STAMP := $(BUILD)/flags-$(shell echo '$(CC) $(ALL_CFLAGS) $(LDLIBS)' | cksum | cut -d' ' -f1)

TEST_SRCS := $(wildcard tests/test_*.c)
TEST_BINS := $(patsubst tests/%.c,$(BUILD)/%,$(TEST_SRCS)) $(BUILD)/test_compile_cpp
# tests/test_cuda*.cu: each builds twice, for the GPU (skips without one) and emulated (_emu)
CUDA_TEST_SRCS := $(wildcard tests/test_cuda*.cu)
CUDA_TEST_BINS := $(patsubst tests/%.cu,$(BUILD)/%,$(CUDA_TEST_SRCS))
ifeq ($(HAVE_NVCC),1)
  TEST_BINS += $(BUILD)/test_compile_nvcc $(CUDA_TEST_BINS) $(patsubst %,%_emu,$(CUDA_TEST_BINS))
endif
# CUDA: SASS for sm_80 (A100) and sm_90 (H100/H200), PTX for newer GPUs (JIT-compiled once).
NVCC_ARCH ?= -gencode arch=compute_80,code=sm_80 -gencode arch=compute_90,code=sm_90 \
             -gencode arch=compute_90,code=compute_90
NVCC_FLAGS := -std=c++17 -O2 -I. -Xcompiler -Wall,-Wextra
# examples/ use stb_image / stb_image_write from Debian's libstb-dev
HAVE_STB := $(shell test -f /usr/include/stb/stb_image_write.h && echo 1)
ifeq ($(HAVE_STB),1)
  EXAMPLE_BINS := $(patsubst examples/%.c,$(BUILD)/%,$(wildcard examples/*.c))
  # generate.c and the training drivers through nvcc with the CUDA backend (--device cuda)
  ifeq ($(HAVE_NVCC),1)
    CUDA_EXAMPLE_BINS := $(BUILD)/generate_cuda $(BUILD)/train_gan_cuda $(BUILD)/train_ocr_cuda $(BUILD)/train_wid_cuda
  endif
endif
BENCH_SRCS := $(wildcard bench/*.c)
BENCH_BINS := $(patsubst bench/%.c,$(BUILD)/bench_%,$(BENCH_SRCS))
# bench/higan_bench.c through nvcc with the CUDA backend (--device cuda; _emu: host emulation)
ifeq ($(HAVE_NVCC),1)
  CUDA_BENCH_BINS := $(BUILD)/bench_higan_bench_cuda
endif
HEADERS := higan.h tests/check.h tests/gan_fixture.h $(wildcard data_tools/*.h) $(wildcard examples/*.h) $(FLAGS_STAMP)
TOOL_SRCS := $(wildcard data_tools/*.c)
TOOL_BINS := $(patsubst data_tools/%.c,$(BUILD)/%,$(TOOL_SRCS))

.PHONY: all test test-scalar test-cuda tsan-cuda bench tools oracle clean demo
all: $(TEST_BINS) $(BENCH_BINS) $(TOOL_BINS) $(EXAMPLE_BINS) $(CUDA_EXAMPLE_BINS) $(CUDA_BENCH_BINS)
tools: $(TOOL_BINS)

$(BUILD):
	@mkdir -p $(BUILD)

$(FLAGS_STAMP): | $(BUILD)
	@rm -f $(BUILD)/flags-*; touch $@

$(BUILD)/test_%: tests/test_%.c $(HEADERS) | $(BUILD)
	$(CC) $(ALL_CFLAGS) $< -o $@ $(LDLIBS)

# The header must compile as C++ too (nvcc compiles it as C++).
$(BUILD)/test_compile_cpp: tests/compile_cpp.cpp $(HEADERS) | $(BUILD)
	$(CXX) -std=c++17 $(CFLAGS) $(WARN) $(OMPFLAGS) -I. $< -o $@ $(LDLIBS)

# ... and through nvcc (host compile of a .cu translation unit), where nvcc exists.
$(BUILD)/test_compile_nvcc: tests/compile_cpp.cpp $(HEADERS) | $(BUILD)
	$(NVCC) -x cu -std=c++17 -O2 -I. -Xcompiler -Wall,-Wextra $< -o $@

# higan_cuda.cuh against the CPU kernels: skips without a GPU (make test-cuda requires one) ...
# The implementations are compiled once per flavour (tests/cuda_impl.cu) and linked into each.
CUDA_TEST_DEPS := higan_cuda.cuh tests/cuda_check.h $(HEADERS)
$(BUILD)/cuda_impl.o: tests/cuda_impl.cu $(CUDA_TEST_DEPS) | $(BUILD)
	$(NVCC) $(NVCC_FLAGS) $(NVCC_ARCH) -c $< -o $@
$(CUDA_TEST_BINS): $(BUILD)/%: tests/%.cu $(BUILD)/cuda_impl.o $(CUDA_TEST_DEPS) | $(BUILD)
	$(NVCC) $(NVCC_FLAGS) $(NVCC_ARCH) $< $(BUILD)/cuda_impl.o -o $@ -lcublas

# ... and the same tests through its host emulation (HIGAN_CUDA_EMULATE), run everywhere.
$(BUILD)/cuda_impl_emu.o: tests/cuda_impl.cu $(CUDA_TEST_DEPS) | $(BUILD)
	$(NVCC) $(NVCC_FLAGS) -arch=sm_80 -DHIGAN_CUDA_EMULATE -c $< -o $@
$(patsubst %,%_emu,$(CUDA_TEST_BINS)): $(BUILD)/%_emu: tests/%.cu $(BUILD)/cuda_impl_emu.o $(CUDA_TEST_DEPS) | $(BUILD)
	$(NVCC) $(NVCC_FLAGS) -arch=sm_80 -DHIGAN_CUDA_EMULATE $< $(BUILD)/cuda_impl_emu.o -o $@ -lcublas

# The emulated CUDA tests under ThreadSanitizer, elementwise kernels spread over 4 threads and
# block kernels on two 4-thread teams at once: a data race inside a kernel, or between its
# blocks, is reported (slow: minutes).
tsan-cuda: $(patsubst %,%_tsan,$(CUDA_TEST_BINS))
	@HIGAN_CUDA_EMULATE_MAP_THREADS=4 OMP_NUM_THREADS=1 TSAN_OPTIONS=halt_on_error=1 \
	  sh tests/run_tests.sh $(patsubst %,%_tsan,$(CUDA_TEST_BINS))
TSAN_FLAGS := -std=c++17 -O1 -g -I. -Xcompiler -fsanitize=thread -arch=sm_80 -DHIGAN_CUDA_EMULATE
$(BUILD)/cuda_impl_tsan.o: tests/cuda_impl.cu $(CUDA_TEST_DEPS) | $(BUILD)
	$(NVCC) $(TSAN_FLAGS) -c $< -o $@
$(patsubst %,%_tsan,$(CUDA_TEST_BINS)): $(BUILD)/%_tsan: tests/%.cu $(BUILD)/cuda_impl_tsan.o $(CUDA_TEST_DEPS) | $(BUILD)
	$(NVCC) $(TSAN_FLAGS) $< $(BUILD)/cuda_impl_tsan.o -o $@ -lcublas -ltsan

test-cuda: $(CUDA_TEST_BINS)
	@HIGAN_REQUIRE_CUDA=1 sh tests/run_tests.sh $(CUDA_TEST_BINS)

$(BUILD)/bench_%: bench/%.c $(HEADERS) | $(BUILD)
	$(CC) $(ALL_CFLAGS) -O3 $< -o $@ $(LDLIBS)

$(BUILD)/bench_higan_bench_cuda: bench/higan_bench.c higan_cuda.cuh $(HEADERS) | $(BUILD)
	$(NVCC) $(NVCC_FLAGS) $(NVCC_ARCH) -x cu -DHIGAN_WITH_CUDA $< -o $@ -lcublas
$(BUILD)/bench_higan_bench_cuda_emu: bench/higan_bench.c higan_cuda.cuh $(HEADERS) | $(BUILD)
	$(NVCC) $(NVCC_FLAGS) -arch=sm_80 -x cu -DHIGAN_WITH_CUDA -DHIGAN_CUDA_EMULATE $< -o $@ -lcublas

bench: $(BENCH_BINS) $(CUDA_BENCH_BINS)

$(EXAMPLE_BINS): $(BUILD)/%: examples/%.c $(HEADERS) | $(BUILD)
	$(CC) $(ALL_CFLAGS) $< -o $@ $(LDLIBS)

# The same generate.c / train_*.c, compiled as CUDA C++ with the CUDA backend: --device cuda
# selects it. *_cuda_emu: through higan_cuda.cuh's host emulation, to try them without a GPU.
CUDA_EXAMPLES := generate train_gan train_ocr train_wid
$(patsubst %,$(BUILD)/%_cuda,$(CUDA_EXAMPLES)): $(BUILD)/%_cuda: examples/%.c higan_cuda.cuh $(HEADERS) | $(BUILD)
	$(NVCC) $(NVCC_FLAGS) $(NVCC_ARCH) -x cu -DHIGAN_WITH_CUDA $< -o $@ -lcublas
$(patsubst %,$(BUILD)/%_cuda_emu,$(CUDA_EXAMPLES)): $(BUILD)/%_cuda_emu: examples/%.c higan_cuda.cuh $(HEADERS) | $(BUILD)
	$(NVCC) $(NVCC_FLAGS) -arch=sm_80 -x cu -DHIGAN_WITH_CUDA -DHIGAN_CUDA_EMULATE $< -o $@ -lcublas

# data_tools: checkpoint converter and inspector (C, no Python)
$(TOOL_BINS): $(BUILD)/%: data_tools/%.c $(HEADERS) | $(BUILD)
	$(CC) $(ALL_CFLAGS) $< -o $@ $(LDLIBS)

test: $(TEST_BINS)
	@sh tests/run_tests.sh $(TEST_BINS)

test-scalar: $(TEST_BINS)
	@HIGAN_CPU=scalar sh tests/run_tests.sh $(TEST_BINS)

oracle:
	cd tests/oracle && for f in make_*.py; do echo "== $$f"; $(PYTHON) $$f || exit 1; done

clean:
	rm -rf $(BUILD)

# The main job: the model that ships (trained on the synthetic set, see examples/models/README.md)
# writes a few lines in three random styles. Builds only what it needs.
DEMO_MODEL := examples/models/higan_small.safetensors
demo: $(BUILD)/generate
	@mkdir -p out
	OMP_WAIT_POLICY=passive $(BUILD)/generate -c $(DEMO_MODEL) --text-file examples/demo.txt --seeds 3,7,12 -o out/demo.png
