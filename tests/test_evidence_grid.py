"""Tests for issue 13's grids: benchmarks/evidence_grid.py (text), cifar10_grid.py (vision)
and the engine they share (grid_lib.py): the cells, their configs and the tables.

No training: the grids are enumerated, and the tables are written from fabricated finished
runs (report.json + test_predictions.npz) whose paired differences are known.
"""

import argparse
import importlib.util
import json
import os
import pathlib
import sys

import numpy as np
import pytest

BENCHMARKS = pathlib.Path(__file__).resolve().parents[1] / "benchmarks"


def _load(name):
    sys.path.insert(0, str(BENCHMARKS))
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while defined
    spec.loader.exec_module(module)
    return module


def _lib():
    """benchmarks/grid_lib.py, as the front ends imported it."""
    return sys.modules["grid_lib"]


@pytest.fixture(scope="module")
def grid():
    return _load("evidence_grid")


@pytest.fixture(scope="module")
def vision():
    return _load("cifar10_grid")


def _args(grid, tmp_path, **changes):
    args = argparse.Namespace(
        datasets=",".join(grid.DATASETS), students=",".join(grid.STUDENTS),
        methods=",".join(m.key for m in grid.METHODS), seeds="0,1,2", teacher_seeds="per_seed",
        data_root=str(tmp_path / "data"), train_subset=0, test_subset=0, max_length=0,
        teacher_epochs=0, student_epochs=0, workroot=str(tmp_path / "runs"), resamples=200,
        setup_note="test", report_only=True, time_budget_min=0, results_dir=None,
        name="x")
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
    config = grid.cell_config(cud)
    assert (config.student.method, config.teacher.loss, config.seed) == ("cud", "ce", 1)
    assert config.student.epochs == 0.5 and config.teacher.checkpoint.endswith(
        "teacher_ce_s1/checkpoints/teacher")
    dkd = grid.cell_config(next(c for c in students if c.method.key == "dkd"))
    assert dkd.student.dkd_warmup_epochs == pytest.approx(0.5 / 12)  # not CIFAR's 20 epochs


def _fake_run(cell, probs, labels, teacher_acc=0.9, **sections):
    """A finished student: its report (plus `sections`, e.g. shift / ood) and predictions."""
    folder = pathlib.Path(cell.workdir)
    folder.mkdir(parents=True)
    acc = float(np.mean(probs.argmax(-1) == labels))
    clean = {"accuracy": acc, "nll": 0.5, "brier": 0.2, "ece": 0.05, "adaptive_ece": 0.04}
    report = {"models": {"student": {"clean": clean, "temperature_scaled": {**clean, "ece": 0.02}},
                         "teacher": {"clean": {"accuracy": teacher_acc},
                                     "wclip_fire_rate_test": 0.05}}, **sections}
    (folder / "report.json").write_text(json.dumps(report))
    np.savez(folder / "test_predictions.npz", logits=np.log(probs), labels=labels)


def test_tables_and_paired_intervals_from_finished_runs(grid, tmp_path, monkeypatch):
    written = {}
    monkeypatch.setattr(_lib(), "write_results", lambda name, md, payload, *where: (
        written.update(name=name, md=md, payload=payload)))
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
    _lib().summarise(args, grid.grid_spec(), teachers, students, status, 1.0)
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
    monkeypatch.setattr(_lib(), "write_results",
                        lambda name, md, payload, *where: written.update(md=md))
    args = _args(grid, tmp_path, datasets="trec", students="minilm3", methods="kd_ts,cud",
                 seeds="0")
    teachers, students = grid.build_grid(args)
    status = _lib().run_grid(args, teachers, students)  # report_only: runs nothing
    assert all(status[s.workdir].startswith("missing: its teacher is missing") for s in students)
    _lib().summarise(args, grid.grid_spec(), teachers, students, status, 1.0)
    assert "trec/teacher_dus_s0`: missing: not run yet" in written["md"]
    assert [t.workdir.rsplit("/", 1)[1] for t in teachers] == ["teacher_ce_s0", "teacher_dus_s0"]


