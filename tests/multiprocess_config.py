"""A tiny config for the multi-process tests (tests/test_multiprocess.py): seconds per run.

    python -m cud_jax.main --config=tests/multiprocess_config.py --workdir=/tmp/mp

Eight synthetic classes of 16x16 images, resnet8 teacher and student, 8 steps per stage
(global batch 32: 4 examples on each of 8 devices), a checkpoint every 4 steps, and an
evaluation with two corruptions at one severity and uniform-noise OOD images. Data are
sharded: each process keeps only the training shards of its own devices and the rows of
every evaluation split they read (`cud_jax.parallel.placement`).
"""

from cud_jax.configs import base_config


def get_config(arg=None):
    del arg
    c = base_config()
    c.data.name = "synthetic"
    c.data.val_size = 32
    c.data.placement = "sharded"
    c.data.source_kwargs = dict(num_classes=8, num_superclasses=2, train_per_class=36,
                                test_per_class=8, image_size=16)
    for stage in (c.teacher, c.student):
        stage.model = "resnet8"
        stage.epochs = 1.0
        stage.batch_size = 32
        stage.lr = 0.05
        stage.lr_milestones = (1,)
    c.log_every = 1
    c.checkpoint.every_steps = 4
    c.eval.batch_size = 32
    c.eval.corruptions = "contrast,gaussian_noise"
    c.eval.severities = "2"
    c.eval.ood_sets = "noise:uniform"
    c.eval.ood_subset = 20
    c.eval.plots = False
    c.distributed.preemption_check_every = 1
    return c
