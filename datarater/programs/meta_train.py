"""`datarater meta-train`: meta-learn a DataRater on a corpus (bilevel, a population of inner LMs); resumes.

A population of inner LMs, each with its own data stream and optimiser state, keeps training
across meta-steps (each meta-gradient is a truncated unroll of ``meta.unroll`` inner steps); a
member is re-initialised when it reaches its lifetime, and first lifetimes are staggered so the
population always spans early and late training. The meta-step runs in the training loop
(`datarater.train.loop`) with hooks for member re-initialisation, metric rows and the progress
line; checkpoints hold the whole meta-state. The finished rater is saved in ``RUN/rater/``.
"""

from __future__ import annotations

import atexit
import dataclasses
import json
import time
from collections import defaultdict

import jax
from flax import nnx

from datarater import __version__
from datarater.artifacts import RATER_DIR, TARGET_FILE, save_rater
from datarater.config import MetaTrainProgram
from datarater.console import Progress, is_main_process, say
from datarater.data import keys
from datarater.data.corpus import pack_split
from datarater.data.documents import ReadStats
from datarater.data.packing import PackedSequences
from datarater.data.stream import list_shards, train_stream, wants_stream
from datarater.data.streamed import resolve_streamed
from datarater.data.target import outer_loss_rows, read_with_target
from datarater.data.tokenizer import make_tokenizer
from datarater.errors import UserError
from datarater.meta.core import MetaProblem, outer_optimizer
from datarater.meta.data import MetaData, in_memory
from datarater.meta.state import (
    host_copy,
    initial_meta_state,
    make_meta_step,
    make_reset,
    member_mask,
    meta_microbatches,
    nan_injection,
)
from datarater.models.rater import Rater
from datarater.models.transformer import CausalLM
from datarater.parallel.mesh import make_mesh
from datarater.parallel.population import PopulationLayout
from datarater.remote import Mirror, recorded_run_dir, staged
from datarater.rundir import config_digest, prepare_run_dir, run_config
from datarater.train.checkpoint import Checkpointer
from datarater.train.loop import Loop
from datarater.train.optimizer import make_optimizer
from datarater.train.trackers import Trackers

RESUMABLE_KEYS = ("meta.steps", "meta.log_every", "meta.checkpoint_every", "meta.keep_checkpoints",
                  "meta.microbatch_rows",  # the same meta-gradient in less memory
                  "mesh.",  # checkpoints restore onto any device layout
                  "logging.")  # where metric rows also go


def run(prog: MetaTrainProgram, splits: dict[str, PackedSequences] | None = None) -> dict:
    """The run in ``prog.run_dir``; a URL (gs://, s3://, memory://) through a local staging copy,
    pulled first and pushed after every checkpoint and at the end (`datarater.remote`)."""
    with staged(prog.run_dir, say) as (local, mirror):
        return _run(dataclasses.replace(prog, run_dir=local), mirror, splits)


