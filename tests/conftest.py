"""Shared fixtures: small real-text corpora written to temporary files."""

from __future__ import annotations

import inspect
import json
import os
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO = Path(__file__).resolve().parent.parent
# Standard-library modules whose docstrings give real, human-written prose on every machine.
_DOC_MODULES = ("json", "re", "collections", "argparse", "functools", "itertools", "pathlib", "textwrap",
                "inspect", "logging", "subprocess", "statistics", "datetime", "random", "string", "typing")


def stdlib_documents() -> list[dict]:
    """Docstrings of standard-library objects, one document each (deterministic)."""
    import importlib

    docs = []
    for name in _DOC_MODULES:
        mod = importlib.import_module(name)
        for attr in sorted(dir(mod)):
            if attr.startswith("_"):
                continue
            doc = inspect.getdoc(getattr(mod, attr, None))
            if doc and len(doc) > 80 and doc not in {d["text"] for d in docs[-50:]}:
                docs.append({"id": f"{name}.{attr}", "text": doc, "source": name})
    return docs


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture(scope="session")
def doc_corpus(tmp_path_factory) -> Path:
    """A jsonl corpus of standard-library docstrings (a few hundred KB)."""
    return write_jsonl(tmp_path_factory.mktemp("corpus") / "docs.jsonl", stdlib_documents())
