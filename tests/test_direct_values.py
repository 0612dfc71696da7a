"""The direct engine's paths on the same problems: the tiles through fc_pw_gemm or the
position-vectorised fc_conv, and the K-vectorised fc_kvec, each forced on through
``_direct._set_kvec`` and ``_direct._set_gemm_tiles``, against the reference engine in
both layouts and dtypes; then the pointwise products."""
import numpy as np
import pytest
from conftest import assert_close, random_problem, same_bits_on_threads
from test_direct_simd import EDGE_CASES, check_case

import fastconv
from fastconv import _direct


@pytest.fixture(params=["always", "never", "never-fc_conv"])
def kvec_mode(request):
    """The K-vectorised kernel, or the tiles through fc_pw_gemm, or through fc_conv."""
    _direct._set_kvec(request.param.split("-")[0])
    _direct._set_gemm_tiles(not request.param.endswith("fc_conv"))
    yield request.param
    _direct._set_kvec("auto")
    _direct._set_gemm_tiles(None)


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_edge_cases_both_paths(kvec_mode, layout, dtype):
    rng = np.random.default_rng(11)
    for case in EDGE_CASES + [dict(x=(9, 16, 5, 5), w=(120, 16, 5, 5), stride=1, pad=0),
                              dict(x=(3, 20, 7, 7), w=(50, 20, 3, 3), stride=1, pad=1)]:
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
        for n in (1, 2, 3):
            with fastconv.num_threads(n):
                check_case(x, w, b, gy, dtype, kw)


def test_random_problems_both_paths(kvec_mode):
    for seed in range(30):
        p = random_problem(2000 + seed)
        check_case(p["x"], p["w"], p["b"], p["gy"], p["dtype"], dict(flip=p["flip"], **p["opts"]))


def test_kvec_grad_weight_bitwise_reproducible(kvec_mode, rng):
    x = rng.standard_normal((5, 24, 7, 7)).astype(np.float32)
    w = rng.standard_normal((40, 24, 3, 3)).astype(np.float32)
    gy = rng.standard_normal((5, 40, 7, 7)).astype(np.float32)
    same_bits_on_threads(lambda: fastconv.conv2d_backward(
        gy, x, w, pad=1, wrt=("w",), backend="direct").w)


@pytest.mark.parametrize("keep", [16 << 20, 0], ids=["kept", "per-call"])
def test_kept_scratch_does_not_leak_between_calls(keep, rng):
    """grad_weight's scratch (_scratch.pxi) is kept for the thread's next call: a call
    with large sums leaves its tiles, staged grad_y and dW there, and the next call, with
    other filter counts (25 and 3: padded vector lanes), must see none of them."""
    _direct._set_scratch_keep(keep)
    try:
        for k_first, k_next in [(64, 25), (48, 3)]:
            x = rng.standard_normal((3, 16, 9, 9))
            full = fastconv.conv2d_backward(rng.standard_normal((3, k_first, 9, 9)) * 1e3,
                                            x, np.ones((k_first, 16, 3, 3)), pad=1,
                                            wrt=("w",), backend="direct")
            assert np.isfinite(full.w).all()
            gy = rng.standard_normal((3, k_next, 9, 9))
            w = np.ones((k_next, 16, 3, 3))
            for dtype in (np.float32, np.float64):
                got = fastconv.conv2d_backward(gy.astype(dtype), x.astype(dtype),
                                               w.astype(dtype), pad=1, wrt=("w",),
                                               backend="direct").w
                want = fastconv.conv2d_backward(gy, x, w, pad=1, wrt=("w",),
                                                backend="reference").w
                assert_close(got, want, dtype, f"{k_first} then {k_next} filters")
    finally:
        _direct._set_scratch_keep()
    assert fastconv.release_memory() >= 0


