"""Scoring and filtering on Ray Data give, file by file, what the local engine gives (needs the ray extra)."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest

ray = pytest.importorskip("ray", reason="engine=ray needs Ray Data: pip install -e '.[ray]' (run by .ci/run)")

from datarater.config import CorpusConfig, DataConfig, FilterProgram, ScoreProgram  # noqa: E402
from datarater.config.curate import CurateConfig, FilterConfig, ScoreConfig  # noqa: E402
from datarater.programs.filter import run as filter_corpus  # noqa: E402
from datarater.programs.score import run as score  # noqa: E402

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def eight_files(doc_corpus, tmp_path_factory):
    """The docstring corpus cut into 8 input files (two in a subdirectory)."""
    root = tmp_path_factory.mktemp("eight")
    lines = doc_corpus.read_text().splitlines()
    for k in range(8):
        path = root / ("sub" if k >= 6 else ".") / f"part{k}.jsonl"
        path.parent.mkdir(exist_ok=True)
        path.write_text("\n".join(lines[k::8]) + "\n")
    yield root
    ray.shutdown()


def _score(root, run_dir, engine, curator="heuristic"):
    return ScoreProgram(run_dir=str(run_dir), curate=CurateConfig(name=curator),
                        corpus=CorpusConfig(paths=[str(root / "**" / "*.jsonl")]), data=DataConfig(seq_len=64),
                        score=ScoreConfig(unit="document", batch_size=16), engine=engine, workers=2)


def test_ray_scores_file_by_file_as_local_and_redoes_only_unfinished_files(eight_files, tmp_path):
    local = score(_score(eight_files, tmp_path / "local", "local"))
    on_ray = score(_score(eight_files, tmp_path / "ray", "ray"))
    assert local["input_files"] == on_ray["input_files"] == 8 and on_ray["files_scored"] == 8
    files = sorted((tmp_path / "local" / "attributes" / "heuristic").rglob("*.parquet"))
    assert len(files) == 8 and any("sub" in str(f) for f in files)
    for f in files:
        other = tmp_path / "ray" / "attributes" / "heuristic" / f.relative_to(tmp_path / "local" / "attributes" / "heuristic")
        a, b = pq.read_table(f), pq.read_table(other)
        assert a.column("id").to_pylist() == b.column("id").to_pylist()
        np.testing.assert_allclose(a.column("score").to_numpy(), b.column("score").to_numpy(), rtol=1e-6)
    # a run stopped part-way leaves complete files (atomic writes) and perhaps a temporary one: rerun
    ray_files = sorted((tmp_path / "ray" / "attributes" / "heuristic").rglob("*.parquet"))
    for f in ray_files[5:]:
        f.unlink()
    (ray_files[5].parent / f".{ray_files[5].name}.tmp-1").write_bytes(b"partial")
    kept = {f: f.stat().st_mtime_ns for f in ray_files[:5]}
    again = score(_score(eight_files, tmp_path / "ray", "ray"))
    assert again["files_scored"] == 3 and again["files_skipped"] == 5
    assert all(f.stat().st_mtime_ns == t for f, t in kept.items())
    assert sorted((tmp_path / "ray" / "attributes" / "heuristic").rglob("*.parquet")) == ray_files


def test_ray_filter_keeps_exactly_the_documents_local_keeps(eight_files, tmp_path):
    score(_score(eight_files, tmp_path / "scores", "local", curator="random"))

    def prog(run_dir, engine):
        return FilterProgram(run_dir=str(run_dir), curate=CurateConfig(name="random", discard=0.5,
                                                                       scores=str(tmp_path / "scores")),
                             corpus=CorpusConfig(paths=[str(eight_files / "**" / "*.jsonl")]),
                             filter=FilterConfig(batch_size=8, seed=1), engine=engine, workers=2)

    a, b = filter_corpus(prog(tmp_path / "a", "local")), filter_corpus(prog(tmp_path / "b", "ray"))
    assert a["documents"] == b["documents"] and a["per_source"] == b["per_source"]
    outs = sorted((tmp_path / "a" / "output").rglob("*.jsonl.zst"))
    assert len(outs) == 8
    for f in outs:
        assert f.read_bytes() == (tmp_path / "b" / "output" / f.relative_to(tmp_path / "a" / "output")).read_bytes()
    d = json.loads((tmp_path / "b" / "manifest.json").read_text())["documents"]
    assert d["kept"] + d["dropped"] + d["rejected"] == d["in_split"] and 0 < d["kept"] < d["in_split"]
