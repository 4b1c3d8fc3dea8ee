"""Many runs in one program: train states stacked on a leading run axis, one vmapped step.

A sweep trains N variants that share the architecture, the data, the batch size and the
schedule length. Their train states (parameters, optimiser state, BatchNorm statistics,
step) are stacked along a new leading axis, and the single-run step of
`cud_jax.train.steps.train_step_fn` is `jax.vmap`ped over it inside one `jax.jit`, so XLA
compiles one program whose matrix products carry the run axis, not N programs.

What differs between variants enters the step as per-variant arrays:
* the loss settings: every distinct objective of the sweep (a `cud_jax.train.objectives`
  objective built with that variant's Python constants, exactly as a run alone builds it) is
  evaluated, and each variant keeps its own by index (`select_objective`); so a variant's
  loss is the very function its run alone would use, at the cost of evaluating the few
  distinct per-example losses for every variant (cheap next to the network);
* the seed: each variant's epoch order and augmentation key (stacked, vmapped) when seeds
  differ, the run's shared ones otherwise;
* the teacher: stacked teacher variables (vmapped with the student) when teachers differ,
  one set shared by every variant otherwise.
"""

from __future__ import annotations

from typing import Any, Callable, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh

from cud_jax.data.batching import epoch_permutation
from cud_jax.parallel.sharding import replicated
from cud_jax.train import steps
from cud_jax.train.state import ModelDef, TrainState


def stack_trees(trees: Sequence[Any]) -> Any:
    """Stacks pytrees of the same structure along a new leading (run) axis."""
    return jax.tree_util.tree_map(lambda *xs: jnp.stack([jnp.asarray(x) for x in xs]), *trees)


def stack_states(states: Sequence[TrainState]) -> TrainState:
    """Train states of equal structure stacked on a leading run axis, but one shared `step`:
    the runs of a sweep advance together, and the training loop reads the step as a scalar
    (for resume, the epoch order and checkpoint numbers)."""
    steps_taken = {int(s.step) for s in states}
    if len(steps_taken) != 1:
        raise ValueError(f"Stacked runs must be at the same step, got {sorted(steps_taken)}.")
    return stack_trees(states).replace(step=jnp.asarray(states[0].step))


def unstack_tree(tree: Any, index: int) -> Any:
    """The `index`-th run of a stacked pytree."""
    return jax.tree_util.tree_map(lambda x: x[index], tree)


def distinct(items: Sequence[Any], key: Callable[[Any], Any]) -> tuple[list, list[int]]:
    """`(unique items in first-seen order, index of each item's unique one)`, by `key`."""
    seen: dict = {}
    unique, index = [], []
    for item in items:
        k = key(item)
        if k not in seen:
            seen[k] = len(unique)
            unique.append(item)
        index.append(seen[k])
    return unique, index


def select_objective(objectives: Sequence[Callable], index) -> Callable:
    """An objective that keeps the `index`-th of `objectives` (`index` may be traced).

    Every objective is evaluated and the chosen per-example loss and metrics are selected, so
    under `jax.vmap` each variant gets exactly its own objective's values (and gradients: the
    others are multiplied by zero). Metrics that the chosen objective does not produce read
    NaN; `metric_names` says which ones each produces.
    """
    if len(objectives) == 1:
        return objectives[0]

    def objective(logits, labels, teacher_probs=None, progress=0.0):
        outputs = [fn(logits, labels, teacher_probs, progress) for fn in objectives]
        loss = jnp.stack([out[0] for out in outputs])[index]
        names = sorted({name for _, metrics in outputs for name in metrics})
        metrics = {name: jnp.stack([jnp.asarray(m.get(name, jnp.nan), jnp.float32)
                                    for _, m in outputs])[index] for name in names}
        return loss, metrics

    return objective


def metric_names(objective: Callable, num_classes: int, with_teacher: bool) -> set[str]:
    """The names of the metrics `objective` logs (traced on shapes only, nothing runs)."""
    logits = jax.ShapeDtypeStruct((2, num_classes), jnp.float32)
    labels = jax.ShapeDtypeStruct((2,), jnp.int32)
    probs = logits if with_teacher else None
    _, metrics = jax.eval_shape(lambda z, y, p: objective(z, y, p, jnp.float32(0)), logits,
                                labels, probs)
    return set(metrics)


def stacked_epoch_order(seeds: Sequence[int], num_examples: int, mesh: Mesh) -> Callable:
    """`epoch -> (orders [N, num_examples] on device, None)`: each variant's epoch order, the
    same permutation its run alone draws (`epoch_permutation` of its own seed)."""
    permute = jax.jit(jax.vmap(lambda seed, epoch: epoch_permutation(seed, epoch, num_examples),
                               in_axes=(0, None)), out_shardings=replicated(mesh))
    seeds = jnp.asarray(seeds, jnp.int32)
    return lambda epoch: (permute(seeds, epoch), None)


def stacked_keys(seeds: Sequence[int]) -> jax.Array:
    """Each variant's base augmentation key, as its run alone makes it (`PRNGKey(seed)`)."""
    return jnp.stack([jax.random.PRNGKey(seed) for seed in seeds])


