"""The im2col weight gradient (cud_jax.models.conv) against XLA's own convolution gradients.

The custom VJP keeps XLA's forward and input gradient and rebuilds only the kernel gradient,
so every gradient must equal `jax.vjp` of `lax.conv_general_dilated` to float32 rounding: on
single convs over kernel size, stride, groups, bias, padding and dtype, and on every model of
the zoo (gradients of all parameters and of the input).
"""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax import lax

from cud_jax import models
from cud_jax.models import conv as conv_lib
from cud_jax.models import layers
from cud_jax import configs as config_base, pipeline

LAYOUT = ("NHWC", "HWIO", "NHWC")


def _random(key, shape, dtype=jnp.float32):
    return jax.random.normal(jax.random.key(key), shape, jnp.float32).astype(dtype)


def _assert_close(got, want, rtol, floor=0.0):
    """Each leaf: max |got - want| <= rtol * max(max |want|, floor)."""
    got_leaves, want_leaves = jax.tree.leaves(got), jax.tree.leaves(want)
    assert len(got_leaves) == len(want_leaves)
    for g, w in zip(got_leaves, want_leaves):
        assert g.shape == w.shape and g.dtype == w.dtype
        g, w = np.asarray(g, np.float32), np.asarray(w, np.float32)
        scale = max(float(np.max(np.abs(w))), floor)
        assert scale > 0
        np.testing.assert_array_less(np.max(np.abs(g - w)), rtol * scale + 1e-30)


# (in, out, groups): plain, grouped (ShuffleNetV1's 1x1 group convs), depthwise (MobileNetV2,
# ShuffleNet), depthwise with a channel multiplier of 2.
GROUPINGS = [(6, 8, 1), (6, 9, 3), (6, 6, 6), (6, 12, 6)]


