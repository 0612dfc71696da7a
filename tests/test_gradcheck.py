"""Gradients against central finite differences, in float64.

For the scalar loss L = sum(grad_y * conv2d(x, w, b)), dL/dx, dL/dw and dL/db are
exactly what conv2d_backward returns. Central differences with step 1e-6 have error
O(step^2) ~ 1e-12 (the loss is linear in each argument, so truncation error is nil and
only rounding remains): rtol 1e-6 is a strict check.
"""
import numpy as np
import pytest
from conftest import ALL_ENGINES

import fastconv

EPS = 1e-6

CASES = [
    dict(stride=1, pad=1),
    dict(stride=(2, 3), pad=((0, 2), (1, 0)), dilation=(1, 2)),
    dict(stride=2, pad="same", groups=2),
    dict(stride=1, pad="full", layout="NHWC", flip=True),
    dict(stride=3, pad=(2, 1), dilation=2, groups=4, layout="NHWC"),  # depthwise
]


def _shapes(opts):
    groups = opts.get("groups", 1)
    C, K = (4, 4) if groups == 4 else (2 * groups, 3 * groups)
    x = (2, 7, 6, C) if opts.get("layout") == "NHWC" else (2, C, 7, 6)
    w = (3, 2, C // groups, K) if opts.get("layout") == "NHWC" else (K, C // groups, 3, 2)
    return x, w, K


def _numeric_grad(f, a, idx):
    a_plus, a_minus = a.copy(), a.copy()
    a_plus[idx] += EPS
    a_minus[idx] -= EPS
    return (f(a_plus) - f(a_minus)) / (2 * EPS)


@pytest.mark.parametrize("engine", ALL_ENGINES)
@pytest.mark.parametrize("opts", CASES, ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()))
def test_gradients_match_finite_differences(engine, opts):
    rng = np.random.default_rng(7)
    x_shape, w_shape, K = _shapes(opts)
    x, w, b = (rng.standard_normal(s) for s in (x_shape, w_shape, (K,)))
    gy = rng.standard_normal(fastconv.output_shape(x, w, **{k: v for k, v in opts.items()
                                                               if k != "flip"}))

    def loss(x_, w_, b_):
        return float(np.sum(gy * fastconv.conv2d(x_, w_, bias=b_, backend=engine, **opts)))

    g = fastconv.conv2d_backward(gy, x, w, backend=engine, **opts)
    # Every entry of the small arrays; a random sample of the input's.
    for name, arr, grad, f in (
        ("x", x, g.x, lambda a: loss(a, w, b)),
        ("w", w, g.w, lambda a: loss(x, a, b)),
        ("b", b, g.b, lambda a: loss(x, w, a)),
    ):
        flat = range(arr.size) if arr.size <= 200 else rng.choice(arr.size, 60, replace=False)
        for i in flat:
            idx = np.unravel_index(i, arr.shape)
            num = _numeric_grad(f, arr, idx)
            assert np.isclose(grad[idx], num, rtol=1e-6, atol=1e-7), (name, idx, grad[idx], num)


WINOGRAD_CASES = [
    dict(pad=1),
    dict(pad=((0, 2), (1, 0)), groups=2),
    dict(pad="full", layout="NHWC", flip=True),
]


@pytest.mark.parametrize("opts", WINOGRAD_CASES,
                         ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()))
def test_winograd_gradients_match_finite_differences(opts):
    """The Winograd engine (3x3 stride-1 only, so its own cases) in float64."""
    rng = np.random.default_rng(8)
    groups = opts.get("groups", 1)
    C, K = 2 * groups, 3 * groups
    nhwc = opts.get("layout") == "NHWC"
    x = rng.standard_normal((2, 7, 6, C) if nhwc else (2, C, 7, 6))
    w = rng.standard_normal((3, 3, C // groups, K) if nhwc else (K, C // groups, 3, 3))
    b = rng.standard_normal(K)
    gy = rng.standard_normal(fastconv.output_shape(x, w, **{k: v for k, v in opts.items()
                                                               if k != "flip"}))

    def loss(x_, w_):
        return float(np.sum(gy * fastconv.conv2d(x_, w_, bias=b, backend="winograd",
                                                 **opts)))

    g = fastconv.conv2d_backward(gy, x, w, backend="winograd", **opts)
    for name, arr, grad, f in (("x", x, g.x, lambda a: loss(a, w)),
                               ("w", w, g.w, lambda a: loss(x, a))):
        for i in rng.choice(arr.size, min(arr.size, 40), replace=False):
            idx = np.unravel_index(i, arr.shape)
            num = _numeric_grad(f, arr, idx)
            assert np.isclose(grad[idx], num, rtol=1e-6, atol=1e-7), (name, idx, grad[idx], num)
