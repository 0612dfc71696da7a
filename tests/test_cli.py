"""The command line: `fastconv bench` and `python -m fastconv`."""
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from fastconv.bench import speedups
from fastconv.networks import NETWORKS

PASSES = ("forward", "grad_input", "grad_weight")


def _bench(*args, timeout=600):
    return subprocess.run([sys.executable, "-m", "fastconv", "bench", *args],
                          capture_output=True, text=True, timeout=timeout)


# A network run times each of MobileNetV2's 155 calls alone, in three blocks that each
# start after a 0.15 s pause and 20 ms of warm-up: 80 s of waiting that keeps the figures
# clean and tells a test nothing. These runs set both to zero, in the bench process (the
# peer processes keep theirs).
_NO_PAUSES = ("import sys, fastconv.bench as b; b.SETTLE_S = b.WARM_S = 0; "
              "from fastconv.__main__ import main; sys.exit(main(sys.argv[1:]))")


def _bench_without_pauses(*args, timeout=600):
    return subprocess.run([sys.executable, "-c", _NO_PAUSES, "bench", *args],
                          capture_output=True, text=True, timeout=timeout)


def _installed(*modules):
    return all(importlib.util.find_spec(m) is not None for m in modules)


def _weighted(rows, peer, engine, pass_name):
    rs = [r["median_s"] for r in rows if r["pass"] == pass_name and peer in r["median_s"]]
    return sum(t[peer] for t in rs) / sum(t[engine] for t in rs)


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
        assert r["auto_chose"] in ("direct", "im2col", "winograd")
        assert r["gflops"]["auto"] == pytest.approx(r["flops"] / r["median_s"]["auto"] / 1e9)
    _check_misses(run, proc.stdout)
    # Beside the geometric means, the time-weighted ones, for each peer that ran.
    timed = {n for n in ("torch", "ort") if any(n in r["median_s"] for r in run["rows"])}
    assert set(run["means"]) == {f"vs_{n}" for n in timed}
    for n in timed:
        for p, mean in run["means"][f"vs_{n}"]["weighted"]["auto"].items():
            assert mean == pytest.approx(_weighted(run["rows"], n, "auto", p))

    # A saved run can be compared with a later one.
    proc = _bench("--layers", "lenet_c5", "--passes", "forward", "--repeat", "1", "--no-torch",
                  "--compare", str(out))
    assert proc.returncode == 0, proc.stderr
    assert "old time / new time" in proc.stdout and "lenet_c5" in proc.stdout


def _check_misses(run, stdout):
    """Issue 17 on a real run: Winograd timed on the one 3x3 stride-1 layer of --quick
    (batch1_c4) in the passes it computes, each row's fastest engine, the misses marked
    and counted, and per pass the time-weighted auto against always-fastest."""
    wino = {(r["layer"], r["pass"]) for r in run["rows"] if "winograd" in r["median_s"]}
    assert wino == {("batch1_c4", "forward"), ("batch1_c4", "grad_input")}
    missed = []
    for r in run["rows"]:
        t = r["median_s"]
        assert t[r["fastest"]] == min(t[e] for e in ("direct", "im2col", "winograd") if e in t)
        chosen = t[r["auto_chose"]] / t[r["fastest"]]
        assert r["auto_missed"] == (chosen > 1.10)
        assert r["auto_vs_fastest"] == pytest.approx(t["auto"] / t[r["fastest"]])
        line = next(ln for ln in stdout.splitlines()
                    if ln.split()[:2] == [r["layer"], r["pass"]])
        assert ("MISS" in line) == r["auto_missed"], line
        missed += [(r["layer"], r["pass"])] if r["auto_missed"] else []
    dispatch = run["dispatch"]
    assert [(m["layer"], m["pass"]) for m in dispatch["missed"]] == missed
    assert (f"auto missed (chosen engine >10% slower than the fastest): {len(missed)} of 9 "
            "rows") in stdout
    assert "time-weighted auto vs always-fastest" in stdout
    for p in PASSES:
        rs = [r for r in run["rows"] if r["pass"] == p]
        weighted = (sum(r["median_s"][r["fastest"]] for r in rs)
                    / sum(r["median_s"][r["auto_chose"]] for r in rs))
        assert dispatch["per_pass"][p]["weighted"] == pytest.approx(weighted)
        assert any(ln.split()[:2] == [p, f"{weighted:.3f}x"] for ln in stdout.splitlines())


