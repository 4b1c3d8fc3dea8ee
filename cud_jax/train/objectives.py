"""Config -> per-example objective, for the teacher and the student stage.

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

TEACHER_LOSSES = ("ce", "label_smoothing", "focal", "dus")
#: Student methods. `ce` needs no teacher; `kd` and `cud` differ only in the targets;
#: `cud_kl_wrong` / `cud_euclid_wrong` are PAPER.md section 3's projection ablations.
STUDENT_METHODS = ("ce", "kd", "dkd", "cud", "cud_kl_wrong", "cud_euclid_wrong")


def _unknown(kind: str, value: str, valid) -> ValueError:
    return ValueError(f"Unknown {kind} {value!r}; valid values: {', '.join(valid)}.")


def teacher_objective(cfg) -> Objective:
    """The teacher loss named by `cfg.loss` with its options from `cfg`.

    Reads `cfg.loss` in TEACHER_LOSSES and, as needed, `cfg.label_smoothing`,
    `cfg.focal_gamma` and `cfg.dus` (a dict of `dus_teacher_loss` keyword arguments).
    """
    name = cfg.loss
    if name == "ce":
        loss_fn = losses.cross_entropy
    elif name == "label_smoothing":
        def loss_fn(z, y):
            return losses.label_smoothing_ce(z, y, smoothing=cfg.label_smoothing)
    elif name == "focal":
        def loss_fn(z, y):
            return losses.focal_loss(z, y, gamma=cfg.focal_gamma)
    elif name == "dus":
        dus_kwargs = dict(cfg.dus)

        def loss_fn(z, y):
            return losses.dus_teacher_loss(z, y, **dus_kwargs)
    else:
        raise _unknown("teacher loss", name, TEACHER_LOSSES)

    def objective(logits, labels, teacher_probs=None, progress=None):
        del teacher_probs, progress
        return loss_fn(logits, labels), {
            "ce": jnp.mean(losses.cross_entropy(logits, labels)),
            "entropy": jnp.mean(losses.entropy(logits)),
        }

    return objective


def _wrong_only_budget(probs, labels, eta, margin):
    """W-Clip's budget on the wrong top class alone: W = {k*} where k* != y, eps = p_k* - delta."""
    delta = losses.wclip_delta(probs, labels, eta=eta, margin=margin)
    p_top, top = losses.top_class(probs)  # W-Clip's k*, without XLA:CPU's slow argmax
    top = jax.nn.one_hot(top, probs.shape[-1], dtype=bool)
    return top & (delta > 0)[..., None], p_top - delta


def corrected_targets(method: str, probs, labels, *, eta: float, margin: float):
    """The teacher targets a student method learns from (probabilities at temperature 1)."""
    if method in ("kd", "dkd"):
        return probs
    if method == "cud":
        return losses.wclip(probs, labels, eta=eta, margin=margin)
    w_mask, eps = _wrong_only_budget(probs, labels, eta, margin)
    if method == "cud_kl_wrong":
        return losses.kl_projection(probs, n_mask=jnp.zeros_like(w_mask), alpha=0.0,
                                    w_mask=w_mask, eps=eps)
    if method == "cud_euclid_wrong":
        upper = jnp.where(w_mask, eps[..., None], 1.0)
        return losses.project_simplex_box(probs, jnp.zeros_like(probs), upper)
    raise _unknown("student method", method, STUDENT_METHODS)


def student_objective(cfg) -> Objective:
    """The student loss named by `cfg.method`.

    Reads `cfg.method` in STUDENT_METHODS, `cfg.temperature`, `cfg.lam_kd`, `cfg.lam_ce`,
    `cfg.eta`, `cfg.margin`, and for DKD `cfg.dkd_alpha`, `cfg.dkd_beta` and
    `cfg.dkd_warmup_epochs` (epochs over which the DKD term ramps up linearly; 0 for none).
    For `kd`, `cud` and the projection variants the loss is
    `lam_kd * kd_loss(targets) + lam_ce * CE`; DKD is `CE + warmup * dkd_loss` as in its paper.
    """
    method = cfg.method
    if method not in STUDENT_METHODS:
        raise _unknown("student method", method, STUDENT_METHODS)

    def objective(logits, labels, teacher_probs=None, progress=0.0):
        ce = losses.cross_entropy(logits, labels)
        metrics = {"ce": jnp.mean(ce), "student_entropy": jnp.mean(losses.entropy(logits))}
        if method == "ce":
            return ce, metrics
        metrics["teacher_entropy"] = jnp.mean(losses.probs_entropy(teacher_probs))
        stats = losses.wclip_stats(teacher_probs, labels, eta=cfg.eta, margin=cfg.margin)
        metrics["wclip_fire_rate"] = stats.fire_rate
        metrics["wclip_moved_mass"] = stats.moved_mass
        if method == "dkd":
            warmup = (jnp.minimum(1.0, progress / cfg.dkd_warmup_epochs)
                      if cfg.dkd_warmup_epochs else 1.0)
            dkd = losses.dkd_loss(logits, teacher_probs, labels, temperature=cfg.temperature,
                                  alpha=cfg.dkd_alpha, beta=cfg.dkd_beta)
            metrics["kd"] = jnp.mean(dkd)
            return ce + warmup * dkd, metrics
        targets = corrected_targets(method, teacher_probs, labels, eta=cfg.eta,
                                    margin=cfg.margin)
        kd = losses.kd_loss(logits, targets, temperature=cfg.temperature)
        metrics["kd"] = jnp.mean(kd)
        return cfg.lam_kd * kd + cfg.lam_ce * ce, metrics

    return objective
