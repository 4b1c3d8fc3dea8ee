"""The README's offline text command on each text data set, timed, against issue 13's targets.

    python benchmarks/offline_text_runs.py                         # clinc150,banking77,massive,trec
    python benchmarks/offline_text_runs.py --datasets=trec --workroot=runs/offline_text

Runs, per data set, exactly what a newcomer runs first:

    python -m cud_jax.main --config=configs/<data set>.py:offline=1 --workdir=W \
        --config.data.data_dir=<shared data>/<folder>

(MiniLM-L6 DUS teacher -> CUD student of its layers 0, 2, 4; 2 + 2 epochs) and writes
`results/offline_text_cpu.md` / `.json`: wall time per stage, teacher and student test
accuracy, ECE before and after temperature scaling, the fitted temperature, and the targets
of issue 13 (<= 20 minutes per data set; teacher within 2 points of its 5-epoch accuracy
where one was measured; ECE <= 0.05 before temperature scaling). A finished data set (its
report.json) is read back, not rerun.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import REPO, provenance, write_results  # noqa: E402

SHARED = os.environ.get("CUD_JAX_SHARED_DATA", os.path.join(REPO, "..", "shared", "data"))
#: data set -> its folder under the shared data.
FOLDERS = {"clinc150": "clinc150", "banking77": "banking77", "massive": "massive_en_us",
           "trec": "trec"}
#: Test accuracy of the MiniLM-L6 DUS teacher after 5 epochs (one H100, mean of 2 seeds;
#: results/clinc150_gpu.md, results/banking77_gpu.md); none measured for the others.
FIVE_EPOCH_TEACHER = {"clinc150": 0.9600, "banking77": 0.9159}
BUDGET_MINUTES = 20.0
ECE_TARGET = 0.05


def run_one(dataset: str, workroot: str) -> dict:
    """Runs (or reads back) one data set's offline command; its numbers."""
    workdir = os.path.join(workroot, dataset)
    report_path = os.path.join(workdir, "report.json")
    timing_path = os.path.join(workdir, "offline_run_timing.json")
    if not os.path.exists(report_path):
        os.makedirs(workdir, exist_ok=True)
        argv = [sys.executable, "-m", "cud_jax.main",
                f"--config=configs/{dataset}.py:offline=1", f"--workdir={workdir}",
                f"--config.data.data_dir={os.path.abspath(os.path.join(SHARED, FOLDERS[dataset]))}"]
        print("running:", " ".join(argv), flush=True)
        start = time.perf_counter()
        with open(os.path.join(workdir, "run.log"), "w", encoding="utf-8") as log:
            code = subprocess.run(argv, cwd=REPO, stdout=log, stderr=subprocess.STDOUT).returncode
        wall = time.perf_counter() - start
        if code != 0:
            raise SystemExit(f"{dataset}: exit {code}; see {workdir}/run.log")
        with open(os.path.join(workdir, "run.log"), encoding="utf-8") as f:
            stages = {name: int(m) * 60 + int(s) for name, m, s in
                      re.findall(r"\[(teacher|student)\] done in (\d+)m(\d+)s", f.read())}
        with open(timing_path, "w", encoding="utf-8") as f:
            json.dump({"wall_seconds": wall, "stage_seconds": stages, "command": argv[1:]}, f)
    with open(report_path, encoding="utf-8") as f:
        report = json.load(f)
    with open(timing_path, encoding="utf-8") as f:
        timing = json.load(f)
    row = {"dataset": dataset, **timing}
    for model in ("teacher", "student"):
        entry = report["models"][model]
        row[model] = {"accuracy": entry["clean"]["accuracy"], "ece": entry["clean"]["ece"],
                      "nll": entry["clean"]["nll"],
                      "ece_ts": entry["temperature_scaled"]["ece"],
                      "temperature": entry["temperature_scaled"]["temperature"]}
    for ood in report.get("ood", {}).values():
        row["ood_auroc"] = {m: ood[m]["msp"]["auroc"] for m in ("teacher", "student")}
    return row


