"""im2col engine: im2col/col2im pieces around BLAS matrix products, in bounded memory.

Numba kernels hold the schedule (which piece, which offsets, which product); the loops
that move the data are C (``_loops``: csrc/im2col_loops.c), and so is the call into
BLAS (``_cblas``), so that a first call compiles only the schedule (see First call
below).

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

Pieces on the team. The NCHW kernels' schedule is also written in Cython
(csrc/_pieces.pxi: the same shares, the same calls in the same order, so the same bits)
and runs on the direct engine's OpenMP team, without the GIL: a piece right after a
direct call takes the team's threads, still spinning from that call, instead of
sharing the cores with them, and a first NCHW call compiles nothing. Measured on the
Zen 4 EPYC (2026-12-07, float32, FASTCONV_SIMD=avx2, ResNet-18 batch 8 layers, 15
interleaved calls each), Numba kernels on our threads / pieces on the team:
layer4's 3x3 forward 13.4 / 11.3 ms, its forward + backward 26.5 / 24.2 ms, the
strided layer4.0.conv1 forward 8.3 / 5.8 ms. The Numba kernels run the NHWC passes,
and the NCHW ones where the compiled module is missing (``_products.team()`` is None).

Threads: BLAS is set single-threaded for the duration of every kernel that calls it
from our threads (``_blas.single_threaded``), so no BLAS pool runs inside a kernel.
"""
from __future__ import annotations

import contextlib
import threading

import numpy as np
from numba import njit

from .._blas import single_threaded
from .._geometry import ConvGeometry
from .._threads import kernel_threads, run_shares, threads_for
from .._workspace import get_workspace_limit
from ._alloc import output
from ._cblas import NOTRANS, TRANS
from ._fpmode import FLUSHES
from ._loops import address, addresses_for, loops_for
from ._products import plan as _products_plan
from ._products import team as _products_team
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
    if _products_team() is None:
        return ("per-thread pieces on fastconv's threads, each multiplied by a "
                "single-threaded BLAS gemm; so are the 1x1 and whole-window products")
    return ("per-thread pieces, each multiplied by a single-threaded BLAS gemm, on the "
            "direct engine's OpenMP team (NCHW) or fastconv's threads (NHWC); 1x1 and "
            "whole-window products on the team")


def _taps(g: ConvGeometry):
    """The geometry ints every kernel takes after its arrays."""
    return (g.R, g.S, g.P, g.Q, g.stride_h, g.stride_w, g.dil_h, g.dil_w,
            g.pad_top, g.pad_left)


def _tap_array(g: ConvGeometry) -> np.ndarray:
    """``_taps`` as the int64 array the team's pieces take (csrc/_pieces.pxi)."""
    return np.array(_taps(g), np.int64)


# ---------------------------------------------------------------------------------
# Subnormal inputs. BLAS takes a slow microcode path for every subnormal operand
# (measured 7x slower forward on subnormal inputs). So the engine reads subnormal
# inputs as zero, as the direct engine's DAZ mode does: a change of at most 1.2e-38 per
# product, far inside every tolerance. The BLAS calls run with FTZ/DAZ set (the C loops
# set it around each call: ``_fpmode``). Where FTZ/DAZ cannot be set (not x86-64), the
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
# Kernels. Each thread's share (t of T, see ``_twin``) is a disjoint block of its
# output, so nothing is shared between threads and the sums are added in the same order
# on every run.
#
# First call. Numba compiles each kernel the first time a process meets it with an
# empty cache, so the kernels hold only the schedule: which piece, which offsets, which
# product. The loops that move data (im2col, col2im, the filter flips, the bias) are C,
# compiled with the wheel (``_loops``, csrc/im2col_loops.c), and so is the call into
# BLAS (``_cblas``). Measured on Zen 1 (2026-12-03, empty Numba cache, 8 -> 16 channels
# 3x3, float32): the first forward + backward 10.5 s with the loops in Numba, of which
# 9.6 s compiling the forward and grad_weight kernels.
#
# The three NCHW passes. One share per thread, each owning a fixed share of the work
# (so results do not depend on scheduling) and a slice ``per`` of the workspace that
# holds its columns: a piece of the column matrix small enough to stay in L2
# (CHUNK_BYTES) while BLAS, single-threaded in this thread, multiplies it. Measured on
# vgg_conv1_2 forward (2 threads): the whole-batch layout (64 MiB of columns per chunk,
# written to memory and read back by a 2-thread product) 97 ms; per-thread pieces of
# 1 MiB 56 ms, of which the products alone are 36 ms.


