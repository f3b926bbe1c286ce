"""Simple text features of scored sequences and a least-squares fit of scores on them.

The features are those the DataRater paper found scores to correlate with (length, packed
sub-sequences, non-alphanumeric fraction, …). Every fraction is over the characters of the text
(Unicode code points), except the uppercase fraction, which is over its letters. Empty texts get 0.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass

import numpy as np

from datarater.errors import UserError

FEATURE_NAMES: tuple[str, ...] = (
    "length_bytes",
    "n_segments",
    "non_alnum_frac",
    "digit_frac",
    "whitespace_frac",
    "uppercase_frac",
    "dup_line_frac",
    "non_printable_frac",
)

_INVISIBLE_CATEGORIES = frozenset({"Cc", "Cf", "Co", "Cn", "Cs"})


def _is_non_printable(ch: str) -> bool:
    """Control, format, private-use, unassigned or surrogate code points, whitespace excepted."""
    return not ch.isspace() and unicodedata.category(ch) in _INVISIBLE_CATEGORIES


def duplicate_line_fraction(text: str) -> float:
    """Fraction of non-blank lines that repeat an earlier line (compared after stripping)."""
    lines = [line.strip() for line in text.splitlines()]
    lines = [line for line in lines if line]
    if not lines:
        return 0.0
    return (len(lines) - len(set(lines))) / len(lines)


def text_feature_row(text: str, n_segments: int) -> list[float]:
    """The features of one text, in the order of `FEATURE_NAMES`."""
    n = len(text)
    n_space = sum(map(str.isspace, text))
    n_alnum = sum(map(str.isalnum, text))
    n_digit = sum(map(str.isdigit, text))
    n_alpha = sum(map(str.isalpha, text))
    n_upper = sum(map(str.isupper, text))
    n_nonprint = 0 if text.isprintable() else sum(map(_is_non_printable, text))
    return [
        float(len(text.encode("utf-8", errors="surrogatepass"))),
        float(n_segments),
        (n - n_alnum - n_space) / n if n else 0.0,
        n_digit / n if n else 0.0,
        n_space / n if n else 0.0,
        n_upper / n_alpha if n_alpha else 0.0,
        duplicate_line_fraction(text),
        n_nonprint / n if n else 0.0,
    ]


def text_features(texts: list[str], n_segments: list[int]) -> tuple[list[str], np.ndarray]:
    """Feature names and a float64 matrix ``[len(texts), len(FEATURE_NAMES)]``.

    ``non_alnum_frac`` counts characters that are neither alphanumeric nor whitespace
    (punctuation, symbols, control characters); ``digit_frac`` digits (`str.isdigit`); ``uppercase_frac``
    uppercase letters among letters; ``dup_line_frac`` see `duplicate_line_fraction`;
    ``non_printable_frac`` control/format/unassigned code points other than whitespace.
    """
    if len(texts) != len(n_segments):
        raise UserError(f"text_features: {len(texts)} texts but {len(n_segments)} segment counts")
    rows = [text_feature_row(t, int(s)) for t, s in zip(texts, n_segments, strict=True)]
    X = np.asarray(rows, dtype=np.float64).reshape(len(rows), len(FEATURE_NAMES))
    return list(FEATURE_NAMES), X


@dataclass
class Fit:
    """A least-squares fit ``y ≈ intercept + Σ coef_j · (x_j − mean_j) / std_j``.

    ``coef`` are per standard deviation of each feature (population std), so their sizes compare
    across features; a constant feature gets coefficient 0 and ``constant[j] = True``.
    ``r2`` is NaN when ``y`` is constant.
    """

    r2: float
    coef: np.ndarray
    intercept: float
    names: list[str]
    mean: np.ndarray
    std: np.ndarray
    constant: np.ndarray

    def predict(self, X: np.ndarray) -> np.ndarray:
        Z = np.zeros_like(np.asarray(X, dtype=np.float64))
        keep = ~self.constant
        Z[:, keep] = (X[:, keep] - self.mean[keep]) / self.std[keep]
        return self.intercept + Z @ self.coef

    def ranked(self) -> list[tuple[str, float]]:
        """(name, coefficient) of the non-constant features, largest magnitude first."""
        pairs = [(n, float(c)) for n, c, k in zip(self.names, self.coef, self.constant, strict=True) if not k]
        return sorted(pairs, key=lambda p: -abs(p[1]))


def linear_fit(X: np.ndarray, y: np.ndarray, names: list[str] | None = None) -> Fit:
    """Ordinary least squares of ``y`` on standardised columns of ``X`` with an intercept."""
    X = np.asarray(X, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64).reshape(-1)
    if X.ndim != 2 or X.shape[0] != y.shape[0]:
        raise UserError(f"linear_fit: X has shape {X.shape} but y has {y.shape[0]} values")
    if X.shape[0] < 2:
        raise UserError(f"linear_fit: needs at least 2 rows, got {X.shape[0]}")
    if not (np.all(np.isfinite(X)) and np.all(np.isfinite(y))):
        raise UserError("linear_fit: X or y contains NaN or infinite values")
    names = list(names) if names is not None else [f"x{j}" for j in range(X.shape[1])]
    if len(names) != X.shape[1]:
        raise UserError(f"linear_fit: {len(names)} names for {X.shape[1]} columns")
    mean = X.mean(axis=0)
    std = X.std(axis=0)
    constant = std <= 1e-12 * np.maximum(1.0, np.abs(mean))
    safe_std = np.where(constant, 1.0, std)
    Z = (X[:, ~constant] - mean[~constant]) / safe_std[~constant]
    A = np.concatenate([np.ones((X.shape[0], 1)), Z], axis=1)
    sol, *_ = np.linalg.lstsq(A, y, rcond=None)
    coef = np.zeros(X.shape[1])
    coef[~constant] = sol[1:]
    resid = y - A @ sol
    ss_tot = float(np.sum((y - y.mean()) ** 2))
    r2 = 1.0 - float(resid @ resid) / ss_tot if ss_tot > 0 else float("nan")
    return Fit(
        r2=r2,
        coef=coef,
        intercept=float(sol[0]),
        names=names,
        mean=mean,
        std=safe_std,
        constant=constant,
    )
