"""The Winograd engine (F(4x4, 3x3)), its NumPy twin, the transforms and the float32
precision switch.

Tolerances: float64 results within 1e-12 of the reference relative to the largest
reference value; float32 within 1e-5 (Frobenius norm of the error over that of the
reference) and 1e-4 of the largest value, the bounds the README states; the direct
engine's float32 error is measured beside them in test_float32_error_bounds_at_512.
"""
from __future__ import annotations

import os
import subprocess
import sys
import tracemalloc
from fractions import Fraction

import numpy as np
import pytest
from conftest import run_in_simd_variant
from hypothesis import given, settings
from hypothesis import strategies as st

import fastconv
from fastconv import _direct
from fastconv import _validate as v
from fastconv._winograd_mats import TILE_SIZES, transforms, transforms_exact
from fastconv.engines import reference, winograd, winograd_twin

F64_TOL = 1e-12
F32_FRO, F32_MAX = 1e-5, 1e-4


def rel_errors(y, ref):
    y, ref = np.asarray(y, np.float64), np.asarray(ref, np.float64)
    scale = max(np.abs(ref).max(), np.finfo(np.float64).tiny)
    fro = np.linalg.norm(y - ref) / max(np.linalg.norm(ref), np.finfo(np.float64).tiny)
    return fro, np.abs(y - ref).max() / scale


def assert_close(y, ref, dtype, what=""):
    assert y.shape == ref.shape, (what, y.shape, ref.shape)
    fro, mx = rel_errors(y, ref)
    if np.dtype(dtype) == np.float64:
        assert mx <= F64_TOL, (what, mx)
    else:
        assert fro <= F32_FRO and mx <= F32_MAX, (what, fro, mx)


@pytest.mark.parametrize("m", TILE_SIZES)
def test_transforms_are_exact_1d_identity(m):
    AT, G, BT = transforms_exact(m)
    alpha = m + 2
    # sum_j AT[i][j] G[j][k] BT[j][l] == [l == i + k], in exact rationals
    for i in range(m):
        for k in range(3):
            for col in range(alpha):
                s = sum(AT[i][j] * G[j][k] * BT[j][col] for j in range(alpha))
                assert s == Fraction(int(col == i + k))


def test_transforms_f43_are_the_published_ones():
    # Lavin and Gray's B^T for F(4x4, 3x3)
    _, _, BT = transforms(4)
    assert np.array_equal(BT, [[4, 0, -5, 0, 1, 0], [0, -4, -4, 1, 1, 0],
                               [0, 4, -4, -1, 1, 0], [0, -2, -1, 2, 1, 0],
                               [0, 2, -1, -2, 1, 0], [0, 4, 0, -5, 0, 1]])


def test_transforms_reject_unknown_tile():
    with pytest.raises(ValueError, match="tile size m must be one of"):
        transforms_exact(3)


