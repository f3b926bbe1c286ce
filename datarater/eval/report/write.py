"""`write_report`: the whole ``report.md`` with its PNGs, from a `ReportInputs`."""

from __future__ import annotations

from pathlib import Path

from datarater.eval.report.inputs import ReportInputs, as_score_table, check_runs
from datarater.eval.report.sections import (
    section_audit,
    section_best_ratio,
    section_curves,
    section_downstream,
    section_extremes,
    section_histograms,
    section_kept,
    section_nll_by_group,
    section_regression,
    section_results,
)

DEFAULT_RATIOS = (0.0, 0.1, 0.25, 0.5, 0.75, 0.9)


def write_report(out_dir: str | Path, inputs: ReportInputs) -> Path:
    """Writes ``out_dir/report.md`` and its PNGs; returns the path of ``report.md``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    runs = list(inputs.runs)
    check_runs(runs)
    table = None if inputs.scores is None else as_score_table(inputs.scores)
    if inputs.ratios:
        ratios, ratios_from = [float(r) for r in inputs.ratios], "as given"
    elif runs:
        ratios, ratios_from = sorted({float(r.discard) for r in runs} | {0.0}), "from the runs' discard ratios"
    else:
        ratios, ratios_from = list(DEFAULT_RATIOS), "the default sweep"
    md = [f"# {inputs.title}", ""]
    md += [f"- {line}" for line in inputs.notes] + ([""] if inputs.notes else [])
    md += section_results(runs, inputs.gains, inputs.baseline_spread, inputs.nll)
    for block in inputs.sections:
        md += [block.rstrip(), ""]
    md += section_curves(out, runs, inputs.nll)
    md += section_best_ratio(out, runs, inputs.nll, inputs.best)
    md += section_histograms(table, out)
    md += section_kept(table, out, ratios, ratios_from)
    md += section_extremes(table)
    md += section_regression(table, out)
    md += section_downstream(runs)
    md += section_audit(table, out)
    md += section_nll_by_group(table, out, inputs.row_nll, runs)
    path = out / "report.md"
    path.write_text("\n".join(md).rstrip() + "\n", encoding="utf-8")
    return path
