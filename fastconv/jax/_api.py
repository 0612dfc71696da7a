"""The public JAX functions: fastconv's own ``conv2d`` and ``lax.conv_general_dilated``'s
signature, both checked and normalised at trace time into a static ``Geometry`` for
``_ops.conv``."""
from __future__ import annotations

import jax.numpy as jnp
import numpy as np

import fastconv
from fastconv import _validate as v

from ._ops import Geometry, conv

_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))

# lax's dimension numbers for the two layouts fastconv has, as (lhs, rhs, out) specs.
_LAYOUTS = {("NCHW", "OIHW", "NCHW"): "NCHW", ("NHWC", "HWIO", "NHWC"): "NHWC"}


def _check(a, name: str, dtype=None):
    a = jnp.asarray(a)
    if a.dtype not in _FLOATS:
        raise TypeError(f"{name} must be a float32 or float64 array, got dtype {a.dtype}")
    if dtype is not None and a.dtype != dtype:
        raise TypeError(f"{name} must have the input's dtype {dtype}, got dtype {a.dtype}")
    return a


def conv2d(x, w, stride=1, pad=0, *, bias=None, dilation=1, groups=1, layout="NCHW"):
    """:func:`fastconv.conv2d` as a JAX function (jit, grad, vmap; see ``_ops``):
    x (N, C, H, W) or (N, H, W, C), or one image without N; w OIHW or HWIO; pad
    every form fastconv takes. Differentiable once, with respect to x, w and bias."""
    x = _check(x, "x")
    w = _check(w, "w", x.dtype)
    unbatched = x.ndim == 3
    x4 = x[None] if unbatched else x
    code = v.layout_code(layout)
    if x4.ndim != 4:
        v.batched(np.empty((0,) * x.ndim), "x", code)  # raises with fastconv's message
    g = v.geometry(x4.shape, w.shape, stride, pad, dilation, groups, code)
    geo = Geometry((g.stride_h, g.stride_w), ((g.pad_top, g.pad_bottom),
                                               (g.pad_left, g.pad_right)),
                   (g.dil_h, g.dil_w), g.groups, layout)
    y = conv(geo, x4, w)
    if bias is not None:
        bias = _check(bias, "bias", x.dtype)
        v.check_bias(np.empty(bias.shape), g.K)
        y = y + (bias if layout == "NHWC" else bias[:, None, None])
    return y[0] if unbatched else y


def _layout(dimension_numbers, lhs, rhs) -> str:
    """"NCHW" or "NHWC" for lax's dimension numbers (None, three strings or a
    ConvDimensionNumbers); NotImplementedError for other layouts."""
    if dimension_numbers is None:
        return "NCHW"
    if isinstance(dimension_numbers, (tuple, list)) and all(
            isinstance(s, str) for s in dimension_numbers):
        key = tuple(dimension_numbers)
    else:
        from jax import lax
        specs = lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers)
        key = next((names for names in _LAYOUTS
                    if lax.conv_dimension_numbers(lhs.shape, rhs.shape, names) == specs),
                   dimension_numbers)
    if key not in _LAYOUTS:
        raise NotImplementedError(
            f"dimension_numbers must be one of {list(_LAYOUTS)} (fastconv's NCHW/OIHW and "
            f"NHWC/HWIO), got {dimension_numbers!r}")
    return _LAYOUTS[key]


def _padding(padding, size, kernel, stride, dilation):
    """lax's padding ("SAME", "SAME_LOWER", "VALID" or pairs) as fastconv's per side."""
    if isinstance(padding, str):
        mode = padding.upper()
        if mode not in ("SAME", "SAME_LOWER", "VALID"):
            raise ValueError(f"padding must be 'SAME', 'SAME_LOWER', 'VALID' or a sequence "
                             f"of (low, high) pairs, got {padding!r}")
        if mode == "VALID":
            return (0, 0), (0, 0)
        sides = v.pad_sides("same", kernel, stride, dilation, size)
        pairs = ((sides[0], sides[1]), (sides[2], sides[3]))
        # SAME puts the odd pixel after, SAME_LOWER before
        return pairs if mode == "SAME" else tuple(p[::-1] for p in pairs)
    try:
        pairs = tuple((int(lo), int(hi)) for lo, hi in padding)
    except (TypeError, ValueError):
        raise ValueError(f"padding must be 'SAME', 'SAME_LOWER', 'VALID' or a sequence of "
                         f"(low, high) pairs, got {padding!r}") from None
    if len(pairs) != 2:
        raise ValueError(f"padding must have one (low, high) pair per spatial axis (2), got "
                         f"{padding!r}")
    if min(min(p) for p in pairs) < 0:
        raise NotImplementedError(f"negative padding (cropping) is not supported, got "
                                  f"{padding!r}")
    return pairs


def conv_general_dilated(lhs, rhs, window_strides, padding, *, lhs_dilation=None,
                         rhs_dilation=None, dimension_numbers=None, feature_group_count=1,
                         precision=None, preferred_element_type=None):
    """``jax.lax.conv_general_dilated`` on fastconv, for 2-D convolutions in NCHW/OIHW or
    NHWC/HWIO (``dimension_numbers`` None, those strings, or the equivalent
    ConvDimensionNumbers). ``lhs_dilation`` other than 1 (a transposed convolution),
    ``batch_group_count``, other layouts and negative padding raise
    NotImplementedError; ``precision`` is accepted and ignored (fastconv computes in the
    arrays' dtype); ``preferred_element_type`` may only be that dtype."""
    lhs = _check(lhs, "lhs")
    rhs = _check(rhs, "rhs", lhs.dtype)
    if lhs.ndim != 4 or rhs.ndim != 4:
        raise NotImplementedError(f"fastconv.jax runs 2-D convolutions: lhs and rhs must be "
                                  f"4-D, got shapes {lhs.shape} and {rhs.shape}")
    if lhs_dilation is not None and tuple(lhs_dilation) != (1,) * len(lhs_dilation):
        raise NotImplementedError(f"lhs_dilation other than 1 (a transposed convolution) is "
                                  f"not supported, got {tuple(lhs_dilation)}")
    if preferred_element_type is not None and np.dtype(preferred_element_type) != lhs.dtype:
        raise NotImplementedError(f"preferred_element_type must be None or the inputs' "
                                  f"dtype {lhs.dtype}, got {preferred_element_type!r}")
    layout = _layout(dimension_numbers, lhs, rhs)
    stride = v.pair(tuple(window_strides), "window_strides", 1)
    dilation = v.pair(tuple(rhs_dilation) if rhs_dilation is not None else 1,
                      "rhs_dilation", 1)
    nhwc = layout == "NHWC"
    size = lhs.shape[1:3] if nhwc else lhs.shape[2:]
    kernel = rhs.shape[:2] if nhwc else rhs.shape[2:]
    pad = _padding(padding, size, kernel, stride, dilation)
    return conv2d(lhs, rhs, stride, pad, dilation=dilation, groups=feature_group_count,
                  layout=layout)