def _problem(rng, N, C, H, W, K, pad, groups, layout, dtype):
    xs = (N, C, H, W) if layout == "NCHW" else (N, H, W, C)
    ws = (K, C // groups, 3, 3) if layout == "NCHW" else (3, 3, C // groups, K)
    g = v.geometry(xs, ws, 1, pad, 1, groups, v.layout_code(layout))
    x = rng.standard_normal(xs).astype(dtype)
    w = rng.standard_normal(ws).astype(dtype)
    b = rng.standard_normal(K).astype(dtype)
    gy = rng.standard_normal(g.y_shape).astype(dtype)
    return g, x, w, b, gy


shapes = st.tuples(
    st.integers(1, 3),                      # N
    st.integers(1, 3),                      # channels per group
    st.integers(1, 13), st.integers(1, 13),  # H, W (1-5: less than one tile)
    st.integers(1, 3),                      # filters per group
    st.one_of(st.integers(0, 4), st.tuples(st.integers(0, 4), st.integers(0, 4)),
              st.tuples(st.tuples(st.integers(0, 4), st.integers(0, 4)),
                        st.tuples(st.integers(0, 4), st.integers(0, 4))),
              st.sampled_from(["same", "valid", "full"])),
    st.integers(1, 2),                      # groups
    st.sampled_from(["NCHW", "NHWC"]),
    st.sampled_from([np.float32, np.float64]),
)


def _valid(g_args):
    N, Cg, H, W, Kg, pad, groups, layout, dtype = g_args
    t, b, l, r = v.pad_sides(pad, (3, 3), (1, 1), (1, 1), (H, W))
    return H + t + b >= 3 and W + l + r >= 3


@settings(max_examples=60, deadline=None)
@given(shapes, st.integers(0, 2**32 - 1))
def test_engine_and_twin_match_reference(args, seed):
    if not _valid(args):
        return
    N, Cg, H, W, Kg, pad, groups, layout, dtype = args
    rng = np.random.default_rng(seed)
    g, x, w, b, gy = _problem(rng, N, Cg * groups, H, W, Kg * groups, pad, groups, layout,
                              dtype)
    x0, w0, gy0 = x.copy(), w.copy(), gy.copy()
    y_ref = reference.forward(x, w, b, g)
    gx_ref = reference.grad_input(gy, w, g)
    assert_close(winograd.forward(x, w, b, g), y_ref, dtype, "engine forward")
    assert_close(winograd.grad_input(gy, w, g), gx_ref, dtype, "engine grad_input")
    for m in TILE_SIZES:
        # the twin computes in float64 whatever the input: the float64 bound holds
        tol = F64_TOL * 100 if m == 6 else F64_TOL
        assert rel_errors(winograd_twin.forward(x, w, b, g, m), y_ref)[1] <= max(
            tol, 1e-6 if dtype == np.float32 else 0), ("twin forward", m)
        assert rel_errors(winograd_twin.grad_input(gy, w, g, m), gx_ref)[1] <= max(
            tol, 1e-6 if dtype == np.float32 else 0), ("twin grad_input", m)
    # inputs untouched
    assert np.array_equal(x, x0) and np.array_equal(w, w0) and np.array_equal(gy, gy0)


@pytest.mark.parametrize("budgets", [(1,), (1, 1, 1, 1)],
                         ids=["small batches", "every chunking"])
def test_many_batches_and_small_budget_match_reference(budgets):
    # (1,): one batch of the fewest tiles per item: many items, tiles spanning images.
    # (1, 1, 1, 1): also filter chunks of one register block, source chunks of one tile
    # (their padded planes cut out of the middle of rows and images) and V in chunks of
    # one reduction chunk (300 channels)
    rng = np.random.default_rng(3)
    try:
        _direct._set_wino_budget(*budgets)
        cases = [(3, 7, 11, 17, 5, 1, 1), (2, 4, 13, 9, 30, ((0, 3), (2, 1)), 2),
                 (1, 300, 6, 7, 13, 1, 1)]
        for N, C, H, W, K, pad, groups in cases:
            for layout in ("NCHW", "NHWC"):
                for dtype in (np.float32, np.float64):
                    g, x, w, b, gy = _problem(rng, N, C, H, W, K, pad, groups, layout,
                                              dtype)
                    assert_close(winograd.forward(x, w, b, g),
                                 reference.forward(x, w, b, g), dtype)
                    assert_close(winograd.grad_input(gy, w, g),
                                 reference.grad_input(gy, w, g), dtype)
    finally:
        _direct._set_wino_budget()


def test_chunked_calls_are_bitwise_those_of_one_chunk():
    # Filter and source chunks change which calls compute an output, never its sums.
    rng = np.random.default_rng(5)
    g, x, w, b, gy = _problem(rng, 2, 40, 15, 14, 50, 1, 1, "NCHW", np.float32)
    y, gx = winograd.forward(x, w, b, g), winograd.grad_input(gy, w, g)
    try:
        _direct._set_wino_budget(512 * 1024, 1, 1)
        np.testing.assert_array_equal(winograd.forward(x, w, b, g), y)
        np.testing.assert_array_equal(winograd.grad_input(gy, w, g), gx)
    finally:
        _direct._set_wino_budget()


MIB = 1 << 20


@pytest.mark.parametrize("N,C,H,K,dtype", [
    (1, 512, 7, 512, np.float64),     # resnet_c5: 72 MiB of transformed filters at once
    (8, 512, 7, 512, np.float32),
    (8, 64, 224, 64, np.float32),     # vgg_conv1_2 at batch 8: 106 MiB of padded source
    (1, 2048, 14, 2048, np.float64),  # 1.1 GiB of transformed filters
    (1, 64, 2048, 64, np.float32),    # one row of tiles: 3 MiB of padded source
])
def test_workspace_is_bounded(N, C, H, K, dtype):
    isz = np.dtype(dtype).itemsize
    for threads in (1, 2, 4):
        assert _direct.wino_workspace(N, 1, C, K, H, H, winograd.TILE, isz,
                                      threads) <= 64 * MIB


def test_workspace_measured_matches_the_bound():
    # What a call allocates (tracemalloc sees the engine's PyMem_Raw buffers) beside
    # its output, with nothing kept from an earlier call.
    rng = np.random.default_rng(6)
    g, x, w, b, gy = _problem(rng, 1, 512, 7, 7, 512, 1, 1, "NCHW", np.float64)
    expected = _direct.wino_workspace(1, 1, 512, 512, 7, 7, winograd.TILE, 8, 2)
    assert 16 * MIB < expected <= 64 * MIB
    with fastconv.num_threads(2):
        fastconv.release_memory()
        tracemalloc.start()
        try:
            tracemalloc.reset_peak()
            base = tracemalloc.get_traced_memory()[0]
            y = winograd.forward(x, w, b, g)
            peak = tracemalloc.get_traced_memory()[1] - base
        finally:
            tracemalloc.stop()
    assert peak <= expected + y.nbytes + MIB, (peak / MIB, expected / MIB)
    assert peak >= expected, (peak / MIB, expected / MIB)  # the count is not an overcount
    assert_close(y, reference.forward(x, w, b, g), np.float64)


def test_reduction_chunks_and_filter_blocks():
    # more channels than one fc_pw_gemm reduction chunk, filters not a multiple of the
    # register block, channels not a multiple of the transform batch
    rng = np.random.default_rng(4)
    g, x, w, b, gy = _problem(rng, 2, 300, 9, 10, 13, 1, 1, "NCHW", np.float64)
    assert_close(winograd.forward(x, w, b, g), reference.forward(x, w, b, g), np.float64)
    assert_close(winograd.grad_input(gy, w, g), reference.grad_input(gy, w, g), np.float64)


def test_float32_error_bounds_at_512():
    """He-scaled weights, C = K = 512: the stated bounds, with the direct engine's error
    measured beside them (printed with -s)."""
    rng = np.random.default_rng(5)
    C = K = 512
    x = rng.standard_normal((1, C, 12, 12))
    w = rng.standard_normal((K, C, 3, 3)) * np.sqrt(2 / (C * 9))
    gy = rng.standard_normal((1, K, 12, 12))
    y_ref = fastconv.conv2d(x, w, pad=1, backend="direct")  # float64
    gx_ref = fastconv.conv2d_backward(gy, x, w, pad=1, backend="direct", wrt=("x",)).x
    x32, w32, gy32 = (a.astype(np.float32) for a in (x, w, gy))
    for backend in ("winograd", "direct"):
        y = fastconv.conv2d(x32, w32, pad=1, backend=backend)
        gx = fastconv.conv2d_backward(gy32, x32, w32, pad=1, backend=backend, wrt=("x",)).x
        print(backend, "forward", rel_errors(y, y_ref), "grad_input", rel_errors(gx, gx_ref))
        assert_close(y, y_ref, np.float32, backend)
        assert_close(gx, gx_ref, np.float32, backend)
    y64 = fastconv.conv2d(x, w, pad=1, backend="winograd")
    assert rel_errors(y64, y_ref)[1] <= F64_TOL


def test_api_backend_winograd_and_gradients():
    rng = np.random.default_rng(6)
    x = rng.standard_normal((2, 4, 9, 8))
    w = rng.standard_normal((6, 2, 3, 3))
    b = rng.standard_normal(6)
    gy = rng.standard_normal((2, 6, 9, 8))
    for flip in (False, True):
        kw = dict(pad="same", groups=2, flip=flip)
        y = fastconv.conv2d(x, w, bias=b, backend="winograd", **kw)
        np.testing.assert_allclose(y, fastconv.conv2d(x, w, bias=b, backend="reference",
                                                      **kw), rtol=0, atol=1e-12)
        gr = fastconv.conv2d_backward(gy, x, w, backend="winograd", **kw)
        gref = fastconv.conv2d_backward(gy, x, w, backend="reference", **kw)
        for name in ("x", "w", "b"):
            np.testing.assert_allclose(getattr(gr, name), getattr(gref, name), rtol=0,
                                       atol=1e-11)


@pytest.mark.parametrize("kw, what", [
    (dict(w_shape=(4, 3, 5, 5)), "5x5 filters"),
    (dict(stride=3), "stride"),  # phases that do not tile 10 x 10
    (dict(dilation=2), "dilation"),
])
def test_api_rejects_shapes_it_does_not_take(kw, what):
    x = np.zeros((1, 3, 10, 10))
    w = np.zeros(kw.pop("w_shape", (4, 3, 3, 3)))
    with pytest.raises(ValueError, match="takes 3x3 filters at stride 1 and dilation 1, or"):
        fastconv.conv2d(x, w, backend="winograd", **kw)


def test_bitwise_same_for_thread_counts_and_repeats():
    rng = np.random.default_rng(8)
    x = rng.standard_normal((4, 24, 20, 20), dtype=np.float32)
    w = rng.standard_normal((32, 24, 3, 3), dtype=np.float32)
    gy = rng.standard_normal((4, 32, 20, 20), dtype=np.float32)
    outs = []
    for n in (1, 2, 3, 2):
        with fastconv.num_threads(n):
            try:
                _direct._set_wino_budget(1)  # many items, so threads share the work
                y = fastconv.conv2d(x, w, pad=1, backend="winograd")
                gx = fastconv.conv2d_backward(gy, x, w, pad=1, backend="winograd",
                                              wrt=("x",)).x
            finally:
                _direct._set_wino_budget()
        outs.append((y, gx))
    for y, gx in outs[1:]:
        assert np.array_equal(y, outs[0][0]) and np.array_equal(gx, outs[0][1])


def test_kept_transformed_filters_equal_a_fresh_call():
    rng = np.random.default_rng(9)
    for dtype in (np.float32, np.float64):
        g, x, w, b, gy = _problem(rng, 2, 6, 10, 10, 8, 1, 1, "NCHW", dtype)
        packs = {}
        y1 = winograd.forward(x, w, b, g, packs)
        assert _direct._packs_info(packs)[0] == 1
        np.testing.assert_array_equal(winograd.forward(x, w, b, g, packs), y1)
        np.testing.assert_array_equal(winograd.forward(x, w, b, g), y1)
        gx = winograd.grad_input(gy, w, g)
        np.testing.assert_array_equal(winograd.grad_input(gy, w, g, packs), gx)
        np.testing.assert_array_equal(winograd.grad_input(gy, w, g, packs), gx)
        assert _direct._packs_info(packs)[0] == 2  # forward's and grad_input's


@pytest.mark.parametrize("variant", ["avx512", "avx2", "baseline"])
def test_simd_variant_matches_reference(variant):
    code = f"""
import sys; sys.path.insert(0, {os.path.dirname(__file__)!r})
import numpy as np
from fastconv import _direct
from test_winograd import _problem, assert_close
from fastconv.engines import reference, winograd
assert _direct.simd_info()["simd"] == {variant!r}
rng = np.random.default_rng(11)
for args in [(2, 5, 9, 11, 7, 1, 1), (1, 3, 4, 5, 2, 0, 1), (3, 8, 13, 6, 6, (2, 0), 2),
             (1, 17, 6, 23, 9, 2, 1), (2, 40, 8, 8, 40, 1, 1)]:
    for layout in ("NCHW", "NHWC"):
        for dtype in (np.float32, np.float64):
            g, x, w, b, gy = _problem(rng, *args, layout, dtype)
            assert_close(winograd.forward(x, w, b, g), reference.forward(x, w, b, g), dtype)
            assert_close(winograd.grad_input(gy, w, g), reference.grad_input(gy, w, g), dtype)
print("ok", {variant!r})
"""
    run_in_simd_variant(variant, code)


def test_precision_switch():
    assert fastconv.get_float32_precision() == "high"
    with fastconv.float32_precision("highest"):
        assert fastconv.get_float32_precision() == "highest"
    assert fastconv.get_float32_precision() == "high"
    fastconv.set_float32_precision("highest")
    try:
        assert fastconv.get_float32_precision() == "highest"
    finally:
        fastconv.set_float32_precision("high")
    with pytest.raises(ValueError, match=r"one of \('highest', 'high'\), got 'medium'"):
        fastconv.set_float32_precision("medium")
    with pytest.raises(TypeError, match="must be a str"):
        fastconv.set_float32_precision(1)
    assert fastconv.get_float32_precision() == "high"
    import io
    for value in ("highest", "high"):
        out = io.StringIO()
        with fastconv.float32_precision(value):
            fastconv.show_config(file=out)
        assert f"float32:         precision {value!r}" in out.getvalue()


def test_precision_from_environment():
    code = "import fastconv; print(fastconv.get_float32_precision())"
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=dict(os.environ, FASTCONV_FLOAT32_PRECISION="highest"),
                         timeout=300)
    assert res.returncode == 0 and res.stdout.strip() == "highest", res.stderr
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=dict(os.environ, FASTCONV_FLOAT32_PRECISION="low"), timeout=300)
    assert res.returncode != 0 and "FASTCONV_FLOAT32_PRECISION must be one of" in res.stderr


