"""The target set: which documents the outer loss and the target validation are measured on.

`read_with_target` reads the corpus once and resolves ``meta.target`` (`TargetConfig`) against
it: the heldout mode keeps the corpus's held-out split; a selection keeps the held-out and
validation documents whose source / label it names; files are read with the corpus's readers
and split by id. Every check of what a target selects (nothing selected, a source or label the
corpus does not have, target documents that are also in the corpus) raises `UserError` naming
the key before any compute. The training split never holds a target document: selections come
from the held-out and validation splits only, and target files that share a text with the
corpus are refused.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from datarater.config import CorpusConfig, DataConfig
from datarater.config.eval import is_group
from datarater.config.groups import TargetConfig
from datarater.data.corpus import Tokenized, pack_split, read_split_documents
from datarater.data.documents import Document, ReadStats
from datarater.data.packing import PackedSequences, concat_packed
from datarater.data.split import assign_split
from datarater.data.tokenizer import Tokenizer
from datarater.errors import UserError

TARGET_SPLIT_SALT = "datarater-target-split-v1"


@dataclass
class Resolved:
    """The corpus's splits and the target's documents, tokenized (text dropped)."""

    splits: dict[str, Tokenized]  # the corpus's requested splits
    target_heldout: Tokenized  # what the outer loss is measured on
    target_validation: Tokenized  # what LMs are evaluated on as "target" (empty in heldout mode)
    description: dict = field(default_factory=dict)  # recorded in the run directory and the report
    # a weighted target (``weights``): its shares, normalised, and each target document's entry
    weights: list[float] = field(default_factory=list)
    heldout_part: list[int] = field(default_factory=list)  # parallel to target_heldout
    validation_part: list[int] = field(default_factory=list)  # parallel to target_validation

    def target_ids(self) -> set[str]:
        return {d.id for d, _ in self.target_heldout} | {d.id for d, _ in self.target_validation}


def _text_key(text: str) -> bytes:
    return hashlib.blake2b(text.strip().encode("utf-8", "replace"), digest_size=16).digest()


def _matches(doc: Document, t: TargetConfig) -> bool:
    return (not t.sources or doc.source in t.sources) and (not t.labels or doc.label in t.labels)


def _count_line(counts: Counter, shown: int = 15) -> str:
    top = ", ".join(f"{k or '(none)'} {v}" for k, v in counts.most_common(shown)) or "none"
    return top + (f", ... and {len(counts) - shown} more" if len(counts) > shown else "")


def _check_selection(t: TargetConfig, prefix: str, sources: Counter, labels: Counter) -> None:
    for key, wanted, found in (("sources", t.sources, sources), ("labels", t.labels, labels)):
        missing = [w for w in wanted if w not in found]
        if missing:
            raise UserError(f"config key '{prefix}.{key}': {missing} not in the corpus; its {key} (documents): "
                            f"{_count_line(found)}")


def read_with_target(
    corpus: CorpusConfig,
    tokenizer: Tokenizer,
    target: TargetConfig,
    splits: Sequence[str],
    stats: ReadStats | None = None,
    on_build: Callable[[str], None] | None = None,
    prefix: str = "meta.target",
    outer: bool = True,
) -> Resolved:
    """The corpus's ``splits`` and the target of ``target`` (see the module's docstring); without
    ``outer`` (an LM that only evaluates on the target) the outer-loss documents are not read."""
    mode = target.mode
    extra = {"selection": ("heldout", "validation") if outer else ("validation",), "heldout": ("heldout",) if outer else ()}
    wanted = list(dict.fromkeys([*splits, *extra.get(mode, ())]))
    sources: Counter = Counter()
    labels: Counter = Counter()
    corpus_texts: set[bytes] = set()

    def seen(doc: Document) -> None:
        sources[doc.source] += 1
        labels[doc.label] += 1
        if mode == "files":
            corpus_texts.add(_text_key(doc.text))

    buckets = read_split_documents(corpus, tokenizer, wanted, stats, on_build, seen=seen)
    desc: dict = {"mode": mode, "what": target.describe()}
    if mode == "heldout":
        out = Resolved(buckets, buckets.get("heldout", []), [], desc)
    elif mode == "selection":
        _check_selection(target, prefix, sources, labels)
        held = [(d, ids) for d, ids in buckets.get("heldout", []) if _matches(d, target)]
        val = [(d, ids) for d, ids in buckets["validation"] if _matches(d, target)]
        if (outer and not held) or not val:
            empty = "held-out" if not held else "validation"
            n = len(buckets["heldout" if not held else "validation"])
            raise UserError(f"config key '{prefix}': {target.describe()} selects no document of the corpus's {empty} "
                            f"split ({n} documents in it); raise corpus.{'heldout' if not held else 'validation'}_fraction "
                            "or select more")
        desc.update(sources=list(target.sources), labels=list(target.labels))
        out = Resolved(buckets, held, val, desc)
    elif target.weights:
        out = _read_weighted_files(buckets, corpus, tokenizer, target, prefix, corpus_texts, desc)
    else:
        held, val = _read_target_files(corpus, tokenizer, target, prefix, corpus_texts)
        desc.update(paths=list(target.paths), tfds_name=target.tfds_name, validation_fraction=target.validation_fraction)
        out = Resolved(buckets, held, val, desc)
    desc["documents"] = {"outer_loss": len(out.target_heldout), "validation": len(out.target_validation)}
    desc["by_source"] = dict(Counter(d.source for d, _ in out.target_heldout + out.target_validation))
    out.splits = {s: buckets[s] for s in splits}
    return out


def target_corpus(corpus: CorpusConfig, t: TargetConfig, prefix: str) -> CorpusConfig:
    """The corpus config that reads a target's own files or TFDS dataset (with the corpus's fields)."""
    return replace(corpus, name=prefix, kind="tfds" if t.tfds_name else "files", paths=list(t.paths),
                   tfds_name=t.tfds_name, tfds_data_dir=t.tfds_data_dir, tfds_split=t.tfds_split, max_documents=0,
                   reader="memory")


def _read_target_files(corpus: CorpusConfig, tokenizer: Tokenizer, t: TargetConfig, prefix: str,
                       corpus_texts: set[bytes], texts: set[bytes] | None = None) -> tuple[Tokenized, Tokenized]:
    """The target files' outer-loss and validation documents; ``texts`` collects their text keys."""
    from datarater.data.sources import iter_documents

    cfg = target_corpus(corpus, t, prefix)
    stats = ReadStats()
    held: Tokenized = []
    val: Tokenized = []
    same_text: list[str] = []
    try:
        for doc in iter_documents(cfg, stats):
            if texts is not None:
                texts.add(_text_key(doc.text))
            if _text_key(doc.text) in corpus_texts:  # an id of the same name is no leak: ids of files are "<name>:<line>"
                same_text.append(doc.id)
                continue
            ids = tokenizer.encode(doc.text)
            if ids.size == 0:
                stats.drop_used("empty_after_tokenize", f"document {doc.id}")
                continue
            # Split by id: [0, v) is the target's validation, the rest feeds the outer loss.
            split = assign_split(doc.id, 1.0 - t.validation_fraction, t.validation_fraction, TARGET_SPLIT_SALT)
            (val if split == "validation" else held).append((Document(doc.id, "", doc.source, doc.label), ids))
    except UserError as e:
        raise UserError(f"config key '{prefix}': {e}") from None
    if same_text:
        raise UserError(f"config key '{prefix}': the target overlaps the training corpus: {len(same_text)} of "
                        f"{stats.read} target documents have the same text as a corpus document (e.g. {same_text[0]!r}); "
                        "remove them from the target (or the corpus)")
    if not held or not val:
        raise UserError(f"config key '{prefix}': {t.describe()} gives {len(held)} outer-loss and {len(val)} validation "
                        f"documents ({stats.summary()}); both need at least one: add documents or change "
                        f"{prefix}.validation_fraction")
    return held, val


