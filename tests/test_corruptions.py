"""Tests of the CIFAR-C-style corruption suite (cud_jax.data.corruptions).

Images are small synthetic "natural-looking" ones (smooth colour fields, an edge, mild
texture, kept away from 0 and 255 so clipping does not hide the effects), 32x32 like CIFAR.
Filters and colour conversions are cross-checked against scipy.ndimage and colorsys where
scipy is installed (the test extra).
"""

from __future__ import annotations

import colorsys

import numpy as np
import pytest

from cud_jax import data
from cud_jax.data import corruptions
from cud_jax.data.corruptions import _blur, _common, _digital, _suite

NAMES = corruptions.CORRUPTIONS
DETERMINISTIC = tuple(n for n in NAMES if n not in corruptions.RANDOM_CORRUPTIONS)
# Corruptions whose published severity scale is not monotone in distortion; each has its
# own test of the property that does hold.
NOT_MONOTONE = ("saturate", "elastic_transform")


def natural_images(n: int = 8, size: int = 32, channels: int = 3, seed: int = 0) -> np.ndarray:
    """Smooth random colour fields with one sharp edge and a little texture, in [30, 225]."""
    rng = np.random.default_rng(seed)
    coarse = rng.uniform(0, 1, (n, 5, 5, channels))
    # Bilinear upsampling of the 5x5 control grid to size x size.
    pos = np.linspace(0, 4, size)
    lo = np.minimum(np.floor(pos).astype(int), 3)
    frac = (pos - lo)[None, :, None, None]
    rows = coarse[:, lo] * (1 - frac) + coarse[:, lo + 1] * frac
    frac = frac.transpose(0, 2, 1, 3)
    smooth = rows[:, :, lo] * (1 - frac) + rows[:, :, lo + 1] * frac
    edge = (np.arange(size)[None, :, None, None] > rng.integers(8, 24, (n, 1, 1, 1)))
    x = 0.7 * smooth + 0.2 * edge + 0.05 * rng.standard_normal(smooth.shape)
    return np.rint(30 + 195 * np.clip(x, 0, 1)).astype(np.uint8)


IMAGES = natural_images()


def psnr(clean: np.ndarray, noisy: np.ndarray) -> np.ndarray:
    """Per-image PSNR in dB (inf for identical images)."""
    mse = np.mean((clean.astype(np.float64) - noisy.astype(np.float64)) ** 2, axis=(1, 2, 3))
    with np.errstate(divide="ignore"):
        return 10 * np.log10(255.0 ** 2 / mse)


def high_freq_energy(images: np.ndarray) -> float:
    """Mean squared difference of neighbouring pixels (both axes)."""
    x = images.astype(np.float64)
    return float(np.mean(np.diff(x, axis=1) ** 2) + np.mean(np.diff(x, axis=2) ** 2))


# --- API, shape, dtype, determinism ---------------------------------------------------------

def test_public_api():
    required = {"gaussian_noise", "shot_noise", "impulse_noise", "speckle_noise",
                "gaussian_blur", "defocus_blur", "contrast", "brightness", "saturate",
                "jpeg_compression", "pixelate"}
    assert required <= set(NAMES) and len(NAMES) >= 12 and len(set(NAMES)) == len(NAMES)
    assert set(corruptions.RANDOM_CORRUPTIONS) <= set(NAMES)
    assert corruptions.RGB_ONLY == ("saturate",)
    assert set(corruptions.SEVERITY_PARAMS) == set(NAMES)
    assert all(len(p) == 5 for p in corruptions.SEVERITY_PARAMS.values())
    # Published CIFAR-C values, spot-checked.
    assert corruptions.SEVERITY_PARAMS["gaussian_noise"] == (0.04, 0.06, 0.08, 0.09, 0.10)
    assert corruptions.SEVERITY_PARAMS["jpeg_compression"] == (80, 65, 58, 50, 40)
    assert corruptions.SEVERITY_PARAMS["defocus_blur"][4] == (1.5, 0.1)
    assert data.corrupt is corruptions.corrupt
    assert data.corruption_suite is corruptions.corruption_suite
    assert data.CORRUPTIONS == NAMES


