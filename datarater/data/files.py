"""Find the files a corpus's ``paths`` name (local globs or fsspec URLs) and read each with the reader for its format.

Globs (``~`` expanded) give files sorted and deduplicated; every file's type is checked before
any is read, and a pattern that names nothing, a directory or an unknown type is a `UserError`.
Each file is an `InputFile` with the path it is read from and its path relative to the glob's
base directory, which names its attribute files (``RUN/attributes/<curator>/<relative>.parquet``).
"""

from __future__ import annotations

import glob
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from datarater.config import CorpusConfig
from datarater.data.documents import ReadStats
from datarater.data.openers import is_url
from datarater.data.readers import Positioned, iter_arrow, iter_jsonl, iter_parquet, iter_txt
from datarater.data.records import Item
from datarater.errors import UserError

# Suffix (lower case) -> reader kind. Longest suffixes first so that ".jsonl.gz" wins over ".gz".
_SUFFIXES: tuple[tuple[str, str], ...] = (
    (".jsonl.gz", "jsonl"),
    (".ndjson.gz", "jsonl"),
    (".json.gz", "jsonl"),
    (".jsonl.zst", "jsonl"),
    (".ndjson.zst", "jsonl"),
    (".json.zst", "jsonl"),
    (".txt.gz", "txt"),
    (".txt.zst", "txt"),
    (".jsonl", "jsonl"),
    (".ndjson", "jsonl"),
    (".json", "jsonl"),
    (".parquet", "parquet"),
    (".arrow", "arrow"),  # a Hugging Face `datasets.save_to_disk` shard
    (".txt", "txt"),
)
SUPPORTED_SUFFIXES = tuple(s for s, _ in _SUFFIXES)


@dataclass(frozen=True)
class InputFile:
    """One input file: where it is read from, its path relative to its glob's base, its reader kind
    and its name without the suffix (the default source of its documents)."""

    path: str  # absolute local path or URL
    rel: str
    kind: str
    stem: str

    def read(self, cfg: CorpusConfig, stats: ReadStats, start: int = 0) -> Iterator[Positioned]:
        """``(position, item)`` of every document after raw record ``start``."""
        if self.kind == "jsonl":
            return iter_jsonl(self.path, self.stem, cfg, stats, start)
        if self.kind == "parquet":
            return iter_parquet(self.path, self.stem, cfg, stats, start)
        if self.kind == "arrow":
            return iter_arrow(self.path, self.stem, cfg, stats, start)
        return iter_txt(self.path, self.rel, self.stem, stats, start)


def list_files(patterns: Iterable[str]) -> list[InputFile]:
    """Every file the patterns match, sorted by path, each type checked (`UserError` otherwise)."""
    found: dict[str, tuple[str, str]] = {}
    for pattern in patterns:
        for path, rel in _expand_one(pattern):
            found.setdefault(path, (path, rel))
    files = []
    for path in sorted(found):
        kind, stem = kind_and_stem(path)
        files.append(InputFile(path, found[path][1], kind, stem))
    return files


def iter_files(cfg: CorpusConfig, stats: ReadStats) -> Iterator[Item]:
    """The documents of every file matched by ``cfg.paths``, file by file in sorted order."""
    for f in list_files(cfg.paths):
        for _, item in f.read(cfg, stats):
            yield item


def _expand_one(pattern: str) -> list[tuple[str, str]]:
    """``(path, path relative to the pattern's base)`` of each file ``pattern`` matches."""
    if is_url(pattern):
        return _expand_url(pattern)
    expanded = os.path.expanduser(pattern)
    if not glob.has_magic(expanded):
        path = os.path.abspath(expanded)
        if not os.path.exists(path):
            raise UserError(f"corpus.paths: file '{pattern}' does not exist (looked for {path})")
        if os.path.isdir(path):
            saved = saved_dataset_files(path)
            if saved:  # a `datasets.save_to_disk` folder (a Dataset, or a DatasetDict of splits)
                return saved
            raise UserError(
                f"corpus.paths: '{pattern}' is a directory; give files or a glob such as "
                f"'{os.path.join(pattern, '*.jsonl')}' (or a Hugging Face datasets.save_to_disk folder)"
            )
        return [(path, os.path.basename(path))]
    base = os.path.abspath(_glob_base(expanded))
    matches = [os.path.abspath(m) for m in glob.glob(expanded, recursive=True)]
    files = [(m, os.path.relpath(m, base)) for m in matches if os.path.isfile(m)]
    if not files:
        raise UserError(
            f"corpus.paths: '{pattern}' matches no file (relative paths are taken from the "
            f"current directory {os.getcwd()})"
        )
    return files


def saved_dataset_files(folder: str) -> list[tuple[str, str]]:
    """The ``.arrow`` shards of a Hugging Face ``save_to_disk`` folder (one with ``state.json``
    beside its shards, or a DatasetDict whose split folders have one), relative to ``folder``; []
    for any other folder."""
    found = []
    for state in sorted(glob.glob(os.path.join(folder, "**", "state.json"), recursive=True)):
        shards = sorted(glob.glob(os.path.join(os.path.dirname(state), "*.arrow")))
        found += [(os.path.abspath(p), os.path.relpath(p, folder)) for p in shards]
    return found


def _expand_url(pattern: str) -> list[tuple[str, str]]:
    import fsspec

    try:
        fs, root = fsspec.core.url_to_fs(pattern)
    except (ImportError, ValueError) as e:
        raise UserError(f"corpus.paths: '{pattern}': no filesystem for this URL ({e})") from None
    try:
        if glob.has_magic(root):
            base = _glob_base(root)
            matches = [p for p in sorted(fs.glob(root)) if fs.isfile(p)]
        else:
            if not fs.exists(root):
                raise UserError(f"corpus.paths: '{pattern}' does not exist (or is not reachable)")
            if fs.isdir(root):
                raise UserError(f"corpus.paths: '{pattern}' is a directory; give files or a glob such as "
                                f"'{pattern.rstrip('/')}/*.jsonl'")
            base, matches = os.path.dirname(root), [root]
    except OSError as e:
        raise UserError(f"corpus.paths: '{pattern}' cannot be listed: {e}") from None
    if not matches:
        raise UserError(f"corpus.paths: '{pattern}' matches no file")
    return [(fs.unstrip_protocol(m), os.path.relpath(m, base) if base else m) for m in matches]


def _glob_base(pattern: str) -> str:
    """The leading directories of ``pattern`` that contain no glob magic."""
    parts = pattern.split("/")
    fixed: list[str] = []
    for part in parts[:-1]:
        if glob.has_magic(part):
            break
        fixed.append(part)
    if not fixed:
        return "."
    return "/".join(fixed) or "/"


def kind_and_stem(path: str) -> tuple[str, str]:
    name = os.path.basename(path)
    for suffix, kind in _SUFFIXES:
        if name.lower().endswith(suffix):
            return kind, name[: -len(suffix)] or name
    raise UserError(f"{path}: unsupported file type; supported: {', '.join(SUPPORTED_SUFFIXES)}")
