"""Shared fixtures: small real-text corpora written to temporary files; 8-device child runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from datarater.data.sample import docstring_documents, write_jsonl

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


@pytest.fixture(scope="session")
def doc_corpus(tmp_path_factory) -> Path:
    """A jsonl corpus of standard-library docstrings (a few hundred KB)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        docs = docstring_documents()
    return write_jsonl(tmp_path_factory.mktemp("corpus") / "docs.jsonl", docs)


def run_on_8_devices(script: str, timeout: int) -> dict:
    """Runs ``tests/<script>`` with 8 emulated CPU devices; the JSON of its last ``RESULT`` line."""
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8", JAX_PLATFORMS="cpu")
    path = Path(__file__).with_name(script)
    r = subprocess.run([sys.executable, str(path)], env=env, capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, r.stderr[-3000:]
    line = [ln for ln in r.stdout.splitlines() if ln.startswith("RESULT ")][-1]
    return json.loads(line[len("RESULT "):])
