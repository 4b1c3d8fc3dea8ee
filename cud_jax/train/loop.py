"""The training loop of one stage: resume, step, log, check for NaN, checkpoint.

Everything per step happens on device; the host only launches the jitted step, and reads
metrics back every `log_every` steps (one transfer of a few scalars per step logged). The
epoch permutation is a pure function of (seed, epoch) and the augmentation key is folded with
the step, so a run killed at any point and restarted replays exactly the same batches.
"""

from __future__ import annotations

import collections
import dataclasses
from typing import Any, Callable, Optional

import jax
import numpy as np

from cud_jax.data.batching import bucketed_epoch, bucketed_steps_per_epoch, epoch_permutation
from cud_jax.parallel import preemption
from cud_jax.train import checkpoints
from cud_jax.parallel.placement import shard_permutations
from cud_jax.parallel.sharding import (FSDP_MIN_SIZE, batch_sharded, check_same_everywhere,
                                    put_replicated, put_state, replicated)
from cud_jax.train.state import TrainState
from cud_jax.train.writers import MetricWriter, Progress


class NonFiniteLossError(FloatingPointError):
    """The loss became NaN or infinite; the message names the step and the checkpoint kept."""


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
      num_shards: with the training split sharded over the devices
        (`cud_jax.parallel.placement`), the shard count; each shard is permuted on its own
        every epoch. None: one global permutation of a replicated split.
      param_sharding, fsdp_min_size: the layout of the state on the mesh
        (`cud_jax.parallel.sharding.state_sharding`); the same as `step_fn`'s `state_sharding`.
      epoch_order: optional `epoch -> (order on device, per-step widths or None)` replacing
        the one derived from `seed` (a sweep's stacked orders, `cud_jax.train.sweep`).
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
    num_shards: Optional[int] = None
    param_sharding: str = "replicated"
    fsdp_min_size: int = FSDP_MIN_SIZE
    epoch_order: Optional[Callable] = None

    def __post_init__(self):
        if self.example_widths is not None and self.num_shards is not None:
            raise ValueError("Length buckets need the replicated data placement: every shard "
                             "would have to agree on each step's width.")
        if self.example_widths is not None:
            expected = bucketed_steps_per_epoch(self.example_widths, self.batch_size)
            if self.steps_per_epoch != expected:
                raise ValueError(f"[{self.name}] steps_per_epoch={self.steps_per_epoch}, but the "
                                 f"length buckets give {expected} full batches per epoch.")


def _epoch_order_fn(run: StageRun, mesh) -> Callable:
    """`epoch -> (order on device, per-step widths or None)`, a pure function of the seed.

    Plain epochs are permuted on device, sharded ones shard by shard on the shard's own
    device; length-bucketed ones on the host (the widths choose which compiled step runs, so
    the host needs them anyway), then placed on the mesh.
    """
    if run.epoch_order is not None:
        return run.epoch_order
    if run.num_shards is not None:
        size = run.num_examples // run.num_shards
        permute = jax.jit(lambda seed, epoch: shard_permutations(seed, epoch, run.num_shards,
                                                                 size),
                          out_shardings=batch_sharded(mesh))  # shard j's order on device j
        return lambda epoch: (permute(run.seed, epoch), None)
    if run.example_widths is None:
        permute = jax.jit(lambda seed, epoch: epoch_permutation(seed, epoch, run.num_examples),
                          out_shardings=replicated(mesh))
        return lambda epoch: (permute(run.seed, epoch), None)

    def bucketed(epoch):
        order, widths = bucketed_epoch(run.seed, epoch, run.example_widths, run.batch_size)
        return put_replicated(order, mesh), widths

    return bucketed


def _flush(pending: list, run: StageRun, writer: MetricWriter, last_good: int) -> dict:
    """Reads back buffered step metrics, fails on the first non-finite loss, logs the last."""
    steps, metrics = zip(*pending)
    values = jax.device_get(list(metrics))
    for step, record in zip(steps, values):
        if not np.isfinite(record["loss"]):
            raise NonFiniteLossError(
                f"[{run.name}] loss is {record['loss']} at step {step}; stopping. The last good "
                f"checkpoint (step {last_good}) in {run.checkpoint_dir} is kept.")
    step, record = steps[-1], dict(values[-1])
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
      inputs, labels: the training split: host arrays (every process the same whole split,
        placed here on every device), or global arrays already placed on the mesh (the
        sharded placement, `cud_jax.parallel.placement.shards_to_mesh`).
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

    if not isinstance(inputs, jax.Array):
        inputs, labels = np.asarray(inputs), np.asarray(labels)
        check_same_everywhere((inputs, labels), f"{run.name} training data")
        inputs, labels = put_replicated((inputs, labels), mesh)
    epoch_order = _epoch_order_fn(run, mesh)
    key = jax.random.PRNGKey(run.seed)
    progress = Progress(run.name, run.total_steps, run.batch_size, start_step=start)
    pending: list = []
    in_flight: collections.deque = collections.deque()
    limit = max_steps_in_flight()
    last_good = start
    epoch = None
    try:
        for step in range(start, run.total_steps):
            if step // run.steps_per_epoch != epoch:
                epoch = step // run.steps_per_epoch
                perm, widths = epoch_order(epoch)
            width = None if widths is None else int(widths[step % run.steps_per_epoch])
            state, metrics = run.step_fn(state, inputs, labels, perm, key, teacher_vars,
                                         width=width)
            in_flight.append(metrics["loss"])
            while len(in_flight) >= limit:  # limit 1: wait for this very step
                in_flight.popleft().block_until_ready()
            done = step + 1
            pending.append((done, metrics))
            stop = preemption.stop_requested(done)  # the same answer on every process
            save_now = stop or done % run.checkpoint_every == 0 or done == run.total_steps
            if done % run.log_every == 0 or save_now:
                record = _flush(pending, run, writer, last_good)
                progress.update(done, record)
            if save_now:
                checkpoints.save(manager, done, state)
                last_good = done
            if stop:
                raise preemption.Preempted(run.name, done, run.checkpoint_dir)
    finally:
        # Also on an interrupt: let an in-flight asynchronous save finish, so the restart
        # finds it.
        manager.wait_until_finished()
        manager.close()
    progress.close()
    return state
