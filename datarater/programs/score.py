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
from pathlib import Path
from typing import Any

import jax

from datarater.artifacts import SCORE_DIR
from datarater.config import ScoreProgram
from datarater.console import Progress, result, say
from datarater.curate.curators import calibration_sample, make_curator
from datarater.curate.score import distribution_by_source, document_rowset, format_table, score_shard, sequence_rowset
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
from datarater.data.corpus import load_splits
from datarater.data.documents import ReadStats
from datarater.data.tokenizer import make_tokenizer
from datarater.errors import UserError
from datarater.rundir import prepare_run_dir


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


def run(prog: ScoreProgram) -> dict[str, Any]:
    """Runs `datarater score`; returns the summary (also in ``RUN_DIR/summary.json``)."""
    _check_program(prog)
    s = prog.score
    run_dir, _ = prepare_run_dir(prog.run_dir, prog)
    tokenizer = make_tokenizer(prog.data)
    curator = make_curator(prog.curate, prog.data, tokenizer, prog.data.seq_len, corpus=prog.corpus)  # bad inputs stop here
    assert curator is not None

    say(f"[data] reading {prog.corpus.name} ({s.split} split) ...")
    stats = ReadStats()
    packed = load_splits(prog.corpus, prog.data, tokenizer, splits=(s.split,), stats=stats, on_build=say)[s.split]
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
        say(f"{curator.name} scores per {rows.unit} ({s.split} split, {len(rows.ids)} rows) -> {score_dir}")
        result(format_table(summary["by_source"]))
        if summary["empty_after_tokenize"]:
            say(f"{summary['empty_after_tokenize']} documents were empty after tokenizing: not scored")
    return summary
