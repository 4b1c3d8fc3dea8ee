"""Sweeps: a variant trained inside a sweep equals the same config trained alone.

Tiny synthetic data (8x8 images, tests/sweep_config.py) and resnet8 models, 5 steps across
an epoch boundary, augmentation on. The variants' stages trained alone
(`pipeline.run_training_stage`, one device) are computed once (`alone`); every sweep is
compared with them loss by loss and parameter by parameter (rel. 1e-5): a whole sweep of
seeds through `pipeline.run` on 8 emulated devices (`unroll`: stacked teachers, students
distilling from their own, reports, compare.md; then resumed after a simulated kill), and
sweep stages (`sweep_pipeline.train_stacked_stage`) on one device in `vmap` and `unroll`
mode; on a 4-device mesh, a vmapped sweep placed run by run (`parallel.sweep_layout=runs`)
equals the same sweep with each run's batch split over the devices. A persistent
compilation cache for this module lets programs that differ only in their data (the same
step for seed 0 and seed 1, the resumed sweep) compile once.
"""

import json
import os

import jax
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from cud_jax import pipeline, sweep_pipeline
from cud_jax.config_check import ConfigError, check_config
from cud_jax.parallel.sharding import make_mesh
from cud_jax.train import sweep as sweep_lib
from cud_jax.train.tasks import build_task
from tests._cli import REPO, run_main

RTOL = 1e-5
#: The gradient norm sums BatchNorm gradients that nearly cancel; a vmapped step (a batched
#: convolution) sums them in another float32 order than the single run: measured 5e-5.
GRAD_NORM_RTOL = 1e-3
#: The same summation-order difference reaches the BatchNorm biases of a vmapped stage (values
#: ~1e-3 that learn from those nearly cancelling gradients): measured 1.2e-5 of the model's
#: largest weight after 5 steps, so vmap's parameters are held to 5e-5 of it (unroll: 1e-5).
VMAP_PARAM_ATOL = 5e-5


def _config(sweep, **fields):
    """tests/sweep_config.py with `sweep` and `fields` (dotted names) set."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "sweep_config", os.path.join(REPO, "tests", "sweep_config.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    c = module.get_config()
    c.sweep = sweep
    for field, value in fields.items():
        node = c
        *parents, leaf = field.split(".")
        for parent in parents:
            node = node[parent]
        node[leaf] = value
    return c


@pytest.fixture(scope="module", autouse=True)
def compilation_cache(tmp_path_factory):
    """Programs compiled in this module are cached on disk and reused by identical ones
    (JAX's persistent cache keys on the program, not on the Python function)."""
    from jax._src import compilation_cache as cache

    saved = {name: getattr(jax.config, name) for name in (
        "jax_compilation_cache_dir", "jax_persistent_cache_min_compile_time_secs",
        "jax_persistent_cache_min_entry_size_bytes")}
    jax.config.update("jax_compilation_cache_dir", str(tmp_path_factory.mktemp("jit_cache")))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    cache.reset_cache()  # picks up the directory even if an earlier test compiled
    yield
    for name, value in saved.items():
        jax.config.update(name, value)
    cache.reset_cache()


@pytest.fixture(scope="module")
def task():
    return build_task(_config(None).data)


def _data(config, task, mesh):
    return pipeline.place_data(config, task, mesh)


def _records(workdir, stage):
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [r for r in map(json.loads, f) if r["stage"] == stage]


def _close(a, b, what, atol=RTOL):
    """Every entry of pytree `a` equals `b`'s to RTOL, or to `atol` of the model's scale
    (its largest entry): BatchNorm biases start at zero and learn from nearly cancelling
    gradients."""
    scale = max(float(np.max(np.abs(y))) for y in jax.tree_util.tree_leaves(b))
    jax.tree_util.tree_map(
        lambda x, y: np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=RTOL,
                                                atol=atol * scale, err_msg=what), a, b)


