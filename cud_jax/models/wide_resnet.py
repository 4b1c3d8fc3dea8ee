"""Wide ResNets WRN-depth-k (Zagoruyko & Komodakis 2016) as in the RepDistiller zoo.

A 3x3 conv stem (16 channels), three stages of `n = (depth - 4) / 6` pre-activation blocks
of widths 16k, 32k, 64k (stride 1, 2, 2), a final BN-ReLU, global average pooling and a
linear classifier. No dropout (RepDistiller's CIFAR models use dropRate 0).

Init (as RepDistiller): convs normal(0, sqrt(2 / (k*k*out_channels))), i.e. Kaiming-normal
fan_out; BN scale 1 / bias 0; the classifier weight keeps PyTorch's default uniform init and
its bias starts at zero.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from cud_jax.models import layers


class WideBlock(nnx.Module):
    """Pre-activation block: BN-ReLU-conv3x3-BN-ReLU-conv3x3 plus a shortcut.

    When the shape changes, the 1x1 projection shortcut reads the *pre-activated* input
    (BN-ReLU applied), as in the reference WRN code; the identity shortcut reads the raw
    input.
    """

    def __init__(self, in_planes: int, out_planes: int, stride: int, *, dtype,
                 rngs: nnx.Rngs):
        self.bn1 = layers.batch_norm(in_planes, dtype=dtype, rngs=rngs)
        self.conv1 = layers.conv(in_planes, out_planes, 3, stride=stride, dtype=dtype,
                                 rngs=rngs)
        self.bn2 = layers.batch_norm(out_planes, dtype=dtype, rngs=rngs)
        self.conv2 = layers.conv(out_planes, out_planes, 3, dtype=dtype, rngs=rngs)
        if stride != 1 or in_planes != out_planes:
            self.shortcut = layers.conv(in_planes, out_planes, 1, stride=stride, dtype=dtype,
                                        rngs=rngs)
        else:
            self.shortcut = None

    def __call__(self, x: jax.Array) -> jax.Array:
        pre = jax.nn.relu(self.bn1(x))
        out = self.conv2(jax.nn.relu(self.bn2(self.conv1(pre))))
        return out + (x if self.shortcut is None else self.shortcut(pre))


class WideResNet(nnx.Module):
    """WRN-`depth`-`widen_factor` for 32x32 inputs; `depth` must be 6n + 4."""

    def __init__(self, depth: int, widen_factor: int, *, num_classes: int, dtype=jnp.float32,
                 rngs: nnx.Rngs):
        if depth < 10 or (depth - 4) % 6:
            raise ValueError(f"WRN depth must be 6n + 4 with n >= 1, got {depth}.")
        blocks_per_stage = (depth - 4) // 6
        widths = (16 * widen_factor, 32 * widen_factor, 64 * widen_factor)
        self.dtype = dtype
        self.stem = layers.conv(3, 16, 3, dtype=dtype, rngs=rngs)
        blocks = []
        in_planes = 16
        for stage, planes in enumerate(widths):
            for i in range(blocks_per_stage):
                stride = 2 if (stage > 0 and i == 0) else 1
                blocks.append(WideBlock(in_planes, planes, stride, dtype=dtype, rngs=rngs))
                in_planes = planes
        self.blocks = nnx.List(blocks)
        self.bn = layers.batch_norm(in_planes, dtype=dtype, rngs=rngs)
        self.fc = layers.linear(in_planes, num_classes, bias_init=layers.zeros, dtype=dtype,
                                rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        x = self.stem(x.astype(self.dtype))
        for block in self.blocks:
            x = block(x)
        x = jax.nn.relu(self.bn(x))
        return layers.as_logits(self.fc(layers.global_avg_pool(x)))
