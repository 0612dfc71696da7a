"""Argument checking and normalisation for the public API.

Everything a kernel must never see is dealt with here: Python lists, odd dtypes,
strings, ``None``, non-contiguous or read-only arrays, and shapes that would let a
bounds-check-free kernel read or write outside its buffers. Every error names the
argument, what was expected, and what was given.
"""
from __future__ import annotations

import operator

import numpy as np

from ._geometry import LAYOUTS, ConvGeometry, out_size, transposed_out_size

PAD_MODES = ("valid", "same", "full")
BACKENDS = ("auto", "direct", "im2col", "winograd", "reference")
GRAD_NAMES = ("x", "w", "b")

# Kernels index with 64-bit signed integers. Array sizes are bounded by memory; keeping
# every option (stride, pad, dilation, groups) below 2**31 as well leaves the products
# the kernels form (offsets, padded sizes, element counts) far from overflow.
_MAX_INT = 2**31 - 1


def _int(value, name: str, minimum: int) -> int:
    if isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be an int, got bool {value!r}")
    try:
        v = operator.index(value)
    except TypeError:
        raise TypeError(f"{name} must be an int or a pair of ints, "
                        f"got {type(value).__name__} {value!r}") from None
    if v < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {v}")
    if v > _MAX_INT:
        raise ValueError(f"{name} must be <= {_MAX_INT}, got {v}")
    return v


def pair(value, name: str, minimum: int) -> tuple[int, int]:
    """``3 -> (3, 3)``; ``(2, 3) -> (2, 3)``; anything else is an error naming ``name``."""
    if isinstance(value, (tuple, list)):
        if len(value) != 2:
            raise ValueError(f"{name} must be an int or a pair (h, w), got {value!r}")
        return _int(value[0], name, minimum), _int(value[1], name, minimum)
    if isinstance(value, np.ndarray) and value.ndim == 1:
        return pair(value.tolist(), name, minimum)
    v = _int(value, name, minimum)
    return v, v


