"""Numba kernels written as one thread's share, run on fastconv's own threads.

A kernel is written as ``fn(t, ..., T, ...)``: the work of thread ``t`` of ``T``, on a
block of the output no other share touches. It is compiled once, as a plain serial
``nogil`` function; ``run(T, ...)`` calls it for t = 1 .. T-1 on the worker threads of
``_threads.run_shares`` and for t = 0 on the caller's thread, and returns when all
are done. One compiled function serves one thread and many, and Numba's threading
layer is never started.

Why not ``prange``: a first call in a fresh environment compiles every kernel it
meets, and Numba's parallel lowering costs more than the kernel itself. Measured on
the Xeon (2026-12-02, empty cache, 64 -> 64 channels 3x3, float32), the forward
kernel inside ``prange`` compiled in 8.7 s, serial 6.2 s, and a process that met
both paid for both.
"""
from __future__ import annotations

from numba import njit

from .._threads import run_shares

# Off: results must match the reference engine. The one place to change it.
FASTMATH = False
KERNEL_OPTIONS = dict(nogil=True, cache=True, fastmath=FASTMATH)


class Shares:
    """A kernel body ``fn(t, ...)``, run as T shares (see the module docstring)."""

    def __init__(self, fn):
        self.body = njit(**KERNEL_OPTIONS)(fn)
        self.__doc__ = fn.__doc__

    def run(self, T: int, *args):
        run_shares(self.body, T, args)


def kernel(fn) -> Shares:
    """Decorator: ``fn(t, ..., T, ...)``, one thread's share of a kernel."""
    return Shares(fn)
