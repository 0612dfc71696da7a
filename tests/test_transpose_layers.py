"""ConvTranspose2d and ConvTranspose1d layers: shapes, PyTorch's initialisation, the
tape (reuse accumulates, last in first out) and the packed filters of inference calls.

Tolerances: conftest's RTOL (float32 2e-4, float64 1e-10 of the largest magnitude)."""
import numpy as np
import pytest
from conftest import assert_close

import fastconv
from fastconv import _direct

DTYPES = (np.float32, np.float64)
LAYERS = [
    # (class, layout, constructor kwargs, input shape)
    (fastconv.ConvTranspose2d, "NCHW", dict(stride=2, pad=1, output_padding=1, groups=2),
     (2, 4, 5, 4)),
    (fastconv.ConvTranspose2d, "NHWC", dict(stride=(1, 2), pad=((0, 1), (2, 0)), dilation=2),
     (1, 4, 5, 4)),
    (fastconv.ConvTranspose1d, "NCL", dict(stride=3, pad=(2, 1), output_padding=2, groups=2),
     (3, 4, 7)),
    (fastconv.ConvTranspose1d, "NLC", dict(pad=1, dilation=2, output_padding=1), (1, 7, 4)),
]


def _functional(layer):
    if isinstance(layer, fastconv.ConvTranspose1d):
        return fastconv.conv_transpose1d, fastconv.conv_transpose1d_backward
    return fastconv.conv_transpose2d, fastconv.conv_transpose2d_backward


def _opts(layer):
    return dict(stride=layer.stride, pad=layer.pad, output_padding=layer.output_padding,
                dilation=layer.dilation, groups=layer.groups, layout=layer.layout)


@pytest.mark.parametrize("cls,layout,kw,x_shape", LAYERS)
def test_weight_shapes_and_pytorch_initialisation(cls, layout, kw, x_shape):
    layer = cls(4, 6, 3, layout=layout, rng=0, **kw)
    kg = 6 // layer.groups
    expected = {"NCHW": (4, kg, 3, 3), "NHWC": (3, 3, kg, 4), "NCL": (4, kg, 3),
                "NLC": (3, kg, 4)}[layout]
    assert layer.weight.shape == layer.weight_grad.shape == expected
    assert layer.bias.shape == layer.bias_grad.shape == (6,)
    assert layer.weight.dtype == np.float32 and not layer.weight_grad.any()
    # PyTorch's fan_in for a transposed layer: C_out/groups times the taps
    bound = 1 / np.sqrt(kg * (9 if cls is fastconv.ConvTranspose2d else 3))
    assert np.abs(layer.weight).max() <= bound and np.abs(layer.bias).max() <= bound
    assert np.abs(layer.weight).max() > 0.8 * bound
    assert cls(4, 6, 3, layout=layout, bias=False).bias is None
    assert f"output_padding={kw.get('output_padding', 0)!r}" in repr(layer)


def test_initialisation_spread_is_pytorchs():
    """kaiming_uniform_(a=sqrt(5)) on fan_in = C_out/groups * R * S is uniform on
    +-1/sqrt(fan_in): its standard deviation is bound / sqrt(3)."""
    layer = fastconv.ConvTranspose2d(16, 128, (3, 5), groups=2, dtype=np.float64, rng=1)
    bound = 1 / np.sqrt(64 * 15)
    assert np.isclose(layer.weight.std(), bound / np.sqrt(3), rtol=0.02)
    assert abs(layer.weight.mean()) < 0.01 * bound
    a, b = fastconv.ConvTranspose1d(3, 4, 3, rng=5), fastconv.ConvTranspose1d(3, 4, 3, rng=5)
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
    rng = np.random.default_rng(1)
    layer = cls(4, 6, 3, layout=layout, dtype=dtype, rng=rng, **kw)
    _, bwd = _functional(layer)
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
    with pytest.raises(RuntimeError, match=f"{cls.__name__}.backward: no recorded forward call"):
        layer.backward(g1)
    layer.zero_grad()
    assert not layer.weight_grad.any() and not layer.bias_grad.any()


