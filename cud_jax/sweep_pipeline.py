"""A sweep: the runs of `config.sweep` trained together, then evaluated and compared.

    python -m cud_jax.main --config=configs/quickstart.py --workdir=W \\
        --config.sweep="seed=0,1;student.method=kd,cud"

`config.sweep` is a product of field values: `;` separates fields, `,` the values of one
field (a single string, because a locked config accepts no new sub-fields from the command
line; the same string works in a config file). Every combination is a variant, named by
its values in the order given, e.g. `seed=1,method=kd` (a field is named by its last
component unless two swept fields share it).

Only settings that keep the programs of all variants the same shape may vary (`SWEEPABLE`):
the seed, the student method and loss settings, the teacher loss and its settings.
Architecture, data, batch size and schedule length are shared. `check_config` checks the
sweep with the rest of the config (`sweep_problems`), before anything runs.

The teacher stage trains the distinct teachers (a seed or a teacher setting makes a teacher
distinct; student settings share it) stacked on one run axis, the student stage all
variants, each distilling from its own teacher (`cud_jax.train.sweep`; how one step runs
them: `parallel.sweep_mode`; how they sit on the devices: `parallel.sweep_layout`, resolved
per stage, since a stage of distinct teachers may hold fewer runs). Outputs:

    WORKDIR/config.json, versions.json       the sweep's config and environment
    WORKDIR/checkpoints/{teacher,student}/   the stacked states (resume like a single run)
    WORKDIR/runs/<variant>/                  what a run alone writes: config.json,
                                             metrics.jsonl, report.json, report.md, figures
    WORKDIR/compare.md (+ .csv)              `cud_jax.evaluate.compare` over the variants
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import os
import shutil
from typing import Optional

import jax
import ml_collections

from cud_jax import pipeline
from cud_jax.evaluate import compare, report
from cud_jax.parallel import preemption
from cud_jax.parallel.sharding import (RUN_SHARDING, check_batch_size, put_state,
                                      state_sharding)
from cud_jax.train import checkpoints, objectives, optim
from cud_jax.train import sweep as sweep_lib
from cud_jax.train.tasks import PlacedData, num_steps
from cud_jax.train.writers import MetricWriter

#: Fields a sweep may vary: none changes the shapes of the program (`*`: any sub-field).
SWEEPABLE = ("seed", "student.method", "student.temperature", "student.lam_kd",
             "student.lam_ce", "student.eta", "student.margin", "student.dkd_alpha",
             "student.dkd_beta", "student.dkd_warmup_epochs", "teacher.loss",
             "teacher.label_smoothing", "teacher.focal_gamma", "teacher.dus.*")
#: Fields that make a teacher distinct (students of equal values share one teacher).
TEACHER_FIELDS = ("seed", "teacher.")


class SweepError(ValueError):
    """`config.sweep` cannot be trained as one program; the message is one line naming the
    field (`check_config` reports it as a `ConfigError`)."""


@dataclasses.dataclass(frozen=True)
class Variant:
    """One run of a sweep: its name and its full config (`sweep` unset)."""

    name: str
    config: ml_collections.ConfigDict


def _sweepable(field: str) -> bool:
    return any(field == f or (f.endswith(".*") and field.startswith(f[:-1]))
               for f in SWEEPABLE)


def _lookup(config, field: str):
    node = config
    *parents, leaf = field.split(".")
    for parent in parents:
        node = node[parent]
    return node, leaf


def _parse_value(field: str, text: str, current):
    if isinstance(current, bool):
        if text.lower() not in ("true", "false", "1", "0"):
            raise SweepError(f"sweep: {field}={text!r} is not true or false")
        return text.lower() in ("true", "1")
    try:
        return type(current)(text)
    except ValueError:
        raise SweepError(f"sweep: {field}={text!r} is not a {type(current).__name__}"
                         ) from None


def parse_sweep(config) -> list[tuple[str, list]]:
    """`config.sweep` as `[(field, [values])]`, each value of the field's type.

    Raises:
      SweepError: one line naming the malformed item, the unknown field, or a field that
        may not vary (it would change the architecture, data, batch size or schedule).
    """
    fields, seen = [], set()
    for item in (part.strip() for part in config.sweep.split(";")):
        if not item:
            continue
        field, sep, values = item.partition("=")
        field = field.strip()
        values = [v.strip() for v in values.split(",") if v.strip()]
        if not sep or not values:
            raise SweepError(f"sweep: {item!r} is not of the form field=value,value,... "
                             "(fields separated by ';')")
        try:
            node, leaf = _lookup(config, field)
            current = node[leaf]
        except (KeyError, AttributeError):
            raise SweepError(f"sweep: unknown config field {field!r}; sweepable fields: "
                             f"{', '.join(SWEEPABLE)}") from None
        if not _sweepable(field):
            raise SweepError(f"sweep: {field!r} cannot vary within a sweep (variants share "
                             "architecture, data, batch size and schedule); sweepable "
                             f"fields: {', '.join(SWEEPABLE)}")
        if field in seen:
            raise SweepError(f"sweep: {field!r} is listed twice")
        seen.add(field)
        if isinstance(current, (ml_collections.ConfigDict, tuple, list)) or current is None:
            raise SweepError(f"sweep: {field!r} is not a single number or name")
        fields.append((field, [_parse_value(field, v, current) for v in values]))
    if not fields:
        raise SweepError("sweep is empty; give fields like \"seed=0,1;student.method=kd,cud\", "
                         "or leave it unset for a single run")
    return fields


def _short_names(fields: list[str]) -> dict[str, str]:
    last = [f.split(".")[-1] for f in fields]
    return {f: (short if last.count(short) == 1 else f) for f, short in zip(fields, last)}


def _format(value) -> str:
    return repr(value) if isinstance(value, float) else str(value)


def sweep_variants(config) -> list[Variant]:
    """Every variant of `config.sweep` (the product of its values) with its config.

    Also checks that the sweep can train as one program; each failure is a one-line
    `SweepError` naming the field to change.
    """
    fields = parse_sweep(config)
    names = _short_names([f for f, _ in fields])
    variants = []
    for values in itertools.product(*(v for _, v in fields)):
        variant = ml_collections.ConfigDict(config.to_dict())
        variant.sweep = None
        for (field, _), value in zip(fields, values):
            node, leaf = _lookup(variant, field)
            node[leaf] = value
        name = ",".join(f"{names[f]}={_format(v)}" for (f, _), v in zip(fields, values))
        variants.append(Variant(name, variant))
    _check_sweep(config, [f for f, _ in fields], variants)
    return variants


def _teacher_key(variant: Variant) -> str:
    config = variant.config
    if config.teacher.checkpoint:  # one teacher trained elsewhere serves every variant
        return config.teacher.checkpoint
    return json.dumps({"seed": config.seed, "teacher": config.teacher.to_dict()},
                      sort_keys=True, default=str)


def _check_sweep(config, fields: list[str], variants: list[Variant]) -> None:
    if config.data.placement != "replicated":
        raise SweepError(f"sweep needs data.placement=replicated, not "
                         f"{config.data.placement!r} (every variant reads the whole "
                         "training split)")
    if "seed" in fields and tuple(config.data.get("length_buckets") or ()):
        raise SweepError("sweep: seed gives each variant its own epoch order, which length "
                         "buckets cannot batch together; set data.length_buckets=()")
    if config.student.checkpoint:
        raise SweepError("sweep trains its students; unset student.checkpoint")
    teacher_swept = [f for f in fields if f.startswith(TEACHER_FIELDS)]
    if config.teacher.checkpoint and any(f.startswith("teacher.") for f in fields):
        raise SweepError(f"sweep: teacher.checkpoint gives one teacher, but the sweep varies "
                         f"{teacher_swept[0]}; unset teacher.checkpoint")
    teachers = {_teacher_key(v) for v in variants}
    if len(teachers) > 1 and config.teacher.calibration != "none":
        raise SweepError("sweep: teacher.calibration=temperature needs one shared teacher; "
                         f"set teacher.calibration=none or do not sweep {teacher_swept[0]}")
    if len({v.name for v in variants}) != len(variants):
        raise SweepError("sweep lists a value twice; give each value once")


def sweep_problems(config, *, num_devices: int) -> list[str]:
    """The problems of `config.sweep` and of every variant's values, for `check_config`
    (empty: the sweep can run)."""
    from cud_jax.config_check import config_problems

    try:
        variants = sweep_variants(config)
    except SweepError as err:
        return [str(err)]
    problems = []
    for variant in variants:
        for problem in config_problems(variant.config, num_devices=num_devices):
            if problem not in problems:
                problems.append(problem)
    return problems + _layout_problems(config, variants, num_devices)


def _layout_problems(config, variants: list[Variant], num_devices: int) -> list[str]:
    """`parallel.sweep_layout=runs` needs every stacked stage's run count to be a multiple
    of the device count: the students (one per variant) and the distinct teachers it
    trains."""
    if config.parallel.sweep_layout != "runs" or num_devices == 1:
        return []
    stages = {}
    if config.stage in ("teacher", "all") and not config.teacher.checkpoint and any(
            v.config.student.method != "ce" for v in variants):
        stages["teacher"] = len(teachers_of(variants)[0])
    if config.stage in ("student", "all"):
        stages["student"] = len(variants)
    return [f"parallel.sweep_layout='runs': the sweep's {count} {name}s do not divide over "
            f"the {num_devices} devices; sweep a multiple of {num_devices} or set "
            "parallel.sweep_layout=auto (batch for such a stage)"
            for name, count in stages.items() if count % num_devices]


class SweepWriter:
    """The `MetricWriter` of a stacked stage: each run's metrics go to the metrics.jsonl of
    every variant it serves (a shared teacher's to each of its students' folders), with the
    metrics its objective produces, as a run alone would write them."""

    def __init__(self, stage: str, run_dirs: list[list[str]], names: list[set[str]]):
        self._writers = [[MetricWriter(d, stage) for d in dirs] for dirs in run_dirs]
        self._names = names

    def write(self, step: int, record: dict) -> None:
        """Writes one record per run from a stacked step's metrics."""
        for i, run in enumerate(sweep_lib.per_run_records(record, len(self._writers))):
            kept = {k: v for k, v in run.items() if k in self._names[i] or k == "lr"}
            for writer in self._writers[i]:
                writer.write(step, kept)

    def close(self) -> None:
        """Closes every file."""
        for writers in self._writers:
            for writer in writers:
                writer.close()


