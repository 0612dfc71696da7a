"""The public functions: validate and normalise, choose an engine, call it.

``conv2d`` is a cross-correlation, as in PyTorch and every deep-learning framework;
``flip=True`` flips the kernel in both spatial axes and gives true convolution, as in
``scipy.signal.convolve2d``.
"""
from __future__ import annotations

import functools
import math
import os
from collections import namedtuple

import numpy as np

from . import _tune
from . import _validate as v
from ._autotune import ROUNDS, get_autotune
from ._dispatch import choose_backend
from ._geometry import LAYOUT_NHWC, ConvGeometry
from ._threads import threads_here
from .engines import get_engine

ConvGrads = namedtuple("ConvGrads", ["x", "w", "b"])
ConvGrads.__doc__ = """Gradients of a conv2d with respect to its input, weights and bias.

A field that was not requested through ``wrt`` is None."""


def _flip(w: np.ndarray, layout: int) -> np.ndarray:
    """Reverse the kernel in both spatial axes (R, S), wherever the layout puts them."""
    axes = (0, 1) if layout == LAYOUT_NHWC else (2, 3)
    return np.flip(w, axis=axes)


@functools.lru_cache(maxsize=None)
def _physical_memory() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return None


def _check_memory(shape, dtype, name: str) -> None:
    """Refuse, before allocating, an array that cannot fit in this machine's memory.
    (Python ints, the memory size read once: np.prod and sysconf per call were 38 us of
    a 1x8x8x8 layer's 220 us, Zen 1.)"""
    nbytes = math.prod(int(d) for d in shape) * np.dtype(dtype).itemsize
    total = _physical_memory()
    if total is None:
        return
    if nbytes > total:
        raise MemoryError(f"{name} of shape {tuple(shape)} and dtype {np.dtype(dtype)} needs "
                          f"{nbytes / 2**30:.1f} GiB; this machine has {total / 2**30:.1f} GiB")


def auto_engine(g: ConvGeometry, dtype, pass_name: str) -> str:
    """What ``backend="auto"`` runs: the tuned winner if there is one (``tune`` or
    autotune, this process's or the cache file's), else the cost model."""
    threads = threads_here()
    return (_tune.lookup(g, dtype, threads, pass_name)
            or choose_backend(g, dtype, threads)[pass_name])


