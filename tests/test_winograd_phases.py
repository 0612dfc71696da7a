"""The Winograd engine on strided layers through their stride phases (fastconv/_phases.py):
the plan, forward and grad_input against the reference (conv2d's passes and the
transposed convolution's, whose forward is a strided grad_input), every SIMD variant,
the finite-only check, and what the engine refuses.

Tolerances are test_winograd.py's: float64 within 1e-12 of the largest reference value;
float32 within 1e-5 Frobenius and 1e-4 of the largest value.
"""
from __future__ import annotations

import os
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fastconv
from fastconv import _phases
from fastconv import _validate as v
from fastconv.engines import reference, winograd, winograd_twin

sys.path.insert(0, os.path.dirname(__file__))
from conftest import run_in_simd_variant  # noqa: E402
from test_winograd import assert_close  # noqa: E402


def _geometry(N, C, H, W, K, R, S, stride, pad, groups=1, layout="NCHW", dilation=1):
    xs = (N, C, H, W) if layout == "NCHW" else (N, H, W, C)
    ws = (K, C // groups, R, S) if layout == "NCHW" else (R, S, C // groups, K)
    return v.geometry(xs, ws, stride, pad, dilation, groups, v.layout_code(layout))


def _arrays(rng, g, dtype):
    x = rng.standard_normal(g.x_shape).astype(dtype)
    w = rng.standard_normal(g.w_shape).astype(dtype)
    b = rng.standard_normal(g.K).astype(dtype)
    gy = rng.standard_normal(g.y_shape).astype(dtype)
    return x, w, b, gy


def test_plan_of_dcgan_filters():
    # 4x4, stride 2, pad 1: phase 0 reads taps 3, 1 (window taps -1, 0 of the padded
    # filter's 0, 2, 4 -> zero, 1, 3 shifted by one), phase 1 taps 2, 0
    p = _phases.plan(_geometry(1, 4, 8, 8, 4, 4, 4, 2, 1))
    assert p.rows == p.cols == _phases.AxisPlan(th=1, before=1, after=1, rb=0)
    assert _phases.multiplies_saved(_geometry(1, 4, 8, 8, 4, 4, 4, 2, 1), 4) == pytest.approx(16 / 9)


def test_padded_filters_hold_every_tap_once_where_the_windows_read_it():
    g = _geometry(1, 2, 8, 8, 3, 4, 4, 2, 1)
    p = _phases.plan(g)
    w = np.arange(np.prod(g.w_shape), dtype=np.float64).reshape(g.w_shape) + 1
    wp = _phases.pad_filters(w, p, False)
    seen = []
    for a in range(2):
        for u in range(3):
            r = p.rows.rb + a + 2 * u
            seen.append(r)
            tap = 2 * (u - p.rows.th) + a + 1  # the unpadded tap that window tap reads
            if 0 <= tap < 4:
                np.testing.assert_array_equal(wp[:, :, r, p.cols.before:-p.cols.after],
                                              w[:, :, tap])
            else:
                assert not wp[:, :, r].any()
    assert sorted(seen) == list(range(6))


@pytest.mark.parametrize("kw, why", [
    (dict(R=4, S=4, stride=2, pad=1, H=7, W=8), "odd H"),
    (dict(R=7, S=7, stride=2, pad=3, H=8, W=8), "windows of 4 taps"),
    (dict(R=4, S=4, stride=2, pad=1, H=8, W=8, dilation=2), "dilation"),
    (dict(R=2, S=2, stride=1, pad=0, H=8, W=8), "stride 1"),
])
def test_plan_refuses(kw, why):
    H, W = kw.pop("H"), kw.pop("W")
    R, S = kw.pop("R"), kw.pop("S")
    g = _geometry(1, 2, H, W, 2, R, S, **kw)
    assert _phases.plan(g) is None, why
    x, w, _, gy = _arrays(np.random.default_rng(0), g, np.float64)
    with pytest.raises(ValueError, match="stride phases are 3x3 windows"):
        winograd.forward(x, w, None, g)


cases = st.tuples(
    st.integers(1, 3),                           # N
    st.integers(1, 4), st.integers(1, 4),        # channels and filters per group
    st.integers(1, 2),                           # groups
    st.sampled_from([(4, 2, 1), (4, 2, 0), (4, 2, 2), (3, 2, 1), (2, 2, 0), (5, 2, 2),
                     (6, 3, 1), (6, 3, 2), (3, 3, 0), (1, 2, 0), (3, 1, 1)]),  # R, s, pad
    st.sampled_from([(4, 2, 1), (3, 2, 1), (2, 2, 0), (3, 1, 0), (6, 3, 2)]),  # S, s, pad
    st.integers(1, 6), st.integers(1, 6),         # H, W in strides
    st.sampled_from(["NCHW", "NHWC"]),
    st.sampled_from([np.float32, np.float64]),
)


@settings(max_examples=80, deadline=None)
@given(cases, st.integers(0, 2**32 - 1))
def test_forward_and_grad_input_match_reference(case, seed):
    N, Cg, Kg, groups, (R, sh, ph), (S, sw, pw), hh, ww, layout, dtype = case
    H, W = hh * sh, ww * sw
    if (H + 2 * ph - R) < 0 or (W + 2 * pw - S) < 0 or (sh == sw == 1):
        return
    g = _geometry(N, Cg * groups, H, W, Kg * groups, R, S, (sh, sw), (ph, pw), groups,
                  layout)
    assert winograd.takes(g)
    x, w, b, gy = _arrays(np.random.default_rng(seed), g, dtype)
    x0, w0, gy0 = x.copy(), w.copy(), gy.copy()
    y_ref, gx_ref = reference.forward(x, w, b, g), reference.grad_input(gy, w, g)
    assert_close(winograd.forward(x, w, b, g), y_ref, dtype, "y")
    assert_close(winograd.grad_input(gy, w, g), gx_ref, dtype, "gx")
    assert_close(winograd_twin.forward(x, w, b, g), y_ref, dtype, "twin y")
    assert_close(winograd_twin.grad_input(gy, w, g), gx_ref, dtype, "twin gx")
    for a, a0 in ((x, x0), (w, w0), (gy, gy0)):
        np.testing.assert_array_equal(a, a0)


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_transposed_dcgan_layer_through_phases(layout, dtype):
    # a DCGAN up-sampling layer, 4x4 filters at stride 2 pad 1, every pass
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 16, 5, 6) if layout == "NCHW" else (2, 5, 6, 16)).astype(dtype)
    w = rng.standard_normal((16, 8, 4, 4) if layout == "NCHW" else (4, 4, 8, 16)).astype(dtype)
    b = rng.standard_normal(8).astype(dtype)
    kw = dict(stride=2, pad=1, layout=layout)
    y = fastconv.conv_transpose2d(x, w, bias=b, backend="winograd", **kw)
    yr = fastconv.conv_transpose2d(x, w, bias=b, backend="reference", **kw)
    assert y.shape == yr.shape == ((2, 8, 10, 12) if layout == "NCHW" else (2, 10, 12, 8))
    assert_close(y, yr, dtype, "y")
    gy = rng.standard_normal(y.shape).astype(dtype)
    g = fastconv.conv_transpose2d_backward(gy, x, w, backend="winograd", **kw)
    gr = fastconv.conv_transpose2d_backward(gy, x, w, backend="reference", **kw)
    for name in "xwb":
        assert_close(getattr(g, name), getattr(gr, name), dtype, name)


