"""W-Clip, KD, DKD and the CUD student loss."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from cud_jax import losses

close = np.testing.assert_allclose


def _random_probs(key, shape, sharpness=3.0):
    return jax.nn.softmax(sharpness * jax.random.normal(key, shape), axis=-1)


# ----------------------------------------------------------------------------- W-Clip
def test_wclip_by_hand():
    probs = jnp.array([[0.6, 0.3, 0.1],    # top = 0, label 1: delta = min(0.3, 0.7*0.3) = 0.21
                       [0.9, 0.05, 0.05],  # top = 0, label 2: delta = min(0.45, 0.595) = 0.45
                       [0.2, 0.7, 0.1]])   # top = label: untouched
    labels = jnp.array([1, 2, 1])
    expected = [[0.39, 0.51, 0.1], [0.45, 0.05, 0.5], [0.2, 0.7, 0.1]]
    close(losses.wclip(probs, labels), expected, atol=1e-6)
    close(losses.wclip_delta(probs, labels), [0.21, 0.45, 0.0], atol=1e-6)
    stats = losses.wclip_stats(probs, labels)
    close(stats.fire_rate, 2 / 3, rtol=1e-6)
    close(stats.moved_mass, 0.66 / 3, rtol=1e-6)
    close(stats.moved_mass_when_fired, 0.33, rtol=1e-6)


def test_wclip_parameters_bound_the_moved_mass():
    probs = jnp.array([[0.6, 0.3, 0.1]])
    close(losses.wclip(probs, jnp.array([2]), eta=0.1, margin=1.0), [[0.54, 0.3, 0.16]],
          atol=1e-6)
    close(losses.wclip(probs, jnp.array([2]), eta=1.0, margin=0.5), [[0.35, 0.3, 0.35]],
          atol=1e-6)


def test_wclip_properties_on_random_rows():
    key_p, key_y = jax.random.split(jax.random.PRNGKey(0))
    probs = _random_probs(key_p, (512, 10))
    labels = jax.random.randint(key_y, (512,), 0, 10)
    q = np.asarray(losses.wclip(probs, labels))
    p = np.asarray(probs)
    top = p.argmax(-1)
    right = top == np.asarray(labels)
    assert right.any() and (~right).any()
    np.testing.assert_array_equal(q[right], p[right])       # correct rows untouched, exactly
    close(q.sum(-1), 1.0, atol=1e-6)                          # mass kept
    assert (q >= 0).all()
    rows = np.nonzero(~right)[0]
    y = np.asarray(labels)[rows]
    assert (q[rows, y] > p[rows, y]).all() and (q[rows, top[rows]] < p[rows, top[rows]]).all()
    # Every class other than y and k* keeps its probability, hence its odds.
    untouched = np.ones_like(p, bool)
    untouched[rows, y] = untouched[rows, top[rows]] = False
    np.testing.assert_array_equal(q[untouched], p[untouched])
    # margin < 1: the old top class keeps more mass than the label had, so W-Clip narrows
    # the gap without ever reversing it past the label's old value.
    assert (q[rows, top[rows]] > p[rows, y]).all()


def test_wclip_unlabeled_rows_are_identity():
    probs = _random_probs(jax.random.PRNGKey(1), (4, 5))
    labels = jnp.array([-1, -1, -1, -1])
    np.testing.assert_array_equal(losses.wclip(probs, labels), probs)
    assert float(losses.wclip_stats(probs, labels).fire_rate) == 0.0


# ----------------------------------------------------------------------------- KD
def _numpy_kl(p, q):
    return np.sum(np.where(p > 0, p * (np.log(np.where(p > 0, p, 1)) - np.log(q)), 0), -1)


def _numpy_softmax(z):
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def test_kd_matches_numpy():
    k1, k2 = jax.random.split(jax.random.PRNGKey(2))
    student = np.asarray(jax.random.normal(k1, (8, 6)) * 2, np.float64)
    teacher_logits = np.asarray(jax.random.normal(k2, (8, 6)) * 3, np.float64)
    T = 4.0
    expected = T**2 * _numpy_kl(_numpy_softmax(teacher_logits / T), _numpy_softmax(student / T))
    got = losses.kd_loss(student, _numpy_softmax(teacher_logits).astype(np.float32),
                         temperature=T)
    close(got, expected, rtol=1e-4)


def test_kd_is_zero_when_student_equals_teacher():
    logits = jax.random.normal(jax.random.PRNGKey(3), (5, 7))
    close(losses.kd_loss(logits, jax.nn.softmax(logits), temperature=2.0), 0.0, atol=1e-5)


def test_kd_handles_exact_zeros_in_targets():
    targets = jnp.array([[0.5, 0.5, 0.0], [1.0, 0.0, 0.0]])
    student = jnp.array([[1.0, 1.0, -3.0], [2.0, 0.0, 0.0]])
    value, grad = jax.value_and_grad(
        lambda z: jnp.sum(losses.kd_loss(z, targets, temperature=4.0)))(student)
    assert np.isfinite(value) and np.all(np.isfinite(grad))
    # Teacher zeros stay zeros after tempering: KL(onehot || s) = -log s_0 at T.
    s = _numpy_softmax(np.array([2.0, 0.0, 0.0]) / 4)
    close(losses.kd_loss(student, targets, temperature=4.0)[1], -16 * np.log(s[0]), rtol=1e-5)


def test_kd_gives_no_gradient_to_the_teacher():
    student = jnp.array([[0.0, 1.0, 2.0]])
    grad = jax.grad(lambda p: jnp.sum(losses.kd_loss(student, p, temperature=2.0)))(
        jnp.array([[0.2, 0.3, 0.5]]))
    np.testing.assert_array_equal(grad, 0.0)


# ----------------------------------------------------------------------------- DKD
def _numpy_dkd(student, teacher_probs, labels, T, alpha, beta):
    out = []
    for z, p, y in zip(student, teacher_probs, labels):
        pt = _numpy_softmax(np.log(p) / T)
        ps = _numpy_softmax(z / T)
        bt, bs = np.array([pt[y], 1 - pt[y]]), np.array([ps[y], 1 - ps[y]])
        rest = np.arange(len(p)) != y
        nt, ns = pt[rest] / pt[rest].sum(), ps[rest] / ps[rest].sum()
        out.append(T**2 * (alpha * _numpy_kl(bt, bs) + beta * _numpy_kl(nt, ns)))
    return np.array(out)


def test_dkd_matches_numpy():
    k1, k2 = jax.random.split(jax.random.PRNGKey(4))
    student = np.asarray(jax.random.normal(k1, (6, 5)) * 2, np.float64)
    teacher = _numpy_softmax(np.asarray(jax.random.normal(k2, (6, 5)) * 3, np.float64))
    labels = np.array([0, 1, 2, 3, 4, 0])
    expected = _numpy_dkd(student, teacher, labels, 4.0, 1.0, 8.0)
    close(losses.dkd_loss(student, teacher.astype(np.float32), labels), expected, rtol=1e-4)


def test_dkd_decomposes_kd():
    """KD = TCKD + (1 - p_t) NCKD (Zhao et al., eq. 4): an identity independent of the code."""
    k1, k2 = jax.random.split(jax.random.PRNGKey(5))
    student = jax.random.normal(k1, (16, 9)) * 2
    teacher = _random_probs(k2, (16, 9))
    labels = jnp.arange(16) % 9
    T = 3.0
    tckd = losses.dkd_loss(student, teacher, labels, temperature=T, alpha=1.0, beta=0.0)
    nckd = losses.dkd_loss(student, teacher, labels, temperature=T, alpha=0.0, beta=1.0)
    pt_y = jnp.take_along_axis(losses.temper_probs(teacher, T), labels[:, None], -1)[:, 0]
    close(tckd + (1 - pt_y) * nckd, losses.kd_loss(student, teacher, temperature=T), rtol=2e-4,
          atol=1e-5)


def test_dkd_teacher_certain_on_target_is_finite():
    targets = jnp.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    student = jnp.array([[1.0, 0.0, -1.0], [5.0, -5.0, 0.0]])
    value, grad = jax.value_and_grad(
        lambda z: jnp.sum(losses.dkd_loss(z, targets, jnp.array([0, 0]))))(student)
    assert np.isfinite(value) and np.all(np.isfinite(grad))


def test_dkd_needs_two_classes():
    with pytest.raises(ValueError, match="student_logits"):
        losses.dkd_loss(jnp.zeros((2, 1)), jnp.ones((2, 1)), jnp.array([0, 0]))


# ----------------------------------------------------------------------------- CUD
def test_cud_is_kd_on_wclip_targets_plus_ce():
    k1, k2, k3 = jax.random.split(jax.random.PRNGKey(6), 3)
    student = jax.random.normal(k1, (32, 10))
    teacher = _random_probs(k2, (32, 10))
    labels = jax.random.randint(k3, (32,), 0, 10)
    expected = (0.8 * losses.kd_loss(student, losses.wclip(teacher, labels), temperature=4.0)
                + 0.2 * losses.cross_entropy(student, labels))
    close(losses.cud_student_loss(student, teacher, labels, temperature=4.0), expected,
          rtol=1e-6)


def test_cud_unlabeled_rows_get_kd_only():
    student = jnp.array([[0.0, 1.0, 2.0]])
    teacher = jnp.array([[0.7, 0.2, 0.1]])
    got = losses.cud_student_loss(student, teacher, jnp.array([-1]), temperature=2.0)
    close(got, 0.8 * losses.kd_loss(student, teacher, temperature=2.0), rtol=1e-6)


@pytest.mark.parametrize("fn", [
    lambda z, p, y: losses.kd_loss(z, p, temperature=4.0),
    lambda z, p, y: losses.dkd_loss(z, p, y, temperature=4.0),
    lambda z, p, y: losses.cud_student_loss(z, p, y, temperature=4.0),
])
def test_student_gradients_match_finite_differences(fn, x64):
    k1, k2 = jax.random.split(jax.random.PRNGKey(7))
    student = jax.random.normal(k1, (3, 5), dtype=jnp.float64)
    teacher = jax.nn.softmax(3 * jax.random.normal(k2, (3, 5), dtype=jnp.float64))
    labels = jnp.array([0, 2, 4])
    check_grads(lambda z: fn(z, teacher, labels), (student,), order=2, modes=["rev", "fwd"])


@pytest.mark.parametrize("num_classes", [2, 1000])
def test_student_losses_extreme_logits_are_finite(num_classes):
    student = jnp.zeros((3, num_classes)).at[:, 0].set(1e4).at[1, 1].set(-1e4)
    teacher = jax.nn.softmax(jnp.zeros((3, num_classes)).at[:, 1].set(1e4).at[2, 0].set(-1e4))
    labels = jnp.array([1, 0, num_classes - 1])
    for fn in (lambda z: losses.kd_loss(z, teacher, temperature=4.0),
               lambda z: losses.dkd_loss(z, teacher, labels),
               lambda z: losses.cud_student_loss(z, teacher, labels, temperature=4.0)):
        value, grad = jax.value_and_grad(lambda z: jnp.sum(fn(z)))(student)
        assert np.isfinite(value) and np.all(np.isfinite(grad))


def test_student_bad_inputs():
    with pytest.raises(ValueError, match="teacher_probs"):
        losses.kd_loss(jnp.zeros((2, 3)), jnp.ones((2, 4)) / 4, temperature=1.0)
    with pytest.raises(ValueError, match="temperature"):
        losses.kd_loss(jnp.zeros((2, 3)), jnp.ones((2, 3)) / 3, temperature=0.0)
    with pytest.raises(ValueError, match="labels"):
        losses.wclip(jnp.ones((2, 3)) / 3, jnp.array([0, 5]))


def test_corrected_targets_give_wclip_and_its_statistics_at_once():
    probs = jax.nn.softmax(3 * jax.random.normal(jax.random.PRNGKey(3), (4, 8, 6)))
    labels = (jnp.arange(32).reshape(4, 8) % 7) - 1  # some unlabeled (-1) rows
    out = losses.corrected_targets(probs, labels, eta=0.4, margin=0.6)
    np.testing.assert_allclose(out.probs, losses.wclip(probs, labels, eta=0.4, margin=0.6),
                               atol=1e-7)
    for got, want in zip(out.stats, losses.wclip_stats(probs, labels, eta=0.4, margin=0.6)):
        np.testing.assert_allclose(got, want, rtol=1e-6)
    plain = losses.corrected_targets(probs, labels, correction="none")
    np.testing.assert_array_equal(plain.probs, probs)
    assert float(plain.stats.fire_rate) == float(out.stats.fire_rate)
    with pytest.raises(ValueError, match="valid values: none, wclip, kl_wrong"):
        losses.corrected_targets(probs, labels, correction="clip")


@pytest.mark.parametrize("correction", ["none", "kl_wrong", "euclid_wrong"])
def test_cud_student_loss_with_other_corrections_is_kd_on_those_targets(correction):
    key_z, key_p = jax.random.split(jax.random.PRNGKey(5))
    logits = jax.random.normal(key_z, (16, 5))
    teacher = jax.nn.softmax(3 * jax.random.normal(key_p, (16, 5)))
    labels = jnp.arange(16) % 5
    q = losses.corrected_targets(teacher, labels, correction=correction).probs
    want = (0.8 * losses.kd_loss(logits, q, temperature=2.0)
            + 0.2 * losses.cross_entropy(logits, labels))
    got, terms = jax.jit(lambda z, p, y: losses.cud_student_loss(
        z, p, y, temperature=2.0, correction=correction, return_terms=True))(
            logits, teacher, labels)
    np.testing.assert_allclose(got, want, rtol=1e-5)
    np.testing.assert_allclose(terms.ce, losses.cross_entropy(logits, labels), rtol=1e-6)
