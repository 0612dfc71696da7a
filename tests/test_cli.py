"""The command line: `fastconv bench` and `python -m fastconv`."""
import json
import subprocess
import sys


def test_bench_runs_and_checks_agreement(tmp_path):
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [sys.executable, "-m", "fastconv", "bench", "--layers", "lenet_c5,cs231n", "--repeat",
         "1", "--no-torch", "--threads", "1", "--json", str(out)],
        capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "lenet_c5" in proc.stdout and "GFLOP/s" in proc.stdout
    data = json.loads(out.read_text())
    assert data["threads"] == 1
    rows = data["rows"]
    assert {(r["layer"], r["pass"], r["engine"]) for r in rows} == {
        (layer, p, e) for layer in ("lenet_c5", "cs231n")
        for p in ("forward", "grad_input", "grad_weight") for e in ("direct", "im2col")}
    assert all(r["median_s"] > 0 and r["gflops"] > 0 for r in rows)


def test_config_command():
    proc = subprocess.run([sys.executable, "-m", "fastconv", "config"], capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "direct engine" in proc.stdout
