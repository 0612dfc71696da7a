"""``fastconv.tune`` and autotune: time the engines on the caller's shapes and remember
the winners.

Winners live in a JSON file under the user's cache directory, as platformdirs places
it (``user_cache_dir("fastconv")``: ``$XDG_CACHE_HOME/fastconv`` or
``~/.cache/fastconv`` on Linux, ``~/Library/Caches/fastconv`` on macOS,
``%LOCALAPPDATA%\\fastconv\\Cache`` on Windows; ``FASTCONV_CACHE_DIR`` overrides). The
file records the fastconv version and the direct engine's SIMD variant: a file written
by another version or for another CPU is stale and ignored with a warning, as is a
corrupt or unreadable one. Entries are keyed by the thread count, dtype, geometry
(layout included), pass and float32 precision setting. ``backend="auto"`` consults
them, and the winners autotune found in this process (kept even where the file cannot
be written), before the cost model in :mod:`fastconv._dispatch`.
"""
from __future__ import annotations

import functools
import json
import os
import statistics
import tempfile
import threading
import time
import warnings
from dataclasses import astuple
from pathlib import Path

import numpy as np
import platformdirs

from ._dispatch import PASSES, choose_backend, simd_variant
from ._geometry import ConvGeometry

FILE_NAME = "tuned.json"
# 2: entries keyed by the precision setting too, and Winograd among the winners.
FORMAT = 2
ENGINES = ("direct", "im2col", "winograd")


def cache_dir() -> Path:
    env = os.environ.get("FASTCONV_CACHE_DIR")
    if env:
        return Path(env)
    return Path(platformdirs.user_cache_dir("fastconv", appauthor=False))


def _header() -> dict:
    from ._version import __version__
    return {"format": FORMAT, "fastconv": __version__, "simd": simd_variant()}


def precision_key(dtype) -> str:
    """The precision setting a choice depends on: float32's, "highest" for the others
    (no setting changes what auto may run for them)."""
    from ._precision import get_float32_precision
    return get_float32_precision() if np.dtype(dtype) == np.float32 else "highest"


def entry_key(g: ConvGeometry, dtype, threads: int, pass_name: str,
              precision: str | None = None) -> str:
    return _key(g, np.dtype(dtype).name, threads, pass_name,
                precision or precision_key(dtype))


# Every auto call with a tuned winner around builds the key: astuple took ~100 us of a
# 0.3 ms lenet_c5 forward (Zen 3), so keys are made once per problem.
@functools.lru_cache(maxsize=4096)
def _key(g: ConvGeometry, dtype: str, threads: int, pass_name: str, precision: str) -> str:
    return f"{threads}|{dtype}|{','.join(map(str, astuple(g)))}|{pass_name}|{precision}"


_lock = threading.Lock()
_loaded: dict | None = None  # entries of the cache file, once read
_loaded_from: tuple | None = None
_session: dict = {}  # winners that could not be written to the file, for this process


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
                entries = {k: v for k, v in data["entries"].items() if v in ENGINES}
        except (OSError, ValueError, UnicodeDecodeError) as e:
            warnings.warn(f"fastconv: ignoring corrupt or unreadable tuning cache {path}: "
                          f"{e}", stacklevel=3)
    _loaded, _loaded_from = entries, where
    return entries


def lookup(g: ConvGeometry, dtype, threads: int, pass_name: str) -> str | None:
    """The tuned winner for this problem, or None when it was never tuned."""
    with _lock:
        entries = _read()
    # Most processes never tune: skip building the key (astuple costs ~10 us a call).
    if not (entries or _session):
        return None
    key = entry_key(g, dtype, threads, pass_name)
    return entries.get(key) or _session.get(key)


def remember(new_entries: dict) -> Path | None:
    """Write winners to the cache file (which also keeps them for this process); a file
    that cannot be written costs a warning, not the winners: they are then kept for
    this process only, and None is returned."""
    try:
        return _write(new_entries)
    except OSError as e:
        with _lock:
            _session.update(new_entries)
        warnings.warn(f"fastconv: could not write the tuning cache in {cache_dir()} ({e}); "
                      "the winners are kept for this process only", stacklevel=3)
        return None


