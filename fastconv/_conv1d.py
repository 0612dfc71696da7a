"""1-D convolution on the 2-D engines, and ``numpy.correlate``/``numpy.convolve`` look-alikes.

A signal of length L is an image of height 1: ``(N, C, L)`` is viewed as
``(N, C, 1, L)`` and ``(N, L, C)`` as ``(N, 1, L, C)``, with the weights viewed the
same way. Putting L on the W axis rather than H keeps the long axis the one every
engine walks innermost, and both views are free (a unit axis adds no copy). The
engines, the dispatcher and the dtype rules are those of :func:`fastconv.conv2d`;
only the argument checking is redone here, so that errors speak of L, R and
(left, right) rather than of a height-1 image.
"""
from __future__ import annotations

import operator

import numpy as np

from . import _validate as v
from ._api import ConvGrads, _conv2d, conv2d, conv2d_backward
from ._geometry import out_size

# The 1-D layout names and the 2-D layouts they run on.
LAYOUTS_1D = {"NCL": "NCHW", "NLC": "NHWC"}
_DESC = {"NCL": ("(N, C, L)", "(C, L)", "(K, C/groups, R)"),
         "NLC": ("(N, L, C)", "(L, C)", "(R, C/groups, K)")}


def _int1(value, name: str, minimum: int) -> int:
    """An int (or a 1-tuple holding one), range-checked as conv2d checks its ints."""
    if isinstance(value, (tuple, list)) and len(value) == 1:
        value = value[0]
    if isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be an int, got bool {value!r}")
    try:
        operator.index(value)
    except TypeError:
        raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}") from None
    return v._int(value, name, minimum)


def pad_sides_1d(pad, R: int, stride: int, dilation: int, L: int) -> tuple[int, int]:
    """Normalise a conv1d ``pad`` to (left, right).

    Accepted: an int; a pair (left, right); "valid"; "same" (output ceil(L / stride),
    the extra sample after, as TensorFlow does); "full" ((R - 1) * dilation each side).
    """
    if isinstance(pad, str):
        if pad not in v.PAD_MODES:
            raise ValueError(f"pad must be an int, a pair (left, right) or one of "
                             f"{', '.join(repr(m) for m in v.PAD_MODES)}; got {pad!r}")
        _, _, left, right = v.pad_sides(pad, (1, R), (1, stride), (1, dilation), (1, L))
        return left, right
    if isinstance(pad, np.ndarray) and pad.ndim == 1:
        pad = pad.tolist()
    if isinstance(pad, (tuple, list)):
        if len(pad) != 2:
            raise ValueError(f"pad must be an int or a pair (left, right), got {pad!r}")
        return _int1(pad[0], "pad", 0), _int1(pad[1], "pad", 0)
    p = _int1(pad, "pad", 0)
    return p, p


def signal_arrays(x, w, layout: str, descs: tuple, x_name: str = "x"):
    """(x as 3-D, w, whether x came without its batch axis): the arrays of a 1-D call,
    checked; ``descs`` = (x's shape, one signal's shape, w's shape) in words, for the
    messages."""
    xdesc, x1desc, wdesc = descs
    x = v.as_array(x, x_name)
    w = v.as_array(w, "w")
    if x.ndim not in (2, 3):
        raise ValueError(f"{x_name} must be a 3-D array {xdesc} or a 2-D signal {x1desc} "
                         f"(no batch axis) for layout={layout!r}, got a {x.ndim}-D "
                         f"array of shape {x.shape}")
    if w.ndim != 3:
        raise ValueError(f"w must be a 3-D array {wdesc} for layout={layout!r}, "
                         f"got a {w.ndim}-D array of shape {w.shape}")
    unbatched = x.ndim == 2
    return (x[None] if unbatched else x), w, unbatched


