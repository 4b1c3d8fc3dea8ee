"""OOD and misclassification detection: AUROC, AUPR, FPR@95%TPR, with exact ties."""

from fractions import Fraction

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from cud_jax import metrics


def _brute_auroc(pos, neg):
    """Every pair, a tie counting 1/2; exact with Fractions."""
    total = Fraction(0)
    for p in pos:
        for n in neg:
            total += 1 if p > n else Fraction(1, 2) if p == n else 0
    return total / (len(pos) * len(neg))


def _brute_average_precision(pos, neg):
    """Loop over the distinct thresholds, high to low, predicting positive for s >= t."""
    total, previous_recall = Fraction(0), Fraction(0)
    for t in sorted(set(pos) | set(neg), reverse=True):
        tp = sum(s >= t for s in pos)
        fp = sum(s >= t for s in neg)
        recall = Fraction(tp, len(pos))
        total += (recall - previous_recall) * Fraction(tp, tp + fp)
        previous_recall = recall
    return total


def test_auroc_by_hand_with_ties():
    # Pairs (in, out): (1,2) 0, (1,0) 1, (2,2) 1/2, (2,0) 1, (3,2) 1, (3,0) 1 -> 4.5 / 6.
    assert metrics.ood_auroc([1, 2, 3], [2, 0]) == 0.75
    assert metrics.ood_auroc([5.0, 5.0], [5.0]) == 0.5   # all tied: chance
    assert metrics.ood_auroc([2.0], [1.0]) == 1.0
    assert metrics.ood_auroc([1.0], [2.0]) == 0.0


def test_auroc_matches_scipy_mann_whitney_with_heavy_ties():
    rng = np.random.default_rng(0)
    scores_in = rng.integers(0, 5, size=200).astype(np.float64)   # five distinct values
    scores_out = rng.integers(0, 4, size=150).astype(np.float64)
    u = stats.mannwhitneyu(scores_in, scores_out, alternative="two-sided").statistic
    np.testing.assert_allclose(metrics.ood_auroc(scores_in, scores_out), u / (200 * 150),
                               rtol=1e-12)
    # float32 inputs (as a model produces) give the same exact answer.
    assert metrics.ood_auroc(scores_in.astype(np.float32), scores_out.astype(np.float32)) == (
        metrics.ood_auroc(scores_in, scores_out))


def test_low_precision_and_integer_scores():
    scores_in = jnp.array([3.0, 2.0, 2.0], jnp.bfloat16)
    assert metrics.ood_aupr(scores_in, jnp.array([2.0, 1.0], jnp.bfloat16)) == pytest.approx(
        5 / 6)
    assert metrics.ood_auroc(np.array([1, 2, 3]), np.array([True, False])) == pytest.approx(
        float(_brute_auroc([1, 2, 3], [1, 0])))


def test_auroc_any_shape_and_jax_arrays():
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(4, 5)), rng.normal(size=(3, 2)) - 0.5
    assert metrics.ood_auroc(jnp.asarray(a), jnp.asarray(b)) == pytest.approx(
        float(_brute_auroc(a.ravel().tolist(), b.ravel().tolist())), rel=1e-12)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(0, 4), min_size=1, max_size=12),
       st.lists(st.integers(0, 4), min_size=1, max_size=12))
def test_auroc_and_aupr_equal_brute_force(pos, neg):
    assert metrics.ood_auroc(pos, neg) == pytest.approx(float(_brute_auroc(pos, neg)),
                                                        rel=1e-12)
    assert metrics.ood_aupr(pos, neg) == pytest.approx(
        float(_brute_average_precision(pos, neg)), rel=1e-12)
    # AUPR-Out is AP with OOD positive and negated scores.
    assert metrics.ood_aupr(pos, neg, positive="out") == pytest.approx(
        float(_brute_average_precision([-s for s in neg], [-s for s in pos])), rel=1e-12)


def test_aupr_by_hand_with_ties():
    # In = {3, 2, 2}, out = {2, 1}, in positive.
    # t = 3: TP 1, FP 0 -> P 1,   R 1/3
    # t = 2: TP 3, FP 1 -> P 3/4, R 1      (both tied 2s of "in" and the 2 of "out" at once)
    # t = 1: R unchanged.  AP = 1/3 * 1 + 2/3 * 3/4 = 5/6.
    assert metrics.ood_aupr([3, 2, 2], [2, 1]) == pytest.approx(5 / 6, rel=1e-12)
    # Input order cannot matter, even with the tie spread across both sets.
    assert metrics.ood_aupr([2, 2, 3], [1, 2]) == pytest.approx(5 / 6, rel=1e-12)
    # Out positive, scores negated: t = -1: TP 1, FP 0 -> P 1, R 1/2;
    # t = -2: TP 2, FP 2 -> P 1/2, R 1.  AP = 1/2 + 1/2 * 1/2 = 3/4.
    assert metrics.ood_aupr([3, 2, 2], [2, 1], positive="out") == pytest.approx(0.75,
                                                                                 rel=1e-12)


def test_aupr_extremes():
    assert metrics.ood_aupr([3.0, 4.0], [1.0, 2.0]) == 1.0
    # Everything tied: one threshold, precision = positive fraction.
    assert metrics.ood_aupr([1.0, 1.0], [1.0, 1.0, 1.0]) == pytest.approx(0.4)


