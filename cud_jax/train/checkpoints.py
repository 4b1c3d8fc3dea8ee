"""Orbax checkpoints for one training stage, and the guard against mixing configs.

Each stage (teacher, student) has its own checkpoint directory; the frozen teacher is never
re-saved inside the student's checkpoints. A run restarted with the same command resumes
from the newest checkpoint of each stage. Orbax writes cooperatively from every process on
multi-host runs.
"""

from __future__ import annotations

import collections
import errno
import json
import os
import shutil
from typing import Any, Callable, Optional

import jax
import orbax.checkpoint as ocp

from cud_jax.errors import UserError


class ConfigMismatchError(UserError, ValueError):
    """A workdir holds a run whose config differs from the one given now."""


class CheckpointMismatchError(UserError, ValueError):
    """A checkpoint holds arrays of other shapes than the configured model and data."""


class CheckpointNotFound(UserError, FileNotFoundError):
    """A stage's checkpoint that the run needs (to evaluate, or as a teacher) is missing."""


class CorruptCheckpointError(UserError, RuntimeError):
    """No checkpoint of a directory can be read (truncated files, empty metadata, ...)."""


def open_manager(directory: str, *, keep: int = 2, every_steps: int = 0
                 ) -> ocp.CheckpointManager:
    """A CheckpointManager keeping the newest `keep` checkpoints.

    `every_steps` is enforced by the training loop (which also saves at the end), not by
    Orbax, so that the final step is always written.
    """
    del every_steps
    options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True)
    # The handler is named up front so that `item_metadata` can read a checkpoint's stored
    # shapes before restoring it (`restore_latest` tells a corrupt file from a mismatch).
    return ocp.CheckpointManager(os.path.abspath(directory), options=options,
                                 item_handlers=ocp.StandardCheckpointHandler())


class DiskFullError(UserError, OSError):
    """Too little free disk space for the next checkpoint (checked before writing it)."""


# Room kept free beyond a checkpoint's arrays: Orbax's metadata and the file system's own.
_SAVE_MARGIN_BYTES = 1 << 20


def save(manager: ocp.CheckpointManager, step: int, state: Any) -> None:
    """Saves `state` at `step` (asynchronously; `manager.wait_until_finished()` to block).

    Raises:
      DiskFullError: before writing anything, when the disk holds less free space than the
        checkpoint needs: Orbax's writer threads would otherwise fail half-way and fill the
        terminal with their tracebacks. The older checkpoints stay intact.
    """
    directory = str(manager.directory)
    needed = sum(getattr(leaf, "nbytes", 0) for leaf in jax.tree_util.tree_leaves(state))
    free = shutil.disk_usage(directory).free
    if free < needed + _SAVE_MARGIN_BYTES:
        kept = manager.latest_step()
        resume = (f"rerun the same command to resume from step {kept}" if kept is not None
                  else "rerun the same command")
        raise DiskFullError(
            errno.ENOSPC,
            f"not enough disk space for the step {step} checkpoint in {directory} (it needs "
            f"about {(needed + _SAVE_MARGIN_BYTES) / 2**20:.0f} MiB, {free / 2**20:.0f} MiB "
            f"are free): free some space or move the workdir, then {resume}")
    manager.save(step, args=ocp.args.StandardSave(state), force=True)


def latest_step(directory: str) -> Optional[int]:
    """The newest checkpoint step saved in `directory` (no restore), or None."""
    if not os.path.isdir(directory):
        return None
    steps = [int(name) for name in os.listdir(directory) if name.isdigit()]
    return max(steps) if steps else None


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0][:200] if text else ''}"


def _shape_counts(tree: Any) -> collections.Counter:
    return collections.Counter(tuple(leaf.shape) for leaf in jax.tree_util.tree_leaves(tree)
                               if hasattr(leaf, "shape"))


def _newest_intact(manager: ocp.CheckpointManager,
                   check_fits: Callable[[Any, str], None],
                   restore: Callable[[int], Any]) -> Optional[Any]:
    """`restore(step)` of the newest checkpoint that can be read, or None without any.

    A checkpoint whose files cannot be read (a truncated array file, an empty `_METADATA`,
    as a full disk or a killed copy leaves them) is skipped with a message naming it, and the
    next older one is restored: Orbax keeps several, so a damaged newest checkpoint costs
    the steps since the one before, not the run. `check_fits(stored_metadata_tree, path)`
    raises `CheckpointMismatchError` for a readable checkpoint of another model: no older
    checkpoint would fit either, so that is not skipped.

    Raises:
      CheckpointMismatchError: from `check_fits`.
      CorruptCheckpointError: checkpoints exist but none can be read; names each one.
    """
    directory = str(manager.directory)
    unreadable = []
    for step in sorted(manager.all_steps(), reverse=True):
        path = os.path.join(directory, str(step))
        try:
            stored = manager.item_metadata(step)
            stored = getattr(stored, "tree", stored)
        except Exception as err:  # noqa: BLE001 - any read failure means "damaged"
            unreadable.append((path, err))
            continue
        check_fits(stored, path)
        try:
            restored = restore(step)
        except Exception as err:  # noqa: BLE001 - metadata read, arrays did not
            unreadable.append((path, err))
            continue
        for bad, err in unreadable:
            if jax.process_index() == 0:
                print(f"Skipped the unreadable checkpoint {bad} ({_first_line(err)}); "
                      f"resuming from step {step}.", flush=True)
        return restored
    if unreadable:
        listed = "; ".join(f"{path} ({_first_line(err)})" for path, err in unreadable)
        raise CorruptCheckpointError(
            f"No checkpoint in {directory} can be read: {listed}. Delete the damaged step "
            f"folders (or all of {directory} to retrain this stage from scratch) and rerun.")
    return None


