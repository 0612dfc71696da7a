"""Convolution as a matrix with tied weights, and dense layers as convolutions.

A convolution of one image is a linear map, ``y.ravel() == M @ x.ravel()``. ``M`` is
mostly zeros, and each weight appears once in every row (output position) whose
window uses it: the weights are tied. :func:`conv_matrix` builds that ``M``.

A dense layer on a flattened ``(C, H, W)`` volume is a convolution whose kernel covers
the whole volume (VGG's fc6 on 7x7x512, LeNet-5's C5); on a larger input the same
weights slide and give a map of dense-layer outputs. :func:`linear_to_conv` and
:func:`conv_to_linear` convert between the two.
"""
from __future__ import annotations

import operator

import numpy as np

from . import _validate as v
from ._api import _check_memory, _flip
from ._geometry import LAYOUT_NHWC


def _image_shape(input_shape, layout: int) -> tuple[int, int, int]:
    """One image's shape, ``(C, H, W)`` or ``(H, W, C)``, as three positive ints."""
    desc = "(H, W, C) for layout='NHWC'" if layout == LAYOUT_NHWC else "(C, H, W) for layout='NCHW'"
    try:
        shape = tuple(operator.index(n) for n in input_shape)
    except TypeError:
        raise TypeError(f"input_shape must be a tuple of three ints {desc}, "
                        f"got {input_shape!r}") from None
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(f"input_shape must be three positive ints {desc}, got {input_shape!r}")
    return shape