def test_auto_uses_winograd_for_float32_unless_highest_or_not_finite():
    rng = np.random.default_rng(12)
    x = rng.standard_normal((1, 64, 28, 28), dtype=np.float32)  # 49 tiles of 4x4
    w = (rng.standard_normal((64, 64, 3, 3)) * 0.05).astype(np.float32)
    gy = rng.standard_normal((1, 64, 28, 28), dtype=np.float32)
    g = v.geometry(x.shape, w.shape, 1, 1, 1, 1, 0)
    assert fastconv.choose_backend(g, np.float32, fastconv.get_num_threads())["forward"] \
        == "winograd"
    wino = fastconv.conv2d(x, w, pad=1, backend="winograd")
    exact = fastconv.conv2d(x, w, pad=1, backend="direct")
    assert not np.array_equal(wino, exact)  # they do round differently
    np.testing.assert_array_equal(fastconv.conv2d(x, w, pad=1), wino)
    gx_wino = fastconv.conv2d_backward(gy, x, w, pad=1, backend="winograd", wrt=("x",)).x
    np.testing.assert_array_equal(fastconv.conv2d_backward(gy, x, w, pad=1, wrt=("x",)).x,
                                  gx_wino)
    with fastconv.float32_precision("highest"):
        np.testing.assert_array_equal(fastconv.conv2d(x, w, pad=1), exact)
        np.testing.assert_array_equal(
            fastconv.conv2d_backward(gy, x, w, pad=1, wrt=("x",)).x,
            fastconv.conv2d_backward(gy, x, w, pad=1, backend="direct", wrt=("x",)).x)
    # One NaN or Inf pixel: auto gives what the exact engine gives (the NaN stays in the
    # outputs whose window holds it), where Winograd would spread it over its tiles.
    for bad in (np.nan, np.inf):
        xb = x.copy()
        xb[0, 3, 10, 13] = bad
        y = fastconv.conv2d(xb, w, pad=1)
        np.testing.assert_array_equal(y, fastconv.conv2d(xb, w, pad=1, backend="direct"))
        assert np.isfinite(y[0, :, 0:8, :]).all()
        gyb = gy.copy()
        gyb[0, 5, 20, 2] = bad
        np.testing.assert_array_equal(
            fastconv.conv2d_backward(gyb, x, w, pad=1, wrt=("x",)).x,
            fastconv.conv2d_backward(gyb, x, w, pad=1, backend="direct", wrt=("x",)).x)
    wb = w.copy()
    wb[7, 2, 1, 1] = np.nan
    np.testing.assert_array_equal(fastconv.conv2d(x, wb, pad=1),
                                  fastconv.conv2d(x, wb, pad=1, backend="direct"))
    # float64 keeps the exact engines
    x64, w64 = x.astype(np.float64), w.astype(np.float64)
    np.testing.assert_array_equal(fastconv.conv2d(x64, w64, pad=1),
                                  fastconv.conv2d(x64, w64, pad=1, backend="direct"))


