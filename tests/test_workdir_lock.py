"""One run per workdir: the lock file, stale-lock detection, and the pipeline taking it."""

import json
import os
import socket
import subprocess
import sys

import pytest

from cud_jax import pipeline
from cud_jax.parallel import workdir_lock

from test_pipeline import _load_quickstart


@pytest.fixture
def live_process():
    """A process that is running for the test's duration (another run's PID)."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    yield proc.pid
    proc.kill()
    proc.wait()


def _write_lock(workdir, pid, host=None):
    with open(os.path.join(workdir, workdir_lock.LOCK_NAME), "w", encoding="utf-8") as f:
        json.dump({"pid": pid, "host": host or socket.gethostname(), "since": "earlier"}, f)


def test_second_taker_fails_naming_the_holder_and_release_frees(tmp_path):
    path = workdir_lock.acquire(str(tmp_path))
    with open(path, encoding="utf-8") as f:
        assert json.load(f)["pid"] == os.getpid()
    with pytest.raises(workdir_lock.WorkdirLockedError,
                       match=rf"in use by process {os.getpid()} on host"):
        workdir_lock.acquire(str(tmp_path))
    workdir_lock.release(path)
    assert not os.path.exists(path)
    workdir_lock.release(workdir_lock.acquire(str(tmp_path)))  # free again


def test_stale_lock_of_a_dead_process_is_replaced(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    _write_lock(tmp_path, dead.pid)
    path = workdir_lock.acquire(str(tmp_path))
    with open(path, encoding="utf-8") as f:
        assert json.load(f)["pid"] == os.getpid()
    workdir_lock.release(path)


def test_lock_of_another_host_is_respected(tmp_path):
    _write_lock(tmp_path, 1, host="elsewhere.example")
    with pytest.raises(workdir_lock.WorkdirLockedError, match="on host elsewhere.example"):
        workdir_lock.acquire(str(tmp_path))


def test_release_leaves_another_holders_lock(tmp_path, live_process):
    _write_lock(tmp_path, live_process)
    workdir_lock.release(os.path.join(str(tmp_path), workdir_lock.LOCK_NAME))
    assert os.path.exists(tmp_path / workdir_lock.LOCK_NAME)


def test_pipeline_refuses_a_workdir_in_use_and_releases_its_own(tmp_path, live_process):
    config = _load_quickstart()
    config.stage = "eval"  # nothing to train: a run that gets past the lock returns at once
    config.eval.corruptions = ""
    config.eval.ood_sets = ""
    _write_lock(tmp_path, live_process)
    with pytest.raises(workdir_lock.WorkdirLockedError, match=f"process {live_process}"):
        pipeline.run(config, str(tmp_path))
    os.remove(tmp_path / workdir_lock.LOCK_NAME)
    pipeline.run(config, str(tmp_path))
    assert not os.path.exists(tmp_path / workdir_lock.LOCK_NAME)  # released on exit
