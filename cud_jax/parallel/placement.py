"""Where a run's data lives on the mesh: one `Placement` object, replicated or sharded.

Built once from the config and the mesh (`make_placement`), it answers every question that
depends on the placement: what this process keeps of the training split (`hold_training`),
its size and steps per epoch, the training arrays on the mesh, each epoch's order, the rows
of each step's batch (inside the jitted step), and what it keeps of an evaluation split and
how those are batched, predicted and corrupted. The step, the loop and the evaluation call
it and never ask which placement they have. The layouts themselves are described in
`cud_jax.parallel.data_shards`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from cud_jax.data.batching import eval_batches, epoch_permutation, num_steps_per_epoch
from cud_jax.parallel.data_shards import (PLACEMENTS, EvalShare, TrainShards,  # noqa: F401
                                          check_placement, eval_share, gather_from_shards,
                                          map_slots, share_batches, shard_permutations,
                                          shards_to_mesh, take_local_shards)
from cud_jax.parallel.sharding import (batch_sharded, check_same_everywhere, host_to_global,
                                       put_replicated, replicated, to_host)


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

    def batch_rows(self, perm, step, *, batch_size: int, steps_per_epoch: int,
                   sharding=None):
        """`take(per_example)`: a step's batch rows of an array laid out like the inputs
        (traced inside the jitted step). `sharding`: the rows' layout, by default split over
        `data` (a sweep placing whole runs on devices keeps each run's rows whole)."""
        indices = jax.lax.dynamic_slice_in_dim(perm, (step % steps_per_epoch) * batch_size,
                                               batch_size)
        sharding = batch_sharded(self.mesh) if sharding is None else sharding
        indices = jax.lax.with_sharding_constraint(indices, sharding)
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

    def batch_rows(self, perm, step, *, batch_size: int, steps_per_epoch: int,
                   sharding=None):
        del sharding  # the rows are read where their shards live (sweeps need replicated)
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
