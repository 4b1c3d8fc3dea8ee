"""CIFAR-10 distillation with the CIFAR-100 recipe (see configs/cifar100.py for arguments).

    # the official archive (cifar-10-python.tar.gz or cifar-10-binary.tar.gz) in a folder:
    python -m cud_jax.main --config=configs/cifar10.py --workdir=runs/c10 \
        --config.data.data_dir=/path/to/folder
    # a JPEG image-folder tarball (train/<class>/*.jpg, test/<class>/*.jpg):
    python -m cud_jax.main --config=configs/cifar10.py --workdir=runs/c10 \
        --config.data.name=image_folder --config.data.data_dir=/path/to/cifar10-jpeg.tar.gz

The recipe is configs/cifar100.py's (read from the file beside this one), on CIFAR-10 and
with SVHN / CIFAR-100 as OOD sets. Default pair resnet32x4 -> resnet8x4, DUS teacher, CUD student, 240 epochs (hours on one
GPU). Expect teachers around 95% and students around 92-93% on the genuine images; JPEG
re-encodes run a little lower.
"""

from cud_jax.configs import load_recipe_module

cifar100 = load_recipe_module("cifar100.py", relative_to=__file__)


def get_config(arg=None):
    c = cifar100.get_config(arg)
    c.data.name = "cifar10"
    c.eval.ood_sets = "tfds:svhn_cropped,cifar100"
    return c
