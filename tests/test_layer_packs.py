"""Packed filters kept by a layer's inference calls: reused while the weights are
unchanged, dropped by every write through the layer, never stale."""
import numpy as np
import pytest

import fastconv
from fastconv import _direct

# Layers whose forward `auto` sends to the direct engine, one per packing driver:
# (class, in, out, kernel, kwargs, input shape).
CASES = [
    # tiled correlation through the product kernel (_run_corr, gemm blocks)
    (fastconv.Conv2d, 16, 24, 3, dict(pad=1), (2, 16, 20, 20)),
    # tiled correlation with filters along the vector (kvec): few output positions
    (fastconv.Conv2d, 64, 40, 3, dict(pad=1), (1, 64, 7, 7)),
    # strided, grouped, non-square, NHWC
    (fastconv.Conv2d, 8, 12, (3, 2), dict(stride=2, pad=1, groups=2, layout="NHWC"),
     (2, 11, 10, 8)),
    # pointwise product (_pw_run) and its strided form (_pws_run)
    (fastconv.Conv2d, 32, 20, 1, dict(), (2, 32, 24, 24)),
    (fastconv.Conv2d, 32, 20, 1, dict(stride=2), (2, 32, 41, 41)),
    (fastconv.Conv1d, 12, 18, 5, dict(pad=2), (3, 12, 50)),
    (fastconv.Conv1d, 12, 18, 3, dict(layout="NLC", stride=2), (3, 50, 12)),
]


def _fresh(layer, x):
    """The same call without the layer: packed for this call only."""
    f = fastconv.conv1d if isinstance(layer, fastconv.Conv1d) else fastconv.conv2d
    return f(x, layer.weight, layer.stride, layer.pad, bias=layer.bias,
             dilation=layer.dilation, groups=layer.groups, layout=layer.layout)


def _n_packs(layer):
    return 0 if layer._packs is None else _direct._packs_info(layer._packs)[0]


@pytest.fixture(params=CASES, ids=lambda c: f"{c[0].__name__}-{c[3]}-{sorted(c[4].items())}")
def case(request):
    cls, cin, cout, kernel, kw, x_shape = request.param
    rng = np.random.default_rng(0)
    return cls(cin, cout, kernel, rng=1, **kw), rng.standard_normal(x_shape).astype(np.float32)


def test_inference_calls_keep_and_reuse_the_pack(case):
    layer, x = case
    expected = _fresh(layer, x)
    first = layer(x, record=False)
    assert _n_packs(layer) >= 1  # the direct engine packed into the layer's dict
    kept = _direct._packs_info(layer._packs)
    second = layer(x, record=False)
    assert _direct._packs_info(layer._packs) == kept  # found, not packed again
    np.testing.assert_array_equal(first, expected)  # the same pack, bit for bit
    np.testing.assert_array_equal(second, expected)


def test_assigning_weight_drops_the_pack(case):
    layer, x = case
    layer(x, record=False)
    version = layer.weight_version
    layer.weight = -2 * layer.weight
    assert layer.weight_version == version + 1
    np.testing.assert_array_equal(layer(x, record=False), _fresh(layer, x))


def test_writing_in_place_then_weight_changed(case):
    layer, x = case
    layer(x, record=False)
    layer.weight[...] = np.random.default_rng(5).standard_normal(layer.weight.shape)
    layer.weight_changed()
    np.testing.assert_array_equal(layer(x, record=False), _fresh(layer, x))


def test_training_calls_and_parameters_drop_the_pack(case):
    layer, x = case
    layer(x, record=False)
    layer(x)  # a training call: an optimiser may write into the weights next
    assert layer._packs is None
    layer.backward(np.ones_like(layer(x, record=False)))
    layer.weight[...] *= 0.5  # an optimiser step after the training call
    layer(x, record=False)
    for p, _ in layer.parameters():
        p -= 0.25 * p  # the step an optimiser holding parameters() takes
    np.testing.assert_array_equal(layer(x, record=False), _fresh(layer, x))


def test_new_batch_sizes_get_packs_of_their_own_and_the_dict_is_bounded():
    layer = fastconv.Conv2d(64, 40, 3, pad=1, rng=0)
    rng = np.random.default_rng(0)
    for n in (1, 2, 3, 1, 5, 6, 7, 8, 9, 10, 11, 12):
        x = rng.standard_normal((n, 64, 7, 7)).astype(np.float32)
        np.testing.assert_array_equal(layer(x, record=False), _fresh(layer, x))
    assert 1 <= _n_packs(layer) <= 8


def test_a_converted_input_keeps_no_pack():
    # float64 input, float32 layer: the engine reads a converted copy of the weights,
    # made for this call; a pack of it must not be kept under the layer's name.
    layer = fastconv.Conv2d(16, 24, 3, pad=1, rng=0)
    x = np.random.default_rng(0).standard_normal((2, 16, 20, 20))
    y = layer(x, record=False)
    assert y.dtype == np.float64 and _n_packs(layer) == 0
    np.testing.assert_array_equal(y, _fresh(layer, x))


def test_weight_setter_checks_and_copies():
    layer = fastconv.Conv2d(4, 6, 3, rng=0)
    with pytest.raises(ValueError, match=r"weight must have shape \(6, 4, 3, 3\), got \(6, 4, 3\)"):
        layer.weight = np.zeros((6, 4, 3))
    with pytest.raises(TypeError, match="weight must be an array"):
        layer.weight = "zeros"
    src = np.ones((6, 4, 3, 3))
    layer.weight = src
    src[...] = 7  # the layer kept a copy of its own, in its dtype
    assert layer.weight.dtype == np.float32 and (layer.weight == 1).all()
