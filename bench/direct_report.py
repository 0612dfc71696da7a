"""Per-layer table for the direct engine against PyTorch, in one run (issue 4).

    flock /tmp/fastconv-bench.lock python bench/direct_report.py [--layers a,b] [--threads 2]

For each suite layer and pass (forward, grad_input, grad_weight) it prints the median
time of the direct engine and of PyTorch's CPU kernels (F.conv2d, nn.grad.conv2d_input,
nn.grad.conv2d_weight), the direct engine's GFLOP/s, the ratio torch_time / our_time,
and the share of the SGEMM ceiling (a large float32 a @ b, same run). Geometric means
close the table. ``--scaling`` adds the 1-thread median and the 1 -> n thread speedup.
"""
from __future__ import annotations

import argparse
import math
import time

import numpy as np

import fastconv
from fastconv import _direct
from fastconv._torch_peer import torch_passes
from fastconv.suite import LAYERS, SUITE

PASSES = ("forward", "grad_input", "grad_weight")


def median_time(fn, repeats, min_time=0.2):
    fn()  # warm-up: first-touch page faults, lazy imports
    times = []
    t_end = time.perf_counter() + min_time
    while len(times) < repeats or (time.perf_counter() < t_end and len(times) < 50):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def sgemm_ceiling(n=2048):
    a, b = np.random.default_rng(0).standard_normal((2, n, n)).astype(np.float32)
    return 2 * n**3 / median_time(lambda: a @ b, 5) / 1e9


def calls(layer, dtype, torch):
    rng = np.random.default_rng(0)
    x = rng.standard_normal(layer.x_shape).astype(dtype)
    w = rng.standard_normal(layer.w_shape).astype(dtype)
    kw = dict(stride=layer.stride, pad=layer.pad, groups=layer.groups)
    gy = rng.standard_normal(fastconv.output_shape(x, w, **kw)).astype(dtype)
    ours = {
        "forward": lambda: fastconv.conv2d(x, w, backend="direct", **kw),
        "grad_input": lambda: fastconv.conv2d_backward(gy, x, w, wrt=("x",), backend="direct", **kw),
        "grad_weight": lambda: fastconv.conv2d_backward(gy, x, w, wrt=("w",), backend="direct", **kw),
    }
    theirs = {}
    if torch is not None:
        theirs = torch_passes(torch, x, w, gy, layer.stride, layer.pad, layer.groups)
    flops = 2 * gy.size * int(np.prod(layer.w_shape[1:]))
    return ours, theirs, flops


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layers", default="all")
    ap.add_argument("--passes", default=",".join(PASSES))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--no-torch", action="store_true")
    ap.add_argument("--scaling", action="store_true",
                    help="also time 1 thread: its median and the 1 -> n speedup")
    args = ap.parse_args(argv)
    torch = None
    if not args.no_torch:
        import torch
        torch.set_num_threads(args.threads)
    fastconv.set_num_threads(args.threads)
    layers = SUITE if args.layers == "all" else [LAYERS[n] for n in args.layers.split(",")]
    passes = args.passes.split(",")
    ceiling = sgemm_ceiling()
    info = _direct.simd_info()
    print(f"direct engine SIMD: {info['simd']} ({info['vector_bits']}-bit); supported "
          f"{', '.join(info['supported'])}; threads {args.threads}; dtype {args.dtype}; "
          f"SGEMM ceiling {ceiling:.1f} GFLOP/s")
    print(f"{'layer':16s} {'pass':11s} {'ours ms':>9s} {'torch ms':>9s} {'GFLOP/s':>8s} "
          f"{'ratio':>6s} {'ceil%':>6s}" + ("  1t ms   1->n" if args.scaling else ""))
    ratios = {p: [] for p in passes}
    for layer in layers:
        ours, theirs, flops = calls(layer, np.dtype(args.dtype), torch)
        for p in passes:
            t_ours = median_time(ours[p], args.repeats)
            t_torch = median_time(theirs[p], args.repeats) if theirs else float("nan")
            ratio = t_torch / t_ours
            if theirs:
                ratios[p].append(ratio)
            gf = flops / t_ours / 1e9
            line = (f"{layer.name:16s} {p:11s} {t_ours * 1e3:9.3f} {t_torch * 1e3:9.3f} "
                    f"{gf:8.1f} {ratio:6.2f} {100 * gf / ceiling:5.1f}%")
            if args.scaling:
                with fastconv.num_threads(1):
                    t1 = median_time(ours[p], args.repeats)
                line += f" {t1 * 1e3:7.3f}  {t1 / t_ours:4.2f}x"
            print(line, flush=True)
    for p in passes:
        if ratios[p]:
            gm = math.exp(sum(map(math.log, ratios[p])) / len(ratios[p]))
            print(f"geometric mean torch/ours, {p}: {gm:.2f}")


if __name__ == "__main__":
    main()
