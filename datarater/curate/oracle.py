"""The oracle curator: scores each row by the share of its tokens from documents known to be good.

A document is good when it is clean (its label is ``clean``, or one of ``meta.target.labels``
when the target names labels) and, with a target by source, from one of the target's sources.
A row's score is the fraction of its non-padding tokens that come from good documents, so a
row of good text scores 1, a row of junk 0, and a row holding both falls between. It is the
ceiling of a comparison (``random`` is the floor): what a curator that knew the labels would do.
It needs labels (the embedded corpus has them) or a target by source.
"""

from __future__ import annotations

import numpy as np

from datarater.config.groups import TargetConfig
from datarater.data.packing import PackedSequences
from datarater.errors import UserError

CLEAN = "clean"


def good_documents(packed: PackedSequences, target: TargetConfig | None) -> np.ndarray:
    """bool per document of ``packed``: clean (or of the target's labels) and on the target's sources."""
    target = target or TargetConfig()
    n = len(packed.doc_ids)
    has_labels = bool(packed.labels) and any(packed.labels)
    if not has_labels and not target.sources:
        raise UserError("curate=oracle: the corpus's documents carry no labels and meta.target names no sources, "
                        "so nothing tells good from bad; use a labelled corpus (corpus=embedded) or set "
                        "meta.target.sources=[...]")
    good = np.ones(n, dtype=bool)
    if has_labels:
        wanted = set(target.labels) if target.labels else {CLEAN}
        good &= np.asarray([label in wanted for label in packed.labels], dtype=bool)
    if target.sources:
        good &= np.asarray([s in set(target.sources) for s in packed.sources], dtype=bool)
    return good


def row_good_fraction(packed: PackedSequences, good: np.ndarray) -> np.ndarray:
    """float32 per row: the share of its non-padding tokens from documents marked ``good``."""
    seg = packed.segment_ids
    n_rows = len(packed)
    starts = packed.row_doc_start
    # document index of every (row, segment k) pair: row_docs in order, segment k + 1
    doc_of = np.full((n_rows, int(seg.max()) + 1 if seg.size else 1), -1, dtype=np.int64)
    counts = np.diff(starts)
    rows = np.repeat(np.arange(n_rows), counts)
    ks = np.arange(len(packed.row_docs)) - np.repeat(starts[:-1], counts)
    doc_of[rows, ks + 1] = packed.row_docs
    docs = np.take_along_axis(doc_of, seg.astype(np.int64), axis=1)  # [n, L], -1 on padding
    is_token = seg > 0
    is_good = is_token & good[np.where(docs >= 0, docs, 0)]
    tokens = is_token.sum(axis=1)
    return np.where(tokens > 0, is_good.sum(axis=1) / np.maximum(tokens, 1), 0.0).astype(np.float32)


class OracleCurator:
    """Scores by the row's good-token fraction (`row_good_fraction`), looked up by ``index``."""

    name = "oracle"
    flops_per_sequence = 0.0  # a lookup: the labels are free here, which no real curator's are
    needs_fit = False

    def __init__(self, packed: PackedSequences, target: TargetConfig | None = None):
        self.good = good_documents(packed, target)
        self.scores = row_good_fraction(packed, self.good)

    def fit(self, sample: dict[str, np.ndarray]) -> None:
        del sample

    def score_batch(self, batch: dict[str, np.ndarray]) -> np.ndarray:
        if "index" not in batch:
            raise ValueError("the oracle scores rows of a known split: the batch needs its 'index'")
        return self.scores[np.asarray(batch["index"], dtype=np.int64)]
