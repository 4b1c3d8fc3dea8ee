"""W-Clip: Wrong-mass Clipping of a frozen teacher's probabilities (PAPER.md section 2).

Only where the teacher's top class k* is wrong:

    delta = min(eta * p_k*, m * (p_k* - p_y));  q_y = p_y + delta;  q_k* = p_k* - delta

and every other class keeps its probability. Total mass and non-negativity are preserved,
and rows whose top class is the label (or that have no label) pass through unchanged.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from cud_jax.losses import _validate


class WClipStats(NamedTuple):
    """Per-batch W-Clip diagnostics.

    Attributes:
      fire_rate: fraction of labeled examples whose teacher top class is wrong (W-Clip acts).
      moved_mass: mean of delta over labeled examples (0 where W-Clip does not fire).
      moved_mass_when_fired: mean of delta over the examples where it fires (0 if none).
    """

    fire_rate: jax.Array
    moved_mass: jax.Array
    moved_mass_when_fired: jax.Array


def top_class(probs: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(max_k p_k, first k attaining it): jnp.argmax's tie-breaking, computed as a max and an
    index-min over the ties, which XLA:CPU runs ~10x faster than its argmax reduction."""
    p_top = jnp.max(probs, axis=-1)
    classes = jax.lax.broadcasted_iota(jnp.int32, probs.shape, probs.ndim - 1)
    top = jnp.min(jnp.where(probs == p_top[..., None], classes, probs.shape[-1] - 1), axis=-1)
    return p_top, top


def checked_inputs(probs, labels):
    """(probs, labels) validated: rows on the simplex, labels < K or negative (unlabeled).

    Eager calls check the values (probabilities that sum to 3, or logits, are rejected);
    under `jit` only shapes and dtypes are checked, unless in `cud_jax.losses.checked` mode.
    """
    probs = _validate.prob_array(probs, "probs")
    return probs, _validate.label_array(labels, probs, allow_unlabeled=True)


def wclip_delta(probs, labels, *, eta: float = 0.5, margin: float = 0.7) -> jax.Array:
    """The mass W-Clip moves from the wrong top class to the label, per example.

    Args:
      probs: `[..., K]` teacher probabilities at temperature 1 (checked eagerly to lie on the
        simplex; under `jit` the caller must ensure it, or use `cud_jax.losses.checked`).
      labels: `[...]` integer labels; a negative label means unlabeled (delta = 0).
      eta: at most this fraction of p_k* is moved (paper: 0.5).
      margin: at most this fraction of the gap p_k* - p_y is moved (paper: 0.7).
    """
    return _delta(*checked_inputs(probs, labels), eta, margin)


def _delta(probs, labels, eta, margin):
    return fired_delta(probs, labels, eta=eta, margin=margin)[0]


def fired_delta(probs: jax.Array, labels: jax.Array, *, eta: float, margin: float):
    """`(delta, p_top, top, fires)` of checked arrays (`checked_inputs`): W-Clip's moved mass
    (0 where it does not fire), the top class and its probability, and where W-Clip fires;
    one computation for the targets and their statistics (`cud_jax.losses.targets`)."""
    p_top, top = top_class(probs)
    p_y = _validate.take_label(probs, labels)
    fires = (labels >= 0) & (top != labels)
    delta = jnp.minimum(eta * p_top, margin * (p_top - p_y))
    return jnp.where(fires, delta, 0.0), p_top, top, fires


def wclip(probs, labels, *, eta: float = 0.5, margin: float = 0.7) -> jax.Array:
    """Corrected targets q: mass moved off a wrong top class onto the true class.

    Args:
      probs: `[..., K]` teacher probabilities at temperature 1 (rows sum to 1).
      labels: `[...]` integer labels; a negative label marks an unlabeled example, which is
        returned unchanged.
      eta, margin: see `wclip_delta`.

    Returns:
      `[..., K]` probabilities q with the same row sums as `probs`. The ratios among all
      classes other than k* and y are unchanged.

    Raises:
      ValueError: on an eager call, if a row of `probs` is off the simplex (values outside
        [0, 1], e.g. logits, or a sum other than 1) or a label is >= K. Under `jit` these
        value checks cannot run; wrap with `cud_jax.losses.checked` to make them runtime
        errors.
    """
    return _wclip(*checked_inputs(probs, labels), eta, margin)


def _wclip(probs, labels, eta, margin):
    delta = _delta(probs, labels, eta, margin)
    num_classes = probs.shape[-1]
    to_label = jax.nn.one_hot(jnp.maximum(labels, 0), num_classes, dtype=probs.dtype)
    from_top = jax.nn.one_hot(top_class(probs)[1], num_classes, dtype=probs.dtype)
    return probs + delta[..., None] * (to_label - from_top)


def wclip_stats(probs, labels, *, eta: float = 0.5, margin: float = 0.7) -> WClipStats:
    """Firing rate and moved mass of W-Clip over a batch (all leading axes pooled).

    Unlabeled examples (negative labels) are left out of every average. Inputs are checked
    as in `wclip`.
    """
    probs, labels = checked_inputs(probs, labels)
    delta = _delta(probs, labels, eta, margin)
    labeled = labels >= 0
    fires = labeled & (top_class(probs)[1] != labels)
    n_labeled = jnp.maximum(jnp.sum(labeled), 1)
    n_fired = jnp.sum(fires)
    return WClipStats(
        fire_rate=jnp.sum(fires) / n_labeled,
        moved_mass=jnp.sum(delta) / n_labeled,
        moved_mass_when_fired=jnp.sum(delta) / jnp.maximum(n_fired, 1),
    )
