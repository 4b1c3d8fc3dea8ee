"""A 2-D convolution whose weight gradient is a matrix product, for where XLA's is slower.

`conv_im2col_weight_grad` is a drop-in for `lax.conv_general_dilated` with a
`jax.custom_vjp`: the forward pass and the input gradient are XLA's own; the weight gradient
is rebuilt as im2col products: for each kernel tap (i, j), the strided slice of the padded
input that the tap reads, contracted with the output gradient over batch and output pixels.

Measured on a 2-core x86 CPU with jax 0.10.2 (results/conv_grad_cpu.md and the whole-model
rows there), XLA:CPU's own weight gradient is *not* uniformly slow: it wins for the small
channel counts and small maps of the CIFAR ResNets (resnet20's forward + backward step 17%
faster with XLA's), ties on resnet8x4, and loses on depthwise convs (1.3x per layer,
MobileNetV2's step 14% faster with im2col) and on some large maps. An earlier measurement
of a 15-20x gap did not reproduce. So "auto" uses im2col only where it measured faster.

Which one a model uses is a static attribute of each `nnx.Conv` (its `conv_general_dilated`
function), chosen by name:

- "xla": `lax.conv_general_dilated`, XLA's forward and both gradients.
- "im2col": `conv_im2col_weight_grad` for every conv, on every backend.
- "auto" (the zoo's default): im2col for depthwise convs when traced for the CPU backend
  (`jax.default_backend()`), XLA's own for every other conv and on accelerators.

`set_conv_weight_grad(model, mode)` switches every conv of a built model; training reads the
mode from `config.parallel.conv_weight_grad`.
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp
from jax import lax
from flax import nnx

#: Valid `config.conv_weight_grad` / `set_conv_weight_grad` modes.
WEIGHT_GRAD_MODES = ("auto", "xla", "im2col")

# The layout flax's nnx.Conv uses for a 2-D conv: channels-last input and output, HWIO kernel.
_LAYOUT = ("NHWC", "HWIO", "NHWC")


def check_conv_weight_grad(mode: str, field: str = "conv_weight_grad") -> None:
    """Raises one line naming `field` and the valid values when `mode` is not one of them."""
    if mode not in WEIGHT_GRAD_MODES:
        raise ValueError(f"Unknown {field} {mode!r}; valid values: "
                         f"{', '.join(WEIGHT_GRAD_MODES)}.")


def _spec(lhs, rhs, window_strides, padding, lhs_dilation, rhs_dilation, dimension_numbers,
          feature_group_count, batch_group_count, preferred_element_type, out_sharding):
    """The static description `(strides, pads, groups)` of a conv the custom VJP covers, or
    None for one it does not (dilations, batch groups, other layouts, explicit output
    sharding or element type), which then stays entirely XLA's."""
    if lhs.ndim != 4 or rhs.ndim != 4 or lhs.dtype != rhs.dtype:
        return None
    if any(d != 1 for d in (lhs_dilation or ())) or any(d != 1 for d in (rhs_dilation or ())):
        return None
    if batch_group_count != 1 or out_sharding is not None:
        return None
    if preferred_element_type is not None and jnp.dtype(preferred_element_type) != lhs.dtype:
        return None
    if dimension_numbers is None:
        return None
    layout = lax.conv_dimension_numbers(lhs.shape, rhs.shape, _LAYOUT)
    if lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers) != layout:
        return None
    strides = tuple(int(s) for s in window_strides)
    if isinstance(padding, str):
        pads = lax.padtype_to_pads(lhs.shape[1:3], rhs.shape[:2], strides, padding)
    else:
        pads = padding
    pads = tuple((int(lo), int(hi)) for lo, hi in pads)
    return strides, pads, int(feature_group_count)


def _conv(x, w, spec, precision):
    strides, pads, groups = spec
    return lax.conv_general_dilated(x, w, strides, pads, dimension_numbers=_LAYOUT,
                                    feature_group_count=groups, precision=precision)


