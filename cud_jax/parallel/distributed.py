"""Multi-process runs: start JAX's multi-controller runtime when the config or cluster asks.

One process per host (or per GPU), all running the same command. `initialize` connects them
through `jax.distributed.initialize` before JAX touches a device; from then on
`jax.devices()` lists every device of every process, the trainer's single `Mesh` spans them
all, and each jitted step is one SPMD program across hosts.

When it runs (`config.distributed.enabled`):
  - `auto` (default): when `coordinator_address` / `num_processes` / `process_id` are set,
    or the environment is a multi-task SLURM step (`srun`), a multi-rank Open MPI job, or a
    Cloud TPU VM (where JAX reads the slice's hosts from the VM metadata). Otherwise (a
    laptop, one GPU box) nothing happens and the run is single-process as before.
  - `true`: always (missing fields are auto-detected by JAX; it fails if it cannot).
  - `false`: never.

CPU processes exchange collectives over Gloo (TCP), JAX's default CPU implementation;
`cpu_collectives` picks another (`mpi`).
"""

from __future__ import annotations

import glob
import importlib.util
import logging
import os
from typing import Any, Callable, Optional

import jax

_TRUE = ("true", "1", "yes", "on")
_FALSE = ("false", "0", "no", "off", "")


#: The CPU collectives when `cpu_collectives` is unset (what the field documents).
_CPU_COLLECTIVES_UNSET = "gloo"


def _int_env(name: str) -> int:
    try:
        return int(os.environ.get(name, "0"))
    except ValueError:
        return 0


def _on_cloud_tpu_vm() -> bool:
    """A TPU VM: the TPU runtime is installed and TPU chips are attached."""
    if importlib.util.find_spec("libtpu") is None and not os.environ.get("TPU_LIBRARY_PATH"):
        return False
    return bool(glob.glob("/dev/accel[0-9]*") or glob.glob("/dev/vfio/[0-9]*"))


def detect_cluster() -> Optional[str]:
    """The multi-process environment this process runs in, or None for a plain run."""
    if "SLURM_JOB_ID" in os.environ and "SLURM_PROCID" in os.environ and max(
            _int_env("SLURM_STEP_NUM_TASKS"), _int_env("SLURM_NTASKS")) > 1:
        return "slurm"
    if "OMPI_MCA_orte_hnp_uri" in os.environ and _int_env("OMPI_COMM_WORLD_SIZE") > 1:
        return "openmpi"
    if _on_cloud_tpu_vm():
        return "tpu_vm"
    return None


def _mode(cfg) -> str:
    enabled = str(cfg.enabled).strip().lower()
    if enabled == "auto":
        return "auto"
    if enabled in _TRUE:
        return "true"
    if enabled in _FALSE:
        return "false"
    raise ValueError(f"distributed.enabled={enabled!r}; valid values: auto, true, false.")


def _explicit_args(cfg) -> dict:
    args = {}
    if cfg.coordinator_address:
        args["coordinator_address"] = str(cfg.coordinator_address)
    for name in ("num_processes", "process_id"):
        if cfg[name] is not None:
            args[name] = int(cfg[name])
    ids = cfg.local_device_ids
    if ids not in (None, ""):
        args["local_device_ids"] = [int(i) for i in str(ids).split(",") if i.strip()]
    return args


def initialize(cfg: Any) -> bool:
    """Starts `jax.distributed` if `cfg` or the cluster asks.

    `cfg` is a complete `config.distributed` block (every field of
    `cud_jax.configs.distributed_config`, as `cud_jax.configs.validate` checks).

    Call before any JAX computation; calling again is a no-op. Returns whether this process
    is part of a multi-process run.

    Raises:
      ValueError: an invalid `enabled` value, or an incomplete explicit set-up.
      RuntimeError: initialisation was asked for explicitly but JAX has already started
        computing in this process (call it first, as `cud_jax.main` does).
    """
    if jax.distributed.is_initialized():
        return jax.process_count() > 1
    mode = _mode(cfg)
    if mode == "false":
        return False
    args = _explicit_args(cfg)
    cluster = detect_cluster()
    if mode == "auto" and not args and cluster is None:
        return False
    if args and cluster is None:
        missing = [k for k in ("coordinator_address", "num_processes", "process_id")
                   if k not in args]
        if missing:
            raise ValueError(
                "distributed: set " + ", ".join(f"distributed.{k}" for k in missing)
                + " too (every process gets the same coordinator_address, host:port of "
                "process 0, and num_processes, and its own process_id), or run under "
                "SLURM / Open MPI / a TPU VM where they are detected.")
    if jax.config.jax_cpu_collectives_implementation is None or cfg.cpu_collectives:
        jax.config.update("jax_cpu_collectives_implementation",
                          cfg.cpu_collectives or _CPU_COLLECTIVES_UNSET)
    timeout = int(cfg.initialization_timeout)
    logging.info("jax.distributed.initialize(%s) [cluster: %s]", args, cluster or "explicit")
    try:
        jax.distributed.initialize(initialization_timeout=timeout, **args)
    except RuntimeError as err:
        if "before any JAX" not in str(err):
            raise
        message = ("jax.distributed.initialize must run before any JAX computation, but this "
                   "process has already used JAX. Launch through `python -m cud_jax.main`, "
                   "or call cud_jax.parallel.distributed.initialize(config.distributed) first.")
        if mode == "true" or args:
            raise RuntimeError(message) from err
        logging.warning("%s Continuing as a single process.", message)
        return False
    logging.info("process %d of %d: %d local / %d global devices", jax.process_index(),
                 jax.process_count(), jax.local_device_count(), jax.device_count())
    return jax.process_count() > 1


def is_multiprocess() -> bool:
    return jax.process_count() > 1


def sync(name: str) -> None:
    """A barrier across all processes (no-op in a single-process run)."""
    if is_multiprocess():
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)


def process_0_first(fn: Callable[[], Any], name: str) -> Any:
    """Runs `fn` on process 0, then (after a barrier) on the others.

    For steps where process 0 writes a file that the others then read (the resolved config),
    so that no process reads it half-written.
    """
    result, error = None, None
    if jax.process_index() == 0:
        try:
            result = fn()
        except Exception as err:  # noqa: BLE001  (re-raised below, after the barrier)
            error = err
    sync(name)  # reached even when process 0 failed, so the others do not hang here
    if error is not None:
        raise error
    if jax.process_index() != 0:
        result = fn()  # e.g. the same config check, which then fails the same way
    return result


def any_process(flag: bool) -> bool:
    """True on every process if `flag` is true on any; a collective every process must call."""
    if not is_multiprocess():
        return bool(flag)
    import numpy as np
    from jax.experimental import multihost_utils

    return bool(np.any(multihost_utils.process_allgather(np.asarray([bool(flag)]))))
