"""conv_transpose2d and conv_transpose1d without PyTorch: against a scatter loop, the
reference engine and central finite differences; every engine, the dispatch per pass,
the API's contract and every validation error. (PyTorch as the oracle:
test_transpose_torch.py.)

Tolerances: conftest's RTOL (float32 2e-4, float64 1e-10, of the largest reference
magnitude and at least 1) for the exact engines; the Winograd engine's stated bounds
(test_winograd.py, the README: float64 1e-12 of the largest reference value; float32
1e-5 in Frobenius norm and 1e-4 of the largest value) where it computes a pass.
"""
import numpy as np
import pytest
from conftest import ALL_ENGINES, FAST_ENGINES, assert_close
from hypothesis import given
from hypothesis import strategies as st

import fastconv
from fastconv import _validate as v

DTYPES = (np.float32, np.float64)
EPS = 1e-6  # finite-difference step, as in test_gradcheck.py
F64_TOL, F32_FRO, F32_MAX = 1e-12, 1e-5, 1e-4


def wino_close(y, ref, dtype, what=""):
    y, ref = np.asarray(y, np.float64), np.asarray(ref, np.float64)
    assert y.shape == ref.shape, (what, y.shape, ref.shape)
    mx = np.abs(y - ref).max() / max(np.abs(ref).max(), 1e-300)
    if np.dtype(dtype) == np.float64:
        assert mx <= F64_TOL, (what, mx)
    else:
        fro = np.linalg.norm(y - ref) / max(np.linalg.norm(ref), 1e-300)
        assert fro <= F32_FRO and mx <= F32_MAX, (what, fro, mx)


