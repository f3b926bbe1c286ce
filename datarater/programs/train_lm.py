"""`datarater train-lm`: train a causal LM on a corpus, optionally curated online; resumes.

Builds the model on a device mesh, streams packed batches from a Grain pipeline, runs a jitted
AdamW step in the training loop (`datarater.train.loop`) with hooks for metrics, evaluation and
the progress line, and checkpoints everything needed to resume bit-for-bit: parameters,
optimiser state, step and the data iterator's state.
"""

from __future__ import annotations

import atexit
import dataclasses
import json
import time

import jax
import numpy as np

from datarater import __version__
from datarater.config import TrainLMProgram
from datarater.console import Progress, is_main_process, say
from datarater.curate.online import check_same_curation, consumer_identity, make_online_curation
from datarater.data.corpus import pack_split
from datarater.data.documents import ReadStats
from datarater.data.pipeline import (
    eval_batches,
    iterator_state,
    make_iterator,
    model_inputs,
    restore_iterator,
    train_batches,
)
from datarater.data.stream import list_shards, process_shards, sample_rows, train_stream, wants_stream
from datarater.data.streamed import resolve_streamed
from datarater.data.target import group_documents, read_with_target, validation_groups, validation_sets
from datarater.data.tokenizer import make_tokenizer
from datarater.errors import UserError
from datarater.eval.gain import curve_key
from datarater.models.flops import lm_train_flops_per_token
from datarater.parallel.activations import batch_split
from datarater.parallel.mesh import make_mesh, put_batch
from datarater.remote import Mirror, recorded_run_dir, staged
from datarater.rundir import config_digest, prepare_run_dir, run_config
from datarater.train.checkpoint import Checkpointer
from datarater.train.loop import Loop
from datarater.train.metrics import peak_flops_per_device
from datarater.train.microbatch import check_batch
from datarater.train.optimizer import lr_schedule, make_optimizer
from datarater.train.state import initial_lm_state
from datarater.train.step import document_nll, evaluate, make_eval_step, make_token_nll_step, make_train_step
from datarater.train.trackers import Trackers

# Keys that may differ when a run directory is started again (the run then resumes). Not
# train.steps: the cosine schedule's length depends on it, so extending a run would change its
# learning rate mid-way.
RESUMABLE_KEYS = ("train.log_every", "train.eval_every", "train.checkpoint_every", "train.keep_checkpoints",
                  "train.microbatch_rows",  # the same update in less memory
                  "mesh.",  # checkpoints restore onto any device layout
                  "logging.")  # where metric rows also go


def final_nll_sets(graphdef, params, resolved, target, splits, target_sets, batch_size, mesh, rules) -> dict:
    """Mean token NLL on every validation set (`validation_groups`, and a files target's own
    validation documents: the weighted mean over a weighted target's entries, `validation_sets`),
    from one pass over the rows of each split."""
    token_fn = jax.jit(batch_split(make_token_nll_step(graphdef), mesh, rules))
    nll, count = document_nll(token_fn, params, splits["validation"], batch_size, mesh, rules)
    out = {name: float(nll[m].sum() / max(count[m].sum(), 1.0)) for name, m in validation_groups(resolved, target).items()}
    if target_sets and "target" not in out:
        out["target"] = 0.0
        for w, packed in target_sets:
            t_nll, t_count = document_nll(token_fn, params, packed, batch_size, mesh, rules)
            out["target"] += w * float(t_nll.sum() / max(t_count.sum(), 1.0))
    return {k: out[k] for k in sorted(out, key=lambda k: (k != "validation", k != "target", k))}


def done_nll(final_sets: dict, splits: dict, val: list[dict]) -> str:
    """The final validation NLL over the whole split, and how many of its rows the progress line's
    ``val_nll`` saw (``train.eval_batches``): two numbers that differ, each said for what it is."""
    if "validation" not in final_sets:
        return "no validation split"
    rows = len(splits["validation"])
    seen = sum(int((b["index"] >= 0).sum()) for b in val)
    return (f"validation NLL {final_sets['validation']:.4f} over its {rows} rows"
            + (f" (val_nll while training: its first {seen})" if seen < rows else ""))


def run(prog: TrainLMProgram) -> dict:
    """The run in ``prog.run_dir``; a URL (gs://, s3://, memory://) through a local staging copy,
    pulled first and pushed after every checkpoint and at the end (`datarater.remote`)."""
    with staged(prog.run_dir, say) as (local, mirror):
        return _run(dataclasses.replace(prog, run_dir=local), mirror)


