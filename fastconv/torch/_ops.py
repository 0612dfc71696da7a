"""The PyTorch operators: a convolution's three passes as custom operators in the
``fastconv`` namespace, each differentiable through the other two.

    fastconv::conv2d(x, w, b, ...)             y  = conv(x, w) + b
    fastconv::conv2d_grad_input(gy, w, ...)    gx = conv's input gradient
    fastconv::conv2d_grad_weight(gy, x, ...)   gw = conv's weight gradient

The convolution is bilinear in (x, w), so each pass is linear in each of its two
tensors, and the gradients of a pass are the other passes on the same geometry (with
the upstream gradient g in the place of the tensor differentiated):

    conv2d:       d x = grad_input(gy, w)     d w = grad_weight(gy, x)   d b = sum(gy)
    grad_input:   d gy = conv2d(g, w)         d w = grad_weight(gy, g)
    grad_weight:  d gy = conv2d(x, g)         d x = grad_input(gy, g)

so double (and higher) backward works: ``gradgradcheck`` passes. Under
``torch.compile`` each operator is opaque: its fake implementation gives the output's
shape, dtype and strides from fastconv.output_shape (which checks the shapes as the
real call would), and the graph calls the real one.

The geometry travels as plain ints: stride (sh, sw), pad per side (top, bottom, left,
right), dilation (dh, dw), groups; grad_input also takes the input's (H, W), which the
output does not determine when the stride is above 1, and grad_weight the filters'
shape. Each runs in NCHW or NHWC as its first tensor lies (``_tensors.is_nhwc``).
"""
from __future__ import annotations

import numpy as np
import torch

import fastconv
from fastconv import _threads

from . import _tensors as t

_GEOMETRY = "int[] stride, int[] pad, int[] dilation, int groups"


def _layout(nhwc: bool) -> str:
    return "NHWC" if nhwc else "NCHW"


def _sides(pad):
    return (pad[0], pad[1]), (pad[2], pad[3])


def _follow_torch_threads() -> None:
    # fastconv runs while torch's pool waits on the operator: one pool busy at a time.
    _threads.follow(torch.get_num_threads())


def _output_padding(size, out, kernel, stride, pad, dilation):
    """The output padding of the transposed convolution that maps a (P, Q) gradient
    back onto an (H, W) input: the rows and columns the stride skipped at the end
    (always below the stride)."""
    return tuple(n + lo + hi - d * (k - 1) - 1 - (p - 1) * s
                 for n, p, k, s, lo, hi, d in zip(size, out, kernel, stride, pad[::2],
                                                   pad[1::2], dilation))


def _fake_shape(x_shape, w_shape, stride, pad, dilation, groups):
    """(N, K, P, Q) of conv2d on these shapes, checked by fastconv (NCHW terms)."""
    return fastconv.output_shape(tuple(x_shape), tuple(w_shape), tuple(stride),
                                 _sides(pad), dilation=tuple(dilation), groups=groups)


# --- forward ------------------------------------------------------------------------

def _conv2d(x, w, b, stride, pad, dilation, groups):
    _follow_torch_threads()
    nhwc = t.is_nhwc(x)
    y = fastconv.conv2d(t.act(x, nhwc), t.filt(w, nhwc), stride, _sides(pad),
                        bias=None if b is None else b.numpy(force=True), dilation=dilation,
                        groups=groups, layout=_layout(nhwc))
    return t.act_out(y, nhwc)


conv2d = torch.library.custom_op(
    "fastconv::conv2d", _conv2d, mutates_args=(), device_types="cpu",
    schema=f"(Tensor x, Tensor w, Tensor? b, {_GEOMETRY}) -> Tensor")


@conv2d.register_fake
def _(x, w, b, stride, pad, dilation, groups):
    shape = _fake_shape(x.shape, w.shape, stride, pad, dilation, groups)
    return t.empty_act(x, shape, t.is_nhwc(x))


# --- input gradient -----------------------------------------------------------------

def _conv2d_grad_input(gy, w, size, stride, pad, dilation, groups):
    # A convolution's input gradient is the transposed convolution of gy with w.
    _follow_torch_threads()
    nhwc = t.is_nhwc(gy)
    op = _output_padding(size, gy.shape[2:], w.shape[2:], stride, pad, dilation)
    gx = fastconv.conv_transpose2d(t.act(gy, nhwc), t.filt(w, nhwc), stride, _sides(pad),
                                   output_padding=op, dilation=dilation, groups=groups,
                                   layout=_layout(nhwc))
    return t.act_out(gx, nhwc)


