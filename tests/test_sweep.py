"""Sweeps: a variant trained inside a sweep equals the same config trained alone.

Tiny synthetic data and resnet8 models, a few steps across an epoch boundary; each sweep is
compared, loss by loss, parameter by parameter and report number by report number, with the
ordinary single-run path (`pipeline.run_training_stage` + `report.evaluate_run`).
"""

import importlib.util
import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from cud_jax import pipeline, sweep_pipeline
from cud_jax.evaluate import report
from cud_jax.parallel.sharding import make_mesh
from cud_jax.train import sweep as sweep_lib
from cud_jax.train.tasks import build_task

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RTOL = 1e-5
GRAD_NORM_RTOL = 1e-2


def _config(sweep, **fields):
    spec = importlib.util.spec_from_file_location("quickstart",
                                                  os.path.join(REPO, "configs/quickstart.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    c = module.get_config()
    c.data.source_kwargs = dict(num_classes=10, num_superclasses=5, train_per_class=20,
                                test_per_class=8, image_size=16)
    c.data.val_size = 40
    c.data.train_subset = 128
    # Without augmentation: XLA fuses the crop into the single-run step's first convolution
    # and sums BatchNorm's (cancelling) gradients in another order than the vmapped step, a
    # float32 difference of ~1e-4 in the first layers' gradients (both programs agree with
    # op-by-op evaluation to that order; the vmapped one closer). Augmentation keys are
    # checked on their own below.
    c.data.augment = False
    for stage in (c.teacher, c.student):
        stage.model = "resnet8"
        stage.batch_size = 32
        stage.epochs = 1.5  # 4 steps per epoch: 6 steps, across an epoch boundary
        # A small learning rate: float32 summation-order differences between two programs
        # grow step by step through BatchNorm on these tiny batches; at 0.05 they reach 5e-5
        # in the loss after 6 steps, at 0.01 they stay well under 1e-5.
        stage.lr = 0.01
    c.student.dkd_warmup_epochs = 2.0
    c.log_every = 1
    c.checkpoint.every_steps = 4
    c.eval.corruptions = ""
    c.eval.ood_sets = ""
    c.eval.plots = False
    c.eval.batch_size = 40
    c.sweep = sweep
    for field, value in fields.items():
        node = c
        *parents, leaf = field.split(".")
        for parent in parents:
            node = node[parent]
        node[leaf] = value
    return c


def _records(workdir, stage):
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [r for r in map(json.loads, f) if r["stage"] == stage]


def _close(a, b, what):
    """Every entry of the pytree `a` equals `b`'s to RTOL of the model's scale (its largest
    entry). BatchNorm biases start at zero and learn from gradients that nearly cancel, so
    their float32 summation order (vmapped vs single program) leaves ~1e-7 differences
    that are large relative to their own ~1e-3 values but not to the model's weights."""
    scale = max(float(np.max(np.abs(y))) for y in jax.tree_util.tree_leaves(b))
    jax.tree_util.tree_map(
        lambda x, y: np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=RTOL,
                                                atol=RTOL * scale, err_msg=what), a, b)


def _run_sweep(config, workdir, mesh):
    os.makedirs(workdir, exist_ok=True)
    pipeline.write_run_info(config, workdir, mesh)
    task = build_task(config.data)
    return sweep_pipeline.run_sweep(config, workdir, task, mesh), task


def _alone(variant, workdir, task, mesh, teachers):
    """The variant trained and evaluated as a single run; returns (student, report, folder
    of its teacher's metrics or None). Teachers of equal config are trained once."""
    config = variant.config
    teacher = teacher_dir = None
    if config.student.method != "ce":
        key = sweep_pipeline._teacher_key(variant)
        if key not in teachers:
            directory = os.path.join(os.path.dirname(workdir), f"teacher{len(teachers)}")
            teachers[key] = (pipeline.run_training_stage("teacher", config, directory, task,
                                                         mesh), directory)
        teacher, teacher_dir = teachers[key]
    student = pipeline.run_training_stage("student", config, workdir, task, mesh, teacher)
    rep = report.evaluate_run(config, workdir, task, mesh, teacher=teacher, student=student)
    return student, rep, teacher_dir


def _same_records(swept, single, what):
    assert len(swept) == len(single) == 6, what
    for a, b in zip(swept, single):
        assert set(a) == set(b), (what, set(a) ^ set(b))
        names = sorted(k for k in a if k not in ("stage", "grad_norm"))
        # Loss terms (kd, ce) are held to the precision of the loss they add up to.
        np.testing.assert_allclose([a[k] for k in names], [b[k] for k in names], rtol=RTOL,
                                   atol=RTOL * abs(b["loss"]), err_msg=f"{what}: {names}")
        # The gradient norm sums BatchNorm gradients that nearly cancel: float32 summation
        # order (vmapped vs single program) shows at ~1e-4 there and nowhere else.
        np.testing.assert_allclose(a["grad_norm"], b["grad_norm"], rtol=GRAD_NORM_RTOL,
                                   err_msg=what)


#: Report metrics that are smooth functions of the logits; the others count examples on
#: either side of a threshold (accuracy, ECE bins, AUROC ranks), where a near tie between
#: two logits may move one example.
SMOOTH = ("nll", "brier")


def _same_reports(swept, single, what):
    """Smooth clean metrics to RTOL, the counting ones to two examples' share, the
    temperature-scaled ones to 1e-3 (the temperature is the root of the validation NLL's
    derivative, flat on 40 validation examples, so ~1e-6 in the logits moves it ~1e-4)."""
    assert set(swept["models"]) == set(single["models"]), what
    one_example = 1.0 / swept["dataset"]["test_size"]
    for name, entry in single["models"].items():
        mine = swept["models"][name]
        for metric, value in entry["clean"].items():
            if isinstance(value, float):
                smooth = metric in SMOOTH
                np.testing.assert_allclose(mine["clean"][metric], value,
                                           rtol=RTOL if smooth else 0,
                                           atol=0 if smooth else 2 * one_example,
                                           err_msg=f"{what} {name} {metric}")
        for metric in SMOOTH + ("temperature",):
            np.testing.assert_allclose(mine["temperature_scaled"][metric],
                                       entry["temperature_scaled"][metric], rtol=1e-3,
                                       err_msg=f"{what} {name} TS {metric}")


def _check_equivalence(sweep, tmp_path, mesh, **fields):
    config = _config(sweep, **fields)
    variants = sweep_pipeline.sweep_variants(config)
    reports, task = _run_sweep(config, str(tmp_path / "sweep"), mesh)
    students = sweep_pipeline.load_stacked_stage(
        "student", config, [v.config for v in variants], str(tmp_path / "sweep"), task, mesh)
    teachers = {}
    for i, variant in enumerate(variants):
        alone_dir = str(tmp_path / "alone" / variant.name)
        student, rep, teacher_dir = _alone(variant, alone_dir, task, mesh, teachers)
        swept_dir = str(tmp_path / "sweep" / "runs" / variant.name)
        _same_records(_records(swept_dir, "student"), _records(alone_dir, "student"),
                      f"{variant.name} student")
        if teacher_dir is None:
            assert _records(swept_dir, "teacher") == [], "a ce student has no teacher"
        else:
            _same_records(_records(swept_dir, "teacher"), _records(teacher_dir, "teacher"),
                          f"{variant.name} teacher")
        _close(students.run(i).params, student.params, variant.name)
        _close(students.run(i).model_state, student.model_state, variant.name)
        _same_reports(reports[variant.name], rep, variant.name)
        assert os.path.isfile(os.path.join(swept_dir, "report.md"))
    with open(tmp_path / "sweep" / "compare.md") as f:
        table = f.read()
    assert f"{len(variants)} runs" in table
    return variants


def test_student_sweep_of_seeds_and_methods_equals_runs_alone(tmp_path):
    # Seeds give two teachers (stacked, each gathered for its two students); methods select
    # between the kd and cud objectives per variant. Two runs per pass: the step is mapped
    # (lax.map) over chunks of two vmapped runs.
    variants = _check_equivalence("seed=0,1;student.method=kd,cud", tmp_path,
                                  make_mesh(jax.devices()[:1]),
                                  **{"parallel.sweep_runs_per_pass": 2})
    assert [v.name for v in variants] == ["seed=0,method=kd", "seed=0,method=cud",
                                          "seed=1,method=kd", "seed=1,method=cud"]


def test_teacher_sweep_equals_runs_alone(tmp_path):
    _check_equivalence("teacher.loss=ce,dus", tmp_path, make_mesh(jax.devices()[:1]))


def test_shared_teacher_sweep_of_methods_and_settings_equals_runs_alone(tmp_path):
    # One teacher serves every variant (not stacked); a ce student beside distilled ones.
    _check_equivalence("student.method=ce,dkd;student.temperature=2.0,4.0", tmp_path,
                       make_mesh(jax.devices()[:1]))


def test_variants_differ_where_they_should_and_nowhere_else():
    config = _config("seed=0,1;student.method=kd,cud")
    variants = sweep_pipeline.sweep_variants(config)
    task = build_task(config.data)
    _, _, state, _, _ = sweep_pipeline._stacked_init("student", [v.config for v in variants],
                                                     task)
    kernels = np.asarray(jax.tree_util.tree_leaves(state.params)[-1])
    # Variants 0, 1 have seed 0, variants 2, 3 seed 1: the method does not change the
    # initialisation, the seed does.
    np.testing.assert_array_equal(kernels[0], kernels[1])
    np.testing.assert_array_equal(kernels[2], kernels[3])
    assert np.abs(kernels[0] - kernels[2]).max() > 1e-3
    order = sweep_lib.stacked_epoch_order([0, 0, 1], 128, make_mesh(jax.devices()[:1]))
    perms = np.asarray(order(0)[0])
    np.testing.assert_array_equal(perms[0], perms[1])
    assert (perms[0] != perms[2]).any()
    assert (np.asarray(order(1)[0])[0] != perms[0]).any()  # a new order every epoch
    keys = np.asarray(sweep_lib.stacked_keys([0, 1]))
    np.testing.assert_array_equal(keys[0], np.asarray(jax.random.PRNGKey(0)))
    assert (keys[0] != keys[1]).any()


def test_augmentation_keys_are_each_variants_own(tmp_path):
    # With augmentation on, each variant's first batch equals its run alone's: the loss of
    # step 1 (before any float drift between the two programs) for two seeds.
    config = _config("seed=0,1", **{"data.augment": True, "student.epochs": 0.25,
                                    "student.method": "ce"})
    mesh = make_mesh(jax.devices()[:1])
    task = build_task(config.data)
    variants = sweep_pipeline.sweep_variants(config)
    _run_sweep(config, str(tmp_path / "sweep"), mesh)
    first = []
    for variant in variants:
        alone_dir = str(tmp_path / "alone" / variant.name)
        pipeline.run_training_stage("student", variant.config, alone_dir, task, mesh)
        swept = _records(str(tmp_path / "sweep" / "runs" / variant.name), "student")[0]
        single = _records(alone_dir, "student")[0]
        np.testing.assert_allclose(swept["loss"], single["loss"], rtol=RTOL)
        first.append(single["loss"])
    assert first[0] != first[1]


def test_sweep_flags_fail_with_one_line_naming_the_field():
    for sweep, message in (("student.model=resnet8,resnet14", "student.model.*cannot vary"),
                           ("student.batch_size=32,64", "batch_size.*cannot vary"),
                           ("seed=0,1;seed=2", "listed twice"),
                           ("student.nope=1,2", "unknown config field 'student.nope'"),
                           ("seed", "not of the form"),
                           ("student.eta=a,b", "not a float")):
        with pytest.raises(ValueError, match=message) as err:
            sweep_pipeline.sweep_variants(_config(sweep))
        assert "\n" not in str(err.value)
    with pytest.raises(ValueError, match="placement=replicated"):
        sweep_pipeline.sweep_variants(_config("seed=0,1", **{"data.placement": "sharded"}))


def test_killed_sweep_resumes_to_the_same_reports(tmp_path, monkeypatch):
    mesh = make_mesh(jax.devices()[:1])
    config = _config("teacher.loss=ce,dus")
    full, _ = _run_sweep(config, str(tmp_path / "full"), mesh)

    real_builder = sweep_lib.make_sweep_step

    def dying_builder(*args, **kwargs):
        step, calls = real_builder(*args, **kwargs), []

        def dying_step(*step_args, **step_kwargs):
            # Killed in the student stage during step 6, after the checkpoint at step 4.
            if kwargs.get("teacher") is not None and len(calls) == 5:
                raise KeyboardInterrupt
            calls.append(1)
            return step(*step_args, **step_kwargs)

        return dying_step

    monkeypatch.setattr(sweep_lib, "make_sweep_step", dying_builder)
    with pytest.raises(KeyboardInterrupt):
        _run_sweep(config, str(tmp_path / "killed"), mesh)
    monkeypatch.undo()
    resumed, _ = _run_sweep(config, str(tmp_path / "killed"), mesh)  # the same command again
    assert set(resumed) == set(full) == {"loss=ce", "loss=dus"}
    for name in full:
        for model in ("teacher", "student"):
            _close(resumed[name]["models"][model]["clean"], full[name]["models"][model]["clean"],
                   f"{name} {model}")
        killed = _records(str(tmp_path / "killed" / "runs" / name), "student")
        reference = _records(str(tmp_path / "full" / "runs" / name), "student")
        # The log holds steps 1-5 of the killed run, then 5-6 of the resumed one.
        assert [r["step"] for r in killed] == [1, 2, 3, 4, 5, 5, 6]
        np.testing.assert_allclose([r["loss"] for r in killed[5:]],
                                   [r["loss"] for r in reference[4:]], rtol=1e-6)


def test_command_line_sweep_writes_each_run_and_the_comparison(tmp_path):
    workdir = str(tmp_path / "cli")
    flags = ["--config.sweep=seed=0,1;student.method=ce", "--config.data.train_subset=128",
             "--config.data.val_size=64", "--config.data.test_subset=64",
             "--config.student.epochs=1", "--config.student.model=resnet8",
             "--config.eval.corruptions=", "--config.eval.ood_sets=", "--config.eval.plots=False",
             "--config.log_every=2"]
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2")
    result = subprocess.run([sys.executable, "-m", "cud_jax.main", "--config=configs/quickstart.py",
                             f"--workdir={workdir}", *flags], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    for name in ("seed=0,method=ce", "seed=1,method=ce"):
        for output in ("config.json", "metrics.jsonl", "report.json", "report.md"):
            assert os.path.isfile(os.path.join(workdir, "runs", name, output)), (name, output)
    with open(os.path.join(workdir, "compare.md")) as f:
        assert "| ce student (no teacher) | 2 |" in f.read()
    assert "compare.md" in result.stdout
