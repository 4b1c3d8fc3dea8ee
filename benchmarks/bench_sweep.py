"""Sweep throughput: N runs trained in one program vs the same N runs one after another.

    python benchmarks/bench_sweep.py                   # CPU: resnet8 -> 4 x resnet20, text too
    python benchmarks/bench_sweep.py --teacher=resnet32x4 --student=resnet8x4 \
        --num_runs=1,2,4,8,16 --modes=vmap --text_runs=1,2,4,8,16 --name=sweep_gpu   # a GPU

Vision: each of the N runs is a KD student of one shared frozen teacher (its forward pass in
the step) with its own seed: its own initialisation, epoch order and augmentation key, as
`config.sweep="seed=..."` trains them (`cud_jax.train.sweep.make_sweep_step`, in `unroll`
and `vmap` mode). Text: N KD students (a 3-layer, 384-wide MiniLM-shaped BERT, random
initialisation: no download) of cached teacher probabilities, on random token ids. The
single run is the ordinary step (`cud_jax.train.steps.make_train_step`); N runs one after
another take N times its step time (and, as separate processes, N compilations).
Reported: ms per step, aggregate examples/s (N x batch per sweep step), the speed-up over
sequential runs, the per-run wall time (the sweep's step time: every run advances one
step), and compile time (first call). N=1 also shows what a sweep of one costs next to the
plain run. Programs are timed alternately, best of `--rounds`.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

if "--device=cpu" in sys.argv:  # before JAX starts
    os.environ["JAX_PLATFORMS"] = "cpu"

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from flax import nnx  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
# This checkout's cud_jax, whatever copy the environment has installed.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from _common import cifar_augment, provenance, results_header, write_results  # noqa: E402

from cud_jax import models  # noqa: E402
from cud_jax.configs import base_config  # noqa: E402
from cud_jax.data.batching import epoch_permutation  # noqa: E402
from cud_jax.parallel.sharding import make_mesh, put_replicated  # noqa: E402
from cud_jax.train import objectives, optim, steps  # noqa: E402
from cud_jax.train import sweep as sweep_lib  # noqa: E402
from cud_jax.train.state import create_train_state, split_model  # noqa: E402


def _load() -> float:
    return os.getloadavg()[0]


def _runner(step_fn, state, args, steps_per_call):
    """`(run, compile seconds)`: run() does `steps_per_call` steps and blocks."""
    holder = {"state": state}

    def run():
        for _ in range(steps_per_call):
            holder["state"], metrics = step_fn(holder["state"], *args)
        jax.block_until_ready(metrics["loss"])

    start = time.perf_counter()
    run()  # compile + one pass
    return run, time.perf_counter() - start


class Case:
    """One workload: how to make a run's state, the single-run step and a sweep step."""

    def __init__(self, name, make_model, augment, inputs, labels, teacher_fn, teacher_vars,
                 batch, mesh):
        self.name, self.make_model, self.augment = name, make_model, augment
        self.batch, self.mesh = batch, mesh
        self.inputs, self.labels = put_replicated((inputs, labels), mesh)
        self.teacher_fn, self.teacher_vars = teacher_fn, teacher_vars
        cfg = base_config().student
        cfg.method = "kd"
        n = len(labels)
        self.spe = n // batch
        self.tx = optim.make_optimizer(cfg, self.spe, 1000)
        self.objective = objectives.student_objective(cfg)
        self.num_examples = n

    def state(self, seed):
        model_def, params, model_state = split_model(self.make_model(seed))
        return model_def, create_train_state(params, model_state, self.tx)

    def single(self, steps_per_call):
        model_def, state = self.state(1)
        step = steps.make_train_step(model_def, self.tx, self.objective, self.augment,
                                     batch_size=self.batch, steps_per_epoch=self.spe,
                                     mesh=self.mesh, teacher=self.teacher_fn)
        perm = put_replicated(epoch_permutation(0, 0, self.num_examples), self.mesh)
        return _runner(step, put_replicated(state, self.mesh),
                       (self.inputs, self.labels, perm, jax.random.PRNGKey(0),
                        self.teacher_vars), steps_per_call)

    def sweep(self, num, mode, steps_per_call):
        seeds = list(range(num))
        pairs = [self.state(s + 1) for s in seeds]
        step = sweep_lib.make_sweep_step(
            pairs[0][0], self.tx, [self.objective], [0] * num, self.augment,
            batch_size=self.batch, steps_per_epoch=self.spe, mesh=self.mesh,
            teacher=self.teacher_fn, run_keys=sweep_lib.stacked_keys(seeds),
            orders_stacked=True, mode=mode)
        orders = sweep_lib.stacked_epoch_order(seeds, self.num_examples, self.mesh)(0)[0]
        state = sweep_lib.stack_states([s for _, s in pairs])
        return _runner(step, put_replicated(state, self.mesh),
                       (self.inputs, self.labels, orders, jax.random.PRNGKey(0),
                        self.teacher_vars), steps_per_call)


def vision_case(args, mesh) -> Case:
    rng = np.random.default_rng(0)
    n = args.num_examples
    images = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
    labels = rng.integers(0, 100, n).astype(np.int32)
    teacher = models.create_model(args.teacher, num_classes=100, rngs=nnx.Rngs(0))
    t_def, t_params, t_state = split_model(teacher)
    return Case("vision", lambda seed: models.create_model(args.student, num_classes=100,
                                                           rngs=nnx.Rngs(seed)),
                cifar_augment, images, labels, steps.model_teacher(t_def),
                put_replicated((t_params, t_state), mesh), args.batch, mesh)


