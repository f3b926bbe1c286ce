"""Reading documents: every bad-input case ends in a counted skip or a clear UserError."""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from datarater.config import CorpusConfig
from datarater.data.documents import Document, ReadStats
from datarater.data.sources import iter_documents
from datarater.data.split import SPLITS, assign_split
from datarater.data.tfds_scratch import tfds_scratch_tempdir
from datarater.errors import UserError

CORPUS_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "corpus"  # ../shared beside the checkout


def _cfg(*paths: Path | str, **kw) -> CorpusConfig:
    return CorpusConfig(paths=[str(p) for p in paths], **kw)


def _read(cfg: CorpusConfig) -> tuple[list[Document], ReadStats]:
    stats = ReadStats()
    docs = list(iter_documents(cfg, stats))
    assert stats.read == stats.used + sum(stats.skipped.values())
    assert stats.used == len(docs)
    return docs, stats


def _write_lines(path: Path, lines: list[str | bytes | dict]) -> Path:
    raw = b"".join(
        (json.dumps(x).encode() if isinstance(x, dict) else x if isinstance(x, bytes) else x.encode()) + b"\n"
        for x in lines
    )
    path.write_bytes(gzip.compress(raw) if path.name.endswith(".gz") else raw)
    return path


def _good(n: int, start: int = 0) -> list[dict]:
    return [{"id": f"d{i}", "text": f"document number {i}", "source": "web"} for i in range(start, start + n)]


# --- JSON Lines ---------------------------------------------------------------------------------


def test_invalid_json_line_is_counted_with_file_and_line(tmp_path):
    path = _write_lines(tmp_path / "a.jsonl", [*_good(4), "{not json", *_good(15, 4)])
    docs, stats = _read(_cfg(path))
    assert [d.id for d in docs] == [f"d{i}" for i in range(19)]
    assert stats.skipped == {"invalid_json": 1}
    assert any(f"{path}:5" in w for w in stats.warnings)


def test_file_that_is_not_json_lines_is_a_user_error(tmp_path):
    path = _write_lines(tmp_path / "notes.jsonl", ["hello there", "second line", "third", *_good(2)])
    with pytest.raises(UserError, match=r"notes\.jsonl: is not JSON Lines: line 1: Expecting value"):
        _read(_cfg(path))


def test_single_line_file_that_is_not_json_is_a_user_error(tmp_path):
    path = _write_lines(tmp_path / "one.jsonl", ["plain text"])
    with pytest.raises(UserError, match=r"one\.jsonl.*line 1"):
        _read(_cfg(path))


def test_bad_fraction_below_threshold_is_tolerated(tmp_path):
    path = _write_lines(tmp_path / "a.jsonl", ["x", "y", *_good(30)])
    docs, stats = _read(_cfg(path, max_bad_fraction=0.1))
    assert len(docs) == 30 and stats.skipped["invalid_json"] == 2
    # 3 bad of 33 lines: above a 5% limit, and enough bad lines to be sure it is the file
    worse = _write_lines(tmp_path / "b.jsonl", ["x", *_good(15), "y", "z", *_good(15)])
    with pytest.raises(UserError, match=r"b\.jsonl: is not JSON Lines: line 1: .*max_bad_fraction=0.05"):
        _read(_cfg(worse, max_bad_fraction=0.05))


def test_missing_text_field_everywhere_names_the_field(tmp_path):
    path = _write_lines(tmp_path / "c.jsonl", [{"id": "1", "content": "a"}, {"id": "2", "content": "b"}])
    with pytest.raises(UserError) as err:
        _read(_cfg(path))
    msg = str(err.value)
    assert "c.jsonl" in msg and "line 1" in msg and "'text'" in msg
    assert "content" in msg and "corpus.text_field=" in msg


def test_some_missing_text_fields_are_counted(tmp_path):
    path = _write_lines(tmp_path / "a.jsonl", [*_good(3), {"id": "x", "body": "b"}, *_good(2, 3)])
    docs, stats = _read(_cfg(path))
    assert len(docs) == 5 and stats.skipped == {"missing_text_field": 1}


def test_non_object_and_non_string_text_are_counted(tmp_path):
    path = _write_lines(tmp_path / "a.jsonl", [*_good(20), "[1, 2]", {"text": 5}, {"text": None}])
    docs, stats = _read(_cfg(path))
    assert len(docs) == 20
    assert stats.skipped == {"not_an_object": 1, "text_not_string": 2}


