"""The training loop of one stage: resume, step, log, check for NaN, checkpoint.

Everything per step happens on device; the host only launches the jitted step (or, with
`steps_per_call` k > 1, one scan of k steps per launch), and reads metrics back every
`log_every` steps (one transfer of a few scalars per step run). The
epoch permutation is a pure function of (seed, epoch) and the augmentation key is folded with
the step, so a run killed at any point and restarted replays exactly the same batches.
"""

from __future__ import annotations

import collections
import dataclasses
from typing import Any, Callable, Optional

import jax
import numpy as np

from cud_jax.data.batching import bucketed_epoch, bucketed_steps_per_epoch
from cud_jax.errors import UserError
from cud_jax.parallel import preemption
from cud_jax.train import checkpoints
from cud_jax.parallel.placement import Placement, ReplicatedPlacement
from cud_jax.parallel.sharding import FSDP_MIN_SIZE, put_replicated, put_state
from cud_jax.train.state import TrainState
from cud_jax.train.writers import MetricWriter, Progress


class NonFiniteLossError(UserError, FloatingPointError):
    """The loss became NaN or infinite; the message names the step and the checkpoint kept.

    A user error: diverging training is fixed by the recipe (a smaller learning rate, float32
    instead of bfloat16), so the command line prints it as one line.
    """


@dataclasses.dataclass
class StageRun:
    """How to run one training stage.

    Attributes:
      name: `teacher` or `student` (used in logs and metric records).
      step_fn: from `cud_jax.train.steps.make_train_step`.
      num_examples: size of the training split (for the epoch permutation).
      steps_per_epoch, total_steps: training length.
      seed: seeds the epoch order and augmentation.
      checkpoint_dir: this stage's checkpoint directory.
      checkpoint_every: save every this many steps (and always at the end).
      keep: number of checkpoints kept.
      log_every: metrics are read back, checked and written every this many steps.
      batch_size: for the examples/s figure.
      lr_fn: optional step -> learning rate, logged alongside the metrics.
      example_widths: optional `int32 [num_examples]` bucket width of each training example
        (`cud_jax.data.example_widths`); the epochs are then length-bucketed
        (`cud_jax.data.bucketed_epoch`) and `steps_per_epoch` must be
        `bucketed_steps_per_epoch(example_widths, batch_size)`.
      placement: where the training split lives (`cud_jax.parallel.placement`); it gives
        each epoch's order and places the training arrays. None: replicated on the mesh.
      param_sharding, fsdp_min_size: the layout of the state on the mesh
        (`cud_jax.parallel.sharding.state_sharding`); the same as `step_fn`'s `state_sharding`.
      steps_per_call: training steps per dispatch (`step_fn(..., num_steps=k)`). A call never
        crosses a log point, a checkpoint, an epoch end or the end of the stage: the steps
        left before the next one, when fewer than k, run one per call, so at most two
        programs are compiled. Multiples of k for `log_every`, `checkpoint_every` and
        `steps_per_epoch` keep every call at k steps.
      epoch_order: optional `epoch -> (order on device, per-step widths or None)` replacing
        the one the placement derives from `seed` (a sweep's stacked per-run orders,
        `cud_jax.train.sweep.stacked_epoch_order`).
    """

    name: str
    step_fn: Callable
    num_examples: int
    steps_per_epoch: int
    total_steps: int
    seed: int
    checkpoint_dir: str
    checkpoint_every: int
    keep: int
    log_every: int
    batch_size: int
    lr_fn: Optional[Callable[[int], float]] = None
    example_widths: Optional[np.ndarray] = None
    placement: Optional[Placement] = None
    param_sharding: str = "replicated"
    fsdp_min_size: int = FSDP_MIN_SIZE
    steps_per_call: int = 1
    epoch_order: Optional[Callable] = None

    def __post_init__(self):
        if self.steps_per_call < 1:
            raise ValueError(f"[{self.name}] steps_per_call={self.steps_per_call}; it must be "
                             ">= 1 (parallel.steps_per_call).")
        if self.steps_per_call > 1 and self.example_widths is not None:
            raise ValueError(f"[{self.name}] length-bucketed batches change width from step to "
                             "step and run one step per call; set parallel.steps_per_call=1 "
                             "or data.length_buckets=().")
        if (self.example_widths is not None and self.placement is not None
                and not self.placement.supports_length_buckets):
            raise ValueError("Length buckets need the replicated data placement: every shard "
                             "would have to agree on each step's width.")
        if self.example_widths is not None:
            expected = bucketed_steps_per_epoch(self.example_widths, self.batch_size)
            if self.steps_per_epoch != expected:
                raise ValueError(f"[{self.name}] steps_per_epoch={self.steps_per_epoch}, but the "
                                 f"length buckets give {expected} full batches per epoch.")


