"""im2col engine: Numba im2col/col2im kernels around BLAS matrix products, in bounded memory.

Caffe's three products:

    forward      y      = W  · cols
    grad_weight  grad_w = dY · colsᵀ    (summed over every image: the weights are tied)
    grad_input   dcols  = Wᵀ · dY, then col2im adds the overlapping windows back up

Workspace. The column matrix of a whole batch can be huge (R*S times the input), so the
work runs in chunks whose buffers fit ``get_workspace_limit()`` (64 MiB by default):
whole images while one image fits, else one image and a band of output rows. One flat
buffer per Python thread holds a chunk's columns (and, where needed, the reordered dY
or the product); it is reused across chunks and across calls, and never outgrows the cap
(one output row's columns are the smallest chunk: only that can exceed it).

Column layouts, chosen so that every product is one ``np.matmul`` over strided views
BLAS reads in place (batched over groups, and over images in "direct" mode):

    NCHW direct  cols (nb, C*R*S, L), L = output positions of the chunk (pb*Q). The
                 product of image n goes straight into y[n] viewed (G, Kg, L): no
                 reorder. Used when an image has enough positions (P*Q >= DIRECT_MIN_PQ)
                 for a per-image product to run at BLAS speed.
    NCHW folded  cols (C*R*S, nb*P*Q): the batch folded into the columns, so that small
                 images still give one wide product. W · cols comes out (K, nb*P*Q) and
                 one pass reorders it into y, adding the bias on the way.
    NHWC         cols (nb*pb*Q, G, R*S*Cg): one row per output position, the reduction in
                 (r, s, cg) order to match HWIO memory, so W · cols comes out (M, K),
                 which already is a contiguous slice of y.

Splitting is exact for forward and grad_input: every output element comes from the
same BLAS dot product and the same col2im sums in the same order (col2im walks the taps
r from last to first, i.e. output rows first to last, so row bands add up in the
unsplit order). grad_weight sums its chunks' products, so only its rounding changes.

Pointwise convolutions (1x1, stride 1, unpadded) skip im2col: the input already is
the column matrix.

BLAS runs only outside the ``prange`` loops, so Numba's pool and BLAS's never nest.
"""
from __future__ import annotations

import os
import threading
import types

import numba
import numpy as np
from numba import njit, prange

from .._geometry import ConvGeometry
from .._threads import kernel_threads, threads_for
from .._workspace import get_workspace_limit

# Off: results must match the reference engine. The one place to change it.
FASTMATH = False
_KERNEL = dict(nogil=True, cache=True, fastmath=FASTMATH)

# NCHW images with at least this many output positions take the direct layout (one
# product per image written straight into y); smaller ones fold the batch into the
# columns. Measured on the suite (bench/im2col_report.py).
DIRECT_MIN_PQ = 1024


_local = threading.local()


class _Twin:
    """A kernel compiled twice: with ``prange`` on Numba's thread pool, and serial.

    Which one runs is decided per call and per Python thread by ``_set_threads``. The
    serial twin never touches Numba's threading layer, which matters in a process
    forked after the pool started (GNU OpenMP aborts there).
    """

    def __init__(self, fn):
        self.parallel = njit(parallel=True, **_KERNEL)(fn)
        # Numba's on-disk cache tells functions apart by qualified name, not by the
        # parallel flag: the serial twin needs a name of its own, or one would load the
        # other's machine code.
        serial = types.FunctionType(fn.__code__, fn.__globals__, fn.__name__ + "_serial",
                                    fn.__defaults__, fn.__closure__)
        serial.__qualname__ = fn.__qualname__ + "_serial"
        self.serial = njit(parallel=False, **_KERNEL)(serial)
        self.__doc__ = fn.__doc__

    def __call__(self, *args):
        return (self.parallel if getattr(_local, "parallel", False) else self.serial)(*args)


def _kernel(fn) -> _Twin:
    return _Twin(fn)


