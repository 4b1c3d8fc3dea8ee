"""One device mesh for the whole run: parameters replicated, batches split along `data`.

The global batch size is a property of the recipe, not of the hardware: it is split evenly
over however many devices the mesh has, so 1 and 8 devices run the same computation (up to
the order of floating-point reductions).

Multi-process runs (see `cud_jax.train.distributed`): the mesh spans the devices of every
process and arrays placed on it are global. Host values that every process holds in full
(the data set, a freshly initialised state, an evaluation batch) become global arrays with
`host_to_global`: each process fills only its own devices' slices, with no cross-process
transfer. `to_host` reads a global array back (gathering it from the other processes when
it is split across them).
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


def _put_leaf(x, sharding: NamedSharding):
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
        return jax.device_put(x, sharding)  # already global: a reshard
    if isinstance(x, jax.Array) and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
        data = _put_leaf(jax.random.key_data(x), sharding)
        return jax.random.wrap_key_data(data, impl=jax.random.key_impl(x))
    host = np.asarray(x)
    host = host.astype(jax.dtypes.canonicalize_dtype(host.dtype), copy=False)
    return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])


def host_to_global(tree, sharding: NamedSharding):
    """Places a pytree whose every process holds the same full value with `sharding`.

    Single-process this is `jax.device_put`. Multi-process, each process builds only the
    shards of its own devices from its copy (`jax.make_array_from_callback`): nothing moves
    between hosts, and nothing checks that the copies agree (see `check_same_everywhere`).
    """
    if jax.process_count() == 1:
        return jax.device_put(tree, sharding)
    return jax.tree_util.tree_map(lambda x: _put_leaf(x, sharding), tree)


def put_replicated(tree, mesh: Mesh):
    """Places a pytree of arrays on every device of the mesh (of every process)."""
    return host_to_global(tree, replicated(mesh))


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
