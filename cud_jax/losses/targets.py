"""Corrected teacher targets and their statistics, from one computation (PAPER.md 2-3).

A correction moves probability mass off a teacher's wrong top class k* (only where k* is
not the label); the statistics say how often that fired and how much mass moved:

* `none`: the teacher's probabilities as they are (plain KD; statistics still reported);
* `wclip`: W-Clip, `cud_jax.losses.wclip`: delta moves from k* to the label;
* `kl_wrong`: the KL (I-)projection onto {q : q_k* <= p_k* - delta} (`kl_projection` with
  W = {k*}), which spreads the freed mass over all other classes in proportion to p;
* `euclid_wrong`: the Euclidean projection onto the same set (`project_simplex_box`).

The two projections are PAPER.md section 3's ablations of W-Clip's choice of where the mass
goes; all three remove the same mass from k*.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from cud_jax.losses.projections import kl_projection
from cud_jax.losses.simplex_box import project_simplex_box
from cud_jax.losses.wclip import WClipStats, checked_inputs, fired_delta

CORRECTIONS = ("none", "wclip", "kl_wrong", "euclid_wrong")


class CorrectedTargets(NamedTuple):
    """Targets at temperature 1 (`[..., K]`) and the W-Clip statistics of the batch."""

    probs: jax.Array
    stats: WClipStats


def check_correction(correction: str) -> None:
    """Fails for an unknown correction name, listing the valid ones."""
    if correction not in CORRECTIONS:
        raise ValueError(f"Unknown target correction {correction!r}; valid values: "
                         f"{', '.join(CORRECTIONS)}.")


def corrected_targets(probs, labels, *, correction: str = "wclip", eta: float = 0.5,
                      margin: float = 0.7) -> CorrectedTargets:
    """The corrected targets of `probs` and their statistics (all leading axes pooled).

    Args:
      probs: `[..., K]` teacher probabilities at temperature 1 (checked as in `wclip`).
      labels: `[...]` integer labels; negative for unlabeled rows (returned unchanged).
      correction: one of CORRECTIONS.
      eta, margin: W-Clip's budget (`wclip_delta`); every correction moves this much mass
        off the wrong top class.
    """
    check_correction(correction)
    return correct(*checked_inputs(probs, labels), correction, eta, margin)


def correct(probs, labels, correction: str, eta: float, margin: float) -> CorrectedTargets:
    """`corrected_targets` of inputs already checked (`wclip.checked_inputs`)."""
    delta, p_top, top, fires = fired_delta(probs, labels, eta=eta, margin=margin)
    labeled = labels >= 0
    n_labeled = jnp.maximum(jnp.sum(labeled), 1)
    stats = WClipStats(fire_rate=jnp.sum(fires) / n_labeled,
                       moved_mass=jnp.sum(delta) / n_labeled,
                       moved_mass_when_fired=jnp.sum(delta) / jnp.maximum(jnp.sum(fires), 1))
    num_classes = probs.shape[-1]
    if correction == "none":
        return CorrectedTargets(probs, stats)
    if correction == "wclip":
        to_label = jax.nn.one_hot(jnp.maximum(labels, 0), num_classes, dtype=probs.dtype)
        from_top = jax.nn.one_hot(top, num_classes, dtype=probs.dtype)
        return CorrectedTargets(probs + delta[..., None] * (to_label - from_top), stats)
    # The wrong-only budget: W = {k*} where W-Clip fires, with mass at most p_k* - delta.
    w_mask = jax.nn.one_hot(top, num_classes, dtype=bool) & (delta > 0)[..., None]
    eps = p_top - delta
    if correction == "kl_wrong":
        q = kl_projection(probs, n_mask=jnp.zeros_like(w_mask), alpha=0.0, w_mask=w_mask,
                          eps=eps)
    else:
        q = project_simplex_box(probs, jnp.zeros_like(probs),
                                jnp.where(w_mask, eps[..., None], 1.0))
    return CorrectedTargets(q, stats)
