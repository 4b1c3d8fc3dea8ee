"""TFDS data sets (`tfds:<name>`), read only when already prepared: never downloads.

Offline, a plain `tfds.load(name)` on unprepared data retries its download for minutes
before failing. We look for the prepared files on disk first, with no TFDS import, and fail
at once with the folder we searched and the command that prepares the data. Only then is
tensorflow-datasets imported (an optional extra: `pip install 'cud_jax[tfds]'`) and the
splits read with a builder, which cannot download.

A prepared data set is a folder `<data_dir>/<name>[/<config>]/<version>/` holding
`dataset_info.json`. Searched, in order: `data_dir` if given, else `$TFDS_DATA_DIR`, else
`~/tensorflow_datasets` (TFDS's own default).
"""

from __future__ import annotations

import glob
import importlib.util
import json
import os

import numpy as np

from cud_jax.data.containers import RawVision, make_split
from cud_jax.data.errors import DataNotFoundError

_INSTALL = "pip install 'cud_jax[tfds]'  (or: pip install tensorflow-datasets tensorflow-cpu)"


def _default_dirs(data_dir: str | None) -> list[str]:
    if data_dir:
        return [os.path.expanduser(data_dir)]
    env = os.environ.get("TFDS_DATA_DIR")
    if env:
        return [os.path.expanduser(env)]
    return [os.path.join(os.path.expanduser("~"), "tensorflow_datasets")]


def _parse_name(spec: str) -> tuple[str, str | None, str | None]:
    """'svhn_cropped' / 'name/config' / 'name:1.2.3' -> (name, config, version)."""
    name, _, version = spec.partition(":")
    name, _, config = name.partition("/")
    if not name:
        raise ValueError(f"empty TFDS name in {spec!r}; write e.g. 'tfds:cifar100'.")
    return name, config or None, version or None


def _version_key(v: str):
    return tuple(int(p) if p.isdigit() else -1 for p in v.split("."))


def find_prepared(spec: str, data_dir: str | None = None) -> tuple[str, str]:
    """Finds a prepared TFDS data set on disk without importing TFDS.

    Args:
      spec: TFDS name, optionally with config and version: `name[/config][:version]`.
      data_dir: the TFDS data dir; None searches `$TFDS_DATA_DIR` or `~/tensorflow_datasets`.

    Returns:
      (data_dir, version-folder) of the newest matching prepared version.

    Raises:
      DataNotFoundError: not prepared; the message gives the command that prepares it.
    """
    name, config, version = _parse_name(spec)
    dirs = _default_dirs(data_dir)
    for root in dirs:
        base = os.path.join(root, name, config) if config else os.path.join(root, name)
        pattern = os.path.join(base, version or "*", "dataset_info.json")
        infos = glob.glob(pattern)
        if not config and not version:  # a default config lives one level deeper
            infos += glob.glob(os.path.join(base, "*", "*", "dataset_info.json"))
        if infos:
            best = max(infos, key=lambda p: _version_key(os.path.basename(os.path.dirname(p))))
            return root, os.path.dirname(best)
    target = dirs[0]
    manual = os.path.join(target, "downloads", "manual")
    install = ("" if importlib.util.find_spec("tensorflow_datasets") else
               f" tensorflow-datasets is not installed either: {_INSTALL}.")
    raise DataNotFoundError(
        f"TFDS data set {spec!r} is not prepared in {os.path.abspath(target)} (looked for "
        f"{os.path.join(os.path.abspath(target), name, '<version>', 'dataset_info.json')}). "
        f"Prepare it on a machine with internet access: `tfds build {name}"
        f"{'/' + config if config else ''}{':' + version if version else ''} "
        f"--data_dir={os.path.abspath(target)}` (data sets that need manual downloads read "
        f"them from {manual}), then copy the {name}/ folder here if you built it elsewhere. "
        f"Set data_dir=... or $TFDS_DATA_DIR to use another location." + install)


def _check_splits(info_dir: str, splits: tuple[str, ...], spec: str) -> None:
    """Fails early (no TFDS import) when a requested split was not prepared."""
    try:
        with open(os.path.join(info_dir, "dataset_info.json"), encoding="utf-8") as f:
            info = json.load(f)
    except (OSError, ValueError):
        return  # let TFDS report a damaged info file in its own words
    available = {s.get("name") for s in info.get("splits", []) if isinstance(s, dict)}
    if not available:
        return
    for split in splits:
        base = split.split("[")[0]  # allow slicing syntax such as 'train[:10%]'
        if base not in available:
            raise ValueError(f"TFDS data set {spec!r} has splits {sorted(available)}; "
                             f"{base!r} is not one of them (set train_split= / test_split=).")


def load_tfds(spec: str, data_dir: str | None = None, *, train_split: str = "train",
              test_split: str = "test", image_key: str = "image",
              label_key: str = "label") -> RawVision:
    """Reads an already-prepared TFDS image classification data set into numpy.

    Args:
      spec: `name[/config][:version]`, e.g. "cifar100", "svhn_cropped", "cifar10:3.0.2".
      data_dir: TFDS data dir; None uses `$TFDS_DATA_DIR` or `~/tensorflow_datasets`.
      train_split, test_split: TFDS split names (TFDS slicing syntax allowed).
      image_key, label_key: feature names of the image and the class label.

    Raises:
      DataNotFoundError: not prepared (raised before TFDS is imported).
      ImportError: prepared but tensorflow-datasets is not installed.
    """
    root, info_dir = find_prepared(spec, data_dir)
    _check_splits(info_dir, (train_split, test_split), spec)
    try:
        import tensorflow_datasets as tfds  # slow import (TensorFlow): only now
    except ImportError as e:
        raise ImportError(
            f"TFDS data set {spec!r} is prepared in {info_dir} but tensorflow-datasets is not "
            f"installed: {_INSTALL}.") from e

    name, _, _ = _parse_name(spec)
    # info_dir is <root>/<name>[/<config>]/<version>: name the exact folder found.
    found = os.path.relpath(info_dir, os.path.join(root, name)).split(os.sep)
    full = f"{name}/{found[0]}:{found[1]}" if len(found) == 2 else f"{name}:{found[0]}"
    # A builder reads prepared files only; unlike tfds.load it has no download path to retry.
    builder = tfds.builder(full, data_dir=root)
    label_feature = builder.info.features[label_key]
    class_names = tuple(getattr(label_feature, "names", None) or
                        [str(i) for i in range(label_feature.num_classes)])

    splits = []
    for split in (train_split, test_split):
        ds = builder.as_dataset(split=split, batch_size=-1)  # whole split as one batch
        arrays = tfds.as_numpy(ds)
        images = np.asarray(arrays[image_key])
        if images.ndim == 3:  # [N, H, W] grayscale
            images = images[..., None]
        splits.append(make_split(images, np.asarray(arrays[label_key]).astype(np.int32),
                                 what=f"tfds:{spec} {split}"))
    return RawVision(train=splits[0], test=splits[1], class_names=class_names)
