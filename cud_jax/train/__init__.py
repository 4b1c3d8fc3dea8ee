"""Training: train state, optimiser, objectives, the jitted step, the loop, checkpoints.

The run that strings the stages together is `cud_jax.pipeline.run(config, workdir)`, what
`python -m cud_jax.main` calls.
"""
