"""No BLAS pool inside the im2col engine's Numba threads, and the thread count restored.

The NCHW kernels call gemm from every Numba thread; each call must run on the thread
that makes it. This checks the mechanism: while a kernel runs, every loaded BLAS
reports one thread; afterwards, the counts are back to fastconv's.
"""
import numpy as np
import pytest
from conftest import TeamSpy

import fastconv
from fastconv._blas import blas_libraries
from fastconv.engines import _products, im2col

KERNELS = {
    "NCHW": ("_forward_nchw", "_grad_input_nchw", "_grad_weight_nchw"),
    "NHWC": ("_forward_nhwc", "_grad_input_nhwc", "_grad_weight_nhwc"),
}


# The NCHW kernels' twins on the direct engine's OpenMP team (csrc/_pieces.pxi).
ON_THE_TEAM = {"forward_pieces": "_forward_nchw", "grad_input_pieces": "_grad_input_nchw",
               "grad_weight_pieces": "_grad_weight_nchw"}


@pytest.fixture
def blas_counts_seen(monkeypatch):
    seen = {}
    for name in KERNELS["NCHW"] + KERNELS["NHWC"]:
        kernel = getattr(im2col, name)

        def run(parallel, *args, _name=name, _run=kernel.run):
            seen[_name] = [lib.get_num_threads() for lib in blas_libraries()]
            return _run(parallel, *args)
        monkeypatch.setattr(kernel, "run", run)
    if _products._team is not None:  # under the name of the Numba kernel each stands for
        def before(name, args):
            seen[ON_THE_TEAM[name]] = [lib.get_num_threads() for lib in blas_libraries()]
        monkeypatch.setattr(_products, "_team", TeamSpy(_products._team, ON_THE_TEAM, before))
    return seen


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize("threads", [1, 2])
def test_blas_single_threaded_inside_the_kernels(blas_counts_seen, threads, layout, rng):
    # Large enough that threads_for() gives the kernels every thread; stride 2 takes
    # grad_input through its col2im kernel, stride 1 through the forward kernel.
    x = rng.standard_normal((2, 16, 40, 40)).astype(np.float32)
    w = rng.standard_normal((16, 16, 3, 3)).astype(np.float32)
    if layout == "NHWC":
        x, w = x.transpose(0, 2, 3, 1).copy(), w.transpose(2, 3, 1, 0).copy()
    assert blas_libraries(), "no BLAS found in /proc/self/maps"
    kw = dict(layout=layout, backend="im2col")
    with fastconv.num_threads(threads):
        for stride in (1, 2):
            y = fastconv.conv2d(x, w, stride, 1, **kw)
            fastconv.conv2d_backward(np.ones_like(y), x, w, stride, 1, **kw)
        after = [lib.get_num_threads() for lib in blas_libraries()]
    assert set(blas_counts_seen) == set(KERNELS[layout])
    for name, counts in blas_counts_seen.items():
        assert counts == [1] * len(counts), f"{name} ran with BLAS threads {counts}"
    assert after == [threads] * len(after)


