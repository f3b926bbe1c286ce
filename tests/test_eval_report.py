"""The analysis report on synthetic inputs: every image it links exists and is a real PNG, the
extremes are the true extremes, the kept fractions match a direct computation."""

from __future__ import annotations

import csv
import re
import struct
from pathlib import Path

import numpy as np
import pytest

from datarater.errors import UserError
from datarater.eval.audit import roc_auc
from datarater.eval.report.analysis import (
    baseline_nlls,
    baselines_by_model,
    best_ratio,
    best_ratios,
    delta_vs_baseline,
    extreme_indices,
    kept_fraction_by_source,
    model_order,
    nll_by_group,
    noise_threshold,
)
from datarater.eval.report.inputs import ReportInputs, RowNLL, RunResult, ScoreTable, as_score_table
from datarater.eval.report.tables import md_escape, printable_excerpt, results_markdown, write_results_csv
from datarater.eval.report.write import write_report

SOURCES = ["wiki", "news", "chat", "tables"]
LABELS = ["clean", "mojibake", "all_caps"]


def synthetic_curve(final: float, flops_per_step: float, curate_per_step: float, steps: int = 100):
    return [
        (s, s * flops_per_step, s * curate_per_step, final + 3.0 * np.exp(-s / 15.0)) for s in range(0, steps + 1, 10)
    ]


def synthetic_runs() -> list[RunResult]:
    runs = []
    final_nano = {
        ("none", 0.0): 2.50,
        ("datarater", 0.25): 2.46,
        ("datarater", 0.5): 2.42,
        ("datarater", 0.9): 2.60,
        ("random", 0.25): 2.52,
        ("random", 0.5): 2.55,
        ("random", 0.9): 2.70,
    }
    for (curator, rho), final in final_nano.items():
        runs.append(_run("nano", 1e9, 2_000_000, curator, rho, final))
    for curator, rho, final in (("none", 0.0, 2.2), ("datarater", 0.5, 2.1), ("random", 0.25, 2.25)):
        runs.append(_run("micro", 4e9, 9_000_000, curator, rho, final))
    return runs


def _run(model, fps, n_params, curator, rho, final) -> RunResult:
    curate = 0.0 if curator == "none" else 0.1 * fps
    tasks = {
        "piqa": {"acc": 0.55 + final / 100, "acc_norm": 0.56, "n": 50},
        "arc_easy": {"acc": 0.3, "acc_norm": 0.31, "n": 40},
    }
    return RunResult(
        name=f"{model}-{curator}-{rho}",
        model=model,
        curator=curator,
        discard=rho,
        flops_per_step=fps,
        curve=synthetic_curve(final, fps, curate),
        final_val_nll=final,
        tasks=tasks,
        n_params=n_params,
    )


def synthetic_scores(n: int = 120, seed: int = 0) -> ScoreTable:
    rng = np.random.default_rng(seed)
    sources = [SOURCES[i % len(SOURCES)] for i in range(n)]
    labels = [LABELS[i % len(LABELS)] if i % 2 else "clean" for i in range(n)]
    texts = []
    for i, (s, lab) in enumerate(zip(sources, labels, strict=True)):
        base = f"Document {i} from {s}. Some prose | with a pipe and *stars*.\nSecond line."
        if lab == "mojibake":
            base = base.replace("o", "Ã¶") + "\x00\x01"
        elif lab == "all_caps":
            base = base.upper()
        texts.append(base)
    scores = rng.normal(size=n) + np.array([1.5 if lab == "clean" else 0.0 for lab in labels])
    return ScoreTable(
        ids=[f"train-{i:08d}" for i in range(n)],
        sources=sources,
        scores=scores,
        texts=texts,
        n_segments=rng.integers(1, 4, size=n),
        labels=labels,
        curator_scores={"random": rng.normal(size=n), "heuristic": -np.array([t.count("Ã") for t in texts], float)},
    )


