"""The meta-trainer: `datarater meta-train`.

A population of inner LMs, each with its own data stream and optimiser state, keeps training
across meta-steps (each meta-gradient is a truncated unroll of ``meta.unroll`` inner steps);
a member is re-initialised when it reaches its lifetime, and first lifetimes are staggered so
the population always spans early and late training. Checkpoints hold the whole meta-state.

On several devices the population axis of the meta-state (members' parameters, optimiser
states and batches) is laid over the mesh's ``data`` axis (``datarater.parallel.population``);
inside a member, and for the rater, the mesh rules apply (FSDP over ``fsdp``). Every process
draws the same global batches from the in-memory rows and places the pieces its devices hold.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections import defaultdict
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from datarater.config import MetaConfig, MetaTrainProgram
from datarater.console import Progress
from datarater.data.corpus import load_splits
from datarater.data.documents import ReadStats
from datarater.data.packing import PackedSequences
from datarater.data.pipeline import iterator_state, make_iterator, restore_iterator, train_batches
from datarater.data.tokenizer import make_tokenizer
from datarater.errors import UserError
from datarater.meta.core import MetaProblem, make_population_meta_step, outer_optimizer
from datarater.models.rater import Rater
from datarater.models.transformer import CausalLM
from datarater.parallel.activations import batch_split
from datarater.parallel.mesh import logical_axes_of, make_mesh, param_shardings
from datarater.parallel.population import (
    member_batch_axes,
    member_rules,
    members_per_device,
    optimizer_shardings,
    population_axes,
    replicated_batch_notes,
    stacked_batch_sharding,
    stacked_param_shardings,
)
from datarater.rundir import prepare_run_dir
from datarater.train.checkpoint import Checkpointer, abstract_like
from datarater.train.metrics import MetricsFile
from datarater.train.microbatch import microbatch_count
from datarater.train.optimizer import make_optimizer
from datarater.train.trainer import say

RESUMABLE_KEYS = ("meta.steps", "meta.log_every", "meta.checkpoint_every", "meta.keep_checkpoints",
                  "meta.microbatch_rows",  # the same meta-gradient in less memory
                  "mesh.")  # checkpoints restore onto any device layout
RATER_DIR = "rater"


def first_lifetimes(lifetime: int, population: int, unroll: int) -> list[int]:
    """Member p first lives ``(p+1)/P`` of a lifetime (a multiple of the unroll), then full ones."""
    return [max(unroll, (lifetime * (p + 1) // population) // unroll * unroll) for p in range(population)]


def lm_params(cfg, key) -> dict:
    return nnx.to_pure_dict(nnx.state(CausalLM(cfg, rngs=nnx.Rngs(params=key)), nnx.Param))


def member_key(seed: int, member: int, generation: int) -> jax.Array:
    return jax.random.fold_in(jax.random.fold_in(jax.random.key(seed + 1), member), generation)


def _stack(rows: list[dict]) -> dict:
    return {k: np.stack([r[k] for r in rows]) for k in rows[0] if k != "index"}


class MetaData:
    """One training stream per member and one held-out stream, all checkpointable."""

    def __init__(self, train: PackedSequences, heldout: PackedSequences, prog: MetaTrainProgram):
        m = prog.meta
        self.train, self.heldout, self.meta = train, heldout, m
        # Global batches, the same on every process (see `put_stacked`): members may live on any host.
        self.members = [
            make_iterator(train_batches(train, m.inner_batch_size, m.seed * 7919 + 101 * (p + 1)))
            for p in range(m.population)
        ]
        self.steps = m.unroll + m.plain_inner_steps  # inner batches per member per meta-step
        self.held = make_iterator(train_batches(heldout, m.outer_batch_size, m.seed * 7919 + 7))

    def next(self) -> tuple[dict, dict, np.ndarray]:
        """``inner [P, K+T, B, L]``, ``heldout [P, B, L]`` and the train row indices ``[P, K+T, B]``
        (``K`` plain steps, then the ``T`` unrolled ones)."""
        inner, index = [], []
        for it in self.members:
            steps = [next(it) for _ in range(self.steps)]
            inner.append(_stack(steps))
            index.append(np.stack([s["index"] for s in steps]))
        held = _stack([next(self.held) for _ in range(self.meta.population)])
        return _stack(inner), held, np.stack(index)

    def state(self) -> dict:
        return {"members": [iterator_state(it) for it in self.members], "heldout": iterator_state(self.held)}

    def restore(self, state: dict) -> None:
        for it, s in zip(self.members, state["members"], strict=True):
            restore_iterator(it, s)
        restore_iterator(self.held, state["heldout"])


def _init_arrays(prog: MetaTrainProgram, inner_tx, outer_tx) -> dict:
    m = prog.meta
    rater = Rater(prog.rater, rngs=nnx.Rngs(params=jax.random.key(m.seed)))
    eta = nnx.to_pure_dict(nnx.state(rater, nnx.Param))
    keys = jnp.stack([member_key(m.seed, p, 0) for p in range(m.population)])
    theta = jax.vmap(lambda k: lm_params(prog.model, k))(keys)
    inner = jax.vmap(inner_tx.init)(theta)
    if m.outer_update == "average_params":
        outer = jax.vmap(lambda _: outer_tx.init(eta))(jnp.arange(m.population))
    else:
        outer = outer_tx.init(eta)
    return {"eta": eta, "outer": outer, "theta": theta, "inner": inner}


def abstract_meta_state(prog: MetaTrainProgram, inner_tx, outer_tx) -> dict:
    """ShapeDtypeStructs of the meta-state (nothing is allocated)."""
    return jax.eval_shape(lambda: _init_arrays(prog, inner_tx, outer_tx))


def meta_state_shardings(prog: MetaTrainProgram, inner_tx, outer_tx, mesh: Mesh) -> dict:
    """NamedShardings of the meta-state: members over the population axes, the rater by the rules.

    ``theta`` and ``inner`` (and ``outer`` under ``average_params``) have a leading population
    axis; the rater ``eta`` has none and is sharded like any model (replicated on a data mesh).
    """
    rules, pop = prog.mesh.rules, prog.meta.population
    shapes = abstract_meta_state(prog, inner_tx, outer_tx)
    lm_axes = logical_axes_of(nnx.eval_shape(lambda: CausalLM(prog.model, rngs=nnx.Rngs(0))))
    rater_axes = logical_axes_of(nnx.eval_shape(lambda: Rater(prog.rater, rngs=nnx.Rngs(0))))
    eta = param_shardings(rater_axes, shapes["eta"], rules, mesh)
    theta = stacked_param_shardings(lm_axes, shapes["theta"], mesh, rules)
    inner = optimizer_shardings(inner_tx, shapes["inner"], theta, mesh, stacked=pop, rules=rules)
    if prog.meta.outer_update == "average_params":
        stacked_eta = jax.tree.map(lambda x: jax.ShapeDtypeStruct((pop, *x.shape), x.dtype), shapes["eta"])
        eta_stacked = stacked_param_shardings(rater_axes, stacked_eta, mesh, rules)
        outer = optimizer_shardings(outer_tx, shapes["outer"], eta_stacked, mesh, stacked=pop, rules=rules)
    else:
        outer = optimizer_shardings(outer_tx, shapes["outer"], eta, mesh)
    return {"eta": eta, "outer": outer, "theta": theta, "inner": inner}


def init_meta_state(prog: MetaTrainProgram, inner_tx, outer_tx, mesh: Mesh | None = None):
    """The initial meta-state, created directly in its shardings on ``mesh`` (default: all devices)."""
    mesh = make_mesh(prog.mesh) if mesh is None else mesh
    shardings = meta_state_shardings(prog, inner_tx, outer_tx, mesh)
    return jax.jit(lambda: _init_arrays(prog, inner_tx, outer_tx), out_shardings=shardings)()


def put_stacked(batch: dict, mesh: Mesh, rules: dict, batch_dim: int) -> dict:
    """Global arrays of population-stacked batches (the same numpy values on every process)."""
    out = {}
    for k, v in batch.items():
        v = np.asarray(v)
        sharding = stacked_batch_sharding(mesh, rules, v.shape, batch_dim)
        out[k] = jax.make_array_from_callback(v.shape, sharding, lambda index, v=v: v[index])
    return out


def meta_microbatches(meta: MetaConfig, mesh: Mesh, rules: dict) -> tuple[int, int]:
    """Microbatches of ``meta.microbatch_rows`` rows per device: ``(inner, held-out)``.

    A member's batch is split over the batch axes the population leaves (`member_batch_axes`).
    """

    def count(size: int) -> int:
        axes = member_batch_axes(mesh, rules, meta.population, size)
        shards = int(np.prod([mesh.shape[a] for a in axes])) if axes else 1
        return microbatch_count("meta.microbatch_rows", size, shards, meta.microbatch_rows)

    return count(meta.inner_batch_size), count(meta.outer_batch_size)


def make_meta_step(problem: MetaProblem, outer_tx, outer_mode: str, shardings: dict, mesh: Mesh,
                   rules: dict | None = None, population: int = 0, plain_steps: int = 0):
    """The jitted population meta-step; the state keeps its shardings, metrics come back replicated.

    With ``rules``, activations inside each member are kept batch-split over the batch axes the
    population leaves free (where the model calls ``parallel.activations.constrain``), and the
    population ``vmap`` names the population's mesh axes.
    """
    pop = population_axes(mesh, rules, population) if rules is not None else ()
    step = make_population_meta_step(problem, outer_tx, outer_mode, spmd_axis_name=pop or None, plain_steps=plain_steps)
    replicated = NamedSharding(mesh, PartitionSpec())
    inner_rules = member_rules(rules, pop) if rules is not None else {}

    step = batch_split(step, mesh, inner_rules)

    def sharded_step(state, inner_batches, heldout):
        state, metrics = step(state, inner_batches, heldout)
        state = jax.lax.with_sharding_constraint(state, shardings)
        metrics = jax.tree.map(lambda x: jax.lax.with_sharding_constraint(x, replicated), metrics)
        return state, metrics

    return jax.jit(sharded_step, donate_argnums=(0,))


def make_reset(prog: MetaTrainProgram, inner_tx, shardings: dict | None = None):
    """Re-initialises the members where ``mask`` is true: fresh parameters and optimiser state."""

    def reset(state, mask, keys):
        fresh = jax.vmap(lambda k: lm_params(prog.model, k))(keys)
        fresh_inner = jax.vmap(inner_tx.init)(fresh)
        pick = lambda new, old: jax.tree.map(
            lambda a, b: jnp.where(mask.reshape((-1,) + (1,) * (a.ndim - 1)), a, b), new, old
        )
        out = dict(state, theta=pick(fresh, state["theta"]), inner=pick(fresh_inner, state["inner"]))
        return out if shardings is None else jax.lax.with_sharding_constraint(out, shardings)

    return jax.jit(reset, donate_argnums=(0,))


def host_copy(tree):
    """Numpy copy of a pytree of (possibly multi-host sharded) global arrays, on every process."""
    if jax.process_count() == 1:
        return jax.device_get(tree)
    from jax.experimental import multihost_utils

    return multihost_utils.process_allgather(tree, tiled=True)


def save_rater(run_dir: Path, eta: dict) -> None:
    """The rater's parameters alone, for `score` and `train-lm curate=datarater` to load."""
    import orbax.checkpoint as ocp

    path = (run_dir / RATER_DIR).absolute()
    with ocp.StandardCheckpointer() as ckptr:
        ckptr.save(path, eta, force=True)


