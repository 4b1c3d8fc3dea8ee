"""Multi-process runs on one machine: 2 processes x 4 CPU devices against 1 process x 8.

The two-process run (`python -m cud_jax.main` twice, meeting over loopback through
`jax.distributed`, CPU collectives over Gloo) is stopped by a SIGTERM sent to process 1
alone in the middle of the teacher stage, then relaunched with the same command. Checked
against the same tiny config (tests/multiprocess_config.py) trained in this pytest process
(8 emulated devices): both processes stop at the same step with exit status 75, the resumed
run logs the same losses and reports the same metrics, and its checkpoints restore here
(one process) to the same final parameters.

Cost: three tiny runs, ~140 s of CPU time; 2 minutes of wall time measured on 2 CPU cores
that were also running a benchmark (load average 8).
"""

import concurrent.futures
import json
import os
import signal
import socket
import subprocess
import sys
import time

import jax
import ml_collections
import numpy as np
import optax
import pytest
from flax import nnx

from cud_jax.data.containers import Split
from cud_jax.parallel.host_devices import COLLECTIVE_TIMEOUT_SECONDS
from cud_jax import configs, pipeline
from cud_jax.parallel import distributed, preemption
from cud_jax.train import checkpoints, objectives, steps
from cud_jax.train.loop import StageRun, train_stage
from cud_jax.parallel.sharding import make_mesh
from cud_jax.train.state import create_train_state, split_model
from cud_jax.train.writers import MetricWriter

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(REPO, "tests", "multiprocess_config.py")
# Shared by both runs: one evaluation batch for the 96 test images, checkpoints only at the
# end of a stage (so the resume below can only start from the preemption checkpoint).
OVERRIDES = {"eval.batch_size": 96, "checkpoint.every_steps": 0}
TIMEOUT = 240


def _gloo_missing() -> str:
    try:
        from jax._src.lib import _jax
    except ImportError:
        return ""
    if not hasattr(_jax, "make_gloo_tcp_collectives"):
        return "this jaxlib has no Gloo CPU collectives (needed for CPU multi-process runs)"
    return ""


pytestmark = pytest.mark.skipif(bool(_gloo_missing()), reason=_gloo_missing() or "-")


def _config():
    import importlib.util

    spec = importlib.util.spec_from_file_location("multiprocess_config", CONFIG)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = module.get_config()
    for key, value in OVERRIDES.items():
        section, field = key.split(".")
        config[section][field] = value
    return config


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def _launch(workdir: str, port: int) -> list:
    """Starts the two processes (4 CPU devices each); their output goes to ../proc{i}.log."""
    flags = " ".join(["--xla_force_host_platform_device_count=4",
                      "--xla_backend_optimization_level=0"] + [  # as in conftest.py
        f"--{flag}={COLLECTIVE_TIMEOUT_SECONDS}" for flag in (
            "xla_cpu_collective_call_terminate_timeout_seconds",
            "xla_cpu_collective_timeout_seconds")])
    env = dict(os.environ, XLA_FLAGS=flags, JAX_PLATFORMS="cpu")
    procs = []
    for pid in range(2):
        log = open(os.path.join(os.path.dirname(workdir), f"proc{pid}.log"), "a")
        cmd = [sys.executable, "-m", "cud_jax.main", f"--config={CONFIG}",
               f"--workdir={workdir}",
               *(f"--config.{k}={v}" for k, v in OVERRIDES.items()),
               f"--config.distributed.coordinator_address=localhost:{port}",
               "--config.distributed.num_processes=2", f"--config.distributed.process_id={pid}"]
        procs.append(subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log,
                                      stderr=subprocess.STDOUT, text=True))
        log.close()
    return procs


def _wait(procs) -> list:
    deadline = time.monotonic() + TIMEOUT
    codes = []
    for proc in procs:
        try:
            codes.append(proc.wait(timeout=max(1.0, deadline - time.monotonic())))
        except subprocess.TimeoutExpired:
            for p in procs:
                p.kill()
            raise
    return codes


def _read(path: str) -> str:
    with open(path, encoding="utf-8", errors="replace") as f:
        return f.read()


