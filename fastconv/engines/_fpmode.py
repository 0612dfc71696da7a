"""Flush-to-zero and denormals-are-zero for the im2col engine's Numba threads.

Subnormal operands send BLAS down a microcode path 7-100x slower. The direct engine
sets MXCSR's FTZ and DAZ bits in each OpenMP thread (``fc_ftz_enter`` in csrc); the
im2col engine runs its single-threaded BLAS calls on its own Numba threads, so it can
do the same there: ``ftz_enter()`` at the start of each thread's share, ``ftz_leave``
with what it returned at the end. The caller's thread is left as it was, also when the
serial kernel runs in it.

On x86-64 these are LLVM's ``stmxcsr``/``ldmxcsr`` intrinsics, inlined into the
kernels. LLVM may move register arithmetic across them, but not memory accesses or
calls: the kernels' arithmetic is BLAS calls and in-memory updates, which stay on
their side. Elsewhere (``FLUSHES`` is False) they do nothing, and the engine instead
reads subnormal inputs as zero by scanning them first.
"""
from __future__ import annotations

import platform

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

FLUSHES = platform.machine().lower() in ("x86_64", "amd64")
FTZ_DAZ = 0x8040  # MXCSR bits 15 (flush to zero) and 6 (denormals are zero)


def _mxcsr_call(builder, name, slot):
    fnty = ir.FunctionType(ir.VoidType(), [ir.IntType(8).as_pointer()])
    fn = cgutils.get_or_insert_function(builder.module, fnty, name)
    builder.call(fn, [builder.bitcast(slot, ir.IntType(8).as_pointer())])


@intrinsic
def _mxcsr_or(typingctx, bits):
    """MXCSR |= bits in this thread; returns the previous MXCSR."""
    def codegen(context, builder, signature, args):
        slot = cgutils.alloca_once(builder, ir.IntType(32))
        _mxcsr_call(builder, "llvm.x86.sse.stmxcsr", slot)
        old = builder.load(slot)
        builder.store(builder.or_(old, args[0]), slot)
        _mxcsr_call(builder, "llvm.x86.sse.ldmxcsr", slot)
        return old
    return types.uint32(types.uint32), codegen


@intrinsic
def _mxcsr_load(typingctx, value):
    """MXCSR = value in this thread."""
    def codegen(context, builder, signature, args):
        slot = cgutils.alloca_once(builder, ir.IntType(32))
        builder.store(args[0], slot)
        _mxcsr_call(builder, "llvm.x86.sse.ldmxcsr", slot)
        return context.get_dummy_value()
    return types.void(types.uint32), codegen


if FLUSHES:
    @njit(nogil=True, cache=True)
    def ftz_enter():
        """FTZ and DAZ on in this thread; returns the state for ``ftz_leave``."""
        return _mxcsr_or(np.uint32(FTZ_DAZ))

    @njit(nogil=True, cache=True)
    def ftz_leave(old):
        """Restore the state ``ftz_enter`` returned."""
        _mxcsr_load(np.uint32(old))
else:
    @njit(nogil=True, cache=True)
    def ftz_enter():
        return np.uint32(0)

    @njit(nogil=True, cache=True)
    def ftz_leave(old):
        pass