def load_rater(run_dir: str | Path):
    """``(Rater module, config)`` of a finished meta-training run directory."""
    import orbax.checkpoint as ocp
    from omegaconf import OmegaConf

    from datarater.config import ModelConfig

    run_dir = Path(run_dir)
    if not (run_dir / "config.yaml").exists() or not (run_dir / RATER_DIR).exists():
        raise UserError(f"{run_dir} is not a finished meta-training run (no config.yaml or {RATER_DIR}/)")
    raw = OmegaConf.load(run_dir / "config.yaml")
    cfg = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(ModelConfig), raw.rater))
    abstract = nnx.eval_shape(lambda: Rater(cfg, rngs=nnx.Rngs(0)))
    graphdef, _ = nnx.split(abstract)
    target = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), nnx.to_pure_dict(nnx.state(abstract, nnx.Param)))
    with ocp.StandardCheckpointer() as ckptr:
        eta = ckptr.restore((run_dir / RATER_DIR).absolute(), target)
    return nnx.merge(graphdef, eta), cfg


def meta_train(prog: MetaTrainProgram, splits: dict[str, PackedSequences] | None = None) -> dict:
    """Runs meta-training; ``splits`` (train, heldout) may be given instead of reading the corpus."""
    m = prog.meta
    run_dir, resuming = prepare_run_dir(prog.run_dir, prog, may_change=RESUMABLE_KEYS)
    tokenizer = make_tokenizer(prog.data)
    for key, cfg in (("model", prog.model), ("rater", prog.rater)):
        if tokenizer.vocab_size > cfg.vocab_size:
            raise UserError(f"{key}.vocab_size={cfg.vocab_size} is smaller than the tokenizer's vocabulary ({tokenizer.vocab_size})")
    mesh = make_mesh(prog.mesh)
    rules = prog.mesh.rules
    micro, held_micro = meta_microbatches(m, mesh, rules)  # bad settings stop before the corpus is read
    stats = ReadStats()
    if splits is None:
        say(f"[data] reading {prog.corpus.name} ...")
        splits = load_splits(prog.corpus, prog.data, tokenizer, splits=("train", "heldout"), stats=stats)
        say(f"[data] {stats.summary()}")
    for name in ("train", "heldout"):
        say(f"[data] {name}: {len(splits[name])} sequences of {prog.data.seq_len} tokens")

    inner_cfg = dataclasses.replace(prog.train, steps=m.lifetime)
    inner_tx = make_optimizer(inner_cfg, eps_root=m.inner_eps_root)
    outer_tx = outer_optimizer(m.outer_lr, m.outer_warmup_steps, m.outer_weight_decay, m.outer_clip_norm)
    lm_graphdef = nnx.split(nnx.eval_shape(lambda: CausalLM(prog.model, rngs=nnx.Rngs(0))))[0]
    rater_graphdef = nnx.split(nnx.eval_shape(lambda: Rater(prog.rater, rngs=nnx.Rngs(0))))[0]
    problem = MetaProblem(lm_graphdef, rater_graphdef, inner_tx, m.grad_mode, scan_unroll=m.unroll <= m.unrolled_max,
                          microbatches=micro, heldout_microbatches=held_micro)
    shardings = meta_state_shardings(prog, inner_tx, outer_tx, mesh)
    step_fn = make_meta_step(problem, outer_tx, m.outer_update, shardings, mesh, rules, m.population,
                             m.plain_inner_steps)
    per_step = m.unroll + m.plain_inner_steps  # inner steps a member takes per meta-step
    reset_fn = make_reset(prog, inner_tx, shardings)
    if mesh.size > 1:
        pop_axes = population_axes(mesh, rules, m.population)
        split = f"split over {'*'.join(pop_axes)}" if pop_axes else "not split (no mesh axis of the population rule divides it)"
        say(f"[mesh] {dict(mesh.shape)}: population of {m.population} {split}; "
            f"{members_per_device(mesh, rules, m.population)} member(s) per device")
        for note in replicated_batch_notes(mesh, rules, m.population, [m.inner_batch_size, m.outer_batch_size]):
            say(f"[mesh] warning: {note}")
    if micro > 1 or held_micro > 1:
        say(f"[meta] inner batches in {micro} microbatches, held-out batches in {held_micro} "
            f"({m.microbatch_rows} rows per device each)")

    state = init_meta_state(prog, inner_tx, outer_tx, mesh)
    data = MetaData(splits["train"], splits["heldout"], prog)
    metrics = MetricsFile(run_dir / "metrics.jsonl")
    ckpt = Checkpointer(run_dir / "checkpoints", keep=m.keep_checkpoints)
    book = {"ages": [0] * m.population, "lives": first_lifetimes(m.lifetime, m.population, per_step),
            "generations": [0] * m.population, "resets": 0, "skipped": 0}
    start = 0
    latest = ckpt.latest_step()
    if latest is not None:
        state, extra = ckpt.restore(latest, abstract_like(state))
        data.restore(extra["data"])
        book = extra["book"]
        start = latest
        metrics.truncate_after(latest)
        say(f"[ckpt] resumed meta-training from step {latest}")
    elif resuming and metrics.path.exists():
        metrics.path.unlink()

    def save(step: int) -> None:
        ckpt.save(step, state, {"data": data.state(), "book": book, "step": step})

    progress = Progress(m.steps, start_step=start, label="meta-train")
    by_source: dict[str, list[float]] = defaultdict(list)
    step, t_log, since = start, time.perf_counter(), 0
    try:
        while step < m.steps:
            inner, held, index = data.next()
            state, out = step_fn(state, put_stacked(inner, mesh, rules, 2), put_stacked(held, mesh, rules, 1))
            step += 1
            since += 1
            out = jax.device_get(out)
            book["skipped"] += int(out["skipped"])
            scores = out.pop("scores")  # [P, T, B]: the unrolled steps' batches, after the plain ones
            for s, i in zip(scores.ravel(), index[:, m.plain_inner_steps:].ravel(), strict=True):
                by_source[data.train.source_of_row(int(i))].append(float(s))
            row = {"step": step, **{k: float(v) for k, v in out.items() if k != "skipped"},
                   "skipped_total": book["skipped"], "resets_total": book["resets"]}
            # Ages advance by the inner steps taken; members at the end of their lifetime start afresh.
            book["ages"] = [a + per_step for a in book["ages"]]
            dead = [a >= life for a, life in zip(book["ages"], book["lives"], strict=True)]
            if any(dead):
                for p in np.flatnonzero(dead):
                    book["generations"][p] += 1
                    book["ages"][p], book["lives"][p] = 0, m.lifetime
                    book["resets"] += 1
                keys = jnp.stack([member_key(m.seed, p, g) for p, g in enumerate(book["generations"])])
                state = reset_fn(state, jnp.asarray(dead), keys)
                row["reset_members"] = [int(p) for p in np.flatnonzero(dead)]
            if step % m.log_every == 0 or step == m.steps:
                row["score_by_source"] = {k: float(np.mean(v)) for k, v in sorted(by_source.items())}
                row["steps_per_s"] = since / (time.perf_counter() - t_log)
                by_source.clear()
                progress.show(step, outer=row["outer_loss"], inner=row["inner_loss"], gnorm=row["meta_grad_norm"],
                              eff_batch=row["effective_batch"], skipped=book["skipped"])
                t_log, since = time.perf_counter(), 0
            metrics.write(row)
            if step % m.checkpoint_every == 0 or step == m.steps:
                save(step)
                ckpt.kill_if_asked(step)
    except KeyboardInterrupt:
        say(f"[meta-train] interrupted at step {step}: saving a checkpoint to resume from")
        save(step)
        ckpt.close()
        raise
    ckpt.close()
    save_rater(run_dir, host_copy(state["eta"]))
    summary = {"run_dir": str(run_dir), "steps": step, "skipped_updates": book["skipped"], "resets": book["resets"],
               "documents": stats.as_dict()}
    if jax.process_index() == 0:
        (run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    say(f"[meta-train] done: {step} meta-steps, {book['resets']} member resets, {book['skipped']} skipped updates; rater in {run_dir / RATER_DIR}")
    return summary
