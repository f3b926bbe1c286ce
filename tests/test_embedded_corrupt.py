"""The embedded corpus's corruptions: each changes a clean document the way its name says, the
labels are the corruption applied, the plan's fraction and seed."""

from __future__ import annotations

import math
import re
import unicodedata
import zlib
from collections import Counter

import pytest

from datarater.data.embedded import corrupt
from datarater.data.embedded.corrupt import (
    CLEAN,
    CORRUPTIONS,
    PAPER_KINDS,
    corrupt_documents,
    corruption_plan,
    document_rng,
)
from datarater.data.embedded.harvest import CODE

# ---------------------------------------------------------------------------------------------
# Corruptions: each changes the text the way its name says


def _levenshtein(a: str, b: str) -> int:
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        current = [i]
        for j, cb in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ca != cb)))
        previous = current
    return previous[-1]


def _undo_mojibake(text: str) -> str:
    """Windows-1252 (Latin-1 for its 5 undefined bytes) back to bytes, read as UTF-8."""
    data = b"".join(c.encode("cp1252") if c.encode("cp1252", "ignore") else c.encode("latin-1") for c in text)
    return data.decode("utf-8")


_ASCII_PUNCT = {
    "\u2018": "'",
    "\u2019": "'",
    "\u201c": '"',
    "\u201d": '"',
    "\u2013": "-",
    "\u2014": "--",
    "\u00a0": " ",
    "\u2026": "...",
}


def _ascii_punct(text: str) -> str:
    return "".join(_ASCII_PUNCT.get(c, c) for c in text)


def _entropy_bits(text: str) -> float:
    n = len(text)
    return -sum(k / n * math.log2(k / n) for k in Counter(text).values())


def _compress_ratio(text: str) -> float:
    data = text.encode("utf-8")
    return len(zlib.compress(data, 9)) / len(data)


def _controls(text: str) -> int:
    return sum(unicodedata.category(c) == "Cc" and c not in "\t\n\r" for c in text)


def _check_mojibake(orig: str, out: str) -> None:
    assert any(seq in out for seq in ("Ã", "Â", "â€")), out[:200]
    assert _ascii_punct(_undo_mojibake(out)) == _ascii_punct(orig)


def _check_ocr(orig: str, out: str) -> None:
    orig, out = orig[:400], corrupt.ocr(orig[:400], document_rng(0, "ocr-test", orig[:20]))
    ratio = _levenshtein(orig, out) / len(orig)
    assert 0.005 < ratio <= 0.15, ratio


