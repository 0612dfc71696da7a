"""Convolution as a matrix with tied weights; dense layers as convolutions."""
import numpy as np
import pytest
import scipy.sparse
from conftest import assert_close

import fastconv

DTYPES = (np.float32, np.float64)

# (C, H, W, K, R, S, options): stride, dilation, groups and every pad form.
CASES = [
    (1, 5, 5, 1, 3, 3, dict()),
    (3, 7, 6, 4, 3, 2, dict(stride=2, pad=1)),
    (4, 8, 7, 6, 2, 3, dict(stride=(1, 2), pad=((2, 0), (1, 2)), groups=2)),
    (2, 9, 9, 3, 3, 3, dict(dilation=(2, 1), pad="same")),
    (3, 6, 5, 3, 2, 2, dict(pad="full", groups=3, stride=(2, 3))),
    (2, 4, 4, 2, 3, 3, dict(pad=2, flip=True)),
]


def _problem(case, layout, dtype, rng):
    C, H, W, K, R, S, opts = case
    groups = opts.get("groups", 1)
    x = rng.standard_normal((C, H, W))
    w = rng.standard_normal((K, C // groups, R, S))
    if layout == "NHWC":
        x, w = x.transpose(1, 2, 0), w.transpose(2, 3, 1, 0)
    return x.astype(dtype), np.ascontiguousarray(w).astype(dtype), dict(opts, layout=layout)


def _ids(w):
    """The same filter bank, its weights replaced by the ids 1, 2, ... in memory order."""
    return np.arange(1.0, w.size + 1).reshape(w.shape)


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_columns_are_the_responses_to_unit_images(case, layout, rng):
    """Column j of M is the convolution of the image that is 1 at pixel j, 0 elsewhere."""
    x, w, opts = _problem(case, layout, np.float64, rng)
    M = fastconv.conv_matrix(w, x.shape, **opts, sparse=False)
    basis = np.eye(x.size).reshape((x.size,) + x.shape)
    responses = fastconv.conv2d(basis, w, backend="reference", **opts)
    assert_close(M, responses.reshape(x.size, -1).T, np.float64)


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_each_weight_appears_once_per_output_that_uses_it(case, layout, rng):
    """With distinct ids for weights: every stored entry is a weight; weight i appears
    as often as the number of output positions whose window puts it on a real pixel
    (conv2d's weight gradient for an all-ones image and all-ones grad_y), at most once
    per row; everything else is zero."""
    x, w, opts = _problem(case, layout, np.float64, rng)
    ids = _ids(w)
    M = fastconv.conv_matrix(ids, x.shape, **opts)
    assert isinstance(M, scipy.sparse.csr_array)
    dense = M.toarray()
    ones = np.ones(x.shape)
    uses = fastconv.conv2d_backward(np.ones(fastconv.output_shape(x, w, **{
        k: v for k, v in opts.items() if k != "flip"})), ones, w, wrt="w", **opts).w
    counts = np.bincount(dense.ravel().astype(np.int64), minlength=w.size + 1)
    assert np.array_equal(counts[1:], uses.ravel().astype(np.int64))
    assert counts[0] == dense.size - uses.sum()            # all other entries are zero
    assert M.nnz == uses.sum()                              # and not even stored
    for row in dense:                                       # no weight twice in one row
        used = row[row > 0]
        assert len(np.unique(used)) == len(used)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_forward_and_both_gradients_through_the_matrix(case, layout, dtype, rng):
    x, w, opts = _problem(case, layout, dtype, rng)
    y = fastconv.conv2d(x[None], w, **opts)
    gy = rng.standard_normal(y.shape).astype(dtype)
    g = fastconv.conv2d_backward(gy, x[None], w, **opts)
    for sparse in (True, False):
        M = fastconv.conv_matrix(w, x.shape, **opts, sparse=sparse)
        assert M.dtype == dtype and M.shape == (y.size, x.size)
        assert_close(M @ x.ravel(), y.ravel(), dtype, "forward")
        assert_close(M.T @ gy.ravel(), g.x.ravel(), dtype, "grad_input")
    # The weights are tied: the gradient of each weight is the gradient of the dense
    # matrix, outer(grad_y, x), summed over the entries of M that hold that weight.
    tie = fastconv.conv_matrix(_ids(w), x.shape, **opts, sparse=False).astype(np.int64)
    dense_grad = np.outer(gy.ravel().astype(np.float64), x.ravel())
    grad_w = np.bincount(tie.ravel(), weights=dense_grad.ravel(), minlength=w.size + 1)[1:]
    assert_close(g.w.ravel(), grad_w.astype(dtype), dtype, "grad_weight")


def test_a_small_matrix_by_hand():
    """A 2-tap filter on a 3-pixel row, stride 1, no pad: a banded Toeplitz matrix."""
    M = fastconv.conv_matrix(np.array([[[[2.0, 5.0]]]]), (1, 1, 3), sparse=False)
    assert np.array_equal(M, [[2, 5, 0], [0, 2, 5]])
    M = fastconv.conv_matrix(np.array([[[[2.0, 5.0]]]]), (1, 1, 3), flip=True, sparse=False)
    assert np.array_equal(M, [[5, 2, 0], [0, 5, 2]])


def test_conv_matrix_errors():
    w = np.ones((2, 3, 3, 3))
    with pytest.raises(ValueError, match="input_shape must be three positive ints"):
        fastconv.conv_matrix(w, (3, 8))
    with pytest.raises(TypeError, match="input_shape must be a tuple of three ints"):
        fastconv.conv_matrix(w, "3x8x8")
    with pytest.raises(ValueError, match="w's input-channel dimension"):
        fastconv.conv_matrix(w, (4, 8, 8))
    with pytest.raises(TypeError, match="sparse must be True or False"):
        fastconv.conv_matrix(w, (3, 8, 8), sparse="csr")


# Fully connected <-> convolution.

def _fc(W, b, x):
    return W @ x.ravel() + b


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_fc_equals_conv_on_exactly_that_size(dtype, layout, rng):
    shape = (5, 4, 3) if layout == "NCHW" else (4, 3, 5)
    W = rng.standard_normal((7, 60)).astype(dtype)
    b = rng.standard_normal(7).astype(dtype)
    x = rng.standard_normal(shape).astype(dtype)
    w, bc = fastconv.linear_to_conv(W, b, shape, layout=layout)
    assert w.shape == ((7, 5, 4, 3) if layout == "NCHW" else (4, 3, 5, 7))
    y = fastconv.conv2d(x, w, bias=bc, layout=layout)
    assert y.shape == ((7, 1, 1) if layout == "NCHW" else (1, 1, 7))
    assert_close(y.ravel(), _fc(W, b, x.astype(np.float64)), dtype)
    W2, b2 = fastconv.conv_to_linear(w, bc, layout=layout)
    assert np.array_equal(W2, W) and np.array_equal(b2, b)


@pytest.mark.parametrize("dtype", DTYPES)
def test_converted_network_slides_over_a_larger_input(dtype, rng):
    """LeCun: no fully connected layers, only convolutions. An FC net trained on 6x5
    windows, converted, maps a 10x12 input to a 5x8 grid whose every position is the
    FC net applied to the window there."""
    C, h, w_ = 3, 6, 5
    W1 = rng.standard_normal((16, C * h * w_)).astype(dtype)
    b1 = rng.standard_normal(16).astype(dtype)
    W2 = rng.standard_normal((4, 16)).astype(dtype)
    b2 = rng.standard_normal(4).astype(dtype)

    def fc_net(window):
        return _fc(W2, b2, np.maximum(_fc(W1, b1, window), 0))

    k1, c1 = fastconv.linear_to_conv(W1, b1, (C, h, w_))
    k2, c2 = fastconv.linear_to_conv(W2, b2, (16, 1, 1))        # a 1x1 convolution
    x = rng.standard_normal((2, C, 10, 12)).astype(dtype)
    y = fastconv.conv2d(np.maximum(fastconv.conv2d(x, k1, bias=c1), 0), k2, bias=c2)
    assert y.shape == (2, 4, 10 - h + 1, 12 - w_ + 1)
    for n in range(2):
        for i in range(y.shape[2]):
            for j in range(y.shape[3]):
                window = x[n, :, i:i + h, j:j + w_].astype(np.float64)
                assert_close(y[n, :, i, j], fc_net(window), dtype, f"position {(i, j)}")


@pytest.mark.parametrize("dtype", DTYPES)
def test_lenet5_c5_is_a_full_connection(dtype, rng):
    """C5: 120 feature maps of 1x1, each a 5x5 convolution over all 16 maps of S4."""
    w = rng.standard_normal((120, 16, 5, 5)).astype(dtype)
    b = rng.standard_normal(120).astype(dtype)
    s4 = rng.standard_normal((3, 16, 5, 5)).astype(dtype)
    c5 = fastconv.conv2d(s4, w, bias=b)
    assert c5.shape == (3, 120, 1, 1)
    W, bl = fastconv.conv_to_linear(w, b)
    assert W.shape == (120, 400)
    assert_close(c5[:, :, 0, 0], s4.reshape(3, 400).astype(np.float64) @ W.T + bl, dtype)
    # Every unit is connected to every input: the convolution's matrix is W, no zeros.
    M = fastconv.conv_matrix(w, (16, 5, 5), sparse=False)
    assert np.array_equal(M, W) and np.all(M != 0)


def test_the_1x1_example_with_relu():
    """W = [[0, 1, 1], [2, 3, 5]], b = [8, 13]: ReLU(W x + b) at every position."""
    W, b = np.array([[0.0, 1, 1], [2, 3, 5]]), np.array([8.0, 13])
    w, bc = fastconv.linear_to_conv(W, b, (3, 1, 1))
    assert w.shape == (2, 3, 1, 1)
    x = np.array([-5.0, -4.0, 1.0]).reshape(3, 1, 1)
    assert np.array_equal(np.maximum(fastconv.conv2d(x, w, bias=bc), 0).ravel(), [5, 0])
    assert np.array_equal(np.maximum(fastconv.conv2d([[[1]], [[2]], [[3]]], w, bias=bc), 0)
                          .ravel(), [13, 36])
    img = np.random.default_rng(3).standard_normal((3, 4, 5))
    y = np.maximum(fastconv.conv2d(img, w, bias=bc), 0)
    assert y.shape == (2, 4, 5)
    assert np.allclose(y, np.maximum(np.einsum("kc,chw->khw", W, img) + b[:, None, None], 0),
                       rtol=1e-12, atol=1e-12)


def test_fc_conversion_errors():
    with pytest.raises(ValueError, match=r"W must be a 2-D array \(K, 12\) for input_shape"):
        fastconv.linear_to_conv(np.ones((2, 10)), None, (3, 2, 2))
    with pytest.raises(ValueError, match=r"b must have shape \(K,\) = \(2,\)"):
        fastconv.linear_to_conv(np.ones((2, 12)), np.ones(3), (3, 2, 2))
    with pytest.raises(ValueError, match=r"w must be a 4-D array \(R, S, C, K\)"):
        fastconv.conv_to_linear(np.ones((2, 12)), layout="NHWC")
    w, b = fastconv.linear_to_conv(np.ones((2, 12)), None, (3, 2, 2))
    assert b is None and fastconv.conv_to_linear(w)[1] is None