def _read_weighted_files(buckets: dict, corpus: CorpusConfig, tokenizer: Tokenizer, t: TargetConfig, prefix: str,
                         corpus_texts: set[bytes], desc: dict, all_texts: set[bytes] | None = None) -> Resolved:
    """A weighted files target: each entry of ``paths`` read on its own (`_read_target_files`), so
    every document knows its entry; an entry that shares a text with an earlier one is refused.
    ``all_texts`` collects the text keys of every entry."""
    held: Tokenized = []
    val: Tokenized = []
    held_part: list[int] = []
    val_part: list[int] = []
    seen: dict[bytes, int] = {}
    per_entry = []
    for k, path in enumerate(t.paths):
        texts: set[bytes] = set()
        h, v = _read_target_files(corpus, tokenizer, replace(t, paths=[path], weights=[]), f"{prefix}.paths[{k}]",
                                  corpus_texts, texts)
        earlier = sorted({seen[x] for x in texts if x in seen})
        if earlier:
            raise UserError(f"config key '{prefix}.paths[{k}]': {path} shares documents with {prefix}.paths[{earlier[0]}] "
                            f"({t.paths[earlier[0]]}): a weighted target's entries must be disjoint")
        seen.update(dict.fromkeys(texts, k))
        if all_texts is not None:
            all_texts |= texts
        held += h
        val += v
        held_part += [k] * len(h)
        val_part += [k] * len(v)
        per_entry.append({"path": path, "outer_loss": len(h), "validation": len(v)})
    total = sum(t.weights)
    weights = [w / total for w in t.weights]
    for e, w in zip(per_entry, weights, strict=True):
        e["weight"] = w
    desc.update(paths=list(t.paths), weights=weights, entries=per_entry, validation_fraction=t.validation_fraction)
    return Resolved(buckets, held, val, desc, weights, held_part, val_part)


