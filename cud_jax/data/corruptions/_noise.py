"""Noise corruptions (CIFAR-C "noise" family plus speckle, one of its extra corruptions).

Each function takes uint8 images `[N, H, W, C]`, its severity parameter and a numpy
Generator, and returns floats on the [0, 1] scale (clipping and rounding happen in
`corrupt`). Noise is drawn independently per pixel and per channel, as in CIFAR-C.
Reference: Hendrycks & Dietterich, "Benchmarking Neural Network Robustness to Common
Corruptions and Perturbations", ICLR 2019.
"""

from __future__ import annotations

import numpy as np

from cud_jax.data.corruptions._common import to_unit

# Severity 1..5 parameters of CIFAR-C (32x32 images).
GAUSSIAN_NOISE_STD = (0.04, 0.06, 0.08, 0.09, 0.10)
SHOT_NOISE_PHOTONS = (500, 250, 100, 75, 50)
IMPULSE_NOISE_AMOUNT = (0.01, 0.02, 0.03, 0.05, 0.07)
SPECKLE_NOISE_STD = (0.06, 0.10, 0.12, 0.16, 0.20)


def gaussian_noise(images: np.ndarray, std: float, rng: np.random.Generator) -> np.ndarray:
    """Additive Gaussian noise: `x + N(0, std^2)`, x in [0, 1].

    std per severity 1..5: 0.04, 0.06, 0.08, 0.09, 0.10.
    """
    x = to_unit(images)
    return x + np.float32(std) * rng.standard_normal(x.shape, dtype=np.float32)


def shot_noise(images: np.ndarray, photons: float, rng: np.random.Generator) -> np.ndarray:
    """Poisson (photon-counting) noise: `Poisson(x * photons) / photons`, x in [0, 1].

    photons per severity 1..5: 500, 250, 100, 75, 50 (fewer photons, more noise; the noise
    standard deviation is sqrt(x / photons), so dark pixels are hit less than bright ones).
    """
    x = to_unit(images)
    return (rng.poisson(x * photons) / photons).astype(np.float32)


def impulse_noise(images: np.ndarray, amount: float, rng: np.random.Generator) -> np.ndarray:
    """Salt-and-pepper noise: each pixel value (per channel) is replaced with probability
    `amount`, by 0 or 1 with equal odds.

    amount per severity 1..5: 0.01, 0.02, 0.03, 0.05, 0.07.
    """
    x = to_unit(images)
    u = rng.random(x.shape, dtype=np.float32)
    # One uniform draw decides both "is it hit" (u < amount) and "salt or pepper" (which
    # half of [0, amount) it fell in), so the two are independent with the right odds.
    x = np.where(u < amount / 2, np.float32(1.0), x)
    return np.where((u >= amount / 2) & (u < amount), np.float32(0.0), x)


def speckle_noise(images: np.ndarray, std: float, rng: np.random.Generator) -> np.ndarray:
    """Multiplicative Gaussian noise: `x + x * N(0, std^2)`, x in [0, 1].

    std per severity 1..5: 0.06, 0.10, 0.12, 0.16, 0.20.
    """
    x = to_unit(images)
    return x + x * np.float32(std) * rng.standard_normal(x.shape, dtype=np.float32)