conv2d_grad_input = torch.library.custom_op(
    "fastconv::conv2d_grad_input", _conv2d_grad_input, mutates_args=(), device_types="cpu",
    schema=f"(Tensor gy, Tensor w, int[] size, {_GEOMETRY}) -> Tensor")


@conv2d_grad_input.register_fake
def _(gy, w, size, stride, pad, dilation, groups):
    N, K = gy.shape[:2]
    Cg = w.shape[1]
    if w.shape[0] != K:
        raise ValueError(f"w must have gy's K = {K} filters, got shape {tuple(w.shape)}")
    return t.empty_act(gy, (N, Cg * groups, *size), t.is_nhwc(gy))


# --- weight gradient ----------------------------------------------------------------

def _conv2d_grad_weight(gy, x, w_shape, stride, pad, dilation, groups):
    _follow_torch_threads()
    nhwc = t.is_nhwc(x)
    K, Cg, R, S = w_shape
    # conv2d_backward reads only w's shape for the weight gradient: an empty stand-in.
    xa = t.act(x, nhwc)
    w = np.empty((R, S, Cg, K) if nhwc else (K, Cg, R, S), dtype=xa.dtype)
    gw = fastconv.conv2d_backward(t.act(gy, nhwc), xa, w, stride, _sides(pad),
                                  dilation=dilation, groups=groups, layout=_layout(nhwc),
                                  wrt=("w",)).w
    return t.filt_out(gw, nhwc)


conv2d_grad_weight = torch.library.custom_op(
    "fastconv::conv2d_grad_weight", _conv2d_grad_weight, mutates_args=(),
    device_types="cpu",
    schema=f"(Tensor gy, Tensor x, int[] w_shape, {_GEOMETRY}) -> Tensor")


@conv2d_grad_weight.register_fake
def _(gy, x, w_shape, stride, pad, dilation, groups):
    return t.empty_filt(x, tuple(w_shape), t.is_nhwc(x))


# --- autograd -----------------------------------------------------------------------
# The backward formulas call the passes through call_*: in a plain backward (grad mode
# off) that is the implementation itself (conv2d's: one fastconv call for all three
# gradients); with create_graph a recorded pass, differentiable again; while
# torch.compile's autograd traces the backward, the operator.

def _save(ctx, inputs, output):
    # Each pass's two tensors come first and its geometry (stride, pad, dilation,
    # groups) last.
    ctx.save_for_backward(inputs[0], inputs[1])
    ctx.geometry = inputs[-4:]


def _conv2d_backward(ctx, gy):
    x, w = ctx.saved_tensors
    geo = ctx.geometry
    need = ctx.needs_input_grad
    if need[0] and need[1] and not torch.is_grad_enabled() and _eager(gy, x, w):
        return (*_grads_at_once(gy, x, w, geo, need), None, None, None, None)
    gx = call_grad_input(gy, w, list(x.shape[2:]), *geo) if need[0] else None
    gw = call_grad_weight(gy, x, list(w.shape), *geo) if need[1] else None
    gb = gy.sum((0, 2, 3)) if need[2] else None
    return gx, gw, gb, None, None, None, None


def _grads_at_once(gy, x, w, geo, need):
    """(gx, gw, gb) in one fastconv.conv2d_backward call (one set of checks, not
    three): for a plain backward, which records nothing for a next derivative."""
    stride, pad, dilation, groups = geo
    _follow_torch_threads()
    nhwc = t.is_nhwc(x)
    g = fastconv.conv2d_backward(t.act(gy, nhwc), t.act(x, nhwc), t.filt(w, nhwc), stride,
                                 _sides(pad), dilation=dilation, groups=groups,
                                 layout=_layout(nhwc),
                                 wrt=tuple(n for n, k in zip("xwb", need) if k))
    return (t.act_out(g.x, nhwc), t.filt_out(g.w, nhwc),
            None if g.b is None else torch.from_numpy(g.b))


def _grad_input_backward(ctx, g):
    gy, w = ctx.saved_tensors
    geo = ctx.geometry
    need = ctx.needs_input_grad
    # An output padding of at least the stride (PyTorch allows one below the dilation)
    # makes g's convolution P' x Q' larger than gy: gy is then its first P x Q, the
    # rest zeros (rows no input pixel reached).
    stride, pad, dilation, _ = geo
    full = _conv_out(g.shape[2:], w.shape[2:], stride, pad, dilation)
    P, Q = gy.shape[2:]
    d_gy = d_w = None
    if need[0]:
        d_gy = call_conv2d(g, w, None, *geo)[:, :, :P, :Q]
    if need[1]:
        if full != (P, Q):
            gy = torch.nn.functional.pad(gy, (0, full[1] - Q, 0, full[0] - P))
        d_w = call_grad_weight(gy, g, list(w.shape), *geo)
    return d_gy, d_w, None, None, None, None, None


