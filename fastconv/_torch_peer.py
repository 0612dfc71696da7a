"""PyTorch, timed for ``fastconv bench`` in a process of its own.

PyTorch bundles its own OpenMP runtime. In one process with ours (and Numba's and two
OpenBLAS pools), on 2 cores, the runtimes' waiting threads took the cores from each
other and single cases came out 10-40x slow at random: PyTorch's cs231n forward took
0.33 ms alone and 8-16 ms in two of three in-process runs. The peer process holds only
PyTorch's pools. It times a case when the bench asks, right after our engines have
timed the same case on the same arrays, so the two are still measured side by side in
one run, by the same procedure (``bench._median_times``).
"""
from __future__ import annotations

import multiprocessing


class TorchPeer:
    """A child process that imports PyTorch and times its convolution passes."""

    def __init__(self, threads: int):
        # spawn, not fork: a forked child would inherit our OpenMP runtime's state.
        ctx = multiprocessing.get_context("spawn")
        self._conn, child = ctx.Pipe()
        self._proc = ctx.Process(target=_serve, args=(child, threads), daemon=True)
        self._proc.start()
        child.close()
        status, self.version = self._conn.recv()
        if status != "ready":
            self.close()
            raise ImportError(self.version)

    def load(self, x, w, gy, stride: int, pad: int, groups: int) -> None:
        """The arrays of the next layer's cases (sent once, used by every pass)."""
        self._conn.send(("load", (x, w, gy, stride, pad, groups)))

    def time(self, pass_name: str, repeat: int):
        """(median seconds, result array) of one pass on the loaded arrays."""
        self._conn.send(("time", (pass_name, repeat)))
        status, value = self._conn.recv()
        if status != "ok":
            raise RuntimeError(f"PyTorch peer failed: {value}")
        return value

    def close(self) -> None:
        if self._proc.is_alive():
            try:
                self._conn.send(("stop", None))
            except OSError:
                pass
            self._proc.join(timeout=10)
        if self._proc.is_alive():
            self._proc.kill()
        self._conn.close()


def torch_passes(torch, x, w, gy, stride: int, pad: int, groups: int) -> dict:
    """{pass name: callable} running PyTorch's CPU kernels for one layer on NumPy arrays
    (conv2d, nn.grad.conv2d_input, nn.grad.conv2d_weight). The peer calls it, and so do
    the bench scripts that time PyTorch in their own process."""
    tx, tw, tgy = (torch.from_numpy(a) for a in (x, w, gy))
    kw = dict(stride=stride, padding=pad, groups=groups)
    return {
        "forward": lambda: torch.nn.functional.conv2d(tx, tw, **kw),
        "grad_input": lambda: torch.nn.grad.conv2d_input(tx.shape, tw, tgy, **kw),
        "grad_weight": lambda: torch.nn.grad.conv2d_weight(tx, tw.shape, tgy, **kw),
    }


def start(threads: int) -> TorchPeer | None:
    """A running peer, or None when PyTorch is not installed."""
    try:
        return TorchPeer(threads)
    except ImportError:
        return None


def _serve(conn, threads: int) -> None:
    try:
        import torch
    except ImportError as e:
        conn.send(("missing", str(e)))
        return
    from .bench import _median_time  # the bench's own timing procedure

    torch.set_num_threads(threads)
    conn.send(("ready", torch.__version__))
    passes = {}
    while True:
        what, arg = conn.recv()
        if what == "stop":
            return
        if what == "load":
            passes = torch_passes(torch, *arg)
            continue
        pass_name, repeat = arg
        fn = passes[pass_name]
        try:
            conn.send(("ok", _median_time(lambda: fn().numpy(), repeat)))
        except Exception as e:  # report it; the bench decides
            conn.send(("error", repr(e)))
