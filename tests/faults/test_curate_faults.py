"""`score` and `filter` under faults: two raters' scores in one place, killed mid-way, a full disk
while writing the filtered corpus. Scores are never mixed; outputs end as an uninterrupted run's."""

from __future__ import annotations

import errno
import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from faultkit import clear_error, cli, killed, ok, read_only

from datarater import faults
from datarater.cli import main

SMALL = ["model.d_model=32", "model.n_layers=1", "model.n_heads=2", "model.d_head=16", "model.d_ff=64",
         "rater.d_model=32", "rater.n_layers=1", "rater.n_heads=2", "rater.d_head=16", "rater.d_ff=64",
         "data.seq_len=32", "meta.inner_batch_size=4", "meta.outer_batch_size=4", "meta.population=2",
         "meta.unroll=1", "meta.lifetime=6", "meta.log_every=2", "meta.checkpoint_every=2"]


@pytest.fixture(scope="module")
def files(doc_corpus, tmp_path_factory) -> Path:
    """The docstring corpus as 3 input files."""
    lines = doc_corpus.read_text().splitlines()
    d = tmp_path_factory.mktemp("three")
    for i in range(3):
        (d / f"part{i}.jsonl").write_text("\n".join(lines[i::3]) + "\n")
    return d


def corpus(files: Path) -> str:
    return f"corpus.paths=[{files}/*.jsonl]"


def test_scores_of_two_raters_are_never_mixed(doc_corpus, tmp_path, record):
    """Case 1 of the issue: the rater under curate.rater_run changes (meta-train extended) between
    two `score` runs in one run directory; and a consumer told the rater refuses stale scores."""
    rater = tmp_path / "rater"
    ok(cli("meta-train", [f"corpus.paths=[{doc_corpus}]", f"run_dir={rater}", "meta.steps=2", *SMALL]))
    score = ["curate=datarater", f"curate.rater_run={rater}", f"corpus.paths=[{doc_corpus}]", "data.seq_len=32",
             "score.shard_size=400", f"run_dir={tmp_path / 'scores'}"]
    ok(cli("score", score))
    before = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "scores" / "scores").glob("*.parquet")}
    online = ["model.d_model=32", "model.n_layers=1", "model.n_heads=2", "model.d_head=16", "model.d_ff=64",
              f"corpus.paths=[{doc_corpus}]", "data.seq_len=32", "train.batch_size=8", "train.steps=4",
              "train.checkpoint_every=2", "curate=datarater", f"curate.rater_run={rater}", "curate.discard=0.5",
              f"run_dir={tmp_path / 'online'}"]
    killed(cli("train-lm", online, {faults.AFTER_CHECKPOINT: "2"}))  # curating with the rater as it is now
    ok(cli("meta-train", [f"corpus.paths=[{doc_corpus}]", f"run_dir={rater}", "meta.steps=4", *SMALL]))  # extended
    clear_error(cli("train-lm", online), "was trained up to its checkpoint with datarater", "meta-step 2",
                "would go on with datarater", "meta-step 4", "cannot change its curation part-way")
    record("train-lm", "resumed after the rater it curates with was meta-trained further",
           "clear error naming both raters (was: finished on the new one, exit 0)")
    r = cli("score", score)
    line = clear_error(r, "holds scores by datarater", "meta-step 2", "this run scores with datarater", "meta-step 4",
                       "score.force=true")
    assert {p.name: p.stat().st_mtime_ns for p in (tmp_path / "scores" / "scores").glob("*.parquet")} == before
    saved = (tmp_path / "scores" / "config.yaml").read_text()
    assert str(rater) in saved and "force: false" in saved  # the refused rerun left the config of what is there
    train = ["model.d_model=32", "model.n_layers=1", "model.n_heads=2", "model.d_head=16", "model.d_ff=64",
             f"corpus.paths=[{doc_corpus}]", "data.seq_len=32", "train.batch_size=8", "train.steps=2",
             f"curate.scores={tmp_path / 'scores'}", f"curate.rater_run={rater}", "curate.discard=0.5",
             f"run_dir={tmp_path / 'lm'}"]
    clear_error(cli("train-lm", train), "config key 'curate.rater_run'", "meta-step 2", "not by the rater now in")
    ok(cli("score", [*score, "score.force=true"]))  # asked: every shard rescored by the new rater
    meta = json.loads((tmp_path / "scores" / "scores" / "meta.json").read_text())
    assert meta["producer"]["rater"]["meta_step"] == 4
    ok(cli("train-lm", train))  # now the scores are the rater's
    record("score", "rerun with the rater at curate.rater_run changed (meta-train extended)",
           "clear error naming both raters (digest, meta-step); score.force=true rescores")
    record("train-lm", "curate.scores made by another rater than curate.rater_run", "clear error naming both")
    assert "digest" in line


def attribute_tables(run: Path) -> dict[str, list]:
    return {p.name: pq.read_table(p).to_pylist() for p in sorted((run / "attributes").rglob("*.parquet"))}


