"""Tokenizers: UTF-8 bytes (no files needed), SentencePiece models and Hugging Face tokenizer.json files."""

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
        ids, self.vocab_size, self._special = _specials(
            [self._sp.pad_id(), self._sp.bos_id(), self._sp.eos_id()], self.piece_size)
        self.pad_id, self.bos_id, self.eos_id = ids

    def encode(self, text: str) -> np.ndarray:
        return np.asarray(self._sp.encode(text, out_type=int), dtype=np.int32)

    def decode(self, ids: Iterable[int] | np.ndarray) -> str:
        arr = np.asarray(list(ids) if not isinstance(ids, np.ndarray) else ids).astype(np.int64).ravel()
        keep = (arr >= 0) & (arr < self.piece_size) & ~np.isin(arr, self._special)
        return self._sp.decode([int(i) for i in arr[keep]])


def _specials(found: list[int | None], size: int) -> tuple[list[int], int, np.ndarray]:
    """pad/bos/eos ids: the model's own where it has one (``found``, None or negative: none), else
    new ids after its ``size`` ids, in that order; with the vocabulary size and the special ids."""
    next_id, ids = size, []
    for f in found:
        if f is None or f < 0:
            f, next_id = next_id, next_id + 1
        ids.append(int(f))
    return ids, next_id, np.array(sorted(set(ids)), dtype=np.int64)


# Where a tokenizer_config.json names no special token, these names are looked for in the vocabulary.
_SPECIAL_NAMES = {
    "pad": ("<pad>", "[PAD]", "<|pad|>", "<|padding|>"),
    "bos": ("<s>", "<|begin_of_text|>", "<bos>", "[CLS]", "<|endoftext|>"),
    "eos": ("</s>", "<|end_of_text|>", "<eos>", "[SEP]", "<|endoftext|>"),
}


class HFTokenizer:
    """A Hugging Face ``tokenizer.json``, read with the `tokenizers` library (no network, no
    `transformers`).

    pad/bos/eos: the ``pad_token``/``bos_token``/``eos_token`` of a ``tokenizer_config.json``
    beside the file, else the first of `_SPECIAL_NAMES` in the vocabulary; one still missing
    gets a new id after the vocabulary (pad, bos, eos in that order), as `SentencePieceTokenizer`
    does. ``encode`` adds no special tokens; ``decode`` skips them.
    """

    def __init__(self, path: str) -> None:
        try:
            from tokenizers import Tokenizer as _Tok
        except ImportError:
            raise UserError("config key 'data.tokenizer': hf needs the 'tokenizers' package: "
                            "pip install 'datarater[hf]'") from None
        full = os.path.expanduser(path)
        if os.path.isdir(full):
            full = os.path.join(full, "tokenizer.json")
        if not path or not os.path.isfile(full):
            raise UserError(f"config key 'data.tokenizer_path': Hugging Face tokenizer '{full or path}' does not exist")
        try:
            self._tok = _Tok.from_file(full)
        except Exception as e:  # noqa: BLE001 - the library raises a bare Exception on a bad file
            raise UserError(f"config key 'data.tokenizer_path': '{full}' is not a tokenizer.json: {e}") from None
        self.base_size = int(self._tok.get_vocab_size(with_added_tokens=True))
        named = _config_specials(os.path.join(os.path.dirname(full), "tokenizer_config.json"))
        found: list[int | None] = []
        for role in ("pad", "bos", "eos"):
            names = ([named[role]] if named.get(role) else []) + list(_SPECIAL_NAMES[role])
            found.append(next((i for i in map(self._tok.token_to_id, names) if i is not None), None))
        ids, self.vocab_size, self._special = _specials(found, self.base_size)
        self.pad_id, self.bos_id, self.eos_id = ids

    def encode(self, text: str) -> np.ndarray:
        return np.asarray(self._tok.encode(text, add_special_tokens=False).ids, dtype=np.int32)

    def decode(self, ids: Iterable[int] | np.ndarray) -> str:
        arr = np.asarray(list(ids) if not isinstance(ids, np.ndarray) else ids).astype(np.int64).ravel()
        keep = (arr >= 0) & (arr < self.base_size) & ~np.isin(arr, self._special)
        return self._tok.decode([int(i) for i in arr[keep]], skip_special_tokens=True)


def _config_specials(path: str) -> dict[str, str]:
    """``{"pad"|"bos"|"eos": token}`` from a tokenizer_config.json (a token may be a dict with ``content``)."""
    import json

    if not os.path.isfile(path):
        return {}
    try:
        with open(path, encoding="utf-8") as f:
            cfg = json.load(f)
    except (OSError, ValueError) as e:
        raise UserError(f"{path}: cannot be read as JSON ({e})") from None
    out = {}
    for role in ("pad", "bos", "eos"):
        v = cfg.get(f"{role}_token")
        if isinstance(v, dict):
            v = v.get("content")
        if isinstance(v, str) and v:
            out[role] = v
    return out


def tokenizer_file(cfg: DataConfig) -> str:
    """``data.tokenizer_path`` as a local path: a URL (gs://, s3://, memory://) is fetched first
    (an hf folder URL: its tokenizer.json and, when there is one, tokenizer_config.json)."""
    from datarater.remote import fetch, fetch_folder, is_url, local_path

    path = cfg.tokenizer_path
    if not is_url(path):
        return local_path(path)  # file:///x is /x
    if cfg.tokenizer == "hf":
        if path.endswith(".json"):
            folder, name = path.rsplit("/", 1)
            return os.path.join(fetch_folder(folder, (name,), ("tokenizer_config.json",), "data.tokenizer_path"), name)
        return fetch_folder(path, ("tokenizer.json",), ("tokenizer_config.json",), "data.tokenizer_path")
    return fetch(path, "data.tokenizer_path")


def make_tokenizer(cfg: DataConfig) -> Tokenizer:
    """The tokenizer named by ``data.tokenizer``."""
    if cfg.tokenizer == "byte":
        return ByteTokenizer()
    if cfg.tokenizer == "sentencepiece":
        return SentencePieceTokenizer(tokenizer_file(cfg))
    if cfg.tokenizer == "hf":
        return HFTokenizer(tokenizer_file(cfg))
    raise UserError(f"config key 'data.tokenizer': must be 'byte', 'sentencepiece' or 'hf', got '{cfg.tokenizer}'")
