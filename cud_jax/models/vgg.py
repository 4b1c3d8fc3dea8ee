"""CIFAR VGGs with batch norm, as in the RepDistiller zoo (vgg8/11/13/16/19 = its `*_bn`).

Five stages of 3x3 conv (with bias) - BN - ReLU; 2x2 max-pooling after the first three
stages (after the fourth too on a 64x64 input, as RepDistiller does), global average
pooling and a single linear layer 512 -> num_classes (no VGG fully connected head).
On 32x32 inputs stages 4 and 5 both run at 4x4.

Init (as RepDistiller): convs Kaiming-normal fan_out with zero bias, BN scale 1 / bias 0,
classifier normal(0, 0.01) with zero bias.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from cud_jax.models import layers

# Conv widths per stage. vgg8 has one conv per stage; vgg11/13/16/19 are VGG configs A/B/D/E.
VGG_STAGES: dict[str, tuple[tuple[int, ...], ...]] = {
    "vgg8": ((64,), (128,), (256,), (512,), (512,)),
    "vgg11": ((64,), (128,), (256, 256), (512, 512), (512, 512)),
    "vgg13": ((64, 64), (128, 128), (256, 256), (512, 512), (512, 512)),
    "vgg16": ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512)),
    "vgg19": ((64, 64), (128, 128), (256,) * 4, (512,) * 4, (512,) * 4),
}


def _max_pool(x: jax.Array) -> jax.Array:
    return nnx.max_pool(x, (2, 2), strides=(2, 2))


class VGG(nnx.Module):
    """VGG-BN for 32x32 inputs; `stages` lists the conv widths of each of the 5 stages."""

    def __init__(self, stages: Sequence[Sequence[int]], *, num_classes: int,
                 dtype=jnp.float32, rngs: nnx.Rngs):
        if len(stages) != 5:
            raise ValueError(f"VGG needs 5 stages of conv widths, got {len(stages)}.")
        self.dtype = dtype
        built = []
        in_features = 3
        for widths in stages:
            convs = []
            for width in widths:
                convs.append(layers.ConvBN(in_features, width, 3, use_bias=True, dtype=dtype,
                                           rngs=rngs))
                in_features = width
            built.append(nnx.List(convs))
        self.stages = nnx.List(built)
        self.classifier = layers.linear(in_features, num_classes,
                                        kernel_init=layers.SMALL_NORMAL,
                                        bias_init=layers.zeros, dtype=dtype, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        height = x.shape[1]
        x = x.astype(self.dtype)
        for i, stage in enumerate(self.stages):
            for conv_bn in stage:
                x = conv_bn(x)
            if i < 3 or (i == 3 and height == 64):
                x = _max_pool(x)
        return layers.as_logits(self.classifier(layers.global_avg_pool(x)))
