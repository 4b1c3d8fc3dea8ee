"""The command line end to end on the embedded synthetic data (tiny), then the stages alone."""

import json
import os

import pytest

from _cli import run_main
from cud_jax import pipeline
from cud_jax.train import checkpoints

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ["--config.data.train_subset=256", "--config.data.test_subset=96",
        "--config.data.val_size=64", "--config.teacher.epochs=1", "--config.student.epochs=1",
        "--config.eval.batch_size=64", "--config.log_every=2",
        # two of the quickstart's corruptions at one severity: every part of the shift report,
        # a third of the programs to compile (the corruptions themselves: test_corruptions)
        "--config.eval.corruptions=gaussian_noise,contrast", "--config.eval.severities=3"]


def _load_quickstart():
    import importlib.util

    spec = importlib.util.spec_from_file_location("quickstart",
                                                  os.path.join(REPO, "configs/quickstart.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = module.get_config()
    for flag in TINY:
        key, value = flag[len("--config."):].split("=")
        node = config
        *parents, leaf = key.split(".")
        for parent in parents:
            node = node[parent]
        node[leaf] = type(node[leaf])(value) if node[leaf] is not None else int(value)
    return config


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("run"))
    result = run_main("configs/quickstart.py", workdir, *TINY, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "[teacher] step 4/4" in result.stdout and "[student] step 4/4" in result.stdout
    return workdir


def test_cli_runs_every_stage_and_writes_the_outputs(workdir):
    for name in ("config.json", "versions.json", "metrics.jsonl", "report.json", "report.md"):
        assert os.path.isfile(os.path.join(workdir, name)), name
    with open(os.path.join(workdir, "report.json")) as f:
        report = json.load(f)
    assert set(report["models"]) == {"teacher", "student"}
    student = report["models"]["student"]
    assert 0.0 <= student["clean"]["accuracy"] <= 1.0 and student["temperature_scaled"][
        "temperature"] > 0
    assert report["dataset"]["test_size"] == 96
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        records = [json.loads(line) for line in f]
    assert {"kd", "ce", "wclip_fire_rate", "teacher_entropy"} <= set(
        next(r for r in records if r["stage"] == "student"))


def test_eval_stage_alone_restores_both_models(workdir):
    config = _load_quickstart()
    os.remove(os.path.join(workdir, "report.json"))
    config.stage = "eval"
    report = pipeline.run(config, workdir)
    assert set(report["models"]) == {"teacher", "student"}
    assert report["models"]["teacher"]["step"] == 4


def test_rerun_with_another_config_is_refused(workdir):
    config = _load_quickstart()
    config.student.method = "kd"
    with pytest.raises(checkpoints.ConfigMismatchError, match="student.method"):
        pipeline.run(config, workdir)


def test_student_stage_without_a_teacher_says_how_to_get_one(tmp_path):
    config = _load_quickstart()
    config.stage = "student"
    with pytest.raises(FileNotFoundError, match="stage=teacher"):
        pipeline.run(config, str(tmp_path))


def test_eval_stage_on_checkpoints_given_by_path(workdir, tmp_path):
    config = _load_quickstart()
    config.stage = "eval"
    config.teacher.checkpoint = os.path.join(workdir, "checkpoints", "teacher")
    config.student.checkpoint = os.path.join(workdir, "checkpoints", "student")
    config.eval.corruptions = ""
    report = pipeline.run(config, str(tmp_path / "elsewhere"))
    with open(os.path.join(workdir, "report.json")) as f:
        original = json.load(f)
    for name in ("teacher", "student"):
        assert report["models"][name]["clean"]["accuracy"] == pytest.approx(
            original["models"][name]["clean"]["accuracy"])


def test_rerun_of_a_finished_run_reads_its_report_back(workdir, capsys):
    config = _load_quickstart()
    config.stage = "eval"
    config.eval.corruptions = ""  # an evaluation setting: this first call re-evaluates
    first = pipeline.run(config, workdir)
    path = os.path.join(workdir, "report.json")
    written = os.path.getmtime(path)
    capsys.readouterr()
    again = pipeline.run(config, workdir)
    assert "up to date" in capsys.readouterr().out
    assert os.path.getmtime(path) == written
    assert again["models"]["student"]["clean"] == first["models"]["student"]["clean"]
    config.eval.num_bins = 10  # another evaluation setting: evaluated anew
    assert pipeline.run(config, workdir)["eval_config"]["num_bins"] == 10
    assert os.path.getmtime(path) > written
