"""The tokenizer files of an export: what lets `transformers` (or `tokenizers`) encode text as our LM saw it.

- ``byte``: a ``tokenizer.json`` built with the `tokenizers` library: byte-level pieces with no
  merges, so byte ``b`` is id ``b + 3`` and pad/bos/eos are 0/1/2, exactly `ByteTokenizer`;
- ``hf``: the run's own ``tokenizer.json`` (and ``tokenizer_config.json`` when there is one);
- ``sentencepiece``: the model file as ``tokenizer.model`` for ``LlamaTokenizer``.

A ``tokenizer_config.json`` names pad/bos/eos. With ``add_bos`` (how the LM was trained) the byte
tokenizer's post-processor starts every text with bos, so ``tokenizer(text)`` gives the ids the LM
saw at a document's start.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from datarater.config import DataConfig
from datarater.data.tokenizer import ByteTokenizer, make_tokenizer, tokenizer_file
from datarater.errors import UserError

SPECIAL_NAMES = {"pad": "<pad>", "bos": "<s>", "eos": "</s>"}


def byte_to_unicode() -> dict[int, str]:
    """A printable character for each byte (the byte-level alphabet of GPT-2's tokenizer, which the
    `tokenizers` ByteLevel pre-tokenizer and decoder use): printable Latin-1 bytes stand for
    themselves, the other 68 are moved to code points 256 and up, in byte order."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    out, extra = {}, 0
    for b in range(256):
        if b in keep:
            out[b] = chr(b)
        else:
            out[b] = chr(256 + extra)
            extra += 1
    return out


def byte_tokenizer_json(add_bos: bool) -> str:
    """``tokenizer.json`` text equal to `ByteTokenizer` (ids and decoding)."""
    try:
        from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors
    except ImportError:
        raise UserError("config key 'format': hf writes the byte tokenizer with the 'tokenizers' package: "
                        "pip install 'datarater[hf]'") from None
    bt = ByteTokenizer()
    vocab = {SPECIAL_NAMES["pad"]: bt.pad_id, SPECIAL_NAMES["bos"]: bt.bos_id, SPECIAL_NAMES["eos"]: bt.eos_id}
    vocab.update({ch: b + ByteTokenizer.OFFSET for b, ch in byte_to_unicode().items()})
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([AddedToken(SPECIAL_NAMES[r], special=True, normalized=False) for r in ("pad", "bos", "eos")])
    if add_bos:
        bos = SPECIAL_NAMES["bos"]
        tok.post_processor = processors.TemplateProcessing(single=f"{bos} $A", pair=f"{bos} $A {bos} $B",
                                                           special_tokens=[(bos, bt.bos_id)])
    return tok.to_str()


def _write_json(path: Path, obj: dict) -> None:
    path.write_text(json.dumps(obj, indent=2) + "\n")


def write_tokenizer(data: DataConfig, out: Path) -> dict:
    """Writes the tokenizer files of ``data`` into ``out``; returns what config.json records of it."""
    tok = make_tokenizer(data)
    ids = {"pad_id": tok.pad_id, "bos_id": tok.bos_id, "eos_id": tok.eos_id, "vocab_size": tok.vocab_size}
    info = {"kind": data.tokenizer, **ids, "add_bos": data.add_bos, "add_eos": data.add_eos}
    if data.tokenizer == "byte":
        (out / "tokenizer.json").write_text(byte_tokenizer_json(data.add_bos))
        _write_json(out / "tokenizer_config.json", {
            "tokenizer_class": "PreTrainedTokenizerFast",
            **{f"{r}_token": name for r, name in SPECIAL_NAMES.items()},
            "model_max_length": data.seq_len,
        })
        return {**info, "file": "tokenizer.json"}
    src = os.path.expanduser(tokenizer_file(data))
    if data.tokenizer == "hf":
        src = os.path.join(src, "tokenizer.json") if os.path.isdir(src) else src
        shutil.copyfile(src, out / "tokenizer.json")
        side = os.path.join(os.path.dirname(src), "tokenizer_config.json")
        if os.path.isfile(side):
            shutil.copyfile(side, out / "tokenizer_config.json")
        else:
            _write_json(out / "tokenizer_config.json", {"tokenizer_class": "PreTrainedTokenizerFast",
                                                        "model_max_length": data.seq_len})
        return {**info, "file": "tokenizer.json"}
    if data.tokenizer == "sentencepiece":
        shutil.copyfile(src, out / "tokenizer.model")
        _write_json(out / "tokenizer_config.json", {"tokenizer_class": "LlamaTokenizer", "add_bos_token": data.add_bos,
                                                    "add_eos_token": False, "model_max_length": data.seq_len})
        return {**info, "file": "tokenizer.model"}
    raise UserError(f"config key 'data.tokenizer': cannot export tokenizer '{data.tokenizer}'")
