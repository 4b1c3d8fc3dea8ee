"""Building blocks shared by the CIFAR model zoo: conv, batch norm, linear, pooling, shuffle.

The zoo mirrors the PyTorch RepDistiller definitions, so the helpers fix the PyTorch
conventions in one place:

- Convs pad symmetrically by `kernel_size // 2` (PyTorch `padding=1` for 3x3). Flax's
  'SAME' pads a stride-2 conv on an even input as (0, 1), which shifts every sampled window
  by one pixel relative to PyTorch; explicit symmetric padding keeps the two identical.
- BatchNorm uses momentum 0.9 (PyTorch's `momentum=0.1` names the weight of the *new*
  batch) and epsilon 1e-5. Flax updates the running variance with the biased batch variance
  where PyTorch uses the unbiased one, a factor n/(n-1) that is negligible at CIFAR batch
  sizes.
- Convs compute their weight gradient as im2col matrix products when traced for the CPU
  backend, where XLA's own is slow (`cud_jax.models.conv`); `set_conv_weight_grad` switches
  a built model.
- `dtype` is the computation dtype (e.g. bfloat16); parameters are always float32.
  BatchNorm computes its batch statistics in float32 whatever `dtype` is.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from cud_jax.models.conv import conv_auto_weight_grad

Dtype = Any

# Kaiming-normal with fan_out, as `nn.init.kaiming_normal_(mode='fan_out',
# nonlinearity='relu')` and the hand-written `normal_(0, sqrt(2 / (k * k * out_channels)))`
# of the RepDistiller zoo: std = sqrt(2 / fan_out), plain (untruncated) normal.
KAIMING_FAN_OUT = nnx.initializers.variance_scaling(2.0, "fan_out", "normal")

# PyTorch's default for conv and linear weights, kaiming_uniform_(a=sqrt(5)), is
# U(-1/sqrt(fan_in), 1/sqrt(fan_in)); variance_scaling(1/3, fan_in, uniform) gives the same
# bound sqrt(3 * (1/3) / fan_in). Used where the PyTorch zoo keeps the defaults.
TORCH_DEFAULT_KERNEL = nnx.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")

# The classifier init of RepDistiller's VGG and MobileNetV2.
SMALL_NORMAL = nnx.initializers.normal(0.01)

zeros = nnx.initializers.zeros_init()


def torch_default_bias(fan_in: int):
    """PyTorch's default bias init, U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
    bound = 1.0 / math.sqrt(fan_in)

    def init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init


def conv(in_features: int, out_features: int, kernel_size: int, *, stride: int = 1,
         groups: int = 1, use_bias: bool = False, kernel_init=KAIMING_FAN_OUT,
         dtype: Dtype = jnp.float32, rngs: nnx.Rngs) -> nnx.Conv:
    """A square conv with PyTorch's symmetric padding `kernel_size // 2` and float32 params.

    A conv bias (VGG only) starts at zero, as RepDistiller's explicit init sets it. The weight
    gradient is the "auto" mode of `cud_jax.models.conv` (im2col products for depthwise
    convs on CPU, XLA's own otherwise).
    """
    pad = kernel_size // 2
    return nnx.Conv(
        in_features, out_features, (kernel_size, kernel_size), strides=stride,
        padding=((pad, pad), (pad, pad)), feature_group_count=groups, use_bias=use_bias,
        kernel_init=kernel_init, bias_init=zeros, dtype=dtype, param_dtype=jnp.float32,
        conv_general_dilated=conv_auto_weight_grad, rngs=rngs)


def batch_norm(num_features: int, *, dtype: Dtype = jnp.float32,
               rngs: nnx.Rngs) -> nnx.BatchNorm:
    """BatchNorm with PyTorch's defaults: scale 1, bias 0, momentum 0.9, epsilon 1e-5.

    It starts in training mode (batch statistics), like a fresh PyTorch module; switch with
    `model.eval()` / `model.train()`.
    """
    return nnx.BatchNorm(num_features, momentum=0.9, epsilon=1e-5, use_running_average=False,
                         dtype=dtype, param_dtype=jnp.float32, rngs=rngs)


def linear(in_features: int, out_features: int, *, kernel_init=TORCH_DEFAULT_KERNEL,
           bias_init=None, dtype: Dtype = jnp.float32, rngs: nnx.Rngs) -> nnx.Linear:
    """A dense layer with float32 params; `bias_init=None` means PyTorch's default."""
    if bias_init is None:
        bias_init = torch_default_bias(in_features)
    return nnx.Linear(in_features, out_features, kernel_init=kernel_init, bias_init=bias_init,
                      dtype=dtype, param_dtype=jnp.float32, rngs=rngs)


class ConvBN(nnx.Module):
    """conv -> batch norm (-> ReLU when `relu`), the unit most of the zoo is built from."""

    def __init__(self, in_features: int, out_features: int, kernel_size: int, *,
                 stride: int = 1, groups: int = 1, relu: bool = True, use_bias: bool = False,
                 kernel_init=KAIMING_FAN_OUT, dtype: Dtype = jnp.float32, rngs: nnx.Rngs):
        self.conv = conv(in_features, out_features, kernel_size, stride=stride, groups=groups,
                         use_bias=use_bias, kernel_init=kernel_init, dtype=dtype, rngs=rngs)
        self.bn = batch_norm(out_features, dtype=dtype, rngs=rngs)
        self.relu = relu

    def __call__(self, x: jax.Array) -> jax.Array:
        x = self.bn(self.conv(x))
        return jax.nn.relu(x) if self.relu else x


def global_avg_pool(x: jax.Array) -> jax.Array:
    """Mean over the spatial axes of an NHWC map, accumulated in float32.

    On a 32x32 input this equals each PyTorch model's final pooling (`avg_pool2d(x, 8)` on
    the 8x8 ResNet/WRN map, `avg_pool2d(x, 4)` on the 4x4 ShuffleNet map, etc.).
    """
    return jnp.mean(x, axis=(1, 2), dtype=jnp.float32).astype(x.dtype)


def channel_shuffle(x: jax.Array, groups: int) -> jax.Array:
    """ShuffleNet's channel shuffle on NHWC: channel g*(C/g)+j moves to j*groups+g.

    Same permutation as PyTorch's view(N, g, C/g, H, W).transpose(1, 2) on NCHW.
    """
    n, h, w, c = x.shape
    x = x.reshape(n, h, w, groups, c // groups)
    return jnp.swapaxes(x, 3, 4).reshape(n, h, w, c)


def as_logits(x: jax.Array) -> jax.Array:
    """The model output: float32 logits whatever the computation dtype (DESIGN.md numerics)."""
    return x.astype(jnp.float32)


def variable_at(module: nnx.Module, path: tuple) -> nnx.Variable:
    """The variable at `path` (attribute names and list indices) inside `module`.

    How the weight-mapping tables (Hugging Face BERT, PyTorch CIFAR checkpoints) address
    a model's parameters.
    """
    node = module
    for key in path:
        node = node[key] if isinstance(key, int) else getattr(node, key)
    return node
