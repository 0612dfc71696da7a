"""The im2col engine taken apart, one benchmark group per layer and pass:

  * ``unroll``   im2col (forward, grad_weight) or col2im (grad_input) of the whole batch;
  * ``product``  the pass's matrix product alone, on the same (folded) shapes;
  * ``cap``      the whole pass under the default workspace cap;
  * ``unbounded`` the whole pass with the cap lifted.

unroll + product against cap shows what the chunking and reorders cost; cap against
unbounded is the speed the cap keeps (target >= 90%). GFLOP/s in ``extra_info`` counts
the pass's multiply-adds for every case, so the parts read as shares of one budget.
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
    G, crs, M = g.groups, g.C * g.R * g.S, g.N * g.P * g.Q
    cols = np.empty(crs * M, dtype)  # folded: (C*R*S, N*P*Q)
    # Real columns, not np.empty's leftovers: garbage can hold NaNs and subnormals, which
    # change BLAS speed (and warned of overflow in the products).
    im2col._im2col_nchw(x, 0, 0, g.N, g.P, cols, M, g.P * g.Q, *im2col._taps(g))
    if part == "unroll":
        if pass_name == "grad_input":
            gx = np.zeros(g.x_shape, dtype)
            return lambda: im2col._col2im_nchw(cols, 0, 0, g.N, g.P, M, g.P * g.Q, gx,
                                               *im2col._taps(g))
        return lambda: im2col._im2col_nchw(x, 0, 0, g.N, g.P, cols, M, g.P * g.Q,
                                           *im2col._taps(g))
    if part == "product":
        c = cols.reshape(G, -1, M)                      # (G, Cg*R*S, N*P*Q)
        wm = w.reshape(G, g.Kg, -1)                     # (G, Kg, Cg*R*S)
        dy = rng.standard_normal((G, g.Kg, M)).astype(dtype)  # (G, Kg, N*P*Q)
        return {
            "forward": lambda: np.matmul(wm, c),
            "grad_input": lambda: np.matmul(wm.transpose(0, 2, 1), dy),
            "grad_weight": lambda: np.matmul(dy, c.transpose(0, 2, 1)),
        }[pass_name]
    kw = dict(stride=layer.stride, pad=layer.pad, groups=layer.groups, backend="im2col")
    limit = fastconv.get_workspace_limit() if part == "cap" else 2**62
    if pass_name == "forward":
        run = lambda: fastconv.conv2d(x, w, **kw)  # noqa: E731
    else:
        wrt = ("x",) if pass_name == "grad_input" else ("w",)
        run = lambda: fastconv.conv2d_backward(gy, x, w, wrt=wrt, **kw)  # noqa: E731

    def capped():
        with fastconv.workspace_limit(limit):
            return run()
    return capped


@pytest.mark.parametrize("part", PARTS)
@pytest.mark.parametrize("pass_name", PASSES)
def test_im2col_part(benchmark, layer, pass_name, part, dtype, sgemm_ceiling):
    fastconv.get_num_threads()  # applies the thread count to BLAS
    im2col._set_threads(_geometry(layer))  # serial or parallel kernels, as the engine runs them
    fn = _case(layer, pass_name, part, dtype)
    benchmark.group = f"im2col parts: {layer.name} {pass_name}"
    benchmark.pedantic(fn, rounds=5, iterations=1, warmup_rounds=1)
    if benchmark.stats is not None:  # None under --benchmark-disable
        g = _geometry(layer)
        gflops = g.flops / benchmark.stats.stats.median / 1e9
        benchmark.extra_info.update(gflops=round(gflops, 2),
                                    ceiling_share=round(gflops / sgemm_ceiling, 3),
                                    workspace_limit=fastconv.get_workspace_limit())
