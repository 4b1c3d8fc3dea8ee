"""The engine behind issue 13's evidence grids (text: evidence_grid.py, vision: cifar10_grid.py).

A grid is a list of teacher cells and student cells. Every cell is one `python -m
cud_jax.main` process in its own workdir; a student names its teacher's workdir and reads
the teacher through `--config.teacher.checkpoint`. What a front end decides: which cells
exist (its `build_grid`), which columns its tables show and how its blocks are titled.
What lives here, shared by both:

- checking: every cell's config is checked (`cud_jax.config_check`) before any cell runs, so
  a bad pair or model name is one line, not a failure hours into the grid;
- running: finished cells (a student's report.json plus its test predictions; a teacher's
  grid_done.json) are skipped, unfinished ones resume from their checkpoints, a failed cell
  is logged (<workdir>/run.log) and the grid goes on, and a time budget stops launching
  cells once spent;
- per-example predictions: the trainer's report keeps only aggregate metrics, so after each
  student finishes its checkpoint is loaded once more and its test logits and labels saved
  (<workdir>/test_predictions.npz; their accuracy must equal the report's);
- tables: mean +- std over seeds per row, and paired differences with 95% bootstrap
  intervals over test examples (`cud_jax.metrics.paired_bootstrap`), per seed and pooled.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import subprocess
import sys
import time
from typing import Callable

import numpy as np

from _common import REPO, RESULTS, provenance, write_results

# This checkout's cud_jax, as the cells' `python -m cud_jax.main` (run in REPO) use, even
# where another checkout is pip-installed.
sys.path.insert(0, REPO)

#: Metrics of the paired comparisons (cud_jax.metrics.paired_bootstrap).
PAIRED_METRICS = ("accuracy", "nll", "brier", "ece")
#: DKD's warm-up as a fraction of student training (mdistiller: 20 of 240 epochs).
DKD_WARMUP_FRACTION = 20 / 240


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


@dataclasses.dataclass
class Cell:
    """One `python -m cud_jax.main --config=configs/<config_name>.py:<config_arg>` run.

    Student cells are grouped into table blocks by (dataset, student).
    """

    dataset: str
    workdir: str
    config_name: str
    config_arg: str
    overrides: dict
    kind: str  # teacher | student
    student: str | None = None
    method: Method | None = None
    seed: int = 0
    teacher_dir: str | None = None

    def argv(self) -> list[str]:
        return ([sys.executable, "-m", "cud_jax.main",
                 f"--config=configs/{self.config_name}.py:{self.config_arg}",
                 f"--workdir={self.workdir}"]
                + [f"--config.{k}={v}" for k, v in self.overrides.items()])


def cell_config(cell: Cell):
    """The ConfigDict `python -m cud_jax.main` builds for this cell."""
    spec = importlib.util.spec_from_file_location(
        f"grid_config_{cell.config_name}",
        os.path.join(REPO, "configs", f"{cell.config_name}.py"))
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


def is_done(cell: Cell) -> bool:
    if cell.kind == "teacher":
        return os.path.exists(os.path.join(cell.workdir, "grid_done.json"))
    return all(os.path.exists(os.path.join(cell.workdir, f))
               for f in ("report.json", "test_predictions.npz"))


def run_cell(cell: Cell) -> tuple[bool, float]:
    """Runs one cell in its own process (output to WORKDIR/run.log); (ok, seconds)."""
    os.makedirs(cell.workdir, exist_ok=True)
    start = time.perf_counter()
    with open(os.path.join(cell.workdir, "run.log"), "a", encoding="utf-8") as log:
        log.write(" ".join(cell.argv()) + "\n")
        log.flush()
        code = subprocess.call(cell.argv(), cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
    seconds = time.perf_counter() - start
    if code == 0:
        name = "grid_done.json" if cell.kind == "teacher" else "timing.json"
        with open(os.path.join(cell.workdir, name), "w", encoding="utf-8") as f:
            json.dump({"wall_seconds": seconds}, f)
    return code == 0, seconds


class Predictor:
    """Test logits of finished students, from their checkpoints (one task per data set)."""

    def __init__(self):
        self._tasks = {}
        self._mesh = None

    def save(self, cell: Cell) -> None:
        from cud_jax import pipeline
        from cud_jax.evaluate import report
        from cud_jax.parallel.sharding import make_mesh
        from cud_jax.train.tasks import build_task

        config = cell_config(cell)
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
        reported = read_json(os.path.join(cell.workdir, "report.json"))[
            "models"]["student"]["clean"]["accuracy"]
        accuracy = float(np.mean(np.argmax(logits, -1) == labels))
        if abs(accuracy - reported) > 1e-6:
            raise RuntimeError(f"{cell.workdir}: reloaded student accuracy {accuracy} differs "
                               f"from its report's {reported}; not saving predictions.")
        np.savez_compressed(os.path.join(cell.workdir, "test_predictions.npz"),
                            logits=np.asarray(logits, np.float32), labels=labels)


def _run_and_record(cell: Cell, workroot: str, predictor: Predictor) -> str:
    """Runs one unfinished cell (and saves a student's test predictions); its status."""
    name = os.path.relpath(cell.workdir, workroot)
    if cell.kind == "student" and os.path.exists(os.path.join(cell.workdir, "report.json")):
        # Trained and reported, but the grid stopped before saving its predictions (killed
        # between the two): saving them from the checkpoint is enough, no retraining.
        print(f"[grid] {name}: trained; saving its test predictions", flush=True)
        ok = True
    else:
        print(f"[grid] {name} ...", flush=True)
        ok, seconds = run_cell(cell)
        print(f"[grid] {name}: {'ok' if ok else 'FAILED'} in {seconds / 60:.1f} min",
              flush=True)
    if not ok:
        return f"failed: see {os.path.join(cell.workdir, 'run.log')}"
    if cell.kind == "student":
        try:
            predictor.save(cell)
        except Exception as e:  # noqa: BLE001 - recorded, the grid goes on
            return f"failed: predictions ({type(e).__name__}: {e})"
    return "done"


def run_grid(args, teachers: list[Cell], students: list[Cell],
             unavailable: dict | None = None,
             after_each: Callable[[dict], None] | None = None) -> dict:
    """Runs what is not finished, within `args.time_budget_min`; returns {workdir: status}.

    `unavailable`: {workdir: reason} of cells that cannot run (e.g. a student checkpoint that
    failed to convert); they are reported missing with the reason. `after_each(status)` is
    called after every cell this call ran (e.g. to rewrite the results file, so that a run cut
    short still leaves the tables of everything finished).
    """
    status, start = dict(unavailable or {}), time.perf_counter()
    budget = args.time_budget_min * 60 if args.time_budget_min else float("inf")
    predictor = Predictor()
    for cell in teachers + students:
        if cell.workdir in status:
            continue
        if cell.teacher_dir and not status.get(cell.teacher_dir, "").startswith("done"):
            status[cell.workdir] = f"missing: its teacher is {status.get(cell.teacher_dir)}"
        elif is_done(cell):
            status[cell.workdir] = "done"
        elif args.report_only:
            status[cell.workdir] = "missing: not run yet"
        elif time.perf_counter() - start > budget:
            status[cell.workdir] = "missing: time budget spent"
        else:
            status[cell.workdir] = _run_and_record(cell, args.workroot, predictor)
            if after_each:
                after_each(status)
    return status


# ---------------------------------------------------------------------------------------
# Records and tables.


def read_json(path: str):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def _logged(workdir: str) -> list[dict]:
    path = os.path.join(workdir, "metrics.jsonl")
    if not os.path.exists(path):
        return []
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def student_record(cell: Cell) -> dict:
    """The numbers of one finished student run, keyed as the front ends' columns name them.

    Clean test metrics, ECE after temperature scaling, the mean over the corruption suite
    (shift_*), per OOD set `auroc:<set>` / `fpr95:<set>` (maximum softmax probability), the
    teacher's test accuracy, W-Clip firing rates on test and training inputs, the teacher's
    training accuracy (how often W-Clip *can* fire) and the cell's wall time.
    """
    report = read_json(os.path.join(cell.workdir, "report.json"))
    student = report["models"]["student"]
    clean = student["clean"]
    rec = {k: clean[k] for k in ("accuracy", "nll", "brier", "ece", "adaptive_ece")}
    rec["ece_ts"] = student["temperature_scaled"]["ece"]
    shift = report.get("shift", {}).get("models", {}).get("student", {}).get("mean")
    if shift:
        rec.update({f"shift_{k}": shift.get(k) for k in ("accuracy", "nll", "ece")})
    for name, ood in report.get("ood", {}).items():
        msp = ood.get("student", {}).get("msp", {})
        rec[f"auroc:{name}"], rec[f"fpr95:{name}"] = msp.get("auroc"), msp.get("fpr_at_95_tpr")
    teacher = report["models"].get("teacher")
    if teacher:
        rec["teacher_accuracy"] = teacher["clean"]["accuracy"]
        rec["wclip_test"] = teacher.get("wclip_fire_rate_test")
    fire = [r["wclip_fire_rate"] for r in _logged(cell.workdir)
            if r.get("stage") == "student" and "wclip_fire_rate" in r]
    rec["wclip_train"] = float(np.mean(fire)) if fire else None
    if cell.teacher_dir:  # teacher training accuracy: how often W-Clip *can* fire
        acc = [r["accuracy"] for r in _logged(cell.teacher_dir) if "accuracy" in r]
        tail = acc[-max(1, len(acc) // 10):]  # last 10% of logged batches (train mode)
        rec["teacher_train_accuracy"] = float(np.mean(tail)) if acc else None
    timing = os.path.join(cell.workdir, "timing.json")
    rec["minutes"] = (read_json(timing)["wall_seconds"] / 60 if os.path.exists(timing)
                      else None)
    return rec


def ood_columns(records: list[dict], header: Callable[[str, str], str]) -> list[tuple]:
    """AUROC and FPR@95 columns for every OOD set of these records, in first-seen order;
    `header(metric, set name)` names a column."""
    names = dict.fromkeys(k.split(":", 1)[1] for r in records for k in r
                          if k.startswith("auroc:"))
    return [(f"{m}:{n}", header(m, n), 1, 4) for n in names for m in ("auroc", "fpr95")]


def mean_std(values, scale: float, digits: int) -> str:
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


def paired(rows: dict, records: dict, status: dict, resamples: int, by_key: dict,
           comparisons) -> list[dict]:
    """The `comparisons` (row, reference row or "best", title) of one block, over the seeds
    both rows finished. "best": the baseline row with the highest mean test accuracy."""
    from cud_jax import metrics

    out = []
    finished = {k: [c for c in cells if status.get(c.workdir) == "done"]
                for k, cells in rows.items()}
    baselines = [k for k in finished if by_key[k].baseline and finished[k]]
    best = max(baselines, key=lambda k: np.mean([records[c.workdir]["accuracy"]
                                                 for c in finished[k]]), default=None)
    for row, ref, title in comparisons:
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


def _interval(r: dict) -> str:
    return (f"{r['difference']:+.4f} [{r['low']:+.4f}, {r['high']:+.4f}]"
            + (" *" if r["excludes_zero"] else ""))


PAIRED_NOTE = (
    "Paired differences: row minus reference on the same test examples, 95% percentile "
    "bootstrap over test examples (2,000 draws), per seed and pooled (mean of the per-seed "
    "differences, one draw of examples shared by all seeds; seeds held fixed). Accuracy in "
    "fractions there; NLL, Brier and ECE: negative favours the row. The best baseline is the "
    "baseline row with the highest mean TEST accuracy (a selection on the test set, so it "
    "flatters the baseline).")


@dataclasses.dataclass(frozen=True)
class GridSpec:
    """What a front end's tables show."""

    title: str
    by_key: dict  # method key -> Method
    comparisons: tuple  # (row, reference row or "best", title) of the paired intervals
    intro: str  # what its columns mean (after the shared sentence on mean +- std)
    block_title: Callable[[str, str], str]  # (dataset, student) -> heading
    columns: Callable[[str, list[dict]], list[tuple]]  # (dataset, records) -> columns


def summarise(args, spec: GridSpec, teachers: list[Cell], students: list[Cell], status: dict,
              wall: float, echo: bool = True) -> None:
    """Writes NAME.md / NAME.json (args.name, into args.results_dir or results/): per
    (dataset, student) block a table of mean +- std and the paired intervals.

    `spec.columns(dataset, records)`: the block's (record key, header, scale, decimals).
    """
    meta = provenance(wall)
    lines = [f"# {spec.title}", "", f"Command: `python {meta['command']}`  ",
             f"Commit {meta['commit']}, {meta['date']}, {meta['hardware']}, jax {meta['jax']}; "
             f"this invocation took {wall / 60:.1f} min (finished runs are read back, not "
             "rerun).", "", args.setup_note, "",
             "Each cell is mean ± std over the seeds that finished (n). ECE (TS): after "
             "temperature scaling fitted on validation. " + spec.intro + " " + PAIRED_NOTE, ""]
    payload = {"meta": meta, "blocks": [], "cells": []}
    records = {}
    for cell in students:
        if status.get(cell.workdir) == "done":
            records[cell.workdir] = student_record(cell)
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
        block_records = [records[c.workdir] for cells in rows.values() for c in cells
                         if c.workdir in records]
        cols = spec.columns(dataset, block_records)
        lines += [f"## {spec.block_title(dataset, student)}", "",
                  "| method | n | " + " | ".join(c[1] for c in cols) + " |",
                  "|---|---|" + "---|" * len(cols)]
        for key, cells in rows.items():
            done = [records[c.workdir] for c in cells if c.workdir in records]
            lines.append(f"| {spec.by_key[key].label} | {len(done)}/{len(cells)} | "
                         + " | ".join(mean_std([r.get(c[0]) for r in done], *c[2:])
                                      for c in cols) + " |")
        comps = paired(rows, records, status, args.resamples, spec.by_key, spec.comparisons)
        for comp in comps:
            lines += ["", f"**{comp['title']}** (reference: "
                      f"{spec.by_key[comp['reference']].label};"
                      f" seeds {comp['seeds']}):", "",
                      "| metric | pooled | " + " | ".join(f"seed {s}" for s in comp["seeds"])
                      + " |", "|---|---|" + "---|" * len(comp["seeds"])]
            for metric, result in comp["results"].items():
                lines.append(f"| {metric} | {_interval(result['pooled'])} | "
                             + " | ".join(_interval(r) for r in result["per_seed"]) + " |")
        if comps:
            lines += ["", "(* the interval excludes 0.)"]
        lines.append("")
        payload["blocks"].append({"dataset": dataset, "student": student, "paired": comps})
    timed = [(os.path.relpath(t.workdir, args.workroot),
              read_json(os.path.join(t.workdir, "grid_done.json"))["wall_seconds"] / 60)
             for t in teachers if is_done(t)]
    if timed:
        lines += ["Teacher runs (minutes, as recorded when they ran): "
                  + ", ".join(f"`{w}` {m:.1f}" for w, m in timed) + ".", ""]
    missing = [(os.path.relpath(c.workdir, args.workroot), s) for c in teachers + students
               if not (s := status.get(c.workdir, "missing: not reached")).startswith("done")]
    lines += ["## Missing cells", ""]
    lines += [f"- `{w}`: {s}" for w, s in missing] or ["None: every cell finished."]
    payload["missing"] = [{"cell": w, "why": s} for w, s in missing]
    markdown = "\n".join(lines) + "\n"
    if echo:
        print(markdown)
    write_results(args.name, markdown, payload, args.results_dir or RESULTS)


def config_problems(cells: list[Cell]) -> list[str]:
    """Every problem of the cells' configs (`cud_jax.config_check`), before anything runs.

    A student's teacher checkpoint is not required to exist yet when its teacher is a cell of
    the grid (it is made first).
    """
    import jax

    from cud_jax import config_check, configs

    problems = []
    for cell in cells:
        try:
            config = cell_config(cell)
            configs.validate(config)
        except ValueError as e:
            problems.append(f"{cell.workdir}: {e}")
            continue
        if cell.teacher_dir:
            config.teacher.checkpoint = None
        problems += [f"{cell.workdir}: {p}" for p in config_check.config_problems(
            config, num_devices=jax.device_count())]
    return problems


def run_and_summarise(args, spec: GridSpec, teachers: list[Cell], students: list[Cell],
                      prepare: Callable[[], dict] | None = None) -> None:
    """Checks every cell's config, runs the grid (see run_grid), rewriting the results after
    every cell it ran, then writes and prints the final tables.

    `prepare()`: work the cells need done first (e.g. converting a checkpoint), run after the
    check and only when cells will run; it returns run_grid's `unavailable`.

    Raises:
      SystemExit: one line naming the first bad config (and how many there are), before any
        cell runs.
    """
    unavailable = {}
    if not args.report_only:
        problems = config_problems(teachers + students)
        if problems:
            raise SystemExit(f"error: {len(problems)} problem(s) in the grid's configs; the "
                             f"first: {problems[0]}")
        unavailable = prepare() if prepare else {}
    start = time.perf_counter()
    status = run_grid(args, teachers, students, unavailable, after_each=lambda partial: (
        summarise(args, spec, teachers, students, partial, time.perf_counter() - start,
                  echo=False)))
    summarise(args, spec, teachers, students, status, time.perf_counter() - start)


def add_common_arguments(parser, default_seeds: str = "0,1,2") -> None:
    """The flags every grid front end takes."""
    parser.add_argument("--seeds", default=default_seeds)
    parser.add_argument("--teacher_seeds", default="per_seed", choices=("per_seed", "one"),
                        help="one teacher per loss and student seed, or seed 0's for all")
    parser.add_argument("--time_budget_min", type=float, default=0,
                        help="stop launching cells after this many minutes (0: no limit)")
    parser.add_argument("--resamples", type=int, default=2000)
    parser.add_argument("--workroot", default=None)
    parser.add_argument("--report_only", action="store_true",
                        help="run nothing; tables from the finished cells")
    parser.add_argument("--results_dir", default=None,
                        help="where NAME.md / NAME.json go (default: the repository's results/)")
