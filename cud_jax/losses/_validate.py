"""Argument checks shared by the loss and metric functions.

Shape and dtype checks run at trace time on static information, so they cost nothing inside
`jax.jit`. Value checks (labels in range, probabilities on the simplex, temperature > 0) run
only when the value is concrete, i.e. when the function is called eagerly: NumPy inputs are
checked on the host, concrete jax arrays by one small jitted reduction whose few scalars are
read back. Under `jit` (and `grad`, `vmap`) the inputs are tracers and the value checks are
skipped, because XLA cannot raise an error without a device round trip; the opt-in checks
mode (`cud_jax.losses.checked`, which sets `runtime_checks()`) turns them into
`jax.experimental.checkify` checks instead.
"""

from __future__ import annotations

import contextlib
import threading

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import checkify

# Whether functions being traced should emit checkify checks for their value checks. Set only
# while `cud_jax.losses.checked` traces a function (a plain `jit` would reject an
# unfunctionalised check), per thread so concurrent tracing elsewhere is unaffected.
_STATE = threading.local()


@contextlib.contextmanager
def runtime_checks():
    """While active, value checks on traced inputs become `checkify.check`s.

    Only useful under `checkify.checkify` (which `cud_jax.losses.checked` applies): a
    function traced in this context must be checkified, or jit refuses the checks.
    """
    previous = getattr(_STATE, "on", False)
    _STATE.on = True
    try:
        yield
    finally:
        _STATE.on = previous


def _checks_on() -> bool:
    return getattr(_STATE, "on", False)


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
    if _checks_on() and not _is_concrete(x):
        checkify.check(jnp.all(jnp.isfinite(x)), f"`{name}` contains NaN or infinite values.")
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
    low = -np.inf if allow_unlabeled else 0
    num_classes = scores.shape[-1]
    if not (_is_concrete(labels) and _is_concrete(mask)):
        if _checks_on():
            ok = labels < num_classes
            if not allow_unlabeled:
                ok = ok & (labels >= 0)
            if mask is not None:
                ok = ok | ~jnp.asarray(mask, bool)
            checkify.check(
                jnp.all(ok),
                f"`{name}` must lie in [0, {num_classes}) for {num_classes} classes"
                + (" (or be negative for unlabeled examples)" if allow_unlabeled else "")
                + "; got values in [{lo}, {hi}].", lo=jnp.min(labels), hi=jnp.max(labels))
    else:
        values = np.asarray(labels)
        if mask is not None:
            values = values[np.asarray(mask)]
        if values.size and (values.max() >= num_classes or values.min() < low):
            raise ValueError(
                f"`{name}`{' of unmasked examples' if mask is not None else ''} must lie in "
                f"[0, {num_classes}) for {num_classes} classes"
                + (" (or be negative for unlabeled examples)" if allow_unlabeled else "")
                + f"; got values in [{values.min()}, {values.max()}]."
            )
    return labels.astype(jnp.int32)


def simplex_tolerance(dtype) -> float:
    """How far a row sum may stray from 1: 1e-3, or 8 ulps of a coarser input dtype (a
    bfloat16 softmax rounds each entry to 2**-9 relative)."""
    return max(1e-3, 8 * float(jnp.finfo(dtype).eps))


def _simplex_stats(probs, keep, xp):
    """(non-finite kept rows, min entry, max entry, min row sum, max row sum) over kept rows.

    `xp` is numpy for host inputs (no device involved) or jnp (jitted for concrete device
    arrays, traced under the checks mode). Rows with NaN/inf are counted and left out of the
    other four statistics; with no rows the extremes are +-inf, which pass every check.
    """
    finite = xp.all(xp.isfinite(probs), axis=-1)
    if keep is None:
        keep = xp.ones(finite.shape, bool)
    nonfinite = xp.sum(keep & ~finite)
    keep = keep & finite
    row_sum = xp.sum(probs, axis=-1, dtype=np.float64 if xp is np else None)
    return (nonfinite,
            xp.min(xp.where(keep, xp.min(probs, axis=-1, initial=xp.inf), xp.inf),
                   initial=xp.inf),
            xp.max(xp.where(keep, xp.max(probs, axis=-1, initial=-xp.inf), -xp.inf),
                   initial=-xp.inf),
            xp.min(xp.where(keep, row_sum, xp.inf), initial=xp.inf),
            xp.max(xp.where(keep, row_sum, -xp.inf), initial=-xp.inf))


