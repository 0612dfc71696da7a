"""``fastconv.tune``: time both engines on the caller's shapes and remember the winners.

Winners live in a JSON file under the user's cache directory
(``$XDG_CACHE_HOME/fastconv`` or ``~/.cache/fastconv`` on Linux,
``~/Library/Caches/fastconv`` on macOS, ``%LOCALAPPDATA%\\fastconv`` on Windows;
``FASTCONV_CACHE_DIR`` overrides). The file records the fastconv version and the
direct engine's SIMD variant: a file written by another version or for another CPU is
stale and ignored with a warning, as is a corrupt one. Entries are keyed by the thread
count, dtype, geometry and pass. ``backend="auto"`` consults them before the cost model
in :mod:`fastconv._dispatch`.
"""
from __future__ import annotations

import json
import os
import statistics
import sys
import tempfile
import threading
import time
import warnings
from dataclasses import astuple
from pathlib import Path

import numpy as np

from ._dispatch import PASSES, simd_variant
from ._geometry import ConvGeometry

FILE_NAME = "tuned.json"
FORMAT = 1


def cache_dir() -> Path:
    env = os.environ.get("FASTCONV_CACHE_DIR")
    if env:
        return Path(env)
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Caches" / "fastconv"
    if sys.platform == "win32":
        return Path(os.environ.get("LOCALAPPDATA", Path.home())) / "fastconv"
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "fastconv"


def _header() -> dict:
    from ._version import __version__
    return {"format": FORMAT, "fastconv": __version__, "simd": simd_variant()}


def entry_key(g: ConvGeometry, dtype, threads: int, pass_name: str) -> str:
    return f"{threads}|{np.dtype(dtype).name}|{','.join(map(str, astuple(g)))}|{pass_name}"


_lock = threading.Lock()
_loaded: dict | None = None  # entries of the cache file, once read
_loaded_from: tuple | None = None


def _read() -> dict:
    """The cache's entries; {} when missing, and {} with a warning when corrupt or stale."""
    global _loaded, _loaded_from
    # Keyed by the variables that place the file: building the path costs ~20 us, too
    # much for every small convolution.
    where = (os.environ.get("FASTCONV_CACHE_DIR"), os.environ.get("XDG_CACHE_HOME"))
    if _loaded is not None and _loaded_from == where:
        return _loaded
    path = cache_dir() / FILE_NAME
    entries: dict = {}
    if path.exists():
        try:
            data = json.loads(path.read_text())
            if not isinstance(data, dict) or not isinstance(data.get("entries"), dict):
                raise ValueError("no 'entries' table")
            header = {k: data.get(k) for k in _header()}
            if header != _header():
                warnings.warn(f"fastconv: ignoring tuning cache {path}: written for {header}, "
                              f"this is {_header()}; run fastconv.tune() again", stacklevel=3)
            else:
                entries = {k: v for k, v in data["entries"].items()
                           if v in ("direct", "im2col")}
        except (OSError, ValueError) as e:
            warnings.warn(f"fastconv: ignoring corrupt tuning cache {path}: {e}", stacklevel=3)
    _loaded, _loaded_from = entries, where
    return entries


def lookup(g: ConvGeometry, dtype, threads: int, pass_name: str) -> str | None:
    """The tuned winner for this problem, or None when it was never tuned."""
    with _lock:
        entries = _read()
    # Most processes never tune: skip building the key (astuple costs ~10 us a call).
    return entries.get(entry_key(g, dtype, threads, pass_name)) if entries else None


def _write(new_entries: dict) -> Path:
    global _loaded
    path = cache_dir() / FILE_NAME
    with _lock:
        entries = dict(_read())
        entries.update(new_entries)
        path.parent.mkdir(parents=True, exist_ok=True)
        # Write to a temporary file and rename, so a crash never leaves half a file.
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tuned-", suffix=".json")
        with os.fdopen(fd, "w") as f:
            json.dump({**_header(), "entries": entries}, f, indent=0, sort_keys=True)
        os.replace(tmp, path)
        _loaded = entries
    return path


def clear_cache() -> None:
    """Forget every tuned winner (deletes the cache file)."""
    global _loaded
    with _lock:
        (cache_dir() / FILE_NAME).unlink(missing_ok=True)
        _loaded = None


def _median_time(fn, repeat: int) -> float:
    fn()  # warm-up: compilation and first touch stay out of the timing
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def tune(x, w, stride=1, pad=0, *, dilation=1, groups=1, layout="NCHW", dtype=None,
         passes=PASSES, repeat=3) -> dict[str, str]:
    """Time the direct and im2col engines on this problem and store the faster per pass.

    ``x`` and ``w`` may be arrays or shapes (random data of ``dtype``, default float32,
    is made for shapes). Returns ``{pass: engine}`` for the passes timed; from then on
    ``backend="auto"`` uses these winners for this shape, dtype and thread count.
    """
    from . import conv2d, conv2d_backward
    from ._threads import get_num_threads
    from ._validate import batched, geometry, layout_code

    code = layout_code(layout)
    rng = np.random.default_rng(0)
    dt = np.dtype(dtype or getattr(x, "dtype", np.float32))
    xa = x if isinstance(x, np.ndarray) else rng.standard_normal(tuple(x)).astype(dt)
    wa = w if isinstance(w, np.ndarray) else rng.standard_normal(tuple(w)).astype(dt)
    x4, _ = batched(xa, "x", code)
    g = geometry(x4.shape, wa.shape, stride, pad, dilation, groups, code)
    gy = rng.standard_normal(g.y_shape).astype(np.result_type(xa, wa))
    kw = dict(stride=stride, pad=pad, dilation=dilation, groups=groups, layout=layout)
    calls = {
        "forward": lambda e: lambda: conv2d(x4, wa, backend=e, **kw),
        "grad_input": lambda e: lambda: conv2d_backward(gy, x4, wa, backend=e, wrt="x", **kw),
        "grad_weight": lambda e: lambda: conv2d_backward(gy, x4, wa, backend=e, wrt="w", **kw),
    }
    threads = get_num_threads()
    winners, entries = {}, {}
    for p in passes:
        if p not in calls:
            raise ValueError(f"passes must be drawn from {PASSES}, got {p!r}")
        times = {e: _median_time(calls[p](e), repeat) for e in ("direct", "im2col")}
        winners[p] = min(times, key=times.get)
        entries[entry_key(g, gy.dtype, threads, p)] = winners[p]
    _write(entries)
    return winners
