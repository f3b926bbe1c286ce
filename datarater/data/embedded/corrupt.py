"""Corruptions: the kinds of low-quality text a web corpus holds, as seeded pure functions.

Each corruption is ``fn(text, rng) -> text`` with ``rng`` a `random.Random`; `CORRUPTIONS` maps
its name (the document's label) to it. Some rewrite the text (mojibake, ocr, whitespace,
nonprintable, allcaps, shuffled); others replace it with generated text of about the same
length (numbers, entropy, boilerplate). `corrupt_documents` corrupts a seeded fraction of a
corpus, spreading the types evenly, and labels every document.
"""

from __future__ import annotations

import base64
import math
import random
import re
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace

from datarater.data.documents import Document

CLEAN = "clean"
Corruption = Callable[[str, random.Random], str]

# ---------------------------------------------------------------------------------------------
# mojibake: UTF-8 bytes read as Windows-1252


def typeset(text: str, rng: random.Random, min_non_ascii_per_char: float = 1 / 40) -> str:
    """Text as a word processor or web page would have it: curly quotes and apostrophes, en
    and em dashes, ellipses, and non-breaking spaces (random spaces become U+00A0 until at least
    ``min_non_ascii_per_char`` of the characters are non-ASCII). `plain` undoes it."""
    text = re.sub(r"(?<=[A-Za-z])'(?=[A-Za-z])", "\u2019", text)
    text = re.sub(r'"([^"\n]{1,200})"', "\u201c\\1\u201d", text)
    text = text.replace(" -- ", " \u2014 ").replace(" - ", " \u2013 ").replace("...", "\u2026")
    missing = math.ceil(len(text) * min_non_ascii_per_char) - sum(ord(c) > 127 for c in text)
    spaces = [i for i, c in enumerate(text) if c == " "]
    if missing > 0 and spaces:
        chars = list(text)
        for i in rng.sample(spaces, min(missing, len(spaces))):
            chars[i] = "\u00a0"
        text = "".join(chars)
    return text


_PLAIN = str.maketrans({"\u2019": "'", "\u201c": '"', "\u201d": '"', "\u2013": "-", "\u00a0": " "})


def plain(text: str) -> str:
    """ASCII punctuation for the typographic characters `typeset` introduces."""
    return text.translate(_PLAIN).replace("\u2014", "--").replace("\u2026", "...")


def _cp1252_table() -> list[str]:
    """Byte -> character of Windows-1252, with the 5 bytes it leaves undefined read as Latin-1
    (what browsers and most real mojibake do)."""
    table = []
    for b in range(256):
        try:
            table.append(bytes([b]).decode("cp1252"))
        except UnicodeDecodeError:
            table.append(chr(b))
    return table


_CP1252 = _cp1252_table()


def mojibake(text: str, rng: random.Random, min_non_ascii_per_char: float = 1 / 40) -> str:
    """Broken encoding: the (typeset) text's UTF-8 bytes decoded as Windows-1252, so that ``’``
    shows as ``â€™``, ``é`` as ``Ã©`` and a non-breaking space as ``Â``."""
    return "".join(_CP1252[b] for b in typeset(text, rng, min_non_ascii_per_char).encode("utf-8"))


# ---------------------------------------------------------------------------------------------
# ocr: look-alike substitutions, dropped and stray characters

_OCR_MULTI = {"rn": "m", "m": "rn", "cl": "d", "d": "cl", "w": "vv", "li": "h", "nn": "m"}
# character -> its look-alikes, as "c:alternatives" pairs
_OCR_SINGLE = dict(
    pair.split(":", 1)
    for pair in (
        "l:1I| I:l1| i:l1; 1:lI O:0Q o:0ce 0:O e:co c:eo a:oe S:5$ s:5 5:S B:8 8:B g:q9 q:g h:b b:h6 "
        "u:v v:u n:h t:f f:t E:F F:E Z:2 2:Z .:, ,:."
    ).split()
)
_OCR_STRAY = ".,'`~^*"


