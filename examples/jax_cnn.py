"""Train a small CNN in JAX with its convolutions on fastconv (``fastconv.jax``), and
the same model on ``jax.lax.conv_general_dilated``, printing the step time of each.

    python examples/jax_cnn.py [--steps 30] [--batch 64] [--quick]

The task: tell images of horizontal stripes from vertical ones, in noise (made here,
no download). The model (NHWC, float32):

    x (N, 32, 32, 1)
    -> conv 3x3 1->16, SAME -> ReLU -> conv 3x3 16->32, stride 2, SAME -> ReLU
    -> conv 3x3 32->32, stride 2, SAME -> ReLU -> mean over H, W -> dense 32->2
    -> softmax cross-entropy, plain SGD, one jitted step

Both runs start from the same parameters and see the same batches, so their losses
agree to float32 rounding. Needs JAX (``pip install ".[jax]"``).
"""
from __future__ import annotations

import argparse
import functools
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

import fastconv.jax as fj

DN = ("NHWC", "HWIO", "NHWC")
LAYERS = [(1, 16, 1), (16, 32, 2), (32, 32, 2)]  # (C, K, stride), 3x3 each


def conv_fn(name: str):
    """lax.conv_general_dilated's signature, on fastconv or on XLA."""
    return fj.conv_general_dilated if name == "fastconv" else lax.conv_general_dilated


def init(seed: int = 0):
    rng = np.random.default_rng(seed)
    params = [(rng.standard_normal((3, 3, c, k)).astype(np.float32) * np.sqrt(2 / (9 * c)),
               np.zeros(k, np.float32)) for c, k, _ in LAYERS]
    dense = (rng.standard_normal((LAYERS[-1][1], 2)).astype(np.float32) * 0.1,
             np.zeros(2, np.float32))
    return params, dense


def forward(conv, params, dense, x):
    for (w, b), (_, _, stride) in zip(params, LAYERS):
        x = jax.nn.relu(conv(x, w, (stride, stride), "SAME", dimension_numbers=DN) + b)
    return x.mean(axis=(1, 2)) @ dense[0] + dense[1]


def loss_fn(conv, params, dense, x, y):
    logits = forward(conv, params, dense, x)
    return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), y[:, None], 1))


@functools.partial(jax.jit, static_argnums=0)
def step(conv_name, params, dense, x, y, lr=0.1):
    loss, (gp, gd) = jax.value_and_grad(
        functools.partial(loss_fn, conv_fn(conv_name)), (0, 1))(params, dense, x, y)
    params = jax.tree.map(lambda p, g: p - lr * g, params, gp)
    dense = jax.tree.map(lambda p, g: p - lr * g, dense, gd)
    return params, dense, loss


def batch(rng, n: int, size: int = 32):
    """Stripes, horizontal (label 0) or vertical (1), of random period and phase, in
    noise."""
    y = rng.integers(0, 2, n)
    period = rng.integers(3, 8, n)[:, None, None]
    phase = rng.uniform(0, 2 * np.pi, n)[:, None, None]
    r = np.arange(size)[None, :, None]
    c = np.arange(size)[None, None, :]
    along = np.where(y[:, None, None] == 0, r, c)
    x = np.sin(2 * np.pi * along / period + phase) + 0.5 * rng.standard_normal((n, size, size))
    return x[..., None].astype(np.float32), y.astype(np.int32)


def train(conv_name: str, steps: int, n: int, size: int = 32, warmup: int = 2, seed: int = 0):
    """(losses, median step seconds) of ``steps`` SGD steps after ``warmup`` (untimed:
    compilation)."""
    params, dense = init(seed)
    rng = np.random.default_rng(seed)
    batches = [batch(rng, n, size) for _ in range(warmup + steps)]
    losses, times = [], []
    for i, (x, y) in enumerate(batches):
        t0 = time.perf_counter()
        params, dense, loss = step(conv_name, params, dense, x, y)
        loss = float(loss)  # waits for the step
        if i >= warmup:
            times.append(time.perf_counter() - t0)
        losses.append(loss)
    return losses, statistics.median(times)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--quick", action="store_true", help="a tiny run (tests): 5 steps of 16")
    args = ap.parse_args(argv)
    if args.quick:
        args.steps, args.batch = min(args.steps, 5), 16
    out = {}
    for name in ("lax", "fastconv"):
        losses, t = train(name, args.steps, args.batch)
        out[name] = (losses, t)
        print(f"{name:8s} loss {losses[0]:.3f} -> {losses[-1]:.3f}, {t * 1e3:.2f} ms/step")
    print(f"fastconv.jax: {out['lax'][1] / out['fastconv'][1]:.2f}x the lax step")
    return out


if __name__ == "__main__":
    main()
