"""The jit-compiled training step, shared by both stages (`make_train_step`).

The whole training split lives on device (replicated, or one shard per device:
`cud_jax.parallel.placement`); each step slices its batch indices from the epoch order,
gathers the images, augments them, and runs forward and backward, all inside one `jax.jit`
with the state donated. The batch axis is constrained to the mesh's `data` axis, so XLA
splits the work over devices and inserts the gradient all-reduce (and the cross-device
BatchNorm reductions) itself. The same function also runs
several consecutive steps in one dispatch (`num_steps`: a `lax.scan` carrying the state), so
the host's per-step launch cost is paid once per k steps.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh

from cud_jax.parallel.placement import Placement, ReplicatedPlacement
from cud_jax.parallel.sharding import batch_sharded, replicated
from cud_jax.train.state import ModelDef, TrainState

# (teacher_vars, model inputs [B, ...], take) -> teacher probabilities [B, K], float32, where
# `take(per_example)` picks the batch's rows out of an array laid out like the training
# inputs (how a cached teacher finds its probabilities).
TeacherFn = Callable[[Any, jax.Array, Callable[[jax.Array], jax.Array]], jax.Array]
# (key, uint8 images [B, H, W, C]) -> float model inputs.
AugmentFn = Callable[[jax.Array, jax.Array], jax.Array]


def model_teacher(model_def: ModelDef, temperature: Optional[float] = None) -> TeacherFn:
    """A frozen teacher that runs its forward pass (eval mode) inside the student step.

    `temperature`: the teacher's logits are divided by it first (a teacher calibrated by
    temperature scaling, `teacher.calibration=temperature`); None leaves them as they are.
    """

    def probs(teacher_vars, images, take):
        del take
        params, model_state = teacher_vars
        logits, _ = model_def.apply(params, model_state, images, train=False)
        if temperature is not None:
            logits = logits / temperature
        return jax.nn.softmax(logits, axis=-1)

    return probs


def cached_teacher(teacher_probs, images, take):
    """A teacher whose probabilities for every training example were computed once."""
    del images
    return take(teacher_probs)


def make_train_step(model_def: ModelDef, tx: optax.GradientTransformation, objective,
                    augment: AugmentFn, *, batch_size: int, steps_per_epoch: int,
                    mesh: Mesh, teacher: Optional[TeacherFn] = None, state_sharding=None,
                    placement: Optional[Placement] = None):
    """Builds `step(state, inputs, labels, perm, key, teacher_vars, width=None, num_steps=None)`.

    The step returns `(state, metrics)`: one step's scalar metrics, or with `num_steps=k`
    (static: one compilation per value) the state after k consecutive steps and every step's
    metrics stacked along a leading axis of length k. The k steps are exactly the steps k
    single calls would run (each folds the key with its own step number and slices its own
    batch from `perm`), so they must lie within one epoch.

    Args:
      model_def: the trained model's graph definitions.
      tx: the optax optimiser.
      objective: see `cud_jax.train.objectives`.
      augment: maps a key and a uint8 batch to model inputs (normalised, augmented).
      batch_size: global batch size.
      steps_per_epoch: batches per epoch (the remainder of the permutation is dropped).
      mesh: the device mesh; the batch is split along its `data` axis.
      teacher: how to get teacher probabilities, or None for the teacher stage and the
        `ce` student.
      state_sharding: the layout of the state, a pytree of shardings from
        `cud_jax.parallel.sharding.state_sharding` (None: replicated). The new state keeps it,
        so the donated input buffers are reused and the next step gets what it expects.
      placement: where the training split lives (`cud_jax.parallel.placement`): it picks
        each step's batch rows. None: replicated on `mesh`. With the sharded placement
        `inputs` is `[D, n, ...]`, `labels` `[D, n]`, and `perm` `[D, n]` the shards' own
        orders; each batch takes `batch_size / D` examples from every shard.

    The returned function is jitted with the state donated. `inputs`/`labels` are the whole
    training split on device, `perm` the epoch's permutation; `key` is the run's base key,
    folded with the step number so a resumed run draws the same augmentations. `width`
    (static: one compilation per value) keeps only the first `width` positions of each stored
    input: length-bucketed text batches (`cud_jax.data.bucketed_epoch`) read just the token
    columns their longest member needs.
    """
    state_out = replicated(mesh) if state_sharding is None else state_sharding
    one_step = train_step_fn(model_def, tx, objective, augment, batch_size=batch_size,
                             steps_per_epoch=steps_per_epoch, mesh=mesh, teacher=teacher,
                             placement=placement)

    return jit_steps(one_step, state_out)


def jit_steps(one_step, state_out):
    """`one_step(state, *args, width) -> (state, metrics)` jitted as `step(state, *args,
    width=None, num_steps=None)`, the state donated and laid out as `state_out`;
    `num_steps=k` runs k steps in one `lax.scan` (metrics stacked). Used by the single-run
    step and the sweep's stacked step alike."""

    def step(state, *args, width=None, num_steps=None):
        if num_steps is None:
            return one_step(state, *args, width)

        def body(carry, _):
            carry, metrics = one_step(carry, *args, width)
            # Pins the carry to the state's layout (FSDP shards stay sharded across steps).
            return jax.lax.with_sharding_constraint(carry, state_out), metrics

        return jax.lax.scan(body, state, length=num_steps)

    return jax.jit(step, donate_argnums=(0,), static_argnames=("width", "num_steps"),
                   out_shardings=(state_out, None))


