"""Does a rater score a source's markup rows apart from its prose rows? Mean score by markup share.

    python experiments/markup_rows.py RATER_RUN [--source arxiv_latex] [--bins 0,0.02,0.05,0.1,1]

Reads the validation split of the rater run's own corpus (its ``config.yaml``), scores every
packed row with the run's rater, and prints the mean score of each source's rows, then the rows of
``--source`` split by their markup share: the fraction of a row's bytes that are LaTeX markup (a
backslash command with its name, braces, brackets, ``$``, ``%``, ``&``, ``^``, ``_``, ``~``). A row
is the source's whose documents hold the most of its tokens (the share is over the whole row). It answers a
question the source means cannot: whether a rater that ranks the LaTeX fifth lowest of ten ranks
its markup-heavy rows with the sources it rejects and its prose rows with those it keeps.

    python experiments/markup_rows.py --write-split OUT.jsonl [--source-file ../shared/data/corpus/arxiv_latex.jsonl]

writes that source's documents cut into runs of consecutive lines of one class, each run a document
of source ``latex_markup`` (lines whose markup share is at least ``--threshold``, 0.2 by default)
or ``latex_prose`` (the others), ids ``ID-K``. With the other sources' files beside it, the
objective probe (``probe.by=source``) then says whether rejecting the markup alone pays.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from pathlib import Path

import numpy as np
from scipy.stats import binned_statistic, spearmanr

from datarater.artifacts import read_run_config
from datarater.config import MetaTrainProgram
from datarater.curate.curators import load_datarater, score_rows
from datarater.data.corpus import load_splits
from datarater.data.tokenizer import ByteTokenizer, make_tokenizer

MARKUP = re.compile(rb"\\[A-Za-z@]+\*?|\\.|[{}\[\]$%&^_~]")


def row_bytes(tokenizer, ids: np.ndarray) -> bytes:
    """The bytes a row holds: exactly its bytes under the byte tokenizer (a row cut inside a UTF-8
    character would otherwise decode to a 3-byte replacement character), else its decoded text."""
    if isinstance(tokenizer, ByteTokenizer):
        ids = ids[(ids >= ByteTokenizer.OFFSET) & (ids < tokenizer.vocab_size)] - ByteTokenizer.OFFSET
        return ids.astype(np.uint8).tobytes()
    return tokenizer.decode(ids).encode()


def markup_share(text: bytes) -> float:
    """The fraction of ``text``'s bytes inside LaTeX markup matches (0 for an empty text)."""
    if not text:
        return 0.0
    return sum(m.end() - m.start() for m in MARKUP.finditer(text)) / len(text)


def split_by_markup(text: str, threshold: float) -> list[tuple[str, str]]:
    """``text`` as runs of consecutive lines of one class, ``(source, run)``: ``latex_markup`` for
    lines whose markup share is at least ``threshold``, else ``latex_prose``; blank lines join the run."""
    runs: list[tuple[str, list[str]]] = []
    for line in text.split("\n"):
        kind = runs[-1][0] if runs and not line.strip() else (
            "latex_markup" if markup_share(line.encode()) >= threshold else "latex_prose")
        if runs and runs[-1][0] == kind:
            runs[-1][1].append(line)
        else:
            runs.append((kind, [line]))
    return [(kind, "\n".join(lines)) for kind, lines in runs if "".join(lines).strip()]


def write_split(source_file: Path, out: Path, threshold: float) -> None:
    counts = {"latex_markup": [0, 0], "latex_prose": [0, 0]}
    with source_file.open() as f, out.open("w") as g:
        for line in f:
            doc = json.loads(line)
            for k, (kind, text) in enumerate(split_by_markup(doc["text"], threshold)):
                g.write(json.dumps({"id": f"{doc['id']}-{k}", "text": text, "source": kind}) + "\n")
                counts[kind][0] += 1
                counts[kind][1] += len(text.encode())
    for kind, (docs, size) in counts.items():
        print(f"{kind}: {docs} documents, {size / 1e3:.0f} kB")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("rater_run", type=Path, nargs="?")
    ap.add_argument("--write-split", type=Path, help="write the source file split by markup to this jsonl and stop")
    ap.add_argument("--source-file", type=Path, default=Path("../shared/data/corpus/arxiv_latex.jsonl"))
    ap.add_argument("--threshold", type=float, default=0.2)
    ap.add_argument("--source", default="arxiv_latex")
    ap.add_argument("--bins", default="0,0.02,0.05,0.1,1", help="edges of the markup-share bins")
    args = ap.parse_args()
    if args.write_split:
        write_split(args.source_file, args.write_split, args.threshold)
        return
    if args.rater_run is None:
        ap.error("give a RATER_RUN, or --write-split OUT.jsonl")
    edges = [float(x) for x in args.bins.split(",")]

    prog = read_run_config(args.rater_run, MetaTrainProgram, "meta-train")
    tokenizer = make_tokenizer(prog.data)
    packed = load_splits(prog.corpus, prog.data, tokenizer, splits=("validation",))["validation"]
    rows = {k: getattr(packed, k) for k in ("tokens", "segment_ids", "positions")}
    scores = score_rows(load_datarater(str(args.rater_run), tokenizer, packed.seq_len), rows, 64)
    sources = np.array([packed.source_of_row(i) for i in range(len(packed))])

    print(f"{len(packed)} validation rows of {packed.seq_len} tokens; mean score by source:")
    order = sorted(set(sources), key=lambda s: scores[sources == s].mean())
    for s in order:
        sel = scores[sources == s]
        print(f"  {s:14s} rows {sel.size:5d}  mean {sel.mean():+.3f}  median {np.median(sel):+.3f}")

    pick = np.flatnonzero(sources == args.source)
    if pick.size == 0:
        raise SystemExit(f"no validation rows of source {args.source!r}; sources: {', '.join(order)}")
    share = np.array([markup_share(row_bytes(tokenizer, packed.tokens[i][packed.segment_ids[i] > 0])) for i in pick])
    print(f"\n{args.source}: {pick.size} rows by markup share (mean score, share of the source's rows):")
    # bins [lo, hi), the last [lo, hi]; shares outside the edges are in none
    count = binned_statistic(share, scores[pick], "count", bins=edges).statistic
    mean = binned_statistic(share, scores[pick], "mean", bins=edges).statistic
    for lo, hi, n, m in zip(edges[:-1], edges[1:], count, mean, strict=True):
        if n:
            print(f"  [{lo:.2f}, {hi:.2f}{']' if hi == edges[-1] else ')'}  rows {int(n):4d} "
                  f"({n / pick.size:4.0%})  mean {m:+.3f}")
    rho = spearmanr(share, scores[pick])
    print(f"  Spearman correlation of markup share with score: {rho.statistic:+.3f} (p = {rho.pvalue:.2g})")


if __name__ == "__main__":
    try:
        main()
    except BrokenPipeError:  # `... | head`: the reader has what it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(141)
