"""Training: sharded jit steps, the loop with Orbax checkpoints, the stage pipeline, reports.

`cud_jax.train.pipeline.run(config, workdir)` is what `python -m cud_jax.main` calls.
"""