def runs_per_pass(setting: int, num_runs: int) -> int:
    """How many runs one pass of the sweep step vectorises (`parallel.sweep_runs_per_pass`).

    0 (default): all of them, one `jax.vmap`. A smaller number maps the step over chunks of
    that many runs (`jax.lax.map`), which bounds memory but, on XLA:CPU at least, runs far
    slower (results/sweep_cpu.md: the loop body's convolutions lose their fast path).
    """
    if setting < 0:
        raise ValueError(f"parallel.sweep_runs_per_pass must be >= 0, got {setting}.")
    return num_runs if setting == 0 else min(setting, num_runs)


def make_sweep_step(model_def: ModelDef, tx: optax.GradientTransformation,
                    objectives: Sequence[Callable], objective_index: Sequence[int],
                    augment, *, batch_size: int, steps_per_epoch: int, mesh: Mesh,
                    teacher: Optional[steps.TeacherFn] = None, teachers_stacked: bool = False,
                    keys: Optional[jax.Array] = None, orders_stacked: bool = False,
                    state_sharding=None, per_pass: Optional[int] = None) -> Callable:
    """The step of a sweep, with the single-run step's signature and a stacked state.

    Returns `step(state, inputs, labels, perm, key, teacher_vars, width=None) ->
    (state, metrics)`, jitted with the state donated, for `cud_jax.train.loop.train_stage`.
    `state` holds N runs stacked on axis 0 (`stack_states`); the per-run step is
    `steps.train_step_fn(...)` with `select_objective(objectives, objective_index[i])`,
    mapped over the runs `per_pass` at a time (`jax.vmap` over all N when `per_pass >= N`,
    else `jax.lax.map` with that batch size; None: all N).

    Args:
      model_def, tx, augment, batch_size, steps_per_epoch, mesh, teacher: as for
        `steps.make_train_step` (the same for every variant).
      objectives: the distinct objectives of the sweep.
      objective_index: per variant, the index of its objective in `objectives`.
      teachers_stacked: `teacher_vars` carries one teacher per variant on axis 0 (else one
        teacher serves all).
      keys: stacked per-variant base keys (`stacked_keys`) when seeds differ; None: every
        variant uses the run's `key`.
      orders_stacked: `perm` is `[N, n]`, each variant's own epoch order
        (`stacked_epoch_order`); else one order shared by all.
      state_sharding: the layout of the stacked state (None: replicated).
      per_pass: runs vectorised together (`runs_per_pass`).

    The metrics are `loss` (mean over variants, NaN when any variant's loss is not finite,
    so the loop's check stops the sweep), `accuracy` (mean), and `runs`: every per-run
    metric as an `[N]` array.
    """
    num_runs = len(objective_index)
    per_pass = num_runs if per_pass is None else per_pass
    index = jnp.asarray(objective_index, jnp.int32)
    stacked_teacher = teacher is not None and teachers_stacked

    def sweep_step(state, inputs, labels, perm, key, teacher_vars, run_keys, run_index,
                   width=None):
        # What differs per run is mapped over; what all runs share is closed over.
        mapped = {"params": state.params, "model_state": state.model_state,
                  "opt_state": state.opt_state, "objective": run_index}
        if orders_stacked:
            mapped["perm"] = perm
        if run_keys is not None:
            mapped["key"] = run_keys
        if stacked_teacher:
            mapped["teacher"] = teacher_vars

        def one_run(run):
            run_state = TrainState(step=state.step, params=run["params"],
                                   model_state=run["model_state"], opt_state=run["opt_state"])
            step = steps.train_step_fn(
                model_def, tx, select_objective(objectives, run["objective"]), augment,
                batch_size=batch_size, steps_per_epoch=steps_per_epoch, mesh=mesh,
                teacher=teacher)
            new, metrics = step(run_state, inputs, labels, run.get("perm", perm),
                                run.get("key", key), run.get("teacher", teacher_vars), width)
            return (new.params, new.model_state, new.opt_state), metrics

        if per_pass >= num_runs:
            updated, metrics = jax.vmap(one_run)(mapped)
        else:
            updated, metrics = jax.lax.map(one_run, mapped,
                                           batch_size=per_pass if per_pass > 1 else None)
        new_state = TrainState(state.step + 1, *updated)
        loss = metrics["loss"]
        summary = {"loss": jnp.where(jnp.all(jnp.isfinite(loss)), jnp.mean(loss), jnp.nan),
                   "accuracy": jnp.mean(metrics["accuracy"]), "runs": metrics}
        return new_state, summary

    state_out = replicated(mesh) if state_sharding is None else state_sharding
    jitted = jax.jit(sweep_step, donate_argnums=(0,), static_argnames=("width",),
                     out_shardings=(state_out, None))

    def step(state, inputs, labels, perm, key, teacher_vars, width=None):
        return jitted(state, inputs, labels, perm, key, teacher_vars, keys, index, width=width)

    return step


def per_run_records(record: dict, num_runs: int) -> list[dict]:
    """Splits a sweep step's metrics (`make_sweep_step`) into one record per run."""
    runs = {name: np.asarray(values) for name, values in record["runs"].items()}
    extra = {k: v for k, v in record.items() if k not in ("runs", "loss", "accuracy")}
    return [{**{name: values[i] for name, values in runs.items()}, **extra}
            for i in range(num_runs)]
