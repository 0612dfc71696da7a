"""conv_transpose2d and conv_transpose1d against PyTorch, where it is installed: the
forward against ``torch.nn.functional.conv_transpose2d``, every gradient against its
autograd, every engine; the output size against ``torch.nn.ConvTranspose2d`` on a grid.

Tolerances: conftest's RTOL (float32 2e-4, float64 1e-10 of the largest magnitude); the
Winograd engine's bounds of test_winograd.py where it computes a pass.
"""
import itertools

import numpy as np
import pytest
from conftest import ALL_ENGINES, assert_close
from test_transpose import random_transposed, sides, to_nchw, wino_close

import fastconv

torch = pytest.importorskip("torch")


def torch_transposed(x, w, b, opts):
    """PyTorch's conv_transpose2d (NCHW tensors) with fastconv's pad forms: PyTorch's
    padding is symmetric, so the full output (padding 0) is cropped by each side's pad."""
    pt, pb, pl, pr = sides(opts["pad"])
    y = torch.nn.functional.conv_transpose2d(
        x, w, b, stride=opts["stride"], output_padding=opts["output_padding"],
        dilation=opts["dilation"], groups=opts["groups"])
    return y[:, :, pt:y.shape[2] - pb, pl:y.shape[3] - pr]


def _check_against_torch(p, engine, close=assert_close):
    x, w, back = to_nchw(p)
    o = p["opts"]
    tx = torch.tensor(x, requires_grad=True)
    tw = torch.tensor(w, requires_grad=True)
    tb = torch.tensor(p["b"], requires_grad=True)
    ty = torch_transposed(tx, tw, tb, o)
    gy = p["gy"]
    ty.backward(torch.tensor(gy.transpose(0, 3, 1, 2) if o["layout"] == "NHWC" else gy))
    y = fastconv.conv_transpose2d(p["x"], p["w"], bias=p["b"], backend=engine, **o)
    close(y, back(ty.detach().numpy()), p["dtype"], "forward")
    g = fastconv.conv_transpose2d_backward(gy, p["x"], p["w"], backend=engine, **o)
    close(g.x, back(tx.grad.numpy()), p["dtype"], "grad x")
    tw_grad = tw.grad.numpy()
    w_back = tw_grad.transpose(2, 3, 1, 0) if o["layout"] == "NHWC" else tw_grad
    assert_close(g.w, w_back, p["dtype"], "grad w")  # every engine's own, or direct's
    assert_close(g.b, tb.grad.numpy(), p["dtype"], "grad b")


@pytest.mark.parametrize("engine", ALL_ENGINES + ("auto",))
@pytest.mark.parametrize("seed", range(25))
def test_matches_torch_autograd(engine, seed):
    _check_against_torch(random_transposed(1000 + seed), engine)


@pytest.mark.parametrize("seed", range(10))
def test_winograd_matches_torch_autograd(seed):
    p = random_transposed(2000 + seed)
    rng = np.random.default_rng(seed)
    o = dict(p["opts"], stride=1, dilation=1, output_padding=0, pad=int(rng.integers(0, 2)))
    nhwc = o["layout"] == "NHWC"
    C_in, Cgo = (p["w"].shape[3], p["w"].shape[2]) if nhwc else p["w"].shape[:2]
    p["w"] = rng.standard_normal((3, 3, Cgo, C_in) if nhwc else (C_in, Cgo, 3, 3)
                                 ).astype(p["dtype"])
    p["gy"] = rng.standard_normal(fastconv.output_shape(p["x"], p["w"], transposed=True, **o)
                                  ).astype(p["dtype"])
    p["opts"] = o
    _check_against_torch(p, "winograd", wino_close)