def _epoch_order_fn(run: StageRun, placement: Placement, mesh) -> Callable:
    """`epoch -> (order on device, per-step widths or None)`, a pure function of the seed.

    Plain epochs are ordered on device by the placement; length-bucketed ones on the host
    (the widths choose which compiled step runs, so the host needs them anyway), then placed
    on the mesh.
    """
    if run.epoch_order is not None:
        return run.epoch_order
    if run.example_widths is None:
        order = placement.epoch_order(run.seed, run.num_examples)
        return lambda epoch: (order(epoch), None)

    def bucketed(epoch):
        order, widths = bucketed_epoch(run.seed, epoch, run.example_widths, run.batch_size)
        return put_replicated(order, mesh), widths

    return bucketed


def _per_step(pending: list) -> list:
    """`[(step, host metrics)]` of every step run, from `(last step, metrics, steps)` entries
    whose metrics are scalars (one step) or stacked along a leading axis (a scan of steps)."""
    values = jax.device_get([metrics for _, metrics, _ in pending])
    out = []
    for (last, _, count), record in zip(pending, values):
        if count == 1:
            out.append((last, record))
        else:
            out += [(last - count + 1 + i, {k: v[i] for k, v in record.items()})
                    for i in range(count)]
    return out


def _next_boundary(step: int, run: StageRun) -> int:
    """The first step after `step` where the host acts: a log point, a checkpoint, an epoch
    end (the next epoch reads another order) or the end of the stage."""
    return min(run.total_steps,
               *((step // every + 1) * every
                 for every in (run.log_every, run.checkpoint_every, run.steps_per_epoch)))


def _flush(pending: list, run: StageRun, writer: MetricWriter, last_good: int) -> dict:
    """Reads back buffered step metrics, fails on the first non-finite loss, logs the last."""
    values = _per_step(pending)
    for step, record in values:
        if not np.isfinite(record["loss"]):
            kept = (f"The last good checkpoint (step {last_good}) in {run.checkpoint_dir} "
                    "is kept" if last_good is not None else
                    f"No checkpoint was written before it (the first is due at step "
                    f"{min(run.checkpoint_every, run.total_steps)})")
            raise NonFiniteLossError(
                f"[{run.name}] loss is {record['loss']} at step {step}; stopping. {kept}. "
                f"Lower --config.{run.name}.lr, or use float32 if the stage runs in bfloat16.")
    step, record = values[-1][0], dict(values[-1][1])
    if run.lr_fn is not None:
        record["lr"] = float(run.lr_fn(step - 1))
    writer.write(step, record)
    pending.clear()
    return record


def max_steps_in_flight() -> int:
    """How many dispatched steps may be unfinished when the host moves on.

    On accelerators two in flight keep the device busy while Python dispatches. With several
    emulated CPU devices, one: their collectives rendezvous on a shared thread pool, and when
    queued steps let devices drift apart, threads blocked in a later step's all-reduce can
    starve a device still in the earlier one, a deadlock seen in long CPU runs.
    """
    if jax.default_backend() == "cpu" and jax.local_device_count() > 1:
        return 1
    return 2


def train_stage(run: StageRun, state: TrainState, inputs, labels, *, mesh, writer: MetricWriter,
                teacher_vars: Any = None) -> TrainState:
    """Trains `state` for `run.total_steps` steps, resuming from `run.checkpoint_dir`.

    Args:
      run: the stage description.
      state: a freshly initialised state; replaced by the newest checkpoint if there is one.
      inputs, labels: the training split as `run.placement` holds it: host arrays for the
        replicated placement (every process the same whole split, placed here on every
        device), global arrays from `ShardedPlacement.held_arrays` for the sharded one.
      mesh: the device mesh.
      writer: metric sink.
      teacher_vars: passed through to the step (frozen teacher variables or cached probs).

    Returns:
      The final state (also saved as the last checkpoint).

    Raises:
      preemption.Preempted: after SIGTERM (see `cud_jax.parallel.preemption`), once the
        checkpoint of the step where every process agreed to stop is written.
    """
    manager = checkpoints.open_manager(run.checkpoint_dir, keep=run.keep)
    # Placed first, so the checkpoint is restored straight into the mesh's shardings (any
    # process count with the same device count, and any parameter layout).
    state = put_state(state, mesh, run.param_sharding, run.fsdp_min_size)
    restored = checkpoints.restore_latest(manager, state)
    if restored is not None:
        state = restored
        if jax.process_index() == 0:
            print(f"[{run.name}] resumed from step {int(state.step)} ({run.checkpoint_dir})")
    start = int(state.step)
    if start >= run.total_steps:
        manager.close()
        return state

    placement = run.placement or ReplicatedPlacement(mesh)
    inputs, labels = placement.training_arrays(inputs, labels, f"{run.name} training data")
    epoch_order = _epoch_order_fn(run, placement, mesh)
    key = jax.random.PRNGKey(run.seed)
    progress = Progress(run.name, run.total_steps, run.batch_size, start_step=start)
    pending: list = []
    in_flight: collections.deque = collections.deque()
    limit = max_steps_in_flight()
    last_good = start if restored is not None else None  # the newest checkpoint on disk
    epoch = None
    step = start
    try:
        while step < run.total_steps:
            if step // run.steps_per_epoch != epoch:
                epoch = step // run.steps_per_epoch
                perm, widths = epoch_order(epoch)
            width = None if widths is None else int(widths[step % run.steps_per_epoch])
            count = run.steps_per_call
            if count > 1 and _next_boundary(step, run) - step >= count:
                state, metrics = run.step_fn(state, inputs, labels, perm, key, teacher_vars,
                                             width=width, num_steps=count)
            else:
                count = 1
                state, metrics = run.step_fn(state, inputs, labels, perm, key, teacher_vars,
                                             width=width)
            in_flight.append(metrics["loss"])
            while len(in_flight) >= limit:  # limit 1: wait for this very call
                in_flight.popleft().block_until_ready()
            done = step + count
            pending.append((done, metrics, count))
            # Asked after every step, as multi-process agreement needs (the same calls, so
            # the same answers, on every process); a stop then saves at the call's end.
            stop = any(preemption.stop_requested(s) for s in range(step + 1, done + 1))
            save_now = stop or done % run.checkpoint_every == 0 or done == run.total_steps
            if done % run.log_every == 0 or save_now:
                record = _flush(pending, run, writer, last_good)
                progress.update(done, record)
            if save_now:
                checkpoints.save(manager, done, state)
                last_good = done
            if stop:
                raise preemption.Preempted(run.name, done, run.checkpoint_dir)
            step = done
    finally:
        # Also on an interrupt: let an in-flight asynchronous save finish, so the restart
        # finds it.
        manager.wait_until_finished()
        manager.close()
    progress.close()
    return state
