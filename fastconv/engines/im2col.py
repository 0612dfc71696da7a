"""im2col engine: Numba im2col/col2im kernels around one BLAS matrix product per pass.

Caffe's three products, with the batch folded into the matrix so that each pass is a
single ``np.matmul`` (batched over groups only):

    forward      y      = W  · cols
    grad_weight  grad_w = dY · colsᵀ    (summed over every image: the weights are tied)
    grad_input   dcols  = Wᵀ · dY, then col2im adds the overlapping windows back up

Column layouts, chosen so that every group is a strided 2-D view BLAS reads in place:

    NCHW  cols (C*R*S, N*P*Q): row c*R*S + r*S + s, column n*P*Q + p*Q + q. Groups are
          the free reshape (G, Cg*R*S, N*P*Q). W · cols comes out (K, N*P*Q); one pass
          reorders it to (N, K, P, Q) and adds the bias on the way.
    NHWC  cols (N*P*Q, G, R*S*Cg): one row per output position, the reduction in
          (r, s, cg) order to match HWIO memory, so W · cols comes out (N*P*Q, K),
          which already is NHWC.

Pointwise convolutions (1x1, stride 1, unpadded) skip im2col: the input already is
the column matrix.

BLAS runs only outside the ``prange`` loops, so Numba's pool and BLAS's never nest.
Kernels take the first image ``n0`` and read the image count off the column buffer,
so a workspace cap can later chunk the batch without touching them.
"""
from __future__ import annotations

import numba
import numpy as np
from numba import njit, prange

from .._geometry import ConvGeometry
from .._threads import get_num_threads

# Off: results must match the reference engine. The one place to change it.
FASTMATH = False
_KERNEL = dict(parallel=True, nogil=True, cache=True, fastmath=FASTMATH)


def _set_threads() -> None:
    # Numba's thread count is per calling thread, so it is set again on every call.
    numba.set_num_threads(min(get_num_threads(), numba.config.NUMBA_NUM_THREADS))


def _taps(g: ConvGeometry):
    """The geometry ints every kernel takes after its arrays."""
    return (g.R, g.S, g.P, g.Q, g.stride_h, g.stride_w, g.dil_h, g.dil_w,
            g.pad_top, g.pad_left)


# ---------------------------------------------------------------------------------
# Kernels. Each prange step owns a disjoint block of its output, so nothing is
# shared between threads and the sums are added in the same order on every run.


