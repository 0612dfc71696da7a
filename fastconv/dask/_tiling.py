"""How one spatial axis of a chunked convolution is cut: plain integers, no Dask.

Output ``p`` of an axis reads the padded input rows ``[p * stride, p * stride + E)``,
E = (R - 1) * dilation + 1 the kernel's reach, i.e. the input rows
``[p * stride - pad_before, p * stride - pad_before + E)``. An output block ``[p0, p1)``
therefore reads the window ``[p0 * stride - pad_before, (p1 - 1) * stride - pad_before
+ E)``; what of it lies outside the input is padding, which the block's own call
supplies (``pads``), so only the array's borders are ever padded.

A forward convolution's output block i holds the outputs p whose stride multiple
p * stride lies in input chunk i (the last block also those past the input's end, which
bottom padding makes). With stride 1 and "same" padding the output is then chunked
exactly as the input, as ``map_overlap`` would chunk it, and layer after layer keeps
its chunks. Block i's window is its chunk shifted up by pad_before: it takes pad_before
rows from the chunks before (the padding, for the first) and E - stride - pad_before
rows from the chunks after, the halo, E - stride rows in all, from as many chunks as it
takes however thin they are; a negative count means rows at the chunk's end that no
window of its block reads. When every chunk starts at a multiple of the stride, each
output block is exactly chunk / stride long; otherwise output blocks are uneven (the
ceiling and floor of chunk / stride) and a halo up to stride - 1 rows longer. Nothing
is rechunked either way. A chunk holding no stride multiple (thinner than the stride)
gives no output block.
"""
from __future__ import annotations

from dataclasses import dataclass
from itertools import accumulate


def bounds(chunks) -> tuple[int, ...]:
    """(0, c0, c0 + c1, ..., total): where each chunk starts, and the end."""
    return (0, *accumulate(chunks))


def _chunks(bnds) -> tuple[int, ...]:
    return tuple(b - a for a, b in zip(bnds, bnds[1:]))


@dataclass(frozen=True)
class AxisTiles:
    """One axis of a chunked convolution. Output block i holds ``out_chunks[i]`` outputs
    and reads input rows ``windows[i] = (lo, hi)`` of the ``length`` input rows, padded by
    ``pads[i] = (before, after)``; a window with ``lo == hi`` lies wholly in the padding
    (its outputs are the bias alone)."""

    length: int
    stride: int
    out_chunks: tuple[int, ...]
    windows: tuple[tuple[int, int], ...]
    pads: tuple[tuple[int, int], ...]


def tiles_for_outputs(out_chunks, length: int, kernel: int, stride: int, dilation: int,
                      pad_before: int) -> AxisTiles:
    """The windows and pads of given output blocks over an input of ``length`` rows."""
    reach = (kernel - 1) * dilation + 1
    windows, pads = [], []
    edges = bounds(out_chunks)
    for p0, p1 in zip(edges, edges[1:]):
        start = p0 * stride - pad_before
        stop = (p1 - 1) * stride - pad_before + reach
        lo, hi = min(max(start, 0), length), max(min(stop, length), 0)
        if hi <= lo:  # every output of the block reads padding only
            windows.append((lo, lo))
            pads.append((0, 0))
        else:
            windows.append((lo, hi))
            pads.append((lo - start, stop - hi))
    return AxisTiles(length, stride, tuple(out_chunks), tuple(windows), tuple(pads))


def tiles_for_inputs(in_chunks, kernel: int, stride: int, dilation: int, pad_before: int,
                     outputs: int) -> AxisTiles:
    """A forward convolution's tiling of input chunks ``in_chunks``: output block i holds
    those of the ``outputs`` whose stride multiple lies in chunk i (see the module
    docstring)."""
    edges = [0, outputs]
    for c in bounds(in_chunks)[1:-1]:
        edges.append(min(-(-c // stride), outputs))  # the first output at or after row c
    edges = sorted(set(edges))  # chunks holding no window start give no block
    return tiles_for_outputs(_chunks(edges), sum(in_chunks), kernel, stride, dilation,
                             pad_before)


def owner_chunks(tiles: AxisTiles) -> tuple[int, ...]:
    """Chunks of the input axis for a result scattered from the output blocks (a
    transposed convolution's output): chunk i starts at block i's first output times
    the stride, the rule of ``tiles_for_inputs`` read backwards, so that a convolution
    of the result is chunked as the blocks are. Each window's rows land in its own
    chunk, pad_before of them in the chunks before and the rest of its halo after."""
    starts = bounds(tiles.out_chunks)[1:-1]
    return _chunks(sorted({0, tiles.length} | {min(p * tiles.stride, tiles.length)
                                               for p in starts}))


def pieces(chunk_bounds, lo: int, hi: int):
    """The chunks that rows [lo, hi) overlap, as (chunk index, (start, stop) inside the
    chunk, offset of the piece in [lo, hi))."""
    found = []
    for i, (a, b) in enumerate(zip(chunk_bounds, chunk_bounds[1:])):
        s, e = max(lo, a), min(hi, b)
        if s < e:
            found.append((i, (s - a, e - a), s - lo))
    return found
