"""BERT encoder and sequence classifier in Flax NNX, loading Hugging Face BERT checkpoints.

    from cud_jax import models
    teacher = models.load_bert_classifier("path/to/bert-base-uncased", num_classes=77,
                                          rngs=nnx.Rngs(0))
    student = models.load_bert_classifier("path/to/bert-base-uncased", num_classes=77,
                                          layers=(0, 4, 8, 11), rngs=nnx.Rngs(1))
    small = models.bert_student(num_classes=77, num_layers=4, hidden_size=256, num_heads=4,
                                rngs=nnx.Rngs(2))
    logits = teacher(token_ids)  # int32 [B, L] -> float32 [B, 77]

Inputs. A model takes ONE int array of WordPiece ids `[B, L]` (what `cud_jax.data.load_text`
produces and what the trainer gathers per batch). Id `config.pad_id` (0 = [PAD] in the BERT
vocabularies) marks padding: the attention mask is `ids != pad_id`, and token types are all 0
(single-sentence classification). Padded keys get zero attention weight, so appending PAD
tokens does not change the outputs at the real positions or the logits. An explicit
`attention_mask` / `token_type_ids` may be passed as keywords (sentence pairs, parity tests).

Architecture = Hugging Face `BertModel` (post-LayerNorm): embeddings (word + absolute
position + token type) -> LayerNorm -> dropout; per layer: self-attention -> dropout ->
residual -> LayerNorm, then dense -> activation (exact erf GELU for `"gelu"`) -> dense ->
dropout -> residual -> LayerNorm. Dropout also on the attention probabilities.

Head. `BertClassifier` follows `BertForSequenceClassification`: the [CLS] (first) hidden
state goes through BERT's pooler (dense + tanh) when the model has one, then dropout and a
freshly initialised linear layer. A checkpoint with pooler weights (BERT, MiniLM) keeps its
pooler; for a checkpoint without one we use NO pooler (the head reads the [CLS] state
directly) rather than HF's randomly initialised pooler, so every pretrained weight is used
as trained and nothing random sits between encoder and head. Random students built with
`bert_student` have a pooler by default (`pooler=False` removes it).

Precision. `dtype` is the computation dtype (e.g. bfloat16); parameters are float32.
Embedding sums, LayerNorm, attention scores and softmax run in float32 whatever `dtype` is
(DESIGN.md numerics); logits are float32.

Spec strings for `create_text_model` (the text counterpart of `create_model`):

    bert:<folder or hub id>              every layer of a Hugging Face BERT checkpoint
    bert[0,2,4]:<folder or hub id>       a student of the checkpoint's layers 0, 2 and 4
    bert_small:L=4,H=256,A=4             random init; keys L (layers), H (width), A (heads),
                                         I (intermediate, default 4H), V (vocab, 30522),
                                         P (max positions, 512), pooler (1/0, default 1)
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import re
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from cud_jax.models import hf_loading

Dtype = Any

_ACTIVATIONS = {
    "gelu": lambda x: jax.nn.gelu(x, approximate=False),  # HF "gelu" = exact erf GELU
    "gelu_new": lambda x: jax.nn.gelu(x, approximate=True),
    "gelu_pytorch_tanh": lambda x: jax.nn.gelu(x, approximate=True),
    "relu": jax.nn.relu,
    "silu": jax.nn.silu,
    "swish": jax.nn.silu,
}


@dataclasses.dataclass(frozen=True)
class BertConfig:
    """Sizes and options of a BERT encoder (defaults: BERT-base, uncased vocabulary).

    Attributes:
      vocab_size: WordPiece vocabulary size (30522 for the uncased BERT vocab).
      hidden_size: width H; must be divisible by `num_heads`.
      num_layers: transformer layers.
      num_heads: attention heads.
      intermediate_size: width of the feed-forward layer (4H in BERT).
      max_position: longest sequence the position table supports.
      type_vocab_size: number of token types (segments).
      layer_norm_eps: LayerNorm epsilon (1e-12 in BERT).
      hidden_dropout: dropout on embeddings, sublayer outputs and before the head.
      attention_dropout: dropout on the attention probabilities.
      hidden_act: activation of the feed-forward layer; "gelu" is the exact erf GELU.
      initializer_range: std of the normal init of dense and embedding weights.
      pad_id: the [PAD] id; `ids != pad_id` is the attention mask.
      pooler: whether the encoder has BERT's pooler (dense + tanh on [CLS]).
    """

    vocab_size: int = 30522
    hidden_size: int = 768
    num_layers: int = 12
    num_heads: int = 12
    intermediate_size: int = 3072
    max_position: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    hidden_dropout: float = 0.1
    attention_dropout: float = 0.1
    hidden_act: str = "gelu"
    initializer_range: float = 0.02
    pad_id: int = 0
    pooler: bool = True

    def __post_init__(self):
        for field in ("vocab_size", "hidden_size", "num_layers", "num_heads",
                      "intermediate_size", "max_position", "type_vocab_size"):
            value = getattr(self, field)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"BertConfig.{field} must be a positive int, got {value!r}.")
        if self.hidden_size % self.num_heads:
            raise ValueError(f"BertConfig.hidden_size={self.hidden_size} must be divisible by "
                             f"num_heads={self.num_heads}.")
        for field in ("hidden_dropout", "attention_dropout"):
            if not 0.0 <= getattr(self, field) < 1.0:
                raise ValueError(f"BertConfig.{field} must lie in [0, 1), got "
                                 f"{getattr(self, field)!r}.")
        if self.hidden_act not in _ACTIVATIONS:
            raise ValueError(f"BertConfig.hidden_act={self.hidden_act!r} is not supported; "
                             f"valid values: {sorted(_ACTIVATIONS)}.")
        if not 0 <= self.pad_id < self.vocab_size:
            raise ValueError(f"BertConfig.pad_id={self.pad_id} must lie in "
                             f"[0, vocab_size={self.vocab_size}).")

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    def replace(self, **changes) -> "BertConfig":
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_hf(cls, hf: Mapping[str, Any], **overrides) -> "BertConfig":
        """The config of a Hugging Face BERT `config.json` (a dict); `overrides` win."""
        model_type = hf.get("model_type", "bert")
        if model_type != "bert":
            raise ValueError(f"config.json has model_type={model_type!r}; only BERT checkpoints "
                             "(model_type 'bert', e.g. bert-base-uncased, MiniLM, the "
                             "google/bert_uncased_L-*_H-* family) are supported.")
        position_type = hf.get("position_embedding_type", "absolute")
        if position_type != "absolute":
            raise ValueError(f"config.json has position_embedding_type={position_type!r}; only "
                             "'absolute' is supported.")
        kwargs = dict(
            vocab_size=hf["vocab_size"], hidden_size=hf["hidden_size"],
            num_layers=hf["num_hidden_layers"], num_heads=hf["num_attention_heads"],
            intermediate_size=hf["intermediate_size"],
            max_position=hf.get("max_position_embeddings", 512),
            type_vocab_size=hf.get("type_vocab_size", 2),
            layer_norm_eps=hf.get("layer_norm_eps", 1e-12),
            hidden_dropout=hf.get("hidden_dropout_prob", 0.1),
            attention_dropout=hf.get("attention_probs_dropout_prob", 0.1),
            hidden_act=hf.get("hidden_act", "gelu"),
            initializer_range=hf.get("initializer_range", 0.02),
            pad_id=hf.get("pad_token_id", 0) or 0)
        kwargs.update(overrides)
        return cls(**kwargs)

    def to_hf(self) -> dict[str, Any]:
        """This config as a Hugging Face `config.json` dict (for writing checkpoints)."""
        return {
            "model_type": "bert", "architectures": ["BertModel"],
            "vocab_size": self.vocab_size, "hidden_size": self.hidden_size,
            "num_hidden_layers": self.num_layers, "num_attention_heads": self.num_heads,
            "intermediate_size": self.intermediate_size,
            "max_position_embeddings": self.max_position,
            "type_vocab_size": self.type_vocab_size, "layer_norm_eps": self.layer_norm_eps,
            "hidden_dropout_prob": self.hidden_dropout,
            "attention_probs_dropout_prob": self.attention_dropout,
            "hidden_act": self.hidden_act, "initializer_range": self.initializer_range,
            "pad_token_id": self.pad_id, "position_embedding_type": "absolute",
        }


# ---------------------------------------------------------------------------------------
# Modules.


def _dense(config: BertConfig, din: int, dout: int, *, dtype, rngs: nnx.Rngs) -> nnx.Linear:
    return nnx.Linear(din, dout, kernel_init=nnx.initializers.normal(config.initializer_range),
                      bias_init=nnx.initializers.zeros_init(), dtype=dtype,
                      param_dtype=jnp.float32, rngs=rngs)


def _layer_norm(config: BertConfig, *, rngs: nnx.Rngs) -> nnx.LayerNorm:
    # Always float32 (inputs are promoted), with the two-pass variance of PyTorch's LayerNorm:
    # BERT's epsilon is 1e-12, so the one-pass E[x^2] - E[x]^2 would cost accuracy.
    return nnx.LayerNorm(config.hidden_size, epsilon=config.layer_norm_eps, dtype=jnp.float32,
                         param_dtype=jnp.float32, use_fast_variance=False, rngs=rngs)


def _embed(config: BertConfig, num: int, *, rngs: nnx.Rngs) -> nnx.Embed:
    return nnx.Embed(num, config.hidden_size,
                     embedding_init=nnx.initializers.normal(config.initializer_range),
                     dtype=jnp.float32, param_dtype=jnp.float32, rngs=rngs)


class BertEmbeddings(nnx.Module):
    """word + position + token-type embeddings, LayerNorm, dropout (sums in float32)."""

    def __init__(self, config: BertConfig, *, dtype=jnp.float32, rngs: nnx.Rngs):
        self.dtype = dtype
        self.word_embeddings = _embed(config, config.vocab_size, rngs=rngs)
        self.position_embeddings = _embed(config, config.max_position, rngs=rngs)
        self.token_type_embeddings = _embed(config, config.type_vocab_size, rngs=rngs)
        # HF zeroes the [PAD] row of a fresh word embedding; do the same.
        table = self.word_embeddings.embedding
        table.set_value(table.get_value().at[config.pad_id].set(0.0))
        self.layer_norm = _layer_norm(config, rngs=rngs)
        self.dropout = nnx.Dropout(config.hidden_dropout, rngs=rngs)

    def __call__(self, input_ids: jax.Array, token_type_ids: jax.Array) -> jax.Array:
        positions = jnp.arange(input_ids.shape[-1])
        x = (self.word_embeddings(input_ids) + self.position_embeddings(positions)
             + self.token_type_embeddings(token_type_ids))
        return self.dropout(self.layer_norm(x).astype(self.dtype))


class BertSelfAttention(nnx.Module):
    """Multi-head self-attention with output projection; scores and softmax in float32."""

    def __init__(self, config: BertConfig, *, dtype=jnp.float32, rngs: nnx.Rngs):
        h = config.hidden_size
        self.num_heads = config.num_heads
        self.head_dim = config.head_dim
        self.dtype = dtype
        self.query = _dense(config, h, h, dtype=dtype, rngs=rngs)
        self.key = _dense(config, h, h, dtype=dtype, rngs=rngs)
        self.value = _dense(config, h, h, dtype=dtype, rngs=rngs)
        self.output = _dense(config, h, h, dtype=dtype, rngs=rngs)
        self.dropout = nnx.Dropout(config.attention_dropout, rngs=rngs)

    def __call__(self, x: jax.Array, mask: jax.Array) -> jax.Array:
        """x: `[B, L, H]`; mask: bool `[B, L]`, True at keys that may be attended to."""
        batch, length, _ = x.shape
        shape = (batch, length, self.num_heads, self.head_dim)
        q = self.query(x).reshape(shape)
        k = self.key(x).reshape(shape)
        v = self.value(x).reshape(shape)
        scores = jnp.einsum("bqhd,bkhd->bhqk", q, k, preferred_element_type=jnp.float32)
        scores = scores.astype(jnp.float32) / math.sqrt(self.head_dim)
        # `where`, not an additive bias: no overflow, and a row with no valid key (an
        # all-PAD example) becomes uniform instead of NaN.
        scores = jnp.where(mask[:, None, None, :], scores, jnp.finfo(jnp.float32).min)
        probs = self.dropout(jax.nn.softmax(scores, axis=-1))
        context = jnp.einsum("bhqk,bkhd->bqhd", probs.astype(self.dtype), v.astype(self.dtype))
        return self.output(context.reshape(batch, length, -1))


class BertLayer(nnx.Module):
    """One post-LayerNorm transformer layer, as in `transformers.BertLayer`."""

    def __init__(self, config: BertConfig, *, dtype=jnp.float32, rngs: nnx.Rngs):
        self.dtype = dtype
        self.activation = config.hidden_act
        self.attention = BertSelfAttention(config, dtype=dtype, rngs=rngs)
        self.attention_layer_norm = _layer_norm(config, rngs=rngs)
        self.intermediate = _dense(config, config.hidden_size, config.intermediate_size,
                                   dtype=dtype, rngs=rngs)
        self.output = _dense(config, config.intermediate_size, config.hidden_size,
                             dtype=dtype, rngs=rngs)
        self.output_layer_norm = _layer_norm(config, rngs=rngs)
        self.dropout = nnx.Dropout(config.hidden_dropout, rngs=rngs)

    def _add_norm(self, norm: nnx.LayerNorm, x: jax.Array, y: jax.Array) -> jax.Array:
        return norm(x.astype(jnp.float32) + y.astype(jnp.float32)).astype(self.dtype)

    def __call__(self, x: jax.Array, mask: jax.Array) -> jax.Array:
        x = self._add_norm(self.attention_layer_norm, x,
                           self.dropout(self.attention(x, mask)))
        h = _ACTIVATIONS[self.activation](self.intermediate(x))
        return self._add_norm(self.output_layer_norm, x, self.dropout(self.output(h)))


def _check_ids(input_ids: jax.Array, config: BertConfig) -> None:
    if input_ids.ndim != 2:
        raise ValueError(f"BERT inputs must be token ids of shape [batch, length], got shape "
                         f"{input_ids.shape}.")
    if not jnp.issubdtype(input_ids.dtype, jnp.integer):
        raise TypeError(f"BERT inputs must be integer token ids, got dtype {input_ids.dtype} "
                        "(were the inputs normalised like images?).")
    if input_ids.shape[1] > config.max_position:
        raise ValueError(f"sequence length {input_ids.shape[1]} exceeds max_position="
                         f"{config.max_position}; tokenise with a smaller max_length.")


class BertEncoder(nnx.Module):
    """The BERT body: embeddings and `num_layers` layers, plus the optional pooler.

    `encoder(ids)` returns the last hidden states `[B, L, H]` in the computation dtype;
    `encoder.pool(hidden)` the [CLS] feature the classifier reads.
    """

    def __init__(self, config: BertConfig, *, dtype=jnp.float32, rngs: nnx.Rngs):
        self.config = config
        self.dtype = dtype
        self.embeddings = BertEmbeddings(config, dtype=dtype, rngs=rngs)
        self.layers = nnx.List([BertLayer(config, dtype=dtype, rngs=rngs)
                                for _ in range(config.num_layers)])
        self.pooler = (_dense(config, config.hidden_size, config.hidden_size, dtype=dtype,
                              rngs=rngs) if config.pooler else None)

    def __call__(self, input_ids: jax.Array, *, attention_mask: jax.Array | None = None,
                 token_type_ids: jax.Array | None = None,
                 return_all_hidden_states: bool = False):
        """Encodes int token ids `[B, L]`.

        Args:
          input_ids: int `[B, L]`; `config.pad_id` marks padding.
          attention_mask: optional `[B, L]` (nonzero = attend); default `ids != pad_id`.
          token_type_ids: optional int `[B, L]`; default all zeros.
          return_all_hidden_states: also return the embedding output and every layer's
            output (a list of `num_layers + 1` arrays), as HF's `hidden_states`.

        Returns:
          The last hidden states `[B, L, H]`, or `(last, all_hidden_states)`.
        """
        input_ids = jnp.asarray(input_ids)
        _check_ids(input_ids, self.config)
        if attention_mask is None:
            mask = input_ids != self.config.pad_id
        else:
            mask = jnp.asarray(attention_mask) != 0
        if token_type_ids is None:
            token_type_ids = jnp.zeros_like(input_ids)
        x = self.embeddings(input_ids, token_type_ids)
        hidden = [x]
        for layer in self.layers:
            x = layer(x, mask)
            hidden.append(x)
        return (x, hidden) if return_all_hidden_states else x

    def pool(self, hidden: jax.Array) -> jax.Array:
        """The sentence feature: tanh(pooler([CLS])) with a pooler, else the [CLS] state."""
        cls = hidden[:, 0]
        return cls if self.pooler is None else jnp.tanh(self.pooler(cls))


class BertClassifier(nnx.Module):
    """BERT encoder + (pooler) + dropout + linear head; token ids `[B, L]` -> float32 logits.

    Starts in training mode (dropout on); call `model.eval()` for inference.
    """

    def __init__(self, config: BertConfig, *, num_classes: int, dtype=jnp.float32,
                 rngs: nnx.Rngs):
        if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)) \
                or num_classes < 1:
            raise ValueError(f"`num_classes` must be a positive int, got {num_classes!r}.")
        if not jnp.issubdtype(jnp.dtype(dtype), jnp.floating):
            raise ValueError(f"`dtype` must be a floating dtype such as jnp.bfloat16, got "
                             f"{dtype}.")
        self.config = config
        self.num_classes = int(num_classes)
        self.encoder = BertEncoder(config, dtype=dtype, rngs=rngs)
        self.dropout = nnx.Dropout(config.hidden_dropout, rngs=rngs)
        self.classifier = _dense(config, config.hidden_size, self.num_classes, dtype=dtype,
                                 rngs=rngs)

    def features(self, input_ids: jax.Array, **kwargs) -> jax.Array:
        """The pooled sentence feature `[B, H]` the head reads (before dropout)."""
        return self.encoder.pool(self.encoder(input_ids, **kwargs))

    def __call__(self, input_ids: jax.Array, *, attention_mask: jax.Array | None = None,
                 token_type_ids: jax.Array | None = None) -> jax.Array:
        pooled = self.features(input_ids, attention_mask=attention_mask,
                               token_type_ids=token_type_ids)
        return self.classifier(self.dropout(pooled)).astype(jnp.float32)


# ---------------------------------------------------------------------------------------
# Hugging Face checkpoints.

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


def _variable(module: nnx.Module, path: tuple) -> nnx.Variable:
    node = module
    for key in path:
        node = node[key] if isinstance(key, int) else getattr(node, key)
    return node


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
        var = _variable(module, path)
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
        value = np.asarray(_variable(module, path).get_value(), dtype=np.float32)
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


def bert_student(*, num_classes: int, rngs: nnx.Rngs, dtype: Dtype = jnp.float32,
                 num_layers: int = 4, hidden_size: int = 256, num_heads: int = 4,
                 intermediate_size: int | None = None, vocab_size: int = 30522,
                 **config_overrides) -> BertClassifier:
    """A randomly initialised BERT classifier of the given size (HF's BERT init).

    Defaults: the paper's small student, 4 layers / 256 wide / 4 heads, intermediate 4H, the
    uncased 30522-token vocabulary. Other `BertConfig` fields go in `config_overrides`.
    """
    config = BertConfig(num_layers=num_layers, hidden_size=hidden_size, num_heads=num_heads,
                        intermediate_size=intermediate_size or 4 * hidden_size,
                        vocab_size=vocab_size, **config_overrides)
    return BertClassifier(config, num_classes=num_classes, dtype=dtype, rngs=rngs)


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
    if not isinstance(spec, str):
        raise ValueError(f"text model spec must be a string; {_SPEC_HELP}.")
    match = re.fullmatch(r"bert(?:\[([\d,\s]+)\])?:(.+)", spec.strip(), flags=re.S)
    if spec.lower().startswith("bert_small:"):
        kwargs = _parse_small(spec, spec.split(":", 1)[1])
        return bert_student(num_classes=num_classes, rngs=rngs, dtype=dtype, **kwargs)
    if match:
        layers = None
        if match.group(1):
            layers = tuple(int(i) for i in match.group(1).split(",") if i.strip())
        return load_bert_classifier(match.group(2).strip(), num_classes=num_classes,
                                    rngs=rngs, dtype=dtype, layers=layers)
    raise ValueError(f"unknown text model spec {spec!r}; {_SPEC_HELP}.")
