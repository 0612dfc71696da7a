"""FTZ/DAZ in the im2col engine's threads (``fastconv.engines._fpmode``).

The kernels' threads read subnormal inputs as zero and flush subnormal results, as the
direct engine's do, instead of scanning the inputs first; and every thread leaves
with the floating-point mode it came in with: the caller's, fastconv's share workers,
and Numba's pool workers, which the user's own Numba code uses.
"""
import threading

import numpy as np
import pytest
from numba import njit, prange

import fastconv
from fastconv import _threads
from fastconv.engines import _fpmode

pytestmark = pytest.mark.skipif(not _fpmode.FLUSHES, reason="FTZ/DAZ is x86-64 only")

TINY = np.finfo(np.float32).tiny


@njit(parallel=True)
def _subnormal_products(n):
    """A subnormal product computed on each of n prange steps (one per pool thread)."""
    out = np.empty(n, np.float32)
    for i in prange(n):
        a = np.float32(1e-20) + np.float32(i) * np.float32(0)
        out[i] = a * a
    return out


@njit(nogil=True)
def _subnormal_share(t, out):
    """Share t of a kernel: a subnormal product into out[t]."""
    a = np.float32(1e-20) + np.float32(t) * np.float32(0)
    out[t] = a * a


def _arrays(layout, scale):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 16, 24, 24)).astype(np.float32)
    w = rng.standard_normal((16, 16, 3, 3)).astype(np.float32)
    x[0] *= scale  # image 0 only: the others must be untouched by the flush
    if layout == "NHWC":
        x, w = x.transpose(0, 2, 3, 1).copy(), w.transpose(2, 3, 1, 0).copy()
    return x, w


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize("threads", [1, 2])
def test_subnormal_inputs_read_as_zero(layout, threads):
    x, w = _arrays(layout, np.float32(1e-39))
    xs = x.copy()
    assert np.any((x != 0) & (np.abs(x) < TINY))
    with fastconv.num_threads(threads):
        y = fastconv.conv2d(x, w, pad=1, layout=layout, backend="im2col")
        g = fastconv.conv2d_backward(np.ones_like(y), x, w, pad=1, layout=layout,
                                     backend="im2col", wrt=("w",))
    ref = fastconv.conv2d(x, w, pad=1, layout=layout, backend="reference")
    assert np.all(y[0] == 0)  # subnormal inputs times normal weights: read as zero
    np.testing.assert_allclose(y[1:], ref[1:], rtol=1e-4, atol=1e-4)
    x_flushed = x.copy()
    x_flushed[0] = 0
    g_ref = fastconv.conv2d_backward(np.ones_like(y), x_flushed, w, pad=1, layout=layout,
                                     backend="reference", wrt=("w",))
    np.testing.assert_allclose(g.w, g_ref.w, rtol=1e-4, atol=1e-3)
    np.testing.assert_array_equal(x, xs)  # the caller's subnormals are still there


@pytest.mark.parametrize("threads", [1, 2])
def test_subnormal_results_flushed(threads):
    x = np.full((4, 16, 24, 24), 1e-20, np.float32)
    w = np.full((16, 16, 3, 3), 1e-20, np.float32)
    with fastconv.num_threads(threads):
        y = fastconv.conv2d(x, w, pad=1, backend="im2col")
    assert np.all(np.abs(y) < TINY)  # each 1e-40 product flushed (or read as zero)


@pytest.mark.parametrize("threads", [1, 2])
def test_threads_leave_with_their_mode(threads):
    """After the engine ran on them, the caller's thread, fastconv's share workers and
    Numba's pool threads compute subnormals again."""
    x, w = _arrays("NCHW", 1)
    with fastconv.num_threads(threads):
        for _ in range(3):
            fastconv.conv2d(x, w, pad=1, backend="im2col")
            fastconv.conv2d_backward(np.ones((4, 16, 24, 24), np.float32), x, w, pad=1,
                                     backend="im2col")
        assert np.all(_subnormal_products(8 * threads) > 0)
        out = np.zeros(threads, np.float32)
        _threads.run_shares(_subnormal_share, threads, (out,))
        assert np.all(out > 0)
    a = np.float32(1e-20)
    assert a * a > 0


def test_the_loops_flush_and_restore_the_mode():
    """A C loop that computes (the bias) reads a subnormal as zero, and the calling
    thread computes subnormals again once it has returned."""
    from fastconv.engines._loops import F32

    y = np.full(4, 1e-39, np.float32)  # subnormal
    bias = np.zeros(1, np.float32)
    assert np.all(y > 0)
    F32.bias_rows(y.ctypes.data, 0, 4, 1, 4, bias.ctypes.data)  # y += 0, under DAZ/FTZ
    assert np.all(y == 0)
    tiny = np.full(2, 1e-20, np.float32)
    assert np.all(tiny * tiny > 0)  # this thread's own mode is back


def test_workers_start_in_ieee_mode_whoever_makes_them(monkeypatch):
    """A new thread inherits its creator's FTZ/DAZ bits; the share workers clear them,
    so a first call from a thread that flushes (XLA's, under fastconv.jax) leaves no
    flushing worker behind."""
    from fastconv import _im2col_loops

    monkeypatch.setattr(_threads, "_share_pool", None)  # made anew by the next call
    out = np.zeros(2, np.float32)

    def flushing_caller():
        _im2col_loops.set_flushing(True)
        tiny = np.full(1, 1e-20, np.float32)
        assert np.all(tiny * tiny == 0)  # this thread flushes
        _threads.run_shares(_subnormal_share, 2, (out,))
        _im2col_loops.set_flushing(False)

    caller = threading.Thread(target=flushing_caller)
    caller.start()
    caller.join()
    assert out[0] == 0 and out[1] > 0  # share 0 ran on the caller, share 1 on a worker
