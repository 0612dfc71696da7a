"""``fastconv bench``: the engines, ``auto`` and PyTorch side by side on the layer suite.

The SGEMM ceiling (a large ``a @ b`` on the same cores) is measured first and last, so
every figure can be read as a share of what this machine's BLAS reaches. Each pass of each
layer is then run by every engine on the same arrays; the results are checked against
each other, so a fast wrong engine fails the run. Times are medians over about
``--repeat`` calls, made in blocks of back-to-back calls that the engines take in turns;
each block starts after a pause and 20 ms of warm-up calls (which keeps Numba's compilation,
first-touch page faults and sleeping thread pools out of the figures). PyTorch runs in
a peer process of its own (``_torch_peer``), case by case, between our engines' cases.
"""
from __future__ import annotations

import json
import math
import platform
import statistics
import sys
import time

import numpy as np

from . import __version__, conv2d, conv2d_backward, get_num_threads, num_threads, output_shape
from ._api import auto_engine
from ._tune import simd_variant
from ._validate import geometry
from .suite import LAYERS, QUICK

ENGINES = ("direct", "im2col", "auto")
PASSES = ("forward", "grad_input", "grad_weight")
# Agreement between engines, relative to the largest magnitude in the result.
AGREE_RTOL = {"float32": 2e-4, "float64": 1e-10}


def add_arguments(p) -> None:
    p.add_argument("--layers", help="comma-separated layer names (default: the whole suite); "
                   f"known: {', '.join(LAYERS)}")
    p.add_argument("--quick", action="store_true",
                   help=f"a few small layers ({', '.join(QUICK)}), about 30 s")
    p.add_argument("--passes", default=",".join(PASSES),
                   help=f"comma-separated, from {', '.join(PASSES)}")
    p.add_argument("--threads", type=int, default=None, help="thread count (default: all cores)")
    p.add_argument("--dtype", default="float32", choices=("float32", "float64"))
    p.add_argument("--repeat", type=int, default=None,
                   help="timed calls per case, median taken (default 9; 3 with --quick)")
    p.add_argument("--json", metavar="PATH", help="save the run as JSON (for --compare later)")
    p.add_argument("--compare", metavar="PATH", help="compare with a run saved by --json")
    p.add_argument("--plot", metavar="PATH", help="PNG bar chart of GFLOP/s (needs matplotlib)")
    p.add_argument("--no-torch", action="store_true", help="do not time PyTorch even if installed")


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
        for name in names[r % len(names):] + names[:r % len(names)]:
            times[name] += _block(fns[name], per_block)
    return {name: (statistics.median(t), results[name]) for name, t in times.items()}


def _median_time(fn, repeat: int) -> tuple[float, object]:
    return _median_times({"fn": fn}, repeat)["fn"]


def sgemm_ceiling(dtype: str, n: int = 2048, repeat: int = 5) -> float:
    """GFLOP/s of a large square ``a @ b``: the practical peak of these cores.

    A peak, so the fastest call counts (over ROUNDS blocks), not the median: a median
    taken while another process held a core once put the ceiling at half its value.
    """
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((2, n, n)).astype(dtype)
    t = min(min(_block(lambda: a @ b, repeat)) for _ in range(ROUNDS))
    return 2 * n**3 / t / 1e9


def _pass_fn(engine: str, pass_name: str, x, w, gy, layer):
    kw = dict(stride=layer.stride, pad=layer.pad, groups=layer.groups, backend=engine)
    if pass_name == "forward":
        return lambda: conv2d(x, w, **kw)
    if pass_name == "grad_input":
        return lambda: conv2d_backward(gy, x, w, wrt="x", **kw).x
    return lambda: conv2d_backward(gy, x, w, wrt="w", **kw).w


def _start_torch(disabled: bool, threads: int):
    """The PyTorch peer process (``_torch_peer``), or None without PyTorch."""
    if disabled:
        return None
    from ._torch_peer import start
    return start(threads)


def _agree(a, b, dtype: str) -> bool:
    scale = max(float(np.max(np.abs(b))), 1.0)
    return float(np.max(np.abs(a - b))) <= AGREE_RTOL[dtype] * scale


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


def measure(layers, passes, dtype: str, threads: int, repeat: int, torch) -> dict:
    """Time every engine on every layer and pass; returns the run as a JSON-able dict.

    ``torch`` is a ``_torch_peer.TorchPeer`` (PyTorch timed in its own process, case by
    case, right after our engines) or None.
    """
    engines = ENGINES + (("torch",) if torch is not None else ())
    rng = np.random.default_rng(0)
    rows, failures = [], []
    bar = _progress(len(layers) * len(passes) * len(engines))
    with num_threads(threads):
        ceiling = sgemm_ceiling(dtype)
        for name in layers:
            layer = LAYERS[name]
            x = rng.standard_normal(layer.x_shape).astype(dtype)
            w = rng.standard_normal(layer.w_shape).astype(dtype)
            gy = rng.standard_normal(output_shape(x, w, layer.stride, layer.pad,
                                                  groups=layer.groups)).astype(dtype)
            g = geometry(x.shape, w.shape, layer.stride, layer.pad, 1, layer.groups, 0)
            if torch is not None:
                torch.load(x, w, gy, layer.stride, layer.pad, layer.groups)
            for pass_name in passes:
                bar.set_description(f"{name} {pass_name}")
                fns = {e: _pass_fn(e, pass_name, x, w, gy, layer) for e in ENGINES}
                timed = _median_times(fns, repeat)
                if torch is not None:
                    timed["torch"] = torch.time(pass_name, repeat)
                times = {e: t for e, (t, _) in timed.items()}
                results = {e: out for e, (_, out) in timed.items()}
                bar.update(len(engines))
                for engine in engines:
                    if not _agree(results[engine], results["im2col"], dtype):
                        failures.append(f"{name} {pass_name}: {engine} disagrees with im2col")
                gflops = {e: g.flops / t / 1e9 for e, t in times.items()}
                rows.append({
                    "layer": name, "pass": pass_name, "flops": g.flops,
                    "median_s": times, "gflops": gflops,
                    "vs_torch": ({e: times["torch"] / t for e, t in times.items()}
                                 if torch is not None else None),
                    "auto_chose": auto_engine(g, np.dtype(dtype), pass_name),
                })
        # Measured again after the suite, the higher kept: a transient at either end
        # cannot halve every share.
        ceiling = max(ceiling, sgemm_ceiling(dtype))
    for r in rows:
        r["ceiling_share"] = {e: v / ceiling for e, v in r["gflops"].items()}
    bar.close()
    return {"machine": machine_info(threads, torch), "dtype": dtype, "threads": threads,
            "repeat": repeat, "sgemm_gflops": ceiling, "rows": rows, "failures": failures}


