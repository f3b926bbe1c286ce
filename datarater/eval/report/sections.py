"""The sections of ``report.md``: each returns its Markdown lines, writing its plots into the report folder."""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from datarater.eval.audit import audit_table
from datarater.eval.features import linear_fit, text_features
from datarater.eval.report.analysis import (
    N_EXTREMES,
    at_largest_ratio,
    baselines_by_model,
    best_ratios,
    curve_xy,
    delta_vs_baseline,
    extreme_indices,
    finite,
    kept_fraction_by_source,
    model_order,
    nll_by_group,
    run_at,
    sorted_runs,
    swept_ratios,
    task_names,
)
from datarater.eval.report.inputs import RATER_CURATOR, RowNLL, RunResult, ScoreTable, check_row_nll
from datarater.eval.report.plots import (
    plot_audit,
    plot_best_ratio,
    plot_coefficients,
    plot_histograms,
    plot_kept_fraction,
    plot_nll_delta,
    plot_nll_vs_flops,
)
from datarater.eval.report.tables import (
    EXCERPT_CHARS,
    edge_note,
    fmt,
    fmt_interval,
    md_escape,
    md_table,
    noise_lines,
    pct,
    printable_excerpt,
    results_table,
)


def _left_out(why: str) -> list[str]:
    return [f"_Left out: {why}._", ""]


def _image(md: list[str], alt: str, filename: str) -> None:
    md += [f"![{md_escape(alt)}]({filename})", ""]


def _on_scores(heading: str):
    """A section of the score table ``t`` (its first argument): ``heading``, then the section's own lines,
    or without a table the line that says it is left out."""

    def wrap(body):
        @functools.wraps(body)
        def section(t: ScoreTable | None, *args) -> list[str]:
            return [heading, ""] + (_left_out("no score table given") if t is None else body(t, *args))

        return section

    return wrap


def section_results(runs: Sequence[RunResult], gains, spread: Mapping[str, Sequence[float]] | None = None,
                    nll: str = "held-out NLL") -> list[str]:
    md = ["## 1. Results", ""]
    if not runs:
        return md + _left_out("no runs given")
    missing = [m for m in model_order(runs) if m not in baselines_by_model(runs)]
    md += results_table(runs, gains, spread, nll)
    md += [
        "",
        "NLL in nats per token on the validation set named in the notes above; Δ < 0 is better than the unfiltered run of the same size. "
        "Net compute gain = 1 − (FLOPs the filtered run needs to reach the baseline's final NLL, curation included) "
        '/ (baseline FLOPs); "not reached" when it never gets there. Both read the evaluation curves, each point on the first '
        "train.eval_batches batches of the set, where the NLL column is the whole set at the end: a run a little below the "
        'baseline in NLL can still read "not reached" by the curves\' noise. Mean accuracies over the tasks of section 8. '
        "Each row is one run of the first seed (on the smallest model, the runs that pick each curator's ratio, "
        "with sweep.select_seeds beside the further picking seeds of results.md), "
        "so its NLL and net gain are that run's alone; the comparison over seeds, where the sweep ran one, gives its "
        "own means and gain: over replicas apart from these runs with sweep.select_apart, else over these runs and "
        "their replicas.",
        "",
    ]
    md += noise_lines(spread or {}, model_order(runs))
    if missing:
        md += [f'No unfiltered baseline (curator "none") for: {", ".join(missing)}.', ""]
    return md


def section_curves(out_dir: Path, runs: Sequence[RunResult], nll: str = "held-out NLL") -> list[str]:
    md = [f"## 2. {nll[0].upper() + nll[1:]} against compute", ""]
    if not any(curve_xy(r)[0].size for r in runs):
        return md + _left_out("no run has an evaluation curve with positive FLOPs")
    baselines = baselines_by_model(runs)
    for model in model_order(runs):
        mine = [r for r in runs if r.model == model]
        if not any(curve_xy(r)[0].size for r in mine):
            md += [f"{model}: no evaluation curve.", ""]
            continue
        _image(md, f"{nll} vs FLOPs, {model}", plot_nll_vs_flops(out_dir, model, mine, baselines.get(model), nll))
    md += [
        "Each panel: one curator, a line per discard ratio; dashed black: the unfiltered baseline of the same size. "
        "Compute counts the curator's inference on the oversampled stream. When early losses are far above the end of "
        "training, the y-axis is cut to show the later part.",
        "",
    ]
    return md


