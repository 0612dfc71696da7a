"""fastconv: 2-D convolution layers, forward and backward, on the CPU, for NumPy arrays.

Where things live:

* ``conv2d``, ``conv2d_backward``, ``output_shape``: ``fastconv/_api.py``
* the engines (``forward``, ``grad_input``, ``grad_weight``, ``grad_bias``):
  ``fastconv/engines/`` -- ``direct.py`` wraps the Cython kernels in ``csrc/_direct.pyx``,
  ``im2col.py`` holds the Numba kernels, ``reference.py`` the plain NumPy twin
* ``backend="auto"``: tuned winners from ``fastconv/_tune.py`` (``tune``), else the cost
  model ``choose_backend`` in ``fastconv/_dispatch.py``
* threads: ``fastconv/_threads.py``; ``show_config``: ``fastconv/_config.py``
"""
from ._api import ConvGrads, conv2d, conv2d_backward, output_shape
from ._config import show_config
from ._dispatch import choose_backend
from ._threads import get_num_threads, num_threads, set_num_threads
from ._tune import clear_cache as clear_tuning_cache
from ._tune import tune
from ._version import __version__
from ._workspace import get_workspace_limit, set_workspace_limit, workspace_limit


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
    "ConvGrads", "__version__", "backends", "choose_backend", "clear_tuning_cache", "conv2d",
    "conv2d_backward",
    "get_num_threads", "get_workspace_limit", "num_threads", "output_shape", "set_num_threads",
    "set_workspace_limit", "show_config", "tune", "workspace_limit",
]
