"""Which engine runs each pass of a convolution when ``backend="auto"``.

:func:`choose_backend` is a pure function of the problem, in the manner of SciPy's
``choose_conv_method``: the same geometry, dtype and thread count always give the same
answer. ``backend=`` on every call overrides it, and :func:`fastconv.tune` replaces it
with measured winners for the caller's own shapes.

The rules are a cost model read off ``fastconv bench`` on the layer suite (2-core
AVX-512 Xeon, float32, NCHW, 2026-11-23; spot checks of NHWC and float64 follow the
same pattern). What they assume:

* The direct engine needs no workspace and, with its two micro-kernels (one vectorised
  along output columns, one across filters for small images), beats im2col in forward
  and grad_input on every suite layer but one: vgg_conv1_2 3.3x, resnet_c2_3x3 3.5x,
  resnet_c5_3x3 (7x7 outputs) 1.3x, batch1_c4 (one 14x14 image) 1.5x, the pointwise
  resnet_c2_1x1 1.6x (im2col pays a scan for subnormals there).
* The exception is a kernel that covers the whole input (lenet_c5): a fully connected
  layer, which im2col runs as one matrix product with no unrolling, 2-15x faster.
* grad_weight reduces over N*P*Q. Below ``DIRECT_MIN_POSITIONS`` of them each filter
  block of the direct engine has too little to sum (resnet_c5_3x3, 392: 15.6 vs 10.6
  ms; batch1_c4, 196: 2.5 vs 1.6 ms), and im2col's one BLAS product wins.
* Depthwise and thin grouped layers (reduction Cg*R*S < SMALL_REDUCTION): each group's
  product is a sliver BLAS runs far below peak, and im2col copies the input R*S times
  for almost no arithmetic. im2col is the wrong tool there (mobilenet_dw: 20-50x
  slower than direct); they always go to the direct engine.
"""
from __future__ import annotations

import numpy as np

from ._geometry import ConvGeometry

PASSES = ("forward", "grad_input", "grad_weight")

# Below this reduction length a group's matrix product is too thin for BLAS to pay off.
SMALL_REDUCTION = 32
# grad_weight: output positions per call (N*P*Q) from which the direct engine wins.
DIRECT_MIN_POSITIONS = 1024


def choose_backend(g: ConvGeometry, dtype, num_threads: int) -> dict[str, str]:
    """Return ``{"forward": engine, "grad_input": engine, "grad_weight": engine}``.

    ``engine`` is "direct" or "im2col". ``dtype`` and ``num_threads`` are part of the
    signature because a crossover can depend on them; the rules measured so far hold for
    float32 and float64 on 1 and 2 threads alike.
    """
    np.dtype(dtype)  # validates
    if num_threads < 1:
        raise ValueError(f"num_threads must be >= 1, got {num_threads}")
    if g.groups > 1 and g.Cg * g.R * g.S < SMALL_REDUCTION:
        return dict.fromkeys(PASSES, "direct")
    if g.covers_input:
        return dict.fromkeys(PASSES, "im2col")
    return {
        "forward": "direct",
        "grad_input": "direct",
        "grad_weight": "direct" if g.N * g.P * g.Q >= DIRECT_MIN_POSITIONS else "im2col",
    }
