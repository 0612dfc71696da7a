"""conv_transpose2d and conv_transpose2d_backward on Dask arrays.

A transposed convolution is the input gradient of a convolution (fastconv/_transpose.py),
so its passes are the chunked convolution's with the roles swapped: its forward scatters
each block of x onto its window of the output and adds the overlaps back into the
chunks that own them, as conv2d's input gradient does; its input gradient gathers
windows of grad_y, as conv2d's forward does.
"""
from __future__ import annotations

from .. import _validate as v
from .._api import ConvGrads
from . import _passes
from ._conv import SPLIT_EVERY, backward_call, batched, check_chunks
from ._spec import channels_in_one_chunk, check_call, check_engine, one_block
from ._tiling import owner_chunks


def _owners(tiles) -> tuple[tuple[int, ...], tuple[int, ...]]:
    return owner_chunks(tiles[0]), owner_chunks(tiles[1])


def conv_transpose2d(x, w, stride=1, pad=0, *, output_padding=0, bias=None, dilation=1,
                     groups=1, layout="NCHW", flip=False, backend="auto"):
    """:func:`fastconv.conv_transpose2d` of a Dask array, as a lazy Dask array.

    Arguments as for :func:`fastconv.dask.conv2d` (``x`` a Dask array whose channels
    C_in are one chunk, ``w`` and ``bias`` NumPy arrays or small Dask arrays), checked
    now with conv_transpose2d's messages. Batch and spatial axes may be chunked any way.
    Each block of x gives the transposed convolution of itself onto its window of the
    output, and where windows overlap (the (R - 1) * dilation + 1 - stride rows the
    kernel reaches past the next block's start) the pieces are summed into the output
    chunk that owns them. Output chunk i starts at row ``start_i * stride`` (start_i
    the first row of x's chunk i; clipped to the output), so x's chunks of c rows give
    output chunks of c * stride rows (the last takes what is left), and
    :func:`fastconv.dask.conv2d` of the output, at the same stride, is chunked as x. The
    bias is added once, by the owner.
    """
    call, _, unbatched, ws, bs, _ = check_call(x, w, bias, stride, pad, dilation, groups,
                                               layout, flip, backend,
                                               transposed_padding=output_padding)
    check_engine(call, x, unbatched)
    channels_in_one_chunk(x, call.c_axis - unbatched, "x")
    x4 = batched(x, unbatched)
    tiles = _passes.output_tiles(x4.chunks, call)
    y = _passes.scattered(x4, one_block(w, ws, "w"), one_block(bias, bs, "bias"), call, tiles,
                          _owners(tiles))
    return y[0] if unbatched else y


def conv_transpose2d_backward(grad_y, x, w, stride=1, pad=0, *, output_padding=0,
                              dilation=1, groups=1, layout="NCHW", flip=False,
                              backend="auto", wrt=("x", "w", "b"),
                              split_every=SPLIT_EVERY):
    """:func:`fastconv.conv_transpose2d_backward` of Dask arrays: ConvGrads of lazy Dask
    arrays.

    ``grad_y`` must be chunked as :func:`conv_transpose2d`'s output is for x's chunks
    (ValueError otherwise). ``x`` (the input gradient) is chunked like x: each block is
    conv2d of its window of grad_y. ``w`` and ``b`` are partials per block (of x with
    its window of grad_y, for w; of grad_y, for b) summed by Dask's tree reduction, as
    in :func:`fastconv.dask.conv2d_backward`.
    """
    want = v.wrt_set(wrt)
    call, unbatched, x4, gy4, w, split_every = backward_call(
        grad_y, x, w, want, (stride, pad, dilation, groups, layout, flip, backend), split_every,
        transposed_padding=output_padding)
    tiles = _passes.output_tiles(x4.chunks, call)
    owners = _owners(tiles)
    check_chunks(grad_y, call.arrange(x4.chunks[0], (call.g.C,), *owners), unbatched,
                 "conv_transpose2d")
    gx = gw = gb = None
    if "x" in want:
        gx = _passes.gathered(gy4, w, None, call, tiles)
        gx = gx[0] if unbatched else gx
    if "w" in want:
        gw = _passes.weights(gy4, x4, w, call, tiles, split_every, transposed=True)
    if "b" in want:
        gb = _passes.biases(gy4, call, split_every)
    return ConvGrads(gx, gw, gb)
