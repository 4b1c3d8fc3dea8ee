"""Hugging Face BERT checkpoints <-> `cud_jax.models.bert` modules: the parameter-name
mapping, loading a checkpoint's weights (all layers or a chosen subset, for students made of
a teacher's layers) and exporting an encoder's weights under Hugging Face names."""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping, Sequence

import jax.numpy as jnp
import numpy as np
from flax import nnx

from cud_jax.models import hf_loading
from cud_jax.models.bert import BertClassifier, BertConfig, BertEncoder, Dtype
from cud_jax.models.layers import variable_at


_IGNORED = re.compile(r"^(cls\.|classifier\.|qa_outputs\.|lm_head\.|embeddings\.position_ids$"
                      r"|.*\.num_batches_tracked$)")


def _normalise_names(state: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Strips the `bert.` prefix of task checkpoints and maps TF-era gamma/beta names."""
    out = {}
    for name, value in state.items():
        if name.startswith("bert."):
            name = name[len("bert."):]
        name = re.sub(r"LayerNorm\.gamma$", "LayerNorm.weight", name)
        name = re.sub(r"LayerNorm\.beta$", "LayerNorm.bias", name)
        out[name] = value
    return out


def _dense_map(hf: str, path: tuple) -> list[tuple[str, tuple, bool]]:
    # PyTorch Linear stores weight [out, in]; Flax kernel is [in, out].
    return [(f"{hf}.weight", path + ("kernel",), True), (f"{hf}.bias", path + ("bias",), False)]


def _norm_map(hf: str, path: tuple) -> list[tuple[str, tuple, bool]]:
    return [(f"{hf}.weight", path + ("scale",), False), (f"{hf}.bias", path + ("bias",), False)]


def hf_parameter_map(config: BertConfig, layers: Sequence[int] | None = None
                     ) -> list[tuple[str, tuple, bool]]:
    """(HF name, path in `BertEncoder`, transpose?) for every encoder parameter.

    `layers[j]` is the checkpoint layer copied into encoder layer j (default: all, in order).
    """
    layers = range(config.num_layers) if layers is None else layers
    emb = ("embeddings",)
    out = [("embeddings.word_embeddings.weight", emb + ("word_embeddings", "embedding"), False),
           ("embeddings.position_embeddings.weight",
            emb + ("position_embeddings", "embedding"), False),
           ("embeddings.token_type_embeddings.weight",
            emb + ("token_type_embeddings", "embedding"), False)]
    out += _norm_map("embeddings.LayerNorm", emb + ("layer_norm",))
    for j, i in enumerate(layers):
        src, dst = f"encoder.layer.{i}", ("layers", j)
        for name in ("query", "key", "value"):
            out += _dense_map(f"{src}.attention.self.{name}", dst + ("attention", name))
        out += _dense_map(f"{src}.attention.output.dense", dst + ("attention", "output"))
        out += _norm_map(f"{src}.attention.output.LayerNorm", dst + ("attention_layer_norm",))
        out += _dense_map(f"{src}.intermediate.dense", dst + ("intermediate",))
        out += _dense_map(f"{src}.output.dense", dst + ("output",))
        out += _norm_map(f"{src}.output.LayerNorm", dst + ("output_layer_norm",))
    if config.pooler:
        out += _dense_map("pooler.dense", ("pooler",))
    return out


def _copy_weights(module: nnx.Module, state: Mapping[str, np.ndarray],
                  mapping: Sequence[tuple[str, tuple, bool]], source: str) -> None:
    """Copies `state[hf]` into `module` at `path` for each mapping entry, checking shapes."""
    missing = [hf for hf, _, _ in mapping if hf not in state]
    if missing:
        hint = (" The checkpoint has no pooler; load it with pooler=False."
                if any(m.startswith("pooler.") for m in missing) else "")
        raise ValueError(f"{source} lacks {len(missing)} BERT tensor(s), e.g. "
                         f"{missing[:4]}.{hint}")
    for hf, path, transpose in mapping:
        value = np.asarray(state[hf], dtype=np.float32)
        if transpose:
            value = value.T
        var = variable_at(module, path)
        expected = var.get_value().shape
        if value.shape != expected:
            raise ValueError(f"{source}: tensor {hf!r} has shape {tuple(state[hf].shape)}, but "
                             f"the model expects {expected[::-1] if transpose else expected}"
                             f"{' (PyTorch layout)' if transpose else ''}; does config.json "
                             "match the weights?")
        var.set_value(jnp.asarray(value))


def load_hf_weights(encoder: BertEncoder, state: Mapping[str, np.ndarray], *,
                    layers: Sequence[int] | None = None, source: str = "checkpoint"
                    ) -> list[str]:
    """Copies Hugging Face BERT tensors into `encoder` in place.

    Args:
      encoder: a `BertEncoder` whose config matches the checkpoint (with
        `num_layers == len(layers)` when `layers` is given).
      state: HF names -> arrays (`bert.` prefixes and gamma/beta names are accepted).
      layers: checkpoint layers to copy, in order, into encoder layers 0, 1, ...
      source: a name for error messages.

    Returns:
      The checkpoint names that were not used (heads such as `cls.*` are silently skipped;
      other leftovers are returned so the caller can report them).

    Raises:
      ValueError: a missing tensor or one whose shape does not match the config.
    """
    state = _normalise_names(state)
    mapping = hf_parameter_map(encoder.config, layers)
    _copy_weights(encoder, state, mapping, source)
    used = {hf for hf, _, _ in mapping}
    return sorted(k for k in state if k not in used and not _IGNORED.match(k)
                  and not re.match(r"^encoder\.layer\.\d+\.", k))


def _head_map() -> list[tuple[str, tuple, bool]]:
    # `BertForSequenceClassification.classifier` is our `BertClassifier.classifier`.
    return _dense_map("classifier", ("classifier",))


def hf_classifier_map(config: BertConfig) -> list[tuple[str, tuple, bool]]:
    """(HF name, path in `BertClassifier`, transpose?) for every parameter of a classifier,
    under `BertForSequenceClassification` names (`bert.` + `hf_parameter_map`, and the
    `classifier` head)."""
    return ([("bert." + hf, ("encoder",) + path, transpose)
             for hf, path, transpose in hf_parameter_map(config)] + _head_map())


def hf_state_dict(module: BertEncoder | BertClassifier) -> dict[str, np.ndarray]:
    """The parameters under Hugging Face names (PyTorch layouts), the inverse of loading.

    A `BertEncoder` gives `BertModel` names (`load_hf_weights` reads them back); a
    `BertClassifier` gives `BertForSequenceClassification` names, head included
    (`load_bert_classifier(..., head=True)` reads them back). Save them with
    `safetensors.numpy.save_file` beside `config.to_hf()` as config.json
    (`cud_jax.interop.hf_export` writes a complete folder).
    """
    if isinstance(module, BertClassifier):
        mapping = hf_classifier_map(module.config)
    else:
        mapping = hf_parameter_map(module.config)
    out = {}
    for hf, path, transpose in mapping:
        value = np.asarray(variable_at(module, path).get_value(), dtype=np.float32)
        out[hf] = np.ascontiguousarray(value.T if transpose else value)
    return out


def _check_layers(layers, num_layers: int, source: str) -> tuple[int, ...] | None:
    if layers is None:
        return None
    layers = tuple(layers)
    if not layers or any(isinstance(i, bool) or not isinstance(i, (int, np.integer))
                         for i in layers):
        raise ValueError(f"`layers` must be a non-empty sequence of ints, got {layers!r}.")
    bad = [i for i in layers if not 0 <= i < num_layers]
    if bad:
        raise ValueError(f"`layers`={layers}: {bad} out of range; {source} has {num_layers} "
                         f"layers (0..{num_layers - 1}).")
    return tuple(int(i) for i in layers)


def load_bert_classifier(path_or_name: str | os.PathLike, *, num_classes: int,
                         rngs: nnx.Rngs, dtype: Dtype = jnp.float32,
                         layers: Sequence[int] | None = None, pooler: bool | None = None,
                         local_files_only: bool | None = None, head: bool = False,
                         **config_overrides) -> BertClassifier:
    """A `BertClassifier` whose encoder holds a Hugging Face BERT checkpoint.

    Args:
      path_or_name: a local folder with `config.json` and `model.safetensors` (or a sharded
        index, or `pytorch_model.bin` when torch is installed), or a Hub id, fetched with
        `huggingface_hub.snapshot_download` when the machine is online.
      num_classes: classes of the fresh head (normal(initializer_range) weights, zero bias).
      rngs: NNX random streams for the head and dropout.
      dtype: computation dtype (e.g. `jnp.bfloat16`); parameters stay float32.
      layers: build a shallower student from these checkpoint layers, e.g. `(0, 2, 4)` gives
        a 3-layer model whose layers are copies of the checkpoint's layers 0, 2 and 4
        (embeddings and pooler are copied too). None copies every layer.
      pooler: None (default) uses the checkpoint's pooler when it has one and no pooler
        otherwise; True requires one; False drops it.
      local_files_only: for Hub ids, use only the local Hugging Face cache (None: follow
        `HF_HUB_OFFLINE`).
      head: also copy the checkpoint's classification head (`classifier.*`, as
        `BertForSequenceClassification` and `cud_jax.interop.hf_export` save it; its width
        must equal `num_classes`) instead of initialising a fresh one.
      **config_overrides: `BertConfig` fields to change, e.g. `hidden_dropout=0.0`.
        Size fields must agree with the weights.

    Raises:
      CheckpointNotFoundError: folder missing or Hub id not fetchable (offline, unknown).
      ValueError: not a BERT checkpoint, bad `layers`, or weights that do not match.
    """
    folder = hf_loading.resolve_checkpoint(path_or_name, local_files_only=local_files_only)
    source = f"checkpoint {str(path_or_name)!r}"
    hf_config = hf_loading.read_config(folder)
    state = _normalise_names(hf_loading.read_weights(folder))
    has_pooler = "pooler.dense.weight" in state
    if pooler is None:
        pooler = has_pooler
    elif pooler and not has_pooler:
        raise ValueError(f"{source} has no pooler weights (pooler.dense.*); pass pooler=None "
                         "or pooler=False.")
    config = BertConfig.from_hf(hf_config, pooler=bool(pooler), **config_overrides)
    layers = _check_layers(layers, config.num_layers, source)
    if layers is not None:
        config = config.replace(num_layers=len(layers))
    model = BertClassifier(config, num_classes=num_classes, dtype=dtype, rngs=rngs)
    unused = load_hf_weights(model.encoder, state, layers=layers, source=source)
    if head:
        _copy_weights(model, state, _head_map(), source)
    if unused:
        logging.warning("%s: %d tensor(s) not used by BertClassifier: %s", source, len(unused),
                        unused[:8])
    return model