def _set_threads(g: ConvGeometry) -> None:
    """Choose the parallel or serial kernels for this call, and Numba's thread count.

    Measured on 2 cores (resnet_c2_3x3, c4_3x3, vgg_conv1_2; float32): after every
    product OpenBLAS's workers spin for about 0.1 s (OPENBLAS_THREAD_TIMEOUT, read only
    when NumPy loads), and a Numba parallel region started in that window fights them
    for the cores: 1.2-1.3x slower than running im2col/col2im on the calling thread while
    BLAS keeps the cores. So the kernels run in parallel only where no BLAS worker can
    be spinning: BLAS on one thread, or OPENBLAS_THREAD_TIMEOUT set to a few cycles.
    """
    n = threads_for(g.flops)
    _local.parallel = n > 1 and _blas_yields_quickly()
    if _local.parallel:
        # Numba's thread count is per calling thread, so it is set on every call.
        numba.set_num_threads(min(n, numba.config.NUMBA_NUM_THREADS))


def kernel_mode() -> str:
    """How the im2col/col2im kernels run in this process, for show_config()."""
    if kernel_threads() > 1 and _blas_yields_quickly():
        return "parallel (Numba prange)"
    return ("serial while BLAS uses the cores (set OPENBLAS_THREAD_TIMEOUT=4 before NumPy "
            "loads for parallel kernels)")


def _blas_yields_quickly() -> bool:
    try:
        return int(os.environ.get("OPENBLAS_THREAD_TIMEOUT", "28")) <= _QUICK_TIMEOUT
    except ValueError:
        return False


# OpenBLAS workers spin 2**timeout cycles before sleeping (the default, 28, is ~0.1 s at
# 2.6 GHz). At 4 they sleep at once; parallel kernels then measured as fast or faster.
_QUICK_TIMEOUT = 4


def _taps(g: ConvGeometry):
    """The geometry ints every kernel takes after its arrays."""
    return (g.R, g.S, g.P, g.Q, g.stride_h, g.stride_w, g.dil_h, g.dil_w,
            g.pad_top, g.pad_left)


# ---------------------------------------------------------------------------------
# Subnormal inputs. BLAS takes a slow microcode path for every subnormal operand
# (measured 7x slower forward on subnormal inputs), and its threads' FPU modes are not
# ours to set. So the engine reads subnormal inputs as zero, as the direct engine's DAZ
# mode does: a change of at most 1.2e-38 per product, far inside every tolerance. The
# check is one vectorised pass over each input (~2 ms per 25 MB, 2% of vgg_conv1_2);
# only arrays that hold a subnormal are copied.


@njit(nogil=True, cache=True)
def _has_subnormal(a, tiny):
    # Branch-free counting vectorises: 1.8 ms over 25 MB, against 8 ms with an early
    # exit per block. (|v| < tiny counts zeros and subnormals; the zeros are taken off.)
    n = 0
    for i in range(a.size):
        v = abs(a[i])
        n += np.int32(v < tiny) - np.int32(v == 0)
    return n > 0


def _subnormals_as_zero(a: np.ndarray) -> np.ndarray:
    tiny = np.finfo(a.dtype).tiny
    if not _has_subnormal(a.reshape(-1), a.dtype.type(tiny)):
        return a
    return np.where(np.abs(a) < tiny, a.dtype.type(0), a)


# ---------------------------------------------------------------------------------
# Workspace: chunking and the reused buffer.


def _workspace(n: int, dtype) -> np.ndarray:
    """A flat buffer of ``n`` elements, reused across chunks and calls of this thread.

    A buffer larger than both the request and the cap is dropped, so lowering the cap
    also lowers what stays allocated.
    """
    nbytes = n * np.dtype(dtype).itemsize
    buf = getattr(_local, "buf", None)
    if buf is None or buf.nbytes < nbytes or buf.nbytes > max(nbytes, get_workspace_limit()):
        _local.buf = None  # free the old buffer before allocating the new one
        buf = _local.buf = np.empty(nbytes, np.uint8)
    return buf[:nbytes].view(dtype)