def test_blas_count_restored_when_a_kernel_raises(monkeypatch, rng):
    def boom(parallel, *args):
        raise RuntimeError("kernel failed")
    monkeypatch.setattr(im2col._forward_nchw, "run", boom)
    monkeypatch.setattr(_products, "_team", None)  # the NCHW pieces in Numba
    x = rng.standard_normal((1, 4, 12, 12)).astype(np.float32)
    w = rng.standard_normal((4, 4, 3, 3)).astype(np.float32)
    with fastconv.num_threads(2):
        with pytest.raises(RuntimeError, match="kernel failed"):
            fastconv.conv2d(x, w, 1, 1, backend="im2col")
        assert [lib.get_num_threads() for lib in blas_libraries()] == [2] * len(blas_libraries())


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize("shape", [
    ((8, 8, 64, 64), (8, 8, 3, 3), 1, 2),        # small filters: chunks of positions per thread
    ((1, 128, 10, 11), (128, 128, 3, 3), 1, 1),  # 590 KB of filters: dW's columns per thread
    ((8, 32, 40, 40), (32, 8, 3, 2), 4, 2),      # grouped
])
def test_two_thread_splits_match_the_reference(layout, shape, rng):
    """Large enough (>= 8 MFLOP) that threads_for() gives the kernels both threads; the
    random sweeps elsewhere are mostly one-thread problems."""
    x_shape, w_shape, groups, stride = shape
    x = rng.standard_normal(x_shape)
    w = rng.standard_normal(w_shape)
    if layout == "NHWC":
        x, w = x.transpose(0, 2, 3, 1).copy(), w.transpose(2, 3, 1, 0).copy()
    kw = dict(stride=stride, pad=1, groups=groups, layout=layout)
    with fastconv.num_threads(2):
        y = fastconv.conv2d(x, w, backend="im2col", **kw)
        gy = rng.standard_normal(y.shape)
        got = fastconv.conv2d_backward(gy, x, w, backend="im2col", **kw)
        again = fastconv.conv2d_backward(gy, x, w, backend="im2col", **kw)
    ref = fastconv.conv2d_backward(gy, x, w, backend="reference", **kw)
    np.testing.assert_allclose(y, fastconv.conv2d(x, w, backend="reference", **kw),
                               rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(got.x, ref.x, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(got.w, ref.w, rtol=1e-10, atol=1e-10)
    assert np.array_equal(got.w, again.w)  # the same order of sums every run


def _same_bits_on_team_and_in_numba(monkeypatch, passes):
    """passes() -> (y, grad_x, grad_w), run on the OpenMP team and then, with the
    compiled module hidden, in the Numba kernels: the same bits. Returns the team's."""
    on_team = passes()
    monkeypatch.setattr(_products, "_team", None)
    in_numba = passes()
    for name, a, b in zip(("y", "grad_x", "grad_w"), on_team, in_numba):
        assert np.array_equal(a, b), name
    return on_team


@pytest.mark.skipif(_products._team is None, reason="the compiled module is not built")
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize("shape", [
    ((4, 64, 28, 28), (96, 64, 1, 1), 1),     # pointwise: one product per image
    ((3, 128, 14, 14), (128, 32, 1, 1), 4),   # grouped pointwise
    ((32, 64, 7, 7), (200, 64, 7, 7), 1),     # whole window: a dense layer
])
def test_products_on_the_team_match_the_numba_kernel(monkeypatch, dtype, layout, shape, rng):
    """The products run on the OpenMP team (csrc/_products.pxi) or, without the compiled
    module, in the Numba kernel ``_run_tasks``: the same gemm calls in the same order, so
    the same bits, bias included, on two threads."""
    x_shape, w_shape, groups = shape
    x = rng.standard_normal(x_shape).astype(dtype)
    w = rng.standard_normal(w_shape).astype(dtype)
    bias = rng.standard_normal(w_shape[0]).astype(dtype)
    if layout == "NHWC":
        if groups > 1 and x_shape[2] == w_shape[2]:
            pytest.skip("NHWC whole-window layers are ungrouped")
        x, w = x.transpose(0, 2, 3, 1).copy(), w.transpose(2, 3, 1, 0).copy()
    kw = dict(groups=groups, layout=layout, backend="im2col")

    def passes():
        with fastconv.num_threads(2):
            y = fastconv.conv2d(x, w, bias=bias, **kw)
            g = fastconv.conv2d_backward(np.cos(y), x, w, **kw)
        return y, g.x, g.w

    on_team = _same_bits_on_team_and_in_numba(monkeypatch, passes)
    ref = fastconv.conv2d(x, w, bias=bias, groups=groups, layout=layout, backend="reference")
    tol = 1e-4 if dtype == np.float32 else 1e-10
    np.testing.assert_allclose(on_team[0], ref, rtol=tol, atol=tol * np.abs(ref).max())


@pytest.mark.skipif(_products._team is None, reason="the compiled module is not built")
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [
    # (x, w, stride, pad, dilation, groups)
    ((2, 16, 40, 40), (24, 16, 3, 3), 1, 1, 1, 1),    # bands of one image; small dW
    ((8, 64, 7, 7), (96, 64, 3, 3), 1, 1, 1, 1),      # small maps folded side by side
    ((8, 48, 9, 9), (40, 48, 3, 2), 2, 1, 1, 1),      # strided: col2im, folded images
    ((2, 32, 30, 31), (32, 8, 3, 3), 2, (1, 2), 2, 4),  # grouped, dilated, strided
    ((1, 128, 10, 11), (128, 128, 3, 3), 1, 1, 1, 1),  # dW's columns per thread
])
def test_pieces_on_the_team_match_the_numba_kernels(monkeypatch, dtype, shape, rng):
    """The NCHW pieces run on the OpenMP team (csrc/_pieces.pxi) or, without the compiled
    module, in the Numba kernels: the same schedule and the same calls, so the same bits
    in every pass, on two threads, bias included."""
    x_shape, w_shape, stride, pad, dilation, groups = shape
    x = rng.standard_normal(x_shape).astype(dtype)
    w = rng.standard_normal(w_shape).astype(dtype)
    bias = rng.standard_normal(w_shape[0]).astype(dtype)
    kw = dict(stride=stride, pad=pad, dilation=dilation, groups=groups)

    def passes():
        with fastconv.num_threads(2):
            y = fastconv.conv2d(x, w, bias=bias, backend="im2col", **kw)
            g = fastconv.conv2d_backward(np.cos(y), x, w, backend="im2col", **kw)
        return y, g.x, g.w

    on_team = _same_bits_on_team_and_in_numba(monkeypatch, passes)
    y_ref = fastconv.conv2d(x, w, bias=bias, backend="reference", **kw)
    g_ref = fastconv.conv2d_backward(np.cos(y_ref), x, w, backend="reference", **kw)
    tol = 1e-4 if dtype == np.float32 else 1e-10  # relative to each output's largest entry
    for name, a, ref in zip(("y", "grad_x", "grad_w"), on_team, (y_ref, g_ref.x, g_ref.w)):
        np.testing.assert_allclose(a, ref, rtol=tol, atol=tol * np.abs(ref).max(), err_msg=name)
