"""One thread count for everything: OpenMP in the direct engine, the im2col engine's
shares, and BLAS.

The count defaults to ``FASTCONV_NUM_THREADS`` when that is set, else to
``OMP_NUM_THREADS`` (its first entry, as it was at import), else to the cores this
process may run on (``os.sched_getaffinity``). OMP_NUM_THREADS is how a process is told
its share of a machine that others share: Dask's nanny sets it to 1 in each worker it
starts, as do job schedulers, and every OpenMP and BLAS runtime already honours it.

A thread may also run its calls under a budget (``thread_budget``), which caps the count
for that thread alone: a Dask task of ``fastconv.dask`` runs on its share of the
process's count, whatever the other tasks in the process are doing.

The direct engine's OpenMP regions call no BLAS. The im2col engine runs one share per
thread, each making single-threaded gemm calls with every BLAS held at one thread for
the duration (``_blas.single_threaded``): its NCHW pieces and its 1x1 and whole-window
products on the direct engine's OpenMP team (csrc/_pieces.pxi, ``engines/_products.py``),
its NHWC kernels in Numba on the workers of ``run_shares`` (threads that sleep on a
queue between calls, never spin).
So no BLAS pool is started or left spinning by a pass, and at most ``n`` threads are
busy at any time. BLAS gets ``n`` too, for the caller's own NumPy products between our
calls.
"""
from __future__ import annotations

import contextlib
import os
import threading
from concurrent.futures import ThreadPoolExecutor

from . import _im2col_loops
from ._blas import set_blas_threads


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def _default_threads() -> int:
    env = os.environ.get("FASTCONV_NUM_THREADS")
    if env:
        try:
            return _check(int(env), "FASTCONV_NUM_THREADS")
        except ValueError:
            raise ValueError(f"FASTCONV_NUM_THREADS must be a positive integer, got {env!r}") from None
    return _omp_threads(_OMP_AT_IMPORT) or available_cores()


# OMP_NUM_THREADS as this process had it when fastconv was imported, which is when the
# OpenMP and BLAS runtimes read it too: Dask's nanny sets it to 1 in the process that
# starts workers as well as in the workers, and a client that starts a LocalCluster
# keeps its own cores.
_OMP_AT_IMPORT = os.environ.get("OMP_NUM_THREADS")


def _omp_threads(value: str | None) -> int | None:
    """OMP_NUM_THREADS's first entry ("4,2" sets nested levels), or None when it is unset
    or not a positive integer: the variable is OpenMP's, which ignores such values too,
    so it is no error of ours."""
    first = (value or "").split(",")[0].strip()
    return int(first) if first.isdigit() and int(first) > 0 else None


_lock = threading.Lock()
_num_threads: int | None = None
# Whether the count is the user's choice (FASTCONV_NUM_THREADS, set_num_threads, or
# inside ``with num_threads(n)``) rather than the default: the framework bridges
# (fastconv.torch) make the default follow the framework's own count, never a choice.
_user_set = bool(os.environ.get("FASTCONV_NUM_THREADS"))


def _check(n, name="n") -> int:
    if isinstance(n, bool) or not isinstance(n, int):
        try:
            import operator
            n = operator.index(n)
        except TypeError:
            raise TypeError(f"{name} must be a positive integer, got {type(n).__name__} {n!r}") from None
    if n < 1:
        raise ValueError(f"{name} must be a positive integer, got {n}")
    return n


def _apply(n: int) -> None:
    # OpenMP takes the count as an argument on every direct-engine call, and Numba's
    # count is per calling thread, so the im2col engine sets it on every call
    # (engines/im2col.py). Only BLAS holds the count as process-wide state.
    set_blas_threads(n)


def set_num_threads(n: int) -> None:
    """Set the thread count used by both engines and by BLAS (the user's choice: the
    framework bridges then keep it instead of following the framework's count)."""
    _set(n, True)


def _set(n: int, user: bool) -> None:
    global _num_threads, _user_set
    n = _check(n)
    with _lock:
        _apply(n)
        _num_threads = n
        _user_set = user


def user_set() -> bool:
    """Whether the thread count was chosen by the user (see ``_user_set``)."""
    return _user_set


def follow(n: int) -> None:
    """Make ``n`` the default count, unless the user chose one: for the bridges, which
    follow their framework's thread count. Cheap when ``n`` is already the count."""
    if not _user_set and n != _num_threads:
        _set(n, False)


