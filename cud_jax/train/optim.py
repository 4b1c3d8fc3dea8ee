"""Optimisers and learning-rate schedules from a stage config.

Two recipes cover the published settings:
* `sgd`: SGD with momentum, L2 weight decay added to the gradient (as PyTorch's SGD does,
  which is what every CIFAR KD table used), learning rate multiplied by `lr_decay` at each
  epoch in `lr_milestones`.
* `adamw`: AdamW with decoupled weight decay (not on biases and norm scales), gradient
  clipping by global norm, linear warm-up over `warmup_fraction` of training then cosine decay
  (the BERT recipe of the paper).
"""

from __future__ import annotations

import jax
import optax

#: `optimizer` values of a stage config.
OPTIMIZERS = ("sgd", "adamw")


def learning_rate_schedule(cfg, steps_per_epoch: int, total_steps: int) -> optax.Schedule:
    """The schedule named by `cfg.optimizer` (see the module docstring)."""
    if cfg.optimizer == "sgd":
        boundaries = {int(epoch * steps_per_epoch): cfg.lr_decay for epoch in cfg.lr_milestones}
        return optax.piecewise_constant_schedule(cfg.lr, boundaries)
    if cfg.optimizer == "adamw":
        warmup = int(cfg.warmup_fraction * total_steps)
        return optax.warmup_cosine_decay_schedule(
            init_value=0.0, peak_value=cfg.lr, warmup_steps=warmup,
            decay_steps=max(total_steps, warmup + 1), end_value=0.0)
    raise ValueError(f"Unknown optimizer {cfg.optimizer!r}; valid values: "
                     f"{', '.join(OPTIMIZERS)}.")


def _decay_mask(params):
    # Matrices and kernels decay; vectors (biases, norm scales and offsets) do not.
    return jax.tree_util.tree_map(lambda p: p.ndim > 1, params)


def make_optimizer(cfg, steps_per_epoch: int, total_steps: int) -> optax.GradientTransformation:
    """Builds the optax transformation for one training stage.

    Reads `cfg.optimizer` (`sgd` or `adamw`), `cfg.lr`, `cfg.weight_decay`, and for SGD
    `cfg.momentum`, `cfg.lr_milestones` (epochs), `cfg.lr_decay`; for AdamW
    `cfg.warmup_fraction` and `cfg.grad_clip` (0 disables clipping).
    """
    schedule = learning_rate_schedule(cfg, steps_per_epoch, total_steps)
    if cfg.optimizer == "sgd":
        return optax.chain(optax.add_decayed_weights(cfg.weight_decay),
                           optax.sgd(schedule, momentum=cfg.momentum))
    parts = [optax.clip_by_global_norm(cfg.grad_clip)] if cfg.grad_clip else []
    parts.append(optax.adamw(schedule, weight_decay=cfg.weight_decay, mask=_decay_mask))
    return optax.chain(*parts)
