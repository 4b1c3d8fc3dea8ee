"""Length bucketing for text: bucket widths, bucketed epochs, and that cutting a batch to its
bucket's width changes neither the training step nor the evaluation logits."""

import jax
import ml_collections
import numpy as np
import optax
import pytest
from flax import nnx

from cud_jax import data
from cud_jax.models import bert
from cud_jax.evaluate import predict
from cud_jax.train import objectives, steps
from cud_jax.train.loop import StageRun
from cud_jax.parallel.sharding import make_mesh, put_replicated
from cud_jax.train.state import create_train_state, split_model

VOCAB = 40


def _padded_ids(lengths, width, seed=0):
    rng = np.random.default_rng(seed)
    ids = np.zeros((len(lengths), width), np.int32)
    for row, n in enumerate(lengths):
        ids[row, :n] = rng.integers(5, VOCAB, n)
    return ids


def test_example_widths_pick_the_smallest_bucket_that_fits():
    ids = _padded_ids([1, 8, 9, 16, 17, 30], width=32)
    np.testing.assert_array_equal(data.example_widths(ids, (8, 16)), [8, 8, 16, 16, 32, 32])
    # Buckets at or beyond the padded width collapse into it; order does not matter.
    np.testing.assert_array_equal(data.example_widths(ids, (64, 16, 32)),
                                  [16, 16, 16, 16, 32, 32])
    np.testing.assert_array_equal(data.example_widths(ids, ()), [32] * 6)
    other_pad = np.where(ids == 0, 3, ids)
    np.testing.assert_array_equal(data.example_widths(other_pad, (8, 16), pad_id=3),
                                  [8, 8, 16, 16, 32, 32])
    with pytest.raises(ValueError, match=r"\[N, L\]"):
        data.example_widths(ids[0], (8,))


def test_bucketed_epoch_is_a_pure_function_of_seed_and_epoch():
    widths = np.repeat(np.array([8, 16, 32], np.int32), [45, 30, 13])
    batch = 6
    steps_per_epoch = data.bucketed_steps_per_epoch(widths, batch)
    assert steps_per_epoch == 45 // 6 + 30 // 6 + 13 // 6 == 14
    order, batch_widths = data.bucketed_epoch(3, 1, widths, batch)
    assert order.dtype == np.int32 and order.shape == (steps_per_epoch * batch,)
    assert len(set(order.tolist())) == len(order), "an example appears twice in one epoch"
    batches = order.reshape(steps_per_epoch, batch)
    for members, width in zip(batches, batch_widths):
        assert set(widths[members].tolist()) == {width}, "a batch mixes buckets"
    np.testing.assert_array_equal(np.bincount(batch_widths)[[8, 16, 32]], [7, 5, 2])
    again = data.bucketed_epoch(3, 1, widths, batch)
    np.testing.assert_array_equal(order, again[0])
    np.testing.assert_array_equal(batch_widths, again[1])
    assert not np.array_equal(order, data.bucketed_epoch(3, 2, widths, batch)[0])
    assert not np.array_equal(order, data.bucketed_epoch(4, 1, widths, batch)[0])
    # Over many epochs every example is drawn (the remainders differ from epoch to epoch),
    # and batch widths are shuffled rather than grouped.
    seen = np.concatenate([data.bucketed_epoch(3, e, widths, batch)[0] for e in range(20)])
    assert len(np.unique(seen)) == len(widths)
    assert len(np.unique(batch_widths[:5])) > 1 or len(np.unique(batch_widths[5:10])) > 1


def test_bucketed_steps_errors():
    with pytest.raises(ValueError, match="No length bucket"):
        data.bucketed_steps_per_epoch(np.array([8, 8, 16, 16, 32]), 3)
    with pytest.raises(ValueError, match="exceeds"):
        data.bucketed_steps_per_epoch(np.array([8, 8]), 3)


def test_stage_run_checks_steps_per_epoch_against_the_buckets():
    widths = np.repeat(np.array([8, 16], np.int32), [10, 7])
    common = dict(name="student", step_fn=None, num_examples=17, total_steps=4, seed=0,
                  checkpoint_dir="unused", checkpoint_every=4, keep=1, log_every=1,
                  batch_size=4, example_widths=widths)
    StageRun(steps_per_epoch=2 + 1, **common)
    with pytest.raises(ValueError, match="length buckets give 3"):
        StageRun(steps_per_epoch=4, **common)


def _tiny_bert(seed=0):
    config = bert.BertConfig(vocab_size=VOCAB, hidden_size=16, num_layers=2, num_heads=2,
                             intermediate_size=32, max_position=64, hidden_dropout=0.0,
                             attention_dropout=0.0)
    return bert.BertClassifier(config, num_classes=3, rngs=nnx.Rngs(seed))


def test_eval_logits_are_the_same_with_buckets():
    mesh = make_mesh()
    ids = _padded_ids([3, 5, 7, 12, 16, 20, 9, 4, 30, 2, 11], width=32, seed=1)
    model_def, params, model_state = split_model(_tiny_bert())
    predict_fn = predict.make_predict_fn(model_def, lambda x: x, mesh=mesh)
    plain = predict.predict_logits(predict_fn, params, model_state, ids, batch_size=8, mesh=mesh)
    bucketed = predict.predict_logits(
        predict_fn, params, model_state, ids, batch_size=8, mesh=mesh,
        widths_fn=lambda x: data.example_widths(x, (8, 16)))
    assert bucketed.shape == plain.shape == (len(ids), 3)
    np.testing.assert_allclose(bucketed, plain, rtol=1e-5, atol=1e-5)


def test_a_step_cut_to_the_bucket_width_equals_the_padded_step():
    """Trailing [PAD] columns are masked: dropping them changes loss and update by rounding."""
    mesh = make_mesh()
    ids = _padded_ids([3, 6, 8, 5, 7, 2, 8, 4] * 2, width=24, seed=2)
    labels = np.arange(len(ids), dtype=np.int32) % 3
    model_def, _, _ = split_model(_tiny_bert())
    tx = optax.adamw(1e-2)
    cfg = ml_collections.ConfigDict({"loss": "ce"})
    step = steps.make_train_step(model_def, tx, objectives.teacher_objective(cfg),
                                 lambda key, x: x, batch_size=8, steps_per_epoch=2, mesh=mesh)
    inputs, labels = put_replicated((ids, labels), mesh)
    perm = put_replicated(np.arange(len(ids), dtype=np.int32), mesh)
    key = jax.random.PRNGKey(0)
    results = {}
    for width in (None, 8):
        _, params, model_state = split_model(_tiny_bert())  # fresh: the state is donated
        state = put_replicated(create_train_state(params, model_state, tx), mesh)
        state, metrics = step(state, inputs, labels, perm, key, None, width=width)
        results[width] = (jax.device_get(metrics["loss"]), jax.device_get(state.params))
    np.testing.assert_allclose(results[8][0], results[None][0], rtol=1e-6)
    jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
                           results[8][1], results[None][1])