def synthetic_row_nll(runs: list[RunResult], table: ScoreTable) -> RowNLL:
    rng = np.random.default_rng(1)
    tokens = rng.integers(50, 128, size=len(table))
    return RowNLL(nats={r.name: tokens * rng.uniform(1.5, 4.0, size=len(table)) for r in runs}, tokens=tokens)


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    runs = synthetic_runs()
    gains = {r.name: (0.3 if r.curator == "datarater" else None) for r in runs if r.curator != "none"}
    table = synthetic_scores()
    path = write_report(
        out, ReportInputs(runs=runs, gains=gains, scores=table, row_nll=synthetic_row_nll(runs, table),
                          ratios=[0.0, 0.25, 0.5, 0.9], notes=["synthetic"])
    )
    return path, runs, table


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG signature"
    assert data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def section(md: str, heading: str) -> str:
    start = md.index(heading)
    nxt = re.search(r"^#{2,3} ", md[start + len(heading) :], flags=re.M)
    return md[start : start + len(heading) + (nxt.start() if nxt else len(md))]


def table_rows(text: str) -> list[list[str]]:
    """Cells of the Markdown table rows in ``text`` (header and separator excluded), split on unescaped pipes."""
    rows = [line for line in text.splitlines() if line.startswith("|")]
    return [[c.strip() for c in re.split(r"(?<!\\)\|", line)[1:-1]] for line in rows[2:]]


def test_every_linked_image_exists_and_is_a_reasonable_png(report):
    from datarater.programs.report import linked_images

    path, _, _ = report
    md = path.read_text()
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md)
    # what `datarater report` sends to the trackers: every plot shown, by its file's stem
    assert linked_images(path) == {Path(m).stem: path.parent / m for m in links}
    expected = {
        "nll_vs_flops_nano.png",
        "nll_vs_flops_micro.png",
        "best_ratio.png",
        "score_hist_by_source.png",
        "kept_fraction.png",
        "feature_coefficients.png",
        "audit_auc.png",
        "score_hist_by_label.png",
        "nll_delta_by_source.png",
        "nll_delta_by_label.png",
    }
    assert expected <= set(links)
    for link in links:
        data = (path.parent / link).read_bytes()
        w, h = png_size(data)
        assert 300 <= w <= 2500 and 200 <= h <= 2500, (link, w, h)
        assert len(data) > 10_000, link


def test_no_section_is_left_out_when_every_input_is_given(report):
    md = report[0].read_text()
    for k in range(1, 11):
        assert re.search(rf"^## {k}\. ", md, flags=re.M)
    assert "Left out" not in md


def test_extremes_are_the_true_lowest_and_highest(report):
    path, _, table = report
    md = path.read_text()
    order = np.argsort(table.scores)
    low_ids = [row[5] for row in table_rows(section(md, "### 10 lowest"))]
    high_ids = [row[5] for row in table_rows(section(md, "### 10 highest"))]
    assert low_ids == [md_escape(table.ids[i]) for i in order[:10]]
    assert high_ids == [md_escape(table.ids[i]) for i in order[::-1][:10]]
    lo, hi = extreme_indices(table.scores, 10)
    assert lo.tolist() == order[:10].tolist() and hi.tolist() == order[::-1][:10].tolist()


def test_excerpts_keep_the_table_shape_and_show_invisible_characters(report):
    md = report[0].read_text()
    rows = table_rows(section(md, "### 10 lowest")) + table_rows(section(md, "### 10 highest"))
    # "#", score, source, label, segments, id, excerpt: the pipes in the texts are escaped
    assert {len(r) for r in rows} == {7}
    assert printable_excerpt("a\x00b\x01\n\tc  d\u200b") == "a␀b␁↵→c␣␣d\\u200b"
    long = printable_excerpt("x" * 1000)
    assert len(long) == 300 and long.endswith("…")
    assert printable_excerpt("y" * 300) == "y" * 300
    assert md_escape("a|b*c") == "a\\|b\\*c"


def direct_kept(scores, sources, rho):
    n = len(scores)
    k = int(round((1 - rho) * n))
    threshold = np.sort(scores)[::-1][k - 1]  # scores are distinct: keep those at or above the k-th largest
    kept = scores >= threshold
    src = np.asarray(sources)
    return {s: kept[src == s].mean() for s in set(sources)}, {s: kept[src == s].sum() / k for s in set(sources)}


