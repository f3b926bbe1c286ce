"""The per-item acceptance rule applied to the documents of a corpus: scores per document, coins, the kept output.

Each document of the scored split (``score.split``) gets a score (the mean over its
sequence-length chunks: from ``curate.scores`` side files written with ``score.unit=document``,
or computed here), ``p`` = its CDF value among all of the split's document scores, and is kept
with probability `accept_probability(p, N, B)`, ``N = filter.batch_size``,
``B = ceil(N / (1 - curate.discard))``. The coin of each document is a hash of its id and
``filter.seed``, so the result does not depend on read order. Documents of the other splits pass
through unchanged (so a corpus filtered for training keeps the same held-out and validation
documents). The input corpus is never rewritten: the kept documents go to
``RUN_DIR/documents.{jsonl,parquet}`` with ``manifest.json``.
"""

from __future__ import annotations

import json
import os
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from datarater.config import FilterProgram
from datarater.curate.rules import accept_probability, empirical_cdf, oversampled_size
from datarater.data.split import assign_split, split_unit
from datarater.errors import UserError

_PARQUET_BATCH = 1024


def coin(doc_id: str, occurrence: int, seed: int) -> float:
    """The document's uniform number in [0, 1): fixed by its id, its occurrence and the seed."""
    return split_unit(f"{doc_id}\x00{occurrence}", f"datarater-filter-{seed}")


class DocumentWriter:
    """Writes ``{id, source, text, score}`` records as JSON Lines or Parquet, atomically on close."""

    def __init__(self, path: Path, fmt: str):
        self.path, self.fmt = path, fmt
        self.tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        self.rows: list[dict[str, Any]] = []
        self._jsonl = self.tmp.open("w", encoding="utf-8") if fmt == "jsonl" else None
        self._parquet = None

    def write(self, record: dict[str, Any]) -> None:
        if self._jsonl is not None:
            self._jsonl.write(json.dumps(record, ensure_ascii=False) + "\n")
            return
        self.rows.append(record)
        if len(self.rows) >= _PARQUET_BATCH:
            self._flush()

    def _flush(self) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        schema = pa.schema([("id", pa.string()), ("source", pa.string()), ("text", pa.string()),
                            ("score", pa.float64())])
        if self._parquet is None:
            self._parquet = pq.ParquetWriter(self.tmp, schema)
        if self.rows:
            self._parquet.write_table(pa.Table.from_pylist(self.rows, schema=schema))
            self.rows = []

    def close(self) -> Path:
        if self._jsonl is not None:
            self._jsonl.close()
        else:
            self._flush()
            self._parquet.close()
        os.replace(self.tmp, self.path)
        return self.path


def document_scores(prog: FilterProgram, tokenizer, stats, on_build=None) -> tuple[list[str], np.ndarray, dict[str, Any]]:
    """``(doc_ids, scores, info)`` of the documents of the scored split, in read order."""
    from datarater.curate.curators import calibration_sample, make_curator
    from datarater.curate.score import score_documents
    from datarater.curate.sidefiles import read_metadata, resolve_score_dir, scores_for_rows
    from datarater.data.corpus import load_splits
    from datarater.data.packing import unpack

    c, split = prog.curate, prog.score.split
    curator = None
    if c.scores:
        meta = read_metadata(resolve_score_dir(c.scores))
        if meta.get("unit") != "document":
            raise UserError(f"config key 'curate.scores': {c.scores} holds scores per {meta.get('unit')}; "
                            "filtering needs scores per document: run `datarater score score.unit=document`")
        if meta.get("split") != split:
            raise UserError(f"config key 'curate.scores': {c.scores} scored the '{meta.get('split')}' split, "
                            f"score.split is '{split}'")
    else:
        curator = make_curator(c, prog.data, tokenizer, prog.data.seq_len, corpus=prog.corpus)  # bad inputs stop here
    packed = load_splits(prog.corpus, prog.data, tokenizer, splits=(split,), stats=stats, on_build=on_build)[split]
    docs = unpack(packed)
    if curator is None:
        scores = scores_for_rows(c.scores, list(packed.doc_ids), docs, unit="document")
        info = {"scores_from": str(resolve_score_dir(c.scores)), "curator": meta.get("curator")}
    else:
        if curator.needs_fit:
            curator.fit(calibration_sample(packed, c.calibration_rows, c.seed))
        scores, _ = score_documents(curator, docs, packed.seq_len, packed.pad_id, prog.score.batch_size)
        info = {"scores_from": "computed", "curator": curator.name,
                "scoring_flops": curator.flops_per_sequence * sum(-(-d.size // packed.seq_len) for d in docs)}
    return list(packed.doc_ids), np.asarray(scores, np.float64), info


def filter_documents(prog: FilterProgram, tokenizer, doc_ids: list[str], scores: np.ndarray,
                     out: Path) -> dict[str, Any]:
    """One pass over the corpus applying the per-item rule to the documents of ``score.split``.

    Kept documents (and every document of the other splits, passed through with score None) go to
    ``out``; returns the counts: ``read``, ``in_split``, ``kept``, ``unscored``, ``passed_through``
    (per split), ``per_source`` and the ``stats`` of the read.
    """
    from datarater.data.documents import ReadStats
    from datarater.data.sources import iter_documents

    c, f, split = prog.curate, prog.filter, prog.score.split
    n, b = f.batch_size, oversampled_size(f.batch_size, c.discard)
    finite = np.isfinite(scores)
    cdf = empirical_cdf(scores[finite]) if finite.any() else (lambda x: np.zeros_like(np.asarray(x, float)))
    prob = np.where(finite, accept_probability(cdf(scores), n, b), 0.0)
    by_key: dict[tuple[str, int], tuple[float, float]] = {}
    seen: Counter[str] = Counter()
    for doc_id, s, p in zip(doc_ids, scores, prob, strict=True):
        by_key[(doc_id, seen[doc_id])] = (float(s), float(p))
        seen[doc_id] += 1

    counts: dict[str, Any] = {"read": 0, "in_split": 0, "kept": 0, "unscored": 0, "passed_through": Counter()}
    per_source: dict[str, Counter] = defaultdict(Counter)
    occurrence: Counter[str] = Counter()
    writer = DocumentWriter(out, f.format)
    stats = ReadStats()
    for doc in iter_documents(prog.corpus, stats):
        counts["read"] += 1
        doc_split = assign_split(doc.id, prog.corpus.heldout_fraction, prog.corpus.validation_fraction,
                                 prog.corpus.split_salt)
        if doc_split != split:
            counts["passed_through"][doc_split] += 1
            writer.write({"id": doc.id, "source": doc.source, "text": doc.text, "score": None})
            continue
        counts["in_split"] += 1
        per_source[doc.source]["documents"] += 1
        if tokenizer.encode(doc.text).size == 0:
            counts["unscored"] += 1  # nothing to score: counted, not kept
            per_source[doc.source]["unscored"] += 1
            continue
        key = (doc.id, occurrence[doc.id])
        occurrence[doc.id] += 1
        if key not in by_key:
            raise UserError(f"document '{doc.id}' was not scored: the corpus changed while filtering; run again")
        s, p = by_key[key]
        if not np.isfinite(s):
            counts["unscored"] += 1
            per_source[doc.source]["unscored"] += 1
            continue
        if coin(key[0], key[1], f.seed) < p:
            counts["kept"] += 1
            per_source[doc.source]["kept"] += 1
            writer.write({"id": doc.id, "source": doc.source, "text": doc.text, "score": s})
    writer.close()
    return {**counts, "per_source": per_source, "stats": stats}
