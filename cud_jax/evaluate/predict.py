"""Model evaluation: logits over a whole split, and the clean-data metrics of a report.

Evaluation covers every example exactly once: batches are padded to one fixed shape (one
compilation) and the padding is dropped before any metric is computed.
"""

from __future__ import annotations

from typing import Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from cud_jax import losses, metrics
from cud_jax.data.batching import eval_batches
from cud_jax.parallel.placement import EvalShare, share_batches
from cud_jax.parallel.sharding import batch_sharded, host_to_global, to_host
from cud_jax.train.state import ModelDef


def make_predict_fn(model_def: ModelDef, preprocess: Callable[[jax.Array], jax.Array], *,
                    mesh: Mesh):
    """Builds a jitted `predict(params, model_state, inputs) -> float32 logits` (eval mode)."""
    data_sharding = batch_sharded(mesh)

    def predict(params, model_state, inputs):
        inputs = jax.lax.with_sharding_constraint(preprocess(inputs), data_sharding)
        logits, _ = model_def.apply(params, model_state, inputs, train=False)
        return logits

    return jax.jit(predict)


def predict_logits(predict_fn, params, model_state, inputs: np.ndarray, *, batch_size: int,
                   mesh, widths_fn: Optional[Callable] = None) -> np.ndarray:
    """Float32 logits `[N, K]` for every stored input, in order.

    Args:
      predict_fn: from `make_predict_fn`.
      params, model_state: the model's variables.
      inputs: `[N, ...]` stored inputs on the host.
      batch_size: evaluation batch size (a multiple of the device count).
      widths_fn: optional `inputs -> int32 [N]` bucket widths (`Task.widths_fn`): examples
        are then evaluated bucket by bucket, each batch cut to its bucket's width (one
        compilation per width), and the logits put back in input order.

    Multi-process: every process calls it with the same inputs and gets all the logits.
    `inputs` may also be this process's `cud_jax.parallel.placement.EvalShare` of the split (the
    sharded placement; its own batch size, no buckets).
    """
    if isinstance(inputs, EvalShare):
        return _run_batches(predict_fn, params, model_state, share_batches(inputs, mesh),
                            len(inputs), inputs.batch_size)
    if widths_fn is None or len(inputs) == 0:
        return _predict_padded(predict_fn, params, model_state, inputs, batch_size, mesh)
    widths = widths_fn(inputs)
    logits = None
    for width in np.unique(widths):
        members = np.flatnonzero(widths == width)
        part = _predict_padded(predict_fn, params, model_state, inputs[members, :width],
                               batch_size, mesh)
        if logits is None:
            logits = np.empty((len(inputs), part.shape[1]), part.dtype)
        logits[members] = part
    return logits


def _predict_padded(predict_fn, params, model_state, inputs, batch_size, mesh) -> np.ndarray:
    """Logits of every input in fixed-size batches (the last one padded, then dropped)."""
    indices, _ = eval_batches(len(inputs), batch_size)
    sharding = batch_sharded(mesh)
    batches = (host_to_global(inputs[batch_indices], sharding)  # each process: its shards
               for batch_indices in indices)
    return _run_batches(predict_fn, params, model_state, batches, len(inputs), batch_size)


def _run_batches(predict_fn, params, model_state, batches, num_examples: int,
                 batch_size: int) -> np.ndarray:
    """Logits of global batches laid out by `eval_batches`, gathered, padding dropped."""
    outputs = [predict_fn(params, model_state, batch) for batch in batches]  # all dispatched
    _, mask = eval_batches(num_examples, batch_size)
    logits = np.concatenate([to_host(o) for o in outputs])  # gathered across processes
    return logits[mask.reshape(-1)]


def predict_shards(predict_fn, params, model_state, inputs: jax.Array, *, batch_size: int,
                   mesh) -> jax.Array:
    """Float32 logits `[D, n, K]` of a training split laid out one shard per device.

    `inputs` is `[D, n, ...]` split over `data` (`cud_jax.parallel.placement`); every
    device runs the model on its own shard, `batch_size / D` rows at a time, and the logits
    stay where their inputs live (a cached teacher for the sharded placement).
    """
    num_shards, size = inputs.shape[:2]
    rows = max(1, min(size, batch_size // num_shards))
    sharded = batch_sharded(mesh)

    @jax.jit
    def piece(inputs, start):  # rows [start, start + rows) of every shard, as one batch
        part = jax.lax.dynamic_slice_in_dim(inputs, start, rows, axis=1)
        return jax.lax.with_sharding_constraint(part.reshape((-1,) + part.shape[2:]), sharded)

    pieces = []
    for start in range(0, size, rows):
        first = min(start, size - rows)  # the last piece overlaps the one before
        logits = predict_fn(params, model_state, piece(inputs, first))
        pieces.append(logits.reshape(num_shards, rows, -1)[:, start - first:])
    return jax.jit(lambda parts: jnp.concatenate(parts, axis=1), out_shardings=sharded)(pieces)


def classification_metrics(logits: np.ndarray, labels: np.ndarray, *,
                           temperature: float = 1.0, num_bins: int = 15) -> dict:
    """Accuracy, NLL, Brier, ECE family and misclassification AUROC of `logits / temperature`.

    NLL comes from the logits by log-softmax (`metrics.nll_from_logits`): the float32
    probabilities the other metrics read underflow for confident mistakes.
    """
    logits = np.asarray(logits)
    scaled = logits if temperature == 1.0 else logits / temperature
    probs = np.asarray(jax.nn.softmax(scaled, -1), np.float32)
    labels = np.asarray(labels)
    correct = np.asarray(metrics.accuracy(probs, labels)).astype(bool)
    confidence = probs.max(-1)
    return {
        "accuracy": float(correct.mean()),
        "nll": float(np.mean(metrics.nll_from_logits(scaled, labels))),
        "brier": float(np.mean(metrics.brier(probs, labels))),
        "ece": float(metrics.ece(probs, labels, num_bins=num_bins)),
        "adaptive_ece": float(metrics.adaptive_ece(probs, labels, num_bins=num_bins)),
        "mce": float(metrics.mce(probs, labels, num_bins=num_bins)),
        "classwise_ece": float(metrics.classwise_ece(probs, labels, num_bins=num_bins)),
        "misclassification_auroc": float(metrics.misclassification_auroc(confidence, correct))
        if 0 < correct.sum() < len(correct) else float("nan"),
        "mean_confidence": float(confidence.mean()),
    }


def evaluate_logits(test_logits: np.ndarray, test_labels: np.ndarray, val_logits: np.ndarray,
                    val_labels: np.ndarray, *, num_bins: int = 15) -> dict:
    """Clean metrics before and after temperature scaling fitted on the validation split."""
    temperature = float(losses.fit_temperature(val_logits, val_labels))
    return {
        "clean": classification_metrics(test_logits, test_labels, num_bins=num_bins),
        "temperature_scaled": {
            "temperature": temperature,
            **classification_metrics(test_logits, test_labels, temperature=temperature,
                                     num_bins=num_bins),
        },
    }


def teacher_student_metrics(student_logits: np.ndarray, teacher_logits: np.ndarray) -> dict:
    """Agreement (same top class) and mean KL(teacher || student) on the same inputs."""
    student = jax.nn.softmax(student_logits, -1)
    teacher = jax.nn.softmax(teacher_logits, -1)
    return {
        "agreement": float(np.mean(metrics.agreement(student, teacher))),
        "kl_teacher_student": float(np.mean(metrics.teacher_student_kl(teacher, student))),
    }
