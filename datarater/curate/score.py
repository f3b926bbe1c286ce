"""`datarater score`: score every packed sequence (or document) of a corpus split into side files.

Rows are cut into shards of ``score.shard_size``; JAX process ``i`` of ``n`` scores the shards
``k`` with ``k % n == i``. A shard already on disk with the fingerprint of the same corpus rows
is not scored again, so an interrupted run is completed by starting it again. With
``score.unit=document`` each document's token stream (as packed: bos, tokens, eos) is cut into
``seq_len`` chunks, each scored alone, and the document gets the mean of its chunks' scores.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from datarater.config import ScoreProgram
from datarater.curate.curators import Curator, calibration_sample, make_curator, score_rows
from datarater.curate.sidefiles import (
    combined_fingerprint,
    num_shards,
    read_scores,
    shard_bounds,
    shard_fingerprint_on_disk,
    shard_fingerprints,
    shard_name,
    write_metadata,
    write_shard,
)
from datarater.data.packing import PackedSequences, unpack
from datarater.errors import UserError

QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)
SCORE_DIR = "scores"


# ---------------------------------------------------------------------------------------------
# Pure helpers


def document_chunks(docs: list[np.ndarray], seq_len: int, pad_id: int) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Rows of ``seq_len``-token chunks of each document, and the document index of each row.

    A chunk is one segment (id 1) with positions from 0, like a document piece in a packed row;
    the last chunk of a document is padded. An empty document has no chunk.
    """
    lengths = np.array([d.size for d in docs], dtype=np.int64)
    per_doc = -(-lengths // seq_len)
    n = int(per_doc.sum())
    tokens = np.full((n, seq_len), pad_id, np.int32)
    segment_ids = np.zeros((n, seq_len), np.int32)
    positions = np.zeros((n, seq_len), np.int32)
    owner = np.repeat(np.arange(len(docs), dtype=np.int64), per_doc)
    row = 0
    for d in docs:
        for start in range(0, d.size, seq_len):
            piece = d[start : start + seq_len]
            tokens[row, : piece.size] = piece
            segment_ids[row, : piece.size] = 1
            positions[row, : piece.size] = np.arange(piece.size)
            row += 1
    return {"tokens": tokens, "segment_ids": segment_ids, "positions": positions}, owner


def average_by_owner(chunk_scores: np.ndarray, owner: np.ndarray, count: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean chunk score of each of ``count`` owners (NaN for an owner without chunks) and chunk counts."""
    chunks = np.bincount(owner, minlength=count)
    sums = np.bincount(owner, weights=np.asarray(chunk_scores, np.float64), minlength=count)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(chunks > 0, sums / chunks, np.nan), chunks


def score_documents(curator: Curator, docs: list[np.ndarray], seq_len: int, pad_id: int,
                    batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    """``(score, chunks)`` of each document: the mean score of its ``seq_len`` chunks."""
    rows, owner = document_chunks(docs, seq_len, pad_id)
    chunk_scores = score_rows(curator, rows, batch_size) if len(owner) else np.zeros(0, np.float32)
    return average_by_owner(chunk_scores, owner, len(docs))


def distribution(scores: np.ndarray) -> dict[str, float]:
    """count, mean, std, min, quantiles and max of the finite scores (non-finite ones counted apart)."""
    scores = np.asarray(scores, np.float64)
    finite = scores[np.isfinite(scores)]
    out: dict[str, float] = {"count": int(scores.size), "non_finite": int(scores.size - finite.size)}
    if finite.size:
        out.update(mean=float(finite.mean()), std=float(finite.std()), min=float(finite.min()))
        out.update({f"q{int(q * 100):02d}": float(np.quantile(finite, q)) for q in QUANTILES})
        out["max"] = float(finite.max())
    return out


def distribution_by_source(scores: np.ndarray, sources: np.ndarray) -> dict[str, dict[str, float]]:
    sources = np.asarray(sources, dtype=object)
    out = {str(s): distribution(scores[sources == s]) for s in sorted(set(sources.tolist()))}
    out["all"] = distribution(scores)
    return out


def format_table(by_source: dict[str, dict[str, float]]) -> str:
    cols = ("count", "mean", "std", "q05", "q50", "q95")
    width = max([len("source")] + [len(s) for s in by_source])
    lines = [f"{'source':<{width}} " + " ".join(f"{c:>10}" for c in cols)]
    for source, d in by_source.items():
        cells = [f"{d.get(c, float('nan')):>10.4g}" if c != "count" else f"{d['count']:>10d}" for c in cols]
        lines.append(f"{source:<{width}} " + " ".join(cells))
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# What is scored


@dataclass
class RowSet:
    """The rows a score run writes, in order: ids, sources and the token arrays fingerprinted."""

    unit: str
    ids: list[str]
    sources: list[str]
    tokens: list[np.ndarray]
    doc_ids: list[list[str]] = field(default_factory=list)  # unit=sequence: documents in each row


def sequence_rowset(packed: PackedSequences) -> RowSet:
    n = len(packed)
    return RowSet("sequence", [str(i) for i in packed.ids], [packed.source_of_row(i) for i in range(n)],
                  list(packed.tokens), [packed.row_doc_ids(i) for i in range(n)])


def document_rowset(packed: PackedSequences) -> RowSet:
    return RowSet("document", list(packed.doc_ids), list(packed.sources), unpack(packed))


def score_shard(curator: Curator, packed: PackedSequences, rows: RowSet, a: int, b: int,
                batch_size: int) -> tuple[np.ndarray, np.ndarray | None]:
    """Scores of rows ``[a, b)`` (and, for documents, their chunk counts)."""
    if rows.unit == "sequence":
        from datarater.data.pipeline import gather_rows

        batch = gather_rows(packed, np.arange(a, b))
        return score_rows(curator, batch, batch_size), None
    return score_documents(curator, rows.tokens[a:b], packed.seq_len, packed.pad_id, batch_size)


# ---------------------------------------------------------------------------------------------
# The runner


def _check_program(prog: ScoreProgram) -> None:
    if prog.curate.name == "none":
        raise UserError("config key 'curate': no curator chosen; use curate=<datarater|random|perplexity|heuristic|dsir>")
    if prog.curate.scores:
        raise UserError("config key 'curate.scores': reads precomputed scores; `datarater score` computes them (leave it empty)")


def _existing_shards(score_dir: Path, prints: list[str], mine: list[int]) -> set[int]:
    """Shards of this process already complete; a shard of other corpus rows is an error."""
    done = set()
    for i in mine:
        path = score_dir / shard_name(i, len(prints))
        found = shard_fingerprint_on_disk(path) if path.exists() else None
        if found is None:
            continue
        if found != prints[i]:
            raise UserError(
                f"{path} holds scores of other corpus rows (the corpus, tokenizer, sequence length or "
                "score settings changed): use a new run_dir"
            )
        done.add(i)
    stale = [p for p in score_dir.glob("scores-*-of-*.parquet") if not p.name.endswith(f"-of-{len(prints):05d}.parquet")]
    if stale:
        raise UserError(f"{score_dir} holds shards of a run with another shard count ({stale[0].name}): use a new run_dir")
    return done


def score(prog: ScoreProgram) -> dict[str, Any]:
    """Runs `datarater score`; returns the summary (also in ``RUN_DIR/summary.json``)."""
    import jax

    from datarater.console import Progress
    from datarater.data.corpus import load_splits
    from datarater.data.documents import ReadStats
    from datarater.data.tokenizer import make_tokenizer
    from datarater.rundir import prepare_run_dir
    from datarater.train.trainer import say

    _check_program(prog)
    s = prog.score
    run_dir, _ = prepare_run_dir(prog.run_dir, prog)
    tokenizer = make_tokenizer(prog.data)
    curator = make_curator(prog.curate, prog.data, tokenizer, prog.data.seq_len)  # bad inputs stop here
    assert curator is not None

    say(f"[data] reading {prog.corpus.name} ({s.split} split) ...")
    stats = ReadStats()
    packed = load_splits(prog.corpus, prog.data, tokenizer, splits=(s.split,), stats=stats)[s.split]
    say(f"[data] {stats.summary()}")
    rows = sequence_rowset(packed) if s.unit == "sequence" else document_rowset(packed)
    say(f"[data] {s.split}: {len(packed)} sequences of {packed.seq_len} tokens, {len(packed.doc_ids)} documents")
    if curator.needs_fit:
        say(f"[score] fitting {curator.name} on {min(prog.curate.calibration_rows, len(packed))} sampled sequences")
        curator.fit(calibration_sample(packed, prog.curate.calibration_rows, prog.curate.seed))

    score_dir = run_dir / SCORE_DIR
    score_dir.mkdir(parents=True, exist_ok=True)
    prints = shard_fingerprints(rows.ids, rows.tokens, s.shard_size)
    count = num_shards(len(rows.ids), s.shard_size)
    pi, pc = jax.process_index(), jax.process_count()
    mine = [i for i in range(count) if i % pc == pi]
    done = _existing_shards(score_dir, prints, mine)
    todo = [i for i in mine if i not in done]
    total = sum(b - a for a, b in (shard_bounds(i, len(rows.ids), s.shard_size) for i in todo))
    if done:
        say(f"[score] {len(done)} of this process's {len(mine)} shards already complete: not redone")
    progress = Progress(int(total), label="score")
    t0, scored = time.perf_counter(), 0
    for i in todo:
        a, b = shard_bounds(i, len(rows.ids), s.shard_size)
        values, chunks = score_shard(curator, packed, rows, a, b, s.batch_size)
        write_shard(score_dir / shard_name(i, count), rows.ids[a:b], rows.sources[a:b], values, prints[i],
                    doc_ids=rows.doc_ids[a:b] if rows.unit == "sequence" else None, chunks=chunks)
        scored += b - a
        rate = scored / max(time.perf_counter() - t0, 1e-9)
        progress.show(scored, shard=f"{i + 1}/{count}", **{f"{rows.unit}s_per_s": round(rate, 1)})
    seconds = time.perf_counter() - t0

    if pc > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices("datarater-score-shards")
    meta = {"curator": curator.name, "unit": rows.unit, "split": s.split, "num_rows": len(rows.ids),
            "num_shards": count, "shard_size": s.shard_size, "seq_len": packed.seq_len,
            "flops_per_sequence": curator.flops_per_sequence, "fingerprint": combined_fingerprint(prints),
            "shard_fingerprints": prints}
    summary: dict[str, Any] = {}
    if pi == 0:
        write_metadata(score_dir, meta)
        _, sources, values = read_scores(score_dir, expect_fingerprint=meta["fingerprint"])
        summary = {
            **{k: meta[k] for k in ("curator", "unit", "split", "num_rows", "num_shards")},
            "shards_written": len(todo), "shards_skipped": len(done), "rows_scored": scored,
            "seconds": seconds, "rows_per_s": scored / seconds if scored and seconds > 0 else None,
            "tokens_per_s": scored * packed.seq_len / seconds if scored and seconds > 0 and rows.unit == "sequence" else None,
            "flops_per_sequence": curator.flops_per_sequence,
            "sequences": len(packed), "documents": len(packed.doc_ids),
            "empty_after_tokenize": int(stats.skipped.get("empty_after_tokenize", 0)),
            "read": stats.as_dict(),
            "by_source": distribution_by_source(values, sources),
        }
        (run_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        print(f"{curator.name} scores per {rows.unit} ({s.split} split, {len(rows.ids)} rows) -> {score_dir}")
        print(format_table(summary["by_source"]))
        if summary["empty_after_tokenize"]:
            print(f"{summary['empty_after_tokenize']} documents were empty after tokenizing: not scored")
    return summary
