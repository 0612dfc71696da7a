"""BLAS's gemm, callable from inside Numba kernels: SciPy's ``cython_blas`` sgemm/dgemm
behind the by-value C wrapper of ``csrc/im2col_loops.c`` (``_loops``).

The im2col engine unrolls a cache-sized piece of the input on each thread and
multiplies it there, so the product has to be callable from inside a Numba kernel,
on flat buffers with offsets and leading dimensions (which ``np.dot`` in Numba does not
take). A kernel calls ``gemm_fn(transa, transb, m, n, k, a.ctypes, a_off, lda,
b.ctypes, b_off, ldb, beta, c.ctypes, c_off, ldc)``: c[c_off:] (m x n) = op(a[a_off:])
(m x k) . op(b[b_off:]) (k x n) + beta * c, column-major, alpha 1, offsets in elements.
(A Numba wrapper that packed the arguments into arrays for the Fortran interface cost
1.4 s of compiling on every first call, Zen 1.)

Everything here speaks BLAS's column-major language. A C-ordered (rows, cols) block
with row pitch ``ld`` is, to BLAS, a column-major (cols, rows) matrix with leading
dimension ``ld``: the kernels pass their row-major operands transposed accordingly.

The calling threads must see a single-threaded BLAS: ``_blas.single_threaded()``
arranges that for the duration of a kernel, so no BLAS pool ever runs inside a Numba
thread.
"""
from __future__ import annotations

import numpy as np

from ._loops import F32, F64

SGEMM, DGEMM = F32.gemm, F64.gemm

# NumPy scalars, not ints: a Numba kernel passes an int global on as a literal, and
# would be compiled once per (transa, transb) pair that way.
NOTRANS = np.uint8(ord("N"))
TRANS = np.uint8(ord("T"))