def _same_records(swept, single, what, steps=5):
    assert len(swept) == len(single) == steps, what
    for a, b in zip(swept, single):
        assert set(a) == set(b), (what, set(a) ^ set(b))
        names = sorted(k for k in a if k not in ("stage", "grad_norm"))
        # Loss terms (kd, ce) are held to the precision of the loss they add up to.
        np.testing.assert_allclose([a[k] for k in names], [b[k] for k in names], rtol=RTOL,
                                   atol=RTOL * abs(b["loss"]), err_msg=f"{what}: {names}")
        np.testing.assert_allclose(a["grad_norm"], b["grad_norm"], rtol=GRAD_NORM_RTOL,
                                   err_msg=what)


#: The variants trained alone: (seed, stage, student method); the teachers are seed 0 and 1.
ALONE = (("teacher", 0, None), ("teacher", 1, None), ("student", 0, "kd"),
         ("student", 1, "kd"), ("student", 0, "cud"))


def _variant_config(seed, method="kd"):
    return _config(None, seed=seed, **{"student.method": method})


@pytest.fixture(scope="module")
def one_device():
    return make_mesh(jax.devices()[:1])


@pytest.fixture(scope="module")
def alone(task, one_device, tmp_path_factory):
    """`{(stage, seed, method): (Trained, workdir)}` of the runs alone, on one device."""
    tmp = str(tmp_path_factory.mktemp("alone"))
    data = _data(_config(None), task, one_device)
    out = {}
    for stage, seed, method in ALONE:
        config = _variant_config(seed, method or "kd")
        workdir = os.path.join(tmp, f"{stage}_{seed}_{method}")
        teacher = None if stage == "teacher" else out[("teacher", seed, None)][0]
        out[(stage, seed, method)] = (pipeline.run_training_stage(
            stage, config, workdir, data, one_device, teacher), workdir)
    return out


def _same_run(stage, alone_run, trained, records, what):
    """A run of a sweep (its `Trained` and metric records) equals the run alone."""
    single, workdir = alone_run
    _same_records(records, _records(workdir, stage), what)
    atol = VMAP_PARAM_ATOL if what.startswith("vmap") else RTOL
    _close(trained.params, single.params, what, atol)
    _close(trained.model_state, single.model_state, what, atol)


@pytest.fixture(scope="module")
def full_sweep(tmp_path_factory):
    """The whole sweep `seed=0,1` (kd students of each seed's dus teacher) through
    `pipeline.run` on all 8 emulated devices; returns `(workdir, reports)`."""
    workdir = str(tmp_path_factory.mktemp("full") / "sweep")
    config = _config("seed=0,1", **{"parallel.sweep_mode": "unroll"})
    assert jax.device_count() == 8
    return workdir, pipeline.run(config, workdir)


def test_sweep_on_8_devices_equals_runs_alone(full_sweep, alone, task, one_device):
    workdir, reports = full_sweep
    config = _config("seed=0,1")
    variants = sweep_pipeline.sweep_variants(config)
    assert [v.name for v in variants] == ["seed=0", "seed=1"] == list(reports)
    data = _data(config, task, one_device)
    runs = [v.config for v in variants]
    # Restored onto one device: a sweep's checkpoints load on any device count.
    teachers = sweep_pipeline.load_stacked_stage("teacher", config, runs, workdir, data,
                                                 one_device)
    students = sweep_pipeline.load_stacked_stage("student", config, runs, workdir, data,
                                                 one_device)
    for i, variant in enumerate(variants):
        folder = os.path.join(workdir, "runs", variant.name)
        for output in ("config.json", "versions.json", "metrics.jsonl", "report.json",
                       "report.md"):
            assert os.path.isfile(os.path.join(folder, output)), (variant.name, output)
        _same_run("teacher", alone[("teacher", i, None)], teachers.run(i),
                  _records(folder, "teacher"), f"teacher {variant.name}")
        _same_run("student", alone[("student", i, "kd")], students.run(i),
                  _records(folder, "student"), f"student {variant.name}")
        with open(os.path.join(folder, "config.json")) as f:
            assert json.load(f)["seed"] == i
        assert reports[variant.name]["models"]["student"]["step"] == 5
    assert reports["seed=0"]["models"]["student"]["clean"] != (
        reports["seed=1"]["models"]["student"]["clean"])
    with open(os.path.join(workdir, "compare.md")) as f:
        table = f.read()
    assert "2 runs" in table and "| kd student (dus teacher) | 2 |" in table


