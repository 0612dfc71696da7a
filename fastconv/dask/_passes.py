"""The passes of a chunked convolution as Dask arrays, for conv2d and its transposed
twin alike (a transposed convolution's passes are a convolution's, their roles swapped:
fastconv/_transpose.py).

    gathered   each output block from its window of the input     conv2d forward,
                                                                  transposed grad_input
    scattered  each input block's contribution to its window,     conv2d grad_input,
               summed into the chunks that own the rows            transposed forward
    weights    a partial per block, summed by a tree              both weight gradients
    biases     grad_y summed per block, then by a tree            both bias gradients

``tiles`` are the two spatial axes' ``AxisTiles`` in the geometry ``call.g`` (for a
transposed call, that of the convolution whose input gradient it is): the blocks of the
convolution's output, and the window of its input that each reads.
"""
from __future__ import annotations

from itertools import product

import dask.array as da
from dask.base import tokenize

from . import _tasks
from ._graph import as_array, gather, key_of, scatter, tree_sum
from ._spec import Call
from ._tiling import AxisTiles, tiles_for_inputs, tiles_for_outputs

Tiles = tuple[AxisTiles, AxisTiles]


def conv_tiles(x4: da.Array, call: Call) -> Tiles:
    """A convolution's tiling of its input's chunks (``tiles_for_inputs``)."""
    g, (h, w) = call.g, call.hw_axes
    return (tiles_for_inputs(x4.chunks[h], g.R, g.stride_h, g.dil_h, g.pad_top, g.P),
            tiles_for_inputs(x4.chunks[w], g.S, g.stride_w, g.dil_w, g.pad_left, g.Q))


def output_tiles(chunks, call: Call) -> Tiles:
    """The tiling whose output blocks are the given chunks (a transposed call's x)."""
    g, (h, w) = call.g, call.hw_axes
    return (tiles_for_outputs(chunks[h], g.H, g.R, g.stride_h, g.dil_h, g.pad_top),
            tiles_for_outputs(chunks[w], g.W, g.S, g.stride_w, g.dil_w, g.pad_left))


def out_chunks(batch_chunks, call: Call, tiles: Tiles) -> tuple:
    """The chunks of the convolution's output (gathered's result)."""
    return call.arrange(tuple(batch_chunks), (call.g.K,), tiles[0].out_chunks,
                        tiles[1].out_chunks)


def _block(call: Call, tiles: Tiles, n_size: int, i: int, j: int) -> _tasks.Block:
    g = call.g
    return _tasks.Block(stride=(g.stride_h, g.stride_w),
                        pad=(tiles[0].pads[i], tiles[1].pads[j]), options=call.options(),
                        shape=call.arrange(n_size, g.K, tiles[0].out_chunks[i],
                                           tiles[1].out_chunks[j]),
                        dtype=call.dtype, hw_axes=call.hw_axes)


def _name(what: str, *parts) -> str:
    return f"fastconv-{what}-{tokenize(*parts)}"


def gathered(src: da.Array, w: da.Array, bias: da.Array | None, call: Call,
             tiles: Tiles) -> da.Array:
    """conv2d of every output block from its window of ``src``."""
    name = _name("conv2d", src.name, key_of(w), key_of(bias), call, tiles)
    layer, grids = gather(src, call, tiles, name + "-halo")
    for (n, i, j), grid in grids.items():
        block = _block(call, tiles, src.chunks[0][n], i, j)
        layer[(name, *call.block_index(n, i, j))] = (_tasks.forward, grid, key_of(w),
                                                     key_of(bias), block)
    return as_array(name, layer, [src, w, bias], out_chunks(src.chunks[0], call, tiles),
                    call.dtype)


def scattered(src: da.Array, w: da.Array, bias: da.Array | None, call: Call, tiles: Tiles,
              owners: tuple[tuple[int, ...], tuple[int, ...]]) -> da.Array:
    """Each block of ``src`` (chunked as the convolution's output blocks) transposed-
    convolved onto its window, the windows' overlaps summed into the chunks ``owners``
    (rows, columns) of the convolution's input, plus the bias."""
    name = _name("scatter", src.name, key_of(w), key_of(bias), call, tiles, owners)
    layer, contributions = {}, {}
    for n, batch in enumerate(src.chunks[0]):
        for i, (lo, hi) in enumerate(tiles[0].windows):
            for j, (left, right) in enumerate(tiles[1].windows):
                if lo == hi or left == right:  # a window in the padding: nothing to add
                    continue
                key = contributions[n, i, j] = (name + "-part", n, i, j)
                layer[key] = (_tasks.scattered, (src.name, *call.block_index(n, i, j)),
                              key_of(w), _block(call, tiles, batch, i, j))
    owned, chunks = scatter(contributions, call, tiles, owners, src.chunks[0], call.g.C,
                            key_of(bias), name)
    layer.update(owned)
    return as_array(name, layer, [src, w, bias], chunks, call.dtype)


def weights(grad_y: da.Array, x: da.Array, w: da.Array, call: Call, tiles: Tiles,
            split_every: int, transposed: bool = False) -> da.Array:
    """The weight gradient: a partial per block of the convolution's output (grad_y's
    for conv2d, x's for a transposed call) with its window of the convolution's input
    (x's, grad_y's), summed by a tree."""
    outputs, inputs = (x, grad_y) if transposed else (grad_y, x)
    name = _name("grad-weight", grad_y.name, x.name, key_of(w), call, tiles)
    layer, grids = gather(inputs, call, tiles, name + "-halo")
    partial = _tasks.transposed_weight_partial if transposed else _tasks.weight_partial
    for k, ((n, i, j), grid) in enumerate(grids.items()):
        block = _block(call, tiles, outputs.chunks[0][n], i, j)
        own = (outputs.name, *call.block_index(n, i, j))
        args = (grid, own) if transposed else (own, grid)
        layer[(name, k) + (0,) * 4] = (partial, *args, key_of(w), block)
    return tree_sum(name, layer, len(grids), [grad_y, x, w], call.g.w_shape, call.dtype,
                    split_every)


def biases(grad_y: da.Array, call: Call, split_every: int) -> da.Array:
    """The bias gradient: grad_y summed over each block, then by a tree."""
    name = _name("grad-bias", grad_y.name, call)
    layer = {}
    blocks = list(product(*map(range, grad_y.numblocks)))
    for k, index in enumerate(blocks):
        layer[(name, k, 0)] = (_tasks.bias_partial, (grad_y.name, *index), call.c_axis,
                               call.dtype)
    return tree_sum(name, layer, len(blocks), [grad_y], (grad_y.shape[call.c_axis],),
                    call.dtype, split_every)

