"""``fastconv.compile()`` / ``python -m fastconv compile``: fill Numba's cache ahead of
time, so that no later process pays for compiling the im2col engine's kernels.

The direct and Winograd engines are compiled when the wheel is built; the im2col
engine's kernels are Numba functions compiled on their first call, per dtype and
layout, and kept in Numba's on-disk cache (``cache=True``): next to the package's
sources where that directory is writable, else in the user's cache directory
(``~/.cache/numba`` on Linux; ``NUMBA_CACHE_DIR`` overrides both). A first call in a
fresh environment therefore costs seconds (the README gives the figures); run this
once when building an image or before starting a cluster's workers, with the same
``NUMBA_CACHE_DIR`` the workers will have.

It runs each pass of the im2col engine once on tiny problems, for every dtype and
layout asked for: 3x3 windows at strides 1 and 2 (the unrolling and folding kernels)
and a 1x1 one (the products, which serve the pointwise and whole-window layers). Each kernel is compiled
once whatever the thread count (engines/_twin.py). With the compiled module in place the
NCHW passes and the products run its Cython twins on the OpenMP team and compile
nothing (engines/im2col.py, Pieces on the team): NHWC is what this fills the cache for.
"""
from __future__ import annotations

import time

import numpy as np

DTYPES = ("float32", "float64")
LAYOUTS = ("NCHW", "NHWC")


def _problems(layout: str):
    """(x shape, w shape, stride, pad) of the tiny problems, in ``layout``: a 3x3
    window at stride 1 (unroll; grad_input through the forward kernel and flipped
    filters) and 2 (grad_input's fold), and a 1x1 one (the products)."""
    for (n, c, h, w), (k, r, s), stride, pad in (((2, 3, 7, 7), (4, 3, 3), 1, 1),
                                                 ((2, 3, 7, 7), (4, 3, 3), 2, 1),
                                                 ((2, 3, 5, 5), (4, 1, 1), 1, 0)):
        if layout == "NHWC":
            yield (n, h, w, c), (r, s, c, k), stride, pad
        else:
            yield (n, c, h, w), (k, c, r, s), stride, pad


def _names(values, legal, name: str) -> tuple[str, ...]:
    if isinstance(values, str):
        values = (values,)
    try:
        values = tuple(values)
    except TypeError:
        raise TypeError(f"{name} must be a sequence drawn from {legal}, "
                        f"got {type(values).__name__} {values!r}") from None
    values = tuple(np.dtype(v).name if isinstance(v, (type, np.dtype)) else v for v in values)
    for v in values:
        if v not in legal:
            raise ValueError(f"{name} must be drawn from {legal}, got {v!r}")
    return values


def compile(dtypes=DTYPES, layouts=LAYOUTS, *, verbose: bool = False) -> float:
    """Compile (or load from Numba's cache) the im2col kernels for ``dtypes`` and
    ``layouts``; returns the seconds it took. Harmless to run again: a filled cache
    makes it take a fraction of a second."""
    from . import conv2d, conv2d_backward

    if isinstance(dtypes, (type, np.dtype)):
        dtypes = (dtypes,)
    dtypes = _names(dtypes, DTYPES, "dtypes")
    layouts = _names(layouts, LAYOUTS, "layouts")
    t0 = time.perf_counter()
    rng = np.random.default_rng(0)
    for dtype in dtypes:
        for layout in layouts:
            t1 = time.perf_counter()
            for x_shape, w_shape, stride, pad in _problems(layout):
                x = rng.standard_normal(x_shape).astype(dtype)
                w = rng.standard_normal(w_shape).astype(dtype)
                y = conv2d(x, w, stride, pad, layout=layout, backend="im2col")
                conv2d_backward(y, x, w, stride, pad, layout=layout, backend="im2col")
            if verbose:
                print(f"fastconv compile: im2col {dtype} {layout} "
                      f"{time.perf_counter() - t1:.1f} s", flush=True)
    return time.perf_counter() - t0