def _conv_out(size, kernel, stride, pad, dilation):
    """(P, Q) of the convolution of an input of ``size``."""
    return tuple((n + lo + hi - d * (k - 1) - 1) // s + 1
                 for n, k, s, lo, hi, d in zip(size, kernel, stride, pad[::2], pad[1::2],
                                               dilation))


def _grad_weight_backward(ctx, g):
    gy, x = ctx.saved_tensors
    geo = ctx.geometry
    need = ctx.needs_input_grad
    d_gy = call_conv2d(x, g, None, *geo) if need[0] else None
    d_x = call_grad_input(gy, g, list(x.shape[2:]), *geo) if need[1] else None
    return d_gy, d_x, None, None, None, None, None


conv2d.register_autograd(_conv2d_backward, setup_context=_save)
conv2d_grad_input.register_autograd(_grad_input_backward, setup_context=_save)
conv2d_grad_weight.register_autograd(_grad_weight_backward, setup_context=_save)


# --- the eager shortcuts ------------------------------------------------------------
# torch's custom-op machinery costs more than the whole bridge: a no-op custom op took
# 34 us, and conv2d's autograd wrapper ~170 us more than a torch.autograd.Function with
# the same formulas (2026-12-03, a slow shared VM; fastconv.conv2d itself ~180 us on a
# 1x8x8x8 layer there). In plain eager calls (plain CPU tensors, not compiling, no
# dispatch or function mode -- proxy or fake tracing, FlopCounter ... -- that must see
# the operator) a pass runs its implementation directly, or, when a gradient is wanted,
# through an autograd.Function with the operator's own setup_context and backward.
# Everything else goes through the operator.

# Exact types: a tensor subclass (FakeTensor, a user's __torch_function__ class) must
# see the operator. nn.Parameter is a plain tensor for this purpose.
_PLAIN = (torch.Tensor, torch.nn.Parameter)


def _eager(a, b, c) -> bool:
    """Whether nothing but autograd needs to see a call on these tensors (no torch.func
    transform either: the shortcut's Functions have no setup_context for it)."""
    return (type(a) in _PLAIN and type(b) in _PLAIN and (c is None or type(c) in _PLAIN)
            and not torch.compiler.is_compiling()
            and not torch._C._len_torch_dispatch_stack()
            and not torch._C._is_torch_function_mode_enabled()
            and not torch._C._are_functorch_transforms_active())


def _wants_grad(a, b, c) -> bool:
    return torch.is_grad_enabled() and (a.requires_grad or b.requires_grad or (
        c is not None and c.requires_grad))


def _function(name, impl, backward):
    """An autograd.Function running ``impl`` with the operator's formulas, in the
    classic form (forward takes ctx): a Function with a setup_context binds its
    arguments through inspect.signature on every apply, 20-50 us a call (2026-12-07,
    Zen 4 VM; torch 2.13), more than the target for the whole bridge."""
    def forward(ctx, *inputs):
        out = impl(*inputs)
        _save(ctx, inputs, out)
        return out

    return type(name, (torch.autograd.Function,), dict(
        forward=staticmethod(forward), backward=staticmethod(backward)))


_Conv2d = _function("_Conv2d", _conv2d, _conv2d_backward)
_GradInput = _function("_GradInput", _conv2d_grad_input, _grad_input_backward)
_GradWeight = _function("_GradWeight", _conv2d_grad_weight, _grad_weight_backward)


def _route(op, impl, fn, a, b, c=None):
    if not _eager(a, b, c):
        return op
    return fn.apply if _wants_grad(a, b, c) else impl


def call_conv2d(x, w, b, stride, pad, dilation, groups):
    """conv2d(...): the operator, or in plain eager calls its implementation."""
    run = _route(conv2d, _conv2d, _Conv2d, x, w, b)
    return run(x, w, b, stride, pad, dilation, groups)


def call_grad_input(gy, w, size, stride, pad, dilation, groups):
    """conv2d_grad_input(...), as call_conv2d (the transposed convolution's forward)."""
    run = _route(conv2d_grad_input, _conv2d_grad_input, _GradInput, gy, w)
    return run(gy, w, size, stride, pad, dilation, groups)


def call_grad_weight(gy, x, w_shape, stride, pad, dilation, groups):
    """conv2d_grad_weight(...), as call_conv2d."""
    run = _route(conv2d_grad_weight, _conv2d_grad_weight, _GradWeight, gy, x)
    return run(gy, x, w_shape, stride, pad, dilation, groups)
