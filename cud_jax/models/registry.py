"""Model registry: build a CIFAR model by its RepDistiller name (`create_model`), or a text
classifier from a spec string (`create_text_model`).

Names are the lowercase ones CIFAR-100 distillation tables use (`resnet32x4`, `wrn_40_2`,
`vgg13`, ...); `mobilenetv2` is RepDistiller's `mobile_half`. Lookup ignores case, so
RepDistiller's own spellings (`MobileNetV2`, `ShuffleV1`, `ShuffleV2`) work as aliases.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from cud_jax.models.bert import BertClassifier, Dtype, bert_student
from cud_jax.models.bert_weights import load_bert_classifier
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


def _zoo_key(name: str) -> str:
    """The registry key of a zoo model name or alias; ValueError naming the valid ones."""
    key = _ALIASES.get(name.lower(), name.lower()) if isinstance(name, str) else None
    if key not in _MODELS:
        raise ValueError(
            f"Unknown model {name!r}. Valid names: {', '.join(list_models())} "
            f"(aliases: {', '.join(sorted(_ALIASES))}).")
    return key


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
    key = _zoo_key(name)
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


# --- Text models ------------------------------------------------------------------------
#
# Spec strings for `create_text_model` (the text counterpart of `create_model`):
#
#     bert:<folder or hub id>              every layer of a Hugging Face BERT checkpoint
#     bert[0,2,4]:<folder or hub id>       a student of the checkpoint's layers 0, 2 and 4
#     bert_small:L=4,H=256,A=4             random init; keys L (layers), H (width), A (heads),
#                                          I (intermediate, default 4H), V (vocab, 30522),
#                                          P (max positions, 512), pooler (1/0, default 1)

_SMALL_KEYS = {"L": "num_layers", "H": "hidden_size", "A": "num_heads",
               "I": "intermediate_size", "V": "vocab_size", "P": "max_position",
               "POOLER": "pooler"}
_SPEC_HELP = ("valid specs: 'bert:<folder or hub id>', 'bert[0,2,4]:<folder or hub id>', "
              "'bert_small:L=4,H=256,A=4' (keys L, H, A, I, V, P, pooler)")


def _parse_small(spec: str, args: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in filter(None, (a.strip() for a in args.split(","))):
        key, sep, value = item.partition("=")
        field = _SMALL_KEYS.get(key.strip().upper())
        if not sep or field is None:
            raise ValueError(f"bad item {item!r} in model spec {spec!r}; {_SPEC_HELP}.")
        try:
            out[field] = int(value)
        except ValueError:
            raise ValueError(f"{key}={value!r} in model spec {spec!r} must be an integer."
                             ) from None
    if "pooler" in out:
        out["pooler"] = bool(out["pooler"])
    return out


def create_text_model(spec: str, *, num_classes: int, rngs: nnx.Rngs,
                      dtype: Dtype = jnp.float32) -> BertClassifier:
    """Builds a text classifier from a spec string (the text counterpart of `create_model`).

    Specs:
      `bert:<folder or hub id>`: every layer of a Hugging Face BERT checkpoint.
      `bert[0,2,4]:<folder or hub id>`: a student made of the checkpoint's layers 0, 2, 4.
      `bert_small:L=4,H=256,A=4[,I=1024][,V=30522][,P=512][,pooler=1]`: random init.

    The model maps int32 token ids `[B, L]` (0 = [PAD]) to float32 logits and starts in
    training mode.
    """
    kind, args = _parse_text_spec(spec)
    if kind == "small":
        return bert_student(num_classes=num_classes, rngs=rngs, dtype=dtype, **args)
    checkpoint, layers = args
    return load_bert_classifier(checkpoint, num_classes=num_classes, rngs=rngs, dtype=dtype,
                                layers=layers)


def _parse_text_spec(spec: str) -> tuple[str, Any]:
    """("small", bert_student kwargs) or ("checkpoint", (folder or hub id, layers or None));
    ValueError naming the valid specs."""
    if not isinstance(spec, str):
        raise ValueError(f"text model spec must be a string; {_SPEC_HELP}.")
    if spec.lower().startswith("bert_small:"):
        return "small", _parse_small(spec, spec.split(":", 1)[1])
    match = re.fullmatch(r"bert(?:\[([\d,\s]+)\])?:(.+)", spec.strip(), flags=re.S)
    if not match:
        raise ValueError(f"unknown text model spec {spec!r}; {_SPEC_HELP}.")
    layers = None
    if match.group(1):
        layers = tuple(int(i) for i in match.group(1).split(",") if i.strip())
    return "checkpoint", (match.group(2).strip(), layers)


def check_model_name(name: str, kind: str) -> None:
    """Checks a config's model name without building or loading anything.

    Args:
      name: a zoo name (`kind="vision"`, see `list_models`) or a text spec string
        (`kind="text"`, see `create_text_model`; a checkpoint's folder is looked at only
        when the model is built).
      kind: the data kind, "vision" or "text".

    Raises:
      ValueError: naming the valid names or specs.
    """
    if kind == "text":
        _parse_text_spec(name)
    else:
        _zoo_key(name)
