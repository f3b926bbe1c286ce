"""Filtering rules: oversampled batch size, in-batch top-K, the per-item acceptance rule."""

from __future__ import annotations

import math
from math import comb

import numpy as np
import pytest

from datarater.curate.rules import accept, accept_probability, empirical_cdf, oversampled_size, top_k_keep


@pytest.mark.parametrize("percent", [0, 10, 25, 50, 75, 90, 99])
@pytest.mark.parametrize("n", [1, 7, 32, 128, 256])
def test_oversampled_size_is_the_exact_ceiling(n, percent):
    exact = -(-n * 100 // (100 - percent))  # ceil(n / (1 - percent/100)) in integers
    assert oversampled_size(n, percent / 100) == exact
    assert oversampled_size(32, 0.5) == 64 and oversampled_size(32, 0.9) == 320


@pytest.mark.parametrize("bad", [-0.1, 1.0, 1.5])
def test_discard_outside_unit_interval_is_refused(bad):
    with pytest.raises(ValueError, match="discard"):
        oversampled_size(32, bad)


def test_top_k_keeps_exactly_the_n_best_of_each_oversampled_batch():
    rng = np.random.default_rng(0)
    n, rho = 8, 0.75
    b = oversampled_size(n, rho)
    for _ in range(200):
        scores = rng.integers(0, 20, b).astype(np.float64)  # many ties
        kept = top_k_keep(scores, n)
        assert len(kept) == n and np.all(np.diff(kept) > 0)
        dropped = np.setdiff1d(np.arange(b), kept)
        assert scores[kept].min() >= scores[dropped].max()
        brute = sorted(range(b), key=lambda i: (-scores[i], i))[:n]  # ties: earlier position first
        np.testing.assert_array_equal(kept, sorted(brute))


def test_top_k_ranks_nan_last():
    np.testing.assert_array_equal(top_k_keep(np.array([np.nan, 1.0, -5.0]), 2), [1, 2])


def _brute_accept(p: float, n: int, b: int) -> float:
    return sum(comb(b - 1, s) * (1 - p) ** s * p ** (b - 1 - s) for s in range(n))


@pytest.mark.parametrize(("n", "b"), [(1, 1), (1, 5), (3, 5), (8, 32), (32, 36), (32, 64), (32, 320)])
def test_accept_probability_matches_the_sum(n, b):
    p = np.linspace(0.0, 1.0, 41)
    got = accept_probability(p, n, b)
    want = np.array([_brute_accept(float(x), n, b) for x in p])
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-12)


def test_accept_probability_is_stable_for_large_batches():
    n, b = 1024, 4096
    p = np.array([0.70, 0.74, 0.75, 0.76, 0.80])

    def log_term(s: int, x: float) -> float:
        return math.lgamma(b) - math.lgamma(s + 1) - math.lgamma(b - s) + s * math.log1p(-x) + (b - 1 - s) * math.log(x)

    want = []
    for x in p:
        terms = np.array([log_term(s, x) for s in range(n)])
        want.append(math.exp(np.logaddexp.reduce(terms)))
    got = accept_probability(p, n, b)
    assert np.all(np.isfinite(got)) and np.all(np.diff(got) > 0)
    np.testing.assert_allclose(got, want, rtol=1e-7, atol=1e-12)


@pytest.mark.parametrize(("n", "rho"), [(32, 0.1), (32, 0.5), (16, 0.75), (8, 0.9)])
def test_per_item_rule_keeps_n_over_b_in_expectation(n, rho):
    b = oversampled_size(n, rho)
    p = (np.arange(200_000) + 0.5) / 200_000  # CDF values of items are uniform on [0, 1]
    assert accept_probability(p, n, b).mean() == pytest.approx(n / b, abs=1e-6)
    assert n / b == pytest.approx(1 - rho, abs=1 / b)


def test_per_item_rule_matches_top_k_on_a_simulated_stream():
    """Items with CDF value p survive in-batch top-K with probability accept_probability(p, N, B)."""
    rng = np.random.default_rng(1234)
    n, rho = 4, 0.6
    b = oversampled_size(n, rho)  # 10
    batches = 40_000
    scores = rng.random((batches, b))  # uniform scores: the CDF value is the score itself
    kept = np.zeros_like(scores, dtype=bool)
    order = np.argsort(-scores, axis=1)[:, :n]
    np.put_along_axis(kept, order, True, axis=1)
    bins = np.linspace(0, 1, 21)
    which = np.digitize(scores.ravel(), bins) - 1
    for k in range(20):
        in_bin = which == k
        observed = kept.ravel()[in_bin].mean()
        expected = accept_probability(scores.ravel()[in_bin], n, b).mean()
        sigma = math.sqrt(max(expected * (1 - expected), 1e-4) / in_bin.sum())
        assert abs(observed - expected) < 5 * sigma, (k, observed, expected)
    # and the per-item rule, applied to the same stream, keeps N/B overall and the same kind of items
    mask = accept(scores.ravel(), lambda x: x, n, b, rng=np.random.default_rng(7))
    assert mask.mean() == pytest.approx(n / b, abs=0.005)
    top_deciles = scores.ravel() > 0.9
    assert mask[top_deciles].mean() == pytest.approx(kept.ravel()[top_deciles].mean(), abs=0.01)


def test_per_item_rule_with_an_empirical_cdf_keeps_the_same_fraction_per_score_band():
    rng = np.random.default_rng(5)
    n, rho = 8, 0.5
    b = oversampled_size(n, rho)
    reference = rng.standard_normal(50_000)
    cdf = empirical_cdf(reference)
    stream = rng.standard_normal((5_000, b))
    topk = np.zeros_like(stream, dtype=bool)
    np.put_along_axis(topk, np.argsort(-stream, axis=1)[:, :n], True, axis=1)
    per_item = accept(stream.ravel(), cdf, n, b, rng=np.random.default_rng(6))
    for lo, hi in [(-np.inf, -0.5), (-0.5, 0.0), (0.0, 0.5), (0.5, np.inf)]:
        band = (stream.ravel() > lo) & (stream.ravel() <= hi)
        assert per_item[band].mean() == pytest.approx(topk.ravel()[band].mean(), abs=0.02)


def test_empirical_cdf_counts_ties_as_half():
    cdf = empirical_cdf(np.array([1.0, 2.0, 2.0, 3.0, np.nan]))
    np.testing.assert_allclose(cdf(np.array([0.0, 1.0, 2.0, 2.5, 3.0, 9.0])), [0, 0.125, 0.5, 0.75, 0.875, 1.0])
    assert cdf(np.array([np.nan]))[0] == 0.0


def test_accept_with_given_uniforms_is_the_threshold_rule():
    scores = np.array([0.1, 0.5, 0.9])
    u = np.array([0.05, 0.05, 0.05])
    prob = accept_probability(scores, 2, 4)
    np.testing.assert_array_equal(accept(scores, lambda x: x, 2, 4, uniforms=u), u < prob)