def pack_target(resolved: Resolved, data: DataConfig, tokenizer: Tokenizer) -> tuple[PackedSequences, PackedSequences | None]:
    """The target's outer-loss rows and validation rows (None in heldout mode), as one pool (a
    weighted target's entries: `target_parts`)."""
    held = pack_split(resolved.target_heldout, data, tokenizer, "heldout")
    val = pack_split(resolved.target_validation, data, tokenizer, "validation") if resolved.target_validation else None
    return held, val


def outer_loss_rows(resolved: Resolved, data: DataConfig,
                    tokenizer: Tokenizer) -> tuple[PackedSequences, tuple[list[int], list[float]] | None]:
    """The outer loss's rows (`pack_target`) and, for a weighted target, each entry's number of
    rows and weight (`datarater.data.pipeline.mixed_batches`); None otherwise."""
    if not resolved.weights:
        return pack_target(resolved, data, tokenizer)[0], None
    parts = target_parts(resolved, data, tokenizer)
    return concat_packed([h for _, h, _ in parts]), ([len(h) for _, h, _ in parts], list(resolved.weights))


def _entry_rows(resolved: Resolved, split: str, data: DataConfig, tokenizer: Tokenizer) -> list[PackedSequences]:
    """One weighted target entry's documents of ``split`` ("heldout": the outer loss, or "validation")
    packed on their own, per entry."""
    docs, parts = ((resolved.target_heldout, resolved.heldout_part) if split == "heldout"
                   else (resolved.target_validation, resolved.validation_part))
    return [pack_split([d for d, part in zip(docs, parts, strict=True) if part == k], data, tokenizer, split)
            for k in range(len(resolved.weights))]


def target_parts(resolved: Resolved, data: DataConfig,
                 tokenizer: Tokenizer) -> list[tuple[float, PackedSequences, PackedSequences]]:
    """A weighted target's entries: ``(weight, outer-loss rows, validation rows)`` each, packed on
    their own (no row holds two entries' tokens)."""
    return list(zip(resolved.weights, _entry_rows(resolved, "heldout", data, tokenizer),
                    _entry_rows(resolved, "validation", data, tokenizer), strict=True))


def validation_sets(resolved: Resolved, data: DataConfig, tokenizer: Tokenizer) -> list[tuple[float, PackedSequences]]:
    """What an LM's target NLL is the weighted mean of: ``(weight, validation rows)`` per entry of a
    weighted target (its outer-loss rows are not packed: an LM never reads them), else one part of
    weight 1; none when the target's validation set is a group of the corpus's split (a selection)
    or there is no target."""
    if resolved.weights:
        return list(zip(resolved.weights, _entry_rows(resolved, "validation", data, tokenizer), strict=True))
    return [(1.0, pack_split(resolved.target_validation, data, tokenizer, "validation"))] if resolved.target_validation else []


def validation_groups(resolved: Resolved, target: TargetConfig) -> dict[str, np.ndarray]:
    """Named groups of the corpus's validation documents (bool per document, in the order of
    ``resolved.splits["validation"]``): ``validation`` (all), ``target`` (a selection's documents),
    and ``source:<s>`` / ``label:<l>`` where the split holds more than one source / label. An LM's
    NLL on a group is over the tokens of its documents (`datarater.train.step.document_nll`)."""
    docs = [d for d, _ in resolved.splits["validation"]]
    groups = {"validation": np.ones(len(docs), dtype=bool)}
    if target.mode == "selection":
        groups["target"] = np.asarray([_matches(d, target) for d in docs], dtype=bool)
    for key, of in (("source", lambda d: d.source), ("label", lambda d: d.label)):
        values = sorted({of(d) for d in docs if of(d)})
        if len(values) > 1:
            for v in values:
                groups[f"{key}:{v}"] = np.asarray([of(d) == v for d in docs], dtype=bool)
    return groups


