"""CIFAR-10 distillation matrix: {CE, DUS} teachers x {KD, CUD} students x seeds.

    python benchmarks/cifar10_matrix.py --data=PATH/cifar10-jpeg.tar.gz \
        --workroot=runs/cifar10_cpu --name=cifar10_cpu

Every run goes through the ordinary pipeline (the code behind `python -m cud_jax.main`) and
writes its own report; the script collects them into results/NAME.md / .json. Defaults are
sized for 2 CPU cores: small models (resnet20 -> resnet8), a training subset, a short
schedule, shift on a 1,000-image subset at severities 1/3/5. On a GPU pass
`--teacher=resnet32x4 --student=resnet8x4 --train_subset=0 --epochs=240` for the real recipe.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

from cud_jax.parallel.host_devices import emulate_cpu_devices

emulate_cpu_devices(8)  # before JAX starts; no effect on GPU/TPU backends

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import REPO, load_config  # noqa: E402
from matrix_lib import run_matrix, summarise  # noqa: E402


SHARED = os.environ.get("CUD_JAX_SHARED_DATA", os.path.join(REPO, "..", "shared", "data"))
DEFAULT_DATA = os.path.join(SHARED, "cifar10_jpeg", "cifar10-jpeg.tar.gz")
PAIRS = (("ce", "kd"), ("ce", "cud"), ("dus", "kd"), ("dus", "cud"))


def make_config(args, seed: int, teacher_loss: str, method: str):
    c = load_config("cifar10", f"pair={args.teacher}-{args.student},method={method},"
                    f"teacher_loss={teacher_loss}")
    c.data.name = "image_folder"
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


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default=DEFAULT_DATA)
    parser.add_argument("--teacher", default="resnet20")
    parser.add_argument("--student", default="resnet8")
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
    parser.add_argument("--rerun_reports", action="store_true")
    parser.add_argument("--note", default="", help="a line appended to the set-up text")
    args = parser.parse_args()
    if not os.path.exists(args.data):
        sys.exit(f"CIFAR-10 images not found at {args.data}; pass --data=PATH to "
                 "cifar10-jpeg.tar.gz (train/<class>/*.jpg, test/<class>/*.jpg).")
    start = time.perf_counter()
    runs = run_matrix(PAIRS, [int(s) for s in args.seeds.split(",")], args.workroot,
                      lambda *a: make_config(args, *a), rerun_reports=args.rerun_reports)
    setup = (f"Data: JPEG re-encoded CIFAR-10 (quality about 75, so accuracies run below "
             f"published CIFAR-10 numbers); {args.train_subset or 'all'} training images, "
             f"{args.val_size} held out for validation and temperature fitting, the full "
             f"10,000-image test set. Models {args.teacher} -> {args.student}; {args.epochs} "
             f"epochs per stage, batch {args.batch_size}, SGD momentum 0.9, lr 0.05 x0.1 at 50% "
             f"and 75%, weight decay 5e-4, crop+flip, KD temperature 4. A short CPU schedule, "
             f"far from the 240-epoch recipe. Shift: 14 corruptions at severities "
             f"{args.severities} on {args.shift_subset} test images. OOD: uniform noise and "
             f"Omniglot characters ({args.ood_subset} each; SVHN and CIFAR-100 are not available "
             f"offline and were skipped). {args.note}").strip()
    summarise(args.name, f"CIFAR-10 distillation on CPU: {args.teacher} -> {args.student}",
              setup, runs, time.perf_counter() - start)


if __name__ == "__main__":
    main()
