"""The report's analysis and tables as functions: best ratio, deltas and baselines, token-weighted
NLL by group, score tables from columns or rows (and bad input), model order, the seed-noise column."""

from __future__ import annotations

import numpy as np
import pytest
from report_synthetic import make_run, section, synthetic_runs, synthetic_scores, table_rows

from datarater.errors import UserError
from datarater.eval.gain import curve_key
from datarater.eval.report.analysis import (
    at_largest_ratio,
    baseline_nlls,
    best_ratio,
    delta_vs_baseline,
    model_order,
    nll_by_group,
    noise_threshold,
    swept_ratios,
)
from datarater.eval.report.inputs import ReportInputs, RowNLL, as_score_table
from datarater.eval.report.tables import fmt_interval, nll_name, results_markdown
from datarater.eval.report.write import write_report


def test_best_ratio_counts_the_baseline_breaks_ties_low_and_never_picks_an_unfinished_run():
    assert best_ratio(2.5, [(0.25, 2.6), (0.5, 2.55)]) == 0.0  # every filtered run is worse: unfiltered
    assert best_ratio(2.5, [(0.5, 2.45), (0.25, 2.48)]) == 0.5
    assert best_ratio(2.5, [(0.75, 2.4), (0.25, 2.4)]) == 0.25  # ties: the smaller ratio
    assert best_ratio(2.4, [(0.5, 2.4)]) == 0.0  # a tie with the baseline too
    inf, nan = float("inf"), float("nan")
    assert best_ratio(2.5, [(0.5, inf), (0.9, nan)]) == 0.0  # inf: the run has no summary (sweep.final_nll)
    assert best_ratio(inf, [(0.5, 2.6), (0.25, inf)]) == 0.5
    assert best_ratio(None, [(0.5, 2.6)]) == 0.5  # no baseline run at all
    assert best_ratio(inf, [(0.5, inf)]) is None and best_ratio(None, []) is None


def test_delta_vs_baseline_and_the_baseline_of_each_model():
    assert delta_vs_baseline(2.1, 2.2) == pytest.approx(-0.1)
    assert delta_vs_baseline(2.2, 2.2) == 0.0
    assert np.isnan(delta_vs_baseline(2.1, None)) and np.isnan(delta_vs_baseline(None, 2.2))
    assert delta_vs_baseline(float("inf"), 2.2) == float("inf")  # an unfinished run stays visibly unfinished
    runs = synthetic_runs()
    assert baseline_nlls(runs) == {"nano": 2.5, "micro": 2.2}
    assert baseline_nlls([r for r in runs if r.model == "micro" or r.curator != "none"]) == {"micro": 2.2}


def test_a_best_ratio_at_the_edge_of_the_grid_is_named_and_no_other():
    runs = [make_run("nano", 1e9, 1_000_000, "none", 0.0, 2.5)]
    runs += [make_run("nano", 1e9, 1_000_000, c, rho, nll) for c, rho, nll in [
        ("datarater", 0.25, 2.45), ("datarater", 0.5, 2.40),  # best at its largest ratio: named
        ("dsir", 0.25, 2.40), ("dsir", 0.75, 2.44),  # best inside the grid
        ("random", 0.5, 2.55)]]  # best unfiltered (0): never named
    runs.append(make_run("micro", 4e9, 9_000_000, "dsir", 0.25, 2.2))  # another model's ratios do not count
    best = {"datarater": 0.5, "dsir": 0.25, "random": 0.0}
    swept = swept_ratios(runs)
    assert at_largest_ratio(best, swept) == ["datarater"]
    assert at_largest_ratio({**best, "dsir": 0.75}, swept) == ["datarater", "dsir"]
    assert at_largest_ratio({"random": 0.0}, swept) == [] and at_largest_ratio(best, swept_ratios([])) == []


def test_results_markdown_of_the_sweep():
    runs = [r for r in synthetic_runs() if r.model == "nano" and r.discard in (0.0, 0.5)]
    runs.append(make_run("micro", 4e9, 9_000_000, "datarater", 0.5, float("inf")))  # no baseline, did not finish
    md = results_markdown(runs, {"nano-datarater-0.5": 0.3, "nano-random-0.5": None}, {"datarater": 0.5, "random": 0.0},
                          {"nano": [2.5, 2.52]})
    rows = {r[0]: r for r in table_rows(md)}
    assert rows["nano-none-0.0"][5:] == ["+0.0000", "baseline"]
    assert rows["nano-datarater-0.5"][3:] == ["0.5", "2.4200", "-0.0800", "30.0%"]
    assert rows["nano-random-0.5"][5:] == ["+0.0500", "not reached"]  # its curve never got there
    assert rows["micro-datarater-0.5"][6] == "not computed"  # no gain at all (no curve on the set)
    assert rows["micro-datarater-0.5"][4:6] == ["inf", "+nan"]
    assert "Best discard ratio per curator (smallest model, by final held-out NLL): datarater 0.5, random 0" in md
    assert "Run-to-run noise: the unfiltered nano LM trained with 2 seeds" in md
    assert "Best at the largest ratio swept: datarater; the optimum may lie beyond it" in md  # 0.5 is nano's largest
    assert md.startswith("| run | model | curator | discard | final held-out NLL |")


