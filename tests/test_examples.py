"""Worked examples from the classic explanations of convolutional networks."""
import numpy as np
import pytest
from conftest import ALL_ENGINES

import fastconv


@pytest.mark.parametrize("engine", ALL_ENGINES)
def test_alexnet_conv1_output_volume(engine):
    """227x227x3 input, 96 filters of 11x11, stride 4, pad 0: (227 - 11 + 0)/4 + 1 = 55."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, 3, 227, 227)).astype(np.float32)
    w = rng.standard_normal((96, 3, 11, 11)).astype(np.float32)
    assert fastconv.output_shape(x, w, 4, 0) == (1, 96, 55, 55)
    y = fastconv.conv2d(x, w, 4, 0, backend=engine)
    assert y.shape == (1, 96, 55, 55)
    # One output by hand: filter 5 at output row 10, column 20.
    expected = np.sum(x[0, :, 40:51, 80:91] * w[5], dtype=np.float64)
    assert np.isclose(y[0, 5, 10, 20], expected, rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("engine", ALL_ENGINES)
def test_cs231n_numpy_example(engine):
    """CS231n: X is 11x11x4, two 5x5x4 filters, stride 2, no pad: V is 4x4x2.

    V[0,0,0] = np.sum(X[:5,:5,:] * W0) + b0, and moving one output step moves the
    window by the stride.
    """
    rng = np.random.default_rng(1)
    X = rng.standard_normal((11, 11, 4))
    W0, W1 = rng.standard_normal((2, 5, 5, 4))
    b = np.array([0.5, -1.0])
    w = np.stack([W0, W1], axis=-1)  # HWIO: (5, 5, 4, 2)
    V = fastconv.conv2d(X, w, 2, 0, bias=b, layout="NHWC", backend=engine)
    assert V.shape == (4, 4, 2)
    assert np.isclose(V[0, 0, 0], np.sum(X[:5, :5, :] * W0) + b[0])
    assert np.isclose(V[1, 0, 0], np.sum(X[2:7, :5, :] * W0) + b[0])
    assert np.isclose(V[3, 2, 1], np.sum(X[6:11, 4:9, :] * W1) + b[1])


@pytest.mark.parametrize("engine", ALL_ENGINES)
def test_1x1_convolution_is_a_fully_connected_layer(engine):
    """A 1x1 conv applies the same dense layer ReLU(W x + b) at every position."""
    W = np.array([[0.0, 1, 1], [2, 3, 5]])
    b = np.array([8.0, 13])
    rng = np.random.default_rng(2)
    x = rng.standard_normal((1, 3, 4, 5))
    y = np.maximum(fastconv.conv2d(x, W[:, :, None, None], bias=b, backend=engine), 0)
    for i in range(4):
        for j in range(5):
            assert np.allclose(y[0, :, i, j], np.maximum(W @ x[0, :, i, j] + b, 0), rtol=1e-12)
    # A single 1x1 image [1, 2, 3]: W x + b = [5 + 8, 23 + 13].
    one = fastconv.conv2d(np.array([1.0, 2, 3]).reshape(3, 1, 1), W[:, :, None, None], bias=b,
                          backend=engine)
    assert np.array_equal(np.maximum(one.ravel(), 0), [1 * 0 + 2 * 1 + 3 * 1 + 8,
                                                      2 * 1 + 3 * 2 + 5 * 3 + 13])
