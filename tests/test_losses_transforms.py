"""Every public loss under jit, vmap and extra leading batch axes gives the same values."""

import jax
import numpy as np
import pytest

from cud_jax import losses

K = 6
# Each case maps (logits, teacher_probs, labels) to the function's output.
CASES = {
    "cross_entropy": lambda z, p, y: losses.cross_entropy(z, y),
    "label_smoothing_ce": lambda z, p, y: losses.label_smoothing_ce(z, y),
    "focal_loss": lambda z, p, y: losses.focal_loss(z, y),
    "entropy": lambda z, p, y: losses.entropy(z),
    "dus_teacher_loss": lambda z, p, y: losses.dus_teacher_loss(z, y),
    "wclip": lambda z, p, y: losses.wclip(p, y),
    "wclip_delta": lambda z, p, y: losses.wclip_delta(p, y),
    "kd_loss": lambda z, p, y: losses.kd_loss(z, p, temperature=4.0),
    "dkd_loss": lambda z, p, y: losses.dkd_loss(z, p, y),
    "cud_student_loss": lambda z, p, y: losses.cud_student_loss(z, p, y, temperature=4.0),
    "temperature_scale": lambda z, p, y: losses.temperature_scale(z, 2.0),
}


def _inputs(shape):
    k1, k2, k3 = jax.random.split(jax.random.PRNGKey(0), 3)
    logits = 2 * jax.random.normal(k1, shape + (K,))
    probs = jax.nn.softmax(3 * jax.random.normal(k2, shape + (K,)))
    labels = jax.random.randint(k3, shape, 0, K)
    return logits, probs, labels


@pytest.mark.parametrize("name", sorted(CASES))
def test_jit_vmap_and_leading_axes_agree(name):
    fn = CASES[name]
    logits, probs, labels = _inputs((2, 3))
    eager = fn(logits, probs, labels)
    np.testing.assert_allclose(jax.jit(fn)(logits, probs, labels), eager, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(jax.vmap(fn)(logits, probs, labels), eager, rtol=1e-5, atol=1e-6)
    flat = fn(logits.reshape(6, K), probs.reshape(6, K), labels.reshape(6))
    np.testing.assert_allclose(flat.reshape(eager.shape), eager, rtol=1e-5, atol=1e-6)
    single = jax.vmap(jax.vmap(fn))(logits, probs, labels)  # a lone example: no batch axis
    np.testing.assert_allclose(single, eager, rtol=1e-5, atol=1e-6)
