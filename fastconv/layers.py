"""Convolution layers that hold their weights and accumulate gradients: Conv2d, Conv1d,
ConvTranspose2d and ConvTranspose1d.

A layer's weights are tied across every position of every image and across every
call. Each call records its input; ``backward`` consumes the recorded inputs last in,
first out -- the order reverse-mode differentiation visits them -- and adds (``+=``)
each use's gradient, so a layer used twice receives the sum of both gradients.

Packed filters. The direct engine reorders a layer's filters for its micro-kernels
before it computes; for a small batch that costs as much as the convolution (batch 1,
512 filters of 512 x 3 x 3: 9.4 MB read and written for 0.23 GFLOP). An inference call
(``record=False``) keeps what it packed, and the next inference calls reuse it, for as
long as the weights are unchanged: every write through the layer (assigning
``layer.weight``, ``weight_changed()``) bumps ``weight_version`` and drops the packs,
and so does every training call (``record=True``) and ``parameters()``, after which
weights are written in place by an optimiser. Code that writes into ``layer.weight``
in place between inference calls must call ``layer.weight_changed()`` afterwards. A
transposed layer's forward is a convolution's grad_input, whose filters the direct and
Winograd engines pack the same way; its layer keeps those.
"""
from __future__ import annotations

import numpy as np

from . import _validate as v
from ._api import _conv2d, conv2d_backward
from ._conv1d import LAYOUTS_1D, _conv1d, _int1, conv1d_backward, pad_sides_1d
from ._transpose import (_conv_transpose1d, _conv_transpose2d, conv_transpose1d_backward,
                         conv_transpose2d_backward)


