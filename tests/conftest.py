"""Shared fixtures: small real-text corpora written to temporary files; 8-device child runs; a trained SwiGLU LM."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

import pytest

# The suite compiles far more than it runs (hundreds of small programs, each run a few times):
# XLA:CPU's code generation without LLVM's optimisations compiles them faster (whole suite
# 473 -> 369 s on 2 cores) and runs the same HLO. Set before jax is imported; child processes
# inherit it (`device_env`).
TEST_XLA_FLAGS = "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"
os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {TEST_XLA_FLAGS}".strip()
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# The suite trains many small LMs of the same shapes, each in a fresh jitted closure: JAX's
# persistent compilation cache (one directory per session, so no state carries between sessions)
# compiles each program once. `datarater.cli` uses the same directory when tests call `main`.
_CACHE = tempfile.mkdtemp(prefix="datarater-test-jit-")
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", _CACHE)
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.3")
os.environ.setdefault("DATARATER_COMPILATION_CACHE", os.environ["JAX_COMPILATION_CACHE_DIR"])

from datarater.data.sample import docstring_documents, write_jsonl  # noqa: E402


def device_env(devices: int) -> dict[str, str]:
    """Environment of a child process with ``devices`` emulated CPU devices."""
    flags = f"{os.environ['XLA_FLAGS']} --xla_force_host_platform_device_count={devices}"
    return dict(os.environ, XLA_FLAGS=flags, JAX_PLATFORMS="cpu")


@pytest.fixture(scope="session")
def doc_corpus(tmp_path_factory) -> Path:
    """A jsonl corpus of standard-library docstrings (a few hundred KB)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        docs = docstring_documents()
    return write_jsonl(tmp_path_factory.mktemp("corpus") / "docs.jsonl", docs)


def run_on_8_devices(script: str, timeout: int) -> dict:
    """Runs ``tests/<script>`` with 8 emulated CPU devices; the JSON of its last ``RESULT`` line."""
    path = Path(__file__).with_name(script)
    r = subprocess.run([sys.executable, str(path)], env=device_env(8), capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, r.stderr[-3000:]
    line = [ln for ln in r.stdout.splitlines() if ln.startswith("RESULT ")][-1]
    return json.loads(line[len("RESULT "):])


@pytest.fixture(scope="session")
def swiglu_lm(doc_corpus, tmp_path_factory) -> Path:
    """One trained nano LM with a SwiGLU MLP (so it exports as Llama), for the interop parity tests."""
    from datarater.cli import SUBCOMMANDS, compose
    from datarater.programs.train_lm import run as train_lm

    run = tmp_path_factory.mktemp("interop") / "lm"
    train_lm(compose(SUBCOMMANDS["train-lm"], [
        "model=nano", "model.mlp=swiglu", f"corpus.paths=[{doc_corpus}]", "data.seq_len=64", "train.batch_size=8",
        "train.steps=6", "train.warmup_steps=2", "train.log_every=3", "train.eval_every=6", "train.eval_batches=1",
        "train.checkpoint_every=6", f"run_dir={run}",
    ]))
    return run


@pytest.fixture(scope="session")
def clean_docs() -> list:
    """60 clean documents of the embedded corpus's harvest (seed 0), shared by its tests."""
    from datarater.data.embedded.harvest import HarvestConfig, harvest

    return harvest(seed=0, cfg=HarvestConfig(max_documents=60))
