"""Paired comparison of two methods on the same test examples, with bootstrap intervals.

    diff = metrics.paired_bootstrap(probs_cud, probs_kd, labels, metric="accuracy")
    diff.pooled.format()      # '+0.0123 [-0.0040, +0.0290]'  (CUD minus KD, 95% interval)
    [s.format() for s in diff.per_seed]

"CUD equals KD" and "CUD beats KD" are statements about a difference measured on one finite
test set; the interval here says how much that difference would move if the test set were
drawn again. Both methods are scored on the SAME examples, so the resampling is paired: one
bootstrap draw of example indices is applied to both methods (and, when pooling, to every
seed), which cancels the per-example difficulty both methods share and gives much tighter
intervals than comparing two separate intervals.

Host NumPy (the bootstrap's random draws and sums are cheap and exact there); the metric
definitions are those of `cud_jax.metrics` (same NLL floor, Brier summed over classes, the
`ece` binning), and the unresampled values equal those functions' results.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import numpy as np

from cud_jax.metrics import _binning
from cud_jax.metrics.calibration import adaptive_ece_from_confidence
from cud_jax.metrics.classification import NLL_FLOOR

#: Metrics `paired_bootstrap` supports. Accuracy: higher is better; the others: lower.
METRICS = ("accuracy", "nll", "brier", "ece", "adaptive_ece")
#: Metrics that are a mean of per-example values (the others need the whole resampled set).
PER_EXAMPLE = ("accuracy", "nll", "brier")


@dataclasses.dataclass(frozen=True)
class PairedInterval:
    """metric(A) - metric(B) on one test set, with a bootstrap percentile interval.

    Attributes:
      metric: one of `METRICS`.
      difference: the difference on the full test set (pooled: the mean over seeds).
      low, high: the interval's ends (percentiles (1 -+ confidence) / 2 of the bootstrap).
      confidence: the interval's nominal coverage, e.g. 0.95.
      num_examples: test examples N.
      num_resamples: bootstrap draws R.
      num_seeds: seeds averaged (1 for a per-seed interval).
    """

    metric: str
    difference: float
    low: float
    high: float
    confidence: float
    num_examples: int
    num_resamples: int
    num_seeds: int = 1

    @property
    def excludes_zero(self) -> bool:
        """True when the interval lies strictly on one side of 0 ("the methods differ")."""
        return self.low > 0 or self.high < 0

    def format(self, digits: int = 4) -> str:
        """'+0.0123 [-0.0040, +0.0290]' (the difference and its interval)."""
        return (f"{self.difference:+.{digits}f} [{self.low:+.{digits}f}, "
                f"{self.high:+.{digits}f}]")

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "excludes_zero": self.excludes_zero}


@dataclasses.dataclass(frozen=True)
class PairedResult:
    """Per-seed intervals and the interval pooled over seeds (see `paired_bootstrap`)."""

    per_seed: tuple[PairedInterval, ...]
    pooled: PairedInterval

    def to_dict(self) -> dict[str, Any]:
        return {"per_seed": [s.to_dict() for s in self.per_seed],
                "pooled": self.pooled.to_dict()}


def _as_seeds(probs: Any, name: str) -> np.ndarray:
    probs = np.asarray(probs, dtype=np.float64)
    if probs.ndim == 2:
        probs = probs[None]
    if probs.ndim != 3:
        raise ValueError(f"`{name}` must be probabilities [N, K] or [seeds, N, K], got shape "
                         f"{probs.shape}.")
    return probs


def _per_example(probs: np.ndarray, labels: np.ndarray, metric: str) -> np.ndarray:
    """[S, N] values whose resampled sums give the metric (see `_statistic`)."""
    picked = np.take_along_axis(probs, labels[None, :, None], axis=-1)[..., 0]
    if metric == "nll":
        return -np.log(np.maximum(picked, NLL_FLOOR))
    if metric == "brier":
        return np.sum(probs ** 2, axis=-1) - 2 * picked + 1.0
    correct = (np.argmax(probs, axis=-1) == labels).astype(np.float64)
    if metric == "accuracy":
        return correct
    return np.max(probs, axis=-1) - correct  # ece: confidence - correctness, binned below


def _bins(probs: np.ndarray, num_bins: int) -> np.ndarray:
    """[S, N] equal-width bin of each top-label confidence, exactly as `metrics.ece` bins
    (the float32 rule of `_binning.equal_width_bin`)."""
    confidence = np.max(probs, axis=-1).astype(np.float32)
    return np.asarray(_binning.equal_width_bin(confidence, num_bins))


def _statistic(values: np.ndarray, bins: np.ndarray | None, weights: np.ndarray,
               metric: str, num_bins: int) -> np.ndarray:
    """The metric of each seed under each example weighting: [S, R].

    `weights` [R, N] are bootstrap counts (each row sums to N; all ones = the test set).
    Per-example metrics are weighted means; ECE = sum_b |sum_{i in b} w_i (conf_i -
    correct_i)| / N, which equals `metrics.ece` (sum_b n_b / N |acc_b - conf_b|).
    """
    total = weights.sum(axis=1)  # [R]
    if metric in PER_EXAMPLE:
        return values @ weights.T / total
    out = np.empty((values.shape[0], weights.shape[0]))
    for s in range(values.shape[0]):
        one_hot = bins[s][:, None] == np.arange(num_bins)  # [N, B]
        gaps = weights @ (values[s][:, None] * one_hot)  # [R, B]
        out[s] = np.abs(gaps).sum(axis=1) / total
    return out


def _adaptive_statistic(probs: np.ndarray, labels: np.ndarray, indices: np.ndarray,
                        num_bins: int) -> np.ndarray:
    """Adaptive ECE of each seed on each resampled index set: [S, R]. Equal-mass bins
    depend on the resampled confidences, so each draw is binned afresh."""
    confidence = np.max(probs, axis=-1).astype(np.float32)
    correct = np.argmax(probs, axis=-1) == labels
    fn = jax.vmap(lambda c, k: adaptive_ece_from_confidence(c, k, num_bins))
    return np.stack([np.asarray(fn(confidence[s][indices], correct[s][indices]))
                     for s in range(probs.shape[0])])


def paired_bootstrap(probs_a, probs_b, labels, *, metric: str = "accuracy",
                     num_resamples: int = 2000, confidence: float = 0.95,
                     num_bins: int = 15, seed: int = 0, chunk: int = 250) -> PairedResult:
    """Paired difference metric(A) - metric(B) with a bootstrap interval over test examples.

    Per seed s: the difference d_s = m(A_s) - m(B_s) on the whole test set, and a percentile
    interval from `num_resamples` draws of N test examples with replacement; each draw is
    applied to A_s and B_s alike (paired), and m is recomputed on the draw (for ECE and
    adaptive ECE the whole metric, binning included, not a mean of per-example terms).

    Pooling rule over seeds: the pooled difference is the mean over seeds of d_s (seed s of A
    is paired with seed s of B, e.g. students distilled from the same seed's teacher). Its
    interval resamples test examples only: each draw picks ONE set of example indices, used
    for every seed and both methods, and the statistic is the mean over seeds of the
    per-seed differences on that draw. It therefore measures test-set sampling uncertainty
    of the seed-averaged difference and treats the seeds as fixed; seed-to-seed (training)
    variation is what the per-seed intervals and the mean +- std over seeds show.

    Args:
      probs_a, probs_b: probabilities `[N, K]` (one seed) or `[S, N, K]`, the same shape.
      labels: `[N]` integer labels, shared by every seed and both methods (the examples
        must be in the same order for A and B).
      metric: one of `METRICS`. Accuracy is a fraction (higher is better); NLL (nats, the
        `metrics.nll` floor), Brier (summed over classes), ECE and adaptive ECE (`num_bins`
        bins, the `metrics.ece` / `metrics.adaptive_ece` conventions) are lower-is-better, so
        a negative difference favours A there.
      num_resamples: bootstrap draws R.
      confidence: nominal coverage of the interval, in (0, 1).
      num_bins: bins of the ECE metrics.
      seed: seed of the draws (results are deterministic given it).
      chunk: draws processed at once (bounds memory: `chunk * N` counts).

    Returns:
      `PairedResult` with one `PairedInterval` per seed and the pooled one.
    """
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}; valid: {', '.join(METRICS)}.")
    if not 0 < confidence < 1:
        raise ValueError(f"`confidence` must lie in (0, 1), got {confidence!r}.")
    if isinstance(num_resamples, bool) or not isinstance(num_resamples, int) \
            or num_resamples < 1:
        raise ValueError(f"`num_resamples` must be a positive int, got {num_resamples!r}.")
    num_bins = _binning.check_num_bins(num_bins)
    a, b = _as_seeds(probs_a, "probs_a"), _as_seeds(probs_b, "probs_b")
    if a.shape != b.shape:
        raise ValueError(f"`probs_a` {a.shape} and `probs_b` {b.shape} must have the same "
                         "shape: the same seeds and test examples, in the same order.")
    labels = np.asarray(labels)
    if labels.shape != (a.shape[1],) or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"`labels` must be [N] = [{a.shape[1]}] integers, got shape "
                         f"{labels.shape} {labels.dtype}.")
    if labels.min() < 0 or labels.max() >= a.shape[2]:
        raise ValueError(f"`labels` must lie in [0, {a.shape[2]}).")
    num = a.shape[1]

    def differences(weights: np.ndarray | None, indices: np.ndarray | None) -> np.ndarray:
        """[S, R] per-seed differences under the given draws (None: the test set itself)."""
        if metric == "adaptive_ece":
            idx = np.arange(num)[None] if indices is None else indices
            return (_adaptive_statistic(a, labels, idx, num_bins)
                    - _adaptive_statistic(b, labels, idx, num_bins))
        w = np.ones((1, num)) if weights is None else weights
        out = []
        for probs in (a, b):
            bins = None if metric in PER_EXAMPLE else _bins(probs, num_bins)
            out.append(_statistic(_per_example(probs, labels, metric), bins, w,
                                  metric, num_bins))
        return out[0] - out[1]

    point = differences(None, None)[:, 0]  # [S]
    rng = np.random.default_rng(seed)
    draws = []
    for start in range(0, num_resamples, chunk):
        size = min(chunk, num_resamples - start)
        indices = rng.integers(0, num, size=(size, num))
        weights = None
        if metric != "adaptive_ece":  # counts: the weighted sums replace a gather
            weights = np.zeros((size, num))
            np.add.at(weights, (np.arange(size)[:, None], indices), 1.0)
        draws.append(differences(weights, indices))
    draws = np.concatenate(draws, axis=1)  # [S, R]
    tails = 100 * np.array([(1 - confidence) / 2, (1 + confidence) / 2])

    def interval(estimate: float, sample: np.ndarray, seeds: int) -> PairedInterval:
        low, high = np.percentile(sample, tails)
        return PairedInterval(metric=metric, difference=float(estimate), low=float(low),
                              high=float(high), confidence=confidence, num_examples=num,
                              num_resamples=num_resamples, num_seeds=seeds)

    per_seed = tuple(interval(point[s], draws[s], 1) for s in range(a.shape[0]))
    pooled = interval(point.mean(), draws.mean(axis=0), a.shape[0])
    return PairedResult(per_seed=per_seed, pooled=pooled)
