"""``torch.nn.functional``'s convolutions on fastconv: the same signatures and results,
differentiable through the operators of ``_ops``.

Each function checks what fastconv cannot see (device, dtype, rank; torch's padding
strings), turns the options into the operators' plain ints, and leaves the shapes to
fastconv, which checks them in the operator (and in its fake implementation under
``torch.compile``). conv1d is conv2d on a (N, C, 1, L) view and conv_transpose2d is
conv2d's input gradient, so both are differentiable twice as conv2d is.
"""
from __future__ import annotations

import torch

from fastconv import _validate as v

from . import _ops
from . import _tensors as t


def _padding(padding, kernel, stride, dilation, name="padding"):
    """torch's padding (an int, a tuple, "same" or "valid") as per-side
    [top, bottom, left, right] (1-D: [0, 0, left, right], kernel etc. then 1-tuples)."""
    if isinstance(padding, str):
        if padding == "valid":
            return [0, 0, 0, 0]
        if padding != "same":
            raise ValueError(f"{name} must be an int, a tuple, 'same' or 'valid', got "
                             f"{padding!r}")
        if any(s != 1 for s in stride):
            raise ValueError(f"{name}='same' is not supported for strided convolutions "
                             f"(as in PyTorch), got stride {tuple(stride)}")
        sides = []
        for k, d in zip(kernel, dilation):
            total = d * (k - 1)  # as PyTorch: the odd pixel goes after
            sides += [total // 2, total - total // 2]
        return [0, 0] * (2 - len(kernel)) + sides
    if len(kernel) == 1:
        p = _one(padding, name, 0)
        return [0, 0, p, p]
    ph, pw = v.pair(padding, name, 0)
    return [ph, ph, pw, pw]


def _one(value, name, minimum):
    """A 1-D option: an int or a 1-tuple, as torch takes them."""
    if isinstance(value, (tuple, list)):
        if len(value) != 1:
            raise ValueError(f"{name} must be an int or a 1-tuple, got {value!r}")
        value = value[0]
    return v._int(value, name, minimum)


def _batched(input, rank):
    """input with a batch axis (torch takes one image, of ``rank``, without), and
    whether it came without one."""
    if input.dim() == rank:
        return input.unsqueeze(0), True
    return input, False


def _check(input, weight, bias, ranks):
    t.check(input, "input", ranks)
    t.check(weight, "weight", (ranks[1],), input.dtype)
    if bias is not None:
        t.check(bias, "bias", (1,), input.dtype)


def conv2d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """``torch.nn.functional.conv2d`` on fastconv: input (N, C, H, W) or (C, H, W),
    weight (K, C/groups, R, S), CPU float32 or float64, contiguous or channels_last (the
    output lies as the input does)."""
    _check(input, weight, bias, (3, 4))
    x, unbatched = _batched(input, 3)
    stride = v.pair(stride, "stride", 1)
    dilation = v.pair(dilation, "dilation", 1)
    pad = _padding(padding, weight.shape[2:], stride, dilation)
    y = _ops.call_conv2d(x, weight, bias, list(stride), pad, list(dilation),
                         v._int(groups, "groups", 1))
    return y.squeeze(0) if unbatched else y


def conv1d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """``torch.nn.functional.conv1d`` on fastconv: input (N, C, L) or (C, L), weight
    (K, C/groups, R); run as conv2d on the (N, C, 1, L) view."""
    _check(input, weight, bias, (2, 3))
    x, unbatched = _batched(input, 2)
    stride = _one(stride, "stride", 1)
    dilation = _one(dilation, "dilation", 1)
    pad = _padding(padding, weight.shape[2:], (stride,), (dilation,))
    y = _ops.call_conv2d(x.unsqueeze(2), weight.unsqueeze(2), bias, [1, stride], pad,
                         [1, dilation], v._int(groups, "groups", 1)).squeeze(2)
    return y.squeeze(0) if unbatched else y


def conv_transpose2d(input, weight, bias=None, stride=1, padding=0, output_padding=0,
                     groups=1, dilation=1):
    """``torch.nn.functional.conv_transpose2d`` on fastconv (its argument order: groups
    before dilation): input (N, C_in, H, W) or (C_in, H, W), weight
    (C_in, C_out/groups, R, S); the input gradient of the convolution of weight."""
    _check(input, weight, bias, (3, 4))
    x, unbatched = _batched(input, 3)
    _no_strings(padding, "conv_transpose2d")
    stride = v.pair(stride, "stride", 1)
    dilation = v.pair(dilation, "dilation", 1)
    op = v.pair(output_padding, "output_padding", 0)
    pad = _padding(padding, weight.shape[2:], stride, dilation)
    y = _transposed(x, weight, bias, stride, pad, op, groups, dilation)
    return y.squeeze(0) if unbatched else y


def conv_transpose1d(input, weight, bias=None, stride=1, padding=0, output_padding=0,
                     groups=1, dilation=1):
    """``torch.nn.functional.conv_transpose1d`` on fastconv: input (N, C_in, L) or
    (C_in, L), weight (C_in, C_out/groups, R); conv_transpose2d on (N, C_in, 1, L)."""
    _check(input, weight, bias, (2, 3))
    x, unbatched = _batched(input, 2)
    _no_strings(padding, "conv_transpose1d")
    stride = _one(stride, "stride", 1)
    dilation = _one(dilation, "dilation", 1)
    op = _one(output_padding, "output_padding", 0)
    pad = _padding(padding, weight.shape[2:], (stride,), (dilation,))
    y = _transposed(x.unsqueeze(2), weight.unsqueeze(2), bias, (1, stride), pad, (0, op),
                    groups, (1, dilation)).squeeze(2)
    return y.squeeze(0) if unbatched else y


def _no_strings(padding, name):
    if isinstance(padding, str):
        raise ValueError(f"padding of {name} must be an int or a tuple (as in PyTorch), "
                         f"got {padding!r}")


def _transposed(x, weight, bias, stride, pad, op, groups, dilation):
    """The transposed convolution of a checked 4-D x: conv2d's input gradient for an
    input of the size PyTorch gives the output, plus the bias."""
    v.check_output_padding(op, stride, dilation)
    size = [(n - 1) * s - lo - hi + d * (k - 1) + o + 1
            for n, s, lo, hi, d, k, o in zip(x.shape[2:], stride, pad[::2], pad[1::2],
                                             dilation, weight.shape[2:], op)]
    if min(size) < 1:
        raise ValueError(f"padding {tuple(pad[::2])} crops more than the transposed "
                         f"convolution's output of input spatial {tuple(x.shape[2:])} has: "
                         f"it would be {tuple(size)}")
    y = _ops.call_grad_input(x, weight, size, list(stride), pad, list(dilation),
                             v._int(groups, "groups", 1))
    if bias is not None:
        y = y + bias.view(1, -1, 1, 1)
    return y
