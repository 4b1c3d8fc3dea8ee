"""Model FLOPs utilisation of the steps timed by `bench_vs_peer.py`, ours and the peer's.

    python benchmarks/mfu.py --results=results/train_step_gpu.json            # known GPUs
    python benchmarks/mfu.py --results=R.json --peak_tflops=494.5,989         # any device

FLOPs per image come from XLA's cost model (`scaling_flops.measure`, a multiply-add counted
as 2): a student step is the frozen teacher's forward plus the student's forward and
backward, the teacher step the teacher's forward and backward (losses and the optimiser
update are negligible). MFU = images/s x FLOPs per image / the device's dense peak for the
step's precision. float32 steps are held against the TF32 tensor-core peak, the precision
XLA and cuDNN use for float32 convolutions on these GPUs by default. Writes NAME_mfu.md next
to the results file.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from flax import nnx
import jax
import jax.numpy as jnp

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from scaling_flops import measure  # noqa: E402

from cud_jax import models  # noqa: E402

#: Dense peak TFLOP/s (TF32 tensor core, bfloat16), by a substring of the device name, from
#: the vendors' data sheets (SXM parts; without structured sparsity).
PEAKS = {"H200": (494.5, 989.0), "H100": (494.5, 989.0), "A100": (156.0, 312.0),
         "L4": (60.0, 121.0), "A10G": (35.0, 70.0)}


def _flops(cache: dict, name: str, num_classes: int = 100) -> dict:
    if name not in cache:
        image = jax.ShapeDtypeStruct((8, 32, 32, 3), jnp.float32)
        cache[name] = measure(name, lambda: models.create_model(
            name, num_classes=num_classes, rngs=nnx.Rngs(0)), image)
    return cache[name]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", required=True, help="a bench_vs_peer.py results .json")
    parser.add_argument("--peak_tflops", default=None,
                        help="FP32(TF32),BF16 dense peaks; default: by the device's name")
    args = parser.parse_args()
    with open(args.results, encoding="utf-8") as f:
        payload = json.load(f)
    hardware = payload["meta"]["hardware"]
    if args.peak_tflops:
        peaks = tuple(float(x) for x in args.peak_tflops.split(","))
    else:
        peaks = next((v for k, v in PEAKS.items() if k in hardware), None)
        if peaks is None:
            raise SystemExit(f"No known peak for {hardware!r}; pass --peak_tflops=FP32,BF16.")
    cache: dict = {}
    lines = [f"# MFU of {os.path.basename(args.results)}", "",
             f"{hardware}; peaks {peaks[0]} (TF32) / {peaks[1]} (bf16) TFLOP/s.", "",
             "| pair | batch | dtype | k | step | GFLOPs/image | images/s | MFU |",
             "|---|---|---|---|---|---|---|---|"]
    for g in payload["groups"]:
        teacher, student = g["pair"].split("-")
        t, s = _flops(cache, teacher), _flops(cache, student)
        per_image = {"teacher": t["fwd_bwd"], "student": t["fwd"] + s["fwd_bwd"]}
        peak = 1e12 * peaks[0 if g["dtype"] == "float32" else 1]
        rows = [(f"ours {r['variant']} ({r['devices']} dev)", r["images_per_s"],
                 per_image["teacher" if r["variant"] == "teacher" else "student"])
                for r in g["ours"]]
        rows += [(f"peer {p['method']}", p["images_per_s"], per_image["student"])
                 for p in g["peer"]]
        for what, rate, flops in rows:
            lines.append(f"| {g['pair']} | {g['batch']} | {g['dtype']} | {g['steps_per_call']} "
                         f"| {what} | {flops / 1e9:.3f} | {rate:.0f} | "
                         f"{100 * rate * flops / peak:.1f}% |")
    out = os.path.splitext(args.results)[0] + "_mfu.md"
    with open(out, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
