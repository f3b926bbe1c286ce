"""The embedded noisy corpus: harvest, chunking, names, TFDS build (no network, no TensorFlow), reading
(its corruptions: tests/test_embedded_corrupt.py)."""

from __future__ import annotations

import json
import logging
import re
import socket
import sys
import tempfile
from collections import Counter
from pathlib import Path

import pytest

from datarater.config import CorpusConfig
from datarater.data.documents import Document, ReadStats
from datarater.data.embedded.chunking import is_prose, pack_pieces, top_level_segments
from datarater.data.embedded.corrupt import (
    CLEAN,
    PAPER_KINDS,
    corruption_plan,
)
from datarater.data.embedded.harvest import CODE, PACKAGE_DOCS, SOURCES, STDLIB_DOCS, HarvestConfig, harvest, quotas
from datarater.data.embedded.naming import EmbeddedSpec, is_embedded_name, parse_embedded_name, prepared_dir
from datarater.data.embedded.pyfiles import package_root, stdlib_root
from datarater.data.sources import iter_documents
from datarater.errors import UserError

N_DOCS = 90  # documents per test build: small, so that a build takes about a second


# ---------------------------------------------------------------------------------------------
# Fixtures


def _block_network(mp: pytest.MonkeyPatch) -> list[str]:
    """Make every way of reaching the network raise; return the list the attempts are logged in."""
    attempts: list[str] = []

    def refuse(name: str):
        def fn(*args, **kwargs):
            attempts.append(name)
            raise OSError(f"network blocked by the test ({name})")

        return fn

    mp.setattr(socket.socket, "connect", refuse("socket.connect"))
    mp.setattr(socket.socket, "connect_ex", refuse("socket.connect_ex"))
    mp.setattr(socket, "create_connection", refuse("socket.create_connection"))
    mp.setattr(socket, "getaddrinfo", refuse("socket.getaddrinfo"))
    return attempts


@pytest.fixture(scope="module")
def builds(tmp_path_factory) -> dict[str, tuple[str, str]]:
    """Three builds made with the network blocked: seed 0 twice (different dirs) and seed 1."""
    from datarater.data.embedded.builder import build_embedded

    tmp_tfds = lambda: set(Path(tempfile.gettempdir()).glob("tmp*tfds"))
    before = tmp_tfds()
    with pytest.MonkeyPatch.context() as mp:
        attempts = _block_network(mp)
        out = {
            "a": build_embedded(tmp_path_factory.mktemp("a"), seed=0, max_documents=N_DOCS),
            "b": build_embedded(tmp_path_factory.mktemp("b"), seed=0, max_documents=N_DOCS),
            "seed1": build_embedded(tmp_path_factory.mktemp("c"), seed=1, max_documents=N_DOCS),
        }
    assert attempts == [], f"the build tried to reach the network: {attempts}"
    assert tmp_tfds() - before == set(), "the builds left TFDS scratch directories in the temp dir"
    return out


def _records(name: str, data_dir: str) -> list[dict[str, str]]:
    import tensorflow_datasets as tfds

    source = tfds.data_source(name, split="train", data_dir=data_dir, download=False)
    return [{k: v.decode("utf-8") for k, v in source[i].items()} for i in range(len(source))]


# ---------------------------------------------------------------------------------------------
# Harvest


def test_harvest_sizes_sources_and_prose(clean_docs):
    cfg = HarvestConfig(max_documents=60)
    assert Counter(d.source for d in clean_docs) == Counter(quotas(cfg))
    assert quotas(cfg) == {STDLIB_DOCS: 15, PACKAGE_DOCS: 30, CODE: 15}
    assert len({d.id for d in clean_docs}) == len({d.text for d in clean_docs}) == len(clean_docs)
    assert all(cfg.min_chars <= len(d.text) <= cfg.max_chars for d in clean_docs)
    assert all(d.label == CLEAN for d in clean_docs)
    for doc in clean_docs:
        if doc.source != CODE:
            assert all(is_prose(p) for p in doc.text.split("\n\n")), doc.id
        # the text comes from the file its id names: (nearly) every line of it is in that file
        # (string escapes such as \\n are written differently in the source)
        origin, rel = doc.id.split(":", 1)[1].split("#")[0].split("/", 1)
        root = stdlib_root() if origin == "stdlib" else package_root(origin)
        file_text = (root / rel).read_text(encoding="utf-8")
        lines = doc.text.splitlines()
        assert sum(line.strip() in file_text for line in lines) >= 0.95 * len(lines), doc.id
    per_file = Counter((d.source, d.id.split("#")[0]) for d in clean_docs)
    assert max(per_file.values()) <= cfg.max_chunks_per_file


