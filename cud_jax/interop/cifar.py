"""PyTorch CIFAR checkpoints of the RepDistiller / mdistiller zoo -> our Flax NNX models.

The published CIFAR-100 teachers (`ckpt_epoch_240.pth`) are `torch.save`d dicts with the
model's `state_dict()` under "model". Their parameter names follow the PyTorch zoo
(`layer2.0.downsample.1.running_var`), ours follow `cud_jax.models`
(`blocks.3.shortcut.bn.var`). The mapping is made per layer module of OUR model:

- its dotted path is renamed to the PyTorch module prefix by the family's rules
  (`_FAMILIES`); PyTorch nests residual blocks by stage (`layer2.0`, `block3.layer.1`,
  `blocks.4.2`) where we keep one flat list (`blocks.7`), so block K of ours is the K-th
  block prefix of the checkpoint in (stage, index) order;
- its variables are named by kind: conv `weight` (OIHW -> HWIO) / `bias`, BatchNorm
  `weight`/`bias`/`running_mean`/`running_var` -> `scale`/`bias`/`mean`/`var`
  (`num_batches_tracked` is not needed), linear `weight` (transposed) / `bias`.

Shapes are checked against the model before anything is copied, and every tensor of the
checkpoint must be used, so a checkpoint of another architecture is refused, not half-read.
"""

from __future__ import annotations

import dataclasses
import functools
import re
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from cud_jax import models
from cud_jax.models import mobilenetv2, resnet, shufflenet, vgg, wide_resnet
from cud_jax.models.layers import variable_at

# PyTorch layout -> ours: conv weights OIHW -> HWIO; linear weights [out, in] -> [in, out].
_CONV = (2, 3, 1, 0)
_LINEAR = (1, 0)

_VARIABLES = {
    nnx.Conv: (("weight", "kernel", _CONV), ("bias", "bias", None)),
    nnx.BatchNorm: (("weight", "scale", None), ("bias", "bias", None),
                    ("running_mean", "mean", None), ("running_var", "var", None)),
    nnx.Linear: (("weight", "kernel", _LINEAR), ("bias", "bias", None)),
}


@dataclasses.dataclass(frozen=True)
class _Family:
    """How one model class names its modules in the PyTorch zoo.

    block_pattern: regex matching a PyTorch residual-block prefix, with the integers that
      order the blocks as groups (e.g. `layer(\\d+)\\.(\\d+)`); None for models without a
      flat `blocks` list.
    rules: (regex on our module path with `blocks.K` already replaced by `{B}`, template of
      the PyTorch prefix) pairs; the first full match wins. Templates may use regex groups.
    """

    block_pattern: str | None
    rules: tuple[tuple[str, str | Callable[[re.Match], str]], ...]


_CONV_BN = (  # a layers.ConvBN named `name` that PyTorch keeps as convN / bnN
    (r"{B}\.conv_bn(\d)\.conv", r"{B}.conv\1"), (r"{B}\.conv_bn(\d)\.bn", r"{B}.bn\1"))

def _vgg_name(match: re.Match) -> str:
    # PyTorch: blockS = Sequential(conv, bn, relu, conv, bn, relu, ...).
    return f"block{match[1]}.{3 * int(match[2]) + (match[3] == 'bn')}"


_FAMILIES: dict[type, _Family] = {
    resnet.CifarResNet: _Family(r"layer(\d+)\.(\d+)", _CONV_BN + (
        (r"stem\.conv", "conv1"), (r"stem\.bn", "bn1"),
        (r"{B}\.shortcut\.conv", r"{B}.downsample.0"), (r"{B}\.shortcut\.bn", r"{B}.downsample.1"),
        (r"fc", "fc"))),
    wide_resnet.WideResNet: _Family(r"block(\d+)\.layer\.(\d+)", (
        (r"stem", "conv1"), (r"{B}\.(bn\d|conv\d)", r"{B}.\1"),
        (r"{B}\.shortcut", r"{B}.convShortcut"), (r"bn", "bn1"), (r"fc", "fc"))),
    vgg.VGG: _Family(None, (
        (r"stages\.(\d+)\.(\d+)\.(conv|bn)", _vgg_name),
        (r"classifier", "classifier"))),
    mobilenetv2.MobileNetV2: _Family(r"blocks\.(\d+)\.(\d+)", (
        (r"stem\.conv", "conv1.0"), (r"stem\.bn", "conv1.1"),
        # PyTorch: conv = Sequential(expand conv, bn, relu, dw conv, bn, relu, project, bn)
        *((rf"{{B}}\.{name}\.conv", rf"{{B}}.conv.{3 * i}") for i, name in
          enumerate(("expand", "depthwise", "project"))),
        *((rf"{{B}}\.{name}\.bn", rf"{{B}}.conv.{3 * i + 1}") for i, name in
          enumerate(("expand", "depthwise", "project"))),
        (r"head\.conv", "conv2.0"), (r"head\.bn", "conv2.1"), (r"classifier", "classifier.0"))),
    shufflenet.ShuffleNetV1: _Family(r"layer(\d+)\.(\d+)", _CONV_BN + (
        (r"stem\.conv", "conv1"), (r"stem\.bn", "bn1"), (r"fc", "linear"))),
    shufflenet.ShuffleNetV2: _Family(r"layer(\d+)\.(\d+)", _CONV_BN + (
        # The down-sampling block: PyTorch numbers its five ConvBNs in this order.
        *((rf"{{B}}\.{name}\.conv", rf"{{B}}.conv{i}") for i, name in
          enumerate(("left_dw", "left_pw", "right_pw1", "right_dw", "right_pw2"), 1)),
        *((rf"{{B}}\.{name}\.bn", rf"{{B}}.bn{i}") for i, name in
          enumerate(("left_dw", "left_pw", "right_pw1", "right_dw", "right_pw2"), 1)),
        (r"stem\.conv", "conv1"), (r"stem\.bn", "bn1"),
        (r"head\.conv", "conv2"), (r"head\.bn", "bn2"), (r"fc", "linear"))),
}


