"""fastconv.dask on the threaded scheduler: every pass, every chunking, against fastconv
on the whole NumPy array; the graph's shape (halos, tree reductions); the checks made
before any task runs, with fastconv's own messages.

The cluster and the processes scheduler: tests/test_dask_cluster.py.
"""
import subprocess
import sys

import numpy as np
import pytest

da = pytest.importorskip("dask.array")
pytest.importorskip("distributed")
import dask  # noqa: E402
from dask.core import flatten  # noqa: E402
from conftest import assert_close  # noqa: E402
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

import fastconv  # noqa: E402
import fastconv.dask as fd  # noqa: E402


def _threads(*arrays):
    return dask.compute(*arrays, scheduler="threads")


def _problem(rng, x_shape, w_shape, dtype=np.float64, layout="NCHW", bias=True):
    x = rng.standard_normal(x_shape).astype(dtype)
    w = rng.standard_normal(w_shape).astype(dtype)
    K = w_shape[-1] if layout == "NHWC" else w_shape[0]
    return x, w, (rng.standard_normal(K).astype(dtype) if bias else None)


def _check_passes(functions, x, w, b, chunks, dtype, compute, opts):
    """Every pass of a fastconv.dask function pair (forward, backward) on x chunked so,
    against fastconv's pair of the same names, the Dask arrays computed by ``compute``;
    returns the forward output."""
    forward, backward = functions
    rng = np.random.default_rng(7)
    xd = da.from_array(x, chunks=chunks)
    y = getattr(fd, forward)(xd, w, bias=b, **opts)
    expected = getattr(fastconv, forward)(x, w, bias=b, **opts)
    gy = rng.standard_normal(expected.shape).astype(dtype)
    grads = getattr(fd, backward)(da.from_array(gy, chunks=y.chunks), xd, w, **opts)
    got = compute(y, *grads)
    assert_close(got[0], expected, dtype, "forward")
    for name, a, e in zip("xwb", got[1:], getattr(fastconv, backward)(gy, x, w, **opts)):
        assert_close(a, e, dtype, f"grad {name}")
    return y


def _check_conv2d(x, w, b, chunks, dtype=np.float64, compute=_threads, **opts):
    """Every pass of fastconv.dask.conv2d on x chunked so, against fastconv.conv2d (on
    the threaded scheduler by default)."""
    return _check_passes(("conv2d", "conv2d_backward"), x, w, b, chunks, dtype, compute, opts)


# (x shape, w shape, x chunks, options): batch chunks; spatial chunks, uneven; chunks
# thinner than the kernel's reach; stride 2 and 3; dilation 2; "same" padding; NHWC;
# groups; flip; per-side pads; a kernel narrower than its stride.
CASES = {
    "batch": ((5, 3, 9, 8), (4, 3, 3, 3), (2, 3, 9, 8), dict(pad=1)),
    "spatial uneven": ((2, 3, 13, 11), (4, 3, 3, 3), (1, 3, 5, 4), dict(pad=1)),
    "thinner than reach": ((1, 2, 12, 10), (3, 2, 5, 3), (1, 2, 1, 2),
                           dict(pad=2, dilation=(2, 1))),
    "stride 2 same": ((2, 3, 15, 12), (4, 3, 3, 3), (1, 3, 4, 5),
                      dict(stride=2, pad="same")),
    "stride 3": ((1, 2, 17, 16), (3, 2, 4, 2), (1, 2, (7, 3, 7), 5), dict(stride=3, pad=1)),
    "dilation 2 full": ((1, 2, 11, 9), (2, 2, 3, 3), (1, 2, 3, 2),
                        dict(dilation=2, pad="full")),
    "per-side pads": ((1, 2, 10, 10), (2, 2, 3, 2), (1, 2, 3, 4),
                      dict(pad=((3, 0), (1, 4)), stride=(2, 1))),
    "narrow kernel, wide stride": ((1, 2, 13, 13), (2, 2, 1, 1), (1, 2, 2, 3),
                                   dict(stride=3, pad=2)),
    "groups, flip": ((2, 4, 9, 9), (6, 2, 3, 3), (1, 4, 4, 4),
                     dict(groups=2, flip=True, pad=1)),
    "depthwise": ((1, 3, 8, 8), (3, 1, 3, 3), (1, 3, 3, 3), dict(groups=3, pad="same")),
}


