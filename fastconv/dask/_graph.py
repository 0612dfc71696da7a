"""The graph of a chunked convolution, from Dask's own parts: getitem tasks that cut
halo strips out of neighbouring chunks, one task per block that calls fastconv, an
add-back of overlapping contributions into the chunks that own them, and Dask's tree
reduction (``split_every``) of per-block partials.

Why not ``map_overlap``: its depth is one number per axis side, counted from the input
chunk, and its output chunks are the input's. A strided convolution's output chunks are
the input's divided by the stride, its windows start at multiples of the stride offset
by the pad, and a kernel narrower than its stride reads less than a whole chunk; none
of which a depth expresses. Its halo also comes from the immediate neighbours only
(the array is rechunked when a chunk is thinner than the depth). Cut explicitly
(``_tiling.pieces``), a window takes its rows from as many chunks as it overlaps, and
as with map_overlap only the strips travel between workers: each is cut by a task of
its own, next to its chunk.
"""
from __future__ import annotations

import operator
from collections import defaultdict

import dask.array as da
import numpy as np
from dask.highlevelgraph import HighLevelGraph

from . import _tasks
from ._spec import Call
from ._tiling import AxisTiles, bounds, pieces


def key_of(a: da.Array | None):
    """The key of a one-chunk Dask array (w, bias), None for None."""
    return None if a is None else (a.name,) + (0,) * a.ndim


def as_array(name: str, layer: dict, dependencies, chunks, dtype) -> da.Array:
    """The Dask array whose blocks are ``layer``'s keys (name, *index)."""
    graph = HighLevelGraph.from_collections(name, layer,
                                            dependencies=[d for d in dependencies if d is not None])
    return da.Array(graph, name, chunks=chunks, meta=np.empty((0,) * len(chunks), dtype))


def _cut(call: Call, rows, cols) -> tuple[slice, ...]:
    where = [slice(None)] * 4
    (h_axis, w_axis) = call.hw_axes
    where[h_axis], where[w_axis] = slice(*rows), slice(*cols)
    return tuple(where)


def gather(x: da.Array, call: Call, tiles: tuple[AxisTiles, AxisTiles], name: str):
    """The window of each output block (n, i, j), as a grid of keys (row bands, then
    column bands; empty for a window wholly in the padding), and the layer of getitem
    tasks that cut its pieces out of x's chunks. A piece that is a whole chunk is the
    chunk's own key: no task, no copy."""
    h_axis, w_axis = call.hw_axes
    sizes_h, sizes_w = x.chunks[h_axis], x.chunks[w_axis]
    rows_of = [pieces(bounds(sizes_h), lo, hi) for lo, hi in tiles[0].windows]
    cols_of = [pieces(bounds(sizes_w), lo, hi) for lo, hi in tiles[1].windows]
    layer, grids = {}, {}
    for n in range(len(x.chunks[0])):
        for i, rows in enumerate(rows_of):
            for j, cols in enumerate(cols_of):
                grid = []
                for a, r, _ in rows:
                    line = []
                    for b, c, _ in cols:
                        chunk = (x.name, *call.block_index(n, a, b))
                        if r == (0, sizes_h[a]) and c == (0, sizes_w[b]):
                            line.append(chunk)
                        else:
                            key = (name, n, i, j, a, b)
                            layer[key] = (operator.getitem, chunk, _cut(call, r, c))
                            line.append(key)
                    grid.append(line)
                grids[n, i, j] = grid if rows and cols else []
    return layer, grids


def scatter(contributions: dict, call: Call, tiles: tuple[AxisTiles, AxisTiles],
            owners: tuple[tuple[int, ...], tuple[int, ...]], batch_chunks, channels: int,
            bias_key, name: str):
    """Sum windowed contributions into the chunks that own their rows: the inverse of
    ``gather``. ``contributions[n, i, j]`` is the key of output block (n, i, j)'s
    contribution to its window (absent for a window wholly in the padding); ``owners``
    are the row and column chunks of the result. Returns the layer of owner blocks
    (name, *index) and of the getitem tasks cutting each contribution at the owners'
    edges (so only the overlapping strips travel), and the result's chunks."""
    h_axis, w_axis = call.hw_axes

    def per_owner(axis_tiles, owner_sizes):
        # owner chunk -> [(window, its rows inside the window, where they start in the owner)]
        found = defaultdict(list)
        for i, (lo, hi) in enumerate(axis_tiles.windows):
            for a, (s, e), offset in pieces(bounds(owner_sizes), lo, hi):
                found[a].append((i, (offset, offset + e - s), s))
        return found

    rows_of, cols_of = per_owner(tiles[0], owners[0]), per_owner(tiles[1], owners[1])
    lengths_h = [hi - lo for lo, hi in tiles[0].windows]
    lengths_w = [hi - lo for lo, hi in tiles[1].windows]
    layer = {}
    for n, batch in enumerate(batch_chunks):
        for a, rows in enumerate(owners[0]):
            for b, cols in enumerate(owners[1]):
                keys, starts = [], []
                for i, r, r_start in rows_of[a]:
                    for j, c, c_start in cols_of[b]:
                        source = contributions.get((n, i, j))
                        if source is None:
                            continue
                        if r == (0, lengths_h[i]) and c == (0, lengths_w[j]):
                            keys.append(source)
                        else:
                            keys.append((name + "-cut", n, i, j, a, b))
                            layer[keys[-1]] = (operator.getitem, source, _cut(call, r, c))
                        starts.append((r_start, c_start))
                owner = _tasks.Owner(call.arrange(batch, channels, rows, cols), call.dtype,
                                     tuple(starts), call.hw_axes, call.c_axis)
                layer[(name, *call.block_index(n, a, b))] = (_tasks.add_pieces, keys,
                                                             bias_key, owner)
    return layer, call.arrange(tuple(batch_chunks), (channels,), owners[0], owners[1])


def tree_sum(name: str, layer: dict, count: int, dependencies, shape, dtype,
             split_every: int) -> da.Array:
    """The sum of ``count`` per-block partials by Dask's tree reduction: ``layer`` holds
    them as (name, k, 0, ...), each of shape (1, *shape), besides the tasks they need;
    no task of the tree adds more than ``split_every`` of them (or of their sums)."""
    chunks = ((1,) * count,) + tuple((d,) for d in shape)
    partials = as_array(name, layer, dependencies, chunks, dtype)
    return partials.sum(axis=0, split_every=split_every, dtype=dtype)
