"""The analysis report: ``report.md`` with PNG plots, from plain data structures.

`write_report` takes a `ReportInputs` (runs of a discard-ratio sweep, net compute gains, a table
of rater scores with texts and, optionally, corruption labels and baseline curators' scores) and
writes the sections the DataRater paper shows: results, loss against compute, the best ratio
across model sizes, score distributions per source, the mixture the rater implies, the
extreme sequences, a regression of scores on text features, downstream accuracy, an audit
against known corruption labels and, given each LM's NLL on the scored rows (`RowNLL`), held-out
NLL by source and label (where filtering gains and where it loses). A section whose input is missing says so in one line.
Plots use matplotlib's object API with the Agg canvas (no pyplot, no global state).
"""

from __future__ import annotations

import csv
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from datarater.errors import UserError
from datarater.eval.audit import audit_table
from datarater.eval.features import linear_fit, text_features

BASELINE_CURATOR = "none"
RATER_CURATOR = "datarater"
DEFAULT_RATIOS = (0.0, 0.1, 0.25, 0.5, 0.75, 0.9)
EXCERPT_CHARS = 300
N_EXTREMES = 10
DPI = 100


# ----------------------------------------------------------------------------------------------
# Inputs


@dataclass
class RunResult:
    """One trained LM: its curve is ``(step, train_flops, curate_flops, val_nll)`` rows with cumulative FLOPs."""

    name: str
    model: str
    curator: str
    discard: float
    flops_per_step: float
    curve: list[tuple[int, float, float, float]]
    final_val_nll: float
    tasks: dict[str, dict[str, float]] = field(default_factory=dict)
    n_params: int | None = None

    def total_flops(self) -> float:
        """Training + curation FLOPs at the last evaluation point (NaN without a curve)."""
        if not self.curve:
            return float("nan")
        _, train, curate, _ = self.curve[-1]
        return float(train) + float(curate)


@dataclass
class ScoreTable:
    """Rater scores of scored sequences, row-aligned.

    ``texts`` are the decoded texts (features are computed on them; the report shows excerpts),
    ``labels`` the corruption labels ("clean" for clean) when known, ``curator_scores`` other
    curators' scores of the same rows (higher = keep) for the audit.
    """

    ids: list[str]
    sources: list[str]
    scores: np.ndarray
    texts: list[str]
    n_segments: np.ndarray
    labels: list[str] | None = None
    curator_scores: dict[str, np.ndarray] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.ids)


@dataclass
class RowNLL:
    """Each LM's NLL on the rows of the score table (row-aligned), for NLL by source and label."""

    nats: dict[str, np.ndarray]  # run name -> nats summed over each row's predicted tokens
    tokens: np.ndarray  # predicted tokens of each row (the same for every LM)


@dataclass
class ReportInputs:
    """Everything the report shows; only ``runs`` is required (it may be empty)."""

    runs: list[RunResult]
    gains: dict[str, float | None] | None = None
    scores: ScoreTable | Mapping | Sequence | None = None
    row_nll: RowNLL | None = None
    ratios: list[float] | None = None
    # model -> final NLLs of its unfiltered LM trained with different seeds (the baseline's first):
    # the run-to-run noise that section 1 compares every difference with (`sweep.baseline_seeds`).
    baseline_spread: dict[str, list[float]] | None = None
    title: str = "DataRater analysis report"
    notes: list[str] = field(default_factory=list)


_TABLE_KEYS = {
    "ids": ("id", "ids"),
    "sources": ("source", "sources"),
    "scores": ("score", "scores"),
    "texts": ("text", "texts"),
    "n_segments": ("n_segments",),
    "labels": ("label", "labels"),
    "curator_scores": ("curator_scores",),
}


def _pick(d: Mapping, field_name: str, where: str, required: bool = True):
    for key in _TABLE_KEYS[field_name]:
        if key in d:
            return d[key]
    if required:
        raise UserError(f"score table {where}: missing key {_TABLE_KEYS[field_name][0]!r}")
    return None