@_kernel
def _forward_nchw(t, x, w, bias, y, unroll, gemm, unfold, add_bias, T, nb, pb, nbands, G,
                  ws, per, parts, R, S, P, Q, sh, sw, dh, dw, pt, pl):
    """y[images, :, band] = W . cols(images, band) + bias, for the units t*U//T ..
    (t+1)*U//T of thread t. A unit is one image's band of pb output rows, or, for small
    images (pb == P), nb whole images side by side: their product lands in the thread's
    buffer (K, nb*P*Q) and is copied out to y (a wider product: resnet_c5_3x3, 7x7
    images, runs single-threaded gemm at 105 GFLOP/s on one image, 142 on four).
    unroll, gemm, unfold, add_bias: the C loops for the arrays' dtype (``_loops``)."""
    N, C, H, W, K = x.shape[0], x.shape[1], x.shape[2], x.shape[3], y.shape[1]
    Kg, crsg, PQ = K // G, C // G * R * S, P * Q
    U = (N + nb - 1) // nb * nbands
    cols = ws[t * per:(t + 1) * per]
    out = ws[t * per + C * R * S * nb * pb * Q:(t + 1) * per]  # (K, nb*P*Q) if nb > 1
    for u in range(t * U // T, (t + 1) * U // T):
        n, p0 = u // nbands * nb, u % nbands * pb
        nu, pe = min(nb, N - n), min(pb, P - p0)
        L = pe * Q
        M = nu * L
        if parts & UNROLL:
            unroll(x.ctypes, C, H, W, n, nu, p0, pe, 0, C * R * S, cols.ctypes,
                   M, L, R, S, Q, sh, sw, dh, dw, pt, pl)
        for g in range(G if parts & PRODUCT else 0):
            # y_g (Kg, M) = W_g (Kg, crsg) . cols_g (crsg, M); to BLAS, column-major:
            # y_gᵀ (M x Kg, ld PQ or M) = cols_gᵀ (M x crsg, ld M) . W_gᵀ (crsg x Kg)
            if nb == 1:  # (flat: one array type for both)
                dst, d0, ld = y.reshape(-1), (n * K + g * Kg) * PQ + p0 * Q, PQ
            else:
                dst, d0, ld = out, g * Kg * M, M
            gemm(NOTRANS, NOTRANS, M, Kg, crsg, cols.ctypes, g * crsg * M, M,
                 w.ctypes, g * Kg * crsg, crsg, 0.0, dst.ctypes, d0, ld)
        if nb > 1:  # (K, nu*PQ) -> y[n:n+nu] (nu, K, PQ), adding the bias
            unfold(out.ctypes, M, y.ctypes, n, nu, K, PQ, bias.ctypes, bias.size)
        elif bias.size:  # while the band is in cache
            add_bias(y.ctypes, n * K * PQ + p0 * Q, PQ, K, L, bias.ctypes)


def _flip_swap(t, flip, w, out, T):
    """out[g, c, k, j] = w[g, k, c, RS-1-j] (``flip_swap`` of csrc/im2col_loops.c), in
    blocks of 16 channels: share t takes blocks t*B//T .. (t+1)*B//T. A plain function
    run by ``run_shares``: ctypes releases the GIL for the C loop, and a Numba kernel
    around one call cost 0.3 s of compiling on a first call."""
    G, Kg, Cg, RS = w.shape
    B = G * ((Cg + 15) // 16)
    flip(w.ctypes.data, out.ctypes.data, G, Kg, Cg, RS, t * B // T, (t + 1) * B // T)


@_kernel
def _grad_input_nchw(t, gy, w, gx, gemm, fold, stage, T, nb, pb, G, ws, per, parts,
                     R, S, P, Q, sh, sw, dh, dw, pt, pl):
    """gx = col2im(Wᵀ . dY), thread t owning images t*N//T .. (t+1)*N//T whole (the
    windows of neighbouring bands overlap in gx, so a band cannot be a thread's own).
    Only strided convolutions take this path: at stride 1 grad_input is a forward
    convolution (see ``grad_input``).

    A unit is one image's band of pb output rows, or, for small maps (pb == P), nb whole
    images: their dY staged side by side (K, nb*P*Q) after the columns in the thread's
    slice, so that one product serves them all (dcgan_up8's 4x4 maps: 16 positions an
    image), and each image folded from its columns of the product."""
    N, K, C, H, W = gy.shape[0], gy.shape[1], gx.shape[1], gx.shape[2], gx.shape[3]
    Kg, crsg, PQ = K // G, C // G * R * S, P * Q
    dcols = ws[t * per:(t + 1) * per]
    staged = ws[t * per + C * R * S * nb * pb * Q:(t + 1) * per]  # (K, nb*P*Q) if nb > 1
    gyf = gy.reshape(-1)
    i0, i1 = t * N // T, (t + 1) * N // T
    for n0 in range(i0, i1, nb):
        nu = min(nb, i1 - n0)
        for n in range(n0, n0 + nu):
            gx[n] = 0
        for p0 in range(0, P, pb):
            pe = min(pb, P - p0)
            M = nu * pe * Q
            if nb == 1:  # dY of one image's band, read in place (flat, as staged)
                dy, d0, ld = gyf, n0 * K * PQ + p0 * Q, PQ
            else:
                dy, d0, ld = staged, 0, M
                if parts & PRODUCT:
                    stage(gy.ctypes, n0, nu, K, PQ, staged.ctypes, M)
            for g in range(G if parts & PRODUCT else 0):
                # dcols_g (crsg, M) = W_gᵀ (crsg, Kg) . dY_g (Kg, M); to BLAS:
                # dcols_gᵀ (M x crsg, ld M) = dY_gᵀ (M x Kg, ld) . W_g (Kg x crsg)
                gemm(NOTRANS, TRANS, M, crsg, Kg, dy.ctypes, d0 + g * Kg * ld, ld,
                     w.ctypes, g * Kg * crsg, crsg, 0.0, dcols.ctypes, g * crsg * M, M)
            for j in range(nu if parts & UNROLL else 0):  # image n0 + j: columns j*PQ..
                fold(dcols[j * pe * Q:].ctypes, M, n0 + j, p0, pe, gx.ctypes, C, H, W,
                     R, S, Q, sh, sw, dh, dw, pt, pl)


@_kernel
def _grad_weight_nchw(t, gy, x, gw, unroll, gemm, stage, T, nb, pb, G, split_rows, ws, per, parts,
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
    N, C, H, W, K = x.shape[0], x.shape[1], x.shape[2], x.shape[3], gy.shape[1]
    Kg, crs, PQ = K // G, C * R * S, P * Q
    crsg = crs // G
    nbands = (P + pb - 1) // pb
    nchunks = (N + nb - 1) // nb * nbands
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
    staged = buf[(r1 - r0) * mmax:]
    for ci in range(c0, c1):
        n0, p0 = ci // nbands * nb, ci % nbands * pb
        n1, pe = min(N, n0 + nb), min(pb, P - p0)
        L = pe * Q
        M = (n1 - n0) * L
        if parts & UNROLL:
            unroll(x.ctypes, C, H, W, n0, n1 - n0, p0, pe, r0, r1, buf.ctypes,
                   M, L, R, S, Q, sh, sw, dh, dw, pt, pl)
        if n1 - n0 == 1:  # dY of one image's band: read in place (flat, as staged)
            dy, d0, ld = gy.reshape(-1), n0 * K * PQ + p0 * Q, PQ
        else:  # several images side by side: (K, M)
            dy, d0, ld = staged, 0, M
            if parts & UNROLL:
                stage(gy.ctypes, n0, n1 - n0, K, PQ, staged.ctypes, M)
        beta = 0.0 if ci == c0 else 1.0
        for g in range(G if parts & PRODUCT else 0):
            lo, hi = max(r0, g * crsg), min(r1, (g + 1) * crsg)
            if lo >= hi:
                continue
            # dW_gᵀ rows lo:hi (ld crsg) = cols rows lo:hi (M x (hi-lo) to BLAS,
            # ld M, transposed) . dY_gᵀ (M x Kg, ld)
            gemm(TRANS, NOTRANS, hi - lo, Kg, M, buf.ctypes, (lo - r0) * M, M,
                 dy.ctypes, d0 + g * Kg * ld, ld, beta,
                 out.ctypes, g * Kg * crsg + lo - g * crsg, crsg)


# NHWC: the same pieces, with one column-matrix row per output position, its entries
# in (g, r, s, cg) order to match HWIO filters: a group's product W_gᵀ . cols_gᵀ comes
# out (Kg, M) to BLAS, which is y's rows (M, K) at column g*Kg, ld K. Output rows of
# consecutive images are consecutive in y, so a piece is any run of output rows
# (image, p), across images: small images need no folding.


@_kernel
def _forward_nhwc(t, x, w, bias, y, unroll, gemm, add_bias, T, rb, G, ws, per, parts,
                  R, S, P, Q, sh, sw, dh, dw, pt, pl):
    """y = W . cols + bias in pieces of rb output rows (across images): thread t takes
    pieces t*U//T .. (t+1)*U//T."""
    N, H, W, C, K = x.shape[0], x.shape[1], x.shape[2], x.shape[3], y.shape[3]
    Kg, F = K // G, R * S * C
    Fg = F // G
    NP = N * P
    U = (NP + rb - 1) // rb
    cols = ws[t * per:(t + 1) * per]
    for u in range(t * U // T, (t + 1) * U // T):
        i0, i1 = u * rb, min(NP, (u + 1) * rb)
        M = (i1 - i0) * Q
        if parts & UNROLL:
            unroll(x.ctypes, H, W, C, i0, i1, 0, F, G, cols.ctypes,
                   R, S, P, Q, sh, sw, dh, dw, pt, pl)
        for g in range(G if parts & PRODUCT else 0):
            # y rows (M, K), columns g*Kg: to BLAS (Kg x M, ld K) =
            # W_gᵀ (Kg x Fg: HWIO at column g*Kg, ld K) . cols_gᵀ (Fg x M, ld F)
            gemm(NOTRANS, NOTRANS, Kg, M, Fg, w.ctypes, g * Kg, K,
                 cols.ctypes, g * Fg, F, 0.0, y.ctypes, i0 * Q * K + g * Kg, K)
        if bias.size:
            add_bias(y.ctypes, i0 * Q * K, M, K, bias.ctypes)


def _flip_swap_hwio(t, flip, w, out, T):
    """out[RS-1-j, k, g, c] = w[j, c, g, k] (``flip_swap_hwio`` of csrc/im2col_loops.c):
    share t takes the rows i = j*Kg + k from t*B//T to (t+1)*B//T (as ``_flip_swap``)."""
    RS, Cg, G, Kg = w.shape
    B = RS * Kg
    flip(w.ctypes.data, out.ctypes.data, RS, Cg, G, Kg, t * B // T, (t + 1) * B // T)


@_kernel
def _grad_input_nhwc(t, gy, w, gx, gemm, fold, T, pb, G, ws, per, parts,
                     R, S, P, Q, sh, sw, dh, dw, pt, pl):
    """Strided grad_input: col2im of Wᵀ . dY, whole images per thread (t*N//T ..)."""
    N, K, H, W, C = gy.shape[0], gy.shape[3], gx.shape[1], gx.shape[2], gx.shape[3]
    Kg, F = K // G, R * S * C
    Fg = F // G
    dcols = ws[t * per:(t + 1) * per]
    for n in range(t * N // T, (t + 1) * N // T):
        gx[n] = 0
        for p0 in range(0, P, pb):
            pe = min(pb, P - p0)
            M = pe * Q
            for g in range(G if parts & PRODUCT else 0):
                # dcols_g (M, Fg), ld F: to BLAS (Fg x M) = W_g (Fg x Kg: HWIO
                # transposed, ld K) . dY_gᵀ (Kg x M, ld K)
                gemm(TRANS, NOTRANS, Fg, M, Kg, w.ctypes, g * Kg, K,
                     gy.ctypes, (n * P + p0) * Q * K + g * Kg, K, 0.0,
                     dcols.ctypes, g * Fg, F)
            if parts & UNROLL:
                fold(dcols.ctypes, n, p0, pe, G, gx.ctypes, H, W, C,
                     R, S, Q, sh, sw, dh, dw, pt, pl)


@_kernel
def _grad_weight_nhwc(t, gy, x, gw, unroll, gemm, T, rb, G, ws, per, parts,
                      R, S, P, Q, sh, sw, dh, dw, pt, pl):
    """dW (HWIO) = colsᵀ . dY, summed over pieces of rb output rows in order. Thread t
    owns the column entries f = t*F//T .. (t+1)*F//T, i.e. those rows of dW, unrolls
    only them, and adds every piece's product into them: no partial sums."""
    N, H, W, C, K = x.shape[0], x.shape[1], x.shape[2], x.shape[3], gy.shape[3]
    Kg, F = K // G, R * S * C
    Fg = F // G
    NP = N * P
    U = (NP + rb - 1) // rb
    f0, f1 = t * F // T, (t + 1) * F // T
    cols = ws[t * per:(t + 1) * per]
    for u in range(U):
        i0, i1 = u * rb, min(NP, (u + 1) * rb)
        M = (i1 - i0) * Q
        if parts & UNROLL:
            unroll(x.ctypes, H, W, C, i0, i1, f0, f1, G, cols.ctypes,
                   R, S, P, Q, sh, sw, dh, dw, pt, pl)
        for g in range(G if parts & PRODUCT else 0):
            lo, hi = max(f0, g * Fg), min(f1, (g + 1) * Fg)
            if lo >= hi:
                continue
            # dW rows lo:hi (HWIO, row (r, s, cg), ld K), columns g*Kg: to BLAS
            # (Kg x (hi-lo)) = dY_gᵀ (Kg x M, ld K) . cols (M x (hi-lo), ld f1-f0)
            gemm(NOTRANS, TRANS, Kg, hi - lo, M, gy.ctypes, i0 * Q * K + g * Kg, K,
                 cols.ctypes, lo - f0, f1 - f0, 0.0 if u == 0 else 1.0,
                 gw.ctypes, (lo - g * Fg) * K + g * Kg, K)


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


def _folds_images(g: ConvGeometry, T: int) -> bool:
    """Whether the NCHW pieces put whole images side by side in one product
    (``_forward_nchw``, and strided grad_input's ``_grad_input_nchw`` when an image is a
    single band): small maps, more images than threads.

    A pointwise layer then runs through the pieces too, not through one product per
    image (``_products``): each of those packs the whole filter matrix for 49 columns.
    Measured (2026-12-08, Emerald Rapids, 2 threads, float32, N=8, 7x7 maps, medians of
    5 interleaved rounds, products / pieces ms): MobileNetV2's 576 -> 160 0.72 / 0.63,
    960 -> 160 1.06 / 0.98, 160 -> 960 0.99 / 0.84, 960 -> 320 1.91 / 1.68, 320 -> 1280
    2.38 / 2.01; ResNet-50's 512 -> 2048 5.80 / 4.72, 2048 -> 512 5.99 / 4.84 (PyTorch
    0.58 to 4.70 on the same layers). On 14x14 maps the two are even (1024 -> 256
    5.06 / 5.12), and those do not fold."""
    return not g.nhwc and g.P * g.Q < FOLD_POSITIONS and g.N > T


def forward(x, w, bias, g: ConvGeometry, packs=None):  # packs: unused (no packing)
    x, w = _readable(x, w)
    y = output(g.y_shape, x.dtype)
    if _dense(g) or (g.is_pointwise and not _folds_images(g, _start(g))):
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
    if _folds_images(g, T):
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
    fn, team = loops_for(x.dtype), _products_team()
    if flip_swap:
        wt = ws[T * per:].reshape(g.K, g.Cg, g.R, g.S)
        if _parts & UNROLL and team is not None:
            team.flip_swap_pieces(addresses_for(x.dtype)["flip_swap"], address(w),
                                  address(wt), g.groups, g.Cg, g.Kg, g.R * g.S, T)
        elif _parts & UNROLL:
            run_shares(_flip_swap, T, (fn.flip_swap, w.reshape(g.groups, g.Cg, g.Kg, -1),
                                       wt.reshape(g.groups, g.Kg, g.Cg, -1), T))
        w = wt
    b = bias if bias is not None else np.empty(0, x.dtype)
    with single_threaded():
        if team is not None:
            a = addresses_for(x.dtype)
            team.forward_pieces(a["unroll_nchw"], a["gemm"], a["unfold_images"],
                                a["bias_rows"], x.itemsize, address(x), *x.shape,
                                address(w), address(b), b.size, address(y), y.shape[1], T,
                                nb, pb, nbands, g.groups, address(ws), per, _parts,
                                _tap_array(g))
            return
        _forward_nchw.run(T, x, w, b, y, fn.unroll_nchw, fn.gemm, fn.unfold_images,
                          fn.bias_rows, T, nb, pb, nbands, g.groups, ws, per, _parts,
                          *_taps(g))


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
    fn = loops_for(x.dtype)
    if flip_swap:
        wt = ws[T * per:].reshape(g.R, g.S, g.Cg, g.K)
        if _parts & UNROLL:
            run_shares(_flip_swap_hwio, T, (fn.flip_swap_hwio,
                                            w.reshape(-1, g.Kg, g.groups, g.Cg),
                                            wt.reshape(-1, g.Cg, g.groups, g.Kg), T))
        w = wt
    b = bias if bias is not None else np.empty(0, x.dtype)
    with single_threaded():
        _forward_nhwc.run(T, x, w, b, y, fn.unroll_nhwc, fn.gemm, fn.bias_cols, T, rb,
                          g.groups, ws, per, _parts, *_taps(g))


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
    G, Q, isz, fn = g.groups, g.Q, grad_y.itemsize, loops_for(grad_y.dtype)
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
            _grad_input_nhwc.run(T, grad_y, w, gx, fn.gemm, fn.fold_nhwc, T, pb, G, ws,
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
    pb, nb = _image_band(g, isz, T), 1
    PQ = g.P * Q
    if pb == g.P and _folds_images(g, T):
        # Small maps: whole images side by side in one product, as many as make
        # FOLD_POSITIONS and fit FOLD_CHUNK_BYTES (columns and staged dY)
        fit = _thread_budget(T, crs * Q * isz, FOLD_CHUNK_BYTES) // ((crs + g.K) * PQ * isz)
        nb = max(1, min(-(-FOLD_POSITIONS // PQ), g.N // T, fit))
    per = crs * pb * Q if nb == 1 else (crs + g.K) * nb * PQ
    ws = _workspace(T * per, grad_y.dtype)
    team = _products_team()
    with single_threaded():
        if team is not None:
            a = addresses_for(grad_y.dtype)
            team.grad_input_pieces(a["gemm"], a["fold_nchw"], a["stage_images"], isz,
                                   address(grad_y), g.N, g.K, address(w), address(gx),
                                   g.C, g.H, g.W, T, nb, pb, G, address(ws), per, _parts,
                                   _tap_array(g))
        else:
            _grad_input_nchw.run(T, grad_y, w, gx, fn.gemm, fn.fold_nchw, fn.stage_images,
                                 T, nb, pb, G, ws, per, _parts, *_taps(g))
    return gx


def grad_weight(grad_y, x, g: ConvGeometry):
    grad_y, x = _readable(grad_y, x)
    G, K, Q, isz, fn = g.groups, g.K, g.Q, x.itemsize, loops_for(x.dtype)
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
            _grad_weight_nhwc.run(T, grad_y, x, gw, fn.unroll_nhwc, fn.gemm, T, rb, G, ws,
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
    team = _products_team()
    with single_threaded():
        if team is not None:
            a = addresses_for(x.dtype)
            team.grad_weight_pieces(a["unroll_nchw"], a["gemm"], a["stage_images"], isz,
                                    address(grad_y), address(x), g.N, g.C, g.H, g.W, K,
                                    address(gw), gw.size, T, nb, pb, G, int(split_rows),
                                    address(ws), per, _parts, _tap_array(g))
        else:
            _grad_weight_nchw.run(T, grad_y, x, gw, fn.unroll_nchw, fn.gemm,
                                  fn.stage_images, T, nb, pb, G, split_rows, ws, per,
                                  _parts, *_taps(g))
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
