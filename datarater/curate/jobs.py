"""The per-input-file work of scoring and filtering: plain functions of picklable specs, the same on every engine.

`ScoreJob.run` scores every document of one input shard into its attribute file
(`datarater.curate.attributes`); `FilterJob.sketch` reads one attribute file's scores of the
filtered split into a `ScoreSketch`, and `FilterJob.apply` decides, for every document of one
input shard, keep or drop by the per-item rule (the coin is a hash of the document's id, its
occurrence in the file and ``filter.seed``), writing the kept documents (and, unchanged, those of
the other splits) to ``RUN/output/<relative path>`` compressed, with counts per source. Nothing
here depends on the order in which shards are processed or on which worker does them, so the
local and Ray engines (`datarater.curate.engines`) make the same files.
"""

from __future__ import annotations

import json
import os
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from datarater.config import CorpusConfig, DataConfig
from datarater.config.curate import CurateConfig, FilterConfig
from datarater.curate.attributes import attribute_path, input_identity, is_done, read_file_scores, write_attributes
from datarater.curate.rules import ScoreSketch, accept_probability, oversampled_size
from datarater.data.documents import ReadStats
from datarater.data.split import assign_split, split_unit
from datarater.data.stream import Shard, ShardDocuments, tokenized

_DOCS_PER_CALL = 2048  # documents chunked and scored together


def coin(doc_id: str, occurrence: int, seed: int) -> float:
    """The document's uniform number in [0, 1): fixed by its id, its occurrence in its file and the seed."""
    return split_unit(f"{doc_id}\x00{occurrence}", f"datarater-filter-{seed}")


def _split(doc_id: str, corpus: CorpusConfig) -> str:
    return assign_split(doc_id, corpus.heldout_fraction, corpus.validation_fraction, corpus.split_salt)


@dataclass
class ScoreJob:
    """Score whole documents (the mean of their ``seq_len`` chunks) of input shards into attribute files."""

    curate: CurateConfig
    corpus: CorpusConfig
    data: DataConfig
    root: str  # RUN/attributes
    curator_name: str
    settings: dict[str, Any]  # recorded in each file: what the scores depend on besides the input
    batch_size: int = 64
    sample: dict[str, np.ndarray] | None = None  # calibration rows for curators that fit
    force: bool = False  # rescore files another producer made (`attributes.is_done`)

    def make_curator(self):
        from datarater.curate.curators import make_curator
        from datarater.data.tokenizer import make_tokenizer

        tokenizer = make_tokenizer(self.data)
        curator = make_curator(self.curate, self.data, tokenizer, self.data.seq_len, corpus=self.corpus)
        if curator.needs_fit:
            curator.fit(self.sample)
        return curator

    def path(self, shard: Shard) -> Path:
        return attribute_path(self.root, self.curator_name, shard)

    def record(self, shard: Shard) -> dict[str, Any]:
        return {"input": input_identity(shard), **self.settings}

    def done(self, shard: Shard) -> bool:
        return is_done(self.path(shard), self.record(shard), self.force)

    def run(self, curator, shard: Shard) -> dict[str, Any]:
        """Scores one shard (unless its attribute file is complete); returns its counts."""
        from datarater.curate.score import score_documents
        from datarater.data.tokenizer import make_tokenizer

        if self.done(shard):
            return {"key": shard.key, "skipped": True}
        t0 = time.perf_counter()
        tokenizer = make_tokenizer(self.data)
        stats = ReadStats()
        ids, splits, scores, chunks = [], [], [], []
        pending: list = []

        def flush() -> None:
            if pending:
                s, c = score_documents(curator, [t for _, t in pending], self.data.seq_len, tokenizer.pad_id,
                                       self.batch_size)
                scores.append(s)
                chunks.append(c)
                pending.clear()

        for doc in ShardDocuments(shard, self.corpus, stats):
            toks = tokenized(doc, tokenizer, self.data.add_bos, self.data.add_eos)["tokens"]
            if toks.size <= int(self.data.add_bos) + int(self.data.add_eos):
                stats.drop_used("empty_after_tokenize", f"document {doc.id}")
                continue
            ids.append(doc.id)
            splits.append(_split(doc.id, self.corpus))
            pending.append((doc.id, toks))
            if len(pending) >= _DOCS_PER_CALL:
                flush()
        flush()
        values = np.concatenate(scores) if scores else np.zeros(0, np.float32)
        counts = np.concatenate(chunks) if chunks else np.zeros(0, np.int32)
        write_attributes(self.path(shard), ids, values, counts, splits, self.record(shard))
        return {"key": shard.key, "skipped": False, "documents": len(ids), "chunks": int(counts.sum()),
                "seconds": time.perf_counter() - t0, "read": stats.as_dict()}


