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
"""
from __future__ import annotations

import numpy as np

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


def forward(x, w, bias, g: ConvGeometry, m: int = 4):
    x, w = reference._to_nchw(x, g), reference._w_to_oihw(w, g)
    pads = (g.pad_top, g.pad_bottom, g.pad_left, g.pad_right)
    y = np.concatenate([correlate(x[:, cs], w[ks], pads, m)
                        for cs, ks in reference._groups(g)], axis=1)
    if bias is not None:
        y += bias[None, :, None, None]
    return reference._from_nchw(y.astype(x.dtype), g)


def grad_input(grad_y, w, g: ConvGeometry, m: int = 4):
    gy, w = reference._to_nchw(grad_y, g), reference._w_to_oihw(w, g)
    pads = (g.R - 1 - g.pad_top, g.R - 1 - g.pad_bottom,
            g.S - 1 - g.pad_left, g.S - 1 - g.pad_right)
    # Filters flipped in both taps, in and out channels swapped: (Cg, Kg, 3, 3).
    wt = [w[ks, :, ::-1, ::-1].transpose(1, 0, 2, 3) for _, ks in reference._groups(g)]
    gx = np.concatenate([correlate(gy[:, ks], wt[i], pads, m)
                         for i, (_, ks) in enumerate(reference._groups(g))], axis=1)
    return reference._from_nchw(gx.astype(grad_y.dtype), g)
