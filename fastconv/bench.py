"""``fastconv bench``: the engines, ``auto``, PyTorch and ONNX Runtime side by side.

The SGEMM ceiling (a large ``a @ b`` on the same cores) is measured first and last, so
every figure can be read as a share of what this machine's BLAS reaches. Each pass of each
layer is then run by every engine on the same arrays; the results are checked against
each other, so a fast wrong engine fails the run. Times are medians over about
``--repeat`` calls, made in blocks of back-to-back calls that the engines take in turns;
each block starts after a pause and 20 ms of warm-up calls (which keeps Numba's compilation,
first-touch page faults and sleeping thread pools out of the figures). PyTorch runs in
a peer process of its own (``_torch_peer``), case by case, between our engines' cases,
and so does ONNX Runtime (``_ort_peer``, forward only). Beside the geometric means of
the speed against each peer, the time-weighted means (the peer's summed time over the
engine's) say how the engines fare where the time is spent.

The Winograd engine has a column of its own on the rows it computes (3x3 filters,
stride 1, dilation 1; forward and grad_input: its grad_weight is the direct engine's),
a dash elsewhere. Each row names its fastest engine, and a row where the engine ``auto``
chose took more than 10% longer than that one is marked MISS; after the table, the
misses are counted and, per pass, the fastest engines' summed time is put over the
chosen engines' (the time-weighted ``auto`` against always picking the fastest, whose
target is 0.97).

``fastconv bench --suite decoder`` runs the decoder suite (``suite.DECODER``: a DCGAN
generator, a U-Net up-convolution, an FCN 16x upsampling) the same way, each row a pass
of the transposed convolution: forward, grad_input and grad_weight of
``conv_transpose2d``, each computed by a convolution pass (``_transpose.CONV_PASS``),
whose engine ``auto`` chooses and whose Winograd column it gets. PyTorch times
``conv_transpose2d`` and its autograd, ONNX Runtime its ``ConvTranspose`` (forward).

``fastconv bench --network NAME`` runs every convolution of a network
(``fastconv.networks``) as a training step runs them: every forward in network order,
then, from the last layer back, each layer's grad_input and grad_weight. The first
layer's grad_input is left out: nothing upstream of the image needs it. After one
untimed sequence, ``--repeat`` sequences run back to back with every call timed; each
call's figure is its median over the sequences, and a pass's total is the sum of those.
Every call is also timed alone, by the layer suite's procedure, and the network's total
is reported against the sum of those: a ratio above 1 is time lost between the calls
(caches, thread pools) that a layer-by-layer benchmark does not see. PyTorch runs the
same sequence in its peer process, ONNX Runtime the forward part in its own.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import platform
import statistics
import sys
import time

import numpy as np

from . import (__version__, conv2d, conv2d_backward, conv_transpose2d,
               conv_transpose2d_backward, get_num_threads, num_threads, output_shape)
from ._api import auto_engine
from ._dispatch import simd_variant, winograd_candidate
from ._precision import get_float32_precision
from ._transpose import CONV_PASS
from ._validate import geometry, transposed_geometry
from .networks import NETWORKS
from .suite import DECODER_LAYERS, LAYERS, QUICK, TransposedLayer

ENGINES = ("direct", "im2col", "auto")
# --suite: the convolution layers, or the transposed convolutions of decoders.
SUITES = {"layers": LAYERS, "decoder": DECODER_LAYERS}
PASSES = ("forward", "grad_input", "grad_weight")
PEERS = ("torch", "ort")
# The passes each peer times: ONNX Runtime is an inference engine.
PEER_PASSES = {"torch": PASSES, "ort": ("forward",)}
# A network's totals per pass, and all three together.
STEP = "training step"
# The arrays of a network run; its peers make the same ones from the same seed.
NETWORK_SEED = 0
# Agreement between engines, relative to the largest magnitude in the result.
AGREE_RTOL = {"float32": 2e-4, "float64": 1e-10}
# Winograd's transforms mix a whole tile and round differently: tests/test_winograd.py
# and the README bound its error at 1e-4 (float32) and 1e-12 (float64) of the largest
# exact value; im2col, the result it is checked against, rounds within AGREE_RTOL. A
# wrong tile is off by the order of the values themselves, far above either.
WINOGRAD_AGREE_RTOL = {"float32": 1e-4 + AGREE_RTOL["float32"],
                       "float64": 1e-12 + AGREE_RTOL["float64"]}
# The passes the Winograd engine computes itself; its grad_weight calls the direct
# engine's, and timing that twice would only add noise to the choice of the fastest.
WINOGRAD_PASSES = ("forward", "grad_input")
# The table's engine columns: ENGINES, with Winograd where it runs.
COLUMNS = ("direct", "im2col", "winograd", "auto")
# A row is a miss of auto's when the engine it chose took more than this many times the
# fastest engine's time (issue 17); within it, the medians' noise could decide.
MISS_FACTOR = 1.10
# Per pass, the fastest engines' summed time over the chosen engines' should reach this.
WEIGHTED_TARGET = 0.97


def add_arguments(p) -> None:
    p.add_argument("--suite", default="layers", choices=tuple(SUITES),
                   help="layers: the convolution layer suite (default); decoder: the "
                   "transposed convolutions of a DCGAN generator, a U-Net up-convolution "
                   "and an FCN 16x upsampling, each pass of the transposed op (PyTorch's "
                   "conv_transpose2d and autograd, ONNX Runtime's ConvTranspose)")
    p.add_argument("--layers", help="comma-separated layer names (default: the whole suite); "
                   f"known: {', '.join(LAYERS)}; with --suite decoder: "
                   f"{', '.join(DECODER_LAYERS)}")
    p.add_argument("--quick", action="store_true",
                   help=f"a few small layers ({', '.join(QUICK)}), about 30 s")
    p.add_argument("--passes", default=",".join(PASSES),
                   help=f"comma-separated, from {', '.join(PASSES)}")
    p.add_argument("--threads", type=int, default=None, help="thread count (default: all cores)")
    p.add_argument("--dtype", default="float32", choices=("float32", "float64"))
    p.add_argument("--layout", default="NCHW", choices=("NCHW", "NHWC"),
                   help="the layer suite's layout: NHWC runs our engines on NHWC inputs with "
                   "HWIO filters and PyTorch on channels_last tensors (ONNX Runtime's Conv "
                   "is NCHW only: not timed)"),
    p.add_argument("--repeat", type=int, default=None,
                   help="timed calls per case, median taken (default 9; 3 with --quick); "
                   "with --network, timed sequences (default 3)")
    p.add_argument("--json", metavar="PATH", help="save the run as JSON (for --compare later)")
    p.add_argument("--compare", metavar="PATH", help="compare with a run saved by --json")
    p.add_argument("--plot", metavar="PATH", help="PNG bar chart of GFLOP/s (needs matplotlib)")
    p.add_argument("--no-torch", action="store_true", help="do not time PyTorch even if installed")
    p.add_argument("--no-ort", action="store_true",
                   help="do not time ONNX Runtime even if installed")
    p.add_argument("--autotune", action="store_true",
                   help="run auto with set_autotune(True), tuning into a fresh temporary "
                   "cache (your tuning cache is neither read nor written)")
    p.add_argument("--network", metavar="NAMES",
                   help="comma-separated networks to run whole instead of the layer suite; "
                   f"known: {', '.join(NETWORKS)}")
    p.add_argument("--batch", type=int, default=None, help="--network: images per batch (default 8)")
    p.add_argument("--engines", default=None,
                   help=f"--network: comma-separated, from {', '.join(ENGINES)} (default auto)")


def _split(spec: str, known, what: str) -> list[str]:
    names = [s.strip() for s in spec.split(",") if s.strip()]
    unknown = [n for n in names if n not in known]
    if unknown or not names:
        raise SystemExit(f"fastconv bench: unknown {what} {unknown or spec!r}; "
                         f"known: {', '.join(known)}")
    return names


# Idle time before each engine's block of runs. After a call, OpenBLAS's workers spin
# for ~0.1 s and OpenMP runtimes (ours, and PyTorch's own copy) for a few ms; timing the
# next engine inside that window measured it up to 40x slower (cs231n forward, 2 cores).
SETTLE_S = 0.15
# Each engine is timed in this many blocks, the blocks of all engines taking turns, so
# that the machine's drift (other VMs, clock changes) falls on every engine alike. One
# block per engine let the same engine differ by 30-50% between columns of one run.
ROUNDS = 3
# Warm-up calls before a block's timings, for at least this long. After the pause, one
# warm-up call left the im2col engine's next call waiting for a sleeping Numba worker
# (cs231n forward: 18 of 25 first calls took 4.5 ms instead of 0.6); 20 ms of calls
# left none (measured on the 2-core VM).
WARM_S = 0.02


def _block(fn, calls: int) -> list[float]:
    """``calls`` back-to-back timings, after a pause and WARM_S of untimed warm-up calls.

    Back to back on purpose: pausing before every call let the OpenMP pools and, on a
    VM, the idle vCPU fall asleep, and measured small layers 10-20x slower than a
    training loop sees them.
    """
    time.sleep(SETTLE_S)
    warm_until = time.perf_counter() + WARM_S
    fn()
    while time.perf_counter() < warm_until:
        fn()
    times = []
    for _ in range(calls):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return times


def _median_times(fns: dict, repeat: int) -> dict:
    """{name: (median seconds, result)} over about ``repeat`` calls each, in ROUNDS turns."""
    results = {name: fn() for name, fn in fns.items()}  # JIT compilation, page faults
    times = {name: [] for name in fns}
    per_block = max(1, -(-repeat // ROUNDS))
    names = list(fns)
    for r in range(ROUNDS):
        for name in _rotated(names, r):
            times[name] += _block(fns[name], per_block)
    return {name: (statistics.median(t), results[name]) for name, t in times.items()}


def _rotated(names: list, r: int) -> list:
    """``names`` starting at the r-th (cyclically): round r's order, so that no engine is
    always timed first after the pause."""
    k = r % len(names)
    return names[k:] + names[:k]


def _median_time(fn, repeat: int) -> tuple[float, object]:
    return _median_times({"fn": fn}, repeat)["fn"]


def time_sequence(calls, repeat: int) -> tuple[list, list]:
    """(median seconds of each call, wall seconds of each sequence) of ``calls`` run in
    order: one untimed sequence, then ``repeat`` timed ones back to back.

    Unlike ``_block``, nothing pauses or warms up between the calls: the point is to
    see them as a training step does, each in the caches and thread pools the previous
    call left behind.
    """
    for fn in calls:
        fn()
    times, walls = _sequences(calls, repeat)
    return [statistics.median(t) for t in times], walls


def _sequences(calls, repeat: int) -> tuple[list, list]:
    """(every timing of each call, wall seconds of each sequence) of ``repeat`` timed
    sequences of ``calls``, back to back after a pause; the caller warmed them up."""
    time.sleep(SETTLE_S)  # let the previous process's or engine's pools go quiet
    # In a training loop a step's first call follows the last step's last call, not a
    # pause: without this, every sequence of a round-by-round run began with its threads
    # asleep, and MobileNetV2's first layer took 2.9 ms in the network against 1.7 ms
    # alone (Sapphire Rapids), while a peer's later sequences followed their previous one.
    calls[-1]()
    times, walls = [[] for _ in calls], []
    for _ in range(repeat):
        start = time.perf_counter()
        for fn, t in zip(calls, times):
            t0 = time.perf_counter()
            fn()
            t.append(time.perf_counter() - t0)
        walls.append(time.perf_counter() - start)
    return times, walls


def training_order(layers, passes) -> list[tuple[int, str]]:
    """(layer index, pass) in the order a training step runs them, limited to ``passes``:
    every forward in network order, then, from the last layer back, its grad_input and
    grad_weight. The first layer's grad_input is left out: nothing upstream of the image
    needs it."""
    order = [(i, "forward") for i in range(len(layers)) if "forward" in passes]
    for i in reversed(range(len(layers))):
        order += [(i, p) for p in ("grad_input", "grad_weight")
                  if p in passes and (i, p) != (0, "grad_input")]
    return order


def _transposed(layer) -> bool:
    """A layer of the decoder suite: its passes are the transposed op's."""
    return isinstance(layer, TransposedLayer)