def _check_whitespace(orig: str, out: str) -> None:
    runs = re.findall(r"\s{8,}", out)
    assert len(runs) >= max(1, len(orig) // 200)
    assert out.split() == orig.split()


def _check_nonprintable(orig: str, out: str) -> None:
    assert _controls(out) >= len(orig) / 50
    assert "".join(c for c in out if not (unicodedata.category(c) == "Cc" and c not in "\t\n\r")) == orig


def _check_numbers(orig: str, out: str) -> None:
    non_space = [c for c in out if not c.isspace()]
    assert sum(c.isdigit() for c in non_space) / len(non_space) >= 0.6
    assert 0.8 <= len(out) / len(orig) <= 1.5


def _check_entropy(orig: str, out: str) -> None:
    # random strings do not compress (hex: 4 bits a character, base64: 6); prose and code do
    assert _compress_ratio(out) >= 0.62 and _entropy_bits(out) >= 4.5
    assert 0.8 <= len(out) / len(orig) <= 1.6


def _check_allcaps(orig: str, out: str) -> None:
    assert out == orig.upper() and not any(c.islower() for c in out)


def _check_shuffled(orig: str, out: str) -> None:
    assert sorted(out.split()) == sorted(orig.split()) and out.split() != orig.split()
    assert re.split(r"\S+", out) == re.split(r"\S+", orig)  # same whitespace between the words


def _check_boilerplate(orig: str, out: str) -> None:
    lines = out.splitlines()
    assert len(lines) >= 5 and len(set(lines)) == 1
    assert 0.8 <= len(out) / len(orig) <= 1.3


def _check_reversed(orig: str, out: str) -> None:
    assert [line[::-1] for line in out.split("\n")] == orig.split("\n")


def _check_foreign(orig: str, out: str) -> None:
    # a consistent letter substitution: same length, case and non-letters, one letter map for all
    assert len(out) == len(orig) and all(a.isalpha() == b.isalpha() for a, b in zip(orig, out, strict=True))
    pairs = {(a.lower(), b.lower()) for a, b in zip(orig, out, strict=True) if a.isascii() and a.isalpha()}
    assert len({a for a, _ in pairs}) == len(pairs) and any(a != b for a, b in pairs)


CHECKS = {
    "reversed": _check_reversed,
    "foreign": _check_foreign,
    "mojibake": _check_mojibake,
    "ocr": _check_ocr,
    "whitespace": _check_whitespace,
    "nonprintable": _check_nonprintable,
    "numbers": _check_numbers,
    "entropy": _check_entropy,
    "allcaps": _check_allcaps,
    "shuffled": _check_shuffled,
    "boilerplate": _check_boilerplate,
}


def test_every_corruption_has_a_check():
    assert set(CHECKS) == set(CORRUPTIONS)


@pytest.mark.parametrize("kind", sorted(CHECKS))
def test_corruption_changes_text_as_named(kind, clean_docs):
    sample = [d for d in clean_docs if d.source != CODE][:6] + [d for d in clean_docs if d.source == CODE][:2]
    for doc in sample:
        out = CORRUPTIONS[kind](doc.text, document_rng(0, kind, doc.id))
        assert out != doc.text
        CHECKS[kind](doc.text, out)


def test_entropy_thresholds_separate_clean_text(clean_docs):
    """The entropy check's threshold means something: clean text compresses better than it."""
    ratios = sorted(_compress_ratio(d.text) for d in clean_docs)
    assert ratios[int(0.9 * len(ratios))] < 0.6


def test_mojibake_of_accented_text():
    out = corrupt.mojibake("café déjà vu – “quoted” naïve", document_rng(0, "m", "x"))
    assert "Ã©" in out and "â€" in out
    assert _undo_mojibake(out).replace("\u00a0", " ") == "café déjà vu – “quoted” naïve"


# ---------------------------------------------------------------------------------------------
# Labels


def test_labels_match_the_corruption_applied(clean_docs):
    out = corrupt_documents(clean_docs, seed=3, fraction=0.3)
    assert [(d.id, d.source) for d in out] == [(d.id, d.source) for d in clean_docs]
    labels = Counter(d.label for d in out)
    assert sum(v for k, v in labels.items() if k != CLEAN) == round(0.3 * len(clean_docs))
    per_type = [labels[k] for k in PAPER_KINDS]  # the default mix: the paper's kinds
    assert max(per_type) - min(per_type) <= 1
    for before, after in zip(clean_docs, out, strict=True):
        if after.label == CLEAN:
            assert after.text == before.text
        else:
            assert after.text != before.text
            assert after.text == CORRUPTIONS[after.label](before.text, document_rng(3, after.label, before.id))
            CHECKS[after.label](before.text, after.text)
    # a kind at another strength (experiments/heavy_kinds.py): only that kind's documents change
    heavy = corrupt_documents(clean_docs, seed=3, fraction=0.3, corruptions={"ocr": lambda t, rng: corrupt.ocr(t, rng, 0.5)})
    assert [d.label for d in heavy] == [d.label for d in out] and "ocr" in labels
    for light, strong in zip(out, heavy, strict=True):
        assert (strong.text != light.text) == (light.label == "ocr")


def test_corruption_plan_fraction_and_seed():
    assert corruption_plan(50, 0, 0.0, list(CORRUPTIONS)) == [CLEAN] * 50
    assert CLEAN not in corruption_plan(50, 0, 1.0, list(CORRUPTIONS))
    assert corruption_plan(200, 0, 0.3, list(CORRUPTIONS)) == corruption_plan(200, 0, 0.3, list(CORRUPTIONS))
    assert corruption_plan(200, 0, 0.3, list(CORRUPTIONS)) != corruption_plan(200, 1, 0.3, list(CORRUPTIONS))
    with pytest.raises(ValueError, match="corrupt_fraction"):
        corruption_plan(10, 0, 1.5, list(CORRUPTIONS))
