"""The convolutions that are plain matrix products, run on our own threads.

Two kinds need no im2col at all: pointwise layers (1x1, stride 1, unpadded), whose
input already is the column matrix, and layers whose kernel covers the whole input
(fully connected layers written as convolutions: LeNet's C5, VGG's fc6), one output per
image. Each pass of them is one product per image and group (or per group).

They used to be one ``np.matmul`` each, which runs on NumPy's OpenBLAS pool: its
workers then spin for about 0.1 s after the product, and the next OpenMP region (the
direct engine's, or Numba's) waits for a core they hold. Here every product is cut into
tasks, each a single-threaded gemm (``_cblas``) that one of our threads runs while
every BLAS is held at one thread (``_blas.single_threaded``): one pool does the work,
and no other is started, woken or waited on. The threads are the direct engine's
OpenMP team (``_direct.run_tasks``, csrc/_products.pxi, which has the measurement), or,
when the compiled module is missing, the Numba kernel ``_run_tasks`` on the im2col
engine's threads.

A plan says, for one geometry, pass and thread count, which gemm calls each thread
makes, in BLAS's column-major language (see ``_cblas``): the operands' offsets,
leading dimensions and sizes. Products are cut along one side of their output, so every
output element is one gemm's dot product, or (grad_weight of a pointwise layer over
several images) a sum taken in image order by one thread: results are the same on
every run, and the work is split without partial sums.
"""
from __future__ import annotations

import functools
from typing import NamedTuple

import numpy as np

from .._blas import single_threaded
from .._geometry import ConvGeometry
from .._openmp import load_direct
from ._cblas import NOTRANS, TRANS
from ._loops import addresses_for, loops_for
from ._twin import kernel

# Columns of a task: offsets of a, b, c; m, n, k; beta (0 or 1); the bias offset (-1: none).
A_OFF, B_OFF, C_OFF, M, N, K, BETA, BIAS_OFF = range(8)
# Where the bias goes: nowhere, one value per column of C, one value per row of C.
NO_BIAS, BIAS_PER_COLUMN, BIAS_PER_ROW = 0, 1, 2
# The shortest side a task is cut to (a multiple of the widest vector, 16 floats).
MIN_SIDE = 16


@kernel
def _run_tasks(t, T, gemm, add_bias, transa, transb, a, lda, b, ldb, c, ldc, tasks, starts,
               bias, per_row):
    """Thread t makes the gemm calls tasks[starts[t]:starts[t + 1]], in order, each
    followed by its bias while the block is in cache (``gemm`` and ``add_bias``: the C
    loops of ``_loops``)."""
    for i in range(starts[t], starts[t + 1]):
        m, n, c0 = tasks[i, M], tasks[i, N], tasks[i, C_OFF]
        gemm(transa, transb, m, n, tasks[i, K], a.ctypes, tasks[i, A_OFF], lda,
             b.ctypes, tasks[i, B_OFF], ldb, 1.0 * tasks[i, BETA], c.ctypes, c0, ldc)
        if tasks[i, BIAS_OFF] >= 0:
            add_bias(c.ctypes, c0, m, n, ldc, bias.ctypes, tasks[i, BIAS_OFF], per_row)


class Plan(NamedTuple):
    """The gemm calls of one pass (see the module docstring)."""

    a: str  # which of the pass's arrays is gemm's a: "x", "w" or "y" (y or grad_y)
    b: str
    transa: int
    transb: int
    lda: int
    ldb: int
    ldc: int
    tasks: np.ndarray   # (calls, 8) int64, columns A_OFF .. BIAS_OFF
    starts: np.ndarray  # (threads + 1,) int64: thread t makes calls starts[t]:starts[t+1]
    bias_mode: int


def _cuts(side: int, products: int, T: int) -> np.ndarray:
    """Bounds cutting ``side`` into pieces, as few as make products * pieces a multiple
    of T (so T threads share them evenly), but none shorter than MIN_SIDE; the bounds
    fall on multiples of MIN_SIDE where they can."""
    pieces = 1
    while (products * pieces) % T and side // (pieces + 1) >= MIN_SIDE:
        pieces += 1
    bounds = [round(i * side / pieces / MIN_SIDE) * MIN_SIDE for i in range(pieces)]
    return np.array(bounds + [side], np.int64)


