"""The engines' output arrays (fastconv/engines/_alloc.py): 64-byte aligned, and large
ones reused only once no array uses them."""
import gc

import numpy as np
import pytest

import fastconv
from fastconv.engines import _alloc

BIG = (3, 1024, 1024)  # 12 MiB of float32: pooled


@pytest.fixture(autouse=True)
def empty_pool():
    fastconv.release_memory()
    yield
    fastconv.release_memory()


def _span(a):
    return a.__array_interface__["data"][0], a.__array_interface__["data"][0] + a.nbytes


@pytest.mark.parametrize("shape", [(5,), (7, 3, 11), BIG])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_outputs_are_aligned_writable_arrays(shape, dtype):
    a = _alloc.output(shape, dtype)
    assert a.shape == shape and a.dtype == dtype and a.flags.c_contiguous
    assert a.flags.writeable and a.ctypes.data % 64 == 0
    a[...] = 1
    assert a.sum() == a.size


def test_a_buffer_is_reused_only_after_its_last_view():
    a = _alloc.output(BIG, np.float32)
    a[...] = 7
    view = a[1:].reshape(-1)  # outlives a
    lo, hi = _span(view)
    del a
    gc.collect()
    assert _alloc.pooled_bytes() == 0
    b = _alloc.output(BIG, np.float32)
    b[...] = 0
    assert not (lo < _span(b)[1] and _span(b)[0] < hi)
    assert (view == 7).all()
    del view
    gc.collect()
    assert _alloc.pooled_bytes() >= np.prod(BIG) * 4
    c = _alloc.output(BIG, np.float32)  # takes the mapping back
    assert _alloc.pooled_bytes() == 0 and _span(c)[0] <= lo < _span(c)[1]


def test_a_memoryview_keeps_the_buffer_in_use():
    a = _alloc.output(BIG, np.float32)
    mv = memoryview(a)
    del a
    gc.collect()
    assert _alloc.pooled_bytes() == 0
    del mv
    gc.collect()
    assert _alloc.pooled_bytes() > 0


def test_smaller_requests_take_a_buffer_only_within_the_slack():
    freed = _alloc.output((5, 1024, 1024), np.float32)  # 20 MiB
    del freed
    gc.collect()
    pooled = _alloc.pooled_bytes()
    half = _alloc.output((5, 512, 1024), np.float32)  # 10 MiB: a mapping of its own
    assert _alloc.pooled_bytes() == pooled
    near = _alloc.output((5, 1000, 1024), np.float32)  # within 25%: takes the 20 MiB
    assert _alloc.pooled_bytes() == 0
    del half, near


def test_the_pool_is_bounded_and_released(monkeypatch):
    monkeypatch.setattr(_alloc, "POOL_LIMIT", 20 << 20)
    arrays = [_alloc.output(BIG, np.float32) for _ in range(3)]
    del arrays
    gc.collect()
    assert _alloc.pooled_bytes() <= 20 << 20  # one of the three 12 MiB buffers
    assert fastconv.release_memory() > 0
    assert _alloc.pooled_bytes() == 0
