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
    WORKDIR/teacher_temperature.json  the teacher's temperature (teacher.calibration)
    WORKDIR/LOCK                   held while the run uses the workdir (parallel.workdir_lock)

The stages are plain: the config is validated, the data stage loads the task and places it
(`place_data`: one `Placement` decides what this process holds), each training stage builds
its state and step and runs the loop, and the evaluation stage writes the report.
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
from cud_jax.config_check import check_config
from cud_jax.data import Split
from cud_jax.evaluate import predict, report
from cud_jax.models.conv import set_conv_weight_grad
from cud_jax.parallel import distributed, preemption
from cud_jax.parallel.placement import make_placement
from cud_jax.parallel.sharding import (check_batch_size, make_mesh,
                                       put_state, state_sharding)
from cud_jax.parallel.workdir_lock import hold_workdir
from cud_jax.train import checkpoints, objectives, optim, steps
from cud_jax.train.loop import StageRun, train_stage
from cud_jax.train.state import create_train_state, split_model
from cud_jax.train.tasks import PlacedData, Task, build_task, num_steps, train_widths
from cud_jax.train.writers import MetricWriter

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


def _init_state(task: Task, cfg, seed: int, total_steps: int, steps_per_epoch: int,
                conv_weight_grad: str):
    model = task.create_model(cfg.model, nnx.Rngs(seed), _dtype(cfg.dtype))
    set_conv_weight_grad(model, conv_weight_grad)  # a no-op for models without convs
    model_def, params, model_state = split_model(model)
    tx = optim.make_optimizer(cfg, steps_per_epoch, total_steps)
    return model_def, tx, create_train_state(params, model_state, tx)


def stage_run(name: str, config, workdir, data: PlacedData, step_fn, spe: int, total: int,
               lr_fn) -> StageRun:
    """The `StageRun` (loop settings: checkpoints, logging, layout) of stage `name`."""
    every = config.checkpoint.every_steps or total
    rule, min_size = _param_layout(config)
    return StageRun(name=name, step_fn=step_fn, num_examples=data.num_train_examples,
                    steps_per_epoch=spe, total_steps=total, seed=config.seed,
                    checkpoint_dir=os.path.join(workdir, "checkpoints", name),
                    checkpoint_every=every, keep=config.checkpoint.keep,
                    log_every=config.log_every, batch_size=config[name].batch_size,
                    lr_fn=lr_fn, example_widths=train_widths(data), param_sharding=rule,
                    fsdp_min_size=min_size, placement=data.placement,
                    steps_per_call=config.parallel.steps_per_call)


def place_data(config, task: Task, mesh) -> PlacedData:
    """The data stage's output: `task`'s splits as `config.data.placement` holds them here.

    With `sharded`, this process keeps only its shards of the training split and, of every
    evaluation split, the rows its devices read; the shift subset of the test images is
    chosen before that cut (`cud_jax.parallel.placement`).
    """
    placement = make_placement(config.data.placement, mesh)
    ev = config.eval

    def held(inputs, labels):
        return Split(placement.hold_eval(inputs, ev.batch_size), labels)

    shift = held(*report.shift_subset(task.test, ev)) if ev.corruptions.strip() else None
    return PlacedData(
        task=dataclasses.replace(task, train=None, val=None, test=None, ood={}),
        placement=placement, train=placement.hold_training(task.train, config.data.split_seed),
        val=held(task.val.inputs, task.val.labels), test=held(task.test.inputs, task.test.labels),
        shift=shift, ood={name: placement.hold_eval(x, ev.batch_size)
                          for name, x in task.ood.items()})


def _restore_or_fail(directory: str, template: dict, what: str, fix: str) -> dict:
    """The weights (`checkpoints.weights`) of the newest checkpoint in `directory`."""
    try:
        restored = checkpoints.restore_fields(directory, template)
    except checkpoints.CheckpointMismatchError as err:  # another model or class count
        raise checkpoints.CheckpointMismatchError(
            f"The {what} checkpoint does not fit the configured model and data. {err} "
            f"{fix}") from err
    if restored is None:
        raise checkpoints.CheckpointNotFound(f"No {what} checkpoint in {directory}. {fix}")
    return restored


TEACHER_CALIBRATIONS = ("none", "temperature")


