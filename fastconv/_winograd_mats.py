"""Winograd minimal-filtering transforms F(m, r), built exactly from their points.

F(m, r) computes m outputs of an r-tap correlation from alpha = m + r - 1 inputs with
alpha multiplications (Lavin and Gray, "Fast Algorithms for Convolutional Neural
Networks", 2016): in 1-D

    y = AT [(G g) * (BT d)]        (AT: m x alpha, G: alpha x r, BT: alpha x alpha)

and in 2-D, nesting it, Y = AT [(G g GT) * (BT d B)] A for an alpha x alpha input tile
d and an r x r filter g. The matrices come from the Toom-Cook construction on alpha - 1
finite points and the point at infinity: AT and G are Vandermonde rows (G scaled by the
reciprocal of each point's Lagrange denominator, so the fractions sit in the filter
transform, done once per layer), and BT is the unique matrix that makes the identity
above hold, found here by exact rational elimination. The points are the usual ones
(0, +-1, +-2, +-1/2): small magnitudes keep the rounding error low, which grows with
the tile (float32 error bounds: tests/test_winograd.py).
"""
from __future__ import annotations

from fractions import Fraction
from functools import lru_cache

import numpy as np

# alpha - 1 finite points per output tile size m, for r = 3.
POINTS = {
    2: (0, 1, -1),
    4: (0, 1, -1, 2, -2),
    6: (0, 1, -1, 2, -2, Fraction(1, 2), Fraction(-1, 2)),
}
TILE_SIZES = tuple(POINTS)


def _solve_exact(rows: list[list[Fraction]], rhs: list[Fraction], n: int) -> list[Fraction]:
    """x with rows . x = rhs, for a consistent system of full column rank n."""
    a = [list(r) + [b] for r, b in zip(rows, rhs)]
    piv_row = 0
    cols = []
    for col in range(n):
        p = next((i for i in range(piv_row, len(a)) if a[i][col] != 0), None)
        if p is None:
            raise ArithmeticError("singular Winograd system")  # the points are distinct
        a[piv_row], a[p] = a[p], a[piv_row]
        inv = 1 / a[piv_row][col]
        a[piv_row] = [v * inv for v in a[piv_row]]
        for i in range(len(a)):
            if i != piv_row and a[i][col] != 0:
                f = a[i][col]
                a[i] = [v - f * u for v, u in zip(a[i], a[piv_row])]
        cols.append(col)
        piv_row += 1
    if any(r[-1] != 0 for r in a[piv_row:]):
        raise ArithmeticError("inconsistent Winograd system")
    return [a[i][-1] for i in range(n)]


@lru_cache(maxsize=None)
def transforms_exact(m: int, r: int = 3) -> tuple[tuple, tuple, tuple]:
    """(AT, G, BT) of F(m, r) as nested tuples of Fractions."""
    if m not in POINTS or r != 3:
        raise ValueError(f"tile size m must be one of {TILE_SIZES} with r = 3, "
                         f"got m={m}, r={r}")
    pts = [Fraction(p) for p in POINTS[m]]
    alpha = m + r - 1
    # AT[i][j] = p_j^i; the point at infinity contributes only the top coefficient.
    AT = [[p ** i for p in pts] + [Fraction(int(i == m - 1))] for i in range(m)]
    G = []
    for j, p in enumerate(pts):
        den = Fraction(1)
        for q in pts[:j] + pts[j + 1:]:
            den *= p - q
        G.append([p ** k / den for k in range(r)])
    G.append([Fraction(int(k == r - 1)) for k in range(r)])
    # BT: sum_j AT[i][j] G[j][k] BT[j][l] = [l == i + k] for all i < m, k < r, l.
    coef = [[AT[i][j] * G[j][k] for j in range(alpha)] for i in range(m) for k in range(r)]
    BT = [[Fraction(0)] * alpha for _ in range(alpha)]
    for col in range(alpha):
        rhs = [Fraction(int(col == i + k)) for i in range(m) for k in range(r)]
        x = _solve_exact(coef, rhs, alpha)
        for j in range(alpha):
            BT[j][col] = x[j]
    return (tuple(map(tuple, AT)), tuple(map(tuple, G)), tuple(map(tuple, BT)))


def transforms(m: int, dtype=np.float64) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(AT, G, BT) of F(m, 3) as arrays of ``dtype`` (m x alpha, alpha x 3, alpha x alpha)."""
    return tuple(np.array([[float(v) for v in row] for row in mat], dtype=dtype)
                 for mat in transforms_exact(m))
