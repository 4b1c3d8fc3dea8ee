"""A conv layer's forward, input gradient and weight gradient: XLA's vs the im2col VJP.

    python benchmarks/bench_conv_grad.py            # CPU, writes results/conv_grad_cpu.{md,json}
    python benchmarks/bench_conv_grad.py --channels=16,32 --name=conv_grad_quick

3x3 convs with symmetric padding 1 (the zoo's), batch 64, 32x32 inputs, float32: C in = C out
for each `--channels`, plus a stride-2 row (C -> 2C, as a ResNet stage's first conv) and a
depthwise row (groups = C, as MobileNetV2 / ShuffleNet). Each operation is jitted and
compiled first; then every round calls each one once, alternating (drift in machine load
hits all alike), and the table keeps the best of `--repeats` rounds in ms. The weight
gradients are `jax.vjp` with respect to the kernel of `lax.conv_general_dilated` (XLA) and of
`cud_jax.models.conv.conv_im2col_weight_grad` (im2col), given the same output gradient; the
relative difference is max |im2col - xla| / max |xla|. The machine's load average is recorded
(timings on a shared machine are only comparable within one run).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import jax
import numpy as np
from jax import lax

# This checkout's package first (not another copy pip-installed in editable mode), then
# the benchmark helpers.
sys.path[:0] = [os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                os.path.dirname(os.path.abspath(__file__))]
from _common import provenance, results_header, write_results  # noqa: E402

from cud_jax.models.conv import conv_im2col_weight_grad  # noqa: E402

LAYOUT = ("NHWC", "HWIO", "NHWC")
PADS = ((1, 1), (1, 1))


def layer_ops(conv_fn, x, w, dy, stride, groups):
    """Jitted (forward, input gradient, weight gradient) of one conv made by `conv_fn`."""
    def conv(x, w):
        return conv_fn(x, w, (stride, stride), PADS, dimension_numbers=LAYOUT,
                       feature_group_count=groups)

    forward = jax.jit(conv)
    input_grad = jax.jit(lambda x, w, dy: jax.vjp(lambda x: conv(x, w), x)[1](dy)[0])
    weight_grad = jax.jit(lambda x, w, dy: jax.vjp(lambda w: conv(x, w), w)[1](dy)[0])
    return {"forward": lambda: forward(x, w), "input_grad": lambda: input_grad(x, w, dy),
            "weight_grad": lambda: weight_grad(x, w, dy)}


def bench_case(c_in, c_out, stride, groups, batch, size, repeats):
    keys = jax.random.split(jax.random.key(0), 3)
    x = jax.random.normal(keys[0], (batch, size, size, c_in))
    w = jax.random.normal(keys[1], (3, 3, c_in // groups, c_out)) / np.sqrt(9 * c_in / groups)
    out = size // stride
    dy = jax.random.normal(keys[2], (batch, out, out, c_out))
    xla = layer_ops(lax.conv_general_dilated, x, w, dy, stride, groups)
    ours = layer_ops(conv_im2col_weight_grad, x, w, dy, stride, groups)
    calls = {"forward": xla["forward"], "input_grad": xla["input_grad"],
             "weight_grad_xla": xla["weight_grad"], "weight_grad_im2col": ours["weight_grad"]}
    for fn in calls.values():  # compile and warm up
        jax.block_until_ready(fn())
    best = {name: float("inf") for name in calls}
    for _ in range(repeats):
        for name, fn in calls.items():
            start = time.perf_counter()
            jax.block_until_ready(fn())
            best[name] = min(best[name], time.perf_counter() - start)
    want = np.asarray(xla["weight_grad"]())
    got = np.asarray(ours["weight_grad"]())
    row = {"c_in": c_in, "c_out": c_out, "stride": stride, "groups": groups,
           **{f"{name}_ms": round(seconds * 1e3, 2) for name, seconds in best.items()},
           "rel_diff": float(np.max(np.abs(got - want)) / np.max(np.abs(want)))}
    row["speedup"] = round(row["weight_grad_xla_ms"] / row["weight_grad_im2col_ms"], 2)
    return row


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--channels", default="16,32,64,128")
    parser.add_argument("--stride2_channels", type=int, default=32,
                        help="the stride-2 row's C (C -> 2C); 0 skips it")
    parser.add_argument("--depthwise_channels", type=int, default=64,
                        help="the depthwise row's C; 0 skips it")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--name", default=f"conv_grad_{jax.default_backend()}")
    args = parser.parse_args()
    start = time.time()
    load_before = os.getloadavg()[0]
    cases = [(c, c, 1, 1) for c in map(int, args.channels.split(",")) if c]
    if args.stride2_channels:
        cases.append((args.stride2_channels, 2 * args.stride2_channels, 2, 1))
    if args.depthwise_channels:
        cases.append((args.depthwise_channels, args.depthwise_channels, 1,
                      args.depthwise_channels))
    rows = []
    for case in cases:
        rows.append(bench_case(*case, batch=args.batch, size=args.size, repeats=args.repeats))
        print(rows[-1], flush=True)
    load_after = os.getloadavg()[0]
    meta = provenance(time.time() - start)
    lines = results_header(
        "Conv layer: forward, input gradient, weight gradient (XLA vs im2col VJP)", meta,
        (load_before, load_after)) + [
        f"3x3 conv, padding 1, batch {args.batch}, {args.size}x{args.size} input, float32; "
        f"ms, best of {args.repeats} alternating rounds after a compile call. Forward and "
        "input gradient are XLA's in both modes; rel. diff = max |im2col - xla| / max |xla| "
        "of the weight gradients.", "",
        "| C in -> C out | stride | groups | forward | input grad | weight grad (XLA) "
        "| weight grad (im2col) | XLA / im2col | rel. diff |",
        "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(
            f"| {r['c_in']} -> {r['c_out']} | {r['stride']} | {r['groups']} "
            f"| {r['forward_ms']:.1f} | {r['input_grad_ms']:.1f} | {r['weight_grad_xla_ms']:.1f} "
            f"| {r['weight_grad_im2col_ms']:.1f} | {r['speedup']:.2f}x | {r['rel_diff']:.1e} |")
    payload = {**meta, "batch": args.batch, "size": args.size, "repeats": args.repeats,
               "load_average": [load_before, load_after], "rows": rows}
    write_results(args.name, "\n".join(lines) + "\n", payload)


if __name__ == "__main__":
    main()