def verdicts(row: dict) -> dict:
    """Issue 13's targets for one data set: True / False, or None where not measurable."""
    reference = FIVE_EPOCH_TEACHER.get(row["dataset"])
    return {"time": row["wall_seconds"] <= BUDGET_MINUTES * 60,
            "teacher_accuracy": (None if reference is None
                                 else row["teacher"]["accuracy"] >= reference - 0.02),
            "ece": all(row[m]["ece"] <= ECE_TARGET for m in ("teacher", "student"))}


def to_markdown(meta: dict, rows: list, note: str = "") -> str:
    mark = {True: "yes", False: "**no**", None: "n/a"}
    lines = ["# The offline text command on 2 CPU cores: time, accuracy and calibration", "",
             f"Command: `{meta['command']}`  ",
             f"Commit {meta['commit']}, {meta['date']}, {meta['hardware']}; wall "
             f"{meta['wall_seconds']:.0f} s. Each row is one `python -m cud_jax.main "
             "--config=configs/<data set>.py:offline=1` run (MiniLM-L6 DUS teacher, CUD "
             "student of its layers 0, 2, 4, 2 + 2 epochs); test split; ECE 15 bins; TS = "
             "temperature scaling fitted on the validation split." + (f" {note}" if note else ""),
             "", "| data set | wall (min) | teacher / student training (min) | teacher acc | "
             "teacher ECE | teacher ECE after TS (T) | student acc | student ECE | "
             "student ECE after TS (T) | OOD AUROC t / s |", "|" + "---|" * 10]
    for r in rows:
        t, s = r["teacher"], r["student"]
        st = r["stage_seconds"]
        ood = r.get("ood_auroc")
        lines.append(
            f"| {r['dataset']} | {r['wall_seconds'] / 60:.1f} | "
            f"{st.get('teacher', 0) / 60:.1f} / {st.get('student', 0) / 60:.1f} | "
            f"{t['accuracy']:.4f} | {t['ece']:.4f} | {t['ece_ts']:.4f} ({t['temperature']:.2f})"
            f" | {s['accuracy']:.4f} | {s['ece']:.4f} | {s['ece_ts']:.4f} "
            f"({s['temperature']:.2f}) | "
            + (f"{ood['teacher']:.3f} / {ood['student']:.3f}" if ood else "–") + " |")
    lines += ["", "Issue 13's targets (teacher within 2 points of its 5-epoch accuracy: "
              + ", ".join(f"{k} {v:.4f}" for k, v in FIVE_EPOCH_TEACHER.items())
              + "; n/a where no 5-epoch run was made):", "",
              f"| data set | <= {BUDGET_MINUTES:.0f} min | teacher accuracy | "
              f"ECE <= {ECE_TARGET} (teacher and student) |", "|---|---|---|---|"]
    for r in rows:
        v = verdicts(r)
        lines.append(f"| {r['dataset']} | {mark[v['time']]} | {mark[v['teacher_accuracy']]} "
                     f"| {mark[v['ece']]} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", default="clinc150,banking77,massive,trec")
    parser.add_argument("--workroot", default=os.path.join(REPO, "runs", "offline_text"))
    parser.add_argument("--name", default="offline_text_cpu")
    parser.add_argument("--note", default="", help="a sentence added under the header")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    rows = []
    for dataset in args.datasets.split(","):
        if dataset not in FOLDERS:
            raise SystemExit(f"--datasets: unknown {dataset!r}; valid: {', '.join(FOLDERS)}")
        rows.append(run_one(dataset, args.workroot))
        meta = provenance(time.perf_counter() - start)
        write_results(args.name, to_markdown(meta, rows, args.note),
                      dict(meta, rows=rows, verdicts={r["dataset"]: verdicts(r)
                                                      for r in rows}))


if __name__ == "__main__":
    main()
