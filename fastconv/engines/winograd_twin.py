"""The Winograd engine's slow twin: F(m x m, 3 x 3) in plain NumPy, the transforms
applied with ``einsum`` exactly as they are written on paper.

For an alpha x alpha input tile d (alpha = m + 2) and a 3 x 3 filter g:

    Y (m x m) = AT [ (G g GT) * (BT d B) ] A      (* elementwise, summed over channels)

Tiles start every m rows and columns of the padded input; the last row and column of
tiles may run past the output, whose extra values are dropped, and past the padded
input, which reads as zeros. grad_input at stride 1 is the same correlation of grad_y,
padded by R - 1 - pad (negative: cropped), with the filters flipped and their in and
out channels swapped. The matrices come from ``fastconv._winograd_mats``. Works in
NCHW/OIHW; NHWC/HWIO is transposed in and out, as in ``engines.reference``.

A strided layer whose stride phases are 3 x 3 windows (``fastconv._phases``) is, here,
literally the sum over its phases (a, b) of the stride-1 correlation of the input's
sub-grid x[..., a::s_h, b::s_w] with that phase's window of taps; its input gradient
writes each sub-grid from the stride-1 gradient of its own correlation.
"""
from __future__ import annotations

import numpy as np

from .. import _phases
from .._geometry import ConvGeometry
from .._winograd_mats import transforms
from . import reference


def correlate(x, w, pads, m: int = 4):
    """Valid correlation of x (N, C, H, W) padded by pads = (top, bottom, left, right)
    (a negative pad crops) with w (K, C, 3, 3), one group, through F(m x m, 3 x 3)."""
    AT, G, BT = transforms(m, np.float64)
    alpha = m + 2
    top, bottom, left, right = pads
    N, C, H, W = x.shape
    K = w.shape[0]
    P, Q = H + top + bottom - 2, W + left + right - 2
    tp, tq = -(-P // m), -(-Q // m)  # tiles down and across
    # Padded input covering every tile: rows -top .. tp*m + 2 - top of x.
    Hp, Wp = tp * m + 2, tq * m + 2
    xp = np.zeros((N, C, Hp, Wp))
    r0, r1 = max(0, -top), min(H, Hp - top)
    c0, c1 = max(0, -left), min(W, Wp - left)
    if r1 > r0 and c1 > c0:
        xp[:, :, r0 + top:r1 + top, c0 + left:c1 + left] = x[:, :, r0:r1, c0:c1]
    # d[n, c, i, j, a, b] = xp[n, c, i*m + a, j*m + b]: every tile, overlapping by 2.
    d = np.lib.stride_tricks.sliding_window_view(xp, (alpha, alpha), axis=(2, 3))
    d = d[:, :, ::m, ::m]
    V = np.einsum("ai,ncxyij,bj->ncxyab", BT, d, BT)  # input tiles transformed
    U = np.einsum("ai,kcij,bj->kcab", G, w.astype(np.float64), G)  # filters transformed
    M = np.einsum("kcab,ncxyab->nkxyab", U, V)  # the products, summed over channels
    Y = np.einsum("ia,nkxyab,jb->nkxiyj", AT, M, AT)  # (N, K, tp, m, tq, m)
    return Y.reshape(N, K, tp * m, tq * m)[:, :, :P, :Q]


def _phases_of(w, g: ConvGeometry):
    """[((a, b), the phase's (K, C/groups, 3, 3) window filters)] and the phases'
    stride-1 pads (top, bottom, left, right) onto P x Q, from OIHW filters w."""
    p = _phases.plan(g)
    wp = _phases.pad_filters(w, p, False)
    Hs, Ws = g.H // g.stride_h, g.W // g.stride_w
    pads = (p.rows.th, g.P + 2 - Hs - p.rows.th, p.cols.th, g.Q + 2 - Ws - p.cols.th)
    out = []
    for a in range(g.stride_h):
        for b in range(g.stride_w):
            rows = [p.rows.rb + a + g.stride_h * u for u in range(3)]
            cols = [p.cols.rb + b + g.stride_w * u for u in range(3)]
            out.append(((a, b), wp[:, :, rows][:, :, :, cols]))
    return out, pads


def forward(x, w, bias, g: ConvGeometry, m: int = 4):
    x, w = reference._to_nchw(x, g), reference._w_to_oihw(w, g)
    if g.stride_h == g.stride_w == 1:
        pads = (g.pad_top, g.pad_bottom, g.pad_left, g.pad_right)
        y = np.concatenate([correlate(x[:, cs], w[ks], pads, m)
                            for cs, ks in reference._groups(g)], axis=1)
    else:
        phases, pads = _phases_of(w, g)
        y = sum(np.concatenate([correlate(x[:, cs, a::g.stride_h, b::g.stride_w], wab[ks],
                                          pads, m)
                                for cs, ks in reference._groups(g)], axis=1)
                for (a, b), wab in phases)
    if bias is not None:
        y += bias[None, :, None, None]
    return reference._from_nchw(y.astype(x.dtype), g)


def grad_input(grad_y, w, g: ConvGeometry, m: int = 4):
    gy, w = reference._to_nchw(grad_y, g), reference._w_to_oihw(w, g)
    if g.stride_h > 1 or g.stride_w > 1:
        phases, (t, b_, l, r) = _phases_of(w, g)
        gx = np.zeros((g.N, g.C, g.H, g.W), np.float64)
        for (a, b), wab in phases:
            for cs, ks in reference._groups(g):
                wt = wab[ks, :, ::-1, ::-1].transpose(1, 0, 2, 3)
                gx[:, cs, a::g.stride_h, b::g.stride_w] = correlate(
                    gy[:, ks], wt, (2 - t, 2 - b_, 2 - l, 2 - r), m)
        return reference._from_nchw(gx.astype(grad_y.dtype), g)
    pads = (g.R - 1 - g.pad_top, g.R - 1 - g.pad_bottom,
            g.S - 1 - g.pad_left, g.S - 1 - g.pad_right)
    # Filters flipped in both taps, in and out channels swapped: (Cg, Kg, 3, 3).
    wt = [w[ks, :, ::-1, ::-1].transpose(1, 0, 2, 3) for _, ks in reference._groups(g)]
    gx = np.concatenate([correlate(gy[:, ks], wt[i], pads, m)
                         for i, (_, ks) in enumerate(reference._groups(g))], axis=1)
    return reference._from_nchw(gx.astype(grad_y.dtype), g)
