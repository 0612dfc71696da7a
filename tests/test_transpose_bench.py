"""``fastconv bench --suite decoder``: the decoder suite's shapes, each pass of a transposed
convolution run by the convolution pass it maps to, and the peers' transposed passes
(PyTorch's conv_transpose2d and autograd, ONNX Runtime's ConvTranspose) equal to ours.

Tolerances: conftest's RTOL (float32 2e-4 of the largest magnitude)."""
import argparse
import json

import numpy as np
import pytest
from conftest import assert_close

import fastconv
from fastconv import bench
from fastconv.suite import DECODER, DECODER_LAYERS, TransposedLayer

# Small transposed layers with the options that matter: output_padding, groups, a 3x3
# stride-1 layer (Winograd's column), a non-overlapping 2x2 stride-2 one.
TINY = (TransposedLayer("t_s2", 2, 6, 4, 5, 5, 4, 4, 2, 1),
        TransposedLayer("t_s1_groups", 1, 4, 6, 4, 3, 3, 3, 1, 1, 0, 2),
        TransposedLayer("t_outpad", 2, 4, 4, 3, 3, 3, 3, 2, 1, 1),
        TransposedLayer("t_2x2", 1, 4, 2, 6, 6, 2, 2, 2, 0))


def test_the_decoder_suite_is_the_issues():
    out = {layer.name: fastconv.output_shape(layer.x_shape, layer.w_shape, layer.stride,
                                             layer.pad, transposed=True,
                                             output_padding=layer.output_padding)
           for layer in DECODER}
    assert out == {"dcgan_project": (64, 512, 4, 4), "dcgan_up8": (64, 256, 8, 8),
                   "dcgan_up16": (64, 128, 16, 16), "dcgan_up32": (64, 64, 32, 32),
                   "dcgan_up64": (64, 3, 64, 64), "unet_up": (4, 128, 128, 128),
                   "fcn_up16": (1, 21, 512, 512)}
    fcn = DECODER_LAYERS["fcn_up16"]
    assert (fcn.R, fcn.stride, fcn.pad, fcn.C) == (32, 16, 8, 21)
    assert all(layer.R == 4 for layer in DECODER if layer.name.startswith("dcgan"))


def _tiny_suite(monkeypatch):
    monkeypatch.setitem(bench.SUITES, "decoder", {layer.name: layer for layer in TINY})
    monkeypatch.setattr(bench, "SETTLE_S", 0)
    monkeypatch.setattr(bench, "WARM_S", 0)
    monkeypatch.setattr(bench, "sgemm_ceiling", lambda dtype: 1.0)


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_measure_runs_each_transposed_pass_by_its_convolution_pass(monkeypatch, layout):
    _tiny_suite(monkeypatch)
    run = bench.measure([layer.name for layer in TINY], bench.PASSES, "float32", 1, 1, {},
                        layout, "decoder")
    assert run["failures"] == [] and run["suite"] == "decoder"
    mapping = {"forward": "grad_input", "grad_input": "forward", "grad_weight": "grad_weight"}
    for r in run["rows"]:
        layer = DECODER_LAYERS.get(r["layer"]) or next(t for t in TINY if t.name == r["layer"])
        assert r["conv_pass"] == mapping[r["pass"]]
        g = bench._suite_geometry(layer, layout == "NHWC")
        assert r["auto_chose"] == fastconv._api.auto_engine(g, np.dtype("float32"),
                                                            r["conv_pass"])
        # 3x3 at stride 1, and 4x4 at stride 2 through its stride phases
        wino = r["layer"] in ("t_s1_groups", "t_s2") and r["pass"] != "grad_weight"
        assert ("winograd" in r["median_s"]) == wino, r
        assert r["flops"] == g.flops


def test_bench_cli_runs_the_decoder_suite(monkeypatch, capsys, tmp_path):
    _tiny_suite(monkeypatch)
    p = argparse.ArgumentParser()
    bench.add_arguments(p)
    out = tmp_path / "run.json"
    args = p.parse_args(["--suite", "decoder", "--repeat", "1", "--threads", "1", "--no-torch",
                         "--no-ort", "--layers", "t_s2,t_outpad", "--json", str(out)])
    assert bench.run(args) == 0
    stdout = capsys.readouterr().out
    assert "decoder suite: transposed convolutions" in stdout
    rows = [ln.split()[:2] for ln in stdout.splitlines() if ln.startswith("t_")]
    assert rows == [[n, p] for n in ("t_s2", "t_outpad") for p in bench.PASSES]
    saved = json.loads(out.read_text())
    assert saved["suite"] == "decoder" and len(saved["rows"]) == 6
    for bad, text in ((["--quick"], "--quick applies to the layer suite only"),
                      (["--layers", "resnet_c4_3x3"], "unknown layer"),
                      (["--network", "resnet18"], "--suite applies to the layer suite only"),
                      (["--compare", str(tmp_path / "conv.json")], "is a layer-suite run")):
        (tmp_path / "conv.json").write_text(json.dumps({"rows": []}))
        with pytest.raises(SystemExit, match=text):
            bench.run(p.parse_args(["--suite", "decoder", *bad]))


def _arrays(layer, seed=0):
    return bench._layer_arrays(np.random.default_rng(seed), layer, "float32")


def _ours(layer, x, w, gy):
    kw = dict(output_padding=layer.output_padding, groups=layer.groups)
    g = fastconv.conv_transpose2d_backward(gy, x, w, layer.stride, layer.pad, **kw)
    return {"forward": fastconv.conv_transpose2d(x, w, layer.stride, layer.pad, **kw),
            "grad_input": g.x, "grad_weight": g.w}


def test_torch_peer_runs_conv_transpose2d_and_its_autograd():
    pytest.importorskip("torch")
    from fastconv._torch_peer import start
    peer = start(1)
    try:
        for layer, channels_last in zip(TINY, (False, True, False, True)):
            x, w, gy = _arrays(layer)
            peer.load(x, w, gy, layer.stride, layer.pad, layer.groups,
                      channels_last=channels_last, output_padding=layer.output_padding)
            for pass_name, ours in _ours(layer, x, w, gy).items():
                seconds, theirs = peer.time(pass_name, 1)
                assert seconds > 0
                assert_close(np.ascontiguousarray(theirs), ours, np.float32,
                             f"{layer.name} {pass_name}")
    finally:
        peer.close()
    assert not peer._proc.is_alive()


def test_ort_peer_runs_conv_transpose():
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    from fastconv._ort_peer import start
    peer = start(1)
    try:
        for layer in TINY:
            x, w, gy = _arrays(layer)
            peer.load(x, w, None, layer.stride, layer.pad, layer.groups,
                      output_padding=layer.output_padding)
            seconds, theirs = peer.time("forward", 1)
            assert seconds > 0
            assert_close(theirs, _ours(layer, x, w, gy)["forward"], np.float32, layer.name)
    finally:
        peer.close()
