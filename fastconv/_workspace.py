"""The im2col engine's workspace cap: the most memory its column buffer may take.

Above the cap the engine splits the work over images and output rows; the split
results are identical to unsplit ones. The default, 64 MiB, keeps the columns of a
chunk in the last-level cache on typical servers while leaving each BLAS call large
enough to run near peak. ``FASTCONV_WORKSPACE_LIMIT`` (bytes) overrides the default.
"""
from __future__ import annotations

import contextlib
import operator
import os

DEFAULT_LIMIT = 64 * 2**20


def _check(n, name="limit") -> int:
    if isinstance(n, bool):
        raise TypeError(f"{name} must be a number of bytes (int), got bool {n!r}")
    try:
        n = operator.index(n)
    except TypeError:
        raise TypeError(f"{name} must be a number of bytes (int), "
                        f"got {type(n).__name__} {n!r}") from None
    if n < 1:
        raise ValueError(f"{name} must be a positive number of bytes, got {n}")
    return n


def _initial() -> int:
    env = os.environ.get("FASTCONV_WORKSPACE_LIMIT")
    if not env:
        return DEFAULT_LIMIT
    try:
        return _check(int(env), "FASTCONV_WORKSPACE_LIMIT")
    except ValueError:
        raise ValueError(f"FASTCONV_WORKSPACE_LIMIT must be a positive number of bytes, "
                         f"got {env!r}") from None


_limit = _initial()


def set_workspace_limit(nbytes: int) -> None:
    """Cap the im2col engine's column buffer at ``nbytes`` bytes (default 64 MiB)."""
    global _limit
    _limit = _check(nbytes)


def get_workspace_limit() -> int:
    """The im2col engine's column-buffer cap, in bytes."""
    return _limit


@contextlib.contextmanager
def workspace_limit(nbytes: int):
    """Context manager: ``with fastconv.workspace_limit(2**20): ...``."""
    old = get_workspace_limit()
    set_workspace_limit(nbytes)
    try:
        yield
    finally:
        set_workspace_limit(old)
