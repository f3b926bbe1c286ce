"""The LM trainer: it learns, it logs, and a killed run resumes bit-for-bit."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import device_env

from datarater.cli import SUBCOMMANDS, compose
from datarater.errors import UserError
from datarater.programs.train_lm import run as train_lm
from datarater.train.metrics import read_metrics


def overrides(corpus: Path, run_dir: Path, steps: int, *extra: str) -> list[str]:
    return [
        "model=nano", f"corpus.paths=[{corpus}]", "data.seq_len=64", "train.batch_size=8",
        f"train.steps={steps}", "train.warmup_steps=5", "train.log_every=5", "train.eval_every=10",
        "train.eval_batches=4", "train.checkpoint_every=10", f"run_dir={run_dir}", *extra,
    ]


def program(*args: str):
    return compose(SUBCOMMANDS["train-lm"], list(args))


def test_training_lowers_validation_nll_and_logs_throughput(doc_corpus, tmp_path):
    summary = train_lm(program(*overrides(doc_corpus, tmp_path / "run", 30)))
    rows = read_metrics(tmp_path / "run" / "metrics.jsonl")
    val = [r["val_nll"] for r in rows if "val_nll" in r]
    assert rows[0]["step"] == 0 and "val_nll" in rows[0]
    assert val[-1] < val[0] - 0.5  # from ~log(264) = 5.6 nats, clearly learning
    losses = [r for r in rows if "loss" in r]
    assert [r["step"] for r in losses] == list(range(1, 31))
    logged = [r for r in losses if "tokens_per_s" in r]
    assert logged and all(r["tokens_per_s"] > 0 and 0 < r["mfu"] < 1 for r in logged)
    assert summary["final_val_nll"] == pytest.approx(val[-1])
    assert (tmp_path / "run" / "config.yaml").exists()
    assert sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir() if p.name.isdigit()) == ["20", "30"]


def run_cli(args: list[str], env_extra: dict | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ, **(env_extra or {}))
    return subprocess.run(
        [sys.executable, "-m", "datarater.cli", "train-lm", *args], env=env, capture_output=True, text=True, timeout=300
    )


def loss_by_step(run_dir: Path) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in read_metrics(run_dir / "metrics.jsonl") if "loss" in r}


def test_resume_after_sigkill_matches_uninterrupted_run(doc_corpus, tmp_path):
    straight = tmp_path / "straight"
    killed = tmp_path / "killed"
    # checkpoints every 20 steps, logs every 6: rows between the last log and the kill must survive
    cadence = ("train.checkpoint_every=20", "train.log_every=6")
    r = run_cli(overrides(doc_corpus, straight, 40, *cadence))
    assert r.returncode == 0, r.stderr
    r = run_cli(overrides(doc_corpus, killed, 40, *cadence), {"DATARATER_SIGKILL_AFTER_CHECKPOINT": "20"})
    assert r.returncode == -9, r.stderr  # really killed, after its step-20 checkpoint
    assert sorted(loss_by_step(killed)) == list(range(1, 21))
    r = run_cli(overrides(doc_corpus, killed, 40, *cadence))
    assert r.returncode == 0, r.stderr
    assert "resumed from step 20" in r.stderr
    a, b = loss_by_step(straight), loss_by_step(killed)
    assert sorted(a) == sorted(b) == list(range(1, 41))
    assert all(a[s] == b[s] for s in a), {s: (a[s], b[s]) for s in a if a[s] != b[s]}
    val_a = [r["val_nll"] for r in read_metrics(straight / "metrics.jsonl") if "val_nll" in r]
    val_b = [r["val_nll"] for r in read_metrics(killed / "metrics.jsonl") if "val_nll" in r]
    assert val_a == val_b


@pytest.mark.slow
def test_checkpoint_from_8_devices_resumes_on_one_device(doc_corpus, tmp_path):
    # Saved FSDP-sharded over 8 emulated devices, killed, resumed on 1 device with the default
    # mesh: the same trajectory as an uninterrupted 1-device run (up to the reduction order of
    # the sharded matmuls), and the data iterator goes on where it stopped.
    cadence = ("train.checkpoint_every=20", "train.log_every=10")
    straight, moved = tmp_path / "straight", tmp_path / "moved"
    r = run_cli(overrides(doc_corpus, straight, 40, *cadence))
    assert r.returncode == 0, r.stderr
    r = run_cli(overrides(doc_corpus, moved, 40, *cadence, "mesh=fsdp"),
                {**device_env(8), "DATARATER_SIGKILL_AFTER_CHECKPOINT": "20"})
    assert r.returncode == -9, r.stderr
    assert "mesh {'data': 1, 'fsdp': 8, 'tensor': 1}" in r.stderr
    r = run_cli(overrides(doc_corpus, moved, 40, *cadence))
    assert r.returncode == 0, r.stderr
    assert "resumed from step 20" in r.stderr and "mesh {'data': 1, 'fsdp': 1, 'tensor': 1}" in r.stderr
    a, b = loss_by_step(straight), loss_by_step(moved)
    assert sorted(a) == sorted(b) == list(range(1, 41))
    np.testing.assert_allclose([b[s] for s in a], [a[s] for s in a], rtol=1e-4)
    # a wrong restore (fresh weights, restarted data or schedule) is off by far more than 1e-4
    assert abs(b[21] - a[1]) > 0.1


def test_restarting_with_another_config_is_refused(doc_corpus, tmp_path):
    train_lm(program(*overrides(doc_corpus, tmp_path / "run", 5)))
    with pytest.raises(UserError, match="train.lr"):
        train_lm(program(*overrides(doc_corpus, tmp_path / "run", 5, "train.lr=0.1")))
    # more steps would change the cosine schedule mid-run: refused too
    with pytest.raises(UserError, match="train.steps"):
        train_lm(program(*overrides(doc_corpus, tmp_path / "run", 10)))
    # logging cadence may change; a finished run is left as it is
    before = (tmp_path / "run" / "summary.json").read_text()
    train_lm(program(*overrides(doc_corpus, tmp_path / "run", 5, "train.log_every=1")))
    assert (tmp_path / "run" / "summary.json").read_text() == before


def test_failed_start_does_not_lock_the_run_dir(doc_corpus, tmp_path):
    with pytest.raises(UserError):
        train_lm(program(*overrides(tmp_path / "missing.jsonl", tmp_path / "run", 5)))
    train_lm(program(*overrides(doc_corpus, tmp_path / "run", 5)))  # the corrected command runs
    assert max(loss_by_step(tmp_path / "run")) == 5


def test_batch_larger_than_split_is_a_clear_error(doc_corpus, tmp_path):
    with pytest.raises(UserError, match="batch_size"):
        train_lm(program(*overrides(doc_corpus, tmp_path / "run", 5, "train.batch_size=100000")))


def test_vocab_smaller_than_tokenizer_is_refused(doc_corpus, tmp_path):
    with pytest.raises(UserError, match="model.vocab_size"):
        train_lm(program(*overrides(doc_corpus, tmp_path / "run", 5, "model.vocab_size=100")))


def test_a_validation_group_is_evaluated_along_the_curve(doc_corpus, tmp_path):
    """eval.curve_sets: a source's NLL at every evaluation (what a sweep selecting on it reads its
    net compute gain from); a group the validation split lacks is refused before any compute."""
    run = tmp_path / "run"
    with pytest.raises(UserError, match=r"eval.curve_sets\[0\].*must be source:<name> or label:<name>; got 'logging'"):
        program(*overrides(doc_corpus, run, 10, "eval.curve_sets=[logging]"))
    with pytest.raises(UserError, match=r"eval.curve_sets\[0\].*'source:nope' is no group.*their groups: .*source:logging"):
        train_lm(program(*overrides(doc_corpus, run, 10, "eval.curve_sets=[source:nope]")))
    assert not (run / "metrics.jsonl").exists() and not (run / "checkpoints").exists()
    summary = train_lm(program(*overrides(doc_corpus, run, 10, "eval.curve_sets=[source:logging]", "train.eval_batches=0",
                                          "target.sources=[itertools]")))
    rows = [r for r in read_metrics(run / "metrics.jsonl") if "val_nll" in r]
    assert [r["step"] for r in rows] == [0, 10] and all("nll/source:logging" in r and "target_nll" in r for r in rows)
    # the target's curve too: its validation documents packed alone (rows cut elsewhere than in the
    # whole split's packing, so near, not at, their final NLL), not the whole split's
    assert rows[-1]["target_nll"] == pytest.approx(summary["final_nll_sets"]["target"], abs=0.02)
    assert abs(rows[-1]["target_nll"] - rows[-1]["val_nll"]) > 0.05
    last = rows[-1]
    # all of the source's validation rows, packed on their own: its final NLL, not the whole split's
    assert last["nll/source:logging"] == pytest.approx(summary["final_nll_sets"]["source:logging"], rel=1e-3)
    assert abs(last["nll/source:logging"] - last["val_nll"]) > 1e-2


def test_the_done_line_gives_the_whole_split_nll_and_says_what_val_nll_saw():
    """`train-lm` printed the progress line's val_nll (the first train.eval_batches batches) as "validation
    NLL" right under the whole split's, two numbers 0.09 apart on C4 with one name."""
    from datarater.programs.train_lm import done_nll

    val = [{"index": np.arange(0, 32)}, {"index": np.concatenate([np.arange(32, 40), -np.ones(24, np.int64)])}]
    splits = {"validation": list(range(628))}
    assert done_nll({"validation": 2.19}, splits, val) == "validation NLL 2.1900 over its 628 rows (val_nll while training: its first 40)"
    assert done_nll({"validation": 2.19}, {"validation": list(range(40))}, val) == "validation NLL 2.1900 over its 40 rows"
