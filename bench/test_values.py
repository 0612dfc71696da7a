"""Subnormal inputs must not slow the engines by more than 2x. fastconv does not set
flush-to-zero (it would change results below float32's smallest normal number);
compare the "normal" and "subnormal" rows of each group."""
import numpy as np
import pytest

import fastconv


@pytest.mark.parametrize("values", ["normal", "subnormal"])
@pytest.mark.parametrize("engine", ["direct", "im2col"])
def test_subnormal_inputs(benchmark, engine, values):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((8, 32, 28, 28)).astype(np.float32)
    w = rng.standard_normal((32, 32, 3, 3)).astype(np.float32)
    if values == "subnormal":
        x *= np.float32(1e-39)  # every input below the smallest normal float32 (1.18e-38)
        assert np.all(np.abs(x[x != 0]) < np.finfo(np.float32).tiny)
    benchmark.group = f"subnormals: {engine} forward"
    benchmark.pedantic(lambda: fastconv.conv2d(x, w, 1, 1, backend=engine), rounds=5,
                       iterations=1, warmup_rounds=1)
