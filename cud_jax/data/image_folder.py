"""Image folders and image tarballs: `<root>/train/<class>/*.jpg|png` and `<root>/test/<class>/*`.

`root` may be a folder, a `.tar` / `.tar.gz` / `.tgz` file, or a folder holding exactly one
such archive (so `load_vision("image_folder", data_dir=".../cifar10_jpeg")` reads the
tarball inside). Inside an archive the `train/` and `test/` folders may sit under one or more
leading folders. Archives are streamed once, never extracted; images are decoded with PIL.
Classes are the sorted folder names under `train/`; the label of a class is its index there.
Within a class, files are taken in sorted name order, so the result does not depend on the
order of the archive or of the file system.

Decoding is the slow part (about 8-12 s for CIFAR-10's 60,000 JPEGs on one core); pass
`cache_dir` to keep the decoded arrays as an `.npz` there, keyed by the source's size and
modification time and by the decoding options, so later loads take well under a second.
"""

from __future__ import annotations

import bisect
import hashlib
import io
import json
import os
import tarfile
import zipfile

import numpy as np

from cud_jax.data._cache_files import save_npz_atomically
from cud_jax.data.containers import RawVision, make_split
from cud_jax.data.errors import DataNotFoundError

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".ppm", ".pgm"})
_ARCHIVE_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz")
_CACHE_VERSION = 1  # bump when the decoded output of the same files would change


def _is_archive(path: str) -> bool:
    return os.path.isfile(path) and path.lower().endswith(_ARCHIVE_SUFFIXES)


def _is_image(name: str) -> bool:
    base = os.path.basename(name)
    return not base.startswith(".") and os.path.splitext(base)[1].lower() in IMAGE_EXTENSIONS


def _size_tuple(image_size) -> tuple[int, int] | None:
    if image_size is None:
        return None
    if isinstance(image_size, int):
        return (image_size, image_size)
    h, w = image_size
    return (int(h), int(w))


def _decode(src, channels: int, size: tuple[int, int] | None, name: str) -> np.ndarray:
    from PIL import Image  # pillow is an optional extra ([test] / [plots])

    try:
        with Image.open(io.BytesIO(src) if isinstance(src, bytes) else src) as im:
            im = im.convert("RGB" if channels == 3 else "L")
            if size is not None and im.size != (size[1], size[0]):
                im = im.resize((size[1], size[0]), Image.BILINEAR)
            arr = np.asarray(im, dtype=np.uint8)
    except OSError as e:
        raise ValueError(f"could not decode image {name}: {e}") from e
    return arr[..., None] if channels == 1 else arr


def load_image_files(paths_or_blobs, *, channels: int = 3, image_size=None,
                     names=None) -> np.ndarray:
    """Decodes image files (paths or raw bytes) into one `uint8 [N, H, W, C]` array.

    Args:
      paths_or_blobs: a sequence of file paths or of encoded image bytes (JPEG, PNG, ...).
      channels: 3 (RGB; grayscale is replicated) or 1 (grayscale; colour is converted).
      image_size: None to require all images to share a size, or an int / (height, width) to
        resize every image to (bilinear).
      names: optional names for error messages (defaults to the paths or indices).

    Raises:
      ValueError: an image cannot be decoded, or sizes differ and `image_size` is None.
    """
    if channels not in (1, 3):
        raise ValueError(f"`channels` must be 1 or 3, got {channels}.")
    size = _size_tuple(image_size)
    items = list(paths_or_blobs)
    if names is None:
        names = [p if isinstance(p, str) else f"#{i}" for i, p in enumerate(items)]
    out = None
    for i, (src, name) in enumerate(zip(items, names)):
        arr = _decode(src, channels, size, name)
        if out is None:  # the first image fixes the shape; preallocate once
            out = np.empty((len(items),) + arr.shape, dtype=np.uint8)
        elif arr.shape != out.shape[1:]:
            raise ValueError(
                f"image {name} is {arr.shape[1]}x{arr.shape[0]} but earlier images are "
                f"{out.shape[2]}x{out.shape[1]}; pass image_size=(H, W) to resize all images.")
        out[i] = arr
    if out is None:
        return np.zeros((0,) + (size or (0, 0)) + (channels,), dtype=np.uint8)
    return out


class _Collector:
    """Gathers (split, class) -> sorted [(name, source)], keeping the first `limit` names."""

    def __init__(self, splits: tuple[str, str], limit: int | None):
        self.splits = splits
        self.limit = limit
        self.items: dict[tuple[str, str], list] = {}

    def wants(self, split: str, cls: str, name: str) -> bool:
        """False when a limit is full with names that sort before `name`."""
        entries = self.items.get((split, cls))
        return (self.limit is None or entries is None or len(entries) < self.limit
                or name < entries[-1][0])

    def add(self, split: str, cls: str, name: str, source) -> None:
        entries = self.items.setdefault((split, cls), [])
        if self.limit is None:
            entries.append((name, source))  # sorted once at the end
            return
        if self.wants(split, cls, name):
            bisect.insort(entries, (name, source), key=lambda e: e[0])
            if len(entries) > self.limit:
                entries.pop()

    def take(self, split: str, cls: str) -> list:
        """The kept (name, source) pairs of one class, sorted by name, and forgets them."""
        return sorted(self.items.pop((split, cls), []), key=lambda e: e[0])

    def classes(self, split: str) -> list[str]:
        return sorted(c for s, c in self.items if s == split)