def _conv_pass(layer, pass_name: str) -> str:
    """The convolution pass that computes a layer's pass (``_transpose.CONV_PASS``):
    the one ``auto`` chooses an engine for, and Winograd's column follows."""
    return CONV_PASS[pass_name] if _transposed(layer) else pass_name


def _layer_arrays(rng, layer, dtype: str):
    """Random x, w and grad_y of one layer, drawn in that order."""
    x = rng.standard_normal(layer.x_shape).astype(dtype)
    w = rng.standard_normal(layer.w_shape).astype(dtype)
    extra = (dict(transposed=True, output_padding=layer.output_padding)
             if _transposed(layer) else {})
    gy = rng.standard_normal(output_shape(x, w, layer.stride, layer.pad, groups=layer.groups,
                                          **extra)).astype(dtype)
    return x, w, gy


def network_arrays(layers, dtype: str, seed: int) -> list[tuple]:
    """(x, w, grad_y) per layer; the same seed gives the same arrays in every process."""
    rng = np.random.default_rng(seed)
    return [_layer_arrays(rng, layer, dtype) for layer in layers]


def sgemm_ceiling(dtype: str, n: int = 2048, repeat: int = 5) -> float:
    """GFLOP/s of a large square ``a @ b``: the practical peak of these cores.

    A peak, so the fastest call counts (over ROUNDS blocks), not the median: a median
    taken while another process held a core once put the ceiling at half its value.
    """
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((2, n, n)).astype(dtype)
    t = min(min(_block(lambda: a @ b, repeat)) for _ in range(ROUNDS))
    return 2 * n**3 / t / 1e9


