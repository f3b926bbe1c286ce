"""Interop fixtures: one trained nano LM (SwiGLU, so it exports as Llama) shared by the parity tests.

These tests need the `interop` extra (transformers, torch, lm-eval): without it they are skipped,
with a reason that says how to install it.
"""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def swiglu_lm(doc_corpus, tmp_path_factory):
    from datarater.cli import SUBCOMMANDS, compose
    from datarater.programs.train_lm import run as train_lm

    run = tmp_path_factory.mktemp("interop") / "lm"
    train_lm(compose(SUBCOMMANDS["train-lm"], [
        "model=nano", "model.mlp=swiglu", f"corpus.paths=[{doc_corpus}]", "data.seq_len=64", "train.batch_size=8",
        "train.steps=6", "train.warmup_steps=2", "train.log_every=3", "train.eval_every=6", "train.eval_batches=1",
        "train.checkpoint_every=6", f"run_dir={run}",
    ]))
    return run