@pytest.mark.parametrize("case", list(CASES))
def test_conv2d_every_pass_matches_fastconv(case, rng):
    x_shape, w_shape, chunks, opts = CASES[case]
    x, w, b = _problem(rng, x_shape, w_shape)
    _check_conv2d(x, w, b, chunks, **opts)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_nhwc_and_dtypes(dtype, rng):
    x, w, b = _problem(rng, (2, 11, 10, 3), (3, 3, 3, 4), dtype, "NHWC")
    _check_conv2d(x, w, b, (1, 4, 3, 3), dtype, stride=2, pad="same", layout="NHWC")


def test_stride_one_same_padding_keeps_the_chunks(rng):
    x, w, b = _problem(rng, (1, 2, 12, 12), (2, 2, 3, 3))
    y = _check_conv2d(x, w, b, (1, 2, (5, 4, 3), 6), pad="same")
    assert y.chunks[2:] == ((5, 4, 3), (6, 6))
    y2 = fd.conv2d(da.from_array(x, chunks=(1, 2, 4, 6)), w, stride=2, pad=1)
    assert y2.chunks[2:] == ((2, 2, 2), (3, 3))  # aligned chunks: divided by the stride


def test_unbatched_image_and_mixed_dtypes(rng):
    x = rng.standard_normal((2, 9, 9)).astype(np.float32)
    w = rng.standard_normal((3, 2, 3, 3))  # float64: the result is float64, as conv2d's
    y = fd.conv2d(da.from_array(x, chunks=(2, 4, 4)), w, pad=1)
    assert y.ndim == 3 and y.dtype == np.float64
    assert_close(y.compute(scheduler="threads"), fastconv.conv2d(x, w, pad=1), np.float64)
    xi = np.arange(2 * 81).reshape(1, 2, 9, 9)  # ints become float64
    yi = fd.conv2d(da.from_array(xi, chunks=(1, 2, 3, 9)), w)
    assert_close(yi.compute(scheduler="threads"), fastconv.conv2d(xi, w), np.float64)


def test_weights_and_bias_as_dask_arrays(rng):
    x, w, b = _problem(rng, (2, 3, 8, 8), (4, 3, 3, 3))
    xd = da.from_array(x, chunks=(1, 3, 3, 3))
    y = fd.conv2d(xd, da.from_array(w, chunks=2), bias=da.from_array(b, chunks=1), pad=1)
    assert_close(y.compute(scheduler="threads"), fastconv.conv2d(x, w, bias=b, pad=1),
                 np.float64)


def _check_transposed(x, w, b, chunks, dtype=np.float64, compute=_threads, **opts):
    return _check_passes(("conv_transpose2d", "conv_transpose2d_backward"), x, w, b, chunks,
                         dtype, compute, opts)


TRANSPOSED = {
    "batch": ((4, 3, 5, 6), (3, 2, 3, 3), (1, 3, 5, 6), dict(stride=2, pad=1)),
    "spatial": ((2, 3, 9, 7), (3, 2, 3, 2), (1, 3, 2, 3), dict(stride=2, output_padding=1)),
    "thin chunks, dilation": ((1, 2, 7, 7), (2, 2, 3, 3), (1, 2, 1, 2),
                              dict(stride=3, dilation=2, pad=2, output_padding=2)),
    "cropping pads, groups": ((1, 4, 6, 6), (4, 1, 4, 4), (1, 4, 4, 2),
                              dict(stride=2, pad=((3, 0), (0, 2)), groups=2, flip=True)),
}


