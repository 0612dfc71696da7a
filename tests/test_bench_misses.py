"""`fastconv bench` says where `auto` missed (issue 17): the fastest engine of each row,
the rows where the engine auto chose took more than 10% longer, and per pass the
time-weighted auto against always picking the fastest engine. On synthetic rows, so
the figures are known; tests/test_cli.py runs the real thing."""
import numpy as np
import pytest

import fastconv
from fastconv import bench
from fastconv._validate import geometry

WITH_WINOGRAD = ("direct", "im2col", "winograd")


def _row(layer, pass_name, chose, candidates=WITH_WINOGRAD, **times):
    row = {"layer": layer, "pass": pass_name, "median_s": times, "auto_chose": chose}
    row.update(bench.dispatch_verdict(times, chose, candidates))
    return row


def _rows():
    """forward: a miss (direct chosen, 1.2x im2col's time) and a hit within the 10%
    (1.05x); grad_input: Winograd fastest and chosen; grad_weight: no winograd column."""
    return [
        _row("a", "forward", "direct", direct=1.2, im2col=1.0, auto=1.25),
        _row("b", "forward", "direct", direct=2.1, im2col=2.0, winograd=3.0, auto=2.1),
        _row("b", "grad_input", "winograd", direct=4.0, im2col=5.0, winograd=3.0, auto=3.3),
        _row("b", "grad_weight", "im2col", direct=1.0, im2col=1.5, auto=1.5),
    ]


def test_rows_name_their_fastest_and_mark_a_miss_over_ten_percent():
    a, b, c, d = _rows()
    assert (a["fastest"], a["auto_missed"]) == ("im2col", True)
    assert a["chosen_vs_fastest"] == pytest.approx(1.2)
    assert a["auto_vs_fastest"] == pytest.approx(1.25)  # auto's own column, kept beside
    assert (b["fastest"], b["auto_missed"]) == ("im2col", False)
    assert b["chosen_vs_fastest"] == pytest.approx(1.05)
    assert (c["fastest"], c["auto_missed"]) == ("winograd", False)
    assert c["auto_vs_fastest"] == pytest.approx(1.1)
    # without a winograd column the fastest is found among those that ran
    assert (d["fastest"], d["auto_missed"]) == ("direct", True)
    assert d["chosen_vs_fastest"] == pytest.approx(1.5)


def test_the_chosen_engines_column_decides_not_the_auto_column():
    """A slow auto column (dispatch overhead, noise) with the chosen engine the fastest
    is no miss; a fast auto column does not hide a wrong choice."""
    slow_auto = _row("x", "forward", "im2col", direct=2.0, im2col=1.0, auto=1.5)
    assert not slow_auto["auto_missed"] and slow_auto["auto_vs_fastest"] == pytest.approx(1.5)
    lucky_auto = _row("x", "forward", "direct", direct=2.0, im2col=1.0, auto=1.0)
    assert lucky_auto["auto_missed"] and lucky_auto["chosen_vs_fastest"] == pytest.approx(2.0)


def test_an_engine_the_bench_does_not_time_falls_back_to_the_auto_column():
    row = _row("x", "forward", "reference", direct=2.0, im2col=1.0, auto=1.3)
    assert row["auto_missed"] and row["chosen_vs_fastest"] == pytest.approx(1.3)


def test_winograd_is_no_candidate_where_auto_may_not_use_it():
    """float64 and precision "highest" keep auto off Winograd on purpose: a faster
    Winograd there is no miss."""
    times = dict(direct=2.0, im2col=3.0, winograd=1.0, auto=2.0)
    assert bench.auto_candidates("float64") == ("direct", "im2col")
    row = _row("x", "forward", "direct", bench.auto_candidates("float64"), **times)
    assert row["fastest"] == "direct" and not row["auto_missed"]
    with fastconv.float32_precision("highest"):
        assert bench.auto_candidates("float32") == ("direct", "im2col")
    with fastconv.float32_precision("high"):
        assert bench.auto_candidates("float32") == WITH_WINOGRAD
    assert _row("x", "forward", "direct", **times)["auto_missed"]


def test_summary_counts_misses_and_weighs_by_time():
    summary = bench.dispatch_summary(_rows())
    assert summary["rows"] == 4
    assert [(m["layer"], m["pass"], m["fastest"]) for m in summary["missed"]] == [
        ("a", "forward", "im2col"), ("b", "grad_weight", "direct")]
    forward = summary["per_pass"]["forward"]
    assert (forward["rows"], forward["missed"]) == (2, 1)
    # fastest 1.0 + 2.0 against the chosen direct's 1.2 + 2.1, and auto's 1.25 + 2.1
    assert forward["weighted"] == pytest.approx(3.0 / 3.3)
    assert forward["weighted_auto"] == pytest.approx(3.0 / 3.35)
    assert summary["per_pass"]["grad_input"]["weighted"] == pytest.approx(1.0)
    assert summary["per_pass"]["grad_weight"]["weighted"] == pytest.approx(1.0 / 1.5)
    assert set(bench.dispatch_summary(_rows()[:2])["per_pass"]) == {"forward"}


