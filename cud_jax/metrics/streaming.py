"""Streaming evaluation: metrics over many batches equal to the metrics of one big batch.

Two tools, for the two kinds of metric:

* `CalibrationAccumulator`: an immutable pytree of sums (per-bin counts, confidence sums,
  hits, NLL and Brier sums). `update` is pure and jit-able (it returns a new accumulator, so
  it can be a `lax.scan` carry or sit inside a jitted eval step), takes a `mask` for padded
  last batches, and `result()` turns the sums into accuracy, NLL, Brier, ECE, MCE and
  class-wise ECE with the same formulas as the one-shot functions. Counts are int32, hence
  exact; float sums are carried with compensated (two-sum) addition, so the error does not
  grow with the number of batches and streaming matches one batch to float32 rounding.

* `ScoreCollector`: a host-side buffer that keeps per-example scores (respecting masks) and
  hands them, concatenated, to the metrics that need every score at once: adaptive ECE,
  AUROC, AUPR, FPR@95%TPR.

Typical evaluation loop::

    acc = CalibrationAccumulator.empty(num_classes=100)
    update = jax.jit(CalibrationAccumulator.update)
    scores = ScoreCollector()
    for batch in batches:                       # the last batch may be padded
        probs = predict(batch["image"])
        acc = update(acc, probs, batch["label"], batch["mask"])
        scores.add_predictions(probs, batch["label"], mask=batch["mask"])
    report = acc.result() | {"adaptive_ece": scores.adaptive_ece()}
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from cud_jax.losses import _validate
from cud_jax.metrics import _binning
from cud_jax.metrics.calibration import ReliabilityDiagram, adaptive_ece_from_confidence, bin_edges
from cud_jax.metrics.classification import NLL_FLOOR
from cud_jax.metrics.detection import _max_prob, _negative_entropy, misclassification_auroc


class CompensatedSum(NamedTuple):
    """A float sum carried as hi + lo, where lo collects the rounding error of each addition.

    With plain float32 accumulation the error grows with the number of batches (each batch
    sum added to a running total near 1e6 is rounded by up to 0.03); two-sum keeps the exact
    rounding error of every addition in `lo`, so hi + lo stays accurate to a few ulps.
    """

    hi: jax.Array
    lo: jax.Array

    @classmethod
    def zeros(cls, shape, dtype) -> CompensatedSum:
        return cls(jnp.zeros(shape, dtype), jnp.zeros(shape, dtype))

    def add(self, x) -> CompensatedSum:
        hi, err = _two_sum(self.hi, jnp.asarray(x, self.hi.dtype))
        return CompensatedSum(hi, self.lo + err)

    def merge(self, other: CompensatedSum) -> CompensatedSum:
        hi, err = _two_sum(self.hi, other.hi)
        return CompensatedSum(hi, self.lo + other.lo + err)

    def value(self) -> np.ndarray:
        """hi + lo in float64 on the host."""
        return np.asarray(self.hi, np.float64) + np.asarray(self.lo, np.float64)


def _two_sum(a, b):
    """Knuth's two-sum: s = fl(a + b) and the exact error a + b - s (any magnitudes)."""
    s = a + b
    b_virtual = s - a
    a_virtual = s - b_virtual
    return s, (a - a_virtual) + (b - b_virtual)


def _check_mask(mask, batch_shape: tuple[int, ...]) -> jax.Array:
    mask = jnp.asarray(mask)
    if mask.shape != batch_shape:
        raise ValueError(
            f"`mask` has shape {mask.shape} but must equal the batch shape of `labels`, "
            f"{batch_shape} (one entry per example; False/0 drops a padded example)."
        )
    return mask.astype(bool)


def _check_labels(labels, probs: jax.Array, mask: jax.Array | None) -> jax.Array:
    """Integer labels of the right shape; the range is checked on unmasked rows only, so
    padded rows may carry any placeholder label such as -1."""
    return _validate.label_array(labels, probs, mask=mask)


