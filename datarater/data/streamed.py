"""The splits and the target of a streamed corpus: what the streams select, and bounded evaluation samples.

The streaming counterpart of `datarater.data.target.read_with_target`, without reading the whole
corpus before step 0. Training (and the outer loss, for a target inside the corpus) are streams
of documents selected by id hash and target (`Selection`); the evaluation sets are the first
validation documents that fill ``corpus.eval_sequences`` rows, read with ``cycle_length`` shards interleaved
from the front of the corpus, and a selection target's validation documents among them. A target
of other files is read whole (target sets are small); since the corpus cannot be searched for
its texts before training, a training document with the text of a target document is dropped
from the stream and counted ("same_text_as_target") instead of refused.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from datarater.config import CorpusConfig
from datarater.config.groups import TargetConfig
from datarater.data.documents import Document, ReadStats
from datarater.data.split import assign_split
from datarater.data.stream import Selection, Shard, document_stream
from datarater.data.target import (
    Resolved,
    _check_selection,
    _matches,
    _read_target_files,
    _read_weighted_files,
    _text_key,
)
from datarater.data.tokenizer import Tokenizer
from datarater.errors import UserError


@dataclass
class Streamed:
    """What a program streams, and the evaluation samples it holds in memory."""

    shards: list[Shard]
    train: Selection  # the training stream
    outer: Selection | None  # the outer-loss stream; None when the target's documents are in memory
    resolved: Resolved  # splits["validation"]: the evaluation sample; target_heldout in memory for file targets


def _excluding(texts: set[bytes], stats: ReadStats) -> Callable[[Document], bool]:
    def exclude(doc: Document) -> bool:
        if _text_key(doc.text) in texts:
            stats.drop_used("same_text_as_target", f"document {doc.id}")
            return True
        return False

    return exclude


def resolve_streamed(corpus: CorpusConfig, tokenizer: Tokenizer, target: TargetConfig, shards: list[Shard],
                     stats: ReadStats, seq_len: int, prefix: str = "meta.target", outer: bool = True) -> Streamed:
    """Selections of the streams and the evaluation samples (see the module's docstring)."""
    budget = corpus.eval_sequences * seq_len  # tokens of the sample (with bos / eos)
    filled = 0
    sample: list[tuple[Document, object]] = []
    sources: Counter = Counter()
    labels: Counter = Counter()
    read = ReadStats()  # the sample's own read: the training stream counts the corpus in ``stats``
    for doc in document_stream(corpus, shards, Selection(""), read):
        sources[doc.source] += 1
        labels[doc.label] += 1
        split = assign_split(doc.id, corpus.heldout_fraction, corpus.validation_fraction, corpus.split_salt)
        if split != "validation":
            continue
        ids = tokenizer.encode(doc.text)
        if ids.size:
            sample.append((Document(doc.id, "", doc.source, doc.label), ids))
            filled += ids.size + 2
        if filled >= budget:
            break
    if not sample:
        raise UserError(f"the corpus's validation split has no documents ({read.summary()}); raise "
                        "corpus.validation_fraction or add documents (corpus.paths)")
    desc: dict = {"mode": target.mode, "what": target.describe(), "streamed": True,
                  "evaluation_sample": f"the first {len(sample)} validation documents ({filled} tokens)"}
    train = Selection("train")
    held: list = []
    val: list = []
    parts: tuple = ()  # a weighted target's (weights, heldout_part, validation_part)
    outer_sel: Selection | None = Selection("heldout") if outer else None
    if target.mode == "selection":
        _check_selection(target, prefix, sources, labels)  # on the documents read for the sample
        val = [(d, ids) for d, ids in sample if _matches(d, target)]
        if not val:
            raise UserError(f"config key '{prefix}': {target.describe()} selects none of the first {len(sample)} "
                            "validation documents; raise corpus.eval_sequences or select more")
        outer_sel = Selection("heldout", keep=lambda d: _matches(d, target)) if outer else None
        desc.update(sources=list(target.sources), labels=list(target.labels))
    elif target.mode == "files":
        texts: set[bytes] = set()
        if target.weights:  # each entry's documents, and which entry each is of
            w = _read_weighted_files({"validation": sample}, corpus, tokenizer, target, prefix, set(), desc, texts)
            held, val, parts = w.target_heldout, w.target_validation, (w.weights, w.heldout_part, w.validation_part)
        else:
            held, val = _read_target_files(corpus, tokenizer, target, prefix, set(), texts)
            desc.update(paths=list(target.paths), tfds_name=target.tfds_name, validation_fraction=target.validation_fraction)
        train = Selection("train", exclude=_excluding(texts, stats))
        outer_sel = None
    resolved = Resolved({"validation": sample}, held, val, desc, *parts)
    desc["documents"] = {"outer_loss": "streamed" if outer_sel else len(held), "validation": len(val)}
    return Streamed(shards, train, outer_sel, resolved)
