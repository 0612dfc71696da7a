"""fastconv: 2-D convolution layers, forward and backward, on the CPU, for NumPy arrays.

Where things live:

* ``conv2d``, ``conv2d_backward``, ``output_shape``: ``fastconv/_api.py``
* the engines (``forward``, ``grad_input``, ``grad_weight``, ``grad_bias``):
  ``fastconv/engines/`` -- ``direct.py`` wraps the Cython kernels in ``csrc/_direct.pyx``,
  ``im2col.py`` holds the Numba kernels (their copy loops: ``csrc/im2col_loops.c``
  through ``engines/_loops.py``; their BLAS calls: ``engines/_cblas.py``; the pointwise
  and whole-window products: ``engines/_products.py``), ``reference.py`` the plain
  NumPy twin
* ``fastconv bench``: ``fastconv/bench.py``, with PyTorch timed by ``_torch_peer.py`` and
  ONNX Runtime by ``_ort_peer.py``; the layer suite and the decoder suite of
  ``--suite decoder`` (transposed convolutions) in ``suite.py``, the networks of
  ``--network`` in ``networks.py``
* ``backend="auto"``: tuned winners from ``fastconv/_tune.py`` (``tune``), else the cost
  model ``choose_backend`` in ``fastconv/_dispatch.py``
* threads: ``fastconv/_threads.py`` (the BLAS pools: ``_blas.py``); ``show_config``:
  ``fastconv/_config.py``
* ``conv1d``, ``conv1d_backward`` (on the conv2d engines), ``correlate``, ``convolve``:
  ``fastconv/_conv1d.py``
* ``conv_transpose2d``, ``conv_transpose2d_backward``, ``conv_transpose1d``,
  ``conv_transpose1d_backward`` (a convolution's passes with its arrays' roles swapped,
  on the same engines; the geometry: ``_validate.transposed_geometry``):
  ``fastconv/_transpose.py``
* ``conv_matrix``, ``linear_to_conv``, ``conv_to_linear``: ``fastconv/_matrix.py``
* the layers ``Conv2d``, ``Conv1d``, ``ConvTranspose2d`` and ``ConvTranspose1d``:
  ``fastconv/layers.py``
* ``set_float32_precision`` (may ``auto`` use Winograd for float32):
  ``fastconv/_precision.py``; the Winograd transforms: ``fastconv/_winograd_mats.py``,
  their NumPy twin ``engines/winograd_twin.py``
* ``set_autotune`` (``auto`` times the engines on a problem's first call):
  ``fastconv/_autotune.py``, the timing and the cache in ``fastconv/_tune.py``
* ``compile`` (fill Numba's cache ahead of time): ``fastconv/_compile.py``
* the OpenMP threads' spin after a region: ``fastconv/_openmp.py``
* the engines' output arrays (aligned, large ones reused; ``release_memory``):
  ``fastconv/engines/_alloc.py``
* ``fastconv.dask`` (the dask extra; imported only by ``import fastconv.dask``): every
  function above on chunked Dask arrays, ``fastconv/dask/``
"""
from ._openmp import load_direct as _load_direct

_load_direct()  # first, so that libgomp starts with the spin count of fastconv/_openmp.py

from ._api import ConvGrads, conv2d, conv2d_backward, output_shape
from ._autotune import autotune, get_autotune, set_autotune
from ._compile import compile
from ._config import show_config
from ._conv1d import conv1d, conv1d_backward, convolve, correlate
from ._dispatch import Machine, choose_backend, machine
from ._matrix import conv_matrix, conv_to_linear, linear_to_conv
from ._precision import float32_precision, get_float32_precision, set_float32_precision
from ._threads import get_num_threads, num_threads, set_num_threads
from ._transpose import (conv_transpose1d, conv_transpose1d_backward, conv_transpose2d,
                         conv_transpose2d_backward)
from ._tune import clear_cache as clear_tuning_cache
from ._tune import tune
from ._version import __version__
from ._workspace import get_workspace_limit, set_workspace_limit, workspace_limit
from .engines._alloc import release_memory
from .layers import Conv1d, Conv2d, ConvTranspose1d, ConvTranspose2d


def backends() -> tuple[str, ...]:
    """The engines available in this installation ("auto" chooses among the first two)."""
    from .engines import ENGINE_NAMES, get_engine

    found = []
    for name in ENGINE_NAMES:
        try:
            get_engine(name)
        except ImportError:
            continue
        found.append(name)
    return tuple(found)


__all__ = [
    "__version__", "autotune", "backends", "compile", "choose_backend", "clear_tuning_cache", "Conv1d", "conv1d",
    "conv1d_backward", "Conv2d", "conv2d", "conv2d_backward", "conv_matrix",
    "conv_to_linear", "conv_transpose1d", "conv_transpose1d_backward", "conv_transpose2d",
    "conv_transpose2d_backward", "ConvGrads", "ConvTranspose1d", "ConvTranspose2d",
    "convolve", "correlate", "float32_precision",
    "get_autotune", "get_float32_precision", "get_num_threads",
    "get_workspace_limit", "linear_to_conv", "Machine", "machine", "num_threads", "output_shape",
    "release_memory", "set_autotune", "set_float32_precision", "set_num_threads",
    "set_workspace_limit", "show_config", "tune", "workspace_limit",
]