@pytest.mark.parametrize("name", NAMES)
def test_shape_dtype_determinism(name):
    images = IMAGES[:4]
    for severity in corruptions.SEVERITIES:
        out = corruptions.corrupt(images, name, severity, seed=3)
        assert out.shape == images.shape and out.dtype == np.uint8
        assert not np.array_equal(out, images), (name, severity)
        np.testing.assert_array_equal(out, corruptions.corrupt(images, name, severity, seed=3))
    assert np.array_equal(images, IMAGES[:4])  # input untouched


@pytest.mark.parametrize("name", NAMES)
def test_non_square_and_other_sizes(name):
    images = natural_images(2, size=40)[:, :24]  # 24 x 40
    out = corruptions.corrupt(images, name, 5)
    assert out.shape == images.shape and out.dtype == np.uint8


def test_empty_batch_and_array_likes():
    empty = np.zeros((0, 32, 32, 3), np.uint8)
    assert corruptions.corrupt(empty, "fog", 2).shape == (0, 32, 32, 3)
    jnp = pytest.importorskip("jax.numpy")
    np.testing.assert_array_equal(corruptions.corrupt(jnp.asarray(IMAGES[:2]), "contrast", 2),
                                  corruptions.corrupt(IMAGES[:2], "contrast", 2))


def test_seeds_change_only_the_random_corruptions():
    for name in NAMES:
        a = corruptions.corrupt(IMAGES[:3], name, 3, seed=0)
        b = corruptions.corrupt(IMAGES[:3], name, 3, seed=1)
        if name in corruptions.RANDOM_CORRUPTIONS:
            assert not np.array_equal(a, b), name
        else:
            np.testing.assert_array_equal(a, b, err_msg=name)


def test_streams_are_independent_per_name_and_severity():
    # Same seed, different (name, severity): different noise, not the same draws re-used.
    a = corruptions.corrupt(np.full((2, 32, 32, 3), 128, np.uint8), "gaussian_noise", 1)
    b = corruptions.corrupt(np.full((2, 32, 32, 3), 128, np.uint8), "speckle_noise", 3)
    ra, rb = a.astype(float) - 128, b.astype(float) - 128
    assert abs(np.corrcoef(ra.ravel(), rb.ravel())[0, 1]) < 0.1


def test_deterministic_corruptions_act_per_image():
    for name in ("defocus_blur", "contrast", "jpeg_compression", "zoom_blur", "saturate"):
        whole = corruptions.corrupt(IMAGES[:3], name, 4)
        for i in range(3):
            np.testing.assert_array_equal(whole[i:i + 1],
                                          corruptions.corrupt(IMAGES[i:i + 1], name, 4))


def test_chunking_does_not_change_deterministic_results(monkeypatch):
    full = {n: corruptions.corrupt(IMAGES, n, 3, seed=5) for n in NAMES}
    monkeypatch.setattr(_suite, "_CHUNK_VALUES", 3 * 32 * 32 * 3)  # 3 images
    for name in NAMES:
        chunked = corruptions.corrupt(IMAGES, name, 3, seed=5)
        if name in DETERMINISTIC:
            np.testing.assert_array_equal(chunked, full[name], err_msg=name)
        else:  # still reproducible with the smaller chunk
            np.testing.assert_array_equal(chunked, corruptions.corrupt(IMAGES, name, 3, seed=5))


# --- Severity -----------------------------------------------------------------------------

@pytest.mark.parametrize("name", [n for n in NAMES if n not in NOT_MONOTONE])
def test_psnr_falls_with_severity(name):
    images = natural_images(12, seed=1)
    mean_psnr = [psnr(images, corruptions.corrupt(images, name, s)).mean()
                 for s in corruptions.SEVERITIES]
    assert all(np.diff(mean_psnr) < 0), (name, np.round(mean_psnr, 2))


def test_saturate_follows_its_published_scale():
    """Severities 1-2 wash colours out (2 more), 3-5 exaggerate them (increasingly); the HSV
    value (largest channel) is unchanged. In distortion 1 < 2 and 3 < 4 < 5, but 3 < 2."""
    images = IMAGES
    sat = lambda x: _common.rgb_to_hsv(_common.to_unit(x))[..., 1].mean()  # noqa: E731
    out = {s: corruptions.corrupt(images, "saturate", s) for s in corruptions.SEVERITIES}
    assert sat(out[2]) < sat(out[1]) < sat(images) < sat(out[3]) < sat(out[4]) < sat(out[5])
    for s in corruptions.SEVERITIES:
        value_change = out[s].max(-1).astype(int) - images.max(-1)
        assert np.abs(value_change).max() <= 1, s
    p = {s: psnr(images, out[s]).mean() for s in out}
    assert p[1] > p[2] and p[3] > p[4] > p[5] and p[3] > p[2]