def test_fpr_at_95_by_hand_with_ties_at_threshold():
    # 20 in-distribution scores: ten 5s, nine 3s, one 1. k = ceil(0.95 * 20) = 19, the 19th
    # largest is 3, so the threshold is 3 (TPR 19/20). OOD scores >= 3 are 3, 3, 4: FPR 3/5,
    # the two OOD scores tied with the threshold counting as false positives.
    scores_in = [5.0] * 10 + [3.0] * 9 + [1.0]
    assert metrics.fpr_at_95_tpr(scores_in, [3.0, 3.0, 2.0, 4.0, 0.0]) == 0.6
    # In-distribution ties at the threshold: all 20 at 1 -> threshold 1 (TPR 1).
    assert metrics.fpr_at_95_tpr([1.0] * 20, [1.0, 0.5]) == 0.5
    # Small n: k = ceil(0.95 * 3) = 3, the threshold is the lowest in-score.
    assert metrics.fpr_at_95_tpr([0.2, 0.9, 0.5], [0.1, 0.2, 0.3, 0.95]) == 0.75


def test_fpr_at_tpr_uses_exact_decimal():
    # 0.7 * 10 is 7.000000000000001 in floats; read exactly, k = 7 and the threshold is the
    # 7th largest in-score, 4 (in-scores 10, 9, ..., 1), so out-scores >= 4 count.
    scores_in = np.arange(10, 0, -1).astype(float)
    assert metrics.fpr_at_tpr(scores_in, [3.5, 4.0, 4.5, 9.0], 0.7) == 0.75
    # TPR 1 keeps every in-score: threshold 1, so 10.0 counts and 0.5 does not.
    assert metrics.fpr_at_tpr(scores_in, [0.5, 10.0], 1.0) == 0.5


def test_fpr_at_95_matches_reference_on_random_data():
    rng = np.random.default_rng(2)
    scores_in = np.round(rng.normal(1.0, 1.0, size=333), 1)   # rounding makes ties
    scores_out = np.round(rng.normal(0.0, 1.0, size=257), 1)
    # Reference: the highest threshold among the in-scores that keeps >= 95% of them.
    candidates = sorted(set(scores_in), reverse=True)
    threshold = next(t for t in candidates if np.mean(scores_in >= t) >= 0.95)
    expected = np.mean(scores_out >= threshold)
    assert metrics.fpr_at_95_tpr(scores_in, scores_out) == pytest.approx(expected, rel=1e-12)


def test_misclassification_auroc():
    confidence = np.array([0.9, 0.8, 0.8, 0.6, 0.55])
    correct = np.array([True, True, False, False, True])
    # Correct {0.9, 0.8, 0.55} vs wrong {0.8, 0.6}: 1 + 1 + 1/2 + 1 + 0 + 0 = 3.5 / 6.
    assert metrics.misclassification_auroc(confidence, correct) == pytest.approx(3.5 / 6)
    # 0/1 floats (as returned by `accuracy`) and any shape work too.
    assert metrics.misclassification_auroc(confidence.reshape(5, 1),
                                           correct.astype(np.float32)) == pytest.approx(3.5 / 6)
    assert np.isnan(metrics.misclassification_auroc(confidence, np.ones(5, bool)))
    assert np.isnan(metrics.misclassification_auroc(confidence, np.zeros(5, bool)))


def test_ood_metrics_bundle():
    out = metrics.ood_metrics([3, 2, 2], [2, 1])
    assert out == pytest.approx({"auroc": metrics.ood_auroc([3, 2, 2], [2, 1]),
                                 "aupr_in": 5 / 6, "aupr_out": 0.75,
                                 "fpr_at_95_tpr": metrics.fpr_at_95_tpr([3, 2, 2], [2, 1])})


def test_scores_order_in_distribution_higher():
    sharp = jnp.array([[0.9, 0.05, 0.05]])
    flat = jnp.array([[1 / 3, 1 / 3, 1 / 3]])
    for score in (metrics.max_softmax_prob, metrics.negative_entropy):
        assert metrics.ood_auroc(score(sharp), score(flat)) == 1.0


# ---------------------------------------------------------------------------------------
# Bad input.

def test_detection_metrics_refuse_jit():
    with pytest.raises(TypeError, match="cannot be called inside `jax.jit`"):
        jax.jit(metrics.ood_auroc)(jnp.ones(3), jnp.zeros(3))
    with pytest.raises(TypeError, match="`correct` is a traced value"):
        jax.jit(lambda c: metrics.misclassification_auroc(np.ones(3), c))(jnp.ones(3))


@pytest.mark.parametrize("fn", [metrics.ood_auroc, metrics.ood_aupr, metrics.fpr_at_95_tpr,
                                metrics.ood_metrics])
def test_empty_and_nan_scores_rejected(fn):
    with pytest.raises(ValueError, match="`scores_out` is empty"):
        fn([1.0, 2.0], [])
    with pytest.raises(ValueError, match="`scores_in` contains NaN"):
        fn([1.0, np.nan], [0.0])
    with pytest.raises(TypeError, match="`scores_in` must hold real numbers"):
        fn(np.array(["a"]), [0.0])


def test_bad_arguments():
    with pytest.raises(ValueError, match='`positive` must be "in" or "out"'):
        metrics.ood_aupr([1.0], [0.0], positive="ood")
    for tpr in (0.0, 1.5, "x"):
        with pytest.raises(ValueError, match="`tpr` must"):
            metrics.fpr_at_tpr([1.0], [0.0], tpr)
    with pytest.raises(ValueError, match="`correct` has 2 entries"):
        metrics.misclassification_auroc([0.1, 0.2, 0.3], [True, False])
    with pytest.raises(ValueError, match="`correct` must be boolean or hold only 0 and 1"):
        metrics.misclassification_auroc([0.1, 0.2], [2, 0])