@pytest.mark.parametrize("case", list(TRANSPOSED))
def test_conv_transpose2d_every_pass_matches_fastconv(case, rng):
    x_shape, w_shape, chunks, opts = TRANSPOSED[case]
    x, w, _ = _problem(rng, x_shape, w_shape, bias=False)
    C_out = w_shape[1] * opts.get("groups", 1)
    _check_transposed(x, w, rng.standard_normal(C_out), chunks, **opts)


def test_transposed_output_convolves_back_to_the_input_chunks(rng):
    """Output chunk i starts at x's chunk i times the stride: conv2d at that stride gives
    x's chunks back (an encoder's and a decoder's chunks line up)."""
    x, w, _ = _problem(rng, (1, 3, 12, 8), (3, 2, 4, 4), bias=False)
    y = _check_transposed(x, w, None, (1, 3, (4, 4, 4), (3, 5)), stride=2, pad=1)
    assert y.chunks[2:] == ((8, 8, 8), (6, 10))
    back = fd.conv2d(y, np.ones((3, 2, 4, 4)), stride=2, pad=1)
    assert back.chunks[2:] == ((4, 4, 4), (3, 5))


@pytest.mark.parametrize("layout", ["NCL", "NLC"])
def test_conv1d_and_transposed_every_pass(layout, rng):
    nlc = layout == "NLC"
    x = rng.standard_normal((3, 25, 4) if nlc else (3, 4, 25))
    w = rng.standard_normal((5, 2, 4) if nlc else (4, 2, 5))  # (R, Cg, K) or (K, Cg, R)
    opts = dict(stride=2, pad="same", dilation=2, groups=2, layout=layout)
    xd = da.from_array(x, chunks=(2, 4, 4))  # L in chunks of 4, the 4 channels in one
    y = fd.conv1d(xd, w, **opts)
    gy = rng.standard_normal(y.shape)
    got = _threads(y, *fd.conv1d_backward(da.from_array(gy, chunks=y.chunks), xd, w, **opts))
    assert_close(got[0], fastconv.conv1d(x, w, **opts), np.float64, "forward")
    for a, e in zip(got[1:], fastconv.conv1d_backward(gy, x, w, **opts)):
        assert_close(a, e, np.float64, "grads")
    wt = rng.standard_normal((3, 3, 4) if nlc else (4, 3, 3))  # (R,Cgo,C_in) or (C_in,Cgo,R)
    topts = dict(stride=3, pad=1, output_padding=2, layout=layout)
    yt = fd.conv_transpose1d(xd, wt, **topts)
    gyt = rng.standard_normal(yt.shape)
    got = _threads(yt, *fd.conv_transpose1d_backward(da.from_array(gyt, chunks=yt.chunks),
                                                     xd, wt, **topts))
    assert_close(got[0], fastconv.conv_transpose1d(x, wt, **topts), np.float64, "forward")
    for a, e in zip(got[1:], fastconv.conv_transpose1d_backward(gyt, x, wt, **topts)):
        assert_close(a, e, np.float64, "grads")


# --- the graph ------------------------------------------------------------------------

def _dependencies(a):
    return a.__dask_graph__().get_all_dependencies()


def _x_row_chunks_read(y, x):
    """For each block of y, how many of x's row chunks its task reads, directly or
    through the getitem tasks that cut halo strips."""
    deps = _dependencies(y)

    def x_chunks(key):
        direct = {d for d in deps[key] if d[0] == x.name}
        cut = {c for d in deps[key] if d[0].endswith("-halo") for c in deps[d]}
        return direct | cut
    return [len({c[3] for c in x_chunks(k)}) for k in flatten(y.__dask_keys__())]  # NCHW: H


def test_halo_comes_from_chunks_beyond_the_neighbours(rng):
    """Chunks of one row under a kernel reaching 9 rows: each window takes rows from
    nine chunks, and chunk by chunk convolution (no halo) would be wrong here."""
    x, w, b = _problem(rng, (1, 2, 12, 6), (2, 2, 5, 1))
    opts = dict(pad=((4, 4), (0, 0)), dilation=(2, 1))
    y = _check_conv2d(x, w, b, (1, 2, 1, 6), **opts)
    assert max(_x_row_chunks_read(y, da.from_array(x, chunks=(1, 2, 1, 6)))) == 9
    no_halo = da.from_array(x, chunks=(1, 2, 1, 6)).map_blocks(
        lambda blk: fastconv.conv2d(blk, w, bias=b, **opts), dtype=x.dtype)
    assert not np.allclose(no_halo.compute(scheduler="threads"),
                           fastconv.conv2d(x, w, bias=b, **opts))


