"""The im2col engine's workspace cap: split results, the cap itself, buffer reuse.

Splits are compared within the reference tolerance (conftest.RTOL), not bitwise: the
engine's own code adds in the unsplit order (col2im walks row bands in order), but
BLAS may pick another kernel for a narrower product (OpenBLAS switches to gemv or its
small-matrix kernels), and grad_weight sums one product per chunk. Either only
reassociates a float sum of the same terms.
"""
import tracemalloc

import numpy as np
import pytest
from conftest import TeamSpy, assert_close, random_problem

import fastconv
from fastconv import _validate as validate
from fastconv._geometry import LAYOUTS, ConvGeometry
from fastconv.engines import _products, im2col, reference

SEEDS = range(40)
# Caps that force every kind of split on the sweep's small problems: a band of a few
# output rows of one image, one row (below even that: the floor), and whole images.
TINY_CAPS = (1, 3000, 40_000)


def _passes(p, **extra):
    kw = dict(flip=p["flip"], backend="im2col", **p["opts"], **extra)
    y = fastconv.conv2d(p["x"], p["w"], bias=p["b"], **kw)
    g = fastconv.conv2d_backward(p["gy"], p["x"], p["w"], **kw)
    return y, g


@pytest.mark.parametrize("cap", TINY_CAPS)
@pytest.mark.parametrize("seed", SEEDS)
def test_split_matches_unsplit(seed, cap):
    p = random_problem(seed)
    with fastconv.workspace_limit(2**40):
        y0, g0 = _passes(p)
    with fastconv.workspace_limit(cap):
        y1, g1 = _passes(p)
    assert_close(y1, y0, p["dtype"], "forward split")
    assert_close(g1.x, g0.x, p["dtype"], "grad_input split")
    assert_close(g1.w, g0.w, p["dtype"], "grad_weight split")
    assert np.array_equal(g0.b, g1.b)


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_split_matches_unsplit_on_a_batch(layout, rng):
    """Larger than the sweep: batch chunks of several images, then row bands."""
    x = rng.standard_normal((6, 5, 23, 19)).astype(np.float32)
    w = rng.standard_normal((7, 5, 3, 4)).astype(np.float32)
    if layout == "NHWC":
        x, w = x.transpose(0, 2, 3, 1).copy(), w.transpose(2, 3, 1, 0).copy()
    kw = dict(pad=(1, 2), stride=(2, 1), dilation=(1, 2), layout=layout, backend="im2col")
    with fastconv.workspace_limit(2**40):
        y0 = fastconv.conv2d(x, w, **kw)
        gy = rng.standard_normal(y0.shape).astype(np.float32)
        g0 = fastconv.conv2d_backward(gy, x, w, **kw)
    per_image = 5 * 3 * 4 * y0[0].size // 7 * 4  # column bytes of one image
    for cap in (3 * per_image, per_image // 3):   # 3 images per chunk; a third of an image
        with fastconv.workspace_limit(cap):
            assert_close(fastconv.conv2d(x, w, **kw), y0, np.float32, "forward")
            g1 = fastconv.conv2d_backward(gy, x, w, **kw)
        assert_close(g1.x, g0.x, np.float32, "grad_input")
        assert_close(g1.w, g0.w, np.float32, "grad_weight")


def _peak(fn, warm_up=True):
    """Peak bytes traced during fn() beyond what was allocated before it.

    The engine module is called directly: the API layer and the suite's
    inputs-unchanged fixture (conftest) make copies of their own.
    """
    if warm_up:  # Numba loads or compiles the kernels on first use: not workspace
        fn()
    im2col._local.buf = None  # start without a cached workspace: its allocation counts
    tracemalloc.start()
    tracemalloc.reset_peak()
    base = tracemalloc.get_traced_memory()[0]
    out = fn()
    peak = tracemalloc.get_traced_memory()[1] - base
    tracemalloc.stop()
    return peak, out


def _geometry(x, w, pad, layout):
    N, C, H, W = x.shape if layout == "NCHW" else (x.shape[0], x.shape[3], *x.shape[1:3])
    K, _, R, S = w.shape if layout == "NCHW" else (w.shape[3], w.shape[2], *w.shape[:2])
    P, Q = H + 2 * pad - R + 1, W + 2 * pad - S + 1
    return ConvGeometry(N, C, H, W, K, R, S, P, Q, 1, 1, 1, 1, 1, pad, pad, pad, pad,
                        LAYOUTS[layout])


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_cap_holds(layout, rng):
    x = rng.standard_normal((4, 8, 64, 64)).astype(np.float32)
    w = rng.standard_normal((16, 8, 3, 3)).astype(np.float32)
    if layout == "NHWC":
        x, w = x.transpose(0, 2, 3, 1).copy(), w.transpose(2, 3, 1, 0).copy()
    g = _geometry(x, w, 1, layout)
    gy = rng.standard_normal(g.y_shape).astype(np.float32)
    unsplit = 8 * 9 * 4 * 64 * 64 * 4  # the whole batch's columns: 4.5 MiB
    cap = 2**19                        # 512 KiB: about 9 chunks
    slack = 16 * 2**10                 # small temporaries (views, index tuples)
    with fastconv.workspace_limit(cap):
        peak, y = _peak(lambda: im2col.forward(x, w, None, g))
        assert peak <= cap + y.nbytes + slack < unsplit
        peak, gx = _peak(lambda: im2col.grad_input(gy, w, g))
        assert peak <= cap + gx.nbytes + slack
        peak, gw = _peak(lambda: im2col.grad_weight(gy, x, g))
        assert peak <= cap + gw.nbytes + slack


def test_workspace_reused_across_pieces_and_calls(monkeypatch, rng):
    """One workspace request per pass, however many pieces; the buffer survives calls."""
    x = rng.standard_normal((4, 3, 40, 40)).astype(np.float32)
    w = rng.standard_normal((5, 3, 3, 3)).astype(np.float32)
    requests, plans = [], []
    workspace, run = im2col._workspace, im2col._forward_nchw.run
    monkeypatch.setattr(im2col, "_workspace", lambda *a: requests.append(a) or workspace(*a))
    # The Numba kernel, whose arguments are recorded here; the team's pieces take the
    # same plan (tests/test_im2col_threads.py checks they give the same bits).
    monkeypatch.setattr(_products, "_team", None)
    # args: x, w, bias, y, its four C loops, then T, nb, pb, nbands, G, ws, per
    monkeypatch.setattr(im2col._forward_nchw, "run",
                        lambda par, *a: plans.append((a[8], *a[10:12])) or run(par, *a))
    cap = 2 * 3 * 9 * 40 * 8 * 4  # two threads' pieces of 8 output rows
    with fastconv.workspace_limit(cap):
        fastconv.conv2d(x, w, pad=1, backend="im2col")
        buf = im2col._local.buf
        fastconv.conv2d(x, w, pad=1, backend="im2col")
        assert im2col._local.buf is buf
    assert len(requests) == 2 and len(plans) == 2
    for T, pb, nbands in plans:
        assert pb * nbands >= 40 and pb <= 8 * 2 // T  # the pieces cover the image, within the cap
        assert requests[0][0] * 4 <= cap


def test_lowering_the_cap_frees_the_buffer(rng):
    x = rng.standard_normal((2, 3, 40, 40)).astype(np.float32)
    w = rng.standard_normal((5, 3, 3, 3)).astype(np.float32)
    fastconv.conv2d(x, w, pad=1, backend="im2col")
    assert im2col._local.buf.nbytes > 8192
    with fastconv.workspace_limit(8192):  # above one output row's columns, 4320 B
        fastconv.conv2d(x, w, pad=1, backend="im2col")
        assert im2col._local.buf.nbytes <= 8192


def test_layer_beyond_2gib_runs_within_the_cap():
    """Unsplit, this layer's columns would take 2.3 GB (147 rows x 3.98M positions x 4 B)."""
    x = np.random.default_rng(0).standard_normal((1, 3, 2000, 2000), dtype=np.float32)
    w = np.random.default_rng(1).standard_normal((2, 3, 7, 7), dtype=np.float32)
    P = Q = 2000 - 6
    assert 3 * 7 * 7 * P * Q * 4 > 2**31
    cap = fastconv.get_workspace_limit()
    fastconv.conv2d(x[:, :, :40, :40], w, backend="im2col")  # compiles the kernels, quickly
    g = _geometry(x, w, 0, "NCHW")
    peak, y = _peak(lambda: im2col.forward(x, w, None, g), warm_up=False)
    assert y.shape == (1, 2, P, Q)
    assert peak <= cap + y.nbytes + 2**20
    # Spot-check a few output rows against the reference engine.
    rows = slice(P // 2, P // 2 + 3)
    ref = fastconv.conv2d(x[:, :, P // 2:P // 2 + 9], w, backend="reference")
    assert_close(y[:, :, rows], ref, np.float32, "rows of the big layer")


@pytest.mark.parametrize("on_team", [True, False], ids=["team", "numba"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("groups", [1, 2])
def test_strided_grad_input_batches_small_maps(monkeypatch, rng, dtype, groups, on_team):
    """Strided grad_input onto small maps multiplies several images' dY at once (nb > 1)
    and folds each from its columns of the product: equal to the reference, on the
    OpenMP team (csrc/_pieces.pxi) and in the Numba kernel."""
    if on_team and _products.team() is None:
        pytest.skip("the compiled module is not built")
    x = rng.standard_normal((9, 8, 9, 7)).astype(dtype)
    w = rng.standard_normal((12, 8 // groups, 3, 2)).astype(dtype)
    g = validate.geometry(x.shape, w.shape, 2, 1, 1, groups, 0)
    gy = rng.standard_normal(g.y_shape).astype(dtype)
    seen, run = [], im2col._grad_input_nchw.run
    if on_team:
        # args: gemm, fold, stage, isz, gy, N, K, w, gx, C, H, W, T, then nb
        monkeypatch.setattr(_products, "_team", TeamSpy(
            _products.team(), ("grad_input_pieces",), lambda name, a: seen.append(a[13])))
    else:
        monkeypatch.setattr(_products, "_team", None)
        # args: gy, w, gx, gemm, fold, stage, then T, nb
        monkeypatch.setattr(im2col._grad_input_nchw, "run",
                            lambda par, *a: seen.append(a[7]) or run(par, *a))
    got = im2col.grad_input(gy, w, g)
    assert seen and seen[0] > 1
    assert_close(got, reference.grad_input(gy, w, g), dtype, "grad_input")
