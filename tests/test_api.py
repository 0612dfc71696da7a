"""The public API's contract: layouts, pad forms, dtypes, odd arrays, empty batches."""
import numpy as np
import pytest
import scipy.signal
from conftest import FAST_ENGINES, assert_close

import fastconv


@pytest.fixture
def problem(rng):
    x = rng.standard_normal((2, 3, 9, 8))
    w = rng.standard_normal((4, 3, 3, 2))
    return x, w


@pytest.mark.parametrize("engine", FAST_ENGINES + ("reference",))
def test_nhwc_is_nchw_transposed(engine, problem):
    x, w = problem
    y = fastconv.conv2d(x, w, 2, 1, backend=engine)
    y_nhwc = fastconv.conv2d(x.transpose(0, 2, 3, 1), w.transpose(2, 3, 1, 0), 2, 1,
                             layout="NHWC", backend=engine)
    assert_close(y_nhwc, y.transpose(0, 2, 3, 1), np.float64)


def test_unbatched_image(problem):
    x, w = problem
    y = fastconv.conv2d(x[0], w, 1, 1)
    assert y.shape == (4, 9, 9)
    assert_close(y, fastconv.conv2d(x[:1], w, 1, 1)[0], np.float64)
    g = fastconv.conv2d_backward(np.ones_like(y), x[0], w, 1, 1)
    assert g.x.shape == x[0].shape and g.w.shape == w.shape and g.b.shape == (4,)


@pytest.mark.parametrize("H,stride,before,after", [(5, 2, 1, 1), (6, 2, 0, 1), (7, 3, 1, 1),
                                                    (9, 1, 1, 1)])
