"""Parameter sharding (`config.parallel.param_sharding`): the fsdp rule, and fsdp runs equal
to replicated ones, with checkpoints that restore across layouts."""

import json

import jax
import numpy as np
import optax
import pytest
from flax import nnx
from jax.sharding import PartitionSpec as P

from cud_jax import pipeline
from cud_jax.parallel import sharding
from cud_jax.train import checkpoints
from cud_jax.configs import base_config
from cud_jax.train.state import create_train_state, split_model
from test_train import TinyNet, _losses, _task  # the tiny task and model of the trainer tests

RULES = ("replicated", "fsdp")
CONV_KERNEL = (3, 3, 3, 8)  # TinyNet's largest array: 216 elements, split along its last axis


def _config(rule: str):
    """A tiny teacher + student run: 64 examples, batch 16, one epoch (4 steps) per stage."""
    config = base_config()
    config.parallel.param_sharding = rule
    config.parallel.fsdp_min_size = 32  # splits TinyNet's kernels, replicates its biases
    for stage in (config.teacher, config.student):
        stage.batch_size = 16
        stage.epochs = 1.0
    config.log_every = 1
    return config


def _leaf(tree, shape):
    (leaf,) = [x for x in jax.tree_util.tree_leaves(tree) if x.shape == shape]
    return leaf


def _assert_same(a, b):
    # On the emulated CPU devices the runs agree bit for bit. The tolerance is for other
    # backends: with split parameters XLA partitions the step differently (it gathers the
    # weights, and may reduce-scatter the gradients instead of all-reducing them), which may
    # add float sums in another order.
    jax.tree_util.tree_map(lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6),
                           a, b)


def _assert_layout(tree, rule: str):
    if rule == "replicated":
        assert all(x.sharding.is_fully_replicated for x in jax.tree_util.tree_leaves(tree))
        return
    kernel = _leaf(tree, CONV_KERNEL)
    assert kernel.sharding.spec == P(None, None, None, "data")
    shards = kernel.addressable_shards
    assert len(shards) == 8 and {s.data.shape for s in shards} == {(3, 3, 3, 1)}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """{rule: (workdir, teacher, student)}: the same tiny pipeline trained in each layout."""
    mesh, task = sharding.make_mesh(), _task()
    out = {}
    for rule in RULES:
        workdir = str(tmp_path_factory.mktemp(rule))
        config = _config(rule)
        task = pipeline.place_data(config, _task(), mesh)
        teacher = pipeline.run_training_stage("teacher", config, workdir, task, mesh)
        student = pipeline.run_training_stage("student", config, workdir, task, mesh, teacher)
        out[rule] = (workdir, teacher, student)
    return out


def test_fsdp_run_equals_the_replicated_run(runs):
    (rep_dir, rep_teacher, rep_student), (fsdp_dir, fsdp_teacher, fsdp_student) = (
        runs[rule] for rule in RULES)
    losses = _losses(fsdp_dir)
    assert len(losses) == 8  # 4 teacher steps, then 4 student steps (the teacher inside)
    np.testing.assert_allclose(losses, _losses(rep_dir), rtol=1e-5, atol=1e-6)
    for fsdp, rep in ((fsdp_teacher, rep_teacher), (fsdp_student, rep_student)):
        assert fsdp.step == rep.step == 4
        _assert_same(fsdp.params, rep.params)
        _assert_same(fsdp.model_state, rep.model_state)


def test_fsdp_splits_the_large_arrays_of_teacher_and_student(runs):
    for rule in RULES:
        _, teacher, student = runs[rule]
        for trained in (teacher, student):  # the step's output keeps the layout
            _assert_layout(trained.params, rule)
    small = [x for x in jax.tree_util.tree_leaves(runs["fsdp"][2].params) if x.size < 32]
    assert small and all(x.sharding.is_fully_replicated for x in small)  # < fsdp_min_size