def _pass_fn(engine: str, pass_name: str, x, w, gy, layer, layout: str = "NCHW"):
    kw = dict(stride=layer.stride, pad=layer.pad, groups=layer.groups, backend=engine,
              layout=layout)
    fwd, bwd = conv2d, conv2d_backward
    if _transposed(layer):
        kw["output_padding"] = layer.output_padding
        fwd, bwd = conv_transpose2d, conv_transpose2d_backward
    if pass_name == "forward":
        return lambda: fwd(x, w, **kw)
    if pass_name == "grad_input":
        return lambda: bwd(gy, x, w, wrt="x", **kw).x
    return lambda: bwd(gy, x, w, wrt="w", **kw).w


def _start_peers(no_torch: bool, no_ort: bool, threads: int, dtype: str, passes,
                 layout: str = "NCHW"):
    """({name: running peer process}, [a one-line note per peer left out])."""
    from . import _ort_peer, _torch_peer

    peers, notes = {}, []
    wanted = (("torch", no_torch, _torch_peer, "torch"),
              ("ort", no_ort, _ort_peer, "onnxruntime and onnx"))
    try:
        for name, disabled, module, packages in wanted:
            if disabled:
                notes.append(f"{name}: not timed (--no-{name})")
            elif not set(passes) & set(PEER_PASSES[name]):
                notes.append(f"{name}: not timed (it runs {', '.join(PEER_PASSES[name])} only)")
            elif layout not in getattr(module, "LAYOUTS", (layout,)):
                notes.append(f"{name}: not timed (its convolution is {module.LAYOUTS[0]} only)")
            elif dtype not in getattr(module, "DTYPES", (dtype,)):
                notes.append(f"{name}: not timed (its CPU convolution has no {dtype} kernel)")
            elif (peer := module.start(threads)) is None:
                notes.append(f"{name}: not timed ({packages} not installed; "
                             "pip install 'fastconv[peers]')")
            else:
                peers[name] = peer
    except BaseException:  # one peer started, the next failed: leave no process behind
        _close(peers)
        raise
    return peers, notes


def _close(peers: dict) -> None:
    for peer in peers.values():
        peer.close()


def _agree(a, b, dtype: str, rtol: dict = AGREE_RTOL) -> bool:
    scale = max(float(np.max(np.abs(b))), 1.0)
    return float(np.max(np.abs(a - b))) <= rtol[dtype] * scale


def _agree_rtol(engine: str, auto_chose: str) -> dict:
    """The tolerance for ``engine``'s result: Winograd's when Winograd computed it (its
    own column, or ``auto`` having chosen it)."""
    by = auto_chose if engine == "auto" else engine
    return WINOGRAD_AGREE_RTOL if by == "winograd" else AGREE_RTOL


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _progress(total: int):
    """A tqdm bar on a terminal; nothing when stdout is a pipe or tqdm is missing."""
    if sys.stdout.isatty():
        try:
            from tqdm import tqdm
            return tqdm(total=total, unit="case", leave=False)
        except ImportError:
            pass

    class _Silent:
        def update(self, n=1):
            pass

        def set_description(self, s):
            pass

        def close(self):
            pass

    return _Silent()