def test_short_source_is_topped_up_past_the_per_file_cap():
    def run(n: int, cap: int) -> list[Document]:
        cfg = HarvestConfig(n, packages=("omegaconf",), source_weights={PACKAGE_DOCS: 1.0}, max_chunks_per_file=cap)
        return harvest(seed=0, cfg=cfg)

    everything = run(1000, 1000)  # omegaconf has fewer than 1000 documents: all of them
    assert {d.id for d in run(1000, 1)} == {d.id for d in everything}
    few = run(12, 1)
    per_file = Counter(d.id.split("#")[0] for d in few)
    assert len(few) == 12 < len(everything) and len(per_file) < 12  # some file gave more than one
    assert all(d.id.startswith("package_docs:omegaconf/") for d in few)


def test_is_prose():
    assert is_prose("Return the number of items in the container, counting duplicates once.")
    assert not is_prose(">>> np.arange(3)\narray([0, 1, 2])")
    assert not is_prose("0.1 0.2 0.3 0.4 0.5 0.6 0.7 ab cd ef gh ij kl")
    assert not is_prose("Too short.")


def test_pack_pieces_bounds():
    import random

    pieces = [f"paragraph {i} " + "word " * (i % 37 + 3) for i in range(300)] + ["x" * 5000]
    chunks = pack_pieces(pieces, "\n\n", 500, 2000, random.Random(0))
    assert chunks and all(500 <= len(c) <= 2000 for c in chunks)
    short = [c.split("\n\n") for c in chunks if not c.startswith("x")]
    for parts in short:  # each chunk is a run of consecutive pieces, in order
        start = pieces.index(parts[0])
        assert parts == pieces[start : start + len(parts)]
    used = sum(len(p) for parts in short for p in parts)
    assert used >= 0.9 * sum(len(p) for p in pieces[:-1])  # only short leftovers are dropped
    assert "".join(c for c in chunks if c.startswith("x")) == "x" * 5000  # a long piece is cut, not lost


def test_top_level_segments():
    import ast

    source = '"""Module doc."""\nimport os\n\n# helper\n@decorator\ndef f(x):\n    return x\n\n\nclass A:\n    pass\n'
    segments = top_level_segments(source, ast.parse(source))
    assert segments == ["import os", "# helper\n@decorator\ndef f(x):\n    return x", "class A:\n    pass"]


# ---------------------------------------------------------------------------------------------
# Names


def test_config_names_round_trip():
    spec = EmbeddedSpec(seed=3, corrupt_fraction=0.333, max_documents=50)
    assert spec.config_name == "seed3_corrupt33p3_docs50"
    assert parse_embedded_name(spec.tfds_name) == spec
    assert parse_embedded_name("datarater_embedded/seed3_corrupt33p3_docs50") == spec
    assert parse_embedded_name("datarater_embedded") == EmbeddedSpec()
    assert EmbeddedSpec(1).config_name != EmbeddedSpec(2).config_name
    assert is_embedded_name("datarater_embedded/x") and not is_embedded_name("datarater_embedded_other")
    with pytest.raises(ValueError, match="seed<S>_corrupt<PERCENT>_docs<N>"):
        parse_embedded_name("datarater_embedded/seed1")
    wide = EmbeddedSpec(0, 0.5, 4000, "wide")  # the quickstart's corpus: the mix is in the name
    assert wide.config_name == "seed0_corrupt50_docs4000_wide" and parse_embedded_name(wide.tfds_name) == wide
    with pytest.raises(ValueError, match="unknown corruption mix 'odd'"):
        parse_embedded_name("datarater_embedded/seed0_corrupt50_docs4000_odd")


def test_the_wide_mix_spreads_corrupted_documents_by_its_shares():
    from datarater.data.embedded.corrupt import MIXES, PAPER_KINDS

    labels = corruption_plan(3000, 0, 0.5, MIXES["wide"])
    counts = {k: labels.count(k) for k in set(labels)}
    assert counts["clean"] == 1500
    assert all(abs(counts[k] - 100) <= 1 for k in PAPER_KINDS)  # 1500 corrupted / 15 shares
    assert all(abs(counts[k] - 300) <= 1 for k in ("reversed", "foreign"))
    assert corruption_plan(300, 0, 0.3, MIXES["paper"]) == corruption_plan(300, 0, 0.3, PAPER_KINDS)


def test_bad_embedded_name_is_a_user_error(tmp_path):
    cfg = CorpusConfig(kind="tfds", tfds_name="datarater_embedded/nonsense", tfds_data_dir=str(tmp_path))
    with pytest.raises(UserError, match="corpus.tfds_name"):
        list(iter_documents(cfg, ReadStats()))


# ---------------------------------------------------------------------------------------------
# TFDS build and reading