def test_elastic_local_distortion_grows_with_severity():
    """With the affine jitter switched off, the local displacement alone grows with
    severity (severity 1 has none); the full corruption is not PSNR-monotone by design."""
    images = natural_images(12, seed=2)
    mean_psnr = []
    for strength, smoothness, _ in _digital.ELASTIC:
        rng = np.random.default_rng(0)
        out = _common.to_uint8(_digital.elastic_transform(images, (strength, smoothness, 0.0),
                                                           rng))
        mean_psnr.append(psnr(images, out).mean())
    assert mean_psnr[0] == np.inf
    assert all(np.diff(mean_psnr) < 0), np.round(mean_psnr, 2)


# --- What each corruption does ----------------------------------------------------------------

def test_noise_statistics_match_their_parameters():
    gray = np.full((8, 32, 32, 3), 128, np.uint8)
    x = 128 / 255
    for s, std in enumerate(corruptions.SEVERITY_PARAMS["gaussian_noise"], start=1):
        residual = corruptions.corrupt(gray, "gaussian_noise", s).astype(float) - 128
        assert residual.std() == pytest.approx(std * 255, rel=0.05)
        assert abs(residual.mean()) < 0.5
    for s, photons in enumerate(corruptions.SEVERITY_PARAMS["shot_noise"], start=1):
        residual = corruptions.corrupt(gray, "shot_noise", s).astype(float) - 128
        assert residual.std() == pytest.approx(np.sqrt(x / photons) * 255, rel=0.05)
    for s, std in enumerate(corruptions.SEVERITY_PARAMS["speckle_noise"], start=1):
        residual = corruptions.corrupt(gray, "speckle_noise", s).astype(float) - 128
        assert residual.std() == pytest.approx(std * 128, rel=0.05)
    for s, amount in enumerate(corruptions.SEVERITY_PARAMS["impulse_noise"], start=1):
        out = corruptions.corrupt(gray, "impulse_noise", s)
        hit = out != 128
        assert hit.mean() == pytest.approx(amount, rel=0.1)
        assert set(np.unique(out[hit])) <= {0, 255}
        assert (out[hit] == 255).mean() == pytest.approx(0.5, abs=0.1)


def test_brightness_raises_value_keeps_hue():
    for s, shift in enumerate(corruptions.SEVERITY_PARAMS["brightness"], start=1):
        out = corruptions.corrupt(IMAGES, "brightness", s)
        assert out.mean() > IMAGES.mean()
        gained = out.max(-1).astype(int) - IMAGES.max(-1)
        room = IMAGES.max(-1) + shift * 255 <= 254
        assert np.abs(gained[room] - shift * 255).max() <= 1.01
        hue_in = _common.rgb_to_hsv(_common.to_unit(IMAGES))[..., 0]
        hue_out = _common.rgb_to_hsv(_common.to_unit(out))[..., 0]
        turn = np.abs(hue_in - hue_out)
        assert np.median(np.minimum(turn, 1 - turn)) < 0.01


def test_contrast_shrinks_std_by_its_factor_and_keeps_the_mean():
    for s, factor in enumerate(corruptions.SEVERITY_PARAMS["contrast"], start=1):
        out = corruptions.corrupt(IMAGES, "contrast", s).astype(float)
        std_in = IMAGES.astype(float).std(axis=(1, 2))
        np.testing.assert_allclose(out.std(axis=(1, 2)), factor * std_in, atol=0.5)
        np.testing.assert_allclose(out.mean(axis=(1, 2)), IMAGES.mean(axis=(1, 2)), atol=0.5)


