"""Model registry: build a CIFAR model by its RepDistiller name.

Names are the lowercase ones CIFAR-100 distillation tables use (`resnet32x4`, `wrn_40_2`,
`vgg13`, ...); `mobilenetv2` is RepDistiller's `mobile_half`. Lookup ignores case, so
RepDistiller's own spellings (`MobileNetV2`, `ShuffleV1`, `ShuffleV2`) work as aliases.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
from flax import nnx

from cud_jax.models.mobilenetv2 import MobileNetV2
from cud_jax.models.resnet import CifarResNet
from cud_jax.models.shufflenet import ShuffleNetV1, ShuffleNetV2
from cud_jax.models.vgg import VGG, VGG_STAGES
from cud_jax.models.wide_resnet import WideResNet

_RESNET_WIDTHS = (16, 16, 32, 64)
_RESNET_X4_WIDTHS = (32, 64, 128, 256)

# name -> constructor taking (num_classes=, dtype=, rngs=).
_MODELS: dict[str, Callable[..., nnx.Module]] = {
    **{f"resnet{d}": functools.partial(CifarResNet, d, _RESNET_WIDTHS)
       for d in (8, 14, 20, 32, 44, 56, 110)},
    "resnet8x4": functools.partial(CifarResNet, 8, _RESNET_X4_WIDTHS),
    "resnet32x4": functools.partial(CifarResNet, 32, _RESNET_X4_WIDTHS),
    **{f"wrn_{d}_{k}": functools.partial(WideResNet, d, k)
       for d, k in ((16, 1), (16, 2), (40, 1), (40, 2))},
    **{name: functools.partial(VGG, stages) for name, stages in VGG_STAGES.items()},
    "mobilenetv2": functools.partial(MobileNetV2, 6, 0.5),
    "shufflenetv1": ShuffleNetV1,
    "shufflenetv2": ShuffleNetV2,
}

_ALIASES = {
    "mobile_half": "mobilenetv2",
    "shufflev1": "shufflenetv1",
    "shufflev2": "shufflenetv2",
    **{f"{name}_bn": name for name in VGG_STAGES},
}


def list_models() -> list[str]:
    """The registered model names (aliases such as `mobile_half` are accepted too)."""
    return list(_MODELS)


def create_model(name: str, *, num_classes: int, rngs: nnx.Rngs,
                 dtype=jnp.float32) -> nnx.Module:
    """Builds a registered CIFAR model.

    Args:
      name: a name from `list_models()` (case-insensitive) or an alias.
      num_classes: width of the classifier.
      rngs: NNX random streams; parameters are drawn from its `params` (or default) stream.
      dtype: computation dtype, e.g. `jnp.bfloat16`; parameters stay float32 and the
        logits are returned in float32 either way.

    Returns:
      An NNX module mapping float `[N, 32, 32, 3]` NHWC images to `[N, num_classes]` float32
      logits. It starts in training mode (BatchNorm uses batch statistics); call
      `model.eval()` for inference.
    """
    key = _ALIASES.get(name.lower(), name.lower()) if isinstance(name, str) else None
    if key not in _MODELS:
        raise ValueError(
            f"Unknown model {name!r}. Valid names: {', '.join(list_models())} "
            f"(aliases: {', '.join(sorted(_ALIASES))}).")
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"`num_classes` must be a positive int, got {num_classes!r}.")
    if not jnp.issubdtype(jnp.dtype(dtype), jnp.floating):
        raise ValueError(f"`dtype` must be a floating dtype such as jnp.bfloat16, got {dtype}.")
    return _MODELS[key](num_classes=num_classes, dtype=dtype, rngs=rngs)


def count_params(module: nnx.Module) -> int:
    """Number of trainable parameters (`nnx.Param` leaves; BatchNorm running statistics are
    `nnx.BatchStat` and are not counted), as PyTorch's `sum(p.numel() for p in
    model.parameters())`. Works on abstract modules from `nnx.eval_shape` too.
    """
    params = nnx.state(module, nnx.Param)
    return sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(params))
