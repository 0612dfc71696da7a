"""fastconv.jax against jax.lax.conv_general_dilated (the slow twin here): values and
gradients under jit, grad and vmap, over a seeded grid of strides, paddings, dilations,
groups and both layouts; and the errors for what is not supported."""
import numpy as np
import pytest
from conftest import assert_close

jax = pytest.importorskip("jax")
import jax.numpy as jnp  # noqa: E402
from jax import lax  # noqa: E402

import fastconv.jax as fj  # noqa: E402

DN = {"NCHW": ("NCHW", "OIHW", "NCHW"), "NHWC": ("NHWC", "HWIO", "NHWC")}


def _problem(seed):
    rng = np.random.default_rng(seed)
    groups = int(rng.choice([1, 2, 3]))
    Cg, Kg = int(rng.integers(1, 4)), int(rng.integers(1, 3))
    R, S = int(rng.integers(1, 4)), int(rng.integers(1, 4))
    stride = (int(rng.integers(1, 3)), int(rng.integers(1, 3)))
    dilation = (int(rng.integers(1, 3)), int(rng.integers(1, 3)))
    padding = ["SAME", "VALID", "SAME_LOWER", ((1, 0), (2, 1))][int(rng.integers(4))]
    layout = ("NCHW", "NHWC")[int(rng.integers(2))]
    H = int(rng.integers(dilation[0] * (R - 1) + 1, 11))
    W = int(rng.integers(dilation[1] * (S - 1) + 1, 11))
    N, C, K = int(rng.integers(1, 3)), Cg * groups, Kg * groups
    x = rng.standard_normal((N, C, H, W) if layout == "NCHW" else (N, H, W, C))
    w = rng.standard_normal((K, Cg, R, S) if layout == "NCHW" else (R, S, Cg, K))
    kw = dict(window_strides=stride, padding=padding, rhs_dilation=dilation,
              dimension_numbers=DN[layout], feature_group_count=groups)
    return x.astype(np.float32), w.astype(np.float32), kw


def _pair(kw):
    ours = jax.jit(lambda x, w: fj.conv_general_dilated(x, w, **kw))
    ref = jax.jit(lambda x, w: lax.conv_general_dilated(x, w, **kw))
    return ours, ref


def _loss(conv):
    return lambda x, w: jnp.sum(jnp.tanh(conv(x, w)) ** 2)


@pytest.mark.parametrize("seed", range(30))
def test_values_and_grads_equal_lax(seed):
    x, w, kw = _problem(seed)
    ours, ref = _pair(kw)
    assert_close(ours(x, w), ref(x, w), np.float32, str(kw))
    g_ours = jax.jit(jax.grad(_loss(ours), (0, 1)))(x, w)
    g_ref = jax.grad(_loss(ref), (0, 1))(x, w)
    for a, b, n in zip(g_ours, g_ref, "xw"):
        assert_close(a, b, np.float32, f"grad {n} {kw}")


def test_float64():
    with jax.enable_x64(True):
        x, w, kw = _problem(3)
        x, w = x.astype(np.float64), w.astype(np.float64)
        ours, ref = _pair(kw)
        y = ours(x, w)
        assert y.dtype == np.float64
        assert_close(y, ref(x, w), np.float64)
        for a, b in zip(jax.grad(_loss(ours), (0, 1))(x, w), jax.grad(_loss(ref), (0, 1))(x, w)):
            assert_close(a, b, np.float64)


@pytest.mark.parametrize("seed", range(4))
def test_vmap_over_inputs_folds_into_n(seed, monkeypatch):
    x, w, kw = _problem(seed)
    xb = np.stack([x, 2 * x + 1, -x])
    ours, ref = _pair(kw)
    import fastconv
    calls = []
    real = fastconv.conv2d
    monkeypatch.setattr(fastconv, "conv2d", lambda xa, *a, **k: calls.append(xa.shape) or real(xa, *a, **k))
    y = jax.jit(jax.vmap(ours, (0, None)))(xb, w)
    assert len(calls) == 1 and calls[0][0] == 3 * x.shape[0]  # one call, B * N images
    assert_close(y, jax.vmap(ref, (0, None))(xb, w), np.float32)
    # grad of a vmapped loss (x's gradient folds; w's is summed over the mapped axis)
    g = jax.grad(lambda x, w: jax.vmap(_loss(ours), (0, None))(x, w).sum(), (0, 1))(xb, w)
    r = jax.grad(lambda x, w: jax.vmap(_loss(ref), (0, None))(x, w).sum(), (0, 1))(xb, w)
    for a, b in zip(g, r):
        assert_close(a, b, np.float32)


