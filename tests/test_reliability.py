"""Reliability: hostile values and types, 64-bit indexing, aliasing, concurrency, fork and
spawn, leaks and determinism."""
import concurrent.futures
import multiprocessing
import os
import threading

import numpy as np
import pytest
from conftest import FAST_ENGINES, assert_close

import fastconv

ENGINES = FAST_ENGINES + ("reference",)


def _case(seed, dtype=np.float32, layout="NCHW"):
    rng = np.random.default_rng(seed)
    N, C, K, H, W = 2, 3 + seed % 3, 4, 9 + seed % 4, 8
    groups = 1 if seed % 2 else (C if C == 3 else 1)
    K = C if groups > 1 else K
    x_shape = (N, H, W, C) if layout == "NHWC" else (N, C, H, W)
    w_shape = (3, 2, C // groups, K) if layout == "NHWC" else (K, C // groups, 3, 2)
    x = rng.standard_normal(x_shape).astype(dtype)
    w = rng.standard_normal(w_shape).astype(dtype)
    opts = dict(stride=1 + seed % 2, pad=((1, 0), (0, 2)), groups=groups, layout=layout)
    gy = rng.standard_normal(fastconv.output_shape(x, w, **opts)).astype(dtype)
    return x, w, gy, opts


def _all_passes(x, w, gy, opts, engine):
    y = fastconv.conv2d(x, w, backend=engine, **opts)
    g = fastconv.conv2d_backward(gy, x, w, backend=engine, **opts)
    return y, g.x, g.w, g.b


# --- values --------------------------------------------------------------------------

@pytest.mark.parametrize("engine", FAST_ENGINES)
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nan_and_inf_propagate_as_in_the_reference(engine, bad):
    x, w, gy, opts = _case(1, np.float64)
    x = x.copy()
    x[0, 1, 4, 3] = bad
    gy = gy.copy()
    gy[1, 2, 2, 1] = bad
    for got, ref in zip(_all_passes(x, w, gy, opts, engine),
                        _all_passes(x, w, gy, opts, "reference")):
        assert np.array_equal(np.isnan(got), np.isnan(ref))
        assert np.array_equal(np.isposinf(got), np.isposinf(ref))
        assert np.array_equal(np.isneginf(got), np.isneginf(ref))
        finite = np.isfinite(ref)
        assert_close(got[finite], ref[finite], np.float64)


@pytest.mark.parametrize("engine", FAST_ENGINES)
def test_subnormal_inputs_read_as_zero(engine):
    """The stated choice: subnormal inputs count as zero in both engines (the direct engine
    sets flush-to-zero and denormals-are-zero in its threads, im2col zeroes them before
    BLAS), because computing with them measured 7-100x slower. The change is below
    float32's smallest normal number, 1.2e-38, so results stay within tolerance."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 6, 6)).astype(np.float32)
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    tiny = np.float32(1e-39)  # subnormal
    xs = x.copy()
    xs[0] *= tiny
    y = fastconv.conv2d(xs, w, backend=engine)
    assert np.all(y[0] == 0)
    assert_close(y, fastconv.conv2d(xs, w, backend="reference"), np.float32)
    assert np.array_equal(y[1], fastconv.conv2d(x, w, backend=engine)[1])
    assert np.all(xs[0] != 0)  # the caller's array still holds its subnormals


# --- types ---------------------------------------------------------------------------

def test_scalars_and_lists():
    # Lists and scalars convert as np.asarray converts them; a scalar then fails the ndim check.
    y = fastconv.conv2d([[[1.0, 2.0], [3.0, 4.0]]], [[[[1, 0], [0, 1]]]], bias=[0.5])
    assert y.shape == (1, 1, 1) and y[0, 0, 0] == 5.5
    with pytest.raises(ValueError, match="x must be a 4-D"):
        fastconv.conv2d(3.0, np.ones((1, 1, 1, 1)))
    with pytest.raises(ValueError, match="bias must have shape"):
        fastconv.conv2d(np.ones((1, 1, 2, 2)), np.ones((1, 1, 1, 1)), bias=2.0)


@pytest.mark.parametrize("arg", ["stride", "pad", "dilation", "groups"])
@pytest.mark.parametrize("huge", [2**31, 2**63, 10**30])
def test_huge_python_ints_are_refused(arg, huge):
    with pytest.raises((ValueError, OverflowError), match=arg):
        fastconv.conv2d(np.ones((1, 1, 4, 4)), np.ones((1, 1, 2, 2)), **{arg: huge})


# --- 64-bit indices ------------------------------------------------------------------

@pytest.mark.parametrize("engine", FAST_ENGINES)
@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_offsets_beyond_2_to_the_31(engine, layout):
    """A row of 2**31 + 10 floats (8 GiB of address space, almost none of it touched).

    With stride 2**30 the three outputs read elements 0, 2**30 and 2**31: a 32-bit offset
    would wrap the last one to 0. np.zeros maps untouched pages to the shared zero page,
    and the engines read only the elements the strides select.
    """
    W = 2**31 + 10
    shape = (1, 1, 1, W) if layout == "NCHW" else (1, 1, W, 1)
    x = np.zeros(shape, np.float32)
    flat = x.reshape(-1)
    flat[2**30], flat[2**31] = 3.0, 5.0
    w = np.full((1, 1, 1, 1), 2.0, np.float32)
    y = fastconv.conv2d(x, w, stride=(1, 2**30), layout=layout, backend=engine)
    assert y.reshape(-1).tolist() == [0.0, 6.0, 10.0]
    gy = np.ones(y.shape, np.float32)
    gw = fastconv.conv2d_backward(gy, x, w, stride=(1, 2**30), layout=layout, backend=engine,
                                  wrt="w").w
    assert gw.reshape(-1).tolist() == [8.0]
    assert flat[2**30] == 3.0 and flat[2**31] == 5.0 and flat[0] == 0.0


# --- aliasing ------------------------------------------------------------------------

@pytest.mark.parametrize("engine", ENGINES)
def test_same_array_as_grad_y_and_x(engine):
    """No engine writes to its inputs, so one array may be passed as both grad_y and x."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 4, 6, 6))
    w = rng.standard_normal((4, 4, 3, 3))
    g = fastconv.conv2d_backward(x, x, w, 1, 1, backend=engine)
    g_copy = fastconv.conv2d_backward(x.copy(), x.copy(), w, 1, 1, backend=engine)
    for a, b in zip(g, g_copy):
        assert np.array_equal(a, b)


# --- threads and processes -----------------------------------------------------------

def _serial_results(cases):
    return [_all_passes(*_case(seed, dtype, layout), engine)
            for seed, dtype, layout, engine in cases]


CASES = [(s, (np.float32, np.float64)[s % 2], ("NCHW", "NHWC")[(s // 2) % 2],
          ("direct", "im2col", "auto")[s % 3]) for s in range(8)]


def test_eight_python_threads_match_serial_calls():
    expected = _serial_results(CASES)
    barrier = threading.Barrier(len(CASES))
    results = [None] * len(CASES)

    def run(i):
        barrier.wait()
        for _ in range(5):
            results[i] = _all_passes(*_case(*CASES[i][:3]), CASES[i][3])

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(CASES))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for got, exp in zip(results, expected):
        for a, b in zip(got, exp):
            assert np.array_equal(a, b)


def test_thread_pool_executor():
    expected = _serial_results(CASES)
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        got = list(pool.map(lambda c: _all_passes(*_case(*c[:3]), c[3]), CASES))
    for g, e in zip(got, expected):
        for a, b in zip(g, e):
            assert np.array_equal(a, b)


def _checksums(case):
    return [float(np.sum(a, dtype=np.float64)) for a in _all_passes(*_case(*case[:3]), case[3])]


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_multiprocessing_pools(method):
    """Pools work after the parent ran every engine with all its threads."""
    if method not in multiprocessing.get_all_start_methods():
        pytest.skip(f"{method} is not available here")
    # The parent starts its thread pools first, on a problem large enough for 2 threads.
    big_x = np.ones((4, 16, 32, 32), np.float32)
    big_w = np.ones((32, 16, 3, 3), np.float32)
    with fastconv.num_threads(2):
        for engine in FAST_ENGINES:
            fastconv.conv2d_backward(fastconv.conv2d(big_x, big_w, 1, 1, backend=engine),
                                     big_x, big_w, 1, 1, backend=engine)
    expected = [_checksums(c) for c in CASES]
    ctx = multiprocessing.get_context(method)
    with ctx.Pool(2) as pool:
        got = pool.map_async(_checksums, CASES).get(timeout=120)
    assert np.allclose(got, expected, rtol=1e-5)


# A pointwise layer and a dense one, whose products run on the direct engine's OpenMP
# team (engines/_products.py), and 3x3 layers at strides 1 and 2, whose NCHW pieces do
# (csrc/_pieces.pxi): that runtime does not survive fork(). (x, w, stride, pad)
PRODUCT_CASES = [((4, 64, 28, 28), (96, 64, 1, 1), 1, 0), ((32, 64, 7, 7), (40, 64, 7, 7), 1, 0),
                 ((4, 32, 28, 28), (48, 32, 3, 3), 1, 1), ((4, 32, 28, 28), (48, 32, 3, 3), 2, 1)]


def _product_passes(case):
    x_shape, w_shape, stride, pad = case
    rng = np.random.default_rng(7)
    x = rng.standard_normal(x_shape).astype(np.float32)
    w = rng.standard_normal(w_shape).astype(np.float32)
    y = fastconv.conv2d(x, w, stride, pad, backend="im2col")
    g = fastconv.conv2d_backward(np.cos(y), x, w, stride, pad, backend="im2col")
    return y, g.x, g.w


def test_products_after_fork():
    """A child forked after the products and pieces ran on two threads makes them on one,
    with the same values up to rounding (grad_weight's partial sums change with the
    thread count)."""
    if "fork" not in multiprocessing.get_all_start_methods():
        pytest.skip("fork is not available here")
    with fastconv.num_threads(2):
        expected = [_product_passes(c) for c in PRODUCT_CASES]
    with multiprocessing.get_context("fork").Pool(2) as pool:
        got = pool.map_async(_product_passes, PRODUCT_CASES).get(timeout=120)
    for g, e in zip(got, expected):
        for a, b in zip(g, e):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5 * np.abs(b).max())


def test_small_work_runs_on_one_thread():
    """threads_for(): an extra thread only from GRAIN_FLOPS of work per thread."""
    from fastconv._threads import GRAIN_FLOPS, threads_for
    with fastconv.num_threads(2):
        assert threads_for(0) == 1
        assert threads_for(2 * GRAIN_FLOPS - 1) == 1
        assert threads_for(2 * GRAIN_FLOPS) == 2
        assert threads_for(100 * GRAIN_FLOPS) == 2
    with fastconv.num_threads(1):
        assert threads_for(100 * GRAIN_FLOPS) == 1


# --- leaks and determinism -----------------------------------------------------------

def _rss_bytes():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="needs /proc/self/statm")
def test_no_leak_over_5000_mixed_calls():
    cases = [_case(s, (np.float32, np.float64)[s % 2], ("NCHW", "NHWC")[s % 2]) for s in range(4)]
    engines = ("direct", "im2col", "auto")

    def burst(n):
        for i in range(n):
            x, w, gy, opts = cases[i % 4]
            e = engines[i % 3]
            if i % 2:
                fastconv.conv2d(x, w, backend=e, **opts)
            else:
                fastconv.conv2d_backward(gy, x, w, backend=e, **opts)

    burst(300)  # warm-up: compilation, caches, allocator pools
    before = _rss_bytes()
    burst(5000)
    grown = _rss_bytes() - before
    assert grown < 5 * 2**20, f"resident memory grew by {grown / 2**20:.1f} MiB"


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_repeated_calls_are_bitwise_identical(engine, layout, dtype):
    case = _case(3, dtype, layout)
    first = _all_passes(*case, engine)
    for _ in range(3):
        for a, b in zip(_all_passes(*case, engine), first):
            assert np.array_equal(a, b)
