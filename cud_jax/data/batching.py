"""Batching helpers shared by the host and the device: epoch orders and eval padding.

`epoch_permutation` is a pure function of (seed, epoch), so a run resumed from a checkpoint
at step s recomputes exactly the batches it would have seen, with no iterator state to save.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def epoch_permutation(seed: int, epoch, n: int) -> jax.Array:
    """The order of the `n` training examples in `epoch`: an int32 permutation of [0, n).

    Args:
      seed: the run's data seed.
      epoch: epoch index (a Python int or a traced integer inside jit).
      n: number of training examples (static).
    """
    key = jax.random.fold_in(jax.random.key(seed), epoch)
    return jax.random.permutation(key, n).astype(jnp.int32)


def num_steps_per_epoch(n: int, batch_size: int) -> int:
    """Full training batches per epoch (the remainder is dropped; the next epoch reshuffles).

    Raises:
      ValueError: `batch_size` is not positive or exceeds `n` (an epoch would have no step).
    """
    if batch_size < 1:
        raise ValueError(f"`batch_size` must be >= 1, got {batch_size}.")
    if batch_size > n:
        raise ValueError(
            f"batch_size={batch_size} exceeds the {n} training examples, so an epoch would "
            "have no full batch; lower the batch size or use more data.")
    return n // batch_size


def eval_batches(n: int, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Index batches that cover every one of `n` examples exactly once, padded to full size.

    Every batch has the same shape (one compiled eval step); the last one is padded with
    index 0 and masked out.

    Returns:
      (indices `int32 [num_batches, batch_size]`, mask `bool [num_batches, batch_size]`),
      `num_batches = ceil(n / batch_size)`; `indices[mask]` is `arange(n)`.
    """
    if batch_size < 1:
        raise ValueError(f"`batch_size` must be >= 1, got {batch_size}.")
    if n < 0:
        raise ValueError(f"`n` must be >= 0, got {n}.")
    num_batches = -(-n // batch_size)
    flat = np.arange(num_batches * batch_size, dtype=np.int32)
    mask = flat < n
    indices = np.where(mask, flat, 0).astype(np.int32)
    return indices.reshape(num_batches, batch_size), mask.reshape(num_batches, batch_size)
