"""The building blocks of the sharded data placement: shards of the training split, their
orders and gathers, and each process's share of an evaluation split
(`cud_jax.parallel.placement` assembles them into the `Placement` objects).

`config.data.placement`:

* `replicated` (default): every device holds the whole training split and a batch is drawn
  from one global permutation, so the results do not depend on the device count (1 device
  and 8 devices train identically).
* `sharded`: the split is shuffled once (fixed seed) and cut into one equal shard per device
  of the `data` axis (the last `N mod D` examples of that shuffle are left out). Device `j`
  holds shard `j` only, and each process keeps only the shards of its own devices and drops
  the rest of what its loader read: neither a host nor a device holds the whole split. Every
  epoch each shard is permuted on its own, and a global batch is `B / D` examples from every
  shard, gathered where they live, so no example crosses devices. The batches depend on the
  device count `D` but not on the process count: 2 processes x 4 devices train exactly as 1
  process x 8 devices (resuming needs the same `D`).

With `sharded`, the evaluation splits (val, test, OOD sets, the shift subset) are cut too:
each process keeps the rows its own devices read in the fixed evaluation batches
(`eval_share`), the logits are gathered, and every process computes the same report. The
shift evaluation then corrupts each device slot's rows with a seed derived from the slot,
so its random corruptions differ from the replicated placement's (which corrupts the whole
array at once) but not between process layouts with the same device count.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from cud_jax.data.batching import eval_batches
from cud_jax.parallel.sharding import DATA_AXIS

PLACEMENTS = ("replicated", "sharded")


def check_placement(placement: str) -> None:
    """Fails for an unknown `data.placement`, naming the valid values."""
    if placement not in PLACEMENTS:
        raise ValueError(f"Unknown data.placement {placement!r}; valid values: "
                         f"{', '.join(PLACEMENTS)}.")


def shard_assignment(num_examples: int, num_shards: int, seed: int) -> np.ndarray:
    """Example indices of every shard, `int [num_shards, num_examples // num_shards]`.

    A fixed-seed shuffle first, so shards are alike even when the files are sorted by class.
    """
    if num_examples < num_shards:
        raise ValueError(f"{num_examples} training examples cannot fill {num_shards} shards.")
    size = num_examples // num_shards
    order = np.random.default_rng([seed, 0x5348415244]).permutation(num_examples)  # "SHARD"
    return order[:size * num_shards].reshape(num_shards, size)


def local_shard_ids(mesh: Mesh) -> tuple[int, ...]:
    """Positions along `data` of the devices this process drives (its shards)."""
    me = jax.process_index()
    return tuple(j for j, d in enumerate(mesh.devices.flat) if d.process_index == me)


@dataclasses.dataclass(frozen=True, eq=False)
class TrainShards:
    """This process's shards of a training split (host arrays).

    Attributes:
      inputs: `[L, n, ...]` stored inputs of the `L` local shards, in `shard_ids` order.
      labels: `int32 [L, n]`.
      shard_ids: the shards held, positions along the mesh's `data` axis.
      num_shards: shards in all (the device count `D`).
    """

    inputs: np.ndarray
    labels: np.ndarray
    shard_ids: tuple[int, ...]
    num_shards: int

    @property
    def shard_size(self) -> int:
        return int(self.labels.shape[1])

    @property
    def num_examples(self) -> int:
        """Examples trained on per epoch over all shards (`N` less `N mod D`)."""
        return self.shard_size * self.num_shards


def take_local_shards(split, mesh: Mesh, seed: int) -> TrainShards:
    """Copies this process's shards out of a loaded split (`.inputs`, `.labels`)."""
    rows = shard_assignment(len(split.labels), mesh.devices.size, seed)
    ids = local_shard_ids(mesh)
    return TrainShards(inputs=np.asarray(split.inputs)[rows[list(ids)]],
                       labels=np.asarray(split.labels)[rows[list(ids)]], shard_ids=ids,
                       num_shards=mesh.devices.size)


def _global(local: np.ndarray, shard_ids, mesh: Mesh) -> jax.Array:
    """A `[D, ...]` array split over `data` from this process's `[L, ...]` rows."""
    position = {j: k for k, j in enumerate(shard_ids)}
    shape = (mesh.devices.size,) + local.shape[1:]

    def rows(index):  # only ever asked for this process's devices
        j = index[0].start or 0
        return local[position[j]:position[j] + 1]

    return jax.make_array_from_callback(shape, NamedSharding(mesh, P(DATA_AXIS)), rows)


