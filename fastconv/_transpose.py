"""Transposed convolution, 2-D and 1-D, forward and backward, on the convolution engines.

A transposed convolution is the input gradient of a convolution, used as a layer of its
own. Its geometry is that convolution's (``_validate.transposed_geometry``): the
convolution's input is the transposed op's output (C_out channels, Ho x Wo), its output
is the transposed op's input (C_in channels, H x W), and its filters are ``w`` exactly
as given: PyTorch's (C_in, C_out/groups, R, S) is OIHW with K = C_in and C = C_out, and
TensorFlow's (R, S, C_out/groups, C_in) is HWIO the same way. Each pass is then one of
the convolution's passes with the roles of its arrays swapped:

    transposed forward      y  = grad_input(x, w)          x in grad_y's place
    transposed grad_input   gx = forward(grad_y, w)        grad_y in x's place
    transposed grad_weight  gw = grad_weight(x, grad_y)    x as grad_y, grad_y as x
    transposed grad_bias    gb = grad_y summed over N and the spatial axes

on the existing engines, through the API layer of ``conv2d`` (``_api._Problem``: the
same checks, conversions and engine choice). ``auto`` picks each pass's engine as for
that convolution's pass, with the same cost model and the same tuned winners, the
computation being the same one. Nothing is copied beyond what the convolution's pass
copies; the bias is added to the fresh output in place.

Padding is the convolution's, and so crops the transposed op's output: an int, a pair
(h, w) or per side ((top, bottom), (left, right)); PyTorch's ``padding`` is the
symmetric forms. conv2d's strings "valid", "same" and "full" are refused: they name a
convolution's output size, and for a transposed one frameworks give them different
meanings (Keras's "same" makes H * stride, which needs an output padding that depends
on the kernel; ``tf.nn.conv2d_transpose`` takes the output shape instead). "valid" is
pad 0. ``output_padding`` adds rows and columns at the bottom and right of the output,
PyTorch's rule: smaller than the stride or the dilation on each axis.
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np

from . import _validate as v
from ._api import ConvGrads, _check_memory, _flip, _Problem
from ._conv1d import LAYOUTS_1D, _int1, _Problem1d, pad_sides_1d, signal_arrays
from ._geometry import ConvGeometry, transposed_out_size

# The convolution pass that computes each pass of a transposed convolution.
CONV_PASS = {"forward": "grad_input", "grad_input": "forward", "grad_weight": "grad_weight"}


class _TransposedProblem(_Problem):
    """One transposed call: _Problem's checks and conversions, with the geometry of the
    convolution whose input gradient it is."""

    def __init__(self, x, w, stride, pad, output_padding, dilation, groups, layout, flip,
                 backend, extra=()):
        self.output_padding = output_padding
        super().__init__(x, w, stride, pad, dilation, groups, layout, flip, backend, extra)

    def _geometry(self, x_shape, w_shape, stride, pad, dilation, groups) -> ConvGeometry:
        return v.transposed_geometry(x_shape, w_shape, stride, pad, self.output_padding,
                                     dilation, groups, self.layout)


def _as_output(g: ConvGeometry) -> ConvGeometry:
    """g with the convolution's input in its output's place: the engines' grad_bias reads
    only N, K, P, Q and the layout, which then describe the transposed op's grad_y."""
    return replace(g, K=g.C, P=g.H, Q=g.W)


def conv_transpose2d(x, w, stride=1, pad=0, *, output_padding=0, bias=None, dilation=1,
                     groups=1, layout="NCHW", flip=False, backend="auto"):
    """2-D transposed convolution ("deconvolution"), forward pass, PyTorch's semantics.

    The gradient of :func:`conv2d` with respect to its input, as a layer: each input
    pixel scatters ``w`` times its value into the output, ``stride`` pixels apart.

    Parameters
    ----------
    x : array_like
        Input, ``(N, C_in, H, W)`` for ``layout="NCHW"`` or ``(N, H, W, C_in)`` for
        "NHWC"; a 3-D input is one image without the batch axis (the output is 3-D too).
    w : array_like
        Filters, ``(C_in, C_out/groups, R, S)`` for NCHW, as
        ``torch.nn.functional.conv_transpose2d``; ``(R, S, C_out/groups, C_in)`` for
        NHWC, as ``tf.nn.conv2d_transpose``.
    stride, dilation : int or (int, int)
    pad : int, (int, int) or ((top, bottom), (left, right))
        Rows and columns cropped from the output (PyTorch's ``padding``); strings are
        refused (see the module docstring).
    output_padding : int or (int, int)
        Rows and columns added at the bottom and right of the output; on each axis
        smaller than the stride or the dilation.
    bias : array_like of shape (C_out,), optional
    groups : int
        Divides C_in; C_out is ``groups * w``'s C_out/groups.
    layout, flip, backend
        As for :func:`fastconv.conv2d`. ``flip=True`` flips the kernel in both spatial
        axes: the transposed op of ``conv2d(..., flip=True)``. ``backend="winograd"``
        takes 3x3 filters at stride 1 and dilation 1, and filters whose stride
        phases are 3x3 windows on an output they tile (DCGAN's 4x4 at stride 2, pad 1,
        without output_padding); ValueError otherwise.

    Returns
    -------
    y : ndarray
        ``(N, C_out, Ho, Wo)`` or ``(N, Ho, Wo, C_out)``, fresh and C-contiguous, of the
        promoted dtype, with Ho = (H - 1) * stride - pad_top - pad_bottom
        + dilation * (R - 1) + output_padding + 1 and Wo likewise.
    """
    return _conv_transpose2d(x, w, stride, pad, bias, dilation, groups, layout, flip,
                             backend, None, output_padding)


