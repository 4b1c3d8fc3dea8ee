"""Config -> per-example objective, for the teacher and the student stage: a table from the
method name to `cud_jax.losses` calls.

An objective maps `(logits, labels, teacher_probs, progress)` to `(per_example_loss,
metrics)`, where `progress` is the number of epochs done, fractional (for DKD's warm-up), and
`metrics` is a dict of per-batch scalars that the trainer logs. Teacher objectives ignore
`teacher_probs`. Both stages run through the same train step with these.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

from cud_jax import losses

Objective = Callable[..., tuple[jax.Array, dict]]

#: Teacher loss name -> `(logits, labels, cfg) -> per-example loss`.
TEACHER_LOSSES = {
    "ce": lambda z, y, cfg: losses.cross_entropy(z, y),
    "label_smoothing": lambda z, y, cfg: losses.label_smoothing_ce(
        z, y, smoothing=cfg.label_smoothing),
    "focal": lambda z, y, cfg: losses.focal_loss(z, y, gamma=cfg.focal_gamma),
    "dus": lambda z, y, cfg: losses.dus_teacher_loss(z, y, **dict(cfg.dus)),
}
#: Student methods that learn `lam_kd * KD(q) + lam_ce * CE` (`losses.cud_student_loss`),
#: by the target correction q they use; `cud_kl_wrong` / `cud_euclid_wrong` are PAPER.md
#: section 3's projection ablations. `ce` needs no teacher; `dkd` is decoupled KD.
CORRECTION_OF = {"kd": "none", "cud": "wclip", "cud_kl_wrong": "kl_wrong",
                 "cud_euclid_wrong": "euclid_wrong"}
STUDENT_METHODS = ("ce", "kd", "dkd", "cud", "cud_kl_wrong", "cud_euclid_wrong")
assert set(STUDENT_METHODS) == {"ce", "dkd", *CORRECTION_OF}


def _unknown(kind: str, value: str, valid) -> ValueError:
    return ValueError(f"Unknown {kind} {value!r}; valid values: {', '.join(valid)}.")


def teacher_objective(cfg) -> Objective:
    """The teacher loss named by `cfg.loss` (a TEACHER_LOSSES key) with its options from
    `cfg` (`label_smoothing`, `focal_gamma`, or `dus`: `dus_teacher_loss` keywords)."""
    if cfg.loss not in TEACHER_LOSSES:
        raise _unknown("teacher loss", cfg.loss, TEACHER_LOSSES)
    loss_fn = TEACHER_LOSSES[cfg.loss]

    def objective(logits, labels, teacher_probs=None, progress=None):
        del teacher_probs, progress
        return loss_fn(logits, labels, cfg), {
            "ce": jnp.mean(losses.cross_entropy(logits, labels)),
            "entropy": jnp.mean(losses.entropy(logits)),
        }

    return objective


def dkd_warmup(progress, warmup_epochs: float):
    """DKD's warm-up factor `min(epoch / warmup_epochs, 1)` with epochs counted from 1, as in
    the DKD paper's code: the first epoch already trains at `1 / warmup_epochs` of full
    strength. `progress` is the fractional number of epochs done; 0 turns warm-up off."""
    if not warmup_epochs:
        return 1.0
    epoch = jnp.floor(progress) + 1.0
    return jnp.minimum(1.0, epoch / warmup_epochs)


def student_objective(cfg) -> Objective:
    """The student loss named by `cfg.method` (one of STUDENT_METHODS).

    Reads `cfg.temperature`, `cfg.lam_kd`, `cfg.lam_ce`, `cfg.eta`, `cfg.margin`, and for
    DKD `cfg.dkd_alpha`, `cfg.dkd_beta` and `cfg.dkd_warmup_epochs`. DKD is
    `CE + dkd_warmup(progress) * dkd_loss` as in its paper; every other method with a teacher
    is `losses.cud_student_loss` with the method's target correction.
    """
    method = cfg.method
    if method not in STUDENT_METHODS:
        raise _unknown("student method", method, STUDENT_METHODS)

    def objective(logits, labels, teacher_probs=None, progress=0.0):
        metrics = {"student_entropy": jnp.mean(losses.entropy(logits))}
        if method == "ce":
            ce = losses.cross_entropy(logits, labels)
            return ce, {"ce": jnp.mean(ce), **metrics}
        metrics["teacher_entropy"] = jnp.mean(losses.probs_entropy(teacher_probs))
        if method == "dkd":
            ce = losses.cross_entropy(logits, labels)
            stats = losses.corrected_targets(teacher_probs, labels, correction="none",
                                             eta=cfg.eta, margin=cfg.margin).stats
            dkd = losses.dkd_loss(logits, teacher_probs, labels, temperature=cfg.temperature,
                                  alpha=cfg.dkd_alpha, beta=cfg.dkd_beta)
            loss = ce + dkd_warmup(progress, cfg.dkd_warmup_epochs) * dkd
            kd = dkd
        else:
            loss, terms = losses.cud_student_loss(
                logits, teacher_probs, labels, temperature=cfg.temperature, lam_kd=cfg.lam_kd,
                lam_ce=cfg.lam_ce, eta=cfg.eta, margin=cfg.margin,
                correction=CORRECTION_OF[method], return_terms=True)
            ce, kd, stats = terms.ce, terms.kd, terms.targets.stats
        metrics.update(ce=jnp.mean(ce), kd=jnp.mean(kd), wclip_fire_rate=stats.fire_rate,
                       wclip_moved_mass=stats.moved_mass)
        return loss, metrics

    return objective
