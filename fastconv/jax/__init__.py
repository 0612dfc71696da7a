"""fastconv for JAX: ``conv2d`` (fastconv's arguments) and ``conv_general_dilated``
(``jax.lax``'s) on fastconv's CPU engines, each a ``jax.custom_vjp`` calling fastconv
through ``jax.pure_callback``: usable under ``jax.jit``, ``jax.grad`` (first order)
and ``jax.vmap`` (mapped axes fold into N).

Imported only when used (``import fastconv.jax``); ``import fastconv`` never imports
JAX. The custom_vjp and the host calls: ``_ops.py``; the argument handling: ``_api.py``.
"""
from __future__ import annotations

from ._api import conv2d, conv_general_dilated

__all__ = ["conv2d", "conv_general_dilated"]