class _Problem1d:
    """One conv1d call, checked in 1-D terms and mapped onto a conv2d call."""

    def __init__(self, x, w, stride, pad, dilation, groups, layout, x_name="x"):
        self.layout = v._choice(layout, "layout", tuple(LAYOUTS_1D))
        nlc = self.layout == "NLC"
        xdesc, _, wdesc = _DESC[self.layout]
        x3, w, self.unbatched = signal_arrays(x, w, self.layout, _DESC[self.layout], x_name)
        N, L, C = x3.shape if nlc else (x3.shape[0], x3.shape[2], x3.shape[1])
        R, Cg, K = w.shape if nlc else w.shape[::-1]
        stride = _int1(stride, "stride", 1)
        dilation = _int1(dilation, "dilation", 1)
        groups = v._int(groups, "groups", 1)
        v.check_channels(C, Cg, K, (R,), groups, x3.shape, w.shape, x_name, xdesc, wdesc,
                         self.layout)
        left, right = pad_sides_1d(pad, R, stride, dilation, L)
        Q = out_size(L, R, stride, left, right, dilation)
        if Q < 1:
            raise ValueError(f"w's kernel of {R} taps (dilation {dilation}: spans "
                             f"{dilation * (R - 1) + 1}) is longer than the padded input "
                             f"{L + left + right} ({x_name} length {L}, pad {(left, right)}): "
                             f"the output would have length {Q}")
        self.x_shape, self.w_shape = x3.shape, w.shape
        self.y_shape = (N, Q, K) if nlc else (N, K, Q)
        # The unit axis is H, so L lies along W: x (N,C,L) -> (N,C,1,L), (N,L,C) -> (N,1,L,C);
        # w (K,Cg,R) -> (K,Cg,1,R), (R,Cg,K) -> (1,R,Cg,K).
        self.x4 = x3[:, None] if nlc else x3[:, :, None]
        self.w4 = w[None] if nlc else w[:, :, None]
        self.opts = dict(stride=(1, stride), pad=((0, 0), (left, right)), dilation=(1, dilation),
                         groups=groups, layout=LAYOUTS_1D[self.layout])

    def to_4d(self, a: np.ndarray) -> np.ndarray:
        """An output-shaped 3-D array (y or grad_y) as the 4-D array conv2d sees."""
        return a[:, None] if self.layout == "NLC" else a[:, :, None]

    def unbatch(self, a: np.ndarray) -> np.ndarray:
        return a[0] if self.unbatched else a


def conv1d(x, w, stride=1, pad=0, *, bias=None, dilation=1, groups=1, layout="NCL",
           flip=False, backend="auto"):
    """1-D convolution layer, forward pass, computed by the conv2d engines.

    Parameters
    ----------
    x : array_like
        Input, ``(N, C, L)`` for ``layout="NCL"`` or ``(N, L, C)`` for "NLC". A 2-D
        input is one signal without the batch axis; the output is then 2-D too.
    w : array_like
        Filters, ``(K, C/groups, R)`` for NCL (PyTorch's Conv1d) or ``(R, C/groups, K)``
        for NLC (TensorFlow's Conv1D).
    stride, dilation : int
    pad : int, (left, right), "valid", "same" or "full"
        "same" gives an output of ceil(L / stride) with the extra sample after, as
        TensorFlow does (numpy's "same" centres differently: see :func:`correlate`);
        "full" pads (R - 1) * dilation on each side.
    bias, groups, flip, backend
        As for :func:`fastconv.conv2d`. ``flip=True`` reverses the kernel: true
        convolution, ``numpy.convolve``'s convention.

    Returns
    -------
    y : ndarray
        ``(N, K, Q)`` or ``(N, Q, K)``, fresh and C-contiguous, of the promoted dtype.
    """
    return _conv1d(x, w, stride, pad, bias, dilation, groups, layout, flip, backend, None)


def _conv1d(x, w, stride, pad, bias, dilation, groups, layout, flip, backend, packs):
    """conv1d with ``packs``, as ``_api._conv2d``: w4 is a view of the caller's w."""
    pr = _Problem1d(x, w, stride, pad, dilation, groups, layout)
    y = _conv2d(pr.x4, pr.w4, pr.opts["stride"], pr.opts["pad"], bias, pr.opts["dilation"],
                pr.opts["groups"], pr.opts["layout"], flip, backend, packs)
    return pr.unbatch(y.reshape(pr.y_shape))


