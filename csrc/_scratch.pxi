# Included by _direct.pyx before the drivers that take their scratch from here.
#
# ---------------------------------------------------------------------------------------
# Scratch kept from call to call, one buffer per Python thread. A buffer malloc'ed and
# freed in every call comes back as fresh pages whenever glibc returned the last one to
# the kernel (its mmap and trim thresholds follow the sizes freed), and each page is
# faulted in again. Measured (grad_weight, 3x3, N=8, 2 threads, Emerald Rapids,
# 2026-12-08): with three buffers per call the kernel's page-fault and unmap paths took
# 11% of the samples of 128 -> 128 channels on 28x28, 2% with this one; eight
# alternating processes each, medians, before / after: 512 -> 512 on 7x7 (a 9.4 MB dW
# in [ct][k] order) 17.5 / 9.8 ms, 128 on 28x28 10.7 / 10.3, 64 on 56x56 and 256 on
# 14x14 unchanged. A buffer of at most _SCRATCH_KEEP_BYTES is kept for the thread's
# next call (a larger request is served and freed as before); tracemalloc sees it, as
# PyMem_Raw memory. One buffer per thread: a driver holds it for its whole call and
# calls no other driver that takes it (today only _wgradk does).
import threading as _threading

cdef object _scratch_local = _threading.local()
cdef Py_ssize_t _SCRATCH_KEEP_BYTES = 16 << 20


cdef class _Scratch:
    """One scratch buffer, freed with the object."""
    cdef void* data
    cdef Py_ssize_t nbytes

    def __cinit__(self, Py_ssize_t nbytes):
        self.data = malloc(max(1, nbytes))
        if self.data == NULL:
            raise MemoryError()
        self.nbytes = nbytes

    def __dealloc__(self):
        free(self.data)


cdef _Scratch _scratch(Py_ssize_t nbytes):
    # At least nbytes for this thread's call: the kept buffer when it is large enough,
    # else a new one (kept in its place when at most _SCRATCH_KEEP_BYTES).
    cdef _Scratch s = getattr(_scratch_local, "buf", None)
    if s is not None and s.nbytes >= nbytes:
        return s
    _scratch_local.buf = None  # the old buffer goes before the new one comes
    s = _Scratch(nbytes)
    if nbytes <= _SCRATCH_KEEP_BYTES:
        _scratch_local.buf = s
    return s


def _release_scratch():
    """Drop the calling thread's kept scratch (fastconv.release_memory) and return its
    bytes; another thread's goes with that thread."""
    cdef _Scratch s = getattr(_scratch_local, "buf", None)
    _scratch_local.buf = None
    return 0 if s is None else s.nbytes


def _set_scratch_keep(Py_ssize_t nbytes=16 << 20):
    """Tuning and testing hook: the largest scratch kept for a thread's next call (0:
    every call allocates and frees its own, as before 2026-12-08)."""
    global _SCRATCH_KEEP_BYTES
    _SCRATCH_KEEP_BYTES = nbytes
    _scratch_local.buf = None
