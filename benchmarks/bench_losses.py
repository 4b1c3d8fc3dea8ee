"""Per-call cost of the loss functions and target corrections, relative to jax.nn.softmax.

    python benchmarks/bench_losses.py                  # CPU, writes results/losses_cpu.{md,json}
    python benchmarks/bench_losses.py --repeats=31 --name=losses_gpu     # on an accelerator

For each batch x classes size, every function is jitted, compiled (compile time recorded),
warmed up, and then timed per call with block_until_ready. Calls are interleaved round-robin
(one call of each function per round) so that drift in machine load hits all of them alike;
the table reports the median over rounds and its ratio to softmax's median from the same
rounds. Inputs:

* softmax, dus_teacher_loss: logits ~ N(0, 3^2) (teacher-like, peaked but not one-hot).
* wclip, kl_projection, project_simplex_box ("W-Clip box"): teacher probabilities
  softmax(logits) and random labels. The projections get the W-Clip set of PAPER.md
  section 3 (N = {y}, W = {k*} where W-Clip fires, alpha = p_y + delta, eps = p_k* - delta;
  for the box, lower = alpha at y, upper = eps at k*), precomputed outside the timed call:
  the timing is the solver's.
* project_simplex_box ("general box"): a harder instance where many bounds bind at the
  root: v ~ U(-0.5, 1) * 2/K, lower ~ U(0, 1/K), upper = lower + U(0, 3/K).
* cud_student_loss: student logits ~ N(0, 1), the teacher probabilities above, T = 4.

Targets (printed as PASS/FAIL, and stored in the JSON): wclip and dus_teacher_loss within
3x of softmax; the default project_simplex_box exact to 1e-6 (max abs) against the sort
solver and at least 3x faster than 50-step bisection, at both sizes, on both box workloads.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

import jax
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import RESULTS, provenance, write_results  # noqa: E402

from cud_jax import losses  # noqa: E402

SIZES = ((1024, 100), (4096, 1000))


def make_inputs(batch: int, num_classes: int, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    logits = (3.0 * rng.normal(size=(batch, num_classes))).astype(np.float32)
    probs = np.asarray(jax.nn.softmax(logits, axis=-1))
    labels = rng.integers(0, num_classes, batch).astype(np.int32)
    delta = np.asarray(losses.wclip_delta(probs, labels))
    top = probs.argmax(-1)
    fires = top != labels
    eye = np.eye(num_classes, dtype=bool)
    n_mask, w_mask = eye[labels], eye[top] & fires[:, None]
    p_y = probs[np.arange(batch), labels]
    alpha = (p_y + delta).astype(np.float32)
    eps = np.where(fires, probs.max(-1) - delta, 1.0).astype(np.float32)
    lower = np.where(n_mask, alpha[:, None], 0.0).astype(np.float32)
    upper = np.where(w_mask, eps[:, None], 1.0).astype(np.float32)
    k = num_classes
    g_v = (rng.uniform(-0.5, 1.0, size=(batch, k)) * 2 / k).astype(np.float32)
    g_lower = (rng.uniform(0, 1, size=(batch, k)) / k).astype(np.float32)
    g_upper = (g_lower + rng.uniform(0, 3, size=(batch, k)) / k).astype(np.float32)
    student = rng.normal(size=(batch, num_classes)).astype(np.float32)
    arrays = dict(logits=logits, probs=probs, labels=labels, n_mask=n_mask, w_mask=w_mask,
                  alpha=alpha, eps=eps, lower=lower, upper=upper, g_v=g_v, g_lower=g_lower,
                  g_upper=g_upper, student=student)
    return {name: jax.device_put(x) for name, x in arrays.items()}


def box(method, **kw):
    return lambda v, lo, hi: losses.project_simplex_box(v, lo, hi, method=method, **kw)


# name -> (function, argument names). "box" rows use the W-Clip box, "general box" the other.
CASES = {
    "softmax (reference)": (lambda z: jax.nn.softmax(z, axis=-1), ("logits",)),
    "wclip": (losses.wclip, ("probs", "labels")),
    "dus_teacher_loss": (losses.dus_teacher_loss, ("logits", "labels")),
    "cud_student_loss (T=4)": (lambda s, p, y: losses.cud_student_loss(s, p, y, temperature=4.0),
                               ("student", "probs", "labels")),
    "kl_projection (W-Clip set)": (
        lambda p, n, a, w, e: losses.kl_projection(p, n_mask=n, alpha=a, w_mask=w, eps=e),
        ("probs", "n_mask", "alpha", "w_mask", "eps")),
    "box, W-Clip: auto (default)": (box("auto"), ("probs", "lower", "upper")),
    "box, W-Clip: sort": (box("sort"), ("probs", "lower", "upper")),
    "box, W-Clip: newton": (box("newton"), ("probs", "lower", "upper")),
    "box, W-Clip: bisection-50": (box("bisection", num_steps=50), ("probs", "lower", "upper")),
    "box, general: auto (default)": (box("auto"), ("g_v", "g_lower", "g_upper")),
    "box, general: sort": (box("sort"), ("g_v", "g_lower", "g_upper")),
    "box, general: newton": (box("newton"), ("g_v", "g_lower", "g_upper")),
    "box, general: bisection-50": (box("bisection", num_steps=50),
                                   ("g_v", "g_lower", "g_upper")),
}


def bench_size(batch: int, num_classes: int, repeats: int) -> tuple[dict, dict]:
    inputs = make_inputs(batch, num_classes)
    compiled, compile_s, outputs = {}, {}, {}
    for name, (fn, arg_names) in CASES.items():
        args = tuple(inputs[a] for a in arg_names)
        start = time.perf_counter()
        exe = jax.jit(fn).lower(*args).compile()
        compile_s[name] = time.perf_counter() - start
        outputs[name] = jax.block_until_ready(exe(*args))  # warm-up, excluded
        jax.block_until_ready(exe(*args))
        compiled[name] = (exe, args)
    times = {name: [] for name in CASES}
    for _ in range(repeats):
        for name, (exe, args) in compiled.items():
            start = time.perf_counter()
            jax.block_until_ready(exe(*args))
            times[name].append(time.perf_counter() - start)
    ref = float(np.median(times["softmax (reference)"]))
    rows = {}
    for name in CASES:
        med = float(np.median(times[name]))
        rows[name] = {"median_ms": med * 1e3, "min_ms": float(np.min(times[name])) * 1e3,
                      "ratio_to_softmax": med / ref, "compile_s": compile_s[name]}
    errors = {}
    for workload in ("W-Clip", "general"):
        sort = np.asarray(outputs[f"box, {workload}: sort"])
        for method in ("auto (default)", "newton", "bisection-50"):
            key = f"box, {workload}: {method}"
            errors[key] = float(np.abs(np.asarray(outputs[key]) - sort).max())
    wclip_ref = np.asarray(outputs["wclip"])
    errors["kl_projection (W-Clip set) vs wclip"] = float(
        np.abs(np.asarray(outputs["kl_projection (W-Clip set)"]) - wclip_ref).max())
    errors["box, W-Clip: auto (default) vs wclip"] = float(
        np.abs(np.asarray(outputs["box, W-Clip: auto (default)"]) - wclip_ref).max())
    return rows, errors


def check_targets(results: dict) -> list[dict]:
    checks = []

    def add(what, value, ok):
        checks.append({"check": what, "value": value, "pass": bool(ok)})

    for size, res in results.items():
        rows, errors = res["rows"], res["errors"]
        for name in ("wclip", "dus_teacher_loss"):
            r = rows[name]["ratio_to_softmax"]
            add(f"{size}: {name} within 3x of softmax", round(r, 2), r <= 3.0)
        for workload in ("W-Clip", "general"):
            default = f"box, {workload}: auto (default)"
            err = errors[default]
            add(f"{size}: default project_simplex_box ({workload} box) exact to 1e-6 vs sort",
                err, err <= 1e-6)
            speedup = (rows[f"box, {workload}: bisection-50"]["median_ms"]
                       / rows[default]["median_ms"])
            add(f"{size}: default project_simplex_box ({workload} box) >= 3x faster than "
                "bisection-50", round(speedup, 2), speedup >= 3.0)
    return checks


def to_markdown(results: dict, checks: list[dict], prov: dict) -> str:
    sizes = list(results)
    lines = [
        f"# Loss and projection cost on {jax.default_backend().upper()}, relative to softmax",
        "",
        f"Command: `python {prov['command']}`  ",
        f"Commit: {prov['commit']} ({prov['working_tree']}); hardware: {prov['hardware']}; "
        f"jax {prov['jax']}; "
        f"date: {prov['date']}; wall time: {prov['wall_seconds']} s; load average "
        f"(1/5/15 min) at start {prov['load_average_at_start']}, at end "
        f"{prov['load_average_1_5_15min']} (other processes share these cores).",
        "",
        "Per-call time after compilation (jit, block_until_ready, warm-up excluded), median "
        "over interleaved rounds; ratio = median / softmax's median in the same rounds. "
        "Projections get precomputed constraints (see the script's docstring for inputs).",
        "",
        "| function | " + " | ".join(f"{s}: ms | {s}: x softmax | {s}: compile s"
                                     for s in sizes) + " |",
        "| --- |" + " ---: | ---: | ---: |" * len(sizes),
    ]
    for name in CASES:
        cells = []
        for s in sizes:
            r = results[s]["rows"][name]
            cells += [f"{r['median_ms']:.3f}", f"{r['ratio_to_softmax']:.2f}",
                      f"{r['compile_s']:.2f}"]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += ["", "Max abs difference of each box method from the sort solver (and of the "
              "section-3 projections from wclip):", "",
              "| comparison | " + " | ".join(sizes) + " |", "| --- |" + " ---: |" * len(sizes)]
    for key in results[sizes[0]]["errors"]:
        lines.append(f"| {key} | " + " | ".join(f"{results[s]['errors'][key]:.2e}"
                                               for s in sizes) + " |")
    lines += ["", "Targets:", ""]
    lines += [f"- {'PASS' if c['pass'] else 'FAIL'}: {c['check']} ({c['value']:.3g})"
              for c in checks]
    return "\n".join(lines) + "\n"


def working_tree_state() -> str:
    """"clean", or a note that the measured code differs from the named commit."""
    try:
        out = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                             cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                             capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return "clean" if not out.strip() else "uncommitted changes to tracked files"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=21, help="timed rounds per size")
    parser.add_argument("--name", default="losses_cpu", help="results/NAME.{md,json}")
    parser.add_argument("--results_dir", default=RESULTS, help="where NAME.md/.json go")
    args = parser.parse_args()
    start = time.perf_counter()
    load_at_start = [round(x, 2) for x in os.getloadavg()]
    results = {}
    for batch, num_classes in SIZES:
        size = f"{batch}x{num_classes}"
        rows, errors = bench_size(batch, num_classes, args.repeats)
        results[size] = {"rows": rows, "errors": errors}
        for name, r in rows.items():
            print(f"{size:>10} {name:<30} {r['median_ms']:9.3f} ms  {r['ratio_to_softmax']:6.2f}x"
                  f"  compile {r['compile_s']:.2f} s", flush=True)
    checks = check_targets(results)
    for c in checks:
        print(f"{'PASS' if c['pass'] else 'FAIL'}: {c['check']} ({c['value']:.3g})")
    prov = provenance(time.perf_counter() - start)
    # Other processes on a shared machine distort timings; record how busy it was.
    prov["load_average_1_5_15min"] = [round(x, 2) for x in os.getloadavg()]
    prov["load_average_at_start"] = load_at_start
    prov["working_tree"] = working_tree_state()
    payload = {"provenance": prov, "repeats": args.repeats, "backend": jax.default_backend(),
               "results": results, "checks": checks}
    write_results(args.name, to_markdown(results, checks, prov), payload, args.results_dir)


if __name__ == "__main__":
    main()
