"""The trainer: device-count invariance, exact resume, config guard, NaN stop, objectives."""

import json
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest
from flax import nnx

from cud_jax import losses
from cud_jax.data.containers import Split
from cud_jax import pipeline
from cud_jax.evaluate import predict, report
from cud_jax.train import checkpoints, objectives, steps
from cud_jax.configs import base_config
from cud_jax.train.loop import NonFiniteLossError, StageRun, train_stage
from cud_jax.parallel.sharding import make_mesh
from cud_jax.train.state import create_train_state, split_model
from cud_jax.train.tasks import Task
from cud_jax.train.writers import MetricWriter


class TinyNet(nnx.Module):
    """Conv + BatchNorm + linear: exercises batch statistics at a fraction of a ResNet's cost."""

    def __init__(self, num_classes, rngs, dtype=jnp.float32):
        self.conv = nnx.Conv(3, 8, (3, 3), rngs=rngs, dtype=dtype)
        self.bn = nnx.BatchNorm(8, momentum=0.9, rngs=rngs, dtype=dtype)
        self.head = nnx.Linear(8, num_classes, rngs=rngs, dtype=dtype)

    def __call__(self, x):
        x = nnx.relu(self.bn(self.conv(x)))
        return self.head(jnp.mean(x, axis=(1, 2)))


def _task(num_classes=4, n_train=64, size=8):
    rng = np.random.default_rng(0)

    def split(n):
        labels = rng.integers(0, num_classes, n).astype(np.int32)
        images = rng.integers(0, 256, (n, size, size, 3)).astype(np.uint8)
        images[..., 0] = np.clip(images[..., 0] // 2 + 40 * labels[:, None, None], 0, 255)
        return Split(images, labels)

    def preprocess(x):
        return x.astype(jnp.float32) / 255.0

    return Task(name="tiny", num_classes=num_classes, train=split(n_train), val=split(32),
                test=split(40), augment=lambda key, x: preprocess(x), preprocess=preprocess,
                create_model=lambda name, rngs, dtype=jnp.float32: TinyNet(num_classes, rngs),
                info={})


def _stage(tmp_path, mesh, *, objective=None, total=8, every=3, batch=16, name="teacher"):
    task = _task()
    model_def, params, model_state = split_model(task.create_model("tiny", nnx.Rngs(0)))
    tx = optax.sgd(0.1, momentum=0.9)
    cfg = ml_collections.ConfigDict({"loss": "dus", "dus": {}})
    step_fn = steps.make_train_step(model_def, tx, objective or objectives.teacher_objective(cfg),
                                    task.augment, batch_size=batch, steps_per_epoch=4, mesh=mesh)
    run = StageRun(name=name, step_fn=step_fn, num_examples=64, steps_per_epoch=4,
                   total_steps=total, seed=0, checkpoint_dir=str(tmp_path / "ckpt"),
                   checkpoint_every=every, keep=3, log_every=1, batch_size=batch)
    return task, run, create_train_state(params, model_state, tx)


def _losses(workdir):
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [json.loads(line)["loss"] for line in f]


def _train(tmp_path, mesh, **kwargs):
    task, run, state = _stage(tmp_path, mesh, **kwargs)
    writer = MetricWriter(str(tmp_path), run.name)
    state = train_stage(run, state, task.train.inputs, task.train.labels, mesh=mesh,
                        writer=writer)
    writer.close()
    return state, _losses(tmp_path)


def test_one_and_eight_devices_give_the_same_run(tmp_path):
    assert jax.device_count() == 8, "conftest sets 8 host devices"
    one, losses_one = _train(tmp_path / "one", make_mesh(jax.devices()[:1]))
    eight, losses_eight = _train(tmp_path / "eight", make_mesh())
    assert len(losses_one) == 8
    np.testing.assert_allclose(losses_eight, losses_one, rtol=1e-4, atol=1e-6)
    jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5),
                           eight.params, one.params)
    jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5),
                           eight.model_state, one.model_state)


