"""Is the GIL released? Two Python threads, each running the direct engine on one OpenMP
thread, against one such call. With the GIL released the pair takes about as long as
one call (on 2 cores); held, it would take twice as long. Compare the two rows of the
"gil" group; the target is under 1.5x."""
import threading

import numpy as np
import pytest

import fastconv


@pytest.mark.parametrize("callers", [1, 2])
def test_gil_released(benchmark, callers):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 64, 28, 28)).astype(np.float32)
    w = rng.standard_normal((64, 64, 3, 3)).astype(np.float32)

    def call():
        fastconv.conv2d(x, w, 1, 1, backend="direct")

    def run():
        threads = [threading.Thread(target=call) for _ in range(callers)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

    benchmark.group = "gil: direct engine, 1 OpenMP thread per call"
    with fastconv.num_threads(1):
        benchmark.pedantic(run, rounds=5, iterations=1, warmup_rounds=1)
