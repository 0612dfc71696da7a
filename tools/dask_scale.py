"""How fastconv.dask scales, for the README's Dask section. Run it on quiet cores.

    python tools/dask_scale.py                # the full measurement (several minutes)
    python tools/dask_scale.py --tiny         # seconds: a check that it runs

(a) A large batch, chunked by images: conv2d forward and backward (every gradient) on
    a LocalCluster of one worker with two threads, of two workers with one thread each,
    and of one worker with one thread whose fastconv count is 2 (each task on both
    cores), beside fastconv on the whole array in this process on two threads. The
    input is made and persisted on the workers first; only sums come back.
(b) The cost of a task: the same forward pass with the array in one chunk and in many
    small ones, on the threaded scheduler and on two workers; the difference over the
    difference in task count is the overhead per task (halo cuts included).
(c) The example's peak worker memory against the image's size (examples/dask_conv.py's
    first part), on a fresh cluster of two workers for each run, since a worker's peak
    counts from its start.

Every figure is the median of --repeat runs, after one run that is not counted.
Clusters are bound to 127.0.0.1, without a dashboard.
"""
from __future__ import annotations

import argparse
import importlib.util
import time
from pathlib import Path

import dask
import dask.array as da
import numpy as np
from distributed import Client, LocalCluster, wait

import fastconv
import fastconv.dask as fd

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "dask_conv.py"

SIZES = {  # --tiny's, then the full run's
    "batch": [((8, 8, 28, 28), 2), ((64, 64, 56, 56), 8)],  # x shape, images a chunk
    "tasks": [((1, 8, 64, 64), 16), ((1, 16, 512, 512), 32)],  # x shape, chunk side
    "images": [((256, 512), 128), ((2048, 4096, 8192, 16384), 1024)],  # sides, chunk
}


def median_time(fn, repeat: int) -> float:
    fn()  # not counted: first calls compile, warm caches and start pools
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def cluster(workers: int, threads: int) -> LocalCluster:
    return LocalCluster(n_workers=workers, threads_per_worker=threads, processes=True,
                        host="127.0.0.1", dashboard_address=None)


def passes(x: da.Array, w: np.ndarray):
    """Forward and backward of a 3x3 "same" layer, as sums: the tasks all run, little
    comes back."""
    y = fd.conv2d(x, w, pad=1)
    g = fd.conv2d_backward(y, x, w, pad=1)
    return y.sum(), g.x.sum(), g.w, g.b


def batch_rows(shape, per_chunk: int, repeat: int):
    N, C, H, W = shape
    w = np.random.default_rng(1).standard_normal((C, C, 3, 3)).astype(np.float32)
    rows = []
    for label, workers, threads, fastconv_threads in [
            ("1 worker x 2 threads", 1, 2, None), ("2 workers x 1 thread", 2, 1, None),
            ("1 worker x 1 thread, fastconv.set_num_threads(2)", 1, 1, 2)]:
        with cluster(workers, threads) as c, Client(c) as client:
            if fastconv_threads:
                client.run(fastconv.set_num_threads, fastconv_threads)
            x = da.random.default_rng(0).standard_normal(shape, dtype=np.float32,
                                                         chunks=(per_chunk, C, H, W))
            x = client.persist(x)
            wait(x)
            arrays = passes(x, w)
            rows.append((label, median_time(lambda: client.compute(arrays, sync=True),
                                            repeat)))
    x = np.random.default_rng(0).standard_normal(shape, dtype=np.float32)

    def alone():
        y = fastconv.conv2d(x, w, pad=1)
        fastconv.conv2d_backward(y, x, w, pad=1)
    with fastconv.num_threads(2):
        rows.append(("no Dask: fastconv on the whole array, 2 threads",
                     median_time(alone, repeat)))
    print(f"\n(a) conv2d forward + backward, x {shape} float32 in chunks of {per_chunk} "
          f"images, w {w.shape}, pad 1; median of {repeat}")
    print("\n| configuration | time (s) | images/s |\n|---|---:|---:|")
    for label, t in rows:
        print(f"| {label} | {t:.3f} | {N / t:.1f} |")


def _own_tasks(y: da.Array, x: da.Array) -> int:
    return len(y.__dask_graph__()) - len(x.__dask_graph__())


