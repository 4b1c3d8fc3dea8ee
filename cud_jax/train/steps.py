"""The jit-compiled training step, shared by both stages (`make_train_step`).

The whole training split lives on device (replicated, or one shard per device:
`cud_jax.parallel.placement`); each step slices its batch indices from the epoch order, gathers the images, augments them, and runs forward and
backward, all inside one `jax.jit` with the state donated. The batch axis is constrained to
the mesh's `data` axis, so XLA splits the work over devices and inserts the gradient
all-reduce (and the cross-device BatchNorm reductions) itself.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh

from cud_jax.parallel.placement import gather_from_shards
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
                    sharded_data: bool = False):
    """`train_step_fn`'s step, jitted with the state donated (see there for the arguments).

    `state_sharding`: the layout of the state, a pytree of shardings from
    `cud_jax.parallel.sharding.state_sharding` (None: replicated). The new state keeps it,
    so the donated input buffers are reused and the next step gets what it expects.
    """
    step = train_step_fn(model_def, tx, objective, augment, batch_size=batch_size,
                         steps_per_epoch=steps_per_epoch, mesh=mesh, teacher=teacher,
                         sharded_data=sharded_data)
    state_out = replicated(mesh) if state_sharding is None else state_sharding
    return jax.jit(step, donate_argnums=(0,), static_argnames=("width",),
                   out_shardings=(state_out, None))


def train_step_fn(model_def: ModelDef, tx: optax.GradientTransformation, objective,
                  augment: AugmentFn, *, batch_size: int, steps_per_epoch: int,
                  mesh: Mesh, teacher: Optional[TeacherFn] = None,
                  sharded_data: bool = False):
    """Builds `step(state, inputs, labels, perm, key, teacher_vars, width=None)`, not jitted.

    `make_train_step` jits it for a single run; `cud_jax.train.sweep` vmaps it over the
    run axis of a sweep first.

    The step returns `(state, metrics)`.

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
      sharded_data: the training split is laid out one shard per device
        (`cud_jax.parallel.placement`): `inputs` `[D, n, ...]`, `labels` `[D, n]`, and
        `perm` `[D, n]` the shards' own orders; each batch takes `batch_size / D` examples
        from every shard.

    `inputs`/`labels` are the whole training split on device, `perm` the epoch's permutation; `key` is the run's base key,
    folded with the step number so a resumed run draws the same augmentations. `width`
    (static: one compilation per value) keeps only the first `width` positions of each stored
    input: length-bucketed text batches (`cud_jax.data.bucketed_epoch`) read just the token
    columns their longest member needs.
    """
    data_sharding = batch_sharded(mesh)

    def batch_rows(step, perm):
        """`take(per_example)`: the step's batch rows of an array laid out like the inputs."""
        if sharded_data:
            per_shard = batch_size // mesh.devices.size
            indices = jax.lax.dynamic_slice_in_dim(perm, (step % steps_per_epoch) * per_shard,
                                                   per_shard, axis=1)
            return lambda x: gather_from_shards(x, indices)
        indices = jax.lax.dynamic_slice_in_dim(perm, (step % steps_per_epoch) * batch_size,
                                               batch_size)
        indices = jax.lax.with_sharding_constraint(indices, data_sharding)
        return lambda x: x[indices]

    def step(state: TrainState, inputs, labels, perm, key, teacher_vars, width=None):
        take = batch_rows(state.step, perm)
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

    return step