def test_kept_fraction_matches_a_direct_computation(report):
    path, _, table = report
    ratios = [0.0, 0.25, 0.5, 0.9]
    names, kept, share = kept_fraction_by_source(table.scores, table.sources, ratios)
    assert names == sorted(SOURCES)
    for j, rho in enumerate(ratios):
        frac, mix = direct_kept(table.scores, table.sources, rho)
        for i, s in enumerate(names):
            assert kept[i, j] == pytest.approx(frac[s])
            assert share[i, j] == pytest.approx(mix[s])
    # the report's first kept-fraction table shows the same numbers
    rows = table_rows(section(path.read_text(), "## 5."))[: len(names)]
    assert len(rows) == len(names)
    for i, row in enumerate(rows):
        assert row[0] == names[i]
        assert row[1:] == [f"{100 * v:.1f}%" for v in kept[i]]


def test_results_table_baselines_best_ratio_and_gains(report):
    path, runs, _ = report
    assert model_order(runs) == ["nano", "micro"]
    assert {m: r.name for m, r in baselines_by_model(runs).items()} == {
        "nano": "nano-none-0.0",
        "micro": "micro-none-0.0",
    }
    # ratio 0 (the unfiltered baseline) competes too: a curator that never beats it gets 0
    base = baselines_by_model(runs)["nano"].final_val_nll
    expect = {}
    for c in ("datarater", "random"):
        options = [(base, 0.0)] + [(r.final_val_nll, r.discard) for r in runs if r.model == "nano" and r.curator == c]
        expect[c] = min(options)[1]
    assert best_ratios(runs) == expect and expect["datarater"] == 0.5
    rows = table_rows(section(path.read_text(), "## 1."))
    by_key = {(r[0], r[1], r[2]): r for r in rows}
    assert by_key[("micro", "datarater", "50%")][3:6] == ["2.1000", f"{2.1 - 2.2:+.4f}", "30.0%"]
    assert by_key[("nano", "random", "90%")][5] == "not reached"
    assert by_key[("nano", "none", "0%")][5] == "baseline"


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


def test_results_markdown_of_the_sweep():
    runs = [r for r in synthetic_runs() if r.model == "nano" and r.discard in (0.0, 0.5)]
    runs.append(_run("micro", 4e9, 9_000_000, "datarater", 0.5, float("inf")))  # no baseline, did not finish
    md = results_markdown(runs, {"nano-datarater-0.5": 0.3}, {"datarater": 0.5, "random": 0.0}, {"nano": [2.5, 2.52]})
    rows = {r[0]: r for r in table_rows(md)}
    assert rows["nano-none-0.0"][5:] == ["+0.0000", "baseline"]
    assert rows["nano-datarater-0.5"][3:] == ["0.5", "2.4200", "-0.0800", "30.0%"]
    assert rows["nano-random-0.5"][5:] == ["+0.0500", "not reached"]  # no gain given
    assert rows["micro-datarater-0.5"][4:6] == ["inf", "+nan"]
    assert "Best discard ratio per curator (smallest model, by final held-out NLL): datarater 0.5, random 0" in md
    assert "Run-to-run noise: the unfiltered nano LM trained with 2 seeds" in md


def test_audit_table_in_the_report_matches_roc_auc(report):
    path, _, table = report
    rows = table_rows(section(path.read_text(), "## 9."))
    lab = np.asarray(table.labels)
    clean = table.scores[lab == "clean"]
    mojibake = next(r for r in rows if r[0] == "mojibake")
    assert mojibake[2].split(" ")[0] == f"{roc_auc(clean, table.scores[lab == 'mojibake']):.3f}"
    h = table.curator_scores["heuristic"]
    assert mojibake[4].split(" ")[0] == f"{roc_auc(h[lab == 'clean'], h[lab == 'mojibake']):.3f}"


