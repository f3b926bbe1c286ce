"""Known answers for the honest-statistics helpers: t intervals, Welch tests, bootstrapped AUC, gap closed."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import t as student_t
from sklearn.metrics import roc_auc_score

from datarater.errors import UserError
from datarater.eval.stats import (
    Interval,
    _auc_rows,
    beyond_noise,
    format_interval,
    gap_closed,
    mean_ci,
    roc_auc_ci,
    welch,
)


def test_mean_ci_of_one_two_three():
    iv = mean_ci([1.0, 2.0, 3.0])
    half = 4.302652729911275 * 1.0 / math.sqrt(3.0)  # t_{0.975, 2} · s / √n with s = 1
    assert (iv.mean, iv.n, iv.std) == (2.0, 3, pytest.approx(1.0))
    assert iv.low == pytest.approx(2.0 - half, rel=1e-9)
    assert iv.high == pytest.approx(2.0 + half, rel=1e-9)
    assert iv.half_width == pytest.approx(2.484, abs=1e-3)
    assert mean_ci([1.0, 2.0, 3.0], confidence=0.5).half_width < 1.0 < iv.half_width


def test_mean_ci_degenerate():
    one = mean_ci([2.5])
    assert one.mean == 2.5 and one.n == 1 and math.isnan(one.low) and math.isnan(one.high) and math.isnan(one.std)
    none = mean_ci([])
    assert none.n == 0 and math.isnan(none.mean)
    flat = mean_ci([4.0, 4.0, 4.0])
    assert (flat.low, flat.high, flat.std) == (4.0, 4.0, 0.0)


def test_welch_matches_the_formula():
    a = np.array([2.70, 2.72, 2.71, 2.73, 2.69])
    b = np.array([2.80, 2.78, 2.83, 2.79])
    va, vb = a.var(ddof=1) / a.size, b.var(ddof=1) / b.size
    t = (a.mean() - b.mean()) / math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va**2 / (a.size - 1) + vb**2 / (b.size - 1))  # Welch–Satterthwaite
    c = welch(a, b)
    assert c.diff == pytest.approx(a.mean() - b.mean())
    assert c.t == pytest.approx(t, rel=1e-10)
    assert (c.n_a, c.n_b) == (5, 4)
    assert c.p_less == pytest.approx(student_t.cdf(t, df), rel=1e-8)
    assert c.p == pytest.approx(2 * student_t.cdf(-abs(t), df), rel=1e-8)
    assert c.p_less < 1e-3  # a is clearly lower
    assert welch(b, a).p_less == pytest.approx(1 - c.p_less)


def test_welch_too_few_values():
    c = welch([1.0], [2.0, 3.0])
    assert c.diff == -1.5 and math.isnan(c.t) and math.isnan(c.p) and math.isnan(c.p_less)
    assert math.isnan(welch([], [1.0, 2.0]).diff)


def test_beyond_noise():
    low, high = [2.70, 2.71, 2.72], [2.80, 2.81, 2.79]
    assert beyond_noise(low, high)
    assert not beyond_noise(high, low)  # reversed
    assert not beyond_noise([2.70, 2.80, 2.75], [2.71, 2.79, 2.76])  # overlapping
    assert not beyond_noise([2.0], [3.0, 3.1])  # one value: no noise estimate
    # p_less for a 0.02 gap against noise of ±0.05 is well above 0.05
    assert not beyond_noise([2.70, 2.80, 2.75], [2.72, 2.82, 2.77])


def test_roc_auc_ci_known_cases():
    perfect = roc_auc_ci([3.0, 4.0, 5.0], [0.0, 1.0])
    assert (perfect.auc, perfect.low, perfect.high) == (1.0, 1.0, 1.0)
    assert (perfect.n_pos, perfect.n_neg) == (3, 2)
    small = roc_auc_ci([0.9, 0.4], [0.5, 0.1])  # 3 of the 4 pairs ordered
    assert small.auc == 0.75
    assert roc_auc_ci([2.0, 2.0], [2.0]).auc == 0.5  # ties count ½
    inverted = roc_auc_ci([0.0], [1.0, 2.0])
    assert (inverted.auc, inverted.low, inverted.high) == (0.0, 0.0, 0.0)


def test_roc_auc_ci_interval_contains_estimate_and_is_reproducible():
    rng = np.random.default_rng(0)
    pos, neg = rng.normal(1.0, 1.0, 200), rng.normal(0.0, 1.0, 150)
    iv = roc_auc_ci(pos, neg, n_resamples=400, seed=3)
    assert iv.low < iv.auc < iv.high
    assert 0.05 < iv.high - iv.low < 0.2  # ≈ 2·1.96·0.027 for these sizes
    assert roc_auc_ci(pos, neg, n_resamples=400, seed=3) == iv
    assert roc_auc_ci(pos, neg, n_resamples=400, seed=4) != iv
    narrow = roc_auc_ci(pos, neg, confidence=0.5, n_resamples=400, seed=3)
    assert iv.low < narrow.low < narrow.high < iv.high


def test_bootstrap_replicate_auc_is_sklearns():
    rng = np.random.default_rng(1)
    pos = rng.integers(0, 5, size=(3, 7)).astype(float)  # ties
    neg = rng.integers(-1, 4, size=(3, 6)).astype(float)
    y = np.r_[np.ones(7), np.zeros(6)]
    want = [roc_auc_score(y, np.r_[p, q]) for p, q in zip(pos, neg, strict=True)]
    np.testing.assert_allclose(_auc_rows(pos, neg), want, rtol=1e-12)


def test_roc_auc_ci_degenerate():
    empty = roc_auc_ci([], [1.0])
    assert math.isnan(empty.auc) and math.isnan(empty.low) and math.isnan(empty.high)
    bare = roc_auc_ci([1.0, 2.0], [0.0], n_resamples=0)
    assert bare.auc == 1.0 and math.isnan(bare.low)
    with pytest.raises(UserError, match="NaN"):
        roc_auc_ci([np.nan], [1.0])


def test_gap_closed():
    assert gap_closed(2.8, floor=3.0, ceiling=2.6) == pytest.approx(0.5)
    assert gap_closed(3.0, floor=3.0, ceiling=2.6) == 0.0
    assert gap_closed(2.6, floor=3.0, ceiling=2.6) == 1.0
    assert gap_closed(3.2, floor=3.0, ceiling=2.6) == pytest.approx(-0.5)  # worse than the floor
    assert math.isnan(gap_closed(2.8, floor=3.0, ceiling=3.0))  # no gap
    assert math.isnan(gap_closed(2.8, floor=2.6, ceiling=3.0))  # ceiling above floor
    assert math.isnan(gap_closed(float("nan"), floor=3.0, ceiling=2.6))


def test_format_interval():
    assert format_interval(Interval(2.748, 2.717, 2.779, 3, 0.01)) == "2.748 ± 0.031"
    assert format_interval(mean_ci([1.0, 2.0, 3.0]), digits=2) == "2.00 ± 2.48"
    assert format_interval(mean_ci([2.5])) == "2.500 ± nan"