def test_same_padding_follows_tensorflow(H, stride, before, after):
    """'same': output ceil(H / stride), total pad split with the extra pixel after."""
    x = np.random.default_rng(0).standard_normal((1, 1, H, H))
    w = np.ones((1, 1, 3, 3))
    y = fastconv.conv2d(x, w, stride, "same")
    assert y.shape[2:] == (-(-H // stride),) * 2
    explicit = fastconv.conv2d(x, w, stride, ((before, after), (before, after)))
    assert_close(y, explicit, np.float64)


def test_pad_forms_agree(problem):
    x, w = problem
    a = fastconv.conv2d(x, w, 1, (2, 1))
    b = fastconv.conv2d(x, w, 1, ((2, 2), (1, 1)))
    assert_close(a, b, np.float64)
    assert fastconv.output_shape(x, w, 1, "valid") == (2, 4, 7, 7)
    assert fastconv.output_shape(x, w, 1, "full") == (2, 4, 11, 9)
    assert fastconv.output_shape(x, w, 1, "full", dilation=2) == (2, 4, 13, 10)
    assert fastconv.output_shape(x.shape[1:], w.shape, 1, 0) == (4, 7, 7)


@pytest.mark.parametrize("engine", FAST_ENGINES + ("reference",))
def test_flip_is_true_convolution(engine, rng):
    """flip=False is scipy's correlate2d, flip=True its convolve2d (in every mode)."""
    img, k = rng.standard_normal((9, 7)), rng.standard_normal((3, 4))
    for mode, pad in (("valid", 0), ("full", "full")):
        y = fastconv.conv2d(img[None, None], k[None, None], 1, pad, backend=engine)[0, 0]
        assert_close(y, scipy.signal.correlate2d(img, k, mode), np.float64)
        y = fastconv.conv2d(img[None, None], k[None, None], 1, pad, flip=True, backend=engine)
        assert_close(y[0, 0], scipy.signal.convolve2d(img, k, mode), np.float64)
    # "same" in scipy centres the kernel; for odd kernels it equals TF-style "same".
    k3 = rng.standard_normal((3, 5))
    y = fastconv.conv2d(img[None, None], k3[None, None], 1, "same", flip=True, backend=engine)
    assert_close(y[0, 0], scipy.signal.convolve2d(img, k3, "same"), np.float64)


@pytest.mark.parametrize("x_dtype,w_dtype,expected", [
    (np.float32, np.float32, np.float32),
    (np.float64, np.float64, np.float64),
    (np.float32, np.float64, np.float64),
    (np.float16, np.float16, np.float32),
    (np.float16, np.float32, np.float32),
    (np.int32, np.float32, np.float64),
    (np.int64, np.int64, np.float64),
    (np.bool_, np.float64, np.float64),
])
def test_dtype_promotion(x_dtype, w_dtype, expected, rng):
    x = (rng.standard_normal((1, 2, 5, 5)) * 3).astype(x_dtype)
    w = (rng.standard_normal((2, 2, 3, 3)) * 3).astype(w_dtype)
    y = fastconv.conv2d(x, w)
    assert y.dtype == expected
    ref = fastconv.conv2d(x.astype(np.float64), w.astype(np.float64), backend="reference")
    assert_close(y, ref, expected)
    g = fastconv.conv2d_backward(np.ones(y.shape, expected), x, w)
    assert g.x.dtype == g.w.dtype == g.b.dtype == expected


def _odd_views(x):
    ro = x.copy()
    ro.setflags(write=False)
    return {
        "sliced": np.concatenate([x, x], axis=3)[..., ::2],
        "fortran": np.asfortranarray(x),
        "negative": x[..., ::-1].copy()[..., ::-1],
        "readonly": ro,
        "broadcast": np.broadcast_to(x[:1], x.shape),
    }


@pytest.mark.parametrize("engine", FAST_ENGINES)
@pytest.mark.parametrize("kind", ["sliced", "fortran", "negative", "readonly", "broadcast"])
def test_odd_arrays_give_the_reference_result(engine, kind, rng):
    x = rng.standard_normal((2, 3, 6, 7)).astype(np.float32)
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    xv = _odd_views(x)[kind]
    wv = _odd_views(w)[kind] if kind != "broadcast" else np.broadcast_to(w[:1], w.shape)
    expected = fastconv.conv2d(np.array(xv), np.array(wv), 1, 1, backend="reference")
    y = fastconv.conv2d(xv, wv, 1, 1, backend=engine)
    assert_close(y, expected, np.float32)
    gy = np.broadcast_to(np.float32(1.0), y.shape)  # 0-strided grad_y too
    g = fastconv.conv2d_backward(gy, xv, wv, 1, 1, backend=engine)
    g_ref = fastconv.conv2d_backward(np.array(gy), np.array(xv), np.array(wv), 1, 1,
                                     backend="reference")
    for name in ("x", "w", "b"):
        assert_close(getattr(g, name), getattr(g_ref, name), np.float32, name)


def test_negative_strides_are_read_correctly(rng):
    x = rng.standard_normal((1, 2, 5, 6))
    w = rng.standard_normal((3, 2, 2, 3))
    y = fastconv.conv2d(x[:, ::-1, ::-1, ::-1], w)
    assert_close(y, fastconv.conv2d(x[:, ::-1, ::-1, ::-1].copy(), w, backend="reference"),
                 np.float64)


def test_inputs_are_not_modified_and_output_is_fresh(problem):
    x, w = problem
    x0, w0 = x.copy(), w.copy()
    y = fastconv.conv2d(x, w, 1, 1, bias=np.zeros(4))
    g = fastconv.conv2d_backward(y, x, w, 1, 1)
    assert np.array_equal(x, x0) and np.array_equal(w, w0)
    for a in (y, g.x, g.w, g.b):
        assert a.flags.c_contiguous and a.flags.writeable
        assert not np.shares_memory(a, x) and not np.shares_memory(a, w)


@pytest.mark.parametrize("engine", FAST_ENGINES + ("reference",))
@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_empty_batch(engine, layout):
    x = np.zeros((0, 3, 8, 8)) if layout == "NCHW" else np.zeros((0, 8, 8, 3))
    w = np.zeros((5, 3, 3, 3)) if layout == "NCHW" else np.zeros((3, 3, 3, 5))
    y = fastconv.conv2d(x, w, 2, 1, layout=layout, backend=engine)
    assert y.shape == ((0, 5, 4, 4) if layout == "NCHW" else (0, 4, 4, 5))
    g = fastconv.conv2d_backward(y, x, w, 2, 1, layout=layout, backend=engine)
    assert g.x.shape == x.shape and g.w.shape == w.shape and not g.w.any() and g.b.shape == (5,)


def test_wrt_selects_gradients(problem):
    x, w = problem
    gy = np.ones(fastconv.output_shape(x, w))
    g = fastconv.conv2d_backward(gy, x, w, wrt=("w",))
    assert g.x is None and g.b is None and g.w.shape == w.shape
    g = fastconv.conv2d_backward(gy, x, w, wrt="x")
    assert g.w is None and g.x.shape == x.shape
    assert isinstance(g, fastconv.ConvGrads) and g._fields == ("x", "w", "b")


def test_lists_are_accepted():
    y = fastconv.conv2d([[[[1, 2], [3, 4]]]], [[[[1, 1], [1, 1]]]])
    assert y.dtype == np.float64 and y.shape == (1, 1, 1, 1) and y[0, 0, 0, 0] == 10


def test_backends_and_dispatch():
    assert fastconv.backends() == ("direct", "im2col", "winograd", "reference")
    from fastconv._geometry import ConvGeometry
    from fastconv._validate import geometry
    g = geometry((8, 32, 112, 112), (32, 1, 3, 3), 1, 1, 1, 32, 0)
    assert isinstance(g, ConvGeometry)
    choice = fastconv.choose_backend(g, np.float32, 2)
    assert choice == fastconv.choose_backend(g, np.float32, 2)  # pure
    assert set(choice) == {"forward", "grad_input", "grad_weight"}
    assert set(choice.values()) <= {"direct", "im2col"}


def test_thread_control():
    n0 = fastconv.get_num_threads()
    with fastconv.num_threads(1):
        assert fastconv.get_num_threads() == 1
        from fastconv._blas import blas_libraries
        assert all(lib.get_num_threads() == 1 for lib in blas_libraries())
        y = fastconv.conv2d(np.ones((1, 1, 4, 4)), np.ones((1, 1, 2, 2)), backend="im2col")
        assert y.sum() == 36
    assert fastconv.get_num_threads() == n0
    with pytest.raises(ValueError, match="n must be a positive integer"):
        fastconv.set_num_threads(0)
    with pytest.raises(TypeError, match="n must be a positive integer"):
        fastconv.set_num_threads("2")



@pytest.mark.parametrize("env, expected", [
    ({"OMP_NUM_THREADS": "1"}, 1),                            # what Dask's nanny sets
    ({"OMP_NUM_THREADS": "3,1"}, 3),                          # nested levels: the first
    ({"OMP_NUM_THREADS": "1", "FASTCONV_NUM_THREADS": "2"}, 2),  # ours wins
    ({"OMP_NUM_THREADS": "many"}, None),                      # OpenMP's to judge: ignored
])
def test_default_thread_count_honours_omp_num_threads(monkeypatch, env, expected):
    from fastconv import _threads
    monkeypatch.delenv("FASTCONV_NUM_THREADS", raising=False)
    if "FASTCONV_NUM_THREADS" in env:
        monkeypatch.setenv("FASTCONV_NUM_THREADS", env["FASTCONV_NUM_THREADS"])
    monkeypatch.setattr(_threads, "_OMP_AT_IMPORT", env["OMP_NUM_THREADS"])  # read at import
    assert _threads._default_threads() == (expected or _threads.available_cores())


def test_thread_budget_caps_this_thread_only():
    import threading

    from fastconv._threads import GRAIN_FLOPS, thread_budget, threads_for, threads_here
    seen = {}
    with fastconv.num_threads(2):
        with thread_budget(1):
            seen["budget"] = (threads_here(), threads_for(100 * GRAIN_FLOPS))
            other = threading.Thread(target=lambda: seen.update(other=threads_here()))
            other.start()
            other.join()
            assert fastconv.get_num_threads() == 2  # the process-wide count is untouched
        seen["after"] = threads_here()
        with thread_budget(4):  # a budget caps, never raises, the count
            seen["above"] = threads_here()
    assert seen == {"budget": (1, 1), "other": 2, "after": 2, "above": 2}
    with pytest.raises(ValueError, match="n must be a positive integer"):
        with thread_budget(0):
            pass


def test_show_config(capsys):
    fastconv.show_config()
    out = capsys.readouterr().out
    assert fastconv.__version__ in out
    for key in ("direct engine", "OpenMP", "im2col engine", "Numba", "fastconv's threads", "BLAS",
                "threads"):
        assert key in out, key
