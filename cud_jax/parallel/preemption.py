"""Clean stops on SIGTERM: every process saves a checkpoint at the same step and exits.

Schedulers announce the end of a job with SIGTERM: SLURM on preemption or at the time limit
(`--signal=TERM@180` sends it early), Compute Engine on a Spot / preemptible TPU VM or a
maintenance event. While `handle_sigterm()` is active the signal only sets a flag; the
training loop asks `stop_requested(step)` after each step. In a single process the flag is
read every step. With several processes one host may get the signal before another (or
alone), so the flag is agreed on every `check_every` steps by a tiny all-gather, which every
process calls at the same step numbers: all of them then see "stop" at the same step,
write that step's checkpoint together and raise `Preempted`. `cud_jax.main` turns it into
exit code `EXIT_PREEMPTED` (75, EX_TEMPFAIL: "try again"); rerunning the same command
resumes from that checkpoint.

Repeated SIGTERMs are ignored (under SLURM a task can get one from the scheduler and one
forwarded by `srun`); a scheduler that will not wait escalates to SIGKILL, which loses at
most the steps since the last checkpoint.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading

from cud_jax.parallel import distributed

#: Exit status of a run stopped by SIGTERM after saving its checkpoint.
EXIT_PREEMPTED = 75


class Preempted(Exception):
    """Raised by the training loop after the preemption checkpoint is written."""

    def __init__(self, stage: str, step: int, checkpoint_dir: str):
        self.stage, self.step, self.checkpoint_dir = stage, step, checkpoint_dir
        super().__init__(f"[{stage}] stopped by SIGTERM at step {step}; checkpoint saved in "
                         f"{checkpoint_dir}. Rerun the same command to resume.")


class EvaluationStopped(Preempted):
    """Raised when SIGTERM arrives during evaluation, which has no checkpoint to write."""

    def __init__(self, workdir: str):
        self.stage, self.step, self.checkpoint_dir = "eval", None, workdir
        Exception.__init__(self, f"[eval] stopped by SIGTERM; the trained models are saved "
                                 f"in {workdir}. Rerun the same command to evaluate.")


_requested = threading.Event()
_check_every = 1


def _on_sigterm(signum, frame):
    del signum, frame
    if _requested.is_set():
        return
    _requested.set()
    logging.warning("SIGTERM received: saving a checkpoint at the next agreed step, then "
                    "exiting with status %d.", EXIT_PREEMPTED)


@contextlib.contextmanager
def handle_sigterm(check_every: int = 10):
    """Within the block, SIGTERM requests a checkpoint-and-exit instead of killing.

    Args:
      check_every: in multi-process runs, steps between agreements on the flag (each is a
        small all-gather and a host sync). A single process checks every step.

    Outside the main thread (where Python cannot install handlers) it does nothing.
    """
    global _check_every
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    old_every, _check_every = _check_every, max(1, int(check_every))
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
        _check_every = old_every
        _requested.clear()


@contextlib.contextmanager
def stop_evaluation_on_sigterm(workdir: str):
    """Within the block, SIGTERM raises `EvaluationStopped` at once.

    Evaluation writes nothing until its report, so there is no state to save: stopping
    immediately is exact, and `cud_jax.main` exits with `EXIT_PREEMPTED` as in training.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum, frame):
        del signum, frame
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second SIGTERM must not interrupt
        raise EvaluationStopped(workdir)

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def request() -> None:
    """Requests a stop as SIGTERM would (for tests and embedding code)."""
    _requested.set()


def requested() -> bool:
    """Whether this process has been asked to stop (not agreed with the others)."""
    return _requested.is_set()


def clear() -> None:
    _requested.clear()


def stop_requested(step: int) -> bool:
    """Whether to checkpoint and stop after `step`; the same answer on every process.

    In multi-process runs this is a collective at every `check_every`-th step: call it after
    every step on every process.
    """
    if not distributed.is_multiprocess():
        return _requested.is_set()
    if step % _check_every:
        return False
    return distributed.any_process(_requested.is_set())
