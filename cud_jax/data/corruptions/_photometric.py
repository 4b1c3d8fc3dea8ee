"""Photometric corruptions: contrast, brightness, saturation and fog.

Parameters are the CIFAR-C values (Hendrycks & Dietterich, ICLR 2019), on the [0, 1] pixel
scale. Only fog is random. Brightness and saturation edit the HSV value and saturation;
grayscale images (C=1) have a value but no saturation, so brightness works on them and
saturate refuses them (see `corrupt`).
"""

from __future__ import annotations

import numpy as np

from cud_jax.data.corruptions._common import hsv_to_rgb, plasma_fractal, rgb_to_hsv, to_unit

CONTRAST_FACTOR = (0.75, 0.5, 0.4, 0.3, 0.15)
BRIGHTNESS_SHIFT = (0.05, 0.1, 0.15, 0.2, 0.3)
# (multiplier, offset) of the HSV saturation: s -> clip(s * multiplier + offset, 0, 1).
SATURATE = ((0.3, 0.0), (0.1, 0.0), (1.5, 0.0), (2.0, 0.1), (2.5, 0.2))
# (fog strength, roughness decay of the fractal): stronger and rougher with severity.
FOG = ((0.2, 3.0), (0.5, 3.0), (0.75, 2.5), (1.0, 2.0), (1.5, 1.75))


def contrast(images: np.ndarray, factor: float, rng=None) -> np.ndarray:
    """Pulls every pixel towards its image's per-channel mean: `(x - m) * factor + m`.

    factor per severity 1..5: 0.75, 0.5, 0.4, 0.3, 0.15. The mean is over the pixels of
    each image and channel, so the colour cast is kept while the contrast fades.
    """
    del rng
    x = to_unit(images)
    mean = x.mean(axis=(1, 2), keepdims=True)
    return (x - mean) * np.float32(factor) + mean


def brightness(images: np.ndarray, shift: float, rng=None) -> np.ndarray:
    """Adds `shift` to the HSV value (clipped to 1), keeping hue and saturation.

    shift per severity 1..5: 0.05, 0.1, 0.15, 0.2, 0.3. For C=1 the value is the pixel.
    """
    del rng
    x = to_unit(images)
    if x.shape[-1] == 1:
        return x + np.float32(shift)
    hsv = rgb_to_hsv(x)
    hsv[..., 2] = np.clip(hsv[..., 2] + np.float32(shift), 0, 1)
    return hsv_to_rgb(hsv)


def saturate(images: np.ndarray, params: tuple[float, float], rng=None) -> np.ndarray:
    """Scales the HSV saturation: `s -> clip(s * multiplier + offset, 0, 1)`, hue and value kept.

    (multiplier, offset) per severity 1..5: (0.3, 0), (0.1, 0), (1.5, 0), (2, 0.1),
    (2.5, 0.2). Not monotone in strength: severities 1-2 wash colours out (2 more than 1),
    severities 3-5 exaggerate them (increasingly), and severity 3 is a milder change than
    severity 2. Grey pixels have hue 0 by convention, so the offset of severities 4-5 tints
    them red, as in CIFAR-C.
    """
    del rng
    multiplier, offset = params
    hsv = rgb_to_hsv(to_unit(images))
    hsv[..., 1] = np.clip(hsv[..., 1] * np.float32(multiplier) + np.float32(offset), 0, 1)
    return hsv_to_rgb(hsv)


def fog(images: np.ndarray, params: tuple[float, float], rng: np.random.Generator) -> np.ndarray:
    """Adds a diamond-square plasma fractal ("fog"), then rescales to the image's old maximum.

    `x -> (x + strength * F) * M / (M + strength)`, with F a fractal in [0, 1] (the same for
    every channel; one per image) and M the image's largest pixel value. (strength, decay)
    per severity 1..5: (0.2, 3), (0.5, 3), (0.75, 2.5), (1, 2), (1.5, 1.75); a smaller decay
    keeps more fine structure in the fog. The fractal is drawn on the smallest power-of-two
    square that covers the image (32 for CIFAR) and cropped.
    """
    strength, decay = params
    x = to_unit(images)
    n, height, width, _ = x.shape
    size = 1 << (max(height, width, 2) - 1).bit_length()  # next power of two
    fractal = plasma_fractal(rng, n, size, decay)[:, :height, :width, None].astype(np.float32)
    peak = x.max(axis=(1, 2, 3), keepdims=True)
    return (x + np.float32(strength) * fractal) * (peak / (peak + np.float32(strength)))