def test_bench_rejects_unknown_layer():
    proc = _bench("--layers", "nope")
    assert proc.returncode != 0 and "unknown layer" in proc.stderr


def test_bench_suite_times_onnx_runtime_forward(tmp_path):
    """ONNX Runtime is the suite's second peer, on forward rows only; its results pass
    the same agreement check against im2col as the engines' and PyTorch's."""
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    out = tmp_path / "run.json"
    proc = _bench_without_pauses("--layers", "lenet_c5,mobilenet_dw", "--passes",
                                 "forward,grad_weight", "--repeat", "1", "--threads", "1",
                                 "--no-torch", "--json", str(out))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "ort ms" in proc.stdout and "speed vs ort" in proc.stdout
    run = json.loads(out.read_text())
    assert run["failures"] == [] and run["machine"]["onnxruntime"]
    assert run["notes"] == ["torch: not timed (--no-torch)"]
    for r in run["rows"]:
        if r["pass"] == "forward":
            assert r["median_s"]["ort"] > 0
            assert r["vs_ort"]["auto"] == pytest.approx(r["median_s"]["ort"] / r["median_s"]["auto"])
        else:
            assert "ort" not in r["median_s"] and r["vs_ort"] is None
    means = run["means"]["vs_ort"]
    assert set(means["weighted"]["auto"]) == {"forward"}
    assert means["weighted"]["im2col"]["forward"] == pytest.approx(
        _weighted(run["rows"], "ort", "im2col", "forward"))


def test_bench_suite_in_nhwc_against_channels_last(tmp_path):
    """--layout NHWC: our engines on NHWC arrays with HWIO filters, PyTorch (when
    installed) on channels_last tensors of the same values; every result, brought back to
    NCHW terms, agrees with im2col's; ONNX Runtime says why it is left out."""
    out = tmp_path / "run.json"
    proc = _bench_without_pauses("--layers", "cs231n,resnet_c2_1x1", "--layout", "NHWC",
                                 "--repeat", "1", "--threads", "1", "--json", str(out))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    run = json.loads(out.read_text())
    assert run["layout"] == "NHWC" and run["failures"] == []
    assert "NHWC, median of 1" in proc.stdout
    if _installed("onnxruntime", "onnx"):
        assert "ort: not timed (its convolution is NCHW only)" in run["notes"]
    assert len(run["rows"]) == 6 and all(r["median_s"]["auto"] > 0 for r in run["rows"])
    if _installed("torch"):
        assert all(r["median_s"]["torch"] > 0 for r in run["rows"])
    # the pointwise layer's passes go to the direct engine's NHWC products
    assert {r["auto_chose"] for r in run["rows"] if r["layer"] == "resnet_c2_1x1"} == {"direct"}


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


def _order_names(layers):
    """(layer, pass) of a training step: forwards in order, then back, grad_input before
    grad_weight, without the first layer's grad_input. Written out here, independently of
    fastconv.bench.training_order."""
    names = [layer.name for layer in layers]
    backward = [(n, p) for n in reversed(names) for p in ("grad_input", "grad_weight")]
    return [(n, "forward") for n in names] + backward[:-2] + [(names[0], "grad_weight")]