def machine_info(threads: int, torch) -> dict:
    import numba

    from ._threads import available_cores
    return {"cpu": cpu_model(), "cores": available_cores(), "threads": threads,
            "simd": simd_variant(), "python": platform.python_version(),
            "fastconv": __version__, "numpy": np.__version__, "numba": numba.__version__,
            "torch": getattr(torch, "version", None),
            "date": time.strftime("%Y-%m-%d %H:%M")}


def format_table(run: dict) -> str:
    m = run["machine"]
    has_torch = any(r["vs_torch"] for r in run["rows"])
    engines = ENGINES + (("torch",) if has_torch else ())
    out = [
        f"fastconv {m['fastconv']} bench, {m['date']}: {m['cpu']}, {m['threads']} of "
        f"{m['cores']} cores, SIMD {m['simd']}, {run['dtype']}, median of {run['repeat']}",
        f"numpy {m['numpy']}, numba {m['numba']}, torch {m['torch'] or 'not installed'}; "
        f"SGEMM ceiling {run['sgemm_gflops']:.0f} GFLOP/s",
        "",
    ]
    head = (f"{'layer':<16} {'pass':<11} " + "".join(f"{e + ' ms':>11}" for e in engines)
            + f" {'auto GF/s':>9} {'%ceil':>6}" + (" auto/torch" if has_torch else "")
            + "  auto chose")
    out += [head, "-" * len(head)]
    for r in run["rows"]:
        line = (f"{r['layer']:<16} {r['pass']:<11} "
                + "".join(f"{r['median_s'][e] * 1e3:11.2f}" for e in engines)
                + f" {r['gflops']['auto']:9.1f} {100 * r['ceiling_share']['auto']:5.0f}%")
        if has_torch:
            line += f" {r['vs_torch']['auto']:9.2f}x"
        out.append(line + f"  {r['auto_chose']}")
    if has_torch:
        out += ["", "geometric mean of speed vs torch (torch time / engine time):"]
        passes = list(dict.fromkeys(r["pass"] for r in run["rows"]))
        out.append(f"{'':<16} " + "".join(f"{p:>13}" for p in passes))
        for e in ENGINES:
            out.append(f"{e:<16} " + "".join(
                f"{geomean(r['vs_torch'][e] for r in run['rows'] if r['pass'] == p):12.2f}x"
                for p in passes))
    return "\n".join(out)


def format_comparison(old: dict, new: dict) -> str:
    """Speed of this run relative to a saved one (old time / new time), per engine."""
    before = {(r["layer"], r["pass"]): r for r in old["rows"]}
    out = [f"compared with the run of {old['machine']['date']} (old time / new time):",
           f"{'layer':<16} {'pass':<11} " + "".join(f"{e:>9}" for e in ENGINES)]
    for r in new["rows"]:
        o = before.get((r["layer"], r["pass"]))
        if o is None:
            continue
        out.append(f"{r['layer']:<16} {r['pass']:<11} " + "".join(
            f"{o['median_s'][e] / r['median_s'][e]:8.2f}x" if e in o["median_s"] else f"{'-':>9}"
            for e in ENGINES))
    return "\n".join(out)


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
    engines = [e for e in ENGINES + ("torch",) if e in rows[0]["gflops"]]
    labels = [f"{r['layer']}\n{r['pass']}" for r in rows]
    width = 0.8 / len(engines)
    fig, ax = plt.subplots(figsize=(max(8, 0.6 * len(rows)), 5))
    for i, e in enumerate(engines):
        ax.bar([j + i * width for j in range(len(rows))], [r["gflops"][e] for r in rows],
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


def run(args) -> int:
    layers = list(QUICK) if args.quick else _split(args.layers or ",".join(LAYERS), LAYERS,
                                                   "layer(s)")
    passes = _split(args.passes, PASSES, "pass(es)")
    repeat = args.repeat or (3 if args.quick else 9)
    threads = args.threads or get_num_threads()
    if args.plot:
        _pyplot()  # fail before the run, not after it
    torch = _start_torch(args.no_torch, threads)
    try:
        result = measure(layers, passes, args.dtype, threads, repeat, torch)
    finally:
        if torch is not None:
            torch.close()
    print(format_table(result))
    if args.compare:
        with open(args.compare) as f:
            print("\n" + format_comparison(json.load(f), result))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
    if args.plot:
        plot(result, args.plot)
    for msg in result["failures"]:
        print("MISMATCH:", msg, file=sys.stderr)
    return 1 if result["failures"] else 0
