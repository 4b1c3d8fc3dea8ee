"""A tiny sweep config for tests/test_sweep.py: seconds per stage.

    python -m cud_jax.main --config=tests/sweep_config.py --workdir=/tmp/sweep \
        --config.sweep="seed=0,1"

Ten synthetic classes of 8x8 images, 48 training examples, resnet8 teacher (DUS) and student
(KD), batch 16: 3 steps per epoch, 5 steps per stage (across an epoch boundary), a checkpoint
every 3 steps; evaluation without corruptions, OOD sets or plots.
"""

from cud_jax.configs import base_config


def get_config(arg=None):
    del arg
    c = base_config()
    c.data.name = "synthetic"
    c.data.source_kwargs = dict(num_classes=10, num_superclasses=5, train_per_class=8,
                                test_per_class=4, image_size=8)
    c.data.val_size = 16
    c.data.train_subset = 48
    for stage in (c.teacher, c.student):
        stage.model = "resnet8"
        stage.batch_size = 16
        stage.epochs = 1.34
        stage.lr = 0.01
    c.teacher.loss = "dus"
    c.student.method = "kd"
    c.student.dkd_warmup_epochs = 2.0
    c.log_every = 1
    c.checkpoint.every_steps = 3
    c.eval.corruptions = ""
    c.eval.ood_sets = ""
    c.eval.plots = False
    c.eval.batch_size = 16
    return c
