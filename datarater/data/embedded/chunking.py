"""Cut Python source into text pieces: docstring prose paragraphs and top-level code, packed into chunks.

Pure functions of a syntax tree or a text (and a seeded `random.Random` where lengths are drawn).
"""

from __future__ import annotations

import ast
import math
import random
import re

_MIN_DOC_STRING_CHARS = 200
_WORD = re.compile(r"[A-Za-z]{2,}")


def docstrings(tree: ast.Module) -> list[str]:
    """Docstrings of the module, its classes and functions (nested ones too), in source order."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            doc = ast.get_docstring(node, clean=True)
            if doc:
                found.append((getattr(node, "lineno", 0), doc))
    found.sort(key=lambda item: item[0])
    return [doc for _, doc in found]


def long_strings(tree: ast.Module, min_chars: int = _MIN_DOC_STRING_CHARS) -> list[str]:
    """String constants of at least ``min_chars`` characters, in source order (documentation modules)."""
    found = [
        (node.lineno, node.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and len(node.value) >= min_chars
    ]
    found.sort(key=lambda item: item[0])
    return [text for _, text in found]


def is_prose(paragraph: str, min_words: int = 6, min_letter_fraction: float = 0.75) -> bool:
    """A paragraph of words: at least ``min_words`` words and mostly letters, no doctest prompt."""
    if ">>>" in paragraph:
        return False
    non_space = [c for c in paragraph if not c.isspace()]
    if not non_space:
        return False
    letters = sum(c.isalpha() for c in non_space)
    return len(_WORD.findall(paragraph)) >= min_words and letters / len(non_space) >= min_letter_fraction


def prose_paragraphs(docstring: str, min_words: int = 6, min_letter_fraction: float = 0.75) -> list[str]:
    """The prose paragraphs (blank-line separated) of a docstring, whitespace at the ends removed."""
    paragraphs = (p.strip("\n").rstrip() for p in re.split(r"\n\s*\n", docstring))
    return [p for p in paragraphs if p.strip() and is_prose(p, min_words, min_letter_fraction)]


def split_long(text: str, max_chars: int) -> list[str]:
    """Split ``text`` at line boundaries (or hard, for a very long line) into pieces of <= ``max_chars``."""
    pieces: list[str] = []
    current = ""
    for line in text.splitlines(keepends=True):
        while len(line) > max_chars:
            if current:
                pieces.append(current)
                current = ""
            pieces.append(line[:max_chars])
            line = line[max_chars:]
        if len(current) + len(line) > max_chars:
            pieces.append(current)
            current = ""
        current += line
    if current:
        pieces.append(current)
    return [p.rstrip("\n") for p in pieces if p.strip()]


def pack_pieces(pieces: list[str], sep: str, min_chars: int, max_chars: int, rng: random.Random) -> list[str]:
    """Join consecutive ``pieces`` into chunks whose lengths aim at a target drawn log-uniformly in
    [min_chars, max_chars]; chunks shorter than ``min_chars`` are dropped, none exceeds ``max_chars``."""
    units = [u for p in pieces for u in (split_long(p, max_chars) if len(p) > max_chars else [p])]
    chunks: list[str] = []
    current: list[str] = []
    size = 0
    target = _draw_target(rng, min_chars, max_chars)
    for unit in units:
        added = len(unit) + (len(sep) if current else 0)
        if current and size + added > max_chars:
            chunks.append(sep.join(current))
            current, size = [], 0
            target = _draw_target(rng, min_chars, max_chars)
            added = len(unit)
        current.append(unit)
        size += added
        if size >= target:
            chunks.append(sep.join(current))
            current, size = [], 0
            target = _draw_target(rng, min_chars, max_chars)
    if current:
        chunks.append(sep.join(current))
    return [c for c in chunks if min_chars <= len(c) <= max_chars]


def _draw_target(rng: random.Random, min_chars: int, max_chars: int) -> int:
    return round(math.exp(rng.uniform(math.log(min_chars), math.log(max_chars))))


def top_level_segments(source: str, tree: ast.Module) -> list[str]:
    """Source text of each top-level statement (decorators and the comments above it included),
    the module docstring left out."""
    lines = source.splitlines(keepends=True)
    body = list(tree.body)
    if body and isinstance(body[0], ast.Expr) and isinstance(getattr(body[0], "value", None), ast.Constant):
        if isinstance(body[0].value.value, str):
            body = body[1:]
    segments: list[str] = []
    previous_end = body[0].lineno - 1 if body else 0
    for node in body:
        start = min([node.lineno] + [d.lineno for d in getattr(node, "decorator_list", [])])
        end = node.end_lineno or node.lineno
        first = min(start - 1, previous_end)  # include comments/blank lines since the previous statement
        text = "".join(lines[first:end]).strip("\n")
        previous_end = end
        if text.strip():
            segments.append(text)
    return segments


def letter_fraction(text: str) -> float:
    non_space = [c for c in text if not c.isspace()]
    return sum(c.isalpha() for c in non_space) / len(non_space) if non_space else 0.0
