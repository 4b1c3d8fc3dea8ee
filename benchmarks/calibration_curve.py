"""Accuracy, ECE and fitted temperature of a training stage against training length.

    python benchmarks/calibration_curve.py --config=configs/clinc150.py:offline=1 \
        --data_dir=PATH/clinc150 --points=4
    python benchmarks/calibration_curve.py --config=configs/clinc150.py:offline=1 \
        --data_dir=PATH/clinc150 --set=teacher.lr=3e-4 --set=teacher.epochs=3 --stage=student

Trains the stage of one config run (`--stage=teacher`, or `student` after the teacher, which
is trained first when its workdir has none) and stops at `--points` evenly spaced points of
its schedule to evaluate it on the validation and test splits: accuracy, NLL, ECE (15
bins), the temperature fitted on the validation split and the test ECE after it. The
schedule is the full run's (warm-up and cosine over the whole length), so the last point is
the run itself and the earlier ones show how far from converged a shorter look is; the
stops are checkpoint resumes, which the trainer makes bit-identical to an uninterrupted run.

Issue 13 asks whether the offline text recipes end under-confident only because they are
short, or also at convergence; this is the measuring instrument. Writes
`results/<--out>.md` and `.json` (one row per point, appended as they finish; a rerun with
the same workdir resumes from the checkpoints).
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import REPO, provenance, write_results  # noqa: E402

sys.path.insert(0, REPO)

import jax  # noqa: E402
import numpy as np  # noqa: E402

from cud_jax import configs, losses, metrics, pipeline  # noqa: E402
from cud_jax.parallel.sharding import make_mesh  # noqa: E402
from cud_jax.train.tasks import build_task  # noqa: E402
from cud_jax.train.writers import MetricWriter  # noqa: E402


def apply_overrides(config, assignments):
    """`a.b=value` strings onto `config` (values parsed as Python literals, else strings)."""
    values = {}
    for assignment in assignments:
        path, _, text = assignment.partition("=")
        try:
            values[path] = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            values[path] = text
    # A field the config lacks is added here and named by `configs.validate` in `main`.
    config.update_from_flattened_dict(values)
    return config


def split_metrics(logits, labels, temperature) -> dict:
    """Accuracy, NLL, ECE on one split, and the ECE after dividing by `temperature`."""
    probs = jax.nn.softmax(logits, axis=-1)
    scaled = jax.nn.softmax(logits / temperature, axis=-1)
    return dict(accuracy=float(np.mean(metrics.accuracy(probs, labels))),
                nll=float(np.mean(metrics.nll(probs, labels))),
                ece=float(metrics.ece(probs, labels)),
                confidence=float(np.mean(np.max(probs, axis=-1))),
                ece_ts=float(metrics.ece(scaled, labels)))


def evaluate(trained, data, config, mesh) -> dict:
    val = pipeline.predict_split_logits(trained, data, data.val.inputs, config, mesh)
    test = pipeline.predict_split_logits(trained, data, data.test.inputs, config, mesh)
    temperature = float(losses.fit_temperature(val, data.val.labels))
    row = dict(temperature=temperature)
    for split, logits, labels in (("val", val, data.val.labels), ("test", test,
                                                                 data.test.labels)):
        row.update({f"{split}_{k}": v for k, v in split_metrics(
            logits, np.asarray(labels), temperature).items()})
    return row


def staged_stage(name, config, workdir, data, mesh, points, teacher, on_point):
    """Trains stage `name` to each of `points` evenly spaced ends of its schedule in turn."""
    teacher_fn, teacher_vars = pipeline.teacher_for_student(config, data, mesh, teacher)
    model_def, state, step_fn, spe, total, lr_fn = pipeline.build_stage(name, config, data,
                                                                        mesh, teacher_fn)
    run = pipeline.stage_run(name, config, workdir, data, step_fn, spe, total, lr_fn)
    inputs, labels = data.placement.held_arrays(data.train)
    trained = None
    for k in range(1, points + 1):
        end = round(total * k / points)
        start = time.perf_counter()
        writer = MetricWriter(workdir, name)
        try:
            state = pipeline.train_stage(dataclasses.replace(run, total_steps=end), state,
                                         inputs, labels, mesh=mesh, writer=writer,
                                         teacher_vars=teacher_vars)
        finally:
            writer.close()
        trained = pipeline.Trained(model_def, state.params, state.model_state, int(state.step))
        on_point(dict(stage=name, step=end, epochs=end / spe,
                      train_seconds=time.perf_counter() - start,
                      **evaluate(trained, data, config, mesh)))
    return trained


COLUMNS = ("stage", "epochs", "step", "val_accuracy", "val_ece", "val_confidence",
           "temperature", "test_accuracy", "test_ece", "test_ece_ts", "test_nll",
           "train_seconds")


def to_markdown(title, meta, rows) -> str:
    lines = [f"# {title}", "", f"Command: `{meta['command']}`  ",
             f"Commit {meta['commit']}, {meta['date']}, {meta['hardware']}; wall time "
             f"{meta['wall_seconds']:.0f} s. ECE: 15 equal-width bins; temperature fitted on "
             "the validation split (`test_ece_ts`: test ECE after it); train_seconds: "
             "training since the previous point.", "",
             "| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for row in rows:
        cells = [f"{row[c]:.4f}" if isinstance(row[c], float) else str(row[c])
                 for c in COLUMNS]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="configs/clinc150.py:offline=1")
    parser.add_argument("--data_dir", default=None)
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE")
    parser.add_argument("--stage", choices=("teacher", "student"), default="teacher")
    parser.add_argument("--points", type=int, default=4)
    parser.add_argument("--workdir", default=None)
    parser.add_argument("--out", default=None, help="results file name (no extension)")
    args = parser.parse_args(argv)

    path, _, arg = args.config.partition(":")
    config = configs.load_config_file(os.path.join(REPO, path) if not os.path.isabs(path)
                                      else path, arg or None)
    if args.data_dir:
        config.data.data_dir = args.data_dir
    apply_overrides(config, args.set)
    try:
        configs.validate(config)
    except configs.ConfigError as err:  # one line naming the field, before any work
        raise SystemExit(str(err)) from None
    out = args.out or f"calibration_curve_{config.data.name}_{args.stage}"
    workdir = args.workdir or os.path.join(REPO, "runs", out)
    os.makedirs(workdir, exist_ok=True)

    wall = time.perf_counter()
    mesh = make_mesh()
    data = pipeline.place_data(config, build_task(config.data), mesh)
    rows = []
    title = f"Calibration against training length: {config.data.name}, {args.stage} stage"

    def on_point(row):
        rows.append(row)
        print({k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()},
              flush=True)
        meta = provenance(time.perf_counter() - wall)
        write_results(out, to_markdown(title, meta, rows),
                      dict(meta, config=config.to_dict(), overrides=args.set, rows=rows))

    # The student's teacher: trained here, or resumed (and returned at once) when finished.
    teacher = (pipeline.run_training_stage("teacher", config, workdir, data, mesh)
               if args.stage == "student" else None)
    staged_stage(args.stage, config, workdir, data, mesh, args.points, teacher, on_point)


if __name__ == "__main__":
    main()
