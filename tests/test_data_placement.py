"""The sharded placement of the training split (`config.data.placement=sharded`): shards,
their orders, a step that gathers only from local shards, and the pipeline end to end.
The two-process case (each process holding only its shards) is in test_multiprocess.py."""

import jax
import ml_collections
import numpy as np
import optax
import pytest
from flax import nnx
from jax.sharding import PartitionSpec as P

from cud_jax import pipeline
from cud_jax.parallel import data_shards, placement
from cud_jax.train import objectives, steps
from cud_jax.configs import base_config
from cud_jax.parallel.sharding import make_mesh, put_replicated
from cud_jax.train.state import create_train_state, split_model
from test_train import TinyNet, _losses, _task  # the tiny task and model of the trainer tests


def test_shard_assignment_is_a_fixed_shuffle_cut_into_equal_shards():
    rows = data_shards.shard_assignment(103, 8, seed=5)
    assert rows.shape == (8, 12)
    assert len(np.unique(rows)) == 96 and rows.min() >= 0 and rows.max() < 103
    np.testing.assert_array_equal(rows, data_shards.shard_assignment(103, 8, seed=5))
    assert not np.array_equal(rows, data_shards.shard_assignment(103, 8, seed=6))
    # Files sorted by class still give every shard a mix of classes.
    labels = np.repeat(np.arange(4), 64)
    per_shard = labels[data_shards.shard_assignment(256, 8, seed=0)]
    assert all(len(np.unique(shard)) == 4 for shard in per_shard)
    with pytest.raises(ValueError, match="cannot fill"):
        data_shards.shard_assignment(5, 8, seed=0)
    with pytest.raises(ValueError, match="valid values: replicated, sharded"):
        data_shards.check_placement("scattered")


def test_local_shards_land_on_their_devices():
    mesh, task = make_mesh(), _task(n_train=70)
    shards = data_shards.take_local_shards(task.train, mesh, seed=1)
    assert shards.shard_ids == tuple(range(8)) and shards.num_examples == 64
    inputs, labels = data_shards.shards_to_mesh(shards, mesh)
    assert inputs.shape == (8, 8) + task.train.inputs.shape[1:] and labels.shape == (8, 8)
    assert inputs.sharding.spec == P("data")
    rows = data_shards.shard_assignment(70, 8, seed=1)
    for shard in labels.addressable_shards:  # device j holds exactly shard j
        j = list(mesh.devices.flat).index(shard.device)
        np.testing.assert_array_equal(np.asarray(shard.data)[0], task.train.labels[rows[j]])


def test_shard_permutations_are_per_shard_and_pure():
    orders = np.asarray(data_shards.shard_permutations(3, 2, 8, 10))
    assert orders.shape == (8, 10) and orders.dtype == np.int32
    assert all(sorted(row) == list(range(10)) for row in orders)
    assert len({tuple(row) for row in orders}) == 8
    np.testing.assert_array_equal(orders, data_shards.shard_permutations(3, 2, 8, 10))
    assert not np.array_equal(orders, data_shards.shard_permutations(3, 3, 8, 10))


def _step_fn(mesh, model_def, tx, *, sharded, batch=16, steps_per_epoch=4):
    cfg = ml_collections.ConfigDict({"loss": "ce"})
    return steps.make_train_step(model_def, tx, objectives.teacher_objective(cfg),
                                 lambda key, x: x.astype(np.float32) / 255.0, batch_size=batch,
                                 steps_per_epoch=steps_per_epoch, mesh=mesh,
                                 placement=placement.make_placement(
                                     "sharded" if sharded else "replicated", mesh))


def test_sharded_step_equals_the_replicated_step_on_the_same_batches():
    """Three steps that take B/D rows of every shard match a replicated split fed the
    same examples in the same order: the gather picks exactly the intended rows."""
    mesh, task = make_mesh(), _task(n_train=64)
    shards = data_shards.take_local_shards(task.train, mesh, seed=0)
    rows = data_shards.shard_assignment(64, 8, seed=0)
    orders = np.asarray(data_shards.shard_permutations(0, 0, 8, 8))
    # Global batch s = 2 rows (positions 2s, 2s+1 of each shard's order) of shards 0..7.
    flat = np.concatenate([np.concatenate([rows[j][orders[j, 2 * s:2 * s + 2]]
                                           for j in range(8)]) for s in range(4)])
    tx = optax.sgd(0.1, momentum=0.9)
    results = {}
    for sharded in (True, False):
        model_def, params, model_state = split_model(TinyNet(4, nnx.Rngs(0)))
        state = put_replicated(create_train_state(params, model_state, tx), mesh)
        step = _step_fn(mesh, model_def, tx, sharded=sharded)
        if sharded:
            inputs, labels = data_shards.shards_to_mesh(shards, mesh)
            perm = jax.device_put(orders, jax.sharding.NamedSharding(mesh, P("data")))
        else:
            inputs, labels = put_replicated((task.train.inputs, task.train.labels), mesh)
            perm = put_replicated(flat.astype(np.int32), mesh)
        losses = []
        for _ in range(3):
            state, metrics = step(state, inputs, labels, perm, jax.random.PRNGKey(0), None)
            losses.append(float(metrics["loss"]))
        results[sharded] = (losses, jax.device_get(state.params))
    np.testing.assert_allclose(results[True][0], results[False][0], rtol=1e-6)
    jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
                           results[True][1], results[False][1])


