"""Teacher-student metrics, per example: top-1 agreement and KL(teacher || student).

Both take `[..., K]` arrays with the class axis last and any leading batch shape, work under
`jax.jit` and `jax.vmap`, and return one value per example.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.scipy.special import xlogy

from cud_jax.losses import _validate
from cud_jax.metrics.classification import NLL_FLOOR, predictions


def agreement(student_probs, teacher_probs) -> jax.Array:
    """1.0 where the student's argmax equals the teacher's, else 0.0, per example.

    Logits work as well as probabilities (argmax is the same). Tied maxima pick the lowest
    class index on both sides.

    Args:
      student_probs: `[..., K]` student probabilities (or logits).
      teacher_probs: `[..., K]` teacher probabilities (or logits).
    """
    student_probs = _validate.class_array(student_probs, "student_probs")
    teacher_probs = _validate.class_array(teacher_probs, "teacher_probs")
    _validate.same_shape(student_probs, teacher_probs, "student_probs", "teacher_probs")
    return _agreement(student_probs, teacher_probs)


@jax.jit
def _agreement(student_probs, teacher_probs):
    return (predictions(student_probs) == predictions(teacher_probs)).astype(jnp.float32)


def teacher_student_kl(teacher_probs, student_probs, *, floor: float = NLL_FLOOR
                       ) -> jax.Array:
    """KL(teacher || student) = sum_k t_k (log t_k - log s_k) in nats, per example.

    Classes with t_k = 0 contribute exactly 0 (0 log 0 = 0), whatever s_k is. A student
    probability s_k = 0 where t_k > 0 would make the KL +inf; as in `nll`, s_k is clipped
    below at `floor` (default: the smallest normal float32), giving a large finite value.

    Args:
      teacher_probs: `[..., K]` teacher probabilities (the reference distribution).
      student_probs: `[..., K]` student probabilities. Both are checked to lie on the
        simplex on eager calls (not under `jit`).
      floor: smallest student probability used inside the log.
    """
    if not floor > 0:
        raise ValueError(f"`floor` must be > 0, got {floor}.")
    _validate.same_shape(_validate.class_array(teacher_probs, "teacher_probs"),
                         _validate.class_array(student_probs, "student_probs"),
                         "teacher_probs", "student_probs")
    teacher_probs = _validate.prob_array(teacher_probs, "teacher_probs")
    student_probs = _validate.prob_array(student_probs, "student_probs")
    return _kl(teacher_probs, student_probs, floor)


@jax.jit
def _kl(teacher_probs, student_probs, floor):
    # The floor keeps log s_k finite, so t_k = 0 gives 0 * finite = 0 (never 0 * -inf = NaN);
    # xlogy makes t_k log t_k exactly 0 there too.
    log_student = jnp.log(jnp.maximum(student_probs, floor))
    return jnp.sum(xlogy(teacher_probs, teacher_probs) - teacher_probs * log_student, axis=-1)
