"""The convolution engines. Each module exposes the same four functions:

    forward(x, w, bias, g, packs=None)      -> y       (g: ConvGeometry)
    grad_input(grad_y, w, g, packs=None)    -> grad_x
    grad_weight(grad_y, x, g)               -> grad_w
    grad_bias(grad_y, g)                    -> grad_b

``packs`` is a dict an engine may keep reordered copies of ``w`` in from call to call
(the caller guarantees ``w`` is the same array with the same values as when the dict
was filled; a layer in inference does), or None. The direct and Winograd engines
pack their filters; the others ignore it.

Contract (the API in ``fastconv._api`` guarantees it, so engines do not re-check):
  * every array is 4-D, C-contiguous, and of one dtype, float32 or float64;
  * arrays are in the layout named by ``g.layout``: NCHW input ``(N, C, H, W)`` with
    OIHW weights ``(K, C/groups, R, S)``, or NHWC input ``(N, H, W, C)`` with HWIO
    weights ``(R, S, C/groups, K)``; outputs use the same layout as the input;
  * ``w`` is already flipped when the user asked for true convolution;
  * ``bias`` is a C-contiguous ``(K,)`` array or None;
  * ``g.N >= 1`` and ``g.P, g.Q >= 1`` (empty batches never reach an engine);
  * the returned arrays are fresh, C-contiguous, of the input dtype; inputs are
    never written.

Modules:
  reference  plain NumPy, obviously right, slow (the slow twin of every fast path)
  direct     Cython direct convolution, OpenMP threads, no workspace (csrc/_direct.pyx)
  im2col     Numba kernels that schedule im2col/col2im pieces: each thread unrolls a
             cache-sized piece of the column matrix (C loops: _loops,
             csrc/im2col_loops.c) and multiplies it with a single-threaded BLAS gemm
             (_cblas); pointwise and whole-window passes are gemm tasks on the same
             threads (_products)
  winograd   F(4x4, 3x3) minimal filtering for 3x3 stride-1 layers and strided layers
             whose stride phases are 3x3 windows (csrc/_winograd.pxi, fastconv/_phases.py),
             forward and grad_input; its grad_weight is the direct engine's. Only on
             request (backend="winograd") for now; its NumPy twin: winograd_twin
"""
import importlib

ENGINE_NAMES = ("direct", "im2col", "winograd", "reference")


_modules: dict = {}


def get_engine(name: str):
    """The engine module called ``name`` (imported on first use: im2col pulls in Numba).
    Kept once imported: import_module took ~5 us of each of a small call's passes."""
    mod = _modules.get(name)
    if mod is None:
        mod = _modules[name] = importlib.import_module(f"{__name__}.{name}")
    return mod