def geomean(values) -> float:
    values = [v for v in values if v and v > 0]
    return math.exp(sum(map(math.log, values)) / len(values)) if values else float("nan")


def speedups(rows, peer: str) -> dict:
    """Speed against ``peer`` (its time / the engine's), per engine and pass, over the
    rows that timed it: {"geomean": {engine: {pass: x}}, "weighted": {...}}.

    "weighted" is the sum of the peer's times over the sum of the engine's: the
    time-weighted mean. A geometric mean counts a 0.1 ms layer as much as a 50 ms one
    and hides where a network spends its time; the weighted mean is what a run of all
    the layers, one after another, would see.
    """
    out = {"geomean": {}, "weighted": {}}
    for engine in ENGINES:
        for p in PASSES:
            rs = [r["median_s"] for r in rows if r["pass"] == p and peer in r["median_s"]]
            if rs:
                out["geomean"].setdefault(engine, {})[p] = geomean(t[peer] / t[engine]
                                                                   for t in rs)
                out["weighted"].setdefault(engine, {})[p] = (sum(t[peer] for t in rs)
                                                             / sum(t[engine] for t in rs))
    return out


def _to_nhwc(x, w, gy):
    """The NCHW case in NHWC: x and grad_y (N, H, W, C), w HWIO (R, S, C/groups, K) (a
    transposed layer's (C_in, C_out/groups, R, S) to (R, S, C_out/groups, C_in) alike)."""
    return (np.ascontiguousarray(x.transpose(0, 2, 3, 1)),
            np.ascontiguousarray(w.transpose(2, 3, 1, 0)),
            np.ascontiguousarray(gy.transpose(0, 2, 3, 1)))


def _from_nhwc(a, pass_name: str):
    """An NHWC result in NCHW terms, to compare with an NCHW (or channels_last) one."""
    return a.transpose(3, 2, 0, 1) if pass_name == "grad_weight" else a.transpose(0, 3, 1, 2)


def _suite_geometry(layer, nhwc: bool):
    """The geometry of a suite layer as our engines get it, in NCHW or NHWC (HWIO); a
    transposed layer's is that of the convolution whose passes compute it."""
    x_shape, w_shape = layer.x_shape, layer.w_shape
    if nhwc:
        x_shape = (layer.N, layer.H, layer.W, layer.C)
        w_shape = tuple(w_shape[i] for i in (2, 3, 1, 0))
    if _transposed(layer):
        return transposed_geometry(x_shape, w_shape, layer.stride, layer.pad,
                                   layer.output_padding, 1, layer.groups, int(nhwc))
    return geometry(x_shape, w_shape, layer.stride, layer.pad, 1, layer.groups, int(nhwc))


def timed_engines(g, pass_name: str) -> tuple:
    """The engines a row times: ENGINES, and Winograd where it computes the pass itself
    with fewer multiplies (``winograd_candidate``: autotune's candidates)."""
    if pass_name in WINOGRAD_PASSES and winograd_candidate(g):
        return COLUMNS
    return ENGINES


def auto_candidates(dtype: str) -> tuple:
    """The engines ``auto`` may run, among which a row's fastest is sought. Winograd only
    for float32 under float32 precision "high": float64 and "highest" leave its rounding
    out on purpose, so a faster Winograd there is no miss of auto's."""
    if dtype == "float32" and get_float32_precision() == "high":
        return ("direct", "im2col", "winograd")
    return ("direct", "im2col")


def _chosen_time(times: dict, auto_chose: str) -> float:
    """The median of the engine auto chose, in its own column; the auto column where the
    bench does not time that engine (one a tuning file names, say)."""
    return times.get(auto_chose, times["auto"])


def dispatch_verdict(times: dict, auto_chose: str, candidates) -> dict:
    """A row's fastest engine among ``candidates``, auto's and its chosen engine's time
    over the fastest's, and whether auto missed. The miss compares the chosen engine's own
    column, not auto's: the call's dispatch overhead and the noise between two columns of
    the same engine should not decide which engine was the right choice."""
    fastest = min((e for e in candidates if e in times), key=times.get)
    best = times[fastest]
    chosen_ratio = _chosen_time(times, auto_chose) / best
    return {"fastest": fastest, "auto_vs_fastest": times["auto"] / best,
            "chosen_vs_fastest": chosen_ratio, "auto_missed": chosen_ratio > MISS_FACTOR}


def _pass_dispatch(rows) -> dict:
    """One pass's misses and time-weighted ratios: the fastest engines' summed time over
    the chosen engines' ("weighted", what always picking the fastest would gain) and
    over the auto column's ("weighted_auto", dispatch included)."""
    fastest = sum(r["median_s"][r["fastest"]] for r in rows)
    return {"rows": len(rows), "missed": sum(r["auto_missed"] for r in rows),
            "weighted": fastest / sum(_chosen_time(r["median_s"], r["auto_chose"])
                                      for r in rows),
            "weighted_auto": fastest / sum(r["median_s"]["auto"] for r in rows)}


def dispatch_summary(rows) -> dict:
    """How well ``auto`` chose over ``rows`` (each with its ``dispatch_verdict``): the
    rows it missed, and per pass the counts and time-weighted ratios of _pass_dispatch."""
    per_pass = {p: _pass_dispatch([r for r in rows if r["pass"] == p])
                for p in PASSES if any(r["pass"] == p for r in rows)}
    missed = [{k: r[k] for k in ("layer", "pass", "auto_chose", "fastest", "chosen_vs_fastest")}
              for r in rows if r["auto_missed"]]
    return {"miss_factor": MISS_FACTOR, "target": WEIGHTED_TARGET, "rows": len(rows),
            "missed": missed, "per_pass": per_pass}


