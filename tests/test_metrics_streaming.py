"""Streaming evaluation: accumulator and collector over batches == one-shot on one batch."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cud_jax import metrics

K, B = 5, 10  # classes, bins
N = 32        # batch size: most tests reuse it so the update compiles only a few times


def _data(seed=0, n=203):
    rng = np.random.default_rng(seed)
    logits = 2.5 * rng.normal(size=(n, K))
    probs = np.exp(logits - logits.max(-1, keepdims=True))
    probs = (probs / probs.sum(-1, keepdims=True)).astype(np.float32)
    labels = np.where(rng.random(n) < 0.6, probs.argmax(-1), rng.integers(0, K, n))
    probs[0] = [1.0, 0.0, 0.0, 0.0, 0.0]   # confidence exactly 1 and exact zeros
    return probs, labels.astype(np.int32)


def _padded_batches(probs, labels, batch=N):
    """Fixed-size batches; the last is padded with garbage (NaN probs, label -1) masked out."""
    for start in range(0, len(labels), batch):
        p, y = probs[start:start + batch], labels[start:start + batch]
        pad = batch - len(y)
        mask = np.r_[np.ones(len(y), bool), np.zeros(pad, bool)]
        p = np.concatenate([p, np.full((pad, K), np.nan, np.float32)])
        y = np.concatenate([y, np.full(pad, -1, np.int32)])
        yield p, y, mask


def _one_shot(probs, labels):
    return {
        "count": len(labels),
        "accuracy": float(np.mean(metrics.accuracy(probs, labels))),
        "nll": float(np.mean(metrics.nll(probs, labels))),
        "brier": float(np.mean(metrics.brier(probs, labels))),
        "ece": float(metrics.ece(probs, labels, B)),
        "mce": float(metrics.mce(probs, labels, B)),
        "classwise_ece": float(metrics.classwise_ece(probs, labels, B)),
    }


def _assert_results_close(got, expected):
    assert got.keys() == expected.keys()
    assert got["count"] == expected["count"]
    for key in expected:
        np.testing.assert_allclose(got[key], expected[key], rtol=2e-6, atol=1e-7, err_msg=key)


def test_streaming_with_masked_padding_equals_one_shot():
    probs, labels = _data()
    update = jax.jit(metrics.CalibrationAccumulator.update)
    acc = metrics.CalibrationAccumulator.empty(K, B)
    for p, y, m in _padded_batches(probs, labels):
        acc = update(acc, p, y, m)
    result = acc.result()
    assert all(isinstance(v, (int, float)) for v in result.values())
    _assert_results_close(result, _one_shot(probs, labels))
    # Counts are integers: the diagram's counts match exactly, the means to float rounding.
    streamed, direct = acc.reliability_diagram(), metrics.reliability_diagram(probs, labels, B)
    np.testing.assert_array_equal(streamed.count, direct.count)
    np.testing.assert_allclose(streamed.edges, direct.edges, rtol=1e-6)
    np.testing.assert_allclose(streamed.confidence, direct.confidence, rtol=1e-6)
    np.testing.assert_allclose(streamed.accuracy, direct.accuracy, rtol=1e-6)


def test_update_eager_equals_jit_and_is_pure():
    probs, labels = _data(1, n=N)
    empty = metrics.CalibrationAccumulator.empty(K, B)
    eager = empty.update(probs, labels)
    jitted = jax.jit(metrics.CalibrationAccumulator.update)(empty, probs, labels)
    for a, b in zip(jax.tree_util.tree_leaves(eager), jax.tree_util.tree_leaves(jitted)):
        np.testing.assert_allclose(a, b, rtol=1e-6)
    assert int(empty.count) == 0 and int(eager.count) == N   # `empty` was not modified


def test_update_in_scan_and_with_leading_axes():
    # A lax.scan over [steps, batch, K] with the accumulator as carry; one update of the same
    # data with two leading axes [steps, batch] gives the same sums.
    probs, labels = _data(2, n=3 * N)
    probs, labels = probs.reshape(3, N, K), labels.reshape(3, N)
    empty = metrics.CalibrationAccumulator.empty(K, B)

    def body(acc, batch):
        return acc.update(*batch), None

    scanned, _ = jax.jit(lambda a: jax.lax.scan(body, a, (probs, labels)))(empty)
    _assert_results_close(scanned.result(), empty.update(probs, labels).result())
    _assert_results_close(scanned.result(), _one_shot(probs.reshape(-1, K), labels.reshape(-1)))


def test_merge_equals_sequential():
    probs, labels = _data(3, n=2 * N)
    empty = metrics.CalibrationAccumulator.empty(K, B)
    first, second = empty.update(probs[:N], labels[:N]), empty.update(probs[N:], labels[N:])
    _assert_results_close(first.merge(second).result(), empty.update(probs, labels).result())
    with pytest.raises(ValueError, match="different sizes"):
        first.merge(metrics.CalibrationAccumulator.empty(K, B + 1))


def test_fully_masked_and_empty_give_nan():
    empty = metrics.CalibrationAccumulator.empty(K, B)
    probs, labels = _data(4, n=N)
    for acc in (empty, empty.update(probs, labels, np.zeros(N, bool))):
        result = acc.result()
        assert result["count"] == 0
        assert all(np.isnan(v) for k, v in result.items() if k != "count")
        assert np.isnan(acc.reliability_diagram().confidence).all()


def test_mask_accepts_zero_one_integers():
    probs, labels = _data(5, n=N)
    empty = metrics.CalibrationAccumulator.empty(K, B)
    keep = np.arange(N) % 3 > 0
    by_int = empty.update(probs, labels, keep.astype(np.int32))
    _assert_results_close(by_int.result(), empty.update(probs, labels, keep).result())
    _assert_results_close(by_int.result(), _one_shot(probs[keep], labels[keep]))


def test_compensated_sum_does_not_drift():
    # 10_000 additions of 1.0 to 1e8 in float32: a plain float32 sum stays at 1e8 (each 1.0
    # is below half an ulp), the compensated sum recovers 1e8 + 1e4 exactly.
    total = jax.jit(lambda s: jax.lax.fori_loop(0, 10_000, lambda i, s: s.add(1.0), s))(
        metrics.CompensatedSum(jnp.float32(1e8), jnp.float32(0.0)))
    assert float(total.hi) == 1e8
    assert total.value() == 1e8 + 1e4


def test_many_batches_match_one_batch():
    # 40 batches: summation order differs completely, the results still agree closely.
    probs, labels = _data(6, n=40 * N)
    update = jax.jit(metrics.CalibrationAccumulator.update)
    acc = metrics.CalibrationAccumulator.empty(K, B)
    for start in range(0, 40 * N, N):
        acc = update(acc, probs[start:start + N], labels[start:start + N])
    _assert_results_close(acc.result(), _one_shot(probs, labels))


def test_accumulator_bad_input():
    acc = metrics.CalibrationAccumulator.empty(K, B)
    probs, labels = _data(7, n=N)
    with pytest.raises(ValueError, match="`probs` has 3 classes .* num_classes=5"):
        acc.update(probs[:, :3], labels)
    with pytest.raises(ValueError, match="`labels` has shape"):
        acc.update(probs, labels[:3])
    bad = labels.copy()
    bad[-1] = 5
    with pytest.raises(TypeError, match="`labels` must hold integer"):
        acc.update(probs, labels.astype(np.float32))
    with pytest.raises(ValueError, match="`mask` has shape"):
        acc.update(probs, labels, np.ones(3, bool))
    with pytest.raises(ValueError, match=r"`labels`( of unmasked examples)? must lie in \[0, 5\)"):
        acc.update(probs, bad)
    # ... but a bad label under the mask is fine.
    acc.update(probs, bad, np.arange(N) < N - 1)
    with pytest.raises(ValueError, match="`num_classes` must be a positive int"):
        metrics.CalibrationAccumulator.empty(0)
    with pytest.raises(ValueError, match="`num_bins` must be a positive Python int"):
        metrics.CalibrationAccumulator.empty(K, 0)
    with pytest.raises(TypeError, match="`dtype` must be a float type"):
        metrics.CalibrationAccumulator.empty(K, B, dtype=jnp.int32)


# ---------------------------------------------------------------------------------------
# ScoreCollector.

def test_collector_with_masks_equals_one_shot():
    probs, labels = _data(8)
    col = metrics.ScoreCollector()
    for p, y, m in _padded_batches(probs, labels):
        col.add_predictions(p, y, mask=m)
    assert len(col) == len(labels)
    assert col.names == ["correct", "max_softmax_prob", "negative_entropy"]
    np.testing.assert_allclose(col["max_softmax_prob"], metrics.max_softmax_prob(probs))
    np.testing.assert_allclose(col.adaptive_ece(B), metrics.adaptive_ece(probs, labels, B),
                               rtol=1e-6)
    correct = np.asarray(metrics.accuracy(probs, labels))
    assert col.misclassification_auroc() == metrics.misclassification_auroc(
        metrics.max_softmax_prob(probs), correct)
    assert col.misclassification_auroc("negative_entropy") == (
        metrics.misclassification_auroc(metrics.negative_entropy(probs), correct))


def test_collector_ood_pipeline():
    probs_in, labels = _data(9, n=64)
    probs_out = np.full((40, K), 1.0 / K, np.float32)   # uniform: the least confident
    col_in, col_out = metrics.ScoreCollector(), metrics.ScoreCollector()
    col_in.add_predictions(probs_in, labels)
    col_out.add_predictions(probs_out[:32])
    col_out.add_predictions(probs_out[32:].reshape(2, 4, K))   # any leading shape
    assert len(col_out) == 40
    out = metrics.ood_metrics(col_in["max_softmax_prob"], col_out["max_softmax_prob"])
    assert out["auroc"] == 1.0 and out["fpr_at_95_tpr"] == 0.0


def test_collector_generic_add_and_errors():
    col = metrics.ScoreCollector()
    col.add(score=np.arange(4.0), extra=np.ones(4), mask=np.array([1, 0, 1, 1]))
    col.add(score=jnp.arange(2.0), extra=jnp.zeros(2))
    np.testing.assert_array_equal(col["score"], [0.0, 2.0, 3.0, 0.0, 1.0])
    assert len(col) == 5
    with pytest.raises(ValueError, match="must name the same arrays"):
        col.add(score=np.ones(2))
    with pytest.raises(ValueError, match="Score `extra` has shape"):
        col.add(score=np.ones(2), extra=np.ones(3))
    with pytest.raises(ValueError, match="`mask` has shape"):
        col.add(score=np.ones(2), extra=np.ones(2), mask=np.ones(3))
    with pytest.raises(KeyError, match="No score named 'max_softmax_prob'"):
        col.adaptive_ece()
    with pytest.raises(ValueError, match="at least one named score"):
        metrics.ScoreCollector().add()
