"""What the framework bridges add per call: fastconv.torch.conv2d (the eager custom
operator) against fastconv.conv2d on NumPy views of the same tensors, on a tiny layer
where the convolution itself costs little, forward only and forward + backward.

    python tools/bridge_overhead.py [--repeat 2000] [--threads 1]

Prints a markdown table of medians (microseconds). The target: the bridge adds at most
20 us per call. Run it on quiet cores; it measures one layer, 1x8x8x8 3x3 by default.
"""
from __future__ import annotations

import argparse
import statistics
import time

import numpy as np


def median_us(fn, repeat: int) -> float:
    for _ in range(max(10, repeat // 10)):  # warm-up: compile, pack, tune
        fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter_ns()
        fn()
        times.append(time.perf_counter_ns() - t0)
    return statistics.median(times) / 1e3


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=2000)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--shape", default="1,8,8,8", help="N,C,H,W (K = C, 3x3, pad 1)")
    args = ap.parse_args(argv)

    import torch

    import fastconv
    import fastconv.torch as ft

    torch.set_num_threads(args.threads)
    N, C, H, W = map(int, args.shape.split(","))
    x = torch.randn(N, C, H, W)
    w = torch.randn(C, C, 3, 3)
    b = torch.randn(C)
    xn, wn, bn = x.numpy(), w.numpy(), b.numpy()
    gy = torch.randn(N, C, H, W)
    gyn = gy.numpy()
    xg = x.clone().requires_grad_()
    wg = w.clone().requires_grad_()
    bg = b.clone().requires_grad_()

    def np_fwd():
        fastconv.conv2d(xn, wn, 1, 1, bias=bn)

    def np_fwd_bwd():
        fastconv.conv2d(xn, wn, 1, 1, bias=bn)
        fastconv.conv2d_backward(gyn, xn, wn, 1, 1)

    def torch_fwd():
        ft.conv2d(x, w, b, 1, 1)

    def torch_fwd_bwd():
        ft.conv2d(xg, wg, bg, 1, 1).backward(gy)

    def torch_ref():
        torch.nn.functional.conv2d(x, w, b, 1, 1)

    rows = []
    with fastconv.num_threads(args.threads):
        base_f = median_us(np_fwd, args.repeat)
        bridge_f = median_us(torch_fwd, args.repeat)
        base_b = median_us(np_fwd_bwd, args.repeat)
        bridge_b = median_us(torch_fwd_bwd, args.repeat)
        ref = median_us(torch_ref, args.repeat)
    rows.append(("forward", base_f, bridge_f))
    rows.append(("forward + backward", base_b, bridge_b))
    print(f"layer {N}x{C}x{H}x{W}, {C} filters 3x3 pad 1, float32, {args.threads} thread(s), "
          f"median of {args.repeat}; torch.nn.functional.conv2d forward: {ref:.1f} us\n")
    print("| pass | fastconv on NumPy (us) | fastconv.torch (us) | added (us) |")
    print("|---|---:|---:|---:|")
    for name, base, bridge in rows:
        print(f"| {name} | {base:.1f} | {bridge:.1f} | {bridge - base:+.1f} |")
    try:
        import jax  # noqa: F401
    except ImportError:
        return
    _jax_rows(xn, wn, args.repeat, args.threads)


def _jax_rows(xn, wn, repeat, threads) -> None:
    """The JAX bridge under jit: pure_callback's cost over the NumPy call."""
    import jax
    import jax.numpy as jnp

    import fastconv
    import fastconv.jax as fj

    f = jax.jit(lambda x, w: fj.conv2d(x, w, 1, 1))
    xj, wj = jnp.asarray(xn), jnp.asarray(wn)

    def jax_fwd():
        f(xj, wj).block_until_ready()

    with fastconv.num_threads(threads):
        base = median_us(lambda: fastconv.conv2d(xn, wn, 1, 1), repeat)
        bridge = median_us(jax_fwd, repeat)
    print(f"| jax forward (jit) | {base:.1f} | {bridge:.1f} | {bridge - base:+.1f} |")


if __name__ == "__main__":
    main()