def section_best_ratio(out_dir: Path, runs: Sequence[RunResult], nll: str = "held-out NLL",
                       picked: Mapping[str, float] | None = None) -> list[str]:
    """The best ratio per curator: ``picked`` when the sweep chose it on the mean over several seeds
    (sweep.select_seeds), else by the runs' own final NLL (`best_ratios`)."""
    md = ["## 3. Best ratio across model sizes", ""]
    best = dict(picked) if picked is not None else best_ratios(runs)
    if not best:
        return md + _left_out("no filtered run on the smallest model has a final NLL")
    order = model_order(runs)
    rows = []
    for curator, rho in sorted(best.items()):
        r = run_at(runs, order[0], curator, rho)
        rows.append([md_escape(curator), pct(rho, 0), fmt(r.final_val_nll) if r else "not finished"])
    md += [
        f"Best discard ratio per curator, chosen by final NLL (on the set of section 1) on the smallest model ({md_escape(order[0])})"
        + (", its mean over the sweep's picking seeds (sweep.select_seeds; the NLL shown is the first seed's):"
           if picked is not None else ":"),
        "",
    ]
    md += md_table(["curator", "best discard", f"final {nll} of {md_escape(order[0])}"], rows) + [""]
    note = edge_note(at_largest_ratio(best, swept_ratios(runs)))
    md += [md_escape(note), ""] if note else []
    _image(md, "best ratio", plot_best_ratio(out_dir, runs, best, nll))
    return md


@_on_scores("## 4. Rater scores per source")
def section_histograms(t: ScoreTable, out_dir: Path) -> list[str]:
    md: list[str] = []
    src = np.asarray(t.sources)
    rows = [
        [
            md_escape(s),
            str(int(np.sum(src == s))),
            fmt(np.mean(t.scores[src == s]), 3),
            fmt(np.median(t.scores[src == s]), 3),
        ]
        for s in sorted(set(t.sources))
    ]
    fn = plot_histograms(
        out_dir, "score_hist_by_source.png", t.scores, src, "DataRater scores per source", "DataRater score"
    )
    _image(md, "score histograms per source", fn)
    md += md_table(["source", "sequences", "mean score", "median score"], rows) + [""]
    return md


@_on_scores("## 5. Kept fraction per source (the mixture the rater implies)")
def section_kept(t: ScoreTable, out_dir: Path, ratios: Sequence[float], ratios_from: str) -> list[str]:
    names, kept, share = kept_fraction_by_source(t.scores, t.sources, ratios)
    md = [
        f"Keeping the top (1 − ρ) of the {len(t)} scored sequences by DataRater score (the large-batch limit of "
        f"in-batch top-K filtering; rows tied at the cut share its places evenly); ratios {ratios_from}.",
        "",
    ]
    _image(md, "kept fraction per source", plot_kept_fraction(out_dir, names, ratios, kept, share))
    head = ["source"] + [f"ρ={r:.0%}" for r in ratios]
    md += ["Fraction of each source kept:", ""]
    md += md_table(head, [[md_escape(n)] + [pct(v) for v in kept[i]] for i, n in enumerate(names)]) + [""]
    md += ["Share of the kept sequences (the implied mixture):", ""]
    md += md_table(head, [[md_escape(n)] + [pct(v) for v in share[i]] for i, n in enumerate(names)]) + [""]
    return md + _kept_by_curator(t, names, kept, ratios)


