"""fastconv.dask on a distributed LocalCluster of two worker processes, started by
nannies and bound to 127.0.0.1 with no dashboard, and on the processes scheduler:
every chunking of tests/test_dask.py against fastconv, one thread per task in a
nanny's worker, and a worker killed in the middle of a computation changing nothing.
"""
import os
import signal
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context

import numpy as np
import pytest

da = pytest.importorskip("dask.array")
distributed = pytest.importorskip("distributed")
import cloudpickle  # noqa: E402
import dask  # noqa: E402
from conftest import assert_close  # noqa: E402
from test_dask import CASES, TRANSPOSED, _check_conv2d, _check_transposed, _problem  # noqa: E402

import fastconv  # noqa: E402
import fastconv.dask as fd  # noqa: E402

# The workers unpickle this module's functions by value: they cannot import tests/.
cloudpickle.register_pickle_by_value(sys.modules[__name__])


def _cluster(**kwargs):
    return distributed.LocalCluster(host="127.0.0.1", n_workers=2, threads_per_worker=1,
                                    processes=True, dashboard_address=None, **kwargs)


@pytest.fixture(scope="module")
def client():
    with _cluster() as cluster, distributed.Client(cluster, set_as_default=False) as c:
        yield c


@pytest.fixture(scope="module")
def process_pool():
    """The processes scheduler's pool, started once (spawned: fork after fastconv's thread
    pools would give each child one thread, fastconv/_threads.py)."""
    with ProcessPoolExecutor(2, mp_context=get_context("spawn")) as pool:
        yield pool


def _on(client):
    return lambda *arrays: client.compute(list(arrays), sync=True)


def _on_processes(pool):
    return lambda *arrays: dask.compute(*arrays, scheduler="processes", pool=pool)


# The chunkings the targets name (the others of test_dask.py's cases differ in options,
# not in how chunks meet, and run on the threaded scheduler only).
CHUNKINGS = ["batch", "spatial uneven", "thinner than reach", "stride 2 same", "stride 3",
             "dilation 2 full"]


@pytest.mark.parametrize("case", CHUNKINGS)
def test_conv2d_on_the_cluster(client, case, rng):
    x_shape, w_shape, chunks, opts = CASES[case]
    x, w, b = _problem(rng, x_shape, w_shape)
    _check_conv2d(x, w, b, chunks, compute=_on(client), **opts)


@pytest.mark.parametrize("case", ["batch", "spatial", "thin chunks, dilation"])
def test_conv_transpose2d_on_the_cluster(client, case, rng):
    x_shape, w_shape, chunks, opts = TRANSPOSED[case]
    x, w, _ = _problem(rng, x_shape, w_shape, bias=False)
    b = rng.standard_normal(w_shape[1] * opts.get("groups", 1))
    _check_transposed(x, w, b, chunks, compute=_on(client), **opts)


@pytest.mark.parametrize("case", CHUNKINGS)
def test_conv2d_on_the_processes_scheduler(process_pool, case, rng):
    x_shape, w_shape, chunks, opts = CASES[case]
    x, w, b = _problem(rng, x_shape, w_shape)
    _check_conv2d(x, w, b, chunks, compute=_on_processes(process_pool), **opts)


@pytest.mark.parametrize("case", ["spatial", "thin chunks, dilation"])
def test_conv_transpose2d_on_the_processes_scheduler(process_pool, case, rng):
    x_shape, w_shape, chunks, opts = TRANSPOSED[case]
    x, w, _ = _problem(rng, x_shape, w_shape, bias=False)
    _check_transposed(x, w, None, chunks, compute=_on_processes(process_pool), **opts)


def test_float32_conv1d_on_the_cluster(client, rng):
    x = rng.standard_normal((4, 3, 40)).astype(np.float32)
    w = rng.standard_normal((5, 3, 4)).astype(np.float32)
    xd = da.from_array(x, chunks=(2, 3, 7))
    y = fd.conv1d(xd, w, 2, "same")
    gy = rng.standard_normal(y.shape).astype(np.float32)
    got = client.compute([y, *fd.conv1d_backward(da.from_array(gy, chunks=y.chunks), xd, w,
                                                 2, "same")], sync=True)
    assert_close(got[0], fastconv.conv1d(x, w, 2, "same"), np.float32)
    for a, e in zip(got[1:], fastconv.conv1d_backward(gy, x, w, 2, "same")):
        assert_close(a, e, np.float32)