def test_killed_run_resumes_to_the_same_parameters(tmp_path):
    mesh = make_mesh()
    full, losses_full = _train(tmp_path / "full", mesh)

    task, run, state = _stage(tmp_path / "killed", mesh)
    real_step, calls = run.step_fn, []

    def dying_step(*args, **kwargs):
        if len(calls) == 5:  # killed during step 6, after the checkpoint at step 3
            raise KeyboardInterrupt
        calls.append(1)
        return real_step(*args, **kwargs)

    run.step_fn = dying_step
    writer = MetricWriter(str(tmp_path / "killed"), "teacher")
    with pytest.raises(KeyboardInterrupt):
        train_stage(run, state, task.train.inputs, task.train.labels, mesh=mesh, writer=writer)
    writer.close()
    resumed, _ = _train(tmp_path / "killed", mesh)  # the same command, again
    assert int(resumed.step) == 8
    jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7),
                           resumed.params, full.params)
    # The log holds steps 1-5 of the killed run, then 4-8 of the resumed one.
    np.testing.assert_allclose(_losses(tmp_path / "killed")[5:], losses_full[3:], rtol=1e-6)


def test_nan_loss_stops_with_the_step_and_keeps_the_last_good_checkpoint(tmp_path):
    cfg = ml_collections.ConfigDict({"loss": "ce"})
    teacher_ce = objectives.teacher_objective(cfg)

    def nan_from_step_five(logits, labels, teacher_probs, progress):
        loss, metrics = teacher_ce(logits, labels)
        return jnp.where(progress >= 1.0, jnp.nan, 1.0) * loss, metrics  # step 5 = epoch 1

    with pytest.raises(NonFiniteLossError, match=r"step 5.*step 3"):
        _train(tmp_path, make_mesh(), objective=nan_from_step_five)
    manager = checkpoints.open_manager(str(tmp_path / "ckpt"))
    assert manager.latest_step() == 3
    manager.close()
    # Before the first checkpoint there is none to name: say so, and name the fix.
    with pytest.raises(NonFiniteLossError, match=r"step 5; stopping. No checkpoint was written "
                                                 r"before it .*--config.teacher.lr"):
        _train(tmp_path / "early", make_mesh(), objective=nan_from_step_five, every=6)


def test_config_guard_names_the_differing_fields(tmp_path):
    path = str(tmp_path / "config.json")
    config = base_config()
    checkpoints.check_or_write_config(path, config.to_dict())
    checkpoints.check_or_write_config(path, config.to_dict())  # same config: fine
    config.stage = "eval"
    config.eval.corruptions = "contrast"
    checkpoints.check_or_write_config(path, config.to_dict())  # stage and eval may change
    config.student.new_optional_field = None  # added by a later version, unset: compatible
    checkpoints.check_or_write_config(path, config.to_dict())
    config.student.temperature = 2.0
    config.teacher.model = "resnet56"
    with pytest.raises(checkpoints.ConfigMismatchError,
                       match=r"(?s)student.temperature: workdir has 4.0, now 2.0.*teacher.model"):
        checkpoints.check_or_write_config(path, config.to_dict())


