"""Model evaluation: logits over a whole split, and the clean-data metrics of a report.

Evaluation covers every example exactly once: the placement (`Placement.predict`) pads
batches to one fixed shape (one compilation) and drops the padding before any metric.
"""

from __future__ import annotations

from typing import Callable, Optional

import jax
import numpy as np
from jax.sharding import Mesh

from cud_jax import losses, metrics
from cud_jax.parallel.placement import Placement, ReplicatedPlacement
from cud_jax.parallel.sharding import batch_sharded
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


def predict_logits(predict_fn, params, model_state, inputs, *, batch_size: int, mesh,
                   widths_fn: Optional[Callable] = None,
                   placement: Optional[Placement] = None) -> np.ndarray:
    """Float32 logits `[N, K]` for every stored input, in order (`Placement.predict`).

    Args:
      predict_fn: from `make_predict_fn`.
      params, model_state: the model's variables.
      inputs: `[N, ...]` stored inputs as `placement.hold_eval` keeps them (host arrays
        for the replicated placement, this process's share for the sharded one).
      batch_size: evaluation batch size (a multiple of the device count).
      widths_fn: optional `inputs -> int32 [N]` bucket widths (`Task.widths_fn`).
      placement: where the inputs live (`cud_jax.parallel.placement`); None: replicated.

    Multi-process: every process calls it with its held inputs and gets all the logits.
    """
    placement = placement or ReplicatedPlacement(mesh)
    return placement.predict(predict_fn, params, model_state, inputs, batch_size=batch_size,
                             widths_fn=widths_fn)


def training_logits(predict_fn, params, model_state, data, *, batch_size: int, mesh):
    """Logits of every training input of `data` (`PlacedData`), laid out on the mesh like
    the training arrays (`Placement.predict_training`): a cached teacher's outputs."""
    del mesh  # the placement's
    return data.placement.predict_training(predict_fn, params, model_state, data.train,
                                           batch_size=batch_size,
                                           widths_fn=data.task.widths_fn)


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