def as_score_table(data: ScoreTable | Mapping | Sequence) -> ScoreTable:
    """A `ScoreTable` from itself, a dict of columns, or a list of row dicts; checks lengths and values."""
    if isinstance(data, ScoreTable):
        table = data
    elif isinstance(data, Mapping):
        labels = _pick(data, "labels", "columns", required=False)
        table = ScoreTable(
            ids=[str(x) for x in _pick(data, "ids", "columns")],
            sources=[str(x) for x in _pick(data, "sources", "columns")],
            scores=np.asarray(_pick(data, "scores", "columns"), dtype=np.float64),
            texts=[str(x) for x in _pick(data, "texts", "columns")],
            n_segments=np.asarray(_pick(data, "n_segments", "columns")),
            labels=None if labels is None else [str(x) for x in labels],
            curator_scores=dict(_pick(data, "curator_scores", "columns", required=False) or {}),
        )
    elif isinstance(data, Sequence):
        cols: dict[str, list] = {k: [] for k in ("ids", "sources", "scores", "texts", "n_segments", "labels")}
        curator: dict[str, list] = {}
        for i, row in enumerate(data):
            if not isinstance(row, Mapping):
                raise UserError(f"score table row {i}: expected a dict, got {type(row).__name__}")
            for k in ("ids", "sources", "scores", "texts", "n_segments"):
                cols[k].append(_pick(row, k, f"row {i}"))
            cols["labels"].append(_pick(row, "labels", f"row {i}", required=False))
            for name, value in (_pick(row, "curator_scores", f"row {i}", required=False) or {}).items():
                curator.setdefault(name, []).append(value)
        has_labels = [x is not None for x in cols["labels"]]
        if any(has_labels) and not all(has_labels):
            raise UserError(f"score table: {has_labels.count(False)} of {len(data)} rows have no 'label'")
        table = ScoreTable(
            ids=[str(x) for x in cols["ids"]],
            sources=[str(x) for x in cols["sources"]],
            scores=np.asarray(cols["scores"], dtype=np.float64),
            texts=[str(x) for x in cols["texts"]],
            n_segments=np.asarray(cols["n_segments"]),
            labels=[str(x) for x in cols["labels"]] if any(has_labels) else None,
            curator_scores=curator,
        )
    else:
        raise UserError(
            f"score table: expected a ScoreTable, a dict of columns or a list of rows, got {type(data).__name__}"
        )
    return _checked(table)


def _checked(t: ScoreTable) -> ScoreTable:
    n = len(t.ids)
    if n == 0:
        raise UserError("score table is empty")
    lengths = {
        "sources": len(t.sources),
        "scores": len(t.scores),
        "texts": len(t.texts),
        "n_segments": len(t.n_segments),
    }
    if t.labels is not None:
        lengths["labels"] = len(t.labels)
    curator_scores = {}
    for name, s in t.curator_scores.items():
        arr = np.asarray(s, dtype=np.float64).reshape(-1)
        lengths[f"curator_scores[{name!r}]"] = arr.size
        curator_scores[name] = arr
    bad = {k: v for k, v in lengths.items() if v != n}
    if bad:
        raise UserError(f"score table: {n} ids but " + ", ".join(f"{v} {k}" for k, v in bad.items()))
    scores = np.asarray(t.scores, dtype=np.float64).reshape(-1)
    for name, arr in [("score", scores), *((f"curator_scores[{k!r}]", v) for k, v in curator_scores.items())]:
        n_bad = int(np.count_nonzero(~np.isfinite(arr)))
        if n_bad:
            raise UserError(f"score table: {n_bad} of {n} values of {name} are NaN or infinite")
    n_segments = np.asarray(t.n_segments).reshape(-1)
    if not np.issubdtype(n_segments.dtype, np.number) or np.any(n_segments < 0):
        raise UserError("score table: n_segments must be non-negative integers")
    return ScoreTable(
        ids=list(t.ids),
        sources=list(t.sources),
        scores=scores,
        texts=list(t.texts),
        n_segments=n_segments.astype(np.int64),
        labels=None if t.labels is None else list(t.labels),
        curator_scores=curator_scores,
    )


def _check_runs(runs: Sequence[RunResult]) -> None:
    names = [r.name for r in runs]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise UserError(f"report: run names must be unique; repeated: {', '.join(dup)}")
    for r in runs:
        if not 0.0 <= float(r.discard) < 1.0:
            raise UserError(f"run {r.name!r}: discard ratio {r.discard} is not in [0, 1)")
        for j, row in enumerate(r.curve):
            if len(row) != 4:
                raise UserError(
                    f"run {r.name!r}: curve row {j} has {len(row)} fields, expected (step, train_flops, curate_flops, val_nll)"
                )


# ----------------------------------------------------------------------------------------------
# Pure helpers


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


def model_order(runs: Sequence[RunResult]) -> list[str]:
    """Model names from smallest to largest: by parameter count when every model has one, else FLOPs per step."""
    models: dict[str, tuple[float, float]] = {}
    for r in runs:
        p = float(r.n_params) if r.n_params else math.nan
        old = models.get(r.model, (math.nan, 0.0))
        models[r.model] = (p if math.isnan(old[0]) else old[0], max(old[1], float(r.flops_per_step)))
    by_params = all(not math.isnan(p) for p, _ in models.values())
    return sorted(models, key=lambda m: (models[m][0] if by_params else models[m][1], m))


