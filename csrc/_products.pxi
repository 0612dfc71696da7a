# The gemm calls of a pointwise or whole-window pass (fastconv/engines/_products.py) on
# this module's OpenMP team: the team the direct engine's regions run on, so a product
# right after a direct call finds its threads still spinning and takes them, instead of
# sharing the cores with them. The calls are C (the im2col engine's loops, by address)
# and take no GIL.
#
# Measured on a 2-core AMD EPYC (Zen 4, KVM, 2026-12-07, float32, MobileNetV2 batch 8,
# blocks of back-to-back calls): features.14.conv.2 forward (1x1, 72 MFLOP) took 0.95 ms
# on two threads of their own, 0.89 ms on one, 0.50 ms on the team. The Numba kernels of
# the im2col engine cannot move here as they are: each share takes the GIL to enter its
# kernel, and a handoff of the GIL can leave the caller and a spinning team thread on
# one core (runs of 6 ms calls where 0.5 ms ones were due).

from libc.stdint cimport int64_t, uintptr_t


ctypedef void (*gemm_fn)(int64_t, int64_t, int64_t, int64_t, int64_t, const void *,
                         int64_t, int64_t, const void *, int64_t, int64_t, double, void *,
                         int64_t, int64_t) noexcept nogil
ctypedef void (*bias_block_fn)(void *, int64_t, int64_t, int64_t, int64_t, const void *,
                               int64_t, int64_t) noexcept nogil

# Columns of a task row, as in _products.py.
cdef enum:
    T_A_OFF, T_B_OFF, T_C_OFF, T_M, T_N, T_K, T_BETA, T_BIAS_OFF

def run_tasks(uintptr_t gemm, uintptr_t add_bias, int64_t transa, int64_t transb,
              uintptr_t a, int64_t lda, uintptr_t b, int64_t ldb, uintptr_t c, int64_t ldc,
              const int64_t[:, ::1] tasks, const int64_t[::1] starts, uintptr_t bias,
              int64_t per_row):
    """Thread t of T = starts.size - 1 makes the gemm calls tasks[starts[t]:starts[t+1]]
    in order, each followed by its bias (``_products._run_tasks`` is the same schedule
    in Numba). The plan built every offset inside the arrays; nothing here checks."""
    cdef gemm_fn mm = <gemm_fn>gemm
    cdef bias_block_fn bb = <bias_block_fn>add_bias
    cdef Py_ssize_t T = starts.shape[0] - 1, t, i
    if tasks.shape[1] != 8 or T < 1 or starts[T] > tasks.shape[0]:
        raise ValueError(f"tasks must be (calls, 8) with starts[-1] <= calls, got "
                         f"{(tasks.shape[0], tasks.shape[1])} and {list(starts)}")
    with nogil:
        for t in prange(T, num_threads=T, schedule="static", chunksize=1):
            i = starts[t]
            while i < starts[t + 1]:
                mm(transa, transb, tasks[i, T_M], tasks[i, T_N], tasks[i, T_K], <void *>a,
                   tasks[i, T_A_OFF], lda, <void *>b, tasks[i, T_B_OFF], ldb,
                   1.0 * tasks[i, T_BETA], <void *>c, tasks[i, T_C_OFF], ldc)
                if tasks[i, T_BIAS_OFF] >= 0:
                    bb(<void *>c, tasks[i, T_C_OFF], tasks[i, T_M], tasks[i, T_N], ldc,
                       <void *>bias, tasks[i, T_BIAS_OFF], per_row)
                i = i + 1