def _conv_transpose2d(x, w, stride, pad, bias, dilation, groups, layout, flip, backend,
                      packs, output_padding=0):
    """conv_transpose2d with ``packs``, as ``_api._conv2d``: a dict in which the direct
    and Winograd engines keep the filters they packed for grad_input, for a layer's
    inference calls."""
    pr = _TransposedProblem(x, w, stride, pad, output_padding, dilation, groups, layout,
                            flip, backend, extra=[(bias, "bias")])
    g = pr.g
    (b,) = pr.extra
    if b is not None:
        v.check_bias(b, g.C, "C_out")
    _check_memory(g.x_shape, pr.dtype, "the output")
    if g.N == 0:
        return pr.unbatch(np.zeros(g.x_shape, dtype=pr.dtype))
    kept = packs if pr.w_is_callers else None
    y = pr.run(CONV_PASS["forward"],
               lambda eng, **kw: eng.grad_input(pr.x, pr.w, g, kept, **kw))
    if b is not None:
        y += b if g.nhwc else b[:, None, None]
    return pr.unbatch(y)


def conv_transpose2d_backward(grad_y, x, w, stride=1, pad=0, *, output_padding=0,
                              dilation=1, groups=1, layout="NCHW", flip=False,
                              backend="auto", wrt=("x", "w", "b")):
    """Gradients of :func:`conv_transpose2d` with respect to its input, weights and bias.

    ``grad_y`` has the forward output's shape. The input gradient is a convolution of
    ``grad_y`` with ``w`` (conv2d's forward), the weight gradient conv2d's weight
    gradient with the roles of input and output swapped, the bias gradient ``grad_y``
    summed over the batch and the spatial axes. Only the gradients named in ``wrt`` are
    computed; the others are None.

    Returns
    -------
    ConvGrads(x, w, b)
        ``x`` has x's shape, ``w`` has w's shape (for ``flip=True`` too), ``b`` is
        (C_out,).
    """
    want = v.wrt_set(wrt)
    pr = _TransposedProblem(x, w, stride, pad, output_padding, dilation, groups, layout,
                            flip, backend, extra=[(grad_y, "grad_y")])
    g = pr.g
    (gy,) = pr.extra
    v.check_grad_y(gy.shape, g.x_shape, pr.unbatched)
    gy4 = gy[None] if pr.unbatched else gy
    if g.N == 0:
        gx = np.zeros(g.y_shape, pr.dtype) if "x" in want else None
        gw = np.zeros(g.w_shape, pr.dtype) if "w" in want else None
        gb = np.zeros(g.C, pr.dtype) if "b" in want else None
        return ConvGrads(None if gx is None else pr.unbatch(gx), gw, gb)
    gx = gw = gb = None
    if "x" in want:
        gx = pr.unbatch(pr.run(CONV_PASS["grad_input"],
                               lambda eng, **kw: eng.forward(gy4, pr.w, None, g, **kw)))
    if "w" in want:
        gw = pr.run(CONV_PASS["grad_weight"],
                    lambda eng, **kw: eng.grad_weight(pr.x, gy4, g))
        if pr.flip:  # the gradient w.r.t. the flipped kernel, flipped back
            gw = np.ascontiguousarray(_flip(gw, pr.layout))
    if "b" in want:
        gb = pr.engine(CONV_PASS["grad_weight"]).grad_bias(gy4, _as_output(g))
    return ConvGrads(gx, gw, gb)


# --- 1-D ------------------------------------------------------------------------------

_DESC_1D = {"NCL": ("(N, C_in, L)", "(C_in, L)", "(C_in, C_out/groups, R)"),
            "NLC": ("(N, L, C_in)", "(L, C_in)", "(R, C_out/groups, C_in)")}


