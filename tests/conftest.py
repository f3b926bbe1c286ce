"""Shared fixtures: small real-text corpora written to temporary files."""

from __future__ import annotations

import os
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
