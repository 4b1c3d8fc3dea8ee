"""Reading PyTorch `.pth` / `.pt` checkpoints as numpy arrays, without PyTorch.

`torch.save` writes a pickle whose tensors refer to raw storages by "persistent id". Two
layouts exist:

- zip (PyTorch >= 1.6): `<archive>/data.pkl` is the pickle, `<archive>/data/<key>` holds
  the bytes of each storage, `<archive>/byteorder` (newer files) says little or big endian.
- legacy (older PyTorch, e.g. many published 2019 checkpoints): a file of consecutive
  pickles (magic number, protocol version, system info, the object, the storage keys)
  followed by each storage as an 8-byte element count and its raw bytes.

A pickle can name any Python callable, so unpickling an untrusted file can run arbitrary
code. The unpickler here resolves only the handful of names a tensor checkpoint needs
(`_ALLOWED`): tensor and parameter rebuild functions (replaced by numpy implementations),
storage type tags, `OrderedDict`, and numpy scalars. Every other name is refused with
`UnsafeCheckpointError`, so nothing from the file is ever executed.
"""

from __future__ import annotations

import collections
import io
import os
import pickle
import struct
import sys
import zipfile
from typing import Any

import numpy as np

try:
    import ml_dtypes  # ships with jax
    _BFLOAT16 = np.dtype(ml_dtypes.bfloat16)
except ImportError:  # pragma: no cover - jax always brings it
    _BFLOAT16 = None


class UnsafeCheckpointError(pickle.UnpicklingError):
    """The checkpoint's pickle names a Python object that a tensor checkpoint never needs."""


class StorageType:
    """Stands for a `torch.<X>Storage` class: only its element dtype matters here."""

    def __init__(self, name: str, dtype: np.dtype | None):
        self.name = name
        self.dtype = dtype

    def __repr__(self) -> str:
        return f"torch.{self.name}"


_STORAGE_DTYPES = {
    "FloatStorage": np.dtype(np.float32), "DoubleStorage": np.dtype(np.float64),
    "HalfStorage": np.dtype(np.float16), "BFloat16Storage": _BFLOAT16,
    "LongStorage": np.dtype(np.int64), "IntStorage": np.dtype(np.int32),
    "ShortStorage": np.dtype(np.int16), "CharStorage": np.dtype(np.int8),
    "ByteStorage": np.dtype(np.uint8), "BoolStorage": np.dtype(np.bool_),
    "UntypedStorage": np.dtype(np.uint8),
}


def _rebuild_tensor(storage: np.ndarray, offset: int, size, stride, *_ignored) -> np.ndarray:
    """numpy version of `torch._utils._rebuild_tensor_v2`: a strided VIEW of the storage.

    A view, not a copy: a legacy file's storage bytes come after the pickle, so the storage
    is still being filled when the tensor is rebuilt. `load` copies every array at the end.
    """
    size, stride = tuple(int(n) for n in size), tuple(int(s) for s in stride)
    if any(n == 0 for n in size):
        return np.zeros(size, storage.dtype)
    needed = offset + 1 + sum((n - 1) * s for n, s in zip(size, stride))
    if offset < 0 or needed > storage.size:
        raise pickle.UnpicklingError(
            f"a tensor of size {size} (stride {stride}, offset {offset}) reaches past its "
            f"storage of {storage.size} elements; the checkpoint is corrupt.")
    item = storage.itemsize
    return np.lib.stride_tricks.as_strided(storage[offset:], shape=size,
                                           strides=tuple(s * item for s in stride),
                                           writeable=False)


def _rebuild_tensor_v3(storage, offset, size, stride, requires_grad, hooks, dtype=None,
                       *_ignored):
    del requires_grad, hooks, dtype  # the storage already carries the element type
    return _rebuild_tensor(storage, offset, size, stride)


def _rebuild_parameter(data, *_ignored):
    return data  # an nn.Parameter is its tensor plus autograd flags


def _numpy_scalar(dtype, data=None):
    dtype = np.dtype(dtype)
    return np.frombuffer(data, dtype=dtype, count=1)[0] if data is not None else dtype.type()


def _ordered_dict(*args):
    return collections.OrderedDict(*args)


# (module, name) -> what the unpickler returns for it. Nothing else resolves.
_ALLOWED: dict[tuple[str, str], Any] = {
    ("torch._utils", "_rebuild_tensor"): lambda storage, offset, size, stride:
        _rebuild_tensor(storage, offset, size, stride),
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor_v3"): _rebuild_tensor_v3,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("collections", "OrderedDict"): _ordered_dict,
    ("numpy.core.multiarray", "scalar"): _numpy_scalar,
    ("numpy._core.multiarray", "scalar"): _numpy_scalar,
    ("numpy", "dtype"): np.dtype,
    **{("torch", name): StorageType(name, dtype) for name, dtype in _STORAGE_DTYPES.items()},
}


