"""Read one local file of a known format (JSON Lines, Parquet, plain text) into documents.

JSON Lines may be gzipped; a file that is mostly not JSON Lines, or has the text field in no
record, is a `UserError`; single bad lines are counted skips in `ReadStats`.
"""

from __future__ import annotations

import gzip
import json
import os
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from datarater.config import CorpusConfig
from datarater.data.documents import Document, ReadStats
from datarater.data.records import LABEL_FIELD, Item, decode_utf8, record_to_document, use_record
from datarater.errors import UserError

_UTF8_BOM = b"\xef\xbb\xbf"
_GZIP_MAGIC = b"\x1f\x8b"
_GZIP_READ_ERRORS = (EOFError, gzip.BadGzipFile, zlib.error)
_PARQUET_BATCH_ROWS = 1024


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


def iter_jsonl(path: Path, stem: str, cfg: CorpusConfig, stats: ReadStats) -> Iterator[Item]:
    """The documents of a JSON Lines file (gzipped when its name ends in .gz), one per line."""
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
) -> Item | None:
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
    result = record_to_document(record, cfg, f"{path.name}:{line_no}", stem)
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


def iter_parquet(path: Path, stem: str, cfg: CorpusConfig, stats: ReadStats) -> Iterator[Item]:
    """The documents of a Parquet file, one per row; only the columns used are read."""
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
                item = use_record(record, cfg, stats, f"{path}:{row}", f"{path.name}:{row}", stem)
                if item is not None:
                    yield item
    except (pa.ArrowException, OSError) as e:
        raise UserError(f"{path}: Parquet read failed after row {row}: {e}") from None


# ---------------------------------------------------------------------------------------------
# Plain text


def iter_txt(path: Path, base: Path, stem: str, stats: ReadStats) -> Iterator[Item]:
    """A .txt file is one document; its id is its path relative to ``base`` (the glob's base directory)."""
    try:
        data = path.read_bytes()
        if path.name.lower().endswith(".gz"):
            data = gzip.decompress(data)
    except (gzip.BadGzipFile, EOFError, zlib.error) as e:
        raise UserError(f"{path}: is not a readable gzip file: {e}") from None
    except OSError as e:
        raise UserError(f"{path}: cannot be read: {e}") from None
    stats.read += 1
    if data.startswith(_UTF8_BOM):
        data = data[len(_UTF8_BOM) :]
    text, replaced = decode_utf8(data)
    if not text or text.isspace():
        stats.skip("empty", str(path))
        return
    yield Document(id=os.path.relpath(path, base), text=text, source=stem), replaced
