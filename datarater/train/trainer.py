"""The LM trainer: `datarater train-lm`.

Builds the model on a device mesh, streams packed batches from a Grain pipeline, runs a jitted
AdamW step, evaluates validation NLL periodically, and checkpoints everything needed to resume
bit-for-bit: parameters, optimiser state, step and the data iterator's state.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from dataclasses import dataclass
from typing import Any

import jax
import numpy as np
from flax import nnx

from datarater.config import ModelConfig, TrainConfig, TrainLMProgram
from datarater.console import Progress
from datarater.data.corpus import load_splits
from datarater.data.documents import ReadStats
from datarater.data.pipeline import eval_batches, iterator_state, make_iterator, restore_iterator, train_batches
from datarater.data.tokenizer import make_tokenizer
from datarater.errors import UserError
from datarater.models.flops import lm_train_flops_per_token
from datarater.models.transformer import CausalLM
from datarater.parallel.activations import batch_split
from datarater.parallel.mesh import batch_shards, logical_axes_of, make_mesh, param_shardings, put_batch
from datarater.parallel.population import optimizer_shardings
from datarater.rundir import prepare_run_dir
from datarater.train.checkpoint import Checkpointer, abstract_like
from datarater.train.curation import make_online_curation
from datarater.train.metrics import MetricsFile, peak_flops_per_device
from datarater.train.microbatch import microbatch_count
from datarater.train.optimizer import lr_schedule, make_optimizer
from datarater.train.step import make_eval_step, make_train_step

log = logging.getLogger(__name__)

# Keys that may differ when a run directory is started again (the run then resumes). Not
# train.steps: the cosine schedule's length depends on it, so extending a run would change its
# learning rate mid-way.
RESUMABLE_KEYS = ("train.log_every", "train.eval_every", "train.checkpoint_every", "train.keep_checkpoints",
                  "train.microbatch_rows",  # the same update in less memory
                  "mesh.")  # checkpoints restore onto any device layout


def say(msg: str) -> None:
    if jax.process_index() == 0:
        print(msg, file=sys.stderr, flush=True)


@dataclass
class LMState:
    """What a training run carries from step to step (plain pytrees)."""

    graphdef: nnx.GraphDef
    params: dict
    opt_state: Any


def init_lm(model_cfg: ModelConfig, seed: int, mesh, rules, tx) -> LMState:
    """Initialises parameters directly in their shardings (no host copy of the full model)."""
    abstract = nnx.eval_shape(lambda: CausalLM(model_cfg, rngs=nnx.Rngs(0)))
    graphdef, abstract_state = nnx.split(abstract)
    shapes = nnx.to_pure_dict(nnx.state(abstract, nnx.Param))
    shardings = param_shardings(logical_axes_of(abstract), shapes, rules, mesh)

    def init():
        return nnx.to_pure_dict(nnx.state(CausalLM(model_cfg, rngs=nnx.Rngs(seed)), nnx.Param))

    params = jax.jit(init, out_shardings=shardings)()
    opt_shapes = jax.eval_shape(tx.init, shapes)
    opt_state = jax.jit(tx.init, out_shardings=optimizer_shardings(tx, opt_shapes, shardings, mesh))(params)
    return LMState(graphdef=graphdef, params=params, opt_state=opt_state)


def evaluate(eval_fn, params, batches: list[dict], mesh, rules) -> float:
    """Mean validation NLL per predicted token (nats)."""
    pi, pc = jax.process_index(), jax.process_count()
    total, count = 0.0, 0.0
    for batch in batches:
        rows = len(batch["tokens"]) // pc
        local = {k: v[pi * rows : (pi + 1) * rows] for k, v in batch.items() if k != "index"}
        nll, n = eval_fn(params, put_batch(local, mesh, rules))
        total += float(nll)
        count += float(n)
    return total / max(count, 1.0)


def check_batch(train: TrainConfig, mesh, rules) -> tuple[int, int]:
    """Per-process batch size, and microbatches per step; the global batch must split evenly over
    processes and data shards, and each device's rows into ``train.microbatch_rows``."""
    shards, pc = batch_shards(mesh, rules), jax.process_count()
    if train.batch_size % shards or train.batch_size % pc:
        raise UserError(
            f"train.batch_size={train.batch_size} must be divisible by the {shards} batch shards of the mesh "
            f"and the {pc} processes"
        )
    micro = microbatch_count("train.microbatch_rows", train.batch_size, shards, train.microbatch_rows)
    return train.batch_size // pc, micro