def test_sharded_step_moves_no_training_data_between_devices():
    mesh, task = make_mesh(), _task(n_train=64)
    shards = data_shards.take_local_shards(task.train, mesh, seed=0)
    inputs, labels = data_shards.shards_to_mesh(shards, mesh)
    perm = jax.device_put(np.asarray(data_shards.shard_permutations(0, 0, 8, 8)),
                          jax.sharding.NamedSharding(mesh, P("data")))
    model_def, params, model_state = split_model(TinyNet(4, nnx.Rngs(0)))
    tx = optax.sgd(0.1)
    state = put_replicated(create_train_state(params, model_state, tx), mesh)
    step = _step_fn(mesh, model_def, tx, sharded=True)
    hlo = step.lower(state, inputs, labels, perm, jax.random.PRNGKey(0), None).compile()
    text = hlo.as_text()
    # Only the gradient / BatchNorm all-reduces: nothing gathers or shuffles the shards.
    assert "all-reduce" in text
    for collective in ("all-gather", "all-to-all", "collective-permute"):
        assert collective not in text, collective


def test_sharded_pipeline_trains_teacher_and_student(tmp_path):
    config = base_config()
    config.data.placement = "sharded"
    for stage in (config.teacher, config.student):
        stage.batch_size, stage.epochs = 16, 2.0
    config.log_every = 1
    mesh = make_mesh()
    task = pipeline.place_data(config, _task(n_train=70), mesh)
    assert task.task.train is None and task.num_train_examples == 64
    assert isinstance(task.train, data_shards.TrainShards)
    teacher = pipeline.run_training_stage("teacher", config, str(tmp_path), task, mesh)
    student = pipeline.run_training_stage("student", config, str(tmp_path), task, mesh,
                                          teacher)
    assert teacher.step == student.step == 8  # 8 rows per shard, 2 per step: 4 per epoch
    losses = _losses(str(tmp_path))
    assert len(losses) == 16 and np.all(np.isfinite(losses))
    assert losses[3] < losses[0], "the teacher should learn the tiny task"


def test_length_buckets_need_the_replicated_placement():
    mesh = make_mesh()
    task = _task(n_train=64)
    task.widths_fn = lambda x: np.full(len(x), 8)
    config = base_config()
    config.data.placement = "sharded"
    with pytest.raises(ValueError, match="replicated"):
        pipeline.num_steps(pipeline.place_data(config, task, mesh), 16, 1.0)


def test_teacher_cache_on_shards_equals_the_teacher_in_the_step(tmp_path):
    """The sharded teacher cache (`ShardedPlacement.predict_training`: logits computed where
    each shard lives) gives the student the same probabilities as the teacher in the step."""
    mesh = make_mesh()
    task = _task(n_train=70)
    task.augmented = False  # the cache needs fixed training inputs
    task.augment = lambda key, x: task.preprocess(x)
    losses = {}
    for cache in (True, False):
        config = base_config()
        config.data.placement = "sharded"
        config.student.method, config.student.cache_teacher = "kd", cache
        for stage in (config.teacher, config.student):
            stage.batch_size, stage.epochs = 16, 1.0
        config.log_every = 1
        config.eval.batch_size = 24  # 3 rows per shard: the last piece overlaps
        workdir = str(tmp_path / str(cache))
        placed = pipeline.place_data(config, task, mesh)
        teacher = pipeline.run_training_stage("teacher", config, workdir, placed, mesh)
        pipeline.run_training_stage("student", config, workdir, placed, mesh, teacher)
        losses[cache] = _losses(workdir)
    np.testing.assert_allclose(losses[True], losses[False], rtol=1e-5, atol=1e-6)


def test_sharded_evaluation_keeps_shares_and_reports_the_same(tmp_path):
    """Models trained once, evaluated with the replicated and with the sharded placement:
    every split held as this process's share gives the same clean, OOD and deterministic
    corruption metrics; a random corruption is seeded per device slot instead."""
    import importlib.util
    import json
    import os

    spec = importlib.util.spec_from_file_location(
        "mp_config", os.path.join(os.path.dirname(__file__), "multiprocess_config.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = module.get_config()
    config.data.placement = "replicated"
    config.eval.corruptions, config.eval.severities = "contrast,gaussian_noise", "2"
    config.eval.ood_sets, config.eval.ood_subset = "noise:uniform", 20
    config.eval.batch_size = 24  # 64 test images: the third batch is padded
    first = pipeline.run(config, str(tmp_path / "replicated"))
    config.data.placement, config.stage = "sharded", "eval"
    for name in ("teacher", "student"):
        config[name].checkpoint = str(tmp_path / "replicated" / "checkpoints" / name)
    mesh = make_mesh()
    task = pipeline.place_data(config, pipeline.build_task(config.data), mesh)
    assert isinstance(task.test.inputs, data_shards.EvalShare)
    assert task.test.inputs.rows.shape[:3] == (3, 8, 3) and len(task.test.inputs) == 64
    second = pipeline.run(config, str(tmp_path / "sharded"))
    for name in ("teacher", "student"):
        for part in ("clean", "temperature_scaled"):
            for metric, value in first["models"][name][part].items():
                np.testing.assert_allclose(second["models"][name][part][metric], value,
                                           rtol=1e-5, atol=1e-6, err_msg=metric)
        for score in ("msp", "entropy"):
            assert (second["ood"]["noise:uniform"][name][score]
                    == pytest.approx(first["ood"]["noise:uniform"][name][score], rel=1e-5))
        table = (first["shift"]["models"][name]["table"],
                 second["shift"]["models"][name]["table"])
        assert table[1]["contrast"]["2"] == pytest.approx(table[0]["contrast"]["2"], rel=1e-5)
        assert set(table[1]["gaussian_noise"]["2"]) == set(table[0]["gaussian_noise"]["2"])
    with open(tmp_path / "sharded" / "report.json") as f:
        assert json.load(f)["shift"]["num_images"] == 64
