"""CIFAR ResNets (He et al. 2016, section 4.2) as defined in the RepDistiller zoo.

A 3x3 conv stem, then three stages of `n = (depth - 2) / 6` BasicBlocks (stride 1, 2, 2),
global average pooling and a linear classifier. `widths = (stem, stage1, stage2, stage3)`:
(16, 16, 32, 64) for resnet8...resnet110, and (32, 64, 128, 256) for the 4x-wider
resnet8x4 / resnet32x4. A block whose stride or width changes gets a 1x1 conv + BN
projection shortcut (RepDistiller's "option B"); resnet8x4's first block therefore has one
even at stride 1, since its stem (32) is narrower than stage 1 (64).

Init (as RepDistiller): convs Kaiming-normal fan_out, BN scale 1 / bias 0, the classifier
keeps PyTorch's default uniform init.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from cud_jax.models import layers


class BasicBlock(nnx.Module):
    """Two 3x3 conv-BN layers with a residual connection; ReLU after the sum."""

    def __init__(self, in_planes: int, planes: int, stride: int, *, dtype, rngs: nnx.Rngs):
        self.conv_bn1 = layers.ConvBN(in_planes, planes, 3, stride=stride, dtype=dtype,
                                      rngs=rngs)
        self.conv_bn2 = layers.ConvBN(planes, planes, 3, relu=False, dtype=dtype, rngs=rngs)
        if stride != 1 or in_planes != planes:
            self.shortcut = layers.ConvBN(in_planes, planes, 1, stride=stride, relu=False,
                                          dtype=dtype, rngs=rngs)
        else:
            self.shortcut = None

    def __call__(self, x: jax.Array) -> jax.Array:
        residual = x if self.shortcut is None else self.shortcut(x)
        return jax.nn.relu(self.conv_bn2(self.conv_bn1(x)) + residual)


class CifarResNet(nnx.Module):
    """ResNet-`depth` for 32x32 inputs; `depth` must be 6n + 2."""

    def __init__(self, depth: int, widths: Sequence[int] = (16, 16, 32, 64), *,
                 num_classes: int, dtype=jnp.float32, rngs: nnx.Rngs):
        if depth < 8 or (depth - 2) % 6:
            raise ValueError(f"CIFAR ResNet depth must be 6n + 2 with n >= 1, got {depth}.")
        if len(widths) != 4:
            raise ValueError(f"`widths` needs 4 entries (stem + 3 stages), got {widths}.")
        blocks_per_stage = (depth - 2) // 6
        self.dtype = dtype
        self.stem = layers.ConvBN(3, widths[0], 3, dtype=dtype, rngs=rngs)
        blocks = []
        in_planes = widths[0]
        for stage, planes in enumerate(widths[1:]):
            for i in range(blocks_per_stage):
                stride = 2 if (stage > 0 and i == 0) else 1
                blocks.append(BasicBlock(in_planes, planes, stride, dtype=dtype, rngs=rngs))
                in_planes = planes
        self.blocks = nnx.List(blocks)
        self.fc = layers.linear(in_planes, num_classes, dtype=dtype, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        x = self.stem(x.astype(self.dtype))
        for block in self.blocks:
            x = block(x)
        return layers.as_logits(self.fc(layers.global_avg_pool(x)))
