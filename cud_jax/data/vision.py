"""`load_vision`: one entry point for every vision source, plus validation split and subsets.

A source (a function registered by name) reads only the official train and test splits and
returns `RawVision`. `load_vision` then, the same way for every source:

1. carves `val_size` examples out of the official training set (never out of test), with a
   class-stratified draw fixed by `seed`;
2. computes per-channel mean/std from the training examples left after step 1;
3. takes class-balanced seeded subsets `train_subset` / `test_subset` for quick runs.

Step 1 does not depend on the subset sizes, so a quick run and a full run with the same seed
share their validation set. Built-in sources:

    cifar10, cifar100   official archives (python pickle or binary) in data_dir
    tfds:<name>         an already-prepared TFDS data set (e.g. tfds:cifar100, tfds:svhn_cropped)
    image_folder        train/<class>/*, test/<class>/* in a folder or tarball
    synthetic           generated, no download (see cud_jax.data.synthetic)
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from cud_jax.data import cifar, image_folder, synthetic, tfds_source
from cud_jax.data._sources import (call_registered, check_count, is_registered,
                                   register_source, source_names)
from cud_jax.data.containers import RawVision, Split, VisionData

VisionSource = Callable[..., RawVision]
_TFDS_PREFIX = "tfds:"


def register_vision_source(name: str, source: VisionSource, *, overwrite: bool = False) -> None:
    """Makes `load_vision(name, ...)` call `source(data_dir, **source_kwargs)`.

    The source returns `RawVision` with the official train and test splits; `load_vision`
    does the validation split, subsets and statistics.
    """
    register_source("vision", name, source, overwrite=overwrite)


def vision_sources() -> tuple[str, ...]:
    """Registered source names (plus any `tfds:<name>`)."""
    return source_names("vision")


register_vision_source("cifar10", cifar._load_cifar10)
register_vision_source("cifar100", cifar._load_cifar100)
register_vision_source("image_folder", image_folder.load_image_folder)
register_vision_source("synthetic", synthetic.load_synthetic)


def stratified_order(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A random order of all indices whose every prefix is (nearly) class-balanced.

    Each example gets the key (its rank within its class in a random shuffle + U[0, 1)) /
    class size; sorting by the key interleaves the classes in proportion to their sizes. For
    equal class sizes, any prefix of length m holds floor(m / K) or one more of every class.
    """
    labels = np.asarray(labels)
    n = labels.shape[0]
    perm = rng.permutation(n)
    lab = labels[perm]
    _, cls, counts = np.unique(lab, return_inverse=True, return_counts=True)
    grouped = np.argsort(cls, kind="stable")  # by class, shuffled order kept within a class
    starts = np.cumsum(counts) - counts
    rank = np.empty(n, dtype=np.float64)
    rank[grouped] = np.arange(n) - np.repeat(starts, counts)
    key = (rank + rng.random(n)) / counts[cls]
    return perm[np.argsort(key, kind="stable")]


def _take_balanced(split: Split, size: int, rng: np.random.Generator) -> tuple[Split, Split]:
    """(chosen, rest): `size` class-balanced examples and the others, each in original order."""
    order = stratified_order(split.labels, rng)
    chosen, rest = np.sort(order[:size]), np.sort(order[size:])
    return split.take(chosen), split.take(rest)


def _rng(seed: int, purpose: int) -> np.random.Generator:
    # Separate streams for val / train subset / test subset: changing one size leaves the
    # other draws unchanged.
    return np.random.default_rng([seed, purpose])


