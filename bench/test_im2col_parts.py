"""The im2col engine taken apart, one benchmark group per layer and pass:

  * ``unroll``   the pass with only its unrolling: im2col, col2im, reorders
                 (``im2col.measure_parts(UNROLL)``);
  * ``product``  the pass with only its BLAS products (``PRODUCT``);
  * ``cap``      the whole pass under the default workspace cap;
  * ``unbounded`` the whole pass with the cap lifted.

unroll and product against cap split the pass's time; cap against unbounded is the
speed the cap keeps (target >= 90%). GFLOP/s in ``extra_info`` counts the pass's
multiply-adds for every case, so the parts read as shares of one budget. Pointwise and
whole-window layers have no unrolling: their parts are the whole pass.
``bench/im2col_report.py`` prints the same split, and PyTorch, as one table.
"""
import numpy as np
import pytest

import fastconv
from fastconv._geometry import ConvGeometry
from fastconv.engines import im2col

PASSES = ("forward", "grad_input", "grad_weight")
PARTS = ("unroll", "product", "cap", "unbounded")


def _geometry(layer, N=None):
    P = (layer.H + 2 * layer.pad - layer.R) // layer.stride + 1
    Q = (layer.W + 2 * layer.pad - layer.S) // layer.stride + 1
    return ConvGeometry(N or layer.N, layer.C, layer.H, layer.W, layer.K, layer.R, layer.S,
                        P, Q, layer.groups, layer.stride, layer.stride, 1, 1,
                        layer.pad, layer.pad, layer.pad, layer.pad, 0)


def _case(layer, pass_name, part, dtype):
    rng = np.random.default_rng(0)
    g = _geometry(layer)
    x = rng.standard_normal(g.x_shape).astype(dtype)
    w = rng.standard_normal(g.w_shape).astype(dtype)
    gy = rng.standard_normal(g.y_shape).astype(dtype)
    kw = dict(stride=layer.stride, pad=layer.pad, groups=layer.groups, backend="im2col")
    if pass_name == "forward":
        run = lambda: fastconv.conv2d(x, w, **kw)  # noqa: E731
    else:
        wrt = ("x",) if pass_name == "grad_input" else ("w",)
        run = lambda: fastconv.conv2d_backward(gy, x, w, wrt=wrt, **kw)  # noqa: E731
    limit = 2**62 if part == "unbounded" else fastconv.get_workspace_limit()
    parts = {"unroll": im2col.UNROLL, "product": im2col.PRODUCT}.get(
        part, im2col.UNROLL | im2col.PRODUCT)

    def case():
        with fastconv.workspace_limit(limit), im2col.measure_parts(parts):
            return run()
    return case


@pytest.mark.parametrize("part", PARTS)
@pytest.mark.parametrize("pass_name", PASSES)
def test_im2col_part(benchmark, layer, pass_name, part, dtype, sgemm_ceiling):
    fastconv.get_num_threads()  # applies the thread count to BLAS
    fn = _case(layer, pass_name, part, dtype)
    benchmark.group = f"im2col parts: {layer.name} {pass_name}"
    benchmark.pedantic(fn, rounds=5, iterations=1, warmup_rounds=1)
    if benchmark.stats is not None:  # None under --benchmark-disable
        g = _geometry(layer)
        gflops = g.flops / benchmark.stats.stats.median / 1e9
        benchmark.extra_info.update(gflops=round(gflops, 2),
                                    ceiling_share=round(gflops / sgemm_ceiling, 3),
                                    workspace_limit=fastconv.get_workspace_limit())
