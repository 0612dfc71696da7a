"""fastconv on Dask arrays: chunked convolution, forward and backward, lazily, on a
laptop's threads or processes or on a distributed cluster.

Needs the ``dask`` extra (``pip install "fastconv[dask]"``: dask[array] and
distributed); ``import fastconv`` never imports Dask, only ``import fastconv.dask`` does.

Where things live:

* ``conv2d``, ``conv2d_backward``: ``_conv.py``; ``conv1d``, ``conv1d_backward`` and
  the 1-D transposed pair (a signal as an image of height 1): ``_conv1d.py``;
  ``conv_transpose2d``, ``conv_transpose2d_backward``: ``_transpose.py``
* the checks, fastconv's own validators run on stand-ins of the arrays: ``_spec.py``
* which rows each block reads (halo, stride, padding): ``_tiling.py``
* the passes as graphs (gathered windows, scattered contributions, tree sums):
  ``_passes.py`` over ``_graph.py``; what each task runs, and its thread share:
  ``_tasks.py``
"""
try:
    import dask.array  # noqa: F401
except ImportError as e:  # pragma: no cover - the extra is not installed
    raise ImportError('fastconv.dask needs Dask: pip install "fastconv[dask]" '
                      "(dask[array] and distributed)") from e

from .._api import ConvGrads
from ._conv import conv2d, conv2d_backward
from ._conv1d import conv1d, conv1d_backward, conv_transpose1d, conv_transpose1d_backward
from ._transpose import conv_transpose2d, conv_transpose2d_backward

__all__ = ["ConvGrads", "conv1d", "conv1d_backward", "conv2d", "conv2d_backward",
           "conv_transpose1d", "conv_transpose1d_backward", "conv_transpose2d",
           "conv_transpose2d_backward"]
