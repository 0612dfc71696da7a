"""Which engine runs each pass of a convolution when ``backend="auto"``.

:func:`choose_backend` is a pure function of the problem, in the manner of SciPy's
``choose_conv_method``: the same geometry, dtype and thread count always give the same
answer. ``backend=`` on every call overrides it, and :func:`fastconv.tune` replaces it
with measured winners for the caller's own shapes.

The rules are a cost model read off ``fastconv bench`` on the layer suite (2-core
AVX-512 Xeon, float32, NCHW, 2026-11-23; spot checks of NHWC and float64 follow the
same pattern). What they assume:

* The direct engine needs no workspace and, with its two micro-kernels (one vectorised
  along output columns, one across filters for small images), beats im2col on every
  suite layer with at least ``DIRECT_MIN_POSITIONS`` output positions per call (N*P*Q):
  vgg_conv1_2 2.8x, resnet_c2_3x3 3.0x, resnet_c4_3x3 (8 x 14 x 14) 1.2x, and the
  pointwise resnet_c2_1x1 1.5x in forward (im2col pays a scan for subnormals there).
* Below that (resnet_c5_3x3: 392 positions, batch1_c4: 196, lenet_c5: 64) there is too
  little work per filter block for the direct kernels' setup, and im2col's one BLAS
  product wins: 1.1-1.7x, and 3x on batch1_c4's grad_input.
* grad_weight on the direct engine is fast while an image fits one tile; wide
  reductions (Cg > 64) over large images use its older kernel and lose to im2col
  (resnet_c3_3x3s2: 24.2 vs 20.6 ms).
* grad_input with stride > 2 splits into stride**2 phases on the direct engine, each
  thin, yet it still matched or beat im2col in 3 runs of 4 on alexnet_conv1 (stride 4:
  26 vs 24-37 ms), so stride does not change the choice.
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
# Output positions per call (N*P*Q) from which the direct engine wins.
DIRECT_MIN_POSITIONS = 1024
# grad_weight: with more input channels per group than this, over images larger than
# DIRECT_TILE_POSITIONS output positions, im2col's product wins.
DIRECT_MAX_CG_GRAD_WEIGHT = 64
DIRECT_TILE_POSITIONS = 256


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
    if g.N * g.P * g.Q < DIRECT_MIN_POSITIONS:
        return dict.fromkeys(PASSES, "im2col")
    wide = g.Cg > DIRECT_MAX_CG_GRAD_WEIGHT and g.P * g.Q > DIRECT_TILE_POSITIONS
    return {
        "forward": "direct",
        "grad_input": "direct",
        "grad_weight": "im2col" if wide else "direct",
    }
