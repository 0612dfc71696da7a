"""One benchmark group per layer and pass, so each table row set compares the engines."""
import numpy as np
import pytest

import fastconv
from fastconv._torch_peer import torch_passes

PASSES = ("forward", "grad_input", "grad_weight")
ENGINES = ("direct", "im2col", "auto", "torch")


def _arrays(layer, dtype):
    rng = np.random.default_rng(0)
    x = rng.standard_normal(layer.x_shape).astype(dtype)
    w = rng.standard_normal(layer.w_shape).astype(dtype)
    gy = rng.standard_normal(fastconv.output_shape(x, w, layer.stride, layer.pad,
                                                   groups=layer.groups)).astype(dtype)
    return x, w, gy


def _call(engine, pass_name, layer, x, w, gy, torch):
    if engine == "torch":
        return torch_passes(torch, x, w, gy, layer.stride, layer.pad, layer.groups)[pass_name]
    kw = dict(stride=layer.stride, pad=layer.pad, groups=layer.groups, backend=engine)
    if pass_name == "forward":
        return lambda: fastconv.conv2d(x, w, **kw)
    wrt = ("x",) if pass_name == "grad_input" else ("w",)
    return lambda: fastconv.conv2d_backward(gy, x, w, wrt=wrt, **kw)


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("pass_name", PASSES)
def test_layer(benchmark, layer, pass_name, engine, dtype, sgemm_ceiling, torch):
    if engine == "torch":
        if torch is None:
            pytest.skip("PyTorch is not installed")
        torch.set_num_threads(fastconv.get_num_threads())
    x, w, gy = _arrays(layer, dtype)
    fn = _call(engine, pass_name, layer, x, w, gy, torch)
    benchmark.group = f"{layer.name} {pass_name}"
    flops = 2 * np.prod(gy.shape, dtype=np.int64) * np.prod(layer.w_shape[1:])
    # One warm-up round keeps Numba's compilation and first-touch page faults out.
    benchmark.pedantic(fn, rounds=5, iterations=1, warmup_rounds=1)
    if benchmark.stats is not None:  # None under --benchmark-disable
        median = benchmark.stats.stats.median
        gflops = flops / median / 1e9
        benchmark.extra_info.update(gflops=round(gflops, 2),
                                    ceiling_share=round(gflops / sgemm_ceiling, 3),
                                    shape=dict(layer._asdict()), dtype=str(dtype))
