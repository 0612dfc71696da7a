"""Find the BLAS libraries loaded in this process and set their thread pools.

NumPy and SciPy each bundle their own OpenBLAS (``libscipy_openblas64_`` and
``libscipy_openblas``); the im2col engine's matrix products run in NumPy's, and
anything Numba or SciPy calls runs in SciPy's. Both pools must follow fastconv's
single thread count, so both are set here. On Linux the libraries are found through
``/proc/self/maps``; elsewhere threadpoolctl is used when it is installed.
"""
from __future__ import annotations

import contextlib
import ctypes
import os
from dataclasses import dataclass

# OpenBLAS builds rename their API with a prefix and suffix (scipy-openblas uses
# "scipy_" and, for the 64-bit-integer build, "64_"). MKL and BLIS for completeness.
_SETTERS = {
    "openblas": [(p + "openblas_set_num_threads" + s, p + "openblas_get_num_threads" + s)
                 for p in ("", "scipy_") for s in ("", "64_")],
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


def _candidate_paths() -> list[str]:
    try:
        with open("/proc/self/maps") as maps:
            paths = {line.split()[-1] for line in maps if ".so" in line}
    except OSError:
        return []
    return sorted(p for p in paths
                  if any(k in os.path.basename(p).lower() for k in ("openblas", "mkl_rt", "blis")))


def _load(path: str) -> BlasLibrary | None:
    try:
        # RTLD_NOLOAD: attach to the copy already loaded, never load a second one.
        lib = ctypes.CDLL(path, mode=os.RTLD_NOLOAD | os.RTLD_LAZY)
    except OSError:
        return None
    for api, names in _SETTERS.items():
        for set_name, get_name in names:
            setter = getattr(lib, set_name, None)
            getter = getattr(lib, get_name, None)
            if setter is not None and getter is not None:
                setter.restype = None
                getter.restype = ctypes.c_int
                return BlasLibrary(path, api, setter, getter)
    return None


_found: tuple[frozenset, list[BlasLibrary]] | None = None


def blas_libraries() -> list[BlasLibrary]:
    """The BLAS libraries this process has loaded (NumPy's and SciPy's at least)."""
    global _found
    import numpy  # noqa: F401  (load both BLAS copies before scanning)
    import scipy.linalg  # noqa: F401

    paths = frozenset(_candidate_paths())
    if _found is None or _found[0] != paths:
        _found = (paths, [lib for lib in map(_load, sorted(paths)) if lib is not None])
    return _found[1]


@contextlib.contextmanager
def single_threaded():
    """Every loaded BLAS runs on its caller's thread inside the block.

    For kernels that call gemm from several threads at once (the im2col engine's
    per-thread products): each call then runs where it is made, so the threads never
    meet a BLAS pool. The libraries found on entry are restored to their own counts.
    Setting a count is a store in OpenBLAS (about a microsecond), not a pool restart.
    """
    # The libraries found by the last scan: this runs on every im2col call, and reading
    # /proc/self/maps each time would cost more than the kernels of a small layer. A BLAS
    # loaded since then is picked up by the next blas_libraries() (set_num_threads).
    libs = _found[1] if _found is not None else blas_libraries()
    saved = [lib.get_num_threads() for lib in libs]
    for lib in libs:
        lib.set_num_threads(1)
    try:
        yield
    finally:
        for lib, n in zip(libs, saved):
            lib.set_num_threads(n)


def set_blas_threads(n: int) -> None:
    libs = blas_libraries()
    if libs:
        for lib in libs:
            lib.set_num_threads(n)
        return
    try:  # non-Linux platforms
        from threadpoolctl import threadpool_limits
    except ImportError:
        return
    threadpool_limits(limits=n, user_api="blas")


def describe_blas() -> list[str]:
    """One line per loaded BLAS: file, API and current thread count."""
    return [f"{os.path.basename(lib.path)} ({lib.api}, {lib.get_num_threads()} threads)"
            for lib in blas_libraries()]
