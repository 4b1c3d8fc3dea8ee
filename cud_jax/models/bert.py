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

Loading Hugging Face weights: `cud_jax.models.bert_weights`; spec strings such as
`bert[0,2,4]:<folder>`: `cud_jax.models.create_text_model` (`cud_jax.models.registry`).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx


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
