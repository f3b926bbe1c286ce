"""Scoring a corpus split with a curator: per sequence or per document (the mean of its chunks), and score statistics.

Rows are cut into shards of ``score.shard_size``; JAX process ``i`` of ``n`` scores the shards
``k`` with ``k % n == i``. A shard already on disk with the fingerprint of the same corpus rows
is not scored again, so an interrupted run is completed by starting it again. With
``score.unit=document`` each document's token stream (as packed: bos, tokens, eos) is cut into
``seq_len`` chunks, each scored alone, and the document gets the mean of its chunks' scores.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from datarater.curate.curators import Curator, score_rows
from datarater.data.packing import PackedSequences, unpack

QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)


# ---------------------------------------------------------------------------------------------
# Pure helpers


def document_chunks(docs: list[np.ndarray], seq_len: int, pad_id: int) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Rows of ``seq_len``-token chunks of each document, and the document index of each row.

    A chunk is one segment (id 1) with positions from 0, like a document piece in a packed row;
    the last chunk of a document is padded. An empty document has no chunk.
    """
    lengths = np.array([d.size for d in docs], dtype=np.int64)
    per_doc = -(-lengths // seq_len)
    n = int(per_doc.sum())
    tokens = np.full((n, seq_len), pad_id, np.int32)
    segment_ids = np.zeros((n, seq_len), np.int32)
    positions = np.zeros((n, seq_len), np.int32)
    owner = np.repeat(np.arange(len(docs), dtype=np.int64), per_doc)
    row = 0
    for d in docs:
        for start in range(0, d.size, seq_len):
            piece = d[start : start + seq_len]
            tokens[row, : piece.size] = piece
            segment_ids[row, : piece.size] = 1
            positions[row, : piece.size] = np.arange(piece.size)
            row += 1
    return {"tokens": tokens, "segment_ids": segment_ids, "positions": positions}, owner


def average_by_owner(chunk_scores: np.ndarray, owner: np.ndarray, count: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean chunk score of each of ``count`` owners (NaN for an owner without chunks) and chunk counts."""
    chunks = np.bincount(owner, minlength=count)
    sums = np.bincount(owner, weights=np.asarray(chunk_scores, np.float64), minlength=count)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(chunks > 0, sums / chunks, np.nan), chunks


def score_documents(curator: Curator, docs: list[np.ndarray], seq_len: int, pad_id: int,
                    batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    """``(score, chunks)`` of each document: the mean score of its ``seq_len`` chunks."""
    rows, owner = document_chunks(docs, seq_len, pad_id)
    chunk_scores = score_rows(curator, rows, batch_size) if len(owner) else np.zeros(0, np.float32)
    return average_by_owner(chunk_scores, owner, len(docs))


def distribution(scores: np.ndarray) -> dict[str, float]:
    """count, mean, std, min, quantiles and max of the finite scores (non-finite ones counted apart)."""
    scores = np.asarray(scores, np.float64)
    finite = scores[np.isfinite(scores)]
    out: dict[str, float] = {"count": int(scores.size), "non_finite": int(scores.size - finite.size)}
    if finite.size:
        out.update(mean=float(finite.mean()), std=float(finite.std()), min=float(finite.min()))
        out.update({f"q{int(q * 100):02d}": float(np.quantile(finite, q)) for q in QUANTILES})
        out["max"] = float(finite.max())
    return out


def distribution_by_source(scores: np.ndarray, sources: np.ndarray) -> dict[str, dict[str, float]]:
    sources = np.asarray(sources, dtype=object)
    out = {str(s): distribution(scores[sources == s]) for s in sorted(set(sources.tolist()))}
    out["all"] = distribution(scores)
    return out


def format_table(by_source: dict[str, dict[str, float]]) -> str:
    cols = ("count", "mean", "std", "q05", "q50", "q95")
    width = max([len("source")] + [len(s) for s in by_source])
    lines = [f"{'source':<{width}} " + " ".join(f"{c:>10}" for c in cols)]
    for source, d in by_source.items():
        cells = [f"{d.get(c, float('nan')):>10.4g}" if c != "count" else f"{d['count']:>10d}" for c in cols]
        lines.append(f"{source:<{width}} " + " ".join(cells))
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# What is scored


@dataclass
class RowSet:
    """The rows a score run writes, in order: ids, sources and the token arrays fingerprinted."""

    unit: str
    ids: list[str]
    sources: list[str]
    tokens: list[np.ndarray]
    doc_ids: list[list[str]] = field(default_factory=list)  # unit=sequence: documents in each row


def sequence_rowset(packed: PackedSequences) -> RowSet:
    n = len(packed)
    return RowSet("sequence", [str(i) for i in packed.ids], [packed.source_of_row(i) for i in range(n)],
                  list(packed.tokens), [packed.row_doc_ids(i) for i in range(n)])


def document_rowset(packed: PackedSequences) -> RowSet:
    return RowSet("document", list(packed.doc_ids), list(packed.sources), unpack(packed))


def score_shard(curator: Curator, packed: PackedSequences, rows: RowSet, a: int, b: int,
                batch_size: int) -> tuple[np.ndarray, np.ndarray | None]:
    """Scores of rows ``[a, b)`` (and, for documents, their chunk counts)."""
    if rows.unit == "sequence":
        from datarater.data.pipeline import gather_rows

        batch = gather_rows(packed, np.arange(a, b))
        return score_rows(curator, batch, batch_size), None
    return score_documents(curator, rows.tokens[a:b], packed.seq_len, packed.pad_id, batch_size)
