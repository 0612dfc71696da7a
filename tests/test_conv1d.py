"""conv1d on the conv2d engines, and correlate/convolve against numpy."""
import numpy as np
import pytest
from conftest import ALL_ENGINES, assert_close

import fastconv

DTYPES = (np.float32, np.float64)


def _loop_conv1d(x, w, stride, left, right, dilation, groups):
    """A loop over outputs and taps, (N, C, L) x (K, C/groups, R), float64."""
    N, C, L = x.shape
    K, Cg, R = w.shape
    xp = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (left, right)))
    Q = (L + left + right - dilation * (R - 1) - 1) // stride + 1
    y = np.zeros((N, K, Q))
    Kg = K // groups
    for k in range(K):
        c0 = (k // Kg) * Cg
        for q in range(Q):
            for r in range(R):
                y[:, k, q] += xp[:, c0:c0 + Cg, q * stride + r * dilation] @ w[k, :, r]
    return y


@pytest.mark.parametrize("engine", ALL_ENGINES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("layout", ["NCL", "NLC"])
def test_conv1d_matches_a_loop(engine, dtype, layout, rng):
    for stride, pad, (left, right), dilation, groups in [
            (1, 0, (0, 0), 1, 1), (2, (2, 1), (2, 1), 1, 2), (3, 3, (3, 3), 2, 1),
            (1, "full", (6, 6), 2, 3), (2, "same", (3, 3), 2, 1), (1, "same", (1, 2), 1, 1),
            (1, "valid", (0, 0), 1, 6)]:
        x = rng.standard_normal((2, 6, 13)).astype(dtype)
        w = rng.standard_normal((6, 6 // groups, 4)).astype(dtype)
        b = rng.standard_normal(6).astype(dtype)
        expected = _loop_conv1d(x, w, stride, left, right, dilation, groups) + b[:, None]
        xl, wl = (x.transpose(0, 2, 1), w.transpose(2, 1, 0)) if layout == "NLC" else (x, w)
        y = fastconv.conv1d(xl, wl, stride, pad, bias=b, dilation=dilation, groups=groups,
                            layout=layout, backend=engine)
        if layout == "NLC":
            y = y.transpose(0, 2, 1)
        assert_close(y, expected, dtype, f"stride {stride} pad {pad}")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("layout", ["NCL", "NLC"])
def test_conv1d_is_conv2d_with_height_one(dtype, layout, rng):
    """Forward and all three gradients equal conv2d's on the height-1 image."""
    x = rng.standard_normal((3, 4, 17)).astype(dtype)      # NCL
    w = rng.standard_normal((6, 2, 5)).astype(dtype)
    opts = dict(dilation=2, groups=2)
    y2 = fastconv.conv2d(x[:, :, None], w[:, :, None], (1, 2), ((0, 0), (3, 1)), **opts)
    gy2 = rng.standard_normal(y2.shape).astype(dtype)
    g2 = fastconv.conv2d_backward(gy2, x[:, :, None], w[:, :, None], (1, 2), ((0, 0), (3, 1)),
                                  **opts)
    if layout == "NLC":
        x, w = x.transpose(0, 2, 1), w.transpose(2, 1, 0)
    y = fastconv.conv1d(x, w, 2, (3, 1), layout=layout, **opts)
    gy = gy2[:, :, 0].transpose(0, 2, 1) if layout == "NLC" else gy2[:, :, 0]
    g = fastconv.conv1d_backward(gy, x, w, 2, (3, 1), layout=layout, **opts)
    back = (lambda a: a.transpose(0, 2, 1)) if layout == "NLC" else (lambda a: a)
    assert_close(back(y), y2[:, :, 0], dtype, "y")
    assert_close(back(g.x), g2.x[:, :, 0], dtype, "grad x")
    assert_close(g.w.transpose(2, 1, 0) if layout == "NLC" else g.w, g2.w[:, :, 0], dtype, "w")
    assert_close(g.b, g2.b, dtype, "grad b")
    assert g.x.shape == x.shape and g.w.shape == w.shape and y.flags.c_contiguous


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("layout", ["NCL", "NLC"])
def test_conv1d_gradients_are_the_adjoints(dtype, layout):
    """y is bilinear in (x, w): <grad_y, y> == <grad_x, x> == <grad_w, w>; grad_b sums grad_y."""
    rng = np.random.default_rng(7)
    x = rng.standard_normal((2, 9, 4) if layout == "NLC" else (2, 4, 9)).astype(dtype)
    w = rng.standard_normal((3, 2, 6) if layout == "NLC" else (6, 2, 3)).astype(dtype)
    opts = dict(stride=2, pad="same", dilation=2, groups=2, layout=layout)
    y = fastconv.conv1d(x, w, **opts)
    gy = rng.standard_normal(y.shape).astype(dtype)
    g = fastconv.conv1d_backward(gy, x, w, **opts)
    inner = np.sum(gy.astype(np.float64) * y)
    assert_close(np.sum(g.x.astype(np.float64) * x).astype(dtype), inner.astype(dtype), dtype)
    assert_close(np.sum(g.w.astype(np.float64) * w).astype(dtype), inner.astype(dtype), dtype)
    assert_close(g.b, gy.sum(axis=(0, 1) if layout == "NLC" else (0, 2)), dtype)


def test_unbatched_signal(rng):
    x = rng.standard_normal((3, 10))
    w = rng.standard_normal((2, 3, 3))
    y = fastconv.conv1d(x, w, 1, 1)
    assert y.shape == (2, 10)
    assert_close(y, fastconv.conv1d(x[None], w, 1, 1)[0], np.float64)
    g = fastconv.conv1d_backward(np.ones_like(y), x, w, 1, 1)
    assert g.x.shape == (3, 10) and g.w.shape == w.shape and g.b.shape == (2,)
    y = fastconv.conv1d(x.T, w.transpose(2, 1, 0), 1, 1, layout="NLC")
    assert y.shape == (10, 2)


def test_conv1d_runs_on_the_conv2d_engines(monkeypatch, rng):
    """No third implementation: conv1d reaches the engine conv2d dispatches to."""
    from fastconv import engines

    seen = []
    real = engines.get_engine

    def spy(name):
        seen.append(name)
        return real(name)

    monkeypatch.setattr("fastconv._api.get_engine", spy)
    x, w = rng.standard_normal((1, 2, 8)), rng.standard_normal((3, 2, 3))
    fastconv.conv1d(x, w, backend="direct")
    fastconv.conv1d_backward(np.ones((1, 3, 6)), x, w, backend="im2col")
    assert seen[0] == "direct" and set(seen[1:]) == {"im2col"}


# The worked examples the issue asks for.

def test_convolve_example():
    assert np.array_equal(fastconv.convolve([1, 2, 3, 4], [5, 6, 7], "full"),
                          [5, 16, 34, 52, 45, 28])


def test_correlate_example():
    assert np.array_equal(fastconv.correlate([1, 2, 3, 4], [5, 6, 7], "valid"), [38, 56])


def test_conv1d_with_flip_and_full_pad_is_convolve():
    y = fastconv.conv1d([[[1, 2, 3, 4]]], [[[5, 6, 7]]], pad="full", flip=True)
    assert y.shape == (1, 1, 6)
    assert np.array_equal(y.ravel(), [5, 16, 34, 52, 45, 28])
    assert np.array_equal(fastconv.conv1d([[[1, 2, 3, 4]]], [[[5, 6, 7]]]).ravel(), [38, 56])


@pytest.mark.parametrize("n,m", [(5, 5), (8, 8), (4, 7), (9, 3)])
def test_matlab_xcorr_is_conv_with_fliplr(n, m):
    """MATLAB: xcorr(x, y) == conv(x, fliplr(y)) (all 2N-1 lags for equal lengths)."""
    rng = np.random.default_rng(n * 10 + m)
    x, y = rng.standard_normal(n), rng.standard_normal(m)
    xcorr = fastconv.correlate(x, y, "full")
    assert_close(xcorr, fastconv.convolve(x, np.fliplr(y[None])[0], "full"), np.float64)
    if n == m:  # lag -(N-1) first, as MATLAB lists them: c(m) = sum x(n+m) y(n)
        lags = np.arange(-(n - 1), n)
        by_def = [sum(x[i + k] * y[i] for i in range(n) if 0 <= i + k < n) for k in lags]
        assert_close(xcorr, np.array(by_def), np.float64)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("mode", ["full", "same", "valid"])
def test_correlate_and_convolve_match_numpy(mode, dtype):
    """Many random lengths, odd and even, with v both shorter and longer than a."""
    rng = np.random.default_rng(0)
    pairs = [(n, m) for n in range(1, 8) for m in range(1, 8)] + [
        tuple(rng.integers(1, 60, 2)) for _ in range(16)]
    for n, m in pairs:
        a = rng.standard_normal(n).astype(dtype)
        v = rng.standard_normal(m).astype(dtype)
        for ours, theirs in ((fastconv.correlate, np.correlate), (fastconv.convolve, np.convolve)):
            assert_close(ours(a, v, mode), theirs(a, v, mode).astype(dtype), dtype,
                         f"{ours.__name__} len(a)={n} len(v)={m} {mode}")


def test_numpy_same_centring_differs_from_conv1d_same():
    """For even kernels numpy puts the extra sample of padding first, TensorFlow last."""
    a, v = np.arange(1.0, 7.0), np.array([1.0, 10.0])
    assert np.array_equal(fastconv.correlate(a, v, "same"), np.correlate(a, v, "same"))
    tf_same = fastconv.conv1d(a[None, None], v[None, None], pad="same").ravel()
    assert not np.array_equal(tf_same, np.correlate(a, v, "same"))
    assert np.array_equal(tf_same, np.correlate(np.append(a, 0), v, "valid"))


def test_defaults_and_dtypes_follow_numpy():
    a, v = [1, 2, 3, 4], [1, 0, -1, 2, 5]
    assert np.array_equal(fastconv.correlate(a, v), np.correlate(a, v))     # "valid"
    assert np.array_equal(fastconv.convolve(a, v), np.convolve(a, v))       # "full"
    assert fastconv.correlate(a, v).dtype == np.float64
    assert fastconv.convolve(np.ones(3, np.float32), np.ones(2, np.float32)).dtype == np.float32
    assert np.array_equal(fastconv.convolve(3.0, [1, 2]), np.convolve(3.0, [1, 2]))


@pytest.mark.parametrize("call,exc,text", [
    (lambda: fastconv.correlate([], [1.0]), ValueError, "a cannot be empty"),
    (lambda: fastconv.convolve([1.0], []), ValueError, "v cannot be empty"),
    (lambda: fastconv.convolve(np.ones((2, 2)), [1.0]), ValueError, "a must be a 1-D"),
    (lambda: fastconv.convolve([1.0], [1.0], "circular"), ValueError,
     "mode must be one of 'valid', 'same', 'full'; got 'circular'"),
    (lambda: fastconv.correlate([1j], [1.0]), TypeError, "a must have a real numeric dtype"),
    (lambda: fastconv.conv1d(np.ones((2, 3, 8, 8)), np.ones((4, 3, 3))), ValueError,
     "x must be a 3-D array (N, C, L) or a 2-D signal (C, L)"),
    (lambda: fastconv.conv1d(np.ones((2, 3, 8)), np.ones((4, 3, 3, 3))), ValueError,
     "w must be a 3-D array (K, C/groups, R) for layout='NCL'"),
    (lambda: fastconv.conv1d(np.ones((2, 8, 3)), np.ones((3, 4, 5)), layout="NLC"), ValueError,
     "w's input-channel dimension must be C/groups = 3/1 = 3 (NLC: w is (R, C/groups, K)), got 4"),
    (lambda: fastconv.conv1d(np.ones((2, 3, 8)), np.ones((4, 3, 3)), layout="NCHW"), ValueError,
     "layout must be one of 'NCL', 'NLC'; got 'NCHW'"),
    (lambda: fastconv.conv1d(np.ones((2, 3, 8)), np.ones((4, 3, 3)), stride=(1, 2)), TypeError,
     "stride must be an int"),
    (lambda: fastconv.conv1d(np.ones((2, 3, 8)), np.ones((4, 3, 3)), dilation=0), ValueError,
     "dilation must be >= 1, got 0"),
    (lambda: fastconv.conv1d(np.ones((2, 3, 8)), np.ones((4, 3, 3)), pad=(1, 2, 3)), ValueError,
     "pad must be an int or a pair (left, right)"),
    (lambda: fastconv.conv1d(np.ones((2, 3, 8)), np.ones((4, 3, 3)), pad=(1, -1)), ValueError,
     "pad must be >= 0, got -1"),
    (lambda: fastconv.conv1d(np.ones((2, 3, 8)), np.ones((4, 3, 3)), pad="sam"), ValueError,
     "pad must be an int, a pair (left, right) or one of 'valid', 'same', 'full'; got 'sam'"),
    (lambda: fastconv.conv1d(np.ones((2, 3, 8)), np.ones((4, 3, 9))), ValueError,
     "w's kernel of 9 taps (dilation 1: spans 9) is longer than the padded input 8"),
    (lambda: fastconv.conv1d(np.ones((2, 4, 8)), np.ones((6, 1, 3)), groups=3), ValueError,
     "groups must divide the input channels C=4"),
    (lambda: fastconv.conv1d_backward(np.ones((2, 4, 5)), np.ones((2, 3, 8)), np.ones((4, 3, 3))),
     ValueError, "grad_y must have the forward output's shape (2, 4, 6), got (2, 4, 5)"),
])
def test_errors_name_the_conv1d_arguments(call, exc, text):
    with pytest.raises(exc) as info:
        call()
    assert text in str(info.value)
