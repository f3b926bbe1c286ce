"""The report's figures: matplotlib's object API on the Agg canvas (no pyplot, no global state), saved as PNG."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from datarater.eval.report.analysis import baselines_by_model, curve_xy, finite, model_order, run_at
from datarater.eval.report.inputs import BASELINE_CURATOR, RATER_CURATOR, RunResult
from datarater.eval.report.tables import fmt

DPI = 100


def _new_figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig, out_dir: Path, filename: str) -> str:
    fig.savefig(out_dir / filename, dpi=DPI, bbox_inches="tight")
    return filename


def _safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)


def curator_colors(curators: Sequence[str]) -> dict[str, str]:
    """Fixed colours: baseline black, DataRater blue, the rest from the tab10 cycle in name order."""
    palette = [
        "tab:orange",
        "tab:green",
        "tab:red",
        "tab:purple",
        "tab:brown",
        "tab:pink",
        "tab:olive",
        "tab:cyan",
        "tab:gray",
    ]
    colors = {BASELINE_CURATOR: "black", RATER_CURATOR: "tab:blue"}
    others = sorted(c for c in set(curators) if c not in colors)
    for i, c in enumerate(others):
        colors[c] = palette[i % len(palette)]
    return colors


def _ratio_colors(ratios: Sequence[float]) -> dict[float, tuple]:
    from matplotlib import colormaps

    cmap = colormaps["viridis"]
    rs = sorted({float(r) for r in ratios})
    return {r: cmap(0.9 * i / max(len(rs) - 1, 1)) for i, r in enumerate(rs)}


def _zoomed_ylim(ax, curves: list[np.ndarray]) -> None:
    """Clip the y-axis to the later part of the curves so early, high losses do not flatten the end."""
    ys = [y for y in curves if y.size]
    if not ys:
        return
    low = min(float(y.min()) for y in ys)
    tail_top = max(float(y[len(y) // 4 :].max()) for y in ys)
    top = max(float(y.max()) for y in ys)
    if top - low > 3 * (tail_top - low) > 0:
        span = tail_top - low
        ax.set_ylim(low - 0.05 * span, tail_top + 0.15 * span)


def _sci_label(value: float, _pos=None) -> str:
    """2e12 -> 2×10¹² (mathtext)."""
    if value <= 0:
        return ""
    exp = math.floor(math.log10(value) + 1e-9)
    mant = round(value / 10**exp, 1)
    mant_txt = f"{mant:g}"
    return f"$10^{{{exp}}}$" if mant_txt == "1" else f"${mant_txt}\\times10^{{{exp}}}$"


def _log_x(ax) -> None:
    """Log x-axis; call after plotting. Spans under ~2.5 decades get ticks at 1, 2 and 5 × 10^k."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    ax.set_xscale("log")
    x0, x1 = ax.dataLim.intervalx
    if x0 > 0 and x1 > x0 and math.log10(x1 / x0) < 2.5:
        ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        ax.xaxis.set_major_formatter(FuncFormatter(_sci_label))
    ax.xaxis.set_minor_formatter(NullFormatter())  # minor labels on a log axis overlap


