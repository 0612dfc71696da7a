"""conv1d, conv_transpose1d and their backward passes on Dask arrays: a signal is an
image of height 1, with L along W, as in fastconv/_conv1d.py. fastconv's own 1-D
problems check the call on stand-ins (so the messages are conv1d's), the chunks are
checked in 1-D terms, and the 2-D functions of fastconv.dask do the rest."""
from __future__ import annotations

from .. import _validate as v
from .._api import ConvGrads
from .._conv1d import _Problem1d
from .._transpose import _TransposedProblem1d
from . import _conv, _transpose
from ._conv import SPLIT_EVERY
from ._spec import channels_in_one_chunk, chunked, small, standin


class _Signal:
    """One 1-D call checked by ``problem`` (a fastconv 1-D problem class) on stand-ins,
    and the 4-D views of its Dask and NumPy arrays."""

    def __init__(self, problem, x, w, *args):
        self.pr = pr = problem(standin(chunked(x, "x"), "x"), small(w, "w"), *args)
        self.nlc = pr.layout == "NLC"
        channels_in_one_chunk(x, (2 if self.nlc else 1) - pr.unbatched, "x")
        self.x4 = self.to_4d(x)

    def to_4d(self, a):
        """x or grad_y as the 4-D array of the 2-D call: (N,C,L) -> (N,C,1,L), (N,L,C) ->
        (N,1,L,C), a signal without its batch axis given one first."""
        return self.pr.to_4d(a[None] if self.pr.unbatched else a)

    def from_4d(self, a):
        a = a[:, 0] if self.nlc else a[:, :, 0]
        return a[0] if self.pr.unbatched else a

    def w4(self, w):
        # (K,Cg,R) -> (K,Cg,1,R), (R,Cg,K) -> (1,R,Cg,K), as _Problem1d views it.
        return w[None] if self.nlc else w[:, :, None]

    def grads(self, g: ConvGrads) -> ConvGrads:
        gw = None if g.w is None else (g.w[0] if self.nlc else g.w[:, :, 0])
        return ConvGrads(None if g.x is None else self.from_4d(g.x), gw, g.b)

    def check_grad_y(self, grad_y, forward, what: str) -> None:
        """grad_y of the forward output's shape (conv1d's message) and chunks (those of
        ``forward``, the forward output, built but never computed)."""
        v.check_grad_y(standin(chunked(grad_y, "grad_y"), "grad_y").shape, self.pr.y_shape,
                       self.pr.unbatched)
        _conv.check_chunks(grad_y, forward.chunks, False, what)

def conv1d(x, w, stride=1, pad=0, *, bias=None, dilation=1, groups=1, layout="NCL",
           flip=False, backend="auto"):
    """:func:`fastconv.conv1d` of a Dask array ``(N, C, L)`` or ``(N, L, C)``, lazily:
    the rules of :func:`fastconv.dask.conv2d`, with L for W (the channels in one chunk;
    batch and L chunked any way)."""
    s = _Signal(_Problem1d, x, w, stride, pad, dilation, groups, layout)
    y = _conv.conv2d(s.x4, s.w4(w), bias=bias, flip=flip, backend=backend, **s.pr.opts)
    return s.from_4d(y)


def conv1d_backward(grad_y, x, w, stride=1, pad=0, *, dilation=1, groups=1, layout="NCL",
                    flip=False, backend="auto", wrt=("x", "w", "b"), split_every=SPLIT_EVERY):
    """:func:`fastconv.conv1d_backward` of Dask arrays, lazily, as
    :func:`fastconv.dask.conv2d_backward`: ``grad_y`` chunked as :func:`conv1d`'s output."""
    s = _Signal(_Problem1d, x, w, stride, pad, dilation, groups, layout)
    s.check_grad_y(grad_y, conv1d(x, w, stride, pad, dilation=dilation, groups=groups,
                                  layout=layout), "conv1d")
    return s.grads(_conv.conv2d_backward(s.to_4d(grad_y), s.x4, s.w4(w), flip=flip,
                                         backend=backend, wrt=wrt, split_every=split_every,
                                         **s.pr.opts))


def conv_transpose1d(x, w, stride=1, pad=0, *, output_padding=0, bias=None, dilation=1,
                     groups=1, layout="NCL", flip=False, backend="auto"):
    """:func:`fastconv.conv_transpose1d` of a Dask array, lazily, by the rules of
    :func:`fastconv.dask.conv_transpose2d` with L for W."""
    s = _Signal(_TransposedProblem1d, x, w, stride, pad, output_padding, dilation, groups,
                layout)
    y = _transpose.conv_transpose2d(s.x4, s.w4(w), bias=bias, flip=flip, backend=backend,
                                    **s.pr.opts)
    return s.from_4d(y)


def conv_transpose1d_backward(grad_y, x, w, stride=1, pad=0, *, output_padding=0,
                              dilation=1, groups=1, layout="NCL", flip=False,
                              backend="auto", wrt=("x", "w", "b"), split_every=SPLIT_EVERY):
    """:func:`fastconv.conv_transpose1d_backward` of Dask arrays, lazily: ``grad_y``
    chunked as :func:`conv_transpose1d`'s output."""
    s = _Signal(_TransposedProblem1d, x, w, stride, pad, output_padding, dilation, groups,
                layout)
    s.check_grad_y(grad_y, conv_transpose1d(x, w, stride, pad, output_padding=output_padding,
                                            dilation=dilation, groups=groups, layout=layout),
                   "conv_transpose1d")
    return s.grads(_transpose.conv_transpose2d_backward(
        s.to_4d(grad_y), s.x4, s.w4(w), flip=flip, backend=backend, wrt=wrt,
        split_every=split_every, **s.pr.opts))
