"""Where the training split lives on the mesh: replicated, or cut into one shard per device.

One `Placement` object, built once from the config and the mesh (`make_placement`), answers
every question that depends on it: what this process keeps of the training split
(`hold_training`), its size and steps per epoch, the training arrays on the mesh, each
epoch's order, the rows of each step's batch (inside the jitted step), and what it keeps of
an evaluation split and how those are batched and corrupted. The step, the loop and the
evaluation call it and never ask which placement they have.

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

from cud_jax.data.batching import eval_batches, epoch_permutation, num_steps_per_epoch
from cud_jax.parallel.sharding import (DATA_AXIS, batch_sharded, check_same_everywhere,
                                       host_to_global, put_replicated, replicated, to_host)

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


# --- The Placement objects ----------------------------------------------------------------


class Placement:
    """Where a run's data lives on `mesh`; `ReplicatedPlacement` documents every method and
    `ShardedPlacement` implements the same ones. `supports_length_buckets`: whether batches
    may be length-bucketed (every device must agree on each step's width)."""

    name = ""
    supports_length_buckets = False

    def __init__(self, mesh: Mesh):
        self.mesh = mesh

    def predict(self, predict_fn, params, model_state, inputs, *, batch_size: int,
                widths_fn=None) -> np.ndarray:
        """Float32 logits `[N, K]` of held evaluation inputs, in order, on every process.

        Batches are padded to one fixed shape (one compilation) and the padding is dropped.
        With `widths_fn` (`inputs -> int32 [N]` bucket widths) and a placement that supports
        length buckets, examples are evaluated bucket by bucket, each batch cut to its
        bucket's width (one compilation per width), and the logits put back in order.
        """
        if widths_fn is None or not self.supports_length_buckets or len(inputs) == 0:
            return _run_batches(predict_fn, params, model_state,
                                *self.eval_batches(inputs, batch_size), batch_size)
        widths = widths_fn(inputs)
        logits = None
        for width in np.unique(widths):
            members = np.flatnonzero(widths == width)
            part = _run_batches(predict_fn, params, model_state,
                                *self.eval_batches(inputs[members, :width], batch_size),
                                batch_size)
            if logits is None:
                logits = np.empty((len(inputs), part.shape[1]), part.dtype)
            logits[members] = part
        return logits


def _run_batches(predict_fn, params, model_state, batches, num_examples: int,
                 batch_size: int) -> np.ndarray:
    """Logits of global batches laid out by `eval_batches`, gathered, padding dropped."""
    outputs = [predict_fn(params, model_state, batch) for batch in batches]  # all dispatched
    _, mask = eval_batches(num_examples, batch_size)
    logits = np.concatenate([to_host(o) for o in outputs])  # gathered across processes
    return logits[mask.reshape(-1)]


class ReplicatedPlacement(Placement):
    """Every device holds the whole training split; one global permutation per epoch."""

    name = "replicated"
    supports_length_buckets = True

    def hold_training(self, split, seed: int):
        """What this process keeps of the training split: all of it."""
        del seed
        return split

    def num_examples(self, held) -> int:
        """Training examples per epoch."""
        return len(held.labels)

    def steps_per_epoch(self, held, batch_size: int) -> int:
        """Full batches per epoch (the remainder is dropped)."""
        return num_steps_per_epoch(len(held.labels), batch_size)

    def host_inputs(self, held) -> np.ndarray:
        """The training inputs on the host (for a cached teacher's forward pass)."""
        return held.inputs

    def training_arrays(self, inputs, labels, what: str = "training data"):
        """`(inputs, labels)` on the mesh, every process having checked it holds the same."""
        inputs, labels = np.asarray(inputs), np.asarray(labels)
        check_same_everywhere((inputs, labels), what)
        return put_replicated((inputs, labels), self.mesh)

    def held_arrays(self, held):
        """The training arrays of what `hold_training` kept, for `training_arrays`."""
        return held.inputs, held.labels

    def epoch_order(self, seed: int, num_examples: int):
        """`epoch -> permutation` of the whole split, on device."""
        permute = jax.jit(lambda seed, epoch: epoch_permutation(seed, epoch, num_examples),
                          out_shardings=replicated(self.mesh))
        return lambda epoch: permute(seed, epoch)

    def batch_rows(self, perm, step, *, batch_size: int, steps_per_epoch: int):
        """`take(per_example)`: a step's batch rows of an array laid out like the inputs
        (traced inside the jitted step)."""
        indices = jax.lax.dynamic_slice_in_dim(perm, (step % steps_per_epoch) * batch_size,
                                               batch_size)
        indices = jax.lax.with_sharding_constraint(indices, batch_sharded(self.mesh))
        return lambda x: x[indices]

    def predict_training(self, predict_fn, params, model_state, held, *, batch_size: int,
                         widths_fn=None) -> jax.Array:
        """Logits of every held training input, placed like the training arrays."""
        logits = self.predict(predict_fn, params, model_state, held.inputs,
                              batch_size=batch_size, widths_fn=widths_fn)
        return put_replicated(jnp.asarray(logits), self.mesh)

    def hold_eval(self, inputs, batch_size: int):
        """What this process keeps of an evaluation split: all of it."""
        del batch_size
        return inputs

    def eval_batches(self, inputs, batch_size: int):
        """`(global batches, num_examples)` laid out by `cud_jax.data.eval_batches`."""
        indices, _ = eval_batches(len(inputs), batch_size)
        sharding = batch_sharded(self.mesh)
        batches = (host_to_global(inputs[batch_indices], sharding)  # each process: its rows
                   for batch_indices in indices)
        return batches, len(inputs)

    def corruption_suite(self, images, corruptions, severities, *, seed: int, cache_dir):
        """((name, severity), corrupted images) of the whole array (cached on disk)."""
        from cud_jax.data import corruptions as corruption_lib

        return corruption_lib.corruption_suite(images, names=tuple(corruptions),
                                               severities=tuple(severities), seed=seed,
                                               cache_dir=cache_dir)


class ShardedPlacement(Placement):
    """One shard of the training split per device; each process keeps only its own shards,
    and of every evaluation split only the rows its devices read (see the module doc)."""

    name = "sharded"

    def hold_training(self, split, seed: int) -> TrainShards:
        check_same_everywhere((split.inputs, split.labels), "training data")  # before the cut
        shards = take_local_shards(split, self.mesh, seed)
        held = shards.shard_size * len(shards.shard_ids)
        print(f"[data] process {jax.process_index()} holds training shards "
              f"{list(shards.shard_ids)}: {held} of {shards.num_examples} examples")
        return shards

    def num_examples(self, held: TrainShards) -> int:
        return held.num_examples

    def steps_per_epoch(self, held: TrainShards, batch_size: int) -> int:
        # batch_size % D is checked before the stage is built
        return num_steps_per_epoch(held.shard_size, batch_size // held.num_shards)

    def host_inputs(self, held):
        raise ValueError("The sharded placement keeps no whole training split on the host.")

    def training_arrays(self, inputs, labels, what: str = "training data"):
        del what
        return inputs, labels  # placed by `held_arrays`, shard j on device j

    def held_arrays(self, held: TrainShards):
        return shards_to_mesh(held, self.mesh)

    def epoch_order(self, seed: int, num_examples: int):
        """`epoch -> [D, n]`: every shard's own order, on the shard's device."""
        num_shards = self.mesh.devices.size
        size = num_examples // num_shards
        permute = jax.jit(lambda seed, epoch: shard_permutations(seed, epoch, num_shards, size),
                          out_shardings=batch_sharded(self.mesh))
        return lambda epoch: permute(seed, epoch)

    def batch_rows(self, perm, step, *, batch_size: int, steps_per_epoch: int):
        per_shard = batch_size // self.mesh.devices.size
        indices = jax.lax.dynamic_slice_in_dim(perm, (step % steps_per_epoch) * per_shard,
                                               per_shard, axis=1)
        return lambda x: gather_from_shards(x, indices)

    def predict_training(self, predict_fn, params, model_state, held: TrainShards, *,
                         batch_size: int, widths_fn=None) -> jax.Array:
        """Float32 logits `[D, n, K]`: every device runs the model on its own shard,
        `batch_size / D` rows at a time, and the logits stay where their inputs live."""
        del widths_fn  # no length buckets here
        inputs = self.held_arrays(held)[0]
        mesh = self.mesh
        num_shards, size = inputs.shape[:2]
        rows = max(1, min(size, batch_size // num_shards))
        sharded = batch_sharded(mesh)

        @jax.jit
        def piece(inputs, start):  # rows [start, start + rows) of every shard, as one batch
            part = jax.lax.dynamic_slice_in_dim(inputs, start, rows, axis=1)
            return jax.lax.with_sharding_constraint(part.reshape((-1,) + part.shape[2:]),
                                                    sharded)

        pieces = []
        for start in range(0, size, rows):
            first = min(start, size - rows)  # the last piece overlaps the one before
            logits = predict_fn(params, model_state, piece(inputs, first))
            pieces.append(logits.reshape(num_shards, rows, -1)[:, start - first:])
        return jax.jit(lambda parts: jnp.concatenate(parts, axis=1),
                       out_shardings=sharded)(pieces)

    def hold_eval(self, inputs, batch_size: int) -> EvalShare:
        return eval_share(inputs, batch_size, self.mesh)

    def eval_batches(self, share: EvalShare, batch_size: int):
        del batch_size  # the share's own
        return share_batches(share, self.mesh), len(share)

    def corruption_suite(self, share: EvalShare, corruptions, severities, *, seed: int,
                         cache_dir):
        """Each device slot's rows corrupted on their own with a seed derived from the slot,
        so any process layout with the same device count corrupts every image identically
        (the whole-array suite would need every image on every process). Not cached."""
        del cache_dir
        from cud_jax.data import corruptions as corruption_lib

        for name in corruptions:
            for severity in severities:
                yield (name, severity), map_slots(
                    share, lambda rows, slot, name=name, sev=severity: corruption_lib.corrupt(
                        rows, name, sev, seed=seed * 4099 + slot))


PLACEMENT_TYPES = {"replicated": ReplicatedPlacement, "sharded": ShardedPlacement}


def make_placement(name: str, mesh: Mesh) -> Placement:
    """The placement `config.data.placement` names, on `mesh`."""
    check_placement(name)
    return PLACEMENT_TYPES[name](mesh)
