#!/usr/bin/env bash
# Issue 11's GPU measurements in one call, our steps against the peer (mdistiller) on the same
# GPU, writing each part's results to $OUT as soon as it is done. Rerunning skips the parts
# (and, within the step table, the pair/batch/precision groups) already in $OUT.
#
#   OUT=DIR PEER=PATH/peer_step.py CIFAR10_TAR=PATH/cifar10-jpeg.tar.gz \
#       bash benchmarks/gpu_throughput.sh             # a GPU
#   OUT=DIR PEER=... CIFAR10_TAR=... bash benchmarks/gpu_throughput.sh --device=cpu   # smoke
#
# Parts, in order:
#   1. train_step_gpu: KD / CUD / DKD student steps and the DUS teacher step vs the peer's KD
#      and DKD steps; resnet32x4->resnet8x4, wrn_40_2->wrn_16_2, resnet56->resnet20; batch 64
#      and 512; float32 and bfloat16; 1 and 10 steps per dispatch (bench_vs_peer.py).
#   2. train_step_gpu_mfu: MFU of part 1 (mfu.py; FLOPs per image from scaling_flops.py).
#   3. pipeline_gpu: CUD / KD step time and the on-device input pipeline vs a constant batch
#      (bench_train_step.py).
#   4. input_path_gpu: our KD step over the real CIFAR-10 JPEG training split, on device, vs
#      the peer's DataLoader at 4 and 8 workers (skipped without CIFAR10_TAR).
#   5. losses_gpu: every loss and projection solver vs a softmax (bench_losses.py).
# --device=cpu runs every part with tiny settings on the CPU, to check the script itself.
set -euo pipefail

# shellcheck source=benchmarks/_device_arg.sh
source "$(dirname "$0")/_device_arg.sh"
: "${PEER:?set PEER to the path of peer_step.py}"
CIFAR10_TAR="${CIFAR10_TAR:-}"
PYTHON="${PYTHON:-python}"
cd "$(dirname "$0")/.."
mkdir -p "$OUT"
# This checkout's cud_jax, whatever copy the environment has installed.
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export CUD_JAX_COMMIT="${CUD_JAX_COMMIT:-$(git rev-parse --short HEAD 2>/dev/null || echo unknown)}"

if [[ $DEVICE == cuda ]]; then
  PAIRS=resnet32x4-resnet8x4,wrn_40_2-wrn_16_2,resnet56-resnet20
  STEPS=(--devices=1 --batches=64,512 --dtypes=float32,bfloat16 --steps_per_call=1,10
         --steps=50 --peer_warmup=10 --rounds=5 --num_examples=10240)
  PIPE=(--teacher=resnet32x4 --student=resnet8x4 --batch_sizes=64,512
        --dtypes=float32,bfloat16 --steps_per_call=20)
  REAL=(--devices=1 --batches=64 --steps=300 --rounds=3)
  EXTRACT=('*train/*')  # the whole training split for the peer's DataLoader
  LOSSES=(--repeats=31)
  SUFFIX=gpu
else  # tiny: checks that every part runs, in minutes on a few CPU cores
  PAIRS=resnet20-resnet8
  STEPS=(--devices=1,2 --batches=16 --dtypes=float32 --steps_per_call=1,2 --steps=4
         --peer_warmup=2 --rounds=2 --num_examples=256 --variants=kd,cud,teacher
         --other_device_variants=kd)
  PIPE=(--teacher=resnet8 --student=resnet8 --batch_sizes=16 --steps_per_call=2 --rounds=2
        --num_examples=256)
  REAL=(--devices=1 --batches=16 --steps=4 --rounds=1 --real_limit_per_class=40
        --loader_workers=1)
  EXTRACT=('*train/*/00[0-3]?.*')  # 40 images a class: the peer's loader stops after 25 batches
  LOSSES=(--repeats=3)
  SUFFIX=smoke_cpu
fi

done_part() { [[ -s "$OUT/$1.md" ]] && echo "== $1: already in $OUT, skipped"; }

# 1. Steps side by side (resumable group by group inside the script).
"$PYTHON" benchmarks/bench_vs_peer.py --peer="$PEER" --device="$DEVICE" --pairs="$PAIRS" \
  "${STEPS[@]}" --name="train_step_$SUFFIX" --results_dir="$OUT" --resume

# 2. MFU (needs known peaks on a GPU; on the CPU smoke, nominal ones).
if ! done_part "train_step_${SUFFIX}_mfu"; then
  PEAK=()
  [[ $DEVICE == cpu ]] && PEAK=(--peak_tflops=1,1)
  "$PYTHON" benchmarks/mfu.py --results="$OUT/train_step_$SUFFIX.json" "${PEAK[@]}"
fi

# 3. Pipeline vs constant batch, CUD vs KD.
if ! done_part "pipeline_$SUFFIX"; then
  "$PYTHON" benchmarks/bench_train_step.py "${PIPE[@]}" --name="pipeline_$SUFFIX" \
    --results_dir="$OUT"
fi

# 4. The real input path: the JPEG tarball decoded once into our on-device split, vs the
# peer's torchvision DataLoader over the same images extracted to a temporary folder.
if [[ -n $CIFAR10_TAR ]] && ! done_part "input_path_$SUFFIX"; then
  EXTRACTED="$(mktemp -d)"
  trap 'rm -rf "$EXTRACTED"' EXIT
  tar -xzf "$CIFAR10_TAR" -C "$EXTRACTED" --wildcards "${EXTRACT[@]}"
  TRAIN_DIR="$(find "$EXTRACTED" -maxdepth 3 -type d -name train | head -n 1)"
  "$PYTHON" benchmarks/bench_vs_peer.py --peer="$PEER" --device="$DEVICE" \
    --pairs="${PAIRS%%,*}" "${REAL[@]}" --real_data="$CIFAR10_TAR" --peer_folder="$TRAIN_DIR" \
    --variants=kd --name="input_path_$SUFFIX" --results_dir="$OUT" --resume
fi

# 5. Losses and projection solvers.
if ! done_part "losses_$SUFFIX"; then
  "$PYTHON" benchmarks/bench_losses.py "${LOSSES[@]}" --name="losses_$SUFFIX" \
    --results_dir="$OUT"
fi
echo "== all parts done; results in $OUT"
