"""The registry of corruptions, `corrupt`, and the cached `corruption_suite`."""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import logging
import types
import zipfile
import zlib
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np

from cud_jax.data._cache_files import save_npz_atomically
from cud_jax.data.corruptions import _blur, _digital, _noise, _photometric
from cud_jax.data.corruptions._common import to_uint8

SEVERITIES = (1, 2, 3, 4, 5)
# Pixel values (N * H * W * C) per call of a corruption function: 1024 CIFAR images. Bounds
# the float working memory (each float32 copy of a chunk is ~12 MB) for a 10,000-image test
# set or larger images. Random draws run on through the chunks from one Generator, so the
# result is reproducible, but changing this value changes the noise: it is part of the code,
# and so of the cache version.
_CHUNK_VALUES = 1024 * 32 * 32 * 3
# Bump when the cache file layout changes. Any edit to this package's source already gives
# a new cache key (see `_code_version`).
_CACHE_FORMAT = "1"


@dataclasses.dataclass(frozen=True)
class _Spec:
    fn: Callable[..., np.ndarray]  # (uint8 [n, H, W, C], param, rng) -> [0, 1] float or uint8
    params: tuple  # the parameter at severity 1..5
    random: bool  # whether the output depends on the seed
    rgb_only: bool = False


_REGISTRY: dict[str, _Spec] = {
    "gaussian_noise": _Spec(_noise.gaussian_noise, _noise.GAUSSIAN_NOISE_STD, True),
    "shot_noise": _Spec(_noise.shot_noise, _noise.SHOT_NOISE_PHOTONS, True),
    "impulse_noise": _Spec(_noise.impulse_noise, _noise.IMPULSE_NOISE_AMOUNT, True),
    "speckle_noise": _Spec(_noise.speckle_noise, _noise.SPECKLE_NOISE_STD, True),
    "gaussian_blur": _Spec(_blur.gaussian_blur, _blur.GAUSSIAN_BLUR_SIGMA, False),
    "defocus_blur": _Spec(_blur.defocus_blur, _blur.DEFOCUS_BLUR, False),
    "zoom_blur": _Spec(_blur.zoom_blur, _blur.ZOOM_BLUR_MAX, False),
    "contrast": _Spec(_photometric.contrast, _photometric.CONTRAST_FACTOR, False),
    "brightness": _Spec(_photometric.brightness, _photometric.BRIGHTNESS_SHIFT, False),
    "saturate": _Spec(_photometric.saturate, _photometric.SATURATE, False, rgb_only=True),
    "fog": _Spec(_photometric.fog, _photometric.FOG, True),
    "jpeg_compression": _Spec(_digital.jpeg_compression, _digital.JPEG_QUALITY, False),
    "pixelate": _Spec(_digital.pixelate, _digital.PIXELATE_SCALE, False),
    "elastic_transform": _Spec(_digital.elastic_transform, _digital.ELASTIC, True),
}

CORRUPTIONS: tuple[str, ...] = tuple(_REGISTRY)
# Corruptions whose output depends on `seed` (the others are deterministic functions).
RANDOM_CORRUPTIONS: tuple[str, ...] = tuple(n for n, s in _REGISTRY.items() if s.random)
# Corruptions that need colour (C=3) images; leave them out for grayscale data.
RGB_ONLY: tuple[str, ...] = tuple(n for n, s in _REGISTRY.items() if s.rgb_only)
# name -> the parameter at severities 1..5 (meaning: see each corruption's docstring).
SEVERITY_PARAMS = types.MappingProxyType({n: s.params for n, s in _REGISTRY.items()})

# CIFAR-C corruptions not provided, and why: named in the error for a user who asks for one.
_NOT_PROVIDED = {
    "frost": "it overlays photographs of frost that ship with CIFAR-C, not with this package",
    "motion_blur": "CIFAR-C made it with ImageMagick's motion-blur kernel, not reimplemented",
    "snow": "it relies on ImageMagick's motion blur (see motion_blur)",
    "glass_blur": "its sequential per-pixel shuffle does not vectorise; not included",
    "spatter": "it relies on OpenCV edge and distance transforms; not included",
}


