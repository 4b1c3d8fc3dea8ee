"""CIFAR-100 distillation: the recipe of every published CIFAR KD table, with CUD.

    python -m cud_jax.main --config=configs/cifar100.py --workdir=runs/c100 \
        --config.data.data_dir=/path/to/folder/with/cifar-100-python.tar.gz
    python -m cud_jax.main --config=configs/cifar100.py:pair=wrn_40_2-wrn_16_2,method=kd ...
    # via TFDS instead of the archive (after `tfds build cifar100`, or with the archive in
    # TFDS's manual dir): --config.data.name=tfds:cifar100

Arguments (comma separated, all optional): `pair=TEACHER-STUDENT` (default
resnet32x4-resnet8x4), `method=` a student method (ce, kd, dkd, cud, cud_kl_wrong,
cud_euclid_wrong; default cud), `teacher_loss=` (ce, label_smoothing, focal, dus; default dus),
`epochs=` (default 240; another count keeps the schedule's shape: the lr drops at 62.5%, 75%
and 87.5% of training and DKD warms up over its first 1/12, as 150/180/210 and 20 of 240).

Recipe (spelled out in `get_config` below): SGD momentum 0.9, weight decay 5e-4, batch 64, 240
epochs, lr 0.05 (0.01 for MobileNetV2/ShuffleNet students), x0.1 at epochs 150/180/210, KD
temperature 4, lam_kd 0.8 / lam_ce 0.2, DKD's beta per pair with a 20-epoch warm-up, random
crop (padding 4) and flip, 5000 training images held out for validation; evaluation on every
corruption at severities 1-5 and on SVHN / CIFAR-10 as OOD sets. What to expect: the
published CE-teacher numbers for resnet32x4 -> resnet8x4 are about 79.4% (teacher), 72.5%
(student alone), 73.3% (KD) on the full 50k training set; with 5k held out, expect a little
less. This recipe takes hours on one GPU; it has not been run to completion by this project.
"""

from cud_jax.configs import DKD_BETA, DKD_BETA_DEFAULT, base_config, optimizer_config, parse_arg


def get_config(arg=None):
    args = parse_arg(arg, dict(pair="resnet32x4-resnet8x4", method="cud", teacher_loss="dus",
                               epochs="240"))
    teacher, _, student = args["pair"].partition("-")
    if not student:
        raise ValueError("`pair` must look like TEACHER-STUDENT, e.g. wrn_40_2-wrn_16_2.")
    try:
        epochs = float(args["epochs"])
    except ValueError:
        epochs = float("nan")
    if not epochs > 0:
        raise ValueError(f"`epochs` must be a positive number, e.g. epochs=24; got "
                         f"{args['epochs']!r}.")
    shape = epochs / 240  # the published schedule is 240 epochs; other lengths keep its shape
    milestones = tuple(int(m) if float(m).is_integer() else m
                       for m in (150 * shape, 180 * shape, 210 * shape))
    c = base_config()
    c.data.update(name="cifar100", val_size=5000, augment=True, crop_padding=4)
    sgd = optimizer_config(optimizer="sgd", lr=0.05, momentum=0.9, weight_decay=5e-4,
                           lr_milestones=milestones, lr_decay=0.1)
    c.teacher.update(sgd, model=teacher, loss=args["teacher_loss"], epochs=epochs, batch_size=64)
    c.student.update(sgd, model=student, method=args["method"], epochs=epochs, batch_size=64,
                     temperature=4.0, lam_kd=0.8, lam_ce=0.2)
    # Per pair: the KD tables train MobileNetV2 / ShuffleNet students with lr 0.01, and DKD
    # uses its own beta for each pair (DKD_BETA) and warms up over 20 of the 240 epochs.
    if student in ("mobilenetv2", "shufflenetv1", "shufflenetv2"):
        c.student.lr = 0.01
    c.student.update(dkd_alpha=1.0, dkd_beta=DKD_BETA.get(args["pair"], DKD_BETA_DEFAULT),
                     dkd_warmup_epochs=20.0 * shape)
    # Shift: every corruption at severities 1-5; OOD: SVHN and CIFAR-10 test images.
    c.eval.update(corruptions="all", severities="1,2,3,4,5",
                  ood_sets="tfds:svhn_cropped,cifar10")
    return c