def conv1d_backward(grad_y, x, w, stride=1, pad=0, *, dilation=1, groups=1, layout="NCL",
                    flip=False, backend="auto", wrt=("x", "w", "b")):
    """Gradients of :func:`conv1d` with respect to its input, weights and bias.

    Returns ConvGrads(x, w, b) with x's shape, w's shape and (K,); a gradient not named
    in ``wrt`` is None. The weight gradient is summed over every output position.
    """
    pr = _Problem1d(x, w, stride, pad, dilation, groups, layout)
    gy = v.as_array(grad_y, "grad_y")
    v.check_grad_y(gy.shape, pr.y_shape, pr.unbatched)
    gy3 = gy[None] if pr.unbatched else gy
    g = conv2d_backward(pr.to_4d(gy3), pr.x4, pr.w4, flip=flip, backend=backend, wrt=wrt,
                        **pr.opts)
    gx = None if g.x is None else pr.unbatch(g.x.reshape(pr.x_shape))
    gw = None if g.w is None else g.w.reshape(pr.w_shape)
    return ConvGrads(gx, gw, g.b)


def _signal(a, name: str) -> np.ndarray:
    a = v.as_array(a, name)
    if a.ndim > 1:
        raise ValueError(f"{name} must be a 1-D sequence, got a {a.ndim}-D array of shape "
                         f"{a.shape}")
    a = a.reshape(-1)
    if a.size == 0:
        raise ValueError(f"{name} cannot be empty")
    return a


def _numpy_style(a, v_, mode, flip: bool, backend) -> np.ndarray:
    """numpy's correlate (flip=False) or convolve (flip=True) on conv1d.

    numpy slides the shorter sequence over the longer one, padding the longer by
    (n - 1, n - 1) for "full", nothing for "valid", and (n // 2, n - 1 - n // 2) for
    "same" (n the shorter length; the extra sample goes before, unlike conv1d's
    TensorFlow-style "same"). When ``len(v) > len(a)``, correlate swaps the two and
    reverses its output; convolve, being commutative, just swaps.
    """
    v._choice(mode, "mode", v.PAD_MODES)
    a, b = _signal(a, "a"), _signal(v_, "v")
    swapped = len(b) > len(a)
    long, short = (b, a) if swapped else (a, b)
    n = len(short)
    pad = {"valid": (0, 0), "same": (n // 2, n - 1 - n // 2), "full": (n - 1, n - 1)}[mode]
    out = conv1d(long[None], short[None, None], 1, pad, flip=flip, backend=backend)[0]
    return np.ascontiguousarray(out[::-1]) if swapped and not flip else out


def correlate(a, v, mode="valid", *, backend="auto"):
    """Cross-correlation of two 1-D sequences, exactly as ``numpy.correlate`` aligns it.

    ``c[k] = sum_n a[n + k] * v[n]``; ``mode`` is "valid" (numpy's default), "same"
    (length ``max(len(a), len(v))``, centred as numpy centres it) or "full". As in
    numpy, ``len(v) > len(a)`` gives ``correlate(v, a, mode)[::-1]``. A convenience
    around :func:`conv1d` with one channel; the result is float (ints become float64),
    and complex input is a TypeError.
    """
    return _numpy_style(a, v, mode, False, backend)


def convolve(a, v, mode="full", *, backend="auto"):
    """Discrete linear convolution of two 1-D sequences, as ``numpy.convolve``.

    ``mode`` is "full" (numpy's default), "same" or "valid", with numpy's output
    lengths and alignment; ``convolve(a, v) == convolve(v, a)``. A convenience around
    :func:`conv1d` with ``flip=True``.
    """
    return _numpy_style(a, v, mode, True, backend)
