#!/usr/bin/env bash
# Everything that needs a GPU, in one command (under 8 minutes on an H100/H200), on a machine with
# no internet after `bash tools/offline_wheels.sh install`:
#   1. the CUDA tests (pytest -m cuda): a short adaptation in 32-true, bf16-mixed and 16-mixed, NCCL
#      over two GPUs where there are two, the fast path against the reference on CUDA;
#   2. the speed benchmark of ViT-B at 1024 px, which writes results/speed.md.
#
#   bash tools/gpu_check.sh [OUT_DIR]     # OUT_DIR (default results/) receives speed.md and the logs
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-results}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu_check.log"
python3 -m pytest -q -m cuda tests/test_cuda.py 2>&1 | tee -a "$OUT/gpu_check.log"
tests=${PIPESTATUS[0]}
python3 tools/benchmark_speed.py --model vit_b --size 1024 --device cuda --repeats 3 --profile \
    --out "$OUT/speed.md" 2>&1 | tee -a "$OUT/gpu_check.log"
bench=${PIPESTATUS[0]}
echo "CUDA tests exit $tests, benchmark exit $bench; log in $OUT/gpu_check.log"
exit $((tests || bench))
