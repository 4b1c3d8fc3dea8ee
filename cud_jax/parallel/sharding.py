"""One device mesh for the whole run: batches split along `data`, parameters replicated or
(optionally, `config.parallel.param_sharding="fsdp"`) split along `data` as well.

The global batch size is a property of the recipe, not of the hardware: it is split evenly
over however many devices the mesh has, so 1 and 8 devices run the same computation (up to
the order of floating-point reductions).

Multi-process runs (see `cud_jax.parallel.distributed`): the mesh spans the devices of every
process and arrays placed on it are global. Host values that every process holds in full
(the data set, a freshly initialised state, an evaluation batch) become global arrays with
`host_to_global`: each process fills only its own devices' slices, with no cross-process
transfer. `to_host` reads a global array back (gathering it from the other processes when
it is split across them).

Parameter sharding (`state_sharding`, `put_state`): the default keeps the whole train state
on every device. `fsdp` splits each large array of the state (parameters, optimiser moments,
large model state) along one axis over `data`, so a device holds 1/n of it; XLA inserts the
all-gathers where the step uses the weights (docs/scaling.md). The computation is the same,
so the results equal the replicated run up to the order of float reductions.

A sweep's stacked state (`cud_jax.train.sweep`) may instead be laid out with the `runs` rule:
its leading run axis split over `data`, so each device holds whole runs (its own state, its
own batch: no cross-device reduction inside a run).
"""

from __future__ import annotations

import zlib

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

DATA_AXIS = "data"


def make_mesh(devices=None) -> Mesh:
    """A 1-D mesh over all (or the given) devices with the single axis `data`."""
    devices = jax.devices() if devices is None else list(devices)
    return Mesh(np.asarray(devices), (DATA_AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
    """Every device holds the whole array (parameters, optimiser state, the data set)."""
    return NamedSharding(mesh, P())


def batch_sharded(mesh: Mesh) -> NamedSharding:
    """The leading (batch) axis is split over `data`; the other axes are whole."""
    return NamedSharding(mesh, P(DATA_AXIS))


def check_batch_size(batch_size: int, mesh: Mesh, what: str = "batch_size") -> None:
    """Fails early when a global batch cannot be split evenly over the mesh."""
    n = mesh.devices.size
    if batch_size % n:
        raise ValueError(
            f"`{what}`={batch_size} is not divisible by the {n} devices of the mesh; choose a "
            f"multiple of {n} (the global batch is split evenly across devices)."
        )


#: `config.parallel.param_sharding` values (see `state_sharding`).
PARAM_SHARDINGS = ("replicated", "fsdp")
#: The layout of a sweep's stacked state placed run by run (`parallel.sweep_layout=runs`); not
#: a `parallel.param_sharding` value (a single run has no run axis).
RUN_SHARDING = "runs"
#: Default `config.parallel.fsdp_min_size`: arrays smaller than this (in elements) replicate.
FSDP_MIN_SIZE = 2**14


def check_param_sharding(rule: str, min_size: int = FSDP_MIN_SIZE) -> None:
    """Fails with the valid values when `rule` is not a known parameter-sharding rule."""
    if rule not in PARAM_SHARDINGS:
        raise ValueError(f"Unknown parallel.param_sharding {rule!r}; valid values: "
                         f"{', '.join(PARAM_SHARDINGS)}.")
    if min_size < 0:
        raise ValueError(f"parallel.fsdp_min_size must be >= 0, got {min_size}.")


def fsdp_axis(shape, num_shards: int, min_size: int):
    """The axis of an array of `shape` that `fsdp` splits over `num_shards`, or None.

    Arrays with fewer than `min_size` elements stay whole: splitting them saves little memory
    and costs a gather per use. Otherwise the largest axis whose length `num_shards` divides
    (the first of equals) is split, so every device holds an equal slice.
    """
    if not shape or int(np.prod(shape)) < min_size:
        return None
    divisible = [axis for axis, length in enumerate(shape) if length % num_shards == 0]
    return max(divisible, key=lambda axis: shape[axis], default=None)


def _fsdp_leaf(x, mesh: Mesh, min_size: int) -> NamedSharding:
    axis = fsdp_axis(np.shape(x), mesh.shape[DATA_AXIS], min_size)
    if axis is None:
        return replicated(mesh)
    return NamedSharding(mesh, P(*([None] * axis), DATA_AXIS))


def state_sharding(tree, mesh: Mesh, rule: str = "replicated",
                   min_size: int = FSDP_MIN_SIZE):
    """A pytree of shardings for `tree` (a train state, or any arrays) under `rule`.

    `replicated`: every array whole on every device. `fsdp`: each array of at least
    `min_size` elements split over `data` along its largest evenly divisible axis (see
    `fsdp_axis`); the rest, step counters included, replicated. `runs` (`RUN_SHARDING`, a
    sweep's stacked state): every array's leading run axis split over `data`, the shared
    scalar step replicated. The rule reads shapes only (`tree` may hold host arrays, device
    arrays or shape structs), so the optimiser moments, which mirror the parameters, are
    split the same way.
    """
    if rule == RUN_SHARDING:
        return jax.tree_util.tree_map(
            lambda x: batch_sharded(mesh) if np.shape(x) else replicated(mesh), tree)
    check_param_sharding(rule, min_size)
    if rule == "replicated":
        return jax.tree_util.tree_map(lambda _: replicated(mesh), tree)
    return jax.tree_util.tree_map(lambda x: _fsdp_leaf(x, mesh, min_size), tree)


def _put_leaf(x, sharding: NamedSharding):
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
        return jax.device_put(x, sharding)  # already global: a reshard
    if isinstance(x, jax.Array) and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
        data = _put_leaf(jax.random.key_data(x), sharding)
        return jax.random.wrap_key_data(data, impl=jax.random.key_impl(x))
    host = np.asarray(x)
    host = host.astype(jax.dtypes.canonicalize_dtype(host.dtype), copy=False)
    return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])


