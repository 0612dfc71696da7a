"""Conv2d and Conv1d layers: initialisation, tied weights, gradient accumulation."""
import numpy as np
import pytest
from conftest import assert_close

import fastconv

DTYPES = (np.float32, np.float64)
LAYERS = [
    # (class, layout, constructor kwargs, input shape)
    (fastconv.Conv2d, "NCHW", dict(stride=2, pad=1, groups=2), (2, 4, 9, 8)),
    (fastconv.Conv2d, "NHWC", dict(pad="same", dilation=2), (2, 7, 6, 4)),
    (fastconv.Conv1d, "NCL", dict(stride=2, pad=(2, 1), groups=2), (3, 4, 11)),
    (fastconv.Conv1d, "NLC", dict(pad="full", dilation=2), (3, 11, 4)),
]


def _functional(layer):
    if isinstance(layer, fastconv.Conv1d):
        return fastconv.conv1d, fastconv.conv1d_backward
    return fastconv.conv2d, fastconv.conv2d_backward


def _opts(layer):
    return dict(stride=layer.stride, pad=layer.pad, dilation=layer.dilation,
                groups=layer.groups, layout=layer.layout)


@pytest.mark.parametrize("cls,layout,kw,x_shape", LAYERS)
def test_weight_shapes_and_pytorch_initialisation(cls, layout, kw, x_shape):
    layer = cls(4, 6, 3, layout=layout, rng=0, **kw)
    cg = 4 // layer.groups
    expected = {"NCHW": (6, cg, 3, 3), "NHWC": (3, 3, cg, 6), "NCL": (6, cg, 3),
                "NLC": (3, cg, 6)}[layout]
    assert layer.weight.shape == layer.weight_grad.shape == expected
    assert layer.bias.shape == layer.bias_grad.shape == (6,)
    assert layer.weight.dtype == np.float32 and not layer.weight_grad.any()
    bound = 1 / np.sqrt(cg * (9 if cls is fastconv.Conv2d else 3))
    assert np.abs(layer.weight).max() <= bound and np.abs(layer.bias).max() <= bound
    # Uniform on the whole interval, not a narrower one: the extremes come close to it.
    assert np.abs(layer.weight).max() > 0.8 * bound
    assert cls(4, 6, 3, layout=layout, bias=False).bias is None


def test_initialisation_matches_pytorch_bound():
    """PyTorch's kaiming_uniform_(a=sqrt(5)) bound, gain * sqrt(3 / fan_in) with
    gain = sqrt(2 / (1 + a^2)), is 1/sqrt(fan_in); the sample's spread agrees."""
    layer = fastconv.Conv2d(64, 128, (3, 5), dtype=np.float64, rng=1)
    fan_in = 64 * 15
    bound = np.sqrt(2 / (1 + 5)) * np.sqrt(3 / fan_in)
    assert np.isclose(bound, 1 / np.sqrt(fan_in))
    assert np.isclose(layer.weight.std(), bound / np.sqrt(3), rtol=0.02)  # uniform's std
    assert abs(layer.weight.mean()) < 0.01 * bound
    assert layer.weight.dtype == np.float64
    a, b = fastconv.Conv2d(3, 4, 3, rng=5), fastconv.Conv2d(3, 4, 3, rng=5)
    assert np.array_equal(a.weight, b.weight)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("cls,layout,kw,x_shape", LAYERS)
def test_call_and_backward_match_the_functions(cls, layout, kw, x_shape, dtype):
    rng = np.random.default_rng(0)
    layer = cls(4, 6, 3, layout=layout, dtype=dtype, rng=rng, **kw)
    fwd, bwd = _functional(layer)
    x = rng.standard_normal(x_shape).astype(dtype)
    y = layer(x)
    assert_close(y, fwd(x, layer.weight, bias=layer.bias, **_opts(layer)), dtype)
    gy = rng.standard_normal(y.shape).astype(dtype)
    gx = layer.backward(gy)
    g = bwd(gy, x, layer.weight, **_opts(layer))
    assert_close(gx, g.x, dtype, "grad x")
    assert_close(layer.weight_grad, g.w, dtype, "grad w")
    assert_close(layer.bias_grad, g.b, dtype, "grad b")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("cls,layout,kw,x_shape", LAYERS)