class _ConvLayer:
    """What the layers share; subclasses set the shapes and the two functions."""

    _forward = None   # _conv2d, _conv1d, ...: the function with a dict of packed filters
    _backward = None  # conv2d_backward, conv1d_backward, ...
    _layouts: tuple[str, ...] = ()
    _transposed = False  # whose weight shape and fan_in: a transposed convolution's

    def __init__(self, in_channels, out_channels, kernel, stride, pad, dilation, groups, bias,
                 layout, dtype, rng):
        self.in_channels = v._int(in_channels, "in_channels", 1)
        self.out_channels = v._int(out_channels, "out_channels", 1)
        self.groups = v._int(groups, "groups", 1)
        if self.in_channels % self.groups or self.out_channels % self.groups:
            raise ValueError(f"groups must divide in_channels={self.in_channels} and "
                             f"out_channels={self.out_channels}, got groups={self.groups}")
        self.layout = v._choice(layout, "layout", self._layouts)
        self.dtype = np.dtype(dtype)
        if self.dtype not in (np.float32, np.float64):
            raise TypeError(f"dtype must be float32 or float64, got {self.dtype}")
        v.flag(bias, "bias")
        self._check_options(kernel, stride, pad, dilation)  # fail here, not at the first call
        self.stride, self.pad, self.dilation = stride, pad, dilation
        self.kernel_size = kernel
        rng = np.random.default_rng(rng)
        shape = self._weight_shape(kernel)
        # PyTorch's fan_in: its weight.shape[1] times the taps, which is in_channels/groups
        # for a convolution and out_channels/groups for a transposed one.
        fan_in = (self.out_channels if self._transposed else self.in_channels) // self.groups
        bound = 1.0 / np.sqrt(fan_in * int(np.prod(kernel)))
        self._weight = rng.uniform(-bound, bound, shape).astype(self.dtype)
        self._version = 0
        # The direct engine's packs of _weight as it is now: every bump of _version, and
        # every hand-out of the array for writing, drops them.
        self._packs: dict | None = None
        self.bias = rng.uniform(-bound, bound, self.out_channels).astype(self.dtype) if bias \
            else None
        self.weight_grad = np.zeros_like(self.weight)
        self.bias_grad = None if self.bias is None else np.zeros_like(self.bias)
        self._inputs: list[np.ndarray] = []

    def _weight_shape(self, kernel):
        raise NotImplementedError

    def _check_options(self, kernel, stride, pad, dilation):
        raise NotImplementedError

    def _options(self) -> dict:
        return dict(dilation=self.dilation, groups=self.groups, layout=self.layout)

    @property
    def weight(self) -> np.ndarray:
        """The filters (the layer's own C-contiguous array; see the module's note on
        writing into it in place)."""
        return self._weight

    @weight.setter
    def weight(self, value) -> None:
        a = v.as_array(value, "weight")
        if a.shape != self._weight.shape:
            raise ValueError(f"weight must have shape {self._weight.shape}, got {a.shape}")
        self._weight = np.array(a, dtype=self.dtype, order="C")  # a copy the layer owns
        self.weight_changed()

    @property
    def weight_version(self) -> int:
        """Bumped by every write through the layer: assigning ``weight``,
        ``weight_changed()``."""
        return self._version

    def weight_changed(self) -> None:
        """Say that ``weight`` was written in place: packed filters kept by inference
        calls are dropped, and the next call packs the new values."""
        self._version += 1
        self._packs = None

    def _inference_packs(self) -> dict:
        if self._packs is None:
            self._packs = {}
        return self._packs

    def __call__(self, x, *, record=True):
        """Forward pass. The input is recorded (by reference: do not modify it in place
        before ``backward``) unless ``record=False``, as for inference; inference calls
        reuse the filters packed by the one before (see the module's note)."""
        x = v.as_array(x, "x")
        if record:
            self._packs = None  # training: an optimiser writes the weights next
            packs = None
        else:
            packs = self._inference_packs()
        y = self._forward(x, self._weight, self.stride, self.pad, bias=self.bias, flip=False,
                          backend="auto", packs=packs, **self._options())
        if record:
            self._inputs.append(x)
        return y

    def backward(self, grad_y):
        """Back-propagate ``grad_y`` through the most recent unconsumed call.

        Adds the weight and bias gradients to ``weight_grad`` and ``bias_grad`` and
        returns the gradient with respect to that call's input. Raises RuntimeError
        when no call is left to back-propagate through.
        """
        if not self._inputs:
            raise RuntimeError(f"{type(self).__name__}.backward: no recorded forward call left "
                               f"to back-propagate through (each call to the layer allows one "
                               f"backward, last in first out)")
        x = self._inputs[-1]
        wrt = ("x", "w", "b") if self.bias is not None else ("x", "w")
        g = self._backward(grad_y, x, self.weight, self.stride, self.pad, wrt=wrt,
                           **self._options())
        self._inputs.pop()  # only once the gradient is computed: a bad grad_y loses nothing
        self.weight_grad += g.w
        if self.bias is not None:
            self.bias_grad += g.b
        return g.x

    def zero_grad(self) -> None:
        """Set ``weight_grad`` and ``bias_grad`` to zero (recorded inputs are kept)."""
        self.weight_grad[...] = 0
        if self.bias_grad is not None:
            self.bias_grad[...] = 0

    def clear(self) -> None:
        """Forget the recorded inputs that no backward has consumed."""
        self._inputs.clear()

    @property
    def pending(self) -> int:
        """How many recorded calls are waiting for a backward."""
        return len(self._inputs)

    def parameters(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """``[(weight, weight_grad), (bias, bias_grad)]`` (no bias pair without a bias)."""
        self._packs = None  # the caller may now write into weight
        pairs = [(self._weight, self.weight_grad)]
        if self.bias is not None:
            pairs.append((self.bias, self.bias_grad))
        return pairs

    def __repr__(self) -> str:
        extra = "".join(f"{k}={v!r}, " for k, v in self._options().items()
                        if k not in ("dilation", "groups", "layout"))
        return (f"{type(self).__name__}({self.in_channels}, {self.out_channels}, "
                f"kernel_size={self.kernel_size}, stride={self.stride!r}, pad={self.pad!r}, "
                f"{extra}dilation={self.dilation!r}, groups={self.groups}, "
                f"bias={self.bias is not None}, layout={self.layout!r}, dtype={self.dtype.name})")


class Conv2d(_ConvLayer):
    """A 2-D convolution layer on :func:`fastconv.conv2d`, with tied, accumulating weights.

    ``weight`` is ``(K, C/groups, R, S)`` for NCHW or ``(R, S, C/groups, K)`` for
    NHWC; ``bias`` is ``(K,)`` or None; ``weight_grad`` and ``bias_grad`` match them.

    Initialisation is PyTorch's default for ``nn.Conv2d``: weights are Kaiming-uniform
    with ``a = sqrt(5)`` (``kaiming_uniform_(w, a=math.sqrt(5))``), which is uniform on
    ``[-1/sqrt(fan_in), 1/sqrt(fan_in)]`` with ``fan_in = C/groups * R * S``, and the
    bias is uniform on the same interval. ``rng`` is anything
    ``numpy.random.default_rng`` accepts.

    ``layer(x)`` returns ``y`` and records ``x``; ``layer.backward(grad_y)`` returns
    the input gradient of the most recent unconsumed call and adds its weight and bias
    gradients to ``weight_grad`` and ``bias_grad``; ``zero_grad()`` resets them. A
    backward with no recorded call raises RuntimeError.
    """

    _forward = staticmethod(_conv2d)
    _backward = staticmethod(conv2d_backward)
    _layouts = ("NCHW", "NHWC")

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, pad=0, *, dilation=1,
                 groups=1, bias=True, layout="NCHW", dtype=np.float32, rng=None):
        kernel = v.pair(kernel_size, "kernel_size", 1)
        super().__init__(in_channels, out_channels, kernel, stride, pad, dilation, groups, bias,
                         layout, dtype, rng)

    def _weight_shape(self, kernel):
        R, S = kernel
        cg, k = self.in_channels // self.groups, self.out_channels
        return (R, S, cg, k) if self.layout == "NHWC" else (k, cg, R, S)

    def _check_options(self, kernel, stride, pad, dilation):
        stride, dilation = v.pair(stride, "stride", 1), v.pair(dilation, "dilation", 1)
        v.pad_sides(pad, kernel, stride, dilation, (1, 1))


