"""Read a corpus once, split it by document id, tokenize and pack each requested split."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from datarater.config import CorpusConfig, DataConfig
from datarater.data.documents import Document, ReadStats
from datarater.data.packing import PackedSequences, pack_documents
from datarater.data.sources import iter_documents
from datarater.data.split import SPLITS, assign_split
from datarater.data.tokenizer import Tokenizer
from datarater.errors import UserError

_FRACTION_HINT = {
    "train": "lower corpus.heldout_fraction / corpus.validation_fraction",
    "heldout": "raise corpus.heldout_fraction",
    "validation": "raise corpus.validation_fraction",
}


Tokenized = list[tuple[Document, np.ndarray]]


def read_split_documents(
    corpus: CorpusConfig,
    tokenizer: Tokenizer,
    splits: Sequence[str],
    stats: ReadStats | None = None,
    on_build: Callable[[str], None] | None = None,
    seen: Callable[[Document], None] | None = None,
) -> dict[str, Tokenized]:
    """Tokenized documents of each split in ``splits`` (text dropped), in read order.

    Documents are assigned to splits by id (`assign_split`); only the requested splits are
    tokenized. Documents that tokenize to nothing are skipped as "empty_after_tokenize".
    ``seen`` is called with every document read, whatever its split (with its text), e.g. to
    check a target set against the whole corpus. ``on_build`` is told when the embedded corpus
    had to be built first (`iter_documents`).
    """
    unknown = [s for s in splits if s not in SPLITS]
    if unknown:
        raise ValueError(f"unknown split(s) {unknown}; expected some of {SPLITS}")
    stats = stats if stats is not None else ReadStats()
    buckets: dict[str, Tokenized] = {s: [] for s in splits}
    for doc in iter_documents(corpus, stats, on_build):
        if seen is not None:
            seen(doc)
        split = assign_split(doc.id, corpus.heldout_fraction, corpus.validation_fraction, corpus.split_salt)
        if split not in buckets:
            continue
        ids = tokenizer.encode(doc.text)
        if ids.size == 0:
            stats.drop_used("empty_after_tokenize", f"document {doc.id}")
            continue
        buckets[split].append((Document(doc.id, "", doc.source, doc.label), ids))
    for split, docs in buckets.items():
        if not docs:
            raise UserError(
                f"split '{split}' has no documents ({stats.summary()}); {_FRACTION_HINT[split]} "
                "or add documents (corpus.paths)"
            )
    return buckets


def pack_split(docs: Tokenized, data: DataConfig, tokenizer: Tokenizer, split: str) -> PackedSequences:
    return pack_documents(docs, data.seq_len, tokenizer, split, data.add_bos, data.add_eos)


def load_splits(
    corpus: CorpusConfig,
    data: DataConfig,
    tokenizer: Tokenizer,
    splits: Sequence[str] = ("train", "validation"),
    stats: ReadStats | None = None,
    on_build: Callable[[str], None] | None = None,
) -> dict[str, PackedSequences]:
    """Packed rows of each split in ``splits`` (`read_split_documents`, then packed in read
    order, which is deterministic for a given corpus); counts go into ``stats`` when given."""
    buckets = read_split_documents(corpus, tokenizer, splits, stats, on_build)
    return {split: pack_split(docs, data, tokenizer, split) for split, docs in buckets.items()}
