"""fastconv.networks: every convolution of the four networks, with shapes that fit
together; and the order and arrays ``fastconv bench --network`` runs them with."""
import itertools
import re

import numpy as np
import pytest

import fastconv
from fastconv import bench
from fastconv.networks import NETWORKS

PASSES = ("forward", "grad_input", "grad_weight")

COUNTS = {"resnet18": 20, "resnet50": 53, "vgg16": 13, "mobilenet_v2": 52}

# The block a layer belongs to, from its torchvision module path: the stem, a residual
# block (layer2.0) or a features entry (an inverted residual block, or one VGG conv).
_BLOCK = re.compile(r"conv1|layer\d+\.\d+|features\.\d+")
# The max pool in front of a block, as (window, stride, pad), from torchvision.
POOLS = {"resnet18": {"layer1.0": (3, 2, 1)}, "resnet50": {"layer1.0": (3, 2, 1)},
         "vgg16": {f"features.{i}": (2, 2, 0) for i in (5, 10, 17, 24)}, "mobilenet_v2": {}}
# (channels, height) of the last convolution's output at 224: what the classifier reads
# (VGG pools 14x14 once more to 7x7).
LAST = {"resnet18": (512, 7), "resnet50": (2048, 7), "vgg16": (512, 14),
        "mobilenet_v2": (1280, 7)}

# Multiply-accumulates per 224x224 image as torchvision's model tables give them
# (their "GFLOPS" column counts MACs), and the fully connected layers they include.
PUBLISHED_GMACS = {"resnet18": 1.81, "resnet50": 4.09, "vgg16": 15.47, "mobilenet_v2": 0.30}
FC_MACS = {"resnet18": 512 * 1000, "resnet50": 2048 * 1000,
           "vgg16": 512 * 7 * 7 * 4096 + 4096 * 4096 + 4096 * 1000,
           "mobilenet_v2": 1280 * 1000}
# The tables round to two decimals, so the exact count is within half a unit of the last
# digit: 0.005 GMACs, 0.03-1.7% of the totals. Leaving out the smallest convolution of
# ResNet-18 (a 1x1 downsample, 6.4 M MACs) or putting ResNet-50's stride on the 1x1
# instead of the 3x3 (torchvision's v1.5; v1 is ~0.2 G cheaper) is outside it.
ROUNDING_GMACS = 0.005


def _output(layer):
    return fastconv.output_shape(layer.x_shape, layer.w_shape, layer.stride, layer.pad,
                                 groups=layer.groups)


def _pooled(shape, window, stride, pad):
    # A max pool's output size follows the convolution's formula; a depthwise 1-channel
    # filter per channel gives output_shape the same window.
    return fastconv.output_shape(shape, (shape[1], 1, window, window), stride, pad,
                                 groups=shape[1])


