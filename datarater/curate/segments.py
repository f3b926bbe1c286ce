"""The text pieces of a packed row, for curators that judge text rather than tokens."""

from __future__ import annotations

import numpy as np

from datarater.data.tokenizer import Tokenizer


def segment_texts(tokens: np.ndarray, segment_ids: np.ndarray, tokenizer: Tokenizer) -> list[tuple[str, int]]:
    """``(text, weight)`` of each document piece of one row, in order.

    ``weight`` is the piece's number of non-special tokens (bos/eos/pad excluded); pieces with
    none (a lone bos or eos) are left out.
    """
    tokens = np.asarray(tokens).reshape(-1)
    segment_ids = np.asarray(segment_ids).reshape(-1)
    special = np.isin(tokens, [tokenizer.pad_id, tokenizer.bos_id, tokenizer.eos_id])
    out = []
    for seg in np.unique(segment_ids[segment_ids > 0]):
        body = tokens[(segment_ids == seg) & ~special]
        if body.size:
            out.append((tokenizer.decode(body), int(body.size)))
    return out


def batch_texts(batch: dict[str, np.ndarray], tokenizer: Tokenizer) -> list[list[tuple[str, int]]]:
    """`segment_texts` of every row of a batch dict."""
    tokens, seg = np.asarray(batch["tokens"]), np.asarray(batch["segment_ids"])
    return [segment_texts(tokens[i], seg[i], tokenizer) for i in range(tokens.shape[0])]


def weighted_mean(values: list[float], weights: list[int], empty: float) -> float:
    """Mean of ``values`` weighted by ``weights``; ``empty`` when there is nothing to average."""
    total = float(sum(weights))
    if total <= 0:
        return empty
    return float(np.dot(values, weights) / total)
