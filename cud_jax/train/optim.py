"""Optimisers and learning-rate schedules from a stage config.

Two recipes cover the published settings:
* `sgd`: SGD with momentum, L2 weight decay added to the gradient (as PyTorch's SGD does,
  which is what every CIFAR KD table used), learning rate multiplied by `lr_decay` at each
  epoch in `lr_milestones`.
* `adamw`: AdamW with decoupled weight decay (not on biases and norm scales), gradient
  clipping by global norm, linear warm-up over `warmup_fraction` of training then cosine decay
  (the BERT recipe of the paper).

Both take `head_lr_scale`: the classification head's learning rate is the schedule's times
this factor (1 by default). A pretrained encoder wants a small learning rate, while the new
head must grow from its small initialisation to logits of a calibrated scale; on a short run
the shared small rate leaves the head, and so the model, far under-confident
(results/calibration_curve_*.md).
"""

from __future__ import annotations

import jax
import optax

#: `optimizer` values of a stage config.
OPTIMIZERS = ("sgd", "adamw")
#: Attribute names of the classification head in the model zoo (text and vision).
HEAD_NAMES = ("classifier", "fc")


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


def _path_name(entry) -> str:
    return str(getattr(entry, "key", getattr(entry, "name", entry)))


def head_labels(params):
    """"head" for every parameter under a top-level `HEAD_NAMES` attribute, else "body"."""
    labels = jax.tree_util.tree_map_with_path(
        lambda path, _: "head" if _path_name(path[0]) in HEAD_NAMES else "body", params)
    if "head" not in jax.tree_util.tree_leaves(labels):
        raise ValueError(f"head_lr_scale needs a classification head named one of "
                         f"{', '.join(HEAD_NAMES)}; this model has none. Set head_lr_scale=1.")
    return labels


def make_optimizer(cfg, steps_per_epoch: int, total_steps: int) -> optax.GradientTransformation:
    """Builds the optax transformation for one training stage.

    Reads `cfg.optimizer` (`sgd` or `adamw`), `cfg.lr`, `cfg.weight_decay`, and for SGD
    `cfg.momentum`, `cfg.lr_milestones` (epochs), `cfg.lr_decay`; for AdamW
    `cfg.warmup_fraction` and `cfg.grad_clip` (0 disables clipping); `cfg.head_lr_scale`
    multiplies the head's learning rate.
    """
    schedule = learning_rate_schedule(cfg, steps_per_epoch, total_steps)

    def update_rule(lr):
        if cfg.optimizer == "sgd":
            return optax.chain(optax.add_decayed_weights(cfg.weight_decay),
                               optax.sgd(lr, momentum=cfg.momentum))
        return optax.adamw(lr, weight_decay=cfg.weight_decay, mask=_decay_mask)

    rule = update_rule(schedule)
    if cfg.head_lr_scale != 1:
        head_schedule = lambda step: cfg.head_lr_scale * schedule(step)  # noqa: E731
        rule = optax.multi_transform({"body": rule, "head": update_rule(head_schedule)},
                                     head_labels)
    if cfg.optimizer == "adamw" and cfg.grad_clip:
        rule = optax.chain(optax.clip_by_global_norm(cfg.grad_clip), rule)
    return rule
