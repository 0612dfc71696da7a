"""Numba kernels compiled twice, parallel and serial, for the engines' own threads."""
from __future__ import annotations

import types

from numba import njit

# Off: results must match the reference engine. The one place to change it.
FASTMATH = False
KERNEL_OPTIONS = dict(nogil=True, cache=True, fastmath=FASTMATH)


class Twin:
    """A kernel compiled twice: with ``prange`` on Numba's thread pool, and serial.

    Which one runs is decided per call (``run(parallel, ...)``). The serial twin never
    touches Numba's threading layer, which matters in a process forked after the pool
    started (GNU OpenMP aborts there).
    """

    def __init__(self, fn):
        self.parallel = njit(parallel=True, **KERNEL_OPTIONS)(fn)
        # Numba's on-disk cache tells functions apart by qualified name, not by the
        # parallel flag: the serial twin needs a name of its own, or one would load the
        # other's machine code.
        serial = types.FunctionType(fn.__code__, fn.__globals__, fn.__name__ + "_serial",
                                    fn.__defaults__, fn.__closure__)
        serial.__qualname__ = fn.__qualname__ + "_serial"
        self.serial = njit(parallel=False, **KERNEL_OPTIONS)(serial)
        self.__doc__ = fn.__doc__

    def run(self, parallel: bool, *args):
        return (self.parallel if parallel else self.serial)(*args)


def kernel(fn) -> Twin:
    """Decorator: ``fn`` as a Twin."""
    return Twin(fn)