def test_tables_and_plots_name_the_set_their_nll_is_on(tmp_path):
    sets = ("validation", "target", "source:wiki", "label:clean")
    assert [nll_name(on) for on in sets] == ["held-out NLL", "target NLL", "NLL on source wiki", "NLL on label clean"]
    assert [curve_key(on) for on in sets] == ["val_nll", "target_nll", "nll/source:wiki", "nll/label:clean"]
    runs = synthetic_runs()
    md = results_markdown(runs, {}, {"datarater": 0.5}, None, on="target")
    assert md.startswith("| run | model | curator | discard | final target NLL |") and "by final target NLL)" in md
    report = write_report(tmp_path, ReportInputs(runs=runs, nll="NLL on source wiki")).read_text()
    assert "| model | curator | discard | final NLL on source wiki |" in report
    assert "## 2. NLL on source wiki against compute" in report  # the curves are on the set that picks the ratio
    assert "| curator | best discard | final NLL on source wiki of nano |" in report
    assert "target NLL" not in report and "final held-out NLL" not in report


def test_nll_by_group_weights_rows_by_their_tokens(tmp_path):
    out = nll_by_group(np.array([10.0, 30.0, 5.0]), np.array([10, 10, 0]), ["a", "a", "b"])
    assert out["all"] == 45.0 / 20 and out["a"] == 40.0 / 20  # token-weighted, not a mean of row NLLs
    assert np.isnan(out["b"])  # no predicted token: no NLL
    with pytest.raises(UserError, match="score table has 120 rows"):
        write_report(tmp_path, ReportInputs(
            runs=synthetic_runs(), scores=synthetic_scores(),
            row_nll=RowNLL(nats={"nano-none-0.0": np.ones(3)}, tokens=np.ones(3))))


def test_score_table_from_columns_and_rows_and_bad_input():
    t = synthetic_scores(n=6)
    cols = {
        "id": t.ids,
        "source": t.sources,
        "score": t.scores,
        "text": t.texts,
        "n_segments": t.n_segments,
        "label": t.labels,
    }
    rows = [
        {
            "id": t.ids[i],
            "source": t.sources[i],
            "score": t.scores[i],
            "text": t.texts[i],
            "n_segments": int(t.n_segments[i]),
            "label": t.labels[i],
            "curator_scores": {"random": float(t.curator_scores["random"][i])},
        }
        for i in range(6)
    ]
    a, b = as_score_table(cols), as_score_table(rows)
    assert a.ids == b.ids == t.ids and a.labels == b.labels == t.labels
    np.testing.assert_array_equal(a.scores, b.scores)
    np.testing.assert_array_equal(b.curator_scores["random"], t.curator_scores["random"])
    with pytest.raises(UserError, match="missing key 'text'"):
        as_score_table({k: v for k, v in cols.items() if k != "text"})
    with pytest.raises(UserError, match="5 sources"):
        as_score_table({**cols, "source": t.sources[:5]})
    with pytest.raises(UserError, match="NaN"):
        as_score_table({**cols, "score": np.where(np.arange(6) == 2, np.nan, t.scores)})
    with pytest.raises(UserError, match="row 1: missing key 'score'"):
        as_score_table([rows[0], {k: v for k, v in rows[1].items() if k != "score"}])


def test_model_order_falls_back_to_flops_per_step_without_parameter_counts():
    runs = synthetic_runs()
    for r in runs:
        r.n_params = None
        if r.model == "nano":
            r.flops_per_step = 1e12  # now the largest by FLOPs per step
    assert model_order(runs) == ["micro", "nano"]


def test_duplicate_run_names_are_an_error(tmp_path):
    runs = synthetic_runs()
    runs[1].name = runs[0].name
    with pytest.raises(UserError, match="unique"):
        write_report(tmp_path, ReportInputs(runs=runs))


def test_noise_column_flags_differences_beyond_the_seed_spread(tmp_path):
    runs = synthetic_runs()
    spread = [2.50, 2.52, 2.47]  # nano unfiltered over three seeds, the baseline's first
    thr = noise_threshold(spread)
    assert thr == pytest.approx(2 * np.sqrt(2) * np.std(spread, ddof=1))
    assert noise_threshold([2.5]) is None and noise_threshold([2.5, float("nan")]) is None
    md = write_report(tmp_path, ReportInputs(runs=runs, baseline_spread={"nano": spread})).read_text()
    part = section(md, "## 1.")
    assert "outside seed spread" in part and f"{thr:.4f}" in part
    for row in table_rows(part):
        model, curator, nll, beyond = row[0], row[1], float(row[3]), row[5]
        base = 2.50 if model == "nano" else 2.2
        if curator == "none" or model != "nano":  # micro has no spread: nothing claimed
            assert beyond == "—", row
        else:
            assert beyond == ("yes" if abs(nll - base) > thr else "no"), row
    assert {r[5] for r in table_rows(part) if r[0] == "nano" and r[1] != "none"} == {"yes", "no"}
    # without a spread the table keeps its columns
    plain = section(write_report(tmp_path / "p", ReportInputs(runs=runs)).read_text(), "## 1.")
    assert "outside seed spread" not in plain and "Run-to-run noise" not in plain


def test_an_interval_is_rounded_outward_so_it_still_holds_its_estimate():
    assert fmt_interval(0.9962, 1.0) == "[0.99, 1.00]"  # printed as [1.00, 1.00] beside 0.998 before
    assert fmt_interval(0.29, 0.56) == "[0.29, 0.56]"  # values at two decimals stay put (0.29 x 100 < 29)
    assert fmt_interval(0.4449, 0.5201) == "[0.44, 0.53]"
    assert fmt_interval(float("nan"), 0.5) == "[n/a, 0.50]"
