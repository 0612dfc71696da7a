"""The im2col engine's unrolling loop (csrc/im2col_loops.c) against a NumPy unroll,
piece by piece.

The whole-pass tests check the unrolling only through products; here every entry of a
piece is compared, with the buffer prefilled with NaN so an entry the kernel forgets
to write (a padding zero, a run's fix-up) fails. The cases include the stride-1
"same width" shape, which copies one shifted run per tap and zeroes its padding
columns afterwards, and row ranges that start mid-tap (grad_weight's row split).
"""
import numpy as np
import pytest

from fastconv.engines._loops import loops_for


def numpy_unroll(x, n0, nb, p0, pb, row0, row1, R, S, P, Q, sh, sw, dh, dw, pads):
    """(row1 - row0, nb, pb*Q): column rows c*R*S + r*S + s of images n0:n0+nb, output
    rows p0:p0+pb, from a zero-padded copy: plainly right, and slow."""
    (pt, pbot), (pl, pr) = pads
    xp = np.pad(x[n0:n0 + nb], ((0, 0), (0, 0), (pt, pbot), (pl, pr)))
    C = x.shape[1]
    cols = np.empty((C, R, S, nb, pb, Q), x.dtype)
    for r in range(R):
        for s in range(S):
            h0, w0 = p0 * sh + r * dh, s * dw
            win = xp[:, :, h0:h0 + (pb - 1) * sh + 1:sh, w0:w0 + (Q - 1) * sw + 1:sw]
            cols[:, r, s] = win.transpose(1, 0, 2, 3)  # (nb, C, pb, Q) -> (C, nb, pb, Q)
    return cols.reshape(C * R * S, nb, pb * Q)[row0:row1]


CASES = [
    # H, W, R, S, stride, dilation, ((top, bottom), (left, right))
    (14, 14, 3, 3, (1, 1), (1, 1), ((1, 1), (1, 1))),  # "same": one run per tap
    (7, 7, 3, 3, (1, 1), (1, 1), ((1, 1), (1, 1))),
    (9, 6, 2, 4, (1, 1), (1, 1), ((0, 1), (1, 2))),    # "same" with even filters
    (10, 9, 3, 3, (1, 1), (2, 2), ((2, 2), (2, 2))),   # dilated "same"
    (5, 5, 5, 5, (1, 1), (1, 1), ((2, 2), (2, 2))),    # taps reaching past the plane
    (3, 4, 3, 5, (1, 1), (1, 1), ((1, 1), (2, 2))),    # filter as wide as the image
    (12, 11, 3, 3, (1, 1), (1, 1), ((0, 0), (0, 0))),  # valid: row by row
    (13, 15, 3, 2, (2, 3), (1, 2), ((1, 0), (2, 1))),
    (31, 31, 3, 3, (2, 2), (1, 1), ((1, 1), (1, 1))),
    (23, 23, 11, 11, (4, 4), (1, 1), ((0, 0), (0, 0))),
]


@pytest.mark.parametrize("H, W, R, S, stride, dil, pads", CASES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_unroll_matches_numpy(H, W, R, S, stride, dil, pads, dtype):
    rng = np.random.default_rng(H * 100 + W)
    N, C = 3, 3
    (sh, sw), (dh, dw) = stride, dil
    (pt, pbot), (pl, pr) = pads
    P = (H + pt + pbot - (R - 1) * dh - 1) // sh + 1
    Q = (W + pl + pr - (S - 1) * dw - 1) // sw + 1
    x = rng.standard_normal((N, C, H, W)).astype(dtype)
    x0 = x.copy()
    crs = C * R * S
    checked = 0
    for n0, nb in ((0, 1), (1, 2)):
        for p0, pb in ((0, P), (0, max(1, P // 2)), (P // 2, P - P // 2), (P - 1, 1)):
            for row0, row1 in ((0, crs), (R * S - 1, crs - 2), (S + 1, S + 2)):
                if row1 <= row0:
                    continue
                L = pb * Q
                cols = np.full((row1 - row0) * nb * L, np.nan, dtype)
                loops_for(dtype).unroll_nchw(x.ctypes.data, C, H, W, n0, nb, p0, pb,
                                             row0, row1, cols.ctypes.data, nb * L, L,
                                             R, S, Q, sh, sw, dh, dw, pt, pl)
                want = numpy_unroll(x, n0, nb, p0, pb, row0, row1, R, S, P, Q,
                                    sh, sw, dh, dw, pads)
                np.testing.assert_array_equal(cols.reshape(want.shape), want)
                checked += 1
    assert checked >= 20
    np.testing.assert_array_equal(x, x0)
