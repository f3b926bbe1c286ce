"""Run with 8 emulated CPU devices (see test_sharding_meta.py): prints JSON results of meta-steps
on several meshes (population over the data axis), to be compared with the same steps on one
device, and of checkpoints saved on 8 devices and restored on fewer."""

from __future__ import annotations

import dataclasses
import json
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import jax
import numpy as np
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec

from datarater.config import MeshConfig, MetaConfig, MetaTrainProgram, ModelConfig, TrainConfig
from datarater.meta.core import MetaProblem, outer_optimizer
from datarater.meta.state import (
    abstract_meta_state,
    init_meta_state,
    make_meta_step,
    meta_state_shardings,
)
from datarater.models.flops import path_str
from datarater.models.rater import Rater
from datarater.models.transformer import CausalLM
from datarater.parallel.activations import batch_split, constrain, shard_activations
from datarater.parallel.mesh import make_mesh
from datarater.parallel.population import member_rules, population_axes, put_stacked
from datarater.train.checkpoint import Checkpointer
from datarater.train.optimizer import make_optimizer

LM = ModelConfig(name="t", vocab_size=64, d_model=32, n_layers=1, n_heads=2, d_head=16, d_ff=64)
RATER = ModelConfig(name="r", vocab_size=64, d_model=16, n_layers=1, n_heads=2, d_head=8, d_ff=32)
P, T, B, L = 8, 2, 4, 16
MESHES = {"one": dict(data=1, fsdp=1, tensor=1), "data8": dict(data=8), "d4f2": dict(data=4, fsdp=2)}
# d4f2 takes its meta-gradients in 2 microbatches per member (one row per device each), its
# meta-steps without: both against one device without microbatching
GRAD_MICROBATCHES = {"d4f2": 2}


def program(mesh: dict) -> MetaTrainProgram:
    meta = MetaConfig(population=P, unroll=T, inner_batch_size=B, outer_batch_size=B, lifetime=100,
                      outer_warmup_steps=0)
    return MetaTrainProgram(model=LM, rater=RATER, meta=meta, mesh=MeshConfig(**mesh),
                            train=TrainConfig(lr=1e-2, warmup_steps=0))