@dataclasses.dataclass(frozen=True)
class CalibrationAccumulator:
    """Sums for accuracy, NLL, Brier, ECE, MCE, class-wise ECE and the reliability diagram.

    Build with `empty`, fold batches in with `update` (pure, jit-able), combine shards with
    `merge`, read with `result()` / `reliability_diagram()` on the host. A pytree: the two
    sizes are static metadata, every other field is an array leaf. Counts are int32, so at
    most 2**31 - 1 examples.

    Attributes:
      num_classes: K.
      num_bins: B, the number of equal-width bins (the `ece` convention).
      bin_count, bin_correct: `[B]` int32 examples / correct examples per top-label bin.
      bin_conf_sum: `[B]` top-label confidence sums.
      nll_sum, brier_sum: scalar sums of the per-example NLL and Brier score.
      class_bin_count, class_bin_hits: `[K, B]` int32 examples whose p_k is in bin b / of
        those, examples labelled k.
      class_bin_prob_sum: `[K, B]` sums of p_k.
    """

    num_classes: int
    num_bins: int
    bin_count: jax.Array
    bin_correct: jax.Array
    bin_conf_sum: CompensatedSum
    nll_sum: CompensatedSum
    brier_sum: CompensatedSum
    class_bin_count: jax.Array
    class_bin_hits: jax.Array
    class_bin_prob_sum: CompensatedSum

    @classmethod
    def empty(cls, num_classes: int, num_bins: int = 15, *, dtype=jnp.float32
              ) -> CalibrationAccumulator:
        """An accumulator with every sum at zero; float sums are kept in `dtype`."""
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(f"`num_classes` must be a positive int, got {num_classes!r}.")
        num_bins = _binning.check_num_bins(num_bins)
        if not jnp.issubdtype(dtype, jnp.floating):
            raise TypeError(f"`dtype` must be a float type, got {dtype}.")
        k, b = num_classes, num_bins
        return cls(
            num_classes=k, num_bins=b,
            bin_count=jnp.zeros((b,), jnp.int32),
            bin_correct=jnp.zeros((b,), jnp.int32),
            bin_conf_sum=CompensatedSum.zeros((b,), dtype),
            nll_sum=CompensatedSum.zeros((), dtype),
            brier_sum=CompensatedSum.zeros((), dtype),
            class_bin_count=jnp.zeros((k, b), jnp.int32),
            class_bin_hits=jnp.zeros((k, b), jnp.int32),
            class_bin_prob_sum=CompensatedSum.zeros((k, b), dtype),
        )

    @property
    def count(self) -> jax.Array:
        """Number of examples folded in so far (int32 scalar)."""
        return jnp.sum(self.bin_count)

    def update(self, probs, labels, mask=None) -> CalibrationAccumulator:
        """Returns a new accumulator with one batch added; `self` is unchanged.

        Args:
          probs: `[..., K]` probabilities with K == num_classes, any leading batch shape.
          labels: `[...]` integer class indices.
          mask: optional `[...]` array; examples where it is False/0 are ignored entirely
            (their probabilities and labels may be anything, e.g. zeros and -1 padding).

        Pure and jit-able: `jax.jit(CalibrationAccumulator.update)` works (with `mask=None`
        or an array). The value checks (labels in range, unmasked probability rows on the
        simplex) run only on concrete, unjitted inputs.
        """
        raw, probs = probs, _validate.class_array(probs, "probs")
        if probs.shape[-1] != self.num_classes:
            raise ValueError(
                f"`probs` has {probs.shape[-1]} classes on its last axis but this accumulator "
                f"was built for num_classes={self.num_classes}."
            )
        if mask is not None:
            mask = _check_mask(mask, probs.shape[:-1])
        _validate.prob_array(raw, "probs", mask=mask)
        labels = _check_labels(labels, probs, mask)
        return _accumulate(self, probs, labels, mask)

    def merge(self, other: CalibrationAccumulator) -> CalibrationAccumulator:
        """The accumulator of both data sets (e.g. shards from several hosts)."""
        if (self.num_classes, self.num_bins) != (other.num_classes, other.num_bins):
            raise ValueError(
                "Cannot merge accumulators of different sizes: (num_classes, num_bins) = "
                f"{(self.num_classes, self.num_bins)} vs {(other.num_classes, other.num_bins)}."
            )
        return _merge(self, other)

    def result(self) -> dict[str, float]:
        """Host-side metrics as Python floats (NaN for each mean when no example was added).

        Keys: count, accuracy, nll, brier (mean of the per-example sum over classes), ece,
        mce, classwise_ece; each equals the one-shot function on the concatenated batches.
        """
        count = np.asarray(self.bin_count, np.int64)
        correct = np.asarray(self.bin_correct, np.int64)
        conf_sum = self.bin_conf_sum.value()
        total = int(count.sum())
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = (lambda s: float(s / total)) if total else (lambda s: float("nan"))
            return {
                "count": total,
                "accuracy": mean(correct.sum()),
                "nll": mean(self.nll_sum.value()),
                "brier": mean(self.brier_sum.value()),
                "ece": float(_binning.ece_from_sums(count, conf_sum, correct, xp=np)),
                "mce": float(_binning.mce_from_sums(count, conf_sum, correct, xp=np)),
                "classwise_ece": float(_binning.classwise_ece_from_sums(
                    np.asarray(self.class_bin_count, np.int64),
                    self.class_bin_prob_sum.value(),
                    np.asarray(self.class_bin_hits, np.int64), xp=np)),
            }

    def reliability_diagram(self) -> ReliabilityDiagram:
        """The `reliability_diagram` of everything added so far, as float64 numpy arrays."""
        count = np.asarray(self.bin_count, np.int64)
        confidence, accuracy = _binning.reliability_from_sums(
            count, self.bin_conf_sum.value(), np.asarray(self.bin_correct, np.int64), xp=np)
        return ReliabilityDiagram(edges=bin_edges(self.num_bins).astype(np.float64),
                                  confidence=confidence, accuracy=accuracy, count=count)


