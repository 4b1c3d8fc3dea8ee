"""Many runs in one program: train states stacked on a leading run axis, one jitted step.

A sweep trains N variants that share the architecture, the data, the batch size and the
schedule length. Their train states (parameters, optimiser state, BatchNorm statistics) are
stacked along a new leading axis with one shared `step`, and one jitted step
(`make_sweep_step`) advances all of them. Inside it each run is the single-run step of
`cud_jax.train.steps.train_step_fn`, in one of two modes (`parallel.sweep_mode`):

* `unroll`: a Python loop over the runs inside the one traced step: run i's slice of the
  stacked state goes through the ordinary step with its own objective, and the results are
  stacked again. Every convolution stays the ordinary one, so each run costs what it costs
  alone; the gain is one dispatch and one program for all N. The default on CPU, where
  XLA:CPU turns a convolution vmapped over per-run weights into a slow grouped convolution
  (results/sweep_cpu.md).
* `vmap`: `jax.vmap` of the step over the run axis, so XLA sees N-times-wider matrix products
  and convolutions: what fills an accelerator (the default elsewhere). What differs between
  runs enters as mapped arrays: every distinct objective of the sweep is evaluated and each
  run keeps its own (`select_objective`).

How the runs sit on the mesh's `data` axis (`parallel.sweep_layout`, `resolve_layout`):

* `batch`: every run's batch is split over the devices by the single-run step, as in a run
  alone; the stacked state is replicated, and every step all-reduces each run's gradients
  (and BatchNorm statistics) across devices.
* `runs` (`vmap` only): the run axis is split over the devices, each run whole on its
  device: its slice of the stacked state, its per-run inputs (epoch order, key, teacher,
  objective index) and its whole batch. A step then needs no collective inside a run; only
  the per-run metrics are gathered. Needs the number of runs to be a multiple of the
  device count.

What differs between variants:
* the loss settings: each run's objective is the very function its run alone builds;
* the seed: each run's epoch order and augmentation key (`stacked_epoch_order`,
  `stacked_keys`) when seeds differ, the stage's shared ones otherwise;
* the teacher: the distinct teachers' variables (or cached probabilities) stacked on a
  leading axis, each run reading its own by index, when teachers differ.
"""

from __future__ import annotations

from typing import Any, Callable, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh

from cud_jax.data.batching import epoch_permutation
from cud_jax.parallel.placement import Placement
from cud_jax.parallel.sharding import DATA_AXIS, batch_sharded, replicated
from cud_jax.train import steps
from cud_jax.train.state import ModelDef, TrainState

#: `parallel.sweep_mode` values.
SWEEP_MODES = ("auto", "vmap", "unroll")
#: `parallel.sweep_layout` values.
SWEEP_LAYOUTS = ("auto", "batch", "runs")
#: Prefix of the per-run metrics in a sweep step's metrics (`[N]` arrays).
RUN_METRIC = "runs/"


def resolve_mode(mode: str, backend: Optional[str] = None) -> str:
    """`auto` -> `unroll` on the CPU backend, `vmap` elsewhere; other modes as they are."""
    if mode not in SWEEP_MODES:
        raise ValueError(f"Unknown parallel.sweep_mode {mode!r}; valid values: "
                         f"{', '.join(SWEEP_MODES)}.")
    if mode == "auto":
        return "unroll" if (backend or jax.default_backend()) == "cpu" else "vmap"
    return mode


def resolve_layout(layout: str, mode: str, num_runs: int, num_devices: int, *,
                   param_sharding: str = "replicated",
                   backend: Optional[str] = None) -> tuple[str, str]:
    """`(mode, layout)` a stacked stage of `num_runs` runs uses on `num_devices` devices.

    `runs` needs `vmap` (`auto` mode then resolves to it): unrolled runs are separate
    computations, not an axis that can be split. `auto` picks `runs` when the mode is `vmap`,
    the mesh has more than one device, `num_runs` is a multiple of the device count and the
    parameters are replicated; `batch` otherwise. Why: `runs` avoids the per-step gradient
    all-reduce (and the cross-device BatchNorm reductions) of every run, which on real
    accelerators costs interconnect time each step, and each device runs whole
    `batch_size` problems instead of `batch_size / D` slivers that underfill it. On 8
    emulated CPU devices (threads sharing 2 cores, where a collective is a memory copy) the
    two layouts ran at the same speed (runs 0.97x of batch, within the rounds' spread:
    results/sweep_layout_cpu.md): placing runs costs nothing there, and the saving it is
    chosen for exists only between real chips.

    Raises:
      ValueError: one line, for an unknown layout, `runs` with `unroll`, or `runs` with
        `num_runs` not a multiple of `num_devices` (`check_config` reports these first).
    """
    if layout not in SWEEP_LAYOUTS:
        raise ValueError(f"Unknown parallel.sweep_layout {layout!r}; valid values: "
                         f"{', '.join(SWEEP_LAYOUTS)}.")
    if layout == "runs" and mode == "auto":
        mode = "vmap"
    mode = resolve_mode(mode, backend)
    if layout == "auto":
        fits = num_devices > 1 and num_runs % num_devices == 0
        layout = ("runs" if mode == "vmap" and fits and param_sharding == "replicated"
                  else "batch")
    if layout == "runs" and mode != "vmap":
        raise ValueError("parallel.sweep_layout=runs needs parallel.sweep_mode=vmap (or auto)")
    if layout == "runs" and num_runs % num_devices:
        raise ValueError(f"parallel.sweep_layout=runs: {num_runs} runs do not divide over "
                         f"{num_devices} devices; use a multiple of {num_devices} runs or "
                         "parallel.sweep_layout=batch")
    return mode, layout


