"""One device mesh for the whole run: parameters replicated, batches split along `data`.

The global batch size is a property of the recipe, not of the hardware: it is split evenly
over however many devices the mesh has, so 1 and 8 devices run the same computation (up to
the order of floating-point reductions).
"""

from __future__ import annotations

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


def put_replicated(tree, mesh: Mesh):
    """Places a pytree of arrays on every device of the mesh."""
    return jax.device_put(tree, replicated(mesh))
