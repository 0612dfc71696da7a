"""One thread pool: no pass of any engine runs a BLAS product on a multi-threaded BLAS.

Layers of every kind (pointwise, strided pointwise, whole-window, 3x3, strided, grouped,
depthwise; both layouts) and every engine take turns, as a network's passes do. Every
Numba kernel that is handed a gemm records what threadpoolctl reports for each loaded
BLAS when it starts: one thread, always; so does every entry of the direct engine's
OpenMP team that calls a gemm (``ON_THE_TEAM``). Every im2col pass must make its products in
such a kernel (the pointwise and whole-window passes used to be NumPy matmuls on
OpenBLAS's own pool, which then spun on the cores the next call needed).
"""
import numpy as np
import pytest
from threadpoolctl import ThreadpoolController

from conftest import TeamSpy

import fastconv
from fastconv.engines import _products, _twin
from fastconv.engines._cblas import DGEMM, SGEMM
from fastconv.engines._loops import F32, F64

# The compiled module's entries that call BLAS: the products and the im2col engine's
# NCHW pieces.
ON_THE_TEAM = ("run_tasks", "forward_pieces", "grad_input_pieces", "grad_weight_pieces")

# (x NCHW shape, w OIHW shape, stride, pad, groups); sizes large enough (>= 8 MFLOP)
# that threads_for() gives the kernels both threads.
LAYERS = [
    ((4, 64, 28, 28), (64, 64, 1, 1), 1, 0, 1),     # pointwise
    ((4, 32, 28, 28), (64, 32, 3, 3), 1, 1, 1),     # 3x3
    ((4, 64, 28, 28), (128, 64, 1, 1), 2, 0, 1),    # strided pointwise (a projection)
    ((32, 64, 7, 7), (256, 64, 7, 7), 1, 0, 1),     # whole window: a dense layer
    ((4, 32, 28, 28), (32, 1, 3, 3), 1, 1, 32),     # depthwise
    ((4, 64, 28, 28), (64, 16, 3, 3), 2, 1, 4),     # grouped, strided
    ((4, 128, 14, 14), (128, 64, 1, 1), 1, 0, 2),   # grouped pointwise
]


@pytest.fixture
def gemm_kernel_calls(monkeypatch):
    """Every run of a Numba kernel that takes a gemm: the BLAS thread counts it saw."""
    calls = []
    controller = ThreadpoolController()
    run = _twin.Shares.run

    def watched(self, T, *args):
        # the gemm itself (the products) or the loops that hold it (im2col's kernels)
        if any(a is SGEMM or a is DGEMM or a is F32 or a is F64 for a in args):
            blas = controller.select(user_api="blas").lib_controllers
            calls.append([lib.get_num_threads() for lib in blas])
        return run(self, T, *args)
    monkeypatch.setattr(_twin.Shares, "run", watched)
    if _products._team is not None:  # products and NCHW pieces on the direct engine's team
        def before(name, args):
            blas = controller.select(user_api="blas").lib_controllers
            calls.append([lib.get_num_threads() for lib in blas])
        monkeypatch.setattr(_products, "_team", TeamSpy(_products._team, ON_THE_TEAM, before))
    return calls


def _nhwc(x, w):
    return x.transpose(0, 2, 3, 1).copy(), w.transpose(2, 3, 1, 0).copy()


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_no_multithreaded_blas_in_any_pass(gemm_kernel_calls, layout, rng):
    assert ThreadpoolController().select(user_api="blas").lib_controllers, "no BLAS found"
    with fastconv.num_threads(2):
        for x_shape, w_shape, stride, pad, groups in LAYERS:
            if layout == "NHWC" and groups > 1 and x_shape[2] == w_shape[2]:
                continue
            x = rng.standard_normal(x_shape).astype(np.float32)
            w = rng.standard_normal(w_shape).astype(np.float32)
            if layout == "NHWC":
                x, w = _nhwc(x, w)
            kw = dict(stride=stride, pad=pad, groups=groups, layout=layout)
            for engine in ("im2col", "direct", "auto"):
                before = len(gemm_kernel_calls)
                y = fastconv.conv2d(x, w, backend=engine, **kw)
                ran_forward = len(gemm_kernel_calls) > before
                fastconv.conv2d_backward(np.ones_like(y), x, w, backend=engine, **kw)
                if engine == "im2col":
                    # each of the three passes made its products in our kernels
                    assert ran_forward and len(gemm_kernel_calls) >= before + 3, (
                        f"{x_shape} {w_shape}: an im2col pass made no product on our threads")
        after = [lib.num_threads for lib in
                 ThreadpoolController().select(user_api="blas").lib_controllers]
    assert gemm_kernel_calls
    for counts in gemm_kernel_calls:
        assert counts == [1] * len(counts), f"a kernel ran with BLAS threads {counts}"
    assert after == [2] * len(after)  # the user's own products get the thread count back


def test_overlapping_sections_restore_the_count():
    """Two Python threads' single-threaded sections overlapping, the first to start
    ending first: BLAS stays at one thread until the last one ends, then gets the
    count back (a per-section save and restore gives two threads inside the second
    section, or leaves one thread for good)."""
    from fastconv import _blas

    def counts():
        return set(lib.get_num_threads() for lib in _blas.blas_libraries())
    with fastconv.num_threads(2):
        first, second = _blas.single_threaded(), _blas.single_threaded()
        first.__enter__()
        second.__enter__()
        first.__exit__(None, None, None)
        assert counts() == {1}  # the second section still runs
        second.__exit__(None, None, None)
        assert counts() == {2}