class Conv1d(_ConvLayer):
    """A 1-D convolution layer on :func:`fastconv.conv1d`; otherwise as :class:`Conv2d`.

    ``weight`` is ``(K, C/groups, R)`` for NCL or ``(R, C/groups, K)`` for NLC. The
    initialisation is PyTorch's for ``nn.Conv1d``: weight and bias uniform on
    ``[-1/sqrt(fan_in), 1/sqrt(fan_in)]``, ``fan_in = C/groups * R``.
    """

    _forward = staticmethod(_conv1d)
    _backward = staticmethod(conv1d_backward)
    _layouts = tuple(LAYOUTS_1D)

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, pad=0, *, dilation=1,
                 groups=1, bias=True, layout="NCL", dtype=np.float32, rng=None):
        kernel = (_int1(kernel_size, "kernel_size", 1),)
        super().__init__(in_channels, out_channels, kernel, stride, pad, dilation, groups, bias,
                         layout, dtype, rng)

    def _weight_shape(self, kernel):
        (R,) = kernel
        cg, k = self.in_channels // self.groups, self.out_channels
        return (R, cg, k) if self.layout == "NLC" else (k, cg, R)

    def _check_options(self, kernel, stride, pad, dilation):
        stride, dilation = _int1(stride, "stride", 1), _int1(dilation, "dilation", 1)
        pad_sides_1d(pad, kernel[0], stride, dilation, 1)


