"""The direct engine's SIMD variants and its workspace.

Every micro-kernel set this machine supports (FASTCONV_SIMD=avx512|avx2|baseline) is
chosen once at import, so each variant runs in its own subprocess and is checked
against the reference engine for forward and all three gradients. The workspace test
counts the engine's scratch with tracemalloc (its buffers come from PyMem_Raw*).
"""
import os
import subprocess
import sys
import textwrap
import tracemalloc

import numpy as np
import pytest
from conftest import assert_close, run_in_simd_variant, same_bits_on_threads

import fastconv
from fastconv import _direct
from fastconv._geometry import ConvGeometry
from fastconv.engines import direct
from fastconv.suite import SUITE

TESTS_DIR = os.path.dirname(__file__)

# Shapes aimed at the blocking edges: K not a multiple of the register block, output
# rows longer than one block of vectors, strides and dilation with per-side padding,
# grouped with several filters per group, depthwise, 1x1 with stride 2.
EDGE_CASES = [
    dict(x=(2, 5, 19, 53), w=(13, 5, 3, 2), stride=(1, 2), pad=((2, 0), (1, 3)), dilation=(2, 1)),
    dict(x=(1, 6, 30, 31), w=(9, 2, 3, 3), stride=2, pad=1, groups=3),
    dict(x=(3, 7, 17, 40), w=(7, 1, 3, 3), stride=1, pad=1, groups=7),
    dict(x=(2, 8, 11, 12), w=(16, 8, 1, 1), stride=2, pad=0),
    dict(x=(1, 3, 37, 29), w=(17, 3, 5, 7), stride=3, pad=(2, 1), dilation=(1, 2)),
    # Depthwise, stride 1 (the NCHW depthwise loop nest): 3x3 and R != S, rows shorter
    # than a vector and exactly one, per-side and over-wide padding (grad_input then
    # pads by a negative amount), no padding, even taps, and a row count that leaves
    # a partial register block.
    dict(x=(2, 4, 11, 5), w=(4, 1, 3, 3), stride=1, pad=1, groups=4),
    dict(x=(1, 3, 9, 16), w=(3, 1, 5, 3), stride=1, pad=((2, 1), (0, 3)), groups=3),
    dict(x=(2, 2, 7, 33), w=(2, 1, 3, 3), stride=1, pad=3, groups=2),
    dict(x=(1, 5, 13, 18), w=(5, 1, 2, 4), stride=1, pad=0, groups=5),
    dict(x=(1, 2, 10, 9), w=(2, 1, 7, 7), stride=1, pad=(3, 2), groups=2),
    # Depthwise with the channels in the lanes (small maps): channel counts past whole
    # lane blocks of every ISA (19: 16 + 3, 8 + 8 + 3, 4 x 4 + 3), strided with per-side
    # padding, dilated.
    dict(x=(2, 19, 7, 7), w=(19, 1, 3, 3), stride=1, pad=1, groups=19),
    dict(x=(1, 19, 14, 11), w=(19, 1, 3, 3), stride=2, pad=((1, 0), (0, 1)), groups=19),
    dict(x=(1, 11, 9, 10), w=(11, 1, 3, 2), stride=(1, 2), pad=2, dilation=2, groups=11),
    # Pointwise, stride 1 (NCHW: the pointwise products): filters and channels that
    # leave a partial row block (13, 26/3), maps that leave a partial column sliver
    # (45, 66 positions) or are narrower than one (6), one input channel.
    dict(x=(2, 7, 5, 9), w=(13, 7, 1, 1), stride=1, pad=0),
    dict(x=(1, 12, 6, 11), w=(27, 4, 1, 1), stride=1, pad=0, groups=3),
    dict(x=(3, 1, 2, 3), w=(5, 1, 1, 1), stride=1, pad=0),
]

