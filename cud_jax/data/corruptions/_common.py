"""Numerics shared by the corruptions: unit conversion, filtering, resampling, HSV, fractals.

Everything works on whole batches `[N, H, W, C]` with numpy broadcasting (no per-image
Python loops). Border modes use numpy's names for `np.pad`:

    "edge"       a a a | a b c d | d d d    (scipy "nearest", skimage's default)
    "reflect"    d c b | a b c d | c b a    (OpenCV BORDER_REFLECT_101, the OpenCV default)
    "symmetric"  c b a | a b c d | d c b    (scipy/skimage "reflect")
"""

from __future__ import annotations

import numpy as np

_MODES = ("edge", "reflect", "symmetric")


def to_unit(images: np.ndarray) -> np.ndarray:
    """uint8 pixels -> float32 in [0, 1]."""
    return images.astype(np.float32) * np.float32(1.0 / 255.0)


def to_uint8(x: np.ndarray) -> np.ndarray:
    """[0, 1] floats (values outside are clipped) -> uint8 pixels, rounded to nearest.

    Rounding, not truncation: truncation would darken every image by half a level on
    average and turn a float 254.9999 from an identity-like filter into 254.
    """
    return np.rint(np.clip(x, 0.0, 1.0) * 255.0).astype(np.uint8)


def gaussian_kernel_1d(sigma: float, truncate: float) -> np.ndarray:
    """Normalised 1-D Gaussian taps out to radius `int(truncate * sigma + 0.5)`.

    The radius rule is the one scipy.ndimage / skimage use, so a given (sigma, truncate)
    means the same filter here as in those libraries.
    """
    radius = int(truncate * sigma + 0.5)
    offsets = np.arange(-radius, radius + 1, dtype=np.float64)
    taps = np.exp(-0.5 * (offsets / sigma) ** 2)
    return (taps / taps.sum()).astype(np.float32)


def filter_separable(x: np.ndarray, taps: np.ndarray, mode: str) -> np.ndarray:
    """Filters `[N, H, W, C]` along H and then W with the same odd-length 1-D `taps`."""
    assert mode in _MODES, mode
    radius = len(taps) // 2
    height, width = x.shape[1], x.shape[2]
    padded = np.pad(x, ((0, 0), (radius, radius), (0, 0), (0, 0)), mode=mode)
    rows = sum(t * padded[:, i:i + height] for i, t in enumerate(taps))
    padded = np.pad(rows, ((0, 0), (0, 0), (radius, radius), (0, 0)), mode=mode)
    return sum(t * padded[:, :, i:i + width] for i, t in enumerate(taps))


def filter_2d(x: np.ndarray, kernel: np.ndarray, mode: str) -> np.ndarray:
    """Correlates every channel of `[N, H, W, C]` with an odd-sized 2-D `kernel`."""
    assert mode in _MODES, mode
    ry, rx = kernel.shape[0] // 2, kernel.shape[1] // 2
    height, width = x.shape[1], x.shape[2]
    padded = np.pad(x, ((0, 0), (ry, ry), (rx, rx), (0, 0)), mode=mode)
    out = np.zeros_like(x)
    for i in range(kernel.shape[0]):
        for j in range(kernel.shape[1]):
            if kernel[i, j] != 0:  # a disk kernel has empty corners
                out += kernel[i, j] * padded[:, i:i + height, j:j + width]
    return out


def _fold(index: np.ndarray, size: int, mode: str) -> np.ndarray:
    """Maps integer indices outside [0, size) back inside, by the border rule `mode`."""
    if mode == "edge" or size == 1:
        return np.clip(index, 0, size - 1)
    if mode == "reflect":  # period 2(size - 1), edge pixel not repeated
        period = 2 * (size - 1)
        index = np.mod(index, period)
        return np.where(index >= size, period - index, index)
    period = 2 * size  # "symmetric": edge pixel repeated
    index = np.mod(index, period)
    return np.where(index >= size, period - 1 - index, index)


def bilinear_sample(images: np.ndarray, rows: np.ndarray, cols: np.ndarray,
                    mode: str) -> np.ndarray:
    """Samples `[N, H, W, C]` images at float positions, one position grid per image.

    Args:
      images: `[N, H, W, C]` floats.
      rows, cols: `[N, H', W']` source coordinates in pixels (pixel centres at integers).
      mode: border rule for positions outside the image (see the module docstring).

    Returns:
      `[N, H', W', C]` bilinear interpolation of `images` at `(rows, cols)`.
    """
    assert mode in _MODES, mode
    n, height, width, _ = images.shape
    r0 = np.floor(rows)
    c0 = np.floor(cols)
    fr = (rows - r0)[..., None].astype(np.float32)
    fc = (cols - c0)[..., None].astype(np.float32)
    r0 = r0.astype(np.intp)
    c0 = c0.astype(np.intp)
    ra, rb = _fold(r0, height, mode), _fold(r0 + 1, height, mode)
    ca, cb = _fold(c0, width, mode), _fold(c0 + 1, width, mode)
    b = np.arange(n)[:, None, None]
    top = images[b, ra, ca] * (1 - fc) + images[b, ra, cb] * fc
    bottom = images[b, rb, ca] * (1 - fc) + images[b, rb, cb] * fc
    return top * (1 - fr) + bottom * fr


