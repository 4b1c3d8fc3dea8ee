#!/usr/bin/env bash
# cud_jax on a Cloud TPU VM slice (one host or a multi-host pod slice) from your machine.
#
#   launch/tpu_vm_pod.sh --name cud-v4 --zone us-central2-b --accelerator-type v4-32 \
#       --bucket gs://my-bucket/cud_jax --run c100_cud \
#       -- --config=configs/cifar100.py --config.data.data_dir=/path/on/workers
#
# Steps, each idempotent, so rerunning the same command continues where it stopped:
#   1. create the TPU VM slice unless one of that name exists (recreate it if a Spot
#      slice was preempted);
#   2. install the code on every worker: this checkout (tracked and untracked,
#      non-ignored files) copied with `tpu-vm scp`, or `--install pip:SPEC`; plus jax[tpu];
#   3. mount the GCS bucket on every worker with gcsfuse (the run's workdir is
#      MOUNT_DIR/RUN, shared by all hosts: Orbax writes each checkpoint cooperatively from
#      all of them, process 0 writes metrics and the report);
#   4. start `python -m cud_jax.main ARGS --workdir=MOUNT_DIR/RUN` on every worker
#      (`--worker=all`, one process per host, jax.distributed set up from the TPU
#      metadata), detached, each logging to ~/cud_jax_logs/RUN.log on its host;
#   5. stream worker 0's log here until it exits, and exit with its status.
# Status 75 means the run saved a checkpoint on SIGTERM (maintenance event, Spot
# preemption) and stopped; with --restarts N the script goes back to step 1 and resumes,
# up to N times.
#
# Flags:
#   --name NAME               TPU VM name (required)
#   --zone ZONE               zone (required), e.g. us-central2-b (v4), us-west4-a (v5e)
#   --accelerator-type TYPE   e.g. v4-8, v4-32, v5litepod-16 (required to create)
#   --version RUNTIME         TPU software version (default: tpu-ubuntu2204-base;
#                             v5e slices use v2-alpha-tpuv5-lite)
#   --project PROJECT         gcloud project (default: gcloud's configured one)
#   --spot                    create a Spot slice (cheaper, can be preempted)
#   --bucket gs://B[/PREFIX]  where the workdir lives (required on multi-host slices)
#   --run RUN                 run name: workdir MOUNT_DIR/RUN (required)
#   --mount-dir DIR           gcsfuse mount point on the workers (default ~/cud_jax_gcs)
#   --install copy|pip:SPEC   how the code gets there (default copy; e.g.
#                             pip:git+https://github.com/ORG/cud_jax@v0.1.0)
#   --jax SPEC                pip spec of JAX for TPU (default "jax[tpu]")
#   --restarts N              resume automatically after up to N preemptions (default 0)
#   --delete-after            delete the slice after a successful run
#   --dry-run                 print the gcloud commands instead of running them
# Everything after `--` goes to cud_jax.main on every worker (not --workdir: see --run).
set -euo pipefail

usage() { sed -n '2,45p' "$0" | sed 's/^# \{0,1\}//'; exit "${1:-0}"; }

NAME="" ZONE="" TYPE="" VERSION="tpu-ubuntu2204-base" PROJECT="" SPOT=0 BUCKET="" RUN=""
MOUNT_DIR='$HOME/cud_jax_gcs' INSTALL="copy" JAX_SPEC="jax[tpu]" RESTARTS=0 DELETE_AFTER=0
DRY_RUN=0
while [[ $# -gt 0 ]]; do
  case "$1" in
    --name) NAME="$2"; shift 2 ;;
    --zone) ZONE="$2"; shift 2 ;;
    --accelerator-type) TYPE="$2"; shift 2 ;;
    --version) VERSION="$2"; shift 2 ;;
    --project) PROJECT="$2"; shift 2 ;;
    --spot) SPOT=1; shift ;;
    --bucket) BUCKET="$2"; shift 2 ;;
    --run) RUN="$2"; shift 2 ;;
    --mount-dir) MOUNT_DIR="$2"; shift 2 ;;
    --install) INSTALL="$2"; shift 2 ;;
    --jax) JAX_SPEC="$2"; shift 2 ;;
    --restarts) RESTARTS="$2"; shift 2 ;;
    --delete-after) DELETE_AFTER=1; shift ;;
    --dry-run) DRY_RUN=1; shift ;;
    -h|--help) usage 0 ;;
    --) shift; break ;;
    *) echo "error: unknown flag $1 (see --help)" >&2; exit 2 ;;
  esac