@pytest.mark.parametrize("mode", ["vmap", "unroll"])
def test_stage_sweeps_equal_runs_alone(mode, alone, task, one_device, tmp_path):
    """A student sweep of methods (one shared teacher) in both modes, and in `vmap` mode a
    teacher sweep of seeds too (`unroll`'s seed sweep is the whole sweep above)."""
    data = _data(_config(None), task, one_device)
    if mode == "vmap":
        config = _config("seed=0,1", **{"parallel.sweep_mode": mode})
        variants = sweep_pipeline.sweep_variants(config)
        dirs = [[str(tmp_path / "t" / v.name)] for v in variants]
        teachers = sweep_pipeline.train_stacked_stage(
            "teacher", config, [v.config for v in variants], str(tmp_path / "t"), data,
            one_device, dirs)
        for i in range(2):
            _same_run("teacher", alone[("teacher", i, None)], teachers.run(i),
                      _records(dirs[i][0], "teacher"), f"{mode} teacher seed={i}")
    config = _config("student.method=kd,cud", **{"parallel.sweep_mode": mode})
    variants = sweep_pipeline.sweep_variants(config)
    assert [v.name for v in variants] == ["method=kd", "method=cud"]
    teacher = sweep_pipeline.student_teachers(variants, [0, 0], [alone[("teacher", 0, None)][0]],
                                              data, one_device, None)
    dirs = [[str(tmp_path / "s" / v.name)] for v in variants]
    students = sweep_pipeline.train_stacked_stage(
        "student", config, [v.config for v in variants], str(tmp_path / "s"), data, one_device,
        dirs, teacher)
    for i, method in enumerate(("kd", "cud")):
        _same_run("student", alone[("student", 0, method)], students.run(i),
                  _records(dirs[i][0], "student"), f"{mode} student {method}")


def test_runs_layout_equals_batch_layout(task, tmp_path):
    """A vmapped teacher sweep of 4 seeds on 4 devices: placed run by run (`runs`: each
    run's state and whole batch on one device) it trains what the `batch` layout (each run's
    batch split over the 4 devices) trains, loss by loss and parameter by parameter, and its
    stacked state really is split along the run axis."""
    mesh = make_mesh(jax.devices()[:4])
    trained = {}
    for layout in ("batch", "runs"):
        config = _config("seed=0,1,2,3", **{"parallel.sweep_mode": "vmap",
                                            "parallel.sweep_layout": layout})
        variants = sweep_pipeline.sweep_variants(config)
        dirs = [[str(tmp_path / layout / v.name)] for v in variants]
        stacked = sweep_pipeline.train_stacked_stage(
            "teacher", config, [v.config for v in variants], str(tmp_path / layout),
            _data(config, task, mesh), mesh, dirs)
        trained[layout] = stacked, [_records(d[0], "teacher") for d in dirs]
    (batch, batch_records), (runs, runs_records) = trained["batch"], trained["runs"]
    kernel = jax.tree_util.tree_leaves(runs.params)[-1]
    assert kernel.sharding.spec == P("data") and kernel.shape[0] == 4
    assert {s.data.shape[0] for s in kernel.addressable_shards} == {1}  # one run per device
    assert jax.tree_util.tree_leaves(batch.params)[-1].sharding.spec == P()
    for i in range(4):
        what = f"runs vs batch layout, seed={i}"
        _same_records(runs_records[i], batch_records[i], what)
        _close(runs.run(i).params, batch.run(i).params, what, VMAP_PARAM_ATOL)
        _close(runs.run(i).model_state, batch.run(i).model_state, what, VMAP_PARAM_ATOL)


