"""Text of the results: cell formatting, the results tables (report section 1, the sweep's ``results.md``), ``results.csv``."""

from __future__ import annotations

import csv
import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from datarater.eval.report.analysis import (
    at_largest_ratio,
    baseline_nlls,
    baselines_by_model,
    delta_vs_baseline,
    finite,
    mean_metric,
    noise_threshold,
    sorted_runs,
    swept_ratios,
    task_names,
)
from datarater.eval.report.inputs import BASELINE_CURATOR, RunResult, check_runs

EXCERPT_CHARS = 300
_CONTROL_NAMES = {"\n": "↵", "\t": "→", "\r": "␍", "\x7f": "␡"}
_MD_SPECIAL = set("\\`*_[]<>|#~&$!{}")


def _visible_char(ch: str) -> str:
    if ch in _CONTROL_NAMES:
        return _CONTROL_NAMES[ch]
    code = ord(ch)
    if code < 0x20:
        return chr(0x2400 + code)  # the Unicode control pictures: \x00 -> ␀
    if ch == " " or ch.isprintable():
        return ch
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}"


def printable_excerpt(text: str, max_chars: int = EXCERPT_CHARS) -> str:
    """The start of ``text`` with invisible characters made visible, at most ``max_chars`` characters.

    Control characters become their Unicode pictures (``\\x00`` → ␀, newline → ↵, tab → →),
    other non-printable code points their escape (``\\xa0``, ``\\u200b``), and runs of two or more
    spaces ␣ each. Longer texts are cut (never inside an escape) and end with "…".
    """
    pieces = [_visible_char(ch) for ch in text]
    for m in re.finditer(r" {2,}", text):
        for i in range(m.start(), m.end()):
            pieces[i] = "␣"
    out, used = [], 0
    for i, p in enumerate(pieces):
        if used + len(p) > max_chars - (1 if i < len(pieces) - 1 else 0):
            out.append("…")
            break
        out.append(p)
        used += len(p)
    return "".join(out)


def md_escape(text: str) -> str:
    """Backslash-escapes Markdown's special ASCII punctuation (pipes included) for a table cell."""
    return "".join("\\" + ch if ch in _MD_SPECIAL else ch for ch in text)


def fmt(x, digits: int = 4) -> str:
    """``x`` with ``digits`` decimals, "n/a" when missing or not finite."""
    return f"{float(x):.{digits}f}" if finite(x) else "n/a"


def fmt_interval(low, high, digits: int = 2) -> str:
    """``[low, high]`` rounded outward to ``digits`` decimals, so the interval shown still holds what it
    bounds (0.996 to 1.0 is [0.99, 1.00], not [1.00, 1.00] beside a 0.998); "n/a" parts when missing."""
    scale = 10 ** digits
    lo = f"{math.floor(float(low) * scale + 1e-9) / scale:.{digits}f}" if finite(low) else "n/a"
    hi = f"{math.ceil(float(high) * scale - 1e-9) / scale:.{digits}f}" if finite(high) else "n/a"
    return f"[{lo}, {hi}]"


def pct(x, digits: int = 1) -> str:
    """``x`` as a percentage with ``digits`` decimals, "n/a" when missing or not finite."""
    return f"{100.0 * float(x):.{digits}f}%" if finite(x) else "n/a"


def flops_text(x) -> str:
    """A FLOP count in scientific notation, "n/a" when missing or not finite."""
    return f"{float(x):.2e}" if finite(x) else "n/a"


