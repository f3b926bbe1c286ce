"""`meta-train` under faults: a diverged member, every member diverged, killed anywhere, a damaged checkpoint."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
from faultkit import clear_error, cli, killed, metric_rows, ok, read_only, refused_on_a_full_disk, small_disk

from datarater import faults
from datarater.meta.state import NAN_ENV

STEPS = 8
SMALL = ["model.d_model=32", "model.n_layers=1", "model.n_heads=2", "model.d_head=16", "model.d_ff=64",
         "rater.d_model=32", "rater.n_layers=1", "rater.n_heads=2", "rater.d_head=16", "rater.d_ff=64",
         "data.seq_len=32", "meta.inner_batch_size=4", "meta.outer_batch_size=4", "meta.population=2",
         "meta.unroll=1", "meta.lifetime=6", "meta.log_every=2", "meta.checkpoint_every=3"]


def args(corpus: Path, run_dir: Path, *extra: str) -> list[str]:
    return [f"corpus.paths=[{corpus}]", f"run_dir={run_dir}", f"meta.steps={STEPS}", *SMALL, *extra]


def rater_digest(run: Path) -> str:
    return json.loads((run / "rater.json").read_text())["digest"]


@pytest.fixture(scope="module")
def straight(doc_corpus, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("meta") / "run"
    ok(cli("meta-train", args(doc_corpus, run)))
    return run


def test_a_diverged_member_is_reinitialised_and_the_others_update(doc_corpus, tmp_path, record):
    run = tmp_path / "run"
    r = cli("meta-train", args(doc_corpus, run), {NAN_ENV: "3:1"})  # member 1's LM is NaN before step 3
    ok(r)
    assert "member(s) [1] had a non-finite meta-gradient: left out and re-initialised" in r.stderr
    rows = {row["step"]: row for row in metric_rows(run)}
    assert rows[3]["diverged_members"] == [1] and all("diverged_members" not in rows[s] for s in rows if s != 3)
    assert all(np.isfinite(rows[s]["outer_loss"]) for s in rows if s > 3)  # member 1 trains again from scratch
    s = json.loads((run / "summary.json").read_text())
    assert s["updates"] == STEPS and s["skipped_updates"] == 0 and s["diverged_members"] == 1
    record("meta-train", "NaN in one member's LM (of 2) at step 3",
           "handled: that member left out of the update and re-initialised, the rater updated on the other")


def test_no_member_left_stops_the_run_and_saves_no_rater(doc_corpus, tmp_path, record):
    run = tmp_path / "run"
    r = cli("meta-train", args(doc_corpus, run, "meta.population=1", "meta.max_skipped=1"), {NAN_ENV: "2:0"})
    clear_error(r, "meta-training stopped at step 2", "meta.max_skipped=1", "No rater was saved")
    assert not (run / "rater").exists() and not (run / "summary.json").exists()
    record("meta-train", "NaN in the only member at step 2 (meta.max_skipped=1)",
           "clear error naming meta.max_skipped; no rater saved")


def test_sigkill_at_a_random_step_resumes_to_the_same_rater(doc_corpus, tmp_path, straight, record):
    step = random.Random(5).randint(4, STEPS - 1)
    run = tmp_path / "run"
    killed(cli("meta-train", args(doc_corpus, run), {faults.AT_STEP: str(step)}))
    ok(cli("meta-train", args(doc_corpus, run)))
    assert metric_rows(run) == metric_rows(straight)
    assert rater_digest(run) == rater_digest(straight)  # the same rater, bit for bit
    record("meta-train", f"SIGKILL at meta-step {step}", "resumed: identical metric rows and rater")


def test_a_damaged_latest_meta_checkpoint_falls_back(doc_corpus, tmp_path, straight, record):
    run = tmp_path / "run"
    killed(cli("meta-train", args(doc_corpus, run), {faults.AFTER_CHECKPOINT: "6"}))
    meta = run / "checkpoints" / "6" / "extra" / "metadata"
    meta.write_text(meta.read_text()[:5])  # the JSON item (data iterator, members) cut short
    r = cli("meta-train", args(doc_corpus, run))
    ok(r)
    assert f"file {meta}" in r.stderr and "resumed from step 3" in r.stderr
    assert metric_rows(run) == metric_rows(straight) and rater_digest(run) == rater_digest(straight)
    record("meta-train", "latest checkpoint's JSON item truncated",
           "resumed from the previous step: warning names the file, identical rater")


@pytest.mark.parametrize("fault, env", [("SIGKILL while the step-6 checkpoint is written", {faults.DURING_SAVE: "6"}),
                                        ("SIGKILL after the final checkpoint, before the rater is saved",
                                         {faults.AFTER_CHECKPOINT: str(STEPS)})])
def test_killed_in_or_after_a_save_resumes_to_the_same_rater(doc_corpus, tmp_path, straight, fault, env, record):
    run = tmp_path / "run"
    killed(cli("meta-train", args(doc_corpus, run), env))
    assert not (run / "rater.json").exists()
    ok(cli("meta-train", args(doc_corpus, run)))
    assert metric_rows(run) == metric_rows(straight) and rater_digest(run) == rater_digest(straight)
    record("meta-train", fault, "resumed: identical metric rows and rater")


def test_a_read_only_checkpoint_folder_is_refused_at_start(doc_corpus, tmp_path, record):
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    with read_only(run / "checkpoints"):
        clear_error(cli("meta-train", args(doc_corpus, run)), f"checkpoint folder {run / 'checkpoints'} is not writable")
    assert not (run / "rater").exists()
    record("meta-train", "read-only checkpoint folder", "clear error at start naming the folder")


def test_a_full_disk_stops_meta_training_at_the_save(doc_corpus, tmp_path, straight, record):
    disk = tmp_path / "disk"
    with small_disk(disk, 16):
        run = disk / "run"
        filler = refused_on_a_full_disk("meta-train", args(doc_corpus, run), run, disk, after_step=3, leave_kib=256)
        assert not (run / "rater").exists()
        filler.unlink()
        ok(cli("meta-train", args(doc_corpus, run)))
        assert metric_rows(run) == metric_rows(straight) and rater_digest(run) == rater_digest(straight)
    record("meta-train", "full disk (a 16 MiB tmpfs filled) at the step-6 save",
           "clear error naming the folder; resumed after freeing space, identical rater")
