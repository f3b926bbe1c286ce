"""`datarater plan`: compile the training step and the meta-step ahead of time, allocate nothing.

For every device count, the LM training step (and, with ``plan.meta``, the population meta-step)
is lowered on abstract arguments -- ``jax.ShapeDtypeStruct`` with ``NamedSharding`` on the mesh
of ``conf/mesh/`` -- and compiled. ``compiled.memory_analysis()`` gives per-device temporary
(activation) memory, the shardings give per-device parameter and optimiser bytes, and
``compiled.cost_analysis()`` the FLOPs per device, set beside the formula of
``datarater.config.presets``.

The meta-step is compiled with its T inner steps unrolled (``MetaProblem.scan_unroll``): XLA's
cost analysis counts a loop body once, not T times.

When this process has fewer devices than asked (a laptop, one GPU), the plan runs in a child
process with ``N`` emulated CPU devices (``--xla_force_host_platform_device_count``). The figures
are then XLA:CPU's buffer assignment for the same partitioned program: a close estimate of, not
the exact, TPU/GPU figure (those compilers pad and fuse differently).
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import subprocess
import sys
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import Mesh

from datarater.config import MetaTrainProgram
from datarater.config.plan import PlanProgram, lm_batch_shape
from datarater.console import result
from datarater.errors import UserError
from datarater.parallel.activations import shard_activations

GIB = 2.0**30
HBM_GIB = 16.0  # TPU v5e: 16 GiB of HBM per chip
_FIELDS = ("tokens", "segment_ids", "positions")
_RESULT = "PLAN_RESULT "
# For the child with emulated CPU devices. The program is compiled, never run: skip LLVM's
# optimisations (same buffers, ~2x faster to compile); and schedule to minimise memory, as the
# TPU compiler does, not for CPU thread concurrency (which keeps ~2x more buffers alive).
CPU_PLAN_FLAGS = ("--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true "
                  "--xla_cpu_enable_concurrency_optimized_scheduler=false")


# -- pure helpers --------------------------------------------------------------------------------
def per_device_bytes(tree: Any) -> int:
    """Bytes one device holds of a pytree of ShapeDtypeStructs with shardings (the largest shard)."""
    total = 0
    for x in jax.tree.leaves(tree):
        shard = x.sharding.shard_shape(x.shape) if x.sharding is not None else x.shape
        total += int(np.prod(shard, dtype=np.int64)) * np.dtype(x.dtype).itemsize
    return total


def with_shardings(shapes: Any, shardings: Any) -> Any:
    return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), shapes, shardings)


def meta_step_flops(prog: PlanProgram | MetaTrainProgram, seq_len: int) -> float:
    """Model FLOPs of one population meta-step (all devices): `datarater.models.flops.meta_step_flops`
    for the program the plan compiles: its T inner steps always unrolled, and no plain inner steps
    (``meta.plain_inner_steps`` cost plain LM steps, which the LM row shows)."""
    from datarater.models.flops import meta_step_flops as counted

    m = dataclasses.replace(prog.meta, unrolled_max=max(prog.meta.unrolled_max, prog.meta.unroll), plain_inner_steps=0)
    return counted(prog.model, prog.rater, m, seq_len)


def _memory(compiled) -> dict:
    mem = compiled.memory_analysis()
    if mem is None:
        return {}
    peak = mem.argument_size_in_bytes + mem.output_size_in_bytes - mem.alias_size_in_bytes + mem.temp_size_in_bytes
    return {"argument_bytes": int(mem.argument_size_in_bytes), "output_bytes": int(mem.output_size_in_bytes),
            "alias_bytes": int(mem.alias_size_in_bytes), "temp_bytes": int(mem.temp_size_in_bytes),
            "peak_bytes": int(peak)}


def _flops(compiled) -> float:
    cost = compiled.cost_analysis()
    if isinstance(cost, list):
        cost = cost[0] if cost else {}
    return float((cost or {}).get("flops", float("nan")))


def _compile(fn, *args) -> tuple[Any, float]:
    t = time.perf_counter()
    compiled = fn.lower(*args).compile()
    return compiled, time.perf_counter() - t


# -- the two steps -----------------------------------------------------------------------------
def plan_lm_step(prog: PlanProgram, mesh: Mesh) -> dict:
    """Compiles the LM training step of ``prog.model`` on ``mesh``; per-device memory and FLOPs."""
    from datarater.models.flops import lm_train_flops_per_token
    from datarater.models.transformer import CausalLM
    from datarater.parallel.mesh import batch_sharding, batch_shards, logical_axes_of, param_shardings
    from datarater.parallel.population import optimizer_shardings
    from datarater.train.microbatch import microbatch_count
    from datarater.train.optimizer import make_optimizer
    from datarater.train.step import make_train_step

    cfg, rules, n = prog.model, prog.mesh.rules, mesh.size
    batch, seq = lm_batch_shape(prog)
    shards = batch_shards(mesh, rules)
    if batch % shards:
        raise UserError(f"batch {batch} does not split over the {shards} batch shards of mesh {dict(mesh.shape)}: "
                        f"give the rest of the devices to mesh.tensor, or set plan.batch_size")
    micro = microbatch_count("train.microbatch_rows", batch, shards, prog.train.microbatch_rows)
    tx = make_optimizer(prog.train)
    abstract = nnx.eval_shape(lambda: CausalLM(cfg, rngs=nnx.Rngs(0)))
    graphdef = nnx.split(abstract)[0]
    shapes = nnx.to_pure_dict(nnx.state(abstract, nnx.Param))
    p_sh = param_shardings(logical_axes_of(abstract), shapes, rules, mesh)
    params = with_shardings(shapes, p_sh)
    opt_shapes = jax.eval_shape(tx.init, shapes)
    opt = with_shardings(opt_shapes, optimizer_shardings(tx, opt_shapes, p_sh, mesh))
    b_sh = batch_sharding(mesh, rules, 2)
    data = {k: jax.ShapeDtypeStruct((batch, seq), jnp.int32, sharding=b_sh) for k in _FIELDS}
    fn = jax.jit(make_train_step(graphdef, tx, micro), donate_argnums=(0, 1))
    with shard_activations(mesh, rules):  # effective where the model calls parallel.activations.constrain
        compiled, seconds = _compile(fn, params, opt, data)
    formula = lm_train_flops_per_token(cfg, seq) * batch * seq
    return {"step": "lm", "batch": batch, "seq_len": seq, "microbatches": micro, "param_bytes": per_device_bytes(params),
            "opt_bytes": per_device_bytes(opt), "batch_bytes": per_device_bytes(data), **_memory(compiled),
            "flops_compiled": _flops(compiled), "flops_formula": formula / n, "compile_s": seconds}


def plan_meta_step(prog: PlanProgram, mesh: Mesh) -> dict:
    """Compiles the population meta-step (rater + ``meta.population`` inner LMs) on ``mesh``."""
    from datarater.meta.core import MetaProblem, outer_optimizer
    from datarater.meta.state import abstract_meta_state, make_meta_step, meta_microbatches, meta_state_shardings
    from datarater.models.rater import Rater
    from datarater.models.transformer import CausalLM
    from datarater.parallel.population import members_per_device, replicated_batch_notes, stacked_batch_sharding
    from datarater.train.optimizer import make_optimizer

    m, rules = prog.meta, prog.mesh.rules
    _, seq = lm_batch_shape(prog)
    mprog = MetaTrainProgram(model=prog.model, rater=prog.rater, data=dataclasses.replace(prog.data, seq_len=seq),
                             train=prog.train, meta=m, mesh=prog.mesh)
    inner_tx = make_optimizer(dataclasses.replace(prog.train, steps=m.lifetime), eps_root=m.inner_eps_root)
    outer_tx = outer_optimizer(m.outer_lr, m.outer_warmup_steps, m.outer_weight_decay, m.outer_clip_norm)
    lm_gd = nnx.split(nnx.eval_shape(lambda: CausalLM(prog.model, rngs=nnx.Rngs(0))))[0]
    rater_gd = nnx.split(nnx.eval_shape(lambda: Rater(prog.rater, rngs=nnx.Rngs(0))))[0]
    # the T inner steps unrolled: XLA's cost analysis counts a loop body once, not T times
    micro, held_micro = meta_microbatches(m, mesh, rules)
    problem = MetaProblem(lm_gd, rater_gd, inner_tx, m.grad_mode, scan_unroll=True, microbatches=micro,
                          heldout_microbatches=held_micro)
    shardings = meta_state_shardings(mprog, inner_tx, outer_tx, mesh)
    state = with_shardings(abstract_meta_state(mprog, inner_tx, outer_tx), shardings)

    def batch(shape: tuple[int, ...], batch_dim: int) -> dict:
        sh = stacked_batch_sharding(mesh, rules, shape, batch_dim)
        return {k: jax.ShapeDtypeStruct(shape, jnp.int32, sharding=sh) for k in _FIELDS}

    inner = batch((m.population, m.unroll, m.inner_batch_size, seq), 2)
    held = batch((m.population, m.outer_batch_size, seq), 1)
    fn = make_meta_step(problem, outer_tx, m.outer_update, shardings, mesh, rules, m.population)
    compiled, seconds = _compile(fn, state, inner, held)
    members = ("theta", "inner")
    return {"step": "meta", "batch": m.inner_batch_size, "seq_len": seq, "population": m.population,
            "unroll": m.unroll, "microbatches": micro, "heldout_microbatches": held_micro,
            "members_per_device": members_per_device(mesh, rules, m.population),
            "param_bytes": per_device_bytes(state["eta"]) + per_device_bytes(state["theta"]),
            "opt_bytes": per_device_bytes(state["outer"]) + per_device_bytes(state["inner"]),
            "member_bytes": per_device_bytes({k: state[k] for k in members}),
            "batch_bytes": per_device_bytes((inner, held)), **_memory(compiled),
            "flops_compiled": _flops(compiled), "flops_formula": meta_step_flops(mprog, seq) / mesh.size,
            "compile_s": seconds,
            "notes": replicated_batch_notes(mesh, rules, m.population, [m.inner_batch_size, m.outer_batch_size])}


def plan_on_devices(prog: PlanProgram, devices: list) -> list[dict]:
    """The plan rows for a mesh over ``devices`` (errors become rows, so one bad count is visible)."""
    from datarater.parallel.mesh import make_mesh

    n = len(devices)
    try:
        mesh = make_mesh(prog.mesh, devices)
    except UserError as e:
        return [{"devices": n, "step": "lm", "error": str(e)}]
    shape = {k: int(v) for k, v in mesh.shape.items()}
    steps = [plan_lm_step] + ([plan_meta_step] if prog.plan.meta else [])
    rows = []
    for fn in steps:
        try:
            row = fn(prog, mesh)
        except UserError as e:
            row = {"step": fn.__name__.split("_")[1], "error": str(e)}
        rows.append({"devices": n, "mesh": shape, "platform": devices[0].platform, **row})
    return rows


# -- running: in this process, or in a child with emulated devices ----------------------------
def _child_env(devices: int) -> dict:
    env = dict(os.environ)
    flags = re.sub(r"--xla_force_host_platform_device_count=\d+", "", env.get("XLA_FLAGS", "")).strip()
    env["XLA_FLAGS"] = f"{flags} --xla_force_host_platform_device_count={devices} {CPU_PLAN_FLAGS}".strip()
    env["JAX_PLATFORMS"] = "cpu"
    return env


def _to_json(prog: PlanProgram) -> str:
    from omegaconf import OmegaConf

    return json.dumps(OmegaConf.to_container(OmegaConf.structured(prog)))


def _from_json(text: str) -> PlanProgram:
    from omegaconf import OmegaConf

    return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(PlanProgram), json.loads(text)))


def plan(prog: PlanProgram) -> list[dict]:
    """One row per (device count, step): per-device bytes, compiled and formula FLOPs, seconds."""
    counts = list(prog.plan.devices)
    if jax.device_count() >= max(counts):
        devices = jax.devices()
        return [row for n in counts for row in plan_on_devices(prog, devices[:n])]
    r = subprocess.run([sys.executable, "-m", "datarater.programs.plan"], input=_to_json(prog),
                       env=_child_env(max(counts)), capture_output=True, text=True)
    lines = [ln for ln in r.stdout.splitlines() if ln.startswith(_RESULT)]
    if r.returncode != 0 or not lines:
        raise UserError(f"plan: the child process with {max(counts)} emulated devices failed "
                        f"(exit {r.returncode}): {r.stderr.strip()[-2000:]}")
    return json.loads(lines[-1][len(_RESULT):])


# -- the table ------------------------------------------------------------------------------------
def _gib(b: float | None) -> str:
    return "-" if b is None else f"{b / GIB:.2f}"


def format_table(prog: PlanProgram, rows: list[dict]) -> str:
    from datarater.models.flops import lm_param_counts

    batch, seq = lm_batch_shape(prog)
    c = lm_param_counts(prog.model)
    m = prog.meta
    head = [f"plan {prog.model.name}: {c.total / 1e6:.1f}M parameters ({c.non_embedding / 1e6:.1f}M non-embedding), "
            f"dtype {prog.model.dtype} (params {prog.model.param_dtype}), remat={prog.model.remat}; "
            f"LM batch {batch} x {seq}",
            f"  meta: rater {prog.rater.name}, {m.population} x {prog.model.name} inner LMs, T={m.unroll}, "
            f"batch {m.inner_batch_size}/{m.outer_batch_size}, grad_mode={m.grad_mode}" if prog.plan.meta else "",
            "  per device, GiB: params (+rater), optimiser state, batch, temp (activations and other temporaries),"
            " peak = arguments + outputs - donated + temp; micro: microbatches per step (train/meta.microbatch_rows);"
            " TFLOP per device per step: compiled (XLA's count: full"
            " T x T attention, remat's recomputation; '(loop)' for microbatches: XLA counts a loop body once)"
            " and formula (model FLOPs: 6N + causal attention)",
            f"{'step':<5}{'devices':>8}  {'mesh d/f/t':<12}{'micro':>7}{'params':>8}{'optim':>8}{'batch':>8}{'temp':>8}{'peak':>8}"
            f"  {'fits ' + format(HBM_GIB, 'g') + 'G':<9}{'compiled':>10}{'formula':>10}{'ratio':>7}{'compile s':>11}"]
    lines = [h for h in head if h]
    for r in rows:
        mesh = r.get("mesh", {})
        shape = "/".join(str(mesh.get(a, "?")) for a in ("data", "fsdp", "tensor")) if mesh else "-"
        if "error" in r:
            lines.append(f"{r['step']:<5}{r['devices']:>8}  {shape:<12}error: {r['error']}")
            continue
        micro = str(r.get("microbatches", 1))
        if r.get("heldout_microbatches", r.get("microbatches", 1)) != r.get("microbatches", 1):
            micro += f"/{r['heldout_microbatches']}"
        peak = r.get("peak_bytes")
        fits = "-" if peak is None else ("yes" if peak <= HBM_GIB * GIB else "NO")
        if micro == "1":
            ratio = r["flops_compiled"] / r["flops_formula"] if r["flops_formula"] else float("nan")
            compiled, ratio_text = f"{r['flops_compiled'] / 1e12:>10.4g}", f"{ratio:>7.2f}"
        else:  # XLA's cost analysis counts the microbatch loop's body once
            compiled, ratio_text = f"{'(loop)':>10}", f"{'-':>7}"
        lines.append(
            f"{r['step']:<5}{r['devices']:>8}  {shape:<12}{micro:>7}{_gib(r['param_bytes']):>8}{_gib(r['opt_bytes']):>8}"
            f"{_gib(r['batch_bytes']):>8}{_gib(r.get('temp_bytes')):>8}{_gib(peak):>8}  {fits:<9}"
            f"{compiled}{r['flops_formula'] / 1e12:>10.4g}{ratio_text}{r['compile_s']:>11.1f}"
        )
    for r in rows:
        for note in r.get("notes", []):
            lines.append(f"  {r['step']} on {r['devices']} devices: {note}")
    if any(r.get("platform") == "cpu" for r in rows):
        lines.append("  (compiled for emulated CPU devices: XLA:CPU's memory figures for the partitioned program)")
    if any(r.get("peak_bytes", 0) > HBM_GIB * GIB for r in rows):
        hint = "model.remat=true, " if not prog.model.remat else ""
        lines.append(f"  some steps do not fit: try {hint}fewer rows per microbatch (train.microbatch_rows, "
                     "meta.microbatch_rows), or more devices")
    return "\n".join(lines)


def run(prog: PlanProgram) -> list[dict]:
    """`datarater plan`: prints the table (and returns its rows)."""
    rows = plan(prog)
    result(format_table(prog, rows))
    return rows


def main() -> None:
    """Child entry: reads a PlanProgram as JSON on stdin, prints the rows as one JSON line."""
    prog = _from_json(sys.stdin.read())
    n = max(prog.plan.devices)
    if jax.device_count() < n:
        raise SystemExit(f"plan child: {jax.device_count()} devices, need {n}")
    rows = [row for k in prog.plan.devices for row in plan_on_devices(prog, jax.devices()[:k])]
    result(_RESULT + json.dumps(rows))


if __name__ == "__main__":
    main()