# --- threads in a nanny's worker -------------------------------------------------------

def _record_kernel_threads():
    """In a worker: fastconv.conv2d notes the thread count each call runs on."""
    from fastconv._threads import kernel_threads
    from fastconv.dask import _tasks
    conv2d = getattr(_tasks, "_unrecorded", fastconv.conv2d)
    _tasks._unrecorded, _tasks._seen = conv2d, []

    def recording(*args, **kwargs):
        _tasks._seen.append(kernel_threads())
        return conv2d(*args, **kwargs)
    fastconv.conv2d = recording


def _recorded():
    from fastconv.dask import _tasks
    fastconv.conv2d = _tasks._unrecorded
    return _tasks._seen


def _threads_seen(client, n_blocks=6):
    client.run(_record_kernel_threads)
    x = da.random.default_rng(0).standard_normal((n_blocks, 8, 24, 24), chunks=(1, 8, 24, 24))
    client.compute(fd.conv2d(x, np.ones((8, 8, 3, 3)), pad=1), sync=True)
    return [t for seen in client.run(_recorded).values() for t in seen]


def test_a_task_in_a_nanny_worker_runs_on_one_thread(client):
    env = client.run(lambda: (os.environ.get("OMP_NUM_THREADS"), fastconv.get_num_threads()))
    assert set(env.values()) == {("1", 1)}
    assert _threads_seen(client) == [1] * 6


def test_more_threads_per_task_from_fewer_worker_threads(client):
    """A worker of one thread whose fastconv count is 2 runs each task on 2 threads."""
    client.run(fastconv.set_num_threads, 2)
    try:
        assert _threads_seen(client) == [2] * 6
    finally:
        client.run(fastconv.set_num_threads, 1)


# --- faults ---------------------------------------------------------------------------

def _image_block(location, shape):
    return np.random.default_rng(list(location)).standard_normal(shape)


def _slow_image_block(block_info=None):
    """A chunk of a deterministic image, made slowly enough that the computation is
    still running when a worker is killed."""
    time.sleep(0.15)
    info = block_info[None]
    return _image_block(info["chunk-location"], info["chunk-shape"])


@pytest.mark.filterwarnings("ignore:Port 8787 is already in use")  # the module's cluster has it
def test_a_killed_worker_does_not_change_the_result():
    chunks = ((1, 1), (2,), (8,) * 3, (8,) * 3)
    w = np.random.default_rng(3).standard_normal((3, 2, 3, 3))
    x = da.map_blocks(_slow_image_block, chunks=chunks, dtype=np.float64)
    y = fd.conv2d(x, w, stride=2, pad=1)
    x_whole = np.block([[[[_image_block((n, 0, i, j), (1, 2, 8, 8)) for j in range(3)]
                          for i in range(3)]] for n in range(2)])  # (2, 2, 24, 24)
    threads_here = fastconv._threads._default_threads()
    with _cluster() as cluster, distributed.Client(cluster, set_as_default=False) as client:
        # The nanny sets OMP_NUM_THREADS=1 in this process too; fastconv read it at import.
        assert fastconv._threads._default_threads() == threads_here
        pids = client.run(os.getpid)
        future = client.compute(y)
        victim = next(iter(pids))
        deadline = time.monotonic() + 30
        while len(client.has_what().get(victim, ())) < 3 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert len(client.has_what()[victim]) >= 3 and not future.done(), \
            "the computation ended before the kill"
        os.kill(pids[victim], signal.SIGKILL)  # with the chunks it made, still needed
        got = future.result(timeout=60)
        assert victim not in client.scheduler_info()["workers"]  # it died, and was replaced
    assert_close(got, fastconv.conv2d(x_whole, w, 2, 1), np.float64)
