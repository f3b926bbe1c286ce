"""A small sample corpus that needs no download: docstrings of the Python standard library.

    python -m datarater.programs.sample OUT.jsonl

Real human-written prose (a few hundred documents, ~180 KB), identical on every machine with the
same Python version. Used by the README's first run and by the tests.
"""

from __future__ import annotations

import importlib
import inspect
import json
from pathlib import Path

MODULES = ("json", "re", "collections", "argparse", "functools", "itertools", "pathlib", "textwrap",
           "inspect", "logging", "subprocess", "statistics", "datetime", "random", "string", "typing")


def docstring_documents(modules: tuple[str, ...] = MODULES, min_chars: int = 80) -> list[dict]:
    """One document per public object with a docstring of at least ``min_chars`` characters."""
    docs: list[dict] = []
    seen: set[str] = set()
    for name in modules:
        mod = importlib.import_module(name)
        for attr in sorted(dir(mod)):
            if attr.startswith("_"):
                continue
            doc = inspect.getdoc(getattr(mod, attr, None))
            if doc and len(doc) >= min_chars and doc not in seen:
                seen.add(doc)
                docs.append({"id": f"{name}.{attr}", "text": doc, "source": name})
    return docs


def write_jsonl(path: str | Path, rows: list[dict]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path