def md_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """The lines of a Markdown table (cells already escaped)."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return lines


def gain_text(run: RunResult, gains: Mapping[str, float | None] | None, baseline: RunResult | None) -> str:
    """The net compute gain cell: a percentage, "baseline", "not reached" or "not computed"."""
    if baseline is not None and run.name == baseline.name:
        return "baseline"
    if gains is None or run.name not in gains:
        return "not computed"
    g = gains[run.name]
    return "not reached" if g is None else pct(g)


def noise_lines(spread: Mapping[str, Sequence[float]], order: Sequence[str]) -> list[str]:
    """One Markdown paragraph per model of ``order`` with a seed spread: its NLLs and noise threshold."""
    md = []
    for model in order:
        values = [float(v) for v in spread.get(model, ()) if finite(v)]
        thr = noise_threshold(values)
        if thr is None:
            continue
        md.append(
            f"Run-to-run noise: the unfiltered {md_escape(model)} LM trained with {len(values)} seeds (initialisation "
            f"and data order) ends at {', '.join(f'{v:.4f}' for v in values)}: mean {np.mean(values):.4f}, "
            f"std {np.std(values, ddof=1):.4f}. \"Outside seed spread\" marks single runs with "
            f"|Δ| > 2·√2·std = {thr:.4f}, a rule of thumb; which curators beat unfiltered and random beyond "
            "noise is tested over seeds (Welch's t-test) in the sweep's comparison, where a sweep ran one."
        )
    return md + ([""] if md else [])


def nll_name(on: str) -> str:
    """How tables and plots name the final NLL of ``on``, the set that picks the best ratio
    (``sweep.select_on``: validation, target, source:<name>, label:<name>)."""
    if on == "validation":
        return "held-out NLL"
    if on == "target":
        return "target NLL"
    kind, _, name = on.partition(":")
    return f"NLL on {kind} {name}"


def results_table(
    runs: Sequence[RunResult], gains: Mapping[str, float | None] | None, spread: Mapping[str, Sequence[float]] | None,
    nll: str = "held-out NLL",
) -> list[str]:
    """The report's results table: a row per run with its final NLL, Δ vs the unfiltered run, net compute gain,
    FLOPs and mean accuracies; with a seed ``spread``, also whether Δ is beyond run-to-run noise."""
    baselines, base_nll = baselines_by_model(runs), baseline_nlls(runs)
    thresholds = {m: noise_threshold(v) for m, v in (spread or {}).items()}
    show_noise = any(t is not None for t in thresholds.values())
    rows = []
    for r in sorted_runs(runs):
        base = baselines.get(r.model)
        is_base = base is not None and r.name == base.name
        delta = delta_vs_baseline(r.final_val_nll, base_nll.get(r.model))
        rows.append(
            [
                md_escape(r.model),
                md_escape(r.curator),
                pct(r.discard, 0),
                fmt(r.final_val_nll),
                "—" if is_base else (f"{delta:+.4f}" if finite(delta) else "n/a"),
                gain_text(r, gains, base),
                flops_text(r.total_flops()),
                pct(mean_metric(r, "acc")),
                pct(mean_metric(r, "acc_norm")),
            ]
        )
        if show_noise:
            thr = thresholds.get(r.model)
            rows[-1].insert(5, "—" if is_base or thr is None or not finite(delta) else ("yes" if abs(delta) > thr else "no"))
    head = ["model", "curator", "discard", f"final {nll}", "Δ NLL vs baseline", "net compute gain",
            "FLOPs (train+curate)", "mean acc", "mean acc_norm"]
    if show_noise:
        head.insert(5, "outside seed spread")
    return md_table(head, rows)


def edge_note(edge: Sequence[str]) -> str:
    """One sentence for tables and the console when `at_largest_ratio` names curators ('' when none)."""
    if not edge:
        return ""
    return (f"Best at the largest ratio swept: {', '.join(edge)}; the optimum may lie beyond it "
            "(a sweep with a larger ratio added reuses the runs already finished).")


def results_markdown(results: list[RunResult], gains: dict[str, float | None], best: dict[str, float],
                     spread: dict[str, list[float]] | None = None, on: str = "validation") -> str:
    """The sweep's ``results.md``: a row per run in the given order, the best ratio per curator, the
    seed noise; NLLs on ``on``, the set that picks the best ratio."""
    base_nll = baseline_nlls(results)
    lines = [f"| run | model | curator | discard | final {nll_name(on)} | vs unfiltered | net compute gain |",
             "|---|---|---|---|---|---|---|"]
    for r in results:
        delta = delta_vs_baseline(r.final_val_nll, base_nll.get(r.model))
        gain = "baseline" if r.curator == BASELINE_CURATOR else gain_text(r, gains, None)
        lines.append(f"| {r.name} | {r.model} | {r.curator} | {r.discard:g} | {r.final_val_nll:.4f} | {delta:+.4f} | {gain} |")
    lines += ["", f"Best discard ratio per curator (smallest model, by final {nll_name(on)}): "
              + ", ".join(f"{c} {rho:g}" for c, rho in best.items())]
    note = edge_note(at_largest_ratio(best, swept_ratios(results)))
    lines += ["", note] if note else []
    lines += [""] + noise_lines(spread or {}, list(spread or {}))
    return "\n".join(lines).rstrip() + "\n"


def write_results_csv(path: str | Path, runs: Sequence[RunResult], gains: Mapping[str, float | None] | None,
                      on: str = "validation") -> Path:
    """One row per run: sizes, FLOPs, final NLL, Δ vs baseline, net compute gain, per-task metrics.

    ``final_val_nll`` is the NLL on ``on`` (sweep.select_on: validation, target, source:<name>, ...),
    named in the ``nll_set`` column (the column keeps its name for readers of older files).
    ``net_compute_gain`` is a number, "not reached", "baseline" or empty when not computed.
    """
    check_runs(runs)
    baselines, base_nll = baselines_by_model(runs), baseline_nlls(runs)
    tasks = task_names(runs)
    head = [
        "name",
        "model",
        "n_params",
        "curator",
        "discard",
        "steps",
        "flops_per_step",
        "train_flops",
        "curate_flops",
        "final_val_nll",
        "nll_set",
        "delta_vs_baseline",
        "net_compute_gain",
    ]
    for task in tasks:
        head += [f"{task}/acc", f"{task}/acc_norm", f"{task}/n"]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(head)
        for r in sorted_runs(runs):
            base = baselines.get(r.model)
            last = r.curve[-1] if r.curve else (None, None, None, None)
            delta = delta_vs_baseline(r.final_val_nll, base_nll.get(r.model))
            gain = gain_text(r, gains, base)
            if gain not in ("baseline", "not reached"):
                gain = "" if gain == "not computed" else repr(float(gains[r.name]))
            row = [
                r.name,
                r.model,
                "" if r.n_params is None else int(r.n_params),
                r.curator,
                float(r.discard),
                "" if last[0] is None else int(last[0]),
                float(r.flops_per_step),
                "" if last[1] is None else float(last[1]),
                "" if last[2] is None else float(last[2]),
                float(r.final_val_nll) if finite(r.final_val_nll) else "",
                on,
                repr(delta) if finite(delta) else "",
                gain,
            ]
            for task in tasks:
                m = r.tasks.get(task, {})
                row += [m.get("acc", ""), m.get("acc_norm", ""), m.get("n", "")]
            w.writerow(row)
    return path
