"""One benchmark group per network and pass: the whole sequence of that pass, as a
training step runs it (``fastconv.bench.training_order``), by ``auto`` and by PyTorch.

PyTorch runs in this process here, with the caveat of ``test_layers.py``: on a machine
with few cores its OpenMP runtime and ours can take the cores from each other.
``fastconv bench --network`` times it in a process of its own, and also reports each
call's time and the sum of the calls timed alone.
"""
import functools

import pytest

import fastconv
from fastconv._torch_peer import torch_passes
from fastconv._validate import geometry
from fastconv.bench import NETWORK_SEED, PASSES, STEP, _pass_fn, network_arrays, training_order
from fastconv.networks import NETWORKS

GROUPS = {p: (p,) for p in PASSES} | {STEP: PASSES}  # group name: the passes it runs


@functools.lru_cache(maxsize=2)
def _network(name: str, batch: int, dtype: str):
    layers = NETWORKS[name](batch)
    return layers, network_arrays(layers, dtype, NETWORK_SEED)


def _sequence(engine, layers, arrays, order, torch):
    if engine == "torch":
        per_layer = [torch_passes(torch, *a, layer.stride, layer.pad, layer.groups)
                     for layer, a in zip(layers, arrays)]
        calls = [per_layer[i][p] for i, p in order]
    else:
        calls = [_pass_fn(engine, p, *arrays[i], layers[i]) for i, p in order]

    def run():
        for call in calls:
            call()

    return run


def _flops(layer) -> int:
    return geometry(layer.x_shape, layer.w_shape, layer.stride, layer.pad, 1, layer.groups,
                    0).flops


@pytest.mark.parametrize("engine", ("auto", "torch"))
@pytest.mark.parametrize("group", GROUPS)
def test_network(benchmark, network, group, engine, network_batch, dtype, torch):
    if engine == "torch":
        if torch is None:
            pytest.skip("PyTorch is not installed")
        torch.set_num_threads(fastconv.get_num_threads())
    layers, arrays = _network(network, network_batch, str(dtype))
    order = training_order(layers, GROUPS[group])
    benchmark.group = f"{network} {group}"
    # One warm-up round keeps Numba's compilation and first-touch page faults out.
    benchmark.pedantic(_sequence(engine, layers, arrays, order, torch), rounds=3,
                       iterations=1, warmup_rounds=1)
    if benchmark.stats is not None:  # None under --benchmark-disable
        flops = sum(_flops(layers[i]) for i, _ in order)
        benchmark.extra_info.update(gflops=round(flops / benchmark.stats.stats.median / 1e9, 2),
                                    calls=len(order), batch=network_batch, dtype=str(dtype))
