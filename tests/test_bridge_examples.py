"""Shortened runs of examples/torch_mobilenet_block.py and examples/jax_cnn.py: they
run, the loss falls, and the bridge's run agrees with the framework's own."""
import importlib.util
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def _load(name):
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_torch_mobilenet_block_quick(capsys):
    pytest.importorskip("torch")
    out = _load("torch_mobilenet_block").main(["--quick"])
    assert out["swapped"] == 3  # one depthwise layer per block, nothing else
    losses = out["losses"]
    assert losses[-1] < losses[0], losses  # the same model keeps learning after convert
    text = capsys.readouterr().out
    assert "PyTorch:" in text and "depthwise on fastconv" in text and "ms/step" in text


def test_jax_cnn_quick(capsys):
    pytest.importorskip("jax")
    out = _load("jax_cnn").main(["--quick"])
    (lax_losses, _), (ours, _) = out["lax"], out["fastconv"]
    assert ours[-1] < ours[0], ours
    # same parameters and batches: the same losses up to float32 rounding
    assert all(abs(a - b) <= 1e-4 * max(1.0, abs(b)) for a, b in zip(ours, lax_losses))
    assert "x the lax step" in capsys.readouterr().out
