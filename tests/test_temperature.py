"""Post-hoc temperature scaling."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cud_jax import losses


def _nll(logits, labels, temperature):
    return float(jnp.mean(losses.cross_entropy(logits / temperature, labels)))


@pytest.mark.parametrize("true_temperature", [0.5, 1.0, 2.5])
def test_recovers_a_known_temperature(true_temperature):
    k1, k2 = jax.random.split(jax.random.PRNGKey(0))
    logits = 3 * jax.random.normal(k1, (40000, 10))
    labels = jax.random.categorical(k2, logits / true_temperature)
    fitted = float(losses.fit_temperature(logits, labels))
    assert abs(fitted - true_temperature) < 0.05 * true_temperature


def test_fitted_temperature_is_a_minimum_of_the_nll():
    k1, k2 = jax.random.split(jax.random.PRNGKey(1))
    logits = 4 * jax.random.normal(k1, (2000, 7))
    labels = jax.random.categorical(k2, logits / 1.7)
    t = float(jax.jit(losses.fit_temperature)(logits, labels))
    best = _nll(logits, labels, t)
    assert best <= _nll(logits, labels, t * 1.01) and best <= _nll(logits, labels, t / 1.01)


def test_mask_drops_padded_examples():
    k1, k2 = jax.random.split(jax.random.PRNGKey(2))
    logits = 3 * jax.random.normal(k1, (1000, 5))
    labels = jax.random.categorical(k2, logits / 2.0)
    padded_logits = jnp.concatenate([logits, 50 * jnp.ones((100, 5)).at[:, 0].set(60)])
    padded_labels = jnp.concatenate([labels, jnp.ones(100, jnp.int32)])
    mask = jnp.arange(1100) < 1000
    np.testing.assert_allclose(losses.fit_temperature(padded_logits, padded_labels, mask=mask),
                               losses.fit_temperature(logits, labels), rtol=1e-5)


def test_separable_data_hits_the_lower_bound():
    logits = jnp.array([[5.0, 0.0], [0.0, 5.0]])
    t = float(losses.fit_temperature(logits, jnp.array([0, 1])))
    assert t == pytest.approx(losses.temperature.MIN_TEMPERATURE, rel=1e-3)
