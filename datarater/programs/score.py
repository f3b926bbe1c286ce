"""`datarater score`: score every packed sequence of a corpus split into side files, or every document into attribute files.

``score.unit=sequence``: the split's packed rows (in memory) are cut into shards of
``score.shard_size``; JAX process ``i`` of ``n`` scores the shards ``k`` with ``k % n == i``. A
shard already on disk with the fingerprint of the same corpus rows is not scored again.
``score.unit=document``: every document of every input file is scored (the mean of its
``seq_len`` chunks, each scored alone) into ``RUN/attributes/<curator>/<relative path>.parquet``,
one file per input file, streamed (memory does not grow with the corpus), on this process
(``engine=local``; JAX process ``i`` takes the files ``k % n == i``) or on a Ray cluster
(``engine=ray``). A finished attribute file is not scored again, so an interrupted run is
completed by starting it again, whichever engine ran it.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import jax

from datarater import faults
from datarater.artifacts import SCORE_DIR
from datarater.config import ScoreProgram
from datarater.console import Progress, result, say
from datarater.curate.curators import calibration_sample, make_curator
from datarater.curate.engines import ENGINES
from datarater.curate.provenance import describe, producer, same_producer
from datarater.curate.score import distribution_by_source, format_table, score_shard, sequence_rowset
from datarater.curate.sidefiles import (
    combined_fingerprint,
    num_shards,
    read_scores,
    shard_bounds,
    shard_fingerprints,
    shard_metadata_on_disk,
    shard_name,
    write_metadata,
    write_shard,
)
from datarater.data.corpus import load_splits
from datarater.data.documents import ReadStats
from datarater.data.tokenizer import make_tokenizer
from datarater.errors import UserError
from datarater.rundir import prepare_run_dir, save_config

# Keys that may change when a score run is started again: how it runs, not what it computes
# (what it computes is checked file by file against the producer and inputs recorded in them).
RERUN_KEYS = ("engine", "workers", "ray_address", "score.force", "curate.rater_run", "curate.reference_run")


def _check_program(prog: ScoreProgram) -> None:
    if prog.curate.name == "none":
        raise UserError("config key 'curate': no curator chosen; use curate=<datarater|random|perplexity|heuristic|dsir>")
    if prog.curate.scores:
        raise UserError("config key 'curate.scores': reads precomputed scores; `datarater score` computes them (leave it empty)")


def _existing_shards(score_dir: Path, prints: list[str], mine: list[int], made_by: dict, force: bool) -> set[int]:
    """Shards of this process already complete. A shard of other corpus rows is an error; one
    another producer scored (another rater, or this rater path after more meta-training) is an
    error naming both, or with ``force`` is scored again."""
    done = set()
    for i in range(len(prints)):  # every shard, on every process: all refuse together, or none does
        path = score_dir / shard_name(i, len(prints))
        found, by = shard_metadata_on_disk(path) if path.exists() else (None, None)
        if found is None:
            continue
        if found != prints[i]:
            raise UserError(
                f"{path} holds scores of other corpus rows (the corpus, tokenizer, sequence length or "
                "score settings changed): use a new run_dir"
            )
        if not same_producer(by, made_by):
            if force:
                continue
            raise UserError(f"{path} holds scores by {describe(by)}; this run scores with {describe(made_by)}: set "
                            "score.force=true to rescore the shards of the other producer, or use a new run_dir")
        if i in mine:
            done.add(i)
    stale = [p for p in score_dir.glob("scores-*-of-*.parquet") if not p.name.endswith(f"-of-{len(prints):05d}.parquet")]
    if stale:
        raise UserError(f"{score_dir} holds shards of a run with another shard count ({stale[0].name}): use a new run_dir")
    return done


def run(prog: ScoreProgram) -> dict[str, Any]:
    """Runs `datarater score`; returns the summary (also in ``RUN_DIR/summary.json``)."""
    _check_program(prog)
    if prog.engine not in ENGINES:
        raise UserError(f"config key 'engine': must be one of {', '.join(ENGINES)}, got '{prog.engine}'")
    if prog.score.unit == "document":
        return score_documents_run(prog)
    if prog.engine != "local":
        raise UserError("config key 'engine': engine=ray scores documents into attribute files (score.unit=document); "
                        "packed rows (score.unit=sequence) are scored in this process")
    s = prog.score
    run_dir, _ = prepare_run_dir(prog.run_dir, prog, may_change=RERUN_KEYS, write=False)
    tokenizer = make_tokenizer(prog.data)
    curator = make_curator(prog.curate, prog.data, tokenizer, prog.data.seq_len, corpus=prog.corpus)  # bad inputs stop here
    assert curator is not None

    say(f"[data] reading {prog.corpus.name} ({s.split} split) ...")
    stats = ReadStats()
    packed = load_splits(prog.corpus, prog.data, tokenizer, splits=(s.split,), stats=stats, on_build=say)[s.split]
    say(f"[data] {stats.summary()}")
    rows = sequence_rowset(packed)
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
    made_by = producer(prog.curate)
    done = _existing_shards(score_dir, prints, mine, made_by, s.force)
    save_config(run_dir, prog)  # only now: a refused rerun leaves the config of the scores on disk
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
                    doc_ids=rows.doc_ids[a:b] if rows.unit == "sequence" else None, chunks=chunks, producer=made_by)
        scored += b - a
        faults.after_files(todo.index(i) + 1)
        rate = scored / max(time.perf_counter() - t0, 1e-9)
        progress.show(scored, shard=f"{i + 1}/{count}", **{f"{rows.unit}s_per_s": round(rate, 1)})
    seconds = time.perf_counter() - t0

    if pc > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices("datarater-score-shards")
    meta = {"curator": curator.name, "unit": rows.unit, "split": s.split, "num_rows": len(rows.ids),
            "num_shards": count, "shard_size": s.shard_size, "seq_len": packed.seq_len,
            "flops_per_sequence": curator.flops_per_sequence, "fingerprint": combined_fingerprint(prints),
            "producer": made_by,
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


def score_documents_run(prog: ScoreProgram) -> dict[str, Any]:
    """``score.unit=document``: attribute files, one per input file, on the chosen engine."""
    import dataclasses

    from datarater.curate.attributes import ATTRIBUTES_DIR, read_file_scores
    from datarater.curate.engines import score_shards
    from datarater.curate.jobs import ScoreJob
    from datarater.data.stream import Selection, list_shards, sample_rows

    run_dir, _ = prepare_run_dir(prog.run_dir, prog, may_change=RERUN_KEYS, write=False)
    tokenizer = make_tokenizer(prog.data)
    curator = make_curator(prog.curate, prog.data, tokenizer, prog.data.seq_len, corpus=prog.corpus)  # bad inputs stop here
    shards = list_shards(prog.corpus, on_build=say)
    sample = None
    if curator.needs_fit:
        say(f"[score] fitting {curator.name} on {prog.curate.calibration_rows} sampled sequences")
        sample = sample_rows(prog.corpus, prog.data, tokenizer, Selection(prog.score.split), prog.curate.calibration_rows,
                             prog.curate.seed, shards)
    settings = {"curate": dataclasses.asdict(prog.curate), "data": dataclasses.asdict(prog.data),
                "fields": [prog.corpus.text_field, prog.corpus.id_field, prog.corpus.source_field],
                "producer": producer(prog.curate)}
    settings["curate"].pop("rater_run")  # the producer says which rater (by digest, wherever it lives)
    job = ScoreJob(prog.curate, prog.corpus, prog.data, str(run_dir / ATTRIBUTES_DIR), curator.name, settings,
                   prog.score.batch_size, sample, force=prog.score.force)
    pi, pc = jax.process_index(), jax.process_count()
    if prog.engine == "ray" or pc == 1:
        mine = shards  # Ray spreads the files over its workers
    else:  # each JAX process its own files (process 0 all of them when there are fewer files than processes)
        mine = shards[pi::pc] if len(shards) >= pc else (shards if pi == 0 else [])
    finished = {sh.key: job.done(sh) for sh in shards}  # every file on every process: all refuse together
    todo = [sh for sh in mine if not finished[sh.key]]
    save_config(run_dir, prog)  # only now: a refused rerun leaves the config of the scores on disk
    say(f"[score] {curator.name} per document: {len(shards)} input files, {len(mine) - len(todo)} already scored, "
        f"{len(todo)} to score on engine={prog.engine}" + (f" ({prog.workers} workers)" if prog.engine == "ray" else ""))
    progress = Progress(len(todo), label="score")
    done = {"n": 0}

    def on_done(r: dict) -> None:
        done["n"] += 1
        progress.show(done["n"], file=r["key"], docs=r.get("documents", 0))
        faults.after_files(done["n"])

    t0 = time.perf_counter()
    results = score_shards(job, todo, prog.engine, prog.workers, prog.ray_address, on_done) if todo else []
    seconds = time.perf_counter() - t0
    if pc > 1 and prog.engine == "local":
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices("datarater-score-attributes")
    summary: dict[str, Any] = {}
    if pi == 0:
        import numpy as np

        values, sources_ = [], []
        for sh in shards:
            ids, sc = read_file_scores(job.path(sh))
            values.append(sc)
            sources_.append(np.full(len(ids), sh.file.stem if sh.file else sh.key.split("/")[0], dtype=object))
        allv = np.concatenate(values) if values else np.zeros(0)
        summary = {"curator": curator.name, "unit": "document", "engine": prog.engine, "attributes": str(run_dir / ATTRIBUTES_DIR / curator.name),
                   "input_files": len(shards), "files_scored": len(results), "files_skipped": len(shards) - len(results),
                   "documents": int(allv.size), "seconds": seconds, "flops_per_sequence": curator.flops_per_sequence,
                   "chunks_scored": int(sum(r.get("chunks", 0) for r in results)),
                   "by_file": distribution_by_source(allv.astype(np.float64), np.concatenate(sources_) if sources_ else allv)}
        (run_dir / "summary.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
        say(f"{curator.name} scores per document ({len(shards)} input files, {allv.size} documents) -> "
            f"{run_dir / ATTRIBUTES_DIR / curator.name}")
        result(format_table(summary["by_file"]))
    return summary
