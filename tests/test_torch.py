"""Cross-check against PyTorch's conv2d and autograd, where PyTorch is installed."""
import numpy as np
import pytest
from conftest import FAST_ENGINES, assert_close, random_problem

import fastconv

torch = pytest.importorskip("torch")


def _torch_pad(x, pad_sides):
    """Per-side padding applied up front, since torch's conv2d takes symmetric pads only."""
    t, b, l, r = pad_sides
    return torch.nn.functional.pad(x, (l, r, t, b))


@pytest.mark.parametrize("engine", FAST_ENGINES)
@pytest.mark.parametrize("seed", range(20))
def test_matches_torch_autograd(engine, seed):
    p = random_problem(seed)
    opts = dict(p["opts"])
    x, w, b, gy = p["x"], p["w"], p["b"], p["gy"]
    from fastconv._validate import geometry, layout_code
    code = layout_code(opts["layout"])
    g = geometry(x.shape, w.shape, opts["stride"], opts["pad"], opts["dilation"],
                 opts["groups"], code)
    nhwc = opts["layout"] == "NHWC"
    tx = torch.tensor(x.transpose(0, 3, 1, 2) if nhwc else x, requires_grad=True)
    tw = torch.tensor(w.transpose(3, 2, 0, 1) if nhwc else w, requires_grad=True)
    tb = torch.tensor(b, requires_grad=True)
    ty = torch.nn.functional.conv2d(
        _torch_pad(tx, (g.pad_top, g.pad_bottom, g.pad_left, g.pad_right)), tw, tb,
        stride=(g.stride_h, g.stride_w), dilation=(g.dil_h, g.dil_w), groups=g.groups)
    tgy = torch.tensor(gy.transpose(0, 3, 1, 2) if nhwc else gy)
    ty.backward(tgy)

    def back(a):  # NCHW -> the layout under test
        return a.transpose(0, 2, 3, 1) if nhwc else a

    y = fastconv.conv2d(x, w, bias=b, backend=engine, **opts)
    assert_close(y, back(ty.detach().numpy()), p["dtype"], "forward")
    grads = fastconv.conv2d_backward(gy, x, w, backend=engine, **opts)
    assert_close(grads.x, back(tx.grad.numpy()), p["dtype"], "grad x")
    tw_grad = tw.grad.numpy()
    assert_close(grads.w, tw_grad.transpose(2, 3, 1, 0) if nhwc else tw_grad, p["dtype"], "grad w")
    assert_close(grads.b, tb.grad.numpy(), p["dtype"], "grad b")


def test_bench_peer_process_times_and_returns_pytorch_results(rng):
    """``fastconv bench`` times PyTorch in a process of its own; its results must be
    PyTorch's, for the bench's agreement check."""
    from fastconv._torch_peer import start
    x = rng.standard_normal((2, 3, 9, 9)).astype(np.float32)
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    gy = rng.standard_normal((2, 4, 5, 5)).astype(np.float32)
    peer = start(1)
    assert peer is not None and peer.version == torch.__version__
    try:
        peer.load(x, w, gy, 2, 1, 1)
        for pass_name, ours in [("forward", fastconv.conv2d(x, w, 2, 1)),
                                ("grad_input", fastconv.conv2d_backward(gy, x, w, 2, 1).x),
                                ("grad_weight", fastconv.conv2d_backward(gy, x, w, 2, 1).w)]:
            seconds, theirs = peer.time(pass_name, 1)
            assert seconds > 0
            np.testing.assert_allclose(theirs, ours, rtol=1e-4, atol=1e-4)
    finally:
        peer.close()
    assert not peer._proc.is_alive()
