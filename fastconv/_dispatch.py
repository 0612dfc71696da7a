"""Which engine runs each pass of a convolution when ``backend="auto"``.

:func:`choose_backend` is a pure function of the problem, in the manner of SciPy's
``choose_conv_method``: the same shape, options, dtype and thread count always give
the same answer, and ``backend=`` on every call overrides it.

The rules, and what they assume (measured on a 2-core AVX-512 Xeon, float32):

* im2col + BLAS wins whenever the reduction ``Cg*R*S`` is large enough for the matrix
  product to run near BLAS speed: the unrolling costs one pass over the columns, the
  product does ``Kg`` times more arithmetic on them.
* With a small reduction (depthwise and thin grouped layers, ``Cg*R*S`` below
  ``SMALL_REDUCTION``), each group's product is a sliver that BLAS runs far below
  peak, and im2col copies the input ``R*S`` times for almost no arithmetic: the direct
  loops, which touch each input once per tap and need no workspace, win there.
"""
from __future__ import annotations

import numpy as np

from ._geometry import ConvGeometry

PASSES = ("forward", "grad_input", "grad_weight")

# Below this reduction length a group's matrix product is too thin for BLAS to pay off.
SMALL_REDUCTION = 32


def choose_backend(g: ConvGeometry, dtype, num_threads: int) -> dict[str, str]:
    """Return ``{"forward": engine, "grad_input": engine, "grad_weight": engine}``.

    ``engine`` is "direct" or "im2col". ``dtype`` and ``num_threads`` are part of the
    signature because the measured crossover depends on them; the current rules do not
    yet distinguish them.
    """
    np.dtype(dtype)  # validates; float32 and float64 currently share one rule
    reduction = g.Cg * g.R * g.S
    engine = "direct" if g.groups > 1 and reduction < SMALL_REDUCTION else "im2col"
    return {p: engine for p in PASSES}