def rgb_to_hsv(rgb: np.ndarray) -> np.ndarray:
    """`[..., 3]` RGB in [0, 1] -> HSV in [0, 1] (hue as a fraction of a turn).

    Conventions of skimage.color: grey pixels (max == min) get hue 0, black gets saturation 0.
    """
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    value = rgb.max(axis=-1)
    delta = value - rgb.min(axis=-1)
    saturation = np.where(value > 0, delta / np.where(value > 0, value, 1), 0)
    safe = np.where(delta > 0, delta, 1)
    # Hue in sixths of a turn, measured from the largest channel. Where two channels tie
    # for the maximum, both formulas give the same hue, so the order of the tests is free.
    hue = np.where(r == value, (g - b) / safe,
                   np.where(g == value, 2 + (b - r) / safe, 4 + (r - g) / safe))
    hue = np.where(delta > 0, np.mod(hue / 6, 1), 0)
    return np.stack([hue, saturation, value], axis=-1).astype(rgb.dtype)


# For each sixth of the hue circle, which of (v, t, p, q) feeds R, G and B.
_HSV_SECTORS = np.array([[0, 1, 2], [3, 0, 2], [2, 0, 1], [2, 3, 0], [1, 2, 0], [0, 2, 3]])


def hsv_to_rgb(hsv: np.ndarray) -> np.ndarray:
    """Inverse of `rgb_to_hsv`: `[..., 3]` HSV in [0, 1] -> RGB in [0, 1]."""
    hue, saturation, value = hsv[..., 0], hsv[..., 1], hsv[..., 2]
    h6 = hue * 6
    sector = np.mod(np.floor(h6), 6).astype(np.intp)
    frac = h6 - np.floor(h6)
    p = value * (1 - saturation)
    q = value * (1 - frac * saturation)
    t = value * (1 - (1 - frac) * saturation)
    parts = np.stack([value, t, p, q], axis=-1)
    return np.take_along_axis(parts, _HSV_SECTORS[sector], axis=-1).astype(hsv.dtype)


def plasma_fractal(rng: np.random.Generator, n: int, size: int, decay: float) -> np.ndarray:
    """`[n, size, size]` diamond-square height maps, each rescaled to [0, 1].

    `size` is a power of two; the map wraps around (toroidal), which keeps every step a
    plain `np.roll`. Each halving of the step fills square centres, then edge midpoints, with
    the mean of their four neighbours plus uniform noise. The noise amplitude falls by
    `decay ** 2` per octave: that is the schedule of the generator behind the released
    CIFAR-C fog (its random offset is scaled twice by its "wibble" factor), so fog at a given
    `decay` has the same roughness here as there.
    """
    if size & (size - 1):
        raise ValueError(f"plasma_fractal needs a power-of-two size, got {size}.")
    heights = np.zeros((n, size, size))
    step, amplitude = size, 1.0
    while step >= 2:
        half = step // 2
        corners = heights[:, ::step, ::step]
        ring = corners + np.roll(corners, -1, axis=1)
        ring = ring + np.roll(ring, -1, axis=2)
        heights[:, half::step, half::step] = (
            ring / 4 + amplitude * rng.uniform(-1, 1, ring.shape))
        centres = heights[:, half::step, half::step]
        # Midpoints of vertical edges: corners above and below, centres left and right.
        around = corners + np.roll(corners, -1, axis=1) + centres + np.roll(centres, 1, axis=2)
        heights[:, half::step, ::step] = around / 4 + amplitude * rng.uniform(-1, 1, around.shape)
        # Midpoints of horizontal edges: corners left and right, centres above and below.
        around = corners + np.roll(corners, -1, axis=2) + centres + np.roll(centres, 1, axis=1)
        heights[:, ::step, half::step] = around / 4 + amplitude * rng.uniform(-1, 1, around.shape)
        step = half
        amplitude /= decay ** 2
    heights -= heights.min(axis=(1, 2), keepdims=True)
    return heights / heights.max(axis=(1, 2), keepdims=True)