def _scan_folder(root: str, collector: _Collector) -> None:
    for split in collector.splits:
        split_dir = os.path.join(root, split)
        for cls in sorted(os.listdir(split_dir)):
            cls_dir = os.path.join(split_dir, cls)
            if not os.path.isdir(cls_dir) or cls.startswith("."):
                continue
            for fname in os.listdir(cls_dir):
                if _is_image(fname):
                    collector.add(split, cls, fname, os.path.join(cls_dir, fname))


def _scan_tar(archive: str, collector: _Collector) -> None:
    """One streaming pass; keeps the encoded bytes of the images that will be decoded."""
    prefix = None
    try:
        with tarfile.open(archive, "r|*") as tar:
            for member in tar:
                if not member.isfile() or not _is_image(member.name):
                    continue
                parts = [p for p in member.name.split("/") if p not in ("", ".")]
                if len(parts) < 3 or parts[-3] not in collector.splits:
                    continue
                lead = tuple(parts[:-3])
                if prefix is None:
                    prefix = lead
                elif lead != prefix:  # two data sets in one archive: refuse to mix them
                    raise ValueError(
                        f"{archive} holds train/test folders under both {'/'.join(prefix)!r} "
                        f"and {'/'.join(lead)!r}; keep one data set per archive.")
                split, cls, fname = parts[-3:]
                if collector.wants(split, cls, fname):  # else skip reading its bytes
                    collector.add(split, cls, fname, tar.extractfile(member).read())
    except (tarfile.TarError, EOFError, OSError) as e:
        raise ValueError(f"could not read the archive {archive}: {e}") from e


def _resolve_root(root: str | None, train_dir: str, test_dir: str) -> tuple[str, str]:
    """('folder' | 'tar', path); raises DataNotFoundError with the expected layout."""
    layout = (f"expected `{train_dir}/<class>/*.jpg|png` and `{test_dir}/<class>/*` in a "
              "folder, a .tar/.tar.gz archive, or a folder holding one such archive")
    if root is None:
        raise DataNotFoundError(
            f"image_folder needs a location: pass data_dir=... (or path=...); {layout}.")
    if _is_archive(root):
        return "tar", root
    if not os.path.isdir(root):
        raise DataNotFoundError(f"{os.path.abspath(root)} does not exist; {layout}.")
    if os.path.isdir(os.path.join(root, train_dir)):
        if not os.path.isdir(os.path.join(root, test_dir)):
            raise DataNotFoundError(
                f"{os.path.abspath(root)} has {train_dir}/ but no {test_dir}/ folder; {layout}. "
                f"(The validation split is carved from {train_dir}/; {test_dir}/ is required.)")
        return "folder", root
    archives = sorted(f for f in os.listdir(root) if _is_archive(os.path.join(root, f)))
    if len(archives) == 1:
        return "tar", os.path.join(root, archives[0])
    found = f"found archives {archives}" if archives else "found neither"
    raise DataNotFoundError(
        f"{os.path.abspath(root)} has no {train_dir}/ folder and {found}; {layout}."
        + (" Pass the archive itself as data_dir." if archives else ""))


