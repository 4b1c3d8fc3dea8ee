"""Running a matrix of distillation runs through the ordinary pipeline, and summarising it.

A matrix is a list of (teacher_loss, student_method) pairs run for several seeds. Each
teacher is trained once per (loss, seed) in its own workdir and shared by its students via
`--config.teacher.checkpoint`; the `ce` student method trains without a teacher. Every run
is `cud_jax.pipeline.run`, the code behind `python -m cud_jax.main`, so each workdir
holds the usual report; rerunning the script resumes unfinished runs from their checkpoints.
"""

from __future__ import annotations

import json
import os
import time
from typing import Callable

import numpy as np

from _common import REPO, provenance, write_results
from cud_jax import compare
from cud_jax import pipeline


def _timed(workdir: str, fn) -> float | None:
    """Runs fn and returns the run's wall time, recorded in WORKDIR/timing.json.

    Only a call that trained (metrics.jsonl grew) is timed: one that found everything done
    returns what was recorded when the work happened (None if nothing was).
    """
    log = os.path.join(workdir, "metrics.jsonl")
    size = lambda: os.path.getsize(log) if os.path.exists(log) else 0  # noqa: E731
    before, start = size(), time.perf_counter()
    fn()
    if size() == before:
        return _recorded_seconds(workdir)
    seconds = time.perf_counter() - start
    with open(os.path.join(workdir, "timing.json"), "w", encoding="utf-8") as f:
        json.dump({"wall_seconds": seconds}, f)
    return seconds


def _recorded_seconds(workdir: str) -> float | None:
    path = os.path.join(workdir, "timing.json")
    if not os.path.exists(path):
        return None
    with open(path, encoding="utf-8") as f:
        return json.load(f)["wall_seconds"]


def run_matrix(pairs, seeds, workroot: str, make_config: Callable, *,
               rerun_reports: bool = False) -> list[dict]:
    """Runs every (teacher_loss, method) pair for every seed; returns one record per student.

    `make_config(seed, teacher_loss, method)` returns the run's ConfigDict. A workdir that
    already holds a report is read, not rerun, unless `rerun_reports`.
    """
    runs = []
    for seed in seeds:
        teacher_seconds = {}
        for teacher_loss, method in pairs:
            workdir = os.path.join(workroot, f"seed{seed}", f"{teacher_loss}_{method}")
            config = make_config(seed, teacher_loss, method)
            if method != "ce":
                teacher_dir = os.path.join(workroot, f"seed{seed}", f"teacher_{teacher_loss}")
                if teacher_loss not in teacher_seconds:
                    teacher_config = make_config(seed, teacher_loss, method)
                    teacher_config.stage = "teacher"
                    teacher_seconds[teacher_loss] = _timed(
                        teacher_dir, lambda: pipeline.run(teacher_config, teacher_dir))
                config.teacher.checkpoint = os.path.abspath(
                    os.path.join(teacher_dir, "checkpoints", "teacher"))
            report_path = os.path.join(workdir, "report.json")
            if os.path.exists(report_path) and not rerun_reports:
                with open(report_path, encoding="utf-8") as f:  # a finished run: reuse it
                    report = json.load(f)
                seconds = _recorded_seconds(workdir)
            else:
                holder = {}
                seconds = _timed(workdir, lambda: holder.setdefault(
                    "report", pipeline.run(config, workdir)))
                report = holder["report"]
            runs.append({"seed": seed, "teacher_loss": teacher_loss, "method": method,
                         "workdir": os.path.relpath(workdir, REPO),
                         "teacher_seconds": teacher_seconds.get(teacher_loss),
                         "student_seconds": seconds, "report": report})
            accuracy = report["models"]["student"]["clean"]["accuracy"]
            print(json.dumps({k: runs[-1][k] for k in ("seed", "teacher_loss", "method")}),
                  f"student accuracy {accuracy:.4f}", flush=True)
    return runs


def summarise(name: str, title: str, setup: str, runs: list[dict], wall: float) -> None:
    """Writes results/NAME.md (comparison tables + provenance) and results/NAME.json."""
    meta = provenance(wall)
    workdirs = sorted({os.path.join(REPO, r["workdir"]) for r in runs})
    table = compare.compare(workdirs).split("\n", 1)[1]  # drop its title
    fire = {}
    for r in runs:
        teacher = r["report"]["models"].get("teacher")
        if teacher and "wclip_fire_rate_test" in teacher:
            fire.setdefault(r["teacher_loss"], set()).add(
                (r["seed"], teacher["wclip_fire_rate_test"]))
    minutes = lambda s: "n/a" if s is None else f"{s / 60:.1f}"  # noqa: E731
    timing = [f"| {r['seed']} | {r['teacher_loss']} | {r['method']} | "
              f"{minutes(r['teacher_seconds'])} | {minutes(r['student_seconds'])} |"
              for r in runs]
    lines = [f"# {title}", "", f"Command: `python {meta['command']}`  ",
             f"Commit {meta['commit']}, {meta['date']}, {meta['hardware']}, jax {meta['jax']}; "
             f"this invocation took {wall / 60:.1f} min (finished runs are read back, not "
             "rerun).", "", setup, "", table.strip(), "",
             "W-Clip firing rate of the teachers on test inputs (mean over seeds): "
             + ", ".join(f"{loss} {np.mean([v for _, v in vals]):.3f}"
                         for loss, vals in fire.items()) + ".", "",
             "Wall time per run in minutes, as recorded when it ran (the teacher once per loss "
             "and seed, with its first student; student time includes evaluation; n/a: not "
             "recorded, runs made before timing was recorded):", "",
             "| seed | teacher loss | method | teacher | student + eval |", "|---|---|---|---|---|",
             *timing]
    markdown = "\n".join(lines) + "\n"
    print(markdown)
    write_results(name, markdown, {"meta": meta, "runs": runs})
