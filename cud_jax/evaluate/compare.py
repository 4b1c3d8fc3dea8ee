"""Compare runs: one table of mean ± std per method and metric, best in bold.

    python -m cud_jax.compare runs/*/ --out results/cifar10.md

Reads `report.json` and `config.json` from every workdir given, groups students by
(teacher loss, student method) and teachers by teacher loss (each (loss, seed) counted once,
since students of one teacher share it), and writes a markdown table (and a CSV beside it,
same name with .csv). Workdirs without a report are skipped with a note.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys

import numpy as np

# (column, path into a model's report entry, True when higher is better)
COLUMNS = (
    ("acc", ("clean", "accuracy"), True),
    ("NLL", ("clean", "nll"), False),
    ("Brier", ("clean", "brier"), False),
    ("ECE", ("clean", "ece"), False),
    ("aECE", ("clean", "adaptive_ece"), False),
    ("ECE (TS)", ("temperature_scaled", "ece"), False),
    ("cAcc", ("shift", "mean", "accuracy"), True),
    ("cNLL", ("shift", "mean", "nll"), False),
    ("cECE", ("shift", "mean", "ece"), False),
)


def short_set_name(name: str) -> str:
    """`images:/a/b/omniglot.zip` -> `omniglot`, `noise:uniform` -> `uniform`."""
    base = name.rstrip("/").split("/")[-1].split(":")[-1]
    for suffix in (".tar.gz", ".tgz", ".zip", ".tar"):
        base = base[: -len(suffix)] if base.endswith(suffix) else base
    return base


def ood_columns(sets) -> tuple:
    """Two columns per OOD set: MSP AUROC (higher is better) and FPR at 95% TPR (lower)."""
    short = {s: short_set_name(s) for s in sets}
    return tuple(col for s in sets for col in (
        (f"AUROC {short[s]}", ("ood", s, "auroc"), True),
        (f"FPR95 {short[s]}", ("ood", s, "fpr_at_95_tpr"), False)))


def _load(workdir: str):
    paths = [os.path.join(workdir, n) for n in ("report.json", "config.json")]
    if not all(os.path.exists(p) for p in paths):
        return None
    with open(paths[0], encoding="utf-8") as f:
        report = json.load(f)
    with open(paths[1], encoding="utf-8") as f:
        config = json.load(f)
    return report, config


def _model_view(report: dict, role: str) -> dict | None:
    """The model's entry with its shift means and each OOD set's MSP numbers attached."""
    entry = report["models"].get(role)
    if entry is None:
        return None
    view = dict(entry)
    if "shift" in report and role in report["shift"]["models"]:
        view["shift"] = report["shift"]["models"][role]
    view["ood"] = {set_name: by_model[role]["msp"]
                   for set_name, by_model in report.get("ood", {}).items() if role in by_model}
    return view


def _get(view: dict, path) -> float | None:
    node = view
    for key in path:
        if not isinstance(node, dict) or key not in node:
            return None
        node = node[key]
    return float(node)


def collect(workdirs) -> tuple[dict, dict, list[str]]:
    """Groups model views: ({(loss, method): [student views]}, {loss: [teacher views]})."""
    students, teachers, skipped, seen_teachers = {}, {}, [], set()
    for workdir in workdirs:
        loaded = _load(workdir)
        if loaded is None:
            skipped.append(workdir)
            continue
        report, config = loaded
        loss, method = report["teacher_loss"], report["student_method"]
        student = _model_view(report, "student")
        if method == "ce":
            loss = None  # trained without a teacher
        if student is not None:
            students.setdefault((loss, method), []).append(student)
        teacher = _model_view(report, "teacher") if loss is not None else None
        key = (loss, config.get("seed"), config["teacher"].get("checkpoint") or workdir)
        if teacher is not None and key not in seen_teachers:
            seen_teachers.add(key)
            teachers.setdefault(loss, []).append(teacher)
    return students, teachers, skipped


def _stats(views, path):
    values = [v for v in (_get(view, path) for view in views) if v is not None]
    return (float(np.mean(values)), float(np.std(values)), len(values)) if values else None


def table(groups: dict, label, columns) -> tuple[list[str], list[list]]:
    """Markdown lines and CSV rows for one group dictionary."""
    names = [c[0] for c in columns]
    stats = {key: [_stats(views, path) for _, path, _ in columns] for key, views in groups.items()}
    best = {}
    for i, (_, _, higher) in enumerate(columns):
        means = [s[i][0] for s in stats.values() if s[i] is not None]
        if means:
            best[i] = max(means) if higher else min(means)
    lines = ["| " + " | ".join(["run", "n"] + names) + " |", "|" + "---|" * (len(names) + 2)]
    rows = []
    for key, cells in stats.items():
        n = max((c[2] for c in cells if c is not None), default=0)
        shown = []
        for i, cell in enumerate(cells):
            if cell is None:
                shown.append("–")
                continue
            scale = 100 if columns[i][0] in ("acc", "cAcc") else 1
            text = (f"{cell[0] * scale:.2f} ± {cell[1] * scale:.2f}" if scale == 100
                    else f"{cell[0]:.4f} ± {cell[1]:.4f}")
            shown.append(f"**{text}**" if len(stats) > 1 and cell[0] == best.get(i) else text)
        lines.append("| " + " | ".join([label(key), str(n)] + shown) + " |")
        rows.append([label(key), n] + [("" if c is None else f"{c[0]:.6f}") for c in cells]
                    + [("" if c is None else f"{c[1]:.6f}") for c in cells])
    return lines, rows


def compare(workdirs, out: str | None = None) -> str:
    """Builds the comparison markdown (and writes it, plus a CSV, when `out` is given)."""
    students, teachers, skipped = collect(workdirs)
    if not students and not teachers:
        raise SystemExit("No report.json found in the given workdirs.")
    ood_sets = sorted({s for views in (*students.values(), *teachers.values()) for v in views
                       for s in v["ood"]})
    columns = COLUMNS + ood_columns(ood_sets)
    s_lines, s_rows = table(students, lambda k: f"{k[1]} student ({k[0] or 'no'} teacher)",
                            columns)
    t_lines, t_rows = table(teachers, lambda k: f"{k} teacher", columns)
    text = "\n".join(
        ["# Comparison", "", f"{len(workdirs) - len(skipped)} runs. Mean ± std over runs "
         "(n = runs with the metric); accuracies in %; best mean of each column in bold. "
         "ECE (TS): after temperature scaling fitted on validation; cAcc/cNLL/cECE: means "
         "over corruptions and severities; OOD: maximum softmax probability on "
         f"{', '.join(short_set_name(s) for s in ood_sets) or 'no OOD set'}.", "",
         "## Students", ""] + s_lines
        + ["", "## Teachers", ""] + t_lines
        + ([""] + [f"Skipped (no report): {w}" for w in skipped] if skipped else [])) + "\n"
    if out:
        os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
        with open(out, "w", encoding="utf-8") as f:
            f.write(text)
        header = (["run", "n"] + [f"{c[0]} mean" for c in columns]
                  + [f"{c[0]} std" for c in columns])
        with open(os.path.splitext(out)[0] + ".csv", "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(header)
            writer.writerows(s_rows + t_rows)
    return text


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("workdirs", nargs="+")
    parser.add_argument("--out", default=None, help="markdown file to write (+ .csv)")
    args = parser.parse_args(argv)
    print(compare(args.workdirs, args.out))


if __name__ == "__main__":
    main(sys.argv[1:])
