"""The README's measured table, from several ``fastconv bench --json`` runs.

    python tools/bench_table.py run1.json run2.json ...

Each time is the median over the runs of each run's median; each ratio is PyTorch's
time over ours, from those medians. The geometric means are given per run, as a range
and its median, because on a noisy machine they are the figure to read. Also printed: the im2col
engine's share of the SGEMM ceiling on the large 3x3 layers, per run.
"""
from __future__ import annotations

import argparse
import json

import numpy as np

from fastconv.bench import geomean  # the one `fastconv bench` prints its means with
from fastconv.suite import LARGE_3X3

ENGINES = ("direct", "im2col", "auto")
PASSES = ("forward", "grad_input", "grad_weight")


def run_geomeans(run, engine, skip=()):
    """{pass: geometric mean of torch time / engine time} for one run."""
    return {p: geomean([r["vs_torch"][engine] for r in run["rows"]
                        if r["pass"] == p and r["layer"] not in skip]) for p in PASSES}


def _spread(per_run, p):
    """'lo–hi (median)' of one pass's geometric means over the runs."""
    g = [r[p] for r in per_run]
    return f"{min(g):.2f}–{max(g):.2f}x ({float(np.median(g)):.2f})"


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
    print(f"Measured {m['date'].split()[0]} ({dates}) on {m['cpu']} ({m['cores']} cores, "
          f"{first['threads']} threads, SIMD {m['simd']}), {first['dtype']} NCHW; each time is "
          f"the median over {len(runs)} `fastconv bench` runs of each run's median of "
          f"{first['repeat']}; PyTorch {m['torch']}, NumPy {m['numpy']}, Numba {m['numba']}; "
          f"SGEMM ceiling {ceiling:.0f} GFLOP/s (median over the runs). "
          f"Ratio = PyTorch time / our time.\n")
    print("| layer | pass | direct ms | im2col ms | auto ms | torch ms | auto GFLOP/s "
          "| auto % ceiling | auto vs torch | auto chose |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---|")
    for i, row in enumerate(first["rows"]):
        rows = [r["rows"][i] for r in runs]
        med = {e: float(np.median([r["median_s"][e] for r in rows]))
               for e in (*ENGINES, "torch")}
        gf = row["flops"] / med["auto"] / 1e9
        chose = [r["auto_chose"] for r in rows]
        print(f"| {row['layer']} | {row['pass']} | "
              + " | ".join(f"{med[e] * 1e3:.2f}" for e in (*ENGINES, "torch"))
              + f" | {gf:.0f} | {gf / ceiling:.0%} | {med['torch'] / med['auto']:.2f}x"
              f" | {max(set(chose), key=chose.count)} |")
    print("\n| geometric mean vs torch, range over the runs (median) | forward | grad_input "
          "| grad_weight |")
    print("|---|---:|---:|---:|")
    for engine in ENGINES:
        per_run = [run_geomeans(r, engine) for r in runs]
        print(f"| {engine} | " + " | ".join(_spread(per_run, p) for p in PASSES) + " |")
    per_run = [run_geomeans(r, "im2col", ("mobilenet_dw",)) for r in runs]
    print("| im2col without mobilenet_dw | " + " | ".join(_spread(per_run, p) for p in PASSES)
          + " |")
    print("\nim2col forward, share of each run's SGEMM ceiling:")
    for name in LARGE_3X3:
        shares = [r2["ceiling_share"]["im2col"] for r in runs for r2 in r["rows"]
                  if r2["layer"] == name and r2["pass"] == "forward"]
        if shares:
            print(f"  {name}: " + ", ".join(f"{s:.0%}" for s in shares))


if __name__ == "__main__":
    main()
