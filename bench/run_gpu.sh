#!/bin/sh
# bench/run_gpu.sh: higan on an NVIDIA GPU (--device cuda) and the same workloads on the CPU:
# generator inference in words/s at batch 1 (gen1) and batch 256 (gen256), and one full GAN
# training iteration (D step + G step, IAM shapes) at batch 8 and 32 (gan8, gan32). See
# bench/README.md, "On the GPU".
#
#   sh bench/run_gpu.sh [--precision fp32|tf32|bf16] [--repeats N] [--warmup N] [--out DIR]
#                       [--cpu-workloads LIST] (default gen1,gen256,gan8,gan32; none: skip the CPU)
#
# --precision is the device's (higan_cuda_set_precision); the CPU rows run fp32 for fp32 and
# tf32, bf16 for bf16. Results: DIR/cuda.{txt,json} and DIR/cpu.{txt,json} (default
# runs/bench_gpu). The CPU rows use every core (HIGAN_THREADS / OMP_NUM_THREADS to change); the
# CPU's gan32 needs about 20 GB of memory and a minute or more per run.
set -u
cd "$(dirname "$0")/.." || exit 1
PRECISION=fp32
REPEATS=5
WARMUP=2
OUT=runs/bench_gpu
CPU_WORKLOADS=gen1,gen256,gan8,gan32
while [ $# -gt 0 ]; do
    case "$1" in
        --precision) PRECISION=$2; shift 2 ;;
        --repeats) REPEATS=$2; shift 2 ;;
        --warmup) WARMUP=$2; shift 2 ;;
        --out) OUT=$2; shift 2 ;;
        --cpu-workloads) CPU_WORKLOADS=$2; shift 2 ;;
        *) sed -n '2,13p' "$0"; exit 2 ;;
    esac
done
case "$PRECISION" in fp32|tf32) CPU_PRECISION=fp32 ;; bf16) CPU_PRECISION=bf16 ;; *) echo "bad --precision"; exit 2 ;; esac
make build/bench_higan_bench build/bench_higan_bench_cuda >/dev/null || exit 1
mkdir -p "$OUT" || exit 1
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-passive}
echo "== GPU ($PRECISION)"
build/bench_higan_bench_cuda --device cuda --precision "$PRECISION" --repeats "$REPEATS" --warmup "$WARMUP" \
    --json "$OUT/cuda.json" | tee "$OUT/cuda.txt"
[ "$CPU_WORKLOADS" = none ] && exit 0
echo "== CPU ($CPU_PRECISION), the same workloads ($CPU_WORKLOADS)"
build/bench_higan_bench --workload "$CPU_WORKLOADS" --precision "$CPU_PRECISION" --repeats "$REPEATS" \
    --warmup "$WARMUP" --json "$OUT/cpu.json" | tee "$OUT/cpu.txt"