@dataclasses.dataclass
class Stacked:
    """A stacked stage: the model's graph definitions, stacked variables, the step reached."""

    model_def: object
    params: object
    model_state: object
    step: int

    def run(self, index: int) -> pipeline.Trained:
        """The `index`-th run, as a single run's `Trained`."""
        return pipeline.Trained(self.model_def, sweep_lib.unstack_tree(self.params, index),
                                sweep_lib.unstack_tree(self.model_state, index), self.step)


def stacked_init(name: str, runs: list, data: PlacedData, conv_weight_grad: str):
    """Each run's own seed-derived initial state (as `pipeline.build_stage` makes it),
    stacked; returns `(model_def, tx, stacked state, steps_per_epoch, total_steps)`."""
    cfg = runs[0][name]
    spe, total = num_steps(data, cfg.batch_size, cfg.epochs)
    offset = 0 if name == "teacher" else 1
    states = []
    for config in runs:
        model_def, tx, state = pipeline._init_state(data.task, config[name],
                                                    config.seed + offset, total, spe,
                                                    conv_weight_grad)
        states.append(state)
    return model_def, tx, sweep_lib.stack_states(states), spe, total


def train_stacked_stage(name: str, config, runs: list, workdir: str, data: PlacedData, mesh,
                        run_dirs: list[list[str]], teacher=None) -> Stacked:
    """Trains (or resumes) the runs `runs` (variant configs) of stage `name` stacked.

    Args:
      name: `teacher` or `student`.
      config: the sweep's config (checkpointing, logging, layout, the stage's shared seed).
      runs: one config per stacked run.
      workdir: the sweep's workdir (checkpoints in WORKDIR/checkpoints/<name>).
      data, mesh: as for `pipeline.run_training_stage`.
      run_dirs: per run, the folders whose metrics.jsonl receive its metrics.
      teacher: for the student stage, `(teacher_fn, teacher_vars, teacher_index)` from
        `student_teachers`, or None.
    """
    cfg = runs[0][name]
    check_batch_size(cfg.batch_size, mesh, f"{name}.batch_size")
    model_def, tx, state, spe, total = stacked_init(name, runs, data,
                                                    config.parallel.conv_weight_grad)
    build = objectives.teacher_objective if name == "teacher" else objectives.student_objective
    unique, index = sweep_lib.distinct(runs, lambda c: json.dumps(
        c[name].to_dict(), sort_keys=True, default=str))
    objective_fns = [build(c[name]) for c in unique]
    teacher_fn, teacher_vars, teacher_index = teacher or (None, None, None)
    names = [sweep_lib.metric_names(objective_fns[i], data.task.num_classes,
                                    teacher_fn is not None) for i in index]
    seeds = [c.seed for c in runs]
    own_orders = len(set(seeds)) > 1
    rule, min_size = pipeline._param_layout(config)
    mode, layout = sweep_lib.resolve_layout(
        config.parallel.sweep_layout, config.parallel.sweep_mode, len(runs),
        mesh.devices.size, param_sharding=rule)
    if layout == "runs":  # the stacked state placed run by run (train_stage places it so)
        rule = RUN_SHARDING
    step_fn = sweep_lib.make_sweep_step(
        model_def, tx, objective_fns, index, data.task.augment, batch_size=cfg.batch_size,
        steps_per_epoch=spe, mesh=mesh, teacher=teacher_fn, teacher_index=teacher_index,
        run_keys=sweep_lib.stacked_keys(seeds) if own_orders else None,
        orders_stacked=own_orders, state_sharding=state_sharding(state, mesh, rule, min_size),
        placement=data.placement, mode=mode, layout=layout)
    lr_fn = optim.learning_rate_schedule(cfg, spe, total)
    # Seeds not swept: every run has the same seed, the stage run's own order and key.
    run = dataclasses.replace(
        pipeline.stage_run(name, runs[0], workdir, data, step_fn, spe, total, lr_fn),
        param_sharding=rule)
    if own_orders:
        run = dataclasses.replace(run, epoch_order=sweep_lib.stacked_epoch_order(
            seeds, data.num_train_examples, mesh))
    state = pipeline.train_logged(run, state, data, mesh, SweepWriter(name, run_dirs, names),
                                  teacher_vars)
    return Stacked(model_def, state.params, state.model_state, int(state.step))


