"""Our distillation training steps side by side with the peer's (mdistiller, PyTorch).

    python benchmarks/bench_vs_peer.py --peer=PATH/peer_step.py                  # CPU
    python benchmarks/bench_vs_peer.py --peer=PATH/peer_step.py --device=cuda --devices=1 \
        --pairs=resnet32x4-resnet8x4,wrn_40_2-wrn_16_2,resnet56-resnet20 \
        --batches=64,512 --dtypes=float32,bfloat16 --steps_per_call=1,10 --name=train_step_gpu

For each pair, batch size and precision, our KD, CUD and DKD student steps (frozen teacher
forward, student forward and backward, loss, SGD update; the batch gathered from the
training split on device and randomly cropped and flipped inside the step) and our DUS
teacher step, against the peer's KD and DKD steps (`peer_step.py`: a constant random batch
already on the device, compute only) on the same pair, batch, precision and device. The
peer runs as a subprocess of its own file (`--peer`); nothing of it is imported here.

The machine may be shared and noisy, so the two sides ALTERNATE: each round times every
variant of ours (in long-lived worker processes, one per device count, compiled once) and
then one fresh peer process, and the table gives the median over rounds of images/s and of
the per-round ratio ours / peer. With `--real_data` (an image-folder tarball such as the
CIFAR-10 JPEGs, and the same data extracted for the peer as `--peer_folder`), it times
instead our KD step over the real training split, on device, against the peer's DataLoader
(`--loader_workers`).

Results go to results/NAME.md and .json after every group; with `--resume`, groups already
in the results file are kept and skipped (a long run stopped halfway continues).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
# Measure this checkout's cud_jax, whatever copy the environment has installed.
sys.path.insert(0, os.path.dirname(HERE))
# The workers' environment, before this (orchestrating) process keeps JAX off the device.
WORKER_ENV = dict(os.environ)
PRECISION = {"float32": "fp32", "bfloat16": "bf16"}  # peer_step.py's names
PEER_METHODS = ("kd", "dkd")  # the methods peer_step.py implements


# ----------------------------------------------------------------------------- worker side
def _worker(args) -> None:
    """Builds and compiles our steps, then answers `{"variant", "calls"}` lines on stdin
    with one JSON line of seconds per step on stdout (logs go to stderr)."""
    if args.device == "cpu":
        os.environ.setdefault("JAX_PLATFORMS", "cpu")
        if args.devices > 1:  # before JAX initialises its backend
            from cud_jax.parallel.host_devices import emulate_cpu_devices
            emulate_cpu_devices(args.devices)
    import jax
    import jax.numpy as jnp
    import ml_collections
    import numpy as np

    sys.path.insert(0, HERE)
    from _common import DTYPES, build_state, cifar_augment, hardware

    from cud_jax import data as data_lib
    from cud_jax.train import steps
    from cud_jax.configs import base_config
    from cud_jax.parallel.sharding import make_mesh, put_replicated

    if jax.device_count() < args.devices:
        raise SystemExit(f"{args.devices} devices asked, {jax.device_count()} present; lower "
                         "--devices.")
    mesh = make_mesh(jax.devices()[:args.devices])
    dtype = DTYPES[args.dtype]
    teacher_name, student_name = args.pair.split("-")
    if args.real_data:
        limit = {} if args.real_limit_per_class is None else {
            "limit_per_class": args.real_limit_per_class}
        vision = data_lib.load_vision("image_folder", data_dir=args.real_data, val_size=0,
                                      **limit)
        images, labels = vision.train.inputs, vision.train.labels
        num_classes = int(labels.max()) + 1
    else:  # random uint8 images: the compute does not depend on the pixels
        rng = np.random.default_rng(0)
        images = rng.integers(0, 256, (args.num_examples, 32, 32, 3), dtype=np.uint8)
        labels = rng.integers(0, 100, args.num_examples).astype(np.int32)
        num_classes = 100
    inputs, labels = put_replicated((images, labels), mesh)
    num_examples = len(images)
    perm = put_replicated(data_lib.epoch_permutation(0, 0, num_examples), mesh)
    spe = num_examples // args.batch
    k = args.steps_per_call
    if spe < k:
        raise SystemExit(f"{num_examples} examples give {spe} batches of {args.batch}, fewer "
                         f"than steps_per_call={k}; raise --num_examples.")
    config = base_config()
    key = jax.random.PRNGKey(0)

    t_def, t_state, t_obj, t_tx, _ = build_state("teacher", config.teacher, teacher_name,
                                                 dtype, mesh, num_classes=num_classes)
    # A copy: the teacher step donates (and so deletes) its state's buffers.
    teacher_vars = jax.tree_util.tree_map(jnp.copy, (t_state.params, t_state.model_state))
    runs = {}
    for variant in args.variants.split(","):
        if variant == "teacher":
            step = steps.make_train_step(t_def, t_tx, t_obj, cifar_augment, batch_size=args.batch,
                                         steps_per_epoch=spe, mesh=mesh)
            runs[variant] = [step, t_state, None]
            continue
        cfg = ml_collections.ConfigDict(config.student.to_dict())
        cfg.method = variant
        s_def, s_state, s_obj, s_tx, teacher_fn = build_state(
            "student", cfg, student_name, dtype, mesh, teacher_def=t_def,
            num_classes=num_classes)
        step = steps.make_train_step(s_def, s_tx, s_obj, cifar_augment, batch_size=args.batch,
                                     steps_per_epoch=spe, mesh=mesh, teacher=teacher_fn)
        runs[variant] = [step, s_state, teacher_vars]

    def run_calls(variant, calls):
        entry = runs[variant]
        step, state, tvars = entry
        for _ in range(calls):
            # The whole run stays in one epoch's order (the step index wraps around it).
            if k == 1:
                state, metrics = step(state, inputs, labels, perm, key, tvars)
            else:
                state, metrics = step(state, inputs, labels, perm, key, tvars, num_steps=k)
        jax.block_until_ready((state, metrics))
        entry[1] = state

    compile_s = {}
    for variant in runs:
        start = time.perf_counter()
        run_calls(variant, 1)  # compile + one call
        compile_s[variant] = time.perf_counter() - start
        print(f"[worker {args.devices} dev] {variant} compiled in {compile_s[variant]:.1f} s",
              file=sys.stderr, flush=True)
    print(json.dumps({"ready": compile_s, "hardware": hardware(), "jax": jax.__version__}),
          flush=True)
    for line in sys.stdin:
        request = json.loads(line)
        start = time.perf_counter()
        run_calls(request["variant"], request["calls"])
        seconds = (time.perf_counter() - start) / (request["calls"] * k)
        print(json.dumps({"seconds_per_step": seconds}), flush=True)


class Worker:
    """A worker process of this script holding one device count's compiled steps."""

    def __init__(self, args, devices: int, pair: str, batch: int, dtype: str, k: int,
                 real_data: str | None, variants: list):
        cmd = [sys.executable, os.path.abspath(__file__), "--worker", f"--device={args.device}",
               f"--devices={devices}", f"--pair={pair}", f"--batch={batch}", f"--dtype={dtype}",
               f"--steps_per_call={k}", f"--variants={','.join(variants)}",
               f"--num_examples={args.num_examples}"]
        if real_data:
            cmd.append(f"--real_data={real_data}")
            if args.real_limit_per_class is not None:
                cmd.append(f"--real_limit_per_class={args.real_limit_per_class}")
        env = dict(WORKER_ENV)
        if args.device == "cuda":  # leave the peer, run alongside, room on the same GPU
            env.setdefault("XLA_PYTHON_CLIENT_MEM_FRACTION", "0.4")
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     text=True, env=env)

    def wait_ready(self) -> "Worker":
        """Waits for the worker's compilations (workers started together compile together)."""
        ready = self._read()
        self.compile_s, self.hardware, self.jax = ready["ready"], ready["hardware"], ready["jax"]
        return self

    def _read(self) -> dict:
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"benchmark worker exited with status {self.proc.wait()}; see "
                               "its messages above.")
        return json.loads(line)

    def time(self, variant: str, calls: int) -> float:
        self.proc.stdin.write(json.dumps({"variant": variant, "calls": calls}) + "\n")
        self.proc.stdin.flush()
        return self._read()["seconds_per_step"]

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait()


