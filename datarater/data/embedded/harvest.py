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
import importlib.metadata
import importlib.util
import io
import math
import os
import platform
import random
import re
import sysconfig
import tokenize
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from datarater.data.documents import Document

STDLIB_DOCS = "stdlib_docs"
PACKAGE_DOCS = "package_docs"
CODE = "code"
SOURCES = (STDLIB_DOCS, PACKAGE_DOCS, CODE)

# The project's dependencies (and scipy, which jax needs) by import name -> distribution name.
DEFAULT_PACKAGES: dict[str, str] = {
    "numpy": "numpy",
    "scipy": "scipy",
    "jax": "jax",
    "flax": "flax",
    "optax": "optax",
    "orbax": "orbax-checkpoint",
    "grain": "grain",
    "tensorflow_datasets": "tensorflow-datasets",
    "hydra": "hydra-core",
    "omegaconf": "omegaconf",
    "pyarrow": "pyarrow",
    "matplotlib": "matplotlib",
}
_SKIP_DIRS = frozenset(
    {
        "__pycache__",
        "site-packages",
        "dist-packages",
        "test",
        "tests",
        "testing",
        "idlelib",
        "lib2to3",
        "turtledemo",
        "ensurepip",
        "encodings",
        "_vendor",
        "vendored",
        "third_party",
        "examples",
    }
)
# Documentation modules: their long string constants are prose (pydoc_data.topics holds the
# language reference that `help()` shows). They give prose only, no code, and have no per-file cap.
DOC_MODULES = frozenset({"stdlib/pydoc_data/topics.py"})
_MIN_DOC_STRING_CHARS = 200
_MAX_FILE_BYTES = 1_000_000  # larger .py files are generated tables, not prose or hand-written code
_WORD = re.compile(r"[A-Za-z]{2,}")


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


@dataclass(frozen=True)
class PyFile:
    """One .py file: ``origin`` is "stdlib" or the package's import name; ``rel`` its stable name."""

    origin: str
    path: Path
    rel: str  # e.g. "stdlib/json/decoder.py", "numpy/linalg/_linalg.py"


@dataclass
class HarvestStats:
    """What the harvest visited and why files gave nothing."""

    files_listed: int = 0
    files_read: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    duplicates: int = 0
    missing_packages: list[str] = field(default_factory=list)


# ---------------------------------------------------------------------------------------------
# Finding files (no imports)


def stdlib_root() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def package_root(name: str) -> Path | None:
    """Directory of the installed package ``name`` (namespace packages too), found without importing it."""
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(sorted(spec.submodule_search_locations)[0])


def python_files(root: Path, origin: str, prefix: str) -> list[PyFile]:
    """The .py files under ``root`` that are library code (no tests, vendored or generated files), sorted."""
    files: list[PyFile] = []
    for directory, dirs, names in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d not in _SKIP_DIRS and not d.startswith("."))
        for name in sorted(names):
            if not name.endswith(".py") or name.startswith("test_") or name.endswith("_test.py"):
                continue
            if name in ("conftest.py", "setup.py"):
                continue
            path = Path(directory) / name
            rel = path.relative_to(root).as_posix()
            files.append(PyFile(origin, path, f"{prefix}/{rel}"))
    return files


def installed_versions(packages: tuple[str, ...] = tuple(DEFAULT_PACKAGES)) -> dict[str, str]:
    """Python's version and each installed package's version: the corpus is a function of these."""
    versions = {"python": platform.python_version()}
    for name in packages:
        dist = DEFAULT_PACKAGES.get(name, name)
        try:
            versions[name] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    return versions


# ---------------------------------------------------------------------------------------------
# Prose from docstrings (pure functions)


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


def doc_chunks(tree: ast.Module, cfg: HarvestConfig, rng: random.Random, doc_module: bool = False) -> list[str]:
    """Prose documents of one file: its docstrings' (a documentation module's: its long strings')
    prose paragraphs, packed into chunks."""
    texts = long_strings(tree) if doc_module else docstrings(tree)
    paragraphs = [p for doc in texts for p in prose_paragraphs(doc, cfg.min_prose_words, cfg.min_prose_letter_fraction)]
    return pack_pieces(paragraphs, "\n\n", cfg.min_chars, cfg.max_chars, rng)


# ---------------------------------------------------------------------------------------------
# Code (pure functions)


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


def read_source(path: Path) -> str:
    """A .py file's text in its declared encoding (PEP 263)."""
    data = path.read_bytes()
    encoding, _ = tokenize.detect_encoding(io.BytesIO(data).readline)
    return data.decode(encoding)


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