def baselines_by_model(runs: Sequence[RunResult]) -> dict[str, RunResult]:
    """The unfiltered run (curator "none", discard 0 preferred) of each model size."""
    out: dict[str, RunResult] = {}
    for r in sorted(runs, key=lambda r: float(r.discard)):
        if r.curator == BASELINE_CURATOR and r.model not in out:
            out[r.model] = r
    return out


def _finite(x) -> bool:
    return x is not None and math.isfinite(float(x))


def best_ratios(runs: Sequence[RunResult]) -> dict[str, float]:
    """Per curator (not "none"), the discard ratio with the lowest final NLL on the smallest model.

    Ratio 0 is the unfiltered baseline of that model, a candidate for every curator (as in the
    sweep). Ties go to the smaller ratio; runs without a finite final NLL are ignored.
    """
    order = model_order(runs)
    if not order:
        return {}
    smallest = order[0]
    best: dict[str, tuple[float, float]] = {}
    base = baselines_by_model(runs).get(smallest)
    if base is not None and _finite(base.final_val_nll):
        for c in {r.curator for r in runs if r.curator != BASELINE_CURATOR}:
            best[c] = (float(base.final_val_nll), 0.0)
    for r in runs:
        if r.model != smallest or r.curator == BASELINE_CURATOR or not _finite(r.final_val_nll):
            continue
        key = (float(r.final_val_nll), float(r.discard))
        if r.curator not in best or key < best[r.curator]:
            best[r.curator] = key
    return {c: d for c, (_, d) in best.items()}


def run_at(runs: Sequence[RunResult], model: str, curator: str, discard: float) -> RunResult | None:
    """The run of ``curator`` at ``discard`` on ``model``; at discard 0, the unfiltered baseline."""
    if float(discard) == 0.0:
        return baselines_by_model(runs).get(model)
    return next((r for r in runs if r.model == model and r.curator == curator and float(r.discard) == discard), None)


def n_keep(n: int, discard: float) -> int:
    """How many of ``n`` sequences a global filter at discard ratio ``discard`` keeps: round((1−ρ)·n)."""
    return int(round((1.0 - float(discard)) * n))


