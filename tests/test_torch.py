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
