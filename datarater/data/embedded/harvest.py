"""Harvest real text from the Python installation: docstring prose and source code.

Every installation of the project carries the standard library and the project's dependencies as
``.py`` files. Their docstrings are human-written English prose; their bodies are human-written
code. This module reads them at run time with `ast` (nothing is imported or executed) and cuts
them into documents of ``min_chars``..``max_chars`` characters, in three sources:

- ``stdlib_docs``: prose paragraphs of standard-library docstrings;
- ``package_docs``: prose paragraphs of the installed dependencies' docstrings;
- ``code``: chunks of top-level statements (functions, classes, ...) of both.

The result depends only on the seed, the `HarvestConfig` and the installed versions
(`installed_versions`): files are sorted, then visited in a seeded order.
"""

from __future__ import annotations

import ast
import math
import random
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field

from datarater.data.documents import Document
from datarater.data.embedded.chunking import (
    docstrings,
    letter_fraction,
    long_strings,
    pack_pieces,
    prose_paragraphs,
    top_level_segments,
)
from datarater.data.embedded.pyfiles import (
    DEFAULT_PACKAGES,
    PyFile,
    package_root,
    python_files,
    read_source,
    stdlib_root,
)

STDLIB_DOCS = "stdlib_docs"
PACKAGE_DOCS = "package_docs"
CODE = "code"
SOURCES = (STDLIB_DOCS, PACKAGE_DOCS, CODE)
# Documentation modules: their long string constants are prose (pydoc_data.topics holds the
# language reference that `help()` shows). They give prose only, no code, and have no per-file cap.
DOC_MODULES = frozenset({"stdlib/pydoc_data/topics.py"})
_MAX_FILE_BYTES = 1_000_000  # larger .py files are generated tables, not prose or hand-written code


@dataclass(frozen=True)
class HarvestConfig:
    """How many documents to harvest, how long, and from which packages."""

    max_documents: int = 4000
    min_chars: int = 500
    max_chars: int = 2000
    source_weights: dict[str, float] = field(default_factory=lambda: {STDLIB_DOCS: 0.25, PACKAGE_DOCS: 0.5, CODE: 0.25})
    packages: tuple[str, ...] = tuple(DEFAULT_PACKAGES)
    max_chunks_per_file: int = 6  # per source, so that no single module dominates
    min_prose_words: int = 6  # per paragraph
    min_prose_letter_fraction: float = 0.75  # letters among non-space characters of a paragraph
    min_code_letter_fraction: float = 0.45


@dataclass
class HarvestStats:
    """What the harvest visited and why files gave nothing."""

    files_listed: int = 0
    files_read: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    duplicates: int = 0
    missing_packages: list[str] = field(default_factory=list)


# ---------------------------------------------------------------------------------------------
# Documents of one file


def doc_chunks(tree: ast.Module, cfg: HarvestConfig, rng: random.Random, doc_module: bool = False) -> list[str]:
    """Prose documents of one file: its docstrings' (a documentation module's: its long strings')
    prose paragraphs, packed into chunks."""
    texts = long_strings(tree) if doc_module else docstrings(tree)
    paragraphs = [p for doc in texts for p in prose_paragraphs(doc, cfg.min_prose_words, cfg.min_prose_letter_fraction)]
    return pack_pieces(paragraphs, "\n\n", cfg.min_chars, cfg.max_chars, rng)


def code_chunks(source: str, tree: ast.Module, cfg: HarvestConfig, rng: random.Random) -> list[str]:
    """Code documents of one file: top-level statements packed into chunks, tables of data left out."""
    chunks = pack_pieces(top_level_segments(source, tree), "\n\n", cfg.min_chars, cfg.max_chars, rng)
    return [c for c in chunks if letter_fraction(c) >= cfg.min_code_letter_fraction]


# ---------------------------------------------------------------------------------------------
# The harvest


def list_files(cfg: HarvestConfig, stats: HarvestStats) -> tuple[list[PyFile], list[PyFile]]:
    """Standard-library files and package files, each sorted."""
    stdlib = python_files(stdlib_root(), "stdlib", "stdlib")
    packages: list[PyFile] = []
    for name in sorted(cfg.packages):
        root = package_root(name)
        if root is None:
            stats.missing_packages.append(name)
            continue
        packages.extend(python_files(root, name, name))
    stats.files_listed = len(stdlib) + len(packages)
    return stdlib, packages


