"""Writing cache files so that neither a kill nor a full disk leaves a broken one behind."""

from __future__ import annotations

import os

import numpy as np


def save_npz_atomically(path: str, **arrays) -> None:
    """`np.savez(path, **arrays)` through a temporary file renamed into place.

    A killed run or a second process never sees a half-written file, and a failed write
    (a full disk) removes its temporary file before the error propagates.
    """
    tmp = f"{path}.{os.getpid()}.tmp"
    try:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
