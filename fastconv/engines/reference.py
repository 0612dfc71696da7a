"""The slow twin: plain NumPy convolution, short enough to check by eye.

Works in NCHW/OIHW (NHWC/HWIO inputs are transposed in and out). The padded input is
built explicitly with ``np.pad``; each filter tap (r, s) then sees a strided window of
it, and one ``einsum`` per tap and group does the channel sum:

    y[n, k, p, q] = sum_{c, r, s} xp[n, c, p*sh + r*dh, q*sw + s*dw] * w[k, c, r, s]

Backward follows from the same windows: grad_input scatters ``grad_y`` back through
each window, grad_weight correlates ``grad_y`` with each window (summed over every
image and output position: the weights are tied), grad_bias sums ``grad_y``.
"""
from __future__ import annotations

import numpy as np

from .._geometry import ConvGeometry


def _to_nchw(a, g: ConvGeometry):
    return a.transpose(0, 3, 1, 2) if g.nhwc else a  # NHWC -> NCHW


def _from_nchw(a, g: ConvGeometry):
    return np.ascontiguousarray(a.transpose(0, 2, 3, 1) if g.nhwc else a)  # NCHW -> NHWC


def _w_to_oihw(w, g: ConvGeometry):
    return w.transpose(3, 2, 0, 1) if g.nhwc else w  # HWIO -> OIHW


def _w_from_oihw(w, g: ConvGeometry):
    return np.ascontiguousarray(w.transpose(2, 3, 1, 0) if g.nhwc else w)  # OIHW -> HWIO


def _after(g: ConvGeometry) -> tuple[int, int]:
    """The bottom and right pads, at least 0. A transposed convolution whose
    output_padding reaches its stride (fastconv/_transpose.py) has a negative one: the
    last rows or columns of the input are ones no window reaches, and need no padding."""
    return max(g.pad_bottom, 0), max(g.pad_right, 0)


def _pad(x, g: ConvGeometry):
    bottom, right = _after(g)
    return np.pad(x, ((0, 0), (0, 0), (g.pad_top, bottom), (g.pad_left, right)))


def _window(g: ConvGeometry, r: int, s: int):
    """Rows and columns of the padded input that filter tap (r, s) meets, one per output."""
    h0, w0 = r * g.dil_h, s * g.dil_w
    return (slice(h0, h0 + (g.P - 1) * g.stride_h + 1, g.stride_h),
            slice(w0, w0 + (g.Q - 1) * g.stride_w + 1, g.stride_w))


def _groups(g: ConvGeometry):
    """(input-channel slice, filter slice) for each group."""
    return [(slice(i * g.Cg, (i + 1) * g.Cg), slice(i * g.Kg, (i + 1) * g.Kg))
            for i in range(g.groups)]


def forward(x, w, bias, g: ConvGeometry, packs=None):  # packs: unused (no packing)
    xp = _pad(_to_nchw(x, g), g)
    w = _w_to_oihw(w, g)
    y = np.zeros((g.N, g.K, g.P, g.Q), dtype=x.dtype)
    for cs, ks in _groups(g):
        for r in range(g.R):
            for s in range(g.S):
                rows, cols = _window(g, r, s)
                y[:, ks] += np.einsum("nchw,kc->nkhw", xp[:, cs, rows, cols], w[ks, :, r, s])
    if bias is not None:
        y += bias[None, :, None, None]
    return _from_nchw(y, g)


def grad_input(grad_y, w, g: ConvGeometry, packs=None):  # packs: unused
    gy = _to_nchw(grad_y, g)
    w = _w_to_oihw(w, g)
    bottom, right = _after(g)
    gxp = np.zeros((g.N, g.C, g.H + g.pad_top + bottom, g.W + g.pad_left + right),
                   dtype=grad_y.dtype)
    for cs, ks in _groups(g):
        for r in range(g.R):
            for s in range(g.S):
                rows, cols = _window(g, r, s)
                gxp[:, cs, rows, cols] += np.einsum("nkpq,kc->ncpq", gy[:, ks], w[ks, :, r, s])
    gx = gxp[:, :, g.pad_top:g.pad_top + g.H, g.pad_left:g.pad_left + g.W]  # drop the padding
    return _from_nchw(gx, g)


def grad_weight(grad_y, x, g: ConvGeometry):
    gy = _to_nchw(grad_y, g)
    xp = _pad(_to_nchw(x, g), g)
    gw = np.zeros((g.K, g.Cg, g.R, g.S), dtype=x.dtype)
    for cs, ks in _groups(g):
        for r in range(g.R):
            for s in range(g.S):
                rows, cols = _window(g, r, s)
                gw[ks, :, r, s] = np.einsum("nkpq,ncpq->kc", gy[:, ks], xp[:, cs, rows, cols])
    return _w_from_oihw(gw, g)


def grad_bias(grad_y, g: ConvGeometry):
    return np.ascontiguousarray(_to_nchw(grad_y, g).sum(axis=(0, 2, 3)))
