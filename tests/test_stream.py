"""The streaming data path: Grain's packing against ours, exact resume, process shards, bad input, URLs."""

from __future__ import annotations

import dataclasses
import gzip
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from datarater.config import CorpusConfig, DataConfig
from datarater.data import keys
from datarater.data.corpus import load_splits
from datarater.data.documents import ReadStats
from datarater.data.pipeline import iterator_state, make_iterator, restore_iterator
from datarater.data.stream import (
    Selection,
    document_stream,
    list_shards,
    packed_rows,
    process_shards,
    stack,
    train_stream,
    wants_stream,
)
from datarater.data.tokenizer import ByteTokenizer
from datarater.errors import UserError
from datarater.train.metrics import read_metrics

TOK = ByteTokenizer()
DATA = DataConfig(seq_len=32)


def _write(path, n, start=0, source=None):
    with open(path, "w") as f:
        for i in range(start, start + n):
            rec = {"id": f"d{i}", "text": f"document {i} " + "abcdefghij"[i % 10] * (5 + i % 37)}
            if source:
                rec["source"] = source
            f.write(json.dumps(rec) + "\n")
    return path


@pytest.fixture
def two_files(tmp_path):
    return [str(_write(tmp_path / "a.jsonl", 300, 0, "a")), str(_write(tmp_path / "b.jsonl", 200, 300, "b"))]


def test_grain_packing_gives_the_rows_of_the_in_memory_packing(two_files):
    corpus = CorpusConfig(paths=two_files)
    stream = stack(list(packed_rows(document_stream(corpus, list_shards(corpus), Selection("train"), ReadStats(),
                                                    cycle_length=1), DATA, TOK)))
    mem = load_splits(corpus, DATA, TOK, splits=("train",))["train"]
    for name in ("tokens", "segment_ids", "positions"):
        np.testing.assert_array_equal(stream[name], getattr(mem, name))
    np.testing.assert_array_equal(stream["doc_key"], mem.token_keys(np.arange(len(mem)))["doc_key"])
    assert {keys.name_of(k) for k in np.unique(stream["source_key"]) if k} == {"a", "b"}


def test_stream_resumes_exactly_from_a_json_state_mid_window(two_files):
    corpus = CorpusConfig(paths=two_files, shuffle_window=50, cycle_length=2)

    def make():
        return make_iterator(train_stream(corpus, DATA, TOK, Selection("train"), 8, 3, ReadStats()))

    it = make()
    for _ in range(7):  # 56 rows: inside the second window of 50
        next(it)
    state = json.loads(json.dumps(iterator_state(it)))  # as a checkpoint stores it
    want = [next(it)["tokens"] for _ in range(30)]  # through epochs: the shard order is reshuffled
    again = make()
    restore_iterator(again, state)
    got = [next(again)["tokens"] for _ in range(30)]
    assert all(np.array_equal(a, b) for a, b in zip(want, got, strict=True))
    other = make_iterator(train_stream(corpus, DATA, TOK, Selection("train"), 8, 4, ReadStats()))
    assert not np.array_equal(next(other)["tokens"], next(make())["tokens"])  # the seed shuffles


@pytest.mark.parametrize("files", [4, 1])
def test_processes_read_disjoint_shares_that_cover_the_split(tmp_path, files):
    paths = [str(_write(tmp_path / f"f{k}.jsonl", 50, 50 * k)) for k in range(files)]
    corpus = CorpusConfig(paths=paths, validation_fraction=0.0, heldout_fraction=0.0)
    shards = list_shards(corpus)
    seen = []
    for p in range(2):
        mine, stride = process_shards(shards, p, 2)
        assert (len(mine) < len(shards)) == (files >= 2)  # whole files per process, or every file strided
        ids = [d.id for d in document_stream(corpus, mine, Selection("train"), ReadStats(), stride=stride)]
        seen.append(set(ids))
    assert not seen[0] & seen[1]
    assert seen[0] | seen[1] == {f"d{i}" for i in range(50 * files)}