def test_nll_by_source_and_label_matches_its_definition(report):
    path, runs, table = report
    nll = synthetic_row_nll(runs, table)  # seeded: the same as the report's
    text = section(path.read_text(), "## 10. Held-out NLL by source and corruption label")
    by_label = text[text.index("By label:"):]
    rows = {(r[0], r[1], r[2]): r for r in table_rows(by_label)}
    names = ["all"] + sorted(set(table.labels))
    header = [line for line in by_label.splitlines() if line.startswith("|")][0]
    assert [c.strip() for c in header.strip("|").split("|")][3:] == ["all"] + [md_escape(n) for n in names[1:]]
    base = next(r for r in runs if r.model == "nano" and r.curator == "none")
    run = next(r for r in runs if r.model == "nano" and r.curator == "datarater" and r.discard == 0.5)
    lab = np.asarray(table.labels)
    m = lab == "mojibake"
    want_base = nll.nats[base.name][m].sum() / nll.tokens[m].sum()
    want_delta = nll.nats[run.name][m].sum() / nll.tokens[m].sum() - want_base
    k = 3 + names.index("mojibake")
    assert rows[("nano", "none", "0%")][k] == f"{want_base:.3f}"
    assert rows[("nano", "datarater", "50%")][k] == f"{want_delta:+.3f}"
    # micro runs are compared with the micro baseline, over all rows
    micro = next(r for r in runs if r.model == "micro" and r.curator == "datarater")
    micro_base = next(r for r in runs if r.model == "micro" and r.curator == "none")
    want = (nll.nats[micro.name].sum() - nll.nats[micro_base.name].sum()) / nll.tokens.sum()
    assert rows[("micro", "datarater", "50%")][3] == f"{want:+.3f}"
    assert len(table_rows(text[: text.index("By label:")])) == len(runs)  # by source: one row per run


def test_nll_by_group_weights_rows_by_their_tokens(tmp_path):
    out = nll_by_group(np.array([10.0, 30.0, 5.0]), np.array([10, 10, 0]), ["a", "a", "b"])
    assert out["all"] == 45.0 / 20 and out["a"] == 40.0 / 20  # token-weighted, not a mean of row NLLs
    assert np.isnan(out["b"])  # no predicted token: no NLL
    with pytest.raises(UserError, match="score table has 120 rows"):
        write_report(tmp_path, ReportInputs(
            runs=synthetic_runs(), scores=synthetic_scores(),
            row_nll=RowNLL(nats={"nano-none-0.0": np.ones(3)}, tokens=np.ones(3))))


def test_missing_inputs_leave_sections_out_with_a_reason(tmp_path):
    path = write_report(tmp_path, ReportInputs(runs=[]))
    md = path.read_text()
    assert md.count("_Left out:") == 10
    assert not list(tmp_path.glob("*.png"))
    table = synthetic_scores()
    table.labels = None
    md = write_report(tmp_path / "b", ReportInputs(runs=synthetic_runs(), scores=table)).read_text()
    assert "_Left out: the scored corpus carries no corruption labels._" in md
    assert "_Left out: no per-row NLL of the sweep's LMs given._" in md
    assert md.count("_Left out:") == 2


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


def test_results_csv(tmp_path, report):
    _, runs, _ = report
    gains = {"nano-datarater-0.5": 0.25, "nano-random-0.9": None}
    path = write_results_csv(tmp_path / "results.csv", runs, gains)
    rows = {r["name"]: r for r in csv.DictReader(path.open())}
    assert len(rows) == len(runs)
    assert float(rows["nano-datarater-0.5"]["net_compute_gain"]) == 0.25
    assert rows["nano-random-0.9"]["net_compute_gain"] == "not reached"
    assert rows["nano-none-0.0"]["net_compute_gain"] == "baseline"
    assert rows["micro-random-0.25"]["net_compute_gain"] == ""
    assert float(rows["micro-datarater-0.5"]["delta_vs_baseline"]) == pytest.approx(2.1 - 2.2)
    assert float(rows["nano-datarater-0.5"]["train_flops"]) == pytest.approx(100 * 1e9)
    assert float(rows["nano-datarater-0.5"]["piqa/acc_norm"]) == 0.56


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
