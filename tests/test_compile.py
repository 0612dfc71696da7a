"""The first call in a fresh environment compiles only the kernels it needs, once, and
``fastconv.compile()`` compiles them ahead of time (kernels counted through Numba's
compile events by tools/first_call.py; the wall-clock figures are in the README)."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import fastconv
from fastconv.engines import _products

FIRST_CALL = Path(__file__).resolve().parent.parent / "tools" / "first_call.py"
pytestmark = pytest.mark.skipif(not FIRST_CALL.exists(), reason="tools/ not present")


def first_call(numba_cache, *args) -> dict:
    env = {**os.environ, "NUMBA_CACHE_DIR": str(numba_cache)}
    out = subprocess.run([sys.executable, str(FIRST_CALL), *args], env=env,
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _ours(compiled):
    return [(name, args) for name, args in compiled if name.startswith("fastconv.")]


@pytest.mark.slow
@pytest.mark.parametrize("dtype, layout", [("float32", "NCHW"), ("float64", "NHWC")])
def test_first_call_compiles_only_what_it_needs(tmp_path, dtype, layout):
    run = first_call(tmp_path, "im2col", "--dtype", dtype, "--layout", layout)
    ours = _ours(run["compiled"])
    names = [name for name, _ in ours]
    kernels = {n.rsplit(".", 1)[1] for n in names}
    if layout == "NCHW" and _products.team() is not None:
        # the NCHW pieces run on the direct engine's OpenMP team (csrc/_pieces.pxi),
        # compiled with the wheel: nothing of Numba's is compiled at all
        assert kernels == set(), names
        return
    # each kernel once: one specialisation per function, whatever the thread count
    assert len(ours) == len(set(ours)) and len(names) == len(set(names)), names
    other_layout = "_nhwc" if layout == "NCHW" else "_nchw"
    assert any(layout.lower() in n for n in names), names
    assert not any(n.endswith(other_layout) for n in names), names
    other_dtype = "float64" if dtype == "float32" else "float32"
    assert not any(f"Array({other_dtype}" in args for _, args in ours), ours
    # the passes of one 3x3 layer: the forward kernel (grad_input at stride 1 runs it
    # with flipped filters) and grad_weight's; the copy loops, the filter flip, the
    # gemm call and FTZ/DAZ are C (csrc/im2col_loops.c)
    assert kernels == {f"_forward_{layout.lower()}", f"_grad_weight_{layout.lower()}"}, names
    # a second process compiles nothing: everything came from the cache
    assert first_call(tmp_path, "im2col", "--dtype", dtype, "--layout", layout)[
        "compiled"] == []


@pytest.mark.parametrize("engine", ["direct", "winograd", "reference"])
def test_the_compiled_engines_compile_nothing(tmp_path, engine):
    assert _ours(first_call(tmp_path, engine)["compiled"]) == []


@pytest.mark.slow
def test_compile_ahead_of_time_fills_the_cache(tmp_path):
    # NHWC: the NCHW pieces run on the team, compiled with the wheel
    ahead = first_call(tmp_path, "im2col", "--compile", "--layout", "NHWC")
    assert _ours(ahead["compiled"])
    assert first_call(tmp_path, "im2col", "--layout", "NHWC")["compiled"] == []


def test_compile_checks_its_arguments():
    with pytest.raises(ValueError, match=r"dtypes must be drawn from \('float32', 'float64'\)"):
        fastconv.compile("float16")
    with pytest.raises(ValueError, match=r"layouts must be drawn from \('NCHW', 'NHWC'\), got 'HWCN'"):
        fastconv.compile(layouts=["HWCN"])
    with pytest.raises(TypeError, match="dtypes must be a sequence"):
        fastconv.compile(3)


def test_compile_command_line(tmp_path):
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path)}
    bad = subprocess.run([sys.executable, "-m", "fastconv", "compile", "--dtypes", "int8"],
                         env=env, capture_output=True, text=True)
    assert bad.returncode == 2 and "dtypes must be drawn from" in bad.stderr
