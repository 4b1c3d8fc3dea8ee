"""Checks a whole resolved run config before anything is written or trained.

A typo in `student.method` used to surface only after the whole teacher stage; a negative
epoch count trained one step and wrote a normal-looking report. `check_config` reads every
enumerated field and every number's range up front and raises one `ConfigError` listing
every problem it found, each as `field=value: what is wrong, the fix`. It needs no data and
no device computation, so `cud_jax.pipeline` runs it first.
"""

from __future__ import annotations

import math
import os
from typing import Any, Iterator

from cud_jax.errors import UserError

#: `stage` values: which part of the pipeline to run.
STAGES = ("teacher", "student", "eval", "all")


class ConfigError(UserError, ValueError):
    """The config holds values the run cannot use; the message lists each one and its fix."""


def _enum(field: str, value: Any, valid) -> Iterator[str]:
    if value not in valid:
        yield f"{field}={value!r}: not one of {', '.join(map(str, valid))}"


def _number(field: str, value: Any, *, minimum: float, strict: bool = True,
            integer: bool = False) -> Iterator[str]:
    kind = "an integer" if integer else "a number"
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (
            integer and not float(value).is_integer()):
        yield f"{field}={value!r}: must be {kind}"
        return
    if not math.isfinite(value):
        yield f"{field}={value!r}: must be finite"
    elif value < minimum or (strict and value == minimum):
        yield f"{field}={value!r}: must be {'>' if strict else '>='} {minimum:g}"


def _stage_problems(name: str, cfg, num_devices: int, kind: str) -> Iterator[str]:
    # The method / loss / dtype / model tables live where they are used.
    from cud_jax.models import check_model_name
    from cud_jax.train import objectives
    from cud_jax.train.optim import OPTIMIZERS
    from cud_jax.pipeline import DTYPES, TEACHER_CALIBRATIONS

    # Both stages' models, whatever the stage: a typo in the student's must not surface only
    # after the teacher has trained.
    try:
        check_model_name(cfg.model, kind)
    except ValueError as e:
        yield f"{name}.model={cfg.model!r}: {str(e).rstrip('.')}"

    yield from _number(f"{name}.epochs", cfg.epochs, minimum=0)
    yield from _number(f"{name}.batch_size", cfg.batch_size, minimum=1, strict=False,
                       integer=True)
    if isinstance(cfg.batch_size, int) and cfg.batch_size >= 1 and cfg.batch_size % num_devices:
        yield (f"{name}.batch_size={cfg.batch_size}: not divisible by the {num_devices} "
               f"devices; use a multiple of {num_devices}")
    yield from _number(f"{name}.lr", cfg.lr, minimum=0)
    yield from _number(f"{name}.head_lr_scale", cfg.head_lr_scale, minimum=0)
    yield from _number(f"{name}.weight_decay", cfg.weight_decay, minimum=0, strict=False)
    yield from _enum(f"{name}.optimizer", cfg.optimizer, OPTIMIZERS)
    yield from _enum(f"{name}.dtype", cfg.dtype, tuple(DTYPES))
    if name == "teacher":
        yield from _enum("teacher.loss", cfg.loss, objectives.TEACHER_LOSSES)
        yield from _enum("teacher.calibration", cfg.calibration, TEACHER_CALIBRATIONS)
    else:
        yield from _enum("student.method", cfg.method, objectives.STUDENT_METHODS)
        yield from _number("student.temperature", cfg.temperature, minimum=0)
        for field in ("lam_kd", "lam_ce", "eta", "margin"):
            yield from _number(f"student.{field}", cfg[field], minimum=0, strict=False)
    checkpoint = cfg.checkpoint
    if checkpoint and not os.path.isdir(os.path.expanduser(checkpoint)):
        yield f"{name}.checkpoint={checkpoint!r}: no such checkpoint directory"


def _parallel_problems(parallel) -> Iterator[str]:
    from cud_jax.models.conv import WEIGHT_GRAD_MODES
    from cud_jax.parallel.sharding import PARAM_SHARDINGS

    yield from _enum("parallel.param_sharding", parallel.param_sharding, PARAM_SHARDINGS)
    yield from _number("parallel.fsdp_min_size", parallel.fsdp_min_size, minimum=0,
                       strict=False, integer=True)
    yield from _enum("parallel.conv_weight_grad", parallel.conv_weight_grad, WEIGHT_GRAD_MODES)
    yield from _number("parallel.steps_per_call", parallel.steps_per_call, minimum=1,
                       strict=False, integer=True)
    from cud_jax.train.sweep import SWEEP_LAYOUTS, SWEEP_MODES

    yield from _enum("parallel.sweep_mode", parallel.sweep_mode, SWEEP_MODES)
    yield from _enum("parallel.sweep_layout", parallel.sweep_layout, SWEEP_LAYOUTS)
    if parallel.sweep_layout == "runs":  # the run count is checked with the sweep
        if parallel.sweep_mode == "unroll":
            yield ("parallel.sweep_layout='runs': places the run axis over the devices, which "
                   "unroll mode does not have; set parallel.sweep_mode=vmap (or auto)")
        if parallel.param_sharding != "replicated":
            yield (f"parallel.sweep_layout='runs': places whole runs on devices, which "
                   f"parallel.param_sharding={parallel.param_sharding!r} splits; set "
                   "parallel.param_sharding=replicated or parallel.sweep_layout=batch")


def config_problems(config, *, num_devices: int) -> list[str]:
    """Every problem of `config` for a run on `num_devices` devices (empty: it is fine)."""
    from cud_jax.parallel.placement import PLACEMENTS

    problems = list(_enum("stage", config.stage, STAGES))
    for name in ("teacher", "student"):
        problems += _stage_problems(name, config[name], num_devices, config.data.kind)
    problems += _enum("data.placement", config.data.placement, PLACEMENTS)
    problems += _number("log_every", config.log_every, minimum=1, strict=False, integer=True)
    # 0 saves only at the end of a stage (the pipeline's `every_steps or total`).
    problems += _number("checkpoint.every_steps", config.checkpoint.every_steps, minimum=0,
                        strict=False, integer=True)
    problems += _parallel_problems(config.parallel)
    data_dir = config.data.data_dir
    if data_dir and not os.path.exists(os.path.expanduser(data_dir)):
        problems.append(f"data.data_dir={data_dir!r}: no such file or folder")
    if config.sweep:  # the sweep string, then every variant's values (cud_jax.sweep_pipeline)
        from cud_jax.sweep_pipeline import sweep_problems

        problems += [p for p in sweep_problems(config, num_devices=num_devices)
                     if p not in problems]
    return problems


def check_config(config, *, num_devices: int) -> None:
    """Raises `ConfigError` naming every problem of `config` (see `config_problems`)."""
    problems = config_problems(config, num_devices=num_devices)
    if problems:
        raise ConfigError("invalid config: " + "; ".join(problems) + ". Fix these "
                          "--config.FIELD values (or the config file) and rerun.")
