"""Curators whose scores were computed before: packed-row side files and per-document attribute files.

`PrecomputedCurator` looks a row's score up by its index in the split (`datarater score`'s side
files, fingerprinted against the rows); `DocumentScoresCurator` turns scores per document
(attribute files of this project or of any other tool) into a score per packed row. Both refuse
scores of two producers, and scores of another rater than ``curate.rater_run`` when one is given.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from datarater.config.curate import CurateConfig
from datarater.data.packing import PackedSequences


class PrecomputedCurator:
    """Scores read from side files, looked up by the batch's ``index`` (row of the split)."""

    name = "precomputed"
    needs_fit = False

    def __init__(self, scores: np.ndarray, flops_per_sequence: float, curator: str):
        self.scores = np.asarray(scores, dtype=np.float32)
        self.flops_per_sequence = float(flops_per_sequence)  # what computing them cost, per sequence
        self.curator = curator

    def fit(self, sample: dict[str, np.ndarray]) -> None:
        del sample

    def score_batch(self, batch: dict[str, np.ndarray]) -> np.ndarray:
        if "index" not in batch:
            raise ValueError("precomputed scores need the batch's 'index' (row numbers of the split)")
        return self.scores[np.asarray(batch["index"], dtype=np.int64)]


class DocumentScoresCurator:
    """Scores per document (attribute files), turned into a score per packed row: the mean over the
    row's tokens of their document's score, from the batch's per-token document keys. Tokens of
    documents without a score do not count; a row with none scores NaN (ranked last)."""

    name = "attributes"
    needs_fit = False

    def __init__(self, by_key: dict[int, float], flops_per_sequence: float = 0.0, curator: str = "attributes"):
        self.keys = np.fromiter(by_key.keys(), dtype=np.int64, count=len(by_key))
        order = np.argsort(self.keys)
        self.keys = self.keys[order]
        self.values = np.fromiter(by_key.values(), dtype=np.float64, count=len(by_key))[order]
        self.flops_per_sequence = float(flops_per_sequence)
        self.curator = curator

    def fit(self, sample: dict[str, np.ndarray]) -> None:
        del sample

    def score_batch(self, batch: dict[str, np.ndarray]) -> np.ndarray:
        if "doc_key" not in batch:
            raise ValueError("document scores need the batch's per-token doc_key (datarater.data.pipeline.with_keys)")
        k = np.asarray(batch["doc_key"], np.int64)
        at = np.clip(np.searchsorted(self.keys, k), 0, max(len(self.keys) - 1, 0))
        known = (np.asarray(batch["segment_ids"]) > 0) & (self.keys[at] == k if len(self.keys) else False)
        values = np.where(known, self.values[at] if len(self.keys) else 0.0, 0.0)
        count = known.sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(count > 0, values.sum(axis=1) / count, np.nan).astype(np.float32)


def load_document_scores(cfg: CurateConfig) -> DocumentScoresCurator:
    """``curate=attributes`` (any tool's attribute files) or ``curate.scores`` naming a
    `datarater score score.unit=document` run (its ``attributes/<curator>/``)."""
    from datarater.curate.attributes import ATTRIBUTES_DIR, attribute_producer, read_document_scores
    from datarater.curate.provenance import check_expected_rater

    if not cfg.scores:
        return DocumentScoresCurator(read_document_scores(cfg.attributes, cfg.attribute, cfg.attribute_id))
    root = Path(cfg.scores).expanduser() / ATTRIBUTES_DIR
    (sub,) = [p for p in root.iterdir() if p.is_dir()][:1] or [root]
    check_expected_rater(attribute_producer(sub), cfg, str(sub))
    summary = Path(cfg.scores).expanduser() / "summary.json"
    flops = json.loads(summary.read_text()).get("flops_per_sequence", 0.0) if summary.exists() else 0.0
    return DocumentScoresCurator(read_document_scores(sub), flops, sub.name)


def is_attribute_run(path: str) -> bool:
    from datarater.curate.attributes import ATTRIBUTES_DIR

    return (Path(path).expanduser() / ATTRIBUTES_DIR).is_dir()


def load_precomputed(score_dir: str, packed: PackedSequences, cfg: CurateConfig | None = None) -> PrecomputedCurator:
    """Side-file scores of ``packed``'s rows; refuses scores of another corpus, split or unit, shards
    of two producers, and (``cfg.rater_run`` given) scores another rater made."""
    from datarater.curate.provenance import check_expected_rater
    from datarater.curate.sidefiles import read_metadata, resolve_score_dir, scores_for_rows, shards_producer

    d = resolve_score_dir(score_dir)
    made_by = shards_producer(d)
    if cfg is not None:
        check_expected_rater(made_by, cfg, str(d))
    scores = scores_for_rows(d, list(packed.ids), list(packed.tokens), unit="sequence")
    meta = read_metadata(d)
    return PrecomputedCurator(scores, meta.get("flops_per_sequence", 0.0), meta.get("curator", "?"))