def test_transposed_output_padding_that_breaks_the_phases_is_refused():
    x, w = np.zeros((1, 4, 5, 5)), np.zeros((4, 4, 4, 4))
    with pytest.raises(ValueError, match="stride phases"):
        fastconv.conv_transpose2d(x, w, 2, 1, output_padding=1, backend="winograd")
    y = fastconv.conv_transpose2d(x, w, 2, 1, output_padding=1)  # auto takes another engine
    assert y.shape == (1, 4, 11, 11)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
@pytest.mark.parametrize("where", ["x", "w"])
def test_finite_only_returns_none_on_a_non_finite_value(bad, where):
    g = _geometry(2, 6, 8, 8, 5, 4, 4, 2, 1)
    x, w, b, gy = _arrays(np.random.default_rng(5), g, np.float32)
    (x if where == "x" else w).flat[7] = bad
    assert winograd.forward(x, w, b, g, finite_only=True) is None
    if where == "w":
        assert winograd.grad_input(gy, w, g, finite_only=True) is None
    gy.flat[3] = bad
    assert winograd.grad_input(gy, w, g, finite_only=True) is None
    # without the check the value spreads through its tiles: the exact engine is needed
    assert np.isnan(winograd.forward(x, w, b, g)).any()


def test_central_differences_float64():
    # grad_input of the phase path is the adjoint of its forward: <gy, A x> = <A^T gy, x>
    rng = np.random.default_rng(6)
    g = _geometry(2, 3, 6, 8, 4, 4, 4, 2, 1)
    x, w, _, gy = _arrays(rng, g, np.float64)
    lhs = np.vdot(gy, winograd.forward(x, w, None, g))
    rhs = np.vdot(winograd.grad_input(gy, w, g), x)
    assert abs(lhs - rhs) <= 1e-12 * abs(lhs)
    eps, i = 1e-6, (1, 2, 3, 5)
    xp, xm = x.copy(), x.copy()
    xp[i] += eps
    xm[i] -= eps
    num = (np.vdot(gy, winograd.forward(xp, w, None, g))
           - np.vdot(gy, winograd.forward(xm, w, None, g))) / (2 * eps)
    assert num == pytest.approx(winograd.grad_input(gy, w, g)[i], rel=1e-7)