_device_simplex_stats = jax.jit(lambda probs, keep: _simplex_stats(probs, keep, jnp))


def _simplex_error(name: str, tol: float, nonfinite, lo, hi, sum_lo, sum_hi) -> str | None:
    """The message for failed simplex statistics, or None when they pass."""
    if nonfinite:
        return (f"`{name}` has {int(nonfinite)} rows with NaN or infinite values; probability "
                "rows must be finite (check the model's outputs).")
    if lo < -tol or hi > 1 + tol:
        return (f"`{name}` must hold probabilities in [0, 1] but has values in [{lo:.4g}, "
                f"{hi:.4g}]: these look like logits; pass softmax(logits).")
    if sum_lo < 1 - tol or sum_hi > 1 + tol:
        return (f"`{name}` rows must sum to 1 (within {tol:.0e}) but their sums range over "
                f"[{sum_lo:.4g}, {sum_hi:.4g}]; pass normalised probabilities, e.g. "
                "softmax(logits).")
    return None


def prob_array(x, name: str, *, mask=None, min_classes: int = 1) -> jax.Array:
    """A `[..., K]` floating array of probabilities: every kept row on the simplex.

    Each row must be finite, with entries in [0, 1] and a sum of 1, up to
    `simplex_tolerance` of the input dtype, so logits passed as probabilities fail with a
    message to pass softmax(logits). `mask` (`[...]` booleans) exempts padded rows. The check
    runs on concrete inputs only: host NumPy directly, a concrete jax array through one jitted
    reduction and a read-back of five scalars. Under `jit` it is skipped unless the checks
    mode (`cud_jax.losses.checked`) is on.
    """
    dtype = getattr(x, "dtype", None)
    probs = class_array(x, name, min_classes=min_classes)
    tol = simplex_tolerance(dtype if dtype is not None else probs.dtype)
    traced = not (_is_concrete(x) and _is_concrete(mask))
    if traced:
        if _checks_on():
            keep = None if mask is None else jnp.asarray(mask, bool)
            nonfinite, lo, hi, sum_lo, sum_hi = _simplex_stats(probs, keep, jnp)
            checkify.check(nonfinite == 0, f"`{name}` has NaN or infinite values.")
            checkify.check((lo >= -tol) & (hi <= 1 + tol),
                           f"`{name}` must hold probabilities in [0, 1] but has values in "
                           "[{lo}, {hi}]: pass softmax(logits).", lo=lo, hi=hi)
            checkify.check((sum_lo >= 1 - tol) & (sum_hi <= 1 + tol),
                           f"`{name}` rows must sum to 1 (within {tol:.0e}) but their sums "
                           "range over [{lo}, {hi}].", lo=sum_lo, hi=sum_hi)
        return probs
    if isinstance(x, jax.Array):
        keep = None if mask is None else jnp.asarray(mask, bool)
        stats = [v.item() for v in jax.device_get(_device_simplex_stats(probs, keep))]
    else:  # host data: checked in NumPy, no device involved
        keep = None if mask is None else np.asarray(mask, bool)
        stats = _simplex_stats(np.asarray(x, probs.dtype), keep, np)
    message = _simplex_error(name, tol, *stats)
    if message:
        raise ValueError(message)
    return probs


def check_temperature(temperature, name: str = "temperature") -> None:
    """Raises unless a concrete scalar temperature is a finite number > 0.

    Python numbers, NumPy scalars and 1-element NumPy or concrete jax arrays are checked;
    arrays of several temperatures are left alone (they broadcast per example). A traced
    temperature (under `jit`) is checked only in the checks mode.
    """
    if isinstance(temperature, jax.core.Tracer):
        if _checks_on():
            checkify.check(jnp.all(temperature > 0), f"`{name}` must be > 0, got {{t}}.",
                           t=jnp.min(temperature))
        return
    value = np.asarray(temperature)
    if value.size != 1 or not np.issubdtype(value.dtype, np.number):
        return
    value = float(value.reshape(()))
    if not (np.isfinite(value) and value > 0):
        raise ValueError(f"`{name}` must be a finite number > 0, got {value}.")


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
