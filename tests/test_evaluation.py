"""Evaluation pieces: OOD set loading and metrics, shift aggregation, figures, comparison."""

import io
import json
import os
import subprocess
import sys
import zipfile

import ml_collections
import numpy as np
import pytest
from PIL import Image

from cud_jax.evaluate import compare, plots, predict, robustness

INFO = {"image_shape": [8, 8, 3]}
DATA_CFG = ml_collections.ConfigDict({"source_kwargs": {}})


def test_missing_ood_set_is_skipped_with_one_line(tmp_path, capsys):
    sets = robustness.load_ood_sets("cifar100,noise:uniform", task_info=INFO, data_cfg=DATA_CFG,
                                    data_dir=str(tmp_path), subset=16, seed=0)
    assert list(sets) == ["noise:uniform"] and sets["noise:uniform"].shape == (16, 8, 8, 3)
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1 and out[0].startswith("OOD set cifar100 skipped:")


def test_images_ood_set_reads_a_zip_and_resizes(tmp_path):
    path = tmp_path / "chars.zip"
    with zipfile.ZipFile(path, "w") as archive:
        for i in range(5):
            buffer = io.BytesIO()
            Image.fromarray(np.full((20, 20), 40 * i, np.uint8)).save(buffer, "PNG")
            archive.writestr(f"alphabet/char{i}/{i}.png", buffer.getvalue())
        archive.writestr("README.txt", "not an image")
    sets = robustness.load_ood_sets(f"images:{path}", task_info=INFO, data_cfg=DATA_CFG,
                                    data_dir=None, subset=3, seed=0)
    images = sets[f"images:{path}"]
    assert images.shape == (3, 8, 8, 3) and images.dtype == np.uint8
    assert np.all(images[..., 0] == images[..., 2])  # grayscale replicated into RGB


def test_ood_metrics_separate_confident_from_uniform_predictions():
    rng = np.random.default_rng(0)
    confident = np.log(np.eye(4)[rng.integers(0, 4, 50)] * 0.9 + 0.025) * 3
    flat = rng.normal(0, 0.01, (30, 4))
    results, scores = robustness.evaluate_ood({"m": lambda x: flat}, {"m": confident},
                                              {"noise": np.zeros((30, 8, 8, 3), np.uint8)})
    assert results["noise"]["num_ood"] == 30
    assert results["noise"]["m"]["msp"]["auroc"] == 1.0
    assert results["noise"]["m"]["entropy"]["fpr_at_95_tpr"] == 0.0
    assert scores["noise"]["m"][0].shape == (50,)


def test_shift_metrics_apply_the_temperature():
    logits = np.array([[4.0, 0.0], [0.0, 4.0], [4.0, 0.0]])
    labels = np.array([0, 1, 1])
    raw = robustness.shift_metrics(logits, labels, 1.0, 15)
    hot = robustness.shift_metrics(logits, labels, 4.0, 15)
    assert raw["accuracy"] == pytest.approx(2 / 3)
    assert raw["nll"] == raw["nll_ts"] and hot["nll_ts"] < hot["nll"]


def test_report_nll_is_exact_for_confident_mistakes():
    """NLL from logits: a float32 softmax underflows and capped NLL at 87.34 (issue 10)."""
    logits = np.array([[120.0, 0.0, 0.0], [0.0, 3.0, 0.0]], np.float32)
    labels = np.array([1, 1])
    want = (120.0 + np.log1p(2 * np.exp(-120.0)) + np.log1p(2 * np.exp(-3.0))) / 2
    clean = predict.classification_metrics(logits, labels)
    assert clean["nll"] == pytest.approx(want, rel=1e-6)
    scaled = predict.classification_metrics(logits, labels, temperature=2.0)
    assert scaled["nll"] == pytest.approx(
        (60.0 + np.log1p(2 * np.exp(-60.0)) + np.log1p(2 * np.exp(-1.5))) / 2, rel=1e-6)
    shift = robustness.shift_metrics(logits, labels, 2.0, 15)
    assert shift["nll"] == pytest.approx(want, rel=1e-6)
    assert shift["nll_ts"] == pytest.approx(scaled["nll"], rel=1e-6)