def text_case(args, mesh) -> Case:
    rng = np.random.default_rng(1)
    n, classes = args.num_examples, 77
    ids = rng.integers(1000, 30522, (n, args.text_length)).astype(np.int32)
    ids[:, 0] = 101  # [CLS]
    labels = rng.integers(0, classes, n).astype(np.int32)
    probs = jax.nn.softmax(jnp.asarray(rng.normal(0, 2, (n, classes)), jnp.float32), -1)

    def make(seed):
        return models.create_text_model(args.text_student, num_classes=classes,
                                        rngs=nnx.Rngs(seed))

    return Case("text", make, lambda key, x: x, ids, labels, steps.cached_teacher,
                put_replicated(probs, mesh), args.batch, mesh)


def bench_case(case: Case, args, nums, modes) -> dict:
    runners, compile_s, runs_of = {}, {}, {}
    runners["single"], compile_s["single"] = case.single(args.steps_per_call)
    runs_of["single"] = 1
    for num in nums:
        for mode in modes:
            if mode == "unroll" and num > args.unroll_max:
                continue
            name = f"sweep_{mode}_{num}"
            runners[name], compile_s[name] = case.sweep(num, mode, args.steps_per_call)
            runs_of[name] = num
            print(f"[{case.name}] {name}: compiled in {compile_s[name]:.1f} s", flush=True)
    best = {name: float("inf") for name in runners}
    for _ in range(args.rounds):  # alternating, best of rounds: the least disturbed timing
        for name, run in runners.items():
            start = time.perf_counter()
            run()
            best[name] = min(best[name], (time.perf_counter() - start) / args.steps_per_call)
    single = best["single"]
    rows = {}
    for name, seconds in best.items():
        num = runs_of[name]
        rows[name] = {"runs": num, "step_ms": 1000 * seconds,
                      "examples_per_s": num * case.batch / seconds,
                      "speedup_vs_sequential": num * single / seconds,
                      "compile_s": compile_s[name],
                      "compile_vs_single": compile_s[name] / compile_s["single"]}
    return rows


def _table(title, rows) -> list[str]:
    lines = [f"## {title}", "", "| program | runs | ms/step (= per-run wall per step) | "
             "aggregate examples/s | x sequential | compile s | compile / single |",
             "|---|---|---|---|---|---|---|"]
    for name, r in rows.items():
        lines.append(f"| {name} | {r['runs']} | {r['step_ms']:.1f} | {r['examples_per_s']:.0f}"
                     f" | {r['speedup_vs_sequential']:.2f} | {r['compile_s']:.1f} | "
                     f"{r['compile_vs_single']:.2f} |")
    return lines + [""]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--teacher", default="resnet8")
    parser.add_argument("--student", default="resnet20")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--num_runs", default="1,4", help="vision sweep sizes")
    parser.add_argument("--modes", default="unroll,vmap")
    parser.add_argument("--unroll_max", type=int, default=8,
                        help="largest N timed in unroll mode (its compile time grows with N)")
    parser.add_argument("--text_runs", default="1,4", help="text sweep sizes ('' skips text)")
    parser.add_argument("--text_student", default="bert_small:L=3,H=384,A=12,I=1536")
    parser.add_argument("--text_length", type=int, default=64)
    parser.add_argument("--steps_per_call", type=int, default=3)
    parser.add_argument("--num_examples", type=int, default=2048)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--name", default="sweep_cpu")
    parser.add_argument("--out", default=None, help="results folder (default results/)")
    parser.add_argument("--device", default=None, help="cpu: force the CPU backend")
    args = parser.parse_args()
    ints = lambda text: [int(x) for x in text.split(",") if x.strip()]  # noqa: E731
    modes = [m for m in args.modes.split(",") if m]

    load_start, start = _load(), time.perf_counter()
    mesh = make_mesh()
    results = {"vision": bench_case(vision_case(args, mesh), args, ints(args.num_runs), modes)}
    if ints(args.text_runs):
        results["text"] = bench_case(text_case(args, mesh), args, ints(args.text_runs), modes)
    meta = provenance(time.perf_counter() - start)
    lines = results_header(f"Sweep throughput: N runs in one program vs N runs one after "
                           f"another, batch {args.batch}", meta, (load_start, _load()))
    lines += ["Each sweep step trains N KD students (own seeds: initialisation, epoch order, "
              "augmentation) in one jitted program (`cud_jax.train.sweep`); `unroll`: the "
              "single-run step once per run inside the program, `vmap`: jax.vmap over the run "
              "axis. Sequential = N plain runs one after another (N x the single step time). "
              f"Best of {args.rounds} timings of {args.steps_per_call} steps, programs "
              "alternating; compile s = the first call.", ""]
    lines += _table(f"Vision: {args.student} students of a {args.teacher} teacher (forward in "
                    "the step), 32x32 images", results["vision"])
    if "text" in results:
        lines += _table(f"Text: `{args.text_student}` students (random init) of cached teacher "
                        f"probabilities, {args.text_length} tokens", results["text"])
    markdown = "\n".join(lines)
    print(markdown)
    write_results(args.name, markdown, {"meta": meta, "args": vars(args), "load": [
        load_start, _load()], **results}, **({"directory": args.out} if args.out else {}))


if __name__ == "__main__":
    main()
