"""``fastconv bench``: time each engine (and PyTorch, when installed) on the layer suite.

Every pass of every layer is run by each engine on the same arrays; the results are
checked against each other before any time is reported, so a fast wrong engine fails
the run. Times are medians over ``--repeat`` runs after one warm-up call (which also
keeps Numba's compilation out of the figures).
"""
from __future__ import annotations

import json
import statistics
import sys
import time

import numpy as np

from . import conv2d, conv2d_backward, get_num_threads, num_threads
from .suite import DEFAULT, LAYERS, QUICK

ENGINES = ("direct", "im2col")
PASSES = ("forward", "grad_input", "grad_weight")
# Agreement between engines, relative to the largest magnitude in the result.
AGREE_RTOL = {"float32": 2e-4, "float64": 1e-10}


def add_arguments(p) -> None:
    p.add_argument("--layers", help="comma-separated layer names (default: a small set); "
                   f"known: {', '.join(LAYERS)}; 'all' for the whole suite")
    p.add_argument("--quick", action="store_true", help=f"only {', '.join(QUICK)}")
    p.add_argument("--passes", default=",".join(PASSES), help="comma-separated passes")
    p.add_argument("--threads", type=int, default=None, help="thread count (default: all cores)")
    p.add_argument("--dtype", default="float32", choices=("float32", "float64"))
    p.add_argument("--repeat", type=int, default=5, help="timed runs per case (median taken)")
    p.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    p.add_argument("--no-torch", action="store_true", help="do not time PyTorch even if installed")


def _pick(spec: str | None, quick: bool) -> list[str]:
    if quick:
        return list(QUICK)
    if not spec:
        return list(DEFAULT)
    if spec == "all":
        return list(LAYERS)
    names = [s.strip() for s in spec.split(",") if s.strip()]
    unknown = [n for n in names if n not in LAYERS]
    if unknown:
        raise SystemExit(f"fastconv bench: unknown layer(s) {unknown}; known: {', '.join(LAYERS)}")
    return names


def _median_time(fn, repeat: int) -> tuple[float, object]:
    out = fn()  # warm-up: JIT compilation, page faults, caches
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def _pass_fn(engine: str, pass_name: str, x, w, gy, layer):
    kw = dict(stride=layer.stride, pad=layer.pad, groups=layer.groups, backend=engine)
    if pass_name == "forward":
        return lambda: conv2d(x, w, **kw)
    wrt = ("x",) if pass_name == "grad_input" else ("w",)
    field = 0 if pass_name == "grad_input" else 1
    return lambda: conv2d_backward(gy, x, w, wrt=wrt, **kw)[field]


def _torch_fn(torch, pass_name: str, x, w, gy, layer):
    tx, tw, tgy = (torch.from_numpy(a) for a in (x, w, gy))
    kw = dict(stride=layer.stride, padding=layer.pad, groups=layer.groups)
    F = torch.nn.functional
    if pass_name == "forward":
        return lambda: F.conv2d(tx, tw, **kw).numpy()
    if pass_name == "grad_input":
        return lambda: torch.nn.grad.conv2d_input(tx.shape, tw, tgy, **kw).numpy()
    return lambda: torch.nn.grad.conv2d_weight(tx, tw.shape, tgy, **kw).numpy()


def _import_torch(disabled: bool):
    if disabled:
        return None
    try:
        import torch
    except ImportError:
        return None
    return torch


def _agree(a, b, dtype: str) -> bool:
    scale = max(float(np.max(np.abs(b))), 1e-30)
    return float(np.max(np.abs(a - b))) <= AGREE_RTOL[dtype] * scale


def run(args) -> int:
    from . import output_shape

    passes = [p.strip() for p in args.passes.split(",")]
    bad = [p for p in passes if p not in PASSES]
    if bad:
        raise SystemExit(f"fastconv bench: unknown pass(es) {bad}; known: {', '.join(PASSES)}")
    threads = args.threads or get_num_threads()
    torch = _import_torch(args.no_torch)
    if torch is not None:
        torch.set_num_threads(threads)
    engines = ENGINES + (("torch",) if torch is not None else ())
    rng = np.random.default_rng(0)
    rows, failures = [], []
    print(f"fastconv bench: {threads} threads, {args.dtype}, median of {args.repeat} runs; "
          f"engines: {', '.join(engines)}", flush=True)
    with num_threads(threads):
        for name in _pick(args.layers, args.quick):
            layer = LAYERS[name]
            x = rng.standard_normal(layer.x_shape).astype(args.dtype)
            w = rng.standard_normal(layer.w_shape).astype(args.dtype)
            gy = rng.standard_normal(output_shape(x, w, layer.stride, layer.pad,
                                                  groups=layer.groups)).astype(args.dtype)
            flops = 2 * np.prod(gy.shape, dtype=np.int64) * np.prod(layer.w_shape[1:])
            for pass_name in passes:
                results, times = {}, {}
                for engine in engines:
                    fn = (_torch_fn(torch, pass_name, x, w, gy, layer) if engine == "torch"
                          else _pass_fn(engine, pass_name, x, w, gy, layer))
                    times[engine], results[engine] = _median_time(fn, args.repeat)
                ref = results["im2col"]
                for engine in engines:
                    if not _agree(results[engine], ref, args.dtype):
                        failures.append(f"{name}/{pass_name}: {engine} disagrees with im2col")
                for engine in engines:
                    row = {"layer": name, "pass": pass_name, "engine": engine,
                           "median_s": times[engine], "gflops": flops / times[engine] / 1e9}
                    if "torch" in times:
                        row["vs_torch"] = times["torch"] / times[engine]
                    rows.append(row)
                _print_rows(rows[-len(engines):])
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"threads": threads, "dtype": args.dtype, "rows": rows}, f, indent=1)
    for msg in failures:
        print("MISMATCH:", msg, file=sys.stderr)
    return 1 if failures else 0


def _print_rows(rows) -> None:
    for r in rows:
        vs = f"{r['vs_torch']:6.2f}x" if "vs_torch" in r else ""
        print(f"{r['layer']:<16} {r['pass']:<12} {r['engine']:<7} "
              f"{r['median_s'] * 1e3:10.2f} ms {r['gflops']:8.1f} GFLOP/s  {vs}", flush=True)