def _run(rows, summarized=True):
    machine = {"fastconv": "0", "date": "2026-12-03 10:00", "cpu": "cpu", "threads": 2,
               "cores": 2, "simd": "avx2", "numpy": "2", "numba": "0", "torch": None}
    for r in rows:
        r.update(flops=1e9, gflops={"auto": 1.0}, ceiling_share={"auto": 0.5},
                 vs_torch=None, vs_ort=None)
    return {"machine": machine, "dtype": "float32", "repeat": 3, "sgemm_gflops": 100.0,
            "rows": rows, **({"dispatch": bench.dispatch_summary(rows)} if summarized else {})}


def test_table_marks_misses_and_prints_the_summary():
    lines = bench.format_table(_run(_rows())).splitlines()
    row_a = next(line for line in lines if line.startswith("a "))
    assert row_a.split()[-4:] == ["im2col", "direct", "MISS", "1.20x"]
    row_b = next(line for line in lines if line.startswith("b ") and "forward" in line)
    assert "MISS" not in row_b and row_b.split()[-2:] == ["im2col", "direct"]
    assert any("winograd ms" in line for line in lines[:6]) and row_b.split()[4] == "3000.00"
    assert row_a.split()[4] == "-"  # no winograd on that row
    assert ("auto missed (chosen engine >10% slower than the fastest): 2 of 4 rows "
            "(forward 1 of 2, grad_input 0 of 1, grad_weight 1 of 1)") in lines
    weighted = {t[0]: t[1:3] for t in map(str.split, lines) if t and t[0] in bench.PASSES
                and len(t) > 2 and t[1].endswith("x")}
    assert weighted == {"forward": ["0.909x", "BELOW"], "grad_input": ["1.000x", "met"],
                        "grad_weight": ["0.667x", "BELOW"]}
    assert any(line.startswith("time-weighted auto vs always-fastest") for line in lines)


def test_runs_saved_before_the_summary_still_print_and_compare():
    """A run without the new keys (no dispatch, no fastest, no winograd column)."""
    old = _run([{"layer": "a", "pass": "forward", "auto_chose": "direct",
                 "median_s": {"direct": 2.0, "im2col": 1.0, "auto": 2.0}}], summarized=False)
    assert "auto missed" not in bench.format_table(old)
    new = _run(_rows())
    lines = bench.format_comparison(old, new).splitlines()
    assert lines[1].split()[2:] == list(bench.COLUMNS)
    # old / new: direct 2.0 / 1.2, im2col 1.0 / 1.0, winograd -, auto 2.0 / 1.25
    assert lines[2].split()[2:] == ["1.67x", "1.00x", "-", "1.60x"]
    assert len(lines) == 3  # only the rows the old run had


def _geometry(stride):
    return geometry((2, 8, 10, 10), (8, 8, 3, 3), stride, 1, 1, 1, 0)


def test_winograd_is_timed_where_it_computes_the_pass_itself():
    assert bench.timed_engines(_geometry(1), "forward") == bench.COLUMNS
    assert bench.timed_engines(_geometry(1), "grad_input") == bench.COLUMNS
    # its grad_weight is the direct engine's; stride 2 it does not take
    assert bench.timed_engines(_geometry(1), "grad_weight") == bench.ENGINES
    assert bench.timed_engines(_geometry(2), "forward") == bench.ENGINES


def test_winograd_rounding_passes_the_agreement_check_a_wrong_result_does_not():
    rng = np.random.default_rng(0)
    exact = rng.standard_normal(1000).astype(np.float32)
    scale = float(np.abs(exact).max())
    rounded = exact.copy()
    rounded[7] += 2.5e-4 * scale  # within Winograd's 1e-4 bound plus im2col's rounding
    wrong = exact.copy()
    wrong[7] += 0.05 * scale
    for engine, chose in (("winograd", "direct"), ("auto", "winograd")):
        rtol = bench._agree_rtol(engine, chose)
        assert bench._agree(rounded, exact, "float32", rtol)
        assert not bench._agree(wrong, exact, "float32", rtol)
    # the other engines keep the tighter tolerance
    assert not bench._agree(rounded, exact, "float32", bench._agree_rtol("direct", "winograd"))
    assert not bench._agree(rounded, exact, "float32", bench._agree_rtol("auto", "im2col"))
