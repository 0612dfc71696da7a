"""Load the direct engine's compiled module with OpenMP threads that stop spinning soon.

GNU OpenMP's threads spin after a parallel region before they sleep, 300,000 rounds
of a pause loop when neither ``OMP_WAIT_POLICY`` nor ``GOMP_SPINCOUNT`` is set: about
6 ms on a Zen 3 core. A call that follows on the im2col engine's threads (or the
caller's NumPy) shares each core with a spinning thread for that long. Measured on a
2-core AMD EPYC (Zen 3, 2026-12-03, float32, medians of 9-15 interleaved rounds):
cs231n grad_input on im2col right after a direct call 4.32 ms, 1.99 ms with a spin of
10,000; three small layers alternating direct forward and im2col grad_weight 21.5 ms,
15.2 ms with 10,000 (1,000: 16.3; 30,000: 17.1; PASSIVE, no spin: 16.3), while the
same layers all on the direct engine ran 14.1-15.8 ms by default and 15.0 with 10,000
(PASSIVE 16.8, 1,000 16.7: a sleeping thread is woken once per region).

libgomp reads the variables once, when it is loaded, so this module sets
``GOMP_SPINCOUNT`` (only if the user set neither variable), imports ``_direct`` (whose
loading loads libgomp: the wheel's own copy, which nothing else shares), and restores
the environment, so that child processes see the user's. A libgomp that another
module loaded earlier keeps its own setting. LLVM's libomp (macOS) is not affected.
"""
from __future__ import annotations

import os

SPIN_COUNT = "10000"
_VARIABLES = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")


_setting = None  # what the OpenMP threads were told, recorded as _direct was loaded


def load_direct():
    """Import ``fastconv._direct`` with the spin count above; None if it is not built."""
    global _setting
    set_here = not any(v in os.environ for v in _VARIABLES)
    if _setting is None:
        given = [f"{v}={os.environ[v]}" for v in _VARIABLES if v in os.environ]
        _setting = (", ".join(given) + " (yours)" if given
                    else f"GOMP_SPINCOUNT={SPIN_COUNT} (fastconv's)")
    if set_here:
        os.environ["GOMP_SPINCOUNT"] = SPIN_COUNT
    try:
        from . import _direct
    except ImportError:
        return None
    finally:
        if set_here:
            os.environ.pop("GOMP_SPINCOUNT", None)
    return _direct


def spin_setting() -> str:
    """What this process's OpenMP threads were told when they were loaded (show_config)."""
    return _setting or "not loaded"
