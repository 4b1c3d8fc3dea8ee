"""Orbax checkpoints for one training stage, and the guard against mixing configs.

Each stage (teacher, student) has its own checkpoint directory; the frozen teacher is never
re-saved inside the student's checkpoints. A run restarted with the same command resumes
from the newest checkpoint of each stage. Orbax writes cooperatively from every process on
multi-host runs.
"""

from __future__ import annotations

import json
import os
from typing import Any, Optional

import jax
import orbax.checkpoint as ocp


class ConfigMismatchError(ValueError):
    """A workdir holds a run whose config differs from the one given now."""


def open_manager(directory: str, *, keep: int = 2, every_steps: int = 0
                 ) -> ocp.CheckpointManager:
    """A CheckpointManager keeping the newest `keep` checkpoints.

    `every_steps` is enforced by the training loop (which also saves at the end), not by
    Orbax, so that the final step is always written.
    """
    del every_steps
    options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True)
    return ocp.CheckpointManager(os.path.abspath(directory), options=options)


def save(manager: ocp.CheckpointManager, step: int, state: Any) -> None:
    """Saves `state` at `step` (asynchronously; `manager.wait_until_finished()` to block)."""
    manager.save(step, args=ocp.args.StandardSave(state), force=True)


def restore_latest(manager: ocp.CheckpointManager, template: Any) -> Optional[Any]:
    """Restores the newest checkpoint into the structure, shapes and shardings of `template`.

    Returns None when the directory holds no checkpoint.
    """
    step = manager.latest_step()
    if step is None:
        return None
    abstract = jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, template)
    return manager.restore(step, args=ocp.args.StandardRestore(abstract))


def _leaf_names(tree: Any) -> set:
    """'a/b/0/kernel/value' for each leaf: comparable between a live tree and saved metadata."""
    def name(key):
        return str(getattr(key, "key", getattr(key, "idx", getattr(key, "name", key))))

    return {"/".join(map(name, path)) for path, _ in jax.tree_util.tree_flatten_with_path(tree)[0]}


def latest_metadata(directory: str) -> tuple[Optional[int], Optional[dict]]:
    """(step, tree of array metadata: shapes and dtypes) of the newest checkpoint in
    `directory`, without reading any array; (None, None) when there is none."""
    if not os.path.isdir(directory):
        return None, None
    manager = ocp.CheckpointManager(os.path.abspath(directory),
                                    item_handlers=ocp.PyTreeCheckpointHandler())
    try:
        step = manager.latest_step()
        return (None, None) if step is None else (step, manager.item_metadata(step).tree)
    finally:
        manager.close()


def restore_fields(directory: str, template: dict) -> Optional[dict]:
    """Restores some top-level fields of the newest checkpoint (e.g. the `weights` of a
    `TrainState`, without its optimiser state) into the shapes and shardings of `template`.

    Each restored field must hold exactly the template's arrays: a checkpoint with more
    layers (or fewer) is refused rather than read in part. Returns None without a checkpoint.

    Raises:
      ValueError: the fields hold other arrays, or arrays of other shapes.
    """
    step, saved = latest_metadata(directory)
    if step is None:
        return None
    for field, subtree in template.items():
        have, want = _leaf_names(saved.get(field, {})), _leaf_names(subtree)
        if have != want:
            extra, missing = sorted(have - want), sorted(want - have)
            raise ValueError(f"its {field!r} holds {len(extra)} array(s) the model lacks "
                             f"{extra[:3]} and lacks {len(missing)} it has {missing[:3]}")
    abstract = jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, template)
    manager = ocp.CheckpointManager(os.path.abspath(directory),
                                    item_handlers=ocp.PyTreeCheckpointHandler())
    try:
        args = ocp.args.PyTreeRestore(
            abstract, restore_args=ocp.checkpoint_utils.construct_restore_args(abstract),
            partial_restore=True)
        return manager.restore(step, args=args)
    finally:
        manager.close()


#: Written beside a checkpoint made outside the trainer (`python -m cud_jax.convert`).
IMPORT_INFO = "imported.json"


def weights(state) -> dict:
    """The fields of a `TrainState` a trained model needs: step, params, model_state."""
    return {"step": state.step, "params": state.params, "model_state": state.model_state}


def save_weights(directory: str, params: Any, model_state: Any, info: dict) -> None:
    """Writes a weights-only checkpoint (no optimiser state) that `load_trained` accepts as
    `<stage>.checkpoint`, with `info` (where the weights came from) as IMPORT_INFO.

    Refuses a directory that already holds a checkpoint.
    """
    directory = os.path.abspath(directory)
    if os.path.exists(directory) and os.listdir(directory):
        raise FileExistsError(f"{directory} is not empty; pass a new output directory.")
    manager = open_manager(directory, keep=1)
    try:
        save(manager, 0, {"step": jax.numpy.zeros((), jax.numpy.int32), "params": params,
                          "model_state": model_state})
        manager.wait_until_finished()
    finally:
        manager.close()
    with open(os.path.join(directory, IMPORT_INFO), "w", encoding="utf-8") as f:
        json.dump(info, f, indent=2, sort_keys=True)


def read_import_info(directory: str) -> Optional[dict]:
    """IMPORT_INFO of a checkpoint directory, or None for the trainer's own checkpoints."""
    path = os.path.join(directory, IMPORT_INFO)
    if not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def _flatten(tree: Any, prefix: str = "") -> dict:
    if isinstance(tree, dict):
        out = {}
        for key, value in tree.items():
            out.update(_flatten(value, f"{prefix}{key}."))
        return out
    return {prefix[:-1]: tree}


# Fields added after runs were made, with the value that reproduces how those runs behaved:
# a saved config without the field compares as if it held this value.
LEGACY_VALUES = {"data.placement": "replicated", "data.length_buckets": []}


def check_or_write_config(path: str, config_dict: dict, *,
                          ignore=("stage", "eval", "log_every", "distributed", "parallel")
                          ) -> None:
    """Writes the resolved config to `path`, or checks it against the one already there.

    Args:
      path: JSON file in the workdir.
      config_dict: the config as plain nested dicts.
      ignore: top-level fields allowed to differ between invocations: which stage to run,
        and the evaluation and logging settings, which change no trained weight (so a
        finished run can be re-evaluated with more corruptions or OOD sets), the
        process layout (a run may resume with another number of processes) and the device
        layout of the state (`parallel`: checkpoints restore into any layout, so a run made
        before the block existed, or with another `param_sharding`, resumes).

    Raises:
      ConfigMismatchError: naming each field whose value differs.
    """
    if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            old = _flatten(json.load(f))
        new = _flatten(json.loads(json.dumps(config_dict)))

        def saved(key: str):
            return old.get(key, LEGACY_VALUES.get(key, "<absent>"))

        def differs(key: str) -> bool:
            if key.split(".")[0] in ignore:
                return False
            if key not in old and new[key] is None:
                return False  # an optional field added since the run was made, left unset
            return saved(key) != new.get(key, "<absent>")

        diffs = sorted(k for k in set(old) | set(new) if differs(k))
        if diffs:
            lines = [f"  {k}: workdir has {saved(k)!r}, now "
                     f"{new.get(k, '<absent>')!r}" for k in diffs]
            raise ConfigMismatchError(
                f"The workdir already holds a run with a different config ({path}); refusing "
                "to mix them. Differences:\n" + "\n".join(lines)
                + "\nUse a new --workdir, or rerun with the original config.")
        return
    if jax.process_index() == 0:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w", encoding="utf-8") as f:
            json.dump(config_dict, f, indent=2, sort_keys=True)
