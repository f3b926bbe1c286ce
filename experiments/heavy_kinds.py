"""Heavier corruptions: does the objective pay for rejecting the mild kinds when they are ~4x as strong?

    python experiments/heavy_kinds.py OUT.jsonl [--scale 4] [--kind-scale mojibake=10 ...]

Writes the quickstart's corpus (the embedded corpus, seed 0, half of 4,000 documents corrupted,
the "wide" mix) as a jsonl file with ``id``, ``text``, ``source`` and ``label``, except that the
four kinds that rewrite a text only lightly are ``--scale`` times as strong: OCR errors (6% of
non-space characters by default), whitespace runs (one per 60 characters), control characters
(one run per 25) and the non-ASCII share that mojibake garbles (1 in 40); ``--kind-scale KIND=S``
sets one of the four to its own scale. The other kinds, the
ids, the sources and which documents are corrupted are the quickstart's. Run the objective probe
on the file to see which kinds the clean-target objective rewards rejecting:

    datarater probe corpus=files corpus.paths=[OUT.jsonl] 'meta.target.labels=[clean]' probe.each=true
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from functools import partial
from pathlib import Path

from datarater.data.embedded import corrupt
from datarater.data.embedded.harvest import HarvestConfig, harvest

LIGHT_KINDS = ("ocr", "whitespace", "nonprintable", "mojibake")


def kind_scale(item: str) -> tuple[str, float]:
    """``KIND=S`` (a light kind and a positive scale) as ``(KIND, S)``."""
    kind, _, value = item.partition("=")
    try:
        scale = float(value)
    except ValueError:
        scale = 0.0
    if kind not in LIGHT_KINDS or not scale > 0:
        raise argparse.ArgumentTypeError(f"{item!r}: expected KIND=S with KIND one of {list(LIGHT_KINDS)} and S > 0")
    return kind, scale


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--scale", type=float, default=4.0)
    parser.add_argument("--kind-scale", type=kind_scale, action="append", default=[], metavar="KIND=S")
    args = parser.parse_args()
    s = dict.fromkeys(LIGHT_KINDS, args.scale) | dict(args.kind_scale)
    heavy = {"ocr": partial(corrupt.ocr, rate=0.06 * s["ocr"]),
             "whitespace": partial(corrupt.whitespace, runs_per_char=s["whitespace"] / 60),
             "nonprintable": partial(corrupt.nonprintable, per_char=s["nonprintable"] / 25),
             "mojibake": partial(corrupt.mojibake, min_non_ascii_per_char=s["mojibake"] / 40)}
    # the quickstart's corpus, datarater_embedded/seed0_corrupt50_docs4000_wide, with those four heavier
    docs = corrupt.corrupt_documents(harvest(0, HarvestConfig(max_documents=4000)), seed=0, fraction=0.5,
                                     kinds=corrupt.MIXES["wide"], corruptions=heavy)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.open("w") as f:
        for d in docs:
            f.write(json.dumps({"id": d.id, "text": d.text, "source": d.source, "label": d.label}) + "\n")
    counts = Counter(d.label for d in docs)
    print(f"wrote {len(docs)} documents to {args.out}: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))


if __name__ == "__main__":
    main()