def test_figures_are_written(tmp_path):
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(5), 100)
    labels = rng.integers(0, 5, 100)
    plots.reliability_figure(str(tmp_path / "r.png"), {"teacher": probs, "student": probs},
                             labels)
    by_sev = {"teacher": {str(s): {"accuracy": 0.9 - s / 10, "ece": s / 20} for s in range(4)}}
    plots.shift_figure(str(tmp_path / "s.png"), by_sev)
    plots.ood_figure(str(tmp_path / "o.png"), "noise", {"teacher": (probs.max(1), probs.max(1))})
    for name in ("r.png", "s.png", "o.png"):
        assert (tmp_path / name).stat().st_size > 5000


def _fake_run(root, name, loss, method, seed, student_acc, teacher_acc, ece):
    workdir = root / name
    workdir.mkdir()
    entry = lambda acc: {"model": "m", "clean": {"accuracy": acc, "nll": 1.0, "brier": 0.5,  # noqa
                                                 "ece": ece, "adaptive_ece": ece},
                         "temperature_scaled": {"ece": ece / 2}}
    report = {"teacher_loss": loss, "student_method": method,
              "models": {"teacher": entry(teacher_acc), "student": entry(student_acc)},
              "shift": {"models": {"student": {"mean": {"accuracy": student_acc / 2,
                                                        "nll": 2.0, "ece": 0.2}}}},
              "ood": {"noise": {"student": {"msp": {"auroc": 0.8, "fpr_at_95_tpr": 0.5}}}}}
    (workdir / "report.json").write_text(json.dumps(report))
    (workdir / "config.json").write_text(json.dumps(
        {"seed": seed, "teacher": {"checkpoint": f"/t/{loss}/{seed}"}}))
    return str(workdir)


def test_comparison_table_means_stds_and_bold_best(tmp_path):
    runs = [_fake_run(tmp_path, "a0", "ce", "kd", 0, 0.70, 0.90, 0.10),
            _fake_run(tmp_path, "a1", "ce", "kd", 1, 0.72, 0.92, 0.12),
            _fake_run(tmp_path, "b0", "ce", "cud", 0, 0.75, 0.90, 0.05),
            _fake_run(tmp_path, "b1", "ce", "cud", 1, 0.77, 0.92, 0.07)]
    os.makedirs(tmp_path / "empty")
    text = compare.compare(runs + [str(tmp_path / "empty")], str(tmp_path / "out" / "t.md"))
    kd_row = next(line for line in text.splitlines() if line.startswith("| kd student"))
    cud_row = next(line for line in text.splitlines() if line.startswith("| cud student"))
    assert "| 2 | 71.00 ± 1.00 |" in kd_row
    assert "**76.00 ± 1.00**" in cud_row and "**0.0600 ± 0.0100**" in cud_row
    teacher_row = next(line for line in text.splitlines() if line.startswith("| ce teacher"))
    assert "| 2 | 91.00 ± 1.00 |" in teacher_row  # each (loss, seed) teacher counted once
    assert "Skipped (no report)" in text
    csv_lines = (tmp_path / "out" / "t.csv").read_text().splitlines()
    assert csv_lines[0].startswith("run,n,acc mean") and len(csv_lines) == 4


def test_compare_command_keeps_its_module_name(tmp_path):
    """`python -m cud_jax.compare` still runs the table (its home is cud_jax.evaluate)."""
    run = _fake_run(tmp_path, "a0", "ce", "kd", 0, 0.70, 0.90, 0.10)
    out = tmp_path / "t.md"
    subprocess.run([sys.executable, "-m", "cud_jax.compare", run, "--out", str(out)],
                   check=True, capture_output=True,
                   cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert "| kd student" in out.read_text()