def group_documents(resolved: Resolved, target: TargetConfig, names: Sequence[str]) -> dict[str, Tokenized]:
    """The validation documents of each group in ``names`` (``eval.curve_sets``; `validation_groups`),
    in the split's order; a name that is no group is refused, naming the key and the groups there are."""
    groups = validation_groups(resolved, target)
    docs = resolved.splits["validation"]
    out = {}
    for i, name in enumerate(names):
        if name not in groups:
            have = ", ".join(g for g in groups if is_group(g)) or "none (one source, one label)"
            where = resolved.description.get("evaluation_sample", "the corpus's validation documents")  # streaming: a sample
            raise UserError(f"config key 'eval.curve_sets[{i}]' (a sweep puts its sweep.select_on there): '{name}' is no "
                            f"group of {where}; their groups: {have}")
        out[name] = [d for d, keep in zip(docs, groups[name], strict=True) if keep]
    return out


def curator_texts(corpus: CorpusConfig, target: TargetConfig | None, pool_docs: int = 0, seed: int = 0,
                  prefix: str = "meta.target") -> tuple[list[str], list[str]]:
    """``(target texts, pool texts)`` for curators that model a target (DSIR, the classifier), with
    one pass over the corpus: the target's outer-loss documents (never its validation ones; heldout
    mode: the corpus's held-out split; none when ``target`` is None) and a seeded sample of up to
    ``pool_docs`` texts of the training split (none when ``pool_docs`` is 0)."""
    import random

    from datarater.data.sources import iter_documents

    wanted: list[str] = []
    pool: list[str] = []
    in_corpus = target is not None and target.mode != "files"
    if in_corpus or pool_docs:
        for doc in iter_documents(corpus, ReadStats()):
            split = assign_split(doc.id, corpus.heldout_fraction, corpus.validation_fraction, corpus.split_salt)
            if pool_docs and split == "train":
                pool.append(doc.text)
            elif in_corpus and split == "heldout" and (target.mode == "heldout" or _matches(doc, target)):
                wanted.append(doc.text)
    if target is not None and target.mode == "files":
        entries = [[path] for path in target.paths] if target.weights else [list(target.paths)]
        by_entry = [[doc.text for doc in iter_documents(replace(target_corpus(corpus, target, prefix), paths=paths), ReadStats())
                     if assign_split(doc.id, 1.0 - target.validation_fraction, target.validation_fraction,
                                     TARGET_SPLIT_SALT) != "validation"] for paths in entries]
        wanted = weighted_texts(by_entry, target.weights, seed) if target.weights else by_entry[0]
    if target is not None and not wanted:
        raise UserError(f"config key '{prefix}': {target.describe()} has no outer-loss documents")
    if len(pool) > pool_docs:
        pool = random.Random(seed).sample(pool, pool_docs)
    return wanted, pool


def weighted_texts(by_entry: list[list[str]], weights: list[float], seed: int = 0) -> list[str]:
    """Texts of a weighted target for the curators that model one (DSIR, the classifier): about as
    many characters as all entries hold, entry ``k``'s share ``weights[k]`` (normalised) of them,
    as the outer loss's rows are; an entry's texts are taken in a seeded order, again from the
    start when its share needs more than it has."""
    rng = np.random.default_rng(seed)
    total, norm = sum(len(t) for texts in by_entry for t in texts), sum(weights)
    out: list[str] = []
    for texts, w in zip(by_entry, weights, strict=True):
        order, need, k, has_chars = rng.permutation(len(texts)), w / norm * total, 0, any(texts)
        while has_chars and (k == 0 or need > 0):
            text = texts[order[k % len(texts)]]
            out.append(text)
            need, k = need - len(text), k + 1
    return out


def target_texts(corpus: CorpusConfig, target: TargetConfig, prefix: str = "meta.target") -> list[str]:
    """Texts of the target's outer-loss documents (`curator_texts`)."""
    return curator_texts(corpus, target, prefix=prefix)[0]