def scatter(x, w, stride, pads, output_padding, dilation, groups):
    """The definition, NCHW, float64: every input pixel adds w times its value into the
    output, stride apart; the full output is then cropped by the pads."""
    N, C_in, H, W = x.shape
    _, Cgo, R, S = w.shape
    (sh, sw), (dh, dw), (oh, ow) = stride, dilation, output_padding
    pt, pb, pl, pr = pads
    Hf, Wf = (H - 1) * sh + dh * (R - 1) + 1 + oh, (W - 1) * sw + dw * (S - 1) + 1 + ow
    y = np.zeros((N, Cgo * groups, Hf, Wf))
    Cgi = C_in // groups
    for c in range(C_in):
        out = slice(c // Cgi * Cgo, (c // Cgi + 1) * Cgo)
        for r in range(R):
            for s in range(S):
                rows = slice(r * dh, r * dh + (H - 1) * sh + 1, sh)
                cols = slice(s * dw, s * dw + (W - 1) * sw + 1, sw)
                y[:, out, rows, cols] += (x[:, c, None].astype(np.float64)
                                          * w[c, :, r, s, None, None])
    return y[:, :, pt:Hf - pb, pl:Wf - pr]


def sides(pad):
    """Any numeric pad form as (top, bottom, left, right)."""
    return v.pad_sides(pad, (1, 1), (1, 1), (1, 1), (1, 1))


def random_pad(rng):
    form = rng.integers(3)
    if form == 0:
        return int(rng.integers(0, 3))
    if form == 1:
        return (int(rng.integers(0, 3)), int(rng.integers(0, 3)))
    return tuple((int(rng.integers(0, 3)), int(rng.integers(0, 3))) for _ in range(2))


def random_transposed(seed: int, nhwc=None, dtype=None):
    """A random, valid transposed convolution covering every option, as arrays and the
    keyword arguments: N 1..3 (1 in 40%), groups 1..3 or depthwise, C_in/groups 1..4,
    C_out/groups 1..3, R and S 1..5 independently, stride 1..4 per axis, dilation 1..3
    per axis (40%), output_padding below stride or dilation, every numeric pad form,
    both layouts, both dtypes, H and W 1..7."""
    rng = np.random.default_rng(seed)
    while True:
        layout = ("NCHW", "NHWC")[rng.integers(2)] if nhwc is None else (
            "NHWC" if nhwc else "NCHW")
        dt = (np.float32, np.float64)[rng.integers(2)] if dtype is None else dtype
        N = 1 if rng.random() < 0.4 else int(rng.integers(2, 4))
        if rng.random() < 0.2:  # depthwise
            groups, Cgi, Cgo = int(rng.integers(2, 6)), 1, 1
        else:
            groups = int(rng.integers(1, 4))
            Cgi, Cgo = int(rng.integers(1, 5)), int(rng.integers(1, 4))
        C_in, C_out = Cgi * groups, Cgo * groups
        R, S = int(rng.integers(1, 6)), int(rng.integers(1, 6))
        H, W = int(rng.integers(1, 8)), int(rng.integers(1, 8))
        stride = (int(rng.integers(1, 5)), int(rng.integers(1, 5)))
        dilation = ((int(rng.integers(1, 4)), int(rng.integers(1, 4)))
                    if rng.random() < 0.4 else (1, 1))
        op = tuple(int(rng.integers(0, max(s, d))) for s, d in zip(stride, dilation))
        pad = random_pad(rng)
        x_shape = (N, H, W, C_in) if layout == "NHWC" else (N, C_in, H, W)
        w_shape = (R, S, Cgo, C_in) if layout == "NHWC" else (C_in, Cgo, R, S)
        opts = dict(stride=stride, pad=pad, output_padding=op, dilation=dilation,
                    groups=groups, layout=layout)
        try:
            y_shape = fastconv.output_shape(x_shape, w_shape, transposed=True, **opts)
        except ValueError:
            continue  # the pads crop the whole output; draw again
        x = rng.standard_normal(x_shape).astype(dt)
        w = rng.standard_normal(w_shape).astype(dt)
        b = rng.standard_normal(C_out).astype(dt)
        gy = rng.standard_normal(y_shape).astype(dt)
        return dict(x=x, w=w, b=b, gy=gy, dtype=dt, opts=opts, flip=bool(rng.random() < 0.3))


def to_nchw(p):
    """(x, w) of a problem in NCHW/PyTorch terms, and a function taking NCHW results
    back to the problem's layout."""
    x, w = p["x"], p["w"]
    if p["opts"]["layout"] == "NHWC":
        return (x.transpose(0, 3, 1, 2), w.transpose(3, 2, 0, 1),
                lambda a: a.transpose(0, 2, 3, 1))
    return x, w, lambda a: a


# --- values ---------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(30))
def test_every_engine_matches_the_scatter_loop(seed):
    p = random_transposed(seed)
    x, w, back = to_nchw(p)
    o = p["opts"]
    expected = scatter(x, w, o["stride"], sides(o["pad"]), o["output_padding"],
                       o["dilation"], o["groups"]) + p["b"][:, None, None]
    for engine in ALL_ENGINES + ("auto",):
        y = fastconv.conv_transpose2d(p["x"], p["w"], bias=p["b"], backend=engine, **o)
        assert_close(y, back(expected), p["dtype"], f"{engine} forward")


@pytest.mark.parametrize("engine", FAST_ENGINES + ("auto",))
@pytest.mark.parametrize("seed", range(30))
def test_engines_match_the_reference_in_every_pass(engine, seed):
    p = random_transposed(100 + seed)
    kw = dict(p["opts"], flip=p["flip"])
    ref = fastconv.conv_transpose2d(p["x"], p["w"], bias=p["b"], backend="reference", **kw)
    y = fastconv.conv_transpose2d(p["x"], p["w"], bias=p["b"], backend=engine, **kw)
    assert_close(y, ref, p["dtype"], "forward")
    g_ref = fastconv.conv_transpose2d_backward(p["gy"], p["x"], p["w"], backend="reference", **kw)
    g = fastconv.conv_transpose2d_backward(p["gy"], p["x"], p["w"], backend=engine, **kw)
    for name in ("x", "w", "b"):
        assert_close(getattr(g, name), getattr(g_ref, name), p["dtype"], f"grad {name}")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_output_padding_at_or_above_the_stride(dtype, layout):
    """output_padding >= stride (allowed below the dilation) leaves output rows no input
    reaches: bias only. Its convolution has a negative bottom pad."""
    rng = np.random.default_rng(3)
    nhwc = layout == "NHWC"
    x = rng.standard_normal((2, 4, 5, 3) if nhwc else (2, 3, 4, 5)).astype(dtype)
    w = rng.standard_normal((3, 2, 2, 3) if nhwc else (3, 2, 3, 2)).astype(dtype)
    b = rng.standard_normal(2).astype(dtype)
    opts = dict(stride=1, pad=0, output_padding=(2, 1), dilation=3, layout=layout)
    g = v.transposed_geometry(x.shape, w.shape, 1, 0, (2, 1), 3, 1, int(nhwc))
    assert (g.pad_bottom, g.pad_right) == (-2, -1)
    xn, wn = (x.transpose(0, 3, 1, 2), w.transpose(3, 2, 0, 1)) if nhwc else (x, w)
    expected = scatter(xn, wn, (1, 1), (0, 0, 0, 0), (2, 1), (3, 3), 1) + b[:, None, None]
    back = (lambda a: a.transpose(0, 2, 3, 1)) if nhwc else (lambda a: a)
    gy = rng.standard_normal(expected.shape).astype(dtype)
    gy = back(gy)
    g_ref = fastconv.conv_transpose2d_backward(gy, x, w, backend="reference", **opts)
    for engine in ALL_ENGINES + ("auto",):
        y = fastconv.conv_transpose2d(x, w, bias=b, backend=engine, **opts)
        assert_close(y, back(expected), dtype, engine)
        gr = fastconv.conv_transpose2d_backward(gy, x, w, backend=engine, **opts)
        for name in ("x", "w", "b"):
            assert_close(getattr(gr, name), getattr(g_ref, name), dtype, f"{engine} {name}")
    # the last two rows and the last column: bias only
    yn = fastconv.conv_transpose2d(xn, wn, bias=b, stride=1, output_padding=(2, 1), dilation=3)
    assert np.array_equal(yn[:, :, -2:], np.broadcast_to(b[:, None, None], yn[:, :, -2:].shape))
    assert np.array_equal(yn[..., -1], np.broadcast_to(b[:, None], yn[..., -1].shape))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("seed", range(6))
def test_it_is_the_input_gradient_of_conv2d(dtype, seed):
    """The principle, checked from outside: conv_transpose2d is conv2d_backward's input
    gradient, its input gradient conv2d's forward, its weight gradient conv2d's with the
    roles swapped, on the convolution whose input has the transposed output's shape."""
    p = random_transposed(200 + seed, dtype=dtype)
    o = dict(p["opts"])
    op = o.pop("output_padding")
    if any(a >= s for a, s in zip(op, o["stride"])):
        return  # that convolution would have more outputs than x has pixels
    x, w, gy = p["x"], p["w"], p["gy"]
    y = fastconv.conv_transpose2d(x, w, output_padding=op, **o)
    as_conv = fastconv.conv2d_backward(x, np.zeros_like(gy), w, **o)
    assert_close(y, as_conv.x, dtype, "forward")
    g = fastconv.conv_transpose2d_backward(gy, x, w, output_padding=op, **o)
    assert_close(g.x, fastconv.conv2d(gy, w, **o), dtype, "grad x")
    assert_close(g.w, fastconv.conv2d_backward(x, gy, w, **o).w, dtype, "grad w")
    assert_close(g.b, gy.sum(axis=(0, 1, 2) if o["layout"] == "NHWC" else (0, 2, 3)), dtype)


FD_CASES = [
    dict(stride=2, pad=1, output_padding=1),
    dict(stride=(3, 1), pad=((0, 2), (1, 0)), dilation=(1, 2), output_padding=(2, 1)),
    dict(stride=2, pad=(1, 0), groups=2, layout="NHWC", flip=True),
    dict(stride=1, pad=0, dilation=3, output_padding=2),  # output_padding >= stride
    dict(stride=(4, 2), pad=(2, 1), groups=4, layout="NHWC"),  # depthwise
]


def _fd_shapes(opts):
    groups = opts.get("groups", 1)
    C_in, C_out = (4, 4) if groups == 4 else (2 * groups, 3 * groups)
    nhwc = opts.get("layout") == "NHWC"
    x = (2, 4, 3, C_in) if nhwc else (2, C_in, 4, 3)
    w = (3, 2, C_out // groups, C_in) if nhwc else (C_in, C_out // groups, 3, 2)
    return x, w, C_out


def _numeric_grad(f, a, idx):
    a_plus, a_minus = a.copy(), a.copy()
    a_plus[idx] += EPS
    a_minus[idx] -= EPS
    return (f(a_plus) - f(a_minus)) / (2 * EPS)


def _check_fd(engine, opts, x, w, b, rng):
    """Every gradient entry (a sample of the larger arrays) against central differences
    of L = sum(grad_y * conv_transpose2d(x, w, b)), in float64: L is linear in each
    argument, so only rounding remains and rtol 1e-6 is strict (test_gradcheck.py)."""
    shape_opts = {k: a for k, a in opts.items() if k != "flip"}
    gy = rng.standard_normal(fastconv.output_shape(x, w, transposed=True, **shape_opts))

    def loss(x_, w_, b_):
        return float(np.sum(gy * fastconv.conv_transpose2d(x_, w_, bias=b_, backend=engine,
                                                           **opts)))

    g = fastconv.conv_transpose2d_backward(gy, x, w, backend=engine, **opts)
    for name, arr, grad, f in (("x", x, g.x, lambda a: loss(a, w, b)),
                               ("w", w, g.w, lambda a: loss(x, a, b)),
                               ("b", b, g.b, lambda a: loss(x, w, a))):
        flat = range(arr.size) if arr.size <= 100 else rng.choice(arr.size, 50, replace=False)
        for i in flat:
            idx = np.unravel_index(i, arr.shape)
            num = _numeric_grad(f, arr, idx)
            assert np.isclose(grad[idx], num, rtol=1e-6, atol=1e-7), (name, idx, grad[idx], num)


@pytest.mark.parametrize("engine", ALL_ENGINES)
@pytest.mark.parametrize("opts", FD_CASES, ids=lambda o: ",".join(f"{k}={a}" for k, a in o.items()))
def test_gradients_match_finite_differences(engine, opts):
    rng = np.random.default_rng(7)
    x_shape, w_shape, C_out = _fd_shapes(opts)
    x, w, b = (rng.standard_normal(s) for s in (x_shape, w_shape, (C_out,)))
    _check_fd(engine, opts, x, w, b, rng)


@pytest.mark.parametrize("opts", [dict(pad=1), dict(pad=((0, 2), (1, 0)), groups=2),
                                  dict(pad=2, layout="NHWC", flip=True)],
                         ids=lambda o: ",".join(f"{k}={a}" for k, a in o.items()))
def test_winograd_gradients_match_finite_differences(opts):
    rng = np.random.default_rng(8)
    groups, nhwc = opts.get("groups", 1), opts.get("layout") == "NHWC"
    C_in, C_out = 2 * groups, 3 * groups
    x = rng.standard_normal((2, 5, 4, C_in) if nhwc else (2, C_in, 5, 4))
    Cgo = C_out // groups
    w = rng.standard_normal((3, 3, Cgo, C_in) if nhwc else (C_in, Cgo, 3, 3))
    _check_fd("winograd", opts, x, w, rng.standard_normal(C_out), rng)


# --- engines and the dispatcher -------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("seed", range(8))
def test_winograd_runs_3x3_stride_1(dtype, seed):
    """backend="winograd" on the shapes it takes: every pass, against the reference."""
    p = random_transposed(300 + seed, dtype=dtype)
    rng = np.random.default_rng(seed)
    o = dict(p["opts"], stride=1, dilation=1, output_padding=0)
    nhwc = o["layout"] == "NHWC"
    C_in, Cgo = (p["w"].shape[3], p["w"].shape[2]) if nhwc else p["w"].shape[:2]
    w = rng.standard_normal((3, 3, Cgo, C_in) if nhwc else (C_in, Cgo, 3, 3)).astype(dtype)
    t, b_, l, r = (min(a, 1) for a in sides(o["pad"]))  # at most 1: the output stays >= H
    o["pad"] = ((t, b_), (l, r))
    x = p["x"]
    gy = rng.standard_normal(fastconv.output_shape(x, w, transposed=True, **o)).astype(dtype)
    ref = fastconv.conv_transpose2d(x, w, bias=p["b"], backend="reference", **o)
    wino_close(fastconv.conv_transpose2d(x, w, bias=p["b"], backend="winograd", **o), ref,
               dtype, "forward")
    g_ref = fastconv.conv_transpose2d_backward(gy, x, w, backend="reference", **o)
    g = fastconv.conv_transpose2d_backward(gy, x, w, backend="winograd", **o)
    wino_close(g.x, g_ref.x, dtype, "grad x")
    assert_close(g.w, g_ref.w, dtype, "grad w")  # the direct engine's
    assert_close(g.b, g_ref.b, dtype, "grad b")


@pytest.mark.parametrize("opts", [dict(stride=2), dict(dilation=2),
                                  dict(output_padding=1, stride=3)])  # 16 rows: no phases
def test_winograd_refuses_what_it_does_not_take(opts, rng):
    x, w = rng.standard_normal((1, 2, 5, 5)), rng.standard_normal((2, 3, 3, 3))
    gy = np.ones(fastconv.output_shape(x, w, transposed=True, **opts))
    msg = "backend='winograd' takes 3x3 filters at stride 1 and dilation 1"
    with pytest.raises(ValueError, match=msg):
        fastconv.conv_transpose2d(x, w, backend="winograd", **opts)
    for wrt in ("x", "w"):
        with pytest.raises(ValueError, match=msg):
            fastconv.conv_transpose2d_backward(gy, x, w, backend="winograd", wrt=wrt, **opts)
    with pytest.raises(ValueError, match=msg):  # 4x4 filters, as conv2d refuses them
        fastconv.conv_transpose2d(x, np.ones((2, 3, 4, 4)), backend="winograd")


def test_auto_chooses_each_pass_as_for_the_convolution_pass_it_runs(monkeypatch, rng):
    """The dispatcher sees the convolution's geometry and the convolution pass that
    computes each transposed pass: forward -> grad_input, grad_input -> forward,
    grad_weight -> grad_weight."""
    from fastconv import _api

    seen = []
    real = _api.auto_engine

    def spy(g, dtype, pass_name):
        seen.append((g, pass_name))
        return real(g, dtype, pass_name)

    monkeypatch.setattr(_api, "auto_engine", spy)
    x, w = rng.standard_normal((2, 6, 5, 4)), rng.standard_normal((6, 2, 4, 3))
    opts = dict(stride=2, pad=1, output_padding=1, groups=2)
    g = v.transposed_geometry(x.shape, w.shape, 2, 1, 1, 1, 2, 0)
    y = fastconv.conv_transpose2d(x, w, **opts)
    assert seen == [(g, "grad_input")] and y.shape == g.x_shape
    seen.clear()
    for wrt, pass_name in (("x", "forward"), ("w", "grad_weight")):
        fastconv.conv_transpose2d_backward(y, x, w, wrt=wrt, **opts)
        assert seen.pop() == (g, pass_name)
    engines = fastconv.choose_backend(g, np.float64, fastconv.get_num_threads())
    assert set(engines) == {"forward", "grad_input", "grad_weight"}


def test_auto_sends_a_wide_3x3_stride_1_layer_to_winograd_and_nan_to_an_exact_engine():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, 64, 28, 28)).astype(np.float32)
    w = (rng.standard_normal((64, 64, 3, 3)) / 24).astype(np.float32)
    g = v.transposed_geometry(x.shape, w.shape, 1, 1, 0, 1, 1, 0)
    with fastconv.float32_precision("high"):
        assert fastconv.choose_backend(g, np.float32, 2)["grad_input"] == "winograd"
        assert fastconv.choose_backend(g, np.float32, 2)["forward"] == "winograd"
        y = fastconv.conv_transpose2d(x, w, 1, 1)
        ref = fastconv.conv_transpose2d(x.astype(np.float64), w.astype(np.float64), 1, 1,
                                        backend="reference")
        wino_close(y, ref, np.float32)
        xb = x.copy()
        xb[0, 5, 10, 10] = np.nan  # the exact engine runs it: NaN only where x reaches
        yb = fastconv.conv_transpose2d(xb, w, 1, 1)
    exact = fastconv.conv_transpose2d(xb, w, 1, 1, backend="direct")
    assert np.array_equal(np.isnan(yb), np.isnan(exact))
    assert np.isnan(yb).sum() == 64 * 9


