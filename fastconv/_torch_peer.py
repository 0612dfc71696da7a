"""PyTorch, timed for ``fastconv bench`` in a process of its own.

PyTorch bundles its own OpenMP runtime. In one process with ours (and Numba's and two
OpenBLAS pools), on 2 cores, the runtimes' waiting threads took the cores from each
other and single cases came out 10-40x slow at random: PyTorch's cs231n forward took
0.33 ms alone and 8-16 ms in two of three in-process runs. The peer process holds only
PyTorch's pools. It times a case when the bench asks, right after our engines have
timed the same case on the same arrays, so the two are still measured side by side in
one run, by the same procedure (``bench._median_times``). For ``--network`` it runs a
whole network's sequence of passes on arrays it makes itself (``bench.network_arrays``,
the same seed, so the same values), timed like ours (``bench.time_sequence``).

``PeerProcess`` is the plumbing, shared with the ONNX Runtime peer (``_ort_peer``).
"""
from __future__ import annotations

import functools
import multiprocessing


class PeerProcess:
    """A child process that imports one library and times its convolution passes.

    ``library`` is a module-level function run in the child: ``library(threads)`` returns
    (version, passes), where ``passes(x, w, gy, stride, pad, groups, **options)`` gives
    {pass name: callable} for one layer, each callable returning something with
    ``.numpy()``. It raises ImportError when the library is missing.
    """

    def __init__(self, library, threads: int):
        # spawn, not fork: a forked child would inherit our OpenMP runtime's state.
        ctx = multiprocessing.get_context("spawn")
        self._conn, child = ctx.Pipe()
        self._proc = ctx.Process(target=_serve, args=(child, library, threads), daemon=True)
        self._proc.start()
        child.close()
        status, self.version = self._conn.recv()
        if status != "ready":
            self.close()
            raise ImportError(self.version)

    def load(self, x, w, gy, stride: int, pad: int, groups: int, **options) -> None:
        """The arrays of the next layer's cases (sent once, used by every pass), NCHW;
        ``options`` as the library's passes take them: ``channels_last=True``, run them
        in its NHWC memory format; ``output_padding=n``, the layer is a transposed
        convolution with that output padding (w PyTorch's (C_in, C_out/groups, R, S),
        gy the shape of its output)."""
        self._conn.send(("load", ((x, w, gy, stride, pad, groups), options)))

    def time(self, pass_name: str, repeat: int):
        """(median seconds, result array) of one pass on the loaded arrays."""
        return self._ask("time", (pass_name, repeat))

    def sequence(self, layers, pass_names, dtype: str, seed: int, repeat: int):
        """(median seconds per call, wall seconds per sequence) of a network's sequence
        (``bench.training_order``), on the peer's own ``bench.network_arrays``."""
        return self._ask("sequence", (tuple(layers), tuple(pass_names), dtype, seed, repeat))

    def _ask(self, what: str, arg):
        self._conn.send((what, arg))
        status, value = self._conn.recv()
        if status != "ok":
            raise RuntimeError(f"peer process failed: {value}")
        return value

    @classmethod
    def start(cls, library, threads: int) -> PeerProcess | None:
        """A running peer of ``library``, or None when its packages are not installed."""
        try:
            return cls(library, threads)
        except ImportError:
            return None

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


def torch_passes(torch, x, w, gy, stride: int, pad: int, groups: int,
                 channels_last: bool = False, output_padding: int | None = None) -> dict:
    """{pass name: callable} running PyTorch's CPU kernels for one layer on NumPy arrays
    (conv2d, nn.grad.conv2d_input, nn.grad.conv2d_weight), NCHW, or with
    ``channels_last`` as channels_last tensors (PyTorch's NHWC: the same shapes, NHWC
    strides), the format its oneDNN kernels prefer. The peer calls it, and so do the
    bench scripts that time PyTorch in their own process. With ``output_padding`` the
    layer is a transposed convolution: ``_transposed_passes``."""
    tx, tw, tgy = (None if a is None else torch.from_numpy(a) for a in (x, w, gy))
    if channels_last:
        tx, tw, tgy = (None if t is None else t.contiguous(memory_format=torch.channels_last)
                       for t in (tx, tw, tgy))
    if output_padding is not None:
        return _transposed_passes(torch, tx, tw, tgy, stride, pad, groups, output_padding)
    kw = dict(stride=stride, padding=pad, groups=groups)
    return {
        "forward": lambda: torch.nn.functional.conv2d(tx, tw, **kw),
        "grad_input": lambda: torch.nn.grad.conv2d_input(tx.shape, tw, tgy, **kw),
        "grad_weight": lambda: torch.nn.grad.conv2d_weight(tx, tw.shape, tgy, **kw),
    }


def _transposed_passes(torch, tx, tw, tgy, stride: int, pad: int, groups: int,
                       output_padding: int) -> dict:
    """A transposed convolution's passes: ``conv_transpose2d``, and its gradients as
    autograd computes them, each pass alone: the graph of one forward is kept
    (``retain_graph``) and ``torch.autograd.grad`` asks it for x's or w's gradient only,
    which has the convolution backward compute that one (its output mask)."""
    kw = dict(stride=stride, padding=pad, output_padding=output_padding, groups=groups)
    forward = torch.nn.functional.conv_transpose2d
    if tgy is None:  # a forward-only run
        return {"forward": lambda: forward(tx, tw, **kw)}
    gx, gw = tx.detach().requires_grad_(), tw.detach().requires_grad_()
    y = forward(gx, gw, **kw)

    def grad(wrt):
        return torch.autograd.grad(y, wrt, tgy, retain_graph=True)[0]

    return {"forward": lambda: forward(tx, tw, **kw),
            "grad_input": lambda: grad(gx), "grad_weight": lambda: grad(gw)}


def _torch_library(threads: int):
    import torch

    torch.set_num_threads(threads)
    return torch.__version__, functools.partial(torch_passes, torch)


def start(threads: int) -> PeerProcess | None:
    """A running PyTorch peer, or None when PyTorch is not installed."""
    return PeerProcess.start(_torch_library, threads)


def _serve(conn, library, threads: int) -> None:
    try:
        version, passes = library(threads)
    except ImportError as e:
        conn.send(("missing", str(e)))
        return
    # the bench's own timing procedures and arrays
    from .bench import _median_time, network_arrays, time_sequence, training_order

    conn.send(("ready", version))
    fns, load_error = {}, None
    while True:
        what, arg = conn.recv()
        if what == "stop":
            return
        try:
            if what == "load":
                fns, load_error = {}, None
                args, options = arg
                fns = passes(*args, **options)
                continue
            if load_error is not None:
                raise load_error
            if what == "time":
                pass_name, repeat = arg
                median, out = _median_time(fns[pass_name], repeat)
                conn.send(("ok", (median, out.numpy())))
            else:  # sequence
                layers, pass_names, dtype, seed, repeat = arg
                per_layer = [passes(x, w, gy, layer.stride, layer.pad, layer.groups)
                             for layer, (x, w, gy) in zip(layers, network_arrays(layers, dtype,
                                                                                   seed))]
                calls = [per_layer[i][p] for i, p in training_order(layers, pass_names)]
                conn.send(("ok", time_sequence(calls, repeat)))
                del per_layer, calls
        except Exception as e:  # report it; the bench decides
            if what == "load":
                load_error = e
            else:
                conn.send(("error", repr(e)))
