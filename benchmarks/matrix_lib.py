"""Running a matrix of distillation runs through the ordinary pipeline, and summarising it.

A matrix is a list of (teacher_loss, student_method) pairs run for several seeds. Each
teacher is trained once per (loss, seed) in its own workdir and shared by its students via
`--config.teacher.checkpoint`; the `ce` student method trains without a teacher. Every run
is `cud_jax.train.pipeline.run`, the code behind `python -m cud_jax.main`, so each workdir
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
from cud_jax.train import pipeline


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
                    start = time.perf_counter()
                    pipeline.run(teacher_config, teacher_dir)
                    teacher_seconds[teacher_loss] = time.perf_counter() - start
                config.teacher.checkpoint = os.path.abspath(
                    os.path.join(teacher_dir, "checkpoints", "teacher"))
            start = time.perf_counter()
            report_path = os.path.join(workdir, "report.json")
            if os.path.exists(report_path) and not rerun_reports:
                with open(report_path, encoding="utf-8") as f:  # a finished run: reuse it
                    report = json.load(f)
            else:
                report = pipeline.run(config, workdir)
            runs.append({"seed": seed, "teacher_loss": teacher_loss, "method": method,
                         "workdir": os.path.relpath(workdir, REPO),
                         "teacher_seconds": teacher_seconds.get(teacher_loss),
                         "student_seconds": time.perf_counter() - start, "report": report})
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
    timing = [f"| {r['seed']} | {r['teacher_loss']} | {r['method']} | "
              f"{(r['teacher_seconds'] or 0) / 60:.1f} | {r['student_seconds'] / 60:.1f} |"
              for r in runs]
    lines = [f"# {title}", "", f"Command: `python {meta['command']}`  ",
             f"Commit {meta['commit']}, {meta['date']}, {meta['hardware']}, jax {meta['jax']}, "
             f"total wall time {wall / 60:.1f} min.", "", setup, "", table.strip(), "",
             "W-Clip firing rate of the teachers on test inputs (mean over seeds): "
             + ", ".join(f"{loss} {np.mean([v for _, v in vals]):.3f}"
                         for loss, vals in fire.items()) + ".", "",
             "Wall time per run (minutes; the teacher is counted once per loss and seed, with "
             "its first student; student time includes evaluation):", "",
             "| seed | teacher loss | method | teacher | student + eval |", "|---|---|---|---|---|",
             *timing]
    markdown = "\n".join(lines) + "\n"
    print(markdown)
    write_results(name, markdown, {"meta": meta, "runs": runs})
