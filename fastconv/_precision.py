"""The float32 precision setting, in the manner of ``torch.set_float32_matmul_precision``.

"high" (the default) lets ``backend="auto"`` run float32 3x3 stride-1 layers (and
strided ones whose stride phases are 3x3 windows, fastconv/_phases.py) through
Winograd's minimal-filtering algorithm, which does fewer multiplications but rounds
differently from direct convolution (its error bounds: the README). "highest" forbids
it: ``auto`` then gives exactly what the exact engines (direct, im2col) give. float64
is never affected, and ``backend="winograd"`` asked for by name always runs it.
``FASTCONV_FLOAT32_PRECISION`` in the environment sets the value at import.
"""
from __future__ import annotations

import contextlib
import os

PRECISIONS = ("highest", "high")
DEFAULT = "high"


def _check(value, name="precision") -> str:
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a str, one of {PRECISIONS}, "
                        f"got {type(value).__name__} {value!r}")
    if value not in PRECISIONS:
        raise ValueError(f"{name} must be one of {PRECISIONS}, got {value!r}")
    return value


def _initial() -> str:
    env = os.environ.get("FASTCONV_FLOAT32_PRECISION")
    return _check(env, "FASTCONV_FLOAT32_PRECISION") if env else DEFAULT


_precision = _initial()


def set_float32_precision(precision: str) -> None:
    """"high" (default): ``auto`` may use Winograd for float32; "highest": it may not."""
    global _precision
    _precision = _check(precision)


def get_float32_precision() -> str:
    """The float32 precision setting, "highest" or "high"."""
    return _precision


@contextlib.contextmanager
def float32_precision(precision: str):
    """Context manager: ``with fastconv.float32_precision("highest"): ...``."""
    new = _check(precision)
    old = get_float32_precision()
    set_float32_precision(new)
    try:
        yield
    finally:
        set_float32_precision(old)