@njit(nogil=True, cache=True)
def _valid_range(start, step, size, count):
    """[lo, hi): the t < count with 0 <= start + t*step < size; the rest falls in the padding.

    Computed once per tap so the inner loops copy without a bounds test.
    """
    lo = -(start // step)           # ceil(-start / step); // floors, as in Python
    hi = -((start - size) // step)  # ceil((size - start) / step)
    lo = min(max(lo, 0), count)
    hi = min(max(hi, lo), count)
    return lo, hi


@njit(**_KERNEL)
def _im2col_nchw(x, n0, cols, R, S, P, Q, sh, sw, dh, dw, pt, pl):
    """x[n0:n0+nb] (nb, C, H, W) -> cols (C*R*S, nb*P*Q)."""
    C, H, W = x.shape[1], x.shape[2], x.shape[3]
    PQ = P * Q
    nb = cols.shape[1] // PQ
    for i in prange(C * R * S * nb):  # one (row, image) block of P*Q per step
        row, j = i // nb, i % nb
        c, r, s = row // (R * S), (row // S) % R, row % S
        p_lo, p_hi = _valid_range(r * dh - pt, sh, H, P)
        q_lo, q_hi = _valid_range(s * dw - pl, sw, W, Q)
        out = cols[row, j * PQ:(j + 1) * PQ]
        out[:p_lo * Q] = 0
        for p in range(p_lo, p_hi):
            xrow = x[n0 + j, c, p * sh + r * dh - pt]
            o = p * Q
            out[o:o + q_lo] = 0
            for q in range(q_lo, q_hi):
                out[o + q] = xrow[q * sw + s * dw - pl]
            out[o + q_hi:o + Q] = 0
        out[p_hi * Q:] = 0


@njit(**_KERNEL)
def _col2im_nchw(dcols, n0, gx, R, S, P, Q, sh, sw, dh, dw, pt, pl):
    """dcols (C*R*S, nb*P*Q) -> gx[n0:n0+nb] (nb, C, H, W), overlapping windows summed.

    Each step gathers everything that lands on one input row gx[n, c, h], so no two
    threads ever add into the same element.
    """
    C, H, W = gx.shape[1], gx.shape[2], gx.shape[3]
    PQ = P * Q
    nb = dcols.shape[1] // PQ
    for i in prange(nb * C * H):
        j, c, h = i // (C * H), (i // H) % C, i % H
        out = gx[n0 + j, c, h]
        out[:] = 0
        for r in range(R):
            t = h + pt - r * dh  # p * sh for the output row p whose tap r reads row h
            if t < 0 or t % sh != 0 or t // sh >= P:
                continue
            p = t // sh
            for s in range(S):
                q_lo, q_hi = _valid_range(s * dw - pl, sw, W, Q)
                src = dcols[(c * R + r) * S + s, j * PQ + p * Q:j * PQ + (p + 1) * Q]
                for q in range(q_lo, q_hi):
                    out[q * sw + s * dw - pl] += src[q]


@njit(**_KERNEL)
def _im2col_nhwc(x, n0, cols, R, S, P, Q, sh, sw, dh, dw, pt, pl):
    """x[n0:n0+nb] (nb, H, W, C) -> cols (nb*P*Q, G, R*S*Cg)."""
    H, W, C = x.shape[1], x.shape[2], x.shape[3]
    G = cols.shape[1]
    Cg = C // G
    SCg = S * Cg
    nb = cols.shape[0] // (P * Q)
    for i in prange(nb * P):  # one output row (n, p): Q consecutive rows of cols
        j, p = i // P, i % P
        r_lo, r_hi = _valid_range(p * sh - pt, dh, H, R)
        for q in range(Q):
            s_lo, s_hi = _valid_range(q * sw - pl, dw, W, S)
            for g in range(G):
                out = cols[i * Q + q, g]  # (R*S*Cg,)
                out[:r_lo * SCg] = 0
                for r in range(r_lo, r_hi):
                    xrow = x[n0 + j, p * sh + r * dh - pt]  # (W, C)
                    o = r * SCg
                    out[o:o + s_lo * Cg] = 0
                    for s in range(s_lo, s_hi):
                        w = q * sw + s * dw - pl
                        for cg in range(Cg):
                            out[o + s * Cg + cg] = xrow[w, g * Cg + cg]
                    out[o + s_hi * Cg:o + SCg] = 0
                out[r_hi * SCg:] = 0


@njit(**_KERNEL)
def _col2im_nhwc(dcols, n0, gx, R, S, P, Q, sh, sw, dh, dw, pt, pl):
    """dcols (nb*P*Q, G, R*S*Cg) -> gx[n0:n0+nb] (nb, H, W, C), overlapping windows summed.

    Each step gathers everything that lands on one input row gx[n, h] (all W*C of it),
    so no two threads ever add into the same element.
    """
    H, W, C = gx.shape[1], gx.shape[2], gx.shape[3]
    G = dcols.shape[1]
    Cg = C // G
    nb = dcols.shape[0] // (P * Q)
    for i in prange(nb * H):
        j, h = i // H, i % H
        out = gx[n0 + j, h]  # (W, C)
        out[:, :] = 0
        for r in range(R):
            t = h + pt - r * dh  # p * sh for the output row p whose tap r reads row h
            if t < 0 or t % sh != 0 or t // sh >= P:
                continue
            p = t // sh
            for q in range(Q):
                s_lo, s_hi = _valid_range(q * sw - pl, dw, W, S)
                src = dcols[(j * P + p) * Q + q]  # (G, R*S*Cg)
                for s in range(s_lo, s_hi):
                    w = q * sw + s * dw - pl
                    for g in range(G):
                        for cg in range(Cg):
                            out[w, g * Cg + cg] += src[g, (r * S + s) * Cg + cg]


@njit(**_KERNEL)
def _rows_to_nchw(a, bias, n0, y):
    """a (K, nb*P*Q) + bias -> y[n0:n0+nb] (nb, K, P*Q)."""
    K, PQ = y.shape[1], y.shape[2]
    nb = a.shape[1] // PQ
    for i in prange(nb * K):
        j, k = i // K, i % K
        b = bias[k]
        src = a[k, j * PQ:(j + 1) * PQ]
        dst = y[n0 + j, k]
        for t in range(PQ):
            dst[t] = src[t] + b


@njit(**_KERNEL)
def _nchw_to_rows(a, n0, out):
    """a[n0:n0+nb] (nb, K, P*Q) -> out (K, nb*P*Q): the batch folded into the columns."""
    K, PQ = a.shape[1], a.shape[2]
    nb = out.shape[1] // PQ
    for i in prange(nb * K):
        j, k = i // K, i % K
        out[k, j * PQ:(j + 1) * PQ] = a[n0 + j, k]


# ---------------------------------------------------------------------------------
# Column matrices.


def _cols(x, g: ConvGeometry):
    """im2col of the whole batch, in the layout the module docstring describes."""
    if g.nhwc:
        if g.is_pointwise:
            return x.reshape(g.N * g.H * g.W, g.groups, g.Cg)  # (N*P*Q, G, Cg), no copy
        cols = np.empty((g.N * g.P * g.Q, g.groups, g.R * g.S * g.Cg), x.dtype)
        _im2col_nhwc(x, 0, cols, *_taps(g))
        return cols
    # Pointwise NCHW reaches here only from grad_weight, whose single product needs the
    # batch in the columns; im2col of a 1x1 kernel is then just that transpose.
    if g.is_pointwise and g.N == 1:
        return x.reshape(g.C, g.H * g.W)  # (C, P*Q), no copy
    cols = np.empty((g.C * g.R * g.S, g.N * g.P * g.Q), x.dtype)
    _im2col_nchw(x, 0, cols, *_taps(g))
    return cols


def _dy_rows(grad_y, g: ConvGeometry):
    """NCHW grad_y as the (K, N*P*Q) matrix the products need."""
    if g.N == 1:
        return grad_y.reshape(g.K, g.P * g.Q)  # (K, P*Q), no copy
    out = np.empty((g.K, g.N * g.P * g.Q), grad_y.dtype)
    _nchw_to_rows(grad_y.reshape(g.N, g.K, g.P * g.Q), 0, out)  # (N, K, P*Q)
    return out


# ---------------------------------------------------------------------------------
# The four passes.


def forward(x, w, bias, g: ConvGeometry):
    _set_threads()
    G, Kg = g.groups, g.Kg
    y = np.empty(g.y_shape, x.dtype)
    if g.nhwc:
        np.matmul(_cols(x, g).transpose(1, 0, 2),          # (G, N*P*Q, R*S*Cg)
                  w.reshape(-1, G, Kg).transpose(1, 0, 2),  # (G, R*S*Cg, Kg)
                  out=y.reshape(-1, G, Kg).transpose(1, 0, 2))  # (G, N*P*Q, Kg)
        if bias is not None:
            y += bias
        return y
    wm = w.reshape(G, Kg, -1)  # (G, Kg, Cg*R*S)
    if g.is_pointwise:
        np.matmul(wm, x.reshape(g.N, G, g.Cg, -1),     # (N, G, Cg, H*W)
                  out=y.reshape(g.N, G, Kg, -1))       # (N, G, Kg, P*Q)
        if bias is not None:
            y += bias[:, None, None]
        return y
    cols = _cols(x, g).reshape(G, -1, g.N * g.P * g.Q)  # (G, Cg*R*S, N*P*Q)
    rows = np.matmul(wm, cols).reshape(g.K, -1)          # (K, N*P*Q)
    b = bias if bias is not None else np.zeros(g.K, x.dtype)
    _rows_to_nchw(rows, b, 0, y.reshape(g.N, g.K, -1))  # (N, K, P*Q)
    return y


def grad_input(grad_y, w, g: ConvGeometry):
    _set_threads()
    G, Kg = g.groups, g.Kg
    gx = np.empty(g.x_shape, grad_y.dtype)
    if g.nhwc:
        dy = grad_y.reshape(-1, G, Kg).transpose(1, 0, 2)  # (G, N*P*Q, Kg)
        wt = w.reshape(-1, G, Kg).transpose(1, 2, 0)       # (G, Kg, R*S*Cg)
        if g.is_pointwise:
            np.matmul(dy, wt, out=gx.reshape(-1, G, g.Cg).transpose(1, 0, 2))  # (G, N*H*W, Cg)
            return gx
        dcols = np.empty((g.N * g.P * g.Q, G, g.R * g.S * g.Cg), grad_y.dtype)
        np.matmul(dy, wt, out=dcols.transpose(1, 0, 2))  # (G, N*P*Q, R*S*Cg)
        _col2im_nhwc(dcols, 0, gx, *_taps(g))
        return gx
    wt = w.reshape(G, Kg, -1).transpose(0, 2, 1)  # (G, Cg*R*S, Kg)
    if g.is_pointwise:
        np.matmul(wt, grad_y.reshape(g.N, G, Kg, -1),  # (N, G, Kg, P*Q)
                  out=gx.reshape(g.N, G, g.Cg, -1))    # (N, G, Cg, H*W)
        return gx
    dy = _dy_rows(grad_y, g).reshape(G, Kg, -1)  # (G, Kg, N*P*Q)
    dcols = np.matmul(wt, dy).reshape(g.C * g.R * g.S, -1)  # (C*R*S, N*P*Q)
    _col2im_nchw(dcols, 0, gx, *_taps(g))
    return gx


def grad_weight(grad_y, x, g: ConvGeometry):
    _set_threads()
    G, Kg = g.groups, g.Kg
    gw = np.empty(g.w_shape, x.dtype)
    if g.nhwc:
        # dY · colsᵀ computed as its transpose colsᵀ · dY, which lands in HWIO order.
        np.matmul(_cols(x, g).transpose(1, 2, 0),                # (G, R*S*Cg, N*P*Q)
                  grad_y.reshape(-1, G, Kg).transpose(1, 0, 2),  # (G, N*P*Q, Kg)
                  out=gw.reshape(-1, G, Kg).transpose(1, 0, 2))  # (G, R*S*Cg, Kg)
        return gw
    cols = _cols(x, g).reshape(G, -1, g.N * g.P * g.Q)  # (G, Cg*R*S, N*P*Q)
    dy = _dy_rows(grad_y, g).reshape(G, Kg, -1)          # (G, Kg, N*P*Q)
    np.matmul(dy, cols.transpose(0, 2, 1), out=gw.reshape(G, Kg, -1))  # (G, Kg, Cg*R*S)
    return gw


def grad_bias(grad_y, g: ConvGeometry):
    # A float64 accumulator: a float32 running sum over N*P*Q terms loses digits.
    axes = (0, 1, 2) if g.nhwc else (0, 2, 3)
    return grad_y.sum(axis=axes, dtype=np.float64).astype(grad_y.dtype)