def load_stacked_stage(name: str, config, runs: list, workdir: str, data: PlacedData,
                       mesh) -> Stacked:
    """Restores a stacked stage trained earlier (`config.stage` teacher, then student/eval)."""
    model_def, _, template, _, _ = stacked_init(name, runs, data,
                                                config.parallel.conv_weight_grad)
    template = checkpoints.weights(put_state(template, mesh, *pipeline._param_layout(config)))
    state = pipeline._restore_or_fail(
        os.path.join(workdir, "checkpoints", name), template, f"stacked {name}",
        f"Run the sweep with `--config.stage={name}` (or `all`) first.")
    return Stacked(model_def, state["params"], state["model_state"], int(state["step"]))


def student_teachers(variants: list[Variant], teacher_index: list[int], teachers: list,
                     data: PlacedData, mesh, workdir: str):
    """`(teacher_fn, teacher_vars, teacher_index)` for the student stage: one shared teacher
    (forward or cached, calibrated as configured: `pipeline.teacher_for_student`) with index
    None, or the distinct teachers' variables (or cached probabilities) stacked, with each
    variant's index into them."""
    if len(teachers) == 1:
        fn, teacher_vars = pipeline.teacher_for_student(variants[0].config, data, mesh,
                                                        teachers[0], workdir)
        return fn, teacher_vars, None
    per_teacher = [pipeline.teacher_for_student(variants[0].config, data, mesh, t)
                   for t in teachers]
    fn = per_teacher[0][0]  # the same function for every teacher (no calibration)
    return fn, sweep_lib.stack_trees([vars_ for _, vars_ in per_teacher]), teacher_index


