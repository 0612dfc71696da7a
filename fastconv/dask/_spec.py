"""Checking a chunked call before any task runs, with fastconv's own validators.

A Dask array's values are never read here (that would compute it): the validators of
``fastconv/_validate.py`` and the 1-D problems of ``_conv1d``/``_transpose`` run on a
stand-in of its shape and dtype, a read-only view of one zero broadcast to the shape,
so every message is the one ``fastconv.conv2d`` gives for the same argument. Only what
is particular to chunks is checked here: that the chunked arguments are Dask arrays and
that their channels lie in one chunk.
"""
from __future__ import annotations

from dataclasses import dataclass

import dask.array as da
import numpy as np
from dask.base import tokenize

from .. import _validate as v
from .._geometry import LAYOUT_NHWC, ConvGeometry
from ..engines import get_engine


def chunked(a, name: str):
    """``a`` itself when it is a Dask array; a TypeError naming ``name`` otherwise (its
    chunks are the caller's choice, which a NumPy array does not carry)."""
    if not isinstance(a, da.Array):
        raise TypeError(f"{name} must be a dask.array.Array, got {type(a).__name__}: wrap a "
                        f"NumPy array with dask.array.from_array({name}, chunks=...), "
                        "choosing its chunks")
    return a


def standin(a, name: str) -> np.ndarray:
    """A stand-in for the Dask array ``a``: its shape, and its dtype as fastconv promotes
    it (bool and int to float64, float16 to float32; others are fastconv's TypeError)."""
    dtype = v.as_array(np.empty(0, a.dtype), name).dtype
    return np.broadcast_to(np.zeros((), dtype), a.shape)


def small(a, name: str):
    """``w`` or ``bias`` as a NumPy array to check, or a stand-in when it is a Dask array
    (None stays None). A NumPy array is copied: the graph keeps the values it had when it
    was built, whatever the caller writes into it later (an optimiser's step, say)."""
    if a is None:
        return None
    if isinstance(a, da.Array):
        return standin(a, name)
    return np.array(v.as_array(a, name), copy=True)


def one_block(a, checked: np.ndarray | None, name: str):
    """``a`` (w or bias) as a Dask array of one chunk: a task reads it whole, and each
    worker receives it once, not once per task."""
    if a is None:
        return None
    if isinstance(a, da.Array):
        return a.astype(checked.dtype).rechunk(-1)
    return da.from_array(checked, chunks=checked.shape or (),
                         name=f"fastconv-{name}-{tokenize(checked)}")


def channels_in_one_chunk(a, axis: int, name: str, what: str = "channel") -> None:
    """Every output reads all the channels of its group, so they must lie in one chunk.
    Not rechunked for the caller: that would make each chunk C/c times larger, which
    is the caller's call on a worker's memory."""
    if len(a.chunks[axis]) > 1:
        raise ValueError(
            f"{name} must hold its {what} axis (axis {axis}, {a.shape[axis]} channels) in one "
            f"chunk: every output reads all the channels of its group; got chunks "
            f"{a.chunks[axis]} along it. Rechunk it first: {name}.rechunk({{{axis}: -1}})")


@dataclass(frozen=True)
class Call:
    """A checked 2-D call: its geometry (a transposed call's is the convolution whose
    input gradient it is), the options every block's call repeats, and the dtype."""

    g: ConvGeometry
    layout: str
    dtype: np.dtype
    flip: bool
    backend: str

    @property
    def nhwc(self) -> bool:
        return self.g.layout == LAYOUT_NHWC

    @property
    def c_axis(self) -> int:
        return 3 if self.nhwc else 1

    @property
    def hw_axes(self) -> tuple[int, int]:
        return (1, 2) if self.nhwc else (2, 3)

    def arrange(self, n, c, h, w) -> tuple:
        """(n, c, h, w) in the layout's order: a shape, chunks or a block index."""
        return (n, h, w, c) if self.nhwc else (n, c, h, w)

    def block_index(self, n: int, i: int, j: int) -> tuple[int, int, int, int]:
        """The index of block (n, i, j) of a 4-D array, its channels in one chunk."""
        return self.arrange(n, 0, i, j)

    def options(self) -> dict:
        """The keyword options of every block's call, all but stride and pad."""
        g = self.g
        return dict(dilation=(g.dil_h, g.dil_w), groups=g.groups, layout=self.layout,
                    flip=self.flip, backend=self.backend)


def check_call(x, w, bias, stride, pad, dilation, groups, layout, flip, backend,
               extra=(), transposed_padding=None):
    """Check a 2-D call as ``_api._Problem`` does, in its order, on stand-ins; returns
    (Call, x's stand-in, whether x came without a batch axis, w, bias, the ``extra``
    stand-ins). ``extra`` holds (array, name) pairs of further Dask arrays (grad_y);
    ``transposed_padding`` is a transposed call's output_padding."""
    code = v.layout_code(layout)
    backend = v.backend_name(backend)
    flip = v.flag(flip, "flip")
    xs = standin(chunked(x, "x"), "x")
    ws = small(w, "w")
    extras = [standin(chunked(a, n), n) for a, n in extra]
    bs = small(bias, "bias")
    x4, unbatched = v.batched(xs, "x", code)
    if transposed_padding is None:
        g = v.geometry(x4.shape, ws.shape, stride, pad, dilation, groups, code)
        if bs is not None:
            v.check_bias(bs, g.K)
    else:
        g = v.transposed_geometry(x4.shape, ws.shape, stride, pad, transposed_padding,
                                  dilation, groups, code)
        if bs is not None:
            v.check_bias(bs, g.C, "C_out")
    call = Call(g, layout, v.common_dtype(xs, ws, bs, *extras), flip, backend)
    return call, xs, unbatched, ws, bs, extras


def check_engine(call: Call, x=None, unbatched: bool = False) -> None:
    """The chosen engine's own refusal (Winograd's shapes), which fastconv meets when it
    calls the engine, after every other check. Winograd's stride phases must tile each
    block's window, which blocks of spatial chunks need not: asked for by name on a
    strided layer, it takes H and W in one chunk each (``auto`` chooses per block)."""
    if call.backend not in ("auto", "reference"):
        check = getattr(get_engine(call.backend), "check", None)
        if check is not None:
            check(call.g)
    if call.backend == "winograd" and x is not None and (call.g.stride_h > 1
                                                         or call.g.stride_w > 1):
        spatial = [x.chunks[a - unbatched] for a in call.hw_axes]
        if any(len(c) > 1 for c in spatial):
            raise ValueError(
                "backend='winograd' on a strided layer runs through stride phases that "
                "must tile each block, so it takes x's H and W in one chunk each; got "
                f"chunks {tuple(spatial)}. Use backend='auto' (which picks per block) or "
                "rechunk H and W to one chunk")