def _tree_shape(total: da.Array, partial_name: str):
    """(the most inputs any task of Dask's reduction takes, the tree's depth from the
    partials up to the total, whether some task takes every partial)."""
    deps = _dependencies(total)
    partials = {k for k in deps if k[0] == partial_name}
    fan_in = max(len(d) for k, d in deps.items() if k[0].startswith("sum"))

    def depth(key):
        return 0 if key in partials else 1 + max(depth(d) for d in deps[key])
    every = any(partials <= d for d in deps.values())
    return fan_in, depth(next(flatten(total.__dask_keys__()))), every


@pytest.mark.parametrize("split_every", [2, 4])
def test_weight_and_bias_gradients_reduce_by_a_tree(split_every, rng):
    """16 blocks of grad_y: no task receives all 16 partials; each adds at most
    split_every, through more than one level."""
    x, w, _ = _problem(rng, (4, 2, 8, 8), (3, 2, 3, 3), bias=False)
    xd = da.from_array(x, chunks=(1, 2, 4, 4))
    y = fd.conv2d(xd, w, pad=1)
    g = fd.conv2d_backward(y, xd, w, pad=1, wrt=("w", "b"), split_every=split_every)
    for total in (g.w, g.b):
        partial_name = next(k[0] for k in _dependencies(total) if k[0].startswith(
            ("fastconv-grad-weight", "fastconv-grad-bias")) and not k[0].endswith("-halo"))
        fan_in, depth, every = _tree_shape(total, partial_name)
        assert not every and fan_in <= split_every and depth >= 2, (fan_in, depth)
    got = _threads(g.w, g.b)
    expected = fastconv.conv2d_backward(fastconv.conv2d(x, w, pad=1), x, w, pad=1)
    assert_close(got[0], expected.w, np.float64)
    assert_close(got[1], expected.b, np.float64)


def test_grad_input_adds_overlapping_contributions_into_their_owners(rng):
    x, w, _ = _problem(rng, (1, 1, 9, 9), (1, 1, 3, 3), bias=False)
    xd = da.from_array(x, chunks=(1, 1, 3, 3))
    gy = da.from_array(np.ones((1, 1, 9, 9)), chunks=(1, 1, 3, 3))
    gx = fd.conv2d_backward(gy, xd, w, pad=1, wrt="x").x
    deps = _dependencies(gx)
    centre = deps[(gx.name, 0, 0, 1, 1)]
    assert len(centre) == 9  # its own block's contribution and its 8 neighbours' halos
    assert_close(gx.compute(scheduler="threads"),
                 fastconv.conv2d_backward(np.ones((1, 1, 9, 9)), x, w, pad=1, wrt="x").x,
                 np.float64)


def test_callers_arrays_are_untouched_and_weights_are_copied(rng):
    x, w, b = _problem(rng, (2, 3, 8, 8), (4, 3, 3, 3))
    gy = rng.standard_normal((2, 4, 8, 8))
    saved = [a.copy() for a in (x, w, b, gy)]
    xd = da.from_array(x, chunks=(1, 3, 3, 3))
    y = fd.conv2d(xd, w, bias=b, pad=1)
    grads = fd.conv2d_backward(da.from_array(gy, chunks=y.chunks), xd, w, pad=1)
    _threads(y, *grads)
    for a, s in zip((x, w, b, gy), saved):
        assert np.array_equal(a, s)
    w += 1.0  # after the graph is built: an optimiser's step, say
    b -= 1.0
    got = _threads(y, grads.w)
    assert_close(got[0], fastconv.conv2d(x, saved[1], bias=saved[2], pad=1), np.float64)
    assert_close(got[1], fastconv.conv2d_backward(gy, x, saved[1], pad=1).w, np.float64)


