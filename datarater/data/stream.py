"""Stream a corpus through Grain: this process's input shards, split by id, tokenized, packed into rows, window-shuffled; resumable.

    shards of this process (files, or ranges of a TFDS split), in a seeded order per epoch
      -> InterleaveIterDataset over ``corpus.cycle_length`` shards at a time
      -> documents of the wanted split (the id hash of `datarater.data.split`) and selection
      -> tokens with bos/eos, and each token's document / source / label key (`datarater.data.keys`)
      -> Grain's ConcatThenSplitIterDataset: rows of ``seq_len`` (concatenate, then split)
      -> positions restarting at 0 in every document piece, as `datarater.data.packing` does
      -> WindowShuffleIterDataset over ``corpus.shuffle_window`` rows -> batches

Shuffling is the ecosystem's two-level one (Grain, MaxText, Levanter): the order of input shards
is a seeded permutation per epoch, ``cycle_length`` shards are read interleaved, and packed rows
are shuffled in a bounded window. Nothing holds more than the window, so host memory does not
grow with the corpus, and start-up reads nothing but the file listing. A process reads only its
own shards (``k % process_count``); with fewer shards than processes every process reads every
shard and keeps the documents ``k % process_count`` of each. Every stage is checkpointable:
`datarater.data.pipeline.iterator_state` gives a JSON state that resumes the stream exactly,
reopening each open shard at the record it reached (a file is re-read, not re-parsed, up to there).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import grain
import numpy as np

from datarater.config import CorpusConfig, DataConfig
from datarater.data import keys
from datarater.data.documents import Document, ReadStats
from datarater.data.files import InputFile, list_files
from datarater.data.split import assign_split
from datarater.data.tokenizer import Tokenizer
from datarater.errors import UserError

TFDS_SHARD_RECORDS = 1 << 16  # records of a TFDS split per shard
KEY_FIELDS = ("doc_key", "source_key", "label_key")
_PACKED = ("tokens", *KEY_FIELDS)


@dataclass(frozen=True)
class Shard:
    """A unit of input: one file, or the records ``[start, stop)`` of a TFDS split. ``key`` names it
    (a file's path relative to its glob's base; ``<dataset>/<split>/<start>-<stop>``)."""

    key: str
    file: InputFile | None = None
    start: int = 0
    stop: int = 0


def list_shards(corpus: CorpusConfig, on_build: Callable[[str], None] | None = None) -> list[Shard]:
    """Every shard of the corpus, in a fixed order (files sorted by path; TFDS ranges in order)."""
    if corpus.kind == "files":
        if not corpus.paths:
            raise UserError("config key 'corpus.paths' is empty: give files or globs, e.g. corpus.paths=[data/*.jsonl]")
        return [Shard(f.rel, f) for f in list_files(corpus.paths)]
    if corpus.kind == "tfds":
        from datarater.data.tfds_source import open_tfds

        cfg, source = open_tfds(corpus, on_build)
        n = len(source)
        name = cfg.tfds_name.replace(":", "-")
        return [Shard(f"{name}/{cfg.tfds_split}/{a:09d}-{min(a + TFDS_SHARD_RECORDS, n):09d}", None, a,
                      min(a + TFDS_SHARD_RECORDS, n)) for a in range(0, n, TFDS_SHARD_RECORDS)]
    raise UserError(f"config key 'corpus.kind': must be 'files' or 'tfds', got '{corpus.kind}'")


def input_bytes(corpus: CorpusConfig, shards: list[Shard]) -> int:
    """The corpus's size on disk (compressed), for ``corpus.reader=auto``; URLs count as large."""
    if corpus.kind == "tfds":
        from datarater.data.tfds_source import open_tfds

        _, source = open_tfds(corpus)
        return int(getattr(source.dataset_info, "dataset_size", 0) or 0)
    total = 0
    for s in shards:
        if "://" in s.file.path:
            return 1 << 62
        total += os.path.getsize(s.file.path)
    return total


def wants_stream(corpus: CorpusConfig, shards: list[Shard] | None = None) -> bool:
    """Whether ``corpus.reader`` (memory | stream | auto) asks for the streaming path."""
    if corpus.reader in ("memory", "stream"):
        return corpus.reader == "stream"
    shards = shards if shards is not None else list_shards(corpus)
    return input_bytes(corpus, shards) > corpus.stream_above_mb * (1 << 20)


# ---------------------------------------------------------------------------------------------
# One shard's documents, resumable at any record


