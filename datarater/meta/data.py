"""The meta-training data streams: one training stream per population member and one held-out stream."""

from __future__ import annotations

import numpy as np

from datarater.config import MetaConfig
from datarater.data.packing import PackedSequences
from datarater.data.pipeline import iterator_state, make_iterator, restore_iterator, train_batches


def _stack(rows: list[dict]) -> dict:
    return {k: np.stack([r[k] for r in rows]) for k in rows[0] if k != "index"}


class MetaData:
    """One training stream per member and one held-out stream, all checkpointable.

    Every process draws the same global batches (members may live on any host; each process
    places the pieces its devices hold).
    """

    def __init__(self, train: PackedSequences, heldout: PackedSequences, meta: MetaConfig):
        m = meta
        self.train, self.heldout, self.meta = train, heldout, m
        self.members = [
            make_iterator(train_batches(train, m.inner_batch_size, m.seed * 7919 + 101 * (p + 1)))
            for p in range(m.population)
        ]
        self.steps = m.unroll + m.plain_inner_steps  # inner batches per member per meta-step
        self.held = make_iterator(train_batches(heldout, m.outer_batch_size, m.seed * 7919 + 7))

    def next(self) -> tuple[dict, dict, np.ndarray]:
        """``inner [P, K+T, B, L]``, ``heldout [P, B, L]`` and the train row indices ``[P, K+T, B]``
        (``K`` plain steps, then the ``T`` unrolled ones)."""
        inner, index = [], []
        for it in self.members:
            steps = [next(it) for _ in range(self.steps)]
            inner.append(_stack(steps))
            index.append(np.stack([s["index"] for s in steps]))
        held = _stack([next(self.held) for _ in range(self.meta.population)])
        return _stack(inner), held, np.stack(index)

    def state(self) -> dict:
        return {"members": [iterator_state(it) for it in self.members], "heldout": iterator_state(self.held)}

    def restore(self, state: dict) -> None:
        for it, s in zip(self.members, state["members"], strict=True):
            restore_iterator(it, s)
        restore_iterator(self.held, state["heldout"])
