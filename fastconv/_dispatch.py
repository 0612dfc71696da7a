"""Which engine runs each pass of a convolution when ``backend="auto"``.

:func:`choose_backend` is a pure function of the problem, in the manner of SciPy's
``choose_conv_method``: the same geometry, dtype and thread count always give the same
answer. ``backend=`` on every call overrides it, and :func:`fastconv.tune` replaces it
with measured winners for the caller's own shapes.

The rules are a cost model read off ``fastconv bench`` on the layer suite (2-core
AVX-512 Xeon, float32, NCHW, 2026-11-23, after the im2col engine moved to per-thread
pieces; spot checks of NHWC and float64 follow the same pattern). What they assume:

* The direct engine needs no workspace and, with its two micro-kernels (one vectorised
  along output columns, one across filters for small images), beats im2col in forward
  on every suite layer but one (direct / im2col ms: vgg_conv1_2 26.6 / 50.5,
  resnet_c2_3x3 7.0 / 12.0, resnet_c4_3x3 6.7 / 10.0, resnet_c5_3x3 9.9 / 12.1,
  batch1_c4 1.13 / 1.72, the pointwise resnet_c2_1x1 5.0 / 10.1), and in grad_input
  at stride 1 (resnet_c2_3x3 6.7 / 12.1, lenet_c1 0.42 / 2.1).
* The exception is a kernel that covers the whole input (lenet_c5): a fully connected
  layer, which im2col runs as one matrix product with no unrolling, 2-25x faster.
* Strided grad_input into few channels (Cg <= FEW_CHANNELS: the RGB stems) is where
  the direct engine is weakest: each output pixel gathers taps from every stride phase
  for only 3 channels. im2col's product plus col2im wins there (alexnet_conv1 24.0 /
  13.4 ms, resnet_stem 22.4 / 18.4, cs231n 1.13 / 0.95), and loses on wide strided
  layers (resnet_c3_3x3s2, 128 channels: 9.4 / 12.4).
* grad_weight reduces over N*P*Q. Below ``DIRECT_MIN_POSITIONS`` of them each filter
  block of the direct engine has too little to sum, and im2col's products, split over
  the columns of dW, win (resnet_c5_3x3, 392 positions: 12.1 / 8.3 ms; batch1_c4, 196:
  2.5 / 1.3). From resnet_c4_3x3's 1568 up, direct wins (6.9 / 8.2).
* grad_weight with a short reduction per filter (Cg*R*S < SMALL_REDUCTION, the RGB
  3x3 layers) and at least ``WGRAD_MIN_FILTERS`` filters goes to im2col, once its
  small-filter chunks were cut to ~1024 positions. Measured on the Zen 4 EPYC
  (2 threads, direct / im2col ms): cs231n (K=25) 1.50 / 0.72; the same with K=16
  1.18 / 0.61, K=64 2.21 / 2.04; N=32, 64x64, K=25 1.42 / 0.76; stride 1, K=25
  2.80 / 1.86. Fewer filters keep direct: lenet_c1 (1 channel, K=6) 0.37 / 0.51.
* Depthwise and thin grouped layers (reduction Cg*R*S < SMALL_REDUCTION): each group's
  product is a sliver BLAS runs far below peak, and im2col copies the input R*S times
  for almost no arithmetic. im2col is the wrong tool there (mobilenet_dw: 3-8x slower
  than direct); they always go to the direct engine.
"""
from __future__ import annotations

import numpy as np

from ._geometry import ConvGeometry

PASSES = ("forward", "grad_input", "grad_weight")

# Below this reduction length a group's matrix product is too thin for BLAS to pay off.
SMALL_REDUCTION = 32
# grad_weight: output positions per call (N*P*Q) from which the direct engine wins.
DIRECT_MIN_POSITIONS = 1024
# Strided grad_input into at most this many channels per group goes to im2col.
FEW_CHANNELS = 8
# grad_weight with a short reduction per filter goes to im2col from this many filters.
WGRAD_MIN_FILTERS = 16


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
    strided = g.stride_h > 1 or g.stride_w > 1
    return {
        "forward": "direct",
        "grad_input": "im2col" if strided and g.Cg <= FEW_CHANNELS else "direct",
        "grad_weight": "im2col" if g.N * g.P * g.Q < DIRECT_MIN_POSITIONS
        or (g.Cg * g.R * g.S < SMALL_REDUCTION and g.Kg >= WGRAD_MIN_FILTERS) else "direct",
    }