@pytest.mark.parametrize("name", ["gaussian_blur", "defocus_blur", "zoom_blur", "pixelate"])
def test_blurs_remove_high_frequencies(name):
    energy = [high_freq_energy(IMAGES)] + [
        high_freq_energy(corruptions.corrupt(IMAGES, name, s)) for s in corruptions.SEVERITIES]
    assert energy[1] < energy[0]
    if name != "pixelate":  # pixelate's block edges can add a little energy back
        assert all(np.diff(energy) < 0), np.round(energy, 1)


def test_blurs_keep_flat_images_flat():
    flat = np.full((2, 32, 32, 3), 77, np.uint8)
    for name in ("gaussian_blur", "defocus_blur", "zoom_blur", "pixelate", "contrast"):
        for s in corruptions.SEVERITIES:
            np.testing.assert_array_equal(corruptions.corrupt(flat, name, s), flat)


def test_jpeg_uses_the_published_qualities():
    from PIL import Image
    import io

    out = corruptions.corrupt(IMAGES[:1], "jpeg_compression", 5)
    buffer = io.BytesIO()
    Image.fromarray(IMAGES[0]).save(buffer, format="JPEG", quality=40)
    np.testing.assert_array_equal(out[0], np.asarray(Image.open(buffer)))


def test_fog_adds_one_fractal_per_image_and_rescales():
    """fog: x -> (x + s F) M / (M + s), F in [0, 1] shared by the channels, M the image max."""
    for severity, (strength, _) in enumerate(corruptions.SEVERITY_PARAMS["fog"], start=1):
        out = corruptions.corrupt(IMAGES, "fog", severity, seed=4) / 255.0
        x = IMAGES / 255.0
        peak = x.max(axis=(1, 2, 3), keepdims=True)
        scale = peak / (peak + strength)
        layer = (out - x * scale) / (strength * scale)  # = F, up to rounding to 1/255
        tol = 1.5 / 255 / (strength * scale.min())
        assert np.abs(layer - layer[..., :1]).max() <= tol  # same fog in every channel
        assert layer.min() >= -tol and layer.max() <= 1 + tol
        assert layer.max(axis=(1, 2, 3)).min() >= 1 - tol  # F reaches 1 in each image
    maps = _common.plasma_fractal(np.random.default_rng(0), 3, 32, 2.0)
    assert maps.shape == (3, 32, 32)
    np.testing.assert_allclose(maps.min(axis=(1, 2)), 0)
    np.testing.assert_allclose(maps.max(axis=(1, 2)), 1)
    # Larger decay -> smoother map (less energy between neighbours).
    smooth = _common.plasma_fractal(np.random.default_rng(0), 8, 32, 3.0)
    rough = _common.plasma_fractal(np.random.default_rng(0), 8, 32, 1.75)
    assert high_freq_energy(smooth[..., None]) < high_freq_energy(rough[..., None])


def test_defocus_kernel_is_a_normalised_disk():
    for radius, alias in corruptions.SEVERITY_PARAMS["defocus_blur"]:
        kernel = _blur.defocus_kernel(radius, alias)
        assert kernel.sum() == pytest.approx(1.0, abs=1e-6)
        np.testing.assert_allclose(kernel, kernel.T, atol=1e-7)
        np.testing.assert_allclose(kernel, kernel[::-1, ::-1], atol=1e-7)
    # radius 1.5 covers the 3x3 block; radius 1 the centre and its 4 neighbours.
    k = _blur.defocus_kernel(1.0, 1e-3)
    np.testing.assert_allclose(k[1:4, 1:4], [[0, .2, 0], [.2, .2, .2], [0, .2, 0]], atol=1e-6)


# --- Cross-checks against reference implementations ---------------------------------------------

