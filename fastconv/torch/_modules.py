"""``nn.Conv2d``, ``nn.Conv1d``, ``nn.ConvTranspose2d`` and ``nn.ConvTranspose1d`` on
fastconv, and ``convert``.

Each module is a subclass of torch's, changing only the call that convolves: the
constructor, the parameters, ``state_dict`` keys, ``padding_mode``, ``extra_repr`` and
hooks are torch's own, so weights load either way and ``isinstance(m, nn.Conv2d)``
still holds.
"""
from __future__ import annotations

from torch import nn

from . import _functional as F


def _conv_forward(module, conv, input, weight, bias):
    """nn.Conv2d's and nn.Conv1d's ``_conv_forward`` with ``conv`` for F's function."""
    padding = module.padding
    if module.padding_mode != "zeros":  # as torch: pad first, then convolve
        input = nn.functional.pad(input, module._reversed_padding_repeated_twice,
                                  mode=module.padding_mode)
        padding = 0
    return conv(input, weight, bias, module.stride, padding, module.dilation, module.groups)


class Conv2d(nn.Conv2d):
    """``torch.nn.Conv2d`` computed by fastconv (CPU, float32 or float64)."""

    def _conv_forward(self, input, weight, bias):
        return _conv_forward(self, F.conv2d, input, weight, bias)


class Conv1d(nn.Conv1d):
    """``torch.nn.Conv1d`` computed by fastconv."""

    def _conv_forward(self, input, weight, bias):
        return _conv_forward(self, F.conv1d, input, weight, bias)


def _transposed_forward(module, conv, dims, input, output_size):
    """nn.ConvTranspose{1,2}d's forward with ``conv`` for F's function."""
    if module.padding_mode != "zeros":
        raise ValueError(f"Only 'zeros' padding mode is supported for "
                         f"{type(module).__name__}")
    output_padding = module._output_padding(input, output_size, module.stride,
                                            module.padding, module.kernel_size, dims,
                                            module.dilation)
    return conv(input, module.weight, module.bias, module.stride, module.padding,
                output_padding, module.groups, module.dilation)


class ConvTranspose2d(nn.ConvTranspose2d):
    """``torch.nn.ConvTranspose2d`` computed by fastconv (``output_size`` as torch's)."""

    def forward(self, input, output_size=None):
        return _transposed_forward(self, F.conv_transpose2d, 2, input, output_size)


class ConvTranspose1d(nn.ConvTranspose1d):
    """``torch.nn.ConvTranspose1d`` computed by fastconv."""

    def forward(self, input, output_size=None):
        return _transposed_forward(self, F.conv_transpose1d, 1, input, output_size)


# torch's class -> ours. Exact types only: a user's subclass of nn.Conv2d may change
# its forward, which a swap would lose.
_SWAPS = {nn.Conv2d: Conv2d, nn.Conv1d: Conv1d, nn.ConvTranspose2d: ConvTranspose2d,
          nn.ConvTranspose1d: ConvTranspose1d}


def depthwise(module: nn.Module) -> bool:
    """A predicate for ``convert``: convolutions with one input channel per group (and
    more than one group), the depthwise layers of MobileNets."""
    return (isinstance(module, nn.modules.conv._ConvNd) and module.groups > 1
            and module.in_channels == module.groups)


def _swapped(module: nn.Module) -> nn.Module:
    """``module`` as our class, sharing its parameters, buffers and hooks (no copy)."""
    new = _SWAPS[type(module)].__new__(_SWAPS[type(module)])
    new.__dict__.update(module.__dict__)
    return new


def convert(model: nn.Module, where=None) -> nn.Module:
    """Swap the ``nn.Conv2d``, ``nn.Conv1d``, ``nn.ConvTranspose2d`` and
    ``nn.ConvTranspose1d`` modules of
    ``model`` (all of them, or those for which ``where(module)`` is true, e.g.
    :func:`depthwise`) for fastconv's, in place, and return the model (the new module
    when ``model`` is itself one of them). The parameters are shared, not copied, so an
    optimizer made before still updates them."""
    if where is not None and not callable(where):
        raise TypeError(f"where must be a predicate module -> bool or None, got "
                        f"{type(where).__name__}")

    def chosen(m):
        return type(m) in _SWAPS and (where is None or where(m))

    if chosen(model):
        return _swapped(model)
    for parent in model.modules():
        for name, child in list(parent.named_children()):
            if chosen(child):
                setattr(parent, name, _swapped(child))
    return model
