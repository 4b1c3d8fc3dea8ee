"""Calibration metrics over a whole batch: ECE, adaptive ECE, MCE, class-wise ECE and the
data of a reliability diagram.

Every function reduces over all leading batch axes of `probs` (`[..., K]`, class axis last)
and returns a scalar (or per-bin arrays). All of them are jnp code that works under
`jax.jit` with `num_bins` static (`jax.jit(ece, static_argnames="num_bins")`). With no
examples at all the metrics are NaN (0 / 0), never an error, so a fully padded evaluation
shard does not crash a run.

Eager calls validate values: every probability row on the simplex (finite, entries in
[0, 1], sum 1 within 1e-3; logits fail with "pass softmax(logits)") and labels in [0, K).
Under `jit` these checks cannot run (an out-of-range label there silently counts as wrong);
`cud_jax.losses.checked(fn, static_argnames="num_bins")` turns them into runtime errors.

Equal-width binning (`ece`, `mce`, `classwise_ece`, `reliability_diagram`) follows the
robustness_metrics convention: a value v goes to bin floor(num_bins * v), clipped to the last
bin, i.e. bins are [b / B, (b + 1) / B) and v = 1.0 lies in the last bin. For streaming
evaluation over many batches use `CalibrationAccumulator`, which gives the same numbers.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from cud_jax.losses import _validate
from cud_jax.metrics import _binning


def ece(probs, labels, num_bins: int = 15) -> jax.Array:
    """Top-label expected calibration error with equal-width bins (Guo et al., 2017).

    ECE = sum_b (n_b / N) * |acc_b - conf_b|, where the examples are binned by their
    confidence c = max_k p_k, acc_b is the fraction of the bin's examples whose argmax equals
    the label and conf_b their mean confidence. Empty bins contribute nothing.

    Bin edges: bin b holds b / B <= c < (b + 1) / B, except that c = 1.0 falls in the last bin
    (the robustness_metrics / `tf.histogram_fixed_width_bins` convention; the index is
    floor(B * c) evaluated in c's float precision). So with 15 bins c = 0.4 is in bin 6,
    [0.4, 0.4667), not bin 5.

    Args:
      probs: `[..., K]` probabilities.
      labels: `[...]` integer class indices.
      num_bins: number of equal-width bins B over [0, 1].

    Returns:
      Scalar in [0, 1]; NaN when there are no examples.
    """
    num_bins = _binning.check_num_bins(num_bins)
    probs, labels = _binning.validated(probs, labels)
    return _ece(probs, labels, num_bins)


def mce(probs, labels, num_bins: int = 15) -> jax.Array:
    """Maximum calibration error: max over NON-EMPTY equal-width bins of |acc_b - conf_b|.

    Same bins as `ece`. Returns NaN when there are no examples.
    """
    num_bins = _binning.check_num_bins(num_bins)
    probs, labels = _binning.validated(probs, labels)
    return _mce(probs, labels, num_bins)


def classwise_ece(probs, labels, num_bins: int = 15) -> jax.Array:
    """Class-wise ECE (Kull et al., 2019): the equal-width ECE of every class, averaged.

    For each class k, ALL N examples are binned by p_k (not only those predicting k), with the
    same bins as `ece`; in bin b, conf_kb is the mean of p_k and freq_kb the fraction of the
    bin's examples labelled k. Then

        classwise_ece = (1 / K) sum_k sum_b (n_kb / N) |freq_kb - conf_kb|.

    Every class counts equally, including classes absent from `labels`.

    Args:
      probs: `[..., K]` probabilities.
      labels: `[...]` integer class indices.
      num_bins: number of equal-width bins per class.
    """
    num_bins = _binning.check_num_bins(num_bins)
    probs, labels = _binning.validated(probs, labels)
    return _classwise_ece(probs, labels, num_bins)


def adaptive_ece(probs, labels, num_bins: int = 15) -> jax.Array:
    """Top-label ECE with equal-mass bins (adaptive ECE; Nguyen & O'Connor, 2015).

    Split rule, exactly: the N examples are sorted by ascending confidence c = max_k p_k, tied
    confidences ordered incorrect-before-correct; the example at sorted position i (0-based)
    goes to bin floor(i * B / N). Bin b thus holds positions ceil(b N / B) to
    ceil((b + 1) N / B) - 1, so bin sizes are floor(N / B) or ceil(N / B) with the larger bins
    spread evenly. Tied confidences may straddle a bin boundary; the tie order above makes the
    result depend only on the multiset of (confidence, correct) pairs, never on input order.
    With N < B some bins are empty and contribute nothing. Then, as for `ece`,
    sum_b (n_b / N) |acc_b - conf_b|.

    Needs every example at once: for many batches, collect confidences with `ScoreCollector`.
    Works under `jax.jit` (a sort of N values); positions use int32, so N * B < 2**31.

    Args:
      probs: `[..., K]` probabilities.
      labels: `[...]` integer class indices.
      num_bins: number of equal-mass bins B.
    """
    num_bins = _binning.check_num_bins(num_bins)
    probs, labels = _binning.validated(probs, labels)
    return _adaptive_ece(*_binning.top_label(probs, labels), num_bins)


def adaptive_ece_from_confidence(confidence, correct, num_bins: int = 15) -> jax.Array:
    """`adaptive_ece` from top-label confidences and 0/1 (or bool) correctness, any shape.

    For callers that kept only (confidence, correct) per example, e.g. `ScoreCollector`.
    """
    num_bins = _binning.check_num_bins(num_bins)
    confidence = _validate.float_array(confidence, "confidence")
    correct = jnp.asarray(correct)
    _validate.same_shape(confidence, correct, "confidence", "correct")
    return _adaptive_ece(confidence, correct, num_bins)


@functools.partial(jax.jit, static_argnames="num_bins")
def _adaptive_ece(confidence: jax.Array, correct: jax.Array, num_bins: int) -> jax.Array:
    confidence = confidence.reshape(-1)
    correct = correct.reshape(-1).astype(jnp.int32)
    num = confidence.shape[0]
    # Sort by (confidence, correct): ties in confidence are ordered by correctness, so the
    # split cannot depend on the order the examples arrived in.
    confidence, correct = jax.lax.sort((confidence, correct), num_keys=2)
    position_bin = (jnp.arange(num, dtype=jnp.int32) * num_bins) // max(num, 1)
    in_bin = position_bin[:, None] == jnp.arange(num_bins)
    conf_sum = jnp.sum(jnp.where(in_bin, confidence[:, None], 0.0), axis=0)
    hits = jnp.sum(in_bin & (correct[:, None] > 0), axis=0, dtype=jnp.int32)
    count = jnp.sum(in_bin, axis=0, dtype=jnp.int32)
    return _binning.ece_from_sums(count, conf_sum, hits)


class ReliabilityDiagram(NamedTuple):
    """Per-bin data of a reliability diagram (equal-width bins, the `ece` convention).

    Attributes:
      edges: `[B + 1]` bin edges 0, 1/B, ..., 1.
      confidence: `[B]` mean top-label confidence of each bin; NaN for an empty bin.
      accuracy: `[B]` fraction of each bin's examples whose argmax equals the label; NaN for
        an empty bin (NaN rather than 0 so a plot skips it instead of drawing a false point).
      count: `[B]` int32 number of examples in each bin.
    """

    edges: jax.Array
    confidence: jax.Array
    accuracy: jax.Array
    count: jax.Array


def bin_edges(num_bins: int) -> np.ndarray:
    """The equal-width edges b / num_bins, b = 0..num_bins, as float32 numpy."""
    return (np.arange(num_bins + 1) / num_bins).astype(np.float32)


def reliability_diagram(probs, labels, num_bins: int = 15) -> ReliabilityDiagram:
    """Per-bin mean confidence, accuracy and count for a reliability diagram.

    The bins are those of `ece`, and ece == sum(count * |accuracy - confidence|) / sum(count)
    over non-empty bins. Works under `jax.jit` with `num_bins` static.
    """
    num_bins = _binning.check_num_bins(num_bins)
    probs, labels = _binning.validated(probs, labels)
    return _reliability_diagram(probs, labels, num_bins)


# Jitted cores. The public functions validate eagerly (label ranges need concrete values),
# then call these: an eager call compiles once per shape instead of dispatching dozens of
# small ops one by one, and under an outer `jit` they simply inline.

@functools.partial(jax.jit, static_argnames="num_bins")
def _ece(probs, labels, num_bins):
    return _binning.ece_from_sums(*_binning.top_label_stats(probs, labels, num_bins))


@functools.partial(jax.jit, static_argnames="num_bins")
def _mce(probs, labels, num_bins):
    return _binning.mce_from_sums(*_binning.top_label_stats(probs, labels, num_bins))


@functools.partial(jax.jit, static_argnames="num_bins")
def _classwise_ece(probs, labels, num_bins):
    return _binning.classwise_ece_from_sums(*_binning.classwise_stats(probs, labels, num_bins))


@functools.partial(jax.jit, static_argnames="num_bins")
def _reliability_diagram(probs, labels, num_bins):
    stats = _binning.top_label_stats(probs, labels, num_bins)
    confidence, accuracy = _binning.reliability_from_sums(*stats)
    return ReliabilityDiagram(edges=jnp.asarray(bin_edges(num_bins)), confidence=confidence,
                              accuracy=accuracy, count=stats.count)