def test_importing_fastconv_does_not_import_dask():
    code = "import sys, fastconv; print('dask' in sys.modules, 'distributed' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.split() == ["False", "False"]


# --- checks before any task runs -------------------------------------------------------

def _unreadable(shape, chunks):
    """A Dask array whose every chunk raises when computed: a check that reads it fails."""
    def boom(block):
        raise AssertionError("a task ran")
    return da.zeros(shape, chunks=chunks).map_blocks(boom, dtype=np.float64)


X, W = np.ones((2, 3, 8, 8)), np.ones((4, 3, 3, 3))
BAD = {  # the argument conv2d is given, as keyword arguments over (x, w) above
    "stride 0": dict(stride=0),
    "pad word": dict(pad="half"),
    "pad negative": dict(pad=-1),
    "dilation pair": dict(dilation=(1, 2, 3)),
    "groups": dict(groups=2),
    "layout": dict(layout="NCWH"),
    "flip int": dict(flip=1),
    "backend": dict(backend="fast"),
    "kernel too large": dict(w=np.ones((4, 3, 9, 9))),
    "w depth": dict(w=np.ones((4, 2, 3, 3))),
    "w 3-D": dict(w=np.ones((4, 3, 3))),
    "bias shape": dict(bias=np.ones(3)),
    "bias string": dict(bias="b"),
    "w complex": dict(w=np.ones((4, 3, 3, 3), complex)),
    "x complex": dict(x=np.ones((2, 3, 8, 8), complex)),
    "x 5-D": dict(x=np.ones((1, 2, 3, 8, 8))),
    "winograd stride": dict(stride=3, backend="winograd"),  # phases do not tile 8 rows
}


def _bad_call(case):
    kw = dict(BAD[case])
    x, w = kw.pop("x", X), kw.pop("w", W)
    return x, w, kw


@pytest.mark.parametrize("case", list(BAD))
def test_bad_arguments_give_conv2ds_errors_before_any_task(case):
    x, w, kw = _bad_call(case)
    with pytest.raises((TypeError, ValueError)) as expected:
        fastconv.conv2d(x, w, **kw)
    xd = _unreadable(x.shape, 4).astype(x.dtype)
    with pytest.raises(expected.type) as got:
        fd.conv2d(xd, w, **kw)
    assert str(got.value) == str(expected.value)


@pytest.mark.parametrize("case", ["stride 0", "pad word", "groups", "w depth", "wrt",
                                  "grad_y shape", "grad_y complex", "winograd stride"])
def test_bad_backward_arguments_give_conv2d_backwards_errors(case):
    kw = {"wrt": dict(wrt=("x", "y"))}.get(case, {})
    x, w = X, W
    if case in BAD:
        x, w, kw = _bad_call(case)
    gy = {"grad_y shape": np.ones((2, 4, 7, 8)), "grad_y complex": np.ones((2, 4, 6, 6), complex),
          "winograd stride": np.ones((2, 4, 2, 2))}.get(case, np.ones((2, 4, 6, 6)))
    with pytest.raises((TypeError, ValueError)) as expected:
        fastconv.conv2d_backward(gy, x, w, **kw)
    with pytest.raises(expected.type) as got:
        fd.conv2d_backward(_unreadable(gy.shape, 3).astype(gy.dtype),
                           _unreadable(x.shape, 4).astype(x.dtype), w, **kw)
    assert str(got.value) == str(expected.value)