class _ShardIterator(grain.DatasetIterator):
    def __init__(self, shard: Shard, corpus: CorpusConfig, stats: ReadStats, stride: tuple[int, int]):
        super().__init__()
        self.shard, self.corpus, self.stats, self.stride = shard, corpus, stats, stride
        self.pos = shard.start if shard.file is None else 0
        self._items = None

    def _open(self):
        if self.shard.file is not None:
            return self.shard.file.read(self.corpus, self.stats, self.pos)
        from datarater.data.tfds_source import iter_tfds_range, open_tfds

        cfg, source = open_tfds(self.corpus)
        return iter_tfds_range(source, cfg, self.stats, self.pos, self.shard.stop)

    def __next__(self) -> Document:
        if self._items is None:
            self._items = self._open()
        index, count = self.stride
        while True:
            pos, (doc, replaced) = next(self._items)  # StopIteration ends the shard
            self.pos = pos
            if count > 1 and pos % count != index:
                continue
            self.stats.used += 1
            self.stats.utf8_replaced += int(replaced)
            return doc

    def get_state(self) -> dict[str, Any]:
        return {"pos": int(self.pos)}

    def set_state(self, state: dict[str, Any]) -> None:
        self.pos, self._items = int(state["pos"]), None


class ShardDocuments(grain.IterDataset):
    """The documents of one shard (`Document`s), counted in ``stats``."""

    def __init__(self, shard: Shard, corpus: CorpusConfig, stats: ReadStats, stride: tuple[int, int] = (0, 1)):
        super().__init__()
        self.shard, self.corpus, self.stats, self.stride = shard, corpus, stats, stride

    def __iter__(self) -> _ShardIterator:
        return _ShardIterator(self.shard, self.corpus, self.stats, self.stride)


# ---------------------------------------------------------------------------------------------
# The pipeline


@dataclass(frozen=True)
class Selection:
    """Which documents a stream keeps: those of ``split`` (the id hash), and, when set, only those
    ``keep`` accepts (a target selection), never those ``exclude`` names (a target's texts)."""

    split: str
    keep: Callable[[Document], bool] | None = None
    exclude: Callable[[Document], bool] | None = None

    def __call__(self, doc: Document, corpus: CorpusConfig) -> bool:
        if self.split and assign_split(doc.id, corpus.heldout_fraction, corpus.validation_fraction,
                                       corpus.split_salt) != self.split:
            return False
        if self.keep is not None and not self.keep(doc):
            return False
        return not (self.exclude is not None and self.exclude(doc))


def process_shards(shards: list[Shard], process_index: int, process_count: int) -> tuple[list[Shard], tuple[int, int]]:
    """This process's shards and the document stride within them (see the module's docstring)."""
    if process_count <= 1:
        return shards, (0, 1)
    if len(shards) >= process_count:
        return shards[process_index::process_count], (0, 1)
    return shards, (process_index, process_count)


def document_stream(corpus: CorpusConfig, shards: list[Shard], select: Selection, stats: ReadStats,
                    seed: int | None = None, epochs: int | None = 1, cycle_length: int | None = None,
                    stride: tuple[int, int] = (0, 1)) -> grain.IterDataset:
    """The selected documents of ``shards``: in order (``seed=None``) or with the shard order a
    seeded permutation per epoch; ``epochs=None`` repeats forever; ``stride=(i, n)`` keeps the
    records ``i`` mod ``n`` of each shard."""
    if not shards:
        raise UserError("this process has no input shard to read")
    ds = grain.MapDataset.range(len(shards))
    if seed is not None:
        ds = ds.shuffle(seed=seed % 2**32)
    if epochs != 1:
        ds = ds.repeat(epochs)
    ds = ds.map(lambda i: ShardDocuments(shards[i], corpus, stats, stride))
    cycle = max(1, min(cycle_length or corpus.cycle_length, len(shards)))
    docs = grain.experimental.InterleaveIterDataset(ds, cycle_length=cycle).filter(lambda d: select(d, corpus))
    # a split or target keeps a small share of the documents by design: no warning about it
    quiet = grain.experimental.DatasetOptions(filter_warn_threshold_ratio=None)
    return grain.experimental.WithOptionsIterDataset(docs, quiet)


def tokenized(doc: Document, tokenizer: Tokenizer, add_bos: bool, add_eos: bool) -> dict[str, np.ndarray]:
    """A document's tokens (with bos/eos) and the document's, source's and label's key per token."""
    ids = tokenizer.encode(doc.text)
    parts = ([np.array([tokenizer.bos_id], np.int32)] if add_bos else []) + [ids.astype(np.int32)]
    parts += [np.array([tokenizer.eos_id], np.int32)] if add_eos else []
    tokens = np.concatenate(parts)
    n = tokens.size
    return {"tokens": tokens, "doc_key": np.full(n, keys.key(doc.id), np.int64),
            "source_key": np.full(n, keys.key(doc.source, remember=True), np.int64),
            "label_key": np.full(n, keys.key(doc.label, remember=True) if doc.label else 0, np.int64)}