def test_reuse_twice_accumulates_the_sum_of_both_gradients(cls, layout, kw, x_shape, dtype):
    """A layer applied to two inputs, then two backwards (LIFO): each backward returns
    its own input's gradient, and the weight gradient is the sum of both uses'."""
    rng = np.random.default_rng(1)
    layer = cls(4, 6, 3, layout=layout, dtype=dtype, rng=rng, **kw)
    fwd, bwd = _functional(layer)
    x1 = rng.standard_normal(x_shape).astype(dtype)
    x2 = rng.standard_normal(x_shape).astype(dtype)
    y1, y2 = layer(x1), layer(x2)
    assert layer.pending == 2
    g1 = rng.standard_normal(y1.shape).astype(dtype)
    g2 = rng.standard_normal(y2.shape).astype(dtype)
    gx2 = layer.backward(g2)          # last in, first out
    gx1 = layer.backward(g1)
    f1 = bwd(g1, x1, layer.weight, **_opts(layer))
    f2 = bwd(g2, x2, layer.weight, **_opts(layer))
    assert_close(gx1, f1.x, dtype, "grad x1")
    assert_close(gx2, f2.x, dtype, "grad x2")
    assert_close(layer.weight_grad, f1.w.astype(np.float64) + f2.w, dtype, "summed grad w")
    assert_close(layer.bias_grad, f1.b.astype(np.float64) + f2.b, dtype, "summed grad b")
    with pytest.raises(RuntimeError, match="no recorded forward call"):
        layer.backward(g1)
    layer.zero_grad()
    assert not layer.weight_grad.any() and not layer.bias_grad.any()


def test_a_layer_applied_to_its_own_output():
    """y = f(f(x)) with one set of weights: the chain rule through both uses, checked
    against a central finite difference of the scalar loss sum(y * c)."""
    rng = np.random.default_rng(2)
    layer = fastconv.Conv2d(2, 2, 3, pad=1, dtype=np.float64, rng=rng)
    x = rng.standard_normal((2, 2, 5, 5))
    c = rng.standard_normal((2, 2, 5, 5))
    layer(layer(x))
    layer.backward(layer.backward(c))
    w0 = layer.weight.copy()

    def loss(w):
        return np.sum(fastconv.conv2d(fastconv.conv2d(x, w, 1, 1, bias=layer.bias), w, 1, 1,
                                      bias=layer.bias) * c)

    eps = 1e-6
    numeric = np.zeros_like(w0)
    for i in np.ndindex(w0.shape):
        d = np.zeros_like(w0)
        d[i] = eps
        numeric[i] = (loss(w0 + d) - loss(w0 - d)) / (2 * eps)
    assert np.allclose(layer.weight_grad, numeric, rtol=1e-6, atol=1e-6)


def test_backward_with_nothing_recorded_raises():
    layer = fastconv.Conv1d(2, 3, 3)
    with pytest.raises(RuntimeError, match=r"Conv1d.backward: no recorded forward call"):
        layer.backward(np.ones((1, 3, 4)))
    layer(np.ones((1, 2, 6)), record=False)
    assert layer.pending == 0
    layer(np.ones((1, 2, 6)))
    with pytest.raises(ValueError, match="grad_y must have the forward output's shape"):
        layer.backward(np.ones((1, 3, 5)))
    assert layer.pending == 1                   # a bad grad_y consumes nothing
    layer.clear()
    assert layer.pending == 0


def test_constructor_errors():
    with pytest.raises(ValueError, match="groups must divide in_channels=4 and out_channels=6"):
        fastconv.Conv2d(4, 6, 3, groups=4)
    with pytest.raises(ValueError, match="layout must be one of 'NCL', 'NLC'"):
        fastconv.Conv1d(4, 6, 3, layout="NCHW")
    with pytest.raises(ValueError, match="kernel_size must be >= 1"):
        fastconv.Conv2d(4, 6, (3, 0))
    with pytest.raises(TypeError, match="dtype must be float32 or float64"):
        fastconv.Conv2d(4, 6, 3, dtype=np.int32)
    with pytest.raises(ValueError, match="in_channels must be >= 1"):
        fastconv.Conv1d(0, 6, 3)
    with pytest.raises(ValueError, match="stride must be >= 1, got 0"):
        fastconv.Conv2d(4, 6, 3, stride=(1, 0))
    with pytest.raises(ValueError, match=r"pad must be an int, a pair \(left, right\)"):
        fastconv.Conv1d(4, 6, 3, pad="sane")
    with pytest.raises(TypeError, match="dilation must be an int"):
        fastconv.Conv1d(4, 6, 3, dilation=(1, 2))
