"""im2col engine: Numba im2col/col2im kernels around BLAS matrix products, in bounded memory.

Caffe's three products:

    forward      y      = W  · cols
    grad_weight  grad_w = dY · colsᵀ    (summed over every image: the weights are tied)
    grad_input   dcols  = Wᵀ · dY, then col2im adds the overlapping windows back up

NCHW: per-thread pieces. The column matrix is never built whole. Each thread unrolls a
piece of it that stays in its core's L2 (CHUNK_BYTES: one image's band of output rows)
and multiplies that piece at once with a single-threaded BLAS gemm called from inside
the Numba kernel (``_cblas``), writing straight into its rows of y through BLAS's
leading dimensions: no reorder, no whole-batch buffer, and the columns are read back
from cache instead of memory. Measured on vgg_conv1_2 forward (2 threads): whole-batch
chunks of 64 MiB with a 2-thread product 97 ms, per-thread 1 MiB pieces 56-60 ms.

    forward      thread t owns the pieces (image, band) t*U//T .. (t+1)*U//T;
    grad_input   at stride 1 the forward convolution of dY with the filters flipped and
                 K, C swapped (no col2im at all); strided, col2im with whole images per
                 thread, since the windows of neighbouring bands overlap in grad_x;
    grad_weight  thread t owns the column rows (c, r, s) t*CRS//T .. (t+1)*CRS//T, i.e.
                 those columns of dW, and adds every chunk's product into them in order:
                 no partial sums to combine, and the sums' order is fixed by the shape.

NHWC: per-thread pieces of rb output rows across images: cols (rb*Q, G, R*S*Cg), one
row per output position with the reduction in (r, s, cg) order to match HWIO memory,
so W · cols comes out (M, K), already a contiguous slice of y.

Workspace. Everything the engine allocates besides its outputs lives in one flat
buffer per Python thread, reused across pieces and calls, within
``get_workspace_limit()`` (64 MiB by default) for all threads together; one output
row's columns per thread is the smallest piece, the only thing that can exceed it.
Splitting is exact for forward and grad_input: each output element comes from one
BLAS dot product and col2im adds bands in the unsplit order (taps r from last to
first). grad_weight adds its chunks' products, so only its rounding changes.

Pointwise convolutions (1x1, stride 1, unpadded) and whole-window ones skip im2col:
the input already is the column matrix, and each pass is one product per image and
group, cut into single-threaded gemm calls on our threads (``_products``).

Threads: BLAS is set single-threaded for the duration of every kernel that calls it
from our threads (``_blas.single_threaded``), so no BLAS pool runs inside a kernel.
"""
from __future__ import annotations

import contextlib
import threading

import numba
import numpy as np
from numba import njit

from .._blas import single_threaded
from .._geometry import ConvGeometry
from .._threads import kernel_threads, threads_for
from .._workspace import get_workspace_limit
from ._alloc import output
from ._cblas import NOTRANS, TRANS, gemm, gemm_for
from ._fpmode import FLUSHES, ftz_enter, ftz_leave
from ._products import plan as _products_plan
from ._products import run as run_products
from ._twin import kernel as _kernel

# Bytes of columns one thread unrolls and multiplies at a time (forward, grad_input):
# the piece stays in the core's L2 while BLAS packs it. Measured forward, 2 threads,
# on the Xeon (2 MiB L2 a core), pieces of 512 KiB / 1 MiB / 2 MiB: resnet_c4_3x3
# 10.6 / 9.2 / 8.7 ms, resnet_c5_3x3 14.1 / 10.7 / 10.7, vgg_conv1_2 60 / 56 / 56,
# batch1_c4 1.46 / 1.28 / 2.11 (at 2 MiB its one image is a single piece: one thread
# idles). On the Zen 4 EPYC (1 MiB L2), 256 KiB to 1 MiB were alike within the noise
# on seven suite layers, and so were the WIDE_CHUNK_BYTES and FOLD_* choices below.
CHUNK_BYTES = 1 << 20
# ...but at least as many positions as the product has filters, up to WIDE_CHUNK_BYTES:
# BLAS packs the whole filter matrix for every piece, so a piece narrower than Kg spends
# more on packing filters than it computes. resnet_c4_3x3 (Kg 256) forward, 1 / 2 MiB
# pieces: 9.9 / 8.7 ms; resnet_c2_3x3 and vgg_conv1_2 (Kg 64) stay best at 1 MiB.
WIDE_CHUNK_BYTES = 4 << 20
# Forward on images with fewer output positions than this puts several side by side in
# one product (see ``_forward_nchw``).
FOLD_POSITIONS = 192
# Folded pieces may outgrow L2: the wider product gains more than the cache misses cost.
# resnet_c5_3x3 forward: 10.6 ms unfolded; folded 4 images (3.6 MiB) 8.7 ms.
FOLD_CHUNK_BYTES = 4 << 20
# grad_weight's pieces: larger, since each product also reads and writes the thread's
# block of dW (4.7 MiB on resnet_c5_3x3) and longer pieces spread that over more work.
WGRAD_CHUNK_BYTES = 4 << 20
# grad_weight with filters up to this size splits the work over chunks of positions,
# with a partial dW per thread, rather than over dW's columns; a column split gives such
# layers products a dozen rows wide and stages dY once per thread.
WGRAD_PARTIAL_BYTES = 256 << 10
# ...and then takes chunks of about this many positions. Each chunk's product reads and
# writes the thread's whole partial dW, so a chunk needs enough positions to outweigh
# that; beyond it, larger chunks only fall out of L2. Measured grad_weight, 2 threads,
# chunks of 4 MiB against ~1024 positions: lenet_c1 0.95 -> 0.45 ms, cs231n 1.05 ->
# 0.77 ms, K=16, C=3, 32x32 (N=64) 1.96 -> 0.64 ms; alexnet_conv1 and resnet_c2_3x3
# (1024 positions: 1.8 and 2.6 MiB) lose 5-10% at 256 KiB.
WGRAD_PARTIAL_POSITIONS = 1024


_local = threading.local()