# ------------------------------------------------------------------------------- the peer
def _peer(args, pair: str, batch: int, dtype: str, extra=()) -> list:
    """Runs peer_step.py once; returns its result records."""
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "peer.json")
        cmd = [args.peer_python, args.peer, f"--device={args.device}", f"--pairs={pair}",
               f"--batches={batch}", f"--precisions={PRECISION[dtype]}",
               f"--methods={','.join(PEER_METHODS)}", f"--steps={args.steps}",
               f"--warmup={args.peer_warmup}", "--rounds=1", f"--out={out}", *extra]
        if args.device == "cpu":
            cmd.append(f"--threads={args.threads}")
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        with open(out, encoding="utf-8") as f:
            return json.load(f)["results"]


#: What the workers report of the machine (this process never starts JAX on the device).
HOST = {"hardware": "?", "jax": "?"}


def _median(values):
    return statistics.median(values) if values else None


def bench_group(args, pair: str, batch: int, dtype: str, k: int) -> dict:
    """Alternating rounds of our variants (every device count) and the peer's steps."""
    device_counts = [int(d) for d in args.devices.split(",")]
    # The first device count runs every variant; the others `--other_device_variants`.
    others = args.other_device_variants or args.variants
    variants = {d: (args.variants if i == 0 else others).split(",")
                for i, d in enumerate(device_counts)}
    workers = {d: Worker(args, d, pair, batch, dtype, k, None, variants[d])
               for d in device_counts}
    for worker in workers.values():
        worker.wait_ready()
    ours = {(d, v): [] for d in device_counts for v in variants[d]}
    peer = {m: [] for m in PEER_METHODS}
    calls = max(1, -(-args.steps // k))  # at least --steps steps per timing
    loads = []  # the machine's 1-minute load average after each round
    try:
        HOST.update(hardware=workers[device_counts[-1]].hardware,
                    jax=workers[device_counts[-1]].jax)
        for r in range(args.rounds):
            for d, worker in workers.items():
                for v in variants[d]:
                    ours[(d, v)].append(worker.time(v, calls))
            for record in _peer(args, pair, batch, dtype):
                peer[record["method"]].append(record["ms_per_step"] / 1000)
            loads.append(os.getloadavg()[0])
            print(f"  round {r + 1}/{args.rounds}: " + ", ".join(
                f"{d}dev {v} {batch / ours[(d, v)][-1]:.0f}" for d, v in ours) + " | peer "
                + ", ".join(f"{m} {batch / s[-1]:.0f}" for m, s in peer.items()) + " img/s",
                flush=True)
    finally:
        for worker in workers.values():
            worker.close()
    rows = []
    for (d, v), seconds in ours.items():
        row = {"devices": d, "variant": v, "images_per_s": batch / _median(seconds),
               "ms_per_step": 1000 * _median(seconds),
               "compile_s": workers[d].compile_s[v], "rounds_s": seconds}
        match = v if v in PEER_METHODS else None
        if match:
            row["ratio_vs_peer"] = _median([p / o for o, p in zip(seconds, peer[match])])
        if v == "cud" and "kd" in variants[d]:
            row["step_time_vs_kd"] = _median([c / kd for c, kd in
                                              zip(seconds, ours[(d, "kd")])])
        rows.append(row)
    peers = [{"method": m, "images_per_s": batch / _median(s), "ms_per_step": 1000 * _median(s),
              "rounds_s": s} for m, s in peer.items()]
    return {"pair": pair, "batch": batch, "dtype": dtype, "steps_per_call": k, "ours": rows,
            "peer": peers, "load_average": loads}


def bench_real_data(args, pair: str, batch: int) -> dict:
    """Our KD step over the real training split on device vs the peer's DataLoader."""
    worker = Worker(args, 1, pair, batch, "float32", 1, args.real_data, ["kd"]).wait_ready()
    try:
        ours = [batch / worker.time("kd", max(1, args.steps)) for _ in range(args.rounds)]
    finally:
        worker.close()
    workers = [int(w) for w in args.loader_workers.split(",")]
    records = _peer(args, pair, batch, "float32",
                    extra=[f"--loader={args.peer_folder}", f"--workers={args.loader_workers}",
                           "--classes=10"])
    loader = {r["num_workers"]: r["images_per_s"] for r in records
              if r["kind"] == "peer_step_real_loader"}
    best = max(loader.values())
    return {"pair": pair, "batch": batch, "ours_images_per_s": _median(ours),
            "peer_loader_images_per_s": {str(w): loader.get(w) for w in workers},
            "ratio_vs_best_peer_loader": _median(ours) / best}


# ------------------------------------------------------------------------------- reporting
def _markdown(args, meta: dict, groups: list, real: list) -> str:
    lines = [f"# Training steps side by side with the peer ({args.device})", "",
             f"Command: `python {meta['command']}`  ",
             f"Commit {meta['commit']}, {meta['date']}, {meta['hardware']}, jax {meta['jax']}; "
             f"peer: mdistiller's models in `peer_step.py`, torch {meta.get('torch', '?')}"
             f"{f', {args.threads} threads' if args.device == 'cpu' else ''}.", "",
             f"Median of {args.rounds} rounds; each round times every variant of ours "
             f"(at least {args.steps} steps each, after a compile call) and then runs the peer "
             "once (its KD and DKD steps, "
             f"{args.peer_warmup} warm-up + {args.steps} timed steps). Ratio: ours / peer "
             "images/s, the median of the per-round ratios. Our student steps gather and "
             "augment their batch on device; the peer's reuse one constant batch.", ""]
    for g in groups:
        lines += [f"## {g['pair']}, batch {g['batch']}, {g['dtype']}, "
                  f"{g['steps_per_call']} step(s) per call", "",
                  f"Load average after each round: "
                  f"{', '.join(f'{x:.1f}' for x in g.get('load_average', []))} "
                  f"({os.cpu_count()} cores).", "",
                  "| step | devices | images/s | ms/step | compile s | ours / peer | "
                  "cud / kd time |", "|---|---|---|---|---|---|---|"]
        for r in g["ours"]:
            ratio = f"{r['ratio_vs_peer']:.2f}x" if "ratio_vs_peer" in r else "-"
            cud = f"{r['step_time_vs_kd']:.3f}" if "step_time_vs_kd" in r else "-"
            lines.append(f"| ours {r['variant']} | {r['devices']} | {r['images_per_s']:.1f} | "
                         f"{r['ms_per_step']:.0f} | {r['compile_s']:.1f} | {ratio} | {cud} |")
        for p in g["peer"]:
            lines.append(f"| peer {p['method']} | - | {p['images_per_s']:.1f} | "
                         f"{p['ms_per_step']:.0f} | - | - | - |")
        lines.append("")
    if real:
        lines += ["## Real input path: our on-device pipeline vs the peer's DataLoader", "",
                  "| pair | batch | ours images/s | peer images/s by workers | ours / best peer |",
                  "|---|---|---|---|---|"]
        lines += [f"| {r['pair']} | {r['batch']} | {r['ours_images_per_s']:.0f} | "
                  + ", ".join(f"{w}: {v}" for w, v in r["peer_loader_images_per_s"].items())
                  + f" | {r['ratio_vs_best_peer_loader']:.2f}x |" for r in real]
        lines.append("")
    return "\n".join(lines) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--peer", help="path to peer_step.py (required)")
    parser.add_argument("--peer_python", default=sys.executable,
                        help="the Python with torch that runs the peer")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--devices", default="1,8",
                        help="our device counts (CPU: emulated devices); one GPU: 1")
    parser.add_argument("--threads", type=int, default=2, help="the peer's CPU threads")
    parser.add_argument("--pairs", default="resnet56-resnet20,resnet32x4-resnet8x4")
    parser.add_argument("--batches", default="64")
    parser.add_argument("--dtypes", default="float32")
    parser.add_argument("--variants", default="kd,cud,dkd,teacher",
                        help="ours: student methods and/or `teacher` (the DUS teacher step)")
    parser.add_argument("--other_device_variants", default="kd,cud,dkd",
                        help="the variants timed on the device counts after the first")
    parser.add_argument("--steps_per_call", default="1", help="comma list of k")
    parser.add_argument("--steps", type=int, default=3, help="timed steps per round and side")
    parser.add_argument("--peer_warmup", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--num_examples", type=int, default=4096)
    parser.add_argument("--real_data", default=None,
                        help="image-folder tarball or folder for our real-input timing")
    parser.add_argument("--peer_folder", default=None,
                        help="the same images extracted, train/ (the peer's --loader)")
    parser.add_argument("--real_limit_per_class", type=int, default=None,
                        help="our real-input timing reads only this many images a class")
    parser.add_argument("--loader_workers", default="4,8")
    parser.add_argument("--name", default="train_step_cpu")
    parser.add_argument("--results_dir", default=None, help="where NAME.md/.json go "
                        "(default: the repository's results/)")
    parser.add_argument("--resume", action="store_true",
                        help="keep and skip groups already in results/NAME.json")
    # Worker mode (internal): one device count's steps, driven over stdin/stdout.
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--pair", help=argparse.SUPPRESS)
    parser.add_argument("--batch", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--dtype", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        args.devices, args.steps_per_call = int(args.devices), int(args.steps_per_call)
        return _worker(args)
    if not args.peer or not os.path.isfile(args.peer):
        parser.error("--peer=PATH/peer_step.py is required (the peer's timing script).")
    if args.real_data and not args.peer_folder:
        parser.error("--real_data needs --peer_folder (the same images extracted for the peer).")

    os.environ["JAX_PLATFORMS"] = "cpu"  # this process only orchestrates
    sys.path.insert(0, HERE)
    from _common import RESULTS, provenance, write_results

    start = time.perf_counter()
    results_dir = args.results_dir or RESULTS
    path = os.path.join(results_dir, args.name + ".json")
    groups, real = [], []
    if args.resume and os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            saved = json.load(f)
        groups, real = saved.get("groups", []), saved.get("real_data", [])
    done = {(g["pair"], g["batch"], g["dtype"], g["steps_per_call"]) for g in groups}
    torch_version = subprocess.run(
        [args.peer_python, "-c", "import torch; print(torch.__version__)"],
        capture_output=True, text=True, check=True).stdout.strip()

    def save():
        meta = provenance(time.perf_counter() - start)
        meta.update(HOST, torch=torch_version)
        markdown = _markdown(args, meta, groups, real)
        write_results(args.name, markdown, {"meta": meta, "groups": groups, "real_data": real},
                      results_dir)
        return markdown

    for pair in args.pairs.split(",") if not args.real_data else ():
        for batch in map(int, args.batches.split(",")):
            for dtype in args.dtypes.split(","):
                for k in map(int, args.steps_per_call.split(",")):
                    if (pair, batch, dtype, k) in done:
                        print(f"{pair} batch {batch} {dtype} k={k}: already in {path}")
                        continue
                    print(f"{pair} batch {batch} {dtype} k={k} ...", flush=True)
                    groups.append(bench_group(args, pair, batch, dtype, k))
                    save()
    if args.real_data:
        done_real = {(r["pair"], r["batch"]) for r in real}
        for pair in args.pairs.split(","):
            batch = int(args.batches.split(",")[0])
            if (pair, batch) not in done_real:
                real.append(bench_real_data(args, pair, batch))
                save()
    print(save())


if __name__ == "__main__":
    main()
