"""The evaluation stage: clean, temperature-scaled, shifted and OOD metrics, and the report.

Works on whichever of teacher and student exist in the workdir (or were just trained).
Writes `report.json` (every number, with the data set, split sizes, metric conventions and
package versions), `report.md` (readable tables) and PNG figures into the workdir.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Callable, Optional

import jax
import numpy as np

from cud_jax import losses
from cud_jax.evaluate import plots, predict, robustness

ECE_CONVENTION = ("top-label ECE, {bins} equal-width bins [lo, hi), confidence 1.0 in the "
                  "last bin (robustness_metrics convention); Brier summed over classes")


#: Where the student stage records the temperature its teacher was calibrated with.
TEACHER_TEMPERATURE_FILE = "teacher_temperature.json"


def teacher_calibration(config, workdir: str) -> dict:
    """How the student's teacher was calibrated (`teacher.calibration`) and, for
    `temperature`, the fitted temperature the student stage recorded."""
    path = os.path.join(workdir, TEACHER_TEMPERATURE_FILE)
    if config.teacher.calibration != "none" and os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    return {"calibration": config.teacher.calibration, "temperature": None}


def _try_load(name: str, load: Callable):
    try:
        return load(name)
    except FileNotFoundError as err:
        logging.warning("Skipping the %s in the report: %s", name, err)
        print(f"Report: no {name} ({str(err).splitlines()[0]})")
        return None


def _predictor(trained, data, config, mesh) -> Callable[[np.ndarray], np.ndarray]:
    """held inputs -> logits for one model (compiled once, any number of inputs)."""
    predict_fn = predict.make_predict_fn(trained.model_def, data.task.preprocess, mesh=mesh)
    return lambda inputs: predict.predict_logits(
        predict_fn, trained.params, trained.model_state, inputs,
        batch_size=config.eval.batch_size, mesh=mesh, widths_fn=data.task.widths_fn,
        placement=data.placement)


def _versions(workdir: str) -> dict:
    path = os.path.join(workdir, "versions.json")
    if not os.path.exists(path):
        return {}
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def shift_subset(test, ev) -> tuple[np.ndarray, np.ndarray]:
    """The test images and labels of the shift evaluation (`eval.shift_subset`, seeded)."""
    images, labels = test.inputs, test.labels
    if ev.shift_subset and ev.shift_subset < len(labels):
        keep = np.random.default_rng(ev.corruption_seed).permutation(len(labels))
        keep = np.sort(keep[:ev.shift_subset])
        images, labels = images[keep], labels[keep]
    return images, labels


def up_to_date_report(config, workdir: str) -> Optional[dict]:
    """The finished report of `workdir` when re-evaluating would reproduce it, else None.

    It is up to date when it was made with the same evaluation settings and from the
    newest checkpoint of every model it reports (the recipe itself is guarded by
    config.json). Evaluation is most of a finished run's rerun time, so it is read back.
    """
    from cud_jax.train import checkpoints

    path = os.path.join(workdir, "report.json")
    if not os.path.exists(path):
        return None
    with open(path, encoding="utf-8") as f:
        try:
            report = json.load(f)
        except json.JSONDecodeError:  # a damaged report is simply made again
            return None
    if report.get("eval_config") != json.loads(json.dumps(config.eval.to_dict())):
        return None
    for name, entry in report.get("models", {}).items():
        directory = config[name].checkpoint or os.path.join(workdir, "checkpoints", name)
        if checkpoints.latest_step(directory) != entry.get("step"):
            return None
    return report


def _models_to_report(config, teacher, student, load) -> dict:
    """The trained models by name: those given, else loaded (missing ones skipped)."""
    trained = {"teacher": teacher, "student": student}
    for name in trained:
        if trained[name] is None and load is not None:
            if name == "teacher" and config.student.method == "ce" and student is not None:
                continue
            trained[name] = _try_load(name, load)
    return {k: v for k, v in trained.items() if v is not None}


def _clean_entries(config, data, trained: dict, predictors: dict) -> tuple[dict, dict]:
    """`({model: clean and TS metrics}, {model: test logits})`."""
    entries, test_logits = {}, {}
    for name, predict_model in predictors.items():
        test_logits[name] = predict_model(data.test.inputs)
        entry = {"model": config[name].model, "step": trained[name].step,
                 **predict.evaluate_logits(test_logits[name], data.test.labels,
                                           predict_model(data.val.inputs), data.val.labels,
                                           num_bins=config.eval.num_bins)}
        if name == "teacher":
            stats = losses.wclip_stats(jax.nn.softmax(test_logits[name], -1), data.test.labels,
                                       eta=config.student.eta, margin=config.student.margin)
            entry["wclip_fire_rate_test"] = float(stats.fire_rate)
        entries[name] = entry
    if "teacher" in test_logits and "student" in test_logits:
        entries["student"].update(
            predict.teacher_student_metrics(test_logits["student"], test_logits["teacher"]))
    return entries, test_logits


def shift_corruptions(ev, image_shape) -> list[str]:
    """The corruption names of `eval.corruptions` (`all`: every one the images allow)."""
    corruptions = [c.strip() for c in ev.corruptions.split(",") if c.strip()]
    if corruptions == ["all"]:
        from cud_jax.data.corruptions import CORRUPTIONS, RGB_ONLY

        rgb = image_shape[-1] == 3
        corruptions = [n for n in CORRUPTIONS if rgb or n not in RGB_ONLY]
    return corruptions


def _shift_section(config, workdir, data, predictors, temperatures) -> Optional[dict]:
    ev = config.eval
    corruptions = shift_corruptions(ev, data.test.inputs.shape)
    if not corruptions or not predictors:
        return None
    severities = [int(s) for s in str(ev.severities).split(",")]
    shift = robustness.evaluate_shift(
        predictors, temperatures, data.shift.inputs, data.shift.labels,
        corruptions=corruptions, severities=severities, seed=ev.corruption_seed,
        cache_dir=ev.cache_dir or os.path.join(workdir, "cache", "corruptions"),
        num_bins=ev.num_bins, placement=data.placement)
    return {"num_images": int(len(data.shift.labels)), "corruptions": corruptions,
            "severities": severities, "models": shift}


def _ood_sets(config, data) -> dict:
    """The built-in OOD sets and those `eval.ood_sets` names, held as the placement keeps
    evaluation inputs."""
    ev = config.eval
    loaded = robustness.load_ood_sets(
        ev.ood_sets, task_info=data.task.info, data_cfg=config.data, data_dir=ev.ood_data_dir,
        subset=ev.ood_subset, seed=config.seed)
    return {**data.ood, **{name: data.placement.hold_eval(x, ev.batch_size)
                           for name, x in loaded.items()}}


def evaluate_run(config, workdir: str, data, mesh, *, teacher=None, student=None,
                 load: Optional[Callable] = None) -> dict:
    """Evaluates the run's models on `data` (`cud_jax.train.tasks.PlacedData`) and writes
    the report files; returns the report dict."""
    ev = config.eval
    trained = _models_to_report(config, teacher, student, load)
    predictors = {name: _predictor(t, data, config, mesh) for name, t in trained.items()}
    entries, test_logits = _clean_entries(config, data, trained, predictors)
    report = {"dataset": data.task.info,
              "ece_convention": ECE_CONVENTION.format(bins=ev.num_bins),
              "teacher_loss": config.teacher.loss, "student_method": config.student.method,
              "teacher_calibration": teacher_calibration(config, workdir),
              "environment": _versions(workdir), "eval_config": ev.to_dict(),
              "models": entries}
    temperatures = {name: entry["temperature_scaled"]["temperature"]
                    for name, entry in entries.items()}
    shift = _shift_section(config, workdir, data, predictors, temperatures)
    if shift is not None:
        report["shift"] = shift
    ood_sets = _ood_sets(config, data)
    msp_scores = {}
    if ood_sets and predictors:
        report["ood"], msp_scores = robustness.evaluate_ood(predictors, test_logits, ood_sets)
    if jax.process_index() == 0:
        write_report_files(workdir, report, test_logits, data.test.labels, msp_scores,
                           num_bins=ev.num_bins, plots_too=ev.plots)
    return report


def write_report_files(workdir: str, report: dict, test_logits: dict, labels, msp_scores,
                       *, num_bins: int, plots_too: bool) -> None:
    """report.json, report.md and (with `plots_too`) the PNG figures."""
    with open(os.path.join(workdir, "report.json"), "w", encoding="utf-8") as f:
        json.dump(report, f, indent=2)
    with open(os.path.join(workdir, "report.md"), "w", encoding="utf-8") as f:
        f.write(markdown_report(report))
    if plots_too and test_logits:
        _write_figures(workdir, test_logits, labels, report.get("shift", {}).get("models"),
                       msp_scores, num_bins)


def _write_figures(workdir, test_logits, labels, shift, msp_scores, num_bins) -> None:
    probs = {name: np.asarray(jax.nn.softmax(logits, -1))
             for name, logits in test_logits.items()}
    plots.reliability_figure(os.path.join(workdir, "reliability.png"), probs, labels, num_bins)
    if shift:
        plots.shift_figure(os.path.join(workdir, "shift.png"),
                           {name: entry["by_severity"] for name, entry in shift.items()})
    for set_name, scores in msp_scores.items():
        safe = set_name.replace(":", "_").replace("/", "_")
        plots.ood_figure(os.path.join(workdir, f"ood_{safe}.png"), set_name, scores)


def _calibration_note(report: dict) -> str:
    calibration = report.get("teacher_calibration") or {}
    if calibration.get("temperature") is None:
        return ""
    return f" (teacher temperature-scaled, T={calibration['temperature']:.3f}, for the student)"


_COLUMNS = ("accuracy", "nll", "brier", "ece", "adaptive_ece", "mce", "classwise_ece",
            "misclassification_auroc")


def _table(header, rows) -> list[str]:
    return (["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
            + ["| " + " | ".join(row) + " |" for row in rows])


def markdown_report(report: dict) -> str:
    """The report as markdown tables."""
    info = report["dataset"]
    lines = [f"# Report: {info['dataset']}", "",
             f"Teacher loss `{report['teacher_loss']}`, student method "
             f"`{report['student_method']}`{_calibration_note(report)}. Splits: train "
             f"{info['train_size']}, val {info['val_size']}, test {info['test_size']}. {report['ece_convention']}. "
             "TS = temperature scaling fitted on the validation split.", "", "## Clean test set",
             ""]
    rows = []
    for name, entry in report["models"].items():
        for variant in ("clean", "temperature_scaled"):
            row = entry[variant]
            label = variant if variant == "clean" else f"TS (T={row['temperature']:.3f})"
            rows.append([f"{name} ({entry['model']})", label]
                        + [f"{row[c]:.4f}" for c in _COLUMNS])
    lines += _table(["model", "variant", *_COLUMNS], rows) + [""]
    teacher = report["models"].get("teacher", {})
    student = report["models"].get("student", {})
    if "wclip_fire_rate_test" in teacher:
        lines.append(f"- W-Clip firing rate of the teacher on test inputs: "
                     f"{teacher['wclip_fire_rate_test']:.4f}")
    if "agreement" in student:
        lines.append(f"- Teacher-student agreement {student['agreement']:.4f}, "
                     f"KL(teacher || student) {student['kl_teacher_student']:.4f}")
    if "shift" in report:
        lines += _shift_markdown(report["shift"])
    if "ood" in report:
        lines += _ood_markdown(report["ood"])
    return "\n".join(lines) + "\n"


def _shift_markdown(shift: dict) -> list[str]:
    models = shift["models"]
    lines = ["", "## Shift: corrupted test images", "",
             f"{len(shift['corruptions'])} corruptions x severities {shift['severities']} on "
             f"{shift['num_images']} test images. Means over all corruption-severity pairs.",
             ""]
    keys = ("accuracy", "nll", "ece", "nll_ts", "ece_ts")
    lines += _table(["model", "cAcc", "cNLL", "cECE", "cNLL (TS)", "cECE (TS)"],
                    [[name] + [f"{entry['mean'][k]:.4f}" for k in keys]
                     for name, entry in models.items()])
    severities = ["0"] + [str(s) for s in shift["severities"]]
    lines += ["", "Accuracy / ECE by severity (0 = clean subset):", ""]
    lines += _table(["model"] + [f"sev {s}" for s in severities],
                    [[name] + [f"{entry['by_severity'][s]['accuracy']:.3f} / "
                               f"{entry['by_severity'][s]['ece']:.3f}" for s in severities]
                     for name, entry in models.items()])
    for name, entry in models.items():
        lines += ["", f"Per corruption, {name}: accuracy / ECE at each severity", ""]
        lines += _table(["corruption"] + [f"sev {s}" for s in shift["severities"]],
                        [[corruption] + [f"{cells[str(s)]['accuracy']:.3f} / "
                                         f"{cells[str(s)]['ece']:.3f}"
                                         for s in shift["severities"]]
                         for corruption, cells in entry["table"].items()])
    return lines


def _ood_markdown(ood: dict) -> list[str]:
    lines = ["", "## OOD detection", "",
             "Scores: maximum softmax probability (MSP) and negative entropy; in-distribution "
             "test set as positives.", ""]
    rows = []
    for set_name, entry in ood.items():
        for name, scores in entry.items():
            if name == "num_ood":
                continue
            for score in ("msp", "entropy"):
                m = scores[score]
                rows.append([set_name, str(entry["num_ood"]), name, score, f"{m['auroc']:.4f}",
                             f"{m['aupr_in']:.4f}", f"{m['aupr_out']:.4f}",
                             f"{m['fpr_at_95_tpr']:.4f}"])
    return lines + _table(["OOD set", "n", "model", "score", "AUROC", "AUPR-in", "AUPR-out",
                           "FPR@95TPR"], rows)