# What the NCHW kernels run: both parts always, except when bench/im2col_report.py
# times one part alone to split the time (``measure_parts``).
UNROLL, PRODUCT = 1, 2
_parts = UNROLL | PRODUCT


@contextlib.contextmanager
def measure_parts(parts: int):
    """For measurement only: run just the unrolling (UNROLL: im2col, col2im, reorders)
    or just the matrix products (PRODUCT) of the NCHW passes; results are garbage."""
    global _parts
    old, _parts = _parts, parts
    try:
        yield
    finally:
        _parts = old


def kernel_mode() -> str:
    """How the im2col/col2im kernels run in this process, for show_config()."""
    if kernel_threads() == 1:
        return "one thread"
    return ("per-thread pieces on fastconv's threads, each multiplied by a "
            "single-threaded BLAS gemm")


def _taps(g: ConvGeometry):
    """The geometry ints every kernel takes after its arrays."""
    return (g.R, g.S, g.P, g.Q, g.stride_h, g.stride_w, g.dil_h, g.dil_w,
            g.pad_top, g.pad_left)


# ---------------------------------------------------------------------------------
# Subnormal inputs. BLAS takes a slow microcode path for every subnormal operand
# (measured 7x slower forward on subnormal inputs). So the engine reads subnormal
# inputs as zero, as the direct engine's DAZ mode does: a change of at most 1.2e-38 per
# product, far inside every tolerance. The kernels' threads, which make the BLAS calls,
# set FTZ/DAZ themselves (``_fpmode``). Where FTZ/DAZ cannot be set (not x86-64), the
# inputs are scanned instead: one vectorised pass over each (~2 ms per 25 MB); only
# arrays that hold a subnormal are copied.


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


def _readable(*arrays):
    """The arrays, with subnormals read as zero where our kernels cannot flush them:
    on machines where ``_fpmode`` cannot set FTZ/DAZ. Elsewhere every gemm runs on a
    kernel thread that flushes (``_fpmode``), which saves the scan (0.1-0.8 ms a pass
    on the suite)."""
    if FLUSHES:
        return arrays
    return tuple(_subnormals_as_zero(a) for a in arrays)


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


def _piece_target(reduction: int, Kg: int, itemsize: int) -> int:
    """CHUNK_BYTES, or one piece of Kg positions' columns when that is larger."""
    return max(CHUNK_BYTES, min(reduction * Kg * itemsize, WIDE_CHUNK_BYTES))


