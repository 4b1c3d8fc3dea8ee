"""Where a CIFAR ResNet's CPU step time goes: one conv layer, XLA vs PyTorch, same cores.

    python benchmarks/bench_conv_vs_torch.py             # needs `pip install torch` (CPU)

The distillation step runs the teacher forward and the student forward and backward, so it
is bound by 3x3 convolutions at the zoo's shapes: 16/32/64 channels on 32/16/8 maps
(resnet20/56) and 64/128/256 channels (resnet8x4/32x4). For each shape this times, in one
process and alternating, a jitted XLA convolution (NHWC, `lax.conv_general_dilated`, the
op our models use) and `torch.nn.functional.conv2d` (NCHW, oneDNN) with 2 threads:
the forward alone (what a frozen teacher costs) and forward + both gradients (what a
trained layer costs), batch 64, float32, best of `--repeats`. PyTorch is imported here
only to measure; it is not a dependency of cud_jax.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import provenance, results_header, write_results  # noqa: E402

#: (channels, map size): resnet20/56's three stages, then resnet8x4/32x4's.
SHAPES = ((16, 32), (32, 16), (64, 8), (64, 32), (128, 16), (256, 8))


def _best(fn, repeats: int) -> float:
    fn()  # compile / warm up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times) * 1000


def _xla(x, w):
    conv = lambda x, w: jax.lax.conv_general_dilated(  # noqa: E731
        x, w, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
    forward = jax.jit(conv)
    both = jax.jit(jax.grad(lambda x, w: jnp.sum(conv(x, w) ** 2), argnums=(0, 1)))
    return (lambda: forward(x, w).block_until_ready(),
            lambda: jax.block_until_ready(both(x, w)))


def _torch(torch, x, w):
    xt = torch.tensor(np.transpose(x, (0, 3, 1, 2)).copy(), requires_grad=True)
    wt = torch.tensor(np.transpose(w, (3, 2, 0, 1)).copy(), requires_grad=True)
    conv = torch.nn.functional.conv2d

    def forward():
        with torch.no_grad():
            conv(xt, wt, padding=1)

    def both():
        xt.grad = wt.grad = None
        (conv(xt, wt, padding=1) ** 2).sum().backward()

    return forward, both


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--name", default="conv_vs_torch_cpu")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    start, load_before = time.time(), os.getloadavg()[0]
    rng = np.random.default_rng(0)
    rows = []
    for channels, size in SHAPES:
        x = rng.standard_normal((args.batch, size, size, channels), np.float32)
        w = (rng.standard_normal((3, 3, channels, channels)) * 0.05).astype(np.float32)
        ours, theirs = _xla(jnp.asarray(x), jnp.asarray(w)), _torch(torch, x, w)
        best = {}
        for _ in range(2):  # alternate the two libraries; keep each one's best
            for lib, fns in (("xla", ours), ("torch", theirs)):
                for part, fn in zip(("forward", "fwd_bwd"), fns):
                    t = _best(fn, args.repeats)
                    best[lib, part] = min(best.get((lib, part), t), t)
        rows.append({"channels": channels, "size": size,
                     **{f"{lib}_{part}_ms": round(t, 2) for (lib, part), t in best.items()}})
        print(rows[-1], flush=True)
    meta = provenance(time.time() - start)
    lines = results_header("One 3x3 conv layer on the CPU: XLA vs PyTorch (oneDNN)", meta,
                           (load_before, os.getloadavg()[0])) + [
        f"Batch {args.batch}, float32, padding 1, C in = C out; ms, best of {args.repeats} "
        f"in each of 2 alternating rounds; PyTorch {torch.__version__} with {args.threads} "
        "threads. fwd+bwd: forward, input gradient and weight gradient of sum(y^2).", "",
        "| C | map | XLA forward | torch forward | XLA / torch | XLA fwd+bwd | torch fwd+bwd "
        "| XLA / torch |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(
            f"| {r['channels']} | {r['size']}x{r['size']} | {r['xla_forward_ms']:.1f} "
            f"| {r['torch_forward_ms']:.1f} | {r['xla_forward_ms'] / r['torch_forward_ms']:.2f} "
            f"| {r['xla_fwd_bwd_ms']:.1f} | {r['torch_fwd_bwd_ms']:.1f} "
            f"| {r['xla_fwd_bwd_ms'] / r['torch_fwd_bwd_ms']:.2f} |")
    write_results(args.name, "\n".join(lines) + "\n",
                  {**meta, "batch": args.batch, "threads": args.threads, "rows": rows})


if __name__ == "__main__":
    main()