def test_checkpoints_restore_across_layouts(runs):
    mesh, task = sharding.make_mesh(), _task()
    for saved, wanted in (("fsdp", "replicated"), ("replicated", "fsdp")):
        workdir, teacher, student = runs[saved]
        config = _config(wanted)
        task = pipeline.place_data(config, _task(), mesh)
        loaded = pipeline.load_trained("student", config, workdir, task, mesh)
        _assert_layout(loaded.params, wanted)
        _assert_same(loaded.params, student.params)
        # A finished stage resumed in another layout: the training loop's restore.
        resumed = pipeline.run_training_stage("teacher", config, workdir, task, mesh)
        assert resumed.step == 4
        _assert_layout(resumed.params, wanted)
        _assert_same(resumed.params, teacher.params)


def test_config_guard_lets_a_workdir_change_layout(tmp_path):
    path = str(tmp_path / "config.json")
    old = _config("replicated").to_dict()
    del old["parallel"]  # a workdir made before the block existed
    with open(path, "w") as f:
        json.dump(old, f)
    for rule in RULES:  # neither the new block nor another layout is a config mismatch
        checkpoints.check_or_write_config(path, _config(rule).to_dict())


def test_fsdp_axis_is_the_largest_evenly_divisible_one():
    assert sharding.fsdp_axis(CONV_KERNEL, 8, min_size=32) == 3
    assert sharding.fsdp_axis((16, 24), 8, min_size=0) == 1
    assert sharding.fsdp_axis((24, 16), 8, min_size=0) == 0
    assert sharding.fsdp_axis((8, 8), 8, min_size=0) == 0  # ties: the first
    assert sharding.fsdp_axis((12, 6), 8, min_size=0) is None  # no axis divisible by 8
    assert sharding.fsdp_axis((8, 4), 8, min_size=33) is None  # 32 elements: below min_size
    assert sharding.fsdp_axis((), 8, min_size=0) is None  # scalars (step counters)


def test_state_sharding_splits_the_optimiser_state_like_the_parameters():
    mesh = sharding.make_mesh()
    _, params, model_state = split_model(TinyNet(4, nnx.Rngs(0)))
    state = create_train_state(params, model_state, optax.adam(1e-3))
    layout = sharding.state_sharding(state, mesh, "fsdp", min_size=32)

    def conv_kernel_specs(part):
        return [s.spec for x, s in zip(jax.tree_util.tree_leaves(getattr(state, part)),
                                       jax.tree_util.tree_leaves(getattr(layout, part)))
                if x.shape == CONV_KERNEL]

    assert conv_kernel_specs("params") == [P(None, None, None, "data")]
    assert conv_kernel_specs("opt_state") == [P(None, None, None, "data")] * 2  # Adam mu, nu
    assert layout.step.spec == P()
    replicated = sharding.state_sharding(state, mesh, "replicated")
    assert all(s.spec == P() for s in jax.tree_util.tree_leaves(replicated))
    with pytest.raises(ValueError, match="valid values: replicated, fsdp"):
        sharding.state_sharding(state, mesh, "zero3")


def test_an_unknown_layout_fails_before_the_run_starts(tmp_path):
    with pytest.raises(ValueError, match="parallel.param_sharding='zero3': not one of replicated, fsdp"):
        pipeline.run(_config("zero3"), str(tmp_path))
    assert not list(tmp_path.iterdir())  # nothing written


def test_multi_process_placement_builds_each_shard_from_the_host_copy(monkeypatch):
    # The multi-process branch of `host_to_global` (one `make_array_from_callback` per leaf,
    # with the leaf's own sharding), exercised in one process.
    mesh = sharding.make_mesh()
    tree = {"kernel": np.arange(16 * 8, dtype=np.float32).reshape(16, 8),
            "step": np.int32(3), "key": jax.random.key(0)}
    monkeypatch.setattr(jax, "process_count", lambda: 2)
    placed = sharding.put_state(tree, mesh, "fsdp", min_size=0)
    monkeypatch.undo()
    assert placed["kernel"].sharding.spec == P("data")
    np.testing.assert_array_equal(placed["kernel"], tree["kernel"])
    assert int(placed["step"]) == 3
    assert jax.random.key_data(placed["key"]).tolist() == jax.random.key_data(
        tree["key"]).tolist()
