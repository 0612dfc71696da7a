"""The Winograd engine: F(4 x 4, 3 x 3) minimal filtering for 3 x 3, stride-1,
dilation-1 layers (any padding, groups, NCHW and NHWC, float32 and float64), and for
strided layers whose stride phases are 3 x 3 windows (fastconv/_phases.py: DCGAN's
4 x 4, stride-2 filters, whose input gradient is a transposed convolution's forward).

A thin wrapper over the kernels in ``fastconv._direct`` (csrc/_winograd.pxi: the tile
batches, their transforms in csrc/winograd_kernels_tmpl.h and the products through the
direct engine's fc_pw_gemm micro-kernel, per ISA). Forward and grad_input run here; the
transforms do not make grad_weight cheaper enough to pay (not built: the direct engine
computes it, as it does grad_bias). The slow twin is ``engines/winograd_twin.py``.

Accuracy: a transform mixes a whole input tile, so results round differently from
direct convolution; tests/test_winograd.py states and checks the bounds. A NaN or Inf
input would reach every output of its tiles: with ``finite_only`` (what ``auto`` asks
for) the passes return None when they meet one, and the API has an exact engine run
the call.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np

from .. import _direct
from .. import _phases
from .._geometry import ConvGeometry
from .._threads import threads_for
from .._winograd_mats import transforms
from . import direct
from ._alloc import output

# Output tile size: F(4 x 4, 3 x 3), 36 products for 16 outputs (4x fewer than direct).
# Measured forward, float32, 2 threads, AMD EPYC Zen 4 (AVX-512), 2026-12-02, medians of
# 12 interleaved rounds, F(2,3) / F(4,3) / F(6,3) in ms: vgg_conv1_2 50.7 / 26.6 / 30.4,
# resnet_c2_3x3 9.4 / 5.1 / 6.0, resnet_c4_3x3 6.8 / 5.7 / 9.6, resnet_c5_3x3
# 10.2 / 10.3 / 19.5; max error / max |y_ref| (He weights) 4e-7-9e-7 / 7e-6-1.4e-5 /
# 1e-5-3.2e-5. F(6,3)'s 64 products per tile and its larger transforms cost more than
# its fewer tiles save, and it is near the 1e-5 Frobenius bound at 512 channels.
TILE = 4


def stride_one(g: ConvGeometry) -> bool:
    """3 x 3 filters, stride 1, dilation 1: the engine's plain case."""
    return (g.R == g.S == 3 and g.stride_h == g.stride_w == 1
            and g.dil_h == g.dil_w == 1)


def takes(g: ConvGeometry) -> bool:
    """The shapes this engine computes: stride_one, or stride phases that are 3 x 3
    windows (_phases.plan)."""
    return stride_one(g) or _phases.plan(g) is not None


def check(g: ConvGeometry) -> None:
    if not takes(g):
        raise ValueError(
            "backend='winograd' takes 3x3 filters at stride 1 and dilation 1, or strided "
            "filters whose stride phases are 3x3 windows on an input they tile (such as "
            f"4x4 filters at stride 2, pad 1, on even H and W), got {g.R}x{g.S} filters, "
            f"stride ({g.stride_h}, {g.stride_w}), dilation ({g.dil_h}, {g.dil_w}), pad "
            f"({g.pad_top}, {g.pad_left}), input {g.H}x{g.W}; use backend='auto', "
            "'direct' or 'im2col'")


@lru_cache(maxsize=None)
def _mats(m: int, dtype: str):
    AT, G, BT = transforms(m, np.float64)
    return tuple(np.ascontiguousarray(a, dtype=dtype).reshape(-1) for a in (BT, AT, G))


def _args(g: ConvGeometry):
    return (g.N, g.C, g.H, g.W, g.K, g.P, g.Q, g.groups, g.pad_top, g.pad_left, g.layout)


def _phase_args(w, g: ConvGeometry):
    """The padded filters and the integers of a stride-phase call (wino_phases)."""
    p = _phases.plan(g)
    wp = _phases.pad_filters(w, p, g.nhwc)
    Rp, Sp = (wp.shape[0], wp.shape[1]) if g.nhwc else (wp.shape[2], wp.shape[3])
    return wp, (g.N, g.C, g.H, g.W, g.K, g.P, g.Q, g.groups, g.layout, Rp, Sp,
                g.stride_h, g.stride_w, p.rows.th, p.cols.th, p.rows.rb, p.cols.rb)


def _key(w, packs):
    """Where the phases' transformed filters are kept in a layer's packs: under the
    address of the filters they were padded from (the padded copy is new each call)."""
    return None if packs is None else w.__array_interface__["data"][0]


def forward(x, w, bias, g: ConvGeometry, packs=None, finite_only=False):
    """y; with ``finite_only``, None instead when x or w holds a NaN or Inf (the kernel
    counts them as it copies and transforms, and stops)."""
    check(g)
    y = output(g.y_shape, x.dtype)
    has_bias = bias is not None
    if not has_bias:
        bias = np.zeros(1, dtype=x.dtype)  # the kernel needs a buffer; it is never read
    if not stride_one(g):
        wp, args = _phase_args(w, g)
        if _direct.wino_phases(x.reshape(-1), wp.reshape(-1), bias, y.reshape(-1), False,
                               *args, int(has_bias), TILE, *_mats(TILE, x.dtype.str),
                               threads_for(g.flops), packs, _key(w, packs), finite_only):
            return None
        return y
    if _direct.wino_forward(x.reshape(-1), w.reshape(-1), bias, y.reshape(-1), *_args(g),
                            int(has_bias), TILE, *_mats(TILE, x.dtype.str),
                            threads_for(g.flops), packs, finite_only):
        return None
    return y


def grad_input(grad_y, w, g: ConvGeometry, packs=None, finite_only=False):
    """grad_x; with ``finite_only``, None instead when grad_y or w holds a NaN or Inf."""
    check(g)
    grad_x = output(g.x_shape, grad_y.dtype)
    if not stride_one(g):
        wp, args = _phase_args(w, g)
        none = np.zeros(1, dtype=grad_y.dtype)  # no bias
        if _direct.wino_phases(grad_y.reshape(-1), wp.reshape(-1), none, grad_x.reshape(-1),
                               True, *args, 0, TILE, *_mats(TILE, grad_y.dtype.str),
                               threads_for(g.flops), packs, _key(w, packs), finite_only):
            return None
        return grad_x
    if _direct.wino_grad_input(grad_y.reshape(-1), w.reshape(-1), grad_x.reshape(-1),
                               *_args(g), TILE, *_mats(TILE, grad_y.dtype.str),
                               threads_for(g.flops), packs, finite_only):
        return None
    return grad_x


def grad_weight(grad_y, x, g: ConvGeometry):
    """The direct engine's: see the module docstring."""
    check(g)
    return direct.grad_weight(grad_y, x, g)


def grad_bias(grad_y, g: ConvGeometry):
    return direct.grad_bias(grad_y, g)
