"""Shared helpers: tolerances, random problems, and a comparison that explains itself."""
from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

import fastconv

# Registered here, before pytest-hypothesis reads --hypothesis-profile, which then wins.
settings.register_profile("ci", max_examples=200, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("long", max_examples=5000, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("ci")

# Agreement with the reference, relative to the largest magnitude in the reference
# result. float32 sums of up to ~10^4 products lose about sqrt(n) * 6e-8 relative to
# that scale; 2e-4 leaves room for summation order while still catching any
# misplaced tap (which is off by O(1)). float64 allows only rounding.
RTOL = {np.float32: 2e-4, np.float64: 1e-10}
FAST_ENGINES = ("direct", "im2col")
ALL_ENGINES = ("direct", "im2col", "reference")


def assert_close(actual, expected, dtype, what=""):
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
    assert actual.dtype == np.dtype(dtype), f"{what}: dtype {actual.dtype} != {np.dtype(dtype)}"
    scale = max(float(np.max(np.abs(expected), initial=0.0)), 1.0)
    err = float(np.max(np.abs(actual.astype(np.float64) - expected), initial=0.0))
    assert err <= RTOL[np.dtype(dtype).type] * scale, (
        f"{what}: max abs error {err:.3g} > {RTOL[np.dtype(dtype).type]:.1g} * {scale:.3g}")


def same_bits_on_threads(fn, threads=(1, 2, 2, 3)):
    """Run fn() with each thread count (the repeat catches run-to-run drift), assert that
    every result has the bits of the first, and return it."""
    runs = []
    for n in threads:
        with fastconv.num_threads(n):
            runs.append(fn())
    for r in runs[1:]:
        assert np.array_equal(runs[0], r)
    return runs[0]


class TeamSpy:
    """The compiled module (``_products.team()``), calling ``before(name, args)`` ahead of
    each call of the entries named: for tests that watch what reaches the OpenMP team."""

    def __init__(self, team, names, before):
        self.team, self.names, self.before = team, frozenset(names), before

    def __getattr__(self, name):
        entry = getattr(self.team, name)
        if name not in self.names:
            return entry

        def spied(*args):
            self.before(name, args)
            return entry(*args)
        return spied


def random_pad(rng):
    form = rng.integers(6)
    if form == 0:
        return int(rng.integers(0, 3))
    if form == 1:
        return (int(rng.integers(0, 3)), int(rng.integers(0, 3)))
    if form == 2:
        return tuple((int(rng.integers(0, 3)), int(rng.integers(0, 3))) for _ in range(2))
    return ("valid", "same", "full")[form - 3]


def random_problem(seed: int):
    """A random, valid convolution problem covering every option, as keyword arguments.

    Roughly: N in 1..3, groups 1..3 or depthwise, C/groups 1..4, K/groups 1..3, R and S
    1..5 independently (so R != S is common), stride 1..3, dilation 1..3, every pad
    form, both layouts, both dtypes, odd spatial sizes.
    """
    rng = np.random.default_rng(seed)
    while True:
        layout = ("NCHW", "NHWC")[rng.integers(2)]
        dtype = (np.float32, np.float64)[rng.integers(2)]
        N = int(rng.integers(1, 4))
        if rng.random() < 0.2:  # depthwise
            groups = int(rng.integers(2, 6))
            Cg, Kg = 1, 1
        else:
            groups = int(rng.integers(1, 4))
            Cg, Kg = int(rng.integers(1, 5)), int(rng.integers(1, 4))
        C, K = Cg * groups, Kg * groups
        R, S = int(rng.integers(1, 6)), int(rng.integers(1, 6))
        H, W = int(rng.integers(1, 14)), int(rng.integers(1, 14))
        stride = (int(rng.integers(1, 4)), int(rng.integers(1, 4)))
        dilation = (int(rng.integers(1, 4)), int(rng.integers(1, 4))) if rng.random() < 0.4 else 1
        pad = random_pad(rng)
        x_shape = (N, H, W, C) if layout == "NHWC" else (N, C, H, W)
        w_shape = (R, S, Cg, K) if layout == "NHWC" else (K, Cg, R, S)
        opts = dict(stride=stride, pad=pad, dilation=dilation, groups=groups, layout=layout)
        try:
            y_shape = fastconv.output_shape(x_shape, w_shape, **opts)
        except ValueError:
            continue  # the kernel does not fit; draw again
        x = rng.standard_normal(x_shape).astype(dtype)
        w = rng.standard_normal(w_shape).astype(dtype)
        b = rng.standard_normal(K).astype(dtype)
        gy = rng.standard_normal(y_shape).astype(dtype)
        return dict(x=x, w=w, b=b, gy=gy, dtype=dtype, opts=opts, flip=bool(rng.random() < 0.3))


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


def load_example(name: str):
    """examples/<name>.py as a module (the examples are scripts, not a package)."""
    path = Path(__file__).resolve().parents[1] / "examples" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# Every public function that takes caller arrays; the fixture below wraps those present.
_PUBLIC_CALLS = ("conv2d", "conv2d_backward", "conv1d", "conv1d_backward", "correlate",
                 "convolve", "conv_matrix", "linear_to_conv", "conv_to_linear", "output_shape",
                 "tune", "conv_transpose2d", "conv_transpose2d_backward", "conv_transpose1d",
                 "conv_transpose1d_backward")


# Arrays above this size are left out of the byte-for-byte snapshot: the 64-bit index
# tests pass 8 GiB of mostly untouched zero pages, which a copy would make resident.
_SNAPSHOT_MAX_BYTES = 2**28


def _arrays_in(args, kwargs):
    for a in list(args) + list(kwargs.values()):
        for b in (a if isinstance(a, (list, tuple)) else (a,)):
            if isinstance(b, np.ndarray) and b.nbytes <= _SNAPSHOT_MAX_BYTES:
                yield b


@pytest.fixture(autouse=True)
def caller_arrays_are_never_modified(monkeypatch):
    """After every call in the suite, the caller's arrays are byte-identical to before."""
    for name in _PUBLIC_CALLS:
        fn = getattr(fastconv, name, None)
        if fn is None:
            continue

        def checked(*args, __fn=fn, __name=name, **kwargs):
            before = [(a, a.tobytes()) for a in _arrays_in(args, kwargs)]
            try:
                return __fn(*args, **kwargs)
            finally:
                for a, data in before:
                    assert a.tobytes() == data, f"fastconv.{__name} modified an input array"

        monkeypatch.setattr(fastconv, name, checked)
    yield


def run_in_simd_variant(variant: str, code: str) -> None:
    """Run ``code`` in a child process on the ``variant`` kernels (FASTCONV_SIMD), 2
    threads; it must exit 0 and print "ok <variant>". Skips when this machine or build
    has no such kernels."""
    from fastconv import _direct
    if variant not in _direct.simd_info()["supported"]:
        pytest.skip(f"this machine or build has no {variant} kernels")
    env = dict(os.environ, FASTCONV_SIMD=variant, FASTCONV_NUM_THREADS="2")
    res = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                         text=True, timeout=600)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-4000:]
    assert f"ok {variant}" in res.stdout
