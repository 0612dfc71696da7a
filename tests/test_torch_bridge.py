"""fastconv.torch against torch's own convolutions (the slow twin here is PyTorch):
values, gradients (gradcheck and gradgradcheck), torch.compile, channels_last without
copies, the modules and convert, threads, and the errors for what is not supported."""
import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import assert_close

import fastconv
from fastconv import _threads

torch = pytest.importorskip("torch")
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

import fastconv.torch as ft  # noqa: E402
from fastconv.torch import _ops  # noqa: E402

DTYPES = {torch.float32: np.float32, torch.float64: np.float64}


def _close(actual, expected, what=""):
    assert actual.dtype == expected.dtype, what
    assert_close(actual.detach().numpy(), expected.detach().numpy().astype(
        DTYPES[expected.dtype]), DTYPES[expected.dtype], what)


def _grads_close(y, ref, leaves, what):
    """The gradients of y and of torch's ref with respect to ``leaves`` agree."""
    gy = torch.randn_like(ref)
    for a, r in zip(torch.autograd.grad(y, leaves, gy), torch.autograd.grad(ref, leaves, gy)):
        _close(a, r, what)


def _problem(seed):
    """A random conv2d case in torch's terms: (x, w, b, options)."""
    rng = np.random.default_rng(seed)
    groups = int(rng.choice([1, 1, 2, 3]))
    depthwise = rng.random() < 0.25
    Cg, Kg = (1, 1) if depthwise else (int(rng.integers(1, 4)), int(rng.integers(1, 4)))
    if depthwise:
        groups = int(rng.integers(2, 5))
    R, S = int(rng.integers(1, 5)), int(rng.integers(1, 5))
    stride = (int(rng.integers(1, 3)), int(rng.integers(1, 3)))
    dilation = (int(rng.integers(1, 3)), int(rng.integers(1, 3)))
    padding = [0, 1, (1, 2), "valid", "same"][int(rng.integers(5))]
    if padding == "same":
        stride = (1, 1)
    H = int(rng.integers(dilation[0] * (R - 1) + 1, 12))
    W = int(rng.integers(dilation[1] * (S - 1) + 1, 12))
    dtype = (torch.float32, torch.float64)[int(rng.integers(2))]
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(int(rng.integers(1, 3)), Cg * groups, H, W, dtype=dtype, generator=gen)
    w = torch.randn(Kg * groups, Cg, R, S, dtype=dtype, generator=gen)
    b = torch.randn(Kg * groups, dtype=dtype, generator=gen) if rng.random() < 0.7 else None
    if rng.random() < 0.4:
        x = x.contiguous(memory_format=torch.channels_last)
    return x, w, b, dict(stride=stride, padding=padding, dilation=dilation, groups=groups)


@pytest.mark.parametrize("seed", range(40))
def test_conv2d_forward_and_grads_equal_torch(seed):
    x, w, b, opts = _problem(seed)
    leaves = [a.clone().requires_grad_() for a in (x, w) + ((b,) if b is not None else ())]
    ref_leaves = [a.detach().clone().requires_grad_() for a in leaves]
    y = ft.conv2d(leaves[0], leaves[1], leaves[2] if b is not None else None, **opts)
    ref = F.conv2d(ref_leaves[0], ref_leaves[1], ref_leaves[2] if b is not None else None,
                   **opts)
    _close(y, ref, f"forward {opts}")
    gy = torch.randn_like(ref)
    y.backward(gy)
    ref.backward(gy)
    for name, a, r in zip("xwb", leaves, ref_leaves):
        _close(a.grad, r.grad, f"grad {name} {opts}")


def test_unbatched_input():
    x, w = torch.randn(3, 7, 7, dtype=torch.float64), torch.randn(4, 3, 3, 3, dtype=torch.float64)
    _close(ft.conv2d(x, w, padding=1), F.conv2d(x, w, padding=1))


@pytest.mark.parametrize("opts", [dict(stride=2, padding=1, dilation=1, groups=1),
                                  dict(stride=1, padding="same", dilation=2, groups=2),
                                  dict(stride=(1, 2), padding=(0, 1), dilation=(2, 1),
                                       groups=1)])
