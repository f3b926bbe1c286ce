"""Heavier corruptions: does the objective pay for rejecting the mild kinds when they are ~4x as strong?

    python experiments/heavy_kinds.py OUT.jsonl [--scale 4]

Writes the quickstart's corpus (the embedded corpus, seed 0, half of 4,000 documents corrupted,
the "wide" mix) as a jsonl file with ``id``, ``text``, ``source`` and ``label``, except that the
four kinds that rewrite a text only lightly are ``--scale`` times as strong: OCR errors (6% of
non-space characters by default), whitespace runs (one per 60 characters), control characters
(one run per 25) and the non-ASCII share that mojibake garbles (1 in 40). The other kinds, the
ids, the sources and which documents are corrupted are the quickstart's. Run the objective probe
on the file to see which kinds the clean-target objective rewards rejecting:

    datarater probe corpus=files corpus.paths=[OUT.jsonl] 'meta.target.labels=[clean]' probe.each=true
"""

from __future__ import annotations

import argparse
import functools
import json
import random
from pathlib import Path

from datarater.data.embedded import corrupt
from datarater.data.embedded.builder import embedded_documents
from datarater.data.embedded.naming import EmbeddedSpec


def heavy_mojibake(text: str, rng: random.Random, scale: float) -> str:
    typeset = corrupt.typeset(text, rng, min_non_ascii_per_char=scale / 40)
    return "".join(corrupt._CP1252[b] for b in typeset.encode("utf-8"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--scale", type=float, default=4.0)
    args = parser.parse_args()
    s = args.scale
    heavy = {"ocr": functools.partial(corrupt.ocr, rate=0.06 * s),
             "whitespace": functools.partial(corrupt.whitespace, runs_per_char=s / 60),
             "nonprintable": functools.partial(corrupt.nonprintable, per_char=s / 25),
             "mojibake": functools.partial(heavy_mojibake, scale=s)}
    saved = {k: corrupt.CORRUPTIONS[k] for k in heavy}
    corrupt.CORRUPTIONS.update(heavy)
    try:
        docs = embedded_documents(EmbeddedSpec(seed=0, corrupt_fraction=0.5, max_documents=4000, mix="wide"))
    finally:
        corrupt.CORRUPTIONS.update(saved)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.open("w") as f:
        for d in docs:
            f.write(json.dumps({"id": d.id, "text": d.text, "source": d.source, "label": d.label}) + "\n")
    counts: dict[str, int] = {}
    for d in docs:
        counts[d.label] = counts.get(d.label, 0) + 1
    print(f"wrote {len(docs)} documents to {args.out}: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))


if __name__ == "__main__":
    main()