jax.tree_util.register_dataclass(
    CalibrationAccumulator,
    data_fields=["bin_count", "bin_correct", "bin_conf_sum", "nll_sum", "brier_sum",
                 "class_bin_count", "class_bin_hits", "class_bin_prob_sum"],
    meta_fields=["num_classes", "num_bins"],
)


# Jitted cores: `update` and `merge` validate eagerly (label ranges need concrete values),
# then call these, so eager use compiles once per shape instead of dispatching op by op;
# inside an outer `jit` or `scan` they inline.

@jax.jit
def _accumulate(acc: CalibrationAccumulator, probs: jax.Array, labels: jax.Array,
                mask: jax.Array | None) -> CalibrationAccumulator:
    if mask is None:
        mask = jnp.ones(labels.shape, bool)
    # Neutralise padded rows so garbage there (NaN, -1 labels) cannot leak into any sum;
    # `where` does not propagate NaN from the branch it does not pick.
    probs = jnp.where(mask[..., None], probs, 0.0)
    labels = jnp.where(mask, jnp.clip(labels, 0, acc.num_classes - 1), 0)

    top = _binning.top_label_stats(probs, labels, acc.num_bins, mask)
    classwise = _binning.classwise_stats(probs, labels, acc.num_bins, mask)
    nll = -jnp.log(jnp.maximum(_validate.take_label(probs, labels), NLL_FLOOR))
    one_hot = jax.nn.one_hot(labels, acc.num_classes, dtype=probs.dtype)
    brier = jnp.sum(jnp.square(probs - one_hot), axis=-1)
    return dataclasses.replace(
        acc,
        bin_count=acc.bin_count + top.count,
        bin_correct=acc.bin_correct + top.correct,
        bin_conf_sum=acc.bin_conf_sum.add(top.conf_sum),
        nll_sum=acc.nll_sum.add(jnp.sum(jnp.where(mask, nll, 0.0))),
        brier_sum=acc.brier_sum.add(jnp.sum(jnp.where(mask, brier, 0.0))),
        class_bin_count=acc.class_bin_count + classwise.count,
        class_bin_hits=acc.class_bin_hits + classwise.hits,
        class_bin_prob_sum=acc.class_bin_prob_sum.add(classwise.prob_sum),
    )


