"""Argument handling and a fused row reduction shared by the two projection solvers
(`cud_jax.losses.projections` and `cud_jax.losses.simplex_box`)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax



def _broadcast_to_classes(x, probs: jax.Array, name: str) -> jax.Array:
    """Broadcasts a `[..., K]`-like argument to `probs.shape` or raises naming `name`."""
    try:
        shape = jnp.broadcast_shapes(jnp.shape(x), probs.shape)
    except ValueError:
        shape = None
    if shape != probs.shape:
        raise ValueError(
            f"`{name}` has shape {jnp.shape(x)}, which does not broadcast to the shape of the "
            f"probabilities {probs.shape} (class axis last)."
        )
    return jnp.broadcast_to(x, probs.shape)


def _group_mask(mask, probs: jax.Array, name: str) -> jax.Array:
    if mask is None:
        return jnp.zeros(probs.shape, bool)
    mask = jnp.asarray(mask)
    if mask.dtype != jnp.bool_:
        raise TypeError(f"`{name}` must be a boolean mask over classes, got dtype {mask.dtype}.")
    return _broadcast_to_classes(mask, probs, name)


def _budget(x, probs: jax.Array, name: str) -> jax.Array:
    """A per-row scalar budget (`alpha`, `eps`) broadcast to the batch shape `probs.shape[:-1]`."""
    x = jnp.asarray(x)
    if not (jnp.issubdtype(x.dtype, jnp.floating) or jnp.issubdtype(x.dtype, jnp.integer)):
        raise TypeError(f"`{name}` must be a real number or array, got dtype {x.dtype}.")
    batch = probs.shape[:-1]
    try:
        shape = jnp.broadcast_shapes(x.shape, batch)
    except ValueError:
        shape = None
    if shape != batch:
        raise ValueError(
            f"`{name}` has shape {x.shape}; it must be a scalar or broadcast to the batch shape "
            f"{batch} (one budget per row, no class axis)."
        )
    return jnp.broadcast_to(x.astype(probs.dtype), batch)


def _row_reduce(operands, combiners, inits):
    """Several reductions over the class axis as one variadic `lax.reduce`.

    XLA:CPU runs a variadic reduce as one vectorised loop, whereas separate `jnp` reductions
    over the same inputs get multi-output fused into a loop that measured ~30x slower.
    """
    inits = tuple(jnp.asarray(i, x.dtype) for i, x in zip(inits, operands))
    return lax.reduce(tuple(operands), inits,
                      lambda a, b: tuple(f(x, y) for f, x, y in zip(combiners, a, b)),
                      (operands[0].ndim - 1,))
