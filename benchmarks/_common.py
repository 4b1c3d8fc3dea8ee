"""Helpers shared by the benchmark scripts: timing and results files with provenance."""

from __future__ import annotations

import datetime
import json
import os
import platform
import subprocess
import sys
import time

import jax

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(REPO, "results")


def git_commit() -> str:
    """The checkout's short commit; $CUD_JAX_COMMIT where the copy has no .git (a device)."""
    if os.environ.get("CUD_JAX_COMMIT"):
        return os.environ["CUD_JAX_COMMIT"]
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO,
                              capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


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


def write_results(name: str, markdown: str, payload: dict) -> None:
    """Writes results/NAME.md and results/NAME.json."""
    os.makedirs(RESULTS, exist_ok=True)
    with open(os.path.join(RESULTS, name + ".md"), "w", encoding="utf-8") as f:
        f.write(_portable(markdown))
    with open(os.path.join(RESULTS, name + ".json"), "w", encoding="utf-8") as f:
        f.write(_portable(json.dumps(payload, indent=2)))
    print(f"wrote results/{name}.md and .json")
