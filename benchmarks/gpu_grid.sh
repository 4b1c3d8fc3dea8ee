#!/usr/bin/env bash
# Issue 13's CIFAR-10 evidence grid on one GPU, in one resumable call (benchmarks/cifar10_grid.py).
#
#   OUT=DIR CIFAR10_TAR=PATH/cifar10-jpeg.tar.gz [EPOCHS=30] [BUDGET_MIN=10] \
#       bash benchmarks/gpu_grid.sh                   # a GPU
#   OUT=DIR CIFAR10_TAR=... bash benchmarks/gpu_grid.sh --device=cpu   # smoke, minutes
#
# Order: resnet56 -> resnet20 first (the cheaper pair), seeds 0, 1, 2, each seed's CE and DUS
# teachers before their students; then resnet32x4 -> resnet8x4. BUDGET_MIN stops launching
# cells once spent (a running cell finishes). $OUT/cifar10_grid.md / .json are rewritten after
# every finished cell, so a call cut short still leaves the tables of everything it finished;
# the runs themselves stay in runs/cifar10_grid_gpu (rerun the same command to continue).
# OMNIGLOT (optional) points at images_background_small1.zip for the second OOD set. Where
# ml_collections is not installed, its wheel in .whl/ is installed offline.
set -euo pipefail

# shellcheck source=benchmarks/_device_arg.sh
source "$(dirname "$0")/_device_arg.sh"
: "${CIFAR10_TAR:?set CIFAR10_TAR to the CIFAR-10 JPEG tarball (or image folder)}"
EPOCHS=${EPOCHS:-30}
BUDGET_MIN=${BUDGET_MIN:-10}
# Paths as the caller gave them, before moving to the repository root.
CIFAR10_TAR=$(realpath -m "$CIFAR10_TAR")
OMNIGLOT=${OMNIGLOT:+$(realpath -m "$OMNIGLOT")}
OUT=$(realpath -m "$OUT")
cd "$(dirname "$0")/.."
mkdir -p "$OUT"
export CUD_JAX_COMMIT="${CUD_JAX_COMMIT:-$(git rev-parse --short HEAD 2>/dev/null || echo unknown)}"
# The cells are separate processes: let them share compiled programs.
# shellcheck source=benchmarks/_device_env.sh
source benchmarks/_device_env.sh

OOD=(--ood_sets="noise:uniform${OMNIGLOT:+,images:$OMNIGLOT}")
if [[ $DEVICE == cuda ]]; then
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
  SIZE=(--pairs=resnet56-resnet20,resnet32x4-resnet8x4 --epochs="$EPOCHS"
        --time_budget_min="$BUDGET_MIN"
        --note="One GPU; time budget $BUDGET_MIN min (cells not launched are listed as missing).")
  NAME=cifar10_grid_gpu
else  # cifar10_grid.py's own miniature: checks the script end to end on a CPU
  SIZE=(--smoke)
  NAME=cifar10_grid_smoke_cpu
fi
python3 benchmarks/cifar10_grid.py "${SIZE[@]}" "${OOD[@]}" --data="$CIFAR10_TAR" \
  --workroot="runs/$NAME" --results_dir="$OUT" --name="$NAME"
