"""Command-line entry point.

    python -m cud_jax.main --config=configs/quickstart.py --workdir=runs/quick
    python -m cud_jax.main --config=configs/cifar100.py:pair=wrn_40_2-wrn_16_2,method=kd \
        --workdir=runs/c100 --config.data.data_dir=~/data

`--config.x=y` overrides any config field; `--config.stage` picks teacher|student|eval|all.
`--config.sweep="seed=0,1,2;student.method=kd,cud"` trains every combination together in one
program (see cud_jax/sweep_pipeline.py).

Multi-process runs start every process with the same command (see launch/README.md);
`--config.distributed.*` says how they meet when no cluster is detected. Exit status 75
means the run was stopped by SIGTERM after saving a checkpoint: rerun to resume.
"""

from __future__ import annotations

import os
import sys

from absl import app, flags, logging
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", None, "Path to a config file.",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, logs and reports.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    # Progress goes to stdout; library INFO logs (Orbax prints one per checkpoint) stay quiet.
    logging.set_verbosity(logging.WARNING)
    from cud_jax import configs  # after flag parsing: keeps --help fast
    from cud_jax.parallel import distributed

    configs.validate(_CONFIG.value)  # a misspelt or missing field fails before anything runs
    distributed.initialize(_CONFIG.value.distributed)  # before any JAX computation
    from cud_jax import pipeline
    from cud_jax.parallel import preemption

    try:
        report = pipeline.run(_CONFIG.value, os.path.expanduser(_WORKDIR.value))
    except preemption.Preempted as stopped:
        logging.warning("%s", stopped)
        print(stopped, flush=True)
        sys.exit(preemption.EXIT_PREEMPTED)
    if report and _CONFIG.value.sweep:  # one report per variant, and their comparison
        print(f"Reports written to {os.path.join(_WORKDIR.value, 'runs', '*', 'report.md')}; "
              f"comparison in {os.path.join(_WORKDIR.value, 'compare.md')}")
    elif report:
        print(f"Report written to {os.path.join(_WORKDIR.value, 'report.md')}")


if __name__ == "__main__":
    app.run(main)