def _macs(layer):
    _, K, P, Q = _output(layer)
    return layer.N * K * P * Q * (layer.C // layer.groups) * layer.R * layer.S


@pytest.mark.parametrize("name", NETWORKS)
def test_conv_counts_names_and_batch(name):
    layers = NETWORKS[name](3)
    assert len(layers) == COUNTS[name]
    assert len({layer.name for layer in layers}) == len(layers)
    assert all(layer.N == 3 for layer in layers)
    assert NETWORKS[name]() == NETWORKS[name](8, 224)  # the default batch and image


@pytest.mark.parametrize("image", (224, 97))
@pytest.mark.parametrize("name", NETWORKS)
def test_each_layer_reads_what_the_layers_before_produce(name, image):
    """Each block's main path chains; its downsample reads the block's input and
    produces the main path's shape (the residual sum needs that); an identity shortcut
    needs the block's input and output shapes equal. 97 is odd at every stage."""
    shape = (2, 3, image, image)
    blocks = itertools.groupby(NETWORKS[name](2, image),
                               key=lambda layer: _BLOCK.match(layer.name).group())
    for block, members in blocks:
        members = list(members)
        if block in POOLS[name]:
            shape = _pooled(shape, *POOLS[name][block])
        block_in = y = shape
        for layer in (m for m in members if ".downsample." not in m.name):
            assert layer.x_shape == y, f"{layer.name} reads {layer.x_shape}, gets {y}"
            y = _output(layer)
        shortcut = [m for m in members if ".downsample." in m.name]
        for layer in shortcut:
            assert layer.x_shape == block_in, layer.name
            assert _output(layer) == y, layer.name
        if block.startswith("layer") and not shortcut:
            assert y == block_in, f"{block}: identity shortcut, but {block_in} -> {y}"
        shape = y
    if image == 224:
        assert shape == (2, LAST[name][0], LAST[name][1], LAST[name][1])


def test_mobilenet_v2_depthwise_layers():
    dw = [layer for layer in NETWORKS["mobilenet_v2"](1) if layer.groups > 1]
    assert len(dw) == 17  # one per inverted residual block
    assert all(layer.groups == layer.C == layer.K and layer.R == layer.S == 3 for layer in dw)
    assert [layer.stride for layer in dw].count(2) == 4


@pytest.mark.parametrize("name", NETWORKS)
def test_macs_match_the_published_figures(name):
    total = sum(map(_macs, NETWORKS[name](1))) + FC_MACS[name]
    assert abs(total / 1e9 - PUBLISHED_GMACS[name]) <= ROUNDING_GMACS, total


def test_training_order():
    """Forwards in network order, then from the last layer back, grad_input before
    grad_weight; no grad_input for the first layer (nothing upstream of the image)."""
    three = NETWORKS["vgg16"](1)[:3]
    assert bench.training_order(three, PASSES) == [
        (0, "forward"), (1, "forward"), (2, "forward"), (2, "grad_input"),
        (2, "grad_weight"), (1, "grad_input"), (1, "grad_weight"), (0, "grad_weight")]
    assert bench.training_order(three, ("grad_weight",)) == [
        (2, "grad_weight"), (1, "grad_weight"), (0, "grad_weight")]
    assert bench.training_order(three, ("grad_input",)) == [(2, "grad_input"), (1, "grad_input")]


def test_network_arrays_are_the_same_for_the_same_seed():
    """The peer processes make their own arrays and rely on this."""
    layers = NETWORKS["mobilenet_v2"](1)[:4]
    first, again = (bench.network_arrays(layers, "float32", 0) for _ in range(2))
    for layer, (x, w, gy), (x2, w2, gy2) in zip(layers, first, again):
        assert x.shape == layer.x_shape and w.shape == layer.w_shape
        assert gy.shape == _output(layer) and x.dtype == np.float32
        assert np.array_equal(x, x2) and np.array_equal(w, w2) and np.array_equal(gy, gy2)
    assert not np.array_equal(first[0][0], bench.network_arrays(layers, "float32", 1)[0][0])


def test_network_sequences_alternate_with_the_calls_alone(monkeypatch):
    """Each round times every engine's sequence, then every call alone: the two halves of
    a net/alone ratio come from the same minutes. The medians are over the rounds."""
    two = lambda batch: NETWORKS["mobilenet_v2"](batch)[:2]  # noqa: E731
    monkeypatch.setitem(bench.NETWORKS, "two", two)
    monkeypatch.setattr(bench, "SETTLE_S", 0)
    monkeypatch.setattr(bench, "WARM_S", 0)
    events, blocks = [], {}
    sequences, block = bench._sequences, bench._block

    def recorded_sequences(calls, repeat):
        events.append(("network", len(calls), repeat))
        return sequences(calls, repeat)

    def recorded_block(fn, calls):
        times = block(fn, calls)
        events.append(("alone", calls))
        blocks.setdefault(id(fn), []).extend(times)
        return times

    monkeypatch.setattr(bench, "_sequences", recorded_sequences)
    monkeypatch.setattr(bench, "_block", recorded_block)
    run = bench.measure_network("two", 1, PASSES, ["auto", "direct"], "float32", 1, 3, {})
    calls = len(bench.training_order(two(1), PASSES))  # 3: no grad_input for the image
    one_round = [("network", calls, 1)] * 2 + [("alone", 1)] * (2 * calls)
    assert events == one_round * 3
    assert all(len(t) == 3 for t in blocks.values()) and len(blocks) == 2 * calls
    alone = sorted(r["alone_s"][e] for r in run["rows"] for e in ("auto", "direct"))
    assert alone == sorted(float(np.median(t)) for t in blocks.values())

    events.clear()
    bench.measure_network("two", 1, PASSES, ["auto"], "float32", 1, 1, {})
    assert events == [("network", calls, 1)] + [("alone", 1)] * calls  # one round of one


def test_each_timed_sequence_follows_the_last_call(monkeypatch):
    """After the pause that settles the pools, the sequence's last call runs once,
    untimed, before the first timed sequence: a step's first call follows the previous
    step's last one, in a training loop and in a peer's back-to-back sequences alike."""
    monkeypatch.setattr(bench, "SETTLE_S", 0)
    log = []
    calls = [lambda i=i: log.append(i) for i in range(3)]
    times, walls = bench._sequences(calls, 2)
    assert log == [2, 0, 1, 2, 0, 1, 2]
    assert [len(t) for t in times] == [2, 2, 2] and len(walls) == 2