def test_build_is_deterministic_for_a_seed(builds):
    a, b, seed1 = (_records(*builds[k]) for k in ("a", "b", "seed1"))
    assert len(a) == N_DOCS
    assert a == b
    assert [r["text"] for r in a] != [r["text"] for r in seed1]
    assert {r["id"] for r in a} != {r["id"] for r in seed1}
    assert "tensorflow" not in sys.modules


def test_build_holds_the_corrupted_harvest(builds):
    from datarater.data.embedded.builder import embedded_documents

    expected = embedded_documents(EmbeddedSpec(seed=0, max_documents=N_DOCS))
    records = _records(*builds["a"])
    assert records == [{"id": d.id, "text": d.text, "source": d.source, "label": d.label} for d in expected]
    assert set(SOURCES) == {r["source"] for r in records}
    assert {r["label"] for r in records} == set(PAPER_KINDS) | {CLEAN}
    meta = json.loads((prepared_dir(builds["a"][1], EmbeddedSpec(0, 0.3, N_DOCS)) / "metadata.json").read_text())
    assert meta["documents"] == N_DOCS and meta["per_label"] == dict(sorted(Counter(d.label for d in expected).items()))


def test_second_build_reuses_the_first(builds, monkeypatch):
    from datarater.data.embedded import builder

    def no_harvest(*args, **kwargs):
        raise AssertionError("harvested again")

    monkeypatch.setattr(builder, "harvest", no_harvest)
    name, data_dir = builds["a"]
    files = sorted(Path(data_dir).rglob("*.array_record*"))
    assert files, f"no ArrayRecord files under {data_dir}: nothing to compare"
    before = [f.stat().st_mtime_ns for f in files]
    assert builder.build_embedded(data_dir, seed=0, max_documents=N_DOCS) == (name, data_dir)
    assert [f.stat().st_mtime_ns for f in files] == before


def test_sources_builds_on_first_use_and_reads_labels(tmp_path, monkeypatch):
    from datarater.data.embedded.builder import embedded_documents

    attempts = _block_network(monkeypatch)
    monkeypatch.setenv("DATARATER_DATA_DIR", str(tmp_path / "cache"))
    cfg = CorpusConfig(kind="tfds", tfds_name=f"datarater_embedded/seed2_corrupt50_docs{N_DOCS}")
    stats = ReadStats()
    built: list[str] = []
    docs = list(iter_documents(cfg, stats, on_build=built.append))
    spec = EmbeddedSpec(seed=2, corrupt_fraction=0.5, max_documents=N_DOCS)
    assert len(built) == 1
    assert re.fullmatch(
        rf"built the embedded corpus {re.escape(spec.tfds_name)} in \d+\.\d s at {re.escape(str(tmp_path / 'cache'))}",
        built[0],
    )
    assert (tmp_path / "cache" / "datarater_embedded" / f"seed2_corrupt50_docs{N_DOCS}" / "1.0.0").is_dir()
    expected = embedded_documents(spec)
    assert docs == expected
    assert stats.read == stats.used == N_DOCS
    assert Counter(d.label for d in docs)[CLEAN] == N_DOCS - round(0.5 * N_DOCS)
    list(iter_documents(cfg, ReadStats(), on_build=built.append))
    assert len(built) == 1  # the second read does not build again
    assert attempts == [] and "tensorflow" not in sys.modules


def test_build_line_goes_to_the_logger_without_on_build(tmp_path, monkeypatch, caplog):
    from datarater.data.embedded import builder

    _block_network(monkeypatch)
    monkeypatch.setattr(builder, "build_embedded", lambda *args: None)  # a "build" that writes nothing
    name = "datarater_embedded/seed5_corrupt30_docs10"
    cfg = CorpusConfig(kind="tfds", tfds_name=name, tfds_data_dir=str(tmp_path))
    with caplog.at_level(logging.INFO, logger="datarater.data.tfds_source"):
        with pytest.raises(UserError, match=r"split 'train' cannot be read"):  # the fake build wrote nothing
            list(iter_documents(cfg, ReadStats()))
    lines = [r.getMessage() for r in caplog.records if r.name == "datarater.data.tfds_source"]
    tfds_name = parse_embedded_name(name).tfds_name
    assert len(lines) == 1
    assert re.fullmatch(
        rf"built the embedded corpus {re.escape(tfds_name)} in \d+\.\d s at {re.escape(str(tmp_path))}", lines[0]
    )


def test_files_corpus_reads_a_label_field(tmp_path):
    path = tmp_path / "c.jsonl"
    path.write_text(
        json.dumps({"id": "a", "text": "hello", "label": "ocr"}) + "\n" + json.dumps({"id": "b", "text": "hi"}) + "\n"
    )
    docs = list(iter_documents(CorpusConfig(paths=[str(path)]), ReadStats()))
    assert [(d.id, d.label) for d in docs] == [("a", "ocr"), ("b", "")]
