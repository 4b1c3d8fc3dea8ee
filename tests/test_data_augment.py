"""Tests of the device-side augmentation and the batching helpers (cud_jax.data)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cud_jax import data


def images_u8(n=16, h=8, w=8, c=3, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, h, w, c), dtype=np.uint8)


def find_window(out: np.ndarray, padded: np.ndarray, pad: int):
    """The (dy, dx, flipped) whose window of `padded` equals `out`, or None."""
    h, w = out.shape[:2]
    for dy in range(2 * pad + 1):
        for dx in range(2 * pad + 1):
            window = padded[dy:dy + h, dx:dx + w]
            if np.array_equal(out, window):
                return dy, dx, False
            if np.array_equal(out, window[:, ::-1]):
                return dy, dx, True
    return None


@pytest.mark.parametrize("dtype", [np.uint8, np.float32])
def test_crop_flip_shape_dtype_and_real_windows(dtype):
    x = images_u8(32).astype(dtype)
    out = data.random_crop_flip(jax.random.key(0), x, pad=4)
    assert out.shape == x.shape and out.dtype == x.dtype
    padded = np.pad(x, ((0, 0), (4, 4), (4, 4), (0, 0)))
    found = [find_window(np.asarray(o), p, 4) for o, p in zip(out, padded)]
    assert all(f is not None for f in found)
    offsets = {(dy, dx) for dy, dx, _ in found}
    assert len(offsets) > 10  # per-image offsets, not one shared shift


def test_crop_offsets_cover_the_range():
    x = images_u8(400, h=6, w=6, c=1)
    out = np.asarray(data.random_crop_flip(jax.random.key(1), x, pad=2, flip=False))
    padded = np.pad(x, ((0, 0), (2, 2), (2, 2), (0, 0)))
    found = [find_window(o, p, 2) for o, p in zip(out, padded)]
    assert all(f is not None and not f[2] for f in found)
    dys = np.array([f[0] for f in found])
    assert set(dys) == set(range(5))
    assert np.all(np.abs(np.bincount(dys) / len(dys) - 0.2) < 0.08)


def test_flip_about_half_the_time():
    x = images_u8(2000, h=4, w=4, c=1)
    out = np.asarray(data.random_crop_flip(jax.random.key(2), x, pad=0))
    flipped = np.all(out == x[:, :, ::-1], axis=(1, 2, 3))
    unchanged = np.all(out == x, axis=(1, 2, 3))
    assert np.all(flipped | unchanged)
    symmetric = flipped & unchanged  # a mirror-symmetric image tells nothing
    assert 0.45 < flipped[~symmetric].mean() < 0.55


def test_crop_flip_deterministic_and_jittable():
    x = images_u8(16)
    key = jax.random.key(3)
    a = data.random_crop_flip(key, x)
    np.testing.assert_array_equal(a, data.random_crop_flip(key, x))
    assert not np.array_equal(a, data.random_crop_flip(jax.random.key(4), x))
    jitted = jax.jit(data.random_crop_flip, static_argnames=("pad", "flip"))
    np.testing.assert_array_equal(jitted(key, jnp.asarray(x), pad=4), a)


def test_crop_flip_identity_and_errors():
    x = images_u8(4)
    np.testing.assert_array_equal(
        data.random_crop_flip(jax.random.key(0), x, pad=0, flip=False), x)
    with pytest.raises(ValueError, match=r"\[B, H, W, C\]"):
        data.random_crop_flip(jax.random.key(0), x[0])
    with pytest.raises(ValueError, match="pad"):
        data.random_crop_flip(jax.random.key(0), x, pad=-1)


def test_normalize():
    x = images_u8(4)
    mean, std = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)
    out = data.normalize(x, mean, std)
    assert out.dtype == jnp.float32 and out.shape == x.shape
    expected = (x / 255.0 - np.array(mean)) / np.array(std)
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)
    jitted = jax.jit(lambda k, im: data.normalize(data.random_crop_flip(k, im), mean, std))
    assert jitted(jax.random.key(0), x).dtype == jnp.float32
    with pytest.raises(ValueError, match="one value per channel"):
        data.normalize(x, (0.5,), (0.2,))


def test_epoch_permutation():
    a = np.asarray(data.epoch_permutation(7, 3, 100))
    assert a.dtype == np.int32 and sorted(a) == list(range(100))
    np.testing.assert_array_equal(a, data.epoch_permutation(7, 3, 100))
    assert not np.array_equal(a, data.epoch_permutation(7, 4, 100))
    assert not np.array_equal(a, data.epoch_permutation(8, 3, 100))
    jitted = jax.jit(data.epoch_permutation, static_argnums=2)
    np.testing.assert_array_equal(jitted(7, jnp.int32(3), 100), a)


def test_num_steps_per_epoch():
    assert data.num_steps_per_epoch(50000, 128) == 390
    assert data.num_steps_per_epoch(256, 128) == 2
    with pytest.raises(ValueError, match="batch_size=300 exceeds the 200"):
        data.num_steps_per_epoch(200, 300)
    with pytest.raises(ValueError, match="batch_size"):
        data.num_steps_per_epoch(200, 0)


@pytest.mark.parametrize("n,batch", [(0, 4), (3, 4), (8, 4), (10, 4), (10000, 384)])
def test_eval_batches_cover_each_index_once(n, batch):
    indices, mask = data.eval_batches(n, batch)
    assert indices.shape == mask.shape == (-(-n // batch), batch)
    assert indices.dtype == np.int32 and mask.dtype == bool
    np.testing.assert_array_equal(np.sort(indices[mask]), np.arange(n))
    assert np.all((indices >= 0) & (indices < max(n, 1)))
    assert mask.sum() == n