def _plan(operands, transa, transb, lda, ldb, ldc, m, n, k, a_offs, b_offs, c_offs, split, T,
          bias_offs=None, bias_mode=NO_BIAS) -> Plan:
    """Cut products into tasks for T threads.

    a_offs, b_offs: (products, parts) offsets, the parts of a product summed into it in
    order; c_offs: (products,). Every product is (m x n) = op(a) (m x k) . op(b) (k x n).
    ``split`` is "m" or "n", the side of C cut into pieces; bias_offs (products,), with
    the bias per row or per column of C.
    """
    a_offs, b_offs = (np.asarray(o).reshape(len(c_offs), -1) for o in (a_offs, b_offs))
    products, parts = a_offs.shape
    side = m if split == "m" else n
    cuts = _cuts(side, products, T)
    lo, size = cuts[:-1], np.diff(cuts)
    if split == "m":  # rows i0.. of op(a) and of c
        da, db, dc = lo * (lda if transa == TRANS else 1), 0 * lo, lo
    else:  # columns j0.. of op(b) and of c
        da, db, dc = 0 * lo, lo * (1 if transb == TRANS else ldb), lo * ldc
    dbias = lo if (split == "m") == (bias_mode == BIAS_PER_ROW) else 0 * lo
    units = products * lo.size
    tasks = np.empty((units, parts, 8), np.int64)
    tasks[..., A_OFF] = (a_offs[:, None, :] + da[None, :, None]).reshape(units, parts)
    tasks[..., B_OFF] = (b_offs[:, None, :] + db[None, :, None]).reshape(units, parts)
    tasks[..., C_OFF] = np.add.outer(c_offs, dc).reshape(units, 1)
    tasks[..., M] = np.tile(size if split == "m" else np.full_like(size, m), products)[:, None]
    tasks[..., N] = np.tile(size if split == "n" else np.full_like(size, n), products)[:, None]
    tasks[..., K] = k
    tasks[..., BETA] = 1
    tasks[:, 0, BETA] = 0
    tasks[..., BIAS_OFF] = -1
    if bias_offs is not None:  # after the last part
        tasks[:, -1, BIAS_OFF] = np.add.outer(np.asarray(bias_offs), dbias).reshape(units)
    T = min(T, units)
    starts = np.array([t * units // T * parts for t in range(T + 1)], np.int64)
    return Plan(*operands, transa, transb, lda, ldb, ldc, tasks.reshape(-1, 8), starts,
                bias_mode)


# Which arrays are gemm's (a, b).
XW, YW, XY, WX, WY, YX = ("x", "w"), ("y", "w"), ("x", "y"), ("w", "x"), ("w", "y"), ("y", "x")


def _larger(m: int, n: int) -> str:
    return "m" if m >= n else "n"


@functools.lru_cache(maxsize=512)
def plan(g: ConvGeometry, pass_name: str, T: int, has_bias: bool = False) -> Plan:
    """The plan of one pass of a pointwise or whole-window convolution: forward makes
    y from (x, w), grad_input grad_x from (grad_y, w), grad_weight grad_w from
    (grad_y, x); ``Plan.a`` and ``Plan.b`` say which is gemm's a and b."""
    G, Cg, Kg, C, K, Nimg = g.groups, g.Cg, g.Kg, g.C, g.K, g.N
    gi = np.arange(G)
    if g.is_pointwise and not g.nhwc:
        HW = g.H * g.W
        # per (image, group): the group's Cg (or Kg) rows of HW positions
        xo = (np.arange(Nimg)[:, None] * C + gi[None, :] * Cg).ravel() * HW
        yo = (np.arange(Nimg)[:, None] * K + gi[None, :] * Kg).ravel() * HW
        wo = np.tile(gi * Kg * Cg, Nimg)
        if pass_name == "forward":  # yᵀ (HW x Kg) = xᵀ (HW x Cg) . W_gᵀ (Cg x Kg)
            return _plan(XW, NOTRANS, NOTRANS, HW, Cg, HW, HW, Kg, Cg, xo, wo, yo, "m", T,
                         np.tile(gi * Kg, Nimg) if has_bias else None, BIAS_PER_COLUMN)
        if pass_name == "grad_input":  # dxᵀ (HW x Cg) = dyᵀ (HW x Kg) . W_g (Kg x Cg)
            return _plan(YW, NOTRANS, TRANS, HW, Cg, HW, HW, Cg, Kg, yo, wo, xo, "m", T)
        # dW_gᵀ (Cg x Kg) = sum over images of x (Cg x HW) . dyᵀ (HW x Kg)
        xo, yo = xo.reshape(Nimg, G).T, yo.reshape(Nimg, G).T  # (G, N): parts in image order
        return _plan(XY, TRANS, NOTRANS, HW, HW, Cg, Cg, Kg, HW, xo, yo, gi * Kg * Cg,
                     _larger(Cg, Kg), T)
    if g.is_pointwise:  # NHWC: rows of C (or K) channels, one per position
        Mpos = Nimg * g.H * g.W
        if pass_name == "forward":  # y (K x M) = W (K x Cg) . x (Cg x M), per group
            return _plan(WX, NOTRANS, NOTRANS, K, C, K, Kg, Mpos, Cg, gi * Kg, gi * Cg, gi * Kg,
                         "n", T, gi * Kg if has_bias else None, BIAS_PER_ROW)
        if pass_name == "grad_input":  # dx (Cg x M) = Wᵀ (Cg x Kg) . dy (Kg x M)
            return _plan(WY, TRANS, NOTRANS, K, K, C, Cg, Mpos, Kg, gi * Kg, gi * Kg, gi * Cg,
                         "n", T)
        # dW (Kg x Cg) = dy (Kg x M) . xᵀ (M x Cg)
        return _plan(YX, NOTRANS, TRANS, K, C, K, Kg, Cg, Mpos, gi * Kg, gi * Cg, gi * Kg,
                     _larger(Kg, Cg), T)
    if not g.covers_input:
        raise ValueError("plan() takes pointwise and whole-window geometries only")
    if not g.nhwc:  # x (N, G, CRSg), y (N, G, Kg), w (G, Kg, CRSg)
        crs, crsg = C * g.R * g.S, Cg * g.R * g.S
        if pass_name == "forward":  # y (Kg x N) = W_g (Kg x CRSg) . x (CRSg x N)
            return _plan(WX, TRANS, NOTRANS, crsg, crs, K, Kg, Nimg, crsg, gi * Kg * crsg,
                         gi * crsg, gi * Kg, _larger(Kg, Nimg), T,
                         gi * Kg if has_bias else None, BIAS_PER_ROW)
        if pass_name == "grad_input":  # dx (CRSg x N) = W_gᵀ (CRSg x Kg) . dy (Kg x N)
            return _plan(WY, NOTRANS, NOTRANS, crsg, K, crs, crsg, Nimg, Kg, gi * Kg * crsg,
                         gi * Kg, gi * crsg, _larger(crsg, Nimg), T)
        # dW_gᵀ (CRSg x Kg) = x (CRSg x N) . dyᵀ (N x Kg)
        return _plan(XY, NOTRANS, TRANS, crs, K, crsg, crsg, Kg, Nimg, gi * crsg, gi * Kg,
                     gi * Kg * crsg, _larger(crsg, Kg), T)
    rsc = g.R * g.S * C  # NHWC, groups == 1: x (N, RSC) in HWIO's (r, s, c) order
    zero = np.zeros(1, np.int64)
    if pass_name == "forward":  # y (K x N) = W (K x RSC) . x (RSC x N)
        return _plan(WX, NOTRANS, NOTRANS, K, rsc, K, K, Nimg, rsc, zero, zero, zero,
                     _larger(K, Nimg), T, zero if has_bias else None, BIAS_PER_ROW)
    if pass_name == "grad_input":  # dx (RSC x N) = Wᵀ (RSC x K) . dy (K x N)
        return _plan(WY, TRANS, NOTRANS, K, K, rsc, rsc, Nimg, K, zero, zero, zero,
                     _larger(rsc, Nimg), T)
    # dW (K x RSC) = dy (K x N) . xᵀ (N x RSC)
    return _plan(YX, NOTRANS, TRANS, K, rsc, K, K, rsc, Nimg, zero, zero, zero,
                 _larger(K, rsc), T)


_team = load_direct()  # None when not built


def team():
    """The compiled module whose OpenMP team makes the products, or None (Numba's)."""
    return _team


def run(p: Plan, arrays: dict, c: np.ndarray, bias=None) -> None:
    """Make the plan's gemm calls, c = op(a) . op(b) (+ bias), on p's threads;
    ``arrays`` maps "x", "w", "y" to the pass's C-contiguous inputs."""
    a, b = arrays[p.a], arrays[p.b]
    bias = bias if bias is not None else np.empty(0, c.dtype)
    T = p.starts.size - 1
    per_row = int(p.bias_mode == BIAS_PER_ROW)
    if not all(v.flags.c_contiguous for v in (a, b, c, bias)):
        raise ValueError("products: a, b, c and bias must be C-contiguous")  # by address
    with single_threaded():
        if _team is not None:
            fn = addresses_for(c.dtype)
            _team.run_tasks(fn["gemm"], fn["bias_block"], p.transa, p.transb,
                            a.ctypes.data, p.lda, b.ctypes.data, p.ldb, c.ctypes.data,
                            p.ldc, p.tasks, p.starts, bias.ctypes.data, per_row)
            return
        fn = loops_for(c.dtype)
        _run_tasks.run(T, T, fn.gemm, fn.bias_block, p.transa, p.transb, a.reshape(-1),
                       p.lda, b.reshape(-1), p.ldb, c.reshape(-1), p.ldc, p.tasks, p.starts,
                       bias, per_row)