def _vision_args(vision, tmp_path, **changes):
    args = argparse.Namespace(
        pairs=",".join(vision.PAIRS), methods=",".join(m.key for m in vision.METHODS),
        seeds="0,1,2", teacher_seeds="per_seed", epochs=240.0, data=str(tmp_path / "c10.tgz"),
        train_subset=0, val_size=0, corruptions="all", severities="1,2,3,4,5",
        shift_subset=2000, ood_sets="noise:uniform,images:/data/omniglot.zip", ood_subset=2000,
        workroot=str(tmp_path / "runs"), resamples=200, setup_note="test", report_only=True,
        time_budget_min=0, results_dir=None, name="x")
    for key, value in changes.items():
        setattr(args, key, value)
    return args


def test_cifar10_grid_cells_and_their_configs(vision, tmp_path):
    cell_config = _lib().cell_config
    teachers, students = vision.build_grid(_vision_args(vision, tmp_path))
    assert len(students) == 2 * 7 * 3  # pairs x methods x seeds
    assert len(teachers) == 2 * 2 * 3  # pairs x teacher losses x seeds
    assert len(vision.build_grid(_vision_args(vision, tmp_path, teacher_seeds="one"))[0]) == 4
    for cell in students:
        teacher_arch, student_arch = cell.student.split("-")
        config = cell_config(cell)
        assert (config.student.model, config.seed) == (student_arch, cell.seed)
        assert config.data.name == "image_folder" and config.eval.ood_subset == 2000
        if cell.method.teacher is None:
            assert cell.teacher_dir is None
            continue
        assert f"/{cell.student}/teacher_{cell.method.teacher}_s{cell.seed}" in cell.teacher_dir
        teacher = cell_config(next(t for t in teachers
                                          if t.workdir == cell.teacher_dir))
        assert (teacher.stage, teacher.teacher.model) == ("teacher", teacher_arch)
        assert teacher.teacher.loss == {"ce": "ce", "dus": "dus"}[cell.method.teacher]
    short = vision.build_grid(_vision_args(vision, tmp_path, epochs=24, seeds="1",
                                           pairs="resnet56-resnet20", methods="dkd_dus"))[1]
    argv = short[0].argv()
    assert argv[3] == ("--config=configs/cifar10.py:pair=resnet56-resnet20,method=dkd,"
                       "teacher_loss=dus,epochs=24")
    config = cell_config(short[0])
    assert config.student.epochs == 24 and config.student.lr_milestones == (15, 18, 21)
    assert config.student.dkd_warmup_epochs == pytest.approx(2.0)
    assert config.student.dkd_beta == 2.0  # DKD's own beta for this pair


def test_cifar10_tables_show_shift_and_ood(vision, tmp_path, monkeypatch):
    written = {}
    monkeypatch.setattr(_lib(), "write_results", lambda name, md, payload, *where: (
        written.update(md=md, payload=payload)))
    args = _vision_args(vision, tmp_path, pairs="resnet56-resnet20",
                        methods="ce,kd_ce,kd_dus,cud", seeds="0")
    teachers, students = vision.build_grid(args)
    labels = np.arange(200) % 10
    good = np.full((200, 10), 0.02)
    good[np.arange(200), labels] = 0.82
    status = {t.workdir: "done" for t in teachers}
    for cell in students:
        right = {"cud": 200, "kd_dus": 150}.get(cell.method.key, 100)
        probs = np.concatenate([good[:right], np.roll(good, 1, axis=1)[right:]])
        shift = {"models": {"student": {"mean": {"accuracy": 0.5, "nll": 1.5, "ece": 0.1}}}}
        ood = {"images:/data/omniglot.zip": {"student": {"msp": {"auroc": 0.75,
                                                                 "fpr_at_95_tpr": 0.6}}}}
        _fake_run(cell, probs, labels, shift=shift, ood=ood)
        status[cell.workdir] = "done"
    _lib().summarise(args, vision.grid_spec(), teachers, students, status, 1.0)
    md = written["md"]
    assert "## CIFAR-10, resnet56 -> resnet20" in md
    assert "| cAcc | cNLL | cECE | AUROC omniglot.zip | FPR95 omniglot.zip |" in md
    assert "| CUD (DUS teacher + W-Clip) | 1/1 | 100.00 | 0.5000 |" in md
    assert "| 50.00 | 1.5000 | 0.1000 | 0.7500 | 0.6000 |" in md
    (block,) = written["payload"]["blocks"]
    by_title = {p["title"]: p for p in block["paired"]}
    assert by_title["CUD - KD (DUS teacher): what W-Clip adds"]["results"]["accuracy"][
        "pooled"]["difference"] == pytest.approx(0.25)


