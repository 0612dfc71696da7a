"""conv2d and conv2d_backward on Dask arrays."""
from __future__ import annotations

from .. import _validate as v
from .._api import ConvGrads
from . import _passes
from ._spec import channels_in_one_chunk, check_call, check_engine, one_block

# Partials (or sums of partials) added by one task of the weight and bias gradients' trees.
SPLIT_EVERY = 4


def batched(a, unbatched: bool):
    """A Dask array with its batch axis (added to a 3-D image)."""
    return a[None] if unbatched else a


def split_every_arg(split_every) -> int:
    return v._int(split_every, "split_every", 2)


def conv2d(x, w, stride=1, pad=0, *, bias=None, dilation=1, groups=1, layout="NCHW",
           flip=False, backend="auto"):
    """:func:`fastconv.conv2d` of a Dask array, as a lazy Dask array.

    ``x`` is a ``dask.array.Array``, 4-D (or 3-D: one image); a NumPy ``x`` is a
    TypeError (its chunks would be a guess: wrap it with ``dask.array.from_array``).
    ``w`` and ``bias`` are NumPy arrays, copied when the graph is built, or small Dask
    arrays (each read as one chunk). Every other argument is conv2d's, checked now, with
    conv2d's messages, before any task runs.

    Chunks. The batch axis may be chunked any way; each chunk is convolved where it
    lives. The channel axis C must be one chunk (ValueError otherwise: rechunking it
    would multiply each chunk's size, which is for the caller to decide). H and W may be
    chunked any way, chunks thinner than the kernel's reach and uneven last chunks
    included. Output chunk i holds the outputs p with p * stride in input chunk i; its
    window reads pad_top rows above the chunk and (R - 1) * dilation + 1 - stride -
    pad_top below it, the halo, from as many neighbouring chunks as it takes; only the
    array's borders are padded. So with stride 1 and "same" padding the output is
    chunked as x is. Nothing is rechunked: when each chunk starts at a multiple of the
    stride, output chunks are the input's divided by the stride; otherwise they are
    uneven (a chunk of 5 rows at stride 2 gives 2 or 3) and a halo may be up to
    stride - 1 rows longer. A chunk thinner than the stride may give no output chunk.
    (fastconv/dask/_tiling.py has the rule; README "Dask" the costs.)

    Returns a Dask array of conv2d's shape and dtype; computed, it equals conv2d of the
    whole array within float rounding.
    """
    call, _, unbatched, ws, bs, _ = check_call(x, w, bias, stride, pad, dilation, groups,
                                               layout, flip, backend)
    check_engine(call, x, unbatched)
    channels_in_one_chunk(x, call.c_axis - unbatched, "x")
    x4 = batched(x, unbatched)
    y = _passes.gathered(x4, one_block(w, ws, "w"), one_block(bias, bs, "bias"), call,
                         _passes.conv_tiles(x4, call))
    return y[0] if unbatched else y


def check_chunks(grad_y, expected, unbatched: bool, what: str) -> None:
    """grad_y's chunks must be those of the forward output for x's chunks."""
    expected = expected[1:] if unbatched else expected
    if grad_y.chunks != expected:
        raise ValueError(f"grad_y must be chunked as {what}'s output is for x's chunks, "
                         f"{expected}; got {grad_y.chunks}. Rechunk it first: "
                         f"grad_y.rechunk({expected})")


def backward_call(grad_y, x, w, want, options: tuple, split_every, transposed_padding=None):
    """The checks a backward call starts with, in fastconv's order (``options`` are
    stride, pad, dilation, groups, layout, flip and backend); returns (Call, whether x
    came without a batch axis, x and grad_y with one, w as one chunk, split_every)."""
    call, _, unbatched, ws, _, _ = check_call(x, w, None, *options, extra=[(grad_y, "grad_y")],
                                              transposed_padding=transposed_padding)
    forward_shape = call.g.y_shape if transposed_padding is None else call.g.x_shape
    v.check_grad_y(grad_y.shape, forward_shape, unbatched)
    if want & {"x", "w"}:  # the bias gradient alone calls no engine
        check_engine(call, x, unbatched)
    split_every = split_every_arg(split_every)
    channels_in_one_chunk(x, call.c_axis - unbatched, "x")
    return (call, unbatched, batched(x, unbatched), batched(grad_y, unbatched),
            one_block(w, ws, "w"), split_every)


def conv2d_backward(grad_y, x, w, stride=1, pad=0, *, dilation=1, groups=1, layout="NCHW",
                    flip=False, backend="auto", wrt=("x", "w", "b"),
                    split_every=SPLIT_EVERY):
    """:func:`fastconv.conv2d_backward` of Dask arrays: ConvGrads of lazy Dask arrays.

    ``grad_y`` and ``x`` are Dask arrays, ``grad_y`` chunked as :func:`conv2d`'s output
    is for ``x``'s chunks (ValueError otherwise, naming the chunks expected); ``w`` is as
    for :func:`conv2d`. Checked now, with conv2d_backward's messages.

    ``x`` (the input gradient) is chunked like x: each block of grad_y gives the
    transposed convolution of itself onto its window of x, and where windows overlap
    (the halos) their pieces are added into the chunk that owns the rows. ``w`` and
    ``b`` are (one-chunk) Dask arrays: a partial per block of grad_y (with its window
    of x, for w), summed by Dask's tree reduction, no task adding more than
    ``split_every`` partials or sums (so for more blocks than that, no task receives
    every partial).
    """
    want = v.wrt_set(wrt)
    call, unbatched, x4, gy4, w, split_every = backward_call(
        grad_y, x, w, want, (stride, pad, dilation, groups, layout, flip, backend), split_every)
    tiles = _passes.conv_tiles(x4, call)
    check_chunks(grad_y, _passes.out_chunks(x4.chunks[0], call, tiles), unbatched, "conv2d")
    gx = gw = gb = None
    if "x" in want:
        h, wd = call.hw_axes
        gx = _passes.scattered(gy4, w, None, call, tiles, (x4.chunks[h], x4.chunks[wd]))
        gx = gx[0] if unbatched else gx
    if "w" in want:
        gw = _passes.weights(gy4, x4, w, call, tiles, split_every)
    if "b" in want:
        gb = _passes.biases(gy4, call, split_every)
    return ConvGrads(gx, gw, gb)