def ocr(text: str, rng: random.Random, rate: float = 0.06) -> str:
    """Scanning errors: each non-space character is, with probability ``rate``, replaced by a
    look-alike (``rn``->``m``, ``l``->``1``, ``O``->``0``, ...), dropped, or followed by a stray mark."""
    out: list[str] = []
    i = 0
    while i < len(text):
        c = text[i]
        if c.isspace() or rng.random() >= rate:
            out.append(c)
            i += 1
            continue
        pair = text[i : i + 2]
        if pair in _OCR_MULTI:
            out.append(_OCR_MULTI[pair])
            i += 2
        elif c in _OCR_MULTI:
            out.append(_OCR_MULTI[c])
            i += 1
        elif c in _OCR_SINGLE and rng.random() < 0.8:
            out.append(rng.choice(_OCR_SINGLE[c]))
            i += 1
        elif rng.random() < 0.5:
            i += 1  # dropped
        else:
            out.append(c + rng.choice(_OCR_STRAY))
            i += 1
    return "".join(out)


# ---------------------------------------------------------------------------------------------
# whitespace, nonprintable


def whitespace(text: str, rng: random.Random, runs_per_char: float = 1 / 60) -> str:
    """Runs of 8-40 spaces, tabs and newlines put in place of random spaces (and line breaks),
    about one run per ``1/runs_per_char`` characters; the words are unchanged."""
    gaps = [m.start() for m in re.finditer(r"\s", text)] or [len(text)]
    n_runs = min(len(gaps), max(1, round(len(text) * runs_per_char)))
    chosen = set(rng.sample(gaps, n_runs))
    out: list[str] = []
    for i, c in enumerate(text):
        if i in chosen:
            out.append(_whitespace_run(rng))
        else:
            out.append(c)
    if len(text) in chosen:
        out.append(_whitespace_run(rng))
    return "".join(out)


def _whitespace_run(rng: random.Random) -> str:
    kind = rng.random()
    length = rng.randint(8, 40)
    if kind < 0.5:
        return " " * length
    if kind < 0.7:
        return "\t" * rng.randint(3, 12)
    if kind < 0.85:
        return "\n" * rng.randint(4, 12)
    return "".join(rng.choice(" \t\n") for _ in range(length))


CONTROL_CHARS = "".join(chr(c) for c in range(0x20) if chr(c) not in "\t\n\r") + "\x7f"


def nonprintable(text: str, rng: random.Random, per_char: float = 1 / 25) -> str:
    """Control characters (C0 except tab/newline/CR, and DEL), alone or in runs of up to 4, put at
    random positions, about one run per ``1/per_char`` characters; the text is otherwise unchanged."""
    n = max(1, round(len(text) * per_char))
    positions = Counter(rng.randrange(len(text) + 1) for _ in range(n))
    out: list[str] = []
    for i in range(len(text) + 1):
        for _ in range(positions.get(i, 0)):
            out.append("".join(rng.choice(CONTROL_CHARS) for _ in range(rng.randint(1, 4))))
        if i < len(text):
            out.append(text[i])
    return "".join(out)


# ---------------------------------------------------------------------------------------------
# generated replacements: numbers, entropy, boilerplate


def _number(rng: random.Random, style: str) -> str:
    if style == "int":
        return str(rng.randint(-999, 99999))
    if style == "float":
        return f"{rng.uniform(-1000, 1000):.{rng.randint(1, 6)}f}"
    return f"{rng.uniform(-10, 10) * 10 ** rng.randint(-8, 8):.4e}"


def numbers(text: str, rng: random.Random) -> str:
    """A table or list of numbers (CSV, aligned columns, one per line, or an array dump) of about
    the original length."""
    target = max(len(text), 40)
    layout = rng.choice(["csv", "columns", "lines", "array"])
    styles = [rng.choice(["int", "float", "sci"]) for _ in range(rng.randint(2, 8))]
    lines: list[str] = []
    size = 0
    while size < target:
        if layout == "csv":
            line = ",".join(_number(rng, s) for s in styles)
        elif layout == "columns":
            line = "".join(_number(rng, s).rjust(12) for s in styles)
        elif layout == "lines":
            line = _number(rng, styles[0])
        else:
            line = "[" + ", ".join(_number(rng, styles[0]) for _ in range(rng.randint(4, 10))) + "]"
        lines.append(line)
        size += len(line) + 1
    return "\n".join(lines)


