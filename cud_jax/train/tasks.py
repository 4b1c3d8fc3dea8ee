"""A task bundles what the trainer needs from the data layer: splits and input transforms.

The trainer is written once for every modality; a task tells it how to turn the stored
inputs of a batch into model inputs during training (`augment`, inside jit) and evaluation
(`preprocess`), and how to build a model for it.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax.numpy as jnp
import numpy as np

from cud_jax import data as data_lib
from cud_jax import models


@dataclasses.dataclass
class Task:
    """Everything data-dependent a training run needs.

    Attributes:
      name: data set name, for reports.
      num_classes: number of classes.
      train, val, test: `Split`s (stored inputs, int32 labels) on the host.
      augment: `(key, stored_batch) -> model inputs`, used inside the jitted train step.
      preprocess: `stored_batch -> model inputs` for evaluation.
      create_model: `(name, rngs, dtype) -> nnx.Module`.
      info: sizes and preprocessing constants, written into reports.
    """

    name: str
    num_classes: int
    train: Any
    val: Any
    test: Any
    augment: Callable
    preprocess: Callable
    create_model: Callable
    info: dict


def _source_kwargs(cfg) -> dict:
    return dict(cfg.source_kwargs) if cfg.get("source_kwargs") else {}


def build_vision_task(cfg) -> Task:
    """Loads an image data set named by `cfg.name` (see `cud_jax.data.load_vision`).

    Reads `cfg.name`, `cfg.data_dir`, `cfg.val_size`, `cfg.train_subset`, `cfg.test_subset`,
    `cfg.augment` (random crop with padding `cfg.crop_padding` and horizontal flip) and
    `cfg.source_kwargs`.
    """
    ds = data_lib.load_vision(cfg.name, data_dir=cfg.data_dir, val_size=cfg.val_size,
                              seed=cfg.split_seed, train_subset=cfg.train_subset,
                              test_subset=cfg.test_subset, **_source_kwargs(cfg))
    mean, std = ds.mean, ds.std
    padding = cfg.crop_padding

    def preprocess(images):
        return data_lib.normalize(images, mean, std)

    def augment(key, images):
        if cfg.augment:
            images = data_lib.random_crop_flip(key, images, pad=padding)
        return preprocess(images)

    def create_model(name, rngs, dtype=jnp.float32):
        return models.create_model(name, num_classes=ds.num_classes, rngs=rngs, dtype=dtype)

    info = {"dataset": ds.name, "num_classes": ds.num_classes, "train_size": len(ds.train),
            "val_size": len(ds.val), "test_size": len(ds.test),
            "image_shape": list(ds.train.images.shape[1:]),
            "mean": [float(m) for m in mean], "std": [float(s) for s in std]}
    return Task(name=ds.name, num_classes=ds.num_classes, train=ds.train, val=ds.val,
                test=ds.test, augment=augment, preprocess=preprocess,
                create_model=create_model, info=info)


def build_task(cfg) -> Task:
    """The task for `cfg.data` (vision for now; text plugs in here)."""
    kind = cfg.get("kind", "vision")
    if kind == "vision":
        return build_vision_task(cfg)
    raise ValueError(f"Unknown data kind {kind!r}; valid values: vision.")


def num_steps(num_examples: int, batch_size: int, epochs: float) -> tuple[int, int]:
    """(steps_per_epoch, total_steps); an epoch drops the incomplete last batch."""
    steps_per_epoch = data_lib.num_steps_per_epoch(num_examples, batch_size)
    return steps_per_epoch, max(1, int(np.ceil(epochs * steps_per_epoch)))