def restart_positions(segment_ids: np.ndarray) -> np.ndarray:
    """Positions that restart at 0 in every segment of a row (0 on padding)."""
    seg = np.asarray(segment_ids)
    cols = np.arange(seg.shape[-1], dtype=np.int32)
    starts = np.ones(seg.shape, dtype=bool)
    starts[..., 1:] = seg[..., 1:] != seg[..., :-1]
    start_col = np.maximum.accumulate(np.where(starts, cols, 0), axis=-1)
    return ((cols - start_col) * (seg > 0)).astype(np.int32)


def _finish_row(row: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    seg = row["tokens_segment_ids"].astype(np.int32)
    out = {"tokens": row["tokens"].astype(np.int32), "segment_ids": seg, "positions": restart_positions(seg),
           "index": np.int64(-1)}
    for k in KEY_FIELDS:
        out[k] = np.where(seg > 0, row[k], 0).astype(np.int64)
    return out


def packed_rows(docs: grain.IterDataset, data: DataConfig, tokenizer: Tokenizer) -> grain.IterDataset:
    """Rows of ``data.seq_len`` tokens packed by Grain's concatenate-then-split, in our layout:
    ``tokens``, ``segment_ids``, ``positions`` (restarting per piece), ``index`` (-1: not a row of an
    in-memory split) and the per-token keys (`KEY_FIELDS`, 0 on padding)."""
    toks = docs.map(lambda d: tokenized(d, tokenizer, data.add_bos, data.add_eos))
    toks = toks.filter(lambda e: e["tokens"].size > int(data.add_bos) + int(data.add_eos))
    packed = grain.experimental.ConcatThenSplitIterDataset(toks, length_struct={k: data.seq_len for k in _PACKED})
    return packed.map(_finish_row)


def stack(rows: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    return {k: np.stack([r[k] for r in rows]) for k in rows[0]}


def train_stream(corpus: CorpusConfig, data: DataConfig, tokenizer: Tokenizer, select: Selection, batch_size: int,
                 seed: int, stats: ReadStats, process_index: int = 0, process_count: int = 1,
                 shards: list[Shard] | None = None) -> grain.IterDataset:
    """Infinite shuffled training batches of this process's share of the selected documents."""
    if corpus.max_documents:
        raise UserError("config key 'corpus.max_documents' caps the in-memory reader; with corpus.reader=stream "
                        "choose the files to read in corpus.paths instead")
    shards = shards if shards is not None else list_shards(corpus)
    mine, stride = process_shards(shards, process_index, process_count)
    docs = document_stream(corpus, mine, select, stats, seed=seed, epochs=None, stride=stride)
    rows = packed_rows(docs, data, tokenizer)
    if corpus.shuffle_window > 1:
        rows = grain.experimental.WindowShuffleIterDataset(rows, window_size=corpus.shuffle_window, seed=seed % 2**32)
    return rows.batch(batch_size, drop_remainder=True, batch_fn=stack)


def first_documents(corpus: CorpusConfig, select: Selection, budget: int, stats: ReadStats,
                    tokenizer: Tokenizer, shards: list[Shard] | None = None) -> list[tuple[Document, np.ndarray]]:
    """The first selected documents (tokenized, text dropped) that hold ``budget`` tokens (with
    bos / eos), with ``corpus.cycle_length``
    shards read interleaved from the front of the corpus, every process the same: the bounded
    evaluation sample of a streamed corpus (`datarater.data.streamed` reads the same one)."""
    shards = shards if shards is not None else list_shards(corpus)
    out = []
    for doc in document_stream(corpus, shards, select, stats):
        ids = tokenizer.encode(doc.text)
        if ids.size == 0:
            stats.drop_used("empty_after_tokenize", f"document {doc.id}")
            continue
        out.append((Document(doc.id, "", doc.source, doc.label), ids))
        budget -= ids.size + 2
        if budget <= 0:
            break
    return out


def sample_rows(corpus: CorpusConfig, data: DataConfig, tokenizer: Tokenizer, select: Selection, rows: int,
                seed: int, shards: list[Shard] | None = None) -> dict[str, np.ndarray]:
    """About ``rows`` packed rows from the front of a seeded stream (a calibration sample), as one batch dict."""
    shards = shards if shards is not None else list_shards(corpus)
    docs = document_stream(corpus, shards, select, ReadStats(), seed=seed, epochs=1)
    packed = packed_rows(docs, data, tokenizer)
    out = []
    for row in packed:
        out.append(row)
        if len(out) >= rows:
            break
    if not out:
        raise UserError(f"the corpus's {select.split or 'selected'} documents give no row to sample")
    return stack(out)
