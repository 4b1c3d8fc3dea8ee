#!/usr/bin/env bash
# Full-data text evidence on one GPU: CLINC150 (then Banking77 while time is left), 2 seeds,
# CE student / KD from CE and DUS teachers / CUD, through benchmarks/text_matrix.py.
#
#   OUT=/where/results/go [BUDGET=SECONDS] [EPOCHS=5] bash benchmarks/gpu_text_run.sh
#
# For a GPU machine without internet. Expects, relative to the repository root (git-ignored;
# `python benchmarks/prepare_offline_text.py --data DIR` makes them where the files are, see
# benchmarks/README.md):
#   local_data/minilm_fp16/   the MiniLM-L6 checkpoint folder (config.json, vocab.txt,
#                             tokenizer.json, model.safetensors), weights stored as float16
#   local_data/data/clinc150/, local_data/data/banking77/   the data sets' official files
# and, where ml_collections is not installed, its wheel in .whl/ (installed offline).
# BUDGET (seconds, optional) stops starting new seeds once it is half spent; each data set's
# results file is rewritten after every seed, so a run stopped early keeps the seeds it
# finished.
set -uo pipefail
OUT=${OUT:-results}
BUDGET=${BUDGET:-0}      # seconds; 0: no limit. A next seed starts only with time to finish
EPOCHS=${EPOCHS:-5}
mkdir -p "$OUT"
# Seeds and runs share compiled programs through the persistent cache.
# shellcheck source=benchmarks/_device_env.sh
source "$(dirname "$0")/_device_env.sh"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
python3 -c "import jax, flax, optax, orbax.checkpoint as o, chex, ml_collections
print('jax', jax.__version__, 'flax', flax.__version__, 'optax', optax.__version__,
      'devices', jax.devices())" || exit 1

for dataset in clinc150 banking77; do
  for seeds in 0 0,1; do
    # Start a data set only in the first half of the budget; its second seed reuses the
    # compiled programs and needs about half the first one's time.
    if [[ $seeds == 0 ]]; then latest=$((BUDGET / 2)); else latest=$((BUDGET * 2 / 3)); fi
    if (( BUDGET > 0 && SECONDS > latest )); then
      echo "[gpu_text_run] ${SECONDS}s of ${BUDGET}s used: skipping $dataset seeds $seeds"
      continue
    fi
    start=$SECONDS
    python3 benchmarks/text_matrix.py --dataset=$dataset --data=local_data/data/$dataset \
      --checkpoint=local_data/minilm_fp16 \
      --checkpoint_note="float16 copy of the float32 checkpoint (hidden states within 4e-3)" \
      --seeds=$seeds --max_length=128 --length_buckets= --teacher_epochs=$EPOCHS \
      --student_epochs=$EPOCHS --name=${dataset}_gpu --workroot=/tmp/cud_jax_runs/$dataset \
      >> "$OUT/log_$dataset.txt" 2>&1
    echo "[gpu_text_run] $dataset seeds $seeds: exit $?, $((SECONDS - start))s"
    tail -n 25 "$OUT/log_$dataset.txt"
    cp results/${dataset}_gpu.md results/${dataset}_gpu.json "$OUT"/ 2>/dev/null
  done
done
