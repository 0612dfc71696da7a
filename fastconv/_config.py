"""``show_config()``: what this build of fastconv is made of and how it will run."""
from __future__ import annotations

import platform
import sys

from ._autotune import get_autotune
from ._blas import describe_blas
from ._precision import get_float32_precision
from ._threads import available_cores, get_num_threads


def _direct_info() -> dict:
    try:
        from . import _direct
    except ImportError as e:  # pragma: no cover - a broken install
        return {"available": False, "error": str(e)}
    from ._openmp import spin_setting
    return {"available": True, **_direct.openmp_info(), **_direct.simd_info(),
            "spin": spin_setting()}


def _numba_info() -> dict:
    import numba

    from .engines.im2col import kernel_mode

    return {"version": numba.__version__, "kernels": kernel_mode()}


def config_info() -> dict:
    from . import __version__, backends

    return {
        "fastconv": __version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "backends": backends(),
        "direct": _direct_info(),
        "numba": _numba_info(),
        "blas": describe_blas(),
        "threads": get_num_threads(),
        "cores": available_cores(),
        "float32_precision": get_float32_precision(),
        "autotune": get_autotune(),
    }


def show_config(file=None) -> None:
    """Print the version, engines, OpenMP, BLAS, Numba threading and thread count."""
    import numpy

    info = config_info()
    d, nb = info["direct"], info["numba"]
    if d["available"]:
        omp = (f"OpenMP {d['openmp_version']} (max {d['max_threads']} threads, "
               f"{d['spin']})"
               if d["openmp"] else "no OpenMP (serial)")
        direct = (f"compiled, {omp}, SIMD {d['simd']} ({d['vector_bits']}-bit; this CPU: "
                  f"{', '.join(d['supported'])}; override with FASTCONV_SIMD)"
                  + (", debug bounds checks ON" if d["debug_checks"] else ""))
    else:
        direct = f"NOT available: {d['error']}"
    lines = [
        f"fastconv {info['fastconv']}  (Python {info['python']}, NumPy {numpy.__version__}, "
        f"{info['platform']})",
        f"backends:        {', '.join(info['backends'])}  (auto picks per pass)",
        f"direct engine:   {direct}",
        f"im2col engine:   Numba {nb['version']}; kernels {nb['kernels']}",
        "BLAS:            " + ("; ".join(info["blas"]) or "none found"),
        f"threads:         {info['threads']} (of {info['cores']} available cores)",
        f"float32:         precision {info['float32_precision']!r} ("
        + ("auto may run 3x3 stride-1 layers and 4x4 stride-2 ones through Winograd"
           if info["float32_precision"] == "high" else "auto uses the exact engines only")
        + "; set_float32_precision or FASTCONV_FLOAT32_PRECISION)",
        "autotune:        " + ("on: auto times the engines on each new problem's first call"
                               if info["autotune"] else "off: auto follows the cost model")
        + " (set_autotune or FASTCONV_AUTOTUNE)",
    ]
    print("\n".join(lines), file=file or sys.stdout)
