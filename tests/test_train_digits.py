"""A shortened run of examples/train_digits.py: the loss falls and the net learns."""
import pytest
from conftest import load_example

pytest.importorskip("sklearn")


def test_short_training_run_learns_the_digits(capsys):
    result = load_example("train_digits").train(epochs=3, seed=0)
    losses = result["losses"]
    assert len(losses) == 3
    assert losses[-1] < 0.5 * losses[0], losses
    assert all(b < a for a, b in zip(losses, losses[1:])), losses
    assert result["accuracy"] >= 0.90, result["accuracy"]
    out = capsys.readouterr().out
    assert "epoch   3/3  loss" in out and "test accuracy" in out
