"""Command-line entry point.

    python -m cud_jax.main --config=configs/quickstart.py --workdir=runs/quick
    python -m cud_jax.main --config=configs/cifar100.py:pair=wrn_40_2-wrn_16_2,method=kd \
        --workdir=runs/c100 --config.data.data_dir=~/data

`--config.x=y` overrides any config field; `--config.stage` picks teacher|student|eval|all.
`--config.sweep="seed=0,1,2;student.method=kd,cud"` trains every combination together in one
program (see cud_jax/sweep_pipeline.py).

Multi-process runs start every process with the same command (see launch/README.md);
`--config.distributed.*` says how they meet when no cluster is detected. Exit status 75
means the run was stopped by SIGTERM after saving a checkpoint: rerun to resume.

A mistake in the user's input (config, data, paths, checkpoints, a full or read-only disk)
prints one line `error: ...` naming what to fix and exits with status 2; `--debug` (or the
environment variable CUD_JAX_DEBUG=1) shows the traceback instead.
"""

from __future__ import annotations

import errno
import os
import sys

from absl import app, flags, logging
from ml_collections import config_flags

from cud_jax.errors import UserError

_CONFIG = config_flags.DEFINE_config_file("config", None, "Path to a config file.",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, logs and reports.")
_DEBUG = flags.DEFINE_bool("debug", False, "Show tracebacks of user errors (also "
                           "CUD_JAX_DEBUG=1).")
flags.mark_flags_as_required(["config", "workdir"])

#: Exit status of a run stopped by a user error (config, data, paths, disk).
EXIT_USER_ERROR = 2

# OS errors that the user fixes (a path, a permission, a disk), as opposed to bugs.
_USER_OS_ERRORS = {errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EROFS,
                   errno.EEXIST, errno.ENOTDIR, errno.EISDIR, errno.ENOENT}


def _debug_requested(argv=()) -> bool:
    return (os.environ.get("CUD_JAX_DEBUG", "") not in ("", "0")
            or any(a in ("--debug", "--debug=true", "--debug=1") for a in argv))


def user_error_message(err: BaseException) -> str | None:
    """The one line to print for a user error, or None when `err` is a bug (re-raised)."""
    if isinstance(err, UserError):
        return err.strerror if isinstance(err, OSError) and err.strerror else str(err)
    if isinstance(err, OSError) and err.errno in _USER_OS_ERRORS:
        where = f" ({err.filename})" if err.filename else ""
        hint = {errno.ENOSPC: "free some space or choose another --workdir",
                errno.EDQUOT: "free some space or choose another --workdir"}.get(
                    err.errno, "check the path and its permissions, or choose another "
                    "--workdir")
        return f"{err.strerror}{where}: {hint}."
    return None


def _fail(message: str, *, disk_full: bool = False) -> None:
    print(f"error: {message}", file=sys.stderr, flush=True)
    if disk_full:  # exit hooks (TensorBoard's writer) would fail to flush and print more
        sys.stdout.flush()
        os._exit(EXIT_USER_ERROR)
    sys.exit(EXIT_USER_ERROR)


def _parse_flags(argv):
    """absl's parser, with an unknown `--config.FIELD` reported as one line."""
    try:
        return app.parse_flags_with_usage(argv)
    except (AttributeError, KeyError) as err:  # ml_collections: the override names no field
        if _debug_requested(argv):
            raise
        detail = err
        while isinstance(detail, BaseException) and detail.args:  # AttributeError(KeyError(..))
            detail = detail.args[0]
        missing, _, hint = str(detail).partition("\n")
        missing = missing.strip("'\"")
        flag = next((a.split("=")[0] for a in argv
                     if a.startswith("--config.") and missing in a.split("=")[0].split(".")),
                    f"--config.*.{missing}")
        _fail(f"{flag}: the config has no field {missing!r}. {hint}".strip())


def main(argv) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    # Progress goes to stdout; library INFO logs (Orbax prints one per checkpoint) stay quiet.
    logging.set_verbosity(logging.WARNING)
    from cud_jax import configs, pipeline  # after flag parsing: keeps --help fast
    from cud_jax.parallel import distributed, preemption

    try:
        configs.validate(_CONFIG.value)  # a misspelt or missing field fails before anything
        distributed.initialize(_CONFIG.value.distributed)  # before any JAX computation
        report = pipeline.run(_CONFIG.value, os.path.expanduser(_WORKDIR.value))
    except preemption.Preempted as stopped:
        logging.warning("%s", stopped)
        print(stopped, flush=True)
        sys.exit(preemption.EXIT_PREEMPTED)
    except Exception as err:  # noqa: BLE001 - user errors become one line, bugs propagate
        message = user_error_message(err)
        if message is None or _DEBUG.value or _debug_requested():
            raise
        _fail(message, disk_full=getattr(err, "errno", None) in (errno.ENOSPC, errno.EDQUOT))
    if report and _CONFIG.value.sweep:  # one report per variant, and their comparison
        print(f"Reports written to {os.path.join(_WORKDIR.value, 'runs', '*', 'report.md')}; "
              f"comparison in {os.path.join(_WORKDIR.value, 'compare.md')}")
    elif report:
        print(f"Report written to {os.path.join(_WORKDIR.value, 'report.md')}")


if __name__ == "__main__":
    app.run(main, flags_parser=_parse_flags)
