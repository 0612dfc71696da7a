"""The peer processes of ``fastconv bench``: ONNX Runtime's results are ONNX Runtime's
convolution of the same layer, and both peers run a network's sequence of calls."""
import numpy as np
import pytest
from conftest import assert_close

import fastconv
from fastconv import bench
from fastconv.suite import Layer

PASSES = ("forward", "grad_input", "grad_weight")
# A small network with the options that matter: R != S, groups, stride and padding.
TINY = (Layer("a", 2, 4, 6, 9, 9, 3, 2, 2, 1, 2),
        Layer("b", 2, 6, 6, 5, 4, 3, 3, 1, 1, 6),
        Layer("c", 2, 6, 5, 5, 4, 1, 1, 1, 0))


def _ort_peer():
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    from fastconv._ort_peer import start
    peer = start(1)
    assert peer is not None
    return peer


def test_ort_peer_computes_the_convolution():
    peer = _ort_peer()
    try:
        for layer in TINY:
            x, w, _ = bench._layer_arrays(np.random.default_rng(0), layer, "float32")
            peer.load(x, w, None, layer.stride, layer.pad, layer.groups)
            seconds, theirs = peer.time("forward", 1)
            assert seconds > 0
            ours = fastconv.conv2d(x, w, layer.stride, layer.pad, groups=layer.groups)
            assert_close(theirs, ours, np.float32, layer.name)
        with pytest.raises(RuntimeError, match="peer process failed"):
            peer.time("grad_input", 1)  # an inference engine: forward only
    finally:
        peer.close()
    assert not peer._proc.is_alive()


@pytest.mark.parametrize("name", ("torch", "ort"))
def test_peer_runs_the_network_sequence(name):
    if name == "torch":
        pytest.importorskip("torch")
        from fastconv._torch_peer import start
        peer, passes = start(1), PASSES
    else:
        peer, passes = _ort_peer(), ("forward",)
    try:
        medians, walls = peer.sequence(TINY, passes, "float32", 0, 1)
    finally:
        peer.close()
    assert len(medians) == len(bench.training_order(TINY, passes)) and len(walls) == 1
    assert all(t > 0 for t in medians)
    assert walls[0] >= sum(medians)  # one sequence: its wall time holds every call's


def test_peers_left_out_say_why():
    peers, notes = bench._start_peers(True, True, 1, "float32", PASSES)
    assert peers == {} and notes == ["torch: not timed (--no-torch)", "ort: not timed (--no-ort)"]
    peers, notes = bench._start_peers(True, False, 1, "float32", ("grad_weight",))
    assert peers == {} and notes[1] == "ort: not timed (it runs forward only)"
    peers, notes = bench._start_peers(True, False, 1, "float64", PASSES)
    assert peers == {} and notes[1] == "ort: not timed (its CPU convolution has no float64 kernel)"
