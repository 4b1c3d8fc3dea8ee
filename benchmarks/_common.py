"""Helpers shared by the benchmark scripts: timing, results files with provenance, and the
vision training steps that the step benchmarks time."""

from __future__ import annotations

import datetime
import json
import os
import platform
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
from flax import nnx

from cud_jax import data as data_lib, models
from cud_jax.train import objectives, optim, steps
from cud_jax.parallel.sharding import put_replicated
from cud_jax.train.state import create_train_state, split_model

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(REPO, "results")


def load_config(name: str, arg: str | None = None):
    """`configs/<name>.py`'s `get_config(arg)`, loaded as `--config=configs/<name>.py:arg` is."""
    from cud_jax.configs import load_config_file

    return load_config_file(os.path.join(REPO, "configs", f"{name}.py"), arg)


def git_commit() -> str:
    """The checkout's short commit; $CUD_JAX_COMMIT where the copy has no .git (a device)."""
    if os.environ.get("CUD_JAX_COMMIT"):
        return os.environ["CUD_JAX_COMMIT"]
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO,
                                capture_output=True, text=True, check=True).stdout.strip()
        status = subprocess.run(["git", "status", "--porcelain", "--", "cud_jax"], cwd=REPO,
                                capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    # Library code changed since the commit is measured too: say so.
    return commit + ("+uncommitted" if status.strip() else "")


def hardware() -> str:
    device = jax.devices()[0]
    kind = getattr(device, "device_kind", device.platform)
    return (f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores, "
            f"backend {jax.default_backend()} ({kind}), {jax.device_count()} JAX devices")


def provenance(wall_seconds: float) -> dict:
    return {"command": " ".join([os.path.relpath(sys.argv[0], REPO)] + sys.argv[1:]),
            "commit": git_commit(), "hardware": hardware(), "jax": jax.__version__,
            "date": datetime.datetime.now().strftime("%Y-%m-%d %H:%M"),
            "wall_seconds": round(wall_seconds, 1)}


def results_header(title: str, meta: dict, load: tuple[float, float]) -> list[str]:
    """A results file's first lines: title, command, provenance and the machine's load.

    `load`: the 1-minute load average at the start and at the end (a shared machine's
    figures are only comparable within one file).
    """
    return [f"# {title}", "", f"Command: `{meta['command']}`  ",
            f"Commit {meta['commit']}, {meta['date']}, {meta['hardware']}, backend "
            f"{jax.default_backend()}, jax {meta['jax']}, wall {meta['wall_seconds']} s; "
            f"1-minute load average {load[0]:.1f} at the start, {load[1]:.1f} at the end.", ""]


def time_call(fn, *, repeats: int = 5, number: int = 1) -> float:
    """Median seconds per call of `fn()` (which must block until its result is ready)."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(number):
            fn()
        times.append((time.perf_counter() - start) / number)
    times.sort()
    return times[len(times) // 2]


def _portable(text: str) -> str:
    """This machine's paths written relative to the repository (results are committed)."""
    parent = os.path.dirname(REPO)
    return text.replace(REPO, "<repo>").replace(parent, "<repo>/..")


def write_results(name: str, markdown: str, payload: dict, directory: str = RESULTS) -> None:
    """Writes DIRECTORY/NAME.md and DIRECTORY/NAME.json (by default in results/)."""
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, name + ".md"), "w", encoding="utf-8") as f:
        f.write(_portable(markdown))
    with open(os.path.join(directory, name + ".json"), "w", encoding="utf-8") as f:
        f.write(_portable(json.dumps(payload, indent=2)))
    print(f"wrote {os.path.join(directory, name)}.md and .json")


DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def cifar_augment(key, images):
    """The CIFAR training augmentation (random crop + flip, normalisation) on uint8 images."""
    return data_lib.normalize(data_lib.random_crop_flip(key, images), data_lib.CIFAR100_MEAN,
                              data_lib.CIFAR100_STD)


def build_state(name, cfg, model_name, dtype, mesh, teacher_def=None, num_classes=100):
    """(model_def, replicated initial state, objective, tx, teacher_fn) of a stage's step.

    `name` is `teacher` (the teacher objective) or `student`; a student with `teacher_def`
    runs that frozen teacher's forward pass inside its step.
    """
    model = models.create_model(model_name, num_classes=num_classes, rngs=nnx.Rngs(0),
                                dtype=dtype)
    model_def, params, model_state = split_model(model)
    tx = optim.make_optimizer(cfg, 100, 1000)
    state = put_replicated(create_train_state(params, model_state, tx), mesh)
    objective = (objectives.teacher_objective(cfg) if name == "teacher"
                 else objectives.student_objective(cfg))
    teacher_fn = None if teacher_def is None else steps.model_teacher(teacher_def)
    return model_def, state, objective, tx, teacher_fn