def plot_nll_vs_flops(out_dir: Path, model: str, runs: Sequence[RunResult], baseline: RunResult | None,
                      nll: str = "held-out NLL") -> str:
    """One figure per model size, a panel per curator: ``nll`` (the curves' set) against training + curation FLOPs."""
    curators = sorted({r.curator for r in runs if r.curator != BASELINE_CURATOR}) or [BASELINE_CURATOR]
    ratio_color = _ratio_colors([r.discard for r in runs])
    ncols = min(3, len(curators))
    nrows = math.ceil(len(curators) / ncols)
    fig = _new_figure(4.2 * ncols + 1.6, 3.3 * nrows)
    axes = fig.subplots(nrows, ncols, squeeze=False, sharex=True, sharey=True)
    ys, handles = [], {}
    for k, curator in enumerate(curators):
        ax = axes[k // ncols][k % ncols]
        if baseline is not None:
            x, y = curve_xy(baseline)
            (handles["no filter (baseline)"],) = ax.plot(x, y, color="black", linestyle="--", linewidth=1.6)
            ys.append(y)
        for r in sorted((r for r in runs if r.curator == curator and r is not baseline), key=lambda r: r.discard):
            x, y = curve_xy(r)
            label = f"discard {float(r.discard):.0%}"
            (handles[label],) = ax.plot(
                x, y, color=ratio_color[float(r.discard)], linewidth=1.4, marker="o", markersize=2.5
            )
            ys.append(y)
        _log_x(ax)
        ax.set_title(f"{model}: {curator}", fontsize=11)
        if k // ncols == nrows - 1 or k + ncols >= len(curators):
            ax.set_xlabel("train + curation FLOPs (log)")
            ax.tick_params(labelbottom=True)
        if k % ncols == 0:
            ax.set_ylabel(f"{nll} (nats/token)")
        ax.grid(True, which="both", alpha=0.3)
    _zoomed_ylim(axes[0][0], ys)
    for k in range(len(curators), nrows * ncols):
        axes[k // ncols][k % ncols].set_visible(False)
    order = sorted(
        handles,
        key=lambda s: (
            not s.startswith("no filter"),
            float(s.split()[-1].rstrip("%")) if s.startswith("discard") else 0,
        ),
    )
    fig.legend([handles[k] for k in order], order, loc="outside right center", fontsize=9)
    fig.suptitle(f"{model}: {nll} against compute (one panel per curator)", fontsize=12)
    return _save(fig, out_dir, f"nll_vs_flops_{_safe_name(model)}.png")


def plot_best_ratio(out_dir: Path, runs: Sequence[RunResult], best: Mapping[str, float], nll: str = "held-out NLL") -> str:
    """(a) final NLL against discard ratio on the smallest model; (b) baseline vs best ratio across model sizes."""
    order = model_order(runs)
    smallest = order[0]
    baselines = baselines_by_model(runs)
    colors = curator_colors([r.curator for r in runs])
    fig = _new_figure(11.0, 4.0)
    ax_a, ax_b = fig.subplots(1, 2)
    base_small = baselines.get(smallest)
    for curator in sorted(best):
        pts = sorted(
            (float(r.discard), float(r.final_val_nll))
            for r in runs
            if r.model == smallest and r.curator == curator and finite(r.final_val_nll)
        )
        if base_small is not None and finite(base_small.final_val_nll) and all(d > 0 for d, _ in pts):
            pts = [(0.0, float(base_small.final_val_nll)), *pts]
        if not pts:
            continue
        d, y = zip(*pts, strict=True)
        ax_a.plot(d, y, marker="o", color=colors[curator], label=curator)
        at_best = [v for dd, v in pts if dd == best[curator]]  # none: picked over seeds, this run unfinished
        if not at_best:
            continue
        ax_a.plot(
            [best[curator]],
            [at_best[0]],
            marker="*",
            markersize=14,
            color=colors[curator],
            markeredgecolor="black",
            linestyle="none",
        )
    if base_small is not None and finite(base_small.final_val_nll):
        ax_a.axhline(float(base_small.final_val_nll), color="black", linestyle="--", linewidth=1, label="no filter")
    swept = sorted({float(r.discard) for r in runs if r.model == smallest} | {0.0})
    ax_a.set_xticks(swept, [f"{x:.0%}" for x in swept])
    ax_a.set_title(f"ratio sweep on {smallest} (★ = best ratio)", fontsize=11)
    ax_a.set_xlabel("discard ratio ρ (fraction of the stream dropped)")
    ax_a.set_ylabel(f"final {nll} (nats/token)")
    ax_a.grid(True, alpha=0.3)
    ax_a.legend(fontsize=8)

    series = {BASELINE_CURATOR: [baselines.get(m) for m in order]}
    for curator, rho in sorted(best.items()):
        series[curator] = [
            run_at(runs, m, curator, rho) for m in order
        ]
    for curator, rs in series.items():
        pts = [
            (r.total_flops(), float(r.final_val_nll), r.model)
            for r in rs
            if r is not None and finite(r.final_val_nll) and finite(r.total_flops())
        ]
        if not pts:
            continue
        x, y, names = zip(*pts, strict=True)
        label = "no filter" if curator == BASELINE_CURATOR else f"{curator} @ {best[curator]:.0%}"
        style = "--" if curator == BASELINE_CURATOR else "-"
        ax_b.plot(x, y, marker="o", linestyle=style, color=colors[curator], label=label)
        if curator == BASELINE_CURATOR:
            for xi, yi, name in zip(x, y, names, strict=True):
                ax_b.annotate(name, (xi, yi), textcoords="offset points", xytext=(4, 4), fontsize=8)
    _log_x(ax_b)
    ax_b.set_title("best ratio across model sizes", fontsize=11)
    ax_b.set_xlabel("total training + curation compute (FLOPs, log)")
    ax_b.set_ylabel(f"final {nll} (nats/token)")
    ax_b.grid(True, which="both", alpha=0.3)
    ax_b.legend(fontsize=8)
    return _save(fig, out_dir, "best_ratio.png")


def plot_histograms(
    out_dir: Path, filename: str, scores: np.ndarray, groups: np.ndarray, title: str, xlabel: str
) -> str:
    """Small multiples: the density of ``scores`` in each group over the whole corpus's density (grey)."""
    names = sorted(set(groups.tolist()))
    typical = float(np.median([np.count_nonzero(groups == g) for g in names]))
    bins = np.histogram_bin_edges(scores, bins=int(np.clip(2 * math.sqrt(typical), 10, 40)))
    ncols = min(4, len(names))
    nrows = math.ceil(len(names) / ncols)
    fig = _new_figure(3.3 * ncols, 2.5 * nrows + 0.4)
    axes = fig.subplots(nrows, ncols, squeeze=False, sharex=True)
    for k, name in enumerate(names):
        ax = axes[k // ncols][k % ncols]
        ax.hist(scores, bins=bins, density=True, color="0.85", label="all")
        sel = scores[groups == name]
        ax.hist(sel, bins=bins, density=True, color="tab:blue", alpha=0.25)
        ax.hist(sel, bins=bins, density=True, histtype="step", linewidth=1.5, color="tab:blue")
        ax.axvline(float(np.median(sel)), color="tab:blue", linestyle=":", linewidth=1)
        ax.set_title(f"{name} (n={sel.size})", fontsize=10)
        if k // ncols == nrows - 1 or k + ncols >= len(names):
            ax.set_xlabel(xlabel, fontsize=9)
            ax.tick_params(labelbottom=True)
        if k % ncols == 0:
            ax.set_ylabel("density", fontsize=9)
        ax.tick_params(labelsize=8)
    for k in range(len(names), nrows * ncols):
        axes[k // ncols][k % ncols].set_visible(False)
    fig.suptitle(title + "  (grey: all sequences; dotted: group median)", fontsize=11)
    return _save(fig, out_dir, filename)


def _source_colors(names: Sequence[str]) -> list:
    from matplotlib import colormaps

    cmap = colormaps["tab10" if len(names) <= 10 else "tab20"]
    return [cmap(i % cmap.N) for i in range(len(names))]


def plot_kept_fraction(
    out_dir: Path, names: list[str], ratios: Sequence[float], kept: np.ndarray, share: np.ndarray
) -> str:
    """(a) fraction of each source kept against the discard ratio; (b) the implied mixture per ratio."""
    colors = _source_colors(names)
    fig = _new_figure(12.0, 4.2)
    ax_a, ax_b = fig.subplots(1, 2)
    r = np.asarray(ratios, dtype=np.float64)
    ax_a.plot(r, 1 - r, color="0.5", linestyle="--", linewidth=1, label="uniform (1 − ρ)")
    for i, name in enumerate(names):
        ax_a.plot(r, kept[i], marker="o", markersize=3, color=colors[i], label=name)
    ax_a.set_xticks(r, [f"{x:.0%}" for x in r])
    ax_a.legend(handles=ax_a.lines[:1], fontsize=8, loc="lower left")
    ax_a.set_xlabel("discard ratio ρ")
    ax_a.set_ylabel("fraction of the source kept")
    ax_a.set_ylim(-0.02, 1.02)
    ax_a.set_title("kept fraction per source", fontsize=11)
    ax_a.grid(True, alpha=0.3)
    pos = np.arange(len(r))
    bottom = np.zeros(len(r))
    for i, name in enumerate(names):
        ax_b.bar(pos, share[i], bottom=bottom, color=colors[i], label=name, width=0.7)
        bottom += share[i]
    ax_b.set_xticks(pos, [f"{x:.0%}" for x in r])
    ax_b.set_xlabel("discard ratio ρ")
    ax_b.set_ylabel("share of the kept sequences")
    ax_b.set_ylim(0, 1)
    ax_b.set_title("mixture the rater implies", fontsize=11)
    ax_b.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5), title="source", title_fontsize=8)
    return _save(fig, out_dir, "kept_fraction.png")


def plot_coefficients(out_dir: Path, ranked: list[tuple[str, float]], r2: float) -> str:
    names = [n for n, _ in ranked][::-1]
    coefs = [c for _, c in ranked][::-1]
    fig = _new_figure(6.0, 0.45 * len(names) + 1.2)
    ax = fig.subplots()
    ax.barh(names, coefs, color=["tab:green" if c > 0 else "tab:red" for c in coefs])
    ax.axvline(0, color="black", linewidth=0.8)
    ax.set_xlabel("score change per +1 std of the feature (score units)")
    ax.set_title(f"linear fit of rater scores on text features (R² = {fmt(r2, 3)})", fontsize=11)
    ax.grid(True, axis="x", alpha=0.3)
    return _save(fig, out_dir, "feature_coefficients.png")


def plot_audit(out_dir: Path, rows, curators: list[str]) -> str:
    colors = curator_colors(curators)
    labels = [f"{r.label} (n={r.n})" for r in rows][::-1]
    fig = _new_figure(7.5, 0.16 * len(rows) * (len(curators) + 1) + 1.4)
    ax = fig.subplots()
    height = 0.8 / len(curators)
    pos = np.arange(len(rows))
    for k, c in enumerate(curators):
        vals = [r.auc[c] for r in rows][::-1]
        err = None
        if getattr(rows[0], "auc_low", None):  # bootstrap 95% intervals
            err = [[max(0.0, r.auc[c] - r.auc_low[c]) for r in rows][::-1],
                   [max(0.0, r.auc_high[c] - r.auc[c]) for r in rows][::-1]]
            err = np.nan_to_num(np.asarray(err))
        ax.barh(pos - (k - (len(curators) - 1) / 2) * height, vals, height=height, color=colors[c], label=c,
                xerr=err, error_kw={"elinewidth": 0.7, "capsize": 1.5})
    ax.axvline(0.5, color="black", linestyle=":", linewidth=1, label="chance (0.5)")
    ax.axvline(0.9, color="tab:red", linestyle="--", linewidth=1, label="target (0.9)")
    ax.set_yticks(pos, labels)
    ax.set_xlim(0, 1)
    ax.set_xlabel("ROC-AUC, clean vs corruption type (1 = every clean sequence scores higher)")
    ax.set_title("audit against known corruption labels", fontsize=11)
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5))
    ax.grid(True, axis="x", alpha=0.3)
    return _save(fig, out_dir, "audit_auc.png")