@pytest.mark.parametrize("budgets", [(), (512 * 1024, 1, 1)], ids=["one chunk", "chunks"])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_finite_only_passes_find_any_non_finite_value(bad, budgets):
    # What auto relies on: a NaN or Inf anywhere in a pass's inputs (here the last
    # image's last pixel, in the last source chunk, or the last filter's last tap) makes
    # the pass return None; finite inputs give the same array as without the check.
    rng = np.random.default_rng(12)
    try:
        _direct._set_wino_budget(*budgets)
        for layout in ("NCHW", "NHWC"):
            for dtype in (np.float32, np.float64):
                g, x, w, b, gy = _problem(rng, 3, 5, 9, 10, 6, 1, 1, layout, dtype)
                y = winograd.forward(x, w, b, g, finite_only=True)
                np.testing.assert_array_equal(y, winograd.forward(x, w, b, g))
                gx = winograd.grad_input(gy, w, g, finite_only=True)
                np.testing.assert_array_equal(gx, winograd.grad_input(gy, w, g))
                for a in (x, w, gy):
                    a0 = a.copy()
                    a.reshape(-1)[-1] = bad
                    if a is not gy:
                        assert winograd.forward(x, w, b, g, finite_only=True) is None
                    if a is not x:
                        assert winograd.grad_input(gy, w, g, finite_only=True) is None
                    a[...] = a0
    finally:
        _direct._set_wino_budget()


def test_large_and_tiny_scales_do_not_overflow_or_flush():
    rng = np.random.default_rng(13)
    for scale in (1e30, 1e-30):
        for dtype, tol in ((np.float32, 1e-4), (np.float64, 1e-12)):
            g, x, w, b, gy = _problem(rng, 1, 8, 9, 9, 8, 1, 1, "NCHW", dtype)
            x = (x * scale).astype(dtype)
            y = winograd.forward(x, w, None, g)
            ref = reference.forward(x.astype(np.float64), w.astype(np.float64), None, g)
            assert np.isfinite(y).all()
            assert np.abs(y - ref).max() <= tol * np.abs(ref).max(), (scale, dtype)
