"""MobileNetV2 (Sandler et al. 2018), RepDistiller's CIFAR variant (`mobile_half`).

RepDistiller's version differs from torchvision's in ways that change the parameter count
and the function, all kept here:
- every inverted residual has the 1x1 expansion conv, including the t=1 first block;
- ReLU, not ReLU6;
- the stem is a stride-2 3x3 conv even on 32x32 inputs (the last map is 2x2);
- the width multiplier scales the stages by `int(c * width)` (no rounding to multiples of
  8) and leaves the 1280-wide last conv unscaled when width <= 1.
`mobile_half` is expansion 6, width 0.5.

Init (as RepDistiller): convs Kaiming-normal fan_out, BN scale 1 / bias 0, classifier
normal(0, 0.01) with zero bias.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from cud_jax.models import layers


class InvertedResidual(nnx.Module):
    """1x1 expand - 3x3 depthwise - 1x1 linear projection; residual when shapes match."""

    def __init__(self, in_features: int, out_features: int, stride: int, expansion: int, *,
                 dtype, rngs: nnx.Rngs):
        hidden = in_features * expansion
        self.expand = layers.ConvBN(in_features, hidden, 1, dtype=dtype, rngs=rngs)
        self.depthwise = layers.ConvBN(hidden, hidden, 3, stride=stride, groups=hidden,
                                       dtype=dtype, rngs=rngs)
        self.project = layers.ConvBN(hidden, out_features, 1, relu=False, dtype=dtype,
                                     rngs=rngs)
        self.use_residual = stride == 1 and in_features == out_features

    def __call__(self, x: jax.Array) -> jax.Array:
        out = self.project(self.depthwise(self.expand(x)))
        return x + out if self.use_residual else out


class MobileNetV2(nnx.Module):
    """MobileNetV2 for 32x32 inputs with expansion `expansion` and width multiplier `width`."""

    # (expansion t or None for `expansion`, channels c, repeats n, first stride s)
    SETTING = ((1, 16, 1, 1), (None, 24, 2, 1), (None, 32, 3, 2), (None, 64, 4, 2),
               (None, 96, 3, 1), (None, 160, 3, 2), (None, 320, 1, 1))

    def __init__(self, expansion: int = 6, width: float = 0.5, *, num_classes: int,
                 dtype=jnp.float32, rngs: nnx.Rngs):
        if width > 1.0:
            # RepDistiller rounds widths with make_divisible above 1.0; not needed here.
            raise ValueError(f"Only width multipliers <= 1 are supported, got {width}.")
        self.dtype = dtype
        in_features = int(32 * width)
        self.stem = layers.ConvBN(3, in_features, 3, stride=2, dtype=dtype, rngs=rngs)
        blocks = []
        for t, c, n, s in self.SETTING:
            out_features = int(c * width)
            for i in range(n):
                blocks.append(InvertedResidual(
                    in_features, out_features, s if i == 0 else 1,
                    expansion if t is None else t, dtype=dtype, rngs=rngs))
                in_features = out_features
        self.blocks = nnx.List(blocks)
        last = 1280
        self.head = layers.ConvBN(in_features, last, 1, dtype=dtype, rngs=rngs)
        self.classifier = layers.linear(last, num_classes, kernel_init=layers.SMALL_NORMAL,
                                        bias_init=layers.zeros, dtype=dtype, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        x = self.stem(x.astype(self.dtype))
        for block in self.blocks:
            x = block(x)
        x = self.head(x)
        return layers.as_logits(self.classifier(layers.global_avg_pool(x)))
