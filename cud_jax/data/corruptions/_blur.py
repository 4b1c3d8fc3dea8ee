"""Blur corruptions: Gaussian, defocus (disk) and zoom blur.

All three are deterministic (the Generator argument is unused) and fully vectorised over the
batch. Parameters are the CIFAR-C values in pixels of a 32x32 image (Hendrycks & Dietterich,
ICLR 2019); on larger images the same pixel radii give a relatively milder blur.
"""

from __future__ import annotations

import numpy as np

from cud_jax.data.corruptions._common import (
    filter_2d,
    filter_separable,
    gaussian_kernel_1d,
    to_unit,
)

GAUSSIAN_BLUR_SIGMA = (0.4, 0.6, 0.7, 0.8, 1.0)
# (disk radius, anti-alias Gaussian sigma), both in pixels.
DEFOCUS_BLUR = ((0.3, 0.4), (0.4, 0.5), (0.5, 0.6), (1.0, 0.2), (1.5, 0.1))
# Largest zoom factor; the factors used are 1.00, 1.01, ... up to it. These are the values
# the released generator's np.arange(1, stop, 0.01) yields for stops 1.06, 1.11, 1.16, 1.21
# and 1.26 (floating point makes the first two stops inclusive and the last three not).
ZOOM_BLUR_MAX = (1.06, 1.11, 1.15, 1.20, 1.25)


def gaussian_blur(images: np.ndarray, sigma: float, rng=None) -> np.ndarray:
    """Isotropic Gaussian blur of every channel; taps out to 4 sigma, edge pixels repeated.

    sigma (pixels) per severity 1..5: 0.4, 0.6, 0.7, 0.8, 1.0.
    """
    del rng
    return filter_separable(to_unit(images), gaussian_kernel_1d(sigma, 4.0), mode="edge")


def defocus_kernel(radius: float, alias_sigma: float) -> np.ndarray:
    """A flat disk of `radius` pixels (normalised to sum 1), softened by a 3x3 Gaussian.

    The small Gaussian stands in for supersampling: it anti-aliases the disk's jagged rim.
    For radius < 1 the disk is the single centre pixel, so the mildest severities are a
    slight Gaussian blur only.
    """
    reach = int(np.floor(radius)) + 1  # one empty ring around the disk for the 3x3 blur
    grid = np.arange(-reach, reach + 1)
    disk = (grid[:, None] ** 2 + grid[None, :] ** 2 <= radius ** 2).astype(np.float64)
    disk /= disk.sum()
    taps = np.exp(-0.5 * (np.arange(-1, 2) / alias_sigma) ** 2)
    taps /= taps.sum()
    padded = np.pad(disk, 1)
    size = disk.shape[0]
    kernel = sum(taps[a] * taps[b] * padded[a:a + size, b:b + size]
                 for a in range(3) for b in range(3))
    return kernel.astype(np.float32)


def defocus_blur(images: np.ndarray, params: tuple[float, float], rng=None) -> np.ndarray:
    """Out-of-focus blur: every channel convolved with an anti-aliased disk.

    (disk radius, anti-alias sigma) in pixels per severity 1..5: (0.3, 0.4), (0.4, 0.5),
    (0.5, 0.6), (1, 0.2), (1.5, 0.1). Borders are mirrored without repeating the edge pixel
    (OpenCV's default, which CIFAR-C used).
    """
    del rng
    return filter_2d(to_unit(images), defocus_kernel(*params), mode="reflect")


def zoom_blur(images: np.ndarray, max_zoom: float, rng=None) -> np.ndarray:
    """The mean of the image and copies of it zoomed in about its centre.

    Zoom factors 1.00, 1.01, ..., up to max_zoom, with max_zoom per severity 1..5: 1.06,
    1.11, 1.15, 1.20, 1.25 (7, 12, 16, 21 and 26 factors). The image itself enters the mean
    once more on top of factor 1.00, as in CIFAR-C. Zoomed copies are resampled bilinearly.
    """
    del rng
    x = to_unit(images)
    height, width = x.shape[1], x.shape[2]
    count = int(round((max_zoom - 1.0) / 0.01)) + 1
    total = x.copy()
    for k in range(count):
        zoom = 1.0 + 0.01 * k
        # A centred zoom is separable: resample the rows, then the columns.
        total += _zoom_axis(_zoom_axis(x, zoom, axis=1, size=height), zoom, axis=2, size=width)
    return total / (count + 1)


def _zoom_axis(x: np.ndarray, zoom: float, axis: int, size: int) -> np.ndarray:
    """Linear resampling along one axis that zooms in by `zoom` about the centre.

    Output pixel p shows the source point centre + (p - centre) / zoom; for zoom >= 1 those
    points lie inside the image, so no border rule is needed (indices are only clamped).
    """
    centre = (size - 1) / 2
    src = centre + (np.arange(size) - centre) / zoom
    lo = np.clip(np.floor(src).astype(np.intp), 0, size - 1)
    hi = np.minimum(lo + 1, size - 1)
    shape = [1] * x.ndim
    shape[axis] = size
    frac = (src - lo).astype(np.float32).reshape(shape)
    return np.take(x, lo, axis=axis) * (1 - frac) + np.take(x, hi, axis=axis) * frac