class _TransposedProblem1d(_Problem1d):
    """One conv_transpose1d call, checked in 1-D terms and mapped onto a 2-D one: a
    signal is an image of height 1, with L along W, as for conv1d."""

    def __init__(self, x, w, stride, pad, output_padding, dilation, groups, layout):
        self.layout = v._choice(layout, "layout", tuple(LAYOUTS_1D))
        nlc = self.layout == "NLC"
        xdesc, _, wdesc = _DESC_1D[self.layout]
        x3, w, self.unbatched = signal_arrays(x, w, self.layout, _DESC_1D[self.layout])
        N, L, C = x3.shape if nlc else (x3.shape[0], x3.shape[2], x3.shape[1])
        R, Cgo, Cw = w.shape if nlc else w.shape[::-1]
        stride = _int1(stride, "stride", 1)
        dilation = _int1(dilation, "dilation", 1)
        op = _int1(output_padding, "output_padding", 0)
        groups = v._int(groups, "groups", 1)
        v.check_transposed_channels(C, Cw, Cgo, (R,), groups, x3.shape, w.shape, "x", xdesc,
                                    wdesc, self.layout)
        v.check_output_padding((op,), (stride,), (dilation,))
        v.transposed_pad(pad, "an int or a pair (left, right)")
        left, right = pad_sides_1d(pad, R, stride, dilation, L)
        Lo = transposed_out_size(L, R, stride, left, right, dilation, op)
        if Lo < 1:
            raise ValueError(f"pad {(left, right)} crops more than the transposed "
                             f"convolution's output of x length {L} has (kernel of {R} taps, "
                             f"stride {stride}, dilation {dilation}, output_padding {op}): "
                             f"the output would have length {Lo}")
        self.x_shape, self.w_shape = x3.shape, w.shape
        C_out = Cgo * groups
        self.y_shape = (N, Lo, C_out) if nlc else (N, C_out, Lo)
        # x (N,C,L) -> (N,C,1,L), (N,L,C) -> (N,1,L,C); w (C_in,Cgo,R) -> (C_in,Cgo,1,R),
        # (R,Cgo,C_in) -> (1,R,Cgo,C_in).
        self.x4 = x3[:, None] if nlc else x3[:, :, None]
        self.w4 = w[None] if nlc else w[:, :, None]
        self.opts = dict(stride=(1, stride), pad=((0, 0), (left, right)),
                         output_padding=(0, op), dilation=(1, dilation), groups=groups,
                         layout=LAYOUTS_1D[self.layout])


def conv_transpose1d(x, w, stride=1, pad=0, *, output_padding=0, bias=None, dilation=1,
                     groups=1, layout="NCL", flip=False, backend="auto"):
    """1-D transposed convolution, forward pass, on the 2-D engines (PyTorch's semantics).

    ``x`` is ``(N, C_in, L)`` for ``layout="NCL"`` with ``w`` ``(C_in, C_out/groups, R)``
    (``torch.nn.functional.conv_transpose1d``), or ``(N, L, C_in)`` for "NLC" with ``w``
    ``(R, C_out/groups, C_in)``; a 2-D input is one signal without the batch axis.
    ``stride``, ``dilation`` and ``output_padding`` are ints, ``pad`` an int or
    ``(left, right)``; the rest as for :func:`conv_transpose2d`. The output has length
    (L - 1) * stride - left - right + dilation * (R - 1) + output_padding + 1.
    """
    return _conv_transpose1d(x, w, stride, pad, bias, dilation, groups, layout, flip,
                             backend, None, output_padding)


def _conv_transpose1d(x, w, stride, pad, bias, dilation, groups, layout, flip, backend,
                      packs, output_padding=0):
    """conv_transpose1d with ``packs``, as ``_conv_transpose2d``: w4 is a view of the
    caller's w."""
    pr = _TransposedProblem1d(x, w, stride, pad, output_padding, dilation, groups, layout)
    y = _conv_transpose2d(pr.x4, pr.w4, bias=bias, flip=flip, backend=backend, packs=packs,
                          **pr.opts)
    return pr.unbatch(y.reshape(pr.y_shape))


def conv_transpose1d_backward(grad_y, x, w, stride=1, pad=0, *, output_padding=0,
                              dilation=1, groups=1, layout="NCL", flip=False,
                              backend="auto", wrt=("x", "w", "b")):
    """Gradients of :func:`conv_transpose1d`: ConvGrads(x, w, b) with x's shape, w's
    shape and (C_out,); a gradient not named in ``wrt`` is None."""
    pr = _TransposedProblem1d(x, w, stride, pad, output_padding, dilation, groups, layout)
    gy = v.as_array(grad_y, "grad_y")
    v.check_grad_y(gy.shape, pr.y_shape, pr.unbatched)
    gy3 = gy[None] if pr.unbatched else gy
    g = conv_transpose2d_backward(pr.to_4d(gy3), pr.x4, pr.w4, flip=flip, backend=backend,
                                  wrt=wrt, **pr.opts)
    gx = None if g.x is None else pr.unbatch(g.x.reshape(pr.x_shape))
    gw = None if g.w is None else g.w.reshape(pr.w_shape)
    return ConvGrads(gx, gw, g.b)
