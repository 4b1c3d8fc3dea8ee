"""Reading Hugging Face checkpoint folders: `config.json` and the weight files, as numpy.

Nothing here knows about BERT; `cud_jax.models.bert` maps the tensors onto its modules.

A checkpoint is named either by a local folder (`config.json` plus `model.safetensors`,
a sharded `model.safetensors.index.json`, or a PyTorch `pytorch_model.bin`) or by a Hub
repository id such as `"bert-base-uncased"`, which `huggingface_hub.snapshot_download`
fetches into its cache. The optional dependencies (`safetensors`, `huggingface_hub`, and
`torch` for `.bin` files only) are imported when needed: `pip install cud_jax[text]`.
"""

from __future__ import annotations

import json
import os
import pathlib
from typing import Any

import numpy as np

from cud_jax.package_paths import (PACKAGE_HINTS, CheckpointNotFoundError,  # noqa: F401
                                  expand_package_path)

SAFETENSORS = "model.safetensors"
SAFETENSORS_INDEX = "model.safetensors.index.json"
PYTORCH_BIN = "pytorch_model.bin"
CONFIG = "config.json"

# What a download fetches: config, weights and the tokenizer files `cud_jax.data` reads.
_HUB_PATTERNS = ("config.json", "*.safetensors", SAFETENSORS_INDEX, "vocab.txt",
                 "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


#: Checkpoint folders that a project command writes, by folder name: that command.
FOLDER_HINTS = {"paraphrase-MiniLM-L3-v2": "python -m cud_jax.interop.onnx_import --out=DIR"}


def _looks_like_path(name: str) -> bool:
    """True for names that can only be local paths (absolute, relative, home, Windows)."""
    return (name.startswith(("/", ".", "~")) or os.sep != "/" and os.sep in name
            or name.count("/") > 1)


def _has_weights(folder: pathlib.Path) -> bool:
    return any((folder / f).is_file() for f in (SAFETENSORS, SAFETENSORS_INDEX, PYTORCH_BIN))


def resolve_checkpoint(path_or_name: str | os.PathLike, *,
                       local_files_only: bool | None = None) -> pathlib.Path:
    """The local folder holding a checkpoint, downloading it from the Hub if needed.

    Args:
      path_or_name: a local folder, a folder inside an installed package
        (`pypi:<module>/<dir>`, see `expand_package_path`), or a Hub repository id
        (`"bert-base-uncased"`, `"google/bert_uncased_L-4_H-256_A-4"`).
      local_files_only: for Hub ids, use only the Hugging Face cache. None (default) reads
        the `HF_HUB_OFFLINE` environment variable.

    Raises:
      CheckpointNotFoundError: no such folder, a folder without weights, or a Hub id that
        could not be fetched (offline, unknown repository, `huggingface_hub` missing).
    """
    name = expand_package_path(path_or_name)
    folder = pathlib.Path(name).expanduser()
    if folder.is_dir():
        if not (folder / CONFIG).is_file() or not _has_weights(folder):
            raise CheckpointNotFoundError(
                f"checkpoint folder {str(folder)!r} must contain {CONFIG} and one of "
                f"{SAFETENSORS}, {SAFETENSORS_INDEX} (+ shards) or {PYTORCH_BIN}; it has "
                f"{sorted(p.name for p in folder.iterdir())}.")
        return folder
    if _looks_like_path(name) or folder.exists():
        raise CheckpointNotFoundError(
            f"checkpoint folder {name!r} does not exist. "
            + (f"Write it with `{FOLDER_HINTS[folder.name]}`." if folder.name in FOLDER_HINTS
               else f"Pass a folder containing {CONFIG} and {SAFETENSORS}, or a Hugging Face "
                    "Hub id such as 'bert-base-uncased'."))
    return _download(name, local_files_only)


def _download(repo_id: str, local_files_only: bool | None) -> pathlib.Path:
    fix = (f"Download it on a machine that is online (e.g. `hf download {repo_id} --local-dir "
           f"DIR`) and pass the local folder that holds {CONFIG} and {SAFETENSORS} instead of "
           f"the Hub id.")
    try:
        import huggingface_hub  # pylint: disable=import-outside-toplevel
    except ImportError:
        raise CheckpointNotFoundError(
            f"{repo_id!r} is not a local folder, and fetching it from the Hugging Face Hub "
            f"needs `huggingface_hub` (pip install 'cud_jax[text]'). {fix}") from None
    if local_files_only is None:
        local_files_only = os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in (
            "1", "true", "yes", "on")
    try:
        folder = huggingface_hub.snapshot_download(
            repo_id, allow_patterns=list(_HUB_PATTERNS), local_files_only=local_files_only)
        folder = pathlib.Path(folder)
        if not any(folder.glob("*.safetensors")):  # an older repository: PyTorch weights only
            folder = pathlib.Path(huggingface_hub.snapshot_download(
                repo_id, allow_patterns=list(_HUB_PATTERNS) + [PYTORCH_BIN],
                local_files_only=local_files_only))
    except Exception as e:  # offline, unknown repo, gated, network errors: one clear message
        mode = " (offline: HF_HUB_OFFLINE / local_files_only)" if local_files_only else ""
        raise CheckpointNotFoundError(
            f"{repo_id!r} is not a local folder and could not be fetched from the Hugging Face "
            f"Hub{mode}: {type(e).__name__}: {str(e).rstrip('. ')}. {fix}") from e
    if not (folder / CONFIG).is_file() or not _has_weights(folder):
        raise CheckpointNotFoundError(
            f"Hub repository {repo_id!r} has no {CONFIG} with {SAFETENSORS} or {PYTORCH_BIN}.")
    return folder


def read_config(folder: str | os.PathLike) -> dict[str, Any]:
    """The parsed `config.json` of a checkpoint folder."""
    path = pathlib.Path(folder) / CONFIG
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        raise CheckpointNotFoundError(
            f"no {CONFIG} in checkpoint folder {str(folder)!r}.") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not valid JSON: {e}") from e


def _load_safetensors(path: pathlib.Path) -> dict[str, np.ndarray]:
    try:
        from safetensors.numpy import load_file  # pylint: disable=import-outside-toplevel
    except ImportError:
        raise ImportError(
            f"reading {path} needs the `safetensors` package: pip install 'cud_jax[text]'."
        ) from None
    return load_file(str(path))


def _load_torch_bin(path: pathlib.Path) -> dict[str, np.ndarray]:
    try:
        import torch  # pylint: disable=import-outside-toplevel
    except ImportError:
        raise ImportError(
            f"{path} is a PyTorch pickle and reading it needs torch; install torch, or convert "
            f"the checkpoint to {SAFETENSORS} (which needs only `safetensors`).") from None
    state = torch.load(str(path), map_location="cpu", weights_only=True)
    out = {}
    for k, v in state.items():
        if v.dtype in (torch.bfloat16, torch.float16):
            v = v.float()
        out[k] = v.numpy()
    return out


def read_weights(folder: str | os.PathLike) -> dict[str, np.ndarray]:
    """All tensors of a checkpoint folder by their Hugging Face names, as numpy arrays.

    Prefers `model.safetensors`, then a sharded `model.safetensors.index.json`, then
    `pytorch_model.bin` (needs torch). Half-precision tensors are returned as stored
    (bfloat16 via ml_dtypes); the caller casts.
    """
    folder = pathlib.Path(folder)
    if (folder / SAFETENSORS).is_file():
        return _load_safetensors(folder / SAFETENSORS)
    if (folder / SAFETENSORS_INDEX).is_file():
        with open(folder / SAFETENSORS_INDEX, encoding="utf-8") as f:
            shards = sorted(set(json.load(f)["weight_map"].values()))
        out: dict[str, np.ndarray] = {}
        for shard in shards:
            out.update(_load_safetensors(folder / shard))
        return out
    if (folder / PYTORCH_BIN).is_file():
        return _load_torch_bin(folder / PYTORCH_BIN)
    raise CheckpointNotFoundError(
        f"no weights in {str(folder)!r}: expected {SAFETENSORS}, {SAFETENSORS_INDEX} or "
        f"{PYTORCH_BIN}.")
