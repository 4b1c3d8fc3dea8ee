"""Sweep throughput: N students trained in one vmapped step vs the same N runs one by one.

    python benchmarks/bench_sweep.py                                  # CPU: resnet8 -> resnet20
    python benchmarks/bench_sweep.py --teacher=resnet32x4 --student=resnet8x4 \
        --num_runs=1,2,4,8,16 --per_pass=0 --rounds=5 --steps_per_call=10 --name=sweep_gpu      # a GPU

Each of the N runs is a KD student of one shared frozen teacher with its own seed (its own
initialisation, epoch order and augmentation key), as `config.sweep="seed=..."` trains them
(`cud_jax.train.sweep.make_sweep_step`). The single run is the ordinary step
(`cud_jax.train.steps.make_train_step`); N runs one after another take N times its step
time (and, as separate processes, N compilations). Reported: aggregate images/s (N x batch
per sweep step), the speed-up over sequential runs, the sweep's per-step wall time, and
compile times; N=1 also shows what a sweep of one costs next to the plain run.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import provenance, time_call, write_results  # noqa: E402

from cud_jax import data as data_lib, models  # noqa: E402
from cud_jax.configs import base_config  # noqa: E402
from cud_jax.parallel.sharding import make_mesh, put_replicated  # noqa: E402
from cud_jax.train import objectives, optim, steps  # noqa: E402
from cud_jax.train import sweep as sweep_lib  # noqa: E402
from cud_jax.train.state import create_train_state, split_model  # noqa: E402

MEAN, STD = data_lib.CIFAR100_MEAN, data_lib.CIFAR100_STD


def _augment(key, images):
    return data_lib.normalize(data_lib.random_crop_flip(key, images), MEAN, STD)


def _state(model_name, seed, tx):
    model = models.create_model(model_name, num_classes=100, rngs=nnx.Rngs(seed))
    model_def, params, model_state = split_model(model)
    return model_def, create_train_state(params, model_state, tx)


def _timed_runner(step_fn, state, args, steps_per_call):
    """`(run, compile seconds)`: run() does `steps_per_call` steps and blocks."""
    holder = {"state": state}

    def run():
        for _ in range(steps_per_call):
            holder["state"], metrics = step_fn(holder["state"], *args)
        jax.block_until_ready(metrics["loss"])

    start = time.perf_counter()
    run()  # compile + one pass
    return run, time.perf_counter() - start


def bench(args) -> dict:
    mesh = make_mesh()
    config = base_config()
    cfg = ml_collections.ConfigDict(config.student.to_dict())
    cfg.method = "kd"
    rng = np.random.default_rng(0)
    n = args.num_examples
    images = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
    labels = rng.integers(0, 100, n).astype(np.int32)
    inputs, labels = put_replicated((images, labels), mesh)
    spe = n // args.batch
    tx = optim.make_optimizer(cfg, spe, 1000)
    t_def, t_state = _state(args.teacher, 0, tx)
    teacher_vars = put_replicated((t_state.params, t_state.model_state), mesh)
    teacher_fn = steps.model_teacher(t_def)
    objective = objectives.student_objective(cfg)
    key = jax.random.PRNGKey(0)

    s_def, single_state = _state(args.student, 1, tx)
    single = steps.make_train_step(s_def, tx, objective, _augment, batch_size=args.batch,
                                   steps_per_epoch=spe, mesh=mesh, teacher=teacher_fn)
    perm = put_replicated(data_lib.epoch_permutation(0, 0, n), mesh)
    runners, compile_s = {}, {}
    runners["single"], compile_s["single"] = _timed_runner(
        single, put_replicated(single_state, mesh), (inputs, labels, perm, key, teacher_vars),
        args.steps_per_call)
    sweeps = {}
    for num in args.num_runs:
        seeds = list(range(num))
        for per_pass in sorted({min(p or num, num) for p in args.per_pass}):
            state = sweep_lib.stack_states([_state(args.student, s + 1, tx)[1] for s in seeds])
            step = sweep_lib.make_sweep_step(
                s_def, tx, [objective], [0] * num, _augment, batch_size=args.batch,
                steps_per_epoch=spe, mesh=mesh, teacher=teacher_fn,
                keys=sweep_lib.stacked_keys(seeds), orders_stacked=True, per_pass=per_pass)
            orders = sweep_lib.stacked_epoch_order(seeds, n, mesh)(0)[0]
            name = f"sweep_{num}_by_{per_pass}"
            sweeps[name] = (num, per_pass)
            runners[name], compile_s[name] = _timed_runner(
                step, put_replicated(state, mesh), (inputs, labels, orders, key, teacher_vars),
                args.steps_per_call)
    best = {name: float("inf") for name in runners}
    for _ in range(args.rounds):  # alternate, best of rounds: the least disturbed timing
        for name, run in runners.items():
            best[name] = min(best[name], time_call(run, repeats=1) / args.steps_per_call)
    rows = {"single": {"runs": 1, "step_ms": 1000 * best["single"],
                       "images_per_s": args.batch / best["single"],
                       "compile_s": compile_s["single"]}}
    for name, (num, per_pass) in sweeps.items():
        seconds = best[name]
        rows[name] = {"runs": num, "per_pass": per_pass, "step_ms": 1000 * seconds,
                      "images_per_s": num * args.batch / seconds,
                      "speedup_vs_sequential": num * best["single"] / seconds,
                      "compile_s": compile_s[name]}
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--teacher", default="resnet8")
    parser.add_argument("--student", default="resnet20")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--num_runs", default="1,4")
    parser.add_argument("--per_pass", default="1,0",
                        help="runs vectorised per pass to time (0: all N in one vmap)")
    parser.add_argument("--steps_per_call", type=int, default=3)
    parser.add_argument("--num_examples", type=int, default=2048)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--name", default="sweep_cpu")
    args = parser.parse_args()
    args.num_runs = [int(x) for x in args.num_runs.split(",")]
    args.per_pass = [int(x) for x in args.per_pass.split(",")]

    start = time.perf_counter()
    rows = bench(args)
    meta = provenance(time.perf_counter() - start)
    lines = [f"# Sweep throughput: {args.student} KD students of a {args.teacher} teacher, "
             f"batch {args.batch}", "", f"Command: `python {meta['command']}`  ",
             f"Commit {meta['commit']}, {meta['date']}, {meta['hardware']}, jax "
             f"{meta['jax']}, wall {meta['wall_seconds']} s.", "",
             "A sweep step trains N students (own seeds: initialisation, epoch order, "
             "augmentation) in one vmapped program; sequential = N plain runs one after "
             "another (N x the single step time). Best of "
             f"{args.rounds} timings of {args.steps_per_call} steps, variants alternating.",
             " `sweep_N_by_P`: N runs, P of them vectorised per pass (P = N: one vmap over "
             "all; P = 1: `lax.map`, one run after another inside the one program).",
             "", "| program | runs | ms/step | aggregate images/s | x sequential | "
             "compile s |", "|---|---|---|---|---|---|"]
    for name, row in rows.items():
        speedup = row.get("speedup_vs_sequential")
        lines.append(f"| {name} | {row['runs']} | {row['step_ms']:.1f} | "
                     f"{row['images_per_s']:.0f} | {'-' if speedup is None else f'{speedup:.2f}'}"
                     f" | {row['compile_s']:.1f} |")
    markdown = "\n".join(lines) + "\n"
    print(markdown)
    write_results(args.name, markdown, {"meta": meta, "args": vars(args), "rows": rows})


if __name__ == "__main__":
    main()