def measure(layers, passes, dtype: str, threads: int, repeat: int, peers: dict,
            layout: str = "NCHW", suite: str = "layers") -> dict:
    """Time every engine on every layer and pass; returns the run as a JSON-able dict.

    ``peers`` maps "torch" and "ort" to running peer processes (``_torch_peer``,
    ``_ort_peer``), each timing a case right after our engines, on the same arrays.
    With ``layout="NHWC"`` our engines get the arrays in NHWC (HWIO filters) and PyTorch
    the same values as channels_last tensors. ``suite`` names where ``layers`` are
    (``SUITES``); the decoder suite's rows are the transposed op's passes, each run by the
    convolution pass ``_conv_pass`` names, whose engine ``auto`` chooses.
    """
    nhwc = layout == "NHWC"
    rng = np.random.default_rng(0)
    rows, failures = [], []
    known = SUITES[suite]
    geometries = {name: _suite_geometry(known[name], nhwc) for name in layers}
    candidates = auto_candidates(dtype)
    bar = _progress(sum(len(timed_engines(geometries[name], _conv_pass(known[name], p)))
                        + sum(p in PEER_PASSES[n] for n in peers)
                        for name in layers for p in passes))
    with num_threads(threads):
        ceiling = sgemm_ceiling(dtype)
        for name in layers:
            layer, g = known[name], geometries[name]
            x, w, gy = _layer_arrays(rng, layer, dtype)
            ours = _to_nhwc(x, w, gy) if nhwc else (x, w, gy)
            options = {"channels_last": True} if nhwc else {}
            if _transposed(layer):
                options["output_padding"] = layer.output_padding
            for peer_name, peer in peers.items():
                # a forward-only peer is not sent grad_y: no pipe copy of an unused array
                peer_gy = None if PEER_PASSES[peer_name] == ("forward",) else gy
                peer.load(x, w, peer_gy, layer.stride, layer.pad, layer.groups, **options)
            for pass_name in passes:
                bar.set_description(f"{name} {pass_name}")
                conv_pass = _conv_pass(layer, pass_name)
                fns = {e: _pass_fn(e, pass_name, *ours, layer, layout)
                       for e in timed_engines(g, conv_pass)}
                timed = _median_times(fns, repeat)
                if nhwc:
                    timed = {e: (t, _from_nhwc(out, pass_name)) for e, (t, out) in timed.items()}
                for peer_name, peer in peers.items():
                    if pass_name in PEER_PASSES[peer_name]:
                        timed[peer_name] = peer.time(pass_name, repeat)
                times = {e: t for e, (t, _) in timed.items()}
                results = {e: out for e, (_, out) in timed.items()}
                bar.update(len(times))
                auto_chose = auto_engine(g, np.dtype(dtype), conv_pass)
                for engine in times:
                    if not _agree(results[engine], results["im2col"], dtype,
                                  _agree_rtol(engine, auto_chose)):
                        failures.append(f"{name} {pass_name}: {engine} disagrees with im2col")
                gflops = {e: g.flops / t / 1e9 for e, t in times.items()}
                rows.append({
                    "layer": name, "pass": pass_name, "conv_pass": conv_pass, "flops": g.flops,
                    "median_s": times, "gflops": gflops,
                    **{f"vs_{n}": ({e: times[n] / t for e, t in times.items()}
                                   if n in times else None) for n in PEERS},
                    "auto_chose": auto_chose,
                    **dispatch_verdict(times, auto_chose, candidates),
                })
        # Measured again after the suite, the higher kept: a transient at either end
        # cannot halve every share.
        ceiling = max(ceiling, sgemm_ceiling(dtype))
    for r in rows:
        r["ceiling_share"] = {e: v / ceiling for e, v in r["gflops"].items()}
    bar.close()
    return {"machine": machine_info(threads, peers), "dtype": dtype, "threads": threads,
            "layout": layout, "suite": suite,
            "repeat": repeat, "sgemm_gflops": ceiling, "rows": rows, "failures": failures,
            "means": {f"vs_{n}": speedups(rows, n) for n in peers},
            "dispatch": {"candidates": list(candidates), **dispatch_summary(rows)}}


def machine_info(threads: int, peers: dict) -> dict:
    import numba

    from ._threads import available_cores
    return {"cpu": cpu_model(), "cores": available_cores(), "threads": threads,
            "simd": simd_variant(), "python": platform.python_version(),
            "fastconv": __version__, "numpy": np.__version__, "numba": numba.__version__,
            "torch": getattr(peers.get("torch"), "version", None),
            "onnxruntime": getattr(peers.get("ort"), "version", None),
            "date": time.strftime("%Y-%m-%d %H:%M")}


def _header(run: dict, what: str) -> list[str]:
    m = run["machine"]
    return [f"fastconv {m['fastconv']} bench, {m['date']}: {m['cpu']}, {m['threads']} of "
            f"{m['cores']} cores, SIMD {m['simd']}, {run['dtype']}, {what}",
            f"numpy {m['numpy']}, numba {m['numba']}, torch {m['torch'] or '-'}, "
            f"onnxruntime {m.get('onnxruntime') or '-'}"] + run.get("notes", [])


def _cell(times: dict, key: str, scale: float = 1e3, fmt: str = "11.2f") -> str:
    """One column's figure, or a dash where that engine or peer did not run."""
    width = int(fmt.split(".")[0])
    return f"{times[key] * scale:{fmt}}" if key in times else f"{'-':>{width}}"