def _run(prog: MetaTrainProgram, mirror: Mirror | None, splits: dict[str, PackedSequences] | None = None) -> dict:
    """Runs meta-training; ``splits`` (train, heldout) may be given instead of reading the corpus."""
    m = prog.meta
    url = mirror.url if mirror else None  # what the records name as run_dir, when a URL is staged here
    run_dir, resuming = prepare_run_dir(prog.run_dir, prog, may_change=RESUMABLE_KEYS, recorded_as=url)
    tokenizer = make_tokenizer(prog.data)
    for key, cfg in (("model", prog.model), ("rater", prog.rater)):
        if tokenizer.vocab_size > cfg.vocab_size:
            raise UserError(f"{key}.vocab_size={cfg.vocab_size} is smaller than the tokenizer's vocabulary ({tokenizer.vocab_size})")
    mesh = make_mesh(prog.mesh)
    layout = PopulationLayout(mesh, prog.mesh.rules, m.population)
    micro, held_micro = meta_microbatches(m, mesh, prog.mesh.rules)  # bad settings stop before the corpus is read
    stats = ReadStats()
    streamed = None
    mix = None  # a weighted target: the held-out batches take each entry's rows by its weight
    if splits is None:
        say(f"[data] reading {prog.corpus.name} ...")
        shards = list_shards(prog.corpus, on_build=say)
        if wants_stream(prog.corpus, shards):
            streamed = resolve_streamed(prog.corpus, tokenizer, m.target, shards, stats, prog.data.seq_len)
            resolved = streamed.resolved
            splits = {}
            if streamed.outer is None:
                splits["heldout"], mix = outer_loss_rows(resolved, prog.data, tokenizer)
            say(f"[data] streaming: every process reads all {len(shards)} input shards (members' batches are global), "
                f"{prog.corpus.cycle_length} interleaved, rows shuffled in windows of {prog.corpus.shuffle_window}")
            say(f"[meta] outer loss on {m.target.describe()}: "
                + ("streamed" if streamed.outer else f"{len(resolved.target_heldout)} documents"))
        else:
            resolved = read_with_target(prog.corpus, tokenizer, m.target, ("train",), stats, on_build=say)
            heldout, mix = outer_loss_rows(resolved, prog.data, tokenizer)
            splits = {"train": pack_split(resolved.splits["train"], prog.data, tokenizer, "train"), "heldout": heldout}
            say(f"[data] {stats.summary()}")
            say(f"[meta] outer loss on {m.target.describe()}: {len(resolved.target_heldout)} documents")
        if is_main_process():
            (run_dir / TARGET_FILE).write_text(json.dumps(resolved.description, indent=2))
    for name, packed in splits.items():
        say(f"[data] {name}: {len(packed)} sequences of {prog.data.seq_len} tokens")

    def batches(seed: int, batch_size: int, role: str):
        if role in splits:
            return in_memory(splits, mix)(seed, batch_size, role)
        select = streamed.train if role == "train" else streamed.outer
        return train_stream(prog.corpus, prog.data, tokenizer, select, batch_size, seed, stats, shards=streamed.shards)

    inner_tx = make_optimizer(dataclasses.replace(prog.train, steps=m.lifetime), eps_root=m.inner_eps_root)
    outer_tx = outer_optimizer(m.outer_lr, m.outer_warmup_steps, m.outer_weight_decay, m.outer_clip_norm)
    lm_graphdef = nnx.split(nnx.eval_shape(lambda: CausalLM(prog.model, rngs=nnx.Rngs(0))))[0]
    rater_graphdef = nnx.split(nnx.eval_shape(lambda: Rater(prog.rater, rngs=nnx.Rngs(0))))[0]
    problem = MetaProblem(lm_graphdef, rater_graphdef, inner_tx, m.grad_mode, scan_unroll=m.unroll <= m.unrolled_max,
                          microbatches=micro, heldout_microbatches=held_micro)
    for line in layout.describe([m.inner_batch_size, m.outer_batch_size]):
        say(f"[mesh] {line}")
    if micro > 1 or held_micro > 1:
        say(f"[meta] inner batches in {micro} microbatches, held-out batches in {held_micro} "
            f"({m.microbatch_rows} rows per device each)")

    data = MetaData(batches, m)
    metrics = Trackers(run_dir, prog.logging, run_config(prog, url), "meta-train")  # metrics.jsonl and logging.trackers
    atexit.register(metrics.close)  # also when the run stops on an error
    loop = Loop(Checkpointer(run_dir / "checkpoints", keep=m.keep_checkpoints), metrics, m.steps, m.checkpoint_every,
                snapshot=lambda step: (state.arrays, {"data": data.state(), "book": state.members.as_dict(),
                                                      "by_source": dict(by_source),  # Checkpointer.save copies it
                                                      "provenance": {"program": "meta-train", "datarater": __version__,
                                                                     "config_digest": config_digest(run_dir)}}))
    if mirror is not None:  # each finished checkpoint reaches the URL
        loop.after_save.append(lambda step: (loop.ckpt.wait(), mirror.push()))
    state, shardings, restored = initial_meta_state(prog, inner_tx, outer_tx, mesh, loop)
    for warning in restored.warnings:
        say(f"[ckpt] warning: {warning}")
    if restored.found:
        data.restore(restored.extra["data"])
        say(f"[ckpt] resumed meta-training from step {restored.step}")
    step_fn = make_meta_step(problem, outer_tx, m.outer_update, shardings, mesh, prog.mesh.rules, m.population,
                             m.plain_inner_steps)
    reset_fn = make_reset(prog, inner_tx, shardings)
    per_step = m.unroll + m.plain_inner_steps  # inner steps a member takes per meta-step

    # per-source [sum, count] of scores since the last metrics row; in checkpoints, so a run resumed
    # between two rows logs the same means as an uninterrupted one
    by_source: dict[str, list[float]] = defaultdict(lambda: [0.0, 0])
    if restored.found:
        by_source.update({k: list(v) for k, v in restored.extra.get("by_source", {}).items()})
    clock = {"t": time.perf_counter(), "since": 0}

    poison = nan_injection(m.population)

    def meta_step(step: int) -> dict:
        inner, held, rows = data.next()
        if poison:
            state.arrays = poison(step, state.arrays)
        state.arrays, out = step_fn(state.arrays, layout.put(inner, 2), layout.put(held, 1))
        clock["since"] += 1
        out = jax.device_get(out)
        bad = [p for p, b in enumerate(out.pop("bad_members")) if b]
        scores = out.pop("scores")  # [P, T, B]: the unrolled steps' batches, after the plain ones
        for s, k in zip(scores.ravel(), rows["source"][:, m.plain_inner_steps:].ravel(), strict=True):
            acc = by_source[keys.name_of(k)]
            acc[0] += float(s)
            acc[1] += 1
        row = {"step": step, **{k: float(v) for k, v in out.items()}}
        book = state.members
        if bad:
            diverged_members(step, bad, row)
        else:
            book.updates, book.consecutive_skipped = book.updates + 1, 0
        return {**row, "skipped_total": book.skipped, "resets_total": book.resets, "diverged_total": book.diverged}

    def diverged_members(step: int, bad: list[int], row: dict) -> None:
        """Members whose meta-gradient was not finite were left out of the update: they start
        afresh; with none left the update was skipped, and after ``meta.max_skipped`` such steps
        in a row the run stops (no rater is saved)."""
        book = state.members
        if len(bad) == m.population:
            book.skipped, book.consecutive_skipped = book.skipped + 1, book.consecutive_skipped + 1
        else:
            book.updates, book.consecutive_skipped = book.updates + 1, 0
        book.restart(bad, m.lifetime)
        book.diverged += len(bad)
        state.arrays = reset_fn(state.arrays, member_mask(bad, m.population), book.keys(m.seed))
        row["diverged_members"] = bad
        say(f"[meta] step {step}: member(s) {bad} had a non-finite meta-gradient: left out and re-initialised; "
            + ("no member was left, the update was skipped" if len(bad) == m.population else
               f"the rater updated on the other {m.population - len(bad)}"))
        if book.consecutive_skipped >= m.max_skipped:
            raise UserError(
                f"meta-training stopped at step {step}: {book.consecutive_skipped} meta-steps in a row had no member "
                f"with a finite meta-gradient (meta.max_skipped={m.max_skipped}); lower meta.outer_lr or train.lr. "
                f"No rater was saved; checkpoints up to the last good step are in {run_dir / 'checkpoints'}")

    def reinitialise_members(step: int, row: dict) -> None:
        """Ages advance by the inner steps taken; members at the end of their lifetime start afresh."""
        dead = state.members.age(per_step, m.lifetime)
        if dead:
            state.arrays = reset_fn(state.arrays, member_mask(dead, m.population), state.members.keys(m.seed))
            row["reset_members"] = dead

    progress = Progress(m.steps, start_step=restored.step, label="meta-train")

    def log(step: int, row: dict) -> None:
        row["score_by_source"] = {k: total / n for k, (total, n) in sorted(by_source.items())}
        row["steps_per_s"] = clock["since"] / (time.perf_counter() - clock["t"])
        by_source.clear()
        progress.show(step, outer=row["outer_loss"], inner=row["inner_loss"], gnorm=row["meta_grad_norm"],
                      eff_batch=row["effective_batch"], skipped=state.members.skipped)
        clock.update(t=time.perf_counter(), since=0)

    loop.add_hook(reinitialise_members)
    loop.add_hook(log, every=m.log_every)
    loop.add_hook(lambda step, row: metrics.write(row))
    try:
        step = loop.run(restored.step, meta_step)
    except KeyboardInterrupt:
        say("[meta-train] interrupted: " + (f"saved a checkpoint of step {loop.interrupted_at} to resume from"
                                         if loop.interrupted_at is not None else
                                         f"stopped in step {loop.step + 1}; a rerun resumes from the last checkpoint"))
        raise
    members = state.members
    if members.updates == 0:
        raise UserError(f"meta-training took {step} meta-steps and none updated the rater (every one was skipped for "
                        "non-finite meta-gradients): the untrained rater is not saved; lower meta.outer_lr or train.lr")
    save_rater(run_dir, host_copy(state.arrays["eta"]),
               info={"program": "meta-train", "meta_step": step, "updates": members.updates,
                     "config_digest": config_digest(run_dir), "datarater": __version__})
    summary = {**recorded_run_dir(run_dir, mirror), "steps": step, "updates": members.updates, "skipped_updates": members.skipped,
               "diverged_members": members.diverged, "resets": members.resets, "documents": stats.as_dict()}
    if is_main_process():
        (run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    metrics.close()
    say(f"[meta-train] done: {step} meta-steps, {members.resets} member resets, {members.skipped} skipped updates; "
        f"rater in {run_dir / RATER_DIR}")
    return summary
