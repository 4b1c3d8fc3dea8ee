#!/usr/bin/env bash
# Sweep throughput on one GPU (issue 12): N = 1, 2, 4, 8, 16 resnet8x4 KD students of one
# resnet32x4 teacher at batch 64, trained in one vmapped step, vs the same N runs one by one.
#
#   OUT=/where/results/go bash benchmarks/gpu_sweep_run.sh
#
# Needs no data (synthetic images of CIFAR shape) and no internet. Writes OUT/sweep_gpu.md
# and .json (copy them to results/ to commit). Target of the issue: 8 students in <= 2x the
# step time of one (>= 4x aggregate images/s); the table shows where it saturates.
set -uo pipefail
OUT=${OUT:-results}
mkdir -p "$OUT"
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
python3 benchmarks/bench_sweep.py --teacher=resnet32x4 --student=resnet8x4 --batch=64 \
  --num_runs=1,2,4,8,16 --per_pass=0 --rounds=5 --steps_per_call=20 --num_examples=8192 \
  --name=sweep_gpu || exit 1
cp results/sweep_gpu.md results/sweep_gpu.json "$OUT"/ 2>/dev/null || true