class _Problem:
    """The normalised arguments of one call."""

    def __init__(self, x, w, stride, pad, dilation, groups, layout, flip, backend,
                 extra=(), x_name="x"):
        self.layout = v.layout_code(layout)
        self.backend = v.backend_name(backend)
        self.flip = v.flag(flip, "flip")
        x = v.as_array(x, x_name)
        w = v.as_array(w, "w")
        w_given = w
        extra = [None if a is None else v.as_array(a, n) for a, n in extra]
        x4, self.unbatched = v.batched(x, x_name, self.layout)
        self.g: ConvGeometry = self._geometry(x4.shape, w.shape, stride, pad, dilation,
                                              groups)
        self.dtype = v.common_dtype(x, w, *extra)
        self.x = v.contiguous(x4, self.dtype)
        w = v.contiguous(w, self.dtype)
        self.w = v.contiguous(_flip(w, self.layout), self.dtype) if self.flip else w
        # Whether the engines read the caller's own array (no conversion, copy or flip):
        # only then may filters packed from it in earlier calls be used (_conv2d).
        self.w_is_callers = self.w is w_given
        self.extra = [None if a is None else v.contiguous(a, self.dtype) for a in extra]

    def _geometry(self, x_shape, w_shape, stride, pad, dilation, groups) -> ConvGeometry:
        """The geometry the engines get (a transposed convolution's is the convolution
        whose input gradient it is: fastconv/_transpose.py)."""
        return v.geometry(x_shape, w_shape, stride, pad, dilation, groups, self.layout)

    def engine(self, pass_name: str):
        """The engine module for ``pass_name``."""
        name = self.backend
        if name == "auto":
            name = auto_engine(self.g, self.dtype, pass_name)
        return get_engine(name)

    def run(self, pass_name: str, call):
        """``call(engine, **options)`` on the engine for ``pass_name``. When ``auto``
        picks Winograd, it runs with ``finite_only``: a transform mixes a whole input
        tile, so one NaN or Inf would reach outputs whose window does not hold it; the
        engine counts non-finite values as it reads its inputs (in parallel, on data it
        copies anyway; a NumPy sum beforehand cost resnet_c2 forward 0.26 of 5.8 ms,
        Zen 4) and returns None, and the exact engine that "highest" picks runs the call.
        With autotune on, a problem ``auto`` has no winner for is timed first."""
        if self.backend == "auto" and get_autotune():
            out = self._autotuned(pass_name, call)
            if out is not None:
                return out
        eng = self.engine(pass_name)
        if self.backend != "auto" or eng is not get_engine("winograd"):
            return call(eng)
        out = call(eng, finite_only=True)
        if out is None:
            exact = choose_backend(self.g, self.dtype, threads_here(),
                                   precision="highest")[pass_name]
            out = call(get_engine(exact))
        return out

    def _autotuned(self, pass_name: str, call):
        """The first call of a problem with no winner yet: time the candidates on this
        call's arrays (fastconv/_autotune.py), keep the fastest, return its result.
        None when there is a winner already, or when Winograd met a NaN or Inf (no
        winner is kept then: the next call times again)."""
        threads = threads_here()
        if _tune.lookup(self.g, self.dtype, threads, pass_name):
            return None
        def call_for(name):
            eng = get_engine(name)
            opts = {"finite_only": True} if name == "winograd" else {}
            return lambda: call(eng, **opts)

        timed = _tune.time_candidates(self.g, self.dtype, threads, pass_name, call_for,
                                      ROUNDS)
        if timed is None:
            return None
        winner, out = timed
        _tune.remember({_tune.entry_key(self.g, self.dtype, threads, pass_name): winner})
        return out

    def unbatch(self, a: np.ndarray) -> np.ndarray:
        return a[0] if self.unbatched else a


def conv2d(x, w, stride=1, pad=0, *, bias=None, dilation=1, groups=1, layout="NCHW",
           flip=False, backend="auto"):
    """2-D convolution layer, forward pass.

    Parameters
    ----------
    x : array_like
        Input, ``(N, C, H, W)`` for ``layout="NCHW"`` or ``(N, H, W, C)`` for "NHWC".
        A 3-D input is one image without the batch axis; the output is then 3-D too.
    w : array_like
        Filters, ``(K, C/groups, R, S)`` for NCHW (PyTorch's OIHW) or
        ``(R, S, C/groups, K)`` for NHWC (TensorFlow's HWIO).
    stride, dilation : int or (int, int)
    pad : int, (int, int), ((top, bottom), (left, right)), "valid", "same" or "full"
        "same" gives an output of ceil(in / stride) with the extra pixel after, as
        TensorFlow does; "full" pads (R - 1) * dilation on each side.
    bias : array_like of shape (K,), optional
    groups : int
        Channels are split into ``groups`` independent convolutions;
        ``groups == C == K`` is a depthwise convolution.
    layout : "NCHW" or "NHWC"
    flip : bool
        False (default) computes cross-correlation, the deep-learning convention;
        True flips the kernel in both spatial axes: true convolution.
    backend : "auto", "direct", "im2col", "winograd" or "reference"
        "auto" asks :func:`fastconv.choose_backend`. "winograd" takes 3x3 filters at
        stride 1 and dilation 1 only (ValueError otherwise).

    Returns
    -------
    y : ndarray
        A fresh C-contiguous array, ``(N, K, P, Q)`` or ``(N, P, Q, K)``, of the
        promoted dtype (float32 stays float32; ints and bools become float64).
    """
    return _conv2d(x, w, stride, pad, bias, dilation, groups, layout, flip, backend, None)