def test_sweep_layout_resolution():
    """`auto` places runs on devices only where `runs` can run and there is more than one
    device; `runs` makes `auto` mode vmap."""
    resolve = sweep_lib.resolve_layout
    assert resolve("auto", "vmap", 8, 8) == ("vmap", "runs")
    assert resolve("auto", "vmap", 16, 8) == ("vmap", "runs")
    assert resolve("auto", "vmap", 4, 8) == ("vmap", "batch")
    assert resolve("auto", "vmap", 12, 8) == ("vmap", "batch")
    assert resolve("auto", "vmap", 8, 1) == ("vmap", "batch")
    assert resolve("auto", "vmap", 8, 8, param_sharding="fsdp") == ("vmap", "batch")
    assert resolve("auto", "auto", 8, 8, backend="cpu") == ("unroll", "batch")
    assert resolve("auto", "auto", 8, 8, backend="gpu") == ("vmap", "runs")
    assert resolve("runs", "auto", 8, 8, backend="cpu") == ("vmap", "runs")
    assert resolve("batch", "vmap", 8, 8) == ("vmap", "batch")
    with pytest.raises(ValueError, match="sweep_mode=vmap"):
        resolve("runs", "unroll", 8, 8)
    with pytest.raises(ValueError, match="6 runs do not divide over 4 devices"):
        resolve("runs", "vmap", 6, 4)


@pytest.mark.parametrize("sweep,fields,message", [
    ("seed=0,1", {"sweep_layout": "rows"},
     "parallel.sweep_layout='rows': not one of auto, batch, runs"),
    ("seed=0,1", {"sweep_layout": "runs", "sweep_mode": "unroll"},
     "sweep_layout='runs': places the run axis .* set parallel.sweep_mode=vmap"),
    ("seed=0,1", {"sweep_layout": "runs", "param_sharding": "fsdp"},
     "set parallel.param_sharding=replicated or parallel.sweep_layout=batch"),
    ("seed=0,1", {"sweep_layout": "runs"},
     "the sweep's 2 teachers do not divide over the 8 devices; sweep a multiple of 8"),
    ("seed=0,1;student.eta=0.1,0.2,0.3,0.4", {"sweep_layout": "runs"},
     "sweep's 2 teachers do not divide"),
])
def test_bad_sweep_layouts_fail_before_work_as_one_line(sweep, fields, message):
    config = _config(sweep, **{f"parallel.{k}": v for k, v in fields.items()})
    with pytest.raises(ConfigError, match=message) as err:
        check_config(config, num_devices=8)
    assert "\n" not in str(err.value)


def test_runs_layout_of_a_multiple_of_the_devices_passes_the_check():
    check_config(_config("seed=0,1,2,3,4,5,6,7", **{"parallel.sweep_layout": "runs"}),
                 num_devices=8)
    check_config(_config("seed=0,1", **{"parallel.sweep_layout": "runs"}), num_devices=1)
    # Only the stages that train count: 4 teachers (and no students) on 4 devices.
    check_config(_config("seed=0,1,2,3", stage="teacher", **{"parallel.sweep_layout": "runs"}),
                 num_devices=4)


def test_killed_sweep_resumes_to_the_same_reports(full_sweep, tmp_path):
    """The sweep's workdir as a kill -9 after the student checkpoint of step 3 leaves it
    (the step-5 checkpoint, the reports and compare.md not yet written); the same command
    again resumes from step 3 and writes the same reports."""
    import shutil

    workdir = str(tmp_path / "killed")
    full_dir, full_reports = full_sweep
    shutil.copytree(full_dir, workdir)
    shutil.rmtree(os.path.join(workdir, "checkpoints", "student", "5"))
    os.remove(os.path.join(workdir, "compare.md"))
    for name in ("seed=0", "seed=1"):
        os.remove(os.path.join(workdir, "runs", name, "report.json"))
        os.remove(os.path.join(workdir, "runs", name, "report.md"))
    config = _config("seed=0,1", **{"parallel.sweep_mode": "unroll"})
    reports = pipeline.run(config, workdir)  # the same run again, on 8 devices
    for name in ("seed=0", "seed=1"):
        full = full_reports[name]
        for model in ("teacher", "student"):
            assert reports[name]["models"][model]["step"] == 5
            np.testing.assert_allclose(
                [reports[name]["models"][model]["clean"][k] for k in ("nll", "brier", "ece")],
                [full["models"][model]["clean"][k] for k in ("nll", "brier", "ece")],
                rtol=1e-6, err_msg=f"{name} {model}")
        records = _records(os.path.join(workdir, "runs", name), "student")
        # The log holds steps 1-5 of the first run, then 4-5 of the resumed one.
        assert [r["step"] for r in records] == [1, 2, 3, 4, 5, 4, 5]
        np.testing.assert_allclose([r["loss"] for r in records[5:]],
                                   [r["loss"] for r in records[3:5]], rtol=1e-6)
    assert os.path.isfile(os.path.join(workdir, "compare.md"))