def test_run_grid_resumes_reports_each_cell_and_keeps_to_its_budget(grid, tmp_path, monkeypatch):
    """Finished cells are not rerun, a failed teacher's students are skipped with the reason,
    after_each sees every cell this call ran, and a spent budget launches nothing more."""
    lib = _lib()
    args = _args(grid, tmp_path, datasets="trec", students="minilm3", methods="ce,kd_ce,cud",
                 seeds="0", report_only=False)
    teachers, students = grid.build_grid(args)
    ran, seen = [], []

    def fake_run(cell):
        ran.append(cell.workdir)
        ok = "teacher_dus" not in cell.workdir  # the DUS teacher fails
        if ok and cell.kind == "teacher":
            os.makedirs(cell.workdir, exist_ok=True)
            pathlib.Path(cell.workdir, "grid_done.json").write_text("{}")
        return ok, 1.0

    class FakePredictor:
        def save(self, cell):
            _fake_run(cell, np.eye(3)[[0, 1, 2]] * 0.9 + 0.03, np.arange(3))

    monkeypatch.setattr(lib, "run_cell", fake_run)
    monkeypatch.setattr(lib, "Predictor", FakePredictor)
    status = _lib().run_grid(args, teachers, students,
                           after_each=lambda s: seen.append(dict(s)))
    by_name = {os.path.basename(w): s for w, s in status.items()}
    assert by_name["teacher_ce_s0"] == "done" and by_name["teacher_dus_s0"].startswith("failed")
    assert by_name["ce_s0"] == by_name["kd_ce_s0"] == "done"
    assert by_name["cud_s0"] == "missing: its teacher is " + by_name["teacher_dus_s0"]
    assert len(ran) == len(seen) == 4  # 2 teachers + ce + kd_ce; cud never launched
    assert [len(s) for s in seen] == [1, 2, 3, 4]
    ran.clear()
    again = _lib().run_grid(args, teachers, students)  # finished cells are read, not rerun
    assert ran == [next(t.workdir for t in teachers if "dus" in t.workdir)]
    assert again[students[0].workdir] == "done"
    ran.clear()
    args.time_budget_min = 1e-9  # spent before the first launch
    spent = _lib().run_grid(args, teachers, students)
    assert ran == [] and spent[teachers[1].workdir] == "missing: time budget spent"


def test_a_trained_student_without_predictions_is_not_retrained(grid, tmp_path, monkeypatch):
    """A grid killed between a cell's report and its saved predictions only saves them."""
    lib = _lib()
    args = _args(grid, tmp_path, datasets="trec", students="minilm3", methods="ce",
                 seeds="0", report_only=False)
    teachers, students = grid.build_grid(args)
    os.makedirs(students[0].workdir)
    pathlib.Path(students[0].workdir, "report.json").write_text("{}")
    ran, saved = [], []
    monkeypatch.setattr(lib, "run_cell", lambda cell: ran.append(cell) or (True, 0.0))

    class FakePredictor:
        def save(self, cell):
            saved.append(cell.workdir)

    monkeypatch.setattr(lib, "Predictor", FakePredictor)
    status = lib.run_grid(args, teachers, students)
    assert ran == [] and saved == [students[0].workdir]
    assert status[students[0].workdir] == "done"


def test_a_bad_grid_fails_in_one_line_before_any_cell_runs(vision, tmp_path, monkeypatch):
    lib = _lib()
    ran = []
    monkeypatch.setattr(lib, "run_cell", lambda cell: ran.append(cell) or (True, 0.0))
    (tmp_path / "c10.tgz").write_bytes(b"")  # the data path exists; the pair is wrong
    args = _vision_args(vision, tmp_path, pairs="resnet56-resnet9", methods="ce,cud",
                        seeds="0", report_only=False)
    teachers, students = vision.build_grid(args)
    prepared = []
    with pytest.raises(SystemExit, match=r"error: 3 problem\(s\).*student.model='resnet9': "
                                         r"Unknown model 'resnet9'"):
        lib.run_and_summarise(args, vision.grid_spec(), teachers, students,
                              prepare=lambda: prepared.append(1) or {})
    assert ran == [] and prepared == []  # neither the cells nor their preparation ran
    good = _vision_args(vision, tmp_path, pairs="resnet56-resnet20", methods="ce,cud",
                        seeds="0")
    assert lib.config_problems(sum(vision.build_grid(good), [])) == []
