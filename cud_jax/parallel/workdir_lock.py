"""One run per workdir: an exclusive lock file, taken once per run (by process 0).

Two runs on one workdir would both train and both write checkpoints (seen when a killed
launcher left its Python running and the command was rerun). `hold_workdir` creates
`WORKDIR/LOCK` atomically (`O_CREAT | O_EXCL`) with the holder's PID and host, and removes it
when the run ends, also on an exception. A lock left by a run that died without cleaning up
is stale when its host is this host and its PID is no longer running; it is then replaced.
A lock from another host cannot be checked from here: the error names its holder and the
file to delete once that run is known to be gone.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
from typing import Iterator, Optional

import jax

from cud_jax.errors import UserError
from cud_jax.parallel import distributed

LOCK_NAME = "LOCK"


class WorkdirLockedError(UserError, RuntimeError):
    """Another run holds the workdir; the message names it and how to free the workdir."""


def _pid_running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def _read_holder(path: str) -> Optional[dict]:
    """The holder recorded in a lock file, or None for an unreadable (half-written) one."""
    try:
        with open(path, encoding="utf-8") as f:
            holder = json.load(f)
        return holder if isinstance(holder, dict) and "pid" in holder else None
    except (OSError, ValueError):
        return None


def _is_stale(holder: Optional[dict]) -> bool:
    if holder is None:
        return True
    return holder.get("host") == socket.gethostname() and not _pid_running(int(holder["pid"]))


def acquire(workdir: str) -> str:
    """Takes the lock of `workdir` for this process; returns the lock file's path.

    Raises:
      WorkdirLockedError: a live run holds it.
    """
    path = os.path.join(workdir, LOCK_NAME)
    me = {"pid": os.getpid(), "host": socket.gethostname(),
          "since": time.strftime("%Y-%m-%d %H:%M:%S")}
    for _ in range(3):  # a stale lock is removed, then the creation is retried
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            holder = _read_holder(path)
            if not _is_stale(holder):
                raise WorkdirLockedError(
                    f"{workdir} is in use by process {holder['pid']} on host "
                    f"{holder.get('host')} (since {holder.get('since')}); stop that run, or "
                    f"delete {path} if it is no longer running.") from None
            with contextlib.suppress(FileNotFoundError):
                os.remove(path)
            continue
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(me, f)
        return path
    raise WorkdirLockedError(f"Could not take the lock {path}: other runs keep taking it.")


def release(path: str) -> None:
    """Removes a lock file this process holds (and nothing else)."""
    holder = _read_holder(path)
    if holder and holder["pid"] == os.getpid() and holder.get("host") == socket.gethostname():
        os.remove(path)


@contextlib.contextmanager
def hold_workdir(workdir: str) -> Iterator[None]:
    """Holds `workdir`'s lock for the block: taken by process 0 only (one lock per run, not
    per process); every process fails when it is held elsewhere. Released on exit."""
    path, error = None, None
    if jax.process_index() == 0:
        try:
            path = acquire(workdir)
        except WorkdirLockedError as err:
            error = err
    if distributed.any_process(error is not None):
        raise error or WorkdirLockedError(f"{workdir} is in use by another run (see the "
                                          "error of process 0).")
    try:
        yield
    finally:
        if path is not None:
            release(path)

