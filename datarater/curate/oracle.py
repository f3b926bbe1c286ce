"""The oracle curator: scores each row by the share of its tokens from documents known to be good.

A document is good when it is clean (its label is ``clean``, or one of ``meta.target.labels``
when the target names labels) and, with a target by source, from one of the target's sources.
A row's score is the fraction of its non-padding tokens that come from good documents, so a
row of good text scores 1, a row of junk 0, and a row holding both falls between. It is the
ceiling of a comparison (``random`` is the floor): what a curator that knew the labels would do.
It needs labels (the embedded corpus has them) or a target by source. `OracleCurator`
(in `curators`, beside the precomputed scores it is a kind of) scores with `good_documents`.
"""

from __future__ import annotations

import numpy as np

from datarater.config.groups import TargetConfig
from datarater.data.packing import PackedSequences
from datarater.errors import UserError

CLEAN = "clean"


def good_documents(packed: PackedSequences, target: TargetConfig | None) -> np.ndarray:
    """bool per document of ``packed``: clean (or of the target's labels) and on the target's sources."""
    target = target or TargetConfig()
    n = len(packed.doc_ids)
    has_labels = bool(packed.labels) and any(packed.labels)
    if not has_labels and not target.sources:
        raise UserError("curate=oracle: the corpus's documents carry no labels and meta.target names no sources, "
                        "so nothing tells good from bad; use a labelled corpus (corpus=embedded) or set "
                        "meta.target.sources=[...]")
    good = np.ones(n, dtype=bool)
    if has_labels:
        wanted = set(target.labels) if target.labels else {CLEAN}
        good &= np.asarray([label in wanted for label in packed.labels], dtype=bool)
    if target.sources:
        good &= np.asarray([s in set(target.sources) for s in packed.sources], dtype=bool)
    return good