@dataclass
class FilterJob:
    """The two passes of `datarater filter` over input shards and their attribute files."""

    corpus: CorpusConfig
    curate: CurateConfig
    filter: FilterConfig
    split: str
    attributes: str  # the directory holding <relative path>.parquet (or other tools' attribute files)
    output: str  # RUN/output
    column: str = "score"
    id_field: str = "id"
    sketch_dict: dict = field(default_factory=dict)  # the merged score distribution (pass 2)

    def attribute_file(self, shard: Shard) -> Path:
        root = Path(self.attributes)
        for suffix in (".parquet", ".jsonl", ".jsonl.gz", ".jsonl.zst"):
            p = root / (shard.key + suffix)
            if p.exists():
                return p
        from datarater.errors import UserError

        raise UserError(f"{root}: has no attribute file for input {shard.key!r} (looked for {shard.key}.parquet); "
                        "score every input file first (`datarater score score.unit=document`)")

    def sketch(self, shard: Shard) -> dict:
        """Pass 1: the sketch of the finite scores of the filtered split's documents in one shard."""
        ids, scores = read_file_scores(self.attribute_file(shard), self.column, self.id_field)
        mine = np.asarray([_split(i, self.corpus) == self.split for i in ids], dtype=bool)
        return ScoreSketch.of(scores[mine] if ids else scores).as_dict()

    def apply(self, shard: Shard) -> dict[str, Any]:
        """Pass 2: keep or drop each document of one shard; writes its output file, returns counts."""
        from datarater.errors import UserError

        sketch = ScoreSketch.from_dict(self.sketch_dict)
        n = self.filter.batch_size
        b = oversampled_size(n, self.curate.discard)
        ids, scores = read_file_scores(self.attribute_file(shard), self.column, self.id_field)
        prob = accept_probability(sketch.cdf(scores), n, b) if len(ids) else np.zeros(0)
        by_key: dict[tuple[str, int], tuple[float, float]] = {}
        seen: Counter[str] = Counter()
        for i, s, p in zip(ids, scores, prob, strict=True):
            by_key[(i, seen[i])] = (float(s), float(p))
            seen[i] += 1
        counts: dict[str, Any] = {"read": 0, "in_split": 0, "kept": 0, "dropped": 0, "unscored": 0,
                                  "passed_through": Counter()}
        per_source: dict[str, Counter] = defaultdict(Counter)
        occurrence: Counter[str] = Counter()
        stats = ReadStats()
        out = output_path(self.output, shard, self.filter.format)
        with OutputWriter(out, self.filter.format) as writer:
            for doc in ShardDocuments(shard, self.corpus, stats):
                counts["read"] += 1
                key = (doc.id, occurrence[doc.id])
                occurrence[doc.id] += 1
                doc_split = _split(doc.id, self.corpus)
                if doc_split != self.split:
                    counts["passed_through"][doc_split] += 1
                    writer.write({"id": doc.id, "source": doc.source, "text": doc.text, "score": None})
                    continue
                counts["in_split"] += 1
                src = per_source[doc.source]
                src["documents"] += 1
                s, p = by_key.get(key, (None, 0.0))  # None: not in the attribute file (e.g. empty after tokenizing)
                if s is None or not np.isfinite(s):
                    counts["unscored"] += 1
                    src["unscored"] += 1
                    continue
                if coin(doc.id, key[1], self.filter.seed) < p:
                    counts["kept"] += 1
                    src["kept"] += 1
                    writer.write({"id": doc.id, "source": doc.source, "text": doc.text, "score": s})
                else:
                    counts["dropped"] += 1
                    src["dropped"] += 1
        if counts["in_split"] and counts["unscored"] == counts["in_split"] and ids:
            raise UserError(f"{self.attribute_file(shard)}: none of its ids are documents of {shard.key!r}: "
                            "these attributes belong to other input files")
        counts["rejected"] = sum(stats.skipped.values())  # records read but unusable (bad lines)
        counts["passed_through"] = dict(counts["passed_through"])
        return {"key": shard.key, "output": str(out), **counts,
                "per_source": {k: dict(v) for k, v in per_source.items()}, "read_stats": stats.as_dict()}


def output_path(root: str, shard: Shard, fmt: str) -> Path:
    """``root/<relative input path, its suffix replaced>``: ``a/b.jsonl.gz`` -> ``a/b.jsonl.zst``."""
    from datarater.data.files import kind_and_stem

    key = shard.key
    if shard.file is not None:
        stem = kind_and_stem(key)[1]
        key = str(Path(key).parent / stem) if Path(key).parent != Path(".") else stem
    return Path(root) / (key + (".jsonl.zst" if fmt == "jsonl" else ".parquet"))


class OutputWriter:
    """``{id, source, text, score}`` records as zstandard JSON Lines or zstd Parquet, atomic on close."""

    _BATCH = 1024

    def __init__(self, path: Path, fmt: str):
        self.path, self.fmt = Path(path), fmt
        self.tmp = self.path.with_name(f".{self.path.name}.tmp-{os.getpid()}")
        self.rows: list[dict[str, Any]] = []
        self._parquet = None
        self._zst = None

    def __enter__(self) -> OutputWriter:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._raw = self.tmp.open("wb")
        if self.fmt == "jsonl":
            import zstandard

            self._zst = zstandard.ZstdCompressor(level=3).stream_writer(self._raw, closefd=False)
        return self

    def write(self, record: dict[str, Any]) -> None:
        if self._zst is not None:
            self._zst.write((json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8", "surrogatepass"))
            return
        self.rows.append(record)
        if len(self.rows) >= self._BATCH:
            self._flush()

    def _flush(self) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        schema = pa.schema([("id", pa.string()), ("source", pa.string()), ("text", pa.string()), ("score", pa.float64())])
        if self._parquet is None:
            self._parquet = pq.ParquetWriter(self._raw, schema, compression="zstd")
        if self.rows:
            self._parquet.write_table(pa.Table.from_pylist(self.rows, schema=schema))
            self.rows = []

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            try:
                if self._zst is not None:
                    self._zst.close()
                elif exc_type is None:
                    self._flush()
                if self._parquet is not None:
                    self._parquet.close()
            finally:
                self._raw.close()
            if exc_type is None:
                os.replace(self.tmp, self.path)
        except OSError as e:
            exc_type, exc = type(e), e
        if exc_type is not None:
            self.tmp.unlink(missing_ok=True)  # never a part-written output under the final name
        if isinstance(exc, OSError):
            from datarater.errors import UserError

            raise UserError(f"writing {self.path} failed: {exc.strerror or exc}; the part written was removed "
                            "(outputs finished before are kept): free space and rerun") from None
