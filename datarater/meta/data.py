"""The meta-training data streams: one training stream per population member and one held-out stream."""

from __future__ import annotations

from collections.abc import Callable

import grain
import numpy as np

from datarater.config import MetaConfig
from datarater.data import keys
from datarater.data.pipeline import (
    MODEL_FIELDS,
    iterator_state,
    make_iterator,
    mixed_batches,
    restore_iterator,
    train_batches,
)


def _stack(rows: list[dict]) -> dict:
    return {k: np.stack([r[k] for r in rows]) for k in MODEL_FIELDS}


def in_memory(splits: dict, heldout_mix: tuple[list[int], list[float]] | None = None
              ) -> Callable[[int, int, str], grain.IterDataset]:
    """The `MetaData` batch factory over in-memory packed splits ``{"train", "heldout"}``; with
    ``heldout_mix`` (rows per part, weights: a weighted target) the held-out batches mix the parts."""
    def batches(seed: int, batch_size: int, role: str) -> grain.IterDataset:
        if role == "heldout" and heldout_mix is not None:
            return mixed_batches(splits[role], *heldout_mix, batch_size, seed)
        return train_batches(splits[role], batch_size, seed)

    return batches


def member_seed(meta: MetaConfig, p: int) -> int:
    """The data seed of member ``p``'s stream."""
    return meta.seed * 7919 + 101 * (p + 1)


def heldout_seed(meta: MetaConfig) -> int:
    return meta.seed * 7919 + 7


class MetaData:
    """One training stream per member and one held-out stream, all checkpointable.

    ``batches(seed, batch_size, role)`` makes a stream of batches (in memory or streamed,
    `datarater.data.pipeline.train_batches` / `datarater.data.stream.train_stream`; ``role`` is
    "train" or "heldout"). Every process draws the same global batches (members may live on any
    host; each process places the pieces its devices hold).
    """

    def __init__(self, batches: Callable[[int, int, str], grain.IterDataset], meta: MetaConfig):
        m = meta
        self.meta = m
        self.members = [make_iterator(batches(member_seed(m, p), m.inner_batch_size, "train"))
                        for p in range(m.population)]
        self.steps = m.unroll + m.plain_inner_steps  # inner batches per member per meta-step
        self.held = make_iterator(batches(heldout_seed(m), m.outer_batch_size, "heldout"))

    def next(self) -> tuple[dict, dict, dict]:
        """``inner [P, K+T, B, L]``, ``heldout [P, B, L]`` (the model's fields) and what the train rows
        are: ``index [P, K+T, B]`` (row of an in-memory split; -1 streamed), ``source [P, K+T, B]``
        (the key of the source with most tokens in the row) and ``doc_key [P, K+T, B, L]``
        (``K`` plain steps, then the ``T`` unrolled ones)."""
        inner, info = [], {"index": [], "source": [], "doc_key": []}
        for it in self.members:
            steps = [next(it) for _ in range(self.steps)]
            inner.append(_stack(steps))
            info["index"].append(np.stack([s["index"] for s in steps]))
            info["source"].append(np.stack([keys.majority(s["source_key"], s["segment_ids"]) for s in steps]))
            info["doc_key"].append(np.stack([s["doc_key"] for s in steps]))
        held = _stack([next(self.held) for _ in range(self.meta.population)])
        return _stack(inner), held, {k: np.stack(v) for k, v in info.items()}

    def state(self) -> dict:
        return {"members": [iterator_state(it) for it in self.members], "heldout": iterator_state(self.held)}

    def restore(self, state: dict) -> None:
        for it, s in zip(self.members, state["members"], strict=True):
            restore_iterator(it, s)
        restore_iterator(self.held, state["heldout"])