def test_filters_match_scipy_ndimage():
    ndimage = pytest.importorskip("scipy.ndimage")
    x = np.random.default_rng(1).random((3, 9, 11, 3)).astype(np.float32)
    for sigma in corruptions.SEVERITY_PARAMS["gaussian_blur"]:
        ours = _common.filter_separable(x, _common.gaussian_kernel_1d(sigma, 4.0), "edge")
        ref = ndimage.gaussian_filter(x, sigma=(0, sigma, sigma, 0), mode="nearest",
                                      truncate=4.0)
        np.testing.assert_allclose(ours, ref, atol=1e-6)
    ours = _common.filter_separable(x, _common.gaussian_kernel_1d(6.4, 3.0), "symmetric")
    ref = ndimage.gaussian_filter(x, sigma=(0, 6.4, 6.4, 0), mode="reflect", truncate=3.0)
    np.testing.assert_allclose(ours, ref, atol=1e-6)
    kernel = _blur.defocus_kernel(1.5, 0.1)
    ref = ndimage.correlate(x, kernel[None, :, :, None], mode="mirror")
    np.testing.assert_allclose(_common.filter_2d(x, kernel, "reflect"), ref, atol=1e-6)
    image = x[:1, :, :, :1]
    rows = np.random.default_rng(2).uniform(-3, 12, (1, 9, 11))
    cols = np.random.default_rng(3).uniform(-3, 14, (1, 9, 11))
    for mode, scipy_mode in (("symmetric", "grid-mirror"), ("reflect", "mirror")):
        ours = _common.bilinear_sample(image, rows, cols, mode)[0, ..., 0]
        ref = ndimage.map_coordinates(image[0, ..., 0].astype(np.float64), [rows[0], cols[0]],
                                      order=1, mode=scipy_mode)
        np.testing.assert_allclose(ours, ref, atol=1e-6)


def test_hsv_matches_colorsys():
    rng = np.random.default_rng(0)
    rgb = rng.random((300, 3)).astype(np.float32)
    rgb[:30] = rgb[:30, :1]  # greys
    rgb[30:40] = 0  # black
    rgb[40:60, 1] = rgb[40:60, 0]  # two channels tie
    ref = np.array([colorsys.rgb_to_hsv(*v) for v in rgb.astype(np.float64)])
    np.testing.assert_allclose(_common.rgb_to_hsv(rgb), ref, atol=1e-6)
    np.testing.assert_allclose(_common.hsv_to_rgb(_common.rgb_to_hsv(rgb)), rgb, atol=1e-6)
    hsv = rng.random((300, 3))
    ref = np.array([colorsys.hsv_to_rgb(*v) for v in hsv])
    np.testing.assert_allclose(_common.hsv_to_rgb(hsv), ref, atol=1e-12)


# --- Suite and cache ----------------------------------------------------------------------------

def test_suite_matches_corrupt_in_any_order():
    names = ("fog", "gaussian_noise", "contrast")
    forward = dict(corruptions.corruption_suite(IMAGES[:3], names=names, severities=(1, 4),
                                                seed=7))
    backward = dict(corruptions.corruption_suite(IMAGES[:3], names=names[::-1],
                                                 severities=(4, 1), seed=7))
    assert list(forward) == [(n, s) for n in names for s in (1, 4)]
    for key, images in forward.items():
        np.testing.assert_array_equal(images, backward[key])
        np.testing.assert_array_equal(images, corruptions.corrupt(IMAGES[:3], *key, seed=7))


def test_cache_round_trip(tmp_path, monkeypatch):
    names, severities = ("shot_noise", "pixelate"), (2, 5)
    first = dict(corruptions.corruption_suite(IMAGES, names=names, severities=severities,
                                              seed=1, cache_dir=tmp_path))
    files = sorted(tmp_path.glob("*.npz"))
    assert len(files) == 4 and not list(tmp_path.glob("*.tmp"))
    with np.load(files[0]) as stored:
        assert stored["images"].dtype == np.uint8

    def fail(*args, **kwargs):
        raise AssertionError("should have been read from the cache")

    with monkeypatch.context() as m:
        m.setattr(_suite, "corrupt", fail)
        second = dict(corruptions.corruption_suite(IMAGES, names=names, severities=severities,
                                                   seed=1, cache_dir=tmp_path))
    assert second.keys() == first.keys()
    for key in first:
        np.testing.assert_array_equal(second[key], first[key])

    # Every part of the key makes a new entry: seed, images, code version.
    dict(corruptions.corruption_suite(IMAGES, names=names[:1], severities=(2,), seed=2,
                                      cache_dir=tmp_path))
    assert len(list(tmp_path.glob("*.npz"))) == 5
    other_images = IMAGES.copy()
    other_images[0, 0, 0, 0] ^= 1
    dict(corruptions.corruption_suite(other_images, names=names[:1], severities=(2,), seed=1,
                                      cache_dir=tmp_path))
    assert len(list(tmp_path.glob("*.npz"))) == 6
    monkeypatch.setattr(_suite, "_code_version", lambda: "edited-code")
    dict(corruptions.corruption_suite(IMAGES, names=names[:1], severities=(2,), seed=1,
                                      cache_dir=tmp_path))
    assert len(list(tmp_path.glob("*.npz"))) == 7


