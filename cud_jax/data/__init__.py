"""Data layer (DESIGN.md layer 4): sources to host numpy, then device-side augmentation.

Vision:

    from cud_jax import data
    ds = data.load_vision("cifar100", data_dir="~/data")      # official archive, no TF
    ds = data.load_vision("synthetic", val_size=1000)         # no download
    x = data.normalize(data.random_crop_flip(key, batch), ds.mean, ds.std)  # inside jit

Host side returns numpy (`Split`, `VisionData`); `augment` and `batching` are pure jnp /
numpy functions usable inside `jax.jit`. Missing data raises `DataNotFoundError` naming the
path searched and the file or command that supplies it.
"""

from cud_jax.data.augment import normalize, random_crop_flip
from cud_jax.data.batching import (bucketed_epoch, bucketed_steps_per_epoch, epoch_permutation,
                                   eval_batches, example_widths, num_steps_per_epoch)
from cud_jax.data.cifar import load_cifar
from cud_jax.data.containers import RawVision, Split, VisionData, make_split
from cud_jax.data.errors import DataNotFoundError
from cud_jax.data.image_folder import load_image_files, load_image_folder, read_image_blobs
from cud_jax.data.synthetic import (
    SyntheticSample,
    SyntheticSpec,
    generate_synthetic,
    generate_synthetic_ood,
    load_synthetic,
    load_synthetic_ood,
)
from cud_jax.data.tfds_source import find_prepared as find_prepared_tfds
from cud_jax.data.tfds_source import load_tfds
from cud_jax.data.vision import (
    channel_stats,
    load_vision,
    register_vision_source,
    vision_sources,
)

# Standard published per-channel statistics (train split, [0, 1] units), for users who want
# the constants common in CIFAR code instead of the values load_vision computes.
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
CIFAR100_MEAN = (0.5071, 0.4865, 0.4409)
CIFAR100_STD = (0.2673, 0.2564, 0.2762)

# CIFAR-C-style corruptions (cud_jax.data.corruptions): numpy + pillow, generated locally.
from cud_jax.data.corruptions import (  # noqa: E402  (appended after the constants)
    CORRUPTIONS,
    corrupt,
    corruption_suite,
)

# Text: WordPiece-tokenised intent / topic data sets (cud_jax.data.text); `Split.inputs` holds
# int32 token ids there.
from cud_jax.data.text import (  # noqa: E402
    RawText,
    TextData,
    TextSplit,
    load_text,
    register_text_source,
    text_sources,
)
from cud_jax.data.tokenization import WordPieceTokenizer, load_tokenizer, pad_ids  # noqa: E402
# Own CSV / JSONL files (csv:PATH, jsonl:PATH) and the local massive / trec copies; importing
# the module registers them.
from cud_jax.data.text_files import load_text_table  # noqa: E402