def _kept_by_curator(t: ScoreTable, names: list[str], kept: np.ndarray, ratios: Sequence[float]) -> list[str]:
    """The fraction of each source every curator keeps by the same rule on its own scores of the same
    rows, a table per ratio above 0: where the curators' mixtures part."""
    others = {c: s for c, s in t.curator_scores.items() if c != RATER_CURATOR}
    if not others:
        return []
    columns = [kept] + [kept_fraction_by_source(s, t.sources, ratios)[1] for s in others.values()]
    md = ["Fraction of each source kept by each curator (the same rule on its own scores of these rows):", ""]
    for j, rho in enumerate(ratios):
        if rho > 0:
            md += [f"At ρ={rho:.0%}:", ""]
            md += md_table(["source", RATER_CURATOR, *others],
                           [[md_escape(n)] + [pct(c[i, j]) for c in columns] for i, n in enumerate(names)]) + [""]
    return md


def _extreme_table(t: ScoreTable, idx: np.ndarray) -> list[str]:
    head = ["#", "score", "source"] + (["label"] if t.labels is not None else []) + ["segments", "id", "excerpt"]
    rows = []
    for k, i in enumerate(idx, start=1):
        row = [str(k), fmt(t.scores[i], 4), md_escape(t.sources[i])]
        if t.labels is not None:
            row.append(md_escape(t.labels[i]))
        row += [str(int(t.n_segments[i])), md_escape(t.ids[i]), md_escape(printable_excerpt(t.texts[i]))]
        rows.append(row)
    return md_table(head, rows)


@_on_scores("## 6. Lowest and highest scored sequences")
def section_extremes(t: ScoreTable) -> list[str]:
    low, high = extreme_indices(t.scores, N_EXTREMES)
    md = [
        f"Excerpts of at most {EXCERPT_CHARS} characters; invisible characters made visible "
        "(↵ newline, → tab, ␀ and other control pictures, ␣ runs of spaces, \\xNN / \\uNNNN other non-printables).",
        "",
        f"### {len(low)} lowest",
        "",
    ]
    md += _extreme_table(t, low) + ["", f"### {len(high)} highest", ""]
    md += _extreme_table(t, high) + [""]
    return md


@_on_scores("## 7. Scores against simple text features")
def section_regression(t: ScoreTable, out_dir: Path) -> list[str]:
    if len(t) < 3:
        return _left_out(f"only {len(t)} scored sequences (need at least 3)")
    names, X = text_features(t.texts, t.n_segments.tolist())
    fit = linear_fit(X, t.scores, names)
    if not math.isfinite(fit.r2):
        return _left_out("all scores are equal, there is nothing to explain")
    md = [
        f"Least-squares fit of the DataRater score on {len(names)} features of the decoded text of {len(t)} sequences: "
        f"**R² = {fit.r2:.3f}** (the paper found about 0.75). Coefficients are per standard deviation of the feature, "
        "largest magnitude first; r = Pearson correlation of the feature with the score.",
        "",
    ]
    rows = []
    for j, name in sorted(enumerate(names), key=lambda p: -abs(fit.coef[p[0]])):
        if fit.constant[j]:
            rows.append([md_escape(name), "constant (left out)", "n/a", fmt(fit.mean[j], 4), "0"])
            continue
        r = float(np.corrcoef(X[:, j], t.scores)[0, 1]) if np.std(t.scores) > 0 else float("nan")
        rows.append([md_escape(name), f"{fit.coef[j]:+.4f}", fmt(r, 3), fmt(fit.mean[j], 4), fmt(fit.std[j], 4)])
    md += md_table(["feature", "coefficient (per std)", "r", "mean", "std"], rows) + [""]
    if fit.ranked():
        _image(md, "regression coefficients", plot_coefficients(out_dir, fit.ranked(), fit.r2))
    return md


def section_downstream(runs: Sequence[RunResult]) -> list[str]:
    md = ["## 8. Downstream accuracy", ""]
    tasks = task_names(runs)
    if not tasks:
        return md + _left_out("no run has multiple-choice task results")
    head = ["model", "curator", "discard"]
    for task in tasks:
        ns = {int(r.tasks[task].get("n", 0)) for r in runs if task in r.tasks}
        head.append(f"{md_escape(task)} (n={'/'.join(str(n) for n in sorted(ns))})")
    rows = []
    for r in sorted_runs(runs):
        row = [md_escape(r.model), md_escape(r.curator), pct(r.discard, 0)]
        for task in tasks:
            m = r.tasks.get(task)
            row.append("–" if m is None else f"{pct(m.get('acc_norm'))} ({pct(m.get('acc'))})")
        rows.append(row)
    md += ["Zero-shot accuracy, length-normalised (raw in brackets).", ""]
    md += md_table(head, rows) + [""]
    return md