@jax.jit
def _merge(a: CalibrationAccumulator, b: CalibrationAccumulator) -> CalibrationAccumulator:
    return dataclasses.replace(
        a,
        bin_count=a.bin_count + b.bin_count,
        bin_correct=a.bin_correct + b.bin_correct,
        bin_conf_sum=a.bin_conf_sum.merge(b.bin_conf_sum),
        nll_sum=a.nll_sum.merge(b.nll_sum),
        brier_sum=a.brier_sum.merge(b.brier_sum),
        class_bin_count=a.class_bin_count + b.class_bin_count,
        class_bin_hits=a.class_bin_hits + b.class_bin_hits,
        class_bin_prob_sum=a.class_bin_prob_sum.merge(b.class_bin_prob_sum),
    )


class ScoreCollector:
    """Host-side buffer of per-example scores for metrics that need all of them at once.

    Mutable and NOT a pytree: call it outside `jit`, on the outputs of a jitted step. Each
    `add` appends one batch of named per-example arrays (same shape; leading axes are
    flattened), dropping examples where `mask` is False, and copies them to host NumPy.
    Every `add` must name the same arrays. Read a column, concatenated over batches, with
    `collector["name"]`.

        col_in, col_out = ScoreCollector(), ScoreCollector()
        ...  # col_in.add_predictions(probs_in, labels, mask=m); col_out.add_predictions(probs_ood)
        ood_metrics(col_in["max_softmax_prob"], col_out["max_softmax_prob"])
    """

    def __init__(self):
        self._chunks: dict[str, list[np.ndarray]] = {}
        self._num = 0

    def add(self, mask=None, **scores) -> None:
        """Appends one batch of per-example arrays, e.g. `add(msp=s, correct=c, mask=m)`."""
        if not scores:
            raise ValueError("`add` needs at least one named score array.")
        arrays = {name: np.asarray(value) for name, value in scores.items()}
        if self._chunks and set(arrays) != set(self._chunks):
            raise ValueError(
                f"Every `add` must name the same arrays: collected {sorted(self._chunks)}, "
                f"got {sorted(arrays)}."
            )
        shape = next(iter(arrays.values())).shape
        for name, value in arrays.items():
            if value.shape != shape:
                raise ValueError(
                    f"Score `{name}` has shape {value.shape}, but the others in this batch "
                    f"have {shape}; pass one value per example."
                )
        keep = np.ones(shape, bool) if mask is None else np.asarray(mask)
        if keep.shape != shape:
            raise ValueError(f"`mask` has shape {keep.shape}; the scores have shape {shape}.")
        keep = keep.astype(bool)
        for name, value in arrays.items():
            self._chunks.setdefault(name, []).append(value[keep])
        self._num += int(keep.sum())

    def add_predictions(self, probs, labels=None, mask=None) -> None:
        """Adds `max_softmax_prob` and `negative_entropy` and, given labels, `correct`.

        Unmasked probability rows must lie on the simplex (checked on concrete inputs).
        """
        raw, probs = probs, _validate.class_array(probs, "probs")
        keep = None if mask is None else _check_mask(mask, probs.shape[:-1])
        probs = _validate.prob_array(raw, "probs", mask=keep)
        scores = {"max_softmax_prob": _max_prob(probs),
                  "negative_entropy": _negative_entropy(probs)}
        if labels is not None:
            labels = _check_labels(labels, probs, keep)
            scores["correct"] = jnp.argmax(probs, axis=-1) == labels
        self.add(mask=mask, **scores)

    def __getitem__(self, name: str) -> np.ndarray:
        if name not in self._chunks:
            raise KeyError(f"No score named {name!r}; collected: {sorted(self._chunks)}.")
        return np.concatenate(self._chunks[name])

    def __len__(self) -> int:
        """Number of (unmasked) examples collected."""
        return self._num

    @property
    def names(self) -> list[str]:
        return sorted(self._chunks)

    def adaptive_ece(self, num_bins: int = 15) -> float:
        """`adaptive_ece` over everything collected (needs `add_predictions` with labels)."""
        return float(adaptive_ece_from_confidence(self["max_softmax_prob"], self["correct"],
                                                  num_bins))

    def misclassification_auroc(self, score: str = "max_softmax_prob") -> float:
        """`misclassification_auroc` of a collected score against the `correct` column."""
        return misclassification_auroc(self[score], self["correct"])
