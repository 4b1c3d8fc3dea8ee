"""The optimiser built from a stage config: the head's learning-rate factor."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from cud_jax.configs import optimizer_config
from cud_jax.train import optim


def _params():
    key1, key2, key3 = jax.random.split(jax.random.PRNGKey(0), 3)
    return {"encoder": {"kernel": jax.random.normal(key1, (4, 3)), "bias": jnp.ones(3)},
            "classifier": {"kernel": jax.random.normal(key2, (3, 5)),
                           "bias": jax.random.normal(key3, (5,))}}


def _updates(optimizer, head_lr_scale, params, steps=3, **fields):
    cfg = ml_collections.ConfigDict(optimizer_config(optimizer=optimizer, lr=0.1,
                                                     head_lr_scale=head_lr_scale, **fields))
    tx = optim.make_optimizer(cfg, steps_per_epoch=10, total_steps=100)
    state = tx.init(params)
    grads = jax.tree_util.tree_map(lambda p: jnp.cos(p) + 0.5, params)
    for _ in range(steps):
        updates, state = tx.update(grads, state, params)
    return updates


@pytest.mark.parametrize("optimizer", ["sgd", "adamw"])
def test_head_lr_scale_multiplies_the_head_update_only(optimizer):
    params = _params()
    # Past the warm-up's first step (adamw's schedule starts at 0).
    plain = _updates(optimizer, 1.0, params, lr_milestones=(), warmup_fraction=0.1)
    scaled = _updates(optimizer, 10.0, params, lr_milestones=(), warmup_fraction=0.1)
    for name in ("kernel", "bias"):
        np.testing.assert_array_equal(scaled["encoder"][name], plain["encoder"][name])
        np.testing.assert_allclose(scaled["classifier"][name], 10 * plain["classifier"][name],
                                   rtol=1e-6)
        assert np.abs(plain["classifier"][name]).max() > 0


def test_head_lr_scale_names_the_fix_when_the_model_has_no_head():
    params = {"encoder": {"kernel": jnp.ones((2, 2))}}
    cfg = ml_collections.ConfigDict(optimizer_config(optimizer="adamw", head_lr_scale=5.0))
    tx = optim.make_optimizer(cfg, steps_per_epoch=1, total_steps=10)
    with pytest.raises(ValueError, match="head_lr_scale=1"):
        tx.init(params)