def teachers_of(variants: list[Variant]) -> tuple[list, list[int]]:
    """`(teacher configs, each variant's teacher index)`: the distinct teachers the
    distilling variants need. A `ce` variant learns from labels alone; it is given one of
    them only to fill its place on the run axis."""
    distilling = [v for v in variants if v.config.student.method != "ce"] or variants[:1]
    unique, _ = sweep_lib.distinct(distilling, _teacher_key)
    keys = [_teacher_key(v) for v in unique]
    index = [keys.index(_teacher_key(v)) if _teacher_key(v) in keys else 0 for v in variants]
    return [v.config for v in unique], index


def variant_dirs(workdir: str, variants: list[Variant]) -> list[str]:
    """`WORKDIR/runs/<variant>` of every variant."""
    return [os.path.join(workdir, "runs", v.name) for v in variants]


def _write_variant_info(workdir: str, variants: list[Variant], dirs: list[str]):
    """Each variant's config.json (a rerun with another sweep refuses, as for a run) and the
    sweep's versions.json, so each folder reads like a single run's workdir."""
    for variant, directory in zip(variants, dirs):
        os.makedirs(directory, exist_ok=True)
        checkpoints.check_or_write_config(os.path.join(directory, "config.json"),
                                          variant.config.to_dict())
        if jax.process_index() == 0:
            shutil.copy(os.path.join(workdir, "versions.json"), directory)