def plot_nll_delta(out_dir: Path, run_names: list[str], groups: list[str], delta: np.ndarray, what: str) -> str:
    """Heat map of Δ NLL (rows: runs, columns: groups), red = worse than the unfiltered LM."""
    fig = _new_figure(1.0 + 0.75 * len(groups), 1.2 + 0.32 * len(run_names))
    ax = fig.subplots()
    shown = delta[np.isfinite(delta)]
    lim = max(float(np.max(np.abs(shown))) if shown.size else 0.0, 1e-3)
    im = ax.imshow(delta, cmap="RdBu_r", vmin=-lim, vmax=lim, aspect="auto")
    for (i, j), v in np.ndenumerate(delta):
        if np.isfinite(v):
            ax.text(j, i, f"{v:+.2f}", ha="center", va="center", fontsize=7,
                    color="white" if abs(v) > 0.6 * lim else "black")
    ax.set_xticks(range(len(groups)), groups, rotation=35, ha="right", fontsize=8)
    ax.set_yticks(range(len(run_names)), run_names, fontsize=8)
    ax.set_title(f"held-out NLL by {what}: Δ vs the unfiltered LM (nats/token; red = worse)", fontsize=10)
    fig.colorbar(im, ax=ax, shrink=0.8)
    return _save(fig, out_dir, f"nll_delta_by_{what}.png")