def _run(prog: TrainLMProgram, mirror: Mirror | None) -> dict:
    url = mirror.url if mirror else None  # what the records name as run_dir, when a URL is staged here
    run_dir, resuming = prepare_run_dir(prog.run_dir, prog, may_change=RESUMABLE_KEYS, recorded_as=url)
    cfg, train = prog.model, prog.train
    tokenizer = make_tokenizer(prog.data)
    if tokenizer.vocab_size > cfg.vocab_size:
        raise UserError(
            f"model.vocab_size={cfg.vocab_size} is smaller than the tokenizer's vocabulary ({tokenizer.vocab_size})"
        )
    mesh = make_mesh(prog.mesh)
    rules = prog.mesh.rules
    local_batch, micro = check_batch(train, mesh, rules)
    if micro > 1:
        say(f"[train] each batch in {micro} microbatches of {train.microbatch_rows} rows per device")

    say(f"[data] reading {prog.corpus.name} ...")
    stats = ReadStats()
    shards = list_shards(prog.corpus, on_build=say)
    streamed = None
    if wants_stream(prog.corpus, shards):
        streamed = resolve_streamed(prog.corpus, tokenizer, prog.target, shards, stats, prog.data.seq_len,
                                    prefix="target", outer=False)
        resolved = streamed.resolved
        splits = {"validation": pack_split(resolved.splits["validation"], prog.data, tokenizer, "validation")}
        mine = process_shards(shards, jax.process_index(), jax.process_count())[0]
        say(f"[data] streaming: {len(mine)} of {len(shards)} input shards on this process, {prog.corpus.cycle_length} "
            f"read interleaved, rows shuffled in windows of {prog.corpus.shuffle_window}; evaluation on "
            f"{resolved.description['evaluation_sample']}")
    else:
        resolved = read_with_target(prog.corpus, tokenizer, prog.target, ("train", "validation"), stats, on_build=say,
                                    prefix="target", outer=False)
        splits = {name: pack_split(docs, prog.data, tokenizer, name) for name, docs in resolved.splits.items()}
        say(f"[data] {stats.summary()}")
    if prog.target.mode != "heldout":
        say(f"[data] target: {prog.target.describe()} ({len(resolved.target_validation)} validation documents)")
    for name, packed in splits.items():
        say(f"[data] {name}: {len(packed)} sequences of {prog.data.seq_len} tokens ({packed.num_tokens()} tokens)")
    # groups of the validation split evaluated along the curve too (unknown ones refused before any compute)
    groups = {name: pack_split(docs, prog.data, tokenizer, "validation")
              for name, docs in group_documents(resolved, prog.target, prog.eval.curve_sets).items()}
    for name, packed in groups.items():
        say(f"[data] along the curve too: {name}, {len(packed)} validation sequences ({packed.num_tokens()} tokens)"
            + (f", the first {train.eval_batches * train.batch_size} at each evaluation (all at the end)"
               if 0 < train.eval_batches * train.batch_size < len(packed) else ""))

    tx = make_optimizer(train)
    # what produced this run's checkpoints and summary (a consumer compares the config digest)
    provenance = {"program": "train-lm", "config_digest": config_digest(run_dir), "datarater": __version__,
                  "curate": consumer_identity(prog.curate, prog.target)}
    metrics = Trackers(run_dir, prog.logging, run_config(prog, url), "train-lm")  # metrics.jsonl and logging.trackers
    atexit.register(metrics.close)  # also when the run stops on an error
    ckpt = Checkpointer(run_dir / "checkpoints", keep=train.keep_checkpoints)
    pending: list[tuple[int, dict]] = []  # per-step metrics still on device

    def snapshot(step: int) -> tuple[dict, dict]:
        flush(throughput=False)
        extra = {"data": iterator_state(iterator), "processes": jax.process_count(), "provenance": provenance}
        if curation:
            extra["curation"] = curation.counts()
        return state.arrays(), extra

    loop = Loop(ckpt, metrics, train.steps, train.checkpoint_every, snapshot)
    if mirror is not None:  # each finished checkpoint reaches the URL
        loop.after_save.append(lambda step: (ckpt.wait(), mirror.push()))
    state, restored = initial_lm_state(cfg, train.seed, mesh, rules, tx, loop)
    pi, pc = jax.process_index(), jax.process_count()
    curation = make_online_curation(
        prog.curate, prog.data, tokenizer, splits.get("train"), local_batch, corpus=prog.corpus, target=prog.target,
        sample=lambda: sample_rows(prog.corpus, prog.data, tokenizer, streamed.train, prog.curate.calibration_rows,
                                   prog.curate.seed, shards))
    draw = curation.draw if curation else local_batch
    if curation:
        say(f"[curate] {curation.name}: discard {curation.discard:g}, keep the best {curation.keep} of {draw} rows "
            f"per step and process ({curation.flops_per_sequence:.3g} scoring FLOPs per row)")
    if streamed is not None:
        batches = train_stream(prog.corpus, prog.data, tokenizer, streamed.train, draw, train.seed, stats, pi, pc, shards)
    else:
        batches = train_batches(splits["train"], draw, train.seed, pi, pc)
    iterator = make_iterator(batches)
    for warning in restored.warnings:
        say(f"[ckpt] warning: {warning}")
    if restored.found:
        check_same_curation(restored.extra.get("provenance", {}).get("curate", provenance["curate"]),
                            provenance["curate"], run_dir)
        restore_iterator(iterator, restored.extra["data"])
        saved_by = restored.extra.get("processes")  # absent in checkpoints of older versions
        if saved_by is not None and int(saved_by) != pc:
            say(f"[ckpt] saved by {saved_by} process(es), resumed on {pc}: each process reads its own share of the "
                "training split, so the batches from here on differ from an uninterrupted run's (the model and "
                "optimiser state are restored as saved)")
        if curation and "curation" in restored.extra:
            curation.load_counts(restored.extra["curation"])
        dropped = restored.dropped_rows
        say(f"[ckpt] resumed from step {restored.step} in {ckpt.directory}"
            + (f" ({dropped} later metric rows recomputed)" if dropped else ""))
    elif resuming:
        say(f"[ckpt] {run_dir} has a config but no finished checkpoint: starting from step 0")

    schedule = lr_schedule(train)
    step_fn = jax.jit(batch_split(make_train_step(state.graphdef, tx, micro), mesh, rules), donate_argnums=(0, 1))
    eval_fn = jax.jit(batch_split(make_eval_step(state.graphdef, micro), mesh, rules))
    val = eval_batches(splits["validation"], train.batch_size, train.eval_batches)
    target_sets = validation_sets(resolved, prog.data, tokenizer)  # along the curve too (net compute gain on it)
    # beside val, along the curve: the target's set, then eval.curve_sets' groups (metric keys: `curve_key`),
    # each a weighted mean over parts (a weighted target's entries; else one part)
    along = ({"target": target_sets} if target_sets else {}) | {name: [(1.0, packed)] for name, packed in groups.items()}
    curve_sets = {name: parts for name, sets in along.items()
                  if (parts := [(w, b) for w, packed in sets if (b := eval_batches(packed, train.batch_size, train.eval_batches))])}

    flops_per_token = lm_train_flops_per_token(cfg, prog.data.seq_len)
    peak, peak_src = peak_flops_per_device()
    tokens_per_step = train.batch_size * prog.data.seq_len
    train_flops_per_step = flops_per_token * tokens_per_step
    curate_flops_per_step = curation.flops_per_sequence * draw * jax.process_count() if curation else 0.0

    def eval_row(step: int, nll: float) -> dict:
        row = {"step": step, "val_nll": nll, "train_flops": step * train_flops_per_step,
               "curate_flops": step * curate_flops_per_step}
        for name, parts in curve_sets.items():
            row[curve_key(name)] = sum(w * evaluate(eval_fn, state.params, batches, mesh, rules) for w, batches in parts)
        return row
    say(f"[train] {cfg.name}: mesh {dict(mesh.shape)}, {flops_per_token / 1e6:.3g} MFLOP/token, peak {peak / 1e9:.4g} GFLOP/s/device ({peak_src})")

    start = restored.step
    complete = start >= train.steps
    if complete and (run_dir / "summary.json").exists():
        ckpt.close()
        say(f"[train] {run_dir} is already complete at step {start}: nothing to do")
        return json.loads((run_dir / "summary.json").read_text())
    if complete:  # killed after its final checkpoint, before the summary: evaluate and write it now
        say(f"[train] {run_dir} is already complete at step {start} but has no summary: evaluating it to write one")
    if start == 0 and val:
        metrics.write(eval_row(0, evaluate(eval_fn, state.params, val, mesh, rules)))

    timer = {"t": time.perf_counter(), "steps": 0}
    shown: dict = {}  # the last throughput figures, for the progress line
    last_val: float | None = None

    def flush(throughput: bool) -> dict | None:
        """Writes the per-step rows held on device; adds throughput to the last when asked."""
        if not pending:
            return None
        fetched = jax.device_get(pending)
        extra = {}
        if throughput:
            elapsed = time.perf_counter() - timer["t"]
            tok_s = timer["steps"] * tokens_per_step / elapsed
            extra = {"tokens_per_s": tok_s, "mfu": tok_s * flops_per_token / (peak * jax.device_count()),
                     "step_time_s": elapsed / timer["steps"]}
            timer.update(t=time.perf_counter(), steps=0)
        for s, row in fetched:
            out = {"step": s, "loss": row["loss"], "grad_norm": row["grad_norm"], "lr": float(schedule(s - 1))}
            metrics.write({**out, **(extra if s == fetched[-1][0] else {})})
        pending.clear()
        last_loss = fetched[-1][1]["loss"]
        if not np.isfinite(last_loss):
            raise UserError(f"training diverged: loss is {last_loss} at step {fetched[-1][0]}; lower train.lr")
        return {"loss": float(last_loss), **extra}

    def train_step(step: int) -> None:
        rows = next(iterator)
        if curation:
            rows = curation.select(rows)
        batch = put_batch(model_inputs(rows), mesh, rules)
        state.params, state.opt_state, m = step_fn(state.params, state.opt_state, batch)
        timer["steps"] += 1
        pending.append((step, m))
        if "first_step_at" not in timer:  # wall clock after the first step: start-up time, for benchmarks
            jax.block_until_ready(m)
            timer["first_step_at"] = time.time()

    def log_rows(step: int, _) -> None:
        shown.clear()
        shown.update(flush(throughput=True) or {})

    def validate(step: int, _) -> None:
        nonlocal last_val
        flush(throughput=False)
        last_val = evaluate(eval_fn, state.params, val, mesh, rules)
        metrics.write(eval_row(step, last_val))
        timer["t"] = time.perf_counter()  # evaluation is not training throughput

    progress = Progress(train.steps, start_step=start, label="train-lm")

    def show_progress(step: int, _) -> None:
        if shown:
            progress.show(step, loss=shown["loss"], tok_s=f"{shown['tokens_per_s']:,.0f}",
                          mfu=f"{100 * shown['mfu']:.1f}%", val_nll=last_val)

    loop.add_hook(log_rows, every=train.log_every)
    if val:
        loop.add_hook(validate, every=train.eval_every)
    loop.add_hook(show_progress, every=train.log_every)
    try:
        step = loop.run(start, train_step)  # returns at once when complete (the checkpointer closed)
        if complete and val:
            last_val = evaluate(eval_fn, state.params, val, mesh, rules)  # what the last step's evaluation gave
    except KeyboardInterrupt:
        say("[train] interrupted: " + (f"saved a checkpoint of step {loop.interrupted_at} to resume from"
                                         if loop.interrupted_at is not None else
                                         f"stopped in step {loop.step + 1}; a rerun resumes from the last checkpoint"))
        raise

    final_sets = final_nll_sets(state.graphdef, state.params, resolved, prog.target, splits, target_sets,
                                train.batch_size // micro, mesh, rules)  # a microbatch's rows at a time
    say("[train] final NLL per validation set: " + ", ".join(f"{k} {v:.4f}" for k, v in final_sets.items()))
    summary = {
        **recorded_run_dir(run_dir, mirror),  # a URL run: the URL, and its local copy as "staging"
        "steps": step,
        "provenance": provenance,
        "final_val_nll": last_val,
        "final_nll_sets": final_sets,
        "documents": stats.as_dict(),
        "sequences": {k: len(v) for k, v in splits.items()},
        "reader": "stream" if streamed is not None else "memory",
        "first_step_at": timer.get("first_step_at"),
        "flops_per_token": flops_per_token,
        "train_flops": step * train_flops_per_step,
        "curate_flops": step * curate_flops_per_step,
        "curate": {"name": prog.curate.name, "discard": prog.curate.discard,
                   "kept_fraction_per_source": curation.kept_fraction_per_source() if curation else None},
    }
    if is_main_process():
        (run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    metrics.close()
    say(f"[train] done: {step} steps, {done_nll(final_sets, splits, val)}; {stats.summary()}")
    return summary
