"""Every bad input raises ValueError or TypeError naming the argument, and loses nothing."""
import numpy as np
import pytest

import fastconv

X = np.ones((2, 4, 8, 8))
W = np.ones((6, 4, 3, 3))
GY = np.ones((2, 6, 6, 6))

CASES = [
    # (description, call, exception, text the message must contain)
    ("x ndim", lambda: fastconv.conv2d(np.ones((4, 8)), W), ValueError, "x must be a 4-D"),
    ("w ndim", lambda: fastconv.conv2d(X, np.ones((6, 4, 3))), ValueError, "w must be a 4-D"),
    ("channel mismatch", lambda: fastconv.conv2d(X, np.ones((6, 3, 3, 3))), ValueError,
     "w's input-channel dimension"),
    ("groups do not divide C", lambda: fastconv.conv2d(X, np.ones((6, 1, 3, 3)), groups=3),
     ValueError, "groups must divide the input channels C=4"),
    ("groups do not divide K", lambda: fastconv.conv2d(X, np.ones((6, 1, 3, 3)), groups=4),
     ValueError, "groups must divide the filters K=6"),
    ("bias shape", lambda: fastconv.conv2d(X, W, bias=np.ones(5)), ValueError,
     "bias must have shape (K,) = (6,)"),
    ("bias 2-D", lambda: fastconv.conv2d(X, W, bias=np.ones((6, 1))), ValueError, "bias"),
    ("stride 0", lambda: fastconv.conv2d(X, W, 0), ValueError, "stride must be >= 1, got 0"),
    ("stride pair", lambda: fastconv.conv2d(X, W, (1, 0)), ValueError, "stride must be >= 1"),
    ("stride float", lambda: fastconv.conv2d(X, W, 1.5), TypeError, "stride must be an int"),
    ("stride triple", lambda: fastconv.conv2d(X, W, (1, 1, 1)), ValueError, "stride must be"),
    ("dilation 0", lambda: fastconv.conv2d(X, W, dilation=0), ValueError, "dilation must be >= 1"),
    ("groups 0", lambda: fastconv.conv2d(X, W, groups=0), ValueError, "groups must be >= 1"),
    ("negative pad", lambda: fastconv.conv2d(X, W, 1, -1), ValueError, "pad must be >= 0, got -1"),
    ("negative side pad", lambda: fastconv.conv2d(X, W, 1, ((0, 1), (-2, 0))), ValueError,
     "pad must be >= 0"),
    ("unknown pad", lambda: fastconv.conv2d(X, W, 1, "sam"), ValueError,
     "'valid', 'same', 'full'; got 'sam'"),
    ("huge pad", lambda: fastconv.conv2d(X, W, 1, 2**70), ValueError, "pad must be <="),
    ("huge stride", lambda: fastconv.conv2d(X, W, 2**63), ValueError, "stride must be <="),
    ("unknown layout", lambda: fastconv.conv2d(X, W, layout="NWHC"), ValueError,
     "layout must be one of 'NCHW', 'NHWC'; got 'NWHC'"),
    ("layout not a string", lambda: fastconv.conv2d(X, W, layout=None), TypeError, "layout"),
    ("unknown backend", lambda: fastconv.conv2d(X, W, backend="gpu"), ValueError,
     "backend must be one of 'auto', 'direct', 'im2col', 'winograd', 'reference'; got 'gpu'"),
    ("kernel larger than input", lambda: fastconv.conv2d(X, np.ones((6, 4, 9, 3))), ValueError,
     "larger than the padded input"),
    ("dilated kernel too large", lambda: fastconv.conv2d(X, W, dilation=4), ValueError,
     "larger than the padded input"),
    ("complex dtype", lambda: fastconv.conv2d(X.astype(complex), W), TypeError,
     "x must have a real numeric dtype"),
    ("object dtype", lambda: fastconv.conv2d(X.astype(object), W), TypeError, "x must have"),
    ("string input", lambda: fastconv.conv2d("abc", W), TypeError, "x must be an array"),
    ("None weights", lambda: fastconv.conv2d(X, None), TypeError, "w must be an array"),
    ("dict input", lambda: fastconv.conv2d({"a": 1}, W), TypeError, "x must be an array"),
    ("ragged list", lambda: fastconv.conv2d([[1, 2], [3]], W), TypeError, "x must be an array"),
    ("flip not bool", lambda: fastconv.conv2d(X, W, flip="yes"), TypeError, "flip must be"),
    ("grad_y shape", lambda: fastconv.conv2d_backward(np.ones((2, 6, 5, 6)), X, W), ValueError,
     "grad_y must have the forward output's shape (2, 6, 6, 6), got (2, 6, 5, 6)"),
    ("grad_y dtype", lambda: fastconv.conv2d_backward(GY.astype(complex), X, W), TypeError,
     "grad_y must have a real numeric dtype"),
    ("wrt", lambda: fastconv.conv2d_backward(GY, X, W, wrt=("x", "bias")), ValueError, "wrt"),
    ("output too large", lambda: fastconv.conv2d(np.ones((1, 1, 1, 1)), np.ones((1, 1, 1, 1)),
                                                 1, 2**30), MemoryError, "GiB"),
]


@pytest.mark.parametrize("call,exc,text", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_raises_clear_error(call, exc, text):
    x0, w0, gy0 = X.copy(), W.copy(), GY.copy()
    with pytest.raises(exc) as info:
        call()
    assert text in str(info.value)
    assert np.array_equal(X, x0) and np.array_equal(W, w0) and np.array_equal(GY, gy0)


def test_nhwc_messages_name_the_nhwc_shapes():
    with pytest.raises(ValueError, match=r"\(N, H, W, C\)"):
        fastconv.conv2d(np.ones((8, 8)), np.ones((3, 3, 4, 6)), layout="NHWC")
    with pytest.raises(ValueError, match=r"\(R, S, C/groups, K\)"):
        fastconv.conv2d(np.ones((1, 8, 8, 4)), np.ones((3, 3, 4)), layout="NHWC")


def test_output_shape_validates_too():
    with pytest.raises(ValueError, match="larger than the padded input"):
        fastconv.output_shape((1, 3, 4, 4), (2, 3, 5, 5))
