"""Integer keys of document ids, sources and labels, so packed rows can carry them per token.

A key is a 62-bit BLAKE2b hash of the name (never 0: 0 marks padding), the same in every
process and run. Source and label names are remembered when keyed, so a row's keys can be
named again (`name_of`); document ids are not remembered (there may be billions).
"""

from __future__ import annotations

import hashlib
import threading

import numpy as np

_MASK = (1 << 62) - 1
_names: dict[int, str] = {}
_lock = threading.Lock()


def key(name: str, remember: bool = False) -> int:
    """The key of ``name`` (> 0); with ``remember``, `name_of` can turn it back into the name."""
    digest = hashlib.blake2b(name.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    k = (int.from_bytes(digest, "big") & _MASK) or 1
    if remember and k not in _names:
        with _lock:
            _names.setdefault(k, name)
    return k


def name_of(k: int) -> str:
    """The remembered name of key ``k`` ("" for padding or a key never remembered)."""
    return _names.get(int(k), "")


def keys(names: list[str], remember: bool = False) -> np.ndarray:
    """``int64 [n]`` keys of ``names``."""
    return np.array([key(n, remember) for n in names], dtype=np.int64)


def majority(row_keys: np.ndarray, segment_ids: np.ndarray) -> list[int]:
    """Per row, the key with most (non-padding) tokens; the first such in the row on ties, 0 if empty."""
    out = []
    for ks, seg in zip(np.asarray(row_keys), np.asarray(segment_ids), strict=True):
        valid = ks[seg > 0]
        if not valid.size:
            out.append(0)
            continue
        values, first, counts = np.unique(valid, return_index=True, return_counts=True)
        best = np.flatnonzero(counts == counts.max())
        out.append(int(values[best[np.argmin(first[best])]]))
    return out