def _line_colors(n: int) -> list:
    """``n`` distinguishable colours (tab10 up to 10, tab20 beyond)."""
    from matplotlib import colormaps

    cmap = colormaps["tab10" if n <= 10 else "tab20"]
    return [cmap(i) for i in range(n)]


def plot_probe(out_dir: Path, rows: Sequence[Mapping], title: str) -> str:
    """The objective probe: outer loss with oracle minus uniform weights against inner-LM age, one
    panel per target and one line per oracle (what it rejects), with standard-error bars
    (`datarater.meta.probe`)."""
    targets = list(dict.fromkeys(r["target"] for r in rows))
    oracles = list(dict.fromkeys(r["rejected"] for r in rows))
    fig = _new_figure(4.6 * len(targets) + (1.8 if len(oracles) > 1 else 0.0), 4.0)
    axes = np.atleast_1d(fig.subplots(1, len(targets), sharey=True))
    colours = _line_colors(len(oracles))
    for ax, target in zip(axes, targets, strict=True):
        for oracle, colour in zip(oracles, colours, strict=True):
            mine = [r for r in rows if r["target"] == target and r["rejected"] == oracle]
            se = [0.0 if r["delta_se"] is None or np.isnan(r["delta_se"]) else r["delta_se"] for r in mine]
            delta = [np.nan if r["delta"] is None else r["delta"] for r in mine]  # null: not finite
            ax.errorbar([r["age"] for r in mine], delta, yerr=se, marker="o", capsize=3,
                        label=oracle or None, lw=2.0 if oracle == oracles[0] else 1.0, color=colour)
        ax.axhline(0.0, color="grey", lw=0.8)
        ax.set_xlabel("inner LM age (steps)")
        ax.set_title(f"outer loss on {target}", fontsize=9)
    axes[0].set_ylabel("outer loss, oracle - uniform (nats)")
    if any(oracles):
        axes[-1].legend(title="rejected", fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0))
    fig.suptitle(title, fontsize=9)
    return _save(fig, out_dir, "probe.png")
