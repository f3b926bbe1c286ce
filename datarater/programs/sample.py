"""`python -m datarater.programs.sample OUT.jsonl`: write the standard-library docstring sample corpus (`make run`)."""

from __future__ import annotations

import sys
import warnings

from datarater.console import say
from datarater.data.sample import docstring_documents, write_jsonl


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        say("usage: python -m datarater.programs.sample OUT.jsonl")
        return 2
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        docs = docstring_documents()
    out = write_jsonl(argv[0], docs)
    say(f"wrote {len(docs)} documents ({sum(len(d['text']) for d in docs):,} characters) to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
