#!/usr/bin/env bash
# Issue 12's GPU measurement in one call: N = 1, 2, 4, 8, 16 resnet8x4 KD students of one
# resnet32x4 teacher at batch 64, and N MiniLM-3L-shaped text students (3 layers, 384 wide,
# random init: no download) of cached teacher probabilities, each sweep trained in one
# program (vmap over the run axis; unroll up to N = 4) vs the same N runs one after another:
# aggregate throughput, per-run wall time per step, compile time (benchmarks/bench_sweep.py).
# Needs no data and no internet (synthetic images and token ids).
#
#   OUT=DIR bash benchmarks/gpu_sweep.sh                 # a GPU: writes DIR/sweep_gpu.{md,json}
#   OUT=DIR bash benchmarks/gpu_sweep.sh --device=cpu    # tiny settings on the CPU (smoke)
#
# Target of the issue: 8 students in <= 2x the step time of one (>= 4x aggregate); the table
# shows where it saturates. Copy the results to results/ to commit them.
set -euo pipefail

# shellcheck source=benchmarks/_device_arg.sh
source "$(dirname "$0")/_device_arg.sh"
PYTHON="${PYTHON:-python}"
cd "$(dirname "$0")/.."
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
export CUD_JAX_COMMIT="${CUD_JAX_COMMIT:-$(git rev-parse --short HEAD 2>/dev/null || echo unknown)}"

if [ "$DEVICE" = cpu ]; then
  "$PYTHON" benchmarks/bench_sweep.py --device=cpu --teacher=resnet8 --student=resnet8 \
    --batch=8 --num_runs=1,2 --modes=vmap,unroll --unroll_max=2 --text_runs=1,2 \
    --text_student="bert_small:L=1,H=32,A=2,I=64" --text_length=16 --steps_per_call=1 \
    --num_examples=64 --rounds=1 --name=sweep_gpu_smoke --out="$OUT"
  exit 0
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
"$PYTHON" benchmarks/bench_sweep.py --teacher=resnet32x4 --student=resnet8x4 --batch=64 \
  --num_runs=1,2,4,8,16 --modes=vmap,unroll --unroll_max=4 --text_runs=1,2,4,8,16 \
  --text_student="bert_small:L=3,H=384,A=12,I=1536" --text_length=64 --steps_per_call=10 \
  --num_examples=8192 --rounds=5 --name=sweep_gpu --out="$OUT"
nvidia-smi --query-gpu=memory.used,memory.total --format=csv,noheader || true