def host_to_global(tree, sharding):
    """Places a pytree whose every process holds the same full value with `sharding`.

    `sharding` is one sharding for every leaf, or a pytree of them matching `tree` (as
    `state_sharding` returns). Single-process this is `jax.device_put`. Multi-process, each
    process builds only the shards of its own devices from its copy
    (`jax.make_array_from_callback`): nothing moves between hosts, and nothing checks that
    the copies agree (see `check_same_everywhere`).
    """
    if jax.process_count() == 1:
        return jax.device_put(tree, sharding)
    if isinstance(sharding, jax.sharding.Sharding):
        return jax.tree_util.tree_map(lambda x: _put_leaf(x, sharding), tree)
    return jax.tree_util.tree_map(_put_leaf, tree, sharding)


def put_replicated(tree, mesh: Mesh):
    """Places a pytree of arrays on every device of the mesh (of every process)."""
    return host_to_global(tree, replicated(mesh))


def put_state(tree, mesh: Mesh, rule: str = "replicated", min_size: int = FSDP_MIN_SIZE):
    """Places a pytree (a train state, frozen teacher variables) with `state_sharding`."""
    return host_to_global(tree, state_sharding(tree, mesh, rule, min_size))


def to_host(x) -> np.ndarray:
    """A numpy copy of a (possibly global) array; gathers shards held by other processes.

    A collective when `x` is split across processes: every process must call it.
    """
    if not isinstance(x, jax.Array) or x.is_fully_addressable or x.is_fully_replicated:
        return np.asarray(x)
    from jax.experimental import multihost_utils

    return np.asarray(multihost_utils.process_allgather(x, tiled=True))


def check_same_everywhere(tree, what: str) -> None:
    """Fails when processes hold different host data (a checksum compared across processes).

    Every process loads the whole data set itself; a stale file or a non-deterministic
    loader on one host would otherwise train on inconsistent data silently.
    """
    if jax.process_count() == 1:
        return
    from jax.experimental import multihost_utils

    sums = [zlib.crc32(np.ascontiguousarray(leaf).tobytes())
            for leaf in jax.tree_util.tree_leaves(tree)]
    local = np.asarray(sums, np.uint32)
    every = np.asarray(multihost_utils.process_allgather(local))
    bad = [p for p in range(every.shape[0]) if not np.array_equal(every[p], every[0])]
    if bad:
        raise ValueError(
            f"The {what} differs between processes (processes {bad} disagree with process 0). "
            "Every process must load identical data: use the same data_dir contents and "
            "package versions on every host.")