def format_table(run: dict) -> str:
    rows = run["rows"]
    peers = [n for n in PEERS if any(r.get(f"vs_{n}") for r in rows)]
    engines = COLUMNS + tuple(peers)
    out = _header(run, f"{run.get('layout', 'NCHW')}, median of {run['repeat']}")
    if run.get("suite") == "decoder":
        out.append("decoder suite: transposed convolutions, each pass the transposed op's "
                   "(forward runs the convolution's grad_input, grad_input its forward, "
                   "grad_weight its grad_weight; 'auto chose' is that pass's engine)")
    out += [f"SGEMM ceiling {run['sgemm_gflops']:.0f} GFLOP/s", ""]
    head = (f"{'layer':<16} {'pass':<11}" + "".join(f"{e + ' ms':>12}" for e in engines)
            + f" {'auto GF/s':>9} {'%ceil':>6}" + "".join(f" {'auto/' + n:>10}" for n in peers)
            + f"  {'fastest':<8}  auto chose")
    out += [head, "-" * len(head)]
    for r in rows:
        out.append(f"{r['layer']:<16} {r['pass']:<11}"
                   + "".join(_cell(r["median_s"], e, fmt="12.2f") for e in engines)
                   + f" {r['gflops']['auto']:9.1f} {100 * r['ceiling_share']['auto']:5.0f}%"
                   + "".join(f" {r[f'vs_{n}']['auto']:9.2f}x" if r[f"vs_{n}"] else f" {'-':>10}"
                             for n in peers)
                   + f"  {r.get('fastest', '-'):<8}  {r['auto_chose']}" + _miss_mark(r))
    if run.get("dispatch"):
        out += ["", *_dispatch_lines(run["dispatch"])]
    for n in peers:
        out += ["", *_means_lines(run["means"][f"vs_{n}"], n)]
    return "\n".join(out)


def _miss_mark(row: dict) -> str:
    """After "auto chose": how much slower the chosen engine was, on a row auto missed."""
    return f"  MISS {row['chosen_vs_fastest']:.2f}x" if row.get("auto_missed") else ""


def _dispatch_lines(dispatch: dict) -> list[str]:
    """The misses counted, and per pass the time-weighted auto against always-fastest."""
    per_pass, target = dispatch["per_pass"], dispatch["target"]
    slower = f">{100 * (dispatch['miss_factor'] - 1):.0f}% slower"
    counts = ", ".join(f"{p} {d['missed']} of {d['rows']}" for p, d in per_pass.items())
    out = [f"auto missed (chosen engine {slower} than the fastest): "
           f"{len(dispatch['missed'])} of {dispatch['rows']} rows ({counts})",
           "time-weighted auto vs always-fastest (sum of the fastest engine's times / sum of "
           f"the chosen engine's; >= {target} is the target):"]
    for p, d in per_pass.items():
        verdict = "met" if d["weighted"] >= target else "BELOW TARGET"
        out.append(f"  {p:<12} {d['weighted']:6.3f}x  {verdict:<12}  "
                   f"(auto's own column: {d['weighted_auto']:.3f}x)")
    return out


def _means_lines(means: dict, peer: str) -> list[str]:
    passes = [p for p in PASSES if any(p in v for v in means["geomean"].values())]
    out = [f"speed vs {peer} ({peer} time / engine time); time-weighted: sum of {peer}'s "
           "times / sum of the engine's:", " " * 34 + "".join(f"{p:>13}" for p in passes)]
    for kind, label in (("geomean", "geometric mean"), ("weighted", "time-weighted mean")):
        for i, (e, by_pass) in enumerate(means[kind].items()):
            out.append(f"  {label if i == 0 else '':<24}{e:<8}"
                       + "".join(f"{by_pass[p]:12.2f}x" for p in passes))
    return out


def format_comparison(old: dict, new: dict) -> str:
    """Speed of this run relative to a saved one (old time / new time), per engine."""
    before = {(r["layer"], r["pass"]): r for r in old["rows"]}
    out = [f"compared with the run of {old['machine']['date']} (old time / new time):",
           f"{'layer':<16} {'pass':<11} " + "".join(f"{e:>9}" for e in COLUMNS)]
    for r in new["rows"]:
        o = before.get((r["layer"], r["pass"]))
        if o is None:
            continue
        out.append(f"{r['layer']:<16} {r['pass']:<11} " + "".join(
            _ratio(o["median_s"].get(e), r["median_s"].get(e), 9) for e in COLUMNS))
    return "\n".join(out)


# --- whole networks -----------------------------------------------------------------


def _totals(rows, key: str, who: str) -> dict:
    """{pass: summed seconds, STEP: all of them} of ``who``'s times in ``rows[i][key]``."""
    totals = {}
    for r in rows:
        if who in r[key]:
            totals[r["pass"]] = totals.get(r["pass"], 0.0) + r[key][who]
    if set(totals) == set(PASSES):
        totals[STEP] = sum(totals.values())
    return totals


