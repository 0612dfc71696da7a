"""ONNX Runtime, timed for ``fastconv bench`` in a process of its own: the inference peer.

The same reason as PyTorch's (``_torch_peer``): ONNX Runtime brings its own thread pool,
and in our process its waiting threads and ours would take the cores from each other.
Forward only (ONNX Runtime has no training passes here), float32 only (its CPU Conv has
no float64 kernel).

Each layer is one ``InferenceSession`` of a single Conv node (ConvTranspose for the
decoder suite's transposed convolutions), built with ``onnx.helper``:
the weights an initializer, the input of fixed shape, graph optimisation
``ORT_ENABLE_ALL``, sequential execution, the CPU execution provider. Such a session
pays ONNX Runtime's NCHWc reorders (its blocked channel layout) on the way into and out
of every convolution; a whole model in one graph keeps activations in NCHWc from one
convolution to the next and could skip them, so these times are an upper bound on what
ONNX Runtime spends on the same convolutions inside a model. The input and a
preallocated output are bound once (``run_with_iobinding``), as a model's memory plan
reuses its buffers; no copy to NumPy is timed.

Threads: every session shares one global intra-op pool of ``threads`` threads (one
inter-op thread), as the sessions of one model would share theirs. With a pool per
session (``intra_op_num_threads`` on each), the 52 pools of MobileNetV2 spun against
each other and its batch-1 forward took 550-2100 ms instead of 15 (2 threads, 2 cores).
"""
from __future__ import annotations

import functools

from ._torch_peer import PeerProcess

DTYPES = ("float32",)
LAYOUTS = ("NCHW",)  # its Conv takes NCHW tensors only
_OPSET = 17


def conv_session(ort, w, x_shape, y_shape, stride: int, pad: int, groups: int,
                 output_padding: int | None = None):
    """An ``InferenceSession`` computing one convolution of an input of ``x_shape``; with
    ``output_padding``, one transposed convolution (ONNX's ConvTranspose, whose weights
    are PyTorch's (C_in, C_out/groups, R, S))."""
    from onnx import helper, numpy_helper

    R, S = w.shape[2:]
    elem = helper.np_dtype_to_tensor_dtype(w.dtype)
    attrs = dict(kernel_shape=[R, S], strides=[stride, stride], pads=[pad] * 4, group=groups)
    if output_padding is None:
        node = helper.make_node("Conv", ["x", "w"], ["y"], **attrs)
    else:
        node = helper.make_node("ConvTranspose", ["x", "w"], ["y"],
                                output_padding=[output_padding] * 2, **attrs)
    graph = helper.make_graph([node], "conv",
                              [helper.make_tensor_value_info("x", elem, x_shape)],
                              [helper.make_tensor_value_info("y", elem, y_shape)],
                              initializer=[numpy_helper.from_array(w, "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", _OPSET)])
    options = ort.SessionOptions()
    options.use_per_session_threads = False  # the global pool, see the module docstring
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(model.SerializeToString(), options,
                                providers=["CPUExecutionProvider"])


def ort_passes(ort, x, w, gy, stride: int, pad: int, groups: int,
               output_padding: int | None = None) -> dict:
    """{"forward": callable} for one layer (with ``output_padding``, a transposed
    convolution). The callable returns the output OrtValue, the same buffer every call
    (``.numpy()`` copies it out). ``gy`` is not used."""
    from . import output_shape

    transposed = output_padding is not None
    y_shape = output_shape(x.shape, w.shape, stride, pad, groups=groups, transposed=transposed,
                           output_padding=output_padding)
    session = conv_session(ort, w, x.shape, y_shape, stride, pad, groups, output_padding)
    binding = session.io_binding()
    x_value = ort.OrtValue.ortvalue_from_numpy(x)  # x's memory, no copy
    y_value = ort.OrtValue.ortvalue_from_shape_and_type(y_shape, x.dtype)
    binding.bind_ortvalue_input("x", x_value)
    binding.bind_ortvalue_output("y", y_value)

    def forward(_keep_alive=x_value):  # the binding does not hold x's buffer
        session.run_with_iobinding(binding)
        return y_value

    # A session's second run was still 1.7-3x slower than its third on MobileNetV2's
    # larger layers (batch 1, one thread), so a network's one untimed sequence left
    # ONNX Runtime's first timed one 1.5-4x slow. One run here, when the session is made,
    # puts every run a benchmark sees past that.
    forward()
    return {"forward": forward}


def _ort_library(threads: int):
    import onnx  # noqa: F401  (conv_session builds its models with it)
    import onnxruntime as ort

    # Before the first session: the pool every session uses.
    ort.set_global_thread_pool_sizes(threads, 1)
    return ort.__version__, functools.partial(ort_passes, ort)


def start(threads: int) -> PeerProcess | None:
    """A running ONNX Runtime peer, or None when onnxruntime or onnx is not installed."""
    return PeerProcess.start(_ort_library, threads)
