"""Turn one record (a mapping of fields) into a `Document`, or name the reason it is skipped.

Every reader (JSON Lines, Parquet, TFDS) goes through `record_to_document`; `decode_utf8` is
the one UTF-8 decoding they all use.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from datarater.config import CorpusConfig
from datarater.data.documents import Document, ReadStats

# A record's ground-truth quality label, read when present (the embedded corpus has one).
LABEL_FIELD = "label"

# A produced record: the document and whether invalid UTF-8 had to be replaced in it.
Item = tuple[Document, bool]


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


def record_to_document(
    record: Mapping[str, Any], cfg: CorpusConfig, default_id: str, default_source: str
) -> Item | str:
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


def use_record(
    record: Mapping[str, Any], cfg: CorpusConfig, stats: ReadStats, where: str, default_id: str, default_source: str
) -> Item | None:
    """Count one record as read; its document, or None after counting the skip at ``where``."""
    stats.read += 1
    result = record_to_document(record, cfg, default_id, default_source)
    if isinstance(result, str):
        stats.skip(result, where)
        return None
    return result