@pytest.mark.parametrize("fn, args", [
    ("conv1d", dict(x=np.ones((2, 3, 9)), w=np.ones((4, 3, 3)), pad="half")),
    ("conv1d", dict(x=np.ones((2, 3, 9)), w=np.ones((4, 3, 3, 1)))),
    ("conv1d", dict(x=np.ones((2, 3, 9)), w=np.ones((4, 3, 3)), stride=(1, 2))),
    ("conv_transpose2d", dict(x=np.ones((1, 3, 5, 5)), w=np.ones((3, 2, 3, 3)), pad="same")),
    ("conv_transpose2d", dict(x=np.ones((1, 3, 5, 5)), w=np.ones((3, 2, 3, 3)), stride=2,
                              output_padding=2)),
    ("conv_transpose2d", dict(x=np.ones((1, 3, 5, 5)), w=np.ones((3, 2, 3, 3)),
                              bias=np.ones(3))),
    ("conv_transpose1d", dict(x=np.ones((1, 3, 5)), w=np.ones((2, 2, 3)))),
    ("conv_transpose2d", dict(x=np.ones((1, 3, 5, 5)), w=np.ones((3, 2, 3, 3)), stride=2,
                              backend="winograd")),  # 11 rows: no stride phases
    ("conv1d", dict(x=np.ones((2, 3, 9)), w=np.ones((4, 3, 3)), backend="winograd")),
])
def test_other_functions_give_fastconvs_errors(fn, args):
    args = dict(args)
    x = args.pop("x")
    with pytest.raises((TypeError, ValueError)) as expected:
        getattr(fastconv, fn)(x, **args)
    with pytest.raises(expected.type) as got:
        getattr(fd, fn)(_unreadable(x.shape, (1, -1) + (2,) * (x.ndim - 2)), **args)
    assert str(got.value) == str(expected.value)


def test_a_numpy_x_is_a_type_error_naming_it():
    with pytest.raises(TypeError, match=r"x must be a dask\.array\.Array, got ndarray"):
        fd.conv2d(X, W)
    y = fd.conv2d(da.from_array(X, chunks=4), W)
    with pytest.raises(TypeError, match=r"grad_y must be a dask\.array\.Array"):
        fd.conv2d_backward(np.ones(y.shape), da.from_array(X, chunks=4), W)


def test_channels_in_chunks_are_refused():
    xd = _unreadable((2, 3, 8, 8), (2, 2, 8, 8))
    with pytest.raises(ValueError, match=r"x must hold its channel axis \(axis 1, 3 channels\) in "
                                         r"one chunk.*got chunks \(2, 1\).*rechunk\(\{1: -1\}\)"):
        fd.conv2d(xd, W)
    with pytest.raises(ValueError, match=r"axis 2, 3 channels"):
        fd.conv1d(_unreadable((2, 9, 3), (1, 9, 2)), np.ones((3, 3, 4)), layout="NLC")
    with pytest.raises(ValueError, match=r"axis 0, 3 channels"):
        fd.conv2d(_unreadable((3, 8, 8), (2, 8, 8)), W)


def test_grad_y_chunked_unlike_the_output_is_refused():
    xd = _unreadable((2, 3, 8, 8), (1, 3, 4, 4))
    y = fd.conv2d(xd, W, pad=1)
    with pytest.raises(ValueError, match=r"grad_y must be chunked as conv2d's output is for "
                                         r"x's chunks, \(\(1, 1\), \(4,\), \(4, 4\), \(4, 4\)\); "
                                         r"got \(\(2,\), \(4,\), \(8,\), \(8,\)\)"):
        fd.conv2d_backward(y.rechunk(-1), xd, W, pad=1)
    with pytest.raises(ValueError, match="grad_y must be chunked as conv1d's output"):
        fd.conv1d_backward(_unreadable((2, 4, 8), (2, 4, 8)), _unreadable((2, 3, 8), (2, 3, 4)),
                           np.ones((4, 3, 3)), pad=1)
    with pytest.raises(ValueError, match="split_every must be >= 2, got 1"):
        fd.conv2d_backward(y, xd, W, pad=1, split_every=1)


# --- threads --------------------------------------------------------------------------