def test_invalid_utf8_is_replaced_and_counted(tmp_path):
    bad = b'{"id": "u", "text": "caf\xe9 ok"}'
    surrogate = '{"id": "s", "text": "lone \\udc80 surrogate"}'
    path = _write_lines(tmp_path / "a.jsonl", [*_good(2), bad, surrogate])
    docs, stats = _read(_cfg(path))
    by_id = {d.id: d.text for d in docs}
    assert by_id["u"] == "caf\ufffd ok"
    assert "\ufffd" in by_id["s"] and by_id["s"].encode("utf-8")  # encodable now
    assert stats.utf8_replaced == 2 and not stats.skipped
    assert "invalid UTF-8 replaced in 2 documents" in stats.summary()


def test_empty_documents_are_skipped(tmp_path):
    path = _write_lines(tmp_path / "a.jsonl", [*_good(3), {"text": ""}, {"text": " \n\t"}, "", "   "])
    docs, stats = _read(_cfg(path))
    assert len(docs) == 3 and stats.skipped == {"empty": 2}  # blank lines are not documents
    assert stats.read == 5


def test_utf8_bom_and_crlf_are_accepted(tmp_path):
    path = tmp_path / "bom.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + b'{"text": "a"}\r\n{"text": "b"}\r\n')
    docs, _ = _read(_cfg(path))
    assert [d.text for d in docs] == ["a", "b"]


def test_ids_and_sources_are_stable_with_fallbacks(tmp_path):
    path = _write_lines(tmp_path / "mix.jsonl.gz", [{"id": "given", "text": "a"}, "", {"text": "b", "source": "s2"}])
    docs, _ = _read(_cfg(path))
    assert [(d.id, d.source) for d in docs] == [("given", "mix"), ("mix.jsonl.gz:3", "s2")]
    assert [d.id for d in _read(_cfg(path))[0]] == ["given", "mix.jsonl.gz:3"]
    docs, _ = _read(_cfg(path, id_field="key", source_field="origin"))
    assert [(d.id, d.source) for d in docs] == [("mix.jsonl.gz:1", "mix"), ("mix.jsonl.gz:3", "mix")]


def test_max_documents_stops_early(tmp_path):
    path = _write_lines(tmp_path / "a.jsonl", [{"text": ""}, *_good(10)])
    docs, stats = _read(_cfg(path, max_documents=4))
    assert [d.id for d in docs] == ["d0", "d1", "d2", "d3"] and stats.used == 4


