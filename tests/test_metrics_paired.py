"""Tests for cud_jax.metrics.paired: paired bootstrap differences between two methods."""

import numpy as np
import pytest

from cud_jax import metrics


def _one_hot_probs(predicted, num_classes, confidence):
    """Probabilities putting `confidence` on `predicted` and the rest evenly elsewhere."""
    predicted = np.asarray(predicted)
    rest = (1.0 - confidence) / (num_classes - 1)
    probs = np.full((len(predicted), num_classes), rest)
    probs[np.arange(len(predicted)), predicted] = confidence
    return probs


def _random_probs(rng, shape, sharpness=3.0):
    logits = sharpness * rng.normal(size=shape)
    e = np.exp(logits - logits.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def test_hand_computed_differences():
    labels = np.array([0, 1, 2, 0])
    a = _one_hot_probs([0, 1, 2, 1], 3, 0.8)  # 3 of 4 right
    b = _one_hot_probs([0, 2, 1, 1], 3, 0.5)  # 1 of 4 right
    acc = metrics.paired_bootstrap(a, b, labels, metric="accuracy", num_resamples=50)
    assert acc.pooled.difference == pytest.approx(0.75 - 0.25)
    # NLL: A has -log 0.8 on 3 examples and -log 0.1 on one; B -log 0.5 once, -log 0.25 x3.
    nll_a = (3 * -np.log(0.8) - np.log(0.1)) / 4
    nll_b = (-np.log(0.5) - 3 * np.log(0.25)) / 4
    nll = metrics.paired_bootstrap(a, b, labels, metric="nll", num_resamples=50)
    assert nll.pooled.difference == pytest.approx(nll_a - nll_b)
    # Brier (summed over classes): A right: 0.04 + 0.01 + 0.01; A wrong: 0.64 + 0.81 + 0.01.
    brier_a = (3 * 0.06 + 1.46) / 4
    brier_b = (1 * (0.25 + 2 * 0.0625) + 3 * (0.25 + 0.5625 + 0.0625)) / 4
    brier = metrics.paired_bootstrap(a, b, labels, metric="brier", num_resamples=50)
    assert brier.pooled.difference == pytest.approx(brier_a - brier_b)
    # ECE: A has one bin (conf 0.8, acc 0.75), B one bin (conf 0.5, acc 0.25).
    ece = metrics.paired_bootstrap(a, b, labels, metric="ece", num_resamples=50)
    assert ece.pooled.difference == pytest.approx(0.05 - 0.25)


@pytest.mark.parametrize("metric", metrics.paired.METRICS)
def test_point_estimates_equal_the_library_metrics(metric):
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 5, size=300)
    a, b = _random_probs(rng, (300, 5)), _random_probs(rng, (300, 5), sharpness=1.0)
    reference = {"accuracy": lambda p: np.mean(metrics.accuracy(p, labels)),
                 "nll": lambda p: np.mean(metrics.nll(p, labels)),
                 "brier": lambda p: np.mean(metrics.brier(p, labels)),
                 "ece": lambda p: metrics.ece(p, labels),
                 "adaptive_ece": lambda p: metrics.adaptive_ece(p, labels)}[metric]
    result = metrics.paired_bootstrap(a, b, labels, metric=metric, num_resamples=20)
    expected = float(reference(a.astype(np.float32)) - reference(b.astype(np.float32)))
    assert result.pooled.difference == pytest.approx(expected, abs=1e-5)


@pytest.mark.parametrize("metric", metrics.paired.METRICS)
def test_identical_methods_give_zero_plus_minus_zero(metric):
    rng = np.random.default_rng(1)
    probs = _random_probs(rng, (2, 200, 4))
    labels = rng.integers(0, 4, size=200)
    result = metrics.paired_bootstrap(probs, probs, labels, metric=metric, num_resamples=100)
    for interval in result.per_seed + (result.pooled,):
        assert (interval.difference, interval.low, interval.high) == (0.0, 0.0, 0.0)
        assert not interval.excludes_zero


@pytest.mark.parametrize("metric", metrics.paired.METRICS)
def test_interval_contains_the_point_estimate(metric):
    rng = np.random.default_rng(2)
    labels = rng.integers(0, 6, size=500)
    a, b = _random_probs(rng, (3, 500, 6)), _random_probs(rng, (3, 500, 6), sharpness=2.0)
    result = metrics.paired_bootstrap(a, b, labels, metric=metric, num_resamples=400)
    for interval in result.per_seed + (result.pooled,):
        assert interval.low <= interval.difference <= interval.high


