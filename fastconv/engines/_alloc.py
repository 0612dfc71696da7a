"""The engines' output arrays: 64-byte aligned, and large ones reused.

NumPy aligns large arrays to 16 bytes only; the direct engine's pointwise products
stream their stores to vector-aligned rows only, and every row that starts mid-line
spans one cache line more (a network's next layer then also reads aligned input).

Large outputs are the other cost. glibc gives every allocation above 32 MiB a fresh
mapping and unmaps it on free, so each such output is faulted in again, page by page,
and on a VM whose memory the host has not backed yet each fault is slower still.
MobileNetV2 at batch 8 (Zen 3, 2 threads) ran its forward and grad_input 1.37x slower
in the network than the same calls alone, most of it in the first writes to its two
38.5 MB outputs (features.2.conv.0.0 forward 49 ms in the network, 11 alone; PyTorch
47 there too). So outputs of ``POOL_BYTES`` and more get a mapping of their own (with
NumPy's huge-page advice), and when the last array that uses it is freed the mapping
goes to a small pool instead of back to the kernel; the next output that fits takes it
with its pages already in place, as a caching allocator does. The pool holds at most
``POOL_LIMIT`` bytes, dropping the least recently freed first; ``release_memory()``
empties it. Smaller outputs come from NumPy's heap, where glibc already reuses them.
"""
from __future__ import annotations

import collections
import math
import mmap
import threading
import weakref

import numpy as np

LINE = 64
POOL_BYTES = 8 << 20
POOL_LIMIT = 1 << 30
# A pooled mapping serves a request this much smaller than itself at most.
SLACK = 1.25

_lock = threading.Lock()
_free: collections.OrderedDict = collections.OrderedDict()  # id -> mapping, oldest first
_free_bytes = 0
# Mappings whose last array died, not yet in _free. The finalizer only appends here: it
# may run inside a garbage collection that interrupts a thread holding _lock.
_returned: list = []


def _drain() -> None:
    """Move the returned mappings into the pool, dropping the oldest over POOL_LIMIT
    (called with _lock held)."""
    global _free_bytes
    while _returned:
        m = _returned.pop()
        _free[id(m)] = m
        _free_bytes += len(m)
    while _free_bytes > POOL_LIMIT:
        _, old = _free.popitem(last=False)
        _free_bytes -= len(old)
        old.close()


def _take(nbytes: int) -> mmap.mmap:
    """A pooled mapping of nbytes to nbytes * SLACK bytes (the smallest), or a new one."""
    global _free_bytes
    with _lock:
        _drain()
        fits = [m for m in _free.values() if nbytes <= len(m) <= nbytes * SLACK]
        if fits:
            m = min(fits, key=len)
            del _free[id(m)]
            _free_bytes -= len(m)
            return m
    try:
        m = mmap.mmap(-1, nbytes)
    except OSError as e:
        raise MemoryError(f"cannot map {nbytes} bytes for an output: {e}") from None
    if hasattr(mmap, "MADV_HUGEPAGE"):
        m.madvise(mmap.MADV_HUGEPAGE)  # as NumPy advises its own large arrays
    return m


def pooled_bytes() -> int:
    """Bytes of output buffers held for reuse."""
    with _lock:
        _drain()
        return _free_bytes


def release_memory() -> int:
    """Unmap the output buffers fastconv holds for reuse (freed outputs of 8 MiB and
    more, at most 1 GiB), the Winograd engine's last transformed filters and the direct
    engine's scratch kept for this thread (at most 16 MiB); returns the bytes released.
    Outputs still in use are kept."""
    global _free_bytes
    from .. import _direct
    with _lock:
        _drain()
        released = _free_bytes
        for m in _free.values():
            m.close()
        _free.clear()
        _free_bytes = 0
    return released + _direct._wino_release() + _direct._release_scratch()


def output(shape, dtype) -> np.ndarray:
    """An uninitialised C-contiguous array whose data starts on a 64-byte line."""
    dtype = np.dtype(dtype)
    nbytes = math.prod(shape) * dtype.itemsize  # (np.prod: 10 us a call on tiny layers)
    if nbytes >= POOL_BYTES:
        mapping = _take(nbytes)
        flat = np.frombuffer(mapping, dtype, nbytes // dtype.itemsize)
        # flat.base is the buffer NumPy made of the mapping: every view of the output
        # keeps it alive, so it dies (and the mapping is reused) only with the last one.
        weakref.finalize(flat.base, _returned.append, mapping)
        return flat.reshape(shape)
    raw = np.empty(nbytes + LINE, np.uint8)
    start = -raw.ctypes.data % LINE
    return raw[start:start + nbytes].view(dtype).reshape(shape)
