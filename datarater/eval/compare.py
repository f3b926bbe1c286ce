"""Curators against the unfiltered LM, random and the oracle over seeds: intervals and stated tests.

For each curator at its best ratio: the mean final NLL on the selection set over seeds with its
95% Student-t interval; Welch's one-sided t-test against the unfiltered runs and against random
filtering at the same ratio ("beyond noise" = lower with p < 0.05); and the fraction of the
random -> oracle gap it closes at that ratio (`datarater.eval.stats`).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from datarater.eval.stats import Interval, beyond_noise, format_interval, gap_closed, mean_ci, welch

ALPHA = 0.05


@dataclass
class CuratorComparison:
    curator: str
    ratio: float
    nll: Interval
    unfiltered: Interval
    p_vs_unfiltered: float  # one-sided Welch p of "curator lower than unfiltered"
    beyond_unfiltered: bool
    random: Interval | None  # random filtering at the same ratio
    p_vs_random: float
    beyond_random: bool
    oracle: Interval | None  # the oracle at the same ratio
    gap_closed: float  # of the random -> oracle gap at that ratio (nan without both)
    # Net compute gain of the first tested seed's run at that ratio, against the unfiltered run of
    # that seed: the curator's inference on the whole oversampled stream counted, and amortised
    # (scores computed once and reused: not counted).
    # None: never reached the unfiltered LM's final NLL; nan: not computed.
    gain: float | None = math.nan
    gain_amortised: float | None = math.nan

    def as_dict(self) -> dict:
        return asdict(self)


def compare_curators(nlls: dict[tuple[str, float], list[float]], best: dict[str, float]) -> list[CuratorComparison]:
    """``nlls[(curator, ratio)]``: final NLLs over seeds (``("none", 0.0)``: the unfiltered runs)."""
    base = nlls.get(("none", 0.0), [])
    out = []
    for curator, rho in best.items():
        mine = nlls.get((curator, rho), []) if rho > 0 else base
        rand = nlls.get(("random", rho)) if rho > 0 and curator != "random" else None
        orac = nlls.get(("oracle", rho)) if rho > 0 and curator != "oracle" else None
        cmp_base = welch(mine, base)
        cmp_rand = welch(mine, rand) if rand else None
        m_rand = mean_ci(rand) if rand else None
        m_orac = mean_ci(orac) if orac else None
        m_mine = mean_ci(mine)
        gap = gap_closed(m_mine.mean, m_rand.mean, m_orac.mean) if (m_rand and m_orac) else math.nan
        out.append(CuratorComparison(
            curator=curator, ratio=rho, nll=m_mine, unfiltered=mean_ci(base),
            p_vs_unfiltered=cmp_base.p_less, beyond_unfiltered=rho > 0 and beyond_noise(mine, base, ALPHA),
            random=m_rand, p_vs_random=cmp_rand.p_less if cmp_rand else math.nan,
            beyond_random=bool(rand) and beyond_noise(mine, rand, ALPHA),
            oracle=m_orac, gap_closed=gap,
        ))
    return out


def _p(p: float) -> str:
    return "–" if math.isnan(p) else (f"{p:.3f}" if p >= 0.001 else "<0.001")


def _yes(flag: bool, p: float) -> str:
    return "–" if math.isnan(p) else ("**yes**" if flag else "no")


def _gain(g: float | None) -> str:
    if g is None:
        return "not reached"
    return "–" if math.isnan(g) else f"{100 * g:+.1f}%"


def comparison_markdown(rows: list[CuratorComparison], set_name: str, apart: bool | None = None) -> str:
    """The table of `compare_curators`, with the test it applies stated under it; ``apart``: whether
    the runs that picked each ratio were left out of the test (None: not recorded)."""
    if not rows:
        return ""
    n = max(r.nll.n for r in rows)
    lines = [
        f"| curator | best ratio | {set_name} NLL (mean ± 95% CI) | seeds | vs unfiltered: Δ, p | beyond noise | "
        "random at that ratio | vs random: p | beyond noise | oracle at that ratio | random→oracle gap closed | "
        "net compute gain (inference counted / amortised) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        delta = r.nll.mean - r.unfiltered.mean
        lines.append(
            f"| {r.curator} | {r.ratio:g} | {format_interval(r.nll, 4)} | {r.nll.n} | {delta:+.4f}, {_p(r.p_vs_unfiltered)} | "
            f"{_yes(r.beyond_unfiltered, r.p_vs_unfiltered)} | {format_interval(r.random, 4) if r.random else '–'} | "
            f"{_p(r.p_vs_random)} | {_yes(r.beyond_random, r.p_vs_random)} | "
            f"{format_interval(r.oracle, 4) if r.oracle else '–'} | "
            f"{'–' if math.isnan(r.gap_closed) else f'{100 * r.gap_closed:.0f}%'} | "
            f"{_gain(r.gain)} / {_gain(r.gain_amortised)} |"
        )
    unf = rows[0].unfiltered
    lines += ["", f"Unfiltered: {format_interval(unf, 4)} over {unf.n} seeds. \"Beyond noise\": lower mean NLL with "
              f"Welch's one-sided t-test p < {ALPHA} (scipy.stats.ttest_ind, unequal variances); {n} seeds per "
              "cell vary the LM's initialisation and data order and the curator's own draws" + _picked(apart) + ". Gap closed: (random − curator) / (random − oracle) "
              "in mean NLL at the curator's ratio. Net compute gain (of the first tested seed's run, against the unfiltered "
              "run of the same seed) = 1 − (FLOPs to reach the unfiltered LM's final NLL) "
              "/ (the unfiltered LM's FLOPs), on the same set's curve; \"counted\" adds the curator's inference on "
              "every row of the oversampled stream, \"amortised\" leaves out scores computed once into side files."]
    return "\n".join(lines) + "\n"


def _picked(apart: bool | None) -> str:
    if apart is None:
        return ""
    return ("; the runs that picked each ratio are not among them" if apart else
            "; each cell's first seed is a run of the sweep's first stage, which picked the ratios "
            "(a bias in the curators' favour, not corrected for)")


def comparison_from_dict(d: dict) -> CuratorComparison:
    """A `CuratorComparison` read back from its ``as_dict`` (comparison.json)."""
    iv = {k: (Interval(**d[k]) if d.get(k) else None) for k in ("nll", "unfiltered", "random", "oracle")}
    return CuratorComparison(**{**d, **iv})
