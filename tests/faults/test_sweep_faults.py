"""`sweep` and `quickstart` killed mid-way: the rerun finishes what was left and reports what an
uninterrupted run reports (a run killed after its final checkpoint is no longer ranked as inf)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from faultkit import cli, killed, ok

from datarater import faults


def sweep_args(corpus: Path, run_dir: Path) -> list[str]:
    return [f"corpus.paths=[{corpus}]", "data.seq_len=64", "train.batch_size=8", "train.steps=6", "train.eval_every=3",
            "train.eval_batches=2", "train.log_every=3", "train.checkpoint_every=3", "sweep.ratios=[0,0.5]",
            "sweep.curators=[random]", "sweep.seeds=1", f"run_dir={run_dir}"]


def results(run_dir: Path) -> tuple[str, dict]:
    """The sweep's table (results.csv: every run's final NLL, net compute gain) and best ratios."""
    return (run_dir / "results.csv").read_text(), json.loads((run_dir / "best_ratios.json").read_text())


@pytest.fixture(scope="module")
def straight(doc_corpus, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("sweep") / "sw"
    ok(cli("sweep", sweep_args(doc_corpus, run)))
    return run


@pytest.mark.parametrize("fault, env", [("SIGKILL after the first LM's final checkpoint", {faults.AFTER_CHECKPOINT: "6"}),
                                        ("SIGKILL at step 4 of the first LM", {faults.AT_STEP: "4"})])
def test_a_sweep_killed_mid_way_reports_what_an_uninterrupted_one_does(doc_corpus, tmp_path, straight, fault, env,
                                                                      record):
    run = tmp_path / "sw"
    killed(cli("sweep", sweep_args(doc_corpus, run), env))
    ok(cli("sweep", sweep_args(doc_corpus, run)))
    got = results(run)
    assert "inf" not in got[0]  # every run has its final NLL (was: inf for the one killed after its checkpoint)
    assert got == results(straight)
    record("sweep", fault, "resumed: the same final NLLs and best ratios as an uninterrupted sweep")


@pytest.mark.slow
def test_a_quickstart_killed_in_its_sweep_finishes_as_an_uninterrupted_one(tmp_path, record):
    """The whole chain on a budget a test affords: meta-train, score, sweep and report."""
    tiny = ["meta.steps=4", "meta.checkpoint_every=2", "train.steps=6", "train.eval_every=3", "train.log_every=3",
            "train.checkpoint_every=3", "quickstart.seeds=1", "quickstart.ratios=[0,0.5]",
            "quickstart.curators=[datarater,random]", "quickstart.report_rows=200"]
    ok(cli("quickstart", [*tiny, f"run_dir={tmp_path / 'straight'}"], timeout=900))
    run = tmp_path / "qs"
    killed(cli("quickstart", [*tiny, f"run_dir={run}"], {faults.AFTER_CHECKPOINT: "6"}, timeout=900))
    ok(cli("quickstart", [*tiny, f"run_dir={run}"], timeout=900))
    assert results(run / "sweep") == results(tmp_path / "straight" / "sweep")
    assert (run / "report.md").exists() or (run / "report" / "report.md").exists()
    record("quickstart", "SIGKILL after a sweep LM's final checkpoint", "resumed: the same sweep results and a report")