def test_a_layer_applied_to_its_own_output():
    """y = f(f(x)) with one set of weights (stride 1, pad 1, 3x3: the shape is kept),
    the chain rule through both uses against a central finite difference."""
    rng = np.random.default_rng(2)
    layer = fastconv.ConvTranspose2d(2, 2, 3, pad=1, dtype=np.float64, rng=rng)
    x = rng.standard_normal((2, 2, 5, 4))
    c = rng.standard_normal((2, 2, 5, 4))
    layer(layer(x))
    gx = layer.backward(layer.backward(c))
    w0 = layer.weight.copy()

    def loss(w, x_=x):
        f = lambda a: fastconv.conv_transpose2d(a, w, 1, 1, bias=layer.bias)  # noqa: E731
        return np.sum(f(f(x_)) * c)

    eps = 1e-6
    numeric = np.zeros_like(w0)
    for i in np.ndindex(w0.shape):
        d = np.zeros_like(w0)
        d[i] = eps
        numeric[i] = (loss(w0 + d) - loss(w0 - d)) / (2 * eps)
    assert np.allclose(layer.weight_grad, numeric, rtol=1e-6, atol=1e-6)
    i = (1, 0, 2, 3)
    d = np.zeros_like(x)
    d[i] = eps
    assert np.isclose(gx[i], (loss(w0, x + d) - loss(w0, x - d)) / (2 * eps), rtol=1e-6)


def test_the_readme_2x_upsampling_example():
    x = np.random.default_rng(0).random((2, 64, 32, 32)).astype(np.float32)
    up = fastconv.ConvTranspose2d(64, 32, 4, stride=2, pad=1, rng=0)
    assert up.weight.shape == (64, 32, 4, 4)
    y = up(x)
    assert y.shape == (2, 32, 64, 64) == fastconv.output_shape(x, up.weight, 2, 1,
                                                              transposed=True)
    gx = up.backward(np.ones_like(y))
    assert gx.shape == x.shape and up.weight_grad.any() and up.bias_grad.any()
    np.testing.assert_array_equal(fastconv.conv_transpose2d(x, up.weight, 2, 1, bias=up.bias), y)
    g = fastconv.conv_transpose2d_backward(np.ones_like(y), x, up.weight, 2, 1)
    assert_close(g.x, gx, np.float32)


def test_a_decoder_of_two_layers_trains_its_upsampling():
    """A 2x learned upsampling: a few SGD steps on the layers' own gradients lower the
    loss of fitting a target image."""
    rng = np.random.default_rng(3)
    up = fastconv.ConvTranspose2d(3, 4, 4, stride=2, pad=1, dtype=np.float64, rng=0)
    head = fastconv.ConvTranspose2d(4, 1, 3, pad=1, dtype=np.float64, rng=1)
    x = rng.standard_normal((2, 3, 6, 6))
    target = rng.standard_normal((2, 1, 12, 12))
    losses = []
    for _ in range(5):
        pre = up(x)
        y = head(np.maximum(pre, 0))
        losses.append(0.5 * np.sum((y - target) ** 2))
        up.backward(head.backward(y - target) * (pre > 0))
        for layer in (up, head):
            for p, gp in layer.parameters():
                p -= 1e-3 * gp
            layer.zero_grad()
    assert losses[-1] < losses[0] and up.pending == head.pending == 0