@dataclasses.dataclass(frozen=True)
class Entry:
    """One tensor: its PyTorch name, the path of our variable, the axis permutation."""

    torch_name: str
    path: tuple  # module path + variable name, e.g. ('blocks', 3, 'shortcut', 'bn', 'var')
    transpose: tuple[int, ...] | None


def normalise_state_dict(state: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """The tensors of a state dict, without `num_batches_tracked` and a DataParallel
    `module.` prefix (as `torch.nn.DataParallel` saves them)."""
    out = {}
    for name, value in state.items():
        if not isinstance(name, str) or name.endswith("num_batches_tracked"):
            continue
        out[name[len("module."):] if name.startswith("module.") else name] = value
    return out


def _family(model: nnx.Module) -> _Family:
    for cls, family in _FAMILIES.items():
        if isinstance(model, cls):
            return family
    raise ValueError(f"no PyTorch name mapping for {type(model).__name__}; supported: "
                     f"{', '.join(c.__name__ for c in _FAMILIES)}.")


def _block_prefixes(family: _Family, names) -> list[str]:
    """The checkpoint's residual-block prefixes in (stage, index) order."""
    if family.block_pattern is None:
        return []
    found = {}
    for name in names:
        match = re.match(family.block_pattern + r"\.", name)
        if match:
            found[match[0][:-1]] = tuple(int(g) for g in match.groups())
    return sorted(found, key=found.get)


def _torch_prefix(family: _Family, path: str, blocks: list[str]) -> str:
    block = re.match(r"blocks\.(\d+)(?=\.|$)", path)
    if block and family.block_pattern is not None:
        path = "{B}" + path[block.end():]
    for pattern, template in family.rules:
        match = re.fullmatch(pattern.replace("{B}", r"\{B\}"), path)
        if match:
            name = template(match) if callable(template) else match.expand(template)
            return name.replace("{B}", blocks[int(block[1])]) if block else name
    raise RuntimeError(f"no PyTorch name for module {path!r}.")  # a gap in _FAMILIES


def parameter_map(model: nnx.Module, names) -> list[Entry]:
    """The PyTorch name of every variable of `model` (a real or `nnx.eval_shape` model).

    Args:
      model: a zoo model (`cud_jax.models.create_model`).
      names: the checkpoint's tensor names (after `normalise_state_dict`); they decide
        which PyTorch block prefix our flat `blocks[K]` is.

    Raises:
      ValueError: the checkpoint has another number of residual blocks than the model.
    """
    family = _family(model)
    blocks = _block_prefixes(family, names)
    ours = getattr(model, "blocks", None)
    if family.block_pattern is not None and len(blocks) != len(ours):
        raise ValueError(f"the checkpoint has {len(blocks)} residual blocks "
                         f"({', '.join(blocks[:3])}{', ...' if len(blocks) > 3 else ''}) but "
                         f"this model has {len(ours)}; is --arch right? (omit it to detect the "
                         "architecture)")
    entries = []
    for path, node in nnx.iter_graph(model):
        spec = _VARIABLES.get(type(node))
        if spec is None:
            continue
        prefix = _torch_prefix(family, ".".join(str(p) for p in path), blocks)
        for torch_suffix, ours_name, transpose in spec:
            if getattr(node, ours_name, None) is not None:
                entries.append(Entry(f"{prefix}.{torch_suffix}", tuple(path) + (ours_name,),
                                     transpose))
    return entries


def _torch_shape(shape: tuple, transpose) -> tuple:
    return shape if transpose is None else tuple(shape[i] for i in np.argsort(transpose))


def check_state_dict(model: nnx.Module, state: Mapping[str, np.ndarray],
                     arch: str) -> list[Entry]:
    """The mapping of `state` onto `model`, after checking names and shapes.

    Raises:
      ValueError: missing or unexpected tensors, or shapes that differ, naming the first few.
    """
    state = normalise_state_dict(state)
    entries = parameter_map(model, state)
    expected = {e.torch_name for e in entries}
    missing = [e.torch_name for e in entries if e.torch_name not in state]
    unexpected = [n for n in state if n not in expected]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"lacks {len(missing)} tensor(s) {arch} needs, e.g. {missing[:4]}")
        if unexpected:
            parts.append(f"has {len(unexpected)} tensor(s) {arch} does not, e.g. "
                         f"{unexpected[:4]}")
        raise ValueError(f"the checkpoint {' and '.join(parts)}; is --arch right? (omit it "
                         "to detect the architecture)")
    wrong = []
    for e in entries:
        want = _torch_shape(tuple(variable_at(model, e.path).shape), e.transpose)
        got = tuple(np.shape(state[e.torch_name]))
        if got != want:
            wrong.append(f"{e.torch_name}: checkpoint {got}, {arch} {want}")
    if wrong:
        raise ValueError(f"{len(wrong)} tensor shape(s) differ from {arch}: "
                         f"{'; '.join(wrong[:4])}; is --arch right?")
    return entries


