"""Per-example classification metrics: accuracy, negative log-likelihood, Brier score.

Every function takes a `[..., K]` array with the class axis last and any leading batch shape,
returns one value per example (the caller reduces, e.g. with a mask for padded batches), runs
in float32 or wider and works under `jax.jit` and `jax.vmap`.

Eager calls check values: labels in [0, K), and for `nll` / `brier` probability rows on the
simplex (logits fail with "pass softmax(logits)"). Under `jit` those value checks cannot
run (XLA cannot raise without a device round trip); `cud_jax.losses.checked` makes them
runtime errors when wanted.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from cud_jax.losses import _validate

# NLL floor: the smallest normal float32. A probability that is exactly 0 (or a float32
# denormal) is read as this value, so `nll` is at most -log(NLL_FLOOR) ~= 87.34 instead of
# +inf, and a mean over a data set stays finite. Every probability a float32 model can
# represent as a normal number is left untouched, so honest small probabilities are not
# clipped; the same constant is used for float64 inputs so results do not depend on dtype.
NLL_FLOOR = float(np.finfo(np.float32).tiny)


def predictions(probs_or_logits: jax.Array) -> jax.Array:
    """argmax over the class axis; ties go to the lowest class index (jnp.argmax)."""
    return jnp.argmax(probs_or_logits, axis=-1).astype(jnp.int32)


def accuracy(probs_or_logits, labels) -> jax.Array:
    """1.0 where argmax over classes equals the label, else 0.0, per example.

    Args:
      probs_or_logits: `[..., K]` probabilities or logits (argmax is the same for both).
      labels: `[...]` integer class indices.

    Returns:
      `[...]` float32 array of 0/1 values. Tied maxima predict the lowest class index.
    """
    scores = _validate.class_array(probs_or_logits, "probs_or_logits")
    labels = _validate.label_array(labels, scores)
    return _accuracy(scores, labels)


def nll(probs, labels, *, floor: float = NLL_FLOOR) -> jax.Array:
    """-log p_label, per example, with p_label clipped below at `floor`.

    Args:
      probs: `[..., K]` probabilities (not logits; use `losses.cross_entropy` for logits).
      labels: `[...]` integer class indices.
      floor: smallest probability used inside the log. The default, the smallest normal
        float32 (~1.18e-38), turns an exact zero into a large finite NLL of ~87.34 rather
        than +inf, and changes no probability a float32 model represents as a normal number.

    Returns:
      `[...]` negative log-likelihoods in nats.
    """
    if not floor > 0:
        raise ValueError(f"`floor` must be > 0, got {floor}.")
    probs = _validate.prob_array(probs, "probs")
    labels = _validate.label_array(labels, probs)
    return _nll(probs, labels, floor)


def nll_from_logits(logits, labels) -> jax.Array:
    """-log softmax(logits)_label, per example, computed with log-softmax in float32.

    Exact where `nll(softmax(logits))` is not: a float32 probability underflows to 0 below
    ~1e-38, so `nll` of it stops at ~87.34 nats (logits `[120, 0, 0]`, label 1: this gives
    120, `nll` of the probabilities 87.34). Reports compute NLL with this.

    Args:
      logits: `[..., K]` unnormalised scores (divide by a temperature first to scale them).
      labels: `[...]` integer class indices.

    Returns:
      `[...]` negative log-likelihoods in nats.
    """
    logits = _validate.class_array(logits, "logits")
    labels = _validate.label_array(labels, logits)
    return _nll_from_logits(logits, labels)


def brier(probs, labels) -> jax.Array:
    """Brier score sum_k (p_k - [k == label])**2, per example, SUMMED over classes.

    The sum (not the mean over classes) is the multi-class Brier score of Brier (1950) and
    of most calibration papers; it lies in [0, 2] for probability vectors.

    Args:
      probs: `[..., K]` probabilities.
      labels: `[...]` integer class indices.
    """
    probs = _validate.prob_array(probs, "probs")
    labels = _validate.label_array(labels, probs)
    return _brier(probs, labels)


# Jitted cores. The public functions validate eagerly (the label-range check needs concrete
# values), then call these, so an eager call compiles once per shape instead of dispatching
# op by op; under an outer `jit` they inline.

@jax.jit
def _accuracy(scores, labels):
    return (predictions(scores) == labels).astype(jnp.float32)


@jax.jit
def _nll(probs, labels, floor):
    return -jnp.log(jnp.maximum(_validate.take_label(probs, labels), floor))


@jax.jit
def _nll_from_logits(logits, labels):
    log_probs = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    return -_validate.take_label(log_probs, labels)


@jax.jit
def _brier(probs, labels):
    one_hot = jax.nn.one_hot(labels, probs.shape[-1], dtype=probs.dtype)
    return jnp.sum(jnp.square(probs - one_hot), axis=-1)
