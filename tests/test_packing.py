"""Packing documents into rows, the tokenizers, and loading packed splits from a corpus."""

from __future__ import annotations

import json

import numpy as np
import pytest

from datarater.config import CorpusConfig, DataConfig
from datarater.data.corpus import load_splits
from datarater.data.documents import Document, ReadStats
from datarater.data.packing import PackedSequences, pack_documents, unpack
from datarater.data.split import assign_split
from datarater.data.tokenizer import ByteTokenizer, SentencePieceTokenizer, make_tokenizer
from datarater.errors import UserError

TOK = ByteTokenizer()


def _docs(lengths: list[int], seed: int = 0) -> list[tuple[Document, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [
        (Document(f"d{i}", "", f"src{i % 3}"), rng.integers(3, 259, size=n).astype(np.int32))
        for i, n in enumerate(lengths)
    ]


def _expected(docs, add_bos: bool, add_eos: bool) -> list[np.ndarray]:
    return [np.concatenate([[TOK.bos_id]] * add_bos + [ids] + [[TOK.eos_id]] * add_eos) for _, ids in docs]


def _check_invariants(p: PackedSequences, seq_len: int) -> None:
    n = len(p)
    assert p.tokens.shape == p.segment_ids.shape == p.positions.shape == (n, seq_len)
    assert p.tokens.dtype == p.segment_ids.dtype == p.positions.dtype == np.int32
    pad = p.segment_ids == 0
    assert not pad[:-1].any(), "only the last row may have padding"
    if n:
        last = pad[-1]
        assert not (last[:-1] & ~last[1:]).any(), "padding only at the end of the last row"
    assert (p.tokens[pad] == TOK.pad_id).all() and (p.positions[pad] == 0).all()
    for r in range(n):
        seg, pos = p.segment_ids[r], p.positions[r]
        used = seg[seg > 0]
        assert used[0] == 1 and (np.diff(used) >= 0).all() and (np.diff(used) <= 1).all()
        starts = np.flatnonzero(np.r_[True, seg[1:] != seg[:-1]] & (seg > 0))
        assert (pos[starts] == 0).all(), "positions restart at 0 at each segment"
        inner = (seg > 0) & ~np.isin(np.arange(seq_len), starts)
        assert (pos[inner] == pos[np.flatnonzero(inner) - 1] + 1).all()
        # the k-th document of the row is segment k + 1
        assert len(p.row_doc_ids(r)) == used.max()
    assert p.row_doc_start[0] == 0 and p.row_doc_start[-1] == len(p.row_docs)
    assert (np.diff(p.row_docs) >= 0).all()


@pytest.mark.parametrize("add_bos,add_eos", [(True, True), (False, True), (True, False), (False, False)])
def test_pack_unpack_round_trip(add_bos, add_eos):
    lengths = [5, 0, 1, 40, 3, 16, 15, 0, 100, 2, 7]  # incl. empty documents and one spanning rows
    docs = _docs(lengths)
    p = pack_documents(docs, 16, TOK, "train", add_bos, add_eos)
    _check_invariants(p, 16)
    expected = _expected(docs, add_bos, add_eos)
    got = unpack(p)
    assert len(got) == len(docs)
    for e, g in zip(expected, got, strict=True):
        np.testing.assert_array_equal(e, g)
    total = sum(e.size for e in expected)
    assert p.num_tokens() == total and len(p) == -(-total // 16)
    assert p.doc_ids == [d.id for d, _ in docs] and p.sources == [d.source for d, _ in docs]


def test_no_two_documents_share_a_segment_and_long_documents_continue():
    docs = _docs([3, 50, 2])  # 5 + 52 + 4 = 61 tokens in rows of 8
    p = pack_documents(docs, 8, TOK, "validation", True, True)
    assert len(p) == 8
    assert p.row_doc_ids(0) == ["d0", "d1"]
    np.testing.assert_array_equal(p.segment_ids[0], [1, 1, 1, 1, 1, 2, 2, 2])
    np.testing.assert_array_equal(p.positions[0], [0, 1, 2, 3, 4, 0, 1, 2])
    for r in range(1, 7):
        assert p.row_doc_ids(r) == ["d1"] and (p.segment_ids[r] == 1).all()
        np.testing.assert_array_equal(p.positions[r], np.arange(8))
    assert p.row_doc_ids(7) == ["d1", "d2"]
    np.testing.assert_array_equal(p.segment_ids[7], [1, 2, 2, 2, 2, 0, 0, 0])
    np.testing.assert_array_equal(p.tokens[7, 1:5], [TOK.bos_id, *docs[2][1], TOK.eos_id])
    assert list(p.ids) == [f"validation-{r:08d}" for r in range(8)]
    assert p.row_sources(7) == ["src1", "src2"] and p.source_of_row(7) == "src2"
    assert p.source_of_row(0) == "src0"


def test_packing_edge_cases():
    empty = pack_documents([], 8, TOK, "train", True, True)
    assert len(empty) == 0 and empty.tokens.shape == (0, 8) and unpack(empty) == []
    exact = pack_documents(_docs([6, 6]), 8, TOK, "train", True, True)  # exactly two full rows
    assert len(exact) == 2 and (exact.segment_ids > 0).all()
    assert exact.row_doc_ids(0) == ["d0"] and exact.row_doc_ids(1) == ["d1"]


def test_byte_tokenizer_round_trip_non_ascii():
    text = "naïve café — 東京 🙂 \x00end"
    ids = TOK.encode(text)
    assert ids.dtype == np.int32 and ids.min() >= 3 and ids.max() < TOK.vocab_size == 259
    assert ids.size == len(text.encode("utf-8"))
    assert TOK.decode(ids) == text
    assert TOK.decode([TOK.bos_id, *ids.tolist(), TOK.eos_id, TOK.pad_id]) == text
    assert TOK.encode("").size == 0
    assert isinstance(make_tokenizer(DataConfig()), ByteTokenizer)


def test_sentencepiece_tokenizer(tmp_path):
    spm = pytest.importorskip("sentencepiece")
    lines = [f"the quick brown fox {i} jumps over the lazy dog number {i % 7}" for i in range(200)]
    prefix = tmp_path / "sp"
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(lines),
        model_prefix=str(prefix),
        vocab_size=60,
        model_type="unigram",
        minloglevel=2,
    )  # default model: unk=0, bos=1, eos=2, no pad piece
    tok = make_tokenizer(DataConfig(tokenizer="sentencepiece", tokenizer_path=f"{prefix}.model"))
    assert isinstance(tok, SentencePieceTokenizer)
    assert (tok.bos_id, tok.eos_id) == (1, 2) and tok.pad_id == tok.piece_size == 60 and tok.vocab_size == 61
    ids = tok.encode("the lazy dog jumps")
    assert ids.dtype == np.int32 and ids.size > 0 and ids.max() < 60
    assert tok.decode([tok.bos_id, *ids, tok.eos_id, tok.pad_id]) == "the lazy dog jumps"
    with pytest.raises(UserError, match="data.tokenizer_path"):
        SentencePieceTokenizer(str(tmp_path / "missing.model"))


def _write_corpus(path, n: int) -> None:
    rows = [{"id": f"doc{i}", "text": "" if i == 3 else f"text of document {i} " * (i % 5 + 1)} for i in range(n)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_load_splits_assigns_by_id_and_keeps_the_invariant(tmp_path):
    path = tmp_path / "c.jsonl"
    _write_corpus(path, 300)
    corpus = CorpusConfig(paths=[str(path)], heldout_fraction=0.2, validation_fraction=0.2)
    stats = ReadStats()
    out = load_splits(corpus, DataConfig(seq_len=32), TOK, splits=("train", "heldout", "validation"), stats=stats)
    assert set(out) == {"train", "heldout", "validation"}
    for split, packed in out.items():
        assert all(assign_split(i, 0.2, 0.2, corpus.split_salt) == split for i in packed.doc_ids)
    assert sum(len(p.doc_ids) for p in out.values()) == 299 == stats.used
    assert stats.skipped == {"empty": 1}

    class EmptyAfterTokenize(ByteTokenizer):  # drops digit "7"s: a document "7" becomes empty
        def encode(self, text):
            ids = super().encode(text)
            return ids[ids != ord("7") + 3]

    (tmp_path / "d.jsonl").write_text('{"id": "a", "text": "777"}\n{"id": "b", "text": "ok"}\n')
    stats = ReadStats()
    corpus = CorpusConfig(paths=[str(tmp_path / "d.jsonl")], heldout_fraction=0.0, validation_fraction=0.0)
    out = load_splits(corpus, DataConfig(seq_len=8), EmptyAfterTokenize(), splits=("train",), stats=stats)
    assert out["train"].doc_ids == ["b"]
    assert stats.skipped == {"empty_after_tokenize": 1} and stats.used == 1 and stats.read == 2


def test_load_splits_empty_split_is_a_user_error(tmp_path):
    path = tmp_path / "c.jsonl"
    _write_corpus(path, 5)
    corpus = CorpusConfig(paths=[str(path)], heldout_fraction=0.0, validation_fraction=0.0)
    with pytest.raises(
        UserError, match=r"split 'validation' has no documents \(documents read 5.*corpus\.validation_fraction"
    ):
        load_splits(corpus, DataConfig(seq_len=8), TOK)