def get_num_threads() -> int:
    """The thread count used by both engines and by BLAS."""
    global _num_threads
    if _num_threads is None:
        with _lock:
            if _num_threads is None:
                n = _default_threads()
                _apply(n)
                _num_threads = n
    return _num_threads


# GNU OpenMP (the direct engine's runtime, and Numba's "omp" threading layer) cannot
# survive fork(): a child forked after a thread team existed hangs or aborts at its next
# parallel region. A child forked after the pools started therefore runs the kernels on
# its one thread (BLAS is unaffected: OpenBLAS re-creates its pool after fork).
_pools_started = False
_forked_after_pools = False


def _after_fork_in_child() -> None:
    global _forked_after_pools
    if _pools_started:
        _forked_after_pools = True


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


# The budget of the calling thread (thread_budget), None when it has none.
_budget = threading.local()


@contextlib.contextmanager
def thread_budget(n: int):
    """Context manager: calls made on this thread, and only on this thread, use at most
    ``n`` threads; the process-wide count is untouched, so concurrent callers (a Dask
    worker's task threads) each keep their own share."""
    n = _check(n)
    old = getattr(_budget, "n", None)
    _budget.n = n
    try:
        yield
    finally:
        _budget.n = old


def threads_here() -> int:
    """The thread count of a call made on this thread: the count, capped by the thread's
    budget. The engines' thread counts and ``auto``'s choice both follow it."""
    n = get_num_threads()
    cap = getattr(_budget, "n", None)
    return n if cap is None else min(n, cap)


def kernel_threads() -> int:
    """Threads for an OpenMP or Numba parallel region: the thread count (under this
    thread's budget), or 1 in a process forked after such a region ran (see above).
    Engines call this on every call."""
    global _pools_started
    if _forked_after_pools:
        return 1
    n = threads_here()
    if n > 1:
        _pools_started = True
    return n


# Work below which an extra thread costs more than it saves. Waking a pool and meeting at
# its barrier costs ~10-20 us on an idle machine, and when another pool (NumPy's
# OpenBLAS after a matmul, say) still spins on the other core it costs a scheduler tick,
# ~4 ms: the digits example (convolutions of 0.1-2 MFLOP between NumPy calls) ran 25x
# slower on 2 threads than on 1. From 4 MFLOP per thread the split pays off in both cases.
GRAIN_FLOPS = 4_000_000


def threads_for(flops: int) -> int:
    """Threads for a kernel call doing ``flops``: kernel_threads(), fewer for small work."""
    return max(1, min(kernel_threads(), flops // GRAIN_FLOPS))


@contextlib.contextmanager
def num_threads(n: int):
    """Context manager: ``with fastconv.num_threads(1): ...`` restores the old count after."""
    old, old_user = get_num_threads(), _user_set
    set_num_threads(n)
    try:
        yield
    finally:
        _set(old, old_user)


# The workers that run a kernel's shares 1 .. T-1 (share 0 runs on the caller's thread):
# made on first use, grown when a call needs more, made again in a forked child, where
# the parent's workers do not exist.
_share_lock = threading.Lock()
_share_pool: ThreadPoolExecutor | None = None
_share_workers = 0
_share_pid = 0


def _workers(n: int) -> ThreadPoolExecutor:
    global _share_pool, _share_workers, _share_pid
    with _share_lock:
        if _share_pool is None or _share_workers < n or _share_pid != os.getpid():
            old = _share_pool if _share_pid == os.getpid() else None
            # ieee_mode: a new thread inherits its creator's FTZ/DAZ bits (csrc/im2col_loops.c)
            _share_pool = ThreadPoolExecutor(max_workers=n, thread_name_prefix="fastconv",
                                             initializer=_im2col_loops.ieee_mode)
            _share_workers, _share_pid = n, os.getpid()
            if old is not None:
                old.shutdown(wait=False)
        return _share_pool


def run_shares(fn, T: int, args: tuple) -> None:
    """``fn(t, *args)`` for t = 0 .. T-1, share 0 on this thread and the others on the
    workers, returning when all have finished (re-raising the first error). ``fn``
    releases the GIL (a ``nogil`` Numba function), so the shares run in parallel."""
    if T == 1:
        fn(0, *args)
        return
    pool = _workers(T - 1)
    futures = [pool.submit(fn, t, *args) for t in range(1, T)]
    try:
        fn(0, *args)
    finally:
        for f in futures:
            f.result()
