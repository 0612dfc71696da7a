"""The addresses of the im2col engine's C loops (csrc/im2col_loops.c), for the Numba
kernels that call them (fastconv/engines/_loops.py), and the BLAS they multiply with."""
from libc.stdint cimport uintptr_t

cdef extern from "im2col_loops.h":
    ctypedef struct fc_loop_entry:
        const char *name
        void *address
    const fc_loop_entry fc_loops[]
    void fc_set_blas(void *sgemm, void *dgemm)
    int fc_flushes()
    void fc_set_flushing(int on)


def set_blas(uintptr_t sgemm, uintptr_t dgemm):
    """Point the gemm wrappers at BLAS's Fortran sgemm and dgemm."""
    fc_set_blas(<void *>sgemm, <void *>dgemm)


def flushes():
    """Whether the loops set FTZ/DAZ while they compute (x86 builds)."""
    return bool(fc_flushes())


def set_flushing(bint on):
    """Set or clear FTZ/DAZ in this thread (x86 builds; elsewhere nothing)."""
    fc_set_flushing(on)


def ieee_mode():
    """Clear FTZ/DAZ in this thread: gradual underflow, as IEEE has it."""
    fc_set_flushing(0)


def addresses():
    """{name: address} of every loop, names without the fc_ prefix ("unroll_nchw_f32")."""
    found = {}
    cdef int i = 0
    while fc_loops[i].name != NULL:
        found[fc_loops[i].name.decode()] = <uintptr_t>fc_loops[i].address
        i += 1
    return found