def stack_trees(trees: Sequence[Any]) -> Any:
    """Stacks pytrees of the same structure along a new leading (run) axis."""
    return jax.tree_util.tree_map(lambda *xs: jnp.stack([jnp.asarray(x) for x in xs]), *trees)


def stack_states(states: Sequence[TrainState]) -> TrainState:
    """Train states stacked on a leading run axis, with one shared scalar `step`: the runs
    advance together, and the loop reads the step as a scalar (resume, epoch order,
    checkpoint numbers)."""
    steps_taken = {int(s.step) for s in states}
    if len(steps_taken) != 1:
        raise ValueError(f"Stacked runs must be at the same step, got {sorted(steps_taken)}.")
    return stack_trees(states).replace(step=jnp.asarray(states[0].step))


def unstack_tree(tree: Any, index) -> Any:
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
    under `jax.vmap` each run gets exactly its own objective's values (and gradients: the
    others are multiplied by zero). Metrics the chosen objective does not produce read NaN.
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
    """The names of the metrics a step with `objective` logs (traced on shapes only)."""
    logits = jax.ShapeDtypeStruct((2, num_classes), jnp.float32)
    labels = jax.ShapeDtypeStruct((2,), jnp.int32)
    probs = logits if with_teacher else None
    _, metrics = jax.eval_shape(lambda z, y, p: objective(z, y, p, jnp.float32(0)), logits,
                                labels, probs)
    return set(metrics) | {"loss", "accuracy", "grad_norm"}


def stacked_epoch_order(seeds: Sequence[int], num_examples: int, mesh: Mesh) -> Callable:
    """`epoch -> (orders [N, num_examples] on device, None)`: each run's epoch order, the
    permutation its run alone draws (`epoch_permutation` of its own seed)."""
    permute = jax.jit(jax.vmap(lambda seed, epoch: epoch_permutation(seed, epoch, num_examples),
                               in_axes=(0, None)), out_shardings=replicated(mesh))
    seeds = jnp.asarray(seeds, jnp.int32)
    return lambda epoch: (permute(seeds, epoch), None)


def stacked_keys(seeds: Sequence[int]) -> jax.Array:
    """Each run's base augmentation key, as its run alone makes it (`PRNGKey(seed)`)."""
    return jnp.stack([jax.random.PRNGKey(seed) for seed in seeds])


def _per_run_metrics(metrics: Sequence[dict]) -> dict:
    """`{RUN_METRIC + name: [N]}` from each run's metrics (NaN where a run has none)."""
    names = sorted({name for m in metrics for name in m})
    return {RUN_METRIC + name: jnp.stack([jnp.asarray(m.get(name, jnp.nan), jnp.float32)
                                          for m in metrics]) for name in names}


def _summary(runs: dict) -> dict:
    """The loop's scalars: `loss` (the mean; NaN when any run's is not finite, so the loop's
    check stops the sweep) and `accuracy` (the mean), with the per-run arrays."""
    loss = runs[RUN_METRIC + "loss"]
    return {"loss": jnp.where(jnp.all(jnp.isfinite(loss)), jnp.mean(loss), jnp.nan),
            "accuracy": jnp.mean(runs[RUN_METRIC + "accuracy"]), **runs}


