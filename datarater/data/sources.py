"""Read documents from local files (JSON Lines, gzip, Parquet, plain text) or a prepared TFDS dataset.

Every user mistake ends in a `UserError` naming the file (and line) or in a counted skip in
`ReadStats`, never in a bare traceback. See `iter_documents`.
"""

from __future__ import annotations

import glob
import gzip
import json
import os
import time
import zlib
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from datarater.config import CorpusConfig
from datarater.data.documents import Document, ReadStats
from datarater.data.embedded.naming import (
    DATA_DIR_ENV,
    default_data_dir,
    is_built,
    is_embedded_name,
    parse_embedded_name,
)
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
_UTF8_BOM = b"\xef\xbb\xbf"
_GZIP_MAGIC = b"\x1f\x8b"
_GZIP_READ_ERRORS = (EOFError, gzip.BadGzipFile, zlib.error)
# A record's ground-truth quality label, read when present (the embedded corpus has one).
LABEL_FIELD = "label"
_PARQUET_BATCH_ROWS = 1024
_TFDS_BATCH_ROWS = 256

# A produced record: the document and whether invalid UTF-8 had to be replaced in it.
_Item = tuple[Document, bool]


def iter_documents(cfg: CorpusConfig, stats: ReadStats) -> Iterator[Document]:
    """Yield the corpus's documents in a deterministic order, counting everything in ``stats``.

    ``cfg.kind`` "files" reads every file matched by ``cfg.paths`` (sorted, deduplicated);
    "tfds" reads split ``cfg.tfds_split`` of the prepared TFDS dataset ``cfg.tfds_name``.
    Stops after ``cfg.max_documents`` documents when that is > 0.
    """
    if cfg.kind == "files":
        items = _iter_files(cfg, stats)
    elif cfg.kind == "tfds":
        items = _iter_tfds(cfg, stats)
    else:
        raise UserError(f"config key 'corpus.kind': must be 'files' or 'tfds', got '{cfg.kind}'")
    n_used = 0
    for doc, replaced in items:
        stats.used += 1
        stats.utf8_replaced += int(replaced)
        n_used += 1
        yield doc
        if 0 < cfg.max_documents <= n_used:
            return


# ---------------------------------------------------------------------------------------------
# Paths


@dataclass(frozen=True)
class _File:
    path: Path  # absolute
    base: Path  # directory that ids of .txt documents are relative to


def expand_paths(patterns: Iterable[str]) -> list[Path]:
    """Absolute, sorted, deduplicated files matched by ``patterns`` (globs, ``~`` expanded)."""
    return [f.path for f in _expand(patterns)]


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


def _iter_files(cfg: CorpusConfig, stats: ReadStats) -> Iterator[_Item]:
    files = _expand(cfg.paths)
    for f in files:  # check every extension before reading anything
        _kind_and_stem(f.path)
    for f in files:
        kind, stem = _kind_and_stem(f.path)
        if kind == "jsonl":
            yield from _iter_jsonl(f.path, stem, cfg, stats)
        elif kind == "parquet":
            yield from _iter_parquet(f.path, stem, cfg, stats)
        else:
            yield from _iter_txt(f, stem, stats)


# ---------------------------------------------------------------------------------------------
# Text and records


def decode_utf8(data: bytes) -> tuple[str, bool]:
    """Decode UTF-8; invalid bytes become U+FFFD. Returns (text, whether anything was replaced)."""
    try:
        return data.decode("utf-8"), False
    except UnicodeDecodeError:
        return data.decode("utf-8", errors="replace"), True


def _clean_surrogates(text: str) -> tuple[str, bool]:
    """Replace lone surrogates (e.g. from JSON escapes like ``\\udc80``), which are not UTF-8."""
    if text.isascii():
        return text, False
    try:
        text.encode("utf-8")
        return text, False
    except UnicodeEncodeError:
        return text.encode("utf-8", errors="surrogatepass").decode("utf-8", errors="replace"), True


def _as_str(value: Any) -> str | None:
    if isinstance(value, bytes):
        return decode_utf8(value)[0]
    if isinstance(value, (str, int)) and not isinstance(value, bool):
        return str(value)
    return None


def _record_to_document(
    record: Mapping[str, Any], cfg: CorpusConfig, default_id: str, default_source: str
) -> _Item | str:
    """The document of one record, or the reason it is skipped."""
    if cfg.text_field not in record:
        return "missing_text_field"
    text = record[cfg.text_field]
    replaced = False
    if isinstance(text, bytes):
        text, replaced = decode_utf8(text)
    if not isinstance(text, str):
        return "text_not_string"
    text, replaced_surrogates = _clean_surrogates(text)
    if not text or text.isspace():
        return "empty"
    doc_id = _as_str(record.get(cfg.id_field)) or default_id
    source = _as_str(record.get(cfg.source_field)) or default_source
    label = _as_str(record.get(LABEL_FIELD)) or ""
    return Document(id=doc_id, text=text, source=source, label=label), replaced or replaced_surrogates


# ---------------------------------------------------------------------------------------------
# JSON Lines