@functools.lru_cache(maxsize=None)
def _abstract(arch: str, num_classes: int) -> nnx.Module:
    """A shape-only zoo model, cached: detection looks at every architecture. Read only."""
    return nnx.eval_shape(lambda: models.create_model(arch, num_classes=num_classes,
                                                      rngs=nnx.Rngs(0)))


def num_classes_of(arch: str, state: Mapping[str, np.ndarray]) -> int:
    """The classifier width of a checkpoint of `arch` (its linear layer's output size)."""
    state = normalise_state_dict(state)
    linears = [e.torch_name for e in parameter_map(_abstract(arch, 1), state)
               if e.transpose == _LINEAR]
    name = linears[-1]  # the zoo models have one linear layer, the classifier
    if name not in state or np.ndim(state[name]) != 2:
        raise ValueError(f"the checkpoint has no classifier weight {name!r} of {arch}; is "
                         "--arch right? (omit it to detect the architecture)")
    return int(np.shape(state[name])[0])


def detect_arch(state: Mapping[str, np.ndarray]) -> str:
    """The zoo model whose names and shapes a state dict matches exactly.

    Raises:
      ValueError: no zoo model, or more than one, matches (naming them).
    """
    state = normalise_state_dict(state)
    found = []
    for arch in models.list_models():
        try:
            names = {e.torch_name for e in parameter_map(_abstract(arch, 1), state)}
            if names != set(state):
                continue
            check_state_dict(_abstract(arch, num_classes_of(arch, state)), state, arch)
        except ValueError:
            continue
        found.append(arch)
    if len(found) != 1:
        what = "no model of the zoo" if not found else f"several models ({', '.join(found)})"
        raise ValueError(f"{what} matches the checkpoint's tensor names and shapes; pass "
                         f"--arch (one of {', '.join(models.list_models())}).")
    return found[0]


def load_into(model: nnx.Module, state: Mapping[str, np.ndarray], arch: str) -> None:
    """Copies a PyTorch state dict into `model` in place (float32), after `check_state_dict`."""
    state = normalise_state_dict(state)
    for e in check_state_dict(model, state, arch):
        value = np.asarray(state[e.torch_name], dtype=np.float32)
        if e.transpose is not None:
            value = value.transpose(e.transpose)
        variable_at(model, e.path).set_value(jnp.asarray(value))


def model_from_state_dict(state: Mapping[str, np.ndarray], arch: str | None = None, *,
                          num_classes: int | None = None) -> tuple[nnx.Module, str]:
    """A zoo model holding a PyTorch state dict, and its architecture name.

    Args:
      state: PyTorch names -> arrays (`cud_jax.interop.torch_pickle.load(path)["model"]`).
      arch: a `cud_jax.models.list_models()` name or alias; None detects it.
      num_classes: None reads it from the classifier weight.

    Returns:
      (model in eval mode, arch).
    """
    if arch is None:
        arch = detect_arch(state)
    if num_classes is None:
        num_classes = num_classes_of(arch, state)
    # Built abstractly (no random init: that costs more than the conversion) and filled in.
    model = nnx.eval_shape(lambda: models.create_model(arch, num_classes=num_classes,
                                                       rngs=nnx.Rngs(0)))
    load_into(model, state, arch)
    unset = [jax.tree_util.keystr(path) for path, leaf in
             jax.tree_util.tree_flatten_with_path(nnx.state(model))[0]
             if isinstance(leaf, jax.ShapeDtypeStruct)]
    if unset:  # a variable the mapping does not cover: a bug in `_FAMILIES`, not user input
        raise RuntimeError(f"{arch}: no PyTorch tensor maps to {unset[:4]}.")
    model.eval()
    return model, arch