def task_rows(shape, side: int, repeat: int):
    C = shape[1]
    w = np.random.default_rng(1).standard_normal((C, C, 3, 3)).astype(np.float32)
    data = np.random.default_rng(0).standard_normal(shape, dtype=np.float32)
    one, many = (da.from_array(data, chunks=c) for c in (-1, (1, C, side, side)))
    y_one, y_many = fd.conv2d(one, w, pad=1), fd.conv2d(many, w, pad=1)
    n_one, n_many = _own_tasks(y_one, one), _own_tasks(y_many, many)
    rows = []
    t_one = median_time(lambda: dask.compute(y_one.sum(), scheduler="threads"), repeat)
    t_many = median_time(lambda: dask.compute(y_many.sum(), scheduler="threads"), repeat)
    rows.append(("threaded", t_one, t_many, (t_many - t_one) / (n_many - n_one)))
    with cluster(2, 1) as c, Client(c) as client:  # the default: persisted futures need it
        # the input on the workers first, as in (a): the timed graphs carry no data
        one_w, many_w = client.persist([one, many])
        wait([one_w, many_w])
        y_one_w, y_many_w = fd.conv2d(one_w, w, pad=1), fd.conv2d(many_w, w, pad=1)
        t_one = median_time(lambda: client.compute(y_one_w.sum(), sync=True), repeat)
        t_many = median_time(lambda: client.compute(y_many_w.sum(), sync=True), repeat)
        rows.append(("2 workers x 1 thread", t_one, t_many,
                     (t_many - t_one) / (n_many - n_one)))
    print(f"\n(b) conv2d forward, x {shape} float32, w {w.shape}, pad 1: one chunk "
          f"({n_one} tasks) against chunks of {side} x {side} ({n_many} tasks: convolutions "
          f"and halo cuts); median of {repeat}")
    print("\n| scheduler | one chunk (s) | many chunks (s) | per extra task (ms) |\n"
          "|---|---:|---:|---:|")
    for label, t_one, t_many, per_task in rows:
        print(f"| {label} | {t_one:.3f} | {t_many:.3f} | {per_task * 1e3:.2f} |")


def image_rows(sides, chunk: int, repeat: int):
    spec = importlib.util.spec_from_file_location("dask_conv", EXAMPLE)
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    rows = []
    for side in sides:
        runs = []
        for _ in range(repeat):  # a fresh cluster each time: peaks count from a worker's start
            with cluster(2, 1) as c, Client(c) as client:
                runs.append(example.run_image(client, side, min(chunk, side), verbose=False))
        rows.append((side, runs[0]["image_bytes"],
                     float(np.median([r["peak_worker_bytes"] for r in runs])),
                     float(np.median([r["seconds"] for r in runs])),
                     max(r["tile_error"] for r in runs)))
    print(f"\n(c) examples/dask_conv.py's image part, chunks of {chunk} x {chunk}, 2 workers "
          f"x 1 thread; median of {repeat} fresh clusters")
    print("\n| image | image (MiB) | peak of a worker (MiB) | peak / image | time (s) | "
          "tiles' error |\n|---|---:|---:|---:|---:|---:|")
    for side, image, peak, seconds, error in rows:
        print(f"| {side} x {side} x 3 | {image / 2**20:,.0f} | {peak / 2**20:,.0f} | "
              f"{peak / image:.2f} | {seconds:.1f} | {error:.1e} |")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="small sizes, to check it runs")
    parser.add_argument("--repeat", type=int, default=None, help="runs per figure "
                        "(default 5, or 2 with --tiny)")
    parser.add_argument("--parts", default="abc", help="which of (a), (b), (c) to run")
    args = parser.parse_args(argv)
    size = 0 if args.tiny else 1
    repeat = args.repeat or (2 if args.tiny else 5)
    print(f"fastconv {fastconv.__version__}, dask {dask.__version__}, "
          f"{fastconv._threads.available_cores()} cores")
    if "a" in args.parts:
        batch_rows(*SIZES["batch"][size], repeat)
    if "b" in args.parts:
        task_rows(*SIZES["tasks"][size], repeat)
    if "c" in args.parts:
        image_rows(*SIZES["images"][size], repeat)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