CHILD = textwrap.dedent("""
    import sys
    import numpy as np
    sys.path.insert(0, {tests!r})
    import fastconv
    from fastconv import _direct
    from conftest import assert_close, random_problem
    from test_direct_simd import EDGE_CASES, check_case

    assert _direct.simd_info()["simd"] == {variant!r}, _direct.simd_info()
    for seed in range(40):
        p = random_problem(1000 + seed)
        kw = dict(flip=p["flip"], **p["opts"])
        check_case(p["x"], p["w"], p["b"], p["gy"], p["dtype"], kw)
    rng = np.random.default_rng(7)
    # The K-vectorised kernel on and off, the tiles through fc_pw_gemm or fc_conv; then
    # tiny budgets: row blocks of the tiles, chunked kvec reductions and grad_weight
    # position chunks on these small shapes.
    tiny = dict(tile=2048, kvec_chunk=256, wgrad_chunk=512)
    for mode, budgets, gemm in (("auto", dict(), True), ("always", dict(), True),
                                ("never", dict(), True), ("never", dict(), False),
                                ("auto", tiny, True), ("auto", tiny, False),
                                ("always", tiny, True)):
        _direct._set_kvec(mode)
        _direct._set_budgets(**budgets)
        _direct._set_gemm_tiles(gemm)
        for case in EDGE_CASES:
            for layout in ("NCHW", "NHWC"):
                for dtype in (np.float32, np.float64):
                    opts = dict(case)
                    xs, ws = opts.pop("x"), opts.pop("w")
                    if layout == "NHWC":
                        xs, ws = (xs[0], xs[2], xs[3], xs[1]), (ws[2], ws[3], ws[1], ws[0])
                    x = rng.standard_normal(xs).astype(dtype)
                    w = rng.standard_normal(ws).astype(dtype)
                    kw = dict(layout=layout, **opts)
                    y_shape = fastconv.output_shape(x, w, **kw)
                    b = rng.standard_normal(y_shape[3] if layout == "NHWC" else y_shape[1]).astype(dtype)
                    gy = rng.standard_normal(y_shape).astype(dtype)
                    check_case(x, w, b, gy, dtype, kw)
    print("ok", {variant!r})
""")


def check_case(x, w, b, gy, dtype, kw):
    """Forward and the three gradients of the direct engine against the reference."""
    y = fastconv.conv2d(x, w, bias=b, backend="direct", **kw)
    assert_close(y, fastconv.conv2d(x, w, bias=b, backend="reference", **kw), dtype,
                 f"forward {kw}")
    g = fastconv.conv2d_backward(gy, x, w, backend="direct", **kw)
    g_ref = fastconv.conv2d_backward(gy, x, w, backend="reference", **kw)
    for name in ("x", "w", "b"):
        assert_close(getattr(g, name), getattr(g_ref, name), dtype, f"grad {name} {kw}")


@pytest.mark.parametrize("variant", ["avx512", "avx2", "baseline"])
def test_simd_variant_matches_reference(variant):
    run_in_simd_variant(variant, CHILD.format(tests=TESTS_DIR, variant=variant))


