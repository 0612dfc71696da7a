"""Flush-to-zero and denormals-are-zero in the im2col engine.

Subnormal operands send BLAS down a microcode path 7-100x slower. The direct engine
sets MXCSR's FTZ and DAZ bits in each OpenMP thread (``fc_ftz_enter`` in csrc); the
im2col engine's C loops that compute (its gemm calls, col2im's sums, the bias: in
``csrc/im2col_loops.c``) set them for the length of each call and restore the
thread's mode before returning, so every thread, the caller's included, leaves with
the mode it came in with. (They were LLVM intrinsics inside each Numba kernel until
the loops moved to C; each call now pays nanoseconds for the save and restore.)

Where the loops cannot set them (``FLUSHES`` is False: not x86), the engine instead
reads subnormal inputs as zero by scanning them first (``im2col._readable``).
"""
from __future__ import annotations

from .. import _im2col_loops

FLUSHES = _im2col_loops.flushes()
