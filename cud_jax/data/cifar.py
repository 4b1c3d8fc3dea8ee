"""CIFAR-10 and CIFAR-100 read straight from the official archives, without TensorFlow.

Accepted inside `data_dir` (first match wins; extracted folders are tried first because they
need no decompression):

    cifar10:  cifar-10-batches-py/  cifar-10-batches-bin/  cifar-10-python.tar.gz
              cifar-10-binary.tar.gz
    cifar100: cifar-100-python/     cifar-100-binary/      cifar-100-python.tar.gz
              cifar-100-binary.tar.gz

`data_dir` may also be one of those folders or archives itself. Both official formats store
each image as 3072 bytes: 1024 red, then 1024 green, then 1024 blue values, each plane row by
row (CHW); we return HWC. The python format is a pickle written by Python 2 (dict with bytes
keys); the binary format is fixed-size records `<label byte(s)><3072 pixel bytes>`, with
CIFAR-100 records carrying the coarse label byte before the fine one. CIFAR-100 uses the
fine (100-class) labels; its coarse labels give `class_to_superclass`.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import io
import os
import pickle
import tarfile

import numpy as np

from cud_jax.data.containers import RawVision, make_split
from cud_jax.data.errors import DataNotFoundError

_PIXELS = 3 * 32 * 32
_URL = "https://www.cs.toronto.edu/~kriz/"


@dataclasses.dataclass(frozen=True)
class _Layout:
    """Where one CIFAR variant keeps its files."""

    pretty: str
    python_dir: str
    binary_dir: str
    python_archive: str
    binary_archive: str
    python_train: tuple[str, ...]
    python_test: tuple[str, ...]
    python_meta: str
    binary_train: tuple[str, ...]
    binary_test: tuple[str, ...]
    binary_meta: tuple[str, ...]  # class-name text files; CIFAR-100: (fine, coarse)
    label_bytes: int  # 1 for CIFAR-10; 2 (coarse, fine) for CIFAR-100


_LAYOUTS = {
    "cifar10": _Layout(
        pretty="CIFAR-10",
        python_dir="cifar-10-batches-py",
        binary_dir="cifar-10-batches-bin",
        python_archive="cifar-10-python.tar.gz",
        binary_archive="cifar-10-binary.tar.gz",
        python_train=tuple(f"data_batch_{i}" for i in range(1, 6)),
        python_test=("test_batch",),
        python_meta="batches.meta",
        binary_train=tuple(f"data_batch_{i}.bin" for i in range(1, 6)),
        binary_test=("test_batch.bin",),
        binary_meta=("batches.meta.txt",),
        label_bytes=1,
    ),
    "cifar100": _Layout(
        pretty="CIFAR-100",
        python_dir="cifar-100-python",
        binary_dir="cifar-100-binary",
        python_archive="cifar-100-python.tar.gz",
        binary_archive="cifar-100-binary.tar.gz",
        python_train=("train",),
        python_test=("test",),
        python_meta="meta",
        binary_train=("train.bin",),
        binary_test=("test.bin",),
        binary_meta=("fine_label_names.txt", "coarse_label_names.txt"),
        label_bytes=2,
    ),
}


# --- Reading the python (pickle) format safely ------------------------------------------------

# numpy >= 2 moved numpy.core to numpy._core; old pickles name the former.
_NUMPY_CORE = "numpy._core" if importlib.util.find_spec("numpy._core") else "numpy.core"

# The only globals a CIFAR pickle needs (a dict of lists, bytes and one uint8 ndarray).
# Anything else is refused: unpickling an arbitrary downloaded file could run code.
_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),
    ("copyreg", "_reconstructor"),
    ("builtins", "object"),
}


class _CifarUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if (module, name) not in _ALLOWED_GLOBALS:
            raise pickle.UnpicklingError(
                f"refusing to load {module}.{name} from a CIFAR pickle; the official files "
                "contain only dicts, lists, bytes and numpy arrays.")
        if module.startswith("numpy.core"):
            module = _NUMPY_CORE + module[len("numpy.core"):]
        return super().find_class(module, name)


def _unpickle(blob: bytes, where: str) -> dict:
    # encoding="bytes": the files were written by Python 2, whose str is our bytes.
    try:
        obj = _CifarUnpickler(io.BytesIO(blob), encoding="bytes").load()
    except Exception as e:  # noqa: BLE001 - any parse failure means a bad file
        raise ValueError(f"could not read CIFAR pickle {where}: {e}") from e
    if not isinstance(obj, dict):
        raise ValueError(f"CIFAR pickle {where} holds a {type(obj).__name__}, not a dict.")
    return {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in obj.items()}


def _names(values) -> tuple[str, ...]:
    return tuple(v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in values)


def _chw_rows_to_hwc(rows: np.ndarray, where: str) -> np.ndarray:
    rows = np.asarray(rows, dtype=np.uint8)
    if rows.ndim != 2 or rows.shape[1] != _PIXELS:
        raise ValueError(f"{where}: expected image rows of {_PIXELS} bytes, got shape "
                         f"{rows.shape}.")
    return rows.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)


def _python_batches(files: dict[str, bytes], names, layout: _Layout, fine: bool, where: str):
    images, labels, coarse = [], [], []
    for name in names:
        d = _unpickle(files[name], f"{where}/{name}")
        key = "labels" if layout.label_bytes == 1 else ("fine_labels" if fine else "coarse_labels")
        if "data" not in d or key not in d:
            raise ValueError(f"{where}/{name} lacks the 'data' or '{key}' entry; is it an "
                             f"official {layout.pretty} file?")
        images.append(_chw_rows_to_hwc(d["data"], f"{where}/{name}"))
        labels.append(np.asarray(d[key], dtype=np.int64))
        if layout.label_bytes == 2:
            coarse.append(np.asarray(d["coarse_labels"], dtype=np.int64))
    return (np.concatenate(images), np.concatenate(labels),
            np.concatenate(coarse) if coarse else None)


def _binary_batches(files: dict[str, bytes], names, layout: _Layout, fine: bool, where: str):
    record = layout.label_bytes + _PIXELS
    images, labels, coarse = [], [], []
    for name in names:
        raw = np.frombuffer(files[name], dtype=np.uint8)
        if raw.size % record:
            raise ValueError(f"{where}/{name} is {raw.size} bytes, not a multiple of the "
                             f"{record}-byte {layout.pretty} record; the file is truncated.")
        raw = raw.reshape(-1, record)
        images.append(_chw_rows_to_hwc(raw[:, layout.label_bytes:], f"{where}/{name}"))
        # CIFAR-100 records: <coarse><fine><pixels>.
        labels.append(raw[:, layout.label_bytes - 1 if fine else 0].astype(np.int64))
        if layout.label_bytes == 2:
            coarse.append(raw[:, 0].astype(np.int64))
    return (np.concatenate(images), np.concatenate(labels),
            np.concatenate(coarse) if coarse else None)


# --- Finding and reading the files -------------------------------------------------------------

def _read_folder(folder: str, names) -> dict[str, bytes]:
    out = {}
    for name in names:
        path = os.path.join(folder, name)
        if not os.path.isfile(path):
            raise DataNotFoundError(
                f"{path} is missing: the folder {folder} is an incomplete extraction of the "
                f"official archive. Re-extract it (tar xzf ...) or delete the folder so the "
                f".tar.gz beside it is read instead.")
        with open(path, "rb") as f:
            out[name] = f.read()
    return out


def _read_tar(archive: str, folder: str, names) -> dict[str, bytes]:
    """Reads `folder/<name>` members in one streaming pass over the (gzipped) tar."""
    wanted = {f"{folder}/{n}": n for n in names}
    out = {}
    try:
        with tarfile.open(archive, "r|*") as tar:
            for member in tar:
                name = member.name[2:] if member.name.startswith("./") else member.name
                if member.isfile() and name in wanted:
                    out[wanted[name]] = tar.extractfile(member).read()
                    if len(out) == len(wanted):
                        break
    except (tarfile.TarError, OSError, EOFError) as e:
        raise ValueError(f"could not read the archive {archive}: {e}. Re-download it.") from e
    missing = sorted(set(wanted) - {f"{folder}/{n}" for n in out})
    if missing:
        raise DataNotFoundError(
            f"{archive} lacks {missing}; it is not the official archive or is truncated. "
            f"Re-download it from {_URL}.")
    return out


def _candidates(layout: _Layout, data_dir: str):
    """(kind, folder-or-archive path, folder name inside the archive) in preference order."""
    base = os.path.basename(os.path.normpath(data_dir))
    if os.path.isfile(data_dir):  # data_dir is itself an archive
        if base == layout.python_archive:
            return [("python", data_dir, layout.python_dir)]
        if base == layout.binary_archive:
            return [("binary", data_dir, layout.binary_dir)]
        return []
    if base == layout.python_dir:  # data_dir is the extracted folder itself
        return [("python", data_dir, None)]
    if base == layout.binary_dir:
        return [("binary", data_dir, None)]
    kinds = (("python", layout.python_dir, layout.python_archive),
             ("binary", layout.binary_dir, layout.binary_archive))
    found = [(kind, os.path.join(data_dir, folder), None) for kind, folder, _ in kinds
             if os.path.isdir(os.path.join(data_dir, folder))]
    found += [(kind, os.path.join(data_dir, archive), folder) for kind, folder, archive in kinds
              if os.path.isfile(os.path.join(data_dir, archive))]
    return found


def _not_found(layout: _Layout, name: str, data_dir: str | None) -> DataNotFoundError:
    where = (f"in {os.path.abspath(data_dir)}" if data_dir else
             "because no data_dir was given (pass data_dir=... or set CUD_JAX_DATA_DIR)")
    target = os.path.abspath(data_dir) if data_dir else "<data_dir>"
    return DataNotFoundError(
        f"No {layout.pretty} data found {where}. Looked for {layout.python_dir}/, "
        f"{layout.binary_dir}/, {layout.python_archive} and {layout.binary_archive}. "
        f"Put the official archive there, e.g. `wget -P {target} {_URL}{layout.python_archive}` "
        f"(no need to extract), or load it through TFDS with name='tfds:{name}'.")


def load_cifar(name: str, data_dir: str | None, *, labels: str = "fine") -> RawVision:
    """Reads CIFAR-10 or CIFAR-100 (train and test) from the official files in `data_dir`.

    Args:
      name: "cifar10" or "cifar100".
      data_dir: folder holding an official archive or its extracted folder (or the archive or
        folder itself); None reads the environment variable CUD_JAX_DATA_DIR.
      labels: CIFAR-100 only: "fine" (100 classes, the default) or "coarse" (20 superclasses).

    Raises:
      DataNotFoundError: no archive or folder found; the message names the file to download.
    """
    layout = _LAYOUTS[name]
    if labels not in ("fine", "coarse"):
        raise ValueError(f"`labels` must be 'fine' or 'coarse', got {labels!r}.")
    if labels == "coarse" and layout.label_bytes == 1:
        raise ValueError("`labels='coarse'` exists only for cifar100.")
    fine = labels == "fine"
    data_dir = data_dir or os.environ.get("CUD_JAX_DATA_DIR") or None
    data_dir = os.path.expanduser(data_dir) if data_dir else None
    if data_dir is None or not os.path.exists(data_dir):
        raise _not_found(layout, name, data_dir)
    found = _candidates(layout, data_dir)
    if not found:
        raise _not_found(layout, name, data_dir)
    kind, path, inner = found[0]

    if kind == "python":
        names = layout.python_train + layout.python_test + (layout.python_meta,)
    else:
        names = layout.binary_train + layout.binary_test + layout.binary_meta
    files = _read_folder(path, names) if inner is None else _read_tar(path, inner, names)
    where = path if inner is None else f"{path}:{inner}"

    if kind == "python":
        parse = _python_batches
        meta = _unpickle(files[layout.python_meta], f"{where}/{layout.python_meta}")
        if layout.label_bytes == 1:
            class_names = _names(meta["label_names"])
            coarse_names = None
        else:
            fine_names = _names(meta["fine_label_names"])
            coarse_names = _names(meta["coarse_label_names"])
            class_names = fine_names if fine else coarse_names
    else:
        parse = _binary_batches
        texts = [files[m].decode("utf-8").split("\n") for m in layout.binary_meta]
        texts = [tuple(t.strip() for t in lines if t.strip()) for lines in texts]
        class_names = texts[0] if fine else texts[1]
        coarse_names = texts[1] if layout.label_bytes == 2 else None

    train_x, train_y, train_c = parse(files, layout.python_train if kind == "python"
                                      else layout.binary_train, layout, fine, where)
    test_x, test_y, _ = parse(files, layout.python_test if kind == "python"
                              else layout.binary_test, layout, fine, where)
    del files
    for split_name, y in (("train", train_y), ("test", test_y)):
        if y.size and (y.min() < 0 or y.max() >= len(class_names)):
            raise ValueError(f"{where}: {split_name} labels span [{y.min()}, {y.max()}] but the "
                             f"meta file names {len(class_names)} classes.")

    class_to_superclass = None
    if layout.label_bytes == 2 and fine:
        class_to_superclass = _fine_to_coarse(train_y, train_c, len(class_names), where)
    return RawVision(
        train=make_split(train_x, train_y, what=f"{name} train"),
        test=make_split(test_x, test_y, what=f"{name} test"),
        class_names=class_names,
        class_to_superclass=class_to_superclass,
        superclass_names=coarse_names if class_to_superclass is not None else None,
    )


def _fine_to_coarse(fine: np.ndarray, coarse: np.ndarray, num_classes: int, where: str):
    """The superclass of each fine class, read off the training labels (None if incomplete)."""
    mapping = np.full(num_classes, -1, dtype=np.int64)
    mapping[fine] = coarse
    if np.any(mapping[fine] != coarse):
        raise ValueError(f"{where}: a fine class appears under two coarse classes.")
    if np.any(mapping < 0):  # tiny or partial files: not every class seen
        return None
    return tuple(int(c) for c in mapping)


def _load_cifar10(data_dir: str | None) -> RawVision:
    """CIFAR-10 from the official python or binary archive in `data_dir`."""
    return load_cifar("cifar10", data_dir)


def _load_cifar100(data_dir: str | None, *, labels: str = "fine") -> RawVision:
    """CIFAR-100 (fine labels unless labels='coarse') from the official archive in `data_dir`."""
    return load_cifar("cifar100", data_dir, labels=labels)