def test_constructor_errors():
    with pytest.raises(ValueError, match="groups must divide in_channels=4 and out_channels=6"):
        fastconv.ConvTranspose2d(4, 6, 3, groups=4)
    with pytest.raises(ValueError, match="output_padding must be smaller than stride or dilation"):
        fastconv.ConvTranspose2d(4, 6, 3, stride=2, output_padding=2)
    with pytest.raises(ValueError, match="got output_padding 1 with stride 1 and dilation 1"):
        fastconv.ConvTranspose1d(4, 6, 3, output_padding=1)
    with pytest.raises(ValueError, match="pad of a transposed convolution must be an int, a pair"):
        fastconv.ConvTranspose2d(4, 6, 3, pad="same")
    with pytest.raises(ValueError, match=r"must be an int or a pair \(left, right\), got 'valid'"):
        fastconv.ConvTranspose1d(4, 6, 3, pad="valid")
    with pytest.raises(ValueError, match="layout must be one of 'NCHW', 'NHWC'"):
        fastconv.ConvTranspose2d(4, 6, 3, layout="NCL")
    with pytest.raises(ValueError, match="kernel_size must be >= 1"):
        fastconv.ConvTranspose2d(4, 6, (3, 0))
    with pytest.raises(TypeError, match="output_padding must be an int"):
        fastconv.ConvTranspose1d(4, 6, 3, stride=2, output_padding=(1, 1))
    with pytest.raises(ValueError, match="stride must be >= 1, got 0"):
        fastconv.ConvTranspose2d(4, 6, 3, stride=(1, 0))
    layer = fastconv.ConvTranspose2d(2, 3, 3)
    with pytest.raises(ValueError, match="grad_y must have the forward output's shape"):
        layer(np.ones((1, 2, 4, 4)))
        layer.backward(np.ones((1, 3, 5, 5)))
    assert layer.pending == 1  # a bad grad_y consumes nothing


# Packed filters: inference calls keep what the direct engine packed for the grad_input
# that computes the transposed forward; `auto` sends these to it (strided, wide).
PACK_CASES = [
    (fastconv.ConvTranspose2d, 16, 24, 4, dict(stride=2, pad=1), (2, 16, 8, 8)),
    (fastconv.ConvTranspose2d, 24, 16, 3, dict(stride=2, pad=1, output_padding=1,
                                               layout="NHWC"), (1, 6, 7, 24)),
    (fastconv.ConvTranspose1d, 16, 24, 5, dict(stride=2, pad=2), (2, 16, 40)),
]


def _fresh(layer, x):
    f = (fastconv.conv_transpose1d if isinstance(layer, fastconv.ConvTranspose1d)
         else fastconv.conv_transpose2d)
    return f(x, layer.weight, layer.stride, layer.pad, output_padding=layer.output_padding,
             bias=layer.bias, dilation=layer.dilation, groups=layer.groups, layout=layer.layout)


def _n_packs(layer):
    return 0 if layer._packs is None else _direct._packs_info(layer._packs)[0]


@pytest.mark.parametrize("cls,cin,cout,k,kw,x_shape", PACK_CASES,
                         ids=lambda c: getattr(c, "__name__", None))
def test_inference_calls_keep_reuse_and_drop_the_pack(cls, cin, cout, k, kw, x_shape):
    layer = cls(cin, cout, k, rng=1, **kw)
    x = np.random.default_rng(0).standard_normal(x_shape).astype(np.float32)
    expected = _fresh(layer, x)
    first = layer(x, record=False)
    assert _n_packs(layer) >= 1
    kept = _direct._packs_info(layer._packs)
    second = layer(x, record=False)
    assert _direct._packs_info(layer._packs) == kept  # found, not packed again
    np.testing.assert_array_equal(first, expected)
    np.testing.assert_array_equal(second, expected)
    layer.weight = -2 * layer.weight  # a write through the layer drops the pack
    np.testing.assert_array_equal(layer(x, record=False), _fresh(layer, x))
    layer.weight[...] *= 0.5
    layer.weight_changed()
    np.testing.assert_array_equal(layer(x, record=False), _fresh(layer, x))
    layer(x)  # a training call: an optimiser may write next
    assert layer._packs is None
    layer.backward(np.ones_like(expected))
    for p, _ in layer.parameters():
        p -= 0.25 * p
    np.testing.assert_array_equal(layer(x, record=False), _fresh(layer, x))
    # float64 input on a float32 layer: a converted copy of the weights; no pack kept
    layer.weight_changed()
    y64 = layer(x.astype(np.float64), record=False)
    assert y64.dtype == np.float64 and _n_packs(layer) == 0