def test_subnormals_flushed_inside_only():
    """FTZ/DAZ hold only inside the direct engine: results stay within the tolerance and
    the caller's thread (NumPy after the call) still produces subnormals."""
    x = np.full((1, 2, 6, 6), 1e-20, np.float32)
    w = np.full((3, 2, 2, 2), 1e-20, np.float32)
    for n in (1, 2):
        with fastconv.num_threads(n):
            y = fastconv.conv2d(x, w, backend="direct")
            assert np.all(np.abs(y) < np.finfo(np.float32).tiny)
            a = np.float32(1e-20)
            assert a * a > 0  # the main thread's MXCSR was restored


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_depthwise_tiled_path(dtype):
    """The tiled path still serves depthwise layers when the loop nest is switched off
    (it is the one NHWC and strided depthwise layers take)."""
    rng = np.random.default_rng(5)
    _direct._set_depthwise(False)
    try:
        for case in EDGE_CASES:
            opts = dict(case)
            xs, ws = opts.pop("x"), opts.pop("w")
            x = rng.standard_normal(xs).astype(dtype)
            w = rng.standard_normal(ws).astype(dtype)
            y_shape = fastconv.output_shape(x, w, **opts)
            b = rng.standard_normal(y_shape[1]).astype(dtype)
            gy = rng.standard_normal(y_shape).astype(dtype)
            check_case(x, w, b, gy, dtype, opts)
    finally:
        _direct._set_depthwise(True)


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_kvec_filter_split_across_threads(layout, dtype):
    """The K-vectorised path splits the filters into near-equal chunks of vectors, a
    whole number per thread when it can (a filter count that is no multiple of the
    vector and chunk counts rounded up to the threads), and grad_weight writes dW out in
    64 x 64 tiles (more than 64 filters and (channel, tap) rows, neither a multiple of
    64). Every pass matches the reference and is bitwise the same for 1, 2 and 3
    threads (each output sums its terms in one order)."""
    rng = np.random.default_rng(23)
    for xs, ws in (((1, 48, 12, 12), (100, 48, 3, 3)),   # one image: filter chunks only
                   ((2, 40, 9, 9), (100, 40, 3, 3)),     # grad_weight through fc_kvec
                   ((3, 24, 7, 7), (70, 24, 3, 3))):
        if layout == "NHWC":
            xs, ws = (xs[0], xs[2], xs[3], xs[1]), (ws[2], ws[3], ws[1], ws[0])
        x = rng.standard_normal(xs).astype(dtype)
        w = rng.standard_normal(ws).astype(dtype)
        kw = dict(layout=layout, pad=1)
        gy = rng.standard_normal(fastconv.output_shape(x, w, **kw)).astype(dtype)
        y_ref = fastconv.conv2d(x, w, backend="reference", **kw)
        g_ref = fastconv.conv2d_backward(gy, x, w, wrt=("x", "w"), backend="reference", **kw)
        runs = []
        for n in (1, 2, 3):
            with fastconv.num_threads(n):
                y = fastconv.conv2d(x, w, backend="direct", **kw)
                g = fastconv.conv2d_backward(gy, x, w, wrt=("x", "w"), backend="direct", **kw)
            assert_close(y, y_ref, dtype, f"forward {xs} {n} threads")
            assert_close(g.x, g_ref.x, dtype, f"grad_x {xs} {n} threads")
            assert_close(g.w, g_ref.w, dtype, f"grad_w {xs} {n} threads")
            runs.append((y, g.x, g.w))
        for r in runs[1:]:
            for a, b in zip(runs[0], r):
                assert np.array_equal(a, b)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("x_shape, stride, dilation, pad, kernel", [
    ((4, 64, 96, 96), 2, 1, 1, (3, 3)),  # MobileNet's stride-2 3x3; 10 MFLOP: 2 threads
    ((3, 16, 13, 11), (2, 3), 1, ((0, 2), (1, 0)), (3, 2)),  # narrow rows: tiled forward
    ((1, 8, 30, 31), 1, (2, 1), 2, (3, 5)),      # dilated, stride 1
    ((2, 10, 33, 29), 3, 2, "same", (5, 5)),
])
def test_strided_depthwise_planes(x_shape, stride, dilation, pad, kernel, dtype, rng):
    """The plane loops of strided and dilated depthwise layers (NCHW) against the
    reference, with grad_w bitwise equal across thread counts (the first case is large
    enough for threads_for() to give it two threads)."""
    C = x_shape[1]
    x = rng.standard_normal(x_shape).astype(dtype)
    w = rng.standard_normal((C, 1) + kernel).astype(dtype)
    b = rng.standard_normal(C).astype(dtype)
    kw = dict(stride=stride, dilation=dilation, pad=pad, groups=C)
    y_ref = fastconv.conv2d(x, w, bias=b, backend="reference", **kw)
    gy = rng.standard_normal(y_ref.shape).astype(dtype)
    ref = fastconv.conv2d_backward(gy, x, w, backend="reference", **kw)

    def grads():
        return fastconv.conv2d_backward(gy, x, w, backend="direct", **kw)
    grad_w = same_bits_on_threads(lambda: grads().w)
    with fastconv.num_threads(2):
        assert_close(fastconv.conv2d(x, w, bias=b, backend="direct", **kw), y_ref, dtype, "y")
        got = grads()
    assert_close(got.x, ref.x, dtype, "grad_x")
    assert_close(grad_w, ref.w, dtype, "grad_w")
    assert_close(got.b, ref.b, dtype, "grad_b")


