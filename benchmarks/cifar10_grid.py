"""Issue 13's CIFAR-10 evidence grid: pairs x CE/DUS teachers x CE/KD/DKD/CUD students x seeds.

    # the grid the issue asks for (a GPU: hours per 240-epoch run; --epochs=N keeps the shape)
    python benchmarks/cifar10_grid.py --epochs=240 --time_budget_min=600
    # a reduced CPU grid (say so wherever it is quoted)
    python benchmarks/cifar10_grid.py --pairs=resnet20-resnet8 --epochs=6 --train_subset=10000
    python benchmarks/cifar10_grid.py --smoke                 # 1 teacher + 3 students, minutes
    python benchmarks/cifar10_grid.py --report_only ...       # tables from finished runs

Every cell is one `python -m cud_jax.main --config=configs/cifar10.py:pair=...,epochs=N` run
on the CIFAR-10 JPEG tarball (`--data`, by default the shared data's
cifar10_jpeg/cifar10-jpeg.tar.gz): the CIFAR recipe (SGD, batch 64, crop + flip, KD
temperature 4, DKD's per-pair beta) with its 240-epoch schedule scaled to `--epochs`. Shift is
the corruption suite (`--severities`, on `--shift_subset` test images); OOD is uniform noise
and Omniglot characters (the only OOD sets obtainable offline; `--ood_sets` for others).

Rows per pair: the CE student; KD and DKD from the CE teacher (baselines); KD from the DUS
teacher, W-Clip on the CE teacher and DKD from the DUS teacher (ablations); CUD (DUS teacher
+ W-Clip). Teachers are trained once per (pair, loss, seed) and shared by their students.
Running, resuming, the time budget, per-example predictions and the paired intervals are
benchmarks/grid_lib.py's (shared with the text grid, evidence_grid.py).
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import REPO  # noqa: E402
from grid_lib import (Cell, GridSpec, Method, add_common_arguments,  # noqa: E402
                      ood_columns, run_and_summarise)

SHARED = os.environ.get("CUD_JAX_SHARED_DATA", os.path.join(REPO, "..", "shared", "data"))
DEFAULT_DATA = os.path.join(SHARED, "cifar10_jpeg", "cifar10-jpeg.tar.gz")
DEFAULT_OMNIGLOT = os.path.join(SHARED, "omniglot_small", "images_background_small1.zip")
#: The issue's pairs (teacher-student, as configs/cifar100.py's `pair=` takes them).
PAIRS = ("resnet56-resnet20", "resnet32x4-resnet8x4")
#: teacher key -> config `teacher.loss`.
TEACHERS = {"ce": "ce", "dus": "dus"}

METHODS = (
    Method("ce", "CE student", None, "ce", baseline=True),
    Method("kd_ce", "KD (CE teacher)", "ce", "kd", baseline=True),
    Method("dkd_ce", "DKD (CE teacher)", "ce", "dkd", baseline=True),
    Method("wclip_ce", "W-Clip on the CE teacher [ablation]", "ce", "cud"),
    Method("kd_dus", "KD (DUS teacher) [ablation: no W-Clip]", "dus", "kd"),
    Method("dkd_dus", "DKD (DUS teacher)", "dus", "dkd"),
    Method("cud", "CUD (DUS teacher + W-Clip)", "dus", "cud"),
)
BY_KEY = {m.key: m for m in METHODS}
#: The paired comparisons of the tables: (row, reference row or "best", title).
COMPARISONS = (("cud", "kd_ce", "CUD - KD (CE teacher)"),
               ("cud", "kd_dus", "CUD - KD (DUS teacher): what W-Clip adds"),
               ("cud", "best", "CUD - best baseline"))
#: (record key, header, scale, decimals); accuracies in %. OOD columns are added per set.
COLUMNS = (("accuracy", "acc", 100, 2), ("nll", "NLL", 1, 4), ("brier", "Brier", 1, 4),
           ("ece", "ECE", 1, 4), ("adaptive_ece", "aECE", 1, 4), ("ece_ts", "ECE (TS)", 1, 4),
           ("shift_accuracy", "cAcc", 100, 2), ("shift_nll", "cNLL", 1, 4),
           ("shift_ece", "cECE", 1, 4))
TRAILING = (("wclip_train", "W-Clip train", 1, 4), ("wclip_test", "W-Clip test", 1, 4),
            ("teacher_accuracy", "teacher acc", 100, 2),
            ("teacher_train_accuracy", "teacher train acc", 100, 2),
            ("minutes", "min/run", 1, 1))


def _overrides(args, seed: int) -> dict:
    out = {"seed": seed, "data.name": "image_folder",
           "data.data_dir": os.path.abspath(args.data), "eval.corruptions": args.corruptions,
           "eval.severities": args.severities, "eval.shift_subset": args.shift_subset,
           "eval.ood_sets": args.ood_sets, "eval.ood_subset": args.ood_subset,
           "eval.cache_dir": os.path.join(args.workroot, "cache", "corruptions"),
           "eval.plots": False}
    if args.train_subset:
        out["data.train_subset"] = args.train_subset
    if args.val_size:
        out["data.val_size"] = args.val_size
    return out


def build_grid(args) -> tuple[list[Cell], list[Cell]]:
    """(teacher cells, student cells) of the requested grid, in run order."""
    teachers, students = {}, []
    methods = [BY_KEY[k] for k in args.methods.split(",")]
    for seed in (int(s) for s in args.seeds.split(",")):
        teacher_seed = seed if args.teacher_seeds == "per_seed" else 0
        for pair in args.pairs.split(","):
            for m in methods:
                overrides = _overrides(args, seed)
                teacher_dir = None
                if m.teacher is not None:
                    teacher_dir = os.path.join(args.workroot, "cifar10", pair,
                                               f"teacher_{m.teacher}_s{teacher_seed}")
                    if teacher_dir not in teachers:
                        teachers[teacher_dir] = Cell(
                            "cifar10", teacher_dir, "cifar10",
                            f"pair={pair},method=kd,teacher_loss={TEACHERS[m.teacher]},"
                            f"epochs={args.epochs:g}",
                            {**_overrides(args, teacher_seed), "stage": "teacher"}, "teacher",
                            seed=teacher_seed)
                    overrides["teacher.checkpoint"] = os.path.join(
                        teacher_dir, "checkpoints", "teacher")
                arg = (f"pair={pair},method={m.method},"
                       f"teacher_loss={TEACHERS[m.teacher or 'ce']},epochs={args.epochs:g}")
                students.append(Cell("cifar10", os.path.join(args.workroot, "cifar10", pair,
                                                             f"{m.key}_s{seed}"),
                                     "cifar10", arg, overrides, "student", pair, m, seed,
                                     teacher_dir))
    return list(teachers.values()), students


def _columns(dataset: str, records: list[dict]) -> list[tuple]:
    ood = ood_columns(records, lambda metric, name: f"{metric.upper()} "
                                                    f"{os.path.basename(name)}")
    return list(COLUMNS) + ood + list(TRAILING)


def grid_spec(smoke: bool = False) -> GridSpec:
    """The CIFAR-10 grid's tables."""
    return GridSpec(
        title=("SMOKE TEST of the CIFAR-10 grid (not evidence)" if smoke
               else "Does CUD help? The CIFAR-10 evidence grid (issue 13)"),
        by_key=BY_KEY, comparisons=COMPARISONS, columns=_columns,
        intro="cAcc / cNLL / cECE: means over the corruptions and severities. AUROC / FPR95: "
              "maximum softmax probability, test images against each OOD set. W-Clip train / "
              "test: the fraction of training / test examples on which W-Clip fires on the "
              "teacher's probabilities. Teacher train acc: mean logged batch accuracy over "
              "the last 10% of teacher training (augmented images).",
        block_title=lambda dataset, pair: f"CIFAR-10, {pair.replace('-', ' -> ')}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pairs", default=",".join(PAIRS))
    parser.add_argument("--methods", default=",".join(m.key for m in METHODS))
    add_common_arguments(parser)
    parser.add_argument("--epochs", type=float, default=240.0,
                        help="per stage; the 240-epoch schedule's shape is kept")
    parser.add_argument("--data", default=DEFAULT_DATA,
                        help="CIFAR-10 as an image-folder tarball or folder (train/, test/)")
    parser.add_argument("--train_subset", type=int, default=0, help="0: all")
    parser.add_argument("--val_size", type=int, default=0, help="0: the recipe's 5,000")
    parser.add_argument("--corruptions", default="all")
    parser.add_argument("--severities", default="1,2,3,4,5")
    parser.add_argument("--shift_subset", type=int, default=2000)
    parser.add_argument("--ood_sets", default=None,
                        help="default: uniform noise and the shared data's Omniglot zip")
    parser.add_argument("--ood_subset", type=int, default=2000)
    parser.add_argument("--name", default=None, help="results/NAME.md (default cifar10_grid)")
    parser.add_argument("--note", default="", help="a sentence for the results file")
    parser.add_argument("--smoke", action="store_true",
                        help="a plumbing check: resnet20 -> resnet8 on 1,000 images, 1 epoch, "
                             "CE student, KD (DUS teacher) and CUD, seed 0")
    args = parser.parse_args()
    if args.smoke:
        args.pairs, args.methods = "resnet20-resnet8", "ce,kd_dus,cud"
        args.seeds, args.teacher_seeds = "0", "one"
        args.epochs, args.train_subset, args.val_size = 1.0, 1000, 500
        args.severities, args.shift_subset, args.ood_subset = "3", 100, 100
        args.name = args.name or "cifar10_grid_smoke_cpu"
    args.name = args.name or "cifar10_grid"
    args.workroot = os.path.abspath(args.workroot or os.path.join(REPO, "runs", args.name))
    args.ood_sets = args.ood_sets or f"noise:uniform,images:{os.path.abspath(DEFAULT_OMNIGLOT)}"
    bad = [k for k in args.methods.split(",") if k not in BY_KEY]
    if bad:
        parser.error(f"unknown methods {bad}; choose from {', '.join(BY_KEY)}.")
    if not args.report_only and not os.path.exists(args.data):
        parser.error(f"no CIFAR-10 at {args.data}; pass --data=PATH (a tarball or folder "
                     "with train/<class>/*.jpg and test/<class>/*.jpg).")
    reduced = ", ".join(f"{k} {v}" for k, v in (
        ("training subset", args.train_subset), ("validation", args.val_size)) if v)
    args.setup_note = (
        ("**SMOKE TEST: a plumbing check, NOT evidence about CUD.** " if args.smoke else "")
        + f"Recipe: configs/cifar10.py on the CIFAR-10 JPEG images, {args.epochs:g} epochs per "
        "stage with the 240-epoch schedule's shape (lr x0.1 at 62.5/75/87.5%, DKD warm-up "
        "over the first 1/12), batch 64" + (f"; {reduced}" if reduced else "")
        + f". Shift: corruptions `{args.corruptions}` at severities {args.severities} on "
        f"{args.shift_subset} test images. OOD: {args.ood_subset} images of each of "
        f"`{args.ood_sets}` (paths shortened to their file names in the headers). Teachers: "
        + ("one per pair, loss and seed" if args.teacher_seeds == "per_seed"
           else "one per pair and loss (seed 0), shared by all student seeds")
        + "." + (f" {args.note}" if args.note else ""))
    teachers, students = build_grid(args)
    run_and_summarise(args, grid_spec(args.smoke), teachers, students)


if __name__ == "__main__":
    main()
