"""Audit of curators against known corruption labels: ROC-AUC of clean vs each corruption type.

A curator's score is read as "higher = keep", so an AUC of 1 means every clean sequence scores
above every sequence of that corruption type, 0.5 is chance and 0 is perfectly inverted.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from datarater.errors import UserError

ALL_CORRUPTED = "(all corrupted)"


def _average_ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks of ``values``, tied values sharing the mean of their ranks."""
    _, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    first_rank = np.cumsum(counts) - counts + 1  # rank of the first element of each tie group
    return (first_rank + (counts - 1) / 2.0)[inverse]


def roc_auc(pos_scores, neg_scores) -> float:
    """P(pos > neg) + ½·P(pos = neg) over all pairs (the Mann–Whitney U statistic over n_pos·n_neg)."""
    pos = np.asarray(pos_scores, dtype=np.float64).reshape(-1)
    neg = np.asarray(neg_scores, dtype=np.float64).reshape(-1)
    if pos.size == 0 or neg.size == 0:
        raise UserError(f"roc_auc needs scores in both groups (got {pos.size} positive, {neg.size} negative)")
    if not (np.all(np.isfinite(pos)) and np.all(np.isfinite(neg))):
        raise UserError("roc_auc: scores contain NaN or infinite values")
    ranks = _average_ranks(np.concatenate([pos, neg]))
    u = ranks[: pos.size].sum() - pos.size * (pos.size + 1) / 2.0
    return float(u / (pos.size * neg.size))


@dataclass
class AuditRow:
    """ROC-AUC of clean vs one corruption type (``n`` sequences of it) for each curator."""

    label: str
    n: int
    auc: dict[str, float] = field(default_factory=dict)


def audit_table(
    labels: list[str],
    scores_by_curator: dict[str, np.ndarray],
    clean_label: str = "clean",
) -> list[AuditRow]:
    """One row per corruption type (sorted by name), then one for all corrupted sequences together.

    ``labels[i]`` is the corruption label of sequence ``i``; ``scores_by_curator[c][i]`` its score
    under curator ``c`` (higher = keep).
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
        auc = {name: roc_auc(s[clean], s[mask]) for name, s in scores.items()}
        rows.append(AuditRow(label=kind, n=int(mask.sum()), auc=auc))
    return rows