@dataclass
class _FileTally:
    """Per-file counts that decide whether a file is broken as a whole."""

    lines: int = 0  # non-blank lines
    bad: int = 0  # lines that are not a JSON object
    first_bad: str = ""
    objects: int = 0
    missing_text: int = 0
    first_missing_line: int = 0
    fields_seen: list[str] = field(default_factory=list)
    used: int = 0


def _open_lines(path: Path) -> Iterator[bytes]:
    if path.name.lower().endswith(".gz"):
        with open(path, "rb") as raw:
            head = raw.read(2)
        if head and head != _GZIP_MAGIC:
            raise UserError(f"{path}: is not a gzip file (its name ends in .gz but it has no gzip header)")
        with gzip.open(path, "rb") as f:
            yield from f
    else:
        with open(path, "rb") as f:
            yield from f


def _iter_jsonl(path: Path, stem: str, cfg: CorpusConfig, stats: ReadStats) -> Iterator[_Item]:
    tally = _FileTally()
    line_no = 0
    lines = _open_lines(path)
    while True:
        try:
            raw = next(lines, None)
        except _GZIP_READ_ERRORS as e:
            _truncated_gzip(path, line_no, e, stats)
            break
        except OSError as e:
            raise UserError(f"{path}: cannot be read after line {line_no}: {e}") from None
        if raw is None:
            break
        line_no += 1
        if line_no == 1 and raw.startswith(_UTF8_BOM):
            raw = raw[len(_UTF8_BOM) :]
        if not raw.strip():
            continue
        item = _parse_line(raw, path, line_no, stem, cfg, stats, tally)
        if item is not None:
            tally.used += 1
            yield item
    _check_file(path, cfg, tally)


def _parse_line(
    raw: bytes, path: Path, line_no: int, stem: str, cfg: CorpusConfig, stats: ReadStats, tally: _FileTally
) -> _Item | None:
    tally.lines += 1
    stats.read += 1
    where = f"{path}:{line_no}"
    line, replaced = decode_utf8(raw)
    try:
        record = json.loads(line)
    except json.JSONDecodeError as e:
        return _bad_line(tally, stats, "invalid_json", where, line_no, str(e))
    if not isinstance(record, dict):
        return _bad_line(
            tally, stats, "not_an_object", where, line_no, f"a JSON {type(record).__name__}, not an object"
        )
    tally.objects += 1
    result = _record_to_document(record, cfg, f"{path.name}:{line_no}", stem)
    if isinstance(result, str):
        if result == "missing_text_field":
            tally.missing_text += 1
            if not tally.first_missing_line:
                tally.first_missing_line, tally.fields_seen = line_no, list(record)
        stats.skip(result, where)
        return None
    doc, replaced_in_text = result
    return doc, replaced or replaced_in_text


def _bad_line(tally: _FileTally, stats: ReadStats, reason: str, where: str, line_no: int, detail: str) -> None:
    tally.bad += 1
    if not tally.first_bad:
        tally.first_bad = f"line {line_no}: {detail}"
    stats.skip(reason, where, detail)
    return None


def _check_file(path: Path, cfg: CorpusConfig, tally: _FileTally) -> None:
    """Raise if the file as a whole is unusable: mostly not JSON Lines, or no text field anywhere."""
    too_many = tally.bad > cfg.max_bad_fraction * tally.lines
    if tally.bad and too_many and (tally.bad >= 3 or tally.bad == tally.lines):
        raise UserError(
            f"{path}: is not JSON Lines: {tally.first_bad} "
            f"({tally.bad} of {tally.lines} non-blank lines unreadable, more than "
            f"corpus.max_bad_fraction={cfg.max_bad_fraction})"
        )
    if tally.used == 0 and tally.objects and tally.missing_text == tally.objects:
        raise UserError(
            f"{path}: line {tally.first_missing_line}: no field '{cfg.text_field}' in any record; "
            f"fields present: {tally.fields_seen}; set corpus.text_field=<one of them>"
        )


def _truncated_gzip(path: Path, line_no: int, error: Exception, stats: ReadStats) -> None:
    stats.read += 1
    stats.skipped["truncated_gzip"] += 1
    stats.warn(
        "truncated_gzip",
        f"{path}: gzip stream broken after line {line_no} ({error}); "
        f"kept the documents up to line {line_no}, the rest of the file is lost",
    )


# ---------------------------------------------------------------------------------------------
# Parquet


def _iter_parquet(path: Path, stem: str, cfg: CorpusConfig, stats: ReadStats) -> Iterator[_Item]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as e:
        raise UserError(f"{path}: cannot be read as Parquet: {e}") from None
    columns = pf.schema_arrow.names
    if cfg.text_field not in columns:
        raise UserError(
            f"{path}: has no column '{cfg.text_field}'; columns present: {columns}; set corpus.text_field=<one of them>"
        )
    wanted = [c for c in dict.fromkeys((cfg.text_field, cfg.id_field, cfg.source_field, LABEL_FIELD)) if c in columns]
    row = 0
    try:
        for batch in pf.iter_batches(batch_size=_PARQUET_BATCH_ROWS, columns=wanted):
            values = {name: batch.column(name).to_pylist() for name in wanted}
            for i in range(batch.num_rows):
                row += 1
                record = {name: values[name][i] for name in wanted}
                item = _use_record(record, cfg, stats, f"{path}:{row}", f"{path.name}:{row}", stem)
                if item is not None:
                    yield item
    except (pa.ArrowException, OSError) as e:
        raise UserError(f"{path}: Parquet read failed after row {row}: {e}") from None


