"""Per-example student objectives: Hinton KD, decoupled KD (DKD) and CUD.

Teacher targets enter as probabilities (so corrected targets such as W-Clip's can be passed
directly) and are treated as constants: no gradient flows into them. Tempering a probability
vector q at temperature T means softmax(log q / T), which equals softmax(z / T) when
q = softmax(z); classes with q = 0 stay at exactly 0.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.scipy.special import xlogy

from cud_jax.losses import _validate
from cud_jax.losses.targets import CorrectedTargets, check_correction, correct

_check_temperature = _validate.check_temperature


def temper_probs(probs: jax.Array, temperature) -> jax.Array:
    """softmax(log probs / T), exact zeros kept at zero."""
    _check_temperature(temperature)
    log_probs = jnp.where(probs > 0, jnp.log(jnp.where(probs > 0, probs, 1.0)), -jnp.inf)
    return jax.nn.softmax(log_probs / temperature, axis=-1)


def _student_and_targets(student_logits, teacher_probs, min_classes=1):
    """Validated (student logits, teacher probabilities without gradient).

    The teacher rows must lie on the simplex: checked on eager calls (teacher logits passed
    by mistake fail with "pass softmax(logits)"), not under `jit` unless in `checked` mode.
    """
    student_logits = _validate.class_array(student_logits, "student_logits",
                                           min_classes=min_classes)
    _validate.same_shape(student_logits, _validate.class_array(teacher_probs, "teacher_probs"),
                         "student_logits", "teacher_probs")
    teacher_probs = _validate.prob_array(teacher_probs, "teacher_probs")
    return student_logits, jax.lax.stop_gradient(teacher_probs)


def kd_loss(student_logits, teacher_probs, *, temperature) -> jax.Array:
    """Hinton KD: T^2 * KL(softmax(log q / T) || softmax(z_S / T)), per example.

    Args:
      student_logits: `[..., K]` student logits.
      teacher_probs: `[..., K]` teacher (or corrected) probabilities at temperature 1, NOT
        logits: pass softmax(teacher_logits).
      temperature: distillation temperature T > 0.

    Eager calls check that every teacher row lies on the simplex and that a scalar
    temperature is > 0; under `jit` (the trainer's step) these value checks are skipped,
    so a traced caller must guarantee them or wrap the function with
    `cud_jax.losses.checked`.
    """
    _check_temperature(temperature)
    student_logits, teacher_probs = _student_and_targets(student_logits, teacher_probs)
    return _kd(student_logits, teacher_probs, temperature)


def _kd(student_logits, teacher_probs, temperature):
    """kd_loss on validated inputs."""
    targets = temper_probs(teacher_probs, temperature)
    log_student = jax.nn.log_softmax(student_logits / temperature, axis=-1)
    kl = jnp.sum(xlogy(targets, targets) - targets * log_student, axis=-1)
    return temperature**2 * kl


def dkd_loss(student_logits, teacher_probs, labels, *, temperature=4.0, alpha: float = 1.0,
             beta: float = 8.0) -> jax.Array:
    """Decoupled KD (Zhao et al., CVPR 2022): T^2 * (alpha * TCKD + beta * NCKD), per example.

    Both distributions are taken at temperature T. TCKD is the KL between the binary
    (target, non-target) masses; NCKD the KL between the distributions over non-target
    classes alone, each renormalised. The cross-entropy term and DKD's warm-up are left to the
    caller, as for `kd_loss`.

    Args:
      student_logits: `[..., K]` student logits, K >= 2.
      teacher_probs: `[..., K]` teacher probabilities at temperature 1.
      labels: `[...]` integer class indices.
      temperature, alpha, beta: DKD's T, TCKD weight and NCKD weight.
    """
    _check_temperature(temperature)
    student_logits, teacher_probs = _student_and_targets(student_logits, teacher_probs,
                                                         min_classes=2)
    labels = _validate.label_array(labels, student_logits)
    is_target = jax.nn.one_hot(labels, student_logits.shape[-1], dtype=bool)

    teacher = temper_probs(teacher_probs, temperature)
    t_target = _validate.take_label(teacher, labels)
    t_rest = jnp.sum(jnp.where(is_target, 0.0, teacher), axis=-1)

    log_student = jax.nn.log_softmax(student_logits / temperature, axis=-1)
    log_s_target = _validate.take_label(log_student, labels)
    log_s_rest = jax.nn.logsumexp(jnp.where(is_target, -jnp.inf, log_student), axis=-1)

    tckd = (xlogy(t_target, t_target) - t_target * log_s_target
            + xlogy(t_rest, t_rest) - t_rest * log_s_rest)

    # Non-target distributions, renormalised. A teacher with all its mass on the target has
    # no non-target distribution: NCKD is 0 there.
    t_nt = jnp.where(is_target, 0.0, teacher) / jnp.where(t_rest > 0, t_rest, 1.0)[..., None]
    log_s_nt = jax.nn.log_softmax(jnp.where(is_target, -jnp.inf, student_logits / temperature),
                                  axis=-1)
    nckd = jnp.sum(xlogy(t_nt, t_nt) - t_nt * jnp.where(is_target, 0.0, log_s_nt), axis=-1)
    return temperature**2 * (alpha * tckd + beta * nckd)


class StudentTerms(NamedTuple):
    """The parts of `cud_student_loss`, per example, and the targets the KD term used."""

    kd: jax.Array
    ce: jax.Array
    targets: CorrectedTargets


def cud_student_loss(student_logits, teacher_probs, labels, *, temperature, lam_kd: float = 0.8,
                     lam_ce: float = 0.2, eta: float = 0.5, margin: float = 0.7,
                     correction: str = "wclip", return_terms: bool = False):
    """The CUD student objective (PAPER.md section 4), per example.

        L_S = lam_kd * T^2 * KL(softmax(log q / T) || softmax(z_S / T)) + lam_ce * CE(z_S, y)

    with q = wclip(teacher_probs, labels). Unlabeled examples (negative labels) get the KD
    term only, with q = p. The trainer's `kd`, `cud` and projection-ablation students are
    this function with another `correction`.

    Args:
      student_logits: `[..., K]` student logits.
      teacher_probs: `[..., K]` frozen teacher probabilities at temperature 1.
      labels: `[...]` integer labels, negative for unlabeled.
      temperature: KD temperature (4 for the CIFAR recipes, 2 for text).
      lam_kd, lam_ce: weights of the KD and CE terms (paper: 0.8 and 0.2).
      eta, margin: W-Clip parameters.
      correction: how q is made from the teacher's probabilities
        (`cud_jax.losses.targets.CORRECTIONS`): `wclip` (CUD), `none` (plain Hinton KD
        with a CE term), `kl_wrong` / `euclid_wrong` (PAPER.md section 3's ablations).
      return_terms: also return the `StudentTerms` (KD and CE per example, the targets and
        their W-Clip statistics) for logging.

    Returns:
      `[...]` losses, or `(losses, StudentTerms)` with `return_terms`.
    """
    _check_temperature(temperature)
    student_logits, teacher_probs = _student_and_targets(student_logits, teacher_probs)
    labels = _validate.label_array(labels, student_logits, allow_unlabeled=True)
    check_correction(correction)
    targets = correct(teacher_probs, labels, correction, eta, margin)
    kd = _kd(student_logits, targets.probs, temperature)
    log_p_y = _validate.take_label(jax.nn.log_softmax(student_logits, axis=-1), labels)
    ce = jnp.where(labels >= 0, -log_p_y, 0.0)
    loss = lam_kd * kd + lam_ce * ce
    return (loss, StudentTerms(kd, ce, targets)) if return_terms else loss
