"""Read one file of a known format (JSON Lines, Parquet, plain text) into documents, from any position.

Files are local paths or fsspec URLs; JSON Lines and text may be gzipped or zstandard-compressed
(`datarater.data.openers`). A file that is mostly not JSON Lines, or has the text field in no
record, is a `UserError`; single bad lines are counted skips in `ReadStats`. Every reader yields
``(position, item)``: the position is the count of raw records (lines, rows) consumed up to and
including the item, and ``start=position`` resumes right after it without parsing what came before.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field

from datarater.config import CorpusConfig
from datarater.data.documents import Document, ReadStats
from datarater.data.openers import TruncatedStream, is_url, iter_lines, open_raw, read_all
from datarater.data.records import LABEL_FIELD, Item, decode_utf8, record_to_document, use_record
from datarater.errors import UserError

_UTF8_BOM = b"\xef\xbb\xbf"
_PARQUET_BATCH_ROWS = 1024
Positioned = tuple[int, Item]


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


def iter_jsonl(path: str, stem: str, cfg: CorpusConfig, stats: ReadStats, start: int = 0) -> Iterator[Positioned]:
    """The documents of a JSON Lines file (gzip or zstandard when its name ends in .gz / .zst), one per
    line, each with its line number; the first ``start`` lines are skipped unread."""
    tally = _FileTally()
    line_no = 0
    lines = iter_lines(path)
    while True:
        try:
            raw = next(lines, None)
        except TruncatedStream as e:
            _truncated(path, line_no, e, stats, cfg)
            break
        if raw is None:
            break
        line_no += 1
        if line_no <= start:
            continue
        if line_no == 1 and raw.startswith(_UTF8_BOM):
            raw = raw[len(_UTF8_BOM) :]
        if not raw.strip():
            continue
        item = _parse_line(raw, path, line_no, stem, cfg, stats, tally)
        if item is not None:
            tally.used += 1
            yield line_no, item
    _check_file(path, cfg, tally)


def _parse_line(
    raw: bytes, path: str, line_no: int, stem: str, cfg: CorpusConfig, stats: ReadStats, tally: _FileTally
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
    result = record_to_document(record, cfg, f"{os.path.basename(path)}:{line_no}", stem)
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


def _check_file(path: str, cfg: CorpusConfig, tally: _FileTally) -> None:
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


def _truncated(path: str, line_no: int, e: TruncatedStream, stats: ReadStats, cfg: CorpusConfig) -> None:
    """A compressed file that ends mid-stream: an error naming the file and line, or with
    ``corpus.allow_truncated`` a warning counting the lines lost (``truncated_stream`` in
    `ReadStats.lost`: the incomplete line at the cut; nothing after it is in the file to count)."""
    lost = int(e.partial_line)
    if not cfg.allow_truncated:
        raise UserError(
            f"{path}: {e} after line {line_no}: the file is truncated (a download or copy cut short); replace it, "
            f"or set corpus.allow_truncated=true to keep its first {line_no} lines")
    stats.lost["truncated_stream"] += lost
    stats.truncated_files += 1
    stats.warn(
        "truncated_stream",
        f"{path}: {e} after line {line_no}: kept lines 1-{line_no}, lost {lost} incomplete line(s) at the cut; "
        "whatever followed it is not in the file (corpus.allow_truncated=true)",
    )


# ---------------------------------------------------------------------------------------------
# Parquet


def _columns_used(path: str, columns: list[str], cfg: CorpusConfig) -> list[str]:
    """The columns of a table that documents are made of; `UserError` if the text column is missing."""
    if cfg.text_field not in columns:
        raise UserError(
            f"{path}: has no column '{cfg.text_field}'; columns present: {columns}; set corpus.text_field=<one of them>"
        )
    return [c for c in dict.fromkeys((cfg.text_field, cfg.id_field, cfg.source_field, LABEL_FIELD)) if c in columns]


def _batch_rows(batch, wanted: list[str], row: int, start: int, path: str, stem: str, cfg: CorpusConfig,
                stats: ReadStats) -> Iterator[Positioned]:
    """The documents of one record batch whose rows are numbered from ``row + 1``, those after ``start``."""
    name = os.path.basename(path)
    values = {c: batch.column(c).to_pylist() for c in wanted}
    for i in range(batch.num_rows):
        n = row + i + 1
        if n <= start:
            continue
        item = use_record({c: values[c][i] for c in wanted}, cfg, stats, f"{path}:{n}", f"{name}:{n}", stem)
        if item is not None:
            yield n, item


def iter_parquet(path: str, stem: str, cfg: CorpusConfig, stats: ReadStats, start: int = 0) -> Iterator[Positioned]:
    """The documents of a Parquet file, one per row (numbered from 1); only the columns used are
    read, and the row groups before row ``start`` are not read at all."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    with open_raw(path) as raw:
        try:
            pf = pq.ParquetFile(raw)
        except (pa.ArrowException, OSError) as e:
            raise UserError(f"{path}: cannot be read as Parquet: {e}") from None
        wanted = _columns_used(path, pf.schema_arrow.names, cfg)
        row = 0
        try:
            for group in range(pf.num_row_groups):
                size = pf.metadata.row_group(group).num_rows
                if row + size <= start:
                    row += size
                    continue
                for batch in pf.iter_batches(batch_size=_PARQUET_BATCH_ROWS, columns=wanted, row_groups=[group]):
                    yield from _batch_rows(batch, wanted, row, start, path, stem, cfg, stats)
                    row += batch.num_rows
        except (pa.ArrowException, OSError) as e:
            raise UserError(f"{path}: Parquet read failed after row {row}: {e}") from None


