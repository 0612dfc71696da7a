"""fastconv for PyTorch: ``torch.nn.functional``'s convolutions and ``torch.nn``'s
convolution modules on fastconv's CPU engines, differentiable through autograd (twice:
``gradgradcheck`` passes) and opaque operators under ``torch.compile``.

Imported only when used (``import fastconv.torch``); ``import fastconv`` never
imports PyTorch. Where things live:

* the custom operators ``fastconv::conv2d``, ``fastconv::conv2d_grad_input``,
  ``fastconv::conv2d_grad_weight`` and their autograd: ``_ops.py``
* ``conv2d``, ``conv1d``, ``conv_transpose2d``, ``conv_transpose1d``: ``_functional.py``
* ``Conv2d``, ``Conv1d``, ``ConvTranspose2d``, ``ConvTranspose1d``, ``convert``,
  ``depthwise``: ``_modules.py``
* the tensor checks and the NumPy views (contiguous -> NCHW, channels_last -> NHWC,
  no copy): ``_tensors.py``

Threads: inside these functions fastconv runs on ``torch.get_num_threads()`` threads
unless the user chose a count (``FASTCONV_NUM_THREADS``, ``fastconv.set_num_threads``
or ``with fastconv.num_threads(n)``), which then holds.
"""
from __future__ import annotations

from ._functional import conv1d, conv2d, conv_transpose1d, conv_transpose2d
from ._modules import Conv1d, Conv2d, ConvTranspose1d, ConvTranspose2d, convert, depthwise

__all__ = ["conv1d", "conv2d", "conv_transpose1d", "conv_transpose2d", "Conv1d", "Conv2d",
           "ConvTranspose1d", "ConvTranspose2d", "convert", "depthwise"]
