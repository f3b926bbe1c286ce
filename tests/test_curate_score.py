"""Side files, the `score` runner (alignment, restarts, documents) and the `filter` runner."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from datarater.config import CorpusConfig, DataConfig, FilterProgram, ScoreProgram
from datarater.config.curate import CurateConfig, FilterConfig, ScoreConfig
from datarater.curate.attributes import read_file_scores
from datarater.curate.curators import RandomCurator
from datarater.curate.heuristic import HeuristicCurator
from datarater.curate.jobs import coin
from datarater.curate.rules import ScoreSketch, accept_probability, empirical_cdf, oversampled_size
from datarater.curate.score import average_by_owner, document_chunks
from datarater.curate.sidefiles import (
    combined_fingerprint,
    read_scores,
    scores_for_rows,
    shard_fingerprints,
    shard_name,
    write_metadata,
    write_shard,
)
from datarater.data.corpus import load_splits
from datarater.data.split import assign_split
from datarater.data.tokenizer import ByteTokenizer
from datarater.errors import UserError
from datarater.programs.filter import run as filter_corpus
from datarater.programs.score import run as score

TOK = ByteTokenizer()


def program(corpus: Path, run_dir: Path, curator: str = "heuristic", seq_len: int = 128, **score_kw) -> ScoreProgram:
    return ScoreProgram(run_dir=str(run_dir), curate=CurateConfig(name=curator),
                        corpus=CorpusConfig(paths=[str(corpus)]), data=DataConfig(seq_len=seq_len),
                        score=ScoreConfig(**{"shard_size": 300, "batch_size": 16, **score_kw}))


def train_split(corpus: Path, seq_len: int = 128):
    return load_splits(CorpusConfig(paths=[str(corpus)]), DataConfig(seq_len=seq_len), TOK, splits=("train",))["train"]


def shard_times(run_dir: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in sorted((run_dir / "scores").glob("scores-*.parquet"))}


# ---------------------------------------------------------------------------------------------
# side files


def _write_side(d: Path, ids, tokens, scores, shard_size: int, unit: str = "sequence") -> None:
    prints = shard_fingerprints(ids, tokens, shard_size)
    for i, fp in enumerate(prints):
        a, b = i * shard_size, min((i + 1) * shard_size, len(ids))
        write_shard(d / shard_name(i, len(prints)), ids[a:b], ["src"] * (b - a), scores[a:b], fp,
                    doc_ids=[[f"doc-{j}"] for j in range(a, b)])
    write_metadata(d, {"unit": unit, "split": "train", "num_rows": len(ids), "num_shards": len(prints),
                   "shard_size": shard_size, "fingerprint": combined_fingerprint(prints)})


def test_side_files_round_trip_and_align_by_id(tmp_path):
    rng = np.random.default_rng(0)
    ids = [f"train-{i:08d}" for i in range(10)]
    tokens = list(rng.integers(3, 259, (10, 8)).astype(np.int32))
    scores = rng.standard_normal(10).astype(np.float32)
    _write_side(tmp_path, ids, tokens, scores, shard_size=4)
    assert sorted(p.name for p in tmp_path.glob("*.parquet")) == [shard_name(i, 3) for i in range(3)]
    got_ids, sources, got = read_scores(tmp_path, expect_ids=ids)
    assert list(got_ids) == ids and list(sources) == ["src"] * 10
    np.testing.assert_array_equal(got, scores)
    np.testing.assert_array_equal(scores_for_rows(tmp_path, ids, tokens, "sequence"), scores)
    assert pq.read_table(tmp_path / shard_name(1, 3)).column("doc_ids").to_pylist() == [["doc-4"], ["doc-5"], ["doc-6"],
                                                                                        ["doc-7"]]


def test_side_files_of_another_corpus_are_refused(tmp_path):
    rng = np.random.default_rng(1)
    ids = [f"train-{i:08d}" for i in range(6)]
    tokens = list(rng.integers(3, 259, (6, 8)).astype(np.int32))
    _write_side(tmp_path, ids, tokens, np.zeros(6, np.float32), shard_size=4)
    with pytest.raises(UserError, match="row 2 of the side file is 'train-00000002'"):
        read_scores(tmp_path, expect_ids=ids[:2] + ["other"] + ids[3:])
    with pytest.raises(UserError, match="6 rows but the corpus has 7"):
        scores_for_rows(tmp_path, ids + ["train-00000006"], tokens + [tokens[0]], "sequence")
    changed = [t.copy() for t in tokens]
    changed[5][0] += 1  # same ids, other tokens: positional ids alone would not notice
    with pytest.raises(UserError, match="different corpus rows"):
        scores_for_rows(tmp_path, ids, changed, "sequence")
    with pytest.raises(UserError, match="scores per document are needed"):
        scores_for_rows(tmp_path, ids, tokens, "document")
    (tmp_path / shard_name(1, 2)).unlink()
    with pytest.raises(UserError, match="unfinished"):
        read_scores(tmp_path)
    with pytest.raises(UserError, match="holds no scores"):
        read_scores(tmp_path / "elsewhere")


# ---------------------------------------------------------------------------------------------
# score runner


def test_score_writes_side_files_aligned_with_the_packed_rows(doc_corpus, tmp_path):
    summary = score(program(doc_corpus, tmp_path / "run"))
    packed = train_split(doc_corpus)
    ids, sources, scores = read_scores(tmp_path / "run")
    assert list(ids) == list(packed.ids)
    assert list(sources) == [packed.source_of_row(i) for i in range(len(packed))]
    rows = {"tokens": packed.tokens, "segment_ids": packed.segment_ids, "positions": packed.positions}
    np.testing.assert_allclose(scores, HeuristicCurator(TOK).score_batch(rows), rtol=1e-6)
    doc_ids = pq.read_table(tmp_path / "run" / "scores" / shard_name(0, summary["num_shards"])).column("doc_ids")
    assert doc_ids.to_pylist()[:5] == [packed.row_doc_ids(i) for i in range(5)]
    assert summary["num_rows"] == len(packed) and summary["num_shards"] == -(-len(packed) // 300)
    by_source = summary["by_source"]
    assert sum(v["count"] for k, v in by_source.items() if k != "all") == len(packed)
    assert by_source["all"]["mean"] == pytest.approx(float(np.mean(scores)), rel=1e-5)
    first = sorted(k for k in by_source if k != "all")[0]
    assert by_source[first]["q50"] == pytest.approx(float(np.median(scores[sources == first])), rel=1e-5, abs=1e-7)
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["num_rows"] == len(packed)


def test_score_is_restartable_and_does_not_redo_finished_shards(doc_corpus, tmp_path):
    run = tmp_path / "run"
    first = score(program(doc_corpus, run))
    before = shard_times(run)
    _, _, scores = read_scores(run)
    again = score(program(doc_corpus, run))
    assert again["shards_written"] == 0 and again["shards_skipped"] == first["num_shards"] >= 3
    assert shard_times(run) == before
    lost = sorted(before)[1]
    (run / "scores" / lost).unlink()  # as if the run had been killed before this shard
    third = score(program(doc_corpus, run))
    assert third["shards_written"] == 1 and third["shards_skipped"] == first["num_shards"] - 1
    after = shard_times(run)
    assert {k: v for k, v in after.items() if k != lost} == {k: v for k, v in before.items() if k != lost}
    np.testing.assert_array_equal(read_scores(run)[2], scores)


def test_score_refuses_a_run_dir_with_scores_of_another_corpus(doc_corpus, tmp_path):
    score(program(doc_corpus, tmp_path / "run"))
    other = tmp_path / "other.jsonl"
    lines = doc_corpus.read_text().splitlines()
    k = next(i for i, line in enumerate(lines)
             if assign_split(json.loads(line)["id"], 0.05, 0.05, "datarater-split-v1") == "train")
    rec = json.loads(lines[k])
    rec["text"] = rec["text"].upper()  # same ids and lengths, other tokens
    other.write_text("\n".join(lines[:k] + [json.dumps(rec)] + lines[k + 1 :]) + "\n")
    with pytest.raises(UserError, match="other corpus rows"):
        score(program(other, tmp_path / "run"))


def test_score_checks_the_rater_run_before_reading_the_corpus(tmp_path):
    prog = program(tmp_path / "no-corpus.jsonl", tmp_path / "run", curator="datarater")
    prog.curate.rater_run = str(tmp_path / "no-meta-run")
    with pytest.raises(UserError, match="curate.rater_run"):
        score(prog)
    with pytest.raises(UserError, match="no curator"):
        score(program(tmp_path / "no-corpus.jsonl", tmp_path / "run2", curator="none"))


def test_document_chunks_cut_each_document_into_sequence_length_pieces():
    docs = [np.arange(1, 8, dtype=np.int32), np.arange(10, 13, dtype=np.int32), np.arange(20, 28, dtype=np.int32)]
    rows, owner = document_chunks(docs, 4, pad_id=0)
    assert owner.tolist() == [0, 0, 1, 2, 2]
    for k, d in enumerate(docs):
        mine = owner == k
        np.testing.assert_array_equal(rows["tokens"][mine][rows["segment_ids"][mine] == 1], d)
    np.testing.assert_array_equal(rows["positions"][1], [0, 1, 2, 0])
    np.testing.assert_array_equal(rows["segment_ids"][2], [1, 1, 1, 0])
    mean, chunks = average_by_owner(np.array([1.0, 3.0, 5.0, 0.0, 4.0]), owner, 4)
    np.testing.assert_array_equal(mean[:3], [2.0, 5.0, 2.0])
    assert np.isnan(mean[3]) and chunks.tolist() == [2, 1, 2, 0]


def _docs_in_order(corpus: Path, seq_len: int):
    """Every document of the file in order (all splits), tokenized as attribute scoring does."""
    from datarater.data.stream import tokenized

    return [(r["id"], tokenized(_Doc(r), TOK, True, True)["tokens"]) for r in
            (json.loads(line) for line in corpus.read_text().splitlines())]


class _Doc:
    def __init__(self, r):
        self.id, self.text, self.source, self.label = r["id"], r["text"], r.get("source", ""), ""


def test_score_per_document_writes_one_attribute_file_of_chunk_means_per_input_file(doc_corpus, tmp_path):
    seq = 64
    summary = score(program(doc_corpus, tmp_path / "run", curator="random", seq_len=seq, unit="document"))
    (path,) = (tmp_path / "run" / "attributes" / "random").glob("*.parquet")
    assert path.name == doc_corpus.name + ".parquet"
    table = pq.read_table(path)
    docs = _docs_in_order(doc_corpus, seq)
    assert table.column("id").to_pylist() == [i for i, _ in docs]  # every document, in the file's order
    curator = RandomCurator(0)
    want = []
    for _, d in docs:
        chunk_scores = []
        for start in range(0, d.size, seq):
            piece = d[start : start + seq]
            row, seg = np.zeros(seq, np.int32), np.zeros(seq, np.int32)
            row[: piece.size], seg[: piece.size] = piece, 1
            chunk_scores.append(curator.score_row(row, seg))
        want.append(np.mean(chunk_scores))
    np.testing.assert_allclose(table.column("score").to_numpy(), want, rtol=1e-6)
    chunks = table.column("chunks").to_numpy()
    np.testing.assert_array_equal(chunks, [-(-d.size // seq) for _, d in docs])
    assert chunks.max() > 1 and summary["unit"] == "document" and summary["documents"] == len(docs)
    assert table.column("split").to_pylist() == [assign_split(i, 0.05, 0.05, "datarater-split-v1") for i, _ in docs]
    # complete files are not scored again; another curator's settings in the same place are refused
    mtime = path.stat().st_mtime_ns
    again = score(program(doc_corpus, tmp_path / "run", curator="random", seq_len=seq, unit="document"))
    assert again["files_skipped"] == 1 and path.stat().st_mtime_ns == mtime
    other = program(doc_corpus, tmp_path / "run", curator="random", seq_len=seq, unit="document")
    other.curate.seed = 1
    with pytest.raises(UserError, match=r"holds scores by random, \{'seed': 0\}; this run scores with random, "
                                        r"\{'seed': 1\}: set score.force=true"):
        score(other)
    other.score.force = True  # asked: the other producer's file is scored again
    redone = score(other)
    assert redone["files_scored"] == 1 and read_file_scores(path)[1].tolist() != table.column("score").to_pylist()


# ---------------------------------------------------------------------------------------------
# filter runner


def filter_program(corpus: Path, run_dir: Path, **curate_kw) -> FilterProgram:
    return FilterProgram(run_dir=str(run_dir), curate=CurateConfig(**curate_kw), corpus=CorpusConfig(paths=[str(corpus)]),
                         filter=FilterConfig(batch_size=8, seed=3))


def _output(run_dir: Path, name: str) -> list[dict]:
    import zstandard

    data = zstandard.ZstdDecompressor().stream_reader((run_dir / "output" / name).open("rb")).read()
    return [json.loads(line) for line in data.decode().splitlines()]


def test_filter_keeps_documents_by_the_per_item_rule_and_never_touches_the_corpus(doc_corpus, tmp_path):
    corpus_hash = hashlib.sha256(doc_corpus.read_bytes()).hexdigest()
    score(program(doc_corpus, tmp_path / "scores", curator="random", unit="document"))
    manifest = filter_corpus(filter_program(doc_corpus, tmp_path / "filter", name="random", discard=0.5,
                                            scores=str(tmp_path / "scores")))
    assert hashlib.sha256(doc_corpus.read_bytes()).hexdigest() == corpus_hash
    # the rule, recomputed from the attribute file: p = CDF among the split's scores, coin from id and seed
    table = pq.read_table(tmp_path / "scores" / "attributes" / "random" / (doc_corpus.name + ".parquet"))
    ids, scores = table.column("id").to_pylist(), table.column("score").to_numpy().astype(np.float64)
    in_split = np.array([assign_split(i, 0.05, 0.05, "datarater-split-v1") == "train" for i in ids])
    sketch = ScoreSketch.of(scores[in_split])
    n, b = 8, oversampled_size(8, 0.5)
    prob = accept_probability(sketch.cdf(scores), n, b)
    exact = accept_probability(empirical_cdf(scores[in_split])(scores), n, b)
    assert np.abs(prob - exact).max() <= 2 * sketch.max_error + 1e-12  # the sketch's CDF is the exact one here
    want_kept = {i for i, p, m in zip(ids, prob, in_split, strict=True) if m and coin(i, 0, 3) < p}
    records = _output(tmp_path / "filter", doc_corpus.stem + ".jsonl.zst")
    originals = {json.loads(line)["id"]: json.loads(line) for line in doc_corpus.read_text().splitlines()}
    kept = {r["id"] for r in records if r["score"] is not None}
    assert kept == want_kept
    passed = [r for r in records if r["score"] is None]
    other_splits = [i for i in originals if assign_split(i, 0.05, 0.05, "datarater-split-v1") != "train"]
    assert sorted(r["id"] for r in passed) == sorted(other_splits)
    assert all(r["text"] == originals[r["id"]]["text"] and r["source"] == originals[r["id"]]["source"] for r in records)
    docs = manifest["documents"]
    assert docs["kept"] == len(kept) and docs["read"] == len(originals) and docs["in_split"] == int(in_split.sum())
    assert docs["kept"] + docs["dropped"] + docs["rejected"] == docs["in_split"]
    assert sum(docs["passed_through"].values()) == len(other_splits)
    assert sum(v["kept"] for v in manifest["per_source"].values()) == len(kept)
    assert abs(docs["kept_fraction"] - n / b) < 4 * np.sqrt(0.25 / in_split.sum())  # 1 - rho in expectation
    assert json.loads((tmp_path / "filter" / "manifest.json").read_text())["documents"]["kept"] == len(kept)


def test_filter_computes_the_same_scores_itself_and_writes_parquet(doc_corpus, tmp_path):
    score(program(doc_corpus, tmp_path / "scores", curator="heuristic", unit="document"))
    from_side = filter_corpus(filter_program(doc_corpus, tmp_path / "a", name="heuristic", discard=0.75,
                                             scores=str(tmp_path / "scores")))
    prog = filter_program(doc_corpus, tmp_path / "b", name="heuristic", discard=0.75)
    prog.filter.format = "parquet"
    computed = filter_corpus(prog)
    assert computed["documents"] == from_side["documents"]
    table = pq.read_table(tmp_path / "b" / "output" / (doc_corpus.stem + ".parquet"))
    assert table.column("id").to_pylist() == [r["id"] for r in _output(tmp_path / "a", doc_corpus.stem + ".jsonl.zst")]


def test_filter_with_another_tools_attributes_ranks_by_the_named_column(doc_corpus, tmp_path):
    ids = [json.loads(line)["id"] for line in doc_corpus.read_text().splitlines()]
    attrs = tmp_path / "external"
    attrs.mkdir()
    with (attrs / (doc_corpus.name + ".jsonl")).open("w") as f:  # dolma-style: id and a quality column
        for k, i in enumerate(ids):
            f.write(json.dumps({"id": i, "quality": float(k % 2)}) + "\n")
    m = filter_corpus(filter_program(doc_corpus, tmp_path / "f", name="attributes", discard=0.5,
                                     attributes=str(attrs), attribute="quality"))
    kept = {r["id"] for r in _output(tmp_path / "f", doc_corpus.stem + ".jsonl.zst") if r["score"] is not None}
    odd = {i for k, i in enumerate(ids) if k % 2}
    assert kept and len(kept & odd) > 0.9 * len(kept)  # the higher attribute is kept
    assert m["curator"] == "external"
    with pytest.raises(UserError, match="needs columns 'id' and 'nope'|numeric 'nope'"):
        filter_corpus(filter_program(doc_corpus, tmp_path / "g", name="attributes", discard=0.5,
                                     attributes=str(attrs), attribute="nope"))


def test_filter_refuses_sequence_scores_and_no_curator(doc_corpus, tmp_path):
    score(program(doc_corpus, tmp_path / "scores"))
    with pytest.raises(UserError, match="score.unit=document"):
        filter_corpus(filter_program(doc_corpus, tmp_path / "a", name="heuristic", discard=0.5,
                                     scores=str(tmp_path / "scores")))
    with pytest.raises(UserError, match="filtering needs scores"):
        filter_corpus(filter_program(doc_corpus, tmp_path / "b", name="none"))


def test_document_scores_rank_a_row_by_its_tokens_documents(doc_corpus):
    from datarater.curate.precomputed import DocumentScoresCurator
    from datarater.data import keys
    from datarater.data.pipeline import gather_rows, with_keys

    packed = train_split(doc_corpus, 64)
    rng = np.random.default_rng(0)
    score_of = {d: float(rng.normal()) for d in packed.doc_ids[::2]}  # half the documents have no score
    cur = DocumentScoresCurator({keys.key(d): s for d, s in score_of.items()})
    index = np.arange(60)
    got = cur.score_batch(with_keys(packed, gather_rows(packed, index)))
    for i, row in enumerate(index):  # the definition: the mean over the row's tokens of known documents
        docs = packed.row_doc_indices(int(row))
        vals = [score_of[packed.doc_ids[docs[s - 1]]] for s in packed.segment_ids[row] if s and
                packed.doc_ids[docs[s - 1]] in score_of]
        if vals:
            assert got[i] == pytest.approx(np.mean(vals), rel=1e-5)
        else:
            assert np.isnan(got[i])
    assert np.isnan(got).any() and np.isfinite(got).any()
