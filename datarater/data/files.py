"""Find the files a corpus's ``paths`` name and read each with the reader for its format.

Globs (``~`` expanded) give files sorted and deduplicated; every file's type is checked before
any is read, and a pattern that names nothing, a directory or an unknown type is a `UserError`.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from datarater.config import CorpusConfig
from datarater.data.documents import ReadStats
from datarater.data.readers import iter_jsonl, iter_parquet, iter_txt
from datarater.data.records import Item
from datarater.errors import UserError

# Suffix (lower case) -> reader kind. Longest suffixes first so that ".jsonl.gz" wins over ".gz".
_SUFFIXES: tuple[tuple[str, str], ...] = (
    (".jsonl.gz", "jsonl"),
    (".ndjson.gz", "jsonl"),
    (".json.gz", "jsonl"),
    (".txt.gz", "txt"),
    (".jsonl", "jsonl"),
    (".ndjson", "jsonl"),
    (".json", "jsonl"),
    (".parquet", "parquet"),
    (".txt", "txt"),
)
SUPPORTED_SUFFIXES = tuple(s for s, _ in _SUFFIXES)


@dataclass(frozen=True)
class _File:
    path: Path  # absolute
    base: Path  # directory that ids of .txt documents are relative to


def iter_files(cfg: CorpusConfig, stats: ReadStats) -> Iterator[Item]:
    """The documents of every file matched by ``cfg.paths``, file by file in sorted order."""
    files = _expand(cfg.paths)
    for f in files:  # check every extension before reading anything
        _kind_and_stem(f.path)
    for f in files:
        kind, stem = _kind_and_stem(f.path)
        if kind == "jsonl":
            yield from iter_jsonl(f.path, stem, cfg, stats)
        elif kind == "parquet":
            yield from iter_parquet(f.path, stem, cfg, stats)
        else:
            yield from iter_txt(f.path, f.base, stem, stats)


def _expand(patterns: Iterable[str]) -> list[_File]:
    found: dict[Path, _File] = {}
    for pattern in patterns:
        for f in _expand_one(pattern):
            found.setdefault(f.path, f)
    return [found[p] for p in sorted(found)]


def _expand_one(pattern: str) -> list[_File]:
    expanded = os.path.expanduser(pattern)
    if not glob.has_magic(expanded):
        path = Path(os.path.abspath(expanded))
        if not path.exists():
            raise UserError(f"corpus.paths: file '{pattern}' does not exist (looked for {path})")
        if path.is_dir():
            raise UserError(
                f"corpus.paths: '{pattern}' is a directory; give files or a glob such as "
                f"'{os.path.join(pattern, '*.jsonl')}'"
            )
        return [_File(path, path.parent)]
    base = Path(os.path.abspath(_glob_base(expanded)))
    matches = [Path(os.path.abspath(m)) for m in glob.glob(expanded, recursive=True)]
    files = [_File(m, base) for m in matches if m.is_file()]
    if not files:
        raise UserError(
            f"corpus.paths: '{pattern}' matches no file (relative paths are taken from the "
            f"current directory {os.getcwd()})"
        )
    return files


def _glob_base(pattern: str) -> str:
    """The leading directories of ``pattern`` that contain no glob magic."""
    parts = Path(pattern).parts
    fixed: list[str] = []
    for part in parts[:-1]:
        if glob.has_magic(part):
            break
        fixed.append(part)
    return os.path.join(*fixed) if fixed else "."


def _kind_and_stem(path: Path) -> tuple[str, str]:
    name = path.name
    for suffix, kind in _SUFFIXES:
        if name.lower().endswith(suffix):
            return kind, name[: -len(suffix)] or name
    raise UserError(f"{path}: unsupported file type; supported: {', '.join(SUPPORTED_SUFFIXES)}")
