"""Shared test set-up.

Eight host CPU devices let the sharding tests run a real `Mesh` on a laptop or CI machine.
The flag must be set before JAX initialises its backend, hence here, at import time.
"""

import os

from cud_jax.parallel.host_devices import emulate_cpu_devices

emulate_cpu_devices(8)
# The tests' programs are tiny, so the suite's time is mostly XLA compiling them; LLVM at -O0
# compiles them 2-3x faster. It changes how the kernels are generated, not the HLO program
# (fusion, layouts): results differ from -O2 at most by float rounding (e.g. the order of a
# vectorised sum), within every tolerance here; comparisons within the suite use one setting.
# Subprocesses the tests start inherit the flag through the environment.
if "xla_backend_optimization_level" not in os.environ["XLA_FLAGS"]:
    os.environ["XLA_FLAGS"] += " --xla_backend_optimization_level=0"

import jax  # noqa: E402  (imported after the flags on purpose)
import pytest  # noqa: E402


@pytest.fixture
def x64():
    """Runs a test with 64-bit floats (for gradient checks and optimality comparisons)."""
    with jax.enable_x64(True):
        yield