@pytest.mark.parametrize("variant", ["avx512", "avx2", "baseline"])
def test_simd_variant_matches_reference(variant):
    code = f"""
import sys; sys.path.insert(0, {os.path.dirname(__file__)!r})
import numpy as np
from fastconv import _direct
from test_winograd_phases import _geometry, _arrays
from test_winograd import assert_close
from fastconv.engines import reference, winograd
assert _direct.simd_info()["simd"] == {variant!r}
rng = np.random.default_rng(12)
for args in [(2, 5, 8, 10, 7, 4, 4, 2, 1), (1, 24, 12, 6, 40, 4, 3, (2, 2), (1, 1)),
             (3, 3, 9, 9, 2, 6, 6, 3, 2)]:
    for layout in ("NCHW", "NHWC"):
        for dtype in (np.float32, np.float64):
            g = _geometry(*args, layout=layout)
            x, w, b, gy = _arrays(rng, g, dtype)
            assert_close(winograd.forward(x, w, b, g), reference.forward(x, w, b, g), dtype)
            assert_close(winograd.grad_input(gy, w, g), reference.grad_input(gy, w, g), dtype)
print("ok", {variant!r})
"""
    run_in_simd_variant(variant, code)


PHASE_CHOICES = {"dcgan_up8": False,   # 64 tiles: the products starve (_dispatch)
                 "dcgan_up16": True, "dcgan_up32": True,
                 "dcgan_up64": False,  # into 3 channels
                 "unet_up": False,     # 2x2 / 2: one tap a phase, nothing saved
                 "fcn_up16": "forward",  # 256 phases of 21 channels: the forward only
                 "dcgan_project": False}


@pytest.mark.parametrize("name", sorted(PHASE_CHOICES))
def test_auto_takes_phases_where_they_were_measured_to_win(name):
    from fastconv.suite import DECODER_LAYERS
    L = DECODER_LAYERS[name]
    g = v.transposed_geometry(L.x_shape, L.w_shape, L.stride, L.pad, 0, 1, 1, 0)
    want = PHASE_CHOICES[name]
    # the transposed forward is the convolution's grad_input, and its grad_input the forward
    want_fwd, want_gi = (True, False) if want == "forward" else (want, want)
    for simd in ("avx2", "avx512"):
        c = fastconv.choose_backend(g, np.float32, 2, simd=simd, precision="high")
        assert (c["grad_input"] == "winograd") == want_fwd
        # with AVX-512 the convolution's forward stays exact (_dispatch, 2026-12-08)
        assert (c["forward"] == "winograd") == (want_gi is True and simd != "avx512")
        assert c["grad_weight"] != "winograd"
        assert "winograd" not in fastconv.choose_backend(g, np.float64, 2, simd=simd).values()
        assert "winograd" not in fastconv.choose_backend(g, np.float32, 2, simd=simd,
                                                         precision="highest").values()


def test_strided_3x3_layers_keep_the_exact_engines():
    # 3x3 at stride 2: four phases of 1, 2, 2 and 4 taps, 9 multiplies in all against
    # 9 x 36 / 16 through the windows: nothing saved
    g = _geometry(8, 128, 56, 56, 128, 3, 3, 2, 1)
    assert _phases.plan(g) is not None
    assert "winograd" not in fastconv.choose_backend(g, np.float32, 2, precision="high").values()


def test_layer_keeps_the_phases_transformed_filters_until_the_weights_change():
    from fastconv import _direct
    layer = fastconv.ConvTranspose2d(64, 64, 4, stride=2, pad=1, rng=2)
    x = np.random.default_rng(7).standard_normal((16, 64, 16, 16)).astype(np.float32)
    g = v.transposed_geometry(x.shape, layer.weight.shape, 2, 1, 0, 1, 1, 0)
    assert fastconv.choose_backend(g, np.float32, fastconv.get_num_threads())["grad_input"] \
        == "winograd"  # 16 x 16 tiles of 4 x 4 over 16 images: the phases
    expected = fastconv.conv_transpose2d(x, layer.weight, 2, 1, bias=layer.bias)
    first = layer(x, record=False)
    kept = _direct._packs_info(layer._packs)
    assert kept[0] == 1 and kept[1] >= 36 * 64 * 4 * 64 * 4  # U: 36 x (4 x 64) x 64
    np.testing.assert_array_equal(first, expected)
    np.testing.assert_array_equal(layer(x, record=False), expected)
    assert _direct._packs_info(layer._packs) == kept  # found, not transformed again
    layer.weight[...] *= -1
    layer.weight_changed()
    np.testing.assert_array_equal(layer(x, record=False),
                                  fastconv.conv_transpose2d(x, layer.weight, 2, 1,
                                                            bias=layer.bias))


@pytest.mark.parametrize("R, stride, pad", [(1, 2, 10), (2, 2, 9), (4, 8, 20)])
def test_pads_far_beyond_the_filter(R, stride, pad):
    # windows whose taps all lie many strides away: once a search over t in [-R, R]
    # found none and plan() raised a bare "min() arg is an empty sequence"
    g = _geometry(2, 3, 8 * stride, 8 * stride, 4, R, R, stride, pad)
    assert _phases.plan(g) is not None
    x, w, b, gy = _arrays(np.random.default_rng(R), g, np.float64)
    assert_close(winograd.forward(x, w, b, g), reference.forward(x, w, b, g), np.float64)
    assert_close(winograd.grad_input(gy, w, g), reference.grad_input(gy, w, g), np.float64)
