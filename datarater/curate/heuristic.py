"""Heuristic quality rules of the kind C4 and Gopher (Rae et al. 2021, appendix A) use.

Each rule maps a text to a penalty in [0, 1]: 0 where the text passes the rule's threshold,
rising linearly to 1 as it gets further past it, so that the combined score (minus the sum of
penalties; 0 = passes every rule) ranks texts rather than only accepting or rejecting them.
A packed row scores the token-weighted mean over its document pieces.
"""

from __future__ import annotations

from collections import Counter

import numpy as np

from datarater.curate.segments import batch_texts, weighted_mean
from datarater.data.tokenizer import Tokenizer

RULES = ("length", "mean_word_length", "symbol_ratio", "alphabetic_words", "repeated_lines",
         "repeated_ngrams", "all_caps", "non_printable", "whitespace")
MIN_WORDS = 5
PROSE_PUNCTUATION = set(".,;:!?'\"()-")
TOP_NGRAM_LIMITS = {2: 0.20, 3: 0.18, 4: 0.16}  # Gopher: most frequent n-gram's share of characters
DUP_NGRAM_LIMITS = {5: 0.15, 6: 0.14, 7: 0.13, 8: 0.12, 9: 0.11, 10: 0.10}  # Gopher: duplicated n-grams
_ALLOWED_CONTROL = set("\n\t\r")


def _ramp(excess: float, width: float) -> float:
    """0 at ``excess <= 0``, 1 at ``excess >= width``, linear between."""
    return float(min(1.0, max(0.0, excess / width)))


def top_ngram_fraction(words: list[str], n: int) -> float:
    """Characters of the most frequent word n-gram's occurrences over all word characters."""
    total = sum(len(w) for w in words)
    if len(words) < n or total == 0:
        return 0.0
    grams = Counter(tuple(words[i : i + n]) for i in range(len(words) - n + 1))
    gram, count = grams.most_common(1)[0]
    if count < 2:
        return 0.0
    return min(1.0, count * sum(len(w) for w in gram) / total)


def duplicate_ngram_fraction(words: list[str], n: int) -> float:
    """Characters of words covered by an n-gram that occurs more than once, over all word characters."""
    total = sum(len(w) for w in words)
    if len(words) < n or total == 0:
        return 0.0
    grams = [tuple(words[i : i + n]) for i in range(len(words) - n + 1)]
    counts = Counter(grams)
    covered = np.zeros(len(words), dtype=bool)
    for i, g in enumerate(grams):
        if counts[g] > 1:
            covered[i : i + n] = True
    return sum(len(w) for w, c in zip(words, covered, strict=True) if c) / total


def _repeated_lines(text: str) -> float:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if len(lines) < 2:
        return 0.0
    counts = Counter(lines)
    dup_lines = sum(c for c in counts.values() if c > 1) / len(lines)
    dup_chars = sum(len(s) * c for s, c in counts.items() if c > 1) / max(1, sum(len(s) for s in lines))
    return max(_ramp(dup_lines - 0.3, 0.4), _ramp(dup_chars - 0.2, 0.4))


def rule_penalties(text: str) -> dict[str, float]:
    """Penalty in [0, 1] of each rule in `RULES` for ``text``."""
    words = text.split()
    n_words = len(words)
    n_chars = max(1, len(text))
    word_lengths = [len(w) for w in words]
    mean_len = float(np.mean(word_lengths)) if words else 0.0
    symbols = sum(1 for ch in text if not (ch.isalnum() or ch.isspace() or ch in PROSE_PUNCTUATION))
    alphabetic = sum(1 for w in words if any(ch.isalpha() for ch in w)) / n_words if words else 0.0
    cased = [w for w in words if sum(ch.isalpha() for ch in w) >= 2]
    caps = sum(1 for w in cased if w.isupper()) / len(cased) if cased else 0.0
    non_printable = sum(1 for ch in text if ch == "\ufffd" or (not ch.isprintable() and ch not in _ALLOWED_CONTROL))
    whitespace = sum(1 for ch in text if ch.isspace()) / n_chars
    lowered = [w.lower() for w in words]
    ngram = max(
        [_ramp(top_ngram_fraction(lowered, n) - lim, 0.3) for n, lim in TOP_NGRAM_LIMITS.items()]
        + [_ramp(duplicate_ngram_fraction(lowered, n) - lim, 0.3) for n, lim in DUP_NGRAM_LIMITS.items()]
    )
    if not words:
        length_word = 1.0
    else:
        length_word = max(_ramp(3.0 - mean_len, 2.0), _ramp(mean_len - 10.0, 10.0))
    return {
        "length": _ramp(MIN_WORDS - n_words, MIN_WORDS),
        "mean_word_length": length_word,
        "symbol_ratio": _ramp(symbols / max(1, n_words) - 0.1, 0.4),
        "alphabetic_words": _ramp(0.8 - alphabetic, 0.4),
        "repeated_lines": _repeated_lines(text),
        "repeated_ngrams": ngram,
        "all_caps": _ramp(caps - 0.3, 0.4),
        "non_printable": _ramp(non_printable / n_chars, 0.02),
        "whitespace": _ramp(whitespace - 0.35, 0.35),
    }


def quality_score(text: str) -> float:
    """Minus the sum of the rule penalties: 0 for text that passes every rule, down to ``-len(RULES)``."""
    return 0.0 - float(sum(rule_penalties(text).values()))  # 0.0, not -0.0, for clean text


class HeuristicCurator:
    """Scores a packed row by the token-weighted mean `quality_score` of its document pieces."""

    name = "heuristic"
    flops_per_sequence = 0.0
    needs_fit = False

    def __init__(self, tokenizer: Tokenizer):
        self.tokenizer = tokenizer

    def fit(self, sample: dict[str, np.ndarray]) -> None:
        del sample

    def score_batch(self, batch: dict[str, np.ndarray]) -> np.ndarray:
        out = []
        for pieces in batch_texts(batch, self.tokenizer):
            values = [quality_score(text) for text, _ in pieces]
            out.append(weighted_mean(values, [w for _, w in pieces], empty=-float(len(RULES))))
        return np.asarray(out, dtype=np.float32)