def test_vmap_over_inputs_and_filters_and_per_example_grads():
    x, w, kw = _problem(5)
    rng = np.random.default_rng(0)
    xb = np.stack([x, -x])
    wb = np.stack([w, rng.standard_normal(w.shape).astype(np.float32)])
    ours, ref = _pair(kw)
    assert_close(jax.vmap(ours)(xb, wb), jax.vmap(ref)(xb, wb), np.float32)
    for a, b in zip(jax.vmap(jax.grad(_loss(ours), (0, 1)))(xb, wb),
                    jax.vmap(jax.grad(_loss(ref), (0, 1)))(xb, wb)):
        assert_close(a, b, np.float32)
    # per-example gradients: x mapped, w shared
    for a, b in zip(jax.vmap(jax.grad(_loss(ours), 1), (0, None))(xb, w),
                    jax.vmap(jax.grad(_loss(ref), 1), (0, None))(xb, w)):
        assert_close(a, b, np.float32)


def test_conv2d_with_fastconvs_arguments():
    rng = np.random.default_rng(7)
    x = rng.standard_normal((2, 9, 8, 6)).astype(np.float32)  # NHWC
    w = rng.standard_normal((3, 3, 2, 6)).astype(np.float32)  # HWIO, groups 3
    b = rng.standard_normal(6).astype(np.float32)
    import fastconv
    opts = dict(stride=2, pad=((1, 0), (0, 2)), dilation=(1, 2), groups=3, layout="NHWC")
    y = jax.jit(lambda x, w, b: fj.conv2d(x, w, bias=b, **opts))(x, w, b)
    assert_close(y, fastconv.conv2d(x, w, bias=b, **opts), np.float32)
    # bias's gradient too, against lax
    dn = DN["NHWC"]
    lax_f = lambda x, w, b: lax.conv_general_dilated(  # noqa: E731
        x, w, (2, 2), ((1, 0), (0, 2)), rhs_dilation=(1, 2), dimension_numbers=dn,
        feature_group_count=3) + b
    loss = lambda f: lambda *a: jnp.sum(jnp.sin(f(*a)))  # noqa: E731
    ours = jax.grad(loss(lambda x, w, b: fj.conv2d(x, w, bias=b, **opts)), (0, 1, 2))(x, w, b)
    for a, r in zip(ours, jax.grad(loss(lax_f), (0, 1, 2))(x, w, b)):
        assert_close(a, r, np.float32)
    # one image without N
    assert_close(fj.conv2d(x[0], w, **opts), fastconv.conv2d(x[0], w, **opts), np.float32)


def test_dimension_numbers_object():
    x, w, kw = _problem(2)
    dn = lax.conv_dimension_numbers(x.shape, w.shape, kw["dimension_numbers"])
    ours, ref = _pair(dict(kw, dimension_numbers=dn))
    assert_close(ours(x, w), ref(x, w), np.float32)


def test_unsupported_raise_clearly():
    x = np.zeros((1, 2, 5, 5), np.float32)
    w = np.zeros((2, 2, 3, 3), np.float32)
    with pytest.raises(NotImplementedError, match="lhs_dilation other than 1"):
        fj.conv_general_dilated(x, w, (1, 1), "SAME", lhs_dilation=(2, 2))
    with pytest.raises(NotImplementedError, match="dimension_numbers must be one of"):
        fj.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=("NCHW", "HWIO", "NCHW"))
    with pytest.raises(NotImplementedError, match="negative padding"):
        fj.conv_general_dilated(x, w, (1, 1), ((-1, 0), (0, 0)))
    with pytest.raises(ValueError, match="padding must be 'SAME'"):
        fj.conv_general_dilated(x, w, (1, 1), "FULL")
    with pytest.raises(TypeError, match="lhs must be a float32 or float64 array, got dtype int32"):
        fj.conv_general_dilated(x.astype(np.int32), w, (1, 1), "SAME")
    with pytest.raises(TypeError, match="rhs must be a float32 or float64 array, got dtype float16"):
        fj.conv_general_dilated(x, w.astype(np.float16), (1, 1), "SAME")
    with jax.enable_x64(True):
        with pytest.raises(TypeError, match="rhs must have the input's dtype float32, got dtype float64"):
            fj.conv_general_dilated(x, w.astype(np.float64), (1, 1), "SAME")
    with pytest.raises(NotImplementedError, match="must be 4-D"):
        fj.conv_general_dilated(x[0], w[0], (1,), "SAME")
    with pytest.raises(ValueError, match="x must be a 4-D array"):
        fj.conv2d(x[0, 0], w)
    with pytest.raises(ValueError, match="w's input-channel dimension"):
        fj.conv2d(np.zeros((1, 3, 5, 5), np.float32), w)