def kept_fraction_by_source(
    scores: np.ndarray, sources: Sequence[str], ratios: Sequence[float]
) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Keep the top ``round((1−ρ)·n)`` of the corpus by score (ties: earlier rows first) at each ratio ρ.

    Returns the sources (sorted), ``kept[s, r]`` = fraction of source ``s`` kept at ratio ``r`` and
    ``share[s, r]`` = fraction of the kept sequences that come from source ``s`` (the mixture).
    """
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    src = np.asarray([str(s) for s in sources])
    if src.size != scores.size:
        raise UserError(f"kept_fraction_by_source: {scores.size} scores but {src.size} sources")
    for rho in ratios:
        if not 0.0 <= float(rho) < 1.0:
            raise UserError(f"discard ratio {rho} is not in [0, 1)")
    names = sorted(set(src.tolist()))
    order = np.argsort(-scores, kind="stable")
    totals = np.array([np.count_nonzero(src == s) for s in names], dtype=np.float64)
    kept = np.zeros((len(names), len(ratios)))
    share = np.zeros((len(names), len(ratios)))
    for j, rho in enumerate(ratios):
        k = n_keep(scores.size, rho)
        chosen = src[order[:k]]
        counts = np.array([np.count_nonzero(chosen == s) for s in names], dtype=np.float64)
        kept[:, j] = counts / totals
        share[:, j] = counts / max(k, 1)
    return names, kept, share


def nll_by_group(nats: np.ndarray, tokens: np.ndarray, groups: Sequence[str]) -> dict[str, float]:
    """Nats per predicted token over all rows (``"all"``) and over the rows of each group."""
    nats, tokens, groups = np.asarray(nats, np.float64), np.asarray(tokens, np.float64), np.asarray(groups)
    out = {"all": float(nats.sum() / tokens.sum()) if tokens.sum() else math.nan}
    for g in sorted(set(groups.tolist())):
        m = groups == g
        out[g] = float(nats[m].sum() / tokens[m].sum()) if tokens[m].sum() else math.nan
    return out


def extreme_indices(scores: np.ndarray, k: int = N_EXTREMES) -> tuple[np.ndarray, np.ndarray]:
    """Indices of the ``k`` lowest (lowest first) and ``k`` highest (highest first) scores; ties by position."""
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    return np.argsort(scores, kind="stable")[:k], np.argsort(-scores, kind="stable")[:k]


# ----------------------------------------------------------------------------------------------
# Formatting


def _fmt(x, digits: int = 4) -> str:
    return f"{float(x):.{digits}f}" if _finite(x) else "n/a"


def _pct(x, digits: int = 1) -> str:
    return f"{100.0 * float(x):.{digits}f}%" if _finite(x) else "n/a"


def _flops(x) -> str:
    return f"{float(x):.2e}" if _finite(x) else "n/a"


def _md_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return lines


def _safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)


def _image(md: list[str], alt: str, filename: str) -> None:
    md += [f"![{md_escape(alt)}]({filename})", ""]


def _sorted_runs(runs: Sequence[RunResult]) -> list[RunResult]:
    rank = {m: i for i, m in enumerate(model_order(runs))}
    return sorted(
        runs, key=lambda r: (rank[r.model], r.curator != BASELINE_CURATOR, r.curator, float(r.discard), r.name)
    )


def _gain_text(run: RunResult, gains: Mapping[str, float | None] | None, baseline: RunResult | None) -> str:
    if baseline is not None and run.name == baseline.name:
        return "baseline"
    if gains is None or run.name not in gains:
        return "not computed"
    g = gains[run.name]
    return "not reached" if g is None else _pct(g)


def _task_names(runs: Sequence[RunResult]) -> list[str]:
    return sorted({t for r in runs for t in r.tasks})


def _mean_metric(run: RunResult, key: str) -> float:
    vals = [float(m[key]) for m in run.tasks.values() if key in m and _finite(m[key])]
    return float(np.mean(vals)) if vals else float("nan")


# ----------------------------------------------------------------------------------------------
# Plots


def _new_figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig, out_dir: Path, filename: str) -> str:
    fig.savefig(out_dir / filename, dpi=DPI, bbox_inches="tight")
    return filename


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


def _curve_xy(run: RunResult) -> tuple[np.ndarray, np.ndarray]:
    if not run.curve:
        return np.zeros(0), np.zeros(0)
    arr = np.asarray(run.curve, dtype=np.float64)
    x, y = arr[:, 1] + arr[:, 2], arr[:, 3]
    ok = (x > 0) & np.isfinite(y)
    return x[ok], y[ok]


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


def plot_nll_vs_flops(out_dir: Path, model: str, runs: Sequence[RunResult], baseline: RunResult | None) -> str:
    """One figure per model size, a panel per curator: held-out NLL against training + curation FLOPs."""
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
            x, y = _curve_xy(baseline)
            (handles["no filter (baseline)"],) = ax.plot(x, y, color="black", linestyle="--", linewidth=1.6)
            ys.append(y)
        for r in sorted((r for r in runs if r.curator == curator and r is not baseline), key=lambda r: r.discard):
            x, y = _curve_xy(r)
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
            ax.set_ylabel("held-out NLL (nats/token)")
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
    fig.suptitle(f"{model}: held-out NLL against compute (one panel per curator)", fontsize=12)
    return _save(fig, out_dir, f"nll_vs_flops_{_safe_name(model)}.png")


def plot_best_ratio(out_dir: Path, runs: Sequence[RunResult], best: Mapping[str, float]) -> str:
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
            if r.model == smallest and r.curator == curator and _finite(r.final_val_nll)
        )
        if base_small is not None and _finite(base_small.final_val_nll) and all(d > 0 for d, _ in pts):
            pts = [(0.0, float(base_small.final_val_nll)), *pts]
        d, y = zip(*pts, strict=True)
        ax_a.plot(d, y, marker="o", color=colors[curator], label=curator)
        yb = [v for dd, v in pts if dd == best[curator]][0]
        ax_a.plot(
            [best[curator]],
            [yb],
            marker="*",
            markersize=14,
            color=colors[curator],
            markeredgecolor="black",
            linestyle="none",
        )
    if base_small is not None and _finite(base_small.final_val_nll):
        ax_a.axhline(float(base_small.final_val_nll), color="black", linestyle="--", linewidth=1, label="no filter")
    swept = sorted({float(r.discard) for r in runs if r.model == smallest} | {0.0})
    ax_a.set_xticks(swept, [f"{x:.0%}" for x in swept])
    ax_a.set_title(f"ratio sweep on {smallest} (★ = best ratio)", fontsize=11)
    ax_a.set_xlabel("discard ratio ρ (fraction of the stream dropped)")
    ax_a.set_ylabel("final held-out NLL (nats/token)")
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
            if r is not None and _finite(r.final_val_nll) and _finite(r.total_flops())
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
    ax_b.set_ylabel("final held-out NLL (nats/token)")
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
    ax.set_title(f"linear fit of rater scores on text features (R² = {_fmt(r2, 3)})", fontsize=11)
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
        ax.barh(pos - (k - (len(curators) - 1) / 2) * height, vals, height=height, color=colors[c], label=c)
    ax.axvline(0.5, color="black", linestyle=":", linewidth=1, label="chance (0.5)")
    ax.axvline(0.9, color="tab:red", linestyle="--", linewidth=1, label="target (0.9)")
    ax.set_yticks(pos, labels)
    ax.set_xlim(0, 1)
    ax.set_xlabel("ROC-AUC, clean vs corruption type (1 = every clean sequence scores higher)")
    ax.set_title("audit against known corruption labels", fontsize=11)
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5))
    ax.grid(True, axis="x", alpha=0.3)
    return _save(fig, out_dir, "audit_auc.png")


# ----------------------------------------------------------------------------------------------
# Sections (each returns Markdown lines)


def _left_out(why: str) -> list[str]:
    return [f"_Left out: {why}._", ""]


def noise_threshold(values: Sequence[float]) -> float | None:
    """The |Δ NLL| two runs must exceed to differ beyond run-to-run noise: 2·√2·s, with s the
    sample standard deviation of ``values`` (final NLLs of one configuration under different
    seeds; the difference of two independent runs has standard deviation √2·s). None for < 2 values."""
    finite = [float(v) for v in values if _finite(v)]
    if len(finite) < 2:
        return None
    return 2.0 * math.sqrt(2.0) * float(np.std(finite, ddof=1))


def noise_lines(spread: Mapping[str, Sequence[float]], order: Sequence[str]) -> list[str]:
    """One Markdown paragraph per model of ``order`` with a seed spread: its NLLs and noise threshold."""
    md = []
    for model in order:
        values = [float(v) for v in spread.get(model, ()) if _finite(v)]
        thr = noise_threshold(values)
        if thr is None:
            continue
        md.append(
            f"Run-to-run noise: the unfiltered {md_escape(model)} LM trained with {len(values)} seeds (initialisation "
            f"and data order) ends at {', '.join(f'{v:.4f}' for v in values)}: mean {np.mean(values):.4f}, "
            f"std {np.std(values, ddof=1):.4f}. A difference between two runs is beyond that noise when "
            f"|Δ| > 2·√2·std = {thr:.4f} (with few seeds the std itself is rough)."
        )
    return md + ([""] if md else [])


def section_results(runs: Sequence[RunResult], gains, spread: Mapping[str, Sequence[float]] | None = None) -> list[str]:
    md = ["## 1. Results", ""]
    if not runs:
        return md + _left_out("no runs given")
    baselines = baselines_by_model(runs)
    thresholds = {m: noise_threshold(v) for m, v in (spread or {}).items()}
    show_noise = any(t is not None for t in thresholds.values())
    missing = [m for m in model_order(runs) if m not in baselines]
    rows = []
    for r in _sorted_runs(runs):
        base = baselines.get(r.model)
        delta = (
            float(r.final_val_nll) - float(base.final_val_nll)
            if base is not None and _finite(r.final_val_nll) and _finite(base.final_val_nll)
            else float("nan")
        )
        rows.append(
            [
                md_escape(r.model),
                md_escape(r.curator),
                _pct(r.discard, 0),
                _fmt(r.final_val_nll),
                "—" if base is not None and r.name == base.name else (f"{delta:+.4f}" if _finite(delta) else "n/a"),
                _gain_text(r, gains, base),
                _flops(r.total_flops()),
                _pct(_mean_metric(r, "acc")),
                _pct(_mean_metric(r, "acc_norm")),
            ]
        )
        if show_noise:
            thr = thresholds.get(r.model)
            is_base = base is not None and r.name == base.name
            rows[-1].insert(5, "—" if is_base or thr is None or not _finite(delta) else ("yes" if abs(delta) > thr else "no"))
    head = ["model", "curator", "discard", "final val NLL", "Δ NLL vs baseline", "net compute gain",
            "FLOPs (train+curate)", "mean acc", "mean acc_norm"]
    if show_noise:
        head.insert(5, "beyond noise")
    md += _md_table(head, rows)
    md += [
        "",
        "NLL in nats per token on the held-out split; Δ < 0 is better than the unfiltered run of the same size. "
        "Net compute gain = 1 − (FLOPs the filtered run needs to reach the baseline's final NLL, curation included) "
        '/ (baseline FLOPs); "not reached" when it never gets there. Mean accuracies over the tasks of section 8.',
        "",
    ]
    md += noise_lines(spread or {}, model_order(runs))
    if missing:
        md += [f'No unfiltered baseline (curator "none") for: {", ".join(missing)}.', ""]
    return md


def section_curves(out_dir: Path, runs: Sequence[RunResult]) -> list[str]:
    md = ["## 2. Held-out NLL against compute", ""]
    if not any(_curve_xy(r)[0].size for r in runs):
        return md + _left_out("no run has an evaluation curve with positive FLOPs")
    baselines = baselines_by_model(runs)
    for model in model_order(runs):
        mine = [r for r in runs if r.model == model]
        if not any(_curve_xy(r)[0].size for r in mine):
            md += [f"{model}: no evaluation curve.", ""]
            continue
        _image(md, f"held-out NLL vs FLOPs, {model}", plot_nll_vs_flops(out_dir, model, mine, baselines.get(model)))
    md += [
        "Each panel: one curator, a line per discard ratio; dashed black: the unfiltered baseline of the same size. "
        "Compute counts the curator's inference on the oversampled stream. When early losses are far above the end of "
        "training, the y-axis is cut to show the later part.",
        "",
    ]
    return md


def section_best_ratio(out_dir: Path, runs: Sequence[RunResult]) -> list[str]:
    md = ["## 3. Best ratio across model sizes", ""]
    best = best_ratios(runs)
    if not best:
        return md + _left_out("no filtered run on the smallest model has a final NLL")
    order = model_order(runs)
    rows = []
    for curator, rho in sorted(best.items()):
        r = run_at(runs, order[0], curator, rho)
        rows.append([md_escape(curator), _pct(rho, 0), _fmt(r.final_val_nll)])
    md += [
        f"Best discard ratio per curator, chosen by final held-out NLL on the smallest model ({md_escape(order[0])}):",
        "",
    ]
    md += _md_table(["curator", "best discard", f"final NLL on {md_escape(order[0])}"], rows) + [""]
    _image(md, "best ratio", plot_best_ratio(out_dir, runs, best))
    return md


def section_histograms(out_dir: Path, t: ScoreTable | None) -> list[str]:
    md = ["## 4. Rater scores per source", ""]
    if t is None:
        return md + _left_out("no score table given")
    src = np.asarray(t.sources)
    rows = [
        [
            md_escape(s),
            str(int(np.sum(src == s))),
            _fmt(np.mean(t.scores[src == s]), 3),
            _fmt(np.median(t.scores[src == s]), 3),
        ]
        for s in sorted(set(t.sources))
    ]
    fn = plot_histograms(
        out_dir, "score_hist_by_source.png", t.scores, src, "DataRater scores per source", "DataRater score"
    )
    _image(md, "score histograms per source", fn)
    md += _md_table(["source", "sequences", "mean score", "median score"], rows) + [""]
    return md


def section_kept(out_dir: Path, t: ScoreTable | None, ratios: Sequence[float], ratios_from: str) -> list[str]:
    md = ["## 5. Kept fraction per source (the mixture the rater implies)", ""]
    if t is None:
        return md + _left_out("no score table given")
    names, kept, share = kept_fraction_by_source(t.scores, t.sources, ratios)
    md += [
        f"Keeping the top (1 − ρ) of the {len(t)} scored sequences by DataRater score (the large-batch limit of "
        f"in-batch top-K filtering); ratios {ratios_from}.",
        "",
    ]
    _image(md, "kept fraction per source", plot_kept_fraction(out_dir, names, ratios, kept, share))
    head = ["source"] + [f"ρ={r:.0%}" for r in ratios]
    md += ["Fraction of each source kept:", ""]
    md += _md_table(head, [[md_escape(n)] + [_pct(v) for v in kept[i]] for i, n in enumerate(names)]) + [""]
    md += ["Share of the kept sequences (the implied mixture):", ""]
    md += _md_table(head, [[md_escape(n)] + [_pct(v) for v in share[i]] for i, n in enumerate(names)]) + [""]
    return md


def _extreme_table(t: ScoreTable, idx: np.ndarray) -> list[str]:
    head = ["#", "score", "source"] + (["label"] if t.labels is not None else []) + ["segments", "id", "excerpt"]
    rows = []
    for k, i in enumerate(idx, start=1):
        row = [str(k), _fmt(t.scores[i], 4), md_escape(t.sources[i])]
        if t.labels is not None:
            row.append(md_escape(t.labels[i]))
        row += [str(int(t.n_segments[i])), md_escape(t.ids[i]), md_escape(printable_excerpt(t.texts[i]))]
        rows.append(row)
    return _md_table(head, rows)


def section_extremes(t: ScoreTable | None) -> list[str]:
    md = ["## 6. Lowest and highest scored sequences", ""]
    if t is None:
        return md + _left_out("no score table given")
    low, high = extreme_indices(t.scores, N_EXTREMES)
    md += [
        f"Excerpts of at most {EXCERPT_CHARS} characters; invisible characters made visible "
        "(↵ newline, → tab, ␀ and other control pictures, ␣ runs of spaces, \\xNN / \\uNNNN other non-printables).",
        "",
        f"### {len(low)} lowest",
        "",
    ]
    md += _extreme_table(t, low) + ["", f"### {len(high)} highest", ""]
    md += _extreme_table(t, high) + [""]
    return md


def section_regression(out_dir: Path, t: ScoreTable | None) -> list[str]:
    md = ["## 7. Scores against simple text features", ""]
    if t is None:
        return md + _left_out("no score table given")
    if len(t) < 3:
        return md + _left_out(f"only {len(t)} scored sequences (need at least 3)")
    names, X = text_features(t.texts, t.n_segments.tolist())
    fit = linear_fit(X, t.scores, names)
    if not math.isfinite(fit.r2):
        return md + _left_out("all scores are equal, there is nothing to explain")
    md += [
        f"Least-squares fit of the DataRater score on {len(names)} features of the decoded text of {len(t)} sequences: "
        f"**R² = {fit.r2:.3f}** (the paper found about 0.75). Coefficients are per standard deviation of the feature, "
        "largest magnitude first; r = Pearson correlation of the feature with the score.",
        "",
    ]
    rows = []
    for j, name in sorted(enumerate(names), key=lambda p: -abs(fit.coef[p[0]])):
        if fit.constant[j]:
            rows.append([md_escape(name), "constant (left out)", "n/a", _fmt(fit.mean[j], 4), "0"])
            continue
        r = float(np.corrcoef(X[:, j], t.scores)[0, 1]) if np.std(t.scores) > 0 else float("nan")
        rows.append([md_escape(name), f"{fit.coef[j]:+.4f}", _fmt(r, 3), _fmt(fit.mean[j], 4), _fmt(fit.std[j], 4)])
    md += _md_table(["feature", "coefficient (per std)", "r", "mean", "std"], rows) + [""]
    if fit.ranked():
        _image(md, "regression coefficients", plot_coefficients(out_dir, fit.ranked(), fit.r2))
    return md


def section_downstream(runs: Sequence[RunResult]) -> list[str]:
    md = ["## 8. Downstream accuracy", ""]
    tasks = _task_names(runs)
    if not tasks:
        return md + _left_out("no run has multiple-choice task results")
    head = ["model", "curator", "discard"]
    for task in tasks:
        ns = {int(r.tasks[task].get("n", 0)) for r in runs if task in r.tasks}
        head.append(f"{md_escape(task)} (n={'/'.join(str(n) for n in sorted(ns))})")
    rows = []
    for r in _sorted_runs(runs):
        row = [md_escape(r.model), md_escape(r.curator), _pct(r.discard, 0)]
        for task in tasks:
            m = r.tasks.get(task)
            row.append("–" if m is None else f"{_pct(m.get('acc_norm'))} ({_pct(m.get('acc'))})")
        rows.append(row)
    md += ["Zero-shot accuracy, length-normalised (raw in brackets).", ""]
    md += _md_table(head, rows) + [""]
    return md


def section_audit(out_dir: Path, t: ScoreTable | None) -> list[str]:
    md = ["## 9. Audit against corruption labels", ""]
    if t is None:
        return md + _left_out("no score table given")
    if t.labels is None:
        return md + _left_out("the scored corpus carries no corruption labels")
    labels = np.asarray(t.labels)
    if not np.any(labels == "clean") or np.all(labels == "clean"):
        return md + _left_out("the labels need both clean and corrupted sequences")
    scores = {RATER_CURATOR: t.scores}
    scores.update({c: s for c, s in t.curator_scores.items() if c != RATER_CURATOR})
    curators = list(scores)
    rows = audit_table(t.labels, scores)
    md += [
        f"ROC-AUC of clean ({int(np.sum(labels == 'clean'))} sequences) against each corruption type, per curator "
        "(higher score = keep; 1 = perfectly separated, 0.5 = chance).",
        "",
    ]
    table = [[md_escape(r.label), str(r.n)] + [_fmt(r.auc[c], 3) for c in curators] for r in rows]
    md += _md_table(["corruption", "n"] + [md_escape(c) for c in curators], table) + [""]
    _image(md, "audit ROC-AUC", plot_audit(out_dir, rows, curators))
    fn = plot_histograms(
        out_dir, "score_hist_by_label.png", t.scores, labels, "DataRater scores per label", "DataRater score"
    )
    _image(md, "score histograms per label", fn)
    return md


def plot_nll_delta(out_dir: Path, run_names: list[str], groups: list[str], delta: np.ndarray, what: str) -> str:
    """Heat map of Δ NLL (rows: runs, columns: groups), red = worse than the unfiltered LM."""
    fig = _new_figure(1.0 + 0.75 * len(groups), 1.2 + 0.32 * len(run_names))
    ax = fig.subplots()
    finite = delta[np.isfinite(delta)]
    lim = max(float(np.max(np.abs(finite))) if finite.size else 0.0, 1e-3)
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


def section_nll_by_group(out_dir: Path, t: ScoreTable | None, row_nll: RowNLL | None,
                         runs: Sequence[RunResult]) -> list[str]:
    md = ["## 10. Held-out NLL by source and corruption label", ""]
    if t is None:
        return md + _left_out("no score table given")
    if row_nll is None or not row_nll.nats:
        return md + _left_out("no per-row NLL of the sweep's LMs given")
    bad = {k: len(v) for k, v in row_nll.nats.items() if len(v) != len(t)}
    if len(row_nll.tokens) != len(t) or bad:
        raise UserError(f"per-row NLL: the score table has {len(t)} rows but tokens has {len(row_nll.tokens)}"
                        + "".join(f", {k} has {v}" for k, v in bad.items()))
    shown = [r for r in _sorted_runs(runs) if r.name in row_nll.nats]
    baselines = baselines_by_model(shown)
    md += [
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
            cells = [md_escape(r.model), md_escape(r.curator), _pct(r.discard, 0)]
            if base is None or base.name == r.name:
                rows.append(cells + [_fmt(vals[k], 3) for k in ["all", *names]])
                continue
            ref = vals_of[base.name]
            delta = [vals[k] - ref[k] for k in ["all", *names]]
            rows.append(cells + [f"{d:+.3f}" if _finite(d) else "n/a" for d in delta])
            heat.append(delta)
            heat_names.append(f"{r.model} {r.curator} {r.discard:.0%}")
        md += [f"By {what}:", ""] + _md_table(head, rows) + [""]
        if heat:
            _image(md, f"NLL delta by {what}", plot_nll_delta(out_dir, heat_names, ["all", *names],
                                                             np.asarray(heat, np.float64), what))
    return md


# ----------------------------------------------------------------------------------------------
# Entry points


def write_report(out_dir: str | Path, inputs: ReportInputs) -> Path:
    """Writes ``out_dir/report.md`` and its PNGs; returns the path of ``report.md``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    runs = list(inputs.runs)
    _check_runs(runs)
    table = None if inputs.scores is None else as_score_table(inputs.scores)
    if inputs.ratios:
        ratios, ratios_from = [float(r) for r in inputs.ratios], "as given"
    elif runs:
        ratios, ratios_from = sorted({float(r.discard) for r in runs} | {0.0}), "from the runs' discard ratios"
    else:
        ratios, ratios_from = list(DEFAULT_RATIOS), "the default sweep"
    md = [f"# {inputs.title}", ""]
    md += [f"- {line}" for line in inputs.notes] + ([""] if inputs.notes else [])
    md += section_results(runs, inputs.gains, inputs.baseline_spread)
    md += section_curves(out, runs)
    md += section_best_ratio(out, runs)
    md += section_histograms(out, table)
    md += section_kept(out, table, ratios, ratios_from)
    md += section_extremes(table)
    md += section_regression(out, table)
    md += section_downstream(runs)
    md += section_audit(out, table)
    md += section_nll_by_group(out, table, inputs.row_nll, runs)
    path = out / "report.md"
    path.write_text("\n".join(md).rstrip() + "\n", encoding="utf-8")
    return path


def write_results_csv(path: str | Path, runs: Sequence[RunResult], gains: Mapping[str, float | None] | None) -> Path:
    """One row per run: sizes, FLOPs, final NLL, Δ vs baseline, net compute gain, per-task metrics.

    ``net_compute_gain`` is a number, "not reached", "baseline" or empty when not computed.
    """
    _check_runs(runs)
    baselines = baselines_by_model(runs)
    tasks = _task_names(runs)
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
        for r in _sorted_runs(runs):
            base = baselines.get(r.model)
            last = r.curve[-1] if r.curve else (None, None, None, None)
            delta = ""
            if base is not None and _finite(r.final_val_nll) and _finite(base.final_val_nll):
                delta = repr(float(r.final_val_nll) - float(base.final_val_nll))
            gain = _gain_text(r, gains, base)
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
                float(r.final_val_nll) if _finite(r.final_val_nll) else "",
                delta,
                gain,
            ]
            for task in tasks:
                m = r.tasks.get(task, {})
                row += [m.get("acc", ""), m.get("acc_norm", ""), m.get("n", "")]
            w.writerow(row)
    return path
