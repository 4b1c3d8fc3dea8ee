"""The device side of a run: mesh and sharding rules, data placement, multi-process start-up.

Modules: `sharding` (the `data` mesh, replicated / fsdp state layouts), `placement` (the one
`Placement` object: where the training and evaluation splits live, replicated or one shard
per device; `data_shards` holds the shard and share building blocks), `distributed`
(`jax.distributed` start-up on clusters), `preemption` (SIGTERM -> checkpoint and exit),
`workdir_lock` (one run per workdir), `host_devices` (CPU device emulation for tests and
benchmarks; imports no JAX).
Nothing here imports the trainer.
"""