def _spec(name: str) -> _Spec:
    if name in _REGISTRY:
        return _REGISTRY[name]
    if name in _NOT_PROVIDED:
        raise ValueError(f"corruption {name!r} is not provided: {_NOT_PROVIDED[name]}. "
                         f"Available: {', '.join(CORRUPTIONS)}.")
    raise ValueError(f"unknown corruption {name!r}; valid names: {', '.join(CORRUPTIONS)}.")


def _check_severity(severity) -> int:
    if isinstance(severity, (bool, np.bool_)) or not isinstance(severity, (int, np.integer)) \
            or int(severity) not in SEVERITIES:
        raise ValueError(f"severity must be one of {SEVERITIES} (an int), got {severity!r}.")
    return int(severity)


def _check_seed(seed) -> int:
    if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}.")
    return int(seed)


def _check_images(images) -> np.ndarray:
    images = np.asarray(images)
    if images.ndim != 4:
        hint = " Add a channel axis: images[..., None]." if images.ndim == 3 else ""
        raise ValueError(f"images must be a [N, H, W, C] batch, got shape {images.shape}.{hint}")
    if images.dtype != np.uint8:
        hint = (" Floats in [0, 1]: use np.rint(images * 255).astype(np.uint8)."
                if images.dtype.kind == "f" else " Convert with images.astype(np.uint8).")
        raise ValueError(f"images must be uint8 pixels in [0, 255], got dtype {images.dtype}."
                         + hint)
    if images.shape[-1] not in (1, 3):
        raise ValueError(f"images must have 1 (grayscale) or 3 (RGB) channels, got "
                         f"{images.shape[-1]} (shape {images.shape}); drop an alpha channel "
                         "with images[..., :3].")
    return images


def _check_channels(name: str, images: np.ndarray) -> None:
    if _REGISTRY[name].rgb_only and images.shape[-1] != 3:
        raise ValueError(
            f"corruption {name!r} needs RGB images (C=3), got C={images.shape[-1]}. Leave it "
            f"out for grayscale data, e.g. names=tuple(n for n in CORRUPTIONS if n not in "
            f"RGB_ONLY), or repeat the channel: np.repeat(images, 3, axis=-1).")


def _generator(seed: int, name: str, severity: int) -> np.random.Generator:
    # Each (seed, name, severity) gets its own stream, so results do not depend on which
    # corruptions ran before. crc32, not hash(): Python salts str hashes per process.
    return np.random.default_rng(np.random.SeedSequence(
        [seed, zlib.crc32(name.encode("utf-8")), severity]))