def batches(rng: np.random.Generator) -> tuple[dict, dict]:
    def rows(*lead):
        seg = np.ones((*lead, L), np.int32)
        seg[..., L // 2 :] = 2
        seg[..., -2:] = 0  # padding tail
        pos = np.broadcast_to(np.r_[np.arange(L // 2), np.arange(L // 2)], (*lead, L)).astype(np.int32)
        return {"tokens": rng.integers(0, 64, (*lead, L)).astype(np.int32), "segment_ids": seg, "positions": pos}

    return rows(P, T, B), rows(P, B)


def setup(prog: MetaTrainProgram):
    inner_tx = make_optimizer(prog.train, eps_root=1e-8)
    outer_tx = outer_optimizer(1e-3, 0, 0.1, 1.0)
    lm_gd = nnx.split(nnx.eval_shape(lambda: CausalLM(prog.model, rngs=nnx.Rngs(0))))[0]
    rater_gd = nnx.split(nnx.eval_shape(lambda: Rater(prog.rater, rngs=nnx.Rngs(0))))[0]
    return MetaProblem(lm_gd, rater_gd, inner_tx, "remat"), inner_tx, outer_tx


def flat(tree) -> dict[str, list[float]]:
    """The first values of every leaf, by path."""
    leaves = jax.tree_util.tree_flatten_with_path(jax.device_get(tree))[0]
    return {path_str(path): np.asarray(x).ravel()[:64].tolist() for path, x in leaves}


START = time.perf_counter()


def log(msg: str) -> None:
    print(f"[{time.perf_counter() - START:6.1f}s] {msg}", file=sys.stderr, flush=True)


def run_mesh(name: str, sizes: dict, data: list, ckpt_dir: Path | None) -> tuple[dict, Callable]:
    """Meta-gradients and two meta-steps on one mesh; saves the state after step 1 to ``ckpt_dir``."""
    prog = program(sizes)
    devices = jax.devices()[:1] if name == "one" else jax.devices()
    mesh = make_mesh(prog.mesh, devices)
    rules = prog.mesh.rules
    problem, inner_tx, outer_tx = setup(prog)
    state = init_meta_state(prog, inner_tx, outer_tx, mesh)
    wqkv = state["theta"]["trunk"]["blocks"][0]["attn"]["wqkv"]
    info = {"theta_spec": str(wqkv.sharding.spec),
            "members_per_shard": sorted({s.data.shape[0] for s in wqkv.addressable_shards}),
            "theta_devices": len({s.device for s in wqkv.addressable_shards}),
            "wqkv_member_shape": sorted({s.data.shape[1] for s in wqkv.addressable_shards}),
            "inner_mu_spec": str(jax.tree.leaves(state["inner"])[1].sharding.spec)}
    # The meta-gradient of every member (before any update), on sharded inputs.
    inner, held = put_stacked(data[0][0], mesh, rules, 2), put_stacked(data[0][1], mesh, rules, 1)
    info["inner_batch_spec"] = str(inner["tokens"].sharding.spec)
    # as in make_meta_step: members over the population's axes, their activations batch-split
    pop = population_axes(mesh, rules, P)
    inner_rules = member_rules(rules, pop)
    info["grad_microbatches"] = GRAD_MICROBATCHES.get(name, 1)
    grad_problem = dataclasses.replace(problem, microbatches=info["grad_microbatches"],
                                       heldout_microbatches=info["grad_microbatches"])
    grads_fn = jax.jit(batch_split(jax.vmap(lambda eta, th, st, ib, hb: grad_problem.meta_grad(eta, th, st, ib, hb)[1],
                                            in_axes=(None, 0, 0, 0, 0), spmd_axis_name=pop or None), mesh, inner_rules))
    info["meta_grads"] = flat(grads_fn(state["eta"], state["theta"], state["inner"], inner, held))
    log(f"{name}: meta-gradients")
    shardings = meta_state_shardings(prog, inner_tx, outer_tx, mesh)
    step = make_meta_step(problem, outer_tx, prog.meta.outer_update, shardings, mesh, rules, P)

    def run(state, k):
        state, m = step(state, put_stacked(data[k][0], mesh, rules, 2), put_stacked(data[k][1], mesh, rules, 1))
        return state, [float(m["outer_loss"]), float(m["inner_loss"]), float(m["meta_grad_norm"])]

    losses = []
    for k in range(len(data)):
        state, row = run(state, k)
        losses.append(row)
        if k == 0 and ckpt_dir is not None:
            info["saved"] = flat(state)
            ckpt = Checkpointer(ckpt_dir, keep=1)
            ckpt.save(1, state, {"step": 1})
            ckpt.close()  # the next step donates the state: the save must be finished
    log(f"{name}: meta-steps")
    info["losses"] = losses
    info["eta"] = flat(state["eta"])
    info["theta"] = flat(state["theta"])
    info["theta_spec_after"] = str(state["theta"]["trunk"]["blocks"][0]["attn"]["wqkv"].sharding.spec)

    def resume(directory: Path) -> dict:
        """Restores a checkpoint onto this mesh's shardings and runs the second step from it."""
        target = jax.tree.map(lambda x, sh: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sh),
                              abstract_meta_state(prog, inner_tx, outer_tx), shardings)
        ckpt = Checkpointer(directory, keep=1)
        restored, extra = ckpt.restore(ckpt.latest_step(), target)
        ckpt.close()
        w = restored["theta"]["trunk"]["blocks"][0]["attn"]["wqkv"]
        out = {"values": flat(restored), "step": extra["step"], "devices": len(w.sharding.device_set),
               "members_per_shard": sorted({s.data.shape[0] for s in w.addressable_shards})}
        out["next"] = run(restored, 1)[1]
        return out

    return info, resume


def activation_specs() -> dict:
    """Output sharding of ``constrain(2x)`` for a replicated x, with and without the context."""
    mesh = make_mesh(MeshConfig(data=2, fsdp=4))
    x = jax.device_put(np.ones((16, 8), np.float32), NamedSharding(mesh, PartitionSpec()))
    f = lambda x: constrain(2.0 * x)
    outside = jax.jit(f)(x)
    with shard_activations(mesh, MeshConfig().rules):
        inside = jax.jit(f)(x)
        odd = jax.jit(f)(x[:3])  # 3 rows do not split 8 ways: left alone
    def spec(a) -> list:  # without trailing Nones (P('x') and P('x', None) are the same layout)
        entries = [list(e) if isinstance(e, tuple) else e for e in a.sharding.spec]
        while entries and entries[-1] is None:
            entries.pop()
        return entries

    return {"outside": spec(outside), "inside": spec(inside), "odd": spec(odd),
            "values_equal": bool(np.array_equal(np.asarray(inside), 2.0 * np.ones((16, 8))))}


def main() -> None:
    rng = np.random.default_rng(0)
    data = [batches(rng) for _ in range(2)]
    out = {"devices": jax.device_count()}
    resumers = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, sizes in MESHES.items():
            ckpt_dir = Path(tmp) / "ckpt" if name == "data8" else None
            out[name], resumers[name] = run_mesh(name, sizes, data, ckpt_dir)
        # Saved on 8 devices (one member each), resumed on 1 device and on a data=4 x fsdp=2 mesh.
        out["resume"] = {name: resumers[name](Path(tmp) / "ckpt") for name in ("one", "d4f2")}
        log("resume")
    out["activations"] = activation_specs()
    print("RESULT " + json.dumps(out))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