def test_score_killed_after_one_file_redoes_only_the_rest(files, tmp_path, record):
    args = ["curate=heuristic", corpus(files), "score.unit=document", "data.seq_len=64"]
    ok(cli("score", [*args, f"run_dir={tmp_path / 'straight'}"]))
    run = tmp_path / "run"
    killed(cli("score", [*args, f"run_dir={run}"], {faults.AFTER_FILES: "1"}))
    assert len(attribute_tables(run)) == 1
    r = cli("score", [*args, f"run_dir={run}"])
    ok(r)
    assert "1 already scored, 2 to score" in r.stderr
    assert attribute_tables(run) == attribute_tables(tmp_path / "straight")
    record("score", "SIGKILL after the first of 3 attribute files", "resumed: the other 2 scored, identical files")


def test_score_of_packed_rows_killed_after_a_shard_redoes_only_the_rest(doc_corpus, tmp_path, record):
    args = ["curate=heuristic", f"corpus.paths=[{doc_corpus}]", "data.seq_len=64", "score.shard_size=500"]
    ok(cli("score", [*args, f"run_dir={tmp_path / 'straight'}"]))
    run = tmp_path / "run"
    killed(cli("score", [*args, f"run_dir={run}"], {faults.AFTER_FILES: "1"}))
    assert len(list((run / "scores").glob("scores-*.parquet"))) == 1
    r = cli("score", [*args, f"run_dir={run}"])
    ok(r)
    assert "1 of this process's" in r.stderr and "already complete: not redone" in r.stderr

    def shards(d: Path) -> dict[str, list]:
        return {p.name: pq.read_table(p).to_pylist() for p in sorted((d / "scores").glob("scores-*.parquet"))}

    assert len(shards(run)) > 1 and shards(run) == shards(tmp_path / "straight")
    record("score", "SIGKILL after the first packed-row shard", "resumed: the other shards scored, identical files")


def outputs(run: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((run / "output").rglob("*")) if p.is_file()}


def manifest_counts(run: Path) -> dict:
    m = json.loads((run / "manifest.json").read_text())
    return {k: m[k] for k in ("documents", "per_source", "cdf")}


@pytest.fixture(scope="module")
def scored(files, tmp_path_factory) -> Path:
    """Heuristic scores of every document of the 3 files (so a filter's only output files are its own)."""
    run = tmp_path_factory.mktemp("scored") / "run"
    ok(cli("score", ["curate=heuristic", corpus(files), "score.unit=document", "data.seq_len=64", f"run_dir={run}"]))
    return run


def test_filter_killed_mid_way_and_rerun_writes_the_same_corpus(files, scored, tmp_path, record):
    args = [f"curate.scores={scored}", corpus(files), "curate.discard=0.5", "data.seq_len=64"]
    ok(cli("filter", [*args, f"run_dir={tmp_path / 'straight'}"]))
    run = tmp_path / "run"
    killed(cli("filter", [*args, f"run_dir={run}"], {faults.AFTER_FILES: "1"}))
    assert len(outputs(run)) == 1 and not (run / "manifest.json").exists()
    ok(cli("filter", [*args, f"run_dir={run}"]))
    assert outputs(run) == outputs(tmp_path / "straight")  # byte for byte
    assert manifest_counts(run) == manifest_counts(tmp_path / "straight")
    record("filter", "SIGKILL after the first of 3 output files", "resumed: identical output files and manifest counts")


def test_a_full_disk_while_filtering_leaves_no_part_written_file(files, scored, tmp_path, monkeypatch, capsys, record):
    from datarater.curate import jobs

    args = [f"curate.scores={scored}", corpus(files), "curate.discard=0.5", "data.seq_len=64"]
    assert main(["filter", *args, f"run_dir={tmp_path / 'straight'}"]) == 0
    real, calls = jobs.OutputWriter.write, [0]

    def write(self, record_):
        calls[0] += 1
        if calls[0] == 150:  # in the second output file
            raise OSError(errno.ENOSPC, "No space left on device")
        real(self, record_)

    monkeypatch.setattr(jobs.OutputWriter, "write", write)
    run = tmp_path / "run"
    capsys.readouterr()
    assert main(["filter", *args, f"run_dir={run}"]) == 2
    err = capsys.readouterr().err
    assert f"writing {run / 'output'}/part" in err and "failed: No space left on device; the part written was removed" in err
    assert "Traceback" not in err and not (run / "manifest.json").exists()
    assert not [p for p in (run / "output").rglob("*") if p.name.startswith(".")]  # no temporary left
    monkeypatch.setattr(jobs.OutputWriter, "write", real)
    assert main(["filter", *args, f"run_dir={run}"]) == 0
    assert outputs(run) == outputs(tmp_path / "straight")
    record("filter", "ENOSPC writing the second output file (simulated)",
           "clear error naming the file, no part-written file; rerun gives the same corpus")


def test_score_into_a_read_only_folder_is_one_clear_line(files, tmp_path, record):
    args = ["curate=heuristic", corpus(files), "score.unit=document", "data.seq_len=64", f"run_dir={tmp_path / 'run'}"]
    ok(cli("score", args))
    before = attribute_tables(tmp_path / "run")
    target = next((tmp_path / "run" / "attributes").iterdir())
    for p in target.rglob("*.parquet"):
        p.unlink()  # to be scored again, into a folder that refuses writes
    with read_only(target):
        r = cli("score", args)
        clear_error(r, str(target), "Operation not permitted")
    ok(cli("score", args))
    assert attribute_tables(tmp_path / "run") == before
    record("score", "read-only attribute folder", "clear error naming the file; rerun gives the same scores")
