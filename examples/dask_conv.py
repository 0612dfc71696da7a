"""fastconv.dask on a cluster: a 16384 x 16384 RGB image through a stack of layers in
spatial chunks, and the digits network of train_digits.py trained data-parallel.

    python examples/dask_conv.py                          # a LocalCluster of 2 workers
    python examples/dask_conv.py --scheduler tcp://scheduler:8786    # a real cluster
    python examples/dask_conv.py --size 1024 --chunk 256 --epochs 2  # a quick run

Part 1. The image (3 x size x size float32; 3 GiB at 16384) is made on the workers, a
chunk at a time, by Dask's random generator (each chunk from its own seed, so the same
on every run), and is never whole anywhere. It goes through

    conv 3->8, 3x3, pad 1 -> ReLU -> conv 8->8, 3x3, stride 2, pad 1 -> ReLU
    -> conv 8->3, 3x3, pad 1                                         (3, size/2, size/2)

in chunks of chunk x chunk pixels, each with the halo its windows need from its
neighbours. What comes back is small: the output's mean per channel and a few output
tiles, which are checked against fastconv.conv2d run on this machine on the crop of the
image those tiles read. Printed: the time, the largest peak memory of any worker (its
process's peak resident size, since it started: on a cluster you connect to, that
includes earlier work) beside the image's size, and the tiles' error.

Part 2. train_digits.py's network and training (same seed, initial weights, batches,
SGD with momentum), each step's batch split into chunks across the workers: the forward
and backward passes are fastconv.dask's, ReLU, pooling and the loss Dask's, and each
gradient is summed over the chunks by a tree (split_every=2). The same training on this
machine alone (train_digits.train) gives the accuracy printed beside it.

Needs fastconv[dask]; part 2 also scikit-learn. On a real cluster, fastconv (with the
dask extra) must be installed on every worker.
"""
from __future__ import annotations

import argparse
import importlib.util
import resource
import sys
import time
from pathlib import Path

import dask
import dask.array as da
import numpy as np
from distributed import Client, LocalCluster

import fastconv
import fastconv.dask as fd

# (output channels, kernel, stride, pad) of each layer; ReLU between them.
LAYERS = [(8, 3, 1, 1), (8, 3, 2, 1), (3, 3, 1, 1)]
# Input rows a crop holds beyond its tile's: more than the stack's reach (an output at
# p reads input rows 2p - 4 .. 2p + 4), and even, so that the crop's stride-2 grid is
# the image's.
MARGIN = 16


def make_layers(seed: int, channels: int = 3):
    """[(w, b, stride, pad)]: He-initialised float32 filters (OIHW) and biases."""
    rng = np.random.default_rng(seed)
    layers = []
    for k, r, stride, pad in LAYERS:
        w = rng.standard_normal((k, channels, r, r)) * np.sqrt(2.0 / (channels * r * r))
        layers.append((w.astype(np.float32), rng.uniform(-0.1, 0.1, k).astype(np.float32),
                       stride, pad))
        channels = k
    return layers


def stack(x, layers, conv2d):
    """The layers on x: ``conv2d`` is fastconv.dask.conv2d (Dask) or fastconv.conv2d."""
    for i, (w, b, stride, pad) in enumerate(layers):
        x = conv2d(x, w, stride, pad, bias=b)
        if i < len(layers) - 1:
            x = np.maximum(x, 0)  # a Dask array stays one (NumPy's ufunc protocol)
    return x


def make_image(size: int, chunk: int, seed: int) -> da.Array:
    """(1, 3, size, size) float32 in [0, 1), made chunk by chunk where the tasks run."""
    return da.random.default_rng(seed).random((1, 3, size, size), dtype=np.float32,
                                               chunks=(1, 3, chunk, chunk))


def tile_corners(out_size: int, tile: int, seed: int):
    """Top-left corners of the output tiles to check: two corners of the image and two
    places inside it."""
    last = out_size - tile
    inner = np.random.default_rng(seed).integers(0, last + 1, size=(2, 2)).tolist()
    return [(0, 0), (last, last)] + [tuple(p) for p in inner]


