"""The meta-trainer: member data streams, lifetimes and resets, exact resume, the saved rater."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from datarater.cli import SUBCOMMANDS, compose
from datarater.data.corpus import load_splits
from datarater.data.tokenizer import make_tokenizer
from datarater.meta.core import outer_optimizer
from datarater.meta.data import MetaData, in_memory
from datarater.meta.state import first_lifetimes, init_meta_state, make_reset, member_key
from datarater.models.rater import load_rater
from datarater.train.metrics import read_metrics
from datarater.train.optimizer import make_optimizer

SMALL = ["model.d_model=32", "model.n_layers=1", "model.n_heads=2", "model.d_head=16", "model.d_ff=64",
         "rater.d_model=32", "rater.n_layers=1", "rater.n_heads=2", "rater.d_head=16", "rater.d_ff=64",
         "data.seq_len=32", "meta.inner_batch_size=4", "meta.outer_batch_size=4", "meta.population=2",
         "corpus.heldout_fraction=0.2"]


def args(corpus: Path, run_dir: Path, steps: int, *extra: str) -> list[str]:
    return [f"corpus.paths=[{corpus}]", f"run_dir={run_dir}", f"meta.steps={steps}", "meta.log_every=2", *SMALL, *extra]


def program(*a: str):
    return compose(SUBCOMMANDS["meta-train"], list(a))


def test_members_see_different_data(doc_corpus, tmp_path):
    prog = program(*args(doc_corpus, tmp_path / "r", 1, "meta.unroll=2"))
    splits = load_splits(prog.corpus, prog.data, make_tokenizer(prog.data), splits=("train", "heldout"))
    inner, held, rows = MetaData(in_memory(splits), prog.meta).next()
    index = rows["index"]
    assert inner["tokens"].shape == (2, 2, 4, 32) and held["tokens"].shape == (2, 4, 32)
    assert not np.array_equal(index[0], index[1])  # each member its own stream
    for p in range(2):
        assert len(set(index[p].ravel())) == index[p].size  # no row twice within an epoch of a member's stream
        for t in range(2):  # the index names the rows the batch holds
            np.testing.assert_array_equal(inner["tokens"][p, t], splits["train"].tokens[index[p, t]])
    assert not np.array_equal(inner["tokens"][0], inner["tokens"][1])
    assert not np.array_equal(held["tokens"][0], held["tokens"][1])


def test_staggered_first_lifetimes():
    assert first_lifetimes(100, 4, 2) == [24, 50, 74, 100]
    assert first_lifetimes(4, 2, 2) == [2, 4]


def test_reset_replaces_only_the_masked_member(doc_corpus, tmp_path):
    prog = program(*args(doc_corpus, tmp_path / "r", 1))
    inner_tx = make_optimizer(prog.train, eps_root=1e-8)
    outer_tx = outer_optimizer(1e-3, 0, 0.1, 1.0)
    state = init_meta_state(prog, inner_tx, outer_tx)
    # pretend both members trained: perturb parameters and optimiser step counts
    state = dict(state, theta=jax.tree.map(lambda x: x + 1.0, state["theta"]),
                 inner=jax.tree.map(lambda x: x + 1 if x.dtype == jnp.int32 else x, state["inner"]))
    before = jax.device_get(state)
    keys = jnp.stack([member_key(0, 0, 1), member_key(0, 1, 1)])
    after = jax.device_get(make_reset(prog, inner_tx)(state, jnp.array([True, False]), keys))
    for b, a in zip(jax.tree.leaves(before["theta"]), jax.tree.leaves(after["theta"]), strict=True):
        np.testing.assert_array_equal(a[1], b[1])  # member 1 untouched
        assert not np.allclose(a[0], b[0])  # member 0 re-initialised
    counts = [x for x in jax.tree.leaves(after["inner"]) if x.dtype == np.int32]
    assert counts and all(c[0] == 0 and c[1] == 1 for c in counts)


def test_resets_happen_at_each_members_lifetime(doc_corpus, tmp_path):
    from datarater.programs.meta_train import run as meta_train

    meta_train(program(*args(doc_corpus, tmp_path / "r", 6, "meta.unroll=2", "meta.lifetime=4")))
    rows = read_metrics(tmp_path / "r" / "metrics.jsonl")
    resets = {r["step"]: r.get("reset_members") for r in rows}
    # first lives 2 and 4 inner steps (staggered), then 4 each: member 0 at steps 1, 3, 5; member 1 at 2, 4, 6
    assert resets == {1: [0], 2: [1], 3: [0], 4: [1], 5: [0], 6: [1]}
    assert all(np.isfinite(r["outer_loss"]) and r["effective_batch"] <= 4 + 1e-4 for r in rows)
    assert "score_by_source" in rows[1]
    rater, cfg = load_rater(tmp_path / "r")
    assert cfg.d_model == 32
    b = {"tokens": jnp.ones((3, 32), jnp.int32), "segment_ids": jnp.ones((3, 32), jnp.int32),
         "positions": jnp.tile(jnp.arange(32), (3, 1))}
    assert rater(**b).shape == (3,)


def run_cli(a: list[str], env_extra: dict | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ, **(env_extra or {}))
    return subprocess.run([sys.executable, "-m", "datarater.cli", "meta-train", *a], env=env, capture_output=True,
                          text=True, timeout=400)


@pytest.mark.slow
def test_meta_training_resumes_exactly_after_sigkill(doc_corpus, tmp_path):
    extra = ("meta.checkpoint_every=3", "meta.lifetime=4", "meta.unroll=1")
    r = run_cli(args(doc_corpus, tmp_path / "straight", 6, *extra))
    assert r.returncode == 0, r.stderr[-2000:]
    r = run_cli(args(doc_corpus, tmp_path / "killed", 6, *extra), {"DATARATER_SIGKILL_AFTER_CHECKPOINT": "3"})
    assert r.returncode == -9, r.stderr[-2000:]
    r = run_cli(args(doc_corpus, tmp_path / "killed", 6, *extra))
    assert r.returncode == 0 and "resumed meta-training from step 3" in r.stderr, r.stderr[-2000:]
    keys = ("outer_loss", "inner_loss", "meta_grad_norm", "score_mean", "score_std", "effective_batch")
    a = [{k: row[k] for k in ("step", *keys)} for row in read_metrics(tmp_path / "straight" / "metrics.jsonl")]
    b = [{k: row[k] for k in ("step", *keys)} for row in read_metrics(tmp_path / "killed" / "metrics.jsonl")]
    assert [r["step"] for r in a] == list(range(1, 7))
    assert a == b


def test_plain_inner_steps_age_members_and_read_their_batches(doc_corpus, tmp_path):
    from datarater.programs.meta_train import run as meta_train

    extra = ("meta.unroll=1", "meta.plain_inner_steps=1", "meta.lifetime=4")
    prog = program(*args(doc_corpus, tmp_path / "r", 6, *extra))
    splits = load_splits(prog.corpus, prog.data, make_tokenizer(prog.data), splits=("train", "heldout"))
    inner, _, rows = MetaData(in_memory(splits), prog.meta).next()
    index = rows["index"]
    assert inner["tokens"].shape == (2, 2, 4, 32) and index.shape == (2, 2, 4)  # K + T batches per member
    meta_train(prog)
    resets = {r["step"]: r.get("reset_members") for r in read_metrics(tmp_path / "r" / "metrics.jsonl")}
    # 2 inner steps per meta-step (unroll 1 alone would reset at steps 2 and 4 first): first lives
    # 2 and 4 inner steps, then 4 each
    assert resets == {1: [0], 2: [1], 3: [0], 4: [1], 5: [0], 6: [1]}
