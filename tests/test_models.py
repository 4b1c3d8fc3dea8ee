"""Tests for cud_jax.models: registry, parameter counts, forward pass, modes, dtypes.

Parameter counts are pinned to the PyTorch RepDistiller definitions at num_classes=100,
i.e. `sum(p.numel() for p in model.parameters())` (BatchNorm running statistics excluded).
Counting uses `nnx.eval_shape`, so no parameters are drawn. Forward passes use 2 images of
32x32 and run jitted through `nnx.split` / `nnx.merge`, as the trainer does.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from cud_jax import models

# PyTorch RepDistiller counts, num_classes=100.
PYTORCH_PARAM_COUNTS = {
    "resnet8": 83_892,
    "resnet14": 181_108,
    "resnet20": 278_324,
    "resnet32": 472_756,
    "resnet44": 667_188,
    "resnet56": 861_620,
    "resnet110": 1_736_564,
    "resnet8x4": 1_233_540,
    "resnet32x4": 7_433_860,
    "wrn_16_1": 180_916,
    "wrn_16_2": 703_284,
    "wrn_40_1": 569_780,
    "wrn_40_2": 2_255_156,
    "vgg8": 3_965_028,
    "vgg11": 9_277_284,
    "vgg13": 9_462_180,
    "vgg16": 14_774_436,
    "vgg19": 20_086_692,
    "mobilenetv2": 812_836,
    "shufflenetv1": 949_258,
    "shufflenetv2": 1_355_528,
}

# One model per family (both ShuffleNets: their blocks share nothing).
FORWARD_MODELS = ["resnet8", "wrn_16_1", "vgg8", "mobilenetv2", "shufflenetv1",
                  "shufflenetv2"]


def _abstract(name, num_classes=100, **kwargs):
    return nnx.eval_shape(
        lambda: models.create_model(name, num_classes=num_classes, rngs=nnx.Rngs(0), **kwargs))


def _materialise(abstract_model, seed=0):
    """Fills an `nnx.eval_shape` model with numpy values: skips JAX's random init.

    Drawing the real initialisation op by op costs tens of seconds per convnet on a slow
    CPU (one small XLA program per parameter shape); forward-shape tests only need sane
    values. Kernels get std 1/sqrt(fan_in), biases 0, BN scale 1 / mean 0 / var 1. The real
    initialisers are exercised on resnet8 below.
    """
    rng = np.random.default_rng(seed)

    def fill(path, leaf):
        # The path ends in the Variable's `.value`; the name we want is the key before it.
        name = [k.key for k in path if isinstance(k, jax.tree_util.DictKey)][-1]
        if name in ("scale", "var"):
            return np.ones(leaf.shape, leaf.dtype)
        if name == "kernel":
            fan_in = int(np.prod(leaf.shape[:-1]))
            return (rng.standard_normal(leaf.shape) / np.sqrt(fan_in)).astype(leaf.dtype)
        return np.zeros(leaf.shape, leaf.dtype)

    graphdef, state = nnx.split(abstract_model)
    return nnx.merge(graphdef, jax.tree.map_with_path(fill, state))


def _images(n=2, seed=0):
    return jax.random.normal(jax.random.key(seed), (n, 32, 32, 3), jnp.float32)


@jax.jit(static_argnums=0)
def _apply(graphdef, state, x):
    """A jitted call through split/merge; returns logits and the state after the call."""
    model = nnx.merge(graphdef, state)
    return model(x), nnx.state(model)


def test_registry_lists_exactly_the_pinned_models():
    assert sorted(models.list_models()) == sorted(PYTORCH_PARAM_COUNTS)


@pytest.mark.parametrize("name", sorted(PYTORCH_PARAM_COUNTS))
def test_param_count_matches_pytorch(name):
    assert models.count_params(_abstract(name)) == PYTORCH_PARAM_COUNTS[name]


def test_count_params_excludes_batch_stats_and_tracks_num_classes():
    model = _abstract("resnet8", num_classes=10)
    # Only the classifier depends on num_classes: 64 * 90 weights + 90 biases fewer.
    assert models.count_params(model) == PYTORCH_PARAM_COUNTS["resnet8"] - 64 * 90 - 90
    stats = jax.tree.leaves(nnx.state(model, nnx.BatchStat))
    assert stats, "BatchNorm running statistics should exist as nnx.BatchStat"
    everything = sum(leaf.size for leaf in jax.tree.leaves(nnx.state(model)))
    assert everything > models.count_params(model)


@pytest.mark.parametrize("alias, name", [("mobile_half", "mobilenetv2"),
                                         ("ShuffleV1", "shufflenetv1"),
                                         ("ShuffleV2", "shufflenetv2"),
                                         ("vgg13_bn", "vgg13"), ("ResNet32x4", "resnet32x4")])
def test_aliases_build_the_same_model(alias, name):
    assert models.count_params(_abstract(alias)) == PYTORCH_PARAM_COUNTS[name]


def test_unknown_name_lists_valid_names():
    with pytest.raises(ValueError, match="Unknown model 'resnet9'") as info:
        models.create_model("resnet9", num_classes=100, rngs=nnx.Rngs(0))
    for name in models.list_models():
        assert name in str(info.value)


@pytest.mark.parametrize("num_classes", [0, -3, 2.5, True])
def test_bad_num_classes_rejected(num_classes):
    with pytest.raises(ValueError, match="num_classes"):
        models.create_model("resnet8", num_classes=num_classes, rngs=nnx.Rngs(0))


@pytest.mark.parametrize("name", FORWARD_MODELS)
def test_forward_shape_eval(name):
    model = _materialise(_abstract(name, num_classes=7))
    model.eval()
    graphdef, state = nnx.split(model)
    logits, new_state = _apply(graphdef, state, _images())
    assert logits.shape == (2, 7)
    assert logits.dtype == jnp.float32
    assert np.all(np.isfinite(logits))
    # Eval mode reads the running statistics and must leave them alone.
    stats_same = jax.tree.map(np.array_equal, nnx.state(model, nnx.BatchStat),
                              nnx.filter_state(new_state, nnx.BatchStat))
    assert all(jax.tree.leaves(stats_same))


def test_train_mode_updates_batch_stats_only():
    model = models.create_model("resnet8", num_classes=10, rngs=nnx.Rngs(0))
    x = _images(n=4, seed=1) * 2.0 + 0.5
    model.train()
    graphdef, state = nnx.split(model)
    train_logits, new_state = _apply(graphdef, state, x)
    nnx.update(model, new_state)

    # Parameters are untouched by a forward pass; the running statistics moved.
    params_same = jax.tree.map(np.array_equal, nnx.filter_state(state, nnx.Param),
                               nnx.filter_state(new_state, nnx.Param))
    assert all(jax.tree.leaves(params_same))
    stem_bn = model.stem.bn
    assert not np.allclose(stem_bn.mean[...], 0.0)
    assert not np.allclose(stem_bn.var[...], 1.0)
    # Momentum 0.9 (PyTorch's 0.1): one step from mean 0 moves it to 0.1 * batch mean.
    stem_out = model.stem.conv(x)
    np.testing.assert_allclose(stem_bn.mean[...], 0.1 * stem_out.mean(axis=(0, 1, 2)),
                               rtol=1e-4, atol=1e-6)

    # Switching to eval changes the static graph: eval logits now use running stats.
    model.eval()
    graphdef, state = nnx.split(model)
    eval_logits, _ = _apply(graphdef, state, x)
    assert not np.allclose(train_logits, eval_logits)


def test_resnet8_init_follows_repdistiller():
    model = models.create_model("resnet8", num_classes=10, rngs=nnx.Rngs(0))
    # Convs: Kaiming-normal fan_out, std sqrt(2 / (3 * 3 * out_channels)).
    kernel = np.asarray(model.blocks[0].conv_bn1.conv.kernel[...])  # 3x3x16x16
    np.testing.assert_allclose(kernel.std(), np.sqrt(2.0 / (9 * 16)), rtol=0.1)
    assert abs(kernel.mean()) < 0.02
    # Classifier: PyTorch's default U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for weight and bias.
    bound = 1.0 / np.sqrt(64)
    for leaf in (model.fc.kernel[...], model.fc.bias[...]):
        assert np.all(np.abs(leaf) <= bound) and np.abs(leaf).max() > 0.5 * bound
    bn = model.stem.bn
    assert np.all(bn.scale[...] == 1) and np.all(bn.bias[...] == 0)
    assert np.all(bn.mean[...] == 0) and np.all(bn.var[...] == 1)
    # A fresh model is in training mode, like a fresh PyTorch module.
    assert bn.use_running_average is False


def test_bfloat16_compute_keeps_float32_params_and_logits():
    model = models.create_model("resnet8", num_classes=10, rngs=nnx.Rngs(0),
                                dtype=jnp.bfloat16)
    reference = models.create_model("resnet8", num_classes=10, rngs=nnx.Rngs(0))
    for leaf in jax.tree.leaves(nnx.state(model, nnx.Param)):
        assert leaf.dtype == jnp.float32
    for leaf in jax.tree.leaves(nnx.state(model, nnx.BatchStat)):
        assert leaf.dtype == jnp.float32
    model.eval()
    reference.eval()
    x = _images()
    logits, _ = _apply(*nnx.split(model), x)
    ref_logits, _ = _apply(*nnx.split(reference), x)
    assert logits.dtype == jnp.float32
    # Same float32 parameters (same rngs), so only bfloat16 rounding separates the two.
    scale = float(jnp.max(jnp.abs(ref_logits)))
    np.testing.assert_allclose(logits, ref_logits, atol=0.05 * scale)


def test_bad_dtype_rejected():
    with pytest.raises(ValueError, match="dtype"):
        models.create_model("resnet8", num_classes=10, rngs=nnx.Rngs(0), dtype=jnp.int32)
