"""Device-side augmentation and normalisation: pure jnp functions for use inside `jax.jit`.

Small data sets live on device as uint8 (a quarter of the memory of float32) and each train
step augments and normalises its batch in the compiled step, so the host never touches a
batch. Randomness is per image and comes only from the `rng` key, so a step is reproducible.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp


# Jitted so that eager calls (tests, notebooks) compile once instead of op by op; inside a
# caller's jit it is simply inlined.
@functools.partial(jax.jit, static_argnames=("pad", "flip"))
def random_crop_flip(rng: jax.Array, images: jax.Array, pad: int = 4,
                     flip: bool = True) -> jax.Array:
    """The standard CIFAR augmentation: zero-pad, random crop back to size, random h-flip.

    Every image gets its own crop offset, uniform in `[0, 2 * pad]` on each axis, and is
    mirrored left-right with probability 1/2.

    Args:
      rng: a JAX PRNG key.
      images: `[B, H, W, C]` batch, uint8 or float; the dtype is kept.
      pad: zero padding on every side (4 for CIFAR); 0 disables the crop.
      flip: whether to apply the random horizontal flip.

    Returns:
      `[B, H, W, C]` augmented batch of the input dtype.
    """
    images = jnp.asarray(images)
    if images.ndim != 4:
        raise ValueError(f"`images` must be a [B, H, W, C] batch, got shape {images.shape}.")
    if pad < 0:
        raise ValueError(f"`pad` must be >= 0, got {pad}.")
    batch, height, width, channels = images.shape
    crop_key, flip_key = jax.random.split(rng)
    out = images
    if pad:
        # Pad once for the whole batch, then one dynamic_slice per image (vmapped into a
        # single gather): no per-image padding and no Python loop in the compiled graph.
        padded = jnp.pad(images, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
        offsets = jax.random.randint(crop_key, (batch, 2), 0, 2 * pad + 1)

        def crop(image, offset):
            return jax.lax.dynamic_slice(image, (offset[0], offset[1], 0),
                                         (height, width, channels))

        out = jax.vmap(crop)(padded, offsets)
    if flip:
        mirror = jax.random.bernoulli(flip_key, 0.5, (batch,))
        out = jnp.where(mirror[:, None, None, None], out[:, :, ::-1, :], out)
    return out


def normalize(images: jax.Array, mean, std) -> jax.Array:
    """(images / 255 - mean) / std per channel, as float32.

    Args:
      images: `[..., C]` uint8 pixels (or floats on the 0-255 scale).
      mean, std: length-C sequences in [0, 1] pixel units, e.g. `VisionData.mean/std`.
    """
    mean = jnp.asarray(mean, dtype=jnp.float32)
    std = jnp.asarray(std, dtype=jnp.float32)
    images = jnp.asarray(images)
    if mean.shape != (images.shape[-1],) or std.shape != mean.shape:
        raise ValueError(
            f"`mean` and `std` need one value per channel ({images.shape[-1]}); got shapes "
            f"{mean.shape} and {std.shape}.")
    # Fold the 1/255 into the affine map: one multiply-add per pixel.
    scale = 1.0 / (255.0 * std)
    return images.astype(jnp.float32) * scale - mean / std