@pytest.mark.parametrize("kernel", [1, 3])
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("in_ch, out_ch, groups", GROUPINGS)
def test_vjp_equals_xla(kernel, stride, in_ch, out_ch, groups):
    # An odd input size: the stride-2 windows do not cover the last padded row exactly.
    x = _random(0, (3, 9, 7, in_ch))
    w = _random(1, (kernel, kernel, in_ch // groups, out_ch))
    pads = ((kernel // 2, kernel // 2),) * 2

    def conv(fn):
        return lambda x, w: fn(x, w, (stride, stride), pads, dimension_numbers=LAYOUT,
                               feature_group_count=groups)

    want_y, want_vjp = jax.vjp(conv(lax.conv_general_dilated), x, w)
    got_y, got_vjp = jax.jit(lambda x, w: jax.vjp(conv(conv_lib.conv_im2col_weight_grad),
                                                  x, w))(x, w)
    dy = _random(2, want_y.shape)
    np.testing.assert_array_equal(got_y, want_y)  # the forward is XLA's own
    _assert_close(got_vjp(dy), want_vjp(dy), 1e-5)


@pytest.mark.parametrize("padding", ["SAME", "VALID", ((2, 0), (1, 3)), ((1, -1), (0, 0))])
def test_vjp_equals_xla_other_paddings(padding):
    x, w = _random(0, (2, 8, 8, 4)), _random(1, (3, 3, 4, 5))

    def conv(fn):
        return lambda x, w: fn(x, w, (2, 1), padding, dimension_numbers=LAYOUT)

    want_y, want_vjp = jax.vjp(conv(lax.conv_general_dilated), x, w)
    got_y, got_vjp = jax.vjp(conv(conv_lib.conv_im2col_weight_grad), x, w)
    dy = _random(2, want_y.shape)
    np.testing.assert_array_equal(got_y, want_y)
    _assert_close(got_vjp(dy), want_vjp(dy), 1e-5)


def test_unsupported_convs_fall_back_to_xla():
    x, w = _random(0, (2, 8, 8, 4)), _random(1, (3, 3, 4, 5))
    kwargs = dict(dimension_numbers=LAYOUT, rhs_dilation=(2, 2))
    jaxpr = jax.make_jaxpr(lambda x, w: conv_lib.conv_im2col_weight_grad(
        x, w, (1, 1), "SAME", **kwargs))(x, w)
    assert "custom_vjp" not in str(jaxpr)
    want = jax.grad(lambda w: lax.conv_general_dilated(x, w, (1, 1), "SAME", **kwargs).sum())(w)
    got = jax.grad(lambda w: conv_lib.conv_im2col_weight_grad(
        x, w, (1, 1), "SAME", **kwargs).sum())(w)
    np.testing.assert_array_equal(got, want)


def _module_grads(module, x):
    """Gradients of a fixed random projection of the module output w.r.t. params and input."""
    graph, params = nnx.split(module)

    def loss(params, x):
        y = nnx.merge(graph, params)(x).astype(jnp.float32)
        return jnp.sum(y * _random(7, y.shape))

    return jax.jit(jax.grad(loss, argnums=(0, 1)))(params, x)


@pytest.mark.parametrize("kernel, stride, in_ch, out_ch, groups, use_bias, dtype", [
    (3, 1, 6, 8, 1, True, jnp.float32),
    (3, 2, 6, 8, 1, False, jnp.float32),
    (1, 2, 6, 8, 1, True, jnp.float32),
    (1, 1, 6, 9, 3, False, jnp.float32),
    (3, 2, 6, 6, 6, True, jnp.float32),
    (3, 1, 6, 8, 1, True, jnp.bfloat16),
    (1, 1, 6, 9, 3, False, jnp.bfloat16),
    (3, 2, 6, 6, 6, True, jnp.bfloat16),
])
def test_zoo_conv_layer_modes_agree(kernel, stride, in_ch, out_ch, groups, use_bias, dtype):
    """`layers.conv` (bias, float32 params, bfloat16 compute) in each mode: same gradients."""
    grads = {}
    for mode in ("xla", "im2col"):
        layer = layers.conv(in_ch, out_ch, kernel, stride=stride, groups=groups,
                            use_bias=use_bias, dtype=dtype, rngs=nnx.Rngs(0))
        models.set_conv_weight_grad(layer, mode)
        grads[mode] = _module_grads(layer, _random(3, (4, 8, 8, in_ch)))
    # bfloat16: XLA rounds its kernel gradient to bfloat16 from its own accumulation order;
    # the im2col products accumulate in float32, so the two differ by bfloat16 rounding.
    _assert_close(grads["im2col"], grads["xla"], 1e-5 if dtype == jnp.float32 else 1e-2)


def _uses_custom_vjp(layer) -> bool:
    graph, params = nnx.split(layer)
    apply = jax.make_jaxpr(lambda p, x: nnx.merge(graph, p)(x))
    return "custom_vjp" in str(apply(params, jnp.ones((1, 4, 4, 4))))


def test_auto_mode_is_im2col_for_depthwise_convs_on_cpu():
    assert jax.default_backend() == "cpu"
    depthwise = layers.conv(4, 4, 3, groups=4, rngs=nnx.Rngs(0))  # the zoo's default mode
    assert _uses_custom_vjp(depthwise)
    assert not _uses_custom_vjp(layers.conv(4, 4, 3, rngs=nnx.Rngs(0)))  # XLA's measured faster
    assert not _uses_custom_vjp(layers.conv(4, 8, 1, groups=2, rngs=nnx.Rngs(0)))
    assert not _uses_custom_vjp(models.set_conv_weight_grad(depthwise, "xla"))
    plain = models.set_conv_weight_grad(layers.conv(4, 4, 3, rngs=nnx.Rngs(0)), "im2col")
    assert _uses_custom_vjp(plain)


def test_unknown_mode_names_the_field_and_values():
    layer = layers.conv(4, 4, 3, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="conv_weight_grad 'fast'; valid values: auto, xla, "
                                         "im2col"):
        models.set_conv_weight_grad(layer, "fast")
    config = config_base.base_config()
    config.parallel.conv_weight_grad = "fast"
    with pytest.raises(ValueError, match="parallel.conv_weight_grad='fast': not one of auto, xla, im2col"):
        pipeline.run(config, "/nonexistent/never-created")


def _model_grads(name, mode):
    model = models.create_model(name, num_classes=10, rngs=nnx.Rngs(0))
    models.set_conv_weight_grad(model, mode)
    graph, params, rest = nnx.split(model, nnx.Param, ...)
    x = _random(4, (2, 32, 32, 3))
    labels = jnp.array([3, 7])

    def loss(params, x):
        # copy: fresh variables for BatchNorm to update under jax.grad's trace.
        logits = nnx.merge(graph, params, rest, copy=True)(x)
        return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), labels[:, None], 1))

    # Not jitted: op-by-op execution shares its compiled primitives across the 21 models
    # (same shapes), several times cheaper here than compiling two whole backward passes each.
    return jax.grad(loss, argnums=(0, 1))(params, x)


# Every zoo model costs 1-5 minutes of op-by-op compilation on 2 CPU cores, too much for the
# default suite: it runs resnet8 (plain and strided convs; the single-conv tests above cover
# grouped and depthwise ones), and CUD_JAX_SLOW_TESTS=1 runs all 21.
ZOO = (models.list_models() if os.environ.get("CUD_JAX_SLOW_TESTS") not in (None, "", "0")
       else ["resnet8"])


@pytest.mark.parametrize("name", ZOO)
def test_zoo_gradients_equal_xla(name):
    """Every zoo model, training mode: gradients of all parameters and of the input."""
    want = _model_grads(name, "xla")
    got = _model_grads(name, "im2col")
    # A leaf whose gradient is ~0 (e.g. a bias that BatchNorm cancels) is compared at the
    # scale of the model's largest gradient instead of its own.
    floor = 1e-3 * max(float(jnp.max(jnp.abs(g))) for g in jax.tree.leaves(want))
    _assert_close(got, want, 1e-5, floor)
