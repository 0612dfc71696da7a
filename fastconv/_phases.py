"""Stride phases: a strided convolution as a stride-1 one over its input's sub-grids.

At stride s (one axis; the other is the same), output p of a convolution reads input
rows s*p - pad + r for taps r < R. Split the input rows by their remainder: row s*i + a
is row i of phase a. Tap r then reads phase a = (r + pad) mod s at i = p + t, where
r = s*t + a + pad, so each phase is an ordinary stride-1 correlation of its sub-grid,
with the taps r = s*t + a + pad, t_min <= t <= t_max, and the forward pass sums them.
When the phases' windows are 3 taps long (t_max - t_min < 3) on both axes, the whole
layer is one 3 x 3, stride-1 Winograd call whose reduction runs over (phase, channel):
DCGAN's 4 x 4, stride-2, pad-1 filters become four 2 x 2 windows inside a 3 x 3 one,
9 of 16 multiplies per output by F(4x4, 3x3) against the 16 of any direct method.

The input gradient is the adjoint: the same windows write the phases of grad_x. It is
a transposed convolution's forward pass, so ``conv_transpose2d`` runs DCGAN's generator
this way.

The kernel reads every window tap unconditionally, so the filters get zero taps on
either side (``pad_filters``) wherever a phase's window reaches past them. The input's
sub-grids must tile it (H and W divisible by the strides): then every phase has the
same size, as one call needs.
"""
from __future__ import annotations

from functools import lru_cache
from typing import NamedTuple

import numpy as np

from ._geometry import ConvGeometry

# Phases of one call at most (csrc/_winograd.pxi, FC_MAX_PHASES).
MAX_PHASES = 256


class AxisPlan(NamedTuple):
    """One axis: the window's padding (th = -t_min), the filter taps added before and
    after, and the padded tap that phase 0's window starts at (rb)."""
    th: int
    before: int
    after: int
    rb: int


class PhasePlan(NamedTuple):
    rows: AxisPlan
    cols: AxisPlan


# Cached: auto asks for every strided call (fcn_up16's plan, 32 taps at stride 16, took
# 160 us when its taps were searched for; choose_backend 324 us, Zen 1).
@lru_cache(maxsize=1024)
def _axis(R: int, stride: int, pad: int) -> AxisPlan | None:
    # phase a's taps r = stride * t + a + pad, 0 <= r < R: t from ceil(-(a + pad) / stride)
    # to floor((R - 1 - a - pad) / stride); tap 0 is some phase's, so some phase has taps
    spans = [(-((a + pad) // stride), (R - 1 - a - pad) // stride) for a in range(stride)]
    spans = [(lo, hi) for lo, hi in spans if lo <= hi]
    t_min, t_max = min(lo for lo, _ in spans), max(hi for _, hi in spans)
    if t_max - t_min > 2:
        return None
    first = stride * t_min + pad                  # tap of phase 0, window tap 0
    last = stride * (t_min + 2) + stride - 1 + pad  # tap of the last phase, window tap 2
    before, after = max(0, -first), max(0, last - (R - 1))
    return AxisPlan(-t_min, before, after, first + before)


def plan(g: ConvGeometry) -> PhasePlan | None:
    """The phases of g, or None when it has none that one 3 x 3 call can run: stride 1
    on both axes (plain Winograd takes those), dilation, windows longer than 3 taps,
    sub-grids that do not tile the input, or more than MAX_PHASES of them."""
    if (g.dil_h != 1 or g.dil_w != 1 or g.stride_h * g.stride_w > MAX_PHASES
            or g.stride_h == g.stride_w == 1):
        return None
    if g.H % g.stride_h or g.W % g.stride_w:  # the sub-grids must tile the input
        return None
    rows = _axis(g.R, g.stride_h, g.pad_top)
    cols = _axis(g.S, g.stride_w, g.pad_left)
    if rows is None or cols is None:
        return None
    return PhasePlan(rows, cols)


def multiplies_saved(g: ConvGeometry, tile: int) -> float:
    """Direct multiplies over the phases' Winograd multiplies per output: R*S taps
    against stride_h*stride_w windows of (tile + 2)^2 / tile^2 each."""
    per_window = (tile + 2) ** 2 / tile ** 2
    return g.R * g.S / (g.stride_h * g.stride_w * per_window)


def pad_filters(w: np.ndarray, p: PhasePlan, nhwc: bool) -> np.ndarray:
    """w with the zero taps the windows read: (K, C/groups, R', S') for NCHW filters,
    (R', S', C/groups, K) for NHWC ones."""
    r, c = p.rows, p.cols
    if r.before == r.after == c.before == c.after == 0:
        return w
    spatial = ((r.before, r.after), (c.before, c.after))
    return np.pad(w, spatial + ((0, 0), (0, 0)) if nhwc else ((0, 0), (0, 0)) + spatial)
