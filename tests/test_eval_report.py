"""The analysis report on synthetic inputs: every image it links exists and is a real PNG, the
extremes are the true extremes, the kept fractions match a direct computation."""

from __future__ import annotations

import csv
import re
import struct
from pathlib import Path

import numpy as np
import pytest
from report_synthetic import SOURCES, section, synthetic_row_nll, synthetic_runs, synthetic_scores, table_rows

from datarater.eval.audit import roc_auc
from datarater.eval.report.analysis import (
    baselines_by_model,
    best_ratios,
    extreme_indices,
    kept_fraction_by_source,
    model_order,
)
from datarater.eval.report.inputs import ReportInputs
from datarater.eval.report.tables import md_escape, printable_excerpt, write_results_csv
from datarater.eval.report.write import write_report


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


def test_rows_tied_at_the_cut_share_its_places_evenly():
    # 5 rows, keep 3 (rho 0.4): the 3 is kept, the three 2s share the 2 places left (2/3 each), the 1 goes
    names, kept, share = kept_fraction_by_source([3.0, 2.0, 2.0, 2.0, 1.0], ["a", "b", "c", "a", "b"], [0.4])
    assert names == ["a", "b", "c"]
    assert kept[:, 0] == pytest.approx([(1 + 2 / 3) / 2, (2 / 3) / 2, 2 / 3])
    assert share[:, 0].sum() == pytest.approx(1.0) and share[:, 0] == pytest.approx([5 / 9, 2 / 9, 2 / 9])
    # every row tied (an oracle's off-target rows): each source keeps 1 - rho, whatever the row order
    _, kept, _ = kept_fraction_by_source(np.zeros(8), ["a"] * 4 + ["b"] * 4, [0.25, 0.5])
    assert kept == pytest.approx(np.array([[0.75, 0.5], [0.75, 0.5]]))


def test_kept_fraction_per_curator_is_each_curators_own_rule(report):
    path, _, table = report
    ratios = [0.0, 0.25, 0.5, 0.9]
    names = sorted(SOURCES)
    text = section(path.read_text(), "## 5.")
    for rho in ratios[1:]:
        block = text.split(f"At ρ={rho:.0%}:")[1].split("At ρ=")[0]
        rows = table_rows(block)
        assert [r[0] for r in rows] == names
        for c, scores in enumerate([table.scores, table.curator_scores["random"], table.curator_scores["heuristic"]], 1):
            frac = {s: np.mean(kept) for s, kept in per_source_kept(scores, table.sources, rho).items()}
            assert [r[c] for r in rows] == [f"{100 * frac[s]:.1f}%" for s in names], (rho, c)


def per_source_kept(scores, sources, rho):
    """Each source's rows' chance of being kept when the top round((1 - rho) * n) by score are kept and
    ties at the cut are broken at random (the heuristic's scores tie): a row's chance is the share of
    the tie-breaking orders that keep it, its tie group's places left over its size."""
    n = len(scores)
    k = int(round((1 - rho) * n))
    chance = np.zeros(n)
    for value in sorted(set(scores), reverse=True):  # groups of equal score, best first
        group = [i for i in range(n) if scores[i] == value]
        places = min(len(group), k)
        chance[group] = places / len(group)
        k -= places
    src = np.asarray(sources)
    return {s: chance[src == s] for s in set(sources)}


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
    assert {r["nll_set"] for r in rows.values()} == {"validation"}
    on_target = write_results_csv(tmp_path / "t.csv", runs, gains, on="target")
    assert {r["nll_set"] for r in csv.DictReader(on_target.open())} == {"target"}
