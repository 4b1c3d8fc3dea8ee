"""The evaluation stage: metrics for the teacher and the student, written as a report.

`report.json` holds every number (with the data set, split sizes and metric conventions);
`report.md` is the same as readable tables.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Callable, Optional

import jax
import numpy as np

from cud_jax import losses
from cud_jax.train import evaluate, steps

ECE_CONVENTION = ("top-label ECE, {bins} equal-width bins [lo, hi), confidence 1.0 in the "
                  "last bin (robustness_metrics convention); Brier summed over classes")


def _logits(trained, task, config, mesh, *splits) -> list[np.ndarray]:
    """Logits of one model on each split, compiled once."""
    predict = steps.make_predict_fn(trained.model_def, task.preprocess, mesh=mesh)
    return [evaluate.predict_logits(predict, trained.params, trained.model_state, split.images,
                                    batch_size=config.eval.batch_size, mesh=mesh)
            for split in splits]


def _try_load(name: str, load: Callable):
    try:
        return load(name)
    except FileNotFoundError as err:
        logging.warning("Skipping the %s in the report: %s", name, err)
        return None


def evaluate_run(config, workdir: str, task, mesh, *, teacher=None, student=None,
                 load: Optional[Callable] = None) -> dict:
    """Evaluates whichever of teacher and student exist and writes report.json / report.md."""
    models = {"teacher": teacher, "student": student}
    for name in models:
        if models[name] is None and load is not None:
            if name == "teacher" and config.student.method == "ce" and student is not None:
                continue
            models[name] = _try_load(name, load)
    bins = config.eval.num_bins
    report = {"dataset": task.info, "ece_convention": ECE_CONVENTION.format(bins=bins),
              "teacher_loss": config.teacher.loss, "student_method": config.student.method,
              "models": {}}
    logits = {}
    for name, trained in models.items():
        if trained is None:
            continue
        cfg = config.teacher if name == "teacher" else config.student
        test_logits, val_logits = _logits(trained, task, config, mesh, task.test, task.val)
        logits[name] = test_logits
        entry = {"model": cfg.model, "step": trained.step,
                 **evaluate.evaluate_logits(test_logits, task.test.labels, val_logits,
                                            task.val.labels, num_bins=bins)}
        if name == "teacher":
            probs = jax.nn.softmax(test_logits, -1)
            stats = losses.wclip_stats(probs, task.test.labels, eta=config.student.eta,
                                       margin=config.student.margin)
            entry["wclip_fire_rate_test"] = float(stats.fire_rate)
        report["models"][name] = entry
    if "teacher" in logits and "student" in logits:
        report["models"]["student"].update(
            evaluate.teacher_student_metrics(logits["student"], logits["teacher"]))
    if jax.process_index() == 0:
        with open(os.path.join(workdir, "report.json"), "w", encoding="utf-8") as f:
            json.dump(report, f, indent=2)
        with open(os.path.join(workdir, "report.md"), "w", encoding="utf-8") as f:
            f.write(markdown_report(report))
    return report


_COLUMNS = ("accuracy", "nll", "brier", "ece", "adaptive_ece", "mce", "classwise_ece",
            "misclassification_auroc")


def markdown_report(report: dict) -> str:
    """The report as markdown tables."""
    info = report["dataset"]
    lines = [f"# Report: {info['dataset']}", "",
             f"Teacher loss `{report['teacher_loss']}`, student method "
             f"`{report['student_method']}`. Splits: train {info['train_size']}, val "
             f"{info['val_size']}, test {info['test_size']}. {report['ece_convention']}.", "",
             "| model | variant | " + " | ".join(_COLUMNS) + " |",
             "|---|---|" + "---|" * len(_COLUMNS)]
    for name, entry in report["models"].items():
        for variant in ("clean", "temperature_scaled"):
            row = entry[variant]
            label = variant if variant == "clean" else f"TS (T={row['temperature']:.3f})"
            lines.append(f"| {name} ({entry['model']}) | {label} | "
                         + " | ".join(f"{row[c]:.4f}" for c in _COLUMNS) + " |")
    extras = []
    teacher = report["models"].get("teacher", {})
    student = report["models"].get("student", {})
    if "wclip_fire_rate_test" in teacher:
        extras.append(f"- W-Clip firing rate of the teacher on test inputs: "
                      f"{teacher['wclip_fire_rate_test']:.4f}")
    if "agreement" in student:
        extras.append(f"- Teacher-student agreement {student['agreement']:.4f}, "
                      f"KL(teacher || student) {student['kl_teacher_student']:.4f}")
    return "\n".join(lines + [""] + extras) + "\n"