def _write(new_entries: dict) -> Path:
    global _loaded
    path = cache_dir() / FILE_NAME
    with _lock:
        entries = dict(_read())
        entries.update(new_entries)
        path.parent.mkdir(parents=True, exist_ok=True)
        # Write to a temporary file and rename, so a crash never leaves half a file.
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tuned-", suffix=".json")
        try:
            with os.fdopen(fd, "w") as f:
                json.dump({**_header(), "entries": entries}, f, indent=0, sort_keys=True)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        _loaded = entries
    return path


def clear_cache() -> None:
    """Forget every tuned winner (this process's, and the cache file)."""
    global _loaded
    with _lock:
        _session.clear()
        (cache_dir() / FILE_NAME).unlink(missing_ok=True)
        _loaded = None


def candidates(g: ConvGeometry, dtype, pass_name: str) -> tuple[str, ...]:
    """The engines ``auto`` may run for this pass: direct and im2col, and Winograd for
    the float32 forward and grad_input of the shapes where it saves multiplies
    (``_dispatch.winograd_candidate``) under precision "high"."""
    from ._dispatch import winograd_candidate
    if (pass_name in ("forward", "grad_input") and np.dtype(dtype) == np.float32
            and precision_key(dtype) == "high" and winograd_candidate(g)):
        return ENGINES
    return ENGINES[:2]


# Timed calls of one engine in a row: a block, as ``fastconv bench`` times them. Calls
# alternating between engines measured the switch, not the engines: after an im2col
# call the direct engine's OpenMP threads have gone to sleep and each direct call paid
# for waking them, and autotune chose im2col for cs231n grad_input in three runs of
# three where the bench's blocks had direct 1.26x faster (Zen 3, 2026-12-03).
BLOCKS = 2


# The cost model's engine keeps a problem unless another was faster by more than this:
# on a noisy machine a first call's few timings flip between engines that tie, and
# three runs of `fastconv bench --autotune` each sent some small rows to an engine
# 1.1-1.6x slower by the bench's own medians (Zen 3, 2026-12-03).
MARGIN = 0.05

# Short calls get more timed calls, up to about this many seconds per engine (judged by
# the warm-up call), and at most MAX_ROUNDS: six calls of a 1-3 ms pass left autotune's
# choice for cs231n to the noise (two rows 1.17-1.21x slower than the bench's fastest,
# Zen 3, 2026-12-03).
TIMED_SECONDS = 0.03
MAX_ROUNDS = 48


def time_engines(calls: dict, rounds: int, prefer: str | None = None):
    """Time ``calls`` (engine -> function of no arguments returning the pass's result),
    at least ``rounds`` calls each after a warm-up call (more for short calls: see
    ``TIMED_SECONDS``), in ``BLOCKS`` blocks of consecutive calls per engine, the
    engines' blocks taking turns; return the engine of the lowest median (``prefer``,
    the cost model's, when within ``MARGIN`` of it) and its warm-up result, or None when
    a call returned None (Winograd, asked for finite inputs only, met a NaN or Inf: no
    fair timing of it was had)."""
    results, counts = {}, {}
    for name, fn in calls.items():
        t0 = time.perf_counter()
        results[name] = fn()  # warm-up: compilation and first touch stay out of the timing
        if results[name] is None:
            return None
        warm = time.perf_counter() - t0
        counts[name] = max(rounds, min(MAX_ROUNDS, int(TIMED_SECONDS / max(warm, 1e-9))))
    times: dict = {name: [] for name in calls}
    for block in range(BLOCKS):
        for name, fn in calls.items():
            per_block = -(-counts[name] // BLOCKS)
            for _ in range(min(per_block, counts[name] - block * per_block)):
                t0 = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - t0)
    medians = {name: statistics.median(t) for name, t in times.items() if t}
    winner = min(medians, key=medians.get)
    if prefer in medians and medians[prefer] <= (1 + MARGIN) * medians[winner]:
        winner = prefer
    return winner, results[winner]