def test_student_objectives_match_the_library_losses():
    cfg = base_config().student
    key_z, key_p, key_y = jax.random.split(jax.random.PRNGKey(0), 3)
    logits = jax.random.normal(key_z, (16, 10))
    teacher = jax.nn.softmax(3 * jax.random.normal(key_p, (16, 10)))
    labels = jax.random.randint(key_y, (16,), 0, 10)
    for method, expected in (
            ("cud", losses.cud_student_loss(logits, teacher, labels, temperature=4.0)),
            ("kd", 0.8 * losses.kd_loss(logits, teacher, temperature=4.0)
             + 0.2 * losses.cross_entropy(logits, labels)),
            ("ce", losses.cross_entropy(logits, labels))):
        cfg.method = method
        got, metrics = objectives.student_objective(cfg)(logits, labels, teacher, 0.0)
        np.testing.assert_allclose(got, expected, rtol=1e-6)
        if method == "cud":
            np.testing.assert_allclose(metrics["wclip_fire_rate"],
                                       losses.wclip_stats(teacher, labels).fire_rate)
    cfg.method = "dkd"
    cfg.dkd_warmup_epochs = 20.0
    dkd = losses.dkd_loss(logits, teacher, labels, temperature=4.0, beta=cfg.dkd_beta)
    ce = losses.cross_entropy(logits, labels)
    # Epochs count from 1 (DKD's code): the 10th epoch (9.5 done) trains at 10 / 20.
    half_warm, _ = objectives.student_objective(cfg)(logits, labels, teacher, 9.5)
    np.testing.assert_allclose(half_warm, ce + 0.5 * dkd, rtol=1e-5)


def test_dkd_warmup_counts_epochs_from_one():
    """The first epoch trains at 1 / warmup of full strength, not 0 (issue 10)."""
    assert float(objectives.dkd_warmup(0.0, 20.0)) == pytest.approx(1 / 20)
    assert float(objectives.dkd_warmup(0.99, 20.0)) == pytest.approx(1 / 20)
    assert float(objectives.dkd_warmup(1.0, 20.0)) == pytest.approx(2 / 20)
    assert float(objectives.dkd_warmup(19.0, 20.0)) == 1.0
    assert float(objectives.dkd_warmup(0.0, 2.0)) == pytest.approx(0.5)
    assert objectives.dkd_warmup(0.0, 0.0) == 1.0


def test_projection_ablations_move_the_same_mass_as_wclip():
    cfg = base_config().student
    probs = jax.nn.softmax(3 * jax.random.normal(jax.random.PRNGKey(1), (32, 6)))
    labels = jnp.arange(32) % 6
    wrong = np.asarray(jnp.argmax(probs, -1) != labels)
    delta = np.asarray(losses.wclip_delta(probs, labels))
    top = np.asarray(jnp.argmax(probs, -1))
    for method in ("cud_kl_wrong", "cud_euclid_wrong"):
        q = np.asarray(losses.corrected_targets(probs, labels,
                                                correction=objectives.CORRECTION_OF[method],
                                                eta=cfg.eta, margin=cfg.margin).probs)
        np.testing.assert_allclose(q.sum(-1), 1.0, atol=1e-5)
        rows = np.arange(32)
        np.testing.assert_allclose(q[rows, top][wrong], (np.asarray(probs)[rows, top] - delta)[
            wrong], atol=1e-5)
        np.testing.assert_allclose(q[~wrong], np.asarray(probs)[~wrong], atol=1e-6)


def test_unknown_names_fail_with_the_valid_values():
    with pytest.raises(ValueError, match="valid values: ce, label_smoothing"):
        objectives.teacher_objective(ml_collections.ConfigDict({"loss": "mse"}))
    with pytest.raises(ValueError, match="valid values: ce, kd, dkd, cud"):
        objectives.student_objective(ml_collections.ConfigDict({"method": "fitnet"}))


def test_bfloat16_compute_keeps_float32_parameters_and_losses():
    from cud_jax import models

    mesh = make_mesh()
    model = models.create_model("resnet8", num_classes=4, rngs=nnx.Rngs(0), dtype=jnp.bfloat16)
    model_def, params, model_state = split_model(model)
    tx = optax.sgd(0.05, momentum=0.9)
    cfg = ml_collections.ConfigDict({"loss": "dus", "dus": {}})
    step = steps.make_train_step(model_def, tx, objectives.teacher_objective(cfg),
                                 lambda key, x: x.astype(jnp.float32) / 255.0, batch_size=16,
                                 steps_per_epoch=2, mesh=mesh)
    task = _task(size=32)
    state, metrics = step(create_train_state(params, model_state, tx), task.train.inputs,
                          task.train.labels, jnp.arange(64, dtype=jnp.int32),
                          jax.random.PRNGKey(0), None)
    assert metrics["loss"].dtype == jnp.float32 and np.isfinite(float(metrics["loss"]))
    assert all(x.dtype == jnp.float32 for x in jax.tree_util.tree_leaves(state.params))