def _plan(g: ConvGeometry, bytes_per_position: int, fixed_bytes: int = 0):
    """(nb, pb): images and output rows per chunk, so that a chunk's workspace fits the cap.

    Whole images while one fits (pb == P), else one image and a band of rows; the
    chunks are balanced so that the last one is not a sliver.
    """
    limit = max(get_workspace_limit() - fixed_bytes, 1)
    per_image = bytes_per_position * g.P * g.Q
    if per_image <= limit:
        nb = min(g.N, limit // per_image)
        nb = -(-g.N // -(-g.N // nb))
        return nb, g.P
    pb = max(1, min(g.P, limit // (bytes_per_position * g.Q)))
    pb = -(-g.P // -(-g.P // pb))
    return 1, pb


def _chunks(g: ConvGeometry, nb: int, pb: int):
    """(n0, n1, p0, p1) for every chunk: images n0:n1, output rows p0:p1."""
    for n0 in range(0, g.N, nb):
        for p0 in range(0, g.P, pb):
            yield n0, min(n0 + nb, g.N), p0, min(p0 + pb, g.P)


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


@_kernel
def _im2col_nchw(x, n0, p0, nb, pb, cols, row_stride, img_stride,
                 R, S, P, Q, sh, sw, dh, dw, pt, pl):
    """x[n0:n0+nb], output rows p0:p0+pb -> flat cols.

    Element (row, j, t) lands at cols[row*row_stride + j*img_stride + t], with row =
    c*R*S + r*S + s and t = (p - p0)*Q + q: the strides pick the direct or folded layout.
    One prange step per row, written in order, so each thread streams through its rows.
    """
    C, H, W = x.shape[1], x.shape[2], x.shape[3]
    for row in prange(C * R * S):
        c, r, s = row // (R * S), (row // S) % R, row % S
        p_lo, p_hi = _valid_range(p0 * sh + r * dh - pt, sh, H, pb)  # relative to p0
        q_lo, q_hi = _valid_range(s * dw - pl, sw, W, Q)
        off = s * dw - pl
        for j in range(nb):
            base = row * row_stride + j * img_stride
            for t in range(p_lo * Q):
                cols[base + t] = 0
            for pp in range(p_lo, p_hi):
                h = (p0 + pp) * sh + r * dh - pt
                o = base + pp * Q
                for q in range(q_lo):
                    cols[o + q] = 0
                if sw == 1:  # a plain copy, which LLVM vectorises
                    for q in range(q_lo, q_hi):
                        cols[o + q] = x[n0 + j, c, h, q + off]
                else:
                    for q in range(q_lo, q_hi):
                        cols[o + q] = x[n0 + j, c, h, q * sw + off]
                for q in range(q_hi, Q):
                    cols[o + q] = 0
            for t in range(p_hi * Q, pb * Q):
                cols[base + t] = 0


@_kernel
def _col2im_nchw(dcols, n0, p0, nb, pb, row_stride, img_stride, gx,
                 R, S, P, Q, sh, sw, dh, dw, pt, pl):
    """Flat dcols (layout as in _im2col_nchw) of output rows p0:p0+pb -> added into
    gx[n0:n0+nb] (nb, C, H, W), which the caller zeroed.

    Each step gathers everything that lands on one input row gx[n, c, h], so no two
    threads ever add into the same element.
    """
    C, H, W = gx.shape[1], gx.shape[2], gx.shape[3]
    # Input rows the band can reach.
    h_lo = max(p0 * sh - pt, 0)
    h_hi = min((p0 + pb - 1) * sh - pt + (R - 1) * dh + 1, H)
    nh = max(h_hi - h_lo, 0)
    for i in prange(nb * C * nh):
        j, c, h = i // (C * nh), (i // nh) % C, h_lo + i % nh
        # Last tap first: output rows in increasing order, so bands add in unsplit order.
        for r in range(R - 1, -1, -1):
            t = h + pt - r * dh  # p * sh for the output row p whose tap r reads row h
            if t < 0 or t % sh != 0:
                continue
            pp = t // sh - p0
            if pp < 0 or pp >= pb:
                continue
            for s in range(S):
                q_lo, q_hi = _valid_range(s * dw - pl, sw, W, Q)
                base = ((c * R + r) * S + s) * row_stride + j * img_stride + pp * Q
                off = s * dw - pl
                if sw == 1:
                    for q in range(q_lo, q_hi):
                        gx[n0 + j, c, h, q + off] += dcols[base + q]
                else:
                    for q in range(q_lo, q_hi):
                        gx[n0 + j, c, h, q * sw + off] += dcols[base + q]


@_kernel
def _im2col_nhwc(x, n0, p0, pb, cols, R, S, P, Q, sh, sw, dh, dw, pt, pl):
    """x[n0:n0+nb], output rows p0:p0+pb -> cols (nb*pb*Q, G, R*S*Cg)."""
    H, W, C = x.shape[1], x.shape[2], x.shape[3]
    G = cols.shape[1]
    Cg = C // G
    SCg = S * Cg
    nb = cols.shape[0] // (pb * Q)
    for i in prange(nb * pb):  # one output row (n, p): Q consecutive rows of cols
        j, p = i // pb, p0 + i % pb
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


@_kernel
def _col2im_nhwc(dcols, n0, p0, pb, gx, R, S, P, Q, sh, sw, dh, dw, pt, pl):
    """dcols (nb*pb*Q, G, R*S*Cg) of output rows p0:p0+pb -> added into gx[n0:n0+nb]
    (nb, H, W, C), which the caller zeroed.

    Each step gathers everything that lands on one input row gx[n, h] (all W*C of it),
    so no two threads ever add into the same element.
    """
    H, W, C = gx.shape[1], gx.shape[2], gx.shape[3]
    G = dcols.shape[1]
    Cg = C // G
    nb = dcols.shape[0] // (pb * Q)
    h_lo = max(p0 * sh - pt, 0)
    h_hi = min((p0 + pb - 1) * sh - pt + (R - 1) * dh + 1, H)
    nh = max(h_hi - h_lo, 0)
    for i in prange(nb * nh):
        j, h = i // nh, h_lo + i % nh
        out = gx[n0 + j, h]  # (W, C)
        # Last tap first: output rows in increasing order, so bands add in unsplit order.
        for r in range(R - 1, -1, -1):
            t = h + pt - r * dh  # p * sh for the output row p whose tap r reads row h
            if t < 0 or t % sh != 0:
                continue
            pp = t // sh - p0
            if pp < 0 or pp >= pb:
                continue
            for q in range(Q):
                s_lo, s_hi = _valid_range(q * sw - pl, dw, W, S)
                src = dcols[(j * pb + pp) * Q + q]  # (G, R*S*Cg)
                for s in range(s_lo, s_hi):
                    w = q * sw + s * dw - pl
                    for g in range(G):
                        for cg in range(Cg):
                            out[w, g * Cg + cg] += src[g, (r * S + s) * Cg + cg]


@_kernel
def _rows_to_nchw(a, bias, n0, y):
    """a (K, nb*P*Q) + bias -> y[n0:n0+nb] (nb, K, P*Q)."""
    K, PQ = y.shape[1], y.shape[2]
    nb = a.shape[1] // PQ
    for i in prange(nb * K):
        j, k = i // K, i % K
        b = bias[k]
        for t in range(PQ):
            y[n0 + j, k, t] = a[k, j * PQ + t] + b


@_kernel
def _nchw_to_rows(a, n0, out):
    """a[n0:n0+nb] (nb, K, P*Q) -> out (K, nb*P*Q): the batch folded into the columns."""
    K, PQ = a.shape[1], a.shape[2]
    nb = out.shape[1] // PQ
    for i in prange(nb * K):
        j, k = i // K, i % K
        for t in range(PQ):
            out[k, j * PQ + t] = a[n0 + j, k, t]


# ---------------------------------------------------------------------------------
# NCHW chunk helpers: the layout of one chunk's columns in the flat workspace.


def _nchw_cols(x, g, ws, n0, n1, p0, p1, folded):
    """im2col of one chunk into ws; returns (cols, row_stride, img_stride).

    cols is (nb, C*R*S, L) direct or (C*R*S, nb*L) folded, L = (p1 - p0) * Q.
    """
    nb, L, crs = n1 - n0, (p1 - p0) * g.Q, g.C * g.R * g.S
    row_stride, img_stride = (nb * L, L) if folded else (L, crs * L)
    flat = ws[:crs * nb * L]
    _im2col_nchw(x, n0, p0, nb, p1 - p0, flat, row_stride, img_stride, *_taps(g))
    shape = (crs, nb * L) if folded else (nb, crs, L)
    return flat.reshape(shape), row_stride, img_stride


def _folded(g: ConvGeometry, nb: int) -> bool:
    return nb > 1 and g.P * g.Q < DIRECT_MIN_PQ


# ---------------------------------------------------------------------------------
# Whole-window convolutions (the kernel covers the input: one output per image) are
# fully connected layers: the input already is the column matrix, one row per image,
# and each pass is one product with no im2col (lenet_c5 forward: 374 -> 96 us).
# NHWC with groups keeps a group's channels strided within each row, so it takes the
# general path.


def _dense(g: ConvGeometry) -> bool:
    return g.covers_input and (g.groups == 1 or not g.nhwc)


def _dense_x(x, g: ConvGeometry):
    return x.reshape(g.N, g.groups, -1).transpose(1, 0, 2)  # (G, N, Cg*R*S)


def _dense_y(y, g: ConvGeometry):
    return y.reshape(g.N, g.groups, g.Kg).transpose(1, 0, 2)  # (G, N, Kg)


def _dense_w(w, g: ConvGeometry):
    if g.nhwc:  # HWIO, groups == 1: (R*S*C, K) seen as (1, K, R*S*C)
        return w.reshape(1, -1, g.K).transpose(0, 2, 1)
    return w.reshape(g.groups, g.Kg, -1)  # (G, Kg, Cg*R*S)


# ---------------------------------------------------------------------------------
# The four passes.


def forward(x, w, bias, g: ConvGeometry):
    _set_threads(g)
    x, w = _subnormals_as_zero(x), _subnormals_as_zero(w)
    G, Kg, K, Q, isz = g.groups, g.Kg, g.K, g.Q, x.itemsize
    crs = g.C * g.R * g.S
    y = np.empty(g.y_shape, x.dtype)
    if _dense(g):
        np.matmul(_dense_x(x, g), _dense_w(w, g).transpose(0, 2, 1),
                  out=_dense_y(y, g))  # (G, N, Kg)
        if bias is not None:
            y += bias.reshape(y.shape[1:])
        return y
    if g.nhwc:
        if g.is_pointwise:
            np.matmul(x.reshape(-1, G, g.Cg).transpose(1, 0, 2),  # (G, N*H*W, Cg)
                      w.reshape(-1, G, Kg).transpose(1, 0, 2),     # (G, Cg, Kg)
                      out=y.reshape(-1, G, Kg).transpose(1, 0, 2))  # (G, N*P*Q, Kg)
        else:
            nb, pb = _plan(g, crs * isz)
            ws = _workspace(nb * pb * Q * crs, x.dtype)
            wv = w.reshape(-1, G, Kg).transpose(1, 0, 2)  # (G, R*S*Cg, Kg)
            yv = y.reshape(-1, G, Kg)                     # (N*P*Q, G, Kg)
            for n0, n1, p0, p1 in _chunks(g, nb, pb):
                m, m0 = (n1 - n0) * (p1 - p0) * Q, (n0 * g.P + p0) * Q
                cols = ws[:m * crs].reshape(m, G, -1)  # (M, G, R*S*Cg)
                _im2col_nhwc(x, n0, p0, p1 - p0, cols, *_taps(g))
                np.matmul(cols.transpose(1, 0, 2), wv,
                          out=yv[m0:m0 + m].transpose(1, 0, 2))  # (G, M, Kg)
        if bias is not None:
            y += bias
        return y

    wm = w.reshape(G, Kg, -1)  # (G, Kg, Cg*R*S)
    y4 = y.reshape(g.N, G, Kg, -1)  # (N, G, Kg, P*Q)
    if g.is_pointwise:
        np.matmul(wm, x.reshape(g.N, G, g.Cg, -1), out=y4)  # (N, G, Cg, H*W) -> y
        if bias is not None:
            y += bias[:, None, None]
        return y
    nb, pb = _plan(g, (crs + K) * isz)
    folded = _folded(g, nb)
    if not folded:
        nb, pb = _plan(g, crs * isz)  # no product buffer: more images per chunk
    ws = _workspace(nb * pb * Q * (crs + K * folded), x.dtype)
    bias_col = None if bias is None else bias.reshape(G, Kg, 1)
    for n0, n1, p0, p1 in _chunks(g, nb, pb):
        cols, _, _ = _nchw_cols(x, g, ws, n0, n1, p0, p1, folded)
        if folded:
            M = (n1 - n0) * g.P * Q
            rows = ws[crs * M:(crs + K) * M].reshape(G, Kg, M)
            np.matmul(wm, cols.reshape(G, -1, M), out=rows)  # (G, Kg, nb*P*Q)
            b = bias if bias is not None else np.zeros(K, x.dtype)
            _rows_to_nchw(rows.reshape(K, M), b, n0, y.reshape(g.N, K, -1))
        else:
            yc = y4[n0:n1, :, :, p0 * Q:p1 * Q]  # (nb, G, Kg, L), a view
            np.matmul(wm, cols.reshape(n1 - n0, G, -1, cols.shape[-1]), out=yc)
            if bias_col is not None:
                yc += bias_col
    return y


def grad_input(grad_y, w, g: ConvGeometry):
    _set_threads(g)
    grad_y, w = _subnormals_as_zero(grad_y), _subnormals_as_zero(w)
    G, Kg, K, Q, isz = g.groups, g.Kg, g.K, g.Q, grad_y.itemsize
    crs = g.C * g.R * g.S
    if _dense(g):
        gx = np.empty(g.x_shape, grad_y.dtype)
        np.matmul(_dense_y(grad_y, g), _dense_w(w, g), out=_dense_x(gx, g))  # (G, N, Cg*R*S)
        return gx
    if g.nhwc:
        dy = grad_y.reshape(-1, G, Kg)                # (N*P*Q, G, Kg)
        wt = w.reshape(-1, G, Kg).transpose(1, 2, 0)  # (G, Kg, R*S*Cg)
        if g.is_pointwise:
            gx = np.empty(g.x_shape, grad_y.dtype)
            np.matmul(dy.transpose(1, 0, 2), wt,
                      out=gx.reshape(-1, G, g.Cg).transpose(1, 0, 2))  # (G, N*H*W, Cg)
            return gx
        gx = np.zeros(g.x_shape, grad_y.dtype)  # col2im adds into it
        nb, pb = _plan(g, crs * isz)
        ws = _workspace(nb * pb * Q * crs, grad_y.dtype)
        for n0, n1, p0, p1 in _chunks(g, nb, pb):
            m, m0 = (n1 - n0) * (p1 - p0) * Q, (n0 * g.P + p0) * Q
            dcols = ws[:m * crs].reshape(m, G, -1)  # (M, G, R*S*Cg)
            np.matmul(dy[m0:m0 + m].transpose(1, 0, 2), wt,
                      out=dcols.transpose(1, 0, 2))  # (G, M, R*S*Cg)
            _col2im_nhwc(dcols, n0, p0, p1 - p0, gx, *_taps(g))
        return gx

    wt = w.reshape(G, Kg, -1).transpose(0, 2, 1)  # (G, Cg*R*S, Kg)
    gy4 = grad_y.reshape(g.N, G, Kg, -1)          # (N, G, Kg, P*Q)
    if g.is_pointwise:
        gx = np.empty(g.x_shape, grad_y.dtype)
        np.matmul(wt, gy4, out=gx.reshape(g.N, G, g.Cg, -1))  # (N, G, Cg, H*W)
        return gx
    gx = np.zeros(g.x_shape, grad_y.dtype)  # col2im adds into it
    nb, pb = _plan(g, (crs + K) * isz)
    folded = _folded(g, nb)
    if not folded:
        nb, pb = _plan(g, crs * isz)
    ws = _workspace(nb * pb * Q * (crs + K * folded), grad_y.dtype)
    for n0, n1, p0, p1 in _chunks(g, nb, pb):
        nbc, L = n1 - n0, (p1 - p0) * Q
        flat = ws[:crs * nbc * L]
        if folded:
            M = nbc * L
            dy = ws[crs * M:(crs + K) * M].reshape(K, M)
            _nchw_to_rows(grad_y.reshape(g.N, K, -1), n0, dy)
            np.matmul(wt, dy.reshape(G, Kg, M), out=flat.reshape(G, -1, M))  # (G, Cg*R*S, M)
            row_stride, img_stride = M, L
        else:
            np.matmul(wt, gy4[n0:n1, :, :, p0 * Q:p1 * Q],
                      out=flat.reshape(nbc, G, -1, L))  # (nb, G, Cg*R*S, L)
            row_stride, img_stride = L, crs * L
        _col2im_nchw(flat, n0, p0, nbc, p1 - p0, row_stride, img_stride, gx, *_taps(g))
    return gx


def grad_weight(grad_y, x, g: ConvGeometry):
    _set_threads(g)
    grad_y, x = _subnormals_as_zero(grad_y), _subnormals_as_zero(x)
    G, Kg, K, Q, isz = g.groups, g.Kg, g.K, g.Q, x.itemsize
    crs = g.C * g.R * g.S
    gw = np.empty(g.w_shape, x.dtype)
    if _dense(g):
        np.matmul(_dense_y(grad_y, g).transpose(0, 2, 1), _dense_x(x, g),
                  out=_dense_w(gw, g))  # (G, Kg, Cg*R*S)
        return gw
    gw3 = gw.reshape(-1, G, Kg).transpose(1, 0, 2) if g.nhwc else gw.reshape(G, Kg, -1)
    # Every chunk after the first adds its product, made in `part`, into gw.
    part_n = gw.size
    if g.nhwc:
        nb, pb = _plan(g, crs * isz, part_n * isz)
        ws = _workspace(part_n + nb * pb * Q * crs, x.dtype)
        part = ws[:part_n].reshape(gw3.shape)  # (G, R*S*Cg, Kg)
        dy = grad_y.reshape(-1, G, Kg)         # (N*P*Q, G, Kg)
        for i, (n0, n1, p0, p1) in enumerate(_chunks(g, nb, pb)):
            m, m0 = (n1 - n0) * (p1 - p0) * Q, (n0 * g.P + p0) * Q
            if g.is_pointwise:
                cols = x.reshape(-1, G, g.Cg)[m0:m0 + m]  # (M, G, Cg), no copy
            else:
                cols = ws[part_n:part_n + m * crs].reshape(m, G, -1)  # (M, G, R*S*Cg)
                _im2col_nhwc(x, n0, p0, p1 - p0, cols, *_taps(g))
            # dY · colsᵀ computed as its transpose colsᵀ · dY, which lands in HWIO order.
            np.matmul(cols.transpose(1, 2, 0), dy[m0:m0 + m].transpose(1, 0, 2),
                      out=gw3 if i == 0 else part)  # (G, R*S*Cg, Kg)
            if i:
                gw3 += part
        return gw

    gy4 = grad_y.reshape(g.N, G, Kg, -1)  # (N, G, Kg, P*Q)
    if g.is_pointwise:
        # One product per image, (Kg, H*W) · (H*W, Cg), then the sum over the batch: the
        # input already is the column matrix, and H*W is a long reduction.
        parts = np.matmul(gy4, x.reshape(g.N, G, g.Cg, -1).transpose(0, 1, 3, 2))
        np.sum(parts, axis=0, out=gw3)  # (N, G, Kg, Cg) -> (G, Kg, Cg)
        return gw
    # Always folded: the reduction runs over the chunk's images, so the products stay
    # wide; dY is reordered to match unless the chunk is one image (then it is a view).
    nb, pb = _plan(g, (crs + K) * isz, part_n * isz)
    ws = _workspace(part_n + nb * pb * Q * (crs + K), x.dtype)
    part, ws = ws[:part_n].reshape(gw3.shape), ws[part_n:]
    for i, (n0, n1, p0, p1) in enumerate(_chunks(g, nb, pb)):
        cols, _, _ = _nchw_cols(x, g, ws, n0, n1, p0, p1, folded=True)  # (C*R*S, M)
        M = cols.shape[1]
        if n1 - n0 == 1:
            dy = gy4[n0, :, :, p0 * Q:p1 * Q]  # (G, Kg, M), a view
        else:
            dy = ws[crs * M:(crs + K) * M].reshape(K, M)
            _nchw_to_rows(grad_y.reshape(g.N, K, -1), n0, dy)
            dy = dy.reshape(G, Kg, M)
        np.matmul(dy, cols.reshape(G, -1, M).transpose(0, 2, 1),
                  out=gw3 if i == 0 else part)  # (G, Kg, Cg*R*S)
        if i:
            gw3 += part
    return gw


def grad_bias(grad_y, g: ConvGeometry):
    # A float64 accumulator: a float32 running sum over N*P*Q terms loses digits.
    axes = (0, 1, 2) if g.nhwc else (0, 2, 3)
    return grad_y.sum(axis=axes, dtype=np.float64).astype(grad_y.dtype)