def test_network_run_prints_each_pass_and_saves_json(tmp_path):
    out = tmp_path / "net.json"
    proc = _bench_without_pauses("--network", "mobilenet_v2", "--batch", "1", "--repeat", "1",
                                 "--threads", "1", "--json", str(out))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    table = {" ".join(t[1:-7]): t for t in map(str.split, proc.stdout.splitlines())
             if t and t[0] == "auto"}  # engine, pass (one or two words), seven columns
    assert list(table) == ["forward", "grad_input", "grad_weight", "training step"], proc.stdout
    assert "not run: features.0.0 grad_input" in proc.stdout
    assert "ten slowest calls of auto" in proc.stdout

    run = json.loads(out.read_text())
    assert "rows" not in run and run["threads"] == 1 and run["repeat"] == 1
    net = run["network"]["mobilenet_v2"]
    assert net["batch"] == 1 and net["convolutions"] == 52 and len(net["layers"]) == 52
    rows = net["rows"]
    assert [(r["layer"], r["pass"]) for r in rows] == _order_names(NETWORKS["mobilenet_v2"](1))
    for r in rows:
        assert r["network_s"]["auto"] > 0 and r["alone_s"]["auto"] > 0
        assert r["auto_chose"] in ("direct", "im2col")
    for kind, key in (("total_s", "network_s"), ("alone_total_s", "alone_s")):
        totals = net[kind]["auto"]
        for p in PASSES:
            assert totals[p] == pytest.approx(sum(r[key]["auto"] for r in rows if r["pass"] == p))
        assert totals["training step"] == pytest.approx(sum(totals[p] for p in PASSES))
    # one timed sequence: its wall time holds every call's time
    assert net["wall_s"]["auto"][0] >= net["total_s"]["auto"]["training step"]

    # Each installed peer has its column filled, and its totals: PyTorch every pass,
    # ONNX Runtime the forward.
    forward = table["forward"]  # auto forward, network ms, alone ms, ratio, torch ms, ort ms
    for peer, modules, passes, column in (("torch", ("torch",), PASSES, 5),
                                          ("ort", ("onnxruntime", "onnx"), ("forward",), 6)):
        if not _installed(*modules):
            assert peer not in net["total_s"] and forward[column] == "-"
            continue
        assert forward[column] != "-"
        assert set(net["total_s"][peer]) >= set(passes)
        assert all(peer in r["network_s"] for r in rows if r["pass"] in passes)
        assert not any(peer in r["network_s"] for r in rows if r["pass"] not in passes)


def test_network_run_without_peers_and_compared(tmp_path):
    first, second = tmp_path / "a.json", tmp_path / "b.json"
    args = ("--network", "mobilenet_v2", "--batch", "1", "--repeat", "1", "--threads", "1",
            "--passes", "forward", "--no-torch", "--no-ort")
    proc = _bench_without_pauses(*args, "--json", str(first))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "torch: not timed (--no-torch)" in proc.stdout
    assert "ort: not timed (--no-ort)" in proc.stdout
    run = json.loads(first.read_text())
    assert set(run["network"]["mobilenet_v2"]["total_s"]) == {"auto"}
    assert run["network"]["mobilenet_v2"]["skipped"] is None  # no grad_input asked for

    proc = _bench_without_pauses(*args, "--compare", str(first), "--json", str(second))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "old total / new total" in proc.stdout
    compared = [t for t in map(str.split, proc.stdout.splitlines()) if t[:1] == ["forward"]]
    assert len(compared) == 1 and compared[0][1].endswith("x"), proc.stdout


def test_network_errors_name_what_was_expected(tmp_path):
    proc = _bench("--network", "nope")
    assert proc.returncode != 0 and "unknown network(s) ['nope']" in proc.stderr
    assert all(name in proc.stderr for name in NETWORKS)
    proc = _bench("--network", "resnet18", "--quick")
    assert proc.returncode != 0 and "--quick applies to the layer suite only" in proc.stderr
    proc = _bench("--layers", "lenet_c5", "--batch", "2")
    assert proc.returncode != 0 and "--batch applies to --network runs only" in proc.stderr
    suite = tmp_path / "suite.json"
    suite.write_text(json.dumps({"machine": {"date": "2026-11-23 10:00"}, "rows": []}))
    proc = _bench("--network", "resnet18", "--compare", str(suite))
    assert proc.returncode != 0 and "is a layer-suite run and this is a network run" in proc.stderr


def test_speedups_geometric_and_time_weighted():
    """A 1 ms layer where auto is 4x faster than the peer and a 100 ms one where it is 2x
    slower: the geometric mean says 1.41x, the time-weighted mean 0.51x."""
    rows = [{"pass": "forward", "median_s": {"direct": d, "im2col": d, "auto": a, "torch": t}}
            for d, a, t in ((1e-3, 1e-3, 4e-3), (0.1, 0.2, 0.1))]
    rows.append({"pass": "grad_input", "median_s": {"direct": 1.0, "im2col": 1.0, "auto": 1.0}})
    means = speedups(rows, "torch")
    assert means["geomean"]["auto"] == {"forward": pytest.approx(2 ** 0.5)}
    assert means["weighted"]["auto"] == {"forward": pytest.approx(0.104 / 0.201)}
    assert means["weighted"]["direct"]["forward"] == pytest.approx(0.104 / 0.101)
    assert speedups(rows, "ort") == {"geomean": {}, "weighted": {}}


