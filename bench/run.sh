#!/bin/sh
# bench/run.sh: builds higan_bench, runs it and bench/torch_bench.py (PyTorch) with the same
# settings and prints one table: workload | higan s | torch s | ratio | GFLOP/s | % peak |
# peak MB (each for both). See bench/README.md.
#
#   sh bench/run.sh [--threads N] [--repeats N] [--warmup N] [--workload LIST] [--gan-batch N]
#                   [--precision fp32|bf16] [--out DIR] [--omp-wait passive|default|active]
#
# --precision sets higan's precision; PyTorch always runs fp32 (the issue's baseline), unless
# TORCH_PRECISION=bf16 is set (torch.autocast). Results: DIR/higan.{txt,json}, DIR/torch.{txt,json}
# (DIR defaults to runs/bench). PYTHON picks the interpreter (default /usr/bin/python3, Debian's
# torch 1.13). Where Debian's libopenblas0-pthread is installed, PyTorch runs on OpenBLAS
# (LD_LIBRARY_PATH) instead of the alternatives' default libblas (netlib's reference BLAS).
set -u
cd "$(dirname "$0")/.." || exit 1
THREADS=$(nproc 2>/dev/null || echo 1)
REPEATS=3
WARMUP=1
WORKLOAD=all
GAN_BATCH=8
PRECISION=fp32
OUT=runs/bench
OMP_WAIT=${OMP_WAIT_POLICY:-passive}
PYTHON=${PYTHON:-/usr/bin/python3}
while [ $# -gt 0 ]; do
    case "$1" in
        --threads) THREADS=$2; shift 2 ;;
        --repeats) REPEATS=$2; shift 2 ;;
        --warmup) WARMUP=$2; shift 2 ;;
        --workload) WORKLOAD=$2; shift 2 ;;
        --gan-batch) GAN_BATCH=$2; shift 2 ;;
        --precision) PRECISION=$2; shift 2 ;;
        --out) OUT=$2; shift 2 ;;
        --omp-wait) OMP_WAIT=$2; shift 2 ;;
        *) sed -n '2,15p' "$0"; exit 2 ;;
    esac
done
make build/bench_higan_bench >/dev/null || exit 1
mkdir -p "$OUT" || exit 1
# both sides on the same OpenMP wait policy: passive (threads sleep at once; right for a
# shared machine) unless the caller chose; `default` leaves libgomp's own (spin a moment,
# then sleep: faster on an idle machine)
case "$OMP_WAIT" in
    default) unset OMP_WAIT_POLICY ;;
    *) OMP_WAIT_POLICY=$OMP_WAIT; export OMP_WAIT_POLICY ;;
esac
echo "== higan (build/bench_higan_bench)"
./build/bench_higan_bench --threads "$THREADS" --repeats "$REPEATS" --warmup "$WARMUP" --workload "$WORKLOAD" \
    --gan-batch "$GAN_BATCH" --precision "$PRECISION" --json "$OUT/higan.json" | tee "$OUT/higan.txt"
[ -s "$OUT/higan.json" ] || { echo "run.sh: higan_bench wrote no results" >&2; exit 1; }
OPENBLAS=/usr/lib/x86_64-linux-gnu/openblas-pthread
if [ -e "$OPENBLAS/libblas.so.3" ]; then
    LD_LIBRARY_PATH="$OPENBLAS${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    export LD_LIBRARY_PATH
fi
echo
echo "== PyTorch (bench/torch_bench.py)"
"$PYTHON" bench/torch_bench.py --threads "$THREADS" --repeats "$REPEATS" --warmup "$WARMUP" --workload "$WORKLOAD" \
    --gan-batch "$GAN_BATCH" --precision "${TORCH_PRECISION:-fp32}" --higan-json "$OUT/higan.json" \
    --json "$OUT/torch.json" | tee "$OUT/torch.txt"