def _balanced(total: int, size: int) -> int:
    """A piece size, at most ``size``, that cuts ``total`` into as many pieces as
    ``size`` does but near-equal ones, so that the last is not a sliver."""
    return -(-total // -(-total // size))


def _even_pieces(total: int, size: int, T: int, copies: int = 1) -> int:
    """Like ``_balanced``, but with the number of pieces (times ``copies``: the images
    each cut in the same way) raised to a multiple of T where ``total`` allows, so that
    T threads share them evenly."""
    count = -(-total // size)
    while (copies * count) % T and count < total:
        count += 1
    return -(-total // count)


def _thread_budget(T: int, floor: int, target: int) -> int:
    """Workspace bytes for each of T threads: ``target``, within the cap shared by all,
    and never below ``floor`` (one output row's columns: the smallest piece)."""
    return max(min(target, get_workspace_limit() // T), floor)


def _bands(g: ConvGeometry, row_bytes: int, budget: int, T: int):
    """(pb, nbands): output rows per piece so that one fits ``budget``, balanced, and
    with the N * nbands pieces shared evenly by T threads where P allows (batch1_c4 on
    2 threads: 2 bands of 7 rows, not 8 + 6)."""
    pb = _even_pieces(g.P, max(1, min(g.P, budget // row_bytes)), T, copies=g.N)
    return pb, -(-g.P // pb)


def _start(g: ConvGeometry) -> int:
    """The thread count for this call: each kernel runs T shares (see ``_twin``)."""
    return threads_for(g.flops)


# ---------------------------------------------------------------------------------
# Kernels. Each thread's share (t of T, see ``_twin``) is a disjoint block of its output, so nothing is
# shared between threads and the sums are added in the same order on every run.
#
# First call. Numba compiles each kernel the first time a process meets it with an
# empty cache, so the kernels avoid what is slow to compile: no slice assignment from
# an array (``a[i:j] = b[k:l]``, ``a[i:j] += b``): for those Numba 0.68 builds a
# shape-mismatch message by string formatting, 3-6 s of the first forward on the Xeon
# (2026-12-02); element loops instead.


_u = numba.uint64  # an index that cannot be negative (see _unroll_nchw)


@njit(nogil=True, cache=True, inline="always")
def _valid_range(start, step, size, count):
    """[lo, hi): the t < count with 0 <= start + t*step < size; the rest falls in the padding.

    Computed once per tap so the inner loops copy without a bounds test.
    """
    lo = -(start // step)           # ceil(-start / step); // floors, as in Python
    hi = -((start - size) // step)  # ceil((size - start) / step)
    lo = min(max(lo, 0), count)
    hi = min(max(hi, lo), count)
    return lo, hi


@njit(nogil=True, cache=True, inline="always")
def _shifted_run(xf, plane, plane_size, src, cols, dst, count, Q, q_lo, q_hi):
    """cols[dst:dst+count] = the plane's elements src:src+count, then zero the columns
    q < q_lo and q >= q_hi of each row of Q: the padding, where the run read into a
    neighbouring row (or, clipped here, past either end of the plane)."""
    lo, hi = max(src, 0), min(src + count, plane_size)
    d, sx = _u(dst + lo - src), _u(plane + lo)
    for i in range(_u(hi - lo)):
        cols[d + i] = xf[sx + i]
    for k in range(_u(count // Q)):
        t = _u(dst) + k * _u(Q)
        for q in range(_u(q_lo)):
            cols[t + q] = 0
        for q in range(_u(q_hi), _u(Q)):
            cols[t + q] = 0


@njit(nogil=True, cache=True, inline="always")
def _unroll_nchw(x, n0, nb, p0, pb, row0, row1, cols, row_stride, img_stride,
                 R, S, P, Q, sh, sw, dh, dw, pt, pl):
    """Rows row0:row1 of the columns of x[n0:n0+nb], output rows p0:p0+pb -> flat cols.

    Column row ``row = c*R*S + r*S + s`` of image j, position t = (p - p0)*Q + q, lands
    at cols[(row - row0)*row_stride + j*img_stride + t]. Written in order, with the
    padding found once per tap (``_valid_range``) rather than tested per element.
    Indices are unsigned (``_u``): Numba then drops its negative-index wraparound,
    and the copies vectorise (resnet_c2_3x3's rows: 6 -> 23 GB/s on one thread).
    """
    C, H, W = x.shape[1], x.shape[2], x.shape[3]
    xf = x.reshape(-1)
    # Stride 1 with the output as wide as the input ("same" width): the band of a tap
    # is one run of x, shifted by the tap's offset, with the padding columns zeroed
    # afterwards. One long copy instead of a short one per output row: resnet_c4_3x3's
    # pieces (rows of 14) 4.3 -> 15 GB/s, resnet_c2_3x3 13 -> 33 GB/s on one thread.
    runs = sh == 1 and sw == 1 and Q == W
    # The valid ranges per tap, found once: divisions per column row cost as much as
    # copying a row of 14 (resnet_c4_3x3).
    p_range = np.empty((R, 2), np.int64)
    q_range = np.empty((S, 2), np.int64)
    for r in range(R):
        p_range[r, 0], p_range[r, 1] = _valid_range(p0 * sh + r * dh - pt, sh, H, pb)
    for s in range(S):
        q_range[s, 0], q_range[s, 1] = _valid_range(s * dw - pl, sw, W, Q)
    c, r, s = row0 // (R * S), (row0 // S) % R, row0 % S
    for row in range(row0, row1):
        if row > row0:  # the next (c, r, s), without dividing
            s += 1
            if s == S:
                s, r = 0, r + 1
                if r == R:
                    r, c = 0, c + 1
        p_lo, p_hi = p_range[r, 0], p_range[r, 1]  # relative to p0
        q_lo, q_hi = q_range[s, 0], q_range[s, 1]
        off = s * dw - pl
        for j in range(nb):
            base = (row - row0) * row_stride + j * img_stride
            for t in range(_u(base), _u(base + p_lo * Q)):
                cols[t] = 0
            xc = ((n0 + j) * C + c) * H * W
            if runs:
                _shifted_run(xf, xc, H * W, (p0 + p_lo + r * dh - pt) * W + off, cols,
                             base + p_lo * Q, (p_hi - p_lo) * Q, Q, q_lo, q_hi)
                for t in range(_u(base + p_hi * Q), _u(base + pb * Q)):
                    cols[t] = 0
                continue
            for pp in range(p_lo, p_hi):
                o = _u(base + pp * Q)
                xo = _u(xc + ((p0 + pp) * sh + r * dh - pt) * W + off)  # x[n, c, h, off]
                for q in range(_u(q_lo)):
                    cols[o + q] = 0
                if sw == 1:  # a plain copy
                    for q in range(_u(q_lo), _u(q_hi)):
                        cols[o + q] = xf[xo + q]
                else:
                    for q in range(_u(q_lo), _u(q_hi)):
                        cols[o + q] = xf[xo + q * _u(sw)]
                for q in range(_u(q_hi), _u(Q)):
                    cols[o + q] = 0
            for t in range(_u(base + p_hi * Q), _u(base + pb * Q)):
                cols[t] = 0


@njit(nogil=True, cache=True)
def _band_input_rows(p0, pb, sh, dh, pt, R, H):
    """[h_lo, h_hi): the input rows that output rows p0:p0+pb read."""
    return max(p0 * sh - pt, 0), min((p0 + pb - 1) * sh - pt + (R - 1) * dh + 1, H)


@njit(nogil=True, cache=True)
def _band_row(h, r, p0, pb, sh, dh, pt):
    """pp: the band's output row (p0 + pp) whose tap r reads input row h, or -1."""
    t = h + pt - r * dh  # p * sh for that output row
    if t < 0 or t % sh != 0 or not p0 <= t // sh < p0 + pb:
        return -1
    return t // sh - p0


@njit(nogil=True, cache=True, inline="always")
def _fold_nchw(dcols, n, p0, pb, gx, R, S, P, Q, sh, sw, dh, dw, pt, pl):
    """col2im: flat dcols (C*R*S, pb*Q) of image n, output rows p0:p0+pb -> added into
    gx[n] (C, H, W).

    Input row by input row, each gathering every tap that lands on it, last tap first:
    output rows in increasing order, so a band adds up in the unsplit order.
    """
    C, H, W = gx.shape[1], gx.shape[2], gx.shape[3]
    L = pb * Q
    gxf = gx.reshape(-1)
    h_lo, h_hi = _band_input_rows(p0, pb, sh, dh, pt, R, H)
    for c in range(C):
        for h in range(h_lo, h_hi):
            for r in range(R - 1, -1, -1):
                pp = _band_row(h, r, p0, pb, sh, dh, pt)
                if pp < 0:
                    continue
                for s in range(S):
                    q_lo, q_hi = _valid_range(s * dw - pl, sw, W, Q)
                    base = _u(((c * R + r) * S + s) * L + pp * Q)
                    xo = _u(((n * C + c) * H + h) * W + s * dw - pl)  # gx[n, c, h, off]
                    for q in range(_u(q_lo), _u(q_hi)):  # unsigned: see _unroll_nchw
                        gxf[xo + q * _u(sw)] += dcols[base + q]


# The three NCHW passes. One share per thread, each owning a fixed share of the
# work (so results do not depend on scheduling) and a slice ``per`` of the workspace
# that holds its columns: a piece of the column matrix small enough to stay in L2
# (CHUNK_BYTES) while BLAS, single-threaded in this thread, multiplies it. Measured on
# vgg_conv1_2 forward (2 threads): the whole-batch layout (64 MiB of columns per chunk,
# written to memory and read back by a 2-thread product) 97 ms; per-thread pieces of
# 1 MiB 56 ms, of which the products alone are 36 ms.


@_kernel
def _forward_nchw(t, x, w, bias, y, gemm_fn, T, nb, pb, nbands, G, ws, per, parts,
                  R, S, P, Q, sh, sw, dh, dw, pt, pl):
    """y[images, :, band] = W . cols(images, band) + bias, for the units t*U//T ..
    (t+1)*U//T of thread t. A unit is one image's band of pb output rows, or, for small
    images (pb == P), nb whole images side by side: their product lands in the thread's
    buffer (K, nb*P*Q) and is copied out to y (a wider product: resnet_c5_3x3, 7x7
    images, runs single-threaded gemm at 105 GFLOP/s on one image, 142 on four)."""
    N, C, K = x.shape[0], x.shape[1], y.shape[1]
    Kg, crsg, PQ = K // G, C // G * R * S, P * Q
    U = (N + nb - 1) // nb * nbands
    wf, yf = w.reshape(-1), y.reshape(-1)
    csr = ftz_enter()  # FTZ/DAZ for BLAS in this thread (see _fpmode)
    cols = ws[t * per:(t + 1) * per]
    out = ws[t * per + C * R * S * nb * pb * Q:(t + 1) * per]  # (K, nb*P*Q) if nb > 1
    for u in range(t * U // T, (t + 1) * U // T):
        n, p0 = u // nbands * nb, u % nbands * pb
        nu, pe = min(nb, N - n), min(pb, P - p0)
        L = pe * Q
        M = nu * L
        if parts & UNROLL:
            _unroll_nchw(x, n, nu, p0, pe, 0, C * R * S, cols, M, L,
                         R, S, P, Q, sh, sw, dh, dw, pt, pl)
        for g in range(G if parts & PRODUCT else 0):
            # y_g (Kg, M) = W_g (Kg, crsg) . cols_g (crsg, M); to BLAS, column-major:
            # y_gᵀ (M x Kg, ld PQ or M) = cols_gᵀ (M x crsg, ld M) . W_gᵀ (crsg x Kg)
            if nb == 1:
                dst, d0, ld = yf, (n * K + g * Kg) * PQ + p0 * Q, PQ
            else:
                dst, d0, ld = out, g * Kg * M, M
            gemm(gemm_fn, NOTRANS, NOTRANS, M, Kg, crsg, cols, g * crsg * M, M,
                 wf, g * Kg * crsg, crsg, 0.0, dst, d0, ld)
        if nb > 1:  # (K, nu*PQ) -> y[n:n+nu] (nu, K, PQ), adding the bias
            for j in range(nu):
                for k in range(K):
                    o, i0 = ((n + j) * K + k) * PQ, k * M + j * PQ
                    # element loops, not slice copies (see First call above)
                    if bias.size:
                        b = bias[k]
                        for i in range(PQ):
                            yf[o + i] = out[i0 + i] + b
                    else:
                        for i in range(PQ):
                            yf[o + i] = out[i0 + i]
        else:
            for k in range(K if bias.size else 0):  # while the band is in cache
                b = bias[k]
                o = (n * K + k) * PQ + p0 * Q
                for i in range(L):
                    yf[o + i] += b
    ftz_leave(csr)


@_kernel
def _flip_swap(t, w, out, T):
    """out[g, c, k, j] = w[g, k, c, RS-1-j]: filters flipped, filter and channel axes
    swapped. In blocks of 16 channels, so that each read is a 16*R*S run of w (numpy's
    strided copy took 5 ms of resnet_c5_3x3's grad_input); thread t takes blocks
    t*B//T .. (t+1)*B//T."""
    G, Kg, Cg, RS = w.shape
    nblk = (Cg + 15) // 16
    B = G * nblk
    for i in range(t * B // T, (t + 1) * B // T):
        g, c0 = i // nblk, i % nblk * 16
        for k in range(Kg):
            for c in range(c0, min(c0 + 16, Cg)):
                for j in range(RS):
                    out[g, c, k, j] = w[g, k, c, RS - 1 - j]


@_kernel
def _grad_input_nchw(t, gy, w, gx, gemm_fn, T, pb, G, ws, per, parts,
                     R, S, P, Q, sh, sw, dh, dw, pt, pl):
    """gx = col2im(Wᵀ . dY), thread t owning images t*N//T .. (t+1)*N//T whole (the
    windows of neighbouring bands overlap in gx, so a band cannot be a thread's own).
    Only strided convolutions take this path: at stride 1 grad_input is a forward
    convolution (see ``grad_input``)."""
    N, K, C = gy.shape[0], gy.shape[1], gx.shape[1]
    Kg, crsg, PQ = K // G, C // G * R * S, P * Q
    wf, gyf = w.reshape(-1), gy.reshape(-1)
    csr = ftz_enter()  # FTZ/DAZ for BLAS in this thread (see _fpmode)
    dcols = ws[t * per:(t + 1) * per]
    for n in range(t * N // T, (t + 1) * N // T):
        gx[n] = 0
        for p0 in range(0, P, pb):
            pe = min(pb, P - p0)
            L = pe * Q
            for g in range(G if parts & PRODUCT else 0):
                # dcols_g (crsg, L) = W_gᵀ (crsg, Kg) . dY_g (Kg, L); to BLAS:
                # dcols_gᵀ (L x crsg, ld L) = dY_gᵀ (L x Kg, ld PQ) . W_g (Kg x crsg)
                gemm(gemm_fn, NOTRANS, TRANS, L, crsg, Kg,
                     gyf, (n * K + g * Kg) * PQ + p0 * Q, PQ, wf, g * Kg * crsg, crsg,
                     0.0, dcols, g * crsg * L, L)
            if parts & UNROLL:
                _fold_nchw(dcols, n, p0, pe, gx, R, S, P, Q, sh, sw, dh, dw, pt, pl)
    ftz_leave(csr)


@_kernel
def _grad_weight_nchw(t, gy, x, gw, gemm_fn, T, nb, pb, G, split_rows, ws, per, parts,
                      R, S, P, Q, sh, sw, dh, dw, pt, pl):
    """dW = sum over chunks of dY . colsᵀ, in one of two splits over threads.

    split_rows: thread t owns the column rows (c, r, s) t*CRS//T .. (t+1)*CRS//T, i.e.
    those columns of dW: it unrolls only its rows of every chunk and adds its products
    into its part of dW, chunk after chunk in order. No partial sums to combine.
    Otherwise (small filters): thread t takes the chunks t*U//T .. (t+1)*U//T whole, and
    sums their products into its own partial dW, the last ``gw.size`` elements of its
    workspace slice; the caller adds the partials up in thread order. Either way the
    order of every sum is fixed by the shape and T.

    A chunk is nb whole images (pb == P) or one image's band of pb output rows.
    """
    N, C, K = x.shape[0], x.shape[1], gy.shape[1]
    Kg, crs, PQ = K // G, C * R * S, P * Q
    crsg = crs // G
    nbands = (P + pb - 1) // pb
    nchunks = (N + nb - 1) // nb * nbands
    gyf = gy.reshape(-1)
    csr = ftz_enter()  # FTZ/DAZ for BLAS in this thread (see _fpmode)
    buf = ws[t * per:(t + 1) * per]
    if split_rows:
        r0, r1, c0, c1 = t * crs // T, (t + 1) * crs // T, 0, nchunks
        out = gw.reshape(-1)
    else:
        r0, r1, c0, c1 = 0, crs, t * nchunks // T, (t + 1) * nchunks // T
        out = buf[per - gw.size:]
        if c0 == c1:
            out[:] = 0
    mmax = nb * pb * Q
    for ci in range(c0, c1):
        n0, p0 = ci // nbands * nb, ci % nbands * pb
        n1, pe = min(N, n0 + nb), min(pb, P - p0)
        L = pe * Q
        M = (n1 - n0) * L
        if parts & UNROLL:
            _unroll_nchw(x, n0, n1 - n0, p0, pe, r0, r1, buf, M, L,
                         R, S, P, Q, sh, sw, dh, dw, pt, pl)
        if n1 - n0 == 1:  # dY of one image's band: read in place
            dy, d0, ld = gyf, n0 * K * PQ + p0 * Q, PQ
        else:  # several images side by side: (K, M)
            dy, d0, ld = buf[(r1 - r0) * mmax:], 0, M
            for j in range(n1 - n0 if parts & UNROLL else 0):
                for k in range(K):
                    src, dst = _u(((n0 + j) * K + k) * PQ), _u(k * M + j * L)
                    for i in range(_u(L)):
                        dy[dst + i] = gyf[src + i]
        beta = 0.0 if ci == c0 else 1.0
        for g in range(G if parts & PRODUCT else 0):
            lo, hi = max(r0, g * crsg), min(r1, (g + 1) * crsg)
            if lo >= hi:
                continue
            # dW_gᵀ rows lo:hi (ld crsg) = cols rows lo:hi (M x (hi-lo) to BLAS,
            # ld M, transposed) . dY_gᵀ (M x Kg, ld)
            gemm(gemm_fn, TRANS, NOTRANS, hi - lo, Kg, M, buf, (lo - r0) * M, M,
                 dy, d0 + g * Kg * ld, ld, beta, out, g * Kg * crsg + lo - g * crsg, crsg)
    ftz_leave(csr)


# NHWC: the same pieces, with one column-matrix row per output position, its entries
# in (g, r, s, cg) order to match HWIO filters: a group's product W_gᵀ . cols_gᵀ comes
# out (Kg, M) to BLAS, which is y's rows (M, K) at column g*Kg, ld K. Output rows of
# consecutive images are consecutive in y, so a piece is any run of output rows
# (image, p), across images: small images need no folding.


@njit(nogil=True, cache=True, inline="always")
def _unroll_nhwc(x, i0, i1, f0, f1, G, cols, R, S, P, Q, sh, sw, dh, dw, pt, pl):
    """Output rows i0:i1 (i = n*P + p), column entries f0:f1 of f = (g*R*S + r*S + s)*Cg
    + cg -> cols[((i - i0)*Q + q)*(f1 - f0) + f - f0]."""
    H, W, C = x.shape[1], x.shape[2], x.shape[3]
    Cg = C // G
    ld = f1 - f0
    xf = x.reshape(-1)
    for i in range(i0, i1):
        n, p = i // P, i % P
        for q in range(Q):
            o = ((i - i0) * Q + q) * ld - f0  # cols index of entry f: o + f
            for g in range(f0 // (R * S * Cg), min(G, (f1 - 1) // (R * S * Cg) + 1)):
                for r in range(R):
                    h = p * sh + r * dh - pt
                    for s in range(S):
                        f = ((g * R + r) * S + s) * Cg
                        lo, hi = max(f, f0), min(f + Cg, f1)
                        if lo >= hi:
                            continue
                        w = q * sw + s * dw - pl
                        if 0 <= h < H and 0 <= w < W:
                            src = _u(((n * H + h) * W + w) * C + g * Cg - f)
                            for e in range(_u(lo), _u(hi)):
                                cols[_u(o) + e] = xf[src + e]
                        else:
                            for e in range(_u(lo), _u(hi)):
                                cols[_u(o) + e] = 0


@njit(nogil=True, cache=True, inline="always")
def _fold_nhwc(dcols, n, p0, pb, G, gx, R, S, P, Q, sh, sw, dh, dw, pt, pl):
    """col2im: dcols (pb*Q, G*R*S*Cg) of image n, output rows p0:p0+pb -> added into
    gx[n] (H, W, C), taps in increasing output-row order (last r first)."""
    H, W, C = gx.shape[1], gx.shape[2], gx.shape[3]
    Cg = C // G
    F = R * S * C
    gxf = gx.reshape(-1)
    h_lo, h_hi = _band_input_rows(p0, pb, sh, dh, pt, R, H)
    for h in range(h_lo, h_hi):
        for r in range(R - 1, -1, -1):
            pp = _band_row(h, r, p0, pb, sh, dh, pt)
            if pp < 0:
                continue
            for q in range(Q):
                s_lo, s_hi = _valid_range(q * sw - pl, dw, W, S)
                for s in range(s_lo, s_hi):
                    w = q * sw + s * dw - pl
                    dst = _u(((n * H + h) * W + w) * C)
                    for g in range(G):
                        src = _u((pp * Q + q) * F + ((g * R + r) * S + s) * Cg)
                        for cg in range(_u(Cg)):
                            gxf[dst + _u(g * Cg) + cg] += dcols[src + cg]


@_kernel
def _forward_nhwc(t, x, w, bias, y, gemm_fn, T, rb, G, ws, per, parts,
                  R, S, P, Q, sh, sw, dh, dw, pt, pl):
    """y = W . cols + bias in pieces of rb output rows (across images): thread t takes
    pieces t*U//T .. (t+1)*U//T."""
    N, C, K = x.shape[0], x.shape[3], y.shape[3]
    Kg, F = K // G, R * S * C
    Fg = F // G
    NP = N * P
    U = (NP + rb - 1) // rb
    wf, yf = w.reshape(-1), y.reshape(-1)
    csr = ftz_enter()  # FTZ/DAZ for BLAS in this thread (see _fpmode)
    cols = ws[t * per:(t + 1) * per]
    for u in range(t * U // T, (t + 1) * U // T):
        i0, i1 = u * rb, min(NP, (u + 1) * rb)
        M = (i1 - i0) * Q
        if parts & UNROLL:
            _unroll_nhwc(x, i0, i1, 0, F, G, cols, R, S, P, Q, sh, sw, dh, dw, pt, pl)
        for g in range(G if parts & PRODUCT else 0):
            # y rows (M, K), columns g*Kg: to BLAS (Kg x M, ld K) =
            # W_gᵀ (Kg x Fg: HWIO at column g*Kg, ld K) . cols_gᵀ (Fg x M, ld F)
            gemm(gemm_fn, NOTRANS, NOTRANS, Kg, M, Fg, wf, g * Kg, K,
                 cols, g * Fg, F, 0.0, yf, i0 * Q * K + g * Kg, K)
        if bias.size:
            for m in range(M):
                o = (i0 * Q + m) * K
                for k in range(K):
                    yf[o + k] += bias[k]
    ftz_leave(csr)


@_kernel
def _flip_swap_hwio(t, w, out, T):
    """out[RS-1-j, k, g, c] = w[j, c, g, k]: HWIO filters flipped, with their filter
    and channel axes swapped ((R*S, Cg, G, Kg) -> (R*S, Kg, G, Cg)); thread t takes the
    rows i = j*Kg + k from t*B//T to (t+1)*B//T."""
    RS, Cg, G, Kg = w.shape
    B = RS * Kg
    for i in range(t * B // T, (t + 1) * B // T):
        j, k = i // Kg, i % Kg
        for g in range(G):
            for c in range(Cg):
                out[RS - 1 - j, k, g, c] = w[j, c, g, k]


@_kernel
def _grad_input_nhwc(t, gy, w, gx, gemm_fn, T, pb, G, ws, per, parts,
                     R, S, P, Q, sh, sw, dh, dw, pt, pl):
    """Strided grad_input: col2im of Wᵀ . dY, whole images per thread (t*N//T ..)."""
    N, K, C = gy.shape[0], gy.shape[3], gx.shape[3]
    Kg, F = K // G, R * S * C
    Fg = F // G
    wf, gyf = w.reshape(-1), gy.reshape(-1)
    csr = ftz_enter()  # FTZ/DAZ for BLAS in this thread (see _fpmode)
    dcols = ws[t * per:(t + 1) * per]
    for n in range(t * N // T, (t + 1) * N // T):
        gx[n] = 0
        for p0 in range(0, P, pb):
            pe = min(pb, P - p0)
            M = pe * Q
            for g in range(G if parts & PRODUCT else 0):
                # dcols_g (M, Fg), ld F: to BLAS (Fg x M) = W_g (Fg x Kg: HWIO
                # transposed, ld K) . dY_gᵀ (Kg x M, ld K)
                gemm(gemm_fn, TRANS, NOTRANS, Fg, M, Kg, wf, g * Kg, K,
                     gyf, (n * P + p0) * Q * K + g * Kg, K, 0.0, dcols, g * Fg, F)
            if parts & UNROLL:
                _fold_nhwc(dcols, n, p0, pe, G, gx, R, S, P, Q, sh, sw, dh, dw, pt, pl)
    ftz_leave(csr)


@_kernel
def _grad_weight_nhwc(t, gy, x, gw, gemm_fn, T, rb, G, ws, per, parts,
                      R, S, P, Q, sh, sw, dh, dw, pt, pl):
    """dW (HWIO) = colsᵀ . dY, summed over pieces of rb output rows in order. Thread t
    owns the column entries f = t*F//T .. (t+1)*F//T, i.e. those rows of dW, unrolls
    only them, and adds every piece's product into them: no partial sums."""
    N, C, K = x.shape[0], x.shape[3], gy.shape[3]
    Kg, F = K // G, R * S * C
    Fg = F // G
    NP = N * P
    U = (NP + rb - 1) // rb
    gwf, gyf = gw.reshape(-1), gy.reshape(-1)
    csr = ftz_enter()  # FTZ/DAZ for BLAS in this thread (see _fpmode)
    f0, f1 = t * F // T, (t + 1) * F // T
    cols = ws[t * per:(t + 1) * per]
    for u in range(U):
        i0, i1 = u * rb, min(NP, (u + 1) * rb)
        M = (i1 - i0) * Q
        if parts & UNROLL:
            _unroll_nhwc(x, i0, i1, f0, f1, G, cols, R, S, P, Q, sh, sw, dh, dw, pt, pl)
        for g in range(G if parts & PRODUCT else 0):
            lo, hi = max(f0, g * Fg), min(f1, (g + 1) * Fg)
            if lo >= hi:
                continue
            # dW rows lo:hi (HWIO, row (r, s, cg), ld K), columns g*Kg: to BLAS
            # (Kg x (hi-lo)) = dY_gᵀ (Kg x M, ld K) . cols (M x (hi-lo), ld f1-f0)
            gemm(gemm_fn, NOTRANS, TRANS, Kg, hi - lo, M, gyf, i0 * Q * K + g * Kg, K,
                 cols, lo - f0, f1 - f0, 0.0 if u == 0 else 1.0,
                 gwf, (lo - g * Fg) * K + g * Kg, K)
    ftz_leave(csr)


# ---------------------------------------------------------------------------------
# Whole-window convolutions (the kernel covers the input: one output per image) are
# fully connected layers: the input already is the column matrix, one row per image,
# and each pass is one product with no im2col (lenet_c5 forward: 374 -> 96 us), run
# on our threads by ``_products``, as the pointwise ones are. NHWC with groups keeps a
# group's channels strided within each row, so it takes the general path.


def _dense(g: ConvGeometry) -> bool:
    return g.covers_input and (g.groups == 1 or not g.nhwc)


# ---------------------------------------------------------------------------------
# The four passes.


def _products(g: ConvGeometry, pass_name: str, arrays: dict, out, bias=None):
    """A pointwise or whole-window pass: its products on our threads (``_products``)."""
    p = _products_plan(g, pass_name, _start(g), bias is not None)
    run_products(p, arrays, out, bias)
    return out


def forward(x, w, bias, g: ConvGeometry, packs=None):  # packs: unused (no packing)
    x, w = _readable(x, w)
    y = output(g.y_shape, x.dtype)
    if _dense(g) or g.is_pointwise:
        return _products(g, "forward", {"x": x, "w": w}, y, bias)
    if g.nhwc:
        _forward_pieces_nhwc(x, w, bias, y, g)
    else:
        _forward_pieces(x, w, bias, y, g)
    return y


def _forward_pieces(x, w, bias, y, g: ConvGeometry, flip_swap: bool = False) -> None:
    """y = conv(x, w) + bias for NCHW, through per-thread pieces of the column matrix.

    flip_swap: ``w`` holds the filters of the convolution whose grad_input this is,
    (G, g.Cg, g.Kg, R*S) in g's terms; they are flipped and swapped into the workspace
    first, whose pages stay mapped from call to call (a fresh 9 MiB array for
    resnet_c5_3x3 cost 1.8 ms of page faults per call).
    """
    T = _start(g)
    crs, PQ = g.C * g.R * g.S, g.P * g.Q
    row_bytes = crs * g.Q * x.itemsize
    budget = _thread_budget(T, row_bytes, _piece_target(crs // g.groups, g.Kg, x.itemsize))
    nb = 1
    if PQ < FOLD_POSITIONS and g.N > T:
        # Whole images side by side, as many as make FOLD_POSITIONS (and fit the
        # budget, columns plus the product), but at least one unit per thread.
        fold_budget = _thread_budget(T, row_bytes, FOLD_CHUNK_BYTES)
        nb = min(-(-FOLD_POSITIONS // PQ), g.N // T,
                 max(1, fold_budget // ((crs + g.K) * PQ * x.itemsize)))
        nb = _balanced(g.N, max(nb, 1))
    if nb > 1:
        pb, nbands = g.P, 1
        per = (crs + g.K) * nb * PQ
    else:
        pb, nbands = _bands(g, row_bytes, budget, T)
        per = crs * pb * g.Q
    ws = _workspace(T * per + (w.size if flip_swap else 0), x.dtype)
    if flip_swap:
        wt = ws[T * per:].reshape(g.K, g.Cg, g.R, g.S)
        if _parts & UNROLL:
            _flip_swap.run(T, w.reshape(g.groups, g.Cg, g.Kg, -1),
                           wt.reshape(g.groups, g.Kg, g.Cg, -1), T)
        w = wt
    b = bias if bias is not None else np.empty(0, x.dtype)
    with single_threaded():
        _forward_nchw.run(T, x, w, b, y, gemm_for(x.dtype), T, nb, pb, nbands,
                          g.groups, ws, per, _parts, *_taps(g))


def _forward_pieces_nhwc(x, w, bias, y, g: ConvGeometry, flip_swap: bool = False) -> None:
    """NHWC twin of ``_forward_pieces``: pieces of rb output rows, across images.

    flip_swap: ``w`` holds the HWIO filters of the convolution whose grad_input this is,
    (R*S, g.Kg, G, g.Cg) in g's terms; they are flipped and swapped into the workspace.
    """
    T = _start(g)
    NP, row_bytes = g.N * g.P, g.R * g.S * g.C * g.Q * x.itemsize
    target = _piece_target(g.R * g.S * g.Cg, g.Kg, x.itemsize)
    rb = _even_pieces(NP, max(1, _thread_budget(T, row_bytes, target) // row_bytes), T)
    per = g.R * g.S * g.C * rb * g.Q
    ws = _workspace(T * per + (w.size if flip_swap else 0), x.dtype)
    if flip_swap:
        wt = ws[T * per:].reshape(g.R, g.S, g.Cg, g.K)
        if _parts & UNROLL:
            _flip_swap_hwio.run(T, w.reshape(-1, g.Kg, g.groups, g.Cg),
                                wt.reshape(-1, g.Cg, g.groups, g.Kg), T)
        w = wt
    b = bias if bias is not None else np.empty(0, x.dtype)
    with single_threaded():
        _forward_nhwc.run(T, x, w, b, y, gemm_for(x.dtype), T, rb, g.groups, ws, per,
                          _parts, *_taps(g))


def _grad_input_geometry(g: ConvGeometry) -> ConvGeometry:
    """At stride 1, grad_input is a forward convolution: of dY (N, K, P, Q), with the
    filters flipped and their K and C swapped, padded by dil*(R-1) - pad (negative pads
    crop), giving H x W outputs. This is its geometry."""
    pt, pl = g.dil_h * (g.R - 1) - g.pad_top, g.dil_w * (g.S - 1) - g.pad_left
    return ConvGeometry(g.N, g.K, g.P, g.Q, g.C, g.R, g.S, g.H, g.W, g.groups, 1, 1,
                        g.dil_h, g.dil_w, pt, g.H - g.P - pt + g.dil_h * (g.R - 1),
                        pl, g.W - g.Q - pl + g.dil_w * (g.S - 1), g.layout)


def _image_band(g: ConvGeometry, itemsize: int, T: int) -> int:
    """Output rows per piece when each thread walks whole images, balanced."""
    row_bytes = g.R * g.S * g.C * g.Q * itemsize
    target = _piece_target(g.R * g.S * g.Cg, g.Kg, itemsize)
    pb = max(1, min(g.P, _thread_budget(T, row_bytes, target) // row_bytes))
    return _balanced(g.P, pb)


def grad_input(grad_y, w, g: ConvGeometry, packs=None):  # packs: unused
    grad_y, w = _readable(grad_y, w)
    G, Q, isz = g.groups, g.Q, grad_y.itemsize
    crs = g.C * g.R * g.S
    if _dense(g) or g.is_pointwise:
        return _products(g, "grad_input", {"y": grad_y, "w": w},
                         output(g.x_shape, grad_y.dtype))
    if g.nhwc:
        gx = output(g.x_shape, grad_y.dtype)
        if g.stride_h == g.stride_w == 1:  # a forward convolution: see the NCHW case
            _forward_pieces_nhwc(grad_y, w, None, gx, _grad_input_geometry(g), flip_swap=True)
            return gx
        T = min(_start(g), g.N)  # a thread owns whole images
        pb = _image_band(g, isz, T)
        per = crs * pb * Q
        ws = _workspace(T * per, grad_y.dtype)
        with single_threaded():
            _grad_input_nhwc.run(T, grad_y, w, gx, gemm_for(gx.dtype), T, pb, G, ws,
                                 per, _parts, *_taps(g))
        return gx

    gx = output(g.x_shape, grad_y.dtype)
    if g.stride_h == g.stride_w == 1:
        # At stride 1, grad_input is itself a forward convolution: of dY, with the
        # filters flipped and their K and C swapped, padded by dil*(R-1) - pad (negative
        # pads crop), giving H x W outputs. The race-free, band-parallel forward path
        # then serves it with no col2im at all. (Measured: resnet_c5_3x3 as col2im of
        # whole images per thread, 17 ms; as this forward convolution, 12 ms.)
        _forward_pieces(grad_y, w, None, gx, _grad_input_geometry(g), flip_swap=True)
        return gx
    T = min(_start(g), g.N)  # a thread owns whole images
    pb = _image_band(g, isz, T)
    per = crs * pb * Q
    ws = _workspace(T * per, grad_y.dtype)
    with single_threaded():
        _grad_input_nchw.run(T, grad_y, w, gx, gemm_for(gx.dtype), T, pb, G, ws, per,
                             _parts, *_taps(g))
    return gx


def grad_weight(grad_y, x, g: ConvGeometry):
    grad_y, x = _readable(grad_y, x)
    G, K, Q, isz = g.groups, g.K, g.Q, x.itemsize
    crs = g.C * g.R * g.S
    gw = np.empty(g.w_shape, x.dtype)
    if _dense(g) or g.is_pointwise:  # the input already is the column matrix
        return _products(g, "grad_weight", {"y": grad_y, "x": x}, gw)
    if g.nhwc:
        T = _start(g)
        fth = -(-crs // T)  # column entries per thread
        row_bytes = fth * Q * isz
        rb = max(1, _thread_budget(T, row_bytes, WGRAD_CHUNK_BYTES) // row_bytes)
        rb = _balanced(g.N * g.P, rb)
        per = fth * rb * Q
        ws = _workspace(T * per, x.dtype)
        with single_threaded():
            _grad_weight_nhwc.run(T, grad_y, x, gw, gemm_for(x.dtype), T, rb, G, ws,
                                  per, _parts, *_taps(g))
        return gw

    T = _start(g)
    # Small filters: each thread takes whole chunks into a partial dW of its own (its
    # products then span every column row, and dY is staged once, not per thread).
    split_rows = T == 1 or gw.nbytes > WGRAD_PARTIAL_BYTES
    rows = -(-crs // T) if split_rows else crs  # column rows per thread
    pos_bytes = (rows + K) * isz  # a thread's columns and staged dY per position
    target = WGRAD_CHUNK_BYTES if split_rows else min(WGRAD_PARTIAL_POSITIONS * pos_bytes,
                                                         WGRAD_CHUNK_BYTES)
    budget = _thread_budget(T, rows * Q * isz, target)
    if pos_bytes * g.P * Q <= budget:  # whole images per chunk
        nb, pb = min(g.N, budget // (pos_bytes * g.P * Q)), g.P
        if not split_rows:
            nb = min(nb, -(-g.N // T))  # a chunk for every thread
        nb = _balanced(g.N, nb)
    else:  # one image's band of output rows
        nb, pb = 1, max(1, min(g.P, budget // (rows * Q * isz)))
        pb = _balanced(g.P, pb)
    per = rows * nb * pb * Q + (K * nb * pb * Q if nb > 1 else 0)
    per += 0 if split_rows else gw.size
    ws = _workspace(T * per, x.dtype)
    with single_threaded():
        _grad_weight_nchw.run(T, grad_y, x, gw, gemm_for(x.dtype), T, nb, pb, G,
                              split_rows, ws, per, _parts, *_taps(g))
    if not split_rows:  # the partials, added in thread order
        parts = ws.reshape(T, per)[:, per - gw.size:]
        flat = gw.reshape(-1)
        flat[:] = parts[0]
        for t in range(1, T):
            flat += parts[t]
    return gw


def grad_bias(grad_y, g: ConvGeometry):
    # A float64 accumulator: a float32 running sum over N*P*Q terms loses digits.
    axes = (0, 1, 2) if g.nhwc else (0, 2, 3)
    return grad_y.sum(axis=axes, dtype=np.float64).astype(grad_y.dtype)