def test_variants_differ_where_they_should_and_nowhere_else(task, one_device):
    config = _config("seed=0,1;student.method=kd,cud")
    variants = sweep_pipeline.sweep_variants(config)
    assert [v.name for v in variants] == ["seed=0,method=kd", "seed=0,method=cud",
                                          "seed=1,method=kd", "seed=1,method=cud"]
    data = _data(config, task, one_device)
    _, _, state, _, _ = sweep_pipeline.stacked_init("student", [v.config for v in variants],
                                                    data, "auto")
    kernels = np.asarray(jax.tree_util.tree_leaves(state.params)[-1])
    # Variants 0, 1 have seed 0, variants 2, 3 seed 1: the method does not change the
    # initialisation, the seed does.
    np.testing.assert_array_equal(kernels[0], kernels[1])
    np.testing.assert_array_equal(kernels[2], kernels[3])
    assert np.abs(kernels[0] - kernels[2]).max() > 1e-3
    order = sweep_lib.stacked_epoch_order([0, 0, 1], 48, one_device)
    perms = np.asarray(order(0)[0])
    np.testing.assert_array_equal(perms[0], perms[1])
    assert (perms[0] != perms[2]).any()
    assert (np.asarray(order(1)[0])[0] != perms[0]).any()  # a new order every epoch
    keys = np.asarray(sweep_lib.stacked_keys([0, 1]))
    np.testing.assert_array_equal(keys[0], np.asarray(jax.random.PRNGKey(0)))
    assert (keys[0] != keys[1]).any()
    # Teachers: one per seed (method shares it), each variant pointing at its seed's.
    configs, index = sweep_pipeline.teachers_of(variants)
    assert [c.seed for c in configs] == [0, 1] and index == [0, 0, 1, 1]
    assert sweep_lib.resolve_mode("auto", "cpu") == "unroll"
    assert sweep_lib.resolve_mode("auto", "gpu") == "vmap"


@pytest.mark.parametrize("sweep,message", [
    ("student.model=resnet8,resnet14", "'student.model' cannot vary.*sweepable fields: seed"),
    ("student.batch_size=32,64", "batch_size' cannot vary"),
    ("seed=0,1;seed=2", "listed twice"),
    ("student.nope=1,2", "unknown config field 'student.nope'; sweepable fields"),
    ("seed", "not of the form"),
    ("student.eta=a,b", "is not a float"),
    ("student.method=kd,nope", "student.method='nope': not one of"),
    ("student.eta=0.5,-1", "student.eta=-1.0: must be >= 0"),
])
def test_bad_sweeps_fail_before_work_as_one_line(sweep, message):
    with pytest.raises(ConfigError, match=message) as err:
        check_config(_config(sweep), num_devices=1)
    assert "\n" not in str(err.value)
    with pytest.raises(ConfigError, match="placement=replicated"):
        check_config(_config("seed=0,1", **{"data.placement": "sharded"}), num_devices=1)
    with pytest.raises(ConfigError, match="parallel.sweep_mode='pmap'"):
        check_config(_config("seed=0,1", **{"parallel.sweep_mode": "pmap"}), num_devices=1)


def test_command_line_bad_sweep_is_one_line(tmp_path):
    result = run_main("configs/quickstart.py", str(tmp_path / "w"),
                      "--config.sweep=student.model=resnet8,resnet14", devices=1, timeout=120)
    assert result.returncode == 2, result.stderr[-2000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: invalid config: sweep:"), lines
    assert not os.path.exists(tmp_path / "w")  # failed before the workdir was written