def restore_latest(manager: ocp.CheckpointManager, template: Any) -> Optional[Any]:
    """Restores the newest intact checkpoint into the structure and shardings of `template`.

    Damaged checkpoints are skipped (`_newest_intact`). Returns None when the directory
    holds no checkpoint.

    Raises:
      CheckpointMismatchError: a readable checkpoint whose arrays have other shapes than
        `template` (another model or class count).
      CorruptCheckpointError: checkpoints exist but none can be read.
    """
    abstract = jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, template)

    def check_fits(stored, path):
        stored_shapes, wanted = _shape_counts(stored), _shape_counts(abstract)
        if stored_shapes != wanted:
            missing = sorted((wanted - stored_shapes).elements())[:3]
            raise CheckpointMismatchError(
                f"The checkpoint {path} holds arrays of other shapes than the configured "
                f"model and data (e.g. none of shape {missing} it needs): it was made with "
                "another model or number of classes.")

    return _newest_intact(
        manager, check_fits,
        lambda step: manager.restore(step, args=ocp.args.StandardRestore(abstract)))


def _leaf_names(tree: Any) -> set:
    """'a/b/0/kernel/value' for each leaf: comparable between a live tree and saved metadata."""
    def name(key):
        return str(getattr(key, "key", getattr(key, "idx", getattr(key, "name", key))))

    return {"/".join(map(name, path)) for path, _ in jax.tree_util.tree_flatten_with_path(tree)[0]}


def _pytree_manager(directory: str) -> ocp.CheckpointManager:
    """A reader of any checkpoint's fields, whichever handler wrote it."""
    return ocp.CheckpointManager(os.path.abspath(directory),
                                 item_handlers=ocp.PyTreeCheckpointHandler())


def latest_metadata(directory: str) -> tuple[Optional[int], Optional[dict]]:
    """(step, tree of array metadata: shapes and dtypes) of the newest checkpoint in
    `directory`, without reading any array; (None, None) when there is none."""
    if not os.path.isdir(directory):
        return None, None
    manager = _pytree_manager(directory)
    try:
        step = manager.latest_step()
        return (None, None) if step is None else (step, manager.item_metadata(step).tree)
    finally:
        manager.close()


def restore_fields(directory: str, template: dict) -> Optional[dict]:
    """Restores some top-level fields of the newest intact checkpoint (e.g. the `weights` of
    a `TrainState`, without its optimiser state) into the shapes and shardings of `template`.

    Each restored field must hold exactly the template's arrays: a checkpoint with more
    layers (or fewer) is refused rather than read in part. Damaged checkpoints are skipped
    as in `restore_latest`. Returns None without a checkpoint.

    Raises:
      CheckpointMismatchError: the fields hold other arrays, or arrays of other shapes.
      CorruptCheckpointError: checkpoints exist but none can be read.
    """
    if not os.path.isdir(directory):
        return None
    abstract = jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, template)

    def check_fits(stored, path):
        for field, subtree in template.items():
            have, want = _leaf_names(stored.get(field, {})), _leaf_names(subtree)
            if have != want:
                extra, missing = sorted(have - want), sorted(want - have)
                raise CheckpointMismatchError(
                    f"The checkpoint {path}: its {field!r} holds {len(extra)} array(s) the "
                    f"model lacks {extra[:3]} and lacks {len(missing)} it has {missing[:3]}")

    def restore(step):
        args = ocp.args.PyTreeRestore(
            abstract, restore_args=ocp.checkpoint_utils.construct_restore_args(abstract),
            partial_restore=True)
        return manager.restore(step, args=args)

    manager = _pytree_manager(directory)
    try:
        return _newest_intact(manager, check_fits, restore)
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
                          ignore=("stage", "eval", "log_every", "distributed", "parallel",
                                  "data.data_dir", "teacher.checkpoint", "student.checkpoint")
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
        before the block existed, or with another `param_sharding`, resumes). Dotted
        entries name single fields: the paths to the data and to checkpoints trained
        elsewhere, which may move between invocations without changing the recipe.

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
            if any(key == field or key.startswith(field + ".") for field in ignore):
                return False
            if key not in old and new[key] is None:
                return False  # an optional field added since the run was made, left unset
            return saved(key) != new.get(key, "<absent>")

        diffs = sorted(k for k in set(old) | set(new) if differs(k))
        if diffs:
            listed = "; ".join(f"{k}: workdir has {saved(k)!r}, now "
                               f"{new.get(k, '<absent>')!r}" for k in diffs)
            raise ConfigMismatchError(
                f"The workdir already holds a run with a different config ({path}); refusing "
                f"to mix them. Differences: {listed}. Use a new --workdir, or rerun with the "
                "original config.")
        return
    if jax.process_index() == 0:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w", encoding="utf-8") as f:
            json.dump(config_dict, f, indent=2, sort_keys=True)
