"""Tensors in and out of fastconv: the checks the public functions make, and the NumPy
views the operators hand to fastconv (no copy either way).

A contiguous (N, C, H, W) tensor is fastconv's NCHW as it lies in memory; a
``channels_last`` one is NHWC in memory, so its ``permute(0, 2, 3, 1)`` is a C-contiguous
(N, H, W, C) view that fastconv reads in place, and the (N, P, Q, K) array fastconv
returns is, permuted back, a channels_last (N, K, P, Q) tensor. Filters are small:
for NHWC fastconv takes HWIO, ``w.permute(2, 3, 1, 0)``, which it copies unless the
tensor already lies that way.
"""
from __future__ import annotations

import torch

SUPPORTED = (torch.float32, torch.float64)
_NAMES = "float32 or float64"


def check(t, name: str, ranks: tuple[int, ...], dtype=None) -> None:
    """``t`` is a CPU tensor of a supported dtype (``dtype``, the input's, if given)
    and of one of ``ranks``; else TypeError or ValueError saying what was given."""
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if not t.is_cpu:
        raise TypeError(f"{name} must be a CPU tensor (fastconv runs on the CPU), got a "
                        f"tensor on device {t.device}")
    if t.dtype not in SUPPORTED:
        raise TypeError(f"{name} must be a {_NAMES} tensor, got dtype {t.dtype}")
    if dtype is not None and t.dtype != dtype:
        raise TypeError(f"{name} must have the input's dtype {dtype}, got dtype {t.dtype}")
    if t.dim() not in ranks:
        want = " or ".join(f"{r}-D" for r in ranks)
        raise ValueError(f"{name} must be a {want} tensor, got a {t.dim()}-D tensor of "
                         f"shape {tuple(t.shape)}")


def is_nhwc(t: torch.Tensor) -> bool:
    """Whether ``t`` (4-D) lies as channels_last and not also as contiguous: the layout
    fastconv runs an operator in. Strides only, so fake tensors answer as real ones do."""
    return not t.is_contiguous() and t.is_contiguous(memory_format=torch.channels_last)


def act(t: torch.Tensor, nhwc: bool):
    """An activation (N, C, H, W) as fastconv's NCHW or NHWC array: a view."""
    return (t.permute(0, 2, 3, 1) if nhwc else t).numpy(force=True)


def filt(w: torch.Tensor, nhwc: bool):
    """Filters (K, C/groups, R, S) as OIHW or HWIO: a view (HWIO usually strided)."""
    return (w.permute(2, 3, 1, 0) if nhwc else w).numpy(force=True)


def act_out(a, nhwc: bool) -> torch.Tensor:
    """fastconv's (N, K, P, Q) or (N, P, Q, K) array as an (N, K, P, Q) tensor, shared."""
    t = torch.from_numpy(a)
    return t.permute(0, 3, 1, 2) if nhwc else t


def filt_out(a, nhwc: bool) -> torch.Tensor:
    """fastconv's OIHW or HWIO filter array as a (K, C/groups, R, S) tensor, shared."""
    t = torch.from_numpy(a)
    return t.permute(3, 2, 0, 1) if nhwc else t


def empty_act(like: torch.Tensor, shape, nhwc: bool) -> torch.Tensor:
    """What act_out returns, for the fake implementations: same shape and strides."""
    fmt = torch.channels_last if nhwc else torch.contiguous_format
    return torch.empty(shape, dtype=like.dtype, device=like.device, memory_format=fmt)


def empty_filt(like: torch.Tensor, shape, nhwc: bool) -> torch.Tensor:
    """What filt_out returns, for the fake implementations."""
    if not nhwc:
        return like.new_empty(shape)
    K, Cg, R, S = shape
    return like.new_empty((R, S, Cg, K)).permute(3, 2, 0, 1)
