"""Digital corruptions: JPEG compression, pixelation (both through PIL) and elastic warping.

JPEG and pixelate run image by image because PIL works on single images; they are
deterministic. Elastic transform is random and vectorised over the batch. Parameters are the
CIFAR-C values (Hendrycks & Dietterich, ICLR 2019).
"""

from __future__ import annotations

import io

import numpy as np

from cud_jax.data.corruptions._common import (
    bilinear_sample,
    filter_separable,
    gaussian_kernel_1d,
    to_unit,
)

JPEG_QUALITY = (80, 65, 58, 50, 40)
PIXELATE_SCALE = (0.95, 0.9, 0.85, 0.75, 0.65)
# (displacement strength, displacement smoothness, affine jitter), as fractions of the image
# side; for 32x32 images: (0, 0, 2.56), (1.6, 6.4, 2.24), (2.56, 1.92, 1.92),
# (3.2, 1.28, 1.6), (3.2, 0.96, 0.96) pixels.
ELASTIC = ((0.0, 0.0, 0.08), (0.05, 0.2, 0.07), (0.08, 0.06, 0.06), (0.1, 0.04, 0.05),
           (0.1, 0.03, 0.03))


def _pil_image(image: np.ndarray):
    """[H, W, C] uint8 -> PIL image ("L" for C=1, "RGB" for C=3, inferred from the shape)."""
    from PIL import Image  # pillow is a core dependency; imported here to keep import light

    return Image.fromarray(np.ascontiguousarray(image[..., 0] if image.shape[-1] == 1 else image))


def _from_pil(pil, channels: int) -> np.ndarray:
    array = np.asarray(pil, dtype=np.uint8)
    return array[..., None] if channels == 1 else array


def jpeg_compression(images: np.ndarray, quality: int, rng=None) -> np.ndarray:
    """Encodes every image as JPEG at `quality` with PIL (default 4:2:0 chroma subsampling
    for RGB) and decodes it again.

    quality per severity 1..5: 80, 65, 58, 50, 40.
    """
    del rng
    from PIL import Image

    out = np.empty_like(images)
    for i, image in enumerate(images):
        buffer = io.BytesIO()
        _pil_image(image).save(buffer, format="JPEG", quality=int(quality))
        buffer.seek(0)
        with Image.open(buffer) as decoded:
            out[i] = _from_pil(decoded, images.shape[-1])
    return out


def pixelate(images: np.ndarray, scale: float, rng=None) -> np.ndarray:
    """Box-filter downsampling to `int(side * scale)` pixels and box upsampling back (PIL).

    scale per severity 1..5: 0.95, 0.9, 0.85, 0.75, 0.65 (for 32x32: 30, 28, 27, 24 and 20
    pixels).
    """
    del rng
    from PIL import Image

    height, width = images.shape[1], images.shape[2]
    small = (max(1, int(width * scale)), max(1, int(height * scale)))  # PIL sizes are (w, h)
    out = np.empty_like(images)
    for i, image in enumerate(images):
        pil = _pil_image(image).resize(small, Image.BOX).resize((width, height), Image.BOX)
        out[i] = _from_pil(pil, images.shape[-1])
    return out


def elastic_transform(images: np.ndarray, params: tuple[float, float, float],
                      rng: np.random.Generator) -> np.ndarray:
    """A random affine warp followed by a smooth random displacement field (per image).

    Affine: three corners of a square around the centre (half-side a third of the image
    side) each move by up to `jitter` pixels in each axis (uniform); the affine map through
    the moved points warps the image (mirrored borders, edge pixel not repeated). Elastic:
    every pixel then samples from `p + strength * G_smoothness * U(-1, 1)` per axis, a
    uniform noise field smoothed by a Gaussian of std `smoothness` (taps to 3 std, mirrored
    borders). Both resamplings are bilinear. (strength, smoothness, jitter) per severity 1..5,
    as fractions of the image side: (0, 0, 0.08), (0.05, 0.2, 0.07), (0.08, 0.06, 0.06),
    (0.1, 0.04, 0.05), (0.1, 0.03, 0.03).

    Not monotone in distortion: the affine jitter shrinks with severity while the local
    displacement grows, and a small global shift costs more PSNR than a local wobble. What
    grows with severity is the local, non-affine distortion.
    """
    x = to_unit(images)
    n, height, width, _ = x.shape
    side = min(height, width)
    strength, smoothness, jitter = (p * side for p in params)
    rows, cols = np.meshgrid(np.arange(height, dtype=np.float32),
                             np.arange(width, dtype=np.float32), indexing="ij")

    # Affine part. Solving for the map from moved points back to the original ones gives the
    # source position of every output pixel directly (no matrix inverse needed).
    centre = np.array([height // 2, width // 2], dtype=np.float64)
    half = side // 3
    original = centre + np.array([[half, half], [half, -half], [-half, -half]], np.float64)
    moved = original + rng.uniform(-jitter, jitter, size=(n, 3, 2))
    design = np.concatenate([moved, np.ones((n, 3, 1))], axis=-1)  # [n, 3, 3]
    back = np.linalg.solve(design, np.broadcast_to(original, (n, 3, 2)))  # [n, 3, 2]
    src_r = (back[:, None, None, 0, 0] * rows + back[:, None, None, 1, 0] * cols
             + back[:, None, None, 2, 0])
    src_c = (back[:, None, None, 0, 1] * rows + back[:, None, None, 1, 1] * cols
             + back[:, None, None, 2, 1])
    x = bilinear_sample(x, src_r, src_c, mode="reflect")

    # Elastic part. Severity 1 has none (strength 0); skip its no-op resampling.
    if strength == 0:
        return x
    taps = gaussian_kernel_1d(smoothness, 3.0)
    fields = rng.uniform(-1, 1, size=(n, height, width, 2)).astype(np.float32)
    fields = filter_separable(fields, taps, mode="symmetric") * np.float32(strength)
    return bilinear_sample(x, rows + fields[..., 0], cols + fields[..., 1], mode="symmetric")