@_on_scores("## 9. Audit against corruption labels")
def section_audit(t: ScoreTable, out_dir: Path) -> list[str]:
    if t.labels is None:
        return _left_out("the scored corpus carries no corruption labels")
    labels = np.asarray(t.labels)
    if not np.any(labels == "clean") or np.all(labels == "clean"):
        return _left_out("the labels need both clean and corrupted sequences")
    scores = {RATER_CURATOR: t.scores}
    scores.update({c: s for c, s in t.curator_scores.items() if c != RATER_CURATOR})
    curators = list(scores)
    rows = audit_table(t.labels, scores)
    md = [
        f"ROC-AUC of clean ({int(np.sum(labels == 'clean'))} sequences) against each corruption type, per curator "
        "(higher score = keep; 1 = perfectly separated, 0.5 = chance), with a stratified bootstrap 95% interval "
        "in brackets (1000 resamples).",
        "",
    ]
    table = [[md_escape(r.label), str(r.n)] + [f"{fmt(r.auc[c], 3)} {fmt_interval(r.auc_low[c], r.auc_high[c])}"
                                               for c in curators] for r in rows]
    md += md_table(["corruption", "n"] + [md_escape(c) for c in curators], table) + [""]
    _image(md, "audit ROC-AUC", plot_audit(out_dir, rows, curators))
    fn = plot_histograms(
        out_dir, "score_hist_by_label.png", t.scores, labels, "DataRater scores per label", "DataRater score"
    )
    _image(md, "score histograms per label", fn)
    return md


@_on_scores("## 10. Held-out NLL by source and corruption label")
def section_nll_by_group(t: ScoreTable, out_dir: Path, row_nll: RowNLL | None, runs: Sequence[RunResult]) -> list[str]:
    if row_nll is None or not row_nll.nats:
        return _left_out("no per-row NLL of the sweep's LMs given")
    check_row_nll(row_nll, len(t))
    shown = [r for r in sorted_runs(runs) if r.name in row_nll.nats]
    baselines = baselines_by_model(shown)
    md = [
        f"NLL (nats per predicted token) of each LM on the {len(t)} scored validation rows, by the source and the "
        "corruption label of each row (the one with most tokens in it). The unfiltered LM of each size in absolute "
        "terms; the others as Δ against it (+ = worse). A filter that drops a kind of text entirely leaves the LM "
        "unable to predict it, so its held-out NLL on that kind rises even when the rest improves. (Column "
        "*all* covers these rows; section 1's final NLL the rows each run evaluated, `train.eval_batches`.)",
        "",
    ]
    for what, groups in (("source", t.sources), ("label", t.labels)):
        if groups is None:
            continue
        names = sorted(set(groups))
        head = ["model", "curator", "discard", "all"] + [md_escape(n) for n in names]
        rows, heat, heat_names = [], [], []
        vals_of = {r.name: nll_by_group(row_nll.nats[r.name], row_nll.tokens, groups) for r in shown}
        for r in shown:
            vals = vals_of[r.name]
            base = baselines.get(r.model)
            cells = [md_escape(r.model), md_escape(r.curator), pct(r.discard, 0)]
            if base is None or base.name == r.name:
                rows.append(cells + [fmt(vals[k], 3) for k in ["all", *names]])
                continue
            ref = vals_of[base.name]
            delta = [delta_vs_baseline(vals[k], ref[k]) for k in ["all", *names]]
            rows.append(cells + [f"{d:+.3f}" if finite(d) else "n/a" for d in delta])
            heat.append(delta)
            heat_names.append(f"{r.model} {r.curator} {r.discard:.0%}")
        md += [f"By {what}:", ""] + md_table(head, rows) + [""]
        if heat:
            _image(md, f"NLL delta by {what}", plot_nll_delta(out_dir, heat_names, ["all", *names],
                                                             np.asarray(heat, np.float64), what))
    return md
