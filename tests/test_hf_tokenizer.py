"""Hugging Face tokenizers: a tokenizer.json (trained here, offline) encodes and decodes, takes its
pad/bos/eos from tokenizer_config.json or its vocabulary, adds missing ones after it, and trains an LM."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from datarater.config import DataConfig
from datarater.data.tokenizer import HFTokenizer, make_tokenizer
from datarater.errors import UserError

tokenizers = pytest.importorskip("tokenizers", reason="the hf extra: pip install -e '.[hf]'")


def bpe(folder: Path, corpus: Path, specials: list[str], config: dict | None = None) -> Path:
    """A byte-level BPE of 300 tokens trained on the docstring corpus, saved as FOLDER/tokenizer.json."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    texts = [json.loads(line)["text"] for line in corpus.read_text().splitlines()]
    tok.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=300, special_tokens=specials,
                                                       initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    folder.mkdir(parents=True, exist_ok=True)
    tok.save(str(folder / "tokenizer.json"))
    if config is not None:
        (folder / "tokenizer_config.json").write_text(json.dumps(config))
    return folder


def test_encode_decode_and_special_ids(doc_corpus, tmp_path):
    folder = bpe(tmp_path / "a", doc_corpus, ["<pad>", "<|start|>", "<|end|>"],
                 {"bos_token": "<|start|>", "eos_token": {"content": "<|end|>"}})
    tok = make_tokenizer(DataConfig(tokenizer="hf", tokenizer_path=str(folder)))  # the folder, or the file
    assert isinstance(tok, HFTokenizer)
    assert (tok.pad_id, tok.bos_id, tok.eos_id) == (0, 1, 2) and tok.vocab_size == 300  # the trainer puts specials first
    as_url = make_tokenizer(DataConfig(tokenizer="hf", tokenizer_path=f"file://{folder}"))  # file:// is local
    assert as_url.encode("a test").tolist() == tok.encode("a test").tolist()
    text = "Return the number of items in the container.\n  Ünïcödé too."
    ids = tok.encode(text)
    assert ids.dtype == np.int32 and 0 < len(ids) < len(text.encode())  # merges: fewer ids than bytes
    assert tok.decode(ids) == text
    assert tok.decode([tok.bos_id, *ids.tolist(), tok.eos_id, tok.pad_id]) == text  # specials are skipped
    # no config and no special tokens in the vocabulary: pad, bos, eos get new ids after it
    bare = HFTokenizer(str(bpe(tmp_path / "b", doc_corpus, []) / "tokenizer.json"))
    assert (bare.pad_id, bare.bos_id, bare.eos_id) == (300, 301, 302) and bare.vocab_size == 303
    assert bare.decode([300, *bare.encode("plain words").tolist(), 302]) == "plain words"


def test_bad_paths_are_named(tmp_path):
    with pytest.raises(UserError, match="data.tokenizer_path.*does not exist"):
        HFTokenizer(str(tmp_path / "nowhere.json"))
    (tmp_path / "tokenizer.json").write_text("{not json")
    with pytest.raises(UserError, match="is not a tokenizer.json"):
        HFTokenizer(str(tmp_path))


def test_train_lm_with_an_hf_tokenizer(doc_corpus, tmp_path):
    from datarater.cli import SUBCOMMANDS, compose
    from datarater.programs.train_lm import run as train_lm

    folder = bpe(tmp_path / "tok", doc_corpus, ["<pad>", "<s>", "</s>"])
    prog = compose(SUBCOMMANDS["train-lm"], ["data=hf_tokenizer", f"data.tokenizer_path={folder}", "data.seq_len=64",
                                             "model=nano", "model.vocab_size=320", f"corpus.paths=[{doc_corpus}]",
                                             "train.batch_size=8", "train.steps=4", f"run_dir={tmp_path / 'run'}"])
    out = train_lm(prog)
    assert out["steps"] == 4 and np.isfinite(out["final_val_nll"])
    assert out["sequences"]["train"] < 0.8 * 1938  # merges: fewer 64-token rows than 1938 byte-level ones (1424)
