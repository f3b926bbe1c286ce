"""Audit of curators against known corruption labels: ROC-AUC of clean vs each corruption type.

A curator's score is read as "higher = keep", so an AUC of 1 means every clean sequence scores
above every sequence of that corruption type, 0.5 is chance and 0 is perfectly inverted. Each AUC
carries a stratified bootstrap interval (datarater.eval.stats.roc_auc_ci).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from datarater.errors import UserError
from datarater.eval.stats import roc_auc_ci

ALL_CORRUPTED = "(all corrupted)"


def roc_auc(pos_scores, neg_scores) -> float:
    """P(pos > neg) + ½·P(pos = neg) over all pairs (sklearn.metrics.roc_auc_score); UserError if a group is empty."""
    pos = np.asarray(pos_scores, dtype=np.float64).reshape(-1)
    neg = np.asarray(neg_scores, dtype=np.float64).reshape(-1)
    if pos.size == 0 or neg.size == 0:
        raise UserError(f"roc_auc needs scores in both groups (got {pos.size} positive, {neg.size} negative)")
    return roc_auc_ci(pos, neg, n_resamples=0).auc


@dataclass
class AuditRow:
    """ROC-AUC of clean vs one corruption type (``n`` sequences of it) for each curator.

    ``auc_low[c]`` / ``auc_high[c]`` bound curator ``c``'s AUC by a stratified bootstrap interval.
    """

    label: str
    n: int
    auc: dict[str, float] = field(default_factory=dict)
    auc_low: dict[str, float] = field(default_factory=dict)
    auc_high: dict[str, float] = field(default_factory=dict)


def audit_table(
    labels: list[str],
    scores_by_curator: dict[str, np.ndarray],
    clean_label: str = "clean",
    confidence: float = 0.95,
    n_resamples: int = 1000,
    seed: int = 0,
) -> list[AuditRow]:
    """One row per corruption type (sorted by name), then one for all corrupted sequences together.

    ``labels[i]`` is the corruption label of sequence ``i``; ``scores_by_curator[c][i]`` its score
    under curator ``c`` (higher = keep). Every AUC's interval is at ``confidence`` from
    ``n_resamples`` bootstrap replicates drawn with ``seed`` (the same seed for every cell).
    """
    labels_arr = np.asarray([str(x) for x in labels])
    n = labels_arr.size
    if not scores_by_curator:
        raise UserError("audit_table: no curator scores given")
    scores = {}
    for name, s in scores_by_curator.items():
        s = np.asarray(s, dtype=np.float64).reshape(-1)
        if s.size != n:
            raise UserError(f"audit_table: curator {name!r} has {s.size} scores for {n} labels")
        scores[name] = s
    clean = labels_arr == clean_label
    if not clean.any():
        raise UserError(f"audit_table: no sequence is labelled {clean_label!r}; labels seen: {sorted(set(labels_arr))}")
    kinds = sorted(set(labels_arr[~clean].tolist()))
    rows = []
    masks = [(k, labels_arr == k) for k in kinds]
    if kinds:
        masks.append((ALL_CORRUPTED, ~clean))
    for kind, mask in masks:
        row = AuditRow(label=kind, n=int(mask.sum()))
        for name, s in scores.items():
            iv = roc_auc_ci(s[clean], s[mask], confidence=confidence, n_resamples=n_resamples, seed=seed)
            row.auc[name], row.auc_low[name], row.auc_high[name] = iv.auc, iv.low, iv.high
        rows.append(row)
    return rows
