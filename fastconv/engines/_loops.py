"""The im2col engine's C loops (``csrc/im2col_loops.c``) as ctypes function objects
that its Numba kernels call: im2col and col2im for both layouts, the filter flips, the
bias, and BLAS's gemm with its arguments by value.

Numba compiles a kernel's own loops on its first call in every fresh environment; these
loops are compiled with the wheel instead (the C file's comment has the measurement).
The kernels receive the function objects as arguments (first-class functions), which
keeps them cacheable on disk; a ctypes global would not be. Arrays go in as their
``.ctypes`` pointers, shapes and offsets as int64: the kernels, and the Python layer
before them, own every bounds check.
"""
from __future__ import annotations

import ctypes
import functools
from typing import NamedTuple

import numpy as np
import scipy.linalg.cython_blas  # noqa: F401  (holds the exported function addresses)
from numba.extending import get_cython_function_address

from .. import _im2col_loops

_P, _I, _D = ctypes.c_void_p, ctypes.c_int64, ctypes.c_double

# Argument lists, as in csrc/im2col_loops.h.
_SIGNATURES = {
    "unroll_nchw": [_P] + [_I] * 9 + [_P] + [_I] * 11,
    "fold_nchw": [_P] + [_I] * 4 + [_P] + [_I] * 12,
    "unroll_nhwc": [_P] + [_I] * 8 + [_P] + [_I] * 10,
    "fold_nhwc": [_P] + [_I] * 4 + [_P] + [_I] * 12,
    "flip_swap": [_P, _P] + [_I] * 6,
    "flip_swap_hwio": [_P, _P] + [_I] * 6,
    "unfold_images": [_P, _I, _P] + [_I] * 4 + [_P, _I],
    "stage_images": [_P] + [_I] * 4 + [_P, _I],
    "bias_rows": [_P] + [_I] * 4 + [_P],
    "bias_cols": [_P] + [_I] * 3 + [_P],
    "bias_block": [_P] + [_I] * 4 + [_P, _I, _I],
    "gemm": [_I] * 5 + [_P, _I, _I, _P, _I, _I, _D, _P, _I, _I],
}


class Loops(NamedTuple):
    """The loops for one element type (see csrc/im2col_loops_tmpl.h for each)."""

    unroll_nchw: object
    fold_nchw: object
    unroll_nhwc: object
    fold_nhwc: object
    flip_swap: object
    flip_swap_hwio: object
    unfold_images: object
    stage_images: object
    bias_rows: object
    bias_cols: object
    bias_block: object
    gemm: object


def _loops(suffix: str) -> Loops:
    found = _im2col_loops.addresses()
    return Loops(*(ctypes.CFUNCTYPE(None, *_SIGNATURES[name])(found[f"{name}_{suffix}"])
                   for name in Loops._fields))


_im2col_loops.set_blas(get_cython_function_address("scipy.linalg.cython_blas", "sgemm"),
                       get_cython_function_address("scipy.linalg.cython_blas", "dgemm"))
F32, F64 = _loops("f32"), _loops("f64")


def loops_for(dtype) -> Loops:
    """The loops for float32 or float64 arrays."""
    return F32 if np.dtype(dtype) == np.float32 else F64


@functools.lru_cache(maxsize=4)
def addresses_for(dtype) -> dict[str, int]:
    """The C address of every loop for float32 or float64, by name: for the callers on
    the direct engine's OpenMP team (csrc/_products.pxi, csrc/_pieces.pxi)."""
    return {name: ctypes.cast(f, ctypes.c_void_p).value
            for name, f in loops_for(dtype)._asdict().items()}


def address(a: np.ndarray) -> int:
    """The address of a C-contiguous array's first element, for a kernel that takes
    pointers: a strided view would be read as if it were contiguous."""
    if not a.flags.c_contiguous:
        raise ValueError(f"a kernel operand must be C-contiguous, got strides {a.strides} "
                         f"for shape {a.shape}")
    return a.ctypes.data
