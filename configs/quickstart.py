"""Quickstart: the whole CUD pipeline on the embedded synthetic data set, no download.

    python -m cud_jax.main --config=configs/quickstart.py --workdir=runs/quickstart

A DUS teacher (resnet14, 0.18M parameters) and a CUD student (resnet8, 0.08M) on 20
synthetic classes in 5 superclasses, then the evaluation report: clean and
temperature-scaled metrics, 4 corruptions at severities 1/3/5, and near/far OOD detection
against held-out synthetic classes. On 2 CPU cores it finishes in about 3 minutes.
Measured (2 CPU cores, 2 min 20 s): teacher 87.9% test accuracy, student 77.3% (chance is
5%); both under-confident on this short schedule (temperature scaling fits T of about 0.55-0.6).
"""

from cud_jax.configs import base_config


def get_config(arg=None):
    del arg
    c = base_config()
    c.data.name = "synthetic"
    c.data.val_size = 400
    c.data.source_kwargs = dict(num_classes=20, num_superclasses=5, train_per_class=120,
                                test_per_class=40)
    for stage, model in ((c.teacher, "resnet14"), (c.student, "resnet8")):
        stage.model = model
        stage.epochs = 10.0
        stage.batch_size = 64
        stage.lr = 0.05
        stage.lr_milestones = (7,)
    c.student.temperature = 4.0
    c.student.dkd_warmup_epochs = 2.0  # DKD (method=dkd) at full strength from epoch 2 of 10
    c.log_every = 10
    c.checkpoint.every_steps = 50
    c.eval.batch_size = 256
    c.eval.corruptions = "gaussian_noise,gaussian_blur,contrast,jpeg_compression"
    c.eval.severities = "1,3,5"
    c.eval.shift_subset = 400
    c.eval.ood_sets = "synthetic_ood:near,synthetic_ood:far"
    c.eval.ood_subset = 400
    return c
