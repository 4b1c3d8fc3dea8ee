"""Host-side containers for vision data: `Split`, `VisionData` and the sources' `RawVision`.

Everything here is plain numpy on the host. `Split` is a NamedTuple so it is also a JAX
pytree: `jax.device_put(data.train)` puts a whole split on device in one call, which is how
the trainer keeps small data sets resident (DESIGN.md layer 4).
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import numpy as np


class Split(NamedTuple):
    """One split of a classification data set, images or text alike.

    Attributes:
      inputs: the stored model inputs: `uint8 [N, H, W, C]` images (channels last), or
        `int32 [N, L]` WordPiece token ids (0 = [PAD]).
      labels: `int32 [N]` class indices in `[0, num_classes)`; OOD sets use -1 (no
        in-distribution label, the convention of `cud_jax.losses`).
    """

    inputs: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int:  # NamedTuple's len would be 2, the field count
        return int(self.labels.shape[0])

    @property
    def num_examples(self) -> int:
        return int(self.labels.shape[0])

    def take(self, indices) -> "Split":
        """The examples at `indices` (a new Split, arrays copied)."""
        indices = np.asarray(indices)
        return Split(self.inputs[indices], self.labels[indices])


def make_split(images, labels, *, what: str = "split") -> Split:
    """Validates and converts arrays into a `Split` (uint8 NHWC images, int32 labels).

    Args:
      images: `[N, H, W, C]` array (uint8, or integers in [0, 255]).
      labels: `[N]` integer class indices.
      what: a name for error messages, e.g. "cifar10 train".
    """
    images = np.asarray(images)
    labels = np.asarray(labels)
    if images.ndim != 4:
        raise ValueError(f"{what}: images must be [N, H, W, C], got shape {images.shape}.")
    if images.dtype != np.uint8:
        if not np.issubdtype(images.dtype, np.integer) or (
                images.size and (images.min() < 0 or images.max() > 255)):
            raise ValueError(
                f"{what}: images must be uint8 pixels in [0, 255], got dtype {images.dtype}.")
        images = images.astype(np.uint8)
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(
            f"{what}: labels must be a 1-D integer array, got shape {labels.shape} and dtype "
            f"{labels.dtype}.")
    if labels.shape[0] != images.shape[0]:
        raise ValueError(
            f"{what}: {images.shape[0]} images but {labels.shape[0]} labels; they must match.")
    return Split(images, labels.astype(np.int32))


class RawVision(NamedTuple):
    """What a registered source returns: the official train and test splits, unmodified.

    `load_vision` carves the validation split, takes subsets and computes statistics; a
    source only reads its files. `class_to_superclass` (one superclass index per class) and
    `superclass_names` are given by sources that know a class hierarchy (CIFAR-100, synthetic).
    """

    train: Split
    test: Split
    class_names: tuple[str, ...]
    class_to_superclass: tuple[int, ...] | None = None
    superclass_names: tuple[str, ...] | None = None


@dataclasses.dataclass(frozen=True, eq=False)
class VisionData:
    """A loaded image classification data set, ready for the trainer.

    Attributes:
      train, val, test: the splits. `val` is carved from the official training set (never from
        test) by `load_vision`, with a fixed seed.
      num_classes: number of classes K; labels lie in `[0, K)`.
      class_names: K names, index = label.
      mean, std: per-channel pixel statistics in [0, 1] units (pixel / 255), computed by
        `load_vision` from the training examples left after carving `val` and before any
        `train_subset`, so a quick run on a subset normalises exactly like the full run.
        Pass them to `cud_jax.data.normalize`.
      name: the name `load_vision` was called with.
      class_to_superclass: optional superclass index per class (CIFAR-100 coarse labels,
        the synthetic source's hierarchy); None when the source has no hierarchy.
      superclass_names: names of the superclasses, or None.
    """

    train: Split
    val: Split
    test: Split
    num_classes: int
    class_names: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    name: str
    class_to_superclass: tuple[int, ...] | None = None
    superclass_names: tuple[str, ...] | None = None

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(H, W, C) of every image."""
        return tuple(self.train.inputs.shape[1:])

    def __repr__(self) -> str:  # the default would print the pixel arrays
        return (f"VisionData(name={self.name!r}, num_classes={self.num_classes}, "
                f"image_shape={self.image_shape}, train={len(self.train)}, "
                f"val={len(self.val)}, test={len(self.test)})")


class TextSplit(NamedTuple):
    """Raw texts and int labels of one split, before tokenisation."""

    texts: list[str]
    labels: np.ndarray


class RawText(NamedTuple):
    """What a text source returns. `val` is the official validation split or None."""

    train: TextSplit
    test: TextSplit
    class_names: tuple[str, ...]
    val: TextSplit | None = None
    ood_val: list[str] | None = None
    ood_test: list[str] | None = None
    class_to_superclass: tuple[int, ...] | None = None
    superclass_names: tuple[str, ...] | None = None


@dataclasses.dataclass(frozen=True, eq=False)
class TextData:
    """A tokenised text classification data set, ready for the trainer.

    Attributes:
      train, val, test: `Split(inputs=int32 token ids [N, L], labels=int32 [N])` (0 = [PAD]
        for BERT vocabularies).
      num_classes, class_names: the K classes; labels lie in `[0, K)`.
      name: the name `load_text` was called with.
      vocab_size: size of the tokenizer's vocabulary (must match the model's).
      max_length: truncation length, [CLS] and [SEP] included.
      pad_id: the padding id; models derive their attention mask as `ids != pad_id`.
      ood_test, ood_val: out-of-distribution splits (labels -1), e.g. CLINC150's
        out-of-scope queries; None for sources without one.
      class_to_superclass, superclass_names: a class hierarchy (CLINC150 domains) or None.
    """

    train: Split
    val: Split
    test: Split
    num_classes: int
    class_names: tuple[str, ...]
    name: str
    vocab_size: int
    max_length: int
    pad_id: int = 0
    ood_test: Split | None = None
    ood_val: Split | None = None
    class_to_superclass: tuple[int, ...] | None = None
    superclass_names: tuple[str, ...] | None = None

    def __repr__(self) -> str:
        ood = "" if self.ood_test is None else f", ood_test={len(self.ood_test)}"
        return (f"TextData(name={self.name!r}, num_classes={self.num_classes}, "
                f"train={len(self.train)}x{self.train.inputs.shape[1]}, val={len(self.val)}, "
                f"test={len(self.test)}{ood}, max_length={self.max_length})")