def evaluate_variants(config, workdir: str, variants: list[Variant], dirs: list[str],
                      data: PlacedData, mesh, teachers: Optional[Stacked], teacher_index,
                      students: Stacked) -> dict:
    """Each variant's report in its folder (`report.evaluate_run`), then WORKDIR/compare.md."""
    reports = {}
    calibration = os.path.join(workdir, report.TEACHER_TEMPERATURE_FILE)
    for i, (variant, directory) in enumerate(zip(variants, dirs)):
        vconfig = ml_collections.ConfigDict(variant.config.to_dict())
        # One corruption cache for all variants (the corrupted images are the same).
        vconfig.eval.cache_dir = config.eval.cache_dir or os.path.join(workdir, "cache",
                                                                       "corruptions")
        if os.path.exists(calibration) and jax.process_index() == 0:
            shutil.copy(calibration, directory)
        # A `ce` student has no teacher, so its report has none (as a run alone).
        has_teacher = teachers is not None and variant.config.student.method != "ce"
        teacher = teachers.run(teacher_index[i]) if has_teacher else None
        reports[variant.name] = report.evaluate_run(vconfig, directory, data, mesh,
                                                    teacher=teacher, student=students.run(i))
    if jax.process_index() == 0:
        compare.compare(dirs, out=os.path.join(workdir, "compare.md"))
    return reports


def run_sweep(config, workdir: str, data: PlacedData, mesh) -> dict:
    """Runs `config.stage` of a sweep (see the module docstring); `pipeline.run` calls it
    once the config is checked, the workdir held, the mesh made and the data placed.
    Returns the reports by variant when evaluating."""
    variants = sweep_variants(config)
    dirs = variant_dirs(workdir, variants)
    _write_variant_info(workdir, variants, dirs)
    stage = config.stage
    needs_teacher = any(v.config.student.method != "ce" for v in variants)
    teacher_runs, teacher_index = teachers_of(variants)
    # A teacher's metrics go to the folders of the students it teaches (not `ce` ones).
    teacher_dirs = [[d for d, v, t in zip(dirs, variants, teacher_index)
                     if t == j and v.config.student.method != "ce"]
                    for j in range(len(teacher_runs))]
    teachers = students = None
    trains_teacher = stage == "teacher" or (stage == "all" and needs_teacher)
    shared_checkpoint = config.teacher.checkpoint

    def load_teachers():
        if shared_checkpoint:  # one teacher from elsewhere, served to every variant
            trained = pipeline.load_trained("teacher", teacher_runs[0], workdir, data, mesh)
            return Stacked(trained.model_def, *sweep_lib.stack_trees(
                [(trained.params, trained.model_state)]), trained.step)
        return load_stacked_stage("teacher", config, teacher_runs, workdir, data, mesh)

    with preemption.handle_sigterm(config.distributed.preemption_check_every):
        if trains_teacher and not shared_checkpoint:
            teachers = train_stacked_stage("teacher", config, teacher_runs, workdir, data,
                                           mesh, teacher_dirs)
        if stage in ("student", "all"):
            teacher = None
            if needs_teacher:
                teachers = teachers or load_teachers()
                teacher = student_teachers(
                    variants, teacher_index,
                    [teachers.run(j) for j in range(len(teacher_runs))], data, mesh, workdir)
            students = train_stacked_stage("student", config, [v.config for v in variants],
                                           workdir, data, mesh, [[d] for d in dirs], teacher)
    if stage not in ("eval", "all"):
        return {}
    if stage == "eval":
        teachers = load_teachers() if needs_teacher else None
        students = load_stacked_stage("student", config, [v.config for v in variants],
                                      workdir, data, mesh)
    with preemption.stop_evaluation_on_sigterm(workdir):
        return evaluate_variants(config, workdir, variants, dirs, data, mesh,
                                 teachers if needs_teacher else None, teacher_index, students)
