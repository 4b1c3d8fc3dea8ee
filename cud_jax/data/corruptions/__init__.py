"""CIFAR-C-style corruptions, generated locally and deterministically.

Reimplements, from the published description, the common corruptions of CIFAR-10-C and
CIFAR-100-C: D. Hendrycks and T. Dietterich, "Benchmarking Neural Network Robustness to
Common Corruptions and Perturbations", ICLR 2019 (arXiv:1903.12261). Severity parameters are
the published ones for 32x32 images. Results are statistically equivalent to the released
data sets, not byte-identical (own random streams, own resampling code).

    from cud_jax.data import corruptions
    foggy = corruptions.corrupt(test_images, "fog", 3, seed=0)          # uint8, same shape
    for (name, severity), images in corruptions.corruption_suite(
            test_images, cache_dir="/tmp/cifar_c_cache"):
        ...

Corruption            parameter                          severity 1 .. 5
gaussian_noise        noise std ([0, 1] scale)           .04  .06  .08  .09  .10
shot_noise            photons (Poisson(x*p)/p)           500  250  100  75   50
impulse_noise         salt-and-pepper fraction           .01  .02  .03  .05  .07
speckle_noise         std of x * N(0, s^2)               .06  .10  .12  .16  .20
gaussian_blur         sigma (pixels)                     .4   .6   .7   .8   1
defocus_blur          (disk radius, anti-alias sigma)    (.3,.4) (.4,.5) (.5,.6) (1,.2) (1.5,.1)
zoom_blur             largest zoom (steps of .01)        1.06 1.11 1.15 1.20 1.25
contrast              factor towards the mean            .75  .5   .4   .3   .15
brightness            added to HSV value                 .05  .1   .15  .2   .3
saturate              HSV s -> s*a + b, (a, b)           (.3,0) (.1,0) (1.5,0) (2,.1) (2.5,.2)
fog                   (strength, fractal decay)          (.2,3) (.5,3) (.75,2.5) (1,2) (1.5,1.75)
jpeg_compression      PIL JPEG quality                   80   65   58   50   40
pixelate              box down/up-sampling scale         .95  .9   .85  .75  .65
elastic_transform     (strength, smoothness, jitter)     (0,0,.08) (.05,.2,.07) (.08,.06,.06)
                      x image side (32 for CIFAR)        (.1,.04,.05) (.1,.03,.03)

Random (depend on `seed`): the four noises, fog and elastic_transform
(`RANDOM_CORRUPTIONS`); the others are deterministic. Severity raises the distortion (PSNR
against the clean image falls) for every corruption except two whose published scales are
not monotone: `saturate` (1-2 desaturate, 3-5 oversaturate; 3 is milder than 2) and
`elastic_transform` (the global affine jitter shrinks with severity while the local
displacement grows). Grayscale (C=1) works for all but `saturate` (`RGB_ONLY`). Any image
size works: pixelate, fog and elastic_transform scale with the image side; the blur radii
are in pixels and so are relatively milder on images larger than 32x32.

Not provided: frost (needs the CIFAR-C frost photographs), motion_blur and snow (ImageMagick's
motion blur), glass_blur and spatter; asking for them raises an error that says so.

Dependencies: numpy, and pillow for jpeg_compression and pixelate. No scipy or OpenCV.
"""

from cud_jax.data.corruptions._suite import (
    CORRUPTIONS,
    RANDOM_CORRUPTIONS,
    RGB_ONLY,
    SEVERITIES,
    SEVERITY_PARAMS,
    cache_path,
    corrupt,
    corruption_suite,
)

__all__ = [
    "CORRUPTIONS",
    "RANDOM_CORRUPTIONS",
    "RGB_ONLY",
    "SEVERITIES",
    "SEVERITY_PARAMS",
    "cache_path",
    "corrupt",
    "corruption_suite",
]
