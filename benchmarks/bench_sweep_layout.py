"""Sweep layouts: every run's batch split over the devices (`batch`) vs the runs placed over
the devices (`runs`), both vmapped (`cud_jax.train.sweep.resolve_layout`).

    python benchmarks/bench_sweep_layout.py             # 8 emulated CPU devices, 8 resnet8 runs
    python benchmarks/bench_sweep_layout.py --cpu_devices=0 --name=sweep_layout_gpu  # real chips

N KD students (own seeds: initialisation, epoch order, augmentation) of one shared frozen
teacher (its forward pass in the step), batch 64 each, on a mesh of D devices. `batch`: the
stacked state replicated, each run's batch split D ways, so every step reduces each run's
gradients and BatchNorm statistics across the devices. `runs`: the run axis split D ways,
each run's state and whole batch on one device, no collective inside a run. `--unroll` adds
the CPU default (unroll mode, which has only the `batch` layout) for reference. Programs are
timed alternately, best of `--rounds`.

Emulated CPU devices (XLA_FLAGS=--xla_force_host_platform_device_count=D) are threads that
share the machine's cores: the figures compare the layouts' overheads (collectives,
duplicated work, the shape of each device's program), not the speed of D real chips.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
# This checkout's cud_jax, whatever copy the environment has installed.
sys.path.insert(0, REPO)


def _args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cpu_devices", type=int, default=8,
                        help="emulated CPU devices (0: the backend's devices as they are)")
    parser.add_argument("--teacher", default="resnet8")
    parser.add_argument("--student", default="resnet8")
    parser.add_argument("--num_runs", type=int, default=8)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--num_examples", type=int, default=1024)
    parser.add_argument("--steps_per_call", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--unroll", action="store_true",
                        help="also time unroll mode (batch layout), the CPU default")
    parser.add_argument("--name", default="sweep_layout_cpu")
    parser.add_argument("--out", default=None, help="results folder (default results/)")
    return parser.parse_args()


ARGS = _args()
if ARGS.cpu_devices:  # before JAX starts: the device count is an XLA flag
    from cud_jax.parallel.host_devices import emulate_cpu_devices

    os.environ["JAX_PLATFORMS"] = "cpu"
    emulate_cpu_devices(ARGS.cpu_devices)

import jax  # noqa: E402

from _common import provenance, results_header, write_results  # noqa: E402
from bench_sweep import _runner, vision_case  # noqa: E402
from cud_jax.parallel.sharding import (RUN_SHARDING, make_mesh, put_state,  # noqa: E402
                                       state_sharding)
from cud_jax.train import sweep as sweep_lib  # noqa: E402


def layout_runner(case, num: int, mode: str, layout: str, steps_per_call: int):
    """`(run, compile seconds)` of a sweep of `num` seeds in `mode` and `layout`."""
    seeds = list(range(num))
    pairs = [case.state(seed + 1) for seed in seeds]
    state = sweep_lib.stack_states([s for _, s in pairs])
    rule = RUN_SHARDING if layout == "runs" else "replicated"
    step = sweep_lib.make_sweep_step(
        pairs[0][0], case.tx, [case.objective], [0] * num, case.augment,
        batch_size=case.batch, steps_per_epoch=case.spe, mesh=case.mesh,
        teacher=case.teacher_fn, run_keys=sweep_lib.stacked_keys(seeds), orders_stacked=True,
        state_sharding=state_sharding(state, case.mesh, rule), mode=mode, layout=layout)
    orders = sweep_lib.stacked_epoch_order(seeds, case.num_examples, case.mesh)(0)[0]
    return _runner(step, put_state(state, case.mesh, rule),
                   (case.inputs, case.labels, orders, jax.random.PRNGKey(0),
                    case.teacher_vars), steps_per_call)


def main():
    args = ARGS
    load_start, start = os.getloadavg()[0], time.perf_counter()
    mesh = make_mesh()
    devices = mesh.devices.size
    case = vision_case(args, mesh)
    programs = [("vmap", "batch"), ("vmap", "runs")] + ([("unroll", "batch")]
                                                        if args.unroll else [])
    runners, compile_s = {}, {}
    for mode, layout in programs:
        name = f"{mode}/{layout}"
        runners[name], compile_s[name] = layout_runner(case, args.num_runs, mode, layout,
                                                       args.steps_per_call)
        print(f"{name}: compiled in {compile_s[name]:.1f} s", flush=True)
    timings = {name: [] for name in runners}
    for _ in range(args.rounds):  # alternating, best of rounds: the least disturbed timing
        for name, run in runners.items():
            begin = time.perf_counter()
            run()
            timings[name].append((time.perf_counter() - begin) / args.steps_per_call)
    base = min(timings["vmap/batch"])
    rows = {name: {"mode": name.split("/")[0], "layout": name.split("/")[1],
                   "runs": args.num_runs, "devices": devices,
                   "step_ms": 1000 * min(t), "step_ms_rounds": [1000 * x for x in t],
                   "examples_per_s": args.num_runs * args.batch / min(t),
                   "speedup_vs_vmap_batch": base / min(t), "compile_s": compile_s[name]}
            for name, t in timings.items()}
    meta = provenance(time.perf_counter() - start)
    lines = results_header(f"Sweep layouts: {args.num_runs} {args.student} KD students on "
                           f"{devices} devices, batch {args.batch} each", meta,
                           (load_start, os.getloadavg()[0]))
    emulated = (f"The {devices} devices are emulated CPU devices "
                "(`--xla_force_host_platform_device_count`) sharing this machine's "
                f"{os.cpu_count()} cores, so this measures the layouts' overheads "
                "(collectives, duplicated work, per-device program shape), not real "
                "multi-chip speed. " if args.cpu_devices else "")
    lines += [f"Each step trains {args.num_runs} KD students (own seeds) of a {args.teacher} "
              "teacher (forward in the step) in one jitted program. `batch`: each run's batch "
              f"split over the {devices} devices (a gradient and BatchNorm all-reduce per run "
              "per step); `runs`: the run axis split over the devices, each run whole on one "
              f"device. {emulated}Best of {args.rounds} timings of {args.steps_per_call} "
              "steps, programs alternating; compile s = the first call.", "",
              "| mode | layout | ms/step | aggregate examples/s | x vmap/batch | compile s | "
              "ms/step each round |", "|---|---|---|---|---|---|---|"]
    for r in rows.values():
        lines.append(f"| {r['mode']} | {r['layout']} | {r['step_ms']:.0f} | "
                     f"{r['examples_per_s']:.0f} | {r['speedup_vs_vmap_batch']:.2f} | "
                     f"{r['compile_s']:.1f} | "
                     f"{', '.join(f'{x:.0f}' for x in r['step_ms_rounds'])} |")
    markdown = "\n".join(lines + [""])
    print(markdown)
    write_results(args.name, markdown, {"meta": meta, "args": vars(args), "load": [
        load_start, os.getloadavg()[0]], "rows": rows},
        **({"directory": args.out} if args.out else {}))


if __name__ == "__main__":
    main()
