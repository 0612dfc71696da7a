"""The engines' output arrays, 64-byte aligned.

NumPy aligns large arrays to 16 bytes only; the direct engine's pointwise products
stream their stores to vector-aligned rows only, and every row that starts mid-line
spans one cache line more (a network's next layer then also reads aligned input).

They come from NumPy's allocator, with its huge-page advice for large arrays. Tried and
dropped: giving outputs of 1 MiB and more anonymous mappings of their own without that
advice, to escape the memory compaction a huge-page fault may start (MobileNetV2 at
batch 8, Zen 3: its first writes to 38.5 MB outputs cost features.2.conv.1.0 grad_input
48.6 ms in the network against 17-20 ms alone). Faulting in 4 KiB pages cost far more:
the network's forward went from 141 to 340 ms.
"""
from __future__ import annotations

import numpy as np

LINE = 64


def output(shape, dtype) -> np.ndarray:
    """An uninitialised C-contiguous array whose data starts on a 64-byte line."""
    dtype = np.dtype(dtype)
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    raw = np.empty(nbytes + LINE, np.uint8)
    start = -raw.ctypes.data % LINE
    return raw[start:start + nbytes].view(dtype).reshape(shape)