@pytest.mark.parametrize("channels_last", [False, True])
def test_gradcheck_and_gradgradcheck(opts, channels_last):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 2, 6, 5, dtype=torch.float64, generator=gen)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    w = torch.randn(4, 2 // opts["groups"], 3, 2, dtype=torch.float64, generator=gen)
    b = torch.randn(4, dtype=torch.float64, generator=gen)
    args = [a.requires_grad_() for a in (x, w, b)]

    def f(x, w, b):
        return ft.conv2d(x, w, b, **opts)

    assert torch.autograd.gradcheck(f, args)
    assert torch.autograd.gradgradcheck(f, args)


from torch.utils._python_dispatch import TorchDispatchMode  # noqa: E402


class _Watching(TorchDispatchMode):
    """A dispatch mode that changes nothing but records the operators it sees: with
    one active the bridge must call its operators (as under tracing), not take its
    eager shortcuts."""

    def __init__(self):
        super().__init__()
        self.seen = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.seen.add(str(func.overloadpacket))
        return func(*args, **(kwargs or {}))


def test_the_operators_themselves_pass_gradcheck_and_gradgradcheck():
    gen = torch.Generator().manual_seed(5)
    x = torch.randn(1, 2, 5, 6, dtype=torch.float64, generator=gen, requires_grad=True)
    w = torch.randn(2, 1, 3, 2, dtype=torch.float64, generator=gen, requires_grad=True)
    b = torch.randn(2, dtype=torch.float64, generator=gen, requires_grad=True)
    f = lambda x, w, b: ft.conv2d(x, w, b, stride=2, padding=1, groups=2)  # noqa: E731
    with _Watching() as mode:
        assert torch.autograd.gradcheck(f, (x, w, b))
        assert torch.autograd.gradgradcheck(f, (x, w, b))
        via_ops = torch.autograd.grad(f(x, w, b).sum(), (x, w, b))
    assert {"fastconv.conv2d", "fastconv.conv2d_grad_input",
            "fastconv.conv2d_grad_weight"} <= mode.seen, mode.seen
    # the eager shortcuts compute the same
    for a, r in zip(torch.autograd.grad(f(x, w, b).sum(), (x, w, b)), via_ops):
        _close(a, r)


def test_gradgrad_equals_torch():
    """A double-backward quantity (the gradient of |grad_x|^2) against torch's."""
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(2, 3, 7, 7, dtype=torch.float64, generator=gen)
    w = torch.randn(4, 3, 3, 3, dtype=torch.float64, generator=gen)

    def penalty(conv):
        xx, ww = x.clone().requires_grad_(), w.clone().requires_grad_()
        y = conv(xx, ww, None, stride=2, padding=1)
        (gx,) = torch.autograd.grad(y.square().sum(), xx, create_graph=True)
        return torch.autograd.grad(gx.square().sum(), (xx, ww))

    for ours, ref in zip(penalty(ft.conv2d), penalty(F.conv2d)):
        _close(ours, ref)


@pytest.mark.parametrize("seed", range(12))
def test_conv1d_equals_torch(seed):
    rng = np.random.default_rng(seed)
    groups = int(rng.choice([1, 2]))
    R, stride, dilation = int(rng.integers(1, 5)), int(rng.integers(1, 3)), int(rng.integers(1, 3))
    padding = [0, 2, "valid", "same"][int(rng.integers(4))]
    if padding == "same":
        stride = 1
    x = torch.randn(2, 2 * groups, 20, dtype=torch.float64, requires_grad=True)
    w = torch.randn(3 * groups, 2, R, dtype=torch.float64, requires_grad=True)
    b = torch.randn(3 * groups, dtype=torch.float64, requires_grad=True)
    opts = dict(stride=stride, padding=padding, dilation=dilation, groups=groups)
    y, ref = ft.conv1d(x, w, b, **opts), F.conv1d(x, w, b, **opts)
    _close(y, ref, str(opts))
    _grads_close(y, ref, (x, w, b), str(opts))


@pytest.mark.parametrize("seed", range(12))
def test_conv_transpose2d_equals_torch(seed):
    rng = np.random.default_rng(seed)
    groups = int(rng.choice([1, 2]))
    stride = (int(rng.integers(1, 4)), int(rng.integers(1, 3)))
    dilation = (int(rng.integers(1, 3)), 1)
    R, S = int(rng.integers(1, 5)), int(rng.integers(1, 4))
    padding = (int(rng.integers(0, R)), 0)
    output_padding = (int(rng.integers(0, max(stride[0], dilation[0]))), 0)
    dtype = (torch.float32, torch.float64)[int(rng.integers(2))]
    x = torch.randn(2, 2 * groups, 5, 6, dtype=dtype)
    if rng.random() < 0.5:
        x = x.contiguous(memory_format=torch.channels_last)
    x.requires_grad_()
    w = torch.randn(2 * groups, 3, R, S, dtype=dtype, requires_grad=True)
    b = torch.randn(3 * groups, dtype=dtype, requires_grad=True)
    opts = dict(stride=stride, padding=padding, output_padding=output_padding,
                groups=groups, dilation=dilation)
    y, ref = ft.conv_transpose2d(x, w, b, **opts), F.conv_transpose2d(x, w, b, **opts)
    _close(y, ref, str(opts))
    _grads_close(y, ref, (x, w, b), str(opts))


@pytest.mark.parametrize("seed", range(6))
def test_conv_transpose1d_equals_torch(seed):
    rng = np.random.default_rng(seed)
    groups, stride, dilation = int(rng.choice([1, 2])), int(rng.integers(1, 4)), int(rng.integers(1, 3))
    R = int(rng.integers(1, 5))
    opts = dict(stride=stride, padding=int(rng.integers(0, R)),
                output_padding=int(rng.integers(0, max(stride, dilation))), groups=groups,
                dilation=dilation)
    x = torch.randn(2, 2 * groups, 7, dtype=torch.float64, requires_grad=True)
    w = torch.randn(2 * groups, 3, R, dtype=torch.float64, requires_grad=True)
    b = torch.randn(3 * groups, dtype=torch.float64, requires_grad=True)
    y, ref = ft.conv_transpose1d(x, w, b, **opts), F.conv_transpose1d(x, w, b, **opts)
    _close(y, ref, str(opts))
    _grads_close(y, ref, (x, w, b), str(opts))


def test_conv_transpose2d_and_conv1d_gradgradcheck():
    x = torch.randn(1, 2, 4, 3, dtype=torch.float64, requires_grad=True)
    w = torch.randn(2, 3, 3, 2, dtype=torch.float64, requires_grad=True)
    f = lambda x, w: ft.conv_transpose2d(x, w, None, 2, 1, 1)  # noqa: E731
    assert torch.autograd.gradgradcheck(f, (x, w))
    x1 = torch.randn(2, 2, 9, dtype=torch.float64, requires_grad=True)
    w1 = torch.randn(3, 2, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradgradcheck(lambda x, w: ft.conv1d(x, w, None, 2, 1), (x1, w1))


@pytest.mark.parametrize("channels_last", [False, True])
def test_opcheck(channels_last):
    """torch.library's own test of each operator: schema, fake implementation,
    autograd registration, dynamo-traceability."""
    x = torch.randn(2, 4, 7, 6, dtype=torch.float64, requires_grad=True)
    if channels_last:
        x = x.detach().contiguous(memory_format=torch.channels_last).requires_grad_()
    w = torch.randn(6, 2, 3, 3, dtype=torch.float64, requires_grad=True)
    b = torch.randn(6, dtype=torch.float64, requires_grad=True)
    geo = ([2, 1], [1, 0, 1, 1], [1, 2], 2)
    y = _ops.conv2d(x, w, b, *geo)
    gy = torch.randn_like(y)
    torch.library.opcheck(_ops.conv2d, (x, w, b, *geo))
    torch.library.opcheck(_ops.conv2d_grad_input, (gy, w, [7, 6], *geo))
    torch.library.opcheck(_ops.conv2d_grad_weight, (gy, x, [6, 2, 3, 3], *geo))


def _compile_or_skip(fn, backend):
    if not hasattr(torch, "compile"):
        pytest.skip("torch.compile is not available")
    return torch.compile(fn, backend=backend, fullgraph=True)


def test_torch_compile_keeps_the_operator_opaque():
    seen = []

    def recording_backend(gm, example_inputs):
        seen.extend(str(n.target) for n in gm.graph.nodes if n.op == "call_function")
        return gm.forward

    x, w = torch.randn(2, 3, 8, 8), torch.randn(4, 3, 3, 3)
    f = _compile_or_skip(lambda x, w: ft.conv2d(x, w, padding=1).relu(), recording_backend)
    try:
        y = f(x, w)
    except Exception as e:  # a torch without a working dynamo on this Python
        if "dynamo" in type(e).__module__:
            pytest.skip(f"torch.compile does not work here: {e}")
        raise
    assert any("fastconv.conv2d" in s for s in seen), seen
    _close(y, F.conv2d(x, w, padding=1).relu())


@pytest.mark.parametrize("channels_last", [False, True])
def test_torch_compile_aot_eager_forward_and_backward(channels_last):
    torch._dynamo.reset()
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(2, 4, 9, 9, dtype=torch.float64, generator=gen)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    w = torch.randn(4, 1, 3, 3, dtype=torch.float64, generator=gen)
    b = torch.randn(4, dtype=torch.float64, generator=gen)

    def loss(conv):
        return lambda x, w, b: conv(x, w, b, stride=2, padding=1, groups=4).tanh().sum()

    def step(f):  # the backward outside: aot_eager compiles it from the forward's graph
        leaves = [a.clone().requires_grad_() for a in (x, w, b)]
        out = f(*leaves)
        return (out, *torch.autograd.grad(out, leaves))

    compiled = _compile_or_skip(loss(ft.conv2d), "aot_eager")
    for ours, ref in zip(step(compiled), step(loss(F.conv2d))):
        _close(ours, ref)


def test_channels_last_runs_on_views_without_copies(monkeypatch):
    x = torch.randn(2, 8, 6, 5).contiguous(memory_format=torch.channels_last)
    w = torch.randn(8, 1, 3, 3)
    seen = {}
    real = fastconv.conv2d

    def spy(xa, wa, *args, **kwargs):
        seen["x"] = xa.__array_interface__["data"][0]
        seen["layout"] = kwargs["layout"]
        y = real(xa, wa, *args, **kwargs)
        seen["y"] = y.__array_interface__["data"][0]
        return y

    monkeypatch.setattr(fastconv, "conv2d", spy)
    y = ft.conv2d(x, w, padding=1, groups=8)
    assert seen["layout"] == "NHWC"
    assert seen["x"] == x.data_ptr()  # the input read in place
    assert seen["y"] == y.data_ptr()  # the output handed over in place
    assert y.is_contiguous(memory_format=torch.channels_last) and not y.is_contiguous()
    _close(y, F.conv2d(x, w, padding=1, groups=8))
    xc = x.contiguous()
    yc = ft.conv2d(xc, w, padding=1, groups=8)
    assert seen["layout"] == "NCHW" and seen["x"] == xc.data_ptr() and yc.is_contiguous()


def test_callers_tensors_are_not_modified():
    x = torch.randn(2, 3, 6, 6, dtype=torch.float64, requires_grad=True)
    w = torch.randn(4, 3, 3, 3, dtype=torch.float64, requires_grad=True)
    b = torch.randn(4, dtype=torch.float64, requires_grad=True)
    before = [a.detach().clone() for a in (x, w, b)]
    ft.conv2d(x, w, b, padding=1).sum().backward()
    assert all(torch.equal(a.detach(), c) for a, c in zip((x, w, b), before))


# --- modules ------------------------------------------------------------------------

@pytest.mark.parametrize("ours_first", [True, False])
def test_state_dict_loads_either_way(ours_first):
    kwargs = dict(in_channels=4, out_channels=6, kernel_size=3, stride=2, padding=1,
                  groups=2)
    torch.manual_seed(0)
    src = (ft.Conv2d if ours_first else nn.Conv2d)(**kwargs)
    dst = (nn.Conv2d if ours_first else ft.Conv2d)(**kwargs)
    assert set(src.state_dict()) == set(dst.state_dict()) == {"weight", "bias"}
    dst.load_state_dict(src.state_dict())
    x = torch.randn(2, 4, 9, 9)
    _close(dst(x), src(x))


@pytest.mark.parametrize("padding_mode", ["zeros", "reflect", "circular"])
def test_modules_equal_torchs(padding_mode):
    torch.manual_seed(1)
    pairs = [(nn.Conv2d(3, 4, 3, padding=1, padding_mode=padding_mode, dtype=torch.float64),
              ft.Conv2d, torch.randn(2, 3, 7, 7, dtype=torch.float64)),
             (nn.Conv1d(3, 4, 3, padding=1, padding_mode=padding_mode, dtype=torch.float64),
              ft.Conv1d, torch.randn(2, 3, 9, dtype=torch.float64))]
    if padding_mode == "zeros":
        pairs.append((nn.ConvTranspose2d(3, 4, 3, stride=2, padding=1, output_padding=1,
                                         dtype=torch.float64),
                      ft.ConvTranspose2d, torch.randn(2, 3, 5, 5, dtype=torch.float64)))
        pairs.append((nn.ConvTranspose1d(3, 4, 3, stride=2, padding=1, output_padding=1,
                                         dtype=torch.float64),
                      ft.ConvTranspose1d, torch.randn(2, 3, 5, dtype=torch.float64)))
    for ref, cls, x in pairs:
        ours = ft.convert(ref.__class__(**_init_args(ref)))
        assert type(ours) is cls
        ours.load_state_dict(ref.state_dict())
        _close(ours(x), ref(x), cls.__name__)


def _init_args(m):
    args = dict(in_channels=m.in_channels, out_channels=m.out_channels,
                kernel_size=m.kernel_size, stride=m.stride, padding=m.padding,
                dilation=m.dilation, groups=m.groups, bias=m.bias is not None,
                padding_mode=m.padding_mode, dtype=m.weight.dtype)
    if isinstance(m, (nn.ConvTranspose2d, nn.ConvTranspose1d)):
        args["output_padding"] = m.output_padding
    return args


def test_conv_transpose_module_output_size():
    torch.manual_seed(2)
    ref = nn.ConvTranspose2d(2, 3, 3, stride=2, padding=1)
    ours = ft.convert(ref)
    x = torch.randn(1, 2, 4, 4)
    _close(ours(x, output_size=[8, 8]), nn.ConvTranspose2d.forward(ref, x, output_size=[8, 8]))


def _block():
    return nn.Sequential(nn.Conv2d(8, 16, 1), nn.ReLU(),
                         nn.Conv2d(16, 16, 3, padding=1, groups=16), nn.ReLU(),
                         nn.Sequential(nn.Conv2d(16, 8, 1)))


def test_convert_with_a_predicate_swaps_only_the_chosen():
    torch.manual_seed(3)
    model = _block()
    ref = _block()
    ref.load_state_dict(model.state_dict())
    weights = [m.weight for m in model.modules() if isinstance(m, nn.Conv2d)]
    out = ft.convert(model, where=ft.depthwise)
    assert out is model
    assert [type(m) for m in model.modules() if isinstance(m, nn.Conv2d)] == [
        nn.Conv2d, ft.Conv2d, nn.Conv2d]
    # the parameters are the same objects: an optimizer made before still updates them
    assert [m.weight for m in model.modules() if isinstance(m, nn.Conv2d)] == weights
    x = torch.randn(2, 8, 6, 6)
    _close(model(x), ref(x))
    ft.convert(model)
    assert all(type(m) is ft.Conv2d for m in model.modules() if isinstance(m, nn.Conv2d))
    with pytest.raises(TypeError, match="where must be a predicate"):
        ft.convert(model, where="depthwise")


# --- threads ------------------------------------------------------------------------

@pytest.fixture
def thread_state():
    saved = (_threads._num_threads, _threads._user_set, torch.get_num_threads())
    yield
    if saved[0] is not None:
        _threads._set(saved[0], saved[1])
    _threads._user_set = saved[1]
    torch.set_num_threads(saved[2])


def _threads_seen(monkeypatch):
    """The thread count fastconv has while the bridge's conv2d runs."""
    seen = []
    real = fastconv.conv2d

    def spy(*args, **kwargs):
        seen.append(fastconv.get_num_threads())
        return real(*args, **kwargs)

    monkeypatch.setattr(fastconv, "conv2d", spy)
    ft.conv2d(torch.randn(1, 2, 5, 5), torch.randn(2, 2, 3, 3))
    return seen[-1]


def test_threads_follow_torch_by_default(thread_state, monkeypatch):
    _threads._user_set = False
    for n in (1, 2, 3):
        torch.set_num_threads(n)
        assert _threads_seen(monkeypatch) == n


def test_threads_the_user_set_hold(thread_state, monkeypatch):
    _threads._user_set = False
    torch.set_num_threads(3)
    with fastconv.num_threads(1):
        assert _threads_seen(monkeypatch) == 1
    assert _threads_seen(monkeypatch) == 3  # the block ended: following again
    fastconv.set_num_threads(2)
    torch.set_num_threads(1)
    assert _threads_seen(monkeypatch) == 2


def test_threads_from_the_environment_hold():
    code = ("import torch, fastconv, fastconv.torch as ft; torch.set_num_threads(1); "
            "ft.conv2d(torch.randn(1, 2, 5, 5), torch.randn(2, 2, 3, 3)); "
            "print(fastconv.get_num_threads())")
    env = dict(os.environ, FASTCONV_NUM_THREADS="3")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                         text=True, check=True).stdout
    assert out.strip() == "3"


def test_importing_fastconv_imports_no_framework():
    code = ("import sys, fastconv; print('torch' in sys.modules, 'jax' in sys.modules); "
            "import fastconv.torch; print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.split()
    assert out == ["False", "False", "True"]


# --- bad input ----------------------------------------------------------------------

def test_other_devices_raise_type_error():
    w = torch.randn(2, 2, 3, 3)
    with pytest.raises(TypeError, match=r"input must be a CPU tensor .* device meta"):
        ft.conv2d(torch.randn(1, 2, 5, 5, device="meta"), w)
    with pytest.raises(TypeError, match=r"weight must be a CPU tensor .* device meta"):
        ft.conv2d(torch.randn(1, 2, 5, 5), w.to("meta"))


def test_cuda_tensor_raises_type_error(monkeypatch):
    x = torch.randn(1, 2, 5, 5)
    monkeypatch.setattr(torch.Tensor, "is_cpu", property(lambda self: False))
    monkeypatch.setattr(torch.Tensor, "device", property(lambda self: torch.device("cuda", 0)))
    with pytest.raises(TypeError, match=r"input must be a CPU tensor .* device cuda:0"):
        ft.conv2d(x, x)


@pytest.mark.parametrize("dtype", [torch.int64, torch.float16, torch.bfloat16, torch.bool,
                                   torch.complex64])
def test_unsupported_dtypes_raise_type_error(dtype):
    x = torch.zeros(1, 2, 5, 5, dtype=dtype)
    with pytest.raises(TypeError, match=f"input must be a float32 or float64 tensor, got "
                                        f"dtype {dtype}"):
        ft.conv2d(x, torch.zeros(2, 2, 3, 3))


def test_mixed_dtypes_raise_type_error():
    with pytest.raises(TypeError, match="weight must have the input's dtype torch.float64"):
        ft.conv2d(torch.zeros(1, 2, 5, 5, dtype=torch.float64), torch.zeros(2, 2, 3, 3))
    with pytest.raises(TypeError, match="bias must have the input's dtype"):
        ft.conv2d(torch.zeros(1, 2, 5, 5), torch.zeros(2, 2, 3, 3),
                  torch.zeros(2, dtype=torch.float64))


def test_wrong_ranks_and_options_raise_value_error():
    w = torch.zeros(2, 2, 3, 3)
    with pytest.raises(ValueError, match=r"input must be a 3-D or 4-D tensor, got a 2-D"):
        ft.conv2d(torch.zeros(5, 5), w)
    with pytest.raises(ValueError, match=r"weight must be a 4-D tensor, got a 3-D"):
        ft.conv2d(torch.zeros(1, 2, 5, 5), torch.zeros(2, 2, 3))
    with pytest.raises(ValueError, match="padding='same' is not supported for strided"):
        ft.conv2d(torch.zeros(1, 2, 5, 5), w, stride=2, padding="same")
    with pytest.raises(ValueError, match="padding must be an int, a tuple, 'same' or 'valid'"):
        ft.conv2d(torch.zeros(1, 2, 5, 5), w, padding="full")
    with pytest.raises(ValueError, match="w's input-channel dimension"):
        ft.conv2d(torch.zeros(1, 3, 5, 5), w)
    with pytest.raises(TypeError, match="input must be a torch.Tensor, got ndarray"):
        ft.conv2d(np.zeros((1, 2, 5, 5)), w)
    with pytest.raises(ValueError, match="output_padding must be smaller than stride"):
        ft.conv_transpose2d(torch.zeros(1, 2, 5, 5), w, output_padding=1)


def test_modules_parameters_take_the_eager_shortcuts():
    """nn.Parameter is a plain tensor for the shortcuts; a tensor subclass is not."""
    m = ft.Conv2d(4, 4, 3, padding=1)
    x = torch.randn(1, 4, 6, 6)
    route = lambda *t: _ops._route(_ops.conv2d, _ops._conv2d, _ops._Conv2d, *t)  # noqa: E731
    assert route(x, m.weight, m.bias) == _ops._Conv2d.apply
    with torch.no_grad():
        assert route(x, m.weight, m.bias) is _ops._conv2d

    class Sub(torch.Tensor):
        pass

    assert route(x.as_subclass(Sub), m.weight, m.bias) is _ops.conv2d