_PEM_KINDS = ("RSA PRIVATE KEY", "PRIVATE KEY", "OPENSSH PRIVATE KEY", "EC PRIVATE KEY", "CERTIFICATE")
_BASE62 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"


def _pem_block(rng: random.Random, n_chars: int) -> str:
    kind = rng.choice(_PEM_KINDS)
    raw = rng.randbytes(max(48, n_chars * 3 // 4))
    body = base64.b64encode(raw).decode("ascii")
    lines = [body[i : i + 64] for i in range(0, len(body), 64)]
    return "\n".join([f"-----BEGIN {kind}-----", *lines, f"-----END {kind}-----"])


def _secret_line(rng: random.Random) -> str:
    kind = rng.random()
    if kind < 0.4:
        return f"{rng.randbytes(rng.choice([16, 20, 32])).hex()}  {rng.randbytes(6).hex()}"
    if kind < 0.7:
        return "".join(rng.choice(_BASE62) for _ in range(rng.randint(32, 64)))
    if kind < 0.85:
        return base64.b64encode(rng.randbytes(rng.randint(24, 60))).decode("ascii")
    h = rng.randbytes(16).hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def entropy(text: str, rng: random.Random) -> str:
    """High-entropy strings of about the original length: a PEM key block (base64), hex hashes,
    base62 tokens, base64 blobs and UUIDs."""
    target = max(len(text), 80)
    parts: list[str] = []
    size = 0
    if rng.random() < 0.6:
        block = _pem_block(rng, rng.randint(target // 3, target))
        parts.append(block)
        size += len(block) + 1
    while size < target:
        line = _secret_line(rng)
        parts.append(line)
        size += len(line) + 1
    return "\n".join(parts)


BOILERPLATE = (
    "Click here to subscribe to our newsletter and never miss an update.",
    "All rights reserved. No part of this page may be reproduced without permission.",
    "This website uses cookies to improve your experience. Accept and continue.",
    "Share this: Facebook | Twitter | Email | Print",
    "Skip to main content",
    "Page not found. The page you requested could not be found.",
    "Please enable JavaScript in your browser to view this page.",
    "Sign in | Register | Forgot your password?",
    "Back to top",
    "You must be logged in to post a comment.",
)


def boilerplate(text: str, rng: random.Random) -> str:
    """One boilerplate line of a web page repeated (one per line) to about the original length."""
    line = rng.choice(BOILERPLATE)
    return "\n".join([line] * max(5, round(len(text) / (len(line) + 1))))


# ---------------------------------------------------------------------------------------------
# allcaps, shuffled


def allcaps(text: str, rng: random.Random) -> str:
    """All letters in upper case."""
    return text.upper()


def shuffled(text: str, rng: random.Random) -> str:
    """The words (runs of non-space characters) in a random order; the whitespace between them,
    line breaks included, stays where it was."""
    parts = re.split(r"(\s+)", text)
    words = [p for p in parts if p and not p.isspace()]
    if len(set(words)) < 2:
        return text
    order = list(words)
    for _ in range(10):
        rng.shuffle(order)
        if order != words:
            break
    it = iter(order)
    return "".join(next(it) if p and not p.isspace() else p for p in parts)


# ---------------------------------------------------------------------------------------------
# reversed, foreign: kinds that teach wrong statistics. The paper's kinds above mostly keep clean
# text's byte statistics (an LM that trains on them still learns English spelling), so a short
# byte-level run barely suffers from them; these two are text whose every n-gram misleads.


def reversed_text(text: str, rng: random.Random) -> str:
    """Each line's characters in reverse order: what extracting right-to-left text from a PDF in
    the wrong direction produces."""
    return "\n".join(line[::-1] for line in text.split("\n"))


_LOWER = "abcdefghijklmnopqrstuvwxyz"


def foreign(text: str, rng: random.Random) -> str:
    """The letters through a fixed random permutation (case kept): text in a language the target
    does not want, written in the same script, with word lengths and punctuation of the original.
    One permutation per corpus (from a fixed seed), so the 'language' is consistent."""
    perm = list(_LOWER)
    random.Random("datarater-embedded-foreign").shuffle(perm)
    table = str.maketrans(_LOWER + _LOWER.upper(), "".join(perm) + "".join(perm).upper())
    return text.translate(table)


CORRUPTIONS: dict[str, Corruption] = {
    "mojibake": mojibake,
    "ocr": ocr,
    "whitespace": whitespace,
    "nonprintable": nonprintable,
    "numbers": numbers,
    "entropy": entropy,
    "allcaps": allcaps,
    "shuffled": shuffled,
    "boilerplate": boilerplate,
    "reversed": reversed_text,
    "foreign": foreign,
}
# The paper's categories of junk.
PAPER_KINDS = ("mojibake", "ocr", "whitespace", "nonprintable", "numbers", "entropy", "allcaps", "shuffled",
               "boilerplate")
# Corruption mixes of the embedded corpus (`naming.EmbeddedSpec.mix`): the corrupted documents
# are spread evenly over a mix's entries, so a kind listed k times gets k shares. "wide" keeps the
# paper's nine kinds and gives the two that teach wrong statistics three shares each (40% of the
# corrupted documents): the paper's kinds alone cost a 150-step byte-level LM too little for even a
# perfect curator to show (README, "What it shows").
MIXES: dict[str, tuple[str, ...]] = {
    "paper": PAPER_KINDS,
    "wide": PAPER_KINDS + ("reversed", "foreign") * 3,
}


# ---------------------------------------------------------------------------------------------
# The corpus


def corruption_plan(n_documents: int, seed: int, fraction: float, kinds: Sequence[str]) -> list[str]:
    """The label of each of ``n_documents`` documents: ``round(fraction * n)`` of them, chosen with
    ``seed``, get a corruption type (the types in turn, so their counts differ by at most one);
    the others are `CLEAN`."""
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"corrupt_fraction must be in [0, 1], got {fraction}")
    unknown = [k for k in kinds if k not in CORRUPTIONS]
    if unknown or (fraction > 0 and not kinds):
        raise ValueError(f"unknown corruption types {unknown}; expected some of {list(CORRUPTIONS)}")
    rng = random.Random(f"datarater-embedded-corrupt:{seed}")
    chosen = rng.sample(range(n_documents), round(fraction * n_documents))
    order = list(kinds)
    rng.shuffle(order)
    labels = [CLEAN] * n_documents
    for j, index in enumerate(chosen):
        labels[index] = order[j % len(order)]
    return labels


def document_rng(seed: int, label: str, doc_id: str) -> random.Random:
    """The random stream a corruption of one document draws from (independent of corpus order)."""
    return random.Random(f"datarater-embedded-corrupt:{seed}:{label}:{doc_id}")


def corrupt_documents(
    docs: Sequence[Document],
    seed: int = 0,
    fraction: float = 0.3,
    kinds: Sequence[str] = PAPER_KINDS,
    corruptions: Mapping[str, Corruption] | None = None,
) -> list[Document]:
    """The documents with a seeded ``fraction`` corrupted (see `corruption_plan`); each keeps its
    id and source, and its label is the corruption applied or `CLEAN` (text unchanged). A
    corruption that would leave the text unchanged (e.g. shuffling a one-word text) is not
    applied and the document stays `CLEAN`. ``corruptions`` replaces some kinds' functions (the
    same kind at another strength, for experiments)."""
    fns = {**CORRUPTIONS, **(corruptions or {})}
    out: list[Document] = []
    for doc, label in zip(docs, corruption_plan(len(docs), seed, fraction, kinds), strict=True):
        if label == CLEAN:
            out.append(replace(doc, label=CLEAN))
            continue
        text = fns[label](doc.text, document_rng(seed, label, doc.id))
        out.append(replace(doc, text=text, label=label if text != doc.text else CLEAN))
    return out
