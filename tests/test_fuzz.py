"""Hypothesis fuzzing: every engine against the reference on drawn problems.

Sizes N 0-3, C 1-8, H and W 1-16, R and S 1-7; stride 1-4, every pad form (int,
pair, asymmetric per-side, "valid", "same", "full"), dilation 1-3, groups dividing C
and K, both layouts, both dtypes, flip on and off. A drawn problem with no valid output
must raise ValueError from every engine, never crash.

Profiles (registered in conftest.py): 200 examples by default (CI);
``--hypothesis-profile=long`` runs 5,000.
"""
import numpy as np
import pytest
from conftest import FAST_ENGINES, assert_close
from hypothesis import given
from hypothesis import strategies as st

import fastconv

small = st.integers(0, 3)
pads = st.one_of(
    small,
    st.tuples(small, small),
    st.tuples(st.tuples(small, small), st.tuples(small, small)),
    st.sampled_from(["valid", "same", "full"]),
)


@st.composite
def problems(draw):
    groups = draw(st.integers(1, 4))
    C = groups * draw(st.integers(1, max(1, 8 // groups)))
    K = groups * draw(st.integers(1, 3))
    return dict(
        N=draw(st.integers(0, 3)), C=C, K=K, groups=groups,
        H=draw(st.integers(1, 16)), W=draw(st.integers(1, 16)),
        R=draw(st.integers(1, 7)), S=draw(st.integers(1, 7)),
        stride=draw(st.one_of(st.integers(1, 4), st.tuples(st.integers(1, 4), st.integers(1, 4)))),
        dilation=draw(st.one_of(st.integers(1, 3),
                                st.tuples(st.integers(1, 3), st.integers(1, 3)))),
        pad=draw(pads),
        layout=draw(st.sampled_from(["NCHW", "NHWC"])),
        dtype=draw(st.sampled_from([np.float32, np.float64])),
        flip=draw(st.booleans()),
        seed=draw(st.integers(0, 2**32 - 1)),
    )


@given(problems())
def test_engines_match_reference(p):
    nhwc = p["layout"] == "NHWC"
    x_shape = (p["N"], p["H"], p["W"], p["C"]) if nhwc else (p["N"], p["C"], p["H"], p["W"])
    Cg = p["C"] // p["groups"]
    w_shape = (p["R"], p["S"], Cg, p["K"]) if nhwc else (p["K"], Cg, p["R"], p["S"])
    opts = dict(stride=p["stride"], pad=p["pad"], dilation=p["dilation"], groups=p["groups"],
                layout=p["layout"], flip=p["flip"])
    rng = np.random.default_rng(p["seed"])
    x = rng.standard_normal(x_shape).astype(p["dtype"])
    w = rng.standard_normal(w_shape).astype(p["dtype"])
    b = rng.standard_normal(p["K"]).astype(p["dtype"])
    try:
        y_ref = fastconv.conv2d(x, w, bias=b, backend="reference", **opts)
    except ValueError as e:
        assert "larger than the padded input" in str(e)
        for engine in FAST_ENGINES + ("auto",):
            with pytest.raises(ValueError, match="larger than the padded input"):
                fastconv.conv2d(x, w, bias=b, backend=engine, **opts)
        return
    gy = rng.standard_normal(y_ref.shape).astype(p["dtype"])
    g_ref = fastconv.conv2d_backward(gy, x, w, backend="reference", **opts)
    for engine in FAST_ENGINES:
        y = fastconv.conv2d(x, w, bias=b, backend=engine, **opts)
        assert_close(y, y_ref, p["dtype"], f"{engine} forward")
        g = fastconv.conv2d_backward(gy, x, w, backend=engine, **opts)
        for name in ("x", "w", "b"):
            assert_close(getattr(g, name), getattr(g_ref, name), p["dtype"], f"{engine} d{name}")
