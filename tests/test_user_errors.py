"""User mistakes fail with one line naming the fix, and damaged checkpoints lose no work.

Rows of issue 14's table: a misspelled config field, a workdir that is a file, a corrupt
newest checkpoint (empty `_METADATA`, truncated array file), a checkpoint of another model.
"""

from __future__ import annotations

import os

import jax.numpy as jnp
import numpy as np
import pytest

from _cli import run_main
from cud_jax.errors import UserError
from cud_jax.main import user_error_message
from cud_jax.train import checkpoints

QUICKSTART = "configs/quickstart.py"


def _state(offset):
    return {"w": jnp.arange(64.0) + offset, "b": jnp.full((3, 3), float(offset))}


def _two_checkpoints(directory):
    manager = checkpoints.open_manager(str(directory), keep=3)
    for step in (10, 20):
        checkpoints.save(manager, step, _state(step))
    manager.wait_until_finished()
    manager.close()


def _restore(directory, template=None):
    manager = checkpoints.open_manager(str(directory), keep=3)
    try:
        return checkpoints.restore_latest(manager, _state(0) if template is None else template)
    finally:
        manager.close()


def _files(step_dir):
    return [os.path.join(root, f) for root, _, files in os.walk(step_dir) for f in files]


def _truncate_arrays(step_dir):
    for path in _files(step_dir):
        if f"{os.sep}d{os.sep}" in path and os.path.getsize(path) > 64:
            with open(path, "r+b") as f:
                f.truncate(os.path.getsize(path) // 2)


def _empty_metadata(step_dir):
    for path in _files(step_dir):
        if os.path.basename(path) == "_METADATA":
            open(path, "w").close()


@pytest.mark.parametrize("damage", [_empty_metadata, _truncate_arrays],
                         ids=["empty_metadata", "truncated_array_file"])
def test_a_corrupt_newest_checkpoint_falls_back_to_the_older_intact_one(tmp_path, damage,
                                                                        capsys):
    _two_checkpoints(tmp_path)
    damage(tmp_path / "20")
    restored = _restore(tmp_path)
    np.testing.assert_array_equal(restored["w"], np.asarray(_state(10)["w"]))
    out = capsys.readouterr().out
    assert str(tmp_path / "20") in out and "resuming from step 10" in out


def test_no_readable_checkpoint_names_each_damaged_one(tmp_path):
    _two_checkpoints(tmp_path)
    for step in ("10", "20"):
        _empty_metadata(tmp_path / step)
    with pytest.raises(checkpoints.CorruptCheckpointError) as err:
        _restore(tmp_path)
    assert str(tmp_path / "10") in str(err.value) and str(tmp_path / "20") in str(err.value)
    assert isinstance(err.value, UserError)


def test_a_checkpoint_of_another_model_is_a_mismatch_not_corruption(tmp_path):
    _two_checkpoints(tmp_path)
    other = {"w": jnp.zeros(10), "b": jnp.zeros((3, 3))}
    with pytest.raises(checkpoints.CheckpointMismatchError, match="other shapes"):
        _restore(tmp_path, other)


def test_os_errors_of_the_users_paths_are_one_line_and_bugs_are_not():
    assert "No space left" in user_error_message(OSError(28, "No space left on device",
                                                         "/w/ckpt"))
    assert user_error_message(ZeroDivisionError("bug")) is None
    assert user_error_message(checkpoints.ConfigMismatchError("differs")) == "differs"


def test_a_misspelled_field_is_one_line_naming_the_field(tmp_path):
    result = run_main(QUICKSTART, tmp_path, "--config.student.methd=kd", timeout=300)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines == [lines[-1]] and "--config.student.methd" in lines[-1]
    assert '"method"' in lines[-1]
    assert not os.listdir(tmp_path)  # nothing written


def test_a_workdir_that_is_a_file_is_one_line_and_debug_shows_the_traceback(tmp_path):
    workdir = tmp_path / "a_file"
    workdir.write_text("not a folder")
    result = run_main(QUICKSTART, workdir, timeout=300)
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr and str(workdir) in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("error: ")
    debug = run_main(QUICKSTART, workdir, env={"CUD_JAX_DEBUG": "1"}, timeout=300)
    assert debug.returncode != 0 and "Traceback" in debug.stderr


def _quickstart():
    from configs import quickstart

    return quickstart.get_config()


@pytest.mark.parametrize("field, value, named", [
    ("student.method", "foo", "student.method='foo'"),
    ("teacher.epochs", -1.0, "teacher.epochs=-1.0: must be > 0"),
    ("teacher.lr", float("nan"), "teacher.lr=nan: must be finite"),
    ("student.batch_size", 60, "student.batch_size=60: not divisible by the 8 devices"),
    ("teacher.batch_size", 0, "teacher.batch_size=0: must be >= 1"),
    ("data.data_dir", "/no/such/folder", "data.data_dir='/no/such/folder'"),
    ("teacher.dtype", "float64", "teacher.dtype='float64'"),
    # The student's model is checked before the teacher trains, not when the student starts.
    ("student.model", "resnet9", "student.model='resnet9': Unknown model 'resnet9'. Valid "
                                 "names: resnet8, resnet14"),
    ("teacher.model", "bert:x", "teacher.model='bert:x': Unknown model 'bert:x'"),
])
def test_bad_values_fail_before_the_workdir_is_written(tmp_path, field, value, named):
    from cud_jax.config_check import ConfigError
    from cud_jax import pipeline

    config = _quickstart()
    section, name = field.split(".")
    config[section][name] = value
    workdir = tmp_path / "run"
    with pytest.raises(ConfigError) as err:
        pipeline.run(config, str(workdir))
    assert named in str(err.value)
    assert not workdir.exists()  # nothing written: the corrected rerun is not refused


def test_every_problem_is_listed_at_once():
    from cud_jax.config_check import config_problems

    config = _quickstart()
    config.student.method, config.teacher.epochs = "foo", 0.0
    problems = config_problems(config, num_devices=1)
    assert len(problems) == 2 and any("student.method" in p for p in problems)
    assert config_problems(_quickstart(), num_devices=8) == []


def test_text_model_specs_are_checked_without_loading_anything():
    from cud_jax.config_check import config_problems
    from configs import clinc150

    config = clinc150.get_config()
    config.data.data_dir = None
    assert config_problems(config, num_devices=1) == []  # a hub id: looked up when built
    config.student.model = "bert_small:L=4,W=256"
    config.teacher.model = "resnet32x4"
    problems = config_problems(config, num_devices=1)
    assert len(problems) == 2
    assert problems[0].startswith("teacher.model='resnet32x4': unknown text model spec")
    assert "bad item 'W=256'" in problems[1] and "keys L, H, A" in problems[1]


def test_the_workdir_guard_lets_paths_change_but_not_the_recipe(tmp_path):
    path = str(tmp_path / "config.json")
    config = {"data": {"data_dir": "/old/place", "name": "cifar10"},
              "teacher": {"checkpoint": None, "lr": 0.05}, "eval": {"ood_sets": ""}}
    checkpoints.check_or_write_config(path, config)
    moved = {"data": {"data_dir": "/new/place", "name": "cifar10"},
             "teacher": {"checkpoint": "/elsewhere", "lr": 0.05}, "eval": {"ood_sets": "x"}}
    checkpoints.check_or_write_config(path, moved)  # paths and evaluation may change
    changed = {**moved, "teacher": {"checkpoint": None, "lr": 0.1}}
    with pytest.raises(checkpoints.ConfigMismatchError, match="teacher.lr"):
        checkpoints.check_or_write_config(path, changed)


def test_sigterm_during_evaluation_stops_with_the_preemption_exit(tmp_path):
    import signal
    import time

    from cud_jax.parallel import preemption

    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(preemption.EvaluationStopped, match="Rerun the same command") as err:
        with preemption.stop_evaluation_on_sigterm(str(tmp_path)):
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(10)  # interrupted at once
    assert isinstance(err.value, preemption.Preempted)  # main exits 75 for it, as in training
    assert signal.getsignal(signal.SIGTERM) == before


def test_a_failed_cache_write_leaves_no_temporary_file(tmp_path, monkeypatch):
    from cud_jax.data import _cache_files

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(_cache_files.np, "savez", full_disk)
    with pytest.raises(OSError, match="No space"):
        _cache_files.save_npz_atomically(str(tmp_path / "cache.npz"), x=np.zeros(3))
    assert os.listdir(tmp_path) == []


def test_too_little_disk_for_a_checkpoint_fails_before_writing_it(tmp_path, monkeypatch):
    import errno
    import shutil

    manager = checkpoints.open_manager(str(tmp_path), keep=3)
    checkpoints.save(manager, 10, _state(10))
    manager.wait_until_finished()
    usage = shutil.disk_usage(str(tmp_path))
    monkeypatch.setattr(checkpoints.shutil, "disk_usage",
                        lambda path: usage._replace(free=1000))
    with pytest.raises(checkpoints.DiskFullError) as err:
        checkpoints.save(manager, 20, _state(20))
    manager.close()
    assert err.value.errno == errno.ENOSPC and "resume from step 10" in str(err.value)
    assert user_error_message(err.value).startswith("not enough disk space for the step 20")
    assert sorted(os.listdir(tmp_path)) == ["10"]  # nothing half-written
