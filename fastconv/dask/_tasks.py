"""What the tasks of a chunked convolution run: NumPy blocks in, NumPy blocks out.

Each task calls fastconv's public functions on its blocks, under its share of the
process's threads: ``fastconv.get_num_threads()`` divided among the tasks the process
runs at once (a distributed worker's threads, or the local schedulers' pool of one
per core), so that tasks running side by side never ask for more threads than the
process was given. In a worker that Dask's nanny started, OMP_NUM_THREADS=1 makes the
count 1 (fastconv/_threads.py), so each task runs on one thread.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

import fastconv

from .._threads import thread_budget


def task_threads() -> int:
    """This task's share of the process's thread count (at least 1)."""
    return max(1, fastconv.get_num_threads() // _concurrent_tasks())


def _concurrent_tasks() -> int:
    try:
        from distributed import get_worker
        return get_worker().state.nthreads
    except (ImportError, ValueError):  # not in a distributed worker
        import dask
        from dask.system import CPU_COUNT
        return dask.config.get("num_workers", None) or CPU_COUNT


@dataclass(frozen=True)
class Block:
    """What one block's call takes besides its arrays: the stride and the block's own
    padding (nonzero at the array's borders only), the options every block shares, the
    shape and dtype of its result (for a window wholly in the padding, which has no
    input) and where the spatial axes are."""

    stride: tuple[int, int]
    pad: tuple[tuple[int, int], tuple[int, int]]
    options: dict = field(hash=False)
    shape: tuple[int, ...] = ()
    dtype: np.dtype = np.dtype(np.float64)
    hw_axes: tuple[int, int] = (2, 3)


def assemble(grid, hw_axes) -> np.ndarray:
    """A window from its pieces: ``grid[a][b]`` is the piece in row band a, column band b."""
    h_axis, w_axis = hw_axes
    rows = [line[0] if len(line) == 1 else np.concatenate(line, axis=w_axis) for line in grid]
    return rows[0] if len(rows) == 1 else np.concatenate(rows, axis=h_axis)


def _with_bias(y: np.ndarray, bias, c_axis: int) -> np.ndarray:
    if bias is not None:
        y += bias.reshape([-1 if a == c_axis else 1 for a in range(y.ndim)])
    return y


def _c_axis(block: Block) -> int:
    return 3 if block.options["layout"] == "NHWC" else 1


def forward(grid, w, bias, block: Block) -> np.ndarray:
    """conv2d of one output block from its window's pieces."""
    if not grid:  # every output reads padding only
        return _with_bias(np.zeros(block.shape, block.dtype), bias, _c_axis(block))
    x = assemble(grid, block.hw_axes).astype(block.dtype, copy=False)
    with thread_budget(task_threads()):
        return fastconv.conv2d(x, w, block.stride, block.pad, bias=bias, **block.options)


def scattered(x, w, block: Block) -> np.ndarray:
    """What one block of x gives to its window of the transposed output: the transposed
    convolution of the block, which is also conv2d's input gradient from a block of
    grad_y (the same pass: fastconv/_transpose.py)."""
    x = x.astype(block.dtype, copy=False)  # the whole call's dtype, which w alone may not give
    with thread_budget(task_threads()):
        return fastconv.conv_transpose2d(x, w, block.stride, block.pad, **block.options)


def weight_partial(grad_y, grid, w, block: Block) -> np.ndarray:
    """conv2d's weight gradient from one block of grad_y and its window of x, with a
    leading axis of 1 for the tree's sum."""
    if not grid:
        return np.zeros((1,) + w.shape, block.dtype)
    with thread_budget(task_threads()):
        g = fastconv.conv2d_backward(grad_y, assemble(grid, block.hw_axes), w, block.stride,
                                     block.pad, wrt="w", **block.options)
    return g.w[None]


def transposed_weight_partial(grid, x, w, block: Block) -> np.ndarray:
    """A transposed convolution's weight gradient from one block of x and its window of
    grad_y (the window x's block scattered into), with a leading axis of 1."""
    if not grid:
        return np.zeros((1,) + w.shape, block.dtype)
    with thread_budget(task_threads()):
        g = fastconv.conv_transpose2d_backward(assemble(grid, block.hw_axes), x, w,
                                               block.stride, block.pad, wrt="w",
                                               **block.options)
    return g.w[None]


def bias_partial(grad_y, c_axis: int, dtype) -> np.ndarray:
    """grad_y's sum over all but the channel axis, in ``dtype``, with a leading axis of 1."""
    axes = tuple(a for a in range(grad_y.ndim) if a != c_axis)
    return grad_y.sum(axis=axes, dtype=dtype)[None]


@dataclass(frozen=True)
class Owner:
    """One block of a scattered result: its shape and dtype, where each piece starts in
    it (spatial axes only), where the spatial and channel axes are."""

    shape: tuple[int, ...]
    dtype: np.dtype
    starts: tuple[tuple[int, int], ...]
    hw_axes: tuple[int, int]
    c_axis: int


def add_pieces(pieces, bias, owner: Owner) -> np.ndarray:
    """The owner block: the sum of the pieces of the windows that overlap it (zero where
    none does), plus the bias."""
    out = np.zeros(owner.shape, owner.dtype)
    h_axis, w_axis = owner.hw_axes
    for piece, (r, c) in zip(pieces, owner.starts):
        where = [slice(None)] * out.ndim
        where[h_axis] = slice(r, r + piece.shape[h_axis])
        where[w_axis] = slice(c, c + piece.shape[w_axis])
        out[tuple(where)] += piece
    return _with_bias(out, bias, owner.c_axis)