def measure_network(name: str, batch: int, passes, engines, dtype: str, threads: int,
                    repeat: int, peers: dict) -> dict:
    """One network's run: every call's median in the network sequence (our engines and
    the peers) and alone (our engines, by the suite's ``_block``), and the totals. Our
    engines' sequences and alone blocks alternate in up to ROUNDS rounds, so that both halves
    of a net/alone ratio are measured in the same minutes."""
    layers = NETWORKS[name](batch)
    order = training_order(layers, passes)
    arrays = network_arrays(layers, dtype, NETWORK_SEED)
    geometries = [geometry(layer.x_shape, layer.w_shape, layer.stride, layer.pad, 1,
                           layer.groups, 0) for layer in layers]
    rows = [{"layer": layers[i].name, "pass": p, "flops": geometries[i].flops,
             "network_s": {}, "alone_s": {}} for i, p in order]
    walls = {e: [] for e in engines}
    rounds = min(ROUNDS, repeat)
    per_round = -(-repeat // rounds)
    bar = _progress(len(order) * len(engines) * rounds)
    with num_threads(threads):
        calls = {e: [_pass_fn(e, p, *arrays[i], layers[i]) for i, p in order] for e in engines}
        network = {e: [[] for _ in order] for e in engines}
        alone = {e: [[] for _ in order] for e in engines}
        for e in engines:
            for fn in calls[e]:  # JIT compilation, page faults, first packs
                fn()
        # Round by round, each network sequence next to the same calls alone: the host's
        # speed drifts over minutes (an unchanged VGG-16 forward took 544 ms, then 685 ms
        # twenty minutes later on the 2-core VM), and a ratio of phases run minutes apart
        # measured the drift, not what back to back costs.
        for rnd in range(rounds):
            for e in engines:
                bar.set_description(f"{name} {e} network, round {rnd + 1}")
                times, rnd_walls = _sequences(calls[e], per_round)
                walls[e] += rnd_walls
                for acc, t in zip(network[e], times):
                    acc += t
            for k, r in enumerate(rows):
                bar.set_description(f"{name} {r['layer']} {r['pass']} alone")
                for e in _rotated(engines, rnd):
                    alone[e][k] += _block(calls[e][k], per_round)
                bar.update(len(engines))
        for e in engines:
            for r, net_t, alone_t in zip(rows, network[e], alone[e]):
                r["network_s"][e] = statistics.median(net_t)
                r["alone_s"][e] = statistics.median(alone_t)
        for (i, p), r in zip(order, rows):
            r["auto_chose"] = auto_engine(geometries[i], np.dtype(dtype), p)
    bar.close()
    del calls, arrays  # the peers make their own; a VGG-16 batch of 8 is 0.7 GB
    for peer_name, peer in peers.items():
        peer_passes = [p for p in passes if p in PEER_PASSES[peer_name]]
        medians, walls[peer_name] = peer.sequence(layers, peer_passes, dtype, NETWORK_SEED,
                                                  repeat)
        keys = [(layers[i].name, p) for i, p in training_order(layers, peer_passes)]
        by_key = dict(zip(keys, medians))
        for r in rows:
            if (r["layer"], r["pass"]) in by_key:
                r["network_s"][peer_name] = by_key[r["layer"], r["pass"]]
    return {
        "batch": batch, "image": layers[0].H, "convolutions": len(layers),
        "layers": [layer._asdict() for layer in layers],
        "skipped": (f"{layers[0].name} grad_input (nothing upstream of the image needs it)"
                    if "grad_input" in passes else None),
        "rows": rows, "wall_s": walls,
        "total_s": {who: _totals(rows, "network_s", who) for who in (*engines, *peers)},
        "alone_total_s": {e: _totals(rows, "alone_s", e) for e in engines},
    }


def _ratio(num, den, width: int = 8) -> str:
    return f"{num / den:{width - 1}.2f}x" if num is not None and den else f"{'-':>{width}}"


def format_network(run: dict, name: str) -> str:
    net = run["network"][name]
    engines = list(net["alone_total_s"])
    total, alone = net["total_s"], net["alone_total_s"]
    torch, ort = total.get("torch", {}), total.get("ort", {})
    out = [f"{name}, batch {net['batch']}, {net['image']}x{net['image']}: "
           f"{net['convolutions']} convolutions"
           + (f"; not run: {net['skipped']}" if net["skipped"] else ""), ""]
    head = (f"{'engine':<8} {'pass':<14}{'network ms':>11}{'alone ms':>10}{'net/alone':>10}"
            f"{'torch ms':>10}{'ort ms':>9}{'vs torch':>9}{'vs ort':>8}")
    out += [head, "-" * len(head)]
    for e in engines:
        for p in total[e]:
            ours = total[e][p]
            out.append(f"{e:<8} {p:<14}{ours * 1e3:11.2f}{alone[e][p] * 1e3:10.2f}"
                       f"{_ratio(ours, alone[e][p], 10)}"
                       + _cell(torch, p, fmt="10.2f") + _cell(ort, p, fmt="9.2f")
                       + _ratio(torch.get(p), ours, 9) + _ratio(ort.get(p), ours, 8))
    out.append("sequence wall ms: " + "; ".join(
        f"{who} " + ", ".join(f"{t * 1e3:.1f}" for t in walls)
        for who, walls in net["wall_s"].items()))
    e = "auto" if "auto" in engines else engines[0]
    slowest = sorted(net["rows"], key=lambda r: -r["network_s"][e])[:10]
    out += ["", f"the ten slowest calls of {e} in the network run:",
            f"{'layer':<24} {'pass':<12}{e + ' ms':>10}{'GFLOP/s':>9}{'torch ms':>10}  engine"]
    for r in slowest:
        t = r["network_s"][e]
        out.append(f"{r['layer']:<24} {r['pass']:<12}{t * 1e3:10.2f}{r['flops'] / t / 1e9:9.1f}"
                   + _cell(r["network_s"], "torch", fmt="10.2f")
                   + f"  {r['auto_chose'] if e == 'auto' else e}")
    return "\n".join(out)


def format_network_comparison(old: dict, new: dict) -> str:
    """Each pass's total against a saved network run (old time / new time)."""
    out = [f"compared with the run of {old['machine']['date']} (old total / new total):"]
    for name, net in new["network"].items():
        before = old["network"].get(name)
        if before is None:
            out.append(f"{name}: not in the saved run")
            continue
        who = [w for w in net["total_s"] if w in before["total_s"]]
        out.append(f"{name}, batch {before['batch']} then {net['batch']}:".ljust(30)
                   + "".join(f"{w:>9}" for w in who))
        for p in (*PASSES, STEP):
            if any(p in net["total_s"][w] for w in who):
                out.append(f"  {p:<28}" + "".join(
                    _ratio(before["total_s"][w].get(p), net["total_s"][w].get(p), 9)
                    for w in who))
    return "\n".join(out)


def run_networks(names, batch: int, passes, engines, dtype: str, threads: int, repeat: int,
                 peers: dict, notes) -> dict:
    return {"machine": machine_info(threads, peers), "dtype": dtype, "threads": threads,
            "repeat": repeat, "seed": NETWORK_SEED, "notes": list(notes),
            "network": {name: measure_network(name, batch, passes, engines, dtype, threads,
                                              repeat, peers) for name in names}}


def _pyplot():
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise SystemExit("fastconv bench --plot needs matplotlib: pip install 'fastconv[bench]' "
                         "(or pip install matplotlib)") from None
    return plt


def plot(run: dict, path: str) -> None:
    plt = _pyplot()
    rows = run["rows"]
    engines = [e for e in COLUMNS + PEERS if any(e in r["gflops"] for r in rows)]
    labels = [f"{r['layer']}\n{r['pass']}" for r in rows]
    width = 0.8 / len(engines)
    fig, ax = plt.subplots(figsize=(max(8, 0.6 * len(rows)), 5))
    for i, e in enumerate(engines):
        ax.bar([j + i * width for j in range(len(rows))], [r["gflops"].get(e, 0) for r in rows],
               width, label=e)
    ax.axhline(run["sgemm_gflops"], color="k", linestyle="--", label="SGEMM ceiling")
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(rows))], labels, rotation=90,
                  fontsize=7)
    ax.set_ylabel("GFLOP/s")
    m = run["machine"]
    ax.set_title(f"fastconv {m['fastconv']}: {m['cpu']}, {m['threads']} threads, {run['dtype']}")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def _reject(options: dict, why: str) -> None:
    given = [opt for opt, value in options.items() if value is not None and value is not False]
    if given:
        raise SystemExit(f"fastconv bench: {', '.join(given)} {why}")


