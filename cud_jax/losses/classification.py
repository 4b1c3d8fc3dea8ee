"""Per-example teacher objectives: cross-entropy, label smoothing, focal loss, entropy.

All functions take logits with the class axis last and any leading batch shape, and return
one value per example (the caller reduces). Computation runs in float32 or wider.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from cud_jax.losses import _validate


def cross_entropy(logits, labels) -> jax.Array:
    """-log softmax(logits)[label], per example.

    Args:
      logits: `[..., K]` float array.
      labels: `[...]` integer array of class indices.

    Returns:
      `[...]` array of negative log-likelihoods.
    """
    logits = _validate.class_array(logits, "logits")
    labels = _validate.label_array(labels, logits)
    log_probs = jax.nn.log_softmax(logits, axis=-1)
    return -_validate.take_label(log_probs, labels)


def label_smoothing_ce(logits, labels, *, smoothing: float = 0.1) -> jax.Array:
    """Cross-entropy against `(1 - smoothing) * one_hot + smoothing / K`, per example.

    Args:
      logits: `[..., K]` float array.
      labels: `[...]` integer class indices.
      smoothing: mass spread uniformly over all K classes (PAPER.md baseline: 0.1).
    """
    if not 0.0 <= smoothing <= 1.0:
        raise ValueError(f"`smoothing` must lie in [0, 1], got {smoothing}.")
    logits = _validate.class_array(logits, "logits")
    labels = _validate.label_array(labels, logits)
    log_probs = jax.nn.log_softmax(logits, axis=-1)
    nll = -_validate.take_label(log_probs, labels)
    uniform_ce = -jnp.mean(log_probs, axis=-1)
    return (1.0 - smoothing) * nll + smoothing * uniform_ce


def _one_minus_exp(log_p: jax.Array) -> jax.Array:
    """1 - exp(log_p), accurate when p is close to 1."""
    return -jnp.expm1(log_p)


def focal_weight(log_p_y: jax.Array, gamma: float) -> jax.Array:
    """(1 - p_y) ** gamma, with gamma = 0 giving exactly 1 (and a zero, not NaN, gradient)."""
    if gamma == 0:
        return jnp.ones_like(log_p_y)
    return _one_minus_exp(log_p_y) ** gamma


def focal_loss(logits, labels, *, gamma: float = 2.0, alpha: float = 1.0) -> jax.Array:
    """Focal loss -alpha * (1 - p_y) ** gamma * log p_y, per example (Lin et al., 2017).

    Args:
      logits: `[..., K]` float array.
      labels: `[...]` integer class indices.
      gamma: focusing exponent (the teacher baseline uses 2; DUS's focal term uses 10).
      alpha: constant scale.
    """
    if gamma < 0:
        raise ValueError(f"`gamma` must be >= 0, got {gamma}.")
    logits = _validate.class_array(logits, "logits")
    labels = _validate.label_array(labels, logits)
    log_p_y = _validate.take_label(jax.nn.log_softmax(logits, axis=-1), labels)
    return -alpha * focal_weight(log_p_y, gamma) * log_p_y


def entropy_from_log_probs(log_probs: jax.Array) -> jax.Array:
    """H(p) from normalised log-probabilities; 0 * log 0 = 0 for classes at -inf."""
    probs = jnp.exp(log_probs)
    return -jnp.sum(jnp.where(probs > 0, probs * log_probs, 0.0), axis=-1)


def entropy(logits) -> jax.Array:
    """Shannon entropy H(softmax(logits)) in nats, per example; exact zeros handled."""
    logits = _validate.class_array(logits, "logits")
    return entropy_from_log_probs(jax.nn.log_softmax(logits, axis=-1))


def probs_entropy(probs) -> jax.Array:
    """Shannon entropy of probability vectors (not logits), per example; 0 log 0 = 0.

    Eager calls check that every row lies on the simplex (not under `jit`).
    """
    probs = _validate.prob_array(probs, "probs")
    return -jnp.sum(jax.scipy.special.xlogy(probs, probs), axis=-1)