@pytest.fixture(params=["lanes", "flat", "ring-and-planes"])
def depthwise_flat(request):
    """Each NCHW depthwise path forced onto every layer it can take: the channels in the
    lanes (on every layer within its workspace bound), the flat planes, or neither (the
    ring kernel at stride 1, the scalar plane loops otherwise)."""
    _direct._set_depthwise_lanes(2 if request.param == "lanes" else 1)
    _direct._set_depthwise_flat(2 if request.param == "flat" else 1)
    yield request.param
    _direct._set_depthwise_lanes(0)
    _direct._set_depthwise_flat(0)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("x_shape, stride, dilation, pad, kernel", [
    ((8, 192, 28, 28), 1, 1, 1, (3, 3)),          # 22 MFLOP: split across threads
    ((3, 7, 7, 7), 1, 1, 1, (3, 3)),              # MobileNet's last maps
    ((2, 5, 14, 14), 2, 1, 1, (3, 3)),            # stride 2, even map
    ((2, 3, 13, 11), (2, 3), 1, ((0, 2), (1, 0)), (3, 2)),
    ((1, 4, 30, 31), 1, (2, 1), 2, (3, 5)),       # dilated
    ((2, 3, 33, 29), 3, 2, "same", (5, 5)),
    ((3, 6, 9, 9), 2, 1, 0, (1, 1)),              # taps on one phase only
    ((1, 2, 6, 6), 1, 1, 3, (7, 7)),              # filter larger than the map
    ((2, 4, 12, 10), 2, 1, ((3, 0), (0, 3)), (4, 4)),  # uneven padding, even filter
    ((1, 3, 5, 9), 1, 1, 0, (1, 9)),              # wider than the ring's limit
    ((2, 3, 1, 2), 3, 1, 0, (1, 1)),              # phases past a 1-row map
    ((1, 2, 2, 1), (2, 3), 1, ((0, 1), (0, 0)), (2, 1)),
    ((2, 37, 7, 7), 1, 1, 1, (3, 3)),             # channels past a whole lane block
    ((1, 19, 14, 13), 2, 1, ((1, 0), (0, 1)), (3, 3)),
    ((1, 9, 5, 6), 1, 1, 4, (3, 3)),              # padding wider than the filter
])
def test_depthwise_flat_planes(depthwise_flat, x_shape, stride, dilation, pad, kernel,
                               dtype, rng):
    """Every NCHW depthwise path against the reference in all three passes, with every
    pass bitwise equal across thread counts (one plane or one channel per item)."""
    C = x_shape[1]
    x = rng.standard_normal(x_shape).astype(dtype)
    w = rng.standard_normal((C, 1) + kernel).astype(dtype)
    b = rng.standard_normal(C).astype(dtype)
    kw = dict(stride=stride, dilation=dilation, pad=pad, groups=C, backend="direct")
    y_ref = fastconv.conv2d(x, w, bias=b, **{**kw, "backend": "reference"})
    gy = rng.standard_normal(y_ref.shape).astype(dtype)
    ref = fastconv.conv2d_backward(gy, x, w, **{**kw, "backend": "reference"})
    x0, w0, gy0 = x.copy(), w.copy(), gy.copy()
    y = same_bits_on_threads(lambda: fastconv.conv2d(x, w, bias=b, **kw))
    gx = same_bits_on_threads(lambda: fastconv.conv2d_backward(gy, x, w, wrt=("x",), **kw).x)
    gw = same_bits_on_threads(lambda: fastconv.conv2d_backward(gy, x, w, wrt=("w",), **kw).w)
    assert_close(y, y_ref, dtype, "y")
    assert_close(gx, ref.x, dtype, "grad_x")
    assert_close(gw, ref.w, dtype, "grad_w")
    assert np.array_equal(x, x0) and np.array_equal(w, w0) and np.array_equal(gy, gy0)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("x_shape, stride, pad", [
    ((2, 5, 9, 11), 1, 1), ((2, 5, 30, 30), 1, 1), ((2, 3, 13, 14), 2, 1),
    ((1, 4, 8, 8), 1, 0),
])
@pytest.mark.parametrize("where", ["x", "grad_y"])
def test_depthwise_grad_weight_non_finite(depthwise_flat, x_shape, stride, pad, where,
                                          dtype, rng):
    """An Inf, -Inf or NaN at an edge or corner of x (or of grad_y) reaches exactly the
    taps the reference's sum gives it to: the ring and flat kernels' lanes past a row
    read x there with a zero of grad_y and made NaN of taps whose true sum was finite
    or infinite, until the plane's sums are redone exactly (_dw_wgrad_exact)."""
    if where == "grad_y" and stride > 1 and depthwise_flat == "ring-and-planes":
        pytest.skip("the scalar plane loops skip the padding's 0 * Inf (test hook only)")
    C = x_shape[1]
    w = rng.standard_normal((C, 1, 3, 3)).astype(dtype)
    kw = dict(stride=stride, pad=pad, groups=C)
    x0 = rng.standard_normal(x_shape).astype(dtype)
    gy0 = rng.standard_normal(fastconv.output_shape(x0, w, **kw)).astype(dtype)
    for value in (np.inf, -np.inf, np.nan):
        target = x0 if where == "x" else gy0
        H, W = target.shape[2:]
        for h, wc in ((0, 0), (H // 2, W - 1), (H - 1, W // 2), (H - 1, W - 1)):
            x, gy = x0.copy(), gy0.copy()
            (x if where == "x" else gy)[0, 1, h, wc] = value
            ref = fastconv.conv2d_backward(gy, x, w, wrt="w", backend="reference", **kw).w
            got = fastconv.conv2d_backward(gy, x, w, wrt="w", backend="direct", **kw).w
            for mask in (np.isnan, np.isposinf, np.isneginf):
                assert np.array_equal(mask(got), mask(ref)), (value, h, wc, got[1], ref[1])
            ok = np.isfinite(ref)
            assert_close(got[ok], ref[ok], dtype, "grad_w")


def test_depthwise_flat_mode_is_checked():
    with pytest.raises(ValueError, match="mode must be 0"):
        _direct._set_depthwise_flat(3)
    with pytest.raises(ValueError, match="mode must be 0"):
        _direct._set_depthwise_lanes(3)


@pytest.mark.parametrize("C, H, stride, path", [
    (960, 7, 1, "lanes"), (576, 14, 1, "lanes"), (576, 14, 2, "lanes"),
    (144, 56, 2, "lanes"),                        # a 28 x 28 output, strided
    (192, 28, 1, "other"), (144, 56, 1, "other"),  # the ring kernel's wide rows
    (96, 112, 2, "flat"),                          # past the lanes' workspace bound
])
def test_depthwise_paths_auto_chooses(C, H, stride, path):
    """auto's depthwise rule on MobileNetV2's 3 x 3 layers (pad 1): small outputs, and
    strided ones up to 28 x 28, on the channels in the lanes."""
    P = (H + 2 - 3) // stride + 1
    assert _direct._depthwise_path(8, C, H, H, 3, 3, P, P, stride, stride, 1, 1, 1, 1) == path


@pytest.fixture(params=["plain", "streamed"])
def pointwise_stores(request):
    """The pointwise products with their stores as the size rule gives them, and with
    every output streamed (non-temporal stores), however small."""
    _direct._set_pointwise(True, 2**62 if request.param == "plain" else 0)
    yield request.param
    _direct._set_pointwise(True)


def _misaligned(a):
    """A C-contiguous copy of a whose data starts 4 bytes past a 64-byte line (NumPy
    aligns to 16; a caller's slice can be anywhere)."""
    raw = np.empty(a.nbytes + 64 + a.itemsize, np.uint8)
    start = (-raw.ctypes.data % 64) + 4
    out = raw[start:start + a.nbytes].view(a.dtype).reshape(a.shape)
    out[...] = a
    return out


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n, c, k, h, w, groups, stride", [
    (3, 70, 37, 20, 103, 1, 1),  # 2 threads; 37 filters: a partial row block; 2060 columns
    (1, 24, 30, 9, 7, 3, 1),     # one image cut into column chunks; groups; 63 positions
    (2, 5, 64, 1, 1, 1, 1),      # one position per image: a sliver of one column
    (3, 40, 37, 21, 58, 1, 2),   # strided: 2 threads, odd rows, a grid that ends early
    (1, 12, 9, 10, 13, 3, (3, 1)),  # one image in row bands; groups; rows skipped
    (2, 6, 20, 7, 9, 1, (1, 4)),    # columns skipped
])
def test_pointwise_products(pointwise_stores, n, c, k, h, w, groups, stride, dtype, layout,
                            rng):
    """The pointwise products (NCHW: forward and grad_input, at stride 1 and on a stride
    grid; NHWC at stride 1, positions as rows, and grad_weight over ranges of positions:
    6180 of them make 6 ranges, 63 one; 37 filters leave partial column slivers, 70 and 8
    channels per group partial row blocks) against the reference, on aligned and
    misaligned operands, bitwise equal across thread counts."""
    x = rng.standard_normal((n, c, h, w)).astype(dtype)
    wt = rng.standard_normal((k, c // groups, 1, 1)).astype(dtype)
    if layout == "NHWC":
        x, wt = np.ascontiguousarray(x.transpose(0, 2, 3, 1)), np.ascontiguousarray(wt.T)
    b = rng.standard_normal(k).astype(dtype)
    kw = dict(groups=groups, stride=stride, layout=layout)
    y_ref = fastconv.conv2d(x, wt, bias=b, backend="reference", **kw)
    gy = rng.standard_normal(y_ref.shape).astype(dtype)
    gx_ref = fastconv.conv2d_backward(gy, x, wt, wrt="x", backend="reference", **kw).x
    gw_ref = fastconv.conv2d_backward(gy, x, wt, wrt="w", backend="reference", **kw).w
    def poisoned(fn, nbytes):
        # Free a block of NaNs the size of the output first, so that an element the
        # kernel fails to write (grad_input off the stride grid) reads NaN, not a
        # fresh page's zero: NumPy's allocator hands the block straight back.
        np.full(nbytes // 8 + 8, np.nan)
        return fn()

    for xs, gys in ((x, gy), (_misaligned(x), _misaligned(gy))):
        y = same_bits_on_threads(lambda: poisoned(
            lambda: fastconv.conv2d(xs, wt, bias=b, backend="direct", **kw), y_ref.nbytes))
        gx = same_bits_on_threads(lambda: poisoned(
            lambda: fastconv.conv2d_backward(gys, xs, wt, wrt="x", backend="direct", **kw).x,
            x.nbytes))
        gw = same_bits_on_threads(lambda: poisoned(
            lambda: fastconv.conv2d_backward(gys, xs, wt, wrt="w", backend="direct", **kw).w,
            wt.nbytes))
        assert_close(y, y_ref, dtype, "y")
        assert_close(gx, gx_ref, dtype, "grad_x")
        assert_close(gw, gw_ref, dtype, "grad_w")


@pytest.fixture(params=[True, False], ids=["swapped", "direct-order"])
def widening_swap(request):
    """Widening 1x1 grad_weight with x and grad_y swapped (the default) or not, with the
    K-vectorised kernel forced on so that the swap's preconditions hold at any size."""
    _direct._set_kvec("always")
    _direct._set_pw_wgrad_swap(request.param)
    yield request.param
    _direct._set_kvec("auto")
    _direct._set_pw_wgrad_swap(True)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n, c, k, h, w", [
    (3, 5, 37, 7, 9),      # odd sizes; 5 channels: one partial vector of dW^T's columns
    (1, 16, 96, 12, 12),   # batch 1
    (2, 33, 70, 29, 28),   # a partial vector and a partial row block; long reduction
    (2, 2, 3, 1, 1),       # one position per image
])
def test_pointwise_grad_weight_widening(widening_swap, n, c, k, h, w, dtype, rng):
    """grad_weight of NCHW 1x1 layers with more filters than channels, read swapped
    (dW^T as the grad_weight of a layer from K channels to C filters) and not, against
    the reference, on misaligned operands, bitwise equal across thread counts."""
    x = rng.standard_normal((n, c, h, w)).astype(dtype)
    wt = rng.standard_normal((k, c, 1, 1)).astype(dtype)
    gy = rng.standard_normal((n, k, h, w)).astype(dtype)
    gw_ref = fastconv.conv2d_backward(gy, x, wt, wrt="w", backend="reference").w
    xs, gys = _misaligned(x), _misaligned(gy)
    np.full(wt.size + 8, np.nan)  # a dW element left unwritten reads NaN (see above)
    gw = same_bits_on_threads(lambda: fastconv.conv2d_backward(
        gys, xs, wt, wrt="w", backend="direct").w)
    assert_close(gw, gw_ref, dtype, "grad_w")
    assert np.array_equal(xs, x) and np.array_equal(gys, gy)


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_gemm_tiles_long_reduction(layout, dtype, rng):
    """Reductions longer than one chunk of fc_pw_gemm's rows (40 x 9 = 360 forward,
    33 x 9 = 297 for grad_input), so chunks accumulate, against the reference and
    bitwise equal across thread counts; stride 2 gives grad_input its phases."""
    _direct._set_kvec("never")
    try:
        for stride in (1, 2):
            xs, ws = (2, 40, 13, 21), (33, 40, 3, 3)
            if layout == "NHWC":
                xs, ws = (xs[0], xs[2], xs[3], xs[1]), (ws[2], ws[3], ws[1], ws[0])
            x = rng.standard_normal(xs).astype(dtype)
            w = rng.standard_normal(ws).astype(dtype)
            kw = dict(stride=stride, pad=1, layout=layout)
            b = rng.standard_normal(33).astype(dtype)
            y_ref = fastconv.conv2d(x, w, bias=b, backend="reference", **kw)
            gy = rng.standard_normal(y_ref.shape).astype(dtype)
            gx_ref = fastconv.conv2d_backward(gy, x, w, wrt="x", backend="reference", **kw).x
            y = same_bits_on_threads(lambda: fastconv.conv2d(x, w, bias=b, backend="direct", **kw))
            gx = same_bits_on_threads(
                lambda: fastconv.conv2d_backward(gy, x, w, wrt="x", backend="direct", **kw).x)
            assert_close(y, y_ref, dtype, f"y stride {stride}")
            assert_close(gx, gx_ref, dtype, f"grad_x stride {stride}")
    finally:
        _direct._set_kvec("auto")


# Whole-window layers (the filters as large as the input, one output per image): the
# direct engine's grad_input is one product, dy (N x K) . W (K x C*R*S) (_window_fits,
# csrc/_pointwise.pxi), and its neighbours that are not (padded, grouped, dilated, NHWC)
# keep the tiled correlation; both against the reference, bitwise for any thread count.
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", [
    dict(x=(64, 16, 5, 5), w=(120, 16, 5, 5)),             # lenet_c5
    dict(x=(1, 3, 4, 7), w=(9, 3, 4, 7)),                  # batch 1, R != S
    dict(x=(5, 9, 3, 3), w=(1, 9, 3, 3), stride=2),        # one filter; the stride is moot
    dict(x=(3, 1, 7, 2), w=(33, 1, 7, 2), stride=(3, 1)),  # one channel
    dict(x=(2, 6, 5, 5), w=(8, 6, 5, 5), pad=1),           # padded: 3x3 outputs
    dict(x=(2, 6, 5, 5), w=(8, 3, 5, 5), groups=2),        # grouped
    dict(x=(2, 4, 5, 5), w=(8, 4, 3, 3), dilation=2),      # dilated: the window is 5x5
    dict(x=(2, 5, 5, 6), w=(5, 5, 6, 7), layout="NHWC"),   # NHWC (HWIO filters)
])
def test_whole_window_grad_input(case, dtype):
    rng = np.random.default_rng(5)
    opts = dict(case)
    x = rng.standard_normal(opts.pop("x")).astype(dtype)
    w = rng.standard_normal(opts.pop("w")).astype(dtype)
    gy = rng.standard_normal(fastconv.output_shape(x, w, **opts)).astype(dtype)
    gy0, w0 = gy.copy(), w.copy()
    got = same_bits_on_threads(lambda: fastconv.conv2d_backward(
        gy, x, w, wrt=("x",), backend="direct", **opts).x)
    ref = fastconv.conv2d_backward(gy, x, w, wrt=("x",), backend="reference", **opts).x
    assert_close(got, ref, dtype, "whole-window grad_input")
    assert np.array_equal(gy, gy0) and np.array_equal(w, w0)


@pytest.mark.parametrize("mode", [1, 2])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_depthwise_writes_stay_inside_grad_x(mode, dtype):
    """grad_input of a strided depthwise layer on a 1-row map has phases with no row of
    grad_x; the kernel once wrote one row past the buffer there. Its buffer here is the
    front of a larger array whose tail must keep its sentinel."""
    N, C, H, W, sh, sw = 2, 3, 1, 2, 3, 3
    gy = np.ones(N * C * 1 * 1, dtype)
    w = np.ones(C, dtype)
    room = np.full(N * C * H * W + 64, 7.0, dtype)
    _direct._set_depthwise_flat(mode)
    try:
        _direct.grad_input(gy, w, room[:N * C * H * W], N, C, H, W, C, 1, 1, 1, 1, C,
                           sh, sw, 1, 1, 0, 0, 0, 1)
    finally:
        _direct._set_depthwise_flat(0)
    assert np.all(room[N * C * H * W:] == 7.0)
    assert np.array_equal(room[:N * C * H * W].reshape(N, C, H, W)[..., 0], np.ones((N, C, 1)))
    assert np.all(room[:N * C * H * W].reshape(N, C, H, W)[..., 1] == 0)