def iter_arrow(path: str, stem: str, cfg: CorpusConfig, stats: ReadStats, start: int = 0) -> Iterator[Positioned]:
    """The documents of an Arrow IPC file, one per row (numbered from 1): the stream format that a
    Hugging Face ``datasets.save_to_disk`` folder holds (``data-00000-of-00001.arrow``), or the
    file format. Only the columns used are converted."""
    import pyarrow as pa

    if is_url(path):
        with open_raw(path) as raw:
            data = raw.read()
    else:
        try:
            data = pa.memory_map(path, "r")  # mapped, not read: memory does not grow with the shard
        except (pa.ArrowException, OSError) as e:
            raise UserError(f"{path}: cannot be opened: {e}") from None
    try:
        reader = pa.ipc.open_stream(data)
        batches = iter(reader)
        schema = reader.schema
    except (pa.ArrowException, OSError):
        try:
            if hasattr(data, "seek"):
                data.seek(0)
            reader = pa.ipc.open_file(data)
        except (pa.ArrowException, OSError) as e:
            raise UserError(f"{path}: cannot be read as an Arrow IPC stream or file: {e}") from None
        batches = (reader.get_batch(i) for i in range(reader.num_record_batches))
        schema = reader.schema
    wanted = _columns_used(path, schema.names, cfg)
    row = 0
    try:
        for batch in batches:
            if row + batch.num_rows > start:
                yield from _batch_rows(batch, wanted, row, start, path, stem, cfg, stats)
            row += batch.num_rows
    except (pa.ArrowException, OSError) as e:
        raise UserError(f"{path}: Arrow read failed after row {row}: {e}") from None


# ---------------------------------------------------------------------------------------------
# Plain text


def iter_txt(path: str, doc_id: str, stem: str, stats: ReadStats, start: int = 0) -> Iterator[Positioned]:
    """A .txt file (perhaps .gz / .zst) is one document, with id ``doc_id``."""
    if start >= 1:
        return
    try:
        data = read_all(path)
    except TruncatedStream as e:
        raise UserError(f"{path}: is not a readable compressed file: {e}") from None
    stats.read += 1
    if data.startswith(_UTF8_BOM):
        data = data[len(_UTF8_BOM) :]
    text, replaced = decode_utf8(data)
    if not text or text.isspace():
        stats.skip("empty", str(path))
        return
    yield 1, (Document(id=doc_id, text=text, source=stem), replaced)