def corrupt(images, name: str, severity: int, *, seed: int = 0) -> np.ndarray:
    """One CIFAR-C-style corruption of a batch of images.

    Reimplements the corruptions of CIFAR-10-C / CIFAR-100-C (Hendrycks & Dietterich,
    "Benchmarking Neural Network Robustness to Common Corruptions and Perturbations",
    ICLR 2019) with their published 32x32 severity parameters; the per-severity values are
    listed in the package docstring (`help(cud_jax.data.corruptions)`) and in
    `SEVERITY_PARAMS`. This generates the corruptions locally; it does not reproduce the
    released CIFAR-C files bit for bit (different random streams and resampling details).

    Args:
      images: `[N, H, W, C]` uint8, C = 1 or 3 (`saturate` needs 3). numpy or anything
        `np.asarray` accepts (e.g. a jax array).
      name: one of `CORRUPTIONS`.
      severity: 1 (mildest) to 5.
      seed: for the random corruptions (`RANDOM_CORRUPTIONS`); the stream is derived from
        (seed, name, severity), so calls can come in any order. The noise of one image
        depends on its position in the batch: corrupt a whole set in one call (or use
        `corruption_suite`) to get reproducible per-image results.

    Returns:
      `[N, H, W, C]` uint8 corrupted images (values rounded to the nearest level).
    """
    spec = _spec(name)
    severity = _check_severity(severity)
    seed = _check_seed(seed)
    images = _check_images(images)
    _check_channels(name, images)
    rng = _generator(seed, name, severity)
    param = spec.params[severity - 1]
    out = np.empty_like(images)
    step = max(1, _CHUNK_VALUES // max(1, int(np.prod(images.shape[1:]))))
    for start in range(0, len(images), step):
        chunk = spec.fn(images[start:start + step], param, rng)
        out[start:start + step] = chunk if chunk.dtype == np.uint8 else to_uint8(chunk)
    return out


@functools.lru_cache(maxsize=None)
def _code_version() -> str:
    """A digest of this package's source, numpy's and pillow's versions (the cache key part
    that makes a code or library change invalidate cached corruptions)."""
    import PIL

    digest = hashlib.sha256(f"cud_jax.data.corruptions cache format {_CACHE_FORMAT}".encode())
    for path in sorted(Path(__file__).parent.glob("*.py")):
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    digest.update(f"numpy {np.__version__} pillow {PIL.__version__}".encode())
    return digest.hexdigest()[:16]


def _fingerprint(images: np.ndarray) -> str:
    digest = hashlib.sha256(f"{images.shape} {images.dtype}".encode())
    digest.update(np.ascontiguousarray(images).data)
    return digest.hexdigest()[:16]


def cache_path(cache_dir, images_fingerprint: str, name: str, severity: int, seed: int) -> Path:
    """Where `corruption_suite` keeps one (name, severity) result."""
    return Path(cache_dir) / (f"{name}-s{severity}-seed{seed}-{images_fingerprint}-"
                              f"{_code_version()}.npz")


def _load(path: Path, like: np.ndarray) -> np.ndarray | None:
    """The cached images at `path`, or None if absent or unreadable (then recomputed)."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as stored:
            cached = stored["images"]
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as err:
        logging.warning("corruption cache %s unreadable (%s); recomputing", path, err)
        return None
    if cached.shape != like.shape or cached.dtype != like.dtype:
        logging.warning("corruption cache %s holds %s %s, expected %s %s; recomputing",
                        path, cached.shape, cached.dtype, like.shape, like.dtype)
        return None
    return cached


def _save(path: Path, corrupted: np.ndarray, name: str, severity: int, seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    save_npz_atomically(str(path), images=corrupted, name=np.array(name),
                        severity=np.array(severity), seed=np.array(seed),
                        version=np.array(_code_version()))


def corruption_suite(images, *, names: Iterable[str] = CORRUPTIONS,
                     severities: Iterable[int] = SEVERITIES, seed: int = 0,
                     cache_dir=None) -> Iterator[tuple[tuple[str, int], np.ndarray]]:
    """Every corruption at every severity of one image set, lazily, optionally cached.

    Yields `((name, severity), corrupted_images)` for each name in `names` and, within a
    name, each severity in `severities`; one result is in memory at a time (use `dict(...)`
    to keep them all: 14 corruptions x 5 severities x 10,000 CIFAR images is 2.1 GB).
    Each result equals `corrupt(images, name, severity, seed=seed)`.

    All arguments are checked before anything is computed, so a typo in the last name fails
    at the call, not after an hour of corrupting.

    Args:
      images: `[N, H, W, C]` uint8 (see `corrupt`).
      names: corruption names (default: all of `CORRUPTIONS`).
      severities: severities in 1..5.
      seed: base seed (see `corrupt`).
      cache_dir: if given, each result is stored there as
        `<name>-s<severity>-seed<seed>-<images fingerprint>-<code version>.npz` and read back
        on later calls. The fingerprint hashes the images' bytes and shape; the code version
        hashes this package's source and the numpy and pillow versions, so editing the code
        or upgrading either library makes old files unused (delete them at will).
    """
    if isinstance(names, str):
        raise TypeError(f"names must be a sequence of corruption names, got the string "
                        f"{names!r}; for one corruption use names=({names!r},).")
    names = tuple(names)
    severities = tuple(_check_severity(s) for s in severities)
    seed = _check_seed(seed)
    images = _check_images(images)
    for name in names:
        _spec(name)
        _check_channels(name, images)
    fingerprint = _fingerprint(images) if cache_dir is not None else None

    def generate():
        for name in names:
            for severity in severities:
                path = None
                if cache_dir is not None:
                    path = cache_path(cache_dir, fingerprint, name, severity, seed)
                    cached = _load(path, images)
                    if cached is not None:
                        yield (name, severity), cached
                        continue
                corrupted = corrupt(images, name, severity, seed=seed)
                if path is not None:
                    _save(path, corrupted, name, severity, seed)
                yield (name, severity), corrupted

    return generate()