def _table_runs(tmp_path, with_ort: bool):
    """Three saved suite runs for tools/bench_table.py: direct and auto get 2x slower from
    run to run, im2col is 2x slower than torch on the small layer and 2x faster on the
    large one, and ONNX Runtime (forward) takes half torch's time on the small one."""
    def run(scale, hour):
        rows = []
        for layer, t, im2col in (("cs231n", 1e-3, 2e-3), ("vgg_conv1_2", 4e-2, 2e-2)):
            for p in PASSES:
                med = {"direct": t * scale, "im2col": im2col, "auto": t * scale, "torch": t}
                if with_ort and p == "forward":
                    med["ort"] = t / 2 if layer == "cs231n" else t
                rows.append({"layer": layer, "pass": p, "flops": 1e9 * t,
                             "median_s": med, "auto_chose": "direct",
                             "vs_torch": {e: t / v for e, v in med.items()},
                             "ceiling_share": {e: 0.5 for e in med}})
        machine = {"cpu": "cpu", "cores": 2, "simd": "avx2", "torch": "2.13.0",
                   "numpy": "2", "numba": "0", "date": f"2026-11-23 {hour}"}
        if with_ort:
            machine["onnxruntime"] = "1.32.0"
        return {"machine": machine, "threads": 2, "dtype": "float32", "repeat": 9,
                "sgemm_gflops": 100.0 * scale, "rows": rows, "failures": []}

    paths = []
    for i, scale in enumerate((1.0, 2.0, 4.0)):
        paths.append(tmp_path / f"r{i}{'o' if with_ort else ''}.json")
        paths[-1].write_text(json.dumps(run(scale, f"10:0{i}")))
    tool = Path(__file__).resolve().parents[1] / "tools" / "bench_table.py"
    proc = subprocess.run([sys.executable, str(tool), *map(str, paths)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_bench_table_medians_and_ranges(tmp_path):
    """tools/bench_table.py: times are medians over the runs, the means ranges."""
    out = _table_runs(tmp_path, with_ort=False)  # runs from before ONNX Runtime
    assert "(10:00, 10:01, 10:02)" in out and "SGEMM ceiling 200 GFLOP/s" in out
    # the median run's times (scale 2), its ratio, and the ranges of the per-run means
    assert "| cs231n | forward | 2.00 | 2.00 | 2.00 | 1.00 | 0 | 0% | 0.50x | direct |" in out
    assert "ort" not in out
    geo, weighted = out.split("| geometric mean vs torch")[1].split("| time-weighted mean vs torch")
    assert "| direct | 0.25–1.00x (0.50) | 0.25–1.00x (0.50) | 0.25–1.00x (0.50) |" in geo
    # im2col: 0.5x and 2x, geometric mean 1; by time, 41 ms of torch against 22 of im2col
    assert "| im2col | 1.00–1.00x (1.00) |" in geo
    assert "| im2col | 1.86–1.86x (1.86) |" in weighted

    tool = Path(__file__).resolve().parents[1] / "tools" / "bench_table.py"
    usage = subprocess.run([sys.executable, str(tool)], capture_output=True, text=True,
                           timeout=60)
    assert usage.returncode == 2 and "RUN.json" in usage.stderr


def test_bench_table_onnx_runtime_columns(tmp_path):
    out = _table_runs(tmp_path, with_ort=True)
    assert "PyTorch 2.13.0, ONNX Runtime 1.32.0" in out
    assert "| torch ms | ort ms |" in out and "| auto vs torch | auto vs ort |" in out
    assert ("| cs231n | forward | 2.00 | 2.00 | 2.00 | 1.00 | 0.50 | 0 | 0% | 0.50x | 0.25x "
            "| direct |") in out
    assert "| cs231n | grad_input | 2.00 | 2.00 | 2.00 | 1.00 | - | 0 | 0% | 0.50x | - |" in out
    geo = out.split("| geometric mean vs ort")[1].split("\n\n")[0]
    weighted = out.split("| time-weighted mean vs ort")[1].split("\n\n")[0]
    assert "| forward |" in geo and "grad_input" not in geo
    # direct: 0.5/scale and 1/scale on the two layers; by time 40.5 ms / 41 * scale
    assert "| direct | 0.18–0.71x (0.35) |" in geo
    assert "| direct | 0.25–0.99x (0.49) |" in weighted