def test_bad_input_on_the_stream_is_counted_or_named(tmp_path):
    import zstandard

    good = [json.dumps({"id": f"g{i}", "text": "fine text " * 5}) for i in range(40)]
    lines = [g.encode() for g in good[:10]] + [b"{not json", json.dumps({"id": "x", "body": "no text"}).encode(),
                                                 b'{"id": "u", "text": "invalid \xff UTF-8"}'] + [g.encode() for g in good[10:]]
    (tmp_path / "mixed.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    c = zstandard.ZstdCompressor()
    body = "".join(g + "\n" for g in good).encode()
    (tmp_path / "cut.jsonl.zst").write_bytes(c.compress(body[:400]) + c.compress(body[400:])[:30])
    stats = ReadStats()
    corpus = CorpusConfig(paths=[str(tmp_path / "*.json*")], validation_fraction=0.0, heldout_fraction=0.0)
    with pytest.raises(UserError, match=r"cut\.jsonl\.zst: .*truncated"):  # by default, in a reader thread
        list(document_stream(corpus, list_shards(corpus), Selection("train"), ReadStats()))
    corpus = dataclasses.replace(corpus, allow_truncated=True)
    docs = list(document_stream(corpus, list_shards(corpus), Selection("train"), stats))
    assert stats.skipped["invalid_json"] == 1 and stats.skipped["missing_text_field"] == 1
    assert stats.truncated_files == 1 and stats.utf8_replaced == 1
    assert any("cut.jsonl.zst" in w and "after line" in w for w in stats.warnings)
    assert stats.read == stats.used + sum(stats.skipped.values()) and len(docs) == stats.used
    (tmp_path / "junk.jsonl.gz").write_bytes(gzip.compress(b"\n".join([b"nope"] * 20)))
    bad = CorpusConfig(paths=[str(tmp_path / "junk.jsonl.gz")])
    with pytest.raises(UserError, match=r"junk\.jsonl\.gz: is not JSON Lines"):  # raised in a reader thread
        list(document_stream(bad, list_shards(bad), Selection(""), ReadStats()))
    with pytest.raises(UserError, match="does not exist"):
        list_shards(CorpusConfig(paths=["memory://nowhere/x.jsonl"]))


def test_fsspec_urls_stream_like_local_files(tmp_path):
    import fsspec

    local = _write(tmp_path / "c.jsonl", 120)
    fs = fsspec.filesystem("memory")
    fs.pipe("/corpus/c.jsonl.gz", gzip.compress(local.read_bytes()))
    url = CorpusConfig(paths=["memory://corpus/*.jsonl.gz"])
    assert wants_stream(url)  # remote input streams under reader=auto
    (shard,) = list_shards(url)
    assert shard.key == "c.jsonl.gz" and shard.file.path == "memory:///corpus/c.jsonl.gz"
    from_url = [d.id for d in document_stream(url, [shard], Selection(""), ReadStats())]
    plain = CorpusConfig(paths=[str(local)])
    assert from_url == [d.id for d in document_stream(plain, list_shards(plain), Selection(""), ReadStats())]
    assert not wants_stream(plain)  # a small local file is read into memory


def _train_cli(args, env_extra=None):
    env = dict(os.environ, **(env_extra or {}))
    return subprocess.run([sys.executable, "-m", "datarater.cli", "train-lm", *args], env=env, capture_output=True,
                          text=True, timeout=300)


@pytest.mark.slow
def test_streamed_train_lm_resumes_after_sigkill_as_if_uninterrupted(doc_corpus, tmp_path):
    args = ["model=nano", f"corpus.paths=[{doc_corpus}]", "corpus.reader=stream", "corpus.shuffle_window=64",
            "data.seq_len=64", "train.batch_size=8", "train.steps=12", "train.log_every=3", "train.eval_every=6",
            "train.eval_batches=2", "train.checkpoint_every=6"]
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    assert _train_cli([*args, f"run_dir={straight}"]).returncode == 0
    r = _train_cli([*args, f"run_dir={killed}"], {"DATARATER_SIGKILL_AFTER_CHECKPOINT": "6"})
    assert r.returncode == -9, r.stderr[-2000:]
    r = _train_cli([*args, f"run_dir={killed}"])
    assert r.returncode == 0 and "resumed from step 6" in r.stderr and "streaming:" in r.stderr, r.stderr[-2000:]
    rows = [read_metrics(d / "metrics.jsonl") for d in (straight, killed)]
    losses = [{r["step"]: r["loss"] for r in rs if "loss" in r} for rs in rows]
    assert sorted(losses[0]) == list(range(1, 13)) and losses[0] == losses[1]
    assert [r["val_nll"] for r in rows[0] if "val_nll" in r] == [r["val_nll"] for r in rows[1] if "val_nll" in r]


def test_streamed_training_never_sees_a_target_document(tmp_path):
    from datarater.config import TargetConfig
    from datarater.data.streamed import resolve_streamed

    corpus_path = _write(tmp_path / "corpus.jsonl", 400)
    target_path = tmp_path / "target.jsonl"
    copied = [json.loads(line) for line in corpus_path.read_text().splitlines()[:45]]  # same texts, other ids
    target_path.write_text("".join(json.dumps({"id": f"t{i}", "text": r["text"]}) + "\n" for i, r in enumerate(copied[:30])))
    second = tmp_path / "target2.jsonl"  # a second entry of a weighted target
    second.write_text("".join(json.dumps({"id": f"u{i}", "text": r["text"]}) + "\n" for i, r in enumerate(copied[30:])))
    corpus = CorpusConfig(paths=[str(corpus_path)], validation_fraction=0.1, heldout_fraction=0.1)
    stats = ReadStats()
    for target in (TargetConfig(paths=[str(target_path)]), TargetConfig(paths=[str(target_path), str(second)], weights=[2, 1]),
                   TargetConfig(sources=["corpus"])):
        st = resolve_streamed(corpus, TOK, target, list_shards(corpus), stats, DATA.seq_len)
        banned = {keys.key(r["id"]) for r in copied[:30 if len(target.paths) == 1 else 45]} if target.paths else set()
        if target.weights:  # each entry's documents in memory, knowing their entry
            assert st.resolved.weights == pytest.approx([2 / 3, 1 / 3])
            assert [d.id[0] for d, _ in st.resolved.target_heldout] == ["tu"[k] for k in st.resolved.heldout_part]
            assert set(st.resolved.validation_part) == {0, 1}
        seen = set()
        it = make_iterator(train_stream(corpus, DATA, TOK, st.train, 16, 0, stats, shards=st.shards))
        for _ in range(60):  # more than one epoch of the training split
            seen.update(np.unique(next(it)["doc_key"]).tolist())
        from datarater.data.split import assign_split

        not_train = {keys.key(f"d{i}") for i in range(400) if assign_split(f"d{i}", 0.1, 0.1, corpus.split_salt) != "train"}
        assert seen and not seen & (banned | not_train)
        if target.paths:
            assert st.outer is None and st.resolved.target_heldout  # the target's files are in memory
            assert stats.skipped["same_text_as_target"] > 0
        else:
            assert st.outer.split == "heldout"
    with pytest.raises(UserError, match="'meta.target.sources'"):
        resolve_streamed(corpus, TOK, TargetConfig(sources=["nope"]), list_shards(corpus), ReadStats(), DATA.seq_len)


def _meta_cli(args, env_extra=None):
    env = dict(os.environ, **(env_extra or {}))
    return subprocess.run([sys.executable, "-m", "datarater.cli", "meta-train", *args], env=env, capture_output=True,
                          text=True, timeout=400)


@pytest.mark.slow
def test_streamed_meta_training_resumes_exactly_after_sigkill(doc_corpus, tmp_path):
    args = [f"corpus.paths=[{doc_corpus}]", "corpus.reader=stream", "corpus.shuffle_window=32", "corpus.heldout_fraction=0.2",
            "model.d_model=32", "model.n_layers=1", "model.n_heads=2", "model.d_head=16", "model.d_ff=64",
            "rater=pico", "data.seq_len=32", "meta.inner_batch_size=4", "meta.outer_batch_size=4", "meta.population=2",
            "meta.steps=6", "meta.log_every=2", "meta.checkpoint_every=3", "meta.lifetime=4", "meta.unroll=1"]
    assert _meta_cli([*args, f"run_dir={tmp_path / 'a'}"]).returncode == 0
    r = _meta_cli([*args, f"run_dir={tmp_path / 'b'}"], {"DATARATER_SIGKILL_AFTER_CHECKPOINT": "3"})
    assert r.returncode == -9, r.stderr[-2000:]
    r = _meta_cli([*args, f"run_dir={tmp_path / 'b'}"])
    assert r.returncode == 0 and "resumed meta-training from step 3" in r.stderr, r.stderr[-2000:]
    fields = ("step", "outer_loss", "inner_loss", "meta_grad_norm", "score_mean", "effective_batch")
    a, b = ([{k: row[k] for k in fields} for row in read_metrics(tmp_path / d / "metrics.jsonl")] for d in "ab")
    assert [r["step"] for r in a] == list(range(1, 7)) and a == b


def test_eval_reads_the_evaluation_sample_train_lm_evaluates_on(two_files):
    from datarater.config import TargetConfig
    from datarater.data.streamed import resolve_streamed
    from datarater.eval.nll import own_validation_split

    corpus = CorpusConfig(paths=two_files, reader="stream", eval_sequences=20, validation_fraction=0.2)
    st = resolve_streamed(corpus, TOK, TargetConfig(), list_shards(corpus), ReadStats(), DATA.seq_len, outer=False)
    packed, _ = own_validation_split(corpus, DATA, TOK)
    assert packed.doc_ids == [d.id for d, _ in st.resolved.splits["validation"]]
    assert 20 <= len(packed) <= 22  # whole documents until 20 rows are filled
    assert {d.source for d, _ in st.resolved.splits["validation"]} == {"a", "b"}  # both files, interleaved
