"""CIFAR-100 distillation: the recipe of every published CIFAR KD table, with CUD.

    python -m cud_jax.main --config=configs/cifar100.py --workdir=runs/c100 \
        --config.data.data_dir=/path/to/folder/with/cifar-100-python.tar.gz
    python -m cud_jax.main --config=configs/cifar100.py:pair=wrn_40_2-wrn_16_2,method=kd ...
    # via TFDS instead of the archive (after `tfds build cifar100`, or with the archive in
    # TFDS's manual dir): --config.data.name=tfds:cifar100

Arguments (comma separated, all optional): `pair=TEACHER-STUDENT` (default
resnet32x4-resnet8x4), `method=` a student method (ce, kd, dkd, cud, cud_kl_wrong,
cud_euclid_wrong; default cud), `teacher_loss=` (ce, label_smoothing, focal, dus; default dus).

Recipe: SGD momentum 0.9, weight decay 5e-4, batch 64, 240 epochs, lr 0.05 (0.01 for
MobileNetV2/ShuffleNet students), x0.1 at epochs 150/180/210, KD temperature 4, random crop
(padding 4) and flip, 5000 training images held out for validation. What to expect: the
published CE-teacher numbers for resnet32x4 -> resnet8x4 are about 79.4% (teacher), 72.5%
(student alone), 73.3% (KD) on the full 50k training set; with 5k held out, expect a little
less. This recipe takes hours on one GPU; it has not been run to completion by this project.
"""

from cud_jax.configs import cifar_config


def get_config(arg=None):
    return cifar_config(arg, "cifar100")
