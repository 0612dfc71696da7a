"""The autotune switch, in the manner of ``torch.backends.cudnn.benchmark``.

Off (the default), ``backend="auto"`` runs what :func:`fastconv.choose_backend`'s cost
model (or a winner stored by :func:`fastconv.tune`) names: a pure function of the
problem, so two runs of a program run the same engines. On, the first call of each new
problem (geometry and layout, dtype, thread count, float32 precision setting) with no
stored winner times the candidate engines on the caller's own arrays, at least
``ROUNDS`` calls each (more for short calls, up to about 30 ms of timed calls per
engine) after a warm-up call each (Numba's first compile and the first touch of the
memory stay out of the timing), in two blocks of consecutive calls per engine
(``_tune.time_engines``), and keeps the engine with the lowest median (the cost
model's engine where it is within 5% of that) for the rest of the process and in the tuning cache on disk
(``fastconv/_tune.py``), where later processes find it. The call returns the winner's
own result; every later call of that problem runs the winner, so results are bitwise
stable for as long as the cache holds the entry.

What the first call costs: ``ROUNDS + 1`` calls of each candidate (up to 49 of a call
under 5 ms: about 0.03 s), two (direct,
im2col) or three (Winograd, for float32 3x3 stride-1 forward and grad_input under
precision "high"), plus Numba's compile of the im2col kernels if no earlier process
cached them (``fastconv.compile()``). ``FASTCONV_AUTOTUNE=1`` in the environment turns it
on at import.
"""
from __future__ import annotations

import contextlib
import os

from ._validate import flag

# Timed calls per candidate on a problem's first call, after a warm-up call each, in
# two blocks (``_tune.time_engines``), so that a transient slows all of them alike.
ROUNDS = 6

_TRUE = ("1", "true", "yes", "on")
_FALSE = ("", "0", "false", "no", "off")


def _initial() -> bool:
    env = os.environ.get("FASTCONV_AUTOTUNE", "").strip().lower()
    if env in _TRUE:
        return True
    if env in _FALSE:
        return False
    raise ValueError(f"FASTCONV_AUTOTUNE must be one of {_TRUE + _FALSE[1:]}, "
                     f"got {os.environ['FASTCONV_AUTOTUNE']!r}")


_enabled = _initial()


def set_autotune(enabled: bool) -> None:
    """True: ``auto`` times the engines on each new problem's first call and keeps the
    winner (process and disk); False (default): it follows the cost model."""
    global _enabled
    _enabled = flag(enabled, "enabled")


def get_autotune() -> bool:
    """Whether ``auto`` times the engines on each new problem's first call."""
    return _enabled


@contextlib.contextmanager
def autotune(enabled: bool = True):
    """Context manager: ``with fastconv.autotune(): ...`` tunes the calls inside."""
    new = flag(enabled, "enabled")
    old = get_autotune()
    set_autotune(new)
    try:
        yield
    finally:
        set_autotune(old)
