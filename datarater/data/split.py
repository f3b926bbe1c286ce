"""Deterministic train / heldout / validation assignment of documents by id."""

from __future__ import annotations

import hashlib

SPLITS = ("train", "heldout", "validation")


def split_unit(doc_id: str, salt: str) -> float:
    """A number in [0, 1) fixed by ``salt`` and ``doc_id`` (BLAKE2b, independent of the process)."""
    key = salt.encode("utf-8", "surrogatepass") + b"\x00" + doc_id.encode("utf-8", "surrogatepass")
    digest = hashlib.blake2b(key, digest_size=8).digest()
    return (int.from_bytes(digest, "big") >> 11) / float(1 << 53)  # top 53 bits: exact, < 1


def assign_split(doc_id: str, heldout_fraction: float, validation_fraction: float, salt: str) -> str:
    """ "validation" on [0, v), "heldout" on [v, v + h), "train" on the rest of `split_unit`.

    The assignment depends only on the id, the salt and the fractions, never on the order or
    the number of documents, so adding documents does not move existing ones.
    """
    u = split_unit(doc_id, salt)
    if u < validation_fraction:
        return "validation"
    if u < validation_fraction + heldout_fraction:
        return "heldout"
    return "train"