def test_autotune_times_and_keeps_the_convolution_pass(tmp_path, monkeypatch):
    """With autotune on, a transposed call's first run times the candidates of its
    convolution pass and keeps the winner under that pass's key, which later calls (and
    a convolution of the same geometry) then use."""
    import json

    from fastconv import _tune

    monkeypatch.setenv("FASTCONV_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(_tune, "_loaded", None)
    monkeypatch.setattr(_tune, "_session", {})
    rng = np.random.default_rng(4)
    x = rng.standard_normal((2, 8, 6, 6)).astype(np.float32)
    w = rng.standard_normal((8, 4, 4, 4)).astype(np.float32)
    g = v.transposed_geometry(x.shape, w.shape, 2, 1, 1, 1, 1, 0)
    threads = fastconv.get_num_threads()
    with fastconv.autotune(True):
        y = fastconv.conv_transpose2d(x, w, 2, 1, output_padding=1)
        entries = json.loads((tmp_path / _tune.FILE_NAME).read_text())["entries"]
        key = _tune.entry_key(g, np.float32, threads, "grad_input")
        assert list(entries) == [key] and entries[key] in ("direct", "im2col")
        assert _tune.lookup(g, np.float32, threads, "grad_input") == entries[key]
        assert_close(y, fastconv.conv_transpose2d(x, w, 2, 1, output_padding=1,
                                                  backend="reference"), np.float32)
    monkeypatch.setattr(_tune, "_loaded", None)


# --- the API's contract ---------------------------------------------------------------


@pytest.mark.parametrize("engine", ALL_ENGINES)
def test_nhwc_is_nchw_transposed(engine, rng):
    x, w = rng.standard_normal((2, 3, 5, 4)), rng.standard_normal((3, 4, 3, 2))
    opts = dict(stride=(2, 3), pad=(1, 0), output_padding=(1, 2), backend=engine)
    y = fastconv.conv_transpose2d(x, w, **opts)
    y_nhwc = fastconv.conv_transpose2d(x.transpose(0, 2, 3, 1), w.transpose(2, 3, 1, 0),
                                       layout="NHWC", **opts)
    assert_close(y_nhwc, y.transpose(0, 2, 3, 1), np.float64)


def test_unbatched_image_and_output_shape(rng):
    x, w = rng.standard_normal((3, 5, 4)), rng.standard_normal((3, 2, 4, 4))
    y = fastconv.conv_transpose2d(x, w, 2, 1)
    assert y.shape == (2, 10, 8) == fastconv.output_shape(x, w, 2, 1, transposed=True)
    assert_close(y, fastconv.conv_transpose2d(x[None], w, 2, 1)[0], np.float64)
    g = fastconv.conv_transpose2d_backward(np.ones_like(y), x, w, 2, 1)
    assert g.x.shape == x.shape and g.w.shape == w.shape and g.b.shape == (2,)
    assert fastconv.output_shape((1, 3, 5, 4), (3, 2, 4, 4), 2, 1, transposed=True,
                                 output_padding=(1, 0)) == (1, 2, 11, 8)
    assert fastconv.output_shape((1, 5, 4, 3), (4, 4, 2, 3), 2, 1, transposed=True,
                                 layout="NHWC") == (1, 10, 8, 2)


def test_flip_flips_the_kernel(rng):
    x, w = rng.standard_normal((2, 3, 4, 5)), rng.standard_normal((3, 2, 3, 2))
    gy = rng.standard_normal(fastconv.output_shape(x, w, 2, 1, transposed=True))
    wf = w[:, :, ::-1, ::-1]
    assert_close(fastconv.conv_transpose2d(x, w, 2, 1, flip=True),
                 fastconv.conv_transpose2d(x, wf, 2, 1), np.float64)
    g = fastconv.conv_transpose2d_backward(gy, x, w, 2, 1, flip=True)
    gf = fastconv.conv_transpose2d_backward(gy, x, wf, 2, 1)
    assert_close(g.x, gf.x, np.float64)
    assert_close(g.w, gf.w[:, :, ::-1, ::-1], np.float64)


@pytest.mark.parametrize("engine", ALL_ENGINES + ("auto",))
@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_empty_batch(engine, layout):
    nhwc = layout == "NHWC"
    x = np.zeros((0, 4, 4, 3) if nhwc else (0, 3, 4, 4))
    w = np.zeros((3, 3, 5, 3) if nhwc else (3, 5, 3, 3))
    y = fastconv.conv_transpose2d(x, w, 2, 1, output_padding=1, layout=layout, backend=engine)
    assert y.shape == ((0, 8, 8, 5) if nhwc else (0, 5, 8, 8))
    g = fastconv.conv_transpose2d_backward(y, x, w, 2, 1, output_padding=1, layout=layout,
                                           backend=engine)
    assert g.x.shape == x.shape and g.w.shape == w.shape and not g.w.any() and g.b.shape == (5,)


def test_wrt_selects_gradients(rng):
    x, w = rng.standard_normal((2, 3, 4, 4)), rng.standard_normal((3, 2, 2, 2))
    gy = np.ones(fastconv.output_shape(x, w, 2, transposed=True))
    g = fastconv.conv_transpose2d_backward(gy, x, w, 2, wrt=("w",))
    assert g.x is None and g.b is None and g.w.shape == w.shape
    g = fastconv.conv_transpose2d_backward(gy, x, w, 2, wrt="b")
    assert g.x is None and g.w is None and np.array_equal(g.b, np.full(2, 2 * 8 * 8.0))
    assert isinstance(g, fastconv.ConvGrads)


@pytest.mark.parametrize("x_dtype,w_dtype,expected", [
    (np.float32, np.float32, np.float32), (np.float32, np.float64, np.float64),
    (np.float16, np.float32, np.float32), (np.int32, np.float32, np.float64),
    (np.bool_, np.float64, np.float64)])
def test_dtype_promotion(x_dtype, w_dtype, expected, rng):
    x = (rng.standard_normal((1, 2, 4, 4)) * 3).astype(x_dtype)
    w = (rng.standard_normal((2, 3, 3, 3)) * 3).astype(w_dtype)
    y = fastconv.conv_transpose2d(x, w, 2, 1)
    assert y.dtype == expected
    ref = fastconv.conv_transpose2d(x.astype(np.float64), w.astype(np.float64), 2, 1,
                                    backend="reference")
    assert_close(y, ref, expected)
    g = fastconv.conv_transpose2d_backward(np.ones(y.shape, expected), x, w, 2, 1)
    assert g.x.dtype == g.w.dtype == g.b.dtype == expected


@pytest.mark.parametrize("engine", FAST_ENGINES)
@pytest.mark.parametrize("kind", ["sliced", "fortran", "readonly", "broadcast"])
def test_odd_arrays_give_the_reference_result(engine, kind, rng):
    x = rng.standard_normal((2, 3, 5, 6)).astype(np.float32)
    w = rng.standard_normal((3, 4, 3, 3)).astype(np.float32)
    ro_x, ro_w = x.copy(), w.copy()
    ro_x.setflags(write=False)
    ro_w.setflags(write=False)
    xv, wv = {"sliced": (np.concatenate([x, x], axis=3)[..., ::2], w[:, :, ::-1][:, :, ::-1]),
              "fortran": (np.asfortranarray(x), np.asfortranarray(w)),
              "readonly": (ro_x, ro_w),
              "broadcast": (np.broadcast_to(x[:1], x.shape), np.broadcast_to(w[:1], w.shape)),
              }[kind]
    opts = dict(stride=2, pad=1, output_padding=1)
    expected = fastconv.conv_transpose2d(np.array(xv), np.array(wv), backend="reference", **opts)
    y = fastconv.conv_transpose2d(xv, wv, backend=engine, **opts)
    assert_close(y, expected, np.float32)
    gy = np.broadcast_to(np.float32(1.0), y.shape)
    g = fastconv.conv_transpose2d_backward(gy, xv, wv, backend=engine, **opts)
    g_ref = fastconv.conv_transpose2d_backward(np.array(gy), np.array(xv), np.array(wv),
                                               backend="reference", **opts)
    for name in ("x", "w", "b"):
        assert_close(getattr(g, name), getattr(g_ref, name), np.float32, name)


def test_outputs_are_fresh(rng):
    x, w = rng.standard_normal((2, 3, 4, 4)), rng.standard_normal((3, 2, 3, 3))
    y = fastconv.conv_transpose2d(x, w, 2, 1, bias=np.zeros(2))
    g = fastconv.conv_transpose2d_backward(y, x, w, 2, 1)
    for a in (y, g.x, g.w, g.b):
        assert a.flags.c_contiguous and a.flags.writeable
        assert not np.shares_memory(a, x) and not np.shares_memory(a, w)


# --- 1-D --------------------------------------------------------------------------------


@pytest.mark.parametrize("engine", ALL_ENGINES + ("auto",))
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("layout", ["NCL", "NLC"])
def test_conv_transpose1d_matches_the_scatter_loop(engine, dtype, layout, rng):
    for stride, pad, op, dilation, groups in [(1, 0, 0, 1, 1), (2, (2, 1), 1, 1, 2),
                                              (3, 3, 2, 2, 1), (1, (0, 1), 1, 2, 3),
                                              (4, 1, 3, 1, 6)]:
        x = rng.standard_normal((2, 6, 7)).astype(dtype)
        w = rng.standard_normal((6, 12 // groups, 4)).astype(dtype)
        b = rng.standard_normal(12).astype(dtype)
        left, right = (pad, pad) if isinstance(pad, int) else pad
        expected = scatter(x[:, :, None], w[:, :, None], (1, stride), (0, 0, left, right),
                           (0, op), (1, dilation), groups)[:, :, 0] + b[:, None]
        xl, wl = (x.transpose(0, 2, 1), w.transpose(2, 1, 0)) if layout == "NLC" else (x, w)
        y = fastconv.conv_transpose1d(xl, wl, stride, pad, output_padding=op, bias=b,
                                      dilation=dilation, groups=groups, layout=layout,
                                      backend=engine)
        if layout == "NLC":
            y = y.transpose(0, 2, 1)
        assert_close(y, expected, dtype, f"stride {stride} pad {pad}")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("layout", ["NCL", "NLC"])
def test_conv_transpose1d_is_2d_with_height_one(dtype, layout, rng):
    x = rng.standard_normal((3, 4, 9)).astype(dtype)  # NCL
    w = rng.standard_normal((4, 3, 5)).astype(dtype)
    opts = dict(dilation=(1, 2), groups=2, output_padding=(0, 1))
    y2 = fastconv.conv_transpose2d(x[:, :, None], w[:, :, None], (1, 2), ((0, 0), (3, 1)), **opts)
    gy2 = rng.standard_normal(y2.shape).astype(dtype)
    g2 = fastconv.conv_transpose2d_backward(gy2, x[:, :, None], w[:, :, None], (1, 2),
                                            ((0, 0), (3, 1)), **opts)
    nlc = layout == "NLC"
    if nlc:
        x, w = x.transpose(0, 2, 1), w.transpose(2, 1, 0)
    opts1 = dict(dilation=2, groups=2, output_padding=1, layout=layout)
    y = fastconv.conv_transpose1d(x, w, 2, (3, 1), **opts1)
    gy = gy2[:, :, 0].transpose(0, 2, 1) if nlc else gy2[:, :, 0]
    g = fastconv.conv_transpose1d_backward(gy, x, w, 2, (3, 1), **opts1)
    back = (lambda a: a.transpose(0, 2, 1)) if nlc else (lambda a: a)
    assert_close(back(y), y2[:, :, 0], dtype, "y")
    assert_close(back(g.x), g2.x[:, :, 0], dtype, "grad x")
    assert_close(g.w.transpose(2, 1, 0) if nlc else g.w, g2.w[:, :, 0], dtype, "grad w")
    assert_close(g.b, g2.b, dtype, "grad b")
    assert g.x.shape == x.shape and g.w.shape == w.shape and y.flags.c_contiguous


@pytest.mark.parametrize("engine", ALL_ENGINES)
def test_conv_transpose1d_gradients_match_finite_differences(engine):
    rng = np.random.default_rng(9)
    x, w, b = rng.standard_normal((2, 4, 6)), rng.standard_normal((4, 3, 3)), rng.standard_normal(6)
    opts = dict(stride=3, pad=(2, 1), output_padding=2, dilation=2, groups=2, backend=engine)
    gy = rng.standard_normal(fastconv.conv_transpose1d(x, w, **opts).shape)

    def loss(x_, w_, b_):
        return float(np.sum(gy * fastconv.conv_transpose1d(x_, w_, bias=b_, **opts)))

    g = fastconv.conv_transpose1d_backward(gy, x, w, **opts)
    for name, arr, grad, f in (("x", x, g.x, lambda a: loss(a, w, b)),
                               ("w", w, g.w, lambda a: loss(x, a, b)),
                               ("b", b, g.b, lambda a: loss(x, w, a))):
        for idx in np.ndindex(arr.shape):
            num = _numeric_grad(f, arr, idx)
            assert np.isclose(grad[idx], num, rtol=1e-6, atol=1e-7), (name, idx, grad[idx], num)


def test_unbatched_signal_and_the_engines_it_runs_on(monkeypatch, rng):
    x, w = rng.standard_normal((3, 10)), rng.standard_normal((3, 2, 3))
    y = fastconv.conv_transpose1d(x, w, 2, 1, output_padding=1)
    assert y.shape == (2, 20)
    assert_close(y, fastconv.conv_transpose1d(x[None], w, 2, 1, output_padding=1)[0], np.float64)
    g = fastconv.conv_transpose1d_backward(np.ones_like(y), x, w, 2, 1, output_padding=1)
    assert g.x.shape == (3, 10) and g.w.shape == w.shape and g.b.shape == (2,)
    assert fastconv.conv_transpose1d(x.T, w.transpose(2, 1, 0), 2, 1, layout="NLC").shape == (19, 2)
    from fastconv import engines

    seen, real = [], engines.get_engine
    monkeypatch.setattr("fastconv._api.get_engine", lambda name: seen.append(name) or real(name))
    fastconv.conv_transpose1d(x, w, backend="direct")
    fastconv.conv_transpose1d_backward(np.ones((2, 12)), x, w, backend="im2col", wrt=("x", "w"))
    assert seen[0] == "direct" and set(seen[1:]) == {"im2col"}


# --- fuzzing ------------------------------------------------------------------------------

small = st.integers(0, 3)


@st.composite
def transposed_problems(draw):
    groups = draw(st.integers(1, 3))
    stride = (draw(st.integers(1, 4)), draw(st.integers(1, 4)))
    dilation = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    return dict(
        N=draw(st.integers(0, 3)), C=groups * draw(st.integers(1, 3)),
        K=groups * draw(st.integers(1, 3)), groups=groups,
        H=draw(st.integers(1, 9)), W=draw(st.integers(1, 9)),
        R=draw(st.integers(1, 6)), S=draw(st.integers(1, 6)), stride=stride, dilation=dilation,
        output_padding=tuple(draw(st.integers(0, max(s, d) - 1)) for s, d in zip(stride, dilation)),
        pad=draw(st.one_of(small, st.tuples(small, small),
                           st.tuples(st.tuples(small, small), st.tuples(small, small)))),
        layout=draw(st.sampled_from(["NCHW", "NHWC"])),
        dtype=draw(st.sampled_from([np.float32, np.float64])),
        flip=draw(st.booleans()), seed=draw(st.integers(0, 2**32 - 1)))


@given(transposed_problems())
def test_fuzz_engines_match_the_reference(p):
    """Drawn problems, every engine against the reference in every pass; a problem whose
    pads crop the whole output raises ValueError from every engine."""
    nhwc = p["layout"] == "NHWC"
    x_shape = (p["N"], p["H"], p["W"], p["C"]) if nhwc else (p["N"], p["C"], p["H"], p["W"])
    Kg = p["K"] // p["groups"]
    w_shape = (p["R"], p["S"], Kg, p["C"]) if nhwc else (p["C"], Kg, p["R"], p["S"])
    opts = {k: p[k] for k in ("stride", "pad", "output_padding", "dilation", "groups",
                              "layout", "flip")}
    rng = np.random.default_rng(p["seed"])
    x = rng.standard_normal(x_shape).astype(p["dtype"])
    w = rng.standard_normal(w_shape).astype(p["dtype"])
    b = rng.standard_normal(p["K"]).astype(p["dtype"])
    try:
        y_ref = fastconv.conv_transpose2d(x, w, bias=b, backend="reference", **opts)
    except ValueError as e:
        assert "crops more than" in str(e)
        for engine in FAST_ENGINES + ("auto",):
            with pytest.raises(ValueError, match="crops more than"):
                fastconv.conv_transpose2d(x, w, bias=b, backend=engine, **opts)
        return
    gy = rng.standard_normal(y_ref.shape).astype(p["dtype"])
    g_ref = fastconv.conv_transpose2d_backward(gy, x, w, backend="reference", **opts)
    for engine in FAST_ENGINES:
        assert_close(fastconv.conv_transpose2d(x, w, bias=b, backend=engine, **opts), y_ref,
                     p["dtype"], f"{engine} forward")
        g = fastconv.conv_transpose2d_backward(gy, x, w, backend=engine, **opts)
        for name in ("x", "w", "b"):
            assert_close(getattr(g, name), getattr(g_ref, name), p["dtype"], f"{engine} d{name}")


# --- validation -----------------------------------------------------------------------------

X = np.ones((2, 4, 5, 5))
W = np.ones((4, 3, 3, 3))
GY = np.ones((2, 3, 9, 9))  # stride 2, pad 1
X1, W1 = np.ones((2, 4, 6)), np.ones((4, 3, 3))
T, T1 = fastconv.conv_transpose2d, fastconv.conv_transpose1d

CASES = [
    # (description, call, exception, text the message must contain)
    ("x ndim", lambda: T(np.ones((4, 5)), W), ValueError, "x must be a 4-D array (N, C, H, W)"),
    ("w ndim", lambda: T(X, np.ones((4, 3, 3))), ValueError,
     "w must be a 4-D array (C_in, C_out/groups, R, S) for layout='NCHW'"),
    ("w ndim NHWC", lambda: T(np.ones((2, 5, 5, 4)), np.ones((3, 3, 4)), layout="NHWC"),
     ValueError, "w must be a 4-D array (R, S, C_out/groups, C_in) for layout='NHWC'"),
    ("channel mismatch", lambda: T(X, np.ones((3, 3, 3, 3))), ValueError,
     "w's input-channel dimension must be x's channels C_in = 4 (NCHW: w is "
     "(C_in, C_out/groups, R, S)), got 3"),
    ("channel mismatch NHWC", lambda: T(np.ones((2, 5, 5, 4)), np.ones((3, 3, 3, 2)),
                                        layout="NHWC"), ValueError,
     "must be x's channels C_in = 4 (NHWC: w is (R, S, C_out/groups, C_in)), got 2"),
    ("groups do not divide C_in", lambda: T(X, W, groups=3), ValueError,
     "groups must divide the input channels C_in=4, got groups=3"),
    ("no taps", lambda: T(X, np.ones((4, 3, 0, 3))), ValueError, "need at least one channel"),
    ("bias shape", lambda: T(X, W, bias=np.ones(4)), ValueError,
     "bias must have shape (C_out,) = (3,), got shape (4,)"),
    ("bias with groups", lambda: T(X, W, groups=2, bias=np.ones(3)), ValueError,
     "bias must have shape (C_out,) = (6,)"),
    ("stride 0", lambda: T(X, W, 0), ValueError, "stride must be >= 1, got 0"),
    ("stride float", lambda: T(X, W, 1.5), TypeError, "stride must be an int"),
    ("dilation 0", lambda: T(X, W, dilation=(1, 0)), ValueError, "dilation must be >= 1"),
    ("groups 0", lambda: T(X, W, groups=0), ValueError, "groups must be >= 1"),
    ("negative pad", lambda: T(X, W, 1, -1), ValueError, "pad must be >= 0, got -1"),
    ("negative side pad", lambda: T(X, W, 1, ((0, 1), (-2, 0))), ValueError, "pad must be >= 0"),
    ("pad triple", lambda: T(X, W, 1, (1, 1, 1)), ValueError, "pad must be an int or a pair"),
    ("pad 'same'", lambda: T(X, W, 2, "same"), ValueError,
     "pad of a transposed convolution must be an int, a pair (h, w) or ((top, bottom), "
     "(left, right)), got 'same': the strings 'valid', 'same', 'full' name a convolution's "
     "output size and are not accepted here ('valid' is pad=0)"),
    ("pad 'valid'", lambda: T(X, W, pad="valid"), ValueError, "('valid' is pad=0)"),
    ("huge pad", lambda: T(X, W, 1, 2**70), ValueError, "pad must be <="),
    ("output_padding too large", lambda: T(X, W, 2, 1, output_padding=2), ValueError,
     "output_padding must be smaller than stride or dilation on each axis (as in PyTorch), "
     "got output_padding (2, 2) with stride (2, 2) and dilation (1, 1)"),
    ("output_padding per axis", lambda: T(X, W, (2, 1), output_padding=(1, 1), dilation=(1, 1)),
     ValueError, "got output_padding (1, 1) with stride (2, 1) and dilation (1, 1)"),
    ("output_padding negative", lambda: T(X, W, 2, output_padding=-1), ValueError,
     "output_padding must be >= 0, got -1"),
    ("output_padding float", lambda: T(X, W, 2, output_padding=0.5), TypeError,
     "output_padding must be an int"),
    ("pads crop everything", lambda: T(np.ones((1, 4, 1, 1)), W, 1, 2), ValueError,
     "crops more than the transposed convolution's output of x spatial 1x1 has"),
    ("unknown layout", lambda: T(X, W, layout="NWHC"), ValueError,
     "layout must be one of 'NCHW', 'NHWC'; got 'NWHC'"),
    ("unknown backend", lambda: T(X, W, backend="gpu"), ValueError,
     "backend must be one of 'auto', 'direct', 'im2col', 'winograd', 'reference'; got 'gpu'"),
    ("flip not bool", lambda: T(X, W, flip=1), TypeError, "flip must be True or False"),
    ("complex dtype", lambda: T(X.astype(complex), W), TypeError,
     "x must have a real numeric dtype"),
    ("None weights", lambda: T(X, None), TypeError, "w must be an array"),
    ("string input", lambda: T("abc", W), TypeError, "x must be an array"),
    ("grad_y shape", lambda: fastconv.conv_transpose2d_backward(np.ones((2, 3, 9, 8)), X, W, 2, 1),
     ValueError, "grad_y must have the forward output's shape (2, 3, 9, 9), got (2, 3, 9, 8)"),
    ("grad_y dtype", lambda: fastconv.conv_transpose2d_backward(GY.astype(complex), X, W, 2, 1),
     TypeError, "grad_y must have a real numeric dtype"),
    ("wrt", lambda: fastconv.conv_transpose2d_backward(GY, X, W, 2, 1, wrt=("x", "bias")),
     ValueError, "wrt must be a tuple drawn from"),
    ("output too large", lambda: T(np.ones((1, 1, 2, 2)), np.ones((1, 1, 1, 1)), 2**30),
     MemoryError, "GiB"),
    ("output_shape: output_padding without transposed",
     lambda: fastconv.output_shape(X, W, 2, output_padding=1), ValueError,
     "output_padding is an option of transposed convolutions: pass transposed=True"),
    ("output_shape: transposed not bool", lambda: fastconv.output_shape(X, W, transposed="yes"),
     TypeError, "transposed must be True or False"),
    ("output_shape validates", lambda: fastconv.output_shape(X, W, 2, 1, transposed=True,
                                                             output_padding=3), ValueError,
     "output_padding must be smaller than stride or dilation"),
    # 1-D
    ("1d x ndim", lambda: T1(X, W1), ValueError,
     "x must be a 3-D array (N, C_in, L) or a 2-D signal (C_in, L)"),
    ("1d w ndim", lambda: T1(X1, W), ValueError,
     "w must be a 3-D array (C_in, C_out/groups, R) for layout='NCL'"),
    ("1d channel mismatch", lambda: T1(np.ones((2, 6, 4)), W1, layout="NLC"), ValueError,
     "w's input-channel dimension must be x's channels C_in = 4 (NLC: w is "
     "(R, C_out/groups, C_in)), got 3"),
    ("1d layout", lambda: T1(X1, W1, layout="NCHW"), ValueError,
     "layout must be one of 'NCL', 'NLC'; got 'NCHW'"),
    ("1d stride pair", lambda: T1(X1, W1, (1, 2)), TypeError, "stride must be an int"),
    ("1d pad 'full'", lambda: T1(X1, W1, pad="full"), ValueError,
     "pad of a transposed convolution must be an int or a pair (left, right), got 'full'"),
    ("1d pad triple", lambda: T1(X1, W1, pad=(1, 2, 3)), ValueError,
     "pad must be an int or a pair (left, right)"),
    ("1d output_padding", lambda: T1(X1, W1, 3, output_padding=3, dilation=2), ValueError,
     "got output_padding 3 with stride 3 and dilation 2"),
    ("1d output_padding pair", lambda: T1(X1, W1, 3, output_padding=(1, 1)), TypeError,
     "output_padding must be an int"),
    ("1d crop", lambda: T1(X1, W1, 1, (4, 5)), ValueError,
     "pad (4, 5) crops more than the transposed convolution's output of x length 6 has"),
    ("1d groups", lambda: T1(X1, W1, groups=3), ValueError,
     "groups must divide the input channels C_in=4"),
    ("1d grad_y shape", lambda: fastconv.conv_transpose1d_backward(np.ones((2, 3, 7)), X1, W1),
     ValueError, "grad_y must have the forward output's shape (2, 3, 8), got (2, 3, 7)"),
]


@pytest.mark.parametrize("call,exc,text", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_raises_clear_error(call, exc, text):
    x0, w0, gy0 = X.copy(), W.copy(), GY.copy()
    with pytest.raises(exc) as info:
        call()
    assert text in str(info.value)
    assert np.array_equal(X, x0) and np.array_equal(W, w0) and np.array_equal(GY, gy0)
