"""Honest statistics for results tables: t intervals, Welch tests, bootstrapped ROC-AUC, gap closed.

Every statistic here comes from scipy.stats or sklearn.metrics; this module only chooses the test,
handles the degenerate cases (too few values, empty groups) by returning NaN instead of raising, and
packs the answer into small dataclasses a report can format.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
from scipy import stats as sps
from sklearn.metrics import roc_auc_score

from datarater.errors import UserError

# Bootstrap replicates are scored this many values at a time (resamples × sample size), to cap memory.
_BOOTSTRAP_CELLS = 2_000_000


@dataclass(frozen=True)
class Interval:
    """A mean with its confidence interval [low, high] over ``n`` values of sample std ``std`` (ddof=1)."""

    mean: float
    low: float
    high: float
    n: int
    std: float

    @property
    def half_width(self) -> float:
        return (self.high - self.low) / 2.0


@dataclass(frozen=True)
class Comparison:
    """Welch's t-test of ``a`` against ``b``: ``diff`` = mean(a) − mean(b), two-sided ``p``, one-sided ``p_less``."""

    diff: float
    t: float
    p: float
    p_less: float  # H1: mean(a) < mean(b)
    n_a: int
    n_b: int


@dataclass(frozen=True)
class AucInterval:
    """ROC-AUC of positives over negatives with a bootstrap percentile interval [low, high]."""

    auc: float
    low: float
    high: float
    n_pos: int
    n_neg: int


def _flat(values) -> np.ndarray:
    return np.asarray(values, dtype=np.float64).reshape(-1)


def mean_ci(values, confidence: float = 0.95) -> Interval:
    """Mean of ``values`` with its Student-t confidence interval (scipy.stats.ttest_1samp).

    With one value the mean is that value and std, low and high are NaN (no spread to measure);
    with none everything is NaN. Values that are all equal give low = high = mean.
    """
    x = _flat(values)
    n = int(x.size)
    if n == 0:
        return Interval(math.nan, math.nan, math.nan, 0, math.nan)
    mean = float(np.mean(x))
    if n == 1:
        return Interval(mean, math.nan, math.nan, 1, math.nan)
    with warnings.catch_warnings():  # identical values: scipy warns about precision, the interval is [mean, mean]
        warnings.simplefilter("ignore", RuntimeWarning)
        ci = sps.ttest_1samp(x, 0.0).confidence_interval(confidence_level=confidence)
    return Interval(mean, float(ci.low), float(ci.high), n, float(np.std(x, ddof=1)))


def welch(a, b) -> Comparison:
    """Welch's unequal-variance t-test (scipy.stats.ttest_ind, equal_var=False) of ``a`` against ``b``.

    ``p`` is two-sided; ``p_less`` is one-sided for the alternative "mean(a) < mean(b)". With fewer
    than 2 values on either side there is no variance to test against: t, p and p_less are NaN.
    """
    x, y = _flat(a), _flat(b)
    diff = float(np.mean(x) - np.mean(y)) if x.size and y.size else math.nan
    if x.size < 2 or y.size < 2:
        return Comparison(diff, math.nan, math.nan, math.nan, int(x.size), int(y.size))
    with warnings.catch_warnings():  # zero variance on both sides: t = ±inf (or NaN if the means agree)
        warnings.simplefilter("ignore", RuntimeWarning)
        two = sps.ttest_ind(x, y, equal_var=False)
        less = sps.ttest_ind(x, y, equal_var=False, alternative="less")
    return Comparison(diff, float(two.statistic), float(two.pvalue), float(less.pvalue), int(x.size), int(y.size))


def beyond_noise(a, b, alpha: float = 0.05) -> bool:
    """Whether ``a`` is lower than ``b`` beyond run-to-run noise (lower NLL is better).

    The test: one-sided Welch's t-test (H1: mean(a) < mean(b)) at level ``alpha`` — True when
    mean(a) < mean(b) and its p-value is below ``alpha``. Fewer than 2 values on a side: False.
    """
    c = welch(a, b)
    return bool(c.diff < 0 and c.p_less < alpha)  # NaN compares False


def _auc_rows(pos: np.ndarray, neg: np.ndarray) -> np.ndarray:
    """ROC-AUC of each row of ``pos`` (resamples × n_pos) over the same row of ``neg``: Mann–Whitney U / (n_pos·n_neg)."""
    u = sps.mannwhitneyu(pos, neg, axis=1, method="asymptotic").statistic
    return np.asarray(u, dtype=np.float64) / (pos.shape[1] * neg.shape[1])


def roc_auc_ci(pos_scores, neg_scores, confidence: float = 0.95, n_resamples: int = 1000, seed: int = 0) -> AucInterval:
    """ROC-AUC of positives scored above negatives (sklearn.metrics.roc_auc_score; ties count ½).

    The interval is a stratified bootstrap percentile interval: positives and negatives are
    resampled separately with ``numpy.random.default_rng(seed)`` (so every replicate has both
    groups at their original sizes), each replicate's AUC is the Mann–Whitney U over
    n_pos·n_neg (scipy.stats.mannwhitneyu, vectorised over replicates), and low/high are its
    (1 − confidence)/2 and (1 + confidence)/2 quantiles. An empty group gives NaN throughout;
    ``n_resamples=0`` gives the AUC alone (low/high NaN); NaN or infinite scores raise UserError.
    """
    pos, neg = _flat(pos_scores), _flat(neg_scores)
    if pos.size == 0 or neg.size == 0:
        return AucInterval(math.nan, math.nan, math.nan, int(pos.size), int(neg.size))
    if not (np.all(np.isfinite(pos)) and np.all(np.isfinite(neg))):
        raise UserError("roc_auc: scores contain NaN or infinite values")
    y = np.concatenate([np.ones(pos.size), np.zeros(neg.size)])
    auc = float(roc_auc_score(y, np.concatenate([pos, neg])))
    rng = np.random.default_rng(seed)
    batch = max(1, _BOOTSTRAP_CELLS // (pos.size + neg.size))
    reps = []
    for start in range(0, n_resamples, batch):
        k = min(batch, n_resamples - start)
        p = pos[rng.integers(0, pos.size, size=(k, pos.size))]
        q = neg[rng.integers(0, neg.size, size=(k, neg.size))]
        reps.append(_auc_rows(p, q))
    if not reps:
        return AucInterval(auc, math.nan, math.nan, int(pos.size), int(neg.size))
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(np.concatenate(reps), [tail, 1.0 - tail])
    return AucInterval(auc, float(low), float(high), int(pos.size), int(neg.size))


def gap_closed(curator: float, floor: float, ceiling: float) -> float:
    """Fraction of the floor → ceiling NLL gap a curator closes: (floor − curator) / (floor − ceiling).

    NLLs, lower is better: 0 means no better than the floor (e.g. no filtering), 1 means as good as
    the ceiling (e.g. clean data only); below 0 is worse than the floor, above 1 beats the ceiling.
    When the ceiling is not below the floor (or any input is NaN) the gap is undefined: NaN.
    """
    floor, ceiling, curator = float(floor), float(ceiling), float(curator)
    if not ceiling < floor:
        return math.nan
    return (floor - curator) / (floor - ceiling)


def format_interval(iv: Interval, digits: int = 3) -> str:
    """Format as "mean ± half-width" for tables, e.g. "2.748 ± 0.031"; a single value shows "2.748 ± nan"."""
    return f"{iv.mean:.{digits}f} ± {iv.half_width:.{digits}f}"
