"""Teacher objectives: CE, label smoothing, focal, entropy and DUS."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from cud_jax import losses

LN2 = np.log(2.0)
# softmax = [0.25, 0.5, 0.25]: every value below follows by hand from these probabilities.
LOGITS = jnp.log(jnp.array([[1.0, 2.0, 1.0], [1.0, 2.0, 1.0]]))
LABELS = jnp.array([1, 0])


def test_cross_entropy_by_hand():
    np.testing.assert_allclose(losses.cross_entropy(LOGITS, LABELS), [LN2, 2 * LN2], rtol=1e-6)


def test_label_smoothing_by_hand():
    uniform_ce = (2 * LN2 + LN2 + 2 * LN2) / 3
    expected = [0.9 * LN2 + 0.1 * uniform_ce, 0.9 * 2 * LN2 + 0.1 * uniform_ce]
    np.testing.assert_allclose(losses.label_smoothing_ce(LOGITS, LABELS), expected, rtol=1e-6)


def test_label_smoothing_zero_is_cross_entropy():
    np.testing.assert_allclose(losses.label_smoothing_ce(LOGITS, LABELS, smoothing=0.0),
                                losses.cross_entropy(LOGITS, LABELS))


def test_focal_by_hand():
    expected = [0.5**2 * LN2, 0.75**2 * 2 * LN2]
    np.testing.assert_allclose(losses.focal_loss(LOGITS, LABELS, gamma=2.0), expected, rtol=1e-6)
    np.testing.assert_allclose(losses.focal_loss(LOGITS, LABELS, gamma=0.0),
                                losses.cross_entropy(LOGITS, LABELS), rtol=1e-6)


def test_entropy_by_hand():
    np.testing.assert_allclose(losses.entropy(LOGITS), [1.5 * LN2] * 2, rtol=1e-6)
    np.testing.assert_allclose(losses.probs_entropy(jnp.array([0.5, 0.5, 0.0])), LN2, rtol=1e-6)


def test_dus_by_hand():
    h = 1.5 * LN2
    # label 1: p_y = 0.5 is not below tau_gate = 0.5, so w = 0 + (1 - 0.5) = 0.5.
    easy = LN2 + 0.5**10 * LN2 - 0.1 * 0.5 * h
    # label 0: p_y = 0.25 < 0.5, so w = 1 + 0.75.
    hard = 2 * LN2 + 0.75**10 * 2 * LN2 - 0.1 * 1.75 * h
    np.testing.assert_allclose(losses.dus_teacher_loss(LOGITS, LABELS), [easy, hard], rtol=1e-6)
    capped = losses.dus_teacher_loss(LOGITS, LABELS, w_max=1.0)
    np.testing.assert_allclose(capped[1], 2 * LN2 + 0.75**10 * 2 * LN2 - 0.1 * 1.0 * h,
                                rtol=1e-6)


def test_dus_gate_values():
    p_y = jnp.array([0.1, 0.5, 0.9, 1.0])
    np.testing.assert_allclose(losses.dus_gate(p_y), [1.9, 0.5, 0.1, 0.0], atol=1e-6)
    np.testing.assert_allclose(losses.dus_gate(p_y, rho=2.0, beta=2.0, w_max=2.0),
                                [2.0, 0.5, 0.02, 0.0], atol=1e-6)


def test_dus_gate_carries_no_gradient():
    logits = jax.random.normal(jax.random.PRNGKey(0), (6, 5)) * 2
    labels = jnp.arange(6) % 5

    def with_constant_gate(z, w):
        log_p = jax.nn.log_softmax(z)
        log_p_y = jnp.take_along_axis(log_p, labels[:, None], -1)[:, 0]
        p_y = jnp.exp(log_p_y)
        focal = -((1 - p_y) ** 10) * log_p_y
        return jnp.sum(-log_p_y + focal - 0.1 * w * losses.entropy(z))

    p_y = jnp.take_along_axis(jax.nn.softmax(logits), labels[:, None], -1)[:, 0]
    gate = losses.dus_gate(p_y)
    got = jax.grad(lambda z: jnp.sum(losses.dus_teacher_loss(z, labels)))(logits)
    expected = jax.grad(with_constant_gate)(logits, gate)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    # Letting the gradient through the gate would give something else: the test can fail.
    leaky = jax.grad(lambda z: with_constant_gate(
        z, losses.dus_gate(jnp.take_along_axis(jax.nn.softmax(z), labels[:, None], -1)[:, 0])))(
            logits)
    assert not np.allclose(got, leaky, rtol=1e-3)


@pytest.mark.parametrize("fn", [
    losses.cross_entropy, losses.label_smoothing_ce, losses.focal_loss,
    lambda z, y: losses.focal_loss(z, y, gamma=10.0),
    # With rho = 0 the gate is piecewise constant, so finite differences agree with the
    # stop-gradient derivative; the smooth gate is covered by the no-gradient test above.
    lambda z, y: losses.dus_teacher_loss(z, y, rho=0.0),
    lambda z, y: losses.entropy(z),
])
def test_gradients_match_finite_differences(fn, x64):
    logits = jax.random.normal(jax.random.PRNGKey(1), (4, 5), dtype=jnp.float64)
    labels = jnp.array([0, 3, 4, 1])
    check_grads(lambda z: fn(z, labels), (logits,), order=2, modes=["rev", "fwd"])


@pytest.mark.parametrize("num_classes", [2, 1000])
@pytest.mark.parametrize("fn", [losses.cross_entropy, losses.label_smoothing_ce,
                                losses.focal_loss, losses.dus_teacher_loss])
def test_extreme_logits_are_finite(fn, num_classes):
    logits = jnp.zeros((4, num_classes)).at[:, 0].set(1e4).at[1, 1].set(-1e4).at[2:, 1].set(1e4)
    labels = jnp.array([0, 1, 1, num_classes - 1])
    value, grad = jax.value_and_grad(lambda z: jnp.sum(fn(z, labels)))(logits)
    assert np.isfinite(value) and np.all(np.isfinite(grad))


def test_entropy_with_minus_infinity_logits():
    logits = jnp.array([[0.0, -jnp.inf, 0.0]])
    np.testing.assert_allclose(losses.entropy(logits), [LN2], rtol=1e-6)


def test_bfloat16_logits_compute_in_float32():
    out = losses.dus_teacher_loss(LOGITS.astype(jnp.bfloat16), LABELS)
    assert out.dtype == jnp.float32


def test_bad_inputs_name_the_argument():
    with pytest.raises(ValueError, match="labels"):
        losses.cross_entropy(LOGITS, jnp.array([0, 1, 2]))
    with pytest.raises(TypeError, match="labels"):
        losses.cross_entropy(LOGITS, jnp.array([0.0, 1.0]))
    with pytest.raises(ValueError, match=r"labels.*\[0, 3\)"):
        losses.cross_entropy(LOGITS, jnp.array([0, 3]))
    with pytest.raises(ValueError, match="labels"):
        losses.dus_teacher_loss(LOGITS, jnp.array([-1, 0]))
    with pytest.raises(TypeError, match="logits"):
        losses.cross_entropy(jnp.array([[1, 2]]), jnp.array([0]))
    with pytest.raises(ValueError, match="smoothing"):
        losses.label_smoothing_ce(LOGITS, LABELS, smoothing=1.5)
