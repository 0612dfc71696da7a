"""The direct engine: direct convolution with SIMD micro-kernels, OpenMP threads, and
no workspace beyond packed weights and bounded per-thread tiles.

A thin wrapper over the kernels in ``fastconv._direct`` (csrc/_direct.pyx, with the
per-ISA micro-kernels in csrc/direct_kernels*.c; ``_direct.simd_info()`` names the set
in use, FASTCONV_SIMD overrides it). It allocates the outputs and hands the kernels
flat buffers and plain ints; the kernels read the layout from ``g.layout`` and write
every element of their output. The thread count comes from ``threads_for()``: fewer
threads for small work, and 1 in a child forked after OpenMP ran.
"""
from __future__ import annotations

import numpy as np

from .. import _direct
from .._geometry import ConvGeometry
from .._threads import threads_for
from ._alloc import output


def _dims(g: ConvGeometry) -> tuple[int, ...]:
    """The geometry as the kernels take it (pad_bottom/right only enter through P, Q)."""
    return (g.N, g.C, g.H, g.W, g.K, g.R, g.S, g.P, g.Q, g.groups,
            g.stride_h, g.stride_w, g.dil_h, g.dil_w, g.pad_top, g.pad_left, g.layout)


# A depthwise FLOP takes several dense ones' time (one multiply-add per load), so its
# layers count 4x toward threads_for()'s grain. Measured on the Zen 4, 2026-12-07, batch
# 8, 3x3, ms on 1 / 2 threads: 960@7 (6.8 MFLOP, which the plain count gave one thread)
# forward 0.51/0.27, grad_weight 0.97/0.43; 576@14 stride 2 (4.1) forward 1.04/0.58;
# 96@14 (2.7) forward 0.15/0.09.
DEPTHWISE_WORK = 4


def _threads(g: ConvGeometry) -> int:
    return threads_for(g.flops * (DEPTHWISE_WORK if g.is_depthwise else 1))


def forward(x, w, bias, g: ConvGeometry, packs=None):
    """packs: a dict the kernels keep packed filters in across calls (a layer's, in
    inference; csrc/_packs.pxi), or None to pack them for this call only."""
    y = output(g.y_shape, x.dtype)
    has_bias = bias is not None
    if not has_bias:
        bias = np.zeros(1, dtype=x.dtype)  # the kernel needs a buffer; it is never read
    _direct.forward(x.reshape(-1), w.reshape(-1), bias, y.reshape(-1), *_dims(g),
                    int(has_bias), _threads(g), packs)
    return y


def grad_input(grad_y, w, g: ConvGeometry, packs=None):
    grad_x = output(g.x_shape, grad_y.dtype)
    _direct.grad_input(grad_y.reshape(-1), w.reshape(-1), grad_x.reshape(-1), *_dims(g),
                       _threads(g), packs)
    return grad_x


def grad_weight(grad_y, x, g: ConvGeometry):
    grad_w = np.empty(g.w_shape, dtype=x.dtype)
    _direct.grad_weight(grad_y.reshape(-1), x.reshape(-1), grad_w.reshape(-1), *_dims(g),
                        _threads(g))
    return grad_w


def grad_bias(grad_y, g: ConvGeometry):
    grad_b = np.empty(g.K, dtype=grad_y.dtype)
    _direct.grad_bias(grad_y.reshape(-1), grad_b, g.N, g.K, g.P, g.Q, g.layout,
                      threads_for(g.flops))
    return grad_b