def conv_matrix(w, input_shape, stride=1, pad=0, *, dilation=1, groups=1, layout="NCHW",
                flip=False, sparse=True):
    """The matrix ``M`` of the convolution of one image: ``conv2d(x[None], w, ...).ravel()
    == M @ x.ravel()`` for every ``x`` of shape ``input_shape``.

    Parameters
    ----------
    w : array_like
        Filters, as for :func:`fastconv.conv2d` in the given layout.
    input_shape : (C, H, W), or (H, W, C) for "NHWC"
    stride, pad, dilation, groups, layout, flip
        As for :func:`fastconv.conv2d`.
    sparse : bool
        True (default): a ``scipy.sparse.csr_array``; False: a dense ndarray.

    Returns
    -------
    M : (K*P*Q, C*H*W), in w's (promoted) dtype
        Rows follow the output's layout, columns the input's. Row ``i`` holds the
        weights that output ``i`` multiplies; every weight appears once in each row
        whose window it touches inside the image (padding contributes no entry), and
        all other entries are zero. Entries are stored even where a weight is 0.
        So ``grad_input == M.T @ grad_y``, and the weight gradient is the gradient of
        the dense matrix, ``outer(grad_y, x)``, summed over the entries tied to each
        weight.
    """
    code = v.layout_code(layout)
    flip = v.flag(flip, "flip")
    sparse = v.flag(sparse, "sparse")
    w = v.as_array(w, "w")
    shape = _image_shape(input_shape, code)
    g = v.geometry((1,) + shape, w.shape, stride, pad, dilation, groups, code)
    wf = np.ascontiguousarray(_flip(w, code) if flip else w).ravel()
    n_rows, n_cols = g.K * g.P * g.Q, g.C * g.H * g.W
    _check_memory((g.K, g.P, g.Q, g.Cg, g.R, g.S), np.int64, "conv_matrix's index arrays")
    if not sparse:
        _check_memory((n_rows, n_cols), w.dtype, "the dense conv_matrix")

    # One candidate entry per (filter, output position, tap): an open grid over the
    # six axes, broadcast once, with the taps that fall in the padding dropped.
    k, p, q, cg, r, s = np.ogrid[:g.K, :g.P, :g.Q, :g.Cg, :g.R, :g.S]
    h = p * g.stride_h - g.pad_top + r * g.dil_h           # input row of each tap
    col = q * g.stride_w - g.pad_left + s * g.dil_w         # input column of each tap
    c = (k // g.Kg) * g.Cg + cg                              # input channel, by group
    if g.nhwc:
        row_i = (p * g.Q + q) * g.K + k
        col_i = (h * g.W + col) * g.C + c
        w_i = ((r * g.S + s) * g.Cg + cg) * g.K + k
    else:
        row_i = (k * g.P + p) * g.Q + q
        col_i = (c * g.H + h) * g.W + col
        w_i = ((k * g.Cg + cg) * g.R + r) * g.S + s
    full = (g.K, g.P, g.Q, g.Cg, g.R, g.S)
    inside = np.broadcast_to((h >= 0) & (h < g.H) & (col >= 0) & (col < g.W), full)
    rows = np.broadcast_to(row_i, full)[inside]
    cols = np.broadcast_to(col_i, full)[inside]
    vals = wf[np.broadcast_to(w_i, full)[inside]]

    if not sparse:
        M = np.zeros((n_rows, n_cols), w.dtype)
        M[rows, cols] = vals  # no (row, col) repeats: the tap is fixed by the two positions
        return M
    import scipy.sparse

    return scipy.sparse.csr_array((vals, (rows, cols)), shape=(n_rows, n_cols))


def linear_to_conv(W, b, input_shape, *, layout="NCHW"):
    """A dense layer on a flattened image volume, as a convolution.

    ``W`` is ``(K, C*H*W)`` acting on ``x.ravel()`` for ``x`` of shape ``input_shape``
    (``(C, H, W)``, or ``(H, W, C)`` for "NHWC"); ``b`` is ``(K,)`` or None. Returns
    ``(w, b)``: filters ``(K, C, H, W)`` (``(H, W, C, K)`` for NHWC) with a kernel as
    large as the volume, and a copy of ``b``. ``conv2d(x, w, bias=b)`` is then
    ``(K, 1, 1)`` on that volume, and a map of dense-layer outputs, one per window, on
    a larger input. ``input_shape=(C, 1, 1)`` gives a 1x1 convolution.
    """
    code = v.layout_code(layout)
    W = v.as_array(W, "W")
    shape = _image_shape(input_shape, code)
    n = int(np.prod(shape))
    if W.ndim != 2 or W.shape[1] != n:
        raise ValueError(f"W must be a 2-D array (K, {n}) for input_shape {shape} ({n} inputs), "
                         f"got shape {W.shape}")
    K = W.shape[0]
    if b is not None:
        b = v.as_array(b, "b").copy()
        if b.shape != (K,):
            raise ValueError(f"b must have shape (K,) = ({K},), got shape {b.shape}")
    w = W.reshape((K,) + shape)
    if code == LAYOUT_NHWC:
        w = w.transpose(1, 2, 3, 0)  # (K, H, W, C) -> HWIO
    return np.array(w, order="C"), b


def conv_to_linear(w, b=None, *, layout="NCHW"):
    """The inverse of :func:`linear_to_conv`: ``(w, b) -> (W, b)``.

    ``w`` is ``(K, C, R, S)`` (``(R, S, C, K)`` for "NHWC"), an ungrouped filter bank;
    ``W`` is ``(K, C*R*S)``, the dense layer it computes on one ``(C, R, S)`` window
    (``(R, S, C)`` for NHWC), flattened in the layout's order.
    """
    code = v.layout_code(layout)
    w = v.as_array(w, "w")
    if w.ndim != 4:
        desc = "(R, S, C, K)" if code == LAYOUT_NHWC else "(K, C, R, S)"
        raise ValueError(f"w must be a 4-D array {desc} for layout={layout!r}, "
                         f"got a {w.ndim}-D array of shape {w.shape}")
    if code == LAYOUT_NHWC:
        w = w.transpose(3, 0, 1, 2)
    K = w.shape[0]
    if b is not None:
        b = v.as_array(b, "b").copy()
        if b.shape != (K,):
            raise ValueError(f"b must have shape (K,) = ({K},), got shape {b.shape}")
    return np.array(w.reshape(K, -1), order="C"), b
