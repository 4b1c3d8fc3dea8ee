"""CIFAR-10 distillation matrix: {CE, DUS} teachers x {KD, CUD} students x seeds.

    python benchmarks/cifar10_matrix.py --data=PATH/cifar10-jpeg.tar.gz \
        --workroot=runs/cifar10_cpu --name=cifar10_cpu

Each teacher is trained once per (loss, seed) and shared by its students through
`--config.teacher.checkpoint`; every run goes through the ordinary pipeline (the same code as
`python -m cud_jax.main`) and writes its own report. The script then collects the reports into
results/NAME.md / .json (mean +- std over seeds). Defaults are sized for 2 CPU cores: small
models (resnet20 -> resnet8), a training subset and a short schedule. On a GPU pass
`--teacher=resnet32x4 --student=resnet8x4 --train_subset=0 --epochs=240` for the real recipe.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

from cud_jax.host_devices import emulate_cpu_devices  # noqa: E402

emulate_cpu_devices(8)  # no-op on GPU/TPU backends

import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import REPO, provenance, write_results  # noqa: E402

from cud_jax.train import pipeline  # noqa: E402
from cud_jax.train.config_base import cifar_config  # noqa: E402

DEFAULT_DATA = os.path.join(os.environ.get("CUD_JAX_SHARED_DATA",
                                           os.path.join(REPO, "..", "shared", "data")),
                            "cifar10_jpeg", "cifar10-jpeg.tar.gz")


def make_config(args, seed: int, teacher_loss: str, method: str):
    c = cifar_config(f"pair={args.teacher}-{args.student},method={method},"
                     f"teacher_loss={teacher_loss}", "image_folder")
    c.seed = seed
    c.data.data_dir = os.path.abspath(args.data)
    c.data.val_size = args.val_size
    c.data.train_subset = args.train_subset or None
    c.data.source_kwargs = {"cache_dir": os.path.join(os.path.abspath(args.workroot), "cache")}
    milestones = tuple(int(args.epochs * f) for f in (0.5, 0.75))
    for stage in (c.teacher, c.student):
        stage.epochs = args.epochs
        stage.batch_size = args.batch_size
        stage.lr_milestones = milestones
    c.log_every = 50
    c.checkpoint.every_steps = 500
    c.eval.corruptions = "all"
    c.eval.severities = args.severities
    c.eval.shift_subset = args.shift_subset
    c.eval.cache_dir = os.path.join(os.path.abspath(args.workroot), "cache", "corruptions")
    omniglot = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(args.data))),
                            "omniglot_small", "images_background_small1.zip")
    c.eval.ood_sets = f"tfds:svhn_cropped,cifar100,noise:uniform,images:{omniglot}"
    c.eval.ood_subset = args.ood_subset
    return c


def run_all(args) -> list[dict]:
    runs = []
    for seed in map(int, args.seeds.split(",")):
        for teacher_loss in args.teacher_losses.split(","):
            teacher_dir = os.path.join(args.workroot, f"seed{seed}", f"teacher_{teacher_loss}")
            config = make_config(args, seed, teacher_loss, "kd")
            config.stage = "teacher"
            start = time.perf_counter()
            pipeline.run(config, teacher_dir)
            teacher_seconds = time.perf_counter() - start
            for method in args.methods.split(","):
                workdir = os.path.join(args.workroot, f"seed{seed}", f"{teacher_loss}_{method}")
                config = make_config(args, seed, teacher_loss, method)
                config.teacher.checkpoint = os.path.abspath(
                    os.path.join(teacher_dir, "checkpoints", "teacher"))
                start = time.perf_counter()
                report = pipeline.run(config, workdir)
                runs.append({"seed": seed, "teacher_loss": teacher_loss, "method": method,
                             "workdir": os.path.relpath(workdir, REPO), "report": report,
                             "teacher_train_seconds": teacher_seconds,
                             "student_seconds": time.perf_counter() - start})
                print(json.dumps({k: runs[-1][k] for k in ("seed", "teacher_loss", "method")}),
                      "student acc", report["models"]["student"]["clean"]["accuracy"], flush=True)
    return runs


METRICS = ("accuracy", "nll", "brier", "ece", "adaptive_ece")


def _cell(values, pct=False):
    values = np.asarray(values, float) * (100 if pct else 1)
    return f"{values.mean():.2f} ± {values.std():.2f}" if pct else \
        f"{values.mean():.4f} ± {values.std():.4f}"


def summarise(runs, args, wall):
    meta = provenance(wall)
    lines = [f"# CIFAR-10 distillation on CPU: {args.teacher} -> {args.student}", "",
             f"Command: `python {meta['command']}`  ",
             f"Commit {meta['commit']}, {meta['date']}, {meta['hardware']}, jax {meta['jax']}, "
             f"wall {wall / 60:.1f} min.", "",
             f"Data: the JPEG re-encoded CIFAR-10 (quality about 75; accuracies run below "
             f"published CIFAR-10 numbers), training subset {args.train_subset or 'all'} "
             f"images, {args.val_size} held out for validation/temperature fitting, full "
             f"10,000-image test set. Schedule: {args.epochs} epochs per stage, batch "
             f"{args.batch_size}, SGD lr 0.05 x0.1 at 50% and 75%, crop+flip. Seeds "
             f"{args.seeds}. This is a short CPU schedule, far from the 240-epoch recipe.", "",
             "Mean ± std over seeds; accuracy in %.", "",
             "| teacher loss | model | " + " | ".join(METRICS) + " | ECE after TS |",
             "|---|---|" + "---|" * (len(METRICS) + 1)]
    groups = {}
    for r in runs:
        groups.setdefault((r["teacher_loss"], r["method"]), []).append(r["report"])
    teachers = {}
    for (loss, _), reports in groups.items():
        teachers.setdefault(loss, reports)
    for loss, reports in teachers.items():
        rows = [rep["models"]["teacher"] for rep in reports]
        lines.append(f"| {loss} | teacher ({rows[0]['model']}) | "
                     + " | ".join(_cell([x["clean"][m] for x in rows], m == "accuracy")
                                  for m in METRICS)
                     + f" | {_cell([x['temperature_scaled']['ece'] for x in rows])} |")
    for (loss, method), reports in groups.items():
        rows = [rep["models"]["student"] for rep in reports]
        lines.append(f"| {loss} | {method} student ({rows[0]['model']}) | "
                     + " | ".join(_cell([x["clean"][m] for x in rows], m == "accuracy")
                                  for m in METRICS)
                     + f" | {_cell([x['temperature_scaled']['ece'] for x in rows])} |")
    lines += ["", "W-Clip firing rate of each teacher on test inputs: " + ", ".join(
        f"{loss} {np.mean([rep['models']['teacher']['wclip_fire_rate_test'] for rep in reps]):.3f}"
        for loss, reps in teachers.items()) + ".", ""]
    markdown = "\n".join(lines) + "\n"
    print(markdown)
    write_results(args.name, markdown, {"meta": meta, "args": vars(args), "runs": runs})


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default=DEFAULT_DATA)
    parser.add_argument("--teacher", default="resnet20")
    parser.add_argument("--student", default="resnet8")
    parser.add_argument("--teacher_losses", default="ce,dus")
    parser.add_argument("--methods", default="kd,cud")
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--train_subset", type=int, default=10000)
    parser.add_argument("--val_size", type=int, default=2000)
    parser.add_argument("--epochs", type=float, default=6)
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--severities", default="1,3,5")
    parser.add_argument("--shift_subset", type=int, default=1000)
    parser.add_argument("--ood_subset", type=int, default=2000)
    parser.add_argument("--workroot", default=os.path.join(REPO, "runs", "cifar10_cpu"))
    parser.add_argument("--name", default="cifar10_cpu")
    args = parser.parse_args()
    if not os.path.exists(args.data):
        sys.exit(f"CIFAR-10 images not found at {args.data}; pass --data=PATH to "
                 "cifar10-jpeg.tar.gz (or an official cifar-10 archive with a matching loader).")
    start = time.perf_counter()
    runs = run_all(args)
    summarise(runs, args, time.perf_counter() - start)


if __name__ == "__main__":
    main()
