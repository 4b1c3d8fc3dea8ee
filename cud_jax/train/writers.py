"""Where training metrics go: JSON lines, TensorBoard events and a terminal progress line.

Only process 0 writes, so multi-host runs produce one copy of everything.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from typing import Optional

import jax


def _is_writer() -> bool:
    return jax.process_index() == 0


class MetricWriter:
    """Appends `{"stage", "step", **metrics}` records to `metrics.jsonl` and TensorBoard.

    TensorBoard events are written through tensorboardX when it is installed (it needs no
    TensorFlow); without it only the JSON lines are written.
    """

    def __init__(self, workdir: str, stage: str):
        self.stage = stage
        self._jsonl = None
        self._tb = None
        if not _is_writer():
            return
        os.makedirs(workdir, exist_ok=True)
        self._jsonl = open(os.path.join(workdir, "metrics.jsonl"), "a", encoding="utf-8")
        try:
            from tensorboardX import SummaryWriter
        except ImportError:
            return
        self._tb = SummaryWriter(os.path.join(workdir, "tensorboard", stage))

    def write(self, step: int, metrics: dict) -> None:
        if self._jsonl is None:
            return
        record = {"stage": self.stage, "step": int(step),
                  **{k: float(v) for k, v in metrics.items()}}
        self._jsonl.write(json.dumps(record) + "\n")
        self._jsonl.flush()
        if self._tb is not None:
            for key, value in metrics.items():
                self._tb.add_scalar(key, float(value), int(step))

    def close(self) -> None:
        if self._jsonl is not None:
            self._jsonl.close()
        if self._tb is not None:
            self._tb.close()


def _duration(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    seconds = int(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{seconds:02d}s"


class Progress:
    """A one-line progress report with examples/s and ETA, printed at each log step.

    On a terminal the line is redrawn in place; in logs (CI, SLURM) each report is its own
    line. The first interval, which includes compilation, is excluded from the throughput.
    """

    def __init__(self, name: str, total_steps: int, batch_size: int, start_step: int = 0,
                 stream=None):
        self.name = name
        self.total = total_steps
        self.batch_size = batch_size
        self.stream = stream or sys.stdout
        self._tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self._mark: Optional[tuple[int, float]] = None
        self._start = (start_step, time.perf_counter())
        self.examples_per_sec = float("nan")

    def update(self, step: int, metrics: dict) -> None:
        now = time.perf_counter()
        if self._mark is not None and step > self._mark[0]:
            self.examples_per_sec = (step - self._mark[0]) * self.batch_size / (now - self._mark[1])
        self._mark = (step, now)
        if not _is_writer():
            return
        shown = "  ".join(f"{k} {float(v):.4g}" for k, v in metrics.items()
                          if k in ("loss", "accuracy", "kd", "wclip_fire_rate", "lr"))
        speed = "- ex/s  ETA ?"  # until two updates give a rate
        if math.isfinite(self.examples_per_sec):
            eta = (self.total - step) * self.batch_size / self.examples_per_sec
            speed = f"{self.examples_per_sec:.0f} ex/s  ETA {_duration(eta)}"
        line = (f"[{self.name}] step {step}/{self.total} ({100 * step / self.total:.0f}%)  "
                f"{shown}  {speed}")
        self.stream.write(("\r" + line + "\033[K") if self._tty else line + "\n")
        self.stream.flush()

    def close(self) -> None:
        elapsed = time.perf_counter() - self._start[1]
        if _is_writer():
            end = "\n" if self._tty else ""
            self.stream.write(f"{end}[{self.name}] done in {_duration(elapsed)}\n")
            self.stream.flush()