def test_a_known_shift_is_detected_and_covered():
    """B is A with 8% of its correct predictions turned wrong: the accuracy difference is
    known exactly, the interval contains it and excludes 0; the reverse flips the sign."""
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 10, size=2000)
    predicted = np.where(rng.random(2000) < 0.8, labels, (labels + 1) % 10)
    a = _one_hot_probs(predicted, 10, 0.9)
    right = np.flatnonzero(predicted == labels)
    broken = predicted.copy()
    broken[right[: 160]] = (labels[right[: 160]] + 3) % 10
    b = _one_hot_probs(broken, 10, 0.9)
    result = metrics.paired_bootstrap(a, b, labels, metric="accuracy", num_resamples=1000)
    assert result.pooled.difference == pytest.approx(160 / 2000)
    assert result.pooled.excludes_zero and result.pooled.low > 0.05
    reverse = metrics.paired_bootstrap(b, a, labels, metric="accuracy", num_resamples=1000)
    assert reverse.pooled.high < 0 and reverse.pooled.difference == pytest.approx(-0.08)


def test_width_matches_the_normal_approximation_of_a_paired_mean():
    """For a per-example metric the bootstrap sd of the paired difference is
    sd(d_i) / sqrt(N); the 95% interval is about +- 1.96 of it. B is a blend of A, so the
    two NLLs share most of their per-example variation: an unpaired bootstrap (independent
    draws for A and B) would give an interval over twice as wide."""
    rng = np.random.default_rng(4)
    n = 3000
    labels = rng.integers(0, 3, size=n)
    a = _random_probs(rng, (n, 3))
    b = 0.9 * a + 0.1 * _random_probs(rng, (n, 3))
    unpaired = 1.96 * np.sqrt(np.var(np.asarray(metrics.nll(a, labels)))
                              + np.var(np.asarray(metrics.nll(b, labels)))) / np.sqrt(n)
    d = np.asarray(metrics.nll(a.astype(np.float32), labels)
                   - metrics.nll(b.astype(np.float32), labels))
    half = 1.96 * d.std() / np.sqrt(n)
    result = metrics.paired_bootstrap(a, b, labels, metric="nll", num_resamples=2000)
    width = (result.pooled.high - result.pooled.low) / 2
    assert width == pytest.approx(half, rel=0.1)
    assert width < unpaired / 2


def test_pooling_averages_seeds_and_resamples_examples_jointly():
    rng = np.random.default_rng(5)
    labels = rng.integers(0, 4, size=400)
    a, b = _random_probs(rng, (2, 400, 4)), _random_probs(rng, (2, 400, 4))
    result = metrics.paired_bootstrap(a, b, labels, metric="brier", num_resamples=300)
    singles = [metrics.paired_bootstrap(a[s], b[s], labels, metric="brier", num_resamples=300)
               for s in range(2)]
    assert result.pooled.num_seeds == 2 and len(result.per_seed) == 2
    assert result.pooled.difference == pytest.approx(
        np.mean([r.pooled.difference for r in singles]))
    # Seed s's interval is the one a single-seed call with the same draws gives.
    for s in range(2):
        got, want = result.per_seed[s], singles[s].pooled
        assert (got.difference, got.low, got.high) == pytest.approx(
            (want.difference, want.low, want.high), abs=1e-12)
    # Averaging two seeds' differences on shared draws narrows the interval.
    widths = [r.pooled.high - r.pooled.low for r in singles]
    assert result.pooled.high - result.pooled.low < max(widths)


def test_deterministic_given_seed_and_formatting():
    rng = np.random.default_rng(6)
    labels = rng.integers(0, 3, size=100)
    a, b = _random_probs(rng, (100, 3)), _random_probs(rng, (100, 3))
    one = metrics.paired_bootstrap(a, b, labels, metric="ece", num_resamples=200, seed=7)
    two = metrics.paired_bootstrap(a, b, labels, metric="ece", num_resamples=200, seed=7,
                                   chunk=64)
    assert one == two
    text = one.pooled.format(3)
    assert text.startswith(("+", "-")) and text.count("[") == 1 and "," in text
    assert one.to_dict()["pooled"]["excludes_zero"] == one.pooled.excludes_zero


def test_input_errors_name_the_fix():
    probs = np.full((4, 3), 1 / 3)
    labels = np.array([0, 1, 2, 0])
    with pytest.raises(ValueError, match="same shape"):
        metrics.paired_bootstrap(probs, probs[:3], labels)
    with pytest.raises(ValueError, match="valid: accuracy"):
        metrics.paired_bootstrap(probs, probs, labels, metric="auroc")
    with pytest.raises(ValueError, match=r"\[N\] = \[4\]"):
        metrics.paired_bootstrap(probs, probs, labels[:3])
    with pytest.raises(ValueError, match=r"lie in \[0, 3\)"):
        metrics.paired_bootstrap(probs, probs, np.array([0, 1, 3, 0]))
    with pytest.raises(ValueError, match="confidence"):
        metrics.paired_bootstrap(probs, probs, labels, confidence=95)