@pytest.mark.parametrize("engine", ALL_ENGINES + ("auto",))
@pytest.mark.parametrize("layout", ["NCL", "NLC"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_conv_transpose1d_matches_torch_autograd(engine, layout, dtype):
    rng = np.random.default_rng(5)
    for stride, pad, op, dilation, groups, N in [(2, 1, 1, 1, 2, 1), (3, 0, 2, 2, 1, 2),
                                                 (1, 2, 1, 3, 3, 3), (4, 3, 3, 1, 1, 1)]:
        x = rng.standard_normal((N, 6, 9)).astype(dtype)
        w = rng.standard_normal((6, 6 // groups, 4)).astype(dtype)
        b = rng.standard_normal(6).astype(dtype)
        tx, tw, tb = (torch.tensor(a, requires_grad=True) for a in (x, w, b))
        ty = torch.nn.functional.conv_transpose1d(tx, tw, tb, stride=stride, padding=pad,
                                                  output_padding=op, dilation=dilation,
                                                  groups=groups)
        gy = rng.standard_normal(ty.shape).astype(dtype)
        ty.backward(torch.tensor(gy))
        nlc = layout == "NLC"
        t = (lambda a: a.transpose(0, 2, 1)) if nlc else (lambda a: a)
        wl = w.transpose(2, 1, 0) if nlc else w
        kw = dict(output_padding=op, dilation=dilation, groups=groups, layout=layout,
                  backend=engine)
        y = fastconv.conv_transpose1d(t(x), wl, stride, pad, bias=b, **kw)
        assert_close(t(y), ty.detach().numpy(), dtype, "forward")
        g = fastconv.conv_transpose1d_backward(t(gy), t(x), wl, stride, pad, **kw)
        assert_close(t(g.x), tx.grad.numpy(), dtype, "grad x")
        assert_close(g.w.transpose(2, 1, 0) if nlc else g.w, tw.grad.numpy(), dtype, "grad w")
        assert_close(g.b, tb.grad.numpy(), dtype, "grad b")


SIZES, STRIDES, PADS, DILATIONS, OUTPUT_PADDINGS, KERNELS = (
    (1, 2, 5), (1, 2, 3), (0, 1, 2), (1, 2), (0, 1, 2), ((1, 2), (3, 4)))


def test_output_size_formula_matches_torch_on_a_grid():
    """Every combination: the same output shape as nn.ConvTranspose2d, from output_shape
    and from the call itself, or a ValueError where PyTorch refuses the combination."""
    compared = refused = 0
    for H, s, p, d, op, (R, S) in itertools.product(SIZES, STRIDES, PADS, DILATIONS,
                                                    OUTPUT_PADDINGS, KERNELS):
        x = np.zeros((1, 1, H, H + 1))
        w = np.zeros((1, 2, R, S))
        opts = dict(stride=(s, s + 1), pad=p, dilation=d, output_padding=(op, op))
        layer = torch.nn.ConvTranspose2d(1, 2, (R, S), stride=(s, s + 1), padding=p,
                                         dilation=d, output_padding=(op, op))
        try:
            expected = tuple(layer(torch.zeros(1, 1, H, H + 1)).shape)
        except RuntimeError:  # output_padding too large, or no output left
            refused += 1
            with pytest.raises(ValueError, match="output_padding must be smaller|crops more"):
                fastconv.output_shape(x, w, transposed=True, **opts)
            with pytest.raises(ValueError, match="output_padding must be smaller|crops more"):
                fastconv.conv_transpose2d(x, w, **opts)
            continue
        compared += 1
        assert fastconv.output_shape(x, w, transposed=True, **opts) == expected, (H, opts)
        assert fastconv.conv_transpose2d(x, w, **opts).shape == expected
    assert compared > 150 and refused > 100  # both sides of the rule were exercised


def test_layer_initialisation_uses_pytorchs_fan_in():
    """nn.ConvTranspose2d's fan_in (torch.nn.init._calculate_fan_in_and_fan_out on its
    weight) is the one whose 1/sqrt bounds the layer's weights and bias."""
    for cin, cout, k, groups in ((6, 4, 3, 1), (8, 12, (2, 5), 4), (3, 9, 4, 3)):
        ref = torch.nn.ConvTranspose2d(cin, cout, k, groups=groups)
        fan_in, _ = torch.nn.init._calculate_fan_in_and_fan_out(ref.weight)
        ours = fastconv.ConvTranspose2d(cin, cout, k, groups=groups, dtype=np.float64, rng=0)
        assert ours.weight.shape == tuple(ref.weight.shape)
        bound = 1 / np.sqrt(fan_in)
        assert np.abs(ours.weight).max() <= bound and np.abs(ours.bias).max() <= bound
        assert np.abs(ours.weight).max() > 0.8 * bound  # uniform on the whole interval
        assert np.abs(ref.weight.detach().numpy()).max() <= bound
