"""Post-hoc temperature scaling (Guo et al., 2017): one scalar T fitted on held-out logits.

The NLL of softmax(beta * z) is convex in the inverse temperature beta = 1/T (a log-sum-exp
of functions linear in beta, minus a linear term), and its derivative

    d NLL / d beta = mean( E_{softmax(beta z)}[z] - z_y )

is monotone. So the optimum is found exactly by bisection on the sign of that derivative in
log(beta): no learning rate, no initialisation, and jit-able.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from cud_jax.losses import _validate

#: Temperatures are searched in [MIN_TEMPERATURE, MAX_TEMPERATURE].
MIN_TEMPERATURE = 1e-2
MAX_TEMPERATURE = 1e2


def _nll_slope(beta: jax.Array, logits: jax.Array, labels: jax.Array, weights: jax.Array
               ) -> jax.Array:
    probs = jax.nn.softmax(beta * logits, axis=-1)
    expected = jnp.sum(probs * logits, axis=-1)
    return jnp.sum(weights * (expected - _validate.take_label(logits, labels)))


def fit_temperature(logits, labels, *, mask=None, num_steps: int = 60) -> jax.Array:
    """Fits the temperature T minimising the mean NLL of softmax(logits / T).

    Args:
      logits: `[..., K]` held-out logits (the validation split, never the test set).
      labels: `[...]` integer labels.
      mask: optional `[...]` boolean/0-1 weights (e.g. to drop padded examples).
      num_steps: bisection steps in log(1/T); 60 steps narrow the range of 2*ln(100) to below
        1e-16 relative, i.e. exact in float32.

    Returns:
      Scalar temperature in [MIN_TEMPERATURE, MAX_TEMPERATURE]. If the NLL keeps falling at a
      boundary (e.g. a perfectly separated validation set wants T -> 0), that boundary is
      returned.
    """
    logits = _validate.class_array(logits, "logits")
    labels = _validate.label_array(labels, logits)
    weights = jnp.ones(labels.shape, logits.dtype) if mask is None else jnp.asarray(
        mask, logits.dtype)
    _validate.same_shape(weights, labels, "mask", "labels")
    logits, labels, weights = (logits.reshape(-1, logits.shape[-1]), labels.reshape(-1),
                               weights.reshape(-1))

    def step(_, bounds):
        lo, hi = bounds
        mid = 0.5 * (lo + hi)
        rising = _nll_slope(jnp.exp(mid), logits, labels, weights) > 0
        return jnp.where(rising, lo, mid), jnp.where(rising, mid, hi)

    lo = jnp.log(1.0 / MAX_TEMPERATURE).astype(logits.dtype)
    hi = jnp.log(1.0 / MIN_TEMPERATURE).astype(logits.dtype)
    lo, hi = jax.lax.fori_loop(0, num_steps, step, (lo, hi))
    return 1.0 / jnp.exp(0.5 * (lo + hi))


def temperature_scale(logits, temperature) -> jax.Array:
    """Logits divided by the temperature (softmax of the result is the calibrated output).

    A concrete scalar temperature must be > 0 (checked eagerly; under `jit` only in
    `cud_jax.losses.checked` mode).
    """
    _validate.check_temperature(temperature)
    logits = _validate.class_array(logits, "logits")
    return logits / temperature