def _losses(workdir: str) -> dict:
    out = {}
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        for line in f:
            record = json.loads(line)
            out[(record["stage"], record["step"])] = record["loss"]
    return out


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """(one-process workdir, two-process workdir, preemption step, logs of the first launch)."""
    root = tmp_path_factory.mktemp("multiprocess")
    one, two = str(root / "one"), str(root / "two" / "run")
    os.makedirs(two)
    procs = _launch(two, _free_port())
    # SIGTERM to process 1 only, once process 0 has logged a teacher step.
    log0 = os.path.join(os.path.dirname(two), "proc0.log")
    deadline = time.monotonic() + TIMEOUT
    while "[teacher] step 2/8" not in _read(log0):
        assert all(p.poll() is None for p in procs), _read(log0)[-3000:]
        assert time.monotonic() < deadline, "no teacher step logged"
        time.sleep(0.2)
    procs[1].send_signal(signal.SIGTERM)
    first = _wait(procs)
    logs = [_read(os.path.join(os.path.dirname(two), f"proc{i}.log")) for i in range(2)]
    assert first == [preemption.EXIT_PREEMPTED] * 2, logs[0][-3000:] + logs[1][-3000:]
    # The same command again; meanwhile the one-process reference (8 devices) trains here.
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        reference = pool.submit(pipeline.run, _config(), one)
        codes = _wait(_launch(two, _free_port()))
        reference.result()
    assert codes == [0, 0], _read(log0)[-3000:]
    stopped = [int(line.split("at step ")[1].split(";")[0]) for line in logs[0].splitlines()
               if "stopped by SIGTERM at step" in line]
    return one, two, stopped[0], logs


def test_sigterm_to_one_process_stops_both_at_the_same_step(runs):
    _, _, step, logs = runs
    assert 2 <= step < 8, step
    for pid, log in enumerate(logs):
        assert f"[teacher] stopped by SIGTERM at step {step}" in log
        # Each process kept only the training shards of its own 4 devices.
        shards = list(range(4 * pid, 4 * pid + 4))
        assert f"[data] process {pid} holds training shards {shards}: 128 of 256" in log
    # The resumed launch started from the preemption checkpoint, not from scratch.
    log0 = _read(os.path.join(os.path.dirname(runs[1]), "proc0.log"))
    assert f"resumed from step {step}" in log0


def test_two_processes_log_and_report_what_one_process_does(runs):
    one, two, _, _ = runs
    losses_one, losses_two = _losses(one), _losses(two)
    assert sorted(losses_two) == sorted(losses_one)  # every step logged once, both stages
    keys = sorted(losses_one)
    np.testing.assert_allclose([losses_two[k] for k in keys], [losses_one[k] for k in keys],
                               rtol=1e-5, atol=1e-6)
    with open(os.path.join(one, "report.json")) as f:
        report_one = json.load(f)
    with open(os.path.join(two, "report.json")) as f:
        report_two = json.load(f)
    close = dict(rtol=1e-4, atol=1e-6)
    for name in ("teacher", "student"):
        a, b = report_one["models"][name], report_two["models"][name]
        for metric in ("accuracy", "nll", "brier", "ece"):
            np.testing.assert_allclose(b["clean"][metric], a["clean"][metric], **close)
        # Shift (each process corrupts only its own rows) and OOD detection agree too.
        shift_one, shift_two = (r["shift"]["models"][name]["mean"]
                                for r in (report_one, report_two))
        for metric in ("accuracy", "nll", "ece"):
            np.testing.assert_allclose(shift_two[metric], shift_one[metric], **close)
        ood_one, ood_two = (r["ood"]["noise:uniform"][name]["msp"]
                            for r in (report_one, report_two))
        np.testing.assert_allclose(ood_two["auroc"], ood_one["auroc"], **close)
    with open(os.path.join(two, "versions.json")) as f:
        assert json.load(f)["process_count"] == 2


def test_two_process_checkpoints_restore_in_one_process_to_the_same_parameters(runs):
    one, two, _, _ = runs
    config, mesh = _config(), make_mesh()
    assert mesh.devices.size == 8 and jax.process_count() == 1
    from cud_jax.train.tasks import build_task

    task = pipeline.place_data(config, build_task(config.data), mesh)
    for name in ("teacher", "student"):
        mine = pipeline.load_trained(name, config, one, task, mesh)
        theirs = pipeline.load_trained(name, config, two, task, mesh)
        assert theirs.step == mine.step == 8
        for a, b in ((theirs.params, mine.params), (theirs.model_state, mine.model_state)):
            jax.tree_util.tree_map(
                lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6), a, b)


# ---------------------------------------------------------------------------- one process

