#!/usr/bin/env bash
# Several cud_jax processes on one machine, talking over loopback: multi-host logic
# (jax.distributed, global arrays, cooperative checkpoints, preemption) without a cluster.
#
#   launch/local_multiprocess.sh [-n PROCESSES] [-d DEVICES_PER_PROCESS] [-p PORT] \
#       [-l LOG_DIR] -- --config=configs/quickstart.py --workdir=runs/mp
#
# Every process runs `python -m cud_jax.main <args after -->` on the CPU with D emulated
# devices (N x D devices in all, one mesh), process 0 being the coordinator at
# localhost:PORT. Process 0's output is streamed here; the others' go to
# LOG_DIR/process_<i>.log. Ctrl-C (or a SIGTERM to this script) is passed on as SIGTERM to
# every process: they save a checkpoint at the same step and exit with status 75; running
# the same command again resumes. The script exits with process 0's status.
#
# Defaults: 2 processes x 4 devices, a free port, LOG_DIR a new temporary directory.
# Environment: PYTHON (default python3).
set -euo pipefail

usage() { sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'; exit "${1:-0}"; }

NUM_PROCESSES=2
DEVICES=4
PORT=""
LOG_DIR=""
PYTHON="${PYTHON:-python3}"
while getopts "n:d:p:l:h" opt; do
  case "$opt" in
    n) NUM_PROCESSES="$OPTARG" ;;
    d) DEVICES="$OPTARG" ;;
    p) PORT="$OPTARG" ;;
    l) LOG_DIR="$OPTARG" ;;
    h) usage 0 ;;
    *) usage 2 ;;
  esac
done
shift $((OPTIND - 1))
[[ "${1:-}" == "--" ]] && shift
if [[ $# -eq 0 ]]; then
  echo "error: give the cud_jax.main arguments after --, e.g. -- --config=configs/quickstart.py --workdir=runs/mp" >&2
  exit 2
fi
if [[ -z "$PORT" ]]; then
  PORT="$("$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("localhost", 0)); print(s.getsockname()[1])')"
fi
LOG_DIR="${LOG_DIR:-$(mktemp -d -t cud_jax_mp.XXXXXX)}"
mkdir -p "$LOG_DIR"

# CPU only, D devices per process; generous collective timeouts, since emulated devices
# are threads that a busy machine can starve (see cud_jax/parallel/host_devices.py).
export JAX_PLATFORMS=cpu
export XLA_FLAGS="--xla_force_host_platform_device_count=${DEVICES} --xla_cpu_collective_call_terminate_timeout_seconds=1800 --xla_cpu_collective_timeout_seconds=1800 ${XLA_FLAGS:-}"

pids=()
forward_sigterm() {
  echo "local_multiprocess: passing SIGTERM to ${#pids[@]} processes (checkpoint, then exit 75)" >&2
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
}
trap forward_sigterm INT TERM

for ((i = 0; i < NUM_PROCESSES; i++)); do
  args=("$@"
        "--config.distributed.coordinator_address=localhost:${PORT}"
        "--config.distributed.num_processes=${NUM_PROCESSES}"
        "--config.distributed.process_id=${i}")
  if [[ $i -eq 0 ]]; then  # streamed here and kept; $! is python's pid, not tee's
    "$PYTHON" -m cud_jax.main "${args[@]}" > >(tee "$LOG_DIR/process_0.log") 2>&1 &
  else
    "$PYTHON" -m cud_jax.main "${args[@]}" > "$LOG_DIR/process_${i}.log" 2>&1 &
  fi
  pids+=("$!")
done
echo "local_multiprocess: ${NUM_PROCESSES} processes x ${DEVICES} CPU devices, coordinator localhost:${PORT}, logs in ${LOG_DIR}" >&2

# `wait` returns early when a trapped signal arrives: wait again until each has exited.
status=0
for i in "${!pids[@]}"; do
  while true; do
    rc=0
    wait "${pids[$i]}" || rc=$?
    kill -0 "${pids[$i]}" 2>/dev/null || break
  done
  if [[ $i -eq 0 ]]; then
    status=$rc
  elif [[ $rc -ne 0 && $rc -ne 75 ]]; then
    echo "local_multiprocess: process $i exited with status $rc; see ${LOG_DIR}/process_${i}.log" >&2
  fi
done
exit "$status"
