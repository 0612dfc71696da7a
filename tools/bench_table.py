"""The README's measured table, from several ``fastconv bench --json`` runs.

    python tools/bench_table.py run1.json run2.json ...

Each time is the median over the runs of each run's median; each ratio is the peer's
(PyTorch's, and ONNX Runtime's on forward rows when the runs timed it) time over ours,
from those medians. The means of those ratios, geometric and time-weighted (the peer's
summed time over ours), are given per run, as a range and its median, because on a
noisy machine they are the figure to read. Also printed: the im2col engine's share of
the SGEMM ceiling on the large 3x3 layers, per run.
"""
from __future__ import annotations

import argparse
import json

import numpy as np

from fastconv.bench import ENGINES, PASSES, speedups  # the means `fastconv bench` prints
from fastconv.suite import LARGE_3X3


def run_means(run, peer, kind, engine, skip=()):
    """{pass: mean speed vs peer} of one run; ``kind`` is "geomean" or "weighted"."""
    rows = [r for r in run["rows"] if r["layer"] not in skip]
    return speedups(rows, peer)[kind].get(engine, {})


def _spread(per_run, p):
    """'lo–hi (median)' of one pass's means over the runs."""
    g = [r[p] for r in per_run]
    return f"{min(g):.2f}–{max(g):.2f}x ({float(np.median(g)):.2f})"


def _means_table(runs, peer, kind, title, passes):
    print(f"\n| {title}, range over the runs (median) | " + " | ".join(passes) + " |")
    print("|---|" + "---:|" * len(passes))
    for engine in ENGINES:
        per_run = [run_means(r, peer, kind, engine) for r in runs]
        print(f"| {engine} | " + " | ".join(_spread(per_run, p) for p in passes) + " |")
    if peer == "torch":
        per_run = [run_means(r, peer, kind, "im2col", ("mobilenet_dw",)) for r in runs]
        print("| im2col without mobilenet_dw | "
              + " | ".join(_spread(per_run, p) for p in passes) + " |")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", nargs="+", metavar="RUN.json",
                    help="files written by `fastconv bench --json`")
    paths = ap.parse_args(argv).runs
    runs = [json.load(open(p)) for p in paths]
    first = runs[0]
    m = first["machine"]
    dates = ", ".join(r["machine"]["date"].split()[1] for r in runs)
    ceiling = np.median([r["sgemm_gflops"] for r in runs])
    # ONNX Runtime's columns only when every run timed it (runs before it had none).
    has_ort = all(any("ort" in r["median_s"] for r in run["rows"]) for run in runs)
    peers = ("torch", "ort") if has_ort else ("torch",)
    ort_version = f", ONNX Runtime {m.get('onnxruntime')}" if has_ort else ""
    print(f"Measured {m['date'].split()[0]} ({dates}) on {m['cpu']} ({m['cores']} cores, "
          f"{first['threads']} threads, SIMD {m['simd']}), {first['dtype']} NCHW; each time is "
          f"the median over {len(runs)} `fastconv bench` runs of each run's median of "
          f"{first['repeat']}; PyTorch {m['torch']}{ort_version}, NumPy {m['numpy']}, "
          f"Numba {m['numba']}; SGEMM ceiling {ceiling:.0f} GFLOP/s (median over the runs). "
          f"Ratio = the peer's time / our time.\n")
    print("| layer | pass | direct ms | im2col ms | auto ms | "
          + " | ".join(f"{n} ms" for n in peers) + " | auto GFLOP/s | auto % ceiling | "
          + " | ".join(f"auto vs {n}" for n in peers) + " | auto chose |")
    print("|---|---|" + "---:|" * (3 + 2 * len(peers) + 2) + "---|")
    for i, row in enumerate(first["rows"]):
        rows = [r["rows"][i] for r in runs]
        med = {e: float(np.median([r["median_s"][e] for r in rows]))
               for e in (*ENGINES, *peers) if e in row["median_s"]}
        gf = row["flops"] / med["auto"] / 1e9
        chose = [r["auto_chose"] for r in rows]
        print(f"| {row['layer']} | {row['pass']} | "
              + " | ".join(f"{med[e] * 1e3:.2f}" if e in med else "-" for e in (*ENGINES, *peers))
              + f" | {gf:.0f} | {gf / ceiling:.0%} | "
              + " | ".join(f"{med[n] / med['auto']:.2f}x" if n in med else "-" for n in peers)
              + f" | {max(set(chose), key=chose.count)} |")
    _means_table(runs, "torch", "geomean", "geometric mean vs torch", PASSES)
    _means_table(runs, "torch", "weighted", "time-weighted mean vs torch", PASSES)
    if has_ort:
        _means_table(runs, "ort", "geomean", "geometric mean vs ort", ("forward",))
        _means_table(runs, "ort", "weighted", "time-weighted mean vs ort", ("forward",))
    print("\nim2col forward, share of each run's SGEMM ceiling:")
    for name in LARGE_3X3:
        shares = [r2["ceiling_share"]["im2col"] for r in runs for r2 in r["rows"]
                  if r2["layer"] == name and r2["pass"] == "forward"]
        if shares:
            print(f"  {name}: " + ", ".join(f"{s:.0%}" for s in shares))


if __name__ == "__main__":
    main()