def _weight_grad(x, dy, kernel_shape, spec, precision):
    """d loss / d kernel from the input `x` and the output gradient `dy`, as matrix products.

    Tap (i, j) of the kernel sees, at output pixel (h, w), the padded input at
    (h * stride + i, w * stride + j): one strided slice of the padded input, the same shape as
    `dy`. Its gradient is that slice contracted with `dy` over batch and pixels, per group.
    Products accumulate in float32 whatever the compute dtype.
    """
    kh, kw, cin_g, cout = kernel_shape
    (sh, sw), pads, groups = spec
    n, oh, ow, _ = dy.shape
    cout_g = cout // groups
    # lax.pad, unlike jnp.pad, also takes the negative pads lax convs accept (crops).
    xp = lax.pad(x, jnp.zeros((), x.dtype), ((0, 0, 0), (*pads[0], 0), (*pads[1], 0), (0, 0, 0)))
    c = xp.shape[-1]

    def tap(i, j):
        return lax.slice(xp, (0, i, j, 0), (n, i + sh * (oh - 1) + 1, j + sw * (ow - 1) + 1, c),
                         (1, sh, sw, 1))

    if cin_g == 1 and cout_g == 1:
        # Depthwise: each channel's gradient is a dot product of two pixel vectors, a
        # multiply-and-reduce XLA fuses with the slice (a batched matmul of 1x1 blocks is slow).
        dy32 = dy.astype(jnp.float32)
        grads = [jnp.sum(tap(i, j).astype(jnp.float32) * dy32, axis=(0, 1, 2))
                 for i in range(kh) for j in range(kw)]
        return jnp.stack(grads).reshape(kernel_shape)
    m = n * oh * ow
    dy_m = dy.reshape(m, groups, cout_g)
    if groups == 1:
        grads = [jnp.einsum("mi,mo->io", tap(i, j).reshape(m, cin_g), dy_m[:, 0],
                            precision=precision, preferred_element_type=jnp.float32)
                 for i in range(kh) for j in range(kw)]
    else:
        # Grouped: a batched product over groups; kernel column g * cout_g + o is group g's.
        grads = [jnp.einsum("mgi,mgo->igo", tap(i, j).reshape(m, groups, cin_g), dy_m,
                            precision=precision, preferred_element_type=jnp.float32
                            ).reshape(cin_g, cout)
                 for i in range(kh) for j in range(kw)]
    return jnp.stack(grads).reshape(kernel_shape)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _conv_custom_vjp(x, w, spec, precision):
    return _conv(x, w, spec, precision)


def _conv_fwd(x, w, spec, precision):
    return _conv(x, w, spec, precision), (x, w)


def _conv_bwd(spec, precision, residuals, dy):
    x, w = residuals
    # The conv is linear in x: its transpose is XLA's input gradient, with no forward pass.
    (dx,) = jax.linear_transpose(lambda x_: _conv(x_, w, spec, precision), x)(dy)
    dw = _weight_grad(x, dy, w.shape, spec, precision).astype(w.dtype)
    return dx, dw


_conv_custom_vjp.defvjp(_conv_fwd, _conv_bwd)


def conv_im2col_weight_grad(lhs, rhs, window_strides, padding, lhs_dilation=None,
                            rhs_dilation=None, dimension_numbers=None, feature_group_count=1,
                            batch_group_count=1, precision=None, preferred_element_type=None,
                            out_sharding=None):
    """`lax.conv_general_dilated` with the weight gradient computed as im2col products.

    Same arguments and forward result as `lax.conv_general_dilated`; its input gradient is
    XLA's, its kernel gradient `_weight_grad`'s. Covers NHWC/HWIO 2-D convs with any stride,
    explicit or named padding and `feature_group_count` (grouped, depthwise); anything else
    (dilations, batch groups, other layouts) is passed to `lax.conv_general_dilated` as is.
    """
    spec = _spec(lhs, rhs, window_strides, padding, lhs_dilation, rhs_dilation,
                 dimension_numbers, feature_group_count, batch_group_count,
                 preferred_element_type, out_sharding)
    if spec is None:
        return lax.conv_general_dilated(
            lhs, rhs, window_strides, padding, lhs_dilation=lhs_dilation,
            rhs_dilation=rhs_dilation, dimension_numbers=dimension_numbers,
            feature_group_count=feature_group_count, batch_group_count=batch_group_count,
            precision=precision, preferred_element_type=preferred_element_type,
            out_sharding=out_sharding)
    return _conv_custom_vjp(lhs, rhs, spec, precision)


def _is_depthwise(rhs, feature_group_count) -> bool:
    """One input channel per group (HWIO kernel): MobileNetV2's and ShuffleNet's 3x3 convs."""
    return feature_group_count > 1 and rhs.ndim == 4 and rhs.shape[2] == 1


def conv_auto_weight_grad(lhs, rhs, *args, feature_group_count=1, **kwargs):
    """`conv_im2col_weight_grad` for a depthwise conv traced for the CPU backend, else
    `lax.conv_general_dilated` (see the module docstring for the measurements).

    The backend is read at trace time (`jax.default_backend()`), so one model definition
    serves CPU and accelerator runs.
    """
    fn = lax.conv_general_dilated
    if jax.default_backend() == "cpu" and _is_depthwise(rhs, feature_group_count):
        fn = conv_im2col_weight_grad
    return fn(lhs, rhs, *args, feature_group_count=feature_group_count, **kwargs)


_CONV_FNS: dict[str, Callable[..., Any]] = {
    "auto": conv_auto_weight_grad,
    "xla": lax.conv_general_dilated,
    "im2col": conv_im2col_weight_grad,
}


def conv_function(mode: str) -> Callable[..., Any]:
    """The `conv_general_dilated` function for a `WEIGHT_GRAD_MODES` name (validated)."""
    check_conv_weight_grad(mode)
    return _CONV_FNS[mode]


def set_conv_weight_grad(model: nnx.Module, mode: str) -> nnx.Module:
    """Makes every `nnx.Conv` inside `model` compute its weight gradient the `mode` way.

    The choice is a static attribute of each conv (part of the graph definition, not of the
    parameters), so checkpoints and parameter trees are the same in every mode. Returns
    `model`, changed in place.
    """
    fn = conv_function(mode)
    for _, module in nnx.iter_modules(model):
        if isinstance(module, nnx.Conv):
            module.conv_general_dilated = fn
    return model
