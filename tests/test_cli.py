"""The command line: `fastconv bench` and `python -m fastconv`."""
import json
import subprocess
import sys
from pathlib import Path

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


def test_bench_table_medians_and_ranges(tmp_path):
    """tools/bench_table.py: times are medians over the runs, geometric means ranges."""
    def run(scale, hour):
        rows = []
        for layer, t in (("cs231n", 1e-3), ("vgg_conv1_2", 4e-2)):
            for p in ("forward", "grad_input", "grad_weight"):
                med = {"direct": t * scale, "im2col": 2 * t, "auto": t * scale, "torch": t}
                rows.append({"layer": layer, "pass": p, "flops": 1e9 * t,
                             "median_s": med, "auto_chose": "direct",
                             "vs_torch": {e: t / v for e, v in med.items()},
                             "ceiling_share": {e: 0.5 for e in med}})
        machine = {"cpu": "cpu", "cores": 2, "simd": "avx2", "torch": "2.13.0",
                   "numpy": "2", "numba": "0", "date": f"2026-11-23 {hour}"}
        return {"machine": machine, "threads": 2, "dtype": "float32", "repeat": 9,
                "sgemm_gflops": 100.0 * scale, "rows": rows, "failures": []}

    paths = []
    for i, scale in enumerate((1.0, 2.0, 4.0)):
        paths.append(tmp_path / f"r{i}.json")
        paths[-1].write_text(json.dumps(run(scale, f"10:0{i}")))
    tool = Path(__file__).resolve().parents[1] / "tools" / "bench_table.py"
    proc = subprocess.run([sys.executable, str(tool), *map(str, paths)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "(10:00, 10:01, 10:02)" in out and "SGEMM ceiling 200 GFLOP/s" in out
    # the median run's times (scale 2), its ratio, and the ranges of the per-run means
    assert "| cs231n | forward | 2.00 | 2.00 | 2.00 | 1.00 | 0 | 0% | 0.50x | direct |" in out
    assert "| direct | 0.25–1.00x (0.50) | 0.25–1.00x (0.50) | 0.25–1.00x (0.50) |" in out
    assert "| im2col | 0.50–0.50x (0.50) |" in out

    usage = subprocess.run([sys.executable, str(tool)], capture_output=True, text=True,
                           timeout=60)
    assert usage.returncode == 2 and "RUN.json" in usage.stderr
