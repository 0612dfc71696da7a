"""BLAS's gemm, callable from inside Numba kernels: SciPy's ``cython_blas`` sgemm/dgemm.

The im2col engine unrolls a cache-sized piece of the input on each thread and
multiplies it there, so the product has to be callable from inside a Numba kernel,
on flat buffers with offsets and leading dimensions (which ``np.dot`` in Numba does not
take). SciPy exports the Fortran BLAS entry points; Numba calls them through a ctypes
function object passed in as an argument (a first-class function), which keeps the
calling kernels cacheable on disk (a ctypes global would not be).

Everything here speaks BLAS's column-major language. A C-ordered (rows, cols) block
with row pitch ``ld`` is, to BLAS, a column-major (cols, rows) matrix with leading
dimension ``ld``: the kernels pass their row-major operands transposed accordingly.

The calling threads must see a single-threaded BLAS: ``_blas.single_threaded()``
arranges that for the duration of a kernel, so no BLAS pool ever runs inside a Numba
thread.
"""
from __future__ import annotations

import ctypes

import numpy as np
import scipy.linalg.cython_blas  # noqa: F401  (holds the exported function addresses)
from numba import njit
from numba.extending import get_cython_function_address

# Every argument of Fortran BLAS is a pointer: transa, transb, m, n, k, alpha, a, lda,
# b, ldb, beta, c, ldc.
_GEMM_TYPE = ctypes.CFUNCTYPE(None, *([ctypes.c_void_p] * 13))
SGEMM = _GEMM_TYPE(get_cython_function_address("scipy.linalg.cython_blas", "sgemm"))
DGEMM = _GEMM_TYPE(get_cython_function_address("scipy.linalg.cython_blas", "dgemm"))

# NumPy scalars, not ints: a Numba kernel passes an int global on as a literal, and
# gemm was compiled once per (transa, transb) pair that way (0.3-0.85 s each, an empty
# cache, Zen 3); as uint8 values it is compiled once per dtype.
NOTRANS = np.uint8(ord("N"))
TRANS = np.uint8(ord("T"))


def gemm_for(dtype):
    """The gemm function object for float32 or float64 arrays."""
    return SGEMM if np.dtype(dtype) == np.float32 else DGEMM


@njit(nogil=True, cache=True)
def gemm(fn, transa, transb, m, n, k, a, a_off, lda, b, b_off, ldb, beta, c, c_off, ldc):
    """c[c_off:] (m x n) = op(a[a_off:]) (m x k) @ op(b[b_off:]) (k x n) + beta * c, column-major.

    ``fn`` is SGEMM or DGEMM matching the arrays' dtype; a, b and c are flat arrays;
    alpha is 1. Offsets are element offsets into the flat arrays.
    """
    dims = np.empty(6, np.int32)
    dims[0], dims[1], dims[2], dims[3], dims[4], dims[5] = m, n, k, lda, ldb, ldc
    scal = np.empty(2, c.dtype)
    scal[0], scal[1] = 1, beta
    tr = np.empty(2, np.uint8)
    tr[0], tr[1] = transa, transb
    fn(tr.ctypes, tr[1:].ctypes, dims.ctypes, dims[1:].ctypes, dims[2:].ctypes,
       scal.ctypes, a[a_off:].ctypes, dims[3:].ctypes, b[b_off:].ctypes, dims[4:].ctypes,
       scal[1:].ctypes, c[c_off:].ctypes, dims[5:].ctypes)
