"""Tests for benchmarks/evidence_grid.py: the issue-13 grid's cells and its tables.

No training: the grid is enumerated, and the tables are written from fabricated finished runs
(report.json + test_predictions.npz) whose paired differences are known.
"""

import argparse
import importlib.util
import json
import pathlib
import sys

import numpy as np
import pytest

BENCHMARKS = pathlib.Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture(scope="module")
def grid():
    sys.path.insert(0, str(BENCHMARKS))
    spec = importlib.util.spec_from_file_location("evidence_grid", BENCHMARKS / "evidence_grid.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["evidence_grid"] = module  # dataclasses look their module up while defined
    spec.loader.exec_module(module)
    return module


def _args(grid, tmp_path, **changes):
    args = argparse.Namespace(
        datasets=",".join(grid.DATASETS), students=",".join(grid.STUDENTS),
        methods=",".join(m.key for m in grid.METHODS), seeds="0,1,2", teacher_seeds="per_seed",
        data_root=str(tmp_path / "data"), train_subset=0, test_subset=0, max_length=0,
        teacher_epochs=0, student_epochs=0, workroot=str(tmp_path / "runs"), resamples=200,
        setup_note="test", report_only=True, time_budget_min=0)
    for key, value in changes.items():
        setattr(args, key, value)
    return args


def test_full_grid_cells(grid, tmp_path):
    teachers, students = grid.build_grid(_args(grid, tmp_path))
    assert len(students) == 4 * 3 * 11 * 3  # data sets x students x methods x seeds
    assert len(teachers) == 4 * 4 * 3  # data sets x teacher losses x seeds
    shared = grid.build_grid(_args(grid, tmp_path, teacher_seeds="one"))[0]
    assert len(shared) == 4 * 4
    teacher_dirs = {t.workdir for t in teachers}
    for cell in students:
        if cell.method.teacher is None:
            assert cell.teacher_dir is None and "teacher.checkpoint" not in cell.overrides
        else:
            assert cell.teacher_dir in teacher_dirs
            assert cell.overrides["teacher.checkpoint"].startswith(cell.teacher_dir)
            assert f"teacher_{cell.method.teacher}_s{cell.seed}" in cell.teacher_dir
        assert (BENCHMARKS.parent / "configs" / f"{cell.dataset}.py").is_file()
    scaled = [c for c in students if c.method.key == "kd_ts"]
    assert len(scaled) == 4 * 3 * 3  # data sets x students x seeds
    for cell in scaled:  # the CE teacher's own run, distilled with its fitted temperature
        assert cell.overrides["teacher.calibration"] == "temperature"
        assert f"teacher_ce_s{cell.seed}" in cell.teacher_dir
    assert all("teacher.calibration" not in c.overrides for c in students if c not in scaled)


def test_cell_config_is_what_the_command_line_builds(grid, tmp_path):
    _, students = grid.build_grid(_args(grid, tmp_path, datasets="clinc150", students="minilm3",
                                        seeds="1", student_epochs=0.5))
    cud = next(c for c in students if c.method.key == "wclip_ce")
    argv = cud.argv()
    assert argv[1:4] == ["-m", "cud_jax.main", "--config=configs/clinc150.py:offline=1,"
                         "student=minilm3,method=cud,teacher_loss=ce"]
    assert "--config.student.epochs=0.5" in argv and "--config.seed=1" in argv
    config = grid._cell_config(cud)
    assert (config.student.method, config.teacher.loss, config.seed) == ("cud", "ce", 1)
    assert config.student.epochs == 0.5 and config.teacher.checkpoint.endswith(
        "teacher_ce_s1/checkpoints/teacher")
    dkd = grid._cell_config(next(c for c in students if c.method.key == "dkd"))
    assert dkd.student.dkd_warmup_epochs == pytest.approx(0.5 / 12)  # not CIFAR's 20 epochs


def _fake_run(cell, probs, labels, teacher_acc=0.9):
    folder = pathlib.Path(cell.workdir)
    folder.mkdir(parents=True)
    acc = float(np.mean(probs.argmax(-1) == labels))
    clean = {"accuracy": acc, "nll": 0.5, "brier": 0.2, "ece": 0.05, "adaptive_ece": 0.04}
    report = {"models": {"student": {"clean": clean, "temperature_scaled": {**clean, "ece": 0.02}},
                         "teacher": {"clean": {"accuracy": teacher_acc},
                                     "wclip_fire_rate_test": 0.05}}}
    (folder / "report.json").write_text(json.dumps(report))
    np.savez(folder / "test_predictions.npz", logits=np.log(probs), labels=labels)


def test_tables_and_paired_intervals_from_finished_runs(grid, tmp_path, monkeypatch):
    written = {}
    monkeypatch.setattr(grid, "write_results", lambda name, md, payload: written.update(
        name=name, md=md, payload=payload))
    args = _args(grid, tmp_path, datasets="banking77", students="minilm3",
                 methods="ce,kd_ce,kd_dus,cud", seeds="0,1")
    teachers, students = grid.build_grid(args)
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 4, size=400)
    good = np.full((400, 4), 0.1)
    good[np.arange(400), labels] = 0.7
    wrong = np.roll(good, 1, axis=1)
    status = {t.workdir: "done" for t in teachers}
    for cell in students:
        # CUD right everywhere; KD (CE teacher) right on the first 300; the others on 200.
        right = {"cud": 400, "kd_ce": 300}.get(cell.method.key, 200)
        probs = np.concatenate([good[:right], wrong[right:]])
        _fake_run(cell, probs, labels)
        status[cell.workdir] = "done"
    grid.summarise(args, teachers, students, status, 1.0, "x", "t")
    md, payload = written["md"], written["payload"]
    assert "| CUD (DUS teacher + W-Clip) | 2/2 | 100.00 ± 0.00 |" in md
    (block,) = payload["blocks"]
    by_title = {p["title"]: p for p in block["paired"]}
    vs_kd = by_title["CUD - KD (CE teacher)"]["results"]["accuracy"]["pooled"]
    assert vs_kd["difference"] == pytest.approx(0.25) and vs_kd["excludes_zero"]
    best = by_title["CUD - best baseline"]
    assert best["reference"] == "kd_ce" and best["seeds"] == [0, 1]
    assert by_title["CUD - KD (DUS teacher): what W-Clip adds"]["results"]["accuracy"][
        "pooled"]["difference"] == pytest.approx(0.5)
    assert "None: every cell finished." in md


def test_missing_cells_are_listed_with_the_reason(grid, tmp_path, monkeypatch):
    written = {}
    monkeypatch.setattr(grid, "write_results", lambda name, md, payload: written.update(md=md))
    args = _args(grid, tmp_path, datasets="trec", students="minilm3", methods="kd_ts,cud",
                 seeds="0")
    teachers, students = grid.build_grid(args)
    status = grid.run_grid(args, teachers, students)  # report_only: runs nothing
    assert all(status[s.workdir].startswith("missing: its teacher is missing") for s in students)
    grid.summarise(args, teachers, students, status, 1.0, "x", "t")
    assert "trec/teacher_dus_s0`: missing: not run yet" in written["md"]
    assert [t.workdir.rsplit("/", 1)[1] for t in teachers] == ["teacher_ce_s0", "teacher_dus_s0"]