def test_unknown_simd_request_warns_and_falls_back():
    env = dict(os.environ, FASTCONV_SIMD="sse9")
    code = "from fastconv import _direct; print(_direct.simd_info()['simd'])"
    res = subprocess.run([sys.executable, "-W", "always", "-c", code], env=env,
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == _direct.simd_info()["supported"][0]
    assert "acceptable values" in res.stderr


def test_show_config_reports_simd():
    import io
    out = io.StringIO()
    fastconv.show_config(file=out)
    assert f"SIMD {_direct.simd_info()['simd']}" in out.getvalue()


def test_depthwise_grad_weight_bitwise_reproducible(rng):
    """The depthwise loop nest sums each channel's images in one order: any thread
    count, any repeat, the same bits."""
    x = rng.standard_normal((3, 5, 30, 37)).astype(np.float32)
    w = rng.standard_normal((5, 1, 3, 3)).astype(np.float32)
    gy = rng.standard_normal((3, 5, 30, 37)).astype(np.float32)
    same_bits_on_threads(lambda: fastconv.conv2d_backward(
        gy, x, w, pad=1, groups=5, wrt=("w",), backend="direct").w)


def test_grad_weight_bitwise_reproducible(rng):
    x = rng.standard_normal((4, 24, 20, 20)).astype(np.float32)
    w = rng.standard_normal((40, 24, 3, 3)).astype(np.float32)
    gy = rng.standard_normal((4, 40, 20, 20)).astype(np.float32)
    same_bits_on_threads(lambda: fastconv.conv2d_backward(
        gy, x, w, pad=1, wrt=("w",), backend="direct").w)


def test_kvec_held_tiles_match_chunked(rng):
    # Held tiles (each thread runs every filter block over its own images, resnet_c5's
    # plan) against the filter-chunk plan: the same sums in the same order, so equal
    # bit for bit. 2 images x 25 positions per thread end in a short (2-row) kvec block.
    x = rng.standard_normal((4, 40, 5, 5)).astype(np.float32)
    w = rng.standard_normal((72, 40, 3, 3)).astype(np.float32)
    gy = rng.standard_normal((4, 72, 5, 5)).astype(np.float32)
    out = {}
    try:
        with fastconv.num_threads(2):
            for on in (True, False):
                _direct._set_kvec_hold(on)
                y = fastconv.conv2d(x, w, pad=1, backend="direct")
                gx = fastconv.conv2d_backward(gy, x, w, pad=1, wrt=("x",), backend="direct").x
                out[on] = (y, gx)
    finally:
        _direct._set_kvec_hold(True)
    assert_close(out[True][0], fastconv.conv2d(x, w, pad=1, backend="reference"), np.float32,
                 "forward, held tiles")
    gx_ref = fastconv.conv2d_backward(gy, x, w, pad=1, wrt=("x",), backend="reference").x
    assert_close(out[True][1], gx_ref, np.float32, "grad_input, held tiles")
    for a, b in zip(out[True], out[False]):
        assert np.array_equal(a, b)


def test_grad_weight_row_blocks_bitwise_reproducible(rng):
    # A small tile budget cuts each image into row blocks and grad_y into position
    # chunks (the path of resnet_c3_3x3s2 and resnet_c2_1x1).
    x = rng.standard_normal((3, 20, 21, 19)).astype(np.float32)
    w = rng.standard_normal((50, 20, 3, 3)).astype(np.float32)
    gy = rng.standard_normal((3, 50, 11, 10)).astype(np.float32)
    try:
        _direct._set_budgets(tile=4096, wgrad_chunk=2048)
        gw = same_bits_on_threads(lambda: fastconv.conv2d_backward(
            gy, x, w, stride=2, pad=1, wrt=("w",), backend="direct").w)
    finally:
        _direct._set_budgets()
    ref = fastconv.conv2d_backward(gy, x, w, stride=2, pad=1, wrt=("w",), backend="reference").w
    assert_close(gw, ref, np.float32, "grad_weight, row blocks")


def _geometry(layer):
    from fastconv._geometry import out_size
    P = out_size(layer.H, layer.R, layer.stride, layer.pad, layer.pad, 1)
    Q = out_size(layer.W, layer.S, layer.stride, layer.pad, layer.pad, 1)
    return ConvGeometry(layer.N, layer.C, layer.H, layer.W, layer.K, layer.R, layer.S, P, Q,
                        layer.groups, layer.stride, layer.stride, 1, 1,
                        layer.pad, layer.pad, layer.pad, layer.pad, 0)


WORKSPACE_LIMIT = 32 * 2**20


@pytest.mark.parametrize("layer", SUITE, ids=[layer.name for layer in SUITE])
def test_workspace_is_bounded(layer):
    """Beyond its output, a pass allocates at most 32 MiB and never a copy of the input."""
    g = _geometry(layer)
    rng = np.random.default_rng(0)
    x = rng.standard_normal(g.x_shape).astype(np.float32)
    w = rng.standard_normal(g.w_shape).astype(np.float32)
    gy = rng.standard_normal(g.y_shape).astype(np.float32)
    passes = {
        "forward": (lambda: direct.forward(x, w, None, g), gy.nbytes),
        "grad_input": (lambda: direct.grad_input(gy, w, g), x.nbytes),
        "grad_weight": (lambda: direct.grad_weight(gy, x, g), w.nbytes),
    }
    with fastconv.num_threads(2):
        for name, (fn, out_bytes) in passes.items():
            tracemalloc.start()
            try:
                fn()
                _, peak = tracemalloc.get_traced_memory()
            finally:
                tracemalloc.stop()
            scratch = peak - out_bytes
            assert scratch <= WORKSPACE_LIMIT, f"{name}: {scratch / 2**20:.1f} MiB of scratch"
            if x.nbytes >= 8 * 2**20:
                assert scratch < x.nbytes / 2, f"{name}: scratch as large as the input"
