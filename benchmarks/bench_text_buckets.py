"""Length bucketing vs one padded width: text student step throughput on a real data set.

    python benchmarks/bench_text_buckets.py --dataset=banking77      # needs ../shared/data

Each split is stored padded to its longest sequence (Banking77: 104 WordPieces with the
MiniLM vocabulary), but most utterances are far shorter. This runs the CUD student step
(MiniLM layers 0, 2, 4, cached teacher probabilities) over the same number of steps of a
length-bucketed epoch (`cud_jax.data.bucketed_epoch`: each batch cut to its bucket's width)
and of a plain epoch (every batch at the padded width), alternating the two so both see the
same machine load, and reports examples/s, the speed-up, and the extra compilation the
buckets cost (one program per width).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import REPO, load_config, provenance, write_results  # noqa: E402

from cud_jax import data, models  # noqa: E402
from cud_jax.train import objectives, optim, steps  # noqa: E402
from cud_jax.configs import MINILM  # noqa: E402
from cud_jax.parallel.sharding import make_mesh, put_replicated  # noqa: E402
from cud_jax.train.state import create_train_state, split_model  # noqa: E402

SHARED = os.environ.get("CUD_JAX_SHARED_DATA", os.path.join(REPO, "..", "shared", "data"))


def _runner(step, state, inputs, labels, order, widths, cached, num_steps, mesh):
    """`run()` doing `num_steps` steps of `order` (batch widths `widths`, None: padded)."""
    holder = {"state": state, "step": 0}  # the step indexes both the order and the widths
    perm = put_replicated(order, mesh)
    key = jax.random.PRNGKey(0)

    def run():
        for _ in range(num_steps):
            width = None if widths is None else int(widths[holder["step"] % len(widths)])
            holder["step"] += 1
            holder["state"], metrics = step(holder["state"], inputs, labels, perm, key, cached,
                                            width=width)
        jax.block_until_ready(metrics["loss"])

    return run


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", default="banking77", choices=("banking77", "clinc150"))
    parser.add_argument("--data", default=None)
    parser.add_argument("--checkpoint", default=MINILM)
    parser.add_argument("--buckets", default="16,32,64")
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=24, help="steps per timing")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--name", default="text_buckets_cpu")
    args = parser.parse_args()
    start = time.perf_counter()
    ds = data.load_text(args.dataset, tokenizer=args.checkpoint,
                        data_dir=args.data or os.path.join(SHARED, args.dataset))
    ids, labels = ds.train.inputs, ds.train.labels
    buckets = tuple(int(b) for b in args.buckets.split(","))
    widths = data.example_widths(ids, buckets, pad_id=ds.pad_id)
    counts = {int(w): int(c) for w, c in zip(*np.unique(widths, return_counts=True))}
    lengths = (ids != ds.pad_id).sum(1)

    mesh = make_mesh()
    config = load_config(args.dataset, "offline=1").student
    spe = data.bucketed_steps_per_epoch(widths, args.batch_size)
    tx = optim.make_optimizer(config, spe, 1000)
    student = f"bert[0,2,4]:{args.checkpoint}"
    s_def, _, _ = split_model(models.create_text_model(student, num_classes=ds.num_classes,
                                                       rngs=nnx.Rngs(0)))
    step = steps.make_train_step(s_def, tx, objectives.student_objective(config),
                                 lambda key, x: x, batch_size=args.batch_size,
                                 steps_per_epoch=spe, mesh=mesh, teacher=steps.cached_teacher)
    inputs, labels_dev = put_replicated((jnp.asarray(ids), jnp.asarray(labels)), mesh)
    rng = np.random.default_rng(0)  # the teacher's values do not matter for timing
    cached = put_replicated(jax.nn.softmax(jnp.asarray(
        rng.normal(size=(len(ids), ds.num_classes)), jnp.float32)), mesh)

    bucket_order, bucket_widths = data.bucketed_epoch(0, 0, widths, args.batch_size)
    plain_order = np.asarray(data.epoch_permutation(0, 0, len(ids)))
    runners, first_call = {}, {}
    for name, order, batch_widths in (("padded", plain_order, None),
                                      ("bucketed", bucket_order, bucket_widths)):
        _, params, model_state = split_model(models.create_text_model(
            student, num_classes=ds.num_classes, rngs=nnx.Rngs(0)))
        state = put_replicated(create_train_state(params, model_state, tx), mesh)
        run = _runner(step, state, inputs, labels_dev, order, batch_widths, cached, args.steps,
                      mesh)
        t0 = time.perf_counter()
        run()
        first_call[name] = time.perf_counter() - t0
        runners[name] = run
    best = {name: float("inf") for name in runners}
    for _ in range(args.rounds):
        for name, run in runners.items():
            t0 = time.perf_counter()
            run()
            best[name] = min(best[name], (time.perf_counter() - t0) / args.steps)
    # The first call compiles (each width it meets) and runs the steps once.
    compile_s = {name: first_call[name] - args.steps * best[name] for name in best}
    meta = provenance(time.perf_counter() - start)
    speedup = best["padded"] / best["bucketed"]
    seen = sorted({int(w) for w in bucket_widths[:args.steps * (args.rounds + 1)]})
    markdown = "\n".join([
        f"# Length bucketing: text student step on {args.dataset}", "",
        f"Command: `python {meta['command']}`  ",
        f"Commit {meta['commit']}, {meta['date']}, {meta['hardware']}, jax {meta['jax']}, wall "
        f"{meta['wall_seconds']} s.", "",
        f"Training split: {len(ids)} utterances, padded width {ids.shape[1]} WordPieces, "
        f"lengths median {int(np.median(lengths))}, 90th percentile "
        f"{int(np.percentile(lengths, 90))}, max {int(lengths.max())}. Buckets {buckets} -> "
        f"examples per width {counts}; {spe} single-width batches per epoch against "
        f"{len(ids) // args.batch_size} plain ones. Student `bert[0,2,4]` (MiniLM-L6 layers "
        f"0, 2, 4), CUD objective with cached teacher probabilities, batch {args.batch_size}. "
        f"Best of {args.rounds} alternating timings of {args.steps} consecutive steps of "
        f"an epoch (bucketed: widths {seen} met).", "",
        "| epoch order | ms/step | examples/s | compile s (first call less its steps) |",
        "|---|---|---|---|",
        *[f"| {name} | {1000 * s:.1f} | {args.batch_size / s:.0f} | {compile_s[name]:.1f} |"
          for name, s in best.items()], "",
        f"Speed-up from bucketing: {speedup:.2f}x examples/s. The bucketed first call compiles "
        f"one program per width it meets ({len(seen)} here), the padded one a single program.",
        ""])
    print(markdown)
    write_results(args.name, markdown, {"meta": meta, "ms_per_step": best, "speedup": speedup,
                                        "bucket_counts": counts, "compile_s": compile_s})


if __name__ == "__main__":
    main()