def time_candidates(g: ConvGeometry, dtype, threads: int, pass_name: str, call_for,
                    rounds: int):
    """:func:`time_engines` over the :func:`candidates` for this pass, the cost model's
    engine preferred; ``call_for(engine)`` gives the function of no arguments to time.
    What autotune and :func:`tune` both run."""
    calls = {e: call_for(e) for e in candidates(g, dtype, pass_name)}
    return time_engines(calls, rounds, prefer=choose_backend(g, dtype, threads)[pass_name])


def tune(x, w, stride=1, pad=0, *, dilation=1, groups=1, layout="NCHW", dtype=None,
         passes=PASSES, repeat=3, transposed=False, output_padding=None) -> dict[str, str]:
    """Time the engines ``auto`` may run on this problem and store the fastest per pass.

    The candidates are those of autotune (:func:`candidates`: Winograd too for float32
    forward and grad_input where it saves multiplies, under precision "high"), timed
    the same way. ``x`` and ``w`` may be arrays or shapes (random data of ``dtype``,
    default float32, is made for shapes). With ``transposed=True`` the problem is
    :func:`fastconv.conv_transpose2d`'s (``w`` in its layout, ``output_padding`` its
    option): each of its passes is timed and stored as the convolution pass that
    computes it (fastconv/_transpose.py), which is what ``auto`` looks up. Returns
    ``{pass: engine}`` for the passes timed; from then on ``backend="auto"`` uses these
    winners for this shape, dtype and thread count.
    """
    from . import conv2d, conv2d_backward, conv_transpose2d, conv_transpose2d_backward
    from ._threads import get_num_threads
    from ._transpose import CONV_PASS
    from ._validate import batched, flag, geometry, layout_code, transposed_geometry

    code = layout_code(layout)
    transposed = flag(transposed, "transposed")
    if output_padding is not None and not transposed:
        raise ValueError(f"output_padding is an option of transposed convolutions: pass "
                         f"transposed=True with it, got output_padding={output_padding!r}")
    rng = np.random.default_rng(0)
    dt = np.dtype(dtype or getattr(x, "dtype", np.float32))
    xa = x if isinstance(x, np.ndarray) else rng.standard_normal(tuple(x)).astype(dt)
    wa = w if isinstance(w, np.ndarray) else rng.standard_normal(tuple(w)).astype(dt)
    x4, _ = batched(xa, "x", code)
    kw = dict(stride=stride, pad=pad, dilation=dilation, groups=groups, layout=layout)
    if transposed:
        op = 0 if output_padding is None else output_padding
        g = transposed_geometry(x4.shape, wa.shape, stride, pad, op, dilation, groups, code)
        y_shape, conv_pass = g.x_shape, CONV_PASS  # its output is the convolution's input
        forward, backward = conv_transpose2d, conv_transpose2d_backward
        kw["output_padding"] = op
    else:
        g = geometry(x4.shape, wa.shape, stride, pad, dilation, groups, code)
        y_shape, conv_pass = g.y_shape, {p: p for p in PASSES}
        forward, backward = conv2d, conv2d_backward
    gy = rng.standard_normal(y_shape).astype(np.result_type(xa, wa))
    calls = {
        "forward": lambda e: lambda: forward(x4, wa, backend=e, **kw),
        "grad_input": lambda e: lambda: backward(gy, x4, wa, backend=e, wrt="x", **kw),
        "grad_weight": lambda e: lambda: backward(gy, x4, wa, backend=e, wrt="w", **kw),
    }
    threads = get_num_threads()
    winners, entries = {}, {}
    for p in passes:
        if p not in calls:
            raise ValueError(f"passes must be drawn from {PASSES}, got {p!r}")
        # Every call returns an array or ConvGrads (no finite-only call): never None.
        winners[p] = time_candidates(g, gy.dtype, threads, conv_pass[p], calls[p], repeat)[0]
        entries[entry_key(g, gy.dtype, threads, conv_pass[p])] = winners[p]
    remember(entries)
    return winners
