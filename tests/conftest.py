"""Shared test set-up.

Eight host CPU devices let the sharding tests run a real `Mesh` on a laptop or CI machine.
The flag must be set before JAX initialises its backend, hence here, at import time.
"""

from cud_jax.parallel.host_devices import emulate_cpu_devices

emulate_cpu_devices(8)

import jax  # noqa: E402  (imported after the flags on purpose)
import pytest  # noqa: E402


@pytest.fixture
def x64():
    """Runs a test with 64-bit floats (for gradient checks and optimality comparisons)."""
    with jax.enable_x64(True):
        yield