def worker_peak_bytes() -> int:
    """This process's peak resident size (ru_maxrss is in KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


def run_image(client, size=16384, chunk=512, seed=0, tile=64, verbose=True) -> dict:
    """Part 1; returns seconds, peak_worker_bytes, image_bytes and tile_error (the
    largest error of a checked tile, relative to that tile's largest value)."""
    layers = make_layers(seed)
    x = make_image(size, chunk, seed)
    y = stack(x, layers, fd.conv2d)  # (1, 3, size/2, size/2), lazy
    tile = min(tile, y.shape[2])
    corners = tile_corners(y.shape[2], tile, seed)
    crops, tiles = [], []
    for a, c in corners:
        r0, c0 = max(0, 2 * a - MARGIN), max(0, 2 * c - MARGIN)
        crops.append(x[:, :, r0:2 * (a + tile) + MARGIN, c0:2 * (c + tile) + MARGIN])
        tiles.append(y[:, :, a:a + tile, c:c + tile])
    start = time.perf_counter()
    mean, *small = client.compute([y.mean(axis=(0, 2, 3)), *tiles, *crops], sync=True)
    seconds = time.perf_counter() - start
    errors = []
    for (a, c), got, crop in zip(corners, small[:len(tiles)], small[len(tiles):]):
        local = stack(crop, layers, fastconv.conv2d)  # the crop's own grid, offset by r0/2
        r, q = a - max(0, 2 * a - MARGIN) // 2, c - max(0, 2 * c - MARGIN) // 2
        expected = local[:, :, r:r + tile, q:q + tile]
        errors.append(float(np.abs(got - expected).max() / max(np.abs(expected).max(), 1e-30)))
    peak = max(client.run(worker_peak_bytes).values())
    result = dict(seconds=seconds, peak_worker_bytes=peak, image_bytes=x.nbytes,
                  tile_error=max(errors), mean=mean)
    if verbose:
        print(f"image {size} x {size} x 3 float32 ({x.nbytes / 2**20:,.0f} MiB) in chunks of "
              f"{chunk} x {chunk}, {len(x.chunks[2]) * len(x.chunks[3])} of them, through "
              f"{len(layers)} layers: {seconds:.1f} s")
        print(f"peak memory of a worker: {peak / 2**20:,.0f} MiB "
              f"({peak / x.nbytes:.0%} of the image)")
        print(f"{len(corners)} output tiles of {tile} x {tile} against fastconv.conv2d on "
              f"their crops: largest relative error {max(errors):.1e}")
    return result


def load_train_digits():
    path = Path(__file__).resolve().with_name("train_digits.py")
    spec = importlib.util.spec_from_file_location("train_digits", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def loss_and_grads(net, xb: da.Array, labels: np.ndarray, split_every: int):
    """train_digits.Net's forward and backward passes on a batch chunked along N, as
    Dask arrays: (mean loss, [grad w1, grad b1, grad w2, grad b2, grad w3, grad b3])."""
    c1, c2, fc = net.layers
    n = xb.shape[0]
    a1 = np.maximum(fd.conv2d(xb, c1.weight, 1, 1, bias=c1.bias), 0)   # (N, 16, 8, 8)
    windows = a1.reshape(n, 16, 4, 2, 4, 2)
    p1 = windows.max(axis=(3, 5))                                       # (N, 16, 4, 4)
    a2 = np.maximum(fd.conv2d(p1, c2.weight, 1, 1, bias=c2.bias), 0)   # (N, 32, 4, 4)
    logits = fd.conv2d(a2, fc.weight, bias=fc.bias).reshape(n, 10)     # (N, 10, 1, 1) -> (N, 10)
    # softmax_cross_entropy, with the labels one-hot (the chunks index no NumPy array)
    onehot = da.from_array(np.eye(10, dtype=np.float32)[labels], chunks=(xb.chunks[0], 10))
    z = logits - logits.max(axis=1, keepdims=True)
    p = np.exp(z)
    p = p / p.sum(axis=1, keepdims=True)
    loss = -(onehot * np.log(p + 1e-12)).sum() / n
    grad_logits = (p - onehot) / n
    kw = dict(split_every=split_every)
    g3 = fd.conv2d_backward(grad_logits.reshape(n, 10, 1, 1), a2, fc.weight, **kw)
    g2 = fd.conv2d_backward(g3.x * (a2 > 0), p1, c2.weight, 1, 1, **kw)
    mask = windows == p1[:, :, :, None, :, None]  # max-pool: ties share the gradient
    g_a1 = (mask * g2.x[:, :, :, None, :, None]).reshape(a1.shape)
    g1 = fd.conv2d_backward(g_a1 * (a1 > 0), xb, c1.weight, 1, 1, wrt=("w", "b"), **kw)
    return loss, [g1.w, g1.b, g2.w, g2.b, g3.w, g3.b]


def train_data_parallel(client, epochs=10, seed=0, batch_size=64, lr=0.05, momentum=0.9,
                        splits=4, split_every=2, verbose=True) -> dict:
    """Part 2: train_digits's training with each batch in ``splits`` chunks on the
    cluster; returns dict(losses, accuracy, seconds)."""
    td = load_train_digits()
    start = time.perf_counter()
    x_train, x_test, y_train, y_test = td.load(seed)
    rng = np.random.default_rng(seed)  # the draws of train_digits._train, in its order
    net = td.Net(rng)
    params = [pair for layer in net.layers for pair in layer.parameters()]
    velocity = [np.zeros_like(p) for p, _ in params]
    losses = []
    for epoch in range(epochs):
        order = rng.permutation(len(x_train))
        total = 0.0
        for i in range(0, len(order), batch_size):
            idx = order[i:i + batch_size]
            xb = da.from_array(x_train[idx], chunks=(-(-len(idx) // splits), 1, 8, 8))
            loss, grads = loss_and_grads(net, xb, y_train[idx], split_every)
            loss, *grads = client.compute([loss, *grads], sync=True)
            for (p, _), g, vel in zip(params, grads, velocity):
                vel *= momentum
                vel -= lr * g
                p += vel
            total += float(loss) * len(idx)
        losses.append(total / len(x_train))
        if verbose:
            print(f"epoch {epoch + 1:3d}/{epochs}  loss {losses[-1]:.4f}", flush=True)
    accuracy = float((net.predict(x_test) == y_test).mean())
    return dict(losses=losses, accuracy=accuracy, seconds=time.perf_counter() - start)


def run_training(client, epochs, seed, batch_size, verbose=True) -> dict:
    """Part 2 and the same training on this machine alone; returns both results."""
    spread = train_data_parallel(client, epochs, seed, batch_size, verbose=verbose)
    alone = load_train_digits().train(epochs=epochs, seed=seed, batch_size=batch_size,
                                      verbose=False)
    if verbose:
        print(f"test accuracy: {spread['accuracy']:.2%} data-parallel on the cluster "
              f"({spread['seconds']:.1f} s), {alone['accuracy']:.2%} on one machine "
              f"({alone['seconds']:.1f} s)")
    return dict(cluster=spread, one_machine=alone)


def make_client(args) -> tuple[Client, LocalCluster | None]:
    if args.scheduler:
        return Client(args.scheduler), None
    # Loopback only, no dashboard: nothing listens beyond this machine.
    cluster = LocalCluster(n_workers=args.workers, threads_per_worker=args.threads_per_worker,
                           processes=True, host="127.0.0.1", dashboard_address=None)
    return Client(cluster), cluster


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scheduler", help="address of a running scheduler, e.g. "
                        "tcp://scheduler:8786 (default: start a LocalCluster)")
    parser.add_argument("--workers", type=int, default=2, help="LocalCluster's workers")
    parser.add_argument("--threads-per-worker", type=int, default=1)
    parser.add_argument("--size", type=int, default=16384, help="image side, pixels "
                        "(even; 0 skips the image)")
    # 512: a worker's peak was 23% of the 16384^2 image (1024: 51%, in 0.45x the time)
    parser.add_argument("--chunk", type=int, default=512, help="chunk side, pixels")
    # 10 epochs of 23 steps: each step is a graph some 30 tasks deep, and on a cluster
    # every level is a round trip to the scheduler (about half a second a step on 2 cores).
    parser.add_argument("--epochs", type=int, default=10, help="0 skips the training")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    client, cluster = make_client(args)
    try:
        print(f"{len(client.scheduler_info()['workers'])} workers; "
              f"fastconv {fastconv.__version__}, dask {dask.__version__}")
        if args.size:
            run_image(client, args.size, args.chunk, args.seed)
        if args.epochs:
            run_training(client, args.epochs, args.seed, args.batch_size)
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
