"""fastconv's conv2d as a JAX function: a ``jax.custom_vjp`` whose forward and backward
call fastconv on the host through ``jax.pure_callback``, so it traces under ``jax.jit``
and differentiates under ``jax.grad`` (once: the backward is a callback, not JAX ops).

The geometry is static (``Geometry``: canonical per-side pads, checked by fastconv on
the shapes at trace time); the arrays are x (4-D, in ``layout``) and w (OIHW for NCHW,
HWIO for NHWC).

``jax.vmap``: the callbacks use ``vmap_method="expand_dims"``, so under vmap each array
arrives with the mapped axes in front (length 1 where that array is not mapped). With
unmapped filters the mapped axes fold into N: one fastconv call on (B * N, ...) for the
forward and the input gradient. The weight gradient is per mapped element (that is what
vmap means for it), so it, and every pass when the filters are mapped too, runs once per
element.
"""
from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import numpy as np

import fastconv


class Geometry(NamedTuple):
    stride: tuple[int, int]
    pad: tuple[tuple[int, int], tuple[int, int]]
    dilation: tuple[int, int]
    groups: int
    layout: str

    def options(self) -> dict:
        return dict(stride=self.stride, pad=self.pad, dilation=self.dilation,
                    groups=self.groups, layout=self.layout)


def _lead(a: np.ndarray, rank: int) -> tuple[int, ...]:
    """The axes vmap put in front of an array of ``rank`` axes."""
    return a.shape[:a.ndim - rank]


def _per_element(fn, arrays, ranks, lead):
    """fn on each mapped element of ``arrays`` (broadcast over ``lead``), results stacked
    into arrays of shape lead + result shape."""
    arrays = [np.broadcast_to(a, lead + a.shape[a.ndim - r:]) for a, r in zip(arrays, ranks)]
    out = None
    for i in np.ndindex(*lead):
        res = fn(*(a[i] for a in arrays))
        if out is None:
            out = [np.empty(lead + r.shape, r.dtype) for r in res]
        for o, r in zip(out, res):
            o[i] = r
    return out


def _folded(fn, arrays, lead):
    """fn on ``arrays`` with their mapped axes ``lead`` folded into N (axis 0 of each),
    the result unfolded."""
    n = arrays[0].shape[len(lead)]
    out = fn(*(a.reshape((-1,) + a.shape[len(lead) + 1:]) for a in arrays))
    return out.reshape(lead + (n,) + out.shape[1:])


def _forward_host(geo: Geometry, x, w):
    x, w = np.asarray(x), np.asarray(w)
    lead = _lead(x, 4)
    conv = functools.partial(fastconv.conv2d, **geo.options())
    if not lead:
        return conv(x, w)
    if all(n == 1 for n in _lead(w, 4)):
        return _folded(lambda xf: conv(xf, w.reshape(w.shape[-4:])), (x,), lead)
    lead = np.broadcast_shapes(lead, _lead(w, 4))
    return _per_element(lambda xi, wi: (conv(xi, wi),), (x, w), (4, 4), lead)[0]


def _backward_host(geo: Geometry, gy, x, w):
    gy, x, w = np.asarray(gy), np.asarray(x), np.asarray(w)
    opts = geo.options()

    def grads(gy, x, w, wrt=("x", "w")):
        g = fastconv.conv2d_backward(gy, x, w, wrt=wrt, **opts)
        return tuple(getattr(g, n) for n in wrt)

    lead = np.broadcast_shapes(_lead(gy, 4), _lead(x, 4), _lead(w, 4))
    if not lead:
        return grads(gy, x, w)
    if all(n == 1 for n in _lead(w, 4)):
        w4 = w.reshape(w.shape[-4:])
        x_full = np.broadcast_to(x, lead + x.shape[-4:])
        gy_full = np.broadcast_to(gy, lead + gy.shape[-4:])
        # x's gradient folds into N; w's is one per mapped element
        gx = _folded(lambda g_, x_: grads(g_, x_, w4, ("x",))[0], (gy_full, x_full), lead)
        (gw,) = _per_element(lambda g_, x_: grads(g_, x_, w4, ("w",)), (gy_full, x_full),
                             (4, 4), lead)
        return gx, gw
    return tuple(_per_element(grads, (gy, x, w), (4, 4, 4), lead))


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def conv(geo: Geometry, x, w):
    """conv2d(x, w) with geometry ``geo``: a host call through pure_callback."""
    shape = fastconv.output_shape(x.shape, w.shape, geo.stride, geo.pad,
                                  dilation=geo.dilation, groups=geo.groups,
                                  layout=geo.layout)
    return jax.pure_callback(functools.partial(_forward_host, geo),
                             jax.ShapeDtypeStruct(shape, x.dtype), x, w,
                             vmap_method="expand_dims")


def _conv_fwd(geo, x, w):
    return conv(geo, x, w), (x, w)


def _conv_bwd(geo, residuals, gy):
    x, w = residuals
    out = (jax.ShapeDtypeStruct(x.shape, x.dtype), jax.ShapeDtypeStruct(w.shape, w.dtype))
    return tuple(jax.pure_callback(functools.partial(_backward_host, geo), out, gy, x, w,
                                   vmap_method="expand_dims"))


conv.defvjp(_conv_fwd, _conv_bwd)
