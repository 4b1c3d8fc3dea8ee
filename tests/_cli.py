"""Running `python -m cud_jax.main` from tests, as a user would on the command line."""

from __future__ import annotations

import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_main(config: str, workdir, *flags: str, devices: int = 2, env: dict | None = None,
             timeout: int = 900) -> subprocess.CompletedProcess:
    """Runs the command line on `devices` emulated CPU devices; returns the finished process."""
    environment = dict(os.environ,
                       XLA_FLAGS=f"--xla_force_host_platform_device_count={devices} "
                                 "--xla_backend_optimization_level=0",  # as in conftest.py
                       **(env or {}))
    return subprocess.run(
        [sys.executable, "-m", "cud_jax.main", f"--config={config}", f"--workdir={workdir}",
         *flags], cwd=REPO, env=environment, capture_output=True, text=True, timeout=timeout)
