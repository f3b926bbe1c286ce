"""Pack tokenized documents into fixed-length rows (concatenate, then split; nothing dropped).

Each document becomes ``[bos] + ids + [eos]`` (as configured). The pieces are written back to
back into rows of ``seq_len`` tokens; a document that does not fit in the rest of a row
continues at the start of the next row as a new segment. Only the last row has padding.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np

from datarater.data.documents import Document
from datarater.data.tokenizer import Tokenizer


@dataclass
class PackedSequences:
    """Packed rows of one split and the documents in them.

    ``segment_ids`` number the document pieces of a row 1, 2, …; 0 is padding. ``positions``
    restart at 0 for every piece. ``row_docs[row_doc_start[i]:row_doc_start[i + 1]]`` are the
    indices into ``doc_ids`` of the documents in row ``i``, in order: the ``k``-th of them is the
    segment with id ``k + 1``. ``ids`` are stable sequence ids ``"{split}-{row:08d}"``.
    """

    tokens: np.ndarray  # int32 [n, seq_len]
    segment_ids: np.ndarray  # int32 [n, seq_len]
    positions: np.ndarray  # int32 [n, seq_len]
    doc_ids: list[str]
    sources: list[str]
    row_doc_start: np.ndarray  # int64 [n + 1]
    row_docs: np.ndarray  # int64
    ids: np.ndarray  # str [n]
    pad_id: int = 0
    labels: list[str] = field(default_factory=list)  # per document: corruption label, "" if unknown
    _doc_keys: tuple | None = field(default=None, repr=False, compare=False)

    def __len__(self) -> int:
        return int(self.tokens.shape[0])

    @property
    def seq_len(self) -> int:
        return int(self.tokens.shape[1])

    def row_doc_indices(self, i: int) -> np.ndarray:
        """Indices into ``doc_ids`` of the documents with tokens in row ``i``, in order."""
        return self.row_docs[self.row_doc_start[i] : self.row_doc_start[i + 1]]

    def row_doc_ids(self, i: int) -> list[str]:
        return [self.doc_ids[j] for j in self.row_doc_indices(i)]

    def row_sources(self, i: int) -> list[str]:
        """The source of each document piece in row ``i`` (parallel to `row_doc_ids`)."""
        return [self.sources[j] for j in self.row_doc_indices(i)]

    def num_tokens(self) -> int:
        """Non-padding tokens."""
        return int(np.count_nonzero(self.segment_ids))

    def source_of_row(self, i: int) -> str:
        """The source with most tokens in row ``i`` (the first such one on ties)."""
        return self._majority(self.sources, i)

    def label_of_row(self, i: int) -> str:
        """The document label with most tokens in row ``i`` ("" when documents carry none)."""
        return self._majority(self.labels, i) if self.labels else ""

    def token_share(self, docs: np.ndarray) -> np.ndarray:
        """``float [n]``: per row, the share of its non-padding tokens from the documents marked in
        ``docs`` (bool per document); 0 for a row without tokens."""
        seg = self.segment_ids.astype(np.int64)
        valid = seg > 0
        # the k-th document of row i is segment k + 1
        index = np.where(valid, self.row_doc_start[:-1, None] + seg - 1, 0)
        if not self.row_docs.size:
            return np.zeros(len(self))
        marked = valid & np.asarray(docs, dtype=bool)[self.row_docs[index]]
        count = valid.sum(axis=1)
        return np.where(count > 0, marked.sum(axis=1) / np.maximum(count, 1), 0.0)

    def token_keys(self, index: np.ndarray) -> dict[str, np.ndarray]:
        """``int64 [len(index), seq_len]`` per token of rows ``index``: the key (`datarater.data.keys`)
        of its document, source and label; 0 on padding. A streamed row carries the same fields."""
        if self._doc_keys is None:
            from datarater.data import keys

            self._doc_keys = (keys.keys(self.doc_ids), keys.keys(self.sources, remember=True),
                              keys.keys(self.labels, remember=True) if self.labels else np.zeros(len(self.doc_ids), np.int64))
            self._doc_keys[2][[not lab for lab in self.labels]] = 0
        index = np.asarray(index, dtype=np.int64)
        seg = self.segment_ids[index].astype(np.int64)
        valid = seg > 0
        doc = self.row_docs[np.where(valid, self.row_doc_start[index][:, None] + seg - 1, 0)] if self.row_docs.size else seg
        names = ("doc_key", "source_key", "label_key")
        return {n: np.where(valid, k[doc], 0).astype(np.int64) for n, k in zip(names, self._doc_keys, strict=True)}

    def _majority(self, per_doc: list[str], i: int) -> str:
        values = [per_doc[j] for j in self.row_doc_indices(i)]
        per_segment = np.bincount(self.segment_ids[i], minlength=len(values) + 1)[1:]
        totals: Counter[str] = Counter()
        for value, n in zip(values, per_segment, strict=True):
            totals[value] += int(n)
        return max(totals, key=lambda s: totals[s])  # max keeps the first maximum


def pack_documents(
    docs: Iterable[tuple[Document, np.ndarray]],
    seq_len: int,
    tokenizer: Tokenizer,
    split: str,
    add_bos: bool,
    add_eos: bool,
) -> PackedSequences:
    """Greedy concatenate-then-split packing of ``docs`` (document, token ids) in input order."""
    if seq_len < 1:
        raise ValueError(f"seq_len must be >= 1, got {seq_len}")
    doc_ids: list[str] = []
    sources: list[str] = []
    labels: list[str] = []
    pieces: list[np.ndarray] = []
    for doc, ids in docs:
        doc_ids.append(doc.id)
        sources.append(doc.source)
        labels.append(getattr(doc, "label", ""))
        pieces.append(np.asarray(ids, dtype=np.int32).reshape(-1))
    flat, doc_of_token = _concatenate(pieces, tokenizer, add_bos, add_eos)
    n_rows = -(-flat.size // seq_len)
    pad = n_rows * seq_len - flat.size
    tokens = np.concatenate([flat, np.full(pad, tokenizer.pad_id, np.int32)]).reshape(n_rows, seq_len)
    doc_2d = np.concatenate([doc_of_token, np.full(pad, -1, np.int32)]).reshape(n_rows, seq_len)
    segment_ids, positions, starts = _segments(doc_2d)
    counts = starts.sum(axis=1, dtype=np.int64)
    return PackedSequences(
        tokens=tokens,
        segment_ids=segment_ids,
        positions=positions,
        doc_ids=doc_ids,
        sources=sources,
        row_doc_start=np.concatenate([[0], np.cumsum(counts)]).astype(np.int64),
        row_docs=doc_2d[starts].astype(np.int64),
        ids=np.array([f"{split}-{r:08d}" for r in range(n_rows)], dtype=str),
        pad_id=int(tokenizer.pad_id),
        labels=labels if any(labels) else [],
    )


def concat_packed(parts: list[PackedSequences]) -> PackedSequences:
    """The rows of ``parts`` one after another, as one split (ids renumbered in the first's split)."""
    if not parts:
        raise ValueError("concat_packed needs at least one part")
    n_rows = sum(len(p) for p in parts)
    doc_offset = np.cumsum([0] + [len(p.doc_ids) for p in parts])  # a part's documents follow the earlier parts'
    piece_offset = np.cumsum([0] + [len(p.row_docs) for p in parts])  # and so do its rows' entries in row_docs
    split = str(parts[0].ids[0]).rsplit("-", 1)[0] if len(parts[0]) else "rows"
    labelled = any(p.labels for p in parts)
    return PackedSequences(
        tokens=np.concatenate([p.tokens for p in parts]),
        segment_ids=np.concatenate([p.segment_ids for p in parts]),
        positions=np.concatenate([p.positions for p in parts]),
        doc_ids=[d for p in parts for d in p.doc_ids],
        sources=[x for p in parts for x in p.sources],
        row_doc_start=np.concatenate([[0]] + [p.row_doc_start[1:] + o for p, o in zip(parts, piece_offset, strict=False)]
                                     ).astype(np.int64),
        row_docs=np.concatenate([p.row_docs + o for p, o in zip(parts, doc_offset, strict=False)]).astype(np.int64),
        ids=np.array([f"{split}-{r:08d}" for r in range(n_rows)], dtype=str),
        pad_id=parts[0].pad_id,
        labels=[x for p in parts for x in (p.labels or [""] * len(p.doc_ids))] if labelled else [],
    )


def _concatenate(
    pieces: list[np.ndarray], tokenizer: Tokenizer, add_bos: bool, add_eos: bool
) -> tuple[np.ndarray, np.ndarray]:
    """One flat token stream with bos/eos around each document, and each token's document index."""
    body = np.array([p.size for p in pieces], dtype=np.int64)
    lengths = body + int(add_bos) + int(add_eos)
    ends = np.cumsum(lengths)
    starts = ends - lengths
    flat = np.empty(int(lengths.sum()), dtype=np.int32)
    is_body = np.ones(flat.size, dtype=bool)
    nonempty = lengths > 0
    if add_bos:
        flat[starts[nonempty]] = tokenizer.bos_id
        is_body[starts[nonempty]] = False
    if add_eos:
        flat[ends[nonempty] - 1] = tokenizer.eos_id
        is_body[ends[nonempty] - 1] = False
    if pieces:
        flat[is_body] = np.concatenate(pieces)
    doc_of_token = np.repeat(np.arange(len(pieces), dtype=np.int32), lengths)
    return flat, doc_of_token


def _segments(doc_2d: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Segment ids, positions and segment-start mask from each token's document (-1 = padding)."""
    valid = doc_2d >= 0
    starts = np.ones_like(valid)
    starts[:, 1:] = doc_2d[:, 1:] != doc_2d[:, :-1]
    starts &= valid
    segment_ids = np.cumsum(starts, axis=1, dtype=np.int32) * valid
    cols = np.broadcast_to(np.arange(doc_2d.shape[1], dtype=np.int32), doc_2d.shape)
    start_col = np.maximum.accumulate(np.where(starts, cols, 0), axis=1)
    positions = ((cols - start_col) * valid).astype(np.int32)
    return segment_ids.astype(np.int32), positions, starts


def unpack(packed: PackedSequences) -> list[np.ndarray]:
    """Each document's token stream (with its bos/eos), reassembled across rows via ``row_docs``."""
    if not packed.doc_ids:
        return []
    seg = packed.segment_ids.astype(np.int64)
    valid = seg > 0
    index = packed.row_doc_start[:-1, None] + seg - 1
    doc_of_token = packed.row_docs[index[valid]]  # row-major order = packing order
    counts = np.bincount(doc_of_token, minlength=len(packed.doc_ids))
    return np.split(packed.tokens[valid], np.cumsum(counts)[:-1])
