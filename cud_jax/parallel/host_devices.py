"""Emulating several devices on one CPU, for sharding tests and CPU benchmarks.

Call `emulate_cpu_devices(8)` before JAX initialises its backend (before the first
`jax.devices()` or computation). Besides the device count, it raises XLA's CPU collective
timeouts: the emulated devices are threads, and on a small, busy machine one of them can be
starved for longer than the default 40 s, which XLA treats as a deadlock and aborts the
process in the middle of a run.
"""

from __future__ import annotations

import os

COLLECTIVE_TIMEOUT_SECONDS = 1800


def emulate_cpu_devices(count: int = 8) -> None:
    """Adds the XLA flags for `count` host devices, unless XLA_FLAGS already sets a count."""
    flags = os.environ.get("XLA_FLAGS", "")
    if "xla_force_host_platform_device_count" not in flags:
        flags += f" --xla_force_host_platform_device_count={count}"
    for flag in ("xla_cpu_collective_call_terminate_timeout_seconds",
                 "xla_cpu_collective_timeout_seconds"):
        if flag not in flags:
            flags += f" --{flag}={COLLECTIVE_TIMEOUT_SECONDS}"
    os.environ["XLA_FLAGS"] = flags.strip()