def _use_record(
    record: Mapping[str, Any], cfg: CorpusConfig, stats: ReadStats, where: str, default_id: str, default_source: str
) -> _Item | None:
    stats.read += 1
    result = _record_to_document(record, cfg, default_id, default_source)
    if isinstance(result, str):
        stats.skip(result, where)
        return None
    return result


# ---------------------------------------------------------------------------------------------
# Plain text


def _iter_txt(f: _File, stem: str, stats: ReadStats) -> Iterator[_Item]:
    """A .txt file is one document; its id is its path relative to the glob's base directory."""
    try:
        data = f.path.read_bytes()
        if f.path.name.lower().endswith(".gz"):
            data = gzip.decompress(data)
    except (gzip.BadGzipFile, EOFError, zlib.error) as e:
        raise UserError(f"{f.path}: is not a readable gzip file: {e}") from None
    except OSError as e:
        raise UserError(f"{f.path}: cannot be read: {e}") from None
    stats.read += 1
    if data.startswith(_UTF8_BOM):
        data = data[len(_UTF8_BOM) :]
    text, replaced = decode_utf8(data)
    if not text or text.isspace():
        stats.skip("empty", str(f.path))
        return
    yield Document(id=os.path.relpath(f.path, f.base), text=text, source=stem), replaced


# ---------------------------------------------------------------------------------------------
# TFDS


def _iter_tfds(cfg: CorpusConfig, stats: ReadStats) -> Iterator[_Item]:
    if is_embedded_name(cfg.tfds_name):
        cfg = _prepare_embedded(cfg)
    source = _open_tfds(cfg)
    features = list(source.dataset_info.features.keys())
    if cfg.text_field not in features:
        raise UserError(
            f"TFDS dataset '{cfg.tfds_name}' has no feature '{cfg.text_field}'; features: {features}; "
            "set corpus.text_field=<one of them>"
        )
    name = cfg.tfds_name
    for start in range(0, len(source), _TFDS_BATCH_ROWS):
        indices = list(range(start, min(start + _TFDS_BATCH_ROWS, len(source))))
        for index, record in zip(indices, source.__getitems__(indices), strict=True):
            where = f"tfds:{name}:{cfg.tfds_split}:{index}"
            item = _use_record(record, cfg, stats, where, f"{name}:{cfg.tfds_split}:{index}", name)
            if item is not None:
                yield item


def _open_tfds(cfg: CorpusConfig) -> Any:
    import tensorflow_datasets as tfds

    data_dir = os.path.expanduser(cfg.tfds_data_dir) if cfg.tfds_data_dir else None
    try:
        return tfds.data_source(cfg.tfds_name, split=cfg.tfds_split, data_dir=data_dir, download=False)
    except Exception as e:  # TFDS raises many types here; all mean "this dataset cannot be read"
        first_line = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(
            f"TFDS dataset '{cfg.tfds_name}' split '{cfg.tfds_split}' cannot be read from "
            f"data_dir={data_dir or '(TFDS default, ~/tensorflow_datasets)'}: {first_line}. "
            "Prepare it with file_format='array_record' (TensorFlow is not installed) and set "
            "corpus.tfds_name / corpus.tfds_data_dir / corpus.tfds_split."
        ) from None


def _prepare_embedded(cfg: CorpusConfig) -> CorpusConfig:
    """The config to read the embedded corpus named by ``cfg.tfds_name``, built first if needed.

    Its data dir is ``cfg.tfds_data_dir``, else ``$DATARATER_DATA_DIR`` or ``~/.cache/datarater/tfds``.
    """
    try:
        spec = parse_embedded_name(cfg.tfds_name)
    except ValueError as e:
        raise UserError(f"config key 'corpus.tfds_name': {e}") from None
    data_dir = Path(os.path.expanduser(cfg.tfds_data_dir)) if cfg.tfds_data_dir else default_data_dir()
    if not is_built(data_dir, spec):
        from datarater.data.embedded.builder import build_embedded

        start = time.perf_counter()
        try:
            build_embedded(data_dir, spec.seed, spec.corrupt_fraction, spec.max_documents)
        except OSError as e:
            raise UserError(
                f"cannot build the embedded corpus in {data_dir} ({e}); set corpus.tfds_data_dir or "
                f"{DATA_DIR_ENV} to a writable directory"
            ) from None
        print(
            f"built the embedded corpus {spec.tfds_name} in {time.perf_counter() - start:.1f} s at {data_dir}",
            flush=True,
        )
    return replace(cfg, tfds_name=spec.tfds_name, tfds_data_dir=str(data_dir))