def parse_file(f: PyFile, stats: HarvestStats) -> tuple[str, ast.Module] | None:
    """Source and syntax tree of ``f``, or None (counted in ``stats.skipped``) if it cannot be used."""
    try:
        if f.path.stat().st_size > _MAX_FILE_BYTES:
            stats.skipped["too_large"] += 1
            return None
        source = read_source(f.path)
        tree = ast.parse(source)
    except (OSError, UnicodeDecodeError, LookupError):
        stats.skipped["unreadable"] += 1
        return None
    except (SyntaxError, ValueError, RecursionError):
        stats.skipped["unparsable"] += 1
        return None
    stats.files_read += 1
    return source, tree


def quotas(cfg: HarvestConfig) -> dict[str, int]:
    """Documents per source: ``max_documents`` split by ``source_weights`` (largest remainders)."""
    unknown = set(cfg.source_weights) - set(SOURCES)
    if unknown:
        raise ValueError(f"unknown sources {sorted(unknown)}; expected some of {SOURCES}")
    total = sum(cfg.source_weights.values())
    if total <= 0 or cfg.max_documents < 0:
        raise ValueError("source_weights must sum to > 0 and max_documents must be >= 0")
    exact = {s: cfg.max_documents * cfg.source_weights.get(s, 0.0) / total for s in SOURCES}
    counts = {s: math.floor(v) for s, v in exact.items()}
    by_remainder = sorted(SOURCES, key=lambda s: (-(exact[s] - counts[s]), SOURCES.index(s)))
    for s in by_remainder[: cfg.max_documents - sum(counts.values())]:
        counts[s] += 1
    return counts


def _interleave(a: list[PyFile], b: list[PyFile]) -> Iterator[PyFile]:
    for i in range(max(len(a), len(b))):
        if i < len(a):
            yield a[i]
        if i < len(b):
            yield b[i]


def harvest(seed: int = 0, cfg: HarvestConfig | None = None, stats: HarvestStats | None = None) -> list[Document]:
    """Up to ``cfg.max_documents`` documents labelled "clean", in a seeded order.

    Standard-library and package files are each shuffled with ``seed`` and visited alternately;
    each file gives at most ``cfg.max_chunks_per_file`` documents to its docs source and to
    ``code`` (a seeded choice when it has more), until every source has its quota (`quotas`).
    A source still short after all files is topped up with the documents the per-file cap left
    out. Documents with the same text are kept once. Ids look like
    ``stdlib_docs:stdlib/json/decoder.py#0`` (source, file, chunk index).
    """
    cfg = cfg or HarvestConfig()
    stats = stats if stats is not None else HarvestStats()
    want = quotas(cfg)
    stdlib, packages = list_files(cfg, stats)
    order = random.Random(f"datarater-embedded-files:{seed}")
    order.shuffle(stdlib)
    order.shuffle(packages)
    picked: dict[str, list[Document]] = {s: [] for s in SOURCES}
    spare: dict[str, list[Document]] = {s: [] for s in SOURCES}  # left out by the per-file cap
    seen: set[str] = set()

    def keep(doc: Document) -> None:
        if doc.text in seen:
            stats.duplicates += 1
        else:
            seen.add(doc.text)
            picked[doc.source].append(doc)

    for f in _interleave(stdlib, packages):
        docs_source = STDLIB_DOCS if f.origin == "stdlib" else PACKAGE_DOCS
        if all(len(picked[s]) >= want[s] for s in (docs_source, CODE)):
            if all(len(picked[s]) >= want[s] for s in SOURCES):
                break
            continue
        parsed = parse_file(f, stats)
        if parsed is None:
            continue
        source, tree = parsed
        rng = random.Random(f"datarater-embedded-chunks:{seed}:{f.rel}")
        doc_module = f.rel in DOC_MODULES
        candidates = [(docs_source, doc_chunks(tree, cfg, rng, doc_module))]
        if not doc_module:
            candidates.append((CODE, code_chunks(source, tree, cfg, rng)))
        for name, chunks in candidates:
            room = want[name] - len(picked[name])
            if room <= 0:
                continue
            n_take = min(room, len(chunks) if doc_module else cfg.max_chunks_per_file)
            chosen = set(rng.sample(range(len(chunks)), n_take)) if len(chunks) > n_take else set(range(len(chunks)))
            for k, text in enumerate(chunks):
                doc = Document(id=f"{name}:{f.rel}#{k}", text=text, source=name, label="clean")
                if k in chosen:
                    keep(doc)
                elif n_take < room:
                    spare[name].append(doc)
    for name in SOURCES:
        if len(picked[name]) < want[name] and spare[name]:
            random.Random(f"datarater-embedded-spare:{seed}:{name}").shuffle(spare[name])
            for doc in spare[name]:
                if len(picked[name]) >= want[name]:
                    break
                keep(doc)
    docs = [d for s in SOURCES for d in picked[s]]
    random.Random(f"datarater-embedded-order:{seed}").shuffle(docs)
    return docs