class _RestrictedUnpickler(pickle.Unpickler):
    """Resolves only `_ALLOWED` names; storages come from `load_storage`."""

    def __init__(self, file, load_storage, source: str):
        super().__init__(file, encoding="latin1")  # legacy files pickled on Python 2
        self._load_storage = load_storage
        self._source = source

    def find_class(self, module: str, name: str):
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise UnsafeCheckpointError(
                f"{self._source}: refusing to load `{module}.{name}`: a tensor checkpoint "
                "needs only tensors, dicts, lists and numbers, and unpickling other objects "
                "could run code from the file. Re-save it in PyTorch as a plain state dict "
                "(torch.save({'model': model.state_dict()}, path)).") from None

    def persistent_load(self, pid):
        if not isinstance(pid, tuple) or not pid or pid[0] != "storage":
            raise pickle.UnpicklingError(f"{self._source}: unknown persistent id {pid!r}.")
        storage_type, key, numel = pid[1], str(pid[2]), pid[4]
        if not isinstance(storage_type, StorageType) or storage_type.dtype is None:
            raise pickle.UnpicklingError(
                f"{self._source}: unsupported storage type {storage_type!r}.")
        storage = self._load_storage(key, storage_type.dtype, int(numel))
        view = pid[5] if len(pid) > 5 else None  # legacy files: a slice of a root storage
        if view is not None:
            _, start, count = view
            storage = storage[int(start):int(start) + int(count)]
        return storage


def _from_bytes(raw: bytes, dtype: np.dtype, *, little: bool) -> np.ndarray:
    """Raw storage bytes as a 1-D array of `dtype` in this machine's byte order."""
    if little == (sys.byteorder == "little") or dtype.itemsize == 1:
        return np.frombuffer(raw, dtype=dtype)
    return np.frombuffer(raw, dtype=dtype.newbyteorder()).astype(dtype)


def _load_zip(path: str, source: str) -> Any:
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
        pickles = [n for n in names if n.endswith("/data.pkl") or n == "data.pkl"]
        if len(pickles) != 1:
            raise pickle.UnpicklingError(f"{source}: a zip without exactly one data.pkl; not a "
                                         "torch.save file.")
        prefix = pickles[0][:-len("data.pkl")]
        order = "little"
        if f"{prefix}byteorder" in names:
            order = archive.read(f"{prefix}byteorder").decode().strip()
        cache: dict[str, np.ndarray] = {}

        def load_storage(key: str, dtype: np.dtype, numel: int) -> np.ndarray:
            if key not in cache:
                cache[key] = _from_bytes(archive.read(f"{prefix}data/{key}"), dtype,
                                         little=order == "little")
            return cache[key]

        with archive.open(pickles[0]) as f:
            return _RestrictedUnpickler(io.BytesIO(f.read()), load_storage, source).load()


_LEGACY_MAGIC = 0x1950a86a20f9469cfc6c


def _load_legacy(path: str, source: str) -> Any:
    with open(path, "rb") as f:
        def plain(what: str):
            # Header pickles hold only ints and dicts of ints / bools.
            return _RestrictedUnpickler(f, _no_storage, f"{source} ({what})").load()

        def _no_storage(*_):
            raise pickle.UnpicklingError(f"{source}: storage in a header pickle.")

        if plain("magic number") != _LEGACY_MAGIC:
            raise pickle.UnpicklingError(f"{source}: not a torch.save file (bad magic number).")
        plain("protocol version")
        sys_info = plain("system info")
        little = not isinstance(sys_info, dict) or sys_info.get("little_endian", True)
        storages: dict[str, tuple[np.dtype, int]] = {}

        def declare(key: str, dtype: np.dtype, numel: int) -> np.ndarray:
            # The storage bytes follow the object pickle: hand out a placeholder now and
            # fill it in place once they have been read.
            if key not in storages:
                storages[key] = (dtype, np.empty(int(numel), dtype))
            return storages[key][1]

        obj = _RestrictedUnpickler(f, declare, source).load()
        keys = plain("storage keys")
        for key in keys:
            if str(key) not in storages:
                raise pickle.UnpicklingError(f"{source}: storage {key} is never used; the "
                                             "file is corrupt.")
            dtype, array = storages[str(key)]
            (numel,) = struct.unpack("<q" if little else ">q", f.read(8))
            raw = f.read(numel * dtype.itemsize)
            if len(raw) != numel * dtype.itemsize or numel != array.size:
                raise pickle.UnpicklingError(f"{source}: storage {key} is truncated.")
            array[:] = _from_bytes(raw, dtype, little=little)
    return obj


def _materialise(obj: Any) -> Any:
    """Copies every array out of its storage (compact, writable, independent of the file)."""
    if isinstance(obj, np.ndarray):
        return np.array(obj)
    if isinstance(obj, dict):
        out = type(obj)() if isinstance(obj, collections.OrderedDict) else {}
        for key, value in obj.items():
            out[key] = _materialise(value)
        return out
    if isinstance(obj, (list, tuple)):
        return type(obj)(_materialise(v) for v in obj)
    return obj


def load(path: str | os.PathLike) -> Any:
    """The object `torch.save` wrote to `path`, with tensors as numpy arrays.

    Reads both the zip and the legacy layout. Only tensor checkpoints load: any pickled
    object other than tensors, containers, numbers and strings raises
    `UnsafeCheckpointError` (see the module docstring).
    """
    path = os.fspath(path)
    source = path
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no such checkpoint file.")
    try:
        if zipfile.is_zipfile(path):
            return _materialise(_load_zip(path, source))
        return _materialise(_load_legacy(path, source))
    except pickle.UnpicklingError as err:
        if str(err).startswith(source):  # ours, already naming the file
            raise
        raise pickle.UnpicklingError(f"{source} is not a readable torch.save checkpoint "
                                     f"({err}).") from err
    except (EOFError, zipfile.BadZipFile, struct.error, KeyError, IndexError, TypeError,
            ValueError, AttributeError) as err:  # truncated or not a torch.save file at all
        raise pickle.UnpicklingError(
            f"{source} is not a readable torch.save checkpoint ({type(err).__name__}: "
            f"{err}); is the file complete?") from err