def predict_split_logits(trained: Trained, data: PlacedData, inputs, config, mesh):
    """`trained`'s logits on the held evaluation inputs `inputs` (e.g. `data.val.inputs`)."""
    predict_fn = predict.make_predict_fn(trained.model_def, data.task.preprocess, mesh=mesh)
    return predict.predict_logits(predict_fn, trained.params, trained.model_state, inputs,
                                  batch_size=config.eval.batch_size, mesh=mesh,
                                  widths_fn=data.task.widths_fn, placement=data.placement)


def teacher_temperature(config, data: PlacedData, mesh, teacher: Trained, workdir=None):
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
    val_logits = predict_split_logits(teacher, data, data.val.inputs, config, mesh)
    temperature = float(losses.fit_temperature(val_logits, data.val.labels))
    print(f"[student] teacher calibrated by temperature scaling: T = {temperature:.4f}")
    if workdir is not None and jax.process_index() == 0:
        with open(os.path.join(workdir, report.TEACHER_TEMPERATURE_FILE), "w",
                  encoding="utf-8") as f:
            json.dump({"calibration": calibration, "temperature": temperature}, f)
    return temperature


def teacher_for_student(config, data: PlacedData, mesh, teacher: Optional[Trained],
                        workdir=None):
    """(teacher_fn, teacher_vars) for the student step, or (None, None) without a teacher.

    With `student.cache_teacher` the frozen teacher's probabilities on every training input
    are computed once here, where the placement keeps the training inputs, and the step
    looks them up, skipping the teacher forward pass. That is exact only when training
    inputs are not randomly augmented (text). With `teacher.calibration=temperature` the
    teacher's logits are divided by the temperature fitted on the validation split
    (`teacher_temperature`).
    """
    if teacher is None:
        return None, None
    temperature = teacher_temperature(config, data, mesh, teacher, workdir)
    if not config.student.cache_teacher:
        return (steps.model_teacher(teacher.model_def, temperature),
                (teacher.params, teacher.model_state))
    if data.task.augmented:
        raise ValueError("student.cache_teacher=True needs un-augmented training inputs, but "
                         "this task augments them; set data.augment=False or "
                         "student.cache_teacher=False.")
    predict_fn = predict.make_predict_fn(teacher.model_def, data.task.preprocess, mesh=mesh)
    logits = predict.training_logits(predict_fn, teacher.params, teacher.model_state, data,
                                     batch_size=config.eval.batch_size, mesh=mesh)
    logging.info("cached teacher probabilities for %d training inputs",
                 data.num_train_examples)
    if temperature is not None:
        logits = logits / temperature
    return steps.cached_teacher, jax.jit(lambda z: jax.nn.softmax(z, axis=-1))(logits)


def build_stage(name: str, config, data: PlacedData, mesh, teacher_fn=None):
    """Model, optimiser, initial state and jitted step of the teacher or student stage."""
    cfg = config[name]
    check_batch_size(cfg.batch_size, mesh, f"{name}.batch_size")
    spe, total = num_steps(data, cfg.batch_size, cfg.epochs)
    seed = config.seed + (0 if name == "teacher" else 1)
    model_def, tx, state = _init_state(data.task, cfg, seed, total, spe,
                                       config.parallel.conv_weight_grad)
    objective = (objectives.teacher_objective(cfg) if name == "teacher"
                 else objectives.student_objective(cfg))
    layout = state_sharding(state, mesh, *_param_layout(config))  # as train_stage places it
    step_fn = steps.make_train_step(model_def, tx, objective, data.task.augment,
                                    batch_size=cfg.batch_size, steps_per_epoch=spe, mesh=mesh,
                                    teacher=teacher_fn, state_sharding=layout,
                                    placement=data.placement)
    lr_fn = optim.learning_rate_schedule(cfg, spe, total)
    return model_def, state, step_fn, spe, total, lr_fn


def run_training_stage(name: str, config, workdir: str, data: PlacedData, mesh,
                       teacher: Optional[Trained] = None) -> Trained:
    """Trains (or resumes) the teacher or the student and returns it."""
    teacher_fn, teacher_vars = teacher_for_student(config, data, mesh, teacher, workdir)
    model_def, state, step_fn, spe, total, lr_fn = build_stage(name, config, data, mesh,
                                                               teacher_fn)
    run = stage_run(name, config, workdir, data, step_fn, spe, total, lr_fn)
    state = train_logged(run, state, data, mesh, MetricWriter(workdir, name), teacher_vars)
    return Trained(model_def, state.params, state.model_state, int(state.step))


