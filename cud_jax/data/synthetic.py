"""An embedded synthetic image source with a class hierarchy and graded ambiguity.

Needs no download and is deterministic given `data_seed`. The generative story:

* Every superclass has a smooth random colour field (coarse, 4x4 control points); every class
  adds its own finer field (8x8 control points). A class prototype mixes the two, so classes
  in one superclass look alike (correlation `sibling_similarity`) and classes in different
  superclasses do not.
* An image of class c is `(1 - w) * prototype(c) + w * prototype(sibling)`, with the sibling a
  random other class of the same superclass and `w = max_mix * Beta(a, b)`. Small w gives a
  clean example; w near 0.5 one that is genuinely ambiguous between two classes. With the
  default `max_mix = 0.6` a few examples (about 7%) even carry the label of their minority
  component, as when annotators disagree on a real ambiguous image: the label is not a
  function of the pixels, no classifier reaches 100%, and calibration has something real to
  measure. (The true posterior of an image follows from its `mix_weights` and the Beta
  density; `generate_synthetic` returns them.)
* Then a random shift of up to `max_shift` pixels, contrast and per-channel brightness
  jitter, and Gaussian pixel noise; clipped to uint8.

Prototypes are seeded per (superclass, class) and images per split, so held-out classes (OOD,
`load_synthetic_ood`) and larger data sets never change the existing classes. With the
defaults a tiny convnet learns it well above chance within a few hundred steps but does not
reach 100%. Measured on the defaults (100 classes, 19,000 train images after a 1,000-image
validation carve, CPU): a 3-conv-layer net (16/32/64 channels, Adam 3e-3, batch 128, random
crops) reaches 34% test accuracy after 100 steps, 78% after 400 and 88% after 600, while a
template-matching oracle that knows every prototype scores 94%; chance is 1%.

`load_vision("synthetic", **kwargs)` takes the fields of `SyntheticSpec` as keywords; the
world is fixed by `data_seed` (default 0), while load_vision's `seed` only picks the
validation split, as for a real data set.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import numpy as np

from cud_jax.data.containers import RawVision, Split, make_split

_SPLIT_IDS = {"train": 0, "test": 1, "ood_near": 2, "ood_far": 3}
_CHUNK = 2048  # examples rendered at a time: bounds the float32 working memory


@dataclasses.dataclass(frozen=True)
class SyntheticSpec:
    """Parameters of the synthetic world and of its train/test splits.

    Attributes:
      num_classes: in-distribution classes K; a multiple of `num_superclasses`.
      num_superclasses: superclasses; each holds K / num_superclasses classes.
      image_size: height and width in pixels.
      channels: 3 (RGB) or 1.
      train_per_class, test_per_class: examples per class in the official splits.
      max_mix: largest weight of the sibling prototype (0.5 = perfectly ambiguous; above
        0.5 some labels disagree with the majority of the pixels).
      mix_beta: (a, b) of the Beta distribution of `w / max_mix`.
      sibling_similarity: in [0, 1]; share of a prototype that comes from its superclass.
      noise_std: Gaussian pixel noise, in pixel units (0-255).
      max_shift: images are shifted by up to this many pixels in each direction.
      contrast_jitter: contrast factor is drawn from 1 +- this.
      brightness_jitter: per-channel offset drawn from +- this, in pixel units.
      data_seed: seed of the whole world (prototypes and samples).
    """

    num_classes: int = 100
    num_superclasses: int = 20
    image_size: int = 32
    channels: int = 3
    train_per_class: int = 200
    test_per_class: int = 50
    max_mix: float = 0.6
    mix_beta: tuple[float, float] = (1.0, 1.5)
    sibling_similarity: float = 0.7
    noise_std: float = 32.0
    max_shift: int = 3
    contrast_jitter: float = 0.25
    brightness_jitter: float = 20.0
    data_seed: int = 0

    def __post_init__(self):
        def bad(field, why):
            raise ValueError(f"SyntheticSpec.{field}={getattr(self, field)!r}: {why}.")
        if self.num_classes < 2:
            bad("num_classes", "need at least 2 classes")
        if self.num_superclasses < 1 or self.num_classes % self.num_superclasses:
            bad("num_superclasses", f"must divide num_classes={self.num_classes}")
        if self.channels not in (1, 3):
            bad("channels", "must be 1 or 3")
        if self.image_size < 4:
            bad("image_size", "must be >= 4")
        if self.train_per_class < 1 or self.test_per_class < 0:
            bad("train_per_class" if self.train_per_class < 1 else "test_per_class",
                "must be positive")
        if not 0.0 <= self.max_mix <= 1.0:
            bad("max_mix", "must lie in [0, 1]")
        if len(self.mix_beta) != 2 or min(self.mix_beta) <= 0:
            bad("mix_beta", "must be two positive numbers (a, b)")
        if not 0.0 <= self.sibling_similarity <= 1.0:
            bad("sibling_similarity", "must lie in [0, 1]")
        if self.max_shift < 0 or self.noise_std < 0:
            bad("max_shift" if self.max_shift < 0 else "noise_std", "must be >= 0")

    @property
    def classes_per_superclass(self) -> int:
        return self.num_classes // self.num_superclasses


class SyntheticSample(NamedTuple):
    """Generated images with the ground truth of how each was made.

    Attributes:
      images: `uint8 [N, H, W, C]`.
      labels: `int32 [N]` class index within the generated pool (the training classes for
        train/test; the held-out classes, numbered from 0, for OOD sets).
      siblings: `int32 [N]` the pool class mixed in.
      mix_weights: `float32 [N]` weight w of the sibling; the label's weight is 1 - w.
    """

    images: np.ndarray
    labels: np.ndarray
    siblings: np.ndarray
    mix_weights: np.ndarray


def _interp_matrix(src: int, dst: int) -> np.ndarray:
    """[dst, src] linear-interpolation weights from `src` control points to `dst` pixels."""
    pos = np.linspace(0.0, src - 1.0, dst)
    lo = np.minimum(np.floor(pos).astype(int), src - 2) if src > 1 else np.zeros(dst, int)
    frac = pos - lo
    m = np.zeros((dst, src), dtype=np.float64)
    m[np.arange(dst), lo] = 1.0 - frac
    if src > 1:
        m[np.arange(dst), lo + 1] += frac
    return m


def _smooth_field(rng: np.random.Generator, grid: int, size: int, channels: int) -> np.ndarray:
    """A zero-mean, unit-std random field [size, size, C] smoothly interpolated from a grid."""
    m = _interp_matrix(grid, size)
    low = rng.standard_normal((grid, grid, channels))
    field = np.einsum("ia,abc,jb->ijc", m, low, m, optimize=True)
    field -= field.mean()
    return field / (field.std() + 1e-8)


def _prototypes(spec: SyntheticSpec, pool: list[tuple[int, int]]) -> np.ndarray:
    """float32 [len(pool), L, L, C] prototypes (L = image_size + 2 * max_shift), 0-255 scale.

    Each (superclass, class) pair seeds its own fields, so a class looks the same whatever
    else is generated alongside it.
    """
    size = spec.image_size + 2 * spec.max_shift
    rho = spec.sibling_similarity
    out = np.empty((len(pool), size, size, spec.channels), dtype=np.float32)
    super_cache: dict[int, np.ndarray] = {}
    for i, (s, j) in enumerate(pool):
        if s not in super_cache:
            rng = np.random.default_rng([spec.data_seed, 1, s])
            super_cache[s] = _smooth_field(rng, 4, size, spec.channels)
        own = _smooth_field(np.random.default_rng([spec.data_seed, 2, s, j]), 8, size,
                            spec.channels)
        field = np.sqrt(rho) * super_cache[s] + np.sqrt(1.0 - rho) * own
        out[i] = 128.0 + 55.0 * field
    return out


def _render(spec: SyntheticSpec, pool: list[tuple[int, int]], per_class: int,
            split_id: int) -> SyntheticSample:
    """Samples `per_class` images of every pool class (shuffled order)."""
    k = len(pool)
    n = k * per_class
    rng = np.random.default_rng([spec.data_seed, 3, split_id])
    labels = rng.permutation(np.repeat(np.arange(k), per_class))

    # Sibling: another pool class of the same superclass, else any other pool class.
    supers = np.array([s for s, _ in pool])
    siblings = np.empty(n, dtype=np.int64)
    for c in range(k):
        cands = np.flatnonzero((supers == supers[c]) & (np.arange(k) != c))
        if cands.size == 0:
            cands = np.flatnonzero(np.arange(k) != c)
        at = np.flatnonzero(labels == c)
        siblings[at] = cands[rng.integers(0, cands.size, size=at.size)] if cands.size else c
    a, b = spec.mix_beta
    weights = (spec.max_mix * rng.beta(a, b, size=n)).astype(np.float32)
    if k == 1:
        weights[:] = 0.0
    shifts = rng.integers(0, 2 * spec.max_shift + 1, size=(n, 2))
    # float32 throughout: a float64 factor here would double the cost of every pixel op.
    contrast = (1.0 + spec.contrast_jitter * rng.uniform(-1, 1, size=n)).astype(np.float32)
    brightness = (spec.brightness_jitter * rng.uniform(-1, 1, size=(n, spec.channels))
                  ).astype(np.float32)

    protos = _prototypes(spec, pool)
    s = spec.image_size
    # windows[c, dy, dx] is the s x s crop of prototype c at offset (dy, dx), as a view.
    windows = np.lib.stride_tricks.sliding_window_view(protos, (s, s), axis=(1, 2))
    images = np.empty((n, spec.channels, s, s), dtype=np.uint8)  # CHW, like the windows
    noise_rng = np.random.default_rng([spec.data_seed, 4, split_id])
    for start in range(0, n, _CHUNK):
        sl = slice(start, min(start + _CHUNK, n))
        dy, dx = shifts[sl, 0], shifts[sl, 1]
        own = windows[labels[sl], dy, dx]  # [B, C, s, s]
        sib = windows[siblings[sl], dy, dx]
        w = weights[sl, None, None, None]
        x = own - 128.0
        x *= 1.0 - w
        x += w * (sib - 128.0)
        x *= contrast[sl, None, None, None]
        x += brightness[sl, :, None, None] + 128.5  # + 0.5: the uint8 cast below rounds
        noise = noise_rng.standard_normal(x.shape, dtype=np.float32)
        noise *= spec.noise_std
        x += noise
        np.clip(x, 0.0, 255.0, out=x)
        images[sl] = x
    images = np.ascontiguousarray(images.transpose(0, 2, 3, 1))  # NCHW -> NHWC
    return SyntheticSample(images, labels.astype(np.int32), siblings.astype(np.int32), weights)


def _train_pool(spec: SyntheticSpec) -> list[tuple[int, int]]:
    k = spec.classes_per_superclass
    return [(c // k, c % k) for c in range(spec.num_classes)]


def generate_synthetic(spec: SyntheticSpec, split: str = "train") -> SyntheticSample:
    """The "train" or "test" split of the synthetic world, with its generation ground truth.

    Class c belongs to superclass c // (num_classes / num_superclasses).
    """
    if split not in ("train", "test"):
        raise ValueError(f"`split` must be 'train' or 'test', got {split!r}.")
    per_class = spec.train_per_class if split == "train" else spec.test_per_class
    return _render(spec, _train_pool(spec), per_class, _SPLIT_IDS[split])


def generate_synthetic_ood(spec: SyntheticSpec, kind: str = "near", *,
                           num_ood_classes: int | None = None,
                           num_examples: int | None = None) -> SyntheticSample:
    """Images of classes outside the training set, with their generation ground truth.

    Args:
      spec: the same spec as the in-distribution data.
      kind: "near": new classes inside the training superclasses (they share the coarse
        field with training classes, so they are hard to tell apart); "far": classes of new
        superclasses (easier).
      num_ood_classes: held-out classes to draw (default: `num_superclasses`). "near" puts
        them round-robin over the training superclasses; "far" fills new superclasses with
        `classes_per_superclass` classes each.
      num_examples: total images (default: the size of the in-distribution test split),
        spread evenly over the OOD classes (rounded up to a whole number per class).
    """
    m = spec.num_superclasses if num_ood_classes is None else int(num_ood_classes)
    if m < 1:
        raise ValueError(f"`num_ood_classes` must be >= 1, got {num_ood_classes}.")
    k, sup = spec.classes_per_superclass, spec.num_superclasses
    if kind == "near":
        pool = [(i % sup, k + i // sup) for i in range(m)]
    elif kind == "far":
        pool = [(sup + i // k, i % k) for i in range(m)]
    else:
        raise ValueError(f"`kind` must be 'near' or 'far', got {kind!r}.")
    total = spec.num_classes * spec.test_per_class if num_examples is None else num_examples
    if total < 1:
        raise ValueError(f"`num_examples` must be >= 1, got {num_examples}.")
    sample = _render(spec, pool, -(-total // m), _SPLIT_IDS[f"ood_{kind}"])
    return SyntheticSample(*(a[:total] for a in sample))


def _spec_from(kwargs: dict) -> SyntheticSpec:
    fields = {f.name for f in dataclasses.fields(SyntheticSpec)}
    unknown = sorted(set(kwargs) - fields)
    if unknown:
        raise TypeError(f"unknown synthetic option(s) {unknown}; valid: {sorted(fields)}.")
    if "mix_beta" in kwargs:
        kwargs = dict(kwargs, mix_beta=tuple(kwargs["mix_beta"]))
    return SyntheticSpec(**kwargs)


def load_synthetic(data_dir: str | None = None, **spec_kwargs) -> RawVision:
    """The registered "synthetic" source: train and test splits of `SyntheticSpec(**kwargs)`.

    `data_dir` is ignored (nothing is read from disk). Generating the default 20,000 + 5,000
    images takes about a second.
    """
    del data_dir
    spec = _spec_from(spec_kwargs)
    k = spec.classes_per_superclass
    train = generate_synthetic(spec, "train")
    test = generate_synthetic(spec, "test")
    return RawVision(
        train=make_split(train.images, train.labels, what="synthetic train"),
        test=make_split(test.images, test.labels, what="synthetic test"),
        class_names=tuple(f"s{c // k:02d}_c{c % k:02d}" for c in range(spec.num_classes)),
        class_to_superclass=tuple(c // k for c in range(spec.num_classes)),
        superclass_names=tuple(f"s{s:02d}" for s in range(spec.num_superclasses)),
    )


def load_synthetic_ood(kind: str = "near", *, num_ood_classes: int | None = None,
                       num_examples: int | None = None, **spec_kwargs) -> Split:
    """Held-out-class images for OOD evaluation, matching `load_vision("synthetic", ...)`.

    Pass the same synthetic options (`num_classes`, `data_seed`, ...) as for the
    in-distribution data. Labels are all -1 (no in-distribution class); use
    `generate_synthetic_ood` for the held-out class of each image.

    Args:
      kind: "near" (new classes in known superclasses) or "far" (new superclasses).
      num_ood_classes, num_examples: see `generate_synthetic_ood`.
      **spec_kwargs: fields of `SyntheticSpec`.
    """
    spec = _spec_from(spec_kwargs)
    sample = generate_synthetic_ood(spec, kind, num_ood_classes=num_ood_classes,
                                    num_examples=num_examples)
    return make_split(sample.images, np.full(len(sample.labels), -1, np.int32),
                      what=f"synthetic ood_{kind}")