def pad_sides(pad, kernel: tuple[int, int], stride: tuple[int, int],
              dilation: tuple[int, int], size: tuple[int, int]) -> tuple[int, int, int, int]:
    """Normalise ``pad`` to (top, bottom, left, right).

    Accepted: an int; a pair (h, w); per-side ((top, bottom), (left, right)); or one of
    "valid" (no padding), "same" (output ceil(in / stride), the extra pixel after, as
    TensorFlow does), "full" ((R - 1) * dilation on each side).
    """
    if isinstance(pad, str):
        if pad == "valid":
            return 0, 0, 0, 0
        if pad == "full":
            ph, pw = (dilation[0] * (kernel[0] - 1), dilation[1] * (kernel[1] - 1))
            return ph, ph, pw, pw
        if pad == "same":
            sides = []
            for n, k, s, d in zip(size, kernel, stride, dilation):
                out = -(-n // s)  # ceil(n / s)
                total = max((out - 1) * s + d * (k - 1) + 1 - n, 0)
                sides += [total // 2, total - total // 2]
            return tuple(sides)
        raise ValueError(f"pad must be an int, a pair, ((top, bottom), (left, right)) or one of "
                         f"{', '.join(repr(m) for m in PAD_MODES)}; got {pad!r}")
    if isinstance(pad, (tuple, list)) and len(pad) == 2 and all(
            isinstance(p, (tuple, list)) for p in pad):
        if any(len(p) != 2 for p in pad):
            raise ValueError(f"pad per side must be ((top, bottom), (left, right)), got {pad!r}")
        (t, b), (l, r) = pad
        return tuple(_int(v, "pad", 0) for v in (t, b, l, r))
    ph, pw = pair(pad, "pad", 0)
    return ph, ph, pw, pw


def _choice(value, name: str, legal: tuple[str, ...]) -> str:
    if not isinstance(value, str) or value not in legal:
        kind = ValueError if isinstance(value, str) else TypeError
        raise kind(f"{name} must be one of {', '.join(repr(v) for v in legal)}; got {value!r}")
    return value


def layout_code(layout) -> int:
    return LAYOUTS[_choice(layout, "layout", tuple(LAYOUTS))]


def backend_name(backend) -> str:
    return _choice(backend, "backend", BACKENDS)


def flag(value, name: str) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False, got {type(value).__name__} {value!r}")
    return bool(value)


def wrt_set(wrt) -> frozenset:
    names = (wrt,) if isinstance(wrt, str) else wrt
    try:
        names = tuple(names)
    except TypeError:
        raise TypeError(f"wrt must be a tuple drawn from {GRAD_NAMES}, got {wrt!r}") from None
    for n in names:
        if not isinstance(n, str) or n not in GRAD_NAMES:
            raise ValueError(f"wrt must be a tuple drawn from {GRAD_NAMES}, got {wrt!r}")
    return frozenset(names)


def as_array(a, name: str) -> np.ndarray:
    """``np.asarray`` with the dtype rules: bool/int -> float64, float16 -> float32."""
    if a is None or isinstance(a, (str, bytes, dict)):
        raise TypeError(f"{name} must be an array of numbers, got {type(a).__name__}")
    try:
        arr = np.asarray(a)
    except (ValueError, TypeError) as e:  # ragged nested lists
        raise TypeError(f"{name} must be an array of numbers: {e}") from None
    kind = arr.dtype.kind
    if kind in "biu":
        return arr.astype(np.float64)
    if kind == "f":
        if arr.dtype == np.float16:
            return arr.astype(np.float32)
        if arr.dtype in (np.float32, np.float64):
            return arr
    raise TypeError(f"{name} must have a real numeric dtype (float32, float64; bool, int and "
                    f"float16 are promoted), got dtype {arr.dtype}")


def common_dtype(*arrays) -> np.dtype:
    """float32 only if every array is float32; otherwise float64, as NumPy promotes."""
    return np.result_type(*(a.dtype for a in arrays if a is not None))


def contiguous(a: np.ndarray, dtype) -> np.ndarray:
    """A C-contiguous array of ``dtype``; copies only when needed, never writes to ``a``.

    (Not ``np.ascontiguousarray``: it turns a 0-d array into shape (1,), which would let a
    scalar bias pass the shape check for K == 1.)
    """
    return np.asarray(a, dtype=dtype, order="C")


def _layout_names(layout: int) -> tuple[str, str, str]:
    if layout == LAYOUTS["NHWC"]:
        return "NHWC", "(N, H, W, C)", "(R, S, C/groups, K)"
    return "NCHW", "(N, C, H, W)", "(K, C/groups, R, S)"


def geometry(x_shape, w_shape, stride, pad, dilation, groups, layout: int) -> ConvGeometry:
    """Check the shapes and options of one convolution and return its geometry.

    ``x_shape`` must be 4-D here (the API adds the batch axis to 3-D images).
    """
    lname, xdesc, wdesc = _layout_names(layout)
    if len(w_shape) != 4:
        raise ValueError(f"w must be a 4-D array {wdesc} for layout={lname!r}, "
                         f"got a {len(w_shape)}-D array of shape {tuple(w_shape)}")
    if layout == LAYOUTS["NHWC"]:
        N, H, W, C = x_shape
        R, S, Cg, K = w_shape
    else:
        N, C, H, W = x_shape
        K, Cg, R, S = w_shape
    groups = _int(groups, "groups", 1)
    check_channels(C, Cg, K, (R, S), groups, x_shape, w_shape, "x", xdesc, wdesc, lname)
    sh, sw = pair(stride, "stride", 1)
    dh, dw = pair(dilation, "dilation", 1)
    pt, pb, pl, pr = pad_sides(pad, (R, S), (sh, sw), (dh, dw), (H, W))
    P = out_size(H, R, sh, pt, pb, dh)
    Q = out_size(W, S, sw, pl, pr, dw)
    if P < 1 or Q < 1:
        raise ValueError(
            f"w's kernel {R}x{S} (dilation {dh}x{dw}: spans {dh * (R - 1) + 1}x{dw * (S - 1) + 1}) "
            f"is larger than the padded input {H + pt + pb}x{W + pl + pr} "
            f"(x spatial {H}x{W}, pad {(pt, pb, pl, pr)}): the output would be {P}x{Q}")
    return ConvGeometry(N=N, C=C, H=H, W=W, K=K, R=R, S=S, P=P, Q=Q, groups=groups,
                        stride_h=sh, stride_w=sw, dil_h=dh, dil_w=dw,
                        pad_top=pt, pad_bottom=pb, pad_left=pl, pad_right=pr, layout=layout)


def _transposed_names(layout: int) -> tuple[str, str, str]:
    if layout == LAYOUTS["NHWC"]:
        return "NHWC", "(N, H, W, C_in)", "(R, S, C_out/groups, C_in)"
    return "NCHW", "(N, C_in, H, W)", "(C_in, C_out/groups, R, S)"


def transposed_pad(pad, pair_form: str):
    """Refuse conv2d's pad strings for a transposed convolution (see
    ``fastconv._transpose``); ``pair_form`` names the other forms in the message."""
    if isinstance(pad, str):
        raise ValueError(
            f"pad of a transposed convolution must be {pair_form}, got {pad!r}: the strings "
            f"{', '.join(repr(m) for m in PAD_MODES)} name a convolution's output size and "
            "are not accepted here ('valid' is pad=0)")


def check_output_padding(output_padding: tuple, stride: tuple, dilation: tuple) -> None:
    """PyTorch's rule: on each axis, output_padding < stride or output_padding < dilation
    (larger ones would add rows that no input pixel reaches and no convolution has)."""
    if any(o >= s and o >= d for o, s, d in zip(output_padding, stride, dilation)):
        one = len(output_padding) == 1
        show = (lambda t: t[0]) if one else (lambda t: t)
        raise ValueError(f"output_padding must be smaller than stride or dilation on each "
                         f"axis (as in PyTorch), got output_padding {show(output_padding)} "
                         f"with stride {show(stride)} and dilation {show(dilation)}")


def transposed_geometry(x_shape, w_shape, stride, pad, output_padding, dilation, groups,
                        layout: int) -> ConvGeometry:
    """Check one transposed convolution and return the geometry of the convolution whose
    input gradient it is: that convolution's input is the transposed one's output
    (C_out channels, Ho x Wo), its output is the transposed one's input, and its filters
    are ``w`` as given ((C_in, C_out/groups, R, S) is OIHW with K = C_in, C = C_out).

    ``output_padding`` adds rows and columns at the bottom and right of that input; the
    convolution's bottom and right pads are what makes its output H x W again (lowered
    by output_padding - stride + 1 where output_padding reaches the stride, possibly
    below 0: see ``ConvGeometry``). ``x_shape`` must be 4-D here.
    """
    lname, xdesc, wdesc = _transposed_names(layout)
    if len(w_shape) != 4:
        raise ValueError(f"w must be a 4-D array {wdesc} for layout={lname!r}, "
                         f"got a {len(w_shape)}-D array of shape {tuple(w_shape)}")
    if layout == LAYOUTS["NHWC"]:
        N, H, W, C_in = x_shape
        R, S, Cgo, Cw = w_shape
    else:
        N, C_in, H, W = x_shape
        Cw, Cgo, R, S = w_shape
    groups = _int(groups, "groups", 1)
    check_transposed_channels(C_in, Cw, Cgo, (R, S), groups, x_shape, w_shape, "x", xdesc,
                              wdesc, lname)
    sh, sw = pair(stride, "stride", 1)
    dh, dw = pair(dilation, "dilation", 1)
    oh, ow = pair(output_padding, "output_padding", 0)
    check_output_padding((oh, ow), (sh, sw), (dh, dw))
    transposed_pad(pad, "an int, a pair (h, w) or ((top, bottom), (left, right))")
    pt, pb, pl, pr = pad_sides(pad, (R, S), (sh, sw), (dh, dw), (H, W))
    Ho = transposed_out_size(H, R, sh, pt, pb, dh, oh)
    Wo = transposed_out_size(W, S, sw, pl, pr, dw, ow)
    if Ho < 1 or Wo < 1:
        raise ValueError(
            f"pad {(pt, pb, pl, pr)} crops more than the transposed convolution's output of "
            f"x spatial {H}x{W} has (kernel {R}x{S}, stride {(sh, sw)}, dilation {(dh, dw)}, "
            f"output_padding {(oh, ow)}): the output would be {Ho}x{Wo}")
    return ConvGeometry(N=N, C=Cgo * groups, H=Ho, W=Wo, K=C_in, R=R, S=S, P=H, Q=W,
                        groups=groups, stride_h=sh, stride_w=sw, dil_h=dh, dil_w=dw,
                        pad_top=pt, pad_bottom=pb + min(0, sh - 1 - oh),
                        pad_left=pl, pad_right=pr + min(0, sw - 1 - ow), layout=layout)


def check_transposed_channels(C_in: int, Cw: int, Cgo: int, taps: tuple, groups: int,
                              x_shape, w_shape, x_name: str, xdesc: str, wdesc: str,
                              lname: str) -> None:
    """Depth and group checks of a transposed convolution (2-D and 1-D): w holds, for
    each of x's C_in channels, C_out/groups output channels' taps."""
    if C_in < 1 or Cgo < 1 or min(taps) < 1:
        raise ValueError(f"{x_name} {xdesc} and w {wdesc} need at least one channel and "
                         f"tap; got {x_name} shape {tuple(x_shape)} and w shape "
                         f"{tuple(w_shape)}")
    if Cw != C_in:
        raise ValueError(f"w's input-channel dimension must be {x_name}'s channels C_in = "
                         f"{C_in} ({lname}: w is {wdesc}), got {Cw} ({x_name} shape "
                         f"{tuple(x_shape)}, w shape {tuple(w_shape)})")
    if C_in % groups:
        raise ValueError(f"groups must divide the input channels C_in={C_in}, got "
                         f"groups={groups}")


def check_channels(C: int, Cg: int, K: int, taps: tuple, groups: int, x_shape, w_shape,
                   x_name: str, xdesc: str, wdesc: str, lname: str) -> None:
    """Depth and group checks shared by conv2d and conv1d: each filter spans C/groups."""
    if C < 1 or Cg < 1 or K < 1 or min(taps) < 1:
        raise ValueError(f"{x_name} {xdesc} and w {wdesc} need at least one channel, filter "
                         f"and tap; got {x_name} shape {tuple(x_shape)} and w shape "
                         f"{tuple(w_shape)}")
    if C % groups:
        raise ValueError(f"groups must divide the input channels C={C}, got groups={groups}")
    if K % groups:
        raise ValueError(f"groups must divide the filters K={K}, got groups={groups}")
    if Cg * groups != C:
        raise ValueError(f"w's input-channel dimension must be C/groups = {C}/{groups} = "
                         f"{C // groups} ({lname}: w is {wdesc}), got {Cg} "
                         f"({x_name} shape {tuple(x_shape)}, w shape {tuple(w_shape)})")


def batched(x: np.ndarray, name: str, layout: int) -> tuple[np.ndarray, bool]:
    """Return a 4-D view of ``x`` and whether a batch axis was added to a 3-D image."""
    lname, xdesc, _ = _layout_names(layout)
    if x.ndim == 4:
        return x, False
    if x.ndim == 3:
        return x[None], True
    raise ValueError(f"{name} must be a 4-D array {xdesc} or a 3-D image (no batch axis) for "
                     f"layout={lname!r}, got a {x.ndim}-D array of shape {x.shape}")


def check_grad_y(shape, y_shape, unbatched: bool) -> None:
    """``grad_y`` has the forward output's shape ``y_shape``, less its batch axis when the
    input came without one."""
    expected = tuple(y_shape[1:]) if unbatched else tuple(y_shape)
    if tuple(shape) != expected:
        raise ValueError(f"grad_y must have the forward output's shape {expected}, "
                         f"got {tuple(shape)}")


def check_bias(bias: np.ndarray, K: int, channels: str = "K") -> None:
    """``bias`` holds one value for each of the ``K`` output channels (named ``channels``
    in the message: a transposed convolution's are C_out)."""
    if bias.shape != (K,):
        raise ValueError(f"bias must have shape ({channels},) = ({K},), got shape {bias.shape}")
