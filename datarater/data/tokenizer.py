"""Tokenizers: UTF-8 bytes (no files needed) and SentencePiece models."""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Protocol, runtime_checkable

import numpy as np

from datarater.config import DataConfig
from datarater.errors import UserError


@runtime_checkable
class Tokenizer(Protocol):
    """What packing and models need from a tokenizer. ``encode`` adds no bos/eos."""

    vocab_size: int
    pad_id: int
    bos_id: int
    eos_id: int

    def encode(self, text: str) -> np.ndarray: ...

    def decode(self, ids: Iterable[int] | np.ndarray) -> str: ...


class ByteTokenizer:
    """UTF-8 bytes: pad 0, bos 1, eos 2, byte ``b`` -> ``b + 3``; 259 ids."""

    OFFSET = 3

    def __init__(self) -> None:
        self.pad_id, self.bos_id, self.eos_id = 0, 1, 2
        self.vocab_size = 256 + self.OFFSET

    def encode(self, text: str) -> np.ndarray:
        data = text.encode("utf-8", errors="replace")  # "replace" only matters for lone surrogates
        return np.frombuffer(data, dtype=np.uint8).astype(np.int32) + self.OFFSET

    def decode(self, ids: Iterable[int] | np.ndarray) -> str:
        arr = np.asarray(list(ids) if not isinstance(ids, np.ndarray) else ids).astype(np.int64).ravel()
        arr = arr[(arr >= self.OFFSET) & (arr < self.vocab_size)] - self.OFFSET
        return arr.astype(np.uint8).tobytes().decode("utf-8", errors="replace")


class SentencePieceTokenizer:
    """A SentencePiece model.

    pad/bos/eos are the model's own ids where it defines them (``pad_id`` etc. >= 0). Those it
    lacks get new ids after the model's pieces, in the order pad, bos, eos, and ``vocab_size``
    grows accordingly (e.g. a default model without a pad piece: ``pad_id = piece_size``,
    ``vocab_size = piece_size + 1``). ``decode`` skips special and out-of-model ids.
    """

    def __init__(self, path: str) -> None:
        import sentencepiece as spm

        full = os.path.expanduser(path)
        if not path or not os.path.isfile(full):
            raise UserError(f"config key 'data.tokenizer_path': SentencePiece model '{path}' does not exist")
        try:
            self._sp = spm.SentencePieceProcessor(model_file=full)
        except (RuntimeError, OSError) as e:
            raise UserError(f"config key 'data.tokenizer_path': '{path}' is not a SentencePiece model: {e}") from None
        self.piece_size = int(self._sp.get_piece_size())
        next_id = self.piece_size
        ids = []
        for model_id in (self._sp.pad_id(), self._sp.bos_id(), self._sp.eos_id()):
            if model_id < 0:
                model_id, next_id = next_id, next_id + 1
            ids.append(int(model_id))
        self.pad_id, self.bos_id, self.eos_id = ids
        self.vocab_size = next_id
        self._special = np.array(sorted(set(ids)), dtype=np.int64)

    def encode(self, text: str) -> np.ndarray:
        return np.asarray(self._sp.encode(text, out_type=int), dtype=np.int32)

    def decode(self, ids: Iterable[int] | np.ndarray) -> str:
        arr = np.asarray(list(ids) if not isinstance(ids, np.ndarray) else ids).astype(np.int64).ravel()
        keep = (arr >= 0) & (arr < self.piece_size) & ~np.isin(arr, self._special)
        return self._sp.decode([int(i) for i in arr[keep]])


def make_tokenizer(cfg: DataConfig) -> Tokenizer:
    """The tokenizer named by ``data.tokenizer``."""
    if cfg.tokenizer == "byte":
        return ByteTokenizer()
    if cfg.tokenizer == "sentencepiece":
        return SentencePieceTokenizer(cfg.tokenizer_path)
    raise UserError(f"config key 'data.tokenizer': must be 'byte' or 'sentencepiece', got '{cfg.tokenizer}'")
