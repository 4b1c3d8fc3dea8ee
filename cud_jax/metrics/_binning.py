"""Binned calibration statistics shared by the one-shot ECE family and the accumulators.

Both paths reduce a batch to the same per-bin sums (counts, confidence sums, hit counts) and
turn sums into metrics with the same formulas, so streaming evaluation and one big batch agree
up to float summation order. Counts are integers, so they agree exactly.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from cud_jax.losses import _validate
from cud_jax.metrics.classification import predictions


def check_num_bins(num_bins) -> int:
    """num_bins must be a positive Python int: it fixes array shapes, so it is static."""
    if isinstance(num_bins, bool) or not isinstance(num_bins, int) or num_bins < 1:
        raise ValueError(
            f"`num_bins` must be a positive Python int, got {num_bins!r} (under `jax.jit` "
            "mark it static: static_argnames='num_bins')."
        )
    return num_bins


def equal_width_bin(values: jax.Array, num_bins: int) -> jax.Array:
    """Bin index floor(num_bins * v), clipped to [0, num_bins - 1], as int32.

    The product is evaluated in the dtype of `values` (float32 unless x64 inputs), which is
    exactly what `tf.histogram_fixed_width_bins(v, [0, 1], num_bins)` computes, the binning
    that robustness_metrics' ECE uses: bins are [b / B, (b + 1) / B) and v = 1.0 goes to the
    last bin. A value within one rounding error of an edge can fall on either side; with 15
    bins every float32 edge value b / 15 (0.4 included) lands in bin b (tested).
    """
    index = jnp.floor(values * num_bins)
    # Clip in float first: casting an out-of-range float to int is implementation-defined.
    index = jnp.clip(index, 0, num_bins - 1)
    return jnp.where(jnp.isnan(index), 0, index).astype(jnp.int32)


class TopLabelStats(NamedTuple):
    """Per-bin sums for top-label calibration (equal-width bins over the max probability)."""

    count: jax.Array     # [B] int32: examples in the bin
    conf_sum: jax.Array  # [B] float: sum of top-label confidences in the bin
    correct: jax.Array   # [B] int32: examples in the bin whose argmax equals the label


class ClasswiseStats(NamedTuple):
    """Per-(class, bin) sums for class-wise calibration (equal-width bins over every p_k)."""

    count: jax.Array     # [K, B] int32: examples whose p_k falls in bin b
    prob_sum: jax.Array  # [K, B] float: sum of those p_k
    hits: jax.Array      # [K, B] int32: of those, examples labelled k


def top_label(probs: jax.Array, labels: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(confidence = max_k p_k, correct = argmax == label) per example."""
    return jnp.max(probs, axis=-1), predictions(probs) == labels


def _flat(x: jax.Array, trailing: int) -> jax.Array:
    """Merges every leading batch axis into one, keeping `trailing` axes."""
    return x.reshape((-1,) + x.shape[x.ndim - trailing:])


def top_label_stats(probs: jax.Array, labels: jax.Array, num_bins: int,
                    weights: jax.Array | None = None) -> TopLabelStats:
    """Bins a batch by top-label confidence; `weights` (bool, `[...]`) drops examples."""
    confidence, correct = top_label(probs, labels)
    in_bin = equal_width_bin(confidence, num_bins)[..., None] == jnp.arange(num_bins)
    if weights is not None:
        in_bin = in_bin & weights[..., None]
    in_bin = _flat(in_bin, 1)
    confidence = _flat(confidence, 0)[:, None]
    correct = _flat(correct, 0)[:, None]
    return TopLabelStats(
        count=jnp.sum(in_bin, axis=0, dtype=jnp.int32),
        conf_sum=jnp.sum(jnp.where(in_bin, confidence, 0.0), axis=0),
        correct=jnp.sum(in_bin & correct, axis=0, dtype=jnp.int32),
    )


def classwise_stats(probs: jax.Array, labels: jax.Array, num_bins: int,
                    weights: jax.Array | None = None) -> ClasswiseStats:
    """Bins every class probability p_k of a batch; `weights` (bool, `[...]`) drops examples."""
    num_classes = probs.shape[-1]
    # [..., K, B]; XLA fuses the comparison into the reductions below, so this is not
    # materialised at full size.
    in_bin = equal_width_bin(probs, num_bins)[..., None] == jnp.arange(num_bins)
    if weights is not None:
        in_bin = in_bin & weights[..., None, None]
    is_label = jax.nn.one_hot(labels, num_classes, dtype=bool)
    in_bin = _flat(in_bin, 2)
    probs = _flat(probs, 1)[..., None]
    is_label = _flat(is_label, 1)[..., None]
    return ClasswiseStats(
        count=jnp.sum(in_bin, axis=0, dtype=jnp.int32),
        prob_sum=jnp.sum(jnp.where(in_bin, probs, 0.0), axis=0),
        hits=jnp.sum(in_bin & is_label, axis=0, dtype=jnp.int32),
    )


# The formulas below take the sums as arrays of any float type (jnp in-graph, or float64
# numpy on the host for accumulator results) and use only operations both libraries share.

def ece_from_sums(count, conf_sum, correct, xp=jnp):
    """sum_b (n_b / N) |acc_b - conf_b| = sum_b |correct_b - conf_sum_b| / N; NaN if N = 0."""
    total = xp.sum(count)
    return xp.sum(xp.abs(correct - conf_sum), axis=-1) / total


def mce_from_sums(count, conf_sum, correct, xp=jnp):
    """max over non-empty bins of |acc_b - conf_b|; NaN when every bin is empty."""
    nonempty = count > 0
    gap = xp.abs(correct - conf_sum) / xp.where(nonempty, count, 1)
    worst = xp.max(xp.where(nonempty, gap, -1.0), axis=-1)
    return xp.where(worst < 0, xp.nan, worst)


def reliability_from_sums(count, conf_sum, correct, xp=jnp):
    """(mean confidence, accuracy) per bin, NaN for empty bins."""
    nonempty = count > 0
    safe = xp.where(nonempty, count, 1)
    return (xp.where(nonempty, conf_sum / safe, xp.nan),
            xp.where(nonempty, correct / safe, xp.nan))


def classwise_ece_from_sums(count, prob_sum, hits, xp=jnp):
    """mean over classes k of sum_b |hits_kb - prob_sum_kb| / N."""
    total = xp.sum(count[0])  # every example falls in exactly one bin for every class
    return xp.mean(xp.sum(xp.abs(hits - prob_sum), axis=-1)) / total


def validated(probs, labels):
    """(probs, labels) checked and converted: `[..., K]` float, `[...]` int32.

    On eager calls the rows must lie on the simplex and the labels in [0, K); under `jit`
    only shapes and dtypes are checked (see `cud_jax.losses.checked` for runtime checks).
    """
    probs = _validate.prob_array(probs, "probs")
    labels = _validate.label_array(labels, probs)
    return probs, labels
