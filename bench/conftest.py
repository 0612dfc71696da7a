"""pytest-benchmark configuration for the layer suite and the networks (``pytest bench/``).

``--layers`` picks layers (comma-separated, or "all"; default: the small CI set),
``--networks`` the whole networks of ``test_networks.py`` (default: ResNet-18 and
MobileNetV2) and ``--network-batch`` their batch (default 1: a few seconds per network
in CI's smoke run), ``--dtype`` the precision. With ``--benchmark-disable`` every case
runs once, which makes the suite a correctness smoke test.
"""
import time

import numpy as np
import pytest

from fastconv.networks import NETWORKS
from fastconv.suite import LAYERS, QUICK

DEFAULT_NETWORKS = ("resnet18", "mobilenet_v2")


def pytest_addoption(parser):
    parser.addoption("--layers", default=",".join(QUICK),
                     help=f"comma-separated layers or 'all' (known: {', '.join(LAYERS)})")
    parser.addoption("--networks", default=",".join(DEFAULT_NETWORKS),
                     help=f"comma-separated networks or 'all' (known: {', '.join(NETWORKS)})")
    parser.addoption("--network-batch", type=int, default=1,
                     help="images per batch in the network benchmarks (default 1)")
    parser.addoption("--dtype", default="float32", choices=("float32", "float64"))


def _names(config, option: str, known) -> list[str]:
    spec = config.getoption(option)
    names = list(known) if spec == "all" else [s for s in spec.split(",") if s]
    unknown = [n for n in names if n not in known]
    if unknown:
        raise pytest.UsageError(f"{option}: unknown {unknown}; known: {', '.join(known)}")
    return names


def pytest_generate_tests(metafunc):
    if "layer" in metafunc.fixturenames:
        names = _names(metafunc.config, "--layers", LAYERS)
        metafunc.parametrize("layer", [LAYERS[n] for n in names], ids=names)
    if "network" in metafunc.fixturenames:
        metafunc.parametrize("network", _names(metafunc.config, "--networks", NETWORKS))


@pytest.fixture(scope="session")
def network_batch(request):
    batch = request.config.getoption("--network-batch")
    if batch < 1:
        raise pytest.UsageError(f"--network-batch must be a positive integer, got {batch}")
    return batch


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
