"""Whole zoo models: forward + backward with every conv in "xla" vs "im2col" vs "auto" mode.

    python benchmarks/bench_conv_models.py --models=resnet20,resnet8x4,mobilenetv2

The per-layer table (bench_conv_grad.py) says where the im2col weight gradient wins; this
one says what that is worth in a model: gradient of the cross-entropy w.r.t. all parameters
at batch 64 on 32x32 inputs (training mode, BatchNorm batch statistics), jitted, ms per step,
best of `--repeats` rounds in which the modes alternate, after a compile call. It decides
what `config.parallel.conv_weight_grad="auto"` picks on a CPU (cud_jax/models/conv.py).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import jax
import jax.numpy as jnp
from flax import nnx

sys.path[:0] = [os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                os.path.dirname(os.path.abspath(__file__))]
from _common import provenance, results_header, write_results  # noqa: E402

from cud_jax import models  # noqa: E402

MODES = ("xla", "im2col", "auto")


def _grad_fn(name: str, mode: str, num_classes: int):
    model = models.create_model(name, num_classes=num_classes, rngs=nnx.Rngs(0))
    models.set_conv_weight_grad(model, mode)
    graph, params, rest = nnx.split(model, nnx.Param, ...)

    def loss(params, rest, images, labels):
        logits = nnx.merge(graph, params, rest, copy=True)(images)
        return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), labels[:, None], 1))

    return jax.jit(jax.grad(loss)), params, rest


def bench_model(name: str, *, batch: int, repeats: int) -> dict:
    images = jax.random.normal(jax.random.key(0), (batch, 32, 32, 3))
    labels = jnp.arange(batch) % 100
    fns = {mode: _grad_fn(name, mode, 100) for mode in MODES}
    compile_s, best = {}, {mode: float("inf") for mode in MODES}
    for mode, (fn, params, rest) in fns.items():
        start = time.perf_counter()
        jax.block_until_ready(fn(params, rest, images, labels))
        compile_s[mode] = time.perf_counter() - start
    for _ in range(repeats):
        for mode, (fn, params, rest) in fns.items():
            start = time.perf_counter()
            jax.block_until_ready(fn(params, rest, images, labels))
            best[mode] = min(best[mode], time.perf_counter() - start)
    return {"model": name, **{f"{m}_ms": 1e3 * best[m] for m in MODES},
            **{f"{m}_compile_s": compile_s[m] for m in MODES}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="resnet20,resnet8x4,mobilenetv2")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--name", default="conv_models_cpu")
    args = parser.parse_args()
    start, load_before = time.time(), os.getloadavg()[0]
    rows = []
    for name in args.models.split(","):
        rows.append(bench_model(name, batch=args.batch, repeats=args.repeats))
        print(rows[-1], flush=True)
    load_after = os.getloadavg()[0]
    meta = provenance(time.time() - start)
    lines = results_header(
        "Zoo models: forward + backward with each conv weight-gradient mode", meta,
        (load_before, load_after)) + [
        f"Gradient of the cross-entropy w.r.t. all parameters, batch {args.batch}, 32x32, "
        f"float32, training mode; ms per step, best of {args.repeats} alternating rounds after "
        "a compile call. xla / im2col > 1: the im2col weight gradient is faster.", "",
        "| model | xla ms | im2col ms | auto ms | xla / im2col | xla / auto |",
        "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['xla_ms']:.0f} | {r['im2col_ms']:.0f} | "
                     f"{r['auto_ms']:.0f} | {r['xla_ms'] / r['im2col_ms']:.2f} | "
                     f"{r['xla_ms'] / r['auto_ms']:.2f} |")
    payload = {**meta, "batch": args.batch, "repeats": args.repeats,
               "backend": jax.default_backend(), "load_average": [load_before, load_after],
               "rows": rows}
    write_results(args.name, "\n".join(lines) + "\n", payload)


if __name__ == "__main__":
    main()