def _conv2d(x, w, stride, pad, bias, dilation, groups, layout, flip, backend, packs):
    """conv2d, with ``packs``: a dict in which the direct engine keeps packed filters
    from call to call (None: pack per call). The caller vouches that ``w``'s values are
    those of the call that filled it; it is used only when the engine reads ``w``
    itself, not a converted, copied or flipped array made for this call."""
    pr = _Problem(x, w, stride, pad, dilation, groups, layout, flip, backend,
                  extra=[(bias, "bias")])
    g = pr.g
    (b,) = pr.extra
    if b is not None:
        v.check_bias(b, g.K)
    _check_memory(g.y_shape, pr.dtype, "the output")
    if g.N == 0:
        return pr.unbatch(np.zeros(g.y_shape, dtype=pr.dtype))
    kept = packs if pr.w_is_callers else None
    y = pr.run("forward", lambda eng, **kw: eng.forward(pr.x, pr.w, b, g, kept, **kw))
    return pr.unbatch(y)


def conv2d_backward(grad_y, x, w, stride=1, pad=0, *, dilation=1, groups=1, layout="NCHW",
                    flip=False, backend="auto", wrt=("x", "w", "b")):
    """Gradients of :func:`conv2d` with respect to its input, weights and bias.

    ``grad_y`` is the gradient of the loss with respect to ``conv2d``'s output and has
    its shape. The weights are tied across every output position and image, so
    ``grad w`` is the sum over all of them. Only the gradients named in ``wrt`` are
    computed; the others are None in the returned :class:`ConvGrads`.

    Returns
    -------
    ConvGrads(x, w, b)
        ``x`` has x's shape, ``w`` has w's shape (for ``flip=True`` too), ``b`` is (K,).
    """
    want = v.wrt_set(wrt)
    pr = _Problem(x, w, stride, pad, dilation, groups, layout, flip, backend,
                  extra=[(grad_y, "grad_y")])
    g = pr.g
    (gy,) = pr.extra
    v.check_grad_y(gy.shape, g.y_shape, pr.unbatched)
    gy4 = gy[None] if pr.unbatched else gy
    gx = gw = gb = None
    if g.N == 0:
        gx = np.zeros(g.x_shape, pr.dtype) if "x" in want else None
        gw = np.zeros(g.w_shape, pr.dtype) if "w" in want else None
        gb = np.zeros(g.K, pr.dtype) if "b" in want else None
        return ConvGrads(None if gx is None else pr.unbatch(gx), gw, gb)
    if "x" in want:
        gx = pr.unbatch(pr.run("grad_input",
                               lambda eng, **kw: eng.grad_input(gy4, pr.w, g, **kw)))
    if "w" in want:
        gw = pr.run("grad_weight", lambda eng, **kw: eng.grad_weight(gy4, pr.x, g))
        if pr.flip:  # the gradient w.r.t. the flipped kernel, flipped back
            gw = np.ascontiguousarray(_flip(gw, pr.layout))
    if "b" in want:
        gb = pr.engine("grad_weight").grad_bias(gy4, g)
    return ConvGrads(gx, gw, gb)


def output_shape(x, w, stride=1, pad=0, *, dilation=1, groups=1, layout="NCHW",
                 transposed=False, output_padding=None):
    """The shape ``conv2d`` would return, computed without touching any data; with
    ``transposed=True``, the shape :func:`fastconv.conv_transpose2d` would return (``w``
    then in its layout, ``output_padding`` its option; without ``transposed`` it is an
    error to give one).

    ``x`` and ``w`` may be arrays or plain shape tuples.
    """
    code = v.layout_code(layout)
    transposed = v.flag(transposed, "transposed")
    if output_padding is not None and not transposed:
        raise ValueError(f"output_padding is an option of transposed convolutions: pass "
                         f"transposed=True with it, got output_padding={output_padding!r}")
    x_shape = tuple(getattr(x, "shape", x))
    w_shape = tuple(getattr(w, "shape", w))
    if len(x_shape) not in (3, 4):
        v.batched(np.empty((0,) * len(x_shape)), "x", code)  # raises with the usual message
    unbatched = len(x_shape) == 3
    x4_shape = (1,) + x_shape if unbatched else x_shape
    if transposed:
        op = 0 if output_padding is None else output_padding
        g = v.transposed_geometry(x4_shape, w_shape, stride, pad, op, dilation, groups, code)
        shape = g.x_shape  # the input of the convolution whose gradient it is
    else:
        shape = v.geometry(x4_shape, w_shape, stride, pad, dilation, groups, code).y_shape
    return shape[1:] if unbatched else shape
