"""How well ``auto`` chose, from several ``fastconv bench --json`` runs of one machine.

    python tools/dispatch_table.py run1.json run2.json run3.json

Each engine's time on each row is the median over the runs of each run's median; the
row's fastest engine, auto's miss (its chosen engine more than 1.10x the fastest) and
the per-pass time-weighted ratios are then found by the same functions ``fastconv
bench`` uses on one run (``dispatch_verdict``, ``dispatch_summary``), so the verdicts
read off three runs are those of their medians, not a vote. Prints a Markdown table
for the closing notes and the README. Where autotuned runs chose differently, the row
names each choice and auto's own column is taken as the chosen engine's time.
"""
from __future__ import annotations

import argparse
import json

import numpy as np

from fastconv.bench import COLUMNS, dispatch_summary, dispatch_verdict


def median_rows(runs) -> list[dict]:
    """The first run's rows, each engine's time the median over the runs."""
    keyed = [{(r["layer"], r["pass"]): r for r in run["rows"]} for run in runs]
    rows = []
    for r in runs[0]["rows"]:
        key = (r["layer"], r["pass"])
        same = [k[key] for k in keyed if key in k]
        # Autotuned runs may choose differently from run to run (timings decide): the
        # row then names every choice, and auto's own column stands for the chosen one.
        chose = "/".join(sorted({s["auto_chose"] for s in same}))
        times = {e: float(np.median([s["median_s"][e] for s in same]))
                 for e in r["median_s"]}
        rows.append({"layer": key[0], "pass": key[1], "median_s": times,
                     "auto_chose": chose, "runs": len(same)})
    return rows


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+")
    args = ap.parse_args(argv)
    runs = [json.load(open(p)) for p in args.runs]
    candidates = runs[0].get("dispatch", {}).get("candidates", ["direct", "im2col"])
    rows = median_rows(runs)
    for r in rows:
        r.update(dispatch_verdict(r["median_s"], r["auto_chose"], candidates))
    m = runs[0]["machine"]
    print(f"{m.get('cpu', '?')}, SIMD {m.get('simd', '?')}, {runs[0]['threads']} threads, "
          f"{runs[0]['dtype']}, {runs[0].get('layout', 'NCHW')}; medians of {len(runs)} "
          f"runs ({', '.join(run['machine']['date'] for run in runs)})\n")
    engines = [e for e in COLUMNS if any(e in r["median_s"] for r in rows)]
    print("| layer | pass | " + " | ".join(f"{e} ms" for e in engines)
          + " | fastest | auto chose | chosen / fastest |")
    print("|---|---|" + "---:|" * len(engines) + "---|---|---:|")
    for r in rows:
        cells = [f"{1e3 * r['median_s'][e]:.2f}" if e in r["median_s"] else "–"
                 for e in engines]
        ratio = f"{r['chosen_vs_fastest']:.2f}x" + (" **miss**" if r["auto_missed"] else "")
        print(f"| {r['layer']} | {r['pass']} | " + " | ".join(cells)
              + f" | {r['fastest']} | {r['auto_chose']} | {ratio} |")
    s = dispatch_summary(rows)
    print(f"\nmissed: {len(s['missed'])} of {s['rows']} rows; time-weighted always-fastest "
          "over chosen (target >= 0.97): "
          + ", ".join(f"{p} {d['weighted']:.3f}" for p, d in s["per_pass"].items())
          + "; over auto's own column: "
          + ", ".join(f"{p} {d['weighted_auto']:.3f}" for p, d in s["per_pass"].items()))


if __name__ == "__main__":
    main()
