"""Opt-in runtime checks for jitted losses and metrics (`jax.experimental.checkify`).

Eager calls of the loss and metric functions validate their values (labels in range,
probabilities on the simplex, temperature > 0). Under `jax.jit` the inputs are tracers and
those checks are skipped: XLA cannot raise an error without a device round trip, so the
trainer's step pays nothing for them. `checked` brings them back where correctness matters
more than speed (debugging, a test, a one-off evaluation):

    kd = losses.checked(losses.kd_loss)
    kd(student_logits, teacher_logits, temperature=2.0)   # raises: pass softmax(logits)

    step = losses.checked(my_train_step)                    # every loss / metric inside
"""

from __future__ import annotations

import functools

import jax
from jax.experimental import checkify

from cud_jax.losses import _validate


def checked(fn, *, errors=checkify.user_checks, jit: bool = True, **jit_kwargs):
    """`fn` with its value checks compiled in: bad inputs raise even under `jit`.

    While `fn` is traced, every cud_jax loss or metric it calls emits `checkify` checks for
    what its eager call would check: integer labels in [0, K) (negative allowed where the
    function accepts unlabeled rows, masked rows exempt), probability rows finite and on
    the simplex (entries in [0, 1], sum 1 within 1e-3), logits finite, temperature > 0.

    Args:
      fn: the function to check: a loss or metric, or any function calling them (e.g. a
        train step). Pass it unjitted: an already-jitted function may reuse a trace made
        without checks.
      errors: the checkify error set; the default, `checkify.user_checks`, raises only on
        the checks above. Add `checkify.nan_checks` to catch NaNs produced inside `fn`.
      jit: compile the checked function with `jax.jit` (default). With False it is traced
        on every call.
      **jit_kwargs: passed to `jax.jit`, e.g. `static_argnames="num_bins"` for `ece`.

    Returns:
      A function with `fn`'s signature and outputs that raises
      `checkify.JaxRuntimeError` (message naming the argument and the bad values) on the
      first failed check. It must be called outside any other `jit` (the error is raised on
      the host); to check a larger jitted computation, wrap that computation instead.
    """
    @functools.wraps(fn)
    def with_checks(*args, **kwargs):
        with _validate.runtime_checks():
            return fn(*args, **kwargs)

    checkified = checkify.checkify(with_checks, errors=errors)
    if jit:
        checkified = jax.jit(checkified, **jit_kwargs)

    @functools.wraps(fn)
    def run(*args, **kwargs):
        err, out = checkified(*args, **kwargs)
        err.throw()
        return out

    return run
