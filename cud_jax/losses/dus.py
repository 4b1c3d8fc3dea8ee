"""DUS: Difficulty-aware Uncertainty Shaping, the CUD teacher objective (PAPER.md section 1).

    L_T = lam_ce * CE + lam_focal * focal(gamma, alpha) - lam_h * w * H(p)
    w   = 1[p_y < tau_gate] + rho * (1 - p_y) ** beta

The gate w is a per-example weight and carries no gradient: otherwise maximising w * H(p)
would also reward pushing p_y down through w.
"""

from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp

from cud_jax.losses import _validate
from cud_jax.losses.classification import entropy_from_log_probs, focal_weight


def dus_gate(p_y, *, tau_gate: float = 0.5, rho: float = 1.0, beta: float = 1.0,
             w_max: Optional[float] = None) -> jax.Array:
    """The difficulty gate w = 1[p_y < tau_gate] + rho * (1 - p_y) ** beta (no stop-gradient).

    Args:
      p_y: `[...]` probability of the true class.
      tau_gate: examples with p_y below this get the full entropy bonus.
      rho, beta: scale and exponent of the smooth part of the gate.
      w_max: optional cap on w.
    """
    p_y = _validate.float_array(p_y, "p_y")
    w = (p_y < tau_gate).astype(p_y.dtype) + rho * (1.0 - p_y) ** beta
    if w_max is not None:
        w = jnp.minimum(w, w_max)
    return w


def dus_teacher_loss(logits, labels, *, lam_ce: float = 1.0, lam_focal: float = 1.0,
                     gamma: float = 10.0, alpha: float = 1.0, lam_h: float = 0.1,
                     tau_gate: float = 0.5, rho: float = 1.0, beta: float = 1.0,
                     w_max: Optional[float] = None) -> jax.Array:
    """The DUS teacher loss per example (PAPER.md section 1).

    Args:
      logits: `[..., K]` teacher logits.
      labels: `[...]` integer class indices.
      lam_ce, lam_focal, lam_h: weights of the CE, focal and entropy terms.
      gamma, alpha: focal exponent and scale (paper: 10 and 1).
      tau_gate, rho, beta, w_max: difficulty gate parameters, see `dus_gate`.

    Returns:
      `[...]` per-example loss. Easy examples (p_y near 1) get almost no entropy bonus; hard
      or misclassified ones are rewarded for keeping mass on alternatives.
    """
    logits = _validate.class_array(logits, "logits")
    labels = _validate.label_array(labels, logits)
    log_probs = jax.nn.log_softmax(logits, axis=-1)
    log_p_y = _validate.take_label(log_probs, labels)
    ce = -log_p_y
    focal = -alpha * focal_weight(log_p_y, gamma) * log_p_y
    ent = entropy_from_log_probs(log_probs)
    w = jax.lax.stop_gradient(dus_gate(jnp.exp(log_p_y), tau_gate=tau_gate, rho=rho,
                                       beta=beta, w_max=w_max))
    return lam_ce * ce + lam_focal * focal - lam_h * w * ent