def train_lm(prog: TrainLMProgram) -> dict:
    run_dir, resuming = prepare_run_dir(prog.run_dir, prog, may_change=RESUMABLE_KEYS)
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
    splits = load_splits(prog.corpus, prog.data, tokenizer, splits=("train", "validation"), stats=stats)
    say(f"[data] {stats.summary()}")
    for name, packed in splits.items():
        say(f"[data] {name}: {len(packed)} sequences of {prog.data.seq_len} tokens ({packed.num_tokens()} tokens)")

    tx = make_optimizer(train)
    state = init_lm(cfg, train.seed, mesh, rules, tx)
    curation = make_online_curation(prog.curate, prog.data, tokenizer, splits["train"], local_batch)
    draw = curation.draw if curation else local_batch
    if curation:
        say(f"[curate] {curation.name}: discard {curation.discard:g}, keep the best {curation.keep} of {draw} rows "
            f"per step and process ({curation.flops_per_sequence:.3g} scoring FLOPs per row)")
    dataset = train_batches(splits["train"], draw, train.seed, jax.process_index(), jax.process_count())
    iterator = make_iterator(dataset)
    metrics = MetricsFile(run_dir / "metrics.jsonl")
    ckpt = Checkpointer(run_dir / "checkpoints", keep=train.keep_checkpoints)

    start = 0
    latest = ckpt.latest_step()
    if latest is not None:
        restored, extra = ckpt.restore(latest, abstract_like({"params": state.params, "opt_state": state.opt_state}))
        state.params, state.opt_state = restored["params"], restored["opt_state"]
        restore_iterator(iterator, extra["data"])
        saved_by, pc = extra.get("processes"), jax.process_count()  # absent in checkpoints of older versions
        if saved_by is not None and int(saved_by) != pc:
            say(f"[ckpt] saved by {saved_by} process(es), resumed on {pc}: each process reads rows p::{pc} of the "
                "training split, so the batches from here on differ from an uninterrupted run's (the model and "
                "optimiser state are restored as saved)")
        if curation and "curation" in extra:
            curation.load_counts(extra["curation"])
        start = latest
        dropped = metrics.truncate_after(latest)
        say(f"[ckpt] resumed from step {latest} in {ckpt.directory}" + (f" ({dropped} later metric rows recomputed)" if dropped else ""))
    elif resuming:
        say(f"[ckpt] {run_dir} has a config but no finished checkpoint: starting from step 0")
        metrics.truncate_after(0)
        if metrics.path.exists():
            metrics.path.unlink()

    schedule = lr_schedule(train)
    step_fn = jax.jit(batch_split(make_train_step(state.graphdef, tx, micro), mesh, rules), donate_argnums=(0, 1))
    eval_fn = jax.jit(batch_split(make_eval_step(state.graphdef, micro), mesh, rules))
    val = eval_batches(splits["validation"], train.batch_size, train.eval_batches)

    flops_per_token = lm_train_flops_per_token(cfg, prog.data.seq_len)
    peak, peak_src = peak_flops_per_device()
    tokens_per_step = train.batch_size * prog.data.seq_len
    train_flops_per_step = flops_per_token * tokens_per_step
    curate_flops_per_step = curation.flops_per_sequence * draw * jax.process_count() if curation else 0.0

    def eval_row(step: int, nll: float) -> dict:
        return {"step": step, "val_nll": nll, "train_flops": step * train_flops_per_step,
                "curate_flops": step * curate_flops_per_step}
    say(f"[train] {cfg.name}: mesh {dict(mesh.shape)}, {flops_per_token / 1e6:.3g} MFLOP/token, peak {peak / 1e9:.4g} GFLOP/s/device ({peak_src})")

    if start >= train.steps:
        ckpt.close()
        say(f"[train] {run_dir} is already complete at step {start}: nothing to do")
        return json.loads((run_dir / "summary.json").read_text()) if (run_dir / "summary.json").exists() else {}
    if start == 0 and val:
        metrics.write(eval_row(0, evaluate(eval_fn, state.params, val, mesh, rules)))

    progress = Progress(train.steps, start_step=start, label="train-lm")
    pending: list[tuple[int, dict]] = []
    timer = {"t": time.perf_counter(), "steps": 0}
    last_val = None
    step = start

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

    def save(step: int) -> None:
        flush(throughput=False)
        extra = {"data": iterator_state(iterator), "step": step, "processes": jax.process_count()}
        if curation:
            extra["curation"] = curation.counts()
        ckpt.save(step, {"params": state.params, "opt_state": state.opt_state}, extra)

    try:
        while step < train.steps:
            rows = next(iterator)
            if curation:
                rows = curation.select(rows, splits["train"])
            batch = put_batch({k: v for k, v in rows.items() if k != "index"}, mesh, rules)
            state.params, state.opt_state, m = step_fn(state.params, state.opt_state, batch)
            step += 1
            timer["steps"] += 1
            pending.append((step, m))
            is_last = step == train.steps
            if step % train.log_every == 0 or is_last:
                shown = flush(throughput=True)
                if val and (step % train.eval_every == 0 or is_last):
                    last_val = evaluate(eval_fn, state.params, val, mesh, rules)
                    metrics.write(eval_row(step, last_val))
                    timer["t"] = time.perf_counter()  # evaluation is not training throughput
                if shown:
                    progress.show(step, loss=shown["loss"], tok_s=f"{shown['tokens_per_s']:,.0f}",
                                  mfu=f"{100 * shown['mfu']:.1f}%", val_nll=last_val)
            elif val and step % train.eval_every == 0:
                flush(throughput=False)
                last_val = evaluate(eval_fn, state.params, val, mesh, rules)
                metrics.write(eval_row(step, last_val))
                timer["t"] = time.perf_counter()
            if step % train.checkpoint_every == 0 or is_last:
                save(step)
                ckpt.kill_if_asked(step)
    except KeyboardInterrupt:
        say(f"[train] interrupted at step {step}: saving a checkpoint to resume from")
        save(step)
        ckpt.close()
        raise
    ckpt.close()

    summary = {
        "run_dir": str(run_dir),
        "steps": step,
        "final_val_nll": last_val,
        "documents": stats.as_dict(),
        "sequences": {k: len(v) for k, v in splits.items()},
        "flops_per_token": flops_per_token,
        "train_flops": step * train_flops_per_step,
        "curate_flops": step * curate_flops_per_step,
        "curate": {"name": prog.curate.name, "discard": prog.curate.discard,
                   "kept_fraction_per_source": curation.kept_fraction_per_source() if curation else None},
    }
    if jax.process_index() == 0:
        (run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    say(f"[train] done: {step} steps, validation NLL {last_val if last_val is None else round(last_val, 4)}; {stats.summary()}")
    return summary

