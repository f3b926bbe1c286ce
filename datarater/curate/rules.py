"""Filtering rules at discard ratio rho (docs/method.md, "Scoring and filtering"): pure functions of scores.

- in-batch top-K: to fill a batch of ``N``, draw ``B = ceil(N / (1 - rho))`` items, keep the ``N``
  with the highest scores (`oversampled_size`, `top_k_keep`);
- the per-item rule for engines that see one item at a time: keep an item whose score has CDF
  value ``p`` with the probability that fewer than ``N`` of ``B - 1`` other items outrank it
  (`accept_probability`, `empirical_cdf`, `accept`). Both keep ``N / B`` of the stream in
  expectation and keep the same items in distribution.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from fractions import Fraction

import numpy as np


def _check_discard(discard: float) -> Fraction:
    rho = Fraction(repr(float(discard)))  # the decimal the user wrote: 0.9 -> 9/10, not 0.8999...
    if not 0 <= rho < 1:
        raise ValueError(f"the discard ratio must be in [0, 1), got {discard}")
    return rho


def oversampled_size(n: int, discard: float) -> int:
    """``B = ceil(n / (1 - rho))``, computed exactly (``n=32, rho=0.9`` gives 320, not 321)."""
    if n < 1:
        raise ValueError(f"the batch size must be >= 1, got {n}")
    rho = _check_discard(discard)
    return math.ceil(Fraction(n) / (1 - rho))


def top_k_keep(scores: np.ndarray, n: int) -> np.ndarray:
    """Indices (ascending) of the ``n`` highest scores; ties go to the earlier position, NaN ranks last."""
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    if not 0 <= n <= scores.size:
        raise ValueError(f"cannot keep {n} of {scores.size} items")
    key = np.where(np.isnan(scores), -np.inf, scores)
    order = np.lexsort((np.arange(scores.size), -key))  # by score descending, then position
    return np.sort(order[:n])


def accept_probability(p: np.ndarray | float, n: int, b: int) -> np.ndarray:
    """``sum_{s=0}^{n-1} C(b-1, s) (1-p)^s p^(b-1-s)``: fewer than ``n`` of ``b-1`` others outrank.

    With ``1 - p`` the chance that another item outranks this one, the count of outranking
    items is Binomial(b-1, 1-p) and the sum is its CDF at n-1, i.e. the regularised incomplete
    beta function ``I_p(b - n, n)`` (stable for any b). ``n >= b`` keeps everything.
    """
    from scipy.special import betainc  # scipy comes with jax

    if n < 1 or b < 1:
        raise ValueError(f"need n >= 1 and b >= 1, got n={n}, b={b}")
    p = np.clip(np.asarray(p, dtype=np.float64), 0.0, 1.0)
    if n >= b:
        return np.ones_like(p)
    return np.asarray(betainc(b - n, n, p), dtype=np.float64)


def empirical_cdf(reference_scores: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    """``p(x)`` = fraction of the reference scores below ``x``, counting ties as half.

    Counting ties as half makes ``p`` the chance that a random reference item ranks below
    ``x`` under a random tie-break; NaN reference scores are ignored, a NaN ``x`` gets ``p = 0``.
    """
    ref = np.asarray(reference_scores, dtype=np.float64).reshape(-1)
    ref = np.sort(ref[~np.isnan(ref)])
    if ref.size == 0:
        raise ValueError("empirical_cdf needs at least one (non-NaN) reference score")

    def cdf(x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        below = np.searchsorted(ref, x, side="left")
        up_to = np.searchsorted(ref, x, side="right")
        return np.where(np.isnan(x), 0.0, (below + up_to) / (2.0 * ref.size))

    return cdf


def accept(
    scores: np.ndarray,
    cdf: Callable[[np.ndarray], np.ndarray],
    n: int,
    b: int,
    rng: np.random.Generator | None = None,
    uniforms: np.ndarray | None = None,
) -> np.ndarray:
    """Boolean keep mask of the per-item rule; ``uniforms`` (one per item in [0, 1)) replace ``rng``.

    Giving ``uniforms`` derived from each item's id makes the decision independent of the order
    in which items arrive.
    """
    prob = accept_probability(cdf(np.asarray(scores)), n, b)
    if uniforms is None:
        if rng is None:
            raise ValueError("give rng or uniforms")
        uniforms = rng.random(prob.shape)
    return np.asarray(uniforms) < prob


class ScoreSketch:
    """A corpus's score distribution as counts per bin of the float32 value (with each bin's lowest
    and highest score): mergeable in any order and exact to merge, so every engine and every split
    of the work gets the same CDF.

    A bin is the top `BITS` bits of the score's order-preserving float32 bit pattern (about 2^-15
    of the value's magnitude wide). ``cdf(x)`` counts the scores in lower bins plus half of those
    in ``x``'s bin: the exact empirical CDF (ties as half) when the bin holds one value, and at
    most half the bin's share of the scores away from it otherwise (`max_error`). NaN scores are
    not counted.
    """

    BITS = 24

    def __init__(self, bins=None, counts=None, lows=None, highs=None):
        self.bins = np.zeros(0, np.int64) if bins is None else np.asarray(bins, np.int64)
        self.counts = np.zeros(0, np.int64) if counts is None else np.asarray(counts, np.int64)
        self.lows = np.zeros(0) if lows is None else np.asarray(lows, np.float64)
        self.highs = np.zeros(0) if highs is None else np.asarray(highs, np.float64)

    @classmethod
    def bin_of(cls, scores: np.ndarray) -> np.ndarray:
        bits = np.asarray(scores, dtype=np.float32).reshape(-1).view(np.uint32).astype(np.int64)
        ordered = np.where(bits >= 1 << 31, (~bits) & 0xFFFFFFFF, bits | (1 << 31))
        return ordered >> (32 - cls.BITS)

    @classmethod
    def of(cls, scores: np.ndarray) -> ScoreSketch:
        s = np.asarray(scores, np.float64).reshape(-1)
        s = s[~np.isnan(s)].astype(np.float32).astype(np.float64)
        bins, where, counts = np.unique(cls.bin_of(s), return_inverse=True, return_counts=True)
        lows, highs = np.full(bins.size, np.inf), np.full(bins.size, -np.inf)
        np.minimum.at(lows, where, s)
        np.maximum.at(highs, where, s)
        return cls(bins, counts, lows, highs)

    @classmethod
    def merge(cls, sketches: list[ScoreSketch]) -> ScoreSketch:
        if not sketches:
            return cls()
        cat = lambda name: np.concatenate([getattr(s, name) for s in sketches])  # noqa: E731
        uniq, where = np.unique(cat("bins"), return_inverse=True)
        lows, highs = np.full(uniq.size, np.inf), np.full(uniq.size, -np.inf)
        np.minimum.at(lows, where, cat("lows"))
        np.maximum.at(highs, where, cat("highs"))
        counts = np.bincount(where, weights=cat("counts"), minlength=uniq.size).astype(np.int64)
        return cls(uniq, counts, lows, highs)

    @property
    def total(self) -> int:
        return int(self.counts.sum())

    @property
    def max_error(self) -> float:
        """The largest possible difference from the exact empirical CDF."""
        mixed = self.counts[self.lows < self.highs]
        return float(mixed.max() / (2 * self.total)) if self.total and mixed.size else 0.0

    def as_dict(self) -> dict:
        return {"bins": self.bins.tolist(), "counts": self.counts.tolist(), "lows": self.lows.tolist(),
                "highs": self.highs.tolist()}

    @classmethod
    def from_dict(cls, d: dict) -> ScoreSketch:
        return cls(d["bins"], d["counts"], d["lows"], d["highs"])

    def cdf(self, x: np.ndarray) -> np.ndarray:
        if not self.total:
            raise ValueError("the score sketch holds no (non-NaN) score")
        x = np.asarray(x, np.float64)
        b = self.bin_of(np.nan_to_num(x))
        below = np.concatenate([[0], np.cumsum(self.counts)])
        lo = np.searchsorted(self.bins, b, side="left")
        hi = np.searchsorted(self.bins, b, side="right")
        p = (below[lo] + below[hi]) / (2.0 * self.total)
        return np.where(np.isnan(x), 0.0, p).reshape(np.shape(x))
