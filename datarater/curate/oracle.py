"""The oracle curator: scores each row by the share of its tokens from documents known to be good.

A document is good when it is clean (its label is ``clean``, or one of ``meta.target.labels``
when the target names labels) and, with a target by source, from one of the target's sources.
A row's score is the fraction of its non-padding tokens that come from good documents, so a
row of good text scores 1, a row of junk 0, and a row holding both falls between. It is the
ceiling of a comparison (``random`` is the floor): what a curator that knew the labels would do.
It needs labels (the embedded corpus has them) or a target by source. `OracleCurator` (in
`curators`) scores a batch with `GoodKeys`, from the per-token source and label keys that every
training batch carries (`datarater.data.keys`).
"""

from __future__ import annotations

import numpy as np

from datarater.config.groups import TargetConfig
from datarater.data.packing import PackedSequences
from datarater.errors import UserError

CLEAN = "clean"


_NO_LABELS = ("curate=oracle: the corpus's documents carry no labels and meta.target names no sources, "
              "so nothing tells good from bad; use a labelled corpus (corpus=embedded) or set "
              "meta.target.sources=[...]")


class GoodKeys:
    """The good documents' rule on keys: a token is good when its label key is one of the wanted
    labels' (when the corpus has labels) and its source key one of the target's sources (when set)."""

    def __init__(self, target: TargetConfig | None, packed: PackedSequences | None = None):
        from datarater.data import keys

        target = target or TargetConfig()
        if packed is not None and not any(packed.labels) and not target.sources:
            raise UserError(_NO_LABELS)
        self.labels = keys.keys(list(target.labels) if target.labels else [CLEAN])
        self.sources = keys.keys(list(target.sources)) if target.sources else None

    def share(self, source_key: np.ndarray, label_key: np.ndarray, segment_ids: np.ndarray) -> np.ndarray:
        """``float32 [B]``: each row's share of non-padding tokens that are good (0 for an empty row)."""
        valid = np.asarray(segment_ids) > 0
        if not (np.asarray(label_key)[valid] != 0).any() and self.sources is None:
            raise UserError(_NO_LABELS)
        good = np.ones(valid.shape, dtype=bool)
        if (np.asarray(label_key)[valid] != 0).any():
            good &= np.isin(label_key, self.labels)
        if self.sources is not None:
            good &= np.isin(source_key, self.sources)
        count = valid.sum(axis=1)
        return np.where(count > 0, (good & valid).sum(axis=1) / np.maximum(count, 1), 0.0).astype(np.float32)
