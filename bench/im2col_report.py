"""Per-layer table for the im2col engine against PyTorch, with the im2col share of time.

    flock /tmp/fastconv-bench.lock python bench/im2col_report.py [--layers a,b] [--passes ...]
        [--threads 2] [--repeat 7] [--unbounded] [--scaling] [--json out.json]

For each suite layer and pass (float32, NCHW): our median time and GFLOP/s, PyTorch's
(``conv2d``, ``torch.nn.grad.conv2d_input`` / ``conv2d_weight``) in the same run, the
ratio torch time / our time, and the split of our time: the same pass run with only
its unrolling (im2col, col2im, reorders; ``im2col.measure_parts(UNROLL)``) and with
only its BLAS products (``PRODUCT``), each as a share of the whole pass. The two add up
to more than 100% by what overlapping them in cache saves, or less by the fixed costs
(allocation, the subnormal scan, thread start-up).

``--unbounded`` adds a column with the workspace cap lifted (cap / unbounded speed);
``--scaling`` adds the 1-thread time and the 1->2 thread speedup. The SGEMM ceiling,
a large float32 ``a @ b`` on the same cores, is printed first.
"""
from __future__ import annotations

import argparse
import json
import math

import numpy as np

import fastconv
from fastconv._torch_peer import torch_passes
from fastconv.bench import _block
from fastconv.engines import im2col
from fastconv.suite import LAYERS, SUITE

PASSES = ("forward", "grad_input", "grad_weight")


def median_time(fn, repeat):
    """Median of ``repeat`` back-to-back calls, warmed up as ``fastconv bench`` does
    (after one warm-up call only, batch1_c4 forward measured 6 ms against 2)."""
    fn()  # compilation, first-touch page faults
    return float(np.median(_block(fn, repeat)))


def sgemm_ceiling(repeat=5, n=2048):
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((2, n, n), dtype=np.float32)
    return 2 * n**3 / median_time(lambda: a @ b, repeat) / 1e9


def arrays(layer):
    rng = np.random.default_rng(0)
    x = rng.standard_normal(layer.x_shape, dtype=np.float32)
    w = rng.standard_normal(layer.w_shape, dtype=np.float32)
    gy = rng.standard_normal(fastconv.output_shape(x, w, layer.stride, layer.pad,
                                                   groups=layer.groups), dtype=np.float32)
    return x, w, gy


def ours(layer, pass_name, x, w, gy):
    kw = dict(stride=layer.stride, pad=layer.pad, groups=layer.groups, backend="im2col")
    if pass_name == "forward":
        return lambda: fastconv.conv2d(x, w, **kw)
    wrt = ("x",) if pass_name == "grad_input" else ("w",)
    return lambda: fastconv.conv2d_backward(gy, x, w, wrt=wrt, **kw)


def theirs(torch, layer, pass_name, x, w, gy):
    return torch_passes(torch, x, w, gy, layer.stride, layer.pad, layer.groups)[pass_name]


def parts_times(layer, fn, repeat):
    """(unroll-only, products-only) medians, or None where the pass has no unrolling
    (pointwise and whole-window layers are one BLAS product on the input as it is)."""
    pointwise = layer.R == layer.S == 1 and layer.stride == 1 and layer.pad == 0
    if pointwise or (layer.R == layer.H and layer.S == layer.W and layer.pad == 0):
        return None
    with im2col.measure_parts(im2col.UNROLL):
        tu = median_time(fn, repeat)
    with im2col.measure_parts(im2col.PRODUCT):
        tp = median_time(fn, repeat)
    return tu, tp


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layers", default="all")
    ap.add_argument("--passes", default=",".join(PASSES))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--unbounded", action="store_true", help="also time with no workspace cap")
    ap.add_argument("--scaling", action="store_true", help="also time on 1 thread")
    ap.add_argument("--no-torch", action="store_true")
    ap.add_argument("--json", help="write the rows to this file")
    args = ap.parse_args()

    layers = SUITE if args.layers == "all" else [LAYERS[n] for n in args.layers.split(",")]
    passes = args.passes.split(",")
    torch = None
    if not args.no_torch:
        try:
            import torch
        except ImportError:
            pass
    fastconv.set_num_threads(args.threads)
    if torch is not None:
        torch.set_num_threads(args.threads)
    ceiling = sgemm_ceiling()
    print(f"SGEMM ceiling ({args.threads} threads, 2048^3 float32): {ceiling:.1f} GFLOP/s; "
          f"workspace cap {fastconv.get_workspace_limit() / 2**20:.0f} MiB")
    head = (f"{'layer':16} {'pass':11} {'ours ms':>8} {'GF/s':>6} {'%ceil':>5} "
            f"{'torch GF/s':>10} {'ratio':>6} {'unroll':>7} {'product':>7}")
    if args.unbounded:
        head += f" {'cap/unb':>7}"
    if args.scaling:
        head += f" {'1->2 thr':>8}"
    print(head)
    rows = []
    for layer in layers:
        x, w, gy = arrays(layer)
        flops = 2 * math.prod(gy.shape) * math.prod(layer.w_shape[1:])
        for p in passes:
            fn = ours(layer, p, x, w, gy)
            t = median_time(fn, args.repeat)
            row = dict(layer=layer.name, pass_=p, ms=t * 1e3, gflops=flops / t / 1e9,
                       ceiling_share=flops / t / 1e9 / ceiling)
            parts = parts_times(layer, fn, args.repeat)
            if parts is not None:
                row.update(unroll_share=parts[0] / t, product_share=parts[1] / t)
            if torch is not None:
                tt = median_time(theirs(torch, layer, p, x, w, gy), args.repeat)
                row.update(torch_gflops=flops / tt / 1e9, ratio=tt / t)
            line = (f"{layer.name:16} {p:11} {t * 1e3:8.2f} {row['gflops']:6.1f} "
                    f"{100 * row['ceiling_share']:5.1f} "
                    f"{row.get('torch_gflops', float('nan')):10.1f} "
                    f"{row.get('ratio', float('nan')):6.2f} "
                    f"{100 * row.get('unroll_share', float('nan')):6.1f}% "
                    f"{100 * row.get('product_share', float('nan')):6.1f}%")
            if args.unbounded:
                with fastconv.workspace_limit(2**62):
                    tu = median_time(fn, args.repeat)
                row["cap_vs_unbounded"] = tu / t
                line += f" {tu / t:7.2f}"
            if args.scaling:
                with fastconv.num_threads(1):
                    t1 = median_time(fn, max(3, args.repeat // 2))
                row["speedup_1to2"] = t1 / t
                line += f" {t1 / t:8.2f}"
            print(line, flush=True)
            rows.append(row)
    for p in passes:
        ratios = [r["ratio"] for r in rows if r["pass_"] == p and "ratio" in r]
        if ratios:
            gm = math.exp(sum(map(math.log, ratios)) / len(ratios))
            print(f"geometric mean torch/ours, {p}: {gm:.2f} over {len(ratios)} layers")
        cu = [r["cap_vs_unbounded"] for r in rows if r["pass_"] == p and "cap_vs_unbounded" in r]
        if cu:
            print(f"geometric mean cap/unbounded speed, {p}: "
                  f"{math.exp(sum(map(math.log, cu)) / len(cu)):.3f} (min {min(cu):.3f})")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(dict(ceiling=ceiling, threads=args.threads, rows=rows), f, indent=1)


if __name__ == "__main__":
    main()