@contextlib.contextmanager
def _autotuned(on: bool):
    """--autotune: autotune on, with a tuning cache of its own for the run."""
    if not on:
        yield
        return
    import tempfile

    from . import autotune
    # The tuning cache is read again whenever FASTCONV_CACHE_DIR changes (_tune._read).
    old = os.environ.get("FASTCONV_CACHE_DIR")
    with tempfile.TemporaryDirectory(prefix="fastconv-bench-tune-") as where, autotune(True):
        os.environ["FASTCONV_CACHE_DIR"] = where
        try:
            yield
        finally:
            if old is None:
                os.environ.pop("FASTCONV_CACHE_DIR", None)
            else:
                os.environ["FASTCONV_CACHE_DIR"] = old


def run(args) -> int:
    passes = _split(args.passes, PASSES, "pass(es)")
    threads = args.threads or get_num_threads()
    if args.network:
        return _run_networks(args, passes, threads)
    _reject({"--batch": args.batch, "--engines": args.engines},
            "applies to --network runs only; the layer suite runs every engine on the "
            "batch of each layer")
    known = SUITES[args.suite]
    if args.suite != "layers":
        _reject({"--quick": args.quick}, "applies to the layer suite only; pick decoder "
                "layers with --layers")
    layers = list(QUICK) if args.quick else _split(args.layers or ",".join(known), known,
                                                   "layer(s)")
    repeat = args.repeat or (3 if args.quick else 9)
    if args.plot:
        _pyplot()  # fail before the run, not after it
    old = _load_compare(args.compare, "decoder-suite" if args.suite == "decoder"
                        else "layer-suite")
    peers, notes = _start_peers(args.no_torch, args.no_ort, threads, args.dtype, passes,
                                args.layout)
    try:
        with _autotuned(args.autotune):
            result = measure(layers, passes, args.dtype, threads, repeat, peers, args.layout,
                             args.suite)
    finally:
        _close(peers)
    result["autotune"] = bool(args.autotune)
    result["notes"] = notes
    print(format_table(result))
    if old is not None:
        print("\n" + format_comparison(old, result))
    _save(args, result)
    if args.plot:
        plot(result, args.plot)
    for msg in result["failures"]:
        print("MISMATCH:", msg, file=sys.stderr)
    return 1 if result["failures"] else 0


def _run_networks(args, passes, threads: int) -> int:
    _reject({"--layers": args.layers, "--quick": args.quick, "--plot": args.plot,
             "--autotune": args.autotune,
             "--suite": args.suite if args.suite != "layers" else None},
            "applies to the layer suite only, not to --network")
    names = _split(args.network, NETWORKS, "network(s)")
    engines = _split(args.engines or "auto", ENGINES, "engine(s)")
    batch = 8 if args.batch is None else args.batch
    if batch < 1:
        raise SystemExit(f"fastconv bench: --batch must be a positive integer, got {batch}")
    repeat = args.repeat or 3
    old = _load_compare(args.compare, "network")
    peers, notes = _start_peers(args.no_torch, args.no_ort, threads, args.dtype, passes)
    try:
        result = run_networks(names, batch, passes, engines, args.dtype, threads, repeat,
                              peers, notes)
    finally:
        _close(peers)
    print("\n\n".join(["\n".join(_header(result, f"median of {repeat} sequences"))]
                      + [format_network(result, name) for name in names]))
    if old is not None:
        print("\n" + format_network_comparison(old, result))
    _save(args, result)
    return 0


def _load_compare(path, kind: str):
    """The saved run to compare with, read before the run so that a wrong file fails at
    once; ``kind`` is "network", "layer-suite" or "decoder-suite", the kind of this run."""
    if not path:
        return None
    with open(path) as f:
        old = json.load(f)
    saved = ("network" if "network" in old else
             "decoder-suite" if old.get("suite") == "decoder" else "layer-suite")
    if saved != kind:
        raise SystemExit(f"fastconv bench --compare: {path} is a {saved} run and this is a "
                         f"{kind} run; compare runs of one kind")
    return old


def _save(args, result: dict) -> None:
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
