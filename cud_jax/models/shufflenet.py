"""ShuffleNetV1 (Zhang et al. 2018) and ShuffleNetV2 (Ma et al. 2018), RepDistiller's CIFAR
versions.

Both start with a 1x1 conv (3 -> 24) + BN + ReLU at full 32x32 resolution, run three
stages that each halve the resolution once (32 -> 16 -> 8 -> 4), and end with global
average pooling and a linear classifier.

Init: RepDistiller leaves these two at PyTorch's defaults, so convs and the classifier use
PyTorch's default uniform init (weights and classifier bias) and BN scale 1 / bias 0.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from cud_jax.models import layers

_INIT = layers.TORCH_DEFAULT_KERNEL


def _stem(dtype, rngs):
    return layers.ConvBN(3, 24, 1, kernel_init=_INIT, dtype=dtype, rngs=rngs)


class ShuffleV1Block(nnx.Module):
    """Grouped 1x1 - shuffle - 3x3 depthwise - grouped 1x1 bottleneck.

    At stride 2 the shortcut is a 3x3/2 average pool (zero padding counted in the mean, as
    PyTorch's `count_include_pad=True`) concatenated with the branch, so the branch outputs
    `out_features - in_features` channels. The first block after the 24-channel stem uses an
    ungrouped first 1x1 conv (too few channels to group), as the reference does.
    """

    def __init__(self, in_features: int, out_features: int, stride: int, groups: int, *,
                 dtype, rngs: nnx.Rngs):
        branch = out_features - in_features if stride == 2 else out_features
        mid = branch // 4
        self.first_groups = 1 if in_features == 24 else groups
        self.conv_bn1 = layers.ConvBN(in_features, mid, 1, groups=self.first_groups,
                                      kernel_init=_INIT, dtype=dtype, rngs=rngs)
        # Unlike the paper (and V2 below), the reference has a ReLU after the depthwise BN.
        self.conv_bn2 = layers.ConvBN(mid, mid, 3, stride=stride, groups=mid,
                                      kernel_init=_INIT, dtype=dtype, rngs=rngs)
        self.conv_bn3 = layers.ConvBN(mid, branch, 1, groups=groups, relu=False,
                                      kernel_init=_INIT, dtype=dtype, rngs=rngs)
        self.stride = stride

    def __call__(self, x: jax.Array) -> jax.Array:
        out = layers.channel_shuffle(self.conv_bn1(x), self.first_groups)
        out = self.conv_bn3(self.conv_bn2(out))
        if self.stride == 2:
            shortcut = nnx.avg_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)),
                                    count_include_pad=True)
            return jax.nn.relu(jnp.concatenate([out, shortcut], axis=-1))
        return jax.nn.relu(out + x)


def _stages(stage_widths, stage_blocks, make_stage) -> tuple[nnx.List, int]:
    """All blocks, stage by stage from the stem's 24 channels, and the output channels.

    `make_stage(in_features, width, num_blocks)` returns one stage's blocks in order.
    """
    blocks, in_features = [], 24
    for width, num_blocks in zip(stage_widths, stage_blocks):
        blocks.extend(make_stage(in_features, width, num_blocks))
        in_features = width
    return nnx.List(blocks), in_features


class ShuffleNetV1(nnx.Module):
    """ShuffleNetV1 for 32x32 inputs (RepDistiller's ShuffleV1: groups 3)."""

    def __init__(self, stage_widths: Sequence[int] = (240, 480, 960),
                 stage_blocks: Sequence[int] = (4, 8, 4), groups: int = 3, *,
                 num_classes: int, dtype=jnp.float32, rngs: nnx.Rngs):
        self.dtype = dtype
        self.stem = _stem(dtype, rngs)

        def stage(in_features, width, num_blocks):  # the first block halves the resolution
            return [ShuffleV1Block(in_features if i == 0 else width, width, 2 if i == 0 else 1,
                                   groups, dtype=dtype, rngs=rngs) for i in range(num_blocks)]

        self.blocks, in_features = _stages(stage_widths, stage_blocks, stage)
        self.fc = layers.linear(in_features, num_classes, dtype=dtype, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        x = self.stem(x.astype(self.dtype))
        for block in self.blocks:
            x = block(x)
        return layers.as_logits(self.fc(layers.global_avg_pool(x)))


class ShuffleV2Block(nnx.Module):
    """Channel split; the second half goes 1x1 - 3x3 depthwise - 1x1; concat; shuffle."""

    def __init__(self, features: int, *, dtype, rngs: nnx.Rngs):
        half = features // 2
        self.conv_bn1 = layers.ConvBN(half, half, 1, kernel_init=_INIT, dtype=dtype,
                                      rngs=rngs)
        self.conv_bn2 = layers.ConvBN(half, half, 3, groups=half, relu=False,
                                      kernel_init=_INIT, dtype=dtype, rngs=rngs)
        self.conv_bn3 = layers.ConvBN(half, half, 1, kernel_init=_INIT, dtype=dtype,
                                      rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        half = x.shape[-1] // 2
        kept, branch = x[..., :half], x[..., half:]
        branch = self.conv_bn3(self.conv_bn2(self.conv_bn1(branch)))
        return layers.channel_shuffle(jnp.concatenate([kept, branch], axis=-1), 2)


class ShuffleV2DownBlock(nnx.Module):
    """Stride-2 unit: both branches see the full input and output `out_features // 2` each."""

    def __init__(self, in_features: int, out_features: int, *, dtype, rngs: nnx.Rngs):
        mid = out_features // 2
        # Left: 3x3/2 depthwise (no ReLU) - 1x1.
        self.left_dw = layers.ConvBN(in_features, in_features, 3, stride=2,
                                     groups=in_features, relu=False, kernel_init=_INIT,
                                     dtype=dtype, rngs=rngs)
        self.left_pw = layers.ConvBN(in_features, mid, 1, kernel_init=_INIT, dtype=dtype,
                                     rngs=rngs)
        # Right: 1x1 - 3x3/2 depthwise (no ReLU) - 1x1.
        self.right_pw1 = layers.ConvBN(in_features, mid, 1, kernel_init=_INIT, dtype=dtype,
                                       rngs=rngs)
        self.right_dw = layers.ConvBN(mid, mid, 3, stride=2, groups=mid, relu=False,
                                      kernel_init=_INIT, dtype=dtype, rngs=rngs)
        self.right_pw2 = layers.ConvBN(mid, mid, 1, kernel_init=_INIT, dtype=dtype,
                                       rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        left = self.left_pw(self.left_dw(x))
        right = self.right_pw2(self.right_dw(self.right_pw1(x)))
        return layers.channel_shuffle(jnp.concatenate([left, right], axis=-1), 2)


class ShuffleNetV2(nnx.Module):
    """ShuffleNetV2 for 32x32 inputs (RepDistiller's ShuffleV2: net size 1)."""

    def __init__(self, stage_widths: Sequence[int] = (116, 232, 464),
                 stage_blocks: Sequence[int] = (3, 7, 3), last_features: int = 1024, *,
                 num_classes: int, dtype=jnp.float32, rngs: nnx.Rngs):
        self.dtype = dtype
        self.stem = _stem(dtype, rngs)

        def stage(in_features, width, num_blocks):
            # The reference puts one down-sampling unit *before* `num_blocks` basic units.
            return [ShuffleV2DownBlock(in_features, width, dtype=dtype, rngs=rngs)] + [
                ShuffleV2Block(width, dtype=dtype, rngs=rngs) for _ in range(num_blocks)]

        self.blocks, in_features = _stages(stage_widths, stage_blocks, stage)
        self.head = layers.ConvBN(in_features, last_features, 1, kernel_init=_INIT,
                                  dtype=dtype, rngs=rngs)
        self.fc = layers.linear(last_features, num_classes, dtype=dtype, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        x = self.stem(x.astype(self.dtype))
        for block in self.blocks:
            x = block(x)
        x = self.head(x)
        return layers.as_logits(self.fc(layers.global_avg_pool(x)))
