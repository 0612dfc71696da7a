"""A shortened run of examples/train_digits.py: the loss falls and the net learns."""
import importlib.util
from pathlib import Path

import pytest

pytest.importorskip("sklearn")

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "train_digits.py"


def _load_example():
    spec = importlib.util.spec_from_file_location("train_digits", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_short_training_run_learns_the_digits(capsys):
    result = _load_example().train(epochs=3, seed=0)
    losses = result["losses"]
    assert len(losses) == 3
    assert losses[-1] < 0.5 * losses[0], losses
    assert all(b < a for a, b in zip(losses, losses[1:])), losses
    assert result["accuracy"] >= 0.90, result["accuracy"]
    out = capsys.readouterr().out
    assert "epoch   3/3  loss" in out and "test accuracy" in out
