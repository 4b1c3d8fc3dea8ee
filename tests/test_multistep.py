"""Several training steps per dispatch (`num_steps`, `parallel.steps_per_call`): the same
steps as one call each, logged step by step, resumed bit for bit."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from cud_jax.train import checkpoints, objectives
from cud_jax.configs import base_config
from cud_jax.train.loop import NonFiniteLossError, StageRun, train_stage
from cud_jax.parallel.sharding import make_mesh, put_replicated
from cud_jax.train.writers import MetricWriter
from test_train import _losses, _stage


def _close(a, b, rtol=1e-5, atol=1e-6):
    jax.tree_util.tree_map(lambda x, y: np.testing.assert_allclose(x, y, rtol=rtol, atol=atol),
                           a, b)


@pytest.mark.parametrize("devices", [1, 8])
def test_k_steps_in_one_call_equal_k_single_calls(tmp_path, devices):
    mesh = make_mesh(jax.devices()[:devices])
    task, run, state = _stage(tmp_path / "single", mesh)
    _, _, state_k = _stage(tmp_path / "scan", mesh)
    state, state_k = put_replicated(state, mesh), put_replicated(state_k, mesh)
    perm = put_replicated(jax.random.permutation(jax.random.PRNGKey(3), 64).astype(jnp.int32),
                          mesh)
    args = (task.train.inputs, task.train.labels, perm, jax.random.PRNGKey(5), None)
    singles = []
    for _ in range(4):  # one epoch of 4 batches
        state, metrics = run.step_fn(state, *args)
        singles.append(jax.device_get(metrics))
    state_k, stacked = run.step_fn(state_k, *args, num_steps=4)
    stacked = jax.device_get(stacked)
    assert int(state_k.step) == 4 and set(stacked) == set(singles[0])
    for name, values in stacked.items():
        assert values.shape == (4,), name
        np.testing.assert_allclose(values, [m[name] for m in singles], rtol=1e-5, atol=1e-6,
                                   err_msg=name)
    assert len(set(np.round(stacked["loss"], 6))) == 4  # four different batches
    _close(state_k.params, state.params)
    _close(state_k.model_state, state.model_state)
    _close(state_k.opt_state, state.opt_state)


def _run(tmp_path, mesh, k, *, log_every=8, die_after=None, **stage_kwargs):
    """Trains `test_train._stage` (4 steps per epoch, batch 16) with k steps per call.

    Returns (state, logged losses, `num_steps` of every call: None for one step). With
    `die_after`, the call after that many raises KeyboardInterrupt (a killed run).
    """
    task, run, state = _stage(tmp_path, mesh, **stage_kwargs)
    run.steps_per_call, run.log_every = k, log_every
    real, calls = run.step_fn, []

    def step(*args, **kwargs):
        if len(calls) == die_after:
            raise KeyboardInterrupt
        calls.append(kwargs.get("num_steps"))
        return real(*args, **kwargs)

    run.step_fn = step
    writer = MetricWriter(str(tmp_path), run.name)
    try:
        state = train_stage(run, state, task.train.inputs, task.train.labels, mesh=mesh,
                            writer=writer)
    finally:
        writer.close()
    return state, _losses(tmp_path), calls


def test_steps_per_call_trains_the_same_run_and_never_crosses_a_boundary(tmp_path):
    mesh = make_mesh()
    one, losses_one, calls_one = _run(tmp_path / "one", mesh, 1, total=12, every=6)
    three, losses_three, calls_three = _run(tmp_path / "three", mesh, 3, total=12, every=6)
    assert calls_one == [None] * 12
    # Boundaries: epoch ends 4, 8, 12; checkpoints 6, 12; log point 8. A scan of 3 where 3
    # steps remain before the next one, single steps otherwise.
    assert calls_three == [3, None, None, None, None, None, 3, None]
    assert len(losses_three) == len(losses_one) == 3  # logged at steps 6, 8, 12
    np.testing.assert_allclose(losses_three, losses_one, rtol=1e-5)
    _close(three.params, one.params)
    _close(three.model_state, one.model_state)


def test_nan_inside_a_scan_names_its_own_step(tmp_path):
    teacher_ce = objectives.teacher_objective(ml_collections.ConfigDict({"loss": "ce"}))

    def nan_from_step_five(logits, labels, teacher_probs, progress):
        loss, metrics = teacher_ce(logits, labels)
        return jnp.where(progress >= 1.0, jnp.nan, 1.0) * loss, metrics  # step 5 = epoch 1

    # k=2, checkpoints every 3, log every 6: calls [0,2) 2 3 [4,6): step 5 is inside a scan.
    with pytest.raises(NonFiniteLossError, match=r"step 5.*step 3"):
        _run(tmp_path, make_mesh(), 2, total=8, every=3, log_every=6,
             objective=nan_from_step_five)
    manager = checkpoints.open_manager(str(tmp_path / "ckpt"))
    assert manager.latest_step() == 3
    manager.close()


def test_killed_run_with_several_steps_per_call_resumes_bit_identically(tmp_path):
    mesh = make_mesh()
    full, losses_full, _ = _run(tmp_path / "full", mesh, 2, total=12, every=4, log_every=4)
    # Killed in the call after steps 1-6 (the checkpoint is at step 4).
    with pytest.raises(KeyboardInterrupt):
        _run(tmp_path / "killed", mesh, 2, total=12, every=4, log_every=4, die_after=3)
    resumed, _, calls = _run(tmp_path / "killed", mesh, 2, total=12, every=4, log_every=4)
    assert calls == [2, 2, 2, 2]  # from the checkpoint at step 4
    assert int(resumed.step) == 12
    jax.tree_util.tree_map(np.testing.assert_array_equal, resumed.params, full.params)
    jax.tree_util.tree_map(np.testing.assert_array_equal, resumed.model_state,
                           full.model_state)
    # Logged: step 4 of the killed run, then 8 and 12 of the resumed one.
    np.testing.assert_array_equal(_losses(tmp_path / "killed")[1:], losses_full[1:])


def test_steps_per_call_is_checked_and_read_from_the_config():
    common = dict(name="student", step_fn=None, num_examples=64, steps_per_epoch=4,
                  total_steps=8, seed=0, checkpoint_dir="unused", checkpoint_every=4, keep=1,
                  log_every=4, batch_size=16)
    with pytest.raises(ValueError, match="steps_per_call"):
        StageRun(**common, steps_per_call=0)
    with pytest.raises(ValueError, match="parallel.steps_per_call=1"):
        StageRun(**common, steps_per_call=2, example_widths=np.full(64, 8, np.int32))
    assert base_config().parallel.steps_per_call == 1  # unchanged behaviour by default
