"""Every engine against the reference: forward and all three gradients.

The sweep (see ``random_problem``) covers non-square kernels, strides 1-3, every pad
form including per-side, dilation, groups and depthwise, both layouts, both dtypes,
batch 1 and odd sizes, and flip. Tolerances are per dtype (conftest.RTOL).
"""
import numpy as np
import pytest
from conftest import FAST_ENGINES, assert_close, random_problem

import fastconv

SEEDS = range(60)


@pytest.mark.parametrize("engine", FAST_ENGINES)
@pytest.mark.parametrize("seed", SEEDS)
def test_engine_matches_reference(engine, seed):
    p = random_problem(seed)
    x, w, b, gy, dtype, opts = p["x"], p["w"], p["b"], p["gy"], p["dtype"], p["opts"]
    before = [a.copy() for a in (x, w, b, gy)]
    kw = dict(flip=p["flip"], **opts)

    y = fastconv.conv2d(x, w, bias=b, backend=engine, **kw)
    y_ref = fastconv.conv2d(x, w, bias=b, backend="reference", **kw)
    assert_close(y, y_ref, dtype, f"{engine} forward {opts}")
    assert y.flags.c_contiguous

    g = fastconv.conv2d_backward(gy, x, w, backend=engine, **kw)
    g_ref = fastconv.conv2d_backward(gy, x, w, backend="reference", **kw)
    for name in ("x", "w", "b"):
        assert_close(getattr(g, name), getattr(g_ref, name), dtype, f"{engine} grad {name} {opts}")

    for a, a0 in zip((x, w, b, gy), before):
        assert np.array_equal(a, a0), "an engine modified its input"


@pytest.mark.parametrize("engine", FAST_ENGINES)
@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_pointwise_and_depthwise(engine, layout, dtype, rng):
    """The two special shapes the engines treat specially: 1x1 stride 1, and depthwise."""
    for groups, C, K, R in ((1, 6, 4, 1), (5, 5, 5, 3)):  # pointwise, depthwise
        Cg = C // groups
        x = rng.standard_normal((2, 5, 7, C) if layout == "NHWC" else (2, C, 5, 7)).astype(dtype)
        w_shape = (R, R, Cg, K) if layout == "NHWC" else (K, Cg, R, R)
        w = rng.standard_normal(w_shape).astype(dtype)
        kw = dict(pad=R // 2, groups=groups, layout=layout)
        y = fastconv.conv2d(x, w, backend=engine, **kw)
        assert_close(y, fastconv.conv2d(x, w, backend="reference", **kw), dtype, "forward")
        gy = rng.standard_normal(y.shape).astype(dtype)
        g = fastconv.conv2d_backward(gy, x, w, backend=engine, **kw)
        g_ref = fastconv.conv2d_backward(gy, x, w, backend="reference", **kw)
        for name in ("x", "w", "b"):
            assert_close(getattr(g, name), getattr(g_ref, name), dtype, name)


@pytest.mark.parametrize("engine", FAST_ENGINES)
def test_threads_give_identical_results(engine, rng):
    """grad_weight's reduction is race-free: 1 and 2 threads agree, runs are repeatable.

    The problem is large enough (38 MFLOP) for threads_for() to use two threads."""
    x = rng.standard_normal((4, 16, 32, 32)).astype(np.float32)
    w = rng.standard_normal((32, 16, 3, 3)).astype(np.float32)
    gy = rng.standard_normal((4, 32, 32, 32)).astype(np.float32)
    from fastconv._threads import threads_for
    with fastconv.num_threads(2):
        assert threads_for(2 * x.size * 32 * 9) == 2
    runs = []
    for n in (1, 2, 2):
        with fastconv.num_threads(n):
            runs.append(fastconv.conv2d_backward(gy, x, w, pad=1, backend=engine))
    for name in ("x", "w", "b"):
        assert np.array_equal(getattr(runs[1], name), getattr(runs[2], name))
        assert_close(getattr(runs[0], name), getattr(runs[1], name), np.float32, name)


@pytest.mark.parametrize("engine", FAST_ENGINES)
@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize("groups", [1, 2])
@pytest.mark.parametrize("stride", [1, 3])
def test_whole_window_is_a_dense_layer(engine, layout, groups, stride, rng):
    """A kernel that covers the input (LeNet's C5) gives one output per image."""
    C, K, H, W = 4 * groups, 3 * groups, 5, 4
    x = rng.standard_normal((3, C, H, W) if layout == "NCHW" else (3, H, W, C))
    w_shape = (K, C // groups, H, W) if layout == "NCHW" else (H, W, C // groups, K)
    w, b = rng.standard_normal(w_shape), rng.standard_normal(K)
    kw = dict(stride=stride, groups=groups, layout=layout)
    y = fastconv.conv2d(x, w, bias=b, backend=engine, **kw)
    assert y.shape == ((3, K, 1, 1) if layout == "NCHW" else (3, 1, 1, K))
    assert_close(y, fastconv.conv2d(x, w, bias=b, backend="reference", **kw), np.float64)
    gy = rng.standard_normal(y.shape)
    g = fastconv.conv2d_backward(gy, x, w, backend=engine, **kw)
    g_ref = fastconv.conv2d_backward(gy, x, w, backend="reference", **kw)
    for name in ("x", "w", "b"):
        assert_close(getattr(g, name), getattr(g_ref, name), np.float64, name)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("groups", [1, 2])
@pytest.mark.parametrize("threads", [1, 2])
def test_im2col_pointwise_forward_folds_small_maps(dtype, groups, threads, rng):
    """NCHW 1x1 forward on small maps with more images than threads puts the images side
    by side in the pieces (im2col._folds_images) instead of one product per image: the
    same values as the reference, with the bias, on odd map sizes and channel counts."""
    from fastconv._validate import geometry
    from fastconv.engines import im2col
    for N, C, K, H, W in ((7, 96, 40, 7, 7), (5, 34, 18, 5, 9), (3, 256, 64, 12, 13)):
        x = rng.standard_normal((N, C, H, W)).astype(dtype)
        w = rng.standard_normal((K, C // groups, 1, 1)).astype(dtype)
        b = rng.standard_normal(K).astype(dtype)
        g = geometry(x.shape, w.shape, 1, 0, 1, groups, 0)
        with fastconv.num_threads(threads):
            assert im2col._folds_images(g, im2col._start(g))
            y = fastconv.conv2d(x, w, bias=b, groups=groups, backend="im2col")
            again = fastconv.conv2d(x, w, bias=b, groups=groups, backend="im2col")
        want = fastconv.conv2d(x, w, bias=b, groups=groups, backend="reference")
        assert_close(y, want, dtype, f"{(N, C, K, H, W)}")
        assert np.array_equal(y, again)
