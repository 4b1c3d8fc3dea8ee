"""Per-example metrics and the one-shot calibration metrics (ECE family)."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cud_jax import metrics
from cud_jax.metrics import _binning

# Four examples, three classes. Every expected value below is worked out by hand from these.
#   example  probs              label  top conf  pred  correct  5-bin index of conf
#   0        [0.5, 0.3, 0.2]    0      0.5       0     yes      2  (2.5)
#   1        [0.5, 0.25, 0.25]  1      0.5       0     no       2  (2.5)
#   2        [0.1, 0.1, 0.8]    2      0.8       2     yes      4  (0.8 * 5 = 4.0: lower edge)
#   3        [0.0, 0.7, 0.3]    2      0.7       1     no       3  (3.5)
PROBS = jnp.array([[0.5, 0.3, 0.2], [0.5, 0.25, 0.25], [0.1, 0.1, 0.8], [0.0, 0.7, 0.3]])
LABELS = jnp.array([0, 1, 2, 2])


def test_accuracy_by_hand():
    np.testing.assert_array_equal(metrics.accuracy(PROBS, LABELS), [1.0, 0.0, 1.0, 0.0])
    # Logits give the same argmax; tied maxima predict the lowest index.
    np.testing.assert_array_equal(metrics.accuracy(jnp.log(PROBS + 1e-3), LABELS),
                                  [1.0, 0.0, 1.0, 0.0])
    np.testing.assert_array_equal(metrics.accuracy(jnp.array([[0.5, 0.5]]), jnp.array([1])),
                                  [0.0])


def test_nll_by_hand():
    np.testing.assert_allclose(metrics.nll(PROBS, LABELS),
                               -np.log([0.5, 0.25, 0.8, 0.3]), rtol=1e-6)


def test_nll_exact_zero_is_large_and_finite():
    out = metrics.nll(jnp.array([[0.0, 1.0], [1.0, 0.0]]), jnp.array([0, 0]))
    np.testing.assert_allclose(out, [-np.log(np.finfo(np.float32).tiny), 0.0], rtol=1e-6)
    assert np.isfinite(out).all()
    np.testing.assert_allclose(out[0], 87.3365, rtol=1e-5)
    # A custom floor caps the value where the caller wants it.
    np.testing.assert_allclose(metrics.nll(jnp.array([[0.0, 1.0]]), jnp.array([0]),
                                           floor=1e-6), [-np.log(1e-6)], rtol=1e-5)


def test_nll_from_logits_by_hand_and_beyond_the_float32_softmax():
    logits = jnp.array([[2.0, 0.0, -1.0], [120.0, 0.0, 0.0], [1e4, -1e4, 0.0]])
    labels = jnp.array([1, 1, 0])
    want = [2.0 + np.log1p(np.exp(-2.0) + np.exp(-3.0)), 120.0, 0.0]
    np.testing.assert_allclose(metrics.nll_from_logits(logits, labels), want, rtol=1e-6,
                               atol=1e-6)
    # The probability route stops at -log(tiny float32) = 87.34 for the second row.
    capped = metrics.nll(jax.nn.softmax(logits), labels)
    np.testing.assert_allclose(capped[1], 87.3365, rtol=1e-5)
    np.testing.assert_allclose(metrics.nll_from_logits(logits[:1], labels[:1]), capped[:1],
                               rtol=1e-6)
    batched = jax.jit(jax.vmap(metrics.nll_from_logits))(logits[None], labels[None])
    np.testing.assert_allclose(batched[0], want, rtol=1e-6, atol=1e-6)


def test_brier_by_hand():
    # 0: .25 + .09 + .04; 1: .25 + .5625 + .0625; 2: .01 + .01 + .04; 3: 0 + .49 + .49
    np.testing.assert_allclose(metrics.brier(PROBS, LABELS), [0.38, 0.875, 0.06, 0.98],
                               rtol=1e-6)
    # Sum over classes: a confident wrong prediction scores the maximum, 2.
    np.testing.assert_allclose(metrics.brier(jnp.array([[1.0, 0.0]]), jnp.array([1])), [2.0])


def test_ece_mce_by_hand_five_bins():
    # Bin 2: two examples, mean conf 0.5, accuracy 0.5 -> gap 0.
    # Bin 3: conf 0.7, accuracy 0 -> 0.7.  Bin 4: conf 0.8, accuracy 1 -> 0.2.
    np.testing.assert_allclose(metrics.ece(PROBS, LABELS, num_bins=5), (0 + 0.7 + 0.2) / 4,
                               rtol=1e-6)
    np.testing.assert_allclose(metrics.mce(PROBS, LABELS, num_bins=5), 0.7, rtol=1e-6)


def test_ece_three_examples_with_confidence_one():
    # 15 bins: 0.9 -> bin 13 (correct), 0.6 -> bin 9 (wrong), 1.0 -> bin 14, the LAST bin
    # (correct; gap 0). ECE = (0.1 + 0.6 + 0) / 3.
    probs = jnp.array([[0.9, 0.1], [0.6, 0.4], [1.0, 0.0]])
    labels = jnp.array([0, 1, 0])
    np.testing.assert_allclose(metrics.ece(probs, labels), 0.7 / 3, rtol=1e-6)
    diagram = metrics.reliability_diagram(probs, labels)
    assert diagram.count[14] == 1 and diagram.count.sum() == 3
    np.testing.assert_allclose(diagram.confidence[14], 1.0)


def test_ece_bin_edge_point_four_goes_up():
    # With 15 bins 0.4 = 6/15 is an edge: it belongs to bin 6, [0.4, 0.4667), not bin 5.
    diagram = metrics.reliability_diagram(jnp.array([[0.4, 0.3, 0.3]]), jnp.array([1]))
    assert int(np.argmax(diagram.count)) == 6
    np.testing.assert_allclose(diagram.edges[6], 0.4)
    # Its gap is |0 - 0.4|, the same whichever bin, so check the bin and the ECE both.
    np.testing.assert_allclose(metrics.ece(jnp.array([[0.4, 0.3, 0.3]]), jnp.array([1])), 0.4,
                               rtol=1e-6)


@pytest.mark.parametrize("num_bins, dtype", [(5, np.float32), (10, np.float32),
                                             (15, np.float32), (20, np.float32),
                                             (15, np.float64)])
def test_every_edge_value_starts_its_bin(num_bins, dtype, x64):
    # b / B typed as a float lands in bin b (the top edge 1.0 in the last bin) for the bin
    # counts people use; 0.0 is in bin 0.
    edges = np.array([b / num_bins for b in range(num_bins + 1)], dtype)
    index = _binning.equal_width_bin(jnp.asarray(edges), num_bins)
    np.testing.assert_array_equal(index, list(range(num_bins)) + [num_bins - 1])


def test_equal_width_bin_clips_out_of_range_and_nan():
    index = _binning.equal_width_bin(jnp.array([-0.1, 1.5, jnp.nan, 0.0]), 15)
    np.testing.assert_array_equal(index, [0, 14, 0, 0])


def test_classwise_ece_by_hand():
    # Five bins. Class 0: p0 = .5 (bin 2, label 0), .5 (bin 2), .1 (bin 0), 0 (bin 0)
    #   -> |1 - 1.0| + |0 - 0.1| = 0.1
    # Class 1: .3 (bin 1), .25 (bin 1, label 1), .1 (bin 0), .7 (bin 3)
    #   -> |1 - .55| + |0 - .1| + |0 - .7| = 1.25
    # Class 2: .2 (bin 1: 0.2 * 5 = 1.0 is an edge), .25 (bin 1), .8 (bin 4, label 2),
    #   .3 (bin 1, label 2) -> |1 - .75| + |1 - .8| = 0.45
    # classwise_ece = mean(0.1, 1.25, 0.45) / N = 0.6 / 4.
    np.testing.assert_allclose(metrics.classwise_ece(PROBS, LABELS, num_bins=5), 0.15,
                               rtol=1e-6)


def test_adaptive_ece_by_hand():
    # Sorted by (conf, correct): (.5, 0), (.5, 1), (.7, 0), (.8, 1).
    # 2 bins: positions {0, 1} | {2, 3}: |1 - 1.0| + |1 - 1.5| = 0.5 -> 0.5 / 4.
    np.testing.assert_allclose(metrics.adaptive_ece(PROBS, LABELS, num_bins=2), 0.125,
                               rtol=1e-6)
    # 3 bins: position i -> floor(3 i / 4) = 0, 0, 1, 2: 0 + 0.7 + 0.2 -> 0.9 / 4.
    np.testing.assert_allclose(metrics.adaptive_ece(PROBS, LABELS, num_bins=3), 0.225,
                               rtol=1e-6)
    # More bins than examples: empty bins contribute nothing; every example alone.
    np.testing.assert_allclose(metrics.adaptive_ece(PROBS, LABELS, num_bins=10),
                               (0.5 + 0.5 + 0.7 + 0.2) / 4, rtol=1e-6)


def test_adaptive_ece_ties_straddling_a_boundary_do_not_depend_on_order():
    # Four examples all at confidence 0.6, two correct; 2 bins of two. Tied confidences are
    # ordered incorrect-first, so bins are {wrong, wrong} | {right, right}:
    # |0 - 1.2| + |2 - 1.2| = 2.0 -> 0.5, for every input order.
    probs = jnp.array([[0.6, 0.4]] * 4)
    for order in set(itertools.permutations([0, 0, 1, 1])):
        labels = jnp.array([1 - c for c in order])  # correct iff label == 0
        np.testing.assert_allclose(metrics.adaptive_ece(probs, labels, num_bins=2), 0.5,
                                   rtol=1e-6)


def test_adaptive_ece_split_sizes():
    # N = 7, B = 3: positions -> floor(3 i / 7) = 0 0 0 1 1 2 2: sizes 3, 2, 2.
    confidence = jnp.linspace(0.5, 0.95, 7)
    correct = jnp.array([1, 1, 1, 0, 0, 1, 1])
    c = np.asarray(confidence, np.float64)
    expected = (abs(3 - c[:3].sum()) + abs(0 - c[3:5].sum()) + abs(2 - c[5:].sum())) / 7
    np.testing.assert_allclose(metrics.adaptive_ece_from_confidence(confidence, correct, 3),
                               expected, rtol=1e-6)


def test_reliability_diagram_by_hand():
    diagram = metrics.reliability_diagram(PROBS, LABELS, num_bins=5)
    assert isinstance(diagram, metrics.ReliabilityDiagram)
    np.testing.assert_allclose(diagram.edges, [0, 0.2, 0.4, 0.6, 0.8, 1.0], rtol=1e-6)
    np.testing.assert_array_equal(diagram.count, [0, 0, 2, 1, 1])
    np.testing.assert_allclose(diagram.confidence, [np.nan, np.nan, 0.5, 0.7, 0.8], rtol=1e-6)
    np.testing.assert_allclose(diagram.accuracy, [np.nan, np.nan, 0.5, 0.0, 1.0])


def test_no_examples_gives_nan_not_error():
    probs, labels = jnp.zeros((0, 3)), jnp.zeros((0,), jnp.int32)
    for fn in (metrics.ece, metrics.mce, metrics.classwise_ece, metrics.adaptive_ece):
        assert np.isnan(fn(probs, labels))


def test_teacher_student_by_hand():
    teacher = jnp.array([[0.5, 0.5, 0.0], [0.1, 0.2, 0.7], [1.0, 0.0, 0.0]])
    student = jnp.array([[0.25, 0.75, 0.0], [0.6, 0.2, 0.2], [0.0, 1.0, 0.0]])
    # Argmax: teacher 0 (tie -> lowest), 2, 0; student 1, 0, 1.
    np.testing.assert_array_equal(metrics.agreement(student, teacher), [0.0, 0.0, 0.0])
    np.testing.assert_array_equal(metrics.agreement(teacher, teacher), [1.0, 1.0, 1.0])
    kl = metrics.teacher_student_kl(teacher, student)
    expected0 = 0.5 * np.log(0.5 / 0.25) + 0.5 * np.log(0.5 / 0.75)  # class 2: 0 log 0 = 0
    expected1 = 0.1 * np.log(0.1 / 0.6) + 0.2 * np.log(1.0) + 0.7 * np.log(0.7 / 0.2)
    expected2 = -np.log(np.finfo(np.float32).tiny)  # student puts 0 on the teacher's class
    np.testing.assert_allclose(kl, [expected0, expected1, expected2], rtol=1e-5)
    np.testing.assert_allclose(metrics.teacher_student_kl(teacher, teacher), 0.0, atol=1e-7)


def test_scores_by_hand():
    probs = jnp.array([[0.5, 0.5, 0.0], [1.0, 0.0, 0.0]])
    np.testing.assert_allclose(metrics.max_softmax_prob(probs), [0.5, 1.0])
    np.testing.assert_allclose(metrics.negative_entropy(probs), [-np.log(2.0), 0.0],
                               rtol=1e-6)


def test_exact_zeros_give_no_nan():
    probs = jnp.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, 1.0, 0.0]])
    labels = jnp.array([0, 1, 1])
    values = [metrics.nll(probs, labels), metrics.brier(probs, labels),
              metrics.negative_entropy(probs), metrics.teacher_student_kl(probs, probs[::-1]),
              metrics.teacher_student_kl(probs, probs), metrics.ece(probs, labels),
              metrics.mce(probs, labels), metrics.classwise_ece(probs, labels),
              metrics.adaptive_ece(probs, labels)]
    for value in values:
        assert np.isfinite(np.asarray(value)).all()


# ---------------------------------------------------------------------------------------
# Independent loop-based NumPy references on seeded random data.

def _random_batch(seed, n=300, k=7, sharp=3.0):
    rng = np.random.default_rng(seed)
    logits = sharp * rng.normal(size=(n, k))
    probs = np.exp(logits - logits.max(-1, keepdims=True))
    probs = (probs / probs.sum(-1, keepdims=True)).astype(np.float32)
    labels = rng.integers(0, k, size=n)
    # Make accuracy well above chance so the bins hold both kinds of example.
    agree = rng.random(n) < 0.6
    labels[agree] = probs[agree].argmax(-1)
    return probs, labels.astype(np.int32)


def _ref_bins(values, num_bins):
    """Loop over bins with explicit [lo, hi) edges; the last bin also takes 1.0."""
    out = []
    for b in range(num_bins):
        lo, hi = b / num_bins, (b + 1) / num_bins
        out.append([i for i, v in enumerate(values)
                    if lo <= v < hi or (b == num_bins - 1 and v == 1.0)])
    return out


def _ref_ece_mce(probs, labels, num_bins):
    probs = probs.astype(np.float64)
    conf = probs.max(-1)
    correct = probs.argmax(-1) == labels
    ece, mce = 0.0, 0.0
    for members in _ref_bins(conf, num_bins):
        if members:
            gap = abs(correct[members].mean() - conf[members].mean())
            ece += len(members) / len(conf) * gap
            mce = max(mce, gap)
    return ece, mce


def _ref_classwise(probs, labels, num_bins):
    probs = probs.astype(np.float64)
    per_class = []
    for k in range(probs.shape[1]):
        total = 0.0
        for members in _ref_bins(probs[:, k], num_bins):
            if members:
                freq = np.mean(labels[members] == k)
                total += len(members) / len(labels) * abs(freq - probs[members, k].mean())
        per_class.append(total)
    return np.mean(per_class)


def _ref_adaptive(probs, labels, num_bins):
    probs = probs.astype(np.float64)
    conf = probs.max(-1)
    correct = (probs.argmax(-1) == labels).astype(float)
    order = sorted(range(len(conf)), key=lambda i: (conf[i], correct[i]))
    n = len(order)
    total = 0.0
    for b in range(num_bins):
        members = [order[i] for i in range(n) if (i * num_bins) // n == b]
        if members:
            total += len(members) / n * abs(correct[members].mean() - conf[members].mean())
    return total


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("num_bins", [10, 15])
def test_calibration_matches_numpy_reference(seed, num_bins):
    probs, labels = _random_batch(seed)
    ref_ece, ref_mce = _ref_ece_mce(probs, labels, num_bins)
    np.testing.assert_allclose(metrics.ece(probs, labels, num_bins), ref_ece, rtol=1e-5)
    np.testing.assert_allclose(metrics.mce(probs, labels, num_bins), ref_mce, rtol=1e-5)
    np.testing.assert_allclose(metrics.classwise_ece(probs, labels, num_bins),
                               _ref_classwise(probs, labels, num_bins), rtol=1e-5)
    np.testing.assert_allclose(metrics.adaptive_ece(probs, labels, num_bins),
                               _ref_adaptive(probs, labels, num_bins), rtol=1e-5)
    diagram = metrics.reliability_diagram(probs, labels, num_bins)
    conf = probs.astype(np.float64).max(-1)
    correct = probs.argmax(-1) == labels
    for b, members in enumerate(_ref_bins(conf, num_bins)):
        assert diagram.count[b] == len(members)
        if members:
            np.testing.assert_allclose(diagram.confidence[b], conf[members].mean(), rtol=1e-5)
            np.testing.assert_allclose(diagram.accuracy[b], correct[members].mean(), rtol=1e-6)


def test_per_example_metrics_match_numpy_reference():
    probs, labels = _random_batch(3, n=50)
    teacher, _ = _random_batch(4, n=50)
    p64, t64 = probs.astype(np.float64), teacher.astype(np.float64)
    ref_nll, ref_brier, ref_acc, ref_agree, ref_kl = [], [], [], [], []
    for i, y in enumerate(labels):
        ref_nll.append(-np.log(p64[i, y]))
        ref_brier.append(sum((p64[i, k] - (k == y)) ** 2 for k in range(p64.shape[1])))
        ref_acc.append(float(np.argmax(p64[i]) == y))
        ref_agree.append(float(np.argmax(p64[i]) == np.argmax(t64[i])))
        ref_kl.append(sum(t * np.log(t / s) for t, s in zip(t64[i], p64[i]) if t > 0))
    np.testing.assert_allclose(metrics.nll(probs, labels), ref_nll, rtol=1e-5)
    np.testing.assert_allclose(metrics.brier(probs, labels), ref_brier, rtol=1e-5, atol=1e-7)
    np.testing.assert_array_equal(metrics.accuracy(probs, labels), ref_acc)
    np.testing.assert_array_equal(metrics.agreement(probs, teacher), ref_agree)
    np.testing.assert_allclose(metrics.teacher_student_kl(teacher, probs), ref_kl, rtol=1e-4,
                               atol=1e-6)


# ---------------------------------------------------------------------------------------
# jit, batch axes, dtypes.

PER_EXAMPLE = [metrics.accuracy, metrics.nll, metrics.brier]
PAIRWISE = [metrics.agreement, metrics.teacher_student_kl]
SCORES = [metrics.max_softmax_prob, metrics.negative_entropy]
BATCH = [metrics.ece, metrics.mce, metrics.classwise_ece, metrics.adaptive_ece]


@pytest.mark.parametrize("fn", PER_EXAMPLE + BATCH)
def test_jit_matches_eager(fn):
    probs, labels = _random_batch(5, n=64)
    np.testing.assert_allclose(jax.jit(fn)(probs, labels), fn(probs, labels), rtol=1e-6)


@pytest.mark.parametrize("fn", PAIRWISE)
def test_jit_matches_eager_pairwise(fn):
    probs, _ = _random_batch(6, n=64)
    other, _ = _random_batch(7, n=64)
    np.testing.assert_allclose(jax.jit(fn)(probs, other), fn(probs, other), rtol=1e-6)


def test_jit_with_static_num_bins_and_diagram():
    probs, labels = _random_batch(8, n=64)
    jitted = jax.jit(metrics.ece, static_argnames="num_bins")
    np.testing.assert_allclose(jitted(probs, labels, num_bins=7),
                               metrics.ece(probs, labels, num_bins=7), rtol=1e-6)
    eager = metrics.reliability_diagram(probs, labels, 7)
    traced = jax.jit(metrics.reliability_diagram, static_argnums=2)(probs, labels, 7)
    for a, b in zip(eager, traced):
        np.testing.assert_allclose(a, b, rtol=1e-6)


@pytest.mark.parametrize("fn", PER_EXAMPLE)
def test_vmap_per_example(fn):
    probs, labels = _random_batch(9, n=12)
    probs, labels = probs.reshape(3, 4, -1), labels.reshape(3, 4)
    np.testing.assert_allclose(jax.vmap(fn)(probs, labels), fn(probs, labels), rtol=1e-6)


@pytest.mark.parametrize("fn", PER_EXAMPLE)
def test_leading_batch_axes_per_example(fn):
    probs, labels = _random_batch(10, n=24)
    out = fn(probs.reshape(2, 3, 4, -1), labels.reshape(2, 3, 4))
    assert out.shape == (2, 3, 4)
    np.testing.assert_allclose(out.reshape(-1), fn(probs, labels), rtol=1e-6)


@pytest.mark.parametrize("fn", PAIRWISE)
def test_leading_batch_axes_pairwise(fn):
    a, _ = _random_batch(11, n=24)
    b, _ = _random_batch(12, n=24)
    out = fn(a.reshape(4, 6, -1), b.reshape(4, 6, -1))
    assert out.shape == (4, 6)
    np.testing.assert_allclose(out.reshape(-1), fn(a, b), rtol=1e-6)


@pytest.mark.parametrize("fn", SCORES)
def test_leading_batch_axes_scores(fn):
    probs, _ = _random_batch(13, n=24)
    out = jax.jit(fn)(probs.reshape(4, 6, -1))
    assert out.shape == (4, 6)
    np.testing.assert_allclose(out.reshape(-1), fn(probs), rtol=1e-6)


@pytest.mark.parametrize("fn", BATCH)
def test_leading_batch_axes_calibration(fn):
    probs, labels = _random_batch(14, n=60)
    np.testing.assert_allclose(fn(probs.reshape(3, 4, 5, -1), labels.reshape(3, 4, 5)),
                               fn(probs, labels), rtol=1e-6)


def test_low_precision_inputs_are_promoted():
    probs = PROBS.astype(jnp.bfloat16)
    assert metrics.nll(probs, LABELS).dtype == jnp.float32
    assert metrics.ece(probs, LABELS).dtype == jnp.float32


def test_float64_inputs_stay_float64(x64):
    probs = jnp.asarray(np.array([[0.5, 0.3, 0.2], [0.5, 0.25, 0.25], [0.1, 0.1, 0.8],
                                  [0.0, 0.7, 0.3]], np.float64))
    assert metrics.brier(probs, LABELS).dtype == jnp.float64
    np.testing.assert_allclose(metrics.ece(probs, LABELS, num_bins=5), 0.225, rtol=1e-12)


# ---------------------------------------------------------------------------------------
# Bad input.

@pytest.mark.parametrize("fn", PER_EXAMPLE + BATCH + [metrics.reliability_diagram])
def test_label_shape_mismatch_names_labels(fn):
    with pytest.raises(ValueError, match="`labels` has shape"):
        fn(PROBS, LABELS[:3])


@pytest.mark.parametrize("fn", PER_EXAMPLE + BATCH + [metrics.reliability_diagram])
def test_float_labels_rejected(fn):
    with pytest.raises(TypeError, match="`labels` must hold integer"):
        fn(PROBS, LABELS.astype(jnp.float32))


@pytest.mark.parametrize("fn", PER_EXAMPLE + BATCH)
def test_out_of_range_labels_rejected(fn):
    with pytest.raises(ValueError, match=r"`labels` must lie in \[0, 3\)"):
        fn(PROBS, jnp.array([0, 1, 2, 3]))


def test_integer_probs_rejected():
    with pytest.raises(TypeError, match="`probs` must be a floating array"):
        metrics.nll(jnp.array([[0, 1]]), jnp.array([1]))


@pytest.mark.parametrize("num_bins", [0, -3, 2.5, True])
def test_bad_num_bins(num_bins):
    with pytest.raises(ValueError, match="`num_bins` must be a positive Python int"):
        metrics.ece(PROBS, LABELS, num_bins=num_bins)


@pytest.mark.parametrize("fn", PAIRWISE)
def test_pairwise_shape_mismatch(fn):
    with pytest.raises(ValueError, match="has shape .* they must match"):
        fn(PROBS, PROBS[:, :2])


def test_adaptive_from_confidence_shape_mismatch():
    with pytest.raises(ValueError, match="`confidence` has shape"):
        metrics.adaptive_ece_from_confidence(jnp.ones(3), jnp.ones(4))


def test_bad_floor():
    with pytest.raises(ValueError, match="`floor` must be > 0"):
        metrics.nll(PROBS, LABELS, floor=0.0)
