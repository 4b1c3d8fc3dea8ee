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


# --- Length bucketing (text) ----------------------------------------------------------------
#
# Text splits are stored padded to their longest sequence, but most utterances are far
# shorter. With buckets, every example is assigned the smallest bucket width that holds it,
# each training batch is drawn from one bucket, and the step reads only that many token
# columns: short utterances stop paying for the longest one. Each width is one compiled
# shape, so a handful of buckets bounds compilation.


def example_widths(ids: np.ndarray, buckets, *, pad_id: int = 0) -> np.ndarray:
    """The bucket width of each padded id sequence: int32 `[N]`.

    Args:
      ids: `int [N, L]` token ids, padded with `pad_id` at the end.
      buckets: increasing widths; an example gets the smallest width >= its length, and `L`
        when none is large enough (so `L` is always the last bucket).
      pad_id: the padding id.
    """
    ids = np.asarray(ids)
    if ids.ndim != 2:
        raise ValueError(f"`ids` must be [N, L], got shape {ids.shape}.")
    width = ids.shape[1]
    edges = np.asarray(sorted({int(b) for b in buckets if 0 < int(b) < width} | {width}))
    lengths = (ids != pad_id).sum(axis=1)
    return edges[np.searchsorted(edges, lengths, side="left")].astype(np.int32)


def _bucket_batches(rng: np.random.Generator, widths: np.ndarray, batch_size: int):
    """Shuffled examples, chunked into full batches that each hold a single width."""
    order = rng.permutation(len(widths))
    batches, batch_widths = [], []
    for width in np.unique(widths):
        members = order[widths[order] == width]  # keeps the shuffled order
        count = len(members) // batch_size  # each bucket drops its own remainder
        batches.append(members[:count * batch_size].reshape(count, batch_size))
        batch_widths.append(np.full(count, width, np.int32))
    return np.concatenate(batches), np.concatenate(batch_widths)


def bucketed_steps_per_epoch(widths: np.ndarray, batch_size: int) -> int:
    """Full single-width batches per epoch (each bucket drops its own remainder).

    Raises:
      ValueError: no bucket has a full batch.
    """
    num_steps_per_epoch(len(widths), batch_size)  # the same argument checks
    _, counts = np.unique(np.asarray(widths), return_counts=True)
    steps = int(np.sum(counts // batch_size))
    if steps == 0:
        raise ValueError(f"No length bucket holds batch_size={batch_size} examples (bucket "
                         f"sizes {counts.tolist()}); use fewer buckets or a smaller batch.")
    return steps


def bucketed_epoch(seed: int, epoch: int, widths: np.ndarray, batch_size: int
                   ) -> tuple[np.ndarray, np.ndarray]:
    """The order of one epoch in single-width batches, and each batch's width.

    A pure function of (seed, epoch), like `epoch_permutation`, so a resumed run replays the
    same batches. Examples are shuffled, grouped by width into full batches, and the batches
    shuffled again, so consecutive steps mix widths.

    Returns:
      (order `int32 [S * batch_size]`: batch s is `order[s * batch_size:(s + 1) *
      batch_size]`, batch widths `int32 [S]`), `S = bucketed_steps_per_epoch(...)`.
    """
    widths = np.asarray(widths)
    rng = np.random.default_rng([int(seed), int(epoch), 0x6275636B])  # "buck": own stream
    batches, batch_widths = _bucket_batches(rng, widths, batch_size)
    shuffle = rng.permutation(len(batches))
    return batches[shuffle].reshape(-1).astype(np.int32), batch_widths[shuffle]