# --- gzip ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".gz", ".zst"])
def test_truncated_compressed_file_keeps_earlier_documents(tmp_path, suffix):
    import zstandard

    lines = [json.dumps(d).encode() + b"\n" for d in _good(3000)]
    if suffix == ".gz":
        data = gzip.compress(b"".join(lines))
        data = data[: len(data) // 2]
    else:  # zstd emits whole blocks (128 KiB): cut inside the second of two frames
        c = zstandard.ZstdCompressor()
        first = c.compress(b"".join(lines[:1000]))
        second = c.compress(b"".join(lines[1000:]))
        data = first + second[: len(second) // 2]
    path = tmp_path / f"cut.jsonl{suffix}"
    path.write_bytes(data)
    with pytest.raises(UserError, match=rf"cut\.jsonl\{suffix}: .* after line \d+: the file is truncated.*allow_truncated"):
        _read(_cfg(path))  # an error by default
    docs, stats = _read(_cfg(path, allow_truncated=True))
    assert 0 < len(docs) < 3000
    assert [d.id for d in docs] == [f"d{i}" for i in range(len(docs))]
    # not "1 skipped document": the incomplete line at the cut is counted as lost, nothing is skipped
    assert stats.skipped == {} and stats.read == stats.used == len(docs)
    # gzip delivers bytes up to the cut (an incomplete line is lost there); zstd whole blocks only
    lost = 1 if suffix == ".gz" else 0
    assert stats.lost["truncated_stream"] == lost and stats.truncated_files == 1
    assert any(str(path) in w and f"kept lines 1-{len(docs)}, lost {lost} incomplete line" in w for w in stats.warnings)


def test_zstd_of_several_frames_reads_every_line(tmp_path):
    import zstandard

    c = zstandard.ZstdCompressor()
    lines = [json.dumps(d).encode() + b"\n" for d in _good(50)]
    path = tmp_path / "frames.jsonl.zst"
    path.write_bytes(c.compress(b"".join(lines[:20])) + c.compress(b"".join(lines[20:])))
    docs, stats = _read(_cfg(path))
    assert [d.id for d in docs] == [f"d{i}" for i in range(50)] and not stats.skipped


def test_file_named_gz_that_is_not_gzip_is_a_user_error(tmp_path):
    path = _write_lines(tmp_path / "plain.jsonl", _good(2)).rename(tmp_path / "plain.jsonl.gz")
    with pytest.raises(UserError, match=r"plain\.jsonl\.gz: is not a gzip file"):
        _read(_cfg(path))


# --- Parquet, text files, paths ------------------------------------------------------------------


def test_parquet_round_trip_and_errors(tmp_path):
    good = tmp_path / "p.parquet"
    pq.write_table(pa.table({"text": ["x y", "", None, "z"], "source": ["a", "b", "c", None]}), good)
    docs, stats = _read(_cfg(good))
    assert [(d.id, d.text, d.source) for d in docs] == [("p.parquet:1", "x y", "a"), ("p.parquet:4", "z", "p")]
    assert stats.skipped == {"empty": 1, "text_not_string": 1}

    nocol = tmp_path / "nocol.parquet"
    pq.write_table(pa.table({"body": ["x"], "id": ["1"]}), nocol)
    with pytest.raises(UserError, match=r"nocol\.parquet: has no column 'text'; columns present: \['body', 'id'\]"):
        _read(_cfg(nocol))

    broken = tmp_path / "broken.parquet"
    broken.write_bytes(b"this is not parquet at all")
    with pytest.raises(UserError, match=r"broken\.parquet: cannot be read as Parquet"):
        _read(_cfg(broken))


def test_txt_files_are_one_document_each_and_globs_are_sorted_and_deduplicated(tmp_path, monkeypatch):
    (tmp_path / "books" / "sub").mkdir(parents=True)
    (tmp_path / "books" / "b.txt").write_text("bee\nline two\n")
    (tmp_path / "books" / "sub" / "a.txt").write_bytes(b"ay \xff")
    (tmp_path / "books" / "empty.txt").write_text("  \n")
    monkeypatch.chdir(tmp_path)
    docs, stats = _read(_cfg("books/**/*.txt", str(tmp_path / "books" / "b.txt"), "books/*.txt"))
    assert [(d.id, d.source, d.text) for d in docs] == [
        ("b.txt", "b", "bee\nline two\n"),
        (os.path.join("sub", "a.txt"), "a", "ay \ufffd"),
    ]
    assert stats.skipped == {"empty": 1} and stats.utf8_replaced == 1


def test_path_errors_name_the_pattern(tmp_path):
    with pytest.raises(UserError, match=r"'.*nothing-\*\.jsonl' matches no file"):
        _read(_cfg(tmp_path / "nothing-*.jsonl"))
    with pytest.raises(UserError, match=r"missing\.jsonl' does not exist"):
        _read(_cfg(tmp_path / "missing.jsonl"))
    (tmp_path / "data.csv").write_text("a,b\n")
    with pytest.raises(UserError, match=r"data\.csv: unsupported file type; supported: .*\.jsonl.*\.parquet"):
        _read(_cfg(tmp_path / "data.csv"))


def test_real_corpus_file_reads_cleanly():
    path = CORPUS_DIR / "shakespeare.jsonl"
    if not path.exists():
        pytest.skip("shared corpus not available")
    docs, stats = _read(_cfg(path, max_documents=50))
    assert len(docs) == 50 and stats.read == 50
    assert docs[0].id == "shakespeare-000000" and docs[0].source == "shakespeare"


# --- ReadStats ----------------------------------------------------------------------------------


def test_summary_format_and_warning_cap():
    stats = ReadStats(read=1000, used=990, utf8_replaced=2)
    for i in range(3):
        stats.skip("invalid_json", f"f.jsonl:{i}")
    for i in range(7):
        stats.skip("empty", f"f.jsonl:{10 + i}")
    assert stats.summary() == (
        "documents read 1000 = used 990 + skipped 10 (empty: 7, invalid_json: 3); invalid UTF-8 replaced in 2 documents"
    )
    assert ReadStats(read=3, used=3).summary() == "documents read 3 = used 3 + skipped 0"
    for i in range(10):
        stats.skip("empty", f"g.jsonl:{i}")
    assert sum("empty" in w for w in stats.warnings) == 10
    d = json.loads(json.dumps(stats.as_dict()))
    assert d["skipped"] == {"empty": 17, "invalid_json": 3} and d["warnings_not_kept"] == {"empty": 7}


# --- split --------------------------------------------------------------------------------------


def test_split_is_deterministic_order_free_and_respects_fractions():
    ids = [f"doc-{i}" for i in range(10_000)]
    first = {i: assign_split(i, 0.1, 0.05, "salt") for i in ids}
    shuffled = list(ids)
    np.random.default_rng(0).shuffle(shuffled)
    assert {i: assign_split(i, 0.1, 0.05, "salt") for i in shuffled} == first
    counts = {s: sum(v == s for v in first.values()) for s in SPLITS}
    assert abs(counts["heldout"] - 1000) < 150 and abs(counts["validation"] - 500) < 110
    assert counts["train"] + counts["heldout"] + counts["validation"] == 10_000
    other_salt = {i: assign_split(i, 0.1, 0.05, "other") for i in ids}
    assert sum(first[i] != other_salt[i] for i in ids) > 1000
    # growing a fraction only moves documents out of train, never between the others
    bigger = {i: assign_split(i, 0.2, 0.05, "salt") for i in ids}
    assert all(bigger[i] == first[i] for i in ids if first[i] != "train")


# --- TFDS ---------------------------------------------------------------------------------------

_TFDS_EXAMPLES = [{"id": "t0", "text": "first é"}, {"id": "t1", "text": ""}, {"id": "t2", "text": "third"}]


@pytest.fixture(scope="module")
def tfds_dir(tmp_path_factory) -> Path:
    """A tiny TFDS dataset in array_record format, built without TensorFlow."""
    tfds = pytest.importorskip("tensorflow_datasets")
    tfds.disable_progress_bar()

    class TinyCorpus(tfds.core.GeneratorBasedBuilder, skip_registration=True):
        VERSION = tfds.core.Version("1.0.0")

        def _info(self):
            # DatasetInfo directly: `dataset_info_from_configs` looks for metadata files in a package
            features = tfds.features.FeaturesDict({"id": tfds.features.Text(), "text": tfds.features.Text()})
            return tfds.core.DatasetInfo(builder=self, features=features, disable_shuffling=True)

        def _split_generators(self, dl_manager):
            return {"train": self._generate_examples()}

        def _generate_examples(self):
            yield from enumerate(_TFDS_EXAMPLES)

    data_dir = tmp_path_factory.mktemp("tfds")
    with tfds_scratch_tempdir():  # the builder's empty GCS-metadata directory goes with it
        TinyCorpus(data_dir=str(data_dir), file_format="array_record").download_and_prepare()
    return data_dir


def test_tfds_round_trip(tfds_dir):
    cfg = CorpusConfig(kind="tfds", tfds_name="tiny_corpus", tfds_data_dir=str(tfds_dir), tfds_split="train")
    docs, stats = _read(cfg)
    assert [(d.id, d.text, d.source) for d in docs] == [
        ("t0", "first é", "tiny_corpus"),
        ("t2", "third", "tiny_corpus"),
    ]
    assert stats.skipped == {"empty": 1}
    cfg.id_field = "no_such_feature"
    assert [d.id for d in _read(cfg)[0]] == ["tiny_corpus:train:0", "tiny_corpus:train:2"]


def test_tfds_missing_dataset_is_a_user_error(tfds_dir):
    cfg = CorpusConfig(kind="tfds", tfds_name="no_such_corpus", tfds_data_dir=str(tfds_dir))
    with pytest.raises(UserError, match=rf"'no_such_corpus'.*data_dir={tfds_dir}"):
        _read(cfg)


def test_a_process_that_read_tfds_exits_quietly(tfds_dir):
    """The exit hook that stops Grain's reader threads looks at every live object; it must not
    touch what warns on access (TFDS's deprecated builder classes: ~80 warning lines per exit)."""
    import subprocess
    import sys

    code = ("import datarater.data.pipeline\n"
            "from datarater.config import CorpusConfig\n"
            "from datarater.data.documents import ReadStats\n"
            "from datarater.data.sources import iter_documents\n"
            f"cfg = CorpusConfig(kind='tfds', tfds_name='tiny_corpus', tfds_data_dir={str(tfds_dir)!r})\n"
            "print(len(list(iter_documents(cfg, ReadStats()))))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "2", out.stderr[-2000:]
    assert "DEPRECATED" not in out.stderr and "Traceback" not in out.stderr, out.stderr[-2000:]
