"""Do XLA:CPU's library back ends (oneDNN, XNNPACK, YNNPACK) speed up our convolutions?

    python benchmarks/bench_xla_cpu_flags.py

Issue 11 asks for a CPU training step 1.5x faster than PyTorch's on the same cores, and
results/conv_vs_torch_cpu.md shows why we are behind: XLA:CPU's own (Eigen) float32
convolution is 1.0-2.1x slower than oneDNN's forward and 1.8-3.0x slower forward + backward.
This jaxlib also ships oneDNN, XNNPACK and YNNPACK, reachable only through XLA_FLAGS; if one
of them took over the float32 convolutions, the gap would close without a kernel of ours.

For each flag set, one fresh process (XLA_FLAGS is read once, at start) times a jitted 3x3
convolution at the zoo's shapes, forward and forward + both gradients, with the kernel in
HWIO (our layout) and in OHWI (the layout XLA's XNNPACK convolution thunk requires); rounds
alternate the flag sets and each keeps its best. Every variant must also agree with the
default's output (a back end that changes the numbers is reported, not hidden).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import provenance, results_header, write_results  # noqa: E402

#: label -> XLA_FLAGS. The fusion-type flags take the library's op kinds; "+" adds one to the
#: default list.
FLAG_SETS = {
    "default": "",
    "oneDNN": "--xla_cpu_use_onednn=true",
    "oneDNN custom calls": ("--xla_cpu_use_onednn=true "
                            "--xla_cpu_experimental_onednn_custom_call=true"),
    "XNNPACK convolution": "--xla_cpu_experimental_xnn_fusion_type=+individual_convolution",
    "XNNPACK greedy graphs": ("--xla_cpu_experimental_xnn_graph_fusion_mode="
                              "XNN_GRAPH_FUSION_MODE_GREEDY"),
    "YNNPACK convolution": "--xla_cpu_experimental_ynn_fusion_type=individual_convolution",
}
#: (channels, map size): resnet20/56's three stages, then resnet8x4/32x4's.
SHAPES = ((16, 32), (32, 16), (64, 8), (64, 32), (128, 16))


def _worker(batch: int, repeats: int) -> None:
    """Times every shape under this process's XLA_FLAGS; prints one JSON line."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    def best_ms(fn):
        jax.block_until_ready(fn())  # compile
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            jax.block_until_ready(fn())
            times.append(time.perf_counter() - start)
        return min(times) * 1000

    rows, rng = [], np.random.default_rng(0)
    for channels, size in SHAPES:
        x = jnp.asarray(rng.standard_normal((batch, size, size, channels), np.float32))
        w = jnp.asarray(rng.standard_normal((3, 3, channels, channels), np.float32) * 0.05)
        row = {"channels": channels, "size": size}
        for layout, kernel in (("HWIO", w), ("OHWI", jnp.transpose(w, (3, 0, 1, 2)))):
            def conv(x, k, layout=layout):
                return jax.lax.conv_general_dilated(
                    x, k, (1, 1), "SAME", dimension_numbers=("NHWC", layout, "NHWC"))
            forward = jax.jit(conv)
            both = jax.jit(jax.grad(lambda x, k: jnp.sum(conv(x, k) ** 2), argnums=(0, 1)))
            row[f"{layout}_forward_ms"] = best_ms(lambda: forward(x, kernel))
            row[f"{layout}_fwd_bwd_ms"] = best_ms(lambda: both(x, kernel))
            # A checksum of the output, summed on the host in float64 so that only the
            # convolution's numbers count: the parent compares it with the default flags'.
            y = np.asarray(forward(x, kernel), np.float64)
            row[f"{layout}_checksum"] = float(np.sum(y * y))
        rows.append(row)
    print(json.dumps(rows), flush=True)


def _run_worker(flags: str, batch: int, repeats: int) -> list[dict]:
    env = dict(os.environ, XLA_FLAGS=flags, JAX_PLATFORMS="cpu")
    out = subprocess.run([sys.executable, __file__, "--worker", f"--batch={batch}",
                          f"--repeats={repeats}"], env=env, capture_output=True, text=True,
                         check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--name", default="xla_cpu_flags")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        _worker(args.batch, args.repeats)
        return
    start, load_before = time.time(), os.getloadavg()[0]
    best: dict[str, list[dict]] = {}
    for round_ in range(args.rounds):  # alternate the flag sets; keep each one's best
        for label, flags in FLAG_SETS.items():
            rows = _run_worker(flags, args.batch, args.repeats)
            print(f"round {round_}: {label}: "
                  + ", ".join(f"C{r['channels']} {r['HWIO_fwd_bwd_ms']:.1f}" for r in rows),
                  flush=True)
            if label not in best:
                best[label] = rows
                continue
            for kept, new in zip(best[label], rows):
                for key, value in new.items():
                    if key.endswith("_ms"):
                        kept[key] = min(kept[key], value)
    base = best["default"]
    lines = results_header("XLA:CPU library back ends on our convolutions", provenance(
        time.time() - start), (load_before, os.getloadavg()[0])) + [
        f"One 3x3 convolution, batch {args.batch}, float32, SAME padding, C in = C out; ms, "
        f"best of {args.repeats} calls in each of {args.rounds} alternating rounds, one "
        "process per flag set. Ratio: the flag set's time / the default's (below 1 = faster). "
        "fwd+bwd: forward, input gradient and weight gradient of sum(y^2). OHWI: the kernel "
        "stored output-features first, the layout XLA's XNNPACK convolution requires.", ""]
    header = "| flags (XLA_FLAGS) | " + " | ".join(
        f"C{c} {s}x{s} fwd / fwd+bwd" for c, s in SHAPES) + " | same output |"
    payload = {"batch": args.batch, "flag_sets": FLAG_SETS, "rows": best}
    for layout in ("HWIO", "OHWI"):
        lines += [f"### Kernel layout {layout}", "", header,
                  "|---|" + "---|" * (len(SHAPES) + 1)]
        for label, rows in best.items():
            cells = [f"{r[f'{layout}_forward_ms']:.1f} / {r[f'{layout}_fwd_bwd_ms']:.1f}"
                     + ("" if label == "default" else
                        f" ({r[f'{layout}_forward_ms'] / b[f'{layout}_forward_ms']:.2f} / "
                        f"{r[f'{layout}_fwd_bwd_ms'] / b[f'{layout}_fwd_bwd_ms']:.2f})")
                     for r, b in zip(rows, base)]
            same = all(abs(r[f"{layout}_checksum"] - b["HWIO_checksum"])
                       <= 1e-5 * abs(b["HWIO_checksum"]) for r, b in zip(rows, base))
            lines.append(f"| {label}: `{FLAG_SETS[label] or '(none)'}` | "
                         + " | ".join(cells) + f" | {'yes' if same else 'NO'} |")
        lines.append("")
    write_results(args.name, "\n".join(lines) + "\n", payload)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