def test_unreadable_cache_file_is_recomputed(tmp_path):
    (key, images), = corruptions.corruption_suite(IMAGES[:2], names=("contrast",),
                                                  severities=(3,), cache_dir=tmp_path)
    path, = tmp_path.glob("*.npz")
    path.write_bytes(b"not a zip file")
    (_, again), = corruptions.corruption_suite(IMAGES[:2], names=("contrast",),
                                               severities=(3,), cache_dir=tmp_path)
    np.testing.assert_array_equal(again, images)
    with np.load(path) as stored:  # rewritten
        np.testing.assert_array_equal(stored["images"], images)


def test_code_version_is_stable_and_short():
    assert _suite._code_version() == _suite._code_version()
    assert len(_suite._code_version()) == 16


# --- Errors and grayscale -----------------------------------------------------------------------

def test_unknown_name_lists_the_valid_ones():
    with pytest.raises(ValueError, match="unknown corruption 'gaussian'.*gaussian_noise.*pixelate"):
        corruptions.corrupt(IMAGES, "gaussian", 1)
    with pytest.raises(ValueError, match="'frost' is not provided.*photographs"):
        corruptions.corrupt(IMAGES, "frost", 1)


@pytest.mark.parametrize("severity", [0, 6, -1, 2.0, "3", True, None])
def test_bad_severity_names_the_valid_values(severity):
    with pytest.raises(ValueError, match=r"severity must be one of \(1, 2, 3, 4, 5\)"):
        corruptions.corrupt(IMAGES, "contrast", severity)


def test_bad_images_and_seed():
    with pytest.raises(ValueError, match=r"\[N, H, W, C\].*images\[\.\.\., None\]"):
        corruptions.corrupt(IMAGES[..., 0], "contrast", 1)
    with pytest.raises(ValueError, match="uint8.*float64.*255"):
        corruptions.corrupt(IMAGES / 255.0, "contrast", 1)
    with pytest.raises(ValueError, match="1 .grayscale. or 3 .RGB. channels, got 4"):
        corruptions.corrupt(np.zeros((1, 8, 8, 4), np.uint8), "contrast", 1)
    with pytest.raises(ValueError, match="seed must be a non-negative int"):
        corruptions.corrupt(IMAGES, "fog", 1, seed=-1)


def test_suite_checks_everything_before_computing():
    # The errors come from the call itself, not from the first `next()`.
    with pytest.raises(ValueError, match="unknown corruption 'fgo'"):
        corruptions.corruption_suite(IMAGES, names=("contrast", "fgo"))
    with pytest.raises(ValueError, match="severity must be one of"):
        corruptions.corruption_suite(IMAGES, severities=(1, 7))
    with pytest.raises(TypeError, match=r"names=\('fog',\)"):
        corruptions.corruption_suite(IMAGES, names="fog")


def test_grayscale_images():
    gray = natural_images(4, channels=1)
    assert gray.shape == (4, 32, 32, 1)
    for name in NAMES:
        if name in corruptions.RGB_ONLY:
            with pytest.raises(ValueError, match="needs RGB images.*RGB_ONLY"):
                corruptions.corrupt(gray, name, 3)
            continue
        out = corruptions.corrupt(gray, name, 3)
        assert out.shape == gray.shape and out.dtype == np.uint8, name
        assert not np.array_equal(out, gray), name
    # A grayscale image through brightness equals the same image as RGB, channel by channel.
    rgb = np.repeat(gray, 3, axis=-1)
    np.testing.assert_array_equal(corruptions.corrupt(gray, "brightness", 4)[..., 0],
                                  corruptions.corrupt(rgb, "brightness", 4)[..., 0])
    with pytest.raises(ValueError, match="saturate.*needs RGB"):
        corruptions.corruption_suite(gray)  # default names include saturate: fails up front
    names = tuple(n for n in NAMES if n not in corruptions.RGB_ONLY)
    assert len(dict(corruptions.corruption_suite(gray, names=names, severities=(1,)))) == len(names)
