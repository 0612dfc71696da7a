"""The BLAS libraries loaded in this process, and their thread pools.

NumPy and SciPy each bundle their own OpenBLAS (``libscipy_openblas64_`` and
``libscipy_openblas``); the im2col engine's products run in SciPy's (``_cblas``), a
user's ``a @ b`` in NumPy's. Both pools follow fastconv's one thread count, and both are
held at one thread while our kernels call gemm from their own threads.

threadpoolctl finds the libraries, on every platform (``ThreadpoolController``, made
once and made again when the thread count is set, which picks up a BLAS loaded since).
The counts are then set through each library's own entry point, found by threadpoolctl:
its ``lib.set_num_threads`` lets only the first Python thread that set an OpenBLAS
limit set it again (the others silently do nothing), and fastconv is called from many
threads. Measured per single-threaded section (two OpenBLAS, 2026-12-01, AMD EPYC):
``ThreadpoolController.limit(limits=1)`` 18 us, threadpoolctl's own setters 9 us, the
entry points called directly 7 us.
"""
from __future__ import annotations

import contextlib
import ctypes
import os
import threading
from dataclasses import dataclass

from threadpoolctl import ThreadpoolController

# (setter, getter) by threadpoolctl's internal_api name. OpenBLAS builds rename their
# API with a prefix and suffix (scipy-openblas: "scipy_" and, 64-bit ints, "64_").
_ENTRY_POINTS = {
    "openblas": [(p + "openblas_set_num_threads" + s, p + "openblas_get_num_threads" + s)
                 for p in ("", "scipy_") for s in ("", "64_", "_64")],
    "mkl": [("MKL_Set_Num_Threads", "MKL_Get_Max_Threads")],
    "blis": [("bli_thread_set_num_threads", "bli_thread_get_num_threads")],
}


@dataclass
class BlasLibrary:
    path: str
    api: str
    _set: object
    _get: object

    def set_num_threads(self, n: int) -> None:
        self._set(ctypes.c_int(n))

    def get_num_threads(self) -> int:
        return int(self._get())


def _entry_points(controller) -> BlasLibrary | None:
    lib = getattr(controller, "dynlib", None)
    for set_name, get_name in _ENTRY_POINTS.get(controller.internal_api, ()):
        setter = getattr(lib, set_name, None)
        getter = getattr(lib, get_name, None)
        if setter is not None and getter is not None:
            setter.restype = None
            getter.restype = ctypes.c_int
            return BlasLibrary(controller.filepath, controller.internal_api, setter, getter)
    return None


_libs: list[BlasLibrary] | None = None
_scan_lock = threading.Lock()


def blas_libraries(rescan: bool = False) -> list[BlasLibrary]:
    """The BLAS libraries this process has loaded (NumPy's and SciPy's at least)."""
    global _libs
    if _libs is None or rescan:
        import numpy  # noqa: F401  (load both BLAS copies before looking)
        import scipy.linalg  # noqa: F401
        with _scan_lock:
            found = ThreadpoolController().select(user_api="blas").lib_controllers
            _libs = [lib for lib in map(_entry_points, found) if lib is not None]
    return _libs


# Sections may overlap when several Python threads call fastconv at once. The BLAS
# counts are process-wide, so the first section in saves and lowers them and the last
# one out restores them; a per-section save and restore would let an inner section
# "restore" the lowered count and leave BLAS at one thread for good.
_section_lock = threading.Lock()
_sections = 0
_saved: list[tuple[BlasLibrary, int]] = []


def _enter() -> None:
    global _sections, _saved
    with _section_lock:
        if _sections == 0:
            _saved = [(lib, lib.get_num_threads()) for lib in blas_libraries()]
            for lib, n in _saved:
                if n != 1:
                    lib.set_num_threads(1)
        _sections += 1


def _leave() -> None:
    global _sections
    with _section_lock:
        _sections -= 1
        if _sections == 0:
            for lib, n in _saved:
                if n != 1:
                    lib.set_num_threads(n)


@contextlib.contextmanager
def single_threaded():
    """Every loaded BLAS runs on its caller's thread inside the block.

    For kernels that call gemm from several of our threads at once: each call then runs
    where it is made, so no BLAS pool is started, woken or waited on. The counts are
    restored when the last such block in the process ends, also when a kernel raises.
    Setting a count is a store in OpenBLAS (about a microsecond), not a pool restart.
    """
    _enter()
    try:
        yield
    finally:
        _leave()


def set_blas_threads(n: int) -> None:
    """Set every loaded BLAS to ``n`` threads (outside our kernels: the user's products)."""
    global _saved
    with _section_lock:
        libs = blas_libraries(rescan=True)
        if _sections:  # our kernels hold BLAS at one thread: n applies when they end
            _saved = [(lib, n) for lib in libs]
            return
        for lib in libs:
            lib.set_num_threads(n)


def describe_blas() -> list[str]:
    """One line per loaded BLAS: file, API and current thread count."""
    return [f"{os.path.basename(lib.path)} ({lib.api}, {lib.get_num_threads()} threads)"
            for lib in blas_libraries()]