def _tiny_stage(tmp_path, mesh):
    import jax.numpy as jnp

    class Tiny(nnx.Module):
        def __init__(self, rngs):
            self.conv = nnx.Conv(3, 4, (3, 3), rngs=rngs)
            self.head = nnx.Linear(4, 3, rngs=rngs)

        def __call__(self, x):
            return self.head(jnp.mean(nnx.relu(self.conv(x)), axis=(1, 2)))

    rng = np.random.default_rng(0)
    train = Split(rng.integers(0, 256, (32, 6, 6, 3)).astype(np.uint8),
                  rng.integers(0, 3, 32).astype(np.int32))
    model_def, params, model_state = split_model(Tiny(nnx.Rngs(0)))
    tx = optax.sgd(0.1)
    objective = objectives.teacher_objective(ml_collections.ConfigDict({"loss": "ce"}))
    step_fn = steps.make_train_step(model_def, tx, objective, lambda k, x: x / 255.0,
                                    batch_size=8, steps_per_epoch=4, mesh=mesh)
    run = StageRun(name="teacher", step_fn=step_fn, num_examples=32, steps_per_epoch=4,
                   total_steps=8, seed=0, checkpoint_dir=str(tmp_path / "ckpt"),
                   checkpoint_every=100, keep=2, log_every=4, batch_size=8)
    return train, run, create_train_state(params, model_state, tx)


def _train(tmp_path, mesh, run_hook=None):
    train, run, state = _tiny_stage(tmp_path, mesh)
    if run_hook:
        run_hook(run)
    writer = MetricWriter(str(tmp_path), run.name)
    try:
        return train_stage(run, state, train.inputs, train.labels, mesh=mesh, writer=writer)
    finally:
        writer.close()


def test_sigterm_saves_the_current_step_and_the_rerun_finishes_the_same(tmp_path):
    mesh = make_mesh()
    full = _train(tmp_path / "full", mesh)

    def signal_at_step_3(run):
        real, calls = run.step_fn, []

        def step(*args, **kwargs):
            calls.append(1)
            if len(calls) == 3:
                os.kill(os.getpid(), signal.SIGTERM)  # the handler only sets a flag
            return real(*args, **kwargs)

        run.step_fn = step

    before = signal.getsignal(signal.SIGTERM)
    with preemption.handle_sigterm():
        with pytest.raises(preemption.Preempted, match="step 3"):
            _train(tmp_path / "cut", mesh, signal_at_step_3)
        manager = checkpoints.open_manager(str(tmp_path / "cut" / "ckpt"))
        assert manager.all_steps() == [3]
        manager.close()
        preemption.clear()
        resumed = _train(tmp_path / "cut", mesh)
    assert int(resumed.step) == 8
    jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6),
                           resumed.params, full.params)
    assert signal.getsignal(signal.SIGTERM) == before  # the handler is removed


def _block(**fields):
    """A complete `config.distributed` block with `fields` set."""
    block = configs.distributed_config()
    block.update(fields)
    return block


def test_distributed_stays_off_without_a_cluster(monkeypatch):
    for var in ("SLURM_JOB_ID", "OMPI_MCA_orte_hnp_uri"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(distributed, "_on_cloud_tpu_vm", lambda: False)
    assert distributed.detect_cluster() is None
    assert distributed.initialize(_block(enabled="auto")) is False
    assert distributed.initialize(_block()) is False
    assert distributed.initialize(_block(enabled="false")) is False
    with pytest.raises(ValueError, match="distributed.num_processes"):
        distributed.initialize(_block(coordinator_address="localhost:1", process_id=0))
    with pytest.raises(ValueError, match="valid values"):
        distributed.initialize(_block(enabled="maybe"))


def test_slurm_is_detected_only_for_several_tasks(monkeypatch):
    monkeypatch.setattr(distributed, "_on_cloud_tpu_vm", lambda: False)
    monkeypatch.delenv("OMPI_MCA_orte_hnp_uri", raising=False)
    monkeypatch.delenv("SLURM_STEP_NUM_TASKS", raising=False)
    monkeypatch.setenv("SLURM_JOB_ID", "42")
    monkeypatch.setenv("SLURM_PROCID", "0")
    monkeypatch.setenv("SLURM_NTASKS", "1")
    assert distributed.detect_cluster() is None
    monkeypatch.setenv("SLURM_NTASKS", "4")
    assert distributed.detect_cluster() == "slurm"


def test_too_late_to_initialize_is_a_warning_in_auto_mode_and_an_error_when_asked(monkeypatch):
    jax.devices()  # this process has started JAX already
    monkeypatch.setattr(distributed, "detect_cluster", lambda: "slurm")
    assert distributed.initialize(_block(enabled="auto")) is False
    with pytest.raises(RuntimeError, match="cud_jax.main"):
        distributed.initialize(_block(enabled="true"))
