"""Load the direct engine's compiled module with OpenMP threads that stop spinning soon.

GNU OpenMP's threads spin after a parallel region before they sleep, 300,000 rounds
of a pause loop when neither ``OMP_WAIT_POLICY`` nor ``GOMP_SPINCOUNT`` is set, several
milliseconds; a call that follows on the im2col engine's threads (or the caller's
NumPy) shares each core with a spinning thread for that long. Measured on a 2-core AMD
EPYC (Zen 3, KVM, 2026-12-03, float32, medians of interleaved rounds): cs231n
grad_input on im2col right after a direct call took 7.9 ms by default, 4.2 ms with a
spin of 10,000, 6.2 ms with 100,000. But a short spin costs the direct engine more on
this VM: a thread that slept is woken through the hypervisor, and under ``fastconv
bench`` (blocks of back-to-back calls) a spin of 10,000 made small direct calls 2-3x
slower (cs231n forward 1.1 -> 3.2-3.5 ms, batch1_c4 forward 2.4-3.4 -> 6.2-7.1,
lenet_c1 forward 0.5 -> 1.6-1.7), 30,000 once 8x on lenet_c1, while 100,000 matched
the default within the noise (cs231n 1.2-1.6, batch1_c4 2.6-2.7, lenet_c1 0.5-0.6 ms).
So 100,000: a third of the default's spin after each call, none of its cost.

libgomp reads the variables once, when it is loaded, so this module sets
``GOMP_SPINCOUNT`` (only if the user set neither variable), imports ``_direct`` (whose
loading loads libgomp: the wheel's own copy, which nothing else shares), and restores
the environment, so that child processes see the user's. A libgomp that another
module loaded earlier keeps its own setting. LLVM's libomp (macOS) is not affected.
"""
from __future__ import annotations

import os

SPIN_COUNT = "100000"
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
