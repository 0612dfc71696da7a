"""pytest-benchmark configuration for the layer suite (``pytest bench/``).

``--layers`` picks layers (comma-separated, or "all"; default: the small CI set) and
``--dtype`` the precision. With ``--benchmark-disable`` every case runs once, which
makes the suite a correctness smoke test.
"""
import time

import numpy as np
import pytest

from fastconv.suite import LAYERS, QUICK


def pytest_addoption(parser):
    parser.addoption("--layers", default=",".join(QUICK),
                     help=f"comma-separated layers or 'all' (known: {', '.join(LAYERS)})")
    parser.addoption("--dtype", default="float32", choices=("float32", "float64"))


def pytest_generate_tests(metafunc):
    if "layer" in metafunc.fixturenames:
        spec = metafunc.config.getoption("--layers")
        names = list(LAYERS) if spec == "all" else [s for s in spec.split(",") if s]
        metafunc.parametrize("layer", [LAYERS[n] for n in names], ids=names)


@pytest.fixture(scope="session")
def dtype(request):
    return np.dtype(request.config.getoption("--dtype"))


@pytest.fixture(scope="session")
def sgemm_ceiling(dtype):
    """GFLOP/s of a large square matrix product on these cores: the practical peak."""
    n = 2048
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((2, n, n)).astype(dtype)
    a @ b
    times = []
    for _ in range(5):
        t0 = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - t0)
    return 2 * n**3 / sorted(times)[2] / 1e9


@pytest.fixture(scope="session")
def torch():
    try:
        import torch
    except ImportError:
        return None
    return torch