def train_logged(run, state, data: PlacedData, mesh, writer, teacher_vars):
    """`train_stage` over the placed training split, logging to `writer` (closed after,
    also when training stops early); returns the final state."""
    try:
        inputs, labels = data.placement.held_arrays(data.train)
        return train_stage(run, state, inputs, labels, mesh=mesh, writer=writer,
                           teacher_vars=teacher_vars)
    finally:
        writer.close()


def load_trained(name: str, config, workdir: str, data: PlacedData, mesh) -> Trained:
    """Restores a trained teacher or student from the workdir, or from `<stage>.checkpoint`."""
    cfg = config[name]
    spe, total = num_steps(data, cfg.batch_size, cfg.epochs)
    model_def, _, template = _init_state(data.task, cfg, config.seed, total, spe,
                                         config.parallel.conv_weight_grad)
    directory = os.path.join(workdir, "checkpoints", name)
    if cfg.checkpoint:  # a model trained elsewhere (e.g. to evaluate it here)
        directory = cfg.checkpoint
    fix = (f"Run `--config.stage={name}` (or `all`) first, or set --config.{name}.checkpoint "
           f"to a {name} checkpoint directory.")
    # Placed first, so the checkpoint is restored straight into the configured layout. Only
    # the weights are read: the optimiser state is not needed (and an imported checkpoint,
    # `python -m cud_jax.convert`, has none).
    template = checkpoints.weights(put_state(template, mesh, *_param_layout(config)))
    state = _restore_or_fail(directory, template, name, fix)
    step = int(state["step"])
    imported = checkpoints.read_import_info(directory)
    if imported is not None and jax.process_index() == 0:
        print(f"[{name}] weights imported from {imported.get('source')} "
              f"({imported.get('arch')})")
    elif imported is None and step < total:
        logging.warning("%s checkpoint is at step %d of %d: it is not fully trained.", name,
                        step, total)
    return Trained(model_def, state["params"], state["model_state"], step)


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
    distributed.initialize(config.distributed)  # before JAX computes anything
    # Fail before work: the whole config's values, then the data, before the workdir is
    # written.
    check_config(config, num_devices=jax.device_count())
    task = build_task(config.data)
    os.makedirs(workdir, exist_ok=True)
    with hold_workdir(workdir):  # one run per workdir
        return _run_locked(config, workdir, task)


def _run_locked(config, workdir: str, task: Task) -> dict:
    """`run` once the workdir is this run's."""
    mesh = make_mesh()
    distributed.process_0_first(lambda: write_run_info(config, workdir, mesh), "run_info")
    data = place_data(config, task, mesh)
    if config.sweep:  # many runs in one program (checked with the config above)
        from cud_jax import sweep_pipeline

        return sweep_pipeline.run_sweep(config, workdir, data, mesh)
    stage = config.stage
    teacher = student = None
    needs_teacher = config.student.method != "ce"

    # `all` skips the teacher when nothing needs it (a `ce` student trains on labels alone),
    # and any model given by `<stage>.checkpoint` (it is only evaluated).
    trains_teacher = stage == "teacher" or (stage == "all" and needs_teacher)
    with preemption.handle_sigterm(config.distributed.preemption_check_every):
        if trains_teacher and not config.teacher.checkpoint:
            teacher = run_training_stage("teacher", config, workdir, data, mesh)
        if stage in ("student", "all") and not config.student.checkpoint:
            if teacher is None and needs_teacher:
                teacher = load_trained("teacher", config, workdir, data, mesh)
            student = run_training_stage("student", config, workdir, data, mesh,
                                         teacher if needs_teacher else None)
    if stage not in ("eval", "all"):
        return {}
    finished = report.up_to_date_report(config, workdir)
    if finished is not None:
        print(f"The report in {workdir} is up to date (same evaluation settings, newest "
              "checkpoints): evaluation skipped. Delete report.json to redo it.", flush=True)
        return finished
    with preemption.stop_evaluation_on_sigterm(workdir):
        return report.evaluate_run(
            config, workdir, data, mesh, teacher=teacher, student=student,
            load=lambda name: load_trained(name, config, workdir, data, mesh))