def _fingerprint(kind: str, path: str, options: dict) -> str:
    """A key that changes when the source files or the decoding options change."""
    if kind == "tar":
        st = os.stat(path)
        files = [(os.path.abspath(path), st.st_size, st.st_mtime_ns)]
    else:
        files = []
        for dirpath, _, filenames in os.walk(path):
            for f in filenames:
                st = os.stat(os.path.join(dirpath, f))
                files.append((os.path.relpath(os.path.join(dirpath, f), path), st.st_size,
                              st.st_mtime_ns))
        files.sort()
        files.insert(0, os.path.abspath(path))
    blob = json.dumps({"files": files, "options": options, "v": _CACHE_VERSION}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def load_image_folder(data_dir: str | None = None, *, path: str | None = None,
                      channels: int = 3, image_size=None, limit_per_class: int | None = None,
                      cache_dir: str | None = None, train_dir: str = "train",
                      test_dir: str = "test") -> RawVision:
    """Reads an image-folder data set (folder or tarball) into train and test splits.

    Args:
      data_dir: the folder, archive, or folder holding one archive (see module docstring).
      path: overrides `data_dir` (for configs that keep `data_dir` for other data).
      channels: 3 for RGB, 1 for grayscale.
      image_size: None (all images must share one size) or an int / (H, W) to resize to.
      limit_per_class: read only the first N files (sorted by name) of each class in each
        split; for quick runs and tests. An archive is still streamed through once, but the
        skipped images are neither kept nor decoded.
      cache_dir: if given, decoded arrays are cached there as an .npz (created if needed).
      train_dir, test_dir: names of the split folders.

    Raises:
      DataNotFoundError: nothing at the location, or no train/test folders in it.
      ValueError: unreadable images, mixed sizes without `image_size`, test classes that are
        absent from train.
    """
    if limit_per_class is not None and limit_per_class < 1:
        raise ValueError(f"`limit_per_class` must be >= 1 or None, got {limit_per_class}.")
    root = path or data_dir
    kind, root = _resolve_root(os.path.expanduser(root) if root else None, train_dir, test_dir)
    options = {"channels": channels, "image_size": _size_tuple(image_size),
               "limit_per_class": limit_per_class, "train_dir": train_dir, "test_dir": test_dir}

    cache_file = None
    if cache_dir is not None:
        cache_dir = os.path.expanduser(cache_dir)
        stem = os.path.basename(os.path.normpath(root)).split(".")[0] or "images"
        cache_file = os.path.join(cache_dir, f"{stem}-{_fingerprint(kind, root, options)}.npz")
        if os.path.isfile(cache_file):
            with np.load(cache_file, allow_pickle=False) as z:
                return RawVision(
                    train=make_split(z["train_images"], z["train_labels"], what="cached train"),
                    test=make_split(z["test_images"], z["test_labels"], what="cached test"),
                    class_names=tuple(str(c) for c in z["class_names"]))

    collector = _Collector((train_dir, test_dir), limit_per_class)
    if kind == "tar":
        _scan_tar(root, collector)
    else:
        _scan_folder(root, collector)

    class_names = tuple(collector.classes(train_dir))
    if not class_names:
        raise DataNotFoundError(
            f"no images found under {train_dir}/<class>/ in {os.path.abspath(root)}; image "
            f"files must end in one of {sorted(IMAGE_EXTENSIONS)}.")
    unknown = sorted(set(collector.classes(test_dir)) - set(class_names))
    if unknown:
        raise ValueError(f"{os.path.abspath(root)}: {test_dir}/ has classes {unknown} that "
                         f"{train_dir}/ lacks; the two must use the same class folders.")

    splits = []
    for split in (train_dir, test_dir):
        sources, names, labels = [], [], []
        for label, cls in enumerate(class_names):
            for fname, src in collector.take(split, cls):
                sources.append(src)
                names.append(f"{root}:{split}/{cls}/{fname}")
                labels.append(label)
        images = load_image_files(sources, channels=channels, image_size=image_size,
                                  names=names)
        splits.append(make_split(images, np.asarray(labels, dtype=np.int32),
                                 what=f"{root}:{split}"))
    if not splits[1].num_examples:  # an empty test/ still gets the train image shape
        splits[1] = make_split(np.zeros((0,) + splits[0].inputs.shape[1:], np.uint8),
                               np.zeros(0, np.int32))
    elif splits[0].inputs.shape[1:] != splits[1].inputs.shape[1:]:
        raise ValueError(f"{root}: train images are {splits[0].inputs.shape[1:]} but test "
                         f"images are {splits[1].inputs.shape[1:]}; pass image_size=(H, W).")
    raw = RawVision(train=splits[0], test=splits[1], class_names=class_names)

    if cache_file is not None:
        os.makedirs(cache_dir, exist_ok=True)
        save_npz_atomically(cache_file, train_images=raw.train.inputs,
                            train_labels=raw.train.labels, test_images=raw.test.inputs,
                            test_labels=raw.test.labels,
                            class_names=np.asarray(class_names, dtype=str))
    return raw


def read_image_blobs(path: str) -> list[tuple[str, bytes]]:
    """(name, encoded bytes) of every image file under a folder, .zip or tar archive at
    `path`, sorted by name, whatever the folder structure (e.g. an OOD image set).

    Raises:
      DataNotFoundError: nothing exists at `path`.
    """
    if not os.path.exists(path):
        raise DataNotFoundError(f"no image folder or archive at {path}")
    if os.path.isdir(path):
        files = sorted(os.path.join(root, f) for root, _, names in os.walk(path)
                       for f in names if _is_image(f))
        blobs = []
        for name in files:
            with open(name, "rb") as fh:
                blobs.append((name, fh.read()))
        return blobs
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            return [(n, archive.read(n)) for n in sorted(archive.namelist()) if _is_image(n)]
    with tarfile.open(path) as archive:
        members = sorted((m for m in archive.getmembers() if m.isfile() and _is_image(m.name)),
                         key=lambda m: m.name)
        return [(m.name, archive.extractfile(m).read()) for m in members]