def make_sweep_step(model_def: ModelDef, tx: optax.GradientTransformation,
                    objectives: Sequence[Callable], objective_index: Sequence[int],
                    augment, *, batch_size: int, steps_per_epoch: int, mesh: Mesh,
                    teacher: Optional[steps.TeacherFn] = None,
                    teacher_index: Optional[Sequence[int]] = None,
                    run_keys: Optional[jax.Array] = None, orders_stacked: bool = False,
                    state_sharding=None, placement: Optional[Placement] = None,
                    mode: str = "auto", layout: str = "batch") -> Callable:
    """The step of a sweep, with the single-run step's signature and a stacked state.

    Returns `step(state, inputs, labels, perm, key, teacher_vars, width=None,
    num_steps=None) -> (state, metrics)`, jitted with the state donated, for
    `cud_jax.train.loop.train_stage` (`num_steps=k`: k steps in one `lax.scan`).

    Args:
      model_def, tx, augment, batch_size, steps_per_epoch, mesh, teacher, placement: as for
        `steps.make_train_step` (the same for every run).
      objectives: the distinct objectives of the sweep.
      objective_index: per run, the index of its objective in `objectives` (N entries).
      teacher_index: per run, the index of its teacher on the leading axis of
        `teacher_vars` (the distinct teachers stacked); None: one teacher serves all.
      run_keys: `[N, 2]` per-run base keys (`stacked_keys`) when seeds differ; None: every
        run uses the stage's `key`.
      orders_stacked: `perm` is `[N, n]`, each run's own epoch order (`stacked_epoch_order`);
        else one order shared by all.
      state_sharding: the layout of the stacked state (None: replicated; with layout `runs`,
        `state_sharding(state, mesh, RUN_SHARDING)`, which the caller must pass).
      mode: `unroll`, `vmap` or `auto` (see the module doc and `resolve_mode`).
      layout: `batch`, `runs` or `auto` (see the module doc and `resolve_layout`).

    The metrics are `loss` and `accuracy` (means over runs; `loss` NaN when any run's is not
    finite) and every per-run metric as an `[N]` array named `RUN_METRIC + name`.
    """
    num_runs = len(objective_index)
    mode, layout = resolve_layout(layout, mode, num_runs, mesh.devices.size)
    if layout == "runs" and state_sharding is None:
        raise ValueError("layout runs needs the stacked state's run sharding "
                         "(state_sharding(state, mesh, RUN_SHARDING))")
    on_runs = layout == "runs"
    step_of = [steps.train_step_fn(model_def, tx, fn, augment, batch_size=batch_size,
                                   steps_per_epoch=steps_per_epoch, mesh=mesh, teacher=teacher,
                                   placement=placement) for fn in objectives]
    state_out = replicated(mesh) if state_sharding is None else state_sharding

    def unrolled(state, inputs, labels, perm, key, teacher_vars, keys, width):
        updated, metrics = [], []
        for i in range(num_runs):
            run_state = TrainState(step=state.step, params=unstack_tree(state.params, i),
                                   model_state=unstack_tree(state.model_state, i),
                                   opt_state=unstack_tree(state.opt_state, i))
            run_teacher = (teacher_vars if teacher_index is None
                           else unstack_tree(teacher_vars, teacher_index[i]))
            new, m = step_of[objective_index[i]](
                run_state, inputs, labels, perm[i] if orders_stacked else perm,
                key if keys is None else keys[i], run_teacher, width)
            updated.append((new.params, new.model_state, new.opt_state))
            metrics.append(m)
        stacked = stack_trees(updated)
        return TrainState(state.step + 1, *stacked), _summary(_per_run_metrics(metrics))

    index = np.asarray(objective_index, np.int32)

    def vmapped(state, inputs, labels, perm, key, teacher_vars, keys, width):
        mapped = {"params": state.params, "model_state": state.model_state,
                  "opt_state": state.opt_state, "objective": jnp.asarray(index)}
        if orders_stacked:
            mapped["perm"] = perm
        if keys is not None:
            mapped["key"] = keys
        if teacher_index is not None:
            mapped["teacher"] = unstack_tree(teacher_vars, jnp.asarray(teacher_index))
        if on_runs:  # each run's inputs on its run's device(s)
            mapped = jax.lax.with_sharding_constraint(mapped, batch_sharded(mesh))

        def one_run(run):
            run_state = TrainState(step=state.step, params=run["params"],
                                   model_state=run["model_state"], opt_state=run["opt_state"])
            step = steps.train_step_fn(
                model_def, tx, select_objective(objectives, run["objective"]), augment,
                batch_size=batch_size, steps_per_epoch=steps_per_epoch, mesh=mesh,
                teacher=teacher, placement=placement,
                batch_sharding=replicated(mesh) if on_runs else None)
            new, m = step(run_state, inputs, labels, run.get("perm", perm),
                          run.get("key", key), run.get("teacher", teacher_vars), width)
            return (new.params, new.model_state, new.opt_state), m

        # With `runs`, the step's "whole batch" constraints gain the run axis over `data`.
        updated, metrics = jax.vmap(one_run, spmd_axis_name=DATA_AXIS if on_runs else None)(
            mapped)
        runs = {RUN_METRIC + name: value.astype(jnp.float32) for name, value in metrics.items()}
        return TrainState(state.step + 1, *updated), _summary(runs)

    one_step = unrolled if mode == "unroll" else vmapped

    jitted = steps.jit_steps(one_step, state_out)

    def step(state, inputs, labels, perm, key, teacher_vars, width=None, num_steps=None):
        return jitted(state, inputs, labels, perm, key, teacher_vars, run_keys, width=width,
                      num_steps=num_steps)

    step.mode, step.layout = mode, layout
    return step


def per_run_records(record: dict, num_runs: int) -> list[dict]:
    """Splits a sweep step's host metrics (`make_sweep_step`) into one record per run; keys
    the loop added (`lr`) go to every run."""
    runs = {name[len(RUN_METRIC):]: np.asarray(v) for name, v in record.items()
            if name.startswith(RUN_METRIC)}
    extra = {k: v for k, v in record.items()
             if not k.startswith(RUN_METRIC) and k not in ("loss", "accuracy")}
    return [{**{name: values[i] for name, values in runs.items()}, **extra}
            for i in range(num_runs)]