done
ARGS=("$@")
for required in NAME ZONE RUN; do
  if [[ -z "${!required}" ]]; then
    echo "error: --$(echo "$required" | tr 'A-Z' 'a-z') is required (see --help)" >&2; exit 2
  fi
done
for arg in "${ARGS[@]}"; do
  if [[ "$arg" == --workdir=* ]]; then
    echo "error: the workdir is MOUNT_DIR/RUN on the workers; drop $arg and use --run" >&2
    exit 2
  fi
done
if [[ -n "$BUCKET" && "$BUCKET" != gs://* ]]; then
  echo "error: --bucket must look like gs://BUCKET[/PREFIX]" >&2; exit 2
fi

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
GCLOUD=(gcloud)
[[ -n "$PROJECT" ]] && GCLOUD+=(--project "$PROJECT")
TPU=("${GCLOUD[@]}" compute tpus tpu-vm)

run() {  # runs (or with --dry-run prints) a command
  if [[ $DRY_RUN -eq 1 ]]; then printf '+'; printf ' %q' "$@"; printf '\n'; return 0; fi
  "$@"
}
on_workers() {  # on_workers all|0 'remote bash script'
  run "${TPU[@]}" ssh "$NAME" --zone "$ZONE" --worker="$1" --command "$2"
}

state() {
  if [[ $DRY_RUN -eq 1 ]]; then echo "NONE"; return; fi
  "${TPU[@]}" describe "$NAME" --zone "$ZONE" --format='value(state)' 2>/dev/null || echo "NONE"
}

ensure_slice() {
  local s; s="$(state)"
  if [[ "$s" == "PREEMPTED" || "$s" == "TERMINATED" ]]; then
    echo "tpu_vm_pod: $NAME is $s; deleting it to create it again"
    run "${TPU[@]}" delete "$NAME" --zone "$ZONE" --quiet
    s="NONE"
  fi
  if [[ "$s" == "NONE" ]]; then
    if [[ -z "$TYPE" ]]; then
      echo "error: no TPU VM $NAME in $ZONE; give --accelerator-type to create it" >&2; exit 2
    fi
    local create=("${TPU[@]}" create "$NAME" --zone "$ZONE" --accelerator-type "$TYPE"
                  --version "$VERSION")
    [[ $SPOT -eq 1 ]] && create+=(--spot)
    echo "tpu_vm_pod: creating $TYPE slice $NAME in $ZONE"
    run "${create[@]}"
  else
    echo "tpu_vm_pod: reusing $NAME ($s)"
  fi
}

install_code() {
  local pip_cmd="python3 -m pip install --quiet --upgrade"
  if [[ "$INSTALL" == copy ]]; then
    local tarball; tarball="$(mktemp -t cud_jax_code.XXXXXX).tar.gz"
    (cd "$REPO" && git ls-files -z --cached --others --exclude-standard \
       | tar --null -czf "$tarball" -T -)
    echo "tpu_vm_pod: copying $(du -h "$tarball" | cut -f1) of code to every worker"
    run "${TPU[@]}" scp "$tarball" "$NAME:cud_jax_code.tar.gz" --zone "$ZONE" --worker=all
    rm -f "$tarball"
    on_workers all "rm -rf ~/cud_jax && mkdir -p ~/cud_jax && tar -xzf ~/cud_jax_code.tar.gz -C ~/cud_jax && $pip_cmd $(printf '%q' "$JAX_SPEC") -e ~/cud_jax"
  elif [[ "$INSTALL" == pip:* ]]; then
    on_workers all "$pip_cmd $(printf '%q' "$JAX_SPEC") $(printf '%q' "${INSTALL#pip:}") && mkdir -p ~/cud_jax"
  else
    echo "error: --install must be copy or pip:SPEC" >&2; exit 2
  fi
}

mount_bucket() {
  if [[ -z "$BUCKET" ]]; then
    echo "tpu_vm_pod: no --bucket: the workdir is local to each worker (fine on a single-host slice only)"
    on_workers all "mkdir -p $MOUNT_DIR"
    return
  fi
  local path="${BUCKET#gs://}" bucket prefix
  bucket="${path%%/*}"; prefix=""
  [[ "$path" == */* ]] && prefix="${path#*/}"
  local only_dir=""
  [[ -n "$prefix" ]] && only_dir="--only-dir $(printf '%q' "$prefix")"
  # gcsfuse from Google's apt repository, if missing (the documented install).
  on_workers all "set -e
if ! command -v gcsfuse >/dev/null; then
  repo=gcsfuse-\$(lsb_release -c -s)
  curl -fsSL https://packages.cloud.google.com/apt/doc/apt-key.gpg | sudo gpg --dearmor --yes -o /usr/share/keyrings/cloud.google.gpg
  echo \"deb [signed-by=/usr/share/keyrings/cloud.google.gpg] https://packages.cloud.google.com/apt \$repo main\" | sudo tee /etc/apt/sources.list.d/gcsfuse.list >/dev/null
  sudo apt-get update -qq && sudo apt-get install -y -qq gcsfuse
fi
mkdir -p $MOUNT_DIR
mountpoint -q $MOUNT_DIR || gcsfuse --implicit-dirs $only_dir $(printf '%q' "$bucket") $MOUNT_DIR"
}

start_run() {
  local quoted=""
  for arg in "${ARGS[@]}"; do quoted+=" $(printf '%q' "$arg")"; done
  local logs='$HOME/cud_jax_logs'
  local workdir="$MOUNT_DIR/$RUN"
  # Detached, so a dropped ssh connection does not kill the run; a stale run of ours from
  # an earlier launch (still holding the TPU) is stopped first through its pid file.
  on_workers all "set -e
mkdir -p $logs $workdir
if [[ -f $logs/$RUN.pid ]] && kill -0 \$(cat $logs/$RUN.pid) 2>/dev/null; then
  old=\$(cat $logs/$RUN.pid); kill -TERM -- -\$old  # its session: bash and python
  for i in \$(seq 120); do kill -0 -- -\$old 2>/dev/null || break; sleep 5; done
fi
rm -f $logs/$RUN.exit
cd ~/cud_jax
setsid nohup bash -c 'python3 -m cud_jax.main --workdir=$workdir --config.distributed.enabled=true$quoted > $logs/$RUN.log 2>&1; echo \$? > $logs/$RUN.exit' > /dev/null 2>&1 < /dev/null &
echo \$! > $logs/$RUN.pid"
}

stream_worker0() {
  local logs='$HOME/cud_jax_logs'
  on_workers 0 "touch $logs/$RUN.log
tail -n +1 -F $logs/$RUN.log & tailer=\$!
while [[ ! -f $logs/$RUN.exit ]]; do sleep 10; done
sleep 2; kill \$tailer
exit \$(cat $logs/$RUN.exit)"
}

attempt=0
while true; do
  ensure_slice
  install_code
  mount_bucket
  start_run
  status=0
  stream_worker0 || status=$?
  if [[ $status -eq 0 ]]; then
    echo "tpu_vm_pod: run $RUN finished; workdir ${BUCKET:-<worker-local>}/$RUN"
    [[ $DELETE_AFTER -eq 1 ]] && run "${TPU[@]}" delete "$NAME" --zone "$ZONE" --quiet
    exit 0
  fi
  # 75: checkpoint saved on SIGTERM. 255: ssh lost the worker (a preempted slice).
  if [[ ($status -eq 75 || $status -eq 255) && $attempt -lt $RESTARTS ]]; then
    attempt=$((attempt + 1))
    echo "tpu_vm_pod: run stopped with status $status; restart $attempt of $RESTARTS"
    sleep 60
    continue
  fi
  echo "tpu_vm_pod: run stopped with status $status (75: preempted after a checkpoint; rerun this command to resume)" >&2
  exit "$status"
done