def shards_to_mesh(shards: TrainShards, mesh: Mesh) -> tuple[jax.Array, jax.Array]:
    """(inputs `[D, n, ...]`, labels `[D, n]`) as global arrays, shard `j` on device `j`."""
    return (_global(shards.inputs, shards.shard_ids, mesh),
            _global(shards.labels, shards.shard_ids, mesh))


def shard_permutations(seed: int, epoch, num_shards: int, shard_size: int) -> jax.Array:
    """`int32 [num_shards, shard_size]`: each shard's own order in `epoch`.

    A pure function of (seed, epoch), like `cud_jax.data.epoch_permutation`.
    """
    key = jax.random.fold_in(jax.random.key(seed), epoch)
    keys = jax.vmap(lambda j: jax.random.fold_in(key, j))(jnp.arange(num_shards))
    return jax.vmap(lambda k: jax.random.permutation(k, shard_size))(keys).astype(jnp.int32)


def gather_from_shards(per_shard: jax.Array, indices: jax.Array) -> jax.Array:
    """Rows `indices[j]` of every shard `j`, flattened to one batch `[D * b, ...]`.

    `per_shard` is `[D, n, ...]` and `indices` `[D, b]`, both split over `data` on their first
    axis: the gather has that axis as a batch dimension, so each device reads only its own
    shard (no collective; tests/test_data_placement.py checks the compiled step).
    """
    rows = jax.vmap(lambda shard, idx: shard[idx])(per_shard, indices)
    return rows.reshape((-1,) + rows.shape[2:])


# --- Evaluation splits ------------------------------------------------------------------
#
# Evaluation batches have a fixed layout (`cud_jax.data.eval_batches`: batch i is examples
# [i * B, (i + 1) * B), the last one padded), and device slot j of every batch reads the
# rows [j * B / D, (j + 1) * B / D) of it. With the sharded placement each process keeps only
# the rows its own devices read; the logits are gathered afterwards, so every process still
# computes the same report.


@dataclasses.dataclass(frozen=True, eq=False)
class EvalShare:
    """This process's rows of an evaluation split, laid out as its devices read them.

    Attributes:
      rows: `[num_batches, L, B / D, ...]`: for every evaluation batch, the rows of the `L`
        local device slots (padding rows repeat example 0; they are dropped from the logits).
      slots: positions along `data` of the local devices.
      num_examples: size of the whole split.
      batch_size: the evaluation batch size `B`.
    """

    rows: np.ndarray
    slots: tuple[int, ...]
    num_examples: int
    batch_size: int

    def __len__(self) -> int:
        return self.num_examples

    @property
    def shape(self) -> tuple[int, ...]:
        """The shape of the whole split (`[N, ...]`)."""
        return (self.num_examples,) + self.rows.shape[3:]


def eval_share(inputs: np.ndarray, batch_size: int, mesh: Mesh) -> EvalShare:
    """Keeps the rows of `inputs` (a whole evaluation split) that this process's devices read."""
    indices, _ = eval_batches(len(inputs), batch_size)
    per_slot = indices.reshape(len(indices), mesh.devices.size, -1)
    slots = local_shard_ids(mesh)
    return EvalShare(rows=np.asarray(inputs)[per_slot[:, list(slots)]], slots=slots,
                     num_examples=len(inputs), batch_size=batch_size)


def map_slots(share: EvalShare, fn) -> EvalShare:
    """`fn(rows [n, ...], slot) -> rows` applied to each local slot's rows (all batches).

    Each slot's rows are the same on every process layout with the same device count, so a
    seeded transformation keyed by the slot (the corruptions of the shift evaluation) gives
    the same result on 1 process x 8 devices as on 2 x 4.
    """
    num_batches, local, per_slot = share.rows.shape[:3]
    out = np.empty_like(share.rows)
    for k, slot in enumerate(share.slots):
        flat = share.rows[:, k].reshape((num_batches * per_slot,) + share.rows.shape[3:])
        out[:, k] = np.asarray(fn(flat, slot)).reshape(out[:, k].shape)
    return dataclasses.replace(share, rows=out)


def share_batches(share: EvalShare, mesh: Mesh):
    """The evaluation batches of a share as global `[B, ...]` arrays split over `data`."""
    position = {slot: k for k, slot in enumerate(share.slots)}
    per_slot = share.rows.shape[2]
    shape = (share.batch_size,) + share.rows.shape[3:]
    sharding = NamedSharding(mesh, P(DATA_AXIS))
    for rows in share.rows:
        yield jax.make_array_from_callback(
            shape, sharding, lambda index, rows=rows: rows[position[(index[0].start or 0)
                                                                     // per_slot]])
