"""Which engine runs each pass of a convolution when ``backend="auto"``.

:func:`choose_backend` is a pure function of the problem, in the manner of SciPy's
``choose_conv_method``: the same geometry, dtype and thread count always give the same
answer. ``backend=`` on every call overrides it, and :func:`fastconv.tune` replaces it
with measured winners for the caller's own shapes.

The rules are a cost model read off ``fastconv bench`` on the layer suite (2-core
AVX-512 Xeon, float32, NCHW; spot checks of NHWC and float64 follow the same pattern).
What they assume:

* The direct engine vectorises along output rows, a block of 48 (AVX-512) or 16
  (AVX2) output columns at a time, and needs no workspace. It runs near its peak when
  an image has many output positions, and wastes most vector lanes on small outputs:
  at 7x7 (resnet_c5) it ran at 0.6x the im2col engine, at 56x56 (resnet_c2_3x3) 2.7x.
* The im2col engine is one large BLAS product plus a copy of the input R*S times. The
  copy dominates on large images with few channels; on small images with many channels
  the product dominates and BLAS is at its best. Pointwise layers need no copy at all.
* grad_weight on the direct engine reduces over every image and position per filter
  block; with many input channels (Cg > 64) its repacking costs more than im2col's
  product (resnet_c3_3x3s2: 24.5 vs 17.6 ms; resnet_c4_3x3: 17.7 vs 11.0 ms).
* grad_input with stride > 2 splits into stride**2 phases on the direct engine, each a
  thin problem: im2col measured 1.3x faster on alexnet_conv1 (stride 4).
* Depthwise and thin grouped layers (reduction Cg*R*S < SMALL_REDUCTION): each group's
  product is a sliver BLAS runs far below peak, and im2col copies the input R*S times
  for almost no arithmetic. im2col is the wrong tool there (mobilenet_dw: 15-40x
  slower than direct); they always go to the direct engine.
"""
from __future__ import annotations

import numpy as np

from ._geometry import ConvGeometry

PASSES = ("forward", "grad_input", "grad_weight")

# Below this reduction length a group's matrix product is too thin for BLAS to pay off.
SMALL_REDUCTION = 32
# Output positions per image from which the direct engine's vector blocks are full
# enough to beat im2col (cs231n, 16x16 = 256, direct 3x faster; resnet_c4, 14x14 = 196,
# even in forward and grad_input, im2col 1.6x faster in grad_weight).
DIRECT_MIN_POSITIONS = 256
# grad_weight: input channels per group above which im2col's product wins.
DIRECT_MAX_CG_GRAD_WEIGHT = 64
# grad_input: strides above which the direct engine's phase split costs too much.
DIRECT_MAX_STRIDE_GRAD_INPUT = 2


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
    if g.is_pointwise:
        return dict.fromkeys(PASSES, "im2col")
    large = g.P * g.Q >= DIRECT_MIN_POSITIONS
    big_stride = max(g.stride_h, g.stride_w) > DIRECT_MAX_STRIDE_GRAD_INPUT
    return {
        "forward": "direct" if large else "im2col",
        "grad_input": "direct" if large and not big_stride else "im2col",
        "grad_weight": ("direct" if large and g.Cg <= DIRECT_MAX_CG_GRAD_WEIGHT
                        else "im2col"),
    }