def train_step_fn(model_def: ModelDef, tx: optax.GradientTransformation, objective,
                  augment: AugmentFn, *, batch_size: int, steps_per_epoch: int, mesh: Mesh,
                  teacher: Optional[TeacherFn] = None, placement: Optional[Placement] = None,
                  batch_sharding=None):
    """One training step, not jitted: `one_step(state, inputs, labels, perm, key,
    teacher_vars, width) -> (state, metrics)`, with the arguments of `make_train_step`.

    `make_train_step` jits it (and scans it for `num_steps`); a sweep
    (`cud_jax.train.sweep`) calls it once per run, or vmaps it, inside its own jitted step.
    `batch_sharding`: the layout of the step's batch, by default split over the mesh's
    `data` axis. A sweep that places whole runs on devices passes `replicated(mesh)` (the
    batch whole within its run) inside a vmap with `spmd_axis_name="data"`, which turns it
    into "the run axis over `data`": one mesh axis cannot split both the runs and the batch.
    """
    data_sharding = batch_sharded(mesh) if batch_sharding is None else batch_sharding
    placement = placement or ReplicatedPlacement(mesh)

    def one_step(state: TrainState, inputs, labels, perm, key, teacher_vars, width):
        take = placement.batch_rows(perm, state.step, batch_size=batch_size,
                                    steps_per_epoch=steps_per_epoch, sharding=data_sharding)
        step_key = jax.random.fold_in(key, state.step)
        stored = take(inputs)
        if width is not None:  # the rows' trailing padding columns are never read
            stored = stored[:, :width]
        batch = jax.lax.with_sharding_constraint(augment(step_key, stored), data_sharding)
        batch_labels = take(labels)
        teacher_probs = None
        if teacher is not None:
            teacher_probs = jax.lax.stop_gradient(teacher(teacher_vars, batch, take))
        progress = state.step.astype(jnp.float32) / steps_per_epoch  # in epochs

        def loss_fn(params):
            logits, model_state = model_def.apply(params, state.model_state, batch, train=True)
            per_example, metrics = objective(logits, batch_labels, teacher_probs, progress)
            metrics["accuracy"] = jnp.mean(jnp.argmax(logits, -1) == batch_labels)
            return jnp.mean(per_example), (model_state, metrics)

        (loss, (model_state, metrics)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
            state.params)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        metrics["loss"] = loss
        metrics["grad_norm"] = optax.tree.norm(grads)
        new_state = TrainState(step=state.step + 1, params=params, model_state=model_state,
                               opt_state=opt_state)
        return new_state, metrics

    return one_step
