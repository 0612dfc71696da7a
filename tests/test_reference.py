"""The reference engine itself, against the definition written as plain loops.

Everything else is checked against the reference, so the reference is checked against
the formula: y[n,k,p,q] = b[k] + sum_{c,r,s} x[n, g*Cg + c, p*sh - pt + r*dh,
q*sw - pl + s*dw] * w[k,c,r,s], with out-of-range input reading as zero.
"""
import numpy as np
import pytest
from conftest import assert_close, random_problem

import fastconv


def loops_forward(x, w, b, stride, pad, dilation, groups):
    """NCHW only, per-side pad (top, bottom, left, right); deliberately naive."""
    N, C, H, W = x.shape
    K, Cg, R, S = w.shape
    (sh, sw), (dh, dw), (pt, pb, pl, pr) = stride, dilation, pad
    P = (H + pt + pb - dh * (R - 1) - 1) // sh + 1
    Q = (W + pl + pr - dw * (S - 1) - 1) // sw + 1
    Kg = K // groups
    y = np.zeros((N, K, P, Q))
    for n in range(N):
        for k in range(K):
            g = k // Kg
            for p in range(P):
                for q in range(Q):
                    acc = b[k]
                    for c in range(Cg):
                        for r in range(R):
                            for s in range(S):
                                h, v = p * sh - pt + r * dh, q * sw - pl + s * dw
                                if 0 <= h < H and 0 <= v < W:
                                    acc += x[n, g * Cg + c, h, v] * w[k, c, r, s]
                    y[n, k, p, q] = acc
    return y


@pytest.mark.parametrize("seed", range(12))
def test_reference_forward_matches_loops(seed):
    rng = np.random.default_rng(seed)
    groups = int(rng.integers(1, 3))
    x = rng.standard_normal((2, 2 * groups, 7, 6))
    w = rng.standard_normal((2 * groups, 2, int(rng.integers(1, 4)), int(rng.integers(1, 4))))
    b = rng.standard_normal(w.shape[0])
    stride = tuple(int(s) for s in rng.integers(1, 3, size=2))
    dilation = tuple(int(d) for d in rng.integers(1, 3, size=2))
    pad = tuple(int(p) for p in rng.integers(0, 3, size=4))
    y = fastconv.conv2d(x, w, stride, ((pad[0], pad[1]), (pad[2], pad[3])), bias=b,
                        dilation=dilation, groups=groups, backend="reference")
    assert_close(y, loops_forward(x, w, b, stride, pad, dilation, groups), np.float64)


@pytest.mark.parametrize("seed", range(8))
def test_reference_gradients_are_adjoint_of_forward(seed):
    """<grad_y, conv(x, w)> is bilinear: its x- and w-gradients must reproduce it exactly.

    For a linear map A, <gy, A x> = <A^T gy, x>; the same holds in w. This pins down
    grad_input and grad_weight of the reference from its (loop-checked) forward.
    """
    p = random_problem(seed)
    x, w, gy = (p[k].astype(np.float64) for k in ("x", "w", "gy"))
    y = fastconv.conv2d(x, w, flip=p["flip"], backend="reference", **p["opts"])
    g = fastconv.conv2d_backward(gy, x, w, flip=p["flip"], backend="reference", **p["opts"])
    inner = float(np.sum(gy * y))
    assert np.isclose(np.sum(g.x * x), inner, rtol=1e-10, atol=1e-10)
    assert np.isclose(np.sum(g.w * w), inner, rtol=1e-10, atol=1e-10)
    assert_close(g.b, gy.sum(axis=(0, 2, 3) if p["opts"]["layout"] == "NCHW" else (0, 1, 2)),
                 np.float64)
