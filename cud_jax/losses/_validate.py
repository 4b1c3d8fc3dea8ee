"""Argument checks shared by the loss and metric functions.

Every check here runs at trace time on static information (shapes, dtypes) so it costs
nothing inside `jax.jit`. Value checks (labels in range) run only when the array is concrete,
i.e. when the function is called eagerly; under `jit` they are skipped rather than turned into
runtime errors, which XLA cannot raise cheaply.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def float_array(x, name: str) -> jax.Array:
    """Returns `x` as a floating array of at least float32 precision.

    bfloat16/float16 inputs are promoted so softmax and logs run in float32 (the numerics
    convention of DESIGN.md); float64 inputs stay float64.
    """
    x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise TypeError(f"`{name}` must be a floating array, got dtype {x.dtype}.")
    return x.astype(jnp.promote_types(x.dtype, jnp.float32))


def class_array(x, name: str, *, min_classes: int = 1) -> jax.Array:
    """A floating array with a class axis last (at least `min_classes` wide)."""
    x = float_array(x, name)
    if x.ndim < 1:
        raise ValueError(f"`{name}` needs a class axis last; got a scalar.")
    if x.shape[-1] < min_classes:
        raise ValueError(
            f"`{name}` has {x.shape[-1]} classes on its last axis; this function needs at "
            f"least {min_classes}."
        )
    return x


def _is_concrete(x) -> bool:
    return not isinstance(x, jax.core.Tracer)


def label_array(labels, scores: jax.Array, name: str = "labels", *, allow_unlabeled: bool = False,
                mask=None) -> jax.Array:
    """Checks integer labels against a `[..., K]` score array and returns them as int32.

    Args:
      labels: integer class indices of shape `scores.shape[:-1]`.
      scores: the logits or probabilities the labels index into.
      name: argument name used in error messages.
      allow_unlabeled: if true, a negative label marks an unlabeled example.
      mask: optional `[...]` booleans; the range is checked on kept (True) rows only, so
        padded rows may carry any placeholder label.
    """
    labels = jnp.asarray(labels)
    if not jnp.issubdtype(labels.dtype, jnp.integer):
        raise TypeError(
            f"`{name}` must hold integer class indices, got dtype {labels.dtype} "
            "(one-hot labels are not accepted: pass argmax(one_hot, -1))."
        )
    if labels.shape != scores.shape[:-1]:
        raise ValueError(
            f"`{name}` has shape {labels.shape} but must equal the scores' shape without the "
            f"class axis, {scores.shape[:-1]}."
        )
    if _is_concrete(labels) and _is_concrete(mask):
        values = np.asarray(labels)
        if mask is not None:
            values = values[np.asarray(mask)]
        low = -np.inf if allow_unlabeled else 0
        num_classes = scores.shape[-1]
        if values.size and (values.max() >= num_classes or values.min() < low):
            raise ValueError(
                f"`{name}`{' of unmasked examples' if mask is not None else ''} must lie in "
                f"[0, {num_classes}) for {num_classes} classes"
                + (" (or be negative for unlabeled examples)" if allow_unlabeled else "")
                + f"; got values in [{values.min()}, {values.max()}]."
            )
    return labels.astype(jnp.int32)


def same_shape(a: jax.Array, b: jax.Array, name_a: str, name_b: str) -> None:
    """Raises a ValueError naming both arguments when their shapes differ."""
    if a.shape != b.shape:
        raise ValueError(
            f"`{name_a}` has shape {a.shape} but `{name_b}` has shape {b.shape}; they must match."
        )


def take_label(x: jax.Array, labels: jax.Array) -> jax.Array:
    """x[..., labels] for every leading index; negative labels read class 0 (mask them)."""
    safe = jnp.maximum(labels, 0)
    return jnp.take_along_axis(x, safe[..., None], axis=-1)[..., 0]