@pytest.mark.parametrize("pool, expected", [(2, 1), (1, 2)])
def test_threaded_tasks_share_the_process_threads(monkeypatch, pool, expected):
    """Two tasks at once on the threaded scheduler run on one thread each, of two."""
    from fastconv._threads import kernel_threads
    seen = []
    conv2d = fastconv.conv2d

    def recording(*args, **kwargs):
        seen.append(kernel_threads())
        return conv2d(*args, **kwargs)
    monkeypatch.setattr(fastconv, "conv2d", recording)
    xd = da.ones((4, 3, 8, 8), chunks=(1, 3, 8, 8))
    with fastconv.num_threads(2), dask.config.set(num_workers=pool):
        fd.conv2d(xd, W).compute(scheduler="threads")
    assert seen == [expected] * 4


# --- random chunkings -----------------------------------------------------------------

def _chunking(draw, size):
    cuts = draw(st.lists(st.integers(1, max(size - 1, 1)), max_size=3, unique=True))
    cuts = sorted(c for c in cuts if c < size)
    return tuple(np.diff([0, *cuts, size]).tolist())


@st.composite
def _problems(draw):
    R, S = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    stride = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    dilation = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    pad = draw(st.one_of(st.sampled_from(["same", "valid", "full"]), st.integers(0, 3),
                         st.tuples(st.tuples(st.integers(0, 3), st.integers(0, 3)),
                                   st.tuples(st.integers(0, 3), st.integers(0, 3)))))
    H = draw(st.integers(dilation[0] * (R - 1) + 1, 14))
    W = draw(st.integers(dilation[1] * (S - 1) + 1, 14))
    N = draw(st.integers(1, 3))
    chunks = (_chunking(draw, N), 2, _chunking(draw, H), _chunking(draw, W))
    return (N, 2, H, W), (3, 2, R, S), chunks, dict(stride=stride, pad=pad, dilation=dilation)


@settings(max_examples=25, deadline=None)
@given(_problems(), st.integers(0, 2**32 - 1))
def test_random_chunkings_match_fastconv(problem, seed):
    x_shape, w_shape, chunks, opts = problem
    x, w, b = _problem(np.random.default_rng(seed), x_shape, w_shape)
    _check_conv2d(x, w, b, chunks, **opts)


@settings(max_examples=15, deadline=None)
@given(_problems(), st.integers(0, 1), st.integers(0, 2**32 - 1))
def test_random_chunkings_of_transposed_match_fastconv(problem, op, seed):
    x_shape, w_shape, chunks, opts = problem
    if isinstance(opts["pad"], str):
        opts["pad"] = 1
    op = tuple(min(op, max(s, d) - 1) for s, d in zip(opts["stride"], opts["dilation"]))
    rng = np.random.default_rng(seed)
    x, w, _ = _problem(rng, x_shape, w_shape[1::-1] + w_shape[2:], bias=False)
    try:
        fastconv.output_shape(x, w, transposed=True, output_padding=op, **opts)
    except ValueError:  # pads that crop the whole output
        return
    _check_transposed(x, w, rng.standard_normal(3), chunks, output_padding=op, **opts)


def test_winograd_stride_phases_need_whole_spatial_axes():
    # 4x4 at stride 2 runs through Winograd's stride phases, which must tile each block
    rng = np.random.default_rng(4)
    x = rng.standard_normal((4, 3, 8, 8))
    w = rng.standard_normal((5, 3, 4, 4))
    with pytest.raises(ValueError, match=r"backend='winograd' on a strided layer.*one chunk "
                                         r"each; got chunks \(\(4, 4\), \(8,\)\)"):
        fd.conv2d(da.from_array(x, chunks=(2, 3, 4, 8)), w, 2, 1, backend="winograd")
    with pytest.raises(ValueError, match="backend='winograd' on a strided layer"):
        fd.conv_transpose2d(da.from_array(x, chunks=(2, 3, 8, 4)), w.transpose(1, 0, 2, 3),
                            2, 1, backend="winograd")
    whole = da.from_array(x, chunks=(2, 3, 8, 8))  # batch chunks only: the phases tile
    np.testing.assert_allclose(fd.conv2d(whole, w, 2, 1, backend="winograd").compute(
        scheduler="threads"), fastconv.conv2d(x, w, 2, 1), rtol=0, atol=1e-11)