class ConvTranspose2d(_ConvLayer):
    """A 2-D transposed convolution layer on :func:`fastconv.conv_transpose2d`, with
    tied, accumulating weights; the constructor of :class:`Conv2d` plus
    ``output_padding``.

    ``weight`` is ``(C_in, C_out/groups, R, S)`` for NCHW (PyTorch's
    ``nn.ConvTranspose2d``) or ``(R, S, C_out/groups, C_in)`` for NHWC; ``bias`` is
    ``(C_out,)`` or None. ``pad`` takes the forms of :func:`conv_transpose2d` (no
    strings). The initialisation is PyTorch's for ``nn.ConvTranspose2d``: weight and
    bias uniform on ``[-1/sqrt(fan_in), 1/sqrt(fan_in)]``, where PyTorch's fan_in, read
    off the weight's dimension 1, is ``C_out/groups * R * S``. Calls, ``backward``, the
    tape and the packed filters of inference calls are those of :class:`Conv2d`.
    """

    _forward = staticmethod(_conv_transpose2d)
    _backward = staticmethod(conv_transpose2d_backward)
    _layouts = ("NCHW", "NHWC")
    _transposed = True

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, pad=0, *,
                 output_padding=0, dilation=1, groups=1, bias=True, layout="NCHW",
                 dtype=np.float32, rng=None):
        kernel = v.pair(kernel_size, "kernel_size", 1)
        self.output_padding = output_padding
        super().__init__(in_channels, out_channels, kernel, stride, pad, dilation, groups, bias,
                         layout, dtype, rng)

    def _options(self) -> dict:
        return dict(super()._options(), output_padding=self.output_padding)

    def _weight_shape(self, kernel):
        R, S = kernel
        c, kg = self.in_channels, self.out_channels // self.groups
        return (R, S, kg, c) if self.layout == "NHWC" else (c, kg, R, S)

    def _check_options(self, kernel, stride, pad, dilation):
        stride, dilation = v.pair(stride, "stride", 1), v.pair(dilation, "dilation", 1)
        v.check_output_padding(v.pair(self.output_padding, "output_padding", 0), stride,
                               dilation)
        v.transposed_pad(pad, "an int, a pair (h, w) or ((top, bottom), (left, right))")
        v.pad_sides(pad, kernel, stride, dilation, (1, 1))


class ConvTranspose1d(_ConvLayer):
    """A 1-D transposed convolution layer on :func:`fastconv.conv_transpose1d`;
    otherwise as :class:`ConvTranspose2d`.

    ``weight`` is ``(C_in, C_out/groups, R)`` for NCL or ``(R, C_out/groups, C_in)`` for
    NLC; PyTorch's fan_in for ``nn.ConvTranspose1d`` is ``C_out/groups * R``.
    """

    _forward = staticmethod(_conv_transpose1d)
    _backward = staticmethod(conv_transpose1d_backward)
    _layouts = tuple(LAYOUTS_1D)
    _transposed = True

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, pad=0, *,
                 output_padding=0, dilation=1, groups=1, bias=True, layout="NCL",
                 dtype=np.float32, rng=None):
        kernel = (_int1(kernel_size, "kernel_size", 1),)
        self.output_padding = output_padding
        super().__init__(in_channels, out_channels, kernel, stride, pad, dilation, groups, bias,
                         layout, dtype, rng)

    def _options(self) -> dict:
        return dict(super()._options(), output_padding=self.output_padding)

    def _weight_shape(self, kernel):
        (R,) = kernel
        c, kg = self.in_channels, self.out_channels // self.groups
        return (R, kg, c) if self.layout == "NLC" else (c, kg, R)

    def _check_options(self, kernel, stride, pad, dilation):
        stride, dilation = _int1(stride, "stride", 1), _int1(dilation, "dilation", 1)
        v.check_output_padding((_int1(self.output_padding, "output_padding", 0),), (stride,),
                               (dilation,))
        v.transposed_pad(pad, "an int or a pair (left, right)")
        pad_sides_1d(pad, kernel[0], stride, dilation, 1)