def test_cached_teacher_gives_the_same_student_steps():
    mesh = make_mesh()
    task = _task()
    task.augmented = False  # _task's augment is deterministic preprocessing
    teacher_def, t_params, t_state = split_model(TinyNet(4, nnx.Rngs(7)))
    teacher = pipeline.Trained(teacher_def, t_params, t_state, 0)
    config = base_config()
    config.eval.batch_size = 16
    objective = objectives.student_objective(config.student)
    results = []
    for cache in (False, True):
        config.student.cache_teacher = cache
        teacher_fn, teacher_vars = pipeline.teacher_for_student(
            config, pipeline.place_data(config, task, mesh), mesh, teacher)
        model_def, params, model_state = split_model(TinyNet(4, nnx.Rngs(0)))
        tx = optax.sgd(0.1, momentum=0.9)
        step = steps.make_train_step(model_def, tx, objective, task.augment, batch_size=16,
                                     steps_per_epoch=4, mesh=mesh, teacher=teacher_fn)
        state = create_train_state(params, model_state, tx)
        perm = jax.random.permutation(jax.random.PRNGKey(0), 64).astype(jnp.int32)
        losses_seen = []
        for _ in range(4):
            state, metrics = step(state, task.train.inputs, task.train.labels, perm,
                                  jax.random.PRNGKey(1), teacher_vars)
            losses_seen.append(float(metrics["loss"]))
        results.append((losses_seen, state.params))
    np.testing.assert_allclose(results[1][0], results[0][0], rtol=1e-5)
    jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
                           results[1][1], results[0][1])
    task.augmented = True
    with pytest.raises(ValueError, match="cache_teacher"):
        pipeline.teacher_for_student(config, pipeline.place_data(config, task, mesh), mesh,
                                     teacher)


def test_temperature_calibrated_teacher_is_what_the_student_learns_from(tmp_path):
    """`teacher.calibration=temperature`: softmax(z_T / T), T fitted on val (issue 10)."""
    mesh = make_mesh()
    task = _task()
    task.augmented = False  # so the cached teacher applies too
    teacher = pipeline.Trained(*split_model(TinyNet(4, nnx.Rngs(7))), 0)
    config = base_config()
    config.eval.batch_size = 16
    config.teacher.calibration = "temperature"
    predict_fn = predict.make_predict_fn(teacher.model_def, task.preprocess, mesh=mesh)

    def logits_of(images):
        return predict.predict_logits(predict_fn, teacher.params, teacher.model_state, images,
                                      batch_size=16, mesh=mesh)

    temperature = float(losses.fit_temperature(logits_of(task.val.inputs), task.val.labels))
    assert abs(temperature - 1.0) > 0.05  # the check below can tell calibrated from not
    want = jax.nn.softmax(logits_of(task.train.inputs[:16]) / temperature)
    for cache in (False, True):
        config.student.cache_teacher = cache
        teacher_fn, teacher_vars = pipeline.teacher_for_student(
            config, pipeline.place_data(config, task, mesh), mesh, teacher, str(tmp_path))
        got = teacher_fn(teacher_vars, task.preprocess(task.train.inputs[:16]),
                         lambda x: x[:16])
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)
    recorded = report.teacher_calibration(config, str(tmp_path))
    assert recorded == {"calibration": "temperature", "temperature": pytest.approx(temperature)}
    config.teacher.calibration = "platt"
    with pytest.raises(ValueError, match="teacher.calibration 'platt'; valid values: none"):
        pipeline.teacher_for_student(config, pipeline.place_data(config, task, mesh), mesh,
                                     teacher)