def channel_stats(images: np.ndarray, chunk: int = 4096) -> tuple[tuple[float, ...],
                                                                   tuple[float, ...]]:
    """Per-channel mean and std of uint8 images `[N, H, W, C]`, in [0, 1] pixel units.

    Accumulates exact integer sums chunk by chunk, so memory stays small and the result does
    not depend on the chunking.
    """
    c = images.shape[-1]
    total = np.zeros(c, dtype=np.float64)
    total_sq = np.zeros(c, dtype=np.float64)
    count = 0
    for start in range(0, images.shape[0], chunk):
        block = images[start:start + chunk].reshape(-1, c).astype(np.int64)
        total += block.sum(axis=0)
        total_sq += np.einsum("ij,ij->j", block, block)
        count += block.shape[0]
    if count == 0:
        raise ValueError("cannot compute image statistics of an empty training split.")
    mean = total / count
    var = np.maximum(total_sq / count - mean**2, 0.0)
    std = np.sqrt(var)
    std = np.where(std > 0, std, 255.0)  # constant channel: keep normalize finite
    return tuple(float(m / 255.0) for m in mean), tuple(float(s / 255.0) for s in std)


def load_vision(name: str, *, data_dir: str | None = None, val_size: int = 5000,
                seed: int = 0, train_subset: int | None = None,
                test_subset: int | None = None, **source_kwargs) -> VisionData:
    """Loads a vision data set by name into host numpy splits.

    Args:
      name: "cifar10", "cifar100", "image_folder", "synthetic", "tfds:<tfds name>", or a name
        added with `register_vision_source`.
      data_dir: where the source looks for its files (see each source; ignored by synthetic).
      val_size: examples carved from the official training set into `val` (class-stratified,
        fixed by `seed`); 0 for no validation split.
      seed: seed of the validation split and of the subsets.
      train_subset: if set, keep this many class-balanced training examples (after carving
        `val`), for quick runs.
      test_subset: if set, keep this many class-balanced test examples.
      **source_kwargs: options of the source, e.g. `labels="coarse"` for cifar100,
        `limit_per_class` / `cache_dir` / `image_size` for image_folder, the `SyntheticSpec`
        fields for synthetic, `train_split` / `test_split` for TFDS.

    Returns:
      VisionData; mean/std come from the training examples after carving `val` and before
      `train_subset`.

    Raises:
      DataNotFoundError: the data is not where the source looked; the message names the path
        and the file or command that supplies it.
      ValueError: unknown name, or sizes that do not fit the data set.
    """
    if name.startswith(_TFDS_PREFIX):
        raw = tfds_source.load_tfds(name[len(_TFDS_PREFIX):], data_dir, **source_kwargs)
    elif is_registered("vision", name):
        raw = call_registered("vision", name, data_dir, source_kwargs)
    else:
        raise ValueError(f"unknown vision data set {name!r}; choose one of "
                         f"{list(vision_sources())} or 'tfds:<name>' (e.g. 'tfds:svhn_cropped').")

    num_classes = len(raw.class_names)
    n_train, n_test = raw.train.num_examples, raw.test.num_examples
    check_count("val_size", val_size, n_train - 1, f"{name} has {n_train} training examples "
                 "and at least one must stay for training", allow_zero=True)
    train, val = raw.train, raw.train.take(np.zeros(0, dtype=np.int64))
    if val_size:
        val, train = _take_balanced(raw.train, val_size, _rng(seed, 0))
    mean, std = channel_stats(train.inputs)
    check_count("train_subset", train_subset, train.num_examples,
                 f"{train.num_examples} training examples are left after carving "
                 f"val_size={val_size}", allow_zero=False)
    if train_subset is not None and train_subset < train.num_examples:
        train, _ = _take_balanced(train, train_subset, _rng(seed, 1))
    test = raw.test
    check_count("test_subset", test_subset, n_test, f"{name} has {n_test} test examples",
                 allow_zero=False)
    if test_subset is not None and test_subset < n_test:
        test, _ = _take_balanced(test, test_subset, _rng(seed, 2))

    return VisionData(
        train=train, val=val, test=test, num_classes=num_classes,
        class_names=tuple(raw.class_names), mean=mean, std=std, name=name,
        class_to_superclass=raw.class_to_superclass, superclass_names=raw.superclass_names)
