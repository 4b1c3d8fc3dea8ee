"""The run a config describes: data -> teacher stage -> student stage -> evaluation -> report.

Each stage can run alone (`config.stage` in teacher|student|eval|all) and resumes from its
own checkpoints in the workdir:

    WORKDIR/config.json            the resolved config (a rerun with another config refuses)
    WORKDIR/versions.json          package versions and devices
    WORKDIR/metrics.jsonl          training metrics of both stages
    WORKDIR/tensorboard/           TensorBoard events (with tensorboardX installed)
    WORKDIR/checkpoints/teacher/   Orbax checkpoints of the teacher
    WORKDIR/checkpoints/student/   ... of the student (the teacher is not re-saved there)
    WORKDIR/report.json, report.md the evaluation report
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import platform
import time
from typing import Any, Optional

import jax
import jax.numpy as jnp
from flax import nnx

from cud_jax import configs, losses
from cud_jax.data import Split
from cud_jax.evaluate import predict, report
from cud_jax.parallel import distributed, preemption
from cud_jax.parallel.workdir_lock import hold_workdir
from cud_jax.train import checkpoints, objectives, optim, steps
from cud_jax.parallel.placement import (check_placement, eval_share, shards_to_mesh,
                                          take_local_shards)
from cud_jax.train.loop import StageRun, train_stage
from cud_jax.parallel.sharding import (check_batch_size, check_param_sharding,
                                    check_same_everywhere, make_mesh, put_replicated,
                                    put_state, state_sharding)
from cud_jax.train.state import TrainState, create_train_state, split_model
from cud_jax.train.tasks import Task, build_task, num_steps, train_widths
from cud_jax.train.writers import MetricWriter

STAGES = ("teacher", "student", "eval", "all")
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


@dataclasses.dataclass
class Trained:
    """A model with its variables, ready for the student step or evaluation."""

    model_def: Any
    params: Any
    model_state: Any
    step: int


def _dtype(name: str):
    if name not in DTYPES:
        raise ValueError(f"Unknown dtype {name!r}; valid values: {', '.join(DTYPES)}.")
    return DTYPES[name]


def _param_layout(config) -> tuple[str, int]:
    """`(param_sharding, fsdp_min_size)` of `config.parallel`."""
    return config.parallel.param_sharding, config.parallel.fsdp_min_size


def _init_state(task: Task, cfg, seed: int, total_steps: int, steps_per_epoch: int):
    model = task.create_model(cfg.model, nnx.Rngs(seed), _dtype(cfg.dtype))
    model_def, params, model_state = split_model(model)
    tx = optim.make_optimizer(cfg, steps_per_epoch, total_steps)
    return model_def, tx, create_train_state(params, model_state, tx)


def _stage_run(name: str, cfg, config, workdir, task: Task, step_fn, spe: int, total: int,
               lr_fn) -> StageRun:
    every = config.checkpoint.every_steps or total
    rule, min_size = _param_layout(config)
    shards = task.train_shards
    return StageRun(name=name, step_fn=step_fn, num_examples=task.num_train_examples,
                    steps_per_epoch=spe, total_steps=total, seed=config.seed,
                    checkpoint_dir=os.path.join(workdir, "checkpoints", name),
                    checkpoint_every=every, keep=config.checkpoint.keep,
                    log_every=config.log_every, batch_size=cfg.batch_size, lr_fn=lr_fn,
                    example_widths=train_widths(task), param_sharding=rule,
                    fsdp_min_size=min_size,
                    num_shards=None if shards is None else shards.num_shards)


def training_arrays(task: Task, mesh):
    """(inputs, labels) of the training split: host arrays, or global arrays of the shards."""
    if task.train_shards is not None:
        return shards_to_mesh(task.train_shards, mesh)
    return task.train.images, task.train.labels


def place_training_data(config, task: Task, mesh) -> Task:
    """The task as `config.data.placement` wants it: with `sharded`, this process keeps only
    its shards of the training split (`cud_jax.parallel.placement`)."""
    placement = config.data.placement
    check_placement(placement)
    if placement == "replicated":
        return task
    train = task.train
    check_same_everywhere((train.images, train.labels), "training data")  # before the cut
    shards = take_local_shards(train, mesh, config.data.split_seed)
    held = shards.shard_size * len(shards.shard_ids)
    print(f"[data] process {jax.process_index()} holds training shards "
          f"{list(shards.shard_ids)}: {held} of {shards.num_examples} examples")
    return dataclasses.replace(task, train=None, train_shards=shards)


def place_eval_data(config, task: Task, mesh) -> Task:
    """With `data.placement=sharded`, every evaluation split keeps only the rows this
    process's devices read (`data_placement.eval_share`); labels stay whole (the metrics need
    them all), and the shift subset of the test images is chosen before the cut."""
    if config.data.placement == "replicated":
        return task
    ev = config.eval

    def cut(images):
        return eval_share(images, ev.batch_size, mesh)

    shift = None
    if ev.corruptions.strip():
        images, labels = report.shift_subset(task.test, ev)
        shift = Split(cut(images), labels)
    return dataclasses.replace(
        task, val=Split(cut(task.val.images), task.val.labels),
        test=Split(cut(task.test.images), task.test.labels),
        ood={name: cut(images) for name, images in task.ood.items()}, shift_split=shift)


def _restore_or_fail(directory: str, template: TrainState, what: str, fix: str) -> TrainState:
    manager = checkpoints.open_manager(directory)
    try:
        restored = checkpoints.restore_latest(manager, template)
    except ValueError as err:  # shapes differ: another model or class count
        raise ValueError(f"The {what} checkpoint in {directory} does not fit the configured "
                         f"model and data ({err}). {fix}") from err
    finally:
        manager.close()
    if restored is None:
        raise FileNotFoundError(f"No {what} checkpoint in {directory}. {fix}")
    return restored


TEACHER_CALIBRATIONS = ("none", "temperature")

def teacher_temperature(config, task: Task, mesh, teacher: Trained, workdir=None):
    """The temperature the student's teacher is divided by, or None (`teacher.calibration`).

    `temperature`: post-hoc temperature scaling of the frozen teacher, fitted on the
    validation split as in the evaluation's TS variant (PAPER.md's temperature-scaled CE
    teacher baseline); the student then distils from softmax(z_T / T). Written to
    `WORKDIR/teacher_temperature.json` for the report.
    """
    calibration = config.teacher.calibration
    if calibration not in TEACHER_CALIBRATIONS:
        raise ValueError(f"Unknown teacher.calibration {calibration!r}; valid values: "
                         f"{', '.join(TEACHER_CALIBRATIONS)}.")
    if calibration == "none":
        return None
    predict_fn = predict.make_predict_fn(teacher.model_def, task.preprocess, mesh=mesh)
    val_logits = predict.predict_logits(predict_fn, teacher.params, teacher.model_state,
                                        task.val.images, batch_size=config.eval.batch_size,
                                        mesh=mesh, widths_fn=task.widths_fn)
    temperature = float(losses.fit_temperature(val_logits, task.val.labels))
    print(f"[student] teacher calibrated by temperature scaling: T = {temperature:.4f}")
    if workdir is not None and jax.process_index() == 0:
        with open(os.path.join(workdir, report.TEACHER_TEMPERATURE_FILE), "w", encoding="utf-8") as f:
            json.dump({"calibration": calibration, "temperature": temperature}, f)
    return temperature


def teacher_for_student(config, task: Task, mesh, teacher: Optional[Trained], workdir=None):
    """(teacher_fn, teacher_vars) for the student step, or (None, None) without a teacher.

    With `student.cache_teacher` the frozen teacher's probabilities on every training input
    are computed once here and the step looks them up, skipping the teacher forward pass.
    That is exact only when training inputs are not randomly augmented (text). With
    `teacher.calibration=temperature` the teacher's logits are divided by the temperature
    fitted on the validation split (`teacher_temperature`).
    """
    if teacher is None:
        return None, None
    temperature = teacher_temperature(config, task, mesh, teacher, workdir)
    if not config.student.cache_teacher:
        return (steps.model_teacher(teacher.model_def, temperature),
                (teacher.params, teacher.model_state))
    if task.augmented:
        raise ValueError("student.cache_teacher=True needs un-augmented training inputs, but "
                         "this task augments them; set data.augment=False or "
                         "student.cache_teacher=False.")
    predict_fn = predict.make_predict_fn(teacher.model_def, task.preprocess, mesh=mesh)
    scale = (lambda z: z) if temperature is None else (lambda z: z / temperature)
    if task.train_shards is not None:  # computed where each shard lives, kept there
        logits = predict.predict_shards(predict_fn, teacher.params, teacher.model_state,
                                        training_arrays(task, mesh)[0],
                                        batch_size=config.eval.batch_size, mesh=mesh)
        logging.info("cached teacher probabilities for %d training inputs",
                     task.num_train_examples)
        return steps.cached_teacher, jax.jit(lambda z: jax.nn.softmax(scale(z)))(logits)
    logits = predict.predict_logits(predict_fn, teacher.params, teacher.model_state,
                                    task.train.images, batch_size=config.eval.batch_size,
                                    mesh=mesh, widths_fn=task.widths_fn)
    probs = jax.nn.softmax(scale(jnp.asarray(logits)), axis=-1)
    logging.info("cached teacher probabilities for %d training inputs", len(logits))
    return steps.cached_teacher, put_replicated(probs, mesh)


def build_stage(name: str, config, task: Task, mesh, teacher_fn=None):
    """Model, optimiser, initial state and jitted step of the teacher or student stage."""
    cfg = config.teacher if name == "teacher" else config.student
    check_batch_size(cfg.batch_size, mesh, f"{name}.batch_size")
    spe, total = num_steps(task, cfg.batch_size, cfg.epochs)
    seed = config.seed + (0 if name == "teacher" else 1)
    model_def, tx, state = _init_state(task, cfg, seed, total, spe)
    if name == "teacher":
        objective = objectives.teacher_objective(cfg)
    else:
        objective = objectives.student_objective(cfg)
    layout = state_sharding(state, mesh, *_param_layout(config))  # as train_stage places it
    step_fn = steps.make_train_step(model_def, tx, objective, task.augment,
                                    batch_size=cfg.batch_size, steps_per_epoch=spe, mesh=mesh,
                                    teacher=teacher_fn, state_sharding=layout,
                                    sharded_data=task.train_shards is not None)
    lr_fn = optim.learning_rate_schedule(cfg, spe, total)
    return model_def, state, step_fn, spe, total, lr_fn


def run_training_stage(name: str, config, workdir: str, task: Task, mesh,
                       teacher: Optional[Trained] = None) -> Trained:
    """Trains (or resumes) the teacher or the student and returns it."""
    cfg = config.teacher if name == "teacher" else config.student
    teacher_fn, teacher_vars = teacher_for_student(config, task, mesh, teacher, workdir)
    model_def, state, step_fn, spe, total, lr_fn = build_stage(name, config, task, mesh,
                                                               teacher_fn)
    run = _stage_run(name, cfg, config, workdir, task, step_fn, spe, total, lr_fn)
    writer = MetricWriter(workdir, name)
    try:
        inputs, labels = training_arrays(task, mesh)
        state = train_stage(run, state, inputs, labels, mesh=mesh, writer=writer,
                            teacher_vars=teacher_vars)
    finally:
        writer.close()
    return Trained(model_def, state.params, state.model_state, int(state.step))


def load_trained(name: str, config, workdir: str, task: Task, mesh) -> Trained:
    """Restores a trained teacher or student from the workdir, or from `<stage>.checkpoint`."""
    cfg = config.teacher if name == "teacher" else config.student
    spe, total = num_steps(task, cfg.batch_size, cfg.epochs)
    model_def, _, template = _init_state(task, cfg, config.seed, total, spe)
    directory = os.path.join(workdir, "checkpoints", name)
    if cfg.checkpoint:  # a model trained elsewhere (e.g. to evaluate it here)
        directory = cfg.checkpoint
    fix = (f"Run `--config.stage={name}` (or `all`) first, or set --config.{name}.checkpoint "
           f"to a {name} checkpoint directory.")
    # Placed first, so the checkpoint is restored straight into the configured layout.
    template = put_state(template, mesh, *_param_layout(config))
    state = _restore_or_fail(directory, template, name, fix)
    if int(state.step) < total:
        logging.warning("%s checkpoint is at step %d of %d: it is not fully trained.", name,
                        int(state.step), total)
    return Trained(model_def, state.params, state.model_state, int(state.step))


def write_run_info(config, workdir: str, mesh) -> None:
    """The resolved config (or a check against the existing one) and the environment."""
    checkpoints.check_or_write_config(os.path.join(workdir, "config.json"), config.to_dict())
    if jax.process_index() != 0:
        return
    import importlib.metadata as md

    versions = {}
    for package in ("jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "chex",
                    "ml-collections", "numpy"):
        try:
            versions[package] = md.version(package)
        except md.PackageNotFoundError:
            versions[package] = None
    info = {"versions": versions, "python": platform.python_version(),
            "backend": jax.default_backend(), "devices": [str(d) for d in mesh.devices.flat],
            "process_count": jax.process_count(), "time": time.strftime("%Y-%m-%d %H:%M:%S")}
    with open(os.path.join(workdir, "versions.json"), "w", encoding="utf-8") as f:
        json.dump(info, f, indent=2)


def run(config, workdir: str) -> dict:
    """Runs `config.stage` of the pipeline in `workdir`; returns the report when evaluating.

    Multi-process (`config.distributed`): every process runs this with the same config; the
    mesh spans all their devices. On SIGTERM the training stage in progress saves a
    checkpoint and raises `preemption.Preempted` (see `cud_jax.parallel.preemption`).
    """
    configs.validate(config)  # every field the run reads is there, and nothing else
    if config.sweep:  # many runs in one program: the sweep is checked before anything runs
        from cud_jax import sweep_pipeline
        sweep_pipeline.sweep_variants(config)
    if config.stage not in STAGES:
        raise ValueError(f"Unknown stage {config.stage!r}; valid values: {', '.join(STAGES)}.")
    check_param_sharding(*_param_layout(config))
    distributed.initialize(config.distributed)  # before JAX computes anything
    os.makedirs(workdir, exist_ok=True)
    with hold_workdir(workdir):  # one run per workdir
        return _run_locked(config, workdir)


def _run_locked(config, workdir: str) -> dict:
    """`run` once the workdir is this run's."""
    mesh = make_mesh()
    distributed.process_0_first(lambda: write_run_info(config, workdir, mesh), "run_info")
    task = place_eval_data(config, place_training_data(config, build_task(config.data), mesh),
                           mesh)
    if config.sweep:
        from cud_jax import sweep_pipeline
        return sweep_pipeline.run_sweep(config, workdir, task, mesh)
    stage = config.stage
    teacher = student = None
    needs_teacher = config.student.method != "ce"
    check_every = config.distributed.preemption_check_every

    # `all` skips the teacher when nothing needs it (a `ce` student trains on labels alone),
    # and any model given by `<stage>.checkpoint` (it is only evaluated).
    trains_teacher = stage == "teacher" or (stage == "all" and needs_teacher)
    with preemption.handle_sigterm(check_every):
        if trains_teacher and not config.teacher.checkpoint:
            teacher = run_training_stage("teacher", config, workdir, task, mesh)
        if stage in ("student", "all") and not config.student.checkpoint:
            if teacher is None and needs_teacher:
                teacher = load_trained("teacher", config, workdir, task, mesh)
            student = run_training_stage("student", config, workdir, task, mesh,
                                         teacher if needs_teacher else None)
    if stage not in ("eval", "all"):
        return {}
    return report.evaluate_run(config, workdir, task, mesh, teacher=teacher, student=student,
                               load=lambda name: load_trained(name, config, workdir, task, mesh))
