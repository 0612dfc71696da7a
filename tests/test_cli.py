"""The command line: `fastconv bench` and `python -m fastconv`."""
import json
import subprocess
import sys

import pytest


def _bench(*args, timeout=600):
    return subprocess.run([sys.executable, "-m", "fastconv", "bench", *args],
                          capture_output=True, text=True, timeout=timeout)


def test_bench_quick_runs_and_saves_json(tmp_path):
    out = tmp_path / "run.json"
    proc = _bench("--quick", "--repeat", "1", "--threads", "1", "--json", str(out))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SGEMM ceiling" in proc.stdout and "auto chose" in proc.stdout
    run = json.loads(out.read_text())
    assert run["threads"] == 1 and run["dtype"] == "float32" and run["sgemm_gflops"] > 0
    assert run["machine"]["cores"] >= 1 and run["machine"]["simd"]
    assert run["failures"] == []
    cases = {(r["layer"], r["pass"]) for r in run["rows"]}
    assert cases == {(layer, p) for layer in ("cs231n", "lenet_c5", "batch1_c4")
                     for p in ("forward", "grad_input", "grad_weight")}
    for r in run["rows"]:
        assert set(r["median_s"]) >= {"direct", "im2col", "auto"}
        assert all(t > 0 for t in r["median_s"].values())
        assert r["auto_chose"] in ("direct", "im2col")
        assert r["gflops"]["auto"] == pytest.approx(r["flops"] / r["median_s"]["auto"] / 1e9)

    # A saved run can be compared with a later one.
    proc = _bench("--layers", "lenet_c5", "--passes", "forward", "--repeat", "1", "--no-torch",
                  "--compare", str(out))
    assert proc.returncode == 0, proc.stderr
    assert "old time / new time" in proc.stdout and "lenet_c5" in proc.stdout


def test_bench_rejects_unknown_layer():
    proc = _bench("--layers", "nope")
    assert proc.returncode != 0 and "unknown layer" in proc.stderr


def test_config_command():
    proc = subprocess.run([sys.executable, "-m", "fastconv", "config"], capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "direct engine" in proc.stdout


def test_plot_needs_matplotlib_or_writes_a_png(tmp_path):
    png = tmp_path / "bench.png"
    proc = _bench("--layers", "lenet_c5", "--passes", "forward", "--repeat", "1", "--no-torch",
                  "--plot", str(png))
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        assert proc.returncode != 0 and "needs matplotlib" in proc.stderr
        assert "lenet_c5" not in proc.stdout  # refused before running anything
    else:
        assert proc.returncode == 0, proc.stderr
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
