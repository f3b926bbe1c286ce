"""The report's numbers: pure functions of runs, scores and per-row NLLs (numpy only, no text, no plots)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence

import numpy as np

from datarater.errors import UserError
from datarater.eval.report.inputs import BASELINE_CURATOR, RunResult

N_EXTREMES = 10


def finite(x) -> bool:
    """Whether ``x`` is a number that is neither None, NaN nor infinite."""
    return x is not None and math.isfinite(float(x))


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


def best_ratio(baseline_nll: float | None, nll_by_ratio: Iterable[tuple[float, float]]) -> float | None:
    """The discard ratio with the lowest final held-out NLL among one curator's runs on one model.

    ``nll_by_ratio`` holds ``(discard ratio, final NLL)`` pairs; ratio 0 is the unfiltered baseline
    (``baseline_nll``), a candidate for every curator: a curator that never beats it gets 0. Ties go
    to the smaller ratio; a missing or non-finite NLL (a run that did not finish) is never best.
    None when no candidate has a finite NLL.
    """
    options = [(float(nll), float(rho)) for rho, nll in [(0.0, baseline_nll), *nll_by_ratio] if finite(nll)]
    return min(options)[1] if options else None


def best_ratios(runs: Sequence[RunResult]) -> dict[str, float]:
    """Per curator (not "none", by name), its `best_ratio` on the smallest model; a curator without
    any finite candidate there is left out."""
    order = model_order(runs)
    if not order:
        return {}
    smallest = order[0]
    base = baselines_by_model(runs).get(smallest)
    best = {}
    for c in sorted({r.curator for r in runs if r.curator != BASELINE_CURATOR}):
        mine = [(r.discard, r.final_val_nll) for r in runs if r.model == smallest and r.curator == c]
        rho = best_ratio(None if base is None else base.final_val_nll, mine)
        if rho is not None:
            best[c] = rho
    return best


def at_largest_ratio(best: Mapping[str, float], swept: Mapping[str, Iterable[float]]) -> list[str]:
    """Curators whose best ratio (`best`) is the largest of those ``swept`` for them, above 0: the grid
    did not bracket their optimum, so a larger ratio might do better still."""
    return [c for c, rho in sorted(best.items())
            if rho > 0 and (mine := list(swept.get(c, ()))) and math.isclose(rho, max(mine))]


def swept_ratios(runs: Sequence[RunResult]) -> dict[str, list[float]]:
    """Curator -> the discard ratios of its runs on the smallest model (what `at_largest_ratio` takes)."""
    order, out = model_order(runs), {}
    for r in runs:
        if r.model == order[0]:
            out.setdefault(r.curator, []).append(float(r.discard))
    return out


def baseline_nlls(runs: Sequence[RunResult]) -> dict[str, float]:
    """Model -> final NLL of its unfiltered run (`baselines_by_model`), the reference of `delta_vs_baseline`."""
    return {m: r.final_val_nll for m, r in baselines_by_model(runs).items()}


def delta_vs_baseline(nll: float | None, baseline_nll: float | None) -> float:
    """Δ NLL against the unfiltered LM of the same size: ``nll − baseline_nll`` (+ = worse).

    NaN when either is missing (no baseline); not finite when either is not finite.
    """
    if nll is None or baseline_nll is None:
        return math.nan
    return float(nll) - float(baseline_nll)


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
    """Keep the top ``round((1−ρ)·n)`` of the corpus by score at each ratio ρ.

    Returns the sources (sorted), ``kept[s, r]`` = fraction of source ``s`` kept at ratio ``r`` and
    ``share[s, r]`` = fraction of the kept sequences that come from source ``s`` (the mixture).
    Rows tied at the cut share its places evenly: each is kept with chance (places left) / (rows
    tied), and the counts are the expected ones. That is what in-batch top-K does to ties, which go
    to the earlier position of a shuffled stream; breaking them by row order instead would make a
    curator that ties many rows (the oracle gives every off-target row 0) look as if it preferred
    the sources that come first.
    """
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    src = np.asarray([str(s) for s in sources])
    if src.size != scores.size:
        raise UserError(f"kept_fraction_by_source: {scores.size} scores but {src.size} sources")
    for rho in ratios:
        if not 0.0 <= float(rho) < 1.0:
            raise UserError(f"discard ratio {rho} is not in [0, 1)")
    names = sorted(set(src.tolist()))
    key = np.where(np.isnan(scores), -np.inf, scores)  # NaN ranks last, as in top_k_keep
    ranked = np.sort(key)[::-1]
    totals = np.array([np.count_nonzero(src == s) for s in names], dtype=np.float64)
    kept = np.zeros((len(names), len(ratios)))
    share = np.zeros((len(names), len(ratios)))
    for j, rho in enumerate(ratios):
        k = n_keep(scores.size, rho)
        chance = np.zeros(scores.size)
        if k > 0:
            cut = ranked[k - 1]
            above, tied = key > cut, key == cut
            chance[above] = 1.0
            chance[tied] = (k - np.count_nonzero(above)) / np.count_nonzero(tied)
        counts = np.array([chance[src == s].sum() for s in names])
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


def noise_threshold(values: Sequence[float]) -> float | None:
    """The |Δ NLL| two runs must exceed to differ beyond run-to-run noise: 2·√2·s, with s the
    sample standard deviation of ``values`` (final NLLs of one configuration under different
    seeds; the difference of two independent runs has standard deviation √2·s). None for < 2 values."""
    kept = [float(v) for v in values if finite(v)]
    if len(kept) < 2:
        return None
    return 2.0 * math.sqrt(2.0) * float(np.std(kept, ddof=1))


def sorted_runs(runs: Sequence[RunResult]) -> list[RunResult]:
    """Runs in table order: model size, the baseline first, then curator, discard ratio and name."""
    rank = {m: i for i, m in enumerate(model_order(runs))}
    return sorted(
        runs, key=lambda r: (rank[r.model], r.curator != BASELINE_CURATOR, r.curator, float(r.discard), r.name)
    )


def task_names(runs: Sequence[RunResult]) -> list[str]:
    """The multiple-choice tasks any run has results for, sorted."""
    return sorted({t for r in runs for t in r.tasks})


def mean_metric(run: RunResult, key: str) -> float:
    """The mean of metric ``key`` over the run's tasks (NaN when no task has it)."""
    vals = [float(m[key]) for m in run.tasks.values() if key in m and finite(m[key])]
    return float(np.mean(vals)) if vals else float("nan")


def curve_xy(run: RunResult) -> tuple[np.ndarray, np.ndarray]:
    """The run's curve as (train + curation FLOPs, held-out NLL), points with positive FLOPs and a finite NLL."""
    if not run.curve:
        return np.zeros(0), np.zeros(0)
    arr = np.asarray(run.curve, dtype=np.float64)
    x, y = arr[:, 1] + arr[:, 2], arr[:, 3]
    ok = (x > 0) & np.isfinite(y)
    return x[ok], y[ok]
